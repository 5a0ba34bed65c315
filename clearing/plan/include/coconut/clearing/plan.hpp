// The account plan of the clearing (docs/DESIGN.md §8.4): ledgers, account and transfer codes, the
// fixed accounts, the ids derived for cards, participants and transfers, the Place a card transaction
// keeps in user_data_128, the participant (who is paid), and the clearing's Error. The bottom layer
// of clearing/ (clearing/README.md "Layers"): the ledger and the common base only, no Boost, so
// settlement and the tools read the plan without the daemon.
#pragma once

#include <coconut/core/bytes.hpp>
#include <coconut/core/identifiers.hpp>
#include <coconut/ledger/ledger.hpp>
#include <coconut/core/result.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace coconut::clearing {

using coconut::Asn;  // coconut/core/identifiers.hpp
using coconut::IssuerId;
using coconut::TerminalId;

// ---- errors -------------------------------------------------------------------------------------

enum class ErrorCode : std::uint8_t {
    bad_input,  // registry JSON or a command-line value: the message names the field
    storage,    // LMDB / ledger operating error
    locked,     // another process (a running daemon) holds the data directory
    conflict,   // the registry file contradicts what is stored (e.g. a changed opening balance)
};

struct Error {
    ErrorCode code = ErrorCode::bad_input;
    std::string message;
};

template <class T>
using Result = coconut::Result<T, Error>;
using Status = coconut::Status<Error>;

// ---- account plan (docs/DESIGN.md §8.4) -----------------------------------------------------------

namespace ledgers {
inline constexpr std::uint32_t purse = 1;    // the purse: money prepaid by cardholders
inline constexpr std::uint32_t medical = 2;  // medical insurance personal accounts
}  // namespace ledgers

// Account.code
namespace account_codes {
inline constexpr std::uint16_t card_purse_shadow = 1;    // per card, ledger 1: what the card should hold
inline constexpr std::uint16_t card_medical = 2;         // per card, ledger 2: debits_must_not_exceed_credits
inline constexpr std::uint16_t participant_payable = 3;  // per participant and ledger: owed to the merchant
inline constexpr std::uint16_t purse_float = 10;         // ledger 1: cardholders' money at the issuing bank
inline constexpr std::uint16_t medical_fund = 11;        // ledger 2: the social-insurance fund
inline constexpr std::uint16_t fee_income = 12;          // per ledger: the scheme's fees (posted by settlement)
inline constexpr std::uint16_t suspense = 13;            // per ledger: TAC failed; never paid out until resolved
inline constexpr std::uint16_t review_claims = 14;       // ledger 1: what terminals claimed without proof (debited by review records)
// Card lifecycle (clearing/README.md "Card lifecycle"):
inline constexpr std::uint16_t carried_holding = 15;     // per NEW card, ledger 1: a lost card's balance waiting to be collected
inline constexpr std::uint16_t lost_late_spending = 16;  // ledger 1: what a lost card paid offline, uploaded after its carry
// Per card, ledger 1, debits_must_not_exceed_credits: a refund owed to the cardholder, paid by the bank in
// the next settlement (refund_payout). Cash refunds never pass here: the counter's payable pays them.
inline constexpr std::uint16_t refund_payable = 17;
// Per card, ledger 1, debits_must_not_exceed_credits: a tourist card's deposit, held for the cardholder
// until the card is returned (never forfeited: clearing/README.md "Tourist cards").
inline constexpr std::uint16_t card_deposit = 18;
}  // namespace account_codes

// Transfer.code
namespace transfer_codes {
inline constexpr std::uint16_t offline_purchase = 1;  // purse shadow → participant payable (TAC valid)
// An upload whose TAC failed (a forgery, or a record damaged on the terminal): review claims → suspense,
// under an id of its own (review_transfer). Neither the card's shadow nor a payable is touched: an
// unproven record never moves a cardholder's money nor pays a merchant.
inline constexpr std::uint16_t tac_failed = 2;
inline constexpr std::uint16_t opening_balance = 3;  // float → purse shadow, fund → medical (registry load)
inline constexpr std::uint16_t online_load = 4;      // float → purse shadow: pending at 0200, posted by 0220, voided by 0400/0420/timeout
inline constexpr std::uint16_t clinic_medical =
    5;  // medical account → clinic payable (ledger 2): hold at 0100, posted (partially) by 0220, voided by 0400/expiry
inline constexpr std::uint16_t settlement_payout =
    7;  // settlement: participant payable → float (ledger 1) / fund (ledger 2), the net paid by the bank
inline constexpr std::uint16_t settlement_fee = 8;  // settlement: participant payable → fee income, the scheme's fee
// A second record with a valid TAC under a booked purchase's id (the PSAM spent a serial twice, e.g. a
// restored PSAM image): review claims → suspense for a person to resolve; never booked twice.
inline constexpr std::uint16_t serial_conflict = 9;
// A manual adjustment: proposed by one clerk, approved by another (clearing/README.md "Manual
// adjustments"); between participant payables, the ledger's float / fund and card medical accounts only.
inline constexpr std::uint16_t manual_adjustment = 10;
// Card lifecycle (clearing/README.md "Card lifecycle"), a lost card replaced by a new one:
inline constexpr std::uint16_t balance_carried = 11;   // lost card's purse shadow → new card's carried holding (after the wait)
inline constexpr std::uint16_t late_after_carry = 12;  // lost late spending → participant payable (a TAC-valid 0320 after the carry)
inline constexpr std::uint16_t medical_carried = 13;   // old medical account → new medical account (ledger 2)
inline constexpr std::uint16_t carried_load = 14;      // carried holding → purse shadow: an online load with processing code 280000
// Card return and refund, tourist cards (clearing/README.md "Card return, refund and tourist cards"). The
// card's balance itself leaves it only by a TAC-proven purchase (code 1) at the counter's terminal.
inline constexpr std::uint16_t card_refund = 15;         // counter payable → refund_payable: the returned balance, paid by bank
inline constexpr std::uint16_t refund_payout = 16;       // refund_payable → float: settlement pays the cardholder (pain.001)
inline constexpr std::uint16_t deposit_taken = 17;       // seller payable → card_deposit: the seller collected it in cash
inline constexpr std::uint16_t deposit_returned = 18;    // card_deposit → counter payable (cash) or → refund_payable (bank)
inline constexpr std::uint16_t return_fee = 19;          // card_deposit or counter payable → fee income: the return fee
inline constexpr std::uint16_t broken_card_refund = 20;  // an unreadable card's purse shadow → refund_payable, after the wait
// Same-day refund of a payment (ISO8583.md §4.10), funded by the payable of the participant that was paid:
inline constexpr std::uint16_t medical_refund = 21;   // clinic's medical payable → card medical account (0200 3 = 200030), single phase
inline constexpr std::uint16_t purchase_refund = 22;  // participant's purse payable → purse shadow: an online credit with 3 = 200000
}  // namespace transfer_codes

// Transfer user data (what the query API and settlement read back without other tables):
//   user_data_64  the participant id (field 32) of the terminal that originated it; for settlement transfers
//                 the participant paid; 0 for opening balances
//   user_data_32  the PSAM terminal transaction serial (card transactions); the STAN (account-based)
//   user_data_128 card transactions (make_place / parse_place): bytes 0–5 PSAM terminal id (BCD), 6 card
//                 transaction type (02 load, 06 purchase, 09 compound), 7–8 line (BE), 9–10 station (BE),
//                 11–15 card local time BCD YYMMDDhhmm; line/station 0 without a CAPP record (shop, clinic,
//                 load). Clinic holds: bytes 0–5 PSAM terminal id, 6 = 0, 7–10 zero,
//                 11–15 the terminal's time of the 0100 (its field 7, UTC) in Hainan time YYMMDDhhmm.
//                 Settlement transfers: the cycle id (business date YYYYMMDD as BE u32 in bytes 0–3).
//                 Card return / refund / deposit transfers (codes 15–20): card_user_data — bytes 0–3 the
//                 cycle id (refund payouts) or 0, bytes 4–13 the ASN, 14–15 zero.

// The user_data_128 of a card transaction, decoded.
struct Place {
    TerminalId terminal_id{};  // PSAM terminal id
    std::uint8_t type = 0;     // card transaction type; 0 for clinic holds
    std::uint16_t line = 0;
    std::uint16_t station = 0;
    std::array<std::uint8_t, 5> local_time_bcd{};  // YYMMDDhhmm, Hainan time
    friend bool operator==(const Place&, const Place&) = default;
};
ledger::Id make_place(const Place& place);
Place parse_place(const ledger::Id& user_data_128);

// Fixed accounts: small ids that no derived (SHA-256) id reaches in practice.
inline constexpr ledger::Id purse_float_account = ledger::make_id(1);
inline constexpr ledger::Id medical_fund_account = ledger::make_id(2);
inline constexpr ledger::Id purse_fee_income_account = ledger::make_id(3);
inline constexpr ledger::Id medical_fee_income_account = ledger::make_id(4);
inline constexpr ledger::Id purse_suspense_account = ledger::make_id(5);
inline constexpr ledger::Id medical_suspense_account = ledger::make_id(6);
inline constexpr ledger::Id purse_review_claims_account = ledger::make_id(7);
inline constexpr ledger::Id lost_late_spending_account = ledger::make_id(8);

ledger::Id purse_shadow_account(const Asn& asn);                                        // derive_id("purse" ‖ ASN)
ledger::Id medical_account(const Asn& asn);                                             // derive_id("medical" ‖ ASN)
ledger::Id payable_account(std::uint64_t participant_id, std::uint32_t ledger_number);  // derive_id("payable" ‖ id ‖ ledger)
// Offline purchase (docs: clearing/ISO8583.md §4.8): derive_id("purchase" ‖ ASN ‖ PSAM terminal id ‖
// terminal serial BE4) — only what the TAC proves: it is computed under the card's own key and covers the
// terminal id and serial, and the PSAM spends each serial once. A re-sent upload lands on it whatever the
// claims it carries (DF03 balance before, DF04 offline ATC, DF0C transit record) say.
ledger::Id offline_purchase_transfer(const Asn& asn, const TerminalId& psam_terminal_id, std::uint32_t terminal_serial);
// An upload recorded for review instead of booked (TAC invalid, or a serial conflict):
// derive_id("review" ‖ canonical id ‖ SHA-256 of fields 4 and 62 as uploaded), so a forgery
// never occupies the id the genuine upload needs, and the same forgery re-sent lands on the same record.
ledger::Id review_transfer(const ledger::Id& canonical_id, std::string_view amount4, std::string_view field62);
ledger::Id opening_balance_transfer(const Asn& asn, std::uint32_t ledger_number);
// The transfer an approved manual adjustment books: derive_id("adjustment" ‖ proposal number BE8).
ledger::Id adjustment_transfer(std::uint64_t proposal_number);
// Online load (ISO8583.md §4.1): derive_id(ASN ‖ online ATC BE2 ‖ 02) for attempt 0 exactly (docs/DESIGN.md §4.3);
// a later attempt with the same ATC (the first was reversed or expired) appends the attempt number.
ledger::Id online_load_transfer(const Asn& asn, std::uint16_t online_atc, std::uint8_t attempt = 0);
// Clinic hold: derive_id(field 41 (8 ASCII) ‖ batch number (6 ASCII digits) ‖ STAN (6 ASCII digits)) of the 0100.
ledger::Id clinic_hold_transfer(std::string_view terminal_id, std::uint32_t batch_number, std::uint32_t stan);
// The refund of a completed clinic hold's medical part (ISO8583.md §4.10): derive_id("medical-refund" ‖ hold id BE16),
// so a hold is refunded at most once whatever the refund's own STAN.
ledger::Id medical_refund_transfer(const ledger::Id& hold_id);
// The transfers that resolve a pending one: derive_id(pending id BE16 ‖ suffix).
enum class Resolution : std::uint8_t {
    post = 1,       // load confirmation, clinic completion
    void_hold = 2,  // reversal (0400 / 0420)
    late_load = 3,  // confirmation of a load that was voided or expired meanwhile: booked single-phase
};
ledger::Id resolving_transfer(const ledger::Id& pending_id, Resolution resolution);

// Card lifecycle ids (clearing/README.md "Card lifecycle"): derived from the lost card's identity only, so a
// retried clerk request or sweep lands on the same transfer.
ledger::Id carried_holding_account(const Asn& new_asn);  // derive_id("carried" ‖ new ASN)
ledger::Id carry_transfer(const Asn& lost_asn);          // derive_id("carry" ‖ lost ASN): transfer 11
ledger::Id medical_carry_transfer(const Asn& lost_asn);  // derive_id("medical-carry" ‖ lost ASN): transfer 13 at replacement
// What the old medical account still held when the purse balance was carried (holds pending at the
// replacement, completed for less or voided since): derive_id("medical-carry-rest" ‖ lost ASN).
ledger::Id medical_carry_rest_transfer(const Asn& lost_asn);
// A purchase of the lost card booked on its shadow while its carry was in flight (the shadow went below
// zero): transfer 12 lost late spending → lost shadow, derive_id("late-repair" ‖ lost ASN ‖ shadow debits posted BE8).
ledger::Id late_repair_transfer(const Asn& lost_asn, std::uint64_t shadow_debits_posted);
// A new card's carried holding account (code 15, debits_must_not_exceed_credits), for its replacement.
ledger::Account carried_holding_opening(const Asn& new_asn);
// Card return and refund, tourist cards (codes 15–20; clearing/README.md "Card return, refund and tourist
// cards"). Each card is returned, sold or refunded at most once, so the card and the code name the transfer:
// derive_id("card-money" ‖ ASN ‖ code BE2 ‖ part) — part tells apart two transfers of one code (the return
// fee's share from the deposit, 0, and from the balance, 1). A retried request lands on the same ids.
ledger::Id refund_payable_account(const Asn& asn);  // derive_id("refund" ‖ ASN)
ledger::Id card_deposit_account(const Asn& asn);    // derive_id("deposit" ‖ ASN)
ledger::Id card_money_transfer(const Asn& asn, std::uint16_t code, std::uint8_t part = 0);
// A refund paid by settlement cycle `cycle`: derive_id("settlement-refund" ‖ cycle BE4 ‖ ASN).
ledger::Id refund_payout_transfer(std::uint32_t cycle, const Asn& asn);
// user_data_128 of codes 15–20: bytes 0–3 `cycle` (refund payouts; 0 otherwise), 4–13 the ASN.
ledger::Id card_user_data(const Asn& asn, std::uint32_t cycle = 0);
Asn card_of_user_data(const ledger::Id& user_data_128);
// A card's refund_payable and card_deposit accounts (ledger 1, history, debits_must_not_exceed_credits):
// created with the card's first return, sale or refund (`exists` afterwards).
void append_card_money_accounts(std::vector<ledger::Event>& events, const Asn& asn);

// The fixed accounts of the plan (float, fund, fee income, suspense), for start-up and `admin load`.
std::vector<ledger::Account> fixed_accounts();

// What opens a participant or a card in the ledger: a participant's payable account on each ledger; a
// card's purse shadow and medical accounts, then its nonzero opening balances (from the float and the fund).
void append_participant_opening(std::vector<ledger::Event>& events, std::uint64_t participant_id);
void append_card_opening(std::vector<ledger::Event>& events, const Asn& asn, std::uint32_t purse_opening_fen,
                         std::uint32_t medical_opening_fen);

// ---- participants ---------------------------------------------------------------------------------------

// A participant of the scheme: a bus operator, shop, clinic or service counter the clearing pays
// (settlement/README.md). A `counter` (service desk, airport / port / hotel seller) owns the terminals
// whose purchases take a returned card's balance, and sells tourist cards.
struct Participant {
    std::uint64_t id = 0;  // field 32, acquiring institution id (≤ 11 digits)
    std::string name;
    std::string kind;               // "bus", "shop", "clinic", "counter"
    std::string bank_account;       // where settlement pays the payable
    std::uint32_t fee_rate_bp = 0;  // basis points of gross, ≤ fee_rate_bp_max
};

inline constexpr std::uint32_t fee_rate_bp_max = 10'000;  // 100 %
inline constexpr std::size_t name_chars_max = 128;        // a participant's name, a clerk's reason

}  // namespace coconut::clearing
