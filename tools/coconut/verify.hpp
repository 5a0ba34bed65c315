// What the island's books say after a day, checked against the cards themselves.
//
//   - every card image's balance equals its purse shadow in the clearing (registry mirror and ledger);
//   - `coconut-clearingd check`: every ledger and registry invariant;
//   - no money created or lost: Σ card balances (read from the images, not the shadows) + Σ tourist card
//     deposits + Σ refunds owed to cardholders + Σ carried balances of replacement cards + lost cards' late
//     spending + Σ participant payables + purse float + fee income +
//     suspense = 0 on the purse ledger, and Σ medical accounts +
//     clinic payables + medical fund + fee income + suspense = 0 on the medical ledger (balances signed
//     credits − debits: the float is negative by what was prepaid).
// Reads the clearing data directory with the daemon stopped (it takes the daemon's directory lock).
#pragma once

#include "world.hpp"

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace coconut::cli {

struct MoneyLine {
    std::string name;
    std::int64_t purse_fen = 0;
    std::int64_t medical_fen = 0;
};

struct Verification {
    std::size_t cards_checked = 0;
    std::vector<std::string> card_mismatches;  // "ASN: card 1200, shadow 1400"
    bool ledger_check_ok = false;
    std::string ledger_check_summary;
    std::vector<MoneyLine> money;  // cards, each participant, float/fund, fees, suspense
    std::int64_t purse_total_fen = 0;
    std::int64_t medical_total_fen = 0;
    std::size_t risk_flags = 0;
    std::map<std::string, std::size_t> risk_by_kind;
    bool ok() const { return card_mismatches.empty() && ledger_check_ok && purse_total_fen == 0 && medical_total_fen == 0; }
};

Verification verify_island(const WorldPaths& world, const Island& island);
// The same over another data directory (a cluster node's copy).
Verification verify_island(const Island& island, const fs::path& data);

// Card debits of the day's transaction log (every line but top-ups and the medical part of clinic
// visits; each was acknowledged, since every queue emptied) that the ledger in `data` does not hold:
// looked up by their offline purchase id (ASN, PSAM terminal id, terminal serial). Needs the directory
// unserved (its lock). Returns {debits in the log, missing}.
std::pair<std::size_t, std::size_t> missing_debits(const Island& island, const fs::path& transaction_log, const fs::path& data);

// `coconut-clearingd check --data DIR`: (exit code, its report).
std::pair<int, std::string> ledger_check(const fs::path& data_dir);

}  // namespace coconut::cli
