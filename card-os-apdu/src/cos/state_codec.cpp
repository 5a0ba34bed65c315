// Binary encoding of CardState (the image payload). Layout documented in IMAGE-FORMAT.md; every
// integer big-endian, every variable-length field prefixed with its u16 length.
#include "state.hpp"

#include <coconut/core/assert.hpp>

#include <algorithm>

namespace coconut::cos {
namespace {

// Payload layout version (inside a slot; the file format version is separate). Version 2 adds the purse's
// application block byte; version 1 payloads (written before it) decode with no block.
constexpr std::uint8_t payload_version = 2;
constexpr std::uint8_t payload_version_without_block = 1;
// Bounds that a decoded image must respect (a corrupt length must not allocate gigabytes).
constexpr std::size_t dfs_max = 16;
constexpr std::size_t efs_per_df_max = 32;
constexpr std::size_t records_per_ef_max = 255;
constexpr std::size_t keys_max = 32;

class Writer {
public:
    void u8(std::uint8_t v) { out_.push_back(v); }
    void u16(std::uint16_t v) { append_be(out_, v, 2); }
    void u32(std::uint32_t v) { append_be(out_, v, 4); }
    void u64(std::uint64_t v) { append_be(out_, v, 8); }
    void boolean(bool v) { u8(v ? 1 : 0); }
    void bytes(ByteView b) {
        COCONUT_ASSERT(b.size() <= 0xFFFF, "a length-prefixed field fits its u16 length");
        u16(static_cast<std::uint16_t>(b.size()));
        append(out_, b);
    }
    void fixed(ByteView b) { append(out_, b); }
    Bytes take() { return std::move(out_); }

private:
    Bytes out_;
};

class Reader {
public:
    explicit Reader(ByteView in) : in_(in) {}
    bool failed() const { return failed_; }
    bool at_end() const { return pos_ == in_.size(); }

    std::uint64_t be(std::size_t width) {
        if (!need(width)) return 0;
        const auto v = read_be(in_.subspan(pos_, width));
        pos_ += width;
        return v;
    }
    std::uint8_t u8() { return static_cast<std::uint8_t>(be(1)); }
    std::uint16_t u16() { return static_cast<std::uint16_t>(be(2)); }
    std::uint32_t u32() { return static_cast<std::uint32_t>(be(4)); }
    std::uint64_t u64() { return be(8); }
    bool boolean() {
        const auto v = u8();
        if (v > 1) failed_ = true;
        return v == 1;
    }
    Bytes bytes() {
        const std::size_t length = u16();
        return take(length);
    }
    template <std::size_t N>
    void fixed(std::array<std::uint8_t, N>& out) {
        const Bytes b = take(N);
        if (!failed_) std::copy(b.begin(), b.end(), out.begin());
    }
    template <std::size_t N>
    void secret(crypto::Secret<N>& out) {
        Bytes b = take(N);
        if (!failed_) out.assign(b);
        secure_wipe(b.data(), b.size());
    }
    // A count that must not exceed `limit`.
    std::size_t count(std::size_t limit) {
        const std::size_t n = u16();
        if (n > limit) failed_ = true;
        return failed_ ? 0 : n;
    }

private:
    bool need(std::size_t n) {
        if (failed_ || in_.size() - pos_ < n) {
            failed_ = true;
            return false;
        }
        return true;
    }
    Bytes take(std::size_t n) {
        if (!need(n)) return {};
        Bytes out(in_.begin() + static_cast<std::ptrdiff_t>(pos_), in_.begin() + static_cast<std::ptrdiff_t>(pos_ + n));
        pos_ += n;
        return out;
    }
    ByteView in_;
    std::size_t pos_ = 0;
    bool failed_ = false;
};

void write_proof(Writer& w, const Proof& p) {
    w.boolean(p.valid);
    w.u16(p.atc);
    w.fixed(p.mac2);
    w.fixed(p.tac);
}

Proof read_proof(Reader& r) {
    Proof p;
    p.valid = r.boolean();
    p.atc = r.u16();
    r.fixed(p.mac2);
    r.fixed(p.tac);
    return p;
}

template <class Enum>
bool enum_in_range(std::uint8_t v, Enum low, Enum high) {
    return v >= static_cast<std::uint8_t>(low) && v <= static_cast<std::uint8_t>(high);
}

// The files and keys the applications rely on must be there with their layouts: a payload that decodes
// but lacks them is corrupt (the command code may then index them without checks).
bool has_ef(const Df& df, std::uint8_t sfi, EfType type, std::size_t size) {
    for (const Ef& ef : df.efs) {
        if (ef.sfi != sfi) continue;
        if (ef.type != type) return false;
        if (type == EfType::transparent) return ef.data.size() == size;
        if (type == EfType::tlv_records) return true;
        if (ef.record_size != size || ef.records.size() > ef.record_count) return false;
        for (const Bytes& record : ef.records)
            if (record.size() != size) return false;
        return true;
    }
    return false;
}

bool has_key(const CardState& s, KeyUsage usage) {
    for (const KeyEntry& k : s.keys)
        if (k.usage == usage && k.index == default_key_index) return true;
    return false;
}

bool structurally_valid(const CardState& s) {
    int purses = 0;
    int psams = 0;
    for (const Df& df : s.dfs) {
        if (df.role == DfRole::purse) {
            ++purses;
            if (!has_ef(df, sfi_public, EfType::transparent, public_data_size) ||
                !has_ef(df, sfi_purse_log, EfType::cyclic, purse_log_record_size) ||
                !has_ef(df, sfi_capp_record, EfType::linear_fixed, capp_record_size) ||
                !has_ef(df, sfi_trip_log, EfType::cyclic, trip_log_record_size))
                return false;
        }
        if (df.role == DfRole::psam) ++psams;
    }
    if (s.kind == ImageKind::card) {
        return purses == 1 && psams == 0 && has_key(s, KeyUsage::purchase) && has_key(s, KeyUsage::load) && has_key(s, KeyUsage::tac) &&
               !s.pin.bcd.empty() && s.pin.tries_left <= s.pin.tries_max;
    }
    return purses == 0 && psams == 1 && has_ef(s.dfs[0], sfi_psam_terminal_id, EfType::transparent, 6);
}

// One EF; false when an enumerated field is out of range.
bool read_ef(Reader& r, Ef& ef) {
    ef.fid = r.u16();
    ef.sfi = r.u8();
    const auto type = r.u8();
    const auto read = r.u8();
    const auto write = r.u8();
    if (!enum_in_range(type, EfType::transparent, EfType::tlv_records) || !enum_in_range(read, Access::always, Access::external_auth) ||
        !enum_in_range(write, Access::always, Access::external_auth))
        return false;
    ef.type = static_cast<EfType>(type);
    ef.read = static_cast<Access>(read);
    ef.write = static_cast<Access>(write);
    ef.record_size = r.u16();
    ef.record_count = r.u16();
    ef.data = r.bytes();
    const std::size_t record_count = r.count(records_per_ef_max);
    for (std::size_t k = 0; k < record_count && !r.failed(); ++k) ef.records.push_back(r.bytes());
    return true;
}

// The DF tree, each DF after its parent; false when a field is out of range.
bool read_dfs(Reader& r, std::vector<Df>& dfs) {
    const std::size_t df_count = r.count(dfs_max);
    for (std::size_t i = 0; i < df_count && !r.failed(); ++i) {
        Df df;
        df.fid = r.u16();
        df.aid = r.bytes();
        const auto role = r.u8();
        if (!enum_in_range(role, DfRole::mf, DfRole::psam)) return false;
        df.role = static_cast<DfRole>(role);
        df.parent = static_cast<std::int8_t>(r.u8());
        if (df.parent >= static_cast<std::int8_t>(i) || (i > 0 && df.parent < 0)) return false;
        const std::size_t ef_count = r.count(efs_per_df_max);
        for (std::size_t j = 0; j < ef_count && !r.failed(); ++j) {
            Ef ef;
            if (!read_ef(r, ef)) return false;
            df.efs.push_back(std::move(ef));
        }
        dfs.push_back(std::move(df));
    }
    return true;
}

// The key table; false when a key's usage is out of range.
bool read_keys(Reader& r, std::vector<KeyEntry>& keys) {
    const std::size_t key_count = r.count(keys_max);
    for (std::size_t i = 0; i < key_count && !r.failed(); ++i) {
        KeyEntry k;
        const auto usage = r.u8();
        if (!enum_in_range(usage, KeyUsage::purchase, KeyUsage::ssse_auth)) return false;
        k.usage = static_cast<KeyUsage>(usage);
        k.index = r.u8();
        k.version = r.u8();
        k.alg = r.u8();
        k.tries_left = r.u8();
        r.secret(k.value);
        keys.push_back(std::move(k));
    }
    return true;
}

// False when the application block byte is out of range.
bool read_purse(Reader& r, PurseState& p, std::uint8_t version) {
    p.balance_fen = r.u32();
    p.max_balance_fen = r.u32();
    p.overdraft_limit_fen = r.u32();
    p.online_atc = r.u16();
    p.offline_atc = r.u16();
    p.mac_failures = r.u8();
    p.locked = r.boolean();
    if (version != payload_version_without_block) {
        const auto block = r.u8();
        if (!enum_in_range(block, ApplicationBlock::none, ApplicationBlock::permanent)) return false;
        p.block = static_cast<ApplicationBlock>(block);
    }
    p.load_proof = read_proof(r);
    p.purchase_proof = read_proof(r);
    p.capp_proof = read_proof(r);
    return true;
}

void read_psam(Reader& r, PsamState& m) {
    r.fixed(m.terminal_id);
    m.key_index = r.u8();
    m.key_version = r.u8();
    m.key_is_master = r.boolean();
    r.fixed(m.issuer_id);
    r.secret(m.purchase_key);
    m.next_serial = r.u32();
}

}  // namespace

Bytes encode_state(const CardState& s) {
    Writer w;
    w.u8(static_cast<std::uint8_t>(s.kind));  // first byte = kind (payload_kind relies on it)
    w.u8(payload_version);
    w.u8(static_cast<std::uint8_t>(s.protocol));
    // Every count within the limit decode_state reads back (a card must never write an image it cannot load).
    COCONUT_ASSERT(s.dfs.size() <= dfs_max && s.keys.size() <= keys_max, "card state within the payload limits");
    w.u16(static_cast<std::uint16_t>(s.dfs.size()));
    for (const Df& df : s.dfs) {
        COCONUT_ASSERT(df.efs.size() <= efs_per_df_max);
        w.u16(df.fid);
        w.bytes(df.aid);
        w.u8(static_cast<std::uint8_t>(df.role));
        w.u8(static_cast<std::uint8_t>(df.parent));
        w.u16(static_cast<std::uint16_t>(df.efs.size()));
        for (const Ef& ef : df.efs) {
            COCONUT_ASSERT(ef.records.size() <= records_per_ef_max);
            w.u16(ef.fid);
            w.u8(ef.sfi);
            w.u8(static_cast<std::uint8_t>(ef.type));
            w.u8(static_cast<std::uint8_t>(ef.read));
            w.u8(static_cast<std::uint8_t>(ef.write));
            w.u16(ef.record_size);
            w.u16(ef.record_count);
            w.bytes(ef.data);
            w.u16(static_cast<std::uint16_t>(ef.records.size()));
            for (const Bytes& record : ef.records) w.bytes(record);
        }
    }
    w.u16(static_cast<std::uint16_t>(s.keys.size()));
    for (const KeyEntry& k : s.keys) {
        w.u8(static_cast<std::uint8_t>(k.usage));
        w.u8(k.index);
        w.u8(k.version);
        w.u8(k.alg);
        w.u8(k.tries_left);
        w.fixed(k.value.view());
    }
    w.bytes(s.pin.bcd);
    w.u8(s.pin.tries_left);
    w.u8(s.pin.tries_max);

    const PurseState& p = s.purse;
    w.u32(p.balance_fen);
    w.u32(p.max_balance_fen);
    w.u32(p.overdraft_limit_fen);
    w.u16(p.online_atc);
    w.u16(p.offline_atc);
    w.u8(p.mac_failures);
    w.boolean(p.locked);
    w.u8(static_cast<std::uint8_t>(p.block));
    write_proof(w, p.load_proof);
    write_proof(w, p.purchase_proof);
    write_proof(w, p.capp_proof);

    const PsamState& m = s.psam;
    w.fixed(m.terminal_id);
    w.u8(m.key_index);
    w.u8(m.key_version);
    w.boolean(m.key_is_master);
    w.fixed(m.issuer_id);
    w.fixed(m.purchase_key.view());
    w.u32(m.next_serial);

    w.fixed(s.drbg_seed);
    w.u64(s.drbg_reserved);
    Bytes out = w.take();
    COCONUT_ASSERT(payload_kind(out) == s.kind && out[1] == payload_version, "payload starts with kind and version");
    return out;
}

Result<CardState, ImageFailure> decode_state(ByteView payload) {
    const auto corrupt = [] { return Unexpected{ImageFailure{ImageError::corrupt, "corrupt image: the card state does not decode"}}; };
    Reader r(payload);
    CardState s;
    const auto kind = payload_kind(payload);
    if (!kind) return corrupt();
    r.u8();
    s.kind = *kind;
    const std::uint8_t version = r.u8();
    if (version != payload_version && version != payload_version_without_block) return corrupt();
    const auto protocol = r.u8();
    if (protocol > 1) return corrupt();
    s.protocol = static_cast<Protocol>(protocol);

    if (!read_dfs(r, s.dfs) || s.dfs.empty()) return corrupt();
    if (!read_keys(r, s.keys)) return corrupt();
    s.pin.bcd = r.bytes();
    s.pin.tries_left = r.u8();
    s.pin.tries_max = r.u8();
    if (!read_purse(r, s.purse, version)) return corrupt();
    read_psam(r, s.psam);
    r.fixed(s.drbg_seed);
    s.drbg_reserved = r.u64();
    if (r.failed() || !r.at_end() || !structurally_valid(s)) return corrupt();
    // What the card code indexes without checks (encode_state asserts the same limits on the way out).
    COCONUT_ASSERT(s.dfs.size() <= dfs_max && s.keys.size() <= keys_max && s.dfs.front().parent < 0,
                   "decoded card state within the payload limits");
    // Not migrated: the SSSE key derives from a master only the issuer's HSM holds, and a copy of the
    // purse IAK would let the purse answer for the SSSE application again (IMAGE-FORMAT.md).
    // A purse-only (tourist) card has no SSSE application and so no key for it.
    const bool has_ssse = std::any_of(s.dfs.begin(), s.dfs.end(), [](const Df& df) { return df.role == DfRole::ssse; });
    if (s.kind == ImageKind::card && has_ssse && !has_key(s, KeyUsage::ssse_auth)) {
        return Unexpected{ImageFailure{ImageError::missing_key,
                                       "card image without the SSSE application's INTERNAL AUTHENTICATE key (ssse_auth, profile key "
                                       "\"ssse_iak\"): personalized before the SSSE application had a key of its own (or damaged); "
                                       "personalize the card again from its profile"}};
    }
    return s;
}

}  // namespace coconut::cos
