// Card return and refund, broken-card refunds, tourist cards (clearing/README.md "Card return, refund and
// tourist cards") through the clerk API in process, with real 0320 uploads whose TACs the in-process HSM
// verifies: every path, every refusal with its code, the roles, the ledger's check and cards = shadows
// after each scenario.
#include "clearing_fixture.hpp"
#include "http_api.hpp"
#include "manual_money.hpp"

#include <coconut/clearing/card_returns.hpp>

#include <nlohmann/json.hpp>

#include <future>
#include <thread>

using namespace coconut;
using namespace coconut::clearing;
using namespace clearing_test;
using nlohmann::json;

namespace {

constexpr std::uint64_t desk = 4004;     // a service desk (kind counter)
constexpr std::uint64_t airport = 5005;  // an airport counter selling tourist cards (kind counter)
const std::string desk_psam = "460100000004";
const std::string airport_psam = "460100000005";
const std::string tourist_1 = "46010000000055550001";  // purse 3,000
const std::string tourist_2 = "46010000000055550002";  // purse 100
const std::string tourist_3 = "46010000000055550003";  // purse 0
const std::string broken = "46010000000033330001";     // purse 4,000
const std::string card_d = "46010000000044440001";     // purse 5,000
constexpr std::uint64_t tourist_fee_fen = 500;

std::string number(const std::string& asn) { return asn.substr(4); }

std::uint64_t wall_ns() {
    return static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch()).count());
}

struct CounterRig {
    Rig rig;
    http::HttpOptions options;
    http::HttpStats stats;
    std::unique_ptr<http::Api> api;
    std::string counter, reader, registrar, hotlister;

    CounterRig() {
        options.tourist_return_fee_fen = tourist_fee_fen;
        auto c = http::add_clerk(*rig.ledger, rig.daemon->tokens(), "desk-clerk", http::roles::counter);
        auto r = http::add_clerk(*rig.ledger, rig.daemon->tokens(), "auditor", http::roles::read);
        auto g = http::add_clerk(*rig.ledger, rig.daemon->tokens(), "registrar", http::roles::registry);
        auto h = http::add_clerk(*rig.ledger, rig.daemon->tokens(), "hotlister", http::roles::hotlist);
        REQUIRE((c.ok() && r.ok() && g.ok() && h.ok()));
        hotlister = *h;
        counter = *c;
        reader = *r;
        registrar = *g;
        http::Services services{*rig.ledger, rig.writer, *rig.registry, rig.daemon->tokens(),      nullptr, nullptr,
                                nullptr,     nullptr,    nullptr,       rig.daemon->options().data};
        services.card_returns = &rig.daemon->card_returns();
        services.lost_wait_s = 1;
        api = std::make_unique<http::Api>(services, options, stats);
        register_counters();
    }

    void register_counters() {
        for (const auto& [id, name] : {std::pair{desk, "Haikou Service Desk"}, std::pair{airport, "Meilan Airport Counter"}}) {
            REQUIRE(request("POST", "/v1/clerk/participants",
                            json{{"id", id}, {"name", name}, {"kind", "counter"}, {"bank_account", "62220000" + std::to_string(id)}}.dump(),
                            registrar)
                        .status == 201);
        }
        for (const auto& [terminal, psam, participant] :
             {std::tuple{"DESK0001", desk_psam, desk}, std::tuple{"AIRP0001", airport_psam, airport}}) {
            const auto r =
                request("POST", "/v1/clerk/terminals",
                        json{{"terminal_id", terminal}, {"psam_terminal_id", psam}, {"participant_id", participant}}.dump(), registrar);
            REQUIRE_MESSAGE(r.status == 201, r.body);
        }
        for (const auto& [asn, purse] : {std::pair{tourist_1, 3000}, std::pair{tourist_2, 100}, std::pair{tourist_3, 0},
                                         std::pair{broken, 4000}, std::pair{card_d, 5000}}) {
            const auto r = request("POST", "/v1/clerk/cards",
                                   json{{"asn", asn}, {"issuer_id", issuer_hex}, {"purse_balance_fen", purse}}.dump(), registrar);
            REQUIRE_MESSAGE(r.status == 201, r.body);
        }
        for (const char* terminal : {"BUS00001", "DESK0001", "AIRP0001"}) rig.sign_on(terminal);
    }

    http::ApiResponse request(const std::string& method, const std::string& target, const std::string& body, const std::string& token) {
        std::promise<http::ApiResponse> answered;
        const std::string authorization = "Bearer " + token;
        api->handle(http::ApiRequest{method, target, authorization, body, {}},
                    [&answered](http::ApiResponse r) { answered.set_value(std::move(r)); });
        auto future = answered.get_future();
        REQUIRE(future.wait_for(std::chrono::seconds(30)) == std::future_status::ready);
        return future.get();
    }
    http::ApiResponse post(const std::string& target, const json& body, const std::string& token = {}) {
        return request("POST", target, body.dump(), token.empty() ? counter : token);
    }

    // A purchase signed by the card, uploaded by `terminal` (whose PSAM is `psam`): its response code.
    std::string purchase(const std::string& asn, std::uint32_t amount, std::uint32_t balance_before, std::uint16_t atc,
                         const std::string& terminal, const std::string& psam, std::uint32_t serial, bool forge = false) {
        static std::uint32_t stan = 100;
        Tap tap;
        tap.asn = asn;
        tap.amount_fen = amount;
        tap.balance_before_fen = balance_before;
        tap.atc = atc;
        tap.terminal_serial = serial;
        tap.terminal = psam;
        tap.forge_tac = forge;
        return rig.code(upload_message(tap, ++stan, terminal));
    }
    ledger::Id purchase_id_of(const std::string& asn, const std::string& psam, std::uint32_t serial) {
        Tap tap;
        tap.asn = asn;
        tap.terminal = psam;
        tap.terminal_serial = serial;
        return clearing_test::purchase_id(tap);
    }

    std::int64_t refund_owed(const std::string& asn) { return rig.balance(refund_payable_account(asn_of(asn))); }
    std::int64_t deposit(const std::string& asn) { return rig.balance(card_deposit_account(asn_of(asn))); }
    std::int64_t fee_income() { return rig.balance(purse_fee_income_account); }

    // The ledger's check and the registry's (every card's shadow mirror = its ledger balance).
    void require_check() { rig.require_check(); }
};

json body_of(const http::ApiResponse& r) { return json::parse(r.body); }
std::string error_code(const http::ApiResponse& r) { return body_of(r)["error"]["code"].get<std::string>(); }

json bank(const std::string& account = "6222000099990001", const std::string& holder = "Li Lei") {
    return {{"payout", "bank"}, {"bank_account", account}, {"account_holder", holder}};
}

// The body of a broken card's refund: the bank details only (it is paid by bank).
json account(const std::string& account_number, const std::string& holder) {
    return {{"bank_account", account_number}, {"account_holder", holder}};
}

json with(json a, const json& b) {
    a.update(b);
    return a;
}

}  // namespace

TEST_CASE("a card returned by bank: the counter's whole-balance purchase, then 15 to refund_payable; the card is returned and hotlisted") {
    CounterRig c;
    REQUIRE(c.purchase(card_a, 5000, 5000, 0, "DESK0001", desk_psam, 1) == "00");
    const auto hotlist_before = c.rig.registry->hotlist_version().value();
    const auto r =
        c.post("/v1/clerk/cards/" + number(card_a) + "/return", with(bank(), {{"terminal_id", "DESK0001"}, {"terminal_serial", 1}}));
    REQUIRE_MESSAGE(r.status == 201, r.body);
    const json b = body_of(r);
    CHECK(b["status"] == "returned");
    CHECK(b["balance_fen"] == 5000);
    CHECK(b["refund_by_bank_fen"] == 5000);
    CHECK(b["purchase_id"] == http::id_hex(c.purchase_id_of(card_a, desk_psam, 1)));
    CHECK(c.refund_owed(card_a) == 5000);
    CHECK(c.rig.payable(desk) == 0);  // credited by the purchase, moved to the refund
    CHECK(c.rig.shadow(card_a) == 0);
    CHECK(c.rig.card(card_a).status == CardStatus::returned);
    CHECK(c.rig.registry->hotlist_version().value() == hotlist_before + 1);
    auto record = c.rig.daemon->card_returns().return_of(asn_of(card_a));
    REQUIRE((record.ok() && record->has_value()));
    CHECK((*record)->bank_account == "6222000099990001");
    CHECK((*record)->payout == Payout::bank);
    c.require_check();

    SUBCASE("returned twice: refused, nothing moves again") {
        const auto again =
            c.post("/v1/clerk/cards/" + number(card_a) + "/return", with(bank(), {{"terminal_id", "DESK0001"}, {"terminal_serial", 1}}));
        CHECK(again.status == 409);
        CHECK(error_code(again) == "already_returned");
        CHECK(c.refund_owed(card_a) == 5000);
        const auto cash = c.post("/v1/clerk/cards/" + number(card_a) + "/return",
                                 {{"terminal_id", "DESK0001"}, {"terminal_serial", 1}, {"payout", "cash"}});
        CHECK(error_code(cash) == "already_returned");
        CHECK(c.rig.payable(desk) == 0);
        // The hotlist clerk cannot bring a returned card back.
        const auto active = c.request("PUT", "/v1/clerk/cards/" + number(card_a) + "/status", R"({"status":"active"})", c.hotlister);
        CHECK(active.status == 409);
        CHECK(active.body.find("was returned") != std::string::npos);
        CHECK(c.rig.card(card_a).status == CardStatus::returned);
        // Nor set a card returned without the counter's return.
        const auto set = c.request("PUT", "/v1/clerk/cards/" + number(card_b) + "/status", R"({"status":"returned"})", c.hotlister);
        CHECK(set.status == 400);
        CHECK(c.rig.card(card_b).status == CardStatus::active);
        auto journal = c.rig.daemon->tokens().journal(0, 1000).value();
        std::size_t refused = 0, returned = 0;
        for (const auto& a : journal) {
            if (a.action != "card_return") continue;
            CHECK(a.clerk == "desk-clerk");
            (a.outcome == "ok" ? returned : refused) += 1;
        }
        CHECK(returned == 1);
        CHECK(refused == 2);
        c.require_check();
    }
}

TEST_CASE("a card returned for cash: the counter's payable keeps the purchase (it paid the balance over the desk)") {
    CounterRig c;
    REQUIRE(c.purchase(card_b, 1000, 1000, 0, "DESK0001", desk_psam, 7) == "00");
    const auto r =
        c.post("/v1/clerk/cards/" + number(card_b) + "/return",
               {{"terminal_id", "DESK0001"}, {"purchase_id", http::id_hex(c.purchase_id_of(card_b, desk_psam, 7))}, {"payout", "cash"}});
    REQUIRE_MESSAGE(r.status == 201, r.body);
    CHECK(body_of(r)["paid_cash_fen"] == 1000);
    CHECK(c.rig.payable(desk) == 1000);
    CHECK(c.refund_owed(card_b) == 0);
    CHECK(c.rig.card(card_b).status == CardStatus::returned);
    c.require_check();
}

TEST_CASE(
    "a return is refused unless it names a booked TAC-proven purchase of this card by this counter's terminal that took the whole balance") {
    CounterRig c;
    REQUIRE(c.purchase(card_a, 5000, 5000, 0, "DESK0001", desk_psam, 1) == "00");
    REQUIRE(c.purchase(card_b, 300, 1000, 0, "DESK0001", desk_psam, 2) == "00");  // a partial debit
    REQUIRE(c.purchase(card_d, 5000, 5000, 0, "BUS00001", psam_terminal, 1) == "00");
    REQUIRE(c.purchase(card_b, 700, 700, 1, "DESK0001", desk_psam, 3, true) == "59");  // forged: never booked
    const std::string b_return = "/v1/clerk/cards/" + number(card_b) + "/return";
    auto refused = [&](const std::string& target, const json& body) {
        const auto r = c.post(target, body);
        CHECK(r.status == 409);
        return error_code(r);
    };
    CHECK(refused(b_return, {{"terminal_id", "DESK0001"},
                             {"purchase_id", http::id_hex(c.purchase_id_of(card_a, desk_psam, 1))},
                             {"payout", "cash"}}) == "purchase_of_another_card");
    CHECK(refused(b_return, {{"terminal_id", "DESK0001"}, {"terminal_serial", 2}, {"payout", "cash"}}) == "partial_debit");
    CHECK(refused(b_return, {{"terminal_id", "DESK0001"}, {"terminal_serial", 99}, {"payout", "cash"}}) == "purchase_not_booked");
    // The card spent more than its cleared shadow (money the clearing has not cleared yet): not returned now.
    REQUIRE(c.purchase(tourist_2, 150, 150, 0, "DESK0001", desk_psam, 4) == "00");
    CHECK(refused("/v1/clerk/cards/" + number(tourist_2) + "/return",
                  {{"terminal_id", "DESK0001"}, {"terminal_serial", 4}, {"payout", "cash"}}) == "balance_not_cleared");
    CHECK(refused(b_return, {{"terminal_id", "DESK0001"}, {"terminal_serial", 3}, {"payout", "cash"}}) == "purchase_not_booked");
    const std::string d_return = "/v1/clerk/cards/" + number(card_d) + "/return";
    CHECK(refused(d_return, {{"terminal_id", "DESK0001"},
                             {"purchase_id", http::id_hex(c.purchase_id_of(card_d, psam_terminal, 1))},
                             {"payout", "cash"}}) == "purchase_of_another_terminal");
    CHECK(refused(d_return, {{"terminal_id", "BUS00001"}, {"terminal_serial", 1}, {"payout", "cash"}}) == "not_a_counter_terminal");
    CHECK(refused(d_return, {{"terminal_id", "NOSUCH01"}, {"terminal_serial", 1}, {"payout", "cash"}}) == "unknown_terminal");

    // Malformed requests: 400 naming what is wrong.
    const auto no_account = c.post(b_return, {{"terminal_id", "DESK0001"}, {"terminal_serial", 2}, {"payout", "bank"}});
    CHECK(no_account.status == 400);
    CHECK(no_account.body.find("bank_account") != std::string::npos);
    CHECK(c.post(b_return, {{"terminal_id", "DESK0001"}, {"terminal_serial", 2}, {"purchase_id", "00"}, {"payout", "cash"}}).status == 400);
    CHECK(c.post(b_return, {{"terminal_id", "DESK0001"}, {"terminal_serial", 2}, {"payout", "cheque"}}).status == 400);
    CHECK(c.post(b_return, with(bank(), {{"terminal_id", "DESK0001"}, {"terminal_serial", 2}, {"bank_account", ""}})).status == 400);
    CHECK(c.post("/v1/clerk/cards/0000000099999999/return", {{"terminal_id", "DESK0001"}, {"terminal_serial", 1}, {"payout", "cash"}})
              .status == 404);

    // Nothing moved, nothing changed status.
    CHECK(c.rig.card(card_b).status == CardStatus::active);
    CHECK(c.rig.card(card_d).status == CardStatus::active);
    CHECK(c.rig.payable(desk) == 5300 + 150);
    c.require_check();
}

TEST_CASE("a clerk without the counter role gets 403 on the counter's writes; the dormancy report takes read or counter") {
    CounterRig c;
    const std::string card_target = "/v1/clerk/cards/" + number(card_a);
    for (const auto& [target, body] :
         {std::pair{card_target + "/return", json{{"terminal_id", "DESK0001"}, {"terminal_serial", 1}, {"payout", "cash"}}},
          std::pair{card_target + "/refund-broken", account("6222000099990001", "Li Lei")},
          std::pair{std::string("/v1/clerk/tourist-cards"),
                    json{{"card_number", number(tourist_1)}, {"seller_id", airport}, {"deposit_fen", 100}}}}) {
        for (const std::string& token : {c.reader, c.registrar}) {
            const auto r = c.post(target, body, token);
            CHECK(r.status == 403);
            CHECK(r.body.find("role counter required") != std::string::npos);
        }
    }
    CHECK(c.request("GET", "/v1/clerk/reports/dormant", "", c.reader).status == 200);
    CHECK(c.request("GET", "/v1/clerk/reports/dormant", "", c.counter).status == 200);
    CHECK(c.request("GET", "/v1/clerk/reports/dormant", "", c.registrar).status == 403);
    CHECK(c.rig.card(card_a).status == CardStatus::active);
    c.require_check();
}

TEST_CASE("tourist cards: sold with a deposit, returned with deposit and balance less the fee; a fee above deposit + balance is capped") {
    CounterRig c;
    const auto sold =
        c.post("/v1/clerk/tourist-cards", {{"card_number", number(tourist_1)}, {"seller_id", airport}, {"deposit_fen", 2000}});
    REQUIRE_MESSAGE(sold.status == 201, sold.body);
    CHECK(c.rig.payable(airport) == -2000);  // the counter collected the deposit in cash
    CHECK(c.deposit(tourist_1) == 2000);
    const auto twice =
        c.post("/v1/clerk/tourist-cards", {{"card_number", number(tourist_1)}, {"seller_id", airport}, {"deposit_fen", 2000}});
    CHECK(error_code(twice) == "already_sold");
    const auto bus =
        c.post("/v1/clerk/tourist-cards", {{"card_number", number(tourist_2)}, {"seller_id", bus_operator}, {"deposit_fen", 200}});
    CHECK(error_code(bus) == "not_a_counter");
    CHECK(c.post("/v1/clerk/tourist-cards", {{"card_number", number(tourist_2)}, {"seller_id", airport}, {"deposit_fen", 0}}).status ==
          400);
    REQUIRE(c.post("/v1/clerk/tourist-cards", {{"card_number", number(tourist_2)}, {"seller_id", airport}, {"deposit_fen", 200}}).status ==
            201);
    c.require_check();

    // At departure, by bank: balance 3,000 + deposit 2,000 − fee 500 (taken from the deposit).
    REQUIRE(c.purchase(tourist_1, 3000, 3000, 0, "AIRP0001", airport_psam, 1) == "00");
    const auto t1 = c.post("/v1/clerk/cards/" + number(tourist_1) + "/return",
                           with(bank("DE89370400440532013000", "Anna Tourist"), {{"terminal_id", "AIRP0001"}, {"terminal_serial", 1}}));
    REQUIRE_MESSAGE(t1.status == 201, t1.body);
    CHECK(body_of(t1)["tourist"] == true);
    CHECK(body_of(t1)["fee_fen"] == 500);
    CHECK(body_of(t1)["refund_by_bank_fen"] == 4500);
    CHECK(c.refund_owed(tourist_1) == 4500);
    CHECK(c.deposit(tourist_1) == 0);
    CHECK(c.fee_income() == 500);
    CHECK(c.rig.payable(airport) == -2000 - 200);  // +3,000 purchase, −3,000 to the refund
    c.require_check();

    // Fee 500 above deposit 200 + balance 100: capped at 300 (the cardholder never owes at the counter).
    REQUIRE(c.purchase(tourist_2, 100, 100, 0, "AIRP0001", airport_psam, 2) == "00");
    const auto t2 = c.post("/v1/clerk/cards/" + number(tourist_2) + "/return",
                           {{"terminal_id", "AIRP0001"}, {"terminal_serial", 2}, {"payout", "cash"}});
    REQUIRE_MESSAGE(t2.status == 201, t2.body);
    CHECK(body_of(t2)["fee_fen"] == 300);
    CHECK(body_of(t2)["paid_cash_fen"] == 0);
    CHECK(c.deposit(tourist_2) == 0);
    CHECK(c.fee_income() == 800);
    CHECK(c.rig.payable(airport) == -2200);  // +100 purchase, −100 fee share of the balance
    auto tourist = c.rig.daemon->card_returns().tourist_of(asn_of(tourist_2));
    REQUIRE((tourist.ok() && tourist->has_value()));
    CHECK((*tourist)->returned_ns != 0);
    CHECK((*tourist)->fee_fen == 300);
    c.require_check();

    CHECK(return_fee_split(100, 200, 500).charged() == 300);
    CHECK(return_fee_split(3000, 2000, 500).from_deposit == 500);
    CHECK(return_fee_split(3000, 200, 500).from_balance == 300);
}

TEST_CASE("an empty card is returned with no purchase named (its deposit back); a card holding money is refused without one") {
    CounterRig c;
    REQUIRE(c.post("/v1/clerk/tourist-cards", {{"card_number", number(tourist_3)}, {"seller_id", airport}, {"deposit_fen", 2000}}).status ==
            201);
    const json no_purchase = {{"terminal_id", "AIRP0001"}, {"payout", "cash"}};
    const auto full = c.post("/v1/clerk/cards/" + number(card_d) + "/return", no_purchase);
    CHECK(full.status == 409);
    CHECK(error_code(full) == "not_empty");  // 5,000 fen cleared: the counter's purchase must take them first
    CHECK(c.rig.card(card_d).status == CardStatus::active);

    const auto empty = c.post("/v1/clerk/cards/" + number(tourist_3) + "/return", no_purchase);
    REQUIRE_MESSAGE(empty.status == 201, empty.body);
    CHECK(body_of(empty)["paid_cash_fen"] == 1500);  // deposit 2,000 − fee 500
    CHECK_FALSE(body_of(empty).contains("purchase_id"));
    CHECK(c.deposit(tourist_3) == 0);
    CHECK(c.rig.payable(airport) == -2000 + 1500);  // the deposit collected, then paid back less the fee
    CHECK(c.rig.card(tourist_3).status == CardStatus::returned);
    CHECK(error_code(c.post("/v1/clerk/cards/" + number(tourist_3) + "/return", no_purchase)) == "already_returned");
    c.require_check();
}

TEST_CASE("a broken card: hotlisted at once, late uploads booked meanwhile, refunded from its shadow after the wait, once") {
    CounterRig c;
    CHECK(c.post("/v1/clerk/cards/" + number(broken) + "/refund-broken", json::object()).status == 400);  // by bank only
    const auto first = c.post("/v1/clerk/cards/" + number(broken) + "/refund-broken", account("6222000099990004", "Han Meimei"));
    REQUIRE_MESSAGE(first.status == 202, first.body);
    CHECK(body_of(first)["state"] == "waiting");
    CHECK(c.rig.card(broken).status == CardStatus::returned);
    // What the card still paid offline arrives within the wait: booked as any purchase (flagged), it reduces the refund.
    REQUIRE(c.purchase(broken, 500, 4000, 0, "BUS00001", psam_terminal, 11) == "00");
    CHECK(c.rig.flags_of(RiskKind::hotlisted_card_used) == 1);
    const auto waiting = c.post("/v1/clerk/cards/" + number(broken) + "/refund-broken", account("6222000099990004", "Han Meimei"));
    CHECK(waiting.status == 202);
    CHECK(c.refund_owed(broken) == 0);
    auto listed = dormant_report(*c.rig.ledger, *c.rig.registry, c.rig.daemon->card_returns(), wall_ns());
    REQUIRE(listed.ok());
    REQUIRE(listed->size() == 1);
    CHECK(listed->front().what == "broken_waiting");
    CHECK(listed->front().balance_fen == 3500);
    c.require_check();

    std::this_thread::sleep_for(std::chrono::milliseconds(1100));
    const auto refunded = c.post("/v1/clerk/cards/" + number(broken) + "/refund-broken", account("6222000099990004", "Han Meimei"));
    REQUIRE_MESSAGE(refunded.status == 200, refunded.body);
    CHECK(body_of(refunded)["state"] == "refunded");
    CHECK(body_of(refunded)["refund_by_bank_fen"] == 3500);
    CHECK(c.refund_owed(broken) == 3500);
    CHECK(c.rig.shadow(broken) == 0);
    CHECK(c.rig.card(broken).shadow_balance_fen == 0);
    c.require_check();

    const auto again = c.post("/v1/clerk/cards/" + number(broken) + "/refund-broken", account("6222000099990004", "Han Meimei"));
    CHECK(again.status == 200);
    CHECK(c.refund_owed(broken) == 3500);
    // An upload arriving after the refund is still booked (the card paid): the shadow goes below zero, flagged.
    REQUIRE(c.purchase(broken, 200, 3500, 1, "BUS00001", psam_terminal, 12) == "00");
    CHECK(c.rig.shadow(broken) == -200);
    CHECK(c.rig.flags_of(RiskKind::shadow_negative) == 1);
    CHECK(c.refund_owed(broken) == 3500);
    const auto at_counter =
        c.post("/v1/clerk/cards/" + number(broken) + "/return", {{"terminal_id", "DESK0001"}, {"terminal_serial", 1}, {"payout", "cash"}});
    CHECK(error_code(at_counter) == "already_returned");
    c.require_check();
}

TEST_CASE("a card reported lost is not returned until found; a replaced card is neither returned nor refunded as broken") {
    CounterRig c;
    REQUIRE(c.purchase(card_d, 5000, 5000, 0, "DESK0001", desk_psam, 1) == "00");
    const auto lost = c.request("PUT", "/v1/clerk/cards/" + number(card_d) + "/status", json{{"status", "lost"}}.dump(), c.hotlister);
    REQUIRE_MESSAGE(lost.status == 200, lost.body);
    const json by_cash = {{"terminal_id", "DESK0001"}, {"terminal_serial", 1}, {"payout", "cash"}};
    const auto refused = c.post("/v1/clerk/cards/" + number(card_d) + "/return", by_cash);
    CHECK(refused.status == 409);
    CHECK(error_code(refused) == "card_reported_lost");
    CHECK(c.rig.card(card_d).status == CardStatus::lost);

    {  // the card replaced meanwhile (the replacement itself: test_card_lifecycle.cpp)
        auto txn = lmdb::Txn::begin(c.rig.ledger->env(), lmdb::Txn::Mode::read_write);
        REQUIRE(txn.ok());
        CardRecord card = c.rig.card(card_d);
        card.status = CardStatus::replaced;
        REQUIRE(c.rig.registry->put_card(*txn, card).ok());
        REQUIRE(txn->commit().ok());
    }
    const auto returned = c.post("/v1/clerk/cards/" + number(card_d) + "/return", by_cash);
    CHECK(returned.status == 409);
    CHECK(error_code(returned) == "card_replaced");
    const auto broken = c.post("/v1/clerk/cards/" + number(card_d) + "/refund-broken", account("6222000099990009", "Zhao Lei"));
    CHECK(broken.status == 409);
    CHECK(error_code(broken) == "card_replaced");
    CHECK(c.rig.card(card_d).status == CardStatus::replaced);
    CHECK_FALSE(c.rig.ledger->lookup_account(refund_payable_account(asn_of(card_d))).value().has_value());  // nothing owed
    c.require_check();
}

TEST_CASE("the dormancy report lists tourist cards still out and refunds not yet paid, never forfeited") {
    CounterRig c;
    REQUIRE(c.post("/v1/clerk/tourist-cards", {{"card_number", number(tourist_3)}, {"seller_id", airport}, {"deposit_fen", 1000}}).status ==
            201);
    REQUIRE(c.purchase(card_a, 5000, 5000, 0, "DESK0001", desk_psam, 1) == "00");
    REQUIRE(c.post("/v1/clerk/cards/" + number(card_a) + "/return", with(bank(), {{"terminal_id", "DESK0001"}, {"terminal_serial", 1}}))
                .status == 201);
    const auto r = c.request("GET", "/v1/clerk/reports/dormant", "", c.reader);
    REQUIRE_MESSAGE(r.status == 200, r.body);
    const json b = body_of(r);
    REQUIRE(b["count"] == 2);
    std::map<std::string, json> by_card;
    for (const auto& row : b["cards"]) by_card[row["card_number"].get<std::string>()] = row;
    CHECK(by_card[number(tourist_3)]["what"] == "tourist");
    CHECK(by_card[number(tourist_3)]["deposit_fen"] == 1000);
    CHECK(by_card[number(card_a)]["what"] == "refund_unpaid");
    CHECK(by_card[number(card_a)]["refund_fen"] == 5000);
    CHECK(c.request("GET", "/v1/clerk/reports/dormant?min_days=1", "", c.reader).body.find("\"count\":0") != std::string::npos);
    CHECK(c.request("GET", "/v1/clerk/reports/dormant?min_days=x", "", c.reader).status == 400);

    auto rows = dormant_report(*c.rig.ledger, *c.rig.registry, c.rig.daemon->card_returns(), wall_ns());
    REQUIRE(rows.ok());
    const std::string csv = dormant_csv(*rows);
    CHECK(csv.rfind("card_number,asn,what,status,balance_fen,deposit_fen,refund_fen,last_activity_utc,days_dormant\n", 0) == 0);
    CHECK(csv.find(number(tourist_3) + "," + tourist_3 + ",tourist,active,0,1000,0,") != std::string::npos);
    CHECK(std::count(csv.begin(), csv.end(), '\n') == 3);
    c.require_check();
}

TEST_CASE("the settlement role may post a refund payout (code 16) only as the daemon computes it from the cycle's window") {
    CounterRig c;
    REQUIRE(c.purchase(card_a, 5000, 5000, 0, "DESK0001", desk_psam, 1) == "00");
    REQUIRE(c.post("/v1/clerk/cards/" + number(card_a) + "/return", with(bank(), {{"terminal_id", "DESK0001"}, {"terminal_serial", 1}}))
                .status == 201);
    constexpr std::uint32_t cycle = 20270115;
    const http::CycleClaim claim{cycle, 0, c.rig.clock_ns->load() + 1'000'000'000'000ULL};
    auto expected = http::expected_settlement_transfers(*c.rig.ledger, *c.rig.registry, claim);
    REQUIRE_MESSAGE(expected.ok(), (expected.ok() ? "" : expected.error().message));
    const ledger::Transfer* refund = nullptr;
    for (const auto& [id, t] : *expected) {
        if (t.code == transfer_codes::refund_payout) refund = &t;
    }
    REQUIRE(refund != nullptr);
    CHECK(refund->id == refund_payout_transfer(cycle, asn_of(card_a)));
    CHECK(refund->amount == 5000);
    CHECK(refund->debit_account_id == refund_payable_account(asn_of(card_a)));
    CHECK_FALSE(http::settlement_refusal(*refund, *expected, cycle));
    ledger::Transfer more = *refund;
    more.amount = 6000;
    const auto too_much = http::settlement_refusal(more, *expected, cycle);
    REQUIRE(too_much);
    CHECK(too_much->find("card 0000000012345678's refund") != std::string::npos);
    ledger::Transfer other = *refund;
    other.id = refund_payout_transfer(cycle, asn_of(card_b));  // a card owed nothing
    other.debit_account_id = refund_payable_account(asn_of(card_b));
    const auto unknown = http::settlement_refusal(other, *expected, cycle);
    REQUIRE(unknown);
    CHECK(unknown->find("is none of cycle 20270115's settlement transfers") != std::string::npos);
    c.require_check();
}

TEST_CASE("two returns of one card at once: one is booked, the other refused (busy or returned twice); the money moves once") {
    CounterRig c;
    REQUIRE(c.purchase(card_a, 5000, 5000, 0, "DESK0001", desk_psam, 1) == "00");
    const std::string target = "/v1/clerk/cards/" + number(card_a) + "/return";
    const std::string body = with(bank(), {{"terminal_id", "DESK0001"}, {"terminal_serial", 1}}).dump();
    const std::string authorization = "Bearer " + c.counter;
    std::vector<std::promise<http::ApiResponse>> answers(4);
    std::vector<std::thread> threads;
    for (auto& answer : answers) {
        threads.emplace_back([&c, &answer, &target, &body, &authorization] {
            c.api->handle(http::ApiRequest{"POST", target, authorization, body, {}},
                          [&answer](http::ApiResponse r) { answer.set_value(std::move(r)); });
        });
    }
    for (auto& t : threads) t.join();
    std::size_t booked = 0;
    for (auto& answer : answers) {
        auto future = answer.get_future();
        REQUIRE(future.wait_for(std::chrono::seconds(30)) == std::future_status::ready);
        const http::ApiResponse r = future.get();
        if (r.status == 201) {
            ++booked;
        } else {
            CHECK((r.status == 503 || error_code(r) == "already_returned"));
        }
    }
    CHECK(booked == 1);
    CHECK(c.refund_owed(card_a) == 5000);
    CHECK(c.rig.payable(desk) == 0);
    c.require_check();
}

// Found by fuzz_clearing_http (fuzz/regressions/fuzz_clearing_http/terminal-status-not-utf8): a path segment
// that is not UTF-8 echoed in a not-found message made the JSON serializer throw (the daemon terminated).
TEST_CASE("bytes that are not UTF-8 in a path are answered and journaled as U+FFFD, not a crash") {
    CounterRig c;
    const std::string target = "/v1/clerk/terminals/SHOP" + std::string(8, '\xFB') + "0042/status";
    const auto answer = c.request("PUT", target, R"({"status":"suspended"})", c.registrar);
    CHECK(answer.status == 404);
    const json body = json::parse(answer.body);  // valid JSON, valid UTF-8
    CHECK(body["error"]["code"] == "not_found");
    CHECK(body["error"]["message"].get<std::string>().find("\xEF\xBF\xBD") != std::string::npos);
    const auto card = c.post("/v1/clerk/cards/" + std::string(16, '\xFB') + "/return", json::object());
    CHECK(card.status == 400);
    c.require_check();
}
