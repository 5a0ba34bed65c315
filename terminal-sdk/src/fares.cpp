// Bus fares (fares.hpp): the fare tables and the pricing of one tap, pure functions.
#include <coconut/core/assert.hpp>
#include <coconut/core/card_time.hpp>
#include <coconut/sdk/fares.hpp>

#include <algorithm>

namespace coconut::sdk {

std::uint32_t LineFare::max_fare_fen() const {
    if (!distance_based) return flat_fare_fen;
    return fare_by_stops.empty() ? 0 : *std::max_element(fare_by_stops.begin(), fare_by_stops.end());
}

std::uint32_t LineFare::fare(std::uint16_t entry_station, std::uint16_t exit_station) const {
    if (!distance_based) return flat_fare_fen;
    if (fare_by_stops.empty()) return 0;
    const std::size_t stops = entry_station > exit_station ? entry_station - exit_station : exit_station - entry_station;
    return fare_by_stops[std::min(stops, fare_by_stops.size() - 1)];
}

std::string_view to_string(TapResult result) {
    switch (result) {
        case TapResult::charged_flat: return "charged_flat";
        case TapResult::entered: return "entered";
        case TapResult::exited: return "exited";
        case TapResult::repeat_no_charge: return "repeat_no_charge";
    }
    return "entered";
}

namespace {

namespace br = cos::bus_record;

// The same tap again inside the window: the same line, and the same station on a distance line; on a flat
// line only while no journey is open (a flat tap after an entry is another ride).
bool repeated_tap(const TransitConfig& config, const LineFare& line, const TapRequest& tap, const br::BusRecord& last,
                  std::optional<std::chrono::system_clock::time_point> last_time, std::chrono::system_clock::time_point now) {
    const bool recent = last_time && now - *last_time >= std::chrono::seconds(0) && now - *last_time < config.repeat_tap_window;
    const bool entered = last.state == br::state_entered;
    return recent && last.line == tap.line && (!line.distance_based || last.station == tap.station) && (line.distance_based || !entered);
}

// The maximum fare of the line an open journey started on (this tap's line if that one is unknown).
std::uint32_t unfinished_fare_of(const TransitConfig& config, const LineFare& line, const br::BusRecord& last) {
    const auto open_line = config.lines.find(last.line);
    return open_line != config.lines.end() ? open_line->second.max_fare_fen() : line.max_fare_fen();
}

}  // namespace

std::optional<TapPricing> price_tap(const TransitConfig& config, const TapRequest& tap, const br::BusRecord& last,
                                    std::chrono::system_clock::time_point now) {
    const auto line_it = config.lines.find(tap.line);
    if (line_it == config.lines.end()) return std::nullopt;
    const LineFare& line = line_it->second;
    const auto last_time = parse_card_time(last.date_time);
    if (repeated_tap(config, line, tap, last, last_time, now))
        return TapPricing{TapResult::repeat_no_charge, 0, TapKind::none, last.state, 0, 0};

    // An open journey that this tap does not close is charged its line's maximum fare now.
    const bool entered = last.state == br::state_entered;
    const bool expired_entry = entered && last_time && now - *last_time >= config.journey_limit;
    const bool closes_journey = entered && !expired_entry && line.distance_based && last.line == tap.line;
    const std::uint32_t unfinished_fare = entered && !closes_journey ? unfinished_fare_of(config, line, last) : 0;

    TapPricing p;
    if (!line.distance_based) {
        p.result = TapResult::charged_flat;
        p.fare_fen = line.flat_fare_fen + unfinished_fare;
        p.kind = unfinished_fare ? TapKind::unfinished : TapKind::flat;
        p.new_state = br::state_closed;
    } else if (closes_journey) {
        p.result = TapResult::exited;
        p.entry_line = last.line;
        p.entry_station = last.station;
        p.fare_fen = line.fare(last.station, tap.station);
        p.kind = TapKind::exit;
        p.new_state = br::state_closed;
    } else {
        p.result = TapResult::entered;
        p.fare_fen = unfinished_fare;
        p.kind = unfinished_fare ? TapKind::unfinished : TapKind::entry;
        p.new_state = br::state_entered;
    }
    COCONUT_ASSERT(p.kind != TapKind::none && (p.result == TapResult::exited) == (p.kind == TapKind::exit));
    return p;
}

}  // namespace coconut::sdk
