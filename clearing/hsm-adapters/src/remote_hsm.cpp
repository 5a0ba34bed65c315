// RemoteHsm: coconut-hsmd over the network (hsm_adapters.hpp) — an hsm::Link (keep-alive, one retry on a
// fresh connection, circuit breaker, a few connections at once) with purchase TACs batched on it.
#include <coconut/clearing/hsm_adapters.hpp>
#include <coconut/clearing/log.hpp>
#include <coconut/core/assert.hpp>
#include <coconut/core/log.hpp>
#include <coconut/hsm/client.hpp>

#include <boost/asio/post.hpp>

#include <string>

namespace coconut::clearing {

namespace {

hsm::LinkOptions link_options(const RemoteHsmOptions& options, std::string tac_master_label) {
    hsm::LinkOptions link;
    link.client.connect_timeout = options.timeout;
    link.client.request_timeout = options.timeout;
    link.connections_max = options.connections_max;
    link.keepalive_interval = options.keepalive_interval;
    link.breaker_cooldown = options.breaker_cooldown;
    link.keepalive_tac_label = std::move(tac_master_label);
    link.log = [](const std::string& line) { detail::log_line(line, "hsm-link"); };
    return link;
}

}  // namespace

struct RemoteHsm::State {
    std::shared_ptr<hsm::Link> link;
    std::shared_ptr<hsm::TacBatcher> batcher;
    std::atomic<bool> closed{false};

    // False (handler called) when shutting down.
    template <class T>
    bool ready(const std::function<void(hsm::Outcome<T>)>& handler) const {
        if (!closed) return true;
        handler(hsm::fail(hsm::Errc::closed, "the clearing daemon is shutting down"));
        return false;
    }
};

RemoteHsm::RemoteHsm(boost::asio::any_io_executor executor, hsm::wire::Endpoint endpoint, hsm::wire::ClientCredentials credentials,
                     std::string tac_master_label, RemoteHsmOptions options)
    : RemoteHsm(std::move(executor), std::vector<hsm::wire::Endpoint>{std::move(endpoint)}, std::move(credentials),
                std::move(tac_master_label), options) {}

RemoteHsm::RemoteHsm(boost::asio::any_io_executor executor, std::vector<hsm::wire::Endpoint> endpoints,
                     hsm::wire::ClientCredentials credentials, std::string tac_master_label, RemoteHsmOptions options)
    : state_(std::make_shared<State>()) {
    state_->link =
        hsm::Link::create(std::move(executor), std::move(endpoints), std::move(credentials), link_options(options, tac_master_label));
    state_->batcher = hsm::TacBatcher::create(state_->link, std::move(tac_master_label));
    COCONUT_ASSERT(state_->link != nullptr && state_->batcher != nullptr);
}

RemoteHsm::~RemoteHsm() { close(); }

void RemoteHsm::close() {
    if (state_->closed.exchange(true)) return;
    state_->link->close();
}

const hsm::LinkStats& RemoteHsm::link_stats() const { return state_->link->stats(); }

void RemoteHsm::verify(const hsm::PurchaseTac& transaction, Handler handler) {
    if (!state_->ready(handler)) return;
    state_->batcher->submit(transaction, log::carry_request_id(std::move(handler)));
}

void RemoteHsm::load_mac2(const hsm::LoadRequest& request, LoadHandler handler) {
    if (!state_->ready(handler)) return;
    state_->link->async_load_mac2(request, log::carry_request_id(std::move(handler)));
}

void RemoteHsm::verify_load_tac(const hsm::LoadTac& load, VerdictHandler handler) {
    if (!state_->ready(handler)) return;
    state_->link->async_verify_load_tac(load, log::carry_request_id(std::move(handler)));
}

void RemoteHsm::verify_internal_auth(const hsm::InternalAuth& auth, VerdictHandler handler) {
    if (!state_->ready(handler)) return;
    state_->link->async_verify_internal_auth(auth, log::carry_request_id(std::move(handler)));
}

}  // namespace coconut::clearing
