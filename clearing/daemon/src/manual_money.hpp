// The two ways a person moves money through the clerk API, and their rules (clearing/README.md
// "Settlement postings" and "Manual adjustments"):
//   - the settlement role posts only what a settlement cycle produces: the daemon recomputes the
//     cycle window's positions with the settlement library (the rule coconut-settle itself uses) and
//     accepts a transfer only when it equals one the daemon derives, field for field;
//   - manual adjustments move money only after a second clerk approved one clerk's proposal, and only
//     between the kinds of accounts no other rule owns.
// Private to the daemon library; the HTTP handlers (api/transfers.cpp, api/adjustments.cpp) journal and commit.
#pragma once

#include <coconut/clearing/http.hpp>
#include <coconut/ledger/ledger.hpp>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace coconut::clearing::http {

// What a settlement request names: the cycle (business date YYYYMMDD) and its window [start, end).
struct CycleClaim {
    std::uint32_t cycle = 0;
    std::uint64_t start_ns = 0;
    std::uint64_t end_ns = 0;
    friend bool operator==(const CycleClaim&, const CycleClaim&) = default;
};

// The window rule: a calendar date, start < end, end at least `margin` in the past (every transfer
// stamped before it has committed), the same window as the cycle's first posting, and a new cycle
// beginning where the latest one ended. nullopt when it holds, else what is wrong.
std::optional<std::string> window_refusal(const CycleClaim& claim, const std::optional<SettlementCycle>& recorded,
                                          const std::optional<SettlementCycle>& latest, std::uint64_t now_ns, std::chrono::seconds margin);

using ExpectedTransfers = std::unordered_map<ledger::Id, ledger::Transfer, ledger::IdHash>;

// The cycle's settlement transfers as the daemon computes them (positions over the window, then
// settlement::settlement_transfers), by id. `unbalanced` positions are an error, never an empty set.
Result<ExpectedTransfers> expected_settlement_transfers(const ledger::Ledger& ledger, const Registry& registry, const CycleClaim& claim);

// nullopt when `posted` equals the expected transfer with its id (amount, accounts, ledger, code,
// flags, user data); else the rule it breaks, naming what the daemon expected.
std::optional<std::string> settlement_refusal(const ledger::Transfer& posted, const ExpectedTransfers& expected, std::uint32_t cycle);

// The accounts an adjustment may move money between: participant payables, the ledger's float or
// fund, card medical accounts (ledger 2). Never a purse shadow (it mirrors the chip: only card
// transactions move it), suspense or review claims (only review records), fee income (only
// settlement). nullopt when `a` may be proposed / approved now, else why not.
Result<std::optional<std::string>> adjustment_refusal(const ledger::Ledger& ledger, const Adjustment& a);

// The transfer an approved adjustment books.
ledger::Transfer adjustment_transfer_of(const Adjustment& a);

}  // namespace coconut::clearing::http
