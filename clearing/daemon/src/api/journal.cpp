// What the handlers share: the rate limiters' answers, and the one path of every clerk change (and of
// the clerk reads that are journaled) to the ledger writer: the change, its clerk journal entry in the
// same commit, the answer once the commit is durable.
#include "api_internal.hpp"

#include <coconut/core/assert.hpp>
#include <coconut/core/log.hpp>

#include <fmt/format.h>

namespace coconut::clearing::http {

Api::State::State(Services services, const HttpOptions& http_options, HttpStats& http_stats)
    : s(services), options(http_options), stats(http_stats), limiter(http_options.token_requests_per_s, http_options.token_burst),
      address_limiter(http_options.address_failures_per_s, http_options.address_failure_burst) {}

ApiResponse Api::State::unauthenticated(const ApiRequest& request, ApiResponse failure) {
    TokenHash key{};
    std::copy(request.peer.begin(), request.peer.end(), key.begin());
    double retry_after_s = 0;
    if (address_limiter.admit(key, retry_after_s)) return failure;
    stats.rate_limited.fetch_add(1, std::memory_order_relaxed);
    ApiResponse r = error_response(429, "rate_limited", "too many requests without a valid token from this address; slow down");
    r.headers.emplace_back("Retry-After", std::to_string(static_cast<unsigned>(retry_after_s) + 1));
    return r;
}

std::optional<ApiResponse> Api::State::rate_limit(const TokenHash& key) {
    double retry_after_s = 0;
    if (limiter.admit(key, retry_after_s)) return std::nullopt;
    stats.rate_limited.fetch_add(1, std::memory_order_relaxed);
    ApiResponse r = error_response(429, "rate_limited", "too many requests for this token; slow down");
    r.headers.emplace_back("Retry-After", std::to_string(static_cast<unsigned>(retry_after_s) + 1));
    return r;
}

void Api::State::commit(api::Change change, Respond respond) {
    COCONUT_ASSERT(change.answer && respond, "a change answers its request");
    COCONUT_ASSERT(!change.action.clerk.empty() && !change.action.action.empty(), "every change is journaled with its clerk");
    auto shared = std::make_shared<api::Change>(std::move(change));
    const Tokens& tokens = s.tokens;
    ledger::BatchHook hook = [shared, &tokens](lmdb::Txn& txn, std::span<const ledger::EventResult> results) -> lmdb::Status {
        if (shared->write) {
            if (auto written = shared->write(txn, results, shared->action); !written) return written;
        }
        auto logged = tokens.append_journal(txn, shared->action);
        if (!logged) return Unexpected{logged.error()};
        return Ok{};
    };
    auto on_commit = [shared, respond](ledger::Reply reply) {
        if (!reply) return respond(api::storage_failure(reply.error().message));
        const ClerkAction& a = shared->action;
        log::info("api", fmt::format("clerk {}: {} {}: {}", a.clerk, a.action, a.target, a.outcome));
        respond(shared->answer(shared->action));
    };
    auto events = shared->events;
    if (!s.writer->try_submit(std::move(events), std::move(on_commit), std::move(hook))) respond(api::writer_queue_full());
}

void Api::State::journaled_read(ApiResponse response, ClerkAction action, Respond respond) {
    // The answer is made once, and moved out rather than copied: a copy would keep what the response owns
    // (a snapshot's open file, whose release lets the next snapshot go) alive in the writer's finished
    // request until that is destroyed, after the client already has the answer.
    auto shared = std::make_shared<ApiResponse>(std::move(response));
    commit(api::Change{{}, {}, [shared](const ClerkAction&) { return std::move(*shared); }, std::move(action)}, std::move(respond));
}

void Api::State::refuse_by_rule(const Clerk& clerk, std::string action, std::string target, std::string rule, Respond respond) {
    ApiResponse refusal = error_response(403, "forbidden", rule);  // not const: the callback returns copies of it
    commit(api::Change{{},
                       {},
                       [refusal](const ClerkAction&) { return refusal; },
                       ClerkAction{0, 0, clerk.name, std::move(action), std::move(target), "refused", rule}},
           std::move(respond));
}

Result<std::optional<Asn>> Api::State::find_card(const CardNumber& number) const {
    auto token = s.tokens.card_token(number);
    if (!token) return Unexpected<Error>{token.error()};
    if (*token) return std::optional<Asn>((*token)->asn);
    auto cards = s.registry.cards();
    if (!cards) return Unexpected<Error>{cards.error()};
    for (const auto& c : *cards) {
        if (card_number_of(c.asn) == number) return std::optional<Asn>(c.asn);
    }
    return std::optional<Asn>();
}

}  // namespace coconut::clearing::http

namespace coconut::clearing::http::api {

ApiResponse refused_or(const ClerkAction& action, unsigned status, const json& body) {
    if (action.outcome != "ok") return error_response(409, "conflict", action.outcome);
    return json_response(status, body);
}

ClerkAction action_of(const Clerk& clerk, std::string what, std::string target, std::string detail) {
    return ClerkAction{0, 0, clerk.name, std::move(what), std::move(target), "ok", std::move(detail)};
}

const Clerk& Call::who() const {
    COCONUT_ASSERT(clerk.has_value(), "a clerk route's handler runs after the clerk's token was checked");
    return *clerk;
}

}  // namespace coconut::clearing::http::api
