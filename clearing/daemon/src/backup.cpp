// coconut-clearingd backup / restore (backup.hpp): the files, their digests, staging and renaming.
#include <coconut/clearing/backup.hpp>

#include <coconut/clearing/daemon.hpp>
#include <coconut/core/durable_file.hpp>
#include <coconut/core/sha256.hpp>
#include <coconut/ledger/ledger.hpp>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <fstream>
#include <iterator>
#include <map>
#include <optional>

namespace coconut::clearing {

namespace {

using nlohmann::json;
namespace fs = std::filesystem;

// The files a backup may hold, by their name in it (a manifest naming another is refused).
constexpr std::string_view ledger_file = "data.mdb";
constexpr std::string_view hsm_sealed_file = "keys.sealed";
constexpr std::string_view hsm_audit_file = "audit.log";

Unexpected<Error> refuse(ErrorCode code, std::string what) { return Unexpected{Error{code, std::move(what)}}; }

struct FileEntry {
    std::uint64_t bytes = 0;
    std::string sha256;  // lower-case hex
    friend bool operator==(const FileEntry&, const FileEntry&) = default;
};

// Closes a descriptor on every path out.
struct Fd {
    int fd = -1;
    ~Fd() {
        if (fd >= 0) ::close(fd);
    }
};

// Reads `from` whole, hashing it; with `to`, writes the bytes there too (a new file, 0600, fsynced).
// Without `to`, `from` itself is fsynced (a file this process just wrote).
Result<FileEntry> copy_hashed(const fs::path& from, const std::optional<fs::path>& to) {
    Fd in{::open(from.c_str(), O_RDONLY | O_CLOEXEC)};
    if (in.fd < 0) return refuse(ErrorCode::storage, fmt::format("cannot open {}: {}", from.string(), std::strerror(errno)));
    Fd out;
    if (to) {
        out.fd = ::open(to->c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (out.fd < 0) return refuse(ErrorCode::storage, fmt::format("cannot create {}: {}", to->string(), std::strerror(errno)));
    }
    Sha256 digest;
    FileEntry entry;
    std::array<std::uint8_t, 1 << 16> chunk{};
    for (;;) {
        const ssize_t n = ::read(in.fd, chunk.data(), chunk.size());
        if (n < 0) return refuse(ErrorCode::storage, fmt::format("reading {}: {}", from.string(), std::strerror(errno)));
        if (n == 0) break;
        const auto size = static_cast<std::size_t>(n);
        digest.update(ByteView(chunk.data(), size));
        entry.bytes += size;
        if (to && ::write(out.fd, chunk.data(), size) != n)
            return refuse(ErrorCode::storage, fmt::format("writing {}: {}", to->string(), std::strerror(errno)));
    }
    if (::fsync(to ? out.fd : in.fd) != 0)
        return refuse(ErrorCode::storage, fmt::format("fsync {}: {}", (to ? *to : from).string(), std::strerror(errno)));
    const Sha256Digest sum = digest.finish();
    entry.sha256 = to_hex(ByteView(sum.data(), sum.size()));
    for (auto& c : entry.sha256) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return entry;
}

// `path` is missing or an empty directory.
bool fresh(const fs::path& path) {
    std::error_code ec;
    if (!fs::exists(path, ec)) return true;
    return fs::is_directory(path, ec) && fs::is_empty(path, ec);
}

// A directory next to `target` for building it: .NAME.WHAT-PID (removed again unless kept).
struct Staging {
    fs::path path;
    bool keep = false;
    ~Staging() {
        std::error_code ignored;
        if (!keep) fs::remove_all(path, ignored);
    }
};

Result<fs::path> make_staging(const fs::path& target, std::string_view what, Staging& staging) {
    const auto absolute = fs::absolute(target).lexically_normal();
    const auto name = absolute.filename().empty() ? absolute.parent_path().filename() : absolute.filename();
    const auto parent = absolute.filename().empty() ? absolute.parent_path().parent_path() : absolute.parent_path();
    staging.path = parent / fmt::format(".{}.{}-{}", name.string(), what, ::getpid());
    std::error_code ec;
    fs::remove_all(staging.path, ec);
    if (!fs::create_directories(staging.path, ec))
        return refuse(ErrorCode::storage, fmt::format("cannot create {}: {}", staging.path.string(), ec.message()));
    fs::permissions(staging.path, fs::perms::owner_all, ec);
    return staging.path;
}

// staging → target (missing or an empty directory, removed first), durably.
Status rename_into_place(Staging& staging, const fs::path& target) {
    std::error_code ec;
    if (fs::exists(target, ec)) fs::remove(target, ec);  // empty (fresh() said so)
    fs::rename(staging.path, target, ec);
    if (ec)
        return refuse(ErrorCode::storage, fmt::format("cannot rename {} to {}: {}", staging.path.string(), target.string(), ec.message()));
    staging.keep = true;
    if (auto synced = fsync_parent_directory(fs::absolute(target)); !synced) return refuse(ErrorCode::storage, synced.error().message());
    return Ok{};
}

std::string utc_now() {
    const std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
    std::tm tm{};
    ::gmtime_r(&now, &tm);
    std::array<char, 32> text{};
    const std::size_t n = std::strftime(text.data(), text.size(), "%Y-%m-%dT%H:%M:%SZ", &tm);
    return std::string(text.data(), n);
}

// ---- backup --------------------------------------------------------------------------------------------

using FileList = std::map<std::string, FileEntry>;  // name in the backup → size and digest

// The HSM store's files into staging/hsm: keys.sealed whole (replaced by rename: one generation),
// the audit log up to its last complete line (the daemon may be appending). Never master.key.
Status copy_hsm_store(const fs::path& store, const fs::path& staging, FileList& files) {
    const fs::path into = staging / backup_hsm_directory;
    std::error_code ec;
    if (!fs::create_directory(into, ec))
        return refuse(ErrorCode::storage, fmt::format("cannot create {}: {}", into.string(), ec.message()));
    fs::permissions(into, fs::perms::owner_all, ec);
    COCONUT_TRY(sealed, copy_hashed(store / hsm_sealed_file, into / hsm_sealed_file));
    files[fmt::format("{}/{}", backup_hsm_directory, hsm_sealed_file)] = sealed;
    if (!fs::exists(store / hsm_audit_file, ec)) return Ok{};
    std::ifstream in(store / hsm_audit_file, std::ios::binary);
    std::string log((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (in.bad()) return refuse(ErrorCode::storage, "cannot read " + (store / hsm_audit_file).string());
    log.resize(log.rfind('\n') == std::string::npos ? 0 : log.rfind('\n') + 1);
    if (auto written = write_file_atomically(into / hsm_audit_file, text_bytes(log)); !written)
        return refuse(ErrorCode::storage, written.error().message());
    COCONUT_TRY(audit, copy_hashed(into / hsm_audit_file, std::nullopt));
    files[fmt::format("{}/{}", backup_hsm_directory, hsm_audit_file)] = audit;
    return Ok{};
}

std::string backup_json(const BackupOptions& o, const SnapshotManifest& m, const FileList& files) {
    json listed = json::object();
    for (const auto& [name, entry] : files) listed[name] = {{"bytes", entry.bytes}, {"sha256", entry.sha256}};
    return json{{"format", backup_format},
                {"created", utc_now()},
                {"source", fs::absolute(o.data).lexically_normal().string()},
                {"hsm_store", o.hsm_store.empty() ? json(nullptr) : json(fs::absolute(o.hsm_store).lexically_normal().string())},
                {"compacted", o.compact},
                {"journal_sequence", m.journal_sequence},
                {"journal_hash", m.journal_hash},
                {"position", m.position},
                {"files", listed}}
               .dump(2) +
           "\n";
}

Status backup_usable(const BackupOptions& o) {
    std::error_code ec;
    if (!fs::is_regular_file(o.data / ledger_file, ec))
        return refuse(ErrorCode::bad_input, fmt::format("{} holds no ledger ({} missing): is it a coconut-clearingd data directory?",
                                                        o.data.string(), ledger_file));
    if (!fresh(o.to))
        return refuse(ErrorCode::conflict, fmt::format("{} is not empty: a backup goes into a new (or empty) directory", o.to.string()));
    if (!o.hsm_store.empty() && !fs::is_regular_file(o.hsm_store / hsm_sealed_file, ec))
        return refuse(ErrorCode::bad_input, fmt::format("{} holds no HSM store ({} missing)", o.hsm_store.string(), hsm_sealed_file));
    return Ok{};
}

}  // namespace

Result<BackupReport> take_backup(const BackupOptions& o) {
    if (auto usable = backup_usable(o); !usable) return Unexpected{usable.error()};
    Staging staging;
    COCONUT_TRY(directory, make_staging(o.to, "backup", staging));
    ledger::Options options;
    options.directory = o.data.string();
    options.read_only = true;  // another process (the daemon) may be writing
    auto opened = ledger::Ledger::open(options);
    if (!opened)
        return refuse(ErrorCode::storage, fmt::format("cannot open the ledger in {}: {}", o.data.string(), opened.error().message));
    COCONUT_TRY(manifest, copy_data_directory((*opened)->env(), o.data, directory, o.compact));
    opened->reset();
    FileList files;
    COCONUT_TRY(ledger_entry, copy_hashed(directory / ledger_file, std::nullopt));
    files[std::string(ledger_file)] = ledger_entry;
    for (const auto& [name, contents] : manifest.files) {
        if (auto written = write_file_atomically(directory / name, contents); !written)
            return refuse(ErrorCode::storage, written.error().message());
        files[name] =
            FileEntry{contents.size(), sha256_hex(std::string_view(reinterpret_cast<const char*>(contents.data()), contents.size()))};
    }
    if (!o.hsm_store.empty())
        if (auto copied = copy_hsm_store(o.hsm_store, directory, files); !copied) return Unexpected{copied.error()};
    if (auto written = write_file_atomically(directory / backup_manifest_file, text_bytes(backup_json(o, manifest, files))); !written)
        return refuse(ErrorCode::storage, written.error().message());
    if (auto placed = rename_into_place(staging, o.to); !placed) return Unexpected{placed.error()};
    BackupReport report{std::move(manifest), 0, 0};
    for (const auto& [name, entry] : files) {
        ++report.files;
        report.bytes += entry.bytes;
    }
    return report;
}

// ---- restore -------------------------------------------------------------------------------------------

namespace {

struct ReadBackup {
    SnapshotManifest manifest;  // head and position; files: none (the data directory's are in `files`)
    FileList files;
};

Unexpected<Error> not_a_backup(const fs::path& from, const std::string& what) {
    return refuse(ErrorCode::bad_input, fmt::format("{}/{}: {}", from.string(), backup_manifest_file, what));
}

bool known_file(const std::string& name) {
    return name == ledger_file || name == snapshot_token_key_file || name == fmt::format("{}/{}", backup_hsm_directory, hsm_sealed_file) ||
           name == fmt::format("{}/{}", backup_hsm_directory, hsm_audit_file);
}

Result<ReadBackup> read_backup(const fs::path& from) {
    std::error_code ec;
    if (!fs::is_directory(from, ec))
        return refuse(ErrorCode::bad_input, fmt::format("{} does not exist (or is not a directory)", from.string()));
    std::ifstream in(from / backup_manifest_file);
    if (!in)
        return refuse(ErrorCode::bad_input,
                      fmt::format("{} is not a coconut-clearingd backup (no {})", from.string(), backup_manifest_file));
    const json j = json::parse(in, nullptr, false);
    if (!j.is_object()) return not_a_backup(from, "not a JSON object");
    ReadBackup b;
    try {
        if (j.at("format").get<std::uint32_t>() != backup_format)
            return not_a_backup(from, fmt::format("format {} (this build reads {})", j.at("format").dump(), backup_format));
        b.manifest.journal_sequence = j.at("journal_sequence").get<std::uint64_t>();
        b.manifest.journal_hash = j.at("journal_hash").get<std::string>();
        b.manifest.position = j.at("position").get<std::uint64_t>();
        for (const auto& [name, entry] : j.at("files").items()) {
            if (!known_file(name)) return not_a_backup(from, "names an unknown file " + name);
            b.files[name] = FileEntry{entry.at("bytes").get<std::uint64_t>(), entry.at("sha256").get<std::string>()};
        }
    } catch (const json::exception& e) {
        return not_a_backup(from, e.what());
    }
    if (!b.files.contains(std::string(ledger_file))) return not_a_backup(from, "lists no data.mdb");
    return b;
}

// Copies the backup's `name` to `to`, refusing it when it differs from backup.json.
Status restore_file(const fs::path& from, const std::string& name, const FileEntry& expected, const fs::path& to) {
    std::error_code ec;
    if (!fs::is_regular_file(from / name, ec))
        return refuse(ErrorCode::storage, fmt::format("the backup {} is damaged: {} is missing", from.string(), name));
    COCONUT_TRY(copied, copy_hashed(from / name, to));
    if (copied != expected)
        return refuse(ErrorCode::storage,
                      fmt::format("the backup {} is damaged: {} has {} bytes, SHA-256 {}; backup.json says {} bytes, {}", from.string(),
                                  name, copied.bytes, copied.sha256, expected.bytes, expected.sha256));
    return Ok{};
}

// The targets may be taken: `data` missing or empty (or, with force, a directory no daemon serves: its
// lock is held until the restore ends); the HSM store's target missing or empty.
Result<std::optional<DirectoryLock>> restore_usable(const RestoreOptions& o, const ReadBackup& b) {
    if (!o.hsm_store.empty()) {
        if (!b.files.contains(fmt::format("{}/{}", backup_hsm_directory, hsm_sealed_file)))
            return refuse(ErrorCode::bad_input, fmt::format("{} holds no HSM store (it was taken without --hsm-store)", o.from.string()));
        if (!fresh(o.hsm_store))
            return refuse(ErrorCode::conflict, fmt::format("{} is not empty: an HSM store is restored into a new (or empty) directory only",
                                                           o.hsm_store.string()));
    }
    std::error_code ec;
    if (fresh(o.data)) return std::optional<DirectoryLock>{};
    if (!fs::is_directory(o.data, ec)) return refuse(ErrorCode::conflict, o.data.string() + " is not a directory");
    if (!o.force)
        return refuse(ErrorCode::conflict, fmt::format("{} is not empty: restore creates a whole data directory; give --force to replace "
                                                       "this one (its ledger is lost), or a new directory",
                                                       o.data.string()));
    auto lock = lock_data_directory(o.data);  // a served directory is never replaced
    if (!lock) return refuse(ErrorCode::locked, lock.error().message);
    return std::optional<DirectoryLock>{std::move(lock).value()};
}

// The backup's HSM files, verified, into a staging directory next to `hsm_store`.
Status stage_hsm_store(const RestoreOptions& o, const ReadBackup& b, Staging& staging) {
    COCONUT_TRY(directory, make_staging(o.hsm_store, "restore", staging));
    for (const auto& [name, entry] : b.files) {
        const fs::path relative(name);
        if (relative.parent_path() != backup_hsm_directory) continue;
        if (auto restored = restore_file(o.from, name, entry, directory / relative.filename()); !restored) return restored;
    }
    return Ok{};
}

}  // namespace

Result<JoinReport> restore_backup(const RestoreOptions& o) {
    COCONUT_TRY(backup, read_backup(o.from));
    COCONUT_TRY(lock, restore_usable(o, backup));
    Staging data_staging;
    COCONUT_TRY(directory, make_staging(o.data, "restore", data_staging));
    for (const auto& [name, entry] : backup.files) {
        if (fs::path(name).has_parent_path()) continue;  // the HSM store's
        if (auto restored = restore_file(o.from, name, entry, directory / name); !restored) return Unexpected{restored.error()};
    }
    COCONUT_TRY(report, verify_copy(directory, backup.manifest));
    Staging hsm_staging;
    if (!o.hsm_store.empty())
        if (auto staged = stage_hsm_store(o, backup, hsm_staging); !staged) return Unexpected{staged.error()};
    if (auto installed = install_data_directory(directory, o.data); !installed) return Unexpected{installed.error()};
    data_staging.keep = true;  // renamed
    if (auto synced = fsync_parent_directory(fs::absolute(o.data)); !synced) return refuse(ErrorCode::storage, synced.error().message());
    if (!o.hsm_store.empty())
        if (auto placed = rename_into_place(hsm_staging, o.hsm_store); !placed) return Unexpected{placed.error()};
    return report;
}

}  // namespace coconut::clearing
