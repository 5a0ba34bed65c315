// Client of coconut-hsmd (coconut::hsm_client): asynchronous on Boost.Asio, synchronous on top of it,
// a link that rides through idle closes and a hung HSM (Link), and a batcher that turns single TAC
// verifications into full batches.
//
//   auto credentials = coconut::hsm::wire::read_client_credentials("clearing.key").value();
//   auto client = coconut::hsm::Client::connect({"127.0.0.1", 7501}, credentials);   // synchronous
//   auto verdicts = client.value()->verify_purchase_tacs("mk-tac", batch);
//
//   auto async = coconut::hsm::AsyncClient::create(io.get_executor(), credentials);   // asynchronous
//   async->async_connect(endpoint, [](Status<Failure> connected) { … });
//   async->async_verify_purchase_tacs("mk-tac", batch, [](Outcome<std::vector<Verdict>> verdicts) { … });
//
// Requests are pipelined on one connection (responses come back in order; requests made while
// async_connect is still under way wait for it, within max_outstanding); every handler is called
// exactly once, on the client's strand. A failure of the connection (timeout, bad response MAC, the
// server closing it) fails every outstanding request with that failure and leaves the client closed:
// create a new one to reconnect. Request-level errors (unknown key, not permitted …) fail only that request.
#pragma once

#include <coconut/hsm/ca.hpp>
#include <coconut/hsm/hsm.hpp>
#include <coconut/hsm/protocol.hpp>

#include <boost/asio/any_io_executor.hpp>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string_view>
#include <vector>

namespace coconut::hsm {

struct ClientOptions {
    std::chrono::milliseconds connect_timeout{5'000};
    // The oldest outstanding request must be answered within this; a full batch takes ~5 ms.
    std::chrono::milliseconds request_timeout{10'000};
    // Requests queued or in flight at once; beyond it a request fails at once with server_busy rather
    // than growing memory without bound (64 full TAC batches ≈ 3 MiB).
    std::size_t max_outstanding = 64;
};

class AsyncClient : public std::enable_shared_from_this<AsyncClient> {
public:
    template <class T>
    using Handler = std::function<void(Outcome<T>)>;

    static std::shared_ptr<AsyncClient> create(boost::asio::any_io_executor executor, wire::ClientCredentials credentials,
                                               ClientOptions options = {});
    ~AsyncClient();

    // Connects and reads the server's hello. connection_failed / timeout / a fatal notice (server_busy).
    void async_connect(const wire::Endpoint& endpoint, std::function<void(Status<Failure>)> handler);

    // A raw command: the response payload or the response's error.
    void async_call(wire::Command command, Bytes payload, Handler<Bytes> handler);

    void async_key_info(const KeyRef& key, Handler<KeyInfo> handler);
    void async_derive_card_keys(const wire::DeriveCardKeys& request, Handler<CardKeySet> handler);
    void async_export_issuer_key(const wire::ExportIssuerKey& request, Handler<ExportedKey> handler);
    // batch.items.size() ≤ max_batch_items (else batch_too_large without a round trip).
    void async_verify_purchase_tacs(const wire::PurchaseTacBatch& batch, Handler<std::vector<Verdict>> handler);
    void async_verify_load_tac(const LoadTac& request, Handler<Verdict> handler);
    void async_load_mac2(const LoadRequest& request, Handler<LoadAnswer> handler);
    void async_verify_internal_auth(const InternalAuth& request, Handler<Verdict> handler);

    // Closes the connection; outstanding handlers get Errc::closed.
    void close();
    boost::asio::any_io_executor get_executor() const;

    struct State;

private:
    AsyncClient() = default;
    std::shared_ptr<State> state_;
};

// Blocking client: one connection, its own io_context; not thread-safe (use one per thread).
//
// Given several endpoints (HSMs serving copies of one store, hsm-stub/README.md "Two HSMs"), connect()
// takes the first that answers its hello, and a request whose connection fails moves on: a connection
// the HSM closed (noticed before the request is written, or breaking under it) is opened again to the
// same HSM first, a refused or hung one to the next; the request is sent there if it was never sent
// or Link::retry_safe() allows it (sign-certificate is not sent twice: it fails, and the next request
// reconnects). It fails once every endpoint has failed it. With one endpoint a failed connection stays
// failed, as before: create a new client.
class Client {
public:
    static Outcome<std::unique_ptr<Client>> connect(const wire::Endpoint& endpoint, wire::ClientCredentials credentials,
                                                    ClientOptions options = {});
    // 1 … wire::max_endpoints endpoints (wire::parse_endpoints), in the order of preference.
    static Outcome<std::unique_ptr<Client>> connect(std::vector<wire::Endpoint> endpoints, wire::ClientCredentials credentials,
                                                    ClientOptions options = {});
    // The endpoint connected to (or last tried).
    const wire::Endpoint& endpoint() const;
    ~Client();

    Outcome<KeyInfo> key_info(const KeyRef& key);
    Outcome<CardKeySet> derive_card_keys(const wire::DeriveCardKeys& request);
    Outcome<ExportedKey> export_issuer_key(const wire::ExportIssuerKey& request);
    Outcome<std::vector<Verdict>> verify_purchase_tacs(std::string_view label, std::span<const PurchaseTac> batch);
    Outcome<Verdict> verify_load_tac(const LoadTac& request);
    Outcome<LoadAnswer> load_mac2(const LoadRequest& request);
    Outcome<Verdict> verify_internal_auth(const InternalAuth& request);
    // The MAC of APPLICATION BLOCK / UNBLOCK for one card (permission maintenance).
    Outcome<MaintenanceMac> maintenance_mac(const MaintenanceMacRequest& request);
    Outcome<Bytes> call(wire::Command command, Bytes payload);
    // The island CA (ca.hpp): its certificate, and a certificate signed for a request (both DER).
    Outcome<Bytes> ca_certificate();
    Outcome<Bytes> sign_certificate(const CertificateSigning& signing);

    struct State;

private:
    explicit Client(std::unique_ptr<State> state);
    std::unique_ptr<State> state_;
};

// ---- Link: connections to an HSM that ride through ------------------------------------------------
//
// A small pool of AsyncClient connections to one endpoint — or to the first that works of a list of
// HSMs serving copies of one sealed store (hsm-stub/README.md "Two HSMs") — opened on demand, with
// five rules:
//
// 1. Keep-alive. The HSM closes a connection on which no request started for its idle timeout (60 s,
//    PROTOCOL.md "What closes a connection"). A connection on which nothing was sent for
//    `keepalive_interval` gets the keep-alive request (an empty TAC batch: authenticated, answered
//    without cryptography, one audit line); only the oldest connection is kept so — an extra
//    connection quiet that long is closed by the link instead.
// 2. Retry once. A request whose connection the HSM closed or that broke (end of stream, reset, a
//    fatal notice, a failed write) is sent again, once, on a fresh connection — if its command is
//    retry_safe(). A timeout is never retried (rule 3), nor a connection that could not be opened.
// 3. Circuit breaker. A timeout (no answer within `client.request_timeout`, no hello within
//    `client.connect_timeout`: the HSM hangs) opens the breaker: every connection is closed, their
//    requests fail, and while the breaker is open every new request fails at once with
//    connection_failed ("the HSM link is open …") instead of waiting. `breaker_cooldown` after it
//    opened, one probe (the keep-alive request on a fresh connection, half-open) is sent; its answer
//    closes the breaker, its failure opens it for another cooldown.
// 4. Concurrency. The HSM serves the requests of one connection one after another; a request goes to
//    the connection with the fewest requests in flight, and a new connection is opened (up to
//    `connections_max`) when every one is busy — so up to connections_max TAC batches are verified at
//    once, each connection pipelining at most client.max_outstanding requests.
// 5. Several endpoints. All connections go to one endpoint, the first of the list at the start. When
//    it cannot be reached (refused, unresolvable, no hello, a fatal notice instead of the hello) or
//    hangs (a timeout), the link moves on to the next (after the last: the first), closes what it
//    still holds to the old one and sends the requests that failed there — and those in flight on
//    the connections it closed — to the new one: a request never sent (no connection) always, one
//    that was sent if retry_safe(). A request fails once every endpoint of the list has failed it
//    (if the last one hung, the breaker opens: rule 3). A connection that broke is still rule 2: it
//    is sent again on a fresh connection to the same HSM — a killed HSM then refuses, and this rule
//    moves on. The link stays on the endpoint that works (no return to the first while it does).
//    With one endpoint, rules 1–4 alone, as before.
//
// Every handler is called exactly once, on the link's strand.
struct LinkOptions {
    // Per connection: connect_timeout and request_timeout are the HSM's timeout (rule 3).
    ClientOptions client;
    // Connections at once (rule 4): the HSM verifies one batch per connection at a time; 4 keep its
    // I/O threads busy without taking many of its 256 connection slots.
    std::size_t connections_max = 4;
    // Rule 1; zero turns keep-alives off. 20 s: a third of the HSM's default idle timeout, so one late
    // or lost keep-alive still leaves room for the next.
    std::chrono::milliseconds keepalive_interval{20'000};
    // Rule 3: how long new requests fail at once before a probe is sent.
    std::chrono::milliseconds breaker_cooldown{2'000};
    // The TAC master label of the keep-alive and probe (an empty verify-purchase-tacs batch): the client
    // needs the permission tac. Empty: the keep-alive is off and the probe is the connection's hello.
    std::string keepalive_tac_label;
    // Told one line per breaker transition (opened, half-open probe failed, closed); on the link's strand.
    std::function<void(const std::string&)> log;
};

enum class BreakerState : std::uint8_t { closed = 0, open = 1, half_open = 2 };
std::string_view breaker_state_name(BreakerState state);  // "closed", "open", "half_open"

// Counters of a Link (read from any thread, e.g. for /metrics).
struct LinkStats {
    std::atomic<BreakerState> breaker{BreakerState::closed};
    std::atomic<std::uint64_t> breaker_opens{0};       // closed/half-open → open
    std::atomic<std::uint64_t> fast_failures{0};       // requests failed at once because the breaker was open
    std::atomic<std::uint64_t> timeouts{0};            // requests failed by a timeout (the HSM hangs)
    std::atomic<std::uint64_t> retries{0};             // requests sent again after their connection broke
    std::atomic<std::uint64_t> connections_opened{0};  // connections whose hello arrived
    std::atomic<std::uint64_t> keepalives{0};          // keep-alive requests sent
    std::atomic<std::uint64_t> probes{0};              // half-open probes sent
    std::atomic<std::uint64_t> failovers{0};           // rule 5: moves to the next endpoint
    std::atomic<std::uint64_t> moved{0};               // rule 5: requests sent to the next endpoint after theirs failed
    std::atomic<std::size_t> endpoint{0};              // rule 5: index in the list of the endpoint in use
};

class Link : public std::enable_shared_from_this<Link> {
public:
    template <class T>
    using Handler = std::function<void(Outcome<T>)>;

    static std::shared_ptr<Link> create(boost::asio::any_io_executor executor, wire::Endpoint endpoint, wire::ClientCredentials credentials,
                                        LinkOptions options = {});
    // Rule 5: 1 … wire::max_endpoints endpoints (wire::parse_endpoints), in the order of preference.
    static std::shared_ptr<Link> create(boost::asio::any_io_executor executor, std::vector<wire::Endpoint> endpoints,
                                        wire::ClientCredentials credentials, LinkOptions options = {});
    ~Link();

    // Whether a request may be sent twice (rule 2): its answer is a function of the request and the key
    // store alone and the HSM keeps no state a second execution would change (the audit log gets one
    // more line). True for key-info, the key derivations and exports, every verification, load-mac2 (a
    // derivation: MAC1 checked, MAC2 computed from the same fields — the same MAC2 twice; the load
    // itself is booked by the caller, never by the HSM) and ca-certificate; false for sign-certificate
    // (each signing issues a new certificate with a new random serial).
    static bool retry_safe(wire::Command command);

    // A raw command: the response payload or the response's error; the rules above apply.
    void async_call(wire::Command command, Bytes payload, Handler<Bytes> handler);
    // batch.items.size() ≤ max_batch_items (else batch_too_large without a round trip).
    void async_verify_purchase_tacs(const wire::PurchaseTacBatch& batch, Handler<std::vector<Verdict>> handler);
    void async_verify_load_tac(const LoadTac& request, Handler<Verdict> handler);
    void async_load_mac2(const LoadRequest& request, Handler<LoadAnswer> handler);
    void async_verify_internal_auth(const InternalAuth& request, Handler<Verdict> handler);

    // Closes every connection (outstanding handlers get Errc::closed) and stops keep-alives and probes;
    // later requests fail with Errc::closed.
    void close();
    boost::asio::any_io_executor get_executor() const;
    const LinkStats& stats() const;

    struct State;

private:
    Link() = default;
    std::shared_ptr<State> state_;
};

// Collects single purchase TAC verifications into batches: a batch is sent when it holds
// `batch_items` transactions or `max_delay` after its first one, whichever comes first, without
// waiting for the batches already sent (they are bounded by the client's max_outstanding, and over a
// Link verified concurrently). Runs on the client's (link's) executor; submit() may be called from any
// thread.
class TacBatcher : public std::enable_shared_from_this<TacBatcher> {
public:
    static std::shared_ptr<TacBatcher> create(std::shared_ptr<AsyncClient> client, std::string tac_master_label,
                                              std::size_t batch_items = max_batch_items,
                                              std::chrono::microseconds max_delay = std::chrono::milliseconds(2));
    static std::shared_ptr<TacBatcher> create(std::shared_ptr<Link> link, std::string tac_master_label,
                                              std::size_t batch_items = max_batch_items,
                                              std::chrono::microseconds max_delay = std::chrono::milliseconds(2));
    void submit(const PurchaseTac& transaction, std::function<void(Outcome<Verdict>)> handler);
    // Sends the partial batch now.
    void flush();

    struct State;

private:
    TacBatcher() = default;
    std::shared_ptr<State> state_;
};

}  // namespace coconut::hsm
