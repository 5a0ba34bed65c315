// Same-day refunds end to end through the daemon's engine (in-process HSM, ISO 8583 messages as the terminal
// sends them, ISO8583.md §4.10): a clinic visit paid by both accounts, refunded whole — the medical part by
// 0200 200030, the purse part by a 200000 credit (0200 then 0220) — and a shop purchase refunded in cash. Then
// what the cardholder, the money check and settlement make of them: one history row per payment marked
// refunded, the posted parts adding up to the balances; `check` clean; settlement nets lowered by the
// refunds, the cycle summing to zero.
#include "clearing_fixture.hpp"
#include "http_api.hpp"
#include "online_fixture.hpp"

#include <coconut/settlement/settlement.hpp>

#include <nlohmann/json.hpp>

#include <future>
#include <limits>

using namespace clearing_test;

namespace {

constexpr std::uint64_t shop = 2002;
const std::string shop_psam_terminal = "460100000002";

// A purse purchase uploaded by `terminal_id`, its 0320 naming the visit `visit` (DF11) when given.
Tap paid(Rig& rig, const std::string& terminal_id, const std::string& psam, std::uint32_t amount_fen, std::uint16_t atc, std::uint32_t stan,
         std::optional<iso8583::VisitReference> visit = std::nullopt) {
    Tap tap;
    tap.type = crypto::type_ep_purchase;
    tap.amount_fen = amount_fen;
    tap.atc = atc;
    tap.terminal = psam;
    Message m = upload_message(tap, stan, terminal_id);
    auto t = parse_purse_transaction(*m.get(62));
    REQUIRE(t.ok());
    t->visit = visit;
    m.set(62, encode_purse_transaction(*t));
    REQUIRE(rig.code(m) == "00");
    return tap;
}

nlohmann::json history_of(Rig& rig) {
    http::HttpOptions options;
    http::HttpStats stats;
    http::Services services{*rig.ledger, rig.writer, *rig.registry, rig.daemon->tokens(),      nullptr, nullptr,
                            nullptr,     nullptr,    nullptr,       rig.daemon->options().data};
    http::Api api(services, options, stats);
    const auto call = [&](const std::string& method, const std::string& target, const std::string& token) {
        std::promise<http::ApiResponse> answered;
        api.handle(http::ApiRequest{method, target, "Bearer " + token, {}, {}},
                   [&answered](http::ApiResponse r) { answered.set_value(std::move(r)); });
        auto future = answered.get_future();
        REQUIRE(future.wait_for(std::chrono::seconds(30)) == std::future_status::ready);
        return future.get();
    };
    static int clerks = 0;
    auto clerk = http::add_clerk(*rig.ledger, rig.daemon->tokens(), "registrar" + std::to_string(++clerks), http::roles::registry);
    REQUIRE(clerk.ok());
    const auto issued = call("POST", "/v1/clerk/cards/" + card_a.substr(4) + "/token", *clerk);
    REQUIRE(issued.status == 201);
    const auto token = nlohmann::json::parse(issued.body)["token"].get<std::string>();
    const auto answer = call("GET", "/v1/cards/" + card_a.substr(4) + "/history", token);
    REQUIRE_MESSAGE(answer.status == 200, answer.body);
    return nlohmann::json::parse(answer.body)["rows"];
}

std::int64_t posted(const nlohmann::json& rows, const std::string& account) {
    std::int64_t sum = 0;
    for (const auto& row : rows) {
        for (const auto& p : row["parts"]) {
            if (p["account"] == account && p["state"] == "posted") sum += p["amount_fen"].get<std::int64_t>();
        }
    }
    return sum;
}

const settlement::ParticipantPosition& position_of(const settlement::Positions& p, std::uint64_t id) {
    for (const auto& x : p.participants) {
        if (x.participant.id == id) return x;
    }
    FAIL("participant " << id << " has no position");
    std::abort();
}

}  // namespace

TEST_CASE("a visit refunded whole and a purchase refunded in cash, through the engine: history, check and settlement agree") {
    Rig rig;
    rig.sign_on("CLINIC01");
    rig.sign_on("SHOP0001");
    // The visit: 80.00 held, the purse pays 10.00 (DF11), the hold completed for 65.00. A shop purchase of 7.00.
    REQUIRE(rig.code(clinic_authorization(rig, 8000, 1)) == "00");
    const Tap purse_part = paid(rig, "CLINIC01", clinic_psam_terminal, 1000, 0, 2, iso8583::VisitReference{1, 1});
    REQUIRE(rig.code(clinic_completion(6500, 3, 1)) == "00");
    const Tap at_shop = paid(rig, "SHOP0001", shop_psam_terminal, 700, 1, 4);
    REQUIRE(rig.shadow(card_a) == 5000 - 1000 - 700);
    REQUIRE(rig.medical(card_a) == 20000 - 6500);

    // The refunds: the medical part, the purse part by a credit (0200 approved, then its 0220), the shop's in cash.
    REQUIRE(rig.code(medical_refund(6500, 5, 1)) == "00");
    Load credit;
    credit.processing = "200000";
    credit.amount_fen = 1000;
    credit.old_balance_fen = 3300;
    credit.terminal = clinic_psam_terminal;
    credit.refund_of = reference_of(purse_part);
    REQUIRE(rig.code(load_request(credit, 6, "CLINIC01")) == "00");
    auto rows = history_of(rig);
    REQUIRE(rows.size() == 4);  // the shop purchase, the visit, the two opening balances
    CHECK(rows[1]["kind"] == "clinic_visit");
    CHECK(rows[1]["state"] == "refund_pending");
    REQUIRE(rig.code(load_confirmation(credit, 7, "CLINIC01")) == "00");
    Message cash = online_message("0220", "200000", 700, 8, card_a, "SHOP0001");
    cash.set(62, iso8583::encode_cash_refund({asn_of(card_a), reference_of(at_shop)}));
    REQUIRE(rig.code(cash) == "00");
    CHECK(rig.shadow(card_a) == 5000 - 700);
    CHECK(rig.medical(card_a) == 20000);
    CHECK(rig.payable(clinic) == 0);
    CHECK(rig.medical_payable(clinic) == 0);
    CHECK(rig.payable(shop) == 700);  // the shop gave the cash from its till: settlement pays it the purchase

    rows = history_of(rig);
    REQUIRE(rows.size() == 4);
    CHECK(rows[0]["kind"] == "shop");
    CHECK(rows[0]["state"] == "refunded");
    CHECK(rows[0]["refund"] == nlohmann::json{{"purse_fen", 700}, {"purse_to", "cash"}});
    CHECK(rows[0]["amount_fen"] == -700);
    const auto& visit = rows[1];
    CHECK(visit["state"] == "refunded");
    CHECK(visit["refund"] == nlohmann::json{{"medical_fen", 6500}, {"purse_fen", 1000}, {"purse_to", "card"}});
    CHECK(visit["amount_fen"] == 0);
    CHECK(posted(rows, "purse") == rig.shadow(card_a));
    CHECK(posted(rows, "medical") == rig.medical(card_a));
    rig.require_check();  // the refunds give back what was paid, to whom it was paid

    auto participants = rig.registry->participants();
    REQUIRE(participants.ok());
    auto positions = settlement::compute_positions(*rig.ledger, *participants, 20270115,
                                                   settlement::Window{0, std::numeric_limits<std::uint64_t>::max()});
    REQUIRE_MESSAGE(positions.ok(), (positions.ok() ? "" : positions.error().message));
    CHECK(positions->balance_fen() == 0);
    const auto& c = position_of(*positions, clinic);
    CHECK(c.purse.base_fen == 1000);
    CHECK(c.purse.refunds_fen == 1000);
    CHECK(c.purse.net_fen == 0);
    CHECK(c.medical.base_fen == 6500);
    CHECK(c.medical.refunds_fen == 6500);
    CHECK(c.medical.net_fen == 0);
    const auto& s = position_of(*positions, shop);
    CHECK(s.purse.refunds_fen == 0);  // in cash: no money through the clearing
    CHECK(s.purse.net_fen == 700);
    CHECK(positions->funding.purse_float_fen == -700);
    CHECK(positions->funding.medical_fund_fen == 0);
    const auto transfers = settlement::settlement_transfers(*positions);
    REQUIRE(transfers.size() == 1);  // the shop's payout; the clinic has nothing left to be paid
    CHECK(transfers[0].user_data_64 == shop);
    CHECK(transfers[0].amount == 700);
}
