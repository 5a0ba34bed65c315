#include "fares.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <fstream>

namespace coconut::terminal_cli {
namespace {

using nlohmann::json;

// An unsigned integer field within [0, max]; `where` names it for the error.
Result<std::uint64_t, std::string> unsigned_field(const json& object, const char* name, std::uint64_t max, const std::string& where) {
    const json& value = object.at(name);
    if (!value.is_number_integer() || value.get<std::int64_t>() < 0 || value.get<std::uint64_t>() > max)
        return Unexpected{fmt::format("{}.{}: expected an integer from 0 to {}", where, name, max)};
    return value.get<std::uint64_t>();
}

Result<sdk::LineFare, std::string> parse_line(const json& entry, const std::string& where) {
    if (!entry.is_object()) return Unexpected{where + ": expected an object"};
    for (const auto& [key, _] : entry.items())
        if (key != "line" && key != "flat_fare_fen" && key != "fare_by_stops_fen" && key != "operator_id")
            return Unexpected{fmt::format("{}: unknown field '{}'", where, key)};
    if (!entry.contains("line")) return Unexpected{where + ": missing 'line'"};
    sdk::LineFare fare;
    auto line = unsigned_field(entry, "line", 0xFFFF, where);
    if (!line) return Unexpected{line.error()};
    if (*line == 0) return Unexpected{where + ".line: line numbers start at 1"};
    fare.line = static_cast<std::uint16_t>(*line);
    const bool flat = entry.contains("flat_fare_fen");
    const bool distance = entry.contains("fare_by_stops_fen");
    if (flat == distance)
        return Unexpected{fmt::format("{} (line {}): give exactly one of 'flat_fare_fen' and 'fare_by_stops_fen'", where, fare.line)};
    if (flat) {
        auto value = unsigned_field(entry, "flat_fare_fen", fare_fen_max, where);
        if (!value) return Unexpected{value.error()};
        fare.flat_fare_fen = static_cast<std::uint32_t>(*value);
    } else {
        const json& table = entry.at("fare_by_stops_fen");
        if (!table.is_array() || table.empty() || table.size() > fare_table_stops_max)
            return Unexpected{
                fmt::format("{}.fare_by_stops_fen: expected 1 to {} fares (index = stops travelled)", where, fare_table_stops_max)};
        fare.distance_based = true;
        for (std::size_t i = 0; i < table.size(); ++i) {
            const json& f = table[i];
            if (!f.is_number_integer() || f.get<std::int64_t>() < 0 || f.get<std::uint64_t>() > fare_fen_max)
                return Unexpected{fmt::format("{}.fare_by_stops_fen[{}]: expected an integer from 0 to {}", where, i, fare_fen_max)};
            fare.fare_by_stops.push_back(f.get<std::uint32_t>());
        }
    }
    if (entry.contains("operator_id")) {
        auto op = unsigned_field(entry, "operator_id", 0xFFFFFFFF, where);
        if (!op) return Unexpected{op.error()};
        fare.operator_id = static_cast<std::uint32_t>(*op);
    }
    return fare;
}

}  // namespace

Result<sdk::TransitConfig, std::string> load_fares(const std::filesystem::path& path) {
    std::ifstream in(path);
    if (!in) return Unexpected{fmt::format("{}: cannot open the fares file", path.string())};
    const json doc = json::parse(in, nullptr, false);
    if (doc.is_discarded()) return Unexpected{fmt::format("{}: not valid JSON", path.string())};
    const std::string file = path.string();
    if (!doc.is_object()) return Unexpected{file + ": expected a JSON object with 'lines'"};
    for (const auto& [key, _] : doc.items())
        if (key != "lines" && key != "repeat_tap_window_s" && key != "journey_limit_min")
            return Unexpected{fmt::format("{}: unknown field '{}'", file, key)};

    sdk::TransitConfig config;
    if (doc.contains("repeat_tap_window_s")) {
        auto window = unsigned_field(doc, "repeat_tap_window_s", repeat_tap_window_s_max, file);
        if (!window) return Unexpected{window.error()};
        config.repeat_tap_window = std::chrono::seconds(*window);
    }
    if (doc.contains("journey_limit_min")) {
        auto limit = unsigned_field(doc, "journey_limit_min", journey_limit_min_max, file);
        if (!limit) return Unexpected{limit.error()};
        config.journey_limit = std::chrono::minutes(*limit);
    }
    if (!doc.contains("lines") || !doc.at("lines").is_array() || doc.at("lines").empty())
        return Unexpected{file + ": 'lines' must be a non-empty array"};
    const json& lines = doc.at("lines");
    for (std::size_t i = 0; i < lines.size(); ++i) {
        auto fare = parse_line(lines[i], fmt::format("{}: lines[{}]", file, i));
        if (!fare) return Unexpected{fare.error()};
        if (!config.lines.emplace(fare->line, *fare).second)
            return Unexpected{fmt::format("{}: lines[{}]: line {} appears twice", file, i, fare->line)};
    }
    return config;
}

}  // namespace coconut::terminal_cli
