// The card lifecycle's operations (card_lifecycle.hpp).
#include <coconut/clearing/card_lifecycle.hpp>
#include <coconut/core/assert.hpp>

#include "internal.hpp"

#include <fmt/format.h>

#include <algorithm>

namespace coconut::clearing {

namespace {

using Outcome = std::string;
constexpr std::uint64_t ns_per_s = 1'000'000'000ULL;

std::uint64_t available_medical(const ledger::Account& a) {
    const std::uint64_t spent = a.debits_posted + a.debits_pending;
    return a.credits_posted > spent ? a.credits_posted - spent : 0;
}

// The card's status change with its hotlist entry (ISO8583.md §4.6), in the caller's commit.
lmdb::Status change_status(const Registry& registry, lmdb::Txn& txn, CardRecord card, CardStatus status) {
    auto recorded = registry.record_status_change(txn, card.asn, card.status, status);
    if (!recorded) return Unexpected<lmdb::Error>{recorded.error()};
    card.status = status;
    return registry.put_card(txn, card);
}

ledger::Transfer lifecycle_transfer(const ledger::Id& id, const ledger::Id& from, const ledger::Id& to, std::uint64_t amount_fen,
                                    std::uint32_t ledger_number, std::uint16_t code) {
    COCONUT_ASSERT(amount_fen > 0 && from != to);
    ledger::Transfer t;
    t.id = id;
    t.debit_account_id = from;
    t.credit_account_id = to;
    t.amount = amount_fen;
    t.ledger = ledger_number;
    t.code = code;
    return t;
}

bool booked(ledger::ResultCode code) { return code == ledger::ResultCode::ok; }

}  // namespace

std::int64_t carry_amount(const ledger::Account& shadow) {
    return static_cast<std::int64_t>(shadow.credits_posted) - static_cast<std::int64_t>(shadow.debits_posted) -
           static_cast<std::int64_t>(shadow.debits_pending);
}

std::uint64_t carry_due_ns(const LifecycleRecord& record, std::uint64_t wait_s) { return record.reported_ns + wait_s * ns_per_s; }

// ---- report lost / found ------------------------------------------------------------------------------------

LifecycleChange report_lost(const LifecycleContext& context, const Asn& asn, Reporter reporter, std::string reported_by,
                            std::uint64_t now_ns) {
    const Registry& registry = context.registry;
    const Lifecycle& lifecycle = context.lifecycle;
    auto write = [&registry, &lifecycle, asn, reporter, by = std::move(reported_by),
                  now_ns](lmdb::Txn& txn, std::span<const ledger::EventResult>, Outcome& outcome) -> lmdb::Status {
        auto card = registry.card_in(txn, asn);
        if (!card) return Unexpected<lmdb::Error>{card.error()};
        auto record = lifecycle.record_in(txn, asn);
        if (!record) return Unexpected<lmdb::Error>{record.error()};
        if (!*card) {
            outcome = "card not registered";
        } else if ((*record && (*record)->state != CarryState::waiting) || (*card)->status == CardStatus::replaced) {
            outcome = "card already replaced";
        } else if (*record && (*card)->status != CardStatus::active) {
            // A waiting record of a card a clerk put back on `active` by its status is stale: reported anew.
            outcome = "card already reported lost";
        } else if ((*card)->status != CardStatus::active && (*card)->status != CardStatus::lost) {
            outcome = "card is " + std::string(to_string((*card)->status));  // blocked, or handed back
        }
        if (outcome != "ok") return Ok{};
        LifecycleRecord r;
        r.asn = asn;
        r.reported_ns = now_ns;
        r.reporter = reporter;
        r.reported_by = by;
        if (auto put = lifecycle.put_record(txn, r); !put) return put;
        return change_status(registry, txn, **card, CardStatus::lost);  // no change (no entry) when a clerk hotlisted it already
    };
    return LifecycleChange{{}, std::move(write)};
}

LifecycleChange report_found(const LifecycleContext& context, const Asn& asn, std::uint64_t now_ns) {
    const Registry& registry = context.registry;
    const Lifecycle& lifecycle = context.lifecycle;
    auto write = [&registry, &lifecycle, asn, now_ns, wait_s = context.wait_s](lmdb::Txn& txn, std::span<const ledger::EventResult>,
                                                                               Outcome& outcome) -> lmdb::Status {
        auto card = registry.card_in(txn, asn);
        if (!card) return Unexpected<lmdb::Error>{card.error()};
        auto record = lifecycle.record_in(txn, asn);
        if (!record) return Unexpected<lmdb::Error>{record.error()};
        if (!*card) {
            outcome = "card not registered";
        } else if (!*record) {
            outcome = "card not reported lost";
        } else if ((*record)->state != CarryState::waiting) {
            outcome = "card already replaced by a new card: it stays hotlisted";
        } else if (now_ns >= carry_due_ns(**record, wait_s)) {
            outcome = "the waiting period since the report is over: ask a counter for a replacement";
        }
        if (outcome != "ok") return Ok{};
        if (auto deleted = lifecycle.delete_record(txn, asn); !deleted) return deleted;
        return change_status(registry, txn, **card, CardStatus::active);
    };
    return LifecycleChange{{}, std::move(write)};
}

// ---- replacement --------------------------------------------------------------------------------------------

namespace {

// What replace_card decided on a snapshot; the commit checks it again.
std::optional<std::string> replacement_problem(const CardRecord* lost, const CardRecord* fresh,
                                               const std::optional<LifecycleRecord>& record,
                                               const std::optional<LifecycleRecord>& fresh_replaces,
                                               const std::optional<SsnHash>& lost_owner, const std::optional<SsnHash>& fresh_owner,
                                               const SsnHash& ssn) {
    if (!lost) return "card not registered";
    if (!fresh) return "new card not registered";
    if (lost->asn == fresh->asn) return "the new card must be another card";
    if (lost->status == CardStatus::replaced || (record && record->state != CarryState::waiting)) return "card already replaced";
    if (lost->status != CardStatus::active && lost->status != CardStatus::lost) return "card is " + std::string(to_string(lost->status));
    if (!lost_owner) return "no person record for the card: register its holder first (POST /v1/clerk/persons)";
    if (*lost_owner != ssn) return "the SSN does not match the card's holder";
    if (fresh->status != CardStatus::active) return "new card is not active";
    if (fresh_replaces) return "new card already replaces another card";
    if (fresh_owner && *fresh_owner != ssn) return "new card belongs to another person";
    return std::nullopt;
}

struct ReplacementFacts {
    std::optional<CardRecord> lost;
    std::optional<CardRecord> fresh;
    std::optional<LifecycleRecord> record;
    std::optional<LifecycleRecord> fresh_replaces;
    std::optional<SsnHash> lost_owner;
    std::optional<SsnHash> fresh_owner;
};

lmdb::Result<ReplacementFacts> read_replacement(const Registry& registry, const Lifecycle& lifecycle, const lmdb::Txn& txn, const Asn& lost,
                                                const Asn& fresh) {
    ReplacementFacts f;
    auto lost_card = registry.card_in(txn, lost);
    auto fresh_card = registry.card_in(txn, fresh);
    auto record = lifecycle.record_in(txn, lost);
    auto replaces = lifecycle.replacing_in(txn, fresh);
    auto lost_owner = lifecycle.owner_in(txn, lost);
    auto fresh_owner = lifecycle.owner_in(txn, fresh);
    for (const lmdb::Error* e : {lost_card ? nullptr : &lost_card.error(), fresh_card ? nullptr : &fresh_card.error(),
                                 record ? nullptr : &record.error(), replaces ? nullptr : &replaces.error(),
                                 lost_owner ? nullptr : &lost_owner.error(), fresh_owner ? nullptr : &fresh_owner.error()}) {
        if (e) return Unexpected<lmdb::Error>{*e};
    }
    f.lost = *lost_card;
    f.fresh = *fresh_card;
    f.record = *record;
    f.fresh_replaces = *replaces;
    f.lost_owner = *lost_owner;
    f.fresh_owner = *fresh_owner;
    return f;
}

std::optional<std::string> problem_of(const ReplacementFacts& f, const SsnHash& ssn) {
    return replacement_problem(f.lost ? &*f.lost : nullptr, f.fresh ? &*f.fresh : nullptr, f.record, f.fresh_replaces, f.lost_owner,
                               f.fresh_owner, ssn);
}

// Inside the commit: the checks again, then the records (status, hotlist, lifecycle, person).
lmdb::Status write_replacement(const Registry& registry, const Lifecycle& lifecycle, lmdb::Txn& txn, const Asn& lost, const Asn& fresh,
                               const SsnHash& ssn, std::uint64_t medical_fen, std::uint64_t now_ns, Outcome& outcome) {
    auto facts = read_replacement(registry, lifecycle, txn, lost, fresh);
    if (!facts) return Unexpected<lmdb::Error>{facts.error()};
    if (auto problem = problem_of(*facts, ssn)) {
        outcome = *problem;
        return Ok{};
    }
    LifecycleRecord r = facts->record.value_or(LifecycleRecord{});
    if (!facts->record) {  // reported lost by this replacement
        r.asn = lost;
        r.reported_ns = now_ns;
        r.reporter = Reporter::clerk;
    }
    if (r.reported_by.empty()) r.reported_by = "counter";
    r.state = CarryState::pending;
    r.replaced_by = fresh;
    r.replaced_ns = now_ns;
    r.medical_carried_fen = medical_fen;
    if (auto put = lifecycle.put_record(txn, r); !put) return put;
    if (auto changed = change_status(registry, txn, *facts->lost, CardStatus::replaced); !changed) return changed;
    auto person = lifecycle.person_in(txn, ssn);
    if (!person) return Unexpected<lmdb::Error>{person.error()};
    if (!*person) {
        outcome = "no person record for the SSN";
        return Ok{};
    }
    PersonRecord p = **person;
    if (std::find(p.cards.begin(), p.cards.end(), fresh) == p.cards.end() && p.cards.size() < person_cards_max) p.cards.push_back(fresh);
    return lifecycle.put_person(txn, ssn, p);
}

}  // namespace

coconut::Result<LifecycleChange, std::string> replace_card(const LifecycleContext& context, const Asn& lost, const Asn& replacement,
                                                           const SsnHash& ssn, std::uint64_t now_ns) {
    using Fail = Unexpected<std::string>;
    auto txn = context.ledger.begin_read();
    if (!txn) return Fail{"storage: " + txn.error().message};
    auto facts = read_replacement(context.registry, context.lifecycle, *txn, lost, replacement);
    if (!facts) return Fail{"storage: " + facts.error().message()};
    if (auto problem = problem_of(*facts, ssn)) return Fail{*problem};
    auto medical = context.ledger.lookup_account(*txn, medical_account(lost));
    if (!medical) return Fail{"storage: " + medical.error().message};
    txn->abort();
    // Posted minus pending holds: a hold pending now completes (or is released) on the old account, and
    // what it frees moves with the purse balance at the carry (medical_carry_rest_transfer).
    const std::uint64_t medical_fen = *medical ? available_medical(**medical) : 0;
    LifecycleChange change;
    change.events.emplace_back(carried_holding_opening(replacement));
    if (medical_fen > 0) {
        change.events.emplace_back(lifecycle_transfer(medical_carry_transfer(lost), medical_account(lost), medical_account(replacement),
                                                      medical_fen, ledgers::medical, transfer_codes::medical_carried));
    }
    change.write = [&registry = context.registry, &lifecycle = context.lifecycle, lost, replacement, ssn, medical_fen,
                    now_ns](lmdb::Txn& txn, std::span<const ledger::EventResult> results, Outcome& outcome) -> lmdb::Status {
        // The medical move is booked once (its id is the lost card's): another replacement racing this
        // one finds it booked (exists / a different credit account) and is refused below.
        if (medical_fen > 0 && (results.size() != 2 || !booked(results[1].code))) {
            outcome = results.size() == 2 ? fmt::format("card already replaced (medical transfer: {})", ledger::to_string(results[1].code))
                                          : "card already replaced";
            return Ok{};
        }
        return write_replacement(registry, lifecycle, txn, lost, replacement, ssn, medical_fen, now_ns, outcome);
    };
    return change;
}

// ---- the sweep -----------------------------------------------------------------------------------------------

namespace {

// The carry of a `pending` record: transfer 11 (and the medical rest); the record `carried` and the lost
// card's shadow mirror in the same commit.
LifecycleChange carry(const LifecycleContext& context, const LifecycleRecord& record, std::int64_t amount_fen,
                      std::uint64_t medical_rest_fen, std::uint64_t now_ns) {
    LifecycleChange change;
    const bool moves = amount_fen > 0;
    if (moves) {
        change.events.emplace_back(lifecycle_transfer(carry_transfer(record.asn), purse_shadow_account(record.asn),
                                                      carried_holding_account(record.replaced_by), static_cast<std::uint64_t>(amount_fen),
                                                      ledgers::purse, transfer_codes::balance_carried));
    }
    if (medical_rest_fen > 0) {
        change.events.emplace_back(lifecycle_transfer(medical_carry_rest_transfer(record.asn), medical_account(record.asn),
                                                      medical_account(record.replaced_by), medical_rest_fen, ledgers::medical,
                                                      transfer_codes::medical_carried));
    }
    change.write = [&registry = context.registry, &lifecycle = context.lifecycle, asn = record.asn, amount_fen, moves, medical_rest_fen,
                    now_ns](lmdb::Txn& txn, std::span<const ledger::EventResult> results, Outcome& outcome) -> lmdb::Status {
        auto stored = lifecycle.record_in(txn, asn);
        if (!stored) return Unexpected<lmdb::Error>{stored.error()};
        if (!*stored || (*stored)->state != CarryState::pending) {
            outcome = "carry already done";
            return Ok{};
        }
        if (moves && !booked(results[0].code)) {
            outcome = fmt::format("carry not booked: {}", ledger::to_string(results[0].code));
            return Ok{};
        }
        LifecycleRecord r = **stored;
        r.state = CarryState::carried;
        r.carried_ns = now_ns;
        r.carried_fen = moves ? amount_fen : 0;
        if (medical_rest_fen > 0 && booked(results.back().code)) r.medical_carried_fen += medical_rest_fen;
        if (auto put = lifecycle.put_record(txn, r); !put) return put;
        if (!moves) return Ok{};
        auto card = registry.card_in(txn, asn);
        if (!card) return Unexpected<lmdb::Error>{card.error()};
        if (!*card) return Ok{};
        CardRecord c = **card;
        c.shadow_balance_fen -= amount_fen;
        return registry.put_card(txn, c);
    };
    return change;
}

// A carried card whose shadow is below zero: transfer 12 from lost late spending brings it back to 0.
LifecycleChange repair(const LifecycleContext& context, const LifecycleRecord& record, const ledger::Account& shadow) {
    const auto deficit = static_cast<std::uint64_t>(-carry_amount(shadow));
    LifecycleChange change;
    change.events.emplace_back(lifecycle_transfer(late_repair_transfer(record.asn, shadow.debits_posted), lost_late_spending_account,
                                                  purse_shadow_account(record.asn), deficit, ledgers::purse,
                                                  transfer_codes::late_after_carry));
    change.write = [&registry = context.registry, &lifecycle = context.lifecycle, asn = record.asn,
                    deficit](lmdb::Txn& txn, std::span<const ledger::EventResult> results, Outcome& outcome) -> lmdb::Status {
        if (!booked(results[0].code)) {
            outcome = fmt::format("repair not booked: {}", ledger::to_string(results[0].code));
            return Ok{};
        }
        auto stored = lifecycle.record_in(txn, asn);
        auto card = registry.card_in(txn, asn);
        if (!stored || !card) return Unexpected<lmdb::Error>{!stored ? stored.error() : card.error()};
        if (*stored) {
            LifecycleRecord r = **stored;
            r.late_count++;
            r.late_fen += deficit;
            if (auto put = lifecycle.put_record(txn, r); !put) return put;
        }
        if (!*card) return Ok{};
        CardRecord c = **card;
        c.shadow_balance_fen += static_cast<std::int64_t>(deficit);
        return registry.put_card(txn, c);
    };
    return change;
}

}  // namespace

Result<SweepPage> lifecycle_sweep(const LifecycleContext& context, std::uint64_t now_ns, const Asn& after, std::size_t limit) {
    auto txn = context.ledger.begin_read();
    if (!txn) return Unexpected<Error>{Error{ErrorCode::storage, txn.error().message}};
    auto records = context.lifecycle.records_in(*txn, after, limit);
    if (!records) return Unexpected<Error>{Error{ErrorCode::storage, records.error().message()}};
    SweepPage page;
    page.last_page = records->size() < limit;
    if (!records->empty()) page.next_after = records->back().asn;
    for (const LifecycleRecord& r : *records) {
        if (r.state == CarryState::waiting) continue;
        auto shadow = context.ledger.lookup_account(*txn, purse_shadow_account(r.asn));
        if (!shadow) return Unexpected<Error>{Error{ErrorCode::storage, shadow.error().message}};
        if (!*shadow) continue;
        if (r.state == CarryState::carried) {
            if (carry_amount(**shadow) < 0) page.changes.push_back(repair(context, r, **shadow));
            continue;
        }
        // A load approved before the report and not confirmed yet: the card may hold it; wait for its
        // 0220 (posted, carried with the rest) or its reversal / expiry.
        if (now_ns < carry_due_ns(r, context.wait_s) || (*shadow)->credits_pending > 0) continue;
        auto medical = context.ledger.lookup_account(*txn, medical_account(r.asn));
        if (!medical) return Unexpected<Error>{Error{ErrorCode::storage, medical.error().message}};
        page.changes.push_back(carry(context, r, carry_amount(**shadow), *medical ? available_medical(**medical) : 0, now_ns));
    }
    return page;
}

bool submit_change(ledger::Writer& writer, LifecycleChange change, std::function<void(std::string)> done) {
    auto outcome = std::make_shared<std::string>("ok");
    ledger::BatchHook hook = [write = std::move(change.write), outcome](lmdb::Txn& txn,
                                                                        std::span<const ledger::EventResult> results) -> lmdb::Status {
        return write(txn, results, *outcome);
    };
    auto on_commit = [outcome, done = std::move(done)](ledger::Reply reply) {
        done(reply ? *outcome : "storage: " + reply.error().message);
    };
    return writer.try_submit(std::move(change.events), std::move(on_commit), std::move(hook));
}

Result<std::size_t> run_lifecycle_sweep(const LifecycleContext& context, ledger::Writer& writer, std::uint64_t now_ns, Asn& cursor) {
    COCONUT_TRY(page, lifecycle_sweep(context, now_ns, cursor, sweep_records_per_page));
    cursor = page.last_page ? Asn{} : page.next_after;
    std::size_t submitted = 0;
    for (LifecycleChange& change : page.changes) {
        // A refusal here is a race the next tick sees resolved (a second sweep of the same record).
        const bool queued = submit_change(writer, std::move(change), [](const std::string& outcome) {
            if (outcome != "ok") detail::log_line("lifecycle sweep: " + outcome);
        });
        if (!queued) break;  // the writer is busy or stopping: the next tick tries again
        submitted++;
    }
    return submitted;
}

namespace {

// One record against its card and the replacement's holding, read in `txn`.
lmdb::Status check_record(const ledger::Ledger& ledger, const Registry& registry, const lmdb::Txn& txn, const LifecycleRecord& r,
                          std::vector<std::string>& problems) {
    const std::string name = "lifecycle record of card " + bcd_to_digits(r.asn);
    auto card = registry.card_in(txn, r.asn);
    if (!card) return Unexpected<lmdb::Error>{card.error()};
    if (!*card) {
        problems.push_back(name + ": card not registered");
        return Ok{};
    }
    const CardStatus status = (*card)->status;
    if (r.state != CarryState::waiting && status != CardStatus::replaced) {
        problems.push_back(name + ": " + std::string(to_string(r.state)) + " but the card is " + std::string(to_string(status)));
    }
    if (r.state == CarryState::waiting && status == CardStatus::replaced) problems.push_back(name + ": waiting but the card is replaced");
    if (r.state == CarryState::waiting) return Ok{};
    auto holding = ledger.lookup_account(txn, carried_holding_account(r.replaced_by));
    if (!holding) return Unexpected<lmdb::Error>{lmdb::Error{MDB_CORRUPTED, "ledger read", holding.error().message}};
    if (!*holding || (*holding)->code != account_codes::carried_holding) {
        problems.push_back(name + ": no carried holding account for its replacement " + bcd_to_digits(r.replaced_by));
    }
    return Ok{};
}

}  // namespace

Result<std::vector<std::string>> check_lifecycle(const ledger::Ledger& ledger, const Registry& registry, const Lifecycle& lifecycle) {
    auto storage = [](const std::string& what) { return Unexpected<Error>{Error{ErrorCode::storage, what}}; };
    auto txn = ledger.begin_read();
    if (!txn) return storage(txn.error().message);
    std::vector<std::string> problems;
    std::size_t replaced_seen = 0;
    for (Asn after{};;) {
        auto page = lifecycle.records_in(*txn, after, sweep_records_per_page);
        if (!page) return storage(page.error().message());
        for (const LifecycleRecord& r : *page) {
            if (auto checked = check_record(ledger, registry, *txn, r, problems); !checked) return storage(checked.error().message());
            replaced_seen += r.state != CarryState::waiting ? 1 : 0;
        }
        if (page->size() < sweep_records_per_page) break;
        after = page->back().asn;
    }
    auto cards = registry.cards();
    if (!cards) return Unexpected<Error>{cards.error()};
    const auto replaced = static_cast<std::size_t>(
        std::count_if(cards->begin(), cards->end(), [](const CardRecord& c) { return c.status == CardStatus::replaced; }));
    if (replaced != replaced_seen) {
        problems.push_back(fmt::format("{} cards are replaced but {} lifecycle records name a replacement", replaced, replaced_seen));
    }
    return problems;
}

}  // namespace coconut::clearing
