#include <coconut/core/sha256.hpp>

#include <openssl/evp.h>

#include <stdexcept>

namespace coconut {
namespace {

struct MdDeleter {
    void operator()(EVP_MD* md) const { EVP_MD_free(md); }
};
struct CtxDeleter {
    void operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }
};
using CtxPtr = std::unique_ptr<EVP_MD_CTX, CtxDeleter>;

// EVP_sha256() with EVP_Digest would fetch the implementation and allocate a context on every call;
// both are made once (the context once per thread).
const EVP_MD* sha256_md() {
    static const std::unique_ptr<EVP_MD, MdDeleter> md(EVP_MD_fetch(nullptr, "SHA256", nullptr));
    return md.get();
}

[[noreturn]] void broken() { throw std::runtime_error("SHA-256 digest failed (OpenSSL)"); }

void start(EVP_MD_CTX* ctx) {
    if (ctx == nullptr || sha256_md() == nullptr || EVP_DigestInit_ex2(ctx, sha256_md(), nullptr) != 1) broken();
}

void feed(EVP_MD_CTX* ctx, ByteView data) {
    if (EVP_DigestUpdate(ctx, data.data(), data.size()) != 1) broken();
}

Sha256Digest finish_digest(EVP_MD_CTX* ctx) {
    Sha256Digest out{};
    unsigned size = 0;
    if (EVP_DigestFinal_ex(ctx, out.data(), &size) != 1 || size != sha256_size) broken();
    return out;
}

EVP_MD_CTX* thread_context() {
    thread_local const CtxPtr ctx(EVP_MD_CTX_new());
    return ctx.get();
}

}  // namespace

Sha256Digest sha256(ByteView data) {
    EVP_MD_CTX* ctx = thread_context();
    start(ctx);
    feed(ctx, data);
    return finish_digest(ctx);
}

Sha256Digest sha256(std::initializer_list<ByteView> parts) {
    EVP_MD_CTX* ctx = thread_context();
    start(ctx);
    for (ByteView part : parts) feed(ctx, part);
    return finish_digest(ctx);
}

std::string sha256_hex(std::string_view text) {
    static constexpr char digits[] = "0123456789abcdef";
    const Sha256Digest digest = sha256(text_bytes(text));
    std::string out;
    out.reserve(2 * digest.size());
    for (std::uint8_t b : digest) {
        out += digits[b >> 4];
        out += digits[b & 0x0f];
    }
    return out;
}

struct Sha256::Context {
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    Context() = default;
    Context(const Context&) = delete;
    Context& operator=(const Context&) = delete;
    ~Context() { EVP_MD_CTX_free(ctx); }
};

Sha256::Sha256() : context_(std::make_unique<Context>()) { start(context_->ctx); }
Sha256::~Sha256() = default;

void Sha256::update(ByteView data) { feed(context_->ctx, data); }

Sha256Digest Sha256::finish() {
    const Sha256Digest out = finish_digest(context_->ctx);
    start(context_->ctx);
    return out;
}

}  // namespace coconut
