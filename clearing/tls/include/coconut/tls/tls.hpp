// Mutual TLS between terminals and coconut-clearingd's ISO 8583 port (coconut::tls): the island CA's
// keys, certificate requests and certificates (OpenSSL 3 libcrypto, EC P-256), the PEM files an
// operator keeps, and the Boost.Asio ssl contexts of both ends. clearing/README.md "TLS for terminals"
// is the operator's view; this header is the whole API.
//
// Model
//   Island CA    one self-signed certificate (O = ca_organization, CA:TRUE, path length 0) whose private
//                key lives sealed inside coconut-hsmd (hsm-stub/include/coconut/hsm/ca.hpp) and signs
//                every other certificate there. This library builds the certificate; it never stores
//                the CA key.
//   Terminal     subject CN = the terminal id (ISO 8583 field 41: exactly 8 printable ASCII characters),
//                O = terminal_organization; extended key usage clientAuth only.
//   Server       subject CN = a name of the daemon, O = server_organization; subjectAltName with the IP
//                addresses / DNS names clients connect to; extended key usage serverAuth only.
//   Keys are EC P-256; every signature is ECDSA with SHA-256.
//
// Rules
//   - A server context accepts only a client certificate that chains to its CA file and is valid now
//     (OpenSSL's verification, purpose "SSL client": a server certificate cannot log in as a
//     terminal); a client without a certificate fails the handshake (verify_fail_if_no_peer_cert).
//   - A client context accepts only a server certificate that chains to its CA file, is valid now, has
//     the purpose "SSL server" and names the host the client connected to (an IP literal against the
//     certificate's IP addresses, a name against its DNS names).
//   - TLS 1.3 is negotiated whenever both ends have it; TLS 1.2 (ECDHE-ECDSA with AES-GCM or
//     ChaCha20-Poly1305) is the minimum.
//   - Resumption: the server issues session tickets (stateless, encrypted under a key of its context);
//     a ClientContext keeps the newest session it received and offers it on the next handshake, so a
//     reconnecting terminal pays no certificate verification or signature. A resumed session carries
//     the peer certificate it was established with: terminal_id_of_peer() answers the same on both.
//     Sessions live session_lifetime; after that the next handshake is a full one.
//   - Private key files are PEM (PKCS#8, unencrypted), mode 0600, written through a fresh temporary
//     file (O_EXCL, 0600) renamed over the target; read_private_key() refuses a file any other user
//     may read. Nothing in this library prints or logs key material.
//
// Errors: every expected failure is an Error{code, message}; the message names the file or the field
// and says what is wrong (for libcrypto failures it adds OpenSSL's reason). Exceptions only from
// Boost.Asio's own constructors (out of memory).
#pragma once

#include <coconut/core/bytes.hpp>
#include <coconut/core/result.hpp>

#include <boost/asio/ssl/context.hpp>
#include <openssl/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace coconut::tls {

// ---- errors -----------------------------------------------------------------------------------------

enum class ErrorCode : std::uint8_t {
    bad_input,  // a PEM / DER that does not parse, a name or validity out of range, a request whose
                // self-signature fails, a key that is not EC P-256
    io,         // a file cannot be read or written (the message names it, with strerror)
    file_mode,  // a private key file that group or others may read
    crypto,     // libcrypto refused an operation on valid input (the message carries its reason)
};

struct Error {
    ErrorCode code = ErrorCode::bad_input;
    std::string message;
};

template <class T>
using Result = coconut::Result<T, Error>;
using Status = coconut::Status<Error>;

// ---- names ------------------------------------------------------------------------------------------

inline constexpr std::string_view ca_organization = "Coconut Card island CA";
inline constexpr std::string_view terminal_organization = "Coconut Card terminal";
inline constexpr std::string_view server_organization = "Coconut Card server";

// Field 41 (ISO8583.md): exactly 8 printable ASCII characters (0x21–0x7E).
inline constexpr std::size_t terminal_id_chars = 8;
bool valid_terminal_id(std::string_view text);

// Common names and organizations: 1–64 characters (X.520 ub-common-name), printable ASCII.
inline constexpr std::size_t name_chars_max = 64;

struct Subject {
    std::string common_name;
    std::string organization;
    friend bool operator==(const Subject&, const Subject&) = default;
};

// ---- handles (one RAII wrapper per libcrypto type; moving transfers ownership) -----------------------

class PrivateKey {
public:
    PrivateKey() = default;
    explicit PrivateKey(EVP_PKEY* owned);
    EVP_PKEY* get() const { return key_.get(); }
    explicit operator bool() const { return key_ != nullptr; }

private:
    struct Free {
        void operator()(EVP_PKEY* key) const;
    };
    std::unique_ptr<EVP_PKEY, Free> key_;
};

// Copies share one X509 (reference counted by libcrypto); certificates are immutable once built.
class Certificate {
public:
    Certificate() = default;
    explicit Certificate(X509* owned);
    X509* get() const { return certificate_.get(); }
    explicit operator bool() const { return certificate_ != nullptr; }

private:
    std::shared_ptr<X509> certificate_;
};

class CertificateRequest {
public:
    CertificateRequest() = default;
    explicit CertificateRequest(X509_REQ* owned);
    X509_REQ* get() const { return request_.get(); }
    explicit operator bool() const { return request_ != nullptr; }

private:
    struct Free {
        void operator()(X509_REQ* request) const;
    };
    std::unique_ptr<X509_REQ, Free> request_;
};

// ---- keys -------------------------------------------------------------------------------------------

// A fresh EC P-256 key pair from OpenSSL's CSPRNG.
Result<PrivateKey> generate_key();

// PEM (PKCS#8) file. file_mode when the file is readable or writable by group or others; io; bad_input
// when it holds no private key or one that is not EC P-256.
Result<PrivateKey> read_private_key(const std::filesystem::path& path);
// Writes the key as PEM to a new temporary file beside `path` (mkstemp: O_EXCL, mode 0600), fsyncs it and
// renames it over `path` (replacing an older key: renewal), then fsyncs the directory. io on failure
// (the temporary file is removed).
Status write_private_key(const std::filesystem::path& path, const PrivateKey& key);

// PKCS#8 DER, for a key store that seals it (coconut-hsmd's CA key). The caller wipes the bytes.
Result<Bytes> private_key_der(const PrivateKey& key);
Result<PrivateKey> private_key_from_der(ByteView der);

// True when both hold the same public key (a certificate against the key it was issued for).
bool same_public_key(const PrivateKey& key, const Certificate& certificate);

// ---- certificate requests (PKCS#10) -------------------------------------------------------------------

// A request for `subject`, signed with `key` (proof of possession). bad_input when a name is empty, too
// long or not printable ASCII.
Result<CertificateRequest> make_request(const PrivateKey& key, const Subject& subject);
// PEM ("-----BEGIN CERTIFICATE REQUEST-----") or DER. bad_input when it does not parse, when its
// self-signature does not verify, or when its key is not EC P-256.
Result<CertificateRequest> parse_request(ByteView pem_or_der);
Bytes to_der(const CertificateRequest& request);
std::string to_pem(const CertificateRequest& request);
Subject subject_of(const CertificateRequest& request);

// ---- certificates ------------------------------------------------------------------------------------

// PEM or DER (the first certificate of a PEM file). bad_input when it does not parse.
Result<Certificate> parse_certificate(ByteView pem_or_der);
// Every certificate of a PEM file, in order (a chain file or a CA bundle). bad_input when none parses.
Result<std::vector<Certificate>> parse_certificates(ByteView pem);
Result<Certificate> read_certificate(const std::filesystem::path& path);
// PEM, mode 0644, through a temporary file renamed over `path`. `chain` is appended after `certificate`.
Status write_certificate(const std::filesystem::path& path, const Certificate& certificate, const std::vector<Certificate>& chain = {});
Bytes to_der(const Certificate& certificate);
std::string to_pem(const Certificate& certificate);

enum class Profile : std::uint8_t {
    terminal = 1,  // CN = terminal id, clientAuth
    server = 2,    // CN = daemon name, serverAuth, subjectAltName required
    ca = 3,        // the island CA itself (self-signed)
};
std::string_view profile_name(Profile profile);  // "terminal", "server", "ca"
std::optional<Profile> parse_profile(std::string_view name);

struct CertificateInfo {
    Subject subject;
    Subject issuer;
    std::string serial_hex;  // upper-case hex of the serial number's magnitude
    std::chrono::system_clock::time_point not_before;
    std::chrono::system_clock::time_point not_after;
    std::vector<std::string> subject_alt_names;  // "IP:127.0.0.1", "DNS:clearing.island"
    std::optional<Profile> profile;              // from the extensions; nullopt for a foreign certificate
};
CertificateInfo describe(const Certificate& certificate);

// The terminal id of a terminal certificate: its CN when O = terminal_organization, the extended key
// usage is clientAuth and the CN is a valid terminal id; otherwise nullopt.
std::optional<std::string> terminal_id_of(const Certificate& certificate);

// ---- issuing (inside coconut-hsmd; tests) ---------------------------------------------------------------

// Serial numbers: 16 random bytes (positive, nonzero), so two certificates of one CA never share one.
inline constexpr std::size_t serial_bytes = 16;
Bytes random_serial();

struct IssueOptions {
    Profile profile = Profile::terminal;
    std::string common_name;                     // terminal: a valid terminal id
    std::vector<std::string> subject_alt_names;  // server only: 1–8 entries "IP:<v4 or v6>" or "DNS:<name>"
    std::chrono::system_clock::time_point not_before;
    std::chrono::system_clock::time_point not_after;  // after not_before, and not after the issuer's
    Bytes serial;                                     // 1–20 bytes, big-endian; random_serial()
};
inline constexpr std::size_t subject_alt_names_max = 8;

// The certificate for the request's public key under `options` (the request's own subject is ignored:
// the issuer decides the name), signed by `issuer_key`, whose certificate is `issuer`. The request's
// self-signature is verified first. bad_input names the offending option.
Result<Certificate> issue_certificate(const CertificateRequest& request, const IssueOptions& options, const Certificate& issuer,
                                      const PrivateKey& issuer_key);
// The self-signed island CA certificate for `key` (CN = common_name, O = ca_organization).
Result<Certificate> make_ca_certificate(const PrivateKey& key, std::string_view common_name,
                                        std::chrono::system_clock::time_point not_before, std::chrono::system_clock::time_point not_after,
                                        const Bytes& serial);

// ---- Boost.Asio contexts -----------------------------------------------------------------------------

// A resumed session is accepted this long after its full handshake: a terminal reconnecting within an
// hour (its link drops, the daemon restarts with the same ticket key in the process) skips the
// signatures; after that it shows its certificate again, so a certificate past its validity stops
// working within the hour.
inline constexpr std::chrono::seconds session_lifetime{3600};

struct ServerFiles {
    std::filesystem::path ca;                 // PEM: the island CA certificate(s) client chains must end in
    std::filesystem::path certificate_chain;  // PEM: the server certificate, then any intermediates
    std::filesystem::path private_key;        // PEM: the server's key (0600)
};
// TLS 1.2 minimum (1.3 preferred), verify_peer | verify_fail_if_no_peer_cert against `ca`, the chain and
// key (checked to belong together), session tickets with session_lifetime. The message names the file.
Result<boost::asio::ssl::context> make_server_context(const ServerFiles& files);

// Both `certificate` and `private_key` empty: a client without a certificate of its own, which only
// verifies the server (the settlement poster over HTTPS, authenticated by its clerk token).
struct ClientFiles {
    std::filesystem::path ca;           // PEM: the island CA certificate the server must chain to
    std::filesystem::path certificate;  // PEM: this terminal's certificate
    std::filesystem::path private_key;  // PEM: its key (0600)
};

// A client's context and its session cache: the newest session ticket the server sent on any
// connection made with this context, offered on the next handshake. Thread-safe (the cache is behind a
// mutex; handshakes may run on several threads). Movable; the cache moves with it.
class ClientContext {
public:
    static Result<ClientContext> create(const ClientFiles& files);
    ClientContext(ClientContext&&) noexcept;
    ClientContext& operator=(ClientContext&&) noexcept;
    ~ClientContext();

    boost::asio::ssl::context& context();

    // Call on each new stream before its handshake: sets the server name to verify (an IP literal or a
    // DNS name; also sent as SNI when it is a name) and the cached session, if one is still valid.
    // bad_input when `server_host` is empty.
    Status prepare(SSL* ssl, std::string_view server_host);
    // After a successful handshake: whether it resumed the cached session.
    static bool resumed(SSL* ssl);
    bool has_session() const;
    void forget_session();  // the next handshake is a full one (tests, benchmarks)

    struct Cache;

private:
    ClientContext(boost::asio::ssl::context context, std::unique_ptr<Cache> cache);
    std::unique_ptr<boost::asio::ssl::context> context_;
    std::unique_ptr<Cache> cache_;
};

// After a server-side handshake: the terminal id of the verified client certificate (terminal_id_of)
// — nullopt when the peer sent none, verification did not succeed, or it is not a terminal certificate.
std::optional<std::string> terminal_id_of_peer(SSL* ssl);
// "TLSv1.3 TLS_AES_128_GCM_SHA256 (resumed)" for logs.
std::string describe_session(SSL* ssl);

}  // namespace coconut::tls
