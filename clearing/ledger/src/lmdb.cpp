#include <coconut/ledger/lmdb.hpp>

#include <coconut/core/assert.hpp>

#include <fmt/format.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cinttypes>
#include <cstring>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace coconut::lmdb {
namespace {

Unexpected<Error> fail(int rc, const char* operation) { return Unexpected{Error{rc, operation}}; }

// The commit hook's (or its AfterCommit step's) refusal as commit() reports it.
Error refused(const Error& why) {
    return Error{commit_refused_rc, "mdb_txn_commit", why.rc == commit_refused_rc ? why.detail : why.message()};
}

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

struct Capture {
    CommitHook hook;                                   // empty: capture off
    AfterCommit after;                                 // what the hook left for after the commit in progress
    std::mutex names_mutex;                            // open_table may run on any thread at start-up
    std::vector<std::string> names;                    // table name by handle (MDB_dbi is a small index)
    std::unordered_map<std::string, MDB_dbi> by_name;  // the reverse, for applying change sets

    void remember(MDB_dbi dbi, const std::string& name) {
        std::lock_guard lock(names_mutex);
        if (names.size() <= dbi) names.resize(dbi + 1);
        names[dbi] = name;
        by_name[name] = dbi;
    }
    // Appends the length-prefixed name of `dbi` to `out` (a change record's table field), without a copy
    // of the name: this runs for every put and delete of a captured commit.
    void append_name(MDB_dbi dbi, Bytes& out) {
        std::lock_guard lock(names_mutex);
        COCONUT_ASSERT(dbi < names.size() && !names[dbi].empty() && names[dbi].size() <= 0xFF, "a captured change names its table");
        const std::string& name = names[dbi];
        out.push_back(static_cast<std::uint8_t>(name.size()));
        out.insert(out.end(), name.begin(), name.end());
    }
};

std::string Error::message() const {
    if (rc == commit_refused_rc) return fmt::format("{}: refused by the commit hook: {}", operation, detail);
    if (rc == change_mismatch_rc) return fmt::format("{}: the change set does not apply to this copy: {}", operation, detail);
    if (!detail.empty()) return fmt::format("{}: {}", operation, detail);
    return fmt::format("{}: {}", operation, mdb_strerror(rc));
}

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

Env::Env(MDB_env* env) : env_(env), reads_(std::make_unique<ReadPool>()), capture_(std::make_unique<Capture>()) {}

Env::Env(Env&& other) noexcept
    : env_(std::exchange(other.env_, nullptr)), reads_(std::move(other.reads_)), capture_(std::move(other.capture_)) {}

Env& Env::operator=(Env&& other) noexcept {
    if (this != &other) {
        close();
        env_ = std::exchange(other.env_, nullptr);
        reads_ = std::move(other.reads_);
        capture_ = std::move(other.capture_);
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
    capture_->remember(dbi, name);
    return dbi;
}

void Env::set_commit_hook(CommitHook hook) { capture_->hook = std::move(hook); }

Result<MDB_dbi> Env::table_in(Txn& txn, const std::string& name) {
    {
        std::lock_guard lock(capture_->names_mutex);
        if (auto found = capture_->by_name.find(name); found != capture_->by_name.end()) return found->second;
    }
    MDB_dbi dbi = 0;
    if (int rc = mdb_dbi_open(txn.get(), name.c_str(), MDB_CREATE, &dbi); rc != 0) return fail(rc, "mdb_dbi_open");
    capture_->remember(dbi, name);  // the handle stays open once `txn` commits (aborted: reopened next time)
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
    Txn txn(raw, pool);
    Capture* capture = env.capture();
    const bool capturing = mode == Mode::read_write && capture != nullptr && (parent ? parent->changes_ != nullptr : bool(capture->hook));
    if (capturing) {
        txn.capture_ = capture;
        txn.parent_ = parent;
        txn.changes_ = std::make_unique<Bytes>();
    }
    return txn;
}

Txn& Txn::operator=(Txn&& other) noexcept {
    if (this != &other) {
        abort();
        txn_ = std::exchange(other.txn_, nullptr);
        pool_ = std::exchange(other.pool_, nullptr);
        context_ = std::exchange(other.context_, nullptr);
        capture_ = std::exchange(other.capture_, nullptr);
        parent_ = std::exchange(other.parent_, nullptr);
        changes_ = std::move(other.changes_);
    }
    return *this;
}

Status Txn::commit() {
    COCONUT_ASSERT(txn_ != nullptr);
    pool_ = nullptr;
    if (changes_ != nullptr && !changes_->empty()) {           // a commit that changed nothing has nothing to replicate
        std::unique_ptr<Bytes> changes = std::move(changes_);  // what the hook writes is not in the set
        if (parent_ != nullptr) {
            COCONUT_ASSERT(parent_->changes_ != nullptr, "a capturing nested transaction has a capturing parent");
            parent_->changes_->insert(parent_->changes_->end(), changes->begin(), changes->end());
        } else if (auto accepted = capture_->hook(*this, *changes); !accepted) {
            capture_->after = nullptr;
            abort();
            return Unexpected{refused(accepted.error())};
        }
    }
    const int rc = mdb_txn_commit(std::exchange(txn_, nullptr));  // frees the handle even on failure
    if (capture_ != nullptr && capture_->after) {
        const AfterCommit after = std::exchange(capture_->after, nullptr);
        if (auto done = after(rc == 0); !done && rc == 0) return Unexpected{refused(done.error())};
    }
    if (rc != 0) return fail(rc, "mdb_txn_commit");
    return Ok{};
}

void Txn::after_commit(AfterCommit step) {
    COCONUT_ASSERT(capture_ != nullptr && parent_ == nullptr, "after_commit is for a captured top-level commit's hook");
    capture_->after = std::move(step);
}

void Txn::abort() {
    changes_.reset();
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
    if (changes_ != nullptr) record(Change::Op::put, table, key, value);
    return Ok{};
}

Result<bool> Txn::del(MDB_dbi table, ByteView key) {
    MDB_val k = to_val(key);
    const int rc = mdb_del(txn_, table, &k, nullptr);
    if (rc == MDB_NOTFOUND) return false;
    if (rc != 0) return fail(rc, "mdb_del");
    if (changes_ != nullptr) record(Change::Op::del, table, key, {});
    return true;
}

void Txn::record(Change::Op op, MDB_dbi table, ByteView key, ByteView value) {
    COCONUT_ASSERT(key.size() <= 0xFFFF && value.size() <= 0xFFFFFFFFu);
    Bytes& out = *changes_;
    out.push_back(static_cast<std::uint8_t>(op));
    capture_->append_name(table, out);
    out.push_back(static_cast<std::uint8_t>(key.size() >> 8));
    out.push_back(static_cast<std::uint8_t>(key.size()));
    out.insert(out.end(), key.begin(), key.end());
    if (op != Change::Op::put) return;
    for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<std::uint8_t>(value.size() >> shift));
    out.insert(out.end(), value.begin(), value.end());
}

// ---- change sets ------------------------------------------------------------------------------------

bool for_each_change(ByteView changes, const std::function<void(const Change&)>& visit) {
    std::size_t at = 0;
    auto take = [&](std::size_t n) -> std::optional<ByteView> {
        if (changes.size() - at < n) return std::nullopt;
        const ByteView part = changes.subspan(at, n);
        at += n;
        return part;
    };
    auto number = [&](std::size_t bytes) -> std::optional<std::size_t> {
        auto raw = take(bytes);
        if (!raw) return std::nullopt;
        std::size_t value = 0;
        for (const std::uint8_t b : *raw) value = value << 8 | b;
        return value;
    };
    while (at < changes.size()) {
        Change change;
        const auto op = number(1);
        if (!op || (*op != 1 && *op != 2)) return false;
        change.op = static_cast<Change::Op>(*op);
        const auto name_size = number(1);
        const auto name = name_size ? take(*name_size) : std::nullopt;
        const auto key_size = name && !name->empty() ? number(2) : std::nullopt;
        const auto key = key_size ? take(*key_size) : std::nullopt;
        if (!key) return false;
        change.table = std::string_view(reinterpret_cast<const char*>(name->data()), name->size());
        change.key = *key;
        if (change.op == Change::Op::put) {
            const auto value_size = number(4);
            const auto value = value_size ? take(*value_size) : std::nullopt;
            if (!value) return false;
            change.value = *value;
        }
        visit(change);
    }
    return true;
}

coconut::Status<Error> apply_changes(Env& env, Txn& txn, ByteView changes) {
    std::optional<Error> failed;
    const bool decoded = for_each_change(changes, [&](const Change& change) {
        if (failed) return;
        auto table = env.table_in(txn, std::string(change.table));
        if (!table) {
            failed = table.error();
            return;
        }
        if (change.op == Change::Op::put) {
            if (auto put = txn.put(*table, change.key, change.value); !put) failed = put.error();
            return;
        }
        auto deleted = txn.del(*table, change.key);
        if (!deleted) failed = deleted.error();
        else if (!*deleted)
            failed = Error{change_mismatch_rc, "mdb_del", fmt::format("table {} holds no such key to delete", change.table)};
    });
    if (failed) return Unexpected{*failed};
    if (!decoded) return Unexpected{Error{change_mismatch_rc, "apply_changes", "the change set does not decode"}};
    return Ok{};
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

// ---- rolling back one commit ----------------------------------------------------------------------

namespace coconut::lmdb {
namespace {

// LMDB 0.9's data file begins with two meta pages (page 0 at offset 0, page 1 at the page size), each a
// 16-byte page header then MDB_meta: magic (u32) ‖ version (u32) ‖ address (8) ‖ map size (8) ‖ two
// MDB_db of 48 bytes ‖ last page (8) ‖ txnid (8) — 136 bytes. The first MDB_db's pad holds the page size.
constexpr std::size_t meta_at = 16, meta_bytes = 136, page_size_at = meta_at + 24, txnid_at = meta_at + 128;
constexpr std::uint32_t meta_magic = 0xBEEFC0DE, meta_version = 1;
constexpr std::uint16_t page_flag_meta = 0x08;

template <typename T>
T read_native(const std::vector<std::uint8_t>& page, std::size_t at) {
    T value{};
    std::memcpy(&value, page.data() + at, sizeof value);
    return value;
}

Status refuse_rollback(int rc, const std::string& why) { return Unexpected{Error{rc, "rollback_last_commit", why}}; }

// Whether another process has the environment open: LMDB holds a shared fcntl lock on the lock file's
// first byte in every process that opened it.
bool lock_file_in_use(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) return false;  // no lock file: nobody has it open
    struct flock probe {};
    probe.l_type = F_WRLCK;
    probe.l_whence = SEEK_SET;
    probe.l_start = 0;
    probe.l_len = 1;
    const bool busy = ::fcntl(fd, F_GETLK, &probe) == 0 && probe.l_type != F_UNLCK;
    ::close(fd);
    return busy;
}

}  // namespace

Status rollback_last_commit(const std::string& directory) {
    const std::string data = directory + "/data.mdb";
    if (lock_file_in_use(directory + "/lock.mdb")) return refuse_rollback(EBUSY, "another process has " + directory + " open");
    const int fd = ::open(data.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) return refuse_rollback(errno, fmt::format("open {}: {}", data, std::strerror(errno)));
    struct Closer {
        int fd;
        ~Closer() { ::close(fd); }
    } closer{fd};
    std::vector<std::uint8_t> first(meta_at + meta_bytes);
    if (::pread(fd, first.data(), first.size(), 0) != static_cast<ssize_t>(first.size()))
        return refuse_rollback(EINVAL, data + " is too short for an LMDB environment");
    const auto page_size = read_native<std::uint32_t>(first, page_size_at);
    if (page_size < 512 || page_size > 65536) return refuse_rollback(EINVAL, data + ": no LMDB page size in its first meta page");
    std::array<std::vector<std::uint8_t>, 2> pages{first, std::vector<std::uint8_t>(first.size())};
    if (::pread(fd, pages[1].data(), pages[1].size(), page_size) != static_cast<ssize_t>(pages[1].size()))
        return refuse_rollback(EINVAL, data + " is too short for two meta pages");
    for (const auto& page : pages) {
        if (read_native<std::uint32_t>(page, meta_at) != meta_magic || read_native<std::uint32_t>(page, meta_at + 4) != meta_version ||
            (read_native<std::uint16_t>(page, 10) & page_flag_meta) == 0)
            return refuse_rollback(EINVAL, data + " is not an LMDB 0.9 environment (meta page magic, version or flags)");
    }
    const auto txn0 = read_native<std::uint64_t>(pages[0], txnid_at), txn1 = read_native<std::uint64_t>(pages[1], txnid_at);
    if (txn0 == txn1) return refuse_rollback(EINVAL, fmt::format("{}: both meta pages are commit {}: nothing to roll back", data, txn0));
    const std::size_t newer = txn1 > txn0 ? 1 : 0;
    const std::vector<std::uint8_t>& older = pages[1 - newer];
    const auto offset = static_cast<off_t>(newer * page_size + meta_at);
    if (::pwrite(fd, older.data() + meta_at, meta_bytes, offset) != static_cast<ssize_t>(meta_bytes) || ::fdatasync(fd) != 0)
        return refuse_rollback(errno, fmt::format("write {}: {}", data, std::strerror(errno)));
    return Ok{};
}

}  // namespace coconut::lmdb
