// clearingd_http_bench: balance queries per second and their p99 through the clearing daemon's HTTP API
// (64 connections from Debian's `wrk`, every request a different card with its own token) while the
// ledger takes writes, and the ledger's write throughput with and without that query load, in one run.
//
// In process: the daemon's ledger, registry, ledger writer and HttpServer (one HTTP thread, as
// coconut-clearingd runs it). The write load is booking-shaped transfers (card purse shadow → bus
// payable, 1 fen, one per writer request, `--write-window` requests in flight) submitted straight to
// the ledger writer: the same group commit the engine uses, without ISO 8583 parsing and TAC checks
// (clearingd_bench measures that path). Phases, each --seconds long:
//   1. writes alone            → writes/s (baseline)
//   2. writes + wrk queries    → writes/s under query load, queries/s, p99
//   3. wrk queries alone       → queries/s without writes (reference)
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
//   clearingd_http_bench [--cards 1000] [--connections 64] [--wrk-threads 2] [--seconds 10]
//                        [--write-window 512] [--http-threads 1] [--dir /var/tmp]
//                        [--http-priority nice:10] [--wrk-priority nice:10] [--query-target PATH]
//                        [--wrk-delay-ms 0]
// --wrk-delay-ms D paces the query load through wrk's delay() hook (64 connections / (D + latency):
// D = 2 gives ~20,000/s) to measure the write drop at the target rate instead of at saturation.
#include <coconut/clearing/http.hpp>

#include <boost/asio/io_context.hpp>
#include <CLI/CLI.hpp>
#include <fmt/format.h>

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

// Keeps `window` booking-shaped transfers in flight at the writer until stopped; counts completions.
class WriteLoad {
public:
    WriteLoad(ledger::Writer& writer, std::size_t cards, std::size_t window, std::uint64_t first_id)
        : writer_(writer), cards_(cards), window_(window), next_id_(first_id) {}

    // Runs for `duration`; returns committed writes per second.
    double run(std::chrono::seconds duration) {
        completed_ = 0;
        failed_ = 0;
        const auto start = Clock::now();
        const auto end = start + duration;
        std::unique_lock lock(mutex_);
        while (Clock::now() < end) {
            while (in_flight_ < window_) {
                ++in_flight_;
                lock.unlock();
                submit();
                lock.lock();
            }
            done_.wait_until(lock, end, [&] { return in_flight_ < window_; });
        }
        const std::uint64_t counted = completed_;
        const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
        done_.wait(lock, [&] { return in_flight_ == 0; });  // drain before the next phase
        return static_cast<double>(counted) / seconds;
    }
    std::uint64_t failed() const { return failed_; }
    pid_t writer_tid() const { return writer_tid_.load(std::memory_order_relaxed); }

private:
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
            std::lock_guard lock(mutex_);
            if (!reply || !ledger::succeeded(reply->front().code)) ++failed_;
            ++completed_;
            --in_flight_;
            done_.notify_one();
        });
    }

    ledger::Writer& writer_;
    const std::size_t cards_;
    const std::size_t window_;
    std::atomic<std::uint64_t> next_id_;
    std::mutex mutex_;
    std::condition_variable done_;
    std::size_t in_flight_ = 0;
    std::uint64_t completed_ = 0;
    std::uint64_t failed_ = 0;
    std::atomic<pid_t> writer_tid_{0};
};

// What the ledger writer thread did during a phase: its CPU time and the time it was runnable but
// waiting for a core (/proc/self/task/TID/schedstat), and its commits (WriterStats). Tells a writer
// starved of CPU or descheduled from one slowed by its own work or the disk.
struct WriterSample {
    std::uint64_t run_ns = 0, wait_ns = 0;                      // the writer thread
    std::uint64_t submitter_run_ns = 0, submitter_wait_ns = 0;  // this thread: submits, stands for terminal I/O
    ledger::WriterStats stats;
    static WriterSample take(pid_t tid, const ledger::Writer& writer) {
        WriterSample out;
        std::ifstream(fmt::format("/proc/self/task/{}/schedstat", tid)) >> out.run_ns >> out.wait_ns;
        std::ifstream(fmt::format("/proc/self/task/{}/schedstat", ::gettid())) >> out.submitter_run_ns >> out.submitter_wait_ns;
        out.stats = writer.stats();
        return out;
    }
};

std::string writer_report(const WriterSample& a, const WriterSample& b, double seconds) {
    const double commits = static_cast<double>(b.stats.commits - a.stats.commits);
    const auto per_s = [&](std::uint64_t from, std::uint64_t to) { return static_cast<double>(to - from) / 1e6 / seconds; };
    return fmt::format("writer thread: CPU {:.0f} ms/s, runnable-but-waiting {:.0f} ms/s; submitter: CPU {:.0f} ms/s, waiting {:.0f} ms/s; "
                       "{:.0f} commits/s of {:.0f} requests, {:.2f} ms each",
                       per_s(a.run_ns, b.run_ns), per_s(a.wait_ns, b.wait_ns), per_s(a.submitter_run_ns, b.submitter_run_ns),
                       per_s(a.submitter_wait_ns, b.submitter_wait_ns),
                       commits / seconds, commits ? static_cast<double>(b.stats.requests - a.stats.requests) / commits : 0.0,
                       commits ? static_cast<double>(b.stats.commit_us_sum - a.stats.commit_us_sum) / commits / 1000.0 : 0.0);
}

struct WrkResult {
    double requests_per_s = 0;
    double p99_ms = 0;
    std::string non_2xx = "0";
    std::string command;
};

double to_ms(const std::string& value, const std::string& unit) {
    const double v = std::stod(value);
    if (unit == "us") return v / 1000.0;
    if (unit == "s") return v * 1000.0;
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
    if (std::regex_search(out, m, std::regex(R"(Non-2xx or 3xx responses:\s+([0-9]+))"))) result.non_2xx = m[1];
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
    std::size_t cards = 1000, connections = 64, wrk_threads = 2, write_window = 512, http_threads = 1;
    std::string http_priority{http::http_thread_priority_default}, wrk_priority{http::http_thread_priority_default};
    unsigned seconds = 10;
    std::string base = "/var/tmp";
    app.add_option("--cards", cards)->capture_default_str();
    app.add_option("--connections", connections)->capture_default_str();
    app.add_option("--wrk-threads", wrk_threads)->capture_default_str();
    app.add_option("--seconds", seconds, "length of each phase")->capture_default_str();
    app.add_option("--write-window", write_window, "writer requests in flight")->capture_default_str();
    app.add_option("--http-threads", http_threads, "HTTP I/O threads (coconut-clearingd --http-threads)")->capture_default_str();
    auto priority_check = [](const std::string& text) { return http::parse_thread_priority(text) ? std::string() : "idle, nice:N or normal"; };
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
    app.add_option("--query-target", query_target, "send every query to this path instead of /v1/cards/{n} (diagnosis: \"/none\" is a 404 without ledger reads)");
    app.add_option("--dir", base, "where the ledger lives (a real disk: commits are synced)")->capture_default_str();
    CLI11_PARSE(app, argc, argv);

    const std::filesystem::path dir = std::filesystem::path(base) / fmt::format("clearingd-http-bench-{}", ::getpid());
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir / "data");
    ledger::Options options;
    options.directory = (dir / "data").string();
    auto ledger = std::move(ledger::Ledger::open(options).value());
    auto registry = std::move(Registry::open(ledger->env()).value());
    auto tokens = std::move(http::Tokens::open(ledger->env(), dir / "data").value());
    std::string json = R"({"participants": [{"id": 1001, "name": "bus", "kind": "bus", "bank_account": "1"}], "cards": [)";
    for (std::size_t c = 0; c < cards; ++c) {
        json += fmt::format(R"({}{{"asn": "{}", "issuer_id": "4600000000000001", "purse_balance_fen": 90000000, "medical_balance_fen": 1000}})",
                            c ? "," : "", asn_digits(c));
    }
    json += "]}";
    if (auto loaded = load_registry(*ledger, *registry, json); !loaded) throw std::runtime_error(loaded.error().message);
    if (auto issued = http::issue_card_tokens(*ledger, *registry, *tokens, {}, dir / "tokens"); !issued || *issued != cards) {
        throw std::runtime_error("issuing tokens failed");
    }
    write_script(dir / "cards.lua", dir / "tokens", cards, query_target, delay_ms);

    ledger::Writer writer(*ledger);
    boost::asio::io_context io(static_cast<int>(http_threads));
    http::HttpOptions http_options;
    http_options.token_requests_per_s = 1e9;  // the limiter still runs on every request, it just never refuses
    http_options.token_burst = 1e9;
    http_options.connections_max = std::max<std::size_t>(connections * 2, http::http_connections_max_default);
    http::HttpServer server(io, http::Services{*ledger, writer, *registry, *tokens}, http_options);
    std::vector<std::thread> http_threads_running;
    for (std::size_t t = 0; t < http_threads; ++t) {
        http_threads_running.emplace_back([&] {
            if (auto lowered = http::lower_thread_priority(*http::parse_thread_priority(http_priority)); !lowered) {
                throw std::runtime_error(lowered.error().message);
            }
            io.run();
        });
    }

    const http::ThreadPriority wrk_sched = *http::parse_thread_priority(wrk_priority);
    const std::string wrk_prefix = wrk_sched.idle ? "chrt --idle 0 " : wrk_sched.nice ? fmt::format("nice -n {} ", wrk_sched.nice) : "";
    const std::string wrk = fmt::format("{}wrk -t{} -c{} -d{}s --latency -s {} http://127.0.0.1:{}", wrk_prefix, wrk_threads, connections, seconds,
                                        (dir / "cards.lua").string(), server.port());
    WriteLoad writes(writer, cards, write_window, 1'000'000);
    const auto phase = std::chrono::seconds(seconds);

    fmt::print("clearingd_http_bench: {} cards, {} connections, {} HTTP thread(s) at priority {}, wrk at {}, {} s per phase, ledger in {}\n",
               cards, connections, http_threads, http_priority, wrk_priority, seconds, dir.string());
    writer.submit({}).wait();  // learn the writer's thread id
    auto start = WriterSample::take(writes.writer_tid(), writer);
    auto t0 = Clock::now();
    const double writes_alone = writes.run(phase);
    auto end = WriterSample::take(writes.writer_tid(), writer);
    fmt::print("  1. writes alone:                {:>9.0f} writes/s\n", writes_alone);
    const std::string writer_alone = writer_report(start, end, std::chrono::duration<double>(Clock::now() - t0).count());

    WrkResult loaded;
    double writes_loaded = 0;
    {
        std::thread query_load([&] { loaded = run_wrk(wrk); });
        std::this_thread::sleep_for(std::chrono::milliseconds(300));  // wrk connected and running
        start = WriterSample::take(writes.writer_tid(), writer);
        t0 = Clock::now();
        writes_loaded = writes.run(phase - std::chrono::seconds(1));
        end = WriterSample::take(writes.writer_tid(), writer);
        query_load.join();
    }
    fmt::print("  2. writes with query load:      {:>9.0f} writes/s; queries {:.0f}/s, p99 {:.2f} ms, non-2xx {}\n", writes_loaded,
               loaded.requests_per_s, loaded.p99_ms, loaded.non_2xx);
    const std::string writer_loaded = writer_report(start, end, std::chrono::duration<double>(Clock::now() - t0).count());
    const WrkResult alone = run_wrk(wrk);
    fmt::print("  3. queries alone:               {:>9.0f} queries/s, p99 {:.2f} ms, non-2xx {}\n", alone.requests_per_s, alone.p99_ms,
               alone.non_2xx);
    fmt::print("  write throughput under query load: {:.2f} x alone ({:+.1f} %); target: drop < 10 %\n", writes_loaded / writes_alone,
               (writes_loaded / writes_alone - 1.0) * 100.0);
    fmt::print("  queries under write load: {:.0f}/s at p99 {:.2f} ms; target: >= 20,000/s at p99 <= 5 ms\n", loaded.requests_per_s,
               loaded.p99_ms);
    fmt::print("  1: {}\n  2: {}\n", writer_alone, writer_loaded);
    fmt::print("  wrk command: {}\n", wrk);
    if (writes.failed() != 0) fmt::print("  WARNING: {} writes failed\n", writes.failed());

    server.shutdown();
    io.stop();
    for (auto& t : http_threads_running) t.join();
    writer.stop();
    std::filesystem::remove_all(dir);
    return 0;
}
