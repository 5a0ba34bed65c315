// HOST:PORT, the one parser of every daemon's and CLI's listen and connect addresses (the HSM, the
// clearing daemon's ISO 8583 and HTTP listeners, the terminal's clearing address, the clerk URL of
// settlement). Strict: an IPv6 literal goes in brackets ("[::1]:7501"), the port is 1–65535 in decimal
// digits only (0 only where a server may ask for an ephemeral port), the host is not empty and has no
// whitespace, '/' or '@'. Errors name the input and what is wrong with it.
#pragma once

#include <coconut/core/result.hpp>

#include <cstdint>
#include <string>
#include <string_view>

namespace coconut {

struct HostPort {
    std::string host;  // a name or an IPv4/IPv6 literal, without brackets
    std::uint16_t port = 0;
    friend bool operator==(const HostPort&, const HostPort&) = default;
};

enum class PortZero { refused, allowed };

// "HOST:PORT" or "[IPv6]:PORT". The error is a sentence naming `text`.
Result<HostPort, std::string> parse_host_port(std::string_view text, PortZero zero = PortZero::refused);

// The inverse: "host:port", or "[host]:port" when the host is an IPv6 literal.
std::string format_host_port(const HostPort& endpoint);

}  // namespace coconut
