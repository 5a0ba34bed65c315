// Power cut at random points inside DEBIT, CREDIT, CAPP purchases (with their 80 DC cache), PSAM 80 70 and the
// two counters a failure commits (MAC-failure counter of a wrong-MAC DEBIT, PIN tries of a wrong VERIFY):
// after every cut the image is reopened and must be entirely before or entirely after the command —
// balance, online / offline ATC, EF18 log record, EF1A bus record, EF1E trip record, PSAM serial
// (docs/DESIGN.md §5, image.hpp FileStorage::inject_power_cut_after).
//
// The cut points are random byte counts across the slot written by the commit, plus the edges: 0 (nothing
// written), slot size − 1 (everything but the last checksum byte) and ≥ slot size (the whole slot written
// and synced, then the power goes: the command must be in the image). One image is carried through all
// iterations, so the log wraps and the state keeps moving. Seed: COCONUT_POWER_CUT_SEED (default fixed),
// iterations: COCONUT_POWER_CUT_ITERATIONS (default 1560 = 260 per kind; DEBIT, CREDIT and CAPP get 780 cuts).
#include "test_cos_support.hpp"

#include <cstdlib>
#include <random>

using namespace cos_test;

namespace {

enum class Kind { debit, credit, capp, psam, failed_debit, wrong_pin };
constexpr int kind_count = 6;
const char* name(Kind k) {
    switch (k) {
        case Kind::debit: return "DEBIT";
        case Kind::credit: return "CREDIT";
        case Kind::capp: return "CAPP DEBIT";
        case Kind::psam: return "PSAM 80 70";
        case Kind::failed_debit: return "DEBIT with a wrong MAC1 (MAC-failure counter)";
        case Kind::wrong_pin: return "VERIFY with a wrong PIN (try counter)";
    }
    return "?";
}

// Everything a command may change, read back through APDUs and the snapshot.
struct CardState {
    std::uint32_t balance_fen = 0;
    std::uint16_t online_atc = 0;
    std::uint16_t offline_atc = 0;
    std::uint8_t mac_failures = 0;
    std::uint8_t pin_tries_left = 0;
    std::string ef18_1;  // hex data / SW
    std::string ef1a_1;
    std::string ef1e_1;
    bool operator==(const CardState&) const = default;
};
std::ostream& operator<<(std::ostream& os, const CardState& s) {
    return os << "{balance " << s.balance_fen << ", online ATC " << s.online_atc << ", offline ATC " << s.offline_atc << ", MAC failures "
              << int(s.mac_failures) << ", PIN tries " << int(s.pin_tries_left) << ", EF18.1 " << s.ef18_1 << ", EF1A.1 " << s.ef1a_1
              << ", EF1E.1 " << s.ef1e_1 << "}";
}
std::string record(VirtualCard& card, std::string_view apdu) {
    const Rsp r = send(card, apdu);
    return r.data_hex() + "/" + r.sw_hex();
}
CardState read_state(VirtualCard& card) {
    select_purse(card);
    CardState s;
    s.balance_fen = balance(card);
    const auto snap = card.snapshot();
    s.online_atc = snap.online_atc;
    s.offline_atc = snap.offline_atc;
    s.mac_failures = snap.mac_failures;
    s.pin_tries_left = snap.pin_tries_left;
    s.ef18_1 = record(card, "00 B2 01 C4 17");
    s.ef1a_1 = record(card, "00 B2 01 D4 30");
    s.ef1e_1 = record(card, "00 B2 01 F4 30");
    return s;
}

struct Opened {
    std::unique_ptr<VirtualCard> card;
    cos::FileStorage* storage = nullptr;  // owned by card
};
Opened open_image(const std::filesystem::path& path) {
    auto storage = cos::FileStorage::open(path);
    REQUIRE_MESSAGE(storage.ok(), (storage.ok() ? std::string() : storage.error().message));
    Opened o;
    o.storage = storage.value().get();
    auto card = VirtualCard::from_storage(std::move(storage).value());
    REQUIRE_MESSAGE(card.ok(), (card.ok() ? std::string() : card.error().message));
    o.card = std::move(card).value();
    return o;
}

std::size_t pick_cut(std::mt19937_64& rng, std::size_t round, std::size_t slot_size) {
    // The first rounds of every kind take the edges; then 40 % in the region the state occupies (the first
    // few KiB of the slot), 35 % anywhere in the slot, 25 % at or past its end (the command must survive).
    switch (round) {
        case 0: return 0;
        case 1: return slot_size;
        case 2: return slot_size - 1;
        case 3: return 1;
        case 4: return 10 * slot_size;
        case 5: return slot_size - 32;  // exactly up to the checksum
        default: break;
    }
    const auto roll = rng() % 20;
    if (roll < 8) return std::uniform_int_distribution<std::size_t>(0, 4096)(rng);
    if (roll < 15) return std::uniform_int_distribution<std::size_t>(0, slot_size - 1)(rng);
    return std::uniform_int_distribution<std::size_t>(slot_size, 2 * slot_size)(rng);  // written whole, then cut
}

CardDateTime random_when(std::mt19937_64& rng) {
    const auto two = [&](int lo, int hi) {
        const int v = std::uniform_int_distribution<int>(lo, hi)(rng);
        return static_cast<std::uint8_t>(((v / 10) << 4) | (v % 10));
    };
    CardDateTime w;
    w.date = {0x20, 0x26, two(1, 12), two(1, 28)};
    w.time = {two(0, 23), two(0, 59), two(0, 59)};
    return w;
}

std::uint64_t env_or(const char* name, std::uint64_t fallback) {
    const char* v = std::getenv(name);
    return v ? std::strtoull(v, nullptr, 0) : fallback;
}

struct Tally {
    int before = 0;
    int after = 0;
};

}  // namespace

TEST_CASE("a power cut at any byte of the commit leaves the image entirely before or after the command") {
    const std::uint64_t seed = env_or("COCONUT_POWER_CUT_SEED", 0xC0C0C0DE2026ULL);
    const std::uint64_t iterations = env_or("COCONUT_POWER_CUT_ITERATIONS", 1560);
    MESSAGE("seed " << seed << " (set COCONUT_POWER_CUT_SEED to replay), iterations " << iterations);
    std::mt19937_64 rng(seed);

    const auto dir = std::filesystem::temp_directory_path() / ("coconut-power-cut-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    const auto card_path = dir / "card.img";
    const auto psam_path = dir / "psam.img";
    json profile = card_profile();
    profile["balance_fen"] = 50000;
    REQUIRE(cos::create_image(card_path, profile).ok());
    REQUIRE(cos::create_image(psam_path, psam_profile("0123456789ABCDEFFEDCBA9876543210")).ok());
    const std::size_t slot_size = (std::filesystem::file_size(card_path) - cos::image_header_size) / 2;
    REQUIRE(slot_size > 0);

    Tally tally[kind_count];
    std::uint32_t terminal_serial = 1;
    for (std::uint64_t i = 0; i < iterations; ++i) {
        const Kind kind = static_cast<Kind>(i % kind_count);
        const std::size_t cut = pick_cut(rng, i / kind_count, slot_size);
        const CardDateTime w = random_when(rng);
        const std::uint32_t amount = std::uniform_int_distribution<std::uint32_t>(1, 400)(rng);
        INFO("iteration " << i << ", " << std::string(name(kind)) << ", cut after " << cut << " of " << slot_size << " bytes");

        if (kind == Kind::psam) {
            Opened psam = open_image(psam_path);
            const std::uint32_t serial_before = psam.card->snapshot().terminal_serial;
            select_psam(*psam.card);
            const Bytes factors = concat(crypto::card_factor_from_asn(hex(test_asn)), hex(test_issuer_id));
            const Bytes data = concat(hex("11223344 0005"), be_bytes(amount, 4), Bytes{0x06}, w.date, w.time, hex("0100"), factors);
            const Bytes apdu = concat(Bytes{0x80, 0x70, 0x00, 0x00, static_cast<std::uint8_t>(data.size())}, data, Bytes{0x08});
            psam.storage->inject_power_cut_after(cut);
            bool cut_happened = false;
            try {
                psam.card->transmit(apdu);
            } catch (const cos::PowerCut&) {
                cut_happened = true;
            }
            CHECK_MESSAGE(cut_happened, "80 70 committed nothing (no write reached the storage)");
            psam.card.reset();
            Opened reopened = open_image(psam_path);
            const std::uint32_t serial_after = reopened.card->snapshot().terminal_serial;
            const bool before = serial_after == serial_before;
            const bool after = serial_after == serial_before + 1;
            CHECK_MESSAGE((before || after), "serial " << serial_before << " became " << serial_after);
            if (cut == 0) CHECK(before);
            if (cut >= slot_size) CHECK(after);
            ++(before ? tally[3].before : tally[3].after);
            continue;
        }

        Opened opened = open_image(card_path);
        VirtualCard& card = *opened.card;
        const CardState before = read_state(card);
        REQUIRE_MESSAGE(before.mac_failures == 0, before);
        REQUIRE_MESSAGE(before.pin_tries_left == 3, before);
        // Keep the balance in range: a load when low, a purchase when high.
        Kind effective = kind;
        if ((kind == Kind::debit || kind == Kind::capp) && before.balance_fen < 1000) effective = Kind::credit;
        if (kind == Kind::credit && before.balance_fen > 90000) effective = Kind::debit;

        CardState expected = before;
        Bytes final_apdu;
        Bytes expected_proof;  // GET TRANSACTION PROVE answer if the command is in the image
        Bytes prove_apdu;
        if (effective == Kind::failed_debit) {
            const InitPurchaseResponse init = parse_init_purchase(send(card, init_purchase_apdu(amount)));
            Bytes mac1 = terminal_purchase_mac1(init, amount, 0x06, test_terminal, terminal_serial, w);
            mac1[0] ^= 0xFF;
            final_apdu = debit_apdu(terminal_serial, w, mac1);
            expected.mac_failures = 1;
        } else if (effective == Kind::wrong_pin) {
            final_apdu = hex("00 20 00 00 03 000000");
            expected.pin_tries_left = 2;
        } else if (effective == Kind::credit) {
            const InitLoadResponse init = parse_init_load(send(card, init_load_apdu(amount)));
            REQUIRE(init.online_atc == before.online_atc);
            final_apdu = credit_apdu(w, host_load_mac2(init, amount, test_terminal, w));
            expected.balance_fen += amount;
            expected.online_atc = static_cast<std::uint16_t>(before.online_atc + 1);
            expected.ef18_1 = log_record(expected.online_atc, amount, 0x02, test_terminal, w) + "/9000";
            expected_proof = expected_load_tac(expected.balance_fen, before.online_atc, amount, test_terminal, w);
            prove_apdu = concat(hex("80 5A 00 02 02"), be_bytes(init.online_atc, 2), hex("08"));
        } else {
            const bool capp = effective == Kind::capp;
            const std::uint8_t type = capp ? 0x09 : 0x06;
            const InitPurchaseResponse init = parse_init_purchase(send(card, init_purchase_apdu(amount, test_terminal, capp)));
            REQUIRE(init.offline_atc == before.offline_atc);
            if (capp) {
                const Bytes bus = bus_record(static_cast<std::uint8_t>(i % 2), static_cast<std::uint16_t>(i),
                                             static_cast<std::uint16_t>(i * 7), amount, test_terminal, hx(concat(w.date, w.time)));
                REQUIRE(send(card, update_capp_apdu(0x01, 0xD0, bus)).sw_hex() == "9000");
                REQUIRE(send(card, update_capp_apdu(0x00, 0xF0, bus)).sw_hex() == "9000");
                expected.ef1a_1 = hx(bus) + "/9000";
                expected.ef1e_1 = hx(bus) + "/9000";
            }
            final_apdu = debit_apdu(terminal_serial, w, terminal_purchase_mac1(init, amount, type, test_terminal, terminal_serial, w));
            expected.balance_fen -= amount;
            expected.offline_atc = static_cast<std::uint16_t>(before.offline_atc + 1);
            expected.ef18_1 = log_record(expected.offline_atc, amount, type, test_terminal, w) + "/9000";
            expected_proof = concat(expected_purchase_mac2(init, amount, terminal_serial),
                                    expected_purchase_tac(amount, type, test_terminal, terminal_serial, w));
            prove_apdu = concat(hex("80 5A 00"), Bytes{type}, hex("02"), be_bytes(init.offline_atc, 2), hex("08"));
            ++terminal_serial;
        }

        opened.storage->inject_power_cut_after(cut);
        bool cut_happened = false;
        try {
            card.transmit(final_apdu);
        } catch (const cos::PowerCut&) {
            cut_happened = true;
        }
        CHECK_MESSAGE(cut_happened, "the command committed nothing (no write reached the storage)");
        opened.card.reset();

        Opened reopened = open_image(card_path);
        const CardState now = read_state(*reopened.card);
        const bool is_before = now == before;
        const bool is_after = now == expected;
        CHECK_MESSAGE((is_before || is_after), "between!\n  before   " << before << "\n  after    " << expected << "\n  reopened " << now);
        if (cut == 0) CHECK_MESSAGE(is_before, "cut at 0 bytes must leave the image before: " << now);
        if (cut >= slot_size) CHECK_MESSAGE(is_after, "cut after the whole slot must leave the image after: " << now);
        ++(is_before ? tally[static_cast<int>(effective)].before : tally[static_cast<int>(effective)].after);

        // The terminal never saw the response: if the command is in the image, GET TRANSACTION PROVE
        // (after the power came back) must answer its MAC2 ‖ TAC; if not, 9406.
        if ((is_after || is_before) && !prove_apdu.empty()) {
            const Rsp proof = send(*reopened.card, prove_apdu);
            if (is_after) {
                CHECK_MESSAGE(proof.sw_hex() == "9000", "GET TRANSACTION PROVE " << hx(prove_apdu));
                if (effective == Kind::credit) {
                    if (proof.data.size() == 8) CHECK(hx(ByteView(proof.data).last(4)) == hx(expected_proof));
                } else {
                    CHECK(proof.data_hex() == hx(expected_proof));
                }
            } else {
                CHECK_MESSAGE(proof.sw_hex() == "9406", "GET TRANSACTION PROVE " << hx(prove_apdu));
            }
        }
        if (!(is_before || is_after)) break;  // one inconsistent image is enough to report
        // Undo a counted failure so the next iteration starts clean: a good purchase resets the MAC-failure
        // counter, the right PIN the try counter.
        if (now.mac_failures > 0) do_purchase(*reopened.card, 1, terminal_serial++, w);
        if (now.pin_tries_left < 3) REQUIRE(sw(*reopened.card, "00 20 00 00 03 123456") == "9000");
    }
    for (int k = 0; k < kind_count; ++k)
        MESSAGE(std::string(name(static_cast<Kind>(k)))
                << ": " << tally[k].before << " cuts left the image before, " << tally[k].after << " after");
    std::filesystem::remove_all(dir);
}
