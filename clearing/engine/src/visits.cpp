// The clinic visit link (ISO8583.md §4.9): a 0320 whose DF11 names a medical hold is recorded as that
// visit's purse part when the hold is this card's, from this terminal, and the purchase's card time lies
// within the hold's life. Display only: nothing here moves money or refuses a booking.
#include "internal.hpp"

#include <coconut/core/card_time.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <ctime>

namespace coconut::clearing::detail {

namespace {

// Minutes a terminal's clock may be off between the hold and the purchase (they come from one terminal).
constexpr auto clock_slack = std::chrono::minutes(5);

using TimePoint = std::chrono::system_clock::time_point;

// A Place's YYMMDDhhmm (Hainan time) as an instant; nullopt when zero or not a date.
std::optional<TimePoint> place_time(const std::array<std::uint8_t, 5>& bcd) {
    if (std::all_of(bcd.begin(), bcd.end(), [](std::uint8_t b) { return b == 0; })) return std::nullopt;
    Bytes card{0x20};
    card.insert(card.end(), bcd.begin(), bcd.end());
    card.push_back(0x00);  // seconds
    return parse_card_time(card);
}

// Why the hold cannot be this purchase's visit, or nothing when it can.
std::optional<std::string> visit_mismatch(const ledger::Transfer& hold, const iso8583::PurseTransaction& t) {
    if (hold.code != transfer_codes::clinic_medical || (hold.flags & ledger::transfer_flags::pending) == 0) return "not a clinic hold";
    if (hold.debit_account_id != medical_account(t.asn)) return "another card's hold";
    const Place place = parse_place(hold.user_data_128);
    if (place.terminal_id != t.terminal_id) return "another terminal's hold";
    Bytes when(t.when.date.begin(), t.when.date.end());
    append(when, t.when.time);
    const auto card_time = parse_card_time(when);
    if (!card_time) return "card time not a date";
    // The hold's start on the terminal's clock (its 0100's field 7), else the clearing's booking time.
    const TimePoint start =
        place_time(place.local_time_bcd)
            .value_or(TimePoint(std::chrono::duration_cast<TimePoint::duration>(std::chrono::nanoseconds(hold.timestamp))));
    if (*card_time + clock_slack < start || *card_time > start + std::chrono::seconds(hold.timeout_s) + clock_slack)
        return "card time outside the hold's life";
    return std::nullopt;
}

}  // namespace

std::array<std::uint8_t, 5> hold_local_time(std::string_view field7, std::uint64_t now_ns) {
    std::array<std::uint8_t, 5> none{};
    if (field7.size() != 10 || !std::all_of(field7.begin(), field7.end(), [](char c) { return c >= '0' && c <= '9'; })) return none;
    auto two = [&](std::size_t at) { return (field7[at] - '0') * 10 + (field7[at + 1] - '0'); };
    const auto now = static_cast<std::time_t>(now_ns / 1'000'000'000ULL);
    std::tm now_tm{};
    gmtime_r(&now, &now_tm);
    std::optional<std::time_t> best;
    for (int year = now_tm.tm_year - 1; year <= now_tm.tm_year + 1; ++year) {  // the year nearest to now
        std::tm tm{};
        tm.tm_year = year;
        tm.tm_mon = two(0) - 1;
        tm.tm_mday = two(2);
        tm.tm_hour = two(4);
        tm.tm_min = two(6);
        tm.tm_sec = two(8);
        const std::time_t at = timegm(&tm);
        if (!best || std::llabs(at - now) < std::llabs(*best - now)) best = at;
    }
    const CardDateTime local = to_card_date_time(std::chrono::system_clock::from_time_t(*best));
    return {local.date[1], local.date[2], local.date[3], local.time[0], local.time[1]};
}

lmdb::Status link_visit(const ledger::Ledger& ledger, const Registry& registry, lmdb::Txn& txn, const iso8583::PurseTransaction& t,
                        std::string_view terminal_id41, const ledger::Id& purchase_id) {
    COCONUT_ASSERT(t.visit.has_value(), "only a purchase with DF11 names a visit");
    const ledger::Id hold_id = clinic_hold_transfer(terminal_id41, t.visit->batch_number, t.visit->stan);
    auto hold = ledger.lookup_transfer(txn, hold_id);
    if (!hold) return Unexpected<lmdb::Error>{lmdb::Error{EIO, "lookup_transfer", hold.error().message}};
    std::optional<std::string> refused = *hold ? visit_mismatch(**hold, t) : std::optional<std::string>("no such hold");
    if (!refused) {
        auto linked = registry.put_visit(txn, hold_id, purchase_id);
        if (!linked) return Unexpected<lmdb::Error>{linked.error()};
        if (*linked) return Ok{};
        refused = "the visit has its purse part";
    }
    log_line(fmt::format("0320 from {}: DF11 visit {:06}/{:06} not linked ({}); the purchase is booked as any", terminal_id41,
                         t.visit->batch_number, t.visit->stan, *refused));
    return Ok{};
}

}  // namespace coconut::clearing::detail
