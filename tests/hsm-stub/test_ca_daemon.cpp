// Integration: the island CA through the real coconut-hsmd — `ca init` (idempotent), sign-certificate over
// the wire under the permission "ca", the audit line of every signing and refusal, the CLIs.
#include "daemon_process.hpp"

#include <coconut/hsm/ca.hpp>
#include <coconut/hsm/client.hpp>

#include <fmt/format.h>

using namespace hsm_test;
namespace tls = coconut::tls;
namespace wire = hsm::wire;
using hsm::Errc;

namespace {

// A store with the test keys, the island CA (through the CLI, twice) and three clients: "enrolment" (ca),
// "clearing" (tac, key-info) and "tac-only" (tac).
struct CaInstallation {
    TempDir dir;
    std::string first_init;
    CaInstallation() {
        make_store(dir.path());
        const std::string store = (dir / "store").string();
        const auto init = run(fmt::format("{} ca init --store {} --out {}", COCONUT_HSMD_PATH, store, (dir / "ca.pem").string()));
        REQUIRE_MESSAGE(init.exit_code == 0, init.output);
        first_init = init.output;
        for (const auto& [id, permissions] : {std::pair{"enrolment", "ca"}, {"clearing", "tac,key-info"}, {"tac-only", "tac"}}) {
            const auto added = run(fmt::format("{} client add --store {} --id {} --permissions {} --key-out {}", COCONUT_HSMD_PATH, store,
                                               id, permissions, (dir / (std::string(id) + ".key")).string()));
            REQUIRE_MESSAGE(added.exit_code == 0, added.output);
        }
    }
    wire::ClientCredentials credentials(const std::string& id) const {
        auto c = wire::read_client_credentials(dir / (id + ".key"));
        REQUIRE(c.ok());
        return std::move(c.value());
    }
    std::string audit_text() const { return read_text(dir / "store" / "audit.log"); }
};

std::unique_ptr<hsm::Client> connect_ca_client(const Daemon& daemon, wire::ClientCredentials credentials) {
    auto client = hsm::Client::connect(daemon.endpoint(), std::move(credentials));
    REQUIRE_MESSAGE(client.ok(), client.error().message);
    return std::move(client.value());
}

Bytes request_pem(const std::string& name) {
    auto key = tls::generate_key();
    REQUIRE(key.ok());
    const std::string pem = tls::to_pem(tls::make_request(*key, {name, "x"}).value());
    return Bytes(pem.begin(), pem.end());
}

}  // namespace

TEST_CASE("ca init through the CLI is idempotent and writes the certificate it sealed") {
    CaInstallation island;
    CHECK(island.first_init.find("island CA created:") != std::string::npos);
    const std::string pem = read_text(island.dir / "ca.pem");
    const auto again = run(fmt::format("{} ca init --store {}", COCONUT_HSMD_PATH, (island.dir / "store").string()));
    CHECK(again.exit_code == 0);
    CHECK(again.output.find("island CA exists:") != std::string::npos);
    CHECK(again.output.find(pem) != std::string::npos);  // the same certificate, printed
    const auto shown = run(fmt::format("{} ca certificate --store {}", COCONUT_HSMD_PATH, (island.dir / "store").string()));
    CHECK(shown.exit_code == 0);
    CHECK(shown.output.find(pem) != std::string::npos);
    // One ca-init line in the audit log: the second init changed nothing.
    const std::string audit = island.audit_text();
    CHECK(audit.find("\"command\":\"ca-init\"") != std::string::npos);
    CHECK(audit.find("\"command\":\"ca-init\"", audit.find("\"command\":\"ca-init\"") + 1) == std::string::npos);
    CHECK(audit.find("BEGIN") == std::string::npos);
}

TEST_CASE("sign-certificate over the wire: a certificate for the request, one audit line with client, subject, serial, validity") {
    CaInstallation island;
    Daemon daemon(island.dir.path());
    auto client = connect_ca_client(daemon, island.credentials("enrolment"));
    auto der = client->sign_certificate({tls::Profile::terminal, "SHOP0001", {}, 365, request_pem("SHOP0001")});
    REQUIRE_MESSAGE(der.ok(), (der.ok() ? "" : der.error().message));
    auto certificate = tls::parse_certificate(*der);
    REQUIRE(certificate.ok());
    CHECK(tls::terminal_id_of(*certificate) == "SHOP0001");
    const tls::CertificateInfo info = tls::describe(*certificate);

    auto ca = client->ca_certificate();
    REQUIRE(ca.ok());
    CHECK(tls::describe(tls::parse_certificate(*ca).value()).subject == info.issuer);

    daemon.stop();
    const std::string audit = island.audit_text();
    const auto line_at = audit.find("\"command\":\"sign-certificate\"");
    REQUIRE(line_at != std::string::npos);
    const std::string line = audit.substr(audit.rfind('\n', line_at) + 1, audit.find('\n', line_at) - audit.rfind('\n', line_at) - 1);
    CHECK(line.find("\"client\":\"enrolment\"") != std::string::npos);
    CHECK(line.find("\"key\":\"island-ca\"") != std::string::npos);
    CHECK(line.find("terminal CN=SHOP0001 serial " + info.serial_hex + " valid ") != std::string::npos);
    const auto verified = run(fmt::format("{} audit verify --store {}", COCONUT_HSMD_PATH, (island.dir / "store").string()));
    CHECK_MESSAGE(verified.exit_code == 0, verified.output);
}

TEST_CASE("a client without the permission ca is refused (not_permitted, audited); the CA certificate needs ca or key-info") {
    CaInstallation island;
    Daemon daemon(island.dir.path());
    auto clearing = connect_ca_client(daemon, island.credentials("clearing"));
    auto refused = clearing->sign_certificate({tls::Profile::terminal, "BUS00001", {}, 365, request_pem("BUS00001")});
    REQUIRE_FALSE(refused.ok());
    CHECK(refused.error().code == Errc::not_permitted);
    CHECK(refused.error().message.find("sign-certificate") != std::string::npos);
    CHECK(clearing->ca_certificate().ok());  // key-info is enough for the public certificate

    auto tac_only = connect_ca_client(daemon, island.credentials("tac-only"));
    CHECK(tac_only->ca_certificate().error().code == Errc::not_permitted);
    daemon.stop();
    const std::string audit = island.audit_text();
    CHECK(audit.find("\"client\":\"clearing\",\"command\":\"sign-certificate\"") != std::string::npos);
    CHECK(audit.find("not_permitted") != std::string::npos);
}

TEST_CASE("a bad request is answered bad_request with a clear message and the connection stays usable") {
    CaInstallation island;
    Daemon daemon(island.dir.path());
    auto client = connect_ca_client(daemon, island.credentials("enrolment"));
    auto garbage = client->sign_certificate({tls::Profile::terminal, "BUS00001", {}, 365, Bytes{'h', 'e', 'l', 'l', 'o'}});
    REQUIRE_FALSE(garbage.ok());
    CHECK(garbage.error().code == Errc::bad_request);
    CHECK(garbage.error().message == "certificate request: not a certificate request (PKCS#10, PEM or DER)");
    auto too_long = client->sign_certificate({tls::Profile::terminal, "BUS00001", {}, 3650, request_pem("BUS00001")});
    REQUIRE_FALSE(too_long.ok());
    CHECK(too_long.error().message.find("validity_days must be 1–825") == 0);
    CHECK(client->sign_certificate({tls::Profile::terminal, "BUS00001", {}, 1, request_pem("BUS00001")}).ok());
    daemon.stop();
    CHECK(island.audit_text().find("bad_request: certificate request: not a certificate request") != std::string::npos);
}

TEST_CASE("coconut-hsm sign-certificate writes the certificate; bad input exits non-zero with the HSM's message") {
    CaInstallation island;
    Daemon daemon(island.dir.path());
    const Bytes csr = request_pem("BUS00007");
    write_text(island.dir / "bus.csr", std::string(csr.begin(), csr.end()));
    const std::string base = fmt::format("{} --connect 127.0.0.1:{} --client-key {}", COCONUT_HSM_CLI_PATH, daemon.port(),
                                         (island.dir / "enrolment.key").string());
    const auto signed_ok = run(fmt::format("{} sign-certificate --profile terminal --name BUS00007 --csr {} --out {}", base,
                                           (island.dir / "bus.csr").string(), (island.dir / "bus.pem").string()));
    CHECK_MESSAGE(signed_ok.exit_code == 0, signed_ok.output);
    auto certificate = tls::read_certificate(island.dir / "bus.pem");
    REQUIRE(certificate.ok());
    CHECK(tls::terminal_id_of(*certificate) == "BUS00007");

    write_text(island.dir / "bad.csr", "not a request");
    const auto bad = run(fmt::format("{} sign-certificate --name BUS00007 --csr {}", base, (island.dir / "bad.csr").string()));
    CHECK(bad.exit_code == 1);
    CHECK(bad.output.find("not a certificate request") != std::string::npos);
    const auto usage = run(fmt::format("{} sign-certificate --profile ca --name X --csr {}", base, (island.dir / "bus.csr").string()));
    CHECK(usage.exit_code == 2);
}
