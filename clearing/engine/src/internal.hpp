// Helpers shared by the engine's source files (private to coconut::clearing_engine).
#pragma once

#include <coconut/clearing/engine.hpp>
#include <coconut/clearing/log.hpp>
#include <coconut/core/assert.hpp>

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

// One answer per request handled (Engine::handle counted it in): the in-flight count never goes below zero.
inline void count_answered(EngineStats& stats) {
    const std::uint64_t before = stats.in_flight.fetch_sub(1);
    COCONUT_ASSERT(before > 0, "an answer for a request that was not in flight");
}
// An answer is its request's response: the response MTI (request + 10), the request's STAN and terminal
// echoed, a response code.
void check_answer(const iso8583::Message& request, const iso8583::Message& response);

}  // namespace coconut::clearing::detail
