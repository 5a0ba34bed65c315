// A data directory's snapshot, for a clearing node that joins a cluster or comes back wiped
// (clearing/README.md "Joining a node").
//
// The server side (take_snapshot) writes a compacted, consistent copy of the ledger's LMDB environment
// (mdb_env_copy2 with MDB_CP_COMPACT: LMDB copies inside a read transaction of its own, so the ledger
// writer is never blocked) into a temporary directory inside the data directory, opens the copy
// read-only to read the journal head and the replicated stream position it holds (the copy's, not the
// live ledger's, which may have moved on meanwhile), keeps an open descriptor to the copied file and
// removes the directory. What the copy holds is therefore exactly what the manifest says.
//
// On the wire (GET /v1/clerk/cluster/snapshot, role "cluster"): the manifest as one line of JSON ending
// in '\n', then exactly `lmdb_bytes` bytes of the copied data.mdb. The manifest also carries the data
// directory's files every node needs alike (today the HTTP token-hashing key, http-token.key, which
// must be the same on every node for the clerk and card tokens in the shared ledger to work on each).
//
// The client side (download_snapshot, coconut-clearingd join) reads the manifest and the file into a
// temporary directory next to the target, opens the ledger there, runs `check`, compares the head and
// position with the manifest, and only then renames the directory into place.
#pragma once

#include <coconut/clearing/plan.hpp>
#include <coconut/core/bytes.hpp>
#include <coconut/ledger/lmdb.hpp>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace coconut::clearing {

inline constexpr std::uint32_t snapshot_format = 1;
inline constexpr std::string_view snapshot_content_type = "application/vnd.coconut.snapshot";
// Files of a data directory that travel in the manifest (small, and the same on every node).
inline constexpr std::string_view snapshot_token_key_file = "http-token.key";

struct SnapshotManifest {
    std::uint32_t format = snapshot_format;
    std::uint64_t position = 0;                        // the replicated stream position the copy holds
    std::uint64_t journal_sequence = 0;                // its journal head
    std::string journal_hash;                          // hex
    std::uint64_t lmdb_bytes = 0;                      // the data.mdb bytes after the manifest line
    std::vector<std::pair<std::string, Bytes>> files;  // name in the data directory → contents
};

// One line of JSON (no '\n'); parse_manifest reads it back (bad_input naming what is wrong).
std::string manifest_json(const SnapshotManifest& manifest);
Result<SnapshotManifest> parse_manifest(std::string_view line);

// A copy taken: the manifest and an open descriptor of the copied data.mdb (already unlinked: it goes
// when the descriptor is closed).
class Snapshot {
public:
    Snapshot(SnapshotManifest manifest, int fd) : manifest_(std::move(manifest)), fd_(fd) {}
    Snapshot(Snapshot&& other) noexcept : manifest_(std::move(other.manifest_)), fd_(std::exchange(other.fd_, -1)) {}
    Snapshot& operator=(Snapshot&&) = delete;
    Snapshot(const Snapshot&) = delete;
    Snapshot& operator=(const Snapshot&) = delete;
    ~Snapshot();
    const SnapshotManifest& manifest() const { return manifest_; }
    // Hands the descriptor over (the caller closes it).
    int release() { return std::exchange(fd_, -1); }

private:
    SnapshotManifest manifest_;
    int fd_ = -1;
};

// The copy itself (take_snapshot, coconut-clearingd backup): `env`, the ledger's environment of
// `data_directory` (opened by this process, read-only or not), copied consistently into the existing
// empty directory `into` (data.mdb; compacted when `compact`), and the manifest of what the copy holds,
// with the shared files of `data_directory` (read, not written into `into`).
Result<SnapshotManifest> copy_data_directory(lmdb::Env& env, const std::filesystem::path& data_directory, const std::filesystem::path& into,
                                             bool compact);

// Copies `env` (the ledger's environment of `data_directory`) as above. Any thread; one at a time per
// data directory (the caller bounds it). storage errors name the step that failed.
Result<Snapshot> take_snapshot(lmdb::Env& env, const std::filesystem::path& data_directory);

// coconut-clearingd join.
struct JoinOptions {
    std::string from;  // https://HOST:PORT (or http://HOST:PORT on loopback)
    std::string token;
    std::filesystem::path ca_file;  // https://
    std::filesystem::path data;
    bool replace = false;  // a non-empty `data` is replaced (moved aside, then removed) instead of refused
    std::chrono::seconds timeout{600};
};
struct JoinReport {
    SnapshotManifest manifest;
    std::uint64_t accounts = 0;
    std::uint64_t journal_entries = 0;
};
// A copy of a data directory in `staging` (snapshot or backup): it opens, passes `check`, and holds the
// journal head and stream position `manifest` says. storage error naming what differs.
Result<JoinReport> verify_copy(const std::filesystem::path& staging, const SnapshotManifest& manifest);
// staging → data, atomically (rename); an existing `data` (the caller made sure no daemon serves it) is
// moved aside first, then removed.
Status install_data_directory(const std::filesystem::path& staging, const std::filesystem::path& data);

// Downloads, verifies and installs a snapshot as described above. Errors: bad_input (arguments, a
// refused answer: 401/403/429/503 with the server's message, not a clearing node's answer), conflict
// (`data` not empty without `replace`), storage (writing, or the copy failing its check).
Result<JoinReport> join_from_snapshot(const JoinOptions& options);

}  // namespace coconut::clearing
