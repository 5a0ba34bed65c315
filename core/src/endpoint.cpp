#include <coconut/core/endpoint.hpp>

#include <charconv>

namespace coconut {
namespace {

Unexpected<std::string> bad(std::string_view text, std::string_view why) {
    return Unexpected<std::string>{"'" + std::string(text) + "' is not HOST:PORT: " + std::string(why)};
}

// Splits off the host ("[v6]" unwrapped) and the port text; the error names what is missing.
Result<std::pair<std::string_view, std::string_view>, std::string> split(std::string_view text) {
    if (text.empty()) return bad(text, "it is empty");
    if (text.front() == '[') {
        const std::size_t close = text.find(']');
        if (close == std::string_view::npos) return bad(text, "'[' without ']'");
        const std::string_view host = text.substr(1, close - 1);
        if (host.empty() || host.find(':') == std::string_view::npos) return bad(text, "brackets hold an IPv6 address");
        if (close + 1 >= text.size() || text[close + 1] != ':') return bad(text, "no ':PORT' after the ']'");
        return std::pair{host, text.substr(close + 2)};
    }
    const std::size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) return bad(text, "no ':PORT'");
    const std::string_view host = text.substr(0, colon);
    if (host.empty()) return bad(text, "no host before the ':'");
    if (host.find(':') != std::string_view::npos) return bad(text, "an IPv6 address goes in brackets, as [::1]:PORT");
    return std::pair{host, text.substr(colon + 1)};
}

}  // namespace

Result<HostPort, std::string> parse_host_port(std::string_view text, PortZero zero) {
    auto parts = split(text);
    if (!parts) return Unexpected{parts.error()};
    const auto [host, port] = parts.value();
    if (host.find_first_of(" \t\r\n/@[]") != std::string_view::npos) return bad(text, "the host has a character no host has");
    const bool digits_only = !port.empty() && port.size() <= 5 && port.find_first_not_of("0123456789") == std::string_view::npos;
    unsigned value = 0;
    if (digits_only) std::from_chars(port.data(), port.data() + port.size(), value);
    const unsigned lowest = zero == PortZero::allowed ? 0 : 1;
    if (!digits_only || value > 65535 || value < lowest)
        return bad(text, zero == PortZero::allowed ? "the port must be 0–65535" : "the port must be 1–65535");
    return HostPort{std::string(host), static_cast<std::uint16_t>(value)};
}

std::string format_host_port(const HostPort& endpoint) {
    const bool v6 = endpoint.host.find(':') != std::string::npos;
    return (v6 ? "[" + endpoint.host + "]" : endpoint.host) + ":" + std::to_string(endpoint.port);
}

}  // namespace coconut
