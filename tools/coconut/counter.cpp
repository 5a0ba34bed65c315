#include "counter.hpp"

#include "cardholder_api.hpp"
#include "errors.hpp"
#include "process.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <vector>

namespace coconut::cli {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr const char* counter_footer =
    "Every command takes --clearing-http HOST:PORT (coconut-clearingd --http-listen) and --token-file FILE (a clerk\n"
    "token with the role counter, `coconut-clearingd admin clerk-add --roles counter`; the file must be mode 0600).\n"
    "--json prints the clearing's answer as JSON; refusals print \"coconut: … HTTP <status> <code>: <message>\".\n\n"
    "Exit codes:\n"
    "   0  done\n"
    "   2  bad command line (a card number that is not 16 digits, bank details with --payout cash, …)\n"
    "   4  the token file cannot be read\n"
    "   7  the token file is readable by others (chmod 600) or holds no clerk token; return: the card in the\n"
    "      reader is not CARD (nothing was taken)\n"
    "  20  401: the clerk token is unknown or revoked\n"
    "  21  403: the clerk lacks the role counter, or the SSN is not the card holder's\n"
    "  22  404: no such card, person or terminal\n"
    "  23  409: refused by the card's state (already returned, already replaced, already sold, purchase not booked, …)\n"
    "  24  400 / 413 / 422: the clearing refused the request as malformed (e.g. a bad SSN)\n"
    "  25  429 / 503: rate limited, or another counter action is running: try again\n"
    "  26  no HTTP answer from --clearing-http\n"
    "  27  5xx, or an answer that is not the documented JSON\n"
    "  28  return: a coconut-terminal step failed (its exit code and error are printed; rerun `return`: it never\n"
    "      debits twice, or give --terminal-serial of the purchase already taken)\n"
    "  29  refund-broken: registered, the waiting period is not over (202): call again after it\n";

// A field of an answer as text, whatever its JSON type ("-" when absent or null).
std::string field(const json& object, const char* key) {
    if (!object.is_object() || !object.contains(key) || object[key].is_null()) return "-";
    const json& value = object[key];
    return value.is_string() ? value.get<std::string>() : value.dump();
}

struct CounterOptions {
    std::string clearing_http;
    fs::path token_file;
    bool json = false;
};

// The clerk token: the first line of a file only its owner may read.
std::string read_clerk_token(const fs::path& file) {
    struct stat st {};
    if (::stat(file.c_str(), &st) != 0) fail(exit_codes::io_error, fmt::format("token file {}: cannot be read", file.string()));
    if ((st.st_mode & 0077) != 0)
        fail(exit_codes::bad_input,
             fmt::format("token file {} is readable by others (mode {:04o}): chmod 600 it", file.string(), st.st_mode & 07777));
    std::ifstream in(file);
    std::string token;
    if (!in || !std::getline(in, token)) fail(exit_codes::io_error, fmt::format("token file {}: cannot be read", file.string()));
    while (!token.empty() && std::isspace(static_cast<unsigned char>(token.back())) != 0) token.pop_back();
    if (!token.starts_with("clerk_")) fail(exit_codes::bad_input, fmt::format("token file {} holds no clerk token", file.string()));
    return token;
}

// HOST:PORT ([IPv6]:PORT too).
std::pair<std::string, std::uint16_t> parse_endpoint(const std::string& text) {
    const auto colon = text.rfind(':');
    std::string host = colon == std::string::npos ? "" : text.substr(0, colon);
    const std::string port = colon == std::string::npos ? "" : text.substr(colon + 1);
    if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    const bool digits =
        !port.empty() && port.size() <= 5 && std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; });
    if (host.empty() || !digits || std::stoul(port) == 0 || std::stoul(port) > 65535)
        fail(exit_codes::usage, fmt::format("--clearing-http {}: expected HOST:PORT", text));
    return {host, static_cast<std::uint16_t>(std::stoul(port))};
}

void require_card_number(const std::string& number, const char* what = "CARD") {
    if (number.size() != 16 || !std::all_of(number.begin(), number.end(), [](char c) { return c >= '0' && c <= '9'; }))
        fail(exit_codes::usage, fmt::format("{} {}: a card number is 16 digits", what, number));
}

int exit_for_status(int status) {
    switch (status) {
        case 401: return counter_exit::unauthorized;
        case 403: return counter_exit::forbidden;
        case 404: return counter_exit::not_found;
        case 409: return counter_exit::conflict;
        case 400:
        case 413:
        case 422: return counter_exit::rejected;
        case 429:
        case 503: return counter_exit::busy;
        default: return counter_exit::server_error;
    }
}

struct Answer {
    int status = 0;
    json body;
};

// One clerk request; a refusal fails the command with the clearing's error code and message.
Answer clerk_call(const CounterOptions& options, const std::string& method, const std::string& target, const json& body = nullptr) {
    const std::string token = read_clerk_token(options.token_file);
    const auto [host, port] = parse_endpoint(options.clearing_http);
    HttpRequest request;
    request.host = host;
    request.port = port;
    request.method = method;
    request.target = target;
    request.bearer_token = token;
    if (!body.is_null()) request.body = body.dump();
    auto answer = http_exchange(request);
    if (!answer) fail(counter_exit::unreachable, answer.error());
    json parsed = json::parse(answer->body, nullptr, false);
    if (answer->status >= 200 && answer->status < 300) {
        if (parsed.is_discarded())
            fail(counter_exit::server_error, fmt::format("{} {}: HTTP {} without a JSON body", method, target, answer->status));
        return {answer->status, std::move(parsed)};
    }
    std::string code = "?";
    std::string message = answer->body.substr(0, 200);
    if (!parsed.is_discarded() && parsed.contains("error") && parsed["error"].is_object()) {
        code = field(parsed["error"], "code");
        message = field(parsed["error"], "message");
    }
    fail(exit_for_status(answer->status), fmt::format("{} {}: HTTP {} {}: {}", method, target, answer->status, code, message));
}

void print(const CounterOptions& options, const json& body, const std::string& text) {
    if (options.json) {
        std::cout << body.dump() << "\n";
    } else {
        std::cout << text << "\n";
    }
}

std::string card_target(const std::string& number, const std::string& tail = {}) {
    require_card_number(number);
    return "/v1/clerk/cards/" + number + tail;
}

// ---- person, lost, found, replace, lifecycle -----------------------------------------------------

struct PersonArgs {
    std::string ssn;
    std::string name;
    std::string birth_date;
    std::vector<std::string> cards;
};

int person_command(const CounterOptions& options, const PersonArgs& args) {
    json body{{"ssn", args.ssn}};
    if (!args.name.empty() || !args.birth_date.empty()) {
        body["name"] = args.name;
        body["birth_date"] = args.birth_date;
    }
    for (const auto& card : args.cards) require_card_number(card, "--card");
    if (!args.cards.empty()) body["cards"] = args.cards;
    const Answer answer = clerk_call(options, "POST", "/v1/clerk/persons", body);
    std::string cards;
    for (const auto& card : answer.body.value("cards", json::array()))
        cards += " " + field(card, "card_number") + " (" + field(card, "status") + ")";
    print(options, answer.body,
          fmt::format("{}, born {}; cards:{}", field(answer.body, "name"), field(answer.body, "birth_date"),
                      cards.empty() ? " none" : cards));
    return exit_codes::ok;
}

std::string lost_text(const json& body) {
    std::string text = fmt::format("card {}: {}", field(body, "card_number"), field(body, "status"));
    if (body.contains("lost") && body["lost"].is_object()) {
        const json& lost = body["lost"];
        text += fmt::format(", reported {} by {}, {}", field(lost, "reported_at"), field(lost, "reported_by"), field(lost, "state"));
        if (lost.contains("replaced_by")) text += ", replaced by " + field(lost, "replaced_by");
    }
    return text;
}

int lost_command(const CounterOptions& options, const std::string& number, const std::string& ssn, bool found) {
    const Answer answer = clerk_call(options, found ? "DELETE" : "POST", card_target(number, "/lost"), json{{"ssn", ssn}});
    print(options, answer.body, lost_text(answer.body));
    return exit_codes::ok;
}

int replace_command(const CounterOptions& options, const std::string& number, const std::string& new_card, const std::string& ssn) {
    require_card_number(new_card, "--new-card");
    const Answer answer = clerk_call(options, "POST", card_target(number, "/replace"), json{{"new_card", new_card}, {"ssn", ssn}});
    std::string text = lost_text(answer.body);
    if (answer.body.contains("lost") && answer.body["lost"].is_object())
        text += fmt::format("; medical moved {} fen; purse carried after the waiting period",
                            field(answer.body["lost"], "medical_carried_fen"));
    print(options, answer.body, text);
    return exit_codes::ok;
}

int lifecycle_command(const CounterOptions& options, const std::string& number) {
    const Answer answer = clerk_call(options, "GET", card_target(number, "/lifecycle"));
    std::string text = lost_text(answer.body);
    if (answer.body.contains("carried")) text += "\ncarried: " + answer.body["carried"].dump();
    if (answer.body.contains("lost")) text += "\nlost: " + answer.body["lost"].dump();
    print(options, answer.body, text);
    return exit_codes::ok;
}

// ---- return, refund-broken, sell-tourist ---------------------------------------------------------

struct ReturnArgs {
    std::string card_number;
    std::string reader, psam_reader;
    fs::path card_image, psam_image, queue = "terminal.queue", hotlist;
    std::string terminal_id, clearing, ca, cert, key;
    bool insecure = false;
    std::string hsm, hsm_key, maintenance_key;
    std::optional<std::uint32_t> terminal_serial;
    std::string payout = "cash", bank_account, account_holder;
};

// coconut-terminal's global options for the counter's reader and PSAM, and its queue.
std::vector<std::string> terminal_argv(const ReturnArgs& args) {
    std::vector<std::string> argv{find_tool("coconut-terminal"), "--json", "--queue", args.queue.string()};
    if (!args.reader.empty()) argv.insert(argv.end(), {"--reader", args.reader});
    if (!args.psam_reader.empty()) argv.insert(argv.end(), {"--psam-reader", args.psam_reader});
    if (!args.card_image.empty()) argv.insert(argv.end(), {"--card", args.card_image.string()});
    if (!args.psam_image.empty()) argv.insert(argv.end(), {"--psam", args.psam_image.string()});
    if (!args.hotlist.empty()) argv.insert(argv.end(), {"--hotlist", args.hotlist.string()});
    return argv;
}

// Runs one coconut-terminal step; its JSON answer, or the command fails with its error.
json terminal_step(std::vector<std::string> argv, const std::vector<std::string>& tail, const std::string& what) {
    argv.insert(argv.end(), tail.begin(), tail.end());
    const ToolRun run = run_tool(argv);
    json answer = nullptr;
    std::size_t start = 0;
    for (std::size_t end = 0; start < run.output.size(); start = end + 1) {
        end = run.output.find('\n', start);
        if (end == std::string::npos) end = run.output.size();
        const std::string line = run.output.substr(start, end - start);
        if (line.starts_with("{")) {
            if (auto parsed = json::parse(line, nullptr, false); !parsed.is_discarded()) answer = std::move(parsed);
        }
    }
    if (run.exit_code != 0 || answer.is_null() || answer.contains("error"))
        fail(counter_exit::terminal_step, fmt::format("{}: coconut-terminal exited {}: {}", what, run.exit_code, run.output));
    return answer;
}

// The serial of the whole-balance purchase the return-card step took (or resolved from an earlier run);
// none when the card was empty (balance 0: nothing to take, the card blocked all the same).
std::optional<std::uint32_t> take_whole_balance(const ReturnArgs& args) {
    const json balance = terminal_step(terminal_argv(args), {"balance"}, "reading the card");  // {"balance_fen", "asn"}
    const std::string asn = balance.value("asn", "");
    if (asn.size() < 16 || asn.substr(asn.size() - 16) != args.card_number)
        fail(exit_codes::bad_input, fmt::format("the card in the reader is {}, not {}: nothing was taken", asn, args.card_number));
    std::vector<std::string> tail{"return-card", "--hsm", args.hsm, "--hsm-key", args.hsm_key};
    if (!args.maintenance_key.empty()) tail.insert(tail.end(), {"--maintenance-key", args.maintenance_key});
    const json taken = terminal_step(terminal_argv(args), tail, "taking the balance and blocking the card");
    std::optional<std::uint32_t> serial;
    if (taken.contains("debit") && taken["debit"].is_object()) serial = taken["debit"].value("terminal_serial", std::uint32_t{0});
    for (const auto& r : taken.value("recovered", json::array())) {
        if (!serial && r.value("link", "") == "offline_purchase") serial = r.value("terminal_serial", std::uint32_t{0});
    }
    if (!serial && !taken.value("was_blocked", false) && taken.value("balance_fen", std::int64_t{-1}) == 0) return std::nullopt;
    if (!serial)
        fail(counter_exit::terminal_step,
             fmt::format("card {}: no purchase was taken (balance {} fen{}); if an earlier run took it, give --terminal-serial",
                         args.card_number, field(taken, "balance_fen"),
                         taken.value("was_blocked", false) ? ", the card was already blocked" : ""));
    return *serial;
}

void upload_queue(const ReturnArgs& args) {
    std::vector<std::string> tail{"upload", "--clearing", args.clearing, "--terminal-id", args.terminal_id};
    if (args.insecure) tail.emplace_back("--insecure");
    if (!args.ca.empty()) tail.insert(tail.end(), {"--ca", args.ca, "--cert", args.cert, "--key", args.key});
    const json uploaded = terminal_step(terminal_argv(args), tail, "uploading the purchase");
    if (uploaded.value("remaining", 1) != 0)
        fail(counter_exit::terminal_step, fmt::format("uploading the purchase: records stay queued: {}", uploaded.dump()));
}

void check_return_args(const ReturnArgs& args) {
    require_card_number(args.card_number);
    const bool bank = args.payout == "bank";
    if (bank && (args.bank_account.empty() || args.account_holder.empty()))
        fail(exit_codes::usage, "--payout bank needs --bank-account and --account-holder");
    if (!bank && (!args.bank_account.empty() || !args.account_holder.empty()))
        fail(exit_codes::usage, "--bank-account / --account-holder go with --payout bank only");
    if (!args.terminal_serial) {
        if (args.clearing.empty() || args.hsm.empty() || args.hsm_key.empty())
            fail(exit_codes::usage, "return needs --clearing, --hsm and --hsm-key to take the balance (or --terminal-serial)");
        if (args.reader.empty() == args.card_image.empty() || args.psam_reader.empty() == args.psam_image.empty())
            fail(exit_codes::usage, "return needs the counter's card reader and PSAM: --reader/--psam-reader or --card/--psam");
    }
}

int return_command(const CounterOptions& options, const ReturnArgs& args) {
    check_return_args(args);
    (void)read_clerk_token(options.token_file);  // a token problem is found before the card is touched
    std::optional<std::uint32_t> serial = args.terminal_serial;
    if (!serial) {
        serial = take_whole_balance(args);
        upload_queue(args);
    }
    // No serial: the card was empty, and the clearing checks that its cleared balance is 0 as well.
    json body{{"terminal_id", args.terminal_id}, {"payout", args.payout}};
    if (serial) body["terminal_serial"] = *serial;
    if (args.payout == "bank") {
        body["bank_account"] = args.bank_account;
        body["account_holder"] = args.account_holder;
    }
    const Answer answer = clerk_call(options, "POST", card_target(args.card_number, "/return"), body);
    const json& b = answer.body;
    const std::string payout = b.contains("refund_by_bank_fen")
                                   ? fmt::format("{} fen by bank to {}", field(b, "refund_by_bank_fen"), args.bank_account)
                                   : fmt::format("{} fen in cash", field(b, "paid_cash_fen"));
    print(options, b,
          fmt::format("card {} returned ({} of {}): balance {} fen, deposit {} fen, fee {} fen; pay out {}", args.card_number,
                      serial ? fmt::format("purchase serial {}", *serial) : std::string("empty card, no purchase"), args.terminal_id,
                      field(b, "balance_fen"), field(b, "deposit_fen"), field(b, "fee_fen"), payout));
    return exit_codes::ok;
}

int refund_broken_command(const CounterOptions& options, const std::string& number, const std::string& account, const std::string& holder) {
    const Answer answer =
        clerk_call(options, "POST", card_target(number, "/refund-broken"), json{{"bank_account", account}, {"account_holder", holder}});
    if (answer.status == 202) {
        print(options, answer.body,
              fmt::format("card {} registered as broken (hotlisted); refund after {}: run refund-broken again then", number,
                          field(answer.body, "refund_after")));
        return counter_exit::accepted;
    }
    print(options, answer.body,
          fmt::format("card {} refunded: {} fen by bank to {}", number, field(answer.body, "refund_by_bank_fen"), account));
    return exit_codes::ok;
}

int sell_tourist_command(const CounterOptions& options, const std::string& number, std::uint64_t seller, std::uint32_t deposit_fen) {
    require_card_number(number);
    const Answer answer = clerk_call(options, "POST", "/v1/clerk/tourist-cards",
                                     json{{"card_number", number}, {"seller_id", seller}, {"deposit_fen", deposit_fen}});
    print(options, answer.body, fmt::format("tourist card {} sold by participant {}: deposit {} fen", number, seller, deposit_fen));
    return exit_codes::ok;
}

// ---- reports -------------------------------------------------------------------------------------

int dormant_command(const CounterOptions& options, std::optional<std::uint32_t> min_days) {
    const std::string target = "/v1/clerk/reports/dormant" + (min_days ? fmt::format("?min_days={}", *min_days) : std::string{});
    const Answer answer = clerk_call(options, "GET", target);
    if (options.json) {
        print(options, answer.body, "");
        return exit_codes::ok;
    }
    std::cout << fmt::format("{:<16}  {:<14}  {:<9}  {:>11}  {:>11}  {:>10}  {:<20}  {:>4}\n", "card", "what", "status", "balance_fen",
                             "deposit_fen", "refund_fen", "last_activity", "days");
    const json cards = answer.body.value("cards", json::array());
    for (const auto& c : cards) {
        std::cout << fmt::format("{:<16}  {:<14}  {:<9}  {:>11}  {:>11}  {:>10}  {:<20}  {:>4}\n", field(c, "card_number"),
                                 field(c, "what"), field(c, "status"), field(c, "balance_fen"), field(c, "deposit_fen"),
                                 field(c, "refund_fen"), field(c, "last_activity"), field(c, "days_dormant"));
    }
    std::cout << fmt::format("{} card(s)\n", cards.size());
    return exit_codes::ok;
}

int late_spending_command(const CounterOptions& options) {
    const Answer answer = clerk_call(options, "GET", "/v1/clerk/reports/lost-late-spending");
    if (options.json) {
        print(options, answer.body, "");
        return exit_codes::ok;
    }
    std::cout << fmt::format("account {}: {} fen paid to merchants after the carry (the issuer's claim on the cardholders)\n",
                             field(answer.body, "account"), field(answer.body, "debits_posted_fen"));
    std::cout << fmt::format("{:<16}  {:<16}  {:<20}  {:>5}  {:>9}\n", "card", "replaced_by", "carried_at", "count", "fen");
    for (const auto& c : answer.body.value("cards", json::array())) {
        std::cout << fmt::format("{:<16}  {:<16}  {:<20}  {:>5}  {:>9}\n", field(c, "card_number"), field(c, "replaced_by"),
                                 field(c, "carried_at"), field(c, "late_count"), field(c, "late_fen"));
    }
    return exit_codes::ok;
}

// ---- the command line ----------------------------------------------------------------------------

struct CounterCommandLine {
    CounterOptions options;
    std::string card, ssn, new_card, bank_account, account_holder;
    PersonArgs person;
    ReturnArgs ret;
    std::uint64_t seller = 0;
    std::uint32_t deposit_fen = 0;
    std::optional<std::uint32_t> min_days;
};

CLI::App* with_common(CLI::App* command, CounterOptions& options) {
    command->add_option("--clearing-http", options.clearing_http, "the clearing's HTTP API, HOST:PORT (coconut-clearingd --http-listen)")
        ->required();
    command->add_option("--token-file", options.token_file, "file holding the clerk token (role counter), mode 0600")->required();
    command->add_flag("--json", options.json, "print the clearing's answer as JSON");
    command->footer(counter_footer);
    return command;
}

void add_return_options(CLI::App* ret, ReturnArgs& a) {
    ret->add_option("CARD", a.card_number, "card number (16 digits)")->required();
    ret->add_option("--terminal-id", a.terminal_id, "the counter terminal's id (field 41, registered to a participant of kind counter)")
        ->required();
    ret->add_option("--payout", a.payout, "cash (paid over the desk) or bank (in the next settlement file)")
        ->check(CLI::IsMember({"cash", "bank"}))
        ->capture_default_str();
    ret->add_option("--bank-account", a.bank_account, "with --payout bank: the cardholder's account");
    ret->add_option("--account-holder", a.account_holder, "with --payout bank: the account holder's name");
    ret->add_option("--reader", a.reader, "PC/SC reader holding the card");
    ret->add_option("--psam-reader", a.psam_reader, "PC/SC reader holding the counter's PSAM");
    ret->add_option("--card", a.card_image, "card image run in process (instead of --reader)");
    ret->add_option("--psam", a.psam_image, "PSAM image run in process (instead of --psam-reader)");
    ret->add_option("--queue", a.queue, "the counter terminal's queue file")->capture_default_str();
    ret->add_option("--hotlist", a.hotlist, "the counter terminal's hotlist file");
    ret->add_option("--clearing", a.clearing, "coconut-clearingd ISO 8583 HOST:PORT for the upload");
    ret->add_option("--ca", a.ca, "TLS: island CA certificate");
    ret->add_option("--cert", a.cert, "TLS: the counter terminal's certificate");
    ret->add_option("--key", a.key, "TLS: the counter terminal's private key (0600)");
    ret->add_flag("--insecure", a.insecure, "plain TCP to a clearing serving --insecure-terminals");
    ret->add_option("--hsm", a.hsm, "coconut-hsmd HOST:PORT for the maintenance MAC (APPLICATION BLOCK)");
    ret->add_option("--hsm-key", a.hsm_key, "HSM client key file with the permission maintenance");
    ret->add_option("--maintenance-key", a.maintenance_key, "the HSM's maintenance master, LABEL or LABEL:VERSION");
    ret->add_option("--terminal-serial", a.terminal_serial,
                    "the whole-balance purchase was taken and uploaded already: only book the return naming it");
}

void add_desk_commands(CLI::App* counter, CounterCommandLine& c, std::function<int()>& command) {
    auto* person = with_common(counter->add_subcommand("person", "look a person up by SSN, or register one (--name, --birth-date, --card)"),
                               c.options);
    person->add_option("--ssn", c.person.ssn, "social-security number from the ID document")->required();
    person->add_option("--name", c.person.name, "register: the person's name");
    person->add_option("--birth-date", c.person.birth_date, "register: YYYY-MM-DD");
    person->add_option("--card", c.person.cards, "register: a card of the person (repeatable)");
    person->callback([&] { command = [&] { return person_command(c.options, c.person); }; });
    for (const bool found : {false, true}) {
        auto* lost =
            with_common(counter->add_subcommand(found ? "found" : "report-lost", found ? "undo a lost report within the waiting period"
                                                                                       : "report a card lost (hotlisted at once)"),
                        c.options);
        lost->add_option("CARD", c.card, "card number (16 digits)")->required();
        lost->add_option("--ssn", c.ssn, "the holder's SSN from the ID document")->required();
        lost->callback([&, found] { command = [&, found] { return lost_command(c.options, c.card, c.ssn, found); }; });
    }
    auto* replace =
        with_common(counter->add_subcommand("replace", "a new card replaces a lost one (balance carried after the wait)"), c.options);
    replace->add_option("CARD", c.card, "the lost card's number")->required();
    replace->add_option("--new-card", c.new_card, "the new card's number (registered, active)")->required();
    replace->add_option("--ssn", c.ssn, "the holder's SSN from the ID document")->required();
    replace->callback([&] { command = [&] { return replace_command(c.options, c.card, c.new_card, c.ssn); }; });
    auto* lifecycle = with_common(counter->add_subcommand("lifecycle", "a card's lifecycle: lost, carried, late spending"), c.options);
    lifecycle->add_option("CARD", c.card, "card number")->required();
    lifecycle->callback([&] { command = [&] { return lifecycle_command(c.options, c.card); }; });
}

void add_money_commands(CLI::App* counter, CounterCommandLine& c, std::function<int()>& command) {
    auto* ret = with_common(counter->add_subcommand("return", "a card handed back: whole balance taken and uploaded, card blocked, refund"),
                            c.options);
    add_return_options(ret, c.ret);
    ret->callback([&] { command = [&] { return return_command(c.options, c.ret); }; });
    auto* broken =
        with_common(counter->add_subcommand("refund-broken", "an unreadable card: hotlisted now, refunded by bank after the wait"),
                    c.options);
    broken->add_option("CARD", c.card, "card number")->required();
    broken->add_option("--bank-account", c.bank_account, "the cardholder's account")->required();
    broken->add_option("--account-holder", c.account_holder, "the account holder's name")->required();
    broken->callback([&] { command = [&] { return refund_broken_command(c.options, c.card, c.bank_account, c.account_holder); }; });
    auto* tourist = with_common(counter->add_subcommand("sell-tourist", "a tourist card sold with its deposit"), c.options);
    tourist->add_option("CARD", c.card, "card number")->required();
    tourist->add_option("--seller-id", c.seller, "the selling participant (kind counter)")->required();
    tourist->add_option("--deposit-fen", c.deposit_fen, "deposit collected in cash, fen")->required()->check(CLI::Range(1, 100000));
    tourist->callback([&] { command = [&] { return sell_tourist_command(c.options, c.card, c.seller, c.deposit_fen); }; });
    auto* dormant =
        with_common(counter->add_subcommand("dormant", "tourist cards still out, refunds owed, broken cards waiting"), c.options);
    dormant->add_option("--min-days", c.min_days, "only cards dormant this many whole days");
    dormant->callback([&] { command = [&] { return dormant_command(c.options, c.min_days); }; });
    auto* late = with_common(counter->add_subcommand("late-spending", "what lost cards paid after their balance was carried"), c.options);
    late->callback([&] { command = [&] { return late_spending_command(c.options); }; });
}

}  // namespace

void add_counter_commands(CLI::App& app, std::function<int()>& command) {
    static CounterCommandLine c;  // the command line's targets live as long as the parse and the command
    auto* counter = app.add_subcommand("counter", "service desk: persons, lost cards, replacement, return, tourist cards, reports")
                        ->require_subcommand(1);
    counter->footer(counter_footer);
    add_desk_commands(counter, c, command);
    add_money_commands(counter, c, command);
}

nlohmann::json clerk_request(const std::string& clearing_http, const std::filesystem::path& token_file, const std::string& method,
                             const std::string& target, const nlohmann::json& body) {
    return clerk_call(CounterOptions{clearing_http, token_file, false}, method, target, body).body;
}

}  // namespace coconut::cli
