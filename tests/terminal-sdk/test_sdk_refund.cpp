// The same-day refund of a clinic payment against a scripted host (clinic_refund.hpp, ISO8583.md §4.10):
// the refund reference a payment leaves, the messages of each part (0200 200000 with DF13 and the load's
// cryptograms, 0220 200000 with the TAC or, in cash, DF01 ‖ DF13 alone, 0200 200030 with DF11 / DF12), the
// refusals and what they leave, the batch totals, and the queue record's refund flag.
#include "online_rig.hpp"

using namespace sdk_test;

namespace {

// The card in the rig's reader.
Asn card_asn(const Rig& rig) {
    const Bytes bcd = *digits_to_bcd(rig.snap().asn);
    Asn asn{};
    std::copy(bcd.begin(), bcd.end(), asn.begin());
    return asn;
}

const iso8583::PurchaseReference purchase_ref{{0x00, 0x00, 0x01, 0x00, 0x00, 0x50}, 7};

// A paid visit: 600 fen from the medical account (hold CLINIC01 batch 1 STAN 31), 400 from the purse, 100 cash.
ClinicRefundReference visit(const Rig& rig) {
    ClinicRefundReference r;
    r.asn = card_asn(rig);
    r.hold = ClinicHoldReference{"CLINIC01", 1, 31};
    r.medical_fen = 600;
    r.purchase = purchase_ref;
    r.purse_fen = 400;
    r.cash_fen = 100;
    return r;
}

// Approves everything, MAC2 for 0200 200000 too; the medical refund's 0210 echoes field 4.
FakeHost::Handler refunding(std::string purse_code = "00", std::string medical_code = "00") {
    return [=](const Message& r) -> std::optional<Message> {
        if (r.mti() == "0200" && r.get(3) == "200030") return reply(r, medical_code);
        if (r.mti() == "0200") return purse_code == "00" ? answer_load(r) : reply(r, purse_code);
        if (r.mti() == "0220" && r.get(3) == "200000" && iso8583::is_cash_refund(r.get(62).value_or(""))) return reply(r, purse_code);
        return reply(r, "00");
    };
}

}  // namespace

TEST_CASE("a clinic payment's outcome carries its refund reference: the hold's 41 / 60 / 11, the purchase's DF06 / DF05, the parts") {
    OnlineRig rig(1000, approving("10", 600));
    auto paid = rig.terminal->clinic_payment(1000, "123456", *rig.client);
    REQUIRE_MESSAGE(paid.ok(), (paid.ok() ? "" : paid.error().message));
    const ClinicRefundReference& r = paid->refund_reference;
    const Message hold = rig.host->received("0100").at(0);
    REQUIRE(r.hold);
    CHECK(r.hold->terminal_id == *hold.get(41));
    CHECK(r.hold->batch_number == 1);
    CHECK(std::to_string(r.hold->stan) == std::to_string(*hold.get_number(11)));
    CHECK(r.medical_fen == 600);
    REQUIRE(r.purchase);
    REQUIRE(paid->purse_record);
    CHECK(r.purchase->terminal_id == paid->purse_record->terminal_id);
    CHECK(r.purchase->terminal_serial == paid->purse_record->terminal_serial);
    CHECK(r.purse_fen == 400);
    CHECK(r.cash_fen == 0);
    CHECK(r.asn == card_asn(rig));
    CHECK(refund_reference_problem(r).empty());
}

TEST_CASE("a payment without a hold (51) names no hold in its refund reference") {
    OnlineRig rig(1000, approving("51"));
    auto paid = rig.terminal->clinic_payment(300, "123456", *rig.client);
    REQUIRE(paid.ok());
    CHECK_FALSE(paid->refund_reference.hold);
    CHECK(paid->refund_reference.medical_fen == 0);
    CHECK(paid->refund_reference.purse_fen == 300);
}

TEST_CASE("refund reference problems name what is wrong") {
    Rig rig(1000);
    ClinicRefundReference r = visit(rig);
    CHECK(refund_reference_problem(r).empty());
    auto bad = r;
    bad.medical_fen = 0;
    CHECK(refund_reference_problem(bad).find("without the amount") != std::string::npos);
    bad = r;
    bad.hold->terminal_id = "CLINIC1";
    CHECK(refund_reference_problem(bad).find("field 41") != std::string::npos);
    bad = r;
    bad.hold->stan = 0;
    CHECK(refund_reference_problem(bad).find("STAN") != std::string::npos);
    bad = r;
    bad.purchase.reset();
    CHECK(refund_reference_problem(bad).find("purse amount without") != std::string::npos);
    bad = ClinicRefundReference{};
    CHECK(refund_reference_problem(bad).find("nothing to refund") != std::string::npos);
}

TEST_CASE("refund to the card: 0200 200000 with DF13 and MAC1, CREDIT, 0220 200000 with the TAC; then 0200 200030; totals as credits") {
    OnlineRig rig(1000, refunding());
    auto refunded = rig.terminal->clinic_refund({visit(rig)}, *rig.client);
    REQUIRE_MESSAGE(refunded.ok(), (refunded.ok() ? "" : refunded.error().message));
    CHECK_FALSE(refunded->incomplete);
    CHECK(rig.snap().balance_fen == 1400);
    CHECK(refunded->purse_fen == 400);
    CHECK(refunded->medical_fen == 600);
    CHECK(refunded->medical_code == "00");
    CHECK(refunded->cash_fen == 100);
    REQUIRE(refunded->credit);
    CHECK(refunded->credit->confirmed);
    CHECK(refunded->credit->record.refund);

    const auto financial = rig.host->received("0200");
    REQUIRE(financial.size() == 2);
    const Message& credit = financial[0];  // the purse part first: it needs the card
    CHECK(credit.get(3) == "200000");
    CHECK(credit.get_number(4) == 400u);
    CHECK(tag(credit, 0xDF13) == Bytes{0x00, 0x00, 0x01, 0x00, 0x00, 0x50, 0x00, 0x00, 0x00, 0x07});
    CHECK(tag(credit, 0xDF09).size() == 4);  // MAC1
    const auto confirmations = rig.host->received("0220");
    REQUIRE(confirmations.size() == 1);
    CHECK(confirmations[0].get(3) == "200000");
    CHECK(to_hex(tag(confirmations[0], 0xDF08)) == to_hex(refunded->credit->record.tac));
    CHECK_FALSE(iso8583::is_cash_refund(*confirmations[0].get(62)));

    const Message& medical = financial[1];
    CHECK(medical.get(3) == "200030");
    CHECK(medical.get_number(4) == 600u);
    auto data = iso8583::parse_medical_refund(*medical.get(62));
    REQUIRE_MESSAGE(data.ok(), (data.ok() ? "" : data.error()));
    CHECK(data->asn == card_asn(rig));
    CHECK(data->visit.batch_number == 1);
    CHECK(data->visit.stan == 31);
    CHECK(std::string(data->hold_terminal_id41.begin(), data->hold_terminal_id41.end()) == "CLINIC01");

    CHECK(rig.queue->size() == 0);
    CHECK(rig.queue->open_intents().empty());
    CHECK(rig.client->batch().totals.credits_count == 2);
    CHECK(rig.client->batch().totals.credits_fen == 1000);
}

TEST_CASE("refund in cash: 0220 200000 with DF01 and DF13 only, the card untouched, nothing counted; the cash includes the purse part") {
    OnlineRig rig(1000, refunding());
    ClinicRefundRequest request{visit(rig), PurseRefund::cash};
    rig.card_reader.insert(nullptr);  // no card needed
    auto refunded = rig.terminal->clinic_refund(request, *rig.client);
    REQUIRE_MESSAGE(refunded.ok(), (refunded.ok() ? "" : refunded.error().message));
    CHECK(refunded->cash_refund_code == "00");
    CHECK(refunded->purse_fen == 400);
    CHECK(refunded->cash_fen == 500);
    CHECK_FALSE(refunded->credit);
    const auto advices = rig.host->received("0220");
    REQUIRE(advices.size() == 1);
    CHECK(advices[0].get(3) == "200000");
    auto cash = iso8583::parse_cash_refund(*advices[0].get(62));
    REQUIRE(cash.ok());
    CHECK(cash->purchase == purchase_ref);
    CHECK(iso8583::is_cash_refund(*advices[0].get(62)));
    CHECK_FALSE(advices[0].get(90).has_value());
    CHECK(rig.snap().balance_fen == 1000);
    CHECK(rig.client->batch().totals.credits_fen == 600);  // the medical part only
    CHECK(rig.client->batch().totals.credits_count == 1);
}

TEST_CASE("a refund answered 94 (refunded already) stops before anything else: no credit, no medical refund") {
    OnlineRig rig(1000, refunding("94"));
    auto refunded = rig.terminal->clinic_refund({visit(rig)}, *rig.client);
    REQUIRE_FALSE(refunded.ok());
    CHECK(refunded.error().code == FlowErrorCode::declined);
    CHECK(refunded.error().response_code == "94");
    CHECK(refunded.error().message.find("refunded already") != std::string::npos);
    CHECK(rig.snap().balance_fen == 1000);
    CHECK(rig.snap().online_atc == 0);
    CHECK(rig.host->received("0200").size() == 1);
    CHECK(rig.queue->open_intents().empty());
    CHECK(rig.client->batch().totals.credits_count == 0);
}

TEST_CASE("refund refusals map to what they mean: 25, 13, 12, 58 declined with their reason; 41 and 62 the card") {
    const std::vector<std::pair<std::string, std::string>> reasons{{"25", "no such payment"},
                                                                   {"13", "amount"},
                                                                   {"12", "today"},
                                                                   {"58", "terminal"}};
    for (const auto& reason : reasons) {
        const std::string& code = reason.first;  // not a structured binding: CAPTURE's lambda takes it (clang)
        const std::string& words = reason.second;
        CAPTURE(code);
        OnlineRig rig(1000, refunding(code));
        auto refunded = rig.terminal->clinic_refund({visit(rig), PurseRefund::cash}, *rig.client);
        REQUIRE_FALSE(refunded.ok());
        CHECK(refunded.error().code == FlowErrorCode::declined);
        CHECK(refunded.error().response_code == code);
        CHECK(refunded.error().message.find(words) != std::string::npos);
        CHECK(rig.host->received("0200").empty());  // the medical part is not sent after a refusal
    }
    for (const std::string code : {"41", "62"}) {
        OnlineRig rig(1000, refunding(code));
        auto refunded = rig.terminal->clinic_refund({visit(rig)}, *rig.client);
        REQUIRE_FALSE(refunded.ok());
        CHECK(refunded.error().code == FlowErrorCode::blocked_card);
        CHECK(refunded.error().response_code == code);
        CHECK(refunded.error().block_reason == (code == "41" ? BlockReason::lost : BlockReason::issuer));
        CHECK(rig.snap().balance_fen == 1000);
    }
}

TEST_CASE("a card that cannot take the purse part (6985 at INITIALIZE FOR LOAD) is card_full and nothing is sent") {
    OnlineRig rig(99'800, refunding());
    auto refunded = rig.terminal->clinic_refund({visit(rig)}, *rig.client);
    REQUIRE_FALSE(refunded.ok());
    CHECK(refunded.error().code == FlowErrorCode::card_full);
    CHECK(refunded.error().sw == 0x6985);
    CHECK(refunded.error().message.find("in cash") != std::string::npos);
    CHECK(rig.host->received("0200").empty());
    CHECK(rig.queue->open_intents().empty());
    CHECK(rig.snap().balance_fen == 99'800);
}

TEST_CASE("another card in the reader than the payment's: wrong_card, nothing sent") {
    OnlineRig rig(1000, refunding());
    ClinicRefundReference r = visit(rig);
    r.asn[9] ^= 0x01;
    auto refunded = rig.terminal->clinic_refund({r}, *rig.client);
    REQUIRE_FALSE(refunded.ok());
    CHECK(refunded.error().code == FlowErrorCode::wrong_card);
    CHECK(rig.host->received("0200").empty());
}

TEST_CASE("the medical refund is repeated on no answer and counted once; no answer at all leaves a partial refund") {
    SUBCASE("the second try is answered") {
        auto tries = std::make_shared<int>(0);
        OnlineRig rig(1000, [tries, approve = refunding()](const Message& r) -> std::optional<Message> {
            if (r.get(3) == "200030" && ++*tries == 1) return std::nullopt;
            return approve(r);
        });
        auto refunded = rig.terminal->clinic_refund({visit(rig), PurseRefund::cash}, *rig.client);
        REQUIRE_MESSAGE(refunded.ok(), (refunded.ok() ? "" : refunded.error().message));
        CHECK_FALSE(refunded->incomplete);
        CHECK(*tries == 2);
        const auto sent = rig.host->received("0200");
        const auto repeats = rig.host->received("0201");
        REQUIRE(sent.size() == 1);
        REQUIRE(repeats.size() == 1);
        CHECK(repeats[0].get(11) == sent[0].get(11));  // a repeat of the same request: the host counts a STAN once
        CHECK(repeats[0].get(62) == sent[0].get(62));
        CHECK(rig.client->batch().totals.credits_count == 1);
        CHECK(rig.client->batch().totals.credits_fen == 600);
    }
    SUBCASE("never answered: the purse part stands, the medical part is reported, nothing counted for it") {
        OnlineRig rig(1000, [approve = refunding()](const Message& r) -> std::optional<Message> {
            if (r.get(3) == "200030") return std::nullopt;
            return approve(r);
        });
        auto refunded = rig.terminal->clinic_refund({visit(rig)}, *rig.client);
        REQUIRE(refunded.ok());
        REQUIRE(refunded->incomplete);
        CHECK(refunded->incomplete->code == FlowErrorCode::no_answer);
        CHECK(refunded->incomplete->message.find("purse part is refunded") != std::string::npos);
        CHECK(rig.host->received("0200").size() == 2);  // the credit's and the medical refund's
        CHECK(rig.host->received("0201").size() == static_cast<std::size_t>(refund_tries_max) - 1);
        CHECK(rig.snap().balance_fen == 1400);
        CHECK(rig.client->batch().totals.credits_fen == 400);
        // The medical part alone, later.
        rig.host = std::make_unique<FakeHost>(refunding());
        rig.connect();
        auto rest = rig.terminal->clinic_refund({visit(rig), PurseRefund::card, false, true}, *rig.client);
        REQUIRE_MESSAGE(rest.ok(), (rest.ok() ? "" : rest.error().message));
        CHECK(rest->medical_fen == 600);
        CHECK(rig.host->received("0200").size() == 1);
        CHECK(rig.snap().balance_fen == 1400);
        CHECK(rig.client->batch().totals.credits_fen == 1000);
    }
}

TEST_CASE("a refund credit torn by a pulled card is confirmed with 200000 when the card returns (the queue keeps the refund flag)") {
    OnlineRig rig(1000, refunding());
    rig.card_reader.set_fault_plan(
        [](std::size_t, ByteView c) { return c.size() >= 2 && c[0] == 0x80 && c[1] == 0x52 ? Fault::after_card : Fault::none; });
    auto refunded = rig.terminal->clinic_refund({visit(rig)}, *rig.client);
    REQUIRE_FALSE(refunded.ok());
    CHECK(refunded.error().code == FlowErrorCode::card_removed);
    CHECK(rig.host->received("0200").size() == 1);  // the medical part waits for the purse part
    rig.card_reader.set_fault_plan(nullptr);
    rig.card_reader.insert(rig.card.get());
    rig.queue.reset();
    rig.open_queue();  // what survives a restart
    rig.make_terminal();
    rig.connect();
    auto recovered = rig.terminal->recover();
    REQUIRE(recovered.ok());
    REQUIRE(recovered->recorded.size() == 1);
    CHECK(recovered->recorded[0].refund);
    REQUIRE(rig.client->upload(*rig.queue).ok());
    const auto confirmations = rig.host->received("0221");
    REQUIRE(confirmations.size() == 1);
    CHECK(confirmations[0].get(3) == "200000");
    CHECK(rig.queue->size() == 0);
    CHECK(rig.client->batch().totals.credits_fen == 400);
}

TEST_CASE("a refund credit without an answer is reversed with a 0420 of processing code 200000, counted as a credit reversal") {
    OnlineRig rig(1000, [approve = refunding()](const Message& r) -> std::optional<Message> {
        if (r.mti() == "0200" && r.get(3) == "200000") return std::nullopt;
        return approve(r);
    });
    auto refunded = rig.terminal->clinic_refund({visit(rig)}, *rig.client);
    REQUIRE_FALSE(refunded.ok());
    CHECK(refunded.error().code == FlowErrorCode::no_answer);
    CHECK(refunded.error().reversed);
    const auto reversals = rig.host->received("0420");
    REQUIRE(reversals.size() == 1);
    CHECK(reversals[0].get(3) == "200000");
    CHECK(rig.snap().balance_fen == 1000);
    CHECK(rig.client->batch().totals.credit_reversals_fen == 400);
    CHECK(rig.host->received("0200").size() == 1);  // no medical refund after a failed purse part
}

TEST_CASE("the queue record keeps the refund flag (bit 16); carried and refund together are damage") {
    TransactionRecord r;
    r.type = crypto::type_ep_load;
    r.link = LinkKind::load_confirmation;
    r.refund = true;
    auto back = decode_record(encode_record(r));
    REQUIRE(back);
    CHECK(back->refund);
    CHECK_FALSE(back->carried);
    Bytes both = encode_record(r);
    both[10 + 8 + 1 + 2 + 4 + 4 + 4 + 6 + 4 + 4 + 3 + 4 + 4] |= 8;  // the flags byte (QUEUE-FORMAT.md)
    CHECK_FALSE(decode_record(both));
}

TEST_CASE("a refund uploads what is queued first: the payment's purchase (0320) is booked before its credit is asked for") {
    const auto handler = refunding();
    OnlineRig rig(1000, [handler](const Message& r) -> std::optional<Message> {
        if (r.mti() != "0100") return handler(r);
        Message m = reply(r, "10");  // 600 of the 1000 from the medical account
        m.set_number(4, 600, 12);
        return m;
    });
    auto paid = rig.terminal->clinic_payment(1000, "123456", *rig.client);  // the purse part stays queued
    REQUIRE_MESSAGE(paid.ok(), (paid.ok() ? "" : paid.error().message));
    REQUIRE(rig.queue->size() == 1);
    auto refunded = rig.terminal->clinic_refund({paid->refund_reference}, *rig.client);
    REQUIRE_MESSAGE(refunded.ok(), (refunded.ok() ? "" : refunded.error().message));
    CHECK(rig.queue->size() == 0);
    std::vector<std::string> order;
    for (const Message& m : rig.host->received())
        if (m.mti() == "0320" || m.mti() == "0200") order.push_back(m.mti() + " " + std::string(m.get(3).value_or("")));
    CHECK(order == std::vector<std::string>{"0320 000000", "0200 200000", "0200 200030"});
    CHECK(rig.snap().balance_fen == 1000);
}

TEST_CASE("a refund whose queue cannot be uploaded first refunds nothing (no_answer)") {
    OnlineRig rig(1000, [](const Message& r) -> std::optional<Message> {
        if (r.mti() == "0320") return std::nullopt;
        return reply(r, r.mti() == "0100" ? "51" : "00");  // the purse pays the whole bill
    });
    auto paid = rig.terminal->clinic_payment(300, "123456", *rig.client);
    REQUIRE(paid.ok());
    REQUIRE(rig.queue->size() == 1);
    auto refunded = rig.terminal->clinic_refund({paid->refund_reference}, *rig.client);
    REQUIRE_FALSE(refunded.ok());
    CHECK(refunded.error().code == FlowErrorCode::no_answer);
    CHECK(refunded.error().message.find("nothing was refunded") != std::string::npos);
    CHECK(rig.host->received("0200").empty());
    CHECK(rig.snap().balance_fen == 700);
}
