// clearingd_bench: durable authorizations per second through the clearing daemon's whole path —
// 64 terminal connections on loopback, ISO 8583 0320 uploads (many in flight per connection), field-62
// parsing, registry reads, TAC verification (in-process HSM: the network HSM is measured by hsm_bench),
// the ledger writer's synced commit and the registry hook — for group commit against commit-per-request
// in the same run, and the latency at a fixed offered load (default 6,000/s: a province's peak × 10).
//
//   clearingd_bench [--connections 64] [--uploads 100000] [--per-request-uploads 3000] [--rate 6000]
//                   [--rate-seconds 10] [--cards-per-connection 1] [--group-delay-us 200]
//                   [--group-linger-below 0] [--writer-cpu auto] [--dir /var/tmp]
//
// Each connection uploads the taps of its own cards (--cards-per-connection, taken in turn, each
// card's offline ATCs in order). With one card per connection a group's card records, card accounts
// and account index rows share few leaf pages; more cards per connection spread them as a province's
// many cards would.
#include <coconut/clearing/clearing.hpp>
#include <coconut/crypto/card_crypto.hpp>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <thread>

#include <pthread.h>

namespace {

using namespace coconut;
using namespace coconut::clearing;
namespace asio = boost::asio;
using asio::ip::tcp;
using Clock = std::chrono::steady_clock;

const std::string tac_master_hex = "404142434445464748494A4B4C4D4E4F";
const std::string issuer_hex = "4600000000000001";

std::string asn_digits(std::size_t card) { return fmt::format("4601{:016d}", card + 1); }

Bytes upload_frame(std::size_t card, std::uint16_t atc, std::uint32_t stan) {
    PurseTransaction t;
    const Bytes asn = *digits_to_bcd(asn_digits(card));
    std::copy(asn.begin(), asn.end(), t.asn.begin());
    t.type = crypto::type_capp_purchase;
    t.balance_before_fen = 90'000'000 - atc;
    t.offline_atc = atc;
    t.terminal_serial = atc + 1u;
    const Bytes terminal = *digits_to_bcd("460100000001");
    std::copy(terminal.begin(), terminal.end(), t.terminal_id.begin());
    const Bytes date = *digits_to_bcd("20261126"), time = *digits_to_bcd("103000");
    std::copy(date.begin(), date.end(), t.when.date.begin());
    std::copy(time.begin(), time.end(), t.when.time.begin());
    crypto::Block issuer{};
    const Bytes issuer_bytes = hex(issuer_hex);
    std::copy(issuer_bytes.begin(), issuer_bytes.end(), issuer.begin());
    const auto dtk = crypto::diversify_card_key(crypto::Key16(hex(tac_master_hex)), issuer, crypto::card_factor_from_asn(t.asn));
    t.tac = crypto::des_mac(crypto::tac_key(dtk), crypto::purchase_tac_input(1, t.type, t.terminal_id, t.terminal_serial, t.when));
    iso8583::Message m("0320");
    m.set(2, asn_digits(card).substr(4));
    m.set(3, "000000");
    m.set_number(4, 1, 12);
    m.set_number(11, stan, 6);
    m.set(25, "08");
    m.set(41, "BUS00001");
    m.set(62, encode_purse_transaction(t));
    return *iso8583::frame(*iso8583::encode(m, iso8583::coconut_dictionary()));
}

struct Daemon {
    std::filesystem::path dir;
    std::unique_ptr<ledger::Ledger> ledger;
    std::unique_ptr<Registry> registry;
    std::unique_ptr<ledger::Writer> writer;
    std::unique_ptr<LocalTacVerifier> verifier;
    std::unique_ptr<Engine> engine;
    asio::io_context io;
    std::unique_ptr<Server> server;
    std::thread thread;

    Daemon(const std::filesystem::path& base, std::size_t cards, std::size_t group_requests_max, std::chrono::microseconds group_delay,
           std::size_t group_linger_below, const std::optional<CpuLayout>& layout, const char* name) {
        dir = base / fmt::format("clearingd-bench-{}-{}", ::getpid(), name);
        std::filesystem::remove_all(dir);
        std::filesystem::create_directories(dir / "data");
        hsm::KeyStore::init(dir / "hsm").value();
        auto store = hsm::KeyStore::open(dir / "hsm");
        store->add_key("mk-tac", 1, hsm::KeyType::tdes2, hsm::KeyUsage::tac, crypto::Key16(hex(tac_master_hex))).value();
        verifier = std::make_unique<LocalTacVerifier>(
            std::make_shared<const hsm::Hsm>(std::make_shared<const hsm::KeyStore>(std::move(store.value()))), "mk-tac");
        ledger::Options options;
        options.directory = (dir / "data").string();
        ledger = std::move(ledger::Ledger::open(options).value());
        registry = std::move(Registry::open(ledger->env()).value());
        std::string json = R"({"participants": [{"id": 1001, "name": "bus", "kind": "bus", "bank_account": "1"}],
            "terminals": [{"terminal_id": "BUS00001", "psam_terminal_id": "460100000001", "participant_id": 1001}], "cards": [)";
        for (std::size_t c = 0; c < cards; ++c) {
            json += fmt::format(R"({}{{"asn": "{}", "issuer_id": "{}", "purse_balance_fen": 90000000}})", c ? "," : "",
                                asn_digits(c), issuer_hex);
        }
        json += "]}";
        auto loaded = load_registry(*ledger, *registry, json);
        if (!loaded) throw std::runtime_error(loaded.error().message);
        ledger::WriterOptions writer_options;
        writer_options.group_requests_max = group_requests_max;
        writer_options.group_delay = group_delay;
        writer_options.group_linger_below = group_linger_below;
        writer_options.group_hooks = registry->group_hooks();
        writer = std::make_unique<ledger::Writer>(*ledger, writer_options);
        if (layout) {
            if (auto pinned = pin_thread(writer->native_handle(), std::array{layout->writer}); !pinned) throw std::runtime_error(pinned.error().message);
        }
        EngineOptions engine_options;
        engine_options.require_sign_on = false;
        engine_options.completion_executor = io.get_executor();
        engine = std::make_unique<Engine>(*ledger, *writer, *registry, *verifier, engine_options);
        server = std::make_unique<Server>(io, *engine, ServerOptions{});
        thread = std::thread([this] { io.run(); });
    }
    ~Daemon() {
        asio::post(io, [this] { server->shutdown([this] { io.stop(); }); });
        thread.join();
        server.reset();
        writer->stop();
        engine.reset();
        writer.reset();
        registry.reset();
        ledger.reset();
        std::filesystem::remove_all(dir);
    }
};

// One terminal connection: sends its frames with at most `window` unanswered (0 rate) or at a fixed
// rate, and records each answer's latency.
struct Terminal : std::enable_shared_from_this<Terminal> {
    tcp::socket socket;
    asio::steady_timer pacer;
    std::vector<Bytes> frames;
    std::vector<Clock::time_point> sent_at;
    std::vector<std::int64_t>& latencies_ns;
    std::size_t next = 0, answered = 0, window = 32;
    std::chrono::nanoseconds interval{0};
    std::chrono::nanoseconds phase{0};  // fixed rate: this connection's offset, so arrivals are spread evenly
    std::vector<asio::const_buffer> queued, in_write;
    bool writing = false;
    Bytes inbox = Bytes(65536);
    std::size_t have = 0;
    std::atomic<std::size_t>& failures;

    Terminal(asio::io_context& io, std::vector<std::int64_t>& lat, std::atomic<std::size_t>& fail)
        : socket(io), pacer(io), latencies_ns(lat), failures(fail) {}

    void start() {
        read();
        if (interval.count() == 0) {
            while (next < frames.size() && next - answered < window) send_one();
        } else {
            pacer.expires_after(phase);
            pace();
        }
    }
    void pace() {
        pacer.async_wait([self = shared_from_this()](boost::system::error_code ec) {
            if (ec || self->next >= self->frames.size()) return;
            self->send_one();
            self->pacer.expires_at(self->pacer.expiry() + self->interval);
            self->pace();
        });
    }
    // Frames go out one gather write at a time (a socket allows one async_write in progress); those
    // due meanwhile wait for the next write.
    void send_one() {
        sent_at[next] = Clock::now();
        queued.emplace_back(asio::buffer(frames[next]));
        ++next;
        if (!writing) flush();
    }
    void flush() {
        writing = true;
        std::swap(queued, in_write);
        queued.clear();
        asio::async_write(socket, in_write, [self = shared_from_this()](boost::system::error_code ec, std::size_t) {
            self->writing = false;
            self->in_write.clear();
            if (!ec && !self->queued.empty()) self->flush();
        });
    }
    // Reads whatever has arrived and handles every complete answer in it.
    void read() {
        if (answered == frames.size()) return;
        if (have == inbox.size()) inbox.resize(inbox.size() * 2);
        socket.async_read_some(asio::buffer(inbox.data() + have, inbox.size() - have),
                               [self = shared_from_this()](boost::system::error_code ec, std::size_t n) {
                                   if (ec) return;
                                   self->have += n;
                                   self->take_answers();
                                   self->read();
                               });
    }
    void take_answers() {
        std::size_t at = 0;
        while (have - at >= 2) {
            const std::size_t size = static_cast<std::size_t>(inbox[at] << 8 | inbox[at + 1]);
            if (have - at < 2 + size) break;
            answer(ByteView(inbox.data() + at + 2, size));
            at += 2 + size;
        }
        std::memmove(inbox.data(), inbox.data() + at, have - at);
        have -= at;
        if (interval.count() == 0) {
            while (next < frames.size() && next - answered < window) send_one();
        }
    }
    void answer(ByteView body) {
        auto m = iso8583::parse(body, iso8583::coconut_dictionary());
        const std::size_t index = m ? static_cast<std::size_t>(*m->get_number(11)) % 1'000'000 : 0;
        if (!m || m->get(39) != std::optional<std::string_view>("00")) failures++;
        // STAN = index within this terminal's frames + 1 (frames are answered in any order).
        if (index >= 1 && index <= frames.size()) {
            latencies_ns.push_back(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - sent_at[index - 1]).count());
        }
        answered++;
    }
};

struct RunResult {
    double per_second = 0;
    double p50_us = 0, p99_us = 0;
    std::size_t count = 0, failures = 0;
    std::uint64_t commits = 0;
    double requests_per_commit = 0, commit_ms = 0;  // the writer's group size and apply+sync time
};

RunResult run(Daemon& daemon, std::size_t connections, std::size_t cards_per_connection, std::size_t per_connection,
              std::uint16_t atc_base, double rate_per_s, std::size_t window) {
    const ledger::WriterStats before = daemon.writer->stats();
    asio::io_context io;
    std::vector<std::vector<std::int64_t>> latencies(connections);
    std::atomic<std::size_t> failures{0};
    std::vector<std::shared_ptr<Terminal>> terminals;
    for (std::size_t c = 0; c < connections; ++c) {
        auto t = std::make_shared<Terminal>(io, latencies[c], failures);
        for (std::size_t i = 0; i < per_connection; ++i) {
            const std::size_t card = c + connections * (i % cards_per_connection);
            const auto atc = static_cast<std::uint16_t>(atc_base + i / cards_per_connection);
            t->frames.push_back(upload_frame(card, atc, static_cast<std::uint32_t>(i + 1)));
        }
        t->sent_at.resize(per_connection);
        t->window = window;
        if (rate_per_s > 0) {
            t->interval = std::chrono::nanoseconds(static_cast<std::int64_t>(1e9 * connections / rate_per_s));
            t->phase = t->interval * static_cast<std::int64_t>(c) / static_cast<std::int64_t>(connections);
        }
        t->socket.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), daemon.server->port()));
        t->socket.set_option(tcp::no_delay(true));
        terminals.push_back(t);
    }
    const auto start = Clock::now();
    for (auto& t : terminals) t->start();
    io.run();
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    std::vector<std::int64_t> all;
    for (auto& l : latencies) all.insert(all.end(), l.begin(), l.end());
    std::sort(all.begin(), all.end());
    RunResult r;
    r.count = all.size();
    r.failures = failures;
    r.per_second = static_cast<double>(all.size()) / seconds;
    const ledger::WriterStats after = daemon.writer->stats();
    r.commits = after.commits - before.commits;
    if (r.commits != 0) {
        r.requests_per_commit = static_cast<double>(after.requests - before.requests) / static_cast<double>(r.commits);
        r.commit_ms = static_cast<double>(after.commit_us_sum - before.commit_us_sum) / 1000.0 / static_cast<double>(r.commits);
    }
    if (!all.empty()) {
        r.p50_us = static_cast<double>(all[all.size() / 2]) / 1000.0;
        r.p99_us = static_cast<double>(all[std::min(all.size() - 1, all.size() * 99 / 100)]) / 1000.0;
    }
    return r;
}

void print(const char* what, const RunResult& r) {
    std::printf("| %-44s | %8zu | %10.0f | %9.0f | %9.0f | %6zu | %7.0f | %6.2f |\n", what, r.count, r.per_second, r.p50_us, r.p99_us,
                r.failures, r.requests_per_commit, r.commit_ms);
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"clearingd_bench: durable authorizations per second through coconut::clearing on loopback"};
    std::size_t connections = 64, uploads = 100'000, per_request_uploads = 3'000, window = 32, cards_per_connection = 1;
    std::size_t group_max = ledger::writer_group_requests_max_default, linger_below = ledger::WriterOptions{}.group_linger_below;
    auto group_delay_us = static_cast<std::uint64_t>(ledger::writer_group_delay_default.count());
    double rate = 6000;
    double rate_seconds = 10;
    std::string dir = "/var/tmp";
    app.add_option("--connections", connections)->capture_default_str()->check(CLI::Range(1, 1000));
    app.add_option("--uploads", uploads, "group-commit run, total")->capture_default_str();
    app.add_option("--window", window, "unanswered uploads per connection (saturated runs)")->capture_default_str()->check(CLI::Range(1, 64));
    app.add_option("--group-max", group_max, "the writer's requests per commit (WriterOptions::group_requests_max)")->capture_default_str();
    app.add_option("--group-delay-us", group_delay_us, "how long the writer waits for more requests (WriterOptions::group_delay)")
        ->capture_default_str();
    app.add_option("--group-linger-below", linger_below, "the writer also waits group_delay when fewer requests queued (WriterOptions::group_linger_below)")
        ->capture_default_str();
    app.add_option("--per-request-uploads", per_request_uploads, "commit-per-request run, total")->capture_default_str();
    app.add_option("--rate", rate, "offered load of the fixed-rate run, per second")->capture_default_str();
    app.add_option("--rate-seconds", rate_seconds, "duration of the fixed-rate run")->capture_default_str();
    app.add_option("--cards-per-connection", cards_per_connection, "cards whose taps each connection uploads, in turn")
        ->capture_default_str()
        ->check(CLI::Range(1, 1000));
    std::string writer_cpu{writer_cpu_default};
    app.add_option("--writer-cpu", writer_cpu,
                   "coconut-clearingd --writer-cpu: the ledger writer alone on this CPU (off, auto or N); the daemon's I/O "
                   "thread and the terminals' on the others")
        ->capture_default_str();
    app.add_option("--dir", dir, "where the ledgers are created (a real disk: the commits are synced)")->capture_default_str();
    CLI11_PARSE(app, argc, argv);
    // Each card's offline ATCs must fit the card's 16-bit counter across the saturated and fixed-rate runs.
    const std::size_t atcs_per_card = (uploads / connections + static_cast<std::size_t>(rate * rate_seconds) / connections) / cards_per_connection + 2;
    if (atcs_per_card > 65'535) {
        std::fprintf(stderr, "clearingd_bench: %zu offline ATCs per card do not fit a card's 16-bit counter: use more --cards-per-connection\n",
                     atcs_per_card);
        return 2;
    }
    const std::size_t cards = connections * cards_per_connection;
    auto layout = plan_cpu_layout(writer_cpu);
    if (!layout) {
        std::fprintf(stderr, "clearingd_bench: %s\n", layout.error().message.c_str());
        return 2;
    }
    // As coconut-clearingd does it: threads started from here on inherit the others' CPUs.
    if (*layout) {
        if (auto pinned = pin_thread(pthread_self(), (*layout)->others); !pinned) {
            std::fprintf(stderr, "clearingd_bench: %s\n", pinned.error().message.c_str());
            return 2;
        }
    }

    std::printf("clearingd_bench, %zu connections, %zu cards, loopback, in-process HSM, synced LMDB commits in %s; %s\n\n", connections,
                cards, dir.c_str(),
                *layout ? fmt::format("ledger writer on CPU {}, every other thread on CPU {}", (*layout)->writer, format_cpus((*layout)->others)).c_str()
                        : "no CPU layout");
    std::printf("| %-44s | %8s | %10s | %9s | %9s | %s | %s | %s |\n", "run", "answers", "per second", "p50 us", "p99 us", "not 00",
                "per commit", "commit ms");
    std::printf("|%s|%s|%s|%s|%s|%s|%s|%s|\n", std::string(46, '-').c_str(), std::string(10, '-').c_str(),
                std::string(12, '-').c_str(), std::string(11, '-').c_str(), std::string(11, '-').c_str(), std::string(8, '-').c_str(),
                std::string(12, '-').c_str(), std::string(11, '-').c_str());
    {
        Daemon daemon(dir, cards, group_max, std::chrono::microseconds(group_delay_us), linger_below, *layout, "group");
        print(fmt::format("group commit, {} in flight per connection", window).c_str(),
              run(daemon, connections, cards_per_connection, uploads / connections, 0, 0, window));
        const auto per_connection = static_cast<std::size_t>(rate * rate_seconds) / connections;
        const auto next_atc = static_cast<std::uint16_t>(uploads / connections / cards_per_connection + 1);
        print(fmt::format("group commit, fixed {:.0f}/s offered", rate).c_str(),
              run(daemon, connections, cards_per_connection, per_connection, next_atc, rate, window));
    }
    {
        Daemon daemon(dir, cards, 1, std::chrono::microseconds(group_delay_us), 0, *layout, "single");
        print(fmt::format("commit per request, {} in flight per connection", window).c_str(),
              run(daemon, connections, cards_per_connection, per_request_uploads / connections, 0, 0, window));
    }
    return 0;
}
