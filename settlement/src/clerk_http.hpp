// How the settlement poster reaches the clearing daemon's clerk API: one HTTP/1.1 request per
// connection, over plain TCP (http://) or TLS (https://). Not part of the public API.
//
// https:// — TLS 1.2 at least (1.3 when the daemon has it), through coconut::tls's client context
// (clearing/tls/include/coconut/tls/tls.hpp): the daemon's certificate must chain to the CA file given
// (`--ca`), be valid now, be a server certificate and name the host of the URL (an IP literal against
// its IP addresses, a name against its DNS names). No client certificate: the clerk token
// authenticates the request. A certificate that fails any of these ends the connection inside the
// handshake, before a byte of the request (or the token) is sent.
// http:// — the token travels in clear: for a daemon on the same host (loopback) only.
#pragma once

#include "internal.hpp"

#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

namespace coconut::settlement {

struct ClerkEndpoint {
    bool tls = false;
    std::string host;  // as in the URL (a name, an IPv4 literal, or an IPv6 literal without brackets)
    std::string port;
};

// "http://HOST:PORT" or "https://HOST:PORT" (a trailing '/' allowed; IPv6 as "[::1]:PORT").
// bad_input naming the value otherwise.
Result<ClerkEndpoint> parse_clerk_endpoint(std::string_view url);

struct ClerkAnswer {
    unsigned status = 0;
    std::string body;
};

class ClerkConnection {
public:
    // https:// needs `ca_file` (bad_input when missing or unusable, naming the file); http:// ignores it.
    static Result<std::unique_ptr<ClerkConnection>> create(ClerkEndpoint endpoint, const std::filesystem::path& ca_file);
    ~ClerkConnection();
    ClerkConnection(const ClerkConnection&) = delete;
    ClerkConnection& operator=(const ClerkConnection&) = delete;

    // POST `target` with a JSON body and the bearer token; the whole exchange bounded by `timeout`, the
    // answer's body by `response_bytes_max`. Errors: `untrusted` when the daemon's certificate is refused
    // (nothing was sent), `posting` when the daemon cannot be reached or the exchange fails.
    Result<ClerkAnswer> post_json(std::string_view target, std::string_view token, std::string body, std::chrono::seconds timeout,
                                  std::size_t response_bytes_max);

    // GET `target` with the bearer token, bounded like post_json.
    Result<ClerkAnswer> get(std::string_view target, std::string_view token, std::chrono::seconds timeout, std::size_t response_bytes_max);

    const ClerkEndpoint& endpoint() const { return endpoint_; }

    struct Tls;

private:
    ClerkConnection(ClerkEndpoint endpoint, std::unique_ptr<Tls> tls);
    Result<ClerkAnswer> send(const boost::beast::http::request<boost::beast::http::string_body>& request, std::chrono::seconds timeout,
                             std::size_t response_bytes_max);
    ClerkEndpoint endpoint_;
    std::unique_ptr<Tls> tls_;  // null for http://
};

}  // namespace coconut::settlement
