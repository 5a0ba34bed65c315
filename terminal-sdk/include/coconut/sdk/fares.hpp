/// @file
/// Bus fares as a pure function: what a tap costs, from the line's fare table, the tap (line, station)
/// and the journey the card's bus record (EF1A, coconut/cos/layout.hpp) holds. No card, no queue, no
/// clock: Terminal::transit_tap reads the record, asks price_tap, and writes what it answers.
#pragma once

#include <coconut/cos/layout.hpp>
#include <coconut/sdk/queue.hpp>

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string_view>
#include <vector>

namespace coconut::sdk {

/// Fares of one line. Flat: every tap pays flat_fare_fen. Distance: entry pays nothing, exit pays
/// fare_by_stops[min(|exit − entry|, last)].
struct LineFare {
    std::uint16_t line = 0;
    bool distance_based = false;
    std::uint32_t flat_fare_fen = 0;
    std::vector<std::uint32_t> fare_by_stops;
    std::uint32_t operator_id = 0;
    std::uint32_t max_fare_fen() const;
    std::uint32_t fare(std::uint16_t entry_station, std::uint16_t exit_station) const;
};

/// The fare tables of a validator (Terminal::transit_tap): lines, the repeat-tap window, the journey limit.
struct TransitConfig {
    std::map<std::uint16_t, LineFare> lines;
    /// A second tap on the same line (and station) inside this window is the same passenger tapping twice.
    std::chrono::seconds repeat_tap_window{60};
    /// An entry older than this is an unfinished journey: charged the maximum fare at the next tap.
    std::chrono::minutes journey_limit{180};
};

/// Where a bus tap happens: line, station, vehicle.
struct TapRequest {
    std::uint16_t line = 0;
    std::uint16_t station = 0;
    std::uint32_t vehicle = 0;
};

enum class TapResult : std::uint8_t {
    charged_flat,      ///< flat fare charged
    entered,           ///< tapped in (and any unfinished journey charged)
    exited,            ///< tapped out, fare charged
    repeat_no_charge,  ///< the same tap again inside the window: gate opens, nothing charged
};
std::string_view to_string(TapResult result);

/// What a tap costs and what the card's bus record says afterwards.
struct TapPricing {
    TapResult result = TapResult::entered;
    /// 0 for repeat_no_charge.
    std::uint32_t fare_fen = 0;
    /// How it was priced (the queue record's tap_kind); none for a repeat.
    TapKind kind = TapKind::none;
    /// The journey state written to EF1A.
    std::uint8_t new_state = cos::bus_record::state_closed;
    /// Exited: where the journey started.
    std::uint16_t entry_line = 0;
    std::uint16_t entry_station = 0;
};

/// The price of `tap` for a card whose bus record is `last`, at `now` (Hainan time on the card):
///   - the same tap again inside config.repeat_tap_window (same line; same station on a distance line;
///     on a flat line only when no journey is open) is free: repeat_no_charge;
///   - an open journey this tap does not close (another line, a flat line, or older than
///     config.journey_limit) is charged its line's maximum fare with this tap (TapKind::unfinished);
///   - flat line: the flat fare; distance line: an entry pays nothing, an exit on the entry's line pays
///     LineFare::fare(entry station, exit station).
/// nullopt when the tap's line has no fare table.
std::optional<TapPricing> price_tap(const TransitConfig& config, const TapRequest& tap, const cos::bus_record::BusRecord& last,
                                    std::chrono::system_clock::time_point now);

}  // namespace coconut::sdk
