// TLS identities of the island (clearing/README.md "TLS for terminals"): the island CA inside coconut-hsmd,
// the clearing daemon's server certificate and one client certificate per terminal. Each identity is a
// directory of three PEM files:
//
//   cert.pem  the certificate the HSM signed (terminal: CN = terminal id; server: SAN IP:127.0.0.1, DNS:localhost)
//   key.pem   its EC P-256 private key, made here, mode 0600, never sent anywhere (only its request is)
//   ca.pem    the island CA certificate the other end must chain to
//
//   D/tls/ca.pem                 the island CA certificate (coconut-hsmd ca init)
//   D/tls/clearingd/             coconut-clearingd's identity (--tls-cert / --tls-key / --tls-ca)
//   IMAGES/tls/<terminal id>/    each terminal's identity, beside its PSAM and queue
//   D/keys/enrolment.key         the HSM client allowed to have certificates signed (permission ca)
#pragma once

#include "world.hpp"

#include <coconut/tls/tls.hpp>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace coconut::cli {

struct TlsIdentity {
    fs::path dir;
    fs::path certificate() const { return dir / "cert.pem"; }
    fs::path private_key() const { return dir / "key.pem"; }
    fs::path ca() const { return dir / "ca.pem"; }
};

// A terminal's identity directory: IMAGES/tls/<terminal id>.
TlsIdentity terminal_identity(const Island& island, const std::string& terminal_id);
TlsIdentity clearing_identity(const WorldPaths& world);
fs::path island_ca_file(const WorldPaths& world);
fs::path enrolment_key_file(const WorldPaths& world);

// The clearing daemon's certificate names what terminals dial.
inline constexpr const char* clearing_common_name = "coconut-clearingd";
inline const std::vector<std::string> clearing_alt_names = {"IP:127.0.0.1", "DNS:localhost"};
// A certificate is renewed when it ends within this many days (and when it is missing, for another name,
// from another CA, or its key does not match it).
inline constexpr std::uint16_t renew_within_days_default = 30;

struct CertificateOrder {
    tls::Profile profile = tls::Profile::terminal;
    std::string name;  // terminal id, or the server's common name
    std::vector<std::string> alt_names;
    std::uint16_t validity_days = 365;
    std::uint16_t renew_within_days = renew_within_days_default;
};

struct CertificateOutcome {
    bool issued = false;  // false: the existing certificate was kept
    std::string serial;
    std::chrono::system_clock::time_point not_after;
    std::string reason;  // why it was (re)issued or kept
};

// The island CA in the HSM store, made before coconut-hsmd serves the store: the HSM client "enrolment"
// (permission ca, key in D/keys/enrolment.key) and `coconut-hsmd ca init`, both only when missing; writes
// D/tls/ca.pem. Idempotent (an island from a build before TLS gets its CA here).
void ensure_island_ca(const WorldPaths& world);

// Makes `identity` hold a valid certificate for `order`: a new key pair and request, signed by the HSM at
// `hsm_endpoint` (as the enrolment client), key.pem (0600) written before cert.pem, ca.pem beside them.
// Kept as it is when its certificate names order.name, chains to the current CA, matches key.pem and is
// valid for more than order.renew_within_days. Fails the command: usage for a bad order, hsm_error when
// the HSM refuses, io_error for files.
CertificateOutcome ensure_certificate(const WorldPaths& world, const std::string& hsm_endpoint, const TlsIdentity& identity,
                                      const CertificateOrder& order);

// Every terminal of the island (ensure_certificate each); the number issued.
std::size_t ensure_terminal_certificates(const WorldPaths& world, const Island& island, const std::string& hsm_endpoint);

// "2027-12-06" for messages.
std::string format_date(std::chrono::system_clock::time_point when);

}  // namespace coconut::cli
