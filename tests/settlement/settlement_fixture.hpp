// A hand-computed settlement day in a real LMDB ledger (clearing/ledger + the daemon's registry),
// with transfers created directly as the daemon books them: offline purchases, TAC-failed uploads,
// online loads and clinic holds (pending → posted in part, voided, expired).
#pragma once

#include "../clearing/ledger_fixture.hpp"

#include <coconut/clearing/registry.hpp>
#include <coconut/settlement/settlement.hpp>

#include <doctest/doctest.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>

namespace settle_test {

using namespace coconut;
using namespace coconut::settlement;
namespace codes = clearing::transfer_codes;

using test::ns_per_s;

// The ledger tests' temporary directory, with its path as a std::filesystem::path.
struct TempDir : test::TempDir {
    std::filesystem::path path() const { return test::TempDir::path(); }
};

inline std::string read(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
}

inline void write(const std::filesystem::path& path, std::string_view text) {
    std::ofstream out(path, std::ios::binary);
    out << text;
}

// Every file of a directory by name, with its bytes.
inline std::map<std::string, std::string> snapshot(const std::filesystem::path& dir) {
    std::map<std::string, std::string> files;
    for (const auto& e : std::filesystem::directory_iterator(dir)) files[e.path().filename().string()] = read(e.path());
    return files;
}

inline Date date(int y, unsigned m, unsigned d) { return Date{std::chrono::year{y}, std::chrono::month{m}, std::chrono::day{d}}; }
// A local (UTC+8) wall time on `day`, in ns.
inline std::uint64_t local_ns(const Date& day, unsigned hour, unsigned minute, unsigned second = 0) {
    return cutoff_ns(day, hour * 60 + minute) + std::uint64_t{second} * ns_per_s;
}

// The business date of the hand-computed day and its neighbours.
inline const Date day = date(2026, 3, 10);
inline const Date day_before = date(2026, 3, 9);
inline const Date day_after = date(2026, 3, 11);

inline constexpr std::string_view registry_json = R"({
  "participants": [
    {"id": 1001, "name": "Haikou Bus", "kind": "bus", "bank_account": "6222000010010001", "fee_rate_bp": 30},
    {"id": 1002, "name": "Coconut & Co Shop", "kind": "shop", "bank_account": "6222000010020002", "fee_rate_bp": 125},
    {"id": 1003, "name": "Island Clinic", "kind": "clinic", "bank_account": "6222000010030003", "fee_rate_bp": 50},
    {"id": 1004, "name": "Sanya Load Kiosk", "kind": "shop", "bank_account": "6222000010040004", "fee_rate_bp": 0}
  ],
  "cards": [
    {"asn": "46010000000000000001", "issuer_id": "0123456789ABCDEF", "purse_balance_fen": 100000, "medical_balance_fen": 50000},
    {"asn": "46010000000000000002", "issuer_id": "0123456789ABCDEF", "purse_balance_fen": 100000, "medical_balance_fen": 50000}
  ]
})";

inline constexpr std::string_view config_json = R"({
  "initiator_name": "Coconut Card Clearing",
  "purse_float": {"name": "Hainan Coconut Bank purse float", "account": "FLOAT0001", "agent_bic": "HNCBCNBJXXX"},
  "medical_fund": {"name": "Hainan Social Insurance medical fund", "account": "FUND0001", "agent_bic": "HNSICNBJ"}
})";

inline clearing::Asn card(unsigned n) {
    clearing::Asn asn{};
    asn[9] = static_cast<std::uint8_t>(n);  // BCD …0001 / …0002
    asn[0] = 0x46;
    asn[1] = 0x01;
    return asn;
}

struct Day {
    TempDir data;
    TempDir out_dir;
    std::shared_ptr<std::atomic<std::uint64_t>> clock = std::make_shared<std::atomic<std::uint64_t>>(local_ns(day_before, 9, 0));
    std::unique_ptr<ledger::Ledger> ledger;
    std::unique_ptr<clearing::Registry> registry;
    std::uint64_t next_id = 1;

    Day() {
        open();
        auto loaded = clearing::load_registry(*ledger, *registry, registry_json);
        REQUIRE_MESSAGE(loaded.ok(), (loaded.ok() ? "" : loaded.error().message));
    }

    void open() {
        registry.reset();
        ledger.reset();
        ledger::Options options;
        options.directory = data.path().string();
        options.check_after_commit = true;
        options.clock_ns = [clock = clock] { return clock->load(); };
        auto opened = ledger::Ledger::open(options);
        REQUIRE(opened.ok());
        ledger = std::move(*opened);
        auto r = clearing::Registry::open(ledger->env());
        REQUIRE(r.ok());
        registry = std::move(*r);
    }
    void close() {
        registry.reset();
        ledger.reset();
    }

    std::filesystem::path out() const { return out_dir.path(); }
    void at(std::uint64_t ns) { clock->store(ns); }

    ledger::Id book(ledger::Transfer t, ledger::ResultCode expected = ledger::ResultCode::ok) {
        t.id = ledger::Id{0x7E57, next_id++};
        const std::vector<ledger::Event> batch = {t};
        auto results = ledger->apply(batch);
        REQUIRE(results.ok());
        CHECK_MESSAGE((*results)[0].code == expected, ledger::to_string((*results)[0].code));
        return t.id;
    }
    ledger::Id purchase(std::uint64_t participant, std::uint64_t fen, unsigned card_number = 1) {
        ledger::Transfer t;
        t.debit_account_id = clearing::purse_shadow_account(card(card_number));
        t.credit_account_id = clearing::payable_account(participant, clearing::ledgers::purse);
        t.amount = fen;
        t.ledger = clearing::ledgers::purse;
        t.code = codes::offline_purchase;
        t.user_data_64 = participant;
        return book(t);
    }
    ledger::Id tac_failed(std::uint64_t participant, std::uint64_t fen) {
        ledger::Transfer t;
        t.debit_account_id = clearing::purse_shadow_account(card(2));
        t.credit_account_id = clearing::purse_suspense_account;
        t.amount = fen;
        t.ledger = clearing::ledgers::purse;
        t.code = codes::tac_failed;
        t.user_data_64 = participant;
        return book(t);
    }
    ledger::Id hold(const ledger::Id& debit, const ledger::Id& credit, std::uint32_t ledger_number, std::uint16_t code,
                    std::uint64_t participant, std::uint64_t fen, std::uint32_t timeout_s = 0) {
        ledger::Transfer t;
        t.debit_account_id = debit;
        t.credit_account_id = credit;
        t.amount = fen;
        t.ledger = ledger_number;
        t.code = code;
        t.flags = ledger::transfer_flags::pending;
        t.timeout_s = timeout_s;
        t.user_data_64 = participant;
        return book(t);
    }
    ledger::Id load_hold(std::uint64_t participant, std::uint64_t fen) {
        return hold(clearing::purse_float_account, clearing::purse_shadow_account(card(1)), clearing::ledgers::purse, codes::online_load,
                    participant, fen);
    }
    ledger::Id medical_hold(std::uint64_t clinic, std::uint64_t fen, std::uint32_t timeout_s = 0) {
        return hold(clearing::medical_account(card(1)), clearing::payable_account(clinic, clearing::ledgers::medical),
                    clearing::ledgers::medical, codes::clinic_medical, clinic, fen, timeout_s);
    }
    // user_data_64 0: the post carries no participant (settlement takes the hold's).
    ledger::Id post(const ledger::Id& hold, std::uint64_t fen = ledger::amount_max, std::uint64_t participant = 0) {
        ledger::Transfer t;
        t.pending_id = hold;
        t.amount = fen;
        t.flags = ledger::transfer_flags::post_pending;
        t.user_data_64 = participant;
        return book(t);
    }
    ledger::Id void_(const ledger::Id& hold) {
        ledger::Transfer t;
        t.pending_id = hold;
        t.flags = ledger::transfer_flags::void_pending;
        return book(t);
    }

    // The hand-computed day (settlement/README.md "A worked day" has the arithmetic).
    void book_the_day() {
        at(local_ns(day_before, 23, 59));
        purchase(1001, 111);  // before the window: cycle 20260309
        at(local_ns(day, 8, 0));
        purchase(1001, 200);
        purchase(1001, 300);
        purchase(1001, 333);
        purchase(1002, 1000);
        purchase(1002, 1040, 2);
        post(load_hold(1002, 500), ledger::amount_max, 1002);
        purchase(1003, 1200);
        post(medical_hold(1003, 8000), 6500);  // partial post: 6,500 counts, 1,500 released
        void_(medical_hold(1003, 3000));       // voided: nothing
        medical_hold(1003, 2000, 60);          // expires below: nothing
        post(load_hold(1004, 5000));           // the post names no participant: the hold's counts
        void_(load_hold(1004, 700));
        load_hold(1004, 900);   // still pending at the cut-off: nothing
        tac_failed(1002, 150);  // suspense: never paid
        at(local_ns(day, 12, 0));
        REQUIRE(ledger->expire_pending().value() == 1);
        at(local_ns(day_after, 0, 0, 30));
        purchase(1001, 999);  // uploaded after the 24:00 cut-off: cycle 20260311
    }

    Config config() const { return parse_config(config_json).value(); }
    std::vector<clearing::Participant> participants() const { return registry->participants().value(); }

    RunOptions run_options(const Date& business_date) const {
        RunOptions o;
        o.date = business_date;
        o.config = config();
        o.out = out();
        o.now_ns = local_ns(date(2026, 3, 13), 12, 0);  // every cycle of the tests is past its cut-off
        return o;
    }
};

}  // namespace settle_test
