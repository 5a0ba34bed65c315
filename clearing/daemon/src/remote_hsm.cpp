// RemoteHsm: coconut-hsmd over the network (clearing.hpp).
#include <coconut/clearing/clearing.hpp>
#include <coconut/hsm/client.hpp>

#include "internal.hpp"

#include <boost/asio/post.hpp>

#include <string>

namespace coconut::clearing {

using detail::log_line;

namespace {

bool link_failure(hsm::Errc code) {
    switch (code) {
        case hsm::Errc::connection_failed:
        case hsm::Errc::timeout:
        case hsm::Errc::protocol_error:
        case hsm::Errc::frame_too_large:
        case hsm::Errc::bad_mac:
        case hsm::Errc::replayed_sequence:
        case hsm::Errc::closed:
        case hsm::Errc::server_busy:
        case hsm::Errc::unknown_client:
        case hsm::Errc::unknown_command: return true;
        default: return false;
    }
}

}  // namespace

struct RemoteHsm::State : std::enable_shared_from_this<State> {
    boost::asio::any_io_executor executor;
    hsm::wire::Endpoint endpoint;
    hsm::wire::ClientCredentials credentials;
    std::string label;
    std::shared_ptr<hsm::AsyncClient> client;
    std::shared_ptr<hsm::TacBatcher> batcher;
    std::uint64_t generation = 0;  // which link a failure belongs to
    bool closed = false;

    void connect() {
        client = hsm::AsyncClient::create(executor, credentials);
        batcher = hsm::TacBatcher::create(client, label);
        const std::uint64_t link = ++generation;
        client->async_connect(endpoint, [self = shared_from_this(), link](coconut::Status<hsm::Failure> connected) {
            if (!connected) {
                log_line("HSM " + self->endpoint.host + ":" + std::to_string(self->endpoint.port) +
                         " unreachable: " + connected.error().message);
                self->reset(link);
            }
        });
    }

    void reset(std::uint64_t link) {
        if (link != generation || !client) return;
        client->close();
        client.reset();
        batcher.reset();
    }

    // Wraps a handler so that a link failure drops the link (the next request reconnects). The
    // handler may run on the client's strand: reset on the verifier's executor.
    template <class T>
    std::function<void(hsm::Outcome<T>)> watch(std::function<void(hsm::Outcome<T>)> handler) {
        const std::uint64_t link = generation;
        return [state = shared_from_this(), link, handler = std::move(handler)](hsm::Outcome<T> outcome) {
            if (!outcome && link_failure(outcome.error().code)) {
                boost::asio::post(state->executor, [state, link] { state->reset(link); });
            }
            handler(std::move(outcome));
        };
    }

    // The link, connecting if needed; nullptr (handler already called) when shutting down.
    template <class T>
    bool ready(const std::function<void(hsm::Outcome<T>)>& handler) {
        if (closed) {
            handler(hsm::fail(hsm::Errc::closed, "the clearing daemon is shutting down"));
            return false;
        }
        if (!batcher) connect();
        return true;
    }
};

RemoteHsm::RemoteHsm(boost::asio::any_io_executor executor, hsm::wire::Endpoint endpoint,
                     hsm::wire::ClientCredentials credentials, std::string tac_master_label)
    : state_(std::make_shared<State>()) {
    state_->executor = std::move(executor);
    state_->endpoint = std::move(endpoint);
    state_->credentials = std::move(credentials);
    state_->label = std::move(tac_master_label);
}

RemoteHsm::~RemoteHsm() { close(); }

void RemoteHsm::close() {
    state_->closed = true;
    state_->reset(state_->generation);
}

void RemoteHsm::verify(const hsm::PurchaseTac& transaction, Handler handler) {
    if (!state_->ready(handler)) return;
    state_->batcher->submit(transaction, state_->watch(std::move(handler)));
}

void RemoteHsm::load_mac2(const hsm::LoadRequest& request, LoadHandler handler) {
    if (!state_->ready(handler)) return;
    state_->client->async_load_mac2(request, state_->watch(std::move(handler)));
}

void RemoteHsm::verify_load_tac(const hsm::LoadTac& load, VerdictHandler handler) {
    if (!state_->ready(handler)) return;
    state_->client->async_verify_load_tac(load, state_->watch(std::move(handler)));
}

void RemoteHsm::verify_internal_auth(const hsm::InternalAuth& auth, VerdictHandler handler) {
    if (!state_->ready(handler)) return;
    state_->client->async_verify_internal_auth(auth, state_->watch(std::move(handler)));
}

}  // namespace coconut::clearing
