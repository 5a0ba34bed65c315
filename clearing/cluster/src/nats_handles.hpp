// Internal: one owner per libnats handle type, and the translation of libnats statuses to Error.
#pragma once

#include <coconut/cluster/connection.hpp>

#include <nats/nats.h>

#include <memory>
#include <string>

namespace coconut::cluster::detail {

template <class T, void (*destroy)(T*)>
struct Destroyer {
    void operator()(T* handle) const noexcept {
        if (handle != nullptr) destroy(handle);
    }
};
using MsgHandle = std::unique_ptr<natsMsg, Destroyer<natsMsg, natsMsg_Destroy>>;
using PubAckHandle = std::unique_ptr<jsPubAck, Destroyer<jsPubAck, jsPubAck_Destroy>>;
using StreamInfoHandle = std::unique_ptr<jsStreamInfo, Destroyer<jsStreamInfo, jsStreamInfo_Destroy>>;
using ConsumerInfoHandle = std::unique_ptr<jsConsumerInfo, Destroyer<jsConsumerInfo, jsConsumerInfo_Destroy>>;
using AccountInfoHandle = std::unique_ptr<jsAccountInfo, Destroyer<jsAccountInfo, jsAccountInfo_Destroy>>;
using SubscriptionHandle = std::unique_ptr<natsSubscription, Destroyer<natsSubscription, natsSubscription_Destroy>>;
using KvHandle = std::unique_ptr<kvStore, Destroyer<kvStore, kvStore_Destroy>>;

// "what: <libnats status text> (<libnats' last error detail>)" with JetStream's code when there is one.
std::string describe(const std::string& what, natsStatus status, jsErrCode js_code = static_cast<jsErrCode>(0));

// The ErrorCode of a failed libnats call (timeouts, no responders and lost connections are
// `unavailable`; JetStream's "not found" codes are `not_found`).
ErrorCode classify(natsStatus status, jsErrCode js_code);

inline Error error_of(const std::string& what, natsStatus status, jsErrCode js_code = static_cast<jsErrCode>(0)) {
    return Error{classify(status, js_code), describe(what, status, js_code)};
}

// Options for a JetStream request answered within `wait`.
jsOptions request_options(std::chrono::milliseconds wait);

}  // namespace coconut::cluster::detail
