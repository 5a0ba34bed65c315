// The maintenance MAC service (APPLICATION BLOCK / UNBLOCK, docs/CARD-SPEC.md §2, §4) in process: the MAC
// against an independent computation under the card's DAMK, wrong key usage, bad headers, bad ASN.
#include "support.hpp"

using namespace hsm_test;
using hsm::Errc;

namespace {

struct LoadedStore {
    TempDir dir;
    std::unique_ptr<hsm::Hsm> hsm;
    LoadedStore() {
        make_store(dir.path());
        auto store = hsm::KeyStore::open(dir / "store");
        REQUIRE(store.ok());
        hsm = std::make_unique<hsm::Hsm>(std::make_shared<const hsm::KeyStore>(std::move(store.value())));
    }
};

const hsm::CardIdentity maintenance_card = card("4600000000000001", "46000000001234567891");

// ISO 9797-1 MAC algorithm 3 written out block by block: DES-CBC under K1 with IV = challenge ‖ 0⁴ over
// the padded header (one block), then D(K2), E(K1); leftmost 4 bytes.
crypto::Mac4 independent_maintenance_mac(const crypto::Key16& damk, ByteView header5, ByteView challenge4) {
    Bytes block(header5.begin(), header5.end());
    block.push_back(0x80);
    block.resize(8, 0x00);
    for (std::size_t i = 0; i < 4; ++i) block[i] ^= challenge4[i];
    const crypto::Key8 k1(damk.view().first(8));
    const crypto::Key8 k2(damk.view().subspan(8, 8));
    Bytes out = crypto::des_ecb_encrypt(k1, block);
    out = crypto::des_ecb_decrypt(k2, out);
    out = crypto::des_ecb_encrypt(k1, out);
    return crypto::Mac4{out[0], out[1], out[2], out[3]};
}

hsm::MaintenanceMacRequest block_request(bool permanent) {
    hsm::MaintenanceMacRequest r;
    r.key = {"mk-maintenance", 0};
    r.card = maintenance_card;
    r.challenge = {0xA1, 0xB2, 0xC3, 0xD4};
    r.header = crypto::application_block_header(permanent);
    return r;
}

}  // namespace

TEST_CASE("maintenance MAC: the card's DAMK (two-level diversification) over the block header and challenge") {
    LoadedStore loaded;
    const crypto::Key16 damk = independent_card_key(key16(maintenance_master_hex), maintenance_card);
    for (bool permanent : {false, true}) {
        hsm::Usage usage;
        auto answer = loaded.hsm->maintenance_mac(block_request(permanent), &usage);
        REQUIRE_MESSAGE(answer.ok(), answer.error().message);
        CHECK(answer->key_version == 1);
        CHECK(answer->mac == independent_maintenance_mac(damk, permanent ? hex("841E000104") : hex("841E000004"), hex("A1B2C3D4")));
        CHECK(usage.key_label == "mk-maintenance");
        CHECK(usage.result.find(permanent ? "(permanent)" : "(temporary)") != std::string::npos);
        CHECK(usage.result.find("46000000001234567891") != std::string::npos);
    }
    auto unblock = block_request(false);
    unblock.header = crypto::application_unblock_header;
    auto answer = loaded.hsm->maintenance_mac(unblock);
    REQUIRE(answer.ok());
    CHECK(answer->mac == independent_maintenance_mac(damk, hex("8418000004"), hex("A1B2C3D4")));
}

TEST_CASE("maintenance MAC: another card, another challenge or another master give another MAC") {
    LoadedStore loaded;
    const auto base = loaded.hsm->maintenance_mac(block_request(true)).value().mac;
    auto other_card = block_request(true);
    other_card.card = card("4600000000000001", "46000000001234567892");
    CHECK(loaded.hsm->maintenance_mac(other_card).value().mac != base);
    auto other_challenge = block_request(true);
    other_challenge.challenge[3] ^= 1;
    CHECK(loaded.hsm->maintenance_mac(other_challenge).value().mac != base);
    CHECK(loaded.hsm->maintenance_mac(block_request(false)).value().mac != base);
}

TEST_CASE("maintenance MAC refuses a non-maintenance master (wrong_key_usage), an unknown one, a foreign header, a non-BCD ASN") {
    LoadedStore loaded;
    for (const char* label : {"mk-purchase", "mk-tac", "mk-internal-auth", "kek-issuance"}) {
        auto r = block_request(true);
        r.key = {label, 0};
        auto answer = loaded.hsm->maintenance_mac(r);
        REQUIRE_FALSE(answer.ok());
        CHECK_MESSAGE(answer.error().code == Errc::wrong_key_usage, label);
        CHECK(answer.error().message.find("maintenance") != std::string::npos);
    }
    auto unknown = block_request(true);
    unknown.key = {"mk-none", 0};
    CHECK(loaded.hsm->maintenance_mac(unknown).error().code == Errc::key_not_found);
    // Only the card's maintenance commands: a header for anything else would make the HSM a MAC oracle.
    for (crypto::MaintenanceHeader header :
         {crypto::MaintenanceHeader{0x84, 0x1E, 0x00, 0x02, 0x04}, crypto::MaintenanceHeader{0x84, 0x1E, 0x01, 0x00, 0x04},
          crypto::MaintenanceHeader{0x84, 0x1E, 0x00, 0x00, 0x08}, crypto::MaintenanceHeader{0x80, 0x54, 0x01, 0x00, 0x0F}}) {
        auto r = block_request(true);
        r.header = header;
        auto answer = loaded.hsm->maintenance_mac(r);
        REQUIRE_FALSE(answer.ok());
        CHECK(answer.error().code == Errc::bad_request);
        CHECK(answer.error().message.find("not a maintenance command") != std::string::npos);
    }
    auto bad_asn = block_request(true);
    bad_asn.card.asn[9] = 0xAF;
    auto answer = loaded.hsm->maintenance_mac(bad_asn);
    REQUIRE_FALSE(answer.ok());
    CHECK(answer.error().code == Errc::bad_request);
}

TEST_CASE("maintenance-mac wire payloads: round trip, and a missing or extra byte is bad_request naming the field") {
    const auto request = block_request(true);
    const Bytes payload = hsm::wire::encode(request);
    auto decoded = hsm::wire::decode_maintenance_mac_request(payload);
    REQUIRE(decoded.ok());
    CHECK(decoded->header == request.header);
    CHECK(decoded->challenge == request.challenge);
    CHECK(decoded->card.asn == request.card.asn);
    const ByteView all(payload);
    auto short_payload = hsm::wire::decode_maintenance_mac_request(all.first(payload.size() - 1));
    REQUIRE_FALSE(short_payload.ok());
    CHECK(short_payload.error().code == Errc::bad_request);
    CHECK(short_payload.error().message.find("command header") != std::string::npos);
    Bytes longer = payload;
    longer.push_back(0);
    auto long_payload = hsm::wire::decode_maintenance_mac_request(longer);
    REQUIRE_FALSE(long_payload.ok());
    CHECK(long_payload.error().code == Errc::bad_request);
    auto answer = hsm::wire::decode_maintenance_mac(hex("0102030401"));
    REQUIRE(answer.ok());
    CHECK(answer->key_version == 1);
    CHECK_FALSE(hsm::wire::decode_maintenance_mac(hex("01020304")).ok());
    CHECK(hsm::permissions_to_string(hsm::permit_maintenance) == "maintenance");
    CHECK(hsm::parse_permissions("tac,maintenance") == (hsm::permit_tac | hsm::permit_maintenance));
    CHECK(hsm::wire::required_permission(hsm::wire::Command::maintenance_mac) == hsm::permit_maintenance);
}
