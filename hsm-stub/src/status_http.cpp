#include <coconut/core/metrics.hpp>
#include <coconut/hsm/status_http.hpp>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <thread>

namespace coconut::hsm {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;

namespace {

// One scrape or probe at a time is the normal case; a few more cover two Prometheus servers and a
// load balancer. Beyond it a new connection is closed at once.
constexpr std::size_t status_connections_max = 16;
constexpr std::size_t status_head_bytes_max = 8 * 1024;
constexpr std::chrono::seconds status_read_timeout{5};
constexpr std::chrono::seconds status_write_timeout{5};

std::string error_body(std::string_view code, std::string_view message) {
    return nlohmann::json{{"error", {{"code", code}, {"message", message}}}}.dump();
}

}  // namespace

std::string status_metrics_text(const Server& server) {
    core::MetricsText text;
    server.metrics()->write(text);
    const Server::Stats stats = server.stats();
    text.gauge("coconut_hsm_connections_open", "connections open now", server.connection_count());
    text.family("coconut_hsm_connections_refused_total", "counter", "connections refused at admission, by limit");
    text.sample("coconut_hsm_connections_refused_total", stats.refused_not_allowed, {{"reason", "not_allowed"}});
    text.sample("coconut_hsm_connections_refused_total", stats.refused_per_address, {{"reason", "per_address"}});
    text.sample("coconut_hsm_connections_refused_total", stats.refused_total, {{"reason", "connection_limit"}});
    text.sample("coconut_hsm_connections_refused_total", stats.refused_per_client, {{"reason", "per_client"}});
    text.counter("coconut_hsm_accept_pauses_total", "accepts that failed for lack of descriptors (then waited)", stats.accept_exhausted);
    text.gauge("coconut_hsm_store_generation", "the key store generation served (incremented by every ceremony; SIGHUP reloads)",
               server.store_generation());
    text.gauge("coconut_hsm_audit_failing", "1 while the audit log cannot be written (every request is refused)",
               server.metrics()->audit_failing() ? 1 : 0);
    core::process_metrics(text);
    core::build_info(text, "coconut-hsmd");
    return std::move(text.out);
}

std::pair<unsigned, std::string> status_health(const Server& server) {
    const bool audit_ok = !server.metrics()->audit_failing();
    nlohmann::json body{{"status", audit_ok ? "ok" : "degraded"},
                        {"store_generation", server.store_generation()},
                        {"connections_open", server.connection_count()},
                        {"audit", audit_ok ? "ok" : "failing"}};
    return {audit_ok ? 200u : 503u, body.dump()};
}

struct StatusHttp::State : std::enable_shared_from_this<StatusHttp::State> {
    const Server& server;
    asio::io_context io{1};
    tcp::acceptor acceptor{io};
    std::atomic<std::size_t> open{0};
    std::thread thread;

    explicit State(const Server& s) : server(s) {}
    void accept();
    void serve(tcp::socket socket);
};

namespace {

// One connection: read one request, answer, close. Owns its buffers; `open` counts it.
struct StatusConnection : std::enable_shared_from_this<StatusConnection> {
    beast::tcp_stream stream;
    beast::flat_buffer buffer{status_head_bytes_max};
    bhttp::request_parser<bhttp::empty_body> parser;
    bhttp::response<bhttp::string_body> response;
    std::shared_ptr<StatusHttp::State> state;

    StatusConnection(tcp::socket socket, std::shared_ptr<StatusHttp::State> s) : stream(std::move(socket)), state(std::move(s)) {
        parser.header_limit(status_head_bytes_max);
        ++state->open;
    }
    ~StatusConnection() { --state->open; }

    void start() {
        stream.expires_after(status_read_timeout);
        bhttp::async_read(stream, buffer, parser, [self = shared_from_this()](beast::error_code ec, std::size_t) {
            if (ec) return self->answer(400, "application/json", error_body("bad_request", "unreadable request: " + ec.message()));
            self->route(self->parser.get());
        });
    }

    void route(const bhttp::request<bhttp::empty_body>& request) {
        const std::string_view target(request.target().data(), request.target().size());
        const std::string_view path = target.substr(0, target.find('?'));
        if (path != "/healthz" && path != "/metrics") return answer(404, "application/json", error_body("not_found", "no such endpoint"));
        if (request.method() != bhttp::verb::get && request.method() != bhttp::verb::head) {
            response.set(bhttp::field::allow, "GET, HEAD");
            return answer(405, "application/json", error_body("method_not_allowed", "GET only"));
        }
        if (path == "/metrics") return answer(200, std::string(core::metrics_content_type), status_metrics_text(state->server));
        auto [status, body] = status_health(state->server);
        answer(status, "application/json", std::move(body));
    }

    void answer(unsigned status, std::string content_type, std::string body) {
        response.result(status);
        response.version(11);
        response.set(bhttp::field::content_type, content_type);
        response.set(bhttp::field::cache_control, "no-store");
        response.keep_alive(false);
        response.body() = std::move(body);
        response.prepare_payload();
        stream.expires_after(status_write_timeout);
        bhttp::async_write(stream, response, [self = shared_from_this()](beast::error_code, std::size_t) {
            beast::error_code ignored;
            self->stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
        });
    }
};

}  // namespace

void StatusHttp::State::accept() {
    acceptor.async_accept([self = shared_from_this()](beast::error_code ec, tcp::socket socket) {
        if (ec == asio::error::operation_aborted || !self->acceptor.is_open()) return;
        if (!ec) self->serve(std::move(socket));
        self->accept();
    });
}

void StatusHttp::State::serve(tcp::socket socket) {
    if (open.load() >= status_connections_max) return;  // closed by the socket's destructor
    std::make_shared<StatusConnection>(std::move(socket), shared_from_this())->start();
}

StatusHttp::StatusHttp(const Server& server, StatusHttpConfig config) : state_(std::make_shared<State>(server)) {
    const tcp::endpoint endpoint(asio::ip::make_address(config.host), config.port);
    state_->acceptor.open(endpoint.protocol());
    state_->acceptor.set_option(tcp::acceptor::reuse_address(true));
    state_->acceptor.bind(endpoint);
    state_->acceptor.listen();
    state_->accept();
    state_->thread = std::thread([state = state_] { state->io.run(); });
}

StatusHttp::~StatusHttp() {
    asio::post(state_->io, [state = state_] {
        beast::error_code ignored;
        state->acceptor.close(ignored);
    });
    state_->io.stop();
    if (state_->thread.joinable()) state_->thread.join();
}

std::uint16_t StatusHttp::port() const { return state_->acceptor.local_endpoint().port(); }

}  // namespace coconut::hsm
