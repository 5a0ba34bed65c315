// Messages of the online flows (ISO8583.md §4) as a card and a terminal build them, for the engine's tests:
// loads (MAC1, TAC from the card keys the scheme's masters diversify to, docs/CARD-SPEC.md §4), clinic
// authorizations over the host's challenge, completions and reversals.
#pragma once

#include "clearing_fixture.hpp"

#include <thread>

namespace clearing_test {

inline crypto::Key16 card_key(const std::string& master_hex, const std::string& asn) {
    crypto::Block issuer{};
    const Bytes issuer_bytes = hex(issuer_hex);
    std::copy(issuer_bytes.begin(), issuer_bytes.end(), issuer.begin());
    const Asn card = asn_of(asn);
    return crypto::diversify_card_key(crypto::Key16(hex(master_hex)), issuer, crypto::card_factor_from_asn(card));
}

template <std::size_t N>
inline std::array<std::uint8_t, N> bcd(const std::string& digits) {
    std::array<std::uint8_t, N> out{};
    const Bytes b = *digits_to_bcd(digits);
    std::copy(b.begin(), b.end(), out.begin());
    return out;
}

// One online load as the card and the terminal see it.
struct Load {
    std::string asn = card_a;
    std::uint32_t amount_fen = 3000;
    std::uint32_t old_balance_fen = 5000;
    std::uint16_t atc = 7;
    std::array<std::uint8_t, 4> random{0x11, 0x22, 0x33, 0x44};
    std::string terminal = psam_terminal;
    std::string date = "20261126";
    std::string time = "103000";
    bool forge_mac1 = false;
    bool forge_tac = false;
    std::string processing = "210000";                    // 200000: a refund credit (ISO8583.md §4.10)
    std::optional<iso8583::PurchaseReference> refund_of;  // DF13 of a refund credit's 0200

    crypto::CardDateTime when() const {
        crypto::CardDateTime w;
        w.date = bcd<4>(date);
        w.time = bcd<3>(time);
        return w;
    }
    crypto::Key8 session() const { return crypto::load_session_key(card_key(load_master_hex, asn), random, atc); }
    crypto::Mac4 mac2() const {
        return crypto::des_mac(session(), crypto::load_mac2_input(amount_fen, crypto::type_ep_load, bcd<6>(terminal), when()));
    }
    crypto::Mac4 tac() const {
        crypto::Mac4 t = crypto::des_mac(crypto::tac_key(card_key(tac_master_hex, asn)),
                                         crypto::load_tac_input(old_balance_fen + amount_fen, atc, amount_fen, crypto::type_ep_load,
                                                                bcd<6>(terminal), when()));
        if (forge_tac) t[3] ^= 0x01;
        return t;
    }
};

inline Message online_message(const std::string& mti, const std::string& processing, std::uint64_t amount_fen, std::uint32_t stan,
                              const std::string& pan, const std::string& terminal_id, std::uint32_t batch = 1) {
    Message m(mti);
    m.set(2, pan.substr(4));
    m.set(3, processing);
    m.set_number(4, amount_fen, 12);
    m.set(7, "1126023000");
    m.set_number(11, stan, 6);
    m.set(41, terminal_id);
    m.set_number(60, batch, 6);
    return m;
}

// The card data a load's 0200 and 0220 share (DF01–DF04, DF06, DF07).
template <class Data>
inline Data load_data(const Load& load) {
    Data d;
    d.asn = asn_of(load.asn);
    d.old_balance_fen = load.old_balance_fen;
    d.online_atc = load.atc;
    d.terminal_id = bcd<6>(load.terminal);
    d.when = load.when();
    return d;
}

inline Message load_request(const Load& load, std::uint32_t stan, const std::string& terminal_id = "BUS00001") {
    Message m = online_message("0200", load.processing, load.amount_fen, stan, load.asn, terminal_id);
    auto d = load_data<iso8583::LoadRequestData>(load);
    d.card_random = load.random;
    d.refund_of = load.refund_of;
    d.mac1 = crypto::des_mac(load.session(),
                             crypto::load_mac1_input(load.old_balance_fen, load.amount_fen, crypto::type_ep_load, d.terminal_id));
    if (load.forge_mac1) d.mac1[0] ^= 0x80;
    m.set(62, iso8583::encode_load_request(d));
    return m;
}

inline Message load_confirmation(const Load& load, std::uint32_t stan, const std::string& terminal_id = "BUS00001") {
    Message m = online_message("0220", load.processing, load.amount_fen, stan, load.asn, terminal_id);
    auto d = load_data<iso8583::LoadConfirmationData>(load);
    d.tac = load.tac();
    m.set(62, iso8583::encode_load_confirmation(d));
    return m;
}

inline std::string original(const std::string& mti, std::uint32_t stan) {
    return mti + *iso8583::digits(stan, 6) + "1126023000" + std::string(22, '0');
}

inline Message load_reversal(const Load& load, std::uint32_t stan, const std::string& mti = "0400",
                             const std::string& terminal_id = "BUS00001") {
    Message m = online_message(mti, load.processing, load.amount_fen, stan, load.asn, terminal_id);
    m.set(62, iso8583::encode_load_reference({asn_of(load.asn), load.atc}));
    m.set(90, original("0200", stan));
    return m;
}

// A challenge from the host (0800 70 = 201) for the card at the terminal; zeros when the host refuses one
// (the 0100 then shows what the host answers without a valid challenge).
inline iso8583::HostChallenge challenge_for(Rig& rig, const std::string& asn, const std::string& terminal_id, std::uint32_t stan) {
    Message m = network_message(201, stan, terminal_id);
    m.set(2, asn.substr(4));
    m.set(62, iso8583::encode_challenge_request({asn_of(asn)}));
    const Message answer = rig.send(m);
    if (answer.get(39) != "00") return {};
    auto data = iso8583::parse_challenge_answer(answer.get(62).value_or(""));
    REQUIRE(data.ok());
    return data->challenge;
}

// Which card key answers INTERNAL AUTHENTICATE: the SSSE application's (after VERIFY PIN) or the purse's
// (no PIN), as a card does for each application.
enum class ProofKey { ssse, purse };

// A 0100 carrying `challenge` and the card's INTERNAL AUTHENTICATE answer over the §4.4 proof input.
inline Message clinic_authorization_over(const iso8583::HostChallenge& challenge, std::uint64_t amount_fen, std::uint32_t stan,
                                         const std::string& asn, const std::string& terminal_id, bool forge = false,
                                         ProofKey key = ProofKey::ssse, const char* processing_code = "003000") {
    Message m = online_message("0100", processing_code, amount_fen, stan, asn, terminal_id);
    m.set(42, "HKCLINIC0000001");
    iso8583::ClinicAuthorizationData d;
    d.asn = asn_of(asn);
    d.challenge = challenge;
    const auto input = iso8583::clinic_proof_input(challenge, {*m.get(41), *m.get(11), *m.get(7), *m.get(4), *m.get(60)}, d.asn);
    const std::string& master = key == ProofKey::ssse ? ssse_auth_master_hex : internal_auth_master_hex;
    const Bytes cryptogram = crypto::tdes_ecb_encrypt(card_key(master, asn), input);
    std::copy(cryptogram.begin(), cryptogram.end(), d.cryptogram.begin());
    if (forge) d.cryptogram[7] ^= 0x01;
    m.set(62, iso8583::encode_clinic_authorization(d));
    return m;
}

// A clinic authorization over a fresh challenge.
inline Message clinic_authorization(Rig& rig, std::uint64_t amount_fen, std::uint32_t stan, const std::string& asn = card_a,
                                    const std::string& terminal_id = "CLINIC01", bool forge = false, ProofKey key = ProofKey::ssse) {
    return clinic_authorization_over(challenge_for(rig, asn, terminal_id, stan), amount_fen, stan, asn, terminal_id, forge, key);
}

inline Message clinic_completion(std::uint64_t amount_fen, std::uint32_t stan, std::uint32_t authorization_stan,
                                 const std::string& asn = card_a) {
    Message m = online_message("0220", "003000", amount_fen, stan, asn, "CLINIC01");
    m.set(90, original("0100", authorization_stan));
    return m;
}

inline Message clinic_reversal(std::uint64_t amount_fen, std::uint32_t stan, std::uint32_t authorization_stan,
                               const std::string& mti = "0400") {
    Message m = online_message(mti, "003000", amount_fen, stan, card_a, "CLINIC01");
    m.set(90, original("0100", authorization_stan));
    return m;
}

// The 0200 refunding the completed hold of CLINIC01's 0100 (batch 1, STAN `hold_stan`) to the medical account
// (ISO8583.md §4.10).
inline Message medical_refund(std::uint64_t amount_fen, std::uint32_t stan, std::uint32_t hold_stan, const std::string& asn = card_a,
                              const std::string& terminal_id = "CLINIC01") {
    Message m = online_message("0200", "200030", amount_fen, stan, asn, terminal_id);
    iso8583::MedicalRefundData d;
    d.asn = asn_of(asn);
    d.visit = iso8583::VisitReference{1, hold_stan};
    const std::string hold_terminal = "CLINIC01";
    std::copy(hold_terminal.begin(), hold_terminal.end(), d.hold_terminal_id41.begin());
    m.set(62, iso8583::encode_medical_refund(d));
    return m;
}

// DF13 of a refund naming the purchase `tap`: its PSAM terminal id and serial.
inline iso8583::PurchaseReference reference_of(const Tap& tap) {
    const PurseTransaction t = purse_transaction(tap);
    return iso8583::PurchaseReference{t.terminal_id, t.terminal_serial};
}

inline ledger::Id load_id(const Load& load, std::uint8_t attempt = 0) { return online_load_transfer(asn_of(load.asn), load.atc, attempt); }
inline ledger::Id hold_id(std::uint32_t stan) { return clinic_hold_transfer("CLINIC01", 1, stan); }

// Waits (bounded) until the writer's expiry sweep has released `id`.
inline void wait_expired(Rig& rig, const ledger::Id& id) {
    for (int i = 0; i < 500 && rig.state(id) != ledger::PendingState::expired; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    REQUIRE(rig.state(id) == ledger::PendingState::expired);
}

}  // namespace clearing_test
