// Helpers shared by the engine's source files (not part of the library's API).
#pragma once

#include <cstdint>
#include <string>

namespace coconut::clearing::detail {

// One line on stderr, prefixed with the daemon's name (the daemon's log).
void log_line(const std::string& line);
// Wall clock in ns since the Unix epoch (risk flag timestamps).
std::uint64_t wall_clock_ns();

}  // namespace coconut::clearing::detail
