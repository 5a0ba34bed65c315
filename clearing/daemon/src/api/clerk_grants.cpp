// Roles that move money, granted by two clerks (clearing/README.md "Clerks while serving"): POST
// /v1/clerk/clerks naming such a role records a grant and answers its token once (202); the token is
// answered 401 until a second clerk with the role clerks approves (POST /v1/clerk/clerks/grants/{n}/approve)
// before the grant expires. The requester cannot approve, nor can the clerk the grant is for. Every step
// and every refusal is journaled with the clerk's name in the commit of its effect; the decision itself
// (still pending, not expired) is checked inside that commit, so two approvals at once approve once.
#include "api_internal.hpp"

#include <fmt/format.h>

namespace coconut::clearing::http::api {

namespace {

json grant_json(const ClerkGrant& g, std::uint64_t now) {
    json out{{"grant", g.number},
             {"name", g.name},
             {"roles", role_names(g.roles)},
             {"requested_by", g.requested_by},
             {"requested_at", iso_time(g.requested_ns)},
             {"expires_at", iso_time(g.expires_ns)},
             {"status", g.expired(now) ? std::string("expired") : std::string(to_string(g.status))}};
    if (g.status != GrantStatus::pending) {
        out["decided_by"] = g.decided_by;
        out["decided_at"] = iso_time(g.decided_ns);
        out["note"] = g.note;
    }
    return out;
}

std::string grant_target(std::uint64_t number) { return fmt::format("grant {}", number); }

// A refusal answered with `status` and `code` once it is journaled (outcome "refused: <code>").
void refuse_grant(Call& call, std::string action, std::uint64_t number, unsigned status, std::string code, std::string message) {
    ApiResponse refusal = error_response(status, code, message);
    call.api.commit(Change{{},
                           {},
                           [refusal](const ClerkAction&) { return refusal; },
                           ClerkAction{0, 0, call.who().name, std::move(action), grant_target(number), "refused: " + code, message}},
                    std::move(call.respond));
}

// {"note": "…"} (optional, ≤ 500 bytes, no control characters): what is wrong, or nullopt with `note` set.
std::optional<std::string> grant_note(const ApiRequest& request, std::string& note) {
    const json body = request.body.empty() ? json::object() : json::parse(request.body, nullptr, false);
    if (body.is_discarded() || !body.is_object()) return "body must be a JSON object";
    if (auto unknown = only_keys(body, {"note"})) return unknown;
    if (!body.contains("note")) return std::nullopt;
    if (!body["note"].is_string()) return "\"note\" must be a string";
    note = body["note"].get<std::string>();
    if (note.size() > adjustment_text_max) return fmt::format("\"note\" must be at most {} bytes", adjustment_text_max);
    for (char c : note) {
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7F) return "\"note\" must not contain control characters";
    }
    return std::nullopt;
}

// The grant of the path's {n}, read before the decision (its immutable fields: who asked, for whom);
// nullopt with the request answered (404, 503).
std::optional<ClerkGrant> grant_of_path(Call& call, const char* action) {
    const auto number = parse_u64(call.params[0]);
    auto found = number ? call.s().tokens.grant(*number) : Result<std::optional<ClerkGrant>>(std::optional<ClerkGrant>());
    if (!found) {
        call.answer(storage_failure(found.error().message));
        return std::nullopt;
    }
    if (!*found) {
        refuse_grant(call, action, number.value_or(0), 404, "not_found", "no such clerk grant");
        return std::nullopt;
    }
    return **found;
}

// The decision's commit: inside it the grant must still be pending (and, to approve, not expired);
// approving writes the clerk record under the token's hash in the same commit.
void commit_grant_decision(Call& call, const ClerkGrant& read, bool approve, std::string note) {
    const Tokens& tokens = call.s().tokens;
    const std::string action = approve ? "clerk_grant_approve" : "clerk_grant_reject";
    auto decided = std::make_shared<ClerkGrant>(read);
    auto write = [&tokens, decided, approve, who = call.who().name, note](lmdb::Txn& txn, auto, ClerkAction& journaled) -> lmdb::Status {
        auto current = tokens.grant_in(txn, decided->number);
        if (!current) return Unexpected{current.error()};
        const std::uint64_t now = now_ns();
        if (!*current || (*current)->status != GrantStatus::pending) {
            journaled.outcome = "refused: not_pending";
            if (*current) *decided = **current;
            return Ok{};
        }
        if (approve && (*current)->expired(now)) {
            journaled.outcome = "refused: expired";
            return Ok{};
        }
        *decided = **current;
        decided->status = approve ? GrantStatus::approved : GrantStatus::rejected;
        decided->decided_by = who;
        decided->decided_ns = now;
        decided->note = note;
        if (approve) {
            if (auto put = tokens.put_clerk(txn, decided->hash, Clerk{decided->name, decided->roles, now}); !put) return put;
        }
        return tokens.put_grant(txn, *decided);
    };
    auto answer = [decided](const ClerkAction& journaled) {
        if (journaled.outcome == "refused: not_pending") {
            return error_response(409, "not_pending",
                                  fmt::format("grant {} was {} by {} already", decided->number, to_string(decided->status),
                                              decided->decided_by));
        }
        if (journaled.outcome == "refused: expired") {
            return error_response(409, "expired",
                                  fmt::format("grant {} expired at {} without an approval: request it again", decided->number,
                                              iso_time(decided->expires_ns)));
        }
        return json_response(200, grant_json(*decided, now_ns()));
    };
    const std::string detail = fmt::format("{} roles {} requested by {}{}", read.name, fmt::join(role_names(read.roles), ","),
                                           read.requested_by, note.empty() ? "" : "; note: " + note);
    call.api.commit(Change{{}, write, answer, action_of(call.who(), action, grant_target(read.number), detail)}, std::move(call.respond));
}

void decide_grant(Call& call, bool approve) {
    const char* action = approve ? "clerk_grant_approve" : "clerk_grant_reject";
    std::string note;
    if (auto problem = grant_note(call.request, note)) return call.answer(bad_request(*problem));
    auto grant = grant_of_path(call, action);
    if (!grant) return;
    const std::string& who = call.who().name;
    if (approve && who == grant->requested_by) {
        return refuse_grant(
            call, action, grant->number, 403, "maker_checker",
            "maker-checker rule: the clerk who requested a grant cannot approve it; another clerk with the role clerks must");
    }
    if (approve && who == grant->name) {
        return refuse_grant(call, action, grant->number, 403, "maker_checker",
                            "maker-checker rule: a clerk cannot approve a grant of roles to itself");
    }
    commit_grant_decision(call, *grant, approve, std::move(note));
}

}  // namespace

void request_grant(Call& call, std::string name, std::uint8_t roles) {
    const Tokens& tokens = call.s().tokens;
    auto token = std::make_shared<std::string>(Tokens::new_token(clerk_token_prefix));
    auto grant = std::make_shared<ClerkGrant>();
    grant->name = std::move(name);
    grant->roles = roles;
    grant->hash = tokens.hash(*token);
    grant->requested_by = call.who().name;
    const auto ttl_ns = static_cast<std::uint64_t>(std::chrono::nanoseconds(call.api.options.clerk_grant_ttl).count());
    auto write = [&tokens, grant, ttl_ns](lmdb::Txn& txn, auto, ClerkAction& journaled) -> lmdb::Status {
        auto number = tokens.next_grant_number(txn);
        if (!number) return Unexpected{number.error()};
        grant->number = *number;
        grant->requested_ns = now_ns();
        grant->expires_ns = grant->requested_ns + ttl_ns;
        journaled.target = grant_target(*number);
        return tokens.put_grant(txn, *grant);
    };
    auto answer = [grant, token](const ClerkAction&) {
        json body = grant_json(*grant, grant->requested_ns);
        body["token"] = *token;
        body["message"] = "the token works once another clerk with the role clerks approves the grant";
        return json_response(202, body);
    };
    const std::string detail = fmt::format("{} roles {}", grant->name, fmt::join(role_names(roles), ","));
    call.api.commit(Change{{}, write, answer, action_of(call.who(), "clerk_grant_request", "", detail)}, std::move(call.respond));
}

// GET /v1/clerk/clerks/grants[?after=N&limit=M] → {"grants": [...]}, oldest first (no token, no hash).
void list_grants(Call& call) {
    std::uint64_t after = 0;
    std::size_t limit = 100;
    if (auto bad = page_params(call.target, "a grant number", after, limit)) return call.answer(bad_request(*bad));
    auto page = call.s().tokens.grants(after, limit);
    if (!page) return call.answer(storage_failure(page.error().message));
    const std::uint64_t now = now_ns();
    json items = json::array();
    for (const ClerkGrant& g : *page) items.push_back(grant_json(g, now));
    call.answer(json_response(200, json{{"grants", std::move(items)}}));
}

void approve_grant(Call& call) { decide_grant(call, true); }

void reject_grant(Call& call) { decide_grant(call, false); }

}  // namespace coconut::clearing::http::api
