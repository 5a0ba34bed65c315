// Same-day refunds (ISO8583.md §4.10) in the cardholder's history (GET /v1/cards/{n}/history, clearing/README.md
// "HTTP API") and in `check`, with the transfers booked directly as the clearing books them: a visit's medical
// part back by code 21, a purchase back by a code 22 credit (pending, posted, voided, booked late) or in cash.
// A refund is shown in the row of the payment it refunds, never twice: the posted parts of all rows add up
// to the card's posted balances.
#include "clearing_fixture.hpp"
#include "http_api.hpp"

#include <coconut/clearing/check.hpp>

#include <nlohmann/json.hpp>

#include <future>

using namespace clearing_test;

namespace {

constexpr std::uint64_t shop = 2002;

std::optional<TerminalId> terminal_id_of(const std::string& digits) {
    TerminalId id{};
    const auto bcd = digits_to_bcd(digits);
    if (!bcd || bcd->size() != id.size()) return std::nullopt;
    std::copy(bcd->begin(), bcd->end(), id.begin());
    return id;
}

struct History {
    Rig rig;
    http::HttpOptions options;
    http::HttpStats stats;
    std::unique_ptr<http::Api> api;
    std::string card_token;
    const Asn asn = asn_of(card_a);
    std::uint32_t serial = 1;

    History() {
        http::Services services{*rig.ledger, rig.writer, *rig.registry, rig.daemon->tokens(),      nullptr, nullptr,
                                nullptr,     nullptr,    nullptr,       rig.daemon->options().data};
        api = std::make_unique<http::Api>(services, options, stats);
        auto clerk = http::add_clerk(*rig.ledger, rig.daemon->tokens(), "registrar", http::roles::registry);
        REQUIRE(clerk.ok());
        const auto issued = call("/v1/clerk/cards/" + card_a.substr(4) + "/token", *clerk);
        REQUIRE(issued.status == 201);
        card_token = nlohmann::json::parse(issued.body)["token"].get<std::string>();
    }

    http::ApiResponse call(const std::string& target, const std::string& token, const std::string& method = "POST") {
        std::promise<http::ApiResponse> answered;
        api->handle(http::ApiRequest{method, target, "Bearer " + token, {}, {}},
                    [&answered](http::ApiResponse r) { answered.set_value(std::move(r)); });
        auto future = answered.get_future();
        REQUIRE(future.wait_for(std::chrono::seconds(30)) == std::future_status::ready);
        return future.get();
    }
    nlohmann::json get(const std::string& what, const std::string& query = "") {
        const auto answer = call("/v1/cards/" + card_a.substr(4) + "/" + what + query, card_token, "GET");
        REQUIRE_MESSAGE(answer.status == 200, answer.body);
        return nlohmann::json::parse(answer.body);
    }

    void book(const ledger::Transfer& t) {
        auto reply = rig.writer->submit(std::vector<ledger::Event>{t}).get();
        REQUIRE(reply.ok());
        REQUIRE_MESSAGE((*reply)[0].code == ledger::ResultCode::ok, ledger::to_string((*reply)[0].code));
    }
    template <class F>
    void registry_write(F&& write) {
        auto txn = lmdb::Txn::begin(rig.ledger->env(), lmdb::Txn::Mode::read_write);
        REQUIRE(txn.ok());
        write(*txn);
        REQUIRE(txn->commit().ok());
    }

    static ledger::Transfer transfer(const ledger::Id& id, const ledger::Id& debit, const ledger::Id& credit, std::uint64_t fen,
                                     std::uint32_t ledger_number, std::uint16_t code, std::uint64_t participant) {
        ledger::Transfer t;
        t.id = id;
        t.debit_account_id = debit;
        t.credit_account_id = credit;
        t.amount = fen;
        t.ledger = ledger_number;
        t.code = code;
        t.user_data_64 = participant;
        return t;
    }
    static ledger::Transfer resolution(const ledger::Id& pending, Resolution how) {
        ledger::Transfer t;
        t.id = resolving_transfer(pending, how);
        t.pending_id = pending;
        t.amount = how == Resolution::post ? ledger::amount_max : 0;
        t.flags = how == Resolution::post ? ledger::transfer_flags::post_pending : ledger::transfer_flags::void_pending;
        return t;
    }

    ledger::Id purchase(std::uint64_t participant, std::uint64_t fen) {
        const ledger::Id id = offline_purchase_transfer(asn, *terminal_id_of(clinic_psam_terminal), serial++);
        book(transfer(id, purse_shadow_account(asn), payable_account(participant, ledgers::purse), fen, ledgers::purse,
                      transfer_codes::offline_purchase, participant));
        return id;
    }
    // A clinic visit: the medical hold completed for `medical_fen`, its purse part `purse_fen` linked (DF11).
    std::pair<ledger::Id, ledger::Id> visit(std::uint32_t stan, std::uint64_t medical_fen, std::uint64_t purse_fen) {
        const ledger::Id hold = clinic_hold_transfer("CLINIC01", 1, stan);
        ledger::Transfer t = transfer(hold, medical_account(asn), payable_account(clinic, ledgers::medical), medical_fen, ledgers::medical,
                                      transfer_codes::clinic_medical, clinic);
        t.flags = ledger::transfer_flags::pending;
        book(t);
        registry_write([&](lmdb::Txn& txn) { REQUIRE(rig.registry->put_hold(txn, hold, HoldRecord{{}, medical_fen, asn}).ok()); });
        const ledger::Id purse = purchase(clinic, purse_fen);
        registry_write([&](lmdb::Txn& txn) { REQUIRE(rig.registry->put_visit(txn, hold, purse).ok()); });
        book(resolution(hold, Resolution::post));
        return {hold, purse};
    }
    void medical_refund(const ledger::Id& hold, std::uint64_t fen) {
        ledger::Transfer t = transfer(medical_refund_transfer(hold), payable_account(clinic, ledgers::medical), medical_account(asn), fen,
                                      ledgers::medical, transfer_codes::medical_refund, clinic);
        t.user_data_128 = hold;
        book(t);
    }
    // A refund credit of `purchase` (pending, as at the 0200), recorded in the visits table with its load attempt.
    ledger::Id refund_credit(const ledger::Id& purchase, std::uint64_t participant, std::uint64_t fen, std::uint16_t online_atc) {
        const ledger::Id id = online_load_transfer(asn, online_atc);
        ledger::Transfer t = transfer(id, payable_account(participant, ledgers::purse), purse_shadow_account(asn), fen, ledgers::purse,
                                      transfer_codes::purchase_refund, participant);
        t.flags = ledger::transfer_flags::pending;
        book(t);
        registry_write([&](lmdb::Txn& txn) {
            REQUIRE(rig.registry->put_load_attempt(txn, asn, online_atc, LoadAttempt{0, ledger::Id{}, fen, "CLINIC01"}).ok());
            REQUIRE(rig.registry->put_purchase_refund(txn, purchase, id).ok());
        });
        return id;
    }
    void cash_refund(const ledger::Id& purchase) {
        registry_write([&](lmdb::Txn& txn) { REQUIRE(rig.registry->put_purchase_refund(txn, purchase, ledger::Id{}).ok()); });
    }

    std::vector<std::string> refund_problems() {
        auto report = check(*rig.ledger, *rig.registry);
        REQUIRE(report.ok());
        std::vector<std::string> found;
        for (const auto& p : report->problems) {
            if (p.find("refund") != std::string::npos) found.push_back(p);
        }
        return found;
    }
};

// The parts in state posted of every row, per account: what the card's posted balances must be.
std::map<std::string, std::int64_t> posted_parts(const nlohmann::json& rows) {
    std::map<std::string, std::int64_t> sums;
    for (const auto& row : rows) {
        for (const auto& p : row["parts"]) {
            if (p["state"] == "posted") sums[p["account"].get<std::string>()] += p["amount_fen"].get<std::int64_t>();
        }
    }
    return sums;
}

}  // namespace

TEST_CASE("history: a refunded visit is one row marked refunded, its refund credit pending first; nothing counted twice") {
    History h;
    const auto [hold, purse] = h.visit(1, 8000, 1000);
    h.medical_refund(hold, 8000);
    const ledger::Id credit = h.refund_credit(purse, clinic, 1000, 5);

    auto rows = h.get("history")["rows"];
    REQUIRE(rows.size() == 3);  // the visit and the two opening balances: the refunds are in the visit's row
    auto visit = rows[0];
    CHECK(visit["kind"] == "clinic_visit");
    CHECK(visit["state"] == "refund_pending");
    CHECK(visit["refund"] == nlohmann::json{{"medical_fen", 8000}, {"purse_fen", 1000}, {"purse_to", "card"}});
    REQUIRE(visit["parts"].size() == 4);
    CHECK(visit["parts"][2] == nlohmann::json{{"account", "medical"}, {"amount_fen", 8000}, {"state", "posted"}, {"refund", true}});
    CHECK(visit["parts"][3] == nlohmann::json{{"account", "purse"}, {"amount_fen", 1000}, {"state", "pending"}, {"refund", true}});
    CHECK(visit["amount_fen"] == 0);
    auto sums = posted_parts(rows);
    CHECK(sums["medical"] == h.rig.medical(card_a));
    CHECK(sums["purse"] == h.rig.shadow(card_a));
    CHECK(h.rig.medical(card_a) == 20000);  // back where it was

    h.book(History::resolution(credit, Resolution::post));  // the 0220
    rows = h.get("history")["rows"];
    REQUIRE(rows.size() == 3);
    visit = rows[0];
    CHECK(visit["state"] == "refunded");
    CHECK(visit["parts"][3]["state"] == "posted");
    sums = posted_parts(rows);
    CHECK(sums["purse"] == h.rig.shadow(card_a));
    CHECK(h.rig.shadow(card_a) == 5000);
    // Pages of one row: the visit's six transfers fold into one row, never an empty page.
    const auto first = h.get("history", "?limit=1");
    REQUIRE(first["rows"].size() == 1);
    CHECK(first["rows"][0]["id"] == visit["id"]);
    // The transfers list names both as refunds.
    const auto items = h.get("transactions")["transactions"];
    std::size_t refunds = 0;
    for (const auto& item : items) refunds += item["kind"] == "refund" ? 1 : 0;
    CHECK(refunds == 3);  // the medical refund, the credit and its posting
    CHECK(h.refund_problems().empty());
}

TEST_CASE("history: a purchase no visit links shows its refund on its own row — by credit, in cash, voided, booked late") {
    History h;
    const ledger::Id cash = h.purchase(clinic, 500);
    h.cash_refund(cash);
    const ledger::Id voided = h.purchase(shop, 700);
    h.book(History::resolution(h.refund_credit(voided, shop, 700, 6), Resolution::void_hold));
    const ledger::Id late = h.purchase(shop, 300);
    const ledger::Id late_credit = h.refund_credit(late, shop, 300, 7);
    h.book(History::resolution(late_credit, Resolution::void_hold));
    h.book(History::transfer(resolving_transfer(late_credit, Resolution::late_load), payable_account(shop, ledgers::purse),
                             purse_shadow_account(h.asn), 300, ledgers::purse, transfer_codes::purchase_refund, shop));
    const auto [hold, purse] = h.visit(2, 4000, 600);
    h.medical_refund(hold, 4000);  // the purse part not (yet) refunded

    const auto page = h.get("history");
    const auto& rows = page["rows"];
    REQUIRE(rows.size() == 7);  // visit, late refund, three purchases, two opening balances
    CHECK(rows[0]["kind"] == "clinic_visit");
    CHECK(rows[0]["state"] == "partly_refunded");
    CHECK(rows[0]["refund"] == nlohmann::json{{"medical_fen", 4000}});
    CHECK(rows[0]["amount_fen"] == -600);
    // The late booking: a row of its own (it cannot name its credit); its purchase says refunded.
    CHECK(rows[1]["kind"] == "refund");
    CHECK(rows[1]["amount_fen"] == 300);
    CHECK(rows[1]["state"] == "posted");
    CHECK(rows[2]["kind"] == "shop");
    CHECK(rows[2]["state"] == "refunded");
    CHECK(rows[2]["refund"] == nlohmann::json{{"purse_fen", 300}, {"purse_to", "card"}, {"purse_booked_late", true}});
    CHECK(rows[2]["parts"][1] == nlohmann::json{{"account", "purse"}, {"amount_fen", 0}, {"state", "reversed"}, {"refund", true}});
    CHECK(rows[2]["amount_fen"] == -300);
    // Voided: not refunded (it may be refunded again); the credit shows reversed.
    CHECK(rows[3]["kind"] == "shop");
    CHECK(rows[3]["state"] == "posted");
    CHECK_FALSE(rows[3].contains("refund"));
    CHECK(rows[3]["parts"][1]["state"] == "reversed");
    // In cash: the card keeps what it paid; the row says refunded in cash.
    CHECK(rows[4]["kind"] == "clinic");
    CHECK(rows[4]["state"] == "refunded");
    CHECK(rows[4]["refund"] == nlohmann::json{{"purse_fen", 500}, {"purse_to", "cash"}});
    CHECK(rows[4]["amount_fen"] == -500);
    CHECK(rows[4]["parts"].size() == 1);
    const auto sums = posted_parts(rows);
    CHECK(sums.at("purse") == h.rig.shadow(card_a));
    CHECK(sums.at("medical") == h.rig.medical(card_a));
    // Pages of one row: the same rows, each once.
    std::vector<std::string> ids;
    std::string cursor;
    for (int pages = 0; pages < 10; ++pages) {
        const auto one = h.get("history", "?limit=1" + (cursor.empty() ? "" : "&cursor=" + cursor));
        REQUIRE(one["rows"].size() == 1);
        ids.push_back(one["rows"][0]["id"].get<std::string>());
        if (one["next_cursor"].is_null()) break;
        cursor = one["next_cursor"].get<std::string>();
    }
    REQUIRE(ids.size() == rows.size());
    for (std::size_t i = 0; i < ids.size(); ++i) CHECK(ids[i] == rows[i]["id"]);
    CHECK(h.refund_problems().empty());
}

TEST_CASE("check: a refund not giving back what was paid, to whom it was paid, is a problem") {
    History h;
    const auto [hold, purse] = h.visit(1, 8000, 1000);
    h.medical_refund(hold, 7000);  // not the completed amount
    const ledger::Id other = h.purchase(clinic, 400);
    h.refund_credit(other, shop, 400, 9);  // from the shop's payable: the clinic was paid
    const auto problems = h.refund_problems();
    REQUIRE(problems.size() == 2);
    CHECK(problems[0].find("does not give back purchase") != std::string::npos);
    CHECK(problems[1].find("medical refund") != std::string::npos);
}
