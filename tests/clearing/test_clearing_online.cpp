// The online flows of the engine with an in-process HSM (ISO8583.md §4): one test per rule, bad inputs
// included. Card cryptograms (MAC1, TAC, INTERNAL AUTHENTICATE) are computed from the card keys the
// scheme's masters diversify to (docs/CARD-SPEC.md §4), exactly as a card would.
#include "clearing_fixture.hpp"
#include "online_fixture.hpp"
#include "http_api.hpp"

#include <nlohmann/json.hpp>

#include <future>
#include <thread>

using namespace clearing_test;

// ---- 0200 / 0210 -----------------------------------------------------------------------------------------

TEST_CASE("0200: a valid MAC1 books a pending load float → shadow before 00 with the card's MAC2") {
    Rig rig;
    rig.sign_on();
    const Load load;
    const Message answer = rig.send(load_request(load, 1));
    CHECK(answer.mti() == "0210");
    REQUIRE(*answer.get(39) == "00");
    auto data = iso8583::parse_load_answer(*answer.get(62));
    REQUIRE(data.ok());
    CHECK(data->mac2 == load.mac2());
    CHECK(data->online_atc == 7);
    auto transfer = rig.ledger->lookup_transfer(load_id(load));
    REQUIRE(transfer.ok());
    REQUIRE(transfer->has_value());
    CHECK((*transfer)->code == transfer_codes::online_load);
    CHECK((*transfer)->flags == ledger::transfer_flags::pending);
    CHECK((*transfer)->timeout_s == 300);
    CHECK((*transfer)->debit_account_id == purse_float_account);
    CHECK((*transfer)->credit_account_id == purse_shadow_account(asn_of(card_a)));
    CHECK(parse_place((*transfer)->user_data_128).type == crypto::type_ep_load);
    CHECK(rig.account(purse_shadow_account(asn_of(card_a))).credits_pending == 3000);
    // Pending money is not in the mirror (ISO8583.md §4.3): the shadow still shows 5000.
    CHECK(rig.card(card_a).shadow_balance_fen == 5000);
    CHECK(rig.engine->stats().loads_approved == 1);
    rig.require_check();
}

TEST_CASE("0200: a repeat answers the same MAC2 without a second hold; other content on the same ATC is 94") {
    Rig rig;
    rig.sign_on();
    const Load load;
    const Message first = rig.send(load_request(load, 1));
    const Message again = rig.send(load_request(load, 1));
    REQUIRE(*first.get(39) == "00");
    REQUIRE(*again.get(39) == "00");
    CHECK(*again.get(62) == *first.get(62));
    CHECK(rig.account(purse_shadow_account(asn_of(card_a))).credits_pending == 3000);
    CHECK(rig.engine->stats().loads_approved == 1);
    Load other = load;
    other.amount_fen = 4000;
    CHECK(rig.code(load_request(other, 2)) == "94");
    CHECK(rig.flags_of(RiskKind::duplicate_different) == 1);
    CHECK(rig.account(purse_shadow_account(asn_of(card_a))).credits_pending == 3000);
    rig.require_check();
}

TEST_CASE("0200: a forged MAC1 is 59, books nothing and raises mac1_invalid") {
    Rig rig;
    rig.sign_on();
    Load load;
    load.forge_mac1 = true;
    const Message answer = rig.send(load_request(load, 1));
    CHECK(*answer.get(39) == "59");
    CHECK_FALSE(answer.has(62));
    CHECK(rig.state(load_id(load)) == std::nullopt);
    CHECK(rig.account(purse_shadow_account(asn_of(card_a))).credits_pending == 0);
    CHECK(rig.flags_of(RiskKind::mac1_invalid) == 1);
    CHECK(rig.card(card_a).risk_flags == 1);
    rig.require_check();
}

TEST_CASE("0200: unknown, lost and blocked cards, unsigned terminals and bad amounts are refused, nothing booked") {
    Rig rig;
    Load load;
    CHECK(rig.code(load_request(load, 1)) == "03");  // not signed on
    rig.sign_on();
    SUBCASE("unknown card: 14") {
        load.asn = "46010000000099999999";
        CHECK(rig.code(load_request(load, 2)) == "14");
    }
    SUBCASE("lost card: 41, blocked card: 62") {
        REQUIRE(set_card_status(*rig.ledger, *rig.registry, asn_of(card_a), CardStatus::lost).ok());
        CHECK(rig.code(load_request(load, 2)) == "41");
        REQUIRE(set_card_status(*rig.ledger, *rig.registry, asn_of(card_a), CardStatus::blocked).ok());
        CHECK(rig.code(load_request(load, 3)) == "62");
    }
    SUBCASE("amount 0: 13; above the load limit: 61") {
        load.amount_fen = 0;
        CHECK(rig.code(load_request(load, 2)) == "13");
        load.amount_fen = 100'001;
        CHECK(rig.code(load_request(load, 3)) == "61");
    }
    SUBCASE("DF06 not the terminal's PSAM id: 58") {
        load.terminal = "460100000002";
        CHECK(rig.code(load_request(load, 2)) == "58");
    }
    SUBCASE("field 62 without MAC1: 30; another processing code: 12") {
        Message m = load_request(load, 2);
        m.set(62, iso8583::encode_load_reference({asn_of(card_a), 7}));
        CHECK(rig.code(m) == "30");
        m = load_request(load, 3);
        m.set(3, "000000");
        CHECK(rig.code(m) == "12");
    }
    CHECK(rig.state(load_id(load)) == std::nullopt);
    CHECK(rig.account(purse_shadow_account(asn_of(card_a))).credits_pending == 0);
    rig.require_check();
}

// ---- 0220 load confirmation ------------------------------------------------------------------------------

TEST_CASE("0220: the card's TAC posts the load; the mirror follows; a repeat answers 00 again") {
    Rig rig;
    rig.sign_on();
    const Load load;
    REQUIRE(rig.code(load_request(load, 1)) == "00");
    const Message answer = rig.send(load_confirmation(load, 2));
    CHECK(answer.mti() == "0230");
    CHECK(*answer.get(39) == "00");
    CHECK(rig.state(load_id(load)) == ledger::PendingState::posted);
    CHECK(rig.shadow(card_a) == 8000);
    CHECK(rig.card(card_a).shadow_balance_fen == 8000);
    CHECK(rig.code(load_confirmation(load, 2)) == "00");
    CHECK(rig.shadow(card_a) == 8000);
    CHECK(rig.engine->stats().loads_confirmed == 1);
    // A reversal after the confirmation reverses nothing: 0400 → 12, 0420 → 00 (acknowledged).
    CHECK(rig.code(load_reversal(load, 3)) == "12");
    CHECK(rig.code(load_reversal(load, 4, "0420")) == "00");
    CHECK(rig.shadow(card_a) == 8000);
    rig.require_check();
}

TEST_CASE("0220: a confirmation from another terminal than the 0200's, or with another PSAM id, is refused 58; nothing posted") {
    Rig rig;
    rig.sign_on();
    rig.sign_on("SHOP0001");
    const Load load;
    REQUIRE(rig.code(load_request(load, 1)) == "00");
    Load at_shop = load;
    at_shop.terminal = "460100000002";  // the shop's own PSAM: everything consistent for SHOP0001
    CHECK(rig.code(load_confirmation(at_shop, 2, "SHOP0001")) == "58");
    CHECK(rig.code(load_confirmation(at_shop, 3, "BUS00001")) == "58");  // the right 41, another DF06
    CHECK(rig.flags_of(RiskKind::wrong_terminal) >= 1);
    CHECK(rig.state(load_id(load)) == ledger::PendingState::pending);
    CHECK(rig.shadow(card_a) == 5000);
    CHECK(rig.payable(2002) == 0);
    // The terminal that asked confirms it: posted, with the digest of its record.
    const Message confirmed = rig.send(load_confirmation(load, 4));
    CHECK(*confirmed.get(39) == "00");
    iso8583::LoadConfirmationData c = load_data<iso8583::LoadConfirmationData>(load);
    c.tac = load.tac();
    CHECK(iso8583::parse_record_digest(confirmed.get(62).value_or("")).value() == iso8583::load_confirmation_digest(c, load.amount_fen));
    CHECK(rig.shadow(card_a) == 8000);
    rig.require_check();
}

TEST_CASE("0220: a forged TAC still posts the load (MAC2 was ours, the card holds the money), answered 59 and flagged") {
    Rig rig;
    rig.sign_on();
    Load load;
    REQUIRE(rig.code(load_request(load, 1)) == "00");
    load.forge_tac = true;
    CHECK(rig.code(load_confirmation(load, 2)) == "59");
    CHECK(rig.state(load_id(load)) == ledger::PendingState::posted);
    CHECK(rig.shadow(card_a) == 8000);
    CHECK(rig.flags_of(RiskKind::load_tac_invalid) == 1);
    CHECK(rig.code(load_confirmation(load, 2)) == "59");  // the repeat: same answer, one flag
    CHECK(rig.flags_of(RiskKind::load_tac_invalid) == 1);
    rig.require_check();
}

TEST_CASE("0220: confirmation of an unknown load is 25; of another amount 13; nothing booked") {
    Rig rig;
    rig.sign_on();
    Load load;
    CHECK(rig.code(load_confirmation(load, 1)) == "25");
    REQUIRE(rig.code(load_request(load, 2)) == "00");
    Load other = load;
    other.amount_fen = 2999;
    CHECK(rig.code(load_confirmation(other, 3)) == "13");
    CHECK(rig.state(load_id(load)) == ledger::PendingState::pending);
    CHECK(rig.shadow(card_a) == 5000);
    rig.require_check();
}

TEST_CASE("0220 after the load was reversed: a valid TAC books it late and flags; a forged one books nothing") {
    Rig rig;
    rig.sign_on();
    Load load;
    REQUIRE(rig.code(load_request(load, 1)) == "00");
    REQUIRE(rig.code(load_reversal(load, 2)) == "00");
    CHECK(rig.state(load_id(load)) == ledger::PendingState::voided);
    Load forged = load;
    forged.forge_tac = true;
    CHECK(rig.code(load_confirmation(forged, 3)) == "59");
    CHECK(rig.shadow(card_a) == 5000);
    CHECK(rig.code(load_confirmation(load, 4)) == "00");
    CHECK(rig.shadow(card_a) == 8000);
    CHECK(rig.card(card_a).shadow_balance_fen == 8000);
    CHECK(rig.flags_of(RiskKind::late_load_confirmation) == 1);
    auto late = rig.ledger->lookup_transfer(resolving_transfer(load_id(load), Resolution::late_load));
    REQUIRE(late.ok());
    REQUIRE(late->has_value());
    CHECK((*late)->code == transfer_codes::online_load);
    CHECK(rig.code(load_confirmation(load, 4)) == "00");  // repeat
    CHECK(rig.shadow(card_a) == 8000);
    rig.require_check();
}

// ---- 0400 / 0420 reversals of loads --------------------------------------------------------------------------

TEST_CASE("0400/0420 void a pending load idempotently; unknown originals: 0400 → 25, 0420 → 00 with nothing booked") {
    Rig rig;
    rig.sign_on();
    Load load;
    CHECK(rig.code(load_reversal(load, 1)) == "25");
    CHECK(rig.code(load_reversal(load, 2, "0420")) == "00");
    REQUIRE(rig.code(load_request(load, 3)) == "00");
    // Only the terminal that asked for the load may reverse it.
    rig.sign_on("SHOP0001");
    CHECK(rig.code(load_reversal(load, 4, "0400", "SHOP0001")) == "25");
    CHECK(rig.code(load_reversal(load, 5, "0420")) == "00");
    CHECK(rig.state(load_id(load)) == ledger::PendingState::voided);
    CHECK(rig.code(load_reversal(load, 5, "0420")) == "00");
    CHECK(rig.code(load_reversal(load, 6)) == "00");
    CHECK(rig.engine->stats().reversals == 1);
    CHECK(rig.account(purse_shadow_account(asn_of(card_a))).credits_pending == 0);
    CHECK(rig.shadow(card_a) == 5000);
    // The repeat of the reversed 0200 is refused; a new INITIALIZE (new random, same ATC) is a new attempt.
    CHECK(rig.code(load_request(load, 3)) == "12");
    Load again = load;
    again.random = {0x55, 0x66, 0x77, 0x88};
    const Message answer = rig.send(load_request(again, 7));
    REQUIRE(*answer.get(39) == "00");
    CHECK(iso8583::parse_load_answer(*answer.get(62))->mac2 == again.mac2());
    CHECK(rig.state(load_id(again, 1)) == ledger::PendingState::pending);
    CHECK(rig.code(load_confirmation(again, 8)) == "00");
    CHECK(rig.shadow(card_a) == 8000);
    rig.require_check();
}

TEST_CASE("an unconfirmed load expires by the ledger's timeout: counted by scan_expiries; a late confirmation is still booked") {
    EngineOptions options;
    options.load_timeout_s = 60;
    Rig rig(options);
    rig.sign_on();
    Load load;
    REQUIRE(rig.code(load_request(load, 1)) == "00");
    rig.advance_clock_s(59);
    REQUIRE(rig.engine->scan_expiries().ok());
    CHECK(rig.engine->stats().loads_expired == 0);
    rig.advance_clock_s(2);
    wait_expired(rig, load_id(load));
    auto found = rig.engine->scan_expiries();
    REQUIRE(found.ok());
    CHECK(*found == 1);
    CHECK(rig.engine->stats().loads_expired == 1);
    CHECK(rig.account(purse_shadow_account(asn_of(card_a))).credits_pending == 0);
    rig.require_check();
    CHECK(rig.code(load_reversal(load, 2)) == "00");  // nothing left to release
    CHECK(rig.code(load_confirmation(load, 3)) == "00");
    CHECK(rig.shadow(card_a) == 8000);
    CHECK(rig.flags_of(RiskKind::late_load_confirmation) == 1);
    rig.require_check();
}

// ---- 0100 / 0110 clinic authorization ----------------------------------------------------------------------

TEST_CASE("0100: INTERNAL AUTHENTICATE verified, a hold medical account → clinic payable before 00") {
    Rig rig;
    rig.sign_on("CLINIC01");
    const Message request = clinic_authorization(rig, 8000, 1);
    const Message answer = rig.send(request);
    CHECK(answer.mti() == "0110");
    REQUIRE(*answer.get(39) == "00");
    CHECK(*answer.get(4) == "000000008000");
    auto hold = rig.ledger->lookup_transfer(hold_id(1));
    REQUIRE(hold.ok());
    REQUIRE(hold->has_value());
    CHECK((*hold)->code == transfer_codes::clinic_medical);
    CHECK((*hold)->ledger == ledgers::medical);
    CHECK((*hold)->timeout_s == 900);
    CHECK((*hold)->debit_account_id == medical_account(asn_of(card_a)));
    CHECK((*hold)->credit_account_id == payable_account(clinic, ledgers::medical));
    CHECK((*hold)->user_data_64 == clinic);
    CHECK((*hold)->user_data_32 == 1);
    CHECK(rig.account(medical_account(asn_of(card_a))).debits_pending == 8000);
    CHECK(rig.code(request) == "00");  // the same message repeated (its answer lost): no second hold
    CHECK(rig.account(medical_account(asn_of(card_a))).debits_pending == 8000);
    CHECK(rig.code(clinic_authorization(rig, 9000, 1)) == "94");  // same id, other amount
    CHECK(rig.account(medical_account(asn_of(card_a))).debits_pending == 8000);
    rig.require_check();
}

TEST_CASE("0100: one card-presence proof holds once — field 60, a new STAN or a reused challenge all get 59") {
    Rig rig;
    rig.sign_on("CLINIC01");
    const iso8583::HostChallenge challenge = challenge_for(rig, card_a, "CLINIC01", 1);
    Message genuine = clinic_authorization_over(challenge, 2500, 1, card_a, "CLINIC01");
    // Field 60 changed (another hold id) under the same cryptogram: the proof covers 60, so it fails.
    Message other_batch = genuine;
    other_batch.set(60, "000002");
    CHECK(rig.code(other_batch) == "59");
    CHECK(rig.flags_of(RiskKind::internal_auth_invalid) == 1);
    CHECK(rig.code(genuine) == "00");
    // After the hold, the challenge is spent: replays with any field 60 are refused before the HSM.
    for (const char* batch : {"000002", "000003", "000004"}) {
        Message replay = genuine;
        replay.set(60, batch);
        CHECK(rig.code(replay) == "59");
    }
    // The same challenge, answered again by the card for another STAN: used once already.
    CHECK(rig.code(clinic_authorization_over(challenge, 2500, 2, card_a, "CLINIC01")) == "59");
    CHECK(rig.flags_of(RiskKind::challenge_refused) == 2);  // one per refused 0100 id (STAN 1, STAN 2)
    CHECK(rig.account(medical_account(asn_of(card_a))).debits_pending == 2500);
    rig.require_check();
}

TEST_CASE("0100: a challenge of another terminal, another card, a made-up or an expired one is refused 59") {
    EngineOptions options;
    options.challenge_ttl_s = 1;
    Rig rig(options);
    rig.sign_on("CLINIC01");
    rig.sign_on("SHOP0001");
    const auto shops = challenge_for(rig, card_a, "SHOP0001", 1);
    CHECK(rig.code(clinic_authorization_over(shops, 100, 2, card_a, "CLINIC01")) == "59");
    const auto card_bs = challenge_for(rig, card_b, "CLINIC01", 3);
    CHECK(rig.code(clinic_authorization_over(card_bs, 100, 4, card_a, "CLINIC01")) == "59");
    iso8583::HostChallenge made_up = challenge_for(rig, card_a, "CLINIC01", 5);
    made_up[12] ^= 0x40;
    CHECK(rig.code(clinic_authorization_over(made_up, 100, 6, card_a, "CLINIC01")) == "59");
    const auto old = challenge_for(rig, card_a, "CLINIC01", 7);
    std::this_thread::sleep_for(std::chrono::milliseconds(2100));
    CHECK(rig.code(clinic_authorization_over(old, 100, 8, card_a, "CLINIC01")) == "59");
    CHECK(rig.flags_of(RiskKind::challenge_refused) >= 1);
    CHECK(rig.account(medical_account(asn_of(card_a))).debits_pending == 0);
    // A challenge request for an unknown card: 14; without field 62: 30.
    Message unknown = network_message(201, 9, "CLINIC01");
    unknown.set(2, "0000000099999999");
    unknown.set(62, iso8583::encode_challenge_request({asn_of("46010000000099999999")}));
    CHECK(rig.code(unknown) == "14");
    Message bare = network_message(201, 10, "CLINIC01");
    bare.set(2, card_a.substr(4));
    CHECK(rig.code(bare) == "30");
}

// A medical balance inquiry (3 = 313000, amount 0) over `challenge`.
Message medical_inquiry_over(const iso8583::HostChallenge& challenge, std::uint32_t stan, const std::string& asn = card_a,
                             bool forge = false, ProofKey key = ProofKey::ssse, std::uint64_t amount_fen = 0) {
    return clinic_authorization_over(challenge, amount_fen, stan, asn, "CLINIC01", forge, key, "313000");
}

TEST_CASE("0100 313000: the medical account's available amount in field 54, proven like a hold; nothing held; once per proof") {
    Rig rig;
    rig.sign_on("CLINIC01");
    rig.sign_on("SHOP0001");
    const auto challenge = challenge_for(rig, card_a, "CLINIC01", 1);
    const Message answer = rig.send(medical_inquiry_over(challenge, 2));
    REQUIRE(*answer.get(39) == "00");
    CHECK(*answer.get(54) == "3002156C000000020000");  // card_a's medical account: 200.00
    CHECK(iso8583::parse_medical_available_field(*answer.get(54)) == 20000);
    CHECK(rig.account(medical_account(asn_of(card_a))).debits_pending == 0);
    // The same proof again (a replay, or the same challenge under a new STAN): spent.
    CHECK(rig.code(medical_inquiry_over(challenge, 2)) == "59");
    CHECK(rig.code(medical_inquiry_over(challenge, 3)) == "59");
    // After a hold of 80.00 the inquiry says what is left.
    REQUIRE(rig.code(clinic_authorization(rig, 8000, 4)) == "00");
    const Message after = rig.send(medical_inquiry_over(challenge_for(rig, card_a, "CLINIC01", 5), 6));
    REQUIRE(*after.get(39) == "00");
    CHECK(iso8583::parse_medical_available_field(*after.get(54)) == 12000);
    // Refusals: a forged proof or one from the purse application (no PIN) 59, an amount 13, a shop 58.
    CHECK(rig.code(medical_inquiry_over(challenge_for(rig, card_a, "CLINIC01", 7), 8, card_a, true)) == "59");
    CHECK(rig.code(medical_inquiry_over(challenge_for(rig, card_a, "CLINIC01", 9), 10, card_a, false, ProofKey::purse)) == "59");
    CHECK(rig.code(medical_inquiry_over(challenge_for(rig, card_a, "CLINIC01", 11), 12, card_a, false, ProofKey::ssse, 100)) == "13");
    CHECK(rig.code(clinic_authorization_over(challenge_for(rig, card_a, "SHOP0001", 13), 0, 14, card_a, "SHOP0001", false, ProofKey::ssse,
                                             "313000")) == "58");
    CHECK(rig.account(medical_account(asn_of(card_a))).debits_pending == 8000);
    rig.require_check();
}

TEST_CASE("0100: a proof from the purse application (no PIN) cannot authorize a medical hold") {
    Rig rig;
    rig.sign_on("CLINIC01");
    CHECK(rig.code(clinic_authorization(rig, 2500, 1, card_a, "CLINIC01", false, ProofKey::purse)) == "59");
    CHECK(rig.flags_of(RiskKind::internal_auth_invalid) == 1);
    CHECK(rig.account(medical_account(asn_of(card_a))).debits_pending == 0);
    CHECK(rig.code(clinic_authorization(rig, 2500, 2, card_a, "CLINIC01", false, ProofKey::ssse)) == "00");
}

TEST_CASE("0100: below the amount the medical account holds what it has (10, field 4 = held); empty → 51") {
    Rig rig;
    rig.sign_on("CLINIC01");
    const Message request = clinic_authorization(rig, 25000, 1);
    const Message partial = rig.send(request);
    REQUIRE(*partial.get(39) == "10");
    CHECK(*partial.get(4) == "000000020000");
    CHECK(rig.account(medical_account(asn_of(card_a))).debits_pending == 20000);
    const Message repeat = rig.send(request);
    CHECK(*repeat.get(39) == "10");
    CHECK(*repeat.get(4) == "000000020000");
    CHECK(rig.code(clinic_authorization(rig, 100, 2)) == "51");
    CHECK(rig.code(clinic_authorization(rig, 100, 3, card_b)) == "51");  // card_b has no medical money
    rig.require_check();
}

TEST_CASE("0100: forged cryptogram 59, non-clinic terminal 58, hotlisted or unknown card, bad amounts — nothing held") {
    Rig rig;
    rig.sign_on("CLINIC01");
    rig.sign_on("SHOP0001");
    CHECK(rig.code(clinic_authorization(rig, 100, 1, card_a, "CLINIC01", true)) == "59");
    CHECK(rig.flags_of(RiskKind::internal_auth_invalid) == 1);
    CHECK(rig.code(clinic_authorization(rig, 100, 2, card_a, "SHOP0001")) == "58");
    CHECK(rig.code(clinic_authorization(rig, 100, 3, "46010000000099999999")) == "14");
    CHECK(rig.code(clinic_authorization(rig, 0, 4)) == "13");
    CHECK(rig.code(clinic_authorization(rig, 10'000'001, 5)) == "61");
    Message bad_challenge = clinic_authorization(rig, 100, 6);
    bad_challenge.set_number(4, 101, 12);  // the card answered for another amount
    CHECK(rig.code(bad_challenge) == "59");
    REQUIRE(set_card_status(*rig.ledger, *rig.registry, asn_of(card_a), CardStatus::lost).ok());
    CHECK(rig.code(clinic_authorization(rig, 100, 7)) == "41");
    CHECK(rig.account(medical_account(asn_of(card_a))).debits_pending == 0);
    rig.require_check();
}

// ---- 0220 completion, 0400 reversal of holds -------------------------------------------------------------------

TEST_CASE("0220 completion posts the actual amount, releases the rest; repeat 00; above the hold 13; other amount 94") {
    Rig rig;
    rig.sign_on("CLINIC01");
    REQUIRE(rig.code(clinic_authorization(rig, 8000, 1)) == "00");
    CHECK(rig.code(clinic_completion(8001, 2, 1)) == "13");
    CHECK(rig.code(clinic_completion(0, 2, 1)) == "13");
    CHECK(rig.code(clinic_completion(6500, 2, 99)) == "25");
    const Message done = rig.send(clinic_completion(6500, 2, 1));
    CHECK(done.mti() == "0230");
    CHECK(*done.get(39) == "00");
    CHECK(rig.medical(card_a) == 20000 - 6500);
    CHECK(rig.account(medical_account(asn_of(card_a))).debits_pending == 0);
    CHECK(rig.medical_payable(clinic) == 6500);
    CHECK(rig.code(clinic_completion(6500, 2, 1)) == "00");
    CHECK(rig.code(clinic_completion(6000, 3, 1)) == "94");
    CHECK(rig.medical(card_a) == 20000 - 6500);
    CHECK(rig.code(clinic_reversal(8000, 4, 1)) == "12");  // completed: nothing to reverse
    rig.require_check();
}

TEST_CASE("0221: the repeat of an unanswered completion carries a new STAN and still lands on the booked completion") {
    Rig rig;
    rig.sign_on("CLINIC01");
    REQUIRE(rig.code(clinic_authorization(rig, 8000, 1)) == "00");
    REQUIRE(rig.code(clinic_completion(6500, 2, 1)) == "00");  // the 0230 lost on the way back
    Message repeat = clinic_completion(6500, 3, 1);
    repeat.set_mti("0221");
    const Message answer = rig.send(repeat);
    CHECK(answer.mti() == "0230");
    CHECK(*answer.get(39) == "00");
    CHECK(rig.engine->stats().completions == 1);
    CHECK(rig.engine->stats().duplicates == 0);
    CHECK(rig.medical(card_a) == 20000 - 6500);
    CHECK(rig.medical_payable(clinic) == 6500);
    auto posted = rig.ledger->lookup_transfer(resolving_transfer(hold_id(1), Resolution::post));
    REQUIRE(posted.ok());
    REQUIRE(posted->has_value());
    CHECK((*posted)->user_data_32 == 1);  // the 0100's STAN
    CHECK(rig.flags().empty());
    rig.require_check();
}

TEST_CASE("0400 voids a hold (repeat 00); the completion afterwards is 25; unknown hold 0400 → 25, 0420 → 00") {
    Rig rig;
    rig.sign_on("CLINIC01");
    CHECK(rig.code(clinic_reversal(100, 1, 50)) == "25");
    CHECK(rig.code(clinic_reversal(100, 2, 50, "0420")) == "00");
    REQUIRE(rig.code(clinic_authorization(rig, 8000, 3)) == "00");
    CHECK(rig.code(clinic_reversal(8000, 4, 3)) == "00");
    CHECK(rig.code(clinic_reversal(8000, 4, 3)) == "00");
    CHECK(rig.code(clinic_reversal(8000, 5, 3, "0420")) == "00");
    CHECK(rig.state(hold_id(3)) == ledger::PendingState::voided);
    CHECK(rig.account(medical_account(asn_of(card_a))).debits_pending == 0);
    CHECK(rig.medical(card_a) == 20000);
    CHECK(rig.code(clinic_completion(8000, 6, 3)) == "25");
    rig.require_check();
}

TEST_CASE("a hold expires by the ledger's timeout: the completion is 54, the reversal 00, the expiry counted") {
    EngineOptions options;
    options.hold_timeout_s = 120;
    Rig rig(options);
    rig.sign_on("CLINIC01");
    REQUIRE(rig.code(clinic_authorization(rig, 8000, 1)) == "00");
    rig.advance_clock_s(121);
    wait_expired(rig, hold_id(1));
    CHECK(rig.account(medical_account(asn_of(card_a))).debits_pending == 0);
    REQUIRE(rig.engine->scan_expiries().ok());
    CHECK(rig.engine->stats().holds_expired == 1);
    CHECK(rig.code(clinic_completion(8000, 2, 1)) == "54");
    CHECK(rig.code(clinic_completion(8000, 2, 1)) == "54");
    CHECK(rig.code(clinic_reversal(8000, 3, 1)) == "00");
    CHECK(rig.medical(card_a) == 20000);
    rig.require_check();
}

// ---- 0800 hotlist download ---------------------------------------------------------------------------------

namespace {

Message hotlist_request(std::uint64_t from_version, std::uint32_t chunk, std::uint32_t stan) {
    Message m = network_message(101, stan);
    m.set(48, *iso8583::digits(from_version, 8) + *iso8583::digits(chunk, 4));
    return m;
}

std::string nth_card(std::size_t i) { return "4601000001" + *iso8583::digits(i, 10); }

}  // namespace

TEST_CASE("hotlist: every status change bumps the version; chunks of 47 from version 0 and deltas from a version") {
    Rig rig;
    rig.sign_on();
    // 110 more cards, all hotlisted, then one returned to active and card_a lost.
    std::string json = R"({"cards": [)";
    for (std::size_t i = 0; i < 110; ++i) {
        json +=
            (i ? "," : "") + std::string(R"({"asn": ")") + nth_card(i) + R"(", "issuer_id": ")" + issuer_hex + R"(", "status": "blocked"})";
    }
    json += "]}";
    REQUIRE(load_registry(*rig.ledger, *rig.registry, json).ok());
    CHECK(*rig.registry->hotlist_version() == 110);
    REQUIRE(set_card_status(*rig.ledger, *rig.registry, asn_of(nth_card(5)), CardStatus::active).ok());
    REQUIRE(set_card_status(*rig.ledger, *rig.registry, asn_of(card_a), CardStatus::lost).ok());
    REQUIRE(set_card_status(*rig.ledger, *rig.registry, asn_of(card_a), CardStatus::lost).ok());  // no change: no version
    CHECK(*rig.registry->hotlist_version() == 112);

    // From version 0: 112 changes in chunks of 47, 47, 18; applying them gives the current list.
    std::set<std::string> list;
    std::uint64_t version = 0;
    std::uint32_t chunks = 0;
    for (bool more = true; more; ++chunks) {
        const Message answer = rig.send(hotlist_request(0, chunks, 10 + chunks));
        REQUIRE(*answer.get(39) == "00");
        REQUIRE(answer.get(63)->size() <= 999);
        auto chunk = parse_hotlist_chunk(*answer.get(63));
        REQUIRE(chunk.ok());
        CHECK(chunk->entries.size() == (chunks < 2 ? 47u : 18u));
        for (const auto& e : chunk->entries) e.added ? (void)list.insert(bcd_to_digits(e.asn)) : (void)list.erase(bcd_to_digits(e.asn));
        version = chunk->version;
        more = chunk->more;
        REQUIRE(chunks < 5);
    }
    CHECK(chunks == 3);
    CHECK(version == 112);
    CHECK(list.size() == 110);
    CHECK(list.count(card_a) == 1);
    CHECK(list.count(nth_card(5)) == 0);

    // A terminal at version 110 gets the two changes since.
    const Message delta = rig.send(hotlist_request(110, 0, 20));
    CHECK(*delta.get(63) == "000001120-" + nth_card(5) + "+" + card_a);
    // Up to date: an empty chunk; ahead of the host: the whole log again.
    CHECK(*rig.send(hotlist_request(112, 0, 21)).get(63) == "000001120");
    CHECK(parse_hotlist_chunk(*rig.send(hotlist_request(500, 0, 22)).get(63))->entries.size() == 47);
    // Bad field 48: 30; not signed on: 03.
    Message bad = hotlist_request(0, 0, 23);
    bad.set(48, "12345");
    CHECK(rig.code(bad) == "30");
    SessionState other;
    std::promise<Message> answer;
    rig.engine->handle(hotlist_request(0, 0, 24), other, [&](Message m) { answer.set_value(std::move(m)); });
    CHECK(*answer.get_future().get().get(39) == "03");
    rig.require_check();
}

// ---- 0320 place, 0500 totals ---------------------------------------------------------------------------------

TEST_CASE("0320: the transfer's user_data_128 carries the place: PSAM terminal, type, line and station of DF0C, card time") {
    Rig rig;
    rig.sign_on();
    Message m = upload_message(Tap{}, 1);
    auto t = parse_purse_transaction(*m.get(62));
    REQUIRE(t.ok());
    t->transit_record = {0x00, 0x2A, 0x01, 0x07, 0xEE};
    m.set(62, encode_purse_transaction(*t));
    REQUIRE(rig.code(m) == "00");
    auto transfer = rig.ledger->lookup_transfer(purchase_id(Tap{}));
    REQUIRE(transfer.ok());
    const Place place = parse_place((*transfer)->user_data_128);
    CHECK(bcd_to_digits(place.terminal_id) == psam_terminal);
    CHECK(place.type == crypto::type_capp_purchase);
    CHECK(place.line == 42);
    CHECK(place.station == 0x0107);
    CHECK(to_hex(place.local_time_bcd) == "2611261030");
    // DF0C shorter than line + station: 30.
    t->transit_record = {0x00, 0x2A};
    m.set(62, encode_purse_transaction(*t));
    CHECK(rig.code(m) == "30");
}

namespace {

// A 0500 of batch 1 with the terminal's eight totals: 74..77 counts, 86..89 amounts.
Message totals_message(const std::string& terminal_id, std::uint32_t stan, const std::array<std::uint64_t, 8>& totals) {
    Message m("0500");
    m.set_number(11, stan, 6);
    m.set(41, terminal_id);
    m.set_number(60, 1, 6);
    constexpr int fields[] = {74, 75, 76, 77, 86, 87, 88, 89};
    for (std::size_t i = 0; i < totals.size(); ++i) m.set_number(fields[i], totals[i], fields[i] < 80 ? 10 : 16);
    return m;
}

}  // namespace

TEST_CASE("0500: loads, load reversals, clinic completions and hold reversals count in the batch totals") {
    Rig rig;
    rig.sign_on();
    rig.sign_on("CLINIC01");
    // BUS00001: one purchase, one confirmed load, one reversed load.
    REQUIRE(rig.code(upload_message(Tap{}, 1)) == "00");
    Load load;
    REQUIRE(rig.code(load_request(load, 2)) == "00");
    REQUIRE(rig.code(load_confirmation(load, 3)) == "00");
    REQUIRE(rig.code(load_confirmation(load, 3)) == "00");  // a repeat adds nothing
    Load second;
    second.atc = 8;
    second.amount_fen = 1000;
    REQUIRE(rig.code(load_request(second, 4)) == "00");
    REQUIRE(rig.code(load_reversal(second, 4)) == "00");
    Message bus = totals_message("BUS00001", 9, {1, 1, 1, 0, 3000, 1000, 200, 0});
    const Message balanced = rig.send(bus);
    CHECK(*balanced.get(39) == "00");
    CHECK(*balanced.get(97) == "C0000000000001800");  // 200 − 3000 + 1000
    bus.set_number(87, 0, 16);
    CHECK(rig.code(bus) == "95");
    // CLINIC01: one completion (partial), one reversed hold.
    REQUIRE(rig.code(clinic_authorization(rig, 5000, 1)) == "00");
    REQUIRE(rig.code(clinic_completion(4200, 2, 1)) == "00");
    REQUIRE(rig.code(clinic_authorization(rig, 3000, 3)) == "00");
    REQUIRE(rig.code(clinic_reversal(3000, 4, 3)) == "00");
    const Message clinic_answer = rig.send(totals_message("CLINIC01", 5, {0, 0, 1, 1, 0, 0, 4200, 3000}));
    CHECK(*clinic_answer.get(39) == "00");
    CHECK(*clinic_answer.get(97) == "D0000000000001200");
    rig.require_check();
}

// ---- check ----------------------------------------------------------------------------------------------------

TEST_CASE("check finds a status changed behind the hotlist's back and a load record without its transfer") {
    Rig rig;
    rig.sign_on();
    REQUIRE(rig.code(load_request(Load{}, 1)) == "00");
    REQUIRE(set_card_status(*rig.ledger, *rig.registry, asn_of(card_b), CardStatus::blocked).ok());
    auto clean = check(*rig.ledger, *rig.registry);
    REQUIRE(clean.ok());
    CHECK(clean->ok());
    CHECK(clean->load_attempts == 1);
    CHECK(clean->hotlist_version == 1);

    CardRecord lost = rig.card(card_a);
    lost.status = CardStatus::lost;
    auto txn = lmdb::Txn::begin(rig.ledger->env(), lmdb::Txn::Mode::read_write);
    REQUIRE(txn.ok());
    REQUIRE(rig.registry->put_card(*txn, lost).ok());  // no hotlist entry
    LoadAttempt orphan{0, ledger::Id{}, 500, "BUS00001"};
    REQUIRE(rig.registry->put_load_attempt(*txn, asn_of(card_b), 3, orphan).ok());  // no transfer
    REQUIRE(txn->commit().ok());
    auto report = check(*rig.ledger, *rig.registry);
    REQUIRE(report.ok());
    REQUIRE(report->problems.size() == 2);
    CHECK(report->problems[0].find("load of card " + card_b + " online ATC 3") != std::string::npos);
    CHECK(report->problems[1] == "card " + card_a + " is not active but not on the hotlist log");
}

// ---- shadow_mismatch with out-of-order uploads and loads ------------------------------------------------------

TEST_CASE("shadow_mismatch: compared only when every earlier offline ATC is booked, within the card's known loads") {
    Rig rig;
    rig.sign_on();
    auto tap = [](std::uint16_t atc, std::uint32_t before, const std::string& time = "103000") {
        Tap t;
        t.atc = atc;
        t.balance_before_fen = before;
        t.time = time;
        return t;
    };
    // Out of order: 0, 2, 3, then 1. ATC 3 follows the highest seen, but 1 is missing: not compared.
    CHECK(rig.code(upload_message(tap(0, 5000), 1)) == "00");
    CHECK(rig.code(upload_message(tap(2, 4600), 2)) == "00");
    CHECK(rig.code(upload_message(tap(3, 4400), 3)) == "00");
    CHECK(rig.code(upload_message(tap(1, 4800), 4)) == "00");
    CHECK(rig.flags_of(RiskKind::shadow_mismatch) == 0);
    CHECK(rig.card(card_a).offline_atc_next == 4);
    CHECK(rig.card(card_a).offline_atc_ahead == 0);
    CHECK(rig.shadow(card_a) == 4200);
    // A load approved and credited on the card, its 0220 not uploaded yet: the card holds 7200.
    Load load;
    load.old_balance_fen = 4200;
    load.amount_fen = 3000;
    REQUIRE(rig.code(load_request(load, 5)) == "00");
    CHECK(rig.card(card_a).unconfirmed_loads_fen == 3000);
    CHECK(rig.code(upload_message(tap(4, 7200, "120000"), 6)) == "00");
    CHECK(rig.flags_of(RiskKind::shadow_mismatch) == 0);
    REQUIRE(rig.code(load_confirmation(load, 7)) == "00");
    CHECK(rig.card(card_a).unconfirmed_loads_fen == 0);
    CHECK(rig.shadow(card_a) == 7000);
    // More than the shadow and the card's unconfirmed loads: flagged.
    CHECK(rig.code(upload_message(tap(5, 7500, "120500"), 8)) == "00");
    CHECK(rig.flags_of(RiskKind::shadow_mismatch) == 1);
    // Less than the shadow while every posted load precedes the purchase on the card: flagged.
    CHECK(rig.code(upload_message(tap(6, 6000, "121000"), 9)) == "00");
    CHECK(rig.flags_of(RiskKind::shadow_mismatch) == 2);
    // A load credited after a purchase and posted before that purchase's upload: the card held less, no flag.
    Load later;
    later.atc = 8;
    later.old_balance_fen = 5800;
    later.amount_fen = 1000;
    later.time = "130000";
    REQUIRE(rig.code(load_request(later, 10)) == "00");
    REQUIRE(rig.code(load_confirmation(later, 11)) == "00");
    CHECK(rig.code(upload_message(tap(7, 5800, "125900"), 12)) == "00");
    CHECK(rig.flags_of(RiskKind::shadow_mismatch) == 2);
    rig.require_check();
}

// ---- 0500: reversals ---------------------------------------------------------------------------------------------

TEST_CASE("0500: every reversal answered 00 counts once with its own field 4 — unknown original, partial hold, repeats") {
    Rig rig;
    rig.sign_on();
    rig.sign_on("CLINIC01");
    // The 0100 asked 25000 and the medical account holds 20000: held 20000 (10), the 0110 lost; the
    // terminal reverses what it asked.
    const Message partial = rig.send(clinic_authorization(rig, 25000, 1));
    REQUIRE(*partial.get(39) == "10");
    CHECK(rig.code(clinic_reversal(25000, 2, 1, "0420")) == "00");
    CHECK(rig.code(clinic_reversal(25000, 3, 1, "0421")) == "00");  // its repeat (new STAN): counted once
    CHECK(rig.state(hold_id(1)) == ledger::PendingState::voided);
    // A 0420 whose 0100 never arrived: acknowledged, nothing booked, counted once.
    CHECK(rig.code(clinic_reversal(700, 4, 50, "0420")) == "00");
    CHECK(rig.code(clinic_reversal(700, 5, 50, "0421")) == "00");
    // A 0400 for an unknown hold is refused (25): not counted by either side.
    CHECK(rig.code(clinic_reversal(900, 6, 51)) == "25");
    CHECK(rig.code(totals_message("CLINIC01", 7, {0, 0, 0, 2, 0, 0, 0, 25700})) == "00");
    CHECK(rig.medical(card_a) == 20000);
    // A load reversal (0420) of a 0200 the clearing never received: counted as a credit reversal.
    Load load;
    CHECK(rig.code(load_reversal(load, 1, "0420")) == "00");
    CHECK(rig.code(load_reversal(load, 2, "0421")) == "00");
    CHECK(rig.code(totals_message("BUS00001", 3, {0, 1, 0, 0, 0, 3000, 0, 0})) == "00");
    CHECK(rig.shadow(card_a) == 5000);
    rig.require_check();
}

// ---- the clinic visit reference (ISO8583.md §4.9) ------------------------------------------------------------------

namespace {

// The visit linked to `id` from `side` (the hold's purse part, or the purse part's hold), as recorded.
std::optional<ledger::Id> visit_of(Rig& rig, const ledger::Id& id, Registry::VisitSide side) {
    auto txn = rig.ledger->begin_read();
    REQUIRE(txn.ok());
    auto found = rig.registry->visit_in(*txn, id, side);
    REQUIRE(found.ok());
    return *found;
}

// A purse purchase at CLINIC01 whose 0320 carries DF11 = `visit`; its response code.
std::string visit_part(Rig& rig, const Tap& tap, std::uint32_t stan, std::optional<iso8583::VisitReference> visit) {
    Message m = upload_message(tap, stan, "CLINIC01");
    auto t = parse_purse_transaction(*m.get(62));
    REQUIRE(t.ok());
    t->visit = visit;
    m.set(62, encode_purse_transaction(*t));
    return rig.code(m);
}

}  // namespace

TEST_CASE("0320 with DF11: the purse part is linked to its visit's hold only for the same card, terminal and hold life; always booked") {
    Rig rig;
    rig.sign_on("CLINIC01");
    REQUIRE(rig.code(clinic_authorization(rig, 8000, 1)) == "00");  // the visit: batch 1, STAN 1, card A
    // The 0100's field 7 is 11-26 02:30:00 UTC (online_message): 10:30 in Hainan, the visit's time on the terminal's clock.
    Tap part;
    part.type = crypto::type_ep_purchase;
    part.amount_fen = 1000;
    part.terminal = clinic_psam_terminal;
    part.date = "20261126";
    part.time = "103200";
    const iso8583::VisitReference visit{1, 1};

    Tap other_card = part;
    other_card.asn = card_b;
    CHECK(visit_part(rig, other_card, 2, visit) == "00");  // booked, but another card's hold
    CHECK_FALSE(visit_of(rig, purchase_id(other_card), Registry::VisitSide::purse).has_value());
    Tap days_before = part;
    days_before.atc = 1;
    days_before.date = "20261120";
    CHECK(visit_part(rig, days_before, 3, visit) == "00");  // outside the hold's life
    CHECK_FALSE(visit_of(rig, purchase_id(days_before), Registry::VisitSide::purse).has_value());
    Tap unknown = part;
    unknown.atc = 2;
    CHECK(visit_part(rig, unknown, 4, iso8583::VisitReference{1, 99}) == "00");  // no such hold
    CHECK_FALSE(visit_of(rig, purchase_id(unknown), Registry::VisitSide::purse).has_value());
    CHECK_FALSE(visit_of(rig, hold_id(1), Registry::VisitSide::hold).has_value());

    Tap late = part;
    late.atc = 5;
    late.time = "105200";  // 22 minutes on: past the hold's 15 minutes and the 5 minutes' slack
    CHECK(visit_part(rig, late, 8, visit) == "00");
    CHECK_FALSE(visit_of(rig, purchase_id(late), Registry::VisitSide::purse).has_value());
    auto hold = rig.ledger->lookup_transfer(hold_id(1));
    REQUIRE(hold.ok());
    CHECK(to_hex(parse_place((*hold)->user_data_128).local_time_bcd) == "2611261030");  // field 7 in Hainan time

    Tap fits = part;
    fits.atc = 3;
    CHECK(visit_part(rig, fits, 5, visit) == "00");
    CHECK(visit_of(rig, hold_id(1), Registry::VisitSide::hold) == std::optional<ledger::Id>(purchase_id(fits)));
    CHECK(visit_of(rig, purchase_id(fits), Registry::VisitSide::purse) == std::optional<ledger::Id>(hold_id(1)));
    CHECK(visit_part(rig, fits, 6, visit) == "00");  // the repeat: answered as booked, the link unchanged
    Tap second = part;
    second.atc = 4;
    CHECK(visit_part(rig, second, 7, visit) == "00");  // one purse part per visit
    CHECK_FALSE(visit_of(rig, purchase_id(second), Registry::VisitSide::purse).has_value());
    CHECK(visit_of(rig, hold_id(1), Registry::VisitSide::hold) == std::optional<ledger::Id>(purchase_id(fits)));
    // Nothing of it moved money: the card's purse paid the five purchases, the hold is as it was.
    CHECK(rig.account(medical_account(asn_of(card_a))).debits_pending == 8000);
    rig.require_check();
}

TEST_CASE("0100 with DF11: its own batch and STAN are accepted; another visit's reference is 30, nothing held") {
    Rig rig;
    rig.sign_on("CLINIC01");
    Message own = clinic_authorization(rig, 3000, 1);
    auto data = iso8583::parse_clinic_authorization(*own.get(62));
    REQUIRE(data.ok());
    data->visit = iso8583::VisitReference{1, 1};
    own.set(62, iso8583::encode_clinic_authorization(*data));
    CHECK(rig.code(own) == "00");
    Message other = clinic_authorization(rig, 3000, 2);
    data = iso8583::parse_clinic_authorization(*other.get(62));
    REQUIRE(data.ok());
    data->visit = iso8583::VisitReference{1, 1};
    other.set(62, iso8583::encode_clinic_authorization(*data));
    CHECK(rig.code(other) == "30");
    CHECK(rig.account(medical_account(asn_of(card_a))).debits_pending == 3000);
}

// ---- the cardholder's history (GET /v1/cards/{n}/history, clearing/README.md "HTTP API") ---------------------------

namespace {

struct HistoryApi {
    http::HttpOptions options;
    http::HttpStats stats;
    std::unique_ptr<http::Api> api;
    std::string card_token;

    explicit HistoryApi(Rig& rig) {
        http::Services services{*rig.ledger, rig.writer, *rig.registry, rig.daemon->tokens(),      nullptr, nullptr,
                                nullptr,     nullptr,    nullptr,       rig.daemon->options().data};
        api = std::make_unique<http::Api>(services, options, stats);
        auto clerk = http::add_clerk(*rig.ledger, rig.daemon->tokens(), "registrar", http::roles::registry);
        REQUIRE(clerk.ok());
        const auto issued = call("POST", "/v1/clerk/cards/" + card_a.substr(4) + "/token", *clerk);
        REQUIRE(issued.status == 201);
        card_token = nlohmann::json::parse(issued.body)["token"].get<std::string>();
    }
    http::ApiResponse call(const std::string& method, const std::string& target, const std::string& token) {
        std::promise<http::ApiResponse> answered;
        const std::string authorization = "Bearer " + token;
        api->handle(http::ApiRequest{method, target, authorization, {}, {}},
                    [&answered](http::ApiResponse r) { answered.set_value(std::move(r)); });
        auto future = answered.get_future();
        REQUIRE(future.wait_for(std::chrono::seconds(30)) == std::future_status::ready);
        return future.get();
    }
    nlohmann::json rows(const std::string& query = "") {
        const auto answer = call("GET", "/v1/cards/" + card_a.substr(4) + "/history" + query, card_token);
        REQUIRE_MESSAGE(answer.status == 200, answer.body);
        return nlohmann::json::parse(answer.body);
    }
};

}  // namespace

TEST_CASE("history: a visit's hold, completion and linked purse part are one row; a reversed visit one row; nothing else folded") {
    Rig rig;
    rig.sign_on("CLINIC01");
    HistoryApi history(rig);
    // Visit 1 (10:30 on the terminal's clock): 80 held, the purse pays 10 (DF11), the hold completed for 80.
    REQUIRE(rig.code(clinic_authorization(rig, 8000, 1)) == "00");
    Tap part;
    part.type = crypto::type_ep_purchase;
    part.amount_fen = 1000;
    part.terminal = clinic_psam_terminal;
    part.time = "103300";
    REQUIRE(visit_part(rig, part, 2, iso8583::VisitReference{1, 1}) == "00");
    REQUIRE(rig.code(clinic_completion(8000, 3, 1)) == "00");
    // Visit 2: 30 held, then reversed (the bill was not paid).
    REQUIRE(rig.code(clinic_authorization(rig, 3000, 4)) == "00");
    REQUIRE(rig.code(clinic_reversal(3000, 5, 4)) == "00");
    // A purchase at the clinic without a visit reference: a payment of its own.
    Tap plain = part;
    plain.atc = 1;
    plain.amount_fen = 500;
    REQUIRE(visit_part(rig, plain, 6, std::nullopt) == "00");

    const auto page = history.rows();
    const auto& rows = page["rows"];
    REQUIRE(rows.size() == 5);  // plain purchase, visit 2, visit 1, the two opening balances
    CHECK(rows[0]["kind"] == "clinic");
    CHECK(rows[0]["amount_fen"] == -500);
    CHECK(rows[1]["kind"] == "clinic_visit");
    CHECK(rows[1]["state"] == "reversed");
    CHECK(rows[1]["amount_fen"] == 0);
    CHECK(rows[1]["parts"].size() == 1);
    CHECK(rows[1]["parts"][0]["held_fen"] == 3000);
    const auto& visit = rows[2];
    CHECK(visit["kind"] == "clinic_visit");
    CHECK(visit["state"] == "completed");
    CHECK(visit["time"] == "2026-11-26T10:30+08:00");  // the 0100's field 7 in Hainan time
    CHECK(visit["time_source"] == "terminal");
    CHECK(visit["place"]["participant"] == "Haikou Clinic");
    CHECK(visit["amount_fen"] == -9000);
    REQUIRE(visit["parts"].size() == 2);
    CHECK(visit["parts"][0] == nlohmann::json{{"account", "medical"}, {"amount_fen", -8000}, {"state", "posted"}, {"held_fen", 8000}});
    CHECK(visit["parts"][1] == nlohmann::json{{"account", "purse"}, {"amount_fen", -1000}, {"state", "posted"}});
    CHECK(rows[3]["kind"] == "load");
    CHECK(rows[4]["kind"] == "load");
    CHECK(page["next_cursor"].is_null());
    // Pages of one row: the same rows, each once.
    std::vector<std::string> ids;
    std::string cursor;
    for (int pages = 0; pages < 10; ++pages) {
        const auto one = history.rows("?limit=1" + (cursor.empty() ? "" : "&cursor=" + cursor));
        REQUIRE(one["rows"].size() == 1);
        ids.push_back(one["rows"][0]["id"].get<std::string>());
        if (one["next_cursor"].is_null()) break;
        cursor = one["next_cursor"].get<std::string>();
    }
    REQUIRE(ids.size() == rows.size());
    for (std::size_t i = 0; i < ids.size(); ++i) CHECK(ids[i] == rows[i]["id"]);
    CHECK(history.call("GET", "/v1/cards/" + card_a.substr(4) + "/history?cursor=abc", history.card_token).status == 400);
    CHECK(history.call("GET", "/v1/cards/" + card_b.substr(4) + "/history", history.card_token).status == 404);
}
