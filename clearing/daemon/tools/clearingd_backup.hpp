// coconut-clearingd backup / restore: the subcommands (coconut/clearing/backup.hpp does the work).
#pragma once

#include <coconut/clearing/backup.hpp>

#include <CLI/CLI.hpp>

#include <string>

namespace coconut::clearing {

struct BackupCommands {
    CLI::App* backup = nullptr;
    CLI::App* restore = nullptr;
    BackupOptions backup_options;
    RestoreOptions restore_options;
};

// Adds `backup` and `restore` to `app`.
void add_backup_commands(CLI::App& app, BackupCommands& commands);

// Runs the parsed one: what to print on success, or the error (the caller maps it to its exit code).
Result<std::string> run_backup_command(const BackupCommands& commands);

}  // namespace coconut::clearing
