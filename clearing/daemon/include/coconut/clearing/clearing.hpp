// The clearing daemon's library (coconut::clearing): the account plan, the card data of field 62, the
// registries (cards, participants, terminals, risk flags, online load attempts, clinic holds, the
// versioned hotlist) kept in the ledger's LMDB environment, the HSM services (TAC verification, load
// MAC2, INTERNAL AUTHENTICATE; in process or over the network), the authorization engine that turns
// ISO 8583 requests into ledger bookings (offline uploads, online loads, clinic holds, reversals,
// hotlist download, reconciliation), and the TCP server.
// clearing/README.md describes the daemon (ports, options, flows); clearing/ISO8583.md the messages.
//
// Threads (docs/DESIGN.md §8.1): one Asio I/O thread runs the server, the engine and the HSM client; ONE
// ledger writer thread (ledger::Writer) commits bookings in groups. A booking's answer is produced by
// the writer's callback, i.e. only after its commit was synced: nothing is acknowledged before it is
// durable. Registry changes that belong to a booking (last seen ATC, shadow balance, risk flags, the
// terminal's last STAN) are written by a BatchHook in the same write transaction.
//
// Errors: bad input from a terminal is answered with a response code (iso8583::ResponseCode); bad
// input from an operator (registry JSON, a data directory) is an Error with a specific message.
#pragma once

#include <coconut/core/identifiers.hpp>
#include <coconut/core/bytes.hpp>
#include <coconut/crypto/card_crypto.hpp>
#include <coconut/hsm/client.hpp>
#include <coconut/hsm/hsm.hpp>
#include <coconut/hsm/protocol.hpp>
#include <coconut/iso8583/card_data.hpp>
#include <coconut/iso8583/iso8583.hpp>
#include <coconut/iso8583/profile.hpp>
#include <coconut/ledger/ledger.hpp>
#include <coconut/core/result.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/io_context.hpp>

namespace boost::asio::ssl {
class context;  // coconut/tls/tls.hpp makes one (ServerOptions::tls)
}

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <span>
#include <string_view>
#include <thread>
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
}  // namespace account_codes

// Transfer.code
namespace transfer_codes {
inline constexpr std::uint16_t offline_purchase = 1;  // purse shadow → participant payable (TAC valid)
// An upload whose TAC failed (a forgery, or a record damaged on the terminal): review claims → suspense,
// under an id of its own (review_transfer). Neither the card's shadow nor a payable is touched: an
// unproven record never moves a cardholder's money nor pays a merchant.
inline constexpr std::uint16_t tac_failed = 2;
inline constexpr std::uint16_t opening_balance = 3;   // float → purse shadow, fund → medical (registry load)
inline constexpr std::uint16_t online_load = 4;       // float → purse shadow: pending at 0200, posted by 0220, voided by 0400/0420/timeout
inline constexpr std::uint16_t clinic_medical = 5;    // medical account → clinic payable (ledger 2): hold at 0100, posted (partially) by 0220, voided by 0400/expiry
inline constexpr std::uint16_t settlement_payout = 7; // settlement: participant payable → float (ledger 1) / fund (ledger 2), the net paid by the bank
inline constexpr std::uint16_t settlement_fee = 8;    // settlement: participant payable → fee income, the scheme's fee
// A second record with a valid TAC under a booked purchase's id (the PSAM spent a serial twice, e.g. a
// restored PSAM image): review claims → suspense for a person to resolve; never booked twice.
inline constexpr std::uint16_t serial_conflict = 9;
// A manual adjustment: proposed by one clerk, approved by another (clearing/README.md "Manual
// adjustments"); between participant payables, the ledger's float / fund and card medical accounts only.
inline constexpr std::uint16_t manual_adjustment = 10;
}  // namespace transfer_codes

// Transfer user data (what the query API and settlement read back without other tables):
//   user_data_64  the participant id (field 32) of the terminal that originated it; for settlement transfers
//                 the participant paid; 0 for opening balances
//   user_data_32  the PSAM terminal transaction serial (card transactions); the STAN (account-based)
//   user_data_128 card transactions (make_place / parse_place): bytes 0–5 PSAM terminal id (BCD), 6 card
//                 transaction type (02 load, 06 purchase, 09 compound), 7–8 line (BE), 9–10 station (BE),
//                 11–15 card local time BCD YYMMDDhhmm; line/station 0 without a CAPP record (shop, clinic,
//                 load). Clinic holds: bytes 0–5 PSAM terminal id, 6 = 0, rest 0.
//                 Settlement transfers: the cycle id (business date YYYYMMDD as BE u32 in bytes 0–3).

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

ledger::Id purse_shadow_account(const Asn& asn);     // derive_id("purse" ‖ ASN)
ledger::Id medical_account(const Asn& asn);          // derive_id("medical" ‖ ASN)
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
// The transfers that resolve a pending one: derive_id(pending id BE16 ‖ suffix).
enum class Resolution : std::uint8_t {
    post = 1,       // load confirmation, clinic completion
    void_hold = 2,  // reversal (0400 / 0420)
    late_load = 3,  // confirmation of a load that was voided or expired meanwhile: booked single-phase
};
ledger::Id resolving_transfer(const ledger::Id& pending_id, Resolution resolution);

// The fixed accounts of the plan (float, fund, fee income, suspense), for start-up and `admin load`.
std::vector<ledger::Account> fixed_accounts();

// ---- card data in field 62 (ISO8583.md §3.1) ---------------------------------------------------------

// One offline purse transaction as uploaded in 0320 (tags DF01–DF08): coconut/iso8583/card_data.hpp.
using iso8583::encode_purse_transaction;
using iso8583::parse_purse_transaction;
using iso8583::PurseTransaction;

// ---- registries -----------------------------------------------------------------------------------------

enum class CardStatus : std::uint8_t { active = 1, lost = 2, blocked = 3 };
std::string_view to_string(CardStatus status);
std::optional<CardStatus> parse_card_status(std::string_view text);

// A terminal the clearing serves (active) or refuses on every request (39 = 58): suspended (by a clerk,
// or automatically past the forged-TAC limit) until a clerk reactivates it; retired for good.
enum class TerminalStatus : std::uint8_t { active = 1, suspended = 2, retired = 3 };
std::string_view to_string(TerminalStatus status);
std::optional<TerminalStatus> parse_terminal_status(std::string_view text);

struct CardRecord {
    Asn asn{};
    IssuerId issuer_id{};
    CardStatus status = CardStatus::active;
    std::uint8_t tac_key_version = hsm::newest_version;  // version of the TAC master (0: newest active)
    std::uint32_t opening_balance_fen = 0;                // purse balance at issue (booked from the float)
    std::uint32_t medical_opening_fen = 0;                // medical account at issue (booked from the fund)
    // Mirror of the purse shadow account, kept in the same transaction as every booking, so the
    // online mismatch check needs no ledger read (`check` verifies the mirror against the ledger).
    // Posted money only: a pending load (0210 sent, 0220 not yet) is not in it (ISO8583.md §4.3).
    std::int64_t shadow_balance_fen = 0;
    bool offline_atc_seen = false;
    std::uint16_t offline_atc_max = 0;  // highest offline ATC booked
    // The contiguous prefix of booked offline ATCs: every ATC below offline_atc_next is booked;
    // bit i of offline_atc_ahead = ATC offline_atc_next + 1 + i is booked (a window of 64 above it).
    std::uint16_t offline_atc_next = 0;
    std::uint64_t offline_atc_ahead = 0;
    // Loads approved (0210 00) and not posted: the card may hold them before the 0220 arrives (or
    // forever, when the confirmation is lost and the load reversed / expired). Bounds shadow_mismatch.
    std::uint64_t unconfirmed_loads_fen = 0;
    // Card date-time (YYYYMMDD ‖ hhmmss, BCD, as a number) of the latest posted load's CREDIT: a purchase
    // older than it may predate that load on the card.
    std::uint64_t latest_load_when = 0;
    std::uint32_t offline_purchases = 0;
    std::uint32_t risk_flags = 0;  // count of risk flags raised for this card
};

// What opens a participant or a card in the ledger (docs/DESIGN.md §8.4), the same for `admin load` and the
// clerk API: a participant's payable account on each ledger; a card's purse shadow and medical
// accounts, then its nonzero opening balances (from the float and the fund).
void append_participant_opening(std::vector<ledger::Event>& events, std::uint64_t participant_id);
void append_card_opening(std::vector<ledger::Event>& events, const CardRecord& card);

struct Participant {
    std::uint64_t id = 0;  // field 32, acquiring institution id (≤ 11 digits)
    std::string name;
    std::string kind;          // "bus", "shop", "clinic"
    std::string bank_account;  // where settlement pays the payable
    std::uint32_t fee_rate_bp = 0;  // basis points of gross, ≤ fee_rate_bp_max
};

struct TerminalRecord {
    std::string terminal_id;  // field 41, 8 characters
    TerminalId psam_terminal_id{};
    std::uint64_t participant_id = 0;
    std::string merchant_id;  // field 42, ≤ 15 characters
    std::uint32_t last_stan = 0;
    std::uint32_t batch_number = 0;  // from field 60 (6 digits) of the latest booking
    std::uint64_t uploads = 0;
    // Totals of batch_number (0500 reconciliation, ISO8583.md §4.7): new bookings only, a repeat adds nothing.
    std::uint32_t batch_debits_count = 0;  // 0320 purchases, clinic completions
    std::uint64_t batch_debits_fen = 0;
    std::uint32_t batch_credits_count = 0;  // loads confirmed
    std::uint64_t batch_credits_fen = 0;
    std::uint32_t batch_credit_reversals_count = 0;  // loads voided by 0400 / 0420
    std::uint64_t batch_credit_reversals_fen = 0;
    std::uint32_t batch_debit_reversals_count = 0;  // clinic holds voided by 0400 / 0420
    std::uint64_t batch_debit_reversals_fen = 0;
    TerminalStatus status = TerminalStatus::active;
    // Uploads with a TAC that failed, on forged_day (days since 1970-01-01, UTC): past
    // EngineOptions::forged_tacs_per_day the terminal is suspended.
    std::uint32_t forged_day = 0;
    std::uint32_t forged_count = 0;
};

// Which 0500 total a new booking counts in.
enum class BatchTotal : std::uint8_t { debit, credit, credit_reversal, debit_reversal };
// Adds one booking to the terminal's totals; a booking of another batch number starts a new batch.
void count_in_batch(TerminalRecord& terminal, std::optional<std::uint32_t> batch_number, BatchTotal total,
                    std::uint64_t amount_fen);

// An online load attempt (table "loads", keyed by ASN ‖ online ATC): what a 0220 or 0400 refers to.
struct LoadAttempt {
    std::uint8_t attempt = 0;          // online_load_transfer(asn, atc, attempt)
    ledger::Id request_digest;         // of the 0200's 2, 4, 41, 62: a repeat has the same
    std::uint64_t amount_fen = 0;
    std::string terminal_id;           // field 41 of the 0200: only it may reverse the load
};

// A clinic hold (table "holds", keyed by the hold's transfer id).
struct HoldRecord {
    ledger::Id request_digest;          // of the 0100's 2, 4, 42, 62
    std::uint64_t requested_fen = 0;    // field 4 of the 0100 (the hold may be less: partial approval)
    Asn asn{};
};

// What an offline purchase's booking keeps beyond its ledger transfer (table "purchases", keyed by the
// transfer id): the TAC and the fields it covers, so a re-upload is answered from the stored record only
// when its TAC and covered fields are the same (ISO8583.md §4.8), and the claims as first booked.
struct PurchaseProof {
    crypto::Mac4 tac{};
    crypto::CardDateTime when;  // DF07
    std::uint8_t type = 0;      // DF02
    std::uint32_t amount_fen = 0;
    std::uint16_t offline_atc = 0;         // DF04 as first booked (a claim)
    std::uint32_t balance_before_fen = 0;  // DF03 as first booked (a claim)
    std::array<std::uint8_t, 8> claims_digest{};  // of DF03, DF04, DF0C: a repeat with other claims is flagged
    friend bool operator==(const PurchaseProof&, const PurchaseProof&) = default;
};
PurchaseProof purchase_proof(const iso8583::PurseTransaction& transaction, std::uint32_t amount_fen);
// The TAC and every field it covers are equal (the claims may differ).
bool same_proven_record(const PurchaseProof& a, const PurchaseProof& b);

// The host key that tags clinic challenges (ISO8583.md §4.4): made once at random, kept in the registry;
// wiped from memory on destruction.
struct ChallengeKey {
    std::array<std::uint8_t, 32> bytes{};
    ChallengeKey() = default;
    ChallengeKey(const ChallengeKey&) = default;
    ChallengeKey& operator=(const ChallengeKey&) = default;
    ~ChallengeKey();
};

// The hotlist log's chunks as field 63 carries them (ISO8583.md §4.6): the profile's types, shared with the SDK.
using iso8583::encode_hotlist_chunk;
using iso8583::hotlist_entries_per_chunk;
using iso8583::hotlist_version_max;
using iso8583::HotlistChunk;
using iso8583::HotlistEntry;
using iso8583::parse_hotlist_chunk;

enum class RiskKind : std::uint8_t {
    tac_invalid = 1,           // booked to suspense
    duplicate_different = 2,   // same transfer id, different content (answered 94)
    atc_gap = 3,               // offline ATC jumped past the highest seen + 1
    shadow_mismatch = 4,       // in-order upload whose balance before ≠ the shadow balance
    hotlisted_card_used = 5,   // an offline transaction of a card not active in the registry
    shadow_negative = 6,       // the shadow went below zero (the card spent money we never saw loaded)
    mac1_invalid = 7,          // 0200 whose load MAC1 the HSM refused (nothing booked)
    load_tac_invalid = 8,      // 0220 load confirmation whose TAC failed (posted anyway if pending: MAC2 was ours)
    late_load_confirmation = 9,  // 0220 for a load already reversed / expired: booked late
    internal_auth_invalid = 10,  // 0100 whose INTERNAL AUTHENTICATE cryptogram failed (nothing booked)
    claims_differ = 11,        // a booked purchase re-sent with other claims (DF03, DF04, DF0C): answered as booked
    serial_conflict = 12,      // a second valid TAC under a booked purchase's id: recorded for review, answered 94
    terminal_suspended = 13,   // a terminal suspended past the forged-TAC limit (detail names it)
    atc_implausible = 14,      // a claimed offline ATC far above the card's booked ones: flagged, not used
    wrong_terminal = 15,       // a 0220 load confirmation from another terminal than the 0200's (nothing posted)
    challenge_refused = 16,    // a 0100 whose host challenge was unknown, expired, used or another's (nothing booked)
};
inline constexpr std::uint8_t risk_kind_max = 16;
std::string_view to_string(RiskKind kind);

// One stored flag per (kind, ASN, atc, type): raising it again changes nothing. The writer raises at most
// risk_flags_per_message_max per message, so no message can make unbounded work.
inline constexpr std::size_t risk_flags_per_message_max = 4;
// A claimed offline ATC more than this above the card's contiguous booked prefix is not believed: one
// atc_implausible flag, and the prefix is left as it was (64 is the window of ATCs tracked above it).
inline constexpr std::uint16_t atc_ahead_plausible_max = 1024;

struct RiskFlag {
    RiskKind kind = RiskKind::tac_invalid;
    Asn asn{};
    std::uint16_t atc = 0;
    std::uint8_t type = 0;
    std::uint64_t timestamp_ns = 0;  // wall clock when raised
    std::string detail;              // "balance before 4800, shadow 5000"
};

// Bounds of the registry and of its JSON file.
inline constexpr std::uint32_t fee_rate_bp_max = 10'000;         // 100 %
inline constexpr std::size_t registry_file_bytes_max = 64u << 20;  // a province's cards fit with room to spare
inline constexpr std::size_t name_chars_max = 128;
// Largest opening balance accepted: the purse's own limit on the card is far below (docs/CARD-SPEC.md §2).
inline constexpr std::uint32_t opening_balance_fen_max = 100'000'000;

// The registry tables ("cards", "participants", "terminals", "risk") in the ledger's environment.
// Reads open their own read transaction; the *_in functions work inside a caller's transaction
// (the writer's BatchHook).
class Registry {
public:
    // Opens (creates) the tables. Start-up only (each opens a short write transaction).
    static Result<std::unique_ptr<Registry>> open(lmdb::Env& env);
    ~Registry();
    Registry(const Registry&) = delete;
    Registry& operator=(const Registry&) = delete;

    Result<std::optional<CardRecord>> card(const Asn& asn) const;
    Result<std::optional<Participant>> participant(std::uint64_t id) const;
    Result<std::optional<TerminalRecord>> terminal(std::string_view terminal_id) const;
    Result<std::vector<CardRecord>> cards() const;
    Result<std::vector<Participant>> participants() const;
    Result<std::vector<TerminalRecord>> terminals() const;
    Result<std::vector<RiskFlag>> risk_flags() const;

    lmdb::Result<std::optional<CardRecord>> card_in(const lmdb::Txn& txn, const Asn& asn) const;
    lmdb::Result<std::optional<Participant>> participant_in(const lmdb::Txn& txn, std::uint64_t id) const;
    lmdb::Result<std::optional<TerminalRecord>> terminal_in(const lmdb::Txn& txn, std::string_view terminal_id) const;
    lmdb::Status put_card(lmdb::Txn& txn, const CardRecord& card) const;
    lmdb::Status put_participant(lmdb::Txn& txn, const Participant& participant) const;
    lmdb::Status put_terminal(lmdb::Txn& txn, const TerminalRecord& terminal) const;
    // Keyed by (kind, ASN, ATC, type): raising the same flag twice (a re-upload) keeps one.
    // Returns true when the flag is new.
    lmdb::Result<bool> put_risk(lmdb::Txn& txn, const RiskFlag& flag) const;
    // One page of flags in key order, after `cursor` (the previous page's next_cursor; empty: from the
    // start), at most `limit` (1 … risk_page_limit_max); only the card's flags when `asn` is set.
    // Error bad_input: a cursor that is not one this function returned.
    struct RiskPage {
        std::vector<RiskFlag> flags;
        std::string next_cursor;  // empty: this was the last page
    };
    static constexpr std::size_t risk_page_limit_max = 500;
    Result<RiskPage> risk_page(std::string_view cursor, std::size_t limit, const std::optional<Asn>& asn = {}) const;

    // Offline purchases booked (ISO8583.md §4.8), written by the booking's hook. Keyed by what the id is
    // made of (ASN ‖ PSAM terminal id ‖ serial), not by the id's hash: one card's purchases share leaf
    // pages, so a group of bookings dirties about as many pages here as it does card records.
    struct PurchaseKey {
        Asn asn{};
        TerminalId psam_terminal_id{};
        std::uint32_t terminal_serial = 0;
    };
    lmdb::Result<std::optional<PurchaseProof>> purchase_proof_in(const lmdb::Txn& txn, const PurchaseKey& key) const;
    lmdb::Status put_purchase_proof(lmdb::Txn& txn, const PurchaseKey& key, const PurchaseProof& proof) const;

    // Clinic challenges (ISO8583.md §4.4): the tagging key, and the challenges holds have used (table
    // "challenges", keyed by the challenge, whose first 4 bytes are its issue time: oldest first).
    const ChallengeKey& challenge_key() const;
    lmdb::Result<bool> challenge_used_in(const lmdb::Txn& txn, const iso8583::HostChallenge& challenge) const;
    // Records `challenge` as used and deletes at most challenges_pruned_per_use entries issued before
    // `forget_before_s` (they are refused as expired anyway): the table stays bounded by the TTL.
    static constexpr std::size_t challenges_pruned_per_use = 4;
    lmdb::Status put_challenge_used(lmdb::Txn& txn, const iso8583::HostChallenge& challenge, std::uint32_t forget_before_s) const;

    // For the ledger writer's WriterOptions::group_hooks (one writer per registry): inside a group
    // commit, the card and terminal records that card_in / terminal_in / put_card / put_terminal read
    // or write through the group's transaction on the writer thread are kept decoded, and each one
    // written is put once before the commit, instead of once per booking (a terminal's batch upload
    // rewrote its record per transaction). Other threads and transactions read and write through.
    ledger::GroupHooks group_hooks() const;

    // Online loads and clinic holds (written by the booking's hook, read by confirmations and reversals).
    Result<std::optional<LoadAttempt>> load_attempt(const Asn& asn, std::uint16_t online_atc) const;
    lmdb::Status put_load_attempt(lmdb::Txn& txn, const Asn& asn, std::uint16_t online_atc, const LoadAttempt& attempt) const;
    Result<std::optional<HoldRecord>> hold(const ledger::Id& hold_id) const;
    lmdb::Status put_hold(lmdb::Txn& txn, const ledger::Id& hold_id, const HoldRecord& hold) const;
    // Reversals answered 00 and counted in the 0500 totals (table `reversals`: key → field 4), so a
    // repeat (0421, new STAN) is not counted twice. Returns true when the key is new.
    lmdb::Result<bool> put_reversal(lmdb::Txn& txn, const ledger::Id& key, std::uint64_t amount_fen) const;
    // Every record, for `check`.
    struct StoredLoadAttempt {
        Asn asn{};
        std::uint16_t online_atc = 0;
        LoadAttempt attempt;
    };
    Result<std::vector<StoredLoadAttempt>> load_attempts() const;
    Result<std::vector<std::pair<ledger::Id, HoldRecord>>> holds() const;

    // The versioned hotlist (ISO8583.md §4.6): one log entry per version, version 0 = empty.
    Result<std::uint64_t> hotlist_version() const;
    // Changes from_version+1+47·chunk … ; from a version above the current one: the whole log.
    Result<HotlistChunk> hotlist_chunk(std::uint64_t from_version, std::uint32_t chunk_index) const;
    // Appends one entry (version = current + 1) when `before` and `after` differ in hotlist membership
    // or are two different refusal statuses; returns the new version, or nothing when nothing changed.
    lmdb::Result<std::optional<std::uint64_t>> record_status_change(lmdb::Txn& txn, const Asn& asn, CardStatus before,
                                                                    CardStatus after) const;

    struct Tables;

private:
    Registry(lmdb::Env& env, std::unique_ptr<Tables> tables, ChallengeKey challenge_key);
    struct GroupCache;
    GroupCache* group_cache_for(const lmdb::Txn& txn) const;  // the writer's, when `txn` is its group's
    lmdb::Status write_card(lmdb::Txn& txn, const CardRecord& card) const;
    lmdb::Status write_terminal(lmdb::Txn& txn, const TerminalRecord& terminal) const;
    lmdb::Env& env_;
    std::unique_ptr<Tables> tables_;
    ChallengeKey challenge_key_;
    std::unique_ptr<GroupCache> group_;  // used by the writer thread only
};

// Encoded forms, exposed for the pair assertions in tests.
Bytes encode_card(const CardRecord& card);
std::optional<CardRecord> decode_card(ByteView bytes);
Bytes encode_terminal(const TerminalRecord& terminal);
std::optional<TerminalRecord> decode_terminal(ByteView bytes);

// Loads a registry JSON file (format in clearing/README.md) into the registry and the ledger:
// participants, terminals and cards are upserted (a card's runtime fields are kept); accounts and
// opening balances are created idempotently. The whole file is validated before anything is
// written; the error names the entry and the field. Call only while no daemon serves the directory.
struct LoadReport {
    std::size_t participants = 0;
    std::size_t terminals = 0;
    std::size_t cards = 0;
    std::size_t accounts_created = 0;
    std::size_t transfers_created = 0;
};
Result<LoadReport> load_registry(ledger::Ledger& ledger, Registry& registry, std::string_view json_text);
// Sets a card's status (the hotlist): lost / blocked cards are refused online. A change records a
// hotlist entry (a new version, ISO8583.md §4.6) in the same commit; setting the same status is a no-op.
Status set_card_status(ledger::Ledger& ledger, Registry& registry, const Asn& asn, CardStatus status);
// Sets a terminal's status (refused on every request unless active). Error bad_input: unknown terminal.
Status set_terminal_status(ledger::Ledger& ledger, Registry& registry, std::string_view terminal_id, TerminalStatus status);

// ---- check ----------------------------------------------------------------------------------------------

// Every invariant: the ledger's own (Ledger::check) plus the daemon's — each card's accounts exist on
// the right ledgers, the shadow mirror equals the purse shadow account, nothing was ever debited from
// suspense, every payable belongs to a registered participant, every load attempt and hold record
// names its pending transfer (right code, accounts, amount), and the hotlist log replayed from
// version 0 gives exactly the cards whose status is not active.
struct CheckReport {
    ledger::CheckReport ledger;
    std::vector<std::string> problems;  // the daemon's own
    std::size_t cards = 0;
    std::size_t risk_flags = 0;
    std::size_t load_attempts = 0;
    std::size_t holds = 0;
    std::uint64_t hotlist_version = 0;
    bool ok() const { return ledger.ok() && problems.empty(); }
};
Result<CheckReport> check(const ledger::Ledger& ledger, const Registry& registry);

// ---- TAC verification ------------------------------------------------------------------------------------

// Where purchase TACs are verified. The handler is called exactly once, on any thread.
class TacVerifier {
public:
    using Handler = std::function<void(hsm::Outcome<hsm::Verdict>)>;
    virtual ~TacVerifier() = default;
    virtual void verify(const hsm::PurchaseTac& transaction, Handler handler) = 0;
};

// The HSM's online card services (ISO8583.md §4.2–§4.4): load MAC1 → MAC2, load TAC, INTERNAL
// AUTHENTICATE. Requests name their keys; each handler is called exactly once, on any thread.
class CardServices {
public:
    using LoadHandler = std::function<void(hsm::Outcome<hsm::LoadAnswer>)>;
    using VerdictHandler = std::function<void(hsm::Outcome<hsm::Verdict>)>;
    virtual ~CardServices() = default;
    virtual void load_mac2(const hsm::LoadRequest& request, LoadHandler handler) = 0;
    virtual void verify_load_tac(const hsm::LoadTac& load, VerdictHandler handler) = 0;
    virtual void verify_internal_auth(const hsm::InternalAuth& auth, VerdictHandler handler) = 0;
};

// In process (tests, tools): the HSM's services called directly, one item per call.
class LocalHsm final : public TacVerifier, public CardServices {
public:
    LocalHsm(std::shared_ptr<const hsm::Hsm> hsm, std::string tac_master_label);
    void verify(const hsm::PurchaseTac& transaction, Handler handler) override;
    void load_mac2(const hsm::LoadRequest& request, LoadHandler handler) override;
    void verify_load_tac(const hsm::LoadTac& load, VerdictHandler handler) override;
    void verify_internal_auth(const hsm::InternalAuth& auth, VerdictHandler handler) override;

private:
    std::shared_ptr<const hsm::Hsm> hsm_;
    std::string label_;
};
using LocalTacVerifier = LocalHsm;  // its name before the online flows

// The HSM link's settings (coconut-clearingd serve --hsm-timeout-ms, --hsm-keepalive-s,
// --hsm-breaker-cooldown-ms, --hsm-connections; clearing/README.md "The HSM link").
struct RemoteHsmOptions {
    // No hello or no answer within this: the HSM hangs — the requests in flight fail (91) and the
    // circuit breaker opens. A full TAC batch takes ~5 ms; 3 s stays well inside a terminal's 10 s
    // response timeout, so the terminal hears 91 rather than nothing.
    std::chrono::milliseconds timeout{3'000};
    // A connection quiet this long gets a keep-alive; below the HSM's 60 s idle timeout. Zero: none.
    std::chrono::milliseconds keepalive_interval{20'000};
    // How long requests fail at once (91) after a timeout before one probe is sent.
    std::chrono::milliseconds breaker_cooldown{2'000};
    // Connections to the HSM at once: TAC batches verified concurrently (the HSM serves one request
    // per connection at a time).
    std::size_t connections_max = 4;
};

// coconut-hsmd over the network: an hsm::Link (client.hpp — keep-alive, one retry on a fresh
// connection when the HSM closed or broke one, circuit breaker after a timeout, up to connections_max
// connections) with purchase TACs through hsm::TacBatcher (full batches, bounded delay, sent without
// waiting for the previous ones) and the online card services one request each. Every failure (a
// timeout, the breaker open, the HSM unreachable) reaches the handler, and the engine answers 91.
class RemoteHsm final : public TacVerifier, public CardServices {
public:
    RemoteHsm(boost::asio::any_io_executor executor, hsm::wire::Endpoint endpoint,
              hsm::wire::ClientCredentials credentials, std::string tac_master_label, RemoteHsmOptions options = {});
    ~RemoteHsm() override;
    void verify(const hsm::PurchaseTac& transaction, Handler handler) override;
    void load_mac2(const hsm::LoadRequest& request, LoadHandler handler) override;
    void verify_load_tac(const hsm::LoadTac& load, VerdictHandler handler) override;
    void verify_internal_auth(const hsm::InternalAuth& auth, VerdictHandler handler) override;
    // Closes the link (shutdown).
    void close();
    // The link's breaker state and counters (for /metrics).
    const hsm::LinkStats& link_stats() const;

    struct State;

private:
    std::shared_ptr<State> state_;
};
using RemoteTacVerifier = RemoteHsm;  // its name before the online flows

// ---- authorization engine -------------------------------------------------------------------------------

// Per-connection state the engine keeps (sign-on).
struct SessionState {
    std::set<std::string> signed_on;  // field 41 of terminals signed on over this connection
    // The terminal id of the connection's client certificate (TLS, set by the server before the first
    // request). When set, a request whose field 41 differs is answered 63 and nothing else happens.
    std::optional<std::string> authenticated_terminal_id;
};

struct EngineOptions {
    // Largest amount of one offline purchase: the card's own balance limit (docs/CARD-SPEC.md §2) is below.
    std::uint64_t purchase_amount_fen_max = 1'000'000;
    // Answer 03 to a 0320 from a terminal that has not signed on over this connection.
    bool require_sign_on = true;
    // Largest online load (0200): the purse maximum on the card (docs/CARD-SPEC.md §2: 100,000 fen) is the same;
    // above it 61.
    std::uint64_t load_amount_fen_max = 100'000;
    // Largest clinic authorization (0100); above it 61.
    std::uint64_t clinic_amount_fen_max = 10'000'000;
    // An approved load (0210 sent) waits this long for its 0220 confirmation or a reversal before the
    // ledger releases it. CREDIT FOR LOAD follows MAC2 within seconds; 5 minutes covers a terminal
    // that loses its link and retries its advice; a confirmation after that is still booked (late).
    std::uint32_t load_timeout_s = 300;
    // A clinic hold waits this long for its completion: the patient stands at the counter while the
    // clinic dispenses; 15 minutes, after which the medical money is free again (completion → 54).
    std::uint32_t hold_timeout_s = 900;
    // Key labels at the HSM (versions: DF0D for loads, the card registry's for TACs, newest for IAK).
    std::string load_key_label = std::string(hsm::default_load_label);
    std::string tac_key_label = std::string(hsm::default_tac_label);
    // The 0100's card-presence proof: only the PIN-protected social-security application's key.
    std::string internal_auth_key_label = std::string(hsm::default_ssse_auth_label);
    // Uploads with a failed TAC one terminal may send per day (UTC) before it is suspended: a genuine
    // terminal sends none (a damaged record now and then); a forger trying TACs is stopped early.
    std::uint32_t forged_tacs_per_day = 20;
    // A clinic challenge (0800 70 = 201) is valid this long: the card is at the counter (PIN entry
    // included), so a minute; a proof over an older one is refused.
    std::uint32_t challenge_ttl_s = 60;
    // Where an upload's answer is built after its commit (the terminals' I/O thread): the ledger
    // writer only hands the result over, so its thread spends itself on commits. Unset: on the
    // writer's thread.
    std::optional<boost::asio::any_io_executor> completion_executor;
};

struct EngineStats {
    std::atomic<std::uint64_t> requests{0};
    std::atomic<std::uint64_t> booked{0};        // new transfers committed
    std::atomic<std::uint64_t> exists{0};        // re-uploads answered from the ledger
    std::atomic<std::uint64_t> suspense{0};      // TAC invalid
    std::atomic<std::uint64_t> duplicates{0};    // 94
    std::atomic<std::uint64_t> refused{0};       // any other non-00 answer
    std::atomic<std::uint64_t> in_flight{0};     // requests handled but not yet answered
    std::atomic<std::uint64_t> loads_approved{0};   // 0210 00 with a new pending load
    std::atomic<std::uint64_t> loads_confirmed{0};  // 0220 posted (or booked late)
    std::atomic<std::uint64_t> holds_approved{0};   // 0110 00 / 10 with a new hold
    std::atomic<std::uint64_t> completions{0};      // 0220 posted a hold
    std::atomic<std::uint64_t> reversals{0};        // 0400 / 0420 that voided something
    std::atomic<std::uint64_t> loads_expired{0};    // released by the ledger's timeout (scan_expiries)
    std::atomic<std::uint64_t> holds_expired{0};
};

class Engine {
public:
    // Called exactly once per request, on the I/O thread, the writer thread or the HSM's thread.
    using Respond = std::function<void(iso8583::Message)>;

    // Without card services (offline uploads only): the online messages are answered 91.
    Engine(ledger::Ledger& ledger, ledger::Writer& writer, Registry& registry, TacVerifier& verifier,
           EngineOptions options = {});
    Engine(ledger::Ledger& ledger, ledger::Writer& writer, Registry& registry, TacVerifier& verifier,
           CardServices& card_services, EngineOptions options = {});

    // Handles one parsed request. `session` is only touched synchronously (on the calling thread).
    void handle(iso8583::Message request, SessionState& session, Respond respond);

    // Reads the ledger's journal since the last call (from the head at construction) and counts and
    // logs the loads and holds the ledger released by timeout. Call periodically from one thread (the
    // daemon: every second); returns how many expiries it found.
    Result<std::size_t> scan_expiries();

    const EngineStats& stats() const { return stats_; }
    const EngineOptions& options() const { return options_; }

    struct Upload;
    struct Online;

private:
    void sign_on(const iso8583::Message& request, SessionState& session, Respond respond);
    void offline_upload(iso8583::Message request, SessionState& session, Respond respond);
    void reconcile(const iso8583::Message& request, SessionState& session, Respond respond);
    void hotlist_download(const iso8583::Message& request, SessionState& session, Respond respond);
    void issue_challenge(const iso8583::Message& request, SessionState& session, Respond respond);
    // The terminal of a request is the connection's (TLS), registered, active, signed on: the code
    // refusing it, or nothing. `terminal` is read in `txn`.
    std::optional<iso8583::ResponseCode> refuse_terminal(const iso8583::Message& request, const SessionState& session,
                                                         const std::optional<TerminalRecord>& terminal) const;
    void review(std::shared_ptr<Upload> upload, RiskKind kind);
    void answer_stored(const std::shared_ptr<Upload>& upload, const PurchaseProof& stored);
    // Why `challenge` is not a valid one for this terminal and card now; nothing when it is (it may
    // still have been used: the caller checks the table and the holds in flight).
    std::optional<std::string> check_challenge(const iso8583::HostChallenge& challenge, std::string_view terminal_id,
                                               const Asn& asn) const;
    // Challenges of 0100s between their check and their hold's commit: one use at a time.
    bool claim_challenge(const iso8583::HostChallenge& challenge);
    void release_challenge(const iso8583::HostChallenge& challenge);
    void book(std::shared_ptr<Upload> upload);
    void finish(const std::shared_ptr<Upload>& upload, iso8583::ResponseCode code);
    void answer_booking(const std::shared_ptr<Upload>& upload, const ledger::Reply& reply);

    // online.cpp
    std::shared_ptr<Online> begin_online(const iso8583::Message& request, SessionState& session, Respond respond,
                                         iso8583::ProcessingCode processing_code);
    void online_load(const iso8583::Message& request, SessionState& session, Respond respond);
    void load_confirmation(std::shared_ptr<Online> online);
    void clinic_authorization(const iso8583::Message& request, SessionState& session, Respond respond);
    void clinic_completion(std::shared_ptr<Online> online);
    void advice(const iso8583::Message& request, SessionState& session, Respond respond);
    void reversal(const iso8583::Message& request, SessionState& session, Respond respond);
    void reverse_load(std::shared_ptr<Online> online);
    void reverse_hold(std::shared_ptr<Online> online);
    void void_pending(std::shared_ptr<Online> online, BatchTotal total);
    void acknowledge_reversal(std::shared_ptr<Online> online, BatchTotal total);
    static lmdb::Status count_reversal(const Registry& registry, lmdb::Txn& txn, const Online& online, BatchTotal total);
    void approve_load(std::shared_ptr<Online> online, const hsm::LoadAnswer& answer);
    void hold_medical(std::shared_ptr<Online> online);
    void submit(std::shared_ptr<Online> online, ledger::Transfer transfer,
                std::function<lmdb::Status(lmdb::Txn&, ledger::ResultCode)> hook,
                std::function<void(ledger::ResultCode)> done);
    void flag_only(std::shared_ptr<Online> online, RiskFlag flag, iso8583::ResponseCode code);
    void answer(const std::shared_ptr<Online>& online, iso8583::ResponseCode code);

    ledger::Ledger& ledger_;
    ledger::Writer& writer_;
    Registry& registry_;
    TacVerifier& verifier_;
    CardServices* card_services_ = nullptr;
    const EngineOptions options_;
    EngineStats stats_;
    std::uint64_t journal_next_sequence_ = 1;  // scan_expiries
    std::mutex challenges_mutex_;
    std::set<iso8583::HostChallenge> challenges_in_flight_;
};

// Responses and field 60 as the ISO 8583 profile defines them (coconut/iso8583/profile.hpp).
using iso8583::batch_of;
using iso8583::make_response;
// The Place of a card transaction (user_data_128): card local time YYMMDDhhmm from DF07.
Place place_of(const TerminalId& terminal_id, std::uint8_t type, std::uint16_t line, std::uint16_t station,
               const crypto::CardDateTime& when);

// After a parse error: the response MTI, 11 and 41 read from the raw message as far as it parses, so
// the terminal can match a 30 to its request. nullopt when they cannot be read (close the connection).
std::optional<iso8583::Message> format_error_response(ByteView message);

// ---- scheduling: a core of its own for the ledger writer (serve --writer-cpu) ---------------------------

// The one ledger writer thread carries every booking; on a small machine the terminal I/O, the HTTP
// queries and anything else in the process take CPU from it in bursts (a balance query load cost the
// writes 12–14 % and pushed query p99 to 6–7 ms on 2 cores, clearing/README.md "Scheduling"). With a
// layout the writer runs alone on one CPU and every other thread of the daemon on the rest.
struct CpuLayout {
    int writer = -1;          // the ledger writer's CPU
    std::vector<int> others;  // every other thread of the daemon (ascending)
};
// The default: bookings before everything else, as the HTTP thread's nice:10 (http.hpp ThreadPriority);
// "off" on a host shared with services that should have the daemon's threads on every CPU.
inline constexpr std::string_view writer_cpu_default = "auto";
// From --writer-cpu, against the CPUs the calling thread may run on (sched_getaffinity):
//   "off"  no layout (nullopt);
//   "auto" the highest allowed CPU when two or more are allowed, else no layout;
//   "N"    CPU N, which must be allowed and leave at least one other allowed CPU.
// Error (bad_input): the message says what is wrong and which CPUs are allowed.
Result<std::optional<CpuLayout>> plan_cpu_layout(std::string_view writer_cpu);
// Restricts a thread (the calling one: pthread_self()) to `cpus`. Error: what the kernel said.
Status pin_thread(std::thread::native_handle_type thread, std::span<const int> cpus);
// The CPUs the calling thread may run on, ascending.
std::vector<int> allowed_cpus();
// "0", "0-3", "0,2,5" for messages.
std::string format_cpus(std::span<const int> cpus);

// ---- server --------------------------------------------------------------------------------------------

// Connections served at once: ~2,000 terminals per province connect in waves, not all at once; beyond
// this a new connection is closed at once (the terminal retries) rather than exhausting descriptors.
inline constexpr std::size_t connections_max_default = 1024;
// Requests of one connection being processed at once (the terminal's many-in-flight upload window);
// beyond it the connection stops reading until answers go out, so one terminal cannot fill the writer.
inline constexpr std::size_t in_flight_per_connection_max_default = 64;
// A connection that sends nothing for this long is closed (terminals echo every 60 s when idle).
inline constexpr std::chrono::seconds read_idle_timeout_default{120};
// Once a frame has begun, the rest must arrive within this (a stalled or malicious sender).
inline constexpr std::chrono::seconds frame_timeout_default{10};
// Graceful shutdown waits at most this long for answers in flight.
inline constexpr std::chrono::seconds drain_timeout_default{30};
// A TLS handshake must complete within this (two round trips and two signatures; a terminal on a slow
// mobile link needs well under a second): a peer that opens connections and stalls them is closed.
inline constexpr std::chrono::seconds handshake_timeout_default{10};
// Connections one client address may hold at once, before anything is authenticated: a quarter of the
// total, generous for a carrier's gateway or a clinic's NAT with many terminals behind one address,
// yet one peer cannot take every slot.
inline constexpr std::size_t connections_per_address_default = 256;
// Connections one terminal (its certificate's terminal id) may hold at once: a terminal uses one, two
// while it reconnects.
inline constexpr std::size_t connections_per_terminal_default = 4;
// A connection whose terminal has not signed on within this is closed (an echo or anything else before
// sign-on does not keep it): a terminal signs on first, within a round trip of connecting.
inline constexpr std::chrono::seconds sign_on_timeout_default{5};

struct ServerOptions {
    std::string host = "127.0.0.1";
    std::uint16_t port = 0;  // 0: an ephemeral port (Server::port() tells which)
    std::size_t connections_max = connections_max_default;
    std::size_t in_flight_per_connection_max = in_flight_per_connection_max_default;
    std::chrono::milliseconds read_idle_timeout = read_idle_timeout_default;
    std::chrono::milliseconds frame_timeout = frame_timeout_default;
    // Mutual TLS for terminals (clearing/README.md "TLS for terminals"): a server context from
    // coconut::tls::make_server_context. Set: every connection completes a handshake with a terminal
    // certificate chained to the island CA within handshake_timeout, else it is closed and counted in
    // tls_handshake_failures; the certificate's terminal id is the session's authenticated_terminal_id.
    // Unset: plain TCP (`serve --insecure-terminals`).
    std::shared_ptr<boost::asio::ssl::context> tls;
    std::chrono::milliseconds handshake_timeout = handshake_timeout_default;
    std::size_t connections_per_address = connections_per_address_default;
    std::size_t connections_per_terminal = connections_per_terminal_default;  // TLS: per certificate
    std::chrono::milliseconds sign_on_timeout = sign_on_timeout_default;       // 0: no deadline
};

struct ServerStats {
    std::atomic<std::uint64_t> connections_accepted{0};
    std::atomic<std::uint64_t> connections_refused{0};               // above connections_max
    std::atomic<std::uint64_t> connections_refused_per_address{0};   // above connections_per_address
    std::atomic<std::uint64_t> connections_refused_per_terminal{0};  // closed after the handshake: above connections_per_terminal
    std::atomic<std::uint64_t> sign_on_timeouts{0};                  // closed: no sign-on within sign_on_timeout
    std::atomic<std::uint64_t> accept_pauses{0};                     // accept waited: out of descriptors or memory
    std::atomic<std::uint64_t> format_errors{0};        // answered 30
    std::atomic<std::uint64_t> closed_bad_frame{0};     // closed: unreadable frame
    std::atomic<std::uint64_t> timeouts{0};
    std::atomic<std::uint64_t> tls_handshakes_full{0};     // with a certificate verification
    std::atomic<std::uint64_t> tls_handshakes_resumed{0};  // a session ticket, no certificate sent
    std::atomic<std::uint64_t> tls_handshake_failures{0};  // closed: no / unverifiable / non-terminal certificate, timeout
};

// The ISO 8583 listener: one object per connection, 2-byte length framing, bounded frames, timeouts
// on every read, a bounded window of requests per connection. Runs on `io`.
class Server {
public:
    // Binds and listens; throws std::system_error when the address cannot be bound (start-up).
    Server(boost::asio::io_context& io, Engine& engine, ServerOptions options);
    ~Server();
    std::uint16_t port() const;
    // Stops accepting and reading; connections close once their answers in flight are written.
    // `done` runs when every connection has closed.
    void shutdown(std::function<void()> done);
    const ServerStats& stats() const;

    struct State;

private:
    std::shared_ptr<State> state_;
};

}  // namespace coconut::clearing
