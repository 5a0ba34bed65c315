// What the clearing daemon's fuzz targets (fuzz_registry, fuzz_clearing_http) set up alike: a ledger
// and its registry in a fresh directory, loaded from one registry file with every kind of entry.
#pragma once

#include <coconut/clearing/check.hpp>
#include <coconut/clearing/registry.hpp>

#include <fuzz_support.hpp>

#include <filesystem>
#include <memory>
#include <string_view>

namespace coconut::clearing::fuzz_world {

// Two participants of each kind that settles differently, a terminal each, cards in every status.
inline constexpr std::string_view registry_json = R"({
  "participants": [{"id": 1001, "name": "Sanya Bus", "kind": "bus", "bank_account": "6222000011112222", "fee_rate_bp": 25},
                   {"id": 2002, "name": "Coconut Grove Shop", "kind": "shop", "bank_account": "6222000033334444"},
                   {"id": 3003, "name": "Sanya Clinic", "kind": "clinic", "bank_account": "6222000055556666", "fee_rate_bp": 0}],
  "terminals": [{"terminal_id": "BUS00042", "psam_terminal_id": "460100000042", "participant_id": 1001, "merchant_id": "SYBUS0042"},
                {"terminal_id": "SHOP0042", "psam_terminal_id": "460100000043", "participant_id": 2002},
                {"terminal_id": "CLINIC42", "psam_terminal_id": "460100000044", "participant_id": 3003}],
  "cards": [{"asn": "46010000000011112222", "issuer_id": "4600000000000001", "purse_balance_fen": 8000, "medical_balance_fen": 30000},
            {"asn": "46010000000033334444", "issuer_id": "4600000000000001", "status": "lost", "purse_balance_fen": 500},
            {"asn": "46010000000055556666", "issuer_id": "4600000000000002", "status": "blocked", "purse_balance_fen": 0,
             "tac_key_version": 2}]
})";
// The cards above, as field 2 / the HTTP API number them (the ASN's rightmost 16 digits).
inline constexpr std::string_view card_numbers[] = {"0000000011112222", "0000000033334444", "0000000055556666"};

// A map this size holds what a fuzz process writes; a smaller map is quicker to set up.
inline constexpr std::size_t map_size_bytes = 64u << 20;

struct World {
    std::unique_ptr<ledger::Ledger> ledger;
    std::unique_ptr<Registry> registry;
};

// A new ledger and registry in `directory` (created), loaded from registry_json unless `load` is false.
inline World open_world(const std::filesystem::path& directory, bool load = true) {
    std::filesystem::create_directories(directory);
    ledger::Options options;
    options.directory = directory.string();
    options.map_size_bytes = map_size_bytes;
    auto opened = ledger::Ledger::open(options);
    if (!opened) fuzz::fail("clearing_world", "ledger: " + opened.error().message);
    World world{std::move(opened).value(), nullptr};
    auto registry = Registry::open(world.ledger->env());
    if (!registry) fuzz::fail("clearing_world", "registry: " + registry.error().message);
    world.registry = std::move(registry).value();
    if (load) {
        auto loaded = load_registry(*world.ledger, *world.registry, registry_json);
        if (!loaded) fuzz::fail("clearing_world", "registry file: " + loaded.error().message);
    }
    return world;
}

// A loaded world's files, made once and copied for each input that needs a fresh one: loading the
// registry file costs tens of milliseconds under the sanitizers, a copy of the files a fraction of one.
class Template {
public:
    explicit Template(std::filesystem::path directory) : directory_(std::move(directory)) { open_world(directory_); }
    World fresh(const std::filesystem::path& directory) const {
        std::error_code ignored;
        std::filesystem::remove_all(directory, ignored);
        std::filesystem::create_directories(directory);
        for (const auto& entry : std::filesystem::directory_iterator(directory_)) {
            if (entry.path().filename() == "lock.mdb") continue;  // the copy gets its own
            std::filesystem::copy_file(entry.path(), directory / entry.path().filename());
        }
        return open_world(directory, false);
    }

private:
    std::filesystem::path directory_;
};

}  // namespace coconut::clearing::fuzz_world
