// The SDK's online flows against the real clearing engine and ISO 8583 server on loopback (in-process HSM,
// LMDB ledger in a temporary directory), with in-process cards whose reader can lose the card at a chosen
// APDU: the card pulled during CREDIT FOR LOAD is resolved on its next presentation — confirmed (0221) or
// reversed (0421) — and the clearing's shadow balance ends equal to the card's balance; a reversed load
// attempt does not block the next load on the same online ATC; reconciliation balances.
#include "link_rig.hpp"

using namespace clearing_test;
using namespace link_test;
namespace sdk = coconut::sdk;

TEST_CASE("link: an online load through the real clearing posts the load; shadow = card") {
    LinkRig rig;
    auto loaded = rig.terminal->load(1500, *rig.client);
    REQUIRE_MESSAGE(loaded.ok(), (loaded.ok() ? "" : loaded.error().message));
    CHECK(loaded->confirmed);
    CHECK(rig.card_balance() == 6500);
    CHECK(rig.clearing.shadow(card_a) == 6500);
    CHECK(rig.queue->size() == 0);
}

TEST_CASE("link: card pulled after CREDIT ran — the next presentation confirms it (0221); shadow = card") {
    LinkRig rig;
    rig.lose_card_at_credit(sdk::Fault::after_card);
    auto loaded = rig.terminal->load(1500, *rig.client);
    REQUIRE_FALSE(loaded.ok());
    CHECK(loaded.error().code == sdk::FlowErrorCode::card_removed);
    CHECK(rig.card_balance() == 6500);
    CHECK(rig.clearing.shadow(card_a) == 5000);  // pending at the clearing: not in the posted shadow

    rig.present_again();
    auto recovered = rig.terminal->recover();
    REQUIRE(recovered.ok());
    REQUIRE(recovered->recorded.size() == 1);
    auto report = rig.client->upload(*rig.queue);
    REQUIRE_MESSAGE(report.ok(), (report.ok() ? "" : report.error().message));
    CHECK(report->approved == 1);
    CHECK(rig.queue->size() == 0);
    CHECK(rig.clearing.shadow(card_a) == 6500);
    auto reconciled = rig.client->reconcile();
    REQUIRE(reconciled.ok());
    CHECK(reconciled->balanced);
}

TEST_CASE("link: CREDIT never reached the card — reversed (0421) on its return; the next load on the same ATC works") {
    LinkRig rig;
    rig.lose_card_at_credit(sdk::Fault::before_card);
    auto loaded = rig.terminal->load(1500, *rig.client);
    REQUIRE_FALSE(loaded.ok());
    CHECK(rig.card_balance() == 5000);

    rig.present_again();
    auto recovered = rig.terminal->recover();
    REQUIRE(recovered.ok());
    REQUIRE(recovered->reversed.size() == 1);
    auto report = rig.client->upload(*rig.queue);
    REQUIRE(report.ok());
    CHECK(report->acknowledged == 1);
    CHECK(rig.clearing.shadow(card_a) == 5000);

    // The card's online ATC did not move: the clearing takes the next attempt on that ATC as a new load.
    auto again = rig.terminal->load(700, *rig.client);
    REQUIRE_MESSAGE(again.ok(), (again.ok() ? "" : again.error().message));
    CHECK(again->confirmed);
    CHECK(rig.card_balance() == 5700);
    CHECK(rig.clearing.shadow(card_a) == 5700);
    auto reconciled = rig.client->reconcile();
    REQUIRE(reconciled.ok());
    CHECK(reconciled->balanced);
    CHECK(reconciled->totals.credits_fen == 700);
    CHECK(reconciled->totals.credit_reversals_fen == 1500);
}

TEST_CASE("link: the 0210 is lost after the clearing booked the load — the 0420 voids it; shadow = card; balanced") {
    LinkRig rig;
    auto upstream = std::make_shared<Upstream>(rig.server->port());
    sdk_test::FakeHost proxy([upstream](const Message& request) -> std::optional<Message> {
        auto answer = upstream->call(request);
        if (request.mti() == "0200") return std::nullopt;  // booked upstream, the answer lost on the way back
        return answer;
    });
    rig.connect_through(proxy.port());
    auto loaded = rig.terminal->load(1500, *rig.client);
    REQUIRE_FALSE(loaded.ok());
    CHECK(loaded.error().code == sdk::FlowErrorCode::no_answer);
    CHECK(loaded.error().reversed);
    CHECK(proxy.received("0420").size() == 1);
    CHECK(rig.queue->size() == 0);
    CHECK(rig.card_balance() == 5000);
    CHECK(rig.clearing.shadow(card_a) == 5000);
    auto reconciled = rig.client->reconcile();
    REQUIRE(reconciled.ok());
    CHECK(reconciled->balanced);
    CHECK(reconciled->totals.credit_reversals_fen == 1500);
}

TEST_CASE("link: the 0200 never reached the clearing — the 0420 is acknowledged with nothing booked; both count it; 0500 balances") {
    LinkRig rig;
    auto upstream = std::make_shared<Upstream>(rig.server->port());
    sdk_test::FakeHost proxy([upstream](const Message& request) -> std::optional<Message> {
        if (request.mti() == "0200") return std::nullopt;  // lost on the way to the clearing
        return upstream->call(request);
    });
    rig.connect_through(proxy.port());
    auto loaded = rig.terminal->load(1500, *rig.client);
    REQUIRE_FALSE(loaded.ok());
    CHECK(loaded.error().code == sdk::FlowErrorCode::no_answer);
    CHECK(rig.queue->size() == 0);  // the 0430 answered 00 (ISO8583.md §4.5: an advice is always acknowledged)
    CHECK(rig.card_balance() == 5000);
    CHECK(rig.clearing.shadow(card_a) == 5000);
    // Both sides count every reversal answered 00 with its field 4 (ISO8583.md §4.7), booked or not.
    auto reconciled = rig.client->reconcile();
    REQUIRE(reconciled.ok());
    CHECK(reconciled->balanced);
    CHECK(reconciled->totals.credit_reversals_count == 1);
    CHECK(reconciled->totals.credit_reversals_fen == 1500);
}

// ---- lost messages (ClearingOptions::link_faults) ----------------------------------------------------

TEST_CASE("link faults: a lost 0200 never reaches the clearing — the link closes, the flow reverses, nothing booked") {
    LinkRig rig;
    rig.connect_through(rig.server->port(), LoseNth{"0200", 1, sdk::LinkFault::lose_request});
    auto loaded = rig.terminal->load(1500, *rig.client);
    REQUIRE_FALSE(loaded.ok());
    CHECK(loaded.error().code == sdk::FlowErrorCode::no_answer);
    CHECK(loaded.error().reversed);
    CHECK(rig.queue->size() == 0);
    CHECK(rig.card_balance() == 5000);
    CHECK(rig.clearing.shadow(card_a) == 5000);
    CHECK(rig.client->link_stats().connects == 2);  // the 0400 went over a new connection
    auto reconciled = rig.client->reconcile();
    REQUIRE(reconciled.ok());
    CHECK(reconciled->balanced);
}

TEST_CASE("link faults: a lost 0210 — the clearing booked the load, the 0400 voids it; shadow = card") {
    LinkRig rig;
    rig.connect_through(rig.server->port(), LoseNth{"0200", 1, sdk::LinkFault::lose_answer});
    auto loaded = rig.terminal->load(1500, *rig.client);
    REQUIRE_FALSE(loaded.ok());
    CHECK(loaded.error().code == sdk::FlowErrorCode::no_answer);
    CHECK(loaded.error().reversed);
    CHECK(rig.card_balance() == 5000);
    CHECK(rig.clearing.shadow(card_a) == 5000);
    auto reconciled = rig.client->reconcile();
    REQUIRE(reconciled.ok());
    CHECK(reconciled->balanced);
    CHECK(reconciled->totals.credit_reversals_fen == 1500);
}

TEST_CASE("link faults: a request lost inside a pipelined upload — exactly the records before it are booked and acknowledged") {
    LinkRig rig;
    buy(rig, 6, 100);
    rig.connect_through(rig.server->port(), LoseNth{"0320", 3, sdk::LinkFault::lose_request});
    auto first = rig.client->upload(*rig.queue);
    REQUIRE_FALSE(first.ok());
    CHECK(first.error().code == sdk::ClearingErrorCode::closed);
    CHECK(rig.client->last_report().acknowledged == 2);
    CHECK(rig.queue->size() == 4);
    CHECK(rig.clearing.shadow(card_a) == 5000 - 2 * 100);  // the 3rd and everything after it never arrived

    auto second = rig.client->upload(*rig.queue);  // a new connection; the fault was for the 3rd 0320 only
    REQUIRE_MESSAGE(second.ok(), (second.ok() ? "" : second.error().message));
    CHECK(second->acknowledged == 4);
    CHECK(rig.queue->size() == 0);
    CHECK(rig.clearing.shadow(card_a) == rig.card_balance());
}

TEST_CASE("link faults: an answer lost inside a pipelined upload — its record is booked, kept, and re-uploaded onto the same id") {
    LinkRig rig;
    buy(rig, 6, 100);
    rig.connect_through(rig.server->port(), LoseNth{"0320", 3, sdk::LinkFault::lose_answer});
    auto first = rig.client->upload(*rig.queue);
    REQUIRE_FALSE(first.ok());
    CHECK(first.error().code == sdk::ClearingErrorCode::closed);
    CHECK(rig.client->last_report().acknowledged == 2);
    CHECK(rig.queue->size() == 4);
    CHECK(rig.clearing.shadow(card_a) == 5000 - 3 * 100);  // the 3rd was booked, its answer lost

    auto second = rig.client->upload(*rig.queue);
    REQUIRE_MESSAGE(second.ok(), (second.ok() ? "" : second.error().message));
    CHECK(second->acknowledged == 4);
    CHECK(rig.queue->size() == 0);
    CHECK(rig.clearing.shadow(card_a) == rig.card_balance());  // booked once
    CHECK(rig.card_balance() == 5000 - 6 * 100);
}
