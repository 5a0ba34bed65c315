// POST /v1/clerk/transfers (role settlement; clearing/README.md "Settlement postings"):
// {"cycle":{…},"transfers":[…]}. Only the transfers the daemon itself derives for that cycle's window
// are accepted (manual_money.hpp); anything else is refused whole with 403 naming the rule, and the
// refusal is journaled. Checked on the settlement worker, one request at a time.
#include "api_internal.hpp"

#include <coconut/core/assert.hpp>

#include <fmt/format.h>
#include <boost/asio/post.hpp>

#include <algorithm>
#include <map>

namespace coconut::clearing::http::api {

namespace {

// The numeric fields of a transfer, each an unsigned integer up to its type's maximum.
std::optional<std::string> transfer_numbers(const json& j, ledger::Transfer& t) {
    auto number = [&](const char* key, std::uint64_t max, auto& out) -> std::optional<std::string> {
        if (!j.contains(key)) return std::nullopt;
        if (!j[key].is_number_unsigned() || j[key].get<std::uint64_t>() > max)
            return fmt::format("\"{}\" must be an integer 0 to {}", key, max);
        out = static_cast<std::remove_reference_t<decltype(out)>>(j[key].get<std::uint64_t>());
        return std::nullopt;
    };
    if (auto bad = number("amount", ~std::uint64_t{0}, t.amount)) return bad;
    if (auto bad = number("ledger", 0xFFFFFFFFu, t.ledger)) return bad;
    if (auto bad = number("code", 0xFFFFu, t.code)) return bad;
    if (auto bad = number("timeout_s", 0xFFFFFFFFu, t.timeout_s)) return bad;
    if (auto bad = number("user_data_64", ~std::uint64_t{0}, t.user_data_64)) return bad;
    if (auto bad = number("user_data_32", 0xFFFFFFFFu, t.user_data_32)) return bad;
    return std::nullopt;
}

std::optional<std::string> transfer_flags(const json& j, ledger::Transfer& t) {
    if (!j.contains("flags")) return std::nullopt;
    if (!j["flags"].is_array()) return "\"flags\" must be an array of names";
    static const std::map<std::string, std::uint16_t> names{{"linked", ledger::transfer_flags::linked},
                                                            {"pending", ledger::transfer_flags::pending},
                                                            {"post_pending", ledger::transfer_flags::post_pending},
                                                            {"void_pending", ledger::transfer_flags::void_pending}};
    for (const auto& f : j["flags"]) {
        auto found = f.is_string() ? names.find(f.get<std::string>()) : names.end();
        if (found == names.end()) return "\"flags\" names must be linked, pending, post_pending or void_pending";
        t.flags |= found->second;
    }
    return std::nullopt;
}

// A transfer as coconut-settle's poster writes it (settlement/src/posting.cpp).
std::optional<std::string> parse_transfer(const json& j, ledger::Transfer& t) {
    if (!j.is_object()) return "not an object";
    if (auto bad = only_keys(j, {"id", "debit_account_id", "credit_account_id", "amount", "pending_id", "ledger", "code", "flags",
                                 "timeout_s", "user_data_128", "user_data_64", "user_data_32"})) {
        return bad;
    }
    const std::pair<const char*, ledger::Id*> ids[] = {{"id", &t.id},
                                                       {"debit_account_id", &t.debit_account_id},
                                                       {"credit_account_id", &t.credit_account_id},
                                                       {"pending_id", &t.pending_id},
                                                       {"user_data_128", &t.user_data_128}};
    for (const auto& [key, out] : ids) {
        if (!j.contains(key)) continue;
        auto id = id_of_json(j[key]);
        if (!id) return fmt::format("\"{}\" must be 32 hex digits", key);
        *out = *id;
    }
    if (!j.contains("id")) return "\"id\" is required";
    if (auto bad = transfer_numbers(j, t)) return bad;
    return transfer_flags(j, t);
}

std::optional<std::string> parse_cycle(const json& j, CycleClaim& claim) {
    if (!j.is_object()) return "\"cycle\" must be {\"id\":YYYYMMDD,\"window_start_ns\":…,\"window_end_ns\":…}";
    if (auto bad = only_keys(j, {"id", "window_start_ns", "window_end_ns"})) return "cycle: " + *bad;
    for (const char* key : {"id", "window_start_ns", "window_end_ns"}) {
        if (!j.contains(key) || !j[key].is_number_unsigned()) return fmt::format("cycle: \"{}\" must be an unsigned integer", key);
    }
    if (j["id"].get<std::uint64_t>() > 0xFFFFFFFFu) return std::string("cycle: \"id\" must be a date YYYYMMDD");
    claim = CycleClaim{static_cast<std::uint32_t>(j["id"].get<std::uint64_t>()), j["window_start_ns"].get<std::uint64_t>(),
                       j["window_end_ns"].get<std::uint64_t>()};
    return std::nullopt;
}

// The request's cycle and transfers, or the 400 naming what is wrong.
std::variant<ApiResponse, std::pair<CycleClaim, std::vector<ledger::Transfer>>> read_postings(std::string_view text) {
    const json body = json::parse(text, nullptr, false);
    if (body.is_discarded() || !body.is_object() || !body.contains("transfers") || !body["transfers"].is_array() ||
        !body.contains("cycle") || body.size() != 2) {
        return bad_request("body must be {\"cycle\":{…},\"transfers\":[…]}");
    }
    CycleClaim claim;
    if (auto bad = parse_cycle(body["cycle"], claim)) return bad_request(*bad);
    const json& list = body["transfers"];
    if (list.empty() || list.size() > transfers_per_request_max) {
        return bad_request(fmt::format("1 to {} transfers per request", transfers_per_request_max));
    }
    std::vector<ledger::Transfer> transfers(list.size());
    for (std::size_t i = 0; i < list.size(); ++i) {
        if (auto bad = parse_transfer(list[i], transfers[i])) return bad_request(fmt::format("transfers[{}]: {}", i, *bad));
    }
    return std::pair{claim, std::move(transfers)};
}

// The transfers the daemon derives for the claimed cycle, computed once per cycle (the worker's cache),
// or the answer refusing it (503 storage, 409 the ledger cannot give them).
std::variant<ApiResponse, std::shared_ptr<const ExpectedTransfers>> expected_for(Api::State& api, const CycleClaim& claim) {
    if (!api.settlement_cache || api.settlement_cache->first != claim) {
        auto computed = expected_settlement_transfers(api.s.ledger, api.s.registry, claim);
        if (!computed) {
            if (computed.error().code == ErrorCode::storage) return storage_failure(computed.error().message);
            return error_response(409, "conflict", computed.error().message);
        }
        api.settlement_cache.emplace(claim, std::make_shared<const ExpectedTransfers>(std::move(*computed)));
    }
    return api.settlement_cache->second;
}

// The accepted postings through the writer: the cycle's record on its first posting and the journal
// entry (with the ledger's count of results) in the same commit; the answer lists each transfer's result.
void submit_postings(Api::State& api, const SettlementCycle& record, bool first_posting, std::vector<ledger::Transfer> transfers,
                     ClerkAction journaled, Api::Respond respond) {
    std::vector<ledger::Id> ids;
    for (const auto& t : transfers) ids.push_back(t.id);
    std::vector<ledger::Event> events(transfers.begin(), transfers.end());
    const Tokens& tokens = api.s.tokens;
    auto action = std::make_shared<ClerkAction>(std::move(journaled));
    ledger::BatchHook hook = [action, record, first_posting, &tokens](lmdb::Txn& txn,
                                                                      std::span<const ledger::EventResult> results) -> lmdb::Status {
        if (first_posting) {
            if (auto put = tokens.put_settlement_cycle(txn, record); !put) return put;
        }
        const auto ok = std::count_if(results.begin(), results.end(), [](const auto& r) { return ledger::succeeded(r.code); });
        ClerkAction a = *action;
        a.detail += fmt::format(", {} ok or exists, {} refused", ok, results.size() - static_cast<std::size_t>(ok));
        auto logged = tokens.append_journal(txn, a);
        if (!logged) return Unexpected{logged.error()};
        return Ok{};
    };
    auto on_commit = [ids, respond](ledger::Reply reply) {
        if (!reply) return respond(storage_failure(reply.error().message));
        COCONUT_ASSERT(reply->size() == ids.size(), "one result per transfer posted");
        json out = json::array();
        for (std::size_t i = 0; i < ids.size(); ++i) {
            out.push_back({{"id", id_hex(ids[i])}, {"result", std::string(ledger::to_string((*reply)[i].code))}});
        }
        respond(json_response(200, json{{"results", out}}));
    };
    if (!api.s.writer->try_submit(std::move(events), on_commit, std::move(hook))) respond(writer_queue_full());
}

// On the settlement worker, with settlement_busy held (released by `respond`).
void check_and_post(Api::State& api, const Clerk& clerk, const CycleClaim& claim, std::vector<ledger::Transfer> transfers,
                    Api::Respond respond) {
    const std::string target = fmt::format("cycle {}", claim.cycle);
    auto recorded = api.s.tokens.settlement_cycle(claim.cycle);
    auto latest = api.s.tokens.latest_settlement_cycle();
    if (!recorded || !latest) return respond(storage_failure((!recorded ? recorded.error() : latest.error()).message));
    const std::uint64_t now = now_ns();
    if (auto bad = window_refusal(claim, *recorded, *latest, now, api.options.settlement_margin)) {
        return api.refuse_by_rule(clerk, "settlement", target, "settlement window rule: " + *bad, std::move(respond));
    }
    auto expected = expected_for(api, claim);
    if (auto* refused = std::get_if<ApiResponse>(&expected)) return respond(std::move(*refused));
    const ExpectedTransfers& rules = *std::get<std::shared_ptr<const ExpectedTransfers>>(expected);
    std::uint64_t total_fen = 0;
    for (std::size_t i = 0; i < transfers.size(); ++i) {
        if (auto bad = settlement_refusal(transfers[i], rules, claim.cycle)) {
            return api.refuse_by_rule(clerk, "settlement", target, fmt::format("settlement transfer rule: transfers[{}]: {}", i, *bad),
                                      std::move(respond));
        }
        total_fen += transfers[i].amount;
    }
    const SettlementCycle record{claim.cycle, claim.start_ns, claim.end_ns, now, clerk.name};
    ClerkAction journaled =
        action_of(clerk, "settlement", target,
                  fmt::format("window [{}, {}) ns: {} transfers, {} fen", claim.start_ns, claim.end_ns, transfers.size(), total_fen));
    submit_postings(api, record, !*recorded, std::move(transfers), std::move(journaled), std::move(respond));
}

}  // namespace

void post_transfers(Call& call) {
    auto postings = read_postings(call.request.body);
    if (auto* bad = std::get_if<ApiResponse>(&postings)) return call.answer(std::move(*bad));
    auto& [claim, transfers] = std::get<std::pair<CycleClaim, std::vector<ledger::Transfer>>>(postings);
    Api::State& api = call.api;
    if (api.settlement_busy.exchange(true)) return call.answer(busy("another settlement request is being checked"));
    boost::asio::post(api.settlement_worker, [&api, clerk = call.who(), claim = claim, transfers = std::move(transfers),
                                              respond = std::move(call.respond)]() mutable {
        auto release_and = [&api, respond](ApiResponse r) {
            api.settlement_busy.store(false);
            respond(std::move(r));
        };
        check_and_post(api, clerk, claim, std::move(transfers), release_and);
    });
}

}  // namespace coconut::clearing::http::api
