// clearingd_http_bench: balance queries per second and their p99 through the clearing daemon's HTTP API
// (64 connections from Debian's `wrk`, every request a different card with its own token) while the
// ledger takes writes, and the ledger's write throughput with and without that query load, in one run.
//
// In process: the daemon's ledger, registry, ledger writer and HttpServer (one HTTP thread, as
// coconut-clearingd runs it). The write load is booking-shaped transfers (card purse shadow → bus
// payable, 1 fen, one per writer request, `--write-window` requests in flight) submitted straight to
// the ledger writer: the same group commit the engine uses, without ISO 8583 parsing and TAC checks
// (clearingd_bench measures that path). The write load runs without pause from a warm-up through
// phases 1 and 2, which alternate in --rounds rounds of --seconds / --rounds each, so that the disk's
// drift from minute to minute and the ledger's growth weigh on both alike; then phase 3:
//   1. writes alone            → writes/s (baseline)
//   2. writes + wrk queries    → writes/s under query load, queries/s, p99 (the worst round's)
//   3. wrk queries alone       → queries/s without writes (reference), one run of --seconds
// and, for phases 1 and 2, what the ledger writer thread did: CPU ms/s, ms/s runnable but waiting for a
// core (/proc/self/task/TID/schedstat), commits/s, requests per commit, ms per commit.
//
// Scheduling: the HTTP threads run at --http-priority (default: coconut-clearingd's, nice:10, below the
// writer: bookings before queries, clearing/README.md "Scheduling"). wrk runs at --wrk-priority, by
// default the same (`nice -n 10 wrk …`; idle: `chrt --idle 0 wrk …`): in production the query clients
// are phones elsewhere, here they share the writer's 2 cores, so the whole query side — client and
// server — yields to the writer alike. wrk still saturates the server (no rate cap: each connection
// sends its next request as soon as the answer arrives). `--wrk-priority normal --http-priority normal`
// gives the former setting; docs/BENCHMARKS.md has both.
//
//   clearingd_http_bench [--cards 1000] [--connections 64] [--wrk-threads 2] [--seconds 10] [--rounds 5]
//                        [--write-window 512] [--http-threads 1] [--dir /var/tmp]
//                        [--http-priority nice:10] [--wrk-priority nice:10] [--query-target PATH]
//                        [--wrk-delay-ms 0] [--writer-cpu auto]
// --writer-cpu (coconut-clearingd's, default auto): the ledger writer alone on one CPU; the HTTP threads,
// the write load's thread and wrk (taskset) on the others — the query clients would otherwise take the
// writer's CPU, which in production they do not share.
// --wrk-delay-ms D paces the query load through wrk's delay() hook (64 connections / (D + latency):
// D = 2 gives ~20,000/s) to measure the write drop at the target rate instead of at saturation.
#include <coconut/core/log.hpp>
#include <coconut/clearing/check.hpp>
#include <coconut/clearing/daemon.hpp>
#include <coconut/clearing/http.hpp>
#include <coconut/clearing/scheduling.hpp>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <regex>
#include <thread>

namespace {

using namespace coconut;
using namespace coconut::clearing;
namespace http = coconut::clearing::http;
using Clock = std::chrono::steady_clock;

std::string asn_digits(std::size_t card) { return fmt::format("4601{:016d}", card + 1); }

Asn asn_of(std::size_t card) {
    Asn asn{};
    const Bytes bcd = *digits_to_bcd(asn_digits(card));
    std::copy(bcd.begin(), bcd.end(), asn.begin());
    return asn;
}

// Keeps `window` booking-shaped transfers in flight at the writer, on a thread of its own, from start()
// until stop(); counts completions. The load runs on without pause through the phases, which only read
// the count at their edges: no phase starts with an empty pipeline or with a younger, smaller ledger.
class WriteLoad {
public:
    WriteLoad(ledger::Writer& writer, std::size_t cards, std::size_t window, std::uint64_t first_id)
        : writer_(writer), cards_(cards), window_(window), next_id_(first_id) {}
    ~WriteLoad() { stop(); }

    void start() {
        stopping_ = false;
        thread_ = std::thread([this] { drive(); });
    }
    // Stops submitting and waits until every write in flight is answered.
    void stop() {
        {
            std::lock_guard lock(mutex_);
            stopping_ = true;
        }
        done_.notify_all();
        if (thread_.joinable()) thread_.join();
    }
    std::uint64_t completed() const { return completed_.load(); }
    std::uint64_t failed() const { return failed_.load(); }
    pid_t writer_tid() const { return writer_tid_.load(std::memory_order_relaxed); }
    pid_t submitter_tid() const { return submitter_tid_.load(std::memory_order_relaxed); }

private:
    void drive() {
        submitter_tid_.store(::gettid(), std::memory_order_relaxed);
        std::unique_lock lock(mutex_);
        while (!stopping_) {
            while (in_flight_ < window_) {
                ++in_flight_;
                lock.unlock();
                submit();
                lock.lock();
            }
            done_.wait(lock, [&] { return stopping_ || in_flight_ < window_; });
        }
        done_.wait(lock, [&] { return in_flight_ == 0; });
    }

    void submit() {
        const std::uint64_t id = next_id_++;
        ledger::Transfer t;
        t.id = ledger::make_id(id);
        t.debit_account_id = purse_shadow_account(asn_of(id % cards_));
        t.credit_account_id = payable_account(1001, ledgers::purse);
        t.amount = 1;
        t.ledger = ledgers::purse;
        t.code = transfer_codes::offline_purchase;
        t.user_data_64 = 1001;
        writer_.submit({t}, [this](ledger::Reply reply) {
            writer_tid_.store(::gettid(), std::memory_order_relaxed);  // callbacks run on the writer thread
            if (!reply || !ledger::succeeded(reply->front().code)) ++failed_;
            ++completed_;
            std::lock_guard lock(mutex_);
            --in_flight_;
            done_.notify_all();
        });
    }

    ledger::Writer& writer_;
    const std::size_t cards_;
    const std::size_t window_;
    std::atomic<std::uint64_t> next_id_;
    std::mutex mutex_;
    std::condition_variable done_;
    bool stopping_ = false;
    std::size_t in_flight_ = 0;
    std::atomic<std::uint64_t> completed_{0};
    std::atomic<std::uint64_t> failed_{0};
    std::atomic<pid_t> writer_tid_{0};
    std::atomic<pid_t> submitter_tid_{0};
    std::thread thread_;
};

// What the ledger writer thread did during a phase: its CPU time and the time it was runnable but
// waiting for a core (/proc/self/task/TID/schedstat), and its commits (WriterStats). Tells a writer
// starved of CPU or descheduled from one slowed by its own work or the disk.
struct WriterSample {
    std::uint64_t run_ns = 0, wait_ns = 0;                      // the writer thread
    std::uint64_t submitter_run_ns = 0, submitter_wait_ns = 0;  // the write load's thread: stands for terminal I/O
    std::uint64_t writes = 0;
    Clock::time_point at;
    ledger::WriterStats stats;
    static WriterSample take(const WriteLoad& load, const ledger::Writer& writer) {
        WriterSample out;
        std::ifstream(fmt::format("/proc/self/task/{}/schedstat", load.writer_tid())) >> out.run_ns >> out.wait_ns;
        std::ifstream(fmt::format("/proc/self/task/{}/schedstat", load.submitter_tid())) >> out.submitter_run_ns >> out.submitter_wait_ns;
        out.writes = load.completed();
        out.stats = writer.stats();
        out.at = Clock::now();
        return out;
    }
};

// A phase's sums over its rounds.
struct PhaseTotals {
    double seconds = 0;
    std::uint64_t writes = 0, run_ns = 0, wait_ns = 0, submitter_run_ns = 0, submitter_wait_ns = 0;
    std::uint64_t commits = 0, requests = 0, commit_us = 0;
    std::vector<double> round_writes_per_s;

    void add(const WriterSample& a, const WriterSample& b) {
        const double s = std::chrono::duration<double>(b.at - a.at).count();
        seconds += s;
        writes += b.writes - a.writes;
        round_writes_per_s.push_back(static_cast<double>(b.writes - a.writes) / s);
        run_ns += b.run_ns - a.run_ns;
        wait_ns += b.wait_ns - a.wait_ns;
        submitter_run_ns += b.submitter_run_ns - a.submitter_run_ns;
        submitter_wait_ns += b.submitter_wait_ns - a.submitter_wait_ns;
        commits += b.stats.commits - a.stats.commits;
        requests += b.stats.requests - a.stats.requests;
        commit_us += b.stats.commit_us_sum - a.stats.commit_us_sum;
    }
    double writes_per_s() const { return seconds > 0 ? static_cast<double>(writes) / seconds : 0.0; }
    std::string writer_report() const {
        const auto per_s = [&](std::uint64_t ns) { return static_cast<double>(ns) / 1e6 / seconds; };
        const double c = static_cast<double>(commits);
        return fmt::format(
            "writer thread: CPU {:.0f} ms/s, runnable-but-waiting {:.0f} ms/s; submitter: CPU {:.0f} ms/s, waiting {:.0f} ms/s; "
            "{:.0f} commits/s of {:.0f} requests, {:.2f} ms each",
            per_s(run_ns), per_s(wait_ns), per_s(submitter_run_ns), per_s(submitter_wait_ns), c / seconds,
            commits ? static_cast<double>(requests) / c : 0.0, commits ? static_cast<double>(commit_us) / c / 1000.0 : 0.0);
    }
};

struct WrkResult {
    double requests_per_s = 0;
    double requests = 0, seconds = 0;  // what the rate is made of
    double p99_ms = 0;
    std::uint64_t non_2xx = 0;
    std::string command;
};

double to_ms(const std::string& value, const std::string& unit) {
    const double v = std::stod(value);
    if (unit == "us") return v / 1000.0;
    if (unit == "s") return v * 1000.0;
    if (unit == "m") return v * 60'000.0;
    return v;
}

WrkResult run_wrk(const std::string& command) {
    WrkResult result;
    result.command = command;
    FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
    if (!pipe) throw std::runtime_error("cannot run wrk");
    std::string out;
    char buffer[4096];
    while (std::fgets(buffer, sizeof buffer, pipe)) out += buffer;
    if (::pclose(pipe) != 0) throw std::runtime_error("wrk failed:\n" + out);
    std::smatch m;
    if (std::regex_search(out, m, std::regex(R"(Requests/sec:\s+([0-9.]+))"))) result.requests_per_s = std::stod(m[1]);
    if (std::regex_search(out, m, std::regex(R"(99%\s+([0-9.]+)(us|ms|s))"))) result.p99_ms = to_ms(m[1], m[2]);
    if (std::regex_search(out, m, std::regex(R"(([0-9]+) requests in ([0-9.]+)(us|ms|s|m))"))) {
        result.requests = std::stod(m[1]);
        result.seconds = to_ms(m[2], m[3]) / 1000.0;
    }
    if (std::regex_search(out, m, std::regex(R"(Non-2xx or 3xx responses:\s+([0-9]+))"))) result.non_2xx = std::stoull(m[1]);
    return result;
}

// The wrk script: every request a different card with its own bearer token, round robin.
// `fixed_target` non-empty: every request goes there instead (with the same tokens), e.g. "/none" (404
// without a ledger read) to tell the HTTP floor from the cost of the reads.
void write_script(const std::filesystem::path& path, const std::filesystem::path& tokens_dir, std::size_t cards,
                  const std::string& fixed_target, unsigned delay_ms) {
    std::ofstream out(path);
    out << "local cards = {\n";
    for (std::size_t c = 0; c < cards; ++c) {
        const std::string number = asn_digits(c).substr(4);
        std::ifstream token_file(tokens_dir / (number + ".token"));
        std::string token;
        std::getline(token_file, token);
        out << fmt::format("  {{\"{}\", \"{}\"}},\n", number, token);
    }
    out << "}\n"
           "local i = 0\n"
           "request = function()\n"
           "  i = i + 1\n"
           "  local c = cards[(i % #cards) + 1]\n"
           "  return wrk.format(\"GET\", "
        << (fixed_target.empty() ? std::string("\"/v1/cards/\" .. c[1]") : "\"" + fixed_target + "\"")
        << ", {[\"Authorization\"] = \"Bearer \" .. c[2]})\n"
           "end\n";
    // wrk's delay(): each connection waits this long after an answer before its next request.
    if (delay_ms) out << "delay = function() return " << delay_ms << " end\n";
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"clearingd_http_bench: balance queries/s and p99 (wrk) while the ledger takes writes"};
    // Warnings and errors only: an access line per request would measure the log, not the daemon.
    coconut::log::Settings log_settings;
    log_settings.level = coconut::log::Level::warning;
    coconut::log::configure(log_settings);
    std::size_t cards = 1000, connections = 64, wrk_threads = 2, write_window = 512, http_threads = 1;
    std::string http_priority{http::http_thread_priority_default}, wrk_priority{http::http_thread_priority_default};
    unsigned seconds = 10, rounds = 5, warmup_seconds = 5;
    std::string base = "/var/tmp";
    app.add_option("--cards", cards)->capture_default_str();
    app.add_option("--connections", connections)->capture_default_str();
    app.add_option("--wrk-threads", wrk_threads)->capture_default_str();
    app.add_option("--seconds", seconds, "length of each phase, summed over its rounds")
        ->capture_default_str()
        ->check(CLI::Range(1u, 3600u));
    app.add_option("--rounds", rounds, "phases 1 and 2 alternate this many times (--seconds / --rounds each, whole seconds)")
        ->capture_default_str()
        ->check(CLI::Range(1u, 100u));
    app.add_option("--warmup-seconds", warmup_seconds, "writes before the first round, not counted")->capture_default_str();
    app.add_option("--write-window", write_window, "writer requests in flight")->capture_default_str();
    app.add_option("--http-threads", http_threads, "HTTP I/O threads (coconut-clearingd --http-threads)")->capture_default_str();
    auto priority_check = [](const std::string& text) {
        return http::parse_thread_priority(text) ? std::string() : "idle, nice:N or normal";
    };
    app.add_option("--http-priority", http_priority, "scheduling of the HTTP threads (coconut-clearingd --http-priority)")
        ->capture_default_str()
        ->check(priority_check);
    app.add_option("--wrk-priority", wrk_priority, "scheduling of wrk, the query load's client side (idle: chrt --idle, nice:N: nice)")
        ->capture_default_str()
        ->check(priority_check);
    std::string query_target;
    unsigned delay_ms = 0;
    app.add_option("--wrk-delay-ms", delay_ms, "each connection waits this long between an answer and its next request (0: saturate)")
        ->capture_default_str();
    app.add_option("--query-target", query_target,
                   "send every query to this path instead of /v1/cards/{n} (diagnosis: \"/none\" is a 404 without ledger reads)");
    std::string writer_cpu{writer_cpu_default};
    app.add_option("--writer-cpu", writer_cpu,
                   "coconut-clearingd --writer-cpu: the ledger writer alone on this CPU (off, auto or N); the HTTP threads, "
                   "the write load's thread and wrk on the others")
        ->capture_default_str();
    app.add_option("--dir", base, "where the ledger lives (a real disk: commits are synced)")->capture_default_str();
    CLI11_PARSE(app, argc, argv);

    auto layout = plan_cpu_layout(writer_cpu);
    if (!layout) {
        fmt::print(stderr, "{}\n", layout.error().message);
        return 2;
    }
    const std::filesystem::path dir = std::filesystem::path(base) / fmt::format("clearingd-http-bench-{}", ::getpid());
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir / "data");
    // The daemon as coconut-clearingd runs it, without an ISO 8583 listener: threads started from here on
    // inherit the others' CPUs (the HTTP threads, the write load's thread); the writer moves to its own.
    hsm::KeyStore::init(dir / "hsm").value();  // no key: nothing here asks the HSM
    LocalHsm no_hsm(std::make_shared<const hsm::Hsm>(std::make_shared<const hsm::KeyStore>(hsm::KeyStore::open(dir / "hsm").value())),
                    "mk-tac");
    DaemonOptions daemon_options;
    daemon_options.data = dir / "data";
    daemon_options.cpu_layout = *layout;
    daemon_options.local_hsm = &no_hsm;
    daemon_options.expiry_scan_interval = std::chrono::milliseconds(0);  // no engine traffic: nothing expires
    http::HttpOptions& http_options = daemon_options.http.emplace();
    http_options.io_threads = http_threads;
    http_options.token_requests_per_s = 1e9;  // the limiter still runs on every request, it just never refuses
    http_options.token_burst = 1e9;
    http_options.connections_max = std::max<std::size_t>(connections * 2, http::http_connections_max_default);
    daemon_options.http_priority = *http::parse_thread_priority(http_priority);
    auto opened = Daemon::open(std::move(daemon_options));
    if (!opened) throw std::runtime_error(opened.error().message);
    std::unique_ptr<Daemon> daemon = std::move(opened).value();
    std::string json = R"({"participants": [{"id": 1001, "name": "bus", "kind": "bus", "bank_account": "1"}], "cards": [)";
    for (std::size_t c = 0; c < cards; ++c) {
        json +=
            fmt::format(R"({}{{"asn": "{}", "issuer_id": "4600000000000001", "purse_balance_fen": 90000000, "medical_balance_fen": 1000}})",
                        c ? "," : "", asn_digits(c));
    }
    json += "]}";
    if (auto loaded = load_registry(daemon->ledger(), daemon->registry(), json); !loaded) throw std::runtime_error(loaded.error().message);
    if (auto issued = http::issue_card_tokens(daemon->ledger(), daemon->registry(), daemon->tokens(), {}, dir / "tokens");
        !issued || *issued != cards) {
        throw std::runtime_error("issuing tokens failed");
    }
    write_script(dir / "cards.lua", dir / "tokens", cards, query_target, delay_ms);
    if (auto started = daemon->start(); !started) {
        fmt::print(stderr, "{}\n", started.error().message);
        return 2;
    }
    daemon->run_in_background();
    ledger::Writer& writer = daemon->writer();
    const http::HttpServer& server = *daemon->http_server();

    const http::ThreadPriority wrk_sched = *http::parse_thread_priority(wrk_priority);
    const std::string wrk_prefix = (*layout ? fmt::format("taskset -c {} ", format_cpus((*layout)->others)) : std::string()) +
                                   (wrk_sched.idle   ? "chrt --idle 0 "
                                    : wrk_sched.nice ? fmt::format("nice -n {} ", wrk_sched.nice)
                                                     : "");
    const auto wrk_command = [&](unsigned duration_s) {
        return fmt::format("{}wrk -t{} -c{} -d{}s --latency -s {} http://127.0.0.1:{}", wrk_prefix, wrk_threads, connections, duration_s,
                           (dir / "cards.lua").string(), server.port());
    };
    if (seconds % rounds != 0) {
        fmt::print(stderr, "--seconds {} is not a whole number of seconds per round for --rounds {}\n", seconds, rounds);
        return 2;
    }
    const unsigned slice_s = seconds / rounds;
    const auto slice = std::chrono::seconds(slice_s);

    fmt::print(
        "clearingd_http_bench: {} cards, {} connections, {} HTTP thread(s) at priority {}, wrk at {}, {} s per phase in {} rounds, "
        "ledger in {}; {}\n",
        cards, connections, http_threads, http_priority, wrk_priority, seconds, rounds, dir.string(),
        *layout
            ? fmt::format("ledger writer on CPU {}, everything else (wrk too) on CPU {}", (*layout)->writer, format_cpus((*layout)->others))
            : std::string("no CPU layout"));
    // One write load for phases 1 and 2, never paused between them; they alternate round by round, so
    // the disk's drift and the ledger's growth fall on both alike.
    WriteLoad writes(writer, cards, write_window, 1'000'000);
    writes.start();
    std::this_thread::sleep_for(std::chrono::seconds(warmup_seconds) + std::chrono::milliseconds(100));
    PhaseTotals alone_totals, loaded_totals;
    double loaded_requests = 0, loaded_seconds = 0, worst_p99 = 0;
    std::uint64_t loaded_non_2xx = 0;
    std::vector<double> round_p99;
    for (unsigned round = 0; round < rounds; ++round) {
        auto a = WriterSample::take(writes, writer);
        std::this_thread::sleep_for(slice);
        alone_totals.add(a, WriterSample::take(writes, writer));

        // wrk runs one second longer than the window counted: it connects before the window opens and
        // is still running when it closes, and the writes go on until it exits.
        WrkResult loaded;
        std::thread query_load([&] { loaded = run_wrk(wrk_command(slice_s + 1)); });
        std::this_thread::sleep_for(std::chrono::milliseconds(300));
        a = WriterSample::take(writes, writer);
        std::this_thread::sleep_for(slice);
        loaded_totals.add(a, WriterSample::take(writes, writer));
        query_load.join();
        loaded_requests += loaded.requests;
        loaded_seconds += loaded.seconds;
        loaded_non_2xx += loaded.non_2xx;
        worst_p99 = std::max(worst_p99, loaded.p99_ms);
        round_p99.push_back(loaded.p99_ms);
    }
    writes.stop();
    const WrkResult alone = run_wrk(wrk_command(seconds));

    const double writes_alone = alone_totals.writes_per_s(), writes_loaded = loaded_totals.writes_per_s();
    const double queries_loaded = loaded_seconds > 0 ? loaded_requests / loaded_seconds : 0.0;
    const auto list = [](const std::vector<double>& values, const char* format) {
        std::string out;
        for (double v : values) out += (out.empty() ? "" : " · ") + fmt::format(fmt::runtime(format), v);
        return out;
    };
    fmt::print("  1. writes alone:                {:>9.0f} writes/s (rounds: {})\n", writes_alone,
               list(alone_totals.round_writes_per_s, "{:.0f}"));
    fmt::print(
        "  2. writes with query load:      {:>9.0f} writes/s (rounds: {}); queries {:.0f}/s, p99 {:.2f} ms worst round "
        "(rounds: {}), non-2xx {}\n",
        writes_loaded, list(loaded_totals.round_writes_per_s, "{:.0f}"), queries_loaded, worst_p99, list(round_p99, "{:.2f}"),
        loaded_non_2xx);
    fmt::print("  3. queries alone:               {:>9.0f} queries/s, p99 {:.2f} ms, non-2xx {}\n", alone.requests_per_s, alone.p99_ms,
               alone.non_2xx);
    fmt::print("  write throughput under query load: {:.2f} x alone ({:+.1f} %); target: drop < 10 %\n", writes_loaded / writes_alone,
               (writes_loaded / writes_alone - 1.0) * 100.0);
    fmt::print("  queries under write load: {:.0f}/s at p99 {:.2f} ms (worst round); target: >= 20,000/s at p99 <= 5 ms\n", queries_loaded,
               worst_p99);
    fmt::print("  1: {}\n  2: {}\n", alone_totals.writer_report(), loaded_totals.writer_report());
    fmt::print("  wrk command (phase 2 rounds): {}\n", wrk_command(slice_s + 1));
    if (writes.failed() != 0) fmt::print("  WARNING: {} writes failed\n", writes.failed());

    daemon.reset();  // the HTTP threads joined, the writer stopped
    std::filesystem::remove_all(dir);
    return 0;
}
