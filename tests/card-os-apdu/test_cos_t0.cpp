// A T=0 image: case-4 commands that produce data answer 61xx and GET RESPONSE (00 C0) returns the data
// (docs/CARD-SPEC.md §8 and card-os-apdu/README.md).
#include "test_cos_support.hpp"

using namespace cos_test;

TEST_SUITE_BEGIN("cos t0");

namespace {
std::unique_ptr<VirtualCard> make_t0_card() {
    json profile = card_profile();
    profile["protocol"] = "T=0";
    return make_card(profile);
}
}  // namespace

TEST_CASE("the profile's protocol decides the card's protocol") {
    CHECK(make_t0_card()->protocol() == cos::Protocol::t0);
    CHECK(make_card()->protocol() == cos::Protocol::t1);
    CHECK_FALSE(make_t0_card()->atr().empty());
}

TEST_CASE("T=0: a case-4 command producing data answers 61xx; GET RESPONSE xx returns it") {
    auto card = make_t0_card();
    // SELECT as a T=0 reader sends it (case 4 without Le): the FCI is 0x33 bytes.
    const Rsp select = send(*card, "00 A4 04 00 08 A000000632010105");
    CHECK(select.sw_hex() == "6133");
    CHECK(select.data.empty());
    const Rsp fci = send(*card, "00 C0 00 00 33");
    CHECK(fci.sw_hex() == "9000");
    CHECK(hx(ByteView(fci.data).first(12)) == "6F318408A000000632010105");
}

TEST_CASE("T=0: GET RESPONSE with xx below the available count answers data + 61(rest)") {
    auto card = make_t0_card();
    select_purse(*card);
    // INITIALIZE FOR PURCHASE sent without Le (T=0 case 4): 15 bytes available.
    const Rsp init = send(*card, "80 50 01 02 0B 01 00000064 001122334455");
    REQUIRE(init.sw_hex() == "610F");
    const Rsp first = send(*card, "00 C0 00 00 05");
    CHECK(first.sw_hex() == "610A");
    CHECK(hx(ByteView(first.data).first(4)) == "00002710");  // balance
    CHECK(first.data.size() == 5);
    const Rsp rest = send(*card, "00 C0 00 00 0A");
    CHECK(rest.sw_hex() == "9000");
    CHECK(rest.data.size() == 10);
}

TEST_CASE("T=0: GET RESPONSE with xx above the available count answers 6C(available)") {
    auto card = make_t0_card();
    select_purse(*card);
    REQUIRE(send(*card, "80 50 01 02 0B 01 00000064 001122334455").sw_hex() == "610F");
    CHECK(sw(*card, "00 C0 00 00 20") == "6C0F");
    const Rsp r = send(*card, "00 C0 00 00 0F");
    CHECK(r.sw_hex() == "9000");
    CHECK(r.data.size() == 15);
}

TEST_CASE("T=0: a case-4 command with Le also answers 61xx") {
    auto card = make_t0_card();
    select_purse(*card);
    CHECK(sw(*card, hx(init_load_apdu(100))) == "6110");
}

TEST_CASE("T=0: case-2 commands answer their data directly") {
    auto card = make_t0_card();
    select_purse(*card);
    const Rsp bal = send(*card, "80 5C 00 02 04");
    CHECK(bal.sw_hex() == "9000");
    CHECK(bal.data_hex() == "00002710");
    const Rsp ef15 = send(*card, "00 B0 95 00 1E");
    CHECK(ef15.sw_hex() == "9000");
    CHECK(ef15.data.size() == 30);
}

TEST_CASE("T=0: a full purchase works through GET RESPONSE (it does not cancel the pending transaction)") {
    auto card = make_t0_card();
    select_purse(*card);
    const CardDateTime w = when("20261126", "135100");
    REQUIRE(send(*card, "80 50 01 02 0B 01 000001F4 001122334455").sw_hex() == "610F");
    const InitPurchaseResponse init = parse_init_purchase(send(*card, "00 C0 00 00 0F"));
    const Bytes mac1 = terminal_purchase_mac1(init, 500, crypto::type_ep_purchase, test_terminal, 3, w);
    const Bytes debit = concat(hex("80 54 01 00 0F 00000003"), w.date, w.time, mac1);  // no Le
    REQUIRE(send(*card, debit).sw_hex() == "6108");
    const Rsp r = send(*card, "00 C0 00 00 08");
    CHECK(r.sw_hex() == "9000");
    CHECK(r.data_hex() == hx(expected_purchase_tac(500, 6, test_terminal, 3, w)) + hx(expected_purchase_mac2(init, 500, 3)));
    CHECK(balance(*card) == test_balance_fen - 500);
}

TEST_CASE("T=0: a full load works through GET RESPONSE") {
    auto card = make_t0_card();
    select_purse(*card);
    const CardDateTime w = when("20261126", "103100");
    REQUIRE(send(*card, "80 50 00 02 0B 01 000003E8 001122334455").sw_hex() == "6110");
    const InitLoadResponse init = parse_init_load(send(*card, "00 C0 00 00 10"));
    const Bytes mac2 = host_load_mac2(init, 1000, test_terminal, w);
    REQUIRE(send(*card, concat(hex("80 52 00 00 0B"), w.date, w.time, mac2)).sw_hex() == "6104");
    const Rsp r = send(*card, "00 C0 00 00 04");
    CHECK(r.sw_hex() == "9000");
    CHECK(r.data_hex() == hx(expected_load_tac(test_balance_fen + 1000, 0, 1000, test_terminal, w)));
}

TEST_CASE("T=1: case-4 commands answer the data directly (no 61xx)") {
    auto card = make_card();
    const Rsp select = send(*card, "00 A4 04 00 08 A000000632010105");
    CHECK(select.sw_hex() == "9000");
    CHECK(select.data.size() == 0x33);
}

TEST_SUITE_END();
