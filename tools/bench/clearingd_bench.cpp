// clearingd_bench: durable authorizations per second through the clearing daemon's whole path —
// 64 terminal connections on loopback, ISO 8583 0320 uploads (many in flight per connection), field-62
// parsing, registry reads, TAC verification (in-process HSM: the network HSM is measured by hsm_bench),
// the ledger writer's synced commit and the registry hook — for group commit against commit-per-request
// in the same run, and the latency at a fixed offered load (default 6,000/s: a province's peak × 10).
//
//   clearingd_bench [--connections 64] [--uploads 100000] [--per-request-uploads 3000] [--rate 6000]
//                   [--rate-seconds 10] [--cards-per-connection 1] [--group-delay-us 200]
//                   [--group-linger-below 0] [--writer-cpu auto] [--dir /var/tmp]
//                   [--tls | --alternate N] [--handshakes 2000]
//   clearingd_bench --connect HOST:PORT [--uploads N] [--rate R --rate-seconds S] [--atc-base A]
//                   [--latency-log FILE]
//   clearingd_bench --write-registry FILE [--connections 64] [--cards-per-connection 1]
//
// --connect: the same terminals, frames and cards against a coconut-clearingd in another process (a
// single node or a cluster's primary: tools/bench/clearingd_cluster_bench.py starts both and runs this),
// which was loaded with the registry --write-registry writes and verifies TACs under the same master.
//
// --tls: the terminals connect over mutual TLS (coconut::tls, as coconut-clearingd serves them: a
// throwaway island CA, a server certificate, one terminal certificate all connections show), then the
// same runs. --alternate N: one daemon listening both ways, N pairs of phases plain ↔ TLS (the order
// swapped every pair, so a drift of the disk or the machine falls on both), each phase the saturated
// and the fixed-rate run; then the TLS/plain ratios per pair and their median, and the handshakes per
// second, full (certificate verification, signatures) and resumed (session ticket). A plain warm-up run
// comes first and is not counted (an empty ledger commits much faster than a filled one). Handshakes are
// measured apart from the uploads: every connection of an upload run is set up before its clock starts.
//
// Each connection uploads the taps of its own cards (--cards-per-connection, taken in turn, each
// card's offline ATCs in order, each run continuing right after the last one, and each claimed balance
// the card's shadow: no risk flags, as in normal traffic). With one card per connection a group's card
// records, card accounts and account index rows share few leaf pages; more cards per connection spread
// them as a province's many cards would.
#include <coconut/core/log.hpp>
#include <coconut/clearing/check.hpp>
#include <coconut/clearing/daemon.hpp>
#include <coconut/clearing/hsm_adapters.hpp>
#include <coconut/clearing/scheduling.hpp>
#include <coconut/clearing/server.hpp>
#include <coconut/crypto/card_crypto.hpp>

#include <coconut/tls/tls.hpp>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <thread>

#include <pthread.h>

namespace {

using namespace coconut;
using namespace coconut::clearing;
namespace asio = boost::asio;
using asio::ip::tcp;
using Clock = std::chrono::steady_clock;
using TlsStream = asio::ssl::stream<tcp::socket>;

const std::string tac_master_hex = "404142434445464748494A4B4C4D4E4F";
const std::string issuer_hex = "4600000000000001";

std::string asn_digits(std::size_t card) { return fmt::format("4601{:016d}", card + 1); }

// The first offline ATC of the run after one that gave each connection `per_connection` taps of its
// `cards_per_connection` cards in turn, from `atc`: right after the highest ATC that run used. A card's
// claimed balance follows its ATC (upload_frame), so a gap would leave every later claim a fen below
// the card's shadow and raise a risk flag on each purchase, which normal traffic does not. Cards that
// got one tap fewer (per_connection not a multiple of cards_per_connection) still skip one ATC.
std::uint16_t atc_after(std::uint16_t atc, std::size_t per_connection, std::size_t cards_per_connection) {
    return static_cast<std::uint16_t>(atc + (per_connection + cards_per_connection - 1) / cards_per_connection);
}

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

// A throwaway island PKI for the TLS runs (in production the CA key stays inside coconut-hsmd): the CA,
// the server's certificate for 127.0.0.1, and the certificate of BUS00001, which every connection shows.
struct Pki {
    std::filesystem::path dir;
    explicit Pki(const std::filesystem::path& where) : dir(where) {
        std::filesystem::create_directories(dir);
        const auto now = std::chrono::system_clock::now();
        const auto ca_key = tls::generate_key().value();
        const auto ca = tls::make_ca_certificate(ca_key, "clearingd_bench CA", now - std::chrono::hours(1), now + std::chrono::hours(48),
                                                 tls::random_serial())
                            .value();
        tls::write_certificate(dir / "ca.pem", ca).value();
        issue(ca, ca_key, tls::Profile::server, "coconut-clearingd", {"IP:127.0.0.1"}, "server");
        issue(ca, ca_key, tls::Profile::terminal, "BUS00001", {}, "terminal");
    }
    void issue(const tls::Certificate& ca, const tls::PrivateKey& ca_key, tls::Profile profile, const std::string& name,
               std::vector<std::string> alt_names, const std::string& file) const {
        const auto key = tls::generate_key().value();
        const auto now = std::chrono::system_clock::now();
        const auto certificate = tls::issue_certificate(tls::make_request(key, {name, "bench"}).value(),
                                                        {profile, name, std::move(alt_names), now - std::chrono::hours(1),
                                                         now + std::chrono::hours(24), tls::random_serial()},
                                                        ca, ca_key)
                                     .value();
        tls::write_private_key(dir / (file + ".key"), key).value();
        tls::write_certificate(dir / (file + ".pem"), certificate).value();
    }
    tls::ServerFiles server() const { return {dir / "ca.pem", dir / "server.pem", dir / "server.key"}; }
    tls::ClientFiles terminal() const { return {dir / "ca.pem", dir / "terminal.pem", dir / "terminal.key"}; }
};

// The registry every run loads: one bus participant, its terminal BUS00001 (PSAM 460100000001) and `cards`
// cards of issuer_hex (asn_digits). --write-registry writes it for a coconut-clearingd started apart
// (`admin load`), so that --connect runs book against the same data as the in-process ones.
std::string registry_json(std::size_t cards) {
    std::string json = R"({"participants": [{"id": 1001, "name": "bus", "kind": "bus", "bank_account": "1"}],
            "terminals": [{"terminal_id": "BUS00001", "psam_terminal_id": "460100000001", "participant_id": 1001}], "cards": [)";
    for (std::size_t c = 0; c < cards; ++c) {
        json +=
            fmt::format(R"({}{{"asn": "{}", "issuer_id": "{}", "purse_balance_fen": 90000000}})", c ? "," : "", asn_digits(c), issuer_hex);
    }
    json += "]}";
    return json;
}

// Where a run's terminals connect, and the writer whose commits it reports (null: a daemon in another
// process, whose group sizes are on its /metrics).
struct Target {
    tcp::endpoint plain;
    tcp::endpoint tls;
    ledger::Writer* writer = nullptr;
};

// coconut-clearingd in process (coconut::clearing::Daemon) with an in-process HSM: a plain TCP listener
// (--insecure-terminals) and, with a PKI, a mutual-TLS one, on the same engine and I/O thread.
struct BenchDaemon {
    std::filesystem::path dir;
    std::unique_ptr<LocalTacVerifier> verifier;
    std::unique_ptr<Daemon> daemon;
    Server* server = nullptr;
    Server* tls_server = nullptr;
    ledger::Writer* writer = nullptr;

    BenchDaemon(const std::filesystem::path& base, std::size_t connections, std::size_t cards, std::size_t group_requests_max,
                std::chrono::microseconds group_delay, std::size_t group_linger_below, const std::optional<CpuLayout>& layout,
                const char* name, const Pki* pki = nullptr) {
        dir = base / fmt::format("clearingd-bench-{}-{}", ::getpid(), name);
        std::filesystem::remove_all(dir);
        std::filesystem::create_directories(dir / "data");
        hsm::KeyStore::init(dir / "hsm").value();
        auto store = hsm::KeyStore::open(dir / "hsm");
        store->add_key("mk-tac", 1, hsm::KeyType::tdes2, hsm::KeyUsage::tac, crypto::Key16(hex(tac_master_hex))).value();
        verifier = std::make_unique<LocalTacVerifier>(std::make_shared<const hsm::Hsm>(
                                                          std::make_shared<const hsm::KeyStore>(std::move(store.value()))),
                                                      "mk-tac");
        daemon = std::move(Daemon::open(options(connections, group_requests_max, group_delay, group_linger_below, layout, pki)).value());
        load_cards(cards);
        if (auto started = daemon->start(); !started) throw std::runtime_error(started.error().message);
        server = &daemon->terminal_server(0);
        if (pki) tls_server = &daemon->terminal_server(1);
        writer = &daemon->writer();
        daemon->run_in_background();
    }
    ~BenchDaemon() {
        daemon.reset();  // drains: the listeners close, the writer commits what was queued
        std::filesystem::remove_all(dir);
    }

    DaemonOptions options(std::size_t connections, std::size_t group_requests_max, std::chrono::microseconds group_delay,
                          std::size_t group_linger_below, const std::optional<CpuLayout>& layout, const Pki* pki) const {
        DaemonOptions o;
        o.data = dir / "data";
        o.writer.group_requests_max = group_requests_max;
        o.writer.group_delay = group_delay;
        o.writer.group_linger_below = group_linger_below;
        o.cpu_layout = layout;
        o.local_hsm = verifier.get();
        o.engine.require_sign_on = false;
        o.terminals.push_back(ServerOptions{});
        if (pki) {
            ServerOptions tls_options;
            tls_options.tls = std::make_shared<asio::ssl::context>(tls::make_server_context(pki->server()).value());
            // Every bench connection shows the one terminal certificate (Pki above), so the daemon's
            // per-terminal limit (a terminal holds one or two connections) would refuse all but its first
            // few: the bench lets that one terminal hold all its connections.
            tls_options.connections_per_terminal = std::max(connections, connections_per_terminal_default);
            o.terminals.push_back(tls_options);
        }
        return o;
    }

    void load_cards(std::size_t cards) {
        auto loaded = load_registry(daemon->ledger(), daemon->registry(), registry_json(cards));
        if (!loaded) throw std::runtime_error(loaded.error().message);
    }

    Target target() const {
        const auto loopback = asio::ip::make_address("127.0.0.1");
        return {tcp::endpoint(loopback, server->port()), tcp::endpoint(loopback, tls_server ? tls_server->port() : 0), writer};
    }
};

// One terminal connection over `Stream` (tcp::socket or TlsStream): sends its frames with at most `window`
// unanswered (0 rate) or at a fixed rate, and records each answer's latency.
template <class Stream>
struct Terminal : std::enable_shared_from_this<Terminal<Stream>> {
    using std::enable_shared_from_this<Terminal<Stream>>::shared_from_this;
    Stream socket;
    asio::steady_timer pacer;
    std::vector<Bytes> frames;
    std::vector<Clock::time_point> sent_at;
    std::vector<std::int64_t>& latencies_ns;
    std::vector<std::int64_t>* answered_sent_ns = nullptr;  // --latency-log: each answer's send time, beside latencies_ns
    std::size_t next = 0, answered = 0, window = 32;
    std::chrono::nanoseconds interval{0};
    std::chrono::nanoseconds phase{0};  // fixed rate: this connection's offset, so arrivals are spread evenly
    std::vector<asio::const_buffer> queued, in_write;
    Bytes coalesced;  // TLS: the frames of one write, contiguous
    bool writing = false;
    Bytes inbox = Bytes(65536);
    std::size_t have = 0;
    std::atomic<std::size_t>& failures;
    std::size_t lost = 0;  // uploads never answered: the daemon closed the connection, or the run stalled
    Clock::time_point last_answer_at{};

    template <class... Context>
    Terminal(asio::io_context& io, std::vector<std::int64_t>& lat, std::atomic<std::size_t>& fail, Context&... context)
        : socket(io, context...), pacer(io), latencies_ns(lat), failures(fail) {}

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
        if constexpr (std::is_same_v<Stream, TlsStream>) {
            // As the daemon does: one buffer, so one TLS record and one send for the frames due together.
            coalesced.clear();
            for (const auto& buffer : in_write) {
                const auto* bytes = static_cast<const std::uint8_t*>(buffer.data());
                coalesced.insert(coalesced.end(), bytes, bytes + buffer.size());
            }
            in_write.assign(1, asio::buffer(coalesced));
        }
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
                                   if (ec) return self->stop();
                                   self->have += n;
                                   self->take_answers();
                                   self->read();
                               });
    }
    // The connection is gone (or the run gave up on it): what is unanswered is lost, and nothing of this
    // terminal stays pending, so the run ends and reports it instead of waiting for answers that cannot come.
    void stop() {
        if (answered + lost < frames.size()) lost = frames.size() - answered;
        next = frames.size();
        pacer.cancel();
        boost::system::error_code ignored;
        socket.lowest_layer().close(ignored);
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
            if (answered_sent_ns) answered_sent_ns->push_back(sent_at[index - 1].time_since_epoch().count());
        }
        answered++;
        last_answer_at = Clock::now();
    }
};

// How the terminals reach the daemon in a run.
struct Transport {
    tls::ClientContext* tls = nullptr;  // null: plain TCP
    const char* name() const { return tls ? "TLS" : "plain"; }
};

// --latency-log: the fixed-rate run's answers one per line, "sent_us latency_us", sent_us counted from the
// run's start, in the order sent. Shows when the slow answers came (a stall delays those sent during it).
std::string latency_log;
bool latency_log_failed = false;  // the exit status is then 2

struct RunResult {
    double per_second = 0;
    double p50_us = 0, p99_us = 0;
    std::size_t count = 0, failures = 0;
    std::size_t lost = 0;  // never answered (closed connections, a stalled run): counted in failures too
    std::uint64_t commits = 0;
    double requests_per_commit = 0, commit_ms = 0;  // the writer's group size and apply+sync time
};

void write_latency_log(Clock::time_point start, const std::vector<std::vector<std::int64_t>>& latencies_ns,
                       const std::vector<std::vector<std::int64_t>>& sent_ns) {
    std::vector<std::pair<std::int64_t, std::int64_t>> rows;  // (sent ns from the start, latency ns)
    for (std::size_t c = 0; c < sent_ns.size(); ++c) {
        for (std::size_t i = 0; i < sent_ns[c].size(); ++i)
            rows.emplace_back(sent_ns[c][i] - start.time_since_epoch().count(), latencies_ns[c][i]);
    }
    std::sort(rows.begin(), rows.end());
    std::ofstream out(latency_log, std::ios::trunc);
    for (const auto& [sent, latency] : rows) out << sent / 1000 << ' ' << latency / 1000 << '\n';
    out.flush();
    if (!out) {
        std::fprintf(stderr, "clearingd_bench: could not write the latency log %s\n", latency_log.c_str());
        latency_log_failed = true;
    }
}

template <class Stream, class... Context>
RunResult run_over(const Target& target, std::size_t connections, std::size_t cards_per_connection, std::size_t per_connection,
                   std::uint16_t atc_base, double rate_per_s, std::size_t window, Context&... context) {
    const ledger::WriterStats before = target.writer ? target.writer->stats() : ledger::WriterStats{};
    asio::io_context io;
    std::vector<std::vector<std::int64_t>> latencies(connections);
    const bool log_latencies = !latency_log.empty() && rate_per_s > 0;
    std::vector<std::vector<std::int64_t>> sent_ns(log_latencies ? connections : 0);
    std::atomic<std::size_t> failures{0};
    std::vector<std::shared_ptr<Terminal<Stream>>> terminals;
    for (std::size_t c = 0; c < connections; ++c) {
        auto t = std::make_shared<Terminal<Stream>>(io, latencies[c], failures, context.context()...);
        for (std::size_t i = 0; i < per_connection; ++i) {
            const std::size_t card = c + connections * (i % cards_per_connection);
            const auto atc = static_cast<std::uint16_t>(atc_base + i / cards_per_connection);
            t->frames.push_back(upload_frame(card, atc, static_cast<std::uint32_t>(i + 1)));
        }
        t->sent_at.resize(per_connection);
        t->window = window;
        if (log_latencies) t->answered_sent_ns = &sent_ns[c];
        if (rate_per_s > 0) {
            t->interval = std::chrono::nanoseconds(static_cast<std::int64_t>(1e9 * connections / rate_per_s));
            t->phase = t->interval * static_cast<std::int64_t>(c) / static_cast<std::int64_t>(connections);
        }
        if constexpr (sizeof...(Context) == 0) {
            t->socket.connect(target.plain);
            t->socket.set_option(tcp::no_delay(true));
        } else {
            (context.prepare(t->socket.native_handle(), "127.0.0.1").value(), ...);
            t->socket.lowest_layer().connect(target.tls);
            t->socket.lowest_layer().set_option(tcp::no_delay(true));
            t->socket.handshake(asio::ssl::stream_base::client);
        }
        terminals.push_back(t);
    }
    const auto start = Clock::now();
    for (auto& t : terminals) t->start();
    // A run that makes no progress for this long is given up (its connections closed, the unanswered
    // uploads counted as lost) rather than left waiting: a stall is a result to report, not to hang on.
    constexpr auto stall_limit = std::chrono::seconds(60);
    asio::steady_timer watchdog(io);
    std::size_t last_answered = 0;
    auto last_progress = Clock::now();
    std::function<void()> watch = [&] {
        watchdog.expires_after(std::chrono::seconds(1));
        watchdog.async_wait([&](boost::system::error_code ec) {
            if (ec) return;
            std::size_t answered = 0, settled = 0;
            for (auto& t : terminals) {
                answered += t->answered;
                settled += t->answered + t->lost;
            }
            if (settled == connections * per_connection) return;
            if (answered != last_answered) {
                last_answered = answered;
                last_progress = Clock::now();
            } else if (Clock::now() - last_progress >= stall_limit) {
                std::fprintf(stderr, "clearingd_bench: no answer for %lld s with %zu of %zu answered: giving up on this run\n",
                             static_cast<long long>(stall_limit.count()), answered, connections * per_connection);
                for (auto& t : terminals) t->stop();
                return;
            }
            watch();
        });
    };
    watch();
    io.run();
    // Up to the last answer: io.run() itself may return up to a second later, at the watchdog's next tick.
    auto end = start;
    for (auto& t : terminals) end = std::max(end, t->last_answer_at);
    const double seconds = std::chrono::duration<double>((end == start ? Clock::now() : end) - start).count();
    if (log_latencies) write_latency_log(start, latencies, sent_ns);
    std::vector<std::int64_t> all;
    for (auto& l : latencies) all.insert(all.end(), l.begin(), l.end());
    std::sort(all.begin(), all.end());
    RunResult r;
    r.count = all.size();
    for (auto& t : terminals) r.lost += t->lost;
    r.failures = failures + r.lost;
    if (r.lost != 0) {
        std::size_t closed = 0;
        for (auto& t : terminals) closed += t->lost != 0;
        std::fprintf(stderr,
                     "clearingd_bench: %zu of %zu uploads never answered, on %zu of %zu connections (closed by the daemon or stalled)\n",
                     r.lost, connections * per_connection, closed, connections);
    }
    r.per_second = static_cast<double>(all.size()) / seconds;
    const ledger::WriterStats after = target.writer ? target.writer->stats() : ledger::WriterStats{};
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

RunResult run(const Target& target, Transport transport, std::size_t connections, std::size_t cards_per_connection,
              std::size_t per_connection, std::uint16_t atc_base, double rate_per_s, std::size_t window) {
    if (transport.tls)
        return run_over<TlsStream>(target, connections, cards_per_connection, per_connection, atc_base, rate_per_s, window, *transport.tls);
    return run_over<tcp::socket>(target, connections, cards_per_connection, per_connection, atc_base, rate_per_s, window);
}

// TLS handshakes per second against the daemon's TLS port, `threads` client threads each connecting,
// handshaking and closing in turn: full ones (no session offered) or resumed ones (the ticket of a
// connection made first). A handshake that does not resume when it should (or the reverse) counts as
// a failure.
struct HandshakeResult {
    double per_second = 0;
    std::size_t count = 0, failures = 0;
};

HandshakeResult handshakes(BenchDaemon& daemon, const Pki& pki, bool resumed, std::size_t count, std::size_t threads) {
    const tcp::endpoint endpoint(asio::ip::make_address("127.0.0.1"), daemon.tls_server->port());
    std::vector<tls::ClientContext> contexts;
    for (std::size_t t = 0; t < threads; ++t) contexts.push_back(tls::ClientContext::create(pki.terminal()).value());
    if (resumed) {
        // One exchange per context takes the server's session ticket (sent after the handshake).
        for (auto& context : contexts) {
            asio::io_context io;
            TlsStream stream(io, context.context());
            context.prepare(stream.native_handle(), "127.0.0.1").value();
            stream.lowest_layer().connect(endpoint);
            stream.handshake(asio::ssl::stream_base::client);
            iso8583::Message echo("0800");
            echo.set(11, "000001");
            echo.set(41, "BUS00001");
            echo.set(70, "301");
            asio::write(stream, asio::buffer(*iso8583::frame(*iso8583::encode(echo, iso8583::coconut_dictionary()))));
            std::array<std::uint8_t, 2> header{};
            asio::read(stream, asio::buffer(header));
            Bytes body(static_cast<std::size_t>(header[0] << 8 | header[1]));
            asio::read(stream, asio::buffer(body));
        }
    }
    std::atomic<std::size_t> failures{0};
    std::vector<std::thread> workers;
    const auto start = Clock::now();
    for (std::size_t t = 0; t < threads; ++t) {
        workers.emplace_back([&, t] {
            asio::io_context io;
            for (std::size_t i = t; i < count; i += threads) {
                if (!resumed) contexts[t].forget_session();
                TlsStream stream(io, contexts[t].context());
                boost::system::error_code ec;
                if (!contexts[t].prepare(stream.native_handle(), "127.0.0.1")) failures++;
                stream.lowest_layer().connect(endpoint, ec);
                if (!ec) stream.handshake(asio::ssl::stream_base::client, ec);
                if (ec || tls::ClientContext::resumed(stream.native_handle()) != resumed) failures++;
                stream.lowest_layer().close(ec);
            }
        });
    }
    for (auto& worker : workers) worker.join();
    HandshakeResult r;
    r.count = count;
    r.failures = failures;
    r.per_second = static_cast<double>(count) / std::chrono::duration<double>(Clock::now() - start).count();
    return r;
}

bool any_lost = false;  // some run had uploads never answered: the exit status is 1

void print(const char* what, const RunResult& r) {
    any_lost = any_lost || r.lost != 0;
    std::printf("| %-44s | %8zu | %10.0f | %9.0f | %9.0f | %6zu | %7.0f | %6.2f |\n", what, r.count, r.per_second, r.p50_us, r.p99_us,
                r.failures, r.requests_per_commit, r.commit_ms);
}

double median(std::vector<double> values) {
    std::sort(values.begin(), values.end());
    return values.empty() ? 0 : values[values.size() / 2];
}

std::string list(const std::vector<double>& values, const char* format) {
    std::string out;
    for (double v : values) out += (out.empty() ? "" : " ") + fmt::format(fmt::runtime(format), v);
    return out;
}

struct Workload {
    std::size_t connections = 0, cards_per_connection = 0, uploads = 0, window = 0, handshakes = 0;
    double rate = 0, rate_seconds = 0;
};

// --alternate: plain and TLS phases on one daemon, the order swapped every pair.
int alternate_phases(const std::string& dir, const Workload& w, std::size_t pairs, std::size_t group_max,
                     std::chrono::microseconds group_delay, std::size_t linger_below, const std::optional<CpuLayout>& layout,
                     const Pki& pki) {
    BenchDaemon daemon(dir, w.connections, w.connections * w.cards_per_connection, group_max, group_delay, linger_below, layout,
                       "alternate", &pki);
    tls::ClientContext client = tls::ClientContext::create(pki.terminal()).value();
    const std::size_t saturated_per_connection = w.uploads / w.connections;
    const auto rate_per_connection = static_cast<std::size_t>(w.rate * w.rate_seconds) / w.connections;
    std::uint16_t atc = 0;
    std::vector<double> ratios, p99_plain, p99_tls, p99_difference;
    // The first commits into an empty ledger are several times cheaper than the rest: a warm-up run, not
    // counted, so the first pair does not compare an empty ledger with a filled one.
    print("0 plain: warm-up (not counted)",
          run(daemon.target(), Transport{}, w.connections, w.cards_per_connection, saturated_per_connection, atc, 0, w.window));
    atc = atc_after(atc, saturated_per_connection, w.cards_per_connection);
    for (std::size_t pair = 0; pair < pairs; ++pair) {
        RunResult saturated[2], fixed[2];  // [0] plain, [1] TLS
        for (int step = 0; step < 2; ++step) {
            const int which = (pair % 2 == 0) ? step : 1 - step;
            const Transport transport{which == 1 ? &client : nullptr};
            saturated[which] =
                run(daemon.target(), transport, w.connections, w.cards_per_connection, saturated_per_connection, atc, 0, w.window);
            atc = atc_after(atc, saturated_per_connection, w.cards_per_connection);
            print(fmt::format("{} {}: group commit, {} in flight", pair + 1, transport.name(), w.window).c_str(), saturated[which]);
            fixed[which] =
                run(daemon.target(), transport, w.connections, w.cards_per_connection, rate_per_connection, atc, w.rate, w.window);
            atc = atc_after(atc, rate_per_connection, w.cards_per_connection);
            print(fmt::format("{} {}: fixed {:.0f}/s offered", pair + 1, transport.name(), w.rate).c_str(), fixed[which]);
        }
        ratios.push_back(saturated[1].per_second / saturated[0].per_second);
        p99_plain.push_back(fixed[0].p99_us);
        p99_tls.push_back(fixed[1].p99_us);
        p99_difference.push_back(fixed[1].p99_us - fixed[0].p99_us);
    }
    std::printf("\nTLS / plain, saturated, per pair: %s; median %.2f\n", list(ratios, "{:.2f}").c_str(), median(ratios));
    std::printf("p99 at %.0f/s offered: plain median %.0f us, TLS median %.0f us; TLS - plain per pair: %s us; median %.0f us\n", w.rate,
                median(p99_plain), median(p99_tls), list(p99_difference, "{:.0f}").c_str(), median(p99_difference));
    if (w.handshakes > 0) {
        constexpr std::size_t threads = 2;  // one per core of the machines this is measured on
        const HandshakeResult full = handshakes(daemon, pki, false, w.handshakes, threads);
        const HandshakeResult resumed = handshakes(daemon, pki, true, w.handshakes, threads);
        std::printf(
            "TLS handshakes (%zu client threads, connect + handshake + close): full %.0f/s, resumed %.0f/s (%zu + %zu failed); "
            "the daemon counted %llu full, %llu resumed, %llu failed in all\n",
            threads, full.per_second, resumed.per_second, full.failures, resumed.failures,
            static_cast<unsigned long long>(daemon.tls_server->stats().tls_handshakes_full.load()),
            static_cast<unsigned long long>(daemon.tls_server->stats().tls_handshakes_resumed.load()),
            static_cast<unsigned long long>(daemon.tls_server->stats().tls_handshake_failures.load()));
    }
    return any_lost ? 1 : 0;
}

// --connect: the runs against a coconut-clearingd in another process (a single node or a cluster's
// primary), plain TCP. The writer's group sizes are not visible from here: read them on its /metrics.
int connect_runs(const std::string& where, const Workload& w, std::size_t atc_base) {
    const auto colon = where.rfind(':');
    boost::system::error_code ec;
    const auto address = asio::ip::make_address(where.substr(0, colon == std::string::npos ? 0 : colon), ec);
    const long port = colon == std::string::npos ? 0 : std::strtol(where.c_str() + colon + 1, nullptr, 10);
    if (ec || port <= 0 || port > 65535) {
        std::fprintf(stderr, "clearingd_bench: --connect %s: expected IPv4-or-IPv6-address:port\n", where.c_str());
        return 2;
    }
    const std::size_t atcs =
        atc_base + (w.uploads + static_cast<std::size_t>(w.rate * w.rate_seconds)) / w.connections / w.cards_per_connection + 2;
    if (atcs > 65'535) {
        std::fprintf(stderr, "clearingd_bench: offline ATCs up to %zu do not fit a card's 16-bit counter\n", atcs);
        return 2;
    }
    const Target target{tcp::endpoint(address, static_cast<std::uint16_t>(port)), {}, nullptr};
    std::printf("clearingd_bench --connect %s, %zu connections, %zu cards, plain TCP, first ATC %zu\n\n", where.c_str(), w.connections,
                w.connections * w.cards_per_connection, atc_base);
    std::printf("| %-44s | %8s | %10s | %9s | %9s | %s |\n", "run", "answers", "per second", "p50 us", "p99 us", "not 00");
    std::printf("|%s|%s|%s|%s|%s|%s|\n", std::string(46, '-').c_str(), std::string(10, '-').c_str(), std::string(12, '-').c_str(),
                std::string(11, '-').c_str(), std::string(11, '-').c_str(), std::string(8, '-').c_str());
    auto atc = static_cast<std::uint16_t>(atc_base);
    auto show = [](const std::string& what, const RunResult& r) {
        any_lost = any_lost || r.lost != 0;
        std::printf("| %-44s | %8zu | %10.0f | %9.0f | %9.0f | %6zu |\n", what.c_str(), r.count, r.per_second, r.p50_us, r.p99_us,
                    r.failures);
        std::fflush(stdout);
    };
    if (w.uploads > 0) {
        const std::size_t per_connection = w.uploads / w.connections;
        show(fmt::format("group commit, {} in flight per connection", w.window),
             run(target, Transport{}, w.connections, w.cards_per_connection, per_connection, atc, 0, w.window));
        atc = atc_after(atc, per_connection, w.cards_per_connection);
    }
    if (w.rate > 0 && w.rate_seconds > 0) {
        const auto per_connection = static_cast<std::size_t>(w.rate * w.rate_seconds) / w.connections;
        show(fmt::format("fixed {:.0f}/s offered", w.rate),
             run(target, Transport{}, w.connections, w.cards_per_connection, per_connection, atc, w.rate, w.window));
    }
    if (latency_log_failed) return 2;
    return any_lost ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"clearingd_bench: durable authorizations per second through coconut::clearing on loopback"};
    // Warnings and errors only: an access line per request would measure the log, not the daemon.
    coconut::log::Settings log_settings;
    log_settings.level = coconut::log::Level::warning;
    coconut::log::configure(log_settings);
    std::size_t connections = 64, uploads = 100'000, per_request_uploads = 3'000, window = 32, cards_per_connection = 1;
    std::size_t group_max = ledger::writer_group_requests_max_default, linger_below = ledger::WriterOptions{}.group_linger_below;
    auto group_delay_us = static_cast<std::uint64_t>(ledger::writer_group_delay_default.count());
    double rate = 6000;
    double rate_seconds = 10;
    std::string dir = "/var/tmp";
    app.add_option("--connections", connections)->capture_default_str()->check(CLI::Range(1, 1000));
    app.add_option("--uploads", uploads, "group-commit run, total")->capture_default_str();
    app.add_option("--window", window, "unanswered uploads per connection (saturated runs)")
        ->capture_default_str()
        ->check(CLI::Range(1, 64));
    app.add_option("--group-max", group_max, "the writer's requests per commit (WriterOptions::group_requests_max)")->capture_default_str();
    app.add_option("--group-delay-us", group_delay_us, "how long the writer waits for more requests (WriterOptions::group_delay)")
        ->capture_default_str();
    app.add_option("--group-linger-below", linger_below,
                   "the writer also waits group_delay when fewer requests queued (WriterOptions::group_linger_below)")
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
    bool use_tls = false;
    std::size_t alternate = 0, handshake_count = 2000;
    auto* tls_flag = app.add_flag("--tls", use_tls, "the terminals connect over mutual TLS (as coconut-clearingd serves them)");
    app.add_option("--alternate", alternate, "pairs of phases plain ↔ TLS on one daemon, then the ratios and handshakes/s")
        ->check(CLI::Range(1, 50))
        ->excludes(tls_flag);
    app.add_option("--handshakes", handshake_count, "--alternate: TLS handshakes measured, full and resumed each (0: none)")
        ->capture_default_str();
    std::string connect, registry_out;
    std::size_t atc_base = 0;
    auto* connect_option =
        app.add_option("--connect", connect,
                       "HOST:PORT of a coconut-clearingd started apart (plain TCP, --allow-without-sign-on, the cards of "
                       "--write-registry loaded): the group-commit run (skipped with --uploads 0) and the fixed-rate run "
                       "(skipped with --rate 0) against it")
            ->excludes(tls_flag);
    app.add_option("--atc-base", atc_base, "--connect: the first offline ATC of each card (continue an earlier run on the same ledger)")
        ->capture_default_str()
        ->check(CLI::Range(0, 65'000));
    app.add_option("--latency-log", latency_log,
                   "--connect: write the fixed-rate run's answers to this file, one per line: sent_us (from the run's start) "
                   "latency_us")
        ->needs(connect_option);
    app.add_option("--write-registry", registry_out,
                   "write the registry the runs use (for `coconut-clearingd admin load`: --connections × "
                   "--cards-per-connection cards) to this file and exit");
    CLI11_PARSE(app, argc, argv);
    if (!registry_out.empty()) {
        std::ofstream out(registry_out, std::ios::trunc);
        out << registry_json(connections * cards_per_connection);
        return out.good() ? 0 : 2;
    }
    if (!latency_log.empty() && !std::ofstream(latency_log, std::ios::trunc)) {
        std::fprintf(stderr, "clearingd_bench: --latency-log %s: cannot write this file\n", latency_log.c_str());
        return 2;
    }
    if (!connect.empty()) {
        if (alternate > 0) {
            std::fprintf(stderr, "clearingd_bench: --connect runs plain TCP only (no --alternate)\n");
            return 2;
        }
        return connect_runs(connect, Workload{connections, cards_per_connection, uploads, window, 0, rate, rate_seconds}, atc_base);
    }
    // Each card's offline ATCs must fit the card's 16-bit counter across the saturated and fixed-rate runs.
    const std::size_t phases = alternate > 0 ? 2 * alternate + 1 : 1;
    const std::size_t atcs_per_card =
        phases * ((uploads / connections + static_cast<std::size_t>(rate * rate_seconds) / connections) / cards_per_connection + 2);
    if (atcs_per_card > 65'535) {
        std::fprintf(stderr,
                     "clearingd_bench: %zu offline ATCs per card do not fit a card's 16-bit counter: use more --cards-per-connection\n",
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

    std::unique_ptr<Pki> pki;
    std::optional<tls::ClientContext> client;
    if (use_tls || alternate > 0) {
        pki = std::make_unique<Pki>(std::filesystem::path(dir) / fmt::format("clearingd-bench-{}-pki", ::getpid()));
        client.emplace(tls::ClientContext::create(pki->terminal()).value());
    }
    struct RemovePki {
        const std::unique_ptr<Pki>& pki;
        ~RemovePki() {
            std::error_code ignored;
            if (pki) std::filesystem::remove_all(pki->dir, ignored);
        }
    } remove_pki{pki};
    const Transport transport{use_tls ? &*client : nullptr};

    std::printf(
        "clearingd_bench, %zu connections, %zu cards, loopback, %s, in-process HSM, synced LMDB commits in %s; %s\n\n", connections, cards,
        alternate > 0 ? "plain TCP and mutual TLS alternated"
        : use_tls     ? "mutual TLS"
                      : "plain TCP",
        dir.c_str(),
        *layout
            ? fmt::format("ledger writer on CPU {}, every other thread on CPU {}", (*layout)->writer, format_cpus((*layout)->others)).c_str()
            : "no CPU layout");
    std::printf("| %-44s | %8s | %10s | %9s | %9s | %s | %s | %s |\n", "run", "answers", "per second", "p50 us", "p99 us", "not 00",
                "per commit", "commit ms");
    std::printf("|%s|%s|%s|%s|%s|%s|%s|%s|\n", std::string(46, '-').c_str(), std::string(10, '-').c_str(), std::string(12, '-').c_str(),
                std::string(11, '-').c_str(), std::string(11, '-').c_str(), std::string(8, '-').c_str(), std::string(12, '-').c_str(),
                std::string(11, '-').c_str());
    if (alternate > 0) {
        const Workload workload{connections, cards_per_connection, uploads, window, handshake_count, rate, rate_seconds};
        return alternate_phases(dir, workload, alternate, group_max, std::chrono::microseconds(group_delay_us), linger_below, *layout,
                                *pki);
    }
    {
        BenchDaemon daemon(dir, connections, cards, group_max, std::chrono::microseconds(group_delay_us), linger_below, *layout, "group",
                           pki.get());
        print(fmt::format("group commit, {} in flight per connection", window).c_str(),
              run(daemon.target(), transport, connections, cards_per_connection, uploads / connections, 0, 0, window));
        const auto per_connection = static_cast<std::size_t>(rate * rate_seconds) / connections;
        const auto next_atc = atc_after(0, uploads / connections, cards_per_connection);
        print(fmt::format("group commit, fixed {:.0f}/s offered", rate).c_str(),
              run(daemon.target(), transport, connections, cards_per_connection, per_connection, next_atc, rate, window));
    }
    {
        BenchDaemon daemon(dir, connections, cards, 1, std::chrono::microseconds(group_delay_us), 0, *layout, "single", pki.get());
        print(fmt::format("commit per request, {} in flight per connection", window).c_str(),
              run(daemon.target(), transport, connections, cards_per_connection, per_request_uploads / connections, 0, 0, window));
    }
    return any_lost ? 1 : 0;
}
