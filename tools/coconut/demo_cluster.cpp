// coconut demo --cluster: the island's day with the clearing as a cluster (cluster.hpp), the primary
// SIGKILLed mid-day and brought back as a standby; the night as in `coconut demo`, against whichever node
// is primary; then every node's copy checked: the same journal head, check ok, cards = shadows, money
// conserved, no acknowledged debit missing.
#include "cardholder_api.hpp"
#include "cluster.hpp"
#include "commands.hpp"
#include "demo.hpp"
#include "errors.hpp"
#include "report.hpp"
#include "services.hpp"
#include "setup.hpp"
#include "verify.hpp"

#include <coconut/core/durable_file.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <iostream>

namespace coconut::cli {

namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

// One node's copy after a stop: check --json, the island's checks over it, the day's debits looked up.
struct NodeCopy {
    NodeCheck check;
    Verification verification;
    std::size_t debits = 0;
    std::size_t missing = 0;
    bool ok() const { return check.ok && verification.ok() && missing == 0; }
};

std::vector<NodeCopy> check_copies(const ClearingCluster& cluster, const Island& island, const fs::path& transaction_log) {
    std::vector<NodeCopy> copies;
    for (std::size_t i = 0; i < ClearingCluster::nodes_count; ++i) {
        NodeCopy copy;
        copy.check = cluster.check(i);
        copy.verification = verify_island(island, cluster.data(i));
        std::tie(copy.debits, copy.missing) = missing_debits(island, transaction_log, cluster.data(i));
        copies.push_back(std::move(copy));
    }
    return copies;
}

bool heads_equal(const std::vector<NodeCopy>& copies) {
    return std::all_of(copies.begin(), copies.end(), [&](const NodeCopy& c) {
        return c.check.journal_sequence == copies.front().check.journal_sequence &&
               c.check.journal_hash == copies.front().check.journal_hash &&
               c.check.replicated_position == copies.front().check.replicated_position;
    });
}

json copies_json(const std::vector<NodeCopy>& copies) {
    json out = json::array();
    for (const auto& c : copies)
        out.push_back({{"node", c.check.node},
                       {"check_ok", c.check.ok},
                       {"journal_head", c.check.journal_sequence},
                       {"journal_hash", c.check.journal_hash},
                       {"replicated_position", c.check.replicated_position},
                       {"card_mismatches", c.verification.card_mismatches.size()},
                       {"money_conserved", c.verification.purse_total_fen == 0 && c.verification.medical_total_fen == 0},
                       {"debits", c.debits},
                       {"acknowledged_missing", c.missing},
                       {"ok", c.ok()}});
    return out;
}

void print_copies(std::ostream& out, const std::string& when, const std::vector<NodeCopy>& copies) {
    out << fmt::format("Cluster {}: journal heads {}\n", when, heads_equal(copies) ? "equal on every node" : "DIFFER");
    for (const auto& c : copies)
        out << fmt::format(
            "  node {}: journal entry {} ({:.16}…), stream position {}, check {}, cards = shadows {}/{}, money {}, "
            "acknowledged debits missing {} of {}\n",
            c.check.node, c.check.journal_sequence, c.check.journal_hash, c.check.replicated_position, c.check.ok ? "ok" : "FAILED",
            c.verification.cards_checked - c.verification.card_mismatches.size(), c.verification.cards_checked,
            c.verification.purse_total_fen == 0 && c.verification.medical_total_fen == 0 ? "conserved" : "NOT conserved", c.missing,
            c.debits);
}

bool all_ok(const std::vector<NodeCopy>& copies) {
    return heads_equal(copies) && std::all_of(copies.begin(), copies.end(), [](const NodeCopy& c) { return c.ok(); });
}

json failovers_json(const std::vector<Failover>& failovers) {
    json out = json::array();
    for (const auto& f : failovers) out.push_back({{"killed", f.killed}, {"took_over", f.took_over}, {"served_after_s", f.served_after_s}});
    return out;
}

// The cardholder API as cardholders use it, on every node: the primary, and each standby from its own copy
// (its answers carry how far it has applied). One check: every node's problems, named by node.
TokenCheck cardholder_api_everywhere(const WorldPaths& world, const Island& island, const ClearingCluster& cluster) {
    TokenCheck all;
    for (std::size_t i = 0; i < ClearingCluster::nodes_count; ++i) {
        const TokenCheck node = check_card_tokens(world, island, cluster.http_port(i), 5);
        all.token_files = node.token_files;
        all.cards_checked += node.cards_checked;
        for (const auto& problem : node.problems) all.problems.push_back("node " + cluster.name(i) + ": " + problem);
    }
    return all;
}

// The day on the cluster: every terminal with the three endpoints, the primary killed mid-day (and every
// `every_s` if set), restarted as a standby.
DayReport cluster_day(const WorldPaths& world, const Island& island, ClearingCluster& cluster, const DayOptions& options, double every_s,
                      Progress& progress) {
    ClearingUnderTest under_test;
    under_test.endpoints = cluster.endpoints();
    under_test.strike = [&cluster] { cluster.kill_primary(); };
    under_test.strike_every_s = every_s;
    under_test.strike_mid_day = true;
    under_test.after_day = [&cluster] { cluster.wait_primary(); };
    return run_day(world, island, under_test, options, [&](double f, const std::string& text) { progress.update(f, text); });
}

}  // namespace

int demo_cluster(const DemoArgs& args) {
    const auto started = Clock::now();
    const WorldPaths world{fs::absolute(args.dir)};
    if (fs::exists(world.manifest()))
        fail(exit_codes::bad_input, fmt::format("{} already holds an island: remove it or choose another --dir", world.dir.string()));
    if (args.pcsc_taps > 0) fail(exit_codes::usage, "--pcsc-taps is not combined with --cluster");
    DayOptions day_options = demo_day(args.size, args.seed);
    // The cluster's day is the residents' day (the airport counter's clerk calls go to one node's HTTP API:
    // the single-node demo shows them).
    day_options.tourists = 0;
    day_options.lost_cards = 0;
    // Same-day refunds neither: a refund during a failover goes unanswered (the single-node demo shows them).
    day_options.clinic_refund_every = 0;
    const fs::path images = args.images.empty() ? demo_images_dir(world.dir) : fs::absolute(args.images);
    std::error_code ec;
    fs::remove_all(images, ec);
    std::cerr << fmt::format(
        "Coconut Card island day on a clearing cluster ({}): {} cards, {} buses, {} clinics, {} shops, seed {}; 3 nats-server, 3 "
        "coconut-clearingd\n",
        args.size, day_options.cards, day_options.buses, day_options.clinics, day_options.shops, day_options.seed);
    Services services(world, true);
    Progress progress("island day");
    auto t0 = Clock::now();
    const SetupReport setup = prepare_island(world, services, images.string(), day_options, progress, true);
    // The registered island in D/clearing seeds every node: stopped first (a copy of a stopped directory).
    if (const int code = services.stop_clearing(); code != 0)
        fail(exit_codes::tool_failed, fmt::format("coconut-clearingd exited {} at stop", code));
    ClearingCluster cluster(world, {world.clearing_data(), services.hsm().endpoint(), world.clearing_key(), clearing_identity(world)});
    const double setup_s = demo_seconds_since(t0);
    progress.step(fmt::format("cluster up: 3 nats-server (TLS, user clearing), nodes a b c seeded from {}; primary {}",
                              world.clearing_data().string(), cluster.name(cluster.wait_primary())));
    const Island island = load_island(world, "");

    t0 = Clock::now();
    const DayReport day = cluster_day(world, island, cluster, day_options, args.kill_primary_every_s, progress);
    progress.done();
    const double day_s = demo_seconds_since(t0);
    const std::vector<Failover> failovers = cluster.failovers();
    for (const auto& f : failovers)
        progress.step(
            fmt::format("failover: node {} SIGKILLed, node {} primary, terminals served again after {:.2f} s (node {} back as a standby)",
                        f.killed, f.took_over, f.served_after_s, f.killed));
    progress.step(fmt::format("{} card transactions, every queue uploaded across the three nodes ({:.1f} s; {} terminal link failovers)",
                              day.transactions, day_s, day.link_failovers));

    t0 = Clock::now();
    cluster.wait_applied();
    const std::string primary = cluster.name(cluster.wait_stable_primary());
    const TokenCheck tokens = cardholder_api_everywhere(world, island, cluster);
    progress.step(
        fmt::format("cardholder API on every node (primary {}, the standbys from their copies): {} cards asked with their own "
                    "token, another's and none — {}",
                    primary, tokens.cards_checked, tokens.ok() ? "ok" : "FAILED"));
    if (const int code = cluster.stop_nodes(); code != 0)
        fail(exit_codes::tool_failed, fmt::format("a clearing node exited {} at stop", code));
    const std::vector<NodeCopy> day_copies = check_copies(cluster, island, day.transaction_log);
    const double verify_s = demo_seconds_since(t0);
    progress.step(
        fmt::format("every node's copy: {}",
                    all_ok(day_copies) ? "same journal head, check ok, cards = shadows, money conserved, nothing missing" : "FAILED"));

    t0 = Clock::now();
    cluster.start_nodes();
    const std::string settle_http = cluster.primary_http();
    const SettlementOutcome settlement = settle_live(world, island, settle_http, setup.settlement_token, progress, cluster.primary_data());
    progress.step(fmt::format("coconut-settle against the primary http://{}: {} transfers posted, a second run {}, reconciliation {}",
                              settle_http, settlement.transfers_posted, settlement.second_run_new,
                              settlement.reconciled ? "complete" : "INCOMPLETE"));
    cluster.wait_applied();
    if (const int code = cluster.stop_nodes(); code != 0)
        fail(exit_codes::tool_failed, fmt::format("a clearing node exited {} at stop", code));
    const std::vector<NodeCopy> night_copies = check_copies(cluster, island, day.transaction_log);
    const double settle_s = demo_seconds_since(t0);
    const bool ok = all_ok(day_copies) && all_ok(night_copies) && tokens.ok() && settlement.ok() && !failovers.empty();

    std::cout << "\n";
    print_day(std::cout, day);
    std::cout << fmt::format("Failovers ({}):\n", failovers.size());
    for (const auto& f : failovers)
        std::cout << fmt::format("  node {} SIGKILLed → node {} primary; terminals served again after {:.2f} s\n", f.killed, f.took_over,
                                 f.served_after_s);
    std::cout << fmt::format("Terminal links that moved to another node: {}; clearing nodes that exited by themselves (started again): {}\n",
                             day.link_failovers, cluster.unexpected_exits());
    print_copies(std::cout, "after the day", day_copies);
    std::cout << fmt::format(
        "Cardholder API on every node (the primary, and each standby from its own copy): {} cards asked (own token = the card's "
        "balance, another's 404, none 401): {}\n",
        tokens.cards_checked, tokens.ok() ? "ok" : "FAILED");
    for (const auto& problem : tokens.problems) std::cout << "  " << problem << "\n";
    std::cout << fmt::format(
        "Settlement (coconut-settle, cycle {}, posted through the primary's clerk API): {} payouts {}, {} transfers posted, a second run "
        "posted {}; payables {}; pain.001 {}; camt.053 reconciliation {} ({} matched)\n",
        settlement.cycle, settlement.payments, format_fen(static_cast<std::int64_t>(settlement.paid_fen)), settlement.transfers_posted,
        settlement.second_run_new, settlement.payables_not_zero.empty() ? "0" : "NOT 0", settlement.files_valid ? "valid" : "INVALID",
        settlement.reconciled ? "complete" : "INCOMPLETE", settlement.matched);
    print_copies(std::cout, "after settlement", night_copies);
    std::cout << fmt::format(
        "Timings: setup + cluster {:.1f} s · day {:.1f} s · checks {:.1f} s · settlement + checks {:.1f} s · total {:.1f} s\n", setup_s,
        day_s, verify_s, settle_s, demo_seconds_since(started));
    std::cout << fmt::format("Files: island {} · cluster {} (NATS configs, certificates, node data, status files) · logs {}\n",
                             world.dir.string(), (world.dir / "cluster").string(), world.logs().string());
    std::cout << (ok ? "Cluster day: ok\n" : "Cluster day: FAILED\n");

    const json summary{{"size", args.size},
                       {"seed", args.seed},
                       {"dir", world.dir.string()},
                       {"cluster",
                        {{"nodes", ClearingCluster::nodes_count},
                         {"nats_servers", 3},
                         {"failovers", failovers_json(failovers)},
                         {"link_failovers", day.link_failovers},
                         {"unexpected_exits", cluster.unexpected_exits()},
                         {"after_day", copies_json(day_copies)},
                         {"after_settlement", copies_json(night_copies)},
                         {"heads_equal", heads_equal(day_copies) && heads_equal(night_copies)}}},
                       {"day", day_json(day)},
                       {"verification", verification_json(day_copies.front().verification)},
                       {"after_settlement", verification_json(night_copies.front().verification)},
                       {"tokens", {{"cards_checked", tokens.cards_checked}, {"problems", tokens.problems}, {"ok", tokens.ok()}}},
                       {"settlement", settlement_json(settlement)},
                       {"ok", ok},
                       {"timings_s",
                        {{"setup", setup_s},
                         {"day", day_s},
                         {"verification", verify_s},
                         {"settlement", settle_s},
                         {"total", demo_seconds_since(started)}}}};
    const std::string text = summary.dump(1) + "\n";
    if (auto written =
            write_file_atomically(world.dir / "summary.json", ByteView(reinterpret_cast<const std::uint8_t*>(text.data()), text.size()));
        !written)
        fail(exit_codes::io_error, written.error().message());
    return ok ? exit_codes::ok : exit_codes::check_failed;
}

}  // namespace coconut::cli
