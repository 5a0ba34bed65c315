#include <coconut/clearing/journal_envelope.hpp>

#include <coconut/core/assert.hpp>
#include <coconut/core/sha256.hpp>

#include <fmt/format.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <sys/stat.h>

#include <cctype>
#include <fstream>
#include <sstream>

namespace coconut::clearing {

namespace {

constexpr std::string_view magic = "CCJ1";
constexpr std::size_t mac_size = 32;

void put_number(Bytes& out, std::uint64_t value, int bytes) {
    for (int shift = (bytes - 1) * 8; shift >= 0; shift -= 8) out.push_back(static_cast<std::uint8_t>(value >> shift));
}

std::array<std::uint8_t, mac_size> mac(const ClusterKey& key, ByteView data) {
    std::array<std::uint8_t, mac_size> out{};
    unsigned size = 0;
    const auto* done = HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), data.data(), data.size(), out.data(), &size);
    COCONUT_ASSERT(done != nullptr && size == mac_size, "HMAC-SHA256");
    return out;
}

}  // namespace

coconut::Result<ClusterKey, std::string> read_cluster_key(const std::filesystem::path& file) {
    struct stat info {};
    if (::stat(file.c_str(), &info) != 0) return Unexpected{fmt::format("cluster key {}: cannot read it", file.string())};
    if ((info.st_mode & 077) != 0)
        return Unexpected{fmt::format("cluster key {}: mode {:o} lets others read it (chmod 600)", file.string(), info.st_mode & 0777)};
    std::ifstream in(file);
    std::stringstream text;
    text << in.rdbuf();
    std::string hex = text.str();
    while (!hex.empty() && std::isspace(static_cast<unsigned char>(hex.back()))) hex.pop_back();
    if (hex.size() != cluster_key_size * 2)
        return Unexpected{
            fmt::format("cluster key {}: {} characters, expected {} hex digits", file.string(), hex.size(), cluster_key_size * 2)};
    const auto bytes = from_hex(hex);
    if (!bytes) return Unexpected{fmt::format("cluster key {}: not hex digits", file.string())};
    ClusterKey key{};
    std::copy(bytes->begin(), bytes->end(), key.begin());
    return key;
}

coconut::Status<std::string> write_cluster_key(const std::filesystem::path& file) {
    if (std::filesystem::exists(file)) return Unexpected{fmt::format("{} exists: a cluster key is never replaced in place", file.string())};
    ClusterKey key{};
    if (RAND_bytes(key.data(), static_cast<int>(key.size())) != 1) return Unexpected{std::string("no random bytes from OpenSSL")};
    const mode_t old = ::umask(077);
    std::ofstream out(file);
    out << to_hex(ByteView(key.data(), key.size())) << '\n';
    out.close();
    ::umask(old);
    if (!out) return Unexpected{fmt::format("cannot write {}", file.string())};
    return Ok{};
}

Bytes seal(const JournalEnvelope& envelope, const ClusterKey& key) {
    COCONUT_ASSERT(!envelope.node.empty() && envelope.node.size() <= 0xFF && envelope.changes.size() <= 0xFFFFFFFFu);
    Bytes out(magic.begin(), magic.end());
    out.reserve(out.size() + 1 + envelope.node.size() + 8 + 8 + 4 + envelope.changes.size() + mac_size);
    out.push_back(static_cast<std::uint8_t>(envelope.node.size()));
    out.insert(out.end(), envelope.node.begin(), envelope.node.end());
    put_number(out, envelope.epoch, 8);
    put_number(out, envelope.follows, 8);
    put_number(out, envelope.changes.size(), 4);
    out.insert(out.end(), envelope.changes.begin(), envelope.changes.end());
    const auto tag = mac(key, out);
    out.insert(out.end(), tag.begin(), tag.end());
    return out;
}

coconut::Result<JournalEnvelope, std::string> open_sealed(ByteView message, const ClusterKey& key) {
    if (message.size() < magic.size() + 1 + 8 + 8 + 4 + mac_size || !std::equal(magic.begin(), magic.end(), message.begin()))
        return Unexpected{std::string("not a journal message (no CCJ1 header)")};
    const ByteView body = message.first(message.size() - mac_size);
    const auto expected = mac(key, body);
    if (CRYPTO_memcmp(expected.data(), message.data() + body.size(), mac_size) != 0)
        return Unexpected{std::string("its MAC is not the cluster key's: not written by a clearing node of this cluster")};
    std::size_t at = magic.size();
    auto number = [&](std::size_t bytes) {
        std::uint64_t value = 0;
        for (std::size_t i = 0; i < bytes; ++i) value = value << 8 | body[at++];
        return value;
    };
    JournalEnvelope envelope;
    const std::size_t name_size = body[at++];
    if (body.size() < at + name_size + 8 + 8 + 4) return Unexpected{std::string("the message is cut short")};
    envelope.node.assign(reinterpret_cast<const char*>(body.data() + at), name_size);
    at += name_size;
    envelope.epoch = number(8);
    envelope.follows = number(8);
    const std::size_t changes_size = number(4);
    if (body.size() - at != changes_size) return Unexpected{std::string("its change set length does not match the message")};
    envelope.changes.assign(body.begin() + static_cast<std::ptrdiff_t>(at), body.end());
    return envelope;
}

std::string journal_message_id(ByteView sealed) {
    const auto digest = sha256(sealed);
    return "j" + to_hex(ByteView(digest.data(), 16));
}

}  // namespace coconut::clearing
