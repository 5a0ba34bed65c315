// Running the other executables of the project: one-shot tools (ceremony commands, `admin load`, `check`)
// and daemons (coconut-hsmd, coconut-clearingd) on free loopback ports.
//
// Every child is registered so that SIGINT / SIGTERM to `coconut` stops them by PID before it exits
// (install_signal_handlers); every wait is bounded; a daemon that does not report its port within
// daemon_ready_wait is killed and the command fails naming its log file.
#pragma once

#include "pcsc_env.hpp"

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

namespace coconut::cli {

using namespace std::chrono_literals;

// A daemon writes its ready file in milliseconds; 20 s covers a loaded CI machine opening a large ledger.
inline constexpr auto daemon_ready_wait = 20s;
// One-shot tools (ceremony steps, registry loads, check over a 100,000-transfer ledger) finish in seconds.
inline constexpr auto tool_wait = 300s;

// The executable `name` (coconut-hsmd, coconut-clearingd, coconut-settle …): next to this `coconut`, then
// where this build put it, then the PATH. Empty if none exists.
std::string find_tool(const std::string& name);
// find_tool or CommandFailed(tool_failed) naming what is missing.
std::string require_tool(const std::string& name);

// SIGINT / SIGTERM: stop every registered child (SIGTERM, then SIGKILL after a short grace), print one
// line and exit 130.
void install_signal_handlers();
bool interrupted();

struct ToolRun {
    int exit_code = 0;
    std::string output;  // stdout and stderr interleaved
};

// Runs argv to completion with `stdin_text` on its stdin; never throws for a non-zero exit.
ToolRun run_tool(const std::vector<std::string>& argv, const std::string& stdin_text = {}, std::chrono::milliseconds timeout = tool_wait);
// run_tool that fails the command (tool_failed) unless the exit code is 0; returns the output.
std::string run_tool_or_fail(const std::vector<std::string>& argv, const std::string& stdin_text = {},
                             std::chrono::milliseconds timeout = tool_wait);

// The port a daemon writes into `ready_file` (a second listener's ready file), waited for up to
// daemon_ready_wait; fails naming `log`.
std::uint16_t wait_for_port(const std::filesystem::path& ready_file, const std::string& what, const std::filesystem::path& log);

// A daemon started with `--ready-file FILE` (and port 0 in its arguments): running until stop().
// A long-running child started by PID with stdout and stderr appended to `log` (nats-server, a cluster's
// clearing node): registered for the SIGINT handler like every child, stopped or killed by its PID.
class Process {
public:
    Process() = default;
    static Process start(std::string name, std::vector<std::string> argv, const std::filesystem::path& log);
    Process(Process&&) noexcept = default;
    Process& operator=(Process&&) noexcept = default;
    ~Process();

    const std::string& name() const { return name_; }
    bool running() const { return child_.running(); }
    pid_t pid() const { return child_.pid(); }
    // Has it exited by itself since it was started? (Reaps it; false once stopped or killed by us.)
    bool exited();
    // SIGTERM, bounded wait, reaped; the exit code (128+n if killed by signal n).
    int stop();
    // SIGKILL at once, reaped.
    void kill_now();
    // The same command again (after stop or kill_now).
    void restart();

private:
    void launch();
    std::string name_;
    std::vector<std::string> argv_;
    std::filesystem::path log_;
    pcsc_env::Child child_;
};

class Daemon {
public:
    Daemon() = default;
    // argv without the ready-file option; `log` receives stdout and stderr (appended).
    static Daemon start(std::string name, std::vector<std::string> argv, const std::filesystem::path& ready_file,
                        const std::filesystem::path& log);
    Daemon(Daemon&&) noexcept = default;
    Daemon& operator=(Daemon&&) noexcept = default;

    std::uint16_t port() const { return port_; }
    std::string endpoint() const { return "127.0.0.1:" + std::to_string(port_); }
    bool running() const { return process_.running(); }
    pid_t pid() const { return process_.pid(); }
    // SIGTERM (the daemons drain and exit 0), reaped; returns the exit code.
    int stop() { return process_.stop(); }
    // SIGKILL at once (fault injection), reaped.
    void kill_now() { process_.kill_now(); }
    // Starts the same command again (after kill_now or stop) and waits for its ready file.
    void restart();

private:
    void launch();
    std::string name_;
    std::vector<std::string> argv_;
    std::filesystem::path ready_file_;
    std::filesystem::path log_;
    Process process_;
    std::uint16_t port_ = 0;
};

}  // namespace coconut::cli
