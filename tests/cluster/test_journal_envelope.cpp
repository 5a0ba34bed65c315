// The journal envelope (coconut/clearing/journal_envelope.hpp): a sealed commit opens with the cluster key
// and with nothing else; any changed byte, a cut message or another key is refused; the cluster key file is
// checked (mode, length, digits) and never replaced; the message id is the content's.
#include <coconut/clearing/journal_envelope.hpp>

#include <doctest/doctest.h>

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
    CHECK(garbage.error().find("CCJ1") != std::string::npos);
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
