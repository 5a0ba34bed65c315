#include <coconut/core/bytes.hpp>

#include <coconut/core/assert.hpp>

#include <stdexcept>

namespace coconut {

std::uint64_t read_be(ByteView b) {
    COCONUT_ASSERT(b.size() <= 8);
    std::uint64_t value = 0;
    for (std::uint8_t byte : b) value = (value << 8) | byte;
    return value;
}

void append_be(Bytes& out, std::uint64_t value, std::size_t width) {
    COCONUT_ASSERT(width <= 8);
    const std::size_t at = out.size();
    out.resize(at + width);  // one size check instead of one per byte
    for (std::size_t i = 0; i < width; ++i) out[at + i] = static_cast<std::uint8_t>(value >> (8 * (width - 1 - i)));
}

Bytes be_bytes(std::uint64_t value, std::size_t width) {
    Bytes out;
    out.reserve(width);
    append_be(out, value, width);
    return out;
}

std::string to_hex(ByteView b) {
    static constexpr char digits[] = "0123456789ABCDEF";
    std::string out;
    out.reserve(b.size() * 2);
    for (std::uint8_t byte : b) {
        out.push_back(digits[byte >> 4]);
        out.push_back(digits[byte & 0x0F]);
    }
    return out;
}

namespace {
int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}
}  // namespace

std::optional<Bytes> from_hex(std::string_view text) {
    Bytes out;
    out.reserve(text.size() / 2);
    int high = -1;
    for (char c : text) {
        if (c == ' ' || c == '\t' || c == ':') continue;
        const int digit = hex_digit(c);
        if (digit < 0) return std::nullopt;
        if (high < 0) {
            high = digit;
        } else {
            out.push_back(static_cast<std::uint8_t>((high << 4) | digit));
            high = -1;
        }
    }
    if (high >= 0) return std::nullopt;
    return out;
}

Bytes hex(std::string_view text) {
    auto parsed = from_hex(text);
    if (!parsed) throw std::invalid_argument("invalid hex: " + std::string(text));
    return std::move(*parsed);
}

bool is_bcd(ByteView b) {
    for (std::uint8_t byte : b)
        if ((byte >> 4) > 9 || (byte & 0x0F) > 9) return false;
    return true;
}

std::optional<Bytes> digits_to_bcd(std::string_view digits) {
    if (digits.size() % 2 != 0) return std::nullopt;
    Bytes out;
    out.reserve(digits.size() / 2);
    for (std::size_t i = 0; i < digits.size(); i += 2) {
        const char high = digits[i];
        const char low = digits[i + 1];
        if (high < '0' || high > '9' || low < '0' || low > '9') return std::nullopt;
        out.push_back(static_cast<std::uint8_t>(((high - '0') << 4) | (low - '0')));
    }
    return out;
}

std::string bcd_to_digits(ByteView b) { return to_hex(b); }

Bytes bcd_of(std::uint64_t value, std::size_t width) {
    Bytes out(width, 0);
    for (std::size_t i = width; i > 0; --i) {
        const auto low = static_cast<std::uint8_t>(value % 10);
        value /= 10;
        const auto high = static_cast<std::uint8_t>(value % 10);
        value /= 10;
        out[i - 1] = static_cast<std::uint8_t>((high << 4) | low);
    }
    COCONUT_ASSERT(value == 0, "value does not fit the BCD width");
    return out;
}

std::optional<std::uint64_t> bcd_value(ByteView b) {
    if (!is_bcd(b)) return std::nullopt;
    std::uint64_t value = 0;
    for (std::uint8_t byte : b) value = value * 100 + (byte >> 4) * 10 + (byte & 0x0F);
    return value;
}

void secure_wipe(void* data, std::size_t size) {
    volatile auto* p = static_cast<volatile std::uint8_t*>(data);
    for (std::size_t i = 0; i < size; ++i) p[i] = 0;
}

}  // namespace coconut
