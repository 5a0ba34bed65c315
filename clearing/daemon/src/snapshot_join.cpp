// coconut-clearingd join (snapshot.hpp): download a peer's snapshot, verify it, install it atomically.
#include <utility>  // before Boost.Asio (Boost 1.74 + C++20)

#include <coconut/clearing/check.hpp>
#include <coconut/clearing/daemon.hpp>
#include <coconut/clearing/snapshot.hpp>
#include <coconut/core/endpoint.hpp>
#include <coconut/tls/tls.hpp>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>

namespace coconut::clearing {

namespace {

namespace beast = boost::beast;
namespace bhttp = beast::http;
using tcp = boost::asio::ip::tcp;

constexpr std::string_view snapshot_target = "/v1/clerk/cluster/snapshot";
constexpr std::size_t manifest_bytes_max = 64 * 1024;
constexpr std::size_t error_body_max = 64 * 1024;

Unexpected<Error> fail(ErrorCode code, std::string what) { return Unexpected{Error{code, std::move(what)}}; }

// Where the downloaded bytes go: the manifest line, then data.mdb in the staging directory.
struct Sink {
    std::filesystem::path staging;
    unsigned status = 0;
    std::string head;  // the manifest line (or a refusal's body)
    bool manifest_done = false;
    int fd = -1;
    std::uint64_t lmdb_written = 0;

    ~Sink() {
        if (fd >= 0) ::close(fd);
    }

    Status take(const char* data, std::size_t size) {
        while (size > 0 && !manifest_done) {
            const char c = *data++;
            --size;
            if (status == 200 && c == '\n') {
                manifest_done = true;
                const auto path = staging / "data.mdb";
                fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
                if (fd < 0) return fail(ErrorCode::storage, fmt::format("cannot create {}: {}", path.string(), std::strerror(errno)));
                break;
            }
            head.push_back(c);
            if (head.size() > (status == 200 ? manifest_bytes_max : error_body_max))
                return fail(ErrorCode::bad_input,
                            "the answer does not begin with a snapshot manifest (is the server a coconut-clearingd?)");
        }
        while (size > 0) {
            const ssize_t n = ::write(fd, data, size);
            if (n <= 0) return fail(ErrorCode::storage, fmt::format("writing the snapshot: {}", std::strerror(errno)));
            data += n;
            size -= static_cast<std::size_t>(n);
            lmdb_written += static_cast<std::uint64_t>(n);
        }
        return Ok{};
    }

    Status finish() {
        if (fd >= 0 && ::fsync(fd) != 0) return fail(ErrorCode::storage, fmt::format("fsync data.mdb: {}", std::strerror(errno)));
        return Ok{};
    }
};

// The server's refusal as an error naming its status and message.
Error refusal(unsigned status, const std::string& body, const std::string& where) {
    const auto j = nlohmann::json::parse(body, nullptr, false);
    std::string message = "(not a coconut-clearingd answer)";
    if (j.is_object() && j.contains("error") && j["error"].is_object()) message = j["error"].value("message", message);
    return Error{ErrorCode::bad_input, fmt::format("{} answered {}: {}", where, status, message)};
}

template <class Stream>
Status receive(Stream& stream, const JoinOptions& o, const std::string& host, Sink& sink) {
    bhttp::request<bhttp::empty_body> request{bhttp::verb::get, std::string(snapshot_target), 11};
    request.set(bhttp::field::host, host);
    request.set(bhttp::field::authorization, "Bearer " + o.token);
    bhttp::write(stream, request);
    beast::flat_buffer buffer;
    bhttp::response_parser<bhttp::buffer_body> parser;
    parser.body_limit(std::numeric_limits<std::uint64_t>::max());  // not boost::none: Boost 1.74 compares it as 0
    bhttp::read_header(stream, buffer, parser);
    sink.status = parser.get().result_int();
    const auto type = parser.get()[bhttp::field::content_type];
    if (sink.status == 200 && std::string_view(type.data(), type.size()) != snapshot_content_type)
        return fail(ErrorCode::bad_input,
                    fmt::format("{} answered 200 with Content-Type \"{}\", not a snapshot: is it a coconut-clearingd?", o.from,
                                std::string_view(type.data(), type.size())));
    std::array<char, 64 * 1024> chunk{};
    while (!parser.is_done()) {
        parser.get().body().data = chunk.data();
        parser.get().body().size = chunk.size();
        beast::error_code ec;
        bhttp::read(stream, buffer, parser, ec);
        if (ec && ec != bhttp::error::need_buffer) throw beast::system_error(ec);
        if (auto taken = sink.take(chunk.data(), chunk.size() - parser.get().body().size); !taken) return taken;
    }
    return sink.finish();
}

// GET the snapshot into sink (plain or TLS); connection failures as bad_input naming the server.
Status download(const JoinOptions& o, Sink& sink) {
    const bool tls = o.from.starts_with("https://");
    if (!tls && !o.from.starts_with("http://")) return fail(ErrorCode::bad_input, "--from " + o.from + ": expected https://HOST:PORT");
    std::string_view rest = std::string_view(o.from).substr(tls ? 8 : 7);
    if (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
    auto endpoint = parse_host_port(rest);
    if (!endpoint) return fail(ErrorCode::bad_input, "--from " + o.from + ": expected https://HOST:PORT");
    const std::string port = std::to_string(endpoint->port);
    try {
        boost::asio::io_context io;
        tcp::resolver resolver(io);
        if (!tls) {
            beast::tcp_stream stream(io);
            stream.expires_after(o.timeout);
            stream.connect(resolver.resolve(endpoint->host, port));
            return receive(stream, o, endpoint->host, sink);
        }
        if (o.ca_file.empty())
            return fail(ErrorCode::bad_input, "--from https://… needs --ca FILE (the CA of the peer's HTTP certificate)");
        auto context = tls::ClientContext::create(tls::ClientFiles{o.ca_file, {}, {}});
        if (!context) return fail(ErrorCode::bad_input, "--ca: " + context.error().message);
        beast::ssl_stream<beast::tcp_stream> stream(io, context->context());
        if (auto prepared = context->prepare(stream.native_handle(), endpoint->host); !prepared)
            return fail(ErrorCode::bad_input, prepared.error().message);
        beast::get_lowest_layer(stream).expires_after(o.timeout);
        beast::get_lowest_layer(stream).connect(resolver.resolve(endpoint->host, port));
        stream.handshake(boost::asio::ssl::stream_base::client);
        return receive(stream, o, endpoint->host, sink);
    } catch (const std::exception& e) {
        return fail(ErrorCode::bad_input, fmt::format("{}: {}", o.from, e.what()));
    }
}

Status write_file(const std::filesystem::path& path, const Bytes& contents) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) return fail(ErrorCode::storage, fmt::format("cannot create {}: {}", path.string(), std::strerror(errno)));
    const bool ok = ::write(fd, contents.data(), contents.size()) == static_cast<ssize_t>(contents.size()) && ::fsync(fd) == 0;
    ::close(fd);
    if (!ok) return fail(ErrorCode::storage, "cannot write " + path.string());
    return Ok{};
}

// `data` may be taken: missing, empty, or (with --replace) any directory no daemon serves.
Status target_usable(const JoinOptions& o) {
    std::error_code ec;
    if (!std::filesystem::exists(o.data, ec)) return Ok{};
    if (!std::filesystem::is_directory(o.data, ec)) return fail(ErrorCode::conflict, o.data.string() + " is not a directory");
    if (std::filesystem::is_empty(o.data, ec)) return Ok{};
    if (!o.replace)
        return fail(ErrorCode::conflict, fmt::format("{} is not empty: join installs a whole data directory; give --replace to replace "
                                                     "this one (its ledger is lost), or an empty directory",
                                                     o.data.string()));
    auto lock = lock_data_directory(o.data);  // a running node's directory is never replaced
    if (!lock) return fail(ErrorCode::locked, lock.error().message);
    return Ok{};
}

}  // namespace

Result<JoinReport> verify_copy(const std::filesystem::path& staging, const SnapshotManifest& m) {
    auto data = open_data_directory(staging, ledger::Options{});
    if (!data) return fail(ErrorCode::storage, "the copy does not open: " + data.error().message);
    auto report = check(*data->ledger, *data->registry);
    if (!report) return fail(ErrorCode::storage, "checking the copy: " + report.error().message);
    if (!report->ok()) {
        std::string problems;
        for (const auto& p : report->ledger.problems) problems += "; " + p;
        for (const auto& p : report->problems) problems += "; " + p;
        return fail(ErrorCode::storage, "the copy fails its check" + problems);
    }
    const ledger::JournalHead head = data->ledger->head();
    auto position = data->ledger->replicated_position();
    if (!position) return fail(ErrorCode::storage, position.error().message);
    const std::string hash = to_hex(ByteView(head.hash.data(), head.hash.size()));
    if (head.sequence != m.journal_sequence || hash != m.journal_hash || *position != m.position)
        return fail(ErrorCode::storage, fmt::format("the copy holds journal entry {} at position {}, its manifest says entry {} at "
                                                    "position {} (hash {} vs {})",
                                                    head.sequence, *position, m.journal_sequence, m.position, hash, m.journal_hash));
    return JoinReport{m, report->ledger.accounts, report->ledger.journal_entries};
}

Status install_data_directory(const std::filesystem::path& staging, const std::filesystem::path& data) {
    std::error_code ec;
    const auto aside = std::filesystem::path(data.string() + fmt::format(".replaced-{}", ::getpid()));
    const bool existed = std::filesystem::exists(data, ec);
    if (existed) {
        std::filesystem::rename(data, aside, ec);
        if (ec) return fail(ErrorCode::storage, fmt::format("cannot move {} aside: {}", data.string(), ec.message()));
    }
    std::filesystem::rename(staging, data, ec);
    if (ec) return fail(ErrorCode::storage, fmt::format("cannot rename {} to {}: {}", staging.string(), data.string(), ec.message()));
    if (existed) std::filesystem::remove_all(aside, ec);
    return Ok{};
}

Result<JoinReport> join_from_snapshot(const JoinOptions& o) {
    if (o.token.empty()) return fail(ErrorCode::bad_input, "the clerk token is empty");
    if (auto usable = target_usable(o); !usable) return Unexpected{usable.error()};
    const auto absolute = std::filesystem::absolute(o.data).lexically_normal();
    const auto staging = absolute.parent_path() / fmt::format(".{}.join-{}", absolute.filename().string(), ::getpid());
    std::error_code ec;
    std::filesystem::remove_all(staging, ec);
    if (!std::filesystem::create_directories(staging, ec))
        return fail(ErrorCode::storage, fmt::format("cannot create {}: {}", staging.string(), ec.message()));
    struct Cleanup {
        std::filesystem::path path;
        ~Cleanup() {
            std::error_code ignored;
            std::filesystem::remove_all(path, ignored);  // nothing left after a failure (gone already after install)
        }
    } cleanup{staging};
    Sink sink;
    sink.staging = staging;
    if (auto downloaded = download(o, sink); !downloaded) return Unexpected{downloaded.error()};
    if (sink.status != 200) return Unexpected{refusal(sink.status, sink.head, o.from)};
    if (!sink.manifest_done) return fail(ErrorCode::bad_input, o.from + ": the answer holds no snapshot manifest");
    auto manifest = parse_manifest(sink.head);
    if (!manifest) return Unexpected{Error{ErrorCode::bad_input, o.from + ": " + manifest.error().message}};
    if (sink.lmdb_written != manifest->lmdb_bytes)
        return fail(ErrorCode::bad_input,
                    fmt::format("{}: the snapshot is cut short ({} of {} ledger bytes)", o.from, sink.lmdb_written, manifest->lmdb_bytes));
    for (const auto& [name, contents] : manifest->files)
        if (auto written = write_file(staging / name, contents); !written) return Unexpected{written.error()};
    auto verified = verify_copy(staging, *manifest);
    if (!verified) return verified;
    if (auto installed = install_data_directory(staging, o.data); !installed) return Unexpected{installed.error()};
    return verified;
}

}  // namespace coconut::clearing
