// The registry file (`coconut-clearingd admin load`, clearing/README.md "Registry file") and the
// status changes of cards and terminals (registry.hpp).
#include "registry_internal.hpp"

#include <coconut/core/assert.hpp>

#include <coconut/clearing/registry.hpp>
#include <coconut/clearing/registry_validator.hpp>

#include <nlohmann/json.hpp>

#include <functional>
#include <set>
#include <variant>

namespace coconut::clearing {

using detail::bad_input;
using detail::storage_error;

namespace {

struct Parsed {
    std::vector<Participant> participants;
    std::vector<TerminalRecord> terminals;
    std::vector<CardRecord> cards;
};

using Json = nlohmann::json;

// The file's sections, each entry read by the registry validator (registry_validator.hpp); the error
// names the entry: "participants[3]: \"kind\" must be bus, shop, clinic or counter".
template <class Record, class Read>
Result<std::vector<Record>> read_section(const Json& root, const char* section, Read read) {
    std::vector<Record> out;
    if (!root.contains(section)) return out;
    const Json& entries = root.at(section);
    if (!entries.is_array()) return Unexpected<Error>{bad_input(std::string("registry: \"") + section + "\" must be an array")};
    out.reserve(entries.size());
    for (std::size_t i = 0; i < entries.size(); ++i) {
        auto record = read(entries[i]);
        if (!record) return Unexpected<Error>{bad_input(std::string(section) + "[" + std::to_string(i) + "]: " + record.error())};
        out.push_back(std::move(record).value());
    }
    return out;
}

// The first entry whose key an earlier one has: "<section>[i]: duplicate <what> <key>".
template <class Record, class Key, class Name>
Status no_duplicates(const std::vector<Record>& records, const char* section, const char* what, Key key, Name name) {
    std::set<decltype(key(records.front()))> seen;
    for (std::size_t i = 0; i < records.size(); ++i) {
        if (seen.insert(key(records[i])).second) continue;
        return Unexpected<Error>{
            bad_input(std::string(section) + "[" + std::to_string(i) + "]: duplicate " + what + " " + name(records[i]))};
    }
    return Ok{};
}

Result<Parsed> parse_registry(std::string_view json_text) {
    if (json_text.size() > registry_file_bytes_max) return Unexpected<Error>{bad_input("registry file larger than 64 MiB")};
    Json root = Json::parse(json_text, nullptr, false);
    if (root.is_discarded() || !root.is_object()) return Unexpected<Error>{bad_input("registry: not a JSON object")};
    for (auto it = root.begin(); it != root.end(); ++it) {
        if (it.key() != "participants" && it.key() != "terminals" && it.key() != "cards") {
            return Unexpected<Error>{bad_input("registry: unknown field \"" + it.key() + "\"")};
        }
    }
    COCONUT_TRY(participants, read_section<Participant>(root, "participants", read_participant), detail::as_failure);
    COCONUT_TRY(terminals, read_section<TerminalRecord>(root, "terminals", read_terminal), detail::as_failure);
    COCONUT_TRY(cards, read_section<CardRecord>(root, "cards", read_card), detail::as_failure);
    const auto id_text = [](const auto& id) { return std::to_string(id); };
    if (auto s = no_duplicates(
            participants, "participants", "id", [](const Participant& p) { return p.id; },
            [&](const Participant& p) { return id_text(p.id); });
        !s)
        return Unexpected<Error>{s.error()};
    if (auto s = no_duplicates(
            terminals, "terminals", "terminal_id", [](const TerminalRecord& t) { return t.terminal_id; },
            [](const TerminalRecord& t) { return t.terminal_id; });
        !s)
        return Unexpected<Error>{s.error()};
    if (auto s = no_duplicates(
            cards, "cards", "asn", [](const CardRecord& c) { return c.asn; }, [](const CardRecord& c) { return bcd_to_digits(c.asn); });
        !s)
        return Unexpected<Error>{s.error()};
    return Parsed{std::move(participants), std::move(terminals), std::move(cards)};
}

// Applies `events` with `hook` in one commit; any event that is neither ok nor exists fails the
// whole commit (the hook reports it), so a registry load is all-or-nothing per commit.
Result<std::pair<std::size_t, std::size_t>> apply_all(ledger::Ledger& ledger, const std::vector<ledger::Event>& events,
                                                      std::function<lmdb::Status(lmdb::Txn&)> write_registry) {
    std::string failure;
    std::size_t accounts_created = 0, transfers_created = 0;
    ledger::Batch batch;
    batch.events = events;
    batch.after = [&](lmdb::Txn& txn, std::span<const ledger::EventResult> results) -> lmdb::Status {
        for (std::size_t i = 0; i < results.size(); ++i) {
            if (!ledger::succeeded(results[i].code)) {
                const bool account = std::holds_alternative<ledger::Account>(events[i]);
                const ledger::Id id = account ? std::get<ledger::Account>(events[i]).id : std::get<ledger::Transfer>(events[i]).id;
                failure = std::string(account ? "account " : "transfer ") + ledger::to_string(id) + ": " +
                          std::string(ledger::to_string(results[i].code));
                return Unexpected<lmdb::Error>{lmdb::Error{MDB_BAD_TXN, "registry load"}};
            }
            if (results[i].code == ledger::ResultCode::ok) {
                (std::holds_alternative<ledger::Account>(events[i]) ? accounts_created : transfers_created) += 1;
            }
        }
        return write_registry(txn);
    };
    auto applied = ledger.apply_group(std::span<const ledger::Batch>(&batch, 1));
    if (!failure.empty()) return Unexpected<Error>{Error{ErrorCode::conflict, failure}};
    if (!applied) return Unexpected<Error>{storage_error(applied.error())};
    return std::pair{accounts_created, transfers_created};
}

}  // namespace

namespace {

// Every terminal names a participant of this file or of the registry.
Status check_participants_known(const Registry& registry, const Parsed& parsed) {
    std::set<std::uint64_t> known;
    for (const auto& p : parsed.participants) known.insert(p.id);
    for (const auto& t : parsed.terminals) {
        if (known.count(t.participant_id)) continue;
        COCONUT_TRY(stored, registry.participant(t.participant_id), detail::as_failure);
        if (!stored) {
            return Unexpected<Error>{bad_input("terminal " + t.terminal_id + ": participant " + std::to_string(t.participant_id) +
                                               " is neither in the file nor in the registry")};
        }
    }
    return Ok{};
}

// Cards already registered keep their runtime state; their opening balances cannot change.
Status keep_registered_cards(const Registry& registry, std::vector<CardRecord>& cards) {
    for (auto& c : cards) {
        COCONUT_TRY(stored, registry.card(c.asn), detail::as_failure);
        if (!stored) continue;
        if (stored->opening_balance_fen != c.opening_balance_fen || stored->medical_opening_fen != c.medical_opening_fen) {
            return Unexpected<Error>{Error{ErrorCode::conflict, "card " + bcd_to_digits(c.asn) +
                                                                    ": opening balances differ from the registered ones (" +
                                                                    std::to_string(stored->opening_balance_fen) + "/" +
                                                                    std::to_string(stored->medical_opening_fen) + " fen)"}};
        }
        CardRecord kept = *stored;
        kept.status = c.status;
        kept.issuer_id = c.issuer_id;
        kept.tac_key_version = c.tac_key_version;
        c = kept;
    }
    return Ok{};
}

// Fixed accounts, participants and terminals in one commit (a terminal registered again keeps its
// runtime fields: STAN, batch and its totals, status).
Status load_participants_and_terminals(ledger::Ledger& ledger, const Registry& registry, const Parsed& parsed, LoadReport& report) {
    std::vector<ledger::Event> events;
    for (const auto& a : fixed_accounts()) events.emplace_back(a);
    for (const auto& p : parsed.participants) append_participant_opening(events, p.id);
    if (events.size() > ledger::batch_events_max) {
        return Unexpected<Error>{bad_input("registry: more than 4,000 participants in one file; split it")};
    }
    COCONUT_TRY(created,
                apply_all(ledger, events,
                          [&](lmdb::Txn& txn) -> lmdb::Status {
                              for (const auto& p : parsed.participants) {
                                  if (auto s = registry.put_participant(txn, p); !s) return s;
                              }
                              for (const auto& t : parsed.terminals) {
                                  auto stored = registry.terminal_in(txn, t.terminal_id);
                                  if (!stored) return Unexpected<lmdb::Error>{stored.error()};
                                  TerminalRecord r = t;
                                  if (*stored) {
                                      r = **stored;
                                      r.psam_terminal_id = t.psam_terminal_id;
                                      r.participant_id = t.participant_id;
                                      r.merchant_id = t.merchant_id;
                                  }
                                  if (auto s = registry.put_terminal(txn, r); !s) return s;
                              }
                              return Ok{};
                          }),
                detail::as_failure);
    report.accounts_created += created.first;
    return Ok{};
}

// Cards in chunks (2 accounts + up to 2 opening transfers each), one commit per chunk. A status set by
// the file is a hotlist change like any other (a new card counts as coming from active).
Status load_cards(ledger::Ledger& ledger, const Registry& registry, const std::vector<CardRecord>& cards, LoadReport& report) {
    constexpr std::size_t events_per_card = 4;
    const std::size_t cards_per_commit = ledger::batch_events_max / events_per_card;
    for (std::size_t start = 0; start < cards.size(); start += cards_per_commit) {
        const std::size_t end = std::min(cards.size(), start + cards_per_commit);
        std::vector<ledger::Event> events;
        for (std::size_t i = start; i < end; ++i) append_card_opening(events, cards[i]);
        COCONUT_ASSERT(events.size() <= ledger::batch_events_max);
        COCONUT_TRY(created,
                    apply_all(ledger, events,
                              [&](lmdb::Txn& txn) -> lmdb::Status {
                                  for (std::size_t i = start; i < end; ++i) {
                                      auto current = registry.card_in(txn, cards[i].asn);
                                      if (!current) return Unexpected<lmdb::Error>{current.error()};
                                      const CardStatus before = *current ? (*current)->status : CardStatus::active;
                                      if (auto r = registry.record_status_change(txn, cards[i].asn, before, cards[i].status); !r) {
                                          return Unexpected<lmdb::Error>{r.error()};
                                      }
                                      if (auto s = registry.put_card(txn, cards[i]); !s) return s;
                                  }
                                  return Ok{};
                              }),
                    detail::as_failure);
        report.accounts_created += created.first;
        report.transfers_created += created.second;
    }
    return Ok{};
}

}  // namespace

Result<LoadReport> load_registry(ledger::Ledger& ledger, Registry& registry, std::string_view json_text) {
    COCONUT_TRY(parsed, parse_registry(json_text), detail::as_failure);
    if (auto s = check_participants_known(registry, parsed); !s) return Unexpected<Error>{s.error()};
    if (auto s = keep_registered_cards(registry, parsed.cards); !s) return Unexpected<Error>{s.error()};
    LoadReport report;
    if (auto s = load_participants_and_terminals(ledger, registry, parsed, report); !s) return Unexpected<Error>{s.error()};
    if (auto s = load_cards(ledger, registry, parsed.cards, report); !s) return Unexpected<Error>{s.error()};
    report.participants = parsed.participants.size();
    report.terminals = parsed.terminals.size();
    report.cards = parsed.cards.size();
    return report;
}

Status set_card_status(ledger::Ledger& ledger, Registry& registry, const Asn& asn, CardStatus status) {
    COCONUT_TRY(stored, registry.card(asn), detail::as_failure);
    if (!stored) return Unexpected<Error>{bad_input("card " + bcd_to_digits(asn) + " is not registered")};
    if (stored->status == CardStatus::replaced) {
        return Unexpected<Error>{Error{ErrorCode::conflict, "card " + bcd_to_digits(asn) + " was replaced: its status stays replaced"}};
    }
    // Status and hotlist entry in one commit, so the version a terminal downloads matches the registry.
    // The record is read again inside the write transaction: a booking may have changed it meanwhile.
    auto done = apply_all(ledger, {}, [&](lmdb::Txn& txn) -> lmdb::Status {
        auto current = registry.card_in(txn, asn);
        if (!current) return Unexpected<lmdb::Error>{current.error()};
        CardRecord card = *current ? **current : *stored;
        auto recorded = registry.record_status_change(txn, asn, card.status, status);
        if (!recorded) return Unexpected<lmdb::Error>{recorded.error()};
        card.status = status;
        return registry.put_card(txn, card);
    });
    if (!done) return Unexpected<Error>{done.error()};
    return Ok{};
}

Status set_terminal_status(ledger::Ledger& ledger, Registry& registry, std::string_view terminal_id, TerminalStatus status) {
    COCONUT_TRY(stored, registry.terminal(terminal_id), detail::as_failure);
    if (!stored) return Unexpected<Error>{bad_input("terminal " + std::string(terminal_id) + " is not registered")};
    auto done = apply_all(ledger, {}, [&](lmdb::Txn& txn) -> lmdb::Status {
        auto current = registry.terminal_in(txn, terminal_id);
        if (!current) return Unexpected<lmdb::Error>{current.error()};
        TerminalRecord terminal = *current ? **current : *stored;
        terminal.status = status;
        return registry.put_terminal(txn, terminal);
    });
    if (!done) return Unexpected<Error>{done.error()};
    return Ok{};
}

}  // namespace coconut::clearing
