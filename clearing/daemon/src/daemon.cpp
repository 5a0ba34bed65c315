// The clearing daemon as one object (daemon.hpp): the data directory, the writer, the HSM, the engine,
// the ISO 8583 listeners, the HTTP thread, the timers, signals and the drain.
#include <coconut/clearing/card_lifecycle.hpp>
#include <coconut/clearing/clerk_client.hpp>
#include <coconut/clearing/daemon.hpp>
#include <coconut/core/log.hpp>
#include <coconut/core/assert.hpp>

#include <fmt/format.h>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>

#include <pthread.h>

#include <array>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <utility>

namespace coconut::clearing {

namespace {

using Kind = DaemonError::Kind;

DaemonError failure(Kind kind, std::string message) { return DaemonError{kind, std::move(message)}; }

// Writes "PORT\n" to `path` through a rename, so a reader never sees a partial file.
bool write_port_file(const std::filesystem::path& path, std::uint16_t port) {
    const std::filesystem::path temp = path.string() + ".tmp";
    std::ofstream out(temp, std::ios::trunc);
    out << port << "\n";
    out.close();
    return out && std::rename(temp.c_str(), path.c_str()) == 0;
}

std::string address(const std::string& host, std::uint16_t port) { return fmt::format("{}:{}", host, port); }

}  // namespace

// ---- the directory lock ----------------------------------------------------------------------------------

DaemonResult<DirectoryLock> lock_data_directory(const std::filesystem::path& dir) {
    auto lock = DirectoryLock::acquire(dir);
    if (lock) return std::move(lock).value();
    if (!lock.error().held) return Unexpected<DaemonError>{failure(Kind::locked, lock.error().message)};
    return Unexpected<DaemonError>{
        failure(Kind::locked, fmt::format("{} is in use by another coconut-clearingd (serve or admin); stop it first", dir.string()))};
}

struct Daemon::State {
    DaemonOptions options;
    std::optional<DirectoryLock> lock;
    std::unique_ptr<ledger::Ledger> ledger;
    std::unique_ptr<Registry> registry;
    std::unique_ptr<Lifecycle> lifecycle;
    std::unique_ptr<http::Tokens> tokens;
    std::unique_ptr<CardReturns> card_returns;

    // start()
    bool started = false;
    std::unique_ptr<ledger::Writer> writer;
    boost::asio::io_context io{1};
    std::unique_ptr<RemoteHsm> remote_hsm;
    std::unique_ptr<http::MeteredHsm> metered_hsm;
    std::unique_ptr<Engine> engine;
    std::vector<std::unique_ptr<Server>> servers;
    std::unique_ptr<boost::asio::io_context> http_io;
    std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> http_work;
    std::unique_ptr<http::HttpServer> http_server;
    std::vector<std::thread> http_threads;

    // The I/O thread's.
    std::optional<boost::asio::signal_set> signals;
    boost::asio::steady_timer drain_deadline{io};
    boost::asio::steady_timer expiry_timer{io};
    boost::asio::steady_timer lifecycle_timer{io};
    Asn lifecycle_cursor{};  // the sweep's page (card_lifecycle.hpp)
    bool draining = false;
    std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> io_work;
    std::thread background;

    // finish()
    bool finished = false;
    TlsHandshakeCounts tls_counts;

    DaemonStatus open_data();
    DaemonStatus start_writer();
    void start_engine();
    DaemonStatus start_terminal_servers();
    DaemonStatus start_http();
    void start_http_threads();
    void watch_signals();
    void scan_expiries();
    void sweep_lifecycle();
    DaemonStatus write_ready_files() const;
    void drain();
    void finish();
};

// ---- open ------------------------------------------------------------------------------------------------

DaemonResult<DataDirectory> open_data_directory(const std::filesystem::path& dir, ledger::Options options) {
    const std::string text = dir.string();
    if (!std::filesystem::is_directory(dir))
        return Unexpected<DaemonError>{failure(Kind::storage, fmt::format("data directory {} does not exist", text))};
    options.directory = text;
    auto opened = ledger::Ledger::open(options);
    if (!opened)
        return Unexpected<DaemonError>{
            failure(Kind::storage, fmt::format("cannot open the ledger in {}: {}", text, opened.error().message))};
    auto registry = Registry::open(opened.value()->env());
    if (!registry) return Unexpected<DaemonError>{failure(Kind::storage, registry.error().message)};
    auto lifecycle = Lifecycle::open(opened.value()->env());
    if (!lifecycle) return Unexpected<DaemonError>{failure(Kind::storage, lifecycle.error().message)};
    return DataDirectory{std::move(opened).value(), std::move(registry).value(), std::move(lifecycle).value()};
}

DaemonStatus Daemon::State::open_data() {
    std::error_code ec;
    std::filesystem::create_directories(options.data, ec);
    auto locked = lock_data_directory(options.data);
    if (!locked) return Unexpected<DaemonError>{locked.error()};
    lock.emplace(std::move(locked).value());
    options.ledger.directory = options.data.string();
    auto data = open_data_directory(options.data, options.ledger);
    if (!data) return Unexpected<DaemonError>{data.error()};
    ledger = std::move(data->ledger);
    registry = std::move(data->registry);
    lifecycle = std::move(data->lifecycle);
    if (options.commit_hook) ledger->env().set_commit_hook(options.commit_hook(*ledger));
    auto tokens_opened = http::Tokens::open(ledger->env(), options.data);
    if (!tokens_opened) return Unexpected<DaemonError>{failure(Kind::storage, tokens_opened.error().message)};
    tokens = std::move(tokens_opened).value();
    auto returns_opened = CardReturns::open(ledger->env());
    if (!returns_opened) return Unexpected<DaemonError>{failure(Kind::storage, returns_opened.error().message)};
    card_returns = std::move(returns_opened).value();
    // The fixed accounts exist from the first start (idempotent: `exists` afterwards).
    const auto fixed = fixed_accounts();
    std::vector<ledger::Event> events(fixed.begin(), fixed.end());
    if (auto applied = ledger->apply(events); !applied) return Unexpected<DaemonError>{failure(Kind::storage, applied.error().message)};
    return Ok{};
}

DaemonResult<std::unique_ptr<Daemon>> Daemon::open(DaemonOptions options) {
    COCONUT_ASSERT(!options.data.empty(), "a daemon needs its data directory");
    COCONUT_ASSERT(options.remote_hsm || options.local_hsm, "a daemon needs an HSM, remote or in process");
    auto state = std::make_unique<State>();
    state->options = std::move(options);
    if (auto opened = state->open_data(); !opened) return Unexpected<DaemonError>{opened.error()};
    return std::unique_ptr<Daemon>(new Daemon(std::move(state)));
}

Daemon::Daemon(std::unique_ptr<State> state) : state_(std::move(state)) {}

Daemon::~Daemon() {
    State& s = *state_;
    if (s.background.joinable()) {
        shutdown();
        s.background.join();
    }
    if (s.started) s.finish();
}

// ---- start -----------------------------------------------------------------------------------------------

// With a CPU layout every thread started from here on (the writer first, then the HTTP threads) inherits
// the others' CPUs, and the writer alone moves to its own.
DaemonStatus Daemon::State::start_writer() {
    const auto& layout = options.cpu_layout;
    if (layout) {
        if (auto pinned = pin_thread(pthread_self(), layout->others); !pinned)
            return Unexpected<DaemonError>{failure(Kind::usage, "--writer-cpu: " + pinned.error().message)};
    }
    ledger::WriterOptions writer_options = options.writer;
    writer_options.group_hooks = registry->group_hooks();
    writer = std::make_unique<ledger::Writer>(*ledger, writer_options);
    if (layout) {
        if (auto pinned = pin_thread(writer->native_handle(), std::array{layout->writer}); !pinned)
            return Unexpected<DaemonError>{failure(Kind::usage, "--writer-cpu: " + pinned.error().message)};
    }
    return Ok{};
}

void Daemon::State::start_engine() {
    if (options.remote_hsm) {
        const RemoteHsmConfig& remote = *options.remote_hsm;
        remote_hsm =
            std::make_unique<RemoteHsm>(io.get_executor(), remote.endpoints, remote.credentials, remote.tac_key_label, remote.link);
        metered_hsm = std::make_unique<http::MeteredHsm>(*remote_hsm, *remote_hsm);
    } else {
        metered_hsm = std::make_unique<http::MeteredHsm>(*options.local_hsm, *options.local_hsm);
    }
    EngineOptions engine_options = options.engine;
    if (options.answers_on_io_thread) engine_options.completion_executor = io.get_executor();
    engine_options.lifecycle = lifecycle.get();
    engine = std::make_unique<Engine>(*ledger, *writer, *registry, *metered_hsm, *metered_hsm, engine_options);
}

DaemonStatus Daemon::State::start_terminal_servers() {
    for (const ServerOptions& server_options : options.terminals) {
        try {
            servers.push_back(std::make_unique<Server>(io, *engine, server_options));
        } catch (const std::exception& e) {  // Boost.Asio's system_error (Boost 1.74: not a std::system_error)
            return Unexpected<DaemonError>{
                failure(Kind::listen, fmt::format("cannot listen on {}: {}", address(server_options.host, server_options.port), e.what()))};
        }
    }
    return Ok{};
}

// The HTTP API on threads and an io_context of their own: a slow query never delays a terminal.
DaemonStatus Daemon::State::start_http() {
    if (!options.http) return Ok{};
    const http::HttpOptions& http_options = *options.http;
    COCONUT_ASSERT(http_options.io_threads >= 1);
    http_io = std::make_unique<boost::asio::io_context>(static_cast<int>(http_options.io_threads));
    http::Services services{*ledger,
                            writer.get(),
                            *registry,
                            *tokens,
                            &engine->stats(),
                            servers.empty() ? nullptr : &servers.front()->stats(),
                            &metered_hsm->stats(),
                            remote_hsm ? &remote_hsm->link_stats() : nullptr,
                            nullptr,
                            options.data,
                            lifecycle.get(),
                            options.engine.lost_wait_s,
                            card_returns.get()};
    services.publishes = options.publishes;
    try {
        http_server = std::make_unique<http::HttpServer>(*http_io, services, http_options);
    } catch (const std::exception& e) {
        return Unexpected<DaemonError>{
            failure(Kind::listen, fmt::format("cannot serve HTTP on {}: {}", address(http_options.host, http_options.port), e.what()))};
    }
    start_http_threads();
    return Ok{};
}

void Daemon::State::start_http_threads() {
    http_work.emplace(boost::asio::make_work_guard(*http_io));
    for (std::size_t t = 0; t < options.http->io_threads; ++t) {
        http_threads.emplace_back([this] {
            ::pthread_setname_np(::pthread_self(), "clearingd-http");
            // Bookings before balance queries (http.hpp ThreadPriority).
            if (auto lowered = http::lower_thread_priority(options.http_priority); !lowered) {
                log::warning("daemon", "the HTTP thread keeps the daemon's priority: " + lowered.error().message);
            }
            http_io->run();
        });
    }
}

// SIGTERM / SIGINT: the first drains, a second one stops at once.
void Daemon::State::watch_signals() {
    signals->async_wait([this](const boost::system::error_code& error, int signal) {
        if (error) return;
        if (draining) {
            log::info("daemon", "second signal, stopping now");
            io.stop();
            return;
        }
        log::info("daemon", fmt::format("signal {}, finishing the requests in hand", signal));
        drain();
        watch_signals();
    });
}

// Loads and holds released by the ledger's timeout: counted and logged once per interval.
void Daemon::State::scan_expiries() {
    if (draining) return;
    if (auto found = engine->scan_expiries(); !found) log::error("daemon", "expiry scan: " + found.error().message);
    expiry_timer.expires_after(options.expiry_scan_interval);
    expiry_timer.async_wait([this](boost::system::error_code timer_error) {
        if (!timer_error) scan_expiries();
    });
}

// The card lifecycle's writer sweep (card_lifecycle.hpp): carries due, repairs; one page per tick.
void Daemon::State::sweep_lifecycle() {
    if (draining) return;
    const LifecycleContext context{*ledger, *registry, *lifecycle, options.engine.lost_wait_s};
    const auto now_ns = static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch()).count());
    if (auto swept = run_lifecycle_sweep(context, *writer, now_ns, lifecycle_cursor); !swept) {
        log::error("daemon", "lifecycle sweep: " + swept.error().message);
    }
    lifecycle_timer.expires_after(options.lifecycle_sweep_interval);
    lifecycle_timer.async_wait([this](boost::system::error_code timer_error) {
        if (!timer_error) sweep_lifecycle();
    });
}

// The HTTP port first: whoever waits for the ISO 8583 ready file finds both.
DaemonStatus Daemon::State::write_ready_files() const {
    if (http_server && !options.http_ready_file.empty() && !write_port_file(options.http_ready_file, http_server->port()))
        return Unexpected<DaemonError>{failure(Kind::storage, "cannot write the HTTP ready file " + options.http_ready_file.string())};
    // Where `admin --token-file` finds the clerk API of the daemon serving this directory (clerk_client.hpp).
    if (http_server) {
        if (auto written = write_served_url(options.data, local_url(options.http->host, http_server->port(), http_server->tls())); !written)
            return Unexpected<DaemonError>{failure(Kind::storage, written.error().message)};
    }
    if (!options.ready_file.empty()) {
        COCONUT_ASSERT(!servers.empty(), "a ready file names the first ISO 8583 listener's port");
        if (!write_port_file(options.ready_file, servers.front()->port()))
            return Unexpected<DaemonError>{failure(Kind::storage, "cannot write the ready file " + options.ready_file.string())};
    }
    return Ok{};
}

DaemonStatus Daemon::start() {
    State& s = *state_;
    COCONUT_ASSERT(!s.started, "a daemon starts once");
    s.started = true;
    if (auto writer = s.start_writer(); !writer) return writer;
    s.start_engine();
    if (auto terminals = s.start_terminal_servers(); !terminals) return terminals;
    if (auto http = s.start_http(); !http) return http;
    if (s.options.handle_signals) {
        s.signals.emplace(s.io, SIGINT, SIGTERM);
        s.watch_signals();
    }
    if (s.options.expiry_scan_interval.count() > 0) boost::asio::post(s.io, [&s] { s.scan_expiries(); });
    if (s.options.lifecycle_sweep_interval.count() > 0) boost::asio::post(s.io, [&s] { s.sweep_lifecycle(); });
    return s.write_ready_files();
}

// ---- run and stop ----------------------------------------------------------------------------------------

// Stop accepting and reading, answer every request in hand (its booking committed), then stop the I/O
// thread. The drain timeout stops it with requests unanswered (none is acknowledged). On the I/O thread.
void Daemon::State::drain() {
    if (draining) return;
    draining = true;
    expiry_timer.cancel();
    lifecycle_timer.cancel();
    if (http_server) http_server->shutdown();
    auto open = std::make_shared<std::size_t>(servers.size());
    auto closed = [this, open] {
        COCONUT_ASSERT(*open > 0);
        if (--*open > 0) return;
        if (remote_hsm) remote_hsm->close();
        io_work.reset();
        io.stop();
    };
    if (servers.empty()) {
        ++*open;
        closed();
    }
    for (auto& server : servers) server->shutdown(closed);
    drain_deadline.expires_after(options.drain_timeout);
    drain_deadline.async_wait([this](boost::system::error_code timer_error) {
        if (timer_error) return;
        log::warning("daemon", "drain timeout, stopping with requests unanswered (none is acknowledged)");
        io.stop();
    });
}

// After the I/O thread stopped: the HTTP threads joined, the listeners closed, the writer's queue
// committed (no answer can reach anybody now; a retry answers `exists`).
void Daemon::State::finish() {
    if (finished) return;
    finished = true;
    if (http_io) {
        http_work.reset();
        http_io->stop();
        for (auto& thread : http_threads) thread.join();
    }
    http_server.reset();
    for (const auto& server : servers) {
        const ServerStats& stats = server->stats();
        tls_counts.full += stats.tls_handshakes_full.load();
        tls_counts.resumed += stats.tls_handshakes_resumed.load();
        tls_counts.failed += stats.tls_handshake_failures.load();
    }
    servers.clear();
    if (writer) writer->stop();
}

void Daemon::run() {
    COCONUT_ASSERT(state_->started, "start() before run()");
    state_->io.run();
    state_->finish();
}

void Daemon::run_in_background() {
    State& s = *state_;
    COCONUT_ASSERT(s.started && !s.background.joinable());
    s.io_work.emplace(boost::asio::make_work_guard(s.io));
    s.background = std::thread([this] { run(); });
}

void Daemon::shutdown() {
    boost::asio::post(state_->io, [&s = *state_] { s.drain(); });
}

void Daemon::stop_now() { state_->io.stop(); }

// ---- accessors -------------------------------------------------------------------------------------------

const DaemonOptions& Daemon::options() const { return state_->options; }
ledger::Ledger& Daemon::ledger() { return *state_->ledger; }
Registry& Daemon::registry() { return *state_->registry; }
Lifecycle& Daemon::lifecycle() { return *state_->lifecycle; }
http::Tokens& Daemon::tokens() { return *state_->tokens; }
CardReturns& Daemon::card_returns() { return *state_->card_returns; }

ledger::Writer& Daemon::writer() {
    COCONUT_ASSERT(state_->writer, "start() first");
    return *state_->writer;
}

Engine& Daemon::engine() {
    COCONUT_ASSERT(state_->engine, "start() first");
    return *state_->engine;
}

boost::asio::io_context& Daemon::io() { return state_->io; }

Server& Daemon::terminal_server(std::size_t index) {
    COCONUT_ASSERT(index < state_->servers.size(), "no such ISO 8583 listener");
    return *state_->servers[index];
}

std::uint16_t Daemon::terminal_port(std::size_t index) const {
    COCONUT_ASSERT(index < state_->servers.size(), "no such ISO 8583 listener");
    return state_->servers[index]->port();
}

http::HttpServer* Daemon::http_server() { return state_->http_server.get(); }

const http::HsmStats& Daemon::hsm_stats() const {
    COCONUT_ASSERT(state_->metered_hsm, "start() first");
    return state_->metered_hsm->stats();
}

const std::optional<CpuLayout>& Daemon::cpu_layout() const { return state_->options.cpu_layout; }

TlsHandshakeCounts Daemon::tls_handshakes() const { return state_->tls_counts; }

}  // namespace coconut::clearing
