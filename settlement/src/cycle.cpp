// Business dates, cut-off windows, the settlement config and the durable cycle state (cycle.json).
#include "internal.hpp"

#include <coconut/core/durable_file.hpp>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <charconv>
#include <fstream>
#include <regex>
#include <sstream>

namespace coconut::settlement {

using nlohmann::json;

namespace {

constexpr std::string_view state_file = "cycle.json";
// Longest name and account the pain.001 elements take (Max140Text, Max34Text).
constexpr std::size_t debtor_name_chars_max = 140;
constexpr std::size_t account_chars_max = 34;

std::optional<unsigned> digits(std::string_view text) {
    unsigned value = 0;
    if (text.empty()) return std::nullopt;
    for (char c : text) {
        if (c < '0' || c > '9') return std::nullopt;
    }
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc{} || end != text.data() + text.size()) return std::nullopt;
    return value;
}

Error bad_input(std::string message) { return Error{ErrorCode::bad_input, std::move(message)}; }

Result<DebtorAccount> parse_debtor(const json& document, const char* key) {
    if (!document.contains(key) || !document[key].is_object()) return Unexpected{bad_input(fmt::format("config: \"{}\" missing", key))};
    const json& j = document[key];
    DebtorAccount d;
    for (auto [field, target] : {std::pair{"name", &d.name}, std::pair{"account", &d.account}, std::pair{"agent_bic", &d.agent_bic}}) {
        if (!j.contains(field) || !j[field].is_string()) {
            return Unexpected{bad_input(fmt::format("config: {}.{} missing or not a string", key, field))};
        }
        *target = j[field].get<std::string>();
    }
    if (d.name.empty() || d.name.size() > debtor_name_chars_max) {
        return Unexpected{bad_input(fmt::format("config: {}.name must have 1–{} characters", key, debtor_name_chars_max))};
    }
    if (d.account.empty() || d.account.size() > account_chars_max) {
        return Unexpected{bad_input(fmt::format("config: {}.account must have 1–{} characters", key, account_chars_max))};
    }
    // BICFIDec2014Identifier of the pain.001 XSD.
    static const std::regex bic("[A-Z0-9]{4}[A-Z]{2}[A-Z0-9]{2}([A-Z0-9]{3})?");
    if (!std::regex_match(d.agent_bic, bic)) {
        return Unexpected{bad_input(fmt::format("config: {}.agent_bic \"{}\" is not a BIC (8 or 11 characters)", key, d.agent_bic))};
    }
    for (auto& [name, value] : j.items()) {
        if (name != "name" && name != "account" && name != "agent_bic") {
            return Unexpected{bad_input(fmt::format("config: unknown field {}.{}", key, name))};
        }
    }
    return d;
}

json window_json(const Window& w) { return json{{"start_ns", w.start_ns}, {"end_ns", w.end_ns}}; }

json report_json(const ReconciliationReport& r) {
    json mismatched = json::array();
    for (const auto& m : r.mismatched) {
        mismatched.push_back({{"end_to_end_id", m.end_to_end_id}, {"expected_fen", m.expected_fen}, {"booked_fen", m.booked_fen}});
    }
    return json{
        {"matched", r.matched}, {"missing", r.missing}, {"mismatched", mismatched}, {"duplicates", r.duplicates}, {"unknown", r.unknown}};
}

ReconciliationReport report_from(const json& j) {
    ReconciliationReport r;
    r.matched = j.at("matched").get<std::vector<std::string>>();
    r.missing = j.at("missing").get<std::vector<std::string>>();
    for (const auto& m : j.at("mismatched")) {
        r.mismatched.push_back(
            {m.at("end_to_end_id").get<std::string>(), m.at("expected_fen").get<std::uint64_t>(), m.at("booked_fen").get<std::uint64_t>()});
    }
    r.duplicates = j.at("duplicates").get<std::vector<std::string>>();
    r.unknown = j.at("unknown").get<std::vector<std::string>>();
    return r;
}

std::string encode_record(const CycleRecord& r) {
    json j = {{"cycle", r.cycle},
              {"state", to_string(r.state)},
              {"window", window_json(r.window)},
              {"cutoff", format_cutoff(r.cutoff_seconds)},
              {"first_sequence", r.first_sequence},
              {"last_sequence", r.last_sequence},
              {"positions_sha256", r.positions_sha256},
              {"files", r.files},
              {"transfers_posted", r.transfers_posted}};
    if (r.reconciliation) j["reconciliation"] = report_json(*r.reconciliation);
    return j.dump(2) + "\n";
}

std::optional<CycleRecord> decode_record(const std::string& text) {
    try {
        const json j = json::parse(text);
        CycleRecord r;
        r.cycle = j.at("cycle").get<std::uint32_t>();
        auto state = parse_cycle_state(j.at("state").get<std::string>());
        auto cutoff = parse_cutoff(j.at("cutoff").get<std::string>());
        if (!state || !cutoff) return std::nullopt;
        r.state = *state;
        r.cutoff_seconds = *cutoff;
        r.window = {j.at("window").at("start_ns").get<std::uint64_t>(), j.at("window").at("end_ns").get<std::uint64_t>()};
        r.first_sequence = j.at("first_sequence").get<std::uint64_t>();
        r.last_sequence = j.at("last_sequence").get<std::uint64_t>();
        r.positions_sha256 = j.at("positions_sha256").get<std::string>();
        r.files = j.at("files").get<std::map<std::string, std::string>>();
        r.transfers_posted = j.at("transfers_posted").get<std::uint64_t>();
        if (j.contains("reconciliation")) r.reconciliation = report_from(j.at("reconciliation"));
        return r;
    } catch (const json::exception&) {
        return std::nullopt;
    }
}

}  // namespace

std::string_view to_string(ErrorCode code) {
    switch (code) {
        case ErrorCode::bad_input: return "bad_input";
        case ErrorCode::too_early: return "too_early";
        case ErrorCode::storage: return "storage";
        case ErrorCode::conflict: return "conflict";
        case ErrorCode::unbalanced: return "unbalanced";
        case ErrorCode::posting: return "posting";
        case ErrorCode::locked: return "locked";
        case ErrorCode::invalid_file: return "invalid_file";
        case ErrorCode::incomplete: return "incomplete";
        case ErrorCode::wrong_state: return "wrong_state";
        case ErrorCode::untrusted: return "untrusted";
        case ErrorCode::behind: return "behind";
        case ErrorCode::refused: return "refused";
    }
    return "unknown";
}

// ---- dates ------------------------------------------------------------------------------------------

std::optional<Date> parse_date(std::string_view text) {
    if (text.size() != 10 || text[4] != '-' || text[7] != '-') return std::nullopt;
    auto y = digits(text.substr(0, 4));
    auto m = digits(text.substr(5, 2));
    auto d = digits(text.substr(8, 2));
    if (!y || !m || !d) return std::nullopt;
    const Date date{std::chrono::year{static_cast<int>(*y)}, std::chrono::month{*m}, std::chrono::day{*d}};
    if (!date.ok() || *y < 2000) return std::nullopt;
    return date;
}

std::string format_date(const Date& date) {
    return fmt::format("{:04}-{:02}-{:02}", static_cast<int>(date.year()), static_cast<unsigned>(date.month()),
                       static_cast<unsigned>(date.day()));
}

std::uint32_t cycle_id(const Date& date) {
    return static_cast<std::uint32_t>(static_cast<int>(date.year())) * 10000 + static_cast<unsigned>(date.month()) * 100 +
           static_cast<unsigned>(date.day());
}

std::optional<Date> date_of_cycle(std::uint32_t id) {
    const Date date{std::chrono::year{static_cast<int>(id / 10000)}, std::chrono::month{id / 100 % 100}, std::chrono::day{id % 100}};
    if (!date.ok() || id / 10000 < 2000) return std::nullopt;
    return date;
}

std::optional<std::uint32_t> parse_cutoff(std::string_view text) {
    if ((text.size() != 5 && text.size() != 8) || text[2] != ':' || (text.size() == 8 && text[5] != ':')) return std::nullopt;
    auto h = digits(text.substr(0, 2));
    auto m = digits(text.substr(3, 2));
    auto s = text.size() == 8 ? digits(text.substr(6, 2)) : std::optional<unsigned>{0};
    if (!h || !m || !s || *m > 59 || *s > 59) return std::nullopt;
    const std::uint32_t seconds = *h * 3600 + *m * 60 + *s;
    if (seconds == 0 || seconds > seconds_per_day) return std::nullopt;
    return seconds;
}

std::string format_cutoff(std::uint32_t seconds) {
    if (seconds % 60 == 0) return fmt::format("{:02}:{:02}", seconds / 3600, seconds / 60 % 60);
    return fmt::format("{:02}:{:02}:{:02}", seconds / 3600, seconds / 60 % 60, seconds % 60);
}

std::uint64_t cutoff_ns(const Date& date, std::uint32_t cutoff_seconds) {
    const std::int64_t midnight_utc_s = std::chrono::sys_days(date).time_since_epoch().count() * std::int64_t{86400};
    const std::int64_t cutoff_s = midnight_utc_s + std::int64_t{cutoff_seconds} - local_utc_offset_s;
    return static_cast<std::uint64_t>(cutoff_s) * ns_per_s;
}

std::string_view to_string(CycleState state) {
    switch (state) {
        case CycleState::open: return "open";
        case CycleState::computed: return "computed";
        case CycleState::files_written: return "files_written";
        case CycleState::posted: return "posted";
        case CycleState::reconciled: return "reconciled";
    }
    return "unknown";
}

std::optional<CycleState> parse_cycle_state(std::string_view text) {
    for (auto s : {CycleState::open, CycleState::computed, CycleState::files_written, CycleState::posted, CycleState::reconciled}) {
        if (to_string(s) == text) return s;
    }
    return std::nullopt;
}

// ---- config -----------------------------------------------------------------------------------------

Result<Config> parse_config(std::string_view json_text) {
    json document;
    try {
        document = json::parse(json_text);
    } catch (const json::exception& e) {
        return Unexpected{bad_input(fmt::format("config: not JSON: {}", e.what()))};
    }
    if (!document.is_object()) return Unexpected{bad_input("config: not a JSON object")};
    Config config;
    for (auto& [name, value] : document.items()) {
        if (name == "initiator_name") {
            if (!value.is_string() || value.get<std::string>().empty() || value.get<std::string>().size() > debtor_name_chars_max) {
                return Unexpected{bad_input("config: initiator_name must be a string of 1–140 characters")};
            }
            config.initiator_name = value.get<std::string>();
        } else if (name == "cutoff") {
            auto cutoff = value.is_string() ? parse_cutoff(value.get<std::string>()) : std::nullopt;
            if (!cutoff) return Unexpected{bad_input("config: cutoff must be \"HH:MM\" or \"HH:MM:SS\" from 00:00:01 to 24:00")};
            config.cutoff_seconds = *cutoff;
        } else if (name != "purse_float" && name != "medical_fund") {
            return Unexpected{bad_input(fmt::format("config: unknown field {}", name))};
        }
    }
    COCONUT_TRY(purse, parse_debtor(document, "purse_float"));
    COCONUT_TRY(medical, parse_debtor(document, "medical_fund"));
    config.purse_float = std::move(purse);
    config.medical_fund = std::move(medical);
    return config;
}

// ---- state ------------------------------------------------------------------------------------------

std::filesystem::path cycle_directory(const std::filesystem::path& out, std::uint32_t cycle) { return out / fmt::format("{}", cycle); }

Result<std::optional<CycleRecord>> load_cycle(const std::filesystem::path& out, std::uint32_t cycle) {
    const auto path = cycle_directory(out, cycle) / state_file;
    std::error_code ec;
    if (!std::filesystem::exists(path, ec)) return std::optional<CycleRecord>();
    auto text = read_text_file(path);
    if (!text) return Unexpected{text.error()};
    auto record = decode_record(*text);
    if (!record || record->cycle != cycle) {
        return Unexpected{Error{ErrorCode::storage, fmt::format("{} does not decode: a damaged cycle state", path.string())}};
    }
    return std::optional<CycleRecord>(std::move(*record));
}

Status save_cycle(const std::filesystem::path& out, const CycleRecord& record) {
    const auto dir = cycle_directory(out, record.cycle);
    if (auto made = make_directory_durably(dir); !made) return made;
    const std::string text = encode_record(record);
    COCONUT_ASSERT(decode_record(text).has_value());  // pair assertion: what is written reads back
    if (auto written = write_file_atomically(dir / state_file, as_bytes(text), 0600); !written)
        return Unexpected{Error{ErrorCode::storage, "cannot save the cycle state: " + written.error().message()}};
    return Ok{};
}

Result<std::vector<CycleRecord>> list_cycles(const std::filesystem::path& out) {
    std::vector<CycleRecord> records;
    std::error_code ec;
    if (!std::filesystem::is_directory(out, ec)) return records;
    for (const auto& entry : std::filesystem::directory_iterator(out, ec)) {
        const std::string name = entry.path().filename().string();
        auto id = digits(name);
        if (!entry.is_directory() || name.size() != 8 || !id || !date_of_cycle(*id)) continue;
        auto record = load_cycle(out, *id);
        if (!record) return Unexpected{record.error()};
        if (*record) records.push_back(std::move(**record));
    }
    if (ec) return Unexpected{Error{ErrorCode::storage, fmt::format("cannot list {}: {}", out.string(), ec.message())}};
    std::sort(records.begin(), records.end(), [](const auto& a, const auto& b) { return a.cycle < b.cycle; });
    return records;
}

Result<Window> cycle_window(const std::filesystem::path& out, const Date& date, std::uint32_t cutoff_seconds) {
    const Date previous{std::chrono::sys_days(date) - std::chrono::days{1}};
    const Date next{std::chrono::sys_days(date) + std::chrono::days{1}};
    Window window{cutoff_ns(previous, cutoff_seconds), cutoff_ns(date, cutoff_seconds)};
    COCONUT_TRY(before, load_cycle(out, cycle_id(previous)));
    if (before) window.start_ns = before->window.end_ns;
    COCONUT_TRY(after, load_cycle(out, cycle_id(next)));
    if (after && after->window.start_ns != window.end_ns) {
        return Unexpected{
            Error{ErrorCode::conflict, fmt::format("cycle {} starts at {} ns but this cut-off ({}) ends cycle {} at {} ns: use the "
                                                   "cut-off the next cycle was run with ({})",
                                                   cycle_id(next), after->window.start_ns, format_cutoff(cutoff_seconds), cycle_id(date),
                                                   window.end_ns, format_cutoff(after->cutoff_seconds))}};
    }
    if (window.start_ns >= window.end_ns) {
        return Unexpected{bad_input(fmt::format("cycle {}: the window is empty (the previous cycle ended at {} ns, this cut-off is {} ns)",
                                                cycle_id(date), window.start_ns, window.end_ns))};
    }
    return window;
}

// ---- shared helpers ---------------------------------------------------------------------------------

std::string format_fen(std::int64_t fen) {
    const bool negative = fen < 0;
    const std::uint64_t magnitude = negative ? 0 - static_cast<std::uint64_t>(fen) : static_cast<std::uint64_t>(fen);
    return fmt::format("{}{}.{:02}", negative ? "-" : "", magnitude / 100, magnitude % 100);
}

Result<std::string> read_text_file(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return Unexpected{Error{ErrorCode::storage, fmt::format("cannot read {}", path.string())}};
    std::ostringstream text;
    text << in.rdbuf();
    if (in.bad()) return Unexpected{Error{ErrorCode::storage, fmt::format("cannot read {}", path.string())}};
    return text.str();
}

ByteView as_bytes(std::string_view text) { return {reinterpret_cast<const std::uint8_t*>(text.data()), text.size()}; }

Status make_directory_durably(const std::filesystem::path& dir) {
    std::error_code ec;
    if (std::filesystem::is_directory(dir, ec)) return Ok{};
    std::filesystem::create_directories(dir, ec);
    if (ec) return Unexpected{Error{ErrorCode::storage, fmt::format("cannot create {}: {}", dir.string(), ec.message())}};
    // The new directory's name survives a crash only once its parent is fsynced.
    if (auto synced = fsync_parent_directory(dir); !synced)
        return Unexpected{Error{ErrorCode::storage, fmt::format("cannot create {}: {}", dir.string(), synced.error().message())}};
    return Ok{};
}

}  // namespace coconut::settlement
