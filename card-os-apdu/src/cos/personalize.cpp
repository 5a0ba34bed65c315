// Personalization: a profile (JSON, documented in IMAGE-FORMAT.md) becomes the image payload of a
// card or a PSAM. Every field is validated; an error names the field.
#include "state.hpp"

#include <coconut/core/assert.hpp>
#include <coconut/core/sha256.hpp>

#include <iconv.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <stdexcept>

namespace coconut::cos {
namespace {

using nlohmann::json;

// A profile error carries the message that personalize() returns.
struct ProfileError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

[[noreturn]] void fail(std::string_view field, std::string_view problem) { throw ProfileError(fmt::format("{}: {}", field, problem)); }

const json* member(const json& object, std::string_view field) {
    const auto it = object.find(field);
    return it == object.end() ? nullptr : &*it;
}

std::string string_field(const json& object, std::string_view field, std::optional<std::string> fallback = {}) {
    const json* v = member(object, field);
    if (!v) {
        if (fallback) return *fallback;
        fail(field, "missing");
    }
    if (!v->is_string()) fail(field, "must be a string");
    return v->get<std::string>();
}

std::uint64_t number_field(const json& object, std::string_view field, std::uint64_t max, std::optional<std::uint64_t> fallback = {}) {
    const json* v = member(object, field);
    if (!v) {
        if (fallback) return *fallback;
        fail(field, "missing");
    }
    if (!v->is_number_unsigned() && !(v->is_number_integer() && v->get<std::int64_t>() >= 0)) fail(field, "must be a non-negative integer");
    const auto n = v->get<std::uint64_t>();
    if (n > max) fail(field, fmt::format("must be at most {}", max));
    return n;
}

Bytes digits_field(const json& object, std::string_view field, std::size_t digits, std::optional<std::string> fallback = {}) {
    const std::string text = string_field(object, field, std::move(fallback));
    auto bcd = digits_to_bcd(text);
    if (text.size() != digits || !bcd) fail(field, fmt::format("expected {} decimal digits", digits));
    return *bcd;
}

Bytes hex_field(const json& object, std::string_view field, std::size_t bytes) {
    const std::string text = string_field(object, field);
    auto parsed = from_hex(text);
    if (!parsed || parsed->size() != bytes) fail(field, fmt::format("expected {} hex digits", 2 * bytes));
    return *parsed;
}

Bytes date_field(const json& object, std::string_view field, std::string fallback) {
    Bytes d = digits_field(object, field, 8, std::move(fallback));
    const auto month = *bcd_value(ByteView(d).subspan(2, 1));
    const auto day = *bcd_value(ByteView(d).subspan(3, 1));
    if (month < 1 || month > 12 || day < 1 || day > 31) fail(field, "not a date YYYYMMDD");
    return d;
}

// UTF-8 text → GBK (how Chinese cards store names), padded with 00 to `width`.
Bytes gbk_field(const json& object, std::string_view field, std::size_t width, std::string fallback) {
    const std::string text = string_field(object, field, std::move(fallback));
    iconv_t cd = iconv_open("GBK", "UTF-8");
    if (cd == reinterpret_cast<iconv_t>(-1)) throw std::runtime_error("iconv: GBK conversion unavailable");
    std::string in = text;
    Bytes out(width * 2 + 8, 0);
    char* in_ptr = in.data();
    std::size_t in_left = in.size();
    char* out_ptr = reinterpret_cast<char*>(out.data());
    std::size_t out_left = out.size();
    const std::size_t rc = iconv(cd, &in_ptr, &in_left, &out_ptr, &out_left);
    iconv_close(cd);
    if (rc == static_cast<std::size_t>(-1)) fail(field, "not representable in GBK");
    const std::size_t used = out.size() - out_left;
    if (used > width) fail(field, fmt::format("longer than {} bytes in GBK", width));
    out.resize(width);
    return out;
}

Bytes ascii_field(const json& object, std::string_view field, std::size_t width, std::string fallback, bool exact = false) {
    const std::string text = string_field(object, field, std::move(fallback));
    for (char c : text)
        if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) > 0x7E) fail(field, "must be ASCII");
    if (text.size() > width || (exact && text.size() != width))
        fail(field, exact ? fmt::format("must be {} characters", width) : fmt::format("at most {} characters", width));
    Bytes out(text.begin(), text.end());
    out.resize(width, 0);
    return out;
}

Protocol protocol_field(const json& profile) {
    const std::string p = string_field(profile, "protocol", "T=1");
    if (p == "T=1") return Protocol::t1;
    if (p == "T=0") return Protocol::t0;
    fail("protocol", "must be \"T=0\" or \"T=1\"");
}

std::array<std::uint8_t, 32> seed_field(const json& profile) {
    std::array<std::uint8_t, 32> seed{};
    Bytes material;
    if (const json* v = member(profile, "seed")) {
        if (!v->is_string()) fail("seed", "must be a hex string");
        auto parsed = from_hex(v->get<std::string>());
        if (!parsed || parsed->empty()) fail("seed", "must be non-empty hex");
        material = *parsed;
    } else {
        material = crypto::random_bytes(32);
    }
    seed = sha256(material);
    return seed;
}

Ef transparent(std::uint8_t sfi, Bytes data, Access read, Access write) {
    Ef ef;
    ef.fid = sfi;
    ef.sfi = sfi;
    ef.type = EfType::transparent;
    ef.read = read;
    ef.write = write;
    ef.data = std::move(data);
    return ef;
}

Ef records(std::uint8_t sfi, EfType type, std::size_t size, std::size_t count, Access read, Access write) {
    Ef ef;
    ef.fid = sfi;
    ef.sfi = sfi;
    ef.type = type;
    ef.read = read;
    ef.write = write;
    ef.record_size = static_cast<std::uint16_t>(size);
    ef.record_count = static_cast<std::uint16_t>(count);
    return ef;
}

Bytes tlv_record(std::uint8_t tag, ByteView value) {
    Bytes r{tag, static_cast<std::uint8_t>(value.size())};
    append(r, value);
    return r;
}

// Card keys: explicit, or two-level diversified from master keys (docs/CARD-SPEC.md §4 profile).
// A tourist (purse-only) card has no SSSE application and so no `ssse_iak`.
void add_card_keys(CardState& s, const json& profile, ByteView issuer_id, ByteView asn, bool tourist) {
    const json* explicit_keys = member(profile, "keys");
    const json* master_keys = member(profile, "master_keys");
    if ((explicit_keys == nullptr) == (master_keys == nullptr)) fail("keys", "give exactly one of keys or master_keys");
    const json& keys = explicit_keys ? *explicit_keys : *master_keys;
    if (!keys.is_object()) fail(explicit_keys ? "keys" : "master_keys", "must be an object");
    const auto version = static_cast<std::uint8_t>(number_field(profile, "key_version", 255, 1));
    crypto::Block issuer_factor{};
    std::copy(issuer_id.begin(), issuer_id.end(), issuer_factor.begin());
    const crypto::Block card_factor = crypto::card_factor_from_asn(asn);

    // iak: the purse's INTERNAL AUTHENTICATE key; ssse_iak: the SSSE application's own (PIN-gated) one.
    const std::pair<const char*, KeyUsage> names[] = {{"dpk", KeyUsage::purchase},     {"dlk", KeyUsage::load},
                                                      {"dtk", KeyUsage::tac},          {"iak", KeyUsage::internal_auth},
                                                      {"damk", KeyUsage::maintenance}, {"ssse_iak", KeyUsage::ssse_auth}};
    for (const auto& [name, usage] : names) {
        if (tourist && usage == KeyUsage::ssse_auth) {
            if (member(keys, name))
                fail(fmt::format("{}.{}", explicit_keys ? "keys" : "master_keys", name),
                     "a tourist card has no social-security application: leave ssse_iak out");
            continue;
        }
        const std::string field = fmt::format("{}.{}", explicit_keys ? "keys" : "master_keys", name);
        const json* v = member(keys, name);
        if (!v || !v->is_string()) fail(field, "missing (32 hex digits)");
        auto raw = from_hex(v->get<std::string>());
        if (!raw || raw->size() != 16) fail(field, "expected 32 hex digits");
        crypto::Key16 key(*raw);
        secure_wipe(raw->data(), raw->size());
        if (master_keys) key = crypto::diversify_card_key(key, issuer_factor, card_factor);
        KeyEntry entry;
        entry.usage = usage;
        entry.index = default_key_index;
        entry.version = version;
        entry.value = key;
        s.keys.push_back(std::move(entry));
    }
    // The SSSE key exists so that a PIN-less purse cryptogram cannot stand in for the SSSE one.
    const auto value_of = [&](KeyUsage usage) {
        const auto of_usage = [&](const KeyEntry& k) { return k.usage == usage; };
        return std::find_if(s.keys.begin(), s.keys.end(), of_usage)->value;
    };
    if (!tourist && value_of(KeyUsage::ssse_auth) == value_of(KeyUsage::internal_auth))
        fail(fmt::format("{}.ssse_iak", explicit_keys ? "keys" : "master_keys"),
             "must differ from iak (the purse answers INTERNAL AUTHENTICATE without a PIN)");
}

// The purse's amounts and the PIN (profile fields max_balance_fen, balance_fen, overdraft_limit_fen, pin,
// pin_tries).
void set_purse_and_pin(CardState& s, const json& profile) {
    s.purse.max_balance_fen = static_cast<std::uint32_t>(number_field(profile, "max_balance_fen", 0xFFFFFFFF, 100000));
    s.purse.balance_fen = static_cast<std::uint32_t>(number_field(profile, "balance_fen", 0xFFFFFFFF));
    if (s.purse.balance_fen > s.purse.max_balance_fen) fail("balance_fen", "exceeds max_balance_fen");
    s.purse.overdraft_limit_fen = static_cast<std::uint32_t>(number_field(profile, "overdraft_limit_fen", 0xFFFFFF, 0));

    const std::string pin = string_field(profile, "pin");
    auto pin_bcd = digits_to_bcd(pin);
    if (!pin_bcd || pin.size() < 4 || pin.size() > 12) fail("pin", "expected 4–12 decimal digits, an even count");
    s.pin.bcd = *pin_bcd;
    s.pin.tries_max = static_cast<std::uint8_t>(number_field(profile, "pin_tries", 15, 3));
    if (s.pin.tries_max == 0) fail("pin_tries", "must be at least 1");
    s.pin.tries_left = s.pin.tries_max;
}

// The purse ADF: public data (EF15), cardholder (EF16), management (EF17), the purse log, the CAPP
// records (EF1A) and the trip log.
Df purse_adf(const json& profile, const json& holder, ByteView asn, ByteView issuer_id) {
    Df purse;
    purse.fid = fid_purse_adf;
    purse.aid.assign(purse_aid.begin(), purse_aid.end());
    purse.role = DfRole::purse;
    purse.parent = 0;
    const auto app_version = static_cast<std::uint8_t>(number_field(profile, "app_version", 255, 1));
    Bytes ef15(issuer_id.begin(), issuer_id.end());
    ef15.push_back(static_cast<std::uint8_t>(number_field(profile, "app_type", 255, 0x02)));
    ef15.push_back(app_version);
    append(ef15, asn);
    append(ef15, date_field(profile, "start_date", "20260101"));
    append(ef15, date_field(profile, "expiry_date", "20361231"));
    append_be(ef15, number_field(profile, "fci_data", 0xFFFF, 0), 2);
    COCONUT_ASSERT(ef15.size() == public_data_size);
    purse.efs.push_back(transparent(sfi_public, ef15, Access::always, Access::never));

    Bytes ef16;
    ef16.push_back(static_cast<std::uint8_t>(number_field(holder, "card_type", 255, 0)));
    ef16.push_back(static_cast<std::uint8_t>(number_field(holder, "staff", 1, 0)));
    append(ef16, gbk_field(holder, "name", 20, ""));
    append(ef16, ascii_field(holder, "id_number", 32, ""));
    ef16.push_back(static_cast<std::uint8_t>(number_field(holder, "id_type", 255, 0)));
    COCONUT_ASSERT(ef16.size() == cardholder_size);
    purse.efs.push_back(transparent(sfi_cardholder, ef16, Access::always, Access::external_auth));

    Bytes ef17 = bcd_of(156, 4);                                 // country: China, ISO 3166 numeric 156
    append(ef17, digits_field(profile, "province", 4, "4600"));  // Hainan
    append(ef17, digits_field(profile, "city", 4, "4601"));      // Haikou
    append(ef17, digits_field(profile, "interop_card_type", 4, "0000"));
    ef17.push_back(static_cast<std::uint8_t>(number_field(profile, "card_category", 255, 1)));
    ef17.resize(management_size, 0);
    purse.efs.push_back(transparent(sfi_management, ef17, Access::always, Access::external_auth));

    purse.efs.push_back(
        records(sfi_purse_log, EfType::cyclic, purse_log_record_size, purse_log_record_count, Access::always, Access::never));
    Ef ef1a = records(sfi_capp_record, EfType::linear_fixed, capp_record_size, capp_record_count, Access::always, Access::never);
    for (std::size_t i = 1; i <= capp_record_count; ++i) {
        Bytes record(capp_record_size, 0);
        record[bus_record::record_id] = static_cast<std::uint8_t>(i);
        record[bus_record::length] = static_cast<std::uint8_t>(capp_record_size);
        ef1a.records.push_back(std::move(record));
    }
    purse.efs.push_back(std::move(ef1a));
    purse.efs.push_back(records(sfi_trip_log, EfType::cyclic, trip_log_record_size, trip_log_record_count, Access::always, Access::never));
    return purse;
}

// The SSSE DF: issuer data (EF05) and the holder's social-security data (EF06).
Df ssse_df(const json& profile, const json& holder, ByteView asn) {
    Df ssse;
    ssse.fid = fid_ssse_df;
    ssse.aid.assign(ssse_aid.begin(), ssse_aid.end());
    ssse.role = DfRole::ssse;
    ssse.parent = 0;
    Ef ef05 = records(sfi_ss_issuer, EfType::tlv_records, 0, 0, Access::always, Access::never);
    const std::string default_card_id = "4601" + bcd_to_digits(asn.last(6));
    ef05.records.push_back(tlv_record(ss_tag::card_identifier, ascii_field(holder, "ss_card_id", 16, default_card_id, true)));
    ef05.records.push_back(tlv_record(ss_tag::issue_date, date_field(profile, "start_date", "20260101")));
    ef05.records.push_back(tlv_record(ss_tag::expiry_date, date_field(profile, "expiry_date", "20361231")));
    ef05.records.push_back(tlv_record(ss_tag::card_number, ascii_field(holder, "ss_card_number", 9, "H00000000")));
    ssse.efs.push_back(std::move(ef05));
    Ef ef06 = records(sfi_ss_holder, EfType::tlv_records, 0, 0, Access::always, Access::external_auth);
    ef06.records.push_back(tlv_record(ss_tag::ssn, ascii_field(holder, "ssn", 18, "000000000000000000", true)));
    ef06.records.push_back(tlv_record(ss_tag::name, gbk_field(holder, "name", 30, "")));
    ef06.records.push_back(tlv_record(ss_tag::sex, ascii_field(holder, "sex", 1, "0", true)));
    ef06.records.push_back(tlv_record(ss_tag::ethnicity, digits_field(holder, "ethnicity", 2, "01")));
    ef06.records.push_back(tlv_record(ss_tag::birthplace, digits_field(holder, "birthplace", 6, "460100")));
    ef06.records.push_back(tlv_record(ss_tag::birth_date, date_field(holder, "birth_date", "19700101")));
    ssse.efs.push_back(std::move(ef06));
    return ssse;
}

// DF04 medical insurance under SSSE: the medical account link, readable after VERIFY.
Df medical_df(const json& profile) {
    Df medical;
    medical.fid = fid_medical_df;
    medical.role = DfRole::medical;
    medical.parent = 2;
    Ef ef08 = records(sfi_medical_link, EfType::tlv_records, 0, 0, Access::pin, Access::never);
    ef08.records.push_back(tlv_record(ss_tag::medical_account, digits_field(profile, "medical_account", 20, "00000000000000000000")));
    ef08.records.push_back(tlv_record(ss_tag::insurance_region, digits_field(profile, "insurance_region", 6, "460100")));
    ef08.records.push_back(
        tlv_record(ss_tag::insured_type, Bytes{static_cast<std::uint8_t>(number_field(profile, "insured_type", 255, 1))}));
    medical.efs.push_back(std::move(ef08));
    return medical;
}

CardState card_from_profile(const json& profile) {
    CardState s;
    s.kind = ImageKind::card;
    s.protocol = protocol_field(profile);
    s.drbg_seed = seed_field(profile);

    const Bytes asn = digits_field(profile, "asn", 20);
    const Bytes issuer_id = hex_field(profile, "issuer_id", 8);
    set_purse_and_pin(s, profile);

    const json empty = json::object();
    const json* holder = member(profile, "cardholder");
    if (holder && !holder->is_object()) fail("cardholder", "must be an object");
    const json& h = holder ? *holder : empty;

    Df mf;
    mf.fid = fid_mf;
    mf.role = DfRole::mf;
    s.dfs.push_back(std::move(mf));
    s.dfs.push_back(purse_adf(profile, h, asn, issuer_id));
    // A tourist card (profile `tourist`: true) is purse-only: no social-security application, no DF04.
    const json* tourist_field = member(profile, "tourist");
    if (tourist_field && !tourist_field->is_boolean()) fail("tourist", "must be true or false");
    const bool tourist = tourist_field && tourist_field->get<bool>();
    if (!tourist) {
        s.dfs.push_back(ssse_df(profile, h, asn));
        s.dfs.push_back(medical_df(profile));
    }
    add_card_keys(s, profile, issuer_id, asn, tourist);
    return s;
}

CardState psam_from_profile(const json& profile) {
    CardState s;
    s.kind = ImageKind::psam;
    s.protocol = protocol_field(profile);
    s.drbg_seed = seed_field(profile);
    PsamState& m = s.psam;
    const Bytes terminal_id = digits_field(profile, "terminal_id", 12);
    std::copy(terminal_id.begin(), terminal_id.end(), m.terminal_id.begin());
    m.key_index = static_cast<std::uint8_t>(number_field(profile, "key_index", 255, default_key_index));
    m.key_version = static_cast<std::uint8_t>(number_field(profile, "key_version", 255, 1));
    const std::string level = string_field(profile, "key_level", "issuer");
    if (level != "issuer" && level != "master") fail("key_level", "must be \"issuer\" or \"master\"");
    m.key_is_master = level == "master";
    const Bytes issuer_id = hex_field(profile, "issuer_id", 8);
    std::copy(issuer_id.begin(), issuer_id.end(), m.issuer_id.begin());
    m.purchase_key = crypto::Key16(hex_field(profile, "purchase_key", 16));
    m.next_serial = static_cast<std::uint32_t>(number_field(profile, "terminal_serial", 0xFFFFFFFF, 1));
    // A PIN is part of every image's layout; a PSAM has none that a terminal could verify.
    s.pin.tries_left = s.pin.tries_max = 0;

    Df mf;
    mf.fid = fid_mf;
    mf.role = DfRole::mf;
    mf.efs.push_back(transparent(sfi_psam_terminal_id, terminal_id, Access::always, Access::never));
    s.dfs.push_back(std::move(mf));
    Df df;
    df.fid = fid_psam_df;
    df.aid.assign(psam_aid.begin(), psam_aid.end());
    df.role = DfRole::psam;
    df.parent = 0;
    df.efs.push_back(transparent(sfi_psam_key_index, Bytes{m.key_index, m.key_version}, Access::always, Access::never));
    s.dfs.push_back(std::move(df));
    return s;
}

}  // namespace

Result<Bytes, std::string> personalize(const nlohmann::json& profile) {
    try {
        if (!profile.is_object()) return Unexpected{std::string("profile: must be a JSON object")};
        const std::string kind = string_field(profile, "kind", "card");
        if (kind == "card") return encode_state(card_from_profile(profile));
        if (kind == "psam") return encode_state(psam_from_profile(profile));
        return Unexpected{std::string("kind: must be \"card\" or \"psam\"")};
    } catch (const ProfileError& e) {
        return Unexpected{std::string(e.what())};
    } catch (const nlohmann::json::exception& e) {
        return Unexpected{fmt::format("profile: {}", e.what())};
    }
}

Status<ImageFailure> create_image(const std::filesystem::path& image_path, const nlohmann::json& profile, bool overwrite) {
    auto payload = personalize(profile);
    if (!payload) return Unexpected{ImageFailure{ImageError::invalid_profile, payload.error()}};
    return FileStorage::create(image_path, *payload_kind(*payload), *payload, overwrite);
}

}  // namespace coconut::cos
