// coconut-clearingd: serve (ISO 8583 for terminals), check (every invariant of a data directory),
// admin (registries). Usage, options and exit codes: clearing/README.md.
#include "clearingd_backup.hpp"

#include <coconut/clearing/card_lifecycle.hpp>
#include <coconut/clearing/check.hpp>
#include <coconut/clearing/daemon.hpp>
#include <coconut/clearing/engine.hpp>
#include <coconut/clearing/hsm_adapters.hpp>
#include <coconut/clearing/lifecycle.hpp>
#include <coconut/clearing/registry.hpp>
#include <coconut/clearing/scheduling.hpp>
#include <coconut/clearing/server.hpp>
#include <coconut/clearing/http.hpp>
#include <coconut/clearing/node.hpp>
#include <coconut/clearing/snapshot.hpp>
#include <coconut/core/admission.hpp>
#include <coconut/cmdline/cmdline.hpp>
#include <coconut/core/log.hpp>
#include <coconut/tls/tls.hpp>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <unistd.h>

#include <array>
#include <filesystem>
#include <fstream>
#include <ctime>
#include <iostream>
#include <mutex>
#include <streambuf>
#include <sstream>

#include "admin_remote.hpp"

namespace {

using namespace coconut;
using namespace coconut::clearing;
using nlohmann::json;

// Exit codes (clearing/README.md).
constexpr int exit_ok = 0;
constexpr int exit_check_failed = 1;  // `check`: an invariant does not hold (also: internal error)
constexpr int exit_usage = 2;
constexpr int exit_locked = 3;     // another coconut-clearingd serves (or administers) this directory
constexpr int exit_storage = 4;    // the data directory cannot be opened or written
constexpr int exit_bad_input = 5;  // registry file / argument invalid or contradicting the registry
constexpr int exit_listen = 6;     // the ISO 8583 address cannot be bound
constexpr int exit_hsm_key = 7;    // the HSM client key file is missing or malformed
constexpr int exit_cluster = 8;    // cluster node: NATS unreachable, a bad cluster key, a journal message it cannot apply

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

using Opened = DataDirectory;  // daemon.hpp

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
    ledger::Options options;
    options.map_size_bytes = map_size_bytes;
    auto opened = open_data_directory(dir, options);
    if (!opened) return Unexpected<std::string>{opened.error().message};
    return std::move(opened).value();
}

// ---- serve ----------------------------------------------------------------------------------------------

struct ServeOptions {
    // The waiting period of lost and broken cards (clearing/README.md "Card lifecycle"): days, or seconds
    // (tests) when set.
    std::uint32_t lost_wait_days = 7;
    std::uint32_t lost_wait_s = 0;
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
    std::uint64_t tourist_return_fee_fen = 0;
    unsigned clerk_grant_ttl_s = static_cast<unsigned>(http::clerk_grant_ttl_default.count());
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

int exit_for(const DaemonError& e) {
    switch (e.kind) {
        case DaemonError::Kind::usage: return exit_usage;
        case DaemonError::Kind::locked: return exit_locked;
        case DaemonError::Kind::storage: return exit_storage;
        case DaemonError::Kind::listen: return exit_listen;
    }
    return exit_storage;
}

// What `serve` cannot start with: its exit code and message.
struct ServeFailure {
    int code = exit_usage;
    std::string message;
};
using ServeResult = coconut::Result<DaemonOptions, ServeFailure>;

ServerOptions terminal_server_options(const ServeOptions& o, const hsm::wire::Endpoint& listen,
                                      std::shared_ptr<boost::asio::ssl::context> tls) {
    ServerOptions server_options;
    server_options.host = listen.host;
    server_options.port = listen.port;
    server_options.connections_max = o.connections_max;
    server_options.connections_per_address = o.connections_per_address;
    server_options.connections_per_terminal = o.connections_per_terminal;
    server_options.sign_on_timeout = std::chrono::seconds(o.sign_on_timeout_s);
    server_options.in_flight_per_connection_max = o.in_flight_max;
    server_options.read_idle_timeout = std::chrono::seconds(o.read_idle_timeout_s);
    server_options.tls = std::move(tls);
    server_options.handshake_timeout = std::chrono::seconds(o.handshake_timeout_s);
    return server_options;
}

http::HttpOptions http_server_options(const ServeOptions& o, const hsm::wire::Endpoint& listen) {
    http::HttpOptions http_options;
    http_options.host = listen.host;
    http_options.port = listen.port;
    http_options.connections_max = o.http_connections_max;
    http_options.connections_per_address = o.http_connections_per_address;
    http_options.token_requests_per_s = o.token_requests_per_s;
    http_options.token_burst = std::max(http::token_burst_default, o.token_requests_per_s);
    http_options.address_failures_per_s = o.address_failures_per_s;
    http_options.address_failure_burst = std::max(http::address_failure_burst_default, o.address_failures_per_s);
    http_options.tls_certificate = o.http_tls_cert;
    http_options.tls_private_key = o.http_tls_key;
    http_options.settlement_margin = std::chrono::seconds(o.settlement_margin_s);
    http_options.tourist_return_fee_fen = o.tourist_return_fee_fen;
    http_options.clerk_grant_ttl = std::chrono::seconds(o.clerk_grant_ttl_s);
    return http_options;
}

// The HSM link (--hsm, --hsm-key, --tac-key, --hsm-*).
coconut::Result<RemoteHsmConfig, ServeFailure> remote_hsm_config(const ServeOptions& o) {
    auto endpoints = hsm::wire::parse_endpoints(o.hsm);
    if (!endpoints) return Unexpected<ServeFailure>{{exit_usage, "--hsm: " + endpoints.error().message}};
    auto credentials = hsm::wire::read_client_credentials(o.hsm_key);
    if (!credentials) return Unexpected<ServeFailure>{{exit_hsm_key, "--hsm-key: " + credentials.error().message}};
    RemoteHsmConfig config{std::move(endpoints).value(), std::move(credentials).value(), o.tac_key, {}};
    config.link.timeout = std::chrono::milliseconds(o.hsm_timeout_ms);
    config.link.keepalive_interval = std::chrono::seconds(o.hsm_keepalive_s);
    config.link.breaker_cooldown = std::chrono::milliseconds(o.hsm_breaker_cooldown_ms);
    config.link.connections_max = o.hsm_connections;
    return config;
}

// The command line's options as the Daemon takes them: addresses and TLS, the CPU layout, the HSM.
ServeResult daemon_options(const ServeOptions& o) {
    auto listen = hsm::wire::parse_endpoint(o.iso_listen, true);
    if (!listen) return Unexpected<ServeFailure>{{exit_usage, "--iso-listen: " + listen.error().message}};
    auto terminal_context = terminal_tls(o);
    if (!terminal_context) return Unexpected<ServeFailure>{{exit_usage, terminal_context.error().message}};
    DaemonOptions d;
    if (!o.http_listen.empty()) {
        auto http_endpoint = hsm::wire::parse_endpoint(o.http_listen, true);
        if (!http_endpoint) return Unexpected<ServeFailure>{{exit_usage, "--http-listen: " + http_endpoint.error().message}};
        d.http = http_server_options(o, *http_endpoint);
        d.http_priority = *http::parse_thread_priority(o.http_priority);  // checked when parsing the options
    }
    auto layout = plan_cpu_layout(o.writer_cpu);
    if (!layout) return Unexpected<ServeFailure>{{exit_usage, layout.error().message}};
    auto remote = remote_hsm_config(o);
    if (!remote) return Unexpected<ServeFailure>{remote.error()};
    d.data = o.data;
    d.ledger.map_size_bytes = map_size_bytes;
    d.writer.group_delay = std::chrono::microseconds(o.group_delay_us);
    d.writer.group_requests_max = o.group_requests_max;
    d.writer.group_linger_below = o.group_linger_below;
    d.cpu_layout = *layout;
    d.remote_hsm = std::move(remote).value();
    d.engine = o.engine;
    d.engine.require_sign_on = !o.allow_without_sign_on;
    d.engine.tac_key_label = o.tac_key;
    d.engine.lost_wait_s = o.lost_wait_s != 0 ? o.lost_wait_s : std::uint64_t{o.lost_wait_days} * 86'400;
    d.terminals.push_back(terminal_server_options(o, *listen, *terminal_context));
    d.ready_file = o.ready_file;
    d.http_ready_file = o.http_ready_file;
    d.handle_signals = true;
    return d;
}

void print_started(Daemon& daemon, const ServeOptions& o, std::uint64_t open_files) {
    const DaemonOptions& d = daemon.options();
    const ServerOptions& terminals = d.terminals.front();
    log::info("daemon", fmt::format("listening on {}:{} (data {}, HSM {})", terminals.host, daemon.terminal_port(), o.data,
                                    hsm::wire::to_string(d.remote_hsm->endpoints)));
    log::info("daemon", terminals.tls ? fmt::format("terminals over mutual TLS (client certificates of the CA in {})", o.tls_ca)
                                      : std::string("terminals over PLAIN TCP (--insecure-terminals): any peer may claim any terminal id"));
    log::info("daemon", fmt::format("open-file limit {}; terminal connections at most {} ({} per address, {} per terminal), {}", open_files,
                                    o.connections_max, o.connections_per_address, o.connections_per_terminal,
                                    o.allow_without_sign_on    ? std::string("no sign-on required")
                                    : o.sign_on_timeout_s == 0 ? std::string("no sign-on deadline")
                                                               : fmt::format("sign-on within {} s", o.sign_on_timeout_s)));
    if (const auto& layout = d.cpu_layout) {
        log::info("daemon", fmt::format("ledger writer on CPU {}, other threads on CPU {}", layout->writer, format_cpus(layout->others)));
    }
    if (const http::HttpServer* http_server = daemon.http_server()) {
        log::info("daemon", fmt::format("HTTP{} on {}:{}", http_server->tls() ? "S" : "", o.http_listen.substr(0, o.http_listen.rfind(':')),
                                        http_server->port()));
    }
}

void print_stopped(Daemon& daemon) {
    const auto& s = daemon.engine().stats();
    log::info("daemon", fmt::format("stopped: {} requests, {} booked, {} repeats, {} suspense, {} duplicates, "
                                    "{} refused; loads {} approved {} confirmed {} expired; holds {} approved {} completed {} expired; "
                                    "{} reversals",
                                    s.requests.load(), s.booked.load(), s.exists.load(), s.suspense.load(), s.duplicates.load(),
                                    s.refused.load(), s.loads_approved.load(), s.loads_confirmed.load(), s.loads_expired.load(),
                                    s.holds_approved.load(), s.completions.load(), s.holds_expired.load(), s.reversals.load()));
    if (daemon.options().terminals.front().tls) {
        const TlsHandshakeCounts tls = daemon.tls_handshakes();
        log::info("daemon", fmt::format("TLS handshakes: {} full, {} resumed, {} failed", tls.full, tls.resumed, tls.failed));
    }
}

// serve --cluster-node: the settings of this node of a clearing cluster (clearing/README.md "Cluster").
struct ClusterFlags {
    std::string node;
    std::string nats;  // comma-separated URLs
    std::string nats_user;
    std::string nats_password_file;
    std::string nats_ca, nats_cert, nats_key;
    std::string key_file;
    std::string status_file;
    std::uint32_t lease_ttl_ms = 3000;
    std::uint32_t lease_renew_ms = 0;
    int replicas = 3;
    std::uint32_t keep_days = 7;
    std::uint32_t publish_deadline_ms = 9000;
};

coconut::Result<NodeOptions, std::string> node_options(const ClusterFlags& c, const ServeOptions& o) {
    NodeOptions n;
    n.name = c.node;
    n.advertise = o.iso_listen;
    n.advertise_http = o.http_listen;
    for (std::size_t at = 0; at <= c.nats.size();) {
        const auto comma = std::min(c.nats.find(',', at), c.nats.size());
        if (comma > at) n.nats.urls.push_back(c.nats.substr(at, comma - at));
        at = comma + 1;
    }
    if (n.nats.urls.empty()) return Unexpected{std::string("--nats: at least one URL (nats://HOST:PORT or tls://HOST:PORT)")};
    n.nats.user = c.nats_user;
    if (!c.nats_password_file.empty()) {
        std::ifstream in(c.nats_password_file);
        if (!std::getline(in, n.nats.password) || n.nats.password.empty())
            return Unexpected{"--nats-password-file " + c.nats_password_file + ": cannot read a password from it"};
    }
    n.nats.ca = c.nats_ca;
    n.nats.certificate = c.nats_cert;
    n.nats.private_key = c.nats_key;
    n.nats.name = "coconut-clearingd " + c.node;
    auto key = read_cluster_key(c.key_file);
    if (!key) return Unexpected{"--cluster-key: " + key.error()};
    n.key = *key;
    n.status_file = c.status_file;
    n.lease.ttl = std::chrono::milliseconds(c.lease_ttl_ms);
    n.lease_renew_every = std::chrono::milliseconds(c.lease_renew_ms);
    n.lease.replicas = c.replicas;
    n.stream.replicas = c.replicas;
    n.stream.max_age = std::chrono::hours(24 * c.keep_days);
    n.publish_deadline = std::chrono::milliseconds(c.publish_deadline_ms);
    return n;
}

// The cluster node's messages (it writes lines to a stream) as log events: one per line, component
// "cluster", without the program name the node puts first. The node's threads share it.
class ClusterLog : public std::streambuf {
protected:
    int overflow(int c) override {
        if (c == traits_type::eof()) return traits_type::not_eof(c);
        std::lock_guard lock(mutex_);
        if (c != '\n') {
            line_ += static_cast<char>(c);
            return c;
        }
        constexpr std::string_view program = "coconut-clearingd: ";
        log::info("cluster", std::string_view(line_).starts_with(program) ? std::string_view(line_).substr(program.size()) : line_);
        line_.clear();
        return c;
    }

private:
    std::mutex mutex_;
    std::string line_;
};

int serve(const ServeOptions& o, const ClusterFlags& cluster) {
    auto options = daemon_options(o);
    if (!options) return fail(options.error().code, options.error().message);
    if (!cluster.node.empty()) {
        auto node = node_options(cluster, o);
        if (!node) return fail(exit_cluster, node.error());
        core::raise_open_file_limit();
        ClusterLog cluster_log;
        std::ostream cluster_stream(&cluster_log);
        auto ran = run_node(std::move(options).value(), *node, cluster_stream);
        if (!ran) {
            const int code = ran.error().kind == NodeError::Kind::daemon ? exit_storage : exit_cluster;
            return fail(code, "cluster node " + cluster.node + ": " + ran.error().message);
        }
        return exit_ok;
    }
    // Every connection costs a descriptor: the soft limit (often 1,024) is below the connection limits.
    const std::uint64_t open_files = core::raise_open_file_limit();
    auto daemon = Daemon::open(std::move(options).value());
    if (!daemon) return fail(exit_for(daemon.error()), daemon.error().message);
    if (auto started = (*daemon)->start(); !started) return fail(exit_for(started.error()), started.error().message);
    print_started(**daemon, o, open_files);
    (*daemon)->run();
    print_stopped(**daemon);
    return exit_ok;
}

// ---- join -----------------------------------------------------------------------------------------------

struct JoinFlags {
    std::string from;
    std::string token_file;
    std::string ca;
    std::string data;
    bool replace = false;
    std::uint32_t timeout_s = 600;
};

int run_join(const JoinFlags& f) {
    JoinOptions o;
    o.from = f.from;
    o.ca_file = f.ca;
    o.data = f.data;
    o.replace = f.replace;
    o.timeout = std::chrono::seconds(f.timeout_s);
    std::ifstream in(f.token_file);
    if (!std::getline(in, o.token) || o.token.empty())
        return fail(exit_usage, "--token-file " + f.token_file + ": cannot read a clerk token (role cluster) from it");
    auto joined = join_from_snapshot(o);
    if (!joined) return fail(exit_for(joined.error()), "join: " + joined.error().message);
    const SnapshotManifest& m = joined->manifest;
    std::cout << fmt::format(
        "coconut-clearingd: joined from {}: {} now holds stream position {} (journal entry {}, {} accounts, {} ledger bytes); "
        "check ok. Start it with serve --cluster-node: it continues from position {}\n",
        f.from, f.data, m.position, m.journal_sequence, joined->accounts, m.lmdb_bytes, m.position + 1);
    return exit_ok;
}

// ---- check ----------------------------------------------------------------------------------------------

int run_check(const std::string& dir, bool as_json) {
    auto data = open_data(dir, false);
    if (!data) return fail(exit_storage, data.error());
    auto report = check(*data->ledger, *data->registry);
    if (report) {  // the card lifecycle's records (card_lifecycle.hpp) in the same report
        auto lifecycle = check_lifecycle(*data->ledger, *data->registry, *data->lifecycle);
        if (!lifecycle) return fail(exit_storage, lifecycle.error().message);
        report->problems.insert(report->problems.end(), lifecycle->begin(), lifecycle->end());
    }
    if (!report) return fail(exit_for(report.error()), report.error().message);
    std::vector<std::string> problems = report->ledger.problems;
    problems.insert(problems.end(), report->problems.begin(), report->problems.end());
    const ledger::JournalHead head = data->ledger->head();
    const auto position = data->ledger->replicated_position();
    if (as_json) {
        std::cout << json{{"ok", report->ok()},
                          {"journal_head", {{"sequence", head.sequence}, {"hash", to_hex(ByteView(head.hash.data(), head.hash.size()))}}},
                          {"replicated_position", position ? json(*position) : json(nullptr)},
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

// The registry file's persons (lifecycle.hpp): each card joins its holder's record, keyed by the SSN's
// keyed hash (the key: DATA/http-token.key, made on first use), in one commit.
coconut::Status<std::string> load_persons(const std::string& dir, const Opened& data, const std::vector<CardPerson>& persons) {
    if (persons.empty()) return Ok{};
    auto tokens = http::Tokens::open(data.ledger->env(), dir);
    if (!tokens) return Unexpected<std::string>{tokens.error().message};
    std::string conflict;
    ledger::Batch batch;
    batch.after = [&](lmdb::Txn& txn, std::span<const ledger::EventResult>) -> lmdb::Status {
        for (const CardPerson& cp : persons) {
            const SsnHash hash = (*tokens)->hash("ssn:" + cp.person.ssn);
            auto stored = data.lifecycle->person_in(txn, hash);
            auto owner = data.lifecycle->owner_in(txn, cp.asn);
            if (!stored) return Unexpected<lmdb::Error>{stored.error()};
            if (!owner) return Unexpected<lmdb::Error>{owner.error()};
            PersonRecord p = stored->value_or(PersonRecord{cp.person.name, cp.person.birth_date, {}});
            if (p.name != cp.person.name || p.birth_date != cp.person.birth_date || (*owner && **owner != hash)) {
                conflict = "card " + bcd_to_digits(cp.asn) + ": person differs from the one registered";
                return Unexpected<lmdb::Error>{lmdb::Error{MDB_KEYEXIST, "person", conflict}};
            }
            if (std::find(p.cards.begin(), p.cards.end(), cp.asn) == p.cards.end()) p.cards.push_back(cp.asn);
            if (p.cards.size() > person_cards_max) return Unexpected<lmdb::Error>{lmdb::Error{MDB_KEYEXIST, "person", "too many cards"}};
            if (auto put = data.lifecycle->put_person(txn, hash, p); !put) return put;
        }
        return Ok{};
    };
    auto applied = data.ledger->apply_group(std::span<const ledger::Batch>(&batch, 1));
    if (!applied) return Unexpected<std::string>{conflict.empty() ? applied.error().message : conflict};
    return Ok{};
}

int admin_load(const std::string& dir, const std::string& file) {
    std::ifstream in(file, std::ios::binary);
    if (!in) return fail(exit_bad_input, "cannot read " + file);
    std::ostringstream text;
    text << in.rdbuf();
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    auto lock = lock_data_directory(dir);
    if (!lock) return fail(exit_locked, lock.error().message);
    // Each card's optional "person" is checked with the rest of the file, before anything is written.
    auto persons = read_registry_persons(text.str());
    if (!persons) return fail(exit_bad_input, file + ": " + persons.error());
    auto data = open_data(dir, true);
    if (!data) return fail(exit_storage, data.error());
    auto report = load_registry(*data->ledger, *data->registry, text.str());
    if (!report) return fail(exit_for(report.error()), file + ": " + report.error().message);
    if (auto loaded = load_persons(dir, *data, *persons); !loaded) return fail(exit_storage, file + ": " + loaded.error());
    std::cout << json{{"participants", report->participants},
                      {"terminals", report->terminals},
                      {"cards", report->cards},
                      {"accounts_created", report->accounts_created},
                      {"transfers_created", report->transfers_created}}
                     .dump()
              << "\n";
    return exit_ok;
}

// `admin list`: each registry as a JSON array, or what failed to read.
using Listed = coconut::Result<json, std::string>;

Listed list_cards(const Opened& data) {
    auto cards = data.registry->cards();
    if (!cards) return Unexpected<std::string>{cards.error().message};
    json out = json::array();
    for (const auto& c : *cards) {
        json j = card_json(c);
        auto shadow = data.ledger->lookup_account(purse_shadow_account(c.asn));
        auto medical = data.ledger->lookup_account(medical_account(c.asn));
        if (shadow && *shadow) {
            j["ledger_shadow_balance_fen"] = static_cast<std::int64_t>((*shadow)->credits_posted - (*shadow)->debits_posted);
        }
        if (medical && *medical) {
            j["medical_balance_fen"] = (*medical)->credits_posted - (*medical)->debits_posted - (*medical)->debits_pending;
        }
        out.push_back(j);
    }
    return out;
}

Listed list_participants(const Opened& data) {
    auto participants = data.registry->participants();
    if (!participants) return Unexpected<std::string>{participants.error().message};
    json out = json::array();
    for (const auto& p : *participants) {
        json j{{"id", p.id}, {"name", p.name}, {"kind", p.kind}, {"bank_account", p.bank_account}, {"fee_rate_bp", p.fee_rate_bp}};
        auto payable = data.ledger->lookup_account(payable_account(p.id, ledgers::purse));
        if (payable && *payable) j["purse_payable_fen"] = (*payable)->credits_posted - (*payable)->debits_posted;
        out.push_back(j);
    }
    return out;
}

Listed list_terminals(const Opened& data) {
    auto terminals = data.registry->terminals();
    if (!terminals) return Unexpected<std::string>{terminals.error().message};
    json out = json::array();
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
                       {"batch_totals",
                        {{"debits", {t.batch_debits_count, t.batch_debits_fen}},
                         {"credits", {t.batch_credits_count, t.batch_credits_fen}},
                         {"credit_reversals", {t.batch_credit_reversals_count, t.batch_credit_reversals_fen}},
                         {"debit_reversals", {t.batch_debit_reversals_count, t.batch_debit_reversals_fen}}}}});
    }
    return out;
}

// The whole log, as a terminal at version 0 downloads it.
Listed list_hotlist(const Opened& data) {
    json out = json::array();
    std::uint32_t chunk_index = 0;
    for (bool more = true; more; ++chunk_index) {
        auto chunk = data.registry->hotlist_chunk(0, chunk_index);
        if (!chunk) return Unexpected<std::string>{chunk.error().message};
        for (std::size_t i = 0; i < chunk->entries.size(); ++i) {
            const HotlistEntry& e = chunk->entries[i];
            out.push_back({{"version", chunk->version - chunk->entries.size() + i + 1},
                           {"change", e.added ? "+" : "-"},
                           {"asn", bcd_to_digits(e.asn)}});
        }
        more = chunk->more;
    }
    return out;
}

Listed list_risk(const Opened& data) {
    auto flags = data.registry->risk_flags();
    if (!flags) return Unexpected<std::string>{flags.error().message};
    json out = json::array();
    for (const auto& f : *flags) {
        out.push_back({{"kind", std::string(to_string(f.kind))},
                       {"asn", bcd_to_digits(f.asn)},
                       {"atc", f.atc},
                       {"type", fmt::format("{:02X}", f.type)},
                       {"timestamp_ns", f.timestamp_ns},
                       {"detail", f.detail}});
    }
    return out;
}

int admin_list(const std::string& dir, const std::string& what) {
    auto data = open_data(dir, false);
    if (!data) return fail(exit_storage, data.error());
    const Listed listed = what == "cards"          ? list_cards(*data)
                          : what == "participants" ? list_participants(*data)
                          : what == "terminals"    ? list_terminals(*data)
                          : what == "hotlist"      ? list_hotlist(*data)
                                                   : list_risk(*data);
    if (!listed) return fail(exit_storage, listed.error());
    std::cout << listed->dump() << "\n";
    return exit_ok;
}

int admin_card_status(const std::string& dir, const std::string& asn_text, const std::string& status_text) {
    auto status = parse_card_status(status_text);
    if (!status) return fail(exit_usage, "status must be active, lost or blocked");
    auto bcd = digits_to_bcd(asn_text);
    if (asn_text.size() != 20 || !bcd) return fail(exit_usage, "ASN must be 20 digits");
    Asn asn{};
    std::copy(bcd->begin(), bcd->end(), asn.begin());
    auto lock = lock_data_directory(dir);
    if (!lock) return fail(exit_locked, lock.error().message);
    auto data = open_data(dir, false);
    if (!data) return fail(exit_storage, data.error());
    auto done = set_card_status(*data->ledger, *data->registry, asn, *status);
    if (!done) return fail(exit_for(done.error()), done.error().message);
    return exit_ok;
}

int admin_terminal_status(const std::string& dir, const std::string& terminal_id, const std::string& status_text) {
    auto status = parse_terminal_status(status_text);
    if (!status) return fail(exit_usage, "status must be active, suspended or retired");
    auto lock = lock_data_directory(dir);
    if (!lock) return fail(exit_locked, lock.error().message);
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
    auto lock = lock_data_directory(dir);
    if (!lock) return Failure{{exit_locked, lock.error().message}};
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

// serve: the HSM link (clearing/README.md "The HSM link").
void add_hsm_options(CLI::App* serve, ServeOptions& o) {
    serve
        ->add_option("--hsm", o.hsm,
                     "coconut-hsmd HOST:PORT, or several on copies of one store: HOST:PORT,HOST:PORT (the first that works)")
        ->capture_default_str();
    serve->add_option("--hsm-key", o.hsm_key, "client key file (coconut-hsmd client add --permissions tac,load,auth)")->required();
    serve->add_option("--tac-key", o.tac_key, "label of the TAC master key at the HSM")->capture_default_str();
    serve
        ->add_option("--hsm-timeout-ms", o.hsm_timeout_ms,
                     "HSM timeout: no hello or answer within this fails the requests (91) and opens the circuit breaker")
        ->capture_default_str()
        ->check(CLI::Range(100, 60'000));
    serve
        ->add_option("--hsm-keepalive-s", o.hsm_keepalive_s,
                     "keep-alive to the HSM on a connection quiet this long (below the HSM's idle timeout, 60 s; 0: none)")
        ->capture_default_str()
        ->check(CLI::Range(0, 3600));
    serve
        ->add_option("--hsm-breaker-cooldown-ms", o.hsm_breaker_cooldown_ms,
                     "after an HSM timeout, answer 91 at once for this long, then probe the HSM (half-open)")
        ->capture_default_str()
        ->check(CLI::Range(10, 600'000));
    serve->add_option("--hsm-connections", o.hsm_connections, "connections to the HSM at once (TAC batches verified concurrently)")
        ->capture_default_str()
        ->check(CLI::Range(1, 64));
}

// serve: the ISO 8583 port, its limits and TLS, the ledger writer's group commit and CPU.
void add_terminal_options(CLI::App* serve, ServeOptions& o) {
    serve->add_option("--ready-file", o.ready_file, "write the ISO 8583 port here once listening");
    serve->add_option("--connections-max", o.connections_max, "connections served at once")
        ->capture_default_str()
        ->check(CLI::Range(1, 65535));
    serve
        ->add_option("--connections-per-address", o.connections_per_address,
                     "connections one client address may hold at once, before authentication (a carrier gateway or NAT "
                     "puts many terminals behind one)")
        ->capture_default_str()
        ->check(CLI::Range(1, 65535));
    serve
        ->add_option("--connections-per-terminal", o.connections_per_terminal,
                     "connections one terminal certificate may hold at once (TLS)")
        ->capture_default_str()
        ->check(CLI::Range(1, 1024));
    serve
        ->add_option("--sign-on-timeout-s", o.sign_on_timeout_s,
                     "close a connection whose terminal has not signed on within this many seconds of connecting (0: never; "
                     "an echo does not count)")
        ->capture_default_str()
        ->check(CLI::Range(0, 3600));
    serve->add_option("--in-flight-max", o.in_flight_max, "requests in process per connection")
        ->capture_default_str()
        ->check(CLI::Range(1, 4096));
    serve->add_option("--idle-timeout-s,--read-idle-timeout-s", o.read_idle_timeout_s, "close a silent connection after this")
        ->capture_default_str()
        ->check(CLI::Range(1, 86400));
    serve->add_option("--group-delay-us", o.group_delay_us, "ledger group commit: wait for more requests")
        ->capture_default_str()
        ->check(CLI::Range(0, 100000));
    serve->add_option("--group-requests-max", o.group_requests_max, "ledger group commit: requests per commit (1: commit per request)")
        ->capture_default_str()
        ->check(CLI::Range(1, 8190));
    serve
        ->add_option("--group-linger-below", o.group_linger_below,
                     "ledger group commit: when fewer requests queued during a commit, wait --group-delay-us for this many "
                     "(0: only after idle; fewer, larger commits write fewer pages)")
        ->capture_default_str()
        ->check(CLI::Range(0, 8190));
    serve
        ->add_option("--writer-cpu", o.writer_cpu,
                     "a CPU of its own for the ledger writer, every other thread on the rest: auto (the highest "
                     "allowed CPU when there are two or more), a CPU number, or off")
        ->capture_default_str();
    serve->add_flag("--allow-without-sign-on", o.allow_without_sign_on, "accept requests without a prior 0800 sign-on");
    // TLS for terminals.
    serve->add_option("--tls-cert", o.tls_cert, "ISO 8583 port: PEM server certificate (chain) from the island CA");
    serve->add_option("--tls-key", o.tls_key, "ISO 8583 port: PEM private key of --tls-cert (mode 0600)");
    serve->add_option("--tls-ca", o.tls_ca, "ISO 8583 port: PEM island CA certificate; terminals' certificates must chain to it");
    serve->add_flag("--insecure-terminals", o.insecure_terminals,
                    "ISO 8583 port over plain TCP, no terminal authentication (local development only)");
    serve->add_option("--handshake-timeout-s", o.handshake_timeout_s, "close a connection whose TLS handshake takes longer")
        ->capture_default_str()
        ->check(CLI::Range(1, 600));
}

// serve: the engine's timeouts, keys and limits.
void add_engine_options(CLI::App* serve, ServeOptions& o) {
    serve
        ->add_option("--load-timeout-s,--load-timeout", o.engine.load_timeout_s, "seconds an approved load waits for its 0220 confirmation")
        ->capture_default_str()
        ->check(CLI::Range(1, 7 * 86400));
    serve->add_option("--hold-timeout-s,--hold-timeout", o.engine.hold_timeout_s, "seconds a clinic hold waits for its 0220 completion")
        ->capture_default_str()
        ->check(CLI::Range(1, 7 * 86400));
    serve->add_option("--load-key", o.engine.load_key_label, "label of the load (DLK) master key at the HSM")->capture_default_str();
    serve
        ->add_option("--internal-auth-key", o.engine.internal_auth_key_label,
                     "label of the master key a clinic 0100's card-presence proof is verified under: the social-security "
                     "application's (usage ssse-auth), never the purse IAK")
        ->capture_default_str();
    serve->add_option("--challenge-ttl-s", o.engine.challenge_ttl_s, "seconds a clinic card-presence challenge (0800 70=201) stays valid")
        ->capture_default_str()
        ->check(CLI::Range(5, 600));
    serve
        ->add_option("--lost-wait-days", o.lost_wait_days,
                     "days a lost or broken card's offline payments may still arrive before its balance moves: a replaced card's "
                     "balance is carried to the new card, a broken card refunded (a lost card may be found until then)")
        ->capture_default_str()
        ->check(CLI::Range(1, 365));
    serve->add_option("--lost-wait-s", o.lost_wait_s, "the same waiting period in seconds (tests); overrides --lost-wait-days")
        ->check(CLI::Range(1, 365 * 86'400));
    serve
        ->add_option("--forged-tacs-per-day", o.engine.forged_tacs_per_day,
                     "uploads with a failed TAC one terminal may send per UTC day before it is suspended")
        ->capture_default_str()
        ->check(CLI::Range(1, 1'000'000));
}

// serve: the HTTP API (clearing/README.md "HTTP API").
void add_http_options(CLI::App* serve, ServeOptions& o) {
    // HTTP API options.
    serve->add_option("--http-listen", o.http_listen, "HOST:PORT for the HTTP API and balance page (port 0: any free port)");
    serve->add_option("--http-ready-file", o.http_ready_file, "write the HTTP port here once listening");
    serve->add_option("--http-tls-cert", o.http_tls_cert, "PEM certificate chain: serve HTTPS instead of HTTP");
    serve->add_option("--http-tls-key", o.http_tls_key, "PEM private key of --http-tls-cert");
    serve
        ->add_option("--settlement-margin-s", o.settlement_margin_s,
                     "a settlement cycle's window must have ended this many seconds ago before its transfers are accepted "
                     "(bookings stamped before the end have committed); coconut-settle's --settling-margin must not be smaller")
        ->capture_default_str()
        ->check(CLI::Range(1, 3600));
    serve
        ->add_option("--tourist-return-fee-fen", o.tourist_return_fee_fen,
                     "fee of a tourist card's return, from its deposit then its balance, capped at both")
        ->capture_default_str()
        ->check(CLI::Range(0, 100'000));
    serve
        ->add_option("--clerk-grant-ttl-s", o.clerk_grant_ttl_s,
                     "a clerk grant of roles that move money waits this long for a second clerk's approval, then expires")
        ->capture_default_str()
        ->check(CLI::Range(1, 30 * 86'400));
    serve->add_option("--http-connections-max", o.http_connections_max, "HTTP connections served at once")
        ->capture_default_str()
        ->check(CLI::Range(1, 65535));
    serve
        ->add_option("--http-connections-per-address", o.http_connections_per_address,
                     "HTTP connections one client address may hold at once")
        ->capture_default_str()
        ->check(CLI::Range(1, 65535));
    serve
        ->add_option("--http-priority", o.http_priority,
                     "scheduling of the HTTP thread below the ledger writer and terminal I/O: idle, nice:N (1-19) or normal")
        ->capture_default_str()
        ->check(
            [](const std::string& text) { return http::parse_thread_priority(text) ? std::string() : "idle, nice:1 … nice:19 or normal"; });
    serve
        ->add_option("--http-address-rate", o.address_failures_per_s,
                     "requests per second without a valid token per client address, after a burst of 50 (429 above)")
        ->capture_default_str()
        ->check(CLI::Range(0.01, 1e6));
    serve->add_option("--http-token-rate", o.token_requests_per_s, "requests per second per card or clerk token (429 above)")
        ->capture_default_str()
        ->check(CLI::Range(0.1, 1e6));
}

// The admin subcommands and what they were given.
struct AdminCommands {
    CLI::App* load = nullptr;
    CLI::App* list = nullptr;
    CLI::App* card_status = nullptr;
    CLI::App* terminal_status = nullptr;
    CLI::App* clerk_add = nullptr;
    CLI::App* clerk_list = nullptr;
    CLI::App* clerk_revoke = nullptr;
    CLI::App* issue_tokens = nullptr;
    std::string registry_file, what, asn_text, status_text, terminal_text;
    std::string clerk_name, clerk_roles, tokens_out, revoke_name;
    std::vector<std::string> token_cards;
    admin::RemoteAdmin remote;  // --token-file: through the serving daemon's clerk API (admin_remote.hpp)
};

admin::RemoteCommand remote_command(const AdminCommands& c) {
    const std::pair<CLI::App*, const char*> names[] = {{c.load, "load"},
                                                       {c.list, "list"},
                                                       {c.card_status, "card-status"},
                                                       {c.terminal_status, "terminal-status"},
                                                       {c.clerk_add, "clerk-add"},
                                                       {c.clerk_list, "clerk-list"},
                                                       {c.clerk_revoke, "clerk-revoke"},
                                                       {c.issue_tokens, "issue-tokens"}};
    admin::RemoteCommand out{"",           c.registry_file, c.asn_text,   c.status_text, c.terminal_text,
                             c.clerk_name, c.clerk_roles,   c.tokens_out, c.revoke_name, c.token_cards};
    for (const auto& [app, name] : names)
        if (app->parsed()) out.name = name;
    return out;
}

// admin: HTTP tokens (clearing/README.md "HTTP API").
void add_token_commands(CLI::App* admin, AdminCommands& c) {
    c.clerk_add = admin->add_subcommand("clerk-add", "add a clerk; prints the clerk's token once (daemon must be stopped)");
    c.clerk_add->add_option("--name", c.clerk_name, "the clerk's name, as journaled")->required();
    c.clerk_add->add_option("--roles", c.clerk_roles, "comma-separated: hotlist, registry, settlement, read")->required();
    c.clerk_list = admin->add_subcommand("clerk-list", "list clerk tokens: name, roles or revoked, created (never a token or hash)");
    c.clerk_revoke = admin->add_subcommand("clerk-revoke", "revoke every token of a clerk, journaled (daemon must be stopped)");
    c.clerk_revoke->add_option("--name", c.revoke_name, "the clerk's name")->required();
    c.issue_tokens = admin->add_subcommand("issue-tokens", "write a token file per card (daemon must be stopped)");
    c.issue_tokens->add_option("--out", c.tokens_out, "directory for <card number>.token files (0600)")->required();
    c.issue_tokens->add_option("--card", c.token_cards, "16-digit card number (repeatable; none: every card without a token)");
}

// A data directory that has applied or published journal messages is a cluster node's copy: a change
// made here would reach no other node (docs/CLUSTER.md "Seeding"). The reason, or nullopt.
std::optional<std::string> cluster_copy(const std::string& dir) {
    ledger::Options options;
    options.directory = dir;
    options.map_size_bytes = map_size_bytes;
    options.read_only = true;
    auto opened = ledger::Ledger::open(options);
    if (!opened) return std::nullopt;  // the command itself reports what is wrong with the directory
    auto position = (*opened)->replicated_position();
    if (!position || *position == 0) return std::nullopt;
    return fmt::format(
        "{} is a cluster node's copy (journal stream position {}): a change made here would reach no other node; "
        "make it through the primary's clerk API (docs/CLUSTER.md)",
        dir, *position);
}

int run_admin_offline(const AdminCommands& c, const std::string& data_dir) {
    const bool writes = c.load->parsed() || c.card_status->parsed() || c.terminal_status->parsed() || c.clerk_add->parsed() ||
                        c.clerk_revoke->parsed() || c.issue_tokens->parsed();
    if (writes) {
        if (auto refused = cluster_copy(data_dir)) return fail(exit_bad_input, *refused);
    }
    if (c.load->parsed()) return admin_load(data_dir, c.registry_file);
    if (c.list->parsed()) return admin_list(data_dir, c.what);
    if (c.card_status->parsed()) return admin_card_status(data_dir, c.asn_text, c.status_text);
    if (c.terminal_status->parsed()) return admin_terminal_status(data_dir, c.terminal_text, c.status_text);
    if (c.clerk_add->parsed()) return admin_clerk_add(data_dir, c.clerk_name, c.clerk_roles);
    if (c.clerk_list->parsed()) return admin_clerk_list(data_dir);
    if (c.clerk_revoke->parsed()) return admin_clerk_revoke(data_dir, c.revoke_name);
    if (c.issue_tokens->parsed()) return admin_issue_tokens(data_dir, c.tokens_out, c.token_cards);
    return exit_usage;
}

// With --token-file (or a grant command) through the serving daemon's API; otherwise on the directory,
// saying where the API is when a serving daemon holds it.
int run_admin(const AdminCommands& c, const std::string& data_dir) {
    if ((c.remote.active() && !c.list->parsed()) || c.remote.grant_command())
        return admin::run_remote(c.remote, data_dir, remote_command(c));
    const int code = run_admin_offline(c, data_dir);
    if (code == exit_locked) {
        if (const std::string hint = admin::served_hint(data_dir); !hint.empty()) fail(code, hint);
    }
    return code;
}

// admin SUBCOMMAND: every subcommand takes --data (and --map-size) from `admin`.
void add_admin_commands(CLI::App& app, AdminCommands& c, std::string& data_dir, std::string& map_size_text,
                        const std::string& map_size_help) {
    auto* admin = app.add_subcommand("admin", "registries: cards, participants, terminals, risk flags");
    admin->require_subcommand(1);
    // `admin SUBCOMMAND --data DIR` too (the contract's spelling): the subcommands, created below,
    // inherit the fallthrough and hand --data up to `admin`.
    admin->fallthrough();
    admin->add_option("--data", data_dir, "data directory")->required();
    admin->add_option("--map-size", map_size_text, map_size_help);
    c.load = admin->add_subcommand("load", "load a registry JSON file (idempotent; daemon must be stopped)");
    c.load->add_option("FILE", c.registry_file, "registry JSON (clearing/README.md)")->required();
    c.list = admin->add_subcommand("list", "print a registry as JSON");
    c.list->add_option("WHAT", c.what, "cards | participants | terminals | risk | hotlist")
        ->required()
        ->check(CLI::IsMember({"cards", "participants", "terminals", "risk", "hotlist"}));
    c.card_status = admin->add_subcommand("card-status", "set a card's status (lost / blocked cards are refused online)");
    c.card_status->add_option("ASN", c.asn_text, "20 digits")->required();
    c.card_status->add_option("STATUS", c.status_text, "active | lost | blocked")->required();
    c.terminal_status =
        admin->add_subcommand("terminal-status", "set a terminal's status (suspended / retired terminals get 58 on every request)");
    c.terminal_status->add_option("TERMINAL", c.terminal_text, "field 41, 8 characters")->required();
    c.terminal_status->add_option("STATUS", c.status_text, "active | suspended | retired")->required();
    add_token_commands(admin, c);
    c.remote.add_to(admin);
}

// Options renamed to the names every binary uses (docs/CLI.md "Option names"); the old names work
// until the next release, with a warning.
constexpr std::array<cmdline::Rename, 3> renamed_options{
    {{"--read-idle-timeout-s", "--idle-timeout-s"}, {"--load-timeout", "--load-timeout-s"}, {"--hold-timeout", "--hold-timeout-s"}}};

constexpr std::string_view exit_code_table =
    "Exit codes:\n"
    "  0  ok\n"
    "  1  check found a problem, or an internal error\n"
    "  2  usage: a bad command line or config file\n"
    "  3  the data directory is in use by another coconut-clearingd\n"
    "  4  storage: the data directory cannot be opened or written\n"
    "  5  bad registry input\n"
    "  6  cannot listen: the ISO 8583 or HTTP address is in use or not allowed\n"
    "  7  the HSM client key file is missing or malformed\n"
    "  8  cluster: NATS unreachable, a bad cluster key, a journal message it cannot apply";

// What `config check` verifies beyond each option's own check: the addresses, TLS and the CPU layout
// (files named are not opened: the config may be checked on another machine).
std::optional<std::string> check_serve_settings(const ServeOptions& o, const std::string& map_size_text, const ClusterFlags& cluster) {
    if (auto listen = hsm::wire::parse_endpoint(o.iso_listen, true); !listen) return "iso-listen: " + listen.error().message;
    if (!o.http_listen.empty()) {
        if (auto http_listen = hsm::wire::parse_endpoint(o.http_listen, true); !http_listen)
            return "http-listen: " + http_listen.error().message;
    }
    if (auto endpoints = hsm::wire::parse_endpoints(o.hsm); !endpoints) return "hsm: " + endpoints.error().message;
    const bool any_tls_file = !o.tls_cert.empty() || !o.tls_key.empty() || !o.tls_ca.empty();
    if (o.insecure_terminals && any_tls_file) return "insecure-terminals and tls-cert/tls-key/tls-ca exclude each other";
    if (!o.insecure_terminals && (o.tls_cert.empty() || o.tls_key.empty() || o.tls_ca.empty()))
        return "terminals connect over mutual TLS: give tls-cert, tls-key and tls-ca, or insecure-terminals = true";
    if (auto layout = plan_cpu_layout(o.writer_cpu); !layout) return "writer-cpu: " + layout.error().message;
    if (!map_size_text.empty()) {
        if (auto parsed = parse_map_size(map_size_text); !parsed) return "map-size " + map_size_text + ": " + parsed.error();
    }
    if (cluster.node.empty() != cluster.nats.empty() || cluster.node.empty() != cluster.key_file.empty())
        return "a cluster node needs cluster-node, nats and cluster-key together";
    return std::nullopt;
}

int main(int argc, char** argv) {
    CLI::App app{"coconut-clearingd: the clearing daemon (ISO 8583 for terminals, LMDB ledger, TAC verification)"};
    app.require_subcommand(1);

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
    add_hsm_options(serve_cmd, serve_options);
    add_terminal_options(serve_cmd, serve_options);
    add_engine_options(serve_cmd, serve_options);
    add_http_options(serve_cmd, serve_options);
    cmdline::LogFlags log_flags;
    cmdline::add_log_options(serve_cmd, log_flags);
    cmdline::add_config_file(app, serve_cmd, renamed_options);
    ClusterFlags cluster;
    serve_cmd->add_option("--cluster-node", cluster.node, "run as this node of a clearing cluster (clearing/README.md \"Cluster\")")
        ->group("Cluster");
    serve_cmd->add_option("--nats", cluster.nats, "NATS servers, comma-separated (tls://HOST:PORT)")->group("Cluster");
    serve_cmd->add_option("--nats-user", cluster.nats_user, "this node's NATS user")->group("Cluster");
    serve_cmd->add_option("--nats-password-file", cluster.nats_password_file, "file holding the NATS user's password")->group("Cluster");
    serve_cmd->add_option("--nats-ca", cluster.nats_ca, "PEM CA of the NATS servers' certificates (TLS)")->group("Cluster");
    serve_cmd->add_option("--nats-cert", cluster.nats_cert, "PEM client certificate for NATS")->group("Cluster");
    serve_cmd->add_option("--nats-key", cluster.nats_key, "PEM key of --nats-cert")->group("Cluster");
    serve_cmd
        ->add_option("--cluster-key", cluster.key_file,
                     "the key every clearing node seals journal messages with (coconut-clearingd cluster-key)")
        ->group("Cluster");
    serve_cmd->add_option("--cluster-status-file", cluster.status_file, "JSON: this node's role and applied position, kept current")
        ->group("Cluster");
    serve_cmd->add_option("--lease-ttl-ms", cluster.lease_ttl_ms, "the leadership lease's lifetime")
        ->capture_default_str()
        ->group("Cluster");
    serve_cmd
        ->add_option("--lease-renew-ms", cluster.lease_renew_ms,
                     "how often the primary renews the lease (0: the ttl / 3); at or above the ttl the primary loses the lease "
                     "between renewals and learns it from a refused publish — for tests of that case only")
        ->capture_default_str()
        ->group("Cluster");
    serve_cmd->add_option("--stream-replicas", cluster.replicas, "replicas of the journal stream and the lease")
        ->capture_default_str()
        ->check(CLI::IsMember({1, 3, 5}))
        ->group("Cluster");
    serve_cmd->add_option("--stream-keep-days", cluster.keep_days, "days the journal stream keeps (snapshots cover the rest)")
        ->capture_default_str()
        ->check(CLI::Range(1, 3650))
        ->group("Cluster");
    serve_cmd->add_option("--publish-deadline-ms", cluster.publish_deadline_ms, "how long a commit waits for the journal stream")
        ->capture_default_str()
        ->group("Cluster");
    std::string cluster_key_out;
    auto* cluster_key_cmd =
        app.add_subcommand("cluster-key", "write a new random cluster key (give every clearing node a copy, mode 0600)");
    cluster_key_cmd->add_option("--out", cluster_key_out, "the key file to create")->required();

    JoinFlags join;
    auto* join_cmd =
        app.add_subcommand("join",
                           "install a running node's snapshot (ledger + shared files) as this node's data directory (clearing/README.md "
                           "\"Joining a node\")");
    join_cmd->add_option("--from", join.from, "the peer's HTTP API, https://HOST:PORT (http:// on loopback only)")->required();
    join_cmd->add_option("--token-file", join.token_file, "file holding a clerk token with the role cluster")->required();
    join_cmd->add_option("--ca", join.ca, "https://: PEM CA the peer's HTTP certificate must chain to");
    join_cmd->add_option("--data", join.data, "the data directory to create (missing or empty)")->required();
    join_cmd->add_flag("--replace", join.replace, "replace a non-empty data directory (no daemon may serve it; its ledger is lost)");
    join_cmd->add_option("--timeout-s", join.timeout_s, "bound on the whole download")->capture_default_str()->check(CLI::Range(1, 86400));

    std::string data_dir;
    bool as_json = false;
    auto* check_cmd = app.add_subcommand("check", "verify every ledger and registry invariant; exit 1 on a violation");
    check_cmd->add_option("--data", data_dir, "data directory")->required();
    check_cmd->add_option("--map-size", map_size_text, map_size_help);
    check_cmd->add_flag("--json", as_json, "machine-readable report");
    AdminCommands admin;
    add_admin_commands(app, admin, data_dir, map_size_text, map_size_help);
    BackupCommands backup;
    add_backup_commands(app, backup);
    std::string config_file;
    auto* config_check_cmd = cmdline::add_config_check_command(app, config_file);
    cmdline::set_conventions(app, "coconut-clearingd", exit_code_table);

    if (auto exit = cmdline::parse(app, argc, argv, "coconut-clearingd", renamed_options)) return *exit;
    if (config_check_cmd->parsed()) {
        return cmdline::check_config(app, serve_cmd, config_file, "coconut-clearingd",
                                     [&] { return check_serve_settings(serve_options, map_size_text, cluster); });
    }
    if (!map_size_text.empty()) {
        auto parsed = parse_map_size(map_size_text);
        if (!parsed) return fail(exit_usage, "--map-size " + map_size_text + ": " + parsed.error());
        map_size_bytes = *parsed;
    }
    try {
        if (serve_cmd->parsed()) {
            cmdline::configure_log("coconut-clearingd", log_flags);
            if (cluster.node.empty() != cluster.nats.empty() || cluster.node.empty() != cluster.key_file.empty())
                return fail(exit_usage, "a cluster node needs --cluster-node, --nats and --cluster-key together");
            return serve(serve_options, cluster);
        }
        if (cluster_key_cmd->parsed()) {
            if (auto written = write_cluster_key(cluster_key_out); !written) return fail(exit_storage, written.error());
            std::cout << "coconut-clearingd: wrote a new cluster key to " << cluster_key_out << "\n";
            return exit_ok;
        }
        if (check_cmd->parsed()) return run_check(data_dir, as_json);
        if (join_cmd->parsed()) return run_join(join);
        if (backup.backup->parsed() || backup.restore->parsed()) {
            auto done = run_backup_command(backup);
            if (!done) return fail(exit_for(done.error()), done.error().message);
            std::cout << *done;
            return exit_ok;
        }
        return run_admin(admin, data_dir);
    } catch (const std::exception& e) {
        return fail(exit_check_failed, std::string("internal error: ") + e.what());
    }
}
