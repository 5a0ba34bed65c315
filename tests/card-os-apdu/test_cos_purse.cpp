// The purse ADF: GET BALANCE, load, purchase, the purse log, GET TRANSACTION PROVE, the MAC-failure lock
// and APPLICATION UNBLOCK (docs/CARD-SPEC.md §2, §4, §6 and card-os-apdu/README.md). Every MAC and TAC
// the card answers is recomputed here from the test keys.
#include "test_cos_support.hpp"

#include <algorithm>

using namespace cos_test;

TEST_SUITE_BEGIN("cos purse");

// ---- GET BALANCE ------------------------------------------------------------------------------

TEST_CASE("GET BALANCE answers the balance as 4 bytes big-endian") {
    auto card = make_card();
    select_purse(*card);
    const Rsp r = send(*card, "80 5C 00 02 04");
    CHECK(r.sw_hex() == "9000");
    CHECK(r.data_hex() == "00002710");  // 10000 fen
}

TEST_CASE("GET BALANCE answers other P1 values the same") {
    auto card = make_card();
    select_purse(*card);
    for (const char* apdu : {"80 5C 01 02 04", "80 5C 03 02 04", "80 5C FF 02 04"}) {
        const Rsp r = send(*card, apdu);
        CHECK_MESSAGE(r.sw_hex() == "9000", apdu);
        CHECK_MESSAGE(r.data_hex() == "00002710", apdu);
    }
}

TEST_CASE("GET BALANCE with P2 01 (ED) answers 6A81, other P2 6A86") {
    auto card = make_card();
    select_purse(*card);
    CHECK(sw(*card, "80 5C 00 01 04") == "6A81");
    CHECK(sw(*card, "80 5C 00 00 04") == "6A86");
    CHECK(sw(*card, "80 5C 00 03 04") == "6A86");
    CHECK(sw(*card, "80 5C 00 FF 04") == "6A86");
}

// ---- load -------------------------------------------------------------------------------------

TEST_CASE("INITIALIZE FOR LOAD answers old balance, online ATC, key version, alg 00, random and MAC1") {
    auto card = make_card();
    select_purse(*card);
    const Rsp r = send(*card, init_load_apdu(0x1000));
    const InitLoadResponse init = parse_init_load(r);
    CHECK(init.old_balance == test_balance_fen);
    CHECK(init.online_atc == 0);
    CHECK(init.key_version == 0x01);
    CHECK(init.alg_id == 0x00);
    // MAC1 = DES-MAC(SESLK, old balance ‖ amount ‖ 02 ‖ terminal id), SESLK from the card's own random.
    const Key8 seslk = crypto::load_session_key(key16(test_dlk), init.random, init.online_atc);
    const auto mac1 = crypto::des_mac(seslk, crypto::load_mac1_input(test_balance_fen, 0x1000, crypto::type_ep_load, hex(test_terminal)));
    CHECK(hx(init.mac1) == hx(mac1));
}

TEST_CASE("a load with the host MAC2 from DLK credits the purse and answers the TAC from DTK") {
    auto card = make_card();
    select_purse(*card);
    const CardDateTime w = when("20261126", "103100");
    const InitLoadResponse init = parse_init_load(send(*card, init_load_apdu(5000)));
    const Bytes mac2 = host_load_mac2(init, 5000, test_terminal, w);
    const Rsp r = send(*card, credit_apdu(w, mac2));
    REQUIRE(r.sw_hex() == "9000");
    // TAC = DES-MAC(DTK_L ⊕ DTK_R, new balance ‖ online ATC before ‖ amount ‖ 02 ‖ terminal ‖ date ‖ time).
    CHECK(r.data_hex() == hx(expected_load_tac(15000, 0, 5000, test_terminal, w)));
    CHECK(balance(*card) == 15000);
    CHECK(card->snapshot().online_atc == 1);
    CHECK(card->snapshot().offline_atc == 0);
    // The next INITIALIZE FOR LOAD reports the incremented online ATC.
    CHECK(parse_init_load(send(*card, init_load_apdu(1))).online_atc == 1);
}

TEST_CASE("a load writes EF18 record 1: post-increment online ATC, amount, type 02, terminal, date, time") {
    auto card = make_card();
    select_purse(*card);
    const CardDateTime w = when("20261126", "103100");
    do_load(*card, 5000, w);
    const Rsp rec = send(*card, "00 B2 01 C4 17");
    REQUIRE(rec.sw_hex() == "9000");
    CHECK(rec.data_hex() == log_record(1, 5000, 0x02, test_terminal, w));
}

TEST_CASE("docs/CARD-SPEC.md §4 vector 4 through the card: the real card's TAC ED0F8755") {
    // Personalize with the real card's DLK and DTK (the test keys are those) and balance 0. The random is the
    // card's own, so MAC1 and MAC2 are recomputed from it; the TAC does not depend on the random and must be
    // the real card's ED0F8755.
    json profile = card_profile();
    profile["balance_fen"] = 0;
    auto card = make_card(profile);
    select_purse(*card);
    const Rsp r = send(*card, "80500002 0B 01 00001C37 000001000050 10");
    const InitLoadResponse init = parse_init_load(r);
    CHECK(hx(ByteView(r.data).first(8)) == "0000000000000100");  // old balance 0, ATC 0, key version 01, alg 00
    const Key8 seslk = crypto::load_session_key(key16("374598B5C0B0EAE1E1D06609AC5BB369"), init.random, 0);
    CHECK(hx(init.mac1) == hx(crypto::des_mac(seslk, hex("00000000"
                                                         "00001C37"
                                                         "02"
                                                         "000001000050"))));
    const auto mac2 = crypto::des_mac(seslk, hex("00001C37"
                                                 "02"
                                                 "000001000050"
                                                 "20140825"
                                                 "103100"));
    const Rsp credit = send(*card, concat(hex("80520000 0B 20140825 103100"), mac2, hex("04")));
    CHECK(credit.sw_hex() == "9000");
    CHECK(credit.data_hex() == "ED0F8755");
    CHECK(balance(*card) == 0x1C37);
}

TEST_CASE("wrong MAC2 answers 9302 and leaves balance, ATC and log unchanged") {
    auto card = make_card();
    const PurseState before = observe(*card);
    const CardDateTime w = when("20261126", "103100");
    const InitLoadResponse init = parse_init_load(send(*card, init_load_apdu(5000)));
    Bytes mac2 = host_load_mac2(init, 5000, test_terminal, w);
    mac2[3] ^= 0x01;
    CHECK(send(*card, credit_apdu(w, mac2)).sw_hex() == "9302");
    CHECK(observe(*card) == before);
    CHECK(card->snapshot().mac_failures == 1);
}

TEST_CASE("MAC2 over a different date than CREDIT carries answers 9302") {
    auto card = make_card();
    const PurseState before = observe(*card);
    const InitLoadResponse init = parse_init_load(send(*card, init_load_apdu(5000)));
    const Bytes mac2 = host_load_mac2(init, 5000, test_terminal, when("20261126", "103100"));
    CHECK(send(*card, credit_apdu(when("20261127", "103100"), mac2)).sw_hex() == "9302");
    CHECK(observe(*card) == before);
}

TEST_CASE("a load above the purse maximum answers 6985 at INITIALIZE FOR LOAD") {
    auto card = make_card();
    select_purse(*card);
    // 10000 + 90000 = 100000 is the maximum itself: allowed.
    CHECK(send(*card, init_load_apdu(90000)).sw_hex() == "9000");
    CHECK(send(*card, init_load_apdu(90001)).sw_hex() == "6985");
    CHECK(send(*card, init_load_apdu(0xFFFFFFFF)).sw_hex() == "6985");
    CHECK(observe(*card).balance_fen == test_balance_fen);
}

TEST_CASE("the purse maximum defaults to 100000 fen") {
    json profile = card_profile();
    profile.erase("max_balance_fen");
    auto card = make_card(profile);
    select_purse(*card);
    CHECK(send(*card, init_load_apdu(90001)).sw_hex() == "6985");
    do_load(*card, 90000);
    CHECK(balance(*card) == 100000);
}

TEST_CASE("CREDIT FOR LOAD without a pending INITIALIZE FOR LOAD answers 6985") {
    auto card = make_card();
    select_purse(*card);
    CHECK(send(*card, credit_apdu(when("20261126", "103100"), hex("00000000"))).sw_hex() == "6985");
    // After a purchase INIT the pending transaction is a purchase, not a load.
    send(*card, init_purchase_apdu(100));
    CHECK(send(*card, credit_apdu(when("20261126", "103100"), hex("00000000"))).sw_hex() == "6985");
}

TEST_CASE("CREDIT after another command cancelled the INITIALIZE answers 6985 even with the right MAC2") {
    auto card = make_card();
    select_purse(*card);
    const CardDateTime w = when("20261126", "103100");
    const InitLoadResponse init = parse_init_load(send(*card, init_load_apdu(5000)));
    CHECK(balance(*card) == test_balance_fen);  // GET BALANCE cancels the pending load
    CHECK(send(*card, credit_apdu(w, host_load_mac2(init, 5000, test_terminal, w))).sw_hex() == "6985");
    CHECK(observe(*card).balance_fen == test_balance_fen);
    CHECK(card->snapshot().online_atc == 0);
}

TEST_CASE("an abandoned INITIALIZE FOR LOAD changes nothing (the online ATC probe)") {
    auto card = make_card();
    const PurseState before = observe(*card);
    for (int i = 0; i < 3; ++i) CHECK(parse_init_load(send(*card, init_load_apdu(100))).online_atc == 0);
    CHECK(observe(*card) == before);
    const auto snap = card->snapshot();
    CHECK(snap.online_atc == 0);
    CHECK(snap.mac_failures == 0);
}

TEST_CASE("INITIALIZE with key index other than 01 answers 9403") {
    auto card = make_card();
    select_purse(*card);
    CHECK(send(*card, init_load_apdu(100, test_terminal, 0x02)).sw_hex() == "9403");
    CHECK(send(*card, init_load_apdu(100, test_terminal, 0x00)).sw_hex() == "9403");
    CHECK(send(*card, init_purchase_apdu(100, test_terminal, false, 0x02)).sw_hex() == "9403");
    CHECK(send(*card, init_purchase_apdu(100, test_terminal, true, 0x11)).sw_hex() == "9403");
}

// ---- purchase ---------------------------------------------------------------------------------

TEST_CASE("INITIALIZE FOR PURCHASE answers balance, offline ATC, overdraft 000000, key version, alg 00, random") {
    auto card = make_card();
    select_purse(*card);
    const Rsp r = send(*card, init_purchase_apdu(0x1000));
    const InitPurchaseResponse init = parse_init_purchase(r);
    CHECK(init.balance == test_balance_fen);
    CHECK(init.offline_atc == 0);
    CHECK(hx(init.overdraft_limit) == "000000");
    CHECK(init.key_version == 0x01);
    CHECK(init.alg_id == 0x00);
    CHECK(init.random.size() == 4);
}

TEST_CASE("a full purchase: DEBIT answers TAC ‖ MAC2, both recomputed from DTK and DPK") {
    auto card = make_card();
    select_purse(*card);
    const CardDateTime w = when("20261126", "135100");
    const std::uint32_t serial = 0x00000001;
    const InitPurchaseResponse init = parse_init_purchase(send(*card, init_purchase_apdu(0x1000)));
    const Bytes mac1 = terminal_purchase_mac1(init, 0x1000, crypto::type_ep_purchase, test_terminal, serial, w);
    const Rsp r = send(*card, debit_apdu(serial, w, mac1));
    REQUIRE(r.sw_hex() == "9000");
    REQUIRE(r.data.size() == 8);
    CHECK(hx(ByteView(r.data).first(4)) == hx(expected_purchase_tac(0x1000, crypto::type_ep_purchase, test_terminal, serial, w)));
    CHECK(hx(ByteView(r.data).last(4)) == hx(expected_purchase_mac2(init, 0x1000, serial)));
    CHECK(balance(*card) == test_balance_fen - 0x1000);
    CHECK(card->snapshot().offline_atc == 1);
    CHECK(card->snapshot().online_atc == 0);
    CHECK(parse_init_purchase(send(*card, init_purchase_apdu(1))).offline_atc == 1);
}

TEST_CASE("the purchase session key uses terminal serial bytes 2..3") {
    auto card = make_card();
    select_purse(*card);
    const CardDateTime w = when("20261126", "135100");
    const std::uint32_t serial = 0x1234ABCD;
    const InitPurchaseResponse init = parse_init_purchase(send(*card, init_purchase_apdu(300)));
    const Bytes mac1 = terminal_purchase_mac1(init, 300, crypto::type_ep_purchase, test_terminal, serial, w);
    const Rsp r = send(*card, debit_apdu(serial, w, mac1));
    REQUIRE(r.sw_hex() == "9000");
    CHECK(hx(ByteView(r.data).first(4)) == hx(expected_purchase_tac(300, crypto::type_ep_purchase, test_terminal, serial, w)));
    CHECK(hx(ByteView(r.data).last(4)) == hx(expected_purchase_mac2(init, 300, serial)));
}

TEST_CASE("a purchase writes EF18 record 1: post-increment offline ATC, amount, type 06, terminal, date, time") {
    auto card = make_card();
    select_purse(*card);
    const CardDateTime w = when("20261126", "135100");
    do_purchase(*card, 250, 1, w);
    const Rsp rec = send(*card, "00 B2 01 C4 17");
    REQUIRE(rec.sw_hex() == "9000");
    CHECK(rec.data_hex() == log_record(1, 250, 0x06, test_terminal, w));
}

TEST_CASE("a purchase of the whole balance is allowed; one fen more answers 9401 at INITIALIZE") {
    auto card = make_card();
    select_purse(*card);
    CHECK(send(*card, init_purchase_apdu(test_balance_fen + 1)).sw_hex() == "9401");
    CHECK(send(*card, init_purchase_apdu(0xFFFFFFFF)).sw_hex() == "9401");
    CHECK(send(*card, init_purchase_apdu(test_balance_fen + 1, test_terminal, true)).sw_hex() == "9401");
    CHECK(observe(*card).balance_fen == test_balance_fen);
    do_purchase(*card, test_balance_fen);
    CHECK(balance(*card) == 0);
    CHECK(send(*card, init_purchase_apdu(1)).sw_hex() == "9401");
}

TEST_CASE("wrong MAC1 answers 9302 and leaves balance, ATC and log unchanged") {
    auto card = make_card();
    select_purse(*card);
    do_purchase(*card, 100);  // so the log is not empty
    const PurseState before = observe(*card);
    const CardDateTime w = when("20261126", "135100");
    const InitPurchaseResponse init = parse_init_purchase(send(*card, init_purchase_apdu(500)));
    Bytes mac1 = terminal_purchase_mac1(init, 500, crypto::type_ep_purchase, test_terminal, 7, w);
    mac1[0] ^= 0x80;
    CHECK(send(*card, debit_apdu(7, w, mac1)).sw_hex() == "9302");
    CHECK(observe(*card) == before);
    CHECK(card->snapshot().mac_failures == 1);
}

TEST_CASE("MAC1 computed for a different amount answers 9302") {
    auto card = make_card();
    const PurseState before = observe(*card);
    const CardDateTime w = when("20261126", "135100");
    const InitPurchaseResponse init = parse_init_purchase(send(*card, init_purchase_apdu(500)));
    const Bytes mac1 = terminal_purchase_mac1(init, 5, crypto::type_ep_purchase, test_terminal, 7, w);
    CHECK(send(*card, debit_apdu(7, w, mac1)).sw_hex() == "9302");
    CHECK(observe(*card) == before);
}

TEST_CASE("a DEBIT that failed its MAC1 ends the transaction: the right MAC1 after it answers 6985") {
    // No second guess on one INITIALIZE (security; docs/CARD-SPEC.md §2 "any command other than the next step
    // cancels", and a failed step is not a pending one).
    auto card = make_card();
    const PurseState before = observe(*card);
    const CardDateTime w = when("20261126", "135100");
    const InitPurchaseResponse init = parse_init_purchase(send(*card, init_purchase_apdu(500)));
    CHECK(send(*card, debit_apdu(1, w, hex("01020304"))).sw_hex() == "9302");
    const Bytes mac1 = terminal_purchase_mac1(init, 500, crypto::type_ep_purchase, test_terminal, 1, w);
    CHECK(send(*card, debit_apdu(1, w, mac1)).sw_hex() == "6985");
    CHECK(observe(*card) == before);
}

TEST_CASE("DEBIT without a pending INITIALIZE FOR PURCHASE answers 6985") {
    auto card = make_card();
    select_purse(*card);
    const CardDateTime w = when("20261126", "135100");
    CHECK(send(*card, debit_apdu(1, w, hex("00000000"))).sw_hex() == "6985");
    // A pending load is not a pending purchase.
    send(*card, init_load_apdu(100));
    CHECK(send(*card, debit_apdu(1, w, hex("00000000"))).sw_hex() == "6985");
}

TEST_CASE("DEBIT after another command cancelled the INITIALIZE answers 6985 even with the right MAC1") {
    auto card = make_card();
    const PurseState before = observe(*card);
    const CardDateTime w = when("20261126", "135100");
    const InitPurchaseResponse init = parse_init_purchase(send(*card, init_purchase_apdu(500)));
    CHECK(send(*card, "00 B0 95 00 1E").sw_hex() == "9000");  // any other command cancels
    const Bytes mac1 = terminal_purchase_mac1(init, 500, crypto::type_ep_purchase, test_terminal, 1, w);
    CHECK(send(*card, debit_apdu(1, w, mac1)).sw_hex() == "6985");
    CHECK(observe(*card) == before);
}

TEST_CASE("DEBIT twice with the same MAC1: the second answers 6985 (one INITIALIZE, one DEBIT)") {
    auto card = make_card();
    select_purse(*card);
    const CardDateTime w = when("20261126", "135100");
    const InitPurchaseResponse init = parse_init_purchase(send(*card, init_purchase_apdu(500)));
    const Bytes mac1 = terminal_purchase_mac1(init, 500, crypto::type_ep_purchase, test_terminal, 1, w);
    CHECK(send(*card, debit_apdu(1, w, mac1)).sw_hex() == "9000");
    CHECK(send(*card, debit_apdu(1, w, mac1)).sw_hex() == "6985");
    CHECK(balance(*card) == test_balance_fen - 500);
}

TEST_CASE("an abandoned INITIALIZE FOR PURCHASE changes nothing") {
    auto card = make_card();
    const PurseState before = observe(*card);
    for (int i = 0; i < 3; ++i) CHECK(parse_init_purchase(send(*card, init_purchase_apdu(100))).offline_atc == 0);
    CHECK(parse_init_purchase(send(*card, init_purchase_apdu(100, test_terminal, true))).offline_atc == 0);
    card->power_off();  // also abandoned by a power loss
    CHECK(observe(*card) == before);
}

TEST_CASE("power off cancels a pending purchase: DEBIT after reset answers 6985") {
    auto card = make_card();
    select_purse(*card);
    const CardDateTime w = when("20261126", "135100");
    const InitPurchaseResponse init = parse_init_purchase(send(*card, init_purchase_apdu(500)));
    card->reset();
    select_purse(*card);
    const Bytes mac1 = terminal_purchase_mac1(init, 500, crypto::type_ep_purchase, test_terminal, 1, w);
    CHECK(send(*card, debit_apdu(1, w, mac1)).sw_hex() == "6985");
    CHECK(balance(*card) == test_balance_fen);
}

TEST_CASE("INITIALIZE with P2 01 (ED) answers 6A81, other P2 6A86") {
    auto card = make_card();
    select_purse(*card);
    CHECK(sw(*card, "80 50 01 01 0B 01 00000064 001122334455 0F") == "6A81");
    CHECK(sw(*card, "80 50 00 01 0B 01 00000064 001122334455 10") == "6A81");
    CHECK(sw(*card, "80 50 03 01 0B 01 00000064 001122334455 0F") == "6A81");
    CHECK(sw(*card, "80 50 01 00 0B 01 00000064 001122334455 0F") == "6A86");
    CHECK(sw(*card, "80 50 01 03 0B 01 00000064 001122334455 0F") == "6A86");
}

TEST_CASE("a date or time in DEBIT that is not BCD answers 6A80, cancels the purchase and counts no MAC failure") {
    auto card = make_card();
    const PurseState before = observe(*card);
    const CardDateTime w = when("20261126", "135100");
    const InitPurchaseResponse init = parse_init_purchase(send(*card, init_purchase_apdu(500)));
    const Bytes mac1 = terminal_purchase_mac1(init, 500, crypto::type_ep_purchase, test_terminal, 1, w);
    CHECK(send(*card, concat(hex("80 54 01 00 0F 00000001 2026112A 135100"), mac1, hex("08"))).sw_hex() == "6A80");
    CHECK(send(*card, debit_apdu(1, w, mac1)).sw_hex() == "6985");
    CHECK(card->snapshot().mac_failures == 0);
    parse_init_purchase(send(*card, init_purchase_apdu(500)));
    CHECK(send(*card, concat(hex("80 54 01 00 0F 00000001 20261126 1351FF"), mac1, hex("08"))).sw_hex() == "6A80");
    CHECK(observe(*card) == before);
}

TEST_CASE("a date or time in CREDIT that is not BCD answers 6A80, cancels the load and counts no MAC failure") {
    auto card = make_card();
    const PurseState before = observe(*card);
    const CardDateTime w = when("20261126", "103100");
    const InitLoadResponse init = parse_init_load(send(*card, init_load_apdu(500)));
    const Bytes mac2 = host_load_mac2(init, 500, test_terminal, w);
    CHECK(send(*card, concat(hex("80 52 00 00 0B 2026112F 103100"), mac2, hex("04"))).sw_hex() == "6A80");
    CHECK(send(*card, credit_apdu(w, mac2)).sw_hex() == "6985");
    CHECK(card->snapshot().mac_failures == 0);
    CHECK(observe(*card) == before);
}

TEST_CASE("INITIALIZE with P1 not 00/01/03 answers 6A86") {
    auto card = make_card();
    select_purse(*card);
    CHECK(send(*card, concat(hex("80 50 02 02 0B 01 00000064 001122334455 0F"))).sw_hex() == "6A86");
    CHECK(send(*card, concat(hex("80 50 07 02 0B 01 00000064 001122334455 0F"))).sw_hex() == "6A86");
}

// ---- the purse log ----------------------------------------------------------------------------

TEST_CASE("EF18 record 1 is the newest; the cyclic log wraps after 10 records") {
    auto card = make_card();
    select_purse(*card);
    // 11 purchases of 1..11 fen: offline ATC after = 1..11.
    for (std::uint32_t i = 1; i <= 11; ++i) {
        const CardDateTime w = when("20261126", "1300" + std::string(i < 10 ? "0" : "") + std::to_string(i));
        do_purchase(*card, i, i, w);
    }
    for (std::uint8_t rec = 1; rec <= 10; ++rec) {
        const std::uint32_t n = 12 - rec;  // record 1 = purchase 11, record 10 = purchase 2
        const CardDateTime w = when("20261126", "1300" + std::string(n < 10 ? "0" : "") + std::to_string(n));
        const Rsp r = send(*card, Bytes{0x00, 0xB2, rec, 0xC4, 0x17});
        REQUIRE(r.sw_hex() == "9000");
        CHECK_MESSAGE(r.data_hex() == log_record(static_cast<std::uint16_t>(n), n, 0x06, test_terminal, w), "record " << int(rec));
    }
    CHECK(sw(*card, "00 B2 0B C4 17") == "6A83");
}

TEST_CASE("loads and purchases share EF18, each with its own ATC") {
    auto card = make_card();
    select_purse(*card);
    const CardDateTime w1 = when("20261126", "080000");
    const CardDateTime w2 = when("20261126", "090000");
    const CardDateTime w3 = when("20261126", "100000");
    do_purchase(*card, 100, 1, w1);
    do_load(*card, 2000, w2);
    do_purchase(*card, 300, 2, w3);
    CHECK(send(*card, "00 B2 01 C4 17").data_hex() == log_record(2, 300, 0x06, test_terminal, w3));
    CHECK(send(*card, "00 B2 02 C4 17").data_hex() == log_record(1, 2000, 0x02, test_terminal, w2));
    CHECK(send(*card, "00 B2 03 C4 17").data_hex() == log_record(1, 100, 0x06, test_terminal, w1));
    CHECK(balance(*card) == test_balance_fen - 100 + 2000 - 300);
}

// ---- GET TRANSACTION PROVE --------------------------------------------------------------------

TEST_CASE("GET TRANSACTION PROVE after a debit whose response was lost answers MAC2 ‖ TAC") {
    auto card = make_card();
    select_purse(*card);
    const PurchaseDone done = do_purchase(*card, 700, 42);  // the terminal never saw this response
    const Rsp r = send(*card, concat(hex("80 5A 00 06 02"), be_bytes(done.init.offline_atc, 2), hex("08")));
    CHECK(r.sw_hex() == "9000");
    CHECK(r.data_hex() == hx(done.mac2) + hx(done.tac));
    CHECK(r.data_hex() == hx(expected_purchase_mac2(done.init, 700, 42)) +
                              hx(expected_purchase_tac(700, 0x06, test_terminal, 42, when("20261126", "130000"))));
}

TEST_CASE("GET TRANSACTION PROVE survives power off (the proof is non-volatile)") {
    auto card = make_card();
    select_purse(*card);
    const PurchaseDone done = do_purchase(*card, 700, 42);
    card->power_off();
    select_purse(*card);
    const Rsp r = send(*card, concat(hex("80 5A 00 06 02"), be_bytes(done.init.offline_atc, 2), hex("08")));
    CHECK(r.sw_hex() == "9000");
    CHECK(r.data_hex() == hx(done.mac2) + hx(done.tac));
}

TEST_CASE("GET TRANSACTION PROVE with another ATC, another type, or before any transaction answers 9406") {
    auto card = make_card();
    select_purse(*card);
    CHECK(sw(*card, "80 5A 00 06 02 0000 08") == "9406");
    const PurchaseDone done = do_purchase(*card, 700, 42);
    REQUIRE(done.init.offline_atc == 0);
    CHECK(sw(*card, "80 5A 00 06 02 0001 08") == "9406");  // the post-increment value is not the one
    CHECK(sw(*card, "80 5A 00 09 02 0000 08") == "9406");  // no CAPP purchase yet
    CHECK(sw(*card, "80 5A 00 02 02 0000 08") == "9406");  // no load yet
    CHECK(sw(*card, "80 5A 00 06 02 0000 08") == "9000");
    // An older transaction is no longer provable once a newer one of the type completed.
    do_purchase(*card, 1, 43);
    CHECK(sw(*card, "80 5A 00 06 02 0000 08") == "9406");
    CHECK(sw(*card, "80 5A 00 06 02 0001 08") == "9000");
}

TEST_CASE("GET TRANSACTION PROVE is not fooled by a failed DEBIT") {
    auto card = make_card();
    select_purse(*card);
    do_purchase(*card, 700, 42);  // ATC 0 completed
    const CardDateTime w = when("20261126", "135100");
    const InitPurchaseResponse init = parse_init_purchase(send(*card, init_purchase_apdu(5)));
    REQUIRE(init.offline_atc == 1);
    CHECK(send(*card, debit_apdu(1, w, hex("01020304"))).sw_hex() == "9302");
    CHECK(sw(*card, "80 5A 00 06 02 0001 08") == "9406");
    CHECK(sw(*card, "80 5A 00 06 02 0000 08") == "9000");
}

TEST_CASE("GET TRANSACTION PROVE for a load (type 02) answers the load's TAC") {
    auto card = make_card();
    select_purse(*card);
    const LoadDone done = do_load(*card, 1234);
    const Rsp r = send(*card, "80 5A 00 02 02 0000 08");
    CHECK(r.sw_hex() == "9000");
    REQUIRE(r.data.size() == 8);
    CHECK(hx(ByteView(r.data).last(4)) == hx(done.tac));
}

// ---- MAC-failure lock and APPLICATION UNBLOCK --------------------------------------------------

namespace {
// One failed DEBIT: INITIALIZE FOR PURCHASE then a DEBIT with a wrong MAC1. Returns the DEBIT's SW.
std::string fail_one_debit(VirtualCard& card) {
    const Rsp init = send(card, init_purchase_apdu(100));
    if (init.sw_hex() != "9000") return init.sw_hex();
    return send(card, debit_apdu(1, when("20261126", "135100"), hex("DEADBEEF"))).sw_hex();
}
std::string unblock(VirtualCard& card, std::string_view damk = test_damk, bool corrupt = false) {
    const Rsp challenge = send(card, "00 84 00 00 04");
    REQUIRE(challenge.sw_hex() == "9000");
    REQUIRE(challenge.data.size() == 4);
    crypto::Block iv{};
    std::copy(challenge.data.begin(), challenge.data.end(), iv.begin());
    const auto mac = crypto::retail_mac(key16(damk), hex("84 18 00 00 04"), iv);
    Bytes apdu = concat(hex("84 18 00 00 04"), ByteView(mac).first(4));
    if (corrupt) apdu.back() ^= 0x01;
    return send(card, apdu).sw_hex();
}
}  // namespace

TEST_CASE("3 consecutive MAC failures lock the purse: 9303 on every purse command after, SELECT still 9000") {
    auto card = make_card();
    select_purse(*card);
    CHECK(fail_one_debit(*card) == "9302");
    CHECK(fail_one_debit(*card) == "9302");
    CHECK(fail_one_debit(*card) == "9302");  // the third failure is still a wrong MAC; it locks what follows
    CHECK(card->snapshot().purse_locked);
    CHECK(sw(*card, "80 5C 00 02 04") == "9303");
    CHECK(sw(*card, hx(init_purchase_apdu(100))) == "9303");
    CHECK(sw(*card, hx(init_purchase_apdu(100, test_terminal, true))) == "9303");
    CHECK(sw(*card, hx(init_load_apdu(100))) == "9303");
    CHECK(sw(*card, "80 5A 00 06 02 0000 08") == "9303");
    CHECK(sw(*card, select_purse_apdu) == "9000");
    CHECK(sw(*card, "80 5C 00 02 04") == "9303");
}

TEST_CASE("the MAC-failure lock counts load and purchase failures together and survives power off") {
    auto card = make_card();
    select_purse(*card);
    CHECK(fail_one_debit(*card) == "9302");
    const InitLoadResponse init = parse_init_load(send(*card, init_load_apdu(100)));
    (void)init;
    CHECK(send(*card, credit_apdu(when("20261126", "103100"), hex("00000000"))).sw_hex() == "9302");
    CHECK(card->snapshot().mac_failures == 2);
    card->power_off();
    select_purse(*card);
    fail_one_debit(*card);
    card->power_off();
    select_purse(*card);
    CHECK(sw(*card, "80 5C 00 02 04") == "9303");
}

TEST_CASE("a successful MAC resets the failure counter") {
    auto card = make_card();
    select_purse(*card);
    CHECK(fail_one_debit(*card) == "9302");
    CHECK(fail_one_debit(*card) == "9302");
    CHECK(card->snapshot().mac_failures == 2);
    do_purchase(*card, 10);
    CHECK(card->snapshot().mac_failures == 0);
    CHECK(fail_one_debit(*card) == "9302");
    CHECK(fail_one_debit(*card) == "9302");
    CHECK_FALSE(card->snapshot().purse_locked);
    CHECK(balance(*card) == test_balance_fen - 10);
}

TEST_CASE("APPLICATION UNBLOCK with MAC4 from DAMK over the challenge unlocks the purse") {
    auto card = make_card();
    select_purse(*card);
    for (int i = 0; i < 3; ++i) fail_one_debit(*card);
    REQUIRE(sw(*card, "80 5C 00 02 04") == "9303");
    CHECK(unblock(*card) == "9000");
    CHECK_FALSE(card->snapshot().purse_locked);
    CHECK(card->snapshot().mac_failures == 0);
    CHECK(balance(*card) == test_balance_fen);
    do_purchase(*card, 10);
    CHECK(balance(*card) == test_balance_fen - 10);
}

TEST_CASE("APPLICATION UNBLOCK with a wrong MAC leaves the purse locked") {
    auto card = make_card();
    select_purse(*card);
    for (int i = 0; i < 3; ++i) fail_one_debit(*card);
    CHECK(unblock(*card, test_damk, /*corrupt=*/true) == "9302");
    CHECK(unblock(*card, test_dpk) == "9302");  // the MAC of another key
    CHECK(card->snapshot().purse_locked);
    CHECK(sw(*card, "80 5C 00 02 04") == "9303");
}

TEST_CASE("APPLICATION UNBLOCK cannot be replayed: its challenge is used once") {
    auto card = make_card();
    select_purse(*card);
    for (int i = 0; i < 3; ++i) fail_one_debit(*card);
    const Rsp challenge = send(*card, "00 84 00 00 04");
    REQUIRE(challenge.data.size() == 4);
    crypto::Block iv{};
    std::copy(challenge.data.begin(), challenge.data.end(), iv.begin());
    const auto mac = crypto::retail_mac(key16(test_damk), hex("84 18 00 00 04"), iv);
    const Bytes apdu = concat(hex("84 18 00 00 04"), ByteView(mac).first(4));
    REQUIRE(send(*card, apdu).sw_hex() == "9000");
    for (int i = 0; i < 3; ++i) fail_one_debit(*card);
    REQUIRE(card->snapshot().purse_locked);
    CHECK(send(*card, apdu).sw_hex() != "9000");
    CHECK(card->snapshot().purse_locked);
}

TEST_CASE("APPLICATION UNBLOCK without a challenge answers 6984") {
    auto card = make_card();
    select_purse(*card);
    for (int i = 0; i < 3; ++i) fail_one_debit(*card);
    CHECK(sw(*card, "84 18 00 00 04 01020304") == "6984");
    CHECK(card->snapshot().purse_locked);
}

// ---- ATC exhaustion (card-os-apdu/README.md: an ATC at FFFF → INITIALIZE answers 6985) -------------------

namespace {
// A card whose online or offline ATC is FFFF: the payload's purse record (IMAGE-FORMAT.md: balance u32 ‖
// max u32 ‖ overdraft u32 ‖ online ATC u16 ‖ offline ATC u16) is found by its values and edited.
std::unique_ptr<VirtualCard> card_with_atc_ffff(bool online) {
    auto payload = cos::personalize(card_profile());
    REQUIRE(payload.ok());
    Bytes p = payload.value();
    const Bytes purse = hex("00002710 000186A0 00000000 0000 0000");
    const auto it = std::search(p.begin(), p.end(), purse.begin(), purse.end());
    REQUIRE(it != p.end());
    REQUIRE(std::search(it + 1, p.end(), purse.begin(), purse.end()) == p.end());
    const auto at = static_cast<std::size_t>(it - p.begin()) + (online ? 12 : 14);
    p[at] = 0xFF;
    p[at + 1] = 0xFF;
    auto card = VirtualCard::in_memory(p);
    REQUIRE(card.ok());
    REQUIRE((online ? card.value()->snapshot().online_atc : card.value()->snapshot().offline_atc) == 0xFFFF);
    return std::move(card).value();
}
}  // namespace

// An ATC that wrapped to 0000 would repeat (ASN, ATC, type) — a load's ledger transfer id (docs/DESIGN.md §4.3) — and
// the GET TRANSACTION PROVE key; real e-purse cards stop transacting when the counter is exhausted.
TEST_CASE("an offline ATC at FFFF: INITIALIZE FOR PURCHASE / CAPP answers 6985, the counter never wraps") {
    auto card = card_with_atc_ffff(false);
    select_purse(*card);
    CHECK(send(*card, init_purchase_apdu(5, test_terminal, true)).sw_hex() == "6985");
    const Rsp init = send(*card, init_purchase_apdu(5));
    CHECK(init.sw_hex() == "6985");
    if (init.sw_hex() == "9000") {
        const CardDateTime w = when("20261126", "130000");
        const InitPurchaseResponse parsed = parse_init_purchase(init);
        send(*card, debit_apdu(1, w, terminal_purchase_mac1(parsed, 5, 0x06, test_terminal, 1, w)));
        CHECK_MESSAGE(card->snapshot().offline_atc != 0, "the offline ATC wrapped to 0000");
    }
}

TEST_CASE("an online ATC at FFFF: INITIALIZE FOR LOAD answers 6985, the counter never wraps") {
    auto card = card_with_atc_ffff(true);
    select_purse(*card);
    const Rsp init = send(*card, init_load_apdu(5));
    CHECK(init.sw_hex() == "6985");
    if (init.sw_hex() == "9000") {
        const CardDateTime w = when("20261126", "130000");
        send(*card, credit_apdu(w, host_load_mac2(parse_init_load(init), 5, test_terminal, w)));
        CHECK_MESSAGE(card->snapshot().online_atc != 0, "the online ATC wrapped to 0000");
    }
}

TEST_SUITE_END();

TEST_SUITE_BEGIN("cos purse");

TEST_CASE("a DEBIT the card refuses for its form (6700) ends the purchase: a correct DEBIT after it is 6985") {
    auto card = make_card();
    select_purse(*card);
    const auto init = parse_init_purchase(send(*card, init_purchase_apdu(100)));
    const CardDateTime w = when("20261126", "130000");
    const Bytes mac1 = terminal_purchase_mac1(init, 100, crypto::type_ep_purchase, test_terminal, 1, w);
    const Bytes good = debit_apdu(1, w, mac1);
    Bytes short_debit = concat(hex("80 54 01 00 0E"), ByteView(good).subspan(5, 14), hex("08"));
    CHECK(send(*card, short_debit).sw_hex() == "6700");
    CHECK(send(*card, good).sw_hex() == "6985");
    CHECK(card->snapshot().offline_atc == 0);
    CHECK(card->snapshot().mac_failures == 0);
}

TEST_SUITE_END();
