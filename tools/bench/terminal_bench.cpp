// terminal_bench: what a terminal flow costs, in process and through the real PC/SC stack.
//
//   disk floor    pwrite(100 B) + fdatasync on a preallocated file in the work directory: the unit every
//                 durable step pays (a purchase has four: PSAM 80 70 commit, queue intent, card DEBIT
//                 commit, queue record).
//   in process    Terminal::purchase / transit_tap with InProcessReader on card and PSAM image files and the
//                 durable queue on disk (and once with memory images, to show what the card commits cost).
//   PC/SC         the same flows through PcscReader → pcscd → vpcd → `coconut-vcard serve` (durable image
//                 files), interleaved one for one with the raw APDU floor: 80 FE 00 00, which the card rejects
//                 at once with 6D00 (one round trip through the stack, no card work), and SCardConnect.
//
// One run prints everything side by side with ratios. Target (issue 4): a transit tap through the real
// PC/SC stack, durable queue write included, under 2 ms median.
#include "pcsc_stack.hpp"

#include <coconut/cos/card.hpp>
#include <coconut/sdk/hotlist.hpp>
#include <coconut/sdk/queue.hpp>
#include <coconut/sdk/reader.hpp>
#include <coconut/sdk/terminal.hpp>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <sys/utsname.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#ifndef COCONUT_VCARD_PATH
#define COCONUT_VCARD_PATH "coconut-vcard"
#endif

namespace {

using namespace coconut;
namespace fs = std::filesystem;
namespace stack = coconut::pcsc_stack;
using Clock = std::chrono::steady_clock;

const char* const issuer_id = "4600000000000001";
const char* const asn = "46010000000012345678";
constexpr std::uint32_t fare_fen = 1;
constexpr std::uint32_t card_balance_fen = 100000;
// A card does at most this many debits in one run: below the 16-bit offline ATC and the balance.
constexpr std::size_t debits_per_card_max = 60000;
// Blocked cards in the bench's hotlist: a realistic lookup, not an empty map.
constexpr std::size_t hotlist_entries = 10000;
constexpr std::size_t warmup_operations = 20;
const Bytes floor_apdu = hex("80FE0000");  // unsupported INS: the dispatcher answers 6D00 at once

nlohmann::json card_profile() {
    return {{"kind", "card"},
            {"asn", asn},
            {"issuer_id", issuer_id},
            {"balance_fen", card_balance_fen},
            {"max_balance_fen", card_balance_fen},
            {"pin", "123456"},
            {"protocol", "T=1"},
            {"seed", "A0A0A0A0A0A0A0A0A0A0A0A0A0A0A0A0"},
            {"start_date", "20260101"},
            {"expiry_date", "20351231"},
            {"master_keys",
             {{"dpk", "0123456789ABCDEFFEDCBA9876543210"},
              {"dlk", "11223344556677888877665544332211"},
              {"dtk", "2B7E151628AED2A6ABF7158809CF4F3C"},
              {"iak", "404142434445464748494A4B4C4D4E4F"},
              {"damk", "000102030405060708090A0B0C0D0E0F"}}}};
}

nlohmann::json psam_profile() {
    return {{"kind", "psam"},       {"terminal_id", "460100000001"}, {"purchase_key", "0123456789ABCDEFFEDCBA9876543210"},
            {"key_level", "master"}, {"issuer_id", issuer_id},       {"key_index", 1},
            {"key_version", 1},      {"terminal_serial", 1},         {"protocol", "T=1"}};
}

sdk::TransitConfig transit_config() {
    // Two flat lines: taps alternate between them, so no tap is a free repeat inside the window.
    sdk::TransitConfig config;
    for (std::uint16_t line : {1, 2}) config.lines[line] = sdk::LineFare{line, false, fare_fen, {}, 1001};
    return config;
}

struct Stats {
    std::size_t count = 0;
    double median_us = 0;
    double p99_us = 0;
    double per_second = 0;  // count / the summed duration of the operations
};

Stats summarize(std::vector<std::int64_t> samples_ns) {
    Stats stats;
    if (samples_ns.empty()) return stats;
    double total = 0;
    for (auto sample : samples_ns) total += static_cast<double>(sample);
    std::sort(samples_ns.begin(), samples_ns.end());
    stats.count = samples_ns.size();
    stats.median_us = static_cast<double>(samples_ns[samples_ns.size() / 2]) / 1000.0;
    stats.p99_us = static_cast<double>(samples_ns[std::min(samples_ns.size() - 1, samples_ns.size() * 99 / 100)]) / 1000.0;
    stats.per_second = total > 0 ? static_cast<double>(samples_ns.size()) * 1e9 / total : 0;
    return stats;
}

std::int64_t timed_ns(const std::function<void()>& operation) {
    const auto start = Clock::now();
    operation();
    return (Clock::now() - start).count();
}

template <class T, class E>
T unwrap(Result<T, E> result, const char* what) {
    if (!result) {
        if constexpr (std::is_same_v<E, std::string>) {
            throw std::runtime_error(std::string(what) + ": " + result.error());
        } else {
            throw std::runtime_error(std::string(what) + ": " + result.error().message);
        }
    }
    return std::move(result).value();
}

// ---- disk floor -----------------------------------------------------------------------------------

// pwrite(100 B) + fdatasync on a preallocated, already written file: what one durable append costs on this
// disk at this moment. Sampled inside every measured loop, because a shared disk's flush latency moves
// with what other processes write (observed here: ~50 us quiet, ~4 ms while others flush).
class DiskProbe {
public:
    explicit DiskProbe(const fs::path& work) : path_(work / "fdatasync-probe") {
        fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        const Bytes zeros(size_bytes, 0);
        if (fd_ < 0 || ::pwrite(fd_, zeros.data(), zeros.size(), 0) != static_cast<ssize_t>(zeros.size()) || ::fsync(fd_) != 0)
            throw std::runtime_error("disk floor file");
    }
    ~DiskProbe() {
        ::close(fd_);
        std::error_code ignored;
        fs::remove(path_, ignored);
    }
    DiskProbe(const DiskProbe&) = delete;
    DiskProbe& operator=(const DiskProbe&) = delete;
    std::int64_t sample() {
        const Bytes record(100, 0xA5);
        const auto offset = static_cast<off_t>((next_++ * 128) % size_bytes);
        return timed_ns([&] {
            if (::pwrite(fd_, record.data(), record.size(), offset) != static_cast<ssize_t>(record.size()) || ::fdatasync(fd_) != 0)
                throw std::runtime_error("disk floor write");
        });
    }

private:
    static constexpr std::size_t size_bytes = 1 << 20;
    fs::path path_;
    int fd_ = -1;
    std::size_t next_ = 0;
};

// ---- one terminal -----------------------------------------------------------------------------------

struct Bench {
    std::unique_ptr<sdk::TransactionQueue> queue;
    sdk::Hotlist hotlist;
};

Bench make_queue_and_hotlist(const fs::path& work, const std::string& name) {
    Bench bench;
    fs::remove(work / (name + "-queue.log"));
    fs::remove(work / (name + "-hotlist.bin"));
    sdk::QueueLimits limits;
    limits.capacity = debits_per_card_max;
    bench.queue = unwrap(sdk::TransactionQueue::open(work / (name + "-queue.log"), limits), "queue");
    bench.hotlist = unwrap(sdk::Hotlist::load(work / (name + "-hotlist.bin")), "hotlist");
    sdk::HotlistDelta delta{0, 1, {}, {}};
    for (std::size_t i = 0; i < hotlist_entries; ++i) {
        sdk::Asn blocked{};
        const Bytes digits = *digits_to_bcd(fmt::format("4601{:016}", 90000000 + i));
        std::copy(digits.begin(), digits.end(), blocked.begin());
        delta.added.emplace_back(blocked, sdk::BlockReason::lost);
    }
    if (auto applied = bench.hotlist.apply(delta); !applied) throw std::runtime_error(applied.error().message);
    return bench;
}

void purchase(sdk::Terminal& terminal) {
    auto r = terminal.purchase(fare_fen);
    if (!r) throw std::runtime_error("purchase: " + r.error().message);
}

void tap(sdk::Terminal& terminal, std::size_t i) {
    auto r = terminal.transit_tap(sdk::TapRequest{static_cast<std::uint16_t>(1 + i % 2), 5, 4242});
    if (!r) throw std::runtime_error("tap: " + r.error().message);
    if (r->result != sdk::TapResult::charged_flat) throw std::runtime_error("tap was not charged");
}

struct InProcessResults {
    Stats purchase;
    Stats tap;
    Stats disk;  // the disk floor sampled between the operations
};

InProcessResults run_in_process(const fs::path& work, std::size_t operations, bool file_images) {
    if (2 * operations > debits_per_card_max) throw std::runtime_error("too many operations for one card");
    const std::string name = file_images ? "file" : "memory";
    std::unique_ptr<cos::VirtualCard> card;
    std::unique_ptr<cos::VirtualCard> psam;
    if (file_images) {
        const fs::path card_image = work / "inprocess-card.img";
        const fs::path psam_image = work / "inprocess-psam.img";
        unwrap(cos::create_image(card_image, card_profile(), true), "card image");
        unwrap(cos::create_image(psam_image, psam_profile(), true), "PSAM image");
        card = unwrap(cos::VirtualCard::open(card_image), "card");
        psam = unwrap(cos::VirtualCard::open(psam_image), "PSAM");
    } else {
        card = unwrap(cos::VirtualCard::in_memory(unwrap(cos::personalize(card_profile()), "card")), "card");
        psam = unwrap(cos::VirtualCard::in_memory(unwrap(cos::personalize(psam_profile()), "psam")), "PSAM");
    }
    sdk::InProcessReader card_reader("card", card.get());
    sdk::InProcessReader psam_reader("psam", psam.get());
    Bench bench = make_queue_and_hotlist(work, name);
    sdk::Terminal terminal(card_reader, psam_reader, *bench.queue, bench.hotlist, transit_config());
    DiskProbe probe(work);
    std::vector<std::int64_t> purchase_ns, tap_ns, disk_ns;
    for (std::size_t i = 0; i < operations; ++i) {
        disk_ns.push_back(probe.sample());
        // Alternate the order, so neither flow always follows the disk probe.
        if (i % 2 == 0) purchase_ns.push_back(timed_ns([&] { purchase(terminal); }));
        tap_ns.push_back(timed_ns([&] { tap(terminal, i); }));
        if (i % 2 == 1) purchase_ns.push_back(timed_ns([&] { purchase(terminal); }));
    }
    return {summarize(std::move(purchase_ns)), summarize(std::move(tap_ns)), summarize(std::move(disk_ns))};
}

// ---- through PC/SC ---------------------------------------------------------------------------------

struct PcscResults {
    Stats floor;
    Stats connect;
    Stats balance;
    Stats purchase;
    Stats tap;
    Stats disk;
};

PcscResults run_pcsc(const std::string& vcard, const fs::path& work, std::size_t operations) {
    if (2 * operations + 2 * warmup_operations > debits_per_card_max) throw std::runtime_error("too many operations");
    const fs::path card_image = work / "pcsc-card.img";
    const fs::path psam_image = work / "pcsc-psam.img";
    unwrap(cos::create_image(card_image, card_profile(), true), "card image");
    unwrap(cos::create_image(psam_image, psam_profile(), true), "PSAM image");

    stack::Pcscd pcscd;
    pcscd.start(work / "pcscd.log");
    const int serve_log = ::open((work / "serve.log").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    stack::Child serve =
        stack::Child::spawn({vcard, "serve", card_image.string(), "--psam", psam_image.string()}, -1, -1, serve_log);
    ::close(serve_log);
    PcscResults results;
    {
        stack::Context context;
        context.wait_for_card(stack::card_reader, stack::card_present_wait);
        context.wait_for_card(stack::psam_reader, stack::card_present_wait);
        auto card_reader = unwrap(sdk::PcscReader::open(stack::card_reader), "card reader");
        auto psam_reader = unwrap(sdk::PcscReader::open(stack::psam_reader), "PSAM reader");
        Bench bench = make_queue_and_hotlist(work, "pcsc");
        sdk::Terminal terminal(*card_reader, *psam_reader, *bench.queue, bench.hotlist, transit_config());

        const auto floor_round_trip = [&] {
            auto response = card_reader->transmit(floor_apdu);
            if (!response || response->size() != 2 || (*response)[0] != 0x6D) throw std::runtime_error("floor APDU: expected 6D00");
        };
        for (std::size_t i = 0; i < warmup_operations; ++i) {  // caches, TCP windows, pcscd's threads
            purchase(terminal);
            tap(terminal, i);
            floor_round_trip();
        }
        DiskProbe probe(work);
        std::vector<std::int64_t> floor_ns, connect_ns, balance_ns, purchase_ns, tap_ns, disk_ns;
        for (std::size_t i = 0; i < operations; ++i) {
            disk_ns.push_back(probe.sample());
            floor_ns.push_back(timed_ns(floor_round_trip));
            connect_ns.push_back(timed_ns([&] { unwrap(card_reader->connect(), "SCardConnect"); }));
            balance_ns.push_back(timed_ns([&] { unwrap(terminal.balance(), "balance"); }));
            // Alternate the order, so neither flow always follows the same neighbour.
            if (i % 2 == 0) purchase_ns.push_back(timed_ns([&] { purchase(terminal); }));
            floor_ns.push_back(timed_ns(floor_round_trip));
            tap_ns.push_back(timed_ns([&] { tap(terminal, i); }));
            if (i % 2 == 1) purchase_ns.push_back(timed_ns([&] { purchase(terminal); }));
        }
        results.floor = summarize(std::move(floor_ns));
        results.connect = summarize(std::move(connect_ns));
        results.balance = summarize(std::move(balance_ns));
        results.purchase = summarize(std::move(purchase_ns));
        results.tap = summarize(std::move(tap_ns));
        results.disk = summarize(std::move(disk_ns));
    }
    const int serve_rc = serve.stop(SIGTERM);
    const int pcscd_rc = pcscd.stop();
    if (serve_rc != 0 || pcscd_rc != 0) std::fprintf(stderr, "warning: serve exit %d, pcscd exit %d\n", serve_rc, pcscd_rc);
    return results;
}

// ---- report ---------------------------------------------------------------------------------------

std::string ratio(double a, double b, const char* of) {
    char text[64];
    std::snprintf(text, sizeof text, "%.1f x %s", b > 0 ? a / b : 0.0, of);
    return text;
}

void row(const char* name, const Stats& s, const std::string& ratio_text, bool rate = false) {
    char per_second[32] = "";
    if (rate) std::snprintf(per_second, sizeof per_second, "%.0f", s.per_second);
    std::printf("| %-58s | %6zu | %8s | %9.1f | %9.1f | %-22s |\n", name, s.count, per_second, s.median_us, s.p99_us,
                ratio_text.c_str());
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"terminal_bench: terminal flows in process and through pcscd + vpcd, against the APDU and disk floors"};
    std::size_t in_process_operations = 1000;
    std::size_t pcsc_operations = 500;
    std::string work_dir;
    std::string vcard = COCONUT_VCARD_PATH;
    bool skip_pcsc = false;
    bool skip_memory = false;
    app.add_option("--in-process", in_process_operations, "Purchases (and as many taps) in process")->capture_default_str();
    app.add_option("--pcsc", pcsc_operations, "Purchases and taps (and twice as many floor APDUs) through pcscd")
        ->capture_default_str();
    app.add_option("--work-dir", work_dir, "Directory for images, queues and logs (default: new dir under the cwd)");
    app.add_option("--vcard", vcard, "coconut-vcard executable (serves the images to vpcd)");
    app.add_flag("--skip-pcsc", skip_pcsc, "Only the in-process runs");
    app.add_flag("--skip-memory", skip_memory, "Skip the in-process run with memory images");
    CLI11_PARSE(app, argc, argv);

    try {
        fs::path work;
        if (work_dir.empty()) {
            // Under the cwd, not /tmp: the figures must come from the disk a terminal would write to.
            char pattern[] = "terminal-bench.XXXXXX";
            if (::mkdtemp(pattern) == nullptr) throw std::runtime_error("mkdtemp failed");
            work = fs::absolute(pattern);
        } else {
            work = fs::absolute(work_dir);
            fs::create_directories(work);
        }
        const InProcessResults file = run_in_process(work, in_process_operations, true);
        InProcessResults memory;
        if (!skip_memory) memory = run_in_process(work, in_process_operations, false);
        PcscResults pcsc;
        if (!skip_pcsc) pcsc = run_pcsc(vcard, work, pcsc_operations);

        utsname host{};
        ::uname(&host);
        std::time_t now = std::time(nullptr);
        char when[64];
        std::strftime(when, sizeof when, "%Y-%m-%d %H:%M UTC", std::gmtime(&now));
        double load[3] = {0, 0, 0};
        ::getloadavg(load, 3);
        std::printf("terminal_bench, one run, %s, %s %s, %ld cores, load average %.2f at the end; work dir %s\n\n", when,
                    host.sysname, host.release, sysconf(_SC_NPROCESSORS_ONLN), load[0], work.c_str());
        std::printf("| %-58s | %6s | %8s | %9s | %9s | %-22s |\n", "operation", "count", "per s", "median us", "p99 us",
                    "ratio (medians)");
        std::printf("|%s|%s|%s|%s|%s|%s|\n", std::string(60, '-').c_str(), std::string(8, '-').c_str(),
                    std::string(10, '-').c_str(), std::string(11, '-').c_str(), std::string(11, '-').c_str(),
                    std::string(24, '-').c_str());
        row("disk floor during the in-process runs (file images)", file.disk, "1.0 x disk");
        row("in-process purchase, file images + disk queue", file.purchase,
            ratio(file.purchase.median_us, file.disk.median_us, "disk"), true);
        row("in-process flat tap, file images + disk queue", file.tap, ratio(file.tap.median_us, file.disk.median_us, "disk"),
            true);
        if (!skip_memory) {
            row("disk floor during the in-process runs (memory images)", memory.disk, "1.0 x disk");
            row("in-process purchase, memory images + disk queue", memory.purchase,
                ratio(memory.purchase.median_us, memory.disk.median_us, "disk"), true);
            row("in-process flat tap, memory images + disk queue", memory.tap,
                ratio(memory.tap.median_us, memory.disk.median_us, "disk"), true);
        }
        if (!skip_pcsc) {
            row("disk floor during the PC/SC run", pcsc.disk, "1.0 x disk");
            row("PC/SC raw floor: 80 FE 00 00 -> 6D00", pcsc.floor, "1.0 x floor");
            row("PC/SC SCardConnect + SCardStatus (each flow does one)", pcsc.connect,
                ratio(pcsc.connect.median_us, pcsc.floor.median_us, "floor"));
            row("PC/SC Terminal::balance (connect, SELECT, 80 5C)", pcsc.balance,
                ratio(pcsc.balance.median_us, pcsc.floor.median_us, "floor"));
            row("PC/SC Terminal::purchase (durable images + queue)", pcsc.purchase,
                ratio(pcsc.purchase.median_us, pcsc.floor.median_us, "floor"), true);
            row("PC/SC Terminal::transit_tap flat (durable images + queue)", pcsc.tap,
                ratio(pcsc.tap.median_us, pcsc.floor.median_us, "floor"), true);
            // Purchase: SELECT, INIT, PSAM 80 70, DEBIT, PSAM 80 72. Tap: SELECT, READ RECORD EF1A, INIT CAPP,
            // PSAM 80 70, 80 DC (EF1A), 80 DC (EF1E), DEBIT, PSAM 80 72. Each flow starts with SCardConnect.
            std::printf("\nA purchase is SCardConnect + 5 APDUs, a tap SCardConnect + 8 APDUs; each pays 4 fdatasyncs "
                        "(PSAM 80 70, queue intent, card DEBIT, queue record).\nFloors of this run: tap >= connect + 8 x "
                        "APDU floor + 4 x disk floor = %.0f us; measured tap median %.0f us.\n",
                        pcsc.connect.median_us + 8 * pcsc.floor.median_us + 4 * pcsc.disk.median_us, pcsc.tap.median_us);
            std::printf("Target: transit tap through PC/SC incl. the durable queue write < 2000 us median: %s (%.0f us)\n",
                        pcsc.tap.median_us < 2000.0 ? "MET" : "NOT MET", pcsc.tap.median_us);
        }
    } catch (const std::exception& error) {
        std::fprintf(stderr, "terminal_bench FAILED: %s\n", error.what());
        return 1;
    }
    return 0;
}
