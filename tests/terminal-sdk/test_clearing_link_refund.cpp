// The same-day refund of a clinic payment (Terminal::clinic_refund, clearing/ISO8583.md §4.10) against the
// real clearing engine: the clinic's terminal CLINIC01 with its PSAM and card A (purse 50.00, medical account
// 200.00 CNY) pays a visit from the medical account, the purse and cash, then refunds it — to the card or in
// cash. Every scenario ends with check() (ledger invariants, cards = shadows) and the card's own balance
// equal to its shadow.
#include "link_rig.hpp"

using namespace clearing_test;
using namespace link_test;
namespace sdk = coconut::sdk;

namespace {

constexpr std::int64_t purse_fen = 5000;
constexpr std::int64_t medical_fen = 20000;
constexpr std::uint32_t cash_fen = 300;

struct ClinicRig : LinkRig {
    ClinicRig() : LinkRig(1, "CLINIC01", clinic_psam_terminal) {}

    // The medical account, the whole purse and 3.00 CNY in cash.
    sdk::ClinicOutcome pay_visit() {
        sdk::ClinicOptions options;
        options.pin = [] { return std::optional<std::string>("123456"); };
        auto paid = terminal->clinic_payment(static_cast<std::uint32_t>(medical_fen + purse_fen) + cash_fen, options, *client);
        REQUIRE_MESSAGE(paid.ok(), (paid.ok() ? "" : paid.error().message));
        REQUIRE(paid->medical_fen == medical_fen);
        REQUIRE(paid->purse_fen == purse_fen);
        REQUIRE(paid->cash_fen == cash_fen);
        REQUIRE(paid->completion_code == "00");
        REQUIRE(paid->purse_uploaded);
        REQUIRE(card_balance() == 0);
        REQUIRE(clearing.medical(card_a) == 0);
        return *paid;
    }

    coconut::Result<sdk::ClinicRefundOutcome, sdk::FlowError> refund(const sdk::ClinicOutcome& paid,
                                                                     sdk::PurseRefund purse = sdk::PurseRefund::card) {
        return terminal->clinic_refund({paid.refund_reference, purse}, *client);
    }

    void require_balanced_books() {
        CHECK(clearing.shadow(card_a) == card_balance());
        clearing.require_check();
        auto reconciled = client->reconcile();
        REQUIRE_MESSAGE(reconciled.ok(), (reconciled.ok() ? "" : reconciled.error().message));
        CHECK_MESSAGE(reconciled->balanced, "0510 answered 95, host net " << reconciled->host_net);
    }
};

void require_refunded(const coconut::Result<sdk::ClinicRefundOutcome, sdk::FlowError>& refunded) {
    REQUIRE_MESSAGE(refunded.ok(), (refunded.ok() ? "" : refunded.error().message));
    CHECK_FALSE(refunded->incomplete);
    CHECK(refunded->medical_code == "00");
    CHECK(refunded->medical_fen == medical_fen);
    CHECK(refunded->purse_fen == purse_fen);
}

}  // namespace

TEST_CASE("clinic refund to the card: the medical account and the card back the same day, shadow = card, 0500 balanced") {
    ClinicRig rig;
    const sdk::ClinicOutcome paid = rig.pay_visit();
    auto refunded = rig.refund(paid);
    require_refunded(refunded);
    REQUIRE(refunded->credit);
    CHECK(refunded->credit->confirmed);
    CHECK(refunded->cash_fen == cash_fen);
    CHECK(rig.card_balance() == purse_fen);
    CHECK(rig.clearing.shadow(card_a) == purse_fen);
    CHECK(rig.clearing.medical(card_a) == medical_fen);
    CHECK(rig.queue->size() == 0);
    CHECK(rig.client->batch().totals.credits_fen == static_cast<std::uint64_t>(medical_fen + purse_fen));
    rig.require_balanced_books();
}

TEST_CASE("clinic refund in cash: the card keeps its balance, the medical account back, the cash includes the purse part") {
    ClinicRig rig;
    const sdk::ClinicOutcome paid = rig.pay_visit();
    auto refunded = rig.refund(paid, sdk::PurseRefund::cash);
    require_refunded(refunded);
    CHECK(refunded->cash_refund_code == "00");
    CHECK(refunded->cash_fen == static_cast<std::uint32_t>(purse_fen) + cash_fen);
    CHECK(rig.card_balance() == 0);
    CHECK(rig.clearing.shadow(card_a) == 0);
    CHECK(rig.clearing.medical(card_a) == medical_fen);
    CHECK(rig.client->batch().totals.credits_fen == static_cast<std::uint64_t>(medical_fen));  // a cash refund is not counted
    // After the cash refund a credit of the same purchase is refused.
    auto credit = rig.refund(paid);
    REQUIRE_FALSE(credit.ok());
    CHECK(credit.error().response_code == "94");
    rig.require_balanced_books();
}

TEST_CASE("a second refund of the same payment is refused 94 and changes nothing") {
    ClinicRig rig;
    const sdk::ClinicOutcome paid = rig.pay_visit();
    require_refunded(rig.refund(paid));
    auto again = rig.refund(paid);
    REQUIRE_FALSE(again.ok());
    CHECK(again.error().code == sdk::FlowErrorCode::declined);
    CHECK(again.error().response_code == "94");
    CHECK(rig.card_balance() == purse_fen);
    CHECK(rig.card->snapshot().online_atc == 1);  // no second CREDIT FOR LOAD
    CHECK(rig.clearing.medical(card_a) == medical_fen);
    CHECK(rig.queue->open_intents().empty());
    rig.require_balanced_books();
}

TEST_CASE("the refund credit's 0220 lost on the link: queued, posted by the next upload; a card torn at CREDIT is confirmed by recover") {
    SUBCASE("the 0220 never reaches the clearing") {
        ClinicRig rig;
        const sdk::ClinicOutcome paid = rig.pay_visit();
        rig.connect_through(rig.server->port(), LoseNth{"0220", 1});
        auto refunded = rig.refund(paid);
        require_refunded(refunded);
        REQUIRE(refunded->credit);
        CHECK_FALSE(refunded->credit->confirmed);
        CHECK(rig.card_balance() == purse_fen);
        CHECK(rig.queue->size() == 1);  // the confirmation, with the refund flag (200000)
        CHECK(rig.queue->batch(1)[0].record.refund);
        auto report = rig.client->upload(*rig.queue);
        REQUIRE_MESSAGE(report.ok(), (report.ok() ? "" : report.error().message));
        CHECK(report->acknowledged == 1);
        CHECK(rig.clearing.shadow(card_a) == purse_fen);
        rig.require_balanced_books();
    }
    SUBCASE("the card leaves while CREDIT FOR LOAD runs (credited, no answer)") {
        ClinicRig rig;
        const sdk::ClinicOutcome paid = rig.pay_visit();
        rig.lose_card_at_credit(sdk::Fault::after_card);
        auto torn = rig.refund(paid);
        REQUIRE_FALSE(torn.ok());
        CHECK(torn.error().code == sdk::FlowErrorCode::card_removed);
        CHECK(rig.card_balance() == purse_fen);
        CHECK(rig.clearing.shadow(card_a) == 0);  // pending at the clearing until the card's proof comes
        rig.present_again();
        auto recovered = rig.terminal->recover();
        REQUIRE(recovered.ok());
        REQUIRE(recovered->recorded.size() == 1);
        CHECK(recovered->recorded[0].refund);
        REQUIRE(rig.client->upload(*rig.queue).ok());
        CHECK(rig.clearing.shadow(card_a) == purse_fen);
        // The medical part alone, as the torn run left it.
        auto rest = rig.terminal->clinic_refund({paid.refund_reference, sdk::PurseRefund::card, false, true}, *rig.client);
        REQUIRE_MESSAGE(rest.ok(), (rest.ok() ? "" : rest.error().message));
        CHECK(rest->medical_fen == medical_fen);
        CHECK(rig.clearing.medical(card_a) == medical_fen);
        rig.require_balanced_books();
    }
}

TEST_CASE("a refund whose credit the card cannot take (card_full) leaves everything as paid; refunded in cash instead") {
    ClinicRig rig;
    const sdk::ClinicOutcome paid = rig.pay_visit();
    auto topped = rig.terminal->load(100'000 - 10, *rig.client);  // the card near its purse maximum
    REQUIRE_MESSAGE(topped.ok(), (topped.ok() ? "" : topped.error().message));
    auto full = rig.refund(paid);
    REQUIRE_FALSE(full.ok());
    CHECK(full.error().code == sdk::FlowErrorCode::card_full);
    CHECK(rig.clearing.medical(card_a) == 0);
    require_refunded(rig.refund(paid, sdk::PurseRefund::cash));
    CHECK(rig.card_balance() == 100'000 - 10);
    rig.require_balanced_books();
}

TEST_CASE("the medical refund's answer lost: sent again under its STAN and counted once; a later rerun counted on both sides") {
    ClinicRig rig;
    const sdk::ClinicOutcome paid = rig.pay_visit();
    // The first 0200 is the refund credit's, the second the medical refund's: booked, its answer lost.
    LoseNth lose{"0200", 2, sdk::LinkFault::lose_answer};
    auto repeats = std::make_shared<int>(0);
    rig.connect_through(rig.server->port(), [lose, repeats](const Message& request) {
        if (request.mti() == "0201") ++*repeats;
        return lose(request);
    });
    require_refunded(rig.refund(paid));
    CHECK(*lose.seen == 2);
    CHECK(*repeats == 1);  // the medical refund went again as a repeat, under its STAN
    CHECK(rig.clearing.medical(card_a) == medical_fen);
    CHECK(rig.client->batch().totals.credits_count == 2);
    // The same medical part again (a rerun of a refund already made): booked once, answered 00, counted
    // under its new STAN by both sides.
    auto again = rig.terminal->clinic_refund({paid.refund_reference, sdk::PurseRefund::card, false, true}, *rig.client);
    REQUIRE_MESSAGE(again.ok(), (again.ok() ? "" : again.error().message));
    CHECK(again->medical_code == "00");
    CHECK(rig.clearing.medical(card_a) == medical_fen);
    CHECK(rig.client->batch().totals.credits_count == 3);
    rig.require_balanced_books();
}
