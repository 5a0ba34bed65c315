#include <utility>  // before Boost.Asio (Boost 1.74 + C++20)

#include <coconut/clearing/clerk_client.hpp>
#include <coconut/core/durable_file.hpp>
#include <coconut/core/endpoint.hpp>
#include <coconut/tls/tls.hpp>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <thread>

namespace coconut::clearing {

namespace {

namespace beast = boost::beast;
namespace bhttp = beast::http;
using tcp = boost::asio::ip::tcp;

// A refused request (429) waits for its Retry-After this many times at most.
constexpr int rate_limited_retries_max = 60;

Unexpected<Error> client_failure(std::string what) { return Unexpected{Error{ErrorCode::bad_input, std::move(what)}}; }

template <class Stream>
ClerkAnswer exchange(Stream& stream, const std::string& host, bhttp::verb method, std::string_view target, const std::string& token,
                     const std::string& body, unsigned& retry_after_s) {
    bhttp::request<bhttp::string_body> request{method, std::string(target), 11};
    request.set(bhttp::field::host, host);
    request.set(bhttp::field::authorization, "Bearer " + token);
    request.set(bhttp::field::connection, "close");
    if (!body.empty()) request.set(bhttp::field::content_type, "application/json");
    request.body() = body;
    request.prepare_payload();
    bhttp::write(stream, request);
    beast::flat_buffer buffer;
    bhttp::response<bhttp::string_body> response;
    bhttp::read(stream, buffer, response);
    const auto retry = response[bhttp::field::retry_after];
    retry_after_s = retry.empty() ? 1 : static_cast<unsigned>(std::strtoul(std::string(retry).c_str(), nullptr, 10));
    return ClerkAnswer{response.result_int(), std::move(response.body())};
}

Result<ClerkAnswer> once(const ClerkEndpoint& e, bhttp::verb method, std::string_view target, const std::string& body,
                         unsigned& retry_after_s) {
    const bool tls = e.url.starts_with("https://");
    if (!tls && !e.url.starts_with("http://")) return client_failure(e.url + ": expected http://HOST:PORT or https://HOST:PORT");
    std::string_view rest = std::string_view(e.url).substr(tls ? 8 : 7);
    while (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
    auto where = parse_host_port(rest);
    if (!where) return client_failure(e.url + ": expected http://HOST:PORT or https://HOST:PORT");
    try {
        boost::asio::io_context io;
        tcp::resolver resolver(io);
        const auto addresses = resolver.resolve(where->host, std::to_string(where->port));
        if (!tls) {
            beast::tcp_stream stream(io);
            stream.expires_after(e.timeout);
            stream.connect(addresses);
            return exchange(stream, where->host, method, target, e.token, body, retry_after_s);
        }
        if (e.ca_file.empty()) return client_failure(e.url + ": https needs --ca FILE (the CA of the daemon's HTTP certificate)");
        auto context = tls::ClientContext::create(tls::ClientFiles{e.ca_file, {}, {}});
        if (!context) return client_failure("--ca: " + context.error().message);
        beast::ssl_stream<beast::tcp_stream> stream(io, context->context());
        if (auto prepared = context->prepare(stream.native_handle(), where->host); !prepared)
            return client_failure(prepared.error().message);
        beast::get_lowest_layer(stream).expires_after(e.timeout);
        beast::get_lowest_layer(stream).connect(addresses);
        stream.handshake(boost::asio::ssl::stream_base::client);
        return exchange(stream, where->host, method, target, e.token, body, retry_after_s);
    } catch (const std::exception& ex) {
        return client_failure(fmt::format("{}: {}", e.url, ex.what()));
    }
}

}  // namespace

std::string local_url(std::string_view host, std::uint16_t port, bool tls) {
    std::string reach(host);
    if (reach == "0.0.0.0" || reach.empty()) reach = "127.0.0.1";
    if (reach == "::") reach = "::1";
    if (reach.find(':') != std::string::npos) reach = "[" + reach + "]";
    return fmt::format("{}://{}:{}", tls ? "https" : "http", reach, port);
}

Status write_served_url(const std::filesystem::path& data, const std::string& url) {
    const std::string line = url + "\n";
    auto written =
        write_file_atomically(data / served_url_file, ByteView(reinterpret_cast<const std::uint8_t*>(line.data()), line.size()), 0644);
    if (!written)
        return Unexpected<Error>{
            Error{ErrorCode::storage, "cannot write " + (data / served_url_file).string() + ": " + written.error().message()}};
    return Ok{};
}

std::optional<std::string> served_url(const std::filesystem::path& data) {
    std::ifstream in(data / served_url_file);
    std::string url;
    if (!std::getline(in, url) || url.empty()) return std::nullopt;
    return url;
}

std::string ClerkAnswer::error_message() const {
    const auto j = nlohmann::json::parse(body, nullptr, false);
    if (j.is_object() && j.contains("error") && j["error"].is_object() && j["error"].contains("message") &&
        j["error"]["message"].is_string())
        return j["error"]["message"].get<std::string>();
    return body.substr(0, 200);
}

Result<ClerkAnswer> clerk_request(const ClerkEndpoint& endpoint, std::string_view method, std::string_view target,
                                  const std::string& body) {
    const bhttp::verb verb = bhttp::string_to_verb(beast::string_view(method.data(), method.size()));
    for (int attempt = 0;; ++attempt) {
        unsigned retry_after_s = 1;
        auto answer = once(endpoint, verb, target, body, retry_after_s);
        if (!answer || answer->status != 429 || attempt >= rate_limited_retries_max) return answer;
        std::this_thread::sleep_for(std::chrono::seconds(std::min(retry_after_s, 10u)));
    }
}

}  // namespace coconut::clearing
