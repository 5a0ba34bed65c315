// The virtual-ICC side of vsmartcard's vpcd protocol (docs/PCSC.md §3): a TCP client to the vpcd driver inside
// pcscd. vpcd always speaks first; every message is a 2-byte big-endian length and that many bytes.
//
//   1-byte payloads are control messages:  00 power off, 01 power on, 02 reset (no reply),
//                                          04 get ATR (reply: the ATR)
//   anything else is a command APDU        (reply: the response APDU)
//
// Latency rules (docs/PCSC.md §5): TCP_NODELAY on the socket, TCP_QUICKACK re-armed before EVERY recv (Linux
// clears it), length and payload in ONE send. Without them each APDU costs ~44 ms instead of ~0.1 ms.
#pragma once

#include <coconut/core/bytes.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

namespace coconut::vcard {

// Largest vpcd message payload (the length prefix is 16 bits).
inline constexpr std::size_t vpcd_payload_max = 0xFFFF;

enum class VpcdControl : std::uint8_t { power_off = 0x00, power_on = 0x01, reset = 0x02, get_atr = 0x04 };

// A stop request every blocking wait of the link also watches (an eventfd: once signalled it stays
// readable, so every thread sees it). Signal-safe to request.
class StopSignal {
public:
    StopSignal();
    ~StopSignal();
    StopSignal(const StopSignal&) = delete;
    StopSignal& operator=(const StopSignal&) = delete;

    void request() noexcept;
    bool requested() const noexcept { return requested_.load(std::memory_order_acquire); }
    int fd() const noexcept { return fd_; }
    // Sleeps up to `duration`; returns false if the stop was requested meanwhile.
    bool sleep_for(std::chrono::milliseconds duration) const;

private:
    int fd_ = -1;
    std::atomic<bool> requested_{false};
};

// One TCP connection to vpcd.
class VpcdLink {
public:
    enum class Outcome : std::uint8_t { ok, closed, stopped, error };

    VpcdLink() = default;
    ~VpcdLink();
    VpcdLink(const VpcdLink&) = delete;
    VpcdLink& operator=(const VpcdLink&) = delete;

    // Connects (non-blocking connect, bounded by `timeout`, abandoned on stop). On failure returns the
    // reason (e.g. "Connection refused") and the link stays closed.
    std::optional<std::string> connect(const std::string& host, std::uint16_t port, const StopSignal& stop,
                                       std::chrono::milliseconds timeout);
    // Receives one message into `payload`. closed = vpcd closed the connection (pcscd stopped).
    Outcome receive(Bytes& payload, const StopSignal& stop);
    // Sends length + payload in one write.
    Outcome send(ByteView payload);
    void close() noexcept;
    bool is_open() const noexcept { return fd_ >= 0; }
    const std::string& last_error() const noexcept { return last_error_; }

private:
    Outcome read_exact(std::uint8_t* out, std::size_t size, const StopSignal& stop);
    int fd_ = -1;
    std::string last_error_;
};

}  // namespace coconut::vcard
