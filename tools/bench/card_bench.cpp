// card_bench: how fast is a full purchase on the emulated card, in process and through the real PC/SC stack?
//
//   in process   SELECT + INITIALIZE FOR PURCHASE + PSAM 80 70 + DEBIT + PSAM 80 72 called on
//                cos::VirtualCard directly, pinned to one core; once with memory images, once with file
//                images (each DEBIT and each 80 70 is one durable commit: pwrite + fdatasync).
//   PC/SC        the same five APDUs through libpcsclite → pcscd → vpcd → `coconut-vcard serve` (file
//                images), interleaved one for one with the raw floor: an APDU the card rejects at once
//                (80 FE 00 00 → 6D00), i.e. one round trip through the stack with no card work.
//
// One run prints everything side by side: median and p99 per operation, purchases per second, and ratios.
// Target: a full purchase through the real PC/SC stack under 1 ms median.
#include "bench_card.hpp"
#include "bench_stats.hpp"
#include "pcsc_env.hpp"

#include <coconut/core/bytes.hpp>
#include <coconut/cos/card.hpp>
#include <coconut/crypto/card_crypto.hpp>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <linux/magic.h>
#include <pthread.h>
#include <sched.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace coconut;
namespace fs = std::filesystem;
using bench::asn;
using bench::floor_apdu;
using bench::issuer_id;
using bench::master_dpk;
using bench::Stats;
using bench::summarize;
using Clock = std::chrono::steady_clock;
using Transmit = std::function<Bytes(ByteView)>;

constexpr std::uint32_t purchase_amount_fen = 1;
// The offline ATC is 16 bits: replace the card well before it runs out (and before the balance does).
constexpr std::uint32_t purchases_per_card = 50000;
const Bytes date_time = hex("20261126120000");
const Bytes purse_select = hex("00A4040008A00000063201010500");
const Bytes psam_select = hex("00A4040010A0000006324D4F542E435053414D303100");
const Bytes balance_apdu = hex("805C000204");

nlohmann::json card_profile() { return bench::card_profile("B0B0B0B0B0B0B0B0B0B0B0B0B0B0B0B0"); }

// A production PSAM: the issuer-level purchase key, diversified per card by 80 70.
nlohmann::json psam_profile() {
    crypto::Block issuer_factor{};
    const Bytes issuer = hex(issuer_id);
    std::copy(issuer.begin(), issuer.end(), issuer_factor.begin());
    const crypto::Key16 issuer_key = crypto::diversify(crypto::Key16(hex(master_dpk)), issuer_factor);
    return {{"kind", "psam"},        {"terminal_id", "460100000001"}, {"purchase_key", to_hex(issuer_key.view())},
            {"key_level", "issuer"}, {"issuer_id", issuer_id},        {"key_index", 1},
            {"key_version", 1},      {"terminal_serial", 1},          {"protocol", "T=1"}};
}

std::uint16_t status_word(ByteView response) {
    if (response.size() < 2) throw std::runtime_error("response shorter than a status word");
    return read_be16(response.last(2));
}

Bytes expect_ok(const char* what, const Bytes& response) {
    if (status_word(response) != 0x9000) {
        throw std::runtime_error(std::string(what) + " answered " + to_hex(ByteView(response).last(2)));
    }
    return Bytes(response.begin(), response.end() - 2);
}

// The five APDUs of a purchase. `steps_ns`, if given, receives each APDU's duration.
void purchase(const Transmit& card, const Transmit& psam, ByteView terminal_id, std::vector<std::int64_t>* steps_ns) {
    auto timed = [&](int step, const Transmit& target, const char* what, const Bytes& command) {
        const auto start = Clock::now();
        Bytes data = expect_ok(what, target(command));
        if (steps_ns != nullptr) steps_ns[step].push_back((Clock::now() - start).count());
        return data;
    };
    timed(0, card, "SELECT purse", purse_select);
    const Bytes init =
        timed(1, card, "INITIALIZE FOR PURCHASE", concat(hex("805001020B01"), be_bytes(purchase_amount_fen, 4), terminal_id, hex("0F")));
    // 80 70: card random | offline ATC | amount | type | date-time | key version | alg | card, issuer
    // factors.
    const Bytes asn_bytes = hex(asn);
    const Bytes sam_data = concat(ByteView(init).subspan(11, 4), ByteView(init).subspan(4, 2), be_bytes(purchase_amount_fen, 4),
                                  Bytes{0x06}, date_time, ByteView(init).subspan(9, 2), ByteView(asn_bytes).subspan(2, 8), hex(issuer_id));
    const Bytes sam =
        timed(2, psam, "PSAM 80 70", concat(hex("80700000"), Bytes{static_cast<std::uint8_t>(sam_data.size())}, sam_data, hex("08")));
    const Bytes debit = timed(3, card, "DEBIT FOR PURCHASE",
                              concat(hex("805401000F"), ByteView(sam).subspan(0, 4), date_time, ByteView(sam).subspan(4, 4), hex("08")));
    timed(4, psam, "PSAM 80 72", concat(hex("8072000004"), ByteView(debit).subspan(4, 4)));
}

// Fresh durable card and PSAM images (the run's first purchase starts from the personalized state).
void create_images(const fs::path& card_image, const fs::path& psam_image) {
    auto created = cos::create_image(card_image, card_profile(), true);
    if (!created) throw std::runtime_error(created.error().message);
    created = cos::create_image(psam_image, psam_profile(), true);
    if (!created) throw std::runtime_error(created.error().message);
}

// ---- in process ---------------------------------------------------------------------------------

struct CardPair {
    std::unique_ptr<cos::VirtualCard> card;
    std::unique_ptr<cos::VirtualCard> psam;
};

template <class T>
T unwrap(Result<T, cos::ImageFailure> result) {
    if (!result) throw std::runtime_error(result.error().message);
    return std::move(result).value();
}

template <class T>
T unwrap(Result<T, std::string> result) {
    if (!result) throw std::runtime_error(result.error());
    return std::move(result).value();
}

// `between`, if set, runs after every purchase (outside the purchase's timing): the disk floor sample.
Stats run_in_process(std::size_t purchases, const std::function<CardPair()>& fresh_pair, const std::function<void()>& between = {}) {
    std::vector<std::int64_t> samples;
    samples.reserve(purchases);
    std::size_t done = 0;
    while (done < purchases) {
        CardPair pair = fresh_pair();  // not timed: personalization
        Transmit card = [&](ByteView c) { return pair.card->transmit(c); };
        Transmit psam = [&](ByteView c) { return pair.psam->transmit(c); };
        expect_ok("PSAM SELECT", psam(psam_select));
        const Bytes terminal_id = expect_ok("PSAM EF16", psam(hex("00B0960006")));
        const std::size_t batch = std::min<std::size_t>(purchases - done, purchases_per_card);
        for (std::size_t i = 0; i < batch; ++i) {
            const auto t0 = Clock::now();
            purchase(card, psam, terminal_id, nullptr);
            samples.push_back((Clock::now() - t0).count());
            if (between) between();
        }
        done += batch;
    }
    return summarize(std::move(samples));
}

// The disk's own floor for one commit: what an image commit is made of (one 16 KiB slot pwrite + fdatasync,
// image.hpp), on the same file system, interleaved with the file-image purchases.
class DiskFloor {
public:
    explicit DiskFloor(const fs::path& path) : fd_(::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) {
        if (fd_ < 0) throw std::runtime_error("cannot create " + path.string());
        slot_.assign(cos::image_default_slot_size, 0x5A);
        for (int slot = 0; slot < 2; ++slot) write_slot(slot);
    }
    ~DiskFloor() { ::close(fd_); }
    void sample() {
        const auto t0 = Clock::now();
        write_slot(next_slot_);
        samples_ns_.push_back((Clock::now() - t0).count());
        next_slot_ ^= 1;
    }
    std::vector<std::int64_t>& samples() { return samples_ns_; }

private:
    void write_slot(int slot) {
        const off_t offset = static_cast<off_t>(cos::image_header_size + slot * slot_.size());
        if (::pwrite(fd_, slot_.data(), slot_.size(), offset) != static_cast<ssize_t>(slot_.size()) || ::fdatasync(fd_) != 0) {
            throw std::runtime_error("disk floor: write failed");
        }
    }
    int fd_;
    Bytes slot_;
    int next_slot_ = 0;
    std::vector<std::int64_t> samples_ns_;
};

// ---- through PC/SC ------------------------------------------------------------------------------

struct PcscResults {
    Stats floor;
    Stats balance;
    Stats purchase;
    Stats steps[5];
};

// volatile_images: serve --volatile (memory copies), so the figure is the transport alone.
PcscResults run_pcsc(const std::string& vcard, const fs::path& work, std::size_t purchases, bool volatile_images) {
    const fs::path card_image = work / "pcsc-card.img";
    const fs::path psam_image = work / "pcsc-psam.img";
    create_images(card_image, psam_image);

    pcsc_env::VcardStack stack;
    stack.start_pcscd(work);
    stack.start_serve(vcard, work, card_image, psam_image, volatile_images);
    PcscResults results;
    {
        const auto card_reader = pcsc_env::open_reader_with_card(pcsc_env::card_reader);
        const auto psam_reader = pcsc_env::open_reader_with_card(pcsc_env::psam_reader);
        pcsc_env::connect_or_throw(*card_reader);
        pcsc_env::connect_or_throw(*psam_reader);
        Transmit card = [&](ByteView c) { return pcsc_env::transmit_short(*card_reader, c); };
        Transmit psam = [&](ByteView c) { return pcsc_env::transmit_short(*psam_reader, c); };
        expect_ok("PSAM SELECT", psam(psam_select));
        const Bytes terminal_id = expect_ok("PSAM EF16", psam(hex("00B0960006")));

        // Warm-up: caches, TCP windows, pcscd's threads.
        for (int i = 0; i < 50; ++i) {
            card(floor_apdu);
            purchase(card, psam, terminal_id, nullptr);
        }
        std::vector<std::int64_t> floor_ns, balance_ns, purchase_ns, steps_ns[5];
        for (std::size_t i = 0; i < purchases; ++i) {
            auto t0 = Clock::now();
            const Bytes rejected = card(floor_apdu);
            floor_ns.push_back((Clock::now() - t0).count());
            if (status_word(rejected) != 0x6D00) throw std::runtime_error("floor APDU: expected 6D00");
            t0 = Clock::now();
            expect_ok("GET BALANCE", card(balance_apdu));
            balance_ns.push_back((Clock::now() - t0).count());
            t0 = Clock::now();
            purchase(card, psam, terminal_id, steps_ns);
            purchase_ns.push_back((Clock::now() - t0).count());
        }
        results.floor = summarize(floor_ns);
        results.balance = summarize(balance_ns);
        results.purchase = summarize(purchase_ns);
        for (int step = 0; step < 5; ++step) results.steps[step] = summarize(steps_ns[step]);
    }
    const auto exit_codes = stack.stop();
    if (exit_codes.serve != 0 || exit_codes.pcscd != 0) {
        std::fprintf(stderr, "warning: serve exit %d, pcscd exit %d\n", exit_codes.serve, exit_codes.pcscd);
    }
    return results;
}

// --keep-cpus-awake: one SCHED_IDLE busy thread per CPU. On this VM an idle vCPU that waits for an
// fdatasync is woken only at the next 4 ms timer tick (docs/bench-terminal.md found it: 4 ms flushes with
// the CPU idle, ~50 us with a busy loop beside them). SCHED_IDLE threads run only when nothing else wants
// the CPU, so they keep the vCPUs out of halt without taking time from the benchmark, pcscd or serve.
class CpuWaker {
public:
    CpuWaker() {
        const long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        for (long cpu = 0; cpu < cpus; ++cpu) {
            threads_.emplace_back([this, cpu] {
                cpu_set_t one;
                CPU_ZERO(&one);
                CPU_SET(static_cast<int>(cpu), &one);
                pthread_setaffinity_np(pthread_self(), sizeof one, &one);
                sched_param idle{};
                pthread_setschedparam(pthread_self(), SCHED_IDLE, &idle);
                while (!stop_.load(std::memory_order_relaxed)) {
                }
            });
        }
    }
    ~CpuWaker() {
        stop_.store(true);
        for (auto& thread : threads_) thread.join();
    }
    CpuWaker(const CpuWaker&) = delete;
    CpuWaker& operator=(const CpuWaker&) = delete;

private:
    std::atomic<bool> stop_{false};
    std::vector<std::thread> threads_;
};

std::string filesystem_of(const fs::path& path) {
    struct statfs info {};
    if (::statfs(path.c_str(), &info) != 0) return "?";
    switch (static_cast<unsigned long>(info.f_type)) {
        case EXT4_SUPER_MAGIC: return "ext4";
        case TMPFS_MAGIC: return "tmpfs (fdatasync is free: not a durable figure)";
        case XFS_SUPER_MAGIC: return "xfs";
        case BTRFS_SUPER_MAGIC: return "btrfs";
        case OVERLAYFS_SUPER_MAGIC: return "overlayfs";
        default: return "other";
    }
}

// ratio column: medians, two decimals.
std::string ratio_text(double a, double b, const char* of) { return bench::ratio_text(a, b, of, 2); }

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"card_bench: full purchases in process and through pcscd + vpcd, against the raw APDU floor"};
    std::size_t memory_purchases = 100000;
    std::size_t file_purchases = 2000;
    std::size_t pcsc_purchases = 2000;
    std::string work_dir;
    std::string vcard = pcsc_env::default_vcard_path();
    int cpu = 0;
    bool skip_pcsc = false;
    bool keep_cpus_awake = false;
    app.add_option("--memory-purchases", memory_purchases, "In-process purchases with memory images");
    app.add_option("--file-purchases", file_purchases, "In-process purchases with file images (2 fdatasync each)");
    app.add_option("--pcsc-purchases", pcsc_purchases, "Purchases (and as many floor APDUs) through pcscd");
    app.add_option("--work-dir", work_dir, "Directory for the images and logs (default: new dir in /tmp)");
    app.add_option("--vcard", vcard, "coconut-vcard executable (serves the images to vpcd)");
    app.add_option("--cpu", cpu, "Core the in-process runs are pinned to (-1: not pinned; they are one thread)");
    app.add_flag("--skip-pcsc", skip_pcsc, "Only the in-process runs");
    app.add_flag("--keep-cpus-awake", keep_cpus_awake, "Run a SCHED_IDLE busy thread per CPU (this VM wakes an idle vCPU only every 4 ms)");
    CLI11_PARSE(app, argc, argv);

    try {
        const fs::path work = pcsc_env::make_work_dir(work_dir, "/tmp/coconut-card-bench.XXXXXX");
        std::optional<CpuWaker> waker;
        if (keep_cpus_awake) waker.emplace();
        const Bytes card_payload = unwrap(cos::personalize(card_profile()));
        const Bytes psam_payload = unwrap(cos::personalize(psam_profile()));

        // In-process runs on one core; the PC/SC run later gets the whole machine back (children inherit
        // the affinity, and pcscd + serve + this client are three processes).
        cpu_set_t original;
        sched_getaffinity(0, sizeof original, &original);
        if (cpu >= 0) {
            cpu_set_t one;
            CPU_ZERO(&one);
            CPU_SET(cpu, &one);
            if (sched_setaffinity(0, sizeof one, &one) != 0) {
                std::fprintf(stderr, "warning: cannot pin to cpu %d\n", cpu);
            }
        }
        const Stats memory = run_in_process(memory_purchases, [&] {
            return CardPair{unwrap(cos::VirtualCard::in_memory(card_payload)), unwrap(cos::VirtualCard::in_memory(psam_payload))};
        });
        DiskFloor disk_floor(work / "disk-floor.bin");
        const Stats file = run_in_process(
            file_purchases,
            [&] {
                const fs::path card_image = work / "card.img";
                const fs::path psam_image = work / "psam.img";
                create_images(card_image, psam_image);
                return CardPair{unwrap(cos::VirtualCard::open(card_image)), unwrap(cos::VirtualCard::open(psam_image))};
            },
            [&] { disk_floor.sample(); });
        const Stats disk = summarize(disk_floor.samples());
        sched_setaffinity(0, sizeof original, &original);

        PcscResults pcsc_memory;
        PcscResults pcsc;
        if (!skip_pcsc) {
            pcsc_memory = run_pcsc(vcard, work, pcsc_purchases, true);
            pcsc = run_pcsc(vcard, work, pcsc_purchases, false);
        }

        const std::string when_and_host = bench::run_time_and_host();
        waker.reset();
        std::printf("card_bench, one run, %s, %ld cores; images on %s (%s)%s\n\n", when_and_host.c_str(), sysconf(_SC_NPROCESSORS_ONLN),
                    work.c_str(), filesystem_of(work).c_str(),
                    keep_cpus_awake ? "; --keep-cpus-awake (SCHED_IDLE busy thread per CPU)" : "");
        const bench::Table table({.name_width = 44,
                                  .count_width = 9,
                                  .per_second_title = "per second",
                                  .per_second_width = 10,
                                  .ratio_width = 0,
                                  .ratio_rule_width = 20});
        table.header();
        table.row("in-process purchase, memory images (1 core)", memory, "1.00 (baseline)", true);
        table.row("in-process purchase, file images (1 core)", file, ratio_text(file.median_us, memory.median_us, "memory"), true);
        table.row("disk floor: 16 KiB pwrite + fdatasync", disk,
                  ratio_text(file.median_us, disk.median_us, "disk (file purchase / disk floor)"), false);
        if (!skip_pcsc) {
            table.row("PC/SC raw floor: 80 FE 00 00 -> 6D00 (mem)", pcsc_memory.floor, "1.00 (floor)", false);
            table.row("PC/SC GET BALANCE (memory images)", pcsc_memory.balance,
                      ratio_text(pcsc_memory.balance.median_us, pcsc_memory.floor.median_us, "floor"), false);
            table.row("PC/SC full purchase, memory images", pcsc_memory.purchase,
                      ratio_text(pcsc_memory.purchase.median_us, pcsc_memory.floor.median_us, "floor"), true);
            table.row("PC/SC raw floor: 80 FE 00 00 -> 6D00 (file)", pcsc.floor, "1.00 (floor)", false);
            table.row("PC/SC full purchase, file images (durable)", pcsc.purchase,
                      ratio_text(pcsc.purchase.median_us, pcsc.floor.median_us, "floor"), true);
            const char* step_names[5] = {"  file: step SELECT purse", "  file: step INITIALIZE FOR PURCHASE",
                                         "  file: step PSAM 80 70 (commit)", "  file: step DEBIT (commit)", "  file: step PSAM 80 72"};
            for (int step = 0; step < 5; ++step) {
                table.row(step_names[step], pcsc.steps[step], ratio_text(pcsc.steps[step].median_us, pcsc.floor.median_us, "floor"), false);
            }
            std::printf("\nPC/SC full purchase, memory images: %s; file images: %s\n",
                        ratio_text(pcsc_memory.purchase.median_us, memory.median_us, "in-process memory").c_str(),
                        ratio_text(pcsc.purchase.median_us, file.median_us, "in-process file").c_str());
            std::printf(
                "target: full purchase through real PC/SC < 1000 us median: memory images %s (%.0f us), "
                "file images %s (%.0f us; 2 commits, disk floor %.0f us each)\n",
                pcsc_memory.purchase.median_us < 1000.0 ? "MET" : "NOT MET", pcsc_memory.purchase.median_us,
                pcsc.purchase.median_us < 1000.0 ? "MET" : "NOT MET", pcsc.purchase.median_us, disk.median_us);
        }
    } catch (const std::exception& error) {
        std::fprintf(stderr, "card_bench FAILED: %s\n", error.what());
        return 1;
    }
    return 0;
}
