// Where coconut-terminal takes the cardholder's PIN from: typed at the terminal without echo, or one line
// on standard input (--pin-stdin, for a PIN pad's driver or a script) — never the command line, where
// `ps` and the shell's history would show it.
#pragma once

#include <coconut/sdk/terminal.hpp>

#include <optional>
#include <string>

namespace coconut::terminal_cli {

// Reads one line from standard input when asked (the first call only); nullopt at end of input or for an
// empty line (the holder cancelled).
sdk::PinEntry pin_from_stdin();
// Prompts "PIN: " on /dev/tty and reads one line with echo off (restored afterwards, also when the read
// fails); nullopt when nothing was typed.
sdk::PinEntry pin_from_terminal();
// Whether someone can type the PIN: standard input is a terminal and /dev/tty opens.
bool has_terminal();

}  // namespace coconut::terminal_cli
