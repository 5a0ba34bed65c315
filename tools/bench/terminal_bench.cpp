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
// One run prints everything side by side with ratios. Target: a transit tap through the real
// PC/SC stack, durable queue write included, under 2 ms median.
#include "bench_card.hpp"
#include "bench_stats.hpp"
#include "pcsc_env.hpp"

#include <coconut/cos/card.hpp>
#include <coconut/sdk/hotlist.hpp>
#include <coconut/sdk/queue.hpp>
#include <coconut/sdk/reader.hpp>
#include <coconut/sdk/terminal.hpp>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using namespace coconut;
namespace fs = std::filesystem;
using bench::floor_apdu;
using bench::issuer_id;
using bench::Stats;
using bench::summarize;
using Clock = std::chrono::steady_clock;

constexpr std::uint32_t fare_fen = 1;
// A card does at most this many debits in one run: below the 16-bit offline ATC and the balance.
constexpr std::size_t debits_per_card_max = 60000;
// Blocked cards in the bench's hotlist: a realistic lookup, not an empty map.
constexpr std::size_t hotlist_entries = 10000;
constexpr std::size_t warmup_operations = 20;

nlohmann::json card_profile() { return bench::card_profile("A0A0A0A0A0A0A0A0A0A0A0A0A0A0A0A0"); }

nlohmann::json psam_profile() {
    return {{"kind", "psam"},        {"terminal_id", "460100000001"}, {"purchase_key", bench::master_dpk},
            {"key_level", "master"}, {"issuer_id", issuer_id},        {"key_index", 1},
            {"key_version", 1},      {"terminal_serial", 1},          {"protocol", "T=1"}};
}

sdk::TransitConfig transit_config() {
    // Two flat lines: taps alternate between them, so no tap is a free repeat inside the window.
    sdk::TransitConfig config;
    for (std::uint16_t line : {1, 2}) config.lines[line] = sdk::LineFare{line, false, fare_fen, {}, 1001};
    return config;
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

    pcsc_env::VcardStack stack;
    stack.start_pcscd(work);
    stack.start_serve(vcard, work, card_image, psam_image);
    PcscResults results;
    {
        auto card_reader = pcsc_env::open_reader_with_card(pcsc_env::card_reader);
        auto psam_reader = pcsc_env::open_reader_with_card(pcsc_env::psam_reader);
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
    const auto exit_codes = stack.stop();
    if (exit_codes.serve != 0 || exit_codes.pcscd != 0)
        std::fprintf(stderr, "warning: serve exit %d, pcscd exit %d\n", exit_codes.serve, exit_codes.pcscd);
    return results;
}

// ---- report ---------------------------------------------------------------------------------------

// ratio column: medians, one decimal.
std::string ratio(double a, double b, const char* of) { return bench::ratio_text(a, b, of, 1); }

// The rows of one in-process run; `images` is "file images" or "memory images".
void in_process_rows(const bench::Table& table, const std::string& images, const InProcessResults& run) {
    table.row("disk floor during the in-process runs (" + images + ")", run.disk, "1.0 x disk", false);
    table.row("in-process purchase, " + images + " + disk queue", run.purchase, ratio(run.purchase.median_us, run.disk.median_us, "disk"),
              true);
    table.row("in-process flat tap, " + images + " + disk queue", run.tap, ratio(run.tap.median_us, run.disk.median_us, "disk"), true);
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"terminal_bench: terminal flows in process and through pcscd + vpcd, against the APDU and disk floors"};
    std::size_t in_process_operations = 1000;
    std::size_t pcsc_operations = 500;
    std::string work_dir;
    std::string vcard = pcsc_env::default_vcard_path();
    bool skip_pcsc = false;
    bool skip_memory = false;
    app.add_option("--in-process", in_process_operations, "Purchases (and as many taps) in process")->capture_default_str();
    app.add_option("--pcsc", pcsc_operations, "Purchases and taps (and twice as many floor APDUs) through pcscd")->capture_default_str();
    app.add_option("--work-dir", work_dir, "Directory for images, queues and logs (default: new dir under the cwd)");
    app.add_option("--vcard", vcard, "coconut-vcard executable (serves the images to vpcd)");
    app.add_flag("--skip-pcsc", skip_pcsc, "Only the in-process runs");
    app.add_flag("--skip-memory", skip_memory, "Skip the in-process run with memory images");
    CLI11_PARSE(app, argc, argv);

    try {
        // By default under the cwd, not /tmp: the figures must come from the disk a terminal would write to.
        const fs::path work = pcsc_env::make_work_dir(work_dir, "terminal-bench.XXXXXX");
        const InProcessResults file = run_in_process(work, in_process_operations, true);
        InProcessResults memory;
        if (!skip_memory) memory = run_in_process(work, in_process_operations, false);
        PcscResults pcsc;
        if (!skip_pcsc) pcsc = run_pcsc(vcard, work, pcsc_operations);

        const std::string when_and_host = bench::run_time_and_host();
        double load[3] = {0, 0, 0};
        ::getloadavg(load, 3);
        std::printf("terminal_bench, one run, %s, %ld cores, load average %.2f at the end; work dir %s\n\n", when_and_host.c_str(),
                    sysconf(_SC_NPROCESSORS_ONLN), load[0], work.c_str());
        const bench::Table table({.name_width = 58,
                                  .count_width = 6,
                                  .per_second_title = "per s",
                                  .per_second_width = 8,
                                  .ratio_width = 22,
                                  .ratio_rule_width = 24});
        table.header();
        in_process_rows(table, "file images", file);
        if (!skip_memory) in_process_rows(table, "memory images", memory);
        if (!skip_pcsc) {
            table.row("disk floor during the PC/SC run", pcsc.disk, "1.0 x disk", false);
            table.row("PC/SC raw floor: 80 FE 00 00 -> 6D00", pcsc.floor, "1.0 x floor", false);
            table.row("PC/SC SCardConnect + SCardStatus (each flow does one)", pcsc.connect,
                      ratio(pcsc.connect.median_us, pcsc.floor.median_us, "floor"), false);
            table.row("PC/SC Terminal::balance (connect, SELECT, 80 5C)", pcsc.balance,
                      ratio(pcsc.balance.median_us, pcsc.floor.median_us, "floor"), false);
            table.row("PC/SC Terminal::purchase (durable images + queue)", pcsc.purchase,
                      ratio(pcsc.purchase.median_us, pcsc.floor.median_us, "floor"), true);
            table.row("PC/SC Terminal::transit_tap flat (durable images + queue)", pcsc.tap,
                      ratio(pcsc.tap.median_us, pcsc.floor.median_us, "floor"), true);
            // Purchase: SELECT, INIT, PSAM 80 70, DEBIT, PSAM 80 72. Tap: SELECT, READ RECORD EF1A, INIT CAPP,
            // PSAM 80 70, 80 DC (EF1A), 80 DC (EF1E), DEBIT, PSAM 80 72. Each flow starts with SCardConnect.
            std::printf(
                "\nA purchase is SCardConnect + 5 APDUs, a tap SCardConnect + 8 APDUs; each pays 4 fdatasyncs "
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
