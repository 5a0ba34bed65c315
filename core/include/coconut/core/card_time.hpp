// The card clock: the date and time a card, a PSAM and the HSM take in purchase, load and TAC inputs —
// BCD YYYYMMDD and hhmmss in Hainan local time (hainan_utc_offset, UTC+8 all year; docs/CARD-SPEC.md).
// The one conversion between system time and card time.
#pragma once

#include <coconut/core/bytes.hpp>
#include <coconut/core/identifiers.hpp>

#include <array>
#include <chrono>
#include <cstdint>
#include <ctime>
#include <optional>

namespace coconut {

struct CardDateTime {
    std::array<std::uint8_t, 4> date{};  // BCD YYYYMMDD
    std::array<std::uint8_t, 3> time{};  // BCD hhmmss
    friend bool operator==(const CardDateTime&, const CardDateTime&) = default;
};

// The card date and time of a system-clock instant.
CardDateTime to_card_date_time(std::chrono::system_clock::time_point when);

// The instant of a Hainan wall-clock time given as calendar fields (tm_year since 1900, tm_mon 0–11,
// tm_mday, tm_hour, tm_min, tm_sec; fields out of range carry over as timegm(3) does).
std::chrono::system_clock::time_point hainan_time_point(const std::tm& local);

// The instant of a card's 7-byte BCD YYYYMMDDhhmmss (a record's date and time); nullopt if a nibble is
// not a digit or the month or day is out of range.
std::optional<std::chrono::system_clock::time_point> parse_card_time(ByteView bcd7);

}  // namespace coconut
