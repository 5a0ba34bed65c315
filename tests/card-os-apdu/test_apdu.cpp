#include <coconut/apdu/apdu.hpp>
#include <coconut/apdu/tlv.hpp>

#include <doctest/doctest.h>

using namespace coconut;
using namespace coconut::apdu;

TEST_CASE("case 1: header only") {
    auto c = parse_command(hex("00A40000"));
    REQUIRE(c.ok());
    CHECK(c->apdu_case() == Case::one);
    CHECK(to_hex(encode(*c)) == "00A40000");
}

TEST_CASE("case 2 short: Le 00 means 256") {
    auto c = parse_command(hex("00B0950000"));
    REQUIRE(c.ok());
    CHECK(c->apdu_case() == Case::two);
    CHECK(*c->le == 256);
    CHECK(to_hex(encode(*c)) == "00B0950000");
}

TEST_CASE("case 3 and case 4 short") {
    auto c3 = parse_command(hex("00A4040008A000000632010105"));
    REQUIRE(c3.ok());
    CHECK(c3->apdu_case() == Case::three);
    CHECK(to_hex(c3->data) == "A000000632010105");
    auto c4 = parse_command(hex("00A4040008A00000063201010500"));
    REQUIRE(c4.ok());
    CHECK(c4->apdu_case() == Case::four);
    CHECK(*c4->le == 256);
    CHECK(to_hex(encode(*c4)) == "00A4040008A00000063201010500");
}

TEST_CASE("extended cases 2, 3, 4") {
    auto c2 = parse_command(hex("00B00000000400"));
    REQUIRE(c2.ok());
    CHECK(c2->extended);
    CHECK(*c2->le == 1024);
    auto c2max = parse_command(hex("00B00000000000"));
    REQUIRE(c2max.ok());
    CHECK(*c2max->le == 65536);

    Bytes data(300, 0xAB);
    Command big{0x00, 0xD6, 0x00, 0x00, data, std::nullopt};
    const Bytes raw = encode(big);
    CHECK(raw.size() == 4 + 3 + 300);
    auto c3 = parse_command(raw);
    REQUIRE(c3.ok());
    CHECK(c3->data == data);
    CHECK(c3->apdu_case() == Case::three);

    Command big4{0x80, 0x10, 0x00, 0x00, data, 1024};
    auto c4 = parse_command(encode(big4));
    REQUIRE(c4.ok());
    CHECK(c4->data == data);
    CHECK(*c4->le == 1024);
}

TEST_CASE("malformed command APDUs are rejected with a reason") {
    CHECK(parse_command(hex("00A404")).error() == ParseError::too_short);
    CHECK(parse_command(hex("00A4040008A0000006")).error() == ParseError::lc_mismatch);
    CHECK(parse_command(hex("00A4040002A0000006")).error() == ParseError::lc_mismatch);
    CHECK(parse_command(hex("00B0000000FF")).error() == ParseError::bad_extended_form);
    CHECK(parse_command(hex("00D60000000000")).ok());  // 00 00 00 = extended Le 65536
    CHECK(parse_command(hex("00D6000000000301")).error() == ParseError::lc_mismatch);
}

TEST_CASE("response codec") {
    auto r = parse_response(hex("000010009000"));
    REQUIRE(r);
    CHECK(to_hex(r->data) == "00001000");
    CHECK(r->sw == 0x9000);
    CHECK(r->ok());
    CHECK_FALSE(parse_response(hex("90")));
    CHECK(to_hex(encode(Response{hex("01"), 0x6A82})) == "016A82");
}

TEST_CASE("status words have names and parameterized forms") {
    CHECK(value(Sw::mac_invalid) == 0x9302);
    CHECK(describe(0x9302) == "MAC invalid");
    CHECK(sw_pin_wrong(2) == 0x63C2);
    CHECK(is_pin_wrong(0x63C0));
    CHECK(sw_wrong_le(0x17) == 0x6C17);
    CHECK(describe(0x6112).find("GET RESPONSE") != std::string_view::npos);
}

TEST_CASE("BER-TLV: nested FCI, multi-byte tags, long lengths") {
    Bytes inner;
    append_tlv(inner, 0x9F08, hex("02"));
    append_tlv(inner, 0x9F0C, Bytes(30, 0x11));
    Bytes fci;
    Bytes body = encode_tlv(0x84, hex("A000000632010105"));
    append_tlv(body, 0xA5, inner);
    append_tlv(fci, 0x6F, body);
    auto top = parse_tlvs(fci);
    REQUIRE(top.ok());
    REQUIRE(top->size() == 1);
    CHECK(top->front().tag == 0x6F);
    CHECK(top->front().constructed());
    auto level2 = parse_tlvs(top->front().value);
    REQUIRE(level2.ok());
    const Tlv* a5 = find_tlv(*level2, 0xA5);
    REQUIRE(a5);
    auto level3 = parse_tlvs(a5->value);
    REQUIRE(level3.ok());
    REQUIRE(find_tlv(*level3, 0x9F0C));
    CHECK(find_tlv(*level3, 0x9F0C)->value.size() == 30);

    const Bytes long_value(300, 0x5A);
    const Bytes encoded = encode_tlv(0x53, long_value);
    CHECK(to_hex(ByteView(encoded).first(4)) == "5382012C");
    CHECK(parse_tlvs(encoded)->front().value == long_value);

    CHECK(parse_tlvs(hex("9F")).error() == TlvError::truncated_tag);
    CHECK(parse_tlvs(hex("84")).error() == TlvError::truncated_length);
    CHECK(parse_tlvs(hex("8405A0")).error() == TlvError::truncated_value);
    CHECK(parse_tlvs(hex("8485")).error() == TlvError::bad_length);
}
