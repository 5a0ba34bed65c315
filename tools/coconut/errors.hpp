// The coconut CLI's exit codes and the one failure type its commands raise.
//
// A command is a sequence of steps (start a daemon, run a ceremony tool, issue a card, upload …); the first
// step that fails ends the command with a message naming the step and an exit code an operator's script can
// act on. Steps throw CommandFailed; main() prints "coconut: <message>" and exits with the code.
#pragma once

#include <stdexcept>
#include <string>

namespace coconut::cli {

namespace exit_codes {
inline constexpr int ok = 0;
inline constexpr int check_failed = 1;    // an invariant, a balance comparison or a reconciliation failed
inline constexpr int usage = 2;           // bad command line (CLI11 prints the details)
inline constexpr int tool_failed = 3;     // another executable exited non-zero, or a daemon did not start
inline constexpr int io_error = 4;        // a file or directory could not be read or written
inline constexpr int hsm_error = 5;       // the HSM refused or could not be reached
inline constexpr int clearing_error = 6;  // uploads did not complete within the retry bound
inline constexpr int bad_input = 7;       // an input file (image, registry, world directory) is invalid
inline constexpr int interrupted = 130;   // SIGINT / SIGTERM: daemons stopped, nothing else done
}  // namespace exit_codes

struct CommandFailed : std::runtime_error {
    CommandFailed(int code, const std::string& message) : std::runtime_error(message), exit_code(code) {}
    int exit_code;
};

[[noreturn]] inline void fail(int code, const std::string& message) { throw CommandFailed(code, message); }

}  // namespace coconut::cli
