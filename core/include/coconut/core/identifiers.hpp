// The card world's identifiers and clock, defined once for every component (docs/CARD-SPEC.md: EF15 and
// the PSAM's EF16; docs/DESIGN.md: card and business time). Components name them through
// using-declarations (hsm::Asn, clearing::Asn, sdk::Asn are these types).
#pragma once

#include <array>
#include <chrono>
#include <cstdint>

namespace coconut {

using Asn = std::array<std::uint8_t, 10>;        // application serial number: 20 BCD digits (EF15)
using IssuerId = std::array<std::uint8_t, 8>;    // issuer identifier (EF15): the issuer factor of key derivation
using TerminalId = std::array<std::uint8_t, 6>;  // PSAM terminal id: 12 BCD digits (EF16)

// Card time and business dates are Hainan local time: UTC+8 all year, no daylight saving.
inline constexpr std::chrono::seconds hainan_utc_offset{8 * 3600};

}  // namespace coconut
