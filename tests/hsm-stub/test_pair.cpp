// Two coconut-hsmd on copies of one sealed store (README.md "Two HSMs"): `coconut-hsmd replicate`, the
// same answers from both, and clients with a list of endpoints (hsm::Link rule 5, hsm::Client) that
// move on when the first is killed, was never up, hangs — and fail clearly when none answers.
#include "daemon_process.hpp"

#include <coconut/hsm/ca.hpp>
#include <coconut/hsm/client.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <fmt/format.h>
#include <sys/stat.h>

#include <thread>

using namespace hsm_test;
using hsm::Errc;
using hsm::Verdict;
namespace wire = hsm::wire;
namespace asio = boost::asio;
using namespace std::chrono_literals;

namespace {

const hsm::CardIdentity alice = card("4600000000000001", "46000000001234567890");
const std::string hsmd = COCONUT_HSMD_PATH;

// `count` purchases under mk-tac:2; every fourth TAC is wrong (an HSM that answered "valid" for all
// would be caught).
std::vector<hsm::PurchaseTac> batch_of(std::size_t count, std::uint32_t salt) {
    std::vector<hsm::PurchaseTac> batch;
    for (std::size_t i = 0; i < count; ++i) {
        auto t = signed_purchase(key16(tac_master_v2_hex), 2, alice, salt * 1000 + static_cast<std::uint32_t>(i) + 1, salt);
        if (i % 4 == 3) t.tac[0] ^= 0x01;
        batch.push_back(t);
    }
    return batch;
}
bool right_verdicts(const std::vector<Verdict>& verdicts, std::size_t count) {
    if (verdicts.size() != count) return false;
    for (std::size_t i = 0; i < count; ++i)
        if (verdicts[i] != (i % 4 == 3 ? Verdict::invalid : Verdict::valid)) return false;
    return true;
}

hsm::LoadRequest load_of(std::uint32_t amount) {
    hsm::LoadRequest load;
    load.key = {"mk-load", 1};
    load.card = alice;
    load.amount_fen = amount;
    load.terminal_id = hsm::parse_terminal_id("000001000050").value();
    load.online_atc = 3;
    load.card_random = {1, 2, 3, 4};
    load.when = when("20261126", "120000");
    const Bytes session = tdes_block(independent_card_key(key16(load_master_hex), alice), hex("01020304 0003 8000"));
    Bytes mac1_data = coconut::be_bytes(0, 4);
    coconut::append(mac1_data, coconut::be_bytes(amount, 4));
    mac1_data.push_back(load.type);
    coconut::append(mac1_data, load.terminal_id);
    load.mac1 = independent_des_mac(session, mac1_data);
    return load;
}

// A loopback port nothing listens on (bound, then closed: connecting is refused).
// A loopback port that refuses connections for as long as this object lives: bound, never listening. (A
// port merely closed again may be taken at once by another test's HSM on a busy machine — and with the
// same test credentials, that HSM answers.)
class RefusingPort {
public:
    RefusingPort() : socket_(io_) {
        socket_.open(asio::ip::tcp::v4());
        socket_.bind(asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    }
    std::uint16_t port() const { return socket_.local_endpoint().port(); }

private:
    asio::io_context io_;
    asio::ip::tcp::socket socket_;
};

std::string mode_of(const std::filesystem::path& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) return "missing";
    return fmt::format("{:04o}", st.st_mode & 07777);
}

// The Installation's store and a copy made by `coconut-hsmd replicate`, each with its daemon.
struct Pair {
    Installation install;
    TempDir second;
    std::optional<Daemon> first_daemon, second_daemon;
    explicit Pair(bool with_ca = false) {
        if (with_ca) {
            const auto init =
                run(hsmd + " ca init --store " + (install.dir / "store").string() + " --out " + (install.dir / "ca.pem").string());
            REQUIRE_MESSAGE(init.exit_code == 0, init.output);
        }
        const auto copied = run(hsmd + " replicate --store " + (install.dir / "store").string() + " --to " + (second / "store").string());
        REQUIRE_MESSAGE(copied.exit_code == 0, copied.output);
        first_daemon.emplace(install.dir.path(), std::vector<std::string>{"--instance", "hsm-a"});
        second_daemon.emplace(second.path(), std::vector<std::string>{"--instance", "hsm-b"});
    }
    Daemon& first() { return *first_daemon; }
    Daemon& second_one() { return *second_daemon; }
    std::vector<wire::Endpoint> endpoints() { return {first().endpoint(), second_one().endpoint()}; }
    // SIGKILL, waited for (bounded).
    static void kill(Daemon& daemon) {
        daemon.signal(SIGKILL);
        const auto deadline = std::chrono::steady_clock::now() + 5s;
        while (daemon.alive() && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(5ms);
        REQUIRE_FALSE(daemon.alive());
    }
};

hsm::LinkOptions link_options(std::chrono::milliseconds timeout = 2'000ms) {
    hsm::LinkOptions o;
    o.client.connect_timeout = timeout;
    o.client.request_timeout = timeout;
    o.keepalive_interval = 0ms;
    o.breaker_cooldown = 60'000ms;  // a test that opens it must not see a probe
    o.keepalive_tac_label = "mk-tac";
    return o;
}

template <class Done>
bool run_until(asio::io_context& io, Done done, std::chrono::milliseconds deadline = 20s) {
    const auto end = std::chrono::steady_clock::now() + deadline;
    io.restart();
    while (!done() && std::chrono::steady_clock::now() < end) io.run_for(2ms);
    return done();
}

hsm::Outcome<std::vector<Verdict>> verify(asio::io_context& io, hsm::Link& link, std::uint32_t salt) {
    std::optional<hsm::Outcome<std::vector<Verdict>>> result;
    link.async_verify_purchase_tacs({"mk-tac", batch_of(4, salt)}, [&](auto r) { result.emplace(std::move(r)); });
    REQUIRE(run_until(
        io, [&] { return result.has_value(); }, 30s));
    return std::move(*result);
}

double seconds_since(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

TEST_CASE("coconut-hsmd replicate: a sealed copy (0700/0600) whose daemon answers exactly as the first") {
    Pair pair;
    const auto copy = pair.second / "store";
    CHECK(mode_of(copy) == "0700");
    CHECK(mode_of(copy / "master.key") == "0600");
    CHECK(mode_of(copy / "keys.sealed") == "0600");
    CHECK(read_text(copy / "keys.sealed") == read_text(pair.install.dir / "store" / "keys.sealed"));  // sealed as it was

    auto a = hsm::Client::connect(pair.first().endpoint(), pair.install.credentials("issuance"));
    auto b = hsm::Client::connect(pair.second_one().endpoint(), pair.install.credentials("issuance"));  // the same client key
    REQUIRE(a.ok());
    REQUIRE(b.ok());
    const auto batch = batch_of(64, 7);
    auto verdicts_a = a.value()->verify_purchase_tacs("mk-tac", batch);
    auto verdicts_b = b.value()->verify_purchase_tacs("mk-tac", batch);
    REQUIRE(verdicts_a.ok());
    REQUIRE(verdicts_b.ok());
    CHECK(right_verdicts(*verdicts_a, batch.size()));
    CHECK(*verdicts_a == *verdicts_b);
    for (std::uint32_t amount : {100u, 5000u, 99999u}) {
        auto mac_a = a.value()->load_mac2(load_of(amount));
        auto mac_b = b.value()->load_mac2(load_of(amount));
        REQUIRE(mac_a.ok());
        REQUIRE(mac_b.ok());
        CHECK(mac_a->mac1 == Verdict::valid);
        CHECK(mac_a->mac2 == mac_b->mac2);
        CHECK(mac_a->key_version == mac_b->key_version);
    }
    const std::vector<hsm::KeyRef> masters = {{"mk-load", 1}, {"mk-tac", 2}};
    auto keys_a = a.value()->derive_card_keys({alice, {"kek-issuance", 1}, masters});
    auto keys_b = b.value()->derive_card_keys({alice, {"kek-issuance", 1}, masters});
    REQUIRE(keys_a.ok());
    REQUIRE(keys_b.ok());
    REQUIRE(keys_a->keys.size() == keys_b->keys.size());
    for (std::size_t i = 0; i < keys_a->keys.size(); ++i) {
        CHECK(keys_a->keys[i].encrypted == keys_b->keys[i].encrypted);
        CHECK(keys_a->keys[i].kcv == keys_b->keys[i].kcv);
    }

    // Two audit logs, each its own chain, told apart: the copy's starts with where it came from.
    const std::string log_a = pair.install.audit_text(), log_b = read_text(copy / "audit.log");
    CHECK(log_a.find(R"("command":"replicate")") != std::string::npos);
    CHECK(log_b.rfind(R"({"seq":1,)", 0) == 0);
    CHECK(log_b.find(R"("command":"replica-created")") < log_b.find('\n'));
    CHECK(log_a.find("instance hsm-a, listening") != std::string::npos);
    CHECK(log_b.find("instance hsm-b, listening") != std::string::npos);
    CHECK(log_b.find(R"("client":"issuance","command":"load-mac2")") != std::string::npos);
    pair.first().stop();
    pair.second_one().stop();
    CHECK(run(hsmd + " audit verify --store " + (pair.install.dir / "store").string()).exit_code == 0);
    CHECK(run(hsmd + " audit verify --store " + copy.string()).exit_code == 0);
}

TEST_CASE("coconut-hsmd replicate: a ceremony on the first store reaches the copy; a fork or a wrong directory is refused") {
    Installation install;
    TempDir other;
    const std::string from = (install.dir / "store").string(), to = (other / "store").string();
    REQUIRE(run(hsmd + " replicate --store " + from + " --to " + to).exit_code == 0);
    auto again = run(hsmd + " replicate --store " + from + " --to " + to);
    CHECK(again.exit_code == 0);
    CHECK(again.output.find("current copy") != std::string::npos);

    REQUIRE(run(hsmd + " key generate --store " + from + " --label mk-tac --version 3 --usage tac").exit_code == 0);
    auto update = run(hsmd + " replicate --store " + from + " --to " + to);
    CHECK(update.exit_code == 0);
    CHECK(update.output.find("updated copy") != std::string::npos);
    auto copied = hsm::KeyStore::open(to);
    REQUIRE(copied.ok());
    CHECK(copied->find({"mk-tac", 3}).ok());

    // A ceremony on the copy: the stores forked, nothing is overwritten.
    REQUIRE(run(hsmd + " key generate --store " + to + " --label mk-x --version 1 --usage tac").exit_code == 0);
    const std::string sealed_before = read_text(other / "store" / "keys.sealed");
    auto forked = run(hsmd + " replicate --store " + from + " --to " + to);
    CHECK(forked.exit_code == 1);
    CHECK(forked.output.find("forked") != std::string::npos);
    CHECK(forked.output.find("(store_forked)") != std::string::npos);
    CHECK(read_text(other / "store" / "keys.sealed") == sealed_before);

    TempDir unrelated;
    REQUIRE(run(hsmd + " init --store " + (unrelated / "store").string()).exit_code == 0);
    auto foreign = run(hsmd + " replicate --store " + from + " --to " + (unrelated / "store").string());
    CHECK(foreign.exit_code == 1);
    CHECK(foreign.output.find("another key store (another master key)") != std::string::npos);
    std::filesystem::create_directories(unrelated / "junk");
    write_text(unrelated / "junk" / "notes.txt", "x");
    auto junk = run(hsmd + " replicate --store " + from + " --to " + (unrelated / "junk").string());
    CHECK(junk.exit_code == 1);
    CHECK(junk.output.find("neither empty nor a copy") != std::string::npos);
    auto same = run(hsmd + " replicate --store " + from + " --to " + from);
    CHECK(same.exit_code == 1);
    CHECK(same.output.find("the same directory") != std::string::npos);
    auto missing = run(hsmd + " replicate --store " + (unrelated / "none").string() + " --to " + (unrelated / "copy").string());
    CHECK(missing.exit_code == 1);
    CHECK_FALSE(std::filesystem::exists(unrelated / "copy" / "master.key"));
}

TEST_CASE("Link over two HSMs: the first killed mid-stream, every batch answered, and answered right") {
    Pair pair;
    asio::io_context io;
    auto link = hsm::Link::create(io.get_executor(), pair.endpoints(), pair.install.credentials("clearing"), link_options());
    constexpr std::size_t total = 600, in_flight_max = 32, batch_items = 8;
    std::size_t sent = 0, answered = 0, failed = 0, wrong = 0;
    std::string first_failure;
    bool killed = false;
    const auto start = std::chrono::steady_clock::now();
    double slowest_s = 0;  // the longest a batch waited for its answer (those in flight at the kill)
    auto send = [&] {
        const auto salt = static_cast<std::uint32_t>(++sent);
        const auto asked = std::chrono::steady_clock::now();
        link->async_verify_purchase_tacs({"mk-tac", batch_of(batch_items, salt)}, [&, asked](hsm::Outcome<std::vector<Verdict>> r) {
            ++answered;
            slowest_s = std::max(slowest_s, seconds_since(asked));
            if (!r) {
                if (failed++ == 0) first_failure = r.error().message;
            } else if (!right_verdicts(*r, batch_items)) {
                ++wrong;
            }
        });
    };
    while (answered < total && seconds_since(start) < 60) {
        while (sent < total && sent - answered < in_flight_max) send();
        if (!killed && answered >= total / 4) {
            REQUIRE(sent - answered == in_flight_max);  // requests in flight when it dies
            Pair::kill(pair.first());
            killed = true;
        }
        io.restart();
        io.run_for(1ms);
    }
    MESSAGE(
        fmt::format("{} batches of {} in {:.2f} s; the first HSM killed after {} with {} in flight; the slowest batch {:.1f} ms; "
                    "failovers {}, requests moved {}, retried {}",
                    total, batch_items, seconds_since(start), total / 4, in_flight_max, slowest_s * 1000, link->stats().failovers.load(),
                    link->stats().moved.load(), link->stats().retries.load()));
    CHECK(killed);
    CHECK(answered == total);
    CHECK_MESSAGE(failed == 0, first_failure);
    CHECK(wrong == 0);
    CHECK(link->stats().failovers.load() == 1);
    CHECK(link->stats().endpoint.load() == 1);
    CHECK(link->stats().breaker.load() == hsm::BreakerState::closed);
    // The second served what the first did not: its audit log has the batches.
    CHECK(read_text(pair.second / "store" / "audit.log").find(R"("client":"clearing","command":"verify-purchase-tacs")") !=
          std::string::npos);
    link->close();
    run_until(
        io, [] { return false; }, 50ms);
}

TEST_CASE("Link: the first HSM never up — the second is used at once; a hung first — the second after one timeout") {
    Pair pair;
    asio::io_context io;
    {
        const RefusingPort dead;
        std::vector<wire::Endpoint> endpoints = {{"127.0.0.1", dead.port()}, pair.second_one().endpoint()};
        auto link = hsm::Link::create(io.get_executor(), endpoints, pair.install.credentials("clearing"), link_options());
        const auto start = std::chrono::steady_clock::now();
        auto first = verify(io, *link, 1);
        const double took = seconds_since(start);
        REQUIRE_MESSAGE(first.ok(), first.error().message);
        CHECK(right_verdicts(*first, 4));
        CHECK(took < 1.0);
        MESSAGE(fmt::format("first endpoint refused: answered by the second in {:.1f} ms", took * 1000));
        CHECK(link->stats().failovers.load() == 1);
        auto next = verify(io, *link, 2);
        CHECK(next.ok());
        CHECK(link->stats().failovers.load() == 1);  // it stays on the one that works
        link->close();
    }
    {
        pair.first().signal(SIGSTOP);  // hangs: connects (the kernel accepts) but never says hello
        auto link = hsm::Link::create(io.get_executor(), pair.endpoints(), pair.install.credentials("clearing"), link_options(300ms));
        const auto start = std::chrono::steady_clock::now();
        auto answer = verify(io, *link, 3);
        const double took = seconds_since(start);
        pair.first().signal(SIGCONT);
        REQUIRE_MESSAGE(answer.ok(), answer.error().message);
        CHECK(right_verdicts(*answer, 4));
        CHECK(took >= 0.29);
        CHECK(took < 2.0);
        MESSAGE(fmt::format("first endpoint hung: answered by the second in {:.0f} ms (timeout 300 ms)", took * 1000));
        CHECK(link->stats().timeouts.load() == 1);
        CHECK(link->stats().breaker.load() == hsm::BreakerState::closed);
        link->close();
    }
    run_until(
        io, [] { return false; }, 50ms);
}

TEST_CASE("Link: every HSM down — a clear error within a bound, nothing waits") {
    Pair pair;
    asio::io_context io;
    {
        const RefusingPort dead_a, dead_b;
        std::vector<wire::Endpoint> endpoints = {{"127.0.0.1", dead_a.port()}, {"127.0.0.1", dead_b.port()}};
        auto link = hsm::Link::create(io.get_executor(), endpoints, pair.install.credentials("clearing"), link_options());
        const auto start = std::chrono::steady_clock::now();
        auto answer = verify(io, *link, 1);
        REQUIRE_FALSE(answer.ok());
        CHECK(seconds_since(start) < 1.0);
        CHECK(answer.error().code == Errc::connection_failed);
        CHECK(answer.error().message.find("no HSM of " + wire::to_string(endpoints) + " answered; the last: cannot connect to") == 0);
        MESSAGE(answer.error().message);
        CHECK(link->stats().breaker.load() == hsm::BreakerState::closed);  // refused, not hung: the next request tries again
        link->close();
    }
    {
        pair.first().signal(SIGSTOP);
        pair.second_one().signal(SIGSTOP);
        auto link = hsm::Link::create(io.get_executor(), pair.endpoints(), pair.install.credentials("clearing"), link_options(300ms));
        const auto start = std::chrono::steady_clock::now();
        auto answer = verify(io, *link, 2);
        const double took = seconds_since(start);
        auto behind_breaker = verify(io, *link, 3);
        pair.first().signal(SIGCONT);
        pair.second_one().signal(SIGCONT);
        REQUIRE_FALSE(answer.ok());
        CHECK(answer.error().code == Errc::timeout);
        CHECK(answer.error().message.find("no HSM of " + wire::to_string(pair.endpoints()) + " answered") == 0);
        CHECK(took < 2.0);  // one timeout per endpoint (2 × 300 ms) and no more
        MESSAGE(fmt::format("both hung: failed after {:.0f} ms: {}", took * 1000, answer.error().message));
        CHECK(link->stats().breaker.load() == hsm::BreakerState::open);
        REQUIRE_FALSE(behind_breaker.ok());
        CHECK(behind_breaker.error().message.find("circuit breaker") != std::string::npos);
        link->close();
    }
    run_until(
        io, [] { return false; }, 50ms);
}

TEST_CASE("Client over two HSMs: connects to the first that answers, moves on when it dies, fails clearly when none answers") {
    Pair pair;
    const RefusingPort dead;
    const std::vector<wire::Endpoint> dead_first = {{"127.0.0.1", dead.port()}, pair.first().endpoint()};
    auto skipping = hsm::Client::connect(dead_first, pair.install.credentials("issuance"));
    REQUIRE(skipping.ok());
    CHECK(skipping.value()->endpoint().port == pair.first().port());

    auto client = hsm::Client::connect(pair.endpoints(), pair.install.credentials("issuance"));
    REQUIRE(client.ok());
    CHECK(client.value()->endpoint().port == pair.first().port());
    auto before = client.value()->load_mac2(load_of(700));
    REQUIRE(before.ok());
    Pair::kill(pair.first());
    // The idle connection to the killed HSM is noticed, the request goes to the second, once.
    auto after = client.value()->load_mac2(load_of(700));
    REQUIRE_MESSAGE(after.ok(), after.error().message);
    CHECK(after->mac2 == before->mac2);
    CHECK(client.value()->endpoint().port == pair.second_one().port());
    CHECK(client.value()->key_info({"mk-load", 1}).ok());

    // None answers: the first refuses, the second hangs (stopped) — one error naming both. The refusing
    // endpoint is a RefusingPort, not the killed HSM's port (which another test's HSM may take meanwhile).
    const RefusingPort refusing;
    pair.second_one().signal(SIGSTOP);
    hsm::ClientOptions quick;
    quick.connect_timeout = 300ms;
    quick.request_timeout = 300ms;
    const std::vector<wire::Endpoint> none_left = {{"127.0.0.1", refusing.port()}, pair.second_one().endpoint()};
    const auto start = std::chrono::steady_clock::now();
    auto nothing = hsm::Client::connect(none_left, pair.install.credentials("issuance"), quick);
    pair.second_one().signal(SIGCONT);
    REQUIRE_FALSE(nothing.ok());
    CHECK(seconds_since(start) < 2.0);
    CHECK(nothing.error().message.find("no HSM of " + wire::to_string(none_left) + " could be reached (") == 0);
    CHECK(nothing.error().message.find("cannot connect to") != std::string::npos);
    CHECK(nothing.error().message.find("while connecting") != std::string::npos);
    MESSAGE(nothing.error().message);
}

TEST_CASE("Client over two HSMs: a signing whose HSM hangs is not sent to the other (not safe to repeat); the next request moves on") {
    Pair pair(true);
    hsm::ClientOptions quick;
    quick.connect_timeout = 500ms;
    quick.request_timeout = 500ms;
    auto client = hsm::Client::connect(pair.endpoints(), pair.install.credentials("issuance"), quick);
    REQUIRE(client.ok());
    auto request = [] {
        auto key = coconut::tls::generate_key();
        REQUIRE(key.ok());
        const std::string pem = coconut::tls::to_pem(coconut::tls::make_request(*key, {"BUS00001", "x"}).value());
        return hsm::CertificateSigning{coconut::tls::Profile::terminal, "BUS00001", {}, 30, Bytes(pem.begin(), pem.end())};
    };
    auto ca_first = client.value()->ca_certificate();
    REQUIRE(ca_first.ok());
    REQUIRE(client.value()->sign_certificate(request()).ok());

    pair.first().signal(SIGSTOP);
    const auto start = std::chrono::steady_clock::now();
    auto hung = client.value()->sign_certificate(request());
    const double took = seconds_since(start);
    REQUIRE_FALSE(hung.ok());
    CHECK(hung.error().code == Errc::timeout);
    CHECK(hung.error().message.find("(not sent again: sign-certificate is not safe to repeat)") != std::string::npos);
    CHECK(took < 1.5);
    const auto second_log = [&] { return read_text(pair.second / "store" / "audit.log"); };
    CHECK(second_log().find(R"("command":"sign-certificate")") == std::string::npos);  // not signed twice

    // The next request goes to the second: the same island CA (the copied store), and it signs.
    auto ca_second = client.value()->ca_certificate();
    REQUIRE_MESSAGE(ca_second.ok(), ca_second.error().message);
    CHECK(*ca_second == *ca_first);
    CHECK(client.value()->endpoint().port == pair.second_one().port());
    CHECK(client.value()->sign_certificate(request()).ok());
    CHECK(second_log().find(R"("command":"sign-certificate")") != std::string::npos);
    pair.first().signal(SIGCONT);
}

TEST_CASE("endpoint lists: the single form as before, bad lists refused with the entry named (coconut-hsm --connect)") {
    auto two = wire::parse_endpoints("127.0.0.1:7501,[::1]:7502");
    REQUIRE(two.ok());
    REQUIRE(two->size() == 2);
    CHECK(two.value()[1].host == "::1");
    CHECK(wire::to_string(*two) == "127.0.0.1:7501,[::1]:7502");
    CHECK(wire::parse_endpoints("hsm-a.island:7501")->size() == 1);
    const std::pair<const char*, const char*> bad[] = {
        {"", "the HSM endpoint list is empty"},
        {",", "HSM endpoint 1 of ',' is empty"},
        {"127.0.0.1:7501,", "HSM endpoint 2 of '127.0.0.1:7501,' is empty"},
        {"127.0.0.1:7501,,127.0.0.1:7502", "HSM endpoint 2 of '127.0.0.1:7501,,127.0.0.1:7502' is empty"},
        {"127.0.0.1:7501,127.0.0.1", "HSM endpoint 2 of '127.0.0.1:7501,127.0.0.1': "},
        {"127.0.0.1:0", "HSM endpoint 1 of '127.0.0.1:0': "},
        {"127.0.0.1:7501, 127.0.0.1:7502", "HSM endpoint 2 of "},
        {"127.0.0.1:7501,127.0.0.1:7501", "HSM endpoint 2 of '127.0.0.1:7501,127.0.0.1:7501' repeats 127.0.0.1:7501"},
        {"h:1,h:2,h:3,h:4,h:5,h:6,h:7,h:8,h:9", "names more than 8 HSM endpoints"},
    };
    for (const auto& [text, expected] : bad) {
        auto parsed = wire::parse_endpoints(text);
        REQUIRE_FALSE(parsed.ok());
        CHECK(parsed.error().code == Errc::bad_request);
        CHECK_MESSAGE(parsed.error().message.find(expected) != std::string::npos, parsed.error().message);
    }
    Installation install;
    auto cli = run(std::string(COCONUT_HSM_CLI_PATH) + " --connect 127.0.0.1:7501,,127.0.0.1:7502 --client-key " +
                   (install.dir / "issuance.key").string() + " kcv --key mk-load:1");
    CHECK(cli.exit_code == 1);
    CHECK(cli.output.find("HSM endpoint 2 of '127.0.0.1:7501,,127.0.0.1:7502' is empty") != std::string::npos);
}

TEST_CASE("coconut-hsm --connect with two HSMs: the first refused, the second answers") {
    Pair pair;
    const RefusingPort dead;
    const std::string list = fmt::format("127.0.0.1:{},127.0.0.1:{}", dead.port(), pair.second_one().port());
    auto kcv = run(std::string(COCONUT_HSM_CLI_PATH) + " --connect " + list + " --client-key " +
                   (pair.install.dir / "issuance.key").string() + " kcv --key mk-load:1");
    CHECK_MESSAGE(kcv.exit_code == 0, kcv.output);
    CHECK(kcv.output.find("491510") != std::string::npos);
}
