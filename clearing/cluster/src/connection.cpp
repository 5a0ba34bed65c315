// Connection: natsOptions → natsConnection → jsCtx, owned together; the error handler counts the
// servers' permission violations (a refused publish gets no answer, only this asynchronous error).
#include "nats_handles.hpp"

#include <coconut/cluster/connection.hpp>

#include <atomic>
#include <mutex>
#include <thread>

namespace coconut::cluster {

const char* to_string(ErrorCode code) {
    switch (code) {
        case ErrorCode::invalid_options: return "invalid options";
        case ErrorCode::unavailable: return "unavailable";
        case ErrorCode::permission_denied: return "permission denied";
        case ErrorCode::mismatch: return "mismatch";
        case ErrorCode::not_found: return "not found";
        case ErrorCode::other: return "error";
    }
    return "error";
}

namespace detail {

std::string describe(const std::string& what, natsStatus status, jsErrCode js_code) {
    std::string text = what + ": " + natsStatus_GetText(status);
    natsStatus last_status = NATS_OK;
    const char* last = nats_GetLastError(&last_status);
    if (last != nullptr && *last != '\0' && last_status == status) text += std::string(" (") + last + ")";
    if (js_code != 0) text += " [JetStream error " + std::to_string(static_cast<int>(js_code)) + "]";
    return text;
}

ErrorCode classify(natsStatus status, jsErrCode js_code) {
    switch (js_code) {
        case JSClusterNotAvailErr:
        case JSNotEnabledErr:      // also what a restarting server answers for a while
        case JSClusterNoPeersErr:  // fewer servers up than replicas asked for (one is restarting)
            return ErrorCode::unavailable;
        case JSStreamNotFoundErr:
        case JSConsumerNotFoundErr:
        case JSNoMessageFoundErr: return ErrorCode::not_found;
        default: break;
    }
    switch (status) {
        case NATS_TIMEOUT:
        case NATS_NO_RESPONDERS:
        case NATS_NO_SERVER:
        case NATS_CONNECTION_CLOSED:
        case NATS_CONNECTION_DISCONNECTED:
        case NATS_STALE_CONNECTION:
        case NATS_NOT_YET_CONNECTED: return ErrorCode::unavailable;
        case NATS_NOT_PERMITTED: return ErrorCode::permission_denied;
        case NATS_NOT_FOUND: return ErrorCode::not_found;
        default: return ErrorCode::other;
    }
}

jsOptions request_options(std::chrono::milliseconds wait) {
    jsOptions options;
    jsOptions_Init(&options);
    options.Wait = wait.count();
    return options;
}

}  // namespace detail

struct Connection::State {
    natsOptions* options = nullptr;
    natsConnection* connection = nullptr;
    jsCtx* jetstream = nullptr;
    std::chrono::milliseconds timeout{};
    std::atomic<std::uint64_t> permission_violations{0};
    mutable std::mutex mutex;
    std::string last_permission_violation;  // guarded by mutex

    ~State() {
        if (jetstream != nullptr) jsCtx_Destroy(jetstream);
        if (connection != nullptr) {
            natsConnection_Close(connection);
            natsConnection_Destroy(connection);
        }
        if (options != nullptr) natsOptions_Destroy(options);
    }
};

namespace {

// libnats' process-wide state (its timers and message delivery threads), set up once per process.
Status<Error> open_library_once() {
    static const natsStatus opened = nats_Open(-1);
    if (opened != NATS_OK) return Unexpected{detail::error_of("nats_Open", opened)};
    return Ok{};
}

// Called by libnats' thread for asynchronous errors: counts permission violations.
void on_async_error(natsConnection* connection, natsSubscription* /*subscription*/, natsStatus status, void* closure) {
    if (status != NATS_NOT_PERMITTED) return;
    auto* state = static_cast<Connection::State*>(closure);
    const char* text = nullptr;
    natsConnection_GetLastError(connection, &text);
    {
        std::lock_guard lock(state->mutex);
        state->last_permission_violation = text != nullptr ? text : "permissions violation";
    }
    state->permission_violations.fetch_add(1);
}

Status<Error> check_options(const NatsOptions& options) {
    if (options.urls.empty()) return Unexpected{Error{ErrorCode::invalid_options, "NATS: no server URL"}};
    if (options.certificate.empty() != options.private_key.empty()) {
        return Unexpected{Error{ErrorCode::invalid_options, "NATS: a client certificate needs its private key and vice versa"}};
    }
    if (!options.certificate.empty() && options.ca.empty()) {
        return Unexpected{Error{ErrorCode::invalid_options, "NATS: a client certificate without a CA (TLS is on only when a CA is set)"}};
    }
    return Ok{};
}

Status<Error> apply_tls(natsOptions* nats_options, const NatsOptions& options) {
    if (options.ca.empty()) return Ok{};
    natsStatus status = natsOptions_SetSecure(nats_options, true);
    if (status == NATS_OK) status = natsOptions_LoadCATrustedCertificates(nats_options, options.ca.c_str());
    if (status != NATS_OK) return Unexpected{Error{ErrorCode::invalid_options, detail::describe("NATS CA " + options.ca.string(), status)}};
    if (options.certificate.empty()) return Ok{};
    status = natsOptions_LoadCertificatesChain(nats_options, options.certificate.c_str(), options.private_key.c_str());
    if (status != NATS_OK) {
        return Unexpected{
            Error{ErrorCode::invalid_options, detail::describe("NATS client certificate " + options.certificate.string(), status)}};
    }
    return Ok{};
}

Status<Error> apply_options(Connection::State& state, const NatsOptions& options) {
    std::vector<const char*> urls;
    for (const auto& url : options.urls) urls.push_back(url.c_str());
    natsOptions* nats_options = state.options;
    natsStatus status = natsOptions_SetServers(nats_options, urls.data(), static_cast<int>(urls.size()));
    if (status == NATS_OK && !options.user.empty())
        status = natsOptions_SetUserInfo(nats_options, options.user.c_str(), options.password.c_str());
    if (status == NATS_OK && !options.name.empty()) status = natsOptions_SetName(nats_options, options.name.c_str());
    if (status == NATS_OK) status = natsOptions_SetTimeout(nats_options, options.timeout.count());
    if (status == NATS_OK) status = natsOptions_SetMaxReconnect(nats_options, -1);  // for ever
    if (status == NATS_OK) status = natsOptions_SetReconnectWait(nats_options, options.reconnect_wait.count());
    if (status == NATS_OK) status = natsOptions_SetErrorHandler(nats_options, on_async_error, &state);
    if (status != NATS_OK) return Unexpected{Error{ErrorCode::invalid_options, detail::describe("NATS options", status)}};
    return apply_tls(nats_options, options);
}

}  // namespace

Result<Connection, Error> Connection::connect(const NatsOptions& options) {
    if (auto checked = check_options(options); !checked) return Unexpected{checked.error()};
    if (auto opened = open_library_once(); !opened) return Unexpected{opened.error()};
    auto state = std::make_shared<State>();
    state->timeout = options.timeout;
    natsStatus status = natsOptions_Create(&state->options);
    if (status != NATS_OK) return Unexpected{detail::error_of("natsOptions_Create", status)};
    if (auto applied = apply_options(*state, options); !applied) return Unexpected{applied.error()};
    status = natsConnection_Connect(&state->connection, state->options);
    if (status != NATS_OK) return Unexpected{detail::error_of("NATS connect to " + options.urls.front() + " …", status)};
    jsOptions js_options = detail::request_options(options.timeout);
    status = natsConnection_JetStream(&state->jetstream, state->connection, &js_options);
    if (status != NATS_OK) return Unexpected{detail::error_of("JetStream context", status)};
    return Connection(std::move(state));
}

Connection::Connection(std::shared_ptr<State> state) : state_(std::move(state)) {}

std::string Connection::connected_url() const {
    char buffer[256] = {};
    if (natsConnection_GetConnectedUrl(state_->connection, buffer, sizeof buffer) != NATS_OK) return {};
    return buffer;
}

std::uint64_t Connection::permission_violations() const { return state_->permission_violations.load(); }

std::string Connection::last_permission_violation() const {
    std::lock_guard lock(state_->mutex);
    return state_->last_permission_violation;
}

std::chrono::milliseconds Connection::timeout() const { return state_->timeout; }
natsConnection* Connection::native() const { return state_->connection; }
jsCtx* Connection::jetstream() const { return state_->jetstream; }

Status<Error> wait_for_jetstream(Connection& connection, std::chrono::milliseconds wait) {
    constexpr auto poll_interval = std::chrono::milliseconds{100};
    const auto deadline = std::chrono::steady_clock::now() + wait;
    Error last{ErrorCode::unavailable, "JetStream: no answer yet"};
    while (true) {
        jsOptions options = detail::request_options(std::chrono::milliseconds{500});
        jsAccountInfo* info = nullptr;
        jsErrCode js_code = static_cast<jsErrCode>(0);
        const natsStatus status = js_GetAccountInfo(&info, connection.jetstream(), &options, &js_code);
        detail::AccountInfoHandle owned(info);
        if (status == NATS_OK) return Ok{};
        last = detail::error_of("JetStream account info", status, js_code);
        if (last.code != ErrorCode::unavailable || std::chrono::steady_clock::now() + poll_interval > deadline) break;
        std::this_thread::sleep_for(poll_interval);
    }
    if (last.code == ErrorCode::unavailable) last.message += " within " + std::to_string(wait.count()) + " ms";
    return Unexpected{last};
}

}  // namespace coconut::cluster
