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

// visits.cpp: records the 0320 `t` (booked as `purchase_id`, DF11 present) as the purse part of the
// clinic visit its DF11 names when that hold is the card's, from the same terminal, and the card time
// lies within the hold's life (ISO8583.md §4.9); otherwise logs why not. Never refuses the booking.
lmdb::Status link_visit(const ledger::Ledger& ledger, const Registry& registry, lmdb::Txn& txn, const iso8583::PurseTransaction& t,
                        std::string_view terminal_id41, const ledger::Id& purchase_id);

// The Place time of a clinic hold (ISO8583.md §4.9): its 0100's field 7 (MMDDhhmmss, UTC, the terminal's
// clock) in Hainan time as YYMMDDhhmm, in the year that puts it nearest to `now_ns`; zeros if not digits.
std::array<std::uint8_t, 5> hold_local_time(std::string_view field7, std::uint64_t now_ns);

// One answer per request handled (Engine::handle counted it in): the in-flight count never goes below zero.
inline void count_answered(EngineStats& stats) {
    const std::uint64_t before = stats.in_flight.fetch_sub(1);
    COCONUT_ASSERT(before > 0, "an answer for a request that was not in flight");
}
// An answer is its request's response: the response MTI (request + 10), the request's STAN and terminal
// echoed, a response code.
void check_answer(const iso8583::Message& request, const iso8583::Message& response);

}  // namespace coconut::clearing::detail
