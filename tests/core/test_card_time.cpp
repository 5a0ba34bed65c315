// The card clock: system time to BCD date/time in Hainan local time (UTC+8) and back.
#include <coconut/core/card_time.hpp>

#include <doctest/doctest.h>

using namespace coconut;
using namespace std::chrono;

namespace {

system_clock::time_point utc(int year, unsigned month, unsigned day, int hour, int minute, int second) {
    return sys_days{std::chrono::year{year} / month / day} + hours{hour} + minutes{minute} + seconds{second};
}

}  // namespace

TEST_CASE("card date and time are Hainan local time (UTC+8), BCD") {
    const CardDateTime morning = to_card_date_time(utc(2026, 11, 26, 0, 15, 0));
    CHECK(to_hex(morning.date) == "20261126");
    CHECK(to_hex(morning.time) == "081500");
    // 16:30 UTC is half past midnight of the next day in Hainan; the year rolls over too.
    const CardDateTime new_year = to_card_date_time(utc(2026, 12, 31, 16, 30, 59));
    CHECK(to_hex(new_year.date) == "20270101");
    CHECK(to_hex(new_year.time) == "003059");
    // Sub-second parts are dropped, not rounded.
    CHECK(to_card_date_time(utc(2026, 1, 1, 0, 0, 0) + milliseconds(999)) == to_card_date_time(utc(2026, 1, 1, 0, 0, 0)));
}

TEST_CASE("a card's BCD date and time back to an instant") {
    const auto when = utc(2026, 11, 26, 0, 15, 0);
    const CardDateTime card = to_card_date_time(when);
    Bytes bcd7(card.date.begin(), card.date.end());
    append(bcd7, card.time);
    CHECK(parse_card_time(bcd7) == when);
    CHECK_FALSE(parse_card_time(hex("2026112A081500")));  // not BCD
    CHECK_FALSE(parse_card_time(hex("20261326081500")));  // month 13
    CHECK_FALSE(parse_card_time(hex("20261100081500")));  // day 0
    CHECK_FALSE(parse_card_time(hex("202611260815")));    // too short
}

TEST_CASE("Hainan wall-clock fields to an instant") {
    std::tm local{};
    local.tm_year = 2026 - 1900;
    local.tm_mon = 0;
    local.tm_mday = 1;
    local.tm_hour = 7;
    CHECK(hainan_time_point(local) == utc(2025, 12, 31, 23, 0, 0));
}
