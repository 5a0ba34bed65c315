#include "world.hpp"

#include "certificates.hpp"
#include "errors.hpp"
#include "process.hpp"

#include <coconut/clearing/registry_validator.hpp>
#include <coconut/core/bytes.hpp>
#include <coconut/cos/card.hpp>
#include <coconut/crypto/card_crypto.hpp>
#include <coconut/core/durable_file.hpp>
#include <coconut/core/sha256.hpp>
#include <coconut/hsm/client.hpp>
#include <coconut/hsm/hsm.hpp>

#include <fmt/format.h>

#include <fstream>
#include <iostream>
#include <sstream>

namespace coconut::cli {

namespace {

using nlohmann::json;

// The scheme's master keys and the transport key, each imported from two custodians' components.
struct KeySpec {
    const char* label;
    const char* usage;
    const char* card_key;  // profile name of the derived card key ("" for the transport key)
};
// mk-internal-auth is the purse's INTERNAL AUTHENTICATE master (answered without a PIN); mk-ssse-auth the
// SSSE application's (answered only after VERIFY), the one a medical payment's proof must come from.
constexpr KeySpec scheme_keys[] = {
    {"mk-purchase", "purchase", "dpk"},
    {"mk-load", "load", "dlk"},
    {"mk-tac", "tac", "dtk"},
    {"mk-internal-auth", "internal-auth", "iak"},
    {"mk-maintenance", "maintenance", "damk"},
    {"mk-ssse-auth", "ssse-auth", "ssse_iak"},
    {"kek-issuance", "transport", ""},
};
constexpr std::size_t custodians = 2;

struct ClientSpec {
    const char* id;
    const char* permissions;
    fs::path (WorldPaths::*key_file)() const;
};
constexpr ClientSpec scheme_clients[] = {
    // The clearing verifies TACs and serves the online flows: load MAC2, INTERNAL AUTHENTICATE.
    {"clearing", "key-info,tac,load,auth", &WorldPaths::clearing_key},
    {"issuance", "key-info,issuance", &WorldPaths::issuance_key},
    // A service counter: the MAC of APPLICATION BLOCK (coconut-terminal block-card / return-card), nothing else.
    {"counter", "maintenance", &WorldPaths::counter_key},
};

void write_private(const fs::path& path, const std::string& text) {
    auto written = write_file_atomically(path, ByteView(reinterpret_cast<const std::uint8_t*>(text.data()), text.size()), 0600);
    if (!written) fail(exit_codes::io_error, fmt::format("cannot write {}: {}", path.string(), written.error().message()));
}

void make_private_dir(const fs::path& dir) {
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) fail(exit_codes::io_error, fmt::format("cannot create {}: {}", dir.string(), ec.message()));
    fs::permissions(dir, fs::perms::owner_all, ec);
}

std::string kcv_hex(const crypto::Key16& key) {
    const crypto::Kcv value = crypto::kcv(key);
    return to_hex(ByteView(value));
}

std::uint64_t digest64(const std::string& text) {
    const Sha256Digest digest = sha256(text_bytes(text));
    return read_be(ByteView(digest).first(8));
}

std::string seed_hex(std::uint64_t seed, const std::string& what) {
    const std::string text = fmt::format("coconut-card-seed:{}:{}", seed, what);
    const Sha256Digest digest = sha256(text_bytes(text));
    return to_hex(ByteView(digest).first(16));
}

crypto::Key16 read_transport_key(const WorldPaths& world) {
    std::ifstream in(world.transport_key());
    std::string label, version, key_hex;
    if (!(in >> label >> version >> key_hex))
        fail(exit_codes::bad_input, fmt::format("cannot read {} (run `coconut keys ceremony` first)", world.transport_key().string()));
    const auto bytes = from_hex(key_hex);
    if (!bytes || bytes->size() != 16) fail(exit_codes::bad_input, fmt::format("{}: not a 16-byte key", world.transport_key().string()));
    return crypto::Key16(*bytes);
}

std::unique_ptr<hsm::Client> connect_hsm(const std::string& endpoint_text, const fs::path& key_file) {
    auto endpoints = hsm::wire::parse_endpoints(endpoint_text);
    if (!endpoints) fail(exit_codes::usage, "--hsm: " + endpoints.error().message);
    auto credentials = hsm::wire::read_client_credentials(key_file);
    if (!credentials) fail(exit_codes::hsm_error, credentials.error().message);
    auto client = hsm::Client::connect(std::move(endpoints).value(), std::move(credentials.value()));
    if (!client) fail(exit_codes::hsm_error, fmt::format("HSM at {}: {}", endpoint_text, client.error().message));
    return std::move(client).value();
}

hsm::CardIdentity identity(const std::string& asn) {
    auto issuer = hsm::parse_issuer_id(scheme_issuer_id);
    auto parsed_asn = hsm::parse_asn(asn);
    if (!issuer || !parsed_asn) fail(exit_codes::bad_input, "invalid card identity " + asn);
    return {*issuer, *parsed_asn};
}

}  // namespace

std::string holder_ssn(const std::string& asn) { return fmt::format("46010019900101{:04}", std::stoull(asn.substr(4)) % 10000); }

namespace {

// Deterministic cardholder names for the simulated island (UTF-8; the card stores GBK).
std::string holder_name(std::uint64_t n) {
    static const char* const family[] = {"王", "李", "张", "刘", "陈", "杨", "黄", "吴", "林", "符"};
    static const char* const given[] = {"小椰", "海风", "南星", "思琼", "文昌", "万宁", "晓岚", "子涵", "明珠", "一帆"};
    return std::string(family[n % 10]) + given[(n / 10) % 10];
}

json participant_json(const Participant& p) {
    return {{"id", p.id}, {"name", p.name}, {"kind", p.kind}, {"bank_account", p.bank_account}, {"fee_rate_bp", p.fee_rate_bp}};
}

}  // namespace

// ---- island.json ----------------------------------------------------------------------------------

Island load_island(const WorldPaths& world, const fs::path& default_images) {
    Island island;
    island.images_dir = default_images;
    if (!fs::exists(world.manifest())) return island;
    std::ifstream in(world.manifest());
    json j;
    try {
        in >> j;
        island.images_dir = j.at("images_dir").get<std::string>();
        for (const auto& p : j.at("participants"))
            island.participants.push_back({p.at("id"), p.at("name"), p.at("kind"), p.at("bank_account"), p.at("fee_rate_bp")});
        for (const auto& t : j.at("terminals"))
            island.terminals.push_back({t.at("terminal_id"), t.at("psam_terminal_id"), t.at("participant_id"), t.at("kind"), t.at("line"),
                                        t.at("distance_fares"), t.at("psam_image").get<std::string>(), t.at("queue").get<std::string>()});
        for (const auto& c : j.at("cards"))
            island.cards.push_back({c.at("asn"), c.at("image").get<std::string>(), c.at("purse_opening_fen"), c.at("medical_opening_fen"),
                                    c.at("holder"), c.value("tourist", false), c.value("stock", false)});
    } catch (const json::exception& e) {
        fail(exit_codes::bad_input, fmt::format("{}: {}", world.manifest().string(), e.what()));
    }
    return island;
}

void save_island(const WorldPaths& world, const Island& island) {
    json j{{"images_dir", island.images_dir.string()},
           {"participants", json::array()},
           {"terminals", json::array()},
           {"cards", json::array()}};
    for (const auto& p : island.participants) j["participants"].push_back(participant_json(p));
    for (const auto& t : island.terminals)
        j["terminals"].push_back({{"terminal_id", t.terminal_id},
                                  {"psam_terminal_id", t.psam_terminal_id},
                                  {"participant_id", t.participant_id},
                                  {"kind", t.kind},
                                  {"line", t.line},
                                  {"distance_fares", t.distance_fares},
                                  {"psam_image", t.psam_image.string()},
                                  {"queue", t.queue.string()}});
    for (const auto& c : island.cards)
        j["cards"].push_back({{"asn", c.asn},
                              {"image", c.image.string()},
                              {"purse_opening_fen", c.purse_opening_fen},
                              {"medical_opening_fen", c.medical_opening_fen},
                              {"holder", c.holder},
                              {"tourist", c.tourist},
                              {"stock", c.stock}});
    write_private(world.manifest(), j.dump(1) + "\n");
}

// ---- ceremony -------------------------------------------------------------------------------------

std::vector<CeremonyKey> run_ceremony(const WorldPaths& world, bool quiet) {
    const std::string hsmd = require_tool("coconut-hsmd");
    if (fs::exists(world.hsm_store()))
        fail(exit_codes::bad_input, fmt::format("{} exists: a ceremony was already held for this island", world.hsm_store().string()));
    make_private_dir(world.dir);
    make_private_dir(world.keys());
    const std::string store = world.hsm_store().string();
    run_tool_or_fail({hsmd, "init", "--store", store});

    std::vector<std::string> sheets(custodians);
    for (std::size_t c = 0; c < custodians; ++c)
        sheets[c] = fmt::format(
            "# Coconut Card key ceremony: custodian {} of {}. One component per key; keep offline,\n"
            "# apart from every other custodian's sheet. label version component kcv\n",
            c + 1, custodians);
    for (const KeySpec& spec : scheme_keys) {
        std::vector<crypto::Key16> components;
        std::string input;
        for (std::size_t c = 0; c < custodians; ++c) {
            components.push_back(hsm::generate_key());
            input += to_hex(components.back().view()) + "\n";
            sheets[c] += fmt::format("{} 1 {} {}\n", spec.label, to_hex(components.back().view()), kcv_hex(components.back()));
        }
        run_tool_or_fail({hsmd, "key", "import", "--store", store, "--label", spec.label, "--version", "1", "--usage", spec.usage}, input);
        if (std::string_view(spec.usage) == "transport") {
            auto combined = hsm::combine_key_components(components);
            if (!combined) fail(exit_codes::hsm_error, combined.error().message);
            write_private(world.transport_key(), fmt::format("{} 1 {} kcv {}\n", spec.label, to_hex(combined->view()), kcv_hex(*combined)));
        }
    }
    for (std::size_t c = 0; c < custodians; ++c) write_private(world.keys() / fmt::format("custodian-{}.txt", c + 1), sheets[c]);
    for (const ClientSpec& client : scheme_clients)
        run_tool_or_fail({hsmd, "client", "add", "--store", store, "--id", client.id, "--permissions", client.permissions, "--key-out",
                          (world.*client.key_file)().string()});
    // The island CA for the ISO 8583 link's TLS: its key generated inside the HSM store, never exported;
    // the enrolment client (permission ca) has terminal and server certificates signed.
    ensure_island_ca(world);

    const json listed = json::parse(run_tool_or_fail({hsmd, "key", "list", "--store", store, "--json"}));
    std::vector<CeremonyKey> keys;
    json record = json::array();
    for (const auto& k : listed) {
        keys.push_back({k.at("label"), k.at("usage"), k.at("kcv")});
        record.push_back({{"label", k.at("label")}, {"version", k.at("version")}, {"usage", k.at("usage")}, {"kcv", k.at("kcv")}});
    }
    write_private(world.ceremony(), json{{"keys", record}}.dump(1) + "\n");
    if (quiet) return keys;

    std::cout << fmt::format("Key ceremony for {}: HSM store {}\n\n", world.dir.string(), store);
    std::cout << fmt::format("  {:<18} {:<14} {}\n", "KEY", "USAGE", "KCV (combined)");
    for (const auto& k : keys) std::cout << fmt::format("  {:<18} {:<14} {}\n", k.label + ":1", k.usage, k.kcv);
    std::cout << "\nKeep safe (each apart from the others):\n"
              << fmt::format("  {}  the HSM's local master key: whoever has it and keys.sealed has every key\n",
                             (world.hsm_store() / "master.key").string())
              << fmt::format("  {}/custodian-1.txt, custodian-2.txt  one component sheet per custodian: print, hand over, delete\n",
                             world.keys().string())
              << fmt::format("  {}  the transport key, for the personalization station only\n", world.transport_key().string())
              << fmt::format("  {}, {}  HSM client keys: the clearing daemon, the personalization station\n", world.clearing_key().string(),
                             world.issuance_key().string())
              << fmt::format("  {}  HSM client key of the enrolment station (has TLS certificates signed by the island CA)\n",
                             enrolment_key_file(world).string())
              << fmt::format("Island CA certificate (public; its key stays sealed in the HSM store): {}\n", island_ca_file(world).string())
              << fmt::format("KCVs only (no secrets): {}\n", world.ceremony().string());
    return keys;
}

// ---- cards and PSAMs ----------------------------------------------------------------------------------

std::vector<CardEntry> issue_cards(const WorldPaths& world, Island& island, const std::string& hsm_endpoint,
                                   const CardIssueOptions& options) {
    const crypto::Key16 transport = read_transport_key(world);
    auto client = connect_hsm(hsm_endpoint, world.issuance_key());
    std::vector<hsm::KeyRef> masters;
    for (const KeySpec& spec : scheme_keys)
        if (*spec.card_key && !(options.tourist && std::string_view(spec.card_key) == "ssse_iak"))
            masters.push_back({spec.label, hsm::newest_version});
    std::error_code ec;
    fs::create_directories(island.images_dir / "cards", ec);
    if (ec) fail(exit_codes::io_error, fmt::format("cannot create {}: {}", (island.images_dir / "cards").string(), ec.message()));

    std::vector<CardEntry> issued;
    const std::size_t first = island.cards.size() + 1;
    for (std::size_t n = first; n < first + options.count; ++n) {
        CardEntry card;
        card.asn = fmt::format("4601{:016}", n);
        card.image = island.images_dir / "cards" / (card.asn + ".img");
        const std::uint64_t draw = digest64(fmt::format("{}:{}", options.seed, card.asn));
        const std::uint32_t span = options.purse_opening_fen_max - options.purse_opening_fen_min + 1;
        card.purse_opening_fen = (options.purse_opening_fen_min + static_cast<std::uint32_t>(draw % span)) / 100 * 100;
        card.medical_opening_fen = options.tourist ? 0 : options.medical_opening_fen;
        card.holder = options.tourist ? "" : holder_name(n);
        card.tourist = options.tourist;

        auto set = client->derive_card_keys({identity(card.asn), {"kek-issuance", hsm::newest_version}, masters});
        if (!set) fail(exit_codes::hsm_error, fmt::format("derive-card-keys for {}: {}", card.asn, set.error().message));
        json keys;
        for (const auto& exported : set->keys) {
            const crypto::Key16 clear(crypto::tdes_ecb_decrypt(transport, exported.encrypted));
            if (crypto::kcv(clear) != exported.kcv)
                fail(exit_codes::hsm_error, fmt::format("{}: the {} key does not match its KCV (wrong transport key?)", card.asn,
                                                        hsm::card_key_name(exported.usage)));
            std::string name(hsm::card_key_name(exported.usage));
            for (auto& ch : name) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
            keys[name] = to_hex(clear.view());
        }
        json profile{{"kind", "card"},
                     {"asn", card.asn},
                     {"issuer_id", scheme_issuer_id},
                     {"balance_fen", card.purse_opening_fen},
                     {"max_balance_fen", 100'000},
                     {"pin", "123456"},
                     {"seed", seed_hex(options.seed, card.asn)},
                     {"start_date", "20260101"},
                     {"expiry_date", "20351231"},
                     {"medical_account", card.asn},
                     {"cardholder", {{"name", card.holder}, {"ssn", holder_ssn(card.asn)}}},
                     {"keys", keys},
                     {"key_version", 1}};
        if (options.tourist) {
            profile["tourist"] = true;
            profile.erase("cardholder");
            profile.erase("medical_account");
        }
        if (auto created = cos::create_image(card.image, profile, true); !created) fail(exit_codes::io_error, created.error().message);
        issued.push_back(card);
        island.cards.push_back(card);
    }
    return issued;
}

void issue_psam(const WorldPaths& world, const std::string& hsm_endpoint, const std::string& psam_terminal_id, const fs::path& image) {
    const crypto::Key16 transport = read_transport_key(world);
    auto client = connect_hsm(hsm_endpoint, world.issuance_key());
    auto issuer = hsm::parse_issuer_id(scheme_issuer_id);
    auto exported = client->export_issuer_key({*issuer, {"mk-purchase", hsm::newest_version}, {"kek-issuance", hsm::newest_version}});
    if (!exported) fail(exit_codes::hsm_error, "export-issuer-key: " + exported.error().message);
    const crypto::Key16 issuer_key(crypto::tdes_ecb_decrypt(transport, exported->encrypted));
    if (crypto::kcv(issuer_key) != exported->kcv) fail(exit_codes::hsm_error, "the exported issuer key does not match its KCV");
    const json profile{{"kind", "psam"},
                       {"terminal_id", psam_terminal_id},
                       {"purchase_key", to_hex(issuer_key.view())},
                       {"key_level", "issuer"},
                       {"issuer_id", scheme_issuer_id},
                       {"key_index", 1},
                       {"key_version", 1},
                       {"terminal_serial", 1},
                       {"seed", seed_hex(0, psam_terminal_id)}};
    std::error_code ec;
    fs::create_directories(image.parent_path(), ec);
    if (auto created = cos::create_image(image, profile, true); !created) fail(exit_codes::io_error, created.error().message);
}

// ---- clearing registry ---------------------------------------------------------------------------------

json registry_entries(const std::vector<Participant>& participants, const std::vector<TerminalEntry>& terminals,
                      const std::vector<CardEntry>& cards) {
    json registry{{"participants", json::array()}, {"terminals", json::array()}, {"cards", json::array()}};
    for (const auto& p : participants) registry["participants"].push_back(participant_json(p));
    for (const auto& t : terminals)
        registry["terminals"].push_back({{"terminal_id", t.terminal_id},
                                         {"psam_terminal_id", t.psam_terminal_id},
                                         {"participant_id", t.participant_id},
                                         {"merchant_id", t.terminal_id}});
    for (const auto& c : cards)
        registry["cards"].push_back({{"asn", c.asn},
                                     {"issuer_id", scheme_issuer_id},
                                     {"status", "active"},
                                     {"purse_balance_fen", c.purse_opening_fen},
                                     {"medical_balance_fen", c.medical_opening_fen},
                                     {"tac_key_version", 0}});
    return registry;
}

std::optional<std::string> registry_entries_problem(const json& entries) {
    const auto first_problem = [&](const char* section, auto read) -> std::optional<std::string> {
        for (std::size_t i = 0; i < entries.at(section).size(); ++i) {
            auto entry = read(entries.at(section)[i]);
            if (!entry) return fmt::format("{}[{}]: {}", section, i, entry.error());
        }
        return std::nullopt;
    };
    if (auto bad = first_problem("participants", clearing::read_participant)) return bad;
    if (auto bad = first_problem("terminals", clearing::read_terminal)) return bad;
    return first_problem("cards", clearing::read_card);
}

nlohmann::json register_with_clearing(const WorldPaths& world, const std::string& name, const std::vector<Participant>& participants,
                                      const std::vector<TerminalEntry>& terminals, const std::vector<CardEntry>& cards) {
    const json registry = registry_entries(participants, terminals, cards);
    std::error_code ec;
    fs::create_directories(world.registry(), ec);
    const fs::path file = world.registry() / (name + ".json");
    write_private(file, registry.dump(1) + "\n");
    const ToolRun run =
        run_tool({require_tool("coconut-clearingd"), "admin", "--data", world.clearing_data().string(), "load", file.string()});
    if (run.exit_code == 3)
        fail(exit_codes::tool_failed, fmt::format("{} is in use by a running coconut-clearingd: stop it to register ({})",
                                                  world.clearing_data().string(), run.output));
    if (run.exit_code != 0) fail(exit_codes::tool_failed, fmt::format("coconut-clearingd admin load {}: {}", file.string(), run.output));
    try {
        return json::parse(run.output);
    } catch (const json::exception&) {
        return json{{"output", run.output}};
    }
}

fs::path card_token_file(const WorldPaths& world, const std::string& asn) {
    return world.tokens() / (asn.substr(asn.size() - 16) + ".token");
}

std::string issue_card_tokens(const WorldPaths& world, const std::vector<CardEntry>& cards) {
    std::error_code ec;
    fs::create_directories(world.tokens(), ec);
    fs::permissions(world.tokens(), fs::perms::owner_all, ec);
    const std::string output = run_tool_or_fail({require_tool("coconut-clearingd"), "admin", "--data", world.clearing_data().string(),
                                                 "issue-tokens", "--out", world.tokens().string()});
    // One file per card, readable by its owner only (the token is shown nowhere else).
    for (const auto& card : cards) {
        const fs::path file = card_token_file(world, card.asn);
        const auto status = fs::status(file, ec);
        if (ec || !fs::is_regular_file(status))
            fail(exit_codes::check_failed, fmt::format("card {}: no token file {}", card.asn, file.string()));
        if ((status.permissions() & fs::perms::all) != (fs::perms::owner_read | fs::perms::owner_write))
            fail(exit_codes::check_failed, fmt::format("{} is not mode 0600", file.string()));
    }
    return fmt::format("cardholder tokens: {} ({} cards, one 0600 file each in {}, shown nowhere else)",
                       output.substr(0, output.find('\n')), cards.size(), world.tokens().string());
}

fs::path add_clerk(const WorldPaths& world, const std::string& name, const std::string& roles) {
    const std::string output = run_tool_or_fail({require_tool("coconut-clearingd"), "admin", "--data", world.clearing_data().string(),
                                                 "clerk-add", "--name", name, "--roles", roles});
    const std::string token = output.substr(0, output.find('\n'));
    if (token.rfind("clerk_", 0) != 0) fail(exit_codes::tool_failed, "coconut-clearingd admin clerk-add printed no token: " + output);
    const fs::path file = world.keys() / (name + ".token");
    write_private(file, token + "\n");
    return file;
}

}  // namespace coconut::cli
