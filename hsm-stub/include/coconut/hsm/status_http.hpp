// coconut-hsmd's optional status port (`serve --http-port PORT`): plain HTTP for the operator's probes,
// never the HSM protocol, on loopback unless --http-host names another address.
//
//   GET /healthz  200 {"status":"ok","store_generation":N,"connections_open":N,"audit":"ok"}, or 503 with
//                 "status":"degraded" while the audit log cannot be written (every request is refused then)
//   GET /metrics  Prometheus text (coconut/core/metrics.hpp): requests by kind and outcome, latency
//                 histograms, purchase-TAC batch sizes, connections, refusals, process_*, coconut_build_info
//   anything else 404, another method on those paths 405; every error {"error":{"code","message"}}.
//
// It shows counts only: no key label's material, no client key, nothing a request carried. Bounded: one
// request per connection (answered, then closed), a request head of at most 8 KiB read within 5 s, at
// most 16 connections at once. Runs on its own thread with its own io_context, so a scrape never waits
// for the HSM's I/O threads and the HSM's work never waits for a scrape.
#pragma once

#include <coconut/hsm/server.hpp>

#include <cstdint>
#include <memory>
#include <string>

namespace coconut::hsm {

struct StatusHttpConfig {
    std::string host = "127.0.0.1";
    std::uint16_t port = 0;  // 0: any free port (StatusHttp::port())
};

class StatusHttp {
public:
    // Binds, listens and starts its thread; throws std::system_error when the address cannot be bound.
    StatusHttp(const Server& server, StatusHttpConfig config);
    ~StatusHttp();  // stops the thread and closes every connection
    StatusHttp(const StatusHttp&) = delete;
    StatusHttp& operator=(const StatusHttp&) = delete;

    std::uint16_t port() const;

    struct State;

private:
    std::shared_ptr<State> state_;
};

// The bodies it serves, for tests: /metrics' text and /healthz's JSON with its status code.
std::string status_metrics_text(const Server& server);
std::pair<unsigned, std::string> status_health(const Server& server);

}  // namespace coconut::hsm
