// The ISO 8583 server of the clearing daemon (coconut::clearing_server): the TCP / mutual-TLS
// listener that frames requests for the engine (engine.hpp) and writes its answers; the writer's CPU
// (scheduling.hpp). clearing/README.md describes ports, options and limits.
#pragma once

#include <coconut/clearing/engine.hpp>
#include <coconut/clearing/response_counts.hpp>
#include <coconut/iso8583/iso8583.hpp>

#include <boost/asio/io_context.hpp>

namespace boost::asio::ssl {
class context;  // coconut/tls/tls.hpp makes one (ServerOptions::tls)
}

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

namespace coconut::clearing {

// After a parse error: the response MTI, 11 and 41 read from the raw message as far as it parses, so
// the terminal can match a 30 to its request. nullopt when they cannot be read (close the connection).
std::optional<iso8583::Message> format_error_response(ByteView message);

// ---- server --------------------------------------------------------------------------------------------

// Connections served at once: ~2,000 terminals per province connect in waves, not all at once; beyond
// this a new connection is closed at once (the terminal retries) rather than exhausting descriptors.
inline constexpr std::size_t connections_max_default = 1024;
// Requests of one connection being processed at once (the terminal's many-in-flight upload window);
// beyond it the connection stops reading until answers go out, so one terminal cannot fill the writer.
inline constexpr std::size_t in_flight_per_connection_max_default = 64;
// A connection that sends nothing for this long is closed (terminals echo every 60 s when idle).
inline constexpr std::chrono::seconds read_idle_timeout_default{120};
// Once a frame has begun, the rest must arrive within this (a stalled or malicious sender).
inline constexpr std::chrono::seconds frame_timeout_default{10};
// Graceful shutdown waits at most this long for answers in flight.
inline constexpr std::chrono::seconds drain_timeout_default{30};
// A TLS handshake must complete within this (two round trips and two signatures; a terminal on a slow
// mobile link needs well under a second): a peer that opens connections and stalls them is closed.
inline constexpr std::chrono::seconds handshake_timeout_default{10};
// Connections one client address may hold at once, before anything is authenticated: a quarter of the
// total, generous for a carrier's gateway or a clinic's NAT with many terminals behind one address,
// yet one peer cannot take every slot.
inline constexpr std::size_t connections_per_address_default = 256;
// Connections one terminal (its certificate's terminal id) may hold at once: a terminal uses one, two
// while it reconnects.
inline constexpr std::size_t connections_per_terminal_default = 4;
// A connection whose terminal has not signed on within this is closed (an echo or anything else before
// sign-on does not keep it): a terminal signs on first, within a round trip of connecting. Not applied
// when the engine does not require a sign-on (EngineOptions::require_sign_on false): its terminals
// never sign on.
inline constexpr std::chrono::seconds sign_on_timeout_default{5};

struct ServerOptions {
    std::string host = "127.0.0.1";
    std::uint16_t port = 0;  // 0: an ephemeral port (Server::port() tells which)
    std::size_t connections_max = connections_max_default;
    std::size_t in_flight_per_connection_max = in_flight_per_connection_max_default;
    std::chrono::milliseconds read_idle_timeout = read_idle_timeout_default;
    std::chrono::milliseconds frame_timeout = frame_timeout_default;
    // Mutual TLS for terminals (clearing/README.md "TLS for terminals"): a server context from
    // coconut::tls::make_server_context. Set: every connection completes a handshake with a terminal
    // certificate chained to the island CA within handshake_timeout, else it is closed and counted in
    // tls_handshake_failures; the certificate's terminal id is the session's authenticated_terminal_id.
    // Unset: plain TCP (`serve --insecure-terminals`).
    std::shared_ptr<boost::asio::ssl::context> tls;
    std::chrono::milliseconds handshake_timeout = handshake_timeout_default;
    std::size_t connections_per_address = connections_per_address_default;
    std::size_t connections_per_terminal = connections_per_terminal_default;  // TLS: per certificate
    std::chrono::milliseconds sign_on_timeout = sign_on_timeout_default;      // 0, or no sign-on required: no deadline
};

struct ServerStats {
    std::atomic<std::uint64_t> connections_accepted{0};
    std::atomic<std::uint64_t> connections_refused{0};               // above connections_max
    std::atomic<std::uint64_t> connections_refused_per_address{0};   // above connections_per_address
    std::atomic<std::uint64_t> connections_refused_per_terminal{0};  // closed after the handshake: above connections_per_terminal
    std::atomic<std::uint64_t> sign_on_timeouts{0};                  // closed: no sign-on within sign_on_timeout
    std::atomic<std::uint64_t> accept_pauses{0};                     // accept waited: out of descriptors or memory
    std::atomic<std::uint64_t> format_errors{0};                     // answered 30
    std::atomic<std::uint64_t> closed_bad_frame{0};                  // closed: unreadable frame
    std::atomic<std::uint64_t> timeouts{0};
    std::atomic<std::uint64_t> tls_handshakes_full{0};     // with a certificate verification
    std::atomic<std::uint64_t> tls_handshakes_resumed{0};  // a session ticket, no certificate sent
    std::atomic<std::uint64_t> tls_handshake_failures{0};  // closed: no / unverifiable / non-terminal certificate, timeout
    ResponseCounts responses;                              // every answer sent, by response MTI and code
};

// The ISO 8583 listener: one object per connection, 2-byte length framing, bounded frames, timeouts
// on every read, a bounded window of requests per connection. Runs on `io`.
class Server {
public:
    // Binds and listens; throws std::system_error when the address cannot be bound (start-up).
    Server(boost::asio::io_context& io, Engine& engine, ServerOptions options);
    ~Server();
    std::uint16_t port() const;
    // Stops accepting and reading; connections close once their answers in flight are written.
    // `done` runs when every connection has closed.
    void shutdown(std::function<void()> done);
    const ServerStats& stats() const;

    struct State;

private:
    std::shared_ptr<State> state_;
};

}  // namespace coconut::clearing
