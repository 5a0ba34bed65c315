// Card data of an offline purse transaction as carried in field 62 (ISO8583.md §3.1): hex text of
// BER-TLV tags DF01–DF08. The one encoder and parser, used by the terminal SDK's clearing client and by
// the clearing daemon.
#pragma once

#include <coconut/crypto/card_crypto.hpp>
#include <coconut/result.hpp>

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace coconut::iso8583 {

struct PurseTransaction {
    std::array<std::uint8_t, 10> asn{};  // DF01, BCD
    std::uint8_t type = 0;               // DF02: 06 EP purchase, 09 CAPP (transit) purchase
    std::uint32_t balance_before_fen = 0;  // DF03
    std::uint16_t offline_atc = 0;         // DF04: the ATC INITIALIZE reported
    std::uint32_t terminal_serial = 0;     // DF05
    std::array<std::uint8_t, 6> terminal_id{};  // DF06, BCD
    crypto::CardDateTime when;                  // DF07: date(4) ‖ time(3), BCD
    crypto::Mac4 tac{};                         // DF08
};

// Parses the hex text of field 62. The error names the tag and the problem ("DF04 (offline ATC): 1 bytes,
// expected 2"). Field 62 is at most 999 characters (LLLVAR); a purchase needs 104.
Result<PurseTransaction, std::string> parse_purse_transaction(std::string_view field62);
// The inverse: upper-case hex of DF01..DF08.
std::string encode_purse_transaction(const PurseTransaction& transaction);

}  // namespace coconut::iso8583
