// pcscd, `coconut-vcard serve` and the waits around them (pcsc_env.hpp).
#include "pcsc_env.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <thread>
#include <utility>

#ifndef COCONUT_VCARD_PATH
#define COCONUT_VCARD_PATH "coconut-vcard"
#endif

extern char** environ;

namespace coconut::pcsc_env {

namespace {

using Clock = std::chrono::steady_clock;

// How often to look again for a reader pcscd has not listed yet (right after it starts).
constexpr auto reader_poll_interval = 50ms;

int exit_code(int wait_status) { return WIFEXITED(wait_status) ? WEXITSTATUS(wait_status) : 128 + WTERMSIG(wait_status); }

int open_log(const std::filesystem::path& path) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) throw std::runtime_error("cannot write " + path.string());
    return fd;
}

}  // namespace

std::string default_vcard_path() { return COCONUT_VCARD_PATH; }

std::filesystem::path make_work_dir(const std::string& requested, const std::string& pattern) {
    if (requested.empty()) {
        std::string name = pattern;
        if (::mkdtemp(name.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
        return std::filesystem::absolute(name);
    }
    std::filesystem::path work = std::filesystem::absolute(requested);
    std::filesystem::create_directories(work);
    return work;
}

std::vector<pid_t> processes_named(const std::string& name) {
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

// ---- Child ---------------------------------------------------------------------------------------

Child Child::spawn(const std::vector<std::string>& argv, int stdin_fd, int stdout_fd, int stderr_fd) {
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    if (stdin_fd >= 0) posix_spawn_file_actions_adddup2(&actions, stdin_fd, 0);
    if (stdout_fd >= 0) posix_spawn_file_actions_adddup2(&actions, stdout_fd, 1);
    if (stderr_fd >= 0) posix_spawn_file_actions_adddup2(&actions, stderr_fd, 2);
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

Child::Child(Child&& other) noexcept : pid_(std::exchange(other.pid_, -1)) {}

Child& Child::operator=(Child&& other) noexcept {
    if (this != &other) {
        stop();
        pid_ = std::exchange(other.pid_, -1);
    }
    return *this;
}

Child::~Child() { stop(); }

std::optional<int> Child::poll_exit() {
    if (pid_ <= 0) return std::nullopt;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return status;
    }
    return std::nullopt;
}

int Child::wait_exit(std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    while (pid_ > 0 && Clock::now() < deadline) {
        if (auto status = poll_exit()) return exit_code(*status);
        std::this_thread::sleep_for(2ms);
    }
    return stop(SIGKILL);
}

int Child::stop(int signal) {
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
    return exit_code(status);
}

// ---- pcscd and serve -----------------------------------------------------------------------------

void Pcscd::start(const std::filesystem::path& log_path, bool report_waiting) {
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
            std::fprintf(stderr, "waiting for the running pcscd (pid %d) to exit (up to %lld s)...\n", others.front(),
                         static_cast<long long>(foreign_pcscd_wait.count()));
            reported = true;
        }
        std::this_thread::sleep_for(200ms);
    }
    std::error_code ignored;
    std::filesystem::remove_all("/run/pcscd", ignored);  // stale socket/pid of a killed run
    const int log_fd = open_log(log_path);
    child_ = Child::spawn({"pcscd", "--foreground", "--error"}, -1, log_fd, log_fd);
    ::close(log_fd);
    const auto socket_deadline = Clock::now() + pcscd_socket_wait;
    struct stat info {};
    while (::stat(pcscd_socket, &info) != 0 || !S_ISSOCK(info.st_mode)) {
        if (child_.poll_exit()) throw std::runtime_error("pcscd exited at start (see " + log_path.string() + ")");
        if (Clock::now() > socket_deadline) throw std::runtime_error("pcscd did not create its socket in time");
        std::this_thread::sleep_for(20ms);
    }
}

void VcardStack::start_pcscd(const std::filesystem::path& work) { pcscd_.start(work / "pcscd.log"); }

void VcardStack::start_serve(const std::string& vcard, const std::filesystem::path& work, const std::filesystem::path& card_image,
                             const std::filesystem::path& psam_image, bool volatile_images) {
    std::vector<std::string> argv{vcard, "serve", card_image.string(), "--psam", psam_image.string()};
    if (volatile_images) argv.push_back("--volatile");
    const int log_fd = open_log(work / "serve.log");
    serve_ = Child::spawn(argv, -1, -1, log_fd);
    ::close(log_fd);
}

VcardStack::ExitCodes VcardStack::stop() {
    ExitCodes codes;
    codes.serve = serve_.stop(SIGTERM);
    codes.pcscd = pcscd_.stop();
    return codes;
}

// ---- readers -------------------------------------------------------------------------------------

std::unique_ptr<sdk::PcscReader> open_reader_with_card(const std::string& reader_name, std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    for (;;) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
        if (left.count() <= 0) throw std::runtime_error("no card in '" + reader_name + "' in time");
        // The reader may not be listed yet right after pcscd starts: open fails until it is.
        if (auto reader = sdk::PcscReader::open(reader_name)) {
            auto present = (*reader)->wait_for_card(true, left);
            if (present && *present) return std::move(*reader);
        }
        std::this_thread::sleep_for(reader_poll_interval);
    }
}

Bytes connect_or_throw(sdk::PcscReader& reader) {
    auto atr = reader.connect();
    if (!atr) throw std::runtime_error(atr.error().message);
    return std::move(*atr);
}

Bytes transmit_short(sdk::PcscReader& reader, ByteView command) {
    Bytes response(258);  // 256 data bytes + SW1 SW2
    auto length = reader.transmit_into(command, response);
    if (!length) throw std::runtime_error(length.error().message);
    response.resize(*length);
    return response;
}

}  // namespace coconut::pcsc_env
