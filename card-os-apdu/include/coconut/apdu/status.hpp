// ISO 7816-4 / PBOC status words, exactly as docs/CARD-SPEC.md §3. One enum, one name each.
#pragma once

#include <cstdint>
#include <string_view>

namespace coconut::apdu {

enum class Sw : std::uint16_t {
    ok = 0x9000,
    selected_file_invalidated = 0x6283,  // SELECT of a blocked application (its FCI still answered)
    write_failure = 0x6581,
    wrong_length = 0x6700,
    command_incompatible_with_file = 0x6981,
    security_status_not_satisfied = 0x6982,
    key_or_pin_blocked = 0x6983,
    challenge_invalid = 0x6984,
    conditions_not_satisfied = 0x6985,
    no_current_ef = 0x6986,
    sm_data_incorrect = 0x6988,  // APPLICATION BLOCK: the MAC does not verify
    bad_data = 0x6A80,
    function_not_supported = 0x6A81,
    file_not_found = 0x6A82,
    record_not_found = 0x6A83,
    bad_p1_p2 = 0x6A86,
    key_not_found = 0x6A88,
    bad_offset = 0x6B00,
    ins_not_supported = 0x6D00,
    cla_not_supported = 0x6E00,
    mac_invalid = 0x9302,
    application_locked = 0x9303,
    insufficient_balance = 0x9401,
    key_index_not_supported = 0x9403,
    mac_unavailable = 0x9406,
};

constexpr std::uint16_t value(Sw sw) { return static_cast<std::uint16_t>(sw); }

// Status words with a parameter byte.
constexpr std::uint16_t sw_wrong_le(std::uint8_t exact_le) { return static_cast<std::uint16_t>(0x6C00 | exact_le); }
constexpr std::uint16_t sw_bytes_available(std::uint8_t count) { return static_cast<std::uint16_t>(0x6100 | count); }
constexpr std::uint16_t sw_pin_wrong(std::uint8_t tries_left) { return static_cast<std::uint16_t>(0x63C0 | (tries_left & 0x0F)); }

constexpr bool is_wrong_le(std::uint16_t sw) { return (sw & 0xFF00) == 0x6C00; }
constexpr bool is_bytes_available(std::uint16_t sw) { return (sw & 0xFF00) == 0x6100; }
constexpr bool is_pin_wrong(std::uint16_t sw) { return (sw & 0xFFF0) == 0x63C0; }

// Human name of a status word ("9302 MAC invalid"); unknown words get "unknown status".
std::string_view describe(std::uint16_t sw);

}  // namespace coconut::apdu
