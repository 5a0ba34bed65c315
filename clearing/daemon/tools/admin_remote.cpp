#include "admin_remote.hpp"

#include <coconut/clearing/clerk_client.hpp>
#include <coconut/clearing/http.hpp>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

namespace coconut::clearing::admin {

namespace {

using nlohmann::json;

constexpr int remote_ok = 0;
constexpr int remote_usage = 2;
constexpr int remote_refused = 5;

int refused(const std::string& message) {
    std::cerr << "coconut-clearingd: " << message << "\n";
    return remote_refused;
}

// One request; the answer when its status is one of `expected`, else nullopt with the refusal printed.
std::optional<ClerkAnswer> call(const ClerkEndpoint& e, std::string_view method, const std::string& target, const std::string& body,
                                std::initializer_list<unsigned> expected) {
    auto answer = clerk_request(e, method, target, body);
    if (!answer) {
        refused(answer.error().message);
        return std::nullopt;
    }
    for (unsigned status : expected)
        if (answer->status == status) return *answer;
    refused(fmt::format("{} {} answered {}: {}", method, target, answer->status, answer->error_message()));
    return std::nullopt;
}

// A token file (0600) written whole under a new temporary name, then renamed.
bool write_secret(const std::string& path, const std::string& line) {
    std::string temp = path + ".XXXXXX";
    const int fd = ::mkostemp(temp.data(), O_CLOEXEC);
    if (fd < 0) return false;
    const bool ok =
        ::fchmod(fd, 0600) == 0 && ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size()) && ::fsync(fd) == 0;
    ::close(fd);
    if (ok && std::rename(temp.c_str(), path.c_str()) == 0) return true;
    ::unlink(temp.c_str());
    return false;
}

int clerk_add(const ClerkEndpoint& e, const RemoteCommand& c) {
    auto answer = call(e, "POST", "/v1/clerk/clerks", json{{"name", c.clerk_name}, {"roles", c.clerk_roles}}.dump(), {201, 202});
    if (!answer) return remote_refused;
    const json body = json::parse(answer->body);
    std::cout << body.at("token").get<std::string>() << "\n";
    if (answer->status == 202) {
        std::cerr << fmt::format(
            "coconut-clearingd: grant {} is pending: the token works once another clerk with the role clerks approves it "
            "(admin clerk-approve --grant {}) before {}\n",
            body.at("grant").get<std::uint64_t>(), body.at("grant").get<std::uint64_t>(), body.at("expires_at").get<std::string>());
    }
    return remote_ok;
}

int clerk_list(const ClerkEndpoint& e) {
    auto answer = call(e, "GET", "/v1/clerk/clerks", {}, {200});
    if (!answer) return remote_refused;
    const json listed = json::parse(answer->body);  // named: a temporary in a range-for's init dies before the loop
    for (const json& clerk : listed.at("clerks")) {
        const auto roles = clerk.at("roles").get<std::vector<std::string>>();
        const auto created_s = static_cast<std::time_t>(clerk.at("created_ns").get<std::uint64_t>() / 1'000'000'000);
        std::tm utc{};
        gmtime_r(&created_s, &utc);
        std::cout << fmt::format("{}\t{}\t{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z\n", clerk.at("name").get<std::string>(),
                                 clerk.at("revoked").get<bool>() ? std::string("revoked") : fmt::format("{}", fmt::join(roles, ",")),
                                 utc.tm_year + 1900, utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec);
    }
    return remote_ok;
}

int clerk_revoke(const ClerkEndpoint& e, const RemoteCommand& c) {
    if (auto problem = http::clerk_name_problem(c.revoke_name)) return refused(*problem);
    auto answer = call(e, "DELETE", "/v1/clerk/clerks/" + c.revoke_name, {}, {200});
    if (!answer) return remote_refused;
    std::cout << fmt::format("revoked {} token(s) of clerk {}\n", json::parse(answer->body).at("revoked").get<std::size_t>(),
                             c.revoke_name);
    return remote_ok;
}

int issue_tokens(const ClerkEndpoint& e, const RemoteCommand& c) {
    if (c.token_cards.empty()) {
        std::cerr << "coconut-clearingd: issue-tokens through the clerk API names its cards (--card N, repeatable); every card "
                     "without a token at once: with the daemon stopped\n";
        return remote_usage;
    }
    for (const auto& card : c.token_cards)
        if (!http::parse_card_number(card))
            return std::cerr << "coconut-clearingd: --card " << card << ": must be 16 digits\n", remote_usage;
    std::error_code ec;
    std::filesystem::create_directories(c.tokens_out, ec);
    std::size_t written = 0;
    for (const auto& card : c.token_cards) {
        auto answer = call(e, "POST", "/v1/clerk/cards/" + card + "/token", {}, {201});
        if (!answer) return remote_refused;
        const std::string path = (std::filesystem::path(c.tokens_out) / (card + ".token")).string();
        if (!write_secret(path, json::parse(answer->body).at("token").get<std::string>() + "\n"))
            return refused(fmt::format("cannot write {} (the card's new token is in force: issue it again)", path));
        ++written;
    }
    std::cout << fmt::format("{} tokens written to {}\n", written, c.tokens_out);
    return remote_ok;
}

int set_status(const ClerkEndpoint& e, const RemoteCommand& c, bool card) {
    std::string target;
    if (card) {
        if (c.asn_text.size() != 20 || c.asn_text.find_first_not_of("0123456789") != std::string::npos) {
            std::cerr << "coconut-clearingd: ASN must be 20 digits\n";
            return remote_usage;
        }
        target = "/v1/clerk/cards/" + c.asn_text.substr(4) + "/status";
    } else {
        target = "/v1/clerk/terminals/" + c.terminal_text + "/status";
    }
    return call(e, "PUT", target, json{{"status", c.status_text}}.dump(), {200}) ? remote_ok : remote_refused;
}

// The registry file entry by entry: participants, terminals, cards (a card registered already is kept,
// as `admin load` keeps it). Persons are the counter's (POST /v1/clerk/persons): refused here.
int load(const ClerkEndpoint& e, const RemoteCommand& c) {
    std::ifstream in(c.registry_file, std::ios::binary);
    std::ostringstream text;
    text << in.rdbuf();
    const json file = json::parse(text.str(), nullptr, false);
    if (!in || file.is_discarded() || !file.is_object()) return refused(c.registry_file + ": not a registry JSON file");
    json counts{{"participants", 0}, {"terminals", 0}, {"cards", 0}, {"cards_already_registered", 0}};
    for (const auto& [kind, target] : {std::pair{"participants", "/v1/clerk/participants"}, std::pair{"terminals", "/v1/clerk/terminals"},
                                       std::pair{"cards", "/v1/clerk/cards"}}) {
        if (!file.contains(kind)) continue;
        for (const json& entry : file.at(kind)) {
            if (entry.is_object() && entry.contains("person"))
                return refused(
                    fmt::format("{}: a card's person is registered at the counter (POST /v1/clerk/persons) or by "
                                "`admin load` with the daemon stopped",
                                c.registry_file));
            auto answer = call(e, "POST", target, entry.dump(), {200, 201, 409});
            if (!answer) return remote_refused;
            if (answer->status == 409 && std::string_view(kind) != "cards")
                return refused(fmt::format("POST {} answered 409: {}", target, answer->error_message()));
            counts[answer->status == 409 ? "cards_already_registered" : kind] =
                counts[answer->status == 409 ? "cards_already_registered" : kind].get<int>() + 1;
        }
    }
    std::cout << counts.dump() << "\n";
    return remote_ok;
}

int grants(const ClerkEndpoint& e, const RemoteAdmin& r) {
    if (r.grants->parsed()) {
        auto answer = call(e, "GET", "/v1/clerk/clerks/grants", {}, {200});
        if (!answer) return remote_refused;
        const json listed = json::parse(answer->body);
        for (const json& g : listed.at("grants"))
            std::cout << fmt::format("{}\t{}\t{}\t{}\trequested by {}\texpires {}\n", g.at("grant").get<std::uint64_t>(),
                                     g.at("name").get<std::string>(), fmt::join(g.at("roles").get<std::vector<std::string>>(), ","),
                                     g.at("status").get<std::string>(), g.at("requested_by").get<std::string>(),
                                     g.at("expires_at").get<std::string>());
        return remote_ok;
    }
    const bool approve = r.approve->parsed();
    const std::string target = fmt::format("/v1/clerk/clerks/grants/{}/{}", r.grant, approve ? "approve" : "reject");
    auto answer = call(e, "POST", target, r.note.empty() ? json::object().dump() : json{{"note", r.note}}.dump(), {200});
    if (!answer) return remote_refused;
    const json g = json::parse(answer->body);
    std::cout << fmt::format("grant {} {}: {} roles {}\n", r.grant, g.at("status").get<std::string>(), g.at("name").get<std::string>(),
                             fmt::join(g.at("roles").get<std::vector<std::string>>(), ","));
    return remote_ok;
}

}  // namespace

void RemoteAdmin::add_to(CLI::App* admin) {
    admin->add_option("--token-file", token_file,
                      "a clerk token file: run the command through the clerk API of the daemon serving --data (no need to stop it)");
    admin->add_option("--url", url, "the daemon's HTTP API (default: the URL it wrote to DATA/http.url)");
    admin->add_option("--ca", ca_file, "https: the CA of the daemon's HTTP certificate");
    grants = admin->add_subcommand("clerk-grants", "list grants of roles waiting for or given a second clerk's approval (--token-file)");
    approve = admin->add_subcommand("clerk-approve", "approve another clerk's grant (role clerks; not your own, not to you; --token-file)");
    reject = admin->add_subcommand("clerk-reject", "reject or withdraw a grant (role clerks; --token-file)");
    for (CLI::App* decision : {approve, reject}) {
        decision->add_option("--grant", grant, "the grant's number (clerk-grants)")->required();
        decision->add_option("--note", note, "why (journaled)");
    }
}

int run_remote(const RemoteAdmin& remote, const std::string& data_dir, const RemoteCommand& command) {
    if (!remote.active()) {
        std::cerr << "coconut-clearingd: " << command.name << " works through a running daemon's clerk API: give --token-file\n";
        return remote_usage;
    }
    std::ifstream in(remote.token_file);
    std::string token;
    if (!std::getline(in, token) || token.empty()) return refused("cannot read a clerk token from " + remote.token_file);
    ClerkEndpoint endpoint{remote.url, token, remote.ca_file};
    if (endpoint.url.empty()) {
        auto served = served_url(data_dir);
        if (!served) return refused(fmt::format("no daemon has written its HTTP address to {}/{}: give --url", data_dir, served_url_file));
        endpoint.url = *served;
    }
    if (remote.grant_command()) return grants(endpoint, remote);
    if (command.name == "clerk-add") return clerk_add(endpoint, command);
    if (command.name == "clerk-list") return clerk_list(endpoint);
    if (command.name == "clerk-revoke") return clerk_revoke(endpoint, command);
    if (command.name == "issue-tokens") return issue_tokens(endpoint, command);
    if (command.name == "card-status") return set_status(endpoint, command, true);
    if (command.name == "terminal-status") return set_status(endpoint, command, false);
    if (command.name == "load") return load(endpoint, command);
    std::cerr << "coconut-clearingd: admin " << command.name << " reads the directory itself (no daemon needs to stop for it)\n";
    return remote_usage;
}

std::string served_hint(const std::string& data_dir) {
    auto served = served_url(data_dir);
    if (!served) return {};
    return fmt::format(
        "a daemon serves {} (its clerk API at {}): run the command through it with --token-file FILE (a clerk token "
        "with the command's role), no need to stop it",
        data_dir, *served);
}

}  // namespace coconut::clearing::admin
