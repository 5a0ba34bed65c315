// The issuer's HSM (docs/DESIGN.md §7): a key store sealed at rest, the key ceremony, and the card
// services of the docs/CARD-SPEC.md §4 profile — all without ever letting a master key out in clear.
//
//   coconut::hsm::KeyStore::init("/var/lib/coconut-hsm");              // once: master.key + keys.sealed + audit.log
//   auto store = coconut::hsm::KeyStore::open("/var/lib/coconut-hsm");  // refuses tampered / truncated / wrong-key stores
//   coconut::hsm::Hsm hsm(std::make_shared<const KeyStore>(std::move(store.value())));
//   auto verdicts = hsm.verify_purchase_tacs("mk-tac", batch);          // one Verdict per transaction
//
// Store directory (all files 0600, the directory 0700):
//   master.key   32 random bytes: the local master key (libsodium secretbox key). Kept apart from the
//                store so that a copy of keys.sealed alone reveals nothing.
//   keys.sealed  every key and client credential, sealed with crypto_secretbox (XSalsa20-Poly1305).
//   store.lock   flock(2) target: ceremony commands take it for their read-modify-write.
//   audit.log    the hash-chained audit log (audit.hpp).
//
// Key material is held only in libsodium guarded memory (sodium_malloc: mlocked, guard pages, wiped by
// sodium_free); temporaries are crypto::Secret values that wipe themselves when they go out of scope.
// Keys cross the process boundary only encrypted under a transport key (Hsm services). Inside the
// process, KeyStore::key_material (for the services) and KeyStore::client_key (for the link) hand out
// short-lived Secret copies; nothing prints or logs them.
//
// Errors: every expected failure is a Failure{code, message}; the message names the file, the key or
// the field and says what is wrong. Exceptions only for programmer errors and a broken libsodium/OpenSSL.
#pragma once

#include <coconut/core/identifiers.hpp>
#include <coconut/core/bytes.hpp>
#include <coconut/crypto/card_crypto.hpp>
#include <coconut/core/result.hpp>

#include <array>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace coconut::hsm {

// ---- errors -----------------------------------------------------------------------------------

// One code space for the library, the wire (a response carries the code as one byte) and the CLIs.
// Values are part of the protocol (PROTOCOL.md): never renumber.
enum class Errc : std::uint8_t {
    ok = 0,
    // request-level (the connection stays open)
    bad_request = 1,           // a field is malformed: length, range, BCD, transaction type
    batch_too_large = 2,       // more items than max_batch_items
    key_not_found = 3,         // no key with that label / version
    key_retired = 4,           // the version exists but was retired
    wrong_key_usage = 5,       // e.g. a transport key named where a TAC master key is needed
    unsupported_key_type = 6,  // SM4 keys exist in the store but no service of this profile uses them
    key_exists = 7,            // ceremony: label + version already present
    not_permitted = 8,         // the client's permissions do not include this command
    client_exists = 9,
    client_not_found = 10,
    // store and files
    store_missing = 20,
    store_exists = 21,
    store_truncated = 22,
    store_tampered = 23,
    store_wrong_master_key = 24,
    store_corrupt = 25,    // authentic but inconsistent (a KCV that does not match its key: a bug)
    master_key_file = 26,  // missing, wrong size or permissions wider than 0600
    io_error = 27,
    store_busy = 28,    // another ceremony holds store.lock
    store_forked = 29,  // a copy of the store was changed by a ceremony of its own (replicate_store)
    // audit
    audit_broken = 30,
    // link (client side and connection-closing reasons on the server side)
    connection_failed = 40,
    timeout = 41,
    protocol_error = 42,  // a frame that does not parse
    frame_too_large = 43,
    bad_mac = 44,
    replayed_sequence = 45,
    unknown_command = 46,
    unknown_client = 47,
    closed = 48,              // the peer closed the connection
    server_busy = 49,         // connection limit reached
    client_credentials = 50,  // the client key file is missing, malformed or too open
};

// Stable lower-case name of a code ("bad_mac"), for logs, JSON and the audit log.
std::string_view errc_name(Errc code);

struct Failure {
    Errc code = Errc::ok;
    std::string message;  // specific, human-readable; never contains key material
};

template <class T>
using Outcome = Result<T, Failure>;

inline Unexpected<Failure> fail(Errc code, std::string message) { return Unexpected<Failure>{{code, std::move(message)}}; }

// ---- keys -------------------------------------------------------------------------------------

enum class KeyType : std::uint8_t { tdes2 = 1, sm4 = 2 };
enum class KeyUsage : std::uint8_t {
    purchase = 1,       // DPK master (and the issuer key exported to PSAMs)
    load = 2,           // DLK master
    tac = 3,            // DTK master
    internal_auth = 4,  // the purse's IAK master (its INTERNAL AUTHENTICATE answers without a PIN)
    maintenance = 5,    // DAMK master
    transport = 6,      // KEK: exports are encrypted under it, it never derives anything
    ssse_auth = 7,      // the SSSE application's IAK master: answered only after VERIFY, so the one key
                        // whose cryptogram proves a medical payment's card presence with the holder
};
enum class KeyStatus : std::uint8_t { active = 1, retired = 2 };

std::string_view key_type_name(KeyType type);  // "tdes2", "sm4"
// "purchase", "load", "tac", "internal-auth", "maintenance", "transport", "ssse-auth"
std::string_view key_usage_name(KeyUsage usage);
std::optional<KeyType> parse_key_type(std::string_view name);
std::optional<KeyUsage> parse_key_usage(std::string_view name);

// Labels: 1..max_label_chars of [a-z0-9._-]; they travel in one length byte and appear in the audit log.
inline constexpr std::size_t max_label_chars = 32;
bool valid_label(std::string_view label);

// A key is addressed by label + version. Versions are 1..255 because the card reports its key version
// in one byte (docs/CARD-SPEC.md §2, INITIALIZE FOR LOAD/PURCHASE). Version 0 in a KeyRef means "the newest
// active version of this label".
inline constexpr std::uint8_t newest_version = 0;
struct KeyRef {
    std::string label;
    std::uint8_t version = newest_version;
};
std::string to_string(const KeyRef& ref);  // "mk-tac:1", "mk-tac:newest"
// Parses "label" or "label:version".
std::optional<KeyRef> parse_key_ref(std::string_view text);

struct KeyInfo {
    std::string label;
    std::uint8_t version = 0;
    KeyType type = KeyType::tdes2;
    KeyUsage usage = KeyUsage::purchase;
    KeyStatus status = KeyStatus::active;
    crypto::Kcv kcv{};  // first 3 bytes of 3DES(key, 0^8)
    std::int64_t created_unix_s = 0;
    std::int64_t retired_unix_s = 0;  // 0 while active
};

// The conventional labels of the scheme's master keys; requests always name keys explicitly, these are
// only the CLI defaults.
inline constexpr std::string_view default_purchase_label = "mk-purchase";
inline constexpr std::string_view default_load_label = "mk-load";
inline constexpr std::string_view default_tac_label = "mk-tac";
inline constexpr std::string_view default_internal_auth_label = "mk-internal-auth";
inline constexpr std::string_view default_maintenance_label = "mk-maintenance";
inline constexpr std::string_view default_ssse_auth_label = "mk-ssse-auth";
inline constexpr std::string_view default_transport_label = "kek-issuance";

// ---- clients ----------------------------------------------------------------------------------

// What a client may ask for; a client is created with a set of these.
enum Permission : std::uint32_t {
    permit_key_info = 1u << 0,     // key_info (KCV lookups)
    permit_issuance = 1u << 1,     // derive_card_keys, export_issuer_key
    permit_tac = 1u << 2,          // verify_purchase_tacs, verify_load_tac
    permit_load = 1u << 3,         // load_mac2
    permit_auth = 1u << 4,         // verify_internal_auth
    permit_ca = 1u << 5,           // sign_certificate, ca_certificate (the island CA, ca.hpp)
    permit_maintenance = 1u << 6,  // maintenance_mac (APPLICATION BLOCK / UNBLOCK of a card)
    permit_all = permit_key_info | permit_issuance | permit_tac | permit_load | permit_auth | permit_ca | permit_maintenance,
};
// "key-info,issuance,tac,load,auth,ca,maintenance" ↔ bits; "all" accepted on input.
std::string permissions_to_string(std::uint32_t permissions);
std::optional<std::uint32_t> parse_permissions(std::string_view text);

// Client ids: 1..max_client_id_chars of [a-z0-9._-] (one length byte on the wire, audit-log safe).
inline constexpr std::size_t max_client_id_chars = 32;
bool valid_client_id(std::string_view id);

// Per-client link key: libsodium crypto_auth (HMAC-SHA-512-256) key.
inline constexpr std::size_t client_key_bytes = 32;
using ClientKey = crypto::Secret<client_key_bytes>;

struct ClientInfo {
    std::string id;
    std::uint32_t permissions = 0;
    std::int64_t created_unix_s = 0;
};

// ---- the key store ----------------------------------------------------------------------------

// Limits of the sealed store: a scheme has a handful of master keys per generation; 4096 keys and
// 1024 clients leave two orders of magnitude of room while bounding what a corrupt count can ask for.
inline constexpr std::size_t max_keys = 4096;
inline constexpr std::size_t max_clients = 1024;
// An island has one CA key per generation: 16 leaves room for rollovers. A P-256 key in PKCS#8 is
// ~140 bytes and its certificate ~600: the byte limits bound what a corrupt length can ask for.
inline constexpr std::size_t max_signing_keys = 16;
inline constexpr std::size_t max_signing_key_bytes = 512;
inline constexpr std::size_t max_signing_certificate_bytes = 4096;
inline constexpr std::size_t master_key_bytes = 32;  // crypto_secretbox_KEYBYTES
// A full store (max_keys × 73 B + max_clients × 77 B + headers) is ~380 KiB; 1 MiB bounds what a
// corrupt length field can make us read.
inline constexpr std::size_t max_sealed_bytes = 1u << 20;

struct StorePaths {
    std::filesystem::path dir;
    std::filesystem::path master_key() const { return dir / "master.key"; }
    std::filesystem::path sealed() const { return dir / "keys.sealed"; }
    std::filesystem::path lock() const { return dir / "store.lock"; }
    std::filesystem::path audit_log() const { return dir / "audit.log"; }
};

// Exclusive flock on store.lock for a ceremony's read-modify-write; released on destruction.
class StoreLock {
public:
    static Outcome<StoreLock> acquire(const StorePaths& paths);
    StoreLock(StoreLock&& other) noexcept;
    StoreLock& operator=(StoreLock&&) = delete;
    ~StoreLock();

private:
    explicit StoreLock(int fd) : fd_(fd) {}
    int fd_ = -1;
};

class KeyStore {
public:
    // Creates `dir` (0700) with a fresh local master key (0600), an empty sealed store and an audit log
    // whose first line records the initialisation. Refuses an existing store or a non-empty directory
    // (store_exists).
    static Status<Failure> init(const std::filesystem::path& dir);

    // Reads master.key and keys.sealed. Failures, each with the file named:
    //   store_missing, master_key_file (missing, not 32 bytes, mode wider than 0600),
    //   store_truncated (shorter than its header says), store_wrong_master_key (sealed under another
    //   master key: the header's key id differs), store_tampered (authentication failed or the header
    //   was altered), store_corrupt (authentic but inconsistent: a KCV mismatch, a bad count).
    static Outcome<KeyStore> open(const std::filesystem::path& dir);

    KeyStore(KeyStore&&) noexcept;
    KeyStore& operator=(KeyStore&&) noexcept;
    ~KeyStore();

    const StorePaths& paths() const;
    std::uint64_t generation() const;  // incremented by every save()

    // Seals the current contents (fresh nonce) and replaces keys.sealed atomically (write, fsync, rename,
    // fsync dir). Ceremony callers hold a StoreLock across open → change → save.
    Status<Failure> save();

    // ---- keys ----
    std::vector<KeyInfo> list() const;  // sorted by label, then version
    // Resolves version 0 to the newest active version. key_not_found / key_retired.
    Outcome<KeyInfo> find(const KeyRef& ref) const;
    // Adds a key (ceremony). key_exists, bad_request (label, version 0, wrong length), store limits.
    Outcome<KeyInfo> add_key(std::string_view label, std::uint8_t version, KeyType type, KeyUsage usage, const crypto::Key16& key);
    Outcome<KeyInfo> retire_key(std::string_view label, std::uint8_t version);
    // A copy of an active key's material for one computation, checked for usage and type
    // (key_not_found, key_retired, wrong_key_usage, unsupported_key_type).
    Outcome<crypto::Key16> key_material(const KeyRef& ref, KeyUsage usage) const;

    // ---- clients ----
    std::vector<ClientInfo> clients() const;
    std::optional<ClientInfo> client(std::string_view id) const;
    // Registers a client with a fresh random link key, returned once so it can be written to the
    // client's key file. client_exists, bad_request.
    Outcome<ClientKey> add_client(std::string_view id, std::uint32_t permissions);
    Status<Failure> remove_client(std::string_view id);
    // The link key of a registered client (the daemon authenticates requests with it).
    std::optional<ClientKey> client_key(std::string_view id) const;

    // Key for the audit log's keyed hash chain, derived from the local master key (crypto_kdf), so the
    // chain cannot be recomputed by someone who can edit audit.log but cannot read master.key.
    crypto::Secret<32> audit_key() const;

    // ---- signing keys (the island CA's EC key, ca.hpp) ----
    // Private keys other than 3DES/SM4 keys, sealed with them: PKCS#8 DER (≤ max_signing_key_bytes) with
    // the certificate (DER, ≤ max_signing_certificate_bytes) that names the key. They never leave the
    // process: a service uses one through with_signing_key().
    struct SigningKeyInfo {
        std::string label;
        std::int64_t created_unix_s = 0;
        Bytes certificate_der;
    };
    std::optional<SigningKeyInfo> signing_key(std::string_view label) const;
    // key_exists when the label is taken; bad_request for a label, a size or the store's limit.
    Status<Failure> add_signing_key(std::string_view label, ByteView private_key_der, Bytes certificate_der);
    // Calls `use` with the key's PKCS#8 DER in guarded memory (no copy is made). key_not_found.
    Status<Failure> with_signing_key(std::string_view label, const std::function<void(ByteView private_key_der)>& use) const;

    struct State;

private:
    explicit KeyStore(std::unique_ptr<State> state);
    std::unique_ptr<State> state_;
};

// ---- a copy of the store for a second HSM (hsm-stub/README.md "Two HSMs") --------------------------

struct Replication {
    enum class Kind : std::uint8_t { created, updated, current };
    Kind kind = Kind::created;
    std::uint64_t generation = 0;           // the source's store generation, now the copy's
    std::uint64_t previous_generation = 0;  // the copy's before an update
};
std::string_view replication_kind_name(Replication::Kind kind);  // "created", "updated", "current"

// Copies `from`'s master.key and keys.sealed byte for byte to `to` (the copy stays sealed under the
// same master key), holding both stores' ceremony locks (StoreLock) and having opened `from` (so a
// tampered store is never copied):
//   - `to` missing or an empty directory: a new copy — directory 0700, files 0600; no audit log (the
//     caller starts the copy's own, so the two logs never share a chain);
//   - `to` a copy of `from` at an older generation: its keys.sealed is replaced atomically (a daemon
//     serving it picks the change up on SIGHUP);
//   - `to` at `from`'s generation with the same bytes: nothing to do (Kind::current).
// Refused: `to` is `from`, or holds anything but a copy of it — another store (another master key)
// or other files (store_exists); `to` at a newer generation than `from`, or at the same with other
// contents: a ceremony was held on the copy and the stores forked (store_forked). Ceremonies are held
// on one store, and copied from it.
Outcome<Replication> replicate_store(const std::filesystem::path& from, const std::filesystem::path& to);

// ---- key ceremony -----------------------------------------------------------------------------

// Key components: a key is imported as the XOR of 2 or 3 components held by different custodians.
inline constexpr std::size_t min_key_components = 2;
inline constexpr std::size_t max_key_components = 3;
// XOR of the components. bad_request if the count is outside 2..3 or the result is all zero (the
// components cancel out — a typing error or a custodian repeating another's component).
Outcome<crypto::Key16> combine_key_components(std::span<const crypto::Key16> components);
// A random 2-key 3DES key from libsodium's CSPRNG.
crypto::Key16 generate_key();

// ---- card services (docs/CARD-SPEC.md §4 profile, two-level diversification issuer → card) ---------------

using coconut::Asn;  // coconut/core/identifiers.hpp
using coconut::IssuerId;
using coconut::TerminalId;

struct CardIdentity {
    IssuerId issuer_id{};
    Asn asn{};
};

// One derived card key, exported: 3DES-ECB (2-key) of the 16 key bytes under the transport key.
struct ExportedKey {
    KeyUsage usage = KeyUsage::purchase;
    KeyRef master;      // version resolved
    crypto::Kcv kcv{};  // of the key in clear (the card personalizer checks it)
    std::array<std::uint8_t, 16> encrypted{};
};

struct CardKeySet {
    KeyRef transport;  // version resolved
    crypto::Kcv transport_kcv{};
    std::vector<ExportedKey> keys;
};

// Card key names by master usage: DPK (purchase), DLK (load), DTK (tac), IAK (internal-auth), DAMK (maintenance),
// SSSE_IAK (ssse-auth); in lower case, the key's name in a card profile (card-os-apdu/IMAGE-FORMAT.md).
std::string_view card_key_name(KeyUsage usage);

// One purchase TAC to verify (docs/CARD-SPEC.md §4: TAC over amount ‖ type ‖ terminal id ‖ terminal serial ‖ date ‖ time).
struct PurchaseTac {
    std::uint8_t key_version = newest_version;  // version of the TAC master key; 0 = newest active
    CardIdentity card;
    std::uint32_t amount_fen = 0;
    std::uint8_t type = crypto::type_ep_purchase;  // 05, 06 or 09
    TerminalId terminal_id{};
    std::uint32_t terminal_serial = 0;
    crypto::CardDateTime when;
    crypto::Mac4 tac{};
};

enum class Verdict : std::uint8_t {
    valid = 0,
    invalid = 1,          // the MAC / TAC / cryptogram does not match
    key_unavailable = 2,  // batch item only: its key version is unknown, retired or of the wrong kind
    malformed = 3,        // batch item only: type not a purchase type, ASN / date / time not BCD
};
std::string_view verdict_name(Verdict verdict);

// Limit of a TAC batch: 1024 items × 45 bytes = 46 KiB fits one frame with room to spare, and one batch
// takes ~3 ms to verify, short enough that other clients sharing the I/O thread barely notice.
inline constexpr std::size_t max_batch_items = 1024;

struct LoadTac {
    KeyRef key;  // TAC master
    CardIdentity card;
    std::uint32_t new_balance_fen = 0;
    std::uint16_t online_atc_before = 0;
    std::uint32_t amount_fen = 0;
    std::uint8_t type = crypto::type_ep_load;  // 01 or 02
    TerminalId terminal_id{};
    crypto::CardDateTime when;
    crypto::Mac4 tac{};
};

// The host side of a load: the card's INITIALIZE FOR LOAD answer plus the terminal's data.
struct LoadRequest {
    KeyRef key;  // load master
    CardIdentity card;
    std::uint32_t old_balance_fen = 0;
    std::uint32_t amount_fen = 0;
    std::uint8_t type = crypto::type_ep_load;
    TerminalId terminal_id{};
    std::uint16_t online_atc = 0;
    std::array<std::uint8_t, 4> card_random{};
    crypto::Mac4 mac1{};
    crypto::CardDateTime when;  // the date/time CREDIT FOR LOAD will carry
};

struct LoadAnswer {
    Verdict mac1 = Verdict::invalid;  // valid → mac2 is set
    crypto::Mac4 mac2{};
    std::uint8_t key_version = 0;  // resolved version of the load master
};

struct InternalAuth {
    KeyRef key;  // a master of usage internal-auth (the purse's IAK) or ssse-auth (the SSSE application's)
    CardIdentity card;
    std::array<std::uint8_t, 8> challenge{};
    std::array<std::uint8_t, 8> cryptogram{};  // the card's 3DES(IAK, challenge)
};

// The MAC of a card maintenance command (docs/CARD-SPEC.md §2 "Application block"): APPLICATION BLOCK
// `84 1E 00 00|01 04` or APPLICATION UNBLOCK `84 18 00 00 04`, after the card's GET CHALLENGE (4 bytes).
struct MaintenanceMacRequest {
    KeyRef key;  // a master of usage maintenance (the cards' DAMK master)
    CardIdentity card;
    crypto::Challenge4 challenge{};
    crypto::MaintenanceHeader header{};
};
struct MaintenanceMac {
    crypto::Mac4 mac{};
    std::uint8_t key_version = 0;  // resolved version of the maintenance master
};

// What one service call used and answered, for the audit log.
struct Usage {
    std::string key_label;
    std::vector<std::uint8_t> key_versions;  // distinct versions used
    std::string result;                      // "valid", "invalid", "valid=1020 invalid=4", "issued 5 keys"
};

// The services over one loaded store. Thread-safe: the store is immutable once shared.
class Hsm {
public:
    explicit Hsm(std::shared_ptr<const KeyStore> store);

    const KeyStore& store() const { return *store_; }

    Outcome<KeyInfo> key_info(const KeyRef& ref, Usage* usage = nullptr) const;

    // Derives the card's keys from each master (Div(Div(master, issuer id), card factor)) and returns
    // them encrypted under `transport` (usage transport), each with its KCV. At most one master per usage.
    Outcome<CardKeySet> derive_card_keys(const CardIdentity& card, const KeyRef& transport, std::span<const KeyRef> masters,
                                         Usage* usage = nullptr) const;

    // The issuer-level purchase key Div(purchase master, issuer id) under `transport`, for PSAM
    // personalization (docs/CARD-SPEC.md §5: the PSAM applies the card factor itself).
    Outcome<ExportedKey> export_issuer_key(const IssuerId& issuer_id, const KeyRef& purchase_master, const KeyRef& transport,
                                           Usage* usage = nullptr) const;

    // One verdict per item, in order. Whole-batch failures: label unknown / not a TAC key, batch too large.
    Outcome<std::vector<Verdict>> verify_purchase_tacs(std::string_view tac_master_label, std::span<const PurchaseTac> batch,
                                                       Usage* usage = nullptr) const;

    Outcome<Verdict> verify_load_tac(const LoadTac& load, Usage* usage = nullptr) const;

    // Verifies the card's load MAC1 and, only if it is valid, computes MAC2 (docs/CARD-SPEC.md §4).
    Outcome<LoadAnswer> load_mac2(const LoadRequest& load, Usage* usage = nullptr) const;

    // Valid when the cryptogram is 3DES(card key, challenge), the card key derived from `auth.key`, a master
    // of usage internal-auth or ssse-auth (any other usage: wrong_key_usage). Which of the two a proof needs
    // is the caller's rule: a medical payment accepts only ssse-auth (PROTOCOL.md).
    Outcome<Verdict> verify_internal_auth(const InternalAuth& auth, Usage* usage = nullptr) const;

    // The card's DAMK derived from `request.key` (usage maintenance; any other: wrong_key_usage), then
    // crypto::maintenance_mac over the header and challenge. bad_request for a header that is not a
    // maintenance command the card knows (crypto::is_maintenance_header) or an ASN that is not BCD.
    Outcome<MaintenanceMac> maintenance_mac(const MaintenanceMacRequest& request, Usage* usage = nullptr) const;

private:
    std::shared_ptr<const KeyStore> store_;
};

// The computations that follow diversification, on a card-level key (DTK, DLK, IAK). Hsm's services
// are "derive the card key from the master, then call one of these"; they are public so the docs/CARD-SPEC.md §4
// vectors (given as card keys) test exactly the code the services run. Inputs are assumed validated.
namespace card_level {
Verdict check_purchase_tac(const crypto::Key16& dtk, const PurchaseTac& transaction);
Verdict check_load_tac(const crypto::Key16& dtk, const LoadTac& load);
// MAC1 verdict and, when valid, MAC2 (key_version left 0).
LoadAnswer answer_load(const crypto::Key16& dlk, const LoadRequest& load);
Verdict check_internal_auth(const crypto::Key16& iak, const InternalAuth& auth);
}  // namespace card_level

// ---- input helpers (CLI, tests) -----------------------------------------------------------------

// "0000000000012345678"-style 20-digit ASN → BCD. bad_request names the problem.
Outcome<Asn> parse_asn(std::string_view digits);
// 16 hex digits → issuer id.
Outcome<IssuerId> parse_issuer_id(std::string_view hex_text);
// 12 digits → terminal id (BCD).
Outcome<TerminalId> parse_terminal_id(std::string_view digits);
// "YYYYMMDD" and "hhmmss" → card date/time (BCD), checked for calendar ranges.
Outcome<crypto::CardDateTime> parse_card_date_time(std::string_view date8, std::string_view time6);
// Valid BCD calendar date/time (month 1–12, day 1–31, hour < 24, minute/second < 60).
bool valid_card_date_time(const crypto::CardDateTime& when);

}  // namespace coconut::hsm
