#include "cardholder_api.hpp"

#include "errors.hpp"

#include <coconut/cos/card.hpp>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace coconut::cli {

namespace {

class Socket {
public:
    explicit Socket(int fd) : fd_(fd) {}
    ~Socket() {
        if (fd_ >= 0) ::close(fd_);
    }
    Socket(const Socket&) = delete;
    Socket& operator=(const Socket&) = delete;
    int fd() const { return fd_; }

private:
    int fd_;
};

std::string read_token(const fs::path& file) {
    std::ifstream in(file);
    std::string token;
    std::getline(in, token);
    return token;
}

}  // namespace

namespace {

// A connected socket to host:port (IPv4 or IPv6), or why not.
Result<int, std::string> connect_to(const std::string& host, std::uint16_t port) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* found = nullptr;
    if (const int rc = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found); rc != 0)
        return Unexpected<std::string>{fmt::format("cannot resolve {}: {}", host, ::gai_strerror(rc))};
    std::string why = "no address";
    for (const addrinfo* a = found; a != nullptr; a = a->ai_next) {
        const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) continue;
        const timeval timeout{10, 0};
        ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
        ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
        if (::connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
            ::freeaddrinfo(found);
            return fd;
        }
        why = std::strerror(errno);
        ::close(fd);
    }
    ::freeaddrinfo(found);
    return Unexpected<std::string>{fmt::format("cannot connect to the clearing's HTTP API on {}:{}: {}", host, port, why)};
}

}  // namespace

Result<HttpAnswer, std::string> http_exchange(const HttpRequest& request) {
    auto connected = connect_to(request.host, request.port);
    if (!connected) return Unexpected<std::string>{connected.error()};
    Socket socket(*connected);
    std::string text =
        fmt::format("{} {} HTTP/1.1\r\nHost: {}:{}\r\nConnection: close\r\n", request.method, request.target, request.host, request.port);
    if (!request.bearer_token.empty()) text += "Authorization: Bearer " + request.bearer_token + "\r\n";
    if (!request.body.empty()) text += fmt::format("Content-Type: application/json\r\nContent-Length: {}\r\n", request.body.size());
    text += "\r\n" + request.body;
    for (std::size_t sent = 0; sent < text.size();) {
        const ssize_t n = ::send(socket.fd(), text.data() + sent, text.size() - sent, MSG_NOSIGNAL);
        if (n <= 0) return Unexpected<std::string>{"the clearing's HTTP API closed the connection"};
        sent += static_cast<std::size_t>(n);
    }
    std::string response;
    char buffer[4096];
    ssize_t got = 0;
    while ((got = ::recv(socket.fd(), buffer, sizeof buffer, 0)) > 0) response.append(buffer, static_cast<std::size_t>(got));
    HttpAnswer answer;
    std::istringstream status_line(response.substr(0, response.find("\r\n")));
    std::string version;
    if (!(status_line >> version >> answer.status) || version.rfind("HTTP/1.", 0) != 0)
        return Unexpected<std::string>{fmt::format("{} {}: not an HTTP answer", request.method, request.target)};
    if (const auto head_end = response.find("\r\n\r\n"); head_end != std::string::npos) answer.body = response.substr(head_end + 4);
    return answer;
}

HttpAnswer http_get(std::uint16_t port, const std::string& target, const std::string& bearer_token) {
    return http_request(port, "GET", target, bearer_token, "");
}

HttpAnswer http_request(std::uint16_t port, const std::string& method, const std::string& target, const std::string& bearer_token,
                        const std::string& json_body) {
    HttpRequest request;
    request.port = port;
    request.method = method;
    request.target = target;
    request.bearer_token = bearer_token;
    request.body = json_body;
    auto answer = http_exchange(request);
    if (!answer) fail(exit_codes::tool_failed, answer.error());
    return *answer;
}

TokenCheck check_card_tokens(const WorldPaths& world, const Island& island, std::uint16_t http_port, std::size_t sample) {
    TokenCheck check;
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(world.tokens(), ec)) {
        ++check.token_files;
        if ((entry.status().permissions() & fs::perms::all) != (fs::perms::owner_read | fs::perms::owner_write))
            check.problems.push_back(entry.path().string() + " is not mode 0600");
    }
    if (check.token_files != island.cards.size())
        check.problems.push_back(fmt::format("{} token files for {} cards", check.token_files, island.cards.size()));
    if (island.cards.size() < 2) return check;
    sample = std::min(sample, island.cards.size());
    for (std::size_t i = 0; i < sample; ++i) {
        const std::size_t index = i * (island.cards.size() - 1) / std::max<std::size_t>(sample - 1, 1);
        const CardEntry& card = island.cards[index];
        const CardEntry& other = island.cards[(index + 1) % island.cards.size()];
        const std::string number = card.asn.substr(card.asn.size() - 16);
        const std::string target = "/v1/cards/" + number;
        auto image = cos::VirtualCard::open(card.image);
        if (!image) fail(exit_codes::bad_input, image.error().message);
        const std::int64_t on_card = image.value()->snapshot().balance_fen;

        const HttpAnswer own = http_get(http_port, target, read_token(card_token_file(world, card.asn)));
        std::int64_t served = -1;
        if (own.status == 200) {
            const auto body = nlohmann::json::parse(own.body, nullptr, false);
            if (!body.is_discarded() && body.contains("purse")) served = body["purse"].value("balance_fen", std::int64_t{-1});
        }
        if (own.status != 200 || served != on_card)
            check.problems.push_back(fmt::format("card {}: its own token got {} with purse balance {} (the card holds {})", number,
                                                 own.status, served, on_card));
        if (const HttpAnswer foreign = http_get(http_port, target, read_token(card_token_file(world, other.asn))); foreign.status != 404)
            check.problems.push_back(fmt::format("card {}: another card's token got {}, not 404", number, foreign.status));
        if (const HttpAnswer none = http_get(http_port, target, ""); none.status != 401)
            check.problems.push_back(fmt::format("card {}: no token got {}, not 401", number, none.status));
        ++check.cards_checked;
    }
    return check;
}

}  // namespace coconut::cli
