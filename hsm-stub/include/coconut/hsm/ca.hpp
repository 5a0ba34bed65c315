// The island CA inside coconut-hsmd: the key that certifies every terminal and the clearing daemon for
// the ISO 8583 link's mutual TLS (clearing/README.md "TLS for terminals").
//
//   coconut-hsmd ca init --store DIR                      // ceremony, once (idempotent): key + certificate
//   coconut-hsmd ca certificate --store DIR --out ca.pem  // the CA certificate, for daemons and terminals
//   client->sign_certificate({tls::Profile::terminal, "BUS00001", {}, 365, csr_pem})   // over the wire
//
// The CA key is an EC P-256 key generated inside the HSM process (libcrypto's CSPRNG), sealed in the key
// store as a signing key (KeyStore::add_signing_key, label ca_label) together with its self-signed
// certificate, and never exported: no command returns it, no file holds it in clear. A signature
// decodes it from the store's guarded memory into a libcrypto key for that one signature and frees it
// (EVP_PKEY_free clears the private scalar).
//
// What the CA signs (coconut::tls builds the certificate): the requester proves possession of the key
// (the request's self-signature) and chooses nothing but the key; the subject, the extensions and the
// validity come from the command:
//   terminal  CN = the terminal id (field 41, 8 characters), O = "Coconut Card terminal", clientAuth
//   server    CN = the name given, O = "Coconut Card server", serverAuth, 1–8 subjectAltNames (IP:/DNS:)
// validity from now − certificate_backdate for validity_days (1 … certificate_validity_days_max), never
// past the CA certificate's own end; a random 16-byte serial. Every signature — and every refusal — is
// one line of the hash-chained audit log: the client, profile, subject, serial and validity.
//
// Errors (hsm::Failure, as on the wire): bad_request names the field (a request that does not parse or
// whose signature fails, a name that is not a terminal id, a validity out of range, subject alternative
// names on a terminal …); key_not_found before `ca init`; not_permitted without the "ca" permission;
// store_corrupt when the sealed key does not match its certificate.
#pragma once

#include <coconut/hsm/hsm.hpp>
#include <coconut/tls/tls.hpp>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace coconut::hsm {

// The signing key's label in the store.
inline constexpr std::string_view ca_label = "island-ca";
inline constexpr std::string_view ca_common_name_default = "Coconut Card island CA";
// The CA outlives every certificate it signs; 20 years covers a card scheme's generation of terminals.
inline constexpr std::uint32_t ca_validity_days_default = 7300;
inline constexpr std::uint32_t ca_validity_days_max = 10950;
// Terminal and server certificates: a year by default, renewed before expiry (`coconut terminal
// register --renew-within-days`); 825 days at most, the longest a TLS certificate is trusted for by
// the CA/Browser Forum's rules, so a stolen terminal key stops working within a bounded time.
inline constexpr std::uint16_t certificate_validity_days_default = 365;
inline constexpr std::uint16_t certificate_validity_days_max = 825;
// Validity starts this long before the signature: a terminal whose clock runs a little behind still
// accepts its new certificate at once.
inline constexpr std::chrono::minutes certificate_backdate{5};
// A P-256 request is ~400 bytes as PEM; 4 KiB bounds what a client can make the HSM parse.
inline constexpr std::size_t max_certificate_request_bytes = 4096;

struct CaCertificate {
    Bytes certificate_der;
    bool created = false;  // by this call (create_ca); false: the store already held the CA
};

// Ceremony (the caller holds the StoreLock and saves the store afterwards): generates the CA key and its
// self-signed certificate (CN = common_name, O = "Coconut Card island CA") and seals them in `store`.
// Idempotent: a store that already holds the CA is left as it is and its certificate returned.
// bad_request for a name or validity out of range.
Outcome<CaCertificate> create_ca(KeyStore& store, std::string_view common_name = ca_common_name_default,
                                 std::uint32_t validity_days = ca_validity_days_default);

// The CA certificate (DER). key_not_found before `ca init`.
Outcome<Bytes> ca_certificate(const KeyStore& store);

struct CertificateSigning {
    tls::Profile profile = tls::Profile::terminal;  // terminal or server
    std::string name;                               // terminal id, or the server's common name
    std::vector<std::string> subject_alt_names;     // server only: "IP:…" / "DNS:…"
    std::uint16_t validity_days = certificate_validity_days_default;
    Bytes request;  // PKCS#10, PEM or DER, ≤ max_certificate_request_bytes
};

struct IssuedCertificate {
    Bytes certificate_der;
    std::string serial_hex;
    std::int64_t not_before_unix_s = 0;
    std::int64_t not_after_unix_s = 0;
};

// Signs `signing.request` under the island CA (see the top of this header). `usage` receives the audit
// line's key label and result: "<profile> CN=<name> serial <hex> valid <from>..<until>".
Outcome<IssuedCertificate> sign_certificate(const KeyStore& store, const CertificateSigning& signing, Usage* usage = nullptr);

namespace wire {
// sign_certificate (0x51) request payload:
//   profile(1: 1 terminal, 2 server) ‖ name len(1) ‖ name ‖ validity days(2) ‖ alt name count(1) ‖
//   count × (len(1) ‖ "IP:…" | "DNS:…") ‖ request len(2) ‖ request (PEM or DER)
// Response payload of sign_certificate and ca_certificate (0x50, empty request): certificate len(2) ‖ DER.
Bytes encode(const CertificateSigning& signing);
Outcome<CertificateSigning> decode_sign_certificate(ByteView payload);
Bytes encode_certificate(ByteView certificate_der);
Outcome<Bytes> decode_certificate(ByteView payload);
}  // namespace wire

}  // namespace coconut::hsm
