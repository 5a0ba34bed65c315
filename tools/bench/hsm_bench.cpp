// hsm_bench — purchase TAC verifications per second through coconut-hsmd on loopback against the
// same verifications in-process, one run, printed side by side with their ratio.
//
//   hsm_bench [--batches 400] [--batch 1024] [--connections 4] [--in-flight 4] [--daemon-threads 2]
//
// The daemon is the real executable (started here on 127.0.0.1, ephemeral port, killed by PID at the
// end); requests are authenticated, audited (one audit line per batch) and answered exactly as in
// production. Every verdict is checked against the expected one, so a fast wrong answer cannot pass.
#include <coconut/hsm/client.hpp>

#include <CLI/CLI.hpp>
#include <boost/asio/io_context.hpp>
#include <fmt/format.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

namespace hsm = coconut::hsm;
namespace crypto = coconut::crypto;
using Clock = std::chrono::steady_clock;

namespace {

// Distinct transactions generated up front; batches cycle through them.
constexpr std::size_t transaction_pool = 16384;
// One in this many transactions carries a wrong TAC, so both verdicts are exercised.
constexpr std::size_t invalid_every = 97;
// How long the daemon may take to start, and to stop after SIGTERM.
constexpr auto daemon_start_timeout = std::chrono::seconds(20);
constexpr auto daemon_stop_timeout = std::chrono::seconds(5);
// Upper bound of the daemon run: the bench fails rather than hangs.
constexpr auto daemon_run_timeout = std::chrono::seconds(300);

const crypto::Key16 tac_master(coconut::hex("404142434445464748494A4B4C4D4E4F"));

[[noreturn]] void die(const std::string& message) {
    std::fprintf(stderr, "hsm_bench: %s\n", message.c_str());
    std::exit(1);
}

struct Workload {
    std::vector<hsm::PurchaseTac> pool;
    std::vector<hsm::Verdict> expected;
};

Workload make_workload() {
    Workload w;
    std::mt19937_64 random(20261126);
    const hsm::IssuerId issuer = hsm::parse_issuer_id("4600000000000001").value();
    const crypto::Key16 issuer_key = crypto::diversify(tac_master, crypto::Block{issuer[0], issuer[1], issuer[2], issuer[3], issuer[4],
                                                                                 issuer[5], issuer[6], issuer[7]});
    for (std::size_t i = 0; i < transaction_pool; ++i) {
        hsm::PurchaseTac t;
        t.key_version = 1;
        t.card.issuer_id = issuer;
        // ASN "46000000" ‖ 12 random digits: many cards of one issuer, as in a clearing day.
        const auto asn = coconut::concat(coconut::hex("46000000"), coconut::bcd_of(random() % 1'000'000'000'000ULL, 6));
        std::copy(asn.begin(), asn.end(), t.card.asn.begin());
        t.amount_fen = static_cast<std::uint32_t>(100 + random() % 5000);
        t.type = crypto::type_capp_purchase;
        t.terminal_id = hsm::parse_terminal_id("460100000042").value();
        t.terminal_serial = static_cast<std::uint32_t>(i + 1);
        t.when = hsm::parse_card_date_time("20261126", "081500").value();
        const crypto::Key16 dtk = crypto::diversify(issuer_key, crypto::card_factor_from_asn(t.card.asn));
        t.tac = crypto::des_mac(crypto::tac_key(dtk),
                                crypto::purchase_tac_input(t.amount_fen, t.type, t.terminal_id, t.terminal_serial, t.when));
        const bool invalid = i % invalid_every == 0;
        if (invalid) t.tac[1] ^= 0x40;
        w.pool.push_back(t);
        w.expected.push_back(invalid ? hsm::Verdict::invalid : hsm::Verdict::valid);
    }
    return w;
}

std::span<const hsm::PurchaseTac> batch_at(const Workload& w, std::size_t index, std::size_t batch) {
    const std::size_t start = (index * batch) % (transaction_pool - batch + 1);
    return std::span(w.pool).subspan(start, batch);
}
std::size_t batch_start(std::size_t index, std::size_t batch) { return (index * batch) % (transaction_pool - batch + 1); }

struct Measurement {
    double per_second = 0;
    std::size_t verified = 0;
    std::size_t wrong = 0;
    double seconds = 0;
};

// `verified` verifications (`wrong` of them with the wrong verdict) from `start` until now.
Measurement measured_since(Clock::time_point start, std::size_t verified, std::size_t wrong) {
    Measurement m;
    m.seconds = std::chrono::duration<double>(Clock::now() - start).count();
    m.verified = verified;
    m.wrong = wrong;
    m.per_second = static_cast<double>(m.verified) / m.seconds;
    return m;
}

Measurement in_process(const hsm::Hsm& service, const Workload& w, std::size_t batches, std::size_t batch, unsigned threads) {
    std::atomic<std::size_t> next{0};
    std::atomic<std::size_t> wrong{0};
    const auto start = Clock::now();
    std::vector<std::thread> pool;
    for (unsigned t = 0; t < threads; ++t) {
        pool.emplace_back([&] {
            for (std::size_t i = next++; i < batches; i = next++) {
                auto verdicts = service.verify_purchase_tacs("mk-tac", batch_at(w, i, batch));
                if (!verdicts) die(verdicts.error().message);
                const std::size_t from = batch_start(i, batch);
                for (std::size_t k = 0; k < batch; ++k)
                    if (verdicts.value()[k] != w.expected[from + k]) ++wrong;
            }
        });
    }
    for (auto& t : pool) t.join();
    return measured_since(start, batches * batch, wrong);
}

// The real daemon, on an ephemeral loopback port.
class DaemonProcess {
public:
    DaemonProcess(const std::string& hsmd, const std::filesystem::path& dir, unsigned threads) {
        const std::string ready = (dir / "ready").string();
        const std::string log = (dir / "hsmd.log").string();
        std::vector<std::string> args = {hsmd,           "serve", "--store",   (dir / "store").string(), "--listen", "127.0.0.1:0",
                                         "--ready-file", ready,   "--threads", std::to_string(threads)};
        std::fflush(nullptr);
        pid_ = ::fork();
        if (pid_ < 0) die("fork failed");
        if (pid_ == 0) {
            const int out = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
            ::dup2(out, 1);
            ::dup2(out, 2);
            std::vector<char*> argv;
            for (auto& a : args) argv.push_back(a.data());
            argv.push_back(nullptr);
            ::execv(argv[0], argv.data());
            std::_Exit(127);
        }
        const auto deadline = Clock::now() + daemon_start_timeout;
        while (Clock::now() < deadline) {
            if (std::filesystem::exists(ready)) {
                std::ifstream in(ready);
                in >> port_;
                return;
            }
            int status = 0;
            if (::waitpid(pid_, &status, WNOHANG) == pid_) die("coconut-hsmd exited; see " + log);
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
        die("coconut-hsmd did not become ready");
    }
    ~DaemonProcess() {
        ::kill(pid_, SIGTERM);
        const auto deadline = Clock::now() + daemon_stop_timeout;
        int status = 0;
        while (Clock::now() < deadline) {
            if (::waitpid(pid_, &status, WNOHANG) == pid_) return;
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &status, 0);
    }
    std::uint16_t port() const { return port_; }

private:
    pid_t pid_ = -1;
    std::uint16_t port_ = 0;
};

Measurement through_daemon(const hsm::wire::Endpoint& endpoint, const hsm::wire::ClientCredentials& credentials, const Workload& w,
                           std::size_t batches, std::size_t batch, std::size_t connections, std::size_t in_flight) {
    boost::asio::io_context io;
    std::vector<std::shared_ptr<hsm::AsyncClient>> clients;
    std::size_t connected = 0;
    std::string failure;
    for (std::size_t c = 0; c < connections; ++c) {
        clients.push_back(hsm::AsyncClient::create(io.get_executor(), credentials));
        clients.back()->async_connect(endpoint, [&](coconut::Status<hsm::Failure> s) {
            if (s) ++connected;
            else failure = s.error().message;
        });
    }
    while (connected + (failure.empty() ? 0 : 1) < connections) io.run_one();
    if (!failure.empty()) die("connect: " + failure);

    // Pre-encoded batches are not used: encoding is part of a real client's cost and is measured.
    std::size_t issued = 0;
    std::size_t done = 0;
    std::size_t wrong = 0;
    std::function<void(std::size_t)> pump = [&](std::size_t c) {
        if (issued >= batches) return;
        const std::size_t index = issued++;
        const auto items = batch_at(w, index, batch);
        hsm::wire::PurchaseTacBatch request{"mk-tac", std::vector<hsm::PurchaseTac>(items.begin(), items.end())};
        clients[c]->async_verify_purchase_tacs(request, [&, c, index](hsm::Outcome<std::vector<hsm::Verdict>> verdicts) {
            if (!verdicts) die("verify: " + verdicts.error().message);
            const std::size_t from = batch_start(index, batch);
            for (std::size_t k = 0; k < batch; ++k)
                if (verdicts.value()[k] != w.expected[from + k]) ++wrong;
            ++done;
            pump(c);
        });
    };
    const auto start = Clock::now();
    for (std::size_t c = 0; c < connections; ++c)
        for (std::size_t f = 0; f < in_flight; ++f) pump(c);
    const auto deadline = start + daemon_run_timeout;
    while (done < batches && Clock::now() < deadline) io.run_one_for(std::chrono::milliseconds(100));
    if (done < batches) die("the daemon run did not finish in time");
    const Measurement m = measured_since(start, batches * batch, wrong);
    for (auto& c : clients) c->close();
    io.run_for(std::chrono::milliseconds(50));
    return m;
}

}  // namespace

int main(int argc, char** argv) {
    std::signal(SIGPIPE, SIG_IGN);
    CLI::App app{"hsm_bench — TAC verifications/s through coconut-hsmd vs in-process"};
    std::size_t batches = 400;
    std::size_t batch = hsm::max_batch_items;
    std::size_t connections = 4;
    std::size_t in_flight = 4;
    unsigned daemon_threads = 2;
    std::string hsmd = COCONUT_HSMD_PATH;
    app.add_option("--batches", batches, "batches per run")->check(CLI::Range(1, 100000))->capture_default_str();
    app.add_option("--batch", batch, "transactions per batch")
        ->check(CLI::Range(1, static_cast<int>(hsm::max_batch_items)))
        ->capture_default_str();
    app.add_option("--connections", connections, "client connections")->check(CLI::Range(1, 64))->capture_default_str();
    app.add_option("--in-flight", in_flight, "batches in flight per connection")->check(CLI::Range(1, 32))->capture_default_str();
    app.add_option("--daemon-threads", daemon_threads, "coconut-hsmd I/O threads (and in-process threads)")
        ->check(CLI::Range(1, 64))
        ->capture_default_str();
    app.add_option("--hsmd", hsmd, "coconut-hsmd executable")->capture_default_str();
    CLI11_PARSE(app, argc, argv);

    const auto dir = std::filesystem::temp_directory_path() / fmt::format("coconut-hsm-bench-{}", ::getpid());
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    if (auto ok = hsm::KeyStore::init(dir / "store"); !ok) die(ok.error().message);
    auto store = hsm::KeyStore::open(dir / "store");
    if (!store) die(store.error().message);
    if (!store->add_key("mk-tac", 1, hsm::KeyType::tdes2, hsm::KeyUsage::tac, tac_master)) die("add key");
    auto client_key = store->add_client("bench", hsm::permit_tac);
    if (!client_key || !store->save()) die("add client");
    const hsm::wire::ClientCredentials credentials{"bench", client_key.value()};
    const hsm::Hsm service(std::make_shared<const hsm::KeyStore>(std::move(store.value())));

    const Workload workload = make_workload();
    const Measurement one = in_process(service, workload, batches, batch, 1);
    const Measurement many = in_process(service, workload, batches, batch, daemon_threads);
    Measurement remote;
    {
        DaemonProcess daemon(hsmd, dir, daemon_threads);
        remote = through_daemon({"127.0.0.1", daemon.port()}, credentials, workload, batches, batch, connections, in_flight);
    }
    std::filesystem::remove_all(dir);

    fmt::print("hsm_bench: purchase TAC verification, {} batches x {} transactions ({} verifications per run), {} cores\n", batches, batch,
               batches * batch, std::thread::hardware_concurrency());
    fmt::print("  {:<44} {:>12.0f} verifications/s  ({:.2f} s)\n", "in-process, 1 thread", one.per_second, one.seconds);
    fmt::print("  {:<44} {:>12.0f} verifications/s  ({:.2f} s)\n", fmt::format("in-process, {} threads", daemon_threads), many.per_second,
               many.seconds);
    fmt::print("  {:<44} {:>12.0f} verifications/s  ({:.2f} s)\n",
               fmt::format("coconut-hsmd ({} threads), {} conn x {} in flight", daemon_threads, connections, in_flight), remote.per_second,
               remote.seconds);
    fmt::print("  ratio daemon / in-process ({} threads): {:.2f}; daemon / in-process (1 thread): {:.2f}\n", daemon_threads,
               remote.per_second / many.per_second, remote.per_second / one.per_second);
    fmt::print("  wrong verdicts: in-process {} + {}, daemon {}\n", one.wrong, many.wrong, remote.wrong);
    fmt::print("  target >= 100,000 verifications/s through the daemon: {}\n", remote.per_second >= 100000 ? "met" : "NOT met");
    return one.wrong + many.wrong + remote.wrong == 0 ? 0 : 1;
}
