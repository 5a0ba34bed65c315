// JournalReader: an ephemeral pull consumer from a start sequence, re-created from the next sequence
// whenever it is lost (its server died, it expired while the caller was busy).
#include "nats_handles.hpp"
#include "publish_message.hpp"

#include <coconut/cluster/journal.hpp>

#include <algorithm>

namespace coconut::cluster {

namespace {

// An ephemeral consumer nobody pulls from for this long is deleted by the server. Long enough for a
// caller that applies a large batch between two fetches; after that the reader re-creates it anyway.
constexpr auto consumer_inactive_threshold = std::chrono::seconds{60};

}  // namespace

struct JournalReader::State {
    explicit State(Connection shared) : connection(std::move(shared)) {}

    Connection connection;
    StreamConfig config;
    ReaderOptions options;
    detail::SubscriptionHandle subscription;
    std::uint64_t next_sequence = 1;
    std::uint64_t consumers_created = 0;
    std::string consumer_name;  // the server's name for the current consumer ("" if unknown)

    // Deletes the consumer on the server (best effort: an ephemeral one expires anyway).
    ~State() {
        if (subscription != nullptr) natsSubscription_Unsubscribe(subscription.get());
    }

    // Forgets a consumer that no longer answers, without asking the server to delete it (that request
    // would wait out its timeout; the server drops it after consumer_inactive_threshold if it is alive).
    void forget_consumer() { subscription.reset(); }
};

namespace {

Status<Error> create_consumer(JournalReader::State& state) {
    jsSubOptions sub_options;
    jsSubOptions_Init(&sub_options);
    sub_options.Stream = state.config.name.c_str();
    sub_options.ManualAck = true;
    sub_options.Config.DeliverPolicy = js_DeliverByStartSequence;
    sub_options.Config.OptStartSeq = state.next_sequence;
    sub_options.Config.AckPolicy = state.options.ack == ReaderAck::none ? js_AckNone : js_AckAll;
    sub_options.Config.InactiveThreshold = std::chrono::nanoseconds(consumer_inactive_threshold).count();
    jsOptions options = detail::request_options(state.connection.timeout());
    natsSubscription* subscription = nullptr;
    jsErrCode js_code = static_cast<jsErrCode>(0);
    const natsStatus status = js_PullSubscribe(&subscription, state.connection.jetstream(), state.config.subject.c_str(), nullptr, &options,
                                               &sub_options, &js_code);
    detail::SubscriptionHandle owned(subscription);
    if (status != NATS_OK) {
        return Unexpected{detail::error_of("consumer on " + state.config.name + " from sequence " + std::to_string(state.next_sequence),
                                           status, js_code)};
    }
    state.subscription = std::move(owned);
    ++state.consumers_created;
    // Its name, for operators (one more request; a failure leaves it unknown, the consumer works).
    jsConsumerInfo* info = nullptr;
    const natsStatus named = natsSubscription_GetConsumerInfo(&info, state.subscription.get(), &options, nullptr);
    detail::ConsumerInfoHandle owned_info(info);
    state.consumer_name = named == NATS_OK && info->Name != nullptr ? info->Name : "";
    return Ok{};
}

// The consumer still answers (its info) and has delivered nothing this reader did not take; a fetch
// that timed out may mean it is gone, or that its answer was lost on the way. A live consumer answers
// in milliseconds: a shorter wait than the connection's brings a lost one back sooner.
bool consumer_usable(JournalReader::State& state) {
    constexpr auto consumer_check_timeout = std::chrono::milliseconds{1000};
    jsOptions options = detail::request_options(std::min(state.connection.timeout(), consumer_check_timeout));
    jsConsumerInfo* info = nullptr;
    jsErrCode js_code = static_cast<jsErrCode>(0);
    const natsStatus status = natsSubscription_GetConsumerInfo(&info, state.subscription.get(), &options, &js_code);
    detail::ConsumerInfoHandle owned(info);
    return status == NATS_OK && info->Delivered.Stream < state.next_sequence;
}

JournalMessage journal_message(natsMsg* message, std::uint64_t sequence) {
    JournalMessage taken;
    taken.sequence = sequence;
    const auto* data = reinterpret_cast<const std::uint8_t*>(natsMsg_GetData(message));
    taken.payload.assign(data, data + natsMsg_GetDataLength(message));
    const char* msg_id = nullptr;
    if (natsMsgHeader_Get(message, detail::header_msg_id, &msg_id) == NATS_OK && msg_id != nullptr) taken.msg_id = msg_id;
    return taken;
}

// The stream no longer holds `sequence` (past its retention, or deleted): the stream's leader says
// so. Any other answer, an error included, counts as "still held".
bool no_longer_stored(JournalReader::State& state, std::uint64_t sequence) {
    jsOptions options = detail::request_options(state.connection.timeout());
    natsMsg* message = nullptr;
    jsErrCode js_code = static_cast<jsErrCode>(0);
    const natsStatus status = js_GetMsg(&message, state.connection.jetstream(), state.config.name.c_str(), sequence, &options, &js_code);
    detail::MsgHandle owned(message);
    return status != NATS_OK && detail::error_of("read", status, js_code).code == ErrorCode::not_found;
}

// Appends the messages of `list` from state.next_sequence on to `out`, in order, and advances it.
// Returns false at a gap the stream does not have: the consumer delivered messages that never reached
// this reader (a pull answer that came after the fetch had given up, a connection dropped under it).
// Without acknowledgements the server never sends those again; the caller re-creates the consumer. A
// gap the stream has (messages past its retention) is passed on: the caller says what it means.
bool take_messages(JournalReader::State& state, natsMsgList& list, std::vector<JournalMessage>& out) {
    for (int i = 0; i < list.Count; ++i) {
        natsMsg* message = list.Msgs[i];
        jsMsgMetaData* meta = nullptr;
        const natsStatus status = natsMsg_GetMetaData(&meta, message);
        COCONUT_ASSERT(status == NATS_OK, "a pull consumer's message carries its JetStream metadata");
        const std::uint64_t sequence = meta->Sequence.Stream;
        jsMsgMetaData_Destroy(meta);
        // A re-created consumer may deliver again what an older one did: each message once, in order.
        if (sequence < state.next_sequence) continue;
        if (sequence > state.next_sequence && !no_longer_stored(state, state.next_sequence)) return false;
        out.push_back(journal_message(message, sequence));
        state.next_sequence = sequence + 1;
    }
    if (state.options.ack == ReaderAck::all && list.Count > 0) natsMsg_Ack(list.Msgs[list.Count - 1], nullptr);
    return true;
}

// One pull request for up to batch_max messages, answered at once with what is stored, or as soon as
// the first message is stored, or empty after `wait`. nats-server 2.9 reads a request with both
// "no_wait" and "expires" that way (measured; the reader test checks the prompt wake-up). A request
// without "no_wait" would be held until the batch is full or `wait` is over: a follower would lag
// by up to `wait` per message.
struct Fetched {
    natsStatus status;
    bool gap;  // take_messages found one: what came before it is in the batch
};

Fetched fetch_into(JournalReader::State& state, std::vector<JournalMessage>& batch, std::chrono::milliseconds wait) {
    jsFetchRequest request;
    jsFetchRequest_Init(&request);
    request.Batch = state.options.batch_max;
    request.MaxBytes = state.options.batch_bytes_max;
    request.NoWait = true;
    request.Expires = std::chrono::nanoseconds(wait).count();
    natsMsgList list{};
    const natsStatus status = natsSubscription_FetchRequest(&list, state.subscription.get(), &request);
    const bool in_order = take_messages(state, list, batch);
    natsMsgList_Destroy(&list);
    return {status, !in_order};
}

// While no consumer can be made (the cluster's meta leader is being elected for a few seconds after a
// server died), the stream's own leader still serves single messages: read on through it, message by
// message, up to a batch. Stops at the first sequence not stored (not yet written).
Result<std::vector<JournalMessage>, Error> read_directly(JournalReader::State& state) {
    std::vector<JournalMessage> batch;
    std::int64_t bytes = 0;
    jsOptions options = detail::request_options(state.connection.timeout());
    while (static_cast<int>(batch.size()) < state.options.batch_max && bytes < state.options.batch_bytes_max) {
        natsMsg* message = nullptr;
        jsErrCode js_code = static_cast<jsErrCode>(0);
        const natsStatus status =
            js_GetMsg(&message, state.connection.jetstream(), state.config.name.c_str(), state.next_sequence, &options, &js_code);
        detail::MsgHandle owned(message);
        if (status != NATS_OK) {
            const Error error =
                detail::error_of("read " + state.config.name + " at " + std::to_string(state.next_sequence), status, js_code);
            if (batch.empty() && error.code != ErrorCode::not_found) return Unexpected{error};
            break;
        }
        batch.push_back(journal_message(owned.get(), state.next_sequence));
        bytes += static_cast<std::int64_t>(batch.back().payload.size());
        ++state.next_sequence;
    }
    return batch;
}

}  // namespace

Result<JournalReader, Error> JournalReader::open(Connection& connection, const StreamConfig& config, std::uint64_t first_sequence,
                                                 ReaderOptions options) {
    COCONUT_ASSERT(first_sequence >= 1 && options.batch_max >= 1);
    auto state = std::make_unique<State>(connection);
    state->config = config;
    state->options = options;
    state->next_sequence = first_sequence;
    // No stream leader right now is no reason to fail: next_batch makes the consumer once there is one.
    auto created = create_consumer(*state);
    if (!created && created.error().code != ErrorCode::unavailable) return Unexpected{created.error()};
    return JournalReader(std::move(state));
}

Result<std::vector<JournalMessage>, Error> JournalReader::next_batch(std::chrono::milliseconds wait) {
    COCONUT_ASSERT(wait.count() > 0);
    if (state_->subscription == nullptr) {
        auto created = create_consumer(*state_);
        if (!created && created.error().code == ErrorCode::unavailable) return read_directly(*state_);
        if (!created) return Unexpected{created.error()};
    }
    std::vector<JournalMessage> batch;
    const auto [status, gap] = fetch_into(*state_, batch, wait);
    if (gap) state_->forget_consumer();  // it skipped messages: a new one starts at the first missing
    if (!batch.empty() || gap) return batch;
    // Nothing came: either nothing was published, or the consumer is gone (its server died, the
    // stream's leader moved, it expired), or what it sent was lost on the way. Re-create it on the
    // next call when it no longer answers or has delivered past what this reader holds.
    // (408: the wait ended; 404: nothing stored.)
    const bool no_messages = status == NATS_TIMEOUT || status == NATS_NOT_FOUND;
    if (!no_messages || !consumer_usable(*state_)) state_->forget_consumer();
    return batch;
}

std::uint64_t JournalReader::next_sequence() const { return state_->next_sequence; }
std::uint64_t JournalReader::consumers_created() const { return state_->consumers_created; }

std::string JournalReader::consumer_name() const { return state_->subscription != nullptr ? state_->consumer_name : std::string(); }

JournalReader::JournalReader(std::unique_ptr<State> state) : state_(std::move(state)) {}
JournalReader::JournalReader(JournalReader&&) noexcept = default;
JournalReader& JournalReader::operator=(JournalReader&&) noexcept = default;
JournalReader::~JournalReader() = default;

}  // namespace coconut::cluster
