// Prometheus text exposition (format 0.0.4) for every daemon's /metrics: one writer of families,
// samples and histograms, a fixed-bucket latency histogram that many threads may observe at once, and
// the two families every daemon exposes the same way — process_* (read from /proc/self, as the
// Prometheus client libraries name them) and coconut_build_info.
//
//   coconut::core::MetricsText text;
//   text.counter("coconut_hsm_requests_total", "requests answered", 42);
//   text.family("coconut_hsm_requests_total", "counter", "requests by kind and outcome");
//   text.sample("coconut_hsm_requests_total", 7, {{"kind", "load-mac2"}, {"outcome", "ok"}});
//   coconut::core::process_metrics(text);
//   coconut::core::build_info(text, "coconut-hsmd");
//   serve text.out with Content-Type metrics_content_type.
//
// Names and label names are the caller's constants ([a-zA-Z_:][a-zA-Z0-9_:]*, asserted); label values
// are escaped here (backslash, double quote, newline), so any text may be a value. A family's samples
// must follow its # HELP / # TYPE lines without another family in between (promtool checks it).
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>
#include <utility>

namespace coconut::core {

inline constexpr std::string_view metrics_content_type = "text/plain; version=0.0.4; charset=utf-8";

using Label = std::pair<std::string_view, std::string_view>;

class MetricsText {
public:
    std::string out;

    // # HELP and # TYPE of a family ("counter", "gauge", "histogram").
    void family(std::string_view name, std::string_view type, std::string_view help);
    void sample(std::string_view name, std::uint64_t value, std::initializer_list<Label> labels = {});
    void sample(std::string_view name, double value, std::initializer_list<Label> labels = {});
    void sample(std::string_view name, double value, std::span<const Label> labels);
    // A family of one unlabelled sample.
    void counter(std::string_view name, std::string_view help, std::uint64_t value);
    void gauge(std::string_view name, std::string_view help, std::uint64_t value);
    // _bucket{le}, _sum and _count of one histogram: `counts` per bucket (not cumulative), one more
    // than `bounds` (the last above every bound); bounds and sum in the unit `unit` converts to
    // (1e-6: microseconds to seconds). `labels` go on every sample, before le. No # HELP / # TYPE:
    // call family() once before the histograms of one family.
    void histogram(std::string_view name, std::span<const std::uint64_t> bounds, std::span<const std::uint64_t> counts, std::uint64_t sum,
                   double unit, std::initializer_list<Label> labels = {});
};

// A histogram of fixed bucket bounds, observed from any thread without a lock.
template <std::size_t N>
class Histogram {
public:
    explicit constexpr Histogram(const std::array<std::uint64_t, N>& bounds) : bounds_(bounds) {}

    void observe(std::uint64_t value) {
        std::size_t i = 0;
        while (i < N && value > bounds_[i]) ++i;
        counts_[i].fetch_add(1, std::memory_order_relaxed);
        sum_.fetch_add(value, std::memory_order_relaxed);
    }
    // Writes the histogram's samples (family() first, once per family).
    void write(MetricsText& text, std::string_view name, double unit, std::initializer_list<Label> labels = {}) const {
        std::array<std::uint64_t, N + 1> counts{};
        for (std::size_t i = 0; i <= N; ++i) counts[i] = counts_[i].load(std::memory_order_relaxed);
        text.histogram(name, bounds_, counts, sum_.load(std::memory_order_relaxed), unit, labels);
    }
    std::uint64_t count() const {
        std::uint64_t total = 0;
        for (const auto& c : counts_) total += c.load(std::memory_order_relaxed);
        return total;
    }

private:
    std::array<std::uint64_t, N> bounds_;
    std::array<std::atomic<std::uint64_t>, N + 1> counts_{};
    std::atomic<std::uint64_t> sum_{0};
};

// The process's own figures from /proc/self (Linux): process_cpu_seconds_total,
// process_resident_memory_bytes, process_virtual_memory_bytes, process_open_fds, process_max_fds,
// process_start_time_seconds. A figure that cannot be read is left out (never a made-up value).
void process_metrics(MetricsText& text);

// The project's version (CMake's PROJECT_VERSION of the build).
std::string_view project_version();
// coconut_build_info{program, version} 1, the version project_version().
void build_info(MetricsText& text, std::string_view program);

}  // namespace coconut::core
