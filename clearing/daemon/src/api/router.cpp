// The API's routes (clearing/openapi.json) and the one place a request is matched, authenticated and
// checked against its route's roles before a handler sees it.
//
// Order of refusals, the same for every route:
//   404  the path is deeper than any endpoint;
//   401 / 429 / 503 under /v1/clerk/…, before anything else: a caller without a clerk token learns
//        nothing about the clerk endpoints, not even which exist;
//   404  no route has this path;  405  a route has the path but not the method;
//   401 / 404 / 429  the route's token (a card's: 404 for a token that is not the card's, as if absent);
//   403  a clerk without one of the route's roles — before the handler looks anything up, so a clerk
//        without the role learns nothing, not even whether a card exists.
#include "api_internal.hpp"

#include <coconut/core/assert.hpp>

#include <fmt/format.h>

namespace coconut::clearing::http::api {

namespace {

constexpr std::uint8_t reader_roles = roles::adjust | roles::read;

// Cardholder routes first: they carry the query load.
constexpr std::array route_table{
    Route{"GET", pattern("/v1/cards/{n}"), Auth::card, 0, card_balance},
    Route{"GET", pattern("/v1/cards/{n}/transactions"), Auth::card, 0, card_transactions},
    Route{"GET", pattern("/v1/cards/{n}/history"), Auth::card, 0, card_history},
    Route{"POST", pattern("/v1/cards/{n}/lost"), Auth::card, 0, cardholder_report_lost},
    Route{"DELETE", pattern("/v1/cards/{n}/lost"), Auth::card, 0, cardholder_report_found},
    Route{"POST", pattern("/v1/activate"), Auth::none, 0, activate_card},
    Route{"GET", pattern("/"), Auth::none, 0, balance_page},
    Route{"GET", pattern("/healthz"), Auth::none, 0, healthz},
    Route{"GET", pattern("/v1/openapi.json"), Auth::none, 0, openapi},
    // The outcome counts, suspense and risk figures are operators' business, not the public's.
    Route{"GET", pattern("/metrics"), Auth::clerk, roles::read, metrics},
    Route{"GET", pattern("/v1/clerk/cards/{n}"), Auth::clerk, roles::read, clerk_card_lookup},
    Route{"PUT", pattern("/v1/clerk/cards/{n}/status"), Auth::clerk, roles::hotlist, set_card_status},
    Route{"POST", pattern("/v1/clerk/cards/{n}/token"), Auth::clerk, roles::registry, issue_card_token},
    Route{"POST", pattern("/v1/clerk/cards/{n}/activation"), Auth::clerk, roles::registry | roles::counter, issue_activation_code},
    Route{"POST", pattern("/v1/clerk/cards"), Auth::clerk, roles::registry, register_card},
    Route{"POST", pattern("/v1/clerk/cards/{n}/lost"), Auth::clerk, roles::counter, counter_report_lost},
    Route{"DELETE", pattern("/v1/clerk/cards/{n}/lost"), Auth::clerk, roles::counter, counter_report_found},
    Route{"POST", pattern("/v1/clerk/cards/{n}/replace"), Auth::clerk, roles::counter, counter_replace_card},
    Route{"GET", pattern("/v1/clerk/cards/{n}/lifecycle"), Auth::clerk, roles::counter | roles::read, clerk_card_lifecycle},
    Route{"POST", pattern("/v1/clerk/persons"), Auth::clerk, roles::counter, counter_person},
    Route{"GET", pattern("/v1/clerk/reports/lost-late-spending"), Auth::clerk, roles::counter | roles::read, lost_late_spending_report},
    Route{"POST", pattern("/v1/clerk/participants"), Auth::clerk, roles::registry, register_participant},
    Route{"POST", pattern("/v1/clerk/terminals"), Auth::clerk, roles::registry, register_terminal},
    Route{"PUT", pattern("/v1/clerk/terminals/{id}/status"), Auth::clerk, roles::registry, set_terminal_status},
    Route{"POST", pattern("/v1/clerk/transfers"), Auth::clerk, roles::settlement, post_transfers},
    Route{"GET", pattern("/v1/clerk/adjustments"), Auth::clerk, reader_roles, list_adjustments},
    Route{"POST", pattern("/v1/clerk/adjustments"), Auth::clerk, roles::adjust, propose_adjustment},
    Route{"GET", pattern("/v1/clerk/adjustments/{n}"), Auth::clerk, reader_roles, show_adjustment},
    Route{"POST", pattern("/v1/clerk/adjustments/{n}/approve"), Auth::clerk, roles::adjust, approve_adjustment},
    Route{"POST", pattern("/v1/clerk/adjustments/{n}/reject"), Auth::clerk, roles::adjust, reject_adjustment},
    Route{"GET", pattern("/v1/clerk/risk"), Auth::clerk, roles::read, risk_list},
    Route{"GET", pattern("/v1/clerk/suspense"), Auth::clerk, roles::read, suspense_list},
    Route{"GET", pattern("/v1/clerk/journal"), Auth::clerk, roles::read, journal_list},
    Route{"GET", pattern("/v1/clerk/me"), Auth::clerk, roles::all, who_am_i},
    Route{"GET", pattern("/v1/clerk/clerks"), Auth::clerk, roles::clerks, list_clerks},
    Route{"POST", pattern("/v1/clerk/clerks"), Auth::clerk, roles::clerks, add_clerk_route},
    Route{"DELETE", pattern("/v1/clerk/clerks/{name}"), Auth::clerk, roles::clerks, revoke_clerk_route},
    Route{"GET", pattern("/v1/clerk/clerks/grants"), Auth::clerk, roles::clerks, list_grants},
    Route{"POST", pattern("/v1/clerk/clerks/grants/{n}/approve"), Auth::clerk, roles::clerks, approve_grant},
    Route{"POST", pattern("/v1/clerk/clerks/grants/{n}/reject"), Auth::clerk, roles::clerks, reject_grant},
    Route{"POST", pattern("/v1/clerk/cards/{n}/return"), Auth::clerk, roles::counter, return_card},
    Route{"POST", pattern("/v1/clerk/cards/{n}/refund-broken"), Auth::clerk, roles::counter, refund_broken},
    Route{"POST", pattern("/v1/clerk/tourist-cards"), Auth::clerk, roles::counter, sell_tourist_card},
    Route{"GET", pattern("/v1/clerk/reports/dormant"), Auth::clerk, roles::read | roles::counter, dormant_report_route},
    Route{"GET", pattern("/v1/clerk/cluster/snapshot"), Auth::clerk, roles::cluster, cluster_snapshot},
    Route{"GET", pattern("/v1/clerk/cluster/position"), Auth::clerk, roles::settlement | roles::read | roles::cluster, cluster_position},
};

constexpr bool is_parameter(std::string_view segment) { return segment.size() >= 2 && segment.front() == '{' && segment.back() == '}'; }

// Every route is reachable and has at most two parameters (Call::params).
consteval bool well_formed() {
    for (const Route& r : route_table) {
        std::size_t parameters = 0;
        for (std::size_t i = 0; i < r.path.count; ++i) parameters += is_parameter(r.path.segments[i]) ? 1 : 0;
        if (parameters > 2 || r.handler == nullptr || (r.auth == Auth::clerk) != (r.roles != 0)) return false;
    }
    return true;
}
static_assert(well_formed(), "a route has a handler, at most two {…} segments, and roles exactly when clerks call it");

bool path_matches(const Pattern& p, std::span<const std::string_view> segments, std::array<std::string_view, 2>& params) {
    if (p.count != segments.size()) return false;
    std::size_t next = 0;
    for (std::size_t i = 0; i < p.count; ++i) {
        if (is_parameter(p.segments[i])) {
            params[next++] = segments[i];
        } else if (p.segments[i] != segments[i]) {
            return false;
        }
    }
    return true;
}

// The route for the path and method; otherwise whether some route has the path, and its methods.
struct Match {
    const Route* route = nullptr;
    bool path_known = false;
    std::string methods;  // "GET", "GET or POST": for the 405
};

Match match(std::span<const std::string_view> segments, std::string_view method, std::array<std::string_view, 2>& params) {
    Match m;
    for (const Route& r : route_table) {
        std::array<std::string_view, 2> found{};
        if (!path_matches(r.path, segments, found)) continue;
        m.path_known = true;
        if (r.method == method) {
            m.route = &r;
            params = found;
            return m;
        }
        m.methods += (m.methods.empty() ? "" : " or ") + std::string(r.method);
    }
    return m;
}

bool under_clerk(std::span<const std::string_view> segments) {
    return segments.size() >= 3 && segments[0] == "v1" && segments[1] == "clerk";
}

ApiResponse unauthorized(std::string_view message) {
    ApiResponse r = error_response(401, "unauthorized", message);
    r.headers.emplace_back("WWW-Authenticate", "Bearer");
    return r;
}

// The clerk of the request's bearer token, or false with the request answered (401, 429, 503).
bool authenticate_clerk(Call& call) {
    Api::State& api = call.api;
    auto token = bearer_token(call.request.authorization);
    if (!token) {
        call.answer(api.unauthenticated(call.request, unauthorized("Authorization: Bearer <clerk token> required")));
        return false;
    }
    if (auto limited = api.rate_limit(api.s.tokens.hash(*token))) {
        call.answer(std::move(*limited));
        return false;
    }
    auto clerk = api.s.tokens.clerk(*token);
    if (!clerk) {
        call.answer(storage_failure(clerk.error().message));
        return false;
    }
    if (!*clerk) {
        call.answer(api.unauthenticated(call.request, unauthorized("unknown clerk token")));
        return false;
    }
    call.clerk = std::move(*clerk);
    return true;
}

// A card token's hash in call.presented, or false with the request answered (401, 404, 429). Whether it
// is the card's is the handler's to check, in its read transaction.
bool authenticate_card(Call& call) {
    Api::State& api = call.api;
    auto token = bearer_token(call.request.authorization);
    if (!token) {
        call.answer(api.unauthenticated(call.request, unauthorized("Authorization: Bearer <card token> required")));
        return false;
    }
    if (token->size() > token_chars_max) {
        call.answer(api.unauthenticated(call.request, not_found("no such card for this token")));
        return false;
    }
    call.presented = api.s.tokens.hash(*token);
    if (auto limited = api.rate_limit(call.presented)) {
        call.answer(std::move(*limited));
        return false;
    }
    return true;
}

// What a standby serves from its copy (StandbyInfo): the cardholder's reads and the public pages, the
// cluster's clerk routes (a node joins from a standby's snapshot; settlement reads its position) and
// /metrics (its applied position, for the lag alert).
bool served_by_standby(const Route& route) {
    return route.handler == card_balance || route.handler == card_transactions || route.handler == card_history ||
           route.handler == balance_page || route.handler == healthz || route.handler == openapi || route.handler == cluster_snapshot ||
           route.handler == cluster_position || route.handler == metrics;
}

// /v1/clerk/cluster/…: the clerk routes a standby authenticates and serves itself.
bool under_cluster(std::span<const std::string_view> segments) { return segments.size() >= 3 && segments[2] == "cluster"; }

// 503 `standby`, naming the primary.
ApiResponse to_the_primary(const StandbyInfo& standby) {
    const std::string primary = standby.primary_http();
    ApiResponse r =
        error_response(503, "standby",
                       primary.empty()
                           ? std::string("this node is a standby and no primary holds the lease now: try again shortly")
                           : fmt::format("this node is a standby: send clerk requests and writes to the primary at {}", primary));
    r.headers.emplace_back(std::string(primary_header), primary);
    r.headers.emplace_back("Retry-After", "1");
    return r;
}

// 403 unless the clerk has one of the route's roles.
bool authorize(Call& call, const Route& route) {
    if (route.auth != Auth::clerk || (call.who().roles & route.roles) != 0) return true;
    std::string names;
    for (const std::string& name : role_names(route.roles)) names += (names.empty() ? "" : " or ") + name;
    call.answer(error_response(403, "forbidden", fmt::format("role {} required", names)));
    return false;
}

}  // namespace

}  // namespace coconut::clearing::http::api

namespace coconut::clearing::http {

Api::Api(Services services, const HttpOptions& options, HttpStats& stats) : state_(std::make_unique<State>(services, options, stats)) {}

Api::~Api() = default;

void Api::handle(const ApiRequest& request, Respond respond) {
    using namespace api;
    const Target target(request.target);
    if (target.too_deep()) return respond(not_found());
    const auto segments = target.segments();
    const StandbyInfo* standby = state_->s.standby;
    if (standby != nullptr) {  // every answer says how far this copy has applied the journal stream
        respond = [respond = std::move(respond), position = standby->applied_position()](ApiResponse r) {
            r.headers.emplace_back(std::string(applied_position_header), std::to_string(position));
            respond(std::move(r));
        };
    }
    Call call{*state_, request, target, {}, std::nullopt, {}, std::move(respond)};
    if (standby != nullptr && under_clerk(segments) && !under_cluster(segments)) return call.answer(to_the_primary(*standby));
    if (under_clerk(segments) && !authenticate_clerk(call)) return;
    const Match m = match(segments, request.method, call.params);
    if (!m.path_known) return call.answer(not_found());
    if (!m.route) return call.answer(error_response(405, "method_not_allowed", m.methods + " only"));
    const Route& route = *m.route;
    if (standby != nullptr && !served_by_standby(route)) return call.answer(to_the_primary(*standby));
    if (route.auth == Auth::card && !authenticate_card(call)) return;
    if (route.auth == Auth::clerk && !call.clerk && !authenticate_clerk(call)) return;
    if (!authorize(call, route)) return;
    route.handler(call);
}

}  // namespace coconut::clearing::http
