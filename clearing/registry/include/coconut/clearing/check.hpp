// `coconut-clearingd check`: the ledger's invariants and the registries' against it.
#pragma once

#include <coconut/clearing/registry.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace coconut::clearing {

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

}  // namespace coconut::clearing
