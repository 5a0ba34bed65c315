// coconut-settle: the settlement clerk's tool — run a cycle, see its state, list cycles, print a
// cycle's report, reconcile it against the bank's camt files. Usage, exit codes: settlement/README.md.
#include <coconut/clearing/card_returns.hpp>
#include <coconut/clearing/registry.hpp>
#include <coconut/settlement/settlement.hpp>

#include <coconut/cmdline/cmdline.hpp>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>

namespace {

using namespace coconut;
using namespace coconut::settlement;

// Exit codes a scheduler can act on (settlement/README.md).
constexpr int exit_ok = 0;
constexpr int exit_internal = 1;
constexpr int exit_usage = 2;         // bad argument, config or registry data: fix and re-run
constexpr int exit_too_early = 3;     // the cut-off has not passed: run later
constexpr int exit_storage = 4;       // ledger / output directory unreadable or unwritable
constexpr int exit_conflict = 5;      // existing files/state differ: needs a person
constexpr int exit_unbalanced = 6;    // positions do not sum to zero / unattributed transfer: needs a person
constexpr int exit_posting = 7;       // the daemon refused or was unreachable: retry later
constexpr int exit_locked = 8;        // --direct while a daemon serves the directory
constexpr int exit_invalid_file = 9;  // a camt file is malformed or invalid: nothing changed
constexpr int exit_incomplete = 10;   // reconciliation: missing / mismatched / duplicate entries
constexpr int exit_wrong_state = 11;  // e.g. reconcile before posting
constexpr int exit_untrusted = 12;    // https://: the daemon's certificate refused (--ca, host): fix the configuration
constexpr int exit_behind = 13;       // --data (a standby) did not reach the daemon's stream position in time: run later
constexpr int exit_refused = 14;      // the daemon refused the clerk token (unknown, revoked, no settlement role): nothing written

constexpr std::string_view exit_code_table =
    "Exit codes:\n"
    "   0  ok\n"
    "   1  internal error\n"
    "   2  usage: a bad argument, config or registry data (fix and re-run)\n"
    "   3  the cut-off has not passed: run later\n"
    "   4  storage: the ledger or the output directory unreadable or unwritable\n"
    "   5  existing files or state differ: needs a person\n"
    "   6  positions do not sum to zero, or a transfer nobody owns: needs a person\n"
    "   7  posting: the daemon refused or was unreachable: retry later\n"
    "   8  --direct while a daemon serves the directory\n"
    "   9  a camt file is malformed or invalid: nothing changed\n"
    "  10  reconciliation incomplete: missing, mismatched or duplicate entries\n"
    "  11  wrong state, e.g. reconcile before posting\n"
    "  12  https://: the daemon's certificate refused (--ca, host)\n"
    "  13  --data (a standby) did not reach the daemon's stream position in time: run later\n"
    "  14  the daemon refused the clerk token (unknown, revoked, no settlement role): nothing written";

int exit_for(ErrorCode code) {
    switch (code) {
        case ErrorCode::bad_input: return exit_usage;
        case ErrorCode::too_early: return exit_too_early;
        case ErrorCode::storage: return exit_storage;
        case ErrorCode::conflict: return exit_conflict;
        case ErrorCode::unbalanced: return exit_unbalanced;
        case ErrorCode::posting: return exit_posting;
        case ErrorCode::locked: return exit_locked;
        case ErrorCode::invalid_file: return exit_invalid_file;
        case ErrorCode::incomplete: return exit_incomplete;
        case ErrorCode::wrong_state: return exit_wrong_state;
        case ErrorCode::untrusted: return exit_untrusted;
        case ErrorCode::behind: return exit_behind;
        case ErrorCode::refused: return exit_refused;
    }
    return exit_internal;
}

int fail(const Error& e) {
    std::cerr << "coconut-settle: " << e.message << "\n";
    return exit_for(e.code);
}

int usage(const std::string& message) {
    std::cerr << "coconut-settle: " << message << "\n";
    return exit_usage;
}

// The cardholders' bank accounts of refunds by bank (the clearing's `returns` table; none in a data
// directory older than the table).
settlement::Result<std::map<Asn, RefundAccount>> refund_accounts(lmdb::Env& env) {
    std::map<Asn, RefundAccount> out;
    auto present = env.has_table("returns");
    if (!present) return Unexpected{Error{ErrorCode::storage, present.error().message()}};
    if (!*present) return out;
    auto returns = clearing::CardReturns::open(env);
    if (!returns) return Unexpected{Error{ErrorCode::storage, returns.error().message}};
    auto records = (*returns)->returns();
    if (!records) return Unexpected{Error{ErrorCode::storage, records.error().message}};
    for (const auto& r : *records) {
        if (r.payout == clearing::Payout::bank) out[r.asn] = RefundAccount{r.bank_account, r.account_holder};
    }
    return out;
}

// coconut-settle dormant --data DIR: the dormancy report as CSV (clearing/README.md "Tourist cards").
int dormant(const std::string& data) {
    ledger::Options options;
    options.directory = data;
    options.read_only = true;
    auto ledger = ledger::Ledger::open(options);
    if (!ledger) return fail(Error{ErrorCode::storage, ledger.error().message});
    auto registry = clearing::Registry::open((*ledger)->env());
    if (!registry) return fail(Error{ErrorCode::storage, registry.error().message});
    auto present = (*ledger)->env().has_table("returns");
    if (!present || !*present || !*(*ledger)->env().has_table("tourist")) {
        std::cout << clearing::dormant_csv({});  // a data directory without returns or tourist cards
        return exit_ok;
    }
    auto returns = clearing::CardReturns::open((*ledger)->env());
    if (!returns) return fail(Error{ErrorCode::storage, returns.error().message});
    timespec now{};
    clock_gettime(CLOCK_REALTIME, &now);
    const auto now_ns = static_cast<std::uint64_t>(now.tv_sec) * 1'000'000'000ULL + static_cast<std::uint64_t>(now.tv_nsec);
    auto report = clearing::dormant_report(**ledger, **registry, **returns, now_ns);
    if (!report) return fail(Error{ErrorCode::storage, report.error().message});
    std::cout << clearing::dormant_csv(*report);
    return exit_ok;
}

// A bar redrawn in place on a terminal; otherwise a plain line every 10 % (logs, cron mail).
class ProgressPrinter {
public:
    explicit ProgressPrinter(bool tty) : tty_(tty) {}
    void operator()(std::uint64_t done, std::uint64_t total) {
        if (total == 0) return;
        const unsigned percent = static_cast<unsigned>(done * 100 / total);
        if (tty_) {
            constexpr unsigned width = 40;
            const unsigned filled = percent * width / 100;
            std::cerr << fmt::format("\rjournal [{}{}] {:3}% {}/{}", std::string(filled, '#'), std::string(width - filled, '.'), percent,
                                     done, total)
                      << (done == total ? "\n" : "") << std::flush;
        } else if (percent / 10 != last_decile_ || done == total) {
            last_decile_ = percent / 10;
            std::cerr << fmt::format("journal: {}/{} entries ({}%)\n", done, total, percent);
        }
    }

private:
    bool tty_;
    unsigned last_decile_ = 0;
};

std::optional<std::string> read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return std::nullopt;
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
}

struct RunArgs {
    std::string date;
    std::string data;
    std::string out;
    std::string config;
    std::string cutoff;
    std::string clearingd;
    std::string token_file;
    std::string ca;
    std::string schemas;
    bool direct = false;
    bool dry_run = false;
    std::uint32_t standby_wait_s = 120;
    std::uint32_t margin_s = static_cast<std::uint32_t>(settlement::settling_margin.count());
};

settlement::Result<std::string> clerk_token(const std::string& token_file) {
    std::string token;
    if (!token_file.empty()) {
        auto text = read_file(token_file);
        if (!text) return Unexpected{Error{ErrorCode::bad_input, "cannot read --token-file " + token_file}};
        token = *text;
    } else if (const char* env = std::getenv("COCONUT_CLERK_TOKEN")) {
        token = env;
    }
    while (!token.empty() && (token.back() == '\n' || token.back() == '\r' || token.back() == ' ')) token.pop_back();
    if (token.empty())
        return Unexpected{
            Error{ErrorCode::bad_input, "--clearingd needs a settlement clerk token: --token-file FILE or COCONUT_CLERK_TOKEN"}};
    return token;
}

int run(const RunArgs& a) {
    auto date = parse_date(a.date);
    if (!date) return usage("--date " + a.date + ": expected YYYY-MM-DD");
    auto config_text = read_file(a.config);
    if (!config_text) return usage("cannot read --config " + a.config);
    auto config = parse_config(*config_text);
    if (!config) return fail(config.error());
    if (!a.cutoff.empty()) {
        auto cutoff = parse_cutoff(a.cutoff);
        if (!cutoff) return usage("--cutoff " + a.cutoff + ": expected HH:MM or HH:MM:SS from 00:00:01 to 24:00");
        config->cutoff_seconds = *cutoff;
    }
    if (a.direct && !a.clearingd.empty()) return usage("give either --clearingd or --direct");
    if (!a.dry_run && !a.direct && a.clearingd.empty())
        return usage("run needs --clearingd https://HOST:PORT --ca FILE (or http:// on loopback, --direct, or --dry-run)");

    std::optional<clearing::DirectoryLock> lock;
    if (a.direct && !a.dry_run) {
        auto acquired = lock_for_direct_posting(a.data);
        if (!acquired) return fail(acquired.error());
        lock.emplace(std::move(*acquired));
    }
    ledger::Options options;
    options.directory = a.data;
    options.read_only = !lock.has_value();  // read while the daemon serves; write only under its lock
    auto ledger = ledger::Ledger::open(options);
    if (!ledger) return fail(Error{ErrorCode::storage, ledger.error().message});
    auto registry = clearing::Registry::open((*ledger)->env());
    if (!registry) return fail(Error{ErrorCode::storage, registry.error().message});
    auto participants = (*registry)->participants();
    if (!participants) return fail(Error{ErrorCode::storage, participants.error().message});

    std::unique_ptr<Poster> poster;
    if (a.dry_run) {
        // nothing is posted
    } else if (lock) {
        poster = make_direct_poster(**ledger);
    } else {
        auto token = clerk_token(a.token_file);
        if (!token) return fail(token.error());
        // A token the daemon refuses is never fixed by running again: say so before any file is written.
        // An unreachable daemon is no reason to stop here (the files are written, the posting retried).
        if (auto checked = check_settlement_token(a.clearingd, *token, a.ca); !checked && checked.error().code != ErrorCode::posting)
            return fail(checked.error());
        // --data may be a standby's copy: settle only once it holds everything the daemon had committed
        // when this run started (settlement/README.md "Settling on a standby").
        auto caught = wait_for_daemon_position(**ledger, a.clearingd, *token, a.ca, std::chrono::seconds(a.standby_wait_s));
        if (!caught) {
            // A directory that holds no stream position (a single daemon's own) cannot lag behind: with the
            // daemon unreachable now, the files are still written and the posting retried later.
            auto here = (*ledger)->replicated_position();
            const bool daemon_failed = caught.error().code == ErrorCode::posting || caught.error().code == ErrorCode::untrusted;
            if (!daemon_failed || !here || *here != 0) return fail(caught.error());
            std::cerr << "coconut-settle: " << caught.error().message << " (--data holds no stream position: settling without it)\n";
        } else if (caught->daemon_position > 0) {
            std::cerr << fmt::format("coconut-settle: --data holds stream position {}, the daemon {} when the run started (waited {} ms)\n",
                                     caught->ledger_position, caught->daemon_position, caught->waited.count());
        }
        auto made = make_http_poster(a.clearingd, std::move(*token), a.ca);
        if (!made) return fail(made.error());
        poster = std::move(*made);
    }

    RunOptions run_options;
    run_options.date = *date;
    run_options.config = *config;
    run_options.out = a.out;
    if (!a.schemas.empty()) run_options.schemas_dir = a.schemas;
    run_options.dry_run = a.dry_run;
    auto accounts = refund_accounts((*ledger)->env());
    if (!accounts) return fail(accounts.error());
    run_options.refund_accounts = std::move(*accounts);
    run_options.margin = std::chrono::seconds(a.margin_s);
    run_options.progress = ProgressPrinter(isatty(STDERR_FILENO) == 1);
    if (const char* kill_at = std::getenv("COCONUT_SETTLE_TEST_EXIT_AFTER")) {
        // Test hook (tests/settlement): exit abruptly right after a state was saved, like a crash.
        const std::string at = kill_at;
        run_options.after_step = [at](CycleState state) {
            if (to_string(state) == at) std::_Exit(99);
        };
    }
    auto report = run_cycle(**ledger, *participants, poster.get(), run_options);
    if (!report) return fail(report.error());
    for (const auto& f : report->files) {
        if (f.name == "summary.txt") std::cout << f.contents;
    }
    std::cout << "\n";
    if (a.dry_run) {
        std::cout << fmt::format("dry run: cycle {} computed; {} files and {} settlement transfers NOT written\n", report->positions.cycle,
                                 report->files.size(), settlement_transfers(report->positions).size());
    } else {
        std::cout << fmt::format("cycle {}: {}{}; {} transfers posted now ({} new, {} already booked); files in {}\n", report->record.cycle,
                                 to_string(report->record.state), report->resumed ? " (resumed)" : "",
                                 report->posting.created + report->posting.existed, report->posting.created, report->posting.existed,
                                 cycle_directory(a.out, report->record.cycle).string());
    }
    return exit_ok;
}

std::optional<std::uint32_t> parse_cycle(const std::string& text) {
    auto date = parse_date(text);  // accept 2026-11-26 as well as 20261126
    if (date) return cycle_id(*date);
    if (text.size() != 8) return std::nullopt;
    std::uint32_t id = 0;
    for (char c : text) {
        if (c < '0' || c > '9') return std::nullopt;
        id = id * 10 + static_cast<std::uint32_t>(c - '0');
    }
    if (!date_of_cycle(id)) return std::nullopt;
    return id;
}

// "2026-03-10 00:00:00": an instant in Hainan local time (UTC+8), to the second.
std::string local_minutes(std::uint64_t ns) {
    using namespace std::chrono;
    const sys_seconds local{seconds{static_cast<std::int64_t>(ns / 1'000'000'000) + local_utc_offset_s}};
    const auto day = floor<days>(local);
    const hh_mm_ss time{local - day};
    return fmt::format("{} {:02}:{:02}:{:02}", format_date(year_month_day{day}), time.hours().count(), time.minutes().count(),
                       time.seconds().count());
}

std::string reconciliation_line(const CycleRecord& r) {
    if (!r.reconciliation) return "not reconciled";
    const auto& x = *r.reconciliation;
    return fmt::format("{} matched, {} missing, {} mismatched, {} duplicate, {} unknown", x.matched.size(), x.missing.size(),
                       x.mismatched.size(), x.duplicates.size(), x.unknown.size());
}

void print_record(const CycleRecord& r) {
    std::cout << fmt::format("cycle {} ({}): {}\n", r.cycle, format_date(*date_of_cycle(r.cycle)), to_string(r.state));
    std::cout << fmt::format("  window {} to {} (Hainan time, UTC+8; cut-off {}), journal entries {} to {}\n",
                             local_minutes(r.window.start_ns), local_minutes(r.window.end_ns), format_cutoff(r.cutoff_seconds),
                             r.first_sequence, r.last_sequence);
    std::cout << fmt::format("  {} files, {} settlement transfers posted, {}\n", r.files.size(), r.transfers_posted,
                             reconciliation_line(r));
}

int status(const std::string& out, const std::string& cycle_text) {
    if (!cycle_text.empty()) {
        auto id = parse_cycle(cycle_text);
        if (!id) return usage("--cycle " + cycle_text + ": expected YYYYMMDD or YYYY-MM-DD");
        auto record = load_cycle(out, *id);
        if (!record) return fail(record.error());
        if (!*record) return fail(Error{ErrorCode::bad_input, fmt::format("cycle {} has not been run", *id)});
        print_record(**record);
        return exit_ok;
    }
    auto records = list_cycles(out);
    if (!records) return fail(records.error());
    if (records->empty()) {
        std::cout << "no cycle has been run in " << out << "\n";
        return exit_ok;
    }
    print_record(records->back());
    return exit_ok;
}

int list(const std::string& out) {
    auto records = list_cycles(out);
    if (!records) return fail(records.error());
    std::cout << fmt::format("{:<9}  {:<10}  {:<13}  {:>6}  {:>9}  {}\n", "cycle", "date", "state", "files", "transfers", "reconciliation");
    for (const auto& r : *records) {
        std::cout << fmt::format("{:<9}  {:<10}  {:<13}  {:>6}  {:>9}  {}\n", r.cycle, format_date(*date_of_cycle(r.cycle)),
                                 to_string(r.state), r.files.size(), r.transfers_posted, reconciliation_line(r));
    }
    return exit_ok;
}

int report(const std::string& out, const std::string& cycle_text, bool html) {
    auto id = parse_cycle(cycle_text);
    if (!id) return usage("--cycle " + cycle_text + ": expected YYYYMMDD or YYYY-MM-DD");
    if (html) {
        // Rendered again from the cycle's files and state (the reconciliation status of now).
        if (auto written = write_report_html(out, *id); !written) return fail(written.error());
        std::cout << (cycle_directory(out, *id) / "report.html").string() << "\n";
        return exit_ok;
    }
    auto record = load_cycle(out, *id);
    if (!record) return fail(record.error());
    if (!*record || (*record)->state < CycleState::files_written) {
        return fail(Error{ErrorCode::wrong_state, fmt::format("cycle {} has no files yet: run it first", *id)});
    }
    auto text = read_file((cycle_directory(out, *id) / "summary.txt").string());
    if (!text) return fail(Error{ErrorCode::storage, "cannot read the cycle's summary.txt"});
    std::cout << *text << "\n";
    print_record(**record);
    return exit_ok;
}

int reconcile_command(const std::string& out, const std::string& cycle_text, const std::vector<std::string>& files,
                      const std::string& schemas) {
    auto id = parse_cycle(cycle_text);
    if (!id) return usage("--cycle " + cycle_text + ": expected YYYYMMDD or YYYY-MM-DD");
    std::vector<std::filesystem::path> paths(files.begin(), files.end());
    auto result = schemas.empty() ? reconcile(out, *id, paths) : reconcile(out, *id, paths, schemas);
    if (!result) return fail(result.error());
    for (const auto& m : result->matched) std::cout << "matched     " << m << "\n";
    for (const auto& m : result->missing) std::cout << "MISSING     " << m << "\n";
    for (const auto& m : result->mismatched) {
        std::cout << fmt::format("MISMATCH    {} expected {} booked {}\n", m.end_to_end_id,
                                 format_fen(static_cast<std::int64_t>(m.expected_fen)),
                                 format_fen(static_cast<std::int64_t>(m.booked_fen)));
    }
    for (const auto& m : result->duplicates) std::cout << "DUPLICATE   " << m << "\n";
    for (const auto& m : result->unknown) std::cout << "unknown     " << m << "\n";
    std::cout << fmt::format("cycle {}: {} matched, {} missing, {} mismatched, {} duplicate, {} unknown: {}\n", *id, result->matched.size(),
                             result->missing.size(), result->mismatched.size(), result->duplicates.size(), result->unknown.size(),
                             result->complete() ? "reconciled" : "NOT reconciled");
    return result->complete() ? exit_ok : exit_incomplete;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"coconut-settle: nightly settlement of Coconut Card (cycles, ISO 20022 files, posting, reconciliation)"};
    app.require_subcommand(1);
    std::string out = "settlement";
    app.add_option("--out", out, "settlement directory: one subdirectory per cycle with its files and state")->capture_default_str();

    RunArgs run_args;
    auto* run_cmd = app.add_subcommand("run", "run (or resume) the cycle of a business date");
    run_cmd->add_option("--date", run_args.date, "business date YYYY-MM-DD (local time UTC+8)")->required();
    run_cmd->add_option("--data", run_args.data, "the clearing daemon's data directory (its LMDB ledger)")->required();
    run_cmd->add_option("--config", run_args.config, "settlement config JSON (debtor accounts, cut-off)")->required();
    run_cmd->add_option("--cutoff", run_args.cutoff, "cut-off HH:MM[:SS] local time (overrides the config; default 24:00)");
    run_cmd
        ->add_option("--settling-margin", run_args.margin_s,
                     "seconds after the cut-off before the cycle may run (bookings stamped just before it may still be committing); "
                     "lower only when every terminal has stopped uploading")
        ->capture_default_str()
        ->check(CLI::Range(0, 86400));
    run_cmd->add_option("--clearingd", run_args.clearingd,
                        "post through the daemon's clerk API at https://HOST:PORT (with --ca), or http://HOST:PORT: over plain "
                        "HTTP the clerk token travels in clear, so use it only for a daemon on this host (loopback)");
    run_cmd->add_option("--token-file", run_args.token_file, "settlement clerk token file (else $COCONUT_CLERK_TOKEN)");
    run_cmd->add_option("--ca", run_args.ca,
                        "https://: PEM CA certificate(s) the daemon's certificate must chain to; it must also name the URL's host "
                        "(TLS 1.2 at least; a refused certificate exits 12 before the token is sent)");
    run_cmd
        ->add_option("--standby-wait-s", run_args.standby_wait_s,
                     "with --clearingd: wait at most this long for --data (e.g. a standby's copy) to reach the stream position the "
                     "daemon holds when the run starts; exit 13 if it does not")
        ->capture_default_str()
        ->check(CLI::Range(0, 86400));
    run_cmd->add_flag("--direct", run_args.direct, "post directly into the ledger (only while no daemon serves --data)");
    run_cmd->add_flag("--dry-run", run_args.dry_run, "compute and print; write and post nothing");
    run_cmd->add_option("--schemas", run_args.schemas, "directory of the ISO 20022 XSDs");
    run_cmd->add_option("--out", out, "settlement directory");

    std::string cycle_text;
    auto* status_cmd = app.add_subcommand("status", "state of the latest (or the given) cycle");
    status_cmd->add_option("--cycle", cycle_text, "cycle id YYYYMMDD (or its date)");
    status_cmd->add_option("--out", out, "settlement directory");
    auto* list_cmd = app.add_subcommand("list", "every cycle with its state");
    list_cmd->add_option("--out", out, "settlement directory");
    auto* report_cmd = app.add_subcommand("report", "print a cycle's summary");
    report_cmd->add_option("--cycle", cycle_text, "cycle id YYYYMMDD (or its date)")->required();
    report_cmd->add_option("--out", out, "settlement directory");
    bool report_html = false;
    report_cmd->add_flag("--html", report_html,
                         "write OUT/<cycle>/report.html (the manager's report: full names, CNY, charts, reconciliation; prints on A4) "
                         "and print its path");
    std::vector<std::string> camt_files;
    std::string schemas;
    auto* reconcile_cmd = app.add_subcommand("reconcile", "match the bank's camt.053/054 files against a posted cycle");
    reconcile_cmd->add_option("--cycle", cycle_text, "cycle id YYYYMMDD (or its date)")->required();
    reconcile_cmd->add_option("files", camt_files, "camt.053.001.08 / camt.054.001.08 files")->required();
    reconcile_cmd->add_option("--schemas", schemas, "directory of the ISO 20022 XSDs");
    reconcile_cmd->add_option("--out", out, "settlement directory");

    std::string dormant_data;
    auto* dormant_cmd = app.add_subcommand("dormant", "the dormancy report as CSV: tourist cards still out, refunds not yet paid");
    dormant_cmd->add_option("--data", dormant_data, "the clearing daemon's data directory (read only; the daemon may serve it)")->required();

    coconut::cmdline::set_conventions(app, "coconut-settle", exit_code_table);
    if (auto exit = coconut::cmdline::parse(app, argc, argv, "coconut-settle")) return *exit;
    try {
        run_args.out = out;
        if (*run_cmd) return run(run_args);
        if (*status_cmd) return status(out, cycle_text);
        if (*list_cmd) return list(out);
        if (*report_cmd) return report(out, cycle_text, report_html);
        if (*reconcile_cmd) return reconcile_command(out, cycle_text, camt_files, schemas);
        if (*dormant_cmd) return dormant(dormant_data);
    } catch (const std::exception& e) {
        std::cerr << "coconut-settle: internal error: " << e.what() << "\n";
        return exit_internal;
    }
    return exit_usage;
}
