// The journal stream: one JetStream stream (replicated, file storage) on one subject, written by one
// primary at a time and read in order by every node (clearing/cluster/README.md, docs/DESIGN.md §10).
//
// Rules
//   - Fencing. Every publish names the stream's last sequence the writer has seen
//     (`expected_last_sequence`); the stream stores the message only if its last sequence is exactly
//     that, else refuses with `wrong_last_sequence` and stores nothing. 0 means "the stream has never
//     held a message": the first publish of a new stream is fenced like every other (a second writer
//     racing for sequence 1 is refused). The last sequence never goes back, not even when old
//     messages age out (max_age), so 0 is refused by any stream that ever held a message.
//   - De-duplication. `msg_id` identifies the message's content: a publish whose msg_id the stream
//     stored within `duplicate_window` is not stored again and is acknowledged with the first
//     copy's sequence and `duplicate` set. A writer that lost an acknowledgement (timeout, failover)
//     resends the same payload with the same msg_id and the same expected sequence: it gets the
//     original sequence back, whether the server answers "duplicate" or refuses the stale expected
//     sequence (publish looks the message up then and recognises its own msg_id). A msg_id must
//     therefore never be reused for other content.
//   - An acknowledged message is held by a quorum of the stream's replicas (2 of 3), in their page
//     cache; nats-server 2.9 does not fsync per message (the README's "What an acknowledgement means").
//   - The reader returns messages in sequence order, each once, from the sequence it was opened at;
//     it survives the stream's or its consumer's server dying (it re-creates its consumer from the
//     sequence after the last one it returned, and reads from the stream's leader until it can).
//
// Errors: PublishError (a code the writer acts on) for publish; Error (connection.hpp) for the rest.
#pragma once

#include <coconut/cluster/connection.hpp>
#include <coconut/core/bytes.hpp>
#include <coconut/core/result.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace coconut::cluster {

struct StreamConfig {
    std::string name = "COCONUT_JOURNAL";
    std::string subject = "coconut.journal";
    int replicas = 3;
    // Messages older than this are removed (snapshots cover what is older: keep at least the days a
    // node may be away and still catch up from the stream).
    std::chrono::hours max_age{24 * 7};
    std::chrono::seconds duplicate_window{120};
    // Largest message the stream stores (one group commit's journal entries). The servers'
    // max_payload must be at least this (the README's server settings).
    std::int32_t max_message_bytes = 8 * 1024 * 1024;
};

// Creates the stream (file storage, limits retention) if it does not exist. If it exists, checks
// that its subject, replicas, storage and limits are the ones asked for: `mismatch` naming the first
// setting that differs (nothing is changed: an operator decides).
Status<Error> ensure_stream(Connection& connection, const StreamConfig& config);

// The stream's last sequence (0: never held a message), from its current leader.
Result<std::uint64_t, Error> last_sequence(Connection& connection, const std::string& stream);

// The msg id of the stream's message at `sequence` ("" if it was published without one); nullopt when
// the stream holds no message there: none was stored at it yet, or it aged out (max_age).
Result<std::optional<std::string>, Error> message_id_at(Connection& connection, const std::string& stream, std::uint64_t sequence);

// The name of the server that leads the stream now ("" while none does). For operators and tests.
Result<std::string, Error> stream_leader(Connection& connection, const std::string& stream);

// ---- publish -------------------------------------------------------------------------------------

enum class PublishErrorCode {
    wrong_last_sequence,  // fenced: the stream's last sequence is not the expected one (JetStream 10071)
    timeout,              // no acknowledgement within max_wait: the message may or may not be stored
    no_responders,        // no stream leader right now (an election, or no quorum): nothing stored
    too_large,            // above the stream's max_message_bytes or the server's max_payload: nothing stored
    permission_denied,    // this identity may not publish to the subject: nothing stored
    other,
};
const char* to_string(PublishErrorCode code);

struct PublishError {
    PublishErrorCode code = PublishErrorCode::other;
    std::string message;
    int jetstream_code = 0;  // JetStream's error code when the server answered one (10071, 10054 ...)
};

struct PublishAck {
    std::uint64_t sequence = 0;  // the message's sequence in the stream
    bool duplicate = false;      // msg_id was already stored: nothing new was stored
};

// Publishes `payload` to config.subject, stored only if the stream's last sequence is
// `expected_last_sequence` (0: the stream never held a message), de-duplicated by `msg_id` (not
// empty). Synchronous: returns once the stream acknowledged, refused, or max_wait passed.
Result<PublishAck, PublishError> publish(Connection& connection, const StreamConfig& config, ByteView payload, std::string_view msg_id,
                                         std::uint64_t expected_last_sequence,
                                         std::chrono::milliseconds max_wait = std::chrono::milliseconds{2000});

// ---- reading in order ----------------------------------------------------------------------------

struct JournalMessage {
    std::uint64_t sequence = 0;
    Bytes payload;
    std::string msg_id;  // "" if the message was published without one
};

enum class ReaderAck {
    none,  // the server forgets each message once sent (fastest; the reader tracks its own position)
    all,   // acknowledge the last message of each batch (the position also lives on the server)
};

struct ReaderOptions {
    // Messages per fetch. A journal message carries a whole group commit (up to max_message_bytes),
    // so a batch may be large: bounded by batch_bytes_max as well.
    int batch_max = 256;
    std::int64_t batch_bytes_max = 32 * 1024 * 1024;
    ReaderAck ack = ReaderAck::none;
};

class JournalReader {
public:
    // A reader whose first message will be the first one stored at or after `first_sequence` (>= 1).
    // The reader keeps a copy of `connection`. Fails on a stream that does not exist (`not_found`) or a
    // refusal; while the cluster has no stream leader (`unavailable`) it opens, and next_batch
    // creates the consumer once one answers.
    static Result<JournalReader, Error> open(Connection& connection, const StreamConfig& config, std::uint64_t first_sequence,
                                             ReaderOptions options = {});
    JournalReader(JournalReader&&) noexcept;
    JournalReader& operator=(JournalReader&&) noexcept;
    ~JournalReader();  // deletes its consumer on the server (best effort; an abandoned one expires)

    // The next messages in order (at most batch_max), waiting up to `wait` for the first one; empty
    // when none arrived within it. Returns within about `wait`, plus one request timeout when the
    // consumer turns out to be lost. `unavailable` when neither the consumer nor a new one could be
    // reached (no stream leader): call again, the reader resumes where it was.
    Result<std::vector<JournalMessage>, Error> next_batch(std::chrono::milliseconds wait);

    // The sequence the next message must be at or after (the last returned + 1).
    std::uint64_t next_sequence() const;
    // How many consumers this reader made on the server (1 + each re-creation after a loss).
    std::uint64_t consumers_created() const;
    // The server's name of the current consumer ("" while it has none). For operators and tests.
    std::string consumer_name() const;

    struct State;

private:
    explicit JournalReader(std::unique_ptr<State> state);
    std::unique_ptr<State> state_;
};

}  // namespace coconut::cluster
