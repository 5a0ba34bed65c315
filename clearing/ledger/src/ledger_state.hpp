// The ledger's internals shared by its source files: the open environment, its tables and the
// committed journal head. Not part of the public API.
#pragma once

#include "records.hpp"

#include <coconut/ledger/ledger.hpp>

#include <mutex>

namespace coconut::ledger {

// The ledger's tables (clearing/LEDGER.md §2).
struct Tables {
    MDB_dbi accounts = 0;       // id → Account
    MDB_dbi transfers = 0;      // id → journal sequence of its transfer_created entry (MDB_NOOVERWRITE)
    MDB_dbi pending = 0;        // pending transfer id → PendingState
    MDB_dbi expiries = 0;       // expires_at ‖ id → (empty): open holds with a timeout, by due time
    MDB_dbi failed = 0;         // transfer id → ResultCode of its transient failure
    MDB_dbi account_index = 0;  // account id ‖ timestamp → transfer id [‖ balance after it, with `history`]
    MDB_dbi journal = 0;        // sequence → kind ‖ timestamp ‖ hash ‖ payload
    MDB_dbi meta = 0;           // "head" → JournalHead
};

struct Ledger::State {
    State(Options options_in, lmdb::Env env_in) : options(std::move(options_in)), env(std::move(env_in)) {}
    Options options;
    lmdb::Env env;
    Tables tables{};
    mutable std::mutex head_mutex;
    JournalHead committed{};  // guarded by head_mutex (read by any thread, written by the writer)
};
using State = Ledger::State;

Error to_error(const lmdb::Error& error, const State& state);

// The meta table's key of the journal head.
inline constexpr std::string_view head_key = "head";
// Reads the committed head from the environment into state.committed.
Status<Error> refresh_head(State& state);
// Makes `head` the committed head once its commit succeeded.
void publish_head(State& state, const JournalHead& head);

// Storage errors inside the state machine: lmdb errors pass through; an undecodable record is
// reported as an lmdb-style error with rc MDB_CORRUPTED so callers see it as corrupt.
inline Unexpected<lmdb::Error> corrupted(const char* where) { return Unexpected{lmdb::Error{MDB_CORRUPTED, where}}; }

// The transfer `id` as its journal entry holds it (the transfers table maps an id to that entry's
// sequence, clearing/LEDGER.md §2); nullopt when no transfer has that id. A reference that does not
// lead to a transfer_created entry of that id is reported as corrupt.
lmdb::Result<std::optional<Transfer>> find_transfer(const lmdb::Txn& txn, const Tables& tables, const Id& id);

}  // namespace coconut::ledger
