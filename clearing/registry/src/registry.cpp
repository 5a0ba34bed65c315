// The registry tables in the ledger's LMDB environment (registry.hpp): open, read, write, the
// group write-back of card and terminal records inside a ledger writer group.
#include "codecs.hpp"
#include "registry_internal.hpp"

#include <coconut/clearing/registry.hpp>
#include <coconut/core/assert.hpp>

#include <sodium.h>

#include <algorithm>
#include <map>

namespace coconut::clearing {

using namespace codec;
using detail::bad_input;
using detail::storage_error;

struct Registry::Tables {
    MDB_dbi cards = 0;
    MDB_dbi participants = 0;
    MDB_dbi terminals = 0;
    MDB_dbi risk = 0;
    MDB_dbi loads = 0;       // ASN ‖ online ATC → LoadAttempt
    MDB_dbi holds = 0;       // hold transfer id → HoldRecord
    MDB_dbi hotlist = 0;     // version BE8 → + / - ‖ ASN
    MDB_dbi reversals = 0;   // reversal key → amount counted (BE8)
    MDB_dbi purchases = 0;   // ASN ‖ PSAM terminal id ‖ terminal serial → PurchaseProof
    MDB_dbi challenges = 0;  // clinic challenge (16) used by a hold → empty
    MDB_dbi meta = 0;        // name → value: "challenge-key" (32 bytes)
    MDB_dbi visits = 0;      // 'h' ‖ hold id → purse part id; 'p' ‖ purse part id → hold id (clinic visits)
};

// ---- Registry -------------------------------------------------------------------------------------------

// The group write-back (Registry::group_hooks): the context of one ledger writer group, attached by the
// group commit to its transaction. Records read or written through that transaction, decoded; `dirty`
// ones are put by the group's finish hook.
struct Registry::GroupCache final : lmdb::TxnContext {
    template <class Record>
    struct Entry {
        Record record;
        bool dirty = false;
    };
    bool active = false;  // between the group's begin and end
    std::map<Asn, Entry<CardRecord>> cards;
    std::map<std::string, Entry<TerminalRecord>, std::less<>> terminals;
};

Registry::Registry(lmdb::Env& env, std::unique_ptr<Tables> tables, ChallengeKey challenge_key)
    : env_(env), tables_(std::move(tables)), challenge_key_(challenge_key), group_(std::make_unique<GroupCache>()) {}
Registry::~Registry() = default;

Registry::GroupCache* Registry::group_cache_for(const lmdb::Txn& txn) const {
    // Only the context this registry's hooks made: another transaction carries none (or another's).
    if (txn.context() != group_.get()) return nullptr;
    COCONUT_ASSERT(group_->active, "a writer group's context outside its group");
    return group_.get();
}

ledger::GroupHooks Registry::group_hooks() const {
    GroupCache* cache = group_.get();
    ledger::GroupHooks hooks;
    hooks.begin = [cache](lmdb::Txn&) -> lmdb::TxnContext* {
        COCONUT_ASSERT(!cache->active && cache->cards.empty() && cache->terminals.empty(), "one group at a time");
        cache->active = true;
        return cache;
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
        cache->active = false;
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
    for (Named n : {Named{"cards", &tables->cards}, Named{"participants", &tables->participants}, Named{"terminals", &tables->terminals},
                    Named{"risk", &tables->risk}, Named{"loads", &tables->loads}, Named{"holds", &tables->holds},
                    Named{"hotlist", &tables->hotlist}, Named{"reversals", &tables->reversals}, Named{"purchases", &tables->purchases},
                    Named{"challenges", &tables->challenges}, Named{"meta", &tables->meta}, Named{"visits", &tables->visits}}) {
        auto dbi = env.open_table(n.name);
        if (!dbi) return Unexpected<Error>{storage_error(dbi.error())};
        *n.dbi = *dbi;
    }
    auto challenge_key = load_challenge_key(env, tables->meta);
    if (!challenge_key) return Unexpected<Error>{challenge_key.error()};
    return std::unique_ptr<Registry>(new Registry(env, std::move(tables), *challenge_key));
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
    COCONUT_ASSERT(decode_purchase_proof(bytes) == proof, "purchase proof round trip");
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
    const auto back = decode_card(bytes);
    COCONUT_ASSERT(back && back->asn == card.asn && back->shadow_balance_fen == card.shadow_balance_fen &&
                       back->offline_atc_next == card.offline_atc_next && back->offline_atc_ahead == card.offline_atc_ahead,
                   "card record round trip");
    return txn.put(tables_->cards, card.asn, bytes);
}

lmdb::Status Registry::put_participant(lmdb::Txn& txn, const Participant& p) const {
    const std::string text = encode_participant(p);
    COCONUT_ASSERT(decode_participant(text_view(text)).has_value(), "participant record round trip");
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
    const auto back = decode_terminal(bytes);
    COCONUT_ASSERT(back && back->terminal_id == t.terminal_id && back->last_stan == t.last_stan &&
                       back->batch_debits_fen == t.batch_debits_fen && back->status == t.status,
                   "terminal record round trip");
    return txn.put(tables_->terminals, text_view(t.terminal_id), bytes);
}

lmdb::Result<bool> Registry::put_risk(lmdb::Txn& txn, const RiskFlag& f) const {
    const Bytes key = risk_key(f);
    auto existing = txn.get(tables_->risk, key);
    if (!existing) return Unexpected<lmdb::Error>{existing.error()};
    if (*existing) return false;
    const Bytes value = encode_risk_value(f);
    COCONUT_ASSERT(decode_risk(key, value).has_value(), "risk flag round trip");
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
    return scan<CardRecord>(
        env_, tables_->cards, [](ByteView, ByteView v) { return decode_card(v); }, "card");
}

Result<std::vector<Participant>> Registry::participants() const {
    return scan<Participant>(
        env_, tables_->participants, [](ByteView, ByteView v) { return decode_participant(v); }, "participant");
}

Result<std::vector<TerminalRecord>> Registry::terminals() const {
    return scan<TerminalRecord>(
        env_, tables_->terminals, [](ByteView, ByteView v) { return decode_terminal(v); }, "terminal");
}

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

Result<std::vector<RiskFlag>> Registry::risk_flags() const { return scan<RiskFlag>(env_, tables_->risk, decode_risk, "risk"); }

// ---- online loads, clinic holds, hotlist ------------------------------------------------------------------

namespace {

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
    COCONUT_ASSERT(decode_load_attempt(bytes).has_value(), "load attempt round trip");
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
    COCONUT_ASSERT(decode_hold(bytes).has_value(), "hold round trip");
    return txn.put(tables_->holds, id_bytes(hold_id), bytes);
}

namespace {

char visit_direction(Registry::VisitSide side) {
    switch (side) {
        case Registry::VisitSide::hold: return 'h';
        case Registry::VisitSide::purse: return 'p';
        case Registry::VisitSide::refund_of: return 'r';
        case Registry::VisitSide::credit: return 'f';
    }
    return 'h';
}

Bytes visit_key(char direction, const ledger::Id& id) {
    Bytes key{static_cast<std::uint8_t>(direction)};
    append(key, id_bytes(id));
    return key;
}

}  // namespace

lmdb::Result<bool> Registry::put_visit(lmdb::Txn& txn, const ledger::Id& hold_id, const ledger::Id& purse_id) const {
    auto existing = txn.get(tables_->visits, visit_key('h', hold_id));
    if (!existing) return Unexpected<lmdb::Error>{existing.error()};
    if (*existing) return false;  // the visit has its purse part
    if (auto put = txn.put(tables_->visits, visit_key('h', hold_id), id_bytes(purse_id)); !put) return Unexpected<lmdb::Error>{put.error()};
    if (auto put = txn.put(tables_->visits, visit_key('p', purse_id), id_bytes(hold_id)); !put) return Unexpected<lmdb::Error>{put.error()};
    return true;
}

lmdb::Result<std::optional<ledger::Id>> Registry::visit_in(const lmdb::Txn& txn, const ledger::Id& id, VisitSide side) const {
    auto value = txn.get(tables_->visits, visit_key(visit_direction(side), id));
    if (!value) return Unexpected<lmdb::Error>{value.error()};
    if (!*value || (*value)->size() != 16) return std::optional<ledger::Id>{};
    const ByteView bytes = **value;
    return std::optional<ledger::Id>{ledger::Id{read_be(bytes.first(8)), read_be(bytes.subspan(8))}};
}

Result<std::optional<ledger::Id>> Registry::visit(const ledger::Id& id, VisitSide side) const {
    return in_read_txn<std::optional<ledger::Id>>(env_, [&](lmdb::Txn& txn) -> Result<std::optional<ledger::Id>> {
        auto found = visit_in(txn, id, side);
        if (!found) return Unexpected<Error>{storage_error(found.error())};
        return *found;
    });
}

lmdb::Status Registry::put_purchase_refund(lmdb::Txn& txn, const ledger::Id& purchase_id, const ledger::Id& credit_id) const {
    if (auto put = txn.put(tables_->visits, visit_key('r', purchase_id), id_bytes(credit_id)); !put) return put;
    if (credit_id.zero()) return Ok{};
    return txn.put(tables_->visits, visit_key('f', credit_id), id_bytes(purchase_id));
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
            if (!entry)
                return Unexpected<Error>{
                    Error{ErrorCode::storage, "hotlist version " + std::to_string(version) + " missing or undecodable"}};
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
    const HotlistEntry entry{after != CardStatus::active, asn};
    const Bytes value = encode_hotlist_entry(entry);
    COCONUT_ASSERT(decode_hotlist_entry(value) == entry, "hotlist entry round trip");
    if (auto put = txn.put(tables_->hotlist, be_bytes(version, 8), value); !put) return Unexpected<lmdb::Error>{put.error()};
    return std::optional<std::uint64_t>{version};
}

}  // namespace coconut::clearing
