// The clearing daemon as one object (coconut::clearing_daemon): what `coconut-clearingd serve` runs,
// wired once for the executable, the tests and the benches.
//
//   Daemon::open    the data directory: its lock (DATA/clearingd.lock), the ledger, the registries, the
//                   HTTP tokens, the fixed accounts. Nothing runs yet: a caller may load a registry.
//   Daemon::start   the ledger writer (pinned by the CPU layout), the HSM (the network link with its TAC
//                   batcher, or a service in process), the engine, the ISO 8583 listeners, the HTTP
//                   server on a thread and io_context of its own, the expiry scan, the ready files.
//   run / run_in_background, shutdown, stop_now
//                   the terminals' I/O thread; SIGINT / SIGTERM (when asked) drain: stop accepting and
//                   reading, answer every request in hand (its booking committed), then stop; a second
//                   signal or the drain timeout stops at once. Afterwards the writer commits what was
//                   queued and stops.
//
// Threads (docs/DESIGN.md §8.1, clearing/README.md "Scheduling"): the terminals' I/O thread (run's
// caller or the background thread) runs the ISO 8583 servers, the engine's answers, the HSM link and
// the timers; ONE ledger writer thread commits; the HTTP threads run below the writer's priority.
#pragma once

#include <coconut/clearing/directory_lock.hpp>
#include <coconut/clearing/engine.hpp>
#include <coconut/clearing/hsm_adapters.hpp>
#include <coconut/clearing/http.hpp>
#include <coconut/clearing/lifecycle.hpp>
#include <coconut/clearing/registry.hpp>
#include <coconut/clearing/scheduling.hpp>
#include <coconut/clearing/server.hpp>

#include <boost/asio/io_context.hpp>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace coconut::clearing {

// Why the daemon could not open or start; coconut-clearingd maps each to its exit code (clearing/README.md).
struct DaemonError {
    enum class Kind : std::uint8_t {
        usage,    // an option cannot be applied (a CPU to pin to)
        locked,   // another coconut-clearingd serves (or administers) the directory
        storage,  // the data directory cannot be opened or written (a ready file included)
        listen,   // an ISO 8583 or HTTP address cannot be bound
    };
    Kind kind = Kind::storage;
    std::string message;
};
template <class T>
using DaemonResult = coconut::Result<T, DaemonError>;
using DaemonStatus = coconut::Status<DaemonError>;

// The data directory's lock (coconut/clearing/directory_lock.hpp): the ledger keeps its journal head in
// memory, so only one process may write a data directory (`serve` for its lifetime, the `admin` commands
// while they run). Fails with Kind::locked when another process holds it.
DaemonResult<DirectoryLock> lock_data_directory(const std::filesystem::path& dir);

// A data directory's ledger and registry, opened (not locked: the caller holds its DirectoryLock, or
// reads only). `options.directory` is `dir`. Error storage: the directory is missing, or the ledger or
// the registry cannot be opened (the message names which).
struct DataDirectory {
    std::unique_ptr<ledger::Ledger> ledger;
    std::unique_ptr<Registry> registry;
    std::unique_ptr<Lifecycle> lifecycle;  // lost cards and persons (lifecycle.hpp)
};
DaemonResult<DataDirectory> open_data_directory(const std::filesystem::path& dir, ledger::Options options);

// coconut-hsmd over the network (serve --hsm, --hsm-key, --tac-key, --hsm-*).
struct RemoteHsmConfig {
    // One HSM, or several on copies of one store, in the order of preference (hsm::Link rule 5).
    std::vector<hsm::wire::Endpoint> endpoints;
    hsm::wire::ClientCredentials credentials;
    std::string tac_key_label = std::string(hsm::default_tac_label);
    RemoteHsmOptions link;
};

struct DaemonOptions {
    std::filesystem::path data;  // created when missing
    // The ledger's settings; `directory` is `data`.
    ledger::Options ledger;
    // The writer's settings; `group_hooks` is the registry's.
    ledger::WriterOptions writer;
    // A CPU of its own for the ledger writer (plan_cpu_layout): the calling thread of start() — and so
    // every thread started from it — moves to the others' CPUs first. Unset: no pinning.
    std::optional<CpuLayout> cpu_layout;

    // The HSM: over the network when set, else `local_hsm` (in process: tests, benches).
    std::optional<RemoteHsmConfig> remote_hsm;
    LocalHsm* local_hsm = nullptr;
    EngineOptions engine;
    // Answers built on the terminals' I/O thread (engine.completion_executor), as coconut-clearingd
    // does; false: on the writer's thread (a caller that drives the engine without the I/O thread).
    bool answers_on_io_thread = true;

    // The ISO 8583 listeners, all on the one engine and I/O thread (coconut-clearingd: one).
    std::vector<ServerOptions> terminals;
    // The HTTP API; unset: no HTTP port.
    std::optional<http::HttpOptions> http;
    http::ThreadPriority http_priority;  // of the HTTP threads (serve --http-priority)

    // "PORT\n" once listening (written through a rename): the first ISO 8583 listener's, the HTTP one's.
    std::filesystem::path ready_file;
    std::filesystem::path http_ready_file;
    // Loads and holds the ledger released by timeout counted and logged this often (0: never).
    std::chrono::milliseconds expiry_scan_interval{1'000};
    // The card lifecycle's sweep (card_lifecycle.hpp: carries after the waiting period engine.lost_wait_s)
    // runs this often (0: never).
    std::chrono::milliseconds lifecycle_sweep_interval{1'000};
    // SIGINT / SIGTERM drain the daemon (coconut-clearingd); false: shutdown() only.
    bool handle_signals = false;
    // Replication (docs/DESIGN.md §10): called once the ledger is open, before the daemon writes
    // anything; the hook it returns is set on the ledger's environment (lmdb::Env::set_commit_hook), so
    // every commit of the daemon goes through it (a cluster primary publishes each to the journal
    // stream). Unset: no hook.
    std::function<lmdb::CommitHook(ledger::Ledger&)> commit_hook;
    // What the commit hook's publishes took, for /metrics (a cluster primary's); null: none.
    const http::PublishDurations* publishes = nullptr;
    std::chrono::milliseconds drain_timeout = drain_timeout_default;
};

// What the ISO 8583 listeners counted, kept when they are gone (the summary on stop).
struct TlsHandshakeCounts {
    std::uint64_t full = 0;
    std::uint64_t resumed = 0;
    std::uint64_t failed = 0;
};

class Daemon {
public:
    // Locks and opens the data directory, applies the fixed accounts (idempotent).
    static DaemonResult<std::unique_ptr<Daemon>> open(DaemonOptions options);
    // Stops as the destructor of a running daemon: drain (bounded by the drain timeout), then finish.
    ~Daemon();
    Daemon(const Daemon&) = delete;
    Daemon& operator=(const Daemon&) = delete;

    // Starts everything but the terminals' I/O thread. Once only.
    DaemonStatus start();
    // Runs the terminals' I/O thread on the calling thread until the daemon stopped (a signal,
    // shutdown() or stop_now()), then finishes: the HTTP thread joined, the listeners closed, the writer's
    // queue committed.
    void run();
    // run() on a thread of its own, kept alive with no listener; the destructor stops and joins it.
    void run_in_background();
    // Drains as the first signal does. Any thread.
    void shutdown();
    // Stops the I/O thread at once (the second signal). Any thread.
    void stop_now();

    const DaemonOptions& options() const;
    ledger::Ledger& ledger();
    Registry& registry();
    Lifecycle& lifecycle();
    http::Tokens& tokens();
    CardReturns& card_returns();  // returns, refunds, tourist cards (card_returns.hpp)
    // After start():
    ledger::Writer& writer();
    Engine& engine();
    boost::asio::io_context& io();
    Server& terminal_server(std::size_t index = 0);
    std::uint16_t terminal_port(std::size_t index = 0) const;
    http::HttpServer* http_server();  // nullptr without HTTP
    // The HSM calls as /metrics counts them.
    const http::HsmStats& hsm_stats() const;
    const std::optional<CpuLayout>& cpu_layout() const;
    // After run() returned: the TLS handshakes the listeners counted.
    TlsHandshakeCounts tls_handshakes() const;

    struct State;

private:
    explicit Daemon(std::unique_ptr<State> state);
    std::unique_ptr<State> state_;
};

}  // namespace coconut::clearing
