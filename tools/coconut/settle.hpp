// The night after the island day, as the settlement clerk runs it: `coconut-settle run` (the real CLI) against
// the LIVE clearing daemon, reading its ledger read-only and posting the payout and fee transfers through
// `POST /v1/clerk/transfers` with a settlement-role clerk token; a second run posts nothing new. Then the
// bank's side is played: one camt.053 statement per debtor account booking every credit transfer of its
// pain.001 (validated against the ISO 20022 XSDs), and `coconut-settle reconcile` matches them.
//
// The cycle is today's business date (Hainan time) with its cut-off at the end of the current minute (after
// every booking of the day). coconut-settle runs a cycle only from cut-off + settling margin (60 s: a booking
// stamped just before the cut-off may still be committing), so this waits for it — 60 to 120 s.
#pragma once

#include "report.hpp"
#include "world.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace coconut::cli {

struct SettlementOutcome {
    std::uint32_t cycle = 0;
    std::string date;    // business date YYYY-MM-DD
    std::string cutoff;  // HH:MM UTC+8
    fs::path cycle_dir;
    std::vector<fs::path> pain_files;  // validated against pain.001.001.09.xsd
    std::vector<fs::path> camt_files;  // the bank statements, validated against camt.053.001.08.xsd
    std::size_t payments = 0;
    std::uint64_t paid_fen = 0;
    std::uint64_t fees_fen = 0;                  // fee income in the ledger after posting
    std::uint64_t transfers_posted = 0;          // new transfers of the first `coconut-settle run`
    std::uint64_t second_run_new = 0;            // new transfers of the second run (0: posting is idempotent)
    std::vector<std::string> payables_not_zero;  // after posting, each payable must be 0 (payout + fee)
    std::size_t matched = 0, missing = 0, mismatched = 0, duplicates = 0;
    bool files_valid = false;
    bool reconciled = false;
    double waited_s = 0;       // for the cut-off + settling margin
    std::string summary_text;  // the cycle's summary.txt
    std::string run_output;    // what the first `coconut-settle run` printed
    bool ok() const { return files_valid && reconciled && transfers_posted > 0 && second_run_new == 0 && payables_not_zero.empty(); }
};

// `http_endpoint` HOST:PORT of the serving clearing's HTTP API; `token_file` a settlement clerk's token.
SettlementOutcome settle_live(const WorldPaths& world, const Island& island, const std::string& http_endpoint, const fs::path& token_file,
                              Progress& progress);
// The same with the ledger read from `data` (a cluster: the primary's data directory, on this machine).
SettlementOutcome settle_live(const WorldPaths& world, const Island& island, const std::string& http_endpoint, const fs::path& token_file,
                              Progress& progress, const fs::path& data);

}  // namespace coconut::cli
