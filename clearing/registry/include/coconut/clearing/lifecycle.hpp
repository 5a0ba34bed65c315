// The card lifecycle's records (clearing/README.md "Card lifecycle"), kept in the ledger's LMDB
// environment beside the registries: table "lifecycle" (lost ASN → when and by whom it was reported,
// the card that replaced it, where its balance carry stands, what it paid late) and table "persons"
// (keyed hash of a social-security number → the person's name, birth date and cards; and each card's
// owner). The SSN itself is never stored: callers hash it under the daemon's keyed-hash key
// (http::Tokens::hash over "ssn:" ‖ SSN) and hand the 32-byte hash in.
//
// Above the registry (registry.hpp), below the engine: the engine reads a lost card's carry state when
// it books an upload; the lifecycle operations (card_lifecycle.hpp) write these records inside the
// commit of their ledger transfers.
//
// Errors: LMDB failures inside a caller's transaction are lmdb errors; bad input (a registry file's
// person, a clerk's body) is a message naming the field.
#pragma once

#include <coconut/clearing/plan.hpp>
#include <coconut/ledger/lmdb.hpp>

#include <nlohmann/json_fwd.hpp>

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace coconut::clearing {

// ---- the lost card ----------------------------------------------------------------------------------------

enum class Reporter : std::uint8_t { cardholder = 1, clerk = 2 };
std::string_view to_string(Reporter reporter);

// Where a lost card's purse balance stands (clearing/README.md "Card lifecycle"):
//   waiting   reported lost, no replacement yet (the cardholder or a clerk may still undo it: found);
//   pending   replaced; the balance moves to the new card's carried holding once the waiting period
//             since the report has passed (the writer sweep);
//   carried   moved (transfer 11); later uploads of the lost card are booked to lost late spending.
enum class CarryState : std::uint8_t { waiting = 1, pending = 2, carried = 3 };
std::string_view to_string(CarryState state);

struct LifecycleRecord {
    Asn asn{};  // the lost card
    std::uint64_t reported_ns = 0;
    Reporter reporter = Reporter::cardholder;
    std::string reported_by;  // the clerk's name, or "cardholder"
    CarryState state = CarryState::waiting;
    Asn replaced_by{};  // pending / carried: the new card
    std::uint64_t replaced_ns = 0;
    std::uint64_t medical_carried_fen = 0;  // transfer 13 at replacement (and the rest at the carry)
    std::uint64_t carried_ns = 0;           // carried: when transfer 11 was booked
    std::int64_t carried_fen = 0;           // carried: its amount (0 when the shadow held nothing)
    // Uploads of the lost card booked after the carry (transfer 12): the claim on the cardholder.
    std::uint32_t late_count = 0;
    std::uint64_t late_fen = 0;
    friend bool operator==(const LifecycleRecord&, const LifecycleRecord&) = default;
};

// ---- persons ------------------------------------------------------------------------------------------

using SsnHash = std::array<std::uint8_t, 32>;

// What a counter needs to recognise the holder, and the cards issued to them (oldest first).
struct PersonRecord {
    std::string name;        // 1 … name_chars_max characters
    std::string birth_date;  // YYYY-MM-DD
    std::vector<Asn> cards;  // at most person_cards_max
    friend bool operator==(const PersonRecord&, const PersonRecord&) = default;
};
// A person replaces lost cards now and then; a record that grows past this is a clerk's mistake.
inline constexpr std::size_t person_cards_max = 64;
// The text of a social-security number as a counter reads it off the ID document: 18 characters
// (17 digits and a digit or X, the resident identity number), or 6 … 18 digits for other documents.
inline constexpr std::size_t ssn_chars_min = 6;
inline constexpr std::size_t ssn_chars_max = 18;

// The SSN text normalised (upper-case X), or the problem with it ("ssn must be 6 to 18 digits …").
coconut::Result<std::string, std::string> normalize_ssn(std::string_view text);
// A person entry as the registry file and the counter route carry it: {"ssn","name","birth_date"}.
struct PersonEntry {
    std::string ssn;  // normalised
    std::string name;
    std::string birth_date;
};
coconut::Result<PersonEntry, std::string> read_person(const nlohmann::json& entry);
// Every card's optional "person" of a registry file (format in clearing/README.md), validated whole
// before anything is written: the error names the card and the field.
struct CardPerson {
    Asn asn{};
    PersonEntry person;
};
coconut::Result<std::vector<CardPerson>, std::string> read_registry_persons(std::string_view json_text);

// ---- the tables ----------------------------------------------------------------------------------------

class Lifecycle {
public:
    // Opens (creates) the two tables. Start-up only (each opens a short write transaction).
    static Result<std::unique_ptr<Lifecycle>> open(lmdb::Env& env);
    ~Lifecycle();
    Lifecycle(const Lifecycle&) = delete;
    Lifecycle& operator=(const Lifecycle&) = delete;

    lmdb::Result<std::optional<LifecycleRecord>> record_in(const lmdb::Txn& txn, const Asn& lost_asn) const;
    lmdb::Status put_record(lmdb::Txn& txn, const LifecycleRecord& record) const;
    lmdb::Status delete_record(lmdb::Txn& txn, const Asn& lost_asn) const;
    // Every record in ASN order, at most `limit` (the sweep and the clerk's list read them in pages).
    lmdb::Result<std::vector<LifecycleRecord>> records_in(const lmdb::Txn& txn, const Asn& after, std::size_t limit) const;
    // The lost card a new card replaced, if any (a scan: clerk and cardholder reads only).
    lmdb::Result<std::optional<LifecycleRecord>> replacing_in(const lmdb::Txn& txn, const Asn& new_asn) const;

    lmdb::Result<std::optional<PersonRecord>> person_in(const lmdb::Txn& txn, const SsnHash& ssn) const;
    lmdb::Result<std::optional<SsnHash>> owner_in(const lmdb::Txn& txn, const Asn& asn) const;
    // Writes the person and, for each of its cards, the card's owner.
    lmdb::Status put_person(lmdb::Txn& txn, const SsnHash& ssn, const PersonRecord& person) const;

    struct Tables;

private:
    explicit Lifecycle(std::unique_ptr<Tables> tables);
    std::unique_ptr<Tables> tables_;
};

// Encoded forms, exposed for the pair assertions in tests.
Bytes encode_lifecycle(const LifecycleRecord& record);
std::optional<LifecycleRecord> decode_lifecycle(ByteView bytes);
Bytes encode_person(const PersonRecord& person);
std::optional<PersonRecord> decode_person(ByteView bytes);

}  // namespace coconut::clearing
