// What coconut-hsmd counts while it serves, for its /metrics (status_http.hpp): every authenticated
// request by command and outcome with its latency, the size of every purchase-TAC batch, keep-alives,
// and connections closed by reason. Updated by the Server's connections (any I/O thread), read by the
// status server's thread.
#pragma once

#include <coconut/core/metrics.hpp>
#include <coconut/hsm/hsm.hpp>
#include <coconut/hsm/protocol.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

namespace coconut::hsm {

// Request latency buckets (µs), frame read to answer built: a TAC batch of 100 takes ~1 ms on the VM.
inline constexpr std::array<std::uint64_t, 10> request_latency_buckets_us{50, 100, 250, 500, 1000, 2500, 5000, 10000, 50000, 250000};
// Items per purchase-TAC batch (the clearing's batches are up to wire::max_batch_items).
inline constexpr std::array<std::uint64_t, 9> tac_batch_items_buckets{1, 2, 4, 8, 16, 32, 64, 128, 256};

class ServerMetrics {
public:
    ServerMetrics();

    // One authenticated request answered with `outcome` after `elapsed`.
    void request(wire::Command command, Errc outcome, std::chrono::microseconds elapsed);
    // The item count of a purchase-TAC batch that was not a keep-alive.
    void tac_batch(std::size_t items) { tac_batch_items_.observe(items); }
    void keepalive() { keepalives_.fetch_add(1, std::memory_order_relaxed); }
    // A connection closed for breaking a rule or a timeout (errc_name of the reason).
    void connection_closed(Errc reason);
    // Whether the last audit line could be written (a request whose line cannot be is refused).
    void audit_written(bool ok);
    bool audit_failing() const { return audit_failing_.load(std::memory_order_relaxed); }
    std::uint64_t requests(wire::Command command, Errc outcome) const;

    // The families above in `text`.
    void write(core::MetricsText& text) const;

private:
    static constexpr std::size_t commands = 10;  // wire::Command's values
    static std::size_t index(wire::Command command);

    mutable std::mutex mutex_;  // guards the two maps (keyed by enum values; a few dozen entries at most)
    std::map<std::pair<wire::Command, Errc>, std::uint64_t> requests_;
    std::map<Errc, std::uint64_t> closed_;
    std::array<std::unique_ptr<core::Histogram<request_latency_buckets_us.size()>>, commands> latency_;  // by index()
    core::Histogram<tac_batch_items_buckets.size()> tac_batch_items_{tac_batch_items_buckets};
    std::atomic<std::uint64_t> keepalives_{0};
    std::atomic<std::uint64_t> audit_failures_{0};
    std::atomic<bool> audit_failing_{false};
};

}  // namespace coconut::hsm
