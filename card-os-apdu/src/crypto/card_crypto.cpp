#include <coconut/crypto/card_crypto.hpp>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include <cassert>
#include <memory>
#include <stdexcept>

namespace coconut::crypto {
namespace {

// Fetched once: implicit fetching on every call costs more than the cipher itself.
struct Ciphers {
    EVP_CIPHER* des_ede3_ecb = EVP_CIPHER_fetch(nullptr, "DES-EDE3-ECB", nullptr);
    EVP_CIPHER* des_ede3_cbc = EVP_CIPHER_fetch(nullptr, "DES-EDE3-CBC", nullptr);
    EVP_CIPHER* sm4_ecb = EVP_CIPHER_fetch(nullptr, "SM4-ECB", nullptr);
    Ciphers() {
        if (!des_ede3_ecb || !des_ede3_cbc || !sm4_ecb) throw std::runtime_error("OpenSSL: 3DES or SM4 unavailable");
    }
    ~Ciphers() {
        EVP_CIPHER_free(des_ede3_ecb);
        EVP_CIPHER_free(des_ede3_cbc);
        EVP_CIPHER_free(sm4_ecb);
    }
};

const Ciphers& ciphers() {
    static const Ciphers instance;
    return instance;
}

struct CtxDeleter {
    void operator()(EVP_CIPHER_CTX* ctx) const { EVP_CIPHER_CTX_free(ctx); }
};

// One context per thread, reset between uses.
EVP_CIPHER_CTX* thread_ctx() {
    thread_local std::unique_ptr<EVP_CIPHER_CTX, CtxDeleter> ctx(EVP_CIPHER_CTX_new());
    if (!ctx) throw std::runtime_error("OpenSSL: EVP_CIPHER_CTX_new failed");
    return ctx.get();
}

// Runs `cipher` over whole blocks without padding. key24/iv as the cipher needs.
Bytes run_cipher(const EVP_CIPHER* cipher, const std::uint8_t* key, const std::uint8_t* iv, ByteView data,
                 bool encrypt) {
    EVP_CIPHER_CTX* ctx = thread_ctx();
    if (EVP_CipherInit_ex2(ctx, cipher, key, iv, encrypt ? 1 : 0, nullptr) != 1)
        throw std::runtime_error("OpenSSL: cipher init failed");
    EVP_CIPHER_CTX_set_padding(ctx, 0);
    Bytes out(data.size() + 16);
    int written = 0;
    int final_written = 0;
    if (EVP_CipherUpdate(ctx, out.data(), &written, data.data(), static_cast<int>(data.size())) != 1 ||
        EVP_CipherFinal_ex(ctx, out.data() + written, &final_written) != 1)
        throw std::runtime_error("OpenSSL: cipher failed");
    out.resize(static_cast<std::size_t>(written + final_written));
    EVP_CIPHER_CTX_reset(ctx);
    return out;
}

// K1‖K2‖K1 (2-key) or K‖K‖K (single) as the 24-byte EDE3 key; wiped on scope exit.
struct Ede3Key {
    std::array<std::uint8_t, 24> bytes{};
    explicit Ede3Key(const Key16& key) {
        std::memcpy(bytes.data(), key.data(), 16);
        std::memcpy(bytes.data() + 16, key.data(), 8);
    }
    explicit Ede3Key(const Key8& key) {
        for (int i = 0; i < 3; ++i) std::memcpy(bytes.data() + 8 * i, key.data(), 8);
    }
    ~Ede3Key() { secure_wipe(bytes.data(), bytes.size()); }
};

void require_blocks(ByteView data, std::size_t block) {
    if (data.size() % block != 0) throw std::invalid_argument("cipher input is not a whole number of blocks");
}

Block first_block(const Bytes& b) {
    Block out{};
    std::memcpy(out.data(), b.data(), 8);
    return out;
}

Key8 key8_of(const Bytes& b) { return Key8(ByteView(b).first(8)); }

}  // namespace

Bytes des_ecb_encrypt(const Key8& key, ByteView data) {
    require_blocks(data, 8);
    Ede3Key k(key);
    return run_cipher(ciphers().des_ede3_ecb, k.bytes.data(), nullptr, data, true);
}
Bytes des_ecb_decrypt(const Key8& key, ByteView data) {
    require_blocks(data, 8);
    Ede3Key k(key);
    return run_cipher(ciphers().des_ede3_ecb, k.bytes.data(), nullptr, data, false);
}
Bytes tdes_ecb_encrypt(const Key16& key, ByteView data) {
    require_blocks(data, 8);
    Ede3Key k(key);
    return run_cipher(ciphers().des_ede3_ecb, k.bytes.data(), nullptr, data, true);
}
Bytes tdes_ecb_decrypt(const Key16& key, ByteView data) {
    require_blocks(data, 8);
    Ede3Key k(key);
    return run_cipher(ciphers().des_ede3_ecb, k.bytes.data(), nullptr, data, false);
}
Bytes tdes_cbc_encrypt(const Key16& key, const Block& iv, ByteView data) {
    require_blocks(data, 8);
    Ede3Key k(key);
    return run_cipher(ciphers().des_ede3_cbc, k.bytes.data(), iv.data(), data, true);
}
Bytes tdes_cbc_decrypt(const Key16& key, const Block& iv, ByteView data) {
    require_blocks(data, 8);
    Ede3Key k(key);
    return run_cipher(ciphers().des_ede3_cbc, k.bytes.data(), iv.data(), data, false);
}
Bytes sm4_ecb_encrypt(const Key16& key, ByteView data) {
    require_blocks(data, 16);
    return run_cipher(ciphers().sm4_ecb, key.data(), nullptr, data, true);
}
Bytes sm4_ecb_decrypt(const Key16& key, ByteView data) {
    require_blocks(data, 16);
    return run_cipher(ciphers().sm4_ecb, key.data(), nullptr, data, false);
}

Bytes pad_method2(ByteView data) {
    Bytes out(data.begin(), data.end());
    out.push_back(0x80);
    while (out.size() % 8 != 0) out.push_back(0x00);
    return out;
}

Block des_mac8(const Key8& key, ByteView data, const Block& iv) {
    const Bytes padded = pad_method2(data);
    Ede3Key k(key);
    const Bytes cbc = run_cipher(ciphers().des_ede3_cbc, k.bytes.data(), iv.data(), padded, true);
    Block out{};
    std::memcpy(out.data(), cbc.data() + cbc.size() - 8, 8);
    return out;
}

Mac4 des_mac(const Key8& key, ByteView data, const Block& iv) {
    const Block full = des_mac8(key, data, iv);
    return Mac4{full[0], full[1], full[2], full[3]};
}

Block retail_mac(const Key16& key, ByteView data, const Block& iv) {
    const Key8 k1(key.view().first(8));
    const Key8 k2(key.view().subspan(8, 8));
    const Block chained = des_mac8(k1, data, iv);
    const Bytes decrypted = des_ecb_decrypt(k2, chained);
    return first_block(des_ecb_encrypt(k1, decrypted));
}

Key16 diversify(const Key16& master, const Block& factor) {
    Bytes input(16);
    for (std::size_t i = 0; i < 8; ++i) {
        input[i] = factor[i];
        input[8 + i] = static_cast<std::uint8_t>(~factor[i]);
    }
    Bytes out = tdes_ecb_encrypt(master, input);
    Key16 key(out);
    secure_wipe(out.data(), out.size());
    return key;
}

Key16 diversify_card_key(const Key16& master, const Block& issuer_factor, const Block& card_factor) {
    return diversify(diversify(master, issuer_factor), card_factor);
}

Key8 tac_key(const Key16& dtk) {
    std::array<std::uint8_t, 8> x{};
    for (std::size_t i = 0; i < 8; ++i) x[i] = dtk.data()[i] ^ dtk.data()[8 + i];
    Key8 key(x);
    secure_wipe(x.data(), x.size());
    return key;
}

Kcv kcv(const Key16& key) {
    const Bytes zero(8, 0);
    const Bytes out = tdes_ecb_encrypt(key, zero);
    return Kcv{out[0], out[1], out[2]};
}

Block card_factor_from_asn(ByteView asn10) {
    assert(asn10.size() == 10);
    Block out{};
    std::memcpy(out.data(), asn10.data() + 2, 8);
    return out;
}

Key8 load_session_key(const Key16& dlk, ByteView random4, std::uint16_t online_atc) {
    assert(random4.size() == 4);
    Bytes input(random4.begin(), random4.end());
    append_be(input, online_atc, 2);
    input.push_back(0x80);
    input.push_back(0x00);
    return key8_of(tdes_ecb_encrypt(dlk, input));
}

Key8 purchase_session_key(const Key16& dpk, ByteView random4, std::uint16_t offline_atc,
                          std::uint32_t terminal_serial) {
    assert(random4.size() == 4);
    Bytes input(random4.begin(), random4.end());
    append_be(input, offline_atc, 2);
    append_be(input, terminal_serial & 0xFFFF, 2);
    return key8_of(tdes_ecb_encrypt(dpk, input));
}

Bytes load_mac1_input(std::uint32_t old_balance, std::uint32_t amount, std::uint8_t type, ByteView terminal_id6) {
    assert(terminal_id6.size() == 6);
    Bytes out;
    append_be(out, old_balance, 4);
    append_be(out, amount, 4);
    out.push_back(type);
    append(out, terminal_id6);
    return out;
}

Bytes load_mac2_input(std::uint32_t amount, std::uint8_t type, ByteView terminal_id6, const CardDateTime& when) {
    assert(terminal_id6.size() == 6);
    Bytes out;
    append_be(out, amount, 4);
    out.push_back(type);
    append(out, terminal_id6);
    append(out, when.date);
    append(out, when.time);
    return out;
}

Bytes load_tac_input(std::uint32_t new_balance, std::uint16_t online_atc_before, std::uint32_t amount,
                     std::uint8_t type, ByteView terminal_id6, const CardDateTime& when) {
    Bytes out;
    append_be(out, new_balance, 4);
    append_be(out, online_atc_before, 2);
    append(out, load_mac2_input(amount, type, terminal_id6, when));
    return out;
}

Bytes purchase_mac1_input(std::uint32_t amount, std::uint8_t type, ByteView terminal_id6, const CardDateTime& when) {
    return load_mac2_input(amount, type, terminal_id6, when);  // same layout: amount ‖ type ‖ terminal ‖ date ‖ time
}

Bytes purchase_mac2_input(std::uint32_t amount) { return be_bytes(amount, 4); }

Bytes purchase_tac_input(std::uint32_t amount, std::uint8_t type, ByteView terminal_id6, std::uint32_t terminal_serial,
                         const CardDateTime& when) {
    assert(terminal_id6.size() == 6);
    Bytes out;
    append_be(out, amount, 4);
    out.push_back(type);
    append(out, terminal_id6);
    append_be(out, terminal_serial, 4);
    append(out, when.date);
    append(out, when.time);
    return out;
}

Bytes random_bytes(std::size_t count) {
    Bytes out(count);
    if (count > 0 && RAND_bytes(out.data(), static_cast<int>(count)) != 1)
        throw std::runtime_error("OpenSSL: RAND_bytes failed");
    return out;
}

}  // namespace coconut::crypto
