// Admission of network peers (core/include/coconut/core/admission.hpp): limits per key and in total,
// tickets released when destroyed, thread safety, the open-file limit, accepting without spinning.
#include <coconut/core/admission.hpp>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <stdexcept>
#include <thread>
#include <vector>

namespace core = coconut::core;
namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

namespace {

asio::ip::address ip(const char* text) { return asio::ip::make_address(text); }

}  // namespace

TEST_CASE("one address cannot take more than per_key slots; another address still gets in") {
    core::AddressAdmission admission({.per_key = 2, .total = 10});
    auto a1 = admission.admit(ip("10.0.0.1"));
    auto a2 = admission.admit(ip("10.0.0.1"));
    auto a3 = admission.admit(ip("10.0.0.1"));
    CHECK(a1);
    CHECK(a2);
    CHECK_FALSE(a3);
    CHECK(a3.refusal() == core::Refusal::per_key);
    auto b1 = admission.admit(ip("10.0.0.2"));
    CHECK(b1);
    CHECK(b1.refusal() == core::Refusal::none);
    const auto stats = admission.stats();
    CHECK(stats.open == 3);
    CHECK(stats.keys == 2);
    CHECK(stats.admitted == 3);
    CHECK(stats.refused_per_key == 1);
    CHECK(stats.refused_total == 0);
}

TEST_CASE("the total limit refuses every address once reached") {
    core::AddressAdmission admission({.per_key = 5, .total = 3});
    std::vector<core::AddressTicket> held;
    held.push_back(admission.admit(ip("10.0.0.1")));
    held.push_back(admission.admit(ip("10.0.0.2")));
    held.push_back(admission.admit(ip("10.0.0.3")));
    auto refused = admission.admit(ip("10.0.0.4"));
    CHECK_FALSE(refused);
    CHECK(refused.refusal() == core::Refusal::total);
    CHECK(admission.stats().refused_total == 1);
}

TEST_CASE("a key at its own limit is refused as per_key even when the total is reached too") {
    core::AddressAdmission admission({.per_key = 1, .total = 1});
    auto first = admission.admit(ip("10.0.0.1"));
    CHECK(admission.admit(ip("10.0.0.1")).refusal() == core::Refusal::per_key);
    CHECK(admission.admit(ip("10.0.0.2")).refusal() == core::Refusal::total);
}

TEST_CASE("a ticket gives its slot back when destroyed, moved-from tickets hold nothing") {
    core::AddressAdmission admission({.per_key = 1, .total = 2});
    {
        auto ticket = admission.admit(ip("192.0.2.7"));
        REQUIRE(ticket);
        CHECK(admission.held(ip("192.0.2.7")) == 1);
        auto moved = std::move(ticket);
        CHECK_FALSE(ticket);  // NOLINT(bugprone-use-after-move): the rule under test
        CHECK(moved);
        CHECK(admission.stats().open == 1);
    }
    CHECK(admission.stats().open == 0);
    CHECK(admission.stats().keys == 0);
    auto again = admission.admit(ip("192.0.2.7"));
    CHECK(again);
    again.release();
    CHECK_FALSE(again);
    again.release();  // a second release does nothing
    CHECK(admission.stats().open == 0);
    core::AddressTicket assigned = admission.admit(ip("192.0.2.8"));
    assigned = admission.admit(ip("192.0.2.9"));  // move-assignment releases what it held
    CHECK(admission.held(ip("192.0.2.8")) == 0);
    CHECK(admission.held(ip("192.0.2.9")) == 1);
}

TEST_CASE("a ticket may outlive the control that issued it") {
    core::IdentityTicket ticket;
    {
        core::IdentityAdmission admission({.per_key = 1, .total = 1});
        ticket = admission.admit("T0001");
        REQUIRE(ticket);
    }
    ticket.release();
    CHECK_FALSE(ticket);
}

TEST_CASE("an IPv4-mapped IPv6 peer counts as its IPv4 address") {
    core::AddressAdmission admission({.per_key = 1, .total = 10});
    auto v4 = admission.admit(ip("127.0.0.1"));
    auto mapped = admission.admit(ip("::ffff:127.0.0.1"));
    CHECK(v4);
    CHECK_FALSE(mapped);
    CHECK(mapped.key() == ip("127.0.0.1"));
    CHECK(core::canonical_address(ip("::1")) == ip("::1"));
}

TEST_CASE("identities are limited per identity like addresses") {
    core::IdentityAdmission admission({.per_key = 2});
    auto t1 = admission.admit("clearing");
    auto t2 = admission.admit("clearing");
    auto t3 = admission.admit("clearing");
    auto other = admission.admit("issuance");
    CHECK((t1 && t2 && other));
    CHECK(t3.refusal() == core::Refusal::per_key);
    CHECK(admission.limits().total == core::AdmissionLimits::unlimited);
}

TEST_CASE("a limit of 0 is refused at construction") {
    CHECK_THROWS_AS(core::AddressAdmission({.per_key = 0, .total = 1}), std::invalid_argument);
    CHECK_THROWS_AS(core::IdentityAdmission({.per_key = 1, .total = 0}), std::invalid_argument);
}

TEST_CASE("concurrent admits never exceed a limit and every slot comes back") {
    constexpr std::size_t per_key = 3;
    constexpr std::size_t total = 10;
    constexpr int threads = 8;
    constexpr int rounds = 20'000;
    core::IdentityAdmission admission({.per_key = per_key, .total = total});
    std::atomic<bool> exceeded{false};
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t) {
        workers.emplace_back([&, t] {
            const std::string key = "client-" + std::to_string(t % 4);
            std::vector<core::IdentityTicket> mine;
            for (int i = 0; i < rounds; ++i) {
                if (auto ticket = admission.admit(key)) mine.push_back(std::move(ticket));
                if (admission.held(key) > per_key) exceeded = true;
                if (mine.size() > 2 || (i % 3 == 0 && !mine.empty())) mine.erase(mine.begin());
            }
        });
    }
    for (auto& worker : workers) worker.join();
    const auto stats = admission.stats();
    CHECK_FALSE(exceeded.load());
    CHECK(stats.open == 0);
    CHECK(stats.keys == 0);
    CHECK(stats.admitted + stats.refused_per_key + stats.refused_total == std::uint64_t{threads} * rounds);
    CHECK(stats.admitted > 0);
}

namespace {

// Lowers the soft RLIMIT_NOFILE and fills every free descriptor below it, so that the next accept(2)
// fails with EMFILE; restores both on free() or destruction.
class DescriptorExhaustion {
public:
    DescriptorExhaustion() {
        REQUIRE(::getrlimit(RLIMIT_NOFILE, &saved_) == 0);
        int highest = 0;
        for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd"))
            highest = std::max(highest, std::stoi(entry.path().filename().string()));
        rlimit lowered = saved_;
        lowered.rlim_cur = static_cast<rlim_t>(highest) + 16;  // the directory iterator's own descriptor is gone again
        REQUIRE(::setrlimit(RLIMIT_NOFILE, &lowered) == 0);
        for (;;) {
            const int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
            if (fd < 0) break;
            filler_.push_back(fd);
        }
        REQUIRE(errno == EMFILE);
    }
    ~DescriptorExhaustion() { free(); }
    DescriptorExhaustion(const DescriptorExhaustion&) = delete;
    DescriptorExhaustion& operator=(const DescriptorExhaustion&) = delete;

    void free() {
        for (int fd : filler_) ::close(fd);
        filler_.clear();
        ::setrlimit(RLIMIT_NOFILE, &saved_);
    }

private:
    rlimit saved_{};
    std::vector<int> filler_;
};

// An accept loop written as the header's example, counting its attempts.
struct AcceptLoop {
    explicit AcceptLoop(asio::io_context& io) : acceptor(io, tcp::endpoint(ip("127.0.0.1"), 0)), backoff(acceptor.get_executor()) {}

    void accept() {
        ++attempts;
        acceptor.async_accept([this](const boost::system::error_code& ec, tcp::socket socket) {
            if (!ec) accepted.push_back(std::move(socket));
            last_step = backoff.after(ec, [this] { accept(); });
        });
    }

    tcp::acceptor acceptor;
    core::AcceptBackoff backoff;
    std::vector<tcp::socket> accepted;
    int attempts = 0;
    core::AcceptStep last_step = core::AcceptStep::accept_now;
};

}  // namespace

TEST_CASE("at the descriptor limit accept waits with backoff instead of spinning, and recovers") {
    asio::io_context io;
    AcceptLoop loop(io);
    const auto endpoint = loop.acceptor.local_endpoint();
    // Three peers waiting in the backlog before the process runs out of descriptors.
    std::vector<tcp::socket> peers;
    for (int i = 0; i < 3; ++i) {
        peers.emplace_back(io);
        peers.back().connect(endpoint);
    }

    DescriptorExhaustion exhaustion;
    loop.accept();
    io.run_for(1500ms);
    // 10 ms doubling to 1 s: attempts at 0, 10, 30, 70, 150, 310, 630, 1270 ms. A loop that accepts
    // again at once makes hundreds of thousands of attempts in 1.5 s.
    CHECK(loop.accepted.empty());
    CHECK(loop.backoff.exhausted_count() >= 5);
    CHECK(loop.attempts <= 12);
    CHECK(loop.last_step == core::AcceptStep::accept_later);

    exhaustion.free();
    const auto freed = std::chrono::steady_clock::now();
    while (loop.accepted.size() < peers.size() && std::chrono::steady_clock::now() - freed < 3s) io.run_for(20ms);
    CHECK(loop.accepted.size() == peers.size());
    // The longest wait is delay_max (1 s).
    CHECK(std::chrono::steady_clock::now() - freed < 1500ms);

    asio::post(loop.acceptor.get_executor(), [&] {
        loop.backoff.cancel();
        loop.acceptor.close();
    });
    io.run_for(200ms);
    CHECK(loop.last_step == core::AcceptStep::stop);
}

TEST_CASE("accept errors are classified: closed stops, a failed connection retries at once, exhaustion waits") {
    asio::io_context io;
    core::AcceptBackoff backoff(io.get_executor(), {.delay_initial = 5ms, .delay_max = 20ms});
    int called = 0;
    const auto again = [&] { ++called; };

    CHECK(backoff.after(asio::error::operation_aborted, again) == core::AcceptStep::stop);
    CHECK(called == 0);
    CHECK(backoff.after(asio::error::connection_aborted, again) == core::AcceptStep::accept_now);
    CHECK(called == 1);
    CHECK(backoff.failed_count() == 1);

    CHECK(backoff.after(asio::error::no_descriptors, again) == core::AcceptStep::accept_later);
    CHECK(called == 1);
    io.run_for(100ms);
    CHECK(called == 2);
    CHECK(backoff.exhausted_count() == 1);

    // cancel() drops a delayed accept.
    CHECK(backoff.after(make_error_code(boost::system::errc::too_many_files_open_in_system), again) == core::AcceptStep::accept_later);
    backoff.cancel();
    io.restart();
    io.run_for(100ms);
    CHECK(called == 2);
    CHECK(backoff.exhausted_count() == 2);

    CHECK_THROWS_AS(core::AcceptBackoff(io.get_executor(), {.delay_initial = 0ms, .delay_max = 1s}), std::invalid_argument);
}

TEST_CASE("raise_open_file_limit raises the soft limit to the hard limit") {
    rlimit saved{};
    REQUIRE(::getrlimit(RLIMIT_NOFILE, &saved) == 0);
    rlimit lowered = saved;
    lowered.rlim_cur = 256;
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &lowered) == 0);
    const std::uint64_t raised = core::raise_open_file_limit();
    rlimit now{};
    REQUIRE(::getrlimit(RLIMIT_NOFILE, &now) == 0);
    CHECK(raised == now.rlim_cur);
    if (saved.rlim_max != RLIM_INFINITY) CHECK(now.rlim_cur == saved.rlim_max);
    CHECK(raised > 256);
    ::setrlimit(RLIMIT_NOFILE, &saved);
}
