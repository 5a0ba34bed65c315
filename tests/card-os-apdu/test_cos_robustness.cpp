// Robustness: a sweep of every CLA/INS with odd bodies through every application answers only docs/CARD-SPEC.md §3
// status words, never data with an error, never a crash, and moves no money (malformed APDUs —
// truncated, Lc mismatch, Le oddities — get 6700/6A86/…, never a crash).
#include "test_cos_support.hpp"

#include <functional>
#include <set>

using namespace cos_test;

TEST_SUITE_BEGIN("cos robustness");

namespace {

// docs/CARD-SPEC.md §3, plus the parameterised words 61xx (T=0), 6Cxx and 63Cx.
bool spec_status_word(std::uint16_t sw) {
    static const std::set<std::uint16_t> fixed{0x9000, 0x6283, 0x6988, 0x6581, 0x6700, 0x6981, 0x6982, 0x6983, 0x6984,
                                               0x6985, 0x6986, 0x6A80, 0x6A81, 0x6A82, 0x6A83, 0x6A86, 0x6A88, 0x6B00,
                                               0x6D00, 0x6E00, 0x9302, 0x9303, 0x9401, 0x9403, 0x9406};
    const std::uint16_t high = sw & 0xFF00;
    return fixed.contains(sw) || high == 0x6100 || high == 0x6C00 || (sw & 0xFFF0) == 0x63C0;
}

// Bodies after CLA INS P1 P2: none, Le only, Lc+data of several lengths, Lc+data+Le, Lc mismatches,
// extended forms.
std::vector<Bytes> odd_bodies() {
    std::vector<Bytes> bodies = {
        {},
        hex("00"),
        hex("04"),
        hex("FF"),
        hex("01 00"),
        hex("02 1234"),
        hex("02 1234 00"),
        hex("08 0102030405060708"),
        hex("08 0102030405060708 08"),
        hex("0B 01 00000064 001122334455"),
        hex("0B 01 00000064 001122334455 0F"),
        hex("0B 01 00000064"),       // Lc says 11, 5 follow
        hex("03 010203 04 05"),      // Lc says 3, 5 follow
        hex("00 00 04"),             // extended Le
        hex("00 00 00"),             // extended Le 65536
        hex("00 00 02 1234"),        // extended Lc
        hex("00 00 02 1234 00 08"),  // extended Lc + Le
        hex("00 FF FF 01"),          // extended Lc far beyond the data
        hex("00 00"),                // impossible extended form
    };
    Bytes long_data(0xFF, 0xA5);
    bodies.push_back(concat(Bytes{0xFF}, long_data));
    bodies.push_back(concat(Bytes{0xFF}, long_data, Bytes{0x00}));
    Bytes record(48, 0x01);
    bodies.push_back(concat(Bytes{0x30}, record));
    return bodies;
}

// Sends every CLA (00, 80, 84 and two unknown ones) × INS × a few P1/P2 × odd bodies; returns the first
// violation, if any.
std::string sweep(VirtualCard& card, const std::function<void()>& reselect) {
    const std::vector<Bytes> bodies = odd_bodies();
    const std::uint8_t p1p2[][2] = {{0x00, 0x00}, {0x01, 0x02}, {0x03, 0x02}, {0x95, 0x00}, {0x01, 0xC4}, {0xFF, 0xFF}};
    for (std::uint8_t cla : {0x00, 0x80, 0x84, 0x90, 0xFF}) {
        for (int ins = 0; ins < 256; ++ins) {
            for (const auto& p : p1p2) {
                for (const Bytes& body : bodies) {
                    reselect();
                    const Bytes command = concat(Bytes{cla, static_cast<std::uint8_t>(ins), p[0], p[1]}, body);
                    Bytes raw;
                    try {
                        raw = card.transmit(command);
                    } catch (const std::exception& e) {
                        return to_hex(command) + " threw " + e.what();
                    }
                    if (raw.size() < 2) return to_hex(command) + " answered no SW: " + to_hex(raw);
                    const auto sw = static_cast<std::uint16_t>((raw[raw.size() - 2] << 8) | raw.back());
                    if (!spec_status_word(sw)) return to_hex(command) + " answered non-§3 SW: " + to_hex(raw);
                    // Data comes only with 9000, or with 61xx on T=0 (GET RESPONSE of part of the data).
                    if (sw != 0x9000 && (sw & 0xFF00) != 0x6100 && raw.size() > 2)
                        return to_hex(command) + " answered data with an error SW: " + to_hex(raw);
                }
            }
        }
    }
    return {};
}

}  // namespace

TEST_CASE("every CLA × INS × odd body in the purse answers a §3 status word and moves no money") {
    auto card = make_card();
    const std::string violation = sweep(*card, [&] { send(*card, select_purse_apdu); });
    CHECK_MESSAGE(violation.empty(), violation);
    const auto snap = card->snapshot();
    CHECK(snap.balance_fen == test_balance_fen);
    CHECK(snap.online_atc == 0);
    CHECK(snap.offline_atc == 0);
}

TEST_CASE("every CLA × INS × odd body in SSSE answers a §3 status word") {
    auto card = make_card();
    const std::string violation = sweep(*card, [&] { send(*card, select_ssse_apdu); });
    CHECK_MESSAGE(violation.empty(), violation);
    CHECK(card->snapshot().balance_fen == test_balance_fen);
}

TEST_CASE("every CLA × INS × odd body with nothing selected answers a §3 status word") {
    auto card = make_card();
    const std::string violation = sweep(*card, [&] { card->power_off(); });
    CHECK_MESSAGE(violation.empty(), violation);
}

TEST_CASE("every CLA × INS × odd body on a T=0 card answers a §3 status word") {
    json profile = card_profile();
    profile["protocol"] = "T=0";
    auto card = make_card(profile);
    const std::string violation = sweep(*card, [&] { send(*card, "00 A4 04 00 08 A000000632010105"); });
    CHECK_MESSAGE(violation.empty(), violation);
    CHECK(card->snapshot().balance_fen == test_balance_fen);
}

TEST_CASE("every CLA × INS × odd body on a PSAM answers a §3 status word") {
    auto psam = make_card(psam_profile("0123456789ABCDEFFEDCBA9876543210"));
    const std::string violation = sweep(*psam, [&] { send(*psam, select_psam_apdu); });
    CHECK_MESSAGE(violation.empty(), violation);
}

TEST_CASE("a card does not answer the PSAM DF, a PSAM does not answer the purse (6A82)") {
    auto card = make_card();
    CHECK(sw(*card, select_psam_apdu) == "6A82");
    auto psam = make_card(psam_profile("0123456789ABCDEFFEDCBA9876543210"));
    CHECK(sw(*psam, select_purse_apdu) == "6A82");
    CHECK(sw(*psam, select_ssse_apdu) == "6A82");
}

TEST_CASE("80 DC after the DEBIT completed answers 6985 (the CAPP transaction is over)") {
    auto card = make_card();
    select_purse(*card);
    parse_init_purchase(send(*card, init_purchase_apdu(10, test_terminal, true)));
    const Bytes record = bus_record(cos::bus_record::state_entered, 1, 1, 10);
    REQUIRE(send(*card, update_capp_apdu(0x01, 0xD0, record)).sw_hex() == "9000");
    // Finish with a correct DEBIT, then try to change the record afterwards.
    const CardDateTime w = when("20261126", "130000");
    const Rsp init_again = send(*card, init_purchase_apdu(10, test_terminal, true));  // restart: the cache is gone
    const InitPurchaseResponse init = parse_init_purchase(init_again);
    REQUIRE(send(*card, update_capp_apdu(0x01, 0xD0, record)).sw_hex() == "9000");
    const Bytes mac1 = terminal_purchase_mac1(init, 10, crypto::type_capp_purchase, test_terminal, 1, w);
    REQUIRE(send(*card, debit_apdu(1, w, mac1)).sw_hex() == "9000");
    CHECK(send(*card, update_capp_apdu(0x01, 0xD0, bus_record(0, 2, 2, 0))).sw_hex() == "6985");
    CHECK(send(*card, "00 B2 01 D4 30").data_hex() == hx(record));
}

TEST_SUITE_END();
