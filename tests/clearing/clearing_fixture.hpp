// Test rig of the clearing engine: the daemon (coconut::clearing::Daemon) on a temporary data directory,
// with an in-process HSM (hsm::Hsm over a key store with a known TAC master);
// helpers that build 0320 uploads whose TAC is computed from the card's DTK (docs/CARD-SPEC.md §4).
#pragma once

#include <coconut/clearing/check.hpp>
#include <coconut/clearing/daemon.hpp>
#include <coconut/clearing/engine.hpp>
#include <coconut/clearing/hsm_adapters.hpp>
#include <coconut/crypto/card_crypto.hpp>

#include <doctest/doctest.h>

#include <atomic>
#include <filesystem>
#include <future>
#include <random>

namespace clearing_test {

using namespace coconut;
using namespace coconut::clearing;
using iso8583::Message;
using iso8583::ResponseCode;

inline const std::string tac_master_hex = "404142434445464748494A4B4C4D4E4F";
inline const std::string load_master_hex = "11223344556677888877665544332211";
inline const std::string internal_auth_master_hex = "00112233445566778899AABBCCDDEEFF";  // the purse's IAK (no PIN)
inline const std::string ssse_auth_master_hex = "8899AABBCCDDEEFF0011223344556677";      // the SSSE application's
inline const std::string issuer_hex = "4600000000000001";
inline const std::string psam_terminal = "460100000001";
inline const std::string card_a = "46010000000012345678";
inline const std::string card_b = "46010000000087654321";
inline constexpr std::uint64_t bus_operator = 1001;
inline constexpr std::uint64_t clinic = 3003;
inline const std::string clinic_psam_terminal = "460100000003";

struct TempDir {
    std::filesystem::path path;
    TempDir() {
        std::random_device rd;
        path = std::filesystem::temp_directory_path() / ("coconut-clearing-" + std::to_string(rd()) + std::to_string(rd()));
        std::filesystem::create_directories(path);
    }
    ~TempDir() {
        std::error_code ignored;
        std::filesystem::remove_all(path, ignored);
    }
};

inline Asn asn_of(const std::string& digits) {
    Asn asn{};
    const Bytes bcd = *digits_to_bcd(digits);
    std::copy(bcd.begin(), bcd.end(), asn.begin());
    return asn;
}

inline std::string registry_json() {
    return R"({
      "participants": [{"id": 1001, "name": "Haikou Bus No. 1", "kind": "bus", "bank_account": "6222000011112222", "fee_rate_bp": 30},
                       {"id": 2002, "name": "Coconut Shop", "kind": "shop", "bank_account": "6222000033334444"},
                       {"id": 3003, "name": "Haikou Clinic", "kind": "clinic", "bank_account": "6222000055556666"}],
      "terminals": [{"terminal_id": "BUS00001", "psam_terminal_id": "460100000001", "participant_id": 1001, "merchant_id": "HKBUS0001"},
                    {"terminal_id": "SHOP0001", "psam_terminal_id": "460100000002", "participant_id": 2002},
                    {"terminal_id": "CLINIC01", "psam_terminal_id": "460100000003", "participant_id": 3003}],
      "cards": [{"asn": "46010000000012345678", "issuer_id": "4600000000000001", "purse_balance_fen": 5000, "medical_balance_fen": 20000},
                {"asn": "46010000000087654321", "issuer_id": "4600000000000001", "purse_balance_fen": 1000}]
    })";
}

// One card transaction as a card would sign it.
struct Tap {
    std::string asn = card_a;
    std::uint8_t type = crypto::type_capp_purchase;
    std::uint32_t amount_fen = 200;
    std::uint32_t balance_before_fen = 5000;
    std::uint16_t atc = 0;
    // The PSAM's serial: unset, one per ATC (atc + 1), as one card's taps at one terminal get.
    std::optional<std::uint32_t> terminal_serial;
    std::string terminal = psam_terminal;
    std::string date = "20261126";
    std::string time = "103000";
    bool forge_tac = false;
};

inline PurseTransaction purse_transaction(const Tap& tap) {
    PurseTransaction t;
    t.asn = asn_of(tap.asn);
    t.type = tap.type;
    t.balance_before_fen = tap.balance_before_fen;
    t.offline_atc = tap.atc;
    t.terminal_serial = tap.terminal_serial.value_or(tap.atc + 1u);
    const Bytes terminal = *digits_to_bcd(tap.terminal);
    std::copy(terminal.begin(), terminal.end(), t.terminal_id.begin());
    const Bytes date = *digits_to_bcd(tap.date), time = *digits_to_bcd(tap.time);
    std::copy(date.begin(), date.end(), t.when.date.begin());
    std::copy(time.begin(), time.end(), t.when.time.begin());
    crypto::Block issuer{};
    const Bytes issuer_bytes = hex(issuer_hex);
    std::copy(issuer_bytes.begin(), issuer_bytes.end(), issuer.begin());
    const crypto::Key16 dtk = crypto::diversify_card_key(crypto::Key16(hex(tac_master_hex)), issuer, crypto::card_factor_from_asn(t.asn));
    t.tac = crypto::des_mac(crypto::tac_key(dtk),
                            crypto::purchase_tac_input(tap.amount_fen, tap.type, t.terminal_id, t.terminal_serial, t.when));
    if (tap.forge_tac) t.tac[0] ^= 0x01;
    return t;
}

// The clearing id of the tap's upload: what its TAC proves (ASN, PSAM terminal id, terminal serial).
inline ledger::Id purchase_id(const Tap& tap) {
    const PurseTransaction t = purse_transaction(tap);
    return offline_purchase_transfer(t.asn, t.terminal_id, t.terminal_serial);
}

inline Message upload_message(const Tap& tap, std::uint32_t stan, const std::string& terminal_id = "BUS00001") {
    Message m("0320");
    m.set(2, tap.asn.substr(4));
    m.set(3, "000000");
    m.set_number(4, tap.amount_fen, 12);
    m.set_number(11, stan, 6);
    m.set(12, tap.time);
    m.set(13, tap.date.substr(4));
    m.set(25, "08");
    m.set(41, terminal_id);
    m.set(60, "000001");
    m.set(62, encode_purse_transaction(purse_transaction(tap)));
    return m;
}

inline Message network_message(std::uint32_t code, std::uint32_t stan, const std::string& terminal_id = "BUS00001") {
    Message m("0800");
    m.set(7, "1126103000");
    m.set_number(11, stan, 6);
    m.set(41, terminal_id);
    m.set_number(70, code, 3);
    return m;
}

// The daemon (coconut::clearing::Daemon) on a temporary directory with the registry above, an HSM in
// process, no HTTP port; with `terminals`, ISO 8583 listeners on the daemon's I/O thread, in the
// background. The engine's answers come from the writer's thread (Rig::send waits for them without the
// I/O thread); the expiry scan is the tests' to call.
struct Rig {
    TempDir dir;
    // The ledger's clock (ns); tests move it to make holds expire.
    std::shared_ptr<std::atomic<std::uint64_t>> clock_ns = std::make_shared<std::atomic<std::uint64_t>>(1'800'000'000'000'000'000ULL);
    std::unique_ptr<LocalHsm> verifier;
    std::unique_ptr<Daemon> daemon;
    ledger::Ledger* ledger = nullptr;
    Registry* registry = nullptr;
    ledger::Writer* writer = nullptr;
    Engine* engine = nullptr;
    SessionState session;

    // `commit_hook`: DaemonOptions::commit_hook (a cluster node's journal stream, or a test's stand-in).
    explicit Rig(EngineOptions engine_options = {}, std::vector<ServerOptions> terminals = {},
                 std::function<lmdb::CommitHook(ledger::Ledger&)> commit_hook = {}) {
        verifier = std::make_unique<LocalHsm>(std::make_shared<const hsm::Hsm>(key_store(dir.path / "hsm")), "mk-tac");
        DaemonOptions options;
        options.data = dir.path / "data";
        options.ledger.check_after_commit = true;
        options.ledger.clock_ns = [clock = clock_ns] { return clock->load(); };
        options.writer.expiry_interval = std::chrono::milliseconds(10);  // the expiry sweep, quickly
        options.local_hsm = verifier.get();
        options.engine = engine_options;
        options.answers_on_io_thread = false;
        options.terminals = std::move(terminals);
        options.expiry_scan_interval = std::chrono::milliseconds(0);
        options.lifecycle_sweep_interval = std::chrono::milliseconds(0);  // the lifecycle sweep is the tests' to run
        options.drain_timeout = std::chrono::seconds(10);
        options.commit_hook = std::move(commit_hook);
        auto opened = Daemon::open(std::move(options));
        REQUIRE_MESSAGE(opened.ok(), (opened.ok() ? "" : opened.error().message));
        daemon = std::move(opened).value();
        ledger = &daemon->ledger();
        registry = &daemon->registry();
        auto loaded = load_registry(*ledger, *registry, registry_json());
        REQUIRE_MESSAGE(loaded.ok(), (loaded.ok() ? "" : loaded.error().message));
        auto started = daemon->start();
        REQUIRE_MESSAGE(started.ok(), (started.ok() ? "" : started.error().message));
        writer = &daemon->writer();
        engine = &daemon->engine();
        if (!daemon->options().terminals.empty()) daemon->run_in_background();
    }

    static std::shared_ptr<const hsm::KeyStore> key_store(const std::filesystem::path& store_dir) {
        REQUIRE(hsm::KeyStore::init(store_dir).ok());
        auto store = hsm::KeyStore::open(store_dir);
        REQUIRE(store.ok());
        REQUIRE(store->add_key("mk-tac", 1, hsm::KeyType::tdes2, hsm::KeyUsage::tac, crypto::Key16(hex(tac_master_hex))).ok());
        REQUIRE(store->add_key("mk-load", 1, hsm::KeyType::tdes2, hsm::KeyUsage::load, crypto::Key16(hex(load_master_hex))).ok());
        REQUIRE(store
                    ->add_key("mk-internal-auth", 1, hsm::KeyType::tdes2, hsm::KeyUsage::internal_auth,
                              crypto::Key16(hex(internal_auth_master_hex)))
                    .ok());
        REQUIRE(store
                    ->add_key(hsm::default_ssse_auth_label, 1, hsm::KeyType::tdes2, hsm::KeyUsage::ssse_auth,
                              crypto::Key16(hex(ssse_auth_master_hex)))
                    .ok());
        return std::make_shared<const hsm::KeyStore>(std::move(store.value()));
    }

    void advance_clock_s(std::uint64_t seconds) { clock_ns->fetch_add(seconds * 1'000'000'000ULL); }

    Message send(const Message& request) {
        std::promise<Message> answer;
        auto future = answer.get_future();
        engine->handle(request, session, [&answer](Message response) { answer.set_value(std::move(response)); });
        REQUIRE(future.wait_for(std::chrono::seconds(10)) == std::future_status::ready);
        return future.get();
    }

    std::string code(const Message& request) { return std::string(*send(request).get(39)); }

    void sign_on(const std::string& terminal_id = "BUS00001") { REQUIRE(code(network_message(1, 1, terminal_id)) == "00"); }

    std::int64_t balance(const ledger::Id& account_id) const {
        auto a = ledger->lookup_account(account_id);
        REQUIRE(a.ok());
        REQUIRE(a->has_value());
        return static_cast<std::int64_t>((*a)->credits_posted) - static_cast<std::int64_t>((*a)->debits_posted);
    }
    std::int64_t shadow(const std::string& asn) const { return balance(purse_shadow_account(asn_of(asn))); }
    std::int64_t payable(std::uint64_t participant) const { return balance(payable_account(participant, ledgers::purse)); }
    std::int64_t suspense() const { return balance(purse_suspense_account); }
    std::int64_t medical(const std::string& asn) const { return balance(medical_account(asn_of(asn))); }
    std::int64_t medical_payable(std::uint64_t participant) const { return balance(payable_account(participant, ledgers::medical)); }
    std::int64_t float_balance() const { return balance(purse_float_account); }
    ledger::Account account(const ledger::Id& id) const {
        auto a = ledger->lookup_account(id);
        REQUIRE(a.ok());
        REQUIRE(a->has_value());
        return **a;
    }
    std::optional<ledger::PendingState> state(const ledger::Id& id) const {
        auto s = ledger->pending_state(id);
        REQUIRE(s.ok());
        return *s;
    }
    CardRecord card(const std::string& asn) const {
        auto c = registry->card(asn_of(asn));
        REQUIRE(c.ok());
        REQUIRE(c->has_value());
        return **c;
    }
    TerminalRecord terminal(const std::string& terminal_id) const {
        auto t = registry->terminal(terminal_id);
        REQUIRE(t.ok());
        REQUIRE(t->has_value());
        return **t;
    }
    std::vector<RiskFlag> flags() const {
        auto f = registry->risk_flags();
        REQUIRE(f.ok());
        return *f;
    }
    std::size_t flags_of(RiskKind kind) const {
        std::size_t n = 0;
        for (const auto& f : flags()) n += f.kind == kind ? 1 : 0;
        return n;
    }
    void require_check() const {
        auto report = check(*ledger, *registry);
        REQUIRE(report.ok());
        for (const auto& p : report->ledger.problems) FAIL_CHECK(p);
        for (const auto& p : report->problems) FAIL_CHECK(p);
        CHECK(report->ok());
    }
};

}  // namespace clearing_test
