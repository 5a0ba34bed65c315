#include "vpcd_link.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <system_error>

namespace coconut::vcard {

namespace {

std::string errno_text(int error) { return std::error_code(error, std::generic_category()).message(); }

// Waits until `fd` has `events` or the stop signal fires. Returns 1 ready, 0 timeout, -1 stopped/error.
int wait_fd(int fd, short events, const StopSignal& stop, int timeout_ms) {
    pollfd fds[2] = {{fd, events, 0}, {stop.fd(), POLLIN, 0}};
    for (;;) {
        const int n = ::poll(fds, 2, timeout_ms);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return -1;
        if (n == 0) return 0;
        if (fds[1].revents != 0) return -1;
        return 1;
    }
}

}  // namespace

// ---- StopSignal -------------------------------------------------------------------------------

StopSignal::StopSignal() : fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
    if (fd_ < 0) throw std::runtime_error("eventfd: " + errno_text(errno));
}

StopSignal::~StopSignal() { ::close(fd_); }

void StopSignal::request() noexcept {
    requested_.store(true, std::memory_order_release);
    const std::uint64_t one = 1;
    [[maybe_unused]] auto written = ::write(fd_, &one, sizeof one);
}

bool StopSignal::sleep_for(std::chrono::milliseconds duration) const {
    pollfd fd{fd_, POLLIN, 0};
    const auto deadline = std::chrono::steady_clock::now() + duration;
    while (!requested()) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) return true;
        ::poll(&fd, 1, static_cast<int>(left.count()));
    }
    return false;
}

// ---- VpcdLink ---------------------------------------------------------------------------------

VpcdLink::~VpcdLink() { close(); }

void VpcdLink::close() noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
}

std::optional<std::string> VpcdLink::connect(const std::string& host, std::uint16_t port, const StopSignal& stop,
                                             std::chrono::milliseconds timeout) {
    close();
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* found = nullptr;
    const std::string service = std::to_string(port);
    if (const int rc = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &found); rc != 0) {
        return std::string("cannot resolve ") + host + ": " + ::gai_strerror(rc);
    }
    std::string failure = "no address";
    for (addrinfo* address = found; address != nullptr; address = address->ai_next) {
        const int fd = ::socket(address->ai_family, address->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, address->ai_protocol);
        if (fd < 0) {
            failure = "socket: " + errno_text(errno);
            continue;
        }
        int result = ::connect(fd, address->ai_addr, address->ai_addrlen);
        if (result < 0 && errno == EINPROGRESS) {
            const int ready = wait_fd(fd, POLLOUT, stop, static_cast<int>(timeout.count()));
            int so_error = ETIMEDOUT;
            socklen_t length = sizeof so_error;
            if (ready == 1) ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &length);
            if (ready < 0) so_error = ECANCELED;
            errno = so_error;
            result = so_error == 0 ? 0 : -1;
        }
        if (result < 0) {
            failure = errno_text(errno);
            ::close(fd);
            continue;
        }
        // Back to blocking mode: every read is preceded by poll() on the stop signal anyway.
        ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
        const int on = 1;
        ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
        fd_ = fd;
        break;
    }
    ::freeaddrinfo(found);
    if (fd_ < 0) return failure;
    return std::nullopt;
}

VpcdLink::Outcome VpcdLink::read_exact(std::uint8_t* out, std::size_t size, const StopSignal& stop) {
    std::size_t done = 0;
    while (done < size) {
        const int ready = wait_fd(fd_, POLLIN, stop, -1);
        if (ready < 0) return stop.requested() ? Outcome::stopped : Outcome::error;
        // Linux drops out of quick-ack mode after a while; re-arm it before every read or vpcd's split
        // length/payload writes meet a 40 ms delayed ACK (docs/PCSC.md §5).
        const int on = 1;
        ::setsockopt(fd_, IPPROTO_TCP, TCP_QUICKACK, &on, sizeof on);
        const ssize_t n = ::recv(fd_, out + done, size - done, 0);
        if (n == 0) return Outcome::closed;
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            last_error_ = errno_text(errno);
            return errno == ECONNRESET ? Outcome::closed : Outcome::error;
        }
        done += static_cast<std::size_t>(n);
    }
    return Outcome::ok;
}

VpcdLink::Outcome VpcdLink::receive(Bytes& payload, const StopSignal& stop) {
    std::uint8_t header[2];
    if (auto outcome = read_exact(header, sizeof header, stop); outcome != Outcome::ok) return outcome;
    const std::size_t length = (static_cast<std::size_t>(header[0]) << 8) | header[1];
    payload.resize(length);
    if (length == 0) return Outcome::ok;
    return read_exact(payload.data(), length, stop);
}

VpcdLink::Outcome VpcdLink::send(ByteView payload) {
    if (payload.size() > vpcd_payload_max) {
        last_error_ = "message longer than 65535 bytes";
        return Outcome::error;
    }
    // One buffer, one send: a separate 2-byte write would wait for an ACK under Nagle-like conditions.
    Bytes frame;
    frame.reserve(payload.size() + 2);
    frame.push_back(static_cast<std::uint8_t>(payload.size() >> 8));
    frame.push_back(static_cast<std::uint8_t>(payload.size() & 0xFF));
    frame.insert(frame.end(), payload.begin(), payload.end());
    std::size_t done = 0;
    while (done < frame.size()) {
        const ssize_t n = ::send(fd_, frame.data() + done, frame.size() - done, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            last_error_ = errno_text(errno);
            return (errno == EPIPE || errno == ECONNRESET) ? Outcome::closed : Outcome::error;
        }
        done += static_cast<std::size_t>(n);
    }
    return Outcome::ok;
}

}  // namespace coconut::vcard
