// Bus fares as a pure function (fares.hpp) and the bus record's encoding (coconut/cos/layout.hpp).
#include "test_sdk_support.hpp"

using namespace sdk_test;
namespace br = cos::bus_record;

namespace fares_test {

TransitConfig config() {
    TransitConfig c;
    c.lines[1] = LineFare{1, false, 200, {}, 7};
    c.lines[2] = LineFare{2, true, 0, {200, 200, 300, 400, 500}, 8};
    c.lines[3] = LineFare{3, true, 0, {100, 150}, 9};
    return c;
}

// A bus record as a tap at `when` (Hainan time on the card) left it.
br::BusRecord last_tap(std::uint8_t state, std::uint16_t line, std::uint16_t station, std::chrono::system_clock::time_point when) {
    br::BusRecord r;
    r.state = state;
    r.line = line;
    r.station = station;
    const crypto::CardDateTime t = to_card_date_time(when);
    std::copy(t.date.begin(), t.date.end(), r.date_time.begin());
    std::copy(t.time.begin(), t.time.end(), r.date_time.begin() + 4);
    return r;
}

TapRequest tap_at(std::uint16_t line, std::uint16_t station) { return TapRequest{line, station, 77}; }

TapPricing priced(const TapRequest& tap, const br::BusRecord& last, std::chrono::system_clock::time_point now) {
    auto p = price_tap(config(), tap, last, now);
    REQUIRE(p.has_value());
    return *p;
}

}  // namespace fares_test

using namespace fares_test;

TEST_CASE("fares: a flat line charges its flat fare; a fresh card has no journey") {
    const auto now = base_time();
    const TapPricing p = priced(tap_at(1, 4), br::BusRecord{}, now);
    CHECK(p.result == TapResult::charged_flat);
    CHECK(p.fare_fen == 200);
    CHECK(p.kind == TapKind::flat);
    CHECK(p.new_state == br::state_closed);
}

TEST_CASE("fares: a distance line charges nothing at entry and the table's fare for the stops at exit") {
    const auto now = base_time();
    const TapPricing in = priced(tap_at(2, 3), br::BusRecord{}, now);
    CHECK(in.result == TapResult::entered);
    CHECK(in.fare_fen == 0);
    CHECK(in.kind == TapKind::entry);
    CHECK(in.new_state == br::state_entered);
    const auto entered = last_tap(br::state_entered, 2, 3, now);
    const auto later = now + std::chrono::minutes(20);
    for (const auto& [exit_station, fare] :
         std::vector<std::pair<std::uint16_t, std::uint32_t>>{{4, 200}, {5, 300}, {6, 400}, {1, 300}, {7, 500}, {30, 500}}) {
        const TapPricing out = priced(tap_at(2, exit_station), entered, later);
        CHECK(out.result == TapResult::exited);
        CHECK(out.fare_fen == fare);
        CHECK(out.kind == TapKind::exit);
        CHECK(out.entry_line == 2);
        CHECK(out.entry_station == 3);
        CHECK(out.new_state == br::state_closed);
    }
    CHECK(config().lines.at(2).fare(3, 3) == 200);  // no stop travelled: the first entry of the table
}

TEST_CASE("fares: the same tap again inside the window is free; after it, or elsewhere, it is charged") {
    const auto now = base_time();
    const auto flat_tap = last_tap(br::state_closed, 1, 4, now);
    CHECK(priced(tap_at(1, 4), flat_tap, now + std::chrono::seconds(59)).result == TapResult::repeat_no_charge);
    CHECK(priced(tap_at(1, 9), flat_tap, now + std::chrono::seconds(10)).result == TapResult::repeat_no_charge);  // any station
    CHECK(priced(tap_at(1, 4), flat_tap, now + std::chrono::seconds(60)).result == TapResult::charged_flat);
    CHECK(priced(tap_at(1, 4), flat_tap, now - std::chrono::seconds(5)).result == TapResult::charged_flat);  // clock went back
    const auto entered = last_tap(br::state_entered, 2, 3, now);
    CHECK(priced(tap_at(2, 3), entered, now + std::chrono::seconds(30)).result == TapResult::repeat_no_charge);
    CHECK(priced(tap_at(2, 4), entered, now + std::chrono::seconds(30)).result == TapResult::exited);
    // A flat tap right after an entry on that line number is another ride: the open journey is charged.
    const auto entered_flat = last_tap(br::state_entered, 1, 4, now);
    CHECK(priced(tap_at(1, 4), entered_flat, now + std::chrono::seconds(5)).kind == TapKind::unfinished);
}

TEST_CASE("fares: an open journey not closed by this tap is charged its line's maximum fare") {
    const auto now = base_time();
    const auto entered = last_tap(br::state_entered, 2, 3, now);
    // On another line: the flat fare plus line 2's maximum.
    const TapPricing flat = priced(tap_at(1, 1), entered, now + std::chrono::minutes(10));
    CHECK(flat.result == TapResult::charged_flat);
    CHECK(flat.fare_fen == 200 + 500);
    CHECK(flat.kind == TapKind::unfinished);
    // Entering another distance line: line 2's maximum now, a new journey open.
    const TapPricing other = priced(tap_at(3, 1), entered, now + std::chrono::minutes(10));
    CHECK(other.result == TapResult::entered);
    CHECK(other.fare_fen == 500);
    CHECK(other.kind == TapKind::unfinished);
    CHECK(other.new_state == br::state_entered);
    // The same line after the journey limit: the old entry is charged, this tap enters again.
    const TapPricing expired = priced(tap_at(2, 5), entered, now + std::chrono::minutes(180));
    CHECK(expired.result == TapResult::entered);
    CHECK(expired.fare_fen == 500);
    CHECK(expired.kind == TapKind::unfinished);
    // An entry on a line without a fare table here is charged this line's maximum.
    const auto unknown_line = last_tap(br::state_entered, 99, 1, now);
    CHECK(priced(tap_at(3, 2), unknown_line, now + std::chrono::minutes(1)).fare_fen == 150);
}

TEST_CASE("fares: a line without a fare table has no price") {
    CHECK_FALSE(price_tap(config(), tap_at(42, 1), br::BusRecord{}, base_time()).has_value());
}

TEST_CASE("fares: a record whose date is not BCD has no time: never a repeat, never expired") {
    br::BusRecord entered = last_tap(br::state_entered, 2, 3, base_time());
    entered.date_time[0] = 0xFF;
    const TapPricing p = priced(tap_at(2, 3), entered, base_time());
    CHECK(p.result == TapResult::exited);
    CHECK(p.fare_fen == 200);
}

TEST_CASE("bus record: encode and decode are each other's inverse; the layout's fixed bytes") {
    br::BusRecord r = last_tap(br::state_entered, 0x1234, 0x0506, base_time());
    r.vehicle = 0xA1B2C3D4;
    r.terminal_id = {0x00, 0x00, 0x01, 0x00, 0x00, 0x50};
    r.fare_fen = 650;
    r.operator_id = 1001;
    r.entry_line = 0x0102;
    r.entry_station = 0x0304;
    const Bytes bytes = br::encode(r);
    REQUIRE(bytes.size() == cos::capp_record_size);
    CHECK(bytes[br::record_id] == br::record_id_value);
    CHECK(bytes[br::length] == 0x30);
    CHECK(bytes[br::lock_flag] == 0);
    CHECK(to_hex(ByteView(bytes).subspan(br::line, 4)) == "12340506");
    CHECK(std::all_of(bytes.begin() + 37, bytes.end(), [](std::uint8_t b) { return b == 0; }));
    const auto decoded = br::decode(bytes);
    REQUIRE(decoded.has_value());
    CHECK(*decoded == r);
    CHECK_FALSE(br::decode(ByteView(bytes).first(47)).has_value());
}
