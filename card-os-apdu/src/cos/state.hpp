// Internal: the card's non-volatile state (what an image holds) and its volatile state (what a power cut
// forgets). Not a public header; the public API is coconut/cos/card.hpp.
#pragma once

#include <coconut/cos/card.hpp>
#include <coconut/cos/layout.hpp>
#include <coconut/crypto/card_crypto.hpp>

#include <array>
#include <cstdint>
#include <optional>
#include <vector>

namespace coconut::cos {

// ---- non-volatile ------------------------------------------------------------------------------

enum class EfType : std::uint8_t {
    transparent = 1,
    linear_fixed = 2,
    cyclic = 3,       // record 1 = newest; a new record pushes the oldest out
    tlv_records = 4,  // linear variable records, each a TLV addressed by its tag (SSSE)
};

// Access condition of one operation on an EF (ISO 7816-4 security attributes, simplified).
enum class Access : std::uint8_t {
    always = 0,
    never = 1,          // only the card OS itself (transactions) writes
    pin = 2,            // after a successful VERIFY
    external_auth = 3,  // after EXTERNAL AUTHENTICATE with the maintenance key
};

struct Ef {
    std::uint16_t fid = 0;
    std::uint8_t sfi = 0;
    EfType type = EfType::transparent;
    Access read = Access::always;
    Access write = Access::never;
    std::uint16_t record_size = 0;   // linear/cyclic
    std::uint16_t record_count = 0;  // capacity of linear/cyclic
    Bytes data;                      // transparent
    std::vector<Bytes> records;      // record 1 first
};

enum class DfRole : std::uint8_t { mf = 0, purse = 1, ssse = 2, medical = 3, psam = 4 };

struct Df {
    std::uint16_t fid = 0;
    Bytes aid;  // empty for the MF and DF04
    DfRole role = DfRole::mf;
    std::int8_t parent = -1;  // index in CardState::dfs
    std::vector<Ef> efs;
};

enum class KeyUsage : std::uint8_t {
    purchase = 1,
    load = 2,
    tac = 3,
    internal_auth = 4,  // the purse's IAK: INTERNAL AUTHENTICATE in the purse ADF, without a PIN
    maintenance = 5,
    // The SSSE application's own INTERNAL AUTHENTICATE key, answered only after VERIFY: a medical payment's
    // card-presence proof must come from a key the purse cannot use (card-os-apdu/README.md).
    ssse_auth = 6,
};

// Consecutive failures a key tolerates (EXTERNAL AUTHENTICATE) before it blocks.
inline constexpr std::uint8_t key_tries_max = 3;

struct KeyEntry {
    KeyUsage usage = KeyUsage::purchase;
    std::uint8_t index = default_key_index;
    std::uint8_t version = 1;
    std::uint8_t alg = alg_3des;
    std::uint8_t tries_left = key_tries_max;
    crypto::Key16 value;
};

// What GET TRANSACTION PROVE answers for the most recent completed transaction of one type.
struct Proof {
    bool valid = false;
    std::uint16_t atc = 0;  // the ATC INITIALIZE reported (the one in the session key)
    crypto::Mac4 mac2{};
    crypto::Mac4 tac{};
};

// APPLICATION BLOCK (docs/CARD-SPEC.md §2): a temporary block is lifted by APPLICATION UNBLOCK, a
// permanent one never.
enum class ApplicationBlock : std::uint8_t { none = 0, temporary = 1, permanent = 2 };

struct PurseState {
    std::uint32_t balance_fen = 0;
    std::uint32_t max_balance_fen = 100000;  // Profile default (docs/CARD-SPEC.md §2)
    std::uint32_t overdraft_limit_fen = 0;
    std::uint16_t online_atc = 0;
    std::uint16_t offline_atc = 0;
    std::uint8_t mac_failures = 0;
    bool locked = false;
    ApplicationBlock block = ApplicationBlock::none;
    Proof load_proof;      // type 02
    Proof purchase_proof;  // type 06
    Proof capp_proof;      // type 09
};

struct PinState {
    Bytes bcd;  // 2..6 bytes
    std::uint8_t tries_left = 3;
    std::uint8_t tries_max = 3;
};

struct PsamState {
    std::array<std::uint8_t, 6> terminal_id{};
    std::uint8_t key_index = default_key_index;
    std::uint8_t key_version = 1;
    bool key_is_master = false;  // false: issuer-level key (one diversification left, docs/CARD-SPEC.md §5 profile)
    std::array<std::uint8_t, 8> issuer_id{};
    crypto::Key16 purchase_key;
    std::uint32_t next_serial = 1;
};

struct CardState {
    ImageKind kind = ImageKind::card;
    Protocol protocol = Protocol::t1;
    std::vector<Df> dfs;  // dfs[0] = MF
    std::vector<KeyEntry> keys;
    PinState pin;
    PurseState purse;
    PsamState psam;
    std::array<std::uint8_t, 32> drbg_seed{};
    std::uint64_t drbg_reserved = 0;  // DRBG counter values below this are spent or reserved
};

Bytes encode_state(const CardState& state);
// ImageError::corrupt if the payload does not decode or lacks what the applications index without checks;
// ImageError::missing_key for a card without its SSSE INTERNAL AUTHENTICATE key (KeyUsage::ssse_auth).
Result<CardState, ImageFailure> decode_state(ByteView payload);

// ---- volatile ------------------------------------------------------------------------------------

// A card transaction between INITIALIZE and its completion.
struct PendingTransaction {
    enum class Kind : std::uint8_t { none, load, purchase, capp } kind = Kind::none;
    std::uint32_t amount_fen = 0;
    std::array<std::uint8_t, 6> terminal_id{};
    std::array<std::uint8_t, 4> random{};
    std::uint16_t atc = 0;  // the ATC INITIALIZE reported
    std::uint8_t key_index = 0;
    crypto::Key8 load_session_key;  // load: ready at INIT; purchase: needs the terminal serial (DEBIT)
    struct CacheUpdate {
        std::uint8_t sfi = 0;
        std::uint8_t record_id = 0;
        Bytes data;
    };
    std::vector<CacheUpdate> capp_updates;
};

// UPDATE CAPP DATA CACHE commands one CAPP purchase may stage (one EF1A record + one trip-log entry, with room).
inline constexpr std::size_t capp_updates_max = 4;

struct PsamSession {
    bool active = false;
    crypto::Key8 session_key;
    std::uint32_t amount_fen = 0;
};

struct VolatileState {
    int current_df = 0;
    int current_ef = -1;  // index into the current DF's efs
    bool pin_verified = false;
    bool external_authenticated = false;
    std::optional<Bytes> challenge;
    PendingTransaction pending;
    PsamSession psam_session;
    Bytes t0_response;  // T=0: data waiting for GET RESPONSE
    std::uint64_t drbg_counter = 0;
};

}  // namespace coconut::cos
