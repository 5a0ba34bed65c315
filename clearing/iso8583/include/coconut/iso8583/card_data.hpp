// Card data carried in field 62 (ISO8583.md §3.1, §4): hex text of BER-TLV tags DF01–DF0D. The one
// encoder and parser of each message's card data, used by the terminal SDK's clearing client and by the
// clearing daemon.
#pragma once

#include <coconut/core/bytes.hpp>
#include <coconut/crypto/card_crypto.hpp>
#include <coconut/core/result.hpp>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace coconut::iso8583 {

using CardAsn = std::array<std::uint8_t, 10>;        // DF01, BCD
using CardTerminalId = std::array<std::uint8_t, 6>;  // DF06, BCD

// DF0C, the transit record of a bus tap: line (2, BE) ‖ station (2, BE) ‖ optionally more bytes of the
// CAPP record (opaque to the host).
inline constexpr std::size_t transit_record_size_min = 4;
inline constexpr std::size_t transit_record_size_max = 48;

// DF11, a clinic visit's reference (ISO8583.md §4.9): the batch number (field 60) and STAN (field 11) of
// the visit's 0100, 6 + 6 digits BCD (6 bytes). It names the medical hold, so the clearing can show the
// visit's medical and purse parts as one; it moves no money.
struct VisitReference {
    std::uint32_t batch_number = 0;  // 1 … 999999
    std::uint32_t stan = 0;          // 1 … 999999
    friend bool operator==(const VisitReference&, const VisitReference&) = default;
};
inline constexpr std::size_t visit_reference_size = 6;

// DF13, the purchase a purse refund names (ISO8583.md §4.10): what its 0320 carried in DF06 and DF05,
// which its TAC covers — with the card's ASN, the purchase's ledger id (§4.8).
struct PurchaseReference {
    std::array<std::uint8_t, 6> terminal_id{};  // DF06 of the purchase, BCD
    std::uint32_t terminal_serial = 0;          // DF05 of the purchase
    friend bool operator==(const PurchaseReference&, const PurchaseReference&) = default;
};
inline constexpr std::size_t purchase_reference_size = 10;

// 0320: one offline purse transaction (DF01–DF08, DF0C and DF11 optional).
struct PurseTransaction {
    CardAsn asn{};                         // DF01
    std::uint8_t type = 0;                 // DF02: 06 EP purchase, 09 CAPP (transit) purchase
    std::uint32_t balance_before_fen = 0;  // DF03
    std::uint16_t offline_atc = 0;         // DF04: the ATC INITIALIZE reported
    std::uint32_t terminal_serial = 0;     // DF05
    CardTerminalId terminal_id{};          // DF06, BCD
    crypto::CardDateTime when;             // DF07: date(4) ‖ time(3), BCD
    crypto::Mac4 tac{};                    // DF08
    Bytes transit_record;                  // DF0C; empty when absent
    std::optional<VisitReference> visit;   // DF11: the purse part of a clinic visit
};
// Line and station of DF0C (0, 0 without a transit record).
std::uint16_t transit_line(const PurseTransaction& transaction);
std::uint16_t transit_station(const PurseTransaction& transaction);

// 0200: the card's INITIALIZE FOR LOAD answer and the terminal's data (ISO8583.md §4.2).
struct LoadRequestData {
    CardAsn asn{};                               // DF01
    std::uint8_t type = crypto::type_ep_load;    // DF02
    std::uint32_t old_balance_fen = 0;           // DF03
    std::uint16_t online_atc = 0;                // DF04
    CardTerminalId terminal_id{};                // DF06
    crypto::CardDateTime when;                   // DF07: what CREDIT FOR LOAD will carry
    crypto::Mac4 mac1{};                         // DF09
    std::array<std::uint8_t, 4> card_random{};   // DF0A
    std::optional<std::uint8_t> key_version;     // DF0D
    std::optional<PurchaseReference> refund_of;  // DF13: 3 = 200000, the purchase this credit refunds (§4.10)
};

// 0210: the host's answer (DF01, DF04, DF09 = MAC2).
struct LoadAnswerData {
    CardAsn asn{};
    std::uint16_t online_atc = 0;
    crypto::Mac4 mac2{};
};

// 0220 (3 = 210000): the load confirmation with the card's TAC (ISO8583.md §4.3).
struct LoadConfirmationData {
    CardAsn asn{};                             // DF01
    std::uint8_t type = crypto::type_ep_load;  // DF02
    std::uint32_t old_balance_fen = 0;         // DF03: balance before the credit
    std::uint16_t online_atc = 0;              // DF04: before the credit
    CardTerminalId terminal_id{};              // DF06
    crypto::CardDateTime when;                 // DF07
    crypto::Mac4 tac{};                        // DF08
};

// 0400 / 0420 of a load: which load (DF01, DF04).
struct LoadReferenceData {
    CardAsn asn{};
    std::uint16_t online_atc = 0;
};

// DF0E: a card-presence challenge the host issued (0810 to 0800 70 = 201, ISO8583.md §4.4): issued-at
// (seconds since the epoch, BE4) ‖ random (4) ‖ tag (8, keyed by the host). Opaque to the terminal.
using HostChallenge = std::array<std::uint8_t, 16>;

// 0800 70 = 201, the request for a challenge: which card (DF01).
struct ChallengeRequestData {
    CardAsn asn{};
};

// 0810 to it: the card and its challenge (DF01, DF0E).
struct ChallengeAnswerData {
    CardAsn asn{};
    HostChallenge challenge{};
};

// 0100: the card, its INTERNAL AUTHENTICATE answer and the challenge it answered (ISO8583.md §4.4).
struct ClinicAuthorizationData {
    CardAsn asn{};                             // DF01
    std::array<std::uint8_t, 8> cryptogram{};  // DF0B
    HostChallenge challenge{};                 // DF0E
    std::optional<VisitReference> visit;       // DF11: the visit this hold opens (its own 60 ‖ 11)
};

// 0200 3 = 200030 (ISO8583.md §4.10): the completed clinic hold whose medical part is refunded.
struct MedicalRefundData {
    CardAsn asn{};                             // DF01
    VisitReference visit;                      // DF11: the hold's 0100, batch ‖ STAN
    std::array<char, 8> hold_terminal_id41{};  // DF12: the hold's 0100 field 41 (printable ASCII)
};

// 0220 3 = 200000 without a TAC (ISO8583.md §4.10): the purchase was refunded in cash at the counter.
struct CashRefundData {
    CardAsn asn{};               // DF01
    PurchaseReference purchase;  // DF13
};

// DF10 in approvals of records a terminal queues (0330, 0230): a digest of the booked record, so the
// terminal deletes its queued record only when the host booked exactly that record (ISO8583.md §4.8).
using RecordDigest = std::array<std::uint8_t, 8>;

// Each parser takes the hex text of field 62; the error names the tag and the problem ("DF04 (offline
// ATC): 1 bytes, expected 2"). Field 62 is at most 999 characters (LLLVAR). Encoders write upper-case
// hex of the tags in ascending order.
Result<PurseTransaction, std::string> parse_purse_transaction(std::string_view field62);
std::string encode_purse_transaction(const PurseTransaction& transaction);
Result<LoadRequestData, std::string> parse_load_request(std::string_view field62);
std::string encode_load_request(const LoadRequestData& load);
Result<LoadAnswerData, std::string> parse_load_answer(std::string_view field62);
std::string encode_load_answer(const LoadAnswerData& answer);
Result<LoadConfirmationData, std::string> parse_load_confirmation(std::string_view field62);
std::string encode_load_confirmation(const LoadConfirmationData& confirmation);
Result<LoadReferenceData, std::string> parse_load_reference(std::string_view field62);
std::string encode_load_reference(const LoadReferenceData& reference);
Result<MedicalRefundData, std::string> parse_medical_refund(std::string_view field62);
std::string encode_medical_refund(const MedicalRefundData& refund);
Result<CashRefundData, std::string> parse_cash_refund(std::string_view field62);
std::string encode_cash_refund(const CashRefundData& refund);
// Whether a 0220's field 62 is a cash refund (DF13, no DF08) rather than a credit's confirmation.
bool is_cash_refund(std::string_view field62);
Result<ClinicAuthorizationData, std::string> parse_clinic_authorization(std::string_view field62);
std::string encode_clinic_authorization(const ClinicAuthorizationData& authorization);
Result<ChallengeRequestData, std::string> parse_challenge_request(std::string_view field62);
std::string encode_challenge_request(const ChallengeRequestData& request);
Result<ChallengeAnswerData, std::string> parse_challenge_answer(std::string_view field62);
std::string encode_challenge_answer(const ChallengeAnswerData& answer);
// DF10 alone (what an approval's field 62 carries).
Result<RecordDigest, std::string> parse_record_digest(std::string_view field62);
std::string encode_record_digest(const RecordDigest& digest);

// The fields of a 0100 that define the hold, as the ASCII text sent: the card's proof covers them all.
struct ClinicHoldFields {
    std::string_view terminal_id41;
    std::string_view stan11;
    std::string_view transmission_time7;
    std::string_view amount4;
    std::string_view batch60;
};
// What the card's INTERNAL AUTHENTICATE answers for a 0100 (ISO8583.md §4.4): the first 8 bytes of
// SHA-256("coconut-clinic-v2" ‖ DF0E ‖ 41 ‖ 11 ‖ 7 ‖ 4 ‖ 60 ‖ ASN). Terminal and host compute it alike;
// the card's cryptogram over it proves card presence for exactly this hold, once (the host's challenge
// is single-use), and changes with any field that would change the hold's id or amount.
std::array<std::uint8_t, 8> clinic_proof_input(const HostChallenge& challenge, const ClinicHoldFields& hold, const CardAsn& asn);

// The digest of an offline purchase's TAC-covered fields and its TAC: the first 8 bytes of
// SHA-256("coconut-record-v1" ‖ ASN ‖ amount BE4 ‖ type ‖ DF06 ‖ DF05 BE4 ‖ DF07 ‖ TAC). DF03, DF04 and
// DF0C (claims the TAC does not cover) are not in it.
RecordDigest purchase_digest(const PurseTransaction& transaction, std::uint32_t amount_fen);
// The same for a load confirmation (0220 3 = 210000): ASN ‖ amount ‖ type ‖ DF06 ‖ online ATC BE4 ‖ DF07 ‖ TAC.
RecordDigest load_confirmation_digest(const LoadConfirmationData& confirmation, std::uint32_t amount_fen);

}  // namespace coconut::iso8583
