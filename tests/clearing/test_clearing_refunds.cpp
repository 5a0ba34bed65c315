// Same-day refunds (ISO8583.md §4.10) through the engine with an in-process HSM: the medical part of a
// completed clinic hold (0200 3 = 200030), the purse part of a purchase by an online credit (0200 / 0220 /
// 0400 3 = 200000, the card's MAC1 and TAC) or in cash (0220 3 = 200000 without a TAC). Each part is paid
// back from the payable of the participant that was paid, once, on the day it was booked.
#include "clearing_fixture.hpp"
#include "online_fixture.hpp"

using namespace clearing_test;

namespace {

constexpr std::uint64_t shop = 2002;

// A completed clinic visit's medical part: a hold of `held_fen` (0100 STAN `stan`) completed for `paid_fen`.
void completed_hold(Rig& rig, std::uint32_t stan, std::uint64_t held_fen, std::uint64_t paid_fen) {
    REQUIRE(rig.code(clinic_authorization(rig, held_fen, stan)) == "00");
    REQUIRE(rig.code(clinic_completion(paid_fen, stan + 100, stan)) == "00");
}

// A purse purchase of card A paid at `terminal_id` (PSAM `psam`), uploaded and booked.
Tap purchase_at(Rig& rig, const std::string& terminal_id, const std::string& psam, std::uint32_t amount_fen, std::uint16_t atc,
                std::uint32_t stan, const std::string& asn = card_a) {
    Tap tap;
    tap.asn = asn;
    tap.type = crypto::type_ep_purchase;
    tap.amount_fen = amount_fen;
    tap.atc = atc;
    tap.terminal = psam;
    REQUIRE(rig.code(upload_message(tap, stan, terminal_id)) == "00");
    return tap;
}

// The refund credit of `tap` at CLINIC01, as the card answers INITIALIZE FOR LOAD with `old_balance_fen`.
Load refund_credit(const Tap& tap, std::uint32_t old_balance_fen, std::uint16_t atc = 7) {
    Load credit;
    credit.asn = tap.asn;
    credit.processing = "200000";
    credit.amount_fen = tap.amount_fen;
    credit.old_balance_fen = old_balance_fen;
    credit.atc = atc;
    credit.terminal = clinic_psam_terminal;
    credit.refund_of = reference_of(tap);
    return credit;
}

Message cash_refund(const Tap& tap, std::uint32_t stan, const std::string& terminal_id = "CLINIC01") {
    Message m = online_message("0220", "200000", tap.amount_fen, stan, tap.asn, terminal_id);
    m.set(62, iso8583::encode_cash_refund({asn_of(tap.asn), reference_of(tap)}));
    return m;
}

std::optional<ledger::Id> refund_of(Rig& rig, const Tap& tap) {
    auto found = rig.registry->visit(purchase_id(tap), Registry::VisitSide::refund_of);
    REQUIRE(found.ok());
    return *found;
}

ledger::Transfer transfer(Rig& rig, const ledger::Id& id) {
    auto t = rig.ledger->lookup_transfer(id);
    REQUIRE(t.ok());
    REQUIRE(t->has_value());
    return **t;
}

}  // namespace

TEST_CASE("200030: a completed hold's medical part goes back from the clinic's payable, once; repeats answer 00") {
    Rig rig;
    rig.sign_on("CLINIC01");
    completed_hold(rig, 1, 8000, 6500);
    REQUIRE(rig.medical(card_a) == 20000 - 6500);
    REQUIRE(rig.medical_payable(clinic) == 6500);
    const std::uint32_t credits_before = rig.terminal("CLINIC01").batch_credits_count;

    const Message answer = rig.send(medical_refund(6500, 3, 1));
    CHECK(answer.mti() == "0210");
    CHECK(*answer.get(39) == "00");
    CHECK(answer.get_number(4) == std::optional<std::uint64_t>(6500));
    CHECK(rig.medical(card_a) == 20000);
    CHECK(rig.medical_payable(clinic) == 0);
    const ledger::Transfer refund = transfer(rig, medical_refund_transfer(hold_id(1)));
    CHECK(refund.code == transfer_codes::medical_refund);
    CHECK(refund.debit_account_id == payable_account(clinic, ledgers::medical));
    CHECK(refund.credit_account_id == medical_account(asn_of(card_a)));
    CHECK(refund.user_data_128 == hold_id(1));  // the visit it refunds
    CHECK(refund.user_data_64 == clinic);
    CHECK(rig.terminal("CLINIC01").batch_credits_count == credits_before + 1);
    CHECK(rig.terminal("CLINIC01").batch_credits_fen == 6500);

    // The terminal got no answer and asks again, with the same or a new STAN, even the next day: booked once.
    CHECK(rig.code(medical_refund(6500, 3, 1)) == "00");
    CHECK(rig.code(medical_refund(6500, 4, 1)) == "00");
    rig.advance_clock_s(86'400);
    CHECK(rig.code(medical_refund(6500, 5, 1)) == "00");
    CHECK(rig.medical(card_a) == 20000);
    // Counted as answered (what the terminal counts): STAN 3 once, STANs 4 and 5 once each.
    CHECK(rig.terminal("CLINIC01").batch_credits_count == credits_before + 3);
    CHECK(rig.terminal("CLINIC01").batch_credits_fen == 3 * 6500);
    // A refund is not reversed (a clinic that refunded by mistake bills again).
    Message reversal = medical_refund(6500, 6, 1);
    reversal.set_mti("0400");
    CHECK(rig.code(reversal) == "12");
    CHECK(rig.medical(card_a) == 20000);
    rig.require_check();
}

TEST_CASE("200030 refusals: another amount 13, no completed hold of this card and clinic 25, a shop 58, the next day 12") {
    Rig rig;
    rig.sign_on("CLINIC01");
    rig.sign_on("SHOP0001");
    completed_hold(rig, 1, 8000, 6500);
    REQUIRE(rig.code(clinic_authorization(rig, 1000, 2)) == "00");  // held, not completed
    REQUIRE(rig.code(clinic_authorization(rig, 1000, 3)) == "00");
    REQUIRE(rig.code(clinic_reversal(1000, 4, 3)) == "00");  // held, then reversed
    const std::int64_t medical = rig.medical(card_a);

    CHECK(rig.code(medical_refund(6499, 10, 1)) == "13");
    CHECK(rig.code(medical_refund(8000, 11, 1)) == "13");          // what was held is not what was paid
    CHECK(rig.code(medical_refund(1000, 12, 2)) == "25");          // pending: reverse it instead
    CHECK(rig.code(medical_refund(1000, 13, 3)) == "25");          // reversed
    CHECK(rig.code(medical_refund(6500, 14, 99)) == "25");         // no such hold
    CHECK(rig.code(medical_refund(6500, 15, 1, card_b)) == "25");  // another card's
    CHECK(rig.code(medical_refund(6500, 16, 1, card_a, "SHOP0001")) == "58");
    Message garbled = medical_refund(6500, 17, 1);
    garbled.set(62, iso8583::encode_challenge_request({asn_of(card_a)}));  // DF01 alone: no DF11, no DF12
    CHECK(rig.code(garbled) == "30");
    Message other_pan = medical_refund(6500, 18, 1);
    other_pan.set(2, card_b.substr(4));
    CHECK(rig.code(other_pan) == "14");
    rig.advance_clock_s(86'400);
    CHECK(rig.code(medical_refund(6500, 19, 1)) == "12");  // not the day of the completion
    CHECK(rig.medical(card_a) == medical);
    CHECK(rig.medical_payable(clinic) == 6500);
    rig.require_check();
}

TEST_CASE("200000: the purse part back by an online credit from the clinic's payable; the card's MAC2; 0220 posts; once") {
    Rig rig;
    rig.sign_on("CLINIC01");
    const Tap paid = purchase_at(rig, "CLINIC01", clinic_psam_terminal, 1500, 0, 1);
    REQUIRE(rig.shadow(card_a) == 3500);
    REQUIRE(rig.payable(clinic) == 1500);
    const std::int64_t float_before = rig.float_balance();

    const Load credit = refund_credit(paid, 3500);
    const Message approval = rig.send(load_request(credit, 2, "CLINIC01"));
    REQUIRE(*approval.get(39) == "00");
    auto mac2 = iso8583::parse_load_answer(*approval.get(62));
    REQUIRE(mac2.ok());
    CHECK(mac2->mac2 == credit.mac2());
    const ledger::Transfer pending = transfer(rig, load_id(credit));
    CHECK(pending.code == transfer_codes::purchase_refund);
    CHECK(pending.debit_account_id == payable_account(clinic, ledgers::purse));
    CHECK(rig.state(load_id(credit)) == ledger::PendingState::pending);
    CHECK(refund_of(rig, paid) == std::optional<ledger::Id>(load_id(credit)));
    // The same 0200 again (no answer reached the terminal): the same MAC2, no second credit.
    CHECK(rig.code(load_request(credit, 2, "CLINIC01")) == "00");

    CHECK(rig.code(load_confirmation(credit, 3, "CLINIC01")) == "00");
    CHECK(rig.shadow(card_a) == 5000);
    CHECK(rig.payable(clinic) == 0);
    CHECK(rig.float_balance() == float_before);  // the clinic's money, not the float
    CHECK(rig.card(card_a).shadow_balance_fen == 5000);

    // Refunded once: another credit (the card's next online ATC) or cash is 94.
    CHECK(rig.code(load_request(refund_credit(paid, 5000, 8), 4, "CLINIC01")) == "94");
    CHECK(rig.code(cash_refund(paid, 5)) == "94");
    CHECK(rig.shadow(card_a) == 5000);
    rig.require_check();
}

TEST_CASE("200000 refusals: the purchase of another card, participant or amount, a bus, the next day, DF13 where it does not belong") {
    Rig rig;
    rig.sign_on("CLINIC01");
    rig.sign_on("SHOP0001");
    rig.sign_on("BUS00001");
    const Tap paid = purchase_at(rig, "CLINIC01", clinic_psam_terminal, 1500, 0, 1);
    const Tap at_shop = purchase_at(rig, "SHOP0001", "460100000002", 700, 1, 2);
    Tap other_card;  // card B's purchase at the clinic, serial 50 of its PSAM
    other_card.asn = card_b;
    other_card.type = crypto::type_ep_purchase;
    other_card.amount_fen = 300;
    other_card.balance_before_fen = 1000;
    other_card.terminal = clinic_psam_terminal;
    other_card.terminal_serial = 50;
    REQUIRE(rig.code(upload_message(other_card, 3, "CLINIC01")) == "00");

    Load wrong_amount = refund_credit(paid, 2800);
    wrong_amount.amount_fen = 1400;
    CHECK(rig.code(load_request(wrong_amount, 10, "CLINIC01")) == "13");
    CHECK(rig.code(load_request(refund_credit(at_shop, 2800), 11, "CLINIC01")) == "25");  // paid to the shop
    Load another_card = refund_credit(paid, 2800);
    another_card.refund_of = reference_of(other_card);  // card B's purchase: card A has none at that serial
    CHECK(rig.code(load_request(another_card, 12, "CLINIC01")) == "25");
    Tap never = paid;
    never.atc = 9;
    CHECK(rig.code(load_request(refund_credit(never, 2800), 13, "CLINIC01")) == "25");  // no such purchase
    Load from_bus = refund_credit(paid, 2800);
    from_bus.terminal = psam_terminal;
    CHECK(rig.code(load_request(from_bus, 14, "BUS00001")) == "58");
    Load no_reference = refund_credit(paid, 2800);
    no_reference.refund_of.reset();
    CHECK(rig.code(load_request(no_reference, 15, "CLINIC01")) == "30");
    Load load_with_reference = refund_credit(paid, 2800);
    load_with_reference.processing = "210000";
    CHECK(rig.code(load_request(load_with_reference, 16, "CLINIC01")) == "30");
    CHECK(rig.code(cash_refund(at_shop, 17)) == "25");
    rig.advance_clock_s(86'400);
    CHECK(rig.code(load_request(refund_credit(paid, 2800), 18, "CLINIC01")) == "12");
    CHECK(rig.code(cash_refund(paid, 19)) == "12");
    // None of them spent the online ATC's id, booked or recorded anything.
    CHECK_FALSE(rig.ledger->lookup_transfer(load_id(refund_credit(paid, 2800)))->has_value());
    CHECK_FALSE(refund_of(rig, paid).has_value());
    CHECK(rig.payable(clinic) == 1800);
    CHECK(rig.payable(shop) == 700);
    rig.require_check();
}

TEST_CASE("200000: a voided credit leaves the purchase refundable; field 3 of 0220 and 0400 must be the 0200's") {
    Rig rig;
    rig.sign_on("CLINIC01");
    const Tap paid = purchase_at(rig, "CLINIC01", clinic_psam_terminal, 1500, 0, 1);
    const Load first = refund_credit(paid, 3500);
    REQUIRE(rig.code(load_request(first, 2, "CLINIC01")) == "00");
    Load as_load = first;
    as_load.processing = "210000";
    CHECK(rig.code(load_confirmation(as_load, 3, "CLINIC01")) == "12");
    CHECK(rig.code(load_reversal(as_load, 4, "0400", "CLINIC01")) == "12");
    CHECK(rig.state(load_id(first)) == ledger::PendingState::pending);
    CHECK(rig.code(load_reversal(first, 5, "0400", "CLINIC01")) == "00");
    CHECK(rig.state(load_id(first)) == ledger::PendingState::voided);
    CHECK(rig.payable(clinic) == 1500);

    // The card was not credited (its online ATC did not move): INITIALIZE FOR LOAD again, a new random.
    Load again = first;
    again.random = {0x55, 0x66, 0x77, 0x88};
    REQUIRE(rig.code(load_request(again, 6, "CLINIC01")) == "00");
    CHECK(refund_of(rig, paid) == std::optional<ledger::Id>(load_id(again, 1)));
    CHECK(rig.code(load_confirmation(again, 7, "CLINIC01")) == "00");
    CHECK(rig.shadow(card_a) == 5000);
    CHECK(rig.payable(clinic) == 0);
    rig.require_check();
}

TEST_CASE("200000: a credit confirmed after it expired is booked late from the same payable, not the float") {
    Rig rig;
    rig.sign_on("CLINIC01");
    const Tap paid = purchase_at(rig, "CLINIC01", clinic_psam_terminal, 1500, 0, 1);
    const std::int64_t float_before = rig.float_balance();
    const Load credit = refund_credit(paid, 3500);
    REQUIRE(rig.code(load_request(credit, 2, "CLINIC01")) == "00");
    rig.advance_clock_s(rig.engine->options().load_timeout_s + 1);
    wait_expired(rig, load_id(credit));
    CHECK(rig.payable(clinic) == 1500);
    CHECK(rig.code(load_confirmation(credit, 3, "CLINIC01")) == "00");  // the card was credited: booked late
    const ledger::Transfer late = transfer(rig, resolving_transfer(load_id(credit), Resolution::late_load));
    CHECK(late.code == transfer_codes::purchase_refund);
    CHECK(late.debit_account_id == payable_account(clinic, ledgers::purse));
    CHECK(rig.shadow(card_a) == 5000);
    CHECK(rig.payable(clinic) == 0);
    CHECK(rig.float_balance() == float_before);
    rig.require_check();
}

TEST_CASE("cash refund: recorded, no money moves; repeated 00; a credit of the same purchase afterwards 94") {
    Rig rig;
    rig.sign_on("CLINIC01");
    rig.sign_on("SHOP0001");
    const Tap paid = purchase_at(rig, "CLINIC01", clinic_psam_terminal, 1500, 0, 1);
    const Tap at_shop = purchase_at(rig, "SHOP0001", "460100000002", 700, 1, 2);
    const std::uint64_t journal_before = rig.ledger->head().sequence;

    const Message answer = rig.send(cash_refund(paid, 3));
    CHECK(answer.mti() == "0230");
    CHECK(*answer.get(39) == "00");
    CHECK(refund_of(rig, paid) == std::optional<ledger::Id>(ledger::Id{}));  // the zero id: in cash
    CHECK(rig.ledger->head().sequence == journal_before);                    // not a transfer
    CHECK(rig.shadow(card_a) == 2800);
    CHECK(rig.payable(clinic) == 1500);  // the clinic paid it from its till; settlement pays it the purchase
    CHECK(rig.code(cash_refund(paid, 4)) == "00");
    CHECK(rig.code(load_request(refund_credit(paid, 2800), 5, "CLINIC01")) == "94");
    CHECK(rig.code(cash_refund(paid, 6, "SHOP0001")) == "25");  // not the shop's purchase

    // A shop refunds in cash too (kind shop); a credit after it is 94.
    CHECK(rig.code(cash_refund(at_shop, 7, "SHOP0001")) == "00");
    rig.require_check();
}
