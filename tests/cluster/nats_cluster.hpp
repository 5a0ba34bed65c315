// A real nats-server cluster on loopback for tests and benchmarks: N nodes (default 3) in a temporary
// directory, free ports, TLS everywhere (a throwaway CA, server and client certificates made with the
// openssl CLI), route credentials, and the clearing's account with two users:
//   clearing  may publish to coconut.journal (and coconut.test.>, the tests' own streams), the
//             lease bucket's subjects and the JetStream API;
//   observer  may read the journal (stream info, its own consumers) and publish nothing else.
// Servers are children of the test (killed with it: PR_SET_PDEATHSIG), stopped by PID.
#pragma once

#include <coconut/cluster/connection.hpp>

#include <chrono>
#include <filesystem>
#include <string>
#include <sys/types.h>
#include <vector>

namespace coconut::test {

class NatsCluster {
public:
    // Starts `nodes` servers and waits (bounded) until JetStream answers; throws std::runtime_error
    // naming the log to read when something does not come up.
    explicit NatsCluster(int nodes = 3);
    ~NatsCluster();  // stops every server by PID, removes the directory
    NatsCluster(const NatsCluster&) = delete;
    NatsCluster& operator=(const NatsCluster&) = delete;

    // Client options for "clearing" or "observer": every node's URL, the CA, the client certificate.
    cluster::NatsOptions client(const std::string& user = "clearing") const;

    int nodes() const { return static_cast<int>(nodes_.size()); }
    std::string server_name(int node) const;               // "n1" … (what stream_leader reports)
    int node_named(const std::string& server_name) const;  // -1 if none
    void kill(int node);                                   // SIGKILL by PID, reaped
    void start(int node);                                  // (re)starts a stopped node with its store kept
    bool running(int node) const;
    const std::filesystem::path& directory() const { return directory_; }

private:
    struct Node {
        int client_port = 0;
        int cluster_port = 0;
        int http_port = 0;
        pid_t pid = -1;
    };
    void make_certificates() const;
    void write_config(int node) const;
    void wait_until_ready(std::chrono::milliseconds wait) const;

    std::filesystem::path directory_;
    std::vector<Node> nodes_;
};

}  // namespace coconut::test
