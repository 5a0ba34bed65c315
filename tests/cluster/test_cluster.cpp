// The JetStream layer against a real 3-node nats-server cluster on loopback (nats_cluster.hpp):
// fencing, de-duplication, ordered reads, permissions, the lease, and a stream leader's SIGKILL.
#include "nats_cluster.hpp"

#include <coconut/cluster/journal.hpp>
#include <coconut/cluster/lease.hpp>

#include <doctest/doctest.h>
#include <nats/nats.h>

#include <cstdio>
#include <memory>
#include <optional>
#include <set>
#include <thread>

using namespace coconut;
using namespace coconut::cluster;
using namespace std::chrono_literals;

namespace {

test::NatsCluster& shared_cluster() {
    static auto cluster = std::make_unique<test::NatsCluster>(3);
    return *cluster;
}

Connection connect_as(const std::string& user = "clearing") {
    auto connection = Connection::connect(shared_cluster().client(user));
    REQUIRE_MESSAGE(connection.ok(), (connection.ok() ? "" : connection.error().message));
    return std::move(connection).value();
}

// A stream of its own for each test (subjects under coconut.test., which the clearing user may write).
StreamConfig test_stream(const std::string& name) {
    StreamConfig config;
    config.name = "TEST_" + name;
    config.subject = "coconut.test." + name;
    return config;
}

// Makes the stream, retrying while the cluster settles (after a test restarted servers), bounded.
void make_stream(Connection& connection, const StreamConfig& config) {
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    auto made = ensure_stream(connection, config);
    while (!made && made.error().code == ErrorCode::unavailable && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(200ms);
        made = ensure_stream(connection, config);
    }
    REQUIRE_MESSAGE(made.ok(), (made.ok() ? "" : made.error().message));
}

Bytes payload_of(std::uint64_t n, std::size_t size = 64) {
    Bytes bytes(size);
    for (std::size_t i = 0; i < size; ++i) bytes[i] = static_cast<std::uint8_t>(n * 31 + i);
    return bytes;
}

std::string id_of(std::uint64_t n) { return "group-" + std::to_string(n); }

std::uint64_t last_of(Connection& connection, const StreamConfig& config) {
    auto last = last_sequence(connection, config.name);
    REQUIRE_MESSAGE(last.ok(), (last.ok() ? "" : last.error().message));
    return last.value();
}

// Publishes messages first..last (payload_of(n), id_of(n)) in order, fenced at n-1.
void publish_range(Connection& connection, const StreamConfig& config, std::uint64_t first, std::uint64_t last, std::size_t size = 64) {
    for (std::uint64_t n = first; n <= last; ++n) {
        auto ack = publish(connection, config, payload_of(n, size), id_of(n), n - 1);
        REQUIRE_MESSAGE(ack.ok(), (ack.ok() ? "" : ack.error().message));
        REQUIRE(ack->sequence == n);
        REQUIRE_FALSE(ack->duplicate);
    }
}

// Reads until `count` messages arrived or `wait` passed.
std::vector<JournalMessage> read_messages(JournalReader& reader, std::size_t count, std::chrono::milliseconds wait) {
    std::vector<JournalMessage> all;
    const auto deadline = std::chrono::steady_clock::now() + wait;
    while (all.size() < count && std::chrono::steady_clock::now() < deadline) {
        auto batch = reader.next_batch(200ms);
        if (!batch) continue;  // unavailable: the reader resumes where it was
        for (auto& message : batch.value()) all.push_back(std::move(message));
    }
    return all;
}

// A new stream holding messages 1-10 and a reader (4 at a time) that has read 1-4.
JournalReader reader_past_four_of_ten(Connection& connection, const StreamConfig& config) {
    make_stream(connection, config);
    publish_range(connection, config, 1, 10);
    auto opened = JournalReader::open(connection, config, 1, ReaderOptions{.batch_max = 4});
    REQUIRE(opened.ok());
    JournalReader reader = std::move(opened).value();
    REQUIRE(read_messages(reader, 4, 5s).size() == 4);
    return reader;
}

}  // namespace

TEST_CASE("ensure_stream creates the journal stream once and names the setting an existing one differs in") {
    Connection connection = connect_as();
    const StreamConfig config;  // the production journal: COCONUT_JOURNAL on coconut.journal, R3
    make_stream(connection, config);
    make_stream(connection, config);  // exists, same settings
    StreamConfig fewer = config;
    fewer.replicas = 1;
    auto refused = ensure_stream(connection, fewer);
    REQUIRE_FALSE(refused.ok());
    CHECK(refused.error().code == ErrorCode::mismatch);
    CHECK(refused.error().message.find("replicas: the stream has 3, wanted 1") != std::string::npos);
    StreamConfig other_subject = config;
    other_subject.subject = "coconut.other";
    refused = ensure_stream(connection, other_subject);
    REQUIRE_FALSE(refused.ok());
    CHECK(refused.error().code == ErrorCode::mismatch);
    CHECK(refused.error().message.find("subjects: the stream has [coconut.journal], wanted [coconut.other]") != std::string::npos);
    auto leader = stream_leader(connection, config.name);
    REQUIRE(leader.ok());
    CHECK(shared_cluster().node_named(leader.value()) >= 0);
    auto missing = last_sequence(connection, "NO_SUCH_STREAM");
    REQUIRE_FALSE(missing.ok());
    CHECK(missing.error().code == ErrorCode::not_found);
}

TEST_CASE("the first publish is fenced: expected 0 is stored only while the stream never held a message") {
    Connection connection = connect_as();
    const StreamConfig config = test_stream("first");
    make_stream(connection, config);
    auto wrong = publish(connection, config, payload_of(9), "writer-b-1", 5);  // expects more than there is
    REQUIRE_FALSE(wrong.ok());
    CHECK(wrong.error().code == PublishErrorCode::wrong_last_sequence);
    CHECK(wrong.error().jetstream_code == 10071);
    CHECK(last_of(connection, config) == 0);
    auto first = publish(connection, config, payload_of(1), "writer-a-1", 0);
    REQUIRE(first.ok());
    CHECK(first->sequence == 1);
    // A second writer racing for the empty stream with its own first message is refused.
    auto rival = publish(connection, config, payload_of(2), "writer-b-1", 0);
    REQUIRE_FALSE(rival.ok());
    CHECK(rival.error().code == PublishErrorCode::wrong_last_sequence);
    CHECK(last_of(connection, config) == 1);
}

TEST_CASE("a publish with a stale expected last sequence is refused and stores nothing") {
    Connection connection = connect_as();
    const StreamConfig config = test_stream("fence");
    make_stream(connection, config);
    publish_range(connection, config, 1, 3);
    auto stale = publish(connection, config, payload_of(99), "deposed-1", 2);
    REQUIRE_FALSE(stale.ok());
    CHECK(stale.error().code == PublishErrorCode::wrong_last_sequence);
    CHECK(stale.error().message.find("10071") != std::string::npos);
    CHECK(last_of(connection, config) == 3);
    auto current = publish(connection, config, payload_of(4), id_of(4), 3);
    REQUIRE(current.ok());
    CHECK(current->sequence == 4);
}

TEST_CASE("message_id_at names the id stored at a sequence, and nothing where no message is stored") {
    Connection connection = connect_as();
    const StreamConfig config = test_stream("idat");
    make_stream(connection, config);
    publish_range(connection, config, 1, 3);
    for (std::uint64_t n = 1; n <= 3; ++n) {
        auto id = message_id_at(connection, config.name, n);
        REQUIRE_MESSAGE(id.ok(), (id.ok() ? "" : id.error().message));
        REQUIRE(id->has_value());
        CHECK(**id == id_of(n));
    }
    auto past = message_id_at(connection, config.name, 4);  // not stored (yet)
    REQUIRE(past.ok());
    CHECK_FALSE(past->has_value());
    // A deposed writer's refused message leaves the id at its sequence unchanged.
    REQUIRE_FALSE(publish(connection, config, payload_of(99), "deposed-3", 2).ok());
    CHECK(message_id_at(connection, config.name, 3).value().value() == id_of(3));
    auto missing = message_id_at(connection, "NO_SUCH_STREAM", 1);
    REQUIRE_FALSE(missing.ok());
    CHECK(missing.error().code == ErrorCode::not_found);
}

TEST_CASE("the same msg id twice is stored once; the resend is acknowledged as a duplicate with the first sequence") {
    Connection connection = connect_as();
    const StreamConfig config = test_stream("dedup");
    make_stream(connection, config);
    publish_range(connection, config, 1, 2);
    // A writer whose acknowledgement of message 2 was lost resends it as it was: same id, same fence.
    auto resent = publish(connection, config, payload_of(2), id_of(2), 1);
    REQUIRE(resent.ok());
    CHECK(resent->sequence == 2);
    CHECK(resent->duplicate);
    auto again = publish(connection, config, payload_of(2), id_of(2), 2);  // same id, current fence
    REQUIRE(again.ok());
    CHECK(again->sequence == 2);
    CHECK(again->duplicate);
    CHECK(last_of(connection, config) == 2);
}

TEST_CASE("a resend after the duplicate window is still recognised by its msg id right after the fence") {
    Connection connection = connect_as();
    StreamConfig config = test_stream("window");
    config.duplicate_window = 1s;
    make_stream(connection, config);
    publish_range(connection, config, 1, 2);
    std::this_thread::sleep_for(1300ms);  // the server forgot id_of(2)
    auto resent = publish(connection, config, payload_of(2), id_of(2), 1);
    REQUIRE(resent.ok());
    CHECK(resent->sequence == 2);
    CHECK(resent->duplicate);
    // Another id at the same stale fence is refused.
    auto other = publish(connection, config, payload_of(3), "other-id", 1);
    REQUIRE_FALSE(other.ok());
    CHECK(other.error().code == PublishErrorCode::wrong_last_sequence);
    CHECK(last_of(connection, config) == 2);
}

TEST_CASE("a message above the stream's limit or the server's max_payload is refused as too_large") {
    Connection connection = connect_as();
    StreamConfig config = test_stream("large");
    config.max_message_bytes = 64 * 1024;
    make_stream(connection, config);
    auto above_stream = publish(connection, config, Bytes(64 * 1024 + 1, 7), "large-1", 0);
    REQUIRE_FALSE(above_stream.ok());
    CHECK(above_stream.error().code == PublishErrorCode::too_large);
    auto above_server = publish(connection, config, Bytes(8 * 1024 * 1024 + 1, 7), "large-2", 0);
    REQUIRE_FALSE(above_server.ok());
    CHECK(above_server.error().code == PublishErrorCode::too_large);
    CHECK(last_of(connection, config) == 0);
    auto fits = publish(connection, config, Bytes(64 * 1024 - 100, 7), "large-3", 0);
    CHECK(fits.ok());
}

TEST_CASE("a reader returns exactly the messages from its start sequence, in order, then waits bounded") {
    Connection connection = connect_as();
    const StreamConfig config = test_stream("read");
    make_stream(connection, config);
    publish_range(connection, config, 1, 40);
    // One message as large as a big group commit.
    auto big = publish(connection, config, payload_of(41, 1024 * 1024), id_of(41), 40);
    REQUIRE(big.ok());
    auto opened = JournalReader::open(connection, config, 21, ReaderOptions{.batch_max = 8});
    REQUIRE(opened.ok());
    JournalReader reader = std::move(opened).value();
    const auto messages = read_messages(reader, 21, 10s);
    REQUIRE(messages.size() == 21);
    for (std::size_t i = 0; i < messages.size(); ++i) {
        const std::uint64_t n = 21 + i;
        CHECK(messages[i].sequence == n);
        CHECK(messages[i].msg_id == id_of(n));
        CHECK(messages[i].payload == payload_of(n, n == 41 ? 1024 * 1024 : 64));
    }
    CHECK(reader.next_sequence() == 42);
    const auto started = std::chrono::steady_clock::now();
    auto idle = reader.next_batch(300ms);
    const auto waited = std::chrono::steady_clock::now() - started;
    REQUIRE(idle.ok());
    CHECK(idle->empty());
    CHECK(waited >= 250ms);
    CHECK(waited < 3s);
    // A reader waiting for the next message gets it as soon as it is stored, not when its wait ends.
    std::thread writer([&] {
        std::this_thread::sleep_for(200ms);
        publish_range(connection, config, 42, 42);
    });
    const auto waiting = std::chrono::steady_clock::now();
    auto later = reader.next_batch(5s);
    const auto waited_ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - waiting).count();
    writer.join();
    REQUIRE(later.ok());
    REQUIRE(later->size() == 1);
    CHECK(later.value()[0].sequence == 42);
    CHECK(waited_ms < 1500);
}

TEST_CASE("a reader whose consumer disappears re-creates it from the next sequence: nothing skipped, nothing twice") {
    Connection connection = connect_as();
    const StreamConfig config = test_stream("lost_consumer");
    JournalReader reader = reader_past_four_of_ten(connection, config);
    const std::string name = reader.consumer_name();
    REQUIRE_FALSE(name.empty());
    // What a dead consumer leader or an expired ephemeral consumer looks like to the reader.
    REQUIRE(js_DeleteConsumer(connection.jetstream(), config.name.c_str(), name.c_str(), nullptr, nullptr) == NATS_OK);
    publish_range(connection, config, 11, 12);
    const auto rest = read_messages(reader, 8, 10s);
    REQUIRE(rest.size() == 8);
    for (std::size_t i = 0; i < rest.size(); ++i) CHECK(rest[i].sequence == 5 + i);
    CHECK(reader.consumers_created() == 2);
    CHECK(reader.consumer_name() != name);
}

TEST_CASE("a reader whose consumer delivered messages that never reached it re-creates the consumer: nothing skipped") {
    Connection connection = connect_as();
    const StreamConfig config = test_stream("lost_delivery");
    JournalReader reader = reader_past_four_of_ten(connection, config);
    const std::string name = reader.consumer_name();
    REQUIRE_FALSE(name.empty());
    // What a pull answer lost on the way looks like to the consumer (the client's fetch had already
    // given up when it came, a connection dropped under it): messages 5-7 are delivered elsewhere. With
    // no acknowledgements the server never sends them again.
    auto steal = [&](const std::string& consumer, int count) {
        natsSubscription* stolen = nullptr;
        const std::string inbox = "_INBOX.lost_delivery." + std::to_string(count);
        REQUIRE(natsConnection_SubscribeSync(&stolen, connection.native(), inbox.c_str()) == NATS_OK);
        const std::string next = "$JS.API.CONSUMER.MSG.NEXT." + config.name + "." + consumer;
        const std::string request = R"({"batch":)" + std::to_string(count) + R"(,"no_wait":true})";
        REQUIRE(natsConnection_PublishRequest(connection.native(), next.c_str(), inbox.c_str(), request.data(),
                                              static_cast<int>(request.size())) == NATS_OK);
        for (int i = 0; i < count; ++i) {
            natsMsg* message = nullptr;
            REQUIRE(natsSubscription_NextMsg(&message, stolen, 5000) == NATS_OK);
            natsMsg_Destroy(message);
        }
        natsSubscription_Destroy(stolen);
    };
    // Lost in the middle: the next answer starts past a gap.
    steal(name, 3);
    const auto rest = read_messages(reader, 6, 10s);
    REQUIRE(rest.size() == 6);
    for (std::size_t i = 0; i < rest.size(); ++i) CHECK(rest[i].sequence == 5 + i);
    CHECK(reader.consumers_created() == 2);
    // Lost at the end: nothing more comes, and the consumer says it delivered past what the reader has.
    publish_range(connection, config, 11, 12);
    steal(reader.consumer_name(), 2);
    const auto last = read_messages(reader, 2, 10s);
    REQUIRE(last.size() == 2);
    CHECK(last[0].sequence == 11);
    CHECK(last[1].sequence == 12);
    CHECK(reader.consumers_created() == 3);
}

TEST_CASE("a reader and a lease keep their connection: they work after the caller's Connection is gone") {
    const StreamConfig config = test_stream("shared_connection");
    std::optional<JournalReader> reader;
    std::optional<Lease> lease;
    {
        Connection connection = connect_as();
        make_stream(connection, config);
        publish_range(connection, config, 1, 3);
        auto opened = JournalReader::open(connection, config, 2);
        REQUIRE(opened.ok());
        reader.emplace(std::move(opened).value());
        auto made = Lease::open(connection, LeaseConfig{.ttl = 2000ms});
        REQUIRE(made.ok());
        lease.emplace(std::move(made).value());
    }
    const auto read = read_messages(*reader, 2, 5s);
    REQUIRE(read.size() == 2);
    CHECK(read[0].sequence == 2);
    CHECK(read[1].sequence == 3);
    CHECK(lease->read().ok());
}

TEST_CASE("the observer identity reads the journal but its publish is refused and stores nothing") {
    Connection clearing = connect_as("clearing");
    const StreamConfig config;
    make_stream(clearing, config);
    const std::uint64_t before = last_of(clearing, config);
    auto ack = publish(clearing, config, payload_of(1), "observer-test-" + std::to_string(before), before);
    REQUIRE_MESSAGE(ack.ok(), (ack.ok() ? "" : ack.error().message));

    Connection observer = connect_as("observer");
    auto forged = publish(observer, config, payload_of(2), "forged-1", before + 1, 1000ms);
    REQUIRE_FALSE(forged.ok());
    CHECK(forged.error().code == PublishErrorCode::permission_denied);
    CHECK(forged.error().message.find("Permissions Violation") != std::string::npos);
    CHECK(last_of(clearing, config) == before + 1);
    auto last = last_sequence(observer, config.name);
    REQUIRE(last.ok());
    CHECK(last.value() == before + 1);
    auto opened = JournalReader::open(observer, config, before + 1);
    REQUIRE_MESSAGE(opened.ok(), (opened.ok() ? "" : opened.error().message));
    const auto read = read_messages(opened.value(), 1, 5s);
    REQUIRE(read.size() == 1);
    CHECK(read[0].sequence == before + 1);
}

namespace {

LeaseConfig test_lease() {
    LeaseConfig config;
    config.ttl = 2000ms;  // shorter than the default 3 s, to keep the suite short
    return config;
}

Lease open_lease(Connection& connection, const LeaseConfig& config) {
    auto lease = Lease::open(connection, config);
    REQUIRE_MESSAGE(lease.ok(), (lease.ok() ? "" : lease.error().message));
    return std::move(lease).value();
}

const std::string holder_a = lease_value({"clearing-a", "10.0.0.1:8583"});
const std::string holder_b = lease_value({"clearing-b", "10.0.0.2:8583"});

}  // namespace

TEST_CASE("lease: one holder at a time; renew at the current revision only; release hands it over") {
    Connection connection_a = connect_as();
    Connection connection_b = connect_as();
    Lease a = open_lease(connection_a, test_lease());
    Lease b = open_lease(connection_b, test_lease());
    auto first = a.acquire(holder_a);
    REQUIRE_MESSAGE(first.ok(), (first.ok() ? "" : first.error().message));
    auto rival = b.acquire(holder_b);
    REQUIRE_FALSE(rival.ok());
    CHECK(rival.error().code == LeaseErrorCode::held);
    CHECK(rival.error().message.find("clearing-a") != std::string::npos);
    auto seen = b.read();
    REQUIRE(seen.ok());
    REQUIRE(seen->has_value());
    CHECK((*seen)->value == holder_a);
    CHECK((*seen)->revision == first.value());
    CHECK(parse_lease_value((*seen)->value) == LeaseValue{"clearing-a", "10.0.0.1:8583"});

    auto renewed = a.renew(first.value(), holder_a);
    REQUIRE(renewed.ok());
    CHECK(renewed.value() > first.value());
    auto stale = a.renew(first.value(), holder_a);
    REQUIRE_FALSE(stale.ok());
    CHECK(stale.error().code == LeaseErrorCode::lost);
    auto stale_release = a.release(first.value());
    REQUIRE_FALSE(stale_release.ok());
    CHECK(stale_release.error().code == LeaseErrorCode::lost);
    REQUIRE(b.read().ok());
    CHECK(b.read().value()->revision == renewed.value());  // nothing changed

    REQUIRE(a.release(renewed.value()).ok());
    auto empty = b.read();
    REQUIRE(empty.ok());
    CHECK_FALSE(empty->has_value());
    auto taken = b.acquire(holder_b);
    REQUIRE_MESSAGE(taken.ok(), (taken.ok() ? "" : taken.error().message));
    auto deposed = a.renew(renewed.value(), holder_a);
    REQUIRE_FALSE(deposed.ok());
    CHECK(deposed.error().code == LeaseErrorCode::lost);
    REQUIRE(b.release(taken.value()).ok());
}

TEST_CASE("a holder that stops renewing loses the lease to a rival within about the ttl") {
    Connection connection_a = connect_as();
    Connection connection_b = connect_as();
    const LeaseConfig config = test_lease();
    Lease a = open_lease(connection_a, config);
    Lease b = open_lease(connection_b, config);
    auto revision = a.acquire(holder_a);
    REQUIRE(revision.ok());
    // Renewing every ttl/4 keeps it past the ttl (6 renewals: 1.5 ttl); the rival is refused meanwhile.
    std::uint64_t current = revision.value();
    for (int i = 0; i < 6; ++i) {
        std::this_thread::sleep_for(config.ttl / 4);
        auto renewed = a.renew(current, holder_a);
        REQUIRE(renewed.ok());
        current = renewed.value();
        auto refused = b.acquire(holder_b);
        REQUIRE_FALSE(refused.ok());
        CHECK(refused.error().code == LeaseErrorCode::held);
    }
    const auto stopped = std::chrono::steady_clock::now();  // a's last renew was just before this
    std::chrono::steady_clock::duration takeover{};
    while (std::chrono::steady_clock::now() - stopped < config.ttl + 5s) {
        auto won = b.acquire(holder_b);
        if (won) {
            takeover = std::chrono::steady_clock::now() - stopped;
            break;
        }
        REQUIRE(won.error().code == LeaseErrorCode::held);
        std::this_thread::sleep_for(20ms);
    }
    const auto takeover_ms = std::chrono::duration_cast<std::chrono::milliseconds>(takeover).count();
    std::printf("lease takeover after the holder's last renew: %lld ms (ttl %lld ms)\n", static_cast<long long>(takeover_ms),
                static_cast<long long>(config.ttl.count()));
    REQUIRE(takeover_ms > 0);
    CHECK(takeover_ms >= config.ttl.count() - 100);
    CHECK(takeover_ms <= config.ttl.count() + 1500);
    auto deposed = a.renew(current, holder_a);
    REQUIRE_FALSE(deposed.ok());
    CHECK(deposed.error().code == LeaseErrorCode::lost);
}

TEST_CASE("opening the lease bucket with another ttl is a mismatch") {
    Connection connection = connect_as();
    LeaseConfig other = test_lease();
    other.ttl = 5000ms;
    auto lease = Lease::open(connection, other);
    REQUIRE_FALSE(lease.ok());
    CHECK(lease.error().code == ErrorCode::mismatch);
    CHECK(lease.error().message.find("ttl 2000 ms") != std::string::npos);
}

namespace {

// Publishes message n until the stream acknowledges it (same id, same fence on every attempt), or
// `deadline` passes. Returns the time of the first attempt that failed, if any did.
void publish_until_acked(Connection& connection, const StreamConfig& config, std::uint64_t n,
                         std::chrono::steady_clock::time_point deadline, std::size_t size) {
    while (true) {
        auto ack = publish(connection, config, payload_of(n, size), id_of(n), n - 1, 1000ms);
        if (ack) {
            REQUIRE(ack->sequence == n);
            return;
        }
        INFO("message " << n << ": " << ack.error().message);
        REQUIRE(ack.error().code != PublishErrorCode::wrong_last_sequence);
        REQUIRE(std::chrono::steady_clock::now() < deadline);
        std::this_thread::sleep_for(100ms);  // back off: a resend storm slows the election down
    }
}

// Waits (bounded) until the stream's leader reports every other replica current and online: a case
// that kills one server starts from a whole cluster, not from one whose other server is still catching
// up after the previous case restarted it (two servers down at once is not what these cases measure).
void wait_until_whole(Connection& connection, const StreamConfig& config, int servers, std::chrono::seconds wait) {
    const auto deadline = std::chrono::steady_clock::now() + wait;
    std::string last = "no stream info";
    while (std::chrono::steady_clock::now() < deadline) {
        jsStreamInfo* info = nullptr;
        if (js_GetStreamInfo(&info, connection.jetstream(), config.name.c_str(), nullptr, nullptr) == NATS_OK) {
            const jsClusterInfo* cluster = info->Cluster;
            bool whole = cluster != nullptr && cluster->Leader != nullptr && cluster->ReplicasLen == servers - 1;
            last = cluster == nullptr || cluster->Leader == nullptr ? "no leader" : std::string("leader ") + cluster->Leader;
            for (int i = 0; cluster != nullptr && i < cluster->ReplicasLen; ++i) {
                const jsPeerInfo* peer = cluster->Replicas[i];
                whole = whole && peer->Current && !peer->Offline;
                last += std::string(", ") + peer->Name + (peer->Offline ? " offline" : peer->Current ? " current" : " behind");
            }
            jsStreamInfo_Destroy(info);
            if (whole) return;
        }
        std::this_thread::sleep_for(100ms);
    }
    FAIL("stream " << config.name << " not whole within " << wait.count() << " s: " << last);
}

}  // namespace

TEST_CASE("SIGKILL of the stream leader: publishing resumes within 15 s and no acknowledged message is lost") {
    test::NatsCluster& cluster = shared_cluster();
    Connection connection = connect_as();
    const StreamConfig config = test_stream("failover");
    make_stream(connection, config);
    constexpr std::size_t size = 8 * 1024;
    publish_range(connection, config, 1, 200, size);
    auto opened = JournalReader::open(connection, config, 1);
    REQUIRE(opened.ok());
    JournalReader reader = std::move(opened).value();
    REQUIRE(read_messages(reader, 200, 10s).size() == 200);
    wait_until_whole(connection, config, cluster.nodes(), 20s);

    auto leader = stream_leader(connection, config.name);
    REQUIRE(leader.ok());
    const int node = cluster.node_named(leader.value());
    REQUIRE(node >= 0);
    cluster.kill(node);
    const auto killed = std::chrono::steady_clock::now();
    publish_until_acked(connection, config, 201, killed + 30s, size);
    const auto recovered = std::chrono::steady_clock::now() - killed;
    const auto recovered_ms = std::chrono::duration_cast<std::chrono::milliseconds>(recovered).count();
    std::printf("stream leader %s killed: first acknowledged publish after %lld ms\n", leader.value().c_str(),
                static_cast<long long>(recovered_ms));
    CHECK(recovered_ms <= 15000);
    for (std::uint64_t n = 202; n <= 300; ++n) publish_until_acked(connection, config, n, killed + 45s, size);

    // The reader opened before the kill continues in order (its consumer may have died with the node).
    const auto after = read_messages(reader, 100, 20s);
    std::printf("the reader opened before the kill had read on to 300 %lld ms after it (consumers made: %llu)\n",
                static_cast<long long>(
                    std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - killed).count()),
                static_cast<unsigned long long>(reader.consumers_created()));
    REQUIRE(after.size() == 100);
    for (std::size_t i = 0; i < after.size(); ++i) CHECK(after[i].sequence == 201 + i);

    cluster.start(node);
    auto fresh = JournalReader::open(connection, config, 1, ReaderOptions{.ack = ReaderAck::all});
    REQUIRE_MESSAGE(fresh.ok(), (fresh.ok() ? "" : fresh.error().message));
    const auto all = read_messages(fresh.value(), 300, 20s);
    REQUIRE(all.size() == 300);
    std::set<std::string> ids;
    for (std::size_t i = 0; i < all.size(); ++i) {
        CHECK(all[i].sequence == i + 1);
        CHECK(all[i].msg_id == id_of(i + 1));
        CHECK(all[i].payload == payload_of(i + 1, size));
        ids.insert(all[i].msg_id);
    }
    CHECK(ids.size() == 300);
    CHECK(last_of(connection, config) == 300);
}

TEST_CASE("a reader whose consumer's server is SIGKILLed reads on in order: from the stream's leader, then a new consumer") {
    test::NatsCluster& cluster = shared_cluster();
    Connection connection = connect_as();
    const StreamConfig config = test_stream("consumer_node");
    make_stream(connection, config);
    for (std::uint64_t n = 1; n <= 20; ++n) publish_until_acked(connection, config, n, std::chrono::steady_clock::now() + 20s, 1024);
    auto opened = JournalReader::open(connection, config, 1);
    REQUIRE(opened.ok());
    JournalReader reader = std::move(opened).value();
    REQUIRE(read_messages(reader, 20, 10s).size() == 20);
    wait_until_whole(connection, config, cluster.nodes(), 20s);
    jsConsumerInfo* info = nullptr;
    REQUIRE(js_GetConsumerInfo(&info, connection.jetstream(), config.name.c_str(), reader.consumer_name().c_str(), nullptr, nullptr) ==
            NATS_OK);
    REQUIRE((info->Cluster != nullptr && info->Cluster->Leader != nullptr));
    const int node = cluster.node_named(info->Cluster->Leader);
    jsConsumerInfo_Destroy(info);
    REQUIRE(node >= 0);
    cluster.kill(node);
    const auto killed = std::chrono::steady_clock::now();
    for (std::uint64_t n = 21; n <= 40; ++n) publish_until_acked(connection, config, n, killed + 30s, 1024);
    const auto published = std::chrono::steady_clock::now() - killed;
    const auto rest = read_messages(reader, 20, 20s);
    std::printf(
        "the reader whose consumer's server was killed read on %lld ms after the kill (publishing back after %lld ms; "
        "consumers made: %llu)\n",
        static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - killed).count()),
        static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(published).count()),
        static_cast<unsigned long long>(reader.consumers_created()));
    cluster.start(node);
    REQUIRE(rest.size() == 20);
    for (std::size_t i = 0; i < rest.size(); ++i) CHECK(rest[i].sequence == 21 + i);
    // Once the cluster can make consumers again (a new meta leader, if it died too), the reader has one.
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    while (reader.consumers_created() < 2 && std::chrono::steady_clock::now() < deadline) {
        auto idle = reader.next_batch(200ms);
        if (idle) REQUIRE(idle->empty());
    }
    REQUIRE(reader.consumers_created() == 2);
    publish_until_acked(connection, config, 41, std::chrono::steady_clock::now() + 20s, 1024);
    const auto last = read_messages(reader, 1, 20s);
    REQUIRE(last.size() == 1);
    CHECK(last[0].sequence == 41);
}

TEST_CASE("SIGKILL of all three servers at once loses no acknowledged message") {
    test::NatsCluster& cluster = shared_cluster();
    Connection connection = connect_as();
    const StreamConfig config = test_stream("crash_all");
    make_stream(connection, config);
    // The cluster may still be settling from the previous test's restart: resend until acknowledged.
    for (std::uint64_t n = 1; n <= 50; ++n) publish_until_acked(connection, config, n, std::chrono::steady_clock::now() + 20s, 8 * 1024);
    auto before_crash = JournalReader::open(connection, config, 1);
    REQUIRE(before_crash.ok());
    REQUIRE(read_messages(before_crash.value(), 50, 10s).size() == 50);
    for (int node = 0; node < cluster.nodes(); ++node) cluster.kill(node);
    const auto killed = std::chrono::steady_clock::now();
    for (int node = 0; node < cluster.nodes(); ++node) cluster.start(node);
    // The stream answers again once its replicas elected a leader (bounded).
    std::uint64_t last = 0;
    while (std::chrono::steady_clock::now() - killed < 30s) {
        auto answered = last_sequence(connection, config.name);
        if (answered) {
            last = answered.value();
            break;
        }
        std::this_thread::sleep_for(200ms);
    }
    std::printf("all servers killed and restarted: the stream answered after %lld ms\n",
                static_cast<long long>(
                    std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - killed).count()));
    CHECK(last == 50);
    auto opened = JournalReader::open(connection, config, 1);
    REQUIRE(opened.ok());
    const auto all = read_messages(opened.value(), 50, 20s);
    REQUIRE(all.size() == 50);
    for (std::size_t i = 0; i < all.size(); ++i) {
        CHECK(all[i].sequence == i + 1);
        CHECK(all[i].payload == payload_of(i + 1, 8 * 1024));
    }
    // The writer continues at its fence (resending while the stream settles: no_responders), and the
    // reader opened before the crash reads on (its consumer may be gone with the servers). Beside a
    // parallel ctest run the publishes once found no responders for over 20 s after the stream had
    // answered (the stream answered after 11 s there, 6.6-8.8 s alone): bounded at 60 s, the time printed.
    const auto resend_from = std::chrono::steady_clock::now();
    publish_until_acked(connection, config, 51, resend_from + 60s, 8 * 1024);
    std::printf("the writer's next message was acknowledged %lld ms after the stream answered\n",
                static_cast<long long>(
                    std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - resend_from).count()));
    const auto resumed = read_messages(before_crash.value(), 1, 20s);
    REQUIRE(resumed.size() == 1);
    CHECK(resumed[0].sequence == 51);
    std::printf("the reader opened before the crash read on after it (consumers made: %llu)\n",
                static_cast<unsigned long long>(before_crash.value().consumers_created()));
}
