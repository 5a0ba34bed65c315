// The registries of the clearing daemon (coconut::clearing_registry), kept in the ledger's LMDB
// environment: cards (with the purse shadow mirror and offline ATCs), terminals (STAN, 0500 totals,
// status), online load attempts, clinic holds, purchase proofs, clinic challenges, risk flags and the
// versioned hotlist; their stored encodings; the registry file (`admin load`) and the status changes
// of cards and terminals. Above the account plan (plan.hpp), below the engine (clearing/README.md
// "Layers"). Entries are validated by registry_validator.hpp; `check` is in check.hpp.
//
// Inside a ledger writer group the card and terminal records are kept decoded and written once per
// group (Registry::group_hooks): the group commit hands the group's context to the hooks with the
// group's transaction.
//
// Errors: bad input from an operator (registry JSON, a data directory) is an Error with a specific
// message; LMDB failures inside a caller's transaction are lmdb errors.
#pragma once

#include <coconut/clearing/plan.hpp>
#include <coconut/crypto/card_crypto.hpp>
#include <coconut/iso8583/card_data.hpp>
#include <coconut/iso8583/profile.hpp>
#include <coconut/ledger/lmdb.hpp>

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace coconut::clearing {

// ---- card data in field 62 (ISO8583.md §3.1) ---------------------------------------------------------

// One offline purse transaction as uploaded in 0320 (tags DF01–DF08): coconut/iso8583/card_data.hpp.
using iso8583::encode_purse_transaction;
using iso8583::parse_purse_transaction;
using iso8583::PurseTransaction;

// ---- registries -----------------------------------------------------------------------------------------

// A card's TAC master version when none is named: 0, the newest active (the HSM's hsm::newest_version).
inline constexpr std::uint8_t tac_key_newest = 0;

// replaced: lost, and a new card issued for the same person (lifecycle.hpp); reached only through the
// replacement, never set by name (parse_card_status does not know it), and never left.
// returned: handed back at a counter and refunded (clearing/README.md "Card return, refund and tourist
// cards"); final — no status change leaves it, never set by name either. Every status but active is on
// the hotlist.
enum class CardStatus : std::uint8_t { active = 1, lost = 2, blocked = 3, replaced = 4, returned = 5 };
inline constexpr std::uint8_t card_status_max = 5;
std::string_view to_string(CardStatus status);
// The statuses a clerk or a registry file may set by name: active, lost, blocked.
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
    std::uint8_t tac_key_version = tac_key_newest;  // version of the TAC master (0: newest active)
    std::uint32_t opening_balance_fen = 0;          // purse balance at issue (booked from the float)
    std::uint32_t medical_opening_fen = 0;          // medical account at issue (booked from the fund)
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

// What opens a card in the ledger (plan.hpp), the same for `admin load` and the clerk API.
void append_card_opening(std::vector<ledger::Event>& events, const CardRecord& card);

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
void count_in_batch(TerminalRecord& terminal, std::optional<std::uint32_t> batch_number, BatchTotal total, std::uint64_t amount_fen);

// An online load attempt (table "loads", keyed by ASN ‖ online ATC): what a 0220 or 0400 refers to.
struct LoadAttempt {
    std::uint8_t attempt = 0;   // online_load_transfer(asn, atc, attempt)
    ledger::Id request_digest;  // of the 0200's 2, 4, 41, 62: a repeat has the same
    std::uint64_t amount_fen = 0;
    std::string terminal_id;  // field 41 of the 0200: only it may reverse the load
};

// A clinic hold (table "holds", keyed by the hold's transfer id).
struct HoldRecord {
    ledger::Id request_digest;        // of the 0100's 2, 4, 42, 62
    std::uint64_t requested_fen = 0;  // field 4 of the 0100 (the hold may be less: partial approval)
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
    std::uint16_t offline_atc = 0;                // DF04 as first booked (a claim)
    std::uint32_t balance_before_fen = 0;         // DF03 as first booked (a claim)
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
    tac_invalid = 1,             // booked to suspense
    duplicate_different = 2,     // same transfer id, different content (answered 94)
    atc_gap = 3,                 // offline ATC jumped past the highest seen + 1
    shadow_mismatch = 4,         // in-order upload whose balance before ≠ the shadow balance
    hotlisted_card_used = 5,     // an offline transaction of a card not active in the registry
    shadow_negative = 6,         // the shadow went below zero (the card spent money we never saw loaded)
    mac1_invalid = 7,            // 0200 whose load MAC1 the HSM refused (nothing booked)
    load_tac_invalid = 8,        // 0220 load confirmation whose TAC failed (posted anyway if pending: MAC2 was ours)
    late_load_confirmation = 9,  // 0220 for a load already reversed / expired: booked late
    internal_auth_invalid = 10,  // 0100 whose INTERNAL AUTHENTICATE cryptogram failed (nothing booked)
    claims_differ = 11,          // a booked purchase re-sent with other claims (DF03, DF04, DF0C): answered as booked
    serial_conflict = 12,        // a second valid TAC under a booked purchase's id: recorded for review, answered 94
    terminal_suspended = 13,     // a terminal suspended past the forged-TAC limit (detail names it)
    atc_implausible = 14,        // a claimed offline ATC far above the card's booked ones: flagged, not used
    wrong_terminal = 15,         // a 0220 load confirmation from another terminal than the 0200's (nothing posted)
    challenge_refused = 16,      // a 0100 whose host challenge was unknown, expired, used or another's (nothing booked)
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
inline constexpr std::size_t registry_file_bytes_max = 64u << 20;  // a province's cards fit with room to spare
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

    // For the ledger writer's WriterOptions::group_hooks (one writer per registry): `begin` makes the
    // group's context (the registry's write-back), which the group commit attaches to the group's
    // transaction (lmdb::Txn::context). The card and terminal records that card_in / terminal_in /
    // put_card / put_terminal read or write through a transaction carrying it are kept decoded, and
    // each one written is put once before the commit (`finish`), instead of once per booking (a
    // terminal's batch upload rewrote its record per transaction). Any other transaction reads and
    // writes through.
    ledger::GroupHooks group_hooks() const;

    // Online loads and clinic holds (written by the booking's hook, read by confirmations and reversals).
    Result<std::optional<LoadAttempt>> load_attempt(const Asn& asn, std::uint16_t online_atc) const;
    lmdb::Status put_load_attempt(lmdb::Txn& txn, const Asn& asn, std::uint16_t online_atc, const LoadAttempt& attempt) const;
    Result<std::optional<HoldRecord>> hold(const ledger::Id& hold_id) const;
    lmdb::Status put_hold(lmdb::Txn& txn, const ledger::Id& hold_id, const HoldRecord& hold) const;
    // Clinic visits (ISO8583.md §4.9, table "visits"): the medical hold and the purse purchase that one
    // visit's DF11 links, written by the purchase's booking hook once the clearing checked the link. For
    // display only (the cardholder's history). put_visit returns false when the hold has a purse part.
    lmdb::Result<bool> put_visit(lmdb::Txn& txn, const ledger::Id& hold_id, const ledger::Id& purse_id) const;
    // What the record `id` is linked to, by what `id` is: the purse part of a hold (`hold`), the hold of a purse part
    // (`purse`); the refund of a purchase (`refund_of`: the credit's pending id, or the zero id for a cash refund)
    // and the purchase a refund credit refunds (`credit`) — ISO8583.md §4.10, written by put_purchase_refund.
    enum class VisitSide : std::uint8_t { hold, purse, refund_of, credit };
    lmdb::Result<std::optional<ledger::Id>> visit_in(const lmdb::Txn& txn, const ledger::Id& id, VisitSide side) const;
    Result<std::optional<ledger::Id>> visit(const ledger::Id& id, VisitSide side) const;
    // Records the purchase `purchase_id` as refunded, by the refund credit `credit_id` (its pending transfer,
    // code 22) or in cash (the zero id). Replaces an earlier record (a credit voided or expired meanwhile).
    lmdb::Status put_purchase_refund(lmdb::Txn& txn, const ledger::Id& purchase_id, const ledger::Id& credit_id) const;
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
    GroupCache* group_cache_for(const lmdb::Txn& txn) const;  // the group context `txn` carries, if it is ours
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

}  // namespace coconut::clearing
