// The one validator of registry entries — participants, terminals, cards — shared by every path that
// registers them: `coconut-clearingd admin load` (the registry file, clearing/README.md "Registry
// file"), the clerk API's registrations (POST /v1/clerk/participants, /terminals, /cards) and the
// `coconut terminal register` command, which checks its arguments before it issues a PSAM.
//
// The read_* functions take one entry as JSON (the field names of the registry file and of the clerk
// API are the same), refuse unknown fields, check each field's type, format and bounds and return the
// record, or the first problem. The *_problem functions check a record made otherwise; read_* ends with
// them, so a rule is written once. A problem names the field and what it must be, e.g.
// `"kind" must be bus, shop, clinic or counter`; the caller says which entry (`participants[3]: …`) or answers
// it as an HTTP 400.
//
// What needs the stored registry (a terminal's participant exists, a card is not registered twice with
// other balances, no duplicate within one file) is checked by the caller: it is not a property of one entry.
#pragma once

#include <coconut/clearing/registry.hpp>

#include <nlohmann/json_fwd.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

namespace coconut::clearing {

// Bounds of a registry entry's fields (the ISO 8583 fields that carry them: clearing/ISO8583.md).
inline constexpr std::uint64_t participant_id_max = 99'999'999'999ULL;  // field 32: n..11
inline constexpr std::size_t terminal_id_chars = 8;                     // field 41: ans 8
inline constexpr std::size_t merchant_id_chars_max = 15;                // field 42: ans 15
inline constexpr std::size_t participant_kind_chars_max = 16;
inline constexpr std::size_t bank_account_chars_max = 34;  // an IBAN's length
inline constexpr std::size_t card_status_chars_max = 16;

// An entry, or the problem that refuses it.
template <class T>
using EntryResult = coconut::Result<T, std::string>;

// {"id", "name", "kind", "bank_account", "fee_rate_bp"?}
EntryResult<Participant> read_participant(const nlohmann::json& entry);
// {"terminal_id", "psam_terminal_id", "participant_id", "merchant_id"?}; runtime fields zero, active.
EntryResult<TerminalRecord> read_terminal(const nlohmann::json& entry);
// {"asn", "issuer_id", "status"?, "purse_balance_fen"?, "medical_balance_fen"?, "tac_key_version"?};
// the shadow balance is the purse's opening balance, runtime fields zero.
EntryResult<CardRecord> read_card(const nlohmann::json& entry);

// id 1 … participant_id_max; name 1 … name_chars_max bytes of UTF-8 without control characters; kind bus, shop, clinic or
// counter (a service desk or card seller: clearing/README.md "Card return, refund and tourist cards");
// bank_account 1 … bank_account_chars_max printable ASCII; fee_rate_bp ≤ fee_rate_bp_max.
std::optional<std::string> participant_problem(const Participant& participant);
// terminal_id exactly terminal_id_chars printable ASCII; psam_terminal_id 12 BCD digits;
// participant_id ≤ participant_id_max; merchant_id ≤ merchant_id_chars_max printable ASCII.
std::optional<std::string> terminal_problem(const TerminalRecord& terminal);
// asn 20 BCD digits; status one of CardStatus; opening balances ≤ opening_balance_fen_max.
std::optional<std::string> card_problem(const CardRecord& card);

}  // namespace coconut::clearing
