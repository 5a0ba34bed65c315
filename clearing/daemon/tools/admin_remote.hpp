// `coconut-clearingd admin --token-file FILE …`: the admin commands through the clerk API of the daemon
// that serves the data directory (its URL from DATA/http.url, or --url), so clerks, card tokens and
// registry entries change without stopping it. Every change is then journaled under the token's clerk.
// Grants of roles that move money wait for a second clerk: clerk-grants, clerk-approve, clerk-reject
// (those three exist only here). clearing/README.md "Clerks while serving".
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace coconut::clearing::admin {

struct RemoteAdmin {
    std::string token_file;  // a clerk token (one line); given: the command goes through the API
    std::string url;         // default: DATA/http.url
    std::string ca_file;     // https
    CLI::App* grants = nullptr;
    CLI::App* approve = nullptr;
    CLI::App* reject = nullptr;
    std::uint64_t grant = 0;
    std::string note;

    // --token-file, --url, --ca on `admin`, and the grant subcommands.
    void add_to(CLI::App* admin);
    bool active() const { return !token_file.empty(); }
    bool grant_command() const { return grants->parsed() || approve->parsed() || reject->parsed(); }
};

// What the offline commands were given (clearingd_main.cpp's AdminCommands), by name.
struct RemoteCommand {
    std::string
        name;  // "load", "card-status", "terminal-status", "clerk-add", "clerk-list", "clerk-revoke", "issue-tokens", or a grant command
    std::string registry_file, asn_text, status_text, terminal_text, clerk_name, clerk_roles, tokens_out, revoke_name;
    std::vector<std::string> token_cards;
};

// Runs the command through the API; the exit code (0 ok, 2 usage, 5 refused or unreachable, naming why).
int run_remote(const RemoteAdmin& remote, const std::string& data_dir, const RemoteCommand& command);

// The hint for a command refused because a daemon holds the directory: where its API is, or "".
std::string served_hint(const std::string& data_dir);

}  // namespace coconut::clearing::admin
