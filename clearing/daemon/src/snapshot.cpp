// The server side of a data directory's snapshot (snapshot.hpp): the manifest and take_snapshot.
#include <coconut/clearing/snapshot.hpp>

#include <coconut/ledger/ledger.hpp>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>

namespace coconut::clearing {

namespace {

using nlohmann::json;

Unexpected<Error> storage(const std::string& what) { return Unexpected{Error{ErrorCode::storage, what}}; }
Unexpected<Error> bad_manifest(const std::string& what) { return Unexpected{Error{ErrorCode::bad_input, "snapshot manifest: " + what}}; }

// The small files of the data directory every node needs alike (absent ones are left out).
Result<std::vector<std::pair<std::string, Bytes>>> shared_files(const std::filesystem::path& data_directory) {
    std::vector<std::pair<std::string, Bytes>> files;
    const auto path = data_directory / snapshot_token_key_file;
    if (!std::filesystem::exists(path)) return files;
    std::ifstream in(path, std::ios::binary);
    Bytes contents((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (!in.eof() && in.fail()) return storage("cannot read " + path.string());
    files.emplace_back(std::string(snapshot_token_key_file), std::move(contents));
    return files;
}

// The head and position the copy in `directory` holds (opened read-only, closed again).
Status read_copy(const std::filesystem::path& directory, SnapshotManifest& manifest) {
    ledger::Options options;
    options.directory = directory.string();
    options.read_only = true;
    auto copy = ledger::Ledger::open(options);
    if (!copy) return storage("the copy does not open: " + copy.error().message);
    auto position = (*copy)->replicated_position();
    if (!position) return storage("the copy's stream position: " + position.error().message);
    const ledger::JournalHead head = (*copy)->head();
    manifest.position = *position;
    manifest.journal_sequence = head.sequence;
    manifest.journal_hash = to_hex(ByteView(head.hash.data(), head.hash.size()));
    return Ok{};
}

}  // namespace

std::string manifest_json(const SnapshotManifest& m) {
    json files = json::object();
    for (const auto& [name, contents] : m.files) files[name] = to_hex(contents);
    return json{
        {"format", m.format},         {"position", m.position}, {"journal_sequence", m.journal_sequence}, {"journal_hash", m.journal_hash},
        {"lmdb_bytes", m.lmdb_bytes}, {"files", files}}
        .dump();
}

Result<SnapshotManifest> parse_manifest(std::string_view line) {
    const json j = json::parse(line, nullptr, false);
    if (!j.is_object()) return bad_manifest("not a JSON object (is the server a coconut-clearingd?)");
    SnapshotManifest m;
    try {
        m.format = j.at("format").get<std::uint32_t>();
        if (m.format != snapshot_format) return bad_manifest(fmt::format("format {} (this build reads {})", m.format, snapshot_format));
        m.position = j.at("position").get<std::uint64_t>();
        m.journal_sequence = j.at("journal_sequence").get<std::uint64_t>();
        m.journal_hash = j.at("journal_hash").get<std::string>();
        m.lmdb_bytes = j.at("lmdb_bytes").get<std::uint64_t>();
        for (const auto& [name, hex] : j.at("files").items()) {
            // Only the files snapshot.hpp names: a manifest never writes elsewhere in the directory.
            if (name != snapshot_token_key_file) return bad_manifest("unknown file " + name);
            auto contents = from_hex(hex.get<std::string>());
            if (!contents) return bad_manifest("file " + name + " is not hex");
            m.files.emplace_back(name, std::move(*contents));
        }
    } catch (const json::exception& e) {
        return bad_manifest(e.what());
    }
    if (m.lmdb_bytes == 0) return bad_manifest("no ledger bytes");
    return m;
}

Snapshot::~Snapshot() {
    if (fd_ >= 0) ::close(fd_);
}

Result<SnapshotManifest> copy_data_directory(lmdb::Env& env, const std::filesystem::path& data_directory, const std::filesystem::path& into,
                                             bool compact) {
    if (const int rc = mdb_env_copy2(env.get(), into.c_str(), compact ? MDB_CP_COMPACT : 0); rc != 0)
        return storage(fmt::format("copying the ledger (mdb_env_copy2): {}", mdb_strerror(rc)));
    SnapshotManifest manifest;
    if (auto read = read_copy(into, manifest); !read) return Unexpected{read.error()};
    COCONUT_TRY(files, shared_files(data_directory));
    manifest.files = std::move(files);
    std::error_code ec;
    const auto bytes = std::filesystem::file_size(into / "data.mdb", ec);
    if (ec) return storage(fmt::format("the size of {}: {}", (into / "data.mdb").string(), ec.message()));
    manifest.lmdb_bytes = bytes;
    return manifest;
}

Result<Snapshot> take_snapshot(lmdb::Env& env, const std::filesystem::path& data_directory) {
    static std::atomic<std::uint64_t> taken{0};
    const auto directory = data_directory / fmt::format(".snapshot-{}-{}", ::getpid(), taken.fetch_add(1));
    std::error_code ec;
    // What a crash left: the directory's one daemon takes one snapshot at a time, so none is in use.
    for (const auto& entry : std::filesystem::directory_iterator(data_directory, ec))
        if (entry.path().filename().string().starts_with(".snapshot-")) std::filesystem::remove_all(entry.path(), ec);
    if (!std::filesystem::create_directory(directory, ec))
        return storage(fmt::format("cannot create {}: {}", directory.string(), ec.message()));
    struct Cleanup {
        std::filesystem::path path;
        ~Cleanup() {
            std::error_code ignored;
            std::filesystem::remove_all(path, ignored);
        }
    } cleanup{directory};
    COCONUT_TRY(manifest, copy_data_directory(env, data_directory, directory, true));
    const auto copied = directory / "data.mdb";
    const int fd = ::open(copied.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return storage(fmt::format("cannot open {}: {}", copied.string(), std::strerror(errno)));
    // The size read from the descriptor: the one the bytes sent are read from.
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
        const int error = errno;
        ::close(fd);
        return storage(fmt::format("fstat {}: {}", copied.string(), std::strerror(error)));
    }
    manifest.lmdb_bytes = static_cast<std::uint64_t>(st.st_size);
    return Snapshot(std::move(manifest), fd);  // the directory goes with `cleanup`, the file with the descriptor
}

}  // namespace coconut::clearing
