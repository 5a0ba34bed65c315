// Service-counter flows (maintenance.hpp, Terminal::return_card): APPLICATION BLOCK with a MAC from a
// provider standing in for the HSM (the DAMK recomputed here from the maintenance master, independently
// of the card OS), the whole-balance return with its TAC, and cards pulled at every step of a return.
#include "test_sdk_support.hpp"

using namespace sdk_test;

namespace {

bool is_command(ByteView command, std::uint8_t cla, std::uint8_t ins) {
    return command.size() >= 2 && command[0] == cla && command[1] == ins;
}

// The rig's cards take their DAMK from master_dlk (test_sdk_support.hpp card_profile).
MaintenanceMacProvider hsm_like(const std::string& maintenance_master = master_dlk, int* calls = nullptr) {
    return [=](const MaintenanceMacRequest& r) -> Result<crypto::Mac4, std::string> {
        if (calls) ++*calls;
        crypto::Block issuer{};
        std::copy(r.issuer_id.begin(), r.issuer_id.end(), issuer.begin());
        const crypto::Key16 damk =
            crypto::diversify(crypto::diversify(crypto::Key16(hex(maintenance_master)), issuer), crypto::card_factor_from_asn(r.asn));
        return crypto::maintenance_mac(damk, r.header, r.challenge);
    };
}

MaintenanceMacProvider hsm_down() {
    return [](const MaintenanceMacRequest&) -> Result<crypto::Mac4, std::string> { return Unexpected{std::string("connection refused")}; };
}

}  // namespace

TEST_SUITE_BEGIN("sdk counter");

TEST_CASE("block_application: a temporary block with the HSM's MAC; the card then refuses purchases (SELECT 6283)") {
    Rig rig;
    auto blocked = block_application(rig.card_reader, hsm_like(), false);
    REQUIRE_MESSAGE(blocked.ok(), blocked.error().message);
    CHECK(blocked->card.asn_digits() == "10000000000000012345");
    CHECK_FALSE(blocked->was_blocked);
    CHECK(rig.snap().application_block == 1);
    auto purchase = rig.terminal->purchase(100);
    REQUIRE_FALSE(purchase.ok());
    CHECK(purchase.error().code == FlowErrorCode::card_error);
    CHECK(purchase.error().sw == 0x6283);
    CHECK(rig.snap().balance_fen == 10000);
    // Again, permanent: the card was blocked, and now is for good.
    auto again = block_application(rig.card_reader, hsm_like(), true);
    REQUIRE(again.ok());
    CHECK(again->was_blocked);
    CHECK(again->permanent);
    CHECK(rig.snap().application_block == 2);
}

TEST_CASE("unblock_application lifts a temporary block; a permanent block stays (9303)") {
    Rig rig;
    REQUIRE(block_application(rig.card_reader, hsm_like(), false).ok());
    auto wrong = unblock_application(rig.card_reader, hsm_like(master_dtk));
    REQUIRE_FALSE(wrong.ok());
    CHECK(wrong.error().sw == 0x9302);
    CHECK(rig.snap().application_block == 1);
    auto unblocked = unblock_application(rig.card_reader, hsm_like());
    REQUIRE_MESSAGE(unblocked.ok(), unblocked.error().message);
    CHECK(unblocked->was_blocked);
    CHECK(rig.snap().application_block == 0);
    CHECK(rig.terminal->purchase(100).ok());
    REQUIRE(block_application(rig.card_reader, hsm_like(), true).ok());
    auto refused = unblock_application(rig.card_reader, hsm_like());
    REQUIRE_FALSE(refused.ok());
    CHECK(refused.error().code == FlowErrorCode::card_error);
    CHECK(refused.error().sw == 0x9303);
    CHECK(refused.error().message.find("for good") != std::string::npos);
    CHECK(rig.snap().application_block == 2);
    auto down = unblock_application(rig.card_reader, hsm_down());
    REQUIRE_FALSE(down.ok());
    CHECK(down.error().code == FlowErrorCode::hsm_error);
}

TEST_CASE("block_application: no MAC from the HSM → hsm_error; a MAC under another key → card_error 6988; the card stays usable") {
    Rig rig;
    auto down = block_application(rig.card_reader, hsm_down(), true);
    REQUIRE_FALSE(down.ok());
    CHECK(down.error().code == FlowErrorCode::hsm_error);
    CHECK(down.error().message.find("connection refused") != std::string::npos);
    auto wrong = block_application(rig.card_reader, hsm_like(master_dtk), true);
    REQUIRE_FALSE(wrong.ok());
    CHECK(wrong.error().code == FlowErrorCode::card_error);
    CHECK(wrong.error().sw == 0x6988);
    CHECK(wrong.error().message.find("6988") != std::string::npos);
    CHECK(rig.snap().application_block == 0);
    CHECK(rig.terminal->purchase(100).ok());
    rig.card_reader.insert(nullptr);
    auto absent = block_application(rig.card_reader, hsm_like(), true);
    REQUIRE_FALSE(absent.ok());
    CHECK(absent.error().code == FlowErrorCode::no_card);
}

TEST_CASE("return_card: the whole balance by a TAC-proven purchase, queued, then a permanent block; a second run takes nothing") {
    Rig rig(4321);
    auto returned = rig.terminal->return_card(hsm_like());
    REQUIRE_MESSAGE(returned.ok(), returned.error().message);
    CHECK(returned->balance_fen == 4321);
    REQUIRE(returned->debit.has_value());
    CHECK(returned->debit->amount_fen == 4321);
    CHECK(returned->debit->type == crypto::type_ep_purchase);
    CHECK(returned->debit->tac == expected_tac(*returned->debit));
    CHECK(rig.snap().balance_fen == 0);
    CHECK(rig.snap().application_block == 2);
    REQUIRE(rig.queue->size() == 1);
    CHECK(rig.queue->batch(10).front().record.tac == returned->debit->tac);

    auto again = rig.terminal->return_card(hsm_like());
    REQUIRE(again.ok());
    CHECK(again->was_blocked);
    CHECK_FALSE(again->debit.has_value());
    CHECK(rig.queue->size() == 1);
    CHECK(rig.queued_total() == 4321);
}

TEST_CASE("return_card on a T=0 card: the same debit and block through 61xx / GET RESPONSE, and SELECT 6283 after") {
    Rig rig(2222, "T=0");
    auto returned = rig.terminal->return_card(hsm_like());
    REQUIRE_MESSAGE(returned.ok(), returned.error().message);
    REQUIRE(returned->debit.has_value());
    CHECK(returned->debit->amount_fen == 2222);
    CHECK(returned->debit->tac == expected_tac(*returned->debit));
    CHECK(rig.snap().application_block == 2);
    auto again = rig.terminal->return_card(hsm_like());
    REQUIRE_MESSAGE(again.ok(), again.error().message);
    CHECK(again->was_blocked);
    CHECK(again->card.asn_digits() == "10000000000000012345");
    CHECK(rig.queue->size() == 1);
}

TEST_CASE("return_card of an empty card blocks it without a debit") {
    Rig rig(0);
    auto returned = rig.terminal->return_card(hsm_like());
    REQUIRE(returned.ok());
    CHECK(returned->balance_fen == 0);
    CHECK_FALSE(returned->debit.has_value());
    CHECK(rig.snap().application_block == 2);
    CHECK(rig.queue->size() == 0);
}

TEST_CASE("return_card, card pulled between the debit and the block: run again → no second debit, the block is finished") {
    Rig rig(5000);
    rig.card_reader.set_fault_plan([](std::size_t, ByteView c) { return is_command(c, 0x00, 0x84) ? Fault::before_card : Fault::none; });
    auto first = rig.terminal->return_card(hsm_like());
    REQUIRE_FALSE(first.ok());
    CHECK(first.error().code == FlowErrorCode::card_removed);
    CHECK(rig.snap().balance_fen == 0);
    CHECK(rig.snap().application_block == 0);
    CHECK(rig.queue->size() == 1);

    rig.card_reader.set_fault_plan(nullptr);
    rig.reopen_card();
    auto second = rig.terminal->return_card(hsm_like());
    REQUIRE_MESSAGE(second.ok(), second.error().message);
    CHECK(second->balance_fen == 0);
    CHECK_FALSE(second->debit.has_value());
    CHECK(rig.snap().application_block == 2);
    CHECK(rig.queue->size() == 1);
    CHECK(rig.queued_total() == 5000);
}

TEST_CASE("return_card, card pulled during DEBIT after the card debited: run again → the debit is recovered once, then the block") {
    Rig rig(2500);
    rig.card_reader.set_fault_plan([](std::size_t, ByteView c) { return is_command(c, 0x80, 0x54) ? Fault::after_card : Fault::none; });
    auto first = rig.terminal->return_card(hsm_like());
    REQUIRE_FALSE(first.ok());
    CHECK(first.error().code == FlowErrorCode::card_removed);
    CHECK(rig.snap().balance_fen == 0);
    CHECK(rig.queue->size() == 0);
    CHECK(rig.queue->open_intents().size() == 1);

    rig.card_reader.set_fault_plan(nullptr);
    rig.reopen_card();
    auto second = rig.terminal->return_card(hsm_like());
    REQUIRE_MESSAGE(second.ok(), second.error().message);
    REQUIRE(second->recovered.size() == 1);
    CHECK(second->recovered.front().amount_fen == 2500);
    CHECK(second->recovered.front().tac == expected_tac(second->recovered.front()));
    CHECK_FALSE(second->debit.has_value());
    CHECK(rig.snap().application_block == 2);
    CHECK(rig.queue->size() == 1);
    CHECK(rig.queue->open_intents().empty());
    CHECK(rig.queued_total() == 2500);
}

TEST_CASE("return_card, the block's answer lost (card pulled after it ran): run again → already blocked, nothing taken twice") {
    Rig rig(800);
    rig.card_reader.set_fault_plan([](std::size_t, ByteView c) { return is_command(c, 0x84, 0x1E) ? Fault::after_card : Fault::none; });
    auto first = rig.terminal->return_card(hsm_like());
    REQUIRE_FALSE(first.ok());
    CHECK(first.error().code == FlowErrorCode::card_removed);
    CHECK(rig.snap().application_block == 2);
    rig.card_reader.set_fault_plan(nullptr);
    rig.reopen_card();
    auto second = rig.terminal->return_card(hsm_like());
    REQUIRE(second.ok());
    CHECK(second->was_blocked);
    CHECK_FALSE(second->debit.has_value());
    CHECK(rig.queue->size() == 1);
    CHECK(rig.queued_total() == 800);
}

TEST_CASE("return_card: a hotlisted card's balance is not taken; the HSM down leaves the debit queued and the card unblocked") {
    Rig rig(3000);
    Asn card_asn{};
    const Bytes bcd = hex("10000000000000012345");
    std::copy(bcd.begin(), bcd.end(), card_asn.begin());
    REQUIRE(rig.hotlist.apply(HotlistDelta{0, 1, {{card_asn, BlockReason::lost}}, {}}).ok());
    auto refused = rig.terminal->return_card(hsm_like());
    REQUIRE_FALSE(refused.ok());
    CHECK(refused.error().code == FlowErrorCode::blocked_card);
    CHECK(rig.snap().balance_fen == 3000);
    CHECK(rig.snap().application_block == 0);
    CHECK(rig.queue->size() == 0);

    REQUIRE(rig.hotlist.apply(HotlistDelta{1, 2, {}, {card_asn}}).ok());
    auto down = rig.terminal->return_card(hsm_down());
    REQUIRE_FALSE(down.ok());
    CHECK(down.error().code == FlowErrorCode::hsm_error);
    CHECK(rig.snap().balance_fen == 0);
    CHECK(rig.queue->size() == 1);  // the TAC-proven debit is kept: the next run only blocks
    int calls = 0;
    auto retried = rig.terminal->return_card(hsm_like(master_dlk, &calls));
    REQUIRE(retried.ok());
    CHECK_FALSE(retried->debit.has_value());
    CHECK(calls == 1);
    CHECK(rig.snap().application_block == 2);
    CHECK(rig.queue->size() == 1);
}

TEST_CASE("an expired card is refused for a purchase but can be returned: its balance is still the holder's") {
    Rig rig(1500);
    rig.now = base_time() + std::chrono::hours(24 * 365 * 11);  // past the card's expiry (2036-12-31)
    auto purchase = rig.terminal->purchase(100);
    REQUIRE_FALSE(purchase.ok());
    CHECK(purchase.error().code == FlowErrorCode::expired_card);
    auto returned = rig.terminal->return_card(hsm_like());
    REQUIRE_MESSAGE(returned.ok(), returned.error().message);
    REQUIRE(returned->debit.has_value());
    CHECK(returned->debit->amount_fen == 1500);
    CHECK(rig.snap().application_block == 2);
}

TEST_CASE("a tourist card through the SDK: purchases work, the cardholder read finds no social-security application (6A82)") {
    TempDir dir;
    nlohmann::json profile = card_profile("10000000000000099999", 5000);
    profile["tourist"] = true;
    profile.erase("cardholder");
    profile["master_keys"].erase("ssse_iak");
    REQUIRE(cos::create_image(dir.path / "tourist.img", profile).ok());
    auto card = open_image(dir.path / "tourist.img");
    Rig rig;
    rig.card_reader.insert(card.get());
    auto bought = rig.terminal->purchase(1200);
    REQUIRE_MESSAGE(bought.ok(), bought.error().message);
    CHECK(bought->tac == expected_tac(*bought));
    CHECK(card->snapshot().balance_fen == 3800);
    auto holder = rig.terminal->cardholder();
    REQUIRE_FALSE(holder.ok());
    CHECK(holder.error().sw == 0x6A82);
    auto returned = rig.terminal->return_card(hsm_like());
    REQUIRE(returned.ok());
    CHECK(returned->balance_fen == 3800);
    CHECK(card->snapshot().application_block == 2);
}

TEST_SUITE_END();
