// The real PC/SC stack for the tools (tools/card-demo, tools/bench): start pcscd (docs/PCSC.md §4 recipe) and
// `coconut-vcard serve` as children, wait until the readers show the cards, and tear everything down by
// PID. The PC/SC calls go through the SDK's one wrapper, coconut::sdk::PcscReader; this library only owns
// the processes around it.
//
// Every wait is bounded (named constants below) and every child is reaped (an unreaped pcscd zombie
// blocks the next pcscd start, docs/PCSC.md §7). Failures to start are start-up failures: std::runtime_error
// with the reason.
#pragma once

#include <coconut/core/bytes.hpp>
#include <coconut/sdk/reader.hpp>

#include <sys/types.h>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace coconut::pcsc_env {

using namespace std::chrono_literals;

// pcscd creates its socket in ~60 ms; 5 s covers a loaded CI machine.
inline constexpr auto pcscd_socket_wait = 5s;
// The card appears ~0.5 s after the vicc connects (one 400 ms presence poll); 10 s is generous.
inline constexpr auto card_present_wait = 10s;
// A pcscd that somebody else started (another test run): wait this long for it to go away.
inline constexpr auto foreign_pcscd_wait = 120s;
// SIGTERM stops pcscd in 20-40 ms and coconut-vcard serve at once; after this, SIGKILL.
inline constexpr auto child_stop_wait = 5s;

inline constexpr const char* pcscd_socket = "/run/pcscd/pcscd.comm";
inline constexpr const char* card_reader = "Virtual PCD 00 00";  // vpcd slot 0, TCP 35963
inline constexpr const char* psam_reader = "Virtual PCD 00 01";  // vpcd slot 1, TCP 35964

// The coconut-vcard executable of this build (or "coconut-vcard" on the PATH when built without it).
std::string default_vcard_path();

// `requested` made absolute and created, or (if empty) a new directory from mkdtemp(`pattern`), e.g.
// "/tmp/coconut-card-demo.XXXXXX" (a relative pattern is made absolute against the cwd).
std::filesystem::path make_work_dir(const std::string& requested, const std::string& pattern);

// PIDs of running processes named exactly `name` (pgrep -x semantics: zombies count).
std::vector<pid_t> processes_named(const std::string& name);

// A child process started with posix_spawnp; terminated (SIGTERM, then SIGKILL) and reaped on destruction.
class Child {
public:
    Child() = default;
    // stdin/stdout/stderr: -1 keeps the parent's. Throws std::runtime_error if the spawn fails.
    static Child spawn(const std::vector<std::string>& argv, int stdin_fd = -1, int stdout_fd = -1, int stderr_fd = -1);
    Child(Child&& other) noexcept;
    Child& operator=(Child&& other) noexcept;
    ~Child();

    pid_t pid() const { return pid_; }
    bool running() const { return pid_ > 0; }
    // Has the child exited on its own? Reaps it if so and returns its wait status.
    std::optional<int> poll_exit();
    // Waits (bounded by `timeout`) for the child to exit by itself, then SIGKILL; returns the exit code as
    // stop().
    int wait_exit(std::chrono::milliseconds timeout);
    // Sends `signal`, waits (bounded by child_stop_wait, then SIGKILL) and reaps. Returns the exit code
    // (128+n if killed by signal n), or -1 if there was no child.
    int stop(int signal = SIGTERM);

private:
    pid_t pid_ = -1;
};

// pcscd in the foreground, started and stopped by us (docs/PCSC.md §4).
class Pcscd {
public:
    // Waits for a pcscd that is not ours to exit (bounded by foreign_pcscd_wait, saying so on stderr if
    // `report_waiting`), clears a stale /run/pcscd, starts pcscd (stdout and stderr to `log_path`) and waits
    // for its socket.
    void start(const std::filesystem::path& log_path, bool report_waiting = true);
    // SIGTERM and reap; returns pcscd's exit code (0 on a clean stop).
    int stop() { return child_.stop(); }
    pid_t pid() const { return child_.pid(); }

private:
    Child child_;
};

// pcscd + `coconut-vcard serve <card> --psam <psam>`: the card in card_reader, the PSAM in psam_reader.
// Logs go to <work>/pcscd.log and <work>/serve.log. The destructor stops serve, then pcscd.
class VcardStack {
public:
    struct ExitCodes {
        int serve = -1;
        int pcscd = -1;
    };

    void start_pcscd(const std::filesystem::path& work);
    // volatile_images: serve --volatile (memory copies of the images, nothing written back).
    void start_serve(const std::string& vcard, const std::filesystem::path& work, const std::filesystem::path& card_image,
                     const std::filesystem::path& psam_image, bool volatile_images = false);
    // SIGTERM to serve, then to pcscd; both reaped.
    ExitCodes stop();
    pid_t pcscd_pid() const { return pcscd_.pid(); }
    pid_t serve_pid() const { return serve_.pid(); }

private:
    Pcscd pcscd_;  // declared first: destroyed after serve
    Child serve_;
};

// Waits (bounded by `timeout`) until pcscd lists `reader_name` with a card in it, and opens it (not yet
// connected). Throws std::runtime_error if the reader or the card does not show up in time.
std::unique_ptr<sdk::PcscReader> open_reader_with_card(const std::string& reader_name,
                                                       std::chrono::milliseconds timeout = card_present_wait);

// Connects and returns the ATR; throws std::runtime_error on failure.
Bytes connect_or_throw(sdk::PcscReader& reader);

// Raw C-APDU → raw R-APDU for short responses only (≤ 256 data bytes): the demo and the card benchmark
// never ask for more, and transmit()'s 64 KiB buffer per call would skew the benchmark's floor. Throws
// std::runtime_error on failure.
Bytes transmit_short(sdk::PcscReader& reader, ByteView command);

}  // namespace coconut::pcsc_env
