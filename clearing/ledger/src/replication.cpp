// Replication of the ledger's commits (docs/DESIGN.md §10): the standby's side — change sets applied in
// stream order, each in one durable transaction with its stream position, its journal entries checked
// against this copy's hash chain.
#include "ledger_state.hpp"

#include <coconut/core/assert.hpp>

#include <fmt/format.h>

namespace coconut::ledger {

using namespace records;

namespace {

// Table "replication": "position" → the stream sequence of the last commit (u64 BE); "published" → the
// position (u64 BE) ‖ message id of the last commit this copy published as primary.
constexpr const char* replication_table = "replication";
constexpr std::string_view position_key = "position";
constexpr std::string_view published_key = "published";

ByteView key_bytes(std::string_view text) { return text_bytes(text); }

Error replication_error(const State& s, const std::string& what) {
    return Error{ErrorCode::replication, fmt::format("ledger in {}: {}", s.options.directory, what)};
}

lmdb::Result<std::uint64_t> read_position(const lmdb::Txn& txn, MDB_dbi table) {
    auto raw = txn.get(table, key_bytes(position_key));
    if (!raw) return Unexpected{raw.error()};
    if (!*raw) return std::uint64_t{0};
    if ((*raw)->size() != 8) return Unexpected{lmdb::Error{MDB_CORRUPTED, "replication position"}};
    return read_be(**raw);
}

std::optional<JournalHead> read_head(const lmdb::Txn& txn, const State& s) {
    auto raw = txn.get(s.tables.meta, key_bytes(head_key));
    if (!raw || !*raw) return JournalHead{};
    return decode_head(**raw);
}

// The journal entries after `before` up to `after` (both heads) chain from `before` and end at
// `after`'s hash; otherwise what is wrong.
std::optional<std::string> verify_extension(const lmdb::Txn& txn, const State& s, const JournalHead& before, const JournalHead& after) {
    if (after.sequence < before.sequence) return fmt::format("the head went back from entry {} to {}", before.sequence, after.sequence);
    Hash hash = before.hash;
    for (std::uint64_t sequence = before.sequence + 1; sequence <= after.sequence; ++sequence) {
        const SequenceKey key = sequence_key(sequence);
        auto raw = txn.get(s.tables.journal, ByteView(key.data(), key.size()));
        if (!raw || !*raw) return fmt::format("journal entry {} is missing", sequence);
        auto entry = decode_journal(sequence, **raw);
        if (!entry) return fmt::format("journal entry {} does not decode", sequence);
        if (chain_hash(hash, sequence, entry->kind, entry->timestamp, entry->payload) != entry->hash)
            return fmt::format("journal entry {} does not chain to entry {}", sequence, sequence - 1);
        hash = entry->hash;
    }
    if (hash != after.hash) return fmt::format("the head's hash is not journal entry {}'s", after.sequence);
    return std::nullopt;
}

}  // namespace

Result<JournalHead> Ledger::apply_replicated(ByteView changes, std::uint64_t position) {
    const ReplicatedCommit commit{changes, position};
    return apply_replicated(std::span<const ReplicatedCommit>(&commit, 1));
}

Result<JournalHead> Ledger::apply_replicated(std::span<const ReplicatedCommit> commits) {
    COCONUT_ASSERT(!commits.empty(), "apply_replicated is given at least one commit");
    State& s = *state_;
    if (s.options.read_only) return Unexpected{Error{ErrorCode::storage, "the ledger is open read-only"}};
    auto txn = lmdb::Txn::begin(s.env, lmdb::Txn::Mode::read_write);
    if (!txn) return Unexpected{to_error(txn.error(), s)};
    auto table = s.env.table_in(*txn, replication_table);
    if (!table) return Unexpected{to_error(table.error(), s)};
    auto held = read_position(*txn, *table);
    if (!held) return Unexpected{to_error(held.error(), s)};
    auto before = read_head(*txn, s);
    if (!before) return Unexpected{Error{ErrorCode::corrupt, "ledger journal head does not decode"}};
    std::uint64_t position = *held;
    for (const ReplicatedCommit& commit : commits) {
        if (commit.position != position + 1)
            return Unexpected{replication_error(s, fmt::format("replicated commit at position {} does not follow position {}",
                                                               commit.position, position))};
        if (auto applied = lmdb::apply_changes(s.env, *txn, commit.changes); !applied) return Unexpected{to_error(applied.error(), s)};
        const auto after = read_head(*txn, s);
        if (!after)
            return Unexpected{
                replication_error(s, fmt::format("the journal head written at position {} does not decode", commit.position))};
        if (auto wrong = verify_extension(*txn, s, *before, *after))
            return Unexpected{replication_error(s, fmt::format("replicated commit at position {}: {}", commit.position, *wrong))};
        before = after;
        position = commit.position;
    }
    if (auto stored = record_position(*txn, position); !stored) return Unexpected{to_error(stored.error(), s)};
    if (auto committed = txn->commit(); !committed) return Unexpected{to_error(committed.error(), s)};
    publish_head(s, *before);
    return *before;
}

Result<std::uint64_t> Ledger::replicated_position() const {
    const State& s = *state_;
    auto txn = lmdb::Txn::begin(s.env, lmdb::Txn::Mode::read_only);
    if (!txn) return Unexpected{to_error(txn.error(), s)};
    MDB_dbi table = 0;
    if (const int rc = mdb_dbi_open(txn->get(), replication_table, 0, &table); rc == MDB_NOTFOUND) return std::uint64_t{0};
    else if (rc != 0) return Unexpected{to_error(lmdb::Error{rc, "mdb_dbi_open"}, s)};
    auto position = read_position(*txn, table);
    if (!position) return Unexpected{to_error(position.error(), s)};
    return *position;
}

lmdb::Status Ledger::record_position(lmdb::Txn& txn, std::uint64_t position) {
    COCONUT_TRY(table, state_->env.table_in(txn, replication_table));
    const auto value = be_array<8>(position);
    return txn.put(table, key_bytes(position_key), ByteView(value.data(), value.size()));
}

lmdb::Status Ledger::record_position(lmdb::Txn& txn, std::uint64_t position, std::string_view message_id) {
    if (auto recorded = record_position(txn, position); !recorded) return recorded;
    COCONUT_TRY(table, state_->env.table_in(txn, replication_table));
    Bytes value = be_bytes(position, 8);
    append(value, text_bytes(message_id));
    return txn.put(table, key_bytes(published_key), value);
}

Result<std::optional<Ledger::Published>> Ledger::last_published() const {
    const State& s = *state_;
    auto txn = lmdb::Txn::begin(s.env, lmdb::Txn::Mode::read_only);
    if (!txn) return Unexpected{to_error(txn.error(), s)};
    MDB_dbi table = 0;
    if (const int rc = mdb_dbi_open(txn->get(), replication_table, 0, &table); rc == MDB_NOTFOUND) return std::optional<Published>{};
    else if (rc != 0) return Unexpected{to_error(lmdb::Error{rc, "mdb_dbi_open"}, s)};
    auto raw = txn->get(table, key_bytes(published_key));
    if (!raw) return Unexpected{to_error(raw.error(), s)};
    if (!*raw) return std::optional<Published>{};
    if ((*raw)->size() < 8) return Unexpected{Error{ErrorCode::corrupt, "ledger replication record \"published\" is too short"}};
    Published published;
    published.position = read_be((*raw)->first(8));
    published.message_id.assign(reinterpret_cast<const char*>((*raw)->data() + 8), (*raw)->size() - 8);
    return std::optional<Published>{std::move(published)};
}

}  // namespace coconut::ledger
