// The island CA (ca.hpp): ceremony, signing, and the two wire payloads.
#include <coconut/hsm/ca.hpp>

#include <fmt/format.h>
#include <sodium.h>

#include <ctime>

namespace coconut::hsm {

namespace {

using Clock = std::chrono::system_clock;

Unexpected<Failure> from_tls(const tls::Error& error, std::string_view what) {
    const Errc code = error.code == tls::ErrorCode::bad_input ? Errc::bad_request : Errc::io_error;
    return fail(code, fmt::format("{}: {}", what, error.message));
}

std::string utc(Clock::time_point when) {
    const std::time_t seconds = Clock::to_time_t(when);
    std::tm parts{};
    ::gmtime_r(&seconds, &parts);
    char text[32];
    std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &parts);
    return text;
}

// The CA key, decoded from the store's guarded memory for one use (freed, and its scalar cleared, by
// the caller's PrivateKey going out of scope).
Outcome<tls::PrivateKey> ca_key(const KeyStore& store) {
    std::optional<tls::Result<tls::PrivateKey>> decoded;
    if (auto used = store.with_signing_key(ca_label, [&](ByteView der) { decoded = tls::private_key_from_der(der); }); !used)
        return fail(Errc::key_not_found, "the island CA does not exist yet (run `coconut-hsmd ca init`)");
    if (!*decoded) return fail(Errc::store_corrupt, "the sealed island CA key does not decode: " + decoded->error().message);
    return std::move(*decoded).value();
}

}  // namespace

Outcome<CaCertificate> create_ca(KeyStore& store, std::string_view common_name, std::uint32_t validity_days) {
    if (auto existing = store.signing_key(ca_label)) return CaCertificate{existing->certificate_der, false};
    if (validity_days == 0 || validity_days > ca_validity_days_max)
        return fail(Errc::bad_request, fmt::format("the CA's validity is 1–{} days, not {}", ca_validity_days_max, validity_days));
    auto key = tls::generate_key();
    if (!key) return from_tls(key.error(), "CA key");
    const auto now = Clock::now();
    auto certificate = tls::make_ca_certificate(*key, common_name, now - certificate_backdate, now + std::chrono::days(validity_days),
                                                tls::random_serial());
    if (!certificate) return from_tls(certificate.error(), "CA certificate");
    auto der = tls::private_key_der(*key);
    if (!der) return from_tls(der.error(), "CA key");
    Bytes certificate_der = tls::to_der(*certificate);
    auto added = store.add_signing_key(ca_label, *der, certificate_der);
    sodium_memzero(der->data(), der->size());
    if (!added) return Unexpected<Failure>{added.error()};
    return CaCertificate{std::move(certificate_der), true};
}

Outcome<Bytes> ca_certificate(const KeyStore& store) {
    auto existing = store.signing_key(ca_label);
    if (!existing) return fail(Errc::key_not_found, "the island CA does not exist yet (run `coconut-hsmd ca init`)");
    return existing->certificate_der;
}

Outcome<IssuedCertificate> sign_certificate(const KeyStore& store, const CertificateSigning& signing, Usage* usage) {
    if (usage) usage->key_label = std::string(ca_label);
    if (signing.profile != tls::Profile::terminal && signing.profile != tls::Profile::server)
        return fail(Errc::bad_request, "the profile must be terminal or server");
    if (signing.validity_days == 0 || signing.validity_days > certificate_validity_days_max)
        return fail(Errc::bad_request,
                    fmt::format("validity_days must be 1–{}, not {}", certificate_validity_days_max, signing.validity_days));
    if (signing.request.size() > max_certificate_request_bytes)
        return fail(Errc::bad_request, fmt::format("the certificate request is larger than {} bytes", max_certificate_request_bytes));
    auto request = tls::parse_request(signing.request);
    if (!request) return from_tls(request.error(), "certificate request");

    auto certificate_der = ca_certificate(store);
    if (!certificate_der) return Unexpected<Failure>{certificate_der.error()};
    auto issuer = tls::parse_certificate(*certificate_der);
    if (!issuer) return fail(Errc::store_corrupt, "the sealed island CA certificate does not parse");
    auto key = ca_key(store);
    if (!key) return Unexpected<Failure>{key.error()};
    // Pair assertion: the sealed key is the one its certificate names.
    if (!tls::same_public_key(*key, *issuer)) return fail(Errc::store_corrupt, "the sealed island CA key does not match its certificate");

    const auto now = Clock::now();
    tls::IssueOptions options;
    options.profile = signing.profile;
    options.common_name = signing.name;
    options.subject_alt_names = signing.subject_alt_names;
    options.not_before = now - certificate_backdate;
    options.not_after = now + std::chrono::days(signing.validity_days);
    options.serial = tls::random_serial();
    auto issued = tls::issue_certificate(*request, options, *issuer, *key);
    if (!issued) return from_tls(issued.error(), fmt::format("{} certificate", tls::profile_name(signing.profile)));

    const tls::CertificateInfo info = tls::describe(*issued);
    IssuedCertificate out;
    out.certificate_der = tls::to_der(*issued);
    out.serial_hex = info.serial_hex;
    out.not_before_unix_s = Clock::to_time_t(info.not_before);
    out.not_after_unix_s = Clock::to_time_t(info.not_after);
    if (usage) {
        usage->result = fmt::format("{} CN={} serial {} valid {}..{}", tls::profile_name(signing.profile), info.subject.common_name,
                                    info.serial_hex, utc(info.not_before), utc(info.not_after));
    }
    return out;
}

// ---- wire ------------------------------------------------------------------------------------------------

namespace wire {

namespace {

// Bounds-checked reader of one payload; the first overrun fails it.
struct CaPayloadReader {
    ByteView data;
    std::size_t at = 0;
    bool failed = false;
    ByteView take(std::size_t n) {
        if (failed || data.size() - at < n) {
            failed = true;
            return {};
        }
        ByteView out = data.subspan(at, n);
        at += n;
        return out;
    }
    std::uint64_t be(std::size_t width) {
        const ByteView bytes = take(width);
        return failed ? 0 : read_be(bytes);
    }
    std::string text(std::size_t length_bytes) {
        const std::size_t n = be(length_bytes);
        const ByteView bytes = take(n);
        return std::string(bytes.begin(), bytes.end());
    }
};

}  // namespace

Bytes encode(const CertificateSigning& signing) {
    Bytes out;
    out.push_back(static_cast<std::uint8_t>(signing.profile));
    out.push_back(static_cast<std::uint8_t>(signing.name.size()));
    out.insert(out.end(), signing.name.begin(), signing.name.end());
    append_be(out, signing.validity_days, 2);
    out.push_back(static_cast<std::uint8_t>(signing.subject_alt_names.size()));
    for (const std::string& name : signing.subject_alt_names) {
        out.push_back(static_cast<std::uint8_t>(name.size()));
        out.insert(out.end(), name.begin(), name.end());
    }
    append_be(out, signing.request.size(), 2);
    append(out, signing.request);
    return out;
}

Outcome<CertificateSigning> decode_sign_certificate(ByteView payload) {
    CaPayloadReader in{payload};
    CertificateSigning signing;
    const auto profile = static_cast<std::uint8_t>(in.be(1));
    signing.name = in.text(1);
    signing.validity_days = static_cast<std::uint16_t>(in.be(2));
    const std::size_t names = in.be(1);
    if (names > tls::subject_alt_names_max)
        return fail(Errc::bad_request, fmt::format("at most {} subject alternative names, not {}", tls::subject_alt_names_max, names));
    for (std::size_t i = 0; i < names && !in.failed; ++i) signing.subject_alt_names.push_back(in.text(1));
    const std::size_t request_size = in.be(2);
    const ByteView request = in.take(request_size);
    if (in.failed || in.at != payload.size())
        return fail(Errc::bad_request, "sign-certificate payload: lengths do not match the bytes sent");
    if (profile != static_cast<std::uint8_t>(tls::Profile::terminal) && profile != static_cast<std::uint8_t>(tls::Profile::server))
        return fail(Errc::bad_request, fmt::format("profile {} is neither 1 (terminal) nor 2 (server)", profile));
    signing.profile = static_cast<tls::Profile>(profile);
    signing.request.assign(request.begin(), request.end());
    return signing;
}

Bytes encode_certificate(ByteView certificate_der) {
    Bytes out;
    append_be(out, certificate_der.size(), 2);
    append(out, certificate_der);
    return out;
}

Outcome<Bytes> decode_certificate(ByteView payload) {
    CaPayloadReader in{payload};
    const std::size_t size = in.be(2);
    const ByteView der = in.take(size);
    if (in.failed || in.at != payload.size() || size == 0)
        return fail(Errc::protocol_error, "certificate payload: its length does not match the bytes received");
    return Bytes(der.begin(), der.end());
}

}  // namespace wire

}  // namespace coconut::hsm
