// The night after the island day: coconut::settlement runs the cycle over the clearing's ledger (positions,
// fees, pain.001 files validated against the ISO 20022 XSDs, the payout and fee transfers posted into the
// ledger), then the bank's side is played: one camt.053 statement per debtor account, booking every credit
// transfer of its pain.001, and the cycle is reconciled against them.
//
// The clearing must be stopped (the postings go directly into the ledger under the daemon's directory lock).
// The cycle is today's business date (Hainan time) with its cut-off at the end of the current minute: the
// day's bookings were all made before it. settlement::run_cycle waits a settling margin after the cut-off
// for in-flight bookings; with the daemon stopped nothing can land any more, so the run is given
// now = cut-off + margin instead of sleeping through it.
#pragma once

#include "world.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace coconut::cli {

struct SettlementOutcome {
    std::uint32_t cycle = 0;
    fs::path cycle_dir;
    std::vector<fs::path> pain_files;   // validated against pain.001.001.09.xsd
    std::vector<fs::path> camt_files;   // the bank statements, validated against camt.053.001.08.xsd
    std::size_t payments = 0;
    std::uint64_t paid_fen = 0;
    std::uint64_t fees_fen = 0;
    std::uint64_t transfers_posted = 0;
    std::size_t matched = 0, missing = 0, mismatched = 0, duplicates = 0;
    bool files_valid = false;
    bool reconciled = false;
    std::string summary_text;  // the cycle's summary.txt
};

SettlementOutcome settle_and_reconcile(const WorldPaths& world, const Island& island);

}  // namespace coconut::cli
