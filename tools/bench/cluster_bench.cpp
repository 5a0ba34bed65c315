// cluster_bench: the NATS JetStream layer (clearing/cluster) on a real 3-node cluster on loopback, started
// by the tests' fixture (tests/cluster/nats_cluster.hpp: TLS, credentials, max_payload 8 MB):
//   publish     sequential fenced, de-duplicated sync publishes of 8 KiB and 256 KiB (one group commit
//               each): latency per publish (publish → acknowledgement by a quorum), p50/p99/max
//   read        a JournalReader from sequence 1 over the published messages, AckNone and AckAll
//               alternated: messages/s and MB/s
//   lease       a holder stops renewing; a rival acquiring every 20 ms: time from the last renew to success
//   leader kill SIGKILL of the stream leader during sequential publishing: time from the kill to the
//               first acknowledged publish (the same id and fence resent every 100 ms), node restarted after
// Results and the exact command: clearing/cluster/README.md "Measured".
#include "nats_cluster.hpp"

#include "bench_stats.hpp"

#include <coconut/cluster/journal.hpp>
#include <coconut/cluster/lease.hpp>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <thread>
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
    bench_publish(connection.value(), small, big, settings, last_small, last_big);
    bench_read(connection.value(), small, big, settings, last_small, last_big);
    bench_lease(connection.value(), settings);
    bench_leader_kill(cluster, connection.value(), small, settings, last_small);
    return 0;
}
