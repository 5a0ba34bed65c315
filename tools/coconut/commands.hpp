// The coconut subcommands (main.cpp wires them to CLI11). Each returns an exit code (errors.hpp) or throws
// CommandFailed.
#pragma once

#include "simulate.hpp"
#include "world.hpp"

#include <string>

namespace coconut::cli {

int keys_ceremony(const fs::path& dir);

struct CardIssueArgs {
    fs::path dir;
    std::size_t count = 0;
    std::uint64_t seed = 1;
    std::string images;    // default D/media
    std::string hsm;       // HOST:PORT of a running coconut-hsmd; empty = start one over D/hsm for this command
    bool tourist = false;  // purse-only cards (docs/CARD-SPEC.md §9)
};
int card_issue(const CardIssueArgs& args);
int card_show(const fs::path& image, bool json);
int psam_issue(const fs::path& dir, const std::string& terminal_id, const fs::path& out, const std::string& hsm);

struct TerminalRegisterArgs {
    fs::path dir;
    std::string terminal_id;       // 8 characters (field 41)
    std::string psam_terminal_id;  // 12 digits
    std::string kind;              // bus, shop, clinic
    std::uint64_t participant_id = 0;
    std::string participant_name;
    std::string bank_account;
    std::uint32_t fee_rate_bp = 0;
    std::uint16_t line = 0;
    bool distance_fares = false;
    std::string hsm;
    // TLS identity (certificates.hpp): default IMAGES/tls/<terminal id>.
    fs::path tls_dir;
    std::uint16_t validity_days = 365;
    std::uint16_t renew_within_days = 30;
};
// Registers the terminal (PSAM, participant, clearing registry) unless island.json already lists it, then
// makes sure its TLS certificate exists and is not within renew_within_days of its end.
int terminal_register(const TerminalRegisterArgs& args);

// `coconut terminal certificate` (a terminal's) and `coconut tls server-cert` (the clearing daemon's).
struct CertificateArgs {
    fs::path dir;
    std::string name;                    // terminal id, or the server's common name
    std::vector<std::string> alt_names;  // server: IP:… / DNS:…
    fs::path out;                        // default: the identity's usual directory
    std::uint16_t validity_days = 365;
    std::uint16_t renew_within_days = 30;
    std::string hsm;
};
int terminal_certificate(const CertificateArgs& args);
int server_certificate(const CertificateArgs& args);

struct SimulateArgs {
    fs::path dir;
    std::string images;
    DayOptions day;
};
int simulate(const SimulateArgs& args);

struct DemoArgs {
    fs::path dir;
    std::string size = "day";  // small | day
    std::string images;        // default: a tmpfs directory under /dev/shm when there is one
    std::uint64_t seed = 20261126;
    std::size_t pcsc_taps = 0;
    bool cluster = false;             // 3 nats-server + 3 clearing nodes, the primary killed mid-day
    double kill_primary_every_s = 0;  // --cluster: SIGKILL the primary at this interval too (0: once, mid-day)
};
int demo(const DemoArgs& args);

int ledger_check_command(const fs::path& data, bool json);

}  // namespace coconut::cli
