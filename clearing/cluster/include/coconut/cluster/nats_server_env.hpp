// The Go runtime settings for nats-server processes that share one machine (the tests, the benchmark,
// `coconut demo --cluster` run three on one machine; docs/CLUSTER.md "Deployment" says why), as
// NAME=VALUE strings for /usr/bin/env.
//
//   GOMAXPROCS  the server's share of the CPUs (CPUs / servers, at least 1): with Go's default every
//               server sizes its scheduler and collector to all CPUs and they preempt one another.
//
// Go's collector keeps its default: GOGC=1000 under GOMEMLIMIT=512MiB shortened the journal stream's
// slowest acknowledgements, but the stream came back more slowly after a server's SIGKILL in the tests
// (docs/BENCHMARKS.md "What stalls the stream"). tests/cluster/nats_cluster.py sets the same values.
#pragma once

#include <algorithm>
#include <cstddef>
#include <string>
#include <vector>

namespace coconut::cluster {

inline std::vector<std::string> shared_machine_nats_env(unsigned cpus, std::size_t servers) {
    const std::size_t share = std::max<std::size_t>(1, cpus / std::max<std::size_t>(1, servers));
    return {"GOMAXPROCS=" + std::to_string(share)};
}

}  // namespace coconut::cluster
