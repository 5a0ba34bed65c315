// Helpers shared by the engine's source files (private to coconut::clearing_engine).
#pragma once

#include <coconut/clearing/engine.hpp>
#include <coconut/clearing/log.hpp>

#include <chrono>
#include <cstdint>
#include <mutex>
#include <span>
#include <string>

namespace coconut::clearing::detail {

// A card date-time as a number ordered like the time (YYYYMMDD ‖ hhmmss BCD, big-endian).
std::uint64_t when_number(const crypto::CardDateTime& when);
// Raises `flags` (at most risk_flags_per_message_max) inside a write transaction; the card's count of
// flags grows by the new ones (raising one twice keeps one).
lmdb::Status raise_flags(const Registry& registry, lmdb::Txn& txn, const Asn& asn, std::span<const RiskFlag> flags);

}  // namespace coconut::clearing::detail
