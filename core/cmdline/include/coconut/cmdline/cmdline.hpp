// What every coconut binary's command line shares (docs/CLI.md): --version, the exit-code table at the
// end of --help, usage errors exit 2, renamed options that keep their old name for a release (a
// warning when used), the daemons' config file (--config FILE, `config check FILE`) and log options
// (--log-format, --log-time, --log-level). Part of coconut::cmdline (CLI11); the binaries only.
#pragma once

#include <coconut/core/log.hpp>

#include <CLI/CLI.hpp>

#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace coconut::cmdline {

inline constexpr int exit_ok = 0;
inline constexpr int exit_usage = 2;
inline constexpr int exit_listen = 6;  // a daemon's port cannot be bound (in use, no permission)

// The project's version ("0.1.0") and, when the build knew it, `git describe` ("0.1.0 (v0.1.0-12-g4807a48)").
std::string version_text();

// An option renamed: the old name still works for a release, with a warning on stderr. Give both names
// to the option (add_option("--connections-max,--max-connections", …)) and list the pair here.
struct Rename {
    std::string_view old_name;  // "--max-connections"
    std::string_view new_name;  // "--connections-max"
};

// --version ("PROGRAM VERSION") and `exit_codes` (the "Exit codes:" table) as the --help footer, on the
// app and every subcommand already added; call after adding the subcommands.
void set_conventions(CLI::App& app, std::string_view program, std::string_view exit_codes);

// Parses the command line. nullopt: go on; otherwise the exit status: 0 after --help or --version, 2
// after a usage error (CLI11's message and the hint to --help on stderr). Warns about renamed options.
std::optional<int> parse(CLI::App& app, int argc, char** argv, std::string_view program, std::span<const Rename> renames = {});

// --config FILE on `app` (also after `command`'s name): a TOML (or INI) file whose top-level keys are
// `command`'s long option names without the dashes (iso-listen = "0.0.0.0:8583"); the command line
// overrides it. An unknown key, a section or a key that is not an option's is a usage error naming it.
void add_config_file(CLI::App& app, CLI::App* command, std::span<const Rename> renames = {});

// The `config check FILE` subcommand on `app` (FILE into `file`); returns it, to see whether it was parsed.
CLI::App* add_config_check_command(CLI::App& app, std::string& file);

// `config check FILE`: parses `command --config FILE`, runs `semantic` (nullopt: fine; else why not)
// and prints "FILE: ok" with the effective settings (every option, defaults included) on stdout:
// exit 0; else the problem on stderr: exit 2.
int check_config(CLI::App& app, CLI::App* command, const std::string& file, std::string_view program,
                 const std::function<std::optional<std::string>()>& semantic);

// --log-format text|json, --log-time auto|utc|none, --log-level debug|info|warning|error.
struct LogFlags {
    std::string format = "text";
    std::string time = "auto";
    std::string level = "info";
};
void add_log_options(CLI::App* command, LogFlags& flags);
// The settings the flags name (checked when parsing); configures the process's log.
void configure_log(std::string_view program, const LogFlags& flags);

}  // namespace coconut::cmdline
