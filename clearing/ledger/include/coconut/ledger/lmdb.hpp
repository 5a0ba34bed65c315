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
#include <memory>
#include <optional>
#include <string>
#include <utility>

namespace coconut::lmdb {

struct Error {
    int rc = 0;                  // the mdb_* return code (MDB_MAP_FULL, ENOSPC, …)
    const char* operation = "";  // the mdb_* function that failed

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

private:
    explicit Env(MDB_env* env);
    void close();
    MDB_env* env_ = nullptr;
    std::unique_ptr<ReadPool> reads_;
};

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
          context_(std::exchange(other.context_, nullptr)) {}
    Txn& operator=(Txn&& other) noexcept;
    Txn(const Txn&) = delete;
    Txn& operator=(const Txn&) = delete;
    // Aborts a transaction that was neither committed nor aborted.
    ~Txn() { abort(); }

    MDB_txn* get() const { return txn_; }
    bool live() const { return txn_ != nullptr; }
    // Commits (for a top-level write transaction: durably, fsync included). The handle is released
    // whatever the outcome; on error nothing of this transaction was written.
    Status commit();
    void abort();

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
    MDB_txn* txn_ = nullptr;
    ReadPool* pool_ = nullptr;  // set for read transactions: where abort() returns the handle
    TxnContext* context_ = nullptr;
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
