// The HTTP transport (Boost.Beast): accept with a connection bound, one session per connection (on a
// strand of its own when several threads run the io_context), a parser with head and body limits, a
// deadline on every read and write, keep-alive, optional TLS. The API (src/api/, routed by router.cpp) answers; this
// file only moves bytes.
#include <utility>  // before Boost.Asio (Boost 1.74 + C++20)

#include "http_api.hpp"

#include <coconut/core/admission.hpp>
#include <coconut/core/log.hpp>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/write.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include <fmt/format.h>

#include <sched.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <stdexcept>

namespace coconut::clearing::http {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = net::ip::tcp;

struct HttpServer::State : std::enable_shared_from_this<HttpServer::State> {
    State(net::io_context& io_context, Services services, HttpOptions opts)
        : io(io_context), options(std::move(opts)), api(services, options, stats), acceptor(io_context),
          addresses({options.connections_per_address, options.connections_max}), backoff(acceptor.get_executor()) {}

    net::io_context& io;
    const HttpOptions options;
    HttpStats stats;
    Api api;
    tcp::acceptor acceptor;
    core::AddressAdmission addresses;  // per client address and in total; a session holds its ticket
    core::AcceptBackoff backoff;
    std::optional<net::ssl::context> tls;
    std::atomic<bool> stopping{false};

    void accept();
    void refuse(tcp::socket socket, core::Refusal why);
    void record(unsigned status, std::chrono::steady_clock::duration elapsed) {
        stats.responses_by_class[std::min<std::size_t>(status / 100, stats.responses_by_class.size() - 1)].fetch_add(
            1, std::memory_order_relaxed);
        const auto us = static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(elapsed).count());
        std::size_t bucket = 0;
        while (bucket < latency_buckets_us.size() && us > latency_buckets_us[bucket]) ++bucket;
        stats.latency_buckets[bucket].fetch_add(1, std::memory_order_relaxed);
        stats.latency_us_sum.fetch_add(us, std::memory_order_relaxed);
    }
};

ResponseFile::~ResponseFile() {
    if (fd >= 0) ::close(fd);
    if (done) done();
}

namespace {

// A response file is sent in chunks of this size, each under the write deadline.
constexpr std::size_t file_chunk_bytes = 64 * 1024;

std::string_view view(beast::string_view s) { return {s.data(), s.size()}; }

// The answer's bytes (status line, headers, body) appended to `out`, one buffer for one send: cheaper
// than Beast's serializer, which showed in the profile under wrk. The same head Beast would write.
void serialize(const ApiResponse& r, unsigned version, bool keep_alive, std::string& out) {
    const beast::string_view reason = bhttp::obsolete_reason(static_cast<bhttp::status>(r.status));
    out.reserve(out.size() + 256 + r.body.size());
    fmt::format_to(std::back_inserter(out),
                   "HTTP/{}.{} {} {}\r\nContent-Type: {}\r\nCache-Control: no-store\r\n"
                   "X-Content-Type-Options: nosniff\r\n",
                   version / 10, version % 10, r.status, std::string_view(reason.data(), reason.size()), r.content_type);
    if (r.content_type.starts_with("text/html")) {
        // The page is self-contained: nothing may load from elsewhere, and it may only talk to us.
        out +=
            "Content-Security-Policy: default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
            "connect-src 'self'; form-action 'self'; frame-ancestors 'none'\r\n";
    }
    for (const auto& [name, value] : r.headers) fmt::format_to(std::back_inserter(out), "{}: {}\r\n", name, value);
    // HTTP/1.1 keeps the connection by default, HTTP/1.0 closes it by default.
    if (version >= 11 && !keep_alive) out += "Connection: close\r\n";
    if (version < 11 && keep_alive) out += "Connection: keep-alive\r\n";
    fmt::format_to(std::back_inserter(out), "Content-Length: {}\r\n\r\n", r.body.size() + (r.file ? r.file->bytes : 0));
    out += r.body;
}

// What a parse failure is answered with (the connection closes afterwards).
ApiResponse parse_failure(const beast::error_code& ec) {
    if (ec == bhttp::error::header_limit) return error_response(431, "header_too_large", "request head above the limit");
    if (ec == bhttp::error::body_limit) return error_response(413, "body_too_large", "request body above the limit");
    return error_response(400, "malformed_request", "the request is not valid HTTP/1.1: " + ec.message());
}

// A request id the client (or a proxy in front) sent in X-Request-Id is kept when it is short and plain;
// otherwise the request gets one of its own.
bool plain_request_id(std::string_view id) {
    if (id.empty() || id.size() > 64) return false;
    return std::all_of(id.begin(), id.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.' || c == ':';
    });
}

// The path of a request target without its query: a query may carry what must not reach a log.
std::string_view path_of(std::string_view target) { return target.substr(0, target.find('?')); }

template <class Stream>
class Session : public std::enable_shared_from_this<Session<Stream>> {
public:
    Session(std::shared_ptr<HttpServer::State> server, Stream stream, core::AddressTicket address)
        : server_(std::move(server)), stream_(std::move(stream)), address_(std::move(address)) {
        server_->stats.connections_open.fetch_add(1, std::memory_order_relaxed);
    }
    ~Session() { server_->stats.connections_open.fetch_sub(1, std::memory_order_relaxed); }

    void start() {
        beast::error_code ec;
        const auto remote = beast::get_lowest_layer(stream_).socket().remote_endpoint(ec);
        if (!ec) {
            const auto address = remote.address();
            peer_ = address.is_v4() ? net::ip::make_address_v6(net::ip::v4_mapped, address.to_v4()).to_bytes() : address.to_v6().to_bytes();
        }
        if constexpr (std::is_same_v<Stream, beast::ssl_stream<beast::tcp_stream>>) {
            beast::get_lowest_layer(stream_).expires_after(server_->options.read_timeout);
            stream_.async_handshake(net::ssl::stream_base::server, [self = this->shared_from_this()](beast::error_code ec) {
                if (ec) {
                    self->server_->stats.tls_handshake_failures.fetch_add(1, std::memory_order_relaxed);
                    return;  // the socket closes with the session
                }
                self->read();
            });
        } else {
            read();
        }
    }

private:
    void read() {
        if (server_->stopping.load()) return close();
        parser_.emplace();
        parser_->header_limit(static_cast<std::uint32_t>(server_->options.header_bytes_max));
        parser_->body_limit(server_->options.body_bytes_max);
        // One deadline for the whole request, from the previous answer on: an idle keep-alive
        // connection and a client that dribbles its request both lose the slot at the same bound.
        beast::get_lowest_layer(stream_).expires_after(server_->options.read_timeout);
        bhttp::async_read(stream_, buffer_, *parser_,
                          [self = this->shared_from_this()](beast::error_code ec, std::size_t) { self->on_read(ec); });
    }

    void on_read(beast::error_code ec) {
        started_ = std::chrono::steady_clock::now();
        if (ec == bhttp::error::end_of_stream || ec == net::error::eof || ec == net::error::connection_reset) return close();
        if (ec == beast::error::timeout) {
            server_->stats.timeouts.fetch_add(1, std::memory_order_relaxed);
            return;  // nothing more can be said to a client that stalled; the socket closes
        }
        if (ec) {
            request_id_ = log::new_request_id('h');
            method_ = "-";
            path_ = "-";
            return write(parse_failure(ec), false);
        }
        const auto& request = parser_->get();
        const std::string_view client_id = view(request["X-Request-Id"]);
        request_id_ = plain_request_id(client_id) ? std::string(client_id) : log::new_request_id('h');
        method_ = view(request.method_string());
        path_ = path_of(view(request.target()));
        const ApiRequest api_request{view(request.method_string()), view(request.target()), view(request[bhttp::field::authorization]),
                                     request.body(), peer_};
        version_ = request.version();
        keep_alive_ = request.keep_alive();
        // The parser (which api_request views) and this session live until the answer is written:
        // handling_ holds the session while the API may answer from another thread, so `respond` only
        // captures a pointer (no allocation for the std::function).
        handling_ = this->shared_from_this();
        const log::RequestScope scope(request_id_);
        server_->api.handle(api_request, [this](ApiResponse response) { respond(std::move(response)); });
    }

    // On this connection's executor: at once (reads answer inline); from the ledger writer's thread
    // (changes, after their durable commit): posted to it.
    void respond(ApiResponse response) {
        net::dispatch(stream_.get_executor(), [self = std::move(handling_), response = std::move(response)]() mutable {
            self->write(std::move(response), self->keep_alive_);
        });
    }

    void write(ApiResponse response, bool keep_alive) {
        keep_alive = keep_alive && !server_->stopping.load();
        out_.clear();
        response.headers.emplace_back("X-Request-Id", request_id_);
        serialize(response, version_, keep_alive, out_);
        bytes_ = out_.size() + (response.file ? response.file->bytes : 0);
        file_ = std::move(response.file);
        beast::get_lowest_layer(stream_).expires_after(server_->options.write_timeout);
        net::async_write(stream_, net::buffer(out_),
                         [self = this->shared_from_this(), keep_alive, status = response.status](beast::error_code ec, std::size_t) {
                             if (!ec && self->file_) return self->send_file(0, status, keep_alive);
                             self->written(ec, status, keep_alive);
                         });
    }

    void written(beast::error_code ec, unsigned status, bool keep_alive) {
        file_.reset();
        const auto elapsed = std::chrono::steady_clock::now() - started_;
        server_->record(status, elapsed);
        access_log(status, elapsed, ec);
        if (ec == beast::error::timeout) server_->stats.timeouts.fetch_add(1, std::memory_order_relaxed);
        if (ec) return;
        if (!keep_alive) return close();
        read();
    }

    // The response file from `offset` on, one chunk per write. A file that cannot be read ends the
    // connection: the client sees fewer bytes than Content-Length, never a wrong one.
    void send_file(std::uint64_t offset, unsigned status, bool keep_alive) {
        if (offset == file_->bytes) return written({}, status, keep_alive);
        chunk_.resize(file_chunk_bytes);
        const auto wanted = static_cast<std::size_t>(std::min<std::uint64_t>(chunk_.size(), file_->bytes - offset));
        const ssize_t got = ::pread(file_->fd, chunk_.data(), wanted, static_cast<off_t>(offset));
        if (got <= 0) return written(net::error::make_error_code(net::error::broken_pipe), status, false);
        beast::get_lowest_layer(stream_).expires_after(server_->options.write_timeout);
        net::async_write(stream_, net::buffer(chunk_.data(), static_cast<std::size_t>(got)),
                         [self = this->shared_from_this(), offset, status, keep_alive](beast::error_code ec, std::size_t n) {
                             if (ec) return self->written(ec, status, keep_alive);
                             self->send_file(offset + n, status, keep_alive);
                         });
    }

    // One line per answered request (docs/CLI.md "Logs"): never the query, a header or a body.
    void access_log(unsigned status, std::chrono::steady_clock::duration elapsed, beast::error_code ec) const {
        if (!log::enabled(log::Level::info)) return;
        const log::RequestScope scope(request_id_);
        const double duration_ms = std::chrono::duration<double, std::milli>(elapsed).count();
        log::write(log::Level::info, "http", ec ? "access (answer not delivered: " + ec.message() + ")" : "access",
                   {{"method", method_}, {"path", path_}, {"status", status}, {"bytes", bytes_}, {"duration_ms", duration_ms}});
    }

    void close() {
        if constexpr (std::is_same_v<Stream, beast::ssl_stream<beast::tcp_stream>>) {
            beast::get_lowest_layer(stream_).expires_after(std::chrono::seconds(2));
            stream_.async_shutdown([self = this->shared_from_this()](beast::error_code) {});
        } else {
            // Lingering close: send FIN, then read and drop what the client still sends (the rest of a
            // refused request) for a short while; closing with unread bytes would send a reset that can
            // destroy our answer in the client's buffers before it reads it.
            beast::error_code ignored;
            stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
            beast::get_lowest_layer(stream_).expires_after(linger_);
            drain();
        }
    }

    void drain() {
        stream_.async_read_some(net::buffer(discard_), [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
            if (!ec) self->drain();
        });
    }

    std::shared_ptr<HttpServer::State> server_;
    Stream stream_;
    core::AddressTicket address_;  // the connection's slot, released with the session
    beast::flat_buffer buffer_;
    std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
    std::shared_ptr<Session> handling_;   // this session, while the API handles its request
    std::string out_;                     // the answer being written (its capacity reused)
    std::shared_ptr<ResponseFile> file_;  // sent after out_, when the answer has one
    std::vector<char> chunk_;             // its chunk being written
    PeerAddress peer_{};                  // the client's address, for the limit on requests without a valid token
    std::chrono::steady_clock::time_point started_;
    static constexpr std::chrono::seconds linger_{2};
    std::array<char, 4096> discard_{};
    unsigned version_ = 11;
    bool keep_alive_ = false;
    std::string request_id_;  // of the request being answered, for the access log and X-Request-Id
    std::string method_;
    std::string path_;
    std::uint64_t bytes_ = 0;  // of its answer
};

}  // namespace

void HttpServer::State::accept() {
    const auto executor = options.io_threads > 1 ? net::any_io_executor(net::make_strand(io)) : net::any_io_executor(io.get_executor());
    acceptor.async_accept(executor, [self = shared_from_this()](beast::error_code ec, tcp::socket socket) {
        if (ec == net::error::operation_aborted || self->stopping.load()) return;
        if (!ec) {
            beast::error_code peer_error;
            const auto peer = socket.remote_endpoint(peer_error);
            auto ticket = peer_error ? core::AddressTicket() : self->addresses.admit(peer.address());
            if (!ticket) {
                self->refuse(std::move(socket), ticket.refusal());
            } else {
                self->stats.connections_accepted.fetch_add(1, std::memory_order_relaxed);
                if (self->tls) {
                    using Tls = beast::ssl_stream<beast::tcp_stream>;
                    std::make_shared<Session<Tls>>(self, Tls(beast::tcp_stream(std::move(socket)), *self->tls), std::move(ticket))->start();
                } else {
                    std::make_shared<Session<beast::tcp_stream>>(self, beast::tcp_stream(std::move(socket)), std::move(ticket))->start();
                }
            }
        }
        // Out of descriptors (EMFILE …): wait and retry instead of spinning on the same error.
        if (self->backoff.after(ec, [self] { self->accept(); }) == core::AcceptStep::accept_later) {
            self->stats.accept_pauses.fetch_add(1, std::memory_order_relaxed);
        }
    });
}

// Above connections_max or the address's share: a short 503 if the socket takes it at once (plain HTTP
// only), then close.
void HttpServer::State::refuse(tcp::socket socket, core::Refusal why) {
    (why == core::Refusal::per_key ? stats.connections_refused_per_address : stats.connections_refused)
        .fetch_add(1, std::memory_order_relaxed);
    if (!tls) {
        static const std::string busy =
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\nRetry-After: 1\r\n"
            "Content-Length: 77\r\n\r\n{\"error\":{\"code\":\"busy\",\"message\":\"too many connections; retry shortly\"}}\n";
        beast::error_code ignored;
        socket.non_blocking(true, ignored);
        socket.write_some(net::buffer(busy), ignored);
    }
    beast::error_code ignored;
    socket.close(ignored);
}

HttpServer::HttpServer(net::io_context& io, Services services, HttpOptions options)
    : state_(std::make_shared<State>(io, services, std::move(options))) {
    State& s = *state_;
    if (!s.options.tls_certificate.empty() || !s.options.tls_private_key.empty()) {
        if (s.options.tls_certificate.empty() || s.options.tls_private_key.empty()) {
            throw std::runtime_error("TLS needs both --http-tls-cert and --http-tls-key");
        }
        s.tls.emplace(net::ssl::context::tls_server);
        s.tls->set_options(net::ssl::context::default_workarounds | net::ssl::context::no_sslv2 | net::ssl::context::no_sslv3 |
                           net::ssl::context::no_tlsv1 | net::ssl::context::no_tlsv1_1 | net::ssl::context::single_dh_use);
        beast::error_code ec;
        s.tls->use_certificate_chain_file(s.options.tls_certificate.string(), ec);
        if (ec) throw std::runtime_error("TLS certificate " + s.options.tls_certificate.string() + ": " + ec.message());
        s.tls->use_private_key_file(s.options.tls_private_key.string(), net::ssl::context::pem, ec);
        if (ec) throw std::runtime_error("TLS private key " + s.options.tls_private_key.string() + ": " + ec.message());
    }
    const tcp::endpoint endpoint(net::ip::make_address(s.options.host), s.options.port);
    s.acceptor.open(endpoint.protocol());
    s.acceptor.set_option(net::socket_base::reuse_address(true));
    s.acceptor.bind(endpoint);
    s.acceptor.listen(net::socket_base::max_listen_connections);
    state_->accept();
}

HttpServer::~HttpServer() { shutdown(); }

std::optional<ThreadPriority> parse_thread_priority(std::string_view text) {
    if (text == "idle") return ThreadPriority{true, 0};
    if (text == "normal") return ThreadPriority{false, 0};
    constexpr std::string_view nice_prefix = "nice:";
    if (!text.starts_with(nice_prefix)) return std::nullopt;
    text.remove_prefix(nice_prefix.size());
    int nice = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), nice);
    if (ec != std::errc() || end != text.data() + text.size() || nice < 1 || nice > 19) return std::nullopt;
    return ThreadPriority{false, nice};
}

Status lower_thread_priority(const ThreadPriority& priority) {
    const auto tid = static_cast<pid_t>(::gettid());
    if (priority.idle) {
        const sched_param param{};
        if (::sched_setscheduler(tid, SCHED_IDLE, &param) != 0) {
            return Unexpected<Error>{Error{ErrorCode::storage, fmt::format("sched_setscheduler(SCHED_IDLE): {}", std::strerror(errno))}};
        }
        return Ok{};
    }
    if (priority.nice != 0 && ::setpriority(PRIO_PROCESS, static_cast<id_t>(tid), priority.nice) != 0) {
        return Unexpected<Error>{Error{ErrorCode::storage, fmt::format("setpriority(nice {}): {}", priority.nice, std::strerror(errno))}};
    }
    return Ok{};
}

std::uint16_t HttpServer::port() const { return state_->acceptor.local_endpoint().port(); }
bool HttpServer::tls() const { return state_->tls.has_value(); }
const HttpStats& HttpServer::stats() const { return state_->stats; }

void HttpServer::shutdown() {
    state_->stopping.store(true);
    net::post(state_->acceptor.get_executor(), [state = state_] {
        beast::error_code ignored;
        state->backoff.cancel();
        state->acceptor.close(ignored);
    });
}

}  // namespace coconut::clearing::http
