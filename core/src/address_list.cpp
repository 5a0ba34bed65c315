#include <coconut/core/address_list.hpp>
#include <coconut/core/admission.hpp>

#include <charconv>
#include <stdexcept>

namespace coconut::core {
namespace {

std::string_view trim(std::string_view text) {
    while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
    while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
    return text;
}

// The address's bytes (IPv4 in the first 4) and whether it is IPv6.
std::pair<bool, std::array<std::uint8_t, 16>> address_bytes(const boost::asio::ip::address& address) {
    std::array<std::uint8_t, 16> bytes{};
    if (address.is_v4()) {
        const auto v4 = address.to_v4().to_bytes();
        std::copy(v4.begin(), v4.end(), bytes.begin());
        return {false, bytes};
    }
    const auto v6 = address.to_v6().to_bytes();
    std::copy(v6.begin(), v6.end(), bytes.begin());
    return {true, bytes};
}

// True if the first `bits` bits of a and b agree.
bool same_prefix(const std::array<std::uint8_t, 16>& a, const std::array<std::uint8_t, 16>& b, unsigned bits) {
    std::size_t i = 0;
    for (; bits >= 8; bits -= 8, ++i)
        if (a[i] != b[i]) return false;
    if (bits == 0) return true;
    const auto mask = static_cast<std::uint8_t>(0xFF00U >> bits);
    return (a[i] & mask) == (b[i] & mask);
}

}  // namespace

AddressList AddressList::parse(std::string_view text) {
    AddressList list;
    std::size_t start = 0;
    while (start <= text.size()) {
        const std::size_t comma = std::min(text.find(',', start), text.size());
        const std::string_view entry = trim(text.substr(start, comma - start));
        start = comma + 1;
        const auto bad = [&](std::string_view why) {
            return std::invalid_argument("address list entry '" + std::string(entry) + "': " + std::string(why));
        };
        if (entry.empty()) throw bad("empty (expected ADDRESS or ADDRESS/PREFIX, comma-separated)");
        const std::size_t slash = entry.find('/');
        boost::system::error_code ec;
        const auto address = boost::asio::ip::make_address(std::string(entry.substr(0, slash)), ec);
        if (ec) throw bad("not an IPv4 or IPv6 address");
        Network network;
        std::tie(network.v6, network.bytes) = address_bytes(canonical_address(address));
        const unsigned width = network.v6 ? 128 : 32;
        network.prefix_bits = width;
        if (slash != std::string_view::npos) {
            const std::string_view digits = entry.substr(slash + 1);
            const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), network.prefix_bits);
            if (error != std::errc{} || end != digits.data() + digits.size() || digits.empty() || network.prefix_bits > width)
                throw bad(network.v6 ? "the prefix must be 0–128" : "the prefix must be 0–32");
            std::array<std::uint8_t, 16> masked{};
            for (unsigned bit = 0; bit < network.prefix_bits; ++bit)
                masked[bit / 8] |= static_cast<std::uint8_t>(network.bytes[bit / 8] & (0x80U >> (bit % 8)));
            if (masked != network.bytes) throw bad("host bits set after the prefix");
        }
        list.networks_.push_back(network);
    }
    return list;
}

AddressList AddressList::loopback() { return parse("127.0.0.0/8,::1"); }

bool AddressList::contains(const boost::asio::ip::address& address) const {
    const auto [v6, bytes] = address_bytes(canonical_address(address));
    for (const auto& network : networks_)
        if (network.v6 == v6 && same_prefix(network.bytes, bytes, network.prefix_bits)) return true;
    return false;
}

bool AddressList::is_everything() const {
    bool v4 = false;
    bool v6 = false;
    for (const auto& network : networks_)
        if (network.prefix_bits == 0) (network.v6 ? v6 : v4) = true;
    return v4 && v6;
}

std::string AddressList::to_string() const {
    std::string out;
    for (const auto& network : networks_) {
        if (!out.empty()) out += ',';
        if (network.v6) {
            boost::asio::ip::address_v6::bytes_type bytes{};
            std::copy(network.bytes.begin(), network.bytes.end(), bytes.begin());
            out += boost::asio::ip::address_v6(bytes).to_string();
        } else {
            out += boost::asio::ip::address_v4({network.bytes[0], network.bytes[1], network.bytes[2], network.bytes[3]}).to_string();
        }
        if (network.prefix_bits != (network.v6 ? 128U : 32U)) out += '/' + std::to_string(network.prefix_bits);
    }
    return out;
}

}  // namespace coconut::core
