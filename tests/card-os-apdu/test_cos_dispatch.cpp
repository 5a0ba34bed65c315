// Command dispatch, malformed APDUs, SELECT and the purse FCI, READ BINARY / READ RECORD
// (docs/CARD-SPEC.md §1, §3, §6, §8 and card-os-apdu/README.md).
#include "test_cos_support.hpp"

using namespace cos_test;

TEST_SUITE_BEGIN("cos dispatch");

TEST_CASE("unknown CLA (not 00/80/84) answers 6E00") {
    auto card = make_card();
    CHECK(sw(*card, "FF A4 04 00 08 A000000632010105 00") == "6E00");
    CHECK(sw(*card, "90 5C 00 02 04") == "6E00");
    CHECK(sw(*card, "01 B0 95 00 1E") == "6E00");
    CHECK(sw(*card, "A0 84 00 00 04") == "6E00");
}

TEST_CASE("unknown INS answers 6D00") {
    auto card = make_card();
    CHECK(sw(*card, "00 02 00 00") == "6D00");
    CHECK(sw(*card, "80 FF 00 00 00") == "6D00");
    select_purse(*card);
    CHECK(sw(*card, "80 77 00 00 04") == "6D00");
}

TEST_CASE("malformed APDUs get a status word, never a crash") {
    auto card = make_card();
    select_purse(*card);
    // Fewer than 4 bytes.
    CHECK(card->transmit(Bytes{}).size() == 2);
    CHECK(sw(*card, "80") == "6700");
    CHECK(sw(*card, "80 5C") == "6700");
    CHECK(sw(*card, "80 5C 00") == "6700");
    // Lc says more bytes than follow (truncated INITIALIZE) and fewer than follow.
    CHECK(sw(*card, "80 50 01 02 0B 01 00000064") == "6700");
    CHECK(sw(*card, "80 50 01 02 0B 01 00000064 001122334455 0F 00 00") == "6700");
    // Extended-length marker with an impossible layout.
    CHECK(sw(*card, "80 50 01 02 00 00") == "6700");
    CHECK(sw(*card, "80 50 01 02 00 00 0B 01") == "6700");
    // The purse still works afterwards.
    CHECK(balance(*card) == test_balance_fen);
}

TEST_CASE("Lc of each purse command is checked: wrong length answers 6700") {
    auto card = make_card();
    select_purse(*card);
    // INITIALIZE FOR PURCHASE / LOAD with 10 and 12 data bytes instead of 11.
    CHECK(sw(*card, "80 50 01 02 0A 01 00000064 0011223344 0F") == "6700");
    CHECK(sw(*card, "80 50 00 02 0C 01 00000064 001122334455 00 10") == "6700");
    // DEBIT with 14 bytes (needs a pending INIT to get past the order check, so start one).
    send(*card, init_purchase_apdu(100));
    CHECK(sw(*card, "80 54 01 00 0E 00000001 20261126 130000 112233 08") == "6700");
    // CREDIT with 10 bytes.
    send(*card, init_load_apdu(100));
    CHECK(sw(*card, "80 52 00 00 0A 20261126 130000 112233 04") == "6700");
    // VERIFY with Lc 1 and 7.
    CHECK(sw(*card, "00 20 00 00 01 12") == "6700");
    CHECK(sw(*card, "00 20 00 00 07 12345612345612") == "6700");
    CHECK(balance(*card) == test_balance_fen);
}

TEST_CASE("SELECT the purse ADF by AID answers the purse FCI (6F 84 A5 {9F08, 9F0C = EF15})") {
    auto card = make_card();
    const Rsp fci = send(*card, select_purse_apdu);
    REQUIRE(fci.sw_hex() == "9000");
    // EF15 through READ BINARY, to compare with the FCI's copy.
    const Rsp ef15 = send(*card, "00 B0 95 00 1E");
    REQUIRE(ef15.sw_hex() == "9000");
    REQUIRE(ef15.data.size() == 30);
    const std::uint8_t app_version = ef15.data[cos::ef15::app_version];
    // A5 = 9F08 01 ver (4) + 9F0C 1E EF15 (33) = 37 = 0x25; 6F = 84 08 AID (10) + A5 25 … (39) = 49 = 0x31.
    const std::string expected =
        "6F31"
        "8408A000000632010105"
        "A525"
        "9F0801" +
        hx(Bytes{app_version}) + "9F0C1E" + ef15.data_hex();
    CHECK(fci.data_hex() == expected);
}

TEST_CASE("EF15 holds issuer id, ASN and the app data as docs/CARD-SPEC.md §6 lays them out") {
    auto card = make_card();
    select_purse(*card);
    const Rsp ef15 = send(*card, "00 B0 95 00 1E");
    REQUIRE(ef15.sw_hex() == "9000");
    REQUIRE(ef15.data.size() == 30);
    CHECK(hx(ByteView(ef15.data).subspan(cos::ef15::issuer_id, 8)) == test_issuer_id);
    CHECK(hx(ByteView(ef15.data).subspan(cos::ef15::asn, 10)) == test_asn);
    CHECK(card->snapshot().asn == test_asn);
}

TEST_CASE("EF16 cardholder: name (20, GBK) at offset 2, id number (32) at offset 22") {
    json profile = card_profile();
    profile["cardholder"]["name"] = "\u5F20\u4E09";  // 张三: GBK D5C5 C8FD
    auto card = make_card(profile);
    select_purse(*card);
    const Rsp ef16 = send(*card, "00 B0 96 00 37");
    REQUIRE(ef16.sw_hex() == "9000");
    REQUIRE(ef16.data.size() == 55);
    CHECK(hx(ByteView(ef16.data).subspan(2, 4)) == "D5C5C8FD");
    CHECK(hx(ByteView(ef16.data).subspan(22, 18)) ==
          hx(Bytes{'4', '6', '0', '1', '0', '0', '1', '9', '9', '0', '0', '1', '0', '1', '1', '2', '3', '4'}));
    // SSSE EF06 tag 09 holds the same GBK name.
    select_ssse(*card);
    const Rsp name = send(*card, "00 B2 09 30 00");
    REQUIRE(name.sw_hex() == "9000");
    CHECK(hx(ByteView(name.data).subspan(0, 6)) == "091ED5C5C8FD");
}

TEST_CASE("SELECT answers the SSSE application, the PSE and FIDs") {
    auto card = make_card();
    CHECK(sw(*card, select_ssse_apdu) == "9000");
    CHECK(sw(*card, "00 A4 04 00 0E 315041592E5359532E4444463031 00") == "9000");  // 1PAY.SYS.DDF01
    CHECK(sw(*card, "00 A4 00 00 02 3F00") == "9000");                             // MF by FID
    CHECK(sw(*card, "00 A4 00 00 02 3F00 00") == "9000");
    CHECK(sw(*card, select_purse_apdu) == "9000");
    CHECK(sw(*card, "00 A4 04 00 08 A000000632010105") == "9000");  // case 3 form
}

TEST_CASE("SELECT by FID: the purse ADF 1001 under the MF, then an EF and READ BINARY of the current EF") {
    auto card = make_card();
    CHECK(sw(*card, "00 A4 00 00 02 3F00") == "9000");
    CHECK(sw(*card, "00 A4 00 00 02 1001") == "9000");
    CHECK(balance(*card) == test_balance_fen);
    const Rsp by_sfi = send(*card, "00 B0 95 00 1E");
    CHECK(sw(*card, "00 A4 00 00 02 0015") == "9000");
    const Rsp current = send(*card, "00 B0 00 00 1E");
    CHECK(current.sw_hex() == "9000");
    CHECK(current.data_hex() == by_sfi.data_hex());
}

TEST_CASE("SELECT with P1 not 00/04 answers 6A86") {
    auto card = make_card();
    CHECK(sw(*card, "00 A4 01 00 08 A000000632010105 00") == "6A86");
    CHECK(sw(*card, "00 A4 02 00 02 3F00") == "6A86");
    CHECK(sw(*card, "00 A4 08 00 02 3F00") == "6A86");
}

TEST_CASE("SELECT of an unknown AID or FID answers 6A82") {
    auto card = make_card();
    CHECK(sw(*card, "00 A4 04 00 08 A000000632010199 00") == "6A82");
    CHECK(sw(*card, "00 A4 04 00 05 A000000003 00") == "6A82");
    CHECK(sw(*card, "00 A4 00 00 02 7F7F") == "6A82");
}

TEST_CASE("purse commands when the purse ADF is not selected answer 6985") {
    auto card = make_card();
    // After power-on nothing (or the MF) is selected.
    CHECK(sw(*card, "80 5C 00 02 04") == "6985");
    CHECK(sw(*card, hx(init_purchase_apdu(100))) == "6985");
    CHECK(sw(*card, hx(init_load_apdu(100))) == "6985");
    CHECK(sw(*card, "80 5A 00 06 02 0000 08") == "6985");
    select_ssse(*card);
    CHECK(sw(*card, "80 5C 00 02 04") == "6985");
    CHECK(sw(*card, hx(init_purchase_apdu(100, test_terminal, true))) == "6985");
    select_purse(*card);
    CHECK(sw(*card, "80 5C 00 02 04") == "9000");
    card->power_off();
    CHECK(sw(*card, "80 5C 00 02 04") == "6985");  // selection is volatile
}

TEST_CASE("READ BINARY by SFI returns the transparent EF, honouring offset and Le") {
    auto card = make_card();
    select_purse(*card);
    const Rsp whole = send(*card, "00 B0 95 00 1E");
    REQUIRE(whole.sw_hex() == "9000");
    const Rsp part = send(*card, "00 B0 95 0A 0A");
    CHECK(part.sw_hex() == "9000");
    CHECK(part.data_hex() == hx(ByteView(whole.data).subspan(10, 10)));
    const Rsp ef16 = send(*card, "00 B0 96 00 37");
    CHECK(ef16.sw_hex() == "9000");
    CHECK(ef16.data.size() == cos::cardholder_size);
    const Rsp ef17 = send(*card, "00 B0 97 00 3C");
    CHECK(ef17.sw_hex() == "9000");
    CHECK(ef17.data.size() == cos::management_size);
}

TEST_CASE("READ BINARY with Le 00 returns the whole rest of the file") {
    auto card = make_card();
    select_purse(*card);
    const Rsp r = send(*card, "00 B0 95 00 00");
    CHECK(r.sw_hex() == "9000");
    CHECK(r.data.size() == cos::public_data_size);
    const Rsp tail = send(*card, "00 B0 95 1A 00");
    CHECK(tail.sw_hex() == "9000");
    CHECK(tail.data.size() == 4);
}

TEST_CASE("READ BINARY at offset >= size answers 6B00") {
    auto card = make_card();
    select_purse(*card);
    CHECK(sw(*card, "00 B0 95 1E 01") == "6B00");
    CHECK(sw(*card, "00 B0 95 FF 01") == "6B00");
}

TEST_CASE("READ BINARY with Le beyond the end answers 6C(remaining)") {
    auto card = make_card();
    select_purse(*card);
    CHECK(sw(*card, "00 B0 95 00 1F") == "6C1E");
    CHECK(sw(*card, "00 B0 95 14 0B") == "6C0A");
    CHECK(sw(*card, "00 B0 95 1D 02") == "6C01");
}

TEST_CASE("READ BINARY of a record EF answers 6981") {
    auto card = make_card();
    select_purse(*card);
    CHECK(sw(*card, "00 B0 98 00 17") == "6981");  // EF18 cyclic log
    CHECK(sw(*card, "00 B0 9A 00 30") == "6981");  // EF1A records
}

TEST_CASE("READ BINARY of an unknown SFI answers 6A82") {
    auto card = make_card();
    select_purse(*card);
    CHECK(sw(*card, "00 B0 9F 00 04") == "6A82");
    CHECK(sw(*card, "00 B0 81 00 04") == "6A82");
}

TEST_CASE("READ RECORD of an absent record answers 6A83") {
    auto card = make_card();
    select_purse(*card);
    CHECK(sw(*card, "00 B2 01 C4 17") == "6A83");  // fresh card: empty purse log
    CHECK(sw(*card, "00 B2 0B C4 17") == "6A83");  // beyond 10 records
    do_purchase(*card, 100);
    CHECK(sw(*card, "00 B2 01 C4 17") == "9000");
    CHECK(sw(*card, "00 B2 02 C4 17") == "6A83");
}

TEST_CASE("READ RECORD with Le not the record size (and not 00) answers 6C(size)") {
    auto card = make_card();
    select_purse(*card);
    do_purchase(*card, 100);
    CHECK(sw(*card, "00 B2 01 C4 10") == "6C17");
    CHECK(sw(*card, "00 B2 01 C4 18") == "6C17");
    const Rsp le0 = send(*card, "00 B2 01 C4 00");
    CHECK(le0.sw_hex() == "9000");
    CHECK(le0.data.size() == cos::purse_log_record_size);
}

TEST_CASE("READ RECORD of a transparent EF answers 6981, of an unknown SFI 6A82") {
    auto card = make_card();
    select_purse(*card);
    CHECK(sw(*card, "00 B2 01 AC 1E") == "6981");  // EF15 (SFI 15 << 3 | 4 = AC)
    CHECK(sw(*card, "00 B2 01 FC 17") == "6A82");  // SFI 1F
}

TEST_SUITE_END();
