// The HTTP API: cardholder reads, clerk operations (journaled), settlement postings, /metrics,
// /healthz, the OpenAPI document and the balance page. Endpoints: clearing/openapi.json.
#include "http_api.hpp"
#include "internal.hpp"
#include "manual_money.hpp"

#include <coconut/clearing/registry_validator.hpp>

#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <ctime>
#include <map>
#include <mutex>
#include <unordered_map>
#include <variant>

namespace coconut::clearing::http {

using nlohmann::json;

namespace {

// ---- small leaves ------------------------------------------------------------------------------------

std::optional<ledger::Id> id_of_json(const json& value) {
    if (!value.is_string()) return std::nullopt;
    return parse_id_hex(value.get_ref<const std::string&>());
}


std::string iso_time(std::uint64_t ns) {
    const std::time_t seconds = static_cast<std::time_t>(ns / 1'000'000'000);
    std::tm utc{};
    gmtime_r(&seconds, &utc);
    return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", utc.tm_year + 1900, utc.tm_mon + 1, utc.tm_mday, utc.tm_hour,
                       utc.tm_min, utc.tm_sec, (ns / 1'000'000) % 1000);
}

std::optional<std::uint64_t> parse_u64(std::string_view text) {
    std::uint64_t value = 0;
    if (text.empty() || text.size() > 20) return std::nullopt;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
    return value;
}

// The request target split in place: path segments ("/v1/cards/1" → v1, cards, 1) and the raw query,
// searched when a parameter is asked for (no containers: this runs for every request).
class Target {
public:
    static constexpr std::size_t segments_max = 8;  // no endpoint has more than 5

    explicit Target(std::string_view target) {
        const auto question = target.find('?');
        std::string_view path = target.substr(0, question);
        if (question != std::string_view::npos) query_ = target.substr(question + 1);
        while (!path.empty()) {
            if (path.front() == '/') {
                path.remove_prefix(1);
                continue;
            }
            const auto slash = path.find('/');
            if (count_ == segments_max) {
                too_deep_ = true;
                break;
            }
            parts_[count_++] = path.substr(0, slash);
            path = slash == std::string_view::npos ? std::string_view{} : path.substr(slash);
        }
    }

    // Empty when the path is deeper than any endpoint (routed to 404).
    std::span<const std::string_view> segments() const { return too_deep_ ? std::span<const std::string_view>{} : std::span(parts_.data(), count_); }
    bool too_deep() const { return too_deep_; }
    // The value of `key` in the query (the last one when repeated; "" for a key without '=').
    std::optional<std::string_view> param(std::string_view key) const {
        std::optional<std::string_view> found;
        for (std::string_view rest = query_; !rest.empty();) {
            const auto amp = rest.find('&');
            const std::string_view pair = rest.substr(0, amp);
            const auto eq = pair.find('=');
            if (pair.substr(0, eq) == key) found = eq == std::string_view::npos ? std::string_view{} : pair.substr(eq + 1);
            rest = amp == std::string_view::npos ? std::string_view{} : rest.substr(amp + 1);
        }
        return found;
    }

private:
    std::array<std::string_view, segments_max> parts_{};
    std::size_t count_ = 0;
    bool too_deep_ = false;
    std::string_view query_;
};

std::optional<std::string_view> bearer_token(std::string_view authorization) {
    constexpr std::string_view scheme = "Bearer ";
    if (authorization.size() <= scheme.size() || authorization.substr(0, scheme.size()) != scheme) return std::nullopt;
    return authorization.substr(scheme.size());
}

ApiResponse json_response(unsigned status, const json& body) { return ApiResponse{status, "application/json", body.dump(), {}}; }

// Logged through the daemon's storage limiter: while the disk is full every write is refused.
ApiResponse storage_failure(std::string_view message) {
    clearing::detail::log_storage_failure(fmt::format("HTTP: {}", message));
    return error_response(503, "storage", message);
}

// ---- rate limit -----------------------------------------------------------------------------------------

// A token bucket per key (a token's hash, or a client address in the first 16 bytes): `burst` requests at
// once, refilled at `rate` per second.
class RateLimiter {
public:
    RateLimiter(double rate_per_s, double burst) : rate_(rate_per_s), burst_(burst) {}

    // True when the request may go ahead; false: answer 429 after retry_after_s.
    bool admit(const TokenHash& key, double& retry_after_s) {
        const auto now = std::chrono::steady_clock::now();
        std::lock_guard lock(mutex_);
        if (buckets_.size() >= rate_limited_tokens_max) forget_full(now);
        auto [it, fresh] = buckets_.try_emplace(key, Bucket{burst_, now});
        Bucket& b = it->second;
        if (!fresh) {
            const double elapsed_s = std::chrono::duration<double>(now - b.last).count();
            b.tokens = std::min(burst_, b.tokens + elapsed_s * rate_);
            b.last = now;
        }
        if (b.tokens >= 1.0) {
            b.tokens -= 1.0;
            return true;
        }
        retry_after_s = (1.0 - b.tokens) / rate_;
        return false;
    }

private:
    struct Bucket {
        double tokens;
        std::chrono::steady_clock::time_point last;
    };
    struct Hash {
        std::size_t operator()(const TokenHash& h) const {  // all four words: address keys are mostly zeros
            std::size_t out = 0;
            for (std::size_t at = 0; at < h.size(); at += sizeof out) {
                std::size_t word = 0;
                std::memcpy(&word, h.data() + at, sizeof word);
                out = (out ^ word) * 0x9E3779B97F4A7C15ull;
            }
            return out;
        }
    };
    // Buckets that have refilled completely carry no state worth keeping.
    void forget_full(std::chrono::steady_clock::time_point now) {
        const auto refill = std::chrono::duration<double>(burst_ / rate_);
        std::erase_if(buckets_, [&](const auto& entry) { return now - entry.second.last >= refill; });
        if (buckets_.size() >= rate_limited_tokens_max) buckets_.clear();  // a flood of distinct tokens: start over
    }

    const double rate_;
    const double burst_;
    std::mutex mutex_;
    std::unordered_map<TokenHash, Bucket, Hash> buckets_;
};

// ---- transaction history ----------------------------------------------------------------------------------

// What a cardholder sees a transfer as (clearing.hpp transfer_codes; participant kind tells bus from shop).
std::string_view kind_of(const ledger::Transfer& t, std::string_view participant_kind) {
    const bool voided = (t.flags & ledger::transfer_flags::void_pending) != 0;
    switch (t.code) {
        case transfer_codes::offline_purchase:
        case transfer_codes::tac_failed:
            if (participant_kind == "bus") return "bus";
            if (participant_kind == "clinic") return "clinic";
            return "shop";
        case transfer_codes::opening_balance: return "load";
        case transfer_codes::online_load: return voided ? "reversal" : "load";
        case transfer_codes::clinic_medical: return voided ? "reversal" : "clinic";
        case transfer_codes::manual_adjustment: return "adjustment";
        default: return "other";
    }
}

std::string_view state_of(const ledger::Transfer& t) {
    if ((t.flags & ledger::transfer_flags::pending) != 0) return "pending";
    if ((t.flags & ledger::transfer_flags::void_pending) != 0) return "voided";
    if (t.code == transfer_codes::tac_failed) return "under_review";  // booked to suspense
    return "posted";
}

std::string bcd_local_time(const std::array<std::uint8_t, 5>& bcd) {
    const std::string d = bcd_to_digits(bcd);  // YYMMDDhhmm
    return fmt::format("20{}-{}-{}T{}:{}", d.substr(0, 2), d.substr(2, 2), d.substr(4, 2), d.substr(6, 2), d.substr(8, 2));
}

struct CardAccounts {
    ledger::Id purse;
    ledger::Id medical;
};

// The first event that neither succeeded nor existed, as "<index>: <ResultCode name>".
std::optional<std::string> first_failure(std::span<const ledger::EventResult> results) {
    for (std::size_t i = 0; i < results.size(); ++i) {
        if (!ledger::succeeded(results[i].code)) return fmt::format("event {}: {}", i, ledger::to_string(results[i].code));
    }
    return std::nullopt;
}

std::int64_t cleared(const ledger::Account& a) {
    return static_cast<std::int64_t>(a.credits_posted) - static_cast<std::int64_t>(a.debits_posted);
}

}  // namespace

ApiResponse error_response(unsigned status, std::string_view code, std::string_view message) {
    return json_response(status, json{{"error", {{"code", code}, {"message", message}}}});
}

// ---- the API ---------------------------------------------------------------------------------------------------

struct Api::State {
    State(Services services, const HttpOptions& http_options, HttpStats& http_stats)
        : s(services),
          options(http_options),
          stats(http_stats),
          limiter(http_options.token_requests_per_s, http_options.token_burst),
          address_limiter(http_options.address_failures_per_s, http_options.address_failure_burst) {}
    // A settlement check still running finishes (and answers) before the members it uses go.
    ~State() { settlement_worker.join(); }

    Services s;
    const HttpOptions& options;
    HttpStats& stats;
    RateLimiter limiter;
    RateLimiter address_limiter;  // requests without a valid token, per client address
    // Settlement requests and adjustment decisions are checked and committed one at a time (a second
    // one meanwhile is answered 503): what they read (recorded cycles, a proposal's status) cannot
    // change between the check and the commit. Positions are computed on their own thread, never on
    // an HTTP thread; the last cycle's expected transfers are kept for its next request.
    std::atomic<bool> settlement_busy{false};
    std::atomic<bool> adjustment_busy{false};
    boost::asio::thread_pool settlement_worker{1};
    std::optional<std::pair<CycleClaim, std::shared_ptr<const ExpectedTransfers>>> settlement_cache;  // worker thread only

    // ---- helpers ----

    // Participants by id, read once per request.
    struct Participants {
        const Registry& registry;
        const lmdb::Txn& txn;
        std::map<std::uint64_t, std::optional<Participant>> cache;
        const std::optional<Participant>& get(std::uint64_t id) {
            auto [it, fresh] = cache.try_emplace(id);
            if (fresh && id != 0) {
                auto found = registry.participant_in(txn, id);
                if (found) it->second = *found;
            }
            return it->second;
        }
    };

    // A request without a valid token (none, unknown, revoked, another card's): its failure answer, or
    // 429 once its address has had address_failure_burst of them (refilled at address_failures_per_s).
    ApiResponse unauthenticated(const ApiRequest& request, ApiResponse failure) {
        TokenHash key{};
        std::copy(request.peer.begin(), request.peer.end(), key.begin());
        double retry_after_s = 0;
        if (address_limiter.admit(key, retry_after_s)) return failure;
        stats.rate_limited.fetch_add(1, std::memory_order_relaxed);
        ApiResponse r = error_response(429, "rate_limited", "too many requests without a valid token from this address; slow down");
        r.headers.emplace_back("Retry-After", std::to_string(static_cast<unsigned>(retry_after_s) + 1));
        return r;
    }

    std::optional<ApiResponse> rate_limit(const TokenHash& key) {
        double retry_after_s = 0;
        if (limiter.admit(key, retry_after_s)) return std::nullopt;
        stats.rate_limited.fetch_add(1, std::memory_order_relaxed);
        ApiResponse r = error_response(429, "rate_limited", "too many requests for this token; slow down");
        r.headers.emplace_back("Retry-After", std::to_string(static_cast<unsigned>(retry_after_s) + 1));
        return r;
    }

    static ApiResponse unauthorized(std::string_view message) {
        ApiResponse r = error_response(401, "unauthorized", message);
        r.headers.emplace_back("WWW-Authenticate", "Bearer");
        return r;
    }

    // ---- cardholder ----

    // The card a cardholder request is for, read in the request's one snapshot: 404 when the token is
    // not this card's, whether the card exists or not.
    struct CardHolder {
        CardNumber number;
        CardToken token;
    };
    std::variant<ApiResponse, CardHolder> card_for(const lmdb::Txn& txn, const CardNumber& number, const TokenHash& presented) {
        auto stored = s.tokens.card_token_in(txn, number);
        if (!stored) return storage_failure(stored.error().message());
        if (!*stored || !Tokens::matches(**stored, presented)) return error_response(404, "not_found", "no such card for this token");
        return CardHolder{number, **stored};
    }

    // The hottest answer: formatted directly into one buffer (every value is a number, digits or a fixed
    // word), not through a JSON tree, whose allocations showed in the profile under wrk.
    ApiResponse card(const lmdb::Txn& txn, const CardHolder& holder) {
        const Asn& asn = holder.token.asn;
        auto record = s.registry.card_in(txn, asn);
        if (!record) return storage_failure(record.error().message());
        if (!*record) return error_response(404, "not_found", "no such card for this token");
        const CardAccounts accounts{purse_shadow_account(asn), medical_account(asn)};
        auto purse = s.ledger.lookup_account(txn, accounts.purse);
        auto medical = s.ledger.lookup_account(txn, accounts.medical);
        if (!purse || !medical) return storage_failure("ledger read failed");
        std::uint64_t last_ns = 0;
        for (const ledger::Id& id : {accounts.purse, accounts.medical}) {
            auto newest = s.ledger.latest_transfer_timestamp(txn, id);
            if (!newest) return storage_failure(newest.error().message);
            last_ns = std::max(last_ns, *newest);
        }
        ApiResponse out{200, "application/json", {}, {}};
        out.body.reserve(320);
        auto to = std::back_inserter(out.body);
        fmt::format_to(to, R"({{"card_number":"{}","currency":"CNY","last_cleared_at":)", to_string(holder.number));
        if (last_ns) {
            fmt::format_to(to, "\"{}\"", iso_time(last_ns));
        } else {
            out.body += "null";
        }
        out.body += R"(,"medical":)";
        if (*medical) {
            const ledger::Account& a = **medical;
            fmt::format_to(to, R"({{"available_fen":{},"balance_fen":{},"pending_debit_fen":{}}})",
                           cleared(a) - static_cast<std::int64_t>(a.debits_pending), cleared(a), a.debits_pending);
        } else {
            out.body += "null";
        }
        out.body += R"(,"purse":)";
        if (*purse) {
            const ledger::Account& a = **purse;
            fmt::format_to(to, R"({{"balance_fen":{},"pending_credit_fen":{},"pending_debit_fen":{}}})", cleared(a), a.credits_pending,
                           a.debits_pending);
        } else {
            out.body += "null";
        }
        fmt::format_to(to, R"(,"status":"{}"}})", to_string((*record)->status));
        return out;
    }

    // Balance snapshots of `account` from `oldest` to `newest` (ns), by timestamp.
    std::map<std::uint64_t, ledger::Balance> snapshots(const lmdb::Txn& txn, const ledger::Id& account, std::uint64_t oldest,
                                                       std::uint64_t newest) {
        constexpr std::size_t chunk = 256;
        std::map<std::uint64_t, ledger::Balance> out;
        for (std::uint64_t after = oldest - 1;;) {
            auto page = s.ledger.account_balances(txn, account, after, chunk);
            if (!page || page->empty()) break;
            for (const auto& b : *page) {
                if (b.timestamp > newest) return out;
                out.emplace(b.timestamp, b);
            }
            if (page->size() < chunk) break;
            after = page->back().timestamp;
        }
        return out;
    }

    ApiResponse transactions(const lmdb::Txn& txn, const CardNumber& number, const CardToken& token, const Target& target) {
        std::size_t limit = transactions_page_default;
        if (auto it = target.param("limit")) {
            auto value = parse_u64(*it);
            if (!value || *value == 0 || *value > transactions_page_max) {
                return error_response(400, "bad_request", fmt::format("limit must be 1 to {}", transactions_page_max));
            }
            limit = *value;
        }
        std::uint64_t before = ~std::uint64_t{0};
        if (auto it = target.param("cursor")) {
            auto value = parse_u64(*it);
            if (!value) return error_response(400, "bad_request", "cursor must be the next_cursor of a previous page");
            before = *value;
        }
        const CardAccounts accounts{purse_shadow_account(token.asn), medical_account(token.asn)};
        auto purse = s.ledger.account_transfers_before(txn, accounts.purse, before, limit + 1);
        auto medical = s.ledger.account_transfers_before(txn, accounts.medical, before, limit + 1);
        if (!purse || !medical) return storage_failure("ledger read failed");
        // Timestamps are unique across the ledger, so merging the two newest-first lists is exact.
        std::vector<ledger::Transfer> merged;
        std::merge(purse->begin(), purse->end(), medical->begin(), medical->end(), std::back_inserter(merged),
                   [](const auto& a, const auto& b) { return a.timestamp > b.timestamp; });
        const bool more = merged.size() > limit;
        if (more) merged.resize(limit);
        std::map<std::uint64_t, ledger::Balance> balances[2];
        for (int which = 0; which < 2; ++which) {
            const ledger::Id& account = which == 0 ? accounts.purse : accounts.medical;
            std::uint64_t oldest = ~std::uint64_t{0}, newest = 0;
            for (const auto& t : merged) {
                if (t.debit_account_id != account && t.credit_account_id != account) continue;
                oldest = std::min(oldest, t.timestamp);
                newest = std::max(newest, t.timestamp);
            }
            if (newest != 0) balances[which] = snapshots(txn, account, oldest, newest);
        }
        Participants participants{s.registry, txn, {}};
        json items = json::array();
        for (const auto& t : merged) {
            const int which = (t.debit_account_id == accounts.purse || t.credit_account_id == accounts.purse) ? 0 : 1;
            const ledger::Id& account = which == 0 ? accounts.purse : accounts.medical;
            const auto& participant = participants.get(t.user_data_64);
            std::int64_t amount = static_cast<std::int64_t>(t.amount) * (t.debit_account_id == account ? -1 : 1);
            if ((t.flags & ledger::transfer_flags::void_pending) != 0) amount = -amount;  // the hold given back
            json item{{"id", id_hex(t.id)},
                      {"time", iso_time(t.timestamp)},
                      {"kind", kind_of(t, participant ? std::string_view(participant->kind) : std::string_view{})},
                      {"state", state_of(t)},
                      {"account", which == 0 ? "purse" : "medical"},
                      {"amount_fen", amount}};
            if (auto b = balances[which].find(t.timestamp); b != balances[which].end()) {
                item["balance_after_fen"] = static_cast<std::int64_t>(b->second.credits_posted) - static_cast<std::int64_t>(b->second.debits_posted);
            } else {
                item["balance_after_fen"] = nullptr;
            }
            json place = json::object();
            if (participant) place["participant"] = participant->name;
            if (t.code == transfer_codes::offline_purchase || t.code == transfer_codes::tac_failed) {
                const Place p = parse_place(t.user_data_128);
                if (p.line != 0) place["line"] = p.line;
                if (p.station != 0) place["station"] = p.station;
                place["local_time"] = bcd_local_time(p.local_time_bcd);
            }
            item["place"] = place;
            items.push_back(std::move(item));
        }
        json out{{"card_number", to_string(number)}, {"transactions", items}};
        out["next_cursor"] = more ? json(std::to_string(merged.back().timestamp)) : json(nullptr);
        return json_response(200, out);
    }

    // GET /v1/cards/{n}[/transactions]: 401 without a bearer token, 429 above its rate, 404 when it is
    // not this card's; every read of the answer in ONE read transaction (one snapshot, one reader slot
    // renewal), closed before the answer is sent.
    void cardholder(const ApiRequest& request, const Target& target, const Respond& respond) {
        respond(cardholder_answer(request, target));
    }

    ApiResponse cardholder_answer(const ApiRequest& request, const Target& target) {
        const auto seg = target.segments();  // v1 cards {n} [transactions]
        if (request.method != "GET") return error_response(405, "method_not_allowed", "cardholder endpoints are GET");
        auto token = bearer_token(request.authorization);
        if (!token) return unauthenticated(request, unauthorized("Authorization: Bearer <card token> required"));
        // Built only when needed: a JSON error body per request showed as 9 % of the HTTP thread under wrk.
        auto not_found = [] { return error_response(404, "not_found", "no such card for this token"); };
        if (token->size() > token_chars_max) return unauthenticated(request, not_found());
        const TokenHash presented = s.tokens.hash(*token);
        if (auto limited = rate_limit(presented)) return std::move(*limited);
        auto number = parse_card_number(seg[2]);
        if (!number) return unauthenticated(request, not_found());
        auto txn = s.ledger.begin_read();
        if (!txn) return storage_failure(txn.error().message);
        auto who = card_for(*txn, *number, presented);
        if (auto* refused = std::get_if<ApiResponse>(&who)) return refused->status == 404 ? unauthenticated(request, std::move(*refused)) : std::move(*refused);
        const CardHolder& holder = std::get<CardHolder>(who);
        if (seg.size() == 3) return card(*txn, holder);
        return transactions(*txn, holder.number, holder.token, target);
    }

    // ---- clerk ----

    // The work of one clerk request: what to write (ledger events and the hook's own writes) and the
    // answer once committed. The journal entry is added in the same commit.
    // `write` runs in the commit's transaction; an expected refusal (already registered, …) sets
    // action.outcome instead of failing, because a failing hook would fail the whole group commit,
    // terminals' bookings included. An error return is for storage failures only.
    struct Change {
        std::vector<ledger::Event> events;
        std::function<lmdb::Status(lmdb::Txn&, std::span<const ledger::EventResult>, ClerkAction&)> write;  // may be empty
        std::function<ApiResponse(const ClerkAction&)> answer;  // after the commit
        ClerkAction action;
    };

    static ApiResponse refused_or(const ClerkAction& action, unsigned status, const json& body) {
        if (action.outcome != "ok") return error_response(409, "conflict", action.outcome);
        return json_response(status, body);
    }

    void commit(Change change, Respond respond) {
        auto shared = std::make_shared<Change>(std::move(change));
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
            if (!reply) return respond(storage_failure(reply.error().message));
            respond(shared->answer(shared->action));
        };
        auto events = shared->events;
        if (!s.writer.try_submit(std::move(events), std::move(on_commit), std::move(hook))) {
            respond(error_response(503, "busy", "the ledger writer's queue is full; retry shortly"));
        }
    }

    // A read answered after its journal entry is durable.
    void journaled_read(ApiResponse response, ClerkAction action, Respond respond) {
        auto shared = std::make_shared<ApiResponse>(std::move(response));
        commit(Change{{}, {}, [shared](const ClerkAction&) { return *shared; }, std::move(action)}, std::move(respond));
    }

    // Card number → ASN via the registry (clerk requests only: a scan of the cards table).
    Result<std::optional<Asn>> find_card(const CardNumber& number) {
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

    json risk_json(const RiskFlag& f) {
        return {{"kind", to_string(f.kind)},  {"card_number", to_string(card_number_of(f.asn))},
                {"atc", f.atc},                {"type", fmt::format("{:02X}", f.type)},
                {"time", iso_time(f.timestamp_ns)}, {"detail", f.detail}};
    }

    void clerk_card(const Clerk& clerk, const ApiRequest& request, const Target& target, Respond respond) {
        const auto seg = target.segments();  // v1 clerk cards {n} [status|token]
        // Method and role before anything is looked up: a clerk without the role learns nothing, not even
        // whether the card exists (404 against 403).
        struct Route {
            std::string_view method;
            std::uint8_t role;
            const char* role_name;
        };
        const Route route = seg.size() == 4        ? Route{"GET", roles::read, "read"}
                            : seg[4] == "status" ? Route{"PUT", roles::hotlist, "hotlist"}
                            : seg[4] == "token"  ? Route{"POST", roles::registry, "registry"}
                                                 : Route{"", 0, ""};
        if (route.method.empty()) return respond(error_response(404, "not_found", "no such endpoint"));
        if (request.method != route.method) return respond(error_response(405, "method_not_allowed", std::string(route.method) + " only"));
        if (!(clerk.roles & route.role)) return respond(error_response(403, "forbidden", std::string("role ") + route.role_name + " required"));
        auto number = parse_card_number(seg[3]);
        if (!number) return respond(error_response(400, "bad_request", "card number must be 16 digits"));
        auto asn = find_card(*number);
        if (!asn) return respond(storage_failure(asn.error().message));
        if (!*asn) return respond(error_response(404, "not_found", "card " + to_string(*number) + " is not registered"));
        const std::string card_text = to_string(*number);
        if (seg.size() == 4) {
            if (request.method != "GET") return respond(error_response(405, "method_not_allowed", "GET only"));
            if (!(clerk.roles & roles::read)) return respond(error_response(403, "forbidden", "role read required"));
            auto record = s.registry.card(**asn);
            // The card's first page of flags; the rest through GET /v1/clerk/risk?card=…&cursor=….
            auto flags = s.registry.risk_page("", risk_page_default, **asn);
            auto token = s.tokens.card_token(*number);
            if (!record || !*record || !flags || !token) return respond(storage_failure("registry read failed"));
            json risk = json::array();
            for (const auto& f : flags->flags) risk.push_back(risk_json(f));
            const CardRecord& c = **record;
            json out{{"card_number", card_text},
                     {"asn", bcd_to_digits(c.asn)},
                     {"status", to_string(c.status)},
                     {"shadow_balance_fen", c.shadow_balance_fen},
                     {"offline_purchases", c.offline_purchases},
                     {"risk_flag_count", c.risk_flags},
                     {"risk_flags", risk},
                     {"risk_flags_next_cursor", flags->next_cursor.empty() ? json(nullptr) : json(flags->next_cursor)},
                     {"token_issued_at", *token ? json(iso_time((*token)->issued_ns)) : json(nullptr)}};
            return journaled_read(json_response(200, out), ClerkAction{0, 0, clerk.name, "card_lookup", card_text, "ok", ""},
                                  std::move(respond));
        }
        if (seg[4] == "status") return set_status(clerk, request, **asn, card_text, std::move(respond));
        if (seg[4] == "token") return issue_token(clerk, request, *number, **asn, std::move(respond));
        respond(error_response(404, "not_found", "no such endpoint"));
    }

    // The body of a status change, {"status":"…","reason":"…"}: `status` parsed by `parse` (one of `names`),
    // the optional reason (≤ 128 characters); the 400 answer when it is not.
    template <class Status>
    static std::optional<ApiResponse> read_status_body(const ApiRequest& request, std::optional<Status> (*parse)(std::string_view),
                                                       std::initializer_list<std::string_view> names, std::optional<Status>& status,
                                                       std::string& reason) {
        std::string quoted, listed;
        for (std::string_view name : names) {
            quoted += (quoted.empty() ? "" : "|") + fmt::format("\"{}\"", name);
            listed += (listed.empty() ? "" : ", ") + std::string(name);
        }
        const json body = json::parse(request.body, nullptr, false);
        if (body.is_discarded() || !body.is_object() || !body.contains("status") || !body["status"].is_string()) {
            return error_response(400, "bad_request", "body must be {\"status\":" + quoted + ",\"reason\":\"…\"}");
        }
        status = parse(body["status"].get<std::string>());
        if (!status) return error_response(400, "bad_request", "status must be one of " + listed);
        reason = body.contains("reason") && body["reason"].is_string() ? body["reason"].get<std::string>() : "";
        if (reason.size() > name_chars_max) return error_response(400, "bad_request", "reason longer than 128 characters");
        return std::nullopt;
    }

    void set_status(const Clerk& clerk, const ApiRequest& request, const Asn& asn, const std::string& card_text, Respond respond) {
        if (request.method != "PUT") return respond(error_response(405, "method_not_allowed", "PUT only"));
        if (!(clerk.roles & roles::hotlist)) return respond(error_response(403, "forbidden", "role hotlist required"));
        std::optional<CardStatus> status;
        std::string reason;
        if (auto bad = read_status_body(request, parse_card_status, {"active", "lost", "blocked"}, status, reason)) {
            return respond(std::move(*bad));
        }
        const Registry& registry = s.registry;
        // Read-modify-write inside the writer's transaction: the engine's hooks update the same record.
        auto write = [&registry, asn, status = *status](lmdb::Txn& txn, auto, ClerkAction& action) -> lmdb::Status {
            auto stored = registry.card_in(txn, asn);
            if (!stored) return Unexpected{stored.error()};
            if (!*stored) {
                action.outcome = "card not registered";
                return Ok{};
            }
            CardRecord card = **stored;
            // The hotlist terminals download (ISO8583.md §4.6) gets its new version in the same commit.
            auto recorded = registry.record_status_change(txn, asn, card.status, status);
            if (!recorded) return Unexpected{recorded.error()};
            card.status = status;
            return registry.put_card(txn, card);
        };
        json answer{{"card_number", card_text}, {"status", to_string(*status)}};
        commit(Change{{}, write, [answer](const ClerkAction& done) { return refused_or(done, 200, answer); },
                      ClerkAction{0, 0, clerk.name, "card_status", card_text, "ok", fmt::format("{} {}", to_string(*status), reason)}},
               std::move(respond));
    }

    void issue_token(const Clerk& clerk, const ApiRequest& request, const CardNumber& number, const Asn& asn, Respond respond) {
        if (request.method != "POST") return respond(error_response(405, "method_not_allowed", "POST only"));
        if (!(clerk.roles & roles::registry)) return respond(error_response(403, "forbidden", "role registry required"));
        auto token = std::make_shared<std::string>(Tokens::new_token(card_token_prefix));
        const CardToken stored{asn, s.tokens.hash(*token), static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                                               std::chrono::system_clock::now().time_since_epoch()).count())};
        const Tokens& tokens = s.tokens;
        auto write = [&tokens, number, stored](lmdb::Txn& txn, auto, ClerkAction&) { return tokens.put_card_token(txn, number, stored); };
        const std::string card_text = to_string(number);
        // Issuing again replaces the card's token: the old one stops working (a lost phone).
        commit(Change{{}, write, [token, card_text](const ClerkAction&) { return json_response(201, json{{"card_number", card_text}, {"token", *token}}); },
                      ClerkAction{0, 0, clerk.name, "card_token", card_text, "ok", "issued (replaces any earlier token)"}},
               std::move(respond));
    }

    // ---- registrations ----

    static std::optional<std::string> only_keys(const json& body, std::initializer_list<std::string_view> keys) {
        for (const auto& [key, value] : body.items()) {
            if (std::find(keys.begin(), keys.end(), key) == keys.end()) return fmt::format("unknown field \"{}\"", key);
        }
        return std::nullopt;
    }

    void register_participant(const Clerk& clerk, const ApiRequest& request, Respond respond) {
        const json body = json::parse(request.body, nullptr, false);
        if (body.is_discarded() || !body.is_object()) return respond(error_response(400, "bad_request", "body must be a JSON object"));
        auto read = read_participant(body);  // registry_validator.hpp, as `admin load`
        if (!read) return respond(error_response(400, "bad_request", read.error()));
        const Participant p = std::move(read).value();
        std::vector<ledger::Event> events;
        append_participant_opening(events, p.id);
        const Registry& registry = s.registry;
        auto write = [&registry, p](lmdb::Txn& txn, std::span<const ledger::EventResult> results, ClerkAction& action) -> lmdb::Status {
            if (auto failed = first_failure(results)) {
                action.outcome = "payable account: " + *failed;
                return Ok{};
            }
            return registry.put_participant(txn, p);
        };
        json answer{{"id", p.id}, {"name", p.name}, {"kind", p.kind}, {"bank_account", p.bank_account}, {"fee_rate_bp", p.fee_rate_bp}};
        commit(Change{std::move(events), write, [answer](const ClerkAction& done) { return refused_or(done, 201, answer); },
                      ClerkAction{0, 0, clerk.name, "participant", std::to_string(p.id), "ok", p.kind + " " + p.name}},
               std::move(respond));
    }

    // A card with its two accounts, opening balances and its token (shown once, in the 201), in one
    // commit. Field names as in the registry file (clearing/README.md).
    void register_card(const Clerk& clerk, const ApiRequest& request, Respond respond) {
        const json body = json::parse(request.body, nullptr, false);
        if (body.is_discarded() || !body.is_object()) return respond(error_response(400, "bad_request", "body must be a JSON object"));
        auto read = read_card(body);  // registry_validator.hpp, as `admin load`
        if (!read) return respond(error_response(400, "bad_request", read.error()));
        const CardRecord card = std::move(read).value();
        const std::string asn_text = bcd_to_digits(card.asn);

        std::vector<ledger::Event> events;
        append_card_opening(events, card);

        const CardNumber number = card_number_of(card.asn);
        auto token = std::make_shared<std::string>(Tokens::new_token(card_token_prefix));
        const CardToken stored_token{card.asn, s.tokens.hash(*token), static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                                                        std::chrono::system_clock::now().time_since_epoch()).count())};
        const Registry& registry = s.registry;
        const Tokens& tokens = s.tokens;
        auto write = [&registry, &tokens, card, number, stored_token](lmdb::Txn& txn, std::span<const ledger::EventResult> results,
                                                                     ClerkAction& action) -> lmdb::Status {
            auto existing = registry.card_in(txn, card.asn);
            if (!existing) return Unexpected{existing.error()};
            auto same_number = tokens.card_token_in(txn, number);
            if (!same_number) return Unexpected{same_number.error()};
            if (*existing) {
                action.outcome = "card already registered (its accounts and balances are kept)";
            } else if (*same_number && (*same_number)->asn != card.asn) {
                action.outcome = "another card has the same card number (the ASN's rightmost 16 digits)";
            } else if (auto failed = first_failure(results)) {
                action.outcome = "ledger: " + *failed;
            }
            if (action.outcome != "ok") return Ok{};
            if (auto put = registry.put_card(txn, card); !put) return put;
            return tokens.put_card_token(txn, number, stored_token);
        };
        const std::string card_text = to_string(number);
        json answer{{"card_number", card_text}, {"asn", asn_text}, {"status", to_string(card.status)}};
        commit(Change{std::move(events), write,
                      [answer, token](const ClerkAction& done) {
                          json out = answer;
                          if (done.outcome == "ok") out["token"] = *token;
                          return refused_or(done, 201, out);
                      },
                      ClerkAction{0, 0, clerk.name, "card", card_text, "ok",
                                  fmt::format("purse {} fen, medical {} fen", card.opening_balance_fen, card.medical_opening_fen)}},
               std::move(respond));
    }

    void register_terminal(const Clerk& clerk, const ApiRequest& request, Respond respond) {
        const json body = json::parse(request.body, nullptr, false);
        if (body.is_discarded() || !body.is_object()) return respond(error_response(400, "bad_request", "body must be a JSON object"));
        auto read = read_terminal(body);  // registry_validator.hpp, as `admin load`
        if (!read) return respond(error_response(400, "bad_request", read.error()));
        const TerminalRecord t = std::move(read).value();
        const std::string psam = bcd_to_digits(t.psam_terminal_id);
        auto participant = s.registry.participant(t.participant_id);
        if (!participant) return respond(storage_failure(participant.error().message));
        if (!*participant) return respond(error_response(400, "bad_request", "participant " + std::to_string(t.participant_id) + " is not registered"));
        const Registry& registry = s.registry;
        auto write = [&registry, t](lmdb::Txn& txn, auto, ClerkAction&) -> lmdb::Status {
            auto stored = registry.terminal_in(txn, t.terminal_id);
            if (!stored) return Unexpected{stored.error()};
            TerminalRecord r = t;
            if (*stored) {  // a re-registration keeps the runtime fields (STAN, batch)
                r.last_stan = (*stored)->last_stan;
                r.batch_number = (*stored)->batch_number;
                r.uploads = (*stored)->uploads;
                r.batch_debits_count = (*stored)->batch_debits_count;
                r.batch_debits_fen = (*stored)->batch_debits_fen;
            }
            return registry.put_terminal(txn, r);
        };
        json answer{{"terminal_id", t.terminal_id}, {"psam_terminal_id", psam}, {"participant_id", t.participant_id}, {"merchant_id", t.merchant_id}};
        commit(Change{{}, write, [answer](const ClerkAction& done) { return refused_or(done, 201, answer); },
                      ClerkAction{0, 0, clerk.name, "terminal", t.terminal_id, "ok", "participant " + std::to_string(t.participant_id)}},
               std::move(respond));
    }

    // ---- settlement postings (clearing/README.md "Settlement postings") ----

    static std::optional<std::string> parse_transfer(const json& j, ledger::Transfer& t) {
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
        auto number = [&](const char* key, std::uint64_t max, auto& out) -> std::optional<std::string> {
            if (!j.contains(key)) return std::nullopt;
            if (!j[key].is_number_unsigned() || j[key].get<std::uint64_t>() > max) return fmt::format("\"{}\" must be an integer 0 to {}", key, max);
            out = static_cast<std::remove_reference_t<decltype(out)>>(j[key].get<std::uint64_t>());
            return std::nullopt;
        };
        if (auto bad = number("amount", ~std::uint64_t{0}, t.amount)) return bad;
        if (auto bad = number("ledger", 0xFFFFFFFFu, t.ledger)) return bad;
        if (auto bad = number("code", 0xFFFFu, t.code)) return bad;
        if (auto bad = number("timeout_s", 0xFFFFFFFFu, t.timeout_s)) return bad;
        if (auto bad = number("user_data_64", ~std::uint64_t{0}, t.user_data_64)) return bad;
        if (auto bad = number("user_data_32", 0xFFFFFFFFu, t.user_data_32)) return bad;
        if (j.contains("flags")) {
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
        }
        return std::nullopt;
    }

    static std::optional<std::string> parse_cycle(const json& j, CycleClaim& claim) {
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

    // POST /v1/clerk/transfers (role settlement): {"cycle":{…},"transfers":[…]}. Only the transfers the
    // daemon itself derives for that cycle's window are accepted (manual_money.hpp); anything else is
    // refused whole with 403 naming the rule, and the refusal is journaled.
    void post_transfers(const Clerk& clerk, const ApiRequest& request, Respond respond) {
        if (request.method != "POST") return respond(error_response(405, "method_not_allowed", "POST only"));
        if (!(clerk.roles & roles::settlement)) return respond(error_response(403, "forbidden", "role settlement required"));
        const json body = json::parse(request.body, nullptr, false);
        if (body.is_discarded() || !body.is_object() || !body.contains("transfers") || !body["transfers"].is_array() ||
            !body.contains("cycle") || body.size() != 2) {
            return respond(error_response(400, "bad_request", "body must be {\"cycle\":{…},\"transfers\":[…]}"));
        }
        CycleClaim claim;
        if (auto bad = parse_cycle(body["cycle"], claim)) return respond(error_response(400, "bad_request", *bad));
        const json& list = body["transfers"];
        if (list.empty() || list.size() > transfers_per_request_max) {
            return respond(error_response(400, "bad_request", fmt::format("1 to {} transfers per request", transfers_per_request_max)));
        }
        std::vector<ledger::Transfer> transfers(list.size());
        for (std::size_t i = 0; i < list.size(); ++i) {
            if (auto bad = parse_transfer(list[i], transfers[i])) return respond(error_response(400, "bad_request", fmt::format("transfers[{}]: {}", i, *bad)));
        }
        if (settlement_busy.exchange(true)) return respond(busy("another settlement request is being checked"));
        boost::asio::post(settlement_worker, [this, clerk, claim, transfers = std::move(transfers), respond = std::move(respond)]() mutable {
            auto release_and = [this, respond](ApiResponse r) {
                settlement_busy.store(false);
                respond(std::move(r));
            };
            check_and_post_settlement(clerk, claim, std::move(transfers), release_and);
        });
    }

    static ApiResponse busy(std::string_view what) {
        ApiResponse r = error_response(503, "busy", std::string(what) + "; retry shortly");
        r.headers.emplace_back("Retry-After", "1");
        return r;
    }

    // A settlement or adjustment request refused by a rule: 403 naming it, after the refusal is journaled.
    void refuse_by_rule(const Clerk& clerk, std::string action, std::string target, std::string rule, Respond respond) {
        const ApiResponse refusal = error_response(403, "forbidden", rule);
        commit(Change{{}, {}, [refusal](const ClerkAction&) { return refusal; }, ClerkAction{0, 0, clerk.name, std::move(action), std::move(target), "refused", rule}},
               std::move(respond));
    }

    // On the settlement worker, with settlement_busy held (released by `respond`).
    void check_and_post_settlement(const Clerk& clerk, const CycleClaim& claim, std::vector<ledger::Transfer> transfers, Respond respond) {
        const std::string target = fmt::format("cycle {}", claim.cycle);
        auto recorded = s.tokens.settlement_cycle(claim.cycle);
        auto latest = s.tokens.latest_settlement_cycle();
        if (!recorded || !latest) return respond(storage_failure((!recorded ? recorded.error() : latest.error()).message));
        const std::uint64_t now = clearing::detail::wall_clock_ns();
        if (auto bad = window_refusal(claim, *recorded, *latest, now, options.settlement_margin)) {
            return refuse_by_rule(clerk, "settlement", target, "settlement window rule: " + *bad, std::move(respond));
        }
        if (!settlement_cache || settlement_cache->first != claim) {
            auto computed = expected_settlement_transfers(s.ledger, s.registry, claim);
            if (!computed) {
                if (computed.error().code == ErrorCode::storage) return respond(storage_failure(computed.error().message));
                return respond(error_response(409, "conflict", computed.error().message));
            }
            settlement_cache.emplace(claim, std::make_shared<const ExpectedTransfers>(std::move(*computed)));
        }
        const ExpectedTransfers& expected = *settlement_cache->second;
        std::uint64_t total_fen = 0;
        for (std::size_t i = 0; i < transfers.size(); ++i) {
            if (auto bad = settlement_refusal(transfers[i], expected, claim.cycle)) {
                return refuse_by_rule(clerk, "settlement", target, fmt::format("settlement transfer rule: transfers[{}]: {}", i, *bad),
                                      std::move(respond));
            }
            total_fen += transfers[i].amount;
        }
        std::vector<ledger::Event> events(transfers.begin(), transfers.end());
        std::vector<ledger::Id> ids;
        for (const auto& t : transfers) ids.push_back(t.id);
        const SettlementCycle record{claim.cycle, claim.start_ns, claim.end_ns, now, clerk.name};
        const bool first_posting = !*recorded;
        const Tokens& tokens = s.tokens;
        auto action = std::make_shared<ClerkAction>(ClerkAction{0, 0, clerk.name, "settlement", target, "ok",
                                                                fmt::format("window [{}, {}) ns: {} transfers, {} fen", claim.start_ns,
                                                                            claim.end_ns, ids.size(), total_fen)});
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
            json out = json::array();
            for (std::size_t i = 0; i < ids.size(); ++i) {
                out.push_back({{"id", id_hex(ids[i])}, {"result", std::string(ledger::to_string((*reply)[i].code))}});
            }
            respond(json_response(200, json{{"results", out}}));
        };
        if (!s.writer.try_submit(std::move(events), on_commit, std::move(hook))) {
            respond(error_response(503, "busy", "the ledger writer's queue is full; retry shortly"));
        }
    }

    // ---- manual adjustments (maker-checker) ----

    static json adjustment_json(const Adjustment& a) {
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

    static std::string adjustment_summary(const Adjustment& a) {
        return fmt::format("{} fen on ledger {}: {} → {}; reason: {}", a.amount, a.ledger, id_hex(a.debit_account_id), id_hex(a.credit_account_id),
                           a.reason);
    }

    // A note or reason: 1 (or 0 when optional) to 500 characters of printable text (UTF-8 allowed).
    static std::optional<std::string> free_text(const json& body, const char* key, bool required, std::string& out) {
        if (!body.contains(key)) return required ? std::optional<std::string>(fmt::format("\"{}\" is required", key)) : std::nullopt;
        if (!body[key].is_string()) return fmt::format("\"{}\" must be a string", key);
        out = body[key].get<std::string>();
        if ((required && out.empty()) || out.size() > adjustment_text_max) return fmt::format("\"{}\" must be 1 to {} bytes", key, adjustment_text_max);
        if (std::any_of(out.begin(), out.end(), [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7F; })) {
            return fmt::format("\"{}\" must not contain control characters", key);
        }
        return std::nullopt;
    }

    // POST /v1/clerk/adjustments {"debit_account_id","credit_account_id","ledger","amount","reason"} (role
    // adjust): a proposal; nothing moves until another clerk approves it.
    void propose_adjustment(const Clerk& clerk, const ApiRequest& request, Respond respond) {
        const json body = json::parse(request.body, nullptr, false);
        if (body.is_discarded() || !body.is_object()) return respond(error_response(400, "bad_request", "body must be a JSON object"));
        std::optional<std::string> problem = only_keys(body, {"debit_account_id", "credit_account_id", "ledger", "amount", "reason"});
        Adjustment a;
        for (const auto& [key, out] : {std::pair{"debit_account_id", &a.debit_account_id}, std::pair{"credit_account_id", &a.credit_account_id}}) {
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
        if (problem) return respond(error_response(400, "bad_request", *problem));
        a.ledger = static_cast<std::uint32_t>(body["ledger"].get<std::uint64_t>());
        a.amount = body["amount"].get<std::uint64_t>();
        a.maker = clerk.name;
        auto refused = adjustment_refusal(s.ledger, a);
        if (!refused) return respond(storage_failure(refused.error().message));
        if (*refused) return refuse_by_rule(clerk, "adjustment_propose", "new", "adjustment account rule: " + **refused, std::move(respond));
        const Tokens& tokens = s.tokens;
        auto proposal = std::make_shared<Adjustment>(a);
        auto write = [proposal, &tokens](lmdb::Txn& txn, auto, ClerkAction& action) -> lmdb::Status {
            auto number = tokens.next_adjustment_number(txn);
            if (!number) return Unexpected{number.error()};
            proposal->number = *number;
            proposal->proposed_ns = clearing::detail::wall_clock_ns();
            action.target = fmt::format("adjustment {}", *number);
            return tokens.put_adjustment(txn, *proposal);
        };
        commit(Change{{}, write, [proposal](const ClerkAction&) { return json_response(201, adjustment_json(*proposal)); },
                      ClerkAction{0, 0, clerk.name, "adjustment_propose", "", "ok", adjustment_summary(a)}},
               std::move(respond));
    }

    // POST /v1/clerk/adjustments/{n}/approve|reject {"note":"…"} (role adjust). Approval by the maker is
    // refused (403); approval books the transfer and marks the proposal in the same commit.
    void decide_adjustment(const Clerk& clerk, const ApiRequest& request, std::string_view number_text, bool approve, Respond respond) {
        const auto number = parse_u64(number_text);
        if (!number || *number == 0) return respond(error_response(404, "not_found", "no such adjustment"));
        const json body = request.body.empty() ? json::object() : json::parse(request.body, nullptr, false);
        if (body.is_discarded() || !body.is_object()) return respond(error_response(400, "bad_request", "body must be a JSON object"));
        std::string note;
        std::optional<std::string> problem = only_keys(body, {"note"});
        if (!problem) problem = free_text(body, "note", false, note);
        if (problem) return respond(error_response(400, "bad_request", *problem));
        if (adjustment_busy.exchange(true)) return respond(busy("another adjustment decision is being committed"));
        auto release_and = [this, respond](ApiResponse r) {
            adjustment_busy.store(false);
            respond(std::move(r));
        };
        const std::string target = fmt::format("adjustment {}", *number);
        auto found = s.tokens.adjustment(*number);
        if (!found) return release_and(storage_failure(found.error().message));
        if (!*found) return release_and(error_response(404, "not_found", "no such adjustment"));
        Adjustment a = **found;
        if (a.status != AdjustmentStatus::proposed) {
            return release_and(error_response(409, "conflict", fmt::format("adjustment {} was {} by {} already", a.number, to_string(a.status), a.checker)));
        }
        if (approve && a.maker == clerk.name) {
            return refuse_by_rule(clerk, "adjustment_approve", target,
                                  "maker-checker rule: the clerk who proposed an adjustment cannot approve it; another clerk with the role "
                                  "adjust must",
                                  release_and);
        }
        std::vector<ledger::Event> events;
        if (approve) {
            auto refused = adjustment_refusal(s.ledger, a);
            if (!refused) return release_and(storage_failure(refused.error().message));
            if (*refused) return refuse_by_rule(clerk, "adjustment_approve", target, "adjustment account rule: " + **refused, release_and);
            events.emplace_back(adjustment_transfer_of(a));
        }
        a.status = approve ? AdjustmentStatus::approved : AdjustmentStatus::rejected;
        a.checker = clerk.name;
        a.decided_ns = clearing::detail::wall_clock_ns();
        a.note = note;
        auto decided = std::make_shared<Adjustment>(a);
        auto ledger_result = std::make_shared<std::string>();
        const Tokens& tokens = s.tokens;
        auto write = [decided, ledger_result, &tokens](lmdb::Txn& txn, std::span<const ledger::EventResult> results, ClerkAction& action) -> lmdb::Status {
            if (!results.empty() && !ledger::succeeded(results[0].code)) {  // the ledger refused: the proposal stays open
                *ledger_result = std::string(ledger::to_string(results[0].code));
                action.outcome = "refused by the ledger: " + *ledger_result;
                return Ok{};
            }
            return tokens.put_adjustment(txn, *decided);
        };
        auto answer = [decided, ledger_result](const ClerkAction&) {
            if (!ledger_result->empty()) {
                return error_response(409, "conflict", fmt::format("the ledger refused adjustment {}'s transfer: {}; it stays proposed",
                                                                   decided->number, *ledger_result));
            }
            return json_response(200, adjustment_json(*decided));
        };
        commit(Change{std::move(events), write, answer,
                      ClerkAction{0, 0, clerk.name, approve ? "adjustment_approve" : "adjustment_reject", target, "ok",
                                  adjustment_summary(a) + (note.empty() ? "" : "; note: " + note) + "; proposed by " + a.maker}},
               release_and);
    }

    // GET /v1/clerk/adjustments[?status=proposed&after=N&limit=M] and GET /v1/clerk/adjustments/{n}
    // (role adjust or read).
    void list_adjustments(const Target& target, Respond respond) {
        std::optional<AdjustmentStatus> status;
        if (auto text = target.param("status")) {
            status = parse_adjustment_status(*text);
            if (!status) return respond(error_response(400, "bad_request", "status must be proposed, approved or rejected"));
        }
        std::uint64_t after = 0;
        std::size_t limit = 100;
        if (auto bad = page_params(target, "a proposal number", after, limit)) return respond(error_response(400, "bad_request", *bad));
        auto page = s.tokens.adjustments(after, limit, status);
        if (!page) return respond(storage_failure(page.error().message));
        json items = json::array();
        for (const auto& a : *page) items.push_back(adjustment_json(a));
        respond(json_response(200, json{{"adjustments", items}}));
    }

    void adjustments(const Clerk& clerk, const ApiRequest& request, const Target& target, Respond respond) {
        const auto seg = target.segments();  // v1 clerk adjustments [n [approve|reject]]
        const bool decision = seg.size() == 5 && (seg[4] == "approve" || seg[4] == "reject");
        if (seg.size() > 5 || (seg.size() == 5 && !decision)) return respond(error_response(404, "not_found", "no such endpoint"));
        const std::string_view method = seg.size() == 4 ? "GET" : decision ? "POST" : request.method == "GET" ? "GET" : "POST";
        if (request.method != method) return respond(error_response(405, "method_not_allowed", std::string(method) + " only"));
        const std::uint8_t allowed = method == "GET" ? (roles::adjust | roles::read) : roles::adjust;
        if (!(clerk.roles & allowed)) {
            return respond(error_response(403, "forbidden", method == "GET" ? "role adjust or read required" : "role adjust required"));
        }
        if (decision) return decide_adjustment(clerk, request, seg[3], seg[4] == "approve", std::move(respond));
        if (seg.size() == 3) return method == "GET" ? list_adjustments(target, std::move(respond)) : propose_adjustment(clerk, request, std::move(respond));
        const auto number = parse_u64(seg[3]);
        auto found = number ? s.tokens.adjustment(*number) : Result<std::optional<Adjustment>>(std::optional<Adjustment>());
        if (!found) return respond(storage_failure(found.error().message));
        if (!*found) return respond(error_response(404, "not_found", "no such adjustment"));
        respond(json_response(200, adjustment_json(**found)));
    }

    // ---- clerk lists ----

    // Risk flags a page at a time (?limit=1…500, default 100; ?cursor= from the previous page's
    // next_cursor; ?card= one card's): bounded work and bytes per request however many flags exist.
    void risk(const Clerk& clerk, const Target& target, Respond respond) {
        std::optional<CardNumber> only;
        std::optional<Asn> asn;
        if (auto it = target.param("card")) {
            only = parse_card_number(*it);
            if (!only) return respond(error_response(400, "bad_request", "card must be 16 digits"));
            auto found = find_card(*only);
            if (!found) return respond(storage_failure(found.error().message));
            if (!*found) return respond(error_response(404, "not_found", "card " + to_string(*only) + " is not registered"));
            asn = **found;
        }
        std::size_t limit = risk_page_default;
        if (auto it = target.param("limit")) {
            auto value = parse_u64(*it);
            if (!value || *value == 0 || *value > Registry::risk_page_limit_max) {
                return respond(error_response(400, "bad_request", fmt::format("limit must be 1 to {}", Registry::risk_page_limit_max)));
            }
            limit = *value;
        }
        auto page = s.registry.risk_page(target.param("cursor").value_or(""), limit, asn);
        if (!page) {
            if (page.error().code == ErrorCode::bad_input) return respond(error_response(400, "bad_request", page.error().message));
            return respond(storage_failure(page.error().message));
        }
        json out = json::array();
        for (const auto& f : page->flags) out.push_back(risk_json(f));
        json body{{"risk_flags", out}, {"next_cursor", page->next_cursor.empty() ? json(nullptr) : json(page->next_cursor)}};
        journaled_read(json_response(200, body), ClerkAction{0, 0, clerk.name, "risk_list", only ? to_string(*only) : "all", "ok", ""},
                       std::move(respond));
    }

    // PUT /v1/clerk/terminals/{id}/status {"status":"active"|"suspended"|"retired","reason":"…"} (role
    // registry): a suspended or retired terminal is refused (58) on every request from the next one on.
    void set_terminal_status(const Clerk& clerk, const ApiRequest& request, const std::string& terminal_id, Respond respond) {
        if (request.method != "PUT") return respond(error_response(405, "method_not_allowed", "PUT only"));
        if (!(clerk.roles & roles::registry)) return respond(error_response(403, "forbidden", "role registry required"));
        std::optional<TerminalStatus> status;
        std::string reason;
        if (auto bad = read_status_body(request, parse_terminal_status, {"active", "suspended", "retired"}, status, reason)) {
            return respond(std::move(*bad));
        }
        auto known = s.registry.terminal(terminal_id);
        if (!known) return respond(storage_failure(known.error().message));
        if (!*known) return respond(error_response(404, "not_found", "terminal " + terminal_id + " is not registered"));
        const Registry& registry = s.registry;
        auto write = [&registry, terminal_id, status = *status](lmdb::Txn& txn, auto, ClerkAction& action) -> lmdb::Status {
            auto stored = registry.terminal_in(txn, terminal_id);
            if (!stored) return Unexpected{stored.error()};
            if (!*stored) {
                action.outcome = "terminal not registered";
                return Ok{};
            }
            TerminalRecord terminal = **stored;
            terminal.status = status;
            return registry.put_terminal(txn, terminal);
        };
        json answer{{"terminal_id", terminal_id}, {"status", to_string(*status)}};
        commit(Change{{}, write, [answer](const ClerkAction& done) { return refused_or(done, 200, answer); },
                      ClerkAction{0, 0, clerk.name, "terminal_status", terminal_id, "ok", fmt::format("{} {}", to_string(*status), reason)}},
               std::move(respond));
    }

    void suspense(const Clerk& clerk, const Target& target, Respond respond) {
        std::size_t limit = transactions_page_max;
        std::uint64_t before = ~std::uint64_t{0};
        if (auto it = target.param("limit")) {
            auto value = parse_u64(*it);
            if (!value || *value == 0 || *value > transactions_page_max) return respond(error_response(400, "bad_request", "limit must be 1 to 100"));
            limit = *value;
        }
        if (auto it = target.param("cursor")) {
            auto value = parse_u64(*it);
            if (!value) return respond(error_response(400, "bad_request", "cursor must be a next_cursor"));
            before = *value;
        }
        auto purse = s.ledger.account_transfers_before(purse_suspense_account, before, limit + 1);
        auto medical = s.ledger.account_transfers_before(medical_suspense_account, before, limit + 1);
        if (!purse || !medical) return respond(storage_failure("ledger read failed"));
        std::vector<ledger::Transfer> merged;
        std::merge(purse->begin(), purse->end(), medical->begin(), medical->end(), std::back_inserter(merged),
                   [](const auto& a, const auto& b) { return a.timestamp > b.timestamp; });
        const bool more = merged.size() > limit;
        if (more) merged.resize(limit);
        json items = json::array();
        for (const auto& t : merged) {
            const Place p = parse_place(t.user_data_128);
            items.push_back({{"id", id_hex(t.id)},
                             {"time", iso_time(t.timestamp)},
                             {"amount_fen", t.amount},
                             {"ledger", t.ledger},
                             {"debit_account_id", id_hex(t.debit_account_id)},
                             {"participant_id", t.user_data_64},
                             {"psam_terminal_id", bcd_to_digits(p.terminal_id)},
                             {"terminal_serial", t.user_data_32}});
        }
        json out{{"suspense", items}, {"next_cursor", more ? json(std::to_string(merged.back().timestamp)) : json(nullptr)}};
        journaled_read(json_response(200, out), ClerkAction{0, 0, clerk.name, "suspense_list", "", "ok", ""}, std::move(respond));
    }

    // ?after=N&limit=1…journal_page_max of a list read oldest first: what is wrong, or nullopt with the
    // values set (unchanged when absent).
    static std::optional<std::string> page_params(const Target& target, std::string_view after_is, std::uint64_t& after, std::size_t& limit) {
        if (auto text = target.param("after")) {
            auto value = parse_u64(*text);
            if (!value) return fmt::format("after must be {}", after_is);
            after = *value;
        }
        if (auto text = target.param("limit")) {
            auto value = parse_u64(*text);
            if (!value || *value == 0 || *value > journal_page_max) return fmt::format("limit must be 1 to {}", journal_page_max);
            limit = *value;
        }
        return std::nullopt;
    }

    void journal(const Target& target, Respond respond) {
        std::uint64_t after = 0;
        std::size_t limit = transactions_page_max;
        if (auto bad = page_params(target, "a sequence number", after, limit)) return respond(error_response(400, "bad_request", *bad));
        auto entries = s.tokens.journal(after, limit);
        if (!entries) return respond(storage_failure(entries.error().message));
        json items = json::array();
        for (const auto& a : *entries) {
            items.push_back({{"sequence", a.sequence}, {"time", iso_time(a.timestamp_ns)}, {"clerk", a.clerk}, {"action", a.action},
                             {"target", a.target}, {"outcome", a.outcome}, {"detail", a.detail}});
        }
        // Reading the journal is not itself journaled: it would grow with every look at it.
        respond(json_response(200, json{{"entries", items}}));
    }

    void clerk_api(const ApiRequest& request, const Target& target, Respond respond) {
        auto token = bearer_token(request.authorization);
        if (!token) return respond(unauthenticated(request, unauthorized("Authorization: Bearer <clerk token> required")));
        if (auto limited = rate_limit(s.tokens.hash(*token))) return respond(std::move(*limited));
        auto clerk = s.tokens.clerk(*token);
        if (!clerk) return respond(storage_failure(clerk.error().message));
        if (!*clerk) return respond(unauthenticated(request, unauthorized("unknown clerk token")));
        const auto seg = target.segments();  // v1 clerk …
        const std::string_view what = seg[2];
        auto need = [&](std::uint8_t role, std::string_view method) -> std::optional<ApiResponse> {
            if (request.method != method) return error_response(405, "method_not_allowed", std::string(method) + " only");
            if (!((*clerk)->roles & role)) return error_response(403, "forbidden", "this clerk lacks the role " + role_names(role).front());
            return std::nullopt;
        };
        if (what == "cards" && (seg.size() == 4 || seg.size() == 5)) return clerk_card(**clerk, request, target, std::move(respond));
        if (what == "adjustments") return adjustments(**clerk, request, target, std::move(respond));
        if (what == "terminals" && seg.size() == 5 && seg[4] == "status") {
            return set_terminal_status(**clerk, request, std::string(seg[3]), std::move(respond));
        }
        if (seg.size() != 3) return respond(error_response(404, "not_found", "no such endpoint"));
        std::optional<ApiResponse> refused;
        if (what == "transfers") return post_transfers(**clerk, request, std::move(respond));
        if (what == "participants") {
            if ((refused = need(roles::registry, "POST"))) return respond(std::move(*refused));
            return register_participant(**clerk, request, std::move(respond));
        }
        if (what == "cards") {
            if ((refused = need(roles::registry, "POST"))) return respond(std::move(*refused));
            return register_card(**clerk, request, std::move(respond));
        }
        if (what == "terminals") {
            if ((refused = need(roles::registry, "POST"))) return respond(std::move(*refused));
            return register_terminal(**clerk, request, std::move(respond));
        }
        if (what == "risk" || what == "suspense" || what == "journal") {
            if ((refused = need(roles::read, "GET"))) return respond(std::move(*refused));
            if (what == "risk") return risk(**clerk, target, std::move(respond));
            if (what == "suspense") return suspense(**clerk, target, std::move(respond));
            return journal(target, std::move(respond));
        }
        respond(error_response(404, "not_found", "no such endpoint"));
    }

    // ---- operations ----

    std::string metrics();

    // /metrics for a clerk token with the role read (Prometheus: `authorization: credentials_file`): the
    // outcome counts, suspense and risk figures are operators' business, not the public's.
    void metrics_for_clerk(const ApiRequest& request, Respond respond) {
        auto token = bearer_token(request.authorization);
        if (!token) return respond(unauthenticated(request, unauthorized("Authorization: Bearer <clerk token> with the role read required")));
        if (auto limited = rate_limit(s.tokens.hash(*token))) return respond(std::move(*limited));
        auto clerk = s.tokens.clerk(*token);
        if (!clerk) return respond(storage_failure(clerk.error().message));
        if (!*clerk) return respond(unauthenticated(request, unauthorized("unknown clerk token")));
        if (!((*clerk)->roles & roles::read)) return respond(error_response(403, "forbidden", "role read required"));
        respond(ApiResponse{200, "text/plain; version=0.0.4", metrics(), {}});
    }

    // 503 while the writer's queue is full, the ledger does not read, or storage is full (the last
    // commit failed for lack of space and none has succeeded since: WriterStats::storage_full).
    ApiResponse healthz() {
        const auto writer = s.writer.stats();
        const bool queue_ok = writer.queue_depth < ledger::writer_queue_requests_max_default;
        auto fixed = s.ledger.lookup_account(purse_float_account);
        const bool ok = queue_ok && fixed.ok() && !writer.storage_full;
        json body{{"status", ok ? "ok" : "degraded"},
                  {"ledger_readable", fixed.ok()},
                  {"storage", writer.storage_full ? "full" : "ok"},
                  {"writer_queue_depth", writer.queue_depth},
                  {"journal_sequence", s.ledger.head().sequence}};
        if (writer.storage_full) body["storage_error"] = writer.storage_error;
        return json_response(ok ? 200 : 503, body);
    }
};

Api::Api(Services services, const HttpOptions& options, HttpStats& stats)
    : state_(std::make_unique<State>(services, options, stats)) {}

Api::~Api() = default;

void Api::handle(const ApiRequest& request, Respond respond) {
    const Target target(request.target);
    if (target.too_deep()) return respond(error_response(404, "not_found", "no such endpoint"));
    const auto seg = target.segments();
    State& st = *state_;
    auto get_only = [&](auto&& make) {
        if (request.method != "GET") return respond(error_response(405, "method_not_allowed", "GET only"));
        respond(make());
    };
    if (seg.empty()) {
        return get_only([] { return ApiResponse{200, "text/html; charset=utf-8", std::string(balance_page_html()), {}}; });
    }
    if (seg.size() == 1 && seg[0] == "healthz") return get_only([&] { return st.healthz(); });
    if (seg.size() == 1 && seg[0] == "metrics") {
        if (request.method != "GET") return respond(error_response(405, "method_not_allowed", "GET only"));
        return st.metrics_for_clerk(request, std::move(respond));
    }
    if (seg.size() == 2 && seg[0] == "v1" && seg[1] == "openapi.json") {
        return get_only([] { return ApiResponse{200, "application/json", std::string(openapi_json()), {}}; });
    }
    if (seg.size() >= 3 && seg[0] == "v1" && seg[1] == "cards" && (seg.size() == 3 || (seg.size() == 4 && seg[3] == "transactions"))) {
        return st.cardholder(request, target, respond);
    }
    if (seg.size() >= 3 && seg[0] == "v1" && seg[1] == "clerk") return st.clerk_api(request, target, std::move(respond));
    respond(error_response(404, "not_found", "no such endpoint"));
}

// ---- /metrics (Prometheus text format 0.0.4) ------------------------------------------------------------------

namespace {

struct Text {
    std::string out;
    void family(std::string_view name, std::string_view type, std::string_view help) {
        out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
    }
    void sample(std::string_view name, std::uint64_t value, std::string_view labels = {}) {
        out += labels.empty() ? fmt::format("{} {}\n", name, value) : fmt::format("{}{{{}}} {}\n", name, labels, value);
    }
    void counter(std::string_view name, std::string_view help, std::uint64_t value) {
        family(name, "counter", help);
        sample(name, value);
    }
    void gauge(std::string_view name, std::string_view help, std::uint64_t value) {
        family(name, "gauge", help);
        sample(name, value);
    }
    // `counts` per bucket (not cumulative), the last one above every bound.
    template <std::size_t N, class Count>
    void histogram(std::string_view name, std::string_view help, const std::array<std::uint64_t, N>& bounds,
                   const std::array<Count, N + 1>& counts, std::uint64_t sum, double unit) {
        family(name, "histogram", help);
        std::uint64_t cumulative = 0;
        for (std::size_t i = 0; i < N; ++i) {
            cumulative += static_cast<std::uint64_t>(counts[i]);
            out += fmt::format("{}_bucket{{le=\"{:g}\"}} {}\n", name, static_cast<double>(bounds[i]) * unit, cumulative);
        }
        cumulative += static_cast<std::uint64_t>(counts[N]);
        out += fmt::format("{}_bucket{{le=\"+Inf\"}} {}\n{}_sum {}\n{}_count {}\n", name, cumulative, name,
                           static_cast<double>(sum) * unit, name, cumulative);
    }
};

}  // namespace

std::string Api::State::metrics() {
    Text t;
    std::array<std::uint64_t, latency_buckets_us.size() + 1> latency{};
    for (std::size_t i = 0; i < latency.size(); ++i) latency[i] = stats.latency_buckets[i].load(std::memory_order_relaxed);
    t.histogram("coconut_http_request_duration_seconds", "HTTP request latency (read to answer written)", latency_buckets_us, latency,
                stats.latency_us_sum.load(), 1e-6);
    t.family("coconut_http_responses_total", "counter", "HTTP responses by status class");
    for (std::size_t c = 1; c < stats.responses_by_class.size(); ++c) {
        t.sample("coconut_http_responses_total", stats.responses_by_class[c].load(), fmt::format("class=\"{}xx\"", c));
    }
    t.counter("coconut_http_rate_limited_total", "requests answered 429", stats.rate_limited.load());
    t.counter("coconut_http_connections_accepted_total", "HTTP connections accepted", stats.connections_accepted.load());
    t.counter("coconut_http_connections_refused_total", "HTTP connections refused above the limit", stats.connections_refused.load());
    t.counter("coconut_http_connections_refused_per_address_total", "HTTP connections refused above one address's share",
              stats.connections_refused_per_address.load());
    t.counter("coconut_http_accept_pauses_total", "HTTP accepts deferred: the process was out of descriptors or memory",
              stats.accept_pauses.load());
    t.gauge("coconut_http_connections_open", "HTTP connections open now", stats.connections_open.load());
    t.counter("coconut_http_timeouts_total", "HTTP connections closed by a read or write deadline", stats.timeouts.load());
    t.counter("coconut_http_tls_handshake_failures_total", "TLS handshakes that failed", stats.tls_handshake_failures.load());

    const ledger::WriterStats w = s.writer.stats();
    t.counter("coconut_ledger_commits_total", "ledger group commits", w.commits);
    t.counter("coconut_ledger_commit_failures_total", "ledger commits that failed (nothing written)", w.failed_commits);
    t.counter("coconut_ledger_requests_total", "requests committed by the ledger writer", w.requests);
    t.counter("coconut_ledger_events_total", "ledger events (accounts, transfers) applied", w.events);
    t.gauge("coconut_ledger_writer_queue_depth", "requests waiting for the ledger writer", w.queue_depth);
    t.histogram("coconut_ledger_commit_duration_seconds", "apply + durable commit of one group", ledger::commit_us_buckets,
                w.commit_us_counts, w.commit_us_sum, 1e-6);
    std::uint64_t requests_sum = w.requests;
    t.histogram("coconut_ledger_commit_requests", "requests per group commit (batch size)", ledger::commit_requests_buckets,
                w.commit_requests_counts, requests_sum, 1.0);
    t.gauge("coconut_ledger_journal_sequence", "last committed journal sequence", s.ledger.head().sequence);
    t.gauge("coconut_ledger_storage_full", "1 while the last commit failed for lack of space (disk or map full) and none succeeded since",
            w.storage_full ? 1 : 0);
    t.counter("coconut_ledger_storage_errors_total", "ledger commits that failed in storage (disk full, map full, I/O)", w.storage_errors);

    if (s.engine) {
        const EngineStats& e = *s.engine;
        t.counter("coconut_iso_requests_total", "ISO 8583 requests handled", e.requests.load());
        t.family("coconut_iso_outcomes_total", "counter", "ISO 8583 request outcomes");
        t.sample("coconut_iso_outcomes_total", e.booked.load(), "outcome=\"booked\"");
        t.sample("coconut_iso_outcomes_total", e.exists.load(), "outcome=\"exists\"");
        t.sample("coconut_iso_outcomes_total", e.suspense.load(), "outcome=\"suspense\"");
        t.sample("coconut_iso_outcomes_total", e.duplicates.load(), "outcome=\"duplicate\"");
        t.sample("coconut_iso_outcomes_total", e.refused.load(), "outcome=\"refused\"");
        t.gauge("coconut_iso_in_flight", "ISO 8583 requests handled but not yet answered", e.in_flight.load());
    }
    if (s.iso_server) {
        const ServerStats& v = *s.iso_server;
        t.counter("coconut_iso_connections_accepted_total", "terminal connections accepted", v.connections_accepted.load());
        t.counter("coconut_iso_connections_refused_total", "terminal connections refused above the limit", v.connections_refused.load());
        t.counter("coconut_iso_connections_refused_per_address_total", "terminal connections refused above one address's share",
                  v.connections_refused_per_address.load());
        t.counter("coconut_iso_connections_refused_per_terminal_total", "connections closed after the handshake: the terminal had its share",
                  v.connections_refused_per_terminal.load());
        t.counter("coconut_iso_sign_on_timeouts_total", "connections closed without a sign-on within the deadline", v.sign_on_timeouts.load());
        t.counter("coconut_iso_accept_pauses_total", "terminal accepts deferred: the process was out of descriptors or memory",
                  v.accept_pauses.load());
        t.counter("coconut_iso_format_errors_total", "frames answered 30", v.format_errors.load());
        t.counter("coconut_iso_timeouts_total", "terminal connections closed by a timeout", v.timeouts.load());
        t.family("coconut_iso_tls_handshakes_total", "counter", "terminal TLS handshakes completed");
        t.sample("coconut_iso_tls_handshakes_total", v.tls_handshakes_full.load(), "kind=\"full\"");
        t.sample("coconut_iso_tls_handshakes_total", v.tls_handshakes_resumed.load(), "kind=\"resumed\"");
        t.counter("coconut_iso_tls_handshake_failures_total",
                  "terminal connections closed in the handshake (no, unverifiable or non-terminal certificate; timeout)",
                  v.tls_handshake_failures.load());
    }
    if (s.hsm) {
        t.counter("coconut_hsm_tac_verifications_total", "TAC verifications asked of the HSM", s.hsm->calls.load());
        t.counter("coconut_hsm_tac_failures_total", "TAC verifications without a verdict (link, HSM error)", s.hsm->failures.load());
        t.family("coconut_hsm_tac_latency_seconds_total", "counter", "summed HSM verification latency");
        t.out += fmt::format("coconut_hsm_tac_latency_seconds_total {}\n", static_cast<double>(s.hsm->latency_us_sum.load()) * 1e-6);
    }
    if (s.hsm_link) {
        const hsm::LinkStats& l = *s.hsm_link;
        t.gauge("coconut_hsm_breaker_state", "the HSM link's circuit breaker: 0 closed, 1 open, 2 half-open (one probe out)",
                static_cast<std::uint64_t>(l.breaker.load()));
        t.gauge("coconut_hsm_breaker_open", "1 while the HSM link's circuit breaker is open or half-open (requests fail at once)",
                l.breaker.load() == hsm::BreakerState::closed ? 0 : 1);
        t.counter("coconut_hsm_breaker_opens_total", "times the HSM link's circuit breaker opened", l.breaker_opens.load());
        t.counter("coconut_hsm_fast_failures_total", "HSM requests failed at once because the breaker was open", l.fast_failures.load());
        t.counter("coconut_hsm_timeouts_total", "HSM requests failed by a timeout (the HSM hangs)", l.timeouts.load());
        t.counter("coconut_hsm_retries_total", "HSM requests sent again after their connection broke", l.retries.load());
        t.counter("coconut_hsm_connections_opened_total", "HSM connections opened (hello received)", l.connections_opened.load());
        t.counter("coconut_hsm_keepalives_total", "keep-alive requests sent to the HSM", l.keepalives.load());
        t.counter("coconut_hsm_probes_total", "half-open probes sent to the HSM", l.probes.load());
    }
    return std::move(t.out);
}

}  // namespace coconut::clearing::http
