// The ledger writer thread: group commit (docs/DESIGN.md §8.2).
#include <coconut/ledger/ledger.hpp>

#include <coconut/core/assert.hpp>
#include <coconut/core/log.hpp>

#include <pthread.h>

namespace coconut::ledger {

Writer::Writer(Ledger& ledger, WriterOptions options) : ledger_(ledger), options_(options) {
    COCONUT_ASSERT(options_.queue_requests_max > 0 && options_.group_requests_max > 0);
    thread_ = std::thread([this] { run(); });
}

Writer::~Writer() { stop(); }

void Writer::stop() {
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    work_available_.notify_all();
    room_available_.notify_all();
    if (thread_.joinable()) thread_.join();
}

WriterStats Writer::stats() const {
    std::lock_guard lock(mutex_);
    WriterStats out = stats_;
    out.queue_depth = queue_.size();
    return out;
}

namespace {
template <std::size_t N>
std::size_t bucket_of(const std::array<std::uint64_t, N>& bounds, std::uint64_t value) {
    std::size_t i = 0;
    while (i < N && value > bounds[i]) ++i;
    return i;
}
}  // namespace

bool Writer::enqueue(Request& request, bool wait) {
    std::unique_lock lock(mutex_);
    if (wait) room_available_.wait(lock, [&] { return stopping_ || queue_.size() < options_.queue_requests_max; });
    if (stopping_ || queue_.size() >= options_.queue_requests_max) return false;
    queue_.push_back(std::move(request));
    lock.unlock();
    work_available_.notify_one();
    return true;
}

// The id of the request being handled (coconut/core/log.hpp) on the lines its hook and callback write
// on the writer's thread.
namespace {
void keep_request_id(Writer::Callback& callback, BatchHook& after) {
    if (log::current_request_id().empty()) return;
    callback = log::carry_request_id(std::move(callback));
    if (after) after = log::carry_request_id(std::move(after));
}
}  // namespace

bool Writer::try_submit(std::vector<Event> events, Callback callback, BatchHook after) {
    keep_request_id(callback, after);
    if (events.size() > batch_events_max) {
        callback(Unexpected{Error{ErrorCode::too_large, "request above batch_events_max"}});
        return true;
    }
    Request request{std::move(events), std::move(callback), std::move(after)};
    return enqueue(request, false);
}

void Writer::submit(std::vector<Event> events, Callback callback, BatchHook after) {
    keep_request_id(callback, after);
    if (events.size() > batch_events_max) {
        callback(Unexpected{Error{ErrorCode::too_large, "request above batch_events_max"}});
        return;
    }
    Request request{std::move(events), std::move(callback), std::move(after)};
    if (!enqueue(request, true)) request.callback(Unexpected{Error{ErrorCode::stopped, "ledger writer stopped"}});
}

std::future<Reply> Writer::submit(std::vector<Event> events) {
    auto promise = std::make_shared<std::promise<Reply>>();
    auto future = promise->get_future();
    submit(std::move(events), [promise](Reply reply) { promise->set_value(std::move(reply)); });
    return future;
}

void Writer::run() {
    ::pthread_setname_np(::pthread_self(), "ledger-writer");  // top -H, /proc/PID/task/TID/comm
    std::vector<Request> group;
    for (;;) {
        {
            std::unique_lock lock(mutex_);
            const bool was_idle = queue_.empty();
            // Idle: wake for work, for stop, or to release due holds.
            if (!work_available_.wait_for(lock, options_.expiry_interval, [&] { return stopping_ || !queue_.empty(); })) {
                lock.unlock();
                auto expired = ledger_.expire_pending();  // an error here resurfaces on the next commit
                if (!expired || *expired > 0) {           // 0: nothing was committed, nothing learnt
                    std::lock_guard relock(mutex_);
                    note_storage(expired ? nullptr : &expired.error());
                }
                continue;
            }
            if (queue_.empty()) return;  // stopping and drained
            // Woken from idle by a first request: wait up to group_delay for others, unless the group
            // is already full. Requests that queued up during the previous commit go at once: they have
            // waited a commit already, and the next ones gather during this one — unless fewer than
            // group_linger_below did: then up to group_delay more, until that many are queued.
            const bool linger = !was_idle && queue_.size() < options_.group_linger_below;
            if (was_idle || linger) {
                const std::size_t enough = linger ? options_.group_linger_below : options_.group_requests_max;
                const auto deadline = std::chrono::steady_clock::now() + options_.group_delay;
                work_available_.wait_until(lock, deadline, [&] { return stopping_ || queue_.size() >= enough; });
            }
            std::size_t events = 0;
            while (!queue_.empty() && group.size() < options_.group_requests_max &&
                   events + queue_.front().events.size() <= batch_events_max) {
                events += queue_.front().events.size();
                group.push_back(std::move(queue_.front()));
                queue_.pop_front();
            }
        }
        room_available_.notify_all();
        commit_group(group);
        group.clear();
    }
}

void Writer::note_storage(const Error* failure) {
    if (failure == nullptr) {
        stats_.storage_full = false;
        stats_.storage_error.clear();
        return;
    }
    const bool full = failure->code == ErrorCode::storage_full || failure->code == ErrorCode::map_full;
    if (full || failure->code == ErrorCode::storage) ++stats_.storage_errors;
    if (!full) return;  // only a commit that succeeds says that there is room again
    stats_.storage_full = true;
    stats_.storage_error = failure->message;
}

void Writer::commit_group(std::vector<Request>& group) {
    COCONUT_ASSERT(!group.empty() && group.size() <= options_.group_requests_max, "a group holds 1 … group_requests_max requests");
    std::vector<Batch> batches;
    batches.reserve(group.size());
    std::uint64_t events = 0;
    for (Request& request : group) {
        batches.push_back(Batch{request.events, std::move(request.after)});  // the hook runs once, here
        events += request.events.size();
    }
    COCONUT_ASSERT(events <= batch_events_max, "a group's events fit one write transaction");
    const auto start = std::chrono::steady_clock::now();
    auto results = ledger_.apply_group(std::span<const Batch>(batches), options_.group_hooks);
    const auto commit_us =
        static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - start).count());
    {
        std::lock_guard lock(mutex_);
        stats_.commit_us_sum += commit_us;
        ++stats_.commit_us_counts[bucket_of(commit_us_buckets, commit_us)];
        ++stats_.commit_requests_counts[bucket_of(commit_requests_buckets, group.size())];
        ++stats_.commits;
        stats_.requests += group.size();
        stats_.events += events;
        if (!results) ++stats_.failed_commits;
        note_storage(results ? nullptr : &results.error());
    }
    // Only now, after the durable commit (or its failure), does anyone hear back, in submission order.
    COCONUT_ASSERT(!results || results->size() == group.size(), "one result list per request");
    for (std::size_t i = 0; i < group.size(); ++i) {
        if (results) {
            group[i].callback(std::move((*results)[i]));
        } else {
            group[i].callback(Unexpected{results.error()});
        }
    }
}

}  // namespace coconut::ledger
