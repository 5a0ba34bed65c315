// /v1/clerk/clerks: clerk administration while the daemon serves (role clerks) — add a clerk (its token
// answered once), revoke every token of a clerk, list the clerks. Journaled and committed through the
// writer like every clerk change, so in a cluster they reach every node through the journal stream.
#include "api_internal.hpp"

#include <fmt/format.h>

namespace coconut::clearing::http::api {

namespace {

json clerk_json(const Clerk& clerk) {
    return json{{"name", clerk.name}, {"roles", role_names(clerk.roles)}, {"revoked", clerk.revoked()}, {"created_ns", clerk.created_ns}};
}

}  // namespace

// POST /v1/clerk/clerks {"name": "...", "roles": "read,hotlist"} → 201 {"name", "roles", "token"}.
void add_clerk_route(Call& call) {
    const auto body = object_body(call.request.body);
    if (!body) return call.answer(bad_request("body must be a JSON object"));
    const auto name = body->find("name");
    const auto roles_text = body->find("roles");
    if (name == body->end() || !name->is_string() || roles_text == body->end() || !roles_text->is_string())
        return call.answer(bad_request(R"(body must be {"name": "...", "roles": "role,role"})"));
    if (auto problem = clerk_name_problem(name->get<std::string>())) return call.answer(bad_request(*problem));
    const auto roles = parse_roles(roles_text->get<std::string>());
    if (!roles)
        return call.answer(
            bad_request("roles: a comma-separated list of hotlist, registry, settlement, read, adjust, clerks, cluster, counter"));
    const Tokens& tokens = call.s().tokens;
    auto token = std::make_shared<std::string>(Tokens::new_token(clerk_token_prefix));
    const Clerk clerk{name->get<std::string>(), *roles, now_ns()};
    auto write = [&tokens, clerk, hash = tokens.hash(*token)](lmdb::Txn& txn, auto, ClerkAction&) {
        return tokens.put_clerk(txn, hash, clerk);
    };
    auto answer = [token, clerk](const ClerkAction&) {
        return json_response(201, json{{"name", clerk.name}, {"roles", role_names(clerk.roles)}, {"token", *token}});
    };
    call.api.commit(
        Change{{}, write, answer, action_of(call.who(), "clerk_add", clerk.name, fmt::format("roles {}", roles_text->get<std::string>()))},
        std::move(call.respond));
}

// DELETE /v1/clerk/clerks/{name}: revokes every token of the clerk in force → 200 {"name", "revoked": n};
// 409 when the clerk has none in force. A clerk may not revoke itself (the last clerks-role clerk would lock
// the cluster out of its own administration).
void revoke_clerk_route(Call& call) {
    const std::string name(call.params[0]);
    if (auto problem = clerk_name_problem(name)) return call.answer(bad_request(*problem));
    if (name == call.who().name) return call.answer(error_response(409, "conflict", "a clerk cannot revoke its own tokens"));
    const Tokens& tokens = call.s().tokens;
    auto revoked = std::make_shared<std::size_t>(0);
    auto write = [&tokens, name, revoked](lmdb::Txn& txn, auto, ClerkAction& action) -> lmdb::Status {
        auto count = tokens.revoke_clerk_in(txn, name);
        if (!count) return Unexpected{count.error()};
        *revoked = *count;
        if (*revoked == 0) action.outcome = "no token of this clerk in force";
        else action.detail = fmt::format("{} token(s)", *revoked);
        return Ok{};
    };
    auto answer = [name, revoked](const ClerkAction& action) {
        return refused_or(action, 200, json{{"name", name}, {"revoked", *revoked}});
    };
    call.api.commit(Change{{}, write, answer, action_of(call.who(), "clerk_revoke", name)}, std::move(call.respond));
}

// GET /v1/clerk/clerks → {"clerks": [...]}, oldest first, revoked ones included (no token or hash).
void list_clerks(Call& call) {
    auto clerks = call.s().tokens.clerks();
    if (!clerks) return call.answer(storage_failure(clerks.error().message));
    json list = json::array();
    for (const Clerk& clerk : *clerks) list.push_back(clerk_json(clerk));
    call.answer(json_response(200, json{{"clerks", std::move(list)}}));
}

// GET /v1/clerk/me → 200 {"name", "roles", "revoked": false, "created_ns"}: what the presented token may
// do, for a program that must know before it acts (coconut-settle checks its token before writing files).
void who_am_i(Call& call) { call.answer(json_response(200, clerk_json(call.who()))); }

}  // namespace coconut::clearing::http::api
