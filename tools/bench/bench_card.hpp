// The card the PC/SC benchmarks (card_bench, terminal_bench) personalize: one issuer, one ASN, a balance
// that lasts a whole run, and the test issuer master keys (the same as the card demo's). Header-only.
#pragma once

#include <coconut/core/bytes.hpp>

#include <nlohmann/json.hpp>

#include <cstdint>

namespace coconut::bench {

inline constexpr const char* issuer_id = "4600000000000001";
inline constexpr const char* asn = "46010000000012345678";
inline constexpr const char* master_dpk = "0123456789ABCDEFFEDCBA9876543210";
// 1000.00 CNY: a run of 1-fen purchases never runs the purse dry.
inline constexpr std::uint32_t card_balance_fen = 100000;

// The raw APDU floor: an unsupported INS the dispatcher answers with 6D00 at once, i.e. one round trip
// through the stack with no card work.
inline const Bytes floor_apdu = hex("80FE0000");

// seed: the card's random number seed (32 hex digits); each benchmark keeps its own.
inline nlohmann::json card_profile(const char* seed) {
    return {{"kind", "card"},
            {"asn", asn},
            {"issuer_id", issuer_id},
            {"balance_fen", card_balance_fen},
            {"max_balance_fen", card_balance_fen},
            {"pin", "123456"},
            {"protocol", "T=1"},
            {"seed", seed},
            {"start_date", "20260101"},
            {"expiry_date", "20351231"},
            {"master_keys",
             {{"dpk", master_dpk},
              {"dlk", "11223344556677888877665544332211"},
              {"dtk", "2B7E151628AED2A6ABF7158809CF4F3C"},
              {"iak", "404142434445464748494A4B4C4D4E4F"},
              {"damk", "000102030405060708090A0B0C0D0E0F"},
              {"ssse_iak", "606162636465666768696A6B6C6D6E6F"}}}};
}

}  // namespace coconut::bench
