#include "cluster.hpp"

#include "cardholder_api.hpp"
#include "errors.hpp"

#include <coconut/cluster/nats_server_env.hpp>
#include <coconut/core/bytes.hpp>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <openssl/rand.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <thread>

namespace coconut::cli {

namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

// Waits of the cluster: NATS servers listening, a primary serving (a lease ttl plus catching up), every
// node applying the stream, the servers' shutdown.
constexpr auto nats_listen_wait = 20s;
constexpr auto primary_wait = 30s;
constexpr auto applied_wait = 60s;
constexpr auto poll_pause = 20ms;
// A node that exits by itself is started again (counted, and named in the summary), this often at most.
constexpr std::size_t node_exits_max = 3;
constexpr const char* node_names[] = {"a", "b", "c"};
constexpr const char* journal_stream_name = "COCONUT_JOURNAL";  // clearing/cluster/README.md "The journal stream"

double cluster_elapsed_s(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// `count` distinct ports free on loopback now (the kernel's choice, all bound at once so none repeats);
// the lease advertises a node's ISO 8583 port, so the nodes cannot listen on port 0.
std::vector<std::uint16_t> free_loopback_ports(std::size_t count) {
    std::vector<int> sockets;
    std::vector<std::uint16_t> ports;
    for (std::size_t i = 0; i < count; ++i) {
        const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in address{};
        address.sin_family = AF_INET;
        address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t length = sizeof address;
        if (fd >= 0) sockets.push_back(fd);
        if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
            ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0)
            break;
        ports.push_back(ntohs(address.sin_port));
    }
    for (const int fd : sockets) ::close(fd);
    if (ports.size() != count) fail(exit_codes::io_error, "cannot find free loopback ports");
    return ports;
}

bool loopback_accepts(std::uint16_t port) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = htons(port);
    const bool connected = ::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0;
    ::close(fd);
    return connected;
}

std::string random_password() {
    Bytes secret(16);
    if (RAND_bytes(secret.data(), static_cast<int>(secret.size())) != 1) fail(exit_codes::io_error, "no random bytes for a password");
    return to_hex(secret);
}

void write_secret(const fs::path& path, const std::string& text) {
    {
        std::ofstream out(path, std::ios::trunc);
        out << text;
        if (!out) fail(exit_codes::io_error, "cannot write " + path.string());
    }
    fs::permissions(path, fs::perms::owner_read | fs::perms::owner_write, fs::perm_options::replace);
}

std::string nats_server() {
    std::string found = find_tool("nats-server");
    if (found.empty() && ::access("/usr/sbin/nats-server", X_OK) == 0) found = "/usr/sbin/nats-server";
    if (found.empty()) fail(exit_codes::tool_failed, "nats-server not found (tools/setup.sh installs it)");
    return found;
}

std::string nats_quoted(const fs::path& path) { return "\"" + path.string() + "\""; }

}  // namespace

ClearingCluster::ClearingCluster(const WorldPaths& world, ClusterSetup setup)
    : world_(world), setup_(std::move(setup)), dir_(world.dir / "cluster") {
    std::error_code ec;
    fs::remove_all(dir_, ec);
    fs::create_directories(dir_ / "nats", ec);
    if (ec) fail(exit_codes::io_error, "cannot create " + (dir_ / "nats").string() + ": " + ec.message());
    nats_password_ = random_password();
    route_password_ = random_password();
    write_secret(dir_ / "nats" / "clearing.password", nats_password_ + "\n");
    make_certificates();
    run_tool_or_fail({require_tool("coconut-clearingd"), "cluster-key", "--out", (dir_ / "cluster.key").string()});
    // Per NATS server: client, route, monitoring; per node: ISO 8583, HTTP.
    const std::vector<std::uint16_t> ports = free_loopback_ports(nodes_count * 5);
    auto port = ports.begin();
    nats_.resize(nodes_count);
    for (auto& server : nats_) {
        server.client_port = *port++;
        server.route_port = *port++;
        server.monitor_port = *port++;
    }
    for (std::size_t i = 0; i < nodes_count; ++i) write_nats_config(i);
    start_nats();
    seed_nodes();
    nodes_.resize(nodes_count);
    for (std::size_t i = 0; i < nodes_count; ++i) {
        nodes_[i].name = node_names[i];
        nodes_[i].iso_port = *port++;
        nodes_[i].http_port = *port++;
    }
    // The first node creates the journal stream and the lease bucket; the others start once it serves
    // (three nodes creating them at the same moment can time out on a loaded machine).
    start_nodes();
}

ClearingCluster::~ClearingCluster() {
    for (auto& node : nodes_)
        if (node.process.running()) node.process.stop();
    for (auto& server : nats_)
        if (server.process.running()) server.process.stop();
}

// The NATS CA and leaf certificates (serverAuth and clientAuth: a server dials its routes with its own),
// one client certificate per clearing node. The island CA is not used: it signs terminal and server
// profiles only, and NATS is infrastructure the cardholder side never sees.
void ClearingCluster::make_certificates() const {
    const fs::path d = dir_ / "nats";
    const std::vector<std::string> ec{"-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"};
    std::vector<std::string> ca{"openssl", "req", "-x509"};
    ca.insert(ca.end(), ec.begin(), ec.end());
    ca.insert(ca.end(),
              {"-keyout", (d / "ca.key").string(), "-out", (d / "ca.pem").string(), "-days", "30", "-subj", "/CN=coconut-demo-nats-ca",
               "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign"});
    run_tool_or_fail(ca);
    {
        std::ofstream extensions(d / "leaf.ext");
        extensions << "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n";
    }
    std::vector<std::string> names{"server"};
    for (const char* node : node_names) names.push_back(std::string("node-") + node);
    for (const auto& name : names) {
        std::vector<std::string> request{"openssl", "req", "-new"};
        request.insert(request.end(), ec.begin(), ec.end());
        request.insert(request.end(), {"-keyout", (d / (name + ".key")).string(), "-out", (d / (name + ".csr")).string(), "-subj",
                                       "/CN=coconut-demo-" + name});
        run_tool_or_fail(request);
        fs::permissions(d / (name + ".key"), fs::perms::owner_read | fs::perms::owner_write, fs::perm_options::replace);
        run_tool_or_fail({"openssl", "x509", "-req", "-in", (d / (name + ".csr")).string(), "-CA", (d / "ca.pem").string(), "-CAkey",
                          (d / "ca.key").string(), "-CAcreateserial", "-days", "30", "-extfile", (d / "leaf.ext").string(), "-out",
                          (d / (name + ".pem")).string()});
    }
}

// The configuration README.md "Running a cluster on real machines" shows, on loopback ports. Passwords are
// quoted: unquoted, a hex password such as 03E8… parses as a number and the server refuses the file.
void ClearingCluster::write_nats_config(std::size_t server) const {
    const fs::path d = dir_ / "nats";
    const NatsServer& s = nats_[server];
    const std::string tls = fmt::format("tls {{ cert_file: {}, key_file: {}, ca_file: {}, verify: true, timeout: 2 }}\n",
                                        nats_quoted(d / "server.pem"), nats_quoted(d / "server.key"), nats_quoted(d / "ca.pem"));
    std::string routes;
    for (const auto& other : nats_) routes += fmt::format("    nats-route://route:{}@127.0.0.1:{}\n", route_password_, other.route_port);
    std::ofstream config(d / fmt::format("n{}.conf", server + 1));
    config << fmt::format("server_name: n{}\nlisten: 127.0.0.1:{}\nhttp: 127.0.0.1:{}\nmax_payload: 8388608\n", server + 1, s.client_port,
                          s.monitor_port)
           << fmt::format("jetstream {{ store_dir: {}, max_memory_store: 256MB, max_file_store: 4GB }}\n",
                          nats_quoted(d / fmt::format("n{}", server + 1)))
           << tls << "cluster {\n  name: coconut\n  listen: 127.0.0.1:" << s.route_port << "\n"
           << "  authorization { user: route, password: \"" << route_password_ << "\" }\n  " << tls << "  routes: [\n"
           << routes << "  ]\n}\n"
           << "accounts {\n  CLEARING {\n    jetstream: enabled\n    users: [\n"
           << "      { user: clearing, password: \"" << nats_password_ << "\", permissions: {\n"
           << "          publish: { allow: [\"coconut.journal\", \"$KV.COCONUT_LEASE.>\", \"$JS.API.>\", \"$JS.ACK.>\"] }\n"
           << "          subscribe: { allow: [\"_INBOX.>\"] } } }\n    ]\n  }\n}\n";
    if (!config) fail(exit_codes::io_error, "cannot write the NATS configuration in " + d.string());
}

void ClearingCluster::start_nats() {
    const std::string server = nats_server();
    // The servers share this machine: each Go runtime set for that (docs/CLUSTER.md, "Deployment");
    // /usr/bin/env sets it and execs the server under the same PID.
    const auto go_settings = cluster::shared_machine_nats_env(std::max(1U, std::thread::hardware_concurrency()), nats_.size());
    for (std::size_t i = 0; i < nats_.size(); ++i) {
        const fs::path config = dir_ / "nats" / fmt::format("n{}.conf", i + 1);
        std::vector<std::string> argv{"/usr/bin/env"};
        argv.insert(argv.end(), go_settings.begin(), go_settings.end());
        argv.insert(argv.end(), {server, "-c", config.string()});
        nats_[i].process =
            Process::start(fmt::format("nats-server n{}", i + 1), std::move(argv), world_.logs() / fmt::format("nats-n{}.log", i + 1));
    }
    // Listening is enough here: each clearing node waits for JetStream's meta leader itself.
    const auto deadline = Clock::now() + nats_listen_wait;
    for (std::size_t i = 0; i < nats_.size(); ++i)
        while (!loopback_accepts(nats_[i].client_port)) {
            if (nats_[i].process.exited() || Clock::now() > deadline)
                fail(exit_codes::tool_failed, fmt::format("nats-server n{} did not start (see {})", i + 1,
                                                          (world_.logs() / fmt::format("nats-n{}.log", i + 1)).string()));
            std::this_thread::sleep_for(poll_pause);
        }
}

// Today's join: a copy of a stopped node's data directory (without its locks).
void ClearingCluster::seed_nodes() const {
    for (std::size_t i = 0; i < nodes_count; ++i) {
        const fs::path target = dir_ / (std::string("node-") + node_names[i]);
        std::error_code ec;
        fs::create_directories(target, ec);
        for (const auto& entry : fs::directory_iterator(setup_.seed)) {
            const auto file = entry.path().filename().string();
            if (file == "clearingd.lock" || file == "lock.mdb") continue;
            fs::copy(entry.path(), target / file, fs::copy_options::recursive | fs::copy_options::overwrite_existing, ec);
            if (ec) fail(exit_codes::io_error, fmt::format("seeding {} from {}: {}", target.string(), setup_.seed.string(), ec.message()));
        }
    }
}

std::vector<std::string> ClearingCluster::node_argv(std::size_t node) const {
    const fs::path d = dir_ / "nats";
    std::string urls;
    for (const auto& server : nats_) urls += (urls.empty() ? "" : ",") + fmt::format("tls://127.0.0.1:{}", server.client_port);
    const Node& n = nodes_[node];
    const std::string cert = "node-" + n.name;
    return {require_tool("coconut-clearingd"), "serve", "--cluster-node", n.name, "--nats", urls, "--nats-user", "clearing",
            "--nats-password-file", (d / "clearing.password").string(), "--nats-ca", (d / "ca.pem").string(), "--nats-cert",
            (d / (cert + ".pem")).string(), "--nats-key", (d / (cert + ".key")).string(), "--cluster-key", (dir_ / "cluster.key").string(),
            "--cluster-status-file", status_file(node).string(), "--lease-ttl-ms", std::to_string(setup_.lease_ttl.count()), "--data",
            data(node).string(), "--iso-listen", fmt::format("127.0.0.1:{}", n.iso_port), "--http-listen",
            fmt::format("127.0.0.1:{}", n.http_port),
            // The demo's settlement runs 2 s after its cut-off (settle.cpp: every terminal has stopped).
            "--settlement-margin-s", "2", "--hsm", setup_.hsm_endpoint, "--hsm-key", setup_.hsm_key.string(), "--tls-cert",
            setup_.terminal_tls.certificate().string(), "--tls-key", setup_.terminal_tls.private_key().string(), "--tls-ca",
            setup_.terminal_tls.ca().string()};
}

void ClearingCluster::start_node(std::size_t node) {
    std::error_code ignored;
    fs::remove(status_file(node), ignored);  // a restarted node's old file may still say primary
    Node& n = nodes_[node];
    if (n.process.running() || !n.process.name().empty()) {
        n.process.restart();
        return;
    }
    n.process = Process::start("coconut-clearingd node " + n.name, node_argv(node), log(node));
}

// One node first, the others once it has served for a lease ttl: a node renews its lease only once its
// daemon has started, and a rival taking the lease in between deposes it at once (clearing/README.md).
void ClearingCluster::start_nodes() {
    start_node(0);
    wait_stable_primary();
    for (std::size_t i = 1; i < nodes_count; ++i) start_node(i);
}

void ClearingCluster::revive_exited() {
    for (std::size_t i = 0; i < nodes_count; ++i) {
        if (nodes_[i].process.name().empty() || !nodes_[i].process.exited()) continue;
        if (++nodes_[i].exits > node_exits_max)
            fail(exit_codes::tool_failed,
                 fmt::format("clearing node {} exited by itself {} times (see {})", nodes_[i].name, nodes_[i].exits, log(i).string()));
        start_node(i);  // as a service manager would (Restart=on-failure)
    }
}

std::size_t ClearingCluster::wait_stable_primary() {
    const auto deadline = Clock::now() + primary_wait;
    std::optional<std::size_t> serving;
    auto steady_from = Clock::now();
    for (;;) {
        revive_exited();
        const auto primary = serving_primary(std::nullopt);
        if (primary != serving) {
            serving = primary;
            steady_from = Clock::now();
        } else if (serving && Clock::now() - steady_from > setup_.lease_ttl + 1s) {
            return *serving;
        }
        if (Clock::now() > deadline)
            fail(exit_codes::tool_failed, fmt::format("no clearing node served as primary for {} ms in a row within {} s (see {})",
                                                      (setup_.lease_ttl + 1s).count(), primary_wait.count(), world_.logs().string()));
        std::this_thread::sleep_for(poll_pause);
    }
}

std::size_t ClearingCluster::unexpected_exits() const {
    std::size_t exits = 0;
    for (const auto& node : nodes_) exits += node.exits;
    return exits;
}

std::optional<std::size_t> ClearingCluster::serving_primary(std::optional<std::size_t> except) const {
    for (std::size_t i = 0; i < nodes_count; ++i) {
        if (except == i || !nodes_[i].process.running()) continue;
        std::ifstream in(status_file(i));
        const json status = json::parse(in, nullptr, false);
        if (status.is_discarded() || status.value("role", "") != "primary") continue;
        if (loopback_accepts(nodes_[i].iso_port)) return i;
    }
    return std::nullopt;
}

std::size_t ClearingCluster::wait_primary() {
    const auto deadline = Clock::now() + primary_wait;
    for (;;) {
        if (auto primary = serving_primary(std::nullopt)) return *primary;
        revive_exited();
        if (Clock::now() > deadline)
            fail(exit_codes::tool_failed, fmt::format("no clearing node became primary within {} s (see {})", primary_wait.count(),
                                                      (world_.logs() / "cluster-node-*.log").string()));
        std::this_thread::sleep_for(poll_pause);
    }
}

std::string ClearingCluster::primary_http() { return fmt::format("127.0.0.1:{}", nodes_[wait_stable_primary()].http_port); }

fs::path ClearingCluster::primary_data() { return data(wait_stable_primary()); }

Failover ClearingCluster::kill_primary() {
    const std::size_t victim = wait_primary();
    const auto killed_at = Clock::now();
    nodes_[victim].process.kill_now();
    const auto deadline = killed_at + primary_wait;
    std::optional<std::size_t> successor;
    while (!(successor = serving_primary(victim))) {
        revive_exited();
        if (Clock::now() > deadline)
            fail(exit_codes::tool_failed,
                 fmt::format("no clearing node took over within {} s after node {} was killed", primary_wait.count(), nodes_[victim].name));
        std::this_thread::sleep_for(poll_pause);
    }
    Failover failover{nodes_[victim].name, nodes_[*successor].name, cluster_elapsed_s(killed_at)};
    start_node(victim);  // back as a standby: it applies what it missed from the stream
    std::lock_guard lock(mutex_);
    failovers_.push_back(failover);
    return failover;
}

std::vector<Failover> ClearingCluster::failovers() const {
    std::lock_guard lock(mutex_);
    return failovers_;
}

std::uint64_t ClearingCluster::position(std::size_t node) const {
    std::ifstream in(status_file(node));
    const json status = json::parse(in, nullptr, false);
    return status.is_discarded() ? 0 : status.value("position", std::uint64_t{0});
}

// The journal stream's last sequence as the NATS servers report it (GET /jsz on their monitoring ports;
// the highest of the three: a follower may be a message behind its leader).
std::uint64_t ClearingCluster::stream_last_sequence() const {
    std::uint64_t last = 0;
    for (const auto& server : nats_) {
        const HttpAnswer answer = http_get(server.monitor_port, "/jsz?accounts=true&streams=true", "");
        const json jsz = json::parse(answer.body, nullptr, false);
        if (answer.status != 200 || jsz.is_discarded()) continue;
        for (const auto& account : jsz.value("account_details", json::array()))
            for (const auto& stream : account.value("stream_detail", json::array()))
                if (stream.value("name", "") == journal_stream_name && stream.contains("state"))
                    last = std::max(last, stream["state"].value("last_seq", std::uint64_t{0}));
    }
    return last;
}

void ClearingCluster::wait_applied() {
    const std::size_t primary = wait_primary();
    const std::uint64_t target = stream_last_sequence();
    const auto deadline = Clock::now() + applied_wait;
    // The primary wrote the stream; a standby's status file follows what it applied.
    for (std::size_t i = 0; i < nodes_count; ++i)
        while (i != primary && position(i) < target) {
            revive_exited();
            if (Clock::now() > deadline)
                fail(exit_codes::tool_failed, fmt::format("node {} did not apply the journal up to {} (at {}; see {})", nodes_[i].name,
                                                          target, position(i), log(i).string()));
            std::this_thread::sleep_for(poll_pause);
        }
}

int ClearingCluster::stop_nodes() {
    int worst = 0;
    const std::optional<std::size_t> primary = serving_primary(std::nullopt);
    for (std::size_t i = 0; i < nodes_count; ++i) {
        if (primary == i || !nodes_[i].process.running()) continue;
        if (const int code = nodes_[i].process.stop(); code != 0) worst = code;
    }
    if (primary && nodes_[*primary].process.running())
        if (const int code = nodes_[*primary].process.stop(); code != 0) worst = code;
    return worst;
}

NodeCheck ClearingCluster::check(std::size_t node) const {
    NodeCheck out;
    out.node = nodes_[node].name;
    const ToolRun run = run_tool({require_tool("coconut-clearingd"), "check", "--data", data(node).string(), "--json"});
    const json report = json::parse(run.output, nullptr, false);
    if (report.is_discarded() || !report.contains("journal_head")) {
        out.output = run.output;
        return out;
    }
    out.ok = run.exit_code == 0 && report.value("ok", false);
    out.journal_sequence = report["journal_head"].value("sequence", std::uint64_t{0});
    out.journal_hash = report["journal_head"].value("hash", "");
    out.replicated_position = report["replicated_position"].is_number() ? report["replicated_position"].get<std::uint64_t>() : 0;
    if (!out.ok) out.output = run.output;
    return out;
}

std::vector<sdk::ClearingEndpoint> ClearingCluster::endpoints() const {
    std::vector<sdk::ClearingEndpoint> list;
    for (const auto& node : nodes_) list.push_back({"127.0.0.1", node.iso_port});
    return list;
}

std::string ClearingCluster::name(std::size_t node) const { return nodes_[node].name; }
fs::path ClearingCluster::data(std::size_t node) const { return dir_ / (std::string("node-") + node_names[node]); }
fs::path ClearingCluster::log(std::size_t node) const { return world_.logs() / (std::string("cluster-node-") + node_names[node] + ".log"); }
fs::path ClearingCluster::status_file(std::size_t node) const { return dir_ / (std::string("node-") + node_names[node] + ".status"); }

}  // namespace coconut::cli
