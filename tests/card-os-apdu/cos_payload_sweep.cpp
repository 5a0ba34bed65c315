// Every single-byte edit of a personalized card and PSAM payload (7 values per byte) is either refused by
// VirtualCard::in_memory or yields a card that survives a session touching every application — SELECTs,
// reads, a CAPP purchase and a load with correct MACs, failed DEBITs, PIN, authentication, power off —
// without a crash or an exception (IMAGE-FORMAT.md: "anything left over or missing is corrupt"; card-os-apdu/README.md:
// never a crash). An image is checksummed, not MACed, so a payload like these is what a damaged writer
// or a hand-edited file would hand the card. Each session runs in a forked child, so one crash reports its
// offset and the sweep goes on. Found three decode holes on 2026-11-26 (purse without EF15 / EF18, no DPK
// of index 01), fixed in 24981e6.
#include "test_cos_support.hpp"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>

using namespace cos_test;

namespace {

constexpr int exit_ok = 0;
constexpr int exit_exception = 4;

Bytes body_of(const Bytes& raw) { return raw.size() >= 2 ? Bytes(raw.begin(), raw.end() - 2) : Bytes{}; }
bool ok(const Bytes& raw) { return raw.size() >= 2 && raw[raw.size() - 2] == 0x90 && raw.back() == 0x00; }

// Raw transmits only (no REQUIRE: a child must not unwind into doctest).
void session(VirtualCard& card) {
    for (const char* command : {"00A4040008A00000063201010500",
                                "805C000204",
                                "00B0950000",
                                "00B0960000",
                                "00B0970000",
                                "00B201C400",
                                "00B202C400",
                                "00B201D400",
                                "00B201F400",
                                "805A000602000008",
                                "0084000008",
                                "0020000003123456",
                                "0020000003000000",
                                "00880001081122334455667788 08",
                                "00A4000002 0015",
                                "00B0000000",
                                "00A404000F7378312E73682EC9E7BBE1B1A3D5CF00",
                                "00B2083000",
                                "00B2013000",
                                "00B2012800",
                                "00A4000002DF04",
                                "00B2304000",
                                "00A4000002 0005",
                                "00B2010000",
                                "00A4000002 3F00",
                                "00A404000E315041592E5359532E444446303100",
                                "00A4040010A0000006324D4F542E435053414D303100",
                                "00B0960006",
                                "00B0970002",
                                "8070000024 11223344 0005 000000FA 06 20261126135100 01 00 0000000000012345 0460000000000001 08",
                                "8072000004 01020304"}) {
        card.transmit(hex(command));
    }
    const CardDateTime w = when("20261126", "130000");
    card.transmit(hex(select_purse_apdu));
    Bytes raw = card.transmit(init_purchase_apdu(1, test_terminal, true));
    if (ok(raw) && raw.size() == 17) {
        const InitPurchaseResponse init = parse_init_purchase(Rsp{body_of(raw), 0x9000});
        card.transmit(update_capp_apdu(0x01, 0xD0, bus_record(1, 1, 1, 1)));
        card.transmit(update_capp_apdu(0x00, 0xF0, bus_record(1, 1, 1, 1)));
        card.transmit(debit_apdu(1, w, terminal_purchase_mac1(init, 1, crypto::type_capp_purchase, test_terminal, 1, w)));
    }
    raw = card.transmit(init_load_apdu(1));
    if (ok(raw) && raw.size() == 18) {
        const InitLoadResponse init = parse_init_load(Rsp{body_of(raw), 0x9000});
        card.transmit(credit_apdu(w, host_load_mac2(init, 1, test_terminal, w)));
    }
    for (std::uint8_t rec = 1; rec <= 12; ++rec) card.transmit(Bytes{0x00, 0xB2, rec, 0xC4, 0x00});
    for (int i = 0; i < 4; ++i) {
        card.transmit(hex("805001020B0100000001001122334455 0F"));
        card.transmit(hex("805401000F0000000120261126130000DEADBEEF08"));
    }
    card.transmit(hex("0084000004"));
    card.transmit(hex("841800000401020304"));
    (void)card.snapshot();
    card.power_off();
    (void)card.snapshot();
}

// Runs the session on the edited payload in a child; "" when it survived, else what happened.
std::string run_isolated(const Bytes& payload) {
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        auto card = VirtualCard::in_memory(payload);
        if (!card.ok()) ::_exit(exit_ok);
        try {
            session(**card);
        } catch (const std::exception&) {
            ::_exit(exit_exception);
        } catch (...) {
            ::_exit(exit_exception);
        }
        ::_exit(exit_ok);
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    if (WIFEXITED(status) && WEXITSTATUS(status) == exit_ok) return {};
    if (WIFEXITED(status) && WEXITSTATUS(status) == exit_exception) return "an exception left transmit()";
    if (WIFSIGNALED(status)) return "killed by signal " + std::to_string(WTERMSIG(status));
    return "exit status " + std::to_string(WEXITSTATUS(status));
}

}  // namespace

TEST_CASE("every single-byte edit of a card or PSAM payload is refused or yields a card that never crashes") {
    const Bytes card = cos::personalize(card_profile()).value();
    const Bytes psam = cos::personalize(psam_profile("0123456789ABCDEFFEDCBA9876543210")).value();
    int edits = 0, decoded = 0, failures = 0;
    for (const auto& [name, payload] : {std::pair<const char*, const Bytes*>{"card", &card}, {"PSAM", &psam}}) {
        for (std::size_t at = 0; at < payload->size(); ++at) {
            const std::uint8_t old_value = (*payload)[at];
            const std::uint8_t values[] = {0x00,
                                           0x01,
                                           0x02,
                                           0xFF,
                                           static_cast<std::uint8_t>(old_value + 1),
                                           static_cast<std::uint8_t>(old_value - 1),
                                           static_cast<std::uint8_t>(old_value ^ 0x80)};
            for (std::uint8_t value : values) {
                if (value == old_value) continue;
                Bytes edited = *payload;
                edited[at] = value;
                ++edits;
                if (!VirtualCard::in_memory(edited).ok()) continue;  // refused: fine
                ++decoded;
                const std::string what = run_isolated(edited);
                if (what.empty()) continue;
                ++failures;
                // Report the first few in full; the count says the rest.
                const std::string report = std::string(name) + " payload byte " + std::to_string(at) + " " + hx(Bytes{old_value}) + " -> " +
                                           hx(Bytes{value}) + ": " + what;
                if (failures <= 20) FAIL_CHECK(report);
            }
        }
    }
    MESSAGE(edits << " edits, " << decoded << " decoded into a card, " << failures << " crashed");
    CHECK(failures == 0);
}
