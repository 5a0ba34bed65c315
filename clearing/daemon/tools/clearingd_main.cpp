// coconut-clearingd: serve (ISO 8583 for terminals), check (every invariant of a data directory),
// admin (registries). Usage, options and exit codes: clearing/README.md.
#include <coconut/clearing/check.hpp>
#include <coconut/clearing/engine.hpp>
#include <coconut/clearing/hsm_adapters.hpp>
#include <coconut/clearing/registry.hpp>
#include <coconut/clearing/scheduling.hpp>
#include <coconut/clearing/server.hpp>
#include <coconut/clearing/http.hpp>
#include <coconut/core/admission.hpp>
#include <coconut/tls/tls.hpp>

#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <pthread.h>
#include <sys/file.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <ctime>
#include <iostream>
#include <sstream>
#include <thread>

namespace {

using namespace coconut;
using namespace coconut::clearing;
using nlohmann::json;

// Exit codes (clearing/README.md).
constexpr int exit_ok = 0;
constexpr int exit_check_failed = 1;  // `check`: an invariant does not hold (also: internal error)
constexpr int exit_usage = 2;
constexpr int exit_locked = 3;        // another coconut-clearingd serves (or administers) this directory
constexpr int exit_storage = 4;       // the data directory cannot be opened or written
constexpr int exit_bad_input = 5;     // registry file / argument invalid or contradicting the registry
constexpr int exit_listen = 6;        // the ISO 8583 address cannot be bound
constexpr int exit_hsm_key = 7;       // the HSM client key file is missing or malformed

int fail(int code, const std::string& message) {
    std::cerr << "coconut-clearingd: " << message << "\n";
    return code;
}

int exit_for(const Error& e) {
    switch (e.code) {
        case ErrorCode::bad_input:
        case ErrorCode::conflict: return exit_bad_input;
        case ErrorCode::locked: return exit_locked;
        case ErrorCode::storage: return exit_storage;
    }
    return exit_storage;
}

// An exclusive flock on DIR/clearingd.lock: the ledger keeps its journal head in memory, so only one
// process may write a data directory. Released when the process exits.
class DirectoryLock {
public:
    static coconut::Result<DirectoryLock, std::string> acquire(const std::filesystem::path& dir) {
        const auto path = dir / "clearingd.lock";
        const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (fd < 0) return Unexpected<std::string>{fmt::format("cannot open {}: {}", path.string(), std::strerror(errno))};
        if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
            ::close(fd);
            return Unexpected<std::string>{fmt::format("{} is in use by another coconut-clearingd (serve or admin); stop it first",
                                                       dir.string())};
        }
        return DirectoryLock(fd);
    }
    DirectoryLock(DirectoryLock&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
    DirectoryLock& operator=(DirectoryLock&&) = delete;
    ~DirectoryLock() {
        if (fd_ >= 0) ::close(fd_);
    }

private:
    explicit DirectoryLock(int fd) : fd_(fd) {}
    int fd_ = -1;
};

struct Opened {
    std::unique_ptr<ledger::Ledger> ledger;
    std::unique_ptr<Registry> registry;
};

// The LMDB map every command of this process opens the ledger with (--map-size). The file is sparse:
// the map only bounds how large the ledger may grow before writes fail with "map full".
std::size_t map_size_bytes = ledger::map_size_bytes_default;

// "64GiB", "512MiB", "1TiB" or a number of bytes; between 1 MiB and 16 TiB.
coconut::Result<std::size_t, std::string> parse_map_size(const std::string& text) {
    std::size_t digits = 0;
    while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') ++digits;
    const std::string unit = text.substr(digits);
    std::uint64_t shift = 0;
    if (unit == "KiB") shift = 10;
    else if (unit == "MiB") shift = 20;
    else if (unit == "GiB") shift = 30;
    else if (unit == "TiB") shift = 40;
    else if (!unit.empty()) return Unexpected<std::string>{"unit must be KiB, MiB, GiB or TiB (or none: bytes)"};
    if (digits == 0 || digits > 15) return Unexpected<std::string>{"expected a number, e.g. 64GiB"};
    const std::uint64_t bytes = std::stoull(text.substr(0, digits)) << shift;
    constexpr std::uint64_t min = std::uint64_t{1} << 20, max = std::uint64_t{16} << 40;
    if (bytes < min || bytes > max || (bytes >> shift) != std::stoull(text.substr(0, digits))) {
        return Unexpected<std::string>{"must be between 1MiB and 16TiB"};
    }
    return static_cast<std::size_t>(bytes);
}

coconut::Result<Opened, std::string> open_data(const std::string& dir, bool create) {
    std::error_code ec;
    if (create) std::filesystem::create_directories(dir, ec);
    if (!std::filesystem::is_directory(dir)) return Unexpected<std::string>{fmt::format("data directory {} does not exist", dir)};
    ledger::Options options;
    options.directory = dir;
    options.map_size_bytes = map_size_bytes;
    auto opened = ledger::Ledger::open(options);
    if (!opened) return Unexpected<std::string>{fmt::format("cannot open the ledger in {}: {}", dir, opened.error().message)};
    auto registry = Registry::open(opened.value()->env());
    if (!registry) return Unexpected<std::string>{registry.error().message};
    return Opened{std::move(opened).value(), std::move(registry).value()};
}

// ---- serve ----------------------------------------------------------------------------------------------

// Writes "PORT\n" to `path` through a rename, so a reader never sees a partial file.
bool write_port_file(const std::string& path, std::uint16_t port) {
    const std::string temp = path + ".tmp";
    std::ofstream out(temp, std::ios::trunc);
    out << port << "\n";
    out.close();
    return out && std::rename(temp.c_str(), path.c_str()) == 0;
}

struct ServeOptions {
    std::string iso_listen = "127.0.0.1:8583";
    std::string data;
    std::string hsm = "127.0.0.1:7501";
    std::string hsm_key;
    std::string tac_key = std::string(hsm::default_tac_label);
    // The HSM link (clearing/README.md "The HSM link").
    std::uint32_t hsm_timeout_ms = static_cast<std::uint32_t>(RemoteHsmOptions{}.timeout.count());
    std::uint32_t hsm_keepalive_s =
        static_cast<std::uint32_t>(std::chrono::duration_cast<std::chrono::seconds>(RemoteHsmOptions{}.keepalive_interval).count());
    std::uint32_t hsm_breaker_cooldown_ms = static_cast<std::uint32_t>(RemoteHsmOptions{}.breaker_cooldown.count());
    std::size_t hsm_connections = RemoteHsmOptions{}.connections_max;
    std::string ready_file;
    std::size_t connections_max = connections_max_default;
    std::size_t connections_per_address = connections_per_address_default;
    std::size_t connections_per_terminal = connections_per_terminal_default;
    std::uint32_t sign_on_timeout_s = static_cast<std::uint32_t>(sign_on_timeout_default.count());
    std::size_t in_flight_max = in_flight_per_connection_max_default;
    std::uint32_t read_idle_timeout_s = static_cast<std::uint32_t>(read_idle_timeout_default.count());
    std::uint32_t group_delay_us = static_cast<std::uint32_t>(ledger::writer_group_delay_default.count());
    std::size_t group_requests_max = ledger::writer_group_requests_max_default;
    std::size_t group_linger_below = ledger::WriterOptions{}.group_linger_below;
    std::string writer_cpu{writer_cpu_default};
    bool allow_without_sign_on = false;
    // TLS for terminals (clearing/README.md "TLS for terminals"): all three, or --insecure-terminals.
    std::string tls_cert;
    std::string tls_key;
    std::string tls_ca;
    bool insecure_terminals = false;
    std::uint32_t handshake_timeout_s = static_cast<std::uint32_t>(handshake_timeout_default.count());
    EngineOptions engine;
    // HTTP API (clearing/README.md "HTTP API"); empty http_listen: no HTTP port.
    std::string http_listen;
    std::string http_tls_cert;
    std::string http_tls_key;
    std::size_t http_connections_max = http::http_connections_max_default;
    std::size_t http_connections_per_address = http::http_connections_per_address_default;
    double token_requests_per_s = http::token_requests_per_s_default;
    double address_failures_per_s = http::address_failures_per_s_default;
    std::string http_priority{http::http_thread_priority_default};
    std::string http_ready_file;
    unsigned settlement_margin_s = static_cast<unsigned>(http::settlement_margin_default.count());
};

// The ISO 8583 listener's TLS context, or nullptr with --insecure-terminals. A usage error when neither
// or both are asked for, or when the TLS files are incomplete.
clearing::Result<std::shared_ptr<boost::asio::ssl::context>> terminal_tls(const ServeOptions& o) {
    const bool any_file = !o.tls_cert.empty() || !o.tls_key.empty() || !o.tls_ca.empty();
    if (o.insecure_terminals && any_file)
        return Unexpected<Error>{{ErrorCode::bad_input, "--insecure-terminals and --tls-cert/--tls-key/--tls-ca exclude each other"}};
    if (o.insecure_terminals) return std::shared_ptr<boost::asio::ssl::context>();
    if (o.tls_cert.empty() || o.tls_key.empty() || o.tls_ca.empty())
        return Unexpected<Error>{{ErrorCode::bad_input,
                                  "terminals connect over mutual TLS: give --tls-cert, --tls-key and --tls-ca (the island CA), or "
                                  "--insecure-terminals for plain TCP (local development only)"}};
    auto context = tls::make_server_context({o.tls_ca, o.tls_cert, o.tls_key});
    if (!context) return Unexpected<Error>{{ErrorCode::bad_input, "TLS for terminals: " + context.error().message}};
    return std::make_shared<boost::asio::ssl::context>(std::move(context).value());
}

int serve(const ServeOptions& o) {
    auto listen = hsm::wire::parse_endpoint(o.iso_listen, true);
    if (!listen) return fail(exit_usage, "--iso-listen: " + listen.error().message);
    auto terminal_context = terminal_tls(o);
    if (!terminal_context) return fail(exit_usage, terminal_context.error().message);
    auto hsm_endpoint = hsm::wire::parse_endpoint(o.hsm);
    if (!hsm_endpoint) return fail(exit_usage, "--hsm: " + hsm_endpoint.error().message);
    auto layout = plan_cpu_layout(o.writer_cpu);
    if (!layout) return fail(exit_usage, layout.error().message);
    auto credentials = hsm::wire::read_client_credentials(o.hsm_key);
    if (!credentials) return fail(exit_hsm_key, "--hsm-key: " + credentials.error().message);
    // Every connection costs a descriptor: the soft limit (often 1,024) is below the connection limits.
    const std::uint64_t open_files = core::raise_open_file_limit();
    std::error_code ec;
    std::filesystem::create_directories(o.data, ec);
    auto lock = DirectoryLock::acquire(o.data);
    if (!lock) return fail(exit_locked, lock.error());
    auto data = open_data(o.data, true);
    if (!data) return fail(exit_storage, data.error());
    auto tokens = http::Tokens::open(data->ledger->env(), o.data);
    if (!tokens) return fail(exit_storage, tokens.error().message);
    // The fixed accounts exist from the first start (idempotent: `exists` afterwards).
    const auto fixed = fixed_accounts();
    std::vector<ledger::Event> events(fixed.begin(), fixed.end());
    if (auto applied = data->ledger->apply(events); !applied) return fail(exit_storage, applied.error().message);

    ledger::WriterOptions writer_options;
    writer_options.group_delay = std::chrono::microseconds(o.group_delay_us);
    writer_options.group_requests_max = o.group_requests_max;
    writer_options.group_linger_below = o.group_linger_below;
    writer_options.group_hooks = data->registry->group_hooks();
    // With a CPU layout every thread started from here on (the writer first, then the HTTP thread)
    // inherits the others' CPUs, and the writer alone moves to its own.
    if (*layout) {
        if (auto pinned = pin_thread(pthread_self(), (*layout)->others); !pinned) return fail(exit_usage, "--writer-cpu: " + pinned.error().message);
    }
    ledger::Writer writer(*data->ledger, writer_options);
    if (*layout) {
        if (auto pinned = pin_thread(writer.native_handle(), std::array{(*layout)->writer}); !pinned) {
            return fail(exit_usage, "--writer-cpu: " + pinned.error().message);
        }
    }

    boost::asio::io_context io(1);
    RemoteHsmOptions hsm_link;
    hsm_link.timeout = std::chrono::milliseconds(o.hsm_timeout_ms);
    hsm_link.keepalive_interval = std::chrono::seconds(o.hsm_keepalive_s);
    hsm_link.breaker_cooldown = std::chrono::milliseconds(o.hsm_breaker_cooldown_ms);
    hsm_link.connections_max = o.hsm_connections;
    RemoteHsm verifier(io.get_executor(), *hsm_endpoint, std::move(credentials).value(), o.tac_key, hsm_link);
    EngineOptions engine_options = o.engine;
    engine_options.require_sign_on = !o.allow_without_sign_on;
    engine_options.tac_key_label = o.tac_key;
    engine_options.completion_executor = io.get_executor();  // answers are built on the I/O thread
    http::MeteredHsm metered_hsm(verifier, verifier);
    Engine engine(*data->ledger, writer, *data->registry, metered_hsm, metered_hsm, engine_options);
    ServerOptions server_options;
    server_options.host = listen->host;
    server_options.port = listen->port;
    server_options.connections_max = o.connections_max;
    server_options.connections_per_address = o.connections_per_address;
    server_options.connections_per_terminal = o.connections_per_terminal;
    server_options.sign_on_timeout = std::chrono::seconds(o.sign_on_timeout_s);
    server_options.in_flight_per_connection_max = o.in_flight_max;
    server_options.read_idle_timeout = std::chrono::seconds(o.read_idle_timeout_s);
    server_options.tls = *terminal_context;
    server_options.handshake_timeout = std::chrono::seconds(o.handshake_timeout_s);
    std::unique_ptr<Server> server;
    try {
        server = std::make_unique<Server>(io, engine, server_options);
    } catch (const std::system_error& e) {
        return fail(exit_listen, fmt::format("cannot listen on {}: {}", o.iso_listen, e.what()));
    }

    // The HTTP API on a thread and io_context of its own: a slow query never delays a terminal.
    boost::asio::io_context http_io(1);
    std::unique_ptr<http::HttpServer> http_server;
    if (!o.http_listen.empty()) {
        auto http_endpoint = hsm::wire::parse_endpoint(o.http_listen, true);
        if (!http_endpoint) return fail(exit_usage, "--http-listen: " + http_endpoint.error().message);
        http::HttpOptions http_options;
        http_options.host = http_endpoint->host;
        http_options.port = http_endpoint->port;
        http_options.connections_max = o.http_connections_max;
        http_options.connections_per_address = o.http_connections_per_address;
        http_options.token_requests_per_s = o.token_requests_per_s;
        http_options.token_burst = std::max(http::token_burst_default, o.token_requests_per_s);
        http_options.address_failures_per_s = o.address_failures_per_s;
        http_options.address_failure_burst = std::max(http::address_failure_burst_default, o.address_failures_per_s);
        http_options.tls_certificate = o.http_tls_cert;
        http_options.tls_private_key = o.http_tls_key;
        http_options.settlement_margin = std::chrono::seconds(o.settlement_margin_s);
        http::Services services{*data->ledger, writer, *data->registry, **tokens, &engine.stats(), &server->stats(),
                                &metered_hsm.stats(), &verifier.link_stats()};
        try {
            http_server = std::make_unique<http::HttpServer>(http_io, services, http_options);
        } catch (const std::exception& e) {
            return fail(exit_listen, fmt::format("cannot serve HTTP on {}: {}", o.http_listen, e.what()));
        }
    }
    auto http_work = boost::asio::make_work_guard(http_io);
    std::thread http_thread([&] {
        ::pthread_setname_np(::pthread_self(), "clearingd-http");
        // Bookings before balance queries (http.hpp ThreadPriority); checked when parsing the options.
        if (auto lowered = http::lower_thread_priority(*http::parse_thread_priority(o.http_priority)); !lowered) {
            std::cerr << "coconut-clearingd: the HTTP thread keeps the daemon's priority: " << lowered.error().message << "\n";
        }
        http_io.run();
    });
    struct JoinHttp {
        boost::asio::io_context& io;
        std::thread& thread;
        ~JoinHttp() {
            io.stop();
            if (thread.joinable()) thread.join();
        }
    } join_http{http_io, http_thread};

    // SIGTERM / SIGINT: stop accepting and reading, answer every request in hand (its booking
    // committed), then exit. A second signal or the drain timeout stops at once.
    boost::asio::signal_set signals(io, SIGINT, SIGTERM);
    boost::asio::steady_timer drain_deadline(io);
    bool draining = false;
    std::function<void(const boost::system::error_code&, int)> on_signal = [&](const boost::system::error_code& error, int signal) {
        if (error) return;
        if (draining) {
            std::cerr << "coconut-clearingd: second signal, stopping now\n";
            io.stop();
            return;
        }
        draining = true;
        std::cerr << fmt::format("coconut-clearingd: signal {}, finishing the requests in hand\n", signal);
        if (http_server) http_server->shutdown();
        server->shutdown([&] {
            verifier.close();
            io.stop();
        });
        drain_deadline.expires_after(drain_timeout_default);
        drain_deadline.async_wait([&](boost::system::error_code timer_error) {
            if (timer_error) return;
            std::cerr << "coconut-clearingd: drain timeout, stopping with requests unanswered (none is acknowledged)\n";
            io.stop();
        });
        signals.async_wait(on_signal);
    };
    signals.async_wait(on_signal);

    // Loads and holds released by the ledger's timeout: counted and logged once a second.
    boost::asio::steady_timer expiry_timer(io);
    std::function<void(boost::system::error_code)> scan_expiries = [&](boost::system::error_code timer_error) {
        if (timer_error || draining) return;
        if (auto found = engine.scan_expiries(); !found) std::cerr << "coconut-clearingd: expiry scan: " << found.error().message << "\n";
        expiry_timer.expires_after(std::chrono::seconds(1));
        expiry_timer.async_wait(scan_expiries);
    };
    scan_expiries({});

    // The HTTP port first: whoever waits for the ISO 8583 ready file finds both.
    if (http_server && !o.http_ready_file.empty() && !write_port_file(o.http_ready_file, http_server->port())) {
        return fail(exit_storage, "cannot write the HTTP ready file " + o.http_ready_file);
    }
    if (!o.ready_file.empty() && !write_port_file(o.ready_file, server->port())) {
        return fail(exit_storage, "cannot write the ready file " + o.ready_file);
    }
    std::cout << fmt::format("coconut-clearingd: listening on {}:{} (data {}, HSM {}:{})\n", listen->host, server->port(),
                             o.data, hsm_endpoint->host, hsm_endpoint->port);
    std::cout << (server_options.tls ? fmt::format("coconut-clearingd: terminals over mutual TLS (client certificates of the CA in {})\n",
                                                   o.tls_ca)
                                     : std::string("coconut-clearingd: terminals over PLAIN TCP (--insecure-terminals): any "
                                                   "peer may claim any terminal id\n"));
    std::cout << fmt::format("coconut-clearingd: open-file limit {}; terminal connections at most {} ({} per address, {} per "
                             "terminal), {}\n",
                             open_files, o.connections_max, o.connections_per_address, o.connections_per_terminal,
                             o.allow_without_sign_on  ? std::string("no sign-on required")
                             : o.sign_on_timeout_s == 0 ? std::string("no sign-on deadline")
                                                        : fmt::format("sign-on within {} s", o.sign_on_timeout_s));
    if (*layout) {
        std::cout << fmt::format("coconut-clearingd: ledger writer on CPU {}, other threads on CPU {}\n", (*layout)->writer,
                                 format_cpus((*layout)->others));
    }
    if (http_server) {
        std::cout << fmt::format("coconut-clearingd: HTTP{} on {}:{}\n", http_server->tls() ? "S" : "", o.http_listen.substr(0, o.http_listen.rfind(':')),
                                 http_server->port());
    }
    std::cout << std::flush;
    io.run();
    http_io.stop();
    http_thread.join();
    http_server.reset();
    const ServerStats& tls_stats = server->stats();
    const std::string tls_summary =
        fmt::format("coconut-clearingd: TLS handshakes: {} full, {} resumed, {} failed\n", tls_stats.tls_handshakes_full.load(),
                    tls_stats.tls_handshakes_resumed.load(), tls_stats.tls_handshake_failures.load());
    server.reset();
    writer.stop();  // commits whatever was queued (no answer can reach anybody now; a retry answers `exists`)
    const auto& s = engine.stats();
    std::cerr << fmt::format("coconut-clearingd: stopped: {} requests, {} booked, {} repeats, {} suspense, {} duplicates, "
                             "{} refused; loads {} approved {} confirmed {} expired; holds {} approved {} completed {} expired; "
                             "{} reversals\n",
                             s.requests.load(), s.booked.load(), s.exists.load(), s.suspense.load(), s.duplicates.load(),
                             s.refused.load(), s.loads_approved.load(), s.loads_confirmed.load(), s.loads_expired.load(),
                             s.holds_approved.load(), s.completions.load(), s.holds_expired.load(), s.reversals.load());
    if (server_options.tls) std::cerr << tls_summary;
    return exit_ok;
}

// ---- check ----------------------------------------------------------------------------------------------

int run_check(const std::string& dir, bool as_json) {
    auto data = open_data(dir, false);
    if (!data) return fail(exit_storage, data.error());
    auto report = check(*data->ledger, *data->registry);
    if (!report) return fail(exit_for(report.error()), report.error().message);
    std::vector<std::string> problems = report->ledger.problems;
    problems.insert(problems.end(), report->problems.begin(), report->problems.end());
    if (as_json) {
        std::cout << json{{"ok", report->ok()},
                          {"accounts", report->ledger.accounts},
                          {"transfers", report->ledger.transfers},
                          {"journal_entries", report->ledger.journal_entries},
                          {"pending_open", report->ledger.pending_open},
                          {"cards", report->cards},
                          {"risk_flags", report->risk_flags},
                          {"load_attempts", report->load_attempts},
                          {"holds", report->holds},
                          {"hotlist_version", report->hotlist_version},
                          {"problems", problems}}
                         .dump()
                  << "\n";
    } else {
        std::cout << fmt::format("{}: {} accounts, {} transfers, {} journal entries, {} open holds, {} cards, {} risk flags\n",
                                 report->ok() ? "ok" : "FAILED", report->ledger.accounts, report->ledger.transfers,
                                 report->ledger.journal_entries, report->ledger.pending_open, report->cards, report->risk_flags);
        for (const auto& p : problems) std::cout << "  problem: " << p << "\n";
    }
    return report->ok() ? exit_ok : exit_check_failed;
}

// ---- admin ----------------------------------------------------------------------------------------------

json card_json(const CardRecord& c) {
    return {{"asn", bcd_to_digits(c.asn)},
            {"issuer_id", to_hex(c.issuer_id)},
            {"status", std::string(to_string(c.status))},
            {"tac_key_version", c.tac_key_version},
            {"opening_balance_fen", c.opening_balance_fen},
            {"medical_opening_fen", c.medical_opening_fen},
            {"shadow_balance_fen", c.shadow_balance_fen},
            {"offline_atc_max", c.offline_atc_seen ? json(c.offline_atc_max) : json(nullptr)},
            {"offline_purchases", c.offline_purchases},
            {"risk_flags", c.risk_flags}};
}

int admin_load(const std::string& dir, const std::string& file) {
    std::ifstream in(file, std::ios::binary);
    if (!in) return fail(exit_bad_input, "cannot read " + file);
    std::ostringstream text;
    text << in.rdbuf();
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    auto lock = DirectoryLock::acquire(dir);
    if (!lock) return fail(exit_locked, lock.error());
    auto data = open_data(dir, true);
    if (!data) return fail(exit_storage, data.error());
    auto report = load_registry(*data->ledger, *data->registry, text.str());
    if (!report) return fail(exit_for(report.error()), file + ": " + report.error().message);
    std::cout << json{{"participants", report->participants},
                      {"terminals", report->terminals},
                      {"cards", report->cards},
                      {"accounts_created", report->accounts_created},
                      {"transfers_created", report->transfers_created}}
                     .dump()
              << "\n";
    return exit_ok;
}

int admin_list(const std::string& dir, const std::string& what) {
    auto data = open_data(dir, false);
    if (!data) return fail(exit_storage, data.error());
    json out = json::array();
    if (what == "cards") {
        auto cards = data->registry->cards();
        if (!cards) return fail(exit_storage, cards.error().message);
        for (const auto& c : *cards) {
            json j = card_json(c);
            auto shadow = data->ledger->lookup_account(purse_shadow_account(c.asn));
            auto medical = data->ledger->lookup_account(medical_account(c.asn));
            if (shadow && *shadow) {
                j["ledger_shadow_balance_fen"] = static_cast<std::int64_t>((*shadow)->credits_posted - (*shadow)->debits_posted);
            }
            if (medical && *medical) {
                j["medical_balance_fen"] = (*medical)->credits_posted - (*medical)->debits_posted - (*medical)->debits_pending;
            }
            out.push_back(j);
        }
    } else if (what == "participants") {
        auto participants = data->registry->participants();
        if (!participants) return fail(exit_storage, participants.error().message);
        for (const auto& p : *participants) {
            json j{{"id", p.id}, {"name", p.name}, {"kind", p.kind}, {"bank_account", p.bank_account}, {"fee_rate_bp", p.fee_rate_bp}};
            auto payable = data->ledger->lookup_account(payable_account(p.id, ledgers::purse));
            if (payable && *payable) j["purse_payable_fen"] = (*payable)->credits_posted - (*payable)->debits_posted;
            out.push_back(j);
        }
    } else if (what == "terminals") {
        auto terminals = data->registry->terminals();
        if (!terminals) return fail(exit_storage, terminals.error().message);
        for (const auto& t : *terminals) {
            out.push_back({{"terminal_id", t.terminal_id},
                           {"psam_terminal_id", bcd_to_digits(t.psam_terminal_id)},
                           {"participant_id", t.participant_id},
                           {"merchant_id", t.merchant_id},
                           {"status", to_string(t.status)},
                           {"forged_tacs", {{"day", t.forged_day}, {"count", t.forged_count}}},
                           {"last_stan", t.last_stan},
                           {"batch_number", t.batch_number},
                           {"uploads", t.uploads},
                           {"batch_totals", {{"debits", {t.batch_debits_count, t.batch_debits_fen}},
                                             {"credits", {t.batch_credits_count, t.batch_credits_fen}},
                                             {"credit_reversals", {t.batch_credit_reversals_count, t.batch_credit_reversals_fen}},
                                             {"debit_reversals", {t.batch_debit_reversals_count, t.batch_debit_reversals_fen}}}}});
        }
    } else if (what == "hotlist") {  // the whole log, as a terminal at version 0 downloads it
        std::uint32_t chunk_index = 0;
        for (bool more = true; more; ++chunk_index) {
            auto chunk = data->registry->hotlist_chunk(0, chunk_index);
            if (!chunk) return fail(exit_storage, chunk.error().message);
            for (std::size_t i = 0; i < chunk->entries.size(); ++i) {
                const HotlistEntry& e = chunk->entries[i];
                out.push_back({{"version", chunk->version - chunk->entries.size() + i + 1},
                               {"change", e.added ? "+" : "-"},
                               {"asn", bcd_to_digits(e.asn)}});
            }
            more = chunk->more;
        }
    } else {  // risk
        auto flags = data->registry->risk_flags();
        if (!flags) return fail(exit_storage, flags.error().message);
        for (const auto& f : *flags) {
            out.push_back({{"kind", std::string(to_string(f.kind))},
                           {"asn", bcd_to_digits(f.asn)},
                           {"atc", f.atc},
                           {"type", fmt::format("{:02X}", f.type)},
                           {"timestamp_ns", f.timestamp_ns},
                           {"detail", f.detail}});
        }
    }
    std::cout << out.dump() << "\n";
    return exit_ok;
}

int admin_card_status(const std::string& dir, const std::string& asn_text, const std::string& status_text) {
    auto status = parse_card_status(status_text);
    if (!status) return fail(exit_usage, "status must be active, lost or blocked");
    auto bcd = digits_to_bcd(asn_text);
    if (asn_text.size() != 20 || !bcd) return fail(exit_usage, "ASN must be 20 digits");
    Asn asn{};
    std::copy(bcd->begin(), bcd->end(), asn.begin());
    auto lock = DirectoryLock::acquire(dir);
    if (!lock) return fail(exit_locked, lock.error());
    auto data = open_data(dir, false);
    if (!data) return fail(exit_storage, data.error());
    auto done = set_card_status(*data->ledger, *data->registry, asn, *status);
    if (!done) return fail(exit_for(done.error()), done.error().message);
    return exit_ok;
}

int admin_terminal_status(const std::string& dir, const std::string& terminal_id, const std::string& status_text) {
    auto status = parse_terminal_status(status_text);
    if (!status) return fail(exit_usage, "status must be active, suspended or retired");
    auto lock = DirectoryLock::acquire(dir);
    if (!lock) return fail(exit_locked, lock.error());
    auto data = open_data(dir, false);
    if (!data) return fail(exit_storage, data.error());
    auto done = set_terminal_status(*data->ledger, *data->registry, terminal_id, *status);
    if (!done) return fail(exit_for(done.error()), done.error().message);
    return exit_ok;
}

// ---- admin: HTTP tokens -----------------------------------------------------------------------------------

struct OpenedWithTokens {
    DirectoryLock lock;
    Opened data;
    std::unique_ptr<http::Tokens> tokens;
};

coconut::Result<OpenedWithTokens, std::pair<int, std::string>> open_for_tokens(const std::string& dir) {
    using Failure = Unexpected<std::pair<int, std::string>>;
    auto lock = DirectoryLock::acquire(dir);
    if (!lock) return Failure{{exit_locked, lock.error()}};
    auto data = open_data(dir, false);
    if (!data) return Failure{{exit_storage, data.error()}};
    auto tokens = http::Tokens::open(data->ledger->env(), dir);
    if (!tokens) return Failure{{exit_storage, tokens.error().message}};
    return OpenedWithTokens{std::move(lock).value(), std::move(data).value(), std::move(tokens).value()};
}

// One line per clerk token: name, roles (or "revoked"), creation time (UTC).
int admin_clerk_list(const std::string& dir) {
    auto opened = open_for_tokens(dir);
    if (!opened) return fail(opened.error().first, opened.error().second);
    auto clerks = opened->tokens->clerks();
    if (!clerks) return fail(exit_storage, clerks.error().message);
    for (const http::Clerk& c : *clerks) {
        const std::time_t created = static_cast<std::time_t>(c.created_ns / 1'000'000'000);
        std::tm utc{};
        gmtime_r(&created, &utc);
        std::cout << fmt::format("{}\t{}\t{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z\n", c.name,
                                 c.revoked() ? std::string("revoked") : fmt::format("{}", fmt::join(http::role_names(c.roles), ",")),
                                 utc.tm_year + 1900, utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec);
    }
    return exit_ok;
}

int admin_clerk_revoke(const std::string& dir, const std::string& name) {
    auto opened = open_for_tokens(dir);
    if (!opened) return fail(opened.error().first, opened.error().second);
    auto revoked = http::revoke_clerk(*opened->data.ledger, *opened->tokens, name);
    if (!revoked) return fail(exit_for(revoked.error()), revoked.error().message);
    std::cout << fmt::format("revoked {} token(s) of clerk {}\n", *revoked, name);
    return exit_ok;
}

int admin_clerk_add(const std::string& dir, const std::string& name, const std::string& roles_text) {
    auto roles = http::parse_roles(roles_text);
    if (!roles) return fail(exit_usage, "--roles: a comma-separated list of hotlist, registry, settlement, read");
    auto opened = open_for_tokens(dir);
    if (!opened) return fail(opened.error().first, opened.error().second);
    auto token = http::add_clerk(*opened->data.ledger, *opened->tokens, name, *roles);
    if (!token) return fail(exit_for(token.error()), token.error().message);
    std::cout << *token << "\n";
    return exit_ok;
}

int admin_issue_tokens(const std::string& dir, const std::string& out, const std::vector<std::string>& card_texts) {
    std::vector<http::CardNumber> cards;
    for (const auto& text : card_texts) {
        auto number = http::parse_card_number(text);
        if (!number) return fail(exit_usage, "--card " + text + ": must be 16 digits");
        cards.push_back(*number);
    }
    auto opened = open_for_tokens(dir);
    if (!opened) return fail(opened.error().first, opened.error().second);
    auto issued = http::issue_card_tokens(*opened->data.ledger, *opened->data.registry, *opened->tokens, cards, out);
    if (!issued) return fail(exit_for(issued.error()), issued.error().message);
    std::cout << fmt::format("{} tokens written to {}\n", *issued, out);
    return exit_ok;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"coconut-clearingd: the clearing daemon (ISO 8583 for terminals, LMDB ledger, TAC verification)"};
    app.require_subcommand(1);
    app.footer(
        "Exit codes: 0 ok; 1 check found a problem (or internal error); 2 usage; 3 data directory in use; 4 storage; "
        "5 bad registry input; 6 cannot listen; 7 HSM client key file");

    ServeOptions serve_options;
    std::string map_size_text;
    const std::string map_size_help = fmt::format(
        "LMDB map size: how large the ledger may grow (the file is sparse), e.g. 64GiB, 1TiB; default {} GiB. When a "
        "write reports \"map full\", restart with a larger one",
        ledger::map_size_bytes_default >> 30);
    auto* serve_cmd = app.add_subcommand("serve", "serve terminals over ISO 8583 (TCP, 2-byte length frames)");
    serve_cmd->add_option("--map-size", map_size_text, map_size_help);
    serve_cmd->add_option("--iso-listen", serve_options.iso_listen, "HOST:PORT for terminals (port 0: any free port)")
        ->capture_default_str();
    serve_cmd->add_option("--data", serve_options.data, "data directory (LMDB ledger and registries)")->required();
    serve_cmd->add_option("--hsm", serve_options.hsm, "coconut-hsmd HOST:PORT")->capture_default_str();
    serve_cmd->add_option("--hsm-key", serve_options.hsm_key, "client key file (coconut-hsmd client add --permissions tac,load,auth)")->required();
    serve_cmd->add_option("--tac-key", serve_options.tac_key, "label of the TAC master key at the HSM")->capture_default_str();
    serve_cmd->add_option("--hsm-timeout-ms", serve_options.hsm_timeout_ms,
                          "HSM timeout: no hello or answer within this fails the requests (91) and opens the circuit breaker")
        ->capture_default_str()
        ->check(CLI::Range(100, 60'000));
    serve_cmd->add_option("--hsm-keepalive-s", serve_options.hsm_keepalive_s,
                          "keep-alive to the HSM on a connection quiet this long (below the HSM's idle timeout, 60 s; 0: none)")
        ->capture_default_str()
        ->check(CLI::Range(0, 3600));
    serve_cmd->add_option("--hsm-breaker-cooldown-ms", serve_options.hsm_breaker_cooldown_ms,
                          "after an HSM timeout, answer 91 at once for this long, then probe the HSM (half-open)")
        ->capture_default_str()
        ->check(CLI::Range(10, 600'000));
    serve_cmd->add_option("--hsm-connections", serve_options.hsm_connections,
                          "connections to the HSM at once (TAC batches verified concurrently)")
        ->capture_default_str()
        ->check(CLI::Range(1, 64));
    serve_cmd->add_option("--ready-file", serve_options.ready_file, "write the ISO 8583 port here once listening");
    serve_cmd->add_option("--connections-max", serve_options.connections_max, "connections served at once")
        ->capture_default_str()
        ->check(CLI::Range(1, 65535));
    serve_cmd->add_option("--connections-per-address", serve_options.connections_per_address,
                          "connections one client address may hold at once, before authentication (a carrier gateway or NAT "
                          "puts many terminals behind one)")
        ->capture_default_str()
        ->check(CLI::Range(1, 65535));
    serve_cmd->add_option("--connections-per-terminal", serve_options.connections_per_terminal,
                          "connections one terminal certificate may hold at once (TLS)")
        ->capture_default_str()
        ->check(CLI::Range(1, 1024));
    serve_cmd->add_option("--sign-on-timeout-s", serve_options.sign_on_timeout_s,
                          "close a connection whose terminal has not signed on within this many seconds of connecting (0: never; "
                          "an echo does not count)")
        ->capture_default_str()
        ->check(CLI::Range(0, 3600));
    serve_cmd->add_option("--in-flight-max", serve_options.in_flight_max, "requests in process per connection")
        ->capture_default_str()
        ->check(CLI::Range(1, 4096));
    serve_cmd->add_option("--read-idle-timeout-s", serve_options.read_idle_timeout_s, "close a silent connection after this")
        ->capture_default_str()
        ->check(CLI::Range(1, 86400));
    serve_cmd->add_option("--group-delay-us", serve_options.group_delay_us, "ledger group commit: wait for more requests")
        ->capture_default_str()
        ->check(CLI::Range(0, 100000));
    serve_cmd->add_option("--group-requests-max", serve_options.group_requests_max, "ledger group commit: requests per commit (1: commit per request)")
        ->capture_default_str()
        ->check(CLI::Range(1, 8190));
    serve_cmd->add_option("--group-linger-below", serve_options.group_linger_below,
                          "ledger group commit: when fewer requests queued during a commit, wait --group-delay-us for this many "
                          "(0: only after idle; fewer, larger commits write fewer pages)")
        ->capture_default_str()
        ->check(CLI::Range(0, 8190));
    serve_cmd->add_option("--writer-cpu", serve_options.writer_cpu,
                          "a CPU of its own for the ledger writer, every other thread on the rest: auto (the highest "
                          "allowed CPU when there are two or more), a CPU number, or off")
        ->capture_default_str();
    serve_cmd->add_flag("--allow-without-sign-on", serve_options.allow_without_sign_on, "accept requests without a prior 0800 sign-on");
    // TLS for terminals.
    serve_cmd->add_option("--tls-cert", serve_options.tls_cert, "ISO 8583 port: PEM server certificate (chain) from the island CA");
    serve_cmd->add_option("--tls-key", serve_options.tls_key, "ISO 8583 port: PEM private key of --tls-cert (mode 0600)");
    serve_cmd->add_option("--tls-ca", serve_options.tls_ca, "ISO 8583 port: PEM island CA certificate; terminals' certificates must chain to it");
    serve_cmd->add_flag("--insecure-terminals", serve_options.insecure_terminals,
                        "ISO 8583 port over plain TCP, no terminal authentication (local development only)");
    serve_cmd->add_option("--handshake-timeout-s", serve_options.handshake_timeout_s, "close a connection whose TLS handshake takes longer")
        ->capture_default_str()
        ->check(CLI::Range(1, 600));
    serve_cmd->add_option("--load-timeout", serve_options.engine.load_timeout_s, "seconds an approved load waits for its 0220 confirmation")
        ->capture_default_str()
        ->check(CLI::Range(1, 7 * 86400));
    serve_cmd->add_option("--hold-timeout", serve_options.engine.hold_timeout_s, "seconds a clinic hold waits for its 0220 completion")
        ->capture_default_str()
        ->check(CLI::Range(1, 7 * 86400));
    serve_cmd->add_option("--load-key", serve_options.engine.load_key_label, "label of the load (DLK) master key at the HSM")
        ->capture_default_str();
    serve_cmd->add_option("--internal-auth-key", serve_options.engine.internal_auth_key_label,
                          "label of the master key a clinic 0100's card-presence proof is verified under: the social-security "
                          "application's (usage ssse-auth), never the purse IAK")
        ->capture_default_str();
    serve_cmd->add_option("--challenge-ttl-s", serve_options.engine.challenge_ttl_s,
                          "seconds a clinic card-presence challenge (0800 70=201) stays valid")
        ->capture_default_str()
        ->check(CLI::Range(5, 600));
    serve_cmd->add_option("--forged-tacs-per-day", serve_options.engine.forged_tacs_per_day,
                          "uploads with a failed TAC one terminal may send per UTC day before it is suspended")
        ->capture_default_str()
        ->check(CLI::Range(1, 1'000'000));
    // HTTP API options.
    serve_cmd->add_option("--http-listen", serve_options.http_listen, "HOST:PORT for the HTTP API and balance page (port 0: any free port)");
    serve_cmd->add_option("--http-ready-file", serve_options.http_ready_file, "write the HTTP port here once listening");
    serve_cmd->add_option("--http-tls-cert", serve_options.http_tls_cert, "PEM certificate chain: serve HTTPS instead of HTTP");
    serve_cmd->add_option("--http-tls-key", serve_options.http_tls_key, "PEM private key of --http-tls-cert");
    serve_cmd->add_option("--settlement-margin-s", serve_options.settlement_margin_s,
                          "a settlement cycle's window must have ended this many seconds ago before its transfers are accepted "
                          "(bookings stamped before the end have committed); coconut-settle's --settling-margin must not be smaller")
        ->capture_default_str()
        ->check(CLI::Range(1, 3600));
    serve_cmd->add_option("--http-connections-max", serve_options.http_connections_max, "HTTP connections served at once")
        ->capture_default_str()
        ->check(CLI::Range(1, 65535));
    serve_cmd->add_option("--http-connections-per-address", serve_options.http_connections_per_address,
                          "HTTP connections one client address may hold at once")
        ->capture_default_str()
        ->check(CLI::Range(1, 65535));
    serve_cmd->add_option("--http-priority", serve_options.http_priority,
                          "scheduling of the HTTP thread below the ledger writer and terminal I/O: idle, nice:N (1-19) or normal")
        ->capture_default_str()
        ->check([](const std::string& text) { return http::parse_thread_priority(text) ? std::string() : "idle, nice:1 … nice:19 or normal"; });
    serve_cmd->add_option("--http-address-rate", serve_options.address_failures_per_s,
                          "requests per second without a valid token per client address, after a burst of 50 (429 above)")
        ->capture_default_str()
        ->check(CLI::Range(0.01, 1e6));
    serve_cmd->add_option("--http-token-rate", serve_options.token_requests_per_s, "requests per second per card or clerk token (429 above)")
        ->capture_default_str()
        ->check(CLI::Range(0.1, 1e6));

    std::string data_dir;
    bool as_json = false;
    auto* check_cmd = app.add_subcommand("check", "verify every ledger and registry invariant; exit 1 on a violation");
    check_cmd->add_option("--data", data_dir, "data directory")->required();
    check_cmd->add_option("--map-size", map_size_text, map_size_help);
    check_cmd->add_flag("--json", as_json, "machine-readable report");

    auto* admin_cmd = app.add_subcommand("admin", "registries: cards, participants, terminals, risk flags");
    admin_cmd->require_subcommand(1);
    // `admin SUBCOMMAND --data DIR` too (the contract's spelling): the subcommands, created below,
    // inherit the fallthrough and hand --data up to `admin`.
    admin_cmd->fallthrough();
    admin_cmd->add_option("--data", data_dir, "data directory")->required();
    admin_cmd->add_option("--map-size", map_size_text, map_size_help);
    std::string registry_file;
    auto* load_cmd = admin_cmd->add_subcommand("load", "load a registry JSON file (idempotent; daemon must be stopped)");
    load_cmd->add_option("FILE", registry_file, "registry JSON (clearing/README.md)")->required();
    std::string what;
    auto* list_cmd = admin_cmd->add_subcommand("list", "print a registry as JSON");
    list_cmd->add_option("WHAT", what, "cards | participants | terminals | risk | hotlist")
        ->required()
        ->check(CLI::IsMember({"cards", "participants", "terminals", "risk", "hotlist"}));
    std::string asn_text, status_text;
    auto* status_cmd = admin_cmd->add_subcommand("card-status", "set a card's status (lost / blocked cards are refused online)");
    status_cmd->add_option("ASN", asn_text, "20 digits")->required();
    status_cmd->add_option("STATUS", status_text, "active | lost | blocked")->required();
    std::string terminal_text;
    auto* terminal_status_cmd =
        admin_cmd->add_subcommand("terminal-status", "set a terminal's status (suspended / retired terminals get 58 on every request)");
    terminal_status_cmd->add_option("TERMINAL", terminal_text, "field 41, 8 characters")->required();
    terminal_status_cmd->add_option("STATUS", status_text, "active | suspended | retired")->required();

    // Tokens (clearing/README.md "HTTP API").
    std::string clerk_name, clerk_roles, tokens_out;
    std::vector<std::string> token_cards;
    auto* clerk_cmd = admin_cmd->add_subcommand("clerk-add", "add a clerk; prints the clerk's token once (daemon must be stopped)");
    clerk_cmd->add_option("--name", clerk_name, "the clerk's name, as journaled")->required();
    clerk_cmd->add_option("--roles", clerk_roles, "comma-separated: hotlist, registry, settlement, read")->required();
    auto* clerk_list_cmd = admin_cmd->add_subcommand("clerk-list", "list clerk tokens: name, roles or revoked, created (never a token or hash)");
    std::string revoke_name;
    auto* clerk_revoke_cmd = admin_cmd->add_subcommand("clerk-revoke", "revoke every token of a clerk, journaled (daemon must be stopped)");
    clerk_revoke_cmd->add_option("--name", revoke_name, "the clerk's name")->required();
    auto* issue_cmd = admin_cmd->add_subcommand("issue-tokens", "write a token file per card (daemon must be stopped)");
    issue_cmd->add_option("--out", tokens_out, "directory for <card number>.token files (0600)")->required();
    issue_cmd->add_option("--card", token_cards, "16-digit card number (repeatable; none: every card without a token)");

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e) == 0 ? exit_ok : exit_usage;
    }
    if (!map_size_text.empty()) {
        auto parsed = parse_map_size(map_size_text);
        if (!parsed) return fail(exit_usage, "--map-size " + map_size_text + ": " + parsed.error());
        map_size_bytes = *parsed;
    }
    try {
        if (serve_cmd->parsed()) return serve(serve_options);
        if (check_cmd->parsed()) return run_check(data_dir, as_json);
        if (load_cmd->parsed()) return admin_load(data_dir, registry_file);
        if (list_cmd->parsed()) return admin_list(data_dir, what);
        if (status_cmd->parsed()) return admin_card_status(data_dir, asn_text, status_text);
        if (terminal_status_cmd->parsed()) return admin_terminal_status(data_dir, terminal_text, status_text);
        if (clerk_cmd->parsed()) return admin_clerk_add(data_dir, clerk_name, clerk_roles);
        if (clerk_list_cmd->parsed()) return admin_clerk_list(data_dir);
        if (clerk_revoke_cmd->parsed()) return admin_clerk_revoke(data_dir, revoke_name);
        if (issue_cmd->parsed()) return admin_issue_tokens(data_dir, tokens_out, token_cards);
    } catch (const std::exception& e) {
        return fail(exit_check_failed, std::string("internal error: ") + e.what());
    }
    return exit_usage;
}
