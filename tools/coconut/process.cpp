#include "process.hpp"

#include "errors.hpp"

#include <fmt/format.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

namespace coconut::cli {

namespace fs = std::filesystem;

namespace {

// Children alive at once: two daemons, a tool, pcscd and a few vcard servers.
constexpr std::size_t registered_children_max = 32;
std::array<std::atomic<pid_t>, registered_children_max> registered_children{};
std::atomic<bool> interrupt_seen{false};

void register_child(pid_t pid) {
    for (auto& slot : registered_children) {
        pid_t empty = 0;
        if (slot.compare_exchange_strong(empty, pid)) return;
    }
}

void unregister_child(pid_t pid) {
    for (auto& slot : registered_children) {
        pid_t expected = pid;
        if (slot.compare_exchange_strong(expected, 0)) return;
    }
}

// Async-signal-safe: kill(2), nanosleep via usleep-free loop, write(2), _exit(2).
void on_interrupt(int) {
    interrupt_seen = true;
    for (auto& slot : registered_children)
        if (const pid_t pid = slot.load(); pid > 0) ::kill(pid, SIGTERM);
    // The daemons answer what they hold and exit within a second; give them that, then make sure.
    const timespec grace{1, 0};
    ::nanosleep(&grace, nullptr);
    for (auto& slot : registered_children)
        if (const pid_t pid = slot.load(); pid > 0) {
            ::kill(pid, SIGKILL);
            ::waitpid(pid, nullptr, 0);
        }
    static const char message[] = "\ncoconut: interrupted; every daemon started by this command was stopped\n";
    [[maybe_unused]] auto written = ::write(2, message, sizeof message - 1);
    ::_exit(exit_codes::interrupted);
}

std::optional<std::uint16_t> read_port(const fs::path& ready_file) {
    std::ifstream in(ready_file);
    unsigned port = 0;
    if (in >> port && port > 0 && port < 65536) return static_cast<std::uint16_t>(port);
    return std::nullopt;
}

fs::path own_directory() {
    std::error_code ec;
    const fs::path self = fs::read_symlink("/proc/self/exe", ec);
    return ec ? fs::path{} : self.parent_path();
}

// Where this build puts each tool: "name=path,name=path,…" (tools/coconut/CMakeLists.txt).
std::string build_path(const std::string& name) {
#ifdef COCONUT_BUILT_TOOLS
    std::stringstream entries(COCONUT_BUILT_TOOLS);
    std::string entry;
    while (std::getline(entries, entry, ','))
        if (entry.rfind(name + "=", 0) == 0) return entry.substr(name.size() + 1);
#endif
    return {};
}

bool executable(const fs::path& path) { return !path.empty() && ::access(path.c_str(), X_OK) == 0; }

}  // namespace

std::string find_tool(const std::string& name) {
    if (const fs::path beside = own_directory() / name; executable(beside)) return beside.string();
    if (const std::string built = build_path(name); executable(built)) return built;
    if (const char* path = std::getenv("PATH")) {
        std::stringstream dirs(path);
        std::string dir;
        while (std::getline(dirs, dir, ':'))
            if (const fs::path candidate = fs::path(dir) / name; executable(candidate)) return candidate.string();
    }
    return {};
}

std::string require_tool(const std::string& name) {
    std::string path = find_tool(name);
    if (path.empty()) fail(exit_codes::tool_failed, fmt::format("{} not found (build it, or put it on the PATH)", name));
    return path;
}

void install_signal_handlers() {
    struct sigaction action {};
    action.sa_handler = on_interrupt;
    sigemptyset(&action.sa_mask);
    ::sigaction(SIGINT, &action, nullptr);
    ::sigaction(SIGTERM, &action, nullptr);
    std::signal(SIGPIPE, SIG_IGN);
}

bool interrupted() { return interrupt_seen; }

ToolRun run_tool(const std::vector<std::string>& argv, const std::string& stdin_text, std::chrono::milliseconds timeout) {
    const int output_fd = ::memfd_create("coconut-tool-output", MFD_CLOEXEC);
    int input[2] = {-1, -1};
    if (output_fd < 0 || ::pipe2(input, O_CLOEXEC) != 0) fail(exit_codes::io_error, "cannot create pipes for " + argv[0]);
    pcsc_env::Child child = pcsc_env::Child::spawn(argv, input[0], output_fd, output_fd);
    register_child(child.pid());
    ::close(input[0]);
    // Inputs are a few lines (key components): far below the pipe buffer, so this never blocks.
    [[maybe_unused]] auto written = ::write(input[1], stdin_text.data(), stdin_text.size());
    ::close(input[1]);
    const pid_t pid = child.pid();
    ToolRun run;
    run.exit_code = child.wait_exit(timeout);
    unregister_child(pid);
    std::string output;
    char buffer[4096];
    ssize_t got = 0;
    for (off_t offset = 0; (got = ::pread(output_fd, buffer, sizeof buffer, offset)) > 0; offset += got)
        output.append(buffer, static_cast<std::size_t>(got));
    ::close(output_fd);
    run.output = std::move(output);
    return run;
}

std::string run_tool_or_fail(const std::vector<std::string>& argv, const std::string& stdin_text, std::chrono::milliseconds timeout) {
    ToolRun run = run_tool(argv, stdin_text, timeout);
    if (run.exit_code != 0) {
        std::string command = fs::path(argv[0]).filename().string();
        for (std::size_t i = 1; i < argv.size() && i < 4; ++i) command += " " + argv[i];
        fail(exit_codes::tool_failed, fmt::format("{} failed (exit {}): {}", command, run.exit_code, run.output));
    }
    return run.output;
}

std::uint16_t wait_for_port(const fs::path& ready_file, const std::string& what, const fs::path& log) {
    const auto deadline = std::chrono::steady_clock::now() + daemon_ready_wait;
    while (true) {
        if (auto port = read_port(ready_file)) return *port;
        if (std::chrono::steady_clock::now() > deadline)
            fail(exit_codes::tool_failed, fmt::format("{} did not report its port in time (see {})", what, log.string()));
        std::this_thread::sleep_for(10ms);
    }
}

Process Process::start(std::string name, std::vector<std::string> argv, const fs::path& log) {
    Process process;
    process.name_ = std::move(name);
    process.argv_ = std::move(argv);
    process.log_ = log;
    process.launch();
    return process;
}

void Process::launch() {
    const int log_fd = ::open(log_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (log_fd < 0) fail(exit_codes::io_error, "cannot open " + log_.string());
    try {
        child_ = pcsc_env::Child::spawn(argv_, -1, log_fd, log_fd);
    } catch (const std::runtime_error& e) {
        ::close(log_fd);
        fail(exit_codes::tool_failed, fmt::format("cannot start {}: {}", name_, e.what()));
    }
    ::close(log_fd);
    register_child(child_.pid());
}

Process::~Process() {
    if (child_.running()) stop();
}

bool Process::exited() {
    if (!child_.running()) return false;  // never started, or stopped by us
    const pid_t pid = child_.pid();
    if (!child_.poll_exit()) return false;
    unregister_child(pid);
    return true;
}

int Process::stop() {
    const pid_t pid = child_.pid();
    const int code = child_.stop(SIGTERM);
    unregister_child(pid);
    return code;
}

void Process::kill_now() {
    const pid_t pid = child_.pid();
    child_.stop(SIGKILL);
    unregister_child(pid);
}

void Process::restart() {
    if (child_.running()) stop();
    launch();
}

Daemon Daemon::start(std::string name, std::vector<std::string> argv, const fs::path& ready_file, const fs::path& log) {
    Daemon daemon;
    daemon.name_ = std::move(name);
    daemon.argv_ = std::move(argv);
    daemon.ready_file_ = ready_file;
    daemon.log_ = log;
    daemon.launch();
    return daemon;
}

void Daemon::launch() {
    std::error_code ignored;
    fs::remove(ready_file_, ignored);
    std::vector<std::string> argv = argv_;
    argv.push_back("--ready-file");
    argv.push_back(ready_file_.string());
    process_ = Process::start(name_, std::move(argv), log_);
    const auto deadline = std::chrono::steady_clock::now() + daemon_ready_wait;
    while (true) {
        if (auto port = read_port(ready_file_)) {
            port_ = *port;
            return;
        }
        if (process_.exited()) fail(exit_codes::tool_failed, fmt::format("{} exited at start (see {})", name_, log_.string()));
        if (std::chrono::steady_clock::now() > deadline) {
            process_.kill_now();
            fail(exit_codes::tool_failed, fmt::format("{} did not become ready in time (see {})", name_, log_.string()));
        }
        std::this_thread::sleep_for(10ms);
    }
}

void Daemon::restart() {
    if (process_.running()) stop();
    // Come back on the same port: the terminals know the address, not the process. (Only the port the ready
    // file reports: a second listener, e.g. --http-listen, takes a free port again.)
    for (std::size_t i = 0; i < argv_.size(); ++i) {
        auto& arg = argv_[i];
        const auto colon = arg.rfind(":0");
        if (i > 0 && argv_[i - 1] == "--http-listen") continue;
        if (port_ != 0 && colon != std::string::npos && colon + 2 == arg.size() && arg.rfind("127.0.0.1", 0) == 0)
            arg = "127.0.0.1:" + std::to_string(port_);
    }
    launch();
}

}  // namespace coconut::cli
