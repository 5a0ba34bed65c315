#include "drop_proxy.hpp"

#include "errors.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>

namespace coconut::cli {

namespace {

// A TLS record: 5-byte header + at most 2^14 + 256 bytes of ciphertext (RFC 8446 §5.2); an ISO 8583 frame
// (2-byte length + at most 8192 bytes, iso8583::frame_size_max) is smaller.
constexpr std::size_t tls_header_bytes = 5;
constexpr std::size_t tls_record_max = tls_header_bytes + (1u << 14) + 256;
constexpr std::uint8_t tls_application_data = 23;
// poll() granularity: how soon a connection notices the proxy is stopping.
constexpr int poll_ms = 100;

int connect_loopback(std::uint16_t port) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
        if (fd >= 0) ::close(fd);
        return -1;
    }
    const int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

bool write_all(int fd, const std::uint8_t* data, std::size_t size) {
    while (size > 0) {
        const ssize_t n = ::send(fd, data, size, MSG_NOSIGNAL);
        if (n <= 0) return false;
        data += n;
        size -= static_cast<std::size_t>(n);
    }
    return true;
}

// Moves whole frames (or TLS records) from `buffer` to `to`; returns false when one is to be lost, a TLS
// record is malformed or a write fails.
template <class DropDecision>
bool forward_frames(std::vector<std::uint8_t>& buffer, int to, DropDecision drop, DropProxy::Framing framing) {
    const bool tls = framing == DropProxy::Framing::tls_records;
    const std::size_t header = tls ? tls_header_bytes : 2;
    while (buffer.size() >= header) {
        const std::size_t length = header + (static_cast<std::size_t>(buffer[header - 2]) << 8 | buffer[header - 1]);
        if (tls && length > tls_record_max) return false;
        if (buffer.size() < length) return true;
        if ((!tls || buffer[0] == tls_application_data) && drop()) return false;
        if (!write_all(to, buffer.data(), length)) return false;
        buffer.erase(buffer.begin(), buffer.begin() + static_cast<std::ptrdiff_t>(length));
    }
    return true;
}

}  // namespace

DropProxy::DropProxy(std::uint16_t upstream_port, double drop_rate, std::uint64_t seed, Framing framing)
    : upstream_port_(upstream_port), drop_rate_(drop_rate), framing_(framing), random_(seed) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t size = sizeof address;
    if (listen_fd_ < 0 || ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 || ::listen(listen_fd_, 64) != 0 ||
        ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&address), &size) != 0)
        fail(exit_codes::io_error, "the drop proxy cannot listen on 127.0.0.1");
    port_ = ntohs(address.sin_port);
    acceptor_ = std::thread([this] { accept_loop(); });
}

DropProxy::~DropProxy() {
    stopping_ = true;
    acceptor_.join();
    ::close(listen_fd_);
    std::lock_guard lock(threads_mutex_);
    for (auto& t : connections_) t.join();
}

bool DropProxy::drop_now() {
    std::lock_guard lock(random_mutex_);
    const bool drop = std::uniform_real_distribution<double>(0, 1)(random_) < drop_rate_;
    if (drop) ++dropped_;
    return drop;
}

void DropProxy::accept_loop() {
    while (!stopping_) {
        pollfd p{listen_fd_, POLLIN, 0};
        if (::poll(&p, 1, poll_ms) <= 0) continue;
        const int client = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (client < 0) continue;
        std::lock_guard lock(threads_mutex_);
        connections_.emplace_back([this, client] { serve(client); });
    }
}

void DropProxy::serve(int client_fd) {
    const int upstream_fd = connect_loopback(upstream_port_);
    if (upstream_fd < 0) {
        ::close(client_fd);  // the clearing is down: the terminal sees the connection close
        return;
    }
    std::vector<std::uint8_t> from_client, from_upstream;
    std::array<std::uint8_t, tls_record_max> chunk{};
    auto drop = [this] { return drop_now(); };
    bool open = true;
    while (open && !stopping_) {
        pollfd p[2] = {{client_fd, POLLIN, 0}, {upstream_fd, POLLIN, 0}};
        if (::poll(p, 2, poll_ms) <= 0) continue;
        for (int side = 0; side < 2 && open; ++side) {
            if ((p[side].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
            const ssize_t n = ::recv(p[side].fd, chunk.data(), chunk.size(), 0);
            if (n <= 0) {
                open = false;
                break;
            }
            auto& buffer = side == 0 ? from_client : from_upstream;
            buffer.insert(buffer.end(), chunk.begin(), chunk.begin() + n);
            open = forward_frames(buffer, side == 0 ? upstream_fd : client_fd, drop, framing_);
        }
    }
    ::close(client_fd);
    ::close(upstream_fd);
}

}  // namespace coconut::cli
