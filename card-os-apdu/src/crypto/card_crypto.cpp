#include <coconut/crypto/card_crypto.hpp>
#include <coconut/core/assert.hpp>

#include <openssl/des.h>  // the DES block functions; see CMakeLists.txt for why not EVP
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <memory>
#include <stdexcept>

namespace coconut::crypto {
namespace {

// Fetched once: implicit fetching on every call costs more than the cipher itself.
struct Ciphers {
    EVP_CIPHER* sm4_ecb = EVP_CIPHER_fetch(nullptr, "SM4-ECB", nullptr);
    Ciphers() {
        if (!sm4_ecb) throw std::runtime_error("OpenSSL: SM4 unavailable");
    }
    ~Ciphers() { EVP_CIPHER_free(sm4_ecb); }
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
Bytes run_cipher(const EVP_CIPHER* cipher, const std::uint8_t* key, const std::uint8_t* iv, ByteView data, bool encrypt) {
    EVP_CIPHER_CTX* ctx = thread_ctx();
    if (EVP_CipherInit_ex2(ctx, cipher, key, iv, encrypt ? 1 : 0, nullptr) != 1) throw std::runtime_error("OpenSSL: cipher init failed");
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

void require_blocks(ByteView data, std::size_t block) {
    if (data.size() % block != 0) throw std::invalid_argument("cipher input is not a whole number of blocks");
}

Key8 key8_of(const Bytes& b) { return Key8(ByteView(b).first(8)); }

static_assert(sizeof(DES_key_schedule) == 128, "TdesKey's storage holds two DES key schedules");

// One DES key schedule; wiped when it goes out of scope.
struct DesSchedule {
    DES_key_schedule schedule{};
    explicit DesSchedule(const std::uint8_t* key8) { set(key8, schedule); }
    ~DesSchedule() { secure_wipe(&schedule, sizeof schedule); }
    DesSchedule(const DesSchedule&) = delete;
    DesSchedule& operator=(const DesSchedule&) = delete;

    // Parity bits are ignored, as the card does.
    static void set(const std::uint8_t* key8, DES_key_schedule& out) {
        DES_cblock key;
        std::memcpy(key, key8, 8);
        DES_set_key_unchecked(&key, &out);
        secure_wipe(key, sizeof key);
    }
};

// OpenSSL's DES prototypes take non-const inputs and schedules that they only read.
const_DES_cblock* input_block(const std::uint8_t* in) { return reinterpret_cast<const_DES_cblock*>(const_cast<std::uint8_t*>(in)); }

void des_block(const DES_key_schedule& schedule, const std::uint8_t* in, std::uint8_t* out, bool encrypt) {
    DES_ecb_encrypt(input_block(in), reinterpret_cast<DES_cblock*>(out), const_cast<DES_key_schedule*>(&schedule),
                    encrypt ? DES_ENCRYPT : DES_DECRYPT);
}

// K1‖K2‖K1 on one block.
void tdes_block(const DES_key_schedule& k1, const DES_key_schedule& k2, const std::uint8_t* in, std::uint8_t* out, bool encrypt) {
    DES_ecb3_encrypt(input_block(in), reinterpret_cast<DES_cblock*>(out), const_cast<DES_key_schedule*>(&k1),
                     const_cast<DES_key_schedule*>(&k2), const_cast<DES_key_schedule*>(&k1), encrypt ? DES_ENCRYPT : DES_DECRYPT);
}

Bytes des_ecb(const Key8& key, ByteView data, bool encrypt) {
    require_blocks(data, 8);
    const DesSchedule k(key.data());
    Bytes out(data.size());
    for (std::size_t at = 0; at < data.size(); at += 8) des_block(k.schedule, data.data() + at, out.data() + at, encrypt);
    return out;
}

Bytes tdes_ecb(const Key16& key, ByteView data, bool encrypt) {
    require_blocks(data, 8);
    const TdesKey k(key);
    Bytes out(data.size());
    for (std::size_t at = 0; at < data.size(); at += 8) k.apply(data.data() + at, out.data() + at, encrypt);
    return out;
}

Bytes tdes_cbc(const Key16& key, const Block& iv, ByteView data, bool encrypt) {
    require_blocks(data, 8);
    const TdesKey k(key);
    Bytes out(data.size());
    Block chain = iv;
    for (std::size_t at = 0; at < data.size(); at += 8) {
        if (encrypt) {
            Block x;
            for (std::size_t i = 0; i < 8; ++i) x[i] = static_cast<std::uint8_t>(data[at + i] ^ chain[i]);
            k.apply(x.data(), out.data() + at, true);
            std::memcpy(chain.data(), out.data() + at, 8);
        } else {
            k.apply(data.data() + at, out.data() + at, false);
            for (std::size_t i = 0; i < 8; ++i) out[at + i] ^= chain[i];
            std::memcpy(chain.data(), data.data() + at, 8);
        }
    }
    return out;
}

}  // namespace

TdesKey::TdesKey(const Key16& key) {
    DesSchedule::set(key.data(), *reinterpret_cast<DES_key_schedule*>(schedules_.data()));
    DesSchedule::set(key.data() + 8, *reinterpret_cast<DES_key_schedule*>(schedules_.data() + 128));
}

TdesKey::~TdesKey() { secure_wipe(schedules_.data(), schedules_.size()); }

void TdesKey::apply(const std::uint8_t* in, std::uint8_t* out, bool encrypt) const {
    tdes_block(*reinterpret_cast<const DES_key_schedule*>(schedules_.data()),
               *reinterpret_cast<const DES_key_schedule*>(schedules_.data() + 128), in, out, encrypt);
}

Block TdesKey::encrypt(const Block& in) const {
    Block out;
    apply(in.data(), out.data(), true);
    return out;
}

Bytes des_ecb_encrypt(const Key8& key, ByteView data) { return des_ecb(key, data, true); }
Bytes des_ecb_decrypt(const Key8& key, ByteView data) { return des_ecb(key, data, false); }
Bytes tdes_ecb_encrypt(const Key16& key, ByteView data) { return tdes_ecb(key, data, true); }
Bytes tdes_ecb_decrypt(const Key16& key, ByteView data) { return tdes_ecb(key, data, false); }
Bytes tdes_cbc_encrypt(const Key16& key, const Block& iv, ByteView data) { return tdes_cbc(key, iv, data, true); }
Bytes tdes_cbc_decrypt(const Key16& key, const Block& iv, ByteView data) { return tdes_cbc(key, iv, data, false); }
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

// MAC algorithm 1 over data ‖ 80 ‖ 00…: CBC with one DES key, keeping only the chaining block.
Block des_mac8(const Key8& key, ByteView data, const Block& iv) {
    const DesSchedule k(key.data());
    Block chain = iv;
    std::size_t at = 0;
    for (; at + 8 <= data.size(); at += 8) {
        for (std::size_t i = 0; i < 8; ++i) chain[i] ^= data[at + i];
        des_block(k.schedule, chain.data(), chain.data(), true);
    }
    Block last{};
    if (at < data.size()) std::memcpy(last.data(), data.data() + at, data.size() - at);
    last[data.size() - at] = 0x80;
    for (std::size_t i = 0; i < 8; ++i) chain[i] ^= last[i];
    des_block(k.schedule, chain.data(), chain.data(), true);
    return chain;
}

Mac4 des_mac(const Key8& key, ByteView data, const Block& iv) {
    const Block full = des_mac8(key, data, iv);
    return Mac4{full[0], full[1], full[2], full[3]};
}

Block retail_mac(const Key16& key, ByteView data, const Block& iv) {
    const Block chained = des_mac8(Key8(key.view().first(8)), data, iv);
    const DesSchedule k1(key.data()), k2(key.data() + 8);
    Block out;
    des_block(k2.schedule, chained.data(), out.data(), false);
    des_block(k1.schedule, out.data(), out.data(), true);
    return out;
}

Mac4 maintenance_mac(const Key16& damk, const MaintenanceHeader& header, const Challenge4& challenge) {
    Block iv{};
    std::copy(challenge.begin(), challenge.end(), iv.begin());
    const Block mac = retail_mac(damk, header, iv);
    Mac4 out{};
    std::copy(mac.begin(), mac.begin() + 4, out.begin());
    return out;
}

bool is_maintenance_header(const MaintenanceHeader& header) {
    return header == application_block_header(false) || header == application_block_header(true) || header == application_unblock_header;
}

Key16 diversify(const TdesKey& master, const Block& factor) {
    std::array<std::uint8_t, 16> out{};
    master.apply(factor.data(), out.data(), true);
    Block inverted;
    for (std::size_t i = 0; i < 8; ++i) inverted[i] = static_cast<std::uint8_t>(~factor[i]);
    master.apply(inverted.data(), out.data() + 8, true);
    Key16 key(out);
    secure_wipe(out.data(), out.size());
    return key;
}

Key16 diversify(const Key16& master, const Block& factor) { return diversify(TdesKey(master), factor); }

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
    COCONUT_ASSERT(asn10.size() == 10);
    Block out{};
    std::memcpy(out.data(), asn10.data() + 2, 8);
    return out;
}

Key8 load_session_key(const Key16& dlk, ByteView random4, std::uint16_t online_atc) {
    COCONUT_ASSERT(random4.size() == 4);
    Bytes input(random4.begin(), random4.end());
    append_be(input, online_atc, 2);
    input.push_back(0x80);
    input.push_back(0x00);
    return key8_of(tdes_ecb_encrypt(dlk, input));
}

Key8 purchase_session_key(const Key16& dpk, ByteView random4, std::uint16_t offline_atc, std::uint32_t terminal_serial) {
    COCONUT_ASSERT(random4.size() == 4);
    Bytes input(random4.begin(), random4.end());
    append_be(input, offline_atc, 2);
    append_be(input, terminal_serial & 0xFFFF, 2);
    return key8_of(tdes_ecb_encrypt(dpk, input));
}

Bytes load_mac1_input(std::uint32_t old_balance, std::uint32_t amount, std::uint8_t type, ByteView terminal_id6) {
    COCONUT_ASSERT(terminal_id6.size() == 6);
    Bytes out;
    append_be(out, old_balance, 4);
    append_be(out, amount, 4);
    out.push_back(type);
    append(out, terminal_id6);
    return out;
}

Bytes load_mac2_input(std::uint32_t amount, std::uint8_t type, ByteView terminal_id6, const CardDateTime& when) {
    COCONUT_ASSERT(terminal_id6.size() == 6);
    Bytes out;
    append_be(out, amount, 4);
    out.push_back(type);
    append(out, terminal_id6);
    append(out, when.date);
    append(out, when.time);
    return out;
}

Bytes load_tac_input(std::uint32_t new_balance, std::uint16_t online_atc_before, std::uint32_t amount, std::uint8_t type,
                     ByteView terminal_id6, const CardDateTime& when) {
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
    COCONUT_ASSERT(terminal_id6.size() == 6);
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
    if (count > 0 && RAND_bytes(out.data(), static_cast<int>(count)) != 1) throw std::runtime_error("OpenSSL: RAND_bytes failed");
    return out;
}

}  // namespace coconut::crypto
