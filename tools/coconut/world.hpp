// The island: one directory holding everything an operator of the scheme keeps — the HSM store and
// ceremony outputs, the clearing data, the registry files loaded into it, the issued cards, PSAMs and
// terminal queues — and a manifest (island.json) listing what was issued.
//
//   D/hsm/                 coconut-hsmd key store (sealed keys, local master key, audit log)
//   D/keys/                HSM client keys (clearing, issuance), the personalization station's
//                          transport key, the custodians' component sheets, ceremony.json (KCVs only)
//   D/clearing/            coconut-clearingd data (LMDB ledger + registries)
//   D/registry/            every registry JSON loaded with `coconut-clearingd admin load`
//   D/tokens/              cardholder API tokens, one 0600 file per card (coconut-clearingd admin issue-tokens)
//   D/logs/                daemon logs
//   IMAGES/                card images, PSAM images and terminal queues (island.json "images_dir"; D/media by
//                          default — a tmpfs directory makes every card commit's fdatasync free)
//   D/island.json          participants, terminals, cards (no secrets)
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace coconut::cli {

namespace fs = std::filesystem;

struct WorldPaths {
    fs::path dir;
    fs::path hsm_store() const { return dir / "hsm"; }
    fs::path keys() const { return dir / "keys"; }
    fs::path clearing_key() const { return keys() / "clearing.key"; }
    fs::path issuance_key() const { return keys() / "issuance.key"; }
    // A service counter's HSM client (permission maintenance: APPLICATION BLOCK MACs for coconut-terminal).
    fs::path counter_key() const { return keys() / "counter.key"; }
    fs::path transport_key() const { return keys() / "transport.key"; }
    fs::path ceremony() const { return keys() / "ceremony.json"; }
    fs::path clearing_data() const { return dir / "clearing"; }
    fs::path registry() const { return dir / "registry"; }
    fs::path tokens() const { return dir / "tokens"; }
    fs::path logs() const { return dir / "logs"; }
    fs::path manifest() const { return dir / "island.json"; }
};

// The issuer identity of every card of this scheme (EF15 issuer id = the HSM's issuer factor).
inline constexpr const char* scheme_issuer_id = "4600000000000001";

struct Participant {
    std::uint64_t id = 0;
    std::string name;
    std::string kind;  // bus, shop, clinic, counter (a service desk: sells and takes back cards)
    std::string bank_account;
    std::uint32_t fee_rate_bp = 0;
};

struct TerminalEntry {
    std::string terminal_id;       // field 41, 8 characters
    std::string psam_terminal_id;  // 12 digits
    std::uint64_t participant_id = 0;
    std::string kind;             // bus, shop, clinic, counter
    std::uint16_t line = 0;       // buses: the line the validator serves
    bool distance_fares = false;  // buses: entry/exit fares by stops (else flat)
    fs::path psam_image;
    fs::path queue;
};

struct CardEntry {
    std::string asn;  // 20 digits
    fs::path image;
    std::uint32_t purse_opening_fen = 0;
    std::uint32_t medical_opening_fen = 0;
    std::string holder;
    bool tourist = false;  // purse only (CardIssueOptions::tourist)
    bool stock = false;    // kept at the service counter for a replacement (empty; not in the day until handed out)
};

// The social-security number printed into card `asn`'s cardholder data at issuance (a resident's card; the
// holder was born 1990-01-01).
std::string holder_ssn(const std::string& asn);

struct Island {
    fs::path images_dir;
    std::vector<Participant> participants;
    std::vector<TerminalEntry> terminals;
    std::vector<CardEntry> cards;
};

// island.json, or an empty island (images_dir = `default_images`) when none exists yet.
Island load_island(const WorldPaths& world, const fs::path& default_images);
void save_island(const WorldPaths& world, const Island& island);

// ---- keys ceremony -------------------------------------------------------------------------------

struct CeremonyKey {
    std::string label;
    std::string usage;  // coconut-hsmd --usage
    std::string kcv;
};

// Creates the HSM store under D/hsm, imports every master key and the transport key from two components
// each (generated here, written to one sheet per custodian), adds the HSM clients, and writes
// ceremony.json. Refuses an existing store. Prints the KCVs and what to keep safe unless `quiet`.
std::vector<CeremonyKey> run_ceremony(const WorldPaths& world, bool quiet);

// ---- issuance (needs a running coconut-hsmd: `hsm_endpoint` HOST:PORT) ------------------------------

struct CardIssueOptions {
    std::size_t count = 0;
    std::uint64_t seed = 1;  // card DRBG seeds, ASNs and opening balances derive from it
    std::uint32_t purse_opening_fen_min = 10'000;
    std::uint32_t purse_opening_fen_max = 30'000;
    std::uint32_t medical_opening_fen = 10'000;  // 100 CNY: clinic bills beyond it fall to the purse
    // Purse-only cards for visitors (docs/CARD-SPEC.md §9): no social-security application, no SSSE key,
    // no cardholder, no medical account.
    bool tourist = false;
};

// Personalizes `count` new cards (keys derived by the HSM, received under the transport key and checked
// against their KCVs), appends them to the island, and returns them. Registration is separate
// (register_with_clearing) so a caller registers cards and terminals in one registry load.
std::vector<CardEntry> issue_cards(const WorldPaths& world, Island& island, const std::string& hsm_endpoint,
                                   const CardIssueOptions& options);

// A PSAM for `psam_terminal_id` holding the issuer-level purchase key exported by the HSM.
void issue_psam(const WorldPaths& world, const std::string& hsm_endpoint, const std::string& psam_terminal_id, const fs::path& image);

// The registry JSON (clearing/README.md "Registry file") of the given participants, terminals and cards.
nlohmann::json registry_entries(const std::vector<Participant>& participants, const std::vector<TerminalEntry>& terminals,
                                const std::vector<CardEntry>& cards);
// The first entry of `entries` (registry_entries) the registry's validator refuses, as "terminals[0]: …";
// nothing when `admin load` will accept every entry (what needs the stored registry aside).
std::optional<std::string> registry_entries_problem(const nlohmann::json& entries);

// Registry JSON for the given participants, terminals and cards, written under D/registry and loaded with
// `coconut-clearingd admin load` (the daemon must not be serving D/clearing). Returns the tool's report.
nlohmann::json register_with_clearing(const WorldPaths& world, const std::string& name, const std::vector<Participant>& participants,
                                      const std::vector<TerminalEntry>& terminals, const std::vector<CardEntry>& cards);

// Cardholder API tokens (`coconut-clearingd admin issue-tokens`: every registered card without a token) into
// D/tokens; checks that each of `cards` has its file, mode 0600. Returns a one-line report.
std::string issue_card_tokens(const WorldPaths& world, const std::vector<CardEntry>& cards);
// D/tokens/<card number>.token: the card number is the ASN's rightmost 16 digits.
fs::path card_token_file(const WorldPaths& world, const std::string& asn);

// A clerk of the clearing's HTTP API (`coconut-clearingd admin clerk-add`, the daemon stopped) with `roles`
// ("settlement", "read,hotlist" …); its token, printed once by the tool, is kept in D/keys/<name>.token (0600).
fs::path add_clerk(const WorldPaths& world, const std::string& name, const std::string& roles);

}  // namespace coconut::cli
