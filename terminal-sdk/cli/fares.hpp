// The fares file of coconut-terminal (--fares FILE.json) → sdk::TransitConfig.
//
//   {
//     "repeat_tap_window_s": 60,     optional (60): a second tap on the same line (and, on distance lines,
//                                    the same station) inside this window is not charged
//     "journey_limit_min": 180,      optional (180): an entry older than this is charged the line's
//                                    maximum fare at the next tap
//     "lines": [
//       {"line": 1, "flat_fare_fen": 200, "operator_id": 1001},          flat: every tap pays 200 fen
//       {"line": 8, "fare_by_stops_fen": [100, 100, 200, 300], "operator_id": 1002}
//                                    distance: entry pays 0, exit pays fare_by_stops_fen[min(stops, last)]
//     ]
//   }
// Each line has exactly one of flat_fare_fen / fare_by_stops_fen; operator_id is optional (0).
#pragma once

#include <coconut/core/result.hpp>
#include <coconut/sdk/terminal.hpp>

#include <filesystem>
#include <string>

namespace coconut::terminal_cli {

// Bounds that catch a typo without limiting a real network: no bus fare reaches 10,000 CNY; no line has
// more than 255 stops; a province has fewer than 65,535 lines (the card's line field is u16).
inline constexpr std::uint32_t fare_fen_max = 1'000'000;
inline constexpr std::size_t fare_table_stops_max = 256;
inline constexpr std::uint32_t repeat_tap_window_s_max = 24 * 3600;
inline constexpr std::uint32_t journey_limit_min_max = 7 * 24 * 60;

// Reads and checks the file; the error names the file, the field and the problem.
Result<sdk::TransitConfig, std::string> load_fares(const std::filesystem::path& path);

}  // namespace coconut::terminal_cli
