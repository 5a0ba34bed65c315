// Shared helpers of the hsm-stub tests: temporary store directories with known keys, and an
// independent computation of the docs/CARD-SPEC.md §4 derivation and MACs from the raw crypto primitives
// (block by block — not through the HSM's code path, nor through crypto::diversify / des_mac).
#pragma once

#include <coconut/hsm/hsm.hpp>

#include <doctest/doctest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

namespace hsm_test {

using coconut::Bytes;
using coconut::ByteView;
using coconut::hex;
namespace crypto = coconut::crypto;
namespace hsm = coconut::hsm;

// A fresh directory under the system temp dir, removed with everything in it at scope exit.
class TempDir {
public:
    TempDir() {
        static std::atomic<int> counter{0};
        path_ = std::filesystem::temp_directory_path() / ("coconut-hsm-test-" + std::to_string(::getpid()) + "-" +
                                                          std::to_string(counter++) + "-" + std::to_string(std::random_device{}()));
        std::filesystem::create_directories(path_);
    }
    ~TempDir() {
        std::error_code ignored;
        std::filesystem::remove_all(path_, ignored);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    const std::filesystem::path& path() const { return path_; }
    std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

private:
    std::filesystem::path path_;
};

inline crypto::Key16 key16(std::string_view hex_text) { return crypto::Key16(hex(hex_text)); }

// The scheme's master keys used throughout the tests (arbitrary, fixed).
inline const char* const purchase_master_hex = "0123456789ABCDEFFEDCBA9876543210";
inline const char* const load_master_hex = "11223344556677888877665544332211";
inline const char* const tac_master_hex = "404142434445464748494A4B4C4D4E4F";
inline const char* const tac_master_v2_hex = "A1A2A3A4A5A6A7A8B1B2B3B4B5B6B7B8";
inline const char* const auth_master_hex = "0F1E2D3C4B5A69788796A5B4C3D2E1F0";
inline const char* const maintenance_master_hex = "5566778899AABBCCDDEEFF0011223344";
inline const char* const ssse_auth_master_hex = "E0E1E2E3E4E5E6E7F0F1F2F3F4F5F6F7";
inline const char* const transport_hex = "C0C1C2C3C4C5C6C7C8C9CACBCCCDCECF";

// A store in `dir` (under init) holding the keys above (tac v1 retired when `retire_tac_v1`), and two
// clients: "clearing" (tac only) and "issuance" (all). Their credentials are written to dir/<id>.key.
inline void make_store(const std::filesystem::path& dir, bool retire_tac_v1 = false) {
    REQUIRE(hsm::KeyStore::init(dir / "store").ok());
    auto store = hsm::KeyStore::open(dir / "store");
    REQUIRE(store.ok());
    using U = hsm::KeyUsage;
    REQUIRE(store->add_key("mk-purchase", 1, hsm::KeyType::tdes2, U::purchase, key16(purchase_master_hex)).ok());
    REQUIRE(store->add_key("mk-load", 1, hsm::KeyType::tdes2, U::load, key16(load_master_hex)).ok());
    REQUIRE(store->add_key("mk-tac", 1, hsm::KeyType::tdes2, U::tac, key16(tac_master_hex)).ok());
    REQUIRE(store->add_key("mk-tac", 2, hsm::KeyType::tdes2, U::tac, key16(tac_master_v2_hex)).ok());
    REQUIRE(store->add_key("mk-internal-auth", 1, hsm::KeyType::tdes2, U::internal_auth, key16(auth_master_hex)).ok());
    REQUIRE(store->add_key("mk-maintenance", 1, hsm::KeyType::tdes2, U::maintenance, key16(maintenance_master_hex)).ok());
    REQUIRE(store->add_key("mk-ssse-auth", 1, hsm::KeyType::tdes2, U::ssse_auth, key16(ssse_auth_master_hex)).ok());
    REQUIRE(store->add_key("kek-issuance", 1, hsm::KeyType::tdes2, U::transport, key16(transport_hex)).ok());
    if (retire_tac_v1) REQUIRE(store->retire_key("mk-tac", 1).ok());
    REQUIRE(store->save().ok());
}

// ---- independent docs/CARD-SPEC.md §4 computations ------------------------------------------------------

inline Bytes tdes_block(const crypto::Key16& key, ByteView block8) { return crypto::tdes_ecb_encrypt(key, block8); }

// Div(MK, F) = 3DES(MK, F) ‖ 3DES(MK, NOT F), written out.
inline crypto::Key16 independent_div(const crypto::Key16& master, ByteView factor8) {
    Bytes inverted(factor8.begin(), factor8.end());
    for (auto& b : inverted) b = static_cast<std::uint8_t>(~b);
    Bytes left = tdes_block(master, factor8);
    Bytes right = tdes_block(master, inverted);
    left.insert(left.end(), right.begin(), right.end());
    return crypto::Key16(left);
}

// Card key = Div(Div(master, issuer id), rightmost 8 bytes of the ASN).
inline crypto::Key16 independent_card_key(const crypto::Key16& master, const hsm::CardIdentity& card) {
    const crypto::Key16 issuer = independent_div(master, card.issuer_id);
    return independent_div(issuer, ByteView(card.asn).subspan(2, 8));
}

// ISO 9797-1 MAC 1 with single DES, padding 2, leftmost 4 bytes, block by block with DES-ECB.
inline crypto::Mac4 independent_des_mac(ByteView key8, ByteView data) {
    Bytes padded(data.begin(), data.end());
    padded.push_back(0x80);
    while (padded.size() % 8 != 0) padded.push_back(0x00);
    const crypto::Key8 key(key8);
    Bytes chain(8, 0);
    for (std::size_t at = 0; at < padded.size(); at += 8) {
        for (std::size_t i = 0; i < 8; ++i) chain[i] ^= padded[at + i];
        chain = crypto::des_ecb_encrypt(key, chain);
    }
    return crypto::Mac4{chain[0], chain[1], chain[2], chain[3]};
}

inline Bytes tac_key_bytes(const crypto::Key16& dtk) {
    Bytes k(8);
    for (std::size_t i = 0; i < 8; ++i) k[i] = dtk.data()[i] ^ dtk.data()[8 + i];
    return k;
}

inline hsm::CardIdentity card(std::string_view issuer_hex, std::string_view asn_digits) {
    return hsm::CardIdentity{hsm::parse_issuer_id(issuer_hex).value(), hsm::parse_asn(asn_digits).value()};
}

inline crypto::CardDateTime when(std::string_view date8, std::string_view time6) { return hsm::parse_card_date_time(date8, time6).value(); }

// A purchase with a TAC computed independently under `tac_master`.
inline hsm::PurchaseTac signed_purchase(const crypto::Key16& tac_master, std::uint8_t key_version, const hsm::CardIdentity& c,
                                        std::uint32_t amount_fen, std::uint32_t serial) {
    hsm::PurchaseTac t;
    t.key_version = key_version;
    t.card = c;
    t.amount_fen = amount_fen;
    t.type = crypto::type_ep_purchase;
    t.terminal_id = hsm::parse_terminal_id("001122334455").value();
    t.terminal_serial = serial;
    t.when = when("20261126", "101500");
    Bytes data = coconut::be_bytes(amount_fen, 4);
    data.push_back(t.type);
    coconut::append(data, t.terminal_id);
    coconut::append(data, coconut::be_bytes(serial, 4));
    coconut::append(data, t.when.date);
    coconut::append(data, t.when.time);
    t.tac = independent_des_mac(tac_key_bytes(independent_card_key(tac_master, c)), data);
    return t;
}

inline void flip_byte(const std::filesystem::path& file, std::size_t offset_from_end) {
    std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(0, std::ios::end);
    const auto size = static_cast<std::size_t>(f.tellg());
    const std::size_t at = size - 1 - offset_from_end;
    f.seekg(static_cast<std::streamoff>(at));
    char c = 0;
    f.get(c);
    c = static_cast<char>(c ^ 0x01);
    f.seekp(static_cast<std::streamoff>(at));
    f.put(c);
}

inline std::string read_text(const std::filesystem::path& file) {
    std::ifstream in(file, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
}

inline void write_text(const std::filesystem::path& file, const std::string& text) {
    std::ofstream out(file, std::ios::binary | std::ios::trunc);
    out << text;
}

}  // namespace hsm_test
