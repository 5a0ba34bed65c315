// The daemons' log: one line per event on stderr, with its time, level, component and the id of the
// request it belongs to (docs/CLI.md "Logs").
//
//   text  2026-12-06T23:10:00.123Z info engine t-5f3a00000002 0200 from SHOP0001 STAN 12: …
//   json  {"time":"2026-12-06T23:10:00.123Z","level":"info","program":"coconut-clearingd",
//          "component":"engine","request_id":"t-5f3a00000002","message":"0200 from …"}
//
// Text: time (RFC 3339, UTC, milliseconds), level, component, request id ("-" when the line belongs to
// none), message, then the event's fields as key=value. JSON: one object per line with the same names
// ("time" and "request_id" absent when there is none) and each field as a member of its own.
//
// Under systemd (stderr is the journal: JOURNAL_STREAM names stderr's device and inode) no time is
// written — journald stamps every line itself — and each line starts with its syslog priority, <3>
// to <7> (sd-daemon(3)), which journald takes as the entry's priority and strips. Never colour.
//
// A request id is made where a request enters (an ISO 8583 frame: "t-…", an HTTP request: "h-…") and
// set for the thread handling it with a RequestScope; work continued on another thread (the ledger
// writer, an HSM answer) carries it there with carry_request_id(). Thread-safe: each line is one
// write(2) to stderr.
#pragma once

#include <chrono>
#include <concepts>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace coconut::log {

enum class Level : std::uint8_t { debug, info, warning, error };
enum class Format : std::uint8_t { text, json };
// automatic: UTC, or none when stderr is the journal.
enum class Time : std::uint8_t { automatic, utc, none };

struct Settings {
    std::string program = "coconut";  // the JSON "program" member
    Format format = Format::text;
    Time time = Time::automatic;
    Level level = Level::info;  // lines below it are dropped
};

// Process-wide; call before the threads that log start. Reads JOURNAL_STREAM once.
void configure(const Settings& settings);
const Settings& settings();

// "debug" | "info" | "warning" | "error"; "text" | "json"; "auto" | "utc" | "none".
std::optional<Level> parse_level(std::string_view text);
std::optional<Format> parse_format(std::string_view text);
std::optional<Time> parse_time(std::string_view text);
std::string_view level_name(Level level);

// One field of an event: a string, or a number written as such in JSON.
struct Field {
    Field(std::string_view k, std::string_view v) : key(k), value(v), quoted(true) {}
    Field(std::string_view k, const char* v) : key(k), value(v), quoted(true) {}
    template <std::integral Integer>
    Field(std::string_view k, Integer v) : key(k), value(std::to_string(v)), quoted(false) {}
    Field(std::string_view k, double v);  // three decimals
    std::string_view key;
    std::string value;
    bool quoted;
};

// Writes one event (when its level is at or above the configured one).
void write(Level level, std::string_view component, std::string_view message, std::initializer_list<Field> fields = {});
inline void debug(std::string_view component, std::string_view message) { write(Level::debug, component, message); }
inline void info(std::string_view component, std::string_view message) { write(Level::info, component, message); }
inline void warning(std::string_view component, std::string_view message) { write(Level::warning, component, message); }
inline void error(std::string_view component, std::string_view message) { write(Level::error, component, message); }
bool enabled(Level level);

// The line write() would send, without its newline: for tests. `journal`: stderr is the journal.
std::string format_line(const Settings& settings, bool journal, std::chrono::system_clock::time_point time, Level level,
                        std::string_view component, std::string_view request_id, std::string_view message,
                        std::initializer_list<Field> fields = {});
// 2026-12-06T23:10:00.123Z
std::string rfc3339_utc_ms(std::chrono::system_clock::time_point time);
// Whether JOURNAL_STREAM ("DEVICE:INODE") names the file open on `fd`.
bool is_journal_stream(int fd);

// ---- request ids ---------------------------------------------------------------------------------------

// A new id, unique in this process and unlikely to repeat across restarts: `kind`, '-', 12 hex digits
// (16 random bits drawn at start, a 32-bit counter).
std::string new_request_id(char kind);
// The id of the request this thread works for ("" when none).
const std::string& current_request_id();

// Sets the current request id for its lifetime, restoring the previous one after.
class RequestScope {
public:
    explicit RequestScope(std::string id);
    ~RequestScope();
    RequestScope(const RequestScope&) = delete;
    RequestScope& operator=(const RequestScope&) = delete;

private:
    std::string previous_;
};

// `f`, to be called later (on any thread) under the request id current now.
template <class F>
auto carry_request_id(F f) {
    return [id = current_request_id(), f = std::move(f)](auto&&... args) mutable {
        RequestScope scope(id);
        return f(std::forward<decltype(args)>(args)...);
    };
}

}  // namespace coconut::log
