// A core of its own for the ledger writer (coconut-clearingd serve --writer-cpu): part of
// coconut::clearing_server.
#pragma once

#include <coconut/clearing/plan.hpp>

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace coconut::clearing {

// The one ledger writer thread carries every booking; on a small machine the terminal I/O, the HTTP
// queries and anything else in the process take CPU from it in bursts (a balance query load cost the
// writes 12–14 % and pushed query p99 to 6–7 ms on 2 cores, clearing/README.md "Scheduling"). With a
// layout the writer runs alone on one CPU and every other thread of the daemon on the rest.
struct CpuLayout {
    int writer = -1;          // the ledger writer's CPU
    std::vector<int> others;  // every other thread of the daemon (ascending)
};
// The default: bookings before everything else, as the HTTP thread's nice:10 (http.hpp ThreadPriority);
// "off" on a host shared with services that should have the daemon's threads on every CPU.
inline constexpr std::string_view writer_cpu_default = "auto";
// From --writer-cpu, against the CPUs the calling thread may run on (sched_getaffinity):
//   "off"  no layout (nullopt);
//   "auto" the highest allowed CPU when two or more are allowed, else no layout;
//   "N"    CPU N, which must be allowed and leave at least one other allowed CPU.
// Error (bad_input): the message says what is wrong and which CPUs are allowed.
Result<std::optional<CpuLayout>> plan_cpu_layout(std::string_view writer_cpu);
// Restricts a thread (the calling one: pthread_self()) to `cpus`. Error: what the kernel said.
Status pin_thread(std::thread::native_handle_type thread, std::span<const int> cpus);
// The CPUs the calling thread may run on, ascending.
std::vector<int> allowed_cpus();
// "0", "0-3", "0,2,5" for messages.
std::string format_cpus(std::span<const int> cpus);

}  // namespace coconut::clearing
