// One message of the clearing cluster's journal stream (docs/DESIGN.md §10, clearing/README.md
// "Cluster"): a primary's commit as its change set (lmdb change capture: every table change of the
// commit, in order, its ledger journal entries included), wrapped with who wrote it and authenticated
// under the key the clearing nodes share, so that nobody but a clearing node can append an entry a
// standby would apply — whatever the NATS permissions.
//
// Format (big-endian):
//   "CCJ2" ‖ codec (1: 0 stored, 1 zstd) ‖ node name length (1) ‖ node name
//   ‖ epoch (u64: the writer's lease revision)
//   ‖ follows (u64: the stream sequence the message was published after, the fence)
//   ‖ change set length (u32, as applied) ‖ stored length (u32) ‖ change set, stored or zstd-compressed
//   ‖ HMAC-SHA256(cluster key, everything before) (32)
// The MAC covers the compressed bytes and is checked before anything is decompressed, and the change
// set is decompressed into exactly the length it declares (at most change_set_max): a message nobody
// with the key wrote is never decompressed. Change sets under 512 bytes, or that zstd does not shrink,
// are stored as they are. Messages of the first format, "CCJ1" (no codec, no stored length, the change
// set stored), are still read.
#pragma once

#include <coconut/core/bytes.hpp>
#include <coconut/core/result.hpp>

#include <array>
#include <cstdint>
#include <filesystem>
#include <string>

namespace coconut::clearing {

inline constexpr std::size_t cluster_key_size = 32;
// The largest change set a journal message may carry (as applied, before compression).
inline constexpr std::size_t change_set_max = std::size_t{256} << 20;
using ClusterKey = std::array<std::uint8_t, cluster_key_size>;

// Reads the cluster key: a file of 64 hex digits (and an optional newline), mode 0600 or stricter,
// the same on every clearing node. Errors name the file and what is wrong.
coconut::Result<ClusterKey, std::string> read_cluster_key(const std::filesystem::path& file);
// Writes a new random key to `file` (mode 0600; refuses to replace an existing file).
coconut::Status<std::string> write_cluster_key(const std::filesystem::path& file);

struct JournalEnvelope {
    std::string node;
    std::uint64_t epoch = 0;
    std::uint64_t follows = 0;
    Bytes changes;
};

Bytes seal(const JournalEnvelope& envelope, const ClusterKey& key);
// The envelope of a sealed message; an error when it does not decode or its MAC is not the key's.
coconut::Result<JournalEnvelope, std::string> open_sealed(ByteView message, const ClusterKey& key);
// The message id the stream de-duplicates on: derived from the sealed bytes, so a resend of the same
// commit carries the same id and no two commits share one.
std::string journal_message_id(ByteView sealed);

}  // namespace coconut::clearing
