// Inside the HTTP API (http_api.hpp): the route table's types, what every handler shares (the
// services, the rate limiters, the one path to the ledger writer with its clerk journal entry), the
// request's pieces and the handlers, one file per resource:
//
//   router.cpp         Api::handle: the route table, matching, authentication, role checks
//   responses.cpp      error JSON and the small parsers every handler uses
//   journal.cpp        changes and journaled reads through the ledger writer (clerk journal)
//   cardholder.cpp     GET /v1/cards/{n}[/transactions]
//   activation.cpp     activation letters: POST /v1/clerk/cards/{n}/activation, POST /v1/activate
//   history.cpp        GET /v1/cards/{n}/history (rows as a person reads them)
//   cards.cpp          /v1/clerk/cards…: lookup, status (hotlist), registration, token
//   participants.cpp   POST /v1/clerk/participants
//   terminals.cpp      POST /v1/clerk/terminals, PUT /v1/clerk/terminals/{id}/status
//   transfers.cpp      POST /v1/clerk/transfers (settlement postings)
//   adjustments.cpp    /v1/clerk/adjustments… (maker-checker)
//   lists.cpp          GET /v1/clerk/risk, /suspense, /journal
//   card_returns.cpp   the counter's money: card return and refund, broken-card refund, tourist cards, dormancy
//   cluster.cpp        GET /v1/clerk/cluster/snapshot, /position (a node joining, settlement on a standby)
//   clerks.cpp         /v1/clerk/clerks: add, revoke, list clerks while serving
//   clerk_grants.cpp   /v1/clerk/clerks/grants…: roles that move money granted by two clerks (maker-checker)
//   operations.cpp     /, /healthz, /metrics, /v1/openapi.json
#pragma once

#include "../http_api.hpp"
#include "../manual_money.hpp"

#include <boost/asio/thread_pool.hpp>
#include <nlohmann/json.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace coconut::clearing::http::api {

using nlohmann::json;

// ---- responses (responses.cpp)
// ------------------------------------------------------------------------------

ApiResponse json_response(unsigned status, const json& body);
ApiResponse not_found(std::string_view message = "no such endpoint");
ApiResponse bad_request(std::string_view message);
// 503 storage, logged through the daemon's storage limiter: while the disk is full every write is refused.
ApiResponse storage_failure(std::string_view message);
// 503 busy with Retry-After: 1.
ApiResponse busy(std::string_view what);
// 503: the ledger writer's queue is full.
ApiResponse writer_queue_full();

// ---- small parsers (responses.cpp) ------------------------------------------------------------------------

std::optional<std::uint64_t> parse_u64(std::string_view text);
std::string iso_time(std::uint64_t ns);
std::optional<ledger::Id> id_of_json(const json& value);
std::optional<std::string_view> bearer_token(std::string_view authorization);
// The first key of `body` not in `keys`, as "unknown field …".
std::optional<std::string> only_keys(const json& body, std::initializer_list<std::string_view> keys);
// A JSON object body, or nullopt (discarded, not an object).
std::optional<json> object_body(std::string_view body);
// The first event that neither succeeded nor existed, as "event <index>: <ResultCode name>".
std::optional<std::string> first_failure(std::span<const ledger::EventResult> results);
std::uint64_t now_ns();

// The request target split in place: path segments ("/v1/cards/1" → v1, cards, 1) and the raw query,
// searched when a parameter is asked for (no containers: this runs for every request).
class Target {
public:
    static constexpr std::size_t segments_max = 8;  // no endpoint has more than 5

    explicit Target(std::string_view target);
    // Empty when the path is deeper than any endpoint (routed to 404).
    std::span<const std::string_view> segments() const;
    bool too_deep() const { return too_deep_; }
    // The value of `key` in the query (the last one when repeated; "" for a key without '=').
    std::optional<std::string_view> param(std::string_view key) const;

private:
    std::array<std::string_view, segments_max> parts_{};
    std::size_t count_ = 0;
    bool too_deep_ = false;
    std::string_view query_;
};

// ?after=N&limit=1…journal_page_max of a list read oldest first: what is wrong, or nullopt with the
// values set (unchanged when absent).
std::optional<std::string> page_params(const Target& target, std::string_view after_is, std::uint64_t& after, std::size_t& limit);
// ?limit=1…max and ?cursor=N of a list read newest first (values unchanged when absent).
std::optional<std::string> newest_first_params(const Target& target, std::size_t max, std::size_t& limit, std::uint64_t& before,
                                               std::string_view cursor_is);

// ---- rate limits
// ---------------------------------------------------------------------------------------------

// A token bucket per key (a token's hash, or a client address in the first 16 bytes): `burst` requests at
// once, refilled at `rate` per second.
class RateLimiter {
public:
    RateLimiter(double rate_per_s, double burst) : rate_(rate_per_s), burst_(burst) {}
    // True when the request may go ahead; false: answer 429 after retry_after_s.
    bool admit(const TokenHash& key, double& retry_after_s);

private:
    struct Bucket {
        double tokens;
        std::chrono::steady_clock::time_point last;
    };
    struct Hash {
        std::size_t operator()(const TokenHash& h) const;
    };
    // Buckets that have refilled completely carry no state worth keeping.
    void forget_full(std::chrono::steady_clock::time_point now);

    const double rate_;
    const double burst_;
    std::mutex mutex_;
    std::unordered_map<TokenHash, Bucket, Hash> buckets_;
};

// ---- changes through the writer (journal.cpp)
// -----------------------------------------------------------------

// The work of one clerk request: what to write (ledger events and the hook's own writes) and the
// answer once committed. The journal entry is added in the same commit.
// `write` runs in the commit's transaction; an expected refusal (already registered, …) sets
// action.outcome instead of failing, because a failing hook would fail the whole group commit,
// terminals' bookings included. An error return is for storage failures only.
struct Change {
    std::vector<ledger::Event> events;
    std::function<lmdb::Status(lmdb::Txn&, std::span<const ledger::EventResult>, ClerkAction&)> write;  // may be empty
    std::function<ApiResponse(const ClerkAction&)> answer;                                              // after the commit
    ClerkAction action;
};

// 409 naming the refusal when the change's outcome is not "ok", else `body` with `status`.
ApiResponse refused_or(const ClerkAction& action, unsigned status, const json& body);
// A clerk action to journal: `clerk` did `what` to `target`, "ok" unless the change says otherwise.
ClerkAction action_of(const Clerk& clerk, std::string what, std::string target, std::string detail = {});

}  // namespace coconut::clearing::http::api

namespace coconut::clearing::http {

// What every handler shares. Settlement requests and adjustment decisions are checked and committed one
// at a time (a second one meanwhile is answered 503): what they read (recorded cycles, a proposal's
// status) cannot change between the check and the commit. Positions are computed on their own thread,
// never on an HTTP thread; the last cycle's expected transfers are kept for its next request.
struct Api::State {
    State(Services services, const HttpOptions& http_options, HttpStats& http_stats);
    // A settlement check still running finishes (and answers) before the members it uses go.
    ~State() {
        settlement_worker.join();
        snapshot_worker.join();
    }

    Services s;
    const HttpOptions& options;
    HttpStats& stats;
    api::RateLimiter limiter;
    api::RateLimiter address_limiter;  // requests without a valid token, per client address
    std::atomic<bool> settlement_busy{false};
    std::atomic<bool> adjustment_busy{false};
    std::atomic<bool> counter_busy{false};  // card returns, broken-card refunds, tourist sales: one at a time
    boost::asio::thread_pool settlement_worker{1};
    // One snapshot at a time (taken on its own thread, the flag cleared when its file is sent or dropped,
    // which may be after this state is gone: shared).
    std::shared_ptr<std::atomic<bool>> snapshot_busy = std::make_shared<std::atomic<bool>>(false);
    boost::asio::thread_pool snapshot_worker{1};
    std::optional<std::pair<CycleClaim, std::shared_ptr<const ExpectedTransfers>>> settlement_cache;  // worker thread only

    // A request without a valid token (none, unknown, revoked, another card's): its failure answer, or
    // 429 once its address has had address_failure_burst of them (refilled at address_failures_per_s).
    ApiResponse unauthenticated(const ApiRequest& request, ApiResponse failure);
    // 429 above the token's rate.
    std::optional<ApiResponse> rate_limit(const TokenHash& key);

    // journal.cpp: the change and its journal entry in one commit; the answer after it is durable.
    void commit(api::Change change, Respond respond);
    // A read answered after its journal entry is durable.
    void journaled_read(ApiResponse response, ClerkAction action, Respond respond);
    // A settlement or adjustment request refused by a rule: 403 naming it, after the refusal is journaled.
    void refuse_by_rule(const Clerk& clerk, std::string action, std::string target, std::string rule, Respond respond);
    // Card number → ASN via the registry (clerk requests only: a scan of the cards table).
    Result<std::optional<Asn>> find_card(const CardNumber& number) const;
};

}  // namespace coconut::clearing::http

namespace coconut::clearing::http::api {

// ---- the route table (router.cpp)
// --------------------------------------------------------------------------

// Who may call a route: anyone, the card named in the path (its bearer token), or a clerk with one of
// the route's roles.
enum class Auth : std::uint8_t { none, card, clerk };

// One request on its way through a handler. `respond` is called exactly once.
struct Call {
    Api::State& api;
    const ApiRequest& request;
    const Target& target;
    std::array<std::string_view, 2> params{};  // the path's {…} segments, in order
    std::optional<Clerk> clerk;                // Auth::clerk: who
    TokenHash presented{};                     // Auth::card: the token's keyed hash
    Api::Respond respond;

    void answer(ApiResponse response) { respond(std::move(response)); }
    const Clerk& who() const;  // Auth::clerk routes only
    const Services& s() const { return api.s; }
};
using Handler = void (*)(Call& call);

// A path pattern: literal segments and {…} parameters ("/v1/clerk/cards/{n}/status").
struct Pattern {
    std::array<std::string_view, Target::segments_max> segments{};
    std::size_t count = 0;
};
constexpr Pattern pattern(std::string_view path) {
    Pattern p;
    while (!path.empty()) {
        if (path.front() == '/') {
            path.remove_prefix(1);
            continue;
        }
        const auto slash = path.find('/');
        p.segments[p.count++] = path.substr(0, slash);
        path = slash == std::string_view::npos ? std::string_view{} : path.substr(slash);
    }
    return p;
}

struct Route {
    std::string_view method;
    Pattern path;
    Auth auth = Auth::none;
    std::uint8_t roles = 0;  // Auth::clerk: any one of these
    Handler handler = nullptr;
};

// ---- handlers, one file per resource
// ---------------------------------------------------------------------------

// cardholder.cpp
// The token of the path's card {n}, read in `txn`, when it is the one the request presented; otherwise
// nothing, the request answered (404 as for a wrong token, counted against the address; 503 storage).
std::optional<CardToken> presented_card_token(Call& call, const lmdb::Txn& txn);
void card_balance(Call& call);
void card_transactions(Call& call);
// activation.cpp: POST /v1/clerk/cards/{n}/activation (a letter's one-time code), POST /v1/activate.
void issue_activation_code(Call& call);
void activate_card(Call& call);
// history.cpp: GET /v1/cards/{n}/history, the grouped rows (a visit, a journey, a load as one row each).
void card_history(Call& call);
// cards.cpp
// A registered card named by the path's {n}.
struct RegisteredCard {
    CardNumber number;
    Asn asn;
    std::string text;  // the card number's 16 digits
};
// The card of the path's {n}, or the request answered (400 not 16 digits, 404 not registered, 503).
std::optional<RegisteredCard> registered_card(Call& call);
void clerk_card_lookup(Call& call);
void set_card_status(Call& call);
void issue_card_token(Call& call);
void register_card(Call& call);
json risk_json(const RiskFlag& flag);
// The body of a status change, {"status":"…","reason":"…"}: `status` parsed by `parse` (one of `names`),
// the optional reason (≤ 128 characters); the 400 answer when it is not. The untyped step reads the
// two strings (responses.cpp).
std::optional<ApiResponse> read_status_body(const ApiRequest& request, std::initializer_list<std::string_view> names, std::string& status,
                                            std::string& reason);
template <class Status>
std::optional<ApiResponse> read_status_body(const ApiRequest& request, std::optional<Status> (*parse)(std::string_view),
                                            std::initializer_list<std::string_view> names, std::optional<Status>& status,
                                            std::string& reason) {
    std::string text;
    if (auto bad = read_status_body(request, names, text, reason)) return bad;
    status = parse(text);
    if (!status) {
        std::string listed;
        for (std::string_view name : names) listed += (listed.empty() ? "" : ", ") + std::string(name);
        return bad_request("status must be one of " + listed);
    }
    if (reason.size() > name_chars_max) return bad_request("reason longer than 128 characters");
    return std::nullopt;
}
// lifecycle.cpp: report lost / found (the cardholder's and the counter's), persons, replacement, the
// lost card's status, late spending after a carry.
void cardholder_report_lost(Call& call);
void cardholder_report_found(Call& call);
void counter_report_lost(Call& call);
void counter_report_found(Call& call);
void counter_replace_card(Call& call);
void counter_person(Call& call);
void clerk_card_lifecycle(Call& call);
void lost_late_spending_report(Call& call);
// What the cardholder routes show of the lifecycle, read in the request's snapshot: for a card reported
// lost, its whole answer (status only); for a replacement card, its carried balance.
struct LifecycleView {
    std::optional<ApiResponse> lost_answer;
    std::optional<json> carried;
};
LifecycleView lifecycle_view(const Services& s, const lmdb::Txn& txn, const Asn& asn, const CardNumber& number);
// 403 {"error":{"code":"card_reported_lost",…}} for a card reported lost (its token answers its status only).
std::optional<ApiResponse> refuse_lost_token(const Services& s, const lmdb::Txn& txn, const Asn& asn);
// clerks.cpp
void add_clerk_route(Call& call);
void revoke_clerk_route(Call& call);
void list_clerks(Call& call);
void who_am_i(Call& call);
// clerk_grants.cpp: roles that need a second clerk (http.hpp ClerkGrant)
// POST /v1/clerk/clerks naming such roles: the grant recorded, 202 with the token (inactive until approved).
void request_grant(Call& call, std::string name, std::uint8_t roles);
void list_grants(Call& call);
void approve_grant(Call& call);
void reject_grant(Call& call);
// participants.cpp
void register_participant(Call& call);
// terminals.cpp
void register_terminal(Call& call);
void set_terminal_status(Call& call);
// transfers.cpp
void post_transfers(Call& call);
// adjustments.cpp
void list_adjustments(Call& call);
void show_adjustment(Call& call);
void propose_adjustment(Call& call);
void approve_adjustment(Call& call);
void reject_adjustment(Call& call);
// lists.cpp
void risk_list(Call& call);
void suspense_list(Call& call);
void journal_list(Call& call);
// card_returns.cpp
void return_card(Call& call);
void refund_broken(Call& call);
void sell_tourist_card(Call& call);
void dormant_report_route(Call& call);
// cluster.cpp
void cluster_snapshot(Call& call);
void cluster_position(Call& call);
// operations.cpp
void balance_page(Call& call);
void healthz(Call& call);
void metrics(Call& call);
void openapi(Call& call);

}  // namespace coconut::clearing::http::api
