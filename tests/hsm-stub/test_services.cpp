// Card services: derivation against an independent computation, docs/CARD-SPEC.md §4 vectors 2–4, batches.
#include "support.hpp"

#include <algorithm>

using namespace hsm_test;
using hsm::Errc;
using hsm::Verdict;

namespace {

struct Loaded {
    TempDir dir;
    std::unique_ptr<hsm::Hsm> hsm;
    explicit Loaded(bool retire_tac_v1 = false) {
        make_store(dir.path(), retire_tac_v1);
        auto store = hsm::KeyStore::open(dir / "store");
        REQUIRE(store.ok());
        hsm = std::make_unique<hsm::Hsm>(std::make_shared<const hsm::KeyStore>(std::move(store.value())));
    }
};

const hsm::CardIdentity alice = card("4600000000000001", "46000000001234567890");

// docs/CARD-SPEC.md §4 vector 4 (a real card's load).
hsm::LoadRequest vector4_load() {
    hsm::LoadRequest load;
    load.old_balance_fen = 0;
    load.amount_fen = 0x1C37;
    load.type = crypto::type_ep_load;
    load.terminal_id = hsm::parse_terminal_id("000001000050").value();
    load.online_atc = 0;
    load.card_random = {0xCD, 0xEF, 0x4F, 0x20};
    load.mac1 = {0x06, 0xB1, 0xBE, 0xF5};
    load.when = when("20140825", "103100");
    return load;
}

}  // namespace

TEST_CASE("derived card keys equal an independent two-level diversification, exported under the transport key") {
    Loaded h;
    const std::vector<hsm::KeyRef> masters = {{"mk-purchase", 1},      {"mk-load", 1},        {"mk-tac", 0},
                                              {"mk-internal-auth", 1}, {"mk-maintenance", 1}, {"mk-ssse-auth", 1}};
    auto set = h.hsm->derive_card_keys(alice, {"kek-issuance", 0}, masters);
    REQUIRE(set.ok());
    CHECK(set->transport.version == 1);
    CHECK(coconut::to_hex(set->transport_kcv) == coconut::to_hex(tdes_block(key16(transport_hex), Bytes(8, 0))).substr(0, 6));
    REQUIRE(set->keys.size() == 6);
    const std::vector<std::string> master_hex = {purchase_master_hex, load_master_hex,        tac_master_v2_hex,
                                                 auth_master_hex,     maintenance_master_hex, ssse_auth_master_hex};
    for (std::size_t i = 0; i < master_hex.size(); ++i) {
        CAPTURE(i);
        const crypto::Key16 expected = independent_card_key(key16(master_hex[i]), alice);
        // Decrypt the export with the transport key, block by block.
        const Bytes clear = crypto::tdes_ecb_decrypt(key16(transport_hex), set->keys[i].encrypted);
        CHECK(coconut::to_hex(clear) == coconut::to_hex(expected.view()));
        const Bytes check = tdes_block(expected, Bytes(8, 0));
        CHECK(coconut::to_hex(set->keys[i].kcv) == coconut::to_hex(ByteView(check).first(3)));
    }
    CHECK(set->keys[2].master.version == 2);  // "newest" resolved to the active TAC master
    CHECK(hsm::card_key_name(set->keys[2].usage) == "DTK");
    CHECK(set->keys[5].usage == hsm::KeyUsage::ssse_auth);
    CHECK(hsm::card_key_name(set->keys[5].usage) == "SSSE_IAK");
}

TEST_CASE("derive-card-keys takes at most one master per card-key usage: six, not seven") {
    Loaded h;
    std::vector<hsm::KeyRef> masters = {{"mk-purchase", 1},      {"mk-load", 1},        {"mk-tac", 0},
                                        {"mk-internal-auth", 1}, {"mk-maintenance", 1}, {"mk-ssse-auth", 1}};
    CHECK(h.hsm->derive_card_keys(alice, {"kek-issuance", 0}, masters).ok());
    masters.push_back({"mk-tac", 2});
    CHECK(h.hsm->derive_card_keys(alice, {"kek-issuance", 0}, masters).error().code == Errc::bad_request);
}

TEST_CASE("the ssse-auth usage has a name, parses back, and mk-ssse-auth is its default label") {
    CHECK(hsm::key_usage_name(hsm::KeyUsage::ssse_auth) == "ssse-auth");
    CHECK(hsm::parse_key_usage("ssse-auth") == hsm::KeyUsage::ssse_auth);
    CHECK(hsm::default_ssse_auth_label == "mk-ssse-auth");
    CHECK(static_cast<int>(hsm::KeyUsage::ssse_auth) == 7);  // the wire and store byte (PROTOCOL.md)
}

TEST_CASE("derive-card-keys refuses a transport key used as a master, a master used as transport, repeated usages") {
    Loaded h;
    const std::vector<hsm::KeyRef> kek_as_master = {{"kek-issuance", 1}};
    CHECK(h.hsm->derive_card_keys(alice, {"kek-issuance", 1}, kek_as_master).error().code == Errc::wrong_key_usage);
    const std::vector<hsm::KeyRef> load_only = {{"mk-load", 1}};
    CHECK(h.hsm->derive_card_keys(alice, {"mk-load", 1}, load_only).error().code == Errc::wrong_key_usage);
    const std::vector<hsm::KeyRef> twice = {{"mk-tac", 1}, {"mk-tac", 2}};
    CHECK(h.hsm->derive_card_keys(alice, {"kek-issuance", 1}, twice).error().code == Errc::bad_request);
    hsm::CardIdentity bad = alice;
    bad.asn[9] = 0xAB;  // not BCD
    CHECK(h.hsm->derive_card_keys(bad, {"kek-issuance", 1}, load_only).error().code == Errc::bad_request);
}

TEST_CASE("the issuer purchase key for PSAMs is one level of diversification, under the transport key") {
    Loaded h;
    auto exported = h.hsm->export_issuer_key(alice.issuer_id, {"mk-purchase", 1}, {"kek-issuance", 1});
    REQUIRE(exported.ok());
    const crypto::Key16 expected = independent_div(key16(purchase_master_hex), alice.issuer_id);
    CHECK(coconut::to_hex(crypto::tdes_ecb_decrypt(key16(transport_hex), exported->encrypted)) == coconut::to_hex(expected.view()));
    CHECK(exported->kcv == crypto::kcv(expected));
    CHECK(h.hsm->export_issuer_key(alice.issuer_id, {"mk-load", 1}, {"kek-issuance", 1}).error().code == Errc::wrong_key_usage);
}

TEST_CASE("vector 2: load MAC1 2988AE5A is valid and MAC2 is 3A845BF0; a wrong MAC1 gets no MAC2") {
    const crypto::Key16 dlk = key16("11223344556677888877665544332211");
    hsm::LoadRequest load;
    load.old_balance_fen = 0;
    load.amount_fen = 0x1000;
    load.type = crypto::type_ed_load;
    load.terminal_id = hsm::parse_terminal_id("001122334455").value();
    load.online_atc = 0;
    load.card_random = {0x11, 0x22, 0x33, 0x44};
    load.mac1 = {0x29, 0x88, 0xAE, 0x5A};
    load.when = when("20111221", "214822");
    const auto answer = hsm::card_level::answer_load(dlk, load);
    CHECK(answer.mac1 == Verdict::valid);
    CHECK(coconut::to_hex(answer.mac2) == "3A845BF0");
    load.mac1[3] ^= 0x01;
    const auto refused = hsm::card_level::answer_load(dlk, load);
    CHECK(refused.mac1 == Verdict::invalid);
    CHECK(coconut::to_hex(refused.mac2) == "00000000");
}

TEST_CASE("vector 3: a purchase TAC over the worked example verifies, and one changed field does not") {
    const crypto::Key16 dtk = key16("11223344556677888877665544332211");
    hsm::PurchaseTac t;
    t.amount_fen = 0x1000;
    t.type = crypto::type_ep_purchase;
    t.terminal_id = hsm::parse_terminal_id("001122334455").value();
    t.terminal_serial = 1;
    t.when = when("20120229", "135100");
    // TAC computed independently: DES-MAC under DTK_L xor DTK_R over amount ‖ type ‖ terminal ‖ serial ‖ date ‖ time.
    const Bytes data = hex("00001000 06 001122334455 00000001 20120229 135100");
    t.tac = independent_des_mac(tac_key_bytes(dtk), data);
    CHECK(hsm::card_level::check_purchase_tac(dtk, t) == Verdict::valid);
    SUBCASE("amount changed") { t.amount_fen += 1; }
    SUBCASE("serial changed") { t.terminal_serial = 2; }
    SUBCASE("type changed") { t.type = crypto::type_capp_purchase; }
    SUBCASE("TAC bit flipped") { t.tac[0] ^= 0x80; }
    CHECK(hsm::card_level::check_purchase_tac(dtk, t) == Verdict::invalid);
}

TEST_CASE("vector 4: the real card's MAC1 06B1BEF5 is valid, MAC2 is 0641DCD8, and its load TAC ED0F8755 verifies") {
    const crypto::Key16 dlk = key16("374598B5C0B0EAE1E1D06609AC5BB369");
    const crypto::Key16 dtk = key16("CAA6025290114BFCC3C9043F70F7A07A");
    const auto answer = hsm::card_level::answer_load(dlk, vector4_load());
    CHECK(answer.mac1 == Verdict::valid);
    CHECK(coconut::to_hex(answer.mac2) == "0641DCD8");

    hsm::LoadTac tac;
    tac.new_balance_fen = 0x1C37;
    tac.online_atc_before = 0;
    tac.amount_fen = 0x1C37;
    tac.type = crypto::type_ep_load;
    tac.terminal_id = hsm::parse_terminal_id("000001000050").value();
    tac.when = when("20140825", "103100");
    tac.tac = {0xED, 0x0F, 0x87, 0x55};
    CHECK(hsm::card_level::check_load_tac(dtk, tac) == Verdict::valid);
    tac.new_balance_fen = 0x1C38;  // a card claiming one fen more
    CHECK(hsm::card_level::check_load_tac(dtk, tac) == Verdict::invalid);
}

TEST_CASE("a TAC batch answers each transaction: valid, invalid, key unavailable, malformed") {
    Loaded h(true);  // mk-tac:1 retired
    const crypto::Key16 v2 = key16(tac_master_v2_hex);
    const hsm::CardIdentity bob = card("4600000000000002", "46000000000000000042");
    std::vector<hsm::PurchaseTac> batch;
    batch.push_back(signed_purchase(v2, 2, alice, 150, 1));  // 0 valid
    batch.push_back(signed_purchase(v2, 0, bob, 200, 2));    // 1 valid (newest = 2)
    batch.push_back(signed_purchase(v2, 2, alice, 150, 3));  // 2 tampered below
    batch[2].amount_fen = 15000;
    batch.push_back(signed_purchase(key16(tac_master_hex), 1, alice, 150, 4));  // 3 retired version
    batch.push_back(signed_purchase(v2, 9, alice, 150, 5));                     // 4 unknown version
    batch.push_back(signed_purchase(v2, 2, alice, 150, 6));                     // 5 wrong type
    batch[5].type = crypto::type_ep_load;
    batch.push_back(signed_purchase(v2, 2, alice, 150, 7));  // 6 signed for another card
    batch[6].card = bob;
    hsm::Usage usage;
    auto verdicts = h.hsm->verify_purchase_tacs("mk-tac", batch, &usage);
    REQUIRE(verdicts.ok());
    const std::vector<Verdict> expected = {Verdict::valid,           Verdict::valid,     Verdict::invalid, Verdict::key_unavailable,
                                           Verdict::key_unavailable, Verdict::malformed, Verdict::invalid};
    CHECK(verdicts.value() == expected);
    CHECK(usage.key_label == "mk-tac");
    CHECK(usage.key_versions == std::vector<std::uint8_t>{2});
    CHECK(usage.result == "valid=2 invalid=2 key_unavailable=2 malformed=1");
}

TEST_CASE("a TAC batch refuses more than 1024 items, an unknown label and a non-TAC key") {
    Loaded h;
    std::vector<hsm::PurchaseTac> batch(hsm::max_batch_items, signed_purchase(key16(tac_master_v2_hex), 2, alice, 1, 1));
    auto full = h.hsm->verify_purchase_tacs("mk-tac", batch);
    REQUIRE(full.ok());
    CHECK(std::count(full->begin(), full->end(), Verdict::valid) == static_cast<long>(hsm::max_batch_items));
    batch.push_back(batch.front());
    CHECK(h.hsm->verify_purchase_tacs("mk-tac", batch).error().code == Errc::batch_too_large);
    batch.resize(1);
    CHECK(h.hsm->verify_purchase_tacs("mk-nothing", batch).error().code == Errc::key_not_found);
    CHECK(h.hsm->verify_purchase_tacs("mk-load", batch).error().code == Errc::wrong_key_usage);
}

TEST_CASE("load service: MAC2 equals the card's expectation for keys derived from the masters") {
    Loaded h;
    const crypto::Key16 dlk = independent_card_key(key16(load_master_hex), alice);
    hsm::LoadRequest load = vector4_load();
    load.key = {"mk-load", 1};
    load.card = alice;
    // The card's side, independently: SESLK = 3DES(DLK, random ‖ ATC ‖ 8000); MAC1 / MAC2 with DES-MAC.
    const Bytes session = tdes_block(dlk, hex("CDEF4F20 0000 8000"));
    load.mac1 = independent_des_mac(session, hex("00000000 00001C37 02 000001000050"));
    const crypto::Mac4 card_expects = independent_des_mac(session, hex("00001C37 02 000001000050 20140825 103100"));
    hsm::Usage usage;
    auto answer = h.hsm->load_mac2(load, &usage);
    REQUIRE(answer.ok());
    CHECK(answer->mac1 == Verdict::valid);
    CHECK(answer->mac2 == card_expects);
    CHECK(answer->key_version == 1);
    CHECK(usage.result == "mac1 valid, mac2 issued");
    load.mac1[0] ^= 1;
    auto refused = h.hsm->load_mac2(load);
    REQUIRE(refused.ok());
    CHECK(refused->mac1 == Verdict::invalid);
    load.amount_fen = 0;
    CHECK(h.hsm->load_mac2(load).error().code == Errc::bad_request);
    load.amount_fen = 1;
    load.type = crypto::type_ep_purchase;
    CHECK(h.hsm->load_mac2(load).error().code == Errc::bad_request);
}

TEST_CASE("load TAC service verifies under the card's derived DTK") {
    Loaded h;
    hsm::LoadTac tac;
    tac.key = {"mk-tac", 2};
    tac.card = alice;
    tac.new_balance_fen = 5000;
    tac.online_atc_before = 7;
    tac.amount_fen = 3000;
    tac.type = crypto::type_ep_load;
    tac.terminal_id = hsm::parse_terminal_id("000001000050").value();
    tac.when = when("20261126", "093000");
    const crypto::Key16 dtk = independent_card_key(key16(tac_master_v2_hex), alice);
    tac.tac = independent_des_mac(tac_key_bytes(dtk), hex("00001388 0007 00000BB8 02 000001000050 20261126 093000"));
    CHECK(h.hsm->verify_load_tac(tac).value() == Verdict::valid);
    tac.online_atc_before = 8;
    CHECK(h.hsm->verify_load_tac(tac).value() == Verdict::invalid);
    tac.when.time[0] = 0x25;  // hour 25
    CHECK(h.hsm->verify_load_tac(tac).error().code == Errc::bad_request);
}

TEST_CASE("INTERNAL AUTHENTICATE: the cryptogram 3DES(IAK, challenge) verifies, anything else does not") {
    Loaded h;
    hsm::InternalAuth auth;
    auth.key = {"mk-internal-auth", 1};
    auth.card = alice;
    auth.challenge = {1, 2, 3, 4, 5, 6, 7, 8};
    const Bytes cryptogram = tdes_block(independent_card_key(key16(auth_master_hex), alice), auth.challenge);
    std::copy(cryptogram.begin(), cryptogram.end(), auth.cryptogram.begin());
    CHECK(h.hsm->verify_internal_auth(auth).value() == Verdict::valid);
    auth.challenge[7] = 9;
    CHECK(h.hsm->verify_internal_auth(auth).value() == Verdict::invalid);
    auth.key = {"mk-tac", 2};
    CHECK(h.hsm->verify_internal_auth(auth).error().code == Errc::wrong_key_usage);
}

TEST_CASE("INTERNAL AUTHENTICATE under an ssse-auth master: the SSSE key's cryptogram verifies, the purse IAK's does not") {
    Loaded h;
    hsm::InternalAuth auth;
    auth.key = {"mk-ssse-auth", 1};
    auth.card = alice;
    auth.challenge = {1, 2, 3, 4, 5, 6, 7, 8};
    const Bytes ssse = tdes_block(independent_card_key(key16(ssse_auth_master_hex), alice), auth.challenge);
    const Bytes purse = tdes_block(independent_card_key(key16(auth_master_hex), alice), auth.challenge);
    REQUIRE(ssse != purse);
    std::copy(ssse.begin(), ssse.end(), auth.cryptogram.begin());
    hsm::Usage used;
    CHECK(h.hsm->verify_internal_auth(auth, &used).value() == Verdict::valid);
    CHECK(used.key_label == "mk-ssse-auth");
    // The purse application's answer (no PIN behind it) is not a proof under the SSSE master.
    std::copy(purse.begin(), purse.end(), auth.cryptogram.begin());
    CHECK(h.hsm->verify_internal_auth(auth).value() == Verdict::invalid);
    // And the other way round: the SSSE answer is no purse proof.
    auth.key = {"mk-internal-auth", 1};
    std::copy(ssse.begin(), ssse.end(), auth.cryptogram.begin());
    CHECK(h.hsm->verify_internal_auth(auth).value() == Verdict::invalid);
    // Keys of unrelated usages stay refused.
    for (const char* label : {"mk-purchase", "mk-load", "mk-maintenance", "kek-issuance"}) {
        CAPTURE(label);
        auth.key = {label, 1};
        const auto refused = h.hsm->verify_internal_auth(auth);
        REQUIRE_FALSE(refused.ok());
        CHECK(refused.error().code == Errc::wrong_key_usage);
    }
}

TEST_CASE("input parsers reject malformed card fields with the field named") {
    CHECK(hsm::parse_asn("4600000000123456789").error().message.find("ASN must be 20") != std::string::npos);
    CHECK(hsm::parse_asn("4600000000123456789X").error().message.find("non-digit") != std::string::npos);
    CHECK_FALSE(hsm::parse_issuer_id("46000000000000").ok());
    CHECK_FALSE(hsm::parse_terminal_id("00112233445").ok());
    CHECK_FALSE(hsm::parse_card_date_time("20261326", "101500").ok());  // month 13
    CHECK_FALSE(hsm::parse_card_date_time("20261126", "106000").ok());  // minute 60
    CHECK(hsm::parse_card_date_time("20261126", "235959").ok());
    CHECK(hsm::parse_key_ref("mk-tac:2")->version == 2);
    CHECK(hsm::parse_key_ref("mk-tac")->version == hsm::newest_version);
    CHECK_FALSE(hsm::parse_key_ref("mk-tac:256").has_value());
    CHECK_FALSE(hsm::parse_key_ref("MK:1").has_value());
}
