// The cardholder API of the running clearing (coconut-clearingd --http-listen), seen as a cardholder sees it:
// each card's token from its 0600 file in D/tokens, GET /v1/cards/{card number} with it.
//
//   - its own token: 200 and the purse balance the card itself holds (after the day's uploads);
//   - another card's token: 404 (the API never says whether the card exists);
//   - no token: 401.
#pragma once

#include "world.hpp"

#include <coconut/core/result.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace coconut::cli {

struct HttpAnswer {
    int status = 0;
    std::string body;
};

// One HTTP/1.1 request to host:port (Connection: close; bounded by a 10 s socket timeout); a JSON `body`
// (empty: none) goes with Content-Type application/json. An error names what failed (no connection, not
// an HTTP answer); the answer's status is the server's, whatever it is.
struct HttpRequest {
    std::string host = "127.0.0.1";  // a name or a numeric address
    std::uint16_t port = 0;
    std::string method = "GET";
    std::string target;
    std::string bearer_token;  // empty: no Authorization header
    std::string body;
};
Result<HttpAnswer, std::string> http_exchange(const HttpRequest& request);

// One HTTP/1.1 GET on 127.0.0.1:port (http_exchange; failing the command with tool_failed when there is no answer).
HttpAnswer http_get(std::uint16_t port, const std::string& target, const std::string& bearer_token);
// The same with any method and a JSON body (empty: none).
HttpAnswer http_request(std::uint16_t port, const std::string& method, const std::string& target, const std::string& bearer_token,
                        const std::string& json_body);

struct TokenCheck {
    std::size_t token_files = 0;    // files in D/tokens, every one 0600
    std::size_t cards_checked = 0;  // cards queried with their own and another card's token
    std::vector<std::string> problems;
    bool ok() const { return problems.empty() && cards_checked > 0; }
};

// Checks every token file's mode and `sample` cards (spread over the island) against the API.
TokenCheck check_card_tokens(const WorldPaths& world, const Island& island, std::uint16_t http_port, std::size_t sample);

}  // namespace coconut::cli
