// `coconut counter …`: what a service desk does in its day, over the clearing's clerk API (role
// `counter`, clearing/README.md "Card lifecycle" and "Card return, refund and tourist cards") and, for a
// card handed back, the counter's own terminal (coconut-terminal return-card and upload).
//
//   person        look a person up by SSN, or register one (name, birth date, cards)
//   report-lost   a card reported lost at the desk (the holder's SSN checked by the clearing)
//   found         the report undone within the waiting period
//   replace       a new card replaces a lost one: medical moved at once, purse carried after the wait
//   lifecycle     a card's lifecycle (lost, carried, late spending after the carry)
//   return        a card handed back: whole balance taken by the counter's PSAM, card blocked, purchase
//                 uploaded, then the return booked with the payout (cash or bank)
//   refund-broken an unreadable card refunded by bank after the waiting period
//   sell-tourist  a tourist card sold with its deposit
//   dormant       tourist cards still out, refunds owed, broken cards waiting
//   late-spending what lost cards still paid after their balance was carried
//
// The clerk token is read from a file that only its owner may read (mode 0600). Every HTTP refusal is
// printed with the clearing's error code and message and ends with the exit code of counter_exit below.
#pragma once

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <functional>
#include <string>

namespace coconut::cli {

namespace counter_exit {
inline constexpr int unauthorized = 20;   // 401: the clerk token is unknown or revoked
inline constexpr int forbidden = 21;      // 403: the clerk lacks the role, or the SSN is not the card holder's
inline constexpr int not_found = 22;      // 404: no such card, person or terminal
inline constexpr int conflict = 23;       // 409: the state forbids it (already returned, already replaced, …)
inline constexpr int rejected = 24;       // 400 / 413 / 422: the clearing refused the request as malformed
inline constexpr int busy = 25;           // 429 / 503: rate limited or another counter action running: retry
inline constexpr int unreachable = 26;    // no HTTP answer from --clearing-http
inline constexpr int server_error = 27;   // 5xx or an answer that is not the documented JSON
inline constexpr int terminal_step = 28;  // return: coconut-terminal failed (its exit code and error printed)
inline constexpr int accepted = 29;       // refund-broken: registered, waiting period not over (202): call again after it
}  // namespace counter_exit

// One clerk request to --clearing-http HOST:PORT with the clerk token of `token_file` (0600), as the counter
// commands make it: the answer's JSON body; a refusal fails the command with the clearing's error code and
// message and the counter_exit code of its status (coconut card letters uses it too).
nlohmann::json clerk_request(const std::string& clearing_http, const std::filesystem::path& token_file, const std::string& method,
                             const std::string& target, const nlohmann::json& body = nullptr);

// Adds `counter` and its subcommands to `app`; the parsed subcommand sets `command`.
void add_counter_commands(CLI::App& app, std::function<int()>& command);

}  // namespace coconut::cli
