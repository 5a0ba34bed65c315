// coconut-hsm — client CLI of coconut-hsmd.
//
//   coconut-hsm --connect 127.0.0.1:7501[,HOST:PORT…] --client-key issuance.key [--json] COMMAND …
//     kcv                   --key LABEL[:VERSION]
//     derive-card-keys      --asn ASN --issuer ISSUER_ID [--transport L[:V]] [--keys L[:V],…]
//     export-issuer-key     --issuer ISSUER_ID [--key L[:V]] [--transport L[:V]]
//     verify-tac            --issuer --asn --amount --type --terminal --serial --date --time --tac [--key L[:V]]
//     verify-load-tac       --issuer --asn --new-balance --atc --amount --type --terminal --date --time --tac [--key]
//     load-mac2             --issuer --asn --old-balance --amount --type --terminal --atc --random --mac1 --date --time [--key]
//     verify-internal-auth  --issuer --asn --challenge --cryptogram [--key]
//     maintenance-mac       --issuer --asn --challenge C4 --header 841E000104|841E000004|8418000004 [--key]
//     ca-certificate        [--out FILE]                         the island CA certificate (PEM)
//     sign-certificate      --profile terminal|server --name N --csr FILE [--san IP:…|DNS:…] [--validity-days D] [--out FILE]
//
// Exit status: 0 success (and a "valid" verdict), 3 an "invalid" verdict, 1 an error, 2 a usage error.
// Key bytes are never printed in clear: derived keys appear only encrypted under the transport key.
#include <coconut/hsm/ca.hpp>
#include <coconut/hsm/client.hpp>

#include <coconut/cmdline/cmdline.hpp>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <array>
#include <charconv>
#include <csignal>
#include <fstream>
#include <iostream>

namespace hsm = coconut::hsm;
using coconut::to_hex;

namespace {

constexpr int exit_ok = 0;
constexpr int exit_error = 1;
constexpr int exit_usage = 2;
constexpr int exit_invalid = 3;

bool json_output = false;

int report(const hsm::Failure& failure) {
    if (json_output) {
        std::cout << nlohmann::json{{"error", hsm::errc_name(failure.code)}, {"message", failure.message}}.dump() << "\n";
    } else {
        std::cerr << fmt::format("coconut-hsm: {} ({})\n", failure.message, hsm::errc_name(failure.code));
    }
    return exit_error;
}

template <class T>
hsm::Outcome<T> usage_error(std::string message) {
    return hsm::fail(hsm::Errc::bad_request, std::move(message));
}

// Text fields of a card transaction, parsed into the typed request.
struct Fields {
    std::string key, issuer, asn, terminal, date, time, tac, mac1, random, challenge, cryptogram, type = "06";
    std::uint32_t amount = 0, old_balance = 0, new_balance = 0, serial = 0;
    unsigned atc = 0;
};

hsm::Outcome<hsm::CardIdentity> card_of(const Fields& f) {
    auto issuer = hsm::parse_issuer_id(f.issuer);
    if (!issuer) return coconut::Unexpected<hsm::Failure>{issuer.error()};
    auto asn = hsm::parse_asn(f.asn);
    if (!asn) return coconut::Unexpected<hsm::Failure>{asn.error()};
    return hsm::CardIdentity{issuer.value(), asn.value()};
}

template <std::size_t N>
hsm::Outcome<std::array<std::uint8_t, N>> hex_field(const std::string& text, std::string_view what) {
    auto bytes = coconut::from_hex(text);
    if (!bytes || bytes->size() != N) return usage_error<std::array<std::uint8_t, N>>(fmt::format("{} must be {} hex digits", what, 2 * N));
    std::array<std::uint8_t, N> out{};
    std::copy(bytes->begin(), bytes->end(), out.begin());
    return out;
}

hsm::Outcome<std::uint8_t> type_of(const std::string& text) {
    auto bytes = coconut::from_hex(text);
    if (!bytes || bytes->size() != 1) return usage_error<std::uint8_t>("--type must be two hex digits (02 load, 06 purchase, 09 CAPP)");
    return (*bytes)[0];
}

hsm::Outcome<hsm::KeyRef> key_of(const std::string& text) {
    auto ref = hsm::parse_key_ref(text);
    if (!ref) return usage_error<hsm::KeyRef>(fmt::format("'{}' is not LABEL or LABEL:VERSION (1–255)", text));
    return *ref;
}

int print_verdict(hsm::Verdict verdict, nlohmann::json json) {
    json["verdict"] = hsm::verdict_name(verdict);
    if (json_output) std::cout << json.dump() << "\n";
    else std::cout << hsm::verdict_name(verdict) << "\n";
    return verdict == hsm::Verdict::valid ? exit_ok : exit_invalid;
}

}  // namespace

int main(int argc, char** argv) {
    std::signal(SIGPIPE, SIG_IGN);
    CLI::App app{"coconut-hsm — client of the coconut-hsmd HSM service"};
    app.require_subcommand(1);
    std::string connect = fmt::format("127.0.0.1:{}", hsm::wire::default_port);
    std::string key_file;
    unsigned timeout_ms = 10'000;
    app.add_option("--connect", connect, "HSM address HOST:PORT, or several (HOST:PORT,HOST:PORT: the first that answers)")
        ->capture_default_str();
    app.add_option("--client-key", key_file, "client key file (from `coconut-hsmd client add`)")->required();
    app.add_option("--timeout-ms", timeout_ms, "connect / request timeout")->check(CLI::Range(10, 600'000))->capture_default_str();
    app.add_flag("--json", json_output, "JSON output");

    Fields f;
    auto card_options = [&](CLI::App* sub) {
        sub->add_option("--issuer", f.issuer, "issuer id, 16 hex digits (EF15)")->required();
        sub->add_option("--asn", f.asn, "application serial number, 20 digits")->required();
    };
    auto txn_options = [&](CLI::App* sub) {
        sub->add_option("--amount-fen,--amount", f.amount, "amount in fen")->required();
        sub->add_option("--type", f.type, "transaction type, 2 hex digits")->capture_default_str();
        sub->add_option("--terminal", f.terminal, "terminal id, 12 digits")->required();
        sub->add_option("--date", f.date, "YYYYMMDD")->required();
        sub->add_option("--time", f.time, "hhmmss")->required();
    };

    auto* kcv = app.add_subcommand("kcv", "key check value and metadata of a key");
    kcv->add_option("--key", f.key, "LABEL[:VERSION]")->required();

    std::string transport{hsm::default_transport_label};
    std::vector<std::string> masters = {std::string(hsm::default_purchase_label),    std::string(hsm::default_load_label),
                                        std::string(hsm::default_tac_label),         std::string(hsm::default_internal_auth_label),
                                        std::string(hsm::default_maintenance_label), std::string(hsm::default_ssse_auth_label)};
    auto* derive = app.add_subcommand("derive-card-keys", "derive a card's keys, encrypted under a transport key, with KCVs");
    card_options(derive);
    derive->add_option("--transport", transport, "transport key LABEL[:VERSION]")->capture_default_str();
    derive->add_option("--keys", masters, "master keys LABEL[:VERSION],…")->delimiter(',')->capture_default_str();

    auto* export_cmd = app.add_subcommand("export-issuer-key", "issuer-level purchase key under a transport key (PSAM)");
    export_cmd->add_option("--issuer", f.issuer, "issuer id, 16 hex digits")->required();
    std::string purchase_key{hsm::default_purchase_label};
    export_cmd->add_option("--key", purchase_key, "purchase master LABEL[:VERSION]")->capture_default_str();
    export_cmd->add_option("--transport", transport, "transport key LABEL[:VERSION]")->capture_default_str();

    std::string tac_key{hsm::default_tac_label};
    auto* verify_tac = app.add_subcommand("verify-tac", "verify a purchase TAC");
    card_options(verify_tac);
    txn_options(verify_tac);
    verify_tac->add_option("--serial", f.serial, "terminal transaction serial")->required();
    verify_tac->add_option("--tac", f.tac, "TAC, 8 hex digits")->required();
    verify_tac->add_option("--key", tac_key, "TAC master LABEL[:VERSION]")->capture_default_str();

    auto* verify_load_tac = app.add_subcommand("verify-load-tac", "verify a load TAC");
    card_options(verify_load_tac);
    txn_options(verify_load_tac);
    verify_load_tac->add_option("--new-balance", f.new_balance, "balance after the load, fen")->required();
    verify_load_tac->add_option("--atc", f.atc, "online ATC before the load")->required()->check(CLI::Range(0, 65535));
    verify_load_tac->add_option("--tac", f.tac, "TAC, 8 hex digits")->required();
    verify_load_tac->add_option("--key", tac_key, "TAC master LABEL[:VERSION]")->capture_default_str();

    std::string load_key{hsm::default_load_label};
    auto* load = app.add_subcommand("load-mac2", "verify a card's load MAC1 and issue MAC2");
    card_options(load);
    txn_options(load);
    load->add_option("--old-balance", f.old_balance, "balance before the load, fen")->required();
    load->add_option("--atc", f.atc, "online ATC from INITIALIZE FOR LOAD")->required()->check(CLI::Range(0, 65535));
    load->add_option("--random", f.random, "card random, 8 hex digits")->required();
    load->add_option("--mac1", f.mac1, "MAC1, 8 hex digits")->required();
    load->add_option("--key", load_key, "load master LABEL[:VERSION]")->capture_default_str();

    std::string auth_key{hsm::default_internal_auth_label};
    auto* auth = app.add_subcommand("verify-internal-auth", "verify an INTERNAL AUTHENTICATE cryptogram");
    card_options(auth);
    auth->add_option("--challenge", f.challenge, "host challenge, 16 hex digits")->required();
    auth->add_option("--cryptogram", f.cryptogram, "card answer, 16 hex digits")->required();
    auth->add_option("--key", auth_key, "internal-auth or ssse-auth master LABEL[:VERSION]")->capture_default_str();

    std::string maintenance_key{hsm::default_maintenance_label};
    std::string header_text;
    auto* maintenance = app.add_subcommand("maintenance-mac", "the MAC of a card's APPLICATION BLOCK / UNBLOCK (permission maintenance)");
    card_options(maintenance);
    maintenance->add_option("--challenge", f.challenge, "the card's GET CHALLENGE, 8 hex digits")->required();
    maintenance->add_option("--header", header_text, "command header, 10 hex digits: 841E000004, 841E000104 or 8418000004")->required();
    maintenance->add_option("--key", maintenance_key, "maintenance master LABEL[:VERSION]")->capture_default_str();

    std::string certificate_out;
    auto* ca_cmd = app.add_subcommand("ca-certificate", "the island CA certificate (PEM; permission ca or key-info)");
    ca_cmd->add_option("--out", certificate_out, "write it here (default: stdout)");
    std::string profile_text = "terminal", csr_file;
    hsm::CertificateSigning signing;
    auto* sign_cmd = app.add_subcommand("sign-certificate", "have the island CA sign a certificate request (permission ca)");
    sign_cmd->add_option("--profile", profile_text, "terminal | server")->capture_default_str();
    sign_cmd->add_option("--name", signing.name, "terminal id (8 characters) or the server's name")->required();
    sign_cmd->add_option("--csr", csr_file, "PKCS#10 request, PEM or DER")->required();
    sign_cmd->add_option("--san", signing.subject_alt_names, "server: IP:ADDRESS or DNS:NAME (repeatable)");
    sign_cmd->add_option("--validity-days", signing.validity_days, "days from now")
        ->capture_default_str()
        ->check(CLI::Range(1, static_cast<int>(hsm::certificate_validity_days_max)));
    sign_cmd->add_option("--out", certificate_out, "write the certificate here (default: stdout)");

    coconut::cmdline::set_conventions(app, "coconut-hsm",
                                      "Exit codes:\n"
                                      "  0  ok (verify-*: the cryptogram is valid)\n"
                                      "  1  an error: the HSM unreachable or refusing, a key file, a bad answer\n"
                                      "  2  usage: a bad command line\n"
                                      "  3  verify-*: the cryptogram is invalid");
    constexpr std::array<coconut::cmdline::Rename, 1> renamed{{{"--amount", "--amount-fen"}}};
    if (auto exit = coconut::cmdline::parse(app, argc, argv, "coconut-hsm", renamed)) return *exit;

    COCONUT_TRY(endpoints, hsm::wire::parse_endpoints(connect), report);
    COCONUT_TRY(credentials, hsm::wire::read_client_credentials(key_file), report);
    hsm::ClientOptions options;
    options.connect_timeout = std::chrono::milliseconds(timeout_ms);
    options.request_timeout = std::chrono::milliseconds(timeout_ms);
    COCONUT_TRY(client, hsm::Client::connect(std::move(endpoints), std::move(credentials), options), report);
    hsm::Client& hsm_client = *client;

    if (kcv->parsed()) {
        COCONUT_TRY(ref, key_of(f.key), report);
        COCONUT_TRY(info, hsm_client.key_info(ref), report);
        const nlohmann::json json = {{"label", info.label},
                                     {"version", info.version},
                                     {"type", hsm::key_type_name(info.type)},
                                     {"usage", hsm::key_usage_name(info.usage)},
                                     {"status", info.status == hsm::KeyStatus::active ? "active" : "retired"},
                                     {"kcv", to_hex(info.kcv)}};
        if (json_output) std::cout << json.dump() << "\n";
        else
            std::cout << fmt::format("{}:{} {} {} {} KCV {}\n", info.label, info.version, hsm::key_type_name(info.type),
                                     hsm::key_usage_name(info.usage), json["status"].get<std::string>(), to_hex(info.kcv));
        return exit_ok;
    }
    if (derive->parsed()) {
        COCONUT_TRY(card, card_of(f), report);
        COCONUT_TRY(kek, key_of(transport), report);
        hsm::wire::DeriveCardKeys request{card, kek, {}};
        for (const std::string& m : masters) {
            COCONUT_TRY(ref, key_of(m), report);
            request.masters.push_back(ref);
        }
        COCONUT_TRY(set, hsm_client.derive_card_keys(request), report);
        nlohmann::json keys = nlohmann::json::array();
        for (const auto& k : set.keys)
            keys.push_back({{"key", hsm::card_key_name(k.usage)},
                            {"usage", hsm::key_usage_name(k.usage)},
                            {"master", hsm::to_string(k.master)},
                            {"kcv", to_hex(k.kcv)},
                            {"encrypted", to_hex(k.encrypted)}});
        if (json_output) {
            std::cout << nlohmann::json{{"asn", f.asn},
                                        {"issuer", coconut::to_hex(card.issuer_id)},
                                        {"transport", hsm::to_string(set.transport)},
                                        {"transport_kcv", to_hex(set.transport_kcv)},
                                        {"keys", keys}}
                             .dump()
                      << "\n";
        } else {
            std::cout << fmt::format("card {} issuer {}; keys encrypted under {} (KCV {})\n", f.asn, to_hex(card.issuer_id),
                                     hsm::to_string(set.transport), to_hex(set.transport_kcv));
            for (const auto& k : set.keys)
                std::cout << fmt::format("  {:<5} from {:<24} KCV {}  encrypted {}\n", hsm::card_key_name(k.usage),
                                         hsm::to_string(k.master), to_hex(k.kcv), to_hex(k.encrypted));
        }
        return exit_ok;
    }
    if (export_cmd->parsed()) {
        COCONUT_TRY(issuer, hsm::parse_issuer_id(f.issuer), report);
        COCONUT_TRY(master, key_of(purchase_key), report);
        COCONUT_TRY(kek, key_of(transport), report);
        COCONUT_TRY(key, hsm_client.export_issuer_key({issuer, master, kek}), report);
        const nlohmann::json json = {{"issuer", f.issuer},
                                     {"master", hsm::to_string(key.master)},
                                     {"kcv", to_hex(key.kcv)},
                                     {"encrypted", to_hex(key.encrypted)}};
        if (json_output) std::cout << json.dump() << "\n";
        else
            std::cout << fmt::format("issuer purchase key from {}: KCV {} encrypted {}\n", hsm::to_string(key.master), to_hex(key.kcv),
                                     to_hex(key.encrypted));
        return exit_ok;
    }
    if (verify_tac->parsed()) {
        COCONUT_TRY(ref, key_of(tac_key), report);
        COCONUT_TRY(card, card_of(f), report);
        COCONUT_TRY(type, type_of(f.type), report);
        COCONUT_TRY(terminal, hsm::parse_terminal_id(f.terminal), report);
        COCONUT_TRY(when, hsm::parse_card_date_time(f.date, f.time), report);
        COCONUT_TRY(tac, hex_field<4>(f.tac, "--tac"), report);
        const hsm::PurchaseTac item{ref.version, card, f.amount, type, terminal, f.serial, when, tac};
        COCONUT_TRY(verdicts, hsm_client.verify_purchase_tacs(ref.label, std::span(&item, 1)), report);
        return print_verdict(verdicts.front(), {{"key", hsm::to_string(ref)}});
    }
    if (verify_load_tac->parsed()) {
        COCONUT_TRY(ref, key_of(tac_key), report);
        COCONUT_TRY(card, card_of(f), report);
        COCONUT_TRY(type, type_of(f.type), report);
        COCONUT_TRY(terminal, hsm::parse_terminal_id(f.terminal), report);
        COCONUT_TRY(when, hsm::parse_card_date_time(f.date, f.time), report);
        COCONUT_TRY(tac, hex_field<4>(f.tac, "--tac"), report);
        COCONUT_TRY(verdict,
                    hsm_client.verify_load_tac(
                        {ref, card, f.new_balance, static_cast<std::uint16_t>(f.atc), f.amount, type, terminal, when, tac}),
                    report);
        return print_verdict(verdict, {{"key", hsm::to_string(ref)}});
    }
    if (load->parsed()) {
        COCONUT_TRY(ref, key_of(load_key), report);
        COCONUT_TRY(card, card_of(f), report);
        COCONUT_TRY(type, type_of(f.type), report);
        COCONUT_TRY(terminal, hsm::parse_terminal_id(f.terminal), report);
        COCONUT_TRY(when, hsm::parse_card_date_time(f.date, f.time), report);
        COCONUT_TRY(random, hex_field<4>(f.random, "--random"), report);
        COCONUT_TRY(mac1, hex_field<4>(f.mac1, "--mac1"), report);
        COCONUT_TRY(answer,
                    hsm_client.load_mac2(
                        {ref, card, f.old_balance, f.amount, type, terminal, static_cast<std::uint16_t>(f.atc), random, mac1, when}),
                    report);
        const bool valid = answer.mac1 == hsm::Verdict::valid;
        nlohmann::json json = {{"mac1", hsm::verdict_name(answer.mac1)}, {"key_version", answer.key_version}};
        if (valid) json["mac2"] = to_hex(answer.mac2);
        if (json_output) std::cout << json.dump() << "\n";
        else std::cout << (valid ? fmt::format("MAC1 valid; MAC2 {}\n", to_hex(answer.mac2)) : std::string("MAC1 invalid; no MAC2\n"));
        return valid ? exit_ok : exit_invalid;
    }
    if (ca_cmd->parsed() || sign_cmd->parsed()) {
        if (sign_cmd->parsed()) {
            const auto profile = coconut::tls::parse_profile(profile_text);
            if (!profile || *profile == coconut::tls::Profile::ca) {
                std::cerr << "coconut-hsm: --profile must be terminal or server\n";
                return exit_usage;
            }
            signing.profile = *profile;
            std::ifstream in(csr_file, std::ios::binary);
            if (!in) return report({hsm::Errc::io_error, fmt::format("cannot read {}", csr_file)});
            signing.request.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
        }
        COCONUT_TRY(der, sign_cmd->parsed() ? hsm_client.sign_certificate(signing) : hsm_client.ca_certificate(), report);
        auto certificate = coconut::tls::parse_certificate(der);
        if (!certificate) return report({hsm::Errc::protocol_error, "the HSM answered with a certificate that does not parse"});
        if (!certificate_out.empty()) {
            if (auto written = coconut::tls::write_certificate(certificate_out, *certificate); !written)
                return report({hsm::Errc::io_error, written.error().message});
        }
        const auto info = coconut::tls::describe(*certificate);
        const auto unix_s = [](auto when) { return std::chrono::system_clock::to_time_t(when); };
        if (json_output) {
            std::cout << nlohmann::json{{"subject", info.subject.common_name},
                                        {"organization", info.subject.organization},
                                        {"serial", info.serial_hex},
                                        {"not_before_unix_s", unix_s(info.not_before)},
                                        {"not_after_unix_s", unix_s(info.not_after)},
                                        {"subject_alt_names", info.subject_alt_names},
                                        {"pem", coconut::tls::to_pem(*certificate)}}
                             .dump()
                      << "\n";
        } else if (certificate_out.empty()) {
            std::cout << coconut::tls::to_pem(*certificate);
        } else {
            std::cout << fmt::format("{} (O={}) serial {}, written to {}\n", info.subject.common_name, info.subject.organization,
                                     info.serial_hex, certificate_out);
        }
        return exit_ok;
    }
    if (maintenance->parsed()) {
        COCONUT_TRY(ref, key_of(maintenance_key), report);
        COCONUT_TRY(card, card_of(f), report);
        COCONUT_TRY(challenge, hex_field<4>(f.challenge, "--challenge"), report);
        COCONUT_TRY(header, hex_field<5>(header_text, "--header"), report);
        COCONUT_TRY(answer, hsm_client.maintenance_mac({ref, card, challenge, header}), report);
        if (json_output) {
            std::cout << nlohmann::json{{"mac", coconut::to_hex(answer.mac)}, {"key", ref.label}, {"version", answer.key_version}}.dump()
                      << "\n";
        } else {
            std::cout << fmt::format("MAC {} (key {}:{})\n", coconut::to_hex(answer.mac), ref.label, answer.key_version);
        }
        return exit_ok;
    }
    if (auth->parsed()) {
        COCONUT_TRY(ref, key_of(auth_key), report);
        COCONUT_TRY(card, card_of(f), report);
        COCONUT_TRY(challenge, hex_field<8>(f.challenge, "--challenge"), report);
        COCONUT_TRY(cryptogram, hex_field<8>(f.cryptogram, "--cryptogram"), report);
        COCONUT_TRY(verdict, hsm_client.verify_internal_auth({ref, card, challenge, cryptogram}), report);
        return print_verdict(verdict, {{"key", hsm::to_string(ref)}});
    }
    return exit_usage;
}
