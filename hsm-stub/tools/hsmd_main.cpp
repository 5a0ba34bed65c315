// coconut-hsmd — the HSM daemon and its local ceremony commands.
//
//   coconut-hsmd init   --store DIR
//   coconut-hsmd serve  --store DIR --listen 127.0.0.1:7501 [--threads N] [--allow ADDR[/PREFIX],…] [--connections-max N]
//                       [--connections-per-address N] [--connections-per-client N] [--idle-timeout-ms MS]
//                       [--refusal-audit-interval-ms MS] [--ready-file F] [--instance NAME] [--config FILE] [--log-*]
//                       [--http-port PORT [--http-host ADDR] [--http-ready-file F]]   (/healthz, /metrics)
//   coconut-hsmd config check FILE
//   coconut-hsmd key import   --store DIR --label L --version V --usage U [--components 2|3]   (components on stdin)
//   coconut-hsmd key generate --store DIR --label L --version V --usage U
//   coconut-hsmd key list     --store DIR [--json]
//   coconut-hsmd key retire   --store DIR --label L --version V
//   coconut-hsmd client add    --store DIR --id ID --key-out FILE [--permissions tac,load,…]
//   coconut-hsmd client list   --store DIR [--json]
//   coconut-hsmd client remove --store DIR --id ID
//   coconut-hsmd audit verify  --store DIR
//   coconut-hsmd replicate     --store DIR --to COPY      (a second daemon's store: README.md "Two HSMs")
//   coconut-hsmd ca init        --store DIR [--name CN] [--validity-days D]   (idempotent; key never leaves)
//   coconut-hsmd ca certificate --store DIR [--out FILE]
//
// Exit status: 0 success, 1 an operating error (message on stderr), 2 a usage error, 6 cannot listen.
// A running daemon picks up ceremony changes on SIGHUP; SIGTERM / SIGINT stop it.
#include <coconut/core/admission.hpp>
#include <coconut/cmdline/cmdline.hpp>
#include <coconut/core/log.hpp>
#include <coconut/hsm/audit.hpp>
#include <coconut/hsm/ca.hpp>
#include <coconut/hsm/hsm.hpp>
#include <coconut/hsm/protocol.hpp>
#include <coconut/hsm/server.hpp>

#include "hsmd_status.hpp"

#include <CLI/CLI.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <sodium.h>

#include <sys/prctl.h>
#include <sys/resource.h>
#include <termios.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <csignal>
#include <iostream>
#include <thread>

namespace hsm = coconut::hsm;
using coconut::Bytes;
using coconut::ByteView;

namespace {

namespace cmdline = coconut::cmdline;

// Options renamed to the names every binary uses (docs/CLI.md "Option names"); the old names work until
// the next release, with a warning.
constexpr std::array<cmdline::Rename, 3> renamed_options{{{"--max-connections", "--connections-max"},
                                                          {"--max-connections-per-address", "--connections-per-address"},
                                                          {"--max-connections-per-client", "--connections-per-client"}}};

constexpr std::string_view exit_code_table =
    "Exit codes:\n"
    "  0  ok\n"
    "  1  an operating error: the store, a key, the audit log (message on stderr)\n"
    "  2  usage: a bad command line or config file\n"
    "  6  cannot listen: the address is in use or not allowed";

int report(const hsm::Failure& failure) {
    std::cerr << fmt::format("coconut-hsmd: {} ({})\n", failure.message, hsm::errc_name(failure.code));
    return 1;
}

std::string kcv_hex(const coconut::crypto::Kcv& kcv) { return coconut::to_hex(kcv); }

// Opens the store under the ceremony lock, applies `change`, saves, and audits it.
template <class Change>
int ceremony(const std::string& dir, const std::string& command, Change change) {
    hsm::StorePaths paths{dir};
    auto lock = hsm::StoreLock::acquire(paths);
    if (!lock) return report(lock.error());
    auto store = hsm::KeyStore::open(dir);
    if (!store) return report(store.error());
    auto audit = hsm::AuditLog::open(paths.audit_log(), store->audit_key());
    if (!audit) return report(audit.error());
    hsm::AuditEntry entry{hsm::ceremony_actor(), command, "", {}, ""};
    auto changed = change(store.value(), entry);
    if (!changed) {
        entry.result = fmt::format("{}: {}", hsm::errc_name(changed.error().code), changed.error().message);
        (void)audit.value()->append(entry);
        return report(changed.error());
    }
    if (auto saved = store->save(); !saved) return report(saved.error());
    entry.result = entry.result.empty() ? "ok" : entry.result;
    if (auto logged = audit.value()->append(entry); !logged) return report(logged.error());
    audit.value()->sync();
    return 0;
}

// Reads one hex component from stdin; echo is off when stdin is a terminal.
std::optional<Bytes> read_component(std::size_t index, std::size_t count) {
    const bool tty = ::isatty(STDIN_FILENO) != 0;
    termios saved{};
    if (tty) {
        std::cerr << fmt::format("component {} of {} (32 hex digits, not echoed): ", index, count) << std::flush;
        ::tcgetattr(STDIN_FILENO, &saved);
        termios quiet = saved;
        quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
        ::tcsetattr(STDIN_FILENO, TCSANOW, &quiet);
    }
    std::string line;
    const bool got = static_cast<bool>(std::getline(std::cin, line));
    if (tty) {
        ::tcsetattr(STDIN_FILENO, TCSANOW, &saved);
        std::cerr << "\n";
    }
    if (!got) return std::nullopt;
    auto bytes = coconut::from_hex(line);
    sodium_memzero(line.data(), line.size());
    return bytes;
}

int key_import(const std::string& dir, const std::string& label, unsigned version, hsm::KeyUsage usage, hsm::KeyType type,
               std::size_t components) {
    return ceremony(dir, "key-import", [&](hsm::KeyStore& store, hsm::AuditEntry& entry) -> hsm::Outcome<coconut::Ok> {
        entry.key_label = label;
        entry.key_versions = {static_cast<std::uint8_t>(version)};
        std::vector<coconut::crypto::Key16> parts;
        for (std::size_t i = 1; i <= components; ++i) {
            auto bytes = read_component(i, components);
            if (!bytes || bytes->size() != 16) {
                if (bytes) sodium_memzero(bytes->data(), bytes->size());
                return hsm::fail(hsm::Errc::bad_request, fmt::format("component {} must be 32 hex digits (16 bytes)", i));
            }
            parts.emplace_back(*bytes);
            sodium_memzero(bytes->data(), bytes->size());
            std::cout << fmt::format("component {} KCV {}\n", i, kcv_hex(coconut::crypto::kcv(parts.back()))) << std::flush;
        }
        auto key = hsm::combine_key_components(parts);
        if (!key) return coconut::Unexpected<hsm::Failure>{key.error()};
        auto info = store.add_key(label, static_cast<std::uint8_t>(version), type, usage, key.value());
        if (!info) return coconut::Unexpected<hsm::Failure>{info.error()};
        std::cout << fmt::format("imported {}:{} ({}, {}) KCV {}\n", info->label, info->version, hsm::key_type_name(info->type),
                                 hsm::key_usage_name(info->usage), kcv_hex(info->kcv));
        entry.result = fmt::format("imported from {} components, KCV {}", components, kcv_hex(info->kcv));
        return coconut::Ok{};
    });
}

int key_generate(const std::string& dir, const std::string& label, unsigned version, hsm::KeyUsage usage, hsm::KeyType type) {
    return ceremony(dir, "key-generate", [&](hsm::KeyStore& store, hsm::AuditEntry& entry) -> hsm::Outcome<coconut::Ok> {
        entry.key_label = label;
        entry.key_versions = {static_cast<std::uint8_t>(version)};
        const auto key = hsm::generate_key();
        auto info = store.add_key(label, static_cast<std::uint8_t>(version), type, usage, key);
        if (!info) return coconut::Unexpected<hsm::Failure>{info.error()};
        std::cout << fmt::format("generated {}:{} ({}, {}) KCV {}\n", info->label, info->version, hsm::key_type_name(info->type),
                                 hsm::key_usage_name(info->usage), kcv_hex(info->kcv));
        entry.result = fmt::format("generated, KCV {}", kcv_hex(info->kcv));
        return coconut::Ok{};
    });
}

int key_retire(const std::string& dir, const std::string& label, unsigned version) {
    return ceremony(dir, "key-retire", [&](hsm::KeyStore& store, hsm::AuditEntry& entry) -> hsm::Outcome<coconut::Ok> {
        entry.key_label = label;
        entry.key_versions = {static_cast<std::uint8_t>(version)};
        auto info = store.retire_key(label, static_cast<std::uint8_t>(version));
        if (!info) return coconut::Unexpected<hsm::Failure>{info.error()};
        std::cout << fmt::format("retired {}:{} (KCV {})\n", info->label, info->version, kcv_hex(info->kcv));
        return coconut::Ok{};
    });
}

int key_list(const std::string& dir, bool json) {
    auto store = hsm::KeyStore::open(dir);
    if (!store) return report(store.error());
    const auto keys = store->list();
    if (json) {
        nlohmann::json out = nlohmann::json::array();
        for (const auto& k : keys)
            out.push_back({{"label", k.label},
                           {"version", k.version},
                           {"type", hsm::key_type_name(k.type)},
                           {"usage", hsm::key_usage_name(k.usage)},
                           {"status", k.status == hsm::KeyStatus::active ? "active" : "retired"},
                           {"kcv", kcv_hex(k.kcv)},
                           {"created_unix_s", k.created_unix_s},
                           {"retired_unix_s", k.retired_unix_s}});
        std::cout << out.dump(2) << "\n";
        return 0;
    }
    std::cout << fmt::format("{:<32} {:>7} {:<6} {:<14} {:<8} {}\n", "LABEL", "VERSION", "TYPE", "USAGE", "STATUS", "KCV");
    for (const auto& k : keys)
        std::cout << fmt::format("{:<32} {:>7} {:<6} {:<14} {:<8} {}\n", k.label, k.version, hsm::key_type_name(k.type),
                                 hsm::key_usage_name(k.usage), k.status == hsm::KeyStatus::active ? "active" : "retired", kcv_hex(k.kcv));
    return 0;
}

int client_add(const std::string& dir, const std::string& id, const std::string& key_out, std::uint32_t permissions) {
    if (std::filesystem::exists(key_out))
        return report({hsm::Errc::io_error, fmt::format("{} exists; refusing to overwrite a client key file", key_out)});
    return ceremony(dir, "client-add", [&](hsm::KeyStore& store, hsm::AuditEntry& entry) -> hsm::Outcome<coconut::Ok> {
        auto key = store.add_client(id, permissions);
        if (!key) return coconut::Unexpected<hsm::Failure>{key.error()};
        if (auto written = hsm::wire::write_client_credentials(key_out, {id, key.value()}); !written)
            return coconut::Unexpected<hsm::Failure>{written.error()};
        std::cout << fmt::format("client {} added (permissions {}); key written to {}\n", id, hsm::permissions_to_string(permissions),
                                 key_out);
        entry.result = fmt::format("client {} added, permissions {}", id, hsm::permissions_to_string(permissions));
        return coconut::Ok{};
    });
}

int client_remove(const std::string& dir, const std::string& id) {
    return ceremony(dir, "client-remove", [&](hsm::KeyStore& store, hsm::AuditEntry& entry) -> hsm::Outcome<coconut::Ok> {
        if (auto removed = store.remove_client(id); !removed) return coconut::Unexpected<hsm::Failure>{removed.error()};
        std::cout << fmt::format("client {} removed\n", id);
        entry.result = fmt::format("client {} removed", id);
        return coconut::Ok{};
    });
}

int client_list(const std::string& dir, bool json) {
    auto store = hsm::KeyStore::open(dir);
    if (!store) return report(store.error());
    if (json) {
        nlohmann::json out = nlohmann::json::array();
        for (const auto& c : store->clients())
            out.push_back({{"id", c.id}, {"permissions", hsm::permissions_to_string(c.permissions)}, {"created_unix_s", c.created_unix_s}});
        std::cout << out.dump(2) << "\n";
        return 0;
    }
    for (const auto& c : store->clients()) std::cout << fmt::format("{:<32} {}\n", c.id, hsm::permissions_to_string(c.permissions));
    return 0;
}

// The island CA certificate as PEM, to `out` (0644) or stdout; a one-line summary on stderr.
int print_ca_certificate(const coconut::Bytes& der, const std::string& out, bool created) {
    auto certificate = coconut::tls::parse_certificate(der);
    if (!certificate) return report({hsm::Errc::store_corrupt, "the sealed CA certificate does not parse"});
    const auto info = coconut::tls::describe(*certificate);
    const std::time_t until = std::chrono::system_clock::to_time_t(info.not_after);
    char date[16];
    std::strftime(date, sizeof date, "%Y-%m-%d", std::gmtime(&until));
    std::cerr << fmt::format("island CA {} \"{}\" serial {}, valid until {} (key sealed in the store, never exported)\n",
                             created ? "created:" : "exists:", info.subject.common_name, info.serial_hex, date);
    if (out.empty()) {
        std::cout << coconut::tls::to_pem(*certificate) << std::flush;
        return 0;
    }
    if (auto written = coconut::tls::write_certificate(out, *certificate); !written)
        return report({hsm::Errc::io_error, written.error().message});
    return 0;
}

int ca_init(const std::string& dir, const std::string& name, std::uint32_t validity_days, const std::string& out) {
    {
        auto store = hsm::KeyStore::open(dir);
        if (!store) return report(store.error());
        if (auto existing = hsm::ca_certificate(store.value())) return print_ca_certificate(*existing, out, false);
    }
    coconut::Bytes der;
    const int code = ceremony(dir, "ca-init", [&](hsm::KeyStore& store, hsm::AuditEntry& entry) -> hsm::Outcome<coconut::Ok> {
        entry.key_label = std::string(hsm::ca_label);
        auto made = hsm::create_ca(store, name, validity_days);
        if (!made) return coconut::Unexpected<hsm::Failure>{made.error()};
        der = made->certificate_der;
        auto certificate = coconut::tls::parse_certificate(der);
        entry.result = certificate ? fmt::format("EC P-256 key generated and sealed; certificate CN={} serial {}", name,
                                                 coconut::tls::describe(*certificate).serial_hex)
                                   : "created";
        return coconut::Ok{};
    });
    return code != 0 ? code : print_ca_certificate(der, out, true);
}

int ca_show(const std::string& dir, const std::string& out) {
    auto store = hsm::KeyStore::open(dir);
    if (!store) return report(store.error());
    auto der = hsm::ca_certificate(store.value());
    if (!der) return report(der.error());
    return print_ca_certificate(*der, out, false);
}

int audit_verify(const std::string& dir) {
    auto store = hsm::KeyStore::open(dir);
    if (!store) return report(store.error());
    auto summary = hsm::AuditLog::verify(hsm::StorePaths{dir}.audit_log(), store->audit_key());
    if (!summary) return report(summary.error());
    std::cout << fmt::format("audit log OK: {} lines, last seq {}, last hash {}\n", summary->lines, summary->last_seq,
                             summary->last_hash_hex);
    return 0;
}

// Warns on stderr when the allow-list and the listen address do not fit together.
void warn_about_allow(const hsm::wire::Endpoint& endpoint, const coconut::core::AddressList& allow) {
    boost::system::error_code ec;
    const auto address = boost::asio::ip::make_address(endpoint.host, ec);
    const bool loopback_listen = !ec && address.is_loopback();
    if (allow.is_everything())
        coconut::log::warning("daemon",
                              "--allow admits every address: anyone who can reach the port can hold connection "
                              "slots and fill the refusal counts; name the clearing and issuance hosts instead");
    else if (!loopback_listen && allow.to_string() == coconut::core::AddressList::loopback().to_string())
        coconut::log::warning("daemon", fmt::format("listening on {} but only loopback peers are allowed; name the client hosts "
                                                    "with --allow (e.g. --allow 127.0.0.1,10.0.0.0/8)",
                                                    endpoint.host));
}

// A copy of the store for a second daemon: one audit line in each store's log (the copy's log starts
// with it, naming the store it copies and that store's audit seq, so the two logs never share a chain).
int replicate(const std::string& from, const std::string& to) {
    auto copied = hsm::replicate_store(from, to);
    if (!copied) return report(copied.error());
    const std::string kind{hsm::replication_kind_name(copied->kind)};
    auto source = hsm::KeyStore::open(from);
    if (!source) return report(source.error());
    auto source_log = hsm::AuditLog::open(hsm::StorePaths{from}.audit_log(), source->audit_key());
    if (!source_log) return report(source_log.error());
    auto seq = source_log.value()->append(
        {hsm::ceremony_actor(), "replicate", "", {}, fmt::format("copy {} {}: store generation {}", to, kind, copied->generation)});
    if (!seq) return report(seq.error());
    auto copy_log = hsm::AuditLog::open(hsm::StorePaths{to}.audit_log(), source->audit_key());
    if (!copy_log) return report(copy_log.error());
    const std::string result =
        fmt::format("copy of {} at store generation {} (its audit.log seq {}){}", from, copied->generation, seq.value(),
                    copied->kind == hsm::Replication::Kind::updated ? fmt::format(", was generation {}", copied->previous_generation)
                                                                    : std::string());
    if (auto line = copy_log.value()->append({hsm::ceremony_actor(), "replica-" + kind, "", {}, result}); !line)
        return report(line.error());
    source_log.value()->sync();
    copy_log.value()->sync();
    std::cout << fmt::format("{}: {} copy of {} (store generation {}{}){}\n", to, kind, from, copied->generation,
                             copied->kind == hsm::Replication::Kind::updated ? fmt::format(", was {}", copied->previous_generation) : "",
                             copied->kind == hsm::Replication::Kind::updated ? "; send SIGHUP to the daemon serving it" : "");
    return 0;
}

int serve(const std::string& dir, const std::string& listen, unsigned threads, hsm::ServerConfig config, const std::string& ready_file,
          const std::string& instance, const hsm::StatusOptions& status_options) {
    auto endpoint = hsm::wire::parse_endpoint(listen, true);
    if (!endpoint) {
        std::cerr << fmt::format("coconut-hsmd: --listen: {}\n", endpoint.error().message);
        return 2;
    }
    // Every connection costs a descriptor: the default soft limit (often 1,024) would be reached before
    // the connection limits.
    const std::uint64_t open_files = coconut::core::raise_open_file_limit();
    auto store = hsm::KeyStore::open(dir);
    if (!store) return report(store.error());
    auto shared_store = std::make_shared<const hsm::KeyStore>(std::move(store.value()));
    auto audit = hsm::AuditLog::open(hsm::StorePaths{dir}.audit_log(), shared_store->audit_key());
    if (!audit) return report(audit.error());

    boost::asio::io_context io(static_cast<int>(threads));
    config.listen = endpoint.value();
    warn_about_allow(config.listen, config.allow);
    hsm::Server server(io, shared_store, *audit.value(), config);
    auto port = server.start();
    if (!port) {
        report(port.error());
        return coconut::cmdline::exit_listen;
    }
    (void)audit.value()->append({"daemon",
                                 "serve-start",
                                 "",
                                 {},
                                 fmt::format("{}listening on {}:{}, store generation {}, allow {}",
                                             instance.empty() ? std::string() : fmt::format("instance {}, ", instance), endpoint->host,
                                             port.value(), shared_store->generation(), config.allow.to_string())});

    std::string status_error;
    const auto status = status_options.start(server, status_error);
    if (!status_error.empty()) return report({hsm::Errc::io_error, status_error});

    boost::asio::signal_set signals(io, SIGINT, SIGTERM, SIGHUP);
    std::function<void(const boost::system::error_code&, int)> on_signal = [&](const boost::system::error_code& ec, int signal) {
        if (ec) return;
        if (signal == SIGHUP) {
            auto reloaded = hsm::KeyStore::open(dir);
            if (reloaded) {
                const auto generation = reloaded->generation();
                server.reload(std::make_shared<const hsm::KeyStore>(std::move(reloaded.value())));
                (void)audit.value()->append({"daemon", "reload", "", {}, fmt::format("store generation {}", generation)});
                coconut::log::info("daemon", fmt::format("reloaded the key store (generation {})", generation));
            } else {
                (void)audit.value()->append({"daemon", "reload", "", {}, fmt::format("refused: {}", reloaded.error().message)});
                coconut::log::error("daemon", "reload refused, still serving the old store: " + reloaded.error().message);
            }
            signals.async_wait(on_signal);
            return;
        }
        server.stop();  // writes the refusal tally first
        (void)audit.value()->append({"daemon", "serve-stop", "", {}, fmt::format("signal {}", signal)});
        io.stop();
    };
    signals.async_wait(on_signal);

    if (!ready_file.empty()) {
        const std::string text = fmt::format("{}\n", port.value());
        const std::string temp = ready_file + ".tmp";
        FILE* f = std::fopen(temp.c_str(), "w");
        if (f == nullptr || std::fputs(text.c_str(), f) < 0 || std::fclose(f) != 0 || std::rename(temp.c_str(), ready_file.c_str()) != 0)
            return report({hsm::Errc::io_error, fmt::format("cannot write ready file {}", ready_file)});
    }
    coconut::log::info("daemon",
                       fmt::format("listening on {}:{} ({} threads, at most {} connections, {} per address before "
                                   "authentication, {} per client; allow {}; open-file limit {})",
                                   endpoint->host, port.value(), threads, config.max_connections, config.max_connections_per_address,
                                   config.max_connections_per_client, config.allow.to_string(), open_files));

    // A handler that throws is a bug: record it, stop serving and exit non-zero rather than limp on.
    std::atomic<bool> crashed{false};
    auto run = [&] {
        try {
            io.run();
        } catch (const std::exception& e) {
            crashed = true;
            coconut::log::error("daemon", fmt::format("internal error: {}", e.what()));
            (void)audit.value()->append({"daemon", "serve-crash", "", {}, e.what()});
            io.stop();
        }
    };
    std::vector<std::thread> pool;
    for (unsigned i = 1; i < threads; ++i) pool.emplace_back(run);
    run();
    for (auto& t : pool) t.join();
    audit.value()->sync();
    return crashed ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
    if (sodium_init() < 0) {
        std::cerr << "coconut-hsmd: libsodium failed to initialise\n";
        return 1;
    }
    std::signal(SIGPIPE, SIG_IGN);
    // Key material must not end up in a core file or be readable through ptrace by other processes
    // of the same user.
    const rlimit no_core{0, 0};
    ::setrlimit(RLIMIT_CORE, &no_core);
    ::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    CLI::App app{"coconut-hsmd — the issuer's HSM: sealed key store, key ceremony, card services over TCP"};
    app.require_subcommand(1);
    std::string store_dir;
    auto add_store = [&](CLI::App* sub) { sub->add_option("--store", store_dir, "store directory")->required(); };

    auto* init = app.add_subcommand("init", "create a store: local master key (0600), sealed key store, audit log");
    add_store(init);

    std::string listen = fmt::format("127.0.0.1:{}", hsm::wire::default_port);
    unsigned threads = std::max(1u, std::thread::hardware_concurrency());
    const hsm::ServerConfig defaults;
    std::size_t max_connections = defaults.max_connections;
    std::size_t max_per_address = defaults.max_connections_per_address;
    std::size_t max_per_client = defaults.max_connections_per_client;
    std::string allow_text = defaults.allow.to_string();
    unsigned idle_timeout_ms = static_cast<unsigned>(defaults.idle_timeout.count());
    unsigned refusal_interval_ms = static_cast<unsigned>(defaults.refusal_audit_interval.count());
    std::string ready_file;
    auto* serve_cmd =
        app.add_subcommand("serve", "serve the HSM protocol (PROTOCOL.md) on TCP; limits: PROTOCOL.md, \"Connection limits\"");
    add_store(serve_cmd);
    serve_cmd->add_option("--listen", listen, "HOST:PORT (port 0 = any free port)")->capture_default_str();
    serve_cmd->add_option("--threads", threads, "I/O threads")->check(CLI::Range(1, 64))->capture_default_str();
    serve_cmd
        ->add_option("--allow", allow_text,
                     "client addresses allowed to connect: ADDR or ADDR/PREFIX, comma-separated (others are closed without a "
                     "word; 0.0.0.0/0,::/0 = anyone)")
        ->capture_default_str();
    serve_cmd->add_option("--connections-max,--max-connections", max_connections, "connections open at once, all clients together")
        ->check(CLI::Range(1, 4096))
        ->capture_default_str();
    serve_cmd
        ->add_option("--connections-per-address,--max-connections-per-address", max_per_address,
                     "connections one client address may hold before they authenticate")
        ->check(CLI::Range(1, 4096))
        ->capture_default_str();
    serve_cmd
        ->add_option("--connections-per-client,--max-connections-per-client", max_per_client,
                     "authenticated connections one client id may hold")
        ->check(CLI::Range(1, 4096))
        ->capture_default_str();
    serve_cmd->add_option("--idle-timeout-ms", idle_timeout_ms, "close connections idle this long")
        ->check(CLI::Range(100, 3'600'000))
        ->capture_default_str();
    serve_cmd
        ->add_option("--refusal-audit-interval-ms", refusal_interval_ms,
                     "write refusals before authentication as one audit line per this interval (and at stop)")
        ->check(CLI::Range(100, 3'600'000))
        ->capture_default_str();
    serve_cmd->add_option("--ready-file", ready_file, "write the bound port here once listening");
    std::string instance;
    hsm::StatusOptions status_options;
    status_options.add_to(serve_cmd);
    serve_cmd->add_option("--instance", instance,
                          "a name for this daemon in its audit log's serve-start line (two daemons on copies of one store)");
    cmdline::LogFlags log_flags;
    cmdline::add_log_options(serve_cmd, log_flags);
    cmdline::add_config_file(app, serve_cmd, renamed_options);

    std::string label;
    unsigned version = 0;
    std::string usage_text;
    std::string type_text = "tdes2";
    std::size_t components = 2;
    bool json = false;
    auto* key = app.add_subcommand("key", "key ceremony");
    key->require_subcommand(1);
    auto add_key_fields = [&](CLI::App* sub, bool with_usage) {
        add_store(sub);
        sub->add_option("--label", label, "key label")->required();
        sub->add_option("--version", version, "key version 1–255")->required()->check(CLI::Range(1, 255));
        if (with_usage) {
            sub->add_option("--usage", usage_text, "purchase | load | tac | internal-auth | maintenance | ssse-auth | transport")
                ->required();
            sub->add_option("--type", type_text, "tdes2 | sm4")->capture_default_str();
        }
    };
    auto* import = key->add_subcommand("import", "import a key from 2 or 3 components (hex, one per line on stdin)");
    add_key_fields(import, true);
    import->add_option("--components", components, "number of components")->check(CLI::Range(2, 3))->capture_default_str();
    auto* generate = key->add_subcommand("generate", "generate a random key");
    add_key_fields(generate, true);
    auto* list = key->add_subcommand("list", "list keys (never key bytes)");
    add_store(list);
    list->add_flag("--json", json, "JSON output");
    auto* retire = key->add_subcommand("retire", "retire a key version");
    add_key_fields(retire, false);

    std::string client_id;
    std::string key_out;
    std::string permissions_text = "all";
    auto* client = app.add_subcommand("client", "clients of the HSM link");
    client->require_subcommand(1);
    auto* client_add_cmd = client->add_subcommand("add", "register a client and write its key file (0600)");
    add_store(client_add_cmd);
    client_add_cmd->add_option("--id", client_id, "client id")->required();
    client_add_cmd->add_option("--key-out", key_out, "client key file to create")->required();
    client_add_cmd->add_option("--permissions", permissions_text, "key-info,issuance,tac,load,auth,ca,maintenance or all")
        ->capture_default_str();
    auto* client_list_cmd = client->add_subcommand("list", "list clients");
    add_store(client_list_cmd);
    client_list_cmd->add_flag("--json", json, "JSON output");
    auto* client_remove_cmd = client->add_subcommand("remove", "remove a client");
    add_store(client_remove_cmd);
    client_remove_cmd->add_option("--id", client_id, "client id")->required();

    std::string ca_name{hsm::ca_common_name_default};
    std::uint32_t ca_validity_days = hsm::ca_validity_days_default;
    std::string certificate_out;
    auto* ca = app.add_subcommand("ca", "the island CA for the ISO 8583 link's TLS (its key never leaves the store)");
    ca->require_subcommand(1);
    auto* ca_init_cmd = ca->add_subcommand("init", "generate the CA key and its certificate in the store (idempotent)");
    add_store(ca_init_cmd);
    ca_init_cmd->add_option("--name", ca_name, "the CA's common name")->capture_default_str();
    ca_init_cmd->add_option("--validity-days", ca_validity_days, "the CA certificate's validity")
        ->capture_default_str()
        ->check(CLI::Range(1u, hsm::ca_validity_days_max));
    ca_init_cmd->add_option("--out", certificate_out, "write the CA certificate (PEM) here (default: stdout)");
    auto* ca_certificate_cmd = ca->add_subcommand("certificate", "print (or write) the CA certificate, PEM");
    add_store(ca_certificate_cmd);
    ca_certificate_cmd->add_option("--out", certificate_out, "write it here (default: stdout)");

    auto* audit = app.add_subcommand("audit", "audit log");
    audit->require_subcommand(1);
    auto* verify = audit->add_subcommand("verify", "check the audit log's hash chain");
    add_store(verify);

    std::string copy_dir;
    auto* replicate_cmd =
        app.add_subcommand("replicate", "copy the sealed store (master.key, keys.sealed) for a second daemon, or bring a copy up to date");
    add_store(replicate_cmd);
    replicate_cmd->add_option("--to", copy_dir, "the copy's directory: new or empty, or an older copy of this store")->required();

    std::string config_file;
    auto* config_check_cmd = cmdline::add_config_check_command(app, config_file);
    cmdline::set_conventions(app, "coconut-hsmd", exit_code_table);

    if (auto exit = cmdline::parse(app, argc, argv, "coconut-hsmd", renamed_options)) return *exit;
    if (config_check_cmd->parsed()) {
        return cmdline::check_config(app, serve_cmd, config_file, "coconut-hsmd", [&]() -> std::optional<std::string> {
            if (auto endpoint = hsm::wire::parse_endpoint(listen, true); !endpoint) return "listen: " + endpoint.error().message;
            try {
                (void)coconut::core::AddressList::parse(allow_text);
            } catch (const std::invalid_argument& e) {
                return std::string("allow: ") + e.what();
            }
            return std::nullopt;
        });
    }

    auto parse_usage_and_type = [&]() -> std::optional<std::pair<hsm::KeyUsage, hsm::KeyType>> {
        const auto usage = hsm::parse_key_usage(usage_text);
        const auto type = hsm::parse_key_type(type_text);
        if (!usage) std::cerr << fmt::format("coconut-hsmd: unknown key usage '{}'\n", usage_text);
        if (!type) std::cerr << fmt::format("coconut-hsmd: unknown key type '{}'\n", type_text);
        if (!usage || !type) return std::nullopt;
        return std::pair{*usage, *type};
    };

    if (init->parsed()) {
        if (auto ok = hsm::KeyStore::init(store_dir); !ok) return report(ok.error());
        std::cout << fmt::format("created key store in {} (master key {}, mode 0600)\n", store_dir,
                                 hsm::StorePaths{store_dir}.master_key().string());
        return 0;
    }
    if (serve_cmd->parsed()) {
        cmdline::configure_log("coconut-hsmd", log_flags);
        hsm::ServerConfig config;
        try {
            config.allow = coconut::core::AddressList::parse(allow_text);
        } catch (const std::invalid_argument& e) {
            std::cerr << fmt::format("coconut-hsmd: --allow: {}\n", e.what());
            return 2;
        }
        config.max_connections = max_connections;
        config.max_connections_per_address = max_per_address;
        config.max_connections_per_client = max_per_client;
        config.idle_timeout = std::chrono::milliseconds(idle_timeout_ms);
        config.refusal_audit_interval = std::chrono::milliseconds(refusal_interval_ms);
        return serve(store_dir, listen, threads, std::move(config), ready_file, instance, status_options);
    }
    if (import->parsed() || generate->parsed()) {
        auto ut = parse_usage_and_type();
        if (!ut) return 2;
        return import->parsed() ? key_import(store_dir, label, version, ut->first, ut->second, components)
                                : key_generate(store_dir, label, version, ut->first, ut->second);
    }
    if (list->parsed()) return key_list(store_dir, json);
    if (retire->parsed()) return key_retire(store_dir, label, version);
    if (client_add_cmd->parsed()) {
        const auto permissions = hsm::parse_permissions(permissions_text);
        if (!permissions) {
            std::cerr << fmt::format(
                "coconut-hsmd: unknown permission list '{}' (use key-info,issuance,tac,load,auth,ca,maintenance or all)\n",
                permissions_text);
            return 2;
        }
        return client_add(store_dir, client_id, key_out, *permissions);
    }
    if (client_list_cmd->parsed()) return client_list(store_dir, json);
    if (client_remove_cmd->parsed()) return client_remove(store_dir, client_id);
    if (verify->parsed()) return audit_verify(store_dir);
    if (replicate_cmd->parsed()) return replicate(store_dir, copy_dir);
    if (ca_init_cmd->parsed()) return ca_init(store_dir, ca_name, ca_validity_days, certificate_out);
    if (ca_certificate_cmd->parsed()) return ca_show(store_dir, certificate_out);
    return 2;
}
