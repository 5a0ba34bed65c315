// Runs the real coconut-hsmd for integration tests: on 127.0.0.1 with an ephemeral port, ready only
// once its ready file names the port AND a TCP connection gets the server's hello; every wait bounded;
// stopped by PID (SIGTERM, then SIGKILL after a bounded wait).
#pragma once

#include "support.hpp"

#include <coconut/hsm/protocol.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdio>
#include <optional>
#include <thread>
#include <vector>

namespace hsm_test {

// How long a daemon may take to start listening (2 cores shared with parallel builds: be generous).
inline constexpr auto daemon_start_timeout = std::chrono::seconds(20);
// How long SIGTERM may take before SIGKILL.
inline constexpr auto daemon_stop_timeout = std::chrono::seconds(5);
// Receive timeout of raw test sockets: no test read may hang.
inline constexpr int raw_socket_timeout_s = 10;

// A raw TCP connection for speaking (and breaking) the protocol by hand. `source`: the local address
// to connect from (another loopback address such as "127.0.0.2" is another client address to the
// daemon); nullptr lets the kernel choose (127.0.0.1).
class RawConnection {
public:
    explicit RawConnection(std::uint16_t port, const char* source = nullptr) {
        fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
        timeval tv{raw_socket_timeout_s, 0};
        ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        if (source != nullptr) {
            sockaddr_in local{};
            local.sin_family = AF_INET;
            if (::inet_pton(AF_INET, source, &local.sin_addr) != 1 || ::bind(fd_, reinterpret_cast<sockaddr*>(&local), sizeof local) != 0)
                return;
        }
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_port = htons(port);
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    }
    ~RawConnection() {
        if (fd_ >= 0) ::close(fd_);
    }
    RawConnection(const RawConnection&) = delete;
    RawConnection& operator=(const RawConnection&) = delete;

    bool connected() const { return connected_; }
    bool send(ByteView bytes) { return ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size()); }
    void close() {
        ::close(fd_);
        fd_ = -1;
    }

    // One frame's body, or nullopt on EOF / reset / timeout.
    std::optional<Bytes> read_frame() {
        std::array<std::uint8_t, 4> prefix{};
        if (!read_exact(prefix.data(), prefix.size())) return std::nullopt;
        Bytes body(coconut::read_be32(prefix));
        if (body.size() > hsm::wire::max_frame_bytes || !read_exact(body.data(), body.size())) return std::nullopt;
        return body;
    }
    // Reads the hello and returns its nonce.
    std::optional<hsm::wire::Nonce> hello() {
        auto body = read_frame();
        if (!body) return std::nullopt;
        auto decoded = hsm::wire::decode_hello(*body);
        if (!decoded) return std::nullopt;
        return decoded->nonce;
    }
    // True if the peer closed the connection (EOF or reset) within the socket timeout.
    bool closed_by_peer() {
        std::uint8_t byte = 0;
        const ssize_t n = ::recv(fd_, &byte, 1, 0);
        return n == 0 || (n < 0 && errno == ECONNRESET);
    }

private:
    bool read_exact(std::uint8_t* out, std::size_t size) {
        std::size_t done = 0;
        while (done < size) {
            const ssize_t n = ::recv(fd_, out + done, size - done, 0);
            if (n <= 0) return false;
            done += static_cast<std::size_t>(n);
        }
        return true;
    }
    int fd_ = -1;
    bool connected_ = false;
};

class Daemon {
public:
    // `open_files`: if set, the daemon's RLIMIT_NOFILE, soft and hard (it cannot raise it further).
    Daemon(const std::filesystem::path& dir, std::vector<std::string> extra = {}, std::optional<rlim_t> open_files = std::nullopt)
        : dir_(dir) {
        const std::filesystem::path ready = dir / "ready";
        std::filesystem::remove(ready);
        std::vector<std::string> args = {COCONUT_HSMD_PATH, "serve",
                                         "--store",         (dir / "store").string(),
                                         "--listen",        "127.0.0.1:0",
                                         "--ready-file",    ready.string(),
                                         "--threads",       "2"};
        args.insert(args.end(), extra.begin(), extra.end());
        const std::string log = (dir / "hsmd.log").string();
        std::fflush(nullptr);  // or the child would flush a copy of our buffered output
        pid_ = ::fork();
        REQUIRE(pid_ >= 0);
        if (pid_ == 0) {
            const int out = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
            ::dup2(out, 1);
            ::dup2(out, 2);
            if (open_files) {
                const rlimit limit{*open_files, *open_files};
                if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) std::_Exit(126);
            }
            std::vector<char*> argv;
            for (auto& a : args) argv.push_back(a.data());
            argv.push_back(nullptr);
            ::execv(argv[0], argv.data());
            std::_Exit(127);
        }
        const auto deadline = std::chrono::steady_clock::now() + daemon_start_timeout;
        while (std::chrono::steady_clock::now() < deadline && alive()) {
            if (std::filesystem::exists(ready)) {
                port_ = static_cast<std::uint16_t>(std::stoi(read_text(ready)));
                RawConnection probe(port_);
                if (probe.connected() && probe.hello()) return;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
        FAIL("coconut-hsmd did not become ready: " << read_text(dir / "hsmd.log"));
    }
    ~Daemon() { stop(); }
    Daemon(const Daemon&) = delete;
    Daemon& operator=(const Daemon&) = delete;

    std::uint16_t port() const { return port_; }
    hsm::wire::Endpoint endpoint() const { return {"127.0.0.1", port_}; }
    pid_t pid() const { return pid_; }

    bool alive() {
        if (exited_) return false;
        int status = 0;
        if (::waitpid(pid_, &status, WNOHANG) == pid_) {
            exited_ = true;
            exit_status_ = status;
            return false;
        }
        return true;
    }

    // Sends `sig`. For SIGSTOP, returns only once every thread of the daemon is stopped: kill() returns
    // before the threads have taken the signal, and a request sent meanwhile may still be answered.
    void signal(int sig) {
        ::kill(pid_, sig);
        if (sig != SIGSTOP) return;
        const auto deadline = std::chrono::steady_clock::now() + daemon_stop_timeout;
        while (!all_threads_stopped()) {
            if (std::chrono::steady_clock::now() >= deadline) FAIL("coconut-hsmd did not stop on SIGSTOP within the bound");
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
    }

    // SIGTERM, bounded wait, SIGKILL. Returns the wait status.
    int stop() {
        if (pid_ <= 0 || exited_) return exit_status_;
        ::kill(pid_, SIGTERM);
        const auto deadline = std::chrono::steady_clock::now() + daemon_stop_timeout;
        while (std::chrono::steady_clock::now() < deadline) {
            if (!alive()) return exit_status_;
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &exit_status_, 0);
        exited_ = true;
        return exit_status_;
    }

private:
    // Every thread's state in /proc is 'T' (stopped by a signal). A daemon that is gone counts as not
    // stopped: the bound above then fails the test with its message.
    bool all_threads_stopped() const {
        std::error_code error;
        const std::filesystem::path tasks = "/proc/" + std::to_string(pid_) + "/task";
        std::size_t threads = 0;
        for (const auto& task : std::filesystem::directory_iterator(tasks, error)) {
            const std::string stat = read_text(task.path() / "stat");
            const auto paren = stat.rfind(')');
            if (paren == std::string::npos || paren + 2 >= stat.size() || stat[paren + 2] != 'T') return false;
            ++threads;
        }
        return !error && threads > 0;
    }

    std::filesystem::path dir_;
    pid_t pid_ = -1;
    std::uint16_t port_ = 0;
    bool exited_ = false;
    int exit_status_ = 0;
};

struct CommandResult {
    int exit_code = -1;
    std::string output;
};

// A store with the test keys and two clients whose key files are dir/clearing.key and dir/issuance.key.
struct Installation {
    TempDir dir;
    Installation() {
        make_store(dir.path());
        auto store = hsm::KeyStore::open(dir / "store");
        REQUIRE(store.ok());
        auto clearing = store->add_client("clearing", hsm::permit_tac);
        auto issuance = store->add_client("issuance", hsm::permit_all);
        REQUIRE(clearing.ok());
        REQUIRE(issuance.ok());
        REQUIRE(store->save().ok());
        REQUIRE(hsm::wire::write_client_credentials(dir / "clearing.key", {"clearing", clearing.value()}).ok());
        REQUIRE(hsm::wire::write_client_credentials(dir / "issuance.key", {"issuance", issuance.value()}).ok());
    }
    hsm::wire::ClientCredentials credentials(const std::string& id) const {
        auto c = hsm::wire::read_client_credentials(dir / (id + ".key"));
        REQUIRE(c.ok());
        return std::move(c.value());
    }
    std::string audit_text() const { return read_text(dir / "store" / "audit.log"); }
    bool audit_has(const std::string& needle) const { return audit_text().find(needle) != std::string::npos; }
};

// Runs a shell command (stdout + stderr captured). Commands given here carry their own timeouts.
inline CommandResult run(const std::string& command) {
    CommandResult result;
    std::FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
    REQUIRE(pipe != nullptr);
    std::array<char, 4096> buffer{};
    while (std::fgets(buffer.data(), buffer.size(), pipe) != nullptr) result.output += buffer.data();
    const int status = ::pclose(pipe);
    result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return result;
}

}  // namespace hsm_test
