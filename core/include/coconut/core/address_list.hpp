// A list of client addresses — single addresses and CIDR networks, IPv4 and IPv6 — for allow-lists
// on listeners ("which peers may connect at all", checked before anything is read from them).
//
//   auto allowed = coconut::core::AddressList::parse("127.0.0.1,10.0.0.0/8,fd00::/8");
//   if (!allowed.contains(peer)) close(peer);
//
// An IPv4-mapped IPv6 peer (::ffff:a.b.c.d) matches as its IPv4 address (canonical_address()).
#pragma once

#include <boost/asio/ip/address.hpp>

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace coconut::core {

class AddressList {
public:
    // An empty list: contains() is false for every address.
    AddressList() = default;

    // Comma-separated entries, spaces around them ignored: "ADDRESS" or "ADDRESS/PREFIX" (IPv4 0–32,
    // IPv6 0–128), the network's host bits zero ("10.0.0.1/8" is refused: 10.0.0.0/8 or 10.0.0.1/32
    // was meant). Throws std::invalid_argument naming the first bad entry; an empty text is an error
    // too (a listener that admits nobody is a mistake).
    static AddressList parse(std::string_view text);
    // 127.0.0.0/8 and ::1.
    static AddressList loopback();

    bool contains(const boost::asio::ip::address& address) const;
    bool empty() const noexcept { return networks_.empty(); }
    // True if it contains every address (0.0.0.0/0 and ::/0).
    bool is_everything() const;
    // The entries as parse() takes them, comma-separated, in their given order.
    std::string to_string() const;

private:
    struct Network {
        bool v6 = false;
        std::array<std::uint8_t, 16> bytes{};  // IPv4 in the first 4
        unsigned prefix_bits = 0;
    };
    std::vector<Network> networks_;
};

}  // namespace coconut::core
