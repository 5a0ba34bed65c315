#include <coconut/ledger/lmdb.hpp>

#include <coconut/core/assert.hpp>

#include <fmt/format.h>

#include <sys/mman.h>

#include <cinttypes>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <vector>

namespace coconut::lmdb {
namespace {

Unexpected<Error> fail(int rc, const char* operation) { return Unexpected{Error{rc, operation}}; }

MDB_val to_val(ByteView bytes) {
    return MDB_val{bytes.size(), const_cast<std::uint8_t*>(bytes.data())};  // LMDB does not write keys
}
ByteView to_view(const MDB_val& value) { return {static_cast<const std::uint8_t*>(value.mv_data), value.mv_size}; }

// MDB_NOTLS: read transactions are not tied to a thread (docs/DESIGN.md §8.2). Deliberately absent:
// MDB_NOSYNC, MDB_NOMETASYNC, MDB_WRITEMAP, MDB_MAPASYNC — each trades durability for speed.
constexpr unsigned env_flags = MDB_NOTLS;
constexpr mdb_mode_t file_mode = 0600;

}  // namespace

struct ReadPool {
    std::mutex mutex;
    std::vector<MDB_txn*> idle;  // reset read transactions, each holding its reader slot
};

std::string Error::message() const { return fmt::format("{}: {}", operation, mdb_strerror(rc)); }

// ---- Env --------------------------------------------------------------------------------------------

Result<Env> Env::open(const std::string& directory, const EnvOptions& options) {
    MDB_env* raw = nullptr;
    if (int rc = mdb_env_create(&raw); rc != 0) return fail(rc, "mdb_env_create");
    Env env(raw);
    if (int rc = mdb_env_set_mapsize(raw, options.map_size_bytes); rc != 0) return fail(rc, "mdb_env_set_mapsize");
    if (int rc = mdb_env_set_maxdbs(raw, options.tables_max); rc != 0) return fail(rc, "mdb_env_set_maxdbs");
    if (int rc = mdb_env_set_maxreaders(raw, options.readers_max); rc != 0) return fail(rc, "mdb_env_set_maxreaders");
    const unsigned flags_open = env_flags | (options.read_only ? MDB_RDONLY : 0u);
    if (int rc = mdb_env_open(raw, directory.c_str(), flags_open, file_mode); rc != 0) return fail(rc, "mdb_env_open");
    unsigned flags = 0;
    mdb_env_get_flags(raw, &flags);
    COCONUT_ASSERT((flags & (MDB_NOSYNC | MDB_NOMETASYNC | MDB_MAPASYNC)) == 0);
    return env;
}

Env::Env(MDB_env* env) : env_(env), reads_(std::make_unique<ReadPool>()) {}

Env::Env(Env&& other) noexcept : env_(std::exchange(other.env_, nullptr)), reads_(std::move(other.reads_)) {}

Env& Env::operator=(Env&& other) noexcept {
    if (this != &other) {
        close();
        env_ = std::exchange(other.env_, nullptr);
        reads_ = std::move(other.reads_);
    }
    return *this;
}

Env::~Env() { close(); }

// Every transaction must have ended before the environment closes (LMDB's rule); the idle pooled ones
// are released here.
void Env::close() {
    if (reads_) {
        for (MDB_txn* txn : reads_->idle) mdb_txn_abort(txn);
        reads_->idle.clear();
    }
    if (env_ != nullptr) mdb_env_close(std::exchange(env_, nullptr));
}

Result<MDB_dbi> Env::open_table(const char* name) {
    const bool reading = read_only();
    auto txn = Txn::begin(*this, reading ? Txn::Mode::read_only : Txn::Mode::read_write);
    if (!txn) return Unexpected{txn.error()};
    MDB_dbi dbi = 0;
    if (int rc = mdb_dbi_open(txn->get(), name, reading ? 0u : MDB_CREATE, &dbi); rc != 0) return fail(rc, "mdb_dbi_open");
    // Committing (also a read transaction) keeps the handle open for the environment's lifetime.
    if (auto committed = txn->commit(); !committed) return Unexpected{committed.error()};
    return dbi;
}

Result<bool> Env::has_table(const char* name) const {
    auto txn = Txn::begin(*this, Txn::Mode::read_only);
    if (!txn) return Unexpected{txn.error()};
    MDB_dbi dbi = 0;
    const int rc = mdb_dbi_open(txn->get(), name, 0, &dbi);
    if (rc == MDB_NOTFOUND) return false;
    if (rc != 0) return fail(rc, "mdb_dbi_open");
    return true;  // the handle closes with the read transaction: it was not committed
}

bool Env::read_only() const {
    unsigned flags = 0;
    mdb_env_get_flags(env_, &flags);
    return (flags & MDB_RDONLY) != 0;
}

void Env::drop_resident_pages() const {
    unsigned flags = 0;
    mdb_env_get_flags(env_, &flags);
    COCONUT_ASSERT((flags & MDB_WRITEMAP) == 0);  // with a writable map, MADV_DONTNEED could drop unwritten data
    // LMDB does not publish its map address (MDB_envinfo::me_mapaddr is only set with MDB_FIXEDMAP):
    // find the mapping of this environment's data file in /proc/self/maps.
    const char* directory = nullptr;
    if (mdb_env_get_path(env_, &directory) != 0 || directory == nullptr) return;
    std::error_code ec;
    const auto data_file = std::filesystem::canonical(std::filesystem::path(directory) / "data.mdb", ec);
    if (ec) return;
    std::ifstream maps("/proc/self/maps");
    std::string line;
    while (std::getline(maps, line)) {
        const auto path_at = line.find('/');
        if (path_at == std::string::npos || line.compare(path_at, std::string::npos, data_file.string()) != 0) continue;
        std::uintptr_t start = 0;
        std::uintptr_t end = 0;
        if (std::sscanf(line.c_str(), "%" SCNxPTR "-%" SCNxPTR, &start, &end) != 2 || end <= start) continue;
        ::madvise(reinterpret_cast<void*>(start), end - start, MADV_DONTNEED);
    }
}

std::size_t Env::map_size_bytes() const {
    MDB_envinfo info{};
    mdb_env_info(env_, &info);
    return info.me_mapsize;
}

// ---- Txn --------------------------------------------------------------------------------------------

Result<Txn> Txn::begin(const Env& env, Mode mode, Txn* parent) {
    COCONUT_ASSERT(parent == nullptr || mode == Mode::read_write);
    ReadPool* pool = mode == Mode::read_only ? env.read_pool() : nullptr;
    MDB_txn* raw = nullptr;
    if (pool != nullptr) {
        {
            std::lock_guard lock(pool->mutex);
            if (!pool->idle.empty()) {
                raw = pool->idle.back();
                pool->idle.pop_back();
            }
        }
        if (raw != nullptr && mdb_txn_renew(raw) == 0) return Txn(raw, pool);
        if (raw != nullptr) mdb_txn_abort(raw);  // could not renew: begin afresh below
        raw = nullptr;
    }
    const unsigned flags = mode == Mode::read_only ? MDB_RDONLY : 0;
    if (int rc = mdb_txn_begin(env.get(), parent ? parent->get() : nullptr, flags, &raw); rc != 0) {
        return fail(rc, "mdb_txn_begin");
    }
    return Txn(raw, pool);
}

Txn& Txn::operator=(Txn&& other) noexcept {
    if (this != &other) {
        abort();
        txn_ = std::exchange(other.txn_, nullptr);
        pool_ = std::exchange(other.pool_, nullptr);
        context_ = std::exchange(other.context_, nullptr);
    }
    return *this;
}

Status Txn::commit() {
    COCONUT_ASSERT(txn_ != nullptr);
    pool_ = nullptr;
    const int rc = mdb_txn_commit(std::exchange(txn_, nullptr));  // frees the handle even on failure
    if (rc != 0) return fail(rc, "mdb_txn_commit");
    return Ok{};
}

void Txn::abort() {
    if (txn_ == nullptr) return;
    MDB_txn* txn = std::exchange(txn_, nullptr);
    ReadPool* pool = std::exchange(pool_, nullptr);
    if (pool != nullptr) {
        mdb_txn_reset(txn);  // releases the snapshot; the handle and its reader slot stay
        std::lock_guard lock(pool->mutex);
        if (pool->idle.size() < read_pool_idle_max) {
            pool->idle.push_back(txn);
            return;
        }
    }
    mdb_txn_abort(txn);
}

Result<std::optional<ByteView>> Txn::get(MDB_dbi table, ByteView key) const {
    MDB_val k = to_val(key);
    MDB_val v{};
    const int rc = mdb_get(txn_, table, &k, &v);
    if (rc == MDB_NOTFOUND) return std::optional<ByteView>();
    if (rc != 0) return fail(rc, "mdb_get");
    return std::optional<ByteView>(to_view(v));
}

Status Txn::put(MDB_dbi table, ByteView key, ByteView value, unsigned flags) {
    MDB_val k = to_val(key);
    MDB_val v = to_val(value);
    if (int rc = mdb_put(txn_, table, &k, &v, flags); rc != 0) return fail(rc, "mdb_put");
    return Ok{};
}

Result<bool> Txn::del(MDB_dbi table, ByteView key) {
    MDB_val k = to_val(key);
    const int rc = mdb_del(txn_, table, &k, nullptr);
    if (rc == MDB_NOTFOUND) return false;
    if (rc != 0) return fail(rc, "mdb_del");
    return true;
}

// ---- Cursor -----------------------------------------------------------------------------------------

Result<Cursor> Cursor::open(const Txn& txn, MDB_dbi table) {
    MDB_cursor* raw = nullptr;
    if (int rc = mdb_cursor_open(txn.get(), table, &raw); rc != 0) return fail(rc, "mdb_cursor_open");
    return Cursor(raw);
}

Cursor::~Cursor() {
    if (cursor_ != nullptr) mdb_cursor_close(cursor_);
}

Result<std::optional<Cursor::Entry>> Cursor::move(MDB_cursor_op op, ByteView key) {
    MDB_val k = to_val(key);
    MDB_val v{};
    const int rc = mdb_cursor_get(cursor_, &k, &v, op);
    if (rc == MDB_NOTFOUND) return std::optional<Entry>();
    if (rc != 0) return fail(rc, "mdb_cursor_get");
    return std::optional<Entry>(Entry{to_view(k), to_view(v)});
}

Result<std::optional<Cursor::Entry>> Cursor::seek(ByteView key) { return move(MDB_SET_RANGE, key); }
Result<std::optional<Cursor::Entry>> Cursor::first() { return move(MDB_FIRST); }
Result<std::optional<Cursor::Entry>> Cursor::last() { return move(MDB_LAST); }
Result<std::optional<Cursor::Entry>> Cursor::next() { return move(MDB_NEXT); }
Result<std::optional<Cursor::Entry>> Cursor::prev() { return move(MDB_PREV); }

}  // namespace coconut::lmdb
