// Shared helpers of the card OS tests (test_cos_*.cpp, cos_power_cut.cpp).
//
// These tests are written from docs/CARD-SPEC.md and card-os-apdu/README.md, independently of the
// card OS implementation: every expected MAC, TAC and record is recomputed here from the spec with the
// card crypto helpers (coconut::crypto), never read back from the card.
#pragma once

#include <coconut/core/bytes.hpp>
#include <coconut/cos/card.hpp>
#include <coconut/cos/image.hpp>
#include <coconut/cos/layout.hpp>
#include <coconut/crypto/card_crypto.hpp>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

namespace cos_test {

using namespace coconut;
using coconut::cos::VirtualCard;
using coconut::crypto::CardDateTime;
using coconut::crypto::Key16;
using coconut::crypto::Key8;
using nlohmann::json;

// ---- the test card's personalization ---------------------------------------------------------
// Distinct keys per role so a card that uses the wrong key for a MAC fails.
inline constexpr std::string_view test_dpk = "11223344556677888877665544332211";  // docs/CARD-SPEC.md §4 vector 3
inline constexpr std::string_view test_dlk = "374598B5C0B0EAE1E1D06609AC5BB369";  // docs/CARD-SPEC.md §4 vector 4
inline constexpr std::string_view test_dtk = "CAA6025290114BFCC3C9043F70F7A07A";  // docs/CARD-SPEC.md §4 vector 4
inline constexpr std::string_view test_iak = "404142434445464748494A4B4C4D4E4F";
inline constexpr std::string_view test_damk = "505152535455565758595A5B5C5D5E5F";
inline constexpr std::string_view test_ssse_iak = "606162636465666768696A6B6C6D6E6F";  // the SSSE application's own
inline constexpr std::string_view test_asn = "03100000000000012345";
inline constexpr std::string_view test_issuer_id = "0460000000000001";
inline constexpr std::string_view test_pin = "123456";
inline constexpr std::uint32_t test_balance_fen = 10000;
inline constexpr std::uint32_t test_max_balance_fen = 100000;
inline constexpr std::string_view test_terminal = "001122334455";  // 6 bytes BCD in INITIALIZE

inline Key16 key16(std::string_view h) { return Key16(hex(h)); }
inline std::string hx(ByteView b) { return to_hex(b); }

inline json card_profile() {
    return json{
        {"kind", "card"},
        {"asn", std::string(test_asn)},
        {"issuer_id", std::string(test_issuer_id)},
        {"balance_fen", test_balance_fen},
        {"max_balance_fen", test_max_balance_fen},
        {"pin", std::string(test_pin)},
        {"pin_tries", 3},
        {"protocol", "T=1"},
        {"seed", "00112233445566778899AABBCCDDEEFF"},
        {"cardholder",
         {{"name", "ZHANG SAN"},
          {"id_number", "460100199001011234"},
          {"ssn", "460100199001011234"},
          {"sex", "1"},
          {"birth_date", "19900101"}}},
        {"medical_account", "46010000000000012345"},
        {"keys",
         {{"dpk", std::string(test_dpk)},
          {"dlk", std::string(test_dlk)},
          {"dtk", std::string(test_dtk)},
          {"iak", std::string(test_iak)},
          {"damk", std::string(test_damk)},
          {"ssse_iak", std::string(test_ssse_iak)}}},
        {"key_version", 1},
    };
}

// PSAM holding the issuer-level purchase key; terminal id 460100000001, serial starting at 1.
inline constexpr std::string_view test_psam_terminal = "460100000001";
inline json psam_profile(std::string_view issuer_purchase_key) {
    return json{
        {"kind", "psam"},
        {"terminal_id", std::string(test_psam_terminal)},
        {"purchase_key", std::string(issuer_purchase_key)},
        {"key_level", "issuer"},
        {"issuer_id", std::string(test_issuer_id)},
        {"key_index", 1},
        {"key_version", 1},
        {"terminal_serial", 1},
        {"protocol", "T=1"},
    };
}

inline std::unique_ptr<VirtualCard> make_card(const json& profile = card_profile()) {
    auto payload = cos::personalize(profile);
    REQUIRE_MESSAGE(payload.ok(), (payload.ok() ? std::string() : payload.error()));
    auto card = VirtualCard::in_memory(payload.value());
    REQUIRE_MESSAGE(card.ok(), (card.ok() ? std::string() : card.error().message));
    return std::move(card).value();
}

// ---- APDU exchange ---------------------------------------------------------------------------

struct Rsp {
    Bytes data;
    std::uint16_t sw = 0;
    std::string sw_hex() const {
        static constexpr char digits[] = "0123456789ABCDEF";
        std::string s(4, '0');
        for (int i = 0; i < 4; ++i) s[static_cast<std::size_t>(i)] = digits[(sw >> (12 - 4 * i)) & 0xF];
        return s;
    }
    std::string data_hex() const { return to_hex(data); }
};

// Sends a raw command APDU; the response is split into data and SW. A response shorter than 2 bytes
// is a failure of the card ("never without a status word").
inline Rsp send(VirtualCard& card, ByteView command) {
    const Bytes raw = card.transmit(command);
    REQUIRE_MESSAGE(raw.size() >= 2, "response without SW to " << to_hex(command));
    Rsp r;
    r.data.assign(raw.begin(), raw.end() - 2);
    r.sw = static_cast<std::uint16_t>((raw[raw.size() - 2] << 8) | raw[raw.size() - 1]);
    return r;
}
inline Rsp send(VirtualCard& card, std::string_view command_hex) { return send(card, hex(command_hex)); }

// SW as 4 hex digits, for readable CHECKs: CHECK(sw(card, "80 5C 00 02 04") == "9000").
inline std::string sw(VirtualCard& card, std::string_view command_hex) { return send(card, command_hex).sw_hex(); }

inline constexpr std::string_view select_purse_apdu = "00 A4 04 00 08 A000000632010105 00";
inline constexpr std::string_view select_ssse_apdu = "00 A4 04 00 0F 7378312E73682EC9E7BBE1B1A3D5CF 00";
inline constexpr std::string_view select_psam_apdu = "00 A4 04 00 10 A0000006324D4F542E435053414D3031 00";

// SELECT succeeded: 9000 (T=1), or 61xx on a T=0 image (the FCI waits for a GET RESPONSE nobody sends).
inline bool selected(const Rsp& r) { return r.sw == 0x9000 || (r.sw & 0xFF00) == 0x6100; }
inline void select_purse(VirtualCard& card) {
    const Rsp r = send(card, select_purse_apdu);
    REQUIRE_MESSAGE(selected(r), "SELECT purse answered " << r.sw_hex());
}
inline void select_ssse(VirtualCard& card) {
    const Rsp r = send(card, select_ssse_apdu);
    REQUIRE_MESSAGE(selected(r), "SELECT SSSE answered " << r.sw_hex());
}
inline void select_psam(VirtualCard& card) {
    const Rsp r = send(card, select_psam_apdu);
    REQUIRE_MESSAGE(selected(r), "SELECT PSAM answered " << r.sw_hex());
}

inline CardDateTime when(std::string_view date, std::string_view time) {
    CardDateTime w;
    const Bytes d = hex(date);
    const Bytes t = hex(time);
    std::copy(d.begin(), d.end(), w.date.begin());
    std::copy(t.begin(), t.end(), w.time.begin());
    return w;
}
inline Bytes date_time_bytes(const CardDateTime& w) { return concat(w.date, w.time); }

inline std::uint32_t balance(VirtualCard& card) {
    const Rsp r = send(card, "80 5C 00 02 04");
    REQUIRE(r.sw_hex() == "9000");
    REQUIRE(r.data.size() == 4);
    return read_be32(r.data);
}

// ---- INITIALIZE FOR LOAD / CREDIT FOR LOAD (docs/CARD-SPEC.md §2, §4) ----------------------------------

inline Bytes init_load_apdu(std::uint32_t amount, std::string_view terminal = test_terminal, std::uint8_t key_index = 1) {
    return concat(hex("80 50 00 02 0B"), Bytes{key_index}, be_bytes(amount, 4), hex(terminal), hex("10"));
}

struct InitLoadResponse {
    std::uint32_t old_balance = 0;
    std::uint16_t online_atc = 0;
    std::uint8_t key_version = 0;
    std::uint8_t alg_id = 0;
    Bytes random;  // 4
    Bytes mac1;    // 4
};
inline InitLoadResponse parse_init_load(const Rsp& r) {
    REQUIRE(r.sw_hex() == "9000");
    REQUIRE(r.data.size() == 16);
    const ByteView d(r.data);
    return {read_be32(d.subspan(0, 4)),           read_be16(d.subspan(4, 2)),           d[6], d[7],
            Bytes(d.begin() + 8, d.begin() + 12), Bytes(d.begin() + 12, d.begin() + 16)};
}

inline Bytes host_load_mac2(const InitLoadResponse& init, std::uint32_t amount, std::string_view terminal, const CardDateTime& w,
                            std::string_view dlk = test_dlk) {
    const Key8 seslk = crypto::load_session_key(key16(dlk), init.random, init.online_atc);
    const auto mac = crypto::des_mac(seslk, crypto::load_mac2_input(amount, crypto::type_ep_load, hex(terminal), w));
    return Bytes(mac.begin(), mac.end());
}
inline Bytes credit_apdu(const CardDateTime& w, ByteView mac2) { return concat(hex("80 52 00 00 0B"), w.date, w.time, mac2, hex("04")); }

// A completed load: amount, date-time; returns the TAC (and checks SW 9000).
struct LoadDone {
    InitLoadResponse init;
    Bytes mac2;
    Bytes tac;
};
inline LoadDone do_load(VirtualCard& card, std::uint32_t amount, const CardDateTime& w = when("20261126", "120000"),
                        std::string_view terminal = test_terminal) {
    LoadDone done;
    done.init = parse_init_load(send(card, init_load_apdu(amount, terminal)));
    done.mac2 = host_load_mac2(done.init, amount, terminal, w);
    const Rsp r = send(card, credit_apdu(w, done.mac2));
    REQUIRE(r.sw_hex() == "9000");
    REQUIRE(r.data.size() == 4);
    done.tac = r.data;
    return done;
}

// ---- INITIALIZE FOR PURCHASE / CAPP, DEBIT (docs/CARD-SPEC.md §2, §4) ---------------------------------

inline Bytes init_purchase_apdu(std::uint32_t amount, std::string_view terminal = test_terminal, bool capp = false,
                                std::uint8_t key_index = 1) {
    return concat(hex(capp ? "80 50 03 02 0B" : "80 50 01 02 0B"), Bytes{key_index}, be_bytes(amount, 4), hex(terminal), hex("0F"));
}

struct InitPurchaseResponse {
    std::uint32_t balance = 0;
    std::uint16_t offline_atc = 0;
    Bytes overdraft_limit;  // 3
    std::uint8_t key_version = 0;
    std::uint8_t alg_id = 0;
    Bytes random;  // 4
};
inline InitPurchaseResponse parse_init_purchase(const Rsp& r) {
    REQUIRE(r.sw_hex() == "9000");
    REQUIRE(r.data.size() == 15);
    const ByteView d(r.data);
    return {read_be32(d.subspan(0, 4)),           read_be16(d.subspan(4, 2)), Bytes(d.begin() + 6, d.begin() + 9), d[9], d[10],
            Bytes(d.begin() + 11, d.begin() + 15)};
}

inline Key8 sespk_for(const InitPurchaseResponse& init, std::uint32_t terminal_serial, std::string_view dpk = test_dpk) {
    return crypto::purchase_session_key(key16(dpk), init.random, init.offline_atc, terminal_serial);
}
inline Bytes terminal_purchase_mac1(const InitPurchaseResponse& init, std::uint32_t amount, std::uint8_t type, std::string_view terminal,
                                    std::uint32_t terminal_serial, const CardDateTime& w, std::string_view dpk = test_dpk) {
    const auto mac = crypto::des_mac(sespk_for(init, terminal_serial, dpk), crypto::purchase_mac1_input(amount, type, hex(terminal), w));
    return Bytes(mac.begin(), mac.end());
}
inline Bytes expected_purchase_mac2(const InitPurchaseResponse& init, std::uint32_t amount, std::uint32_t terminal_serial,
                                    std::string_view dpk = test_dpk) {
    const auto mac = crypto::des_mac(sespk_for(init, terminal_serial, dpk), crypto::purchase_mac2_input(amount));
    return Bytes(mac.begin(), mac.end());
}
inline Bytes expected_purchase_tac(std::uint32_t amount, std::uint8_t type, std::string_view terminal, std::uint32_t terminal_serial,
                                   const CardDateTime& w, std::string_view dtk = test_dtk) {
    const auto mac =
        crypto::des_mac(crypto::tac_key(key16(dtk)), crypto::purchase_tac_input(amount, type, hex(terminal), terminal_serial, w));
    return Bytes(mac.begin(), mac.end());
}
inline Bytes expected_load_tac(std::uint32_t new_balance, std::uint16_t online_atc_before, std::uint32_t amount, std::string_view terminal,
                               const CardDateTime& w, std::string_view dtk = test_dtk) {
    const auto mac = crypto::des_mac(crypto::tac_key(key16(dtk)), crypto::load_tac_input(new_balance, online_atc_before, amount,
                                                                                         crypto::type_ep_load, hex(terminal), w));
    return Bytes(mac.begin(), mac.end());
}
inline Bytes debit_apdu(std::uint32_t terminal_serial, const CardDateTime& w, ByteView mac1) {
    return concat(hex("80 54 01 00 0F"), be_bytes(terminal_serial, 4), w.date, w.time, mac1, hex("08"));
}

struct PurchaseDone {
    InitPurchaseResponse init;
    Bytes tac;
    Bytes mac2;
};
// A completed EP purchase (type 06) with MAC1 computed from the test DPK.
inline PurchaseDone do_purchase(VirtualCard& card, std::uint32_t amount, std::uint32_t terminal_serial = 1,
                                const CardDateTime& w = when("20261126", "130000"), std::string_view terminal = test_terminal) {
    PurchaseDone done;
    done.init = parse_init_purchase(send(card, init_purchase_apdu(amount, terminal)));
    const Bytes mac1 = terminal_purchase_mac1(done.init, amount, crypto::type_ep_purchase, terminal, terminal_serial, w);
    const Rsp r = send(card, debit_apdu(terminal_serial, w, mac1));
    REQUIRE(r.sw_hex() == "9000");
    REQUIRE(r.data.size() == 8);
    done.tac.assign(r.data.begin(), r.data.begin() + 4);
    done.mac2.assign(r.data.begin() + 4, r.data.end());
    return done;
}

// ---- EF1A bus record (layout.hpp bus_record) ------------------------------------------------

inline Bytes bus_record(std::uint8_t state, std::uint16_t line, std::uint16_t station, std::uint32_t fare_fen,
                        std::string_view terminal = test_terminal, std::string_view date_time = "20261126130000") {
    namespace br = cos::bus_record;
    Bytes r(cos::capp_record_size, 0);
    r[br::record_id] = br::record_id_value;
    r[br::length] = static_cast<std::uint8_t>(cos::capp_record_size);
    r[br::lock_flag] = 0;
    r[br::state] = state;
    const auto put = [&](std::size_t at, ByteView v) { std::copy(v.begin(), v.end(), r.begin() + static_cast<long>(at)); };
    put(br::line, be_bytes(line, 2));
    put(br::station, be_bytes(station, 2));
    put(br::vehicle, be_bytes(0x00012345, 4));
    put(br::terminal_id, hex(terminal));
    put(br::date_time, hex(date_time));
    put(br::fare_fen, be_bytes(fare_fen, 4));
    put(br::operator_id, be_bytes(7, 4));
    return r;
}
inline Bytes update_capp_apdu(std::uint8_t p1, std::uint8_t p2, ByteView data) {
    return concat(Bytes{0x80, 0xDC, p1, p2, static_cast<std::uint8_t>(data.size())}, data);
}

// ---- observing the purse without changing it -------------------------------------------------

// Everything a failed command must leave alone: balance (GET BALANCE), both ATCs and the MAC-failure
// counter (snapshot), every EF18 record, the EF1A bus record and the newest EF1E trip record (READ RECORD,
// data and SW). Reading cancels a pending transaction, so observe only after the command under test.
struct PurseState {
    std::uint32_t balance_fen = 0;
    std::uint16_t online_atc = 0;
    std::uint16_t offline_atc = 0;
    std::string records;  // "rec1:data/sw rec2:… capp:… trip:…"
    bool operator==(const PurseState&) const = default;
};
inline std::ostream& operator<<(std::ostream& os, const PurseState& s) {
    return os << "balance=" << s.balance_fen << " online_atc=" << s.online_atc << " offline_atc=" << s.offline_atc
              << " records=" << s.records;
}
inline PurseState observe(VirtualCard& card) {
    select_purse(card);
    PurseState s;
    s.balance_fen = balance(card);
    const auto snap = card.snapshot();
    s.online_atc = snap.online_atc;
    s.offline_atc = snap.offline_atc;
    for (int rec = 1; rec <= 10; ++rec) {
        const Rsp r = send(card, Bytes{0x00, 0xB2, static_cast<std::uint8_t>(rec), 0xC4, 0x17});
        s.records += "ef18." + std::to_string(rec) + ":" + r.data_hex() + "/" + r.sw_hex() + " ";
    }
    const Rsp capp = send(card, "00 B2 01 D4 30");
    s.records += "ef1a.1:" + capp.data_hex() + "/" + capp.sw_hex() + " ";
    const Rsp trip = send(card, "00 B2 01 F4 30");
    s.records += "ef1e.1:" + trip.data_hex() + "/" + trip.sw_hex();
    return s;
}

// An EF18 log record as docs/CARD-SPEC.md §6 lays it out: ATC(2) ‖ overdraft limit(3) ‖ amount(4) ‖ type(1) ‖
// terminal id(6) ‖ date(4) ‖ time(3); the ATC is the post-increment value.
inline std::string log_record(std::uint16_t atc_after, std::uint32_t amount, std::uint8_t type, std::string_view terminal,
                              const CardDateTime& w) {
    return hx(concat(be_bytes(atc_after, 2), hex("000000"), be_bytes(amount, 4), Bytes{type}, hex(terminal), w.date, w.time));
}

}  // namespace cos_test
