// coconut — the operator's command line for Coconut Card (README.md: the demo, then the commands one by one).
#include "commands.hpp"
#include "counter.hpp"
#include "errors.hpp"
#include "letters.hpp"
#include "process.hpp"

#include <coconut/cmdline/cmdline.hpp>

#include <CLI/CLI.hpp>
#include <sodium.h>

#include <iostream>

using namespace coconut::cli;

int main(int argc, char** argv) {
    if (sodium_init() < 0) {
        std::cerr << "coconut: libsodium failed to initialise\n";
        return exit_codes::tool_failed;
    }
    install_signal_handlers();
    CLI::App app{"coconut — Coconut Card operator CLI: keys, cards, terminals, the simulated island day, the demo"};
    app.require_subcommand(1);
    std::function<int()> command;

    auto* keys = app.add_subcommand("keys", "HSM keys")->require_subcommand(1);
    fs::path dir;
    auto* ceremony = keys->add_subcommand("ceremony", "create the HSM store, master keys and transport key from components, HSM clients");
    ceremony->add_option("--dir", dir, "island directory (created)")->required();
    ceremony->callback([&] { command = [&] { return keys_ceremony(dir); }; });

    auto* card = app.add_subcommand("card", "cards")->require_subcommand(1);
    CardIssueArgs issue;
    auto* card_issue_cmd = card->add_subcommand("issue", "personalize cards with HSM-derived keys and register them with the clearing");
    card_issue_cmd->add_option("--dir", issue.dir, "island directory (after `keys ceremony`)")->required();
    card_issue_cmd->add_option("--count", issue.count, "cards to issue")->required()->check(CLI::Range(1, 1'000'000));
    card_issue_cmd->add_option("--seed", issue.seed, "seed of the cards' DRBGs and opening balances")->capture_default_str();
    card_issue_cmd->add_option("--out", issue.images, "directory for the card images (default DIR/media)");
    card_issue_cmd->add_option(
        "--hsm", issue.hsm,
        "a running coconut-hsmd HOST:PORT, or several HOST:PORT,HOST:PORT (the first that answers; default: start one over DIR/hsm)");
    card_issue_cmd->add_flag("--tourist", issue.tourist,
                             "purse-only cards for visitors: no social-security application, no cardholder, no medical account");
    card_issue_cmd->callback([&] { command = [&] { return card_issue(issue); }; });
    fs::path image;
    bool json = false;
    auto* show = card->add_subcommand("show", "decode a card or PSAM image: files, balance, ATCs, log");
    show->add_option("IMAGE", image, "card or PSAM image")->required();
    show->add_flag("--json", json, "JSON output");
    show->callback([&] { command = [&] { return card_show(image, json); }; });
    add_letter_command(*card, command);

    auto* psam = app.add_subcommand("psam", "PSAMs")->require_subcommand(1);
    std::string psam_terminal, hsm_endpoint;
    fs::path psam_out;
    auto* psam_issue_cmd = psam->add_subcommand("issue", "personalize a PSAM with the issuer purchase key exported by the HSM");
    psam_issue_cmd->add_option("--dir", dir, "island directory")->required();
    psam_issue_cmd->add_option("--terminal-id", psam_terminal, "PSAM terminal id, 12 digits")->required();
    psam_issue_cmd->add_option("--out", psam_out, "PSAM image to write")->required();
    psam_issue_cmd->add_option(
        "--hsm", hsm_endpoint,
        "a running coconut-hsmd HOST:PORT, or several HOST:PORT,HOST:PORT (the first that answers; default: start one)");
    psam_issue_cmd->callback([&] { command = [&] { return psam_issue(dir, psam_terminal, psam_out, hsm_endpoint); }; });

    auto* terminal = app.add_subcommand("terminal", "terminals")->require_subcommand(1);
    TerminalRegisterArgs reg;
    auto* register_cmd =
        terminal->add_subcommand("register", "issue a terminal's PSAM and register it and its participant with the clearing");
    register_cmd->add_option("--dir", reg.dir, "island directory")->required();
    register_cmd->add_option("--terminal-id", reg.terminal_id, "terminal id, 8 characters (ISO 8583 field 41)")->required();
    register_cmd->add_option("--psam-terminal-id", reg.psam_terminal_id, "PSAM terminal id, 12 digits")->required();
    register_cmd->add_option("--kind", reg.kind, "bus | shop | clinic")->required();
    register_cmd->add_option("--participant-id", reg.participant_id, "participant (operator, clinic, shop) id")->required();
    register_cmd->add_option("--participant-name", reg.participant_name, "participant name")->required();
    register_cmd->add_option("--bank-account", reg.bank_account, "participant's bank account (settlement pays it)")->required();
    register_cmd->add_option("--fee-rate-bp", reg.fee_rate_bp, "scheme fee in basis points of gross")->check(CLI::Range(0, 10000));
    register_cmd->add_option("--line", reg.line, "bus line served");
    register_cmd->add_flag("--distance-fares", reg.distance_fares, "entry/exit fares by stops (else flat)");
    register_cmd->add_option(
        "--hsm", reg.hsm, "a running coconut-hsmd HOST:PORT, or several HOST:PORT,HOST:PORT (the first that answers; default: start one)");
    const auto add_validity = [](CLI::App* command, std::uint16_t& validity_days, std::uint16_t& renew_within_days) {
        command->add_option("--validity-days", validity_days, "TLS certificate validity")->capture_default_str()->check(CLI::Range(1, 825));
        command
            ->add_option("--renew-within-days", renew_within_days,
                         "renew the certificate when it ends within this many days (else keep it)")
            ->capture_default_str()
            ->check(CLI::Range(0, 824));
    };
    register_cmd->add_option("--tls-dir", reg.tls_dir, "where the terminal's cert.pem, key.pem (0600), ca.pem go (default IMAGES/tls/ID)");
    add_validity(register_cmd, reg.validity_days, reg.renew_within_days);
    register_cmd->callback([&] { command = [&] { return terminal_register(reg); }; });
    CertificateArgs terminal_cert;
    auto* terminal_cert_cmd =
        terminal->add_subcommand("certificate", "issue or renew a registered terminal's TLS certificate (island CA in the HSM)");
    terminal_cert_cmd->add_option("--dir", terminal_cert.dir, "island directory")->required();
    terminal_cert_cmd->add_option("--terminal-id", terminal_cert.name, "terminal id, 8 characters (ISO 8583 field 41)")->required();
    terminal_cert_cmd->add_option("--out", terminal_cert.out, "directory for cert.pem, key.pem (0600), ca.pem (default IMAGES/tls/ID)");
    terminal_cert_cmd->add_option(
        "--hsm", terminal_cert.hsm,
        "a running coconut-hsmd HOST:PORT, or several HOST:PORT,HOST:PORT (the first that answers; default: start one)");
    add_validity(terminal_cert_cmd, terminal_cert.validity_days, terminal_cert.renew_within_days);
    terminal_cert_cmd->callback([&] { command = [&] { return terminal_certificate(terminal_cert); }; });

    auto* tls_cmd = app.add_subcommand("tls", "TLS for the ISO 8583 link (island CA in the HSM)")->require_subcommand(1);
    CertificateArgs server_cert;
    auto* server_cert_cmd = tls_cmd->add_subcommand("server-cert", "issue or renew coconut-clearingd's server certificate");
    server_cert_cmd->add_option("--dir", server_cert.dir, "island directory")->required();
    server_cert_cmd->add_option("--name", server_cert.name, "common name (default coconut-clearingd)");
    server_cert_cmd->add_option("--san", server_cert.alt_names,
                                "IP:ADDRESS or DNS:NAME terminals dial (repeatable; default IP:127.0.0.1 DNS:localhost)");
    server_cert_cmd->add_option("--out", server_cert.out, "directory for cert.pem, key.pem (0600), ca.pem (default D/tls/clearingd)");
    server_cert_cmd->add_option(
        "--hsm", server_cert.hsm,
        "a running coconut-hsmd HOST:PORT, or several HOST:PORT,HOST:PORT (the first that answers; default: start one)");
    add_validity(server_cert_cmd, server_cert.validity_days, server_cert.renew_within_days);
    server_cert_cmd->callback([&] { command = [&] { return server_certificate(server_cert); }; });

    SimulateArgs sim;
    auto* simulate_cmd = app.add_subcommand("simulate", "an island day through the terminal SDK, uploaded to the clearing");
    simulate_cmd->add_option("--dir", sim.dir, "island directory (ceremony and issuance happen here if missing)")->required();
    simulate_cmd->add_option("--images", sim.images, "card images, PSAMs and queues (default DIR/media; tmpfs is fastest)");
    simulate_cmd->add_option("--cards", sim.day.cards, "cards")->capture_default_str()->check(CLI::Range(1, 100000));
    simulate_cmd->add_option("--buses", sim.day.buses, "bus validators")->capture_default_str()->check(CLI::Range(1, 10000));
    simulate_cmd->add_option("--clinics", sim.day.clinics, "clinic terminals")->capture_default_str()->check(CLI::Range(0, 10000));
    simulate_cmd->add_option("--shops", sim.day.shops, "shop terminals")->capture_default_str()->check(CLI::Range(1, 10000));
    simulate_cmd->add_option("--hours", sim.day.hours, "service hours from 06:00")->capture_default_str()->check(CLI::Range(1.0, 18.0));
    simulate_cmd->add_option("--seed", sim.day.seed, "seed: the same seed on a fresh island gives the same day")->capture_default_str();
    simulate_cmd->add_option("--transactions", sim.day.transactions, "target card transactions (default ~6 per card)");
    simulate_cmd->add_option("--tear-rate", sim.day.tear_rate, "share of debits torn (card pulled mid-DEBIT)")->check(CLI::Range(0.0, 0.5));
    simulate_cmd
        ->add_option("--drop-rate", sim.day.drop_rate,
                     "share of ISO 8583 requests lost, or their answers (reproducible: chosen by the seed)")
        ->check(CLI::Range(0.0, 0.2));
    simulate_cmd->add_option("--kill-clearing-every", sim.day.kill_clearing_every_s, "SIGKILL + restart the clearing every SECONDS")
        ->check(CLI::Range(0.2, 3600.0));
    simulate_cmd->add_option("--pcsc-taps", sim.day.pcsc_taps, "send this many taps through pcscd + vpcd (needs root for pcscd)")
        ->check(CLI::Range(0, 1000));
    simulate_cmd->add_option("--upload-every-min", sim.day.upload_every_min, "each terminal uploads this often (simulated minutes)")
        ->capture_default_str()
        ->check(CLI::Range(30, 1440));
    simulate_cmd
        ->add_option("--tourists", sim.day.tourists,
                     "tourist cards sold at the airport counter (3 of 4 returned at departure; serves the clerk API)")
        ->capture_default_str()
        ->check(CLI::Range(0, 10000));
    simulate_cmd
        ->add_option("--lost-cards", sim.day.lost_cards,
                     "residents who report their card lost at the airport counter and get a replacement (serves the clerk API)")
        ->capture_default_str()
        ->check(CLI::Range(0, 100));
    simulate_cmd
        ->add_option(
            "--clinic-refunds", sim.day.clinic_refund_every,
            "refund one in N clinic visits (by the seed) and one in N of those the purse helped pay, later the same day at the same clinic")
        ->capture_default_str()
        ->check(CLI::Range(0, 1000));
    simulate_cmd->callback([&] { command = [&] { return simulate(sim); }; });

    DemoArgs demo_args;
    demo_args.dir = "coconut-demo";
    auto* demo_cmd = app.add_subcommand("demo", "the whole island day end to end: daemons, ceremony, cards, day, uploads, checks");
    demo_cmd->add_option("--dir", demo_args.dir, "island directory (must not hold an island yet)")->capture_default_str();
    demo_cmd->add_option("--size", demo_args.size, "small (CI) | day (1,000 cards, ≥ 100,000 transactions)")->capture_default_str();
    demo_cmd->add_option("--images", demo_args.images, "card images, PSAMs and queues (default: tmpfs under /dev/shm)");
    demo_cmd->add_option("--seed", demo_args.seed, "seed of the day")->capture_default_str();
    demo_cmd->add_option("--pcsc-taps", demo_args.pcsc_taps, "send this many taps through pcscd + vpcd (needs root)")
        ->check(CLI::Range(0, 1000));
    demo_cmd->add_flag("--cluster", demo_args.cluster,
                       "the clearing as a cluster: 3 nats-server + 3 coconut-clearingd nodes, the primary SIGKILLed mid-day");
    demo_cmd->add_option("--kill-primary-every", demo_args.kill_primary_every_s, "--cluster: also SIGKILL the primary every SECONDS")
        ->check(CLI::Range(2.0, 3600.0));
    demo_cmd->callback([&] {
        if (demo_args.kill_primary_every_s > 0 && !demo_args.cluster) throw CLI::ValidationError("--kill-primary-every needs --cluster");
        command = [&] { return demo(demo_args); };
    });

    auto* ledger = app.add_subcommand("ledger", "the clearing ledger")->require_subcommand(1);
    fs::path data;
    auto* check = ledger->add_subcommand("check", "every ledger and registry invariant (exit 1 on a violation)");
    check->add_option("--data", data, "coconut-clearingd data directory")->required();
    check->add_flag("--json", json, "JSON report");
    check->callback([&] { command = [&] { return ledger_check_command(data, json); }; });

    add_counter_commands(app, command);

    coconut::cmdline::set_conventions(app, "coconut",
                                      "Exit codes:\n"
                                      "    0  ok\n"
                                      "    1  a check failed: an invariant, a balance comparison or a reconciliation\n"
                                      "    2  usage: a bad command line\n"
                                      "    3  another program exited non-zero, or a daemon did not start\n"
                                      "    4  a file or directory could not be read or written\n"
                                      "    5  the HSM refused or could not be reached\n"
                                      "    6  uploads did not complete within the retry bound\n"
                                      "    7  an input file (image, registry, world directory) is invalid\n"
                                      "  130  interrupted (SIGINT / SIGTERM): daemons stopped, nothing else done");
    if (auto exit = coconut::cmdline::parse(app, argc, argv, "coconut")) return *exit;
    try {
        return command();
    } catch (const CommandFailed& e) {
        std::cerr << "coconut: " << e.what() << "\n";
        return e.exit_code;
    }
}
