// Key store: sealing at rest, refusal of tampered / truncated / wrong-key stores, ceremony rules.
#include "support.hpp"

#include <sodium.h>

using namespace hsm_test;
using hsm::Errc;

TEST_CASE("init creates a 0700 store with a 0600 master key and refuses to run twice") {
    TempDir dir;
    REQUIRE(hsm::KeyStore::init(dir / "s").ok());
    struct stat st {};
    REQUIRE(::stat((dir / "s").c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0700);
    REQUIRE(::stat((dir / "s" / "master.key").c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);
    CHECK(st.st_size == 32);
    auto again = hsm::KeyStore::init(dir / "s");
    REQUIRE_FALSE(again.ok());
    CHECK(again.error().code == Errc::store_exists);
}

TEST_CASE("init refuses a directory that already holds other files (and leaves its mode alone)") {
    TempDir dir;
    std::filesystem::create_directories(dir / "shared");
    write_text(dir / "shared" / "notes.txt", "not a key store");
    std::filesystem::permissions(dir / "shared",
                                 std::filesystem::perms::owner_all | std::filesystem::perms::group_read |
                                     std::filesystem::perms::group_exec,
                                 std::filesystem::perm_options::replace);
    auto init = hsm::KeyStore::init(dir / "shared");
    REQUIRE_FALSE(init.ok());
    CHECK(init.error().message.find("not an empty directory") != std::string::npos);
    CHECK((std::filesystem::status(dir / "shared").permissions() & std::filesystem::perms::group_read) != std::filesystem::perms::none);
    CHECK(hsm::KeyStore::init(dir / "empty-but-new").ok());
}

TEST_CASE("KCV is the first 3 bytes of 3DES(key, 0^8) for known keys") {
    TempDir dir;
    REQUIRE(hsm::KeyStore::init(dir / "s").ok());
    auto store = hsm::KeyStore::open(dir / "s");
    REQUIRE(store.ok());
    // 08D7B4: the published KCV of the classic test key; 491510 computed independently with `openssl enc -des-ede3`.
    auto a = store->add_key("known-a", 1, hsm::KeyType::tdes2, hsm::KeyUsage::transport, key16("0123456789ABCDEFFEDCBA9876543210"));
    auto b = store->add_key("known-b", 1, hsm::KeyType::tdes2, hsm::KeyUsage::load, key16("11223344556677888877665544332211"));
    REQUIRE(a.ok());
    REQUIRE(b.ok());
    CHECK(coconut::to_hex(a->kcv) == "08D7B4");
    CHECK(coconut::to_hex(b->kcv) == "491510");
}

TEST_CASE("keys survive sealing and reopening, never listed with key bytes") {
    TempDir dir;
    make_store(dir.path(), true);
    auto store = hsm::KeyStore::open(dir / "store");
    REQUIRE(store.ok());
    const auto keys = store->list();
    REQUIRE(keys.size() == 8);
    CHECK(keys.front().label == "kek-issuance");
    auto tac1 = store->find({"mk-tac", 1});
    REQUIRE_FALSE(tac1.ok());
    CHECK(tac1.error().code == Errc::key_retired);
    auto newest = store->find({"mk-tac", hsm::newest_version});
    REQUIRE(newest.ok());
    CHECK(newest->version == 2);
    auto material = store->key_material({"mk-load", 1}, hsm::KeyUsage::load);
    REQUIRE(material.ok());
    CHECK(material.value() == key16(load_master_hex));
    // The sealed file does not contain the key in clear.
    const std::string sealed = read_text(dir / "store" / "keys.sealed");
    const Bytes key_bytes = hex(load_master_hex);
    CHECK(sealed.find(std::string(key_bytes.begin(), key_bytes.end())) == std::string::npos);
}

TEST_CASE("a tampered store is refused") {
    TempDir dir;
    make_store(dir.path());
    SUBCASE("a flipped ciphertext byte") {
        flip_byte(dir / "store" / "keys.sealed", 10);
        auto store = hsm::KeyStore::open(dir / "store");
        REQUIRE_FALSE(store.ok());
        CHECK(store.error().code == Errc::store_tampered);
        CHECK(store.error().message.find("keys.sealed") != std::string::npos);
    }
    SUBCASE("an altered clear header (generation)") {
        std::string text = read_text(dir / "store" / "keys.sealed");
        text[8 + 2 + 8 + 7] = static_cast<char>(text[8 + 2 + 8 + 7] ^ 0x01);
        write_text(dir / "store" / "keys.sealed", text);
        auto store = hsm::KeyStore::open(dir / "store");
        REQUIRE_FALSE(store.ok());
        CHECK(store.error().code == Errc::store_tampered);
    }
    SUBCASE("bytes appended") {
        write_text(dir / "store" / "keys.sealed", read_text(dir / "store" / "keys.sealed") + "X");
        auto store = hsm::KeyStore::open(dir / "store");
        REQUIRE_FALSE(store.ok());
        CHECK(store.error().code == Errc::store_tampered);
    }
}

TEST_CASE("a truncated store is refused as truncated") {
    TempDir dir;
    make_store(dir.path());
    const std::string text = read_text(dir / "store" / "keys.sealed");
    SUBCASE("inside the sealed part") { write_text(dir / "store" / "keys.sealed", text.substr(0, text.size() - 5)); }
    SUBCASE("inside the header") { write_text(dir / "store" / "keys.sealed", text.substr(0, 20)); }
    auto store = hsm::KeyStore::open(dir / "store");
    REQUIRE_FALSE(store.ok());
    CHECK(store.error().code == Errc::store_truncated);
}

TEST_CASE("a store opened with another master key is refused as wrong-key") {
    TempDir dir;
    make_store(dir.path());
    Bytes other(32);
    randombytes_buf(other.data(), other.size());
    write_text(dir / "store" / "master.key", std::string(other.begin(), other.end()));
    auto store = hsm::KeyStore::open(dir / "store");
    REQUIRE_FALSE(store.ok());
    CHECK(store.error().code == Errc::store_wrong_master_key);
}

TEST_CASE("a master key file readable by others is refused") {
    TempDir dir;
    make_store(dir.path());
    std::filesystem::permissions(dir / "store" / "master.key", std::filesystem::perms::group_read, std::filesystem::perm_options::add);
    auto store = hsm::KeyStore::open(dir / "store");
    REQUIRE_FALSE(store.ok());
    CHECK(store.error().code == Errc::master_key_file);
    CHECK(store.error().message.find("chmod 600") != std::string::npos);
}

TEST_CASE("a missing store says how to create one") {
    TempDir dir;
    auto store = hsm::KeyStore::open(dir / "nothing");
    REQUIRE_FALSE(store.ok());
    CHECK(store.error().code == Errc::store_missing);
    CHECK(store.error().message.find("coconut-hsmd init") != std::string::npos);
}

TEST_CASE("key components combine by XOR; 2 or 3 of them, and they must not cancel out") {
    const crypto::Key16 a = key16("0123456789ABCDEF0123456789ABCDEF");
    const crypto::Key16 b = key16("FEDCBA9876543210FEDCBA9876543210");
    const crypto::Key16 c = key16("00000000000000001111111111111111");
    auto two = hsm::combine_key_components(std::vector{a, b});
    REQUIRE(two.ok());
    CHECK(two.value() == key16("FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF"));
    auto three = hsm::combine_key_components(std::vector{a, b, c});
    REQUIRE(three.ok());
    CHECK(three.value() == key16("FFFFFFFFFFFFFFFFEEEEEEEEEEEEEEEE"));
    auto one = hsm::combine_key_components(std::vector{a});
    REQUIRE_FALSE(one.ok());
    CHECK(one.error().code == Errc::bad_request);
    auto four = hsm::combine_key_components(std::vector{a, b, c, c});
    CHECK_FALSE(four.ok());
    auto cancelling = hsm::combine_key_components(std::vector{a, a});
    REQUIRE_FALSE(cancelling.ok());
    CHECK(cancelling.error().message.find("cancel") != std::string::npos);
}

TEST_CASE("ceremony rules: unique label+version, valid labels, retire once, usage and type checked") {
    TempDir dir;
    make_store(dir.path());
    auto store = hsm::KeyStore::open(dir / "store");
    REQUIRE(store.ok());
    auto duplicate = store->add_key("mk-load", 1, hsm::KeyType::tdes2, hsm::KeyUsage::load, hsm::generate_key());
    REQUIRE_FALSE(duplicate.ok());
    CHECK(duplicate.error().code == Errc::key_exists);
    CHECK_FALSE(store->add_key("Bad Label", 1, hsm::KeyType::tdes2, hsm::KeyUsage::load, hsm::generate_key()).ok());
    CHECK_FALSE(store->add_key("mk-x", 0, hsm::KeyType::tdes2, hsm::KeyUsage::load, hsm::generate_key()).ok());
    REQUIRE(store->retire_key("mk-load", 1).ok());
    auto twice = store->retire_key("mk-load", 1);
    REQUIRE_FALSE(twice.ok());
    CHECK(twice.error().code == Errc::key_retired);
    auto wrong_usage = store->key_material({"kek-issuance", 1}, hsm::KeyUsage::tac);
    REQUIRE_FALSE(wrong_usage.ok());
    CHECK(wrong_usage.error().code == Errc::wrong_key_usage);
    REQUIRE(store->add_key("sm4-future", 1, hsm::KeyType::sm4, hsm::KeyUsage::tac, hsm::generate_key()).ok());
    auto sm4 = store->key_material({"sm4-future", 1}, hsm::KeyUsage::tac);
    REQUIRE_FALSE(sm4.ok());
    CHECK(sm4.error().code == Errc::unsupported_key_type);
    // The retirement and the SM4 key persist.
    REQUIRE(store->save().ok());
    auto reopened = hsm::KeyStore::open(dir / "store");
    REQUIRE(reopened.ok());
    CHECK(reopened->find({"mk-load", 1}).error().code == Errc::key_retired);
    CHECK(reopened->find({"sm4-future", 1}).ok());
}

TEST_CASE("clients get a random link key that persists sealed; ids are unique") {
    TempDir dir;
    make_store(dir.path());
    auto store = hsm::KeyStore::open(dir / "store");
    REQUIRE(store.ok());
    auto key = store->add_client("clearing", hsm::permit_tac);
    REQUIRE(key.ok());
    CHECK(store->add_client("clearing", hsm::permit_all).error().code == Errc::client_exists);
    CHECK_FALSE(store->add_client("no spaces", hsm::permit_all).ok());
    REQUIRE(store->save().ok());
    auto reopened = hsm::KeyStore::open(dir / "store");
    REQUIRE(reopened.ok());
    auto again = reopened->client_key("clearing");
    REQUIRE(again.has_value());
    CHECK(again.value() == key.value());
    CHECK(reopened->client("clearing")->permissions == hsm::permit_tac);
    REQUIRE(reopened->remove_client("clearing").ok());
    CHECK_FALSE(reopened->client_key("clearing").has_value());
}

TEST_CASE("a second ceremony cannot take the store lock while one holds it") {
    TempDir dir;
    make_store(dir.path());
    hsm::StorePaths paths{dir / "store"};
    auto first = hsm::StoreLock::acquire(paths);
    REQUIRE(first.ok());
    auto second = hsm::StoreLock::acquire(paths);
    REQUIRE_FALSE(second.ok());
    CHECK(second.error().code == Errc::store_busy);
}
