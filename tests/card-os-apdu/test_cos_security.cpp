// Security state: VERIFY (PIN), GET CHALLENGE, EXTERNAL / INTERNAL AUTHENTICATE, and the social-security
// application SSSE (docs/CARD-SPEC.md §2, §7 and card-os-apdu/README.md).
#include "test_cos_support.hpp"

#include <set>

using namespace cos_test;

TEST_SUITE_BEGIN("cos security");

namespace {
constexpr std::string_view verify_right = "00 20 00 00 03 123456";
constexpr std::string_view verify_wrong = "00 20 00 00 03 654321";
}  // namespace

// ---- VERIFY -----------------------------------------------------------------------------------

TEST_CASE("VERIFY with the right PIN (BCD) answers 9000") {
    auto card = make_card();
    select_purse(*card);
    CHECK(sw(*card, verify_right) == "9000");
    select_ssse(*card);
    CHECK(sw(*card, verify_right) == "9000");
    CHECK(card->snapshot().pin_tries_left == 3);
}

TEST_CASE("VERIFY of a 4-digit PIN is 2 BCD bytes") {
    json profile = card_profile();
    profile["pin"] = "2580";
    auto card = make_card(profile);
    select_ssse(*card);
    CHECK(sw(*card, "00 20 00 00 02 2580") == "9000");
    CHECK(sw(*card, "00 20 00 00 02 2581") == "63C2");
}

TEST_CASE("VERIFY wrong PIN answers 63Cx with x tries left, then 6983 even for the right PIN") {
    auto card = make_card();
    select_ssse(*card);
    CHECK(sw(*card, verify_wrong) == "63C2");
    CHECK(card->snapshot().pin_tries_left == 2);
    CHECK(sw(*card, verify_wrong) == "63C1");
    CHECK(sw(*card, verify_wrong) == "63C0");
    CHECK(card->snapshot().pin_tries_left == 0);
    CHECK(sw(*card, verify_right) == "6983");
    CHECK(sw(*card, verify_wrong) == "6983");
}

TEST_CASE("the PIN try counter is non-volatile") {
    auto card = make_card();
    select_ssse(*card);
    CHECK(sw(*card, verify_wrong) == "63C2");
    card->power_off();
    select_ssse(*card);
    CHECK(sw(*card, verify_wrong) == "63C1");
    card->reset();
    select_ssse(*card);
    CHECK(sw(*card, verify_wrong) == "63C0");
    card->power_off();
    select_ssse(*card);
    CHECK(sw(*card, verify_right) == "6983");
}

TEST_CASE("the right PIN restores the try counter") {
    auto card = make_card();
    select_ssse(*card);
    CHECK(sw(*card, verify_wrong) == "63C2");
    CHECK(sw(*card, verify_right) == "9000");
    CHECK(card->snapshot().pin_tries_left == 3);
    CHECK(sw(*card, verify_wrong) == "63C2");
}

TEST_CASE("VERIFY with Lc outside 2..6 answers 6700 and does not count a try") {
    auto card = make_card();
    select_ssse(*card);
    CHECK(sw(*card, "00 20 00 00 01 12") == "6700");
    CHECK(sw(*card, "00 20 00 00 07 12345600000000") == "6700");
    CHECK(sw(*card, "00 20 00 00") == "6700");
    CHECK(card->snapshot().pin_tries_left == 3);
}

// ---- GET CHALLENGE ----------------------------------------------------------------------------

TEST_CASE("GET CHALLENGE answers 4 or 8 random bytes") {
    auto card = make_card();
    const Rsp four = send(*card, "00 84 00 00 04");
    CHECK(four.sw_hex() == "9000");
    CHECK(four.data.size() == 4);
    const Rsp eight = send(*card, "00 84 00 00 08");
    CHECK(eight.sw_hex() == "9000");
    CHECK(eight.data.size() == 8);
    const Rsp again = send(*card, "00 84 00 00 08");
    CHECK(again.data_hex() != eight.data_hex());
}

TEST_CASE("GET CHALLENGE with Le other than 4 or 8 answers 6700") {
    auto card = make_card();
    CHECK(sw(*card, "00 84 00 00 05") == "6700");
    CHECK(sw(*card, "00 84 00 00 10") == "6700");
    CHECK(sw(*card, "00 84 00 00 00") == "6700");  // Le 00 = 256
    CHECK(sw(*card, "00 84 00 00") == "6700");     // no Le
}

TEST_CASE("a seeded card replays the same random numbers") {
    auto a = make_card();
    auto b = make_card();
    CHECK(send(*a, "00 84 00 00 08").data_hex() == send(*b, "00 84 00 00 08").data_hex());
    select_purse(*a);
    select_purse(*b);
    CHECK(parse_init_purchase(send(*a, init_purchase_apdu(1))).random == parse_init_purchase(send(*b, init_purchase_apdu(1))).random);
    json other = card_profile();
    other["seed"] = "FFEEDDCCBBAA99887766554433221100";
    auto c = make_card(other);
    CHECK(send(*c, "00 84 00 00 08").data_hex() != send(*make_card(), "00 84 00 00 08").data_hex());
}

TEST_CASE("the card's random numbers never repeat across power off and reopen of its image") {
    const auto dir = std::filesystem::temp_directory_path() / ("coconut-cos-random-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    const auto path = dir / "card.img";
    REQUIRE(cos::create_image(path, card_profile()).ok());
    std::set<std::string> seen;
    for (int session = 0; session < 4; ++session) {
        auto card = VirtualCard::open(path);
        REQUIRE(card.ok());
        for (int power = 0; power < 2; ++power) {
            (*card)->power_off();
            select_purse(**card);
            const std::string challenge = send(**card, "00 84 00 00 08").data_hex();
            const std::string random = hx(parse_init_purchase(send(**card, init_purchase_apdu(1))).random);
            CHECK_MESSAGE(seen.insert(challenge).second, "challenge repeated: " << challenge);
            CHECK_MESSAGE(seen.insert(random).second, "INITIALIZE random repeated: " << random);
        }
        // Closed without any transaction: nothing but the DRBG may have been committed.
    }
    std::filesystem::remove_all(dir);
}

// ---- EXTERNAL AUTHENTICATE ---------------------------------------------------------------------

namespace {
Bytes external_cryptogram(ByteView challenge, std::string_view key = test_damk) {
    Bytes block(challenge.begin(), challenge.end());
    block.resize(8, 0x00);
    return crypto::tdes_ecb_encrypt(key16(key), block);
}
Rsp challenge(VirtualCard& card, std::string_view le = "04") {
    const Rsp r = send(card, "00 84 00 00 " + std::string(le));
    REQUIRE(r.sw_hex() == "9000");
    return r;
}
}  // namespace

TEST_CASE("EXTERNAL AUTHENTICATE with 3DES(DAMK, challenge ‖ 00…) answers 9000") {
    auto card = make_card();
    select_purse(*card);
    const Rsp c4 = challenge(*card, "04");
    CHECK(send(*card, concat(hex("00 82 00 01 08"), external_cryptogram(c4.data))).sw_hex() == "9000");
    const Rsp c8 = challenge(*card, "08");
    CHECK(send(*card, concat(hex("00 82 00 01 08"), external_cryptogram(c8.data))).sw_hex() == "9000");
}

TEST_CASE("EXTERNAL AUTHENTICATE without a challenge answers 6984") {
    auto card = make_card();
    select_purse(*card);
    CHECK(sw(*card, "00 82 00 01 08 0102030405060708") == "6984");
    // A challenge is volatile: power off forgets it.
    const Rsp c = challenge(*card);
    card->power_off();
    select_purse(*card);
    CHECK(send(*card, concat(hex("00 82 00 01 08"), external_cryptogram(c.data))).sw_hex() == "6984");
}

TEST_CASE("EXTERNAL AUTHENTICATE with key id other than 01 answers 6A88") {
    auto card = make_card();
    select_purse(*card);
    const Rsp c = challenge(*card);
    CHECK(send(*card, concat(hex("00 82 00 02 08"), external_cryptogram(c.data))).sw_hex() == "6A88");
}

TEST_CASE("EXTERNAL AUTHENTICATE wrong cryptogram answers 63Cx (3 tries), then 6983") {
    auto card = make_card();
    select_purse(*card);
    for (const std::string expected : {"63C2", "63C1", "63C0"}) {
        const Rsp c = challenge(*card);
        CHECK(send(*card, concat(hex("00 82 00 01 08"), external_cryptogram(c.data, test_dpk))).sw_hex() == expected);
    }
    const Rsp c = challenge(*card);
    CHECK(send(*card, concat(hex("00 82 00 01 08"), external_cryptogram(c.data))).sw_hex() == "6983");
}

TEST_CASE("a challenge is used once: replaying an EXTERNAL AUTHENTICATE answers 6984") {
    auto card = make_card();
    select_purse(*card);
    const Rsp c = challenge(*card);
    const Bytes apdu = concat(hex("00 82 00 01 08"), external_cryptogram(c.data));
    CHECK(send(*card, apdu).sw_hex() == "9000");
    CHECK(send(*card, apdu).sw_hex() == "6984");
}

TEST_CASE("a new GET CHALLENGE replaces the previous challenge") {
    auto card = make_card();
    select_purse(*card);
    const Rsp first = challenge(*card);
    challenge(*card);
    CHECK(send(*card, concat(hex("00 82 00 01 08"), external_cryptogram(first.data))).sw_hex() != "9000");
}

// ---- INTERNAL AUTHENTICATE ---------------------------------------------------------------------

TEST_CASE("INTERNAL AUTHENTICATE in the purse answers 3DES(purse IAK, challenge), no PIN needed") {
    auto card = make_card();
    select_purse(*card);
    const Rsp r = send(*card, "00 88 00 01 08 1122334455667788 08");
    CHECK(r.sw_hex() == "9000");
    CHECK(r.data_hex() == hx(crypto::tdes_ecb_encrypt(key16(test_iak), hex("1122334455667788"))));
    // The case-3 form (as the contract writes it) answers the same.
    const Rsp case3 = send(*card, "00 88 00 01 08 1122334455667788");
    CHECK(case3.sw_hex() == "9000");
    CHECK(case3.data_hex() == r.data_hex());
}

TEST_CASE("INTERNAL AUTHENTICATE inside SSSE requires a verified PIN (6982 otherwise)") {
    auto card = make_card();
    select_ssse(*card);
    CHECK(sw(*card, "00 88 00 01 08 1122334455667788 08") == "6982");
    CHECK(sw(*card, verify_wrong) == "63C2");
    CHECK(sw(*card, "00 88 00 01 08 1122334455667788 08") == "6982");
    CHECK(sw(*card, verify_right) == "9000");
    const Rsp r = send(*card, "00 88 00 01 08 A1B2C3D4E5F60718 08");
    CHECK(r.sw_hex() == "9000");
    CHECK(r.data_hex() == hx(crypto::tdes_ecb_encrypt(key16(test_ssse_iak), hex("A1B2C3D4E5F60718"))));
    // The verified state is volatile.
    card->power_off();
    select_ssse(*card);
    CHECK(sw(*card, "00 88 00 01 08 A1B2C3D4E5F60718 08") == "6982");
}

TEST_CASE("INTERNAL AUTHENTICATE in SSSE and in DF04 answers under the SSSE key, never the purse IAK") {
    const std::string challenge = "0011223344556677";
    const std::string command = "00 88 00 01 08 " + challenge + " 08";
    const std::string purse_answer = hx(crypto::tdes_ecb_encrypt(key16(test_iak), hex(challenge)));
    const std::string ssse_answer = hx(crypto::tdes_ecb_encrypt(key16(test_ssse_iak), hex(challenge)));
    REQUIRE(purse_answer != ssse_answer);

    auto card = make_card();
    select_purse(*card);
    const Rsp purse = send(*card, command);
    REQUIRE(purse.sw_hex() == "9000");
    CHECK(purse.data_hex() == purse_answer);

    select_ssse(*card);
    REQUIRE(sw(*card, verify_right) == "9000");
    const Rsp ssse = send(*card, command);
    REQUIRE(ssse.sw_hex() == "9000");
    CHECK(ssse.data_hex() == ssse_answer);
    CHECK(ssse.data_hex() != purse.data_hex());

    REQUIRE(sw(*card, "00 A4 00 00 02 DF04") == "9000");
    const Rsp medical = send(*card, command);
    REQUIRE(medical.sw_hex() == "9000");
    CHECK(medical.data_hex() == ssse_answer);

    // Back in the purse (PIN still verified), the purse key again: the PIN does not lend the SSSE key.
    select_purse(*card);
    CHECK(send(*card, command).data_hex() == purse_answer);
}

TEST_CASE("INTERNAL AUTHENTICATE in DF04 without VERIFY answers 6982") {
    auto card = make_card();
    select_ssse(*card);
    REQUIRE(sw(*card, "00 A4 00 00 02 DF04") == "9000");
    CHECK(sw(*card, "00 88 00 01 08 0011223344556677 08") == "6982");
}

// ---- SSSE records ------------------------------------------------------------------------------

TEST_CASE("SSSE EF06 records by tag: 00 B2 <tag> (SFI 06 << 3) Le answers tag ‖ len ‖ value") {
    auto card = make_card();
    select_ssse(*card);
    // 08 social-security number (18 chars).
    const Rsp ssn = send(*card, "00 B2 08 30 00");
    CHECK(ssn.sw_hex() == "9000");
    CHECK(ssn.data_hex() == "0812" + hx(Bytes{'4', '6', '0', '1', '0', '0', '1', '9', '9', '0', '0', '1', '0', '1', '1', '2', '3', '4'}));
    // 0D birth date, 4 bytes BCD.
    const Rsp birth = send(*card, "00 B2 0D 30 00");
    CHECK(birth.sw_hex() == "9000");
    CHECK(birth.data_hex() == "0D0419900101");
    // 09 name, 30 bytes: starts with the name.
    const Rsp name = send(*card, "00 B2 09 30 00");
    CHECK(name.sw_hex() == "9000");
    REQUIRE(name.data.size() == 32);
    CHECK(hx(ByteView(name.data).first(2)) == "091E");
    CHECK(hx(ByteView(name.data).subspan(2, 9)) == hx(Bytes{'Z', 'H', 'A', 'N', 'G', ' ', 'S', 'A', 'N'}));
    // 0A sex, 1 byte.
    const Rsp sex = send(*card, "00 B2 0A 30 00");
    CHECK(sex.sw_hex() == "9000");
    REQUIRE(sex.data.size() == 3);
    CHECK(hx(ByteView(sex.data).first(2)) == "0A01");
}

TEST_CASE("SSSE EF05 records by tag: card identifier 16, issue date 4, expiry 4, card number 9") {
    auto card = make_card();
    select_ssse(*card);
    const std::pair<const char*, std::size_t> items[] = {{"01", 16}, {"05", 4}, {"06", 4}, {"07", 9}};
    for (const auto& item : items) {
        const std::string tag = item.first;
        const std::size_t length = item.second;
        const Rsp r = send(*card, "00 B2 " + std::string(tag) + " 28 00");
        CHECK_MESSAGE(r.sw_hex() == "9000", "tag " << tag);
        CHECK_MESSAGE(r.data.size() == 2 + length, "tag " << tag);
        if (r.data.size() >= 2) {
            CHECK(hx(ByteView(r.data).first(1)) == tag);
            CHECK(r.data[1] == length);
        }
    }
}

TEST_CASE("SSSE records after SELECT of the EF: 00 A4 00 00 02 0006, then 00 B2 <tag> 00 Le") {
    auto card = make_card();
    select_ssse(*card);
    CHECK(sw(*card, "00 A4 00 00 02 0006") == "9000");
    const Rsp r = send(*card, "00 B2 0D 00 06");
    CHECK(r.sw_hex() == "9000");
    CHECK(r.data_hex() == "0D0419900101");
    CHECK(sw(*card, "00 A4 00 00 02 0005") == "9000");
    const Rsp id = send(*card, "00 B2 01 00 12");
    CHECK(id.sw_hex() == "9000");
    CHECK(id.data.size() == 18);
}

TEST_CASE("SSSE record with Le not its size answers 6C(size); an absent tag answers 6A83") {
    auto card = make_card();
    select_ssse(*card);
    CHECK(sw(*card, "00 B2 0D 30 05") == "6C06");
    CHECK(sw(*card, "00 B2 08 30 10") == "6C14");
    CHECK(sw(*card, "00 B2 7E 30 00") == "6A83");
    CHECK(sw(*card, "00 B2 08 28 00") == "6A83");  // the SSN is in EF06, not EF05
}

TEST_CASE("SSSE READ RECORD with P2 00 and no current EF answers 6986") {
    auto card = make_card();
    select_ssse(*card);
    CHECK(sw(*card, "00 B2 08 00 00") == "6986");
}

TEST_CASE("DF04 medical link: account number (tag 30, 10 bytes BCD) in EF08, read after VERIFY") {
    auto card = make_card();
    select_ssse(*card);
    REQUIRE(sw(*card, verify_right) == "9000");
    CHECK(sw(*card, "00 A4 00 00 02 DF04") == "9000");
    const Rsp r = send(*card, "00 B2 30 40 00");
    CHECK(r.sw_hex() == "9000");
    CHECK(r.data_hex() == "300A46010000000000012345");
}

TEST_SUITE_END();
