#include "pin_entry.hpp"

#include <fcntl.h>
#include <termios.h>
#include <unistd.h>

#include <iostream>
#include <memory>

namespace coconut::terminal_cli {

namespace {

std::optional<std::string> non_empty(std::string line) {
    while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
    if (line.empty()) return std::nullopt;
    return line;
}

// One line from `fd` (byte by byte: nothing after the newline is consumed).
std::optional<std::string> read_line(int fd) {
    std::string line;
    char c = 0;
    while (line.size() < 64) {
        const ssize_t got = ::read(fd, &c, 1);
        if (got <= 0) return line.empty() ? std::nullopt : std::optional<std::string>(line);
        if (c == '\n') break;
        line += c;
    }
    return line;
}

struct Fd {
    int fd;
    ~Fd() {
        if (fd >= 0) ::close(fd);
    }
};

}  // namespace

sdk::PinEntry pin_from_stdin() {
    return [] {
        std::string line;
        if (!std::getline(std::cin, line)) return std::optional<std::string>();
        return non_empty(std::move(line));
    };
}

bool has_terminal() {
    // Someone at the keyboard: standard input is the terminal (a pipe or /dev/null means a program runs
    // this one, and must give the PIN with --pin-stdin rather than be left waiting at a prompt).
    if (::isatty(STDIN_FILENO) == 0) return false;
    const Fd tty{::open("/dev/tty", O_RDWR | O_CLOEXEC)};
    return tty.fd >= 0;
}

sdk::PinEntry pin_from_terminal() {
    return []() -> std::optional<std::string> {
        const Fd tty{::open("/dev/tty", O_RDWR | O_CLOEXEC)};
        if (tty.fd < 0) return std::nullopt;
        termios saved{};
        const bool is_terminal = ::tcgetattr(tty.fd, &saved) == 0;
        if (is_terminal) {
            termios quiet = saved;
            quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
            quiet.c_lflag |= ECHONL;  // the newline still shows, the digits do not
            ::tcsetattr(tty.fd, TCSAFLUSH, &quiet);
        }
        constexpr char prompt[] = "PIN: ";
        (void)!::write(tty.fd, prompt, sizeof prompt - 1);
        auto line = read_line(tty.fd);
        if (is_terminal) ::tcsetattr(tty.fd, TCSAFLUSH, &saved);
        if (!line) return std::nullopt;
        return non_empty(std::move(*line));
    };
}

}  // namespace coconut::terminal_cli
