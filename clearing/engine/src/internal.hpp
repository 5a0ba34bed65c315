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

namespace coconut::clearing {

// What funds a load-shaped credit to the purse, by its processing code: 210000 the float (cash at the
// terminal), 280000 the card's carried holding (ISO8583.md §4.2a), 200000 the payable of the participant
// whose purchase it refunds (§4.10).
enum class CreditFunding : std::uint8_t { float_account, carried, refund };

// One online request in flight (online.cpp, refunds.cpp).
struct Engine::Online {
    iso8583::Message request;
    Respond respond;
    bool advice = false;  // 0420: acknowledged whatever we find
    std::string terminal_id;
    TerminalRecord terminal;
    std::uint32_t stan = 0;
    std::uint32_t batch_number = 0;
    std::uint64_t amount_fen = 0;
    CardRecord card;
    ledger::Id transfer_id;   // the pending load or hold
    ledger::Id reversal_key;  // 0400 / 0420: names the reversal whatever is found (counted once)
    ledger::Id digest;
    LoadAttempt attempt;
    iso8583::LoadRequestData load;
    iso8583::LoadConfirmationData confirmation;
    iso8583::ClinicAuthorizationData clinic;
    std::uint64_t held_fen = 0;
    bool challenge_claimed = false;                        // 0100: clinic.challenge is in challenges_in_flight_ until answered
    CreditFunding funding = CreditFunding::float_account;  // a load-shaped credit (0200 / 0220 / 0400): who pays it
    ledger::Id refunded_purchase;                          // 200000 (0200, cash refund): the purchase DF13 names
    bool refund_claimed = false;                           // refunded_purchase is in refunds_in_flight_ until answered
    ledger::Id source_account;                             // 0220 of a credit: the account its 0200 debited (a late booking debits it too)
    bool inquiry = false;                                  // processing code 313000: the medical account's balance, no hold
    // Added to the answer.
    std::optional<std::uint64_t> field4;
    std::optional<std::string> field54;
    std::optional<std::string> field62;
};

}  // namespace coconut::clearing

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

// online.cpp — shared by the online flows:
// The card an online request names (field 2 = the ASN's rightmost 16 digits), or the code refusing it:
// 14 unknown or not field 2's; with `refuse_hotlisted`, 41 lost or replaced, 62 any other status but active.
coconut::Result<CardRecord, iso8583::ResponseCode> online_card(const Registry& registry, std::string_view pan, const Asn& asn,
                                                               bool refuse_hotlisted);
// Same id, different content (exists_with_different_*).
bool duplicate(ledger::ResultCode code);
// The terminal's last STAN and, with `total`, its current batch's totals, inside a booking's transaction.
lmdb::Status count_terminal(const Registry& registry, lmdb::Txn& txn, const std::string& terminal_id, std::uint32_t stan,
                            std::uint32_t batch_number, std::optional<BatchTotal> total, std::uint64_t amount_fen);
// The Hainan (UTC+8) calendar day of an instant, as days since the epoch: a refund must be booked on the day of
// what it refunds (ISO8583.md §4.10).
inline std::int64_t hainan_day(std::uint64_t ns) {
    constexpr std::int64_t offset_s = 8 * 3600;
    constexpr std::int64_t day_s = 86'400;
    return (static_cast<std::int64_t>(ns / 1'000'000'000ULL) + offset_s) / day_s;
}

}  // namespace coconut::clearing::detail
