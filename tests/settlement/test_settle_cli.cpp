// coconut-settle as the clerk (and the scheduler) uses it: kill -9 at random points of `run`, then
// `run` again — identical files, no double posting; exit codes; status / list / report / reconcile.
#include "camt_samples.hpp"
#include "settlement_fixture.hpp"

#include <coconut/clearing/card_returns.hpp>
#include <coconut/tls/tls.hpp>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <thread>

using namespace settle_test;

namespace {

// Starts `exe` with `args` (stdout/stderr to `log`), `env` added to the environment.
pid_t spawn_tool(const char* exe, const std::vector<std::string>& args, const std::filesystem::path& log,
                 const std::vector<std::string>& env = {}) {
    const pid_t child = fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        FILE* out = std::fopen(log.c_str(), "w");
        if (out != nullptr) {
            dup2(fileno(out), STDOUT_FILENO);
            dup2(fileno(out), STDERR_FILENO);
        }
        for (const auto& e : env) putenv(const_cast<char*>(e.c_str()));
        std::vector<char*> argv{const_cast<char*>(exe)};
        for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
        argv.push_back(nullptr);
        execv(exe, argv.data());
        _exit(127);
    }
    return child;
}

pid_t spawn(const std::vector<std::string>& args, const std::filesystem::path& log, const std::vector<std::string>& env = {}) {
    return spawn_tool(COCONUT_SETTLE_EXE, args, log, env);
}

int wait_exit(pid_t child) {
    int status = 0;
    REQUIRE(waitpid(child, &status, 0) == child);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

struct Cli {
    int code = 0;
    std::string output;
};

Cli settle(const std::vector<std::string>& args, const std::filesystem::path& scratch, const std::vector<std::string>& env = {}) {
    const auto log = scratch / "cli.log";
    const int code = wait_exit(spawn(args, log, env));
    return Cli{code, read(log)};
}

// The hand-computed day in a ledger directory no process holds open, plus the config file.
struct Setup {
    Day day;
    std::filesystem::path config;
    Setup() {
        day.book_the_day();
        day.close();
        config = day.out() / ".." / (day.out().filename().string() + "-config.json");
        write(config, config_json);
    }
    ~Setup() { std::filesystem::remove(config); }
    std::vector<std::string> run_args(const std::filesystem::path& data, const std::filesystem::path& out) const {
        return {"run", "--date", "2026-03-10", "--data", data.string(), "--config", config.string(), "--direct", "--out", out.string()};
    }
};

// Settlement transfers in the journal: each id exactly once (a double posting would be a second
// transfer_created entry or a different id).
std::map<ledger::Id, int> settlement_entries(const ledger::Ledger& ledger) {
    std::map<ledger::Id, int> seen;
    const auto entries = ledger.read_journal(1, 100'000).value();
    for (const auto& e : entries) {
        auto t = ledger::journal_transfer(e);
        if (t && (t->code == codes::settlement_payout || t->code == codes::settlement_fee)) ++seen[t->id];
    }
    return seen;
}

}  // namespace

// Every settlement transfer once, with its amount: the payables were debited exactly once.
void require_posted_once(Day& day) {
    day.open();
    const auto seen = settlement_entries(*day.ledger);
    CHECK(seen.size() == 8);
    for (const auto& [id, count] : seen) CHECK(count == 1);
    auto payable = day.ledger->lookup_account(clearing::payable_account(1002, clearing::ledgers::purse)).value();
    CHECK(payable->debits_posted == 2040);  // fee 26 + payout 2,014, once
    auto check = day.ledger->check();
    REQUIRE(check.ok());
    CHECK(check->ok());
    day.close();
}

TEST_CASE("kill -9 at random points of run, then run again: identical files, no double posting") {
    Setup s;
    TempDir pristine;  // the day before any settlement, for the second part
    std::filesystem::copy_file(s.day.data.path() / "data.mdb", pristine.path() / "data.mdb");
    // The reference: the same ledger copied, settled without interruption.
    TempDir reference_data;
    TempDir reference_out;
    std::filesystem::copy_file(s.day.data.path() / "data.mdb", reference_data.path() / "data.mdb");
    TempDir scratch;
    const Cli reference = settle(s.run_args(reference_data.path(), reference_out.path()), scratch.path());
    REQUIRE_MESSAGE(reference.code == 0, reference.output);
    const auto expected = snapshot(cycle_directory(reference_out.path(), 20260310));
    REQUIRE(expected.size() == 11);  // 9 files + cycle.json + report.html

    std::mt19937 random(7);
    int finished_before_kill = 0;
    std::map<std::string, int> states_after_kill;
    for (int round = 0; round < 30; ++round) {
        const pid_t child = spawn(s.run_args(s.day.data.path(), s.day.out()), scratch.path() / "kill.log");
        std::this_thread::sleep_for(std::chrono::microseconds(random() % 40'000));
        kill(child, SIGKILL);
        if (wait_exit(child) == 0) ++finished_before_kill;
        auto record = load_cycle(s.day.out(), 20260310);
        REQUIRE(record.ok());  // a kill never leaves a state file that does not decode
        ++states_after_kill[*record ? std::string(to_string((*record)->state)) : "none"];
    }
    std::string states;
    for (const auto& [state, count] : states_after_kill) states += fmt::format(" {} {}", state, count);
    MESSAGE("runs that finished before their kill: " << finished_before_kill << " of 30; state after each kill:" << states);
    const Cli final_run = settle(s.run_args(s.day.data.path(), s.day.out()), scratch.path());
    REQUIRE_MESSAGE(final_run.code == 0, final_run.output);
    CHECK(snapshot(cycle_directory(s.day.out(), 20260310)) == expected);
    s.day.close();
    require_posted_once(s.day);

    // A crash right after each state was saved, on the pristine ledger.
    TempDir out;
    for (const char* step : {"computed", "files_written", "posted"}) {
        const Cli crashed =
            settle(s.run_args(pristine.path(), out.path()), scratch.path(), {std::string("COCONUT_SETTLE_TEST_EXIT_AFTER=") + step});
        CHECK(crashed.code == 99);
        CHECK(to_string(load_cycle(out.path(), 20260310).value()->state) == step);
    }
    REQUIRE(settle(s.run_args(pristine.path(), out.path()), scratch.path()).code == 0);
    CHECK(snapshot(cycle_directory(out.path(), 20260310)) == expected);
}

TEST_CASE("coconut-settle: exit codes a scheduler can act on") {
    Setup s;
    TempDir scratch;
    const auto out = s.day.out().string();
    const auto data = s.day.data.path().string();
    CHECK(settle({"run", "--date", "2026-13-01", "--data", data, "--config", s.config.string(), "--direct", "--out", out}, scratch.path())
              .code == 2);
    CHECK(settle({"run", "--date", "2026-03-10", "--data", data, "--config", s.config.string(), "--out", out}, scratch.path()).code == 2);
    const Cli early =
        settle({"run", "--date", "2099-01-01", "--data", data, "--config", s.config.string(), "--direct", "--out", out}, scratch.path());
    CHECK(early.code == 3);
    CHECK(early.output.find("cut-off") != std::string::npos);
    CHECK(settle({"run", "--date", "2026-03-10", "--data", (scratch.path() / "nothing").string(), "--config", s.config.string(),
                  "--clearingd", "http://127.0.0.1:1", "--out", out},
                 scratch.path(), {"COCONUT_CLERK_TOKEN=t"})
              .code == 4);
    // Posting through an unreachable daemon: files are written, the cycle waits at files_written.
    const Cli unreachable = settle({"run", "--date", "2026-03-10", "--data", data, "--config", s.config.string(), "--clearingd",
                                    "http://127.0.0.1:1", "--out", out},
                                   scratch.path(), {"COCONUT_CLERK_TOKEN=t"});
    CHECK(unreachable.code == 7);
    CHECK(load_cycle(s.day.out(), 20260310).value()->state == CycleState::files_written);
    const Cli dry =
        settle({"run", "--date", "2026-03-11", "--data", data, "--config", s.config.string(), "--dry-run", "--out", out}, scratch.path());
    CHECK(dry.code == 0);
    CHECK(dry.output.find("dry run") != std::string::npos);
    CHECK_FALSE(std::filesystem::exists(cycle_directory(s.day.out(), 20260311)));
    const Cli ran = settle(s.run_args(data, out), scratch.path());
    REQUIRE_MESSAGE(ran.code == 0, ran.output);
    CHECK(ran.output.find("posted (resumed)") != std::string::npos);
    CHECK(ran.output.find("Haikou Bus") != std::string::npos);
}

TEST_CASE("coconut-settle: status, list, report and reconcile") {
    Setup s;
    TempDir scratch;
    const auto out = s.day.out().string();
    REQUIRE(settle(s.run_args(s.day.data.path(), s.day.out()), scratch.path()).code == 0);
    const Cli status = settle({"status", "--out", out}, scratch.path());
    CHECK(status.code == 0);
    CHECK(status.output.find("cycle 20260310 (2026-03-10): posted") != std::string::npos);
    // The window in Hainan time, not nanoseconds.
    CHECK_MESSAGE(status.output.find("window 2026-03-10 00:00:00 to 2026-03-11 00:00:00 (Hainan time, UTC+8") != std::string::npos,
                  status.output);
    CHECK(status.output.find(" ns") == std::string::npos);
    const Cli early = settle({"report", "--html", "--cycle", "20260311", "--out", out}, scratch.path());
    CHECK(early.code == 11);  // no files yet
    const Cli html = settle({"report", "--html", "--cycle", "20260310", "--out", out}, scratch.path());
    CHECK(html.code == 0);
    const auto report_path = s.day.out() / "20260310" / "report.html";
    CHECK(html.output.find(report_path.string()) != std::string::npos);
    CHECK(read(report_path).find("not yet reconciled") != std::string::npos);
    const Cli list = settle({"list", "--out", out}, scratch.path());
    CHECK(list.output.find("20260310   2026-03-10  posted") != std::string::npos);
    const Cli report = settle({"report", "--cycle", "20260310", "--out", out}, scratch.path());
    CHECK(report.code == 0);
    CHECK(report.output.find("to collect from participant 1004") != std::string::npos);

    const auto partial = scratch.path() / "partial.xml";
    write(partial, camt053({{"CC20260310-1001-P", "8.31", "B1"}}));
    const Cli incomplete = settle({"reconcile", "--cycle", "20260310", partial.string(), "--out", out}, scratch.path());
    CHECK(incomplete.code == 10);
    CHECK(incomplete.output.find("MISSING     CC20260310-1002-P") != std::string::npos);
    const auto broken = scratch.path() / "broken.xml";
    write(broken, "<Document>");
    CHECK(settle({"reconcile", "--cycle", "20260310", broken.string(), "--out", out}, scratch.path()).code == 9);
    const auto statement = scratch.path() / "statement.xml";
    write(statement,
          camt053({{"CC20260310-1001-P", "8.31", "B1"}, {"CC20260310-1002-P", "15.14", "B2"}, {"CC20260310-1003-P", "11.94", "B3"}}));
    const auto notification = scratch.path() / "notification.xml";
    write(notification, camt054({{"CC20260310-1003-M", "64.67", "M1"}}));
    const Cli full =
        settle({"reconcile", "--cycle", "2026-03-10", statement.string(), notification.string(), "--out", out}, scratch.path());
    CHECK(full.code == 0);
    CHECK(full.output.find("4 matched, 0 missing, 0 mismatched, 0 duplicate, 0 unknown: reconciled") != std::string::npos);
    CHECK(settle({"status", "--cycle", "20260310", "--out", out}, scratch.path()).output.find("reconciled") != std::string::npos);
    // reconcile renders the report again: its status line follows.
    CHECK(read(report_path).find("Reconciliation: complete — 4 matched") != std::string::npos);
}

#if defined(COCONUT_CLEARINGD_EXE) && defined(COCONUT_HSMD_EXE)

namespace {

Cli tool(const char* exe, const std::vector<std::string>& args, const std::filesystem::path& scratch) {
    const auto log = scratch / "tool.log";
    const int code = wait_exit(spawn_tool(exe, args, log));
    return Cli{code, read(log)};
}

// Waits (bounded) for a daemon's ready file: the port it listens on.
int wait_port_file(const std::filesystem::path& path, pid_t daemon) {
    for (int i = 0; i < 1000; ++i) {
        std::error_code ec;
        if (std::filesystem::file_size(path, ec) > 0 && !ec) return std::stoi(read(path));
        int status = 0;
        REQUIRE_MESSAGE(waitpid(daemon, &status, WNOHANG) == 0, "the daemon exited before it was ready");
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    FAIL("daemon not ready within 20 s: " << path.string());
    return 0;
}

// An HSM store with the clearing's client (key in SCRATCH/clearing.key) and a settlement clerk of the
// ledger in `data` (token in SCRATCH/settler.token).
struct HsmAndSettler {
    std::filesystem::path store;
    std::filesystem::path hsm_key;
    std::filesystem::path token_file;
};
HsmAndSettler hsm_and_settler(const std::filesystem::path& data, const std::filesystem::path& scratch) {
    HsmAndSettler out{scratch / "hsm-store", scratch / "clearing.key", scratch / "settler.token"};
    REQUIRE(tool(COCONUT_HSMD_EXE, {"init", "--store", out.store.string()}, scratch).code == 0);
    REQUIRE(tool(COCONUT_HSMD_EXE,
                 {"client", "add", "--store", out.store.string(), "--id", "clearing", "--permissions", "tac", "--key-out",
                  out.hsm_key.string()},
                 scratch)
                .code == 0);
    const Cli clerk =
        tool(COCONUT_CLEARINGD_EXE, {"admin", "--data", data.string(), "clerk-add", "--name", "settler", "--roles", "settlement"}, scratch);
    REQUIRE_MESSAGE(clerk.code == 0, clerk.output);
    write(out.token_file, clerk.output);
    return out;
}

// Stops a daemon this test started (by its pid).
struct Stopper {
    pid_t pid;
    ~Stopper() {
        if (pid > 0) {
            kill(pid, SIGTERM);
            int status = 0;
            waitpid(pid, &status, 0);
        }
    }
};

}  // namespace

TEST_CASE("posting through the daemon's clerk API: once, idempotent, and --direct refused while it serves") {
    Setup s;
    TempDir scratch;
    const auto data = s.day.data.path();
    const HsmAndSettler prepared = hsm_and_settler(data, scratch.path());
    const auto& store = prepared.store;
    const auto& hsm_key = prepared.hsm_key;
    const auto& token_file = prepared.token_file;
    const auto reader =
        tool(COCONUT_CLEARINGD_EXE, {"admin", "--data", data.string(), "clerk-add", "--name", "reader", "--roles", "read"}, scratch.path());
    const auto reader_token = scratch.path() / "reader.token";
    write(reader_token, reader.output);

    const auto hsm_ready = scratch.path() / "hsm.port";
    Stopper hsmd{spawn_tool(COCONUT_HSMD_EXE,
                            {"serve", "--store", store.string(), "--listen", "127.0.0.1:0", "--ready-file", hsm_ready.string()},
                            scratch.path() / "hsmd.log")};
    const int hsm_port = wait_port_file(hsm_ready, hsmd.pid);
    const auto iso_ready = scratch.path() / "iso.port";
    const auto http_ready = scratch.path() / "http.port";
    Stopper clearingd{spawn_tool(COCONUT_CLEARINGD_EXE,
                                 // No terminal connects here: the settlement clerk's HTTP API is what is tested.
                                 {"serve", "--insecure-terminals", "--iso-listen", "127.0.0.1:0", "--data", data.string(), "--hsm",
                                  fmt::format("127.0.0.1:{}", hsm_port), "--hsm-key", hsm_key.string(), "--ready-file", iso_ready.string(),
                                  "--http-listen", "127.0.0.1:0", "--http-ready-file", http_ready.string()},
                                 scratch.path() / "clearingd.log")};
    wait_port_file(iso_ready, clearingd.pid);
    const std::string endpoint = fmt::format("http://127.0.0.1:{}", wait_port_file(http_ready, clearingd.pid));

    const auto out = s.day.out();
    auto args = [&](const std::filesystem::path& o, const std::filesystem::path& token) {
        return std::vector<std::string>{"run",          "--date",          "2026-03-10",  "--data", data.string(),
                                        "--config",     s.config.string(), "--clearingd", endpoint, "--token-file",
                                        token.string(), "--out",           o.string()};
    };
    // A token the daemon refuses stops the run before any file is written: exit 14, not "retry" (7).
    const Cli wrong_role = settle(args(out, reader_token), scratch.path());
    CHECK_MESSAGE(wrong_role.code == 14, wrong_role.output);  // the read role may not post
    CHECK(wrong_role.output.find("do not include settlement") != std::string::npos);
    CHECK_FALSE(load_cycle(out, 20260310).value().has_value());
    CHECK_FALSE(std::filesystem::exists(cycle_directory(out, 20260310) / "summary.json"));
    const auto unknown_token = scratch.path() / "unknown.token";
    write(unknown_token, "cc_clerk_0000000000000000000000000000000000000000\n");
    const Cli unknown = settle(args(out, unknown_token), scratch.path());
    CHECK_MESSAGE(unknown.code == 14, unknown.output);
    CHECK(unknown.output.find("refused the clerk token (401") != std::string::npos);
    CHECK_FALSE(load_cycle(out, 20260310).value().has_value());
    const Cli posted = settle(args(out, token_file), scratch.path());
    REQUIRE_MESSAGE(posted.code == 0, posted.output);
    CHECK(posted.output.find("8 transfers posted now (8 new, 0 already booked)") != std::string::npos);
    const Cli direct =
        settle({"run", "--date", "2026-03-11", "--data", data.string(), "--config", s.config.string(), "--direct", "--out", out.string()},
               scratch.path());
    CHECK(direct.code == 8);
    // The same cycle settled again from scratch (its state lost): the daemon books nothing new.
    TempDir again;
    const Cli reposted = settle(args(again.path(), token_file), scratch.path());
    REQUIRE_MESSAGE(reposted.code == 0, reposted.output);
    CHECK(reposted.output.find("8 transfers posted now (0 new, 8 already booked)") != std::string::npos);
    CHECK(snapshot(cycle_directory(again.path(), 20260310)) == snapshot(cycle_directory(out, 20260310)));

    kill(clearingd.pid, SIGTERM);
    CHECK(wait_exit(clearingd.pid) == 0);
    clearingd.pid = 0;
    require_posted_once(s.day);
}

namespace {

// A certificate authority and a server certificate for 127.0.0.1 under it, written as PEM files.
struct TestPki {
    std::filesystem::path ca, certificate, key;
};
TestPki make_pki(const std::filesystem::path& dir, const std::string& name) {
    using namespace std::chrono;
    const auto now = system_clock::now();
    auto ca_key = tls::generate_key().value();
    auto ca = tls::make_ca_certificate(ca_key, name + " CA", now - hours(1), now + hours(48), tls::random_serial()).value();
    auto server_key = tls::generate_key().value();
    auto request = tls::make_request(server_key, {"clearingd", std::string(tls::server_organization)}).value();
    tls::IssueOptions options{tls::Profile::server, "clearingd", {"IP:127.0.0.1"}, now - hours(1), now + hours(24), tls::random_serial()};
    auto certificate = tls::issue_certificate(request, options, ca, ca_key).value();
    TestPki pki{dir / (name + "-ca.pem"), dir / (name + "-server.pem"), dir / (name + "-server.key")};
    REQUIRE(tls::write_certificate(pki.ca, ca).ok());
    REQUIRE(tls::write_certificate(pki.certificate, certificate).ok());
    REQUIRE(tls::write_private_key(pki.key, server_key).ok());
    return pki;
}

}  // namespace

TEST_CASE("posting over HTTPS: the daemon's certificate verified against --ca; a wrong CA posts nothing (exit 12)") {
    Setup s;
    TempDir scratch;
    const auto data = s.day.data.path();
    const HsmAndSettler prepared = hsm_and_settler(data, scratch.path());
    const auto& store = prepared.store;
    const auto& hsm_key = prepared.hsm_key;
    const auto& token_file = prepared.token_file;
    const TestPki pki = make_pki(scratch.path(), "island");
    const TestPki stranger = make_pki(scratch.path(), "stranger");

    const auto hsm_ready = scratch.path() / "hsm.port";
    Stopper hsmd{spawn_tool(COCONUT_HSMD_EXE,
                            {"serve", "--store", store.string(), "--listen", "127.0.0.1:0", "--ready-file", hsm_ready.string()},
                            scratch.path() / "hsmd.log")};
    const int hsm_port = wait_port_file(hsm_ready, hsmd.pid);
    const auto iso_ready = scratch.path() / "iso.port";
    const auto http_ready = scratch.path() / "http.port";
    Stopper clearingd{spawn_tool(COCONUT_CLEARINGD_EXE,
                                 {"serve",
                                  "--insecure-terminals",
                                  "--iso-listen",
                                  "127.0.0.1:0",
                                  "--data",
                                  data.string(),
                                  "--hsm",
                                  fmt::format("127.0.0.1:{}", hsm_port),
                                  "--hsm-key",
                                  hsm_key.string(),
                                  "--ready-file",
                                  iso_ready.string(),
                                  "--http-listen",
                                  "127.0.0.1:0",
                                  "--http-ready-file",
                                  http_ready.string(),
                                  "--http-tls-cert",
                                  pki.certificate.string(),
                                  "--http-tls-key",
                                  pki.key.string()},
                                 scratch.path() / "clearingd.log")};
    wait_port_file(iso_ready, clearingd.pid);
    const int http_port = wait_port_file(http_ready, clearingd.pid);

    const auto out = s.day.out();
    auto args = [&](const std::string& scheme, const std::vector<std::string>& extra) {
        std::vector<std::string> a{"run",
                                   "--date",
                                   "2026-03-10",
                                   "--data",
                                   data.string(),
                                   "--config",
                                   s.config.string(),
                                   "--clearingd",
                                   fmt::format("{}://127.0.0.1:{}", scheme, http_port),
                                   "--token-file",
                                   token_file.string(),
                                   "--out",
                                   out.string()};
        a.insert(a.end(), extra.begin(), extra.end());
        return a;
    };
    const Cli no_ca = settle(args("https", {}), scratch.path());
    CHECK(no_ca.code == 2);
    CHECK(no_ca.output.find("--ca") != std::string::npos);
    const Cli wrong_ca = settle(args("https", {"--ca", stranger.ca.string()}), scratch.path());
    CHECK(wrong_ca.code == 12);
    CHECK_MESSAGE(wrong_ca.output.find("certificate was refused") != std::string::npos, wrong_ca.output);
    CHECK_FALSE(load_cycle(out, 20260310).value().has_value());  // refused while asking about the token: nothing written
    const Cli plain = settle(args("http", {}), scratch.path());
    CHECK(plain.code == 7);  // the daemon serves HTTPS only
    const Cli posted = settle(args("https", {"--ca", pki.ca.string()}), scratch.path());
    REQUIRE_MESSAGE(posted.code == 0, posted.output);
    // 8 new: neither the wrong CA nor plain HTTP booked anything.
    CHECK_MESSAGE(posted.output.find("8 transfers posted now (8 new, 0 already booked)") != std::string::npos, posted.output);

    kill(clearingd.pid, SIGTERM);
    CHECK(wait_exit(clearingd.pid) == 0);
    clearingd.pid = 0;
    require_posted_once(s.day);
}

#endif

TEST_CASE("coconut-settle dormant prints the dormancy report as CSV; run pays a refund to the account of the returns table") {
    Day d;
    d.at(local_ns(day, 9, 0));
    auto returns = clearing::CardReturns::open(d.ledger->env());
    REQUIRE(returns.ok());
    auto apply = [&](const std::vector<ledger::Event>& events) {
        auto results = d.ledger->apply(events);
        REQUIRE(results.ok());
        for (const auto& r : *results) CHECK_MESSAGE(ledger::succeeded(r.code), ledger::to_string(r.code));
    };
    // Card 1 sold as a tourist card by 1004 (deposit 1,000); card 2's balance taken by 1004 and refunded by bank.
    apply(clearing::sale_events(card(1), 1004, 1000));
    d.purchase(1004, 2500, 2);
    apply(clearing::return_events({card(2), 1004, clearing::Payout::bank, 2500, 0, {}}));
    {
        auto txn = lmdb::Txn::begin(d.ledger->env(), lmdb::Txn::Mode::read_write);
        REQUIRE(txn.ok());
        REQUIRE((*returns)->put_tourist(*txn, clearing::TouristRecord{card(1), 1004, 1000, local_ns(day, 9, 0), 0, 0}).ok());
        clearing::ReturnRecord r;
        r.asn = card(2);
        r.payout = clearing::Payout::bank;
        r.counter_id = 1004;
        r.balance_fen = 2500;
        r.bank_account = "6222000099990002";
        r.account_holder = "Wang Fang";
        REQUIRE((*returns)->put_return(*txn, r).ok());
        REQUIRE(txn->commit().ok());
    }
    d.at(local_ns(day_after, 1, 0));
    returns->reset();
    d.close();
    TempDir scratch;
    const std::string data = d.data.path().string();
    const Cli report = settle({"dormant", "--data", data}, scratch.path());
    REQUIRE_MESSAGE(report.code == 0, report.output);
    CHECK(report.output.rfind("card_number,asn,what,status,balance_fen,deposit_fen,refund_fen,last_activity_utc,days_dormant\n", 0) == 0);
    CHECK(report.output.find("0000000000000001,46010000000000000001,tourist,active,100000,1000,0,") != std::string::npos);
    CHECK(report.output.find("0000000000000002,46010000000000000002,refund_unpaid,active,97500,0,2500,") != std::string::npos);

    const auto config = scratch.path() / "config.json";
    write(config, config_json);
    const Cli ran =
        settle({"run", "--date", "2026-03-10", "--data", data, "--config", config.string(), "--direct", "--out", d.out().string()},
               scratch.path());
    REQUIRE_MESSAGE(ran.code == 0, ran.output);
    const std::string pain = read(cycle_directory(d.out(), 20260310) / "pain001-20260310-purse-float.xml");
    CHECK(pain.find("<EndToEndId>CC20260310-R0000000000000002</EndToEndId>") != std::string::npos);
    CHECK(pain.find("<Id>6222000099990002</Id>") != std::string::npos);
    CHECK(pain.find("<Nm>Wang Fang</Nm>") != std::string::npos);
    // Paid: the refund is no longer in the report.
    const Cli after = settle({"dormant", "--data", data}, scratch.path());
    CHECK(after.output.find("refund_unpaid") == std::string::npos);
}
