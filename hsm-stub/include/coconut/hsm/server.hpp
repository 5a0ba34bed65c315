// The network face of the HSM (coconut-hsmd serve): a Boost.Asio TCP server speaking protocol.hpp.
//
//   boost::asio::io_context io;
//   coconut::hsm::Server server(io, store, *audit, {.listen = {"127.0.0.1", 7501}});
//   auto port = server.start();          // bound and listening when this returns
//   run io on N threads; server.stop() closes the acceptor and every connection.
//
// One object per connection, all of its handlers on one strand. A connection is closed — with a
// best-effort fatal notice — on: a frame longer than max_frame_bytes, a frame that does not parse, an
// unknown client, a client id that changes mid-connection, a bad MAC, a sequence number that is not
// greater than the previous one, an unknown command, an idle or slow peer (timeouts below). None of
// these touches any other connection. Request-level errors (unknown key, bad field, not permitted) are
// answered with an authenticated error response and the connection stays open.
//
// Admission, in this order (PROTOCOL.md, "Connection limits"):
//   1. a peer whose address is not in `allow` is closed at once, without a hello;
//   2. a peer whose address already holds max_connections_per_address unauthenticated connections, or
//      arriving when max_connections are open, gets a server_busy notice and is closed;
//   3. the first request that authenticates moves the connection from its address's count to its
//      client id's: a client holding max_connections_per_client gets a server_busy notice.
// A connection is "authenticated" once one request's MAC has verified. Closures and refusals before
// that are counted in a RefusalTally (audit.hpp) and written as one audit line per
// refusal_audit_interval; closures after it are one audit line each.
// Accepting backs off (core::AcceptBackoff) when the process runs out of descriptors.
#pragma once

#include <coconut/core/address_list.hpp>
#include <coconut/hsm/audit.hpp>
#include <coconut/hsm/hsm.hpp>
#include <coconut/hsm/metrics.hpp>
#include <coconut/hsm/protocol.hpp>

#include <boost/asio/io_context.hpp>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>

namespace coconut::hsm {

struct ServerConfig {
    wire::Endpoint listen{"127.0.0.1", wire::default_port};
    // 256 connections: the clearing daemon, load service and issuance tool use a few each; 256 covers a
    // load test of 100+ clients while bounding memory (≤ 2 × 64 KiB buffers per connection ≈ 32 MiB).
    std::size_t max_connections = 256;
    // Unauthenticated connections one address may hold at once. Half the total: one address (a flood,
    // a broken client) can never take every slot, and 128 still covers a load test of 100 clients from
    // one host. Peers reach the HSM through `allow` only, so this is a second line.
    std::size_t max_connections_per_address = 128;
    // Authenticated connections one client id may hold at once (half the total, for the same reason).
    std::size_t max_connections_per_client = 128;
    // Who may connect at all. Loopback by default: the HSM serves the clearing daemon and the issuance
    // tools on the same host unless the operator names other hosts.
    core::AddressList allow = core::AddressList::loopback();
    // Pre-authentication refusals are written as one audit line per this interval (and at stop()).
    std::chrono::milliseconds refusal_audit_interval{60'000};
    // A connection that sends nothing for this long is closed (clients reconnect on demand).
    std::chrono::milliseconds idle_timeout{60'000};
    // Once a frame has started, all of it must arrive within this (slow-loris guard).
    std::chrono::milliseconds frame_timeout{5'000};
    // A response (or notice) that the peer does not read within this is abandoned with the connection.
    std::chrono::milliseconds write_timeout{5'000};
};

class Server {
public:
    Server(boost::asio::io_context& io, std::shared_ptr<const KeyStore> store, AuditLog& audit, ServerConfig config);
    ~Server();
    Server(const Server&) = delete;
    Server& operator=(const Server&) = delete;

    // Binds and listens; returns the bound port (useful with port 0). io_error if the address is in use.
    Outcome<std::uint16_t> start();
    // Stops accepting and closes every connection (their handlers complete with operation_aborted).
    void stop();
    // Serves later requests from `store` (SIGHUP after a ceremony). Connections already open keep their
    // client's key until they close.
    void reload(std::shared_ptr<const KeyStore> store);

    std::size_t connection_count() const;
    // What the connections count (requests by command and outcome, latencies, batch sizes): /metrics.
    std::shared_ptr<const ServerMetrics> metrics() const;
    // The generation of the store requests are served from now (after the last reload).
    std::uint64_t store_generation() const;

    // Counters since start(), for logs and tests.
    struct Stats {
        std::uint64_t refused_not_allowed = 0;  // address not in ServerConfig::allow
        std::uint64_t refused_per_address = 0;  // max_connections_per_address
        std::uint64_t refused_total = 0;        // max_connections
        std::uint64_t refused_per_client = 0;   // max_connections_per_client
        std::uint64_t accept_exhausted = 0;     // accepts that failed for lack of descriptors (then waited)
    };
    Stats stats() const;

    struct Shared;

private:
    std::shared_ptr<Shared> shared_;
};

}  // namespace coconut::hsm
