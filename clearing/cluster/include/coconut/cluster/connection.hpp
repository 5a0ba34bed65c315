// A connection to a NATS cluster with its JetStream context: the transport the clearing cluster's
// journal stream and leadership lease run on (clearing/cluster/README.md, docs/DESIGN.md §10).
//
// Rules
//   - Every URL of NatsOptions is a seed server; the client connects to one of them and, when that
//     server goes away, reconnects to any server of the cluster for ever (reconnect_wait between
//     rounds). Requests made while disconnected fail with `unavailable` after their own timeout.
//   - TLS is on when `ca` is set: the servers' certificates must chain to it. `certificate` and
//     `private_key` (both or neither) are this node's client certificate for servers that verify it.
//   - `user`/`password` are the node's NATS identity; the servers' permissions decide what it may
//     publish (the README's "Permissions").
//   - A Connection may be used by several threads at once (libnats is thread-safe); the objects made
//     over it (JournalReader, Lease) by one thread at a time each.
//   - The NATS library's process-wide state is set up once, by the first connect, and left for the
//     process's exit to release (the library frees it at unload).
//
// Errors: every expected failure is an Error (code + message naming what failed). `unavailable` is
// transient (no server, no JetStream leader yet, a timeout): retry later. The others are not.
#pragma once

#include <coconut/core/result.hpp>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

// The libnats handles, so this header does not pull <nats/nats.h> into every includer.
struct __natsConnection;
struct __jsCtx;

namespace coconut::cluster {

enum class ErrorCode {
    invalid_options,    // the options cannot work (no URL, a certificate without its key, an unreadable file)
    unavailable,        // no server answered in time, no JetStream leader (yet), not connected: transient
    permission_denied,  // the server refused this identity the operation
    mismatch,           // an existing stream or bucket has settings other than the ones asked for
    not_found,          // the stream, consumer or message asked for does not exist
    other,              // anything else the server or the library reported (the message says what)
};
const char* to_string(ErrorCode code);

struct Error {
    ErrorCode code = ErrorCode::other;
    std::string message;
};

struct NatsOptions {
    std::vector<std::string> urls;  // "nats://host:port" or "tls://host:port", at least one
    std::string user;               // empty: no user/password authentication
    std::string password;
    std::filesystem::path ca;           // set: TLS, servers verified against this CA (PEM)
    std::filesystem::path certificate;  // this node's client certificate chain (PEM), with private_key
    std::filesystem::path private_key;
    std::string name;  // the connection's name in the servers' monitoring (e.g. the node name)
    // Connect timeout, and the default wait for a JetStream request's answer.
    std::chrono::milliseconds timeout{2000};
    // Wait between two rounds of reconnect attempts over all servers. Short, so a client whose server
    // died is back on another within about this (plus the TLS handshake).
    std::chrono::milliseconds reconnect_wait{250};
};

class Connection {
public:
    // Connects to one of options.urls (each tried once; the first connect does not retry). Afterwards
    // the connection reconnects by itself for as long as the object lives.
    static Result<Connection, Error> connect(const NatsOptions& options);

    // Copies share one connection, which closes when the last copy is gone (readers and leases made
    // over it keep a copy); outstanding requests then fail.
    Connection(const Connection&) = default;
    Connection(Connection&&) noexcept = default;
    Connection& operator=(const Connection&) = default;
    Connection& operator=(Connection&&) noexcept = default;
    ~Connection() = default;

    // The URL of the server currently connected to ("" while reconnecting).
    std::string connected_url() const;
    // How many "Permissions Violation" errors the servers sent on this connection so far (a refused
    // publish is not answered, only reported this way).
    std::uint64_t permission_violations() const;
    std::string last_permission_violation() const;
    std::chrono::milliseconds timeout() const;

    // For this library's own sources: the libnats handles (owned by this object).
    __natsConnection* native() const;
    __jsCtx* jetstream() const;

    struct State;  // in the source: handles and the error handler's counters (a stable address)

private:
    explicit Connection(std::shared_ptr<State> state);
    std::shared_ptr<State> state_;
};

// Succeeds once the cluster's JetStream answers an account request (a meta leader exists); otherwise
// `unavailable` after `wait` (polled every 100 ms). For start-up and tests.
Status<Error> wait_for_jetstream(Connection& connection, std::chrono::milliseconds wait);

}  // namespace coconut::cluster
