// RAII wrappers for LMDB's three handles — environment, transaction, cursor — one each, used by the
// ledger and by anything else that keeps tables in the clearing daemon's environment (registries).
//
// LMDB facts these wrappers encode (lmdb.h):
//   - one write transaction at a time per environment; it must be committed or aborted on the thread
//     that began it. Read transactions move between threads because Env opens with MDB_NOTLS.
//   - full durability: the environment is never opened with MDB_NOSYNC / MDB_NOMETASYNC /
//     MDB_WRITEMAP|MDB_MAPASYNC, so mdb_txn_commit() returns only after fsync.
//   - MDB_MAP_FULL: the map size is used up. The write transaction is dead and must be aborted; the
//     environment stays usable for reads. Error::map_full() tells the caller to report it.
//   - values returned by get() and cursors point into the map and are valid until the transaction
//     ends (or, in a write transaction, until the next write).
#pragma once

#include <coconut/core/bytes.hpp>
#include <coconut/core/result.hpp>

#include <lmdb.h>

#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>

namespace coconut::lmdb {

// The return code of a commit that the environment's commit hook refused (Env::set_commit_hook): outside
// LMDB's own codes (MDB_KEYEXIST … MDB_LAST_ERRCODE) and errno values.
inline constexpr int commit_refused_rc = -30000;
// The return code of a replicated change that does not apply to this copy (apply_changes): a delete of a
// key that is not there, or a malformed change set.
inline constexpr int change_mismatch_rc = -30001;

struct Error {
    int rc = 0;                  // the mdb_* return code (MDB_MAP_FULL, ENOSPC, …) or one of the two above
    const char* operation = "";  // the mdb_* function that failed
    std::string detail{};        // what the commit hook, apply_changes or rollback_last_commit said (empty for LMDB's errors)

    bool map_full() const { return rc == MDB_MAP_FULL; }
    // "mdb_txn_commit: MDB_MAP_FULL: Environment mapsize limit reached"
    std::string message() const;
};

template <class T>
using Result = coconut::Result<T, Error>;
using Status = coconut::Status<Error>;

struct EnvOptions {
    std::size_t map_size_bytes = 0;
    unsigned tables_max = 0;   // named databases (mdb_env_set_maxdbs)
    unsigned readers_max = 0;  // concurrent read transactions (mdb_env_set_maxreaders)
    // MDB_RDONLY: no write transaction can begin, nothing is created. Another process (the daemon)
    // may write the environment meanwhile; every read transaction sees its latest commit.
    bool read_only = false;
};

// Idle read transactions of one environment, kept after mdb_txn_reset so the next read renews one
// (mdb_txn_renew: no allocation and, under MDB_NOTLS, no trip through the reader table's lock) instead
// of beginning a new one. Each idle entry keeps its reader slot, so the pool is small.
struct ReadPool;
inline constexpr std::size_t read_pool_idle_max = 16;

class Txn;
// Change capture for replication (docs/DESIGN.md §10): with a commit hook set, every top-level write
// transaction records each put and delete it makes, in order, in any table, as one change set; its
// commit() hands the change set to the hook first and commits only when the hook succeeded (otherwise the
// transaction is aborted, nothing written, and commit() returns the hook's error as commit_refused_rc).
// The hook may still write to the transaction (e.g. where the change set went): those writes are not in
// the change set. A nested transaction's changes join its parent's on commit and vanish on abort.
//
// Change set format: records one after another, each
//   op (1 byte: 1 put, 2 delete) ‖ table name length (1) ‖ table name ‖ key length (u16 BE) ‖ key
//   ‖ for a put: value length (u32 BE) ‖ value
// Only effective changes are recorded: a put that failed (MDB_KEYEXIST) or a delete of a missing key is not.
using CommitHook = std::function<coconut::Status<Error>(Txn& txn, ByteView changes)>;
// A step a commit hook leaves for after the local commit (Txn::after_commit), so that what the hook
// started — a replica's acknowledgement — runs while LMDB writes and syncs. It runs once
// mdb_txn_commit has returned, told whether the commit was written. If it fails, commit() fails with
// its error as commit_refused_rc although the transaction may be in the file: the caller must then
// treat this environment's last commit as not accepted (a cluster node rolls it back:
// rollback_last_commit).
using AfterCommit = std::function<coconut::Status<Error>(bool committed)>;
struct Capture;

class Env {
public:
    // Opens (creating if needed) the environment in `directory` (the directory must exist), with
    // MDB_NOTLS and full sync.
    static Result<Env> open(const std::string& directory, const EnvOptions& options);

    Env(Env&& other) noexcept;
    Env& operator=(Env&& other) noexcept;
    Env(const Env&) = delete;
    Env& operator=(const Env&) = delete;
    ~Env();

    MDB_env* get() const { return env_; }
    // Opens or creates a named table in a short write transaction of its own (start-up only). In a
    // read-only environment it only opens (a read transaction): a missing table is MDB_NOTFOUND.
    Result<MDB_dbi> open_table(const char* name);
    // Whether a named table exists, without creating it.
    Result<bool> has_table(const char* name) const;
    bool read_only() const;
    // Drops this process's resident pages of the memory map (madvise MADV_DONTNEED). The data stays
    // in the OS page cache and faults back in on the next access; nothing can be lost because LMDB
    // maps the file shared and read-only here (never MDB_WRITEMAP) and writes with pwrite. Lets a
    // reader that streams through a large environment keep its RSS bounded.
    void drop_resident_pages() const;
    std::size_t map_size_bytes() const;

    ReadPool* read_pool() const { return reads_.get(); }

    // Starts (a non-empty hook) or stops change capture for the write transactions begun from now on.
    // Set it while no write transaction is open.
    void set_commit_hook(CommitHook hook);
    Capture* capture() const { return capture_.get(); }
    // The named table `name` inside the write transaction `txn` (created if missing, like open_table):
    // for applying change sets, whose tables are named.
    Result<MDB_dbi> table_in(Txn& txn, const std::string& name);

private:
    explicit Env(MDB_env* env);
    void close();
    MDB_env* env_ = nullptr;
    std::unique_ptr<ReadPool> reads_;
    std::unique_ptr<Capture> capture_;  // table names by handle, and the commit hook
};

// Makes the environment's previous commit its latest again: the newer of the two meta pages of
// `directory`/data.mdb is overwritten with the older one, which still describes a whole tree (LMDB
// reuses no page the last two commits can reach). The next write transaction reuses the discarded
// commit's id. For a cluster node's last commit that the journal stream did not take (clearing/node).
// The environment must be closed in this process and open in no other: refused (ErrorCode EBUSY as rc)
// while another process has its lock file open; a file that is not an LMDB 0.9 environment, or whose
// two meta pages are from the same commit (nothing to roll back), is refused with EINVAL and untouched.
Status rollback_last_commit(const std::string& directory);

// Applies a change set (CommitHook's format) in `txn`, in order. A record that does not decode, or a
// delete of a key this copy does not hold, fails with change_mismatch_rc (abort the transaction: this
// copy and the change set's origin have diverged).
coconut::Status<Error> apply_changes(Env& env, Txn& txn, ByteView changes);

// One change of a change set, as read by for_each_change.
struct Change {
    enum class Op : std::uint8_t { put = 1, del = 2 };
    Op op = Op::put;
    std::string_view table;
    ByteView key;
    ByteView value;  // empty for a delete
};
// Calls `visit` for each record of `changes` in order; false when the change set does not decode.
bool for_each_change(ByteView changes, const std::function<void(const Change&)>& visit);

// What the user of a write transaction keeps for it, handed along with the transaction to the code it
// calls: the ledger's group commit attaches the one its GroupHooks::begin made (ledger.hpp), the daemon's
// registry finds its write-back of card and terminal records there (coconut/clearing/registry.hpp).
class TxnContext {
public:
    virtual ~TxnContext() = default;
};

class Txn {
public:
    enum class Mode { read_only, read_write };
    // Begins a transaction; with `parent`, a nested write transaction whose changes reach the parent
    // only on commit() (used for linked chains). A read transaction is renewed from the environment's
    // ReadPool when one is idle there, and goes back to it when it ends.
    static Result<Txn> begin(const Env& env, Mode mode, Txn* parent = nullptr);

    Txn(Txn&& other) noexcept
        : txn_(std::exchange(other.txn_, nullptr)), pool_(std::exchange(other.pool_, nullptr)),
          context_(std::exchange(other.context_, nullptr)), capture_(std::exchange(other.capture_, nullptr)),
          parent_(std::exchange(other.parent_, nullptr)), changes_(std::move(other.changes_)) {}
    Txn& operator=(Txn&& other) noexcept;
    Txn(const Txn&) = delete;
    Txn& operator=(const Txn&) = delete;
    // Aborts a transaction that was neither committed nor aborted.
    ~Txn() { abort(); }

    MDB_txn* get() const { return txn_; }
    bool live() const { return txn_ != nullptr; }
    // Commits (for a top-level write transaction: durably, fsync included). The handle is released
    // whatever the outcome; on error nothing of this transaction was written — except when the commit
    // hook's AfterCommit step failed after LMDB committed (see AfterCommit).
    Status commit();
    void abort();
    // From inside the commit hook only: `step` runs once this transaction's mdb_txn_commit returned.
    void after_commit(AfterCommit step);

    // The value stored under `key`, nullopt when there is none.
    Result<std::optional<ByteView>> get(MDB_dbi table, ByteView key) const;
    Status put(MDB_dbi table, ByteView key, ByteView value, unsigned flags = 0);
    // Deletes `key`; deleting a missing key is not an error (returns false).
    Result<bool> del(MDB_dbi table, ByteView key);

    // The context its user attached (TxnContext), or nullptr: not owned, valid while the transaction is.
    TxnContext* context() const { return context_; }
    void set_context(TxnContext* context) { context_ = context; }

private:
    explicit Txn(MDB_txn* txn, ReadPool* pool = nullptr) : txn_(txn), pool_(pool) {}
    void record(Change::Op op, MDB_dbi table, ByteView key, ByteView value);
    MDB_txn* txn_ = nullptr;
    ReadPool* pool_ = nullptr;  // set for read transactions: where abort() returns the handle
    TxnContext* context_ = nullptr;
    Capture* capture_ = nullptr;      // set for write transactions of an environment with a commit hook
    Txn* parent_ = nullptr;           // a nested transaction's parent (its changes join the parent's)
    std::unique_ptr<Bytes> changes_;  // the change set so far (capture on)
};

class Cursor {
public:
    static Result<Cursor> open(const Txn& txn, MDB_dbi table);

    Cursor(Cursor&& other) noexcept : cursor_(std::exchange(other.cursor_, nullptr)) {}
    Cursor& operator=(Cursor&&) = delete;
    Cursor(const Cursor&) = delete;
    Cursor& operator=(const Cursor&) = delete;
    ~Cursor();

    struct Entry {
        ByteView key;
        ByteView value;
    };
    // Positions at the first key ≥ `key` (MDB_SET_RANGE); nullopt when there is none.
    Result<std::optional<Entry>> seek(ByteView key);
    Result<std::optional<Entry>> first();
    Result<std::optional<Entry>> last();
    Result<std::optional<Entry>> next();
    Result<std::optional<Entry>> prev();

private:
    explicit Cursor(MDB_cursor* cursor) : cursor_(cursor) {}
    Result<std::optional<Entry>> move(MDB_cursor_op op, ByteView key = {});
    MDB_cursor* cursor_ = nullptr;
};

}  // namespace coconut::lmdb
