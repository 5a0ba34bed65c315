// coconut demo: the island's whole day end to end, for a newcomer's first command and for CI.
#include "commands.hpp"
#include "errors.hpp"
#include "report.hpp"
#include "services.hpp"
#include "settle.hpp"
#include "setup.hpp"
#include "verify.hpp"

#include <coconut/durable_file.hpp>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <unistd.h>

#include <iostream>

namespace coconut::cli {

namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

DayOptions day_for(const std::string& size, std::uint64_t seed) {
    DayOptions day;
    day.seed = seed;
    if (size == "small") {  // CI: a few thousand transactions, every fault exercised
        day.cards = 100;
        day.buses = 6;
        day.clinics = 2;
        day.shops = 8;
        day.transactions = 3000;
        day.tear_rate = 0.01;
        day.drop_rate = 0.002;
        return day;
    }
    if (size != "day") fail(exit_codes::usage, "--size must be small or day");
    // 1,000 cards carrying ≥ 100,000 transactions: each card stands for a hundred residents' taps.
    day.cards = 1000;
    day.buses = 40;
    day.clinics = 8;
    day.shops = 60;
    day.transactions = 104'000;
    day.tear_rate = 0.002;
    day.drop_rate = 0.0005;
    return day;
}

// Card images commit with fdatasync on every card command: on tmpfs that is free, on this VM's disk it is a
// 4 ms timer tick. The demo keeps images, PSAMs and queues in /dev/shm when it can (the ledger and the HSM
// store stay on disk, fully durable).
fs::path default_images_dir(const fs::path& dir) {
    std::error_code ec;
    if (fs::is_directory("/dev/shm") && ::access("/dev/shm", W_OK) == 0)
        return fs::path("/dev/shm") / fmt::format("coconut-demo-{:016x}", std::hash<std::string>{}(dir.string()));
    return dir / "media";
}

}  // namespace

int demo(const DemoArgs& args) {
    const auto started = Clock::now();
    const WorldPaths world{fs::absolute(args.dir)};
    if (fs::exists(world.manifest()))
        fail(exit_codes::bad_input, fmt::format("{} already holds an island: remove it or choose another --dir", world.dir.string()));
    DayOptions day_options = day_for(args.size, args.seed);
    day_options.pcsc_taps = args.pcsc_taps;
    const fs::path images = args.images.empty() ? default_images_dir(world.dir) : fs::absolute(args.images);
    std::error_code ec;
    fs::remove_all(images, ec);  // an earlier demo of this directory

    std::cerr << fmt::format("Coconut Card island day ({}): {} cards, {} buses, {} clinics, {} shops, seed {}\n", args.size,
                             day_options.cards, day_options.buses, day_options.clinics, day_options.shops, day_options.seed);
    Services services(world);
    Progress progress("island day");
    auto t0 = Clock::now();
    const SetupReport setup = prepare_island(world, services, images.string(), day_options, progress);
    const double setup_s = since(t0);
    const Island island = load_island(world, "");

    t0 = Clock::now();
    const DayReport day = run_day(world, island, services.clearing(), day_options,
                                  [&](double f, const std::string& text) { progress.update(f, text); });
    progress.done();
    const double day_s = since(t0);
    progress.step(fmt::format("{} card transactions, every queue uploaded ({:.1f} s, uploads {:.1f} s)", day.transactions, day_s,
                              day.upload_seconds));

    t0 = Clock::now();
    if (const int code = services.stop_clearing(); code != 0)
        fail(exit_codes::tool_failed, fmt::format("coconut-clearingd exited {} at stop", code));
    const Verification verification = verify_island(world, island);
    const double verify_s = since(t0);
    progress.step(fmt::format("ledger check {} , cards = shadows {}/{}, money {}", verification.ledger_check_ok ? "ok" : "FAILED",
                              verification.cards_checked - verification.card_mismatches.size(), verification.cards_checked,
                              verification.purse_total_fen == 0 && verification.medical_total_fen == 0 ? "conserved" : "NOT conserved"));

    t0 = Clock::now();
    const SettlementOutcome settlement = settle_and_reconcile(world, island);
    const Verification after = verify_island(world, island);
    const double settle_s = since(t0);
    progress.step(fmt::format("settlement cycle {}: {} payments in {} pain.001 files ({}), {} transfers posted; bank statements "
                              "reconciled: {} matched, {} missing, {} mismatched",
                              settlement.cycle, settlement.payments, settlement.pain_files.size(),
                              settlement.files_valid ? "valid against the XSD" : "INVALID", settlement.transfers_posted,
                              settlement.matched, settlement.missing, settlement.mismatched));
    const bool all_ok = verification.ok() && after.ok() && settlement.files_valid && settlement.reconciled;

    const double total_s = since(started);
    std::cout << "\n";
    print_day(std::cout, day);
    print_verification(std::cout, verification, args.size == "small");
    std::cout << fmt::format("Settlement (cycle {}): {} payouts {} to {} participants' banks, fees {}; pain.001 {}; camt.053 "
                             "reconciliation {} ({} matched, {} missing, {} mismatched, {} duplicates); after posting: cards = "
                             "shadows {}, ledger check {}, money {}\n",
                             settlement.cycle, settlement.payments, format_fen(static_cast<std::int64_t>(settlement.paid_fen)),
                             settlement.payments, format_fen(static_cast<std::int64_t>(settlement.fees_fen)),
                             settlement.files_valid ? "valid" : "INVALID", settlement.reconciled ? "complete" : "INCOMPLETE",
                             settlement.matched, settlement.missing, settlement.mismatched, settlement.duplicates,
                             after.card_mismatches.empty() ? "ok" : "MISMATCH", after.ledger_check_ok ? "ok" : "FAILED",
                             after.purse_total_fen == 0 && after.medical_total_fen == 0 ? "conserved" : "NOT conserved");
    std::cout << fmt::format("Timings: setup (ceremony, {} cards, {} PSAMs, registry) {:.1f} s · day {:.1f} s ({:.0f} transactions/s, "
                             "uploads {:.1f} s) · verification {:.1f} s · settlement + reconciliation {:.1f} s · total {:.1f} s\n",
                             setup.cards_issued, setup.terminals, setup_s, day_s, static_cast<double>(day.transactions) / day_s,
                             day.upload_seconds, verify_s, settle_s, total_s);
    std::cout << fmt::format("Files: island {} · images, PSAMs, queues {} · ledger {} · transaction log {} (sha256 {:.16}…) · "
                             "settlement {} · bank statements {}\n",
                             world.dir.string(), setup.images_dir.string(), world.clearing_data().string(),
                             day.transaction_log.string(), day.digest, settlement.cycle_dir.string(), (world.dir / "bank").string());
    std::cout << setup.tokens << "\n";

    const json summary{{"size", args.size},
                       {"seed", args.seed},
                       {"dir", world.dir.string()},
                       {"images_dir", setup.images_dir.string()},
                       {"day", day_json(day)},
                       {"verification", verification_json(verification)},
                       {"after_settlement", verification_json(after)},
                       {"settlement", {{"cycle", settlement.cycle}, {"cycle_dir", settlement.cycle_dir.string()},
                                       {"payments", settlement.payments}, {"paid_fen", settlement.paid_fen}, {"fees_fen", settlement.fees_fen},
                                       {"transfers_posted", settlement.transfers_posted}, {"files_valid", settlement.files_valid},
                                       {"matched", settlement.matched}, {"missing", settlement.missing},
                                       {"mismatched", settlement.mismatched}, {"duplicates", settlement.duplicates},
                                       {"reconciled", settlement.reconciled}}},
                       {"ok", all_ok},
                       {"timings_s", {{"setup", setup_s}, {"day", day_s}, {"uploads", day.upload_seconds}, {"verification", verify_s}, {"settlement", settle_s}, {"total", total_s}}}};
    const std::string text = summary.dump(1) + "\n";
    if (const auto error = write_file_atomically(world.dir / "summary.json", ByteView(reinterpret_cast<const std::uint8_t*>(text.data()), text.size()));
        !error.empty())
        fail(exit_codes::io_error, error);
    return all_ok ? exit_codes::ok : exit_codes::check_failed;
}

}  // namespace coconut::cli
