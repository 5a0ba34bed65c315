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
// Target (issue 2): a full purchase through the real PC/SC stack under 1 ms median.
#include "pcsc_stack.hpp"

#include <coconut/apdu/bytes.hpp>
#include <coconut/cos/card.hpp>
#include <coconut/crypto/card_crypto.hpp>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <linux/magic.h>
#include <sched.h>
#include <sys/statfs.h>
#include <sys/utsname.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#ifndef COCONUT_VCARD_PATH
#define COCONUT_VCARD_PATH "coconut-vcard"
#endif

namespace {

using namespace coconut;
namespace fs = std::filesystem;
namespace stack = coconut::pcsc_stack;
using Clock = std::chrono::steady_clock;
using Transmit = std::function<Bytes(ByteView)>;

const char* const issuer_id = "4600000000000001";
const char* const asn = "46010000000012345678";
const char* const master_dpk = "0123456789ABCDEFFEDCBA9876543210";
constexpr std::uint32_t purchase_amount_fen = 1;
constexpr std::uint32_t card_balance_fen = 100000;
// The offline ATC is 16 bits: replace the card well before it runs out (and before the balance does).
constexpr std::uint32_t purchases_per_card = 50000;
const Bytes date_time = hex("20261126120000");
const Bytes purse_select = hex("00A4040008A00000063201010500");
const Bytes psam_select = hex("00A4040010A0000006324D4F542E435053414D303100");
const Bytes floor_apdu = hex("80FE0000");  // unsupported INS: the dispatcher answers 6D00 at once
const Bytes balance_apdu = hex("805C000204");

nlohmann::json card_profile() {
    return {{"kind", "card"},
            {"asn", asn},
            {"issuer_id", issuer_id},
            {"balance_fen", card_balance_fen},
            {"max_balance_fen", card_balance_fen},
            {"pin", "123456"},
            {"protocol", "T=1"},
            {"seed", "B0B0B0B0B0B0B0B0B0B0B0B0B0B0B0B0"},
            {"start_date", "20260101"},
            {"expiry_date", "20351231"},
            {"master_keys",
             {{"dpk", master_dpk},
              {"dlk", "11223344556677888877665544332211"},
              {"dtk", "2B7E151628AED2A6ABF7158809CF4F3C"},
              {"iak", "404142434445464748494A4B4C4D4E4F"},
              {"damk", "000102030405060708090A0B0C0D0E0F"}}}};
}

// A production PSAM: the issuer-level purchase key, diversified per card by 80 70.
nlohmann::json psam_profile() {
    crypto::Block issuer_factor{};
    const Bytes issuer = hex(issuer_id);
    std::copy(issuer.begin(), issuer.end(), issuer_factor.begin());
    const crypto::Key16 issuer_key = crypto::diversify(crypto::Key16(hex(master_dpk)), issuer_factor);
    return {
        {"kind", "psam"},        {"terminal_id", "460100000001"}, {"purchase_key", to_hex(issuer_key.view())},
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
void purchase(const Transmit& card, const Transmit& psam, ByteView terminal_id,
              std::vector<std::int64_t>* steps_ns) {
    auto timed = [&](int step, const Transmit& target, const char* what, const Bytes& command) {
        const auto start = Clock::now();
        Bytes data = expect_ok(what, target(command));
        if (steps_ns != nullptr) steps_ns[step].push_back((Clock::now() - start).count());
        return data;
    };
    timed(0, card, "SELECT purse", purse_select);
    const Bytes init =
        timed(1, card, "INITIALIZE FOR PURCHASE",
              concat(hex("805001020B01"), be_bytes(purchase_amount_fen, 4), terminal_id, hex("0F")));
    // 80 70: card random | offline ATC | amount | type | date-time | key version | alg | card, issuer
    // factors.
    const Bytes asn_bytes = hex(asn);
    const Bytes sam_data =
        concat(ByteView(init).subspan(11, 4), ByteView(init).subspan(4, 2), be_bytes(purchase_amount_fen, 4),
               Bytes{0x06}, date_time, ByteView(init).subspan(9, 2), ByteView(asn_bytes).subspan(2, 8),
               hex(issuer_id));
    const Bytes sam = timed(
        2, psam, "PSAM 80 70",
        concat(hex("80700000"), Bytes{static_cast<std::uint8_t>(sam_data.size())}, sam_data, hex("08")));
    const Bytes debit = timed(3, card, "DEBIT FOR PURCHASE",
                              concat(hex("805401000F"), ByteView(sam).subspan(0, 4), date_time,
                                     ByteView(sam).subspan(4, 4), hex("08")));
    timed(4, psam, "PSAM 80 72", concat(hex("8072000004"), ByteView(debit).subspan(4, 4)));
}

struct Stats {
    std::size_t count = 0;
    double median_us = 0;
    double p99_us = 0;
    double mean_us = 0;
    double per_second = 0;  // count / wall time of the run
};

Stats summarize(std::vector<std::int64_t> samples_ns, double wall_seconds) {
    Stats stats;
    if (samples_ns.empty()) return stats;
    std::sort(samples_ns.begin(), samples_ns.end());
    stats.count = samples_ns.size();
    stats.median_us = static_cast<double>(samples_ns[samples_ns.size() / 2]) / 1000.0;
    stats.p99_us =
        static_cast<double>(samples_ns[std::min(samples_ns.size() - 1, samples_ns.size() * 99 / 100)]) /
        1000.0;
    double total = 0;
    for (auto sample : samples_ns) total += static_cast<double>(sample);
    stats.mean_us = total / static_cast<double>(samples_ns.size()) / 1000.0;
    stats.per_second = wall_seconds > 0 ? static_cast<double>(samples_ns.size()) / wall_seconds : 0;
    return stats;
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
Stats run_in_process(std::size_t purchases, const std::function<CardPair()>& fresh_pair,
                     const std::function<void()>& between = {}) {
    std::vector<std::int64_t> samples;
    samples.reserve(purchases);
    double wall_seconds = 0;
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
            const auto elapsed = Clock::now() - t0;
            samples.push_back(elapsed.count());
            wall_seconds += std::chrono::duration<double>(elapsed).count();
            if (between) between();
        }
        done += batch;
    }
    return summarize(std::move(samples), wall_seconds);
}

// The disk's own floor for one commit: what an image commit is made of (one 16 KiB slot pwrite + fdatasync,
// image.hpp), on the same file system, interleaved with the file-image purchases.
class DiskFloor {
  public:
    explicit DiskFloor(const fs::path& path)
        : fd_(::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) {
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
        if (::pwrite(fd_, slot_.data(), slot_.size(), offset) != static_cast<ssize_t>(slot_.size()) ||
            ::fdatasync(fd_) != 0) {
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
PcscResults run_pcsc(const std::string& vcard, const fs::path& work, std::size_t purchases,
                     bool volatile_images) {
    const fs::path card_image = work / "pcsc-card.img";
    const fs::path psam_image = work / "pcsc-psam.img";
    auto created = cos::create_image(card_image, card_profile(), true);
    if (!created) throw std::runtime_error(created.error().message);
    created = cos::create_image(psam_image, psam_profile(), true);
    if (!created) throw std::runtime_error(created.error().message);

    stack::Pcscd pcscd;
    pcscd.start(work / "pcscd.log");
    const int serve_log =
        ::open((work / "serve.log").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    std::vector<std::string> serve_argv{vcard, "serve", card_image.string(), "--psam", psam_image.string()};
    if (volatile_images) serve_argv.push_back("--volatile");
    stack::Child serve = stack::Child::spawn(serve_argv, -1, -1, serve_log);
    ::close(serve_log);
    PcscResults results;
    {
        stack::Context context;
        context.wait_for_card(stack::card_reader, stack::card_present_wait);
        context.wait_for_card(stack::psam_reader, stack::card_present_wait);
        stack::Card card_reader(context, stack::card_reader);
        stack::Card psam_reader(context, stack::psam_reader);
        Transmit card = [&](ByteView c) { return card_reader.transmit(c); };
        Transmit psam = [&](ByteView c) { return psam_reader.transmit(c); };
        expect_ok("PSAM SELECT", psam(psam_select));
        const Bytes terminal_id = expect_ok("PSAM EF16", psam(hex("00B0960006")));

        // Warm-up: caches, TCP windows, pcscd's threads.
        for (int i = 0; i < 50; ++i) {
            card(floor_apdu);
            purchase(card, psam, terminal_id, nullptr);
        }
        std::vector<std::int64_t> floor_ns, balance_ns, purchase_ns, steps_ns[5];
        double purchase_seconds = 0;
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
            const auto elapsed = Clock::now() - t0;
            purchase_ns.push_back(elapsed.count());
            purchase_seconds += std::chrono::duration<double>(elapsed).count();
        }
        results.floor = summarize(floor_ns, 0);
        results.balance = summarize(balance_ns, 0);
        results.purchase = summarize(purchase_ns, purchase_seconds);
        for (int step = 0; step < 5; ++step) results.steps[step] = summarize(steps_ns[step], 0);
    }
    const int serve_rc = serve.stop(SIGTERM);
    const int pcscd_rc = pcscd.stop();
    if (serve_rc != 0 || pcscd_rc != 0) {
        std::fprintf(stderr, "warning: serve exit %d, pcscd exit %d\n", serve_rc, pcscd_rc);
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
        case EXT4_SUPER_MAGIC:
            return "ext4";
        case TMPFS_MAGIC:
            return "tmpfs (fdatasync is free: not a durable figure)";
        case XFS_SUPER_MAGIC:
            return "xfs";
        case BTRFS_SUPER_MAGIC:
            return "btrfs";
        case OVERLAYFS_SUPER_MAGIC:
            return "overlayfs";
        default:
            return "other";
    }
}

void row(const char* name, const Stats& s, const std::string& ratio) {
    if (s.per_second > 0) {
        std::printf("| %-44s | %9zu | %10.0f | %9.1f | %9.1f | %s |\n", name, s.count, s.per_second,
                    s.median_us, s.p99_us, ratio.c_str());
    } else {
        std::printf("| %-44s | %9zu | %10s | %9.1f | %9.1f | %s |\n", name, s.count, "", s.median_us,
                    s.p99_us, ratio.c_str());
    }
}

std::string ratio_text(double a, double b, const char* of) {
    char text[96];
    std::snprintf(text, sizeof text, "%.2f x %s", b > 0 ? a / b : 0.0, of);
    return text;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{
        "card_bench: full purchases in process and through pcscd + vpcd, against the raw APDU floor"};
    std::size_t memory_purchases = 100000;
    std::size_t file_purchases = 2000;
    std::size_t pcsc_purchases = 2000;
    std::string work_dir;
    std::string vcard = COCONUT_VCARD_PATH;
    int cpu = 0;
    bool skip_pcsc = false;
    bool keep_cpus_awake = false;
    app.add_option("--memory-purchases", memory_purchases, "In-process purchases with memory images");
    app.add_option("--file-purchases", file_purchases,
                   "In-process purchases with file images (2 fdatasync each)");
    app.add_option("--pcsc-purchases", pcsc_purchases, "Purchases (and as many floor APDUs) through pcscd");
    app.add_option("--work-dir", work_dir, "Directory for the images and logs (default: new dir in /tmp)");
    app.add_option("--vcard", vcard, "coconut-vcard executable (serves the images to vpcd)");
    app.add_option("--cpu", cpu,
                   "Core the in-process runs are pinned to (-1: not pinned; they are one thread)");
    app.add_flag("--skip-pcsc", skip_pcsc, "Only the in-process runs");
    app.add_flag("--keep-cpus-awake", keep_cpus_awake,
                 "Run a SCHED_IDLE busy thread per CPU (this VM wakes an idle vCPU only every 4 ms)");
    CLI11_PARSE(app, argc, argv);

    try {
        fs::path work;
        if (work_dir.empty()) {
            char pattern[] = "/tmp/coconut-card-bench.XXXXXX";
            if (::mkdtemp(pattern) == nullptr) throw std::runtime_error("mkdtemp failed");
            work = pattern;
        } else {
            work = fs::absolute(work_dir);
            fs::create_directories(work);
        }
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
            return CardPair{unwrap(cos::VirtualCard::in_memory(card_payload)),
                            unwrap(cos::VirtualCard::in_memory(psam_payload))};
        });
        DiskFloor disk_floor(work / "disk-floor.bin");
        const Stats file = run_in_process(
            file_purchases,
            [&] {
                const fs::path card_image = work / "card.img";
                const fs::path psam_image = work / "psam.img";
                auto made = cos::create_image(card_image, card_profile(), true);
                if (!made) throw std::runtime_error(made.error().message);
                made = cos::create_image(psam_image, psam_profile(), true);
                if (!made) throw std::runtime_error(made.error().message);
                return CardPair{unwrap(cos::VirtualCard::open(card_image)),
                                unwrap(cos::VirtualCard::open(psam_image))};
            },
            [&] { disk_floor.sample(); });
        const Stats disk = summarize(disk_floor.samples(), 0);
        sched_setaffinity(0, sizeof original, &original);

        PcscResults pcsc_memory;
        PcscResults pcsc;
        if (!skip_pcsc) {
            pcsc_memory = run_pcsc(vcard, work, pcsc_purchases, true);
            pcsc = run_pcsc(vcard, work, pcsc_purchases, false);
        }

        utsname host{};
        ::uname(&host);
        std::time_t now = std::time(nullptr);
        char when[64];
        std::strftime(when, sizeof when, "%Y-%m-%d %H:%M UTC", std::gmtime(&now));
        waker.reset();
        std::printf("card_bench, one run, %s, %s %s, %ld cores; images on %s (%s)%s\n\n", when, host.sysname,
                    host.release, sysconf(_SC_NPROCESSORS_ONLN), work.c_str(), filesystem_of(work).c_str(),
                    keep_cpus_awake ? "; --keep-cpus-awake (SCHED_IDLE busy thread per CPU)" : "");
        std::printf("| %-44s | %9s | %10s | %9s | %9s | %s |\n", "operation", "count", "per second",
                    "median us", "p99 us", "ratio (medians)");
        std::printf("|%s|%s|%s|%s|%s|%s|\n", std::string(46, '-').c_str(), std::string(11, '-').c_str(),
                    std::string(12, '-').c_str(), std::string(11, '-').c_str(), std::string(11, '-').c_str(),
                    std::string(20, '-').c_str());
        row("in-process purchase, memory images (1 core)", memory, "1.00 (baseline)");
        row("in-process purchase, file images (1 core)", file,
            ratio_text(file.median_us, memory.median_us, "memory"));
        row("disk floor: 16 KiB pwrite + fdatasync", disk,
            ratio_text(file.median_us, disk.median_us, "disk (file purchase / disk floor)"));
        if (!skip_pcsc) {
            row("PC/SC raw floor: 80 FE 00 00 -> 6D00 (mem)", pcsc_memory.floor, "1.00 (floor)");
            row("PC/SC GET BALANCE (memory images)", pcsc_memory.balance,
                ratio_text(pcsc_memory.balance.median_us, pcsc_memory.floor.median_us, "floor"));
            row("PC/SC full purchase, memory images", pcsc_memory.purchase,
                ratio_text(pcsc_memory.purchase.median_us, pcsc_memory.floor.median_us, "floor"));
            row("PC/SC raw floor: 80 FE 00 00 -> 6D00 (file)", pcsc.floor, "1.00 (floor)");
            row("PC/SC full purchase, file images (durable)", pcsc.purchase,
                ratio_text(pcsc.purchase.median_us, pcsc.floor.median_us, "floor"));
            const char* step_names[5] = {"  file: step SELECT purse", "  file: step INITIALIZE FOR PURCHASE",
                                         "  file: step PSAM 80 70 (commit)", "  file: step DEBIT (commit)",
                                         "  file: step PSAM 80 72"};
            for (int step = 0; step < 5; ++step) {
                row(step_names[step], pcsc.steps[step],
                    ratio_text(pcsc.steps[step].median_us, pcsc.floor.median_us, "floor"));
            }
            std::printf(
                "\nPC/SC full purchase, memory images: %s; file images: %s\n",
                ratio_text(pcsc_memory.purchase.median_us, memory.median_us, "in-process memory").c_str(),
                ratio_text(pcsc.purchase.median_us, file.median_us, "in-process file").c_str());
            std::printf(
                "target: full purchase through real PC/SC < 1000 us median: memory images %s (%.0f us), "
                "file images %s (%.0f us; 2 commits, disk floor %.0f us each)\n",
                pcsc_memory.purchase.median_us < 1000.0 ? "MET" : "NOT MET", pcsc_memory.purchase.median_us,
                pcsc.purchase.median_us < 1000.0 ? "MET" : "NOT MET", pcsc.purchase.median_us,
                disk.median_us);
        }
    } catch (const std::exception& error) {
        std::fprintf(stderr, "card_bench FAILED: %s\n", error.what());
        return 1;
    }
    return 0;
}
