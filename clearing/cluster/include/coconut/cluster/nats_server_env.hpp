// The Go runtime settings for nats-server processes that share one machine (the tests, the benchmark,
// `coconut demo --cluster` run three on one machine; docs/CLUSTER.md "Deployment" says why and gives
// the measurements). As NAME=VALUE strings for /usr/bin/env.
//
//   GOMAXPROCS  the server's share of the CPUs (CPUs / servers, at least 1): with Go's default every
//               server sizes its scheduler and collector to all CPUs and they preempt one another.
//   GOGC        1000: a server's live heap is small (a few MB), so with Go's default (100) it collects
//               every few MB allocated — every 0.1 s at 6,000 authorizations/s — and each 8 MB block the
//               journal stream starts makes its write buffer grow for a few seconds, each growth an
//               allocation that triggers a collection.
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
