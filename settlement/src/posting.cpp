// The settlement transfers and the two ways to book them: through the daemon's clerk API (the
// production path: one writer) or directly into a ledger no daemon serves (tests, recovery).
#include "clerk_http.hpp"
#include "internal.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <cerrno>
#include <cstring>
#include <thread>

namespace coconut::settlement {

namespace {

namespace codes = clearing::transfer_codes;
using nlohmann::json;

// The clerk API answers within one group commit; a daemon that does not answer in this long is
// treated as unreachable (the run fails with `posting` and can be repeated).
constexpr std::chrono::seconds http_timeout{30};
// A response body above this is not the clerk API's answer to ≤ 1000 transfers.
constexpr std::size_t response_bytes_max = 1 << 20;

ledger::Transfer make_transfer(std::uint32_t cycle, std::uint64_t participant_id, std::uint32_t ledger_number, std::uint16_t code,
                               std::uint64_t amount_fen) {
    ledger::Transfer t;
    t.id = settlement_transfer_id(cycle, participant_id, ledger_number, code);
    t.debit_account_id = clearing::payable_account(participant_id, ledger_number);
    if (code == codes::settlement_fee) {
        t.credit_account_id =
            ledger_number == clearing::ledgers::purse ? clearing::purse_fee_income_account : clearing::medical_fee_income_account;
    } else {
        t.credit_account_id = ledger_number == clearing::ledgers::purse ? clearing::purse_float_account : clearing::medical_fund_account;
    }
    t.amount = amount_fen;
    t.ledger = ledger_number;
    t.code = code;
    t.flags = ledger::transfer_flags::linked;
    // coconut/clearing/plan.hpp: settlement transfers carry the cycle id (YYYYMMDD, BE u32) in user_data_128 bytes 0–3.
    t.user_data_128 = ledger::Id{std::uint64_t{cycle} << 32, 0};
    t.user_data_64 = participant_id;
    return t;
}

// ---- direct -----------------------------------------------------------------------------------------

class DirectPoster final : public Poster {
public:
    explicit DirectPoster(ledger::Ledger& ledger) : ledger_(ledger) {}

    Result<std::vector<std::string>> post(const CycleWindow&, const std::vector<ledger::Transfer>& transfers) override {
        COCONUT_ASSERT(transfers.size() <= post_request_transfers_max);
        const std::vector<ledger::Event> events(transfers.begin(), transfers.end());
        auto results = ledger_.apply(events);
        if (!results) return Unexpected{Error{ErrorCode::storage, results.error().message}};
        std::vector<std::string> names;
        for (const auto& r : *results) names.emplace_back(ledger::to_string(r.code));
        return names;
    }

private:
    ledger::Ledger& ledger_;
};

// ---- HTTP -------------------------------------------------------------------------------------------

std::string id_hex(const ledger::Id& id) { return fmt::format("{:016x}{:016x}", id.high, id.low); }

json transfer_json(const ledger::Transfer& t) {
    json flags = json::array();
    if ((t.flags & ledger::transfer_flags::linked) != 0) flags.push_back("linked");
    return json{{"id", id_hex(t.id)},
                {"debit_account_id", id_hex(t.debit_account_id)},
                {"credit_account_id", id_hex(t.credit_account_id)},
                {"amount", t.amount},
                {"ledger", t.ledger},
                {"code", t.code},
                {"flags", flags},
                {"user_data_128", id_hex(t.user_data_128)},
                {"user_data_64", t.user_data_64},
                {"user_data_32", t.user_data_32}};
}

class HttpPoster final : public Poster {
public:
    HttpPoster(std::unique_ptr<ClerkConnection> connection, std::string token)
        : connection_(std::move(connection)), token_(std::move(token)) {}

    Result<std::vector<std::string>> post(const CycleWindow& cycle, const std::vector<ledger::Transfer>& transfers) override {
        json body = {{"cycle", {{"id", cycle.cycle}, {"window_start_ns", cycle.window.start_ns}, {"window_end_ns", cycle.window.end_ns}}},
                     {"transfers", json::array()}};
        for (const auto& t : transfers) body["transfers"].push_back(transfer_json(t));
        auto response = connection_->post_json("/v1/clerk/transfers", token_, body.dump(), http_timeout, response_bytes_max);
        if (!response) return Unexpected{response.error()};
        if (response->status != 200) {
            return Unexpected{Error{ErrorCode::posting, fmt::format("POST /v1/clerk/transfers answered {}: {}", response->status,
                                                                    response->body.substr(0, 500))}};
        }
        return parse_results(response->body, transfers);
    }

private:
    static Result<std::vector<std::string>> parse_results(const std::string& body, const std::vector<ledger::Transfer>& transfers) {
        const json answer = json::parse(body, nullptr, false);
        if (answer.is_discarded() || !answer.contains("results") || !answer["results"].is_array() ||
            answer["results"].size() != transfers.size()) {
            return Unexpected{Error{ErrorCode::posting, "POST /v1/clerk/transfers: the answer is not one result per transfer"}};
        }
        std::vector<std::string> names;
        for (std::size_t i = 0; i < transfers.size(); ++i) {
            const json& r = answer["results"][i];
            if (!r.contains("id") || !r["id"].is_string() || r["id"].get<std::string>() != id_hex(transfers[i].id) ||
                !r.contains("result") || !r["result"].is_string()) {
                return Unexpected{Error{ErrorCode::posting, fmt::format("POST /v1/clerk/transfers: result {} does not name transfer {}", i,
                                                                        id_hex(transfers[i].id))}};
            }
            names.push_back(r["result"].get<std::string>());
        }
        return names;
    }

    std::unique_ptr<ClerkConnection> connection_;
    std::string token_;
};

}  // namespace

ledger::Id settlement_transfer_id(std::uint32_t cycle, std::uint64_t participant_id, std::uint32_t ledger_number, std::uint16_t code) {
    static constexpr std::string_view domain = "settlement";
    Bytes material(domain.begin(), domain.end());
    append_be(material, cycle, 4);
    append_be(material, participant_id, 8);
    append_be(material, ledger_number, 4);
    append_be(material, code, 2);
    return ledger::derive_id(material);
}

std::vector<ledger::Transfer> settlement_transfers(const Positions& positions) {
    std::vector<ledger::Transfer> out;
    for (const auto& p : positions.participants) {
        const std::size_t chain_start = out.size();
        const std::uint64_t id = p.participant.id;
        for (auto [ledger_number, amounts] :
             {std::pair{clearing::ledgers::purse, &p.purse}, std::pair{clearing::ledgers::medical, &p.medical}}) {
            if (amounts->fee_fen > 0)
                out.push_back(make_transfer(positions.cycle, id, ledger_number, codes::settlement_fee, amounts->fee_fen));
            // fee ≤ base − refunds (rate ≤ 100 %); refunds above the base, or adjustments, may take the payout below
            // zero: then the payable keeps what the participant owes (collected like loads) and nothing is paid out.
            const std::int64_t payout = static_cast<std::int64_t>(amounts->base_fen) - static_cast<std::int64_t>(amounts->refunds_fen) -
                                        static_cast<std::int64_t>(amounts->fee_fen) + amounts->adjustments_fen + amounts->counter_fen;
            if (payout > 0) {
                out.push_back(
                    make_transfer(positions.cycle, id, ledger_number, codes::settlement_payout, static_cast<std::uint64_t>(payout)));
            }
        }
        if (out.size() > chain_start) out.back().flags &= static_cast<std::uint16_t>(~ledger::transfer_flags::linked);  // closes the chain
    }
    // Refunds by bank: each its own transfer, so a refund is paid once whatever else the cycle posts.
    for (const Refund& r : positions.refunds) {
        ledger::Transfer t;
        t.id = clearing::refund_payout_transfer(positions.cycle, r.asn);
        t.debit_account_id = clearing::refund_payable_account(r.asn);
        t.credit_account_id = clearing::purse_float_account;
        t.amount = r.amount_fen;
        t.ledger = clearing::ledgers::purse;
        t.code = codes::refund_payout;
        t.user_data_128 = clearing::card_user_data(r.asn, positions.cycle);
        out.push_back(t);
    }
    return out;
}

Result<PostOutcome> post_all(Poster& poster, const CycleWindow& cycle, const std::vector<ledger::Transfer>& transfers) {
    PostOutcome outcome;
    std::size_t start = 0;
    while (start < transfers.size()) {
        // Take whole chains (a chain ends at a transfer without `linked`) up to the request limit.
        std::size_t end = start;
        std::size_t cut = start;
        while (end < transfers.size() && end - start < post_request_transfers_max) {
            ++end;
            if ((transfers[end - 1].flags & ledger::transfer_flags::linked) == 0) cut = end;
        }
        COCONUT_ASSERT(cut > start);  // a chain has at most 4 transfers
        const std::vector<ledger::Transfer> request(transfers.begin() + static_cast<std::ptrdiff_t>(start),
                                                    transfers.begin() + static_cast<std::ptrdiff_t>(cut));
        COCONUT_TRY(results, poster.post(cycle, request));
        for (std::size_t i = 0; i < results.size(); ++i) {
            if (results[i] == "ok") {
                ++outcome.created;
            } else if (results[i] == "exists") {
                ++outcome.existed;
            } else {
                return Unexpected{Error{ErrorCode::posting, fmt::format("settlement transfer {} (participant {}, code {}) was refused: {}",
                                                                        ledger::to_string(request[i].id), request[i].user_data_64,
                                                                        request[i].code, results[i])}};
            }
        }
        start = cut;
    }
    return outcome;
}

std::unique_ptr<Poster> make_direct_poster(ledger::Ledger& ledger) { return std::make_unique<DirectPoster>(ledger); }

Result<std::unique_ptr<Poster>> make_http_poster(std::string_view endpoint, std::string token, const std::filesystem::path& ca_file) {
    COCONUT_TRY(parsed, parse_clerk_endpoint(endpoint));
    if (token.empty()) return Unexpected{Error{ErrorCode::bad_input, "the clerk token is empty"}};
    COCONUT_TRY(connection, ClerkConnection::create(std::move(parsed), ca_file));
    return std::unique_ptr<Poster>(std::make_unique<HttpPoster>(std::move(connection), std::move(token)));
}

// ---- settling on a standby ----------------------------------------------------------------------------

namespace {

Result<std::uint64_t> daemon_position(ClerkConnection& connection, const std::string& token) {
    COCONUT_TRY(answer, connection.get("/v1/clerk/cluster/position", token, std::chrono::seconds(30), 64 * 1024));
    const auto body = nlohmann::json::parse(answer.body, nullptr, false);
    if (answer.status != 200) {
        std::string message = answer.body;
        if (body.is_object() && body.contains("error") && body["error"].is_object()) message = body["error"].value("message", message);
        return Unexpected{Error{ErrorCode::posting, fmt::format("the daemon's position: answered {}: {}", answer.status, message)}};
    }
    if (!body.is_object() || !body.contains("position") || !body["position"].is_number_unsigned())
        return Unexpected{Error{ErrorCode::posting, "the daemon's position: not a position answer: " + answer.body}};
    return body["position"].get<std::uint64_t>();
}

}  // namespace

Status check_settlement_token(std::string_view endpoint, const std::string& token, const std::filesystem::path& ca_file) {
    COCONUT_TRY(parsed, parse_clerk_endpoint(endpoint));
    COCONUT_TRY(connection, ClerkConnection::create(std::move(parsed), ca_file));
    COCONUT_TRY(answer, connection->get("/v1/clerk/me", token, std::chrono::seconds(30), 64 * 1024));
    const auto body = nlohmann::json::parse(answer.body, nullptr, false);
    if (answer.status == 401 || answer.status == 403) {
        std::string message = answer.body;
        if (body.is_object() && body.contains("error") && body["error"].is_object()) message = body["error"].value("message", message);
        return Unexpected{Error{ErrorCode::refused, fmt::format("the daemon refused the clerk token ({}: {}): check --token-file or "
                                                                "$COCONUT_CLERK_TOKEN; nothing was written",
                                                                answer.status, message)}};
    }
    if (answer.status != 200 || !body.is_object() || !body.contains("roles") || !body["roles"].is_array())
        return Unexpected{Error{ErrorCode::posting, fmt::format("the daemon's answer about the token: {} {}", answer.status, answer.body)}};
    for (const auto& role : body["roles"]) {
        if (role.is_string() && role.get<std::string>() == "settlement") return Ok{};
    }
    return Unexpected{Error{ErrorCode::refused, fmt::format("the clerk token is {}'s, whose roles ({}) do not include settlement: "
                                                            "nothing was written",
                                                            body.value("name", std::string("?")), body["roles"].dump())}};
}

Result<CaughtUp> wait_for_daemon_position(const ledger::Ledger& ledger, std::string_view endpoint, const std::string& token,
                                          const std::filesystem::path& ca_file, std::chrono::seconds bound) {
    COCONUT_TRY(parsed, parse_clerk_endpoint(endpoint));
    COCONUT_TRY(connection, ClerkConnection::create(std::move(parsed), ca_file));
    CaughtUp caught;
    COCONUT_TRY(target, daemon_position(*connection, token));
    caught.daemon_position = target;
    const auto start = std::chrono::steady_clock::now();
    for (;;) {
        auto here = ledger.replicated_position();
        if (!here) return Unexpected{Error{ErrorCode::storage, "the ledger's stream position: " + here.error().message}};
        caught.ledger_position = *here;
        caught.waited = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
        if (*here >= target) return caught;
        if (caught.waited >= bound)
            return Unexpected{Error{ErrorCode::behind, fmt::format("the ledger read holds stream position {}, the daemon held {} when the "
                                                                   "run started; not reached within {} s (is the standby applying?)",
                                                                   *here, target, bound.count())}};
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
}

// ---- the daemon's directory lock ----------------------------------------------------------------------

Result<clearing::DirectoryLock> lock_for_direct_posting(const std::filesystem::path& directory) {
    // While we hold it no daemon can start on the directory, and if a daemon holds it we must not write.
    auto lock = clearing::DirectoryLock::acquire(directory);
    if (lock) return std::move(lock).value();
    if (!lock.error().held) return Unexpected{Error{ErrorCode::storage, lock.error().message}};
    return Unexpected{Error{ErrorCode::locked, fmt::format("{} is served by a running coconut-clearingd: post through it "
                                                           "(--clearingd http://HOST:PORT) instead of directly",
                                                           directory.string())}};
}

}  // namespace coconut::settlement
