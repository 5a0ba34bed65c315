// Lost network messages between the terminals and the clearing: a loopback TCP proxy that forwards ISO 8583
// frames (2-byte length header, clearing/ISO8583.md §1) and loses a chosen share of them. TCP does not lose
// one message and carry on, so a lost frame takes its connection with it: the proxy drops the frame and
// closes both sides — the terminal sees the link fail with its requests unanswered (a lost request) or
// booked but unacknowledged (a lost answer), exactly what the upload's idempotency must survive.
// Over TLS the proxy cannot read the frames: it forwards TLS records (5-byte header, RFC 8446 §5.1) and
// loses application-data records instead — each carries one or more ISO 8583 frames, so a loss is again
// a frame lost with its connection. TLS 1.3 sends the handshake's encrypted messages (certificates,
// Finished, session tickets) as application-data records too, so a loss may also fail a handshake: the
// terminal retries as after any lost frame.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace coconut::cli {

class DropProxy {
public:
    enum class Framing { iso8583, tls_records };
    // Listens on 127.0.0.1 (any free port) and forwards to 127.0.0.1:upstream_port.
    DropProxy(std::uint16_t upstream_port, double drop_rate, std::uint64_t seed, Framing framing = Framing::iso8583);
    ~DropProxy();
    DropProxy(const DropProxy&) = delete;
    DropProxy& operator=(const DropProxy&) = delete;

    std::uint16_t port() const { return port_; }
    std::size_t dropped() const { return dropped_; }

private:
    void accept_loop();
    void serve(int client_fd);
    bool drop_now();

    std::uint16_t upstream_port_;
    double drop_rate_;
    Framing framing_;
    int listen_fd_ = -1;
    std::uint16_t port_ = 0;
    std::atomic<bool> stopping_{false};
    std::atomic<std::size_t> dropped_{0};
    std::mutex random_mutex_;
    std::mt19937_64 random_;
    std::thread acceptor_;
    std::mutex threads_mutex_;
    std::vector<std::thread> connections_;
};

}  // namespace coconut::cli
