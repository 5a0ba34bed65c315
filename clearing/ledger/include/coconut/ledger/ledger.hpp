// The clearing ledger: double-entry accounts and immutable transfers in LMDB, after TigerBeetle's
// model (docs/REFERENCES.md §1, docs/DESIGN.md §8.3). clearing/LEDGER.md describes the tables, the rules and the
// journal; this header is the whole API.
//
// Model
//   Account   u128 id, ledger (u32, the asset: 1 purse, 2 medical), code (u16, the account type),
//             flags, four u64 counters debits/credits × pending/posted, user data, timestamp.
//   Transfer  debits one account and credits another on the same ledger, immutably. A pending
//             transfer reserves the amount in the *_pending counters until it is posted (in full or
//             in part; the rest is released), voided, or expires after `timeout_s`.
//
// Rules
//   - Ids are chosen by the originator (docs/DESIGN.md §4.3) so a retry lands on the same id: the same id
//     with identical fields answers `exists` (treat as created: the result carries the original
//     timestamp); with any field different it answers exists_with_different_<field>.
//   - An id that failed with a transient error (an account or pending transfer not found, a balance
//     limit) answers id_already_failed forever after, even if the state changed: retry with a new id.
//   - Events flagged `linked` form a chain with the next event; the chain's last event has the flag
//     clear. A chain succeeds or fails as a unit; events of a failed chain answer linked_event_failed
//     except the one that failed, and a chain still open at the end of a batch fails as a whole.
//   - Every committed event gets a ledger timestamp (ns, strictly increasing) and a journal entry
//     (sequence number from 1, SHA-256 chained to the previous entry).
//   - apply() applies a whole batch in ONE durable write transaction; nothing it returns is
//     visible to anyone before the commit has been synced. Writer (below) batches many callers.
//
// Errors: per-event outcomes are ResultCode values (expected, answered to the client). Failing to
// store anything at all (disk full, map full, I/O) is an Error for the whole batch: nothing of the
// batch was written.
#pragma once

#include <coconut/ledger/lmdb.hpp>
#include <coconut/core/result.hpp>

#include <array>
#include <chrono>
#include <compare>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <variant>
#include <vector>

namespace coconut::ledger {

// ---- identifiers ----------------------------------------------------------------------------------

// A u128, stored big-endian (high then low) so LMDB's byte order is numeric order.
struct Id {
    std::uint64_t high = 0;
    std::uint64_t low = 0;

    static constexpr Id max() { return {~std::uint64_t{0}, ~std::uint64_t{0}}; }
    constexpr bool zero() const { return high == 0 && low == 0; }
    friend constexpr auto operator<=>(const Id&, const Id&) = default;
};
inline constexpr Id make_id(std::uint64_t low) { return Id{0, low}; }
// For unordered containers keyed by Id (ids are SHA-256-derived: mixing the halves suffices).
struct IdHash {
    std::size_t operator()(const Id& id) const noexcept { return std::hash<std::uint64_t>{}(id.low ^ (id.high * 0x9E3779B97F4A7C15u)); }
};
// The first 16 bytes of SHA-256(material): an id an originator can recompute (docs/DESIGN.md §4.3, e.g.
// material = "purchase" ‖ ASN ‖ PSAM terminal id ‖ terminal serial).
Id derive_id(ByteView material);
std::string to_string(const Id& id);  // 32 hex digits

// ---- records ----------------------------------------------------------------------------------------

namespace account_flags {
inline constexpr std::uint16_t linked = 1u << 0;
inline constexpr std::uint16_t debits_must_not_exceed_credits = 1u << 1;
inline constexpr std::uint16_t credits_must_not_exceed_debits = 1u << 2;
inline constexpr std::uint16_t history = 1u << 3;  // keep a balance snapshot after every change
inline constexpr std::uint16_t all = linked | debits_must_not_exceed_credits | credits_must_not_exceed_debits | history;
}  // namespace account_flags

namespace transfer_flags {
inline constexpr std::uint16_t linked = 1u << 0;
inline constexpr std::uint16_t pending = 1u << 1;
inline constexpr std::uint16_t post_pending = 1u << 2;
inline constexpr std::uint16_t void_pending = 1u << 3;
inline constexpr std::uint16_t all = linked | pending | post_pending | void_pending;
}  // namespace transfer_flags

// Posting with amount = amount_max posts the pending transfer's full amount.
inline constexpr std::uint64_t amount_max = ~std::uint64_t{0};

struct Account {
    Id id;
    std::uint64_t debits_pending = 0;  // counters: must be 0 when creating
    std::uint64_t debits_posted = 0;
    std::uint64_t credits_pending = 0;
    std::uint64_t credits_posted = 0;
    Id user_data_128;
    std::uint64_t user_data_64 = 0;
    std::uint32_t user_data_32 = 0;
    std::uint32_t ledger = 0;
    std::uint16_t code = 0;
    std::uint16_t flags = 0;
    std::uint64_t timestamp = 0;  // must be 0 when creating; set by the ledger

    friend bool operator==(const Account&, const Account&) = default;
};

struct Transfer {
    Id id;
    Id debit_account_id;       // for post/void: 0, or must match the pending transfer's
    Id credit_account_id;      // for post/void: 0, or must match the pending transfer's
    std::uint64_t amount = 0;  // fen; post: ≤ pending amount or amount_max; void: 0, amount_max or the pending amount
    Id pending_id;             // post/void only: the pending transfer resolved
    Id user_data_128;
    std::uint64_t user_data_64 = 0;
    std::uint32_t user_data_32 = 0;
    std::uint32_t timeout_s = 0;  // pending only: the hold expires this many seconds after its timestamp; 0 = never
    std::uint32_t ledger = 0;     // for post/void: 0, or must match
    std::uint16_t code = 0;       // for post/void: 0, or must match
    std::uint16_t flags = 0;
    std::uint64_t timestamp = 0;  // must be 0 when creating; set by the ledger

    friend bool operator==(const Transfer&, const Transfer&) = default;
};
// Stored form of a post or void: the ledger fills debit/credit account, ledger and code from the
// pending transfer and the resolved amount (posted amount, or the voided pending amount).

// One event of a batch: create an account or create a transfer.
using Event = std::variant<Account, Transfer>;

// ---- result codes ------------------------------------------------------------------------------------

// Per-event outcome. Checks run in this order and the first that applies wins (TigerBeetle's
// precedence); each code's comment says to which events it applies (A accounts, T transfers).
enum class ResultCode : std::uint8_t {
    ok = 0,                                            // A T created
    linked_event_failed,                               // A T another event of its chain failed
    linked_event_chain_open,                           // A T the batch ended inside a chain
    timestamp_must_be_zero,                            // A T
    reserved_flag,                                     // A T undefined flag bit
    id_must_not_be_zero,                               // A T
    id_must_not_be_int_max,                            // A T
    exists_with_different_flags,                       // A T
    exists_with_different_pending_id,                  // T
    exists_with_different_timeout,                     // T
    exists_with_different_debit_account_id,            // T
    exists_with_different_credit_account_id,           // T
    exists_with_different_amount,                      // T
    exists_with_different_user_data_128,               // A T
    exists_with_different_user_data_64,                // A T
    exists_with_different_user_data_32,                // A T
    exists_with_different_ledger,                      // A T
    exists_with_different_code,                        // A T
    exists,                                            // A T identical to the stored one: treat as ok
    id_already_failed,                                 // T this id failed transiently before
    flags_are_mutually_exclusive,                      // A both balance limits; T more than one of pending/post/void
    debits_pending_must_be_zero,                       // A
    debits_posted_must_be_zero,                        // A
    credits_pending_must_be_zero,                      // A
    credits_posted_must_be_zero,                       // A
    debit_account_id_must_not_be_zero,                 // T
    debit_account_id_must_not_be_int_max,              // T
    credit_account_id_must_not_be_zero,                // T
    credit_account_id_must_not_be_int_max,             // T
    accounts_must_be_different,                        // T
    pending_id_must_be_zero,                           // T pending_id on a transfer that is not post/void
    pending_id_must_not_be_zero,                       // T post/void
    pending_id_must_not_be_int_max,                    // T
    pending_id_must_be_different,                      // T pending_id == id
    timeout_reserved_for_pending_transfer,             // T timeout on a non-pending transfer
    amount_must_not_be_zero,                           // T single-phase or pending transfer of 0
    ledger_must_not_be_zero,                           // A T
    code_must_not_be_zero,                             // A T
    debit_account_not_found,                           // T transient
    credit_account_not_found,                          // T transient
    accounts_must_have_the_same_ledger,                // T
    transfer_must_have_the_same_ledger_as_accounts,    // T
    pending_transfer_not_found,                        // T transient
    pending_transfer_not_pending,                      // T pending_id names a transfer without `pending`
    pending_transfer_has_different_debit_account_id,   // T
    pending_transfer_has_different_credit_account_id,  // T
    pending_transfer_has_different_ledger,             // T
    pending_transfer_has_different_code,               // T
    exceeds_pending_transfer_amount,                   // T post above the pending amount
    pending_transfer_has_different_amount,             // T void with another amount
    pending_transfer_already_posted,                   // T
    pending_transfer_already_voided,                   // T
    pending_transfer_expired,                          // T
    overflows_debits_pending,                          // T a u64 counter would wrap
    overflows_credits_pending,                         // T
    overflows_debits_posted,                           // T
    overflows_credits_posted,                          // T
    overflows_debits,                                  // T pending + posted would wrap
    overflows_credits,                                 // T
    overflows_timeout,                                 // T timestamp + timeout would wrap
    exceeds_credits,                                   // T transient: debit account's debits would exceed its credits
    exceeds_debits,                                    // T transient: credit account's credits would exceed its debits
};

std::string_view to_string(ResultCode code);
// True for the codes after which the id is recorded as failed (id_already_failed on retry).
bool is_transient(ResultCode code);
// ok or exists: the event is (now) in the ledger.
inline bool succeeded(ResultCode code) { return code == ResultCode::ok || code == ResultCode::exists; }

struct EventResult {
    ResultCode code = ResultCode::ok;
    // ok: the timestamp assigned; exists: the stored event's timestamp; failures: 0.
    std::uint64_t timestamp = 0;
};

// ---- operating errors -----------------------------------------------------------------------------

enum class ErrorCode : std::uint8_t {
    map_full,  // LMDB map size used up: nothing of the batch was written; restart with a larger map
    // The file system of the ledger's directory is full: ENOSPC, or EIO (LMDB's report of a short
    // write) while less than storage_full_below_bytes are free. Nothing of the batch was written; the
    // next commit succeeds once space is freed. The message names the directory and its free bytes.
    storage_full,
    storage,    // any other LMDB / file-system failure (EIO with room left, …)
    corrupt,    // a stored record or the journal head does not decode (a bug or a damaged file)
    too_large,  // batch above batch_events_max
    stopped,    // the writer is stopping and takes no more requests
    // Replication (docs/DESIGN.md §10): the commit hook did not take the commit (the journal stream
    // refused it or did not acknowledge it in time), or a replicated commit does not apply to this copy
    // (out of order, or its journal entries do not extend this ledger's hash chain). Nothing was written.
    replication,
};

struct Error {
    ErrorCode code = ErrorCode::storage;
    std::string message;
};

// LMDB writes a commit's pages with pwrite; when the file system fills up in the middle, the write is
// short and LMDB reports EIO, not ENOSPC (mdb_page_flush). A short write stops where the blocks ran
// out, so what is free afterwards is a few blocks at most: EIO with less than this free is "full"
// (1 MiB leaves room for file-system metadata and another process writing meanwhile).
inline constexpr std::uint64_t storage_full_below_bytes = std::uint64_t{1} << 20;

template <class T>
using Result = coconut::Result<T, Error>;

// ---- ledger -----------------------------------------------------------------------------------------

// Work of the ledger's user (e.g. the daemon's card registry: last seen ATC, risk flags) that must
// commit atomically with a batch's bookings: called inside the write transaction after the batch's
// events, with their results. Read and write only the caller's own tables (opened with
// env().open_table()): the ledger's own records are not all written yet (account records are written
// back once at the end of the group). Never commit or abort `txn`. An error fails the whole commit.
using BatchHook = std::function<lmdb::Status(lmdb::Txn& txn, std::span<const EventResult> results)>;

struct Batch {
    std::span<const Event> events;
    BatchHook after;  // may be empty
};

// Work of the ledger's user around a whole group commit (the daemon's registry keeps the card and
// terminal records its BatchHooks change and writes each once per group): `begin` before the group's
// first event, `finish` after its last BatchHook and before the commit (an error fails the group,
// nothing written), `end` after the commit or its failure, always. Any may be empty. The context
// `begin` returns (may be nullptr) is the group's: attached to the group's transaction
// (lmdb::Txn::context), every BatchHook and `finish` of the group find it there; no other transaction
// carries it.
struct GroupHooks {
    std::function<lmdb::TxnContext*(lmdb::Txn& txn)> begin;
    std::function<lmdb::Status(lmdb::Txn& txn)> finish;
    std::function<void()> end;
};

// Events in one batch (and so in one write transaction). TigerBeetle's limit (8,189 per 1 MiB
// request) keeps one batch's dirty pages a few MiB; ours is the same order of magnitude.
inline constexpr std::size_t batch_events_max = 8190;
// Expired holds released per commit, so one commit's size stays bounded however many holds fall due
// at once; the rest are released by the following commits.
inline constexpr std::size_t expiries_per_commit_max = 8190;
// The default map: the file is sparse, so a large map costs address space only. 64 GiB holds
// ~150M transfers with their indexes — a year of a province's volume (docs/DESIGN.md §10).
inline constexpr std::size_t map_size_bytes_default = std::size_t{64} << 30;
// Concurrent read transactions (query API threads, settlement, check).
inline constexpr unsigned readers_max_default = 126;
// Tables the ledger uses plus room for the daemon's registries in the same environment.
inline constexpr unsigned tables_max = 32;

struct Options {
    std::string directory;  // must exist
    std::size_t map_size_bytes = map_size_bytes_default;
    unsigned readers_max = readers_max_default;
    // Wall clock in ns since the Unix epoch; ledger timestamps are max(previous + 1, clock). Tests
    // inject a fake clock to make holds expire.
    std::function<std::uint64_t()> clock_ns;
    // Run check() after every committed batch and abort on a violation (docs/DESIGN.md §8.6).
    // O(size of the ledger): tests and debug runs only.
    bool check_after_commit = false;
    // Open the environment MDB_RDONLY: for settlement and tools
    // that read while the daemon serves the directory. Nothing is created (a directory without a
    // ledger fails to open), apply()/expire_pending() fail with ErrorCode::storage, and head() reads
    // the committed head from the environment each time (the writer is another process).
    bool read_only = false;
};

// A balance snapshot of an account with the `history` flag, after the change at `timestamp`.
struct Balance {
    std::uint64_t timestamp = 0;
    std::uint64_t debits_pending = 0;
    std::uint64_t debits_posted = 0;
    std::uint64_t credits_pending = 0;
    std::uint64_t credits_posted = 0;
    friend bool operator==(const Balance&, const Balance&) = default;
};

enum class PendingState : std::uint8_t { pending = 1, posted = 2, voided = 3, expired = 4 };

enum class JournalKind : std::uint8_t {
    account_created = 1,   // payload: the stored Account (128 bytes)
    transfer_created = 2,  // payload: the stored Transfer (128 bytes)
    pending_expired = 3,   // payload: the pending transfer's id (16 bytes)
    id_failed = 4,         // payload: the transfer id (16) ‖ the ResultCode (1)
};

inline constexpr std::size_t hash_size = 32;
using Hash = std::array<std::uint8_t, hash_size>;

struct JournalEntry {
    std::uint64_t sequence = 0;  // 1, 2, 3, … without gaps
    JournalKind kind = JournalKind::account_created;
    std::uint64_t timestamp = 0;
    Bytes payload;
    // SHA-256(previous hash ‖ sequence BE8 ‖ kind ‖ timestamp BE8 ‖ payload); the first entry's
    // previous hash is all zero.
    Hash hash{};
};

// The transfer of a transfer_created journal entry (its payload is the stored record); nullopt for
// other kinds or a payload that does not decode. For readers of the change stream (settlement).
std::optional<Transfer> journal_transfer(const JournalEntry& entry);

struct JournalHead {
    std::uint64_t sequence = 0;
    Hash hash{};
    std::uint64_t timestamp = 0;  // the last timestamp assigned by a commit
};

struct CheckReport {
    std::vector<std::string> problems;  // empty when every invariant holds
    std::uint64_t accounts = 0;
    std::uint64_t transfers = 0;
    std::uint64_t journal_entries = 0;
    std::uint64_t pending_open = 0;
    bool ok() const { return problems.empty(); }
};

class Ledger {
public:
    // Opens or creates the ledger in options.directory. Fails with storage/corrupt errors.
    static Result<std::unique_ptr<Ledger>> open(Options options);
    ~Ledger();
    Ledger(const Ledger&) = delete;
    Ledger& operator=(const Ledger&) = delete;

    // ---- writes (one thread at a time: LMDB write transactions are thread-bound) ----

    // Applies the batch in order in one write transaction, after releasing holds that are due, and
    // commits durably. Returns one result per event. batch.size() ≤ batch_events_max.
    Result<std::vector<EventResult>> apply(std::span<const Event> batch);
    // Group commit: applies several batches, in order, in ONE write transaction. Linked chains do not
    // span batches. On error no batch was written and every caller gets the error.
    Result<std::vector<std::vector<EventResult>>> apply_group(std::span<const std::span<const Event>> batches);
    // The same, with a hook per batch run in the same transaction right after the batch's events
    // (BatchHook below); an error from any hook fails the whole group, nothing written.
    Result<std::vector<std::vector<EventResult>>> apply_group(std::span<const Batch> batches, const GroupHooks& hooks = {});
    // Releases holds whose timeout has passed (up to expiries_per_commit_max) in a commit of its own;
    // returns how many. apply() does this too, so this is for idle periods.
    Result<std::size_t> expire_pending();

    // ---- reads (any thread; each opens its own read transaction) ----

    Result<std::optional<Account>> lookup_account(const Id& id) const;
    Result<std::optional<Transfer>> lookup_transfer(const Id& id) const;
    // Several reads from one snapshot: begin_read() opens a read transaction (renewed from the
    // environment's pool: cheap) and the overloads below read through it. Keep it short-lived.
    Result<lmdb::Txn> begin_read() const;
    Result<std::optional<Account>> lookup_account(const lmdb::Txn& txn, const Id& id) const;
    Result<std::optional<Transfer>> lookup_transfer(const lmdb::Txn& txn, const Id& id) const;
    Result<std::vector<Transfer>> account_transfers_before(const lmdb::Txn& txn, const Id& account_id, std::uint64_t before_timestamp,
                                                           std::size_t limit) const;
    // The timestamp of the newest transfer that debits or credits `account_id` (0: none), from the
    // account index alone (no transfer record is read).
    Result<std::uint64_t> latest_transfer_timestamp(const lmdb::Txn& txn, const Id& account_id) const;
    Result<std::optional<PendingState>> pending_state(const Id& id) const;
    // The clock that timestamps commits (Options::clock_ns), ns since the Unix epoch.
    std::uint64_t clock_ns() const;
    // Transfers that debit or credit `account_id`, oldest first, with timestamp > after_timestamp.
    Result<std::vector<Transfer>> account_transfers(const Id& account_id, std::uint64_t after_timestamp, std::size_t limit) const;
    // The same newest first, with timestamp < before_timestamp (the query API's pages, newest first).
    Result<std::vector<Transfer>> account_transfers_before(const Id& account_id, std::uint64_t before_timestamp, std::size_t limit) const;
    // Balance snapshots (accounts with the history flag), oldest first, timestamp > after_timestamp.
    Result<std::vector<Balance>> account_balances(const Id& account_id, std::uint64_t after_timestamp, std::size_t limit) const;
    Result<std::vector<Balance>> account_balances(const lmdb::Txn& txn, const Id& account_id, std::uint64_t after_timestamp,
                                                  std::size_t limit) const;
    // Journal entries with sequence ≥ from_sequence, at most `limit` (settlement reads in chunks so a
    // read transaction never lives long: long readers stop LMDB from reusing pages).
    Result<std::vector<JournalEntry>> read_journal(std::uint64_t from_sequence, std::size_t limit) const;
    // The earliest time a hold falls due (ns), if any is open with a timeout.
    Result<std::optional<std::uint64_t>> next_expiry_ns() const;
    // The committed journal head (read-only: the latest commit of the writing process; on a storage
    // error the head last read).
    JournalHead head() const;

    // Every invariant of docs/DESIGN.md §8.6: Σ debits = Σ credits per ledger (pending and posted); each
    // account equals the replay of the journal; every pending transfer resolves at most once and its
    // stored state agrees; every transfer in the journal is stored byte for byte; the hash chain and
    // the head verify. Reads in one read transaction.
    Result<CheckReport> check() const;

    // Releases this process's resident pages of the ledger's memory map (lmdb::Env::drop_resident_pages):
    // a reader streaming the whole journal (settlement) calls it between chunks so its RSS stays
    // bounded instead of growing with the size of the file it has read.
    void release_resident_pages() const;

    // The environment, for tables of the daemon that must commit together with the ledger later.
    lmdb::Env& env();

    // ---- replication (docs/DESIGN.md §10) ----
    // A primary sets a commit hook on env() (lmdb::Env::set_commit_hook): each of its commits is one
    // change set, appended to the replicated journal stream at a position (the stream's sequence)
    // before it commits; the hook stores that position with record_position. A standby applies the
    // change sets in stream order with apply_replicated.

    // Applies `changes` (a change set captured on the primary) at `position` in one durable write
    // transaction, with `position` stored in the same transaction (exactly once across restarts).
    // Refused with ErrorCode::replication, nothing written, when `position` is not replicated_position()
    // + 1, when the changes do not apply (a delete of a key this copy lacks, an undecodable set), or
    // when the journal entries they add do not extend this ledger's hash chain entry by entry up to
    // the head they store. Returns the new head.
    Result<JournalHead> apply_replicated(ByteView changes, std::uint64_t position);
    // One commit of the stream: its change set and its position.
    struct ReplicatedCommit {
        ByteView changes;
        std::uint64_t position = 0;
    };
    // Applies consecutive commits in ONE durable write transaction (one fsync for all), the last one's
    // position stored with them; each is checked as apply_replicated checks one. All or nothing: a commit
    // that is refused leaves the ledger at the position it had before the call. `commits` is not empty.
    Result<JournalHead> apply_replicated(std::span<const ReplicatedCommit> commits);
    // The stream position of the last commit replicated into (or from) this ledger; 0: none.
    Result<std::uint64_t> replicated_position() const;
    // For the primary's commit hook: stores `position` in `txn` (the table apply_replicated uses).
    lmdb::Status record_position(lmdb::Txn& txn, std::uint64_t position);
    // The same, and that this copy published the commit at `position` itself, as the stream message
    // `message_id`: a node that starts finds out with last_published whether its last commit is one the
    // stream may not hold (its primary committed while the stream acknowledged).
    lmdb::Status record_position(lmdb::Txn& txn, std::uint64_t position, std::string_view message_id);
    struct Published {
        std::uint64_t position = 0;
        std::string message_id;
    };
    // What the last record_position with a message id stored (nullopt: none ever did).
    Result<std::optional<Published>> last_published() const;

    struct State;

private:
    explicit Ledger(std::unique_ptr<State> state);
    std::unique_ptr<State> state_;
};

// ---- writer thread ------------------------------------------------------------------------------------

// Requests waiting for the writer. When full, try_submit() refuses (the daemon answers 91 / closes
// the slowest client) instead of letting memory grow without bound.
inline constexpr std::size_t writer_queue_requests_max_default = 4096;
// Requests per commit: one commit may carry this many, as long as their events fit batch_events_max.
inline constexpr std::size_t writer_group_requests_max_default = 1024;
// How long an idle writer, woken by a first request, waits for more before committing. Each commit
// costs one fsync (~0.3 ms here); 200 µs lets a burst share a commit while adding little latency.
// Requests that queued during a commit go into the next one at once (no delay).
inline constexpr std::chrono::microseconds writer_group_delay_default{200};
// When idle, the writer looks for due holds this often.
inline constexpr std::chrono::milliseconds writer_expiry_interval_default{1000};

struct WriterOptions {
    std::size_t queue_requests_max = writer_queue_requests_max_default;
    std::size_t group_requests_max = writer_group_requests_max_default;
    std::chrono::microseconds group_delay = writer_group_delay_default;
    // When fewer than this many requests queued during the previous commit, wait up to group_delay
    // until this many are queued (0: wait only when woken from idle). Fewer, larger commits: each
    // commit rewrites the root and branch pages of every table it touches, whatever its size
    // (clearing/LEDGER.md §6: 47–58 KB written per booking at 6,000/s without it, 28.8 KB with 16 and 500 µs).
    std::size_t group_linger_below = 0;
    std::chrono::milliseconds expiry_interval = writer_expiry_interval_default;
    GroupHooks group_hooks{};  // around every group commit (see GroupHooks)
};

// Histogram bounds of WriterStats (Prometheus "le" buckets; a last bucket counts everything above).
inline constexpr std::array<std::uint64_t, 8> commit_us_buckets{250, 500, 1000, 2000, 5000, 10000, 50000, 250000};
inline constexpr std::array<std::uint64_t, 8> commit_requests_buckets{1, 2, 4, 16, 64, 256, 1024, 8190};

struct WriterStats {
    std::uint64_t commits = 0;
    std::uint64_t requests = 0;
    std::uint64_t events = 0;
    std::uint64_t failed_commits = 0;
    // Commits (the writer's own expiries included) that failed in storage: storage_full, map_full or
    // storage. A failure is counted once, however many requests it refused.
    std::uint64_t storage_errors = 0;
    // The last commit failed for lack of space (storage_full or map_full) and none has succeeded
    // since; storage_error is that failure's message (empty otherwise).
    bool storage_full = false;
    std::string storage_error;
    std::uint64_t queue_depth = 0;                                                           // requests waiting now
    std::uint64_t commit_us_sum = 0;                                                         // time in apply_group (apply + fsync), summed
    std::array<std::uint64_t, commit_us_buckets.size() + 1> commit_us_counts{};              // per bucket, not cumulative
    std::array<std::uint64_t, commit_requests_buckets.size() + 1> commit_requests_counts{};  // requests per commit
};

using Reply = Result<std::vector<EventResult>>;

// The one ledger writer thread: collects requests from any thread, applies up to group_requests_max
// of them (or what arrived within group_delay) in one durable commit, then completes every request of
// that commit. A request is completed only after its commit was synced. Callbacks run on the writer
// thread, must be short (post to an I/O context) and must not throw.
class Writer {
public:
    using Callback = std::function<void(Reply)>;

    Writer(Ledger& ledger, WriterOptions options = {});
    // Stops taking requests, commits everything queued, joins the thread.
    ~Writer();
    Writer(const Writer&) = delete;
    Writer& operator=(const Writer&) = delete;

    // Queues a request; false when the queue is full or the writer is stopping (callback not called).
    // A request with more than batch_events_max events completes at once with too_large.
    // `after` runs in the commit's transaction after this request's events (see BatchHook).
    bool try_submit(std::vector<Event> events, Callback callback, BatchHook after = {});
    // Queues a request, waiting for room; completes with `stopped` when the writer stops.
    void submit(std::vector<Event> events, Callback callback, BatchHook after = {});
    std::future<Reply> submit(std::vector<Event> events);
    // Drains the queue and joins the thread; later submissions complete with `stopped`.
    void stop();
    WriterStats stats() const;
    // The writer thread, for its owner's scheduling (CPU affinity: clearing::pin_thread).
    std::thread::native_handle_type native_handle() { return thread_.native_handle(); }

private:
    struct Request {
        std::vector<Event> events;
        Callback callback;
        BatchHook after;
    };
    void run();
    bool enqueue(Request& request, bool wait);
    void commit_group(std::vector<Request>& group);
    // Records a commit's outcome in stats_ (storage_full, storage_errors); nullptr: it succeeded.
    // Called with mutex_ held.
    void note_storage(const Error* failure);

    Ledger& ledger_;
    const WriterOptions options_;
    mutable std::mutex mutex_;
    std::condition_variable work_available_;
    std::condition_variable room_available_;
    std::deque<Request> queue_;
    bool stopping_ = false;
    WriterStats stats_;
    std::thread thread_;
};

}  // namespace coconut::ledger
