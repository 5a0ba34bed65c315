#include "commands.hpp"

#include "certificates.hpp"
#include "errors.hpp"
#include "process.hpp"
#include "report.hpp"
#include "services.hpp"
#include "setup.hpp"
#include "verify.hpp"

#include <coconut/cos/card.hpp>
#include <coconut/core/durable_file.hpp>
#include <coconut/sdk/apps.hpp>
#include <coconut/sdk/channel.hpp>
#include <coconut/sdk/reader.hpp>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <iostream>

namespace coconut::cli {

namespace {

using nlohmann::json;

fs::path default_images(const WorldPaths& world, const std::string& images) {
    return images.empty() ? world.dir / "media" : fs::absolute(images);
}

// A running HSM for an issuance command: the one named on the command line, or one started here.
struct HsmAccess {
    HsmAccess(const WorldPaths& world, const std::string& endpoint) : services(world) {
        if (!fs::exists(world.hsm_store()))
            fail(exit_codes::bad_input,
                 fmt::format("{}: no HSM store (run `coconut keys ceremony --dir {}`)", world.hsm_store().string(), world.dir.string()));
        this->endpoint = endpoint.empty() ? services.hsm().endpoint() : endpoint;
    }
    Services services;
    std::string endpoint;
};

}  // namespace

int keys_ceremony(const fs::path& dir) {
    run_ceremony(WorldPaths{fs::absolute(dir)}, false);
    return exit_codes::ok;
}

int card_issue(const CardIssueArgs& args) {
    const WorldPaths world{fs::absolute(args.dir)};
    Island island = load_island(world, default_images(world, args.images));
    HsmAccess hsm(world, args.hsm);
    CardIssueOptions options;
    options.count = args.count;
    options.seed = args.seed;
    options.tourist = args.tourist;
    const auto cards = issue_cards(world, island, hsm.endpoint, options);
    save_island(world, island);
    const json loaded = register_with_clearing(world, fmt::format("cards-{}", island.cards.size()), {}, {}, cards);
    std::cout << fmt::format("issued {} {}cards into {} ({} … {}); registered with the clearing: {}\n", cards.size(),
                             args.tourist ? "tourist (purse-only) " : "", (island.images_dir / "cards").string(), cards.front().asn,
                             cards.back().asn, loaded.dump());
    std::cout << issue_card_tokens(world, island.cards) << "\n";
    return exit_codes::ok;
}

int psam_issue(const fs::path& dir, const std::string& terminal_id, const fs::path& out, const std::string& hsm_endpoint) {
    const WorldPaths world{fs::absolute(dir)};
    HsmAccess hsm(world, hsm_endpoint);
    issue_psam(world, hsm.endpoint, terminal_id, out);
    std::cout << fmt::format("PSAM for terminal {} written to {} (issuer-level purchase key from the HSM)\n", terminal_id, out.string());
    return exit_codes::ok;
}

namespace {

// One line per certificate: what was done, where.
void print_certificate(const std::string& what, const TlsIdentity& identity, const CertificateOutcome& outcome) {
    std::cout << fmt::format("{}: certificate {} (serial {}, valid until {}) in {}: cert.pem, key.pem (0600), ca.pem\n", what,
                             outcome.issued ? "issued by the island CA, " + outcome.reason : outcome.reason, outcome.serial,
                             format_date(outcome.not_after), identity.dir.string());
}

}  // namespace

int terminal_register(const TerminalRegisterArgs& args) {
    // The entries `admin load` will read, checked by the registry's validator before anything is issued.
    const Participant participant{args.participant_id, args.participant_name, args.kind, args.bank_account, args.fee_rate_bp};
    TerminalEntry entry;
    entry.terminal_id = args.terminal_id;
    entry.psam_terminal_id = args.psam_terminal_id;
    entry.participant_id = args.participant_id;
    if (auto bad = registry_entries_problem(registry_entries({participant}, {entry}, {}))) fail(exit_codes::usage, *bad);
    if (!tls::valid_terminal_id(args.terminal_id))
        fail(exit_codes::usage,
             fmt::format("--terminal-id '{}' must be exactly 8 printable characters (ISO 8583 field 41)", args.terminal_id));
    const WorldPaths world{fs::absolute(args.dir)};
    Island island = load_island(world, default_images(world, ""));
    HsmAccess hsm(world, args.hsm);
    const TlsIdentity identity =
        args.tls_dir.empty() ? terminal_identity(island, args.terminal_id) : TlsIdentity{fs::absolute(args.tls_dir)};
    const CertificateOrder order{tls::Profile::terminal, args.terminal_id, {}, args.validity_days, args.renew_within_days};
    const bool registered = std::any_of(island.terminals.begin(), island.terminals.end(),
                                        [&](const TerminalEntry& t) { return t.terminal_id == args.terminal_id; });
    if (registered) {
        // Already on the island: only its certificate (renewal before expiry).
        print_certificate(fmt::format("terminal {} (already registered)", args.terminal_id), identity,
                          ensure_certificate(world, hsm.endpoint, identity, order));
        return exit_codes::ok;
    }
    TerminalEntry terminal{args.terminal_id,
                           args.psam_terminal_id,
                           args.participant_id,
                           args.kind,
                           args.line,
                           args.distance_fares,
                           island.images_dir / "psams" / (args.terminal_id + ".img"),
                           island.images_dir / "queues" / (args.terminal_id + ".queue")};
    issue_psam(world, hsm.endpoint, terminal.psam_terminal_id, terminal.psam_image);
    const json loaded = register_with_clearing(world, "terminal-" + args.terminal_id, {participant}, {terminal}, {});
    island.participants.push_back(participant);
    island.terminals.push_back(terminal);
    save_island(world, island);
    std::cout << fmt::format("terminal {} ({} of participant {} {}) registered; PSAM {}: {}\n", args.terminal_id, args.kind,
                             args.participant_id, args.participant_name, terminal.psam_image.string(), loaded.dump());
    print_certificate("terminal " + args.terminal_id, identity, ensure_certificate(world, hsm.endpoint, identity, order));
    return exit_codes::ok;
}

int terminal_certificate(const CertificateArgs& args) {
    if (!tls::valid_terminal_id(args.name))
        fail(exit_codes::usage, fmt::format("--terminal-id '{}' must be exactly 8 printable characters (ISO 8583 field 41)", args.name));
    const WorldPaths world{fs::absolute(args.dir)};
    const Island island = load_island(world, default_images(world, ""));
    if (std::none_of(island.terminals.begin(), island.terminals.end(), [&](const TerminalEntry& t) { return t.terminal_id == args.name; }))
        fail(exit_codes::bad_input, fmt::format("terminal {} is not registered on this island (coconut terminal register)", args.name));
    HsmAccess hsm(world, args.hsm);
    const TlsIdentity identity = args.out.empty() ? terminal_identity(island, args.name) : TlsIdentity{fs::absolute(args.out)};
    print_certificate("terminal " + args.name, identity,
                      ensure_certificate(world, hsm.endpoint, identity,
                                         {tls::Profile::terminal, args.name, {}, args.validity_days, args.renew_within_days}));
    return exit_codes::ok;
}

int server_certificate(const CertificateArgs& args) {
    const WorldPaths world{fs::absolute(args.dir)};
    HsmAccess hsm(world, args.hsm);
    const TlsIdentity identity = args.out.empty() ? clearing_identity(world) : TlsIdentity{fs::absolute(args.out)};
    const std::string name = args.name.empty() ? std::string(clearing_common_name) : args.name;
    const std::vector<std::string> alt_names = args.alt_names.empty() ? clearing_alt_names : args.alt_names;
    print_certificate("server " + name, identity,
                      ensure_certificate(world, hsm.endpoint, identity,
                                         {tls::Profile::server, name, alt_names, args.validity_days, args.renew_within_days}));
    std::cout << fmt::format("coconut-clearingd serve … --tls-cert {} --tls-key {} --tls-ca {}\n", identity.certificate().string(),
                             identity.private_key().string(), identity.ca().string());
    return exit_codes::ok;
}

int card_show(const fs::path& image, bool as_json) {
    auto card = cos::VirtualCard::open(image);
    if (!card) fail(exit_codes::bad_input, card.error().message);
    const cos::Snapshot snap = card.value()->snapshot();
    json out{{"image", image.string()}, {"kind", snap.kind == cos::ImageKind::card ? "card" : "psam"}, {"commits", snap.generation}};
    if (snap.kind == cos::ImageKind::psam) {
        out["terminal_id"] = snap.terminal_id;
        out["next_terminal_serial"] = snap.terminal_serial;
    } else {
        sdk::InProcessReader reader("show", card.value().get());
        sdk::CardChannel channel(reader);
        if (auto atr = reader.connect(); !atr) fail(exit_codes::bad_input, atr.error().message);
        sdk::PurseApp purse(channel);
        auto selected = purse.select_maybe_blocked();
        if (!selected) fail(exit_codes::bad_input, "SELECT purse: " + selected.error().message);
        const sdk::PurseInfo* info = &selected->info;
        // APPLICATION BLOCK (docs/CARD-SPEC.md §2): 0 none, 1 temporary, 2 permanent; a blocked purse answers no reads.
        static constexpr const char* block_names[] = {"none", "temporary", "permanent"};
        out["application_block"] = block_names[std::min<std::size_t>(snap.application_block, 2)];
        out["asn"] = info->asn_digits();
        out["issuer_id"] = to_hex(info->issuer_id);
        out["valid"] = fmt::format("{} – {}", bcd_to_digits(info->start_date), bcd_to_digits(info->expiry_date));
        out["balance_fen"] = snap.balance_fen;
        out["online_atc"] = snap.online_atc;
        out["offline_atc"] = snap.offline_atc;
        out["purse_locked"] = snap.purse_locked;
        out["pin_tries_left"] = snap.pin_tries_left;
        json log = json::array();
        if (auto records = purse.read_log())
            for (const auto& r : *records)
                log.push_back({{"atc", r.atc},
                               {"type", fmt::format("{:02X}", r.type)},
                               {"amount_fen", r.amount_fen},
                               {"terminal", bcd_to_digits(r.terminal_id)},
                               {"when", sdk::format_date_time(r.when)}});
        out["log"] = log;
        if (auto bus = purse.read_capp_record(cos::bus_record::record_id_value)) out["bus_record"] = to_hex(*bus);
        sdk::SocialSecurityApp ssse(channel);
        const auto ssse_selected = ssse.select();
        out["social_security_application"] = ssse_selected.ok();  // false: a tourist (purse-only) card
        if (ssse_selected)
            if (auto holder = ssse.read_cardholder()) out["cardholder"] = {{"name", holder->name}, {"ssn", holder->ssn}};
    }
    if (as_json) {
        std::cout << out.dump(2) << "\n";
        return exit_codes::ok;
    }
    std::cout << fmt::format("{} ({} commits since personalization)\n", image.string(), snap.generation);
    if (snap.kind == cos::ImageKind::psam) {
        std::cout << fmt::format("  PSAM of terminal {}, next terminal serial {}\n", snap.terminal_id, snap.terminal_serial);
        return exit_codes::ok;
    }
    std::cout << fmt::format("  card {}  issuer {}  valid {}\n", out["asn"].get<std::string>(), out["issuer_id"].get<std::string>(),
                             out["valid"].get<std::string>());
    if (out.contains("cardholder"))
        std::cout << fmt::format("  holder {}  SSN {}\n", out["cardholder"]["name"].get<std::string>(),
                                 out["cardholder"]["ssn"].get<std::string>());
    std::cout << fmt::format("  balance {}  online ATC {}  offline ATC {}{}\n", format_fen(snap.balance_fen), snap.online_atc,
                             snap.offline_atc, snap.purse_locked ? "  PURSE LOCKED" : "");
    if (snap.application_block != 0) std::cout << fmt::format("  APPLICATION BLOCKED ({})\n", out["application_block"].get<std::string>());
    if (!out["social_security_application"].get<bool>()) std::cout << "  tourist card: purse only, no social-security application\n";
    std::cout << "  log (newest first):\n";
    for (const auto& r : out["log"])
        std::cout << fmt::format("    {}  {}  ATC {:>5}  {:>12}  terminal {}\n", r["when"].get<std::string>(),
                                 r["type"] == "02"   ? "load    "
                                 : r["type"] == "09" ? "transit "
                                                     : "purchase",
                                 r["atc"].get<int>(), format_fen(r["amount_fen"].get<std::uint32_t>()), r["terminal"].get<std::string>());
    return exit_codes::ok;
}

int ledger_check_command(const fs::path& data, bool as_json) {
    if (!fs::is_directory(data)) fail(exit_codes::bad_input, fmt::format("{}: no such data directory", data.string()));
    std::vector<std::string> argv = {require_tool("coconut-clearingd"), "check", "--data", data.string()};
    if (as_json) argv.push_back("--json");
    const ToolRun run = run_tool(argv);
    std::cout << run.output;
    if (run.exit_code == 0) return exit_codes::ok;
    if (run.exit_code == 1) return exit_codes::check_failed;
    fail(exit_codes::tool_failed, fmt::format("coconut-clearingd check exited {}", run.exit_code));
}

int simulate(const SimulateArgs& args) {
    const WorldPaths world{fs::absolute(args.dir)};
    const bool tourists = args.day.tourists > 0 || args.day.lost_cards > 0;
    // The clerk API's port changes when the clearing restarts: the counter's calls need it to stay up.
    if (tourists && args.day.kill_clearing_every_s > 0)
        fail(exit_codes::usage, "--tourists / --lost-cards is not combined with --kill-clearing-every");
    // A refund names a payment booked today; with the clearing killed under it, its parts may be left half-way.
    if (args.day.clinic_refund_every > 0 && args.day.kill_clearing_every_s > 0)
        fail(exit_codes::usage, "--clinic-refunds is not combined with --kill-clearing-every");
    Services services(world, tourists);  // tourist cards are sold and returned through the clerk API
    Progress progress("simulate");
    SetupReport setup = prepare_island(world, services, args.images, args.day, progress);
    Island island = load_island(world, "");
    std::optional<ServiceDesk> desk;
    if (tourists)
        desk = ServiceDesk{services.hsm().endpoint(), world.counter_key(), [&services] { return services.clearing_http_port(); },
                           setup.counter_token};
    DayReport day = run_day(
        world, island, services.clearing(), args.day, [&](double f, const std::string& text) { progress.update(f, text); }, desk);
    progress.done();
    if (const int code = services.stop_clearing(); code != 0)
        fail(exit_codes::tool_failed,
             fmt::format("coconut-clearingd exited {} at stop (see {})", code, (world.logs() / "clearingd.log").string()));
    const Verification verification = verify_island(world, island);
    print_day(std::cout, day);
    print_verification(std::cout, verification, false);
    std::cout << fmt::format("transaction log {} sha256 {}\n", day.transaction_log.string(), day.digest);
    const std::string text = json{{"seed", args.day.seed},
                                  {"images_dir", setup.images_dir.string()},
                                  {"day", day_json(day)},
                                  {"verification", verification_json(verification)}}
                                 .dump(1) +
                             "\n";
    if (auto written =
            write_file_atomically(world.dir / "simulate.json", ByteView(reinterpret_cast<const std::uint8_t*>(text.data()), text.size()));
        !written)
        fail(exit_codes::io_error, written.error().message());
    return verification.ok() ? exit_codes::ok : exit_codes::check_failed;
}

}  // namespace coconut::cli
