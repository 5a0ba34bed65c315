// Round trips with the emulated card OS (coconut::cos): the HSM's answers are what real cards expect.
//   - a load completes on a card personalized from the scheme's master keys, using the HSM's MAC2, and
//     the card's load TAC verifies at the HSM;
//   - keys exported by derive-card-keys (decrypted with the transport key, as the personalization
//     machine does) make a card that accepts the HSM's MAC2;
//   - a PSAM personalized with the HSM's exported issuer key performs a purchase whose TAC the HSM verifies.
#include "support.hpp"

#include <coconut/cos/card.hpp>

#include <nlohmann/json.hpp>

using namespace hsm_test;
using coconut::cos::VirtualCard;
using hsm::Verdict;

namespace {

constexpr std::string_view issuer_hex = "4600000000000001";
constexpr std::string_view asn_digits = "46000000001234567890";
constexpr std::string_view load_terminal = "001122334455";
constexpr std::string_view psam_terminal = "460100000001";

struct Rsp {
    Bytes data;
    std::uint16_t sw = 0;
};

Rsp send(VirtualCard& card, ByteView command) {
    const Bytes raw = card.transmit(command);
    REQUIRE(raw.size() >= 2);
    return Rsp{Bytes(raw.begin(), raw.end() - 2), static_cast<std::uint16_t>((raw[raw.size() - 2] << 8) | raw.back())};
}

std::unique_ptr<VirtualCard> make_card(const nlohmann::json& profile) {
    auto payload = coconut::cos::personalize(profile);
    REQUIRE_MESSAGE(payload.ok(), (payload.ok() ? std::string() : payload.error()));
    auto card = VirtualCard::in_memory(payload.value());
    REQUIRE_MESSAGE(card.ok(), (card.ok() ? std::string() : card.error().message));
    return std::move(card).value();
}

nlohmann::json card_profile(nlohmann::json keys, bool master_level) {
    return {{"kind", "card"},
            {"asn", std::string(asn_digits)},
            {"issuer_id", std::string(issuer_hex)},
            {"balance_fen", 10000},
            {"pin", "123456"},
            {"seed", "00112233445566778899AABBCCDDEEFF"},
            {master_level ? "master_keys" : "keys", std::move(keys)},
            {"key_version", 1}};
}

nlohmann::json master_keys() {
    return {{"dpk", purchase_master_hex}, {"dlk", load_master_hex},         {"dtk", tac_master_hex},
            {"iak", auth_master_hex},     {"damk", maintenance_master_hex}, {"ssse_iak", ssse_auth_master_hex}};
}

std::unique_ptr<hsm::Hsm> hsm_over(const TempDir& dir) {
    make_store(dir.path());
    auto store = hsm::KeyStore::open(dir / "store");
    REQUIRE(store.ok());
    return std::make_unique<hsm::Hsm>(std::make_shared<const hsm::KeyStore>(std::move(store.value())));
}

void select(VirtualCard& card, std::string_view select_hex) {
    const Rsp r = send(card, hex(select_hex));
    REQUIRE(r.sw == 0x9000);
}

struct LoadOutcome {
    Rsp credit;
    hsm::LoadAnswer answer;
    std::uint32_t old_balance = 0;
    std::uint16_t online_atc = 0;
};

// INITIALIZE FOR LOAD on the card → the HSM checks MAC1 and issues MAC2 → CREDIT FOR LOAD with
// `credit_when` (the date/time the HSM was told is `hsm_when`).
LoadOutcome load(VirtualCard& card, const hsm::Hsm& service, std::uint32_t amount, const crypto::CardDateTime& hsm_when,
                 const crypto::CardDateTime& credit_when) {
    select(card, "00A4040008A00000063201010500");
    const Rsp init = send(card, coconut::concat(hex("805000020B01"), coconut::be_bytes(amount, 4), hex(load_terminal), hex("10")));
    REQUIRE(init.sw == 0x9000);
    REQUIRE(init.data.size() == 16);
    hsm::LoadRequest request;
    request.key = {"mk-load", init.data[6]};  // the card's key version selects the master version
    request.card = hsm_test::card(issuer_hex, asn_digits);
    request.old_balance_fen = coconut::read_be32(init.data);
    request.amount_fen = amount;
    request.type = crypto::type_ep_load;
    request.terminal_id = hsm::parse_terminal_id(load_terminal).value();
    request.online_atc = coconut::read_be16(ByteView(init.data).subspan(4));
    std::copy_n(init.data.begin() + 8, 4, request.card_random.begin());
    std::copy_n(init.data.begin() + 12, 4, request.mac1.begin());
    request.when = hsm_when;
    auto answer = service.load_mac2(request);
    REQUIRE(answer.ok());
    LoadOutcome out;
    out.answer = answer.value();
    out.old_balance = request.old_balance_fen;
    out.online_atc = request.online_atc;
    out.credit = send(card, coconut::concat(hex("805200000B"), credit_when.date, credit_when.time, out.answer.mac2, hex("04")));
    return out;
}

}  // namespace

TEST_CASE("a load completes on an emulated card using the HSM's MAC2, and the card's load TAC verifies at the HSM") {
    TempDir dir;
    auto service = hsm_over(dir);
    auto card = make_card(card_profile(master_keys(), true));
    const auto at = when("20261126", "103100");
    const LoadOutcome done = load(*card, *service, 5000, at, at);
    CHECK(done.answer.mac1 == Verdict::valid);
    REQUIRE(done.credit.sw == 0x9000);
    REQUIRE(done.credit.data.size() == 4);
    CHECK(card->snapshot().balance_fen == 15000);
    CHECK(card->snapshot().online_atc == 1);

    hsm::LoadTac tac;
    tac.key = {"mk-tac", 1};
    tac.card = hsm_test::card(issuer_hex, asn_digits);
    tac.new_balance_fen = 15000;
    tac.online_atc_before = done.online_atc;
    tac.amount_fen = 5000;
    tac.type = crypto::type_ep_load;
    tac.terminal_id = hsm::parse_terminal_id(load_terminal).value();
    tac.when = at;
    std::copy_n(done.credit.data.begin(), 4, tac.tac.begin());
    CHECK(service->verify_load_tac(tac).value() == Verdict::valid);
    tac.new_balance_fen = 15001;
    CHECK(service->verify_load_tac(tac).value() == Verdict::invalid);
}

TEST_CASE("a MAC2 the HSM computed for another date/time is refused by the card (9302) and nothing changes") {
    TempDir dir;
    auto service = hsm_over(dir);
    auto card = make_card(card_profile(master_keys(), true));
    const LoadOutcome refused = load(*card, *service, 5000, when("20261126", "103100"), when("20261126", "103101"));
    CHECK(refused.answer.mac1 == Verdict::valid);
    CHECK(refused.credit.sw == 0x9302);
    CHECK(card->snapshot().balance_fen == 10000);
    CHECK(card->snapshot().online_atc == 0);
}

TEST_CASE("keys from derive-card-keys, decrypted with the transport key, personalize a card that accepts the HSM's MAC2") {
    TempDir dir;
    auto service = hsm_over(dir);
    const std::vector<hsm::KeyRef> masters = {{"mk-purchase", 1},      {"mk-load", 1},        {"mk-tac", 1},
                                              {"mk-internal-auth", 1}, {"mk-maintenance", 1}, {"mk-ssse-auth", 1}};
    auto set = service->derive_card_keys(hsm_test::card(issuer_hex, asn_digits), {"kek-issuance", 1}, masters);
    REQUIRE(set.ok());
    nlohmann::json keys;
    const char* names[] = {"dpk", "dlk", "dtk", "iak", "damk", "ssse_iak"};
    for (std::size_t i = 0; i < 6; ++i) {
        const Bytes clear = crypto::tdes_ecb_decrypt(key16(transport_hex), set->keys[i].encrypted);
        CHECK(crypto::kcv(crypto::Key16(clear)) == set->keys[i].kcv);  // the personalizer's KCV check
        keys[names[i]] = coconut::to_hex(clear);
    }
    auto card = make_card(card_profile(keys, false));
    const auto at = when("20261126", "110000");
    const LoadOutcome done = load(*card, *service, 2500, at, at);
    REQUIRE(done.credit.sw == 0x9000);
    CHECK(card->snapshot().balance_fen == 12500);
}

TEST_CASE("the SSSE application's INTERNAL AUTHENTICATE verifies under mk-ssse-auth; the purse's (no PIN) does not") {
    TempDir dir;
    auto service = hsm_over(dir);
    auto card = make_card(card_profile(master_keys(), true));
    hsm::InternalAuth auth;
    auth.card = hsm_test::card(issuer_hex, asn_digits);
    auth.challenge = {0xC1, 0x1E, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05};
    const Bytes command = coconut::concat(hex("0088000108"), auth.challenge, hex("08"));
    const auto verdict = [&](std::string_view label, const Bytes& cryptogram) {
        REQUIRE(cryptogram.size() == 8);
        auth.key = {std::string(label), 0};
        std::copy(cryptogram.begin(), cryptogram.end(), auth.cryptogram.begin());
        return service->verify_internal_auth(auth).value();
    };

    select(*card, "00A4040008A00000063201010500");
    const Rsp purse = send(*card, command);
    REQUIRE(purse.sw == 0x9000);
    CHECK(verdict("mk-internal-auth", purse.data) == Verdict::valid);
    CHECK(verdict("mk-ssse-auth", purse.data) == Verdict::invalid);

    select(*card, "00A404000F7378312E73682EC9E7BBE1B1A3D5CF00");
    CHECK(send(*card, command).sw == 0x6982);  // no PIN, no proof
    REQUIRE(send(*card, hex("0020000003123456")).sw == 0x9000);
    const Rsp ssse = send(*card, command);
    REQUIRE(ssse.sw == 0x9000);
    CHECK(verdict("mk-ssse-auth", ssse.data) == Verdict::valid);
    CHECK(verdict("mk-internal-auth", ssse.data) == Verdict::invalid);
}

TEST_CASE("a PSAM holding the HSM's exported issuer key completes a purchase whose TAC the HSM verifies") {
    TempDir dir;
    auto service = hsm_over(dir);
    const auto identity = hsm_test::card(issuer_hex, asn_digits);
    auto exported = service->export_issuer_key(identity.issuer_id, {"mk-purchase", 1}, {"kek-issuance", 1});
    REQUIRE(exported.ok());
    const Bytes issuer_key = crypto::tdes_ecb_decrypt(key16(transport_hex), exported->encrypted);
    auto psam = make_card({{"kind", "psam"},
                           {"terminal_id", std::string(psam_terminal)},
                           {"purchase_key", coconut::to_hex(issuer_key)},
                           {"key_level", "issuer"},
                           {"issuer_id", std::string(issuer_hex)},
                           {"key_index", 1},
                           {"key_version", 1},
                           {"terminal_serial", 1}});
    auto purse = make_card(card_profile(master_keys(), true));
    const auto at = when("20261126", "081500");
    const std::uint32_t amount = 200;

    select(*purse, "00A4040008A00000063201010500");
    const Rsp init = send(*purse, coconut::concat(hex("805001020B01"), coconut::be_bytes(amount, 4), hex(psam_terminal), hex("0F")));
    REQUIRE(init.sw == 0x9000);
    REQUIRE(init.data.size() == 15);
    // 80 70: random ‖ offline ATC ‖ amount ‖ type ‖ date-time ‖ key version ‖ alg ‖ card factor ‖ issuer factor.
    select(*psam, "00A4040010A0000006324D4F542E435053414D303100");
    const Bytes sam_data = coconut::concat(ByteView(init.data).subspan(11, 4), ByteView(init.data).subspan(4, 2),
                                           coconut::be_bytes(amount, 4), Bytes{crypto::type_ep_purchase}, at.date, at.time,
                                           ByteView(init.data).subspan(9, 2), ByteView(identity.asn).subspan(2, 8), identity.issuer_id);
    const Rsp sam = send(*psam, coconut::concat(hex("80700000"), Bytes{static_cast<std::uint8_t>(sam_data.size())}, sam_data, hex("08")));
    REQUIRE(sam.sw == 0x9000);
    REQUIRE(sam.data.size() == 8);
    const Rsp debit = send(*purse, coconut::concat(hex("805401000F"), ByteView(sam.data).first(4), at.date, at.time,
                                                   ByteView(sam.data).subspan(4, 4), hex("08")));
    REQUIRE(debit.sw == 0x9000);
    REQUIRE(debit.data.size() == 8);
    CHECK(send(*psam, coconut::concat(hex("8072000004"), ByteView(debit.data).subspan(4, 4))).sw == 0x9000);
    CHECK(purse->snapshot().balance_fen == 10000 - amount);

    // Clearing: the transaction record goes to the HSM with the card's TAC.
    hsm::PurchaseTac record;
    record.key_version = 1;
    record.card = identity;
    record.amount_fen = amount;
    record.type = crypto::type_ep_purchase;
    record.terminal_id = hsm::parse_terminal_id(psam_terminal).value();
    record.terminal_serial = coconut::read_be32(sam.data);
    record.when = at;
    std::copy_n(debit.data.begin(), 4, record.tac.begin());
    hsm::PurchaseTac forged = record;
    forged.amount_fen = 20;  // a terminal claiming a different amount
    const std::vector<hsm::PurchaseTac> batch = {record, forged};
    auto verdicts = service->verify_purchase_tacs("mk-tac", batch);
    REQUIRE(verdicts.ok());
    CHECK(verdicts.value() == std::vector<Verdict>{Verdict::valid, Verdict::invalid});
}

TEST_CASE("a card personalized from the master keys accepts the HSM's APPLICATION BLOCK MAC, and not another card's") {
    TempDir dir;
    auto service = hsm_over(dir);
    auto card = make_card(card_profile(master_keys(), true));
    const hsm::CardIdentity identity{hsm::parse_issuer_id(issuer_hex).value(), hsm::parse_asn(asn_digits).value()};
    const auto block_with = [&](const hsm::CardIdentity& who, bool permanent) {
        const Rsp challenge = send(*card, hex("0084000004"));
        REQUIRE(challenge.sw == 0x9000);
        hsm::MaintenanceMacRequest request{{"mk-maintenance", 0}, who, {}, crypto::application_block_header(permanent)};
        std::copy(challenge.data.begin(), challenge.data.end(), request.challenge.begin());
        auto mac = service->maintenance_mac(request);
        REQUIRE(mac.ok());
        const auto header = crypto::application_block_header(permanent);
        return send(*card, coconut::concat(ByteView(header), ByteView(mac->mac))).sw;
    };
    select(*card, "00A4040008A000000632010105");
    const hsm::CardIdentity other{identity.issuer_id, hsm::parse_asn("46000000001234567899").value()};
    CHECK(block_with(other, true) == 0x6988);
    CHECK(card->snapshot().application_block == 0);
    CHECK(block_with(identity, true) == 0x9000);
    CHECK(card->snapshot().application_block == 2);
    CHECK(send(*card, hex("00A4040008A000000632010105")).sw == 0x6283);
}
