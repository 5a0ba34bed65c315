// The registry's stored encodings (codecs.hpp).
#include "codecs.hpp"

#include <coconut/clearing/registry_validator.hpp>
#include <coconut/core/assert.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>

namespace coconut::clearing {

namespace {

using codec::record_version;
using codec::text_view;

// Leading byte of every stored record: a layout change gets a new version instead of a silent misread.
constexpr std::uint8_t card_record_version = 2;  // 1: without the ATC prefix and load fields
// Terminal records: version 2 added the credit and reversal totals (ISO8583.md §4.7), version 3 the
// status and the forged-TAC count; versions 1 and 2 still read (as active terminals).
constexpr std::uint8_t terminal_record_version = 3;
constexpr std::uint8_t terminal_record_version_2 = 2;
constexpr std::uint8_t purchase_proof_version = 1;
constexpr std::size_t purchase_proof_size = 1 + 4 + 7 + 1 + 4 + 2 + 4 + 8;
constexpr std::size_t card_record_size_v1 = 1 + 10 + 8 + 1 + 1 + 4 + 4 + 8 + 1 + 2 + 4 + 4;
constexpr std::size_t card_record_size = card_record_size_v1 + 2 + 8 + 8 + 8;

}  // namespace

Bytes encode_card(const CardRecord& c) {
    Bytes out;
    out.reserve(card_record_size);
    out.push_back(card_record_version);
    append(out, c.asn);
    append(out, c.issuer_id);
    out.push_back(static_cast<std::uint8_t>(c.status));
    out.push_back(c.tac_key_version);
    append_be(out, c.opening_balance_fen, 4);
    append_be(out, c.medical_opening_fen, 4);
    append_be(out, static_cast<std::uint64_t>(c.shadow_balance_fen), 8);
    out.push_back(c.offline_atc_seen ? 1 : 0);
    append_be(out, c.offline_atc_max, 2);
    append_be(out, c.offline_purchases, 4);
    append_be(out, c.risk_flags, 4);
    append_be(out, c.offline_atc_next, 2);
    append_be(out, c.offline_atc_ahead, 8);
    append_be(out, c.unconfirmed_loads_fen, 8);
    append_be(out, c.latest_load_when, 8);
    COCONUT_ASSERT(out.size() == card_record_size);
    return out;
}

std::optional<CardRecord> decode_card(ByteView b) {
    const bool v1 = b.size() == card_record_size_v1 && b[0] == record_version;
    if (!v1 && (b.size() != card_record_size || b[0] != card_record_version)) return std::nullopt;
    CardRecord c;
    std::size_t at = 1;
    std::copy_n(b.subspan(at).begin(), 10, c.asn.begin()), at += 10;
    std::copy_n(b.subspan(at).begin(), 8, c.issuer_id.begin()), at += 8;
    const auto status = b[at++];
    if (status < 1 || status > 5) return std::nullopt;  // CardStatus: 1 active … 5 returned
    c.status = static_cast<CardStatus>(status);
    c.tac_key_version = b[at++];
    c.opening_balance_fen = read_be32(b.subspan(at)), at += 4;
    c.medical_opening_fen = read_be32(b.subspan(at)), at += 4;
    c.shadow_balance_fen = static_cast<std::int64_t>(read_be(b.subspan(at, 8))), at += 8;
    if (b[at] > 1) return std::nullopt;
    c.offline_atc_seen = b[at++] == 1;
    c.offline_atc_max = read_be16(b.subspan(at)), at += 2;
    c.offline_purchases = read_be32(b.subspan(at)), at += 4;
    c.risk_flags = read_be32(b.subspan(at)), at += 4;
    if (v1) return c;  // prefix 0: a card booked before the prefix existed is not compared (lenient, sound)
    c.offline_atc_next = read_be16(b.subspan(at)), at += 2;
    c.offline_atc_ahead = read_be(b.subspan(at, 8)), at += 8;
    c.unconfirmed_loads_fen = read_be(b.subspan(at, 8)), at += 8;
    c.latest_load_when = read_be(b.subspan(at, 8)), at += 8;
    COCONUT_ASSERT(at == card_record_size);
    return c;
}

// Terminal record sizes: version 1's fixed part (with the batch's debit totals and the merchant id's
// length byte), and what version 2 adds (credit, credit-reversal and debit-reversal totals).
constexpr std::size_t terminal_fixed_v1 = 1 + terminal_id_chars + 6 + 8 + 4 + 4 + 8 + 4 + 8 + 1;
constexpr std::size_t terminal_totals_v2 = 3 * (4 + 8);
constexpr std::size_t terminal_status_v3 = 1 + 4 + 4;

Bytes encode_terminal(const TerminalRecord& t) {
    COCONUT_ASSERT(t.terminal_id.size() == terminal_id_chars && t.merchant_id.size() <= merchant_id_chars_max);
    Bytes out;
    out.reserve(terminal_fixed_v1 + terminal_totals_v2 + terminal_status_v3 + t.merchant_id.size());  // one allocation per booking
    out.push_back(terminal_record_version);
    append(out, text_view(t.terminal_id));
    append(out, t.psam_terminal_id);
    append_be(out, t.participant_id, 8);
    append_be(out, t.last_stan, 4);
    append_be(out, t.batch_number, 4);
    append_be(out, t.uploads, 8);
    append_be(out, t.batch_debits_count, 4);
    append_be(out, t.batch_debits_fen, 8);
    append_be(out, t.batch_credits_count, 4);
    append_be(out, t.batch_credits_fen, 8);
    append_be(out, t.batch_credit_reversals_count, 4);
    append_be(out, t.batch_credit_reversals_fen, 8);
    append_be(out, t.batch_debit_reversals_count, 4);
    append_be(out, t.batch_debit_reversals_fen, 8);
    out.push_back(static_cast<std::uint8_t>(t.status));
    append_be(out, t.forged_day, 4);
    append_be(out, t.forged_count, 4);
    out.push_back(static_cast<std::uint8_t>(t.merchant_id.size()));
    append(out, text_view(t.merchant_id));
    COCONUT_ASSERT(out.size() == terminal_fixed_v1 + terminal_totals_v2 + terminal_status_v3 + t.merchant_id.size(),
                   "terminal record layout");
    return out;
}

std::optional<TerminalRecord> decode_terminal(ByteView b) {
    if (b.empty() || b[0] < record_version || b[0] > terminal_record_version) return std::nullopt;
    const std::uint8_t version = b[0];
    const std::size_t fixed = terminal_fixed_v1 + (version >= terminal_record_version_2 ? terminal_totals_v2 : 0) +
                              (version >= terminal_record_version ? terminal_status_v3 : 0);
    if (b.size() < fixed) return std::nullopt;
    TerminalRecord t;
    std::size_t at = 1;
    t.terminal_id.assign(reinterpret_cast<const char*>(b.data() + at), terminal_id_chars), at += terminal_id_chars;
    std::copy_n(b.subspan(at).begin(), 6, t.psam_terminal_id.begin()), at += 6;
    t.participant_id = read_be(b.subspan(at, 8)), at += 8;
    t.last_stan = read_be32(b.subspan(at)), at += 4;
    t.batch_number = read_be32(b.subspan(at)), at += 4;
    t.uploads = read_be(b.subspan(at, 8)), at += 8;
    t.batch_debits_count = read_be32(b.subspan(at)), at += 4;
    t.batch_debits_fen = read_be(b.subspan(at, 8)), at += 8;
    if (version >= terminal_record_version_2) {
        for (auto [count, fen] : {std::pair{&t.batch_credits_count, &t.batch_credits_fen},
                                  std::pair{&t.batch_credit_reversals_count, &t.batch_credit_reversals_fen},
                                  std::pair{&t.batch_debit_reversals_count, &t.batch_debit_reversals_fen}}) {
            *count = read_be32(b.subspan(at)), at += 4;
            *fen = read_be(b.subspan(at, 8)), at += 8;
        }
    }
    if (version >= terminal_record_version) {
        const std::uint8_t status = b[at++];
        if (status < 1 || status > 3) return std::nullopt;
        t.status = static_cast<TerminalStatus>(status);
        t.forged_day = read_be32(b.subspan(at)), at += 4;
        t.forged_count = read_be32(b.subspan(at)), at += 4;
    }
    const std::size_t merchant_size = b[at++];
    if (merchant_size > merchant_id_chars_max || b.size() != fixed + merchant_size) return std::nullopt;
    t.merchant_id.assign(reinterpret_cast<const char*>(b.data() + at), merchant_size);
    return t;
}

namespace codec {

ByteView text_view(std::string_view s) { return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()}; }

Bytes id_bytes(const ledger::Id& id) {
    Bytes b = be_bytes(id.high, 8);
    append_be(b, id.low, 8);
    return b;
}

ledger::Id read_id(ByteView b) { return ledger::Id{read_be(b.first(8)), read_be(b.subspan(8, 8))}; }

Bytes encode_purchase_proof(const PurchaseProof& p) {
    Bytes out{purchase_proof_version};
    append(out, p.tac);
    append(out, p.when.date);
    append(out, p.when.time);
    out.push_back(p.type);
    append_be(out, p.amount_fen, 4);
    append_be(out, p.offline_atc, 2);
    append_be(out, p.balance_before_fen, 4);
    append(out, p.claims_digest);
    COCONUT_ASSERT(out.size() == purchase_proof_size);
    return out;
}

std::optional<PurchaseProof> decode_purchase_proof(ByteView b) {
    if (b.size() != purchase_proof_size || b[0] != purchase_proof_version) return std::nullopt;
    PurchaseProof p;
    std::size_t at = 1;
    std::copy_n(b.subspan(at).begin(), 4, p.tac.begin()), at += 4;
    std::copy_n(b.subspan(at).begin(), 4, p.when.date.begin()), at += 4;
    std::copy_n(b.subspan(at).begin(), 3, p.when.time.begin()), at += 3;
    p.type = b[at++];
    p.amount_fen = read_be32(b.subspan(at)), at += 4;
    p.offline_atc = read_be16(b.subspan(at)), at += 2;
    p.balance_before_fen = read_be32(b.subspan(at)), at += 4;
    std::copy_n(b.subspan(at).begin(), 8, p.claims_digest.begin()), at += 8;
    COCONUT_ASSERT(at == purchase_proof_size);
    return p;
}

Bytes purchase_key(const Registry::PurchaseKey& k) {
    Bytes key(k.asn.begin(), k.asn.end());
    append(key, k.psam_terminal_id);
    append_be(key, k.terminal_serial, 4);
    return key;
}

std::string encode_participant(const Participant& p) {
    return nlohmann::json{{"id", p.id}, {"name", p.name}, {"kind", p.kind}, {"bank_account", p.bank_account}, {"fee_rate_bp", p.fee_rate_bp}}
        .dump();
}

std::optional<Participant> decode_participant(ByteView b) {
    auto j = nlohmann::json::parse(b.begin(), b.end(), nullptr, false);
    if (j.is_discarded() || !j.is_object()) return std::nullopt;
    try {
        return Participant{j.at("id").get<std::uint64_t>(), j.at("name").get<std::string>(), j.at("kind").get<std::string>(),
                           j.at("bank_account").get<std::string>(), j.at("fee_rate_bp").get<std::uint32_t>()};
    } catch (const nlohmann::json::exception&) {
        return std::nullopt;
    }
}

Bytes risk_key(const RiskFlag& f) {
    Bytes key{static_cast<std::uint8_t>(f.kind)};
    append(key, f.asn);
    append_be(key, f.atc, 2);
    key.push_back(f.type);
    return key;
}

Bytes encode_risk_value(const RiskFlag& f) {
    Bytes value = be_bytes(f.timestamp_ns, 8);
    append(value, text_view(f.detail));
    return value;
}

std::optional<RiskFlag> decode_risk(ByteView k, ByteView v) {
    if (k.size() != risk_key_size || v.size() < 8 || k[0] < 1 || k[0] > risk_kind_max) return std::nullopt;
    RiskFlag f;
    f.kind = static_cast<RiskKind>(k[0]);
    std::copy_n(k.begin() + 1, 10, f.asn.begin());
    f.atc = read_be16(k.subspan(11));
    f.type = k[13];
    f.timestamp_ns = read_be(v.first(8));
    f.detail.assign(reinterpret_cast<const char*>(v.data() + 8), v.size() - 8);
    return f;
}

Bytes load_key(const Asn& asn, std::uint16_t online_atc) {
    Bytes key(asn.begin(), asn.end());
    append_be(key, online_atc, 2);
    return key;
}

Bytes encode_load_attempt(const LoadAttempt& a) {
    COCONUT_ASSERT(a.terminal_id.size() == terminal_id_chars);
    Bytes out{record_version, a.attempt};
    append(out, id_bytes(a.request_digest));
    append_be(out, a.amount_fen, 8);
    append(out, text_view(a.terminal_id));
    COCONUT_ASSERT(out.size() == 2 + 16 + 8 + terminal_id_chars, "load attempt layout");
    return out;
}

std::optional<LoadAttempt> decode_load_attempt(ByteView b) {
    if (b.size() != 2 + 16 + 8 + terminal_id_chars || b[0] != record_version) return std::nullopt;
    LoadAttempt a;
    a.attempt = b[1];
    a.request_digest = read_id(b.subspan(2));
    a.amount_fen = read_be(b.subspan(18, 8));
    a.terminal_id.assign(reinterpret_cast<const char*>(b.data() + 26), terminal_id_chars);
    return a;
}

Bytes encode_hold(const HoldRecord& h) {
    Bytes out{record_version};
    append(out, id_bytes(h.request_digest));
    append_be(out, h.requested_fen, 8);
    append(out, h.asn);
    COCONUT_ASSERT(out.size() == 1 + 16 + 8 + 10, "hold layout");
    return out;
}

std::optional<HoldRecord> decode_hold(ByteView b) {
    if (b.size() != 1 + 16 + 8 + 10 || b[0] != record_version) return std::nullopt;
    HoldRecord h;
    h.request_digest = read_id(b.subspan(1));
    h.requested_fen = read_be(b.subspan(17, 8));
    std::copy_n(b.begin() + 25, 10, h.asn.begin());
    return h;
}

constexpr std::size_t hotlist_entry_size = 1 + 10;

std::optional<HotlistEntry> decode_hotlist_entry(ByteView b) {
    if (b.size() != hotlist_entry_size || (b[0] != '+' && b[0] != '-')) return std::nullopt;
    HotlistEntry e;
    e.added = b[0] == '+';
    std::copy_n(b.begin() + 1, 10, e.asn.begin());
    return e;
}

Bytes encode_hotlist_entry(const HotlistEntry& e) {
    Bytes value{static_cast<std::uint8_t>(e.added ? '+' : '-')};
    append(value, e.asn);
    COCONUT_ASSERT(value.size() == hotlist_entry_size, "hotlist entry layout");
    return value;
}

}  // namespace codec

}  // namespace coconut::clearing
