// Field 62 card data (card_data.hpp, ISO8583.md §3.1, §4).
#include <coconut/apdu/tlv.hpp>
#include <coconut/iso8583/card_data.hpp>
#include <coconut/core/assert.hpp>
#include <coconut/core/sha256.hpp>

#include <algorithm>
#include <cstdio>
#include <stdexcept>

namespace coconut::iso8583 {
namespace {

using Fail = Unexpected<std::string>;

std::string tag_text(std::uint32_t tag) {
    char text[8];
    std::snprintf(text, sizeof text, "%04X", tag);
    return text;
}

// Field 62 parsed to TLVs, read tag by tag; the first problem is kept and reported by the caller.
class Card62 {
public:
    static Result<Card62, std::string> parse(std::string_view field62) {
        auto raw = from_hex(field62);
        if (!raw) return Fail{"field 62 is not hex text (ISO8583.md §3.1)"};
        auto tlvs = apdu::parse_tlvs(*raw);
        if (!tlvs) return Fail{"field 62 is not BER-TLV"};
        return Card62(std::move(*tlvs));
    }

    // The value of `tag`, which must be present and `size` bytes long (or size_min..size_max).
    ByteView required(std::uint32_t tag, const char* name, std::size_t size_min, std::size_t size_max = 0) {
        if (size_max == 0) size_max = size_min;
        const apdu::Tlv* tlv = apdu::find_tlv(tlvs_, tag);
        if (tlv == nullptr) {
            fail(std::string("field 62 lacks ") + tag_text(tag) + " (" + name + ")");
            return {};
        }
        return checked(*tlv, name, size_min, size_max);
    }
    // The value of `tag` if present (empty if absent or wrong: the error is recorded).
    ByteView optional(std::uint32_t tag, const char* name, std::size_t size_min, std::size_t size_max = 0) {
        if (size_max == 0) size_max = size_min;
        const apdu::Tlv* tlv = apdu::find_tlv(tlvs_, tag);
        if (tlv == nullptr) return {};
        return checked(*tlv, name, size_min, size_max);
    }
    template <std::size_t N>
    void copy(std::uint32_t tag, const char* name, std::array<std::uint8_t, N>& out) {
        ByteView v = required(tag, name, N);
        if (v.size() == N) std::copy(v.begin(), v.end(), out.begin());
    }
    std::uint32_t number(std::uint32_t tag, const char* name, std::size_t size) {
        ByteView v = required(tag, name, size);
        return v.size() == size ? static_cast<std::uint32_t>(read_be(v)) : 0;
    }
    void asn(CardAsn& out) {
        copy(0xDF01, "ASN", out);
        if (ok() && !is_bcd(out)) fail("DF01 (ASN): not BCD");
    }
    void terminal_id(CardTerminalId& out) {
        copy(0xDF06, "terminal id", out);
        if (ok() && !is_bcd(out)) fail("DF06 (terminal id): not BCD");
    }
    void when(crypto::CardDateTime& out) {
        ByteView v = required(0xDF07, "card date/time", 7);
        if (v.size() != 7) return;
        if (!is_bcd(v)) return fail("DF07 (card date/time): not BCD");
        std::copy(v.begin(), v.begin() + 4, out.date.begin());
        std::copy(v.begin() + 4, v.end(), out.time.begin());
    }
    // DF11 when present: 12 BCD digits, batch and STAN each 000001–999999.
    std::optional<VisitReference> visit() {
        ByteView v = optional(0xDF11, "visit reference", visit_reference_size);
        if (v.size() != visit_reference_size) return std::nullopt;
        const auto batch = bcd_value(v.first(3));
        const auto stan = bcd_value(v.subspan(3));
        if (!batch || !stan || *batch == 0 || *stan == 0) {
            fail("DF11 (visit reference): not 12 BCD digits of a batch and a STAN");
            return std::nullopt;
        }
        return VisitReference{static_cast<std::uint32_t>(*batch), static_cast<std::uint32_t>(*stan)};
    }
    // DF13 when present (required when `required`): PSAM terminal id (BCD) ‖ serial.
    std::optional<PurchaseReference> purchase(bool must) {
        ByteView v = must ? required(0xDF13, "refunded purchase", purchase_reference_size)
                          : optional(0xDF13, "refunded purchase", purchase_reference_size);
        if (v.size() != purchase_reference_size) return std::nullopt;
        PurchaseReference r;
        std::copy(v.begin(), v.begin() + 6, r.terminal_id.begin());
        if (!is_bcd(r.terminal_id)) {
            fail("DF13 (refunded purchase): terminal id not BCD");
            return std::nullopt;
        }
        r.terminal_serial = static_cast<std::uint32_t>(read_be(v.subspan(6)));
        return r;
    }
    bool has(std::uint32_t tag) const { return apdu::find_tlv(tlvs_, tag) != nullptr; }
    void reject(std::string message) { fail(std::move(message)); }
    void type(std::uint8_t& out, std::initializer_list<std::uint8_t> allowed, const char* expected) {
        ByteView v = required(0xDF02, "transaction type", 1);
        if (v.size() != 1) return;
        out = v[0];
        for (std::uint8_t a : allowed) {
            if (out == a) return;
        }
        fail("DF02 (transaction type): " + to_hex(v) + ", expected " + expected);
    }

    bool ok() const { return error_.empty(); }
    const std::string& error() const { return error_; }

private:
    explicit Card62(std::vector<apdu::Tlv> tlvs) : tlvs_(std::move(tlvs)) {}
    ByteView checked(const apdu::Tlv& tlv, const char* name, std::size_t size_min, std::size_t size_max) {
        if (tlv.value.size() < size_min || tlv.value.size() > size_max) {
            const std::string expected =
                size_min == size_max ? std::to_string(size_min) : std::to_string(size_min) + "–" + std::to_string(size_max);
            fail(tag_text(tlv.tag) + " (" + name + "): " + std::to_string(tlv.value.size()) + " bytes, expected " + expected);
            return {};
        }
        return tlv.value;
    }
    void fail(std::string message) {
        if (error_.empty()) error_ = std::move(message);
    }
    std::vector<apdu::Tlv> tlvs_;
    std::string error_;
};

// Parses with `read`, turning the first recorded problem into the error.
template <class T, class Read>
Result<T, std::string> parse_with(std::string_view field62, Read read) {
    auto card = Card62::parse(field62);
    if (!card) return Fail{card.error()};
    T out{};
    read(*card, out);
    if (!card->ok()) return Fail{card->error()};
    return out;
}

// Bytes of one DFxx TLV with a short value: two tag bytes, one length byte (values below 128 bytes).
constexpr std::size_t tlv_bytes(std::size_t value_bytes) { return 2 + 1 + value_bytes; }

void append_visit(Bytes& out, const std::optional<VisitReference>& visit) {
    if (!visit) return;
    Bytes value = bcd_of(visit->batch_number, 3);
    append(value, bcd_of(visit->stan, 3));
    apdu::append_tlv(out, 0xDF11, value);
}

void append_purchase(Bytes& out, const std::optional<PurchaseReference>& purchase) {
    if (!purchase) return;
    Bytes value(purchase->terminal_id.begin(), purchase->terminal_id.end());
    append_be(value, purchase->terminal_serial, 4);
    apdu::append_tlv(out, 0xDF13, value);
}

Bytes when_bytes(const crypto::CardDateTime& when) {
    Bytes b(when.date.begin(), when.date.end());
    append(b, when.time);
    return b;
}

// DF01–DF04, DF06, DF07: what the 0200 and the 0220 of a load both carry.
template <class Load>
void read_load(Card62& c, Load& l) {
    c.asn(l.asn);
    c.type(l.type, {crypto::type_ep_load}, "02 for an EP load");
    l.old_balance_fen = c.number(0xDF03, "old balance", 4);
    l.online_atc = static_cast<std::uint16_t>(c.number(0xDF04, "online ATC", 2));
    c.terminal_id(l.terminal_id);
    c.when(l.when);
}

template <class Load>
Bytes write_load(const Load& l) {
    Bytes out;
    apdu::append_tlv(out, 0xDF01, l.asn);
    apdu::append_tlv(out, 0xDF02, ByteView(&l.type, 1));
    apdu::append_tlv(out, 0xDF03, be_bytes(l.old_balance_fen, 4));
    apdu::append_tlv(out, 0xDF04, be_bytes(l.online_atc, 2));
    apdu::append_tlv(out, 0xDF06, l.terminal_id);
    apdu::append_tlv(out, 0xDF07, when_bytes(l.when));
    return out;
}

}  // namespace

std::uint16_t transit_line(const PurseTransaction& t) {
    return t.transit_record.size() >= transit_record_size_min ? read_be16(t.transit_record) : 0;
}
std::uint16_t transit_station(const PurseTransaction& t) {
    return t.transit_record.size() >= transit_record_size_min ? read_be16(ByteView(t.transit_record).subspan(2)) : 0;
}

Result<PurseTransaction, std::string> parse_purse_transaction(std::string_view field62) {
    return parse_with<PurseTransaction>(field62, [](Card62& c, PurseTransaction& t) {
        c.asn(t.asn);
        c.type(t.type, {crypto::type_ep_purchase, crypto::type_capp_purchase}, "06 or 09 for an offline purchase");
        t.balance_before_fen = c.number(0xDF03, "balance before", 4);
        t.offline_atc = static_cast<std::uint16_t>(c.number(0xDF04, "offline ATC", 2));
        t.terminal_serial = c.number(0xDF05, "terminal serial", 4);
        c.terminal_id(t.terminal_id);
        c.when(t.when);
        c.copy(0xDF08, "TAC", t.tac);
        ByteView transit = c.optional(0xDF0C, "transit record", transit_record_size_min, transit_record_size_max);
        t.transit_record.assign(transit.begin(), transit.end());
        t.visit = c.visit();
    });
}

std::string encode_purse_transaction(const PurseTransaction& t) {
    Bytes out;
    apdu::append_tlv(out, 0xDF01, t.asn);
    apdu::append_tlv(out, 0xDF02, ByteView(&t.type, 1));
    apdu::append_tlv(out, 0xDF03, be_bytes(t.balance_before_fen, 4));
    apdu::append_tlv(out, 0xDF04, be_bytes(t.offline_atc, 2));
    apdu::append_tlv(out, 0xDF05, be_bytes(t.terminal_serial, 4));
    apdu::append_tlv(out, 0xDF06, t.terminal_id);
    apdu::append_tlv(out, 0xDF07, when_bytes(t.when));
    apdu::append_tlv(out, 0xDF08, t.tac);
    if (!t.transit_record.empty()) apdu::append_tlv(out, 0xDF0C, t.transit_record);
    append_visit(out, t.visit);
    // Every fixed field at the size parse_purse_transaction requires. (The transit record's bounds are the
    // receiver's check: tests build out-of-bounds DF0C records with this encoder.)
    COCONUT_ASSERT(out.size() == tlv_bytes(10) + tlv_bytes(1) + tlv_bytes(4) + tlv_bytes(2) + tlv_bytes(4) + tlv_bytes(6) + tlv_bytes(7) +
                                     tlv_bytes(4) + (t.transit_record.empty() ? 0 : tlv_bytes(t.transit_record.size())) +
                                     (t.visit ? tlv_bytes(visit_reference_size) : 0),
                   "field 62 purse transaction layout");
    return to_hex(out);
}

Result<LoadRequestData, std::string> parse_load_request(std::string_view field62) {
    return parse_with<LoadRequestData>(field62, [](Card62& c, LoadRequestData& l) {
        read_load(c, l);
        c.copy(0xDF09, "MAC1", l.mac1);
        c.copy(0xDF0A, "card random", l.card_random);
        ByteView version = c.optional(0xDF0D, "key version", 1);
        if (version.size() == 1) l.key_version = version[0];
        l.refund_of = c.purchase(false);
    });
}

std::string encode_load_request(const LoadRequestData& l) {
    Bytes out = write_load(l);
    apdu::append_tlv(out, 0xDF09, l.mac1);
    apdu::append_tlv(out, 0xDF0A, l.card_random);
    if (l.key_version) apdu::append_tlv(out, 0xDF0D, ByteView(&*l.key_version, 1));
    append_purchase(out, l.refund_of);
    COCONUT_ASSERT(out.size() == tlv_bytes(10) + tlv_bytes(1) + tlv_bytes(4) + tlv_bytes(2) + tlv_bytes(6) + tlv_bytes(7) + tlv_bytes(4) +
                                     tlv_bytes(4) + (l.key_version ? tlv_bytes(1) : 0) +
                                     (l.refund_of ? tlv_bytes(purchase_reference_size) : 0),
                   "field 62 load request layout");
    return to_hex(out);
}

Result<LoadAnswerData, std::string> parse_load_answer(std::string_view field62) {
    return parse_with<LoadAnswerData>(field62, [](Card62& c, LoadAnswerData& a) {
        c.asn(a.asn);
        a.online_atc = static_cast<std::uint16_t>(c.number(0xDF04, "online ATC", 2));
        c.copy(0xDF09, "MAC2", a.mac2);
    });
}

std::string encode_load_answer(const LoadAnswerData& a) {
    Bytes out;
    apdu::append_tlv(out, 0xDF01, a.asn);
    apdu::append_tlv(out, 0xDF04, be_bytes(a.online_atc, 2));
    apdu::append_tlv(out, 0xDF09, a.mac2);
    return to_hex(out);
}

Result<LoadConfirmationData, std::string> parse_load_confirmation(std::string_view field62) {
    return parse_with<LoadConfirmationData>(field62, [](Card62& c, LoadConfirmationData& l) {
        read_load(c, l);
        c.copy(0xDF08, "TAC", l.tac);
    });
}

std::string encode_load_confirmation(const LoadConfirmationData& l) {
    Bytes out = write_load(l);
    apdu::append_tlv(out, 0xDF08, l.tac);
    return to_hex(out);
}

Result<LoadReferenceData, std::string> parse_load_reference(std::string_view field62) {
    return parse_with<LoadReferenceData>(field62, [](Card62& c, LoadReferenceData& r) {
        c.asn(r.asn);
        r.online_atc = static_cast<std::uint16_t>(c.number(0xDF04, "online ATC", 2));
    });
}

std::string encode_load_reference(const LoadReferenceData& r) {
    Bytes out;
    apdu::append_tlv(out, 0xDF01, r.asn);
    apdu::append_tlv(out, 0xDF04, be_bytes(r.online_atc, 2));
    return to_hex(out);
}

Result<ClinicAuthorizationData, std::string> parse_clinic_authorization(std::string_view field62) {
    return parse_with<ClinicAuthorizationData>(field62, [](Card62& c, ClinicAuthorizationData& a) {
        c.asn(a.asn);
        c.copy(0xDF0B, "INTERNAL AUTHENTICATE response", a.cryptogram);
        c.copy(0xDF0E, "host challenge", a.challenge);
        a.visit = c.visit();
    });
}

std::string encode_clinic_authorization(const ClinicAuthorizationData& a) {
    Bytes out;
    apdu::append_tlv(out, 0xDF01, a.asn);
    apdu::append_tlv(out, 0xDF0B, a.cryptogram);
    apdu::append_tlv(out, 0xDF0E, a.challenge);
    append_visit(out, a.visit);
    return to_hex(out);
}

Result<MedicalRefundData, std::string> parse_medical_refund(std::string_view field62) {
    return parse_with<MedicalRefundData>(field62, [](Card62& c, MedicalRefundData& r) {
        c.asn(r.asn);
        if (!c.has(0xDF11)) c.required(0xDF11, "visit reference", visit_reference_size);  // records "lacks DF11"
        if (auto visit = c.visit()) r.visit = *visit;
        if (!c.ok()) return;
        ByteView terminal = c.required(0xDF12, "terminal id of the hold's 0100", r.hold_terminal_id41.size());
        if (terminal.size() != r.hold_terminal_id41.size()) return;
        if (!std::all_of(terminal.begin(), terminal.end(), [](std::uint8_t b) { return b >= 0x20 && b < 0x7F; })) {
            return c.reject("DF12 (terminal id of the hold's 0100): not printable ASCII");
        }
        std::copy(terminal.begin(), terminal.end(), r.hold_terminal_id41.begin());
    });
}

std::string encode_medical_refund(const MedicalRefundData& r) {
    Bytes out;
    apdu::append_tlv(out, 0xDF01, r.asn);
    append_visit(out, r.visit);
    apdu::append_tlv(out, 0xDF12,
                     ByteView(reinterpret_cast<const std::uint8_t*>(r.hold_terminal_id41.data()), r.hold_terminal_id41.size()));
    return to_hex(out);
}

Result<CashRefundData, std::string> parse_cash_refund(std::string_view field62) {
    return parse_with<CashRefundData>(field62, [](Card62& c, CashRefundData& r) {
        c.asn(r.asn);
        if (auto purchase = c.purchase(true)) r.purchase = *purchase;
    });
}

std::string encode_cash_refund(const CashRefundData& r) {
    Bytes out;
    apdu::append_tlv(out, 0xDF01, r.asn);
    append_purchase(out, r.purchase);
    return to_hex(out);
}

bool is_cash_refund(std::string_view field62) {
    auto card = Card62::parse(field62);
    return card && card->has(0xDF13) && !card->has(0xDF08);
}

Result<ChallengeRequestData, std::string> parse_challenge_request(std::string_view field62) {
    return parse_with<ChallengeRequestData>(field62, [](Card62& c, ChallengeRequestData& r) { c.asn(r.asn); });
}

std::string encode_challenge_request(const ChallengeRequestData& r) {
    Bytes out;
    apdu::append_tlv(out, 0xDF01, r.asn);
    return to_hex(out);
}

Result<ChallengeAnswerData, std::string> parse_challenge_answer(std::string_view field62) {
    return parse_with<ChallengeAnswerData>(field62, [](Card62& c, ChallengeAnswerData& a) {
        c.asn(a.asn);
        c.copy(0xDF0E, "host challenge", a.challenge);
    });
}

std::string encode_challenge_answer(const ChallengeAnswerData& a) {
    Bytes out;
    apdu::append_tlv(out, 0xDF01, a.asn);
    apdu::append_tlv(out, 0xDF0E, a.challenge);
    return to_hex(out);
}

Result<RecordDigest, std::string> parse_record_digest(std::string_view field62) {
    return parse_with<RecordDigest>(field62, [](Card62& c, RecordDigest& d) { c.copy(0xDF10, "record digest", d); });
}

std::string encode_record_digest(const RecordDigest& digest) {
    Bytes out;
    apdu::append_tlv(out, 0xDF10, digest);
    return to_hex(out);
}

namespace {

// The first N bytes of SHA-256 over the parts.
template <std::size_t N>
std::array<std::uint8_t, N> sha256_prefix(std::initializer_list<ByteView> parts) {
    static_assert(N <= sha256_size);
    const Sha256Digest digest = sha256(parts);
    std::array<std::uint8_t, N> out{};
    std::copy_n(digest.begin(), N, out.begin());
    return out;
}

}  // namespace

std::array<std::uint8_t, 8> clinic_proof_input(const HostChallenge& challenge, const ClinicHoldFields& hold, const CardAsn& asn) {
    return sha256_prefix<8>({text_bytes("coconut-clinic-v2"), challenge, text_bytes(hold.terminal_id41), text_bytes(hold.stan11),
                             text_bytes(hold.transmission_time7), text_bytes(hold.amount4), text_bytes(hold.batch60), asn});
}

RecordDigest purchase_digest(const PurseTransaction& t, std::uint32_t amount_fen) {
    return sha256_prefix<8>({text_bytes("coconut-record-v1"), t.asn, be_bytes(amount_fen, 4), ByteView(&t.type, 1), t.terminal_id,
                             be_bytes(t.terminal_serial, 4), when_bytes(t.when), t.tac});
}

RecordDigest load_confirmation_digest(const LoadConfirmationData& c, std::uint32_t amount_fen) {
    return sha256_prefix<8>({text_bytes("coconut-record-v1"), c.asn, be_bytes(amount_fen, 4), ByteView(&c.type, 1), c.terminal_id,
                             be_bytes(c.online_atc, 4), when_bytes(c.when), c.tac});
}

}  // namespace coconut::iso8583
