// Helpers shared by the engine's source files (not part of the library's API).
#pragma once

#include <coconut/clearing/clearing.hpp>

#include <cstdint>
#include <span>
#include <string>

namespace coconut::clearing::detail {

// One line on stderr, prefixed with the daemon's name (the daemon's log).
void log_line(const std::string& line);
// Wall clock in ns since the Unix epoch (risk flag timestamps).
std::uint64_t wall_clock_ns();
// A card date-time as a number ordered like the time (YYYYMMDD ‖ hhmmss BCD, big-endian).
std::uint64_t when_number(const crypto::CardDateTime& when);
// Raises `flags` (at most risk_flags_per_message_max) inside a write transaction; the card's count of
// flags grows by the new ones (raising one twice keeps one).
lmdb::Status raise_flags(const Registry& registry, lmdb::Txn& txn, const Asn& asn, std::span<const RiskFlag> flags);

}  // namespace coconut::clearing::detail
