#include "setup.hpp"

#include "certificates.hpp"
#include "errors.hpp"

#include <fmt/format.h>

#include <algorithm>

namespace coconut::cli {

namespace {
double since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

SetupReport prepare_island(const WorldPaths& world, Services& services, const std::string& images, const DayOptions& day,
                           Progress& progress, bool settlement_clerk) {
    SetupReport report;
    auto t0 = std::chrono::steady_clock::now();
    if (!fs::exists(world.hsm_store())) {
        run_ceremony(world, true);
        progress.step(fmt::format("key ceremony: 7 keys from 2 components each, 2 HSM clients ({})", world.keys().string()));
    }
    report.ceremony_s = since(t0);

    t0 = std::chrono::steady_clock::now();
    Island island = load_island(world, images.empty() ? world.dir / "media" : fs::absolute(images));
    if (!images.empty() && fs::absolute(images) != island.images_dir)
        fail(exit_codes::usage, fmt::format("this island keeps its images in {}", island.images_dir.string()));
    report.images_dir = island.images_dir;
    const std::string hsm = services.hsm().endpoint();
    if (island.terminals.empty()) plan_participants_and_terminals(world, island, hsm, day);
    report.terminals = island.terminals.size();
    const auto count = [&island](auto which) {
        return static_cast<std::size_t>(std::count_if(island.cards.begin(), island.cards.end(), which));
    };
    const std::size_t tourists = count([](const CardEntry& c) { return c.tourist; });
    const std::size_t stock = count([](const CardEntry& c) { return c.stock; });
    const std::size_t residents = island.cards.size() - tourists - stock;
    if (residents < day.cards) {
        CardIssueOptions options;
        options.count = day.cards - residents;
        options.seed = day.seed;
        report.cards_issued = issue_cards(world, island, hsm, options).size();
    }
    if (tourists < day.tourists) {  // sold empty at the counter, loaded like any card
        CardIssueOptions options;
        options.count = day.tourists - tourists;
        options.seed = day.seed;
        options.tourist = true;
        options.purse_opening_fen_min = options.purse_opening_fen_max = 0;
        report.tourist_cards_issued = issue_cards(world, island, hsm, options).size();
    }
    if (stock < day.lost_cards) {  // the counter's stock of personalised cards for replacements: empty
        CardIssueOptions options;
        options.count = day.lost_cards - stock;
        options.seed = day.seed;
        options.purse_opening_fen_min = options.purse_opening_fen_max = 0;
        options.medical_opening_fen = 0;  // the lost card's medical balance moves to it
        const std::size_t first = island.cards.size();
        report.stock_cards_issued = issue_cards(world, island, hsm, options).size();
        for (std::size_t i = first; i < island.cards.size(); ++i) island.cards[i].stock = true;
    }
    save_island(world, island);
    report.issue_s = since(t0);
    progress.step(
        fmt::format("issued {} cards, {} tourist (purse-only) cards, {} for the counter's stock and {} PSAMs (keys derived by "
                    "the HSM, under the transport key) into {}",
                    report.cards_issued, report.tourist_cards_issued, report.stock_cards_issued, report.terminals,
                    island.images_dir.string()));
    // Each terminal's TLS certificate (CN = its terminal id), signed by the island CA inside the HSM.
    t0 = std::chrono::steady_clock::now();
    report.certificates_issued = ensure_terminal_certificates(world, island, hsm);
    report.certificates_s = since(t0);
    progress.step(fmt::format("{} terminal certificates issued by the island CA in coconut-hsmd ({} kept) into {}",
                              report.certificates_issued, island.terminals.size() - report.certificates_issued,
                              (island.images_dir / "tls").string()));

    t0 = std::chrono::steady_clock::now();
    register_with_clearing(world, "island", island.participants, island.terminals, island.cards);
    report.tokens = issue_card_tokens(world, island.cards);
    if (settlement_clerk && !fs::exists(world.keys() / "settlement.token"))
        report.settlement_token = add_clerk(world, "settlement", "settlement");
    else if (settlement_clerk) report.settlement_token = world.keys() / "settlement.token";
    if (day.tourists > 0 || day.lost_cards > 0) {  // the airport counter's clerk: sells and takes back cards (role counter)
        report.counter_token = world.keys() / "counter.token";
        if (!fs::exists(report.counter_token)) add_clerk(world, "counter", "counter");
    }
    services.clearing();
    report.register_s = since(t0);
    progress.step(fmt::format("registered {} participants, {} terminals, {} cards at the clearing; {} serving ISO 8583 on {}",
                              island.participants.size(), island.terminals.size(), island.cards.size(), "coconut-clearingd",
                              services.clearing().endpoint()));
    return report;
}

}  // namespace coconut::cli
