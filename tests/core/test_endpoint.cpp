// HOST:PORT parsing: names, IPv4, bracketed IPv6, the port range, and every malformed form refused
// with a message naming the input.
#include <coconut/core/endpoint.hpp>

#include <doctest/doctest.h>

using namespace coconut;

TEST_CASE("HOST:PORT that parse") {
    CHECK(parse_host_port("127.0.0.1:7501").value() == HostPort{"127.0.0.1", 7501});
    CHECK(parse_host_port("clearing.island:8583").value() == HostPort{"clearing.island", 8583});
    CHECK(parse_host_port("[::1]:443").value() == HostPort{"::1", 443});
    CHECK(parse_host_port("[fe80::1%lo]:1").value() == HostPort{"fe80::1%lo", 1});
    CHECK(parse_host_port("0.0.0.0:65535").value().port == 65535);
    CHECK(parse_host_port("127.0.0.1:0", PortZero::allowed).value().port == 0);
    CHECK(parse_host_port("[::]:00080").value().port == 80);
}

TEST_CASE("HOST:PORT that do not parse, with the reason") {
    const auto reason = [](std::string_view text, PortZero zero = PortZero::refused) {
        auto parsed = parse_host_port(text, zero);
        REQUIRE_FALSE(parsed);
        CHECK(parsed.error().starts_with("'" + std::string(text) + "' is not HOST:PORT: "));
        return parsed.error();
    };
    CHECK(reason("").ends_with("it is empty"));
    CHECK(reason("127.0.0.1").ends_with("no ':PORT'"));
    CHECK(reason(":7501").ends_with("no host before the ':'"));
    CHECK(reason("::1:7501").ends_with("an IPv6 address goes in brackets, as [::1]:PORT"));
    CHECK(reason("[::1]").ends_with("no ':PORT' after the ']'"));
    CHECK(reason("[::1]7501").ends_with("no ':PORT' after the ']'"));
    CHECK(reason("[::1:7501").ends_with("'[' without ']'"));
    CHECK(reason("[]:7501").ends_with("brackets hold an IPv6 address"));
    CHECK(reason("[127.0.0.1]:7501").ends_with("brackets hold an IPv6 address"));
    CHECK(reason("127.0.0.1:0").ends_with("the port must be 1–65535"));
    CHECK(reason("127.0.0.1:65536").ends_with("the port must be 1–65535"));
    CHECK(reason("127.0.0.1:99999999999").ends_with("the port must be 1–65535"));
    CHECK(reason("127.0.0.1:-1").ends_with("the port must be 1–65535"));
    CHECK(reason("127.0.0.1:+80").ends_with("the port must be 1–65535"));
    CHECK(reason("127.0.0.1: 80").ends_with("the port must be 1–65535"));
    CHECK(reason("127.0.0.1:").ends_with("the port must be 1–65535"));
    CHECK(reason("127.0.0.1:80x").ends_with("the port must be 1–65535"));
    CHECK(reason("127.0.0.1:70000", PortZero::allowed).ends_with("the port must be 0–65535"));
    CHECK(reason("user@host:80").ends_with("the host has a character no host has"));
    CHECK(reason("host/path:80").ends_with("the host has a character no host has"));
    CHECK(reason("my host:80").ends_with("the host has a character no host has"));
}

TEST_CASE("format_host_port brackets IPv6") {
    CHECK(format_host_port({"127.0.0.1", 7501}) == "127.0.0.1:7501");
    CHECK(format_host_port({"::1", 443}) == "[::1]:443");
    CHECK(parse_host_port(format_host_port({"fe80::2", 9})).value() == HostPort{"fe80::2", 9});
}
