#include <coconut/core/assert.hpp>
#include <coconut/core/metrics.hpp>

#include <fmt/format.h>

#include <sys/resource.h>
#include <unistd.h>

#include <charconv>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <vector>

namespace coconut::core {

namespace {

bool valid_name(std::string_view name) {
    if (name.empty()) return false;
    for (std::size_t i = 0; i < name.size(); ++i) {
        const char c = name[i];
        const bool letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
        if (!letter && !(i > 0 && c >= '0' && c <= '9')) return false;
    }
    return true;
}

// A label value as the text format quotes it.
void append_escaped(std::string& out, std::string_view value) {
    for (char c : value) {
        if (c == '\\') out += "\\\\";
        else if (c == '"') out += "\\\"";
        else if (c == '\n') out += "\\n";
        else out += c;
    }
}

void append_labels(std::string& out, std::span<const Label> labels, std::string_view le = {}) {
    if (labels.empty() && le.empty()) return;
    out += '{';
    bool first = true;
    for (const auto& [name, value] : labels) {
        COCONUT_ASSERT(valid_name(name), "a label name is a constant of the caller");
        out += first ? "" : ",";
        first = false;
        out += name;
        out += "=\"";
        append_escaped(out, value);
        out += '"';
    }
    if (!le.empty()) fmt::format_to(std::back_inserter(out), "{}le=\"{}\"", first ? "" : ",", le);
    out += '}';
}

// Fields of /proc/self/stat after the command name (which may hold spaces and parentheses): the
// first is field 3 (state).
std::optional<std::vector<std::string>> stat_fields() {
    std::ifstream file("/proc/self/stat");
    std::string line;
    if (!std::getline(file, line)) return std::nullopt;
    const auto close = line.rfind(')');
    if (close == std::string::npos) return std::nullopt;
    std::istringstream rest(line.substr(close + 1));
    std::vector<std::string> fields;
    for (std::string field; rest >> field;) fields.push_back(field);
    return fields;
}

std::optional<double> number(const std::vector<std::string>& fields, std::size_t field) {
    const std::size_t index = field - 3;  // fields[0] is field 3
    if (index >= fields.size()) return std::nullopt;
    std::uint64_t value = 0;
    const std::string& text = fields[index];
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
    return static_cast<double>(value);
}

// The boot time (seconds since the epoch) from /proc/stat's btime line.
std::optional<double> boot_time_s() {
    std::ifstream file("/proc/stat");
    for (std::string line; std::getline(file, line);) {
        if (line.rfind("btime ", 0) == 0) return std::stod(line.substr(6));
    }
    return std::nullopt;
}

void one(MetricsText& text, std::string_view name, std::string_view type, std::string_view help, double value) {
    text.family(name, type, help);
    text.sample(name, value);
}

}  // namespace

void MetricsText::family(std::string_view name, std::string_view type, std::string_view help) {
    COCONUT_ASSERT(valid_name(name), "a metric name is a constant of the caller");
    fmt::format_to(std::back_inserter(out), "# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

void MetricsText::sample(std::string_view name, std::uint64_t value, std::initializer_list<Label> labels) {
    out += name;
    append_labels(out, std::span<const Label>(labels.begin(), labels.size()));
    fmt::format_to(std::back_inserter(out), " {}\n", value);
}

void MetricsText::sample(std::string_view name, double value, std::initializer_list<Label> labels) {
    sample(name, value, std::span<const Label>(labels.begin(), labels.size()));
}

void MetricsText::sample(std::string_view name, double value, std::span<const Label> labels) {
    out += name;
    append_labels(out, labels);
    fmt::format_to(std::back_inserter(out), " {}\n", value);
}

void MetricsText::counter(std::string_view name, std::string_view help, std::uint64_t value) {
    family(name, "counter", help);
    sample(name, value);
}

void MetricsText::gauge(std::string_view name, std::string_view help, std::uint64_t value) {
    family(name, "gauge", help);
    sample(name, value);
}

void MetricsText::histogram(std::string_view name, std::span<const std::uint64_t> bounds, std::span<const std::uint64_t> counts,
                            std::uint64_t sum, double unit, std::initializer_list<Label> labels) {
    COCONUT_ASSERT(counts.size() == bounds.size() + 1, "one count per bucket and one above every bound");
    const std::span<const Label> label_span(labels.begin(), labels.size());
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i <= bounds.size(); ++i) {
        cumulative += counts[i];
        out += name;
        out += "_bucket";
        append_labels(out, label_span, i < bounds.size() ? fmt::format("{:g}", static_cast<double>(bounds[i]) * unit) : "+Inf");
        fmt::format_to(std::back_inserter(out), " {}\n", cumulative);
    }
    out += name;
    out += "_sum";
    append_labels(out, label_span);
    fmt::format_to(std::back_inserter(out), " {}\n", static_cast<double>(sum) * unit);
    out += name;
    out += "_count";
    append_labels(out, label_span);
    fmt::format_to(std::back_inserter(out), " {}\n", cumulative);
}

void process_metrics(MetricsText& text) {
    const double ticks_per_s = static_cast<double>(::sysconf(_SC_CLK_TCK));
    const double page_bytes = static_cast<double>(::sysconf(_SC_PAGESIZE));
    if (auto fields = stat_fields(); fields && ticks_per_s > 0) {
        // proc(5): 14 utime, 15 stime (clock ticks), 22 starttime (ticks after boot), 23 vsize (bytes), 24 rss (pages).
        const auto user = number(*fields, 14), system = number(*fields, 15), start = number(*fields, 22);
        const auto virtual_bytes = number(*fields, 23), resident_pages = number(*fields, 24);
        if (user && system)
            one(text, "process_cpu_seconds_total", "counter", "user and system CPU time spent in seconds", (*user + *system) / ticks_per_s);
        if (resident_pages)
            one(text, "process_resident_memory_bytes", "gauge", "resident memory size in bytes", *resident_pages * page_bytes);
        if (virtual_bytes) one(text, "process_virtual_memory_bytes", "gauge", "virtual memory size in bytes", *virtual_bytes);
        if (const auto boot = boot_time_s(); boot && start)
            one(text, "process_start_time_seconds", "gauge", "start time of the process since the Unix epoch in seconds",
                *boot + *start / ticks_per_s);
    }
    std::error_code ec;
    std::size_t open = 0;
    for (std::filesystem::directory_iterator it("/proc/self/fd", ec), end; !ec && it != end; it.increment(ec)) ++open;
    // The iterator's own descriptor on /proc/self/fd is one of those counted: not the daemon's.
    if (!ec && open > 0) one(text, "process_open_fds", "gauge", "number of open file descriptors", static_cast<double>(open - 1));
    struct rlimit limit {};
    if (::getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY)
        one(text, "process_max_fds", "gauge", "maximum number of open file descriptors", static_cast<double>(limit.rlim_cur));
}

std::string_view project_version() { return COCONUT_PROJECT_VERSION; }

void build_info(MetricsText& text, std::string_view program) {
    text.family("coconut_build_info", "gauge", "always 1: the program and its version");
    text.sample("coconut_build_info", std::uint64_t{1}, {{"program", program}, {"version", project_version()}});
}

}  // namespace coconut::core
