// The engine's HSM services (engine.hpp TacVerifier, CardServices) over coconut-hsmd: LocalHsm in
// process (tests, tools), RemoteHsm over the network (the daemon) — coconut::clearing_hsm.
#pragma once

#include <coconut/clearing/engine.hpp>
#include <coconut/hsm/client.hpp>
#include <coconut/hsm/hsm.hpp>
#include <coconut/hsm/protocol.hpp>

#include <boost/asio/any_io_executor.hpp>

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>

namespace coconut::clearing {

// In process (tests, tools): the HSM's services called directly, one item per call.
class LocalHsm final : public TacVerifier, public CardServices {
public:
    LocalHsm(std::shared_ptr<const hsm::Hsm> hsm, std::string tac_master_label);
    void verify(const hsm::PurchaseTac& transaction, Handler handler) override;
    void load_mac2(const hsm::LoadRequest& request, LoadHandler handler) override;
    void verify_load_tac(const hsm::LoadTac& load, VerdictHandler handler) override;
    void verify_internal_auth(const hsm::InternalAuth& auth, VerdictHandler handler) override;

private:
    std::shared_ptr<const hsm::Hsm> hsm_;
    std::string label_;
};
using LocalTacVerifier = LocalHsm;  // its name before the online flows

// The HSM link's settings (coconut-clearingd serve --hsm-timeout-ms, --hsm-keepalive-s,
// --hsm-breaker-cooldown-ms, --hsm-connections; clearing/README.md "The HSM link").
struct RemoteHsmOptions {
    // No hello or no answer within this: the HSM hangs — the requests in flight fail (91) and the
    // circuit breaker opens. A full TAC batch takes ~5 ms; 3 s stays well inside a terminal's 10 s
    // response timeout, so the terminal hears 91 rather than nothing.
    std::chrono::milliseconds timeout{3'000};
    // A connection quiet this long gets a keep-alive; below the HSM's 60 s idle timeout. Zero: none.
    std::chrono::milliseconds keepalive_interval{20'000};
    // How long requests fail at once (91) after a timeout before one probe is sent.
    std::chrono::milliseconds breaker_cooldown{2'000};
    // Connections to the HSM at once: TAC batches verified concurrently (the HSM serves one request
    // per connection at a time).
    std::size_t connections_max = 4;
};

// coconut-hsmd over the network: an hsm::Link (client.hpp — keep-alive, one retry on a fresh
// connection when the HSM closed or broke one, circuit breaker after a timeout, up to connections_max
// connections; given several HSMs on copies of one store, the first that works, moving on to the next
// when it is refused or hangs, with the requests it failed) with purchase TACs through hsm::TacBatcher (full batches, bounded delay, sent without
// waiting for the previous ones) and the online card services one request each. Every failure (a
// timeout, the breaker open, the HSM unreachable) reaches the handler, and the engine answers 91.
class RemoteHsm final : public TacVerifier, public CardServices {
public:
    RemoteHsm(boost::asio::any_io_executor executor, hsm::wire::Endpoint endpoint, hsm::wire::ClientCredentials credentials,
              std::string tac_master_label, RemoteHsmOptions options = {});
    // 1 … hsm::wire::max_endpoints HSMs (hsm::wire::parse_endpoints), in the order of preference.
    RemoteHsm(boost::asio::any_io_executor executor, std::vector<hsm::wire::Endpoint> endpoints, hsm::wire::ClientCredentials credentials,
              std::string tac_master_label, RemoteHsmOptions options = {});
    ~RemoteHsm() override;
    void verify(const hsm::PurchaseTac& transaction, Handler handler) override;
    void load_mac2(const hsm::LoadRequest& request, LoadHandler handler) override;
    void verify_load_tac(const hsm::LoadTac& load, VerdictHandler handler) override;
    void verify_internal_auth(const hsm::InternalAuth& auth, VerdictHandler handler) override;
    // Closes the link (shutdown).
    void close();
    // The link's breaker state and counters (for /metrics).
    const hsm::LinkStats& link_stats() const;

    struct State;

private:
    std::shared_ptr<State> state_;
};
using RemoteTacVerifier = RemoteHsm;  // its name before the online flows

}  // namespace coconut::clearing
