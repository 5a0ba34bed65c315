// publish: a fenced, de-duplicated journal message (journal.hpp "Rules").
#include "nats_handles.hpp"
#include "publish_message.hpp"

#include <climits>
#include <optional>
#include <string>

namespace coconut::cluster {

const char* to_string(PublishErrorCode code) {
    switch (code) {
        case PublishErrorCode::wrong_last_sequence: return "wrong last sequence";
        case PublishErrorCode::timeout: return "timeout";
        case PublishErrorCode::no_responders: return "no responders";
        case PublishErrorCode::too_large: return "too large";
        case PublishErrorCode::permission_denied: return "permission denied";
        case PublishErrorCode::other: return "error";
    }
    return "error";
}

namespace detail {

MsgHandle make_message(const std::string& subject, ByteView payload) {
    COCONUT_ASSERT(payload.size() <= static_cast<std::size_t>(INT_MAX), "a NATS payload's length is an int");
    natsMsg* message = nullptr;
    const natsStatus status =
        natsMsg_Create(&message, subject.c_str(), nullptr, reinterpret_cast<const char*>(payload.data()), static_cast<int>(payload.size()));
    COCONUT_ASSERT(status == NATS_OK, "natsMsg_Create fails only without memory");
    return MsgHandle(message);
}

void set_header(natsMsg* message, const char* key, const std::string& value) {
    const natsStatus status = natsMsgHeader_Set(message, key, value.c_str());
    COCONUT_ASSERT(status == NATS_OK, "natsMsgHeader_Set fails only without memory");
}

namespace {

PublishError publish_error(Connection& connection, const char* subject, natsStatus status, jsErrCode js_code,
                           std::uint64_t violations_before) {
    PublishError error{PublishErrorCode::other, describe(std::string("publish to ") + subject, status, js_code), static_cast<int>(js_code)};
    if (js_code == JSStreamWrongLastSequenceErr) {
        error.code = PublishErrorCode::wrong_last_sequence;
    } else if (js_code == JSStreamMessageExceedsMaximumErr || status == NATS_MAX_PAYLOAD) {
        error.code = PublishErrorCode::too_large;
    } else if (status == NATS_NO_RESPONDERS) {
        error.code = PublishErrorCode::no_responders;
    } else if (status == NATS_NOT_PERMITTED) {
        error.code = PublishErrorCode::permission_denied;
    } else if (status == NATS_TIMEOUT || classify(status, js_code) == ErrorCode::unavailable) {
        // The server answers a refused publish with an asynchronous "Permissions Violation" only, so the
        // request times out: recognise it by the violation naming this subject.
        const bool violated = connection.permission_violations() != violations_before &&
                              connection.last_permission_violation().find(std::string("\"") + subject + "\"") != std::string::npos;
        error.code = violated ? PublishErrorCode::permission_denied : PublishErrorCode::timeout;
        if (violated) error.message = "publish to " + std::string(subject) + ": " + connection.last_permission_violation();
    }
    return error;
}

}  // namespace

Result<PublishAck, PublishError> publish_message(Connection& connection, natsMsg* message, std::chrono::milliseconds max_wait) {
    jsPubOptions options;
    jsPubOptions_Init(&options);
    options.MaxWait = max_wait.count();
    const std::uint64_t violations_before = connection.permission_violations();
    jsPubAck* ack = nullptr;
    jsErrCode js_code = static_cast<jsErrCode>(0);
    const natsStatus status = js_PublishMsg(&ack, connection.jetstream(), message, &options, &js_code);
    PubAckHandle owned(ack);
    if (status != NATS_OK) return Unexpected{publish_error(connection, natsMsg_GetSubject(message), status, js_code, violations_before)};
    COCONUT_ASSERT(owned != nullptr && owned->Sequence > 0, "an acknowledged message has a sequence");
    return PublishAck{owned->Sequence, owned->Duplicate};
}

}  // namespace detail

Result<std::optional<std::string>, Error> message_id_at(Connection& connection, const std::string& stream, std::uint64_t sequence) {
    jsOptions options = detail::request_options(connection.timeout());
    natsMsg* message = nullptr;
    jsErrCode js_code = static_cast<jsErrCode>(0);
    const natsStatus status = js_GetMsg(&message, connection.jetstream(), stream.c_str(), sequence, &options, &js_code);
    detail::MsgHandle owned(message);
    if (status != NATS_OK && js_code == JSNoMessageFoundErr) return std::optional<std::string>{};
    if (status != NATS_OK)
        return Unexpected{detail::error_of("stream " + stream + " message " + std::to_string(sequence), status, js_code)};
    const char* id = nullptr;
    if (natsMsgHeader_Get(owned.get(), detail::header_msg_id, &id) != NATS_OK || id == nullptr) return std::optional<std::string>{""};
    return std::optional<std::string>{id};
}

Result<PublishAck, PublishError> publish(Connection& connection, const StreamConfig& config, ByteView payload, std::string_view msg_id,
                                         std::uint64_t expected_last_sequence, std::chrono::milliseconds max_wait) {
    COCONUT_ASSERT(!msg_id.empty(), "every journal message carries a msg id (de-duplication)");
    detail::MsgHandle message = detail::make_message(config.subject, payload);
    detail::set_header(message.get(), detail::header_msg_id, std::string(msg_id));
    detail::set_header(message.get(), detail::header_expected_stream, config.name);
    // Set by hand, not through jsPubOptions.ExpectLastSeq, whose 0 means "no expectation": the server
    // takes "0" literally (the stream never held a message), which fences the first publish too.
    detail::set_header(message.get(), detail::header_expected_last_sequence, std::to_string(expected_last_sequence));
    auto ack = detail::publish_message(connection, message.get(), max_wait);
    if (!ack && ack.error().code == PublishErrorCode::wrong_last_sequence) {
        // Is the message right after the expected one ours (same msg_id)? Then an earlier attempt stored
        // it and only its acknowledgement was lost.
        const std::uint64_t next = expected_last_sequence + 1;
        if (auto stored = message_id_at(connection, config.name, next); stored && *stored && **stored == msg_id)
            return PublishAck{next, true};
    }
    return ack;
}

}  // namespace coconut::cluster
