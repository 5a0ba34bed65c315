// Internal: one synchronous JetStream publish of a prepared message, its answer as a PublishAck or a
// PublishError (shared by the journal's publish and the lease's writes).
#pragma once

#include "nats_handles.hpp"

#include <coconut/cluster/journal.hpp>

#include <nats/nats.h>

namespace coconut::cluster::detail {

// JetStream's headers (nats-server's ADR-1 names).
inline constexpr const char* header_msg_id = "Nats-Msg-Id";
inline constexpr const char* header_expected_stream = "Nats-Expected-Stream";
inline constexpr const char* header_expected_last_sequence = "Nats-Expected-Last-Sequence";
inline constexpr const char* header_expected_last_subject_sequence = "Nats-Expected-Last-Subject-Sequence";

// A message for `subject` carrying `payload` (libnats copies it). Asserts the payload fits an int.
MsgHandle make_message(const std::string& subject, ByteView payload);
// Sets a header; a failure (out of memory) asserts.
void set_header(natsMsg* message, const char* key, const std::string& value);

Result<PublishAck, PublishError> publish_message(Connection& connection, natsMsg* message, std::chrono::milliseconds max_wait);

}  // namespace coconut::cluster::detail
