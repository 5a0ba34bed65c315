// ensure_stream, last_sequence, stream_leader: the journal stream's settings and state.
#include "nats_handles.hpp"

#include <coconut/cluster/journal.hpp>

namespace coconut::cluster {

namespace {

constexpr std::int64_t nanoseconds_per_ms = 1'000'000;

template <class Duration>
std::int64_t to_nanoseconds(Duration duration) {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(duration).count();
}

Result<detail::StreamInfoHandle, Error> stream_info(Connection& connection, const std::string& stream) {
    jsOptions options = detail::request_options(connection.timeout());
    jsStreamInfo* info = nullptr;
    jsErrCode js_code = static_cast<jsErrCode>(0);
    const natsStatus status = js_GetStreamInfo(&info, connection.jetstream(), stream.c_str(), &options, &js_code);
    detail::StreamInfoHandle owned(info);
    if (status != NATS_OK) return Unexpected{detail::error_of("stream " + stream + " info", status, js_code)};
    COCONUT_ASSERT(owned != nullptr);
    return owned;
}

// The first setting of `have` that differs from `want`, as "setting: have X, want Y"; "" if none.
std::string first_difference(const jsStreamConfig& have, const StreamConfig& want) {
    auto differs = [](const char* setting, auto have_value, auto want_value) {
        return std::string(setting) + ": the stream has " + std::to_string(have_value) + ", wanted " + std::to_string(want_value);
    };
    if (have.SubjectsLen != 1 || want.subject != have.Subjects[0]) {
        std::string subjects;
        for (int i = 0; i < have.SubjectsLen; ++i) subjects += std::string(i == 0 ? "" : ",") + have.Subjects[i];
        return "subjects: the stream has [" + subjects + "], wanted [" + want.subject + "]";
    }
    if (have.Replicas != want.replicas) return differs("replicas", have.Replicas, want.replicas);
    if (have.Storage != js_FileStorage) return "storage: the stream is not on file storage";
    if (have.Retention != js_LimitsPolicy) return "retention: the stream does not keep messages by limits";
    if (have.MaxAge != to_nanoseconds(want.max_age)) {
        return differs("max age (ms)", have.MaxAge / nanoseconds_per_ms, to_nanoseconds(want.max_age) / nanoseconds_per_ms);
    }
    if (have.Duplicates != to_nanoseconds(want.duplicate_window)) {
        return differs("duplicate window (ms)", have.Duplicates / nanoseconds_per_ms,
                       to_nanoseconds(want.duplicate_window) / nanoseconds_per_ms);
    }
    if (have.MaxMsgSize != want.max_message_bytes) return differs("max message bytes", have.MaxMsgSize, want.max_message_bytes);
    return {};
}

Status<Error> create_stream(Connection& connection, const StreamConfig& config) {
    jsStreamConfig settings;
    jsStreamConfig_Init(&settings);
    const char* subjects[] = {config.subject.c_str()};
    settings.Name = config.name.c_str();
    settings.Subjects = subjects;
    settings.SubjectsLen = 1;
    settings.Storage = js_FileStorage;
    settings.Retention = js_LimitsPolicy;
    settings.Replicas = config.replicas;
    settings.MaxAge = to_nanoseconds(config.max_age);
    settings.Duplicates = to_nanoseconds(config.duplicate_window);
    settings.MaxMsgSize = config.max_message_bytes;
    // The journal is append-only: no one deletes single messages or purges it (a purge would let a
    // writer fenced at 0 in again).
    settings.DenyDelete = true;
    settings.DenyPurge = true;
    jsOptions options = detail::request_options(connection.timeout());
    jsStreamInfo* info = nullptr;
    jsErrCode js_code = static_cast<jsErrCode>(0);
    const natsStatus status = js_AddStream(&info, connection.jetstream(), &settings, &options, &js_code);
    detail::StreamInfoHandle owned(info);
    if (status != NATS_OK) return Unexpected{detail::error_of("create stream " + config.name, status, js_code)};
    return Ok{};
}

}  // namespace

Status<Error> ensure_stream(Connection& connection, const StreamConfig& config) {
    COCONUT_ASSERT(!config.name.empty() && !config.subject.empty() && config.replicas >= 1);
    auto existing = stream_info(connection, config.name);
    if (!existing && existing.error().code == ErrorCode::not_found) {
        auto created = create_stream(connection, config);
        if (created || created.error().code == ErrorCode::unavailable) return created;
        // Another node created it meanwhile (a different configuration is reported just below).
        existing = stream_info(connection, config.name);
    }
    if (!existing) return Unexpected{existing.error()};
    const std::string difference = first_difference(*existing.value()->Config, config);
    if (!difference.empty()) return Unexpected{Error{ErrorCode::mismatch, "stream " + config.name + " " + difference}};
    return Ok{};
}

Result<std::uint64_t, Error> last_sequence(Connection& connection, const std::string& stream) {
    COCONUT_TRY(info, stream_info(connection, stream));
    return info->State.LastSeq;
}

Result<std::string, Error> stream_leader(Connection& connection, const std::string& stream) {
    COCONUT_TRY(info, stream_info(connection, stream));
    if (info->Cluster == nullptr || info->Cluster->Leader == nullptr) return std::string();
    return std::string(info->Cluster->Leader);
}

}  // namespace coconut::cluster
