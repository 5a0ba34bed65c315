// The journal envelope (coconut/clearing/journal_envelope.hpp): a sealed commit opens with the cluster key
// and with nothing else; any changed byte, a cut message or another key is refused; the cluster key file is
// checked (mode, length, digits) and never replaced; the message id is the content's.
#include <coconut/clearing/journal_envelope.hpp>

#include <doctest/doctest.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

using namespace coconut;
using namespace coconut::clearing;

namespace {

struct KeyDir {
    std::filesystem::path path;
    KeyDir() {
        std::string pattern = (std::filesystem::temp_directory_path() / "coconut-envelope-XXXXXX").string();
        REQUIRE(mkdtemp(pattern.data()) != nullptr);
        path = pattern;
    }
    ~KeyDir() {
        std::error_code ignored;
        std::filesystem::remove_all(path, ignored);
    }
    std::filesystem::path write(const std::string& name, const std::string& text, mode_t mode) const {
        const auto file = path / name;
        std::ofstream(file) << text;
        ::chmod(file.c_str(), mode);
        return file;
    }
};

ClusterKey key_of(std::uint8_t fill) {
    ClusterKey key{};
    key.fill(fill);
    return key;
}

void put(Bytes& out, std::uint64_t value, int bytes) {
    for (int shift = (bytes - 1) * 8; shift >= 0; shift -= 8) out.push_back(static_cast<std::uint8_t>(value >> shift));
}

// `body` with its HMAC-SHA256 under `key` appended: a message as a clearing node with the key would send.
Bytes with_mac(Bytes body, const ClusterKey& key) {
    std::array<std::uint8_t, 32> tag{};
    unsigned size = 0;
    REQUIRE(HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), body.data(), body.size(), tag.data(), &size) != nullptr);
    body.insert(body.end(), tag.begin(), tag.end());
    return body;
}

// A CCJ2 body: codec, node "n", epoch 1, follows 2, the declared length and the stored bytes.
Bytes ccj2_body(std::uint8_t codec, std::uint32_t declared, const Bytes& stored) {
    Bytes body{'C', 'C', 'J', '2', codec, 1, 'n'};
    put(body, 1, 8);
    put(body, 2, 8);
    put(body, declared, 4);
    put(body, stored.size(), 4);
    body.insert(body.end(), stored.begin(), stored.end());
    return body;
}

// A change set like a commit's: records that repeat their table names and most of their bytes.
Bytes commit_like(std::size_t records) {
    Bytes out;
    for (std::size_t i = 0; i < records; ++i) {
        const std::string record = "transfers\x01key-" + std::to_string(i) + "\x02value-of-a-transfer-" + std::to_string(i % 7);
        out.insert(out.end(), record.begin(), record.end());
        put(out, i * 1000003, 8);
    }
    return out;
}

}  // namespace

TEST_CASE("a sealed commit opens with the cluster key: node, epoch, fence and changes as sealed") {
    const JournalEnvelope envelope{"node-a", 7, 41, Bytes{1, 2, 3, 4, 5}};
    const Bytes sealed = seal(envelope, key_of(0x11));
    auto opened = open_sealed(sealed, key_of(0x11));
    REQUIRE_MESSAGE(opened.ok(), (opened.ok() ? "" : opened.error()));
    CHECK(opened->node == "node-a");
    CHECK(opened->epoch == 7);
    CHECK(opened->follows == 41);
    CHECK(opened->changes == envelope.changes);
}

TEST_CASE("a changed byte, another key, a cut message or something else entirely is refused") {
    const Bytes sealed = seal({"node-a", 7, 41, Bytes(100, 0xAB)}, key_of(0x11));
    for (std::size_t at : {std::size_t{0}, std::size_t{5}, std::size_t{20}, sealed.size() / 2, sealed.size() - 1}) {
        Bytes forged = sealed;
        forged[at] ^= 0x01;
        CHECK_FALSE(open_sealed(forged, key_of(0x11)).ok());
    }
    auto other_key = open_sealed(sealed, key_of(0x12));
    REQUIRE_FALSE(other_key.ok());
    CHECK(other_key.error().find("MAC") != std::string::npos);
    CHECK_FALSE(open_sealed(ByteView(sealed.data(), sealed.size() - 33), key_of(0x11)).ok());
    CHECK_FALSE(open_sealed(Bytes{'C', 'C', 'J', '1'}, key_of(0x11)).ok());
    auto garbage = open_sealed(Bytes(200, 0x00), key_of(0x11));
    REQUIRE_FALSE(garbage.ok());
    CHECK(garbage.error().find("CCJ2") != std::string::npos);
}

TEST_CASE("the message id is the sealed content's: a resend keeps it, another commit has another") {
    const Bytes first = seal({"node-a", 7, 41, Bytes{1}}, key_of(0x11));
    const Bytes again = seal({"node-a", 7, 41, Bytes{1}}, key_of(0x11));
    const Bytes next = seal({"node-a", 7, 42, Bytes{1}}, key_of(0x11));
    CHECK(journal_message_id(first) == journal_message_id(again));
    CHECK(journal_message_id(first) != journal_message_id(next));
    CHECK(journal_message_id(first).size() == 33);
}

TEST_CASE("the cluster key file: written 0600 once, read back; a readable, short or non-hex file is refused") {
    KeyDir dir;
    const auto file = dir.path / "cluster.key";
    REQUIRE(write_cluster_key(file).ok());
    struct stat info {};
    REQUIRE(::stat(file.c_str(), &info) == 0);
    CHECK((info.st_mode & 0777) == 0600);
    auto key = read_cluster_key(file);
    REQUIRE_MESSAGE(key.ok(), (key.ok() ? "" : key.error()));
    CHECK(*key != key_of(0));
    auto replaced = write_cluster_key(file);
    REQUIRE_FALSE(replaced.ok());
    CHECK(replaced.error().find("never replaced") != std::string::npos);
    CHECK(read_cluster_key(file).value() == *key);

    const std::string hex64(64, 'a');
    auto readable = read_cluster_key(dir.write("open.key", hex64, 0644));
    REQUIRE_FALSE(readable.ok());
    CHECK(readable.error().find("chmod 600") != std::string::npos);
    auto short_key = read_cluster_key(dir.write("short.key", hex64.substr(2), 0600));
    REQUIRE_FALSE(short_key.ok());
    CHECK(short_key.error().find("62 characters") != std::string::npos);
    auto not_hex = read_cluster_key(dir.write("bad.key", std::string(63, 'a') + "z", 0600));
    REQUIRE_FALSE(not_hex.ok());
    CHECK(not_hex.error().find("not hex") != std::string::npos);
    CHECK(read_cluster_key(dir.write("nl.key", hex64 + "\n", 0600)).ok());
    CHECK_FALSE(read_cluster_key(dir.path / "missing.key").ok());
}

TEST_CASE("a large change set travels zstd-compressed and opens to the same bytes; a small one is stored") {
    const Bytes changes = commit_like(4000);
    const Bytes sealed = seal({"node-a", 3, 9, changes}, key_of(0x21));
    CHECK(sealed.size() * 4 < changes.size());  // a commit's records repeat table names and layouts
    CHECK(sealed[4] == 1);                      // the codec: zstd
    auto opened = open_sealed(sealed, key_of(0x21));
    REQUIRE_MESSAGE(opened.ok(), (opened.ok() ? "" : opened.error()));
    CHECK(opened->changes == changes);
    CHECK(opened->follows == 9);

    const Bytes small{1, 2, 3};
    const Bytes sealed_small = seal({"node-a", 3, 10, small}, key_of(0x21));
    CHECK(sealed_small[4] == 0);  // stored: too small to gain
    CHECK(open_sealed(sealed_small, key_of(0x21)).value().changes == small);
}

TEST_CASE("a message of the first format (CCJ1, the change set stored) is still read") {
    Bytes body{'C', 'C', 'J', '1', 6, 'n', 'o', 'd', 'e', '-', 'b'};
    put(body, 5, 8);
    put(body, 12, 8);
    put(body, 3, 4);
    body.insert(body.end(), {7, 8, 9});
    auto opened = open_sealed(with_mac(body, key_of(0x31)), key_of(0x31));
    REQUIRE_MESSAGE(opened.ok(), (opened.ok() ? "" : opened.error()));
    CHECK(opened->node == "node-b");
    CHECK(opened->epoch == 5);
    CHECK(opened->follows == 12);
    CHECK(opened->changes == Bytes{7, 8, 9});
}

TEST_CASE("an authenticated message whose change set does not decompress to what it declares is refused") {
    const ClusterKey key = key_of(0x41);
    const Bytes changes = commit_like(500);
    const Bytes sealed = seal({"n", 1, 2, changes}, key);
    REQUIRE(sealed[4] == 1);
    const std::size_t stored_at = 4 + 2 + 1 + 8 + 8 + 4 + 4;
    const Bytes stored(sealed.begin() + stored_at, sealed.end() - 32);

    auto longer = open_sealed(with_mac(ccj2_body(1, static_cast<std::uint32_t>(changes.size() + 1), stored), key), key);
    REQUIRE_FALSE(longer.ok());
    CHECK(longer.error().find("decompresses to") != std::string::npos);
    auto shorter = open_sealed(with_mac(ccj2_body(1, static_cast<std::uint32_t>(changes.size() - 1), stored), key), key);
    REQUIRE_FALSE(shorter.ok());
    CHECK(shorter.error().find("does not decompress") != std::string::npos);
    Bytes broken = stored;
    broken.resize(broken.size() / 2);
    CHECK_FALSE(open_sealed(with_mac(ccj2_body(1, static_cast<std::uint32_t>(changes.size()), broken), key), key).ok());

    auto huge = open_sealed(with_mac(ccj2_body(1, 0xFFFFFFFFu, stored), key), key);
    REQUIRE_FALSE(huge.ok());
    CHECK(huge.error().find("more than") != std::string::npos);
    auto codec = open_sealed(with_mac(ccj2_body(7, 3, Bytes{1, 2, 3}), key), key);
    REQUIRE_FALSE(codec.ok());
    CHECK(codec.error().find("unknown encoding") != std::string::npos);
    auto stored_mismatch = open_sealed(with_mac(ccj2_body(0, 4, Bytes{1, 2, 3}), key), key);
    REQUIRE_FALSE(stored_mismatch.ok());
    CHECK(stored_mismatch.error().find("declared") != std::string::npos);
}
