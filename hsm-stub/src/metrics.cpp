#include <coconut/core/assert.hpp>
#include <coconut/hsm/metrics.hpp>

namespace coconut::hsm {

namespace {

constexpr std::array<wire::Command, 10> all_commands{wire::Command::key_info,
                                                     wire::Command::derive_card_keys,
                                                     wire::Command::export_issuer_key,
                                                     wire::Command::verify_purchase_tacs,
                                                     wire::Command::verify_load_tac,
                                                     wire::Command::load_mac2,
                                                     wire::Command::verify_internal_auth,
                                                     wire::Command::ca_certificate,
                                                     wire::Command::sign_certificate,
                                                     wire::Command::maintenance_mac};

}  // namespace

ServerMetrics::ServerMetrics() {
    static_assert(all_commands.size() == commands);
    for (auto& histogram : latency_)
        histogram = std::make_unique<core::Histogram<request_latency_buckets_us.size()>>(request_latency_buckets_us);
}

std::size_t ServerMetrics::index(wire::Command command) {
    for (std::size_t i = 0; i < all_commands.size(); ++i)
        if (all_commands[i] == command) return i;
    COCONUT_ASSERT(false, "every command of the protocol has a latency histogram");
    return 0;
}

void ServerMetrics::request(wire::Command command, Errc outcome, std::chrono::microseconds elapsed) {
    latency_[index(command)]->observe(static_cast<std::uint64_t>(elapsed.count()));
    std::lock_guard lock(mutex_);
    ++requests_[{command, outcome}];
}

void ServerMetrics::connection_closed(Errc reason) {
    std::lock_guard lock(mutex_);
    ++closed_[reason];
}

void ServerMetrics::audit_written(bool ok) {
    if (!ok) audit_failures_.fetch_add(1, std::memory_order_relaxed);
    audit_failing_.store(!ok, std::memory_order_relaxed);
}

std::uint64_t ServerMetrics::requests(wire::Command command, Errc outcome) const {
    std::lock_guard lock(mutex_);
    auto found = requests_.find({command, outcome});
    return found == requests_.end() ? 0 : found->second;
}

void ServerMetrics::write(core::MetricsText& text) const {
    {
        std::lock_guard lock(mutex_);
        text.family("coconut_hsm_requests_total", "counter",
                    "authenticated requests answered, by command and outcome (PROTOCOL.md status)");
        for (const auto& [key, count] : requests_)
            text.sample("coconut_hsm_requests_total", count, {{"kind", wire::command_name(key.first)}, {"outcome", errc_name(key.second)}});
        text.family("coconut_hsm_connections_closed_total", "counter", "connections closed for breaking a rule or a timeout, by reason");
        for (const auto& [reason, count] : closed_)
            text.sample("coconut_hsm_connections_closed_total", count, {{"reason", errc_name(reason)}});
    }
    text.family("coconut_hsm_request_duration_seconds", "histogram", "request latency by command: frame read to answer built");
    for (std::size_t i = 0; i < all_commands.size(); ++i) {
        if (latency_[i]->count() == 0) continue;  // commands never asked for: no empty series per command
        latency_[i]->write(text, "coconut_hsm_request_duration_seconds", 1e-6, {{"kind", wire::command_name(all_commands[i])}});
    }
    text.family("coconut_hsm_tac_batch_items", "histogram", "purchase TACs per verify-purchase-tacs batch (keep-alives not counted)");
    tac_batch_items_.write(text, "coconut_hsm_tac_batch_items", 1.0);
    text.counter("coconut_hsm_keepalives_total", "keep-alives answered (empty purchase-TAC batches)", keepalives_.load());
    text.counter("coconut_hsm_audit_failures_total", "audit lines that could not be written (their requests were refused)",
                 audit_failures_.load());
}

}  // namespace coconut::hsm
