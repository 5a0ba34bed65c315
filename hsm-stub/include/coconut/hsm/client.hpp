// Client of coconut-hsmd (coconut::hsm_client): asynchronous on Boost.Asio, synchronous on top of it,
// and a batcher that turns single TAC verifications into full batches.
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

#include <chrono>
#include <functional>
#include <memory>

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
class Client {
public:
    static Outcome<std::unique_ptr<Client>> connect(const wire::Endpoint& endpoint, wire::ClientCredentials credentials,
                                                    ClientOptions options = {});
    ~Client();

    Outcome<KeyInfo> key_info(const KeyRef& key);
    Outcome<CardKeySet> derive_card_keys(const wire::DeriveCardKeys& request);
    Outcome<ExportedKey> export_issuer_key(const wire::ExportIssuerKey& request);
    Outcome<std::vector<Verdict>> verify_purchase_tacs(std::string_view label, std::span<const PurchaseTac> batch);
    Outcome<Verdict> verify_load_tac(const LoadTac& request);
    Outcome<LoadAnswer> load_mac2(const LoadRequest& request);
    Outcome<Verdict> verify_internal_auth(const InternalAuth& request);
    Outcome<Bytes> call(wire::Command command, Bytes payload);
    // The island CA (ca.hpp): its certificate, and a certificate signed for a request (both DER).
    Outcome<Bytes> ca_certificate();
    Outcome<Bytes> sign_certificate(const CertificateSigning& signing);

    struct State;

private:
    explicit Client(std::unique_ptr<State> state);
    std::unique_ptr<State> state_;
};

// Collects single purchase TAC verifications into batches: a batch is sent when it holds
// `batch_items` transactions or `max_delay` after its first one, whichever comes first. Runs on the
// AsyncClient's executor; submit() may be called from any thread.
class TacBatcher : public std::enable_shared_from_this<TacBatcher> {
public:
    static std::shared_ptr<TacBatcher> create(std::shared_ptr<AsyncClient> client, std::string tac_master_label,
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
