// The Coconut profile of ISO 8583 (clearing/ISO8583.md §3–§4): what the fields of each message mean,
// defined once and used by both ends of the link — the terminal SDK's ClearingClient builds and reads
// its messages with these, the clearing daemon's engine reads and answers with the same functions. The
// wire codec (iso8583.hpp) knows sizes and character sets only; the card data of field 62 is in
// card_data.hpp.
//
//   Message m("0800");
//   m.set_number(70, static_cast<unsigned>(NetworkCode::hotlist_download), 3);
//   m.set(48, encode_hotlist_position({version, 0}));
//   …
//   auto chunk = parse_hotlist_chunk(*answer.get(63));   // the daemon wrote it with encode_hotlist_chunk
//
// Every parser returns nullopt / an error for text it would not have produced; every encoder asserts
// its input is in range (a programming error), so what one side writes the other reads.
#pragma once

#include <coconut/iso8583/card_data.hpp>
#include <coconut/iso8583/iso8583.hpp>
#include <coconut/core/result.hpp>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace coconut::iso8583 {

// ---- message types (§4) --------------------------------------------------------------------------------

// The requests a terminal sends; each is answered with its response MTI (response_mti). A repeat (the
// originator digit 1: 0321, 0221, 0421, …) is the same type, answered like the original.
enum class MessageType : std::uint8_t {
    authorization,    // 0100: clinic hold on the medical account (§4.4)
    financial,        // 0200: online load (§4.2)
    advice,           // 0220: load confirmation (§4.3), clinic completion (§4.5)
    upload,           // 0320: one offline purse purchase (§4.8)
    reversal,         // 0400: reversal of a load or a hold (§4.5)
    reversal_advice,  // 0420: the same when the terminal got no answer in time
    reconciliation,   // 0500: batch totals (§4.7)
    network,          // 0800: sign-on, echo, hotlist, card-presence challenge (NetworkCode)
};
// "0320", or "0321" for a repeat.
std::string request_mti(MessageType type, bool repeat = false);
// The type of a request MTI, repeats included; nullopt for a response or an MTI we do not serve.
std::optional<MessageType> request_type_of(std::string_view mti);

// ---- field 3: processing code (type ‖ from account ‖ to account) ---------------------------------------

enum class ProcessingCode : std::uint8_t {
    purse_purchase,    // 000000: 0320 offline purse purchase
    medical_purchase,  // 003000: 0100 / 0220 / 0400 clinic payment from the medical (insurance) account
    purse_load,        // 210000: 0200 / 0220 / 0400 online load (deposit)
    refund,            // 200000: 0200 / 0220 / 0400 refund of a purchase to the purse (or 0220 in cash), §4.10
    carried_load,      // 280000: 0200 / 0220 / 0400 transfer in: a load funded by the card's carried holding (§4.1)
    medical_inquiry,   // 313000: 0100 balance inquiry of the medical account (§4.4a), presence proven like a hold
    medical_refund,    // 200030: 0200 refund of a completed clinic payment to the medical account (§4.10)
};
std::string_view processing_code_text(ProcessingCode code);
// Field 54 of the 0110 to a medical balance inquiry (ISO8583.md §4.4a): account type 30 (the medical
// account) ‖ amount type 02 (available) ‖ currency 156 ‖ C ‖ 12 digits of fen — "3002156C000000003000".
std::string medical_available_field(std::uint64_t fen);
// The fen of such a field 54; nullopt when it is not one.
std::optional<std::uint64_t> parse_medical_available_field(std::string_view field54);
std::optional<ProcessingCode> parse_processing_code(std::string_view text);
// The request's field 3, when it is one of ours.
std::optional<ProcessingCode> processing_code_of(const Message& request);

// ---- field 70: network management code (0800) ---------------------------------------------------------

enum class NetworkCode : std::uint16_t {
    sign_on = 1,
    sign_off = 2,
    hotlist_download = 101,  // 48 in, 63 out (§4.6)
    card_challenge = 201,    // 2 and 62 DF01 in, 62 DF01 ‖ DF0E out (§4.4)
    echo = 301,
};
// A 0800 for `code` from `terminal_id` with STAN `stan` (fields 11, 41, 70).
Message network_request(NetworkCode code, std::uint32_t stan, std::string_view terminal_id);
// Field 70 of a request as one of ours; nullopt when absent or unknown.
std::optional<NetworkCode> network_code_of(const Message& request);

// ---- field 2, 60, 90 ----------------------------------------------------------------------------------

// Field 2: the logical card number, the ASN's rightmost 16 digits (ISO8583.md §3).
std::string card_number(const CardAsn& asn);
// Field 60: the terminal's batch number, 6 digits (only its first 6 characters are read).
inline constexpr std::uint32_t batch_number_max = 999'999;
std::string batch_field(std::uint32_t batch_number);
std::optional<std::uint32_t> batch_of(const Message& request);

// Field 90 (n42): original MTI (4) ‖ original STAN (6) ‖ original transmission date/time (10) ‖ acquirer
// and forwarding institution ids (22 zeros: not used).
struct OriginalData {
    std::string mti;  // "0200", "0100"
    std::uint32_t stan = 0;
    std::string transmission_time;  // MMDDhhmmss, 10 digits
};
std::string encode_original_data(const OriginalData& original);
std::optional<OriginalData> parse_original_data(std::string_view field90);

// ---- the fields of a card-transaction request (§4.1, §4.8) --------------------------------------------------

// What 0100, 0200, 0220, 0320, 0400 and 0420 carry besides their card data (62) and original (90).
struct TransactionFields {
    std::string card_number;                                     // 2 (card_number of the ASN)
    ProcessingCode processing = ProcessingCode::purse_purchase;  // 3
    std::uint64_t amount_fen = 0;                                // 4
    std::string transmission_time;                               // 7 MMDDhhmmss; empty: not sent (0320, advices)
    std::uint32_t stan = 0;                                      // 11
    std::string local_time;                                      // 12 hhmmss of the card transaction; empty: not sent
    std::string local_date;                                      // 13 MMDD; empty: not sent
    std::string terminal_id;                                     // 41
    std::uint32_t batch_number = 0;                              // 60
};
// A request of `type` with these fields; an upload (0320) also carries 25 = 08 (store-and-forward).
// The caller adds 62 (card data), 42 (0100's merchant) and 90 (advices and reversals).
Message transaction_request(MessageType type, const TransactionFields& fields, bool repeat = false);

// ---- hotlist download: fields 48 and 63 (§4.6) ----------------------------------------------------------

inline constexpr std::size_t hotlist_entries_per_chunk = 47;      // 8 + 1 + 47 × 21 = 996 ≤ 999 characters of 63
inline constexpr std::uint64_t hotlist_version_max = 99'999'999;  // 8 digits in 48 and 63
inline constexpr std::uint32_t hotlist_chunk_index_max = 9'999;   // 4 digits in 48

// Field 48 of the request: the version the terminal holds ‖ the chunk it asks for.
struct HotlistPosition {
    std::uint64_t version = 0;
    std::uint32_t chunk_index = 0;
};
std::string encode_hotlist_position(const HotlistPosition& position);
std::optional<HotlistPosition> parse_hotlist_position(std::string_view field48);

struct HotlistEntry {
    bool added = true;  // + (the card left active: refuse it) or - (back to active)
    CardAsn asn{};
    friend bool operator==(const HotlistEntry&, const HotlistEntry&) = default;
};
// Field 63 of the 0810: VVVVVVVV (the version after this chunk) ‖ M (1: more chunks follow) ‖ entries.
struct HotlistChunk {
    std::uint64_t version = 0;
    bool more = false;
    std::vector<HotlistEntry> entries;
    friend bool operator==(const HotlistChunk&, const HotlistChunk&) = default;
};
std::string encode_hotlist_chunk(const HotlistChunk& chunk);
// The error names what is wrong ("entry 3: ASN not 20 digits").
Result<HotlistChunk, std::string> parse_hotlist_chunk(std::string_view field63);

// ---- 0500 / 0510 reconciliation (§4.7) -----------------------------------------------------------------

// A batch's totals: counts in 74–77 (n10), amounts in fen in 86–89 (n16).
struct BatchTotalsFields {
    std::uint64_t credits_count = 0;           // 74 loads confirmed
    std::uint64_t credit_reversals_count = 0;  // 75 load reversals answered 00
    std::uint64_t debits_count = 0;            // 76 purchases, clinic completions
    std::uint64_t debit_reversals_count = 0;   // 77 clinic reversals answered 00
    std::uint64_t credits_fen = 0;             // 86
    std::uint64_t credit_reversals_fen = 0;    // 87
    std::uint64_t debits_fen = 0;              // 88
    std::uint64_t debit_reversals_fen = 0;     // 89
    friend bool operator==(const BatchTotalsFields&, const BatchTotalsFields&) = default;
};
void set_batch_totals(Message& request, const BatchTotalsFields& totals);
// The totals of a 0500; an absent field counts 0; nullopt when 76 or 88 is missing or a field is not a number.
std::optional<BatchTotalsFields> batch_totals_of(const Message& request);
// Field 97: the host's net (debits − debit reversals − credits + credit reversals) as D (≥ 0) or C ‖ 16 digits.
std::string encode_net_amount(std::int64_t net_fen);
std::optional<std::int64_t> parse_net_amount(std::string_view field97);

// ---- responses -------------------------------------------------------------------------------------------

// Fields a response echoes (§4): what identifies the transaction to the terminal.
inline constexpr int echoed_fields[] = {2, 3, 4, 7, 11, 12, 13, 25, 32, 41, 42, 49, 60, 70};
// The response to `request`: the response MTI, the echoed fields, 39 = code. `request` must carry a
// request or advice MTI (response_mti has a value).
Message make_response(const Message& request, ResponseCode code);
// Field 39 of an answer as one of our codes; nullopt when absent or not one we define.
std::optional<ResponseCode> response_code_of(const Message& answer);

}  // namespace coconut::iso8583
