// hsm::Link (client.hpp): the HSM link rides through — an idle close, a hung HSM, a slow HSM.
// Against the real coconut-hsmd (idle timeout, SIGSTOP / SIGCONT) and a scripted HSM in this process
// that serves each connection's requests one after another, as coconut-hsmd does.
#include "daemon_process.hpp"

#include <coconut/hsm/client.hpp>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <sodium.h>

#include <mutex>
#include <thread>

using namespace hsm_test;
using hsm::Errc;
using hsm::Verdict;
namespace wire = hsm::wire;
namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

namespace {

const hsm::CardIdentity alice = card("4600000000000001", "46000000001234567890");

std::vector<hsm::PurchaseTac> batch_of(std::size_t count, std::uint32_t salt) {
    std::vector<hsm::PurchaseTac> batch;
    for (std::size_t i = 0; i < count; ++i)
        batch.push_back(signed_purchase(key16(tac_master_v2_hex), 2, alice, salt * 1000 + static_cast<std::uint32_t>(i), salt));
    return batch;
}

// Runs `io` until `done` or the deadline; returns done().
template <class Done>
bool run_until(asio::io_context& io, Done done, std::chrono::milliseconds deadline = 10s) {
    const auto end = std::chrono::steady_clock::now() + deadline;
    io.restart();
    while (!done() && std::chrono::steady_clock::now() < end) io.run_for(5ms);
    return done();
}

// One batch through `link`, waited for (bounded).
hsm::Outcome<std::vector<Verdict>> verify(asio::io_context& io, hsm::Link& link, std::uint32_t salt) {
    std::optional<hsm::Outcome<std::vector<Verdict>>> result;
    link.async_verify_purchase_tacs({"mk-tac", batch_of(3, salt)}, [&](auto r) { result.emplace(std::move(r)); });
    REQUIRE(run_until(
        io, [&] { return result.has_value(); }, 20s));
    return std::move(*result);
}

hsm::LinkOptions options(std::chrono::milliseconds timeout, std::chrono::milliseconds keepalive,
                         std::chrono::milliseconds cooldown = 2'000ms) {
    hsm::LinkOptions o;
    o.client.connect_timeout = timeout;
    o.client.request_timeout = timeout;
    o.keepalive_interval = keepalive;
    o.breaker_cooldown = cooldown;
    o.keepalive_tac_label = "mk-tac";
    return o;
}

// An HSM speaking the protocol, scripted: every TAC batch answered "valid" after `delay`; each
// connection's requests served one after another (coconut-hsmd's rule); the first `drop_requests`
// requests received are answered by closing their connection instead. Counts what it saw.
class ScriptedHsm {
public:
    ScriptedHsm(const wire::ClientCredentials& credentials, std::chrono::milliseconds delay)
        : key_(credentials.key), delay_(delay), acceptor_(io_, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {
        port_ = acceptor_.local_endpoint().port();
        accept_thread_ = std::thread([this] { accept_loop(); });
    }
    ~ScriptedHsm() {
        stopping_ = true;
        {
            tcp::socket wake(io_);  // unblocks accept()
            boost::system::error_code ignored;
            wake.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port_), ignored);
            accept_thread_.join();
        }
        std::lock_guard lock(mutex_);
        for (auto& socket : sockets_) ::shutdown(socket->native_handle(), SHUT_RDWR);
        for (auto& worker : workers_) worker.join();
    }
    wire::Endpoint endpoint() const { return {"127.0.0.1", port_}; }

    std::atomic<int> drop_requests{0};
    std::atomic<int> connections{0};
    std::atomic<int> requests{0};
    std::atomic<int> busy{0};      // requests being served now, over every connection
    std::atomic<int> busy_max{0};  // the most at once

private:
    void accept_loop() {
        while (true) {
            auto socket = std::make_shared<tcp::socket>(io_);
            boost::system::error_code ec;
            acceptor_.accept(*socket, ec);
            if (ec || stopping_) return;
            ++connections;
            std::lock_guard lock(mutex_);
            sockets_.push_back(socket);
            workers_.emplace_back([this, socket] { serve(*socket); });
        }
    }

    void serve(tcp::socket& socket) {
        boost::system::error_code ec;
        wire::Hello hello;
        randombytes_buf(hello.nonce.data(), hello.nonce.size());
        asio::write(socket, asio::buffer(wire::encode_hello(hello)), ec);
        while (!ec) {
            std::array<std::uint8_t, wire::length_prefix_bytes> prefix{};
            asio::read(socket, asio::buffer(prefix), ec);
            if (ec) return;
            auto length = wire::decode_length(prefix);
            if (!length) return;
            Bytes body(length.value());
            asio::read(socket, asio::buffer(body), ec);
            if (ec) return;
            ++requests;
            auto request = wire::decode_request(body);
            if (!request || !wire::request_authentic(key_, hello.nonce, *request)) return;
            if (drop_requests.fetch_sub(1) > 0) {
                ::shutdown(socket.native_handle(), SHUT_RDWR);  // closed without an answer; the fd lives on in sockets_
                return;
            }
            const int now = ++busy;
            for (int seen = busy_max.load(); now > seen && !busy_max.compare_exchange_weak(seen, now);) {
            }
            std::this_thread::sleep_for(delay_);
            --busy;
            Bytes payload;
            if (request->command == static_cast<std::uint8_t>(wire::Command::verify_purchase_tacs)) {
                auto batch = wire::decode_purchase_tac_batch(request->payload);
                if (!batch) return;
                const std::vector<Verdict> verdicts(batch->items.size(), Verdict::valid);
                payload = wire::encode(std::span<const Verdict>(verdicts));
            }
            asio::write(socket, asio::buffer(wire::encode_response(key_, hello.nonce, request->seq, Errc::ok, payload)), ec);
        }
    }

    hsm::ClientKey key_;
    std::chrono::milliseconds delay_;
    asio::io_context io_;
    tcp::acceptor acceptor_;
    std::uint16_t port_ = 0;
    std::atomic<bool> stopping_{false};
    std::thread accept_thread_;
    std::mutex mutex_;
    std::vector<std::shared_ptr<tcp::socket>> sockets_;
    std::vector<std::thread> workers_;
};

wire::ClientCredentials random_credentials() {
    wire::ClientCredentials credentials;
    credentials.client_id = "clearing";
    randombytes_buf(credentials.key.data(), credentials.key.size());
    return credentials;
}

}  // namespace

TEST_CASE("after the HSM closed an idle connection, the next TAC batch is answered (no error)") {
    Installation install;
    Daemon daemon(install.dir.path(), {"--idle-timeout-ms", "300"});
    asio::io_context io;

    // The single connection the clearing used before: the idle close fails the next request.
    auto plain = hsm::AsyncClient::create(io.get_executor(), install.credentials("clearing"));
    std::optional<coconut::Status<hsm::Failure>> connected;
    plain->async_connect(daemon.endpoint(), [&](auto s) { connected.emplace(std::move(s)); });
    REQUIRE(run_until(io, [&] { return connected.has_value(); }));
    REQUIRE(connected->ok());
    std::this_thread::sleep_for(700ms);
    run_until(
        io, [] { return false; }, 50ms);  // the notice arrives
    std::optional<hsm::Outcome<std::vector<Verdict>>> before;
    plain->async_verify_purchase_tacs({"mk-tac", batch_of(3, 1)}, [&](auto r) { before.emplace(std::move(r)); });
    REQUIRE(run_until(io, [&] { return before.has_value(); }));
    REQUIRE_FALSE(before->ok());
    MESSAGE("a plain connection after the idle close: " << before->error().message);

    // The link, keep-alive off so that the HSM does close it.
    auto link = hsm::Link::create(io.get_executor(), daemon.endpoint(), install.credentials("clearing"), options(2'000ms, 0ms));
    REQUIRE(verify(io, *link, 2).ok());
    std::this_thread::sleep_for(700ms);
    for (std::uint32_t round = 3; round < 6; ++round) {
        auto after = verify(io, *link, round);
        REQUIRE_MESSAGE(after.ok(), after.error().message);
        CHECK(after->size() == 3);
        CHECK(after.value()[0] == Verdict::valid);
        std::this_thread::sleep_for(400ms);
    }
    CHECK(link->stats().breaker.load() == hsm::BreakerState::closed);
    link->close();
    run_until(
        io, [] { return false; }, 50ms);
}

TEST_CASE("a keep-alive below the HSM's idle timeout keeps the one connection open") {
    Installation install;
    // A keep-alive every 150 ms against a 1-s idle timeout: only a scheduling gap of 850 ms on a busy
    // machine (ctest -j2) could let the HSM close the link.
    Daemon daemon(install.dir.path(), {"--idle-timeout-ms", "1000"});
    asio::io_context io;
    auto link = hsm::Link::create(io.get_executor(), daemon.endpoint(), install.credentials("clearing"), options(2'000ms, 150ms));
    REQUIRE(verify(io, *link, 1).ok());
    run_until(
        io, [] { return false; }, 3'000ms);  // three idle timeouts
    auto after = verify(io, *link, 2);
    REQUIRE_MESSAGE(after.ok(), after.error().message);
    CHECK(link->stats().keepalives.load() >= 5);
    CHECK(link->stats().connections_opened.load() == 1);  // never closed by the HSM
    CHECK(link->stats().retries.load() == 0);
    link->close();
    run_until(
        io, [] { return false; }, 50ms);
}

TEST_CASE("a request whose connection the HSM closed before answering is sent again once, on a fresh connection") {
    const auto credentials = random_credentials();
    ScriptedHsm scripted(credentials, 0ms);
    scripted.drop_requests = 1;
    asio::io_context io;
    auto link = hsm::Link::create(io.get_executor(), scripted.endpoint(), credentials, options(2'000ms, 0ms));
    auto answer = verify(io, *link, 1);
    REQUIRE_MESSAGE(answer.ok(), answer.error().message);
    CHECK(link->stats().retries.load() == 1);
    CHECK(scripted.connections.load() == 2);
    CHECK(scripted.requests.load() == 2);

    // Twice in a row is not retried again: the caller hears the failure.
    scripted.drop_requests = 2;
    auto twice = verify(io, *link, 2);
    CHECK_FALSE(twice.ok());
    CHECK(link->stats().retries.load() == 2);

    // Only commands whose answer is a pure function of the request are retried.
    CHECK(hsm::Link::retry_safe(wire::Command::verify_purchase_tacs));
    CHECK(hsm::Link::retry_safe(wire::Command::verify_load_tac));
    CHECK(hsm::Link::retry_safe(wire::Command::verify_internal_auth));
    CHECK(hsm::Link::retry_safe(wire::Command::load_mac2));
    CHECK_FALSE(hsm::Link::retry_safe(wire::Command::sign_certificate));
    link->close();
    run_until(
        io, [] { return false; }, 50ms);
}

TEST_CASE("a hung HSM opens the breaker: later requests fail at once until a probe finds it answering again") {
    Installation install;
    Daemon daemon(install.dir.path());
    asio::io_context io;
    auto link = hsm::Link::create(io.get_executor(), daemon.endpoint(), install.credentials("clearing"), options(400ms, 0ms, 500ms));
    REQUIRE(verify(io, *link, 1).ok());

    daemon.signal(SIGSTOP);
    struct Resume {
        Daemon& daemon;
        ~Resume() { daemon.signal(SIGCONT); }
    } resume{daemon};
    const auto hung_at = std::chrono::steady_clock::now();
    auto first = verify(io, *link, 2);
    const auto first_ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - hung_at).count();
    REQUIRE_FALSE(first.ok());
    CHECK(first.error().code == Errc::timeout);
    CHECK(first_ms >= 350);
    CHECK(link->stats().breaker.load() == hsm::BreakerState::open);
    CHECK(link->stats().breaker_opens.load() == 1);

    // Ten batches while open: each answered at once.
    for (std::uint32_t i = 0; i < 10; ++i) {
        const auto asked_at = std::chrono::steady_clock::now();
        auto fast = verify(io, *link, 10 + i);
        const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - asked_at).count();
        REQUIRE_FALSE(fast.ok());
        CHECK(fast.error().code == Errc::connection_failed);
        CHECK(ms < 100);
    }
    CHECK(link->stats().fast_failures.load() == 10);

    // Still hung: the probe times out and the breaker stays open.
    run_until(
        io, [&] { return link->stats().probes.load() >= 1 && link->stats().breaker.load() == hsm::BreakerState::open; }, 5s);
    run_until(
        io, [] { return false; }, 1'000ms);
    CHECK(link->stats().breaker.load() != hsm::BreakerState::closed);

    daemon.signal(SIGCONT);
    REQUIRE(run_until(
        io, [&] { return link->stats().breaker.load() == hsm::BreakerState::closed; }, 10s));
    auto recovered = verify(io, *link, 3);
    REQUIRE_MESSAGE(recovered.ok(), recovered.error().message);
    CHECK(recovered.value()[0] == Verdict::valid);
    link->close();
    run_until(
        io, [] { return false; }, 50ms);
}

TEST_CASE("TAC batches are verified concurrently: with a slow HSM several are outstanding at once") {
    const auto credentials = random_credentials();
    asio::io_context io;
    constexpr int batches = 4;
    auto send_all = [&](auto& client) {
        std::vector<std::optional<hsm::Outcome<std::vector<Verdict>>>> results(batches);
        for (int i = 0; i < batches; ++i)
            client.async_verify_purchase_tacs({"mk-tac", batch_of(3, static_cast<std::uint32_t>(i))},
                                              [&results, i](auto r) { results[static_cast<std::size_t>(i)].emplace(std::move(r)); });
        REQUIRE(run_until(
            io, [&] { return std::all_of(results.begin(), results.end(), [](auto& r) { return r.has_value(); }); }, 20s));
        for (auto& r : results) CHECK(r->ok());
    };
    {
        // One connection (the clearing before): the HSM serves its batches one after another.
        ScriptedHsm scripted(credentials, 200ms);
        auto plain = hsm::AsyncClient::create(io.get_executor(), credentials);
        plain->async_connect(scripted.endpoint(), [](auto) {});
        send_all(*plain);
        CHECK(scripted.busy_max.load() == 1);
        plain->close();
        run_until(
            io, [] { return false; }, 50ms);
    }
    ScriptedHsm scripted(credentials, 200ms);
    auto link = hsm::Link::create(io.get_executor(), scripted.endpoint(), credentials, options(5'000ms, 0ms));
    const auto started = std::chrono::steady_clock::now();
    send_all(*link);
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started).count();
    MESSAGE(batches << " batches of a 200 ms HSM over the link: " << ms << " ms, " << scripted.busy_max.load() << " at once");
    CHECK(scripted.busy_max.load() >= 2);
    CHECK(scripted.busy_max.load() <= static_cast<int>(hsm::LinkOptions{}.connections_max));
    CHECK(scripted.connections.load() <= static_cast<int>(hsm::LinkOptions{}.connections_max));
    CHECK(ms < batches * 200);
    link->close();
    run_until(
        io, [] { return false; }, 50ms);
}
