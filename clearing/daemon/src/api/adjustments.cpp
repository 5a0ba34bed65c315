// Manual adjustments, maker-checker (clearing/README.md "Manual adjustments"): POST /v1/clerk/adjustments
// proposes one (role adjust), nothing moves until another clerk approves it with POST …/{n}/approve
// (or rejects it, …/{n}/reject); GET lists or shows them (role adjust or read). Decisions are committed
// one at a time (a second one meanwhile is answered 503).
#include "api_internal.hpp"

#include <coconut/core/assert.hpp>

#include <fmt/format.h>

#include <algorithm>

namespace coconut::clearing::http::api {

namespace {

json adjustment_json(const Adjustment& a) {
    json out{{"number", a.number},
             {"debit_account_id", id_hex(a.debit_account_id)},
             {"credit_account_id", id_hex(a.credit_account_id)},
             {"ledger", a.ledger},
             {"amount", a.amount},
             {"reason", a.reason},
             {"maker", a.maker},
             {"proposed_at", iso_time(a.proposed_ns)},
             {"status", std::string(to_string(a.status))},
             {"transfer_id", id_hex(adjustment_transfer(a.number))}};
    if (a.status != AdjustmentStatus::proposed) {
        out["checker"] = a.checker;
        out["decided_at"] = iso_time(a.decided_ns);
        out["note"] = a.note;
    }
    return out;
}

std::string adjustment_summary(const Adjustment& a) {
    return fmt::format("{} fen on ledger {}: {} → {}; reason: {}", a.amount, a.ledger, id_hex(a.debit_account_id),
                       id_hex(a.credit_account_id), a.reason);
}

// A note or reason: 1 (or 0 when optional) to 500 characters of printable text (UTF-8 allowed).
std::optional<std::string> free_text(const json& body, const char* key, bool required, std::string& out) {
    if (!body.contains(key)) return required ? std::optional<std::string>(fmt::format("\"{}\" is required", key)) : std::nullopt;
    if (!body[key].is_string()) return fmt::format("\"{}\" must be a string", key);
    out = body[key].get<std::string>();
    if ((required && out.empty()) || out.size() > adjustment_text_max)
        return fmt::format("\"{}\" must be 1 to {} bytes", key, adjustment_text_max);
    if (std::any_of(out.begin(), out.end(), [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7F; })) {
        return fmt::format("\"{}\" must not contain control characters", key);
    }
    return std::nullopt;
}

// A proposal's body {"debit_account_id","credit_account_id","ledger","amount","reason"}: what is wrong,
// or nullopt with `a` filled.
std::optional<std::string> read_proposal(const json& body, Adjustment& a) {
    std::optional<std::string> problem = only_keys(body, {"debit_account_id", "credit_account_id", "ledger", "amount", "reason"});
    for (const auto& [key, out] :
         {std::pair{"debit_account_id", &a.debit_account_id}, std::pair{"credit_account_id", &a.credit_account_id}}) {
        if (problem) break;
        auto id = body.contains(key) ? id_of_json(body[key]) : std::nullopt;
        if (!id) problem = fmt::format("\"{}\" must be 32 hex digits", key);
        else *out = *id;
    }
    if (!problem && (!body.contains("ledger") || !body["ledger"].is_number_unsigned() ||
                     (body["ledger"].get<std::uint64_t>() != ledgers::purse && body["ledger"].get<std::uint64_t>() != ledgers::medical))) {
        problem = "\"ledger\" must be 1 (purse) or 2 (medical)";
    }
    if (!problem && (!body.contains("amount") || !body["amount"].is_number_unsigned() || body["amount"].get<std::uint64_t>() == 0 ||
                     body["amount"].get<std::uint64_t>() > adjustment_fen_max)) {
        problem = fmt::format("\"amount\" must be 1 to {} fen", adjustment_fen_max);
    }
    if (!problem) problem = free_text(body, "reason", true, a.reason);
    if (problem) return problem;
    a.ledger = static_cast<std::uint32_t>(body["ledger"].get<std::uint64_t>());
    a.amount = body["amount"].get<std::uint64_t>();
    return std::nullopt;
}

// The decision's commit: on approval the adjustment's transfer and the proposal's new state together;
// a transfer the ledger refuses leaves the proposal open (409).
void commit_decision(Api::State& api, const Clerk& clerk, Adjustment a, bool approve, const std::string& target, Api::Respond release_and) {
    std::vector<ledger::Event> events;
    if (approve) events.emplace_back(adjustment_transfer_of(a));
    const std::string proposed_by = a.maker;
    a.status = approve ? AdjustmentStatus::approved : AdjustmentStatus::rejected;
    a.checker = clerk.name;
    a.decided_ns = now_ns();
    auto decided = std::make_shared<Adjustment>(a);
    auto ledger_result = std::make_shared<std::string>();
    const Tokens& tokens = api.s.tokens;
    auto write = [decided, ledger_result, &tokens](lmdb::Txn& txn, std::span<const ledger::EventResult> results,
                                                   ClerkAction& action) -> lmdb::Status {
        if (!results.empty() && !ledger::succeeded(results[0].code)) {  // the ledger refused: the proposal stays open
            *ledger_result = std::string(ledger::to_string(results[0].code));
            action.outcome = "refused by the ledger: " + *ledger_result;
            return Ok{};
        }
        return tokens.put_adjustment(txn, *decided);
    };
    auto answer = [decided, ledger_result](const ClerkAction&) {
        if (!ledger_result->empty()) {
            return error_response(409, "conflict",
                                  fmt::format("the ledger refused adjustment {}'s transfer: {}; it stays proposed", decided->number,
                                              *ledger_result));
        }
        return json_response(200, adjustment_json(*decided));
    };
    const std::string detail = adjustment_summary(a) + (a.note.empty() ? "" : "; note: " + a.note) + "; proposed by " + proposed_by;
    api.commit(Change{std::move(events), write, answer,
                      action_of(clerk, approve ? "adjustment_approve" : "adjustment_reject", target, detail)},
               std::move(release_and));
}

// With adjustment_busy held (released by `release_and`): the proposal, still open; the maker may not
// approve; an approval's accounts pass the adjustment rule again.
void decide(Api::State& api, const Clerk& clerk, std::uint64_t number, std::string note, bool approve, Api::Respond release_and) {
    const std::string target = fmt::format("adjustment {}", number);
    auto found = api.s.tokens.adjustment(number);
    if (!found) return release_and(storage_failure(found.error().message));
    if (!*found) return release_and(not_found("no such adjustment"));
    Adjustment a = **found;
    COCONUT_ASSERT(a.number == number, "a proposal is read back under its own number");
    if (a.status != AdjustmentStatus::proposed) {
        return release_and(
            error_response(409, "conflict", fmt::format("adjustment {} was {} by {} already", a.number, to_string(a.status), a.checker)));
    }
    const std::string action = approve ? "adjustment_approve" : "adjustment_reject";
    if (approve && a.maker == clerk.name) {
        return api.refuse_by_rule(clerk, action, target,
                                  "maker-checker rule: the clerk who proposed an adjustment cannot approve "
                                  "it; another clerk with the role "
                                  "adjust must",
                                  release_and);
    }
    if (approve) {
        auto refused = adjustment_refusal(api.s.ledger, a);
        if (!refused) return release_and(storage_failure(refused.error().message));
        if (*refused) return api.refuse_by_rule(clerk, action, target, "adjustment account rule: " + **refused, release_and);
    }
    a.note = std::move(note);
    commit_decision(api, clerk, std::move(a), approve, target, std::move(release_and));
}

// POST /v1/clerk/adjustments/{n}/approve|reject {"note":"…"}.
void decide_adjustment(Call& call, bool approve) {
    const auto number = parse_u64(call.params[0]);
    if (!number || *number == 0) return call.answer(not_found("no such adjustment"));
    const json body = call.request.body.empty() ? json::object() : json::parse(call.request.body, nullptr, false);
    if (body.is_discarded() || !body.is_object()) return call.answer(bad_request("body must be a JSON object"));
    std::string note;
    std::optional<std::string> problem = only_keys(body, {"note"});
    if (!problem) problem = free_text(body, "note", false, note);
    if (problem) return call.answer(bad_request(*problem));
    Api::State& api = call.api;
    if (api.adjustment_busy.exchange(true)) return call.answer(busy("another adjustment decision is being committed"));
    auto release_and = [&api, respond = std::move(call.respond)](ApiResponse r) {
        api.adjustment_busy.store(false);
        respond(std::move(r));
    };
    decide(api, call.who(), *number, std::move(note), approve, release_and);
}

}  // namespace

// GET /v1/clerk/adjustments[?status=proposed&after=N&limit=M]
void list_adjustments(Call& call) {
    std::optional<AdjustmentStatus> status;
    if (auto text = call.target.param("status")) {
        status = parse_adjustment_status(*text);
        if (!status) return call.answer(bad_request("status must be proposed, approved or rejected"));
    }
    std::uint64_t after = 0;
    std::size_t limit = 100;
    if (auto bad = page_params(call.target, "a proposal number", after, limit)) return call.answer(bad_request(*bad));
    auto page = call.s().tokens.adjustments(after, limit, status);
    if (!page) return call.answer(storage_failure(page.error().message));
    json items = json::array();
    for (const auto& a : *page) items.push_back(adjustment_json(a));
    call.answer(json_response(200, json{{"adjustments", items}}));
}

// GET /v1/clerk/adjustments/{n}
void show_adjustment(Call& call) {
    const auto number = parse_u64(call.params[0]);
    auto found = number ? call.s().tokens.adjustment(*number) : Result<std::optional<Adjustment>>(std::optional<Adjustment>());
    if (!found) return call.answer(storage_failure(found.error().message));
    if (!*found) return call.answer(not_found("no such adjustment"));
    call.answer(json_response(200, adjustment_json(**found)));
}

void propose_adjustment(Call& call) {
    const auto body = object_body(call.request.body);
    if (!body) return call.answer(bad_request("body must be a JSON object"));
    Adjustment a;
    if (auto problem = read_proposal(*body, a)) return call.answer(bad_request(*problem));
    const Clerk& clerk = call.who();
    a.maker = clerk.name;
    auto refused = adjustment_refusal(call.s().ledger, a);
    if (!refused) return call.answer(storage_failure(refused.error().message));
    if (*refused) {
        return call.api.refuse_by_rule(clerk, "adjustment_propose", "new", "adjustment account rule: " + **refused,
                                       std::move(call.respond));
    }
    const Tokens& tokens = call.s().tokens;
    auto proposal = std::make_shared<Adjustment>(a);
    auto write = [proposal, &tokens](lmdb::Txn& txn, auto, ClerkAction& action) -> lmdb::Status {
        auto number = tokens.next_adjustment_number(txn);
        if (!number) return Unexpected{number.error()};
        proposal->number = *number;
        proposal->proposed_ns = now_ns();
        action.target = fmt::format("adjustment {}", *number);
        return tokens.put_adjustment(txn, *proposal);
    };
    call.api.commit(Change{{},
                           write,
                           [proposal](const ClerkAction&) { return json_response(201, adjustment_json(*proposal)); },
                           action_of(clerk, "adjustment_propose", "", adjustment_summary(a))},
                    std::move(call.respond));
}

void approve_adjustment(Call& call) { decide_adjustment(call, true); }

void reject_adjustment(Call& call) { decide_adjustment(call, false); }

}  // namespace coconut::clearing::http::api
