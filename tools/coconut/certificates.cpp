#include "certificates.hpp"

#include "errors.hpp"
#include "process.hpp"

#include <coconut/hsm/ca.hpp>
#include <coconut/hsm/client.hpp>

#include <fmt/format.h>

#include <ctime>
#include <memory>

namespace coconut::cli {

namespace {

using SystemClock = std::chrono::system_clock;

// The HSM link for signing, opened on the first certificate that needs one.
class Enrolment {
public:
    Enrolment(const WorldPaths& world, std::string endpoint) : world_(world), endpoint_(std::move(endpoint)) {}

    hsm::Client& client() {
        if (client_) return *client_;
        auto endpoints = hsm::wire::parse_endpoints(endpoint_);
        if (!endpoints) fail(exit_codes::usage, "--hsm: " + endpoints.error().message);
        auto credentials = hsm::wire::read_client_credentials(enrolment_key_file(world_));
        if (!credentials) fail(exit_codes::hsm_error, credentials.error().message);
        auto client = hsm::Client::connect(std::move(endpoints).value(), std::move(credentials.value()));
        if (!client) fail(exit_codes::hsm_error, fmt::format("HSM at {}: {}", endpoint_, client.error().message));
        client_ = std::move(client).value();
        return *client_;
    }

    tls::Certificate ca() {
        if (ca_) return ca_;
        auto der = client().ca_certificate();
        if (!der) fail(exit_codes::hsm_error, "ca-certificate: " + der.error().message);
        auto parsed = tls::parse_certificate(*der);
        if (!parsed) fail(exit_codes::hsm_error, "the HSM's CA certificate does not parse: " + parsed.error().message);
        ca_ = *parsed;
        return ca_;
    }

private:
    const WorldPaths& world_;
    std::string endpoint_;
    std::unique_ptr<hsm::Client> client_;
    tls::Certificate ca_;
};

// ca.pem beside the identity, rewritten only when it is not the current CA's certificate.
void write_ca(const TlsIdentity& identity, const tls::Certificate& ca) {
    if (auto existing = tls::read_certificate(identity.ca()); existing && tls::to_pem(*existing) == tls::to_pem(ca)) return;
    if (auto written = tls::write_certificate(identity.ca(), ca); !written) fail(exit_codes::io_error, written.error().message);
}

void check_order(const CertificateOrder& order) {
    if (order.profile == tls::Profile::terminal && !tls::valid_terminal_id(order.name))
        fail(exit_codes::usage, fmt::format("terminal id '{}' must be exactly 8 printable characters (ISO 8583 field 41)", order.name));
    if (order.validity_days == 0 || order.validity_days > hsm::certificate_validity_days_max)
        fail(exit_codes::usage, fmt::format("--validity-days must be 1–{}", hsm::certificate_validity_days_max));
    if (order.renew_within_days >= order.validity_days)
        fail(exit_codes::usage, fmt::format("--renew-within-days {} must be below --validity-days {} (or every run would renew)",
                                            order.renew_within_days, order.validity_days));
}

// Why the identity's certificate must be (re)issued, or empty when it can stay.
std::string reason_to_issue(const TlsIdentity& identity, const CertificateOrder& order, Enrolment& enrolment) {
    std::error_code ec;
    if (!fs::exists(identity.certificate(), ec) || !fs::exists(identity.private_key(), ec)) return "new";
    auto certificate = tls::read_certificate(identity.certificate());
    auto key = tls::read_private_key(identity.private_key());
    if (!certificate || !key) return "unreadable, replaced";
    const tls::CertificateInfo info = tls::describe(*certificate);
    if (info.subject.common_name != order.name || info.profile != order.profile) return "issued for another name, replaced";
    if (info.subject_alt_names != order.alt_names) return "issued for other addresses, replaced";
    if (!tls::same_public_key(*key, *certificate)) return "key and certificate do not match, replaced";
    if (info.issuer != tls::describe(enrolment.ca()).subject) return "issued by another CA, replaced";
    const auto left = info.not_after - SystemClock::now();
    if (left <= std::chrono::days(order.renew_within_days))
        return left <= SystemClock::duration::zero()
                   ? "expired, renewed"
                   : fmt::format("ends {} (within {} days), renewed", format_date(info.not_after), order.renew_within_days);
    return {};
}

CertificateOutcome ensure_with(Enrolment& enrolment, const TlsIdentity& identity, const CertificateOrder& order) {
    check_order(order);
    CertificateOutcome outcome;
    outcome.reason = reason_to_issue(identity, order, enrolment);
    if (outcome.reason.empty()) {
        const tls::CertificateInfo info = tls::describe(tls::read_certificate(identity.certificate()).value());
        outcome.serial = info.serial_hex;
        outcome.not_after = info.not_after;
        outcome.reason = fmt::format("kept (it ends in more than {} days)", order.renew_within_days);
        write_ca(identity, enrolment.ca());
        return outcome;
    }
    std::error_code ec;
    fs::create_directories(identity.dir, ec);
    fs::permissions(identity.dir, fs::perms::owner_all, ec);
    if (ec) fail(exit_codes::io_error, fmt::format("cannot create {}: {}", identity.dir.string(), ec.message()));

    auto key = tls::generate_key();
    if (!key) fail(exit_codes::io_error, key.error().message);
    auto request = tls::make_request(*key, {order.name, std::string(order.profile == tls::Profile::terminal ? tls::terminal_organization
                                                                                                            : tls::server_organization)});
    if (!request) fail(exit_codes::usage, request.error().message);
    const std::string pem = tls::to_pem(*request);
    auto der = enrolment.client().sign_certificate(
        {order.profile, order.name, order.alt_names, order.validity_days, Bytes(pem.begin(), pem.end())});
    if (!der) {
        const int code = der.error().code == hsm::Errc::bad_request ? exit_codes::usage : exit_codes::hsm_error;
        fail(code, fmt::format("the HSM refused to sign {}'s certificate: {}", order.name, der.error().message));
    }
    auto certificate = tls::parse_certificate(*der);
    if (!certificate || !tls::same_public_key(*key, *certificate))
        fail(exit_codes::hsm_error, fmt::format("the HSM's certificate for {} is not for the key sent", order.name));
    // The key first: a crash before the certificate leaves a mismatch that the next run replaces.
    if (auto written = tls::write_private_key(identity.private_key(), *key); !written) fail(exit_codes::io_error, written.error().message);
    if (auto written = tls::write_certificate(identity.certificate(), *certificate); !written)
        fail(exit_codes::io_error, written.error().message);
    write_ca(identity, enrolment.ca());
    const tls::CertificateInfo info = tls::describe(*certificate);
    outcome.issued = true;
    outcome.serial = info.serial_hex;
    outcome.not_after = info.not_after;
    return outcome;
}

}  // namespace

TlsIdentity terminal_identity(const Island& island, const std::string& terminal_id) { return {island.images_dir / "tls" / terminal_id}; }
TlsIdentity clearing_identity(const WorldPaths& world) { return {world.dir / "tls" / "clearingd"}; }
fs::path island_ca_file(const WorldPaths& world) { return world.dir / "tls" / "ca.pem"; }
fs::path enrolment_key_file(const WorldPaths& world) { return world.keys() / "enrolment.key"; }

std::string format_date(std::chrono::system_clock::time_point when) {
    const std::time_t seconds = SystemClock::to_time_t(when);
    std::tm parts{};
    ::gmtime_r(&seconds, &parts);
    char text[16];
    std::strftime(text, sizeof text, "%Y-%m-%d", &parts);
    return text;
}

void ensure_island_ca(const WorldPaths& world) {
    const std::string hsmd = require_tool("coconut-hsmd");
    const std::string store = world.hsm_store().string();
    std::error_code ec;
    if (!fs::exists(enrolment_key_file(world), ec))
        run_tool_or_fail({hsmd, "client", "add", "--store", store, "--id", "enrolment", "--permissions", "ca", "--key-out",
                          enrolment_key_file(world).string()});
    fs::create_directories(island_ca_file(world).parent_path(), ec);
    run_tool_or_fail({hsmd, "ca", "init", "--store", store, "--name", "Coconut Card island CA", "--out", island_ca_file(world).string()});
}

CertificateOutcome ensure_certificate(const WorldPaths& world, const std::string& hsm_endpoint, const TlsIdentity& identity,
                                      const CertificateOrder& order) {
    Enrolment enrolment(world, hsm_endpoint);
    return ensure_with(enrolment, identity, order);
}

std::size_t ensure_terminal_certificates(const WorldPaths& world, const Island& island, const std::string& hsm_endpoint) {
    Enrolment enrolment(world, hsm_endpoint);
    std::size_t issued = 0;
    for (const TerminalEntry& terminal : island.terminals) {
        CertificateOrder order;
        order.name = terminal.terminal_id;
        issued += ensure_with(enrolment, terminal_identity(island, terminal.terminal_id), order).issued ? 1 : 0;
    }
    return issued;
}

}  // namespace coconut::cli
