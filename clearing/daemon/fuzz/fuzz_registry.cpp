// libFuzzer target for what the clearing daemon decodes from its registry: the records stored as LMDB
// values (cards, terminals, participants, risk flags, load attempts, holds, the hotlist log, purchase
// proofs, …) as every reader and `coconut-clearingd check` decode them, and the registry JSON file
// (load_registry, `coconut-clearingd admin load-registry`). A data directory is a file anyone with disk
// access can edit, and a registry file comes from outside.
//
// Each input gets a fresh ledger and registry loaded from clearing_world.hpp's file. Byte 0:
//   even  raw records: then repeated table (1, mod the tables below) ‖ key length (1) ‖ key ‖ value length
//         (2, BE) ‖ value, each put into that table over what is there; then every reader and check()
//   odd   the rest is a registry JSON file, loaded over the sample
// Properties: nothing crashes or throws; a registry file that loads leaves a registry check() passes.
#include "clearing_world.hpp"

#include <coconut/ledger/lmdb.hpp>

#include <nlohmann/json.hpp>

namespace {

using namespace coconut;
using namespace coconut::clearing;

constexpr std::string_view target = "fuzz_registry";
// Registry::open's tables.
constexpr const char* tables[] = {"cards",   "participants", "terminals", "risk",       "loads", "holds",
                                  "hotlist", "reversals",    "purchases", "challenges", "meta",  "visits"};
constexpr std::size_t risk_pages_max = 8;

fuzz::ScratchDir& scratch() {
    static fuzz::ScratchDir dir(target);
    return dir;
}

void put_raw(fuzz_world::World& world, fuzz::Reader& input) {
    std::array<MDB_dbi, std::size(tables)> dbis{};
    for (std::size_t t = 0; t < std::size(tables); ++t) {
        auto dbi = world.ledger->env().open_table(tables[t]);  // its own write transaction: before ours
        if (!dbi) fuzz::fail(target, "table: " + dbi.error().message());
        dbis[t] = *dbi;
    }
    auto txn = lmdb::Txn::begin(world.ledger->env(), lmdb::Txn::Mode::read_write);
    if (!txn) fuzz::fail(target, "write transaction: " + txn.error().message());
    while (!input.empty()) {
        const MDB_dbi dbi = dbis[input.byte() % dbis.size()];
        const ByteView key = input.take(input.byte());
        const ByteView value = input.take(input.be16());
        if (key.empty()) continue;               // LMDB refuses empty keys
        if (!txn->put(dbi, key, value)) return;  // e.g. MDB_BAD_VALSIZE: nothing of this input is committed
    }
    if (!txn->commit()) fuzz::fail(target, "commit of the raw records failed");
}

// Every read the daemon, the HTTP API and `check` make of the registry.
void read_everything(const fuzz_world::World& world) {
    const Registry& registry = *world.registry;
    (void)registry.cards();
    (void)registry.participants();
    (void)registry.terminals();
    (void)registry.risk_flags();
    (void)registry.load_attempts();
    (void)registry.holds();
    (void)registry.hotlist_version();
    (void)registry.hotlist_chunk(0, 0);
    (void)registry.hotlist_chunk(0, 1);
    for (std::uint64_t id : {1001u, 2002u, 3003u}) (void)registry.participant(id);
    for (const char* id : {"BUS00042", "SHOP0042", "CLINIC42"}) (void)registry.terminal(id);
    for (const char* digits : {"46010000000011112222", "46010000000033334444"}) {
        Asn asn{};
        const Bytes bcd = *digits_to_bcd(digits);
        std::copy(bcd.begin(), bcd.end(), asn.begin());
        (void)registry.card(asn);
        (void)registry.load_attempt(asn, 0);
        (void)registry.risk_page("", 5, asn);
    }
    std::string cursor;
    for (std::size_t page = 0; page < risk_pages_max; ++page) {
        auto risk = registry.risk_page(cursor, 3);
        if (!risk || risk->next_cursor.empty()) break;
        cursor = risk->next_cursor;
    }
    (void)check(*world.ledger, registry);
}

void write_seeds(const std::filesystem::path& dir) {
    // Raw mode: every record the sample registry stores, as it stores it, with one record of each kind
    // the daemon adds while it serves (written by the registry's own writers).
    auto world = fuzz_world::open_world(scratch() / "seed");
    {
        const Registry& r = *world.registry;
        const Asn asn{0x46, 0x01, 0, 0, 0, 0, 0x11, 0x11, 0x22, 0x22};
        auto txn = lmdb::Txn::begin(world.ledger->env(), lmdb::Txn::Mode::read_write);
        if (!txn) fuzz::fail(target, "seed: write transaction");
        (void)r.put_risk(*txn, RiskFlag{RiskKind::atc_gap, asn, 7, 0x06, 1'790'000'000'000'000'000, "offline ATC 7 after 3"});
        (void)r.put_load_attempt(*txn, asn, 4, LoadAttempt{1, ledger::Id{11, 12}, 1000, "SHOP0042"});
        (void)r.put_hold(*txn, ledger::Id{21, 22}, HoldRecord{ledger::Id{23, 24}, 2500, asn});
        (void)r.put_reversal(*txn, ledger::Id{31, 32}, 1000);
        const PurchaseProof proof{{1, 2, 3, 4}, {{0x20, 0x26, 0x12, 0x06}, {0x10, 0x00, 0x00}}, 0x06, 250, 7, 8000, {}};
        (void)r.put_purchase_proof(*txn, {asn, {0x46, 0x01, 0, 0, 0, 0x42}, 9}, proof);
        (void)r.put_challenge_used(*txn, iso8583::HostChallenge{0x69, 0x80, 0, 0, 1}, 0);
        if (!txn->commit()) fuzz::fail(target, "seed: commit");
    }
    Bytes all{0};
    for (std::size_t t = 0; t < std::size(tables); ++t) {
        Bytes one{0};
        auto dbi = world.ledger->env().open_table(tables[t]);
        auto txn = lmdb::Txn::begin(world.ledger->env(), lmdb::Txn::Mode::read_only);
        if (!txn || !dbi) fuzz::fail(target, "seed: cannot read the sample");
        auto cursor = lmdb::Cursor::open(*txn, *dbi);
        for (auto entry = cursor->first(); entry && *entry; entry = cursor->next()) {
            const ByteView key = (*entry)->key;
            const ByteView value = (*entry)->value;
            if (key.size() > 255 || value.size() > 0xFFFF) continue;
            Bytes record{static_cast<std::uint8_t>(t), static_cast<std::uint8_t>(key.size())};
            append(record, key);
            append_be(record, value.size(), 2);
            append(record, value);
            append(one, record);
            if (all.size() < 4096) append(all, record);
        }
        if (one.size() > 1) fuzz::write_seed(dir, std::string("raw-") + tables[t], one);
    }
    fuzz::write_seed(dir, "raw-all", all);
    // Import mode: the sample file, and one that changes statuses and adds entries.
    const auto text_seed = [&](std::string_view name, std::string_view text) {
        Bytes input{1};
        append(input, fuzz::bytes_of(text));
        fuzz::write_seed(dir, name, input);
    };
    text_seed("import-sample", fuzz_world::registry_json);
    auto changed = nlohmann::json::parse(fuzz_world::registry_json);
    changed["cards"][0]["status"] = "blocked";
    changed["cards"][1]["status"] = "active";
    changed["cards"].push_back({{"asn", "46010000000077778888"}, {"issuer_id", "4600000000000003"}, {"purse_balance_fen", 1}});
    changed["terminals"].push_back({{"terminal_id", "BUS00043"}, {"psam_terminal_id", "460100000045"}, {"participant_id", 1001}});
    text_seed("import-changes", changed.dump());
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    fuzz::write_seeds_if_requested(write_seeds);
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    fuzz::Reader input({data, size});
    const bool import = (input.byte() & 1) != 0;
    static const fuzz_world::Template loaded(scratch() / "template");
    const auto dir = scratch() / "data";
    {
        auto world = loaded.fresh(dir);
        if (import) {
            const std::string_view text = input.text(input.size());
            auto loaded = load_registry(*world.ledger, *world.registry, text);
            if (loaded) {
                auto report = check(*world.ledger, *world.registry);
                if (!report) fuzz::fail(target, "check failed to run after a load: " + report.error().message);
                if (!report->ok()) {
                    fuzz::fail(target, "a registry file that loaded leaves a registry check() refuses: " +
                                           (report->problems.empty() ? std::string("ledger") : report->problems.front()));
                }
            }
        } else {
            put_raw(world, input);
        }
        read_everything(world);
    }
    return 0;
}
