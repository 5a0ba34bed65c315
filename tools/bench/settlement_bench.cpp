// settlement_bench: a settlement cycle over N cleared transfers (default 10,000,000), wall time and
// peak RSS, next to a baseline measured in the same run on the same ledger: a plain chunked journal
// scan (read_journal + decode, summing amounts) without any position logic.
//
//   generate  a registry (participants of every kind, cards with opening balances) loaded through
//             clearing::load_registry, then N counted transfers written with Ledger::apply_group in
//             full batches: bus / shop / clinic purchases (single-phase), clinic medical payments and
//             online loads as hold + post pairs (only the post counts), all stamped inside one
//             business day by an injected ledger clock. Skipped when --dir already holds a ledger.
//   baseline  in a forked child: the window's journal read in journal_chunk_entries chunks.
//   cycle     in a forked child: settlement::run_cycle (positions, sum-to-zero, pain.001 rendered and
//             XSD-validated, files written, settlement transfers posted directly).
// Peak RSS per phase comes from wait4()'s rusage of that child, so phases do not mask each other.
#include <coconut/clearing/registry.hpp>
#include <coconut/settlement/settlement.hpp>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

namespace {

using namespace coconut;
using Clock = std::chrono::steady_clock;
namespace codes = clearing::transfer_codes;

constexpr std::uint64_t ns_per_s = 1'000'000'000;
// Transfer ids of the generator: a fixed high word, a counter below (sequential ids keep LMDB's
// inserts cheap; the ledger treats every id alike).
constexpr std::uint64_t generated_id_high = 0x5E771E0000000000ull;
// Batches per commit: 8 full batches (65,520 events) per write transaction.
constexpr std::size_t batches_per_commit = 8;
constexpr std::uint64_t card_balance_fen = 100'000'000;

struct Options {
    std::string dir;
    std::uint64_t transfers = 10'000'000;
    std::uint64_t participants = 100;
    std::uint64_t cards = 1'000;
    std::string date = "2026-11-25";
};

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

std::string asn_of(std::uint64_t card) { return fmt::format("4601{:016}", card); }

std::string registry_json(const Options& o) {
    std::string json = "{\"participants\":[";
    for (std::uint64_t p = 0; p < o.participants; ++p) {
        // 60 % bus operators, 30 % shops, 10 % clinics; fee rates 0–99 bp.
        const char* kind = p * 10 < o.participants * 6 ? "bus" : p * 10 < o.participants * 9 ? "shop" : "clinic";
        json +=
            fmt::format("{}{{\"id\":{},\"name\":\"participant {}\",\"kind\":\"{}\",\"bank_account\":\"62220000{:08}\",\"fee_rate_bp\":{}}}",
                        p ? "," : "", 1001 + p, p, kind, p, p % 100);
    }
    json += "],\"cards\":[";
    for (std::uint64_t c = 0; c < o.cards; ++c) {
        json += fmt::format("{}{{\"asn\":\"{}\",\"issuer_id\":\"0123456789ABCDEF\",\"purse_balance_fen\":{},\"medical_balance_fen\":{}}}",
                            c ? "," : "", asn_of(c), card_balance_fen, card_balance_fen);
    }
    return json + "]}";
}

clearing::Asn asn_bytes(std::uint64_t card) {
    const Bytes bcd = *digits_to_bcd(asn_of(card));
    clearing::Asn asn{};
    std::copy(bcd.begin(), bcd.end(), asn.begin());
    return asn;
}

// Appends one counted transfer (and its hold when it is two-phase) for `participant`.
void append_transfer(std::vector<ledger::Event>& events, std::uint64_t& next_id, std::mt19937_64& random, const Options& o,
                     std::uint64_t participant_index, const std::vector<ledger::Id>& shadows, const std::vector<ledger::Id>& medicals) {
    const std::uint64_t participant = 1001 + participant_index;
    const bool clinic = participant_index * 10 >= o.participants * 9;
    const std::uint64_t card = random() % o.cards;
    const std::uint64_t amount = 100 + random() % 401;
    const unsigned roll = static_cast<unsigned>(random() % 100);
    ledger::Transfer t;
    t.id = ledger::Id{generated_id_high, next_id++};
    t.amount = amount;
    t.user_data_64 = participant;
    if (roll < 5) {  // an online load at this participant's counter: hold, then post
        t.debit_account_id = clearing::purse_float_account;
        t.credit_account_id = shadows[card];
        t.ledger = clearing::ledgers::purse;
        t.code = codes::online_load;
    } else if (clinic && roll < 50) {  // a clinic's medical payment: hold, then a partial post
        t.debit_account_id = medicals[card];
        t.credit_account_id = clearing::payable_account(participant, clearing::ledgers::medical);
        t.ledger = clearing::ledgers::medical;
        t.code = codes::clinic_medical;
    } else {  // an offline purse purchase
        t.debit_account_id = shadows[card];
        t.credit_account_id = clearing::payable_account(participant, clearing::ledgers::purse);
        t.ledger = clearing::ledgers::purse;
        t.code = codes::offline_purchase;
        events.emplace_back(t);
        return;
    }
    t.flags = ledger::transfer_flags::pending;
    events.emplace_back(t);
    ledger::Transfer post;
    post.id = ledger::Id{generated_id_high, next_id++};
    post.pending_id = t.id;
    post.amount = t.code == codes::clinic_medical ? amount - 1 : ledger::amount_max;
    post.user_data_64 = participant;
    post.flags = ledger::transfer_flags::post_pending;
    events.emplace_back(post);
}

int generate(const Options& o, std::uint64_t day_start_ns) {
    ledger::Options options;
    options.directory = o.dir;
    // Every event of the day at 08:00 local and after (each next event +1 ns).
    options.clock_ns = [day_start_ns] { return day_start_ns + static_cast<std::uint64_t>(coconut::hainan_utc_offset.count()) * ns_per_s; };
    auto opened = ledger::Ledger::open(options);
    if (!opened) return fmt::print(stderr, "{}\n", opened.error().message), 1;
    ledger::Ledger& ledger = **opened;
    auto registry = clearing::Registry::open(ledger.env());
    if (!registry) return fmt::print(stderr, "{}\n", registry.error().message), 1;
    auto loaded = clearing::load_registry(ledger, **registry, registry_json(o));
    if (!loaded) return fmt::print(stderr, "registry: {}\n", loaded.error().message), 1;
    std::vector<ledger::Id> shadows, medicals;
    for (std::uint64_t c = 0; c < o.cards; ++c) {
        shadows.push_back(clearing::purse_shadow_account(asn_bytes(c)));
        medicals.push_back(clearing::medical_account(asn_bytes(c)));
    }
    std::mt19937_64 random(20261125);
    std::uint64_t next_id = 1;
    std::uint64_t counted = 0;
    const auto start = Clock::now();
    std::vector<std::vector<ledger::Event>> batches(batches_per_commit);
    while (counted < o.transfers) {
        std::vector<std::span<const ledger::Event>> group;
        for (auto& batch : batches) {
            batch.clear();
            // Room for a pair at the end of the batch: a hold and its post never straddle batches.
            while (batch.size() + 2 <= ledger::batch_events_max && counted < o.transfers) {
                append_transfer(batch, next_id, random, o, random() % o.participants, shadows, medicals);
                ++counted;
            }
            if (!batch.empty()) group.emplace_back(batch);
        }
        auto applied = ledger.apply_group(std::span<const std::span<const ledger::Event>>(group));
        if (!applied) return fmt::print(stderr, "apply_group: {}\n", applied.error().message), 1;
        for (const auto& results : *applied) {
            for (const auto& r : results) {
                if (r.code != ledger::ResultCode::ok)
                    return fmt::print(stderr, "generated transfer refused: {}\n", ledger::to_string(r.code)), 1;
            }
        }
        if (counted % 1'000'000 < batches_per_commit * ledger::batch_events_max) {
            fmt::print(stderr, "generated {} counted transfers ({} events), {:.1f} s\n", counted, next_id - 1, seconds_since(start));
        }
    }
    const double elapsed = seconds_since(start);
    fmt::print("generate: {} counted transfers ({} ledger events) in {:.1f} s ({:.0f} counted transfers/s), journal head {}\n", counted,
               next_id - 1, elapsed, static_cast<double>(counted) / elapsed, ledger.head().sequence);
    return 0;
}

struct Measured {
    double seconds = 0;
    long peak_rss_kib = 0;
    int status = 0;
};

// Runs `body` in a child process; its wall time and its own peak RSS.
template <class Body>
Measured in_child(Body body) {
    std::fflush(stdout);
    const auto start = Clock::now();
    const pid_t child = fork();
    if (child == 0) {
        const int code = body();
        std::fflush(nullptr);
        std::_Exit(code);
    }
    int status = 0;
    rusage usage{};
    wait4(child, &status, 0, &usage);
    return Measured{seconds_since(start), usage.ru_maxrss, WIFEXITED(status) ? WEXITSTATUS(status) : 128};
}

int baseline_scan(const Options& o, const settlement::Window& window) {
    ledger::Options options;
    options.directory = o.dir;
    options.read_only = true;
    auto opened = ledger::Ledger::open(options);
    if (!opened) return 1;
    auto range = settlement::journal_range(**opened, window);
    if (!range) return 1;
    std::uint64_t entries = 0, transfers = 0, amount_sum = 0;
    std::size_t chunks = 0;
    for (std::uint64_t next = range->first; next <= range->second;) {
        const auto limit = static_cast<std::size_t>(std::min<std::uint64_t>(settlement::journal_chunk_entries, range->second + 1 - next));
        auto chunk = (*opened)->read_journal(next, limit);
        if (!chunk || chunk->empty()) return 1;
        for (const auto& entry : *chunk) {
            ++entries;
            if (auto t = ledger::journal_transfer(entry)) {
                ++transfers;
                amount_sum += t->amount;
            }
        }
        next += chunk->size();
        if (++chunks % settlement::chunks_per_page_release == 0) (*opened)->release_resident_pages();  // as the cycle does
    }
    fmt::print("  baseline read {} journal entries, {} transfers, Σ amount {}\n", entries, transfers, amount_sum);
    return 0;
}

int cycle(const Options& o, const std::filesystem::path& out, const settlement::Date& date) {
    ledger::Options options;
    options.directory = o.dir;
    auto opened = ledger::Ledger::open(options);  // read-write: the direct poster books the settlement
    if (!opened) return 1;
    auto registry = clearing::Registry::open((*opened)->env());
    if (!registry) return 1;
    auto participants = (*registry)->participants();
    if (!participants) return 1;
    settlement::RunOptions run;
    run.date = date;
    run.config.purse_float = {"Bench Bank purse float", "FLOAT0001", "HNCBCNBJXXX"};
    run.config.medical_fund = {"Bench medical fund", "FUND0001", "HNSICNBJ"};
    run.out = out;
    auto poster = settlement::make_direct_poster(**opened);
    auto report = settlement::run_cycle(**opened, *participants, poster.get(), run);
    if (!report) return fmt::print(stderr, "cycle: {}\n", report.error().message), 1;
    fmt::print("  cycle {}: {} participants, {} journal entries, {} transfers read, {} files, {} settlement transfers posted, state {}\n",
               report->positions.cycle, report->positions.participants.size(), report->positions.entries_read,
               report->positions.transfers_counted, report->files.size(), report->posting.created + report->posting.existed,
               settlement::to_string(report->record.state));
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"settlement_bench: a settlement cycle over N cleared transfers, wall time and peak RSS, against a plain journal scan"};
    Options o;
    app.add_option("--dir", o.dir, "ledger directory (generated when it holds no ledger yet; kept)")->required();
    app.add_option("--transfers", o.transfers, "counted transfers to generate")->capture_default_str();
    app.add_option("--participants", o.participants)->capture_default_str();
    app.add_option("--cards", o.cards)->capture_default_str();
    CLI11_PARSE(app, argc, argv);
    const auto date = settlement::parse_date(o.date);
    const std::uint32_t cutoff = settlement::seconds_per_day;
    const settlement::Date previous{std::chrono::sys_days(*date) - std::chrono::days{1}};
    const settlement::Window window{settlement::cutoff_ns(previous, cutoff), settlement::cutoff_ns(*date, cutoff)};

    std::filesystem::create_directories(o.dir);
    if (!std::filesystem::exists(std::filesystem::path(o.dir) / "data.mdb")) {
        const Measured g = in_child([&] { return generate(o, window.start_ns); });
        if (g.status != 0) return 1;
        fmt::print("generate: wall {:.1f} s, peak RSS {} MiB, ledger file {:.2f} GiB\n", g.seconds, g.peak_rss_kib / 1024,
                   static_cast<double>(std::filesystem::file_size(std::filesystem::path(o.dir) / "data.mdb")) / (1 << 30));
    }
    const std::filesystem::path out = std::filesystem::path(o.dir) / fmt::format("settlement-out-{}", ::getpid());
    const Measured base = in_child([&] { return baseline_scan(o, window); });
    const Measured run = in_child([&] { return cycle(o, out, *date); });
    if (base.status != 0 || run.status != 0) return fmt::print(stderr, "a measured phase failed\n"), 1;
    fmt::print("\n{:<44} {:>9} {:>14}\n", "phase", "wall s", "peak RSS MiB");
    fmt::print("{:<44} {:>9.2f} {:>14}\n", "baseline: plain journal scan (no positions)", base.seconds, base.peak_rss_kib / 1024);
    fmt::print("{:<44} {:>9.2f} {:>14}\n", "settlement cycle (run_cycle, direct posting)", run.seconds, run.peak_rss_kib / 1024);
    fmt::print("cycle / baseline: {:.2f}x wall time; target <= 30 s and <= 1024 MiB: {}\n", run.seconds / base.seconds,
               run.seconds <= 30 && run.peak_rss_kib <= 1024 * 1024 ? "met" : "NOT met");
    std::filesystem::remove_all(out);
    return 0;
}
