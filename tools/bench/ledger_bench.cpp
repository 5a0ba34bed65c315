// ledger_bench: durable transfers per second into the LMDB ledger, group commit against commit-per-transfer,
// measured in the same run on the same ledger.
//
//   per-transfer   `clients` threads, each submitting one transfer per request and waiting for its reply,
//                  through a Writer whose groups hold ONE request: one synced LMDB commit per transfer.
//   group commit   the same clients and requests through a Writer with the daemon's defaults: the writer
//                  takes whatever arrived (up to group_requests_max, waiting ≤ group_delay) and commits
//                  it in one synced transaction (docs/DESIGN.md §8.2).
//   batch ceiling  one thread calling Ledger::apply() with full batches of batch_events_max transfers: what
//                  the state machine + LMDB do when batching is perfect.
//
// Every transfer is a purse debit (card shadow → participant payable) with debits_must_not_exceed_credits on
// the card, random card and participant, and a fresh id. Latency is per request, submit → reply (the reply
// comes after fsync). Nothing is acknowledged before its commit is durable in any mode.
#include <coconut/ledger/ledger.hpp>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <deque>
#include <future>
#include <filesystem>
#include <random>
#include <thread>
#include <vector>

#include <unistd.h>

namespace {

using namespace coconut;
using namespace coconut::ledger;
using Clock = std::chrono::steady_clock;

constexpr std::uint32_t purse_ledger = 1;
constexpr std::uint16_t card_code = 10;
constexpr std::uint16_t participant_code = 20;
constexpr std::uint16_t float_code = 30;
constexpr std::uint16_t purchase_code = 6;  // transaction type 06: purse purchase
constexpr std::uint64_t card_funding_fen = 1'000'000'000;
// Ids: accounts below this, transfers above.
constexpr std::uint64_t transfer_id_base = std::uint64_t{1} << 40;

struct Config {
    std::string directory;
    std::uint64_t cards = 10'000;
    std::uint64_t participants = 100;
    int clients = 64;
    int in_flight = 16;  // requests each client keeps outstanding in the extra group-commit run (1: skip it)
    std::uint64_t per_transfer_count = 2'000;
    std::uint64_t group_count = 200'000;
    std::uint64_t batch_count = 200'000;
    std::uint64_t group_delay_us = writer_group_delay_default.count();
};

struct Figures {
    std::string mode;
    std::uint64_t transfers = 0;
    double seconds = 0;
    std::uint64_t commits = 0;
    double p50_us = 0;
    double p99_us = 0;
    double transfers_per_s() const { return static_cast<double>(transfers) / seconds; }
};

class Workload {
public:
    explicit Workload(const Config& config) : config_(config) {}

    Transfer next(std::mt19937_64& random) {
        Transfer t;
        t.id = make_id(transfer_id_base + next_id_.fetch_add(1));
        t.debit_account_id = make_id(1 + random() % config_.cards);
        t.credit_account_id = make_id(config_.cards + 1 + random() % config_.participants);
        t.amount = 1 + random() % 500;  // a bus fare to a small purchase, fen
        t.ledger = purse_ledger;
        t.code = purchase_code;
        return t;
    }

private:
    const Config& config_;
    std::atomic<std::uint64_t> next_id_{0};
};

void die(const std::string& what) {
    fmt::print(stderr, "ledger_bench: {}\n", what);
    std::exit(1);
}

void require_ok(const Reply& results, const char* what) {
    if (!results) die(fmt::format("{}: {}", what, results.error().message));
    for (const EventResult& r : *results) {
        if (r.code != ResultCode::ok) die(fmt::format("{}: {}", what, to_string(r.code)));
    }
}

void setup(Ledger& ledger, const Config& config) {
    const std::uint64_t float_id = config.cards + config.participants + 1;
    std::vector<Event> events;
    auto flush = [&](const char* what) {
        require_ok(ledger.apply(events), what);
        events.clear();
    };
    for (std::uint64_t id = 1; id <= float_id; ++id) {
        Account a;
        a.id = make_id(id);
        a.ledger = purse_ledger;
        a.code = id <= config.cards ? card_code : id < float_id ? participant_code : float_code;
        a.flags = id <= config.cards ? account_flags::debits_must_not_exceed_credits : 0;
        events.push_back(a);
        if (events.size() == batch_events_max) flush("create accounts");
    }
    flush("create accounts");
    for (std::uint64_t card = 1; card <= config.cards; ++card) {  // fund every card from the float
        Transfer t;
        t.id = make_id(transfer_id_base / 2 + card);
        t.debit_account_id = make_id(float_id);
        t.credit_account_id = make_id(card);
        t.amount = card_funding_fen;
        t.ledger = purse_ledger;
        t.code = 2;  // load
        events.push_back(t);
        if (events.size() == batch_events_max) flush("fund cards");
    }
    flush("fund cards");
}

double percentile_us(std::vector<double>& latencies_us, double fraction) {
    if (latencies_us.empty()) return 0;
    const auto index = static_cast<std::size_t>(fraction * static_cast<double>(latencies_us.size() - 1));
    std::nth_element(latencies_us.begin(), latencies_us.begin() + static_cast<std::ptrdiff_t>(index), latencies_us.end());
    return latencies_us[index];
}

// `clients` closed-loop threads, one transfer per request and `in_flight` requests outstanding each,
// through a Writer with `options`.
Figures run_clients(Ledger& ledger, Workload& workload, const Config& config, std::uint64_t count, WriterOptions options, int in_flight,
                    std::string mode) {
    Writer writer(ledger, options);
    std::atomic<std::int64_t> remaining{static_cast<std::int64_t>(count)};
    std::vector<std::vector<double>> latencies(static_cast<std::size_t>(config.clients));
    std::vector<std::thread> threads;
    const auto start = Clock::now();
    for (int c = 0; c < config.clients; ++c) {
        threads.emplace_back([&, c] {
            std::mt19937_64 random(static_cast<std::uint64_t>(c) * 7919 + count);
            auto& mine = latencies[static_cast<std::size_t>(c)];
            std::deque<std::pair<Clock::time_point, std::future<Reply>>> outstanding;
            auto complete_oldest = [&] {
                auto reply = outstanding.front().second.get();
                mine.push_back(std::chrono::duration<double, std::micro>(Clock::now() - outstanding.front().first).count());
                require_ok(reply, "transfer");
                outstanding.pop_front();
            };
            while (remaining.fetch_sub(1) > 0) {
                if (outstanding.size() == static_cast<std::size_t>(in_flight)) complete_oldest();
                outstanding.emplace_back(Clock::now(), writer.submit(std::vector<Event>{workload.next(random)}));
            }
            while (!outstanding.empty()) complete_oldest();
        });
    }
    for (auto& t : threads) t.join();
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    writer.stop();
    std::vector<double> all;
    for (auto& l : latencies) all.insert(all.end(), l.begin(), l.end());
    Figures f{std::move(mode), all.size(), seconds, writer.stats().commits, 0, 0};
    f.p50_us = percentile_us(all, 0.50);
    f.p99_us = percentile_us(all, 0.99);
    return f;
}

Figures run_batches(Ledger& ledger, Workload& workload, std::uint64_t count) {
    std::mt19937_64 random(42);
    std::vector<double> latencies;
    std::uint64_t done = 0;
    std::uint64_t commits = 0;
    const auto start = Clock::now();
    while (done < count) {
        std::vector<Event> events;
        const std::uint64_t size = std::min<std::uint64_t>(batch_events_max, count - done);
        for (std::uint64_t i = 0; i < size; ++i) events.push_back(workload.next(random));
        const auto sent = Clock::now();
        require_ok(ledger.apply(events), "batch");
        latencies.push_back(std::chrono::duration<double, std::micro>(Clock::now() - sent).count());
        done += size;
        ++commits;
    }
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    Figures f{fmt::format("batch ceiling ({}/commit)", batch_events_max), done, seconds, commits, 0, 0};
    f.p50_us = percentile_us(latencies, 0.50);
    f.p99_us = percentile_us(latencies, 0.99);
    return f;
}

// The floor under every durable commit on this disk: LMDB commits of one 8-byte put, same sync flags.
Figures run_raw_lmdb(const std::string& directory, std::uint64_t count) {
    std::filesystem::create_directories(directory);
    auto env = lmdb::Env::open(directory, {std::size_t{1} << 30, 1, 8});
    if (!env) die(env.error().message());
    auto table = env->open_table("raw");
    if (!table) die(table.error().message());
    std::vector<double> latencies;
    const auto start = Clock::now();
    for (std::uint64_t i = 0; i < count; ++i) {
        const auto sent = Clock::now();
        auto txn = lmdb::Txn::begin(*env, lmdb::Txn::Mode::read_write);
        if (!txn) die(txn.error().message());
        const auto key = be_array<8>(i);
        if (auto put = txn->put(*table, key, key); !put) die(put.error().message());
        if (auto committed = txn->commit(); !committed) die(committed.error().message());
        latencies.push_back(std::chrono::duration<double, std::micro>(Clock::now() - sent).count());
    }
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    Figures f{"raw LMDB commit (1 put)", count, seconds, count, 0, 0};
    f.p50_us = percentile_us(latencies, 0.50);
    f.p99_us = percentile_us(latencies, 0.99);
    return f;
}

}  // namespace

int main(int argc, char** argv) {
    Config config;
    CLI::App app{"ledger_bench: durable transfers/s, group commit vs commit-per-transfer"};
    app.add_option("--dir", config.directory, "data directory (created; default: a fresh one under /var/tmp)");
    app.add_option("--cards", config.cards, "card purse accounts");
    app.add_option("--participants", config.participants, "participant payable accounts");
    app.add_option("--clients", config.clients, "concurrent closed-loop clients")->check(CLI::Range(1, 1024));
    app.add_option("--in-flight", config.in_flight, "outstanding requests per client in the extra group-commit run")
        ->check(CLI::Range(1, 4096));
    app.add_option("--per-transfer", config.per_transfer_count, "transfers in the commit-per-transfer run");
    app.add_option("--group", config.group_count, "transfers in the group-commit run");
    app.add_option("--batch", config.batch_count, "transfers in the batch-ceiling run (0: skip)");
    app.add_option("--group-delay-us", config.group_delay_us, "writer group delay");
    CLI11_PARSE(app, argc, argv);

    bool temporary = false;
    if (config.directory.empty()) {
        std::string pattern = "/var/tmp/coconut-ledger-bench-XXXXXX";
        if (mkdtemp(pattern.data()) == nullptr) die("mkdtemp failed");
        config.directory = pattern;
        temporary = true;
    } else {
        std::filesystem::create_directories(config.directory);
    }
    Options options;
    options.directory = config.directory;
    auto opened = Ledger::open(options);
    if (!opened) die(opened.error().message);
    Ledger& ledger = **opened;
    setup(ledger, config);
    Workload workload(config);

    WriterOptions one_per_commit;
    one_per_commit.group_requests_max = 1;
    one_per_commit.group_delay = std::chrono::microseconds(0);
    WriterOptions grouped;
    grouped.group_delay = std::chrono::microseconds(config.group_delay_us);

    std::vector<Figures> figures;
    const Figures raw = run_raw_lmdb(config.directory + "/raw-lmdb", 500);
    figures.push_back(run_clients(ledger, workload, config, config.per_transfer_count, one_per_commit, 1, "commit per transfer"));
    figures.push_back(run_clients(ledger, workload, config, config.group_count, grouped, 1,
                                  fmt::format("group commit (<={} us)", config.group_delay_us)));
    if (config.in_flight > 1) {
        figures.push_back(run_clients(ledger, workload, config, config.group_count, grouped, config.in_flight,
                                      fmt::format("group commit, {} in flight", config.in_flight)));
    }
    if (config.batch_count > 0) figures.push_back(run_batches(ledger, workload, config.batch_count));

    auto report = ledger.check();
    if (!report || !report->ok()) die("invariant check failed after the benchmark");

    double load[3] = {0, 0, 0};
    getloadavg(load, 3);
    fmt::print("ledger_bench: {} cards, {} participants, {} clients, data in {} ({} CPUs, load average {:.1f})\n", config.cards,
               config.participants, config.clients, config.directory, std::thread::hardware_concurrency(), load[0]);
    fmt::print("{:<28} {:>9} {:>8} {:>8} {:>10} {:>9} {:>9} {:>12}\n", "mode", "transfers", "seconds", "commits", "per commit", "p50 us",
               "p99 us", "transfers/s");
    for (const Figures& f : figures) {
        fmt::print("{:<28} {:>9} {:>8.2f} {:>8} {:>10.1f} {:>9.0f} {:>9.0f} {:>12.0f}\n", f.mode, f.transfers, f.seconds, f.commits,
                   static_cast<double>(f.transfers) / static_cast<double>(f.commits), f.p50_us, f.p99_us, f.transfers_per_s());
    }
    fmt::print("{:<28} {:>9} {:>8.2f} {:>8} {:>10.1f} {:>9.0f} {:>9.0f} {:>12.0f}   (baseline, one thread)\n", raw.mode, raw.transfers,
               raw.seconds, raw.commits, 1.0, raw.p50_us, raw.p99_us, raw.transfers_per_s());
    fmt::print("group commit / commit per transfer: {:.1f}x durable transfers/s\n",
               figures[1].transfers_per_s() / figures[0].transfers_per_s());
    fmt::print("check after the run: {} accounts, {} transfers, {} journal entries, all invariants hold\n", report->accounts,
               report->transfers, report->journal_entries);
    opened->reset();
    if (temporary) std::filesystem::remove_all(config.directory);
    return 0;
}
