// Keys, certificate requests and certificates of the island CA (tls.hpp): libcrypto only, one RAII
// wrapper per handle, every failure with the file or field named.
#include <coconut/core/durable_file.hpp>
#include <coconut/tls/tls.hpp>

#include "detail.hpp"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>

namespace coconut::tls {

namespace {

// Certificate and key files are a few KiB; a CA bundle a few dozen. 1 MiB bounds what a wrong path
// (a log, a device) makes us read.
constexpr std::size_t pem_file_bytes_max = 1u << 20;
// Serial numbers: RFC 5280 §4.1.2.2 allows at most 20 octets.
constexpr std::size_t serial_bytes_max = 20;
// DNS names in subjectAltName: RFC 1035's 253 characters.
constexpr std::size_t dns_name_chars_max = 253;

template <class T, void (*Free)(T*)>
struct Deleter {
    void operator()(T* p) const { Free(p); }
};
using BioPtr = std::unique_ptr<BIO, Deleter<BIO, BIO_free_all>>;
using NamePtr = std::unique_ptr<X509_NAME, Deleter<X509_NAME, X509_NAME_free>>;
using ExtensionPtr = std::unique_ptr<X509_EXTENSION, Deleter<X509_EXTENSION, X509_EXTENSION_free>>;
using BignumPtr = std::unique_ptr<BIGNUM, Deleter<BIGNUM, BN_free>>;
using GeneralNamesPtr = std::unique_ptr<GENERAL_NAMES, Deleter<GENERAL_NAMES, GENERAL_NAMES_free>>;
using Pkcs8Ptr = std::unique_ptr<PKCS8_PRIV_KEY_INFO, Deleter<PKCS8_PRIV_KEY_INFO, PKCS8_PRIV_KEY_INFO_free>>;

using detail::fail;
using detail::openssl_reason;

// The message for a failed open/read/write: what, the path, strerror(errno).
std::string fmt_errno(std::string_view what, const std::filesystem::path& path) {
    return std::string(what) + " " + path.string() + ": " + std::strerror(errno);
}

Unexpected<Error> crypto_failure(std::string_view what) { return fail(ErrorCode::crypto, std::string(what) + ": " + openssl_reason()); }

bool printable_ascii(std::string_view text) {
    return std::all_of(text.begin(), text.end(), [](char c) { return c >= 0x20 && c <= 0x7E; });
}

bool valid_name(std::string_view text) { return !text.empty() && text.size() <= name_chars_max && printable_ascii(text); }

ByteView view_of(std::string_view text) { return ByteView(reinterpret_cast<const std::uint8_t*>(text.data()), text.size()); }

bool looks_like_pem(ByteView data) {
    constexpr std::string_view begin = "-----BEGIN";
    const std::string_view text(reinterpret_cast<const char*>(data.data()), data.size());
    return text.find(begin) != std::string_view::npos;
}

BioPtr memory_bio(ByteView data) { return BioPtr(BIO_new_mem_buf(data.data(), static_cast<int>(data.size()))); }

// What a memory BIO holds, as text.
std::string bio_text(BIO* bio) {
    BUF_MEM* buffer = nullptr;
    BIO_get_mem_ptr(bio, &buffer);
    return buffer ? std::string(buffer->data, buffer->length) : std::string();
}

// A file of at most pem_file_bytes_max bytes. The caller wipes it when it holds a key.
Result<Bytes> read_file(const std::filesystem::path& path, std::string_view what) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return fail(ErrorCode::io, fmt_errno(what, path));
    Bytes data;
    char chunk[4096];
    while (in.read(chunk, sizeof chunk) || in.gcount() > 0) {
        data.insert(data.end(), chunk, chunk + in.gcount());
        if (data.size() > pem_file_bytes_max) {
            OPENSSL_cleanse(data.data(), data.size());
            return fail(ErrorCode::bad_input, std::string(what) + " " + path.string() + " is larger than 1 MiB: not a PEM file");
        }
    }
    return data;
}

bool is_p256(EVP_PKEY* key) {
    if (key == nullptr || EVP_PKEY_is_a(key, "EC") != 1) return false;
    char group[64] = {};
    std::size_t length = 0;
    if (EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group, &length) != 1) return false;
    const std::string_view name(group, length);
    return name == "prime256v1" || name == "P-256";
}

std::string name_entry(X509_NAME* name, int nid) {
    if (name == nullptr) return {};
    const int index = X509_NAME_get_index_by_NID(name, nid, -1);
    if (index < 0) return {};
    ASN1_STRING* data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, index));
    unsigned char* utf8 = nullptr;
    const int length = ASN1_STRING_to_UTF8(&utf8, data);
    if (length < 0) return {};
    std::string out(reinterpret_cast<const char*>(utf8), static_cast<std::size_t>(length));
    OPENSSL_free(utf8);
    return out;
}

Subject subject_of_name(X509_NAME* name) { return {name_entry(name, NID_commonName), name_entry(name, NID_organizationName)}; }

Result<NamePtr> make_name(const Subject& subject) {
    if (!valid_name(subject.common_name))
        return fail(ErrorCode::bad_input, "common name '" + subject.common_name + "' must be 1–64 printable ASCII characters");
    if (!valid_name(subject.organization))
        return fail(ErrorCode::bad_input, "organization '" + subject.organization + "' must be 1–64 printable ASCII characters");
    NamePtr name(X509_NAME_new());
    const auto add = [&](int nid, const std::string& value) {
        return X509_NAME_add_entry_by_NID(name.get(), nid, MBSTRING_ASC, reinterpret_cast<const unsigned char*>(value.data()),
                                          static_cast<int>(value.size()), -1, 0) == 1;
    };
    if (!name || !add(NID_organizationName, subject.organization) || !add(NID_commonName, subject.common_name))
        return crypto_failure("subject name");
    return name;
}

std::chrono::system_clock::time_point time_of(const ASN1_TIME* time) {
    std::tm parts{};
    if (time == nullptr || ASN1_TIME_to_tm(time, &parts) != 1) return {};
    return std::chrono::system_clock::from_time_t(::timegm(&parts));
}

bool set_time(ASN1_TIME* field, std::chrono::system_clock::time_point when) {
    return ASN1_TIME_set(field, std::chrono::system_clock::to_time_t(when)) != nullptr;
}

// One X.509v3 extension from its OpenSSL configuration text, added to `certificate`.
bool add_extension(X509* certificate, X509V3_CTX* context, int nid, const std::string& value) {
    ExtensionPtr extension(X509V3_EXT_conf_nid(nullptr, context, nid, value.c_str()));
    return extension && X509_add_ext(certificate, extension.get(), -1) == 1;
}

bool valid_dns_name(std::string_view name) {
    if (name.empty() || name.size() > dns_name_chars_max || name.front() == '.' || name.back() == '.') return false;
    return std::all_of(name.begin(), name.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-';
    });
}

bool valid_ip(std::string_view text) {
    const std::string address(text);
    unsigned char buffer[16];
    return ::inet_pton(AF_INET, address.c_str(), buffer) == 1 || ::inet_pton(AF_INET6, address.c_str(), buffer) == 1;
}

// "IP:127.0.0.1,DNS:clearing.island" for X509V3_EXT_conf_nid; every entry checked first, so no entry
// can smuggle a separator or another name type into the configuration text.
Result<std::string> subject_alt_name_text(const std::vector<std::string>& names) {
    std::string text;
    for (const std::string& name : names) {
        const bool ip = name.rfind("IP:", 0) == 0 && valid_ip(std::string_view(name).substr(3));
        const bool dns = name.rfind("DNS:", 0) == 0 && valid_dns_name(std::string_view(name).substr(4));
        if (!ip && !dns) return fail(ErrorCode::bad_input, "subject alternative name '" + name + "' must be IP:<address> or DNS:<name>");
        if (!text.empty()) text += ',';
        text += name;
    }
    return text;
}

std::string format_ip(const ASN1_OCTET_STRING* address) {
    char text[INET6_ADDRSTRLEN] = {};
    const int length = ASN1_STRING_length(address);
    const unsigned char* bytes = ASN1_STRING_get0_data(address);
    if (length == 4) ::inet_ntop(AF_INET, bytes, text, sizeof text);
    if (length == 16) ::inet_ntop(AF_INET6, bytes, text, sizeof text);
    return text;
}

Status verify_request_signature(const CertificateRequest& request) {
    EVP_PKEY* key = X509_REQ_get0_pubkey(request.get());
    if (!is_p256(key)) return fail(ErrorCode::bad_input, "the certificate request's key is not EC P-256");
    if (X509_REQ_verify(request.get(), key) != 1) {
        ERR_clear_error();
        return fail(ErrorCode::bad_input, "the certificate request's signature does not verify (not signed by its own key)");
    }
    return Ok{};
}

}  // namespace

bool valid_terminal_id(std::string_view text) {
    return text.size() == terminal_id_chars && std::all_of(text.begin(), text.end(), [](char c) { return c >= 0x21 && c <= 0x7E; });
}

// ---- handles ---------------------------------------------------------------------------------------------

PrivateKey::PrivateKey(EVP_PKEY* owned) : key_(owned) {}
void PrivateKey::Free::operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }  // clears the private scalar

Certificate::Certificate(X509* owned) : certificate_(owned, X509_free) {}

CertificateRequest::CertificateRequest(X509_REQ* owned) : request_(owned) {}
void CertificateRequest::Free::operator()(X509_REQ* request) const { X509_REQ_free(request); }

// ---- keys ------------------------------------------------------------------------------------------------

Result<PrivateKey> generate_key() {
    EVP_PKEY* key = EVP_EC_gen("P-256");
    if (key == nullptr) return crypto_failure("EC P-256 key generation");
    return PrivateKey(key);
}

Result<PrivateKey> read_private_key(const std::filesystem::path& path) {
    struct stat status {};
    if (::stat(path.c_str(), &status) != 0) return fail(ErrorCode::io, fmt_errno("private key", path));
    if ((status.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
        char mode[8];
        std::snprintf(mode, sizeof mode, "%03o", static_cast<unsigned>(status.st_mode & 0777));
        return fail(ErrorCode::file_mode,
                    "private key " + path.string() + " has mode " + mode + ": other users may read it (chmod 600 it)");
    }
    auto data = read_file(path, "private key");
    if (!data) return Unexpected<Error>{data.error()};
    BioPtr bio = memory_bio(*data);
    // No passphrase callback: the files are unencrypted, and an encrypted one must not prompt a daemon.
    EVP_PKEY* key = PEM_read_bio_PrivateKey(
        bio.get(), nullptr, [](char*, int, int, void*) { return 0; }, nullptr);
    OPENSSL_cleanse(data->data(), data->size());
    if (key == nullptr) {
        ERR_clear_error();
        return fail(ErrorCode::bad_input, "private key " + path.string() + " holds no unencrypted PEM private key");
    }
    PrivateKey owned(key);
    if (!is_p256(key)) return fail(ErrorCode::bad_input, "private key " + path.string() + " is not an EC P-256 key");
    return owned;
}

Status write_private_key(const std::filesystem::path& path, const PrivateKey& key) {
    BioPtr bio(BIO_new(BIO_s_mem()));
    if (!bio || PEM_write_bio_PrivateKey(bio.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr) != 1)
        return crypto_failure("PEM encoding of a private key");
    BUF_MEM* buffer = nullptr;
    BIO_get_mem_ptr(bio.get(), &buffer);
    struct Wipe {
        BUF_MEM* buffer;
        ~Wipe() { OPENSSL_cleanse(buffer->data, buffer->length); }
    } wipe{buffer};

    const std::filesystem::path directory = path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
    std::string temporary = (directory / ("." + path.filename().string() + ".XXXXXX")).string();
    const int fd = ::mkstemp(temporary.data());  // O_CREAT | O_EXCL, mode 0600
    if (fd < 0) return fail(ErrorCode::io, fmt_errno("cannot create a temporary file for", path));
    const auto abandon = [&](std::string_view what) {
        const std::string message = fmt_errno(what, temporary);
        ::close(fd);
        ::unlink(temporary.c_str());
        return fail(ErrorCode::io, message);
    };
    std::size_t done = 0;
    while (done < buffer->length) {
        const ssize_t n = ::write(fd, buffer->data + done, buffer->length - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return abandon("write");
        done += static_cast<std::size_t>(n);
    }
    if (::fchmod(fd, 0600) != 0) return abandon("chmod 600");
    if (::fsync(fd) != 0) return abandon("fsync");
    ::close(fd);
    if (std::rename(temporary.c_str(), path.c_str()) != 0) {
        const std::string message = fmt_errno("rename to", path);
        ::unlink(temporary.c_str());
        return fail(ErrorCode::io, message);
    }
    if (auto synced = fsync_parent_directory(path); !synced) return fail(ErrorCode::io, synced.error().message());
    return Ok{};
}

Result<Bytes> private_key_der(const PrivateKey& key) {
    Pkcs8Ptr info(EVP_PKEY2PKCS8(key.get()));
    if (!info) return crypto_failure("PKCS#8 encoding of a private key");
    const int length = i2d_PKCS8_PRIV_KEY_INFO(info.get(), nullptr);
    if (length <= 0) return crypto_failure("PKCS#8 encoding of a private key");
    Bytes der(static_cast<std::size_t>(length));
    unsigned char* out = der.data();
    i2d_PKCS8_PRIV_KEY_INFO(info.get(), &out);
    return der;
}

Result<PrivateKey> private_key_from_der(ByteView der) {
    const unsigned char* in = der.data();
    Pkcs8Ptr info(d2i_PKCS8_PRIV_KEY_INFO(nullptr, &in, static_cast<long>(der.size())));
    if (!info || in != der.data() + der.size()) {
        ERR_clear_error();
        return fail(ErrorCode::bad_input, "not a PKCS#8 DER private key");
    }
    EVP_PKEY* key = EVP_PKCS82PKEY(info.get());
    if (key == nullptr) return crypto_failure("PKCS#8 private key");
    PrivateKey owned(key);
    if (!is_p256(key)) return fail(ErrorCode::bad_input, "the private key is not EC P-256");
    return owned;
}

bool same_public_key(const PrivateKey& key, const Certificate& certificate) {
    return key && certificate && EVP_PKEY_eq(key.get(), X509_get0_pubkey(certificate.get())) == 1;
}

// ---- requests ----------------------------------------------------------------------------------------------

Result<CertificateRequest> make_request(const PrivateKey& key, const Subject& subject) {
    auto name = make_name(subject);
    if (!name) return Unexpected<Error>{name.error()};
    CertificateRequest request(X509_REQ_new());
    if (!request || X509_REQ_set_version(request.get(), X509_REQ_VERSION_1) != 1 ||
        X509_REQ_set_subject_name(request.get(), name->get()) != 1 || X509_REQ_set_pubkey(request.get(), key.get()) != 1 ||
        X509_REQ_sign(request.get(), key.get(), EVP_sha256()) <= 0)
        return crypto_failure("certificate request");
    return request;
}

Result<CertificateRequest> parse_request(ByteView pem_or_der) {
    X509_REQ* parsed = nullptr;
    if (looks_like_pem(pem_or_der)) {
        BioPtr bio = memory_bio(pem_or_der);
        parsed = PEM_read_bio_X509_REQ(bio.get(), nullptr, nullptr, nullptr);
    } else {
        const unsigned char* in = pem_or_der.data();
        parsed = d2i_X509_REQ(nullptr, &in, static_cast<long>(pem_or_der.size()));
        if (parsed != nullptr && in != pem_or_der.data() + pem_or_der.size()) {
            X509_REQ_free(parsed);
            ERR_clear_error();
            return fail(ErrorCode::bad_input, "the certificate request has bytes after its DER encoding");
        }
    }
    if (parsed == nullptr) {
        ERR_clear_error();
        return fail(ErrorCode::bad_input, "not a certificate request (PKCS#10, PEM or DER)");
    }
    CertificateRequest request(parsed);
    if (auto verified = verify_request_signature(request); !verified) return Unexpected<Error>{verified.error()};
    return request;
}

Bytes to_der(const CertificateRequest& request) {
    const int length = i2d_X509_REQ(request.get(), nullptr);
    Bytes der(length > 0 ? static_cast<std::size_t>(length) : 0);
    unsigned char* out = der.data();
    if (length > 0) i2d_X509_REQ(request.get(), &out);
    return der;
}

std::string to_pem(const CertificateRequest& request) {
    BioPtr bio(BIO_new(BIO_s_mem()));
    PEM_write_bio_X509_REQ(bio.get(), request.get());
    return bio_text(bio.get());
}

Subject subject_of(const CertificateRequest& request) { return subject_of_name(X509_REQ_get_subject_name(request.get())); }

// ---- certificates ----------------------------------------------------------------------------------------

Result<Certificate> parse_certificate(ByteView pem_or_der) {
    X509* parsed = nullptr;
    if (looks_like_pem(pem_or_der)) {
        BioPtr bio = memory_bio(pem_or_der);
        parsed = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr);
    } else {
        const unsigned char* in = pem_or_der.data();
        parsed = d2i_X509(nullptr, &in, static_cast<long>(pem_or_der.size()));
        if (parsed != nullptr && in != pem_or_der.data() + pem_or_der.size()) {
            X509_free(parsed);
            ERR_clear_error();
            return fail(ErrorCode::bad_input, "the certificate has bytes after its DER encoding");
        }
    }
    if (parsed == nullptr) {
        ERR_clear_error();
        return fail(ErrorCode::bad_input, "not an X.509 certificate (PEM or DER)");
    }
    return Certificate(parsed);
}

Result<std::vector<Certificate>> parse_certificates(ByteView pem) {
    BioPtr bio = memory_bio(pem);
    std::vector<Certificate> out;
    while (X509* parsed = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) out.emplace_back(parsed);
    ERR_clear_error();  // the end of the file reads as "no start line"
    if (out.empty()) return fail(ErrorCode::bad_input, "no PEM certificate found");
    return out;
}

Result<Certificate> read_certificate(const std::filesystem::path& path) {
    auto data = read_file(path, "certificate");
    if (!data) return Unexpected<Error>{data.error()};
    auto parsed = parse_certificate(*data);
    if (!parsed) return fail(parsed.error().code, "certificate " + path.string() + ": " + parsed.error().message);
    return parsed;
}

Status write_certificate(const std::filesystem::path& path, const Certificate& certificate, const std::vector<Certificate>& chain) {
    std::string text = to_pem(certificate);
    for (const Certificate& next : chain) text += to_pem(next);
    if (auto written = write_file_atomically(path, view_of(text), 0644); !written)
        return fail(ErrorCode::io, "certificate " + path.string() + ": " + written.error().message());
    return Ok{};
}

Bytes to_der(const Certificate& certificate) {
    const int length = i2d_X509(certificate.get(), nullptr);
    Bytes der(length > 0 ? static_cast<std::size_t>(length) : 0);
    unsigned char* out = der.data();
    if (length > 0) i2d_X509(certificate.get(), &out);
    return der;
}

std::string to_pem(const Certificate& certificate) {
    BioPtr bio(BIO_new(BIO_s_mem()));
    PEM_write_bio_X509(bio.get(), certificate.get());
    return bio_text(bio.get());
}

std::string_view profile_name(Profile profile) {
    switch (profile) {
        case Profile::terminal: return "terminal";
        case Profile::server: return "server";
        case Profile::ca: return "ca";
    }
    return "unknown";
}

std::optional<Profile> parse_profile(std::string_view name) {
    for (Profile profile : {Profile::terminal, Profile::server, Profile::ca})
        if (profile_name(profile) == name) return profile;
    return std::nullopt;
}

CertificateInfo describe(const Certificate& certificate) {
    X509* x = certificate.get();
    CertificateInfo info;
    info.subject = subject_of_name(X509_get_subject_name(x));
    info.issuer = subject_of_name(X509_get_issuer_name(x));
    BignumPtr serial(ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), nullptr));
    if (serial) {
        char* hex = BN_bn2hex(serial.get());
        info.serial_hex = hex ? hex : "";
        OPENSSL_free(hex);
    }
    info.not_before = time_of(X509_get0_notBefore(x));
    info.not_after = time_of(X509_get0_notAfter(x));
    GeneralNamesPtr names(static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(x, NID_subject_alt_name, nullptr, nullptr)));
    for (int i = 0; names && i < sk_GENERAL_NAME_num(names.get()); ++i) {
        const GENERAL_NAME* name = sk_GENERAL_NAME_value(names.get(), i);
        if (name->type == GEN_DNS) {
            const ASN1_IA5STRING* dns = name->d.dNSName;
            info.subject_alt_names.push_back("DNS:" + std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(dns)),
                                                                  static_cast<std::size_t>(ASN1_STRING_length(dns))));
        } else if (name->type == GEN_IPADD) {
            info.subject_alt_names.push_back("IP:" + format_ip(name->d.iPAddress));
        }
    }
    // X509_check_ca and X509_get_extended_key_usage read the extensions libcrypto caches on first use.
    const std::uint32_t usage = X509_get_extended_key_usage(x);
    const bool client_only = (usage & (XKU_SSL_CLIENT | XKU_SSL_SERVER)) == XKU_SSL_CLIENT && usage != UINT32_MAX;
    const bool server_only = (usage & (XKU_SSL_CLIENT | XKU_SSL_SERVER)) == XKU_SSL_SERVER && usage != UINT32_MAX;
    if (X509_check_ca(x) >= 1 && info.subject.organization == ca_organization) {
        info.profile = Profile::ca;
    } else if (X509_check_ca(x) == 0 && client_only && info.subject.organization == terminal_organization) {
        info.profile = Profile::terminal;
    } else if (X509_check_ca(x) == 0 && server_only && info.subject.organization == server_organization) {
        info.profile = Profile::server;
    }
    return info;
}

std::optional<std::string> terminal_id_of(const Certificate& certificate) {
    if (!certificate) return std::nullopt;
    CertificateInfo info = describe(certificate);
    if (info.profile != Profile::terminal || !valid_terminal_id(info.subject.common_name)) return std::nullopt;
    return std::move(info.subject.common_name);
}

// ---- issuing -----------------------------------------------------------------------------------------------

Bytes random_serial() {
    Bytes serial(serial_bytes);
    if (RAND_bytes(serial.data(), static_cast<int>(serial.size())) != 1) throw std::runtime_error("RAND_bytes failed");
    serial[0] &= 0x7F;                  // positive
    if (serial[0] == 0) serial[0] = 1;  // all 16 bytes significant, never zero
    return serial;
}

namespace {

// The fields every certificate of this CA shares: v3, serial, names, key, validity.
Result<Certificate> certificate_body(const Bytes& serial, X509_NAME* subject, X509_NAME* issuer, EVP_PKEY* public_key,
                                     std::chrono::system_clock::time_point not_before, std::chrono::system_clock::time_point not_after) {
    if (serial.empty() || serial.size() > serial_bytes_max || serial[0] == 0 || (serial[0] & 0x80) != 0)
        return fail(ErrorCode::bad_input, "a serial number is 1–20 bytes, positive, without a leading zero byte");
    if (not_after <= not_before) return fail(ErrorCode::bad_input, "the validity must end after it begins");
    Certificate certificate(X509_new());
    BignumPtr number(BN_bin2bn(serial.data(), static_cast<int>(serial.size()), nullptr));
    X509* x = certificate.get();
    if (!certificate || !number || X509_set_version(x, X509_VERSION_3) != 1 ||
        BN_to_ASN1_INTEGER(number.get(), X509_get_serialNumber(x)) == nullptr || X509_set_subject_name(x, subject) != 1 ||
        X509_set_issuer_name(x, issuer) != 1 || X509_set_pubkey(x, public_key) != 1 || !set_time(X509_getm_notBefore(x), not_before) ||
        !set_time(X509_getm_notAfter(x), not_after))
        return crypto_failure("certificate fields");
    return certificate;
}

}  // namespace

Result<Certificate> issue_certificate(const CertificateRequest& request, const IssueOptions& options, const Certificate& issuer,
                                      const PrivateKey& issuer_key) {
    if (auto verified = verify_request_signature(request); !verified) return Unexpected<Error>{verified.error()};
    if (!same_public_key(issuer_key, issuer)) return fail(ErrorCode::bad_input, "the issuer key does not belong to the issuer certificate");
    std::string organization;
    std::string extended_usage;
    switch (options.profile) {
        case Profile::terminal:
            if (!valid_terminal_id(options.common_name))
                return fail(ErrorCode::bad_input,
                            "terminal id '" + options.common_name + "' must be exactly 8 printable ASCII characters (field 41)");
            if (!options.subject_alt_names.empty())
                return fail(ErrorCode::bad_input, "a terminal certificate carries no subject alternative names");
            organization = terminal_organization;
            extended_usage = "clientAuth";
            break;
        case Profile::server:
            if (options.subject_alt_names.empty() || options.subject_alt_names.size() > subject_alt_names_max)
                return fail(ErrorCode::bad_input, "a server certificate needs 1–8 subject alternative names (IP:… or DNS:…)");
            organization = server_organization;
            extended_usage = "serverAuth";
            break;
        case Profile::ca: return fail(ErrorCode::bad_input, "the CA certificate is made by make_ca_certificate, not issued");
    }
    auto alt_names = subject_alt_name_text(options.subject_alt_names);
    if (!alt_names) return Unexpected<Error>{alt_names.error()};
    if (options.not_after > time_of(X509_get0_notAfter(issuer.get())))
        return fail(ErrorCode::bad_input, "the validity would end after the CA certificate's");
    auto subject = make_name({options.common_name, organization});
    if (!subject) return Unexpected<Error>{subject.error()};
    auto certificate = certificate_body(options.serial, subject->get(), X509_get_subject_name(issuer.get()),
                                        X509_REQ_get0_pubkey(request.get()), options.not_before, options.not_after);
    if (!certificate) return certificate;
    X509* x = certificate->get();
    X509V3_CTX context;
    X509V3_set_ctx(&context, issuer.get(), x, nullptr, nullptr, 0);
    if (!add_extension(x, &context, NID_basic_constraints, "critical,CA:FALSE") ||
        !add_extension(x, &context, NID_key_usage, "critical,digitalSignature") ||
        !add_extension(x, &context, NID_ext_key_usage, extended_usage) || !add_extension(x, &context, NID_subject_key_identifier, "hash") ||
        !add_extension(x, &context, NID_authority_key_identifier, "keyid:always") ||
        (!alt_names->empty() && !add_extension(x, &context, NID_subject_alt_name, *alt_names)))
        return crypto_failure("certificate extensions");
    if (X509_sign(x, issuer_key.get(), EVP_sha256()) <= 0) return crypto_failure("certificate signature");
    return certificate;
}

Result<Certificate> make_ca_certificate(const PrivateKey& key, std::string_view common_name,
                                        std::chrono::system_clock::time_point not_before, std::chrono::system_clock::time_point not_after,
                                        const Bytes& serial) {
    if (!is_p256(key.get())) return fail(ErrorCode::bad_input, "the CA key is not EC P-256");
    auto name = make_name({std::string(common_name), std::string(ca_organization)});
    if (!name) return Unexpected<Error>{name.error()};
    auto certificate = certificate_body(serial, name->get(), name->get(), key.get(), not_before, not_after);
    if (!certificate) return certificate;
    X509* x = certificate->get();
    X509V3_CTX context;
    X509V3_set_ctx(&context, x, x, nullptr, nullptr, 0);
    if (!add_extension(x, &context, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") ||
        !add_extension(x, &context, NID_key_usage, "critical,keyCertSign,cRLSign") ||
        !add_extension(x, &context, NID_subject_key_identifier, "hash"))
        return crypto_failure("CA certificate extensions");
    if (X509_sign(x, key.get(), EVP_sha256()) <= 0) return crypto_failure("CA certificate signature");
    return certificate;
}

}  // namespace coconut::tls
