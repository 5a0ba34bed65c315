// CPU layout for the ledger writer (scheduling.hpp; clearing/README.md "Scheduling").
#include <coconut/clearing/scheduling.hpp>
#include <coconut/core/assert.hpp>

#include <fmt/format.h>

#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>

namespace coconut::clearing {

std::vector<int> allowed_cpus() {
    cpu_set_t set;
    CPU_ZERO(&set);
    std::vector<int> out;
    if (::sched_getaffinity(0, sizeof set, &set) != 0) return out;
    for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
        if (CPU_ISSET(cpu, &set)) out.push_back(cpu);
    }
    return out;
}

std::string format_cpus(std::span<const int> cpus) {
    std::string out;
    for (std::size_t i = 0; i < cpus.size();) {
        std::size_t j = i;
        while (j + 1 < cpus.size() && cpus[j + 1] == cpus[j] + 1) ++j;
        if (!out.empty()) out += ',';
        out += j == i ? fmt::format("{}", cpus[i]) : fmt::format("{}-{}", cpus[i], cpus[j]);
        i = j + 1;
    }
    return out;
}

Result<std::optional<CpuLayout>> plan_cpu_layout(std::string_view writer_cpu) {
    if (writer_cpu == "off") return std::optional<CpuLayout>{};
    const std::vector<int> allowed = allowed_cpus();
    if (allowed.empty()) return Unexpected<Error>{Error{ErrorCode::bad_input, "--writer-cpu: the process's CPU affinity cannot be read"}};
    const auto layout_for = [&](int writer) {
        CpuLayout layout;
        layout.writer = writer;
        for (int cpu : allowed) {
            if (cpu != writer) layout.others.push_back(cpu);
        }
        // The writer is one of the allowed CPUs, and another one is left for the other threads.
        COCONUT_ASSERT(layout.others.size() + 1 == allowed.size() && !layout.others.empty());
        return layout;
    };
    if (writer_cpu == "auto") {
        if (allowed.size() < 2) return std::optional<CpuLayout>{};
        return std::optional<CpuLayout>{layout_for(allowed.back())};
    }
    int cpu = -1;
    const auto [end, ec] = std::from_chars(writer_cpu.data(), writer_cpu.data() + writer_cpu.size(), cpu);
    if (writer_cpu.empty() || ec != std::errc() || end != writer_cpu.data() + writer_cpu.size() || cpu < 0) {
        return Unexpected<Error>{
            Error{ErrorCode::bad_input, fmt::format("--writer-cpu: \"{}\" is not off, auto or a CPU number", writer_cpu)}};
    }
    if (std::find(allowed.begin(), allowed.end(), cpu) == allowed.end()) {
        return Unexpected<Error>{Error{ErrorCode::bad_input, fmt::format("--writer-cpu: CPU {} is not one this process may use ({})", cpu,
                                                                         format_cpus(allowed))}};
    }
    if (allowed.size() < 2) {
        return Unexpected<Error>{
            Error{ErrorCode::bad_input,
                  fmt::format("--writer-cpu: CPU {} is the only one this process may use; the other threads need another", cpu)}};
    }
    return std::optional<CpuLayout>{layout_for(cpu)};
}

Status pin_thread(std::thread::native_handle_type thread, std::span<const int> cpus) {
    cpu_set_t set;
    CPU_ZERO(&set);
    for (int cpu : cpus) {
        if (cpu < 0 || cpu >= CPU_SETSIZE)
            return Unexpected<Error>{Error{ErrorCode::bad_input, fmt::format("CPU {} is out of range", cpu)}};
        CPU_SET(cpu, &set);
    }
    if (const int rc = ::pthread_setaffinity_np(thread, sizeof set, &set); rc != 0) {
        return Unexpected<Error>{
            Error{ErrorCode::bad_input, fmt::format("pthread_setaffinity_np({}): {}", format_cpus(cpus), std::strerror(rc))}};
    }
    return Ok{};
}

}  // namespace coconut::clearing
