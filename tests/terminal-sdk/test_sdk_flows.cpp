// Terminal flows in-process: purchase, hotlist, recovery at every step, transit fares.
#include "test_sdk_support.hpp"

#include <set>

using namespace sdk_test;

namespace {
bool is_ins(ByteView command, std::uint8_t cla, std::uint8_t ins) { return command.size() >= 2 && command[0] == cla && command[1] == ins; }
}  // namespace

TEST_CASE("a shop purchase debits the card, queues one record, and its TAC verifies with the card's DTK") {
    Rig rig(10000);
    auto record = rig.terminal->purchase(1234);
    REQUIRE_MESSAGE(record.ok(), (record.ok() ? "" : record.error().message));
    CHECK(rig.snap().balance_fen == 10000 - 1234);
    CHECK(rig.snap().offline_atc == 1);
    CHECK(record->type == crypto::type_ep_purchase);
    CHECK(record->atc == 0);
    CHECK(record->balance_before_fen == 10000);
    CHECK(record->balance_after_fen == 8766);
    CHECK(record->terminal_serial == 1);
    CHECK(bcd_to_digits(record->terminal_id) == "000001000050");
    CHECK(format_date_time(record->when) == "2026-11-26 10:00:00");
    CHECK(to_hex(record->tac) == to_hex(expected_tac(*record)));
    CHECK_FALSE(record->mac2_unverified);
    REQUIRE(rig.queue->size() == 1);
    CHECK(rig.queue->open_intents().empty());
    // The record is durable: a reopened queue has it.
    rig.open_queue();
    REQUIRE(rig.queue->size() == 1);
    CHECK(to_hex(rig.queue->batch(1)[0].record.tac) == to_hex(record->tac));
}

TEST_CASE("a blocked card is refused with its reason and is not debited") {
    Rig rig(10000);
    Asn asn{};
    const Bytes a = hex("10000000000000012345");
    std::copy(a.begin(), a.end(), asn.begin());
    REQUIRE(rig.hotlist.apply(HotlistDelta{0, 1, {{asn, BlockReason::lost}}, {}}).ok());
    auto refused = rig.terminal->purchase(100);
    REQUIRE_FALSE(refused.ok());
    CHECK(refused.error().code == FlowErrorCode::blocked_card);
    CHECK(refused.error().block_reason == BlockReason::lost);
    CHECK(rig.snap().balance_fen == 10000);
    CHECK(rig.snap().offline_atc == 0);
    CHECK(rig.queue->size() == 0);
    REQUIRE(rig.hotlist.apply(HotlistDelta{1, 2, {}, {asn}}).ok());
    CHECK(rig.terminal->purchase(100).ok());
}

TEST_CASE("insufficient balance is refused with 9401; nothing charged or queued") {
    Rig rig(500);
    auto refused = rig.terminal->purchase(501);
    REQUIRE_FALSE(refused.ok());
    CHECK(refused.error().code == FlowErrorCode::insufficient_balance);
    CHECK(refused.error().sw == 0x9401);
    CHECK(rig.snap().balance_fen == 500);
    CHECK(rig.queue->size() == 0);
    CHECK(rig.queue->open_intents().empty());
}

TEST_CASE("card removed before INIT or after INIT: nothing charged, nothing queued, no intent left") {
    for (const std::uint8_t failing_ins : {std::uint8_t{0x50}, std::uint8_t{0x54}}) {
        CAPTURE(failing_ins);
        Rig rig(10000);
        rig.card_reader.set_fault_plan(
            [&](std::size_t, ByteView c) { return is_ins(c, 0x80, failing_ins) ? Fault::before_card : Fault::none; });
        auto r = rig.terminal->purchase(300);
        REQUIRE_FALSE(r.ok());
        CHECK(r.error().code == FlowErrorCode::card_removed);
        rig.card_reader.set_fault_plan(nullptr);
        rig.card_reader.insert(rig.card.get());
        CHECK(rig.snap().balance_fen == 10000);
        // A DEBIT that never reached the card leaves an intent; recover() proves it never ran.
        auto recovered = rig.terminal->recover();
        REQUIRE(recovered.ok());
        CHECK(recovered->recorded.empty());
        CHECK(rig.queue->open_intents().empty());
        CHECK(rig.queue->size() == 0);
        CHECK(rig.terminal->purchase(300).ok());
        CHECK(rig.snap().balance_fen == 9700);
        CHECK(rig.queue->size() == 1);
    }
}

TEST_CASE("DEBIT executed but its response lost: recover() records the charge exactly once with the proven TAC") {
    Rig rig(10000);
    rig.card_reader.set_fault_plan([](std::size_t, ByteView c) { return is_ins(c, 0x80, 0x54) ? Fault::after_card : Fault::none; });
    auto r = rig.terminal->purchase(700);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == FlowErrorCode::card_removed);
    CHECK(rig.snap().balance_fen == 9300);  // the card did debit
    CHECK(rig.queue->size() == 0);
    REQUIRE(rig.queue->open_intents().size() == 1);

    rig.card_reader.set_fault_plan(nullptr);
    rig.card_reader.insert(rig.card.get());
    auto recovered = rig.terminal->recover();
    REQUIRE(recovered.ok());
    REQUIRE(recovered->recorded.size() == 1);
    const TransactionRecord& rec = recovered->recorded[0];
    CHECK(rec.recovered);
    CHECK_FALSE(rec.unproven);
    CHECK(rec.amount_fen == 700);
    CHECK(to_hex(rec.tac) == to_hex(expected_tac(rec)));
    CHECK(rig.queue->size() == 1);
    CHECK(rig.queue->open_intents().empty());
    // A second recover, or the next purchase, does not record it again.
    CHECK(rig.terminal->recover()->recorded.empty());
    REQUIRE(rig.terminal->purchase(100).ok());
    CHECK(rig.queue->size() == 2);
    CHECK(rig.queued_total() + rig.snap().balance_fen == 10000);
}

TEST_CASE("the next tap of the same card resolves a lost DEBIT before charging again") {
    Rig rig(10000);
    rig.card_reader.set_fault_plan([](std::size_t, ByteView c) { return is_ins(c, 0x80, 0x54) ? Fault::after_card : Fault::none; });
    REQUIRE_FALSE(rig.terminal->purchase(400).ok());
    rig.card_reader.set_fault_plan(nullptr);
    rig.card_reader.insert(rig.card.get());
    REQUIRE(rig.terminal->purchase(250).ok());
    CHECK(rig.queue->size() == 2);
    CHECK(rig.snap().balance_fen == 10000 - 400 - 250);
    CHECK(rig.queued_total() == 650);
}

TEST_CASE("PSAM fails after DEBIT: the charge is recorded once and flagged") {
    Rig rig(10000);
    rig.psam_reader.set_fault_plan([](std::size_t, ByteView c) { return is_ins(c, 0x80, 0x72) ? Fault::before_card : Fault::none; });
    auto r = rig.terminal->purchase(800);
    REQUIRE(r.ok());
    CHECK(r->mac2_unverified);
    CHECK(rig.queue->size() == 1);
    CHECK(rig.snap().balance_fen == 9200);
    CHECK(to_hex(r->tac) == to_hex(expected_tac(*r)));
    // The next purchase reconnects the PSAM.
    rig.psam_reader.set_fault_plan(nullptr);
    rig.psam_reader.insert(rig.psam.get());
    auto next = rig.terminal->purchase(100);
    REQUIRE(next.ok());
    CHECK_FALSE(next->mac2_unverified);
}

TEST_CASE("a terminal crash after the intent: the reopened queue still knows, recover resolves it") {
    Rig rig(10000);
    rig.card_reader.set_fault_plan([](std::size_t, ByteView c) { return is_ins(c, 0x80, 0x54) ? Fault::after_card : Fault::none; });
    REQUIRE_FALSE(rig.terminal->purchase(900).ok());
    // "Restart": new queue object from disk, new terminal, card reopened from its image.
    rig.card_reader.set_fault_plan(nullptr);
    rig.open_queue();
    rig.make_terminal();
    rig.reopen_card();
    REQUIRE(rig.queue->open_intents().size() == 1);
    auto recovered = rig.terminal->recover();
    REQUIRE(recovered.ok());
    CHECK(recovered->recorded.size() == 1);
    CHECK(rig.queued_total() + rig.snap().balance_fen == 10000);
}

TEST_CASE("a later purchase elsewhere replaced the proof: the card's log decides, recorded as unproven") {
    Rig rig(10000);
    rig.card_reader.set_fault_plan([](std::size_t, ByteView c) { return is_ins(c, 0x80, 0x54) ? Fault::after_card : Fault::none; });
    REQUIRE_FALSE(rig.terminal->purchase(600).ok());
    rig.card_reader.set_fault_plan(nullptr);
    rig.card_reader.insert(rig.card.get());
    {
        // Another shop's terminal (own queue, own PSAM) charges the card next.
        TempDir other;
        REQUIRE(cos::create_image(other.path / "psam.img", psam_profile("000001000099")).ok());
        auto other_psam = open_image(other.path / "psam.img");
        InProcessReader other_psam_reader("psam2", other_psam.get());
        auto other_queue = TransactionQueue::open(other.path / "q.log");
        REQUIRE(other_queue.ok());
        Hotlist empty;
        Terminal shop(rig.card_reader, other_psam_reader, *other_queue.value(), empty);
        shop.set_clock([&] { return rig.now; });
        REQUIRE(shop.purchase(50).ok());
    }
    auto recovered = rig.terminal->recover();
    REQUIRE(recovered.ok());
    REQUIRE(recovered->recorded.size() == 1);
    CHECK(recovered->recorded[0].unproven);
    CHECK(recovered->recorded[0].amount_fen == 600);
    CHECK(rig.queue->open_intents().empty());
}

TEST_CASE("random card pulls over many purchases: balance + recorded charges is conserved, each charge once") {
    Rig rig(100000);
    std::mt19937 rng(2026);
    std::uint64_t attempts = 0;
    for (int i = 0; i < 60; ++i) {
        const std::uint8_t ins_choices[] = {0xA4, 0x50, 0x54, 0x5A, 0x00};
        const std::uint8_t fail_ins = ins_choices[rng() % 5];
        const Fault fault = rng() % 2 ? Fault::after_card : Fault::before_card;
        rig.card_reader.set_fault_plan(
            [&](std::size_t, ByteView c) { return fail_ins != 0 && c.size() >= 2 && c[1] == fail_ins ? fault : Fault::none; });
        const std::uint32_t amount = 1 + rng() % 300;
        ++attempts;
        (void)rig.terminal->purchase(amount);
        rig.card_reader.set_fault_plan(nullptr);
        rig.card_reader.insert(rig.card.get());
        if (rng() % 3 == 0) rig.reopen_card();
    }
    REQUIRE(rig.terminal->recover().ok());
    CHECK(rig.queue->open_intents().empty());
    CHECK(rig.queued_total() + rig.snap().balance_fen == 100000);
    // Every offline ATC the card used appears once in the queue.
    std::set<std::uint16_t> atcs;
    for (const auto& q : rig.queue->batch(1000)) CHECK(atcs.insert(q.record.atc).second);
    CHECK(atcs.size() == rig.snap().offline_atc);
}

TEST_CASE("T=0 card: the purchase works through 61xx and GET RESPONSE") {
    Rig rig(5000, "T=0");
    std::vector<TraceEntry> trace;
    rig.terminal->set_trace([&](const TraceEntry& e) { trace.push_back(e); });
    auto r = rig.terminal->purchase(100);
    REQUIRE_MESSAGE(r.ok(), (r.ok() ? "" : r.error().message));
    CHECK(to_hex(r->tac) == to_hex(expected_tac(*r)));
    const bool saw_get_response = std::any_of(trace.begin(), trace.end(), [](const TraceEntry& e) {
        return e.command.size() >= 2 && e.command[0] == 0x00 && e.command[1] == 0xC0;
    });
    CHECK(saw_get_response);
}

TEST_CASE("cardholder data comes from the SSSE application, the name decoded from GBK") {
    Rig rig;
    auto holder = rig.terminal->cardholder();
    REQUIRE_MESSAGE(holder.ok(), (holder.ok() ? "" : holder.error().message));
    CHECK(holder->name == "海南 椰子");
    CHECK(holder->ssn == "460100198001011234");
    CHECK(holder->birth_date == "19800101");
}

// ---- transit ---------------------------------------------------------------------------------

TEST_CASE("flat fare: charged once; a repeat tap inside the window is free; after the window it is charged") {
    Rig rig(10000);
    auto first = rig.terminal->transit_tap({1, 5, 4242});
    REQUIRE_MESSAGE(first.ok(), (first.ok() ? "" : first.error().message));
    CHECK(first->result == TapResult::charged_flat);
    CHECK(first->fare_fen == 200);
    CHECK(first->record->type == crypto::type_capp_purchase);
    CHECK(to_hex(first->record->tac) == to_hex(expected_tac(*first->record)));
    rig.now += std::chrono::seconds(30);
    auto repeat = rig.terminal->transit_tap({1, 5, 4242});
    REQUIRE(repeat.ok());
    CHECK(repeat->result == TapResult::repeat_no_charge);
    CHECK_FALSE(repeat->record);
    CHECK(rig.snap().balance_fen == 9800);
    rig.now += std::chrono::seconds(61);
    auto later = rig.terminal->transit_tap({1, 5, 4242});
    REQUIRE(later.ok());
    CHECK(later->result == TapResult::charged_flat);
    CHECK(rig.snap().balance_fen == 9600);
    CHECK(rig.queue->size() == 2);
}

TEST_CASE("entry/exit: entry writes the record free, exit charges by the fare table and closes it") {
    Rig rig(10000);
    auto entry = rig.terminal->transit_tap({2, 1, 9});
    REQUIRE_MESSAGE(entry.ok(), (entry.ok() ? "" : entry.error().message));
    CHECK(entry->result == TapResult::entered);
    CHECK(entry->fare_fen == 0);
    CHECK(rig.snap().balance_fen == 10000);
    rig.now += std::chrono::minutes(25);
    auto exit = rig.terminal->transit_tap({2, 4, 9});
    REQUIRE(exit.ok());
    CHECK(exit->result == TapResult::exited);
    CHECK(exit->fare_fen == 400);  // 3 stops
    CHECK(exit->record->entry_station == 1);
    CHECK(rig.snap().balance_fen == 9600);
    // The card's EF1A record is closed at the exit station.
    REQUIRE(rig.card_reader.connect().ok());
    CardChannel channel(rig.card_reader);
    PurseApp purse(channel);
    REQUIRE(purse.select().ok());
    auto rec = purse.read_capp_record(cos::bus_record::record_id_value);
    REQUIRE(rec.ok());
    CHECK((*rec)[cos::bus_record::state] == cos::bus_record::state_closed);
    CHECK(read_be16(ByteView(*rec).subspan(cos::bus_record::station, 2)) == 4);
    CHECK(read_be32(ByteView(*rec).subspan(cos::bus_record::fare_fen, 4)) == 400);
    // A repeat of the exit tap is free.
    rig.now += std::chrono::seconds(10);
    CHECK(rig.terminal->transit_tap({2, 4, 9})->result == TapResult::repeat_no_charge);
    CHECK(rig.snap().balance_fen == 9600);
}

TEST_CASE("an unfinished journey past the limit is charged the line's maximum fare at the next tap") {
    Rig rig(10000);
    REQUIRE(rig.terminal->transit_tap({2, 3, 1}).ok());
    rig.now += std::chrono::hours(4);
    auto next = rig.terminal->transit_tap({2, 3, 1});
    REQUIRE(next.ok());
    CHECK(next->result == TapResult::entered);
    CHECK(next->fare_fen == 500);
    CHECK(next->record->tap_kind == TapKind::unfinished);
    CHECK(rig.snap().balance_fen == 9500);
}

TEST_CASE("an unknown line is refused before the card is touched") {
    Rig rig(10000);
    auto r = rig.terminal->transit_tap({99, 1, 1});
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == FlowErrorCode::unknown_line);
    CHECK(rig.snap().generation == 1);
}

TEST_CASE("the bus record carries the PSAM's terminal id from the first tap of a fresh terminal") {
    Rig rig(10000);
    REQUIRE(rig.terminal->transit_tap({1, 3, 8}).ok());
    REQUIRE(rig.card_reader.connect().ok());
    CardChannel channel(rig.card_reader);
    PurseApp purse(channel);
    REQUIRE(purse.select().ok());
    auto rec = purse.read_capp_record(cos::bus_record::record_id_value);
    REQUIRE(rec.ok());
    CHECK(to_hex(ByteView(*rec).subspan(cos::bus_record::terminal_id, 6)) == "000001000050");
}

TEST_CASE("a PSAM that leaves is a psam_error, not the customer's card removed") {
    Rig rig(10000);
    REQUIRE(rig.terminal->purchase(100).ok());
    rig.psam_reader.set_fault_plan([](std::size_t, ByteView) { return Fault::before_card; });
    auto r = rig.terminal->purchase(100);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == FlowErrorCode::psam_error);
    CHECK(rig.snap().balance_fen == 9900);
    CHECK(rig.queue->open_intents().empty());
}
