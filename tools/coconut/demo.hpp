// What `coconut demo` and `coconut demo --cluster` share (demo.cpp, demo_cluster.cpp).
#pragma once

#include "settle.hpp"
#include "simulate.hpp"

#include <nlohmann/json.hpp>

namespace coconut::cli {

struct DemoArgs;

// The day of --size small (CI) or day (1,000 cards, ≥ 100,000 transactions); usage error otherwise.
DayOptions demo_day(const std::string& size, std::uint64_t seed);
// Images, PSAMs and queues: tmpfs under /dev/shm when writable, else D/media.
fs::path demo_images_dir(const fs::path& dir);
// Seconds since t0 (steady clock).
double demo_seconds_since(std::chrono::steady_clock::time_point t0);
// summary.json's "settlement" object.
nlohmann::json settlement_json(const SettlementOutcome& settlement);

// `coconut demo --cluster`: the day on 3 nats-server and 3 clearing nodes, the primary killed mid-day.
int demo_cluster(const DemoArgs& args);

}  // namespace coconut::cli
