// The Go runtime settings for nats-server processes that share one machine (the tests, the benchmark,
// `coconut demo --cluster` run three on one machine; docs/CLUSTER.md "Deployment" says why and gives
// the measurements), as NAME=VALUE strings for /usr/bin/env.
//
//   GOMAXPROCS  the server's share of the CPUs (CPUs / servers, at least 1): with Go's default every
//               server sizes its scheduler and collector to all CPUs and they preempt one another.
//   GOGC        1000: a server's live heap is 1-2 MB, so Go's default (100) collects every few MB
//               allocated; for 5 s after each snapshot of the stream's Raft log (one per 8 MB of it) the
//               log's write buffer grows in steps, each an allocation that starts a collection in the
//               acknowledgement's path (docs/BENCHMARKS.md "What stalls the stream").
//   GOMEMLIMIT  512MiB: the bound GOGC=1000 would otherwise not have (Go's soft memory limit).
//
// tests/cluster/nats_cluster.py sets the same values.
#pragma once

#include <algorithm>
#include <cstddef>
#include <string>
#include <vector>

namespace coconut::cluster {

inline constexpr const char* shared_nats_gogc = "1000";
inline constexpr const char* shared_nats_memory_limit = "512MiB";

inline std::vector<std::string> shared_machine_nats_env(unsigned cpus, std::size_t servers) {
    const std::size_t share = std::max<std::size_t>(1, cpus / std::max<std::size_t>(1, servers));
    return {"GOMAXPROCS=" + std::to_string(share), std::string("GOGC=") + shared_nats_gogc,
            std::string("GOMEMLIMIT=") + shared_nats_memory_limit};
}

}  // namespace coconut::cluster
