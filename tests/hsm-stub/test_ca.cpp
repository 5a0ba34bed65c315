// The island CA in the key store (hsm-stub/include/coconut/hsm/ca.hpp): the ceremony, sealing, signing
// and its refusals, the wire payloads.
#include "support.hpp"

#include <coconut/hsm/ca.hpp>

using namespace hsm_test;
namespace tls = coconut::tls;
using hsm::Errc;

namespace {

hsm::KeyStore open_store(const TempDir& dir) {
    auto store = hsm::KeyStore::open(dir / "store");
    REQUIRE_MESSAGE(store.ok(), (store.ok() ? "" : store.error().message));
    return std::move(store.value());
}

// A store under `dir` with the island CA made and saved.
void make_ca_store(const TempDir& dir) {
    make_store(dir.path());
    hsm::KeyStore store = open_store(dir);
    auto made = hsm::create_ca(store);
    REQUIRE(made.ok());
    CHECK(made->created);
    REQUIRE(store.save().ok());
}

Bytes request_for(const tls::PrivateKey& key, const std::string& name = "BUS00001") {
    auto request = tls::make_request(key, {name, "what the terminal claims"});
    REQUIRE(request.ok());
    const std::string pem = tls::to_pem(*request);
    return Bytes(pem.begin(), pem.end());
}

tls::PrivateKey new_key() {
    auto key = tls::generate_key();
    REQUIRE(key.ok());
    return std::move(key).value();
}

}  // namespace

TEST_CASE("ca init seals an EC key with its self-signed certificate; a second init changes nothing") {
    TempDir dir;
    make_ca_store(dir);
    hsm::KeyStore store = open_store(dir);  // reopened: the key came back from keys.sealed
    auto der = hsm::ca_certificate(store);
    REQUIRE(der.ok());
    auto certificate = tls::parse_certificate(*der);
    REQUIRE(certificate.ok());
    const tls::CertificateInfo info = tls::describe(*certificate);
    CHECK(info.profile == tls::Profile::ca);
    CHECK(info.subject.common_name == hsm::ca_common_name_default);
    CHECK(info.issuer == info.subject);
    CHECK(info.not_after - info.not_before > std::chrono::hours(24) * 7000);

    const auto generation = store.generation();
    auto again = hsm::create_ca(store);
    REQUIRE(again.ok());
    CHECK_FALSE(again->created);
    CHECK(again->certificate_der == *der);
    CHECK(store.generation() == generation);
    // The 3DES keys are still there.
    CHECK(store.find({"mk-tac", 2}).ok());
}

TEST_CASE("the sealed store holds no CA key in clear and keeps format version 1 until a CA exists") {
    TempDir dir;
    make_store(dir.path());
    const std::string before = read_text(dir / "store" / "keys.sealed");
    CHECK(before.substr(8, 2) == std::string("\x00\x01", 2));
    hsm::KeyStore store = open_store(dir);
    REQUIRE(hsm::create_ca(store).ok());
    REQUIRE(store.save().ok());
    const std::string after = read_text(dir / "store" / "keys.sealed");
    CHECK(after.substr(8, 2) == std::string("\x00\x02", 2));
    // Neither the certificate's DER nor a PKCS#8 prefix appears in the file: the whole record is sealed.
    const Bytes certificate = hsm::ca_certificate(store).value();
    CHECK(after.find(std::string(certificate.begin(), certificate.begin() + 32)) == std::string::npos);
    // Tampering with the sealed bytes is still detected.
    flip_byte(dir / "store" / "keys.sealed", 10);
    auto reopened = hsm::KeyStore::open(dir / "store");
    REQUIRE_FALSE(reopened.ok());
    CHECK(reopened.error().code == Errc::store_tampered);
}

TEST_CASE("a terminal request is signed: CN = terminal id, O terminal, validity as asked, audit text with serial") {
    TempDir dir;
    make_ca_store(dir);
    hsm::KeyStore store = open_store(dir);
    const tls::PrivateKey key = new_key();
    hsm::Usage usage;
    auto issued = hsm::sign_certificate(store, {tls::Profile::terminal, "BUS00001", {}, 30, request_for(key)}, &usage);
    REQUIRE_MESSAGE(issued.ok(), (issued.ok() ? "" : issued.error().message));
    auto certificate = tls::parse_certificate(issued->certificate_der);
    REQUIRE(certificate.ok());
    CHECK(tls::terminal_id_of(*certificate) == "BUS00001");
    CHECK(tls::same_public_key(key, *certificate));
    const tls::CertificateInfo info = tls::describe(*certificate);
    CHECK(info.issuer.common_name == hsm::ca_common_name_default);
    CHECK(info.serial_hex == issued->serial_hex);
    CHECK(issued->not_after_unix_s - issued->not_before_unix_s == 30 * 86400 + 300);
    CHECK(usage.key_label == "island-ca");
    CHECK(usage.result.find("terminal CN=BUS00001 serial " + issued->serial_hex + " valid ") == 0);

    auto server = hsm::sign_certificate(
        store, {tls::Profile::server, "coconut-clearingd", {"IP:127.0.0.1", "DNS:clearing.island"}, 365, request_for(new_key(), "x")});
    REQUIRE(server.ok());
    const tls::CertificateInfo server_info = tls::describe(tls::parse_certificate(server->certificate_der).value());
    CHECK(server_info.profile == tls::Profile::server);
    CHECK(server_info.subject_alt_names == std::vector<std::string>{"IP:127.0.0.1", "DNS:clearing.island"});
    CHECK(server->serial_hex != issued->serial_hex);
}

TEST_CASE("signing refuses with bad_request and a message naming what is wrong") {
    TempDir dir;
    make_ca_store(dir);
    hsm::KeyStore store = open_store(dir);
    const Bytes good = request_for(new_key());
    const auto refused = [&](const hsm::CertificateSigning& signing) {
        auto issued = hsm::sign_certificate(store, signing);
        REQUIRE_FALSE(issued.ok());
        CHECK(issued.error().code == Errc::bad_request);
        return issued.error().message;
    };
    CHECK(refused({tls::Profile::terminal, "BUS00001", {}, 30, Bytes{'n', 'o', 'p', 'e'}})
              .find("certificate request: not a certificate request") == 0);
    Bytes tampered = tls::to_der(tls::parse_request(good).value());
    tampered[tampered.size() - 2] ^= 0x40;
    CHECK(refused({tls::Profile::terminal, "BUS00001", {}, 30, tampered}).find("signature does not verify") != std::string::npos);
    CHECK(refused({tls::Profile::terminal, "BUS0001", {}, 30, good}).find("exactly 8") != std::string::npos);
    CHECK(refused({tls::Profile::terminal, "BUS00001", {}, 0, good}).find("validity_days must be 1–825") == 0);
    CHECK(refused({tls::Profile::terminal, "BUS00001", {}, 826, good}).find("validity_days must be 1–825") == 0);
    CHECK(refused({tls::Profile::server, "clearing", {}, 30, good}).find("subject alternative names") != std::string::npos);
    CHECK(refused({tls::Profile::ca, "rogue", {}, 30, good}).find("terminal or server") != std::string::npos);
    CHECK(refused({tls::Profile::terminal, "BUS00001", {}, 30, Bytes(5000, 'A')}).find("larger than 4096") != std::string::npos);
}

TEST_CASE("before ca init, signing answers key_not_found") {
    TempDir dir;
    make_store(dir.path());
    hsm::KeyStore store = open_store(dir);
    auto issued = hsm::sign_certificate(store, {tls::Profile::terminal, "BUS00001", {}, 30, request_for(new_key())});
    REQUIRE_FALSE(issued.ok());
    CHECK(issued.error().code == Errc::key_not_found);
    CHECK(issued.error().message.find("ca init") != std::string::npos);
    CHECK(hsm::ca_certificate(store).error().code == Errc::key_not_found);
}

TEST_CASE("sign-certificate payloads round-trip and refuse inconsistent lengths") {
    const hsm::CertificateSigning signing{tls::Profile::server, "coconut-clearingd", {"IP:127.0.0.1"}, 90, Bytes{1, 2, 3}};
    const Bytes encoded = hsm::wire::encode(signing);
    auto decoded = hsm::wire::decode_sign_certificate(encoded);
    REQUIRE(decoded.ok());
    CHECK(decoded->profile == signing.profile);
    CHECK(decoded->name == signing.name);
    CHECK(decoded->subject_alt_names == signing.subject_alt_names);
    CHECK(decoded->validity_days == 90);
    CHECK(decoded->request == signing.request);
    CHECK(hsm::wire::decode_sign_certificate(ByteView(encoded).first(encoded.size() - 1)).error().code == Errc::bad_request);
    Bytes extra = encoded;
    extra.push_back(0);
    CHECK_FALSE(hsm::wire::decode_sign_certificate(extra).ok());
    Bytes bad_profile = encoded;
    bad_profile[0] = 3;
    CHECK(hsm::wire::decode_sign_certificate(bad_profile).error().message.find("neither 1") != std::string::npos);

    const Bytes certificate{0x30, 0x01, 0x00};
    CHECK(hsm::wire::decode_certificate(hsm::wire::encode_certificate(certificate)).value() == certificate);
    CHECK_FALSE(hsm::wire::decode_certificate(Bytes{0x00, 0x05, 0x01}).ok());
}

TEST_CASE("the permission ca has a name and is part of all") {
    CHECK(hsm::parse_permissions("ca") == std::optional<std::uint32_t>(hsm::permit_ca));
    CHECK(hsm::permissions_to_string(hsm::permit_ca | hsm::permit_tac) == "tac,ca");
    CHECK((*hsm::parse_permissions("all") & hsm::permit_ca) != 0);
    CHECK(hsm::wire::required_permission(hsm::wire::Command::sign_certificate) == hsm::permit_ca);
}
