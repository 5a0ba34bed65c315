// The daemon's log (log.hpp).
#include <coconut/clearing/log.hpp>
#include <coconut/core/log.hpp>

#include <fmt/format.h>

#include <utility>

namespace coconut::clearing::detail {

std::uint64_t wall_clock_ns() {
    return static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch()).count());
}

void log_line(const std::string& line, std::string_view component) { log::warning(component, line); }

LogLimiter::LogLimiter(std::string counted, std::chrono::steady_clock::duration interval)
    : counted_(std::move(counted)), interval_(interval) {}

void LogLimiter::log(const std::string& line) {
    const auto now = std::chrono::steady_clock::now();
    std::uint64_t held = 0;
    {
        std::lock_guard lock(mutex_);
        if (logged_ && now - last_line_ < interval_) {
            ++held_;
            return;
        }
        logged_ = true;
        last_line_ = now;
        held = std::exchange(held_, 0);
    }
    log::error("engine", held == 0 ? line : fmt::format("{} (+{} more {} since the previous such line)", line, held, counted_));
}

void log_storage_failure(const std::string& line) {
    static LogLimiter limiter("refused requests");
    limiter.log(line);
}

void log_hsm_failure(const std::string& line) {
    static LogLimiter limiter("HSM failures");
    limiter.log(line);
}

}  // namespace coconut::clearing::detail
