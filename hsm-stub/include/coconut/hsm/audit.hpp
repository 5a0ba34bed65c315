// The HSM's audit log: append-only, one JSON line per key use, hash-chained with a keyed hash.
//
// Line format (one line, fields in this order, no secret ever):
//   {"seq":42,"time":"2026-11-26T19:41:16.123Z","client":"clearing","command":"verify-purchase-tacs",
//    "key":"mk-tac","versions":[1],"result":"valid=1023 invalid=1","prev":"<64 hex>","hash":"<64 hex>"}
// hash = BLAKE2b-256 keyed with the audit key (KeyStore::audit_key(), derived from the local master key)
// over prev_hash ‖ the line's bytes up to (not including) `,"hash":"`. The first line has prev = 64 zeros.
// seq starts at 1 and increases by one per line.
//
// So editing, inserting, deleting or reordering a line breaks the chain, and — because the hash is keyed —
// whoever can write audit.log but not read master.key cannot forge a consistent chain. Cutting lines off
// the end is visible only against an outside record of the last seq (the daemon logs a "serve-start"
// line with the seq it continues from; keep a copy of the last line elsewhere if that matters).
//
// Several processes append to the same log (the daemon and ceremony commands): every append takes an
// exclusive flock, re-reads the tail if another process appended since, and writes the line with one
// write(2) on an O_APPEND descriptor. Lines reach the OS at once; fdatasync runs at most every
// sync_interval_ms (and on close), trading a bounded loss window on power failure for not syncing per
// request at 100k verifications/s.
#pragma once

#include <coconut/hsm/hsm.hpp>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace coconut::hsm {

struct AuditEntry {
    std::string client;   // client id, or "ceremony:<user>" for local ceremony commands
    std::string command;  // "verify-purchase-tacs", "key-import", "connection-closed", …
    std::string key_label;                   // empty when no key was used
    std::vector<std::uint8_t> key_versions;  // empty when no key was used
    std::string result;   // "ok", "valid", "invalid", "bad_mac: …" — never key material
};

// A line longer than this is refused by `audit verify` (and never written: fields are bounded — ids and
// labels ≤ 32 chars, results are short) so a corrupt file cannot make the verifier allocate without bound.
inline constexpr std::size_t max_audit_line_bytes = 4096;
// fdatasync at most this often: a power cut loses at most this window of audit lines.
inline constexpr std::int64_t audit_sync_interval_ms = 1000;

// "ceremony:<login name>": the audit log's client field for a local ceremony command.
std::string ceremony_actor();

class AuditLog {
public:
    // Opens (creating if absent, mode 0600) the log for appending; reads the last line to continue the
    // chain. audit_broken if the last line does not parse; io_error otherwise.
    static Outcome<std::unique_ptr<AuditLog>> open(const std::filesystem::path& path, const crypto::Secret<32>& key);
    ~AuditLog();
    AuditLog(const AuditLog&) = delete;
    AuditLog& operator=(const AuditLog&) = delete;

    // Appends one line; thread-safe and safe against other processes appending. Returns its seq.
    Outcome<std::uint64_t> append(const AuditEntry& entry);
    void sync();  // fdatasync now

    struct Summary {
        std::uint64_t lines = 0;
        std::uint64_t last_seq = 0;
        std::string last_hash_hex;
    };
    // Checks the whole chain. audit_broken names the first bad line (1-based) and what is wrong with it:
    // unparsable, seq gap, prev mismatch, hash mismatch, line too long.
    static Outcome<Summary> verify(const std::filesystem::path& path, const crypto::Secret<32>& key);

private:
    AuditLog() = default;
    Status<Failure> reload_tail_locked();
    std::mutex mutex_;
    int fd_ = -1;
    std::shared_ptr<const crypto::Secret<32>> key_;  // in guarded, locked memory
    std::uint64_t last_seq_ = 0;
    std::array<std::uint8_t, 32> last_hash_{};
    std::uint64_t known_size_ = 0;
    std::chrono::steady_clock::time_point last_sync_{};
    std::filesystem::path path_;
};

}  // namespace coconut::hsm
