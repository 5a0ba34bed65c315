#include <coconut/clearing/journal_envelope.hpp>

#include <coconut/core/assert.hpp>
#include <coconut/core/sha256.hpp>

#include <fmt/format.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <sys/stat.h>
#include <zstd.h>

#include <cctype>
#include <memory>
#include <optional>
#include <fstream>
#include <sstream>

namespace coconut::clearing {

namespace {

constexpr std::string_view magic = "CCJ2";
constexpr std::string_view magic_uncompressed = "CCJ1";  // before compression: still read
constexpr std::size_t mac_size = 32;
// Compressing costs the writer thread about as much as publishing a few hundred bytes saves.
constexpr std::size_t compress_from = 512;
constexpr int zstd_level = 1;
enum class Codec : std::uint8_t { stored = 0, zstd = 1 };

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

// `changes` compressed with zstd, or nothing when that does not make it smaller.
std::optional<Bytes> compress(ByteView changes) {
    if (changes.size() < compress_from) return std::nullopt;
    thread_local std::unique_ptr<ZSTD_CCtx, decltype(&ZSTD_freeCCtx)> context(ZSTD_createCCtx(), ZSTD_freeCCtx);
    COCONUT_ASSERT(context != nullptr, "a zstd compression context");
    Bytes out(ZSTD_compressBound(changes.size()));
    const std::size_t size = ZSTD_compressCCtx(context.get(), out.data(), out.size(), changes.data(), changes.size(), zstd_level);
    COCONUT_ASSERT(!ZSTD_isError(size), "zstd compresses into its own bound");
    if (size >= changes.size()) return std::nullopt;
    out.resize(size);
    return out;
}

// The change set of `size` bytes that `stored` holds compressed; called only on an authenticated message,
// and bounded by the size the message declares, itself bounded by change_set_max.
coconut::Result<Bytes, std::string> decompress(ByteView stored, std::size_t size) {
    thread_local std::unique_ptr<ZSTD_DCtx, decltype(&ZSTD_freeDCtx)> context(ZSTD_createDCtx(), ZSTD_freeDCtx);
    COCONUT_ASSERT(context != nullptr, "a zstd decompression context");
    Bytes out(size);
    const std::size_t got = ZSTD_decompressDCtx(context.get(), out.data(), out.size(), stored.data(), stored.size());
    if (ZSTD_isError(got)) return Unexpected{fmt::format("its change set does not decompress: {}", ZSTD_getErrorName(got))};
    if (got != size) return Unexpected{fmt::format("its change set decompresses to {} bytes, not the {} it declares", got, size)};
    return out;
}

// A CCJ1 message (change set stored as is, no codec or stored length): its body after the MAC check.
coconut::Result<JournalEnvelope, std::string> open_uncompressed(ByteView body) {
    std::size_t at = magic_uncompressed.size();
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
    COCONUT_ASSERT(!envelope.node.empty() && envelope.node.size() <= 0xFF && envelope.changes.size() <= change_set_max);
    const auto compressed = compress(envelope.changes);
    const ByteView stored = compressed ? ByteView(*compressed) : ByteView(envelope.changes);
    Bytes out(magic.begin(), magic.end());
    out.reserve(out.size() + 2 + envelope.node.size() + 8 + 8 + 4 + 4 + stored.size() + mac_size);
    out.push_back(static_cast<std::uint8_t>(compressed ? Codec::zstd : Codec::stored));
    out.push_back(static_cast<std::uint8_t>(envelope.node.size()));
    out.insert(out.end(), envelope.node.begin(), envelope.node.end());
    put_number(out, envelope.epoch, 8);
    put_number(out, envelope.follows, 8);
    put_number(out, envelope.changes.size(), 4);
    put_number(out, stored.size(), 4);
    out.insert(out.end(), stored.begin(), stored.end());
    const auto tag = mac(key, out);
    out.insert(out.end(), tag.begin(), tag.end());
    return out;
}

coconut::Result<JournalEnvelope, std::string> open_sealed(ByteView message, const ClusterKey& key) {
    const auto starts_with = [&](std::string_view text) {
        return message.size() >= text.size() && std::equal(text.begin(), text.end(), message.begin());
    };
    const bool legacy = starts_with(magic_uncompressed);
    const std::size_t header_min = legacy ? magic.size() + 1 + 8 + 8 + 4 : magic.size() + 2 + 8 + 8 + 4 + 4;
    if ((!legacy && !starts_with(magic)) || message.size() < header_min + mac_size)
        return Unexpected{std::string("not a journal message (no CCJ2 or CCJ1 header)")};
    const ByteView body = message.first(message.size() - mac_size);
    const auto expected = mac(key, body);
    if (CRYPTO_memcmp(expected.data(), message.data() + body.size(), mac_size) != 0)
        return Unexpected{std::string("its MAC is not the cluster key's: not written by a clearing node of this cluster")};
    if (legacy) return open_uncompressed(body);
    std::size_t at = magic.size();
    auto number = [&](std::size_t bytes) {
        std::uint64_t value = 0;
        for (std::size_t i = 0; i < bytes; ++i) value = value << 8 | body[at++];
        return value;
    };
    const std::uint8_t codec = body[at++];
    if (codec != static_cast<std::uint8_t>(Codec::stored) && codec != static_cast<std::uint8_t>(Codec::zstd))
        return Unexpected{fmt::format("its change set is in an unknown encoding ({})", codec)};
    JournalEnvelope envelope;
    const std::size_t name_size = body[at++];
    if (body.size() < at + name_size + 8 + 8 + 4 + 4) return Unexpected{std::string("the message is cut short")};
    envelope.node.assign(reinterpret_cast<const char*>(body.data() + at), name_size);
    at += name_size;
    envelope.epoch = number(8);
    envelope.follows = number(8);
    const std::size_t changes_size = number(4);
    const std::size_t stored_size = number(4);
    if (body.size() - at != stored_size) return Unexpected{std::string("its change set length does not match the message")};
    if (changes_size > change_set_max)
        return Unexpected{
            fmt::format("its change set declares {} bytes, more than the {} a commit may have", changes_size, change_set_max)};
    const ByteView stored = body.subspan(at);
    if (codec == static_cast<std::uint8_t>(Codec::stored)) {
        if (stored_size != changes_size) return Unexpected{std::string("its stored change set length does not match the declared one")};
        envelope.changes.assign(stored.begin(), stored.end());
        return envelope;
    }
    auto changes = decompress(stored, changes_size);
    if (!changes) return Unexpected{changes.error()};
    envelope.changes = std::move(changes).value();
    return envelope;
}

std::string journal_message_id(ByteView sealed) {
    const auto digest = sha256(sealed);
    return "j" + to_hex(ByteView(digest.data(), 16));
}

}  // namespace coconut::clearing
