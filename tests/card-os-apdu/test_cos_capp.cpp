// The composite (CAPP) purchase: INITIALIZE FOR CAPP PURCHASE, UPDATE CAPP DATA CACHE (80 DC) into EF1A
// and EF1E, DEBIT committing the cache atomically (docs/CARD-SPEC.md §2, §5, §6 and card-os-apdu/README.md).
#include "test_cos_support.hpp"

using namespace cos_test;

TEST_SUITE_BEGIN("cos capp");

namespace {
constexpr std::uint8_t p2_ef1a = 0x1A << 3;  // D0
constexpr std::uint8_t p2_ef1e = 0x1E << 3;  // F0

struct CappDone {
    InitPurchaseResponse init;
    Rsp debit;
};
// INITIALIZE FOR CAPP PURCHASE → 80 DC EF1A (and EF1E when given) → DEBIT with a MAC1 for type 09.
CappDone capp_purchase(VirtualCard& card, std::uint32_t amount, ByteView record, ByteView trip = {}, std::uint32_t serial = 1,
                       const CardDateTime& w = when("20261126", "130000"), bool corrupt_mac1 = false) {
    CappDone done;
    done.init = parse_init_purchase(send(card, init_purchase_apdu(amount, test_terminal, true)));
    REQUIRE(send(card, update_capp_apdu(0x01, p2_ef1a, record)).sw_hex() == "9000");
    if (!trip.empty()) REQUIRE(send(card, update_capp_apdu(0x00, p2_ef1e, trip)).sw_hex() == "9000");
    Bytes mac1 = terminal_purchase_mac1(done.init, amount, crypto::type_capp_purchase, test_terminal, serial, w);
    if (corrupt_mac1) mac1[1] ^= 0x10;
    done.debit = send(card, debit_apdu(serial, w, mac1));
    return done;
}
}  // namespace

TEST_CASE("a CAPP purchase writes the EF1A bus record and answers TAC ‖ MAC2 for type 09") {
    auto card = make_card();
    select_purse(*card);
    const CardDateTime w = when("20261126", "130000");
    const Bytes record = bus_record(cos::bus_record::state_entered, 12, 3, 200);
    const CappDone done = capp_purchase(*card, 200, record, {}, 0x00000005, w);
    REQUIRE(done.debit.sw_hex() == "9000");
    REQUIRE(done.debit.data.size() == 8);
    CHECK(hx(ByteView(done.debit.data).first(4)) == hx(expected_purchase_tac(200, crypto::type_capp_purchase, test_terminal, 5, w)));
    CHECK(hx(ByteView(done.debit.data).last(4)) == hx(expected_purchase_mac2(done.init, 200, 5)));
    CHECK(balance(*card) == test_balance_fen - 200);
    CHECK(card->snapshot().offline_atc == 1);
    const Rsp rec = send(*card, "00 B2 01 D4 30");
    CHECK(rec.sw_hex() == "9000");
    CHECK(rec.data_hex() == hx(record));
    CHECK(send(*card, "00 B2 01 C4 17").data_hex() == log_record(1, 200, 0x09, test_terminal, w));
}

TEST_CASE("80 DC with P1 00 and P2 F0 appends to the EF1E cyclic trip log (record 1 = newest)") {
    auto card = make_card();
    select_purse(*card);
    const Bytes trip1 = bus_record(cos::bus_record::state_entered, 12, 3, 0);
    const Bytes trip2 = bus_record(cos::bus_record::state_closed, 12, 9, 300);
    REQUIRE(capp_purchase(*card, 0 + 1, trip1, trip1).debit.sw_hex() == "9000");
    REQUIRE(capp_purchase(*card, 300, trip2, trip2, 2).debit.sw_hex() == "9000");
    CHECK(send(*card, "00 B2 01 F4 30").data_hex() == hx(trip2));
    CHECK(send(*card, "00 B2 02 F4 30").data_hex() == hx(trip1));
    CHECK(send(*card, "00 B2 01 D4 30").data_hex() == hx(trip2));
}

TEST_CASE("the EF1E trip log wraps after its record count") {
    auto card = make_card();
    select_purse(*card);
    const std::size_t count = cos::trip_log_record_count;
    for (std::size_t i = 1; i <= count + 1; ++i) {
        const Bytes trip = bus_record(cos::bus_record::state_closed, 1, static_cast<std::uint16_t>(i), 1);
        REQUIRE(capp_purchase(*card, 1, trip, trip, static_cast<std::uint32_t>(i)).debit.sw_hex() == "9000");
    }
    // Record 1 = trip count+1, record `count` = trip 2; trip 1 is gone.
    CHECK(send(*card, "00 B2 01 F4 30").data_hex() ==
          hx(bus_record(cos::bus_record::state_closed, 1, static_cast<std::uint16_t>(count + 1), 1)));
    CHECK(send(*card, Bytes{0x00, 0xB2, static_cast<std::uint8_t>(count), 0xF4, 0x30}).data_hex() ==
          hx(bus_record(cos::bus_record::state_closed, 1, 2, 1)));
    CHECK(send(*card, Bytes{0x00, 0xB2, static_cast<std::uint8_t>(count + 1), 0xF4, 0x30}).sw_hex() == "6A83");
}

TEST_CASE("the CAPP cache is committed only by a successful DEBIT: wrong MAC1 leaves EF1A unchanged") {
    auto card = make_card();
    const PurseState before = observe(*card);
    const Bytes record = bus_record(cos::bus_record::state_entered, 12, 3, 200);
    const CappDone done = capp_purchase(*card, 200, record, record, 1, when("20261126", "130000"), /*corrupt_mac1=*/true);
    CHECK(done.debit.sw_hex() == "9302");
    CHECK(observe(*card) == before);
}

TEST_CASE("an abandoned CAPP purchase after 80 DC changes nothing") {
    auto card = make_card();
    const PurseState before = observe(*card);
    parse_init_purchase(send(*card, init_purchase_apdu(200, test_terminal, true)));
    const Bytes record = bus_record(cos::bus_record::state_entered, 12, 3, 200);
    REQUIRE(send(*card, update_capp_apdu(0x01, p2_ef1a, record)).sw_hex() == "9000");
    REQUIRE(send(*card, update_capp_apdu(0x00, p2_ef1e, record)).sw_hex() == "9000");
    CHECK(observe(*card) == before);  // observing cancels the pending purchase and its cache
    // A later DEBIT cannot commit the old cache.
    CHECK(send(*card, debit_apdu(1, when("20261126", "130000"), hex("00000000"))).sw_hex() == "6985");
    CHECK(observe(*card) == before);
}

TEST_CASE("a new INITIALIZE discards the cache of an abandoned CAPP purchase") {
    auto card = make_card();
    select_purse(*card);
    const Rsp ef1a_before = send(*card, "00 B2 01 D4 30");
    parse_init_purchase(send(*card, init_purchase_apdu(200, test_terminal, true)));
    REQUIRE(send(*card, update_capp_apdu(0x01, p2_ef1a, bus_record(1, 99, 99, 200))).sw_hex() == "9000");
    // A plain EP purchase follows and completes: it must not carry the abandoned record.
    do_purchase(*card, 50);
    const Rsp ef1a_after = send(*card, "00 B2 01 D4 30");
    CHECK(ef1a_after.sw_hex() == ef1a_before.sw_hex());
    CHECK(ef1a_after.data_hex() == ef1a_before.data_hex());
}

TEST_CASE("80 DC outside an INITIALIZE FOR CAPP PURCHASE answers 6985") {
    auto card = make_card();
    select_purse(*card);
    const Bytes record = bus_record(cos::bus_record::state_entered, 12, 3, 200);
    CHECK(send(*card, update_capp_apdu(0x01, p2_ef1a, record)).sw_hex() == "6985");
    parse_init_purchase(send(*card, init_purchase_apdu(200)));  // plain EP purchase, not CAPP
    CHECK(send(*card, update_capp_apdu(0x01, p2_ef1a, record)).sw_hex() == "6985");
    parse_init_load(send(*card, init_load_apdu(200)));
    CHECK(send(*card, update_capp_apdu(0x01, p2_ef1a, record)).sw_hex() == "6985");
}

TEST_CASE("80 DC data of other than 48 bytes answers 6700") {
    auto card = make_card();
    select_purse(*card);
    Bytes record = bus_record(cos::bus_record::state_entered, 12, 3, 200);
    parse_init_purchase(send(*card, init_purchase_apdu(200, test_terminal, true)));
    const Bytes short_record(record.begin(), record.end() - 1);
    CHECK(send(*card, update_capp_apdu(0x01, p2_ef1a, short_record)).sw_hex() == "6700");
    parse_init_purchase(send(*card, init_purchase_apdu(200, test_terminal, true)));
    record.push_back(0);
    CHECK(send(*card, update_capp_apdu(0x01, p2_ef1a, record)).sw_hex() == "6700");
}

TEST_CASE("a CAPP purchase stages at most 4 cache updates") {
    auto card = make_card();
    select_purse(*card);
    parse_init_purchase(send(*card, init_purchase_apdu(200, test_terminal, true)));
    const Bytes record = bus_record(cos::bus_record::state_entered, 12, 3, 200);
    for (int i = 0; i < 4; ++i) REQUIRE(send(*card, update_capp_apdu(0x00, p2_ef1e, record)).sw_hex() == "9000");
    CHECK(send(*card, update_capp_apdu(0x00, p2_ef1e, record)).sw_hex() != "9000");
}

TEST_CASE("80 DC to EF1A whose data[0] is not the record id P1 answers 6A80") {
    auto card = make_card();
    select_purse(*card);
    parse_init_purchase(send(*card, init_purchase_apdu(200, test_terminal, true)));
    const Bytes record = bus_record(cos::bus_record::state_entered, 12, 3, 200);  // record id 01
    CHECK(send(*card, update_capp_apdu(0x02, p2_ef1a, record)).sw_hex() == "6A80");
}

TEST_CASE("the full T-Union sequence: a CAPP purchase after the previous one updates EF1A in place") {
    auto card = make_card();
    select_purse(*card);
    const Bytes entry = bus_record(cos::bus_record::state_entered, 12, 3, 0);
    REQUIRE(capp_purchase(*card, 1, entry).debit.sw_hex() == "9000");
    Bytes exit_record = bus_record(cos::bus_record::state_closed, 12, 9, 300);
    const auto put16 = [&](std::size_t at, std::uint16_t v) {
        exit_record[at] = static_cast<std::uint8_t>(v >> 8);
        exit_record[at + 1] = static_cast<std::uint8_t>(v);
    };
    put16(cos::bus_record::entry_line, 12);
    put16(cos::bus_record::entry_station, 3);
    REQUIRE(capp_purchase(*card, 300, exit_record, {}, 2).debit.sw_hex() == "9000");
    CHECK(send(*card, "00 B2 01 D4 30").data_hex() == hx(exit_record));
    CHECK(balance(*card) == test_balance_fen - 301);
    CHECK(sw(*card, "80 5A 00 09 02 0001 08") == "9000");
}

TEST_CASE("GET TRANSACTION PROVE for a CAPP purchase (type 09) answers MAC2 ‖ TAC") {
    auto card = make_card();
    select_purse(*card);
    const CardDateTime w = when("20261126", "130000");
    const CappDone done = capp_purchase(*card, 200, bus_record(1, 12, 3, 200), {}, 9, w);
    REQUIRE(done.debit.sw_hex() == "9000");
    const Rsp r = send(*card, concat(hex("80 5A 00 09 02"), be_bytes(done.init.offline_atc, 2), hex("08")));
    CHECK(r.sw_hex() == "9000");
    CHECK(r.data_hex() == hx(ByteView(done.debit.data).last(4)) + hx(ByteView(done.debit.data).first(4)));
    CHECK(sw(*card, "80 5A 00 06 02 0000 08") == "9406");  // no EP purchase (type 06) with that ATC
}

TEST_SUITE_END();
