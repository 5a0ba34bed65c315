// Card images and personalization: create, reopen, refuse corrupt / truncated images with the right
// ImageError, refuse bad profiles (IMAGE-FORMAT.md, image.hpp).
#include "test_cos_support.hpp"

#include <coconut/core/durable_file.hpp>
#include <coconut/core/sha256.hpp>

#include <openssl/evp.h>

#include <algorithm>
#include <fstream>
#include <limits>

using namespace cos_test;

TEST_SUITE_BEGIN("cos image");

namespace {
// A fresh directory per test case, removed at the end.
struct TempDir {
    std::filesystem::path path;
    TempDir() {
        static int counter = 0;
        path =
            std::filesystem::temp_directory_path() / ("coconut-cos-image-" + std::to_string(::getpid()) + "-" + std::to_string(++counter));
        std::filesystem::remove_all(path);
        std::filesystem::create_directories(path);
    }
    ~TempDir() {
        std::error_code ignored;
        std::filesystem::remove_all(path, ignored);
    }
    std::filesystem::path operator/(const char* name) const { return path / name; }
};

Bytes read_file(const std::filesystem::path& p) {
    std::ifstream in(p, std::ios::binary);
    return Bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}
void write_file(const std::filesystem::path& p, ByteView b) {
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}
std::unique_ptr<VirtualCard> open_ok(const std::filesystem::path& p) {
    auto card = VirtualCard::open(p);
    REQUIRE_MESSAGE(card.ok(), (card.ok() ? std::string() : card.error().message));
    return std::move(card).value();
}
cos::ImageError open_error(const std::filesystem::path& p) {
    auto card = VirtualCard::open(p);
    REQUIRE_MESSAGE(!card.ok(), "the image opened but should have been refused");
    INFO("message: " << card.error().message);
    CHECK_FALSE(card.error().message.empty());
    return card.error().code;
}
std::size_t slot_size_of(const Bytes& image) { return (image.size() - cos::image_header_size) / 2; }
}  // namespace

TEST_CASE("an image survives reopen: balance, ATCs, log, PIN tries") {
    TempDir dir;
    const auto path = dir / "card.img";
    REQUIRE(cos::create_image(path, card_profile()).ok());
    const CardDateTime w = when("20261126", "135100");
    PurseState before_close;
    {
        auto card = open_ok(path);
        CHECK(card->kind() == cos::ImageKind::card);
        select_purse(*card);
        do_load(*card, 2000);
        do_purchase(*card, 300, 1, w);
        select_ssse(*card);
        CHECK(sw(*card, "00 20 00 00 03 000000") == "63C2");
        before_close = observe(*card);
    }
    auto card = open_ok(path);
    CHECK(observe(*card) == before_close);
    CHECK(before_close.balance_fen == test_balance_fen + 2000 - 300);
    const auto snap = card->snapshot();
    CHECK(snap.online_atc == 1);
    CHECK(snap.offline_atc == 1);
    CHECK(snap.pin_tries_left == 2);
    CHECK(snap.asn == test_asn);
    CHECK(send(*card, "00 B2 01 C4 17").data_hex() == log_record(1, 300, 0x06, test_terminal, w));
}

TEST_CASE("a command's effect is in the image file when its response returns") {
    TempDir dir;
    const auto path = dir / "card.img";
    REQUIRE(cos::create_image(path, card_profile()).ok());
    auto card = open_ok(path);
    select_purse(*card);
    const CardDateTime w = when("20261126", "135100");
    do_purchase(*card, 77, 1, w);
    // A second reader of the file (the card object still open) sees the purchase.
    auto reader = open_ok(path);
    select_purse(*reader);
    CHECK(balance(*reader) == test_balance_fen - 77);
    CHECK(send(*reader, "00 B2 01 C4 17").data_hex() == log_record(1, 77, 0x06, test_terminal, w));
}

TEST_CASE("every committed command increments the generation; reads commit nothing") {
    TempDir dir;
    const auto path = dir / "card.img";
    REQUIRE(cos::create_image(path, card_profile()).ok());
    auto card = open_ok(path);
    const auto g0 = card->snapshot().generation;
    select_purse(*card);
    balance(*card);
    send(*card, "00 B0 95 00 1E");
    CHECK(card->snapshot().generation == g0);
    do_purchase(*card, 1);
    CHECK(card->snapshot().generation > g0);
}

TEST_CASE("create_image refuses to overwrite unless asked (ImageError::exists)") {
    TempDir dir;
    const auto path = dir / "card.img";
    REQUIRE(cos::create_image(path, card_profile()).ok());
    const auto again = cos::create_image(path, card_profile());
    REQUIRE_FALSE(again.ok());
    CHECK(again.error().code == cos::ImageError::exists);
    json profile = card_profile();
    profile["balance_fen"] = 42;
    REQUIRE(cos::create_image(path, profile, /*overwrite=*/true).ok());
    auto card = open_ok(path);
    select_purse(*card);
    CHECK(balance(*card) == 42);
}

TEST_CASE("a missing image is refused with ImageError::not_found") {
    TempDir dir;
    CHECK(open_error(dir / "nope.img") == cos::ImageError::not_found);
}

TEST_CASE("a truncated or extended image is refused with ImageError::truncated") {
    TempDir dir;
    const auto path = dir / "card.img";
    REQUIRE(cos::create_image(path, card_profile()).ok());
    const Bytes image = read_file(path);
    write_file(path, ByteView(image).first(image.size() - 1));
    CHECK(open_error(path) == cos::ImageError::truncated);
    write_file(path, ByteView(image).first(image.size() / 2));
    CHECK(open_error(path) == cos::ImageError::truncated);
    write_file(path, ByteView(image).first(cos::image_header_size));
    CHECK(open_error(path) == cos::ImageError::truncated);
    Bytes longer = image;
    longer.push_back(0);
    write_file(path, longer);
    CHECK(open_error(path) == cos::ImageError::truncated);
}

TEST_CASE("an empty or tiny file is refused, not reset") {
    TempDir dir;
    const auto path = dir / "card.img";
    write_file(path, Bytes{});
    const auto code = open_error(path);
    CHECK((code == cos::ImageError::truncated || code == cos::ImageError::bad_magic));
    write_file(path, hex("434F434F"));
    const auto code2 = open_error(path);
    CHECK((code2 == cos::ImageError::truncated || code2 == cos::ImageError::bad_magic));
    CHECK(read_file(path).size() == 4);  // refused, never rewritten
}

TEST_CASE("a file that is not a card image is refused with ImageError::bad_magic") {
    TempDir dir;
    const auto path = dir / "card.img";
    REQUIRE(cos::create_image(path, card_profile()).ok());
    Bytes image = read_file(path);
    image[0] ^= 0xFF;
    write_file(path, image);
    CHECK(open_error(path) == cos::ImageError::bad_magic);
}

namespace {
// IMAGE-FORMAT.md: the header's bytes 32..63 are SHA-256 of bytes 0..31.
void reseal_header(Bytes& image) {
    unsigned int length = 32;
    REQUIRE(EVP_Digest(image.data(), 32, image.data() + 32, &length, EVP_sha256(), nullptr) == 1);
}
}  // namespace

TEST_CASE("an image of a newer format version is refused with ImageError::unsupported_version") {
    TempDir dir;
    const auto path = dir / "card.img";
    REQUIRE(cos::create_image(path, card_profile()).ok());
    Bytes image = read_file(path);
    REQUIRE(image[8] == 0x00);
    REQUIRE(image[9] == cos::image_format_version);
    image[9] = cos::image_format_version + 1;
    reseal_header(image);
    write_file(path, image);
    CHECK(open_error(path) == cos::ImageError::unsupported_version);
}

TEST_CASE("an image whose header checksum is wrong is refused with ImageError::corrupt") {
    TempDir dir;
    const auto path = dir / "card.img";
    REQUIRE(cos::create_image(path, card_profile()).ok());
    Bytes image = read_file(path);
    image[20] ^= 0x01;  // in the zero bytes covered by the header checksum
    write_file(path, image);
    CHECK(open_error(path) == cos::ImageError::corrupt);
}

TEST_CASE("an image whose header kind disagrees with its payload is refused") {
    TempDir dir;
    const auto path = dir / "card.img";
    REQUIRE(cos::create_image(path, card_profile()).ok());
    Bytes image = read_file(path);
    REQUIRE(image[10] == static_cast<std::uint8_t>(cos::ImageKind::card));
    image[10] = static_cast<std::uint8_t>(cos::ImageKind::psam);
    reseal_header(image);
    write_file(path, image);
    CHECK(open_error(path) == cos::ImageError::corrupt);
}

TEST_CASE("an image whose only valid slot is damaged is refused with ImageError::corrupt") {
    TempDir dir;
    const auto path = dir / "card.img";
    REQUIRE(cos::create_image(path, card_profile()).ok());
    const Bytes image = read_file(path);
    const std::size_t slot = slot_size_of(image);
    REQUIRE(slot >= 1024);
    // Damage a payload byte in both slots (only one holds generation 1; the other is empty).
    Bytes damaged = image;
    damaged[cos::image_header_size + 40] ^= 0x01;
    damaged[cos::image_header_size + slot + 40] ^= 0x01;
    write_file(path, damaged);
    CHECK(open_error(path) == cos::ImageError::corrupt);
    CHECK(read_file(path) == damaged);  // refused, never silently reset
}

TEST_CASE("a damaged newest slot falls back to the previous commit (the torn-write rule)") {
    TempDir dir;
    const auto path = dir / "card.img";
    REQUIRE(cos::create_image(path, card_profile()).ok());
    {
        auto card = open_ok(path);
        select_purse(*card);
        do_purchase(*card, 100);  // generation 2, written to the other slot
    }
    const Bytes after_one = read_file(path);
    {
        auto card = open_ok(path);
        select_purse(*card);
        do_purchase(*card, 200);  // generation 3, back in the first slot
    }
    const Bytes after_two = read_file(path);
    const std::size_t slot = slot_size_of(after_two);
    // The slot that changed in the last commit is the newest; damage it.
    std::size_t newest = 0;
    for (std::size_t s = 0; s < 2; ++s) {
        const std::size_t at = cos::image_header_size + s * slot;
        if (!std::equal(after_one.begin() + static_cast<long>(at), after_one.begin() + static_cast<long>(at + slot),
                        after_two.begin() + static_cast<long>(at)))
            newest = s;
    }
    Bytes damaged = after_two;
    damaged[cos::image_header_size + newest * slot + 30] ^= 0x40;
    write_file(path, damaged);
    auto card = open_ok(path);
    select_purse(*card);
    CHECK(balance(*card) == test_balance_fen - 100);
    CHECK(card->snapshot().offline_atc == 1);
}

namespace {
// A wrong-PIN VERIFY (one commit: the try counter) on a card whose storage cuts that commit after `bytes`.
void verify_wrong_pin_cut(const std::filesystem::path& path, std::size_t bytes) {
    auto storage = cos::FileStorage::open(path);
    REQUIRE(storage.ok());
    cos::FileStorage* file = storage.value().get();
    auto card = VirtualCard::from_storage(std::move(storage).value());
    REQUIRE(card.ok());
    select_purse(*card.value());
    file->inject_power_cut_after(bytes);
    CHECK_THROWS_AS(card.value()->transmit(hex("00 20 00 00 03 111111")), cos::PowerCut);
}
}  // namespace

TEST_CASE("a power cut in the first commit after personalization leaves the personalized card") {
    TempDir dir;
    const auto path = dir / "card.img";
    REQUIRE(cos::create_image(path, card_profile()).ok());
    const std::size_t slot = slot_size_of(read_file(path));
    verify_wrong_pin_cut(path, slot / 2);
    auto card = open_ok(path);
    CHECK(card->snapshot().pin_tries_left == 3);
    CHECK(card->snapshot().generation == 1);
}

TEST_CASE("an image holding generation 1 in slot A (older layout) survives a cut in its next commit") {
    TempDir dir;
    const auto path = dir / "card.img";
    REQUIRE(cos::create_image(path, card_profile()).ok());
    Bytes image = read_file(path);
    const std::size_t slot = slot_size_of(image);
    // Move generation 1 from slot B to slot A, B empty: the layout images were created with before.
    std::copy(image.begin() + static_cast<long>(cos::image_header_size + slot), image.end(),
              image.begin() + static_cast<long>(cos::image_header_size));
    std::fill(image.begin() + static_cast<long>(cos::image_header_size + slot), image.end(), 0);
    write_file(path, image);
    verify_wrong_pin_cut(path, slot / 2);
    {
        auto card = open_ok(path);
        CHECK(card->snapshot().pin_tries_left == 3);
        select_purse(*card);
        CHECK(send(*card, "00 20 00 00 03 111111").sw_hex() == "63C2");  // a whole commit: generation 2
    }
    verify_wrong_pin_cut(path, slot - 1);  // generation 3 torn: generation 2 must survive
    auto card = open_ok(path);
    CHECK(card->snapshot().pin_tries_left == 2);
    CHECK(card->snapshot().generation == 2);
}

namespace {
// Sets the generation of the slot at `slot_at` and seals the slot's checksum again, as anyone who can
// write the file can (the checksum detects torn writes; it is not a MAC).
void set_slot_generation(Bytes& image, std::size_t slot_at, std::size_t slot, std::uint64_t generation) {
    const auto field = be_array<8>(generation);
    std::copy(field.begin(), field.end(), image.begin() + static_cast<long>(slot_at + 4));
    const std::size_t length = read_be32(ByteView(image).subspan(slot_at + 12, 4));
    const Sha256Digest digest = sha256(ByteView(image).subspan(slot_at, 16 + length));
    std::copy(digest.begin(), digest.end(), image.begin() + static_cast<long>(slot_at + slot - digest.size()));
}
}  // namespace

TEST_CASE("an image whose newest generation leaves no room for another commit is refused, never loses a commit") {
    // A commit writes generation + 1. At the largest u64 that wrapped to 0, so the next load took the older
    // slot again and the committed command was gone: the card forgot a change it had answered 9000 to.
    TempDir dir;
    const auto path = dir / "card.img";
    REQUIRE(cos::create_image(path, card_profile()).ok());
    Bytes image = read_file(path);
    const std::size_t slot = slot_size_of(image);
    const std::size_t slot_b = cos::image_header_size + slot;  // personalization writes generation 1 there
    set_slot_generation(image, slot_b, slot, std::numeric_limits<std::uint64_t>::max());
    write_file(path, image);
    auto card = VirtualCard::open(path);
    REQUIRE_FALSE(card.ok());
    CHECK(card.error().code == cos::ImageError::corrupt);
    CHECK(card.error().message.find("generation") != std::string::npos);
    CHECK(read_file(path) == image);  // refused, never rewritten

    // The last generation an image may hold opens; a command that would commit past it answers 6581 and
    // changes nothing, so the image still opens as it was.
    set_slot_generation(image, slot_b, slot, cos::image_last_generation);
    write_file(path, image);
    {
        auto opened = open_ok(path);
        select_purse(*opened);
        CHECK(send(*opened, "00 20 00 00 03 111111").sw_hex() == "6581");
        CHECK(opened->snapshot().pin_tries_left == 3);
    }
    CHECK(read_file(path) == image);
    auto reopened = open_ok(path);
    CHECK(reopened->snapshot().generation == cos::image_last_generation);
    CHECK(reopened->snapshot().pin_tries_left == 3);
}

TEST_CASE("personalize refuses a bad profile naming the field") {
    const auto refused = [](const json& profile, std::string_view field) {
        const auto r = cos::personalize(profile);
        REQUIRE_MESSAGE(!r.ok(), "profile accepted: " << profile.dump());
        CHECK_MESSAGE(r.error().find(field) != std::string::npos, "error '" << r.error() << "' should name " << field);
    };
    json p = card_profile();
    p.erase("asn");
    refused(p, "asn");
    p = card_profile();
    p["asn"] = "0310000000000001234";  // 19 digits
    refused(p, "asn");
    p = card_profile();
    p["asn"] = "0310000000000001234A";
    refused(p, "asn");
    p = card_profile();
    p["issuer_id"] = "04600000000001";  // 14 hex
    refused(p, "issuer_id");
    p = card_profile();
    p["pin"] = "12345";  // 5 digits
    refused(p, "pin");
    p = card_profile();
    p["pin"] = "12a4";
    refused(p, "pin");
    p = card_profile();
    p["keys"]["dpk"] = "1122";
    refused(p, "dpk");
    p = card_profile();
    p["keys"]["dtk"] = "ZZ223344556677888877665544332211";
    refused(p, "dtk");
    p = card_profile();
    p["protocol"] = "T=2";
    refused(p, "protocol");
    p = card_profile();
    p["balance_fen"] = -1;
    refused(p, "balance_fen");
    p = card_profile();
    p["balance_fen"] = 100001;  // above the maximum
    refused(p, "balance_fen");
    p = card_profile();
    p.erase("keys");
    refused(p, "keys");
    p = card_profile();
    p["kind"] = "toaster";
    refused(p, "kind");
    p = card_profile();
    p["keys"].erase("ssse_iak");  // a profile written before the SSSE application had a key of its own
    refused(p, "keys.ssse_iak");
    p = card_profile();
    p["keys"]["ssse_iak"] = std::string(test_iak);  // the purse's key answers without a PIN
    refused(p, "keys.ssse_iak");
    p = card_profile();
    p["master_keys"] = p["keys"];
    p.erase("keys");
    p["master_keys"]["ssse_iak"] = std::string(test_iak);
    refused(p, "master_keys.ssse_iak");
    json psam = psam_profile("0123456789ABCDEFFEDCBA9876543210");
    psam["terminal_id"] = "46010000000";  // 11 digits
    refused(psam, "terminal_id");
}

TEST_CASE("create_image with a bad profile answers ImageError::invalid_profile and writes nothing") {
    TempDir dir;
    const auto path = dir / "card.img";
    json p = card_profile();
    p["pin"] = "1";
    const auto r = cos::create_image(path, p);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == cos::ImageError::invalid_profile);
    CHECK_FALSE(std::filesystem::exists(path));
}

TEST_CASE("a PSAM image reopens as a PSAM") {
    TempDir dir;
    const auto path = dir / "psam.img";
    REQUIRE(cos::create_image(path, psam_profile("0123456789ABCDEFFEDCBA9876543210")).ok());
    auto psam = open_ok(path);
    CHECK(psam->kind() == cos::ImageKind::psam);
    CHECK(psam->snapshot().terminal_id == test_psam_terminal);
    CHECK(psam->snapshot().terminal_serial == 1);
}

TEST_CASE("a card on MemoryStorage commits into it") {
    auto payload = cos::personalize(card_profile());
    REQUIRE(payload.ok());
    CHECK(cos::payload_kind(payload.value()) == cos::ImageKind::card);
    auto storage = std::make_unique<cos::MemoryStorage>(cos::ImageKind::card, payload.value());
    cos::MemoryStorage* raw = storage.get();
    auto card = VirtualCard::from_storage(std::move(storage));
    REQUIRE(card.ok());
    select_purse(**card);
    do_purchase(**card, 5);
    // A second card over the committed payload sees the purchase.
    auto copy = VirtualCard::in_memory(raw->payload());
    REQUIRE(copy.ok());
    select_purse(**copy);
    CHECK(balance(**copy) == test_balance_fen - 5);
}

TEST_CASE("a payload that does not decode is refused with ImageError::corrupt") {
    auto payload = cos::personalize(card_profile());
    REQUIRE(payload.ok());
    Bytes cut(payload.value().begin(), payload.value().begin() + static_cast<long>(payload.value().size() / 2));
    auto card = VirtualCard::in_memory(cut);
    REQUIRE_FALSE(card.ok());
    CHECK(card.error().code == cos::ImageError::corrupt);
    auto empty = VirtualCard::in_memory(Bytes{});
    REQUIRE_FALSE(empty.ok());
    CHECK(empty.error().code == cos::ImageError::corrupt);
}

TEST_CASE("a payload whose purse DF lost its EF15 is refused (ImageError::corrupt), never a card that crashes") {
    // Found by fuzz_apdu_dispatcher's image mode: EF15's SFI byte edited, the payload decoded, and SELECT of
    // the purse crashed building the FCI from the missing EF15. IMAGE-FORMAT.md: a payload that does not
    // decode is refused as corrupt; a purse without its public data cannot be served. (A card that decodes it
    // is not sent any APDU here: that would crash this test binary.)
    auto payload = cos::personalize(card_profile());
    REQUIRE(payload.ok());
    Bytes p = payload.value();
    // The purse DF: AID, role, parent, EF count, then EF15 = fid 0015 ‖ sfi 15.
    const Bytes aid(cos::purse_aid.begin(), cos::purse_aid.end());
    const auto purse = std::search(p.begin(), p.end(), aid.begin(), aid.end());
    REQUIRE(purse != p.end());
    const Bytes ef15 = hex("0015 15");
    const auto at = std::search(purse, p.end(), ef15.begin(), ef15.end());
    REQUIRE(at != p.end());
    *(at + 2) = 0x02;  // EF15 becomes an EF with SFI 02: the purse has no SFI 15 any more
    auto card = VirtualCard::in_memory(p);
    CHECK_MESSAGE(!card.ok(), "the payload without EF15 decoded; SELECT of its purse would crash");
    if (!card.ok()) CHECK(card.error().code == cos::ImageError::corrupt);
}

TEST_CASE("a payload whose purse DF lost its EF18 log is refused (ImageError::corrupt), never a card that crashes") {
    // Found by the payload sweep (cos_payload_sweep.cpp): EF18's SFI edited, the payload decoded, and the
    // first successful DEBIT / CREDIT crashed appending to the missing log. Not sent any APDU here.
    auto payload = cos::personalize(card_profile());
    REQUIRE(payload.ok());
    Bytes p = payload.value();
    const Bytes aid(cos::purse_aid.begin(), cos::purse_aid.end());
    const auto purse = std::search(p.begin(), p.end(), aid.begin(), aid.end());
    REQUIRE(purse != p.end());
    const Bytes ef18 = hex("0018 18 03");  // fid 0018, SFI 18, type 3 = cyclic (IMAGE-FORMAT.md)
    const auto at = std::search(purse, p.end(), ef18.begin(), ef18.end());
    REQUIRE(at != p.end());
    *(at + 2) = 0x02;
    auto card = VirtualCard::in_memory(p);
    CHECK_MESSAGE(!card.ok(), "the payload without EF18 decoded; its first DEBIT or CREDIT would crash");
    if (!card.ok()) CHECK(card.error().code == cos::ImageError::corrupt);
}

TEST_CASE("a card without a purchase key of index 01 answers 9403 at INITIALIZE FOR PURCHASE, never crashes") {
    // Found by the payload sweep: the DPK's key index edited to 02; INITIALIZE answered 9000 and the DEBIT
    // dereferenced the missing key. Either refusing the payload or 9403 at INITIALIZE is right (docs/CARD-SPEC.md §4:
    // an unsupported key index → 9403). The DEBIT is not sent here: it would crash this test binary.
    auto payload = cos::personalize(card_profile());
    REQUIRE(payload.ok());
    Bytes p = payload.value();
    // Key entry: usage(1) ‖ index(1) ‖ version(1) ‖ alg(1) ‖ tries(1) ‖ key(16); usage 1 = DPK.
    const Bytes dpk = hex(test_dpk);
    const auto key = std::search(p.begin(), p.end(), dpk.begin(), dpk.end());
    REQUIRE(key != p.end());
    REQUIRE(key - p.begin() >= 5);
    REQUIRE(*(key - 5) == 0x01);  // usage: purchase
    REQUIRE(*(key - 4) == 0x01);  // index 01
    *(key - 4) = 0x02;
    auto card = VirtualCard::in_memory(p);
    if (!card.ok()) {
        CHECK(card.error().code == cos::ImageError::corrupt);
        return;
    }
    select_purse(**card);
    CHECK(send(**card, init_purchase_apdu(1)).sw_hex() == "9403");
    CHECK(send(**card, init_purchase_apdu(1, test_terminal, true)).sw_hex() == "9403");
}

namespace {
// A payload as the build before the SSSE key wrote it: the same layout, five keys, no ssse_auth entry.
Bytes without_ssse_key(Bytes p) {
    // Key entry: usage(1) ‖ index(1) ‖ version(1) ‖ alg(1) ‖ tries(1) ‖ key(16); the key count (u16) precedes
    // the first entry, the DPK.
    constexpr std::ptrdiff_t entry_size = 21;
    const Bytes dpk = hex(test_dpk);
    const auto first = std::search(p.begin(), p.end(), dpk.begin(), dpk.end()) - 5;
    REQUIRE(first - p.begin() >= 2);
    REQUIRE(*first == 0x01);  // usage: purchase
    const auto count_at = first - 2;
    const std::uint16_t count = read_be16(ByteView(&*count_at, 2));
    REQUIRE(count == 6);
    const Bytes ssse = hex(test_ssse_iak);
    const auto entry = std::search(p.begin(), p.end(), ssse.begin(), ssse.end()) - 5;
    REQUIRE(*entry == 0x06);  // usage: SSSE internal authenticate (IMAGE-FORMAT.md)
    p.erase(entry, entry + entry_size);
    *(count_at + 1) = static_cast<std::uint8_t>(count - 1);
    return p;
}
}  // namespace

TEST_CASE("an image without the SSSE key (personalized before it existed) is refused with ImageError::missing_key naming it") {
    auto payload = cos::personalize(card_profile());
    REQUIRE(payload.ok());
    const Bytes old = without_ssse_key(payload.value());
    TempDir dir;
    const auto path = dir / "old.img";
    REQUIRE(cos::FileStorage::create(path, cos::ImageKind::card, old, false).ok());
    const Bytes before = read_file(path);
    auto card = VirtualCard::open(path);
    REQUIRE_FALSE(card.ok());
    CHECK(card.error().code == cos::ImageError::missing_key);
    CHECK_MESSAGE(card.error().message.find("ssse_iak") != std::string::npos, card.error().message);
    CHECK_MESSAGE(card.error().message.find("ssse_auth") != std::string::npos, card.error().message);
    CHECK(read_file(path) == before);  // refused, never reset or rewritten
    // The same payload in memory, too.
    auto in_memory = VirtualCard::in_memory(old);
    REQUIRE_FALSE(in_memory.ok());
    CHECK(in_memory.error().code == cos::ImageError::missing_key);
}

TEST_CASE("the SSSE key survives reopen: the reopened card answers SSSE INTERNAL AUTHENTICATE under it") {
    TempDir dir;
    const auto path = dir / "card.img";
    REQUIRE(cos::create_image(path, card_profile()).ok());
    {
        auto card = open_ok(path);
        select_purse(*card);
        do_purchase(*card, 100);  // one commit rewrites the whole state, keys included
    }
    auto card = open_ok(path);
    select_ssse(*card);
    REQUIRE(sw(*card, "00 20 00 00 03 123456") == "9000");
    const Rsp r = send(*card, "00 88 00 01 08 0011223344556677 08");
    REQUIRE(r.sw_hex() == "9000");
    CHECK(r.data_hex() == hx(crypto::tdes_ecb_encrypt(key16(test_ssse_iak), hex("0011223344556677"))));
}

TEST_SUITE_END();

TEST_CASE("a failed directory fsync fails the image's creation (the new name may not survive a crash)") {
    TempDir dir;
    const auto path = dir / "card.img";
    inject_directory_fsync_failures(1);
    auto created = cos::create_image(path, card_profile());
    inject_directory_fsync_failures(0);
    REQUIRE_FALSE(created.ok());
    CHECK(created.error().code == cos::ImageError::io_error);
    CHECK(created.error().message.find("fsync directory") != std::string::npos);
}
