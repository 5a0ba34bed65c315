// Address allow-lists (core/include/coconut/core/address_list.hpp): parsing, matching, canonical form.
#include <coconut/core/address_list.hpp>

#include <doctest/doctest.h>

#include <stdexcept>

namespace core = coconut::core;

namespace {

boost::asio::ip::address addr(const char* text) { return boost::asio::ip::make_address(text); }

}  // namespace

TEST_CASE("an allow-list matches single addresses and CIDR networks, IPv4 and IPv6") {
    const auto list = core::AddressList::parse("127.0.0.1, 10.0.0.0/8,192.168.1.128/25,fd00::/8");
    CHECK(list.contains(addr("127.0.0.1")));
    CHECK_FALSE(list.contains(addr("127.0.0.2")));
    CHECK(list.contains(addr("10.255.1.2")));
    CHECK_FALSE(list.contains(addr("11.0.0.1")));
    CHECK(list.contains(addr("192.168.1.200")));
    CHECK_FALSE(list.contains(addr("192.168.1.127")));
    CHECK(list.contains(addr("fd12::1")));
    CHECK_FALSE(list.contains(addr("fe80::1")));
    CHECK(list.to_string() == "127.0.0.1,10.0.0.0/8,192.168.1.128/25,fd00::/8");
}

TEST_CASE("an IPv4-mapped IPv6 peer matches as its IPv4 address") {
    const auto list = core::AddressList::parse("10.0.0.0/8");
    CHECK(list.contains(addr("::ffff:10.1.2.3")));
    CHECK_FALSE(list.contains(addr("::ffff:11.1.2.3")));
}

TEST_CASE("loopback is 127.0.0.0/8 and ::1; /0 in both families is everything") {
    const auto loopback = core::AddressList::loopback();
    CHECK(loopback.contains(addr("127.0.0.2")));
    CHECK(loopback.contains(addr("::1")));
    CHECK_FALSE(loopback.contains(addr("10.0.0.1")));
    CHECK_FALSE(loopback.is_everything());
    const auto everything = core::AddressList::parse("0.0.0.0/0,::/0");
    CHECK(everything.is_everything());
    CHECK(everything.contains(addr("203.0.113.9")));
    CHECK(everything.contains(addr("2001:db8::1")));
    CHECK_FALSE(core::AddressList().contains(addr("127.0.0.1")));
}

TEST_CASE("a malformed entry is refused, naming it") {
    for (const char* bad : {"", "10.0.0.0/33", "::/129", "10.0.0.1/8", "localhost", "10.0.0.0/", "10.0.0.0/8x", "127.0.0.1,,::1"}) {
        CAPTURE(bad);
        CHECK_THROWS_AS(core::AddressList::parse(bad), std::invalid_argument);
    }
    try {
        core::AddressList::parse("127.0.0.1,10.0.0.1/8");
        FAIL("accepted host bits");
    } catch (const std::invalid_argument& e) {
        CHECK(std::string(e.what()).find("'10.0.0.1/8'") != std::string::npos);
    }
}
