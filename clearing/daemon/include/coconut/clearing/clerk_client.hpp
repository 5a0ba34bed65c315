// The clerk API from the outside (what `coconut-clearingd admin --token-file …` uses while a daemon
// serves the data directory): one request with a clerk's bearer token, over HTTP or HTTPS, and the file
// through which a serving daemon tells where its API listens.
//
//   DATA/http.url   "http://127.0.0.1:8080\n" (or https://…): written by `serve` once its HTTP port
//                   listens; 0.0.0.0 / :: are written as the loopback address. Read only as a hint: a file
//                   a crash left behind points at nothing, and the request then fails naming the address.
#pragma once

#include <coconut/clearing/plan.hpp>  // Error, Result, Status

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

namespace coconut::clearing {

inline constexpr std::string_view served_url_file = "http.url";

// The URL a client on this host reaches an HTTP API listening on host:port at.
std::string local_url(std::string_view host, std::uint16_t port, bool tls);
// Writes / reads DATA/http.url (0644: an address, nothing secret).
Status write_served_url(const std::filesystem::path& data, const std::string& url);
std::optional<std::string> served_url(const std::filesystem::path& data);

struct ClerkEndpoint {
    std::string url;                // http://HOST:PORT or https://HOST:PORT
    std::string token;              // clerk_…
    std::filesystem::path ca_file;  // https: the CA of the daemon's HTTP certificate
    std::chrono::seconds timeout{30};
};

struct ClerkAnswer {
    unsigned status = 0;
    std::string body;
    // {"error":{"message"}} of a refusal, or the body's start when it is not one.
    std::string error_message() const;
};

// One request; a 429 is retried after its Retry-After (at most 60 times: a long registry file loads at
// the token's rate). Errors: bad_input for a URL that is not http(s)://HOST:PORT or a connection that
// fails (naming the URL); the daemon's own refusals are answers (status ≥ 400), not errors.
Result<ClerkAnswer> clerk_request(const ClerkEndpoint& endpoint, std::string_view method, std::string_view target,
                                  const std::string& body = {});

}  // namespace coconut::clearing
