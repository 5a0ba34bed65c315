// The clearing daemon's log (coconut/core/log.hpp: time, level, component, request id): failures that
// repeat per request rate-limited; the wall clock the engine and the HTTP API stamp records with. Part
// of coconut::clearing_engine.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>

namespace coconut::clearing::detail {

// One event of the engine, at level warning: something refused or failed that one request met.
void log_line(const std::string& line, std::string_view component = "engine");

// A failure that repeats once per request while its cause lasts (a full disk, an HSM behind an open
// breaker) is logged at most once per interval: the first at once, the following ones counted, the
// count written with the next line that goes out — "… (+N more <counted> since the previous such
// line)". Otherwise one cause writes a line per refused request (16,902 lines of one full disk).
inline constexpr std::chrono::seconds repeated_log_interval{10};

class LogLimiter {
public:
    // `counted` names what is counted, in the plural: "refused requests".
    explicit LogLimiter(std::string counted, std::chrono::steady_clock::duration interval = repeated_log_interval);
    // Writes `line` (level error) unless a line went out less than the interval ago; then only counts it.
    // Thread-safe.
    void log(const std::string& line);

private:
    const std::string counted_;
    const std::chrono::steady_clock::duration interval_;
    std::mutex mutex_;
    std::chrono::steady_clock::time_point last_line_{};
    bool logged_ = false;
    std::uint64_t held_ = 0;  // failures since the last line, not written
};

// The daemon's two limiters (process-wide: the log is). Storage: ledger commits refused (full disk,
// full map, I/O) and HTTP answers 503 storage. HSM: requests the HSM link could not answer.
void log_storage_failure(const std::string& line);
void log_hsm_failure(const std::string& line);
// Wall clock in ns since the Unix epoch (risk flag timestamps).
std::uint64_t wall_clock_ns();

}  // namespace coconut::clearing::detail
