// The real PC/SC stack for the card demo and the card benchmark: start pcscd (PCSC.md §4 recipe),
// start `coconut-vcard serve` as a child, wait until the readers show the cards, talk to them through
// libpcsclite, and tear everything down by PID. Header-only; used by tools/card-demo and tools/bench.
//
// Every wait is bounded (named constants below) and every child is reaped (an unreaped pcscd zombie
// blocks the next pcscd start, PCSC.md §7).
#pragma once

#include <coconut/apdu/bytes.hpp>

#include <PCSC/winscard.h>
#include <PCSC/wintypes.h>

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

extern char** environ;

namespace coconut::pcsc_stack {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// pcscd creates its socket in ~60 ms; 5 s covers a loaded CI machine.
inline constexpr auto pcscd_socket_wait = 5s;
// The card appears ~0.5 s after the vicc connects (one 400 ms presence poll); 10 s is generous.
inline constexpr auto card_present_wait = 10s;
// A pcscd that somebody else started (another test run): wait this long for it to go away.
inline constexpr auto foreign_pcscd_wait = 120s;
// SIGTERM stops pcscd in 20-40 ms and coconut-vcard serve at once; after this, SIGKILL.
inline constexpr auto child_stop_wait = 5s;

inline const char* const pcscd_socket = "/run/pcscd/pcscd.comm";
inline const char* const card_reader = "Virtual PCD 00 00";  // vpcd slot 0, TCP 35963
inline const char* const psam_reader = "Virtual PCD 00 01";  // vpcd slot 1, TCP 35964

// PIDs of running processes named exactly `name` (pgrep -x semantics: zombies count).
inline std::vector<pid_t> processes_named(const std::string& name) {
    std::vector<pid_t> found;
    DIR* proc = ::opendir("/proc");
    if (proc == nullptr) return found;
    while (dirent* entry = ::readdir(proc)) {
        const std::string pid_text = entry->d_name;
        if (pid_text.empty() || pid_text.find_first_not_of("0123456789") != std::string::npos) continue;
        std::ifstream comm("/proc/" + pid_text + "/comm");
        std::string comm_name;
        if (std::getline(comm, comm_name) && comm_name == name) found.push_back(std::stoi(pid_text));
    }
    ::closedir(proc);
    return found;
}

// A child process started with posix_spawn; terminated (SIGTERM, then SIGKILL) and reaped on destruction.
class Child {
  public:
    Child() = default;
    // stdin/stdout/stderr: -1 keeps the parent's.
    static Child spawn(const std::vector<std::string>& argv, int stdin_fd = -1, int stdout_fd = -1,
                       int stderr_fd = -1, const std::vector<int>& close_in_child = {}) {
        posix_spawn_file_actions_t actions;
        posix_spawn_file_actions_init(&actions);
        if (stdin_fd >= 0) posix_spawn_file_actions_adddup2(&actions, stdin_fd, 0);
        if (stdout_fd >= 0) posix_spawn_file_actions_adddup2(&actions, stdout_fd, 1);
        if (stderr_fd >= 0) posix_spawn_file_actions_adddup2(&actions, stderr_fd, 2);
        for (int fd : close_in_child) posix_spawn_file_actions_addclose(&actions, fd);
        std::vector<char*> args;
        for (const auto& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
        args.push_back(nullptr);
        pid_t pid = 0;
        const int rc = ::posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
        posix_spawn_file_actions_destroy(&actions);
        if (rc != 0) throw std::runtime_error("cannot start " + argv[0] + ": " + std::strerror(rc));
        Child child;
        child.pid_ = pid;
        return child;
    }
    Child(Child&& other) noexcept : pid_(std::exchange(other.pid_, -1)) {}
    Child& operator=(Child&& other) noexcept {
        if (this != &other) {
            stop();
            pid_ = std::exchange(other.pid_, -1);
        }
        return *this;
    }
    ~Child() { stop(); }

    pid_t pid() const { return pid_; }
    bool running() const { return pid_ > 0; }
    // Has the child exited on its own? Reaps it if so and returns its wait status.
    std::optional<int> poll_exit() {
        if (pid_ <= 0) return std::nullopt;
        int status = 0;
        if (::waitpid(pid_, &status, WNOHANG) == pid_) {
            pid_ = -1;
            return status;
        }
        return std::nullopt;
    }
    // Waits (bounded by `timeout`) for the child to exit by itself, then SIGKILL; returns the exit code as
    // stop().
    int wait_exit(std::chrono::milliseconds timeout) {
        const auto deadline = Clock::now() + timeout;
        while (pid_ > 0 && Clock::now() < deadline) {
            if (auto status = poll_exit())
                return WIFEXITED(*status) ? WEXITSTATUS(*status) : 128 + WTERMSIG(*status);
            std::this_thread::sleep_for(2ms);
        }
        return stop(SIGKILL);
    }
    // Sends `signal`, waits (bounded) and reaps. Returns the exit code (128+n if killed by a signal), or
    // -1 if there was no child.
    int stop(int signal = SIGTERM) {
        if (pid_ <= 0) return -1;
        ::kill(pid_, signal);
        const auto deadline = Clock::now() + child_stop_wait;
        int status = 0;
        for (;;) {
            const pid_t done = ::waitpid(pid_, &status, WNOHANG);
            if (done == pid_ || done < 0) break;
            if (Clock::now() > deadline) {
                ::kill(pid_, SIGKILL);
                ::waitpid(pid_, &status, 0);
                break;
            }
            std::this_thread::sleep_for(5ms);
        }
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }

  private:
    pid_t pid_ = -1;
};

// pcscd in the foreground, started and stopped by us (PCSC.md §4).
class Pcscd {
  public:
    // Waits for a pcscd that is not ours to exit (bounded), clears a stale /run/pcscd, starts pcscd and
    // waits for its socket. Throws std::runtime_error with the reason on failure.
    void start(const std::filesystem::path& log_path, bool report_waiting = true) {
        const auto deadline = Clock::now() + foreign_pcscd_wait;
        bool reported = false;
        for (;;) {
            const auto others = processes_named("pcscd");
            if (others.empty()) break;
            if (Clock::now() > deadline) {
                throw std::runtime_error("another pcscd (pid " + std::to_string(others.front()) +
                                         ") is still running; only one pcscd can run per machine");
            }
            if (report_waiting && !reported) {
                std::fprintf(stderr, "waiting for the running pcscd (pid %d) to exit (up to %lld s)...\n",
                             others.front(), static_cast<long long>(foreign_pcscd_wait.count()));
                reported = true;
            }
            std::this_thread::sleep_for(200ms);
        }
        std::error_code ignored;
        std::filesystem::remove_all("/run/pcscd", ignored);  // stale socket/pid of a killed run
        const int log_fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (log_fd < 0) throw std::runtime_error("cannot write " + log_path.string());
        child_ = Child::spawn({"pcscd", "--foreground", "--error"}, -1, log_fd, log_fd);
        ::close(log_fd);
        const auto socket_deadline = Clock::now() + pcscd_socket_wait;
        struct stat info {};
        while (::stat(pcscd_socket, &info) != 0 || !S_ISSOCK(info.st_mode)) {
            if (auto status = child_.poll_exit()) {
                throw std::runtime_error("pcscd exited at start (see " + log_path.string() + ")");
            }
            if (Clock::now() > socket_deadline)
                throw std::runtime_error("pcscd did not create its socket in time");
            std::this_thread::sleep_for(20ms);
        }
    }
    // SIGTERM and reap; returns pcscd's exit code (0 on a clean stop).
    int stop() { return child_.stop(SIGTERM); }
    pid_t pid() const { return child_.pid(); }

  private:
    Child child_;
};

// ---- libpcsclite ------------------------------------------------------------------------------

inline std::string pcsc_error(LONG rc) {
    return pcsc_stringify_error(rc);
}

class Context {
  public:
    Context() {
        if (const LONG rc = SCardEstablishContext(SCARD_SCOPE_SYSTEM, nullptr, nullptr, &context_);
            rc != SCARD_S_SUCCESS) {
            throw std::runtime_error("SCardEstablishContext: " + pcsc_error(rc));
        }
    }
    ~Context() { SCardReleaseContext(context_); }
    Context(const Context&) = delete;
    Context& operator=(const Context&) = delete;
    SCARDCONTEXT get() const { return context_; }

    // Waits until `reader` exists and holds a card (bounded by `timeout`).
    void wait_for_card(const char* reader, std::chrono::milliseconds timeout) const {
        const auto deadline = Clock::now() + timeout;
        SCARD_READERSTATE state{};
        state.szReader = reader;
        state.dwCurrentState = SCARD_STATE_UNAWARE;
        for (;;) {
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
            if (left.count() <= 0)
                throw std::runtime_error(std::string("no card in '") + reader + "' in time");
            const LONG rc = SCardGetStatusChange(
                context_, static_cast<DWORD>(std::min<long long>(left.count(), 200)), &state, 1);
            if (rc == SCARD_S_SUCCESS && (state.dwEventState & SCARD_STATE_PRESENT) != 0) return;
            if (rc == SCARD_S_SUCCESS) state.dwCurrentState = state.dwEventState;
            if (rc != SCARD_S_SUCCESS && rc != SCARD_E_TIMEOUT) {
                // The reader may not be listed yet right after pcscd starts.
                std::this_thread::sleep_for(50ms);
                state.dwCurrentState = SCARD_STATE_UNAWARE;
            }
        }
    }

  private:
    SCARDCONTEXT context_ = 0;
};

class Card {
  public:
    Card(const Context& context, const char* reader) {
        if (const LONG rc = SCardConnect(context.get(), reader, SCARD_SHARE_SHARED,
                                         SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1, &handle_, &protocol_);
            rc != SCARD_S_SUCCESS) {
            throw std::runtime_error(std::string("SCardConnect '") + reader + "': " + pcsc_error(rc));
        }
    }
    ~Card() { SCardDisconnect(handle_, SCARD_LEAVE_CARD); }
    Card(const Card&) = delete;
    Card& operator=(const Card&) = delete;

    DWORD protocol() const { return protocol_; }
    // Raw command APDU → raw response APDU (data ‖ SW1 SW2). Short responses only (≤ 256 data bytes):
    // the demo and the benchmark never ask for more, and a 64 KiB buffer per call would skew the floor.
    Bytes transmit(ByteView command) const {
        const SCARD_IO_REQUEST* pci = protocol_ == SCARD_PROTOCOL_T0 ? SCARD_PCI_T0 : SCARD_PCI_T1;
        Bytes response(258);
        DWORD length = static_cast<DWORD>(response.size());
        if (const LONG rc = SCardTransmit(handle_, pci, command.data(), static_cast<DWORD>(command.size()),
                                          nullptr, response.data(), &length);
            rc != SCARD_S_SUCCESS) {
            throw std::runtime_error("SCardTransmit: " + pcsc_error(rc));
        }
        response.resize(length);
        return response;
    }
    Bytes atr() const {
        BYTE atr[MAX_ATR_SIZE];
        DWORD atr_length = sizeof atr;
        DWORD state = 0;
        DWORD protocol = 0;
        char name[256];
        DWORD name_length = sizeof name;
        if (SCardStatus(handle_, name, &name_length, &state, &protocol, atr, &atr_length) != SCARD_S_SUCCESS)
            return {};
        return Bytes(atr, atr + atr_length);
    }

  private:
    SCARDHANDLE handle_ = 0;
    DWORD protocol_ = 0;
};

}  // namespace coconut::pcsc_stack
