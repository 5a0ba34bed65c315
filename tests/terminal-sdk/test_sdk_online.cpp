// Online flows against a scripted host: load (0200/0210, CREDIT, 0220; reversal when anything goes wrong),
// clinic payment (0100/0110 full / partial / none, purse remainder, 0220 completion, 0400 / 0420), hotlist
// download, reconciliation totals, the durable batch state.
#include "online_rig.hpp"

#include <coconut/apdu/tlv.hpp>
#include <coconut/iso8583/card_data.hpp>
#include <coconut/sdk/clearing_client.hpp>

#include <openssl/evp.h>

#include <fstream>
#include <set>

using namespace sdk_test;

namespace {

crypto::Mac4 expected_load_tac(const TransactionRecord& r) {
    return crypto::des_mac(crypto::tac_key(card_dtk(r.asn)),
                           crypto::load_tac_input(r.balance_after_fen, r.atc, r.amount_fen, crypto::type_ep_load, r.terminal_id, r.when));
}

}  // namespace

TEST_CASE("an online load credits the card once and its 0220 carries the card's TAC; the advice leaves the queue") {
    OnlineRig rig(1000, approving());
    auto loaded = rig.terminal->load(5000, *rig.client);
    REQUIRE_MESSAGE(loaded.ok(), (loaded.ok() ? "" : loaded.error().message));
    CHECK(rig.snap().balance_fen == 6000);
    CHECK(rig.snap().online_atc == 1);
    CHECK(loaded->confirmed);
    CHECK(to_hex(loaded->record.tac) == to_hex(expected_load_tac(loaded->record)));

    const auto requests = rig.host->received("0200");
    REQUIRE(requests.size() == 1);
    CHECK(requests[0].get(3) == "210000");
    CHECK(requests[0].get_number(4) == 5000u);
    CHECK(requests[0].get(2) == "0000000000012345");
    CHECK(read_be32(tag(requests[0], 0xDF03)) == 1000u);
    CHECK(tag(requests[0], 0xDF02) == Bytes{0x02});
    const auto confirmations = rig.host->received("0220");
    REQUIRE(confirmations.size() == 1);
    CHECK(to_hex(tag(confirmations[0], 0xDF08)) == to_hex(loaded->record.tac));
    // Field 90 names the 0200: MTI ‖ its STAN ‖ its field 7.
    CHECK(confirmations[0].get(90)->substr(0, 10) == "0200" + std::string(*requests[0].get(11)));
    CHECK(confirmations[0].get(90)->substr(10, 10) == *requests[0].get(7));
    CHECK(rig.queue->size() == 0);
    CHECK(rig.queue->open_intents().empty());
    CHECK(rig.client->batch().totals.credits_count == 1);
    CHECK(rig.client->batch().totals.credits_fen == 5000);
}

TEST_CASE("no 0210 in time: the card is not credited and a 0420 reversal names the 0200") {
    OnlineRig rig(1000, [](const Message& r) -> std::optional<Message> {
        if (r.mti() == "0200") return std::nullopt;
        return reply(r, "00");
    });
    auto loaded = rig.terminal->load(5000, *rig.client);
    REQUIRE_FALSE(loaded.ok());
    CHECK(loaded.error().code == FlowErrorCode::no_answer);
    CHECK(loaded.error().reversed);
    CHECK(rig.snap().balance_fen == 1000);
    CHECK(rig.snap().online_atc == 0);
    const auto reversals = rig.host->received("0420");
    REQUIRE(reversals.size() == 1);
    const auto request = rig.host->received("0200").at(0);
    CHECK(reversals[0].get(90)->substr(0, 10) == "0200" + std::string(*request.get(11)));
    CHECK(reversals[0].get(3) == "210000");
    CHECK(reversals[0].get_number(4) == 5000u);
    CHECK(read_be16(tag(reversals[0], 0xDF04)) == 0u);
    CHECK(rig.queue->size() == 0);  // acknowledged by the 0430
    CHECK(rig.queue->open_intents().empty());
    CHECK(rig.client->batch().totals.credit_reversals_count == 1);
}

TEST_CASE("a reversal the host does not acknowledge stays queued, survives a restart and is repeated as 0421") {
    OnlineRig rig(1000, [](const Message& r) -> std::optional<Message> {
        if (r.mti() == "0800") return reply(r, "00");
        return std::nullopt;  // the host went silent
    });
    auto loaded = rig.terminal->load(5000, *rig.client);
    REQUIRE_FALSE(loaded.ok());
    CHECK(loaded.error().code == FlowErrorCode::no_answer);
    CHECK(rig.host->received("0420").size() == 1);
    REQUIRE(rig.queue->size() == 1);
    CHECK(rig.queue->batch(1)[0].record.link == LinkKind::load_reversal);

    rig.open_queue();  // terminal restart
    rig.make_terminal();
    REQUIRE(rig.queue->size() == 1);
    rig.host->set_handler(approving());
    rig.connect();
    auto report = rig.client->upload(*rig.queue);
    REQUIRE(report.ok());
    CHECK(report->advices == 1);
    CHECK(report->acknowledged == 1);
    CHECK(rig.host->received("0421").size() == 1);
    CHECK(rig.queue->size() == 0);
    CHECK(rig.snap().balance_fen == 1000);
}

TEST_CASE("a declined load (0210 51) leaves card and queue untouched and sends no reversal") {
    OnlineRig rig(1000, [](const Message& r) -> std::optional<Message> { return reply(r, r.mti() == "0200" ? "14" : "00"); });
    auto loaded = rig.terminal->load(5000, *rig.client);
    REQUIRE_FALSE(loaded.ok());
    CHECK(loaded.error().code == FlowErrorCode::declined);
    CHECK(loaded.error().response_code == "14");
    CHECK(rig.snap().balance_fen == 1000);
    CHECK(rig.queue->size() == 0);
    CHECK(rig.queue->open_intents().empty());
    CHECK(rig.host->received("0420").empty());
}

TEST_CASE("a MAC2 the card refuses (9302): nothing credited, the load is reversed") {
    OnlineRig rig(1000, [](const Message& r) -> std::optional<Message> {
        if (r.mti() == "0200") return answer_load(r, "00", true);
        return reply(r, "00");
    });
    auto loaded = rig.terminal->load(5000, *rig.client);
    REQUIRE_FALSE(loaded.ok());
    CHECK(loaded.error().sw == 0x9302);
    CHECK(loaded.error().reversed);
    CHECK(rig.snap().balance_fen == 1000);
    CHECK(rig.host->received("0420").size() == 1);
    CHECK(rig.queue->size() == 0);
}

TEST_CASE("card pulled after CREDIT ran: the next presentation confirms the load with the proven TAC, once") {
    OnlineRig rig(1000, approving());
    rig.card_reader.set_fault_plan(
        [](std::size_t, ByteView c) { return c.size() >= 2 && c[0] == 0x80 && c[1] == 0x52 ? Fault::after_card : Fault::none; });
    auto loaded = rig.terminal->load(5000, *rig.client);
    REQUIRE_FALSE(loaded.ok());
    CHECK(loaded.error().code == FlowErrorCode::card_removed);
    CHECK(rig.snap().balance_fen == 6000);  // the card did credit
    CHECK(rig.queue->open_intents().size() == 1);
    CHECK(rig.host->received("0420").empty());

    rig.card_reader.set_fault_plan(nullptr);
    rig.card_reader.insert(rig.card.get());
    auto recovered = rig.terminal->recover();
    REQUIRE(recovered.ok());
    REQUIRE(recovered->recorded.size() == 1);
    CHECK(recovered->reversed.empty());
    const TransactionRecord& confirmation = recovered->recorded[0];
    CHECK(confirmation.link == LinkKind::load_confirmation);
    CHECK(to_hex(confirmation.tac) == to_hex(expected_load_tac(confirmation)));
    CHECK(rig.terminal->recover()->recorded.empty());
    auto report = rig.client->upload(*rig.queue);
    REQUIRE(report.ok());
    const auto confirmations = rig.host->received("0221");
    REQUIRE(confirmations.size() == 1);
    CHECK(to_hex(tag(confirmations[0], 0xDF08)) == to_hex(confirmation.tac));
    CHECK(rig.queue->size() == 0);
}

TEST_CASE("card gone before CREDIT reached it: reversed at once, and nothing left to resolve when it returns") {
    OnlineRig rig(1000, approving());
    rig.card_reader.set_fault_plan(
        [](std::size_t, ByteView c) { return c.size() >= 2 && c[0] == 0x80 && c[1] == 0x52 ? Fault::before_card : Fault::none; });
    auto loaded = rig.terminal->load(5000, *rig.client);
    REQUIRE_FALSE(loaded.ok());
    CHECK(loaded.error().code == FlowErrorCode::card_removed);
    CHECK(rig.snap().balance_fen == 1000);
    // The transmit failed, so the outcome was unknown; the card's return decides: not credited → 0420.
    rig.card_reader.set_fault_plan(nullptr);
    rig.card_reader.insert(rig.card.get());
    auto recovered = rig.terminal->recover();
    REQUIRE(recovered.ok());
    CHECK(recovered->recorded.empty());
    REQUIRE(recovered->reversed.size() == 1);
    CHECK(recovered->reversed[0].link == LinkKind::load_reversal);
    REQUIRE(rig.client->upload(*rig.queue).ok());
    CHECK(rig.host->received("0421").size() == 1);
    CHECK(rig.queue->size() == 0);
    CHECK(rig.snap().balance_fen == 1000);
}

TEST_CASE("card removed from the reader before CREDIT is sent: the load is reversed immediately") {
    OnlineRig rig(1000, approving());
    // The card leaves while the 0200 is in flight (the host's handler takes it out of the reader).
    auto removing = [&](const Message& r) -> std::optional<Message> {
        if (r.mti() == "0200") {
            rig.card_reader.insert(nullptr);
            return answer_load(r);
        }
        return reply(r, "00");
    };
    rig.host->set_handler(removing);
    auto loaded = rig.terminal->load(5000, *rig.client);
    REQUIRE_FALSE(loaded.ok());
    CHECK(loaded.error().code == FlowErrorCode::card_removed);
    CHECK(loaded.error().reversed);
    CHECK(rig.host->received("0420").size() == 1);
    CHECK(rig.queue->open_intents().empty());
    rig.card_reader.insert(rig.card.get());
    CHECK(rig.snap().balance_fen == 1000);
    CHECK(rig.terminal->recover()->reversed.empty());
}

TEST_CASE("clinic payment, full medical approval: the challenge is the host's, the cryptogram the SSSE application's") {
    OnlineRig rig(1000, approving("00"));
    auto paid = rig.terminal->clinic_payment(800, "123456", *rig.client);
    REQUIRE_MESSAGE(paid.ok(), (paid.ok() ? "" : paid.error().message));
    CHECK(paid->medical_fen == 800);
    CHECK(paid->purse_fen == 0);
    CHECK(paid->completion_code == "00");
    CHECK(rig.snap().balance_fen == 1000);
    const auto authorizations = rig.host->received("0100");
    REQUIRE(authorizations.size() == 1);
    const Message& a = authorizations[0];
    CHECK(a.get(3) == "003000");
    CHECK(a.get(60) == "000001");
    // The host's recomputation (ISO8583.md §4.4): over its challenge and the hold's fields as sent.
    CHECK(field62(a).size() == 4);  // DF01 ASN, DF0B cryptogram, DF0E challenge, DF11 visit reference
    CHECK(tag(a, 0xDF11).size() > 0);
    CHECK(tag(a, 0xDF0E) == Bytes(fake_challenge.begin(), fake_challenge.end()));
    CHECK(rig.host->received("0800").size() >= 1);
    const Asn asn = asn_of(a);
    const auto input = iso8583::clinic_proof_input(fake_challenge, {*a.get(41), *a.get(11), *a.get(7), *a.get(4), *a.get(60)}, asn);
    const Bytes challenge(input.begin(), input.end());
    // From the SSSE application after VERIFY, under its own key: the purse IAK's answer would prove no PIN.
    CHECK(tag(a, 0xDF0B) == crypto::tdes_ecb_encrypt(card_key(master_ssse_iak, asn), challenge));
    const auto completions = rig.host->received("0220");
    REQUIRE(completions.size() == 1);
    CHECK(completions[0].get(3) == "003000");
    CHECK(completions[0].get_number(4) == 800u);
    CHECK(completions[0].get(90)->substr(0, 10) == "0100" + std::string(*a.get(11)));
    CHECK(rig.queue->size() == 0);
    CHECK(rig.client->batch().totals.debits_fen == 800);
}

TEST_CASE("clinic payment, partial approval (39 = 10): the purse pays the remainder, the completion posts the part held") {
    OnlineRig rig(1000, approving("10", 600));
    auto paid = rig.terminal->clinic_payment(1000, "123456", *rig.client);
    REQUIRE_MESSAGE(paid.ok(), (paid.ok() ? "" : paid.error().message));
    CHECK(paid->authorization_code == "10");
    CHECK(paid->medical_fen == 600);
    CHECK(paid->purse_fen == 400);
    REQUIRE(paid->purse_record);
    CHECK(to_hex(paid->purse_record->tac) == to_hex(expected_tac(*paid->purse_record)));
    CHECK(rig.snap().balance_fen == 600);
    REQUIRE(rig.host->received("0220").size() == 1);
    CHECK(rig.host->received("0220")[0].get_number(4) == 600u);
    // The purse part waits in the queue for its 0320.
    REQUIRE(rig.queue->size() == 1);
    CHECK(rig.queue->batch(1)[0].record.link == LinkKind::offline_purchase);
    REQUIRE(rig.client->upload(*rig.queue).ok());
    CHECK(rig.host->received("0320").size() == 1);
    CHECK(rig.queue->size() == 0);
}

TEST_CASE("clinic payment, nothing from the medical account (51): the purse pays all, no completion") {
    OnlineRig rig(1000, approving("51"));
    auto paid = rig.terminal->clinic_payment(300, "123456", *rig.client);
    REQUIRE(paid.ok());
    CHECK(paid->medical_fen == 0);
    CHECK(paid->purse_fen == 300);
    CHECK(rig.snap().balance_fen == 700);
    CHECK(rig.host->received("0220").empty());
    CHECK(rig.queue->open_intents().empty());
}

TEST_CASE("no 0110 in time: the hold is reversed (0420) and the purse is not touched") {
    OnlineRig rig(1000, [](const Message& r) -> std::optional<Message> {
        if (r.mti() == "0100") return std::nullopt;
        return reply(r, "00");
    });
    auto paid = rig.terminal->clinic_payment(300, "123456", *rig.client);
    REQUIRE_FALSE(paid.ok());
    CHECK(paid.error().code == FlowErrorCode::no_answer);
    CHECK(rig.snap().balance_fen == 1000);
    const auto reversals = rig.host->received("0420");
    REQUIRE(reversals.size() == 1);
    CHECK(reversals[0].get(3) == "003000");
    CHECK(reversals[0].get(90)->substr(0, 4) == "0100");
    CHECK(rig.queue->size() == 0);
    CHECK(rig.queue->open_intents().empty());
}

TEST_CASE("the purse cannot pay the remainder: the hold is reversed online (0400) and the error reported") {
    OnlineRig rig(100, approving("10", 500));
    auto paid = rig.terminal->clinic_payment(1000, "123456", *rig.client);
    REQUIRE_FALSE(paid.ok());
    CHECK(paid.error().code == FlowErrorCode::insufficient_balance);
    CHECK(rig.snap().balance_fen == 100);
    const auto reversals = rig.host->received("0400");
    REQUIRE(reversals.size() == 1);
    CHECK(reversals[0].get_number(4) == 500u);
    CHECK(rig.host->received("0220").empty());
    CHECK(rig.queue->size() == 0);
    CHECK(rig.queue->open_intents().empty());
    CHECK(rig.client->batch().totals.debit_reversals_fen == 500);
}

TEST_CASE("a wrong PIN stops the clinic payment before anything goes to the host") {
    OnlineRig rig(1000, approving());
    auto paid = rig.terminal->clinic_payment(300, "999999", *rig.client);
    REQUIRE_FALSE(paid.ok());
    CHECK(paid.error().code == FlowErrorCode::wrong_pin);
    CHECK(paid.error().sw == 0x63C2);
    CHECK(rig.host->received("0100").empty());
}

TEST_CASE("an open clinic hold left by a crash is reversed when the card is presented again") {
    OnlineRig rig(1000, approving("00"));
    TransactionRecord hold;
    // The intent as clinic_payment writes it before the 0100.
    const Bytes asn = *digits_to_bcd("10000000000000012345");
    std::copy(asn.begin(), asn.end(), hold.asn.begin());
    const Bytes issuer = hex(issuer_hex);
    std::copy(issuer.begin(), issuer.end(), hold.issuer_id.begin());
    hold.link = LinkKind::clinic_hold;
    hold.amount_fen = 700;
    hold.stan = 42;
    hold.batch_number = 1;
    REQUIRE(rig.queue->record_intent(hold).ok());
    auto recovered = rig.terminal->recover();
    REQUIRE(recovered.ok());
    REQUIRE(recovered->reversed.size() == 1);
    CHECK(recovered->reversed[0].link == LinkKind::clinic_reversal);
    REQUIRE(rig.client->upload(*rig.queue).ok());
    const auto reversals = rig.host->received("0421");
    REQUIRE(reversals.size() == 1);
    CHECK(reversals[0].get(90)->substr(0, 10) == "0100000042");
}

TEST_CASE("hotlist download: every chunk from the local version, applied as one delta") {
    Asn a{}, b{};
    a[9] = 0x01;
    b[9] = 0x02;
    OnlineRig rig(1000, [](const Message& r) -> std::optional<Message> {
        Message m = reply(r, "00");
        if (r.mti() == "0800" && r.get_number(70) == 101u) {
            const std::string chunk(r.get(48)->substr(8, 4));
            if (chunk == "0000") m.set(63, "000000021+00000000000000000001+00000000000000000002");
            else m.set(63, "000000030-00000000000000000001");
        }
        return m;
    });
    auto report = rig.client->sync_hotlist(rig.hotlist);
    REQUIRE_MESSAGE(report.ok(), (report.ok() ? "" : report.error().message));
    CHECK(report->chunks == 2);
    CHECK(report->to_version == 3);
    CHECK(rig.hotlist.version() == 3);
    CHECK_FALSE(rig.hotlist.blocked(a));
    CHECK(rig.hotlist.blocked(b) == BlockReason::issuer);
    const auto requests = rig.host->received("0800");
    REQUIRE(requests.size() == 2);
    CHECK(requests[0].get(48) == "000000000000");
    CHECK(requests[1].get(48) == "000000000001");
}

TEST_CASE("a host restored behind the terminal sends its whole log: the local list is replaced by it") {
    Asn a{}, b{};
    a[9] = 0x01;
    b[9] = 0x02;
    OnlineRig rig(1000, [](const Message& r) -> std::optional<Message> {
        Message m = reply(r, "00");
        if (r.mti() == "0800" && r.get_number(70) == 101u)
            m.set(63, "000000020+00000000000000000002+00000000000000000003-00000000000000000003");
        return m;
    });
    REQUIRE(rig.hotlist.apply({0, 5, {{a, BlockReason::lost}}, {}}).ok());
    auto report = rig.client->sync_hotlist(rig.hotlist);
    REQUIRE_MESSAGE(report.ok(), (report.ok() ? "" : report.error().message));
    CHECK(report->replaced);
    CHECK(rig.hotlist.version() == 2);
    CHECK(rig.hotlist.size() == 1);
    CHECK_FALSE(rig.hotlist.blocked(a));
    CHECK(rig.hotlist.blocked(b) == BlockReason::issuer);
}

TEST_CASE("a malformed hotlist chunk changes nothing") {
    OnlineRig rig(1000, [](const Message& r) -> std::optional<Message> {
        Message m = reply(r, "00");
        const std::string chunk(r.get(48)->substr(8, 4));
        m.set(63, chunk == "0000" ? "000000051+00000000000000000001" : "000000050*0000000000000000000X");
        return m;
    });
    auto report = rig.client->sync_hotlist(rig.hotlist);
    REQUIRE_FALSE(report.ok());
    CHECK(report.error().code == ClearingErrorCode::protocol_error);
    CHECK(rig.hotlist.version() == 0);
    CHECK(rig.hotlist.size() == 0);
}

TEST_CASE("reconciliation sends the batch totals; 00 closes the batch durably, 95 keeps it open") {
    std::string answer = "95";
    OnlineRig rig(2000, [&](const Message& r) -> std::optional<Message> {
        if (r.mti() == "0500") return reply(r, answer);
        if (r.mti() == "0200") return answer_load(r);
        return reply(r, "00");
    });
    REQUIRE(rig.terminal->load(1000, *rig.client).ok());
    REQUIRE(rig.terminal->purchase(300).ok());
    REQUIRE(rig.client->upload(*rig.queue).ok());
    auto out = rig.client->reconcile();
    REQUIRE(out.ok());
    CHECK_FALSE(out->balanced);
    const Message request = rig.host->received("0500").at(0);
    CHECK(request.get_number(74) == 1u);
    CHECK(request.get_number(86) == 1000u);
    CHECK(request.get_number(76) == 1u);
    CHECK(request.get_number(88) == 300u);
    CHECK(request.get(60) == "000001");
    answer = "00";
    out = rig.client->reconcile();
    REQUIRE(out.ok());
    CHECK(out->balanced);
    rig.open_queue();  // a new process: the queue's log says batch 2, zero totals
    rig.make_terminal();
    rig.connect();
    CHECK(rig.client->batch().batch_number == 2);
    CHECK(rig.client->batch().totals == BatchTotals{});
}

TEST_CASE("STANs never repeat across restarts of the batch state") {
    TempDir dir;
    std::set<std::uint32_t> seen;
    for (int run = 0; run < 3; ++run) {
        auto queue = TransactionQueue::open(dir.path / "queue.log");
        REQUIRE(queue.ok());
        for (int i = 0; i < 7; ++i) {
            auto stan = (*queue)->take_stan();
            REQUIRE(stan.ok());
            CHECK(seen.insert(*stan).second);
        }
    }
}

TEST_CASE("upload acknowledges in chunks of the queue's own ack_batch_max, counting each chunk's bookings with it") {
    OnlineRig rig(2000, approving());
    QueueLimits limits;
    limits.ack_batch_max = 2;
    rig.client.reset();
    rig.open_queue(limits);
    rig.make_terminal();
    rig.connect();
    for (int i = 0; i < 5; ++i) REQUIRE(rig.terminal->purchase(100).ok());
    auto report = rig.client->upload(*rig.queue);
    REQUIRE_MESSAGE(report.ok(), (report.ok() ? "" : report.error().message));
    CHECK(report->sent == 5);
    CHECK(report->acknowledged == 5);
    CHECK(rig.queue->size() == 0);
    CHECK(rig.client->batch().totals.debits_count == 5);
    CHECK(rig.client->batch().totals.debits_fen == 500);
}

TEST_CASE("with a batch log, a client uploads only that queue") {
    OnlineRig rig(2000, approving());
    TempDir other_dir;
    auto other = TransactionQueue::open(other_dir.path / "other.log");
    REQUIRE(other.ok());
    auto refused = rig.client->upload(**other);
    REQUIRE_FALSE(refused.ok());
    CHECK(refused.error().code == ClearingErrorCode::bad_option);
}

TEST_CASE("a transit tap's 0320 carries DF0C line and station") {
    OnlineRig rig(1000, approving());
    TapRequest tap;
    tap.line = 1;
    tap.station = 9;
    REQUIRE(rig.terminal->transit_tap(tap).ok());
    REQUIRE(rig.client->upload(*rig.queue).ok());
    const auto uploads = rig.host->received("0320");
    REQUIRE(uploads.size() == 1);
    CHECK(tag(uploads[0], 0xDF0C) == Bytes{0x00, 0x01, 0x00, 0x09});
}

TEST_CASE("a queued purchase leaves the queue only on 00 naming it (DF10); 59, 94 and another record's digest keep it") {
    // The answer the host gives to each 0320, in turn.
    std::vector<std::function<Message(const Message&)>> answers = {
        [](const Message& r) { return reply(r, "59"); },  // its TAC failed at the clearing: recorded for review
        [](const Message& r) { return reply(r, "94"); },  // another record holds its id
        [](const Message& r) {                            // an approval of another record
            Message m = reply(r, "00");
            m.set(62, iso8583::encode_record_digest({1, 2, 3, 4, 5, 6, 7, 8}));
            return m;
        },
        [](const Message& r) {  // an approval without a digest (a host that does not name what it booked)
            Message m = reply(r, "00");
            m.clear(62);
            return m;
        },
        [](const Message& r) { return reply(r, "00"); },  // this very record
    };
    std::size_t next = 0;
    OnlineRig rig(1000, [&](const Message& r) -> std::optional<Message> {
        if (r.mti() != "0320") return reply(r, "00");
        return answers.at(std::min(next++, answers.size() - 1))(r);
    });
    TapRequest tap;
    tap.line = 1;
    tap.station = 9;
    REQUIRE(rig.terminal->transit_tap(tap).ok());
    for (std::size_t round = 0; round + 1 < answers.size(); ++round) {
        auto report = rig.client->upload(*rig.queue);
        REQUIRE(report.ok());
        CHECK(rig.queue->size() == 1);
        CHECK(report->kept == 1);
        CHECK(report->kept_for_review.size() == 1);
        CHECK(rig.client->batch().totals.debits_count == 0);
    }
    auto last = rig.client->upload(*rig.queue);
    REQUIRE(last.ok());
    CHECK(last->approved == 1);
    CHECK(rig.queue->size() == 0);
    CHECK(rig.client->batch().totals.debits_count == 1);
}
