// Statistics and the results table of the PC/SC benchmarks (card_bench, terminal_bench): median and p99 of
// a run of samples, operations per second, ratios of medians, one Markdown table row per operation.
// Header-only; each benchmark picks its column widths (docs/bench-*.md keep the tables as printed).
#pragma once

#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <string>
#include <vector>

namespace coconut::bench {

struct Stats {
    std::size_t count = 0;
    double median_us = 0;
    double p99_us = 0;
    double per_second = 0;  // count / the summed duration of the samples
};

inline Stats summarize(std::vector<std::int64_t> samples_ns) {
    Stats stats;
    if (samples_ns.empty()) return stats;
    double total_ns = 0;
    for (auto sample : samples_ns) total_ns += static_cast<double>(sample);
    std::sort(samples_ns.begin(), samples_ns.end());
    stats.count = samples_ns.size();
    stats.median_us = static_cast<double>(samples_ns[samples_ns.size() / 2]) / 1000.0;
    stats.p99_us = static_cast<double>(samples_ns[std::min(samples_ns.size() - 1, samples_ns.size() * 99 / 100)]) / 1000.0;
    stats.per_second = total_ns > 0 ? static_cast<double>(samples_ns.size()) * 1e9 / total_ns : 0;
    return stats;
}

// "2.50 x floor": a / b with `decimals` decimals.
inline std::string ratio_text(double a, double b, const char* of, int decimals) {
    char text[96];
    std::snprintf(text, sizeof text, "%.*f x %s", decimals, b > 0 ? a / b : 0.0, of);
    return text;
}

// "2026-11-26 20:48 UTC, Linux 6.1.0": when and where the run was made, for the line above the table.
inline std::string run_time_and_host() {
    utsname host{};
    ::uname(&host);
    const std::time_t now = std::time(nullptr);
    char when[64];
    std::strftime(when, sizeof when, "%Y-%m-%d %H:%M UTC", std::gmtime(&now));
    return std::string(when) + ", " + host.sysname + " " + host.release;
}

// | operation | count | per second | median us | p99 us | ratio (medians) |
class Table {
public:
    struct Layout {
        int name_width;
        int count_width;
        const char* per_second_title;
        int per_second_width;
        int ratio_width;       // 0: not padded
        int ratio_rule_width;  // dashes under the ratio title
    };

    explicit Table(Layout layout) : layout_(layout) {}

    void header() const {
        std::printf("| %-*s | %*s | %*s | %9s | %9s | %-*s |\n", layout_.name_width, "operation", layout_.count_width, "count",
                    layout_.per_second_width, layout_.per_second_title, "median us", "p99 us", layout_.ratio_width, "ratio (medians)");
        std::printf("|%s|%s|%s|%s|%s|%s|\n", rule(layout_.name_width + 2).c_str(), rule(layout_.count_width + 2).c_str(),
                    rule(layout_.per_second_width + 2).c_str(), rule(11).c_str(), rule(11).c_str(), rule(layout_.ratio_rule_width).c_str());
    }

    // show_rate: fill the per-second column (operations whose rate means something).
    void row(const std::string& name, const Stats& stats, const std::string& ratio, bool show_rate) const {
        char per_second[32] = "";
        if (show_rate) std::snprintf(per_second, sizeof per_second, "%.0f", stats.per_second);
        std::printf("| %-*s | %*zu | %*s | %9.1f | %9.1f | %-*s |\n", layout_.name_width, name.c_str(), layout_.count_width, stats.count,
                    layout_.per_second_width, per_second, stats.median_us, stats.p99_us, layout_.ratio_width, ratio.c_str());
    }

private:
    static std::string rule(int width) { return std::string(static_cast<std::size_t>(width), '-'); }
    Layout layout_;
};

}  // namespace coconut::bench
