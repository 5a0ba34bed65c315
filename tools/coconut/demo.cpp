// coconut demo: the island's whole day end to end, for a newcomer's first command and for CI.
#include "demo.hpp"

#include "commands.hpp"
#include "cardholder_api.hpp"
#include "errors.hpp"
#include "report.hpp"
#include "services.hpp"
#include "settle.hpp"
#include "setup.hpp"
#include "verify.hpp"

#include <coconut/core/durable_file.hpp>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <unistd.h>

#include <iostream>

namespace coconut::cli {

namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

}  // namespace

double demo_seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

DayOptions demo_day(const std::string& size, std::uint64_t seed) {
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
        day.tourists = 12;
        day.lost_cards = 1;
        day.clinic_refund_every = 4;
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
    day.tourists = 60;
    day.lost_cards = 1;
    day.clinic_refund_every = 16;
    return day;
}

// Card images commit with fdatasync on every card command: on tmpfs that is free, on this VM's disk it is a
// 4 ms timer tick. The demo keeps images, PSAMs and queues in /dev/shm when it can (the ledger and the HSM
// store stay on disk, fully durable).
fs::path demo_images_dir(const fs::path& dir) {
    if (fs::is_directory("/dev/shm") && ::access("/dev/shm", W_OK) == 0)
        return fs::path("/dev/shm") / fmt::format("coconut-demo-{:016x}", std::hash<std::string>{}(dir.string()));
    return dir / "media";
}

json settlement_json(const SettlementOutcome& settlement) {
    return {{"cycle", settlement.cycle},
            {"cycle_dir", settlement.cycle_dir.string()},
            {"date", settlement.date},
            {"cutoff", settlement.cutoff},
            {"waited_s", settlement.waited_s},
            {"second_run_new", settlement.second_run_new},
            {"payables_not_zero", settlement.payables_not_zero},
            {"payments", settlement.payments},
            {"paid_fen", settlement.paid_fen},
            {"fees_fen", settlement.fees_fen},
            {"transfers_posted", settlement.transfers_posted},
            {"files_valid", settlement.files_valid},
            {"matched", settlement.matched},
            {"missing", settlement.missing},
            {"mismatched", settlement.mismatched},
            {"duplicates", settlement.duplicates},
            {"reconciled", settlement.reconciled}};
}

int demo(const DemoArgs& args) {
    if (args.cluster) return demo_cluster(args);
    const auto started = Clock::now();
    const WorldPaths world{fs::absolute(args.dir)};
    if (fs::exists(world.manifest()))
        fail(exit_codes::bad_input, fmt::format("{} already holds an island: remove it or choose another --dir", world.dir.string()));
    DayOptions day_options = demo_day(args.size, args.seed);
    day_options.pcsc_taps = args.pcsc_taps;
    const fs::path images = args.images.empty() ? demo_images_dir(world.dir) : fs::absolute(args.images);
    std::error_code ec;
    fs::remove_all(images, ec);  // an earlier demo of this directory

    std::cerr << fmt::format("Coconut Card island day ({}): {} cards, {} buses, {} clinics, {} shops, seed {}\n", args.size,
                             day_options.cards, day_options.buses, day_options.clinics, day_options.shops, day_options.seed);
    Services services(world, true);
    Progress progress("island day");
    auto t0 = Clock::now();
    const SetupReport setup = prepare_island(world, services, images.string(), day_options, progress, true);
    const double setup_s = demo_seconds_since(t0);
    const Island island = load_island(world, "");

    t0 = Clock::now();
    const ServiceDesk desk{services.hsm().endpoint(), world.counter_key(), [&services] { return services.clearing_http_port(); },
                           setup.counter_token};
    const DayReport day = run_day(
        world, island, services.clearing(), day_options, [&](double f, const std::string& text) { progress.update(f, text); }, desk);
    progress.done();
    const double day_s = demo_seconds_since(t0);
    progress.step(fmt::format("{} card transactions, every queue uploaded ({:.1f} s, uploads {:.1f} s)", day.transactions, day_s,
                              day.upload_seconds));
    progress.step(
        fmt::format("airport counter: {} tourist cards sold, {} returned (whole-balance debit, APPLICATION BLOCK, cash), "
                    "{} still out (dormancy report)",
                    day.tourists.sold, day.tourists.returned, day.tourists.dormant.size()));
    const auto fen = [](std::uint64_t v) { return format_fen(static_cast<std::int64_t>(v)); };
    progress.step(fmt::format("clinics: {} visits refunded the same day (medical {} back, purse {} to the cards, {} in cash)",
                              day.clinic_refunds.refunded, fen(day.clinic_refunds.medical_fen), fen(day.clinic_refunds.purse_to_card_fen),
                              fen(day.clinic_refunds.purse_cash_fen)));

    // The cardholder's view, from the running daemon.
    t0 = Clock::now();
    const TokenCheck tokens = check_card_tokens(world, island, services.clearing_http_port(), 5);
    progress.step(
        fmt::format("cardholder API http://{}: {} token files (0600); {} cards asked: own token shows the card's balance, "
                    "another card's token 404, none 401 — {}",
                    services.clearing_http(), tokens.token_files, tokens.cards_checked, tokens.ok() ? "ok" : "FAILED"));

    // The day's books with the daemon stopped (its directory lock): check, cards = shadows, conservation.
    if (const int code = services.stop_clearing(); code != 0)
        fail(exit_codes::tool_failed, fmt::format("coconut-clearingd exited {} at stop", code));
    const Verification verification = verify_island(world, island);
    const double verify_s = demo_seconds_since(t0);
    progress.step(fmt::format("ledger check {} , cards = shadows {}/{}, money {}", verification.ledger_check_ok ? "ok" : "FAILED",
                              verification.cards_checked - verification.card_mismatches.size(), verification.cards_checked,
                              verification.purse_total_fen == 0 && verification.medical_total_fen == 0 ? "conserved" : "NOT conserved"));

    // The night: coconut-settle against the serving daemon, then the bank's statements reconciled.
    t0 = Clock::now();
    services.clearing();
    progress.step(fmt::format("coconut-clearingd serving again (ISO 8583 {}, HTTP {}) for the settlement clerk",
                              services.clearing().endpoint(), services.clearing_http()));
    const SettlementOutcome settlement = settle_live(world, island, services.clearing_http(), setup.settlement_token, progress);
    progress.step(fmt::format(
        "coconut-settle run (cycle {}, cut-off {} UTC+8, run after waiting {:.0f} s for cut-off + settling margin): {} payments in {} pain.001 "
        "files ({}), {} transfers posted through POST /v1/clerk/transfers, a second run posted {}; payables {}; "
        "coconut-settle reconcile: {} matched, {} missing, {} mismatched",
        settlement.cycle, settlement.cutoff, settlement.waited_s, settlement.payments, settlement.pain_files.size(),
        settlement.files_valid ? "valid against the XSD" : "INVALID", settlement.transfers_posted, settlement.second_run_new,
        settlement.payables_not_zero.empty() ? "all zero" : "NOT zero", settlement.matched, settlement.missing, settlement.mismatched));
    if (const int code = services.stop_clearing(); code != 0)
        fail(exit_codes::tool_failed, fmt::format("coconut-clearingd exited {} at stop", code));
    const ToolRun coconut_check =
        run_tool({fs::read_symlink("/proc/self/exe").string(), "ledger", "check", "--data", world.clearing_data().string()});
    const Verification after = verify_island(world, island);
    const double settle_s = demo_seconds_since(t0);
    progress.step(fmt::format("after posting: coconut ledger check {}, coconut-clearingd check {}, cards = shadows {}, money {}",
                              coconut_check.exit_code == 0 ? "ok" : "FAILED", after.ledger_check_ok ? "ok" : "FAILED",
                              after.card_mismatches.empty() ? "ok" : "MISMATCH",
                              after.purse_total_fen == 0 && after.medical_total_fen == 0 ? "conserved" : "NOT conserved"));
    const bool all_ok = verification.ok() && after.ok() && tokens.ok() && settlement.ok() && coconut_check.exit_code == 0;

    const double total_s = demo_seconds_since(started);
    std::cout << "\n";
    print_day(std::cout, day);
    print_verification(std::cout, verification, args.size == "small");
    std::cout << fmt::format(
        "Cardholder API: {} token files, all 0600; {} cards asked the running daemon with their own token "
        "(balance = the card's), another card's (404) and none (401): {}\n",
        tokens.token_files, tokens.cards_checked, tokens.ok() ? "ok" : "FAILED");
    for (const auto& problem : tokens.problems) std::cout << "  " << problem << "\n";
    std::cout << fmt::format(
        "Settlement (coconut-settle, cycle {}, cut-off {} UTC+8, posted through the live daemon's clerk API): {} "
        "payouts {}, fees {}; {} settlement transfers posted, a second run posted {}; every participant's "
        "payable {}; pain.001 {}; camt.053 reconciliation {} ({} matched, {} missing, {} mismatched, {} "
        "duplicates); after posting: coconut ledger check {}, cards = shadows {}, ledger check {}, money {}\n",
        settlement.cycle, settlement.cutoff, settlement.payments, format_fen(static_cast<std::int64_t>(settlement.paid_fen)),
        format_fen(static_cast<std::int64_t>(settlement.fees_fen)), settlement.transfers_posted, settlement.second_run_new,
        settlement.payables_not_zero.empty() ? "0 (payout + fee)" : "NOT 0", settlement.files_valid ? "valid" : "INVALID",
        settlement.reconciled ? "complete" : "INCOMPLETE", settlement.matched, settlement.missing, settlement.mismatched,
        settlement.duplicates, coconut_check.exit_code == 0 ? "ok" : "FAILED", after.card_mismatches.empty() ? "ok" : "MISMATCH",
        after.ledger_check_ok ? "ok" : "FAILED",
        after.purse_total_fen == 0 && after.medical_total_fen == 0 ? "conserved" : "NOT conserved");
    for (const auto& payable : settlement.payables_not_zero) std::cout << "  payable left: " << payable << "\n";
    std::cout << fmt::format(
        "Timings: setup (ceremony, {} cards, {} PSAMs, registry) {:.1f} s · day {:.1f} s ({:.0f} transactions/s, "
        "uploads {:.1f} s) · API check + verification {:.1f} s · settlement + reconciliation {:.1f} s (of which {:.1f} s "
        "waiting for cut-off + settling margin) · total {:.1f} s\n",
        setup.cards_issued, setup.terminals, setup_s, day_s, static_cast<double>(day.transactions) / day_s, day.upload_seconds, verify_s,
        settle_s, settlement.waited_s, total_s);
    std::cout << fmt::format(
        "Files: island {} · images, PSAMs, queues {} · ledger {} · transaction log {} (sha256 {:.16}…) · "
        "settlement {} · bank statements {} · settlement clerk token {} · logs {}\n",
        world.dir.string(), setup.images_dir.string(), world.clearing_data().string(), day.transaction_log.string(), day.digest,
        settlement.cycle_dir.string(), (world.dir / "bank").string(), setup.settlement_token.string(), world.logs().string());
    std::cout << setup.tokens << "\n";

    const json summary{
        {"size", args.size},
        {"seed", args.seed},
        {"dir", world.dir.string()},
        {"images_dir", setup.images_dir.string()},
        {"day", day_json(day)},
        {"verification", verification_json(verification)},
        {"after_settlement", verification_json(after)},
        {"tokens",
         {{"files", tokens.token_files}, {"cards_checked", tokens.cards_checked}, {"problems", tokens.problems}, {"ok", tokens.ok()}}},
        {"coconut_ledger_check_ok", coconut_check.exit_code == 0},
        {"settlement", settlement_json(settlement)},
        {"ok", all_ok},
        {"timings_s",
         {{"setup", setup_s},
          {"day", day_s},
          {"uploads", day.upload_seconds},
          {"verification", verify_s},
          {"settlement", settle_s},
          {"settling_wait", settlement.waited_s},
          {"total", total_s}}}};
    const std::string text = summary.dump(1) + "\n";
    if (auto written =
            write_file_atomically(world.dir / "summary.json", ByteView(reinterpret_cast<const std::uint8_t*>(text.data()), text.size()));
        !written)
        fail(exit_codes::io_error, written.error().message());
    return all_ok ? exit_codes::ok : exit_codes::check_failed;
}

}  // namespace coconut::cli
