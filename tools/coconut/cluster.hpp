// The island's clearing as a cluster on this machine (`coconut demo --cluster`; clearing/README.md and
// clearing/cluster/README.md describe the cluster, README.md "Running a cluster on real machines" the
// same set-up on three machines):
//
//   3 nats-server   JetStream, TLS everywhere (client and route connections verify certificates of a NATS CA
//                   made here with openssl: D/cluster/nats/), route credentials, the account CLEARING whose
//                   user "clearing" may publish only the journal, the lease bucket and the JetStream API
//   3 clearing nodes  `coconut-clearingd serve --cluster-node a|b|c`, each with its own data directory
//                   (D/cluster/node-X, a copy of the island's stopped D/clearing), its own NATS client
//                   certificate, the cluster key (D/cluster/cluster.key), its own ISO 8583 and HTTP ports
//                   (fixed: the lease advertises the ISO port) and a status file saying who is primary
//
// Every process is started and stopped by PID (process.hpp), every wait bounded.
#pragma once

#include "certificates.hpp"
#include "process.hpp"
#include "world.hpp"

#include <coconut/sdk/clearing_client.hpp>

#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace coconut::cli {

// One SIGKILL of the primary: who died, who took over, and how long terminals had no clearing.
struct Failover {
    std::string killed;
    std::string took_over;
    double served_after_s = 0;  // from the SIGKILL until the new primary accepted terminal connections
};

// `coconut-clearingd check --data NODE --json` on a stopped node.
struct NodeCheck {
    std::string node;
    bool ok = false;
    std::uint64_t journal_sequence = 0;
    std::string journal_hash;
    std::uint64_t replicated_position = 0;
    std::string output;  // what check printed when it failed
};

struct ClusterSetup {
    fs::path seed;  // a stopped clearing's data directory: every node starts from a copy of it
    std::string hsm_endpoint;
    fs::path hsm_key;
    TlsIdentity terminal_tls;                   // the clearing's server certificate for terminals (every node presents it)
    std::chrono::milliseconds lease_ttl{3000};  // the node's default: a loaded 2-core machine delays renewals
};

class ClearingCluster {
public:
    static constexpr std::size_t nodes_count = 3;

    // Certificates, configs and the cluster key under D/cluster; NATS started and every node seeded and
    // started; returns once a primary serves terminals. Fails the command (tool_failed) naming the log.
    ClearingCluster(const WorldPaths& world, ClusterSetup setup);
    ~ClearingCluster();
    ClearingCluster(const ClearingCluster&) = delete;
    ClearingCluster& operator=(const ClearingCluster&) = delete;

    // The three nodes' ISO 8583 endpoints, the list every terminal is given.
    std::vector<sdk::ClearingEndpoint> endpoints() const;
    // The node serving as primary (its status file says so and it accepts terminal connections), waited
    // for up to 30 s.
    std::size_t wait_primary();
    // A primary that has served for a lease ttl + 1 s without a change (bounded: 30 s).
    std::size_t wait_stable_primary();
    std::string primary_http();  // "127.0.0.1:PORT" of the stable primary's HTTP API
    fs::path primary_data();
    // SIGKILLs the primary, waits for another node to serve, restarts the killed one as a standby.
    Failover kill_primary();
    std::vector<Failover> failovers() const;
    // Every node has applied the stream up to the primary's position (bounded: 60 s).
    void wait_applied();
    // SIGTERM to every node (the primary last): the worst exit code.
    int stop_nodes();
    // The first node, then the others once it serves steadily.
    void start_nodes();
    NodeCheck check(std::size_t node) const;
    // Nodes that exited by themselves (and were started again) so far.
    std::size_t unexpected_exits() const;
    std::string name(std::size_t node) const;
    std::uint16_t http_port(std::size_t node) const { return nodes_[node].http_port; }
    fs::path data(std::size_t node) const;
    fs::path log(std::size_t node) const;

private:
    struct Node {
        std::string name;
        std::uint16_t iso_port = 0, http_port = 0;
        Process process;
        std::size_t exits = 0;  // by itself, not killed by us
    };
    struct NatsServer {
        std::uint16_t client_port = 0, route_port = 0, monitor_port = 0;
        Process process;
    };
    void make_certificates() const;
    void write_nats_config(std::size_t server) const;
    void start_nats();
    void seed_nodes() const;
    std::vector<std::string> node_argv(std::size_t node) const;
    void start_node(std::size_t node);
    void revive_exited();
    std::optional<std::size_t> serving_primary(std::optional<std::size_t> except) const;
    std::uint64_t position(std::size_t node) const;
    std::uint64_t stream_last_sequence() const;
    fs::path status_file(std::size_t node) const;

    WorldPaths world_;
    ClusterSetup setup_;
    fs::path dir_;
    std::string nats_password_;
    std::string route_password_;
    std::vector<NatsServer> nats_;
    std::vector<Node> nodes_;
    mutable std::mutex mutex_;  // failovers_
    std::vector<Failover> failovers_;
};

}  // namespace coconut::cli
