// The Boost.Asio ssl contexts of both ends of the ISO 8583 link and the client's session cache (tls.hpp).
#include <coconut/tls/tls.hpp>

#include "detail.hpp"

#include <boost/asio/ip/address.hpp>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <ctime>
#include <mutex>

namespace coconut::tls {

namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;

namespace {

// TLS 1.2 suites when 1.3 is not available: forward secret, AEAD, for the ECDSA keys of this CA.
constexpr const char* tls12_ciphers = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305";
// TLS 1.3 suites, AES-128-GCM first: as strong as this link needs and the cheapest per record with AES-NI
// (an ISO 8583 answer is one small record).
constexpr const char* tls13_suites = "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384";
// Resumption binds a session to the context that made it; one id for every coconut-clearingd.
constexpr std::string_view session_id_context = "coconut-iso8583";
// Client chain: its certificate and the island CA.
constexpr int verify_depth_max = 2;

using detail::fail;
using detail::openssl_reason;

// What both ends share: TLS 1.2 at least, no compression, no renegotiation, the CA file to verify against.
Status common_setup(ssl::context& context, const std::filesystem::path& ca) {
    SSL_CTX* native = context.native_handle();
    context.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 | ssl::context::no_tlsv1 |
                        ssl::context::no_tlsv1_1 | ssl::context::no_compression | ssl::context::single_dh_use);
    SSL_CTX_set_options(native, SSL_OP_NO_RENEGOTIATION);
    if (SSL_CTX_set_min_proto_version(native, TLS1_2_VERSION) != 1 || SSL_CTX_set_cipher_list(native, tls12_ciphers) != 1 ||
        SSL_CTX_set_ciphersuites(native, tls13_suites) != 1)
        return fail(ErrorCode::crypto, "TLS versions / cipher suites: " + openssl_reason());
    boost::system::error_code ec;
    context.load_verify_file(ca.string(), ec);
    if (ec) return fail(ErrorCode::bad_input, "CA file " + ca.string() + ": " + ec.message());
    SSL_CTX_set_verify_depth(native, verify_depth_max);
    return Ok{};
}

// The certificate (chain) and its key, checked to belong together.
Status use_identity(ssl::context& context, const std::filesystem::path& chain, const std::filesystem::path& key_path) {
    boost::system::error_code ec;
    context.use_certificate_chain_file(chain.string(), ec);
    if (ec) return fail(ErrorCode::bad_input, "certificate " + chain.string() + ": " + ec.message());
    auto key = read_private_key(key_path);  // refuses a key file others may read
    if (!key) return Unexpected<Error>{key.error()};
    if (SSL_CTX_use_PrivateKey(context.native_handle(), key->get()) != 1 || SSL_CTX_check_private_key(context.native_handle()) != 1) {
        ERR_clear_error();
        return fail(ErrorCode::bad_input, "private key " + key_path.string() + " does not belong to certificate " + chain.string());
    }
    return Ok{};
}

int cache_index() {
    static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
    return index;
}

}  // namespace

// ---- server -------------------------------------------------------------------------------------------

Result<ssl::context> make_server_context(const ServerFiles& files) {
    ssl::context context(ssl::context::tls_server);
    if (auto common = common_setup(context, files.ca); !common) return Unexpected<Error>{common.error()};
    if (auto identity = use_identity(context, files.certificate_chain, files.private_key); !identity)
        return Unexpected<Error>{identity.error()};
    SSL_CTX* native = context.native_handle();
    context.set_verify_mode(ssl::verify_peer | ssl::verify_fail_if_no_peer_cert);
    // Names the acceptable CA in the CertificateRequest, so a client holding several certificates
    // picks the island's.
    if (STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(files.ca.c_str())) SSL_CTX_set_client_CA_list(native, names);
    // Stateless tickets (encrypted under this context's random ticket key) and no server-side cache:
    // resumption costs the server no memory per terminal.
    SSL_CTX_set_session_id_context(native, reinterpret_cast<const unsigned char*>(session_id_context.data()),
                                   static_cast<unsigned>(session_id_context.size()));
    SSL_CTX_set_session_cache_mode(native, SSL_SESS_CACHE_OFF);
    SSL_CTX_clear_options(native, SSL_OP_NO_TICKET);
    SSL_CTX_set_num_tickets(native, 1);
    SSL_CTX_set_timeout(native, static_cast<long>(session_lifetime.count()));
    ERR_clear_error();
    return context;
}

std::optional<std::string> terminal_id_of_peer(SSL* ssl) {
    if (ssl == nullptr || SSL_get_verify_result(ssl) != X509_V_OK) return std::nullopt;
    X509* peer = SSL_get0_peer_certificate(ssl);
    if (peer == nullptr || X509_up_ref(peer) != 1) return std::nullopt;
    return terminal_id_of(Certificate(peer));
}

std::string describe_session(SSL* ssl) {
    if (ssl == nullptr) return "no TLS";
    std::string text = std::string(SSL_get_version(ssl)) + " " + SSL_get_cipher_name(ssl);
    if (SSL_session_reused(ssl) == 1) text += " (resumed)";
    return text;
}

// ---- client ---------------------------------------------------------------------------------------------

struct ClientContext::Cache {
    std::mutex mutex;
    SSL_SESSION* session = nullptr;  // owned: one reference
    ~Cache() {
        if (session) SSL_SESSION_free(session);
    }

    // SSL_CTX_sess_set_new_cb: a ticket arrived (TLS 1.3: after the handshake, while reading). The cache
    // keeps a copy: libssl marks the connection's own session not resumable when the connection is freed
    // without a close_notify (a timeout, a dropped link), which is exactly when a terminal reconnects.
    static int on_new_session(SSL* ssl, SSL_SESSION* session) {
        auto* cache = static_cast<Cache*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), cache_index()));
        if (cache == nullptr) return 0;
        SSL_SESSION* copy = SSL_SESSION_dup(session);
        if (copy == nullptr) return 0;
        std::lock_guard lock(cache->mutex);
        if (cache->session) SSL_SESSION_free(cache->session);
        cache->session = copy;
        return 0;  // libssl keeps its reference to `session`
    }
};

ClientContext::ClientContext(ssl::context context, std::unique_ptr<Cache> cache)
    : context_(std::make_unique<ssl::context>(std::move(context))), cache_(std::move(cache)) {
    SSL_CTX_set_ex_data(context_->native_handle(), cache_index(), cache_.get());
}
ClientContext::ClientContext(ClientContext&&) noexcept = default;
ClientContext& ClientContext::operator=(ClientContext&& other) noexcept {
    if (this != &other) {
        if (context_) SSL_CTX_set_ex_data(context_->native_handle(), cache_index(), nullptr);
        context_ = std::move(other.context_);
        cache_ = std::move(other.cache_);
    }
    return *this;
}
ClientContext::~ClientContext() {
    // A stream that outlives this object keeps the SSL_CTX alive: it must not find the freed cache.
    if (context_) SSL_CTX_set_ex_data(context_->native_handle(), cache_index(), nullptr);
}

Result<ClientContext> ClientContext::create(const ClientFiles& files) {
    ssl::context context(ssl::context::tls_client);
    if (auto common = common_setup(context, files.ca); !common) return Unexpected<Error>{common.error()};
    // No certificate and no key: a client that authenticates otherwise (a clerk token over HTTPS) and
    // only verifies the server. One without the other is a configuration mistake.
    if (files.certificate.empty() != files.private_key.empty())
        return fail(ErrorCode::bad_input, "a client certificate needs its private key, and a key its certificate");
    if (!files.certificate.empty()) {
        if (auto identity = use_identity(context, files.certificate, files.private_key); !identity)
            return Unexpected<Error>{identity.error()};
    }
    context.set_verify_mode(ssl::verify_peer);
    SSL_CTX* native = context.native_handle();
    SSL_CTX_set_session_cache_mode(native, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(native, &Cache::on_new_session);
    ERR_clear_error();
    return ClientContext(std::move(context), std::make_unique<Cache>());
}

ssl::context& ClientContext::context() { return *context_; }

Status ClientContext::prepare(SSL* ssl, std::string_view server_host) {
    if (server_host.empty()) return fail(ErrorCode::bad_input, "the server's host name or address is empty");
    const std::string host(server_host);
    boost::system::error_code not_ip;
    asio::ip::make_address(host, not_ip);
    const bool named = static_cast<bool>(not_ip);
    const bool set = named ? SSL_set1_host(ssl, host.c_str()) == 1 && SSL_set_tlsext_host_name(ssl, host.c_str()) == 1
                           : X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host.c_str()) == 1;
    if (!set) {
        ERR_clear_error();
        return fail(ErrorCode::bad_input, "cannot check the server certificate against '" + host + "'");
    }
    std::lock_guard lock(cache_->mutex);
    if (SSL_SESSION* session = cache_->session) {
        const bool fresh = static_cast<std::time_t>(SSL_SESSION_get_time(session) + SSL_SESSION_get_timeout(session)) > std::time(nullptr);
        // A copy: libssl marks the session a connection used not resumable when that connection ends
        // without a close_notify, and the cache must stay usable for the next one.
        if (fresh && SSL_SESSION_is_resumable(session) == 1) {
            SSL_SESSION* copy = SSL_SESSION_dup(session);
            if (copy != nullptr) {
                SSL_set_session(ssl, copy);  // takes its own reference
                SSL_SESSION_free(copy);
            }
        }
    }
    return Ok{};
}

bool ClientContext::resumed(SSL* ssl) { return ssl != nullptr && SSL_session_reused(ssl) == 1; }

bool ClientContext::has_session() const {
    std::lock_guard lock(cache_->mutex);
    return cache_->session != nullptr;
}

void ClientContext::forget_session() {
    std::lock_guard lock(cache_->mutex);
    if (cache_->session) SSL_SESSION_free(cache_->session);
    cache_->session = nullptr;
}

}  // namespace coconut::tls
