// Field 62 card data (card_data.hpp, ISO8583.md §3.1).
#include <coconut/apdu/tlv.hpp>
#include <coconut/iso8583/card_data.hpp>

#include <cstdio>

namespace coconut::iso8583 {
namespace {

// Field 62 tags of an offline purchase (ISO8583.md §3.1) and their sizes in bytes.
struct TagSpec {
    std::uint32_t tag;
    std::size_t size;
    const char* name;
};
constexpr TagSpec purchase_tags[] = {
    {0xDF01, 10, "ASN"},          {0xDF02, 1, "transaction type"}, {0xDF03, 4, "balance before"},
    {0xDF04, 2, "offline ATC"},   {0xDF05, 4, "terminal serial"},  {0xDF06, 6, "terminal id"},
    {0xDF07, 7, "card date/time"}, {0xDF08, 4, "TAC"},
};

}  // namespace

Result<PurseTransaction, std::string> parse_purse_transaction(std::string_view field62) {
    using Fail = Unexpected<std::string>;
    auto raw = from_hex(field62);
    if (!raw) return Fail{"field 62 is not hex text (ISO8583.md §3.1)"};
    auto tlvs = apdu::parse_tlvs(*raw);
    if (!tlvs) return Fail{"field 62 is not BER-TLV"};
    PurseTransaction t;
    for (const TagSpec& spec : purchase_tags) {
        const apdu::Tlv* tlv = apdu::find_tlv(*tlvs, spec.tag);
        char tag_text[8];
        std::snprintf(tag_text, sizeof tag_text, "%04X", spec.tag);
        if (tlv == nullptr) return Fail{std::string("field 62 lacks ") + tag_text + " (" + spec.name + ")"};
        if (tlv->value.size() != spec.size) {
            return Fail{std::string(tag_text) + " (" + spec.name + "): " + std::to_string(tlv->value.size()) +
                        " bytes, expected " + std::to_string(spec.size)};
        }
    }
    auto value = [&](std::uint32_t tag) -> const Bytes& { return apdu::find_tlv(*tlvs, tag)->value; };
    std::copy(value(0xDF01).begin(), value(0xDF01).end(), t.asn.begin());
    t.type = value(0xDF02)[0];
    t.balance_before_fen = read_be32(value(0xDF03));
    t.offline_atc = read_be16(value(0xDF04));
    t.terminal_serial = read_be32(value(0xDF05));
    std::copy(value(0xDF06).begin(), value(0xDF06).end(), t.terminal_id.begin());
    std::copy(value(0xDF07).begin(), value(0xDF07).begin() + 4, t.when.date.begin());
    std::copy(value(0xDF07).begin() + 4, value(0xDF07).end(), t.when.time.begin());
    std::copy(value(0xDF08).begin(), value(0xDF08).end(), t.tac.begin());
    if (!is_bcd(t.asn)) return Fail{"DF01 (ASN): not BCD"};
    if (t.type != crypto::type_ep_purchase && t.type != crypto::type_capp_purchase) {
        return Fail{"DF02 (transaction type): " + to_hex(ByteView(&t.type, 1)) + ", expected 06 or 09 for an offline purchase"};
    }
    if (!is_bcd(t.terminal_id)) return Fail{"DF06 (terminal id): not BCD"};
    if (!is_bcd(value(0xDF07))) return Fail{"DF07 (card date/time): not BCD"};
    return t;
}

std::string encode_purse_transaction(const PurseTransaction& t) {
    Bytes out;
    apdu::append_tlv(out, 0xDF01, t.asn);
    apdu::append_tlv(out, 0xDF02, ByteView(&t.type, 1));
    apdu::append_tlv(out, 0xDF03, be_bytes(t.balance_before_fen, 4));
    apdu::append_tlv(out, 0xDF04, be_bytes(t.offline_atc, 2));
    apdu::append_tlv(out, 0xDF05, be_bytes(t.terminal_serial, 4));
    apdu::append_tlv(out, 0xDF06, t.terminal_id);
    Bytes when(t.when.date.begin(), t.when.date.end());
    append(when, t.when.time);
    apdu::append_tlv(out, 0xDF07, when);
    apdu::append_tlv(out, 0xDF08, t.tac);
    return to_hex(out);
}

}  // namespace coconut::iso8583
