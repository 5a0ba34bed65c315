// Names of codes and enums, and parsers for the text forms the CLIs and tests use.
#include <coconut/hsm/hsm.hpp>

#include <fmt/format.h>

#include <charconv>

namespace coconut::hsm {

std::string_view errc_name(Errc code) {
    switch (code) {
        case Errc::ok: return "ok";
        case Errc::bad_request: return "bad_request";
        case Errc::batch_too_large: return "batch_too_large";
        case Errc::key_not_found: return "key_not_found";
        case Errc::key_retired: return "key_retired";
        case Errc::wrong_key_usage: return "wrong_key_usage";
        case Errc::unsupported_key_type: return "unsupported_key_type";
        case Errc::key_exists: return "key_exists";
        case Errc::not_permitted: return "not_permitted";
        case Errc::client_exists: return "client_exists";
        case Errc::client_not_found: return "client_not_found";
        case Errc::store_missing: return "store_missing";
        case Errc::store_exists: return "store_exists";
        case Errc::store_truncated: return "store_truncated";
        case Errc::store_tampered: return "store_tampered";
        case Errc::store_wrong_master_key: return "store_wrong_master_key";
        case Errc::store_corrupt: return "store_corrupt";
        case Errc::master_key_file: return "master_key_file";
        case Errc::io_error: return "io_error";
        case Errc::store_busy: return "store_busy";
        case Errc::store_forked: return "store_forked";
        case Errc::audit_broken: return "audit_broken";
        case Errc::connection_failed: return "connection_failed";
        case Errc::timeout: return "timeout";
        case Errc::protocol_error: return "protocol_error";
        case Errc::frame_too_large: return "frame_too_large";
        case Errc::bad_mac: return "bad_mac";
        case Errc::replayed_sequence: return "replayed_sequence";
        case Errc::unknown_command: return "unknown_command";
        case Errc::unknown_client: return "unknown_client";
        case Errc::closed: return "closed";
        case Errc::server_busy: return "server_busy";
        case Errc::client_credentials: return "client_credentials";
    }
    return "unknown_error";
}

std::string_view key_type_name(KeyType type) {
    switch (type) {
        case KeyType::tdes2: return "tdes2";
        case KeyType::sm4: return "sm4";
    }
    return "";
}

std::string_view key_usage_name(KeyUsage usage) {
    switch (usage) {
        case KeyUsage::purchase: return "purchase";
        case KeyUsage::load: return "load";
        case KeyUsage::tac: return "tac";
        case KeyUsage::internal_auth: return "internal-auth";
        case KeyUsage::maintenance: return "maintenance";
        case KeyUsage::transport: return "transport";
        case KeyUsage::ssse_auth: return "ssse-auth";
    }
    return "";
}

std::optional<KeyType> parse_key_type(std::string_view name) {
    for (KeyType t : {KeyType::tdes2, KeyType::sm4})
        if (key_type_name(t) == name) return t;
    return std::nullopt;
}

std::optional<KeyUsage> parse_key_usage(std::string_view name) {
    for (KeyUsage u : {KeyUsage::purchase, KeyUsage::load, KeyUsage::tac, KeyUsage::internal_auth, KeyUsage::maintenance,
                       KeyUsage::transport, KeyUsage::ssse_auth})
        if (key_usage_name(u) == name) return u;
    return std::nullopt;
}

std::string_view card_key_name(KeyUsage usage) {
    switch (usage) {
        case KeyUsage::purchase: return "DPK";
        case KeyUsage::load: return "DLK";
        case KeyUsage::tac: return "DTK";
        case KeyUsage::internal_auth: return "IAK";
        case KeyUsage::maintenance: return "DAMK";
        case KeyUsage::transport: return "";
        case KeyUsage::ssse_auth: return "SSSE_IAK";
    }
    return "";
}

std::string_view verdict_name(Verdict verdict) {
    switch (verdict) {
        case Verdict::valid: return "valid";
        case Verdict::invalid: return "invalid";
        case Verdict::key_unavailable: return "key_unavailable";
        case Verdict::malformed: return "malformed";
    }
    return "unknown";
}

namespace {
constexpr std::pair<Permission, std::string_view> permission_names[] = {
    {permit_key_info, "key-info"},
    {permit_issuance, "issuance"},
    {permit_tac, "tac"},
    {permit_load, "load"},
    {permit_auth, "auth"},
    {permit_ca, "ca"},
    {permit_maintenance, "maintenance"},
};
}  // namespace

std::string permissions_to_string(std::uint32_t permissions) {
    std::string out;
    for (const auto& [bit, name] : permission_names) {
        if ((permissions & bit) == 0) continue;
        if (!out.empty()) out += ',';
        out += name;
    }
    return out;
}

std::optional<std::uint32_t> parse_permissions(std::string_view text) {
    std::uint32_t bits = 0;
    while (!text.empty()) {
        const std::size_t comma = text.find(',');
        const std::string_view item = text.substr(0, comma);
        text = comma == std::string_view::npos ? std::string_view() : text.substr(comma + 1);
        if (item == "all") {
            bits |= permit_all;
            continue;
        }
        bool known = false;
        for (const auto& [bit, name] : permission_names)
            if (name == item) {
                bits |= bit;
                known = true;
            }
        if (!known) return std::nullopt;
    }
    return bits == 0 ? std::nullopt : std::optional<std::uint32_t>(bits);
}

std::string to_string(const KeyRef& ref) {
    return ref.version == newest_version ? ref.label + ":newest" : fmt::format("{}:{}", ref.label, ref.version);
}

std::optional<KeyRef> parse_key_ref(std::string_view text) {
    const std::size_t colon = text.find(':');
    KeyRef ref{std::string(text.substr(0, colon)), newest_version};
    if (!valid_label(ref.label)) return std::nullopt;
    if (colon == std::string_view::npos) return ref;
    const std::string_view version = text.substr(colon + 1);
    if (version == "newest") return ref;
    unsigned value = 0;
    const auto [end, ec] = std::from_chars(version.data(), version.data() + version.size(), value);
    if (ec != std::errc() || end != version.data() + version.size() || value < 1 || value > 255) return std::nullopt;
    ref.version = static_cast<std::uint8_t>(value);
    return ref;
}

namespace {

template <std::size_t N>
Outcome<std::array<std::uint8_t, N>> parse_bcd_field(std::string_view digits, std::string_view what) {
    if (digits.size() != 2 * N)
        return fail(Errc::bad_request, fmt::format("{} must be {} decimal digits, got {} characters", what, 2 * N, digits.size()));
    auto bcd = digits_to_bcd(digits);
    if (!bcd) return fail(Errc::bad_request, fmt::format("{} '{}' contains a non-digit", what, digits));
    std::array<std::uint8_t, N> out{};
    std::copy(bcd->begin(), bcd->end(), out.begin());
    return out;
}

unsigned bcd_byte(std::uint8_t b) { return static_cast<unsigned>((b >> 4) * 10 + (b & 0x0F)); }

}  // namespace

Outcome<Asn> parse_asn(std::string_view digits) { return parse_bcd_field<10>(digits, "ASN"); }

Outcome<TerminalId> parse_terminal_id(std::string_view digits) { return parse_bcd_field<6>(digits, "terminal id"); }

Outcome<IssuerId> parse_issuer_id(std::string_view hex_text) {
    auto bytes = from_hex(hex_text);
    if (!bytes || bytes->size() != 8)
        return fail(Errc::bad_request, fmt::format("issuer id must be 16 hex digits (8 bytes), got '{}'", hex_text));
    IssuerId out{};
    std::copy(bytes->begin(), bytes->end(), out.begin());
    return out;
}

bool valid_card_date_time(const crypto::CardDateTime& when) {
    if (!is_bcd(when.date) || !is_bcd(when.time)) return false;
    const unsigned month = bcd_byte(when.date[2]);
    const unsigned day = bcd_byte(when.date[3]);
    const unsigned hour = bcd_byte(when.time[0]);
    const unsigned minute = bcd_byte(when.time[1]);
    const unsigned second = bcd_byte(when.time[2]);
    return month >= 1 && month <= 12 && day >= 1 && day <= 31 && hour < 24 && minute < 60 && second < 60;
}

Outcome<crypto::CardDateTime> parse_card_date_time(std::string_view date8, std::string_view time6) {
    auto date = parse_bcd_field<4>(date8, "date (YYYYMMDD)");
    if (!date) return Unexpected<Failure>{date.error()};
    auto time = parse_bcd_field<3>(time6, "time (hhmmss)");
    if (!time) return Unexpected<Failure>{time.error()};
    crypto::CardDateTime when{date.value(), time.value()};
    if (!valid_card_date_time(when))
        return fail(Errc::bad_request, fmt::format("date/time {} {} is not a calendar date and time", date8, time6));
    return when;
}

}  // namespace coconut::hsm
