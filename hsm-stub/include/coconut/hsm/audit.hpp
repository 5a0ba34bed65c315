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
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace coconut::hsm {

struct AuditEntry {
    std::string client;                      // client id, or "ceremony:<user>" for local ceremony commands
    std::string command;                     // "verify-purchase-tacs", "key-import", "connection-closed", …
    std::string key_label;                   // empty when no key was used
    std::vector<std::uint8_t> key_versions;  // empty when no key was used
    std::string result;                      // "ok", "valid", "invalid", "bad_mac: …" — never key material
};

// A line longer than this is refused by `audit verify` (and never written: fields are bounded — ids and
// labels ≤ 32 chars, results are short) so a corrupt file cannot make the verifier allocate without bound.
inline constexpr std::size_t max_audit_line_bytes = 4096;
// fdatasync at most this often: a power cut loses at most this window of audit lines.
inline constexpr std::int64_t audit_sync_interval_ms = 1000;

// "ceremony:<login name>": the audit log's client field for a local ceremony command.
std::string ceremony_actor();

// Refusals before authentication — connections from addresses not on the allow-list, over a
// connection limit, naming an unknown client, failing their first MAC, sending a frame that does not
// parse, idle or slow before their first request — are counted here and written as ONE line per
// interval (Server: ServerConfig::refusal_audit_interval, and at shutdown), so that a flood of junk
// connections costs the log a line a minute instead of a line per connection. Authenticated events
// stay one line each. The line (client "unauthenticated", command "refusals"):
//   "result":"2000 refused in 60.0 s; reasons: protocol_error=1200 unknown_client=800; addresses: 2
//             (top: 127.0.0.1=1990 127.0.0.2=10); claimed clients: clearing=3"
// `claimed clients` lists registered client ids named by requests whose MAC failed (unknown ids are
// never echoed). Memory and the line are bounded: at most max_tally_reasons reasons,
// max_tally_addresses addresses and max_tally_clients client ids are told apart per interval (the
// rest are counted together as "other"); the line names the top max_tally_top of each.
inline constexpr std::size_t max_tally_reasons = 32;
inline constexpr std::size_t max_tally_addresses = 4096;  // ≈ 300 KiB at most, freed at each line
inline constexpr std::size_t max_tally_clients = 64;
inline constexpr std::size_t max_tally_top = 5;

class RefusalTally {
public:
    // Counts one refusal. `reason`: a short name from a fixed set (errc_name(), "not_allowed", …);
    // `address`: the peer's address, empty for an event of the listener itself; `claimed_client`: a
    // registered client id the peer named, or empty. Thread-safe, no I/O.
    void count(std::string_view reason, std::string_view address, std::string_view claimed_client = {});
    // The audit line for everything counted since the previous take() (or construction), and resets;
    // nullopt if nothing was counted.
    std::optional<AuditEntry> take();

private:
    std::mutex mutex_;
    std::chrono::steady_clock::time_point since_ = std::chrono::steady_clock::now();
    std::uint64_t total_ = 0;
    std::map<std::string, std::uint64_t, std::less<>> reasons_;
    std::map<std::string, std::uint64_t, std::less<>> addresses_;
    std::map<std::string, std::uint64_t, std::less<>> clients_;
};

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
