// The clerk API transport of the settlement poster: plain HTTP or HTTPS (clerk_http.hpp).
#include "clerk_http.hpp"

#include <coconut/core/endpoint.hpp>
#include <coconut/tls/tls.hpp>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <fmt/format.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

namespace coconut::settlement {

namespace beast = boost::beast;
namespace http = beast::http;
using tcp = boost::asio::ip::tcp;

struct ClerkConnection::Tls {
    tls::ClientContext context;
    std::filesystem::path ca_file;
};

namespace {

constexpr std::string_view http_scheme = "http://";
constexpr std::string_view https_scheme = "https://";

Unexpected<Error> bad_endpoint(std::string_view url) {
    return Unexpected{Error{ErrorCode::bad_input, fmt::format("--clearingd {}: expected http://HOST:PORT or https://HOST:PORT", url)}};
}

std::string scheme_of(const ClerkEndpoint& endpoint) { return endpoint.tls ? "https" : "http"; }

// Writes the request and reads one answer on a connected (and, for TLS, handshaken) stream.
template <class Stream>
ClerkAnswer exchange(Stream& stream, const http::request<http::string_body>& request, std::size_t response_bytes_max) {
    http::write(stream, request);
    beast::flat_buffer buffer;
    http::response_parser<http::string_body> parser;
    parser.body_limit(response_bytes_max);
    http::read(stream, buffer, parser);
    auto response = parser.release();
    return ClerkAnswer{response.result_int(), std::move(response.body())};
}

// The request is complete by its Content-Length and the answer by its own: the TCP connection is closed
// without waiting for the daemon's TLS close_notify (a daemon that never sends one cannot hold us).
void close_quietly(tcp::socket& socket) {
    beast::error_code ignored;
    socket.shutdown(tcp::socket::shutdown_both, ignored);
    socket.close(ignored);
}

}  // namespace

Result<ClerkEndpoint> parse_clerk_endpoint(std::string_view url) {
    ClerkEndpoint endpoint;
    std::string_view rest;
    if (url.starts_with(https_scheme)) {
        endpoint.tls = true;
        rest = url.substr(https_scheme.size());
    } else if (url.starts_with(http_scheme)) {
        rest = url.substr(http_scheme.size());
    } else {
        return bad_endpoint(url);
    }
    if (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
    auto parsed = parse_host_port(rest);  // [IPv6]:PORT in brackets, as in a URL
    if (!parsed) return bad_endpoint(url);
    endpoint.host = std::move(parsed->host);
    endpoint.port = std::to_string(parsed->port);
    return endpoint;
}

ClerkConnection::ClerkConnection(ClerkEndpoint endpoint, std::unique_ptr<Tls> tls) : endpoint_(std::move(endpoint)), tls_(std::move(tls)) {}

ClerkConnection::~ClerkConnection() = default;

Result<std::unique_ptr<ClerkConnection>> ClerkConnection::create(ClerkEndpoint endpoint, const std::filesystem::path& ca_file) {
    if (!endpoint.tls) return std::unique_ptr<ClerkConnection>(new ClerkConnection(std::move(endpoint), nullptr));
    if (ca_file.empty()) {
        return Unexpected{Error{ErrorCode::bad_input, fmt::format("--clearingd https://{}:{} needs --ca FILE: the CA certificate the "
                                                                  "daemon's certificate must chain to",
                                                                  endpoint.host, endpoint.port)}};
    }
    auto context = tls::ClientContext::create(tls::ClientFiles{ca_file, {}, {}});
    if (!context) return Unexpected{Error{ErrorCode::bad_input, "--ca: " + context.error().message}};
    auto state = std::make_unique<Tls>(Tls{std::move(*context), ca_file});
    return std::unique_ptr<ClerkConnection>(new ClerkConnection(std::move(endpoint), std::move(state)));
}

Result<ClerkAnswer> ClerkConnection::post_json(std::string_view target, std::string_view token, std::string body,
                                               std::chrono::seconds timeout, std::size_t response_bytes_max) {
    http::request<http::string_body> request{http::verb::post, std::string(target), 11};
    request.set(http::field::host, endpoint_.host);
    request.set(http::field::authorization, fmt::format("Bearer {}", token));
    request.set(http::field::content_type, "application/json");
    request.body() = std::move(body);
    request.prepare_payload();
    return send(request, timeout, response_bytes_max);
}

Result<ClerkAnswer> ClerkConnection::get(std::string_view target, std::string_view token, std::chrono::seconds timeout,
                                         std::size_t response_bytes_max) {
    http::request<http::string_body> request{http::verb::get, std::string(target), 11};
    request.set(http::field::host, endpoint_.host);
    request.set(http::field::authorization, fmt::format("Bearer {}", token));
    return send(request, timeout, response_bytes_max);
}

Result<ClerkAnswer> ClerkConnection::send(const http::request<http::string_body>& request, std::chrono::seconds timeout,
                                          std::size_t response_bytes_max) {
    const std::string where = fmt::format("clearing daemon at {}://{}:{}", scheme_of(endpoint_), endpoint_.host, endpoint_.port);
    try {
        boost::asio::io_context io;
        tcp::resolver resolver(io);
        if (!tls_) {
            beast::tcp_stream stream(io);
            stream.expires_after(timeout);
            stream.connect(resolver.resolve(endpoint_.host, endpoint_.port));
            ClerkAnswer answer = exchange(stream, request, response_bytes_max);
            close_quietly(stream.socket());
            return answer;
        }
        beast::ssl_stream<beast::tcp_stream> stream(io, tls_->context.context());
        if (auto prepared = tls_->context.prepare(stream.native_handle(), endpoint_.host); !prepared)
            return Unexpected{Error{ErrorCode::bad_input, fmt::format("{}: {}", where, prepared.error().message)}};
        beast::get_lowest_layer(stream).expires_after(timeout);
        beast::get_lowest_layer(stream).connect(resolver.resolve(endpoint_.host, endpoint_.port));
        beast::error_code handshake_error;
        stream.handshake(boost::asio::ssl::stream_base::client, handshake_error);
        if (handshake_error) {
            const long verify = SSL_get_verify_result(stream.native_handle());
            close_quietly(beast::get_lowest_layer(stream).socket());
            if (verify != X509_V_OK) {
                return Unexpected{Error{ErrorCode::untrusted,
                                        fmt::format("{}: its TLS certificate was refused ({}): it must chain to --ca {} and name {}; "
                                                    "nothing was sent",
                                                    where, X509_verify_cert_error_string(verify), tls_->ca_file.string(), endpoint_.host)}};
            }
            return Unexpected{Error{ErrorCode::posting, fmt::format("{}: TLS handshake failed: {}", where, handshake_error.message())}};
        }
        ClerkAnswer answer = exchange(stream, request, response_bytes_max);
        close_quietly(beast::get_lowest_layer(stream).socket());
        return answer;
    } catch (const std::exception& e) {
        return Unexpected{Error{ErrorCode::posting, fmt::format("{}: {}", where, e.what())}};
    }
}

}  // namespace coconut::settlement
