#include "nats_cluster.hpp"

#include <coconut/cluster/nats_server_env.hpp>

#include <algorithm>
#include <arpa/inet.h>
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <netinet/in.h>
#include <stdexcept>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

namespace coconut::test {

namespace {

constexpr const char* route_password = "route-secret";
constexpr const char* clearing_password = "clearing-secret";
constexpr const char* observer_password = "observer-secret";

// `count` distinct free TCP ports on 127.0.0.1 (all held open until each is known, then released).
std::vector<int> free_ports(int count) {
    std::vector<int> sockets;
    std::vector<int> ports;
    for (int i = 0; i < count; ++i) {
        const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in address{};
        address.sin_family = AF_INET;
        address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t length = sizeof address;
        if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
            ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
            throw std::runtime_error("no free port");
        }
        sockets.push_back(fd);
        ports.push_back(ntohs(address.sin_port));
    }
    for (const int fd : sockets) ::close(fd);
    return ports;
}

void run(const std::string& command) {
    if (std::system(command.c_str()) != 0) throw std::runtime_error("failed: " + command);
}

std::string quoted(const std::filesystem::path& path) { return "\"" + path.string() + "\""; }

}  // namespace

NatsCluster::NatsCluster(int nodes) {
    std::string pattern = (std::filesystem::temp_directory_path() / "coconut-nats-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    directory_ = pattern;
    const std::vector<int> ports = free_ports(3 * nodes);
    for (int i = 0; i < nodes; ++i) nodes_.push_back(Node{ports[3 * i], ports[3 * i + 1], ports[3 * i + 2], -1});
    make_certificates();
    for (int i = 0; i < nodes; ++i) write_config(i);
    for (int i = 0; i < nodes; ++i) start(i);
    wait_until_ready(std::chrono::seconds{20});
}

NatsCluster::~NatsCluster() {
    for (int i = 0; i < nodes(); ++i) {
        if (!running(i)) continue;
        ::kill(nodes_[i].pid, SIGTERM);
        // A clean stop takes well under a second; then SIGKILL.
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds{3};
        while (::waitpid(nodes_[i].pid, nullptr, WNOHANG) == 0) {
            if (std::chrono::steady_clock::now() > deadline) {
                ::kill(nodes_[i].pid, SIGKILL);
                ::waitpid(nodes_[i].pid, nullptr, 0);
                break;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds{20});
        }
        nodes_[i].pid = -1;
    }
    std::error_code ignored;
    if (std::getenv("COCONUT_KEEP_NATS") == nullptr) std::filesystem::remove_all(directory_, ignored);
}

void NatsCluster::make_certificates() const {
    const auto& d = directory_;
    const std::string log = " >>" + quoted(d / "openssl.log") + " 2>&1";
    const std::string ec = " -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
    run("openssl req -x509" + ec + " -keyout " + quoted(d / "ca.key") + " -out " + quoted(d / "ca.pem") +
        " -days 2 -subj /CN=coconut-test-nats-ca -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign" + log);
    {
        std::ofstream extensions(d / "leaf.ext");
        extensions << "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n";
    }
    for (const std::string name : {"server", "client"}) {
        run("openssl req -new" + ec + " -keyout " + quoted(d / (name + ".key")) + " -out " + quoted(d / (name + ".csr")) +
            " -subj /CN=coconut-test-" + name + log);
        run("openssl x509 -req -in " + quoted(d / (name + ".csr")) + " -CA " + quoted(d / "ca.pem") + " -CAkey " + quoted(d / "ca.key") +
            " -CAcreateserial -days 2 -extfile " + quoted(d / "leaf.ext") + " -out " + quoted(d / (name + ".pem")) + log);
    }
}

void NatsCluster::write_config(int node) const {
    const Node& n = nodes_[node];
    const auto& d = directory_;
    const std::string tls = "tls { cert_file: " + quoted(d / "server.pem") + ", key_file: " + quoted(d / "server.key") +
                            ", ca_file: " + quoted(d / "ca.pem") + ", verify: true, timeout: 2 }\n";
    std::ofstream config(d / (server_name(node) + ".conf"));
    config << "server_name: " << server_name(node) << "\n"
           << "listen: 127.0.0.1:" << n.client_port << "\nhttp: 127.0.0.1:" << n.http_port << "\n"
           << "max_payload: 8388608\n"  // a journal message carries a whole group commit
           << "jetstream { store_dir: " << quoted(d / server_name(node)) << ", max_memory_store: 256MB, max_file_store: 2GB }\n"
           << tls << "cluster {\n  name: coconut\n  listen: 127.0.0.1:" << n.cluster_port << "\n"
           << "  authorization { user: route, password: " << route_password << " }\n  " << tls << "  routes: [\n";
    for (const Node& peer : nodes_) config << "    nats-route://route:" << route_password << "@127.0.0.1:" << peer.cluster_port << "\n";
    config << "  ]\n}\n"
           << "accounts {\n  CLEARING {\n    jetstream: enabled\n    users: [\n"
           << "      { user: clearing, password: " << clearing_password << ", permissions: {\n"
           << "          publish: { allow: [\"coconut.journal\", \"coconut.test.>\", \"$KV.COCONUT_LEASE.>\","
              " \"$JS.API.>\", \"$JS.ACK.>\"] }\n"
           << "          subscribe: { allow: [\"_INBOX.>\"] } } }\n"
           << "      { user: observer, password: " << observer_password << ", permissions: {\n"
           << "          publish: { allow: [\"$JS.API.INFO\", \"$JS.API.STREAM.INFO.COCONUT_JOURNAL\","
              " \"$JS.API.CONSUMER.CREATE.COCONUT_JOURNAL\", \"$JS.API.CONSUMER.CREATE.COCONUT_JOURNAL.>\","
              " \"$JS.API.CONSUMER.MSG.NEXT.COCONUT_JOURNAL.>\", \"$JS.API.CONSUMER.INFO.COCONUT_JOURNAL.>\","
              " \"$JS.API.CONSUMER.DELETE.COCONUT_JOURNAL.>\", \"$JS.API.STREAM.MSG.GET.COCONUT_JOURNAL\"] }\n"
           << "          subscribe: { allow: [\"_INBOX.>\"] } } }\n"
           << "    ]\n  }\n}\n";
}

void NatsCluster::start(int node) {
    if (running(node)) return;
    const std::string config = (directory_ / (server_name(node) + ".conf")).string();
    const std::string log = (directory_ / (server_name(node) + ".log")).string();
    // Each server's Go runtime set for a shared machine (docs/CLUSTER.md, "Deployment"); the argument
    // list is made before the fork: the child only execs. /usr/bin/env execs the server under the same PID.
    std::vector<std::string> arguments{"env"};
    for (auto& setting : cluster::shared_machine_nats_env(std::max(1U, std::thread::hardware_concurrency()), nodes_.size()))
        arguments.push_back(std::move(setting));
    for (const std::string& argument : {std::string("nats-server"), std::string("-c"), config, std::string("-l"), log})
        arguments.push_back(argument);
    std::vector<char*> argv;
    for (std::string& argument : arguments) argv.push_back(argument.data());
    argv.push_back(nullptr);
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid < 0) throw std::runtime_error("fork failed");
    if (pid == 0) {
        // Dies with the test, whatever kills it.
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (::getppid() != parent) ::_exit(1);
        ::execv("/usr/bin/env", argv.data());
        ::_exit(127);
    }
    nodes_[node].pid = pid;
}

void NatsCluster::kill(int node) {
    if (!running(node)) return;
    ::kill(nodes_[node].pid, SIGKILL);
    ::waitpid(nodes_[node].pid, nullptr, 0);
    nodes_[node].pid = -1;
}

bool NatsCluster::running(int node) const { return nodes_[node].pid > 0; }

std::string NatsCluster::server_name(int node) const { return "n" + std::to_string(node + 1); }

int NatsCluster::node_named(const std::string& name) const {
    for (int i = 0; i < nodes(); ++i) {
        if (server_name(i) == name) return i;
    }
    return -1;
}

cluster::NatsOptions NatsCluster::client(const std::string& user) const {
    cluster::NatsOptions options;
    for (const Node& n : nodes_) options.urls.push_back("tls://127.0.0.1:" + std::to_string(n.client_port));
    options.user = user;
    options.password = user == "observer" ? observer_password : clearing_password;
    options.ca = directory_ / "ca.pem";
    options.certificate = directory_ / "client.pem";
    options.private_key = directory_ / "client.key";
    options.name = "test-" + user;
    return options;
}

void NatsCluster::wait_until_ready(std::chrono::milliseconds wait) const {
    const auto deadline = std::chrono::steady_clock::now() + wait;
    std::string last = "no connection";
    while (std::chrono::steady_clock::now() < deadline) {
        auto connection = cluster::Connection::connect(client());
        if (connection) {
            const auto remaining = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
            auto ready = cluster::wait_for_jetstream(connection.value(), remaining);
            if (ready) return;
            last = ready.error().message;
        } else {
            last = connection.error().message;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds{100});
    }
    throw std::runtime_error("NATS cluster not ready: " + last + " (logs in " + directory_.string() + ")");
}

}  // namespace coconut::test
