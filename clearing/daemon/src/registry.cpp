// The registries in the ledger's LMDB environment, the registry JSON loader and `check`.
#include <coconut/clearing/clearing.hpp>
#include <coconut/clearing/registry_validator.hpp>

#include <nlohmann/json.hpp>
#include <sodium.h>

#include <cassert>
#include <chrono>
#include <map>

namespace coconut::clearing {

struct Registry::Tables {
    MDB_dbi cards = 0;
    MDB_dbi participants = 0;
    MDB_dbi terminals = 0;
    MDB_dbi risk = 0;
    MDB_dbi loads = 0;    // ASN ‖ online ATC → LoadAttempt
    MDB_dbi holds = 0;    // hold transfer id → HoldRecord
    MDB_dbi hotlist = 0;  // version BE8 → + / - ‖ ASN
    MDB_dbi reversals = 0;  // reversal key → amount counted (BE8)
    MDB_dbi purchases = 0;  // ASN ‖ PSAM terminal id ‖ terminal serial → PurchaseProof
    MDB_dbi challenges = 0;  // clinic challenge (16) used by a hold → empty
    MDB_dbi meta = 0;       // name → value: "challenge-key" (32 bytes)
};

namespace {

// Leading byte of every stored record: a layout change gets a new version instead of a silent misread.
constexpr std::uint8_t record_version = 1;
constexpr std::uint8_t card_record_version = 2;  // 1: without the ATC prefix and load fields
// Terminal records: version 2 added the credit and reversal totals (ISO8583.md §4.7), version 3 the
// status and the forged-TAC count; versions 1 and 2 still read (as active terminals).
constexpr std::uint8_t terminal_record_version = 3;
constexpr std::uint8_t terminal_record_version_2 = 2;
constexpr std::uint8_t purchase_proof_version = 1;
constexpr std::size_t purchase_proof_size = 1 + 4 + 7 + 1 + 4 + 2 + 4 + 8;
constexpr std::size_t card_record_size_v1 = 1 + 10 + 8 + 1 + 1 + 4 + 4 + 8 + 1 + 2 + 4 + 4;
constexpr std::size_t card_record_size = card_record_size_v1 + 2 + 8 + 8 + 8;

Error storage_error(const lmdb::Error& e) { return Error{ErrorCode::storage, e.message()}; }
Error storage_error(const ledger::Error& e) { return Error{ErrorCode::storage, e.message}; }
Error bad_input(std::string message) { return Error{ErrorCode::bad_input, std::move(message)}; }

ByteView text_view(std::string_view s) { return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()}; }

Bytes id_bytes(const ledger::Id& id) {
    Bytes b = be_bytes(id.high, 8);
    append_be(b, id.low, 8);
    return b;
}


const Error& to_error(const Error& e) { return e; }
Error to_error(const ledger::Error& e) { return storage_error(e); }

}  // namespace

std::string_view to_string(CardStatus status) {
    switch (status) {
        case CardStatus::active: return "active";
        case CardStatus::lost: return "lost";
        case CardStatus::blocked: return "blocked";
    }
    return "?";
}

std::optional<CardStatus> parse_card_status(std::string_view text) {
    if (text == "active") return CardStatus::active;
    if (text == "lost") return CardStatus::lost;
    if (text == "blocked") return CardStatus::blocked;
    return std::nullopt;
}

std::string_view to_string(RiskKind kind) {
    switch (kind) {
        case RiskKind::tac_invalid: return "tac_invalid";
        case RiskKind::duplicate_different: return "duplicate_different";
        case RiskKind::atc_gap: return "atc_gap";
        case RiskKind::shadow_mismatch: return "shadow_mismatch";
        case RiskKind::hotlisted_card_used: return "hotlisted_card_used";
        case RiskKind::shadow_negative: return "shadow_negative";
        case RiskKind::mac1_invalid: return "mac1_invalid";
        case RiskKind::load_tac_invalid: return "load_tac_invalid";
        case RiskKind::late_load_confirmation: return "late_load_confirmation";
        case RiskKind::internal_auth_invalid: return "internal_auth_invalid";
        case RiskKind::claims_differ: return "claims_differ";
        case RiskKind::serial_conflict: return "serial_conflict";
        case RiskKind::terminal_suspended: return "terminal_suspended";
        case RiskKind::atc_implausible: return "atc_implausible";
        case RiskKind::wrong_terminal: return "wrong_terminal";
        case RiskKind::challenge_refused: return "challenge_refused";
    }
    return "?";
}

std::string_view to_string(TerminalStatus status) {
    switch (status) {
        case TerminalStatus::active: return "active";
        case TerminalStatus::suspended: return "suspended";
        case TerminalStatus::retired: return "retired";
    }
    return "?";
}

std::optional<TerminalStatus> parse_terminal_status(std::string_view text) {
    if (text == "active") return TerminalStatus::active;
    if (text == "suspended") return TerminalStatus::suspended;
    if (text == "retired") return TerminalStatus::retired;
    return std::nullopt;
}

ChallengeKey::~ChallengeKey() { sodium_memzero(bytes.data(), bytes.size()); }

PurchaseProof purchase_proof(const iso8583::PurseTransaction& t, std::uint32_t amount_fen) {
    PurchaseProof p;
    p.tac = t.tac;
    p.when = t.when;
    p.type = t.type;
    p.amount_fen = amount_fen;
    p.offline_atc = t.offline_atc;
    p.balance_before_fen = t.balance_before_fen;
    Bytes claims = be_bytes(t.balance_before_fen, 4);
    append_be(claims, t.offline_atc, 2);
    append(claims, t.transit_record);
    const ledger::Id digest = ledger::derive_id(claims);
    const Bytes digest_bytes = be_bytes(digest.high, 8);
    std::copy(digest_bytes.begin(), digest_bytes.end(), p.claims_digest.begin());
    return p;
}

bool same_proven_record(const PurchaseProof& a, const PurchaseProof& b) {
    return a.tac == b.tac && a.when == b.when && a.type == b.type && a.amount_fen == b.amount_fen;
}

namespace {

Bytes encode_purchase_proof(const PurchaseProof& p) {
    Bytes out{purchase_proof_version};
    append(out, p.tac);
    append(out, p.when.date);
    append(out, p.when.time);
    out.push_back(p.type);
    append_be(out, p.amount_fen, 4);
    append_be(out, p.offline_atc, 2);
    append_be(out, p.balance_before_fen, 4);
    append(out, p.claims_digest);
    assert(out.size() == purchase_proof_size);
    return out;
}

std::optional<PurchaseProof> decode_purchase_proof(ByteView b) {
    if (b.size() != purchase_proof_size || b[0] != purchase_proof_version) return std::nullopt;
    PurchaseProof p;
    std::size_t at = 1;
    std::copy_n(b.begin() + at, 4, p.tac.begin()), at += 4;
    std::copy_n(b.begin() + at, 4, p.when.date.begin()), at += 4;
    std::copy_n(b.begin() + at, 3, p.when.time.begin()), at += 3;
    p.type = b[at++];
    p.amount_fen = read_be32(b.subspan(at)), at += 4;
    p.offline_atc = read_be16(b.subspan(at)), at += 2;
    p.balance_before_fen = read_be32(b.subspan(at)), at += 4;
    std::copy_n(b.begin() + at, 8, p.claims_digest.begin()), at += 8;
    assert(at == purchase_proof_size);
    return p;
}

}  // namespace

// ---- record codecs -------------------------------------------------------------------------------------

Bytes encode_card(const CardRecord& c) {
    Bytes out;
    out.reserve(card_record_size);
    out.push_back(card_record_version);
    append(out, c.asn);
    append(out, c.issuer_id);
    out.push_back(static_cast<std::uint8_t>(c.status));
    out.push_back(c.tac_key_version);
    append_be(out, c.opening_balance_fen, 4);
    append_be(out, c.medical_opening_fen, 4);
    append_be(out, static_cast<std::uint64_t>(c.shadow_balance_fen), 8);
    out.push_back(c.offline_atc_seen ? 1 : 0);
    append_be(out, c.offline_atc_max, 2);
    append_be(out, c.offline_purchases, 4);
    append_be(out, c.risk_flags, 4);
    append_be(out, c.offline_atc_next, 2);
    append_be(out, c.offline_atc_ahead, 8);
    append_be(out, c.unconfirmed_loads_fen, 8);
    append_be(out, c.latest_load_when, 8);
    assert(out.size() == card_record_size);
    return out;
}

std::optional<CardRecord> decode_card(ByteView b) {
    const bool v1 = b.size() == card_record_size_v1 && b[0] == record_version;
    if (!v1 && (b.size() != card_record_size || b[0] != card_record_version)) return std::nullopt;
    CardRecord c;
    std::size_t at = 1;
    std::copy_n(b.begin() + at, 10, c.asn.begin()), at += 10;
    std::copy_n(b.begin() + at, 8, c.issuer_id.begin()), at += 8;
    const auto status = b[at++];
    if (status < 1 || status > 3) return std::nullopt;
    c.status = static_cast<CardStatus>(status);
    c.tac_key_version = b[at++];
    c.opening_balance_fen = read_be32(b.subspan(at)), at += 4;
    c.medical_opening_fen = read_be32(b.subspan(at)), at += 4;
    c.shadow_balance_fen = static_cast<std::int64_t>(read_be(b.subspan(at, 8))), at += 8;
    if (b[at] > 1) return std::nullopt;
    c.offline_atc_seen = b[at++] == 1;
    c.offline_atc_max = read_be16(b.subspan(at)), at += 2;
    c.offline_purchases = read_be32(b.subspan(at)), at += 4;
    c.risk_flags = read_be32(b.subspan(at)), at += 4;
    if (v1) return c;  // prefix 0: a card booked before the prefix existed is not compared (lenient, sound)
    c.offline_atc_next = read_be16(b.subspan(at)), at += 2;
    c.offline_atc_ahead = read_be(b.subspan(at, 8)), at += 8;
    c.unconfirmed_loads_fen = read_be(b.subspan(at, 8)), at += 8;
    c.latest_load_when = read_be(b.subspan(at, 8)), at += 8;
    assert(at == card_record_size);
    return c;
}

// Terminal record sizes: version 1's fixed part (with the batch's debit totals and the merchant id's
// length byte), and what version 2 adds (credit, credit-reversal and debit-reversal totals).
constexpr std::size_t terminal_fixed_v1 = 1 + terminal_id_chars + 6 + 8 + 4 + 4 + 8 + 4 + 8 + 1;
constexpr std::size_t terminal_totals_v2 = 3 * (4 + 8);
constexpr std::size_t terminal_status_v3 = 1 + 4 + 4;

Bytes encode_terminal(const TerminalRecord& t) {
    assert(t.terminal_id.size() == terminal_id_chars && t.merchant_id.size() <= merchant_id_chars_max);
    Bytes out;
    out.reserve(terminal_fixed_v1 + terminal_totals_v2 + terminal_status_v3 + t.merchant_id.size());  // one allocation per booking
    out.push_back(terminal_record_version);
    append(out, text_view(t.terminal_id));
    append(out, t.psam_terminal_id);
    append_be(out, t.participant_id, 8);
    append_be(out, t.last_stan, 4);
    append_be(out, t.batch_number, 4);
    append_be(out, t.uploads, 8);
    append_be(out, t.batch_debits_count, 4);
    append_be(out, t.batch_debits_fen, 8);
    append_be(out, t.batch_credits_count, 4);
    append_be(out, t.batch_credits_fen, 8);
    append_be(out, t.batch_credit_reversals_count, 4);
    append_be(out, t.batch_credit_reversals_fen, 8);
    append_be(out, t.batch_debit_reversals_count, 4);
    append_be(out, t.batch_debit_reversals_fen, 8);
    out.push_back(static_cast<std::uint8_t>(t.status));
    append_be(out, t.forged_day, 4);
    append_be(out, t.forged_count, 4);
    out.push_back(static_cast<std::uint8_t>(t.merchant_id.size()));
    append(out, text_view(t.merchant_id));
    return out;
}

std::optional<TerminalRecord> decode_terminal(ByteView b) {
    if (b.empty() || b[0] < record_version || b[0] > terminal_record_version) return std::nullopt;
    const std::uint8_t version = b[0];
    const std::size_t fixed = terminal_fixed_v1 + (version >= terminal_record_version_2 ? terminal_totals_v2 : 0) +
                              (version >= terminal_record_version ? terminal_status_v3 : 0);
    if (b.size() < fixed) return std::nullopt;
    TerminalRecord t;
    std::size_t at = 1;
    t.terminal_id.assign(reinterpret_cast<const char*>(b.data() + at), terminal_id_chars), at += terminal_id_chars;
    std::copy_n(b.begin() + at, 6, t.psam_terminal_id.begin()), at += 6;
    t.participant_id = read_be(b.subspan(at, 8)), at += 8;
    t.last_stan = read_be32(b.subspan(at)), at += 4;
    t.batch_number = read_be32(b.subspan(at)), at += 4;
    t.uploads = read_be(b.subspan(at, 8)), at += 8;
    t.batch_debits_count = read_be32(b.subspan(at)), at += 4;
    t.batch_debits_fen = read_be(b.subspan(at, 8)), at += 8;
    if (version >= terminal_record_version_2) {
        for (auto [count, fen] : {std::pair{&t.batch_credits_count, &t.batch_credits_fen},
                                  std::pair{&t.batch_credit_reversals_count, &t.batch_credit_reversals_fen},
                                  std::pair{&t.batch_debit_reversals_count, &t.batch_debit_reversals_fen}}) {
            *count = read_be32(b.subspan(at)), at += 4;
            *fen = read_be(b.subspan(at, 8)), at += 8;
        }
    }
    if (version >= terminal_record_version) {
        const std::uint8_t status = b[at++];
        if (status < 1 || status > 3) return std::nullopt;
        t.status = static_cast<TerminalStatus>(status);
        t.forged_day = read_be32(b.subspan(at)), at += 4;
        t.forged_count = read_be32(b.subspan(at)), at += 4;
    }
    const std::size_t merchant_size = b[at++];
    if (merchant_size > merchant_id_chars_max || b.size() != fixed + merchant_size) return std::nullopt;
    t.merchant_id.assign(reinterpret_cast<const char*>(b.data() + at), merchant_size);
    return t;
}

namespace {

std::string encode_participant(const Participant& p) {
    return nlohmann::json{{"id", p.id}, {"name", p.name}, {"kind", p.kind}, {"bank_account", p.bank_account},
                          {"fee_rate_bp", p.fee_rate_bp}}
        .dump();
}

std::optional<Participant> decode_participant(ByteView b) {
    auto j = nlohmann::json::parse(b.begin(), b.end(), nullptr, false);
    if (j.is_discarded() || !j.is_object()) return std::nullopt;
    try {
        return Participant{j.at("id").get<std::uint64_t>(), j.at("name").get<std::string>(), j.at("kind").get<std::string>(),
                           j.at("bank_account").get<std::string>(), j.at("fee_rate_bp").get<std::uint32_t>()};
    } catch (const nlohmann::json::exception&) {
        return std::nullopt;
    }
}

Bytes risk_key(const RiskFlag& f) {
    Bytes key{static_cast<std::uint8_t>(f.kind)};
    append(key, f.asn);
    append_be(key, f.atc, 2);
    key.push_back(f.type);
    return key;
}

}  // namespace

// ---- Registry -------------------------------------------------------------------------------------------

// The group write-back (Registry::group_hooks): records read or written in the group's transaction,
// decoded; `dirty` ones are put by the group's finish hook.
struct Registry::GroupCache {
    template <class Record>
    struct Entry {
        Record record;
        bool dirty = false;
    };
    const lmdb::Txn* txn = nullptr;
    std::map<Asn, Entry<CardRecord>> cards;
    std::map<std::string, Entry<TerminalRecord>, std::less<>> terminals;
};

namespace {
// The group cache of the group commit running on this thread (the ledger writer's), if any.
thread_local const void* active_group_cache = nullptr;
}  // namespace

Registry::Registry(lmdb::Env& env, std::unique_ptr<Tables> tables, ChallengeKey challenge_key)
    : env_(env), tables_(std::move(tables)), challenge_key_(std::move(challenge_key)), group_(std::make_unique<GroupCache>()) {}
Registry::~Registry() = default;

Registry::GroupCache* Registry::group_cache_for(const lmdb::Txn& txn) const {
    if (active_group_cache != group_.get() || group_->txn != &txn) return nullptr;
    return group_.get();
}

ledger::GroupHooks Registry::group_hooks() const {
    GroupCache* cache = group_.get();
    ledger::GroupHooks hooks;
    hooks.begin = [cache](lmdb::Txn& txn) {
        cache->txn = &txn;
        cache->cards.clear();
        cache->terminals.clear();
        active_group_cache = cache;
    };
    hooks.finish = [this, cache](lmdb::Txn& txn) -> lmdb::Status {
        for (auto& [asn, entry] : cache->cards) {
            if (!entry.dirty) continue;
            if (auto s = write_card(txn, entry.record); !s) return s;
            entry.dirty = false;
        }
        for (auto& [id, entry] : cache->terminals) {
            if (!entry.dirty) continue;
            if (auto s = write_terminal(txn, entry.record); !s) return s;
            entry.dirty = false;
        }
        return Ok{};
    };
    hooks.end = [cache] {
        active_group_cache = nullptr;
        cache->txn = nullptr;
        cache->cards.clear();
        cache->terminals.clear();
    };
    return hooks;
}

namespace {

constexpr std::string_view challenge_key_name = "challenge-key";

// The challenge key stored in `meta`, made and stored on first use in a writable environment. A
// read-only environment (settlement, `check`) never issues challenges: a zero key there.
Result<ChallengeKey> load_challenge_key(lmdb::Env& env, MDB_dbi meta) {
    ChallengeKey key;
    auto read = lmdb::Txn::begin(env, lmdb::Txn::Mode::read_only);
    if (!read) return Unexpected<Error>{storage_error(read.error())};
    auto stored = read->get(meta, text_view(challenge_key_name));
    if (!stored) return Unexpected<Error>{storage_error(stored.error())};
    if (*stored) {
        if ((*stored)->size() != key.bytes.size()) return Unexpected<Error>{Error{ErrorCode::storage, "undecodable challenge key"}};
        std::copy((*stored)->begin(), (*stored)->end(), key.bytes.begin());
        return key;
    }
    read->abort();
    if (env.read_only()) return key;
    randombytes_buf(key.bytes.data(), key.bytes.size());
    auto write = lmdb::Txn::begin(env, lmdb::Txn::Mode::read_write);
    if (!write) return Unexpected<Error>{storage_error(write.error())};
    if (auto put = write->put(meta, text_view(challenge_key_name), key.bytes); !put) return Unexpected<Error>{storage_error(put.error())};
    if (auto committed = write->commit(); !committed) return Unexpected<Error>{storage_error(committed.error())};
    return key;
}

}  // namespace

Result<std::unique_ptr<Registry>> Registry::open(lmdb::Env& env) {
    // Offline purchase ids changed from (ASN, offline ATC, type) to what the TAC proves (ASN, PSAM
    // terminal id, terminal serial; ISO8583.md §4.8) together with the "purchases" table: a registry
    // without that table holds purchases under ids this build would not find, so it is refused.
    auto had_cards = env.has_table("cards");
    auto has_purchases = env.has_table("purchases");
    if (!had_cards || !has_purchases) return Unexpected<Error>{storage_error((!had_cards ? had_cards : has_purchases).error())};
    if (*had_cards && !*has_purchases) {
        return Unexpected<Error>{Error{ErrorCode::conflict,
                                       "this ledger was written before offline purchase ids were derived from ASN, PSAM terminal id "
                                       "and terminal serial (clearing/ISO8583.md §4.8; no \"purchases\" table): it cannot be "
                                       "served or checked by this build; start a new data directory"}};
    }
    auto tables = std::make_unique<Tables>();
    struct Named {
        const char* name;
        MDB_dbi* dbi;
    };
    for (Named n : {Named{"cards", &tables->cards}, Named{"participants", &tables->participants},
                    Named{"terminals", &tables->terminals}, Named{"risk", &tables->risk}, Named{"loads", &tables->loads},
                    Named{"holds", &tables->holds}, Named{"hotlist", &tables->hotlist}, Named{"reversals", &tables->reversals},
                    Named{"purchases", &tables->purchases}, Named{"challenges", &tables->challenges},
                    Named{"meta", &tables->meta}}) {
        auto dbi = env.open_table(n.name);
        if (!dbi) return Unexpected<Error>{storage_error(dbi.error())};
        *n.dbi = *dbi;
    }
    auto challenge_key = load_challenge_key(env, tables->meta);
    if (!challenge_key) return Unexpected<Error>{challenge_key.error()};
    return std::unique_ptr<Registry>(new Registry(env, std::move(tables), std::move(*challenge_key)));
}

const ChallengeKey& Registry::challenge_key() const { return challenge_key_; }

lmdb::Result<bool> Registry::challenge_used_in(const lmdb::Txn& txn, const iso8583::HostChallenge& challenge) const {
    auto value = txn.get(tables_->challenges, challenge);
    if (!value) return Unexpected<lmdb::Error>{value.error()};
    return value->has_value();
}

lmdb::Status Registry::put_challenge_used(lmdb::Txn& txn, const iso8583::HostChallenge& challenge, std::uint32_t forget_before_s) const {
    if (auto put = txn.put(tables_->challenges, challenge, ByteView{}); !put) return put;
    // Keys start with the issue time (BE4): the oldest come first.
    std::vector<Bytes> expired;
    {
        auto cursor = lmdb::Cursor::open(txn, tables_->challenges);
        if (!cursor) return Unexpected<lmdb::Error>{cursor.error()};
        for (auto entry = cursor->first(); expired.size() < challenges_pruned_per_use; entry = cursor->next()) {
            if (!entry) return Unexpected<lmdb::Error>{entry.error()};
            if (!*entry || (*entry)->key.size() < 4 || read_be32((*entry)->key) >= forget_before_s) break;
            expired.emplace_back((*entry)->key.begin(), (*entry)->key.end());
        }
    }
    for (const Bytes& key : expired) {
        if (auto deleted = txn.del(tables_->challenges, key); !deleted) return Unexpected<lmdb::Error>{deleted.error()};
    }
    return Ok{};
}

namespace {

Bytes purchase_key(const Registry::PurchaseKey& k) {
    Bytes key(k.asn.begin(), k.asn.end());
    append(key, k.psam_terminal_id);
    append_be(key, k.terminal_serial, 4);
    return key;
}

}  // namespace

lmdb::Result<std::optional<PurchaseProof>> Registry::purchase_proof_in(const lmdb::Txn& txn, const PurchaseKey& k) const {
    auto value = txn.get(tables_->purchases, purchase_key(k));
    if (!value) return Unexpected<lmdb::Error>{value.error()};
    if (!*value) return std::optional<PurchaseProof>{};
    auto proof = decode_purchase_proof(**value);
    if (!proof) return Unexpected<lmdb::Error>{lmdb::Error{MDB_CORRUPTED, "decode purchase record"}};
    return proof;
}

lmdb::Status Registry::put_purchase_proof(lmdb::Txn& txn, const PurchaseKey& k, const PurchaseProof& proof) const {
    const Bytes bytes = encode_purchase_proof(proof);
    assert(decode_purchase_proof(bytes) == proof);  // pair assertion
    return txn.put(tables_->purchases, purchase_key(k), bytes);
}

lmdb::Result<std::optional<CardRecord>> Registry::card_in(const lmdb::Txn& txn, const Asn& asn) const {
    GroupCache* group = group_cache_for(txn);
    if (group) {
        if (auto it = group->cards.find(asn); it != group->cards.end()) return std::optional<CardRecord>(it->second.record);
    }
    auto value = txn.get(tables_->cards, asn);
    if (!value) return Unexpected<lmdb::Error>{value.error()};
    if (!*value) return std::optional<CardRecord>{};
    auto card = decode_card(**value);
    if (!card) return Unexpected<lmdb::Error>{lmdb::Error{MDB_CORRUPTED, "decode card record"}};
    if (group) group->cards.emplace(asn, GroupCache::Entry<CardRecord>{*card, false});
    return card;
}

lmdb::Result<std::optional<TerminalRecord>> Registry::terminal_in(const lmdb::Txn& txn, std::string_view terminal_id) const {
    GroupCache* group = group_cache_for(txn);
    if (group) {
        if (auto it = group->terminals.find(terminal_id); it != group->terminals.end()) {
            return std::optional<TerminalRecord>(it->second.record);
        }
    }
    auto value = txn.get(tables_->terminals, text_view(terminal_id));
    if (!value) return Unexpected<lmdb::Error>{value.error()};
    if (!*value) return std::optional<TerminalRecord>{};
    auto terminal = decode_terminal(**value);
    if (!terminal) return Unexpected<lmdb::Error>{lmdb::Error{MDB_CORRUPTED, "decode terminal record"}};
    if (group) group->terminals.emplace(std::string(terminal_id), GroupCache::Entry<TerminalRecord>{*terminal, false});
    return terminal;
}

lmdb::Status Registry::put_card(lmdb::Txn& txn, const CardRecord& card) const {
    if (GroupCache* group = group_cache_for(txn)) {
        group->cards.insert_or_assign(card.asn, GroupCache::Entry<CardRecord>{card, true});
        return Ok{};
    }
    return write_card(txn, card);
}

lmdb::Status Registry::write_card(lmdb::Txn& txn, const CardRecord& card) const {
    const Bytes bytes = encode_card(card);
    assert(decode_card(bytes).has_value());  // pair assertion
    return txn.put(tables_->cards, card.asn, bytes);
}

lmdb::Status Registry::put_participant(lmdb::Txn& txn, const Participant& p) const {
    const std::string text = encode_participant(p);
    return txn.put(tables_->participants, be_bytes(p.id, 8), text_view(text));
}

lmdb::Status Registry::put_terminal(lmdb::Txn& txn, const TerminalRecord& t) const {
    if (GroupCache* group = group_cache_for(txn)) {
        group->terminals.insert_or_assign(t.terminal_id, GroupCache::Entry<TerminalRecord>{t, true});
        return Ok{};
    }
    return write_terminal(txn, t);
}

lmdb::Status Registry::write_terminal(lmdb::Txn& txn, const TerminalRecord& t) const {
    const Bytes bytes = encode_terminal(t);
    assert(decode_terminal(bytes).has_value());  // pair assertion
    return txn.put(tables_->terminals, text_view(t.terminal_id), bytes);
}

lmdb::Result<bool> Registry::put_risk(lmdb::Txn& txn, const RiskFlag& f) const {
    const Bytes key = risk_key(f);
    auto existing = txn.get(tables_->risk, key);
    if (!existing) return Unexpected<lmdb::Error>{existing.error()};
    if (*existing) return false;
    Bytes value = be_bytes(f.timestamp_ns, 8);
    append(value, text_view(f.detail));
    auto put = txn.put(tables_->risk, key, value);
    if (!put) return Unexpected<lmdb::Error>{put.error()};
    return true;
}

namespace {

template <class T, class Fn>
Result<T> in_read_txn(const lmdb::Env& env, Fn fn) {
    auto txn = lmdb::Txn::begin(env, lmdb::Txn::Mode::read_only);
    if (!txn) return Unexpected<Error>{storage_error(txn.error())};
    return fn(*txn);
}

template <class T, class Decode>
Result<std::vector<T>> scan(const lmdb::Env& env, MDB_dbi table, Decode decode, const char* what) {
    return in_read_txn<std::vector<T>>(env, [&](lmdb::Txn& txn) -> Result<std::vector<T>> {
        auto cursor = lmdb::Cursor::open(txn, table);
        if (!cursor) return Unexpected<Error>{storage_error(cursor.error())};
        std::vector<T> out;
        for (auto entry = cursor->first();; entry = cursor->next()) {
            if (!entry) return Unexpected<Error>{storage_error(entry.error())};
            if (!*entry) break;
            auto item = decode((*entry)->key, (*entry)->value);
            if (!item) return Unexpected<Error>{Error{ErrorCode::storage, std::string("undecodable ") + what + " record"}};
            out.push_back(std::move(*item));
        }
        return out;
    });
}

}  // namespace

Result<std::optional<CardRecord>> Registry::card(const Asn& asn) const {
    return in_read_txn<std::optional<CardRecord>>(env_, [&](lmdb::Txn& txn) -> Result<std::optional<CardRecord>> {
        auto card = card_in(txn, asn);
        if (!card) return Unexpected<Error>{storage_error(card.error())};
        return *card;
    });
}

Result<std::optional<TerminalRecord>> Registry::terminal(std::string_view terminal_id) const {
    return in_read_txn<std::optional<TerminalRecord>>(env_, [&](lmdb::Txn& txn) -> Result<std::optional<TerminalRecord>> {
        auto terminal = terminal_in(txn, terminal_id);
        if (!terminal) return Unexpected<Error>{storage_error(terminal.error())};
        return *terminal;
    });
}

Result<std::optional<Participant>> Registry::participant(std::uint64_t id) const {
    return in_read_txn<std::optional<Participant>>(env_, [&](lmdb::Txn& txn) -> Result<std::optional<Participant>> {
        auto p = participant_in(txn, id);
        if (!p) return Unexpected<Error>{storage_error(p.error())};
        return *p;
    });
}

lmdb::Result<std::optional<Participant>> Registry::participant_in(const lmdb::Txn& txn, std::uint64_t id) const {
    auto value = txn.get(tables_->participants, be_bytes(id, 8));
    if (!value) return Unexpected<lmdb::Error>{value.error()};
    if (!*value) return std::optional<Participant>{};
    auto p = decode_participant(**value);
    if (!p) return Unexpected<lmdb::Error>{lmdb::Error{MDB_CORRUPTED, "undecodable participant record"}};
    return p;
}

Result<std::vector<CardRecord>> Registry::cards() const {
    return scan<CardRecord>(env_, tables_->cards, [](ByteView, ByteView v) { return decode_card(v); }, "card");
}

Result<std::vector<Participant>> Registry::participants() const {
    return scan<Participant>(env_, tables_->participants, [](ByteView, ByteView v) { return decode_participant(v); },
                             "participant");
}

Result<std::vector<TerminalRecord>> Registry::terminals() const {
    return scan<TerminalRecord>(env_, tables_->terminals, [](ByteView, ByteView v) { return decode_terminal(v); },
                                "terminal");
}

namespace {

constexpr std::size_t risk_key_size = 1 + 10 + 2 + 1;

std::optional<RiskFlag> decode_risk(ByteView k, ByteView v) {
    if (k.size() != risk_key_size || v.size() < 8 || k[0] < 1 || k[0] > risk_kind_max) return std::nullopt;
    RiskFlag f;
    f.kind = static_cast<RiskKind>(k[0]);
    std::copy_n(k.begin() + 1, 10, f.asn.begin());
    f.atc = read_be16(k.subspan(11));
    f.type = k[13];
    f.timestamp_ns = read_be(v.first(8));
    f.detail.assign(reinterpret_cast<const char*>(v.data() + 8), v.size() - 8);
    return f;
}

}  // namespace

Result<Registry::RiskPage> Registry::risk_page(std::string_view cursor, std::size_t limit, const std::optional<Asn>& asn) const {
    if (limit == 0 || limit > risk_page_limit_max) {
        return Unexpected<Error>{bad_input("limit must be 1 to " + std::to_string(risk_page_limit_max))};
    }
    // The cursor is the last key of the previous page, as hex.
    Bytes after;
    if (!cursor.empty()) {
        auto key = from_hex(cursor);
        if (!key || key->size() != risk_key_size) return Unexpected<Error>{bad_input("cursor is not one a risk page returned")};
        after = std::move(*key);
    }
    return in_read_txn<RiskPage>(env_, [&](lmdb::Txn& txn) -> Result<RiskPage> {
        auto c = lmdb::Cursor::open(txn, tables_->risk);
        if (!c) return Unexpected<Error>{storage_error(c.error())};
        RiskPage page;
        // The first key to look at: after the cursor; with a card, the card's keys of each kind in turn
        // (kind ‖ ASN ‖ …), so a page costs its own flags and one seek per kind, never a scan of others.
        auto start = [&](std::uint8_t kind) {
            Bytes key{kind};
            if (asn) append(key, *asn);
            return key;
        };
        auto entry = after.empty() ? (asn ? c->seek(start(1)) : c->first()) : c->seek(after);
        if (entry && *entry && !after.empty() && std::equal((*entry)->key.begin(), (*entry)->key.end(), after.begin(), after.end())) {
            entry = c->next();
        }
        // One flag beyond the page tells whether another page follows.
        while (page.flags.size() <= limit) {
            if (!entry) return Unexpected<Error>{storage_error(entry.error())};
            if (!*entry) break;
            const ByteView key = (*entry)->key;
            if (asn && (key.size() != risk_key_size || !std::equal(asn->begin(), asn->end(), key.begin() + 1))) {
                // Outside this card's flags of key[0]'s kind: seek the card's flags of that kind if they
                // come later, else of the next kind.
                const bool before_card = key.size() == risk_key_size &&
                                         std::lexicographical_compare(key.begin() + 1, key.begin() + 11, asn->begin(), asn->end());
                const int kind = key.empty() ? risk_kind_max + 1 : (before_card ? key[0] : key[0] + 1);
                if (kind > risk_kind_max) break;
                entry = c->seek(start(static_cast<std::uint8_t>(kind)));
                continue;
            }
            auto flag = decode_risk(key, (*entry)->value);
            if (!flag) return Unexpected<Error>{Error{ErrorCode::storage, "undecodable risk record"}};
            page.flags.push_back(std::move(*flag));
            entry = c->next();
        }
        if (page.flags.size() > limit) {
            page.flags.pop_back();
            page.next_cursor = to_hex(risk_key(page.flags.back()));
        }
        return page;
    });
}

Result<std::vector<RiskFlag>> Registry::risk_flags() const {
    return scan<RiskFlag>(env_, tables_->risk, decode_risk, "risk");
}

// ---- online loads, clinic holds, hotlist ------------------------------------------------------------------

namespace {

ledger::Id read_id(ByteView b) { return ledger::Id{read_be(b.first(8)), read_be(b.subspan(8, 8))}; }

Bytes load_key(const Asn& asn, std::uint16_t online_atc) {
    Bytes key(asn.begin(), asn.end());
    append_be(key, online_atc, 2);
    return key;
}

Bytes encode_load_attempt(const LoadAttempt& a) {
    assert(a.terminal_id.size() == terminal_id_chars);
    Bytes out{record_version, a.attempt};
    append(out, id_bytes(a.request_digest));
    append_be(out, a.amount_fen, 8);
    append(out, text_view(a.terminal_id));
    return out;
}

std::optional<LoadAttempt> decode_load_attempt(ByteView b) {
    if (b.size() != 2 + 16 + 8 + terminal_id_chars || b[0] != record_version) return std::nullopt;
    LoadAttempt a;
    a.attempt = b[1];
    a.request_digest = read_id(b.subspan(2));
    a.amount_fen = read_be(b.subspan(18, 8));
    a.terminal_id.assign(reinterpret_cast<const char*>(b.data() + 26), terminal_id_chars);
    return a;
}

Bytes encode_hold(const HoldRecord& h) {
    Bytes out{record_version};
    append(out, id_bytes(h.request_digest));
    append_be(out, h.requested_fen, 8);
    append(out, h.asn);
    return out;
}

std::optional<HoldRecord> decode_hold(ByteView b) {
    if (b.size() != 1 + 16 + 8 + 10 || b[0] != record_version) return std::nullopt;
    HoldRecord h;
    h.request_digest = read_id(b.subspan(1));
    h.requested_fen = read_be(b.subspan(17, 8));
    std::copy_n(b.begin() + 25, 10, h.asn.begin());
    return h;
}

constexpr std::size_t hotlist_entry_size = 1 + 10;

std::optional<HotlistEntry> decode_hotlist_entry(ByteView b) {
    if (b.size() != hotlist_entry_size || (b[0] != '+' && b[0] != '-')) return std::nullopt;
    HotlistEntry e;
    e.added = b[0] == '+';
    std::copy_n(b.begin() + 1, 10, e.asn.begin());
    return e;
}

lmdb::Error corrupt(const char* what) { return lmdb::Error{MDB_CORRUPTED, what}; }

lmdb::Result<std::uint64_t> hotlist_version_in(const lmdb::Txn& txn, MDB_dbi table) {
    auto cursor = lmdb::Cursor::open(txn, table);
    if (!cursor) return Unexpected<lmdb::Error>{cursor.error()};
    auto last = cursor->last();
    if (!last) return Unexpected<lmdb::Error>{last.error()};
    if (!*last) return std::uint64_t{0};
    if ((*last)->key.size() != 8) return Unexpected<lmdb::Error>{corrupt("decode hotlist key")};
    return read_be((*last)->key);
}

}  // namespace

Result<std::optional<LoadAttempt>> Registry::load_attempt(const Asn& asn, std::uint16_t online_atc) const {
    return in_read_txn<std::optional<LoadAttempt>>(env_, [&](lmdb::Txn& txn) -> Result<std::optional<LoadAttempt>> {
        auto value = txn.get(tables_->loads, load_key(asn, online_atc));
        if (!value) return Unexpected<Error>{storage_error(value.error())};
        if (!*value) return std::optional<LoadAttempt>{};
        auto attempt = decode_load_attempt(**value);
        if (!attempt) return Unexpected<Error>{Error{ErrorCode::storage, "undecodable load attempt record"}};
        return attempt;
    });
}

lmdb::Status Registry::put_load_attempt(lmdb::Txn& txn, const Asn& asn, std::uint16_t online_atc, const LoadAttempt& a) const {
    const Bytes bytes = encode_load_attempt(a);
    assert(decode_load_attempt(bytes).has_value());  // pair assertion
    return txn.put(tables_->loads, load_key(asn, online_atc), bytes);
}

Result<std::optional<HoldRecord>> Registry::hold(const ledger::Id& hold_id) const {
    return in_read_txn<std::optional<HoldRecord>>(env_, [&](lmdb::Txn& txn) -> Result<std::optional<HoldRecord>> {
        auto value = txn.get(tables_->holds, id_bytes(hold_id));
        if (!value) return Unexpected<Error>{storage_error(value.error())};
        if (!*value) return std::optional<HoldRecord>{};
        auto hold = decode_hold(**value);
        if (!hold) return Unexpected<Error>{Error{ErrorCode::storage, "undecodable hold record"}};
        return hold;
    });
}

lmdb::Status Registry::put_hold(lmdb::Txn& txn, const ledger::Id& hold_id, const HoldRecord& h) const {
    const Bytes bytes = encode_hold(h);
    assert(decode_hold(bytes).has_value());  // pair assertion
    return txn.put(tables_->holds, id_bytes(hold_id), bytes);
}

lmdb::Result<bool> Registry::put_reversal(lmdb::Txn& txn, const ledger::Id& key, std::uint64_t amount_fen) const {
    auto existing = txn.get(tables_->reversals, id_bytes(key));
    if (!existing) return Unexpected<lmdb::Error>{existing.error()};
    if (*existing) return false;
    auto put = txn.put(tables_->reversals, id_bytes(key), be_bytes(amount_fen, 8));
    if (!put) return Unexpected<lmdb::Error>{put.error()};
    return true;
}

Result<std::vector<Registry::StoredLoadAttempt>> Registry::load_attempts() const {
    return scan<StoredLoadAttempt>(
        env_, tables_->loads,
        [](ByteView k, ByteView v) -> std::optional<StoredLoadAttempt> {
            auto attempt = decode_load_attempt(v);
            if (k.size() != 12 || !attempt) return std::nullopt;
            StoredLoadAttempt stored;
            std::copy_n(k.begin(), 10, stored.asn.begin());
            stored.online_atc = read_be16(k.subspan(10));
            stored.attempt = *attempt;
            return stored;
        },
        "load attempt");
}

Result<std::vector<std::pair<ledger::Id, HoldRecord>>> Registry::holds() const {
    return scan<std::pair<ledger::Id, HoldRecord>>(
        env_, tables_->holds,
        [](ByteView k, ByteView v) -> std::optional<std::pair<ledger::Id, HoldRecord>> {
            auto hold = decode_hold(v);
            if (k.size() != 16 || !hold) return std::nullopt;
            return std::pair{read_id(k), *hold};
        },
        "hold");
}

Result<std::uint64_t> Registry::hotlist_version() const {
    return in_read_txn<std::uint64_t>(env_, [&](lmdb::Txn& txn) -> Result<std::uint64_t> {
        auto version = hotlist_version_in(txn, tables_->hotlist);
        if (!version) return Unexpected<Error>{storage_error(version.error())};
        return *version;
    });
}

Result<HotlistChunk> Registry::hotlist_chunk(std::uint64_t from_version, std::uint32_t chunk_index) const {
    return in_read_txn<HotlistChunk>(env_, [&](lmdb::Txn& txn) -> Result<HotlistChunk> {
        auto head = hotlist_version_in(txn, tables_->hotlist);
        if (!head) return Unexpected<Error>{storage_error(head.error())};
        // A terminal ahead of us (a restored host) replays the whole log: applied in order to any
        // list, it yields the current hotlist.
        if (from_version > *head) from_version = 0;
        // Versions are dense (one entry each), so chunk k is a key range, stable while entries append.
        const std::uint64_t first = from_version + 1 + std::uint64_t{chunk_index} * hotlist_entries_per_chunk;
        HotlistChunk chunk;
        chunk.version = std::max(from_version, std::min(*head, first - 1));
        for (std::uint64_t version = first; version <= *head && chunk.entries.size() < hotlist_entries_per_chunk; ++version) {
            auto value = txn.get(tables_->hotlist, be_bytes(version, 8));
            if (!value) return Unexpected<Error>{storage_error(value.error())};
            auto entry = *value ? decode_hotlist_entry(**value) : std::nullopt;
            if (!entry) return Unexpected<Error>{Error{ErrorCode::storage, "hotlist version " + std::to_string(version) + " missing or undecodable"}};
            chunk.entries.push_back(*entry);
            chunk.version = version;
        }
        chunk.more = chunk.version < *head;
        return chunk;
    });
}

lmdb::Result<std::optional<std::uint64_t>> Registry::record_status_change(lmdb::Txn& txn, const Asn& asn, CardStatus before,
                                                                          CardStatus after) const {
    if (before == after) return std::optional<std::uint64_t>{};
    auto head = hotlist_version_in(txn, tables_->hotlist);
    if (!head) return Unexpected<lmdb::Error>{head.error()};
    // An operating limit, far away (a province hotlists ~10^5 cards a year): refuse rather than wrap.
    if (*head >= hotlist_version_max) return Unexpected<lmdb::Error>{lmdb::Error{MDB_MAP_FULL, "hotlist version space (8 digits) used up"}};
    const std::uint64_t version = *head + 1;
    Bytes value{static_cast<std::uint8_t>(after == CardStatus::active ? '-' : '+')};
    append(value, asn);
    if (auto put = txn.put(tables_->hotlist, be_bytes(version, 8), value); !put) return Unexpected<lmdb::Error>{put.error()};
    return std::optional<std::uint64_t>{version};
}

// ---- registry file --------------------------------------------------------------------------------------

namespace {

struct Parsed {
    std::vector<Participant> participants;
    std::vector<TerminalRecord> terminals;
    std::vector<CardRecord> cards;
};

using Json = nlohmann::json;

#define COCONUT_TRY(var, expr)                                 \
    auto var##_result = (expr);                                \
    if (!var##_result) return Unexpected<Error>{to_error(var##_result.error())}; \
    auto var = std::move(var##_result).value()

// The file's sections, each entry read by the registry validator (registry_validator.hpp); the error
// names the entry: "participants[3]: \"kind\" must be bus, shop or clinic".
template <class Record, class Read>
Result<std::vector<Record>> read_section(const Json& root, const char* section, Read read) {
    std::vector<Record> out;
    if (!root.contains(section)) return out;
    const Json& entries = root.at(section);
    if (!entries.is_array()) return Unexpected<Error>{bad_input(std::string("registry: \"") + section + "\" must be an array")};
    out.reserve(entries.size());
    for (std::size_t i = 0; i < entries.size(); ++i) {
        auto record = read(entries[i]);
        if (!record) return Unexpected<Error>{bad_input(std::string(section) + "[" + std::to_string(i) + "]: " + record.error())};
        out.push_back(std::move(record).value());
    }
    return out;
}

// The first entry whose key an earlier one has: "<section>[i]: duplicate <what> <key>".
template <class Record, class Key, class Name>
Status no_duplicates(const std::vector<Record>& records, const char* section, const char* what, Key key, Name name) {
    std::set<decltype(key(records.front()))> seen;
    for (std::size_t i = 0; i < records.size(); ++i) {
        if (seen.insert(key(records[i])).second) continue;
        return Unexpected<Error>{bad_input(std::string(section) + "[" + std::to_string(i) + "]: duplicate " + what + " " + name(records[i]))};
    }
    return Ok{};
}

Result<Parsed> parse_registry(std::string_view json_text) {
    if (json_text.size() > registry_file_bytes_max) return Unexpected<Error>{bad_input("registry file larger than 64 MiB")};
    Json root = Json::parse(json_text, nullptr, false);
    if (root.is_discarded() || !root.is_object()) return Unexpected<Error>{bad_input("registry: not a JSON object")};
    for (auto it = root.begin(); it != root.end(); ++it) {
        if (it.key() != "participants" && it.key() != "terminals" && it.key() != "cards") {
            return Unexpected<Error>{bad_input("registry: unknown field \"" + it.key() + "\"")};
        }
    }
    COCONUT_TRY(participants, read_section<Participant>(root, "participants", read_participant));
    COCONUT_TRY(terminals, read_section<TerminalRecord>(root, "terminals", read_terminal));
    COCONUT_TRY(cards, read_section<CardRecord>(root, "cards", read_card));
    const auto id_text = [](const auto& id) { return std::to_string(id); };
    if (auto s = no_duplicates(participants, "participants", "id", [](const Participant& p) { return p.id; },
                               [&](const Participant& p) { return id_text(p.id); });
        !s)
        return Unexpected<Error>{s.error()};
    if (auto s = no_duplicates(terminals, "terminals", "terminal_id", [](const TerminalRecord& t) { return t.terminal_id; },
                               [](const TerminalRecord& t) { return t.terminal_id; });
        !s)
        return Unexpected<Error>{s.error()};
    if (auto s = no_duplicates(cards, "cards", "asn", [](const CardRecord& c) { return c.asn; },
                               [](const CardRecord& c) { return bcd_to_digits(c.asn); });
        !s)
        return Unexpected<Error>{s.error()};
    return Parsed{std::move(participants), std::move(terminals), std::move(cards)};
}

// Applies `events` with `hook` in one commit; any event that is neither ok nor exists fails the
// whole commit (the hook reports it), so a registry load is all-or-nothing per commit.
Result<std::pair<std::size_t, std::size_t>> apply_all(ledger::Ledger& ledger, const std::vector<ledger::Event>& events,
                                                      std::function<lmdb::Status(lmdb::Txn&)> write_registry) {
    std::string failure;
    std::size_t accounts_created = 0, transfers_created = 0;
    ledger::Batch batch;
    batch.events = events;
    batch.after = [&](lmdb::Txn& txn, std::span<const ledger::EventResult> results) -> lmdb::Status {
        for (std::size_t i = 0; i < results.size(); ++i) {
            if (!ledger::succeeded(results[i].code)) {
                const bool account = std::holds_alternative<ledger::Account>(events[i]);
                const ledger::Id id = account ? std::get<ledger::Account>(events[i]).id : std::get<ledger::Transfer>(events[i]).id;
                failure = std::string(account ? "account " : "transfer ") + ledger::to_string(id) + ": " +
                          std::string(ledger::to_string(results[i].code));
                return Unexpected<lmdb::Error>{lmdb::Error{MDB_BAD_TXN, "registry load"}};
            }
            if (results[i].code == ledger::ResultCode::ok) {
                (std::holds_alternative<ledger::Account>(events[i]) ? accounts_created : transfers_created) += 1;
            }
        }
        return write_registry(txn);
    };
    auto applied = ledger.apply_group(std::span<const ledger::Batch>(&batch, 1));
    if (!failure.empty()) return Unexpected<Error>{Error{ErrorCode::conflict, failure}};
    if (!applied) return Unexpected<Error>{storage_error(applied.error())};
    return std::pair{accounts_created, transfers_created};
}

}  // namespace

Result<LoadReport> load_registry(ledger::Ledger& ledger, Registry& registry, std::string_view json_text) {
    COCONUT_TRY(parsed, parse_registry(json_text));
    LoadReport report;
    // Every terminal names a participant of this file or of the registry.
    std::set<std::uint64_t> known;
    for (const auto& p : parsed.participants) known.insert(p.id);
    for (const auto& t : parsed.terminals) {
        if (known.count(t.participant_id)) continue;
        COCONUT_TRY(stored, registry.participant(t.participant_id));
        if (!stored) {
            return Unexpected<Error>{bad_input("terminal " + t.terminal_id + ": participant " + std::to_string(t.participant_id) +
                                               " is neither in the file nor in the registry")};
        }
    }
    // Cards already registered keep their runtime state; their opening balances cannot change.
    for (auto& c : parsed.cards) {
        COCONUT_TRY(stored, registry.card(c.asn));
        if (!stored) continue;
        if (stored->opening_balance_fen != c.opening_balance_fen || stored->medical_opening_fen != c.medical_opening_fen) {
            return Unexpected<Error>{Error{ErrorCode::conflict, "card " + bcd_to_digits(c.asn) +
                                                                    ": opening balances differ from the registered ones (" +
                                                                    std::to_string(stored->opening_balance_fen) + "/" +
                                                                    std::to_string(stored->medical_opening_fen) + " fen)"}};
        }
        CardRecord kept = *stored;
        kept.status = c.status;
        kept.issuer_id = c.issuer_id;
        kept.tac_key_version = c.tac_key_version;
        c = kept;
    }

    // Fixed accounts, participants and terminals in one commit.
    {
        std::vector<ledger::Event> events;
        for (const auto& a : fixed_accounts()) events.emplace_back(a);
        for (const auto& p : parsed.participants) append_participant_opening(events, p.id);
        if (events.size() > ledger::batch_events_max) {
            return Unexpected<Error>{bad_input("registry: more than 4,000 participants in one file; split it")};
        }
        COCONUT_TRY(created, apply_all(ledger, events, [&](lmdb::Txn& txn) -> lmdb::Status {
                        for (const auto& p : parsed.participants) {
                            if (auto s = registry.put_participant(txn, p); !s) return s;
                        }
                        for (const auto& t : parsed.terminals) {
                            auto stored = registry.terminal_in(txn, t.terminal_id);
                            if (!stored) return Unexpected<lmdb::Error>{stored.error()};
                            TerminalRecord r = t;
                            if (*stored) {  // keep the runtime fields (STAN, batch and its totals)
                                r = **stored;
                                r.psam_terminal_id = t.psam_terminal_id;
                                r.participant_id = t.participant_id;
                                r.merchant_id = t.merchant_id;
                            }
                            if (auto s = registry.put_terminal(txn, r); !s) return s;
                        }
                        return Ok{};
                    }));
        report.accounts_created += created.first;
    }
    // Cards in chunks: 2 accounts + up to 2 opening transfers each.
    constexpr std::size_t events_per_card = 4;
    const std::size_t cards_per_commit = ledger::batch_events_max / events_per_card;
    for (std::size_t start = 0; start < parsed.cards.size(); start += cards_per_commit) {
        const std::size_t end = std::min(parsed.cards.size(), start + cards_per_commit);
        std::vector<ledger::Event> events;
        for (std::size_t i = start; i < end; ++i) append_card_opening(events, parsed.cards[i]);
        COCONUT_TRY(created, apply_all(ledger, events, [&](lmdb::Txn& txn) -> lmdb::Status {
                        for (std::size_t i = start; i < end; ++i) {
                            // A status set by the file is a hotlist change like any other (a new card
                            // counts as coming from active).
                            auto current = registry.card_in(txn, parsed.cards[i].asn);
                            if (!current) return Unexpected<lmdb::Error>{current.error()};
                            const CardStatus before = *current ? (*current)->status : CardStatus::active;
                            if (auto r = registry.record_status_change(txn, parsed.cards[i].asn, before, parsed.cards[i].status); !r) {
                                return Unexpected<lmdb::Error>{r.error()};
                            }
                            if (auto s = registry.put_card(txn, parsed.cards[i]); !s) return s;
                        }
                        return Ok{};
                    }));
        report.accounts_created += created.first;
        report.transfers_created += created.second;
    }
    report.participants = parsed.participants.size();
    report.terminals = parsed.terminals.size();
    report.cards = parsed.cards.size();
    return report;
}

Status set_card_status(ledger::Ledger& ledger, Registry& registry, const Asn& asn, CardStatus status) {
    COCONUT_TRY(stored, registry.card(asn));
    if (!stored) return Unexpected<Error>{bad_input("card " + bcd_to_digits(asn) + " is not registered")};
    // Status and hotlist entry in one commit, so the version a terminal downloads matches the registry.
    // The record is read again inside the write transaction: a booking may have changed it meanwhile.
    auto done = apply_all(ledger, {}, [&](lmdb::Txn& txn) -> lmdb::Status {
        auto current = registry.card_in(txn, asn);
        if (!current) return Unexpected<lmdb::Error>{current.error()};
        CardRecord card = *current ? **current : *stored;
        auto recorded = registry.record_status_change(txn, asn, card.status, status);
        if (!recorded) return Unexpected<lmdb::Error>{recorded.error()};
        card.status = status;
        return registry.put_card(txn, card);
    });
    if (!done) return Unexpected<Error>{done.error()};
    return Ok{};
}

Status set_terminal_status(ledger::Ledger& ledger, Registry& registry, std::string_view terminal_id, TerminalStatus status) {
    COCONUT_TRY(stored, registry.terminal(terminal_id));
    if (!stored) return Unexpected<Error>{bad_input("terminal " + std::string(terminal_id) + " is not registered")};
    auto done = apply_all(ledger, {}, [&](lmdb::Txn& txn) -> lmdb::Status {
        auto current = registry.terminal_in(txn, terminal_id);
        if (!current) return Unexpected<lmdb::Error>{current.error()};
        TerminalRecord terminal = *current ? **current : *stored;
        terminal.status = status;
        return registry.put_terminal(txn, terminal);
    });
    if (!done) return Unexpected<Error>{done.error()};
    return Ok{};
}

// ---- check ----------------------------------------------------------------------------------------------

namespace {

// The online tables against the ledger, and the hotlist log against the card statuses.
Status check_online(const ledger::Ledger& ledger, const Registry& registry, const std::vector<CardRecord>& cards,
                    CheckReport& report) {
    COCONUT_TRY(attempts, registry.load_attempts());
    report.load_attempts = attempts.size();
    for (const auto& a : attempts) {
        const ledger::Id id = online_load_transfer(a.asn, a.online_atc, a.attempt.attempt);
        COCONUT_TRY(transfer, ledger.lookup_transfer(id));
        if (!transfer || transfer->code != transfer_codes::online_load || (transfer->flags & ledger::transfer_flags::pending) == 0 ||
            transfer->credit_account_id != purse_shadow_account(a.asn) || transfer->amount != a.attempt.amount_fen) {
            report.problems.push_back("load of card " + bcd_to_digits(a.asn) + " online ATC " + std::to_string(a.online_atc) +
                                      ": no pending online_load transfer " + ledger::to_string(id) + " of " +
                                      std::to_string(a.attempt.amount_fen) + " fen to its purse shadow");
        }
    }
    COCONUT_TRY(holds, registry.holds());
    report.holds = holds.size();
    for (const auto& [id, hold] : holds) {
        COCONUT_TRY(transfer, ledger.lookup_transfer(id));
        if (!transfer || transfer->code != transfer_codes::clinic_medical || (transfer->flags & ledger::transfer_flags::pending) == 0 ||
            transfer->debit_account_id != medical_account(hold.asn) || transfer->amount > hold.requested_fen) {
            report.problems.push_back("hold " + ledger::to_string(id) + " of card " + bcd_to_digits(hold.asn) +
                                      ": no pending clinic_medical transfer from its medical account within the amount asked");
        }
    }
    std::set<Asn> listed;
    std::uint32_t chunk_index = 0;
    for (bool more = true; more; ++chunk_index) {
        COCONUT_TRY(chunk, registry.hotlist_chunk(0, chunk_index));
        for (const HotlistEntry& e : chunk.entries) {
            if (e.added) listed.insert(e.asn);
            else listed.erase(e.asn);
        }
        report.hotlist_version = chunk.version;
        more = chunk.more;
    }
    std::set<Asn> refused;
    for (const CardRecord& card : cards) {
        if (card.status != CardStatus::active) refused.insert(card.asn);
    }
    for (const Asn& asn : refused) {
        if (!listed.count(asn)) report.problems.push_back("card " + bcd_to_digits(asn) + " is not active but not on the hotlist log");
    }
    for (const Asn& asn : listed) {
        if (!refused.count(asn)) report.problems.push_back("card " + bcd_to_digits(asn) + " is on the hotlist log but active");
    }
    return Ok{};
}

}  // namespace

Result<CheckReport> check(const ledger::Ledger& ledger, const Registry& registry) {
    CheckReport report;
    auto ledger_report = ledger.check();
    if (!ledger_report) return Unexpected<Error>{storage_error(ledger_report.error())};
    report.ledger = std::move(ledger_report).value();
    COCONUT_TRY(cards, registry.cards());
    report.cards = cards.size();
    for (const CardRecord& card : cards) {
        const std::string name = "card " + bcd_to_digits(card.asn);
        COCONUT_TRY(shadow, ledger.lookup_account(purse_shadow_account(card.asn)));
        COCONUT_TRY(medical, ledger.lookup_account(medical_account(card.asn)));
        if (!shadow || shadow->ledger != ledgers::purse || shadow->code != account_codes::card_purse_shadow) {
            report.problems.push_back(name + ": purse shadow account missing or not on ledger 1 / code 1");
            continue;
        }
        if (!medical || medical->ledger != ledgers::medical || medical->code != account_codes::card_medical) {
            report.problems.push_back(name + ": medical account missing or not on ledger 2 / code 2");
        }
        const std::int64_t ledger_balance = static_cast<std::int64_t>(shadow->credits_posted) -
                                            static_cast<std::int64_t>(shadow->debits_posted) -
                                            static_cast<std::int64_t>(shadow->debits_pending);
        if (ledger_balance != card.shadow_balance_fen) {
            report.problems.push_back(name + ": registry shadow balance " + std::to_string(card.shadow_balance_fen) +
                                      " fen, purse shadow account " + std::to_string(ledger_balance) + " fen");
        }
    }
    for (ledger::Id suspense : {purse_suspense_account, medical_suspense_account}) {
        COCONUT_TRY(account, ledger.lookup_account(suspense));
        if (account && (account->debits_posted != 0 || account->debits_pending != 0)) {
            report.problems.push_back("suspense account " + ledger::to_string(suspense) +
                                      " was debited: money whose TAC failed left suspense");
        }
    }
    // Review records only ever debit the review claims account (review claims → suspense): nothing
    // credits it, so an unproven claim can never be turned into money anywhere.
    {
        COCONUT_TRY(account, ledger.lookup_account(purse_review_claims_account));
        if (account && (account->credits_posted != 0 || account->credits_pending != 0)) {
            report.problems.push_back("review claims account " + ledger::to_string(purse_review_claims_account) +
                                      " was credited: only review records (to suspense) may touch it");
        }
    }
    COCONUT_TRY(participants, registry.participants());
    COCONUT_TRY(terminals, registry.terminals());
    std::set<std::uint64_t> participant_ids;
    for (const auto& p : participants) participant_ids.insert(p.id);
    for (const auto& t : terminals) {
        if (!participant_ids.count(t.participant_id)) {
            report.problems.push_back("terminal " + t.terminal_id + ": participant " + std::to_string(t.participant_id) +
                                      " not registered");
        }
    }
    COCONUT_TRY(flags, registry.risk_flags());
    report.risk_flags = flags.size();
    if (auto s = check_online(ledger, registry, cards, report); !s) return Unexpected<Error>{s.error()};
    return report;
}

}  // namespace coconut::clearing
