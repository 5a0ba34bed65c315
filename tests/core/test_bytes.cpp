// Bytes, big-endian integers, hex and BCD (coconut/core/bytes.hpp).
#include <coconut/core/bytes.hpp>

#include <doctest/doctest.h>

using namespace coconut;

TEST_CASE("BCD and big-endian helpers") {
    CHECK(to_hex(*digits_to_bcd("20111221")) == "20111221");
    CHECK_FALSE(digits_to_bcd("2011122"));
    CHECK_FALSE(digits_to_bcd("20A1"));
    CHECK(to_hex(bcd_of(1234, 3)) == "001234");
    CHECK(*bcd_value(hex("001234")) == 1234);
    CHECK_FALSE(bcd_value(hex("1A")));
    CHECK(is_bcd(hex("0099")));
    CHECK_FALSE(is_bcd(hex("0A")));
    CHECK(bcd_to_digits(hex("2026")) == "2026");
    CHECK(read_be32(hex("00001C37")) == 0x1C37);
    CHECK(read_be16(hex("1C37")) == 0x1C37);
    CHECK(read_be(hex("0102030405060708")) == 0x0102030405060708ULL);
    CHECK(to_hex(be_bytes(0x1C37, 4)) == "00001C37");
    CHECK(to_hex(be_array<3>(0x010203)) == "010203");
    Bytes out = hex("AA");
    append_be(out, 0x0102, 2);
    CHECK(to_hex(out) == "AA0102");
    CHECK(to_hex(concat(hex("01"), hex("0203"))) == "010203");
    CHECK_FALSE(from_hex("0G"));
    CHECK_FALSE(from_hex("012"));
    CHECK(to_hex(*from_hex("01 02:03")) == "010203");
    CHECK_THROWS_AS(hex("0"), std::invalid_argument);
}
