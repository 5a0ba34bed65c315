// Between the HTTP transport (http_server.cpp) and the API (api/router.cpp and its handlers, one file per
// resource): a request as the API sees it, the answer, and the router. Private to the daemon library.
#pragma once

#include <coconut/clearing/http.hpp>

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace coconut::clearing::http {

using PeerAddress = std::array<std::uint8_t, 16>;

// Views into the transport's parsed request, which outlives the request's handling (until `respond`
// has been called and the answer written); the API copies what it keeps beyond handle().
struct ApiRequest {
    std::string_view method;  // "GET", "POST", …
    std::string_view target;  // path and query, as sent
    std::string_view authorization;
    std::string_view body;
    PeerAddress peer{};  // the client's address (IPv4 as ::ffff:a.b.c.d)
};

// A file sent after an answer's body (a snapshot: clearing/include/coconut/clearing/snapshot.hpp):
// `bytes` bytes from offset 0 of `fd`, read in chunks as the client takes them. The descriptor is
// closed, and `done` called, once the answer is written or its connection is gone.
struct ResponseFile {
    ResponseFile(int fd_in, std::uint64_t bytes_in, std::function<void()> done_in) : fd(fd_in), bytes(bytes_in), done(std::move(done_in)) {}
    ~ResponseFile();
    ResponseFile(const ResponseFile&) = delete;
    ResponseFile& operator=(const ResponseFile&) = delete;
    int fd = -1;
    std::uint64_t bytes = 0;
    std::function<void()> done;
};

struct ApiResponse {
    unsigned status = 200;
    std::string_view content_type = "application/json";  // a constant
    std::string body;
    std::vector<std::pair<std::string, std::string>> headers;  // extra (Retry-After, WWW-Authenticate)
    std::shared_ptr<ResponseFile> file;                        // sent after `body` (Content-Length counts both)
};

// {"error":{"code":…,"message":…}} with `status`.
ApiResponse error_response(unsigned status, std::string_view code, std::string_view message);

// Routes and answers requests. handle() runs on an HTTP thread; `respond` is called exactly once, on
// that thread (reads) or on the ledger writer's thread (changes, after their durable commit).
class Api {
public:
    using Respond = std::function<void(ApiResponse)>;
    Api(Services services, const HttpOptions& options, HttpStats& stats);
    ~Api();
    void handle(const ApiRequest& request, Respond respond);

    struct State;

private:
    std::unique_ptr<State> state_;
};

}  // namespace coconut::clearing::http
