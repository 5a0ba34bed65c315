// The sealed key store: file format, sealing, the master key file, and the in-memory key table.
//
// keys.sealed layout (big-endian):
//   magic "COCOHSM1"(8) ‖ format version(2) ‖ master key id(8) ‖ generation(8) ‖ nonce(24) ‖
//   ciphertext length(4) ‖ ciphertext = crypto_secretbox_easy(plaintext)
// plaintext:
//   format version(2) ‖ master key id(8) ‖ generation(8)          -- binds the clear header
//   key count(2)    ‖ per key:    label len(1) ‖ label ‖ version(1) ‖ type(1) ‖ usage(1) ‖ status(1) ‖
//                                 created(8) ‖ retired(8) ‖ key(16) ‖ kcv(3)
//   client count(2) ‖ per client: id len(1) ‖ id ‖ permissions(4) ‖ created(8) ‖ key(32)
//   format version 2 only (written once the store holds a signing key, so stores without one stay
//   readable by builds that know version 1):
//   signing key count(2) ‖ per key: label len(1) ‖ label ‖ created(8) ‖ key len(2) ‖ PKCS#8 DER key ‖
//                                   certificate len(2) ‖ certificate DER
#include <coconut/core/assert.hpp>
#include <coconut/hsm/audit.hpp>
#include <coconut/hsm/hsm.hpp>

#include "file_io.hpp"
#include "secure_buffer.hpp"

#include <fmt/format.h>
#include <sodium.h>

#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <mutex>

namespace coconut::hsm {
namespace detail {

void ensure_sodium() {
    static const int status = sodium_init();
    if (status < 0) throw std::runtime_error("libsodium: sodium_init failed");
}

}  // namespace detail

namespace {

using detail::SecureBuffer;

constexpr std::array<std::uint8_t, 8> store_magic = {'C', 'O', 'C', 'O', 'H', 'S', 'M', '1'};
constexpr std::uint16_t store_format_version = 1;
constexpr std::uint16_t store_format_version_signing = 2;  // version 1 + the signing keys
constexpr std::size_t key_id_bytes = 8;
constexpr std::size_t header_bytes = 8 + 2 + key_id_bytes + 8 + crypto_secretbox_NONCEBYTES + 4;
constexpr std::size_t key_bytes = 16;
// Subkey contexts for crypto_kdf (8 characters each, fixed forever: changing one orphans every store).
constexpr char kdf_context_key_id[crypto_kdf_CONTEXTBYTES] = {'c', 'o', 'c', 'o', 'k', 'e', 'y', 'i'};
constexpr char kdf_context_audit[crypto_kdf_CONTEXTBYTES] = {'c', 'o', 'c', 'o', 'a', 'u', 'd', 't'};

std::int64_t now_unix_s() { return static_cast<std::int64_t>(std::time(nullptr)); }

// Big-endian writer into guarded memory (the plaintext holds key material).
struct SecureWriter {
    SecureBuffer& out;
    void u8(std::uint8_t v) { out.append(&v, 1); }
    void be(std::uint64_t v, std::size_t width) {
        std::array<std::uint8_t, 8> b{};
        for (std::size_t i = 0; i < width; ++i) b[width - 1 - i] = static_cast<std::uint8_t>(v >> (8 * i));
        out.append(b.data(), width);
    }
    void bytes(const void* p, std::size_t n) { out.append(p, n); }
    void text(std::string_view s) {
        u8(static_cast<std::uint8_t>(s.size()));
        bytes(s.data(), s.size());
    }
};

// Bounds-checked reader; any overrun marks it failed (checked once at the end of each record).
struct Reader {
    const std::uint8_t* data;
    std::size_t size;
    std::size_t at = 0;
    bool failed = false;
    bool take(std::size_t n) {
        if (failed || size - at < n) {
            failed = true;
            return false;
        }
        return true;
    }
    std::uint64_t be(std::size_t width) {
        if (!take(width)) return 0;
        std::uint64_t v = 0;
        for (std::size_t i = 0; i < width; ++i) v = (v << 8) | data[at + i];
        at += width;
        return v;
    }
    std::uint8_t u8() { return static_cast<std::uint8_t>(be(1)); }
    const std::uint8_t* bytes(std::size_t n) {
        if (!take(n)) return nullptr;
        const std::uint8_t* p = data + at;
        at += n;
        return p;
    }
    std::string text() {
        const std::size_t n = u8();
        const std::uint8_t* p = bytes(n);
        return p ? std::string(reinterpret_cast<const char*>(p), n) : std::string();
    }
};

struct KeyEntry {
    KeyInfo info;
    std::size_t offset = 0;  // into State::arena
};
struct ClientEntry {
    ClientInfo info;
    std::size_t offset = 0;  // into State::arena
};
struct SigningKeyEntry {
    KeyStore::SigningKeyInfo info;
    std::size_t offset = 0;  // into State::arena
    std::size_t size = 0;
};

crypto::Kcv compute_kcv(KeyType type, const crypto::Key16& key) {
    if (type == KeyType::tdes2) return crypto::kcv(key);
    const Bytes zero(16, 0);
    const Bytes out = crypto::sm4_ecb_encrypt(key, zero);
    return crypto::Kcv{out[0], out[1], out[2]};
}

bool valid_name(std::string_view text, std::size_t max_chars) {
    if (text.empty() || text.size() > max_chars) return false;
    return std::all_of(text.begin(), text.end(),
                       [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'; });
}

}  // namespace

bool valid_label(std::string_view label) { return valid_name(label, max_label_chars); }
bool valid_client_id(std::string_view id) { return valid_name(id, max_client_id_chars); }

// ---- StoreLock ------------------------------------------------------------------------------------

Outcome<StoreLock> StoreLock::acquire(const StorePaths& paths) {
    const int fd = ::open(paths.lock().c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) return fail(Errc::io_error, fmt::format("cannot open {}: {}", paths.lock().string(), std::strerror(errno)));
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
        ::close(fd);
        return fail(Errc::store_busy, fmt::format("{} is held by another ceremony command; wait for it to finish", paths.lock().string()));
    }
    return StoreLock(fd);
}
StoreLock::StoreLock(StoreLock&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
StoreLock::~StoreLock() {
    if (fd_ >= 0) ::close(fd_);  // closing releases the flock
}

// ---- KeyStore state -------------------------------------------------------------------------------

struct KeyStore::State {
    StorePaths paths;
    SecureBuffer master{master_key_bytes};
    std::array<std::uint8_t, key_id_bytes> key_id{};
    std::uint64_t generation = 0;
    SecureBuffer arena{1024};                   // key and client key bytes, addressed by offset
    std::vector<KeyEntry> keys;                 // sorted by (label, version)
    std::vector<ClientEntry> clients;           // sorted by id
    std::vector<SigningKeyEntry> signing_keys;  // in the order added

    crypto::Key16 key_at(std::size_t offset) const { return crypto::Key16(ByteView(arena.data() + offset, key_bytes)); }

    void derive_key_id() {
        std::array<std::uint8_t, crypto_kdf_BYTES_MIN> sub{};
        crypto_kdf_derive_from_key(sub.data(), sub.size(), 1, kdf_context_key_id, master.data());
        std::memcpy(key_id.data(), sub.data(), key_id_bytes);
    }

    const KeyEntry* find_exact(std::string_view label, std::uint8_t version) const {
        for (const KeyEntry& e : keys)
            if (e.info.label == label && e.info.version == version) return &e;
        return nullptr;
    }
};

KeyStore::KeyStore(std::unique_ptr<State> state) : state_(std::move(state)) {}
KeyStore::KeyStore(KeyStore&&) noexcept = default;
KeyStore& KeyStore::operator=(KeyStore&&) noexcept = default;
KeyStore::~KeyStore() = default;

const StorePaths& KeyStore::paths() const { return state_->paths; }
std::uint64_t KeyStore::generation() const { return state_->generation; }

namespace {

Outcome<SecureBuffer> read_master_key(const std::filesystem::path& path) {
    auto fd = detail::open_private_file(path, "master key file");
    if (!fd) return fail(Errc::master_key_file, fd.error().message);
    SecureBuffer master(master_key_bytes);
    std::uint8_t extra = 0;
    const ssize_t got = ::read(fd->get(), master.data(), master_key_bytes);
    const ssize_t more = ::read(fd->get(), &extra, 1);
    if (got != static_cast<ssize_t>(master_key_bytes) || more != 0)
        return fail(Errc::master_key_file, fmt::format("master key file {} must hold exactly {} bytes", path.string(), master_key_bytes));
    master.resize(master_key_bytes);
    return master;
}

}  // namespace

Status<Failure> KeyStore::init(const std::filesystem::path& dir) {
    detail::ensure_sodium();
    StorePaths paths{dir};
    std::error_code ec;
    if (std::filesystem::exists(paths.sealed(), ec) || std::filesystem::exists(paths.master_key(), ec))
        return fail(Errc::store_exists, fmt::format("{} already holds a key store; refusing to overwrite it", dir.string()));
    if (std::filesystem::exists(dir, ec)) {
        // Never take over (and chmod) a directory that holds anything else.
        if (!std::filesystem::is_directory(dir, ec) || !std::filesystem::is_empty(dir, ec))
            return fail(Errc::store_exists,
                        fmt::format("{} exists and is not an empty directory; give init a new directory", dir.string()));
    } else {
        std::filesystem::create_directories(dir, ec);
        if (ec) return fail(Errc::io_error, fmt::format("cannot create {}: {}", dir.string(), ec.message()));
    }
    std::filesystem::permissions(dir, std::filesystem::perms::owner_all, std::filesystem::perm_options::replace, ec);
    if (ec) return fail(Errc::io_error, fmt::format("cannot set {} to mode 0700: {}", dir.string(), ec.message()));

    auto state = std::make_unique<State>();
    state->paths = paths;
    randombytes_buf(state->master.data(), master_key_bytes);
    state->master.resize(master_key_bytes);
    state->derive_key_id();
    if (auto written = detail::write_new_private_file(paths.master_key(), ByteView(state->master.data(), master_key_bytes)); !written)
        return Unexpected<Failure>{written.error()};

    KeyStore store(std::move(state));
    if (auto saved = store.save(); !saved) return saved;
    auto audit = AuditLog::open(paths.audit_log(), store.audit_key());
    if (!audit) return Unexpected<Failure>{audit.error()};
    if (auto line = audit.value()->append({ceremony_actor(), "store-init", "", {}, "ok"}); !line) return Unexpected<Failure>{line.error()};
    return Ok{};
}

namespace {

// The clear header of a sealed store (layout at the top of this file), read before unsealing.
struct SealedHeader {
    std::uint16_t version = 0;
    const std::uint8_t* key_id = nullptr;
    std::uint64_t generation = 0;
    const std::uint8_t* nonce = nullptr;
    std::size_t cipher_len = 0;
};

// Bytes of the header repeated inside the sealed contents: version, key id, generation.
constexpr std::size_t inner_header_bytes = 2 + key_id_bytes + 8;

Outcome<SealedHeader> read_sealed_header(const Bytes& sealed, const KeyStore::State& state, const std::string& name) {
    if (sealed.size() < header_bytes)
        return fail(Errc::store_truncated,
                    fmt::format("{} is truncated: {} bytes, shorter than its {}-byte header", name, sealed.size(), header_bytes));
    if (!std::equal(store_magic.begin(), store_magic.end(), sealed.begin()))
        return fail(Errc::store_corrupt, fmt::format("{} is not a Coconut HSM key store (bad magic)", name));
    Reader header{sealed.data(), header_bytes, store_magic.size()};
    SealedHeader h;
    h.version = static_cast<std::uint16_t>(header.be(2));
    h.key_id = header.bytes(key_id_bytes);
    h.generation = header.be(8);
    h.nonce = header.bytes(crypto_secretbox_NONCEBYTES);
    h.cipher_len = header.be(4);
    COCONUT_ASSERT(!header.failed && header.at == header_bytes, "sealed header layout");
    if (h.version != store_format_version && h.version != store_format_version_signing)
        return fail(Errc::store_corrupt, fmt::format("{} has format version {}; this build reads versions {} and {}", name, h.version,
                                                     store_format_version, store_format_version_signing));
    if (std::memcmp(h.key_id, state.key_id.data(), key_id_bytes) != 0)
        return fail(Errc::store_wrong_master_key,
                    fmt::format("{} was sealed under a different master key (key id {}, {} has key id {})", name,
                                to_hex(ByteView(h.key_id, key_id_bytes)), state.paths.master_key().string(), to_hex(state.key_id)));
    if (h.cipher_len < crypto_secretbox_MACBYTES || sealed.size() - header_bytes < h.cipher_len)
        return fail(Errc::store_truncated, fmt::format("{} is truncated: the header announces {} sealed bytes, {} are present", name,
                                                       h.cipher_len, sealed.size() - header_bytes));
    if (sealed.size() - header_bytes > h.cipher_len)
        return fail(Errc::store_tampered,
                    fmt::format("{} has {} unexpected bytes after the sealed contents", name, sealed.size() - header_bytes - h.cipher_len));
    return h;
}

// The sealed contents, authenticated and decrypted, their inner header checked against the clear one.
Outcome<SecureBuffer> unseal(const Bytes& sealed, const SealedHeader& h, const KeyStore::State& state, const std::string& name) {
    SecureBuffer plain(h.cipher_len - crypto_secretbox_MACBYTES + 1);
    if (crypto_secretbox_open_easy(plain.data(), sealed.data() + header_bytes, h.cipher_len, h.nonce, state.master.data()) != 0)
        return fail(Errc::store_tampered, fmt::format("{} failed authentication: the sealed contents were altered or damaged", name));
    plain.resize(h.cipher_len - crypto_secretbox_MACBYTES);

    Reader in{plain.data(), plain.size()};
    const auto inner_version = static_cast<std::uint16_t>(in.be(2));
    const std::uint8_t* inner_key_id = in.bytes(key_id_bytes);
    const std::uint64_t inner_generation = in.be(8);
    if (in.failed || inner_version != h.version || std::memcmp(inner_key_id, h.key_id, key_id_bytes) != 0 ||
        inner_generation != h.generation)
        return fail(Errc::store_tampered, fmt::format("{}: the clear header does not match the sealed one (altered header)", name));
    return plain;
}

// The key records; a record cut short leaves `in` failed for open() to report.
Status<Failure> read_key_records(Reader& in, KeyStore::State& state, const std::string& name) {
    const std::size_t key_count = in.be(2);
    if (key_count > max_keys)
        return fail(Errc::store_corrupt, fmt::format("{} claims {} keys, above the limit of {}", name, key_count, max_keys));
    for (std::size_t i = 0; i < key_count && !in.failed; ++i) {
        KeyEntry entry;
        entry.info.label = in.text();
        entry.info.version = in.u8();
        entry.info.type = static_cast<KeyType>(in.u8());
        entry.info.usage = static_cast<KeyUsage>(in.u8());
        entry.info.status = static_cast<KeyStatus>(in.u8());
        entry.info.created_unix_s = static_cast<std::int64_t>(in.be(8));
        entry.info.retired_unix_s = static_cast<std::int64_t>(in.be(8));
        const std::uint8_t* key = in.bytes(key_bytes);
        const std::uint8_t* kcv = in.bytes(3);
        if (in.failed) break;
        if (!valid_label(entry.info.label) || entry.info.version == 0 || key_type_name(entry.info.type).empty() ||
            key_usage_name(entry.info.usage).empty() || (entry.info.status != KeyStatus::active && entry.info.status != KeyStatus::retired))
            return fail(Errc::store_corrupt, fmt::format("{}: key record {} has an invalid field", name, i + 1));
        std::memcpy(entry.info.kcv.data(), kcv, 3);
        entry.offset = state.arena.append(key, key_bytes);
        // Pair assertion on read: the stored KCV must be the KCV of the stored key.
        if (compute_kcv(entry.info.type, state.key_at(entry.offset)) != entry.info.kcv)
            return fail(Errc::store_corrupt,
                        fmt::format("{}: key {}:{} does not match its stored KCV", name, entry.info.label, entry.info.version));
        state.keys.push_back(std::move(entry));
    }
    return Ok{};
}

Status<Failure> read_client_records(Reader& in, KeyStore::State& state, const std::string& name) {
    const std::size_t client_count = in.be(2);
    if (client_count > max_clients)
        return fail(Errc::store_corrupt, fmt::format("{} claims {} clients, above the limit of {}", name, client_count, max_clients));
    for (std::size_t i = 0; i < client_count && !in.failed; ++i) {
        ClientEntry entry;
        entry.info.id = in.text();
        entry.info.permissions = static_cast<std::uint32_t>(in.be(4));
        entry.info.created_unix_s = static_cast<std::int64_t>(in.be(8));
        const std::uint8_t* key = in.bytes(client_key_bytes);
        if (in.failed) break;
        if (!valid_client_id(entry.info.id) || (entry.info.permissions & ~permit_all) != 0)
            return fail(Errc::store_corrupt, fmt::format("{}: client record {} has an invalid field", name, i + 1));
        entry.offset = state.arena.append(key, client_key_bytes);
        state.clients.push_back(std::move(entry));
    }
    return Ok{};
}

// Signing keys (format version 2 only).
Status<Failure> read_signing_key_records(Reader& in, std::uint16_t version, KeyStore::State& state, const std::string& name) {
    const std::size_t signing_count = version == store_format_version_signing ? in.be(2) : 0;
    if (signing_count > max_signing_keys)
        return fail(Errc::store_corrupt,
                    fmt::format("{} claims {} signing keys, above the limit of {}", name, signing_count, max_signing_keys));
    for (std::size_t i = 0; i < signing_count && !in.failed; ++i) {
        SigningKeyEntry entry;
        entry.info.label = in.text();
        entry.info.created_unix_s = static_cast<std::int64_t>(in.be(8));
        entry.size = in.be(2);
        const std::uint8_t* key = entry.size <= max_signing_key_bytes ? in.bytes(entry.size) : nullptr;
        const std::size_t certificate_size = in.be(2);
        const std::uint8_t* certificate = certificate_size <= max_signing_certificate_bytes ? in.bytes(certificate_size) : nullptr;
        if (in.failed) break;
        if (!valid_label(entry.info.label) || key == nullptr || certificate == nullptr || entry.size == 0 || certificate_size == 0)
            return fail(Errc::store_corrupt, fmt::format("{}: signing key record {} has an invalid field", name, i + 1));
        entry.info.certificate_der.assign(certificate, certificate + certificate_size);
        entry.offset = state.arena.append(key, entry.size);
        state.signing_keys.push_back(std::move(entry));
    }
    return Ok{};
}

}  // namespace

Outcome<KeyStore> KeyStore::open(const std::filesystem::path& dir) {
    detail::ensure_sodium();
    StorePaths paths{dir};
    std::error_code ec;
    if (!std::filesystem::exists(paths.sealed(), ec))
        return fail(Errc::store_missing,
                    fmt::format("no key store at {} (run `coconut-hsmd init --store {}` first)", dir.string(), dir.string()));
    auto master = read_master_key(paths.master_key());
    if (!master) return Unexpected<Failure>{master.error()};

    auto file = detail::read_small_file(paths.sealed(), max_sealed_bytes);
    if (!file) return Unexpected<Failure>{file.error()};
    const Bytes& sealed = file.value();
    const std::string name = paths.sealed().string();

    auto state = std::make_unique<State>();
    state->paths = paths;
    state->master = std::move(master.value());
    state->derive_key_id();

    auto header = read_sealed_header(sealed, *state, name);
    if (!header) return Unexpected<Failure>{header.error()};
    auto plain = unseal(sealed, header.value(), *state, name);
    if (!plain) return Unexpected<Failure>{plain.error()};
    state->generation = header->generation;

    Reader in{plain->data(), plain->size(), inner_header_bytes};
    if (auto keys = read_key_records(in, *state, name); !keys) return Unexpected<Failure>{keys.error()};
    if (auto clients = read_client_records(in, *state, name); !clients) return Unexpected<Failure>{clients.error()};
    if (auto signing = read_signing_key_records(in, header->version, *state, name); !signing) return Unexpected<Failure>{signing.error()};
    if (in.failed || in.at != in.size)
        return fail(Errc::store_corrupt, fmt::format("{}: the sealed contents do not parse (bad record lengths)", name));
    COCONUT_ASSERT(state->keys.size() <= max_keys && state->clients.size() <= max_clients && state->signing_keys.size() <= max_signing_keys,
                   "opened key store within its limits");
    return KeyStore(std::move(state));
}

Status<Failure> KeyStore::save() {
    State& s = *state_;
    ++s.generation;
    SecureBuffer plain(256);
    SecureWriter out{plain};
    const std::uint16_t version = s.signing_keys.empty() ? store_format_version : store_format_version_signing;
    out.be(version, 2);
    out.bytes(s.key_id.data(), key_id_bytes);
    out.be(s.generation, 8);
    out.be(s.keys.size(), 2);
    for (const KeyEntry& e : s.keys) {
        out.text(e.info.label);
        out.u8(e.info.version);
        out.u8(static_cast<std::uint8_t>(e.info.type));
        out.u8(static_cast<std::uint8_t>(e.info.usage));
        out.u8(static_cast<std::uint8_t>(e.info.status));
        out.be(static_cast<std::uint64_t>(e.info.created_unix_s), 8);
        out.be(static_cast<std::uint64_t>(e.info.retired_unix_s), 8);
        out.bytes(s.arena.data() + e.offset, key_bytes);
        out.bytes(e.info.kcv.data(), 3);
    }
    out.be(s.clients.size(), 2);
    for (const ClientEntry& c : s.clients) {
        out.text(c.info.id);
        out.be(c.info.permissions, 4);
        out.be(static_cast<std::uint64_t>(c.info.created_unix_s), 8);
        out.bytes(s.arena.data() + c.offset, client_key_bytes);
    }
    if (version == store_format_version_signing) {
        out.be(s.signing_keys.size(), 2);
        for (const SigningKeyEntry& k : s.signing_keys) {
            out.text(k.info.label);
            out.be(static_cast<std::uint64_t>(k.info.created_unix_s), 8);
            out.be(k.size, 2);
            out.bytes(s.arena.data() + k.offset, k.size);
            out.be(k.info.certificate_der.size(), 2);
            out.bytes(k.info.certificate_der.data(), k.info.certificate_der.size());
        }
    }

    Bytes sealed;
    sealed.reserve(header_bytes + crypto_secretbox_MACBYTES + plain.size());
    append(sealed, store_magic);
    append_be(sealed, version, 2);
    append(sealed, s.key_id);
    append_be(sealed, s.generation, 8);
    std::array<std::uint8_t, crypto_secretbox_NONCEBYTES> nonce{};
    randombytes_buf(nonce.data(), nonce.size());
    append(sealed, nonce);
    append_be(sealed, crypto_secretbox_MACBYTES + plain.size(), 4);
    const std::size_t at = sealed.size();
    sealed.resize(at + crypto_secretbox_MACBYTES + plain.size());
    crypto_secretbox_easy(sealed.data() + at, plain.data(), plain.size(), nonce.data(), s.master.data());
    // open() reads back exactly this: the clear header, then the sealed contents to the end of the file.
    COCONUT_ASSERT(sealed.size() == header_bytes + crypto_secretbox_MACBYTES + plain.size() && sealed.size() <= max_sealed_bytes);
    return detail::replace_file_atomically(s.paths.sealed(), sealed);
}

std::vector<KeyInfo> KeyStore::list() const {
    std::vector<KeyInfo> out;
    out.reserve(state_->keys.size());
    for (const KeyEntry& e : state_->keys) out.push_back(e.info);
    return out;
}

Outcome<KeyInfo> KeyStore::find(const KeyRef& ref) const {
    const KeyEntry* best = nullptr;
    bool label_seen = false;
    for (const KeyEntry& e : state_->keys) {
        if (e.info.label != ref.label) continue;
        label_seen = true;
        if (ref.version == newest_version) {
            if (e.info.status == KeyStatus::active && (!best || e.info.version > best->info.version)) best = &e;
        } else if (e.info.version == ref.version) {
            best = &e;
        }
    }
    if (!best) {
        if (!label_seen) return fail(Errc::key_not_found, fmt::format("no key labelled '{}'", ref.label));
        if (ref.version == newest_version) return fail(Errc::key_retired, fmt::format("every version of key '{}' is retired", ref.label));
        return fail(Errc::key_not_found, fmt::format("key '{}' has no version {}", ref.label, ref.version));
    }
    if (best->info.status == KeyStatus::retired)
        return fail(Errc::key_retired, fmt::format("key {}:{} is retired", ref.label, ref.version));
    return best->info;
}

Outcome<KeyInfo> KeyStore::add_key(std::string_view label, std::uint8_t version, KeyType type, KeyUsage usage, const crypto::Key16& key) {
    if (!valid_label(label))
        return fail(Errc::bad_request, fmt::format("key label '{}' is not 1–{} characters of a-z 0-9 . _ -", label, max_label_chars));
    if (version == 0) return fail(Errc::bad_request, "key version must be 1–255 (0 means 'newest' in requests)");
    if (key_type_name(type).empty() || key_usage_name(usage).empty()) return fail(Errc::bad_request, "unknown key type or usage");
    if (state_->find_exact(label, version))
        return fail(Errc::key_exists, fmt::format("key {}:{} already exists; use a new version", label, version));
    if (state_->keys.size() >= max_keys) return fail(Errc::bad_request, fmt::format("the store holds the maximum of {} keys", max_keys));
    KeyEntry entry;
    entry.info.label = std::string(label);
    entry.info.version = version;
    entry.info.type = type;
    entry.info.usage = usage;
    entry.info.status = KeyStatus::active;
    entry.info.kcv = compute_kcv(type, key);
    entry.info.created_unix_s = now_unix_s();
    entry.offset = state_->arena.append(key.data(), key_bytes);
    auto& keys = state_->keys;
    const auto pos = std::lower_bound(keys.begin(), keys.end(), entry, [](const KeyEntry& a, const KeyEntry& b) {
        return std::tie(a.info.label, a.info.version) < std::tie(b.info.label, b.info.version);
    });
    const KeyInfo info = entry.info;
    keys.insert(pos, std::move(entry));
    return info;
}

Outcome<KeyInfo> KeyStore::retire_key(std::string_view label, std::uint8_t version) {
    for (KeyEntry& e : state_->keys) {
        if (e.info.label != label || e.info.version != version) continue;
        if (e.info.status == KeyStatus::retired)
            return fail(Errc::key_retired, fmt::format("key {}:{} is already retired", label, version));
        e.info.status = KeyStatus::retired;
        e.info.retired_unix_s = now_unix_s();
        return e.info;
    }
    return fail(Errc::key_not_found, fmt::format("no key {}:{}", label, version));
}

Outcome<crypto::Key16> KeyStore::key_material(const KeyRef& ref, KeyUsage usage) const {
    auto info = find(ref);
    if (!info) return Unexpected<Failure>{info.error()};
    if (info->usage != usage)
        return fail(Errc::wrong_key_usage, fmt::format("key {}:{} is a {} key; this operation needs a {} key", info->label, info->version,
                                                       key_usage_name(info->usage), key_usage_name(usage)));
    if (info->type != KeyType::tdes2)
        return fail(Errc::unsupported_key_type, fmt::format("key {}:{} is {}; the card profile uses 2-key 3DES only", info->label,
                                                            info->version, key_type_name(info->type)));
    return state_->key_at(state_->find_exact(info->label, info->version)->offset);
}

std::vector<ClientInfo> KeyStore::clients() const {
    std::vector<ClientInfo> out;
    for (const ClientEntry& c : state_->clients) out.push_back(c.info);
    return out;
}

std::optional<ClientInfo> KeyStore::client(std::string_view id) const {
    for (const ClientEntry& c : state_->clients)
        if (c.info.id == id) return c.info;
    return std::nullopt;
}

Outcome<ClientKey> KeyStore::add_client(std::string_view id, std::uint32_t permissions) {
    if (!valid_client_id(id))
        return fail(Errc::bad_request, fmt::format("client id '{}' is not 1–{} characters of a-z 0-9 . _ -", id, max_client_id_chars));
    if ((permissions & ~permit_all) != 0 || permissions == 0)
        return fail(Errc::bad_request, "a client needs at least one known permission");
    if (client(id)) return fail(Errc::client_exists, fmt::format("client '{}' already exists", id));
    if (state_->clients.size() >= max_clients)
        return fail(Errc::bad_request, fmt::format("the store holds the maximum of {} clients", max_clients));
    ClientKey key;
    randombytes_buf(key.data(), key.size());
    ClientEntry entry;
    entry.info = ClientInfo{std::string(id), permissions, now_unix_s()};
    entry.offset = state_->arena.append(key.data(), key.size());
    auto& clients = state_->clients;
    const auto pos = std::lower_bound(clients.begin(), clients.end(), entry,
                                      [](const ClientEntry& a, const ClientEntry& b) { return a.info.id < b.info.id; });
    clients.insert(pos, std::move(entry));
    return key;
}

Status<Failure> KeyStore::remove_client(std::string_view id) {
    auto& clients = state_->clients;
    for (auto it = clients.begin(); it != clients.end(); ++it) {
        if (it->info.id != id) continue;
        sodium_memzero(state_->arena.data() + it->offset, client_key_bytes);
        clients.erase(it);
        return Ok{};
    }
    return fail(Errc::client_not_found, fmt::format("no client '{}'", id));
}

std::optional<ClientKey> KeyStore::client_key(std::string_view id) const {
    for (const ClientEntry& c : state_->clients)
        if (c.info.id == id) return ClientKey(ByteView(state_->arena.data() + c.offset, client_key_bytes));
    return std::nullopt;
}

crypto::Secret<32> KeyStore::audit_key() const {
    crypto::Secret<32> key;
    crypto_kdf_derive_from_key(key.data(), key.size(), 1, kdf_context_audit, state_->master.data());
    return key;
}

// ---- signing keys ---------------------------------------------------------------------------------

std::optional<KeyStore::SigningKeyInfo> KeyStore::signing_key(std::string_view label) const {
    for (const SigningKeyEntry& k : state_->signing_keys)
        if (k.info.label == label) return k.info;
    return std::nullopt;
}

Status<Failure> KeyStore::add_signing_key(std::string_view label, ByteView private_key_der, Bytes certificate_der) {
    if (!valid_label(label))
        return fail(Errc::bad_request,
                    fmt::format("signing key label '{}' is not 1–{} characters of a-z 0-9 . _ -", label, max_label_chars));
    if (private_key_der.empty() || private_key_der.size() > max_signing_key_bytes)
        return fail(Errc::bad_request, fmt::format("a signing key is 1–{} bytes of PKCS#8 DER", max_signing_key_bytes));
    if (certificate_der.empty() || certificate_der.size() > max_signing_certificate_bytes)
        return fail(Errc::bad_request, fmt::format("a signing key's certificate is 1–{} bytes of DER", max_signing_certificate_bytes));
    if (signing_key(label)) return fail(Errc::key_exists, fmt::format("signing key '{}' already exists", label));
    if (state_->signing_keys.size() >= max_signing_keys)
        return fail(Errc::bad_request, fmt::format("the store holds the maximum of {} signing keys", max_signing_keys));
    SigningKeyEntry entry;
    entry.info = {std::string(label), now_unix_s(), std::move(certificate_der)};
    entry.size = private_key_der.size();
    entry.offset = state_->arena.append(private_key_der.data(), private_key_der.size());
    state_->signing_keys.push_back(std::move(entry));
    return Ok{};
}

Status<Failure> KeyStore::with_signing_key(std::string_view label, const std::function<void(ByteView)>& use) const {
    for (const SigningKeyEntry& k : state_->signing_keys) {
        if (k.info.label != label) continue;
        use(ByteView(state_->arena.data() + k.offset, k.size));
        return Ok{};
    }
    return fail(Errc::key_not_found, fmt::format("no signing key labelled '{}'", label));
}

// ---- ceremony -------------------------------------------------------------------------------------

Outcome<crypto::Key16> combine_key_components(std::span<const crypto::Key16> components) {
    if (components.size() < min_key_components || components.size() > max_key_components)
        return fail(Errc::bad_request, fmt::format("a key is imported from {} or {} components, not {}", min_key_components,
                                                   max_key_components, components.size()));
    crypto::Key16 key;
    for (const crypto::Key16& c : components)
        for (std::size_t i = 0; i < key_bytes; ++i) key.data()[i] ^= c.data()[i];
    const crypto::Key16 zero;
    if (key == zero) return fail(Errc::bad_request, "the components cancel out (their XOR is all zero): re-enter them");
    return key;
}

crypto::Key16 generate_key() {
    detail::ensure_sodium();
    crypto::Key16 key;
    randombytes_buf(key.data(), key.size());
    return key;
}

}  // namespace coconut::hsm
