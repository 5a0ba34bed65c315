// libFuzzer target for the card OS APDU dispatcher (malformed APDUs get 6700/6A86/…, never a
// crash: card-os-apdu/README.md). Arbitrary bytes become a short session against an in-memory card (T=1 or T=0) or PSAM.
//
// Input layout:
//   byte 0      device and start state: bits 0-1 = 0 card T=1, 1 card T=0, 2 PSAM, 3 card T=1 with master
//               keys; bit 2 = SELECT the purse / PSAM DF first; bit 3 = SELECT SSSE first; bit 4 = VERIFY the
//               PIN first. Bits 5-7 all set = image mode (below) instead.
//   then steps  a length byte L < 0xF0 followed by L bytes = one raw command APDU (cut short at the end of
//               the input), or one of the control bytes below.
//   0xF0 power off · 0xF1 warm reset · 0xF2 a correct DEBIT for the last INITIALIZE FOR PURCHASE / CAPP the
//   card answered (so the fuzzer reaches the commit paths, the log, the CAPP cache and GET TRANSACTION
//   PROVE) · 0xF3 a correct CREDIT for the last INITIALIZE FOR LOAD · 0xF4 GET RESPONSE of what a 61xx
//   offered · 0xF5 SELECT purse · 0xF6 a correct APPLICATION UNBLOCK (GET CHALLENGE + 84 18) ·
//   0xF7 / 0xF8 a correct temporary / permanent APPLICATION BLOCK (GET CHALLENGE + 84 1E) ·
//   other ≥ 0xF9: snapshot().
//
// Image mode (byte 0 bits 5-7 set): the rest edits the device's personalized payload — byte 1 = 0: triples
// (offset hi, offset lo, value) overwrite bytes; 1: the next two bytes truncate it first, then triples; 2: the
// rest is the whole payload. VirtualCard::in_memory must refuse it or load a card that then survives a fixed
// session of every application's commands (a checksum guards files on disk, not a tampered payload).
//
// FUZZ_APDU_TRACE=1 in the environment prints every command and response.
//
// Checked on every response: at least SW1 SW2, at most 65536 + 2 bytes; transmit() never throws; the
// balance never exceeds the purse maximum; the ATCs never go down.
#include <coconut/core/bytes.hpp>
#include <coconut/cos/card.hpp>
#include <coconut/crypto/card_crypto.hpp>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <optional>

namespace {

using namespace coconut;
using nlohmann::json;

constexpr std::size_t max_steps = 64;  // bounds one input's session (libFuzzer keeps inputs small anyway)
constexpr std::uint32_t max_balance_fen = 100000;

constexpr const char* dpk = "11223344556677888877665544332211";
constexpr const char* dlk = "374598B5C0B0EAE1E1D06609AC5BB369";
constexpr const char* dtk = "CAA6025290114BFCC3C9043F70F7A07A";
constexpr const char* iak = "404142434445464748494A4B4C4D4E4F";
constexpr const char* damk = "505152535455565758595A5B5C5D5E5F";
constexpr const char* ssse_iak = "606162636465666768696A6B6C6D6E6F";

[[noreturn]] void fail(const char* what, ByteView command, ByteView response = {}) {
    std::fprintf(stderr, "fuzz_apdu_dispatcher: %s\n  command  %s\n  response %s\n", what, to_hex(command).c_str(),
                 to_hex(response).c_str());
    std::abort();
}

json card_profile(const char* protocol, bool master) {
    json keys = {{"dpk", dpk}, {"dlk", dlk}, {"dtk", dtk}, {"iak", iak}, {"damk", damk}, {"ssse_iak", ssse_iak}};
    json p = {
        {"kind", "card"},
        {"asn", "03100000000000012345"},
        {"issuer_id", "0460000000000001"},
        {"balance_fen", 5000},
        {"max_balance_fen", max_balance_fen},
        {"pin", "123456"},
        {"pin_tries", 3},
        {"protocol", protocol},
        {"seed", "00112233445566778899AABBCCDDEEFF"},
        {"cardholder",
         {{"name", "ZHANG SAN"},
          {"id_number", "460100199001011234"},
          {"ssn", "460100199001011234"},
          {"sex", "1"},
          {"birth_date", "19900101"}}},
        {"medical_account", "46010000000000012345"},
        {"key_version", 1},
    };
    p[master ? "master_keys" : "keys"] = keys;
    return p;
}

Bytes must_personalize(const json& profile) {
    auto payload = cos::personalize(profile);
    if (!payload.ok()) {
        std::fprintf(stderr, "fuzz_apdu_dispatcher: personalize failed: %s\n", payload.error().c_str());
        std::abort();
    }
    return std::move(payload).value();
}

struct Payloads {
    Bytes card_t1 = must_personalize(card_profile("T=1", false));
    Bytes card_t0 = must_personalize(card_profile("T=0", false));
    Bytes card_master = must_personalize(card_profile("T=1", true));
    Bytes psam = must_personalize(json{{"kind", "psam"},
                                       {"terminal_id", "460100000001"},
                                       {"purchase_key", "0123456789ABCDEFFEDCBA9876543210"},
                                       {"key_level", "issuer"},
                                       {"issuer_id", "0460000000000001"},
                                       {"key_index", 1},
                                       {"key_version", 1},
                                       {"terminal_serial", 1},
                                       {"protocol", "T=1"}});
};
const Payloads& payloads() {
    static const Payloads p;
    return p;
}

// FUZZ_APDU_TRACE=1 prints every exchange (to check what a corpus file reaches).
bool trace() {
    static const bool on = std::getenv("FUZZ_APDU_TRACE") != nullptr;
    return on;
}

crypto::Key16 key16(const char* h) { return crypto::Key16(hex(h)); }

// One fuzz session: the card, what it last offered, and the invariants' memory.
class Session {
public:
    // check_balance: off for an edited payload, whose balance or maximum may be anything (an image is
    // checksummed, not MACed: whoever can write the file can set any balance; the card must only not crash).
    Session(std::unique_ptr<cos::VirtualCard> card, bool explicit_keys, bool check_balance = true)
        : card_(std::move(card)), explicit_keys_(explicit_keys), check_balance_(check_balance) {}

    Bytes send(ByteView command) {
        Bytes response;
        try {
            response = card_->transmit(command);
        } catch (const std::exception& e) {
            fail(e.what(), command);
        } catch (...) {
            fail("transmit threw", command);
        }
        if (response.size() < 2) fail("response without SW1 SW2", command, response);
        if (response.size() > 65536 + 2) fail("response longer than 65536 + 2 bytes", command, response);
        if (trace()) std::fprintf(stderr, "> %s\n< %s\n", to_hex(command).c_str(), to_hex(response).c_str());
        remember(command, response);
        check_invariants(command, response);
        return response;
    }

    void power_off() { card_->power_off(); }
    void reset() { card_->reset(); }
    void snapshot() { (void)card_->snapshot(); }

    void get_response() {
        if (available_ == 0) return;
        send(Bytes{0x00, 0xC0, 0x00, 0x00, available_});
    }

    // A DEBIT with the right MAC1 for the last INITIALIZE FOR PURCHASE / CAPP the card answered.
    void correct_debit(ByteView extra) {
        if (!last_purchase_init_ || !explicit_keys_) return;
        const auto& [command, response] = *last_purchase_init_;
        const std::uint32_t serial = extra.size() >= 2 ? read_be16(extra) : 1;
        crypto::CardDateTime when{{0x20, 0x26, 0x11, 0x26}, {0x13, 0x00, 0x00}};
        const std::uint32_t amount = read_be32(ByteView(command).subspan(6, 4));
        const std::uint8_t type = command[2] == 0x03 ? crypto::type_capp_purchase : crypto::type_ep_purchase;
        const auto sespk = crypto::purchase_session_key(key16(dpk), ByteView(response).subspan(11, 4),
                                                        read_be16(ByteView(response).subspan(4, 2)), serial);
        const auto mac1 = crypto::des_mac(sespk, crypto::purchase_mac1_input(amount, type, ByteView(command).subspan(10, 6), when));
        send(concat(Bytes{0x80, 0x54, 0x01, 0x00, 0x0F}, be_bytes(serial, 4), when.date, when.time, mac1, Bytes{0x08}));
    }

    // A CREDIT with the right MAC2 for the last INITIALIZE FOR LOAD the card answered.
    void correct_credit() {
        if (!last_load_init_ || !explicit_keys_) return;
        const auto& [command, response] = *last_load_init_;
        crypto::CardDateTime when{{0x20, 0x26, 0x11, 0x26}, {0x10, 0x31, 0x00}};
        const std::uint32_t amount = read_be32(ByteView(command).subspan(6, 4));
        const auto seslk =
            crypto::load_session_key(key16(dlk), ByteView(response).subspan(8, 4), read_be16(ByteView(response).subspan(4, 2)));
        const auto mac2 =
            crypto::des_mac(seslk, crypto::load_mac2_input(amount, crypto::type_ep_load, ByteView(command).subspan(10, 6), when));
        send(concat(Bytes{0x80, 0x52, 0x00, 0x00, 0x0B}, when.date, when.time, mac2, Bytes{0x04}));
    }

    void correct_unblock() { correct_maintenance(crypto::application_unblock_header); }
    void correct_block(bool permanent) { correct_maintenance(crypto::application_block_header(permanent)); }

    // GET CHALLENGE, then the maintenance command `header` with its MAC under the test DAMK.
    void correct_maintenance(const crypto::MaintenanceHeader& header) {
        if (!explicit_keys_) return;
        const Bytes challenge = send(Bytes{0x00, 0x84, 0x00, 0x00, 0x04});
        if (challenge.size() != 6) return;
        crypto::Challenge4 c{};
        std::copy(challenge.begin(), challenge.begin() + 4, c.begin());
        const auto mac = crypto::maintenance_mac(key16(damk), header, c);
        send(concat(ByteView(header), ByteView(mac)));
    }

private:
    void remember(ByteView command, ByteView response) {
        const std::uint8_t sw1 = response[response.size() - 2];
        const std::uint8_t sw2 = response[response.size() - 1];
        available_ = sw1 == 0x61 ? sw2 : 0;
        const bool ok = sw1 == 0x90 && sw2 == 0x00;
        // An INITIALIZE (T=1: data in the response; T=0: data after GET RESPONSE, not tracked).
        if (ok && command.size() >= 16 && command[0] == 0x80 && command[1] == 0x50 && command[4] == 0x0B) {
            const Bytes c(command.begin(), command.end());
            const Bytes r(response.begin(), response.end() - 2);
            if ((command[2] == 0x01 || command[2] == 0x03) && r.size() == 15) last_purchase_init_ = {{c, r}};
            if (command[2] == 0x00 && r.size() == 16) last_load_init_ = {{c, r}};
        }
    }

    void check_invariants(ByteView command, ByteView response) {
        const cos::Snapshot s = card_->snapshot();
        if (s.kind != cos::ImageKind::card) return;
        if (check_balance_ && s.balance_fen > max_balance_fen) fail("balance above the purse maximum", command, response);
        if (s.online_atc < online_atc_ || s.offline_atc < offline_atc_) fail("an ATC went down", command, response);
        // An ATC moves only with a balance change (CREDIT / DEBIT of a non-zero amount) or stays.
        online_atc_ = s.online_atc;
        offline_atc_ = s.offline_atc;
    }

    std::unique_ptr<cos::VirtualCard> card_;
    bool explicit_keys_;
    bool check_balance_;
    std::uint8_t available_ = 0;
    std::optional<std::pair<Bytes, Bytes>> last_purchase_init_;
    std::optional<std::pair<Bytes, Bytes>> last_load_init_;
    std::uint16_t online_atc_ = 0;
    std::uint16_t offline_atc_ = 0;
};

// A fixed session touching every application, for a card decoded from an edited payload.
void image_session(Session& session) {
    for (const char* command : {"00A4040008A00000063201010500",
                                "805C000204",
                                "00B0950000",
                                "00B0960000",
                                "00B0970000",
                                "00B201C400",
                                "00B201D400",
                                "00B201F400",
                                "805001020B0100000001001122334455 0F",
                                "805000020B0100000001001122334455 10",
                                "805A000602000008",
                                "0084000008",
                                "0020000003123456",
                                "00880001081122334455667788 08",
                                "00A404000F7378312E73682EC9E7BBE1B1A3D5CF00",
                                "00B2083000",
                                "00B2013000",
                                "00B2012800",
                                "00A4000002DF04",
                                "00B2304000",
                                "00A4040010A0000006324D4F542E435053414D303100",
                                "00B0960006",
                                "00B0970002",
                                "8070000024 11223344 0005 000000FA 06 20261126135100 01 00 0000000000012345 0460000000000001 08",
                                "8072000004 01020304"}) {
        session.send(hex(command));
    }
    session.correct_debit({});
    session.correct_credit();
    session.snapshot();
}

int run_image_mode(const Payloads& p, int device, ByteView edits) {
    Bytes payload = device == 0 ? p.card_t1 : device == 1 ? p.card_t0 : device == 2 ? p.psam : p.card_master;
    if (edits.empty()) return 0;
    const std::uint8_t mode = edits[0] % 3;
    edits = edits.subspan(1);
    if (mode == 2) {
        payload.assign(edits.begin(), edits.end());
    } else {
        if (mode == 1 && edits.size() >= 2) {
            payload.resize(std::min<std::size_t>(payload.size(), read_be16(edits)));
            edits = edits.subspan(2);
        }
        for (std::size_t i = 0; i + 3 <= edits.size() && !payload.empty(); i += 3) {
            payload[((std::size_t{edits[i]} << 8) | edits[i + 1]) % payload.size()] = edits[i + 2];
        }
    }
    auto card = cos::VirtualCard::in_memory(payload);
    if (!card.ok()) {
        if (trace()) std::fprintf(stderr, "payload refused: %s\n", card.error().message.c_str());
        if (card.error().message.empty()) fail("a refused payload without a message", {});
        return 0;
    }
    Session session(std::move(card).value(), device != 3, /*check_balance=*/false);
    image_session(session);
    return 0;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) return 0;
    const ByteView input(data, size);
    const std::uint8_t flags = input[0];
    const Payloads& p = payloads();
    const int device = flags & 0x03;
    if ((flags & 0xE0) == 0xE0) return run_image_mode(p, device, input.subspan(1));
    const Bytes& payload = device == 0 ? p.card_t1 : device == 1 ? p.card_t0 : device == 2 ? p.psam : p.card_master;
    auto card = cos::VirtualCard::in_memory(payload);
    if (!card.ok()) fail("a personalized payload did not load", {});
    Session session(std::move(card).value(), device != 3);

    if (flags & 0x04) {
        session.send(device == 2 ? hex("00A4040010A0000006324D4F542E435053414D303100") : hex("00A4040008A00000063201010500"));
    }
    if (flags & 0x08) session.send(hex("00A404000F7378312E73682EC9E7BBE1B1A3D5CF00"));
    if (flags & 0x10) session.send(hex("0020000003123456"));

    std::size_t at = 1;
    for (std::size_t step = 0; step < max_steps && at < size; ++step) {
        const std::uint8_t head = input[at++];
        if (head < 0xF0) {
            const std::size_t length = std::min<std::size_t>(head, size - at);
            session.send(input.subspan(at, length));
            at += length;
            continue;
        }
        switch (head) {
            case 0xF0: session.power_off(); break;
            case 0xF1: session.reset(); break;
            case 0xF2: {
                const std::size_t length = std::min<std::size_t>(2, size - at);
                session.correct_debit(input.subspan(at, length));
                at += length;
                break;
            }
            case 0xF3: session.correct_credit(); break;
            case 0xF4: session.get_response(); break;
            case 0xF5: session.send(hex("00A4040008A00000063201010500")); break;
            case 0xF6: session.correct_unblock(); break;
            case 0xF7: session.correct_block(false); break;
            case 0xF8: session.correct_block(true); break;
            default: session.snapshot(); break;
        }
    }
    return 0;
}
