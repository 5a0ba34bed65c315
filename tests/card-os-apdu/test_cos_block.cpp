// APPLICATION BLOCK / UNBLOCK of the purse and the tourist (purse-only) card (docs/CARD-SPEC.md §2
// "Application block", §9). Every MAC is recomputed here from the spec with the test DAMK.
#include "test_cos_support.hpp"

#include <coconut/cos/image.hpp>

#include <fstream>

using namespace cos_test;

TEST_SUITE_BEGIN("cos application block");

namespace {

crypto::Challenge4 maint_challenge(VirtualCard& card) {
    const Rsp r = send(card, "00 84 00 00 04");
    REQUIRE(r.sw_hex() == "9000");
    REQUIRE(r.data.size() == 4);
    crypto::Challenge4 c{};
    std::copy(r.data.begin(), r.data.end(), c.begin());
    return c;
}

// The APDU `84 1E 00 P2 04 MAC` for the card's current challenge (computed from the spec's definition:
// retail MAC of the padded header with IV = challenge ‖ 00000000, leftmost 4 bytes).
Bytes maint_block_apdu(const crypto::Challenge4& challenge, bool permanent, std::string_view damk = test_damk) {
    const Bytes header = permanent ? hex("84 1E 00 01 04") : hex("84 1E 00 00 04");
    crypto::Block iv{};
    std::copy(challenge.begin(), challenge.end(), iv.begin());
    const auto mac = crypto::retail_mac(key16(damk), header, iv);
    return concat(header, ByteView(mac).first(4));
}

std::string maint_block(VirtualCard& card, bool permanent) {
    return send(card, maint_block_apdu(maint_challenge(card), permanent)).sw_hex();
}

std::string maint_unblock(VirtualCard& card) {
    const auto challenge = maint_challenge(card);
    crypto::Block iv{};
    std::copy(challenge.begin(), challenge.end(), iv.begin());
    const auto mac = crypto::retail_mac(key16(test_damk), hex("84 18 00 00 04"), iv);
    return send(card, concat(hex("84 18 00 00 04"), ByteView(mac).first(4))).sw_hex();
}

// The purse commands a blocked application refuses, each once.
void check_purse_refused_while_blocked(VirtualCard& card, std::string_view expected) {
    CHECK(sw(card, "80 5C 00 02 04") == expected);
    CHECK(sw(card, hx(init_purchase_apdu(100))) == expected);
    CHECK(sw(card, hx(init_purchase_apdu(100, test_terminal, true))) == expected);
    CHECK(sw(card, hx(init_load_apdu(100))) == expected);
    CHECK(sw(card, "80 5A 00 06 02 0000 08") == expected);
    CHECK(sw(card, "00 B0 95 00 1E") == expected);  // READ BINARY EF15
    CHECK(sw(card, "00 B2 01 C4 17") == expected);  // READ RECORD EF18
    CHECK(sw(card, "00 88 00 01 08 0102030405060708") == expected);
}

}  // namespace

TEST_CASE("the maintenance MAC of docs/CARD-SPEC.md §4 vector 8, through the card's own function") {
    const crypto::Challenge4 challenge{0x11, 0x22, 0x33, 0x44};
    CHECK(hx(crypto::maintenance_mac(key16(test_damk), crypto::application_block_header(true), challenge)) == "89C2FC07");
    CHECK(hx(crypto::maintenance_mac(key16(test_damk), crypto::application_block_header(false), challenge)) == "7165A450");
    CHECK(hx(maint_block_apdu(challenge, true)) == "841E00010489C2FC07");
    CHECK(crypto::is_maintenance_header(crypto::application_unblock_header));
    CHECK_FALSE(crypto::is_maintenance_header({0x84, 0x1E, 0x00, 0x02, 0x04}));
    CHECK_FALSE(crypto::is_maintenance_header({0x80, 0x1E, 0x00, 0x00, 0x04}));
}

TEST_CASE("a temporary APPLICATION BLOCK: SELECT answers 6283 with the FCI, the purse refuses 6A81, UNBLOCK lifts it") {
    auto card = make_card();
    select_purse(*card);
    CHECK(maint_block(*card, false) == "9000");
    CHECK(card->snapshot().application_block == 1);
    const Rsp selected = send(*card, select_purse_apdu);
    CHECK(selected.sw_hex() == "6283");
    CHECK(hx(selected.data).find(std::string(test_asn)) != std::string::npos);  // the FCI still names the card
    CHECK(sw(*card, "00 A4 00 00 02 1001") == "6283");                          // by FID too
    check_purse_refused_while_blocked(*card, "6A81");
    CHECK(card->snapshot().balance_fen == test_balance_fen);
    CHECK(maint_unblock(*card) == "9000");
    CHECK(card->snapshot().application_block == 0);
    CHECK(sw(*card, select_purse_apdu) == "9000");
    do_purchase(*card, 10);
    CHECK(balance(*card) == test_balance_fen - 10);
}

TEST_CASE("a permanent APPLICATION BLOCK cannot be unblocked (9303) and a temporary block can be made permanent") {
    auto card = make_card();
    select_purse(*card);
    CHECK(maint_block(*card, false) == "9000");
    CHECK(send(*card, select_purse_apdu).sw_hex() == "6283");
    CHECK(maint_block(*card, true) == "9000");
    CHECK(card->snapshot().application_block == 2);
    CHECK(sw(*card, "84 18 00 00 04 01020304") == "9303");
    CHECK(maint_unblock(*card) == "9303");
    CHECK(maint_block(*card, false) == "9000");  // a temporary block does not weaken a permanent one
    CHECK(card->snapshot().application_block == 2);
    check_purse_refused_while_blocked(*card, "6A81");
}

TEST_CASE("APPLICATION BLOCK with a wrong MAC answers 6988 and does not block; the challenge is spent") {
    auto card = make_card();
    select_purse(*card);
    const auto challenge = maint_challenge(*card);
    Bytes apdu = maint_block_apdu(challenge, true);
    apdu.back() ^= 0x01;
    CHECK(send(*card, apdu).sw_hex() == "6988");
    CHECK(card->snapshot().application_block == 0);
    CHECK(send(*card, maint_block_apdu(challenge, true)).sw_hex() == "6984");  // the right MAC, but its challenge is gone
    CHECK(send(*card, maint_block_apdu(maint_challenge(*card), true, test_dpk)).sw_hex() == "6988");  // another key's MAC
    CHECK(send(*card, maint_block_apdu(maint_challenge(*card), false, test_damk)).sw_hex() == "9000");
    CHECK(card->snapshot().application_block == 1);
}

TEST_CASE("a replayed APPLICATION BLOCK is refused: its challenge answers one command") {
    auto card = make_card();
    select_purse(*card);
    const Bytes apdu = maint_block_apdu(maint_challenge(*card), false);
    REQUIRE(send(*card, apdu).sw_hex() == "9000");
    REQUIRE(maint_unblock(*card) == "9000");
    CHECK(send(*card, apdu).sw_hex() == "6984");  // no challenge outstanding
    maint_challenge(*card);                       // a new challenge: the old MAC does not match it
    CHECK(send(*card, apdu).sw_hex() == "6988");
    CHECK(card->snapshot().application_block == 0);
}

TEST_CASE("APPLICATION BLOCK: bad P1/P2, length, no challenge, an 8-byte challenge, another application") {
    auto card = make_card();
    select_purse(*card);
    const auto challenge = maint_challenge(*card);
    Bytes apdu = maint_block_apdu(challenge, false);
    apdu[3] = 0x02;
    CHECK(send(*card, apdu).sw_hex() == "6A86");
    apdu[3] = 0x00;
    apdu[2] = 0x01;
    CHECK(send(*card, apdu).sw_hex() == "6A86");
    CHECK(sw(*card, "84 1E 00 00 03 010203") == "6700");
    // Refusals before the MAC check leave the challenge: this wrong MAC spends it, the next finds none.
    CHECK(sw(*card, "84 1E 00 00 04 01020304") == "6988");
    CHECK(sw(*card, "84 1E 00 00 04 01020304") == "6984");
    CHECK(send(*card, "00 84 00 00 08").sw_hex() == "9000");
    CHECK(sw(*card, "84 1E 00 00 04 01020304") == "6984");  // the challenge must be 4 bytes
    select_ssse(*card);
    CHECK(send(*card, maint_block_apdu(maint_challenge(*card), false)).sw_hex() == "6985");
    CHECK(card->snapshot().application_block == 0);
    // The social-security application is not blocked with the purse.
    select_purse(*card);
    CHECK(maint_block(*card, true) == "9000");
    CHECK(sw(*card, select_ssse_apdu) == "9000");
    CHECK(sw(*card, "00 B2 01 2C 00") != "6A81");
}

TEST_CASE("a pending purchase is cancelled by the block; the offline ATC is unchanged") {
    auto card = make_card();
    select_purse(*card);
    const InitPurchaseResponse init = parse_init_purchase(send(*card, init_purchase_apdu(100)));
    CHECK(maint_block(*card, false) == "9000");
    const Bytes mac1 = terminal_purchase_mac1(init, 100, crypto::type_ep_purchase, test_terminal, 1, when("20261126", "130000"));
    CHECK(send(*card, debit_apdu(1, when("20261126", "130000"), mac1)).sw_hex() == "6A81");
    CHECK(card->snapshot().balance_fen == test_balance_fen);
    CHECK(card->snapshot().offline_atc == init.offline_atc);
}

TEST_CASE("the block is durable in the image: reopened, the card is still blocked") {
    const auto dir = std::filesystem::temp_directory_path() / ("coconut-cos-block-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    const auto path = dir / "card.img";
    REQUIRE(cos::create_image(path, card_profile()).ok());
    {
        auto card = VirtualCard::open(path);
        REQUIRE(card.ok());
        select_purse(**card);
        const auto generation = (*card)->snapshot().generation;
        CHECK(maint_block(**card, true) == "9000");
        CHECK((*card)->snapshot().generation > generation);
    }
    {
        auto card = VirtualCard::open(path);
        REQUIRE(card.ok());
        CHECK((*card)->snapshot().application_block == 2);
        CHECK(send(**card, select_purse_apdu).sw_hex() == "6283");
        CHECK(sw(**card, "80 5C 00 02 04") == "6A81");
    }
    std::filesystem::remove_all(dir);
}

TEST_CASE("a power cut at any point of the APPLICATION BLOCK commit leaves the card unblocked or blocked, never between") {
    const auto dir = std::filesystem::temp_directory_path() / ("coconut-cos-block-cut-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    const auto path = dir / "card.img";
    REQUIRE(cos::create_image(path, card_profile()).ok());
    const std::size_t slot_size = (std::filesystem::file_size(path) - cos::image_header_size) / 2;
    int before = 0;
    int after = 0;
    for (std::size_t cut : {std::size_t{0}, std::size_t{1}, std::size_t{64}, std::size_t{700}, std::size_t{3000}, slot_size / 2,
                            slot_size - 32, slot_size - 1, slot_size, 2 * slot_size}) {
        INFO("cut after " << cut << " of " << slot_size << " bytes");
        REQUIRE(cos::create_image(path, card_profile(), true).ok());
        {
            auto storage = cos::FileStorage::open(path);
            REQUIRE(storage.ok());
            cos::FileStorage* raw = storage.value().get();
            auto card = VirtualCard::from_storage(std::move(storage).value());
            REQUIRE(card.ok());
            select_purse(**card);
            const Bytes apdu = maint_block_apdu(maint_challenge(**card), true);
            raw->inject_power_cut_after(cut);
            bool cut_happened = false;
            try {
                (*card)->transmit(apdu);
            } catch (const cos::PowerCut&) {
                cut_happened = true;
            }
            CHECK(cut_happened);
        }
        auto reopened = VirtualCard::open(path);
        REQUIRE_MESSAGE(reopened.ok(), (reopened.ok() ? std::string() : reopened.error().message));
        const auto block = (*reopened)->snapshot().application_block;
        CHECK((block == 0 || block == 2));
        if (cut == 0) CHECK(block == 0);
        if (cut >= slot_size) CHECK(block == 2);
        CHECK(send(**reopened, select_purse_apdu).sw_hex() == (block == 2 ? "6283" : "9000"));
        CHECK((*reopened)->snapshot().balance_fen == test_balance_fen);
        ++(block == 0 ? before : after);
    }
    CHECK(before > 0);
    CHECK(after > 0);
    std::filesystem::remove_all(dir);
}

TEST_CASE("a payload of version 1 (before the block byte) still opens, unblocked") {
    // Version 1 = version 2 without the purse's block byte (IMAGE-FORMAT.md); rebuild one from a fresh
    // payload by finding the purse record by its values and dropping the byte after `locked`.
    const auto payload = cos::personalize(card_profile());
    REQUIRE(payload.ok());
    Bytes v1 = payload.value();
    REQUIRE(v1[1] == 2);
    const Bytes purse_head = concat(be_bytes(test_balance_fen, 4), be_bytes(test_max_balance_fen, 4));
    const auto at = std::search(v1.begin(), v1.end(), purse_head.begin(), purse_head.end());
    REQUIRE(at != v1.end());
    // balance 4 ‖ max 4 ‖ overdraft 4 ‖ online ATC 2 ‖ offline ATC 2 ‖ MAC failures 1 ‖ locked 1 ‖ block 1
    const auto block_offset = (at - v1.begin()) + 18;
    REQUIRE(v1[static_cast<std::size_t>(block_offset)] == 0);
    v1.erase(v1.begin() + block_offset);
    v1[1] = 1;
    auto card = VirtualCard::in_memory(v1);
    REQUIRE(card.ok());
    CHECK((*card)->snapshot().application_block == 0);
    select_purse(**card);
    CHECK(balance(**card) == test_balance_fen);
    // An out-of-range block byte is corrupt.
    Bytes bad = payload.value();
    bad[static_cast<std::size_t>(block_offset)] = 3;
    CHECK_FALSE(VirtualCard::in_memory(bad).ok());
}

// ---- tourist cards --------------------------------------------------------------------------

namespace {
json tourist_card_profile() {
    json p = card_profile();
    p["tourist"] = true;
    p.erase("cardholder");
    p.erase("medical_account");
    p["keys"].erase("ssse_iak");
    return p;
}
}  // namespace

TEST_CASE("a tourist card has no social-security application (6A82) and its purse purchases and loads") {
    auto card = make_card(tourist_card_profile());
    CHECK(sw(*card, select_ssse_apdu) == "6A82");
    CHECK(sw(*card, "00 A4 00 00 02 DDF1") == "6A82");
    select_purse(*card);
    do_purchase(*card, 250);
    CHECK(balance(*card) == test_balance_fen - 250);
    do_load(*card, 1000);
    CHECK(balance(*card) == test_balance_fen - 250 + 1000);
    CHECK(maint_block(*card, true) == "9000");
    CHECK(send(*card, select_purse_apdu).sw_hex() == "6283");
}

TEST_CASE("tourist profiles: an ssse_iak is refused, `tourist` must be a boolean, the image reopens") {
    json with_key = tourist_card_profile();
    with_key["keys"]["ssse_iak"] = std::string(test_ssse_iak);
    auto refused = cos::personalize(with_key);
    REQUIRE_FALSE(refused.ok());
    CHECK(refused.error().find("keys.ssse_iak") != std::string::npos);
    json not_bool = tourist_card_profile();
    not_bool["tourist"] = "yes";
    auto refused2 = cos::personalize(not_bool);
    REQUIRE_FALSE(refused2.ok());
    CHECK(refused2.error().find("tourist") != std::string::npos);

    const auto dir = std::filesystem::temp_directory_path() / ("coconut-cos-tourist-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    REQUIRE(cos::create_image(dir / "t.img", tourist_card_profile()).ok());
    auto card = VirtualCard::open(dir / "t.img");
    REQUIRE_MESSAGE(card.ok(), (card.ok() ? std::string() : card.error().message));
    CHECK(sw(**card, select_ssse_apdu) == "6A82");
    std::filesystem::remove_all(dir);
    // A resident card without its SSSE key is still refused (IMAGE-FORMAT.md missing_key).
    json resident = card_profile();
    resident["keys"].erase("ssse_iak");
    CHECK_FALSE(cos::personalize(resident).ok());
}

TEST_SUITE_END();
