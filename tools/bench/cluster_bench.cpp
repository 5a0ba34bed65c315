// cluster_bench: the NATS JetStream layer (clearing/cluster) on a real 3-node cluster on loopback, started
// by the tests' fixture (tests/cluster/nats_cluster.hpp: TLS, credentials, max_payload 8 MB):
//   publish     sequential fenced, de-duplicated sync publishes of 8 KiB and 256 KiB (one group commit
//               each): latency per publish (publish → acknowledgement by a quorum), p50/p99/max
//   read        a JournalReader from sequence 1 over the published messages, AckNone and AckAll
//               alternated: messages/s and MB/s
//   lease       a holder stops renewing; a rival acquiring every 20 ms: time from the last renew to success
//   leader kill SIGKILL of the stream leader during sequential publishing: time from the kill to the
//               first acknowledged publish (the same id and fence resent every 100 ms), node restarted after
//   paced       (--paced-seconds S) fenced sync publishes at a fixed rate, as a primary's group commits
//               at a steady load (default 375/s of 2,800 B: 6,000 authorizations/s): the latency summary,
//               the time spent beyond 5 ms per 10 s, and each publish over 8 ms with its time from the
//               start (docs/BENCHMARKS.md "What stalls the stream"); then the cost of writing 4 MiB of
//               memory never touched before against writing it again (part of a stall's length: the
//               servers' Raft-log write cache grows into fresh memory; "What a stall costs")
// Results and the exact command: clearing/cluster/README.md "Measured".
#include "nats_cluster.hpp"

#include "bench_stats.hpp"

#include <coconut/cluster/journal.hpp>
#include <coconut/cluster/lease.hpp>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <utility>
#include <vector>

namespace {

using namespace coconut;
using namespace coconut::cluster;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

struct Settings {
    int publishes_8k = 2000;
    int publishes_256k = 300;
    int read_rounds = 3;
    int lease_runs = 3;
    int kill_runs = 3;
    int lease_ttl_ms = 3000;
    double paced_seconds = 0;
    int paced_rate = 375;
    int paced_size = 2800;
    bool paced_reader = false;
    bool paced_only = false;
    std::string paced_server = "any";
};

std::int64_t elapsed_ns(Clock::time_point since) {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - since).count();
}

void die(const std::string& what) {
    fmt::print(stderr, "cluster_bench: {}\n", what);
    std::exit(1);
}

// Sequential sync publishes of `size` bytes continuing the stream; the latency of each.
std::vector<std::int64_t> publish_run(Connection& connection, const StreamConfig& config, int count, std::size_t size,
                                      std::uint64_t& last) {
    std::vector<std::int64_t> samples;
    const Bytes payload(size, 0x5a);
    for (int i = 0; i < count; ++i) {
        const auto started = Clock::now();
        auto ack = publish(connection, config, payload, fmt::format("bench-{}", last + 1), last);
        samples.push_back(elapsed_ns(started));
        if (!ack) die("publish: " + ack.error().message);
        last = ack->sequence;
    }
    return samples;
}

void print_latency(const char* what, std::vector<std::int64_t> samples, std::size_t size) {
    std::sort(samples.begin(), samples.end());
    const auto stats = bench::summarize(samples);
    fmt::print("| publish {:<10} | {:>6} | {:>8.0f} | {:>8.2f} | {:>8.1f} | {:>8.1f} | {:>8.1f} |\n", what, stats.count, stats.per_second,
               stats.per_second * static_cast<double>(size) / 1e6, stats.median_us, stats.p99_us,
               static_cast<double>(samples.back()) / 1000.0);
}

void bench_publish(Connection& connection, const StreamConfig& small, const StreamConfig& big, const Settings& settings,
                   std::uint64_t& last_small, std::uint64_t& last_big) {
    fmt::print("\n| operation          |  count |  per s    |   MB/s   |  p50 us  |  p99 us  |  max us  |\n");
    fmt::print("|--------------------|--------|----------|----------|----------|----------|----------|\n");
    print_latency("8 KiB", publish_run(connection, small, settings.publishes_8k, 8 * 1024, last_small), 8 * 1024);
    print_latency("256 KiB", publish_run(connection, big, settings.publishes_256k, 256 * 1024, last_big), 256 * 1024);
}

// One pass of a reader from sequence 1 to `last`: messages/s and MB/s.
void read_pass(Connection& connection, const StreamConfig& config, std::uint64_t last, ReaderAck ack, const char* what, int round) {
    auto reader = JournalReader::open(connection, config, 1, ReaderOptions{.ack = ack});
    if (!reader) die("reader: " + reader.error().message);
    const auto started = Clock::now();
    std::uint64_t bytes = 0;
    while (reader->next_sequence() <= last) {
        auto batch = reader->next_batch(2s);
        if (!batch) die("read: " + batch.error().message);
        for (const auto& message : batch.value()) bytes += message.payload.size();
    }
    const double seconds = static_cast<double>(elapsed_ns(started)) / 1e9;
    fmt::print("| {} | {} | {} | {:.0f} | {:.1f} |\n", what, ack == ReaderAck::none ? "AckNone" : "AckAll", round,
               static_cast<double>(last) / seconds, static_cast<double>(bytes) / 1e6 / seconds);
}

void bench_read(Connection& connection, const StreamConfig& small, const StreamConfig& big, const Settings& settings,
                std::uint64_t last_small, std::uint64_t last_big) {
    fmt::print("\n| read from 1 | ack | round | messages/s | MB/s |\n|---|---|---|---|---|\n");
    for (int round = 1; round <= settings.read_rounds; ++round) {
        for (const ReaderAck ack : {ReaderAck::none, ReaderAck::all}) {
            read_pass(connection, small, last_small, ack, "8 KiB", round);
            read_pass(connection, big, last_big, ack, "256 KiB", round);
        }
    }
}

void bench_lease(Connection& connection, const Settings& settings) {
    LeaseConfig config;
    config.ttl = std::chrono::milliseconds{settings.lease_ttl_ms};
    auto lease = Lease::open(connection, config);
    if (!lease) die("lease: " + lease.error().message);
    fmt::print("\n| lease takeover, ttl {} ms | run | ms after the last renew |\n|---|---|---|\n", settings.lease_ttl_ms);
    for (int run = 0; run < settings.lease_runs; ++run) {
        auto revision = lease->acquire(lease_value({"holder", "a"}));
        if (!revision) die("acquire: " + revision.error().message);
        auto renewed = lease->renew(revision.value(), lease_value({"holder", "a"}));
        if (!renewed) die("renew: " + renewed.error().message);
        const auto stopped = Clock::now();
        while (true) {
            auto won = lease->acquire(lease_value({"rival", "b"}));
            if (won) {
                fmt::print("| | {} | {:.0f} |\n", run + 1, static_cast<double>(elapsed_ns(stopped)) / 1e6);
                if (!lease->release(won.value())) die("release failed");
                break;
            }
            if (won.error().code != LeaseErrorCode::held || Clock::now() - stopped > config.ttl + 10s)
                die("acquire: " + won.error().message);
            std::this_thread::sleep_for(20ms);
        }
    }
}

void bench_leader_kill(test::NatsCluster& cluster, Connection& connection, const StreamConfig& config, const Settings& settings,
                       std::uint64_t& last) {
    fmt::print("\n| stream leader SIGKILL | run | killed | ms to the first acknowledged publish | attempts |\n|---|---|---|---|---|\n");
    const Bytes payload(8 * 1024, 0x6b);
    for (int run = 0; run < settings.kill_runs; ++run) {
        auto leader = stream_leader(connection, config.name);
        if (!leader || leader->empty()) die("no stream leader");
        const int node = cluster.node_named(leader.value());
        cluster.kill(node);
        const auto killed = Clock::now();
        int attempts = 0;
        while (true) {
            ++attempts;
            auto ack = publish(connection, config, payload, fmt::format("bench-{}", last + 1), last, 1000ms);
            if (ack) {
                last = ack->sequence;
                break;
            }
            if (ack.error().code == PublishErrorCode::wrong_last_sequence || Clock::now() - killed > 60s)
                die("publish: " + ack.error().message);
            std::this_thread::sleep_for(100ms);
        }
        fmt::print("| | {} | {} | {:.0f} | {} |\n", run + 1, leader.value(), static_cast<double>(elapsed_ns(killed)) / 1e6, attempts);
        cluster.start(node);
        std::this_thread::sleep_for(5s);  // the node catches up before the next run
    }
}

// What writing `bytes` of anonymous memory costs on this machine, in ms, the medians of five mappings:
// never touched before; mapped by the kernel beforehand (`MAP_POPULATE`, as locked memory is) but not yet
// written by the process; and the same memory again. Where the first is far above the last, the first
// touch of a page is what a growing buffer costs; where the second is too, part of that cost is below the
// guest kernel (the hypervisor's) and locking memory cannot avoid it.
struct FirstTouch {
    double fresh_ms;
    double populated_ms;
    double again_ms;
};

FirstTouch first_touch_ms(std::size_t bytes) {
    const auto map = [bytes](int flags) {
        void* memory = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | flags, -1, 0);
        if (memory == MAP_FAILED) die("mmap failed");
        return memory;
    };
    const auto write_ns = [bytes](void* memory, int value) {
        const auto begun = Clock::now();
        std::memset(memory, value, bytes);
        return elapsed_ns(begun);
    };
    std::vector<std::int64_t> fresh, populated, again;
    for (int run = 0; run < 5; ++run) {
        void* memory = map(0);
        fresh.push_back(write_ns(memory, 1));
        again.push_back(write_ns(memory, 2));
        ::munmap(memory, bytes);
        memory = map(MAP_POPULATE);
        populated.push_back(write_ns(memory, 1));
        ::munmap(memory, bytes);
    }
    const auto median_ms = [](std::vector<std::int64_t> samples) { return bench::summarize(std::move(samples)).median_us / 1000; };
    return {median_ms(std::move(fresh)), median_ms(std::move(populated)), median_ms(std::move(again))};
}

// Sync publishes at a fixed rate (a primary's group commits at a steady load): each publish starts at
// its slot or, when late, right after the previous one. Prints the latency summary and every publish
// over 8 ms with its time from the start.
void bench_paced(Connection& connection, const StreamConfig& config, const Settings& settings, std::uint64_t& last) {
    std::atomic<bool> stop{false};
    std::thread follower;
    std::uint64_t followed = 0;
    if (settings.paced_reader) {
        follower = std::thread([&, first = last + 1] {
            auto reader = JournalReader::open(connection, config, first);
            if (!reader) die("reader: " + reader.error().message);
            while (!stop.load()) {
                auto batch = reader->next_batch(200ms);
                if (!batch) die("read: " + batch.error().message);
                followed += batch->size();
            }
        });
    }
    const Bytes payload(static_cast<std::size_t>(settings.paced_size), 0x33);
    const auto interval = std::chrono::nanoseconds(static_cast<std::int64_t>(1e9 / settings.paced_rate));
    const auto started = Clock::now();
    const auto until = started + std::chrono::nanoseconds(static_cast<std::int64_t>(settings.paced_seconds * 1e9));
    std::vector<std::int64_t> samples;
    std::vector<std::pair<double, double>> slow;
    double excess_ms = 0;  // the time publishes spent beyond 5 ms
    auto slot = started;
    while (slot < until) {
        std::this_thread::sleep_until(slot);
        const auto begun = Clock::now();
        auto ack = publish(connection, config, payload, fmt::format("paced-{}", last + 1), last);
        const auto took = elapsed_ns(begun);
        if (!ack) die("publish: " + ack.error().message);
        last = ack->sequence;
        samples.push_back(took);
        excess_ms += std::max(0.0, static_cast<double>(took) / 1e6 - 5.0);
        if (took > 8'000'000)
            slow.emplace_back(static_cast<double>(std::chrono::duration_cast<std::chrono::microseconds>(begun - started).count()) / 1e6,
                              static_cast<double>(took) / 1e6);
        slot += interval;
    }
    stop = true;
    if (follower.joinable()) follower.join();
    std::sort(samples.begin(), samples.end());
    const auto stats = bench::summarize(samples);
    fmt::print(
        "\npaced: {} publishes of {} B at {}/s for {} s{}: p50 {:.2f} ms, p99 {:.2f} ms, max {:.2f} ms; {} over 8 ms, {:.0f} ms beyond 5 ms per 10 s\n",
        samples.size(), settings.paced_size, settings.paced_rate, settings.paced_seconds,
        settings.paced_reader ? fmt::format(", a reader following ({} read)", followed) : std::string(), stats.median_us / 1000,
        stats.p99_us / 1000, static_cast<double>(samples.back()) / 1e6, slow.size(), excess_ms * 10 / settings.paced_seconds);
    for (const auto& [at, ms] : slow) fmt::print("  +{:.3f} s  {:.1f} ms\n", at, ms);
    const auto touch = first_touch_ms(4u << 20);
    fmt::print(
        "this machine: writing 4 MiB of fresh memory {:.2f} ms, of memory the kernel mapped beforehand (MAP_POPULATE) {:.2f} ms, "
        "the same memory again {:.2f} ms\n",
        touch.fresh_ms, touch.populated_ms, touch.again_ms);
}

}  // namespace

int main(int argc, char** argv) {
    Settings settings;
    CLI::App app{"cluster_bench: the JetStream journal and lease on a 3-node nats-server cluster on loopback"};
    app.add_option("--publishes-8k", settings.publishes_8k, "sync publishes of 8 KiB");
    app.add_option("--publishes-256k", settings.publishes_256k, "sync publishes of 256 KiB");
    app.add_option("--read-rounds", settings.read_rounds, "read passes over the stream, per ack policy");
    app.add_option("--lease-runs", settings.lease_runs, "lease takeovers");
    app.add_option("--lease-ttl-ms", settings.lease_ttl_ms, "the lease bucket's ttl");
    app.add_option("--kill-runs", settings.kill_runs, "stream leader SIGKILLs");
    app.add_option("--paced-seconds", settings.paced_seconds, "publish at a fixed rate for this long (0: not)")
        ->check(CLI::NonNegativeNumber);
    app.add_option("--paced-rate", settings.paced_rate, "publishes per second in the paced run")->check(CLI::Range(1, 100000));
    app.add_option("--paced-size", settings.paced_size, "bytes per publish in the paced run")->check(CLI::Range(1, 8 << 20));
    app.add_flag("--paced-reader", settings.paced_reader, "a JournalReader follows the stream during the paced run");
    app.add_option("--paced-server", settings.paced_server, "the server the paced run publishes through")
        ->check(CLI::IsMember({"any", "leader", "follower"}));
    app.add_flag("--paced-only", settings.paced_only, "only the paced run");
    CLI11_PARSE(app, argc, argv);

    test::NatsCluster cluster(3);
    auto connection = Connection::connect(cluster.client());
    if (!connection) die("connect: " + connection.error().message);
    StreamConfig small;  // the journal stream itself
    StreamConfig big;
    big.name = "BENCH_BIG";
    big.subject = "coconut.test.big";
    for (const auto* config : {&small, &big}) {
        if (auto made = ensure_stream(connection.value(), *config); !made) die("stream: " + made.error().message);
    }
    fmt::print("cluster_bench, {}, nats-server 3 nodes on 127.0.0.1 (TLS), R3 file streams\n", bench::run_time_and_host());
    std::uint64_t last_small = 0;
    std::uint64_t last_big = 0;
    if (settings.paced_seconds > 0) {
        Connection paced = connection.value();
        if (settings.paced_server != "any") {
            auto leader = stream_leader(connection.value(), small.name);
            if (!leader) die("stream leader: " + leader.error().message);
            const int leading = cluster.node_named(leader.value());
            if (leading < 0) die("the stream leader " + leader.value() + " is none of the cluster's servers");
            const int node = settings.paced_server == "leader" ? leading : (leading + 1) % cluster.nodes();
            auto options = cluster.client();
            options.urls = {options.urls[static_cast<std::size_t>(node)]};
            auto only = Connection::connect(options);
            if (!only) die("connect: " + only.error().message);
            paced = only.value();
            fmt::print("paced publishes through {} (the stream leader is {})\n", cluster.server_name(node), leader.value());
        }
        bench_paced(paced, small, settings, last_small);
    }
    if (settings.paced_only) return 0;
    bench_publish(connection.value(), small, big, settings, last_small, last_big);
    bench_read(connection.value(), small, big, settings, last_small, last_big);
    bench_lease(connection.value(), settings);
    bench_leader_kill(cluster, connection.value(), small, settings, last_small);
    return 0;
}
