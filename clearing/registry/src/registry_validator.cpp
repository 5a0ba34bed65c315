// The registry entries' validator (registry_validator.hpp).
#include <coconut/clearing/registry_validator.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <initializer_list>

namespace coconut::clearing {

namespace {

using Json = nlohmann::json;

template <class T>
EntryResult<T> refuse(std::string problem) {
    return Unexpected<std::string>{std::move(problem)};
}

std::string field(std::string_view key) { return "\"" + std::string(key) + "\""; }

bool printable(std::string_view s) {
    return std::all_of(s.begin(), s.end(), [](char c) { return c >= 0x20 && c <= 0x7E; });
}

// Well-formed UTF-8 (no overlong form, surrogate or code point above U+10FFFF) without control characters
// (C0, DEL, C1): a name as people write it, 海口公交 as well as Haikou Bus.
bool utf8_text(std::string_view s) {
    for (std::size_t i = 0; i < s.size();) {
        const auto lead = static_cast<unsigned char>(s[i]);
        std::size_t length = 0;
        std::uint32_t cp = 0, min = 0;
        if (lead < 0x80) length = 1, cp = lead;
        else if (lead >= 0xC2 && lead <= 0xDF) length = 2, cp = lead & 0x1Fu, min = 0x80;
        else if (lead >= 0xE0 && lead <= 0xEF) length = 3, cp = lead & 0x0Fu, min = 0x800;
        else if (lead >= 0xF0 && lead <= 0xF4) length = 4, cp = lead & 0x07u, min = 0x10000;
        else return false;
        if (i + length > s.size()) return false;
        for (std::size_t k = 1; k < length; ++k) {
            const auto next = static_cast<unsigned char>(s[i + k]);
            if ((next & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (next & 0x3Fu);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
        if (cp < 0x20 || (cp >= 0x7F && cp <= 0x9F)) return false;
        i += length;
    }
    return true;
}

constexpr std::string_view name_rule = "\"name\" must be UTF-8 text of 1 to 128 bytes without control characters";

// What a text field must be: printable ASCII of `min_chars` … `max_chars` characters.
std::string text_rule(std::string_view key, std::size_t min_chars, std::size_t max_chars) {
    if (min_chars == 0) return field(key) + " must be printable ASCII text of at most " + std::to_string(max_chars) + " characters";
    return field(key) + " must be printable ASCII text of " + std::to_string(min_chars) + " to " + std::to_string(max_chars) +
           " characters";
}

std::optional<std::string> text_problem(std::string_view key, std::string_view text, std::size_t min_chars, std::size_t max_chars) {
    if (text.size() >= min_chars && text.size() <= max_chars && printable(text)) return std::nullopt;
    return text_rule(key, min_chars, max_chars);
}

std::optional<std::string> unknown_field(const Json& entry, std::initializer_list<const char*> keys) {
    for (auto it = entry.begin(); it != entry.end(); ++it) {
        const bool known = std::any_of(keys.begin(), keys.end(), [&](const char* k) { return it.key() == k; });
        if (!known) return "unknown field " + field(it.key());
    }
    return std::nullopt;
}

// An unsigned integer min … max; `fallback` when the field is absent (required when there is none).
EntryResult<std::uint64_t> unsigned_field(const Json& entry, const char* key, std::uint64_t min, std::uint64_t max,
                                          std::optional<std::uint64_t> fallback = std::nullopt) {
    if (!entry.contains(key)) {
        if (fallback) return *fallback;
        return refuse<std::uint64_t>("missing " + field(key));
    }
    const Json& v = entry.at(key);
    if (!v.is_number_unsigned() || v.get<std::uint64_t>() < min || v.get<std::uint64_t>() > max) {
        return refuse<std::uint64_t>(field(key) + " must be an integer " + std::to_string(min) + ".." + std::to_string(max));
    }
    return v.get<std::uint64_t>();
}

// A string field's text; absent: `fallback` when there is one, else missing. A value that is no string
// is refused with the field's own rule (`rule`, as text_problem words it).
EntryResult<std::string> string_field(const Json& entry, const char* key, const std::string& rule,
                                      std::optional<std::string> fallback = std::nullopt) {
    if (!entry.contains(key)) {
        if (fallback) return *fallback;
        return refuse<std::string>("missing " + field(key));
    }
    const Json& v = entry.at(key);
    if (!v.is_string()) return refuse<std::string>(rule);
    return v.get<std::string>();
}

// `digit_count` decimal digits as packed BCD into `out`.
template <std::size_t N>
bool read_bcd(const std::string& text, std::size_t digit_count, std::array<std::uint8_t, N>& out) {
    if (text.size() != digit_count) return false;
    auto bcd = digits_to_bcd(text);
    if (!bcd || bcd->size() != N) return false;
    std::copy(bcd->begin(), bcd->end(), out.begin());
    return true;
}

template <std::size_t N>
bool valid_bcd(const std::array<std::uint8_t, N>& bcd) {
    return std::all_of(bcd.begin(), bcd.end(), [](std::uint8_t b) { return (b >> 4) <= 9 && (b & 0x0F) <= 9; });
}

const std::string asn_rule = "\"asn\" must be 20 digits";
const std::string psam_rule = "\"psam_terminal_id\" must be 12 digits";
const std::string issuer_rule = "\"issuer_id\" must be 16 hex digits";
const std::string kind_rule = "\"kind\" must be bus, shop, clinic or counter";
const std::string status_rule = "\"status\" must be active, lost or blocked";
const std::string terminal_id_rule = "\"terminal_id\" must be 8 characters (field 41)";

}  // namespace

std::optional<std::string> participant_problem(const Participant& p) {
    if (p.id == 0 || p.id > participant_id_max) return "\"id\" must be an integer 1.." + std::to_string(participant_id_max);
    if (p.name.empty() || p.name.size() > name_chars_max || !utf8_text(p.name)) return std::string(name_rule);
    if (p.kind != "bus" && p.kind != "shop" && p.kind != "clinic" && p.kind != "counter") return kind_rule;
    if (auto bad = text_problem("bank_account", p.bank_account, 1, bank_account_chars_max)) return bad;
    if (p.fee_rate_bp > fee_rate_bp_max) return "\"fee_rate_bp\" must be an integer 0.." + std::to_string(fee_rate_bp_max);
    return std::nullopt;
}

std::optional<std::string> terminal_problem(const TerminalRecord& t) {
    if (t.terminal_id.size() != terminal_id_chars || !printable(t.terminal_id)) return terminal_id_rule;
    if (!valid_bcd(t.psam_terminal_id)) return psam_rule;
    if (t.participant_id > participant_id_max) {
        return "\"participant_id\" must be an integer 0.." + std::to_string(participant_id_max);
    }
    if (auto bad = text_problem("merchant_id", t.merchant_id, 0, merchant_id_chars_max)) return bad;
    return std::nullopt;
}

std::optional<std::string> card_problem(const CardRecord& c) {
    if (!valid_bcd(c.asn)) return asn_rule;
    if (c.status != CardStatus::active && c.status != CardStatus::lost && c.status != CardStatus::blocked) return status_rule;
    if (c.opening_balance_fen > opening_balance_fen_max) {
        return "\"purse_balance_fen\" must be an integer 0.." + std::to_string(opening_balance_fen_max);
    }
    if (c.medical_opening_fen > opening_balance_fen_max) {
        return "\"medical_balance_fen\" must be an integer 0.." + std::to_string(opening_balance_fen_max);
    }
    return std::nullopt;
}

EntryResult<Participant> read_participant(const Json& entry) {
    if (!entry.is_object()) return refuse<Participant>("not an object");
    if (auto bad = unknown_field(entry, {"id", "name", "kind", "bank_account", "fee_rate_bp"})) return refuse<Participant>(*bad);
    Participant p;
    auto id = unsigned_field(entry, "id", 1, participant_id_max);
    if (!id) return refuse<Participant>(id.error());
    p.id = *id;
    for (auto [key, out, rule] : {std::tuple{"name", &p.name, std::string(name_rule)}, std::tuple{"kind", &p.kind, std::string(kind_rule)},
                                  std::tuple{"bank_account", &p.bank_account, text_rule("bank_account", 1, bank_account_chars_max)}}) {
        auto text = string_field(entry, key, rule);
        if (!text) return refuse<Participant>(text.error());
        *out = std::move(text).value();
    }
    auto fee = unsigned_field(entry, "fee_rate_bp", 0, fee_rate_bp_max, 0);
    if (!fee) return refuse<Participant>(fee.error());
    p.fee_rate_bp = static_cast<std::uint32_t>(*fee);
    if (auto bad = participant_problem(p)) return refuse<Participant>(*bad);
    return p;
}

EntryResult<TerminalRecord> read_terminal(const Json& entry) {
    if (!entry.is_object()) return refuse<TerminalRecord>("not an object");
    if (auto bad = unknown_field(entry, {"terminal_id", "psam_terminal_id", "participant_id", "merchant_id"})) {
        return refuse<TerminalRecord>(*bad);
    }
    TerminalRecord t;
    auto id = string_field(entry, "terminal_id", terminal_id_rule);
    if (!id) return refuse<TerminalRecord>(id.error());
    t.terminal_id = std::move(id).value();
    auto psam = string_field(entry, "psam_terminal_id", psam_rule);
    if (!psam) return refuse<TerminalRecord>(psam.error());
    if (!read_bcd(*psam, 12, t.psam_terminal_id)) return refuse<TerminalRecord>(psam_rule);
    auto participant = unsigned_field(entry, "participant_id", 0, participant_id_max);
    if (!participant) return refuse<TerminalRecord>(participant.error());
    t.participant_id = *participant;
    auto merchant = string_field(entry, "merchant_id", text_rule("merchant_id", 0, merchant_id_chars_max), "");
    if (!merchant) return refuse<TerminalRecord>(merchant.error());
    t.merchant_id = std::move(merchant).value();
    if (auto bad = terminal_problem(t)) return refuse<TerminalRecord>(*bad);
    return t;
}

namespace {

// The card's identity: ASN (BCD) and issuer id (hex).
std::optional<std::string> read_card_identity(const Json& entry, CardRecord& c) {
    auto asn = string_field(entry, "asn", asn_rule);
    if (!asn) return asn.error();
    if (!read_bcd(*asn, 20, c.asn)) return asn_rule;
    auto issuer_text = string_field(entry, "issuer_id", issuer_rule);
    if (!issuer_text) return issuer_text.error();
    auto issuer = from_hex(*issuer_text);
    if (!issuer || issuer->size() != c.issuer_id.size()) return issuer_rule;
    std::copy(issuer->begin(), issuer->end(), c.issuer_id.begin());
    return std::nullopt;
}

}  // namespace

EntryResult<CardRecord> read_card(const Json& entry) {
    if (!entry.is_object()) return refuse<CardRecord>("not an object");
    // "person": the holder (lifecycle.hpp: read_registry_persons reads it), not part of the card record.
    if (auto bad =
            unknown_field(entry, {"asn", "issuer_id", "status", "purse_balance_fen", "medical_balance_fen", "tac_key_version", "person"})) {
        return refuse<CardRecord>(*bad);
    }
    CardRecord c;
    if (auto bad = read_card_identity(entry, c)) return refuse<CardRecord>(*bad);
    auto status_text = string_field(entry, "status", status_rule, "");
    if (!status_text) return refuse<CardRecord>(status_text.error());
    auto status = status_text->empty() ? std::optional<CardStatus>(CardStatus::active) : parse_card_status(*status_text);
    if (!status) return refuse<CardRecord>(status_rule);
    c.status = *status;
    auto purse = unsigned_field(entry, "purse_balance_fen", 0, opening_balance_fen_max, 0);
    if (!purse) return refuse<CardRecord>(purse.error());
    auto medical = unsigned_field(entry, "medical_balance_fen", 0, opening_balance_fen_max, 0);
    if (!medical) return refuse<CardRecord>(medical.error());
    auto version = unsigned_field(entry, "tac_key_version", 0, 255, 0);
    if (!version) return refuse<CardRecord>(version.error());
    c.opening_balance_fen = static_cast<std::uint32_t>(*purse);
    c.medical_opening_fen = static_cast<std::uint32_t>(*medical);
    c.tac_key_version = static_cast<std::uint8_t>(*version);
    c.shadow_balance_fen = c.opening_balance_fen;
    if (auto bad = card_problem(c)) return refuse<CardRecord>(*bad);
    return c;
}

}  // namespace coconut::clearing
