// What coconut-terminal prints: transaction records, tap outcomes and errors, as text for an operator
// or as JSON (--json) for scripts and tests. The JSON field names are documented in terminal-sdk/README.md.
#pragma once

#include <coconut/sdk/queue.hpp>
#include <coconut/sdk/terminal.hpp>

#include <nlohmann/json.hpp>

#include <optional>
#include <string>

namespace coconut::terminal_cli {

std::string_view type_name(std::uint8_t type);
std::string_view to_string(sdk::TapKind kind);
// "12.34" for 1234 fen.
std::string yuan(std::uint64_t fen);

// One record; `sequence` is its position in the queue when known.
nlohmann::json to_json(const sdk::TransactionRecord& record, std::optional<std::uint64_t> sequence = {});
std::string to_text(const sdk::TransactionRecord& record, std::optional<std::uint64_t> sequence = {});

nlohmann::json to_json(const sdk::TapOutcome& outcome);
std::string to_text(const sdk::TapOutcome& outcome);

nlohmann::json to_json(const sdk::Cardholder& holder);

// An error as the CLI reports it: one line on stderr always, and with --json also a JSON document on
// stdout: {"error": {"kind", "code", "message", "sw"?, "block_reason"?, "response_code"?, "reversed"?,
// "exit_code"}}.
struct CliError {
    int exit_code;
    std::string kind;  // "flow", "reader", "image", "queue", "hotlist", "fares", "usage", "timeout"
    std::string code;  // the typed error's code name
    std::string message;
    std::uint16_t sw = 0;
    std::string block_reason{};
    std::string response_code{};  // declined: the clearing's field 39
    bool reversed = false;        // the flow reversed (0400) or queued a reversal advice (0420)
};

CliError from_flow(const sdk::FlowError& error);
int report(const CliError& error, bool as_json);

}  // namespace coconut::terminal_cli
