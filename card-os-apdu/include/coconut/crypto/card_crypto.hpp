// Card cryptography of the PBOC / T-Union 3DES profile (docs/CARD-SPEC.md §4), through OpenSSL 3: DES and
// 3DES through its DES block functions, SM4 through EVP.
// Used by the card OS, the PSAM, the HSM and the tools — the one implementation of these rules.
//
// Failures of OpenSSL itself (a missing provider) are start-up errors and throw std::runtime_error;
// wrong lengths passed by a caller are programmer errors and assert.
#pragma once

#include <coconut/core/bytes.hpp>
#include <coconut/core/card_time.hpp>

#include <array>
#include <cstdint>
#include <cstring>
#include <stdexcept>

namespace coconut::crypto {

// Fixed-size secret that wipes itself on destruction and never prints.
template <std::size_t N>
class Secret {
public:
    Secret() = default;
    explicit Secret(ByteView bytes) { assign(bytes); }
    Secret(const Secret& other) = default;
    Secret& operator=(const Secret& other) = default;
    ~Secret() { secure_wipe(bytes_.data(), N); }

    void assign(ByteView bytes);
    ByteView view() const { return ByteView(bytes_); }
    std::uint8_t* data() { return bytes_.data(); }
    const std::uint8_t* data() const { return bytes_.data(); }
    static constexpr std::size_t size() { return N; }
    bool operator==(const Secret& other) const { return bytes_ == other.bytes_; }

private:
    std::array<std::uint8_t, N> bytes_{};
};

template <std::size_t N>
void Secret<N>::assign(ByteView bytes) {
    if (bytes.size() != N) throw std::invalid_argument("secret of wrong length");
    std::memcpy(bytes_.data(), bytes.data(), N);
}

using Key8 = Secret<8>;    // single DES key (session keys, TAC key)
using Key16 = Secret<16>;  // 2-key 3DES key K1‖K2 (card keys, master keys) or an SM4 key
using Block = std::array<std::uint8_t, 8>;
using Mac4 = std::array<std::uint8_t, 4>;
using Kcv = std::array<std::uint8_t, 3>;

// ---- primitives ------------------------------------------------------------------------------

// Single DES ECB. data: multiple of 8.
Bytes des_ecb_encrypt(const Key8& key, ByteView data);
Bytes des_ecb_decrypt(const Key8& key, ByteView data);
// 2-key 3DES (K1‖K2‖K1) ECB. data: multiple of 8.
Bytes tdes_ecb_encrypt(const Key16& key, ByteView data);
Bytes tdes_ecb_decrypt(const Key16& key, ByteView data);
// 2-key 3DES CBC without padding. data: multiple of 8.
Bytes tdes_cbc_encrypt(const Key16& key, const Block& iv, ByteView data);
Bytes tdes_cbc_decrypt(const Key16& key, const Block& iv, ByteView data);
// SM4 (GB/T 32907) ECB. data: multiple of 16.
Bytes sm4_ecb_encrypt(const Key16& key, ByteView data);
Bytes sm4_ecb_decrypt(const Key16& key, ByteView data);

// A 2-key 3DES key (K1‖K2‖K1) with its DES key schedules computed once, for a key that enciphers
// many blocks in a row (a master or issuer key across a batch). Wiped on destruction; not copyable.
class TdesKey {
public:
    explicit TdesKey(const Key16& key);
    ~TdesKey();
    TdesKey(const TdesKey&) = delete;
    TdesKey& operator=(const TdesKey&) = delete;

    Block encrypt(const Block& in) const;
    // One block, in and out 8 bytes each (may be the same).
    void apply(const std::uint8_t* in, std::uint8_t* out, bool encrypt) const;

private:
    alignas(8) std::array<std::uint8_t, 256> schedules_{};  // two OpenSSL DES_key_schedule
};

// ---- MACs (ISO 9797-1) ------------------------------------------------------------------------

// Padding method 2: append 80, then 00 up to a multiple of 8 (a whole block when already aligned).
Bytes pad_method2(ByteView data);
// MAC algorithm 1 with single DES, padding method 2; the full 8-byte final block.
Block des_mac8(const Key8& key, ByteView data, const Block& iv = {});
// The PBOC MAC/TAC: leftmost 4 bytes of des_mac8.
Mac4 des_mac(const Key8& key, ByteView data, const Block& iv = {});
// MAC algorithm 3 (retail MAC): DES-CBC with K1, last block D(K2) then E(K1); padding method 2.
Block retail_mac(const Key16& key, ByteView data, const Block& iv = {});

// ---- keys -------------------------------------------------------------------------------------

// One-level diversification: 3DES(MK, F) ‖ 3DES(MK, NOT F).
Key16 diversify(const Key16& master, const Block& factor);
Key16 diversify(const TdesKey& master, const Block& factor);
// Profile: issuer key = Div(master, issuer factor); card key = Div(issuer key, card factor).
Key16 diversify_card_key(const Key16& master, const Block& issuer_factor, const Block& card_factor);
// TAC key: XOR of the two halves of the DTK, used as single DES.
Key8 tac_key(const Key16& dtk);
// Key check value: first 3 bytes of 3DES(key, 00…00).
Kcv kcv(const Key16& key);
// Card factor = rightmost 8 bytes of the 10-byte ASN.
Block card_factor_from_asn(ByteView asn10);

// Load session key: 3DES(DLK, random(4) ‖ online ATC(2) ‖ 8000).
Key8 load_session_key(const Key16& dlk, ByteView random4, std::uint16_t online_atc);
// Purchase / CAPP session key: 3DES(DPK, random(4) ‖ offline ATC(2) ‖ terminal serial[2..3]).
Key8 purchase_session_key(const Key16& dpk, ByteView random4, std::uint16_t offline_atc, std::uint32_t terminal_serial);

// ---- MAC inputs of docs/CARD-SPEC.md §4 (one place; card, PSAM, HSM and tests all use these) ----------

// Card date/time as transmitted: date(4 BCD YYYYMMDD) ‖ time(3 BCD hhmmss).
using CardDateTime = coconut::CardDateTime;  // Hainan local time (coconut/core/card_time.hpp)

Bytes load_mac1_input(std::uint32_t old_balance, std::uint32_t amount, std::uint8_t type, ByteView terminal_id6);
Bytes load_mac2_input(std::uint32_t amount, std::uint8_t type, ByteView terminal_id6, const CardDateTime& when);
Bytes load_tac_input(std::uint32_t new_balance, std::uint16_t online_atc_before, std::uint32_t amount, std::uint8_t type,
                     ByteView terminal_id6, const CardDateTime& when);
Bytes purchase_mac1_input(std::uint32_t amount, std::uint8_t type, ByteView terminal_id6, const CardDateTime& when);
Bytes purchase_mac2_input(std::uint32_t amount);
Bytes purchase_tac_input(std::uint32_t amount, std::uint8_t type, ByteView terminal_id6, std::uint32_t terminal_serial,
                         const CardDateTime& when);

// APPLICATION BLOCK / UNBLOCK (docs/CARD-SPEC.md §2, §4): the leftmost 4 bytes of the retail MAC under the
// card's DAMK over the command header CLA INS P1 P2 Lc, IV = the card's 4-byte challenge ‖ 00000000.
using MaintenanceHeader = std::array<std::uint8_t, 5>;
using Challenge4 = std::array<std::uint8_t, 4>;
Mac4 maintenance_mac(const Key16& damk, const MaintenanceHeader& header, const Challenge4& challenge);
// The headers a maintenance MAC may cover: APPLICATION BLOCK `84 1E 00 00|01 04` (temporary / permanent)
// and APPLICATION UNBLOCK `84 18 00 00 04`.
bool is_maintenance_header(const MaintenanceHeader& header);
inline constexpr MaintenanceHeader application_block_header(bool permanent) {
    return {0x84, 0x1E, 0x00, static_cast<std::uint8_t>(permanent ? 0x01 : 0x00), 0x04};
}
inline constexpr MaintenanceHeader application_unblock_header = {0x84, 0x18, 0x00, 0x00, 0x04};

// Transaction types (docs/CARD-SPEC.md §2).
inline constexpr std::uint8_t type_ed_load = 0x01;
inline constexpr std::uint8_t type_ep_load = 0x02;
inline constexpr std::uint8_t type_ed_purchase = 0x05;
inline constexpr std::uint8_t type_ep_purchase = 0x06;
inline constexpr std::uint8_t type_capp_purchase = 0x09;

// Cryptographically strong random bytes from OpenSSL (keys, challenges outside the card's DRBG).
Bytes random_bytes(std::size_t count);

}  // namespace coconut::crypto
