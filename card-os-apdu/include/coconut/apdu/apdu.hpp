// ISO 7816-4 command and response APDUs: the four cases, short and extended length.
//
//   case 1: CLA INS P1 P2
//   case 2: CLA INS P1 P2 Le            (short Le 00 = 256; extended 00 Le1 Le2, 0000 = 65536)
//   case 3: CLA INS P1 P2 Lc data       (extended: 00 Lc1 Lc2 data)
//   case 4: CLA INS P1 P2 Lc data Le    (extended: 00 Lc1 Lc2 data Le1 Le2)
#pragma once

#include <coconut/core/bytes.hpp>
#include <coconut/apdu/status.hpp>
#include <coconut/core/result.hpp>

#include <cstdint>
#include <optional>
#include <string>

namespace coconut::apdu {

// Largest Ne a short APDU can ask for, and an extended one.
inline constexpr std::size_t short_le_max = 256;
inline constexpr std::size_t extended_le_max = 65536;
inline constexpr std::size_t short_lc_max = 255;
inline constexpr std::size_t extended_lc_max = 65535;

enum class Case : std::uint8_t { one = 1, two = 2, three = 3, four = 4 };

struct Command {
    std::uint8_t cla = 0;
    std::uint8_t ins = 0;
    std::uint8_t p1 = 0;
    std::uint8_t p2 = 0;
    Bytes data;
    // Ne: expected response length, 1..65536, or none (cases 1 and 3).
    std::optional<std::size_t> le;
    // Set by parse(): the command arrived in extended form. encode() uses extended form when this is
    // set or when data/le do not fit the short form.
    bool extended = false;

    Case apdu_case() const {
        if (data.empty()) return le ? Case::two : Case::one;
        return le ? Case::four : Case::three;
    }
    // Ne as it would be encoded in a short APDU's Le byte (256 → 0).
    std::size_t le_or(std::size_t fallback) const { return le.value_or(fallback); }
};

// Why a byte string is not a well-formed command APDU. Each maps to the status word a card answers.
enum class ParseError : std::uint8_t {
    too_short,         // fewer than 4 bytes → 6700
    lc_mismatch,       // Lc says more or fewer bytes than follow → 6700
    bad_extended_form  // extended marker with an impossible layout → 6700
};

Result<Command, ParseError> parse_command(ByteView raw);
// Encodes the command, short form when it fits (and `extended` is not set), extended otherwise.
Bytes encode(const Command& command);

struct Response {
    Bytes data;
    std::uint16_t sw = value(Sw::ok);

    bool ok() const { return sw == value(Sw::ok); }
    std::uint8_t sw1() const { return static_cast<std::uint8_t>(sw >> 8); }
    std::uint8_t sw2() const { return static_cast<std::uint8_t>(sw & 0xFF); }
};

// Response wire form: data ‖ SW1 SW2.
Bytes encode(const Response& response);
// Parses data ‖ SW1 SW2; nullopt if fewer than 2 bytes.
std::optional<Response> parse_response(ByteView raw);

inline Response status_only(Sw sw) { return Response{{}, value(sw)}; }
inline Response status_only(std::uint16_t sw) { return Response{{}, sw}; }

// "80 5C 00 02 04"-style readable form for traces.
std::string format_command(const Command& command);

}  // namespace coconut::apdu
