// The PSAM: EF16 terminal id, EF17 key index, INIT SAM FOR PURCHASE (80 70) and VERIFY MAC2 (80 72),
// and the full terminal sequence card + PSAM with diversified keys (docs/CARD-SPEC.md §4, §5, card-os-apdu/README.md).
#include "test_cos_support.hpp"

using namespace cos_test;

TEST_SUITE_BEGIN("cos psam");

namespace {
// Master keys of the issuer's HSM; the card gets Div(Div(master, issuer id), ASN[2..9]), the PSAM holds
// Div(master DPK, issuer id) (issuer level).
constexpr std::string_view master_dpk = "0123456789ABCDEFFEDCBA9876543210";
constexpr std::string_view master_dlk = "00112233445566778899AABBCCDDEEFF";
constexpr std::string_view master_dtk = "F0E1D2C3B4A5968778695A4B3C2D1E0F";
constexpr std::string_view master_iak = "1F2E3D4C5B6A79880123456789ABCDEF";
constexpr std::string_view master_damk = "A5A5A5A55A5A5A5A0F0F0F0FF0F0F0F0";
constexpr std::string_view master_ssse_iak = "C3C3C3C33C3C3C3C1E1E1E1EE1E1E1E1";

crypto::Block issuer_factor() {
    crypto::Block b{};
    const Bytes id = hex(test_issuer_id);
    std::copy(id.begin(), id.end(), b.begin());
    return b;
}
crypto::Block card_factor() { return crypto::card_factor_from_asn(hex(test_asn)); }
std::string card_key(std::string_view master) {
    return hx(crypto::diversify_card_key(key16(master), issuer_factor(), card_factor()).view());
}
std::string issuer_key(std::string_view master) { return hx(crypto::diversify(key16(master), issuer_factor()).view()); }

json diversified_card_profile() {
    json p = card_profile();
    p.erase("keys");
    p["master_keys"] =
        json{{"dpk", std::string(master_dpk)}, {"dlk", std::string(master_dlk)},   {"dtk", std::string(master_dtk)},
             {"iak", std::string(master_iak)}, {"damk", std::string(master_damk)}, {"ssse_iak", std::string(master_ssse_iak)}};
    return p;
}

std::unique_ptr<VirtualCard> make_psam() { return make_card(psam_profile(issuer_key(master_dpk))); }

// 80 70: random(4) ‖ offline ATC(2) ‖ amount(4) ‖ type(1) ‖ date-time(7) ‖ key version(1) ‖ alg(1) ‖ factors.
Bytes init_sam_apdu(ByteView random, std::uint16_t atc, std::uint32_t amount, std::uint8_t type, const CardDateTime& w,
                    std::uint8_t key_version, std::uint8_t alg, ByteView factors) {
    const Bytes data = concat(random, be_bytes(atc, 2), be_bytes(amount, 4), Bytes{type}, w.date, w.time, Bytes{key_version, alg}, factors);
    return concat(Bytes{0x80, 0x70, 0x00, 0x00, static_cast<std::uint8_t>(data.size())}, data, Bytes{0x08});
}
Bytes both_factors() { return concat(card_factor(), issuer_factor()); }
Bytes card_factor_only() {
    const auto f = card_factor();
    return Bytes(f.begin(), f.end());
}

// The PSAM's MAC1 for a card random / ATC, recomputed from the card's diversified DPK.
std::string expected_sam_mac1(ByteView random, std::uint16_t atc, std::uint32_t serial, std::uint32_t amount, std::uint8_t type,
                              const CardDateTime& w) {
    const Key8 sespk = crypto::purchase_session_key(key16(card_key(master_dpk)), random, atc, serial);
    return hx(crypto::des_mac(sespk, crypto::purchase_mac1_input(amount, type, hex(test_psam_terminal), w)));
}
}  // namespace

TEST_CASE("PSAM EF16 holds the terminal id (6 bytes BCD), EF17 the key index and version") {
    auto psam = make_psam();
    select_psam(*psam);
    const Rsp ef16 = send(*psam, "00 B0 96 00 06");
    CHECK(ef16.sw_hex() == "9000");
    CHECK(ef16.data_hex() == test_psam_terminal);
    const Rsp ef17 = send(*psam, "00 B0 97 00 02");
    CHECK(ef17.sw_hex() == "9000");
    CHECK(ef17.data_hex() == "0101");
    CHECK(psam->snapshot().terminal_id == test_psam_terminal);
    CHECK(psam->kind() == cos::ImageKind::psam);
}

TEST_CASE("80 70 with card and issuer factors answers serial ‖ MAC1 from the diversified card DPK") {
    auto psam = make_psam();
    select_psam(*psam);
    const CardDateTime w = when("20261126", "135100");
    const Bytes random = hex("11223344");
    const Rsp r = send(*psam, init_sam_apdu(random, 5, 250, 0x06, w, 1, 0, both_factors()));
    REQUIRE(r.sw_hex() == "9000");
    REQUIRE(r.data.size() == 8);
    CHECK(hx(ByteView(r.data).first(4)) == "00000001");
    CHECK(hx(ByteView(r.data).last(4)) == expected_sam_mac1(random, 5, 1, 250, 0x06, w));
}

TEST_CASE("80 70 with the card factor only (N = 1) works for an issuer-level PSAM") {
    auto psam = make_psam();
    select_psam(*psam);
    const CardDateTime w = when("20261126", "135100");
    const Bytes random = hex("A0B0C0D0");
    const Rsp r = send(*psam, init_sam_apdu(random, 0, 99, 0x09, w, 1, 0, card_factor_only()));
    REQUIRE(r.sw_hex() == "9000");
    REQUIRE(r.data.size() == 8);
    CHECK(hx(ByteView(r.data).last(4)) == expected_sam_mac1(random, 0, 1, 99, 0x09, w));
}

TEST_CASE("the PSAM serial increments on every successful 80 70, not on a failed one") {
    auto psam = make_psam();
    select_psam(*psam);
    const CardDateTime w = when("20261126", "135100");
    CHECK(psam->snapshot().terminal_serial == 1);
    CHECK(hx(ByteView(send(*psam, init_sam_apdu(hex("01020304"), 0, 1, 6, w, 1, 0, both_factors())).data).first(4)) == "00000001");
    CHECK(psam->snapshot().terminal_serial == 2);
    CHECK(sw(*psam, hx(init_sam_apdu(hex("01020304"), 0, 1, 0x05, w, 1, 0, both_factors()))) == "6A80");
    CHECK(psam->snapshot().terminal_serial == 2);
    const Bytes random = hex("05060708");
    const Rsp second = send(*psam, init_sam_apdu(random, 3, 10, 6, w, 1, 0, both_factors()));
    REQUIRE(second.sw_hex() == "9000");
    CHECK(hx(ByteView(second.data).first(4)) == "00000002");
    CHECK(hx(ByteView(second.data).last(4)) == expected_sam_mac1(random, 3, 2, 10, 6, w));
}

TEST_CASE("80 70 with Lc not 20 + 8N (N >= 1) answers 6700") {
    auto psam = make_psam();
    select_psam(*psam);
    const CardDateTime w = when("20261126", "135100");
    CHECK(sw(*psam, hx(init_sam_apdu(hex("01020304"), 0, 1, 6, w, 1, 0, {}))) == "6700");  // N = 0
    const Bytes seven(7, 0x11);
    CHECK(sw(*psam, hx(init_sam_apdu(hex("01020304"), 0, 1, 6, w, 1, 0, seven))) == "6700");
    const Bytes seventeen = concat(both_factors(), Bytes{0x00});
    CHECK(sw(*psam, hx(init_sam_apdu(hex("01020304"), 0, 1, 6, w, 1, 0, seventeen))) == "6700");
    CHECK(psam->snapshot().terminal_serial == 1);
}

TEST_CASE("80 70 with three factors (N = 3) answers 6A88") {
    auto psam = make_psam();
    select_psam(*psam);
    const CardDateTime w = when("20261126", "135100");
    const Bytes three = concat(both_factors(), hex("0102030405060708"));
    CHECK(sw(*psam, hx(init_sam_apdu(hex("01020304"), 0, 1, 6, w, 1, 0, three))) == "6A88");
    CHECK(psam->snapshot().terminal_serial == 1);
}

TEST_CASE("80 70 with a type other than 06/09 answers 6A80") {
    auto psam = make_psam();
    select_psam(*psam);
    const CardDateTime w = when("20261126", "135100");
    for (std::uint8_t type : {0x00, 0x02, 0x05, 0x0A}) {
        CHECK(sw(*psam, hx(init_sam_apdu(hex("01020304"), 0, 1, type, w, 1, 0, both_factors()))) == "6A80");
    }
}

TEST_CASE("80 70 with a key version other than the PSAM's answers 6A88") {
    auto psam = make_psam();
    select_psam(*psam);
    const CardDateTime w = when("20261126", "135100");
    CHECK(sw(*psam, hx(init_sam_apdu(hex("01020304"), 0, 1, 6, w, 2, 0, both_factors()))) == "6A88");
}

TEST_CASE("80 70 with alg id other than 00 answers 9403") {
    auto psam = make_psam();
    select_psam(*psam);
    const CardDateTime w = when("20261126", "135100");
    CHECK(sw(*psam, hx(init_sam_apdu(hex("01020304"), 0, 1, 6, w, 1, 0x04, both_factors()))) == "9403");
}

TEST_CASE("80 70 with an issuer factor not the PSAM's issuer id answers 6A88") {
    auto psam = make_psam();
    select_psam(*psam);
    const CardDateTime w = when("20261126", "135100");
    const Bytes factors = concat(card_factor(), hex("0460000000000002"));
    CHECK(sw(*psam, hx(init_sam_apdu(hex("01020304"), 0, 1, 6, w, 1, 0, factors))) == "6A88");
    CHECK(psam->snapshot().terminal_serial == 1);
}

TEST_CASE("80 72 without a pending 80 70 answers 6985") {
    auto psam = make_psam();
    select_psam(*psam);
    CHECK(sw(*psam, "80 72 00 00 04 01020304") == "6985");
}

TEST_CASE("80 72 with the right MAC2 answers 9000, a wrong one 9302") {
    auto psam = make_psam();
    select_psam(*psam);
    const CardDateTime w = when("20261126", "135100");
    const Bytes random = hex("11223344");
    REQUIRE(sw(*psam, hx(init_sam_apdu(random, 5, 250, 6, w, 1, 0, both_factors()))) == "9000");
    const Key8 sespk = crypto::purchase_session_key(key16(card_key(master_dpk)), random, 5, 1);
    const auto mac2 = crypto::des_mac(sespk, crypto::purchase_mac2_input(250));
    Bytes wrong(mac2.begin(), mac2.end());
    wrong[2] ^= 0x04;
    CHECK(send(*psam, concat(hex("80 72 00 00 04"), wrong)).sw_hex() == "9302");
    REQUIRE(sw(*psam, hx(init_sam_apdu(random, 5, 250, 6, w, 1, 0, both_factors()))) == "9000");
    const Key8 sespk2 = crypto::purchase_session_key(key16(card_key(master_dpk)), random, 5, 2);
    CHECK(send(*psam, concat(hex("80 72 00 00 04"), crypto::des_mac(sespk2, crypto::purchase_mac2_input(250)))).sw_hex() == "9000");
}

TEST_CASE("a card personalized with master_keys uses the two-level diversified keys") {
    auto card = make_card(diversified_card_profile());
    select_purse(*card);
    const CardDateTime w = when("20261126", "103100");
    const InitLoadResponse init = parse_init_load(send(*card, init_load_apdu(500)));
    const Bytes mac2 = host_load_mac2(init, 500, test_terminal, w, card_key(master_dlk));
    const Rsp r = send(*card, credit_apdu(w, mac2));
    REQUIRE(r.sw_hex() == "9000");
    CHECK(r.data_hex() == hx(expected_load_tac(test_balance_fen + 500, 0, 500, test_terminal, w, card_key(master_dtk))));
    // INTERNAL AUTHENTICATE with the diversified IAK.
    const Rsp ia = send(*card, "00 88 00 01 08 0011223344556677 08");
    CHECK(ia.data_hex() == hx(crypto::tdes_ecb_encrypt(key16(card_key(master_iak)), hex("0011223344556677"))));
    // The SSSE application's INTERNAL AUTHENTICATE, after VERIFY, with the key diversified from its own master.
    REQUIRE(send(*card, select_ssse_apdu).sw_hex() == "9000");
    REQUIRE(send(*card, "00 20 00 00 03 123456").sw_hex() == "9000");
    const Rsp ssse = send(*card, "00 88 00 01 08 0011223344556677 08");
    CHECK(ssse.data_hex() == hx(crypto::tdes_ecb_encrypt(key16(card_key(master_ssse_iak)), hex("0011223344556677"))));
}

TEST_CASE("full terminal purchase card + PSAM: SELECT, INIT, 80 70, DEBIT, 80 72; TAC from the card's DTK") {
    auto card = make_card(diversified_card_profile());
    auto psam = make_psam();
    select_psam(*psam);
    select_purse(*card);
    const CardDateTime w = when("20261126", "135100");
    const std::uint32_t amount = 350;
    const InitPurchaseResponse init = parse_init_purchase(send(*card, init_purchase_apdu(amount, test_psam_terminal)));
    const Rsp sam =
        send(*psam, init_sam_apdu(init.random, init.offline_atc, amount, 0x06, w, init.key_version, init.alg_id, both_factors()));
    REQUIRE(sam.sw_hex() == "9000");
    const std::uint32_t serial = read_be32(sam.data);
    const Rsp debit = send(*card, debit_apdu(serial, w, ByteView(sam.data).last(4)));
    REQUIRE(debit.sw_hex() == "9000");
    CHECK(send(*psam, concat(hex("80 72 00 00 04"), ByteView(debit.data).last(4))).sw_hex() == "9000");
    CHECK(hx(ByteView(debit.data).first(4)) ==
          hx(expected_purchase_tac(amount, 0x06, test_psam_terminal, serial, w, card_key(master_dtk))));
    CHECK(balance(*card) == test_balance_fen - amount);
}

TEST_CASE("full CAPP purchase card + PSAM: INIT CAPP, 80 70 (type 09), 80 DC, DEBIT, 80 72") {
    auto card = make_card(diversified_card_profile());
    auto psam = make_psam();
    select_psam(*psam);
    select_purse(*card);
    const CardDateTime w = when("20261126", "135100");
    const std::uint32_t amount = 200;
    const InitPurchaseResponse init = parse_init_purchase(send(*card, init_purchase_apdu(amount, test_psam_terminal, true)));
    const Rsp sam =
        send(*psam, init_sam_apdu(init.random, init.offline_atc, amount, 0x09, w, init.key_version, init.alg_id, both_factors()));
    REQUIRE(sam.sw_hex() == "9000");
    const Bytes record = bus_record(cos::bus_record::state_entered, 8, 2, amount, test_psam_terminal);
    REQUIRE(send(*card, update_capp_apdu(0x01, 0xD0, record)).sw_hex() == "9000");
    const Rsp debit = send(*card, debit_apdu(read_be32(sam.data), w, ByteView(sam.data).last(4)));
    REQUIRE(debit.sw_hex() == "9000");
    CHECK(send(*psam, concat(hex("80 72 00 00 04"), ByteView(debit.data).last(4))).sw_hex() == "9000");
    CHECK(send(*card, "00 B2 01 D4 30").data_hex() == hx(record));
}

TEST_CASE("the PSAM serial is durable across reopen of its image") {
    const auto dir = std::filesystem::temp_directory_path() / ("coconut-psam-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    const auto path = dir / "psam.img";
    std::filesystem::remove(path);
    REQUIRE(cos::create_image(path, psam_profile(issuer_key(master_dpk))).ok());
    const CardDateTime w = when("20261126", "135100");
    {
        auto psam = VirtualCard::open(path);
        REQUIRE(psam.ok());
        select_psam(**psam);
        for (int i = 0; i < 3; ++i) REQUIRE(sw(**psam, hx(init_sam_apdu(hex("01020304"), 0, 1, 6, w, 1, 0, both_factors()))) == "9000");
    }
    auto psam = VirtualCard::open(path);
    REQUIRE(psam.ok());
    CHECK((*psam)->snapshot().terminal_serial == 4);
    select_psam(**psam);
    const Rsp r = send(**psam, init_sam_apdu(hex("01020304"), 0, 1, 6, w, 1, 0, both_factors()));
    CHECK(hx(ByteView(r.data).first(4)) == "00000004");
    std::filesystem::remove_all(dir);
}

TEST_SUITE_END();
