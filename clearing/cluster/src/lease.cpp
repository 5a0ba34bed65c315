// Lease: writes to the bucket's key through JetStream publishes expecting the key's last revision
// (so every refusal carries JetStream's exact code), reads through the stream's last message.
#include "nats_handles.hpp"
#include "publish_message.hpp"

#include <coconut/cluster/lease.hpp>

#include <nlohmann/json.hpp>

namespace coconut::cluster {

const char* to_string(LeaseErrorCode code) {
    switch (code) {
        case LeaseErrorCode::held: return "held";
        case LeaseErrorCode::lost: return "lost";
        case LeaseErrorCode::unavailable: return "unavailable";
        case LeaseErrorCode::other: return "error";
    }
    return "error";
}

struct Lease::State {
    explicit State(Connection shared) : connection(std::move(shared)) {}

    Connection connection;
    LeaseConfig config;
    std::string stream;   // the bucket's stream: KV_<bucket>
    std::string subject;  // the key's subject: $KV.<bucket>.<key>
};

namespace {

// The key-value layer's marker of a deleted or purged key (a message with this header).
constexpr const char* header_kv_operation = "KV-Operation";

std::int64_t ttl_nanoseconds(const LeaseConfig& config) { return std::chrono::nanoseconds(config.ttl).count(); }

Status<Error> check_bucket(const jsStreamConfig& have, const LeaseConfig& want) {
    if (have.MaxAge != ttl_nanoseconds(want) || have.Replicas != want.replicas) {
        return Unexpected{Error{ErrorCode::mismatch, "lease bucket " + want.bucket + ": ttl " + std::to_string(have.MaxAge / 1'000'000) +
                                                         " ms and " + std::to_string(have.Replicas) + " replicas, wanted " +
                                                         std::to_string(want.ttl.count()) + " ms and " + std::to_string(want.replicas)}};
    }
    return Ok{};
}

Status<Error> create_bucket(Connection& connection, const LeaseConfig& config) {
    kvConfig settings;
    kvConfig_Init(&settings);
    settings.Bucket = config.bucket.c_str();
    settings.History = 1;
    settings.TTL = ttl_nanoseconds(config);  // the stream's MaxAge, in nanoseconds (open checks it)
    settings.Replicas = config.replicas;
    settings.StorageType = js_FileStorage;
    kvStore* bucket = nullptr;
    const natsStatus status = js_CreateKeyValue(&bucket, connection.jetstream(), &settings);
    detail::KvHandle owned(bucket);
    if (status != NATS_OK) return Unexpected{detail::error_of("create lease bucket " + config.bucket, status)};
    return Ok{};
}

LeaseError lease_error(const PublishError& error, LeaseErrorCode on_wrong_revision) {
    switch (error.code) {
        case PublishErrorCode::wrong_last_sequence: return {on_wrong_revision, error.message};
        case PublishErrorCode::timeout:
        case PublishErrorCode::no_responders: return {LeaseErrorCode::unavailable, error.message};
        default: return {LeaseErrorCode::other, error.message};
    }
}

// Writes `value` (or a delete marker) to the key, stored only if the key's last revision is `revision`
// (0: the key has no message at all).
Result<std::uint64_t, PublishError> write_at(Lease::State& state, std::uint64_t revision, std::string_view value, bool delete_marker) {
    detail::MsgHandle message = detail::make_message(state.subject, text_bytes(value));
    detail::set_header(message.get(), detail::header_expected_stream, state.stream);
    detail::set_header(message.get(), detail::header_expected_last_subject_sequence, std::to_string(revision));
    if (delete_marker) detail::set_header(message.get(), header_kv_operation, "DEL");
    COCONUT_TRY(ack, detail::publish_message(state.connection, message.get(), state.connection.timeout()));
    return ack.sequence;
}

struct LastEntry {
    std::uint64_t revision = 0;
    bool deleted = false;  // a delete or purge marker
    std::string value;
};

// The key's last message, if it has one (an expired key has none).
Result<std::optional<LastEntry>, LeaseError> last_entry(Lease::State& state) {
    jsOptions options = detail::request_options(state.connection.timeout());
    natsMsg* message = nullptr;
    jsErrCode js_code = static_cast<jsErrCode>(0);
    const natsStatus status =
        js_GetLastMsg(&message, state.connection.jetstream(), state.stream.c_str(), state.subject.c_str(), &options, &js_code);
    detail::MsgHandle owned(message);
    if (status != NATS_OK) {
        const Error error = detail::error_of("lease " + state.subject, status, js_code);
        if (error.code == ErrorCode::not_found) return std::optional<LastEntry>();
        return Unexpected{
            LeaseError{error.code == ErrorCode::unavailable ? LeaseErrorCode::unavailable : LeaseErrorCode::other, error.message}};
    }
    LastEntry entry;
    entry.revision = natsMsg_GetSequence(owned.get());
    const char* operation = nullptr;
    entry.deleted = natsMsgHeader_Get(owned.get(), header_kv_operation, &operation) == NATS_OK && operation != nullptr;
    entry.value.assign(natsMsg_GetData(owned.get()), static_cast<std::size_t>(natsMsg_GetDataLength(owned.get())));
    return std::optional<LastEntry>(std::move(entry));
}

}  // namespace

Result<Lease, Error> Lease::open(Connection& connection, LeaseConfig config) {
    COCONUT_ASSERT(!config.bucket.empty() && !config.key.empty() && config.ttl.count() > 0);
    auto state = std::make_unique<State>(connection);
    state->stream = "KV_" + config.bucket;
    state->subject = "$KV." + config.bucket + "." + config.key;
    state->config = std::move(config);
    jsOptions options = detail::request_options(connection.timeout());
    jsStreamInfo* info = nullptr;
    jsErrCode js_code = static_cast<jsErrCode>(0);
    natsStatus status = js_GetStreamInfo(&info, connection.jetstream(), state->stream.c_str(), &options, &js_code);
    detail::StreamInfoHandle owned(info);
    if (status != NATS_OK && detail::classify(status, js_code) == ErrorCode::not_found) {
        if (auto created = create_bucket(connection, state->config); !created) return Unexpected{created.error()};
        status = js_GetStreamInfo(&info, connection.jetstream(), state->stream.c_str(), &options, &js_code);
        owned.reset(info);
    }
    if (status != NATS_OK) return Unexpected{detail::error_of("lease bucket " + state->config.bucket, status, js_code)};
    if (auto checked = check_bucket(*owned->Config, state->config); !checked) return Unexpected{checked.error()};
    return Lease(std::move(state));
}

Result<std::uint64_t, LeaseError> Lease::acquire(std::string_view value) {
    auto written = write_at(*state_, 0, value, false);
    if (written) return written.value();
    if (written.error().code != PublishErrorCode::wrong_last_sequence)
        return Unexpected{lease_error(written.error(), LeaseErrorCode::held)};
    // The key has a message: a live holder's, or a release's delete marker (then take it at its revision).
    COCONUT_TRY(last, last_entry(*state_));
    const std::uint64_t revision = last ? last->revision : 0;  // none: it expired meanwhile
    if (last && !last->deleted) {
        return Unexpected{LeaseError{LeaseErrorCode::held, "lease " + state_->config.key + " held by " + last->value + " (revision " +
                                                               std::to_string(last->revision) + ")"}};
    }
    auto retried = write_at(*state_, revision, value, false);
    if (!retried) return Unexpected{lease_error(retried.error(), LeaseErrorCode::held)};
    return retried.value();
}

Result<std::uint64_t, LeaseError> Lease::renew(std::uint64_t revision, std::string_view value) {
    COCONUT_ASSERT(revision > 0);
    auto written = write_at(*state_, revision, value, false);
    if (!written) return Unexpected{lease_error(written.error(), LeaseErrorCode::lost)};
    return written.value();
}

Result<std::optional<LeaseHolder>, LeaseError> Lease::read() {
    COCONUT_TRY(last, last_entry(*state_));
    if (!last || last->deleted) return std::optional<LeaseHolder>();
    return std::optional<LeaseHolder>(LeaseHolder{std::move(last->value), last->revision});
}

Status<LeaseError> Lease::release(std::uint64_t revision) {
    COCONUT_ASSERT(revision > 0);
    auto written = write_at(*state_, revision, "", true);
    if (!written) return Unexpected{lease_error(written.error(), LeaseErrorCode::lost)};
    return Ok{};
}

const LeaseConfig& Lease::config() const { return state_->config; }

Lease::Lease(std::unique_ptr<State> state) : state_(std::move(state)) {}
Lease::Lease(Lease&&) noexcept = default;
Lease& Lease::operator=(Lease&&) noexcept = default;
Lease::~Lease() = default;

std::string lease_value(const LeaseValue& value) { return nlohmann::json{{"node", value.node}, {"address", value.address}}.dump(); }

std::optional<LeaseValue> parse_lease_value(std::string_view text) {
    const auto json = nlohmann::json::parse(text, nullptr, false);
    if (json.is_discarded() || !json.is_object() || json.size() != 2) return std::nullopt;
    const auto node = json.find("node");
    const auto address = json.find("address");
    if (node == json.end() || address == json.end() || !node->is_string() || !address->is_string()) return std::nullopt;
    return LeaseValue{node->get<std::string>(), address->get<std::string>()};
}

}  // namespace coconut::cluster
