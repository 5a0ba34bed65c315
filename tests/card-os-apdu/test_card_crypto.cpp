// Every vector of docs/CARD-SPEC.md §4, written out as the spec gives it.
#include <coconut/crypto/card_crypto.hpp>

#include <doctest/doctest.h>
#include <openssl/evp.h>

#include <algorithm>

using namespace coconut;
using namespace coconut::crypto;

namespace {
Key16 key16(std::string_view h) { return Key16(hex(h)); }
Key8 key8(std::string_view h) { return Key8(hex(h)); }
std::string hx(ByteView b) { return to_hex(b); }
CardDateTime when(std::string_view date, std::string_view time) {
    CardDateTime w;
    const Bytes d = hex(date);
    const Bytes t = hex(time);
    std::copy(d.begin(), d.end(), w.date.begin());
    std::copy(t.begin(), t.end(), w.time.begin());
    return w;
}
}  // namespace

TEST_CASE("vector 1: single DES as EDE3 with K||K||K") {
    CHECK(hx(des_ecb_encrypt(key8("133457799BBCDFF1"), hex("0123456789ABCDEF"))) == "85E813540F0AB405");
    CHECK(hx(des_ecb_decrypt(key8("133457799BBCDFF1"), hex("85E813540F0AB405"))) == "0123456789ABCDEF");
}

TEST_CASE("vector 2: load worked example (SESLK, MAC1, MAC2; the example uses type 01)") {
    const Key16 dlk = key16("11223344556677888877665544332211");
    const Key8 seslk = load_session_key(dlk, hex("11223344"), 0x0000);
    CHECK(hx(seslk.view()) == "9B1D924E05595603");
    CHECK(hx(des_mac(seslk, load_mac1_input(0, 0x1000, type_ed_load, hex("001122334455")))) == "2988AE5A");
    CHECK(hx(des_mac(seslk, load_mac2_input(0x1000, type_ed_load, hex("001122334455"), when("20111221", "214822")))) == "3A845BF0");
    // The MAC inputs are the byte strings the spec writes out.
    CHECK(hx(load_mac1_input(0, 0x1000, 0x01, hex("001122334455"))) == "000000000000100001001122334455");
}

TEST_CASE("vector 3: purchase worked example (SESPK, MAC1, MAC2)") {
    const Key16 dpk = key16("11223344556677888877665544332211");
    const Key8 sespk = purchase_session_key(dpk, hex("11223344"), 0x0000, 0x00000001);
    CHECK(hx(sespk.view()) == "003238ABC57659DD");
    CHECK(hx(des_mac(sespk, purchase_mac1_input(0x1000, type_ep_purchase, hex("001122334455"), when("20120229", "135100")))) == "F15CAB75");
    CHECK(hx(des_mac(sespk, purchase_mac2_input(0x1000))) == "56988A13");
}

TEST_CASE("vector 4: real card load (MAC1, SESLK, TAC key, TAC)") {
    const Key16 dlk = key16("374598B5C0B0EAE1E1D06609AC5BB369");
    const Key16 dtk = key16("CAA6025290114BFCC3C9043F70F7A07A");
    const Key8 seslk = load_session_key(dlk, hex("CDEF4F20"), 0x0000);
    CHECK(hx(seslk.view()) == "3C05F429713D0188");
    CHECK(hx(des_mac(seslk, load_mac1_input(0, 0x1C37, type_ep_load, hex("000001000050")))) == "06B1BEF5");
    const Key8 tk = tac_key(dtk);
    CHECK(hx(tk.view()) == "096F066DE0E6EB86");
    CHECK(hx(des_mac(tk, load_tac_input(0x1C37, 0x0000, 0x1C37, type_ep_load, hex("000001000050"), when("20140825", "103100")))) ==
          "ED0F8755");
}

TEST_CASE("vector 5: retail MAC equals its definition computed independently") {
    const Key16 key = key16("0123456789ABCDEFFEDCBA9876543210");
    const Bytes data = hex("84180000048000000000000000");  // two blocks after padding
    const Block iv{0x11, 0x22, 0x33, 0x44, 0, 0, 0, 0};
    // Independent computation: DES-CBC with K1 by hand (XOR + single-DES ECB per block), then D(K2), E(K1).
    const Key8 k1(key.view().first(8));
    const Key8 k2(key.view().subspan(8, 8));
    const Bytes padded = pad_method2(data);
    REQUIRE(padded.size() == 16);
    Bytes chain(iv.begin(), iv.end());
    for (std::size_t offset = 0; offset < padded.size(); offset += 8) {
        for (std::size_t i = 0; i < 8; ++i) chain[i] ^= padded[offset + i];
        chain = des_ecb_encrypt(k1, chain);
    }
    const Bytes expected = des_ecb_encrypt(k1, des_ecb_decrypt(k2, chain));
    CHECK(hx(retail_mac(key, data, iv)) == hx(expected));
    // With K1 == K2 the retail MAC degenerates to the plain CBC-MAC.
    const Key16 same = key16("0123456789ABCDEF0123456789ABCDEF");
    CHECK(hx(retail_mac(same, data, iv)) == hx(des_mac8(Key8(same.view().first(8)), data, iv)));
}

TEST_CASE("vector 6: SM4 primitive (GB/T 32907)") {
    const Key16 key = key16("0123456789ABCDEFFEDCBA9876543210");
    CHECK(hx(sm4_ecb_encrypt(key, hex("0123456789ABCDEFFEDCBA9876543210"))) == "681EDF34D206965E86B3E94F536E4246");
    CHECK(hx(sm4_ecb_decrypt(key, hex("681EDF34D206965E86B3E94F536E4246"))) == "0123456789ABCDEFFEDCBA9876543210");
}

TEST_CASE("padding method 2 adds a whole block when already aligned") {
    CHECK(hx(pad_method2(hex("0102030405060708"))) == "01020304050607088000000000000000");
    CHECK(hx(pad_method2(hex("01"))) == "0180000000000000");
    CHECK(hx(pad_method2({})) == "8000000000000000");
}

TEST_CASE("diversification: DK = 3DES(MK, F) || 3DES(MK, NOT F), two levels issuer then card") {
    const Key16 master = key16("11223344556677888877665544332211");
    const Block factor{0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08};
    const Bytes left = tdes_ecb_encrypt(master, hex("0102030405060708"));
    const Bytes right = tdes_ecb_encrypt(master, hex("FEFDFCFBFAF9F8F7"));
    CHECK(hx(diversify(master, factor).view()) == hx(left) + hx(right));

    const Block issuer{0x48, 0x61, 0x69, 0x6E, 0x61, 0x6E, 0x00, 0x01};
    const Key16 issuer_key = diversify(master, issuer);
    CHECK(hx(diversify_card_key(master, issuer, factor).view()) == hx(diversify(issuer_key, factor).view()));
    CHECK_FALSE(hx(diversify_card_key(master, issuer, factor).view()) == hx(diversify_card_key(master, factor, issuer).view()));
}

TEST_CASE("KCV is the first 3 bytes of 3DES(key, zero block)") {
    const Key16 key = key16("0123456789ABCDEFFEDCBA9876543210");
    const Bytes full = tdes_ecb_encrypt(key, Bytes(8, 0));
    CHECK(hx(kcv(key)) == hx(ByteView(full).first(3)));
    // Single-length key K||K: 3DES = DES, so the KCV equals DES(K, 0)'s first 3 bytes (8CA64D for this key).
    CHECK(hx(kcv(key16("0123456789ABCDEF0123456789ABCDEF"))) == "D5D44F");
}

TEST_CASE("card factor is the rightmost 8 bytes of the ASN") {
    CHECK(hx(card_factor_from_asn(hex("10000000000000012345"))) == "0000000000012345");
}

TEST_CASE("purchase TAC input layout") {
    CHECK(hx(purchase_tac_input(0x1000, 0x06, hex("001122334455"), 0x00000001, when("20120229", "135100"))) ==
          "0000100006001122334455000000012012022913510"
          "0");
}

namespace {
// The reference: OpenSSL EVP DES-EDE3 (single DES as K‖K‖K), independent of the DES block functions
// card_crypto uses.
Bytes evp_ede3(bool cbc, ByteView key24, const Block& iv, ByteView data, bool encrypt) {
    EVP_CIPHER* cipher = EVP_CIPHER_fetch(nullptr, cbc ? "DES-EDE3-CBC" : "DES-EDE3-ECB", nullptr);
    EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
    REQUIRE(cipher != nullptr);
    REQUIRE(ctx != nullptr);
    Bytes out(data.size() + 8);
    int n = 0, final_n = 0;
    REQUIRE(EVP_CipherInit_ex2(ctx, cipher, key24.data(), cbc ? iv.data() : nullptr, encrypt ? 1 : 0, nullptr) == 1);
    EVP_CIPHER_CTX_set_padding(ctx, 0);
    REQUIRE(EVP_CipherUpdate(ctx, out.data(), &n, data.data(), static_cast<int>(data.size())) == 1);
    REQUIRE(EVP_CipherFinal_ex(ctx, out.data() + n, &final_n) == 1);
    out.resize(static_cast<std::size_t>(n + final_n));
    EVP_CIPHER_CTX_free(ctx);
    EVP_CIPHER_free(cipher);
    return out;
}
Bytes ede3_key(ByteView k1, ByteView k2) {
    Bytes out(k1.begin(), k1.end());
    append(out, k2);
    append(out, k1);
    return out;
}
}  // namespace

TEST_CASE("DES, 3DES, CBC and the MACs agree with OpenSSL EVP DES-EDE3 over random keys and lengths") {
    for (int round = 0; round < 200; ++round) {
        const Bytes raw = random_bytes(16 + 8 + 48);
        const Key16 key(ByteView(raw).first(16));
        const Key8 single(ByteView(raw).first(8));
        Block iv;
        std::copy_n(raw.begin() + 16, 8, iv.begin());
        const std::size_t blocks = 1 + static_cast<std::size_t>(round % 6);
        const ByteView data = ByteView(raw).subspan(24, 8 * blocks);
        const Bytes k3 = ede3_key(key.view().first(8), key.view().subspan(8, 8));
        const Bytes k1 = ede3_key(single.view(), single.view());
        INFO("round ", round, " key ", hx(key.view()), " data ", hx(data));

        CHECK(hx(tdes_ecb_encrypt(key, data)) == hx(evp_ede3(false, k3, iv, data, true)));
        CHECK(hx(tdes_ecb_decrypt(key, data)) == hx(evp_ede3(false, k3, iv, data, false)));
        CHECK(hx(tdes_cbc_encrypt(key, iv, data)) == hx(evp_ede3(true, k3, iv, data, true)));
        CHECK(hx(tdes_cbc_decrypt(key, iv, data)) == hx(evp_ede3(true, k3, iv, data, false)));
        CHECK(hx(des_ecb_encrypt(single, data)) == hx(evp_ede3(false, k1, iv, data, true)));
        CHECK(hx(des_ecb_decrypt(single, data)) == hx(evp_ede3(false, k1, iv, data, false)));

        // MAC algorithm 1 over every length 0…47: the last block of CBC over the padded data.
        const ByteView message = ByteView(raw).subspan(24, static_cast<std::size_t>(round) % 48);
        const Bytes cbc = evp_ede3(true, k1, iv, pad_method2(message), true);
        CHECK(hx(des_mac8(single, message, iv)) == hx(ByteView(cbc).last(8)));

        // The key with its schedules kept gives what the one-shot functions give.
        const TdesKey kept(key);
        Block factor;
        std::copy_n(raw.begin() + 24, 8, factor.begin());
        CHECK(hx(kept.encrypt(factor)) == hx(tdes_ecb_encrypt(key, factor)));
        CHECK(hx(diversify(kept, factor).view()) == hx(diversify(key, factor).view()));
    }
}
