// The card lifecycle's operations (clearing/README.md "Card lifecycle"): report a card lost, undo it
// (found), replace it by a new card of the same person, and the writer sweep that carries a replaced
// card's balance to the new card after the waiting period. Each operation is a LifecycleChange — the
// ledger events and the registry writes of ONE commit — which the caller submits to the ledger writer:
// the HTTP API with its clerk journal entry (clerk routes and the cardholder's), the daemon's sweep on
// its own.
//
// Rules (every one checked again inside the commit, where nothing can change under it):
//   report lost   an active card → lost (hotlist entry in the same commit), a lifecycle record
//                 `waiting`. A card a clerk hotlisted as lost earlier gets its record now.
//   found         only `waiting` (not replaced) and before reported_ns + wait: → active, record deleted.
//   replace       the lost (or still active) card → replaced; the new card must be registered, active,
//                 not another's replacement and not another person's card; the SSN's hash must be the
//                 lost card's holder's. The medical balance (posted minus pending holds) moves at once
//                 (transfer 13); the new card's carried holding account (code 15) is opened.
//   carry         (sweep) `pending` records at reported_ns + wait, once no load of the lost card waits
//                 for its 0220: its posted shadow balance → the new card's carried holding (transfer
//                 11), and what the old medical account freed since (transfer 13 "rest").
//   repair        (sweep) a carried card whose shadow went below zero (a purchase booked on the shadow
//                 while its carry was in flight): transfer 12 lost late spending → lost shadow.
// Ids are derived from the lost card (plan.hpp), so a retried request or sweep never moves money twice.
#pragma once

#include <coconut/clearing/engine.hpp>
#include <coconut/clearing/lifecycle.hpp>
#include <coconut/clearing/registry.hpp>
#include <coconut/ledger/ledger.hpp>

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

namespace coconut::clearing {

struct LifecycleChange {
    std::vector<ledger::Event> events;
    // Runs in the commit after the events; an expected refusal sets `outcome` (anything but "ok") and
    // writes nothing. An error return is for storage failures only.
    std::function<lmdb::Status(lmdb::Txn&, std::span<const ledger::EventResult>, std::string& outcome)> write;
};

struct LifecycleContext {
    const ledger::Ledger& ledger;
    const Registry& registry;
    const Lifecycle& lifecycle;
    std::uint64_t wait_s = lost_wait_s_default;
};

LifecycleChange report_lost(const LifecycleContext& context, const Asn& asn, Reporter reporter, std::string reported_by,
                            std::uint64_t now_ns);
LifecycleChange report_found(const LifecycleContext& context, const Asn& asn, std::uint64_t now_ns);
// Refused before anything is submitted (the message says why) when the snapshot already shows the
// request cannot succeed; `ssn` is the keyed hash of the SSN the counter read off the ID document.
coconut::Result<LifecycleChange, std::string> replace_card(const LifecycleContext& context, const Asn& lost, const Asn& replacement,
                                                           const SsnHash& ssn, std::uint64_t now_ns);

// The sweep: the changes due now among at most `limit` records after `after` (a page; the caller keeps
// the cursor in `next_after`, empty past the last record).
struct SweepPage {
    std::vector<LifecycleChange> changes;
    Asn next_after{};
    bool last_page = true;
};
Result<SweepPage> lifecycle_sweep(const LifecycleContext& context, std::uint64_t now_ns, const Asn& after, std::size_t limit);
inline constexpr std::size_t sweep_records_per_page = 256;  // one sweep tick reads at most this many records

// Submits a change to the ledger writer on its own (no clerk journal entry: the sweep's, the tests');
// `done` gets the outcome ("ok", the refusal, or "storage: …") on the writer's thread. False when the
// writer's queue is full or it is stopping (`done` is not called).
bool submit_change(ledger::Writer& writer, LifecycleChange change, std::function<void(std::string)> done);
// One sweep tick: the next page after `cursor` (which moves on, and back to the start after the last
// page), each change due submitted. Returns how many were submitted.
Result<std::size_t> run_lifecycle_sweep(const LifecycleContext& context, ledger::Writer& writer, std::uint64_t now_ns, Asn& cursor);

// The lifecycle records against the registry and the ledger (`coconut-clearingd check` adds them to its
// report): each record's card is registered and lost / replaced as its state says, a replaced card has a
// record naming its replacement, and that replacement's carried holding account exists. Returns the
// problems found (empty: consistent).
Result<std::vector<std::string>> check_lifecycle(const ledger::Ledger& ledger, const Registry& registry, const Lifecycle& lifecycle);

// A lost card's purse balance as the carry would move it now: posted credits minus posted and pending
// debits of its shadow account (0 when missing).
std::int64_t carry_amount(const ledger::Account& shadow);
// When a record's carry is due (reported_ns + wait).
std::uint64_t carry_due_ns(const LifecycleRecord& record, std::uint64_t wait_s);

}  // namespace coconut::clearing
