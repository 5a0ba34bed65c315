// Byte helpers used everywhere: the Bytes type, big-endian integers, BCD, hex (for edges only:
// logs, CLI, tests). One place for byte order (coconut::core, below every component).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace coconut {

using Bytes = std::vector<std::uint8_t>;
using ByteView = std::span<const std::uint8_t>;

// The bytes of a string, viewed (for hashing or writing text).
inline ByteView text_bytes(std::string_view text) { return {reinterpret_cast<const std::uint8_t*>(text.data()), text.size()}; }

// Appends `b` to `out`.
inline void append(Bytes& out, ByteView b) { out.insert(out.end(), b.begin(), b.end()); }

// Concatenates any number of byte ranges.
template <class... Parts>
Bytes concat(const Parts&... parts) {
    Bytes out;
    (append(out, ByteView(parts)), ...);
    return out;
}

// ---- big-endian -------------------------------------------------------------------------------

// Reads an unsigned big-endian integer of b.size() bytes (at most 8).
std::uint64_t read_be(ByteView b);
inline std::uint16_t read_be16(ByteView b) { return static_cast<std::uint16_t>(read_be(b.first(2))); }
inline std::uint32_t read_be32(ByteView b) { return static_cast<std::uint32_t>(read_be(b.first(4))); }

// Writes `value` as `width` big-endian bytes (width ≤ 8; high bits beyond width are dropped by contract:
// callers check ranges first).
Bytes be_bytes(std::uint64_t value, std::size_t width);
void append_be(Bytes& out, std::uint64_t value, std::size_t width);
template <std::size_t N>
std::array<std::uint8_t, N> be_array(std::uint64_t value) {
    std::array<std::uint8_t, N> out{};
    for (std::size_t i = 0; i < N; ++i) out[N - 1 - i] = static_cast<std::uint8_t>(value >> (8 * i));
    return out;
}

// ---- hex --------------------------------------------------------------------------------------

// Upper-case hex, no separators.
std::string to_hex(ByteView b);
// Parses hex; spaces, tabs and ':' between digits are ignored. nullopt on odd length or a non-hex char.
std::optional<Bytes> from_hex(std::string_view text);
// Parses hex that must be valid (tests, constants); throws std::invalid_argument otherwise.
Bytes hex(std::string_view text);

// ---- BCD --------------------------------------------------------------------------------------

// True if every nibble is 0–9.
bool is_bcd(ByteView b);
// Packs a string of decimal digits (even length) into BCD. nullopt on a non-digit or odd length.
std::optional<Bytes> digits_to_bcd(std::string_view digits);
// Unpacks BCD into digits; nibbles above 9 come out as hex letters (so garbage stays visible).
std::string bcd_to_digits(ByteView b);
// BCD of `value` in `width` bytes (value must fit).
Bytes bcd_of(std::uint64_t value, std::size_t width);
// Value of a BCD field; nullopt if a nibble is not a digit.
std::optional<std::uint64_t> bcd_value(ByteView b);

// Overwrites memory in a way the optimizer keeps (for secrets in types that are not sodium-backed).
void secure_wipe(void* data, std::size_t size);

}  // namespace coconut
