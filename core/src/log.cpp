// The daemons' log (log.hpp).
#include <coconut/core/log.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <mutex>
#include <random>

namespace coconut::log {
namespace {

struct LogState {
    Settings settings;
    bool journal = false;
    std::mutex write_mutex;
};

LogState& log_state() {
    static LogState s;
    return s;
}

thread_local std::string current_id;

// sd-daemon(3) priorities: err, warning, info, debug.
char journal_priority(Level level) {
    switch (level) {
        case Level::debug: return '7';
        case Level::info: return '6';
        case Level::warning: return '4';
        case Level::error: return '3';
    }
    return '6';
}

// Length of the valid UTF-8 sequence at `text[at]`, or 0 when it is not one.
std::size_t utf8_sequence(std::string_view text, std::size_t at) {
    const auto lead = static_cast<unsigned char>(text[at]);
    const std::size_t length = lead < 0x80 ? 1 : (lead >> 5) == 0x6 ? 2 : (lead >> 4) == 0xE ? 3 : (lead >> 3) == 0x1E ? 4 : 0;
    if (length == 0 || at + length > text.size()) return 0;
    for (std::size_t i = 1; i < length; ++i) {
        if ((static_cast<unsigned char>(text[at + i]) & 0xC0) != 0x80) return 0;
    }
    return length;
}

// A JSON string's content: quotes, backslashes and control characters escaped, bytes that are not UTF-8
// written as U+FFFD (a message may quote what a client sent).
void append_json_string(std::string& out, std::string_view text) {
    out += '"';
    for (std::size_t at = 0; at < text.size();) {
        const char c = text[at];
        const std::size_t length = utf8_sequence(text, at);
        if (length == 0) {
            out += "\\ufffd";
            ++at;
            continue;
        }
        if (c == '"' || c == '\\') {
            out += '\\';
            out += c;
        } else if (static_cast<unsigned char>(c) < 0x20) {
            std::array<char, 8> escaped{};
            std::snprintf(escaped.data(), escaped.size(), "\\u%04x", static_cast<unsigned>(c));
            out += escaped.data();
        } else {
            out.append(text.substr(at, length));
        }
        at += length;
    }
    out += '"';
}

// Text lines stay one line: a newline inside a message is written as "\n".
void append_text(std::string& out, std::string_view text) {
    for (const char c : text) {
        if (c == '\n') out += "\\n";
        else if (c == '\r') out += "\\r";
        else out += c;
    }
}

std::string format_json(bool with_time, std::chrono::system_clock::time_point time, Level level, std::string_view program,
                        std::string_view component, std::string_view request_id, std::string_view message,
                        std::initializer_list<Field> fields) {
    std::string out = "{";
    if (with_time) out += "\"time\":\"" + rfc3339_utc_ms(time) + "\",";
    out += "\"level\":\"" + std::string(level_name(level)) + "\",\"program\":";
    append_json_string(out, program);
    out += ",\"component\":";
    append_json_string(out, component);
    if (!request_id.empty()) {
        out += ",\"request_id\":";
        append_json_string(out, request_id);
    }
    out += ",\"message\":";
    append_json_string(out, message);
    for (const Field& field : fields) {
        out += ',';
        append_json_string(out, field.key);
        out += ':';
        if (field.quoted) append_json_string(out, field.value);
        else out += field.value;
    }
    out += '}';
    return out;
}

std::string format_text(bool with_time, std::chrono::system_clock::time_point time, Level level, std::string_view component,
                        std::string_view request_id, std::string_view message, std::initializer_list<Field> fields) {
    std::string out;
    if (with_time) out += rfc3339_utc_ms(time) + " ";
    out += level_name(level);
    out += ' ';
    out += component;
    out += ' ';
    out += request_id.empty() ? std::string_view("-") : request_id;
    out += ' ';
    append_text(out, message);
    for (const Field& field : fields) {
        out += ' ';
        out += field.key;
        out += '=';
        append_text(out, field.value);
    }
    return out;
}

}  // namespace

Field::Field(std::string_view k, double v) : key(k), quoted(false) {
    std::array<char, 32> text{};
    std::snprintf(text.data(), text.size(), "%.3f", v);
    value = text.data();
}

void configure(const Settings& settings) {
    LogState& s = log_state();
    s.settings = settings;
    s.journal = is_journal_stream(STDERR_FILENO);
}

const Settings& settings() { return log_state().settings; }

std::optional<Level> parse_level(std::string_view text) {
    if (text == "debug") return Level::debug;
    if (text == "info") return Level::info;
    if (text == "warning") return Level::warning;
    if (text == "error") return Level::error;
    return std::nullopt;
}

std::optional<Format> parse_format(std::string_view text) {
    if (text == "text") return Format::text;
    if (text == "json") return Format::json;
    return std::nullopt;
}

std::optional<Time> parse_time(std::string_view text) {
    if (text == "auto") return Time::automatic;
    if (text == "utc") return Time::utc;
    if (text == "none") return Time::none;
    return std::nullopt;
}

std::string_view level_name(Level level) {
    switch (level) {
        case Level::debug: return "debug";
        case Level::info: return "info";
        case Level::warning: return "warning";
        case Level::error: return "error";
    }
    return "info";
}

std::string rfc3339_utc_ms(std::chrono::system_clock::time_point time) {
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(time.time_since_epoch()).count();
    const std::time_t seconds = static_cast<std::time_t>(ms / 1000);
    std::tm utc{};
    gmtime_r(&seconds, &utc);
    std::array<char, 96> text{};  // room for any int the format could see
    std::snprintf(text.data(), text.size(), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", utc.tm_year + 1900, utc.tm_mon + 1, utc.tm_mday,
                  utc.tm_hour, utc.tm_min, utc.tm_sec, static_cast<int>(ms % 1000 + (ms < 0 ? 1000 : 0)) % 1000);
    return text.data();
}

bool is_journal_stream(int fd) {
    const char* value = std::getenv("JOURNAL_STREAM");
    if (value == nullptr) return false;
    unsigned long long device = 0, inode = 0;
    if (std::sscanf(value, "%llu:%llu", &device, &inode) != 2) return false;
    struct stat st {};
    if (::fstat(fd, &st) != 0) return false;
    return static_cast<unsigned long long>(st.st_dev) == device && static_cast<unsigned long long>(st.st_ino) == inode;
}

std::string format_line(const Settings& settings, bool journal, std::chrono::system_clock::time_point time, Level level,
                        std::string_view component, std::string_view request_id, std::string_view message,
                        std::initializer_list<Field> fields) {
    const bool with_time = settings.time == Time::utc || (settings.time == Time::automatic && !journal);
    std::string line;
    if (journal) line = std::string("<") + journal_priority(level) + ">";
    line += settings.format == Format::json ? format_json(with_time, time, level, settings.program, component, request_id, message, fields)
                                            : format_text(with_time, time, level, component, request_id, message, fields);
    return line;
}

bool enabled(Level level) { return level >= log_state().settings.level; }

void write(Level level, std::string_view component, std::string_view message, std::initializer_list<Field> fields) {
    if (!enabled(level)) return;
    LogState& s = log_state();
    std::string line =
        format_line(s.settings, s.journal, std::chrono::system_clock::now(), level, component, current_request_id(), message, fields);
    line += '\n';
    std::lock_guard lock(s.write_mutex);
    for (std::size_t written = 0; written < line.size();) {
        const ssize_t n = ::write(STDERR_FILENO, line.data() + written, line.size() - written);
        if (n <= 0) return;  // nowhere to report a log that cannot be written
        written += static_cast<std::size_t>(n);
    }
}

std::string new_request_id(char kind) {
    // 14 characters: kept inside std::string's own buffer, no allocation per request.
    static const std::uint32_t start = std::random_device{}() & 0xFFFF;
    static std::atomic<std::uint32_t> counter{0};
    std::array<char, 24> text{};
    std::snprintf(text.data(), text.size(), "%c-%04x%08x", kind, start, counter.fetch_add(1, std::memory_order_relaxed) + 1);
    return text.data();
}

const std::string& current_request_id() { return current_id; }

RequestScope::RequestScope(std::string id) : previous_(std::exchange(current_id, std::move(id))) {}

RequestScope::~RequestScope() { current_id = std::move(previous_); }

}  // namespace coconut::log
