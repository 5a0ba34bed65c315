// The ledger's state machine: validation in ResultCode precedence order, then the writes of one
// event, inside the caller's write transaction. Nothing is written for an event until every check
// has passed, so a failed event leaves no trace except its failed-id record.
#include "ledger_state.hpp"

#include <coconut/core/assert.hpp>

#include <fmt/format.h>

#include <openssl/evp.h>

#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <cstdlib>
#include <ctime>
#include <optional>
#include <unordered_map>
#include <utility>
#include <vector>

namespace coconut::ledger {

using namespace records;

namespace {

constexpr std::uint64_t ns_per_s = 1'000'000'000;

ByteView view(std::string_view text) { return {reinterpret_cast<const std::uint8_t*>(text.data()), text.size()}; }

std::uint64_t realtime_ns() {
    timespec now{};
    clock_gettime(CLOCK_REALTIME, &now);
    return static_cast<std::uint64_t>(now.tv_sec) * ns_per_s + static_cast<std::uint64_t>(now.tv_nsec);
}

bool add_overflows(std::uint64_t a, std::uint64_t b) { return a > ~std::uint64_t{0} - b; }

// One event's outcome, or the storage error that stops the whole batch.
using Step = lmdb::Result<EventResult>;
EventResult rejected(ResultCode code) { return EventResult{code, 0}; }

// Bytes this process may still write in `directory`'s file system: a root process also gets the
// blocks reserved for root. Nothing (nullopt) when statvfs fails.
std::optional<std::uint64_t> free_bytes(const std::string& directory) {
    struct statvfs fs {};
    if (::statvfs(directory.c_str(), &fs) != 0) return std::nullopt;
    const std::uint64_t blocks = ::geteuid() == 0 ? fs.f_bfree : fs.f_bavail;
    return blocks * fs.f_frsize;
}

// ENOSPC, or EIO (a short write) on a file system with (almost) no room left: the free bytes then.
std::optional<std::uint64_t> storage_full(const lmdb::Error& error, const std::string& directory) {
    if (error.rc != ENOSPC && error.rc != EIO) return std::nullopt;
    const auto free = free_bytes(directory);
    if (error.rc == ENOSPC) return free.value_or(0);
    if (free && *free < storage_full_below_bytes) return free;
    return std::nullopt;
}

}  // namespace

Error to_error(const lmdb::Error& error, const State& state) {
    if (auto free = storage_full(error, state.options.directory)) {
        return Error{ErrorCode::storage_full,
                     fmt::format("storage full: {} has {} bytes free; the commit was refused, nothing was lost ({}: {})",
                                 state.options.directory, *free, error.operation, std::strerror(ENOSPC))};
    }
    if (error.rc == lmdb::commit_refused_rc || error.rc == lmdb::change_mismatch_rc) {
        return Error{ErrorCode::replication, fmt::format("ledger in {}: {}", state.options.directory, error.message())};
    }
    if (error.rc == MDB_CORRUPTED) {
        return Error{ErrorCode::corrupt, fmt::format("ledger in {} is corrupt: {}", state.options.directory, error.operation)};
    }
    if (error.map_full()) {
        return Error{ErrorCode::map_full,
                     fmt::format("ledger map full: the LMDB map of {} bytes in {} is used up; nothing of this "
                                 "batch was written. Restart with a larger map size (coconut-clearingd --map-size) ({})",
                                 state.env.map_size_bytes(), state.options.directory, error.message())};
    }
    return Error{ErrorCode::storage, fmt::format("ledger storage error in {}: {}", state.options.directory, error.message())};
}

Error corrupt(std::string what) { return Error{ErrorCode::corrupt, std::move(what)}; }

// ---- transaction-scoped work ----------------------------------------------------------------------

// The accounts a write transaction has read or changed, decoded, with the changed ones written back
// once when the transaction's events are done (flush_accounts) instead of at every transfer: a group
// of bookings debits many cards but credits the same few payables, so this saves a B-tree search and
// a record rewrite per account and transfer. The state machine reads and writes accounts only here;
// an account's history row (per transfer) and a new account's record are still written at once.
struct AccountCache {
    struct Entry {
        Account account;
        bool dirty = false;  // changed since read: to write back
    };
    std::unordered_map<Id, Entry, IdHash> entries;
    // While a linked chain runs in its nested transaction: every entry's state before each change,
    // replayed backwards if the chain fails (then its nested transaction is aborted too).
    std::vector<std::pair<Id, std::optional<Entry>>>* undo = nullptr;

    void set(const Id& id, Entry entry) {
        auto it = entries.find(id);
        if (undo != nullptr) undo->emplace_back(id, it == entries.end() ? std::nullopt : std::optional<Entry>(it->second));
        if (it == entries.end()) {
            entries.emplace(id, entry);
        } else {
            it->second = entry;
        }
    }
    void roll_back(std::vector<std::pair<Id, std::optional<Entry>>>& log) {
        for (auto it = log.rbegin(); it != log.rend(); ++it) {
            if (it->second) {
                entries.insert_or_assign(it->first, *it->second);
            } else {
                entries.erase(it->first);
            }
        }
    }
};

struct Work {
    State& state;
    lmdb::Txn* txn;
    JournalHead head;  // advanced by every journal entry; restored when a chain rolls back
    AccountCache accounts{};

    std::uint64_t next_timestamp() { return ++head.timestamp; }
    std::uint64_t peek_timestamp() const { return head.timestamp + 1; }
};

namespace {

lmdb::Result<std::optional<Account>> get_account(Work& w, const Id& id) {
    if (auto it = w.accounts.entries.find(id); it != w.accounts.entries.end()) return std::optional<Account>(it->second.account);
    auto raw = w.txn->get(w.state.tables.accounts, encode(id));
    if (!raw) return Unexpected{raw.error()};
    if (!*raw) return std::optional<Account>();
    auto account = decode_account(**raw);
    if (!account || account->id != id) return corrupted("account record");
    w.accounts.set(id, {*account, false});
    return account;
}

// An account's balance limits (its flags) hold: what every transfer's check keeps true.
bool within_limits(const Account& a) {
    if ((a.flags & account_flags::debits_must_not_exceed_credits) != 0 && a.debits_pending + a.debits_posted > a.credits_posted) {
        return false;
    }
    return (a.flags & account_flags::credits_must_not_exceed_debits) == 0 || a.credits_pending + a.credits_posted <= a.debits_posted;
}

// Writes back the accounts changed in this transaction: once, after its last event (see AccountCache).
lmdb::Status flush_accounts(Work& w) {
    for (auto& [id, entry] : w.accounts.entries) {
        if (!entry.dirty) continue;
        COCONUT_ASSERT(entry.account.id == id && within_limits(entry.account), "a changed account keeps its id and its limits");
        const auto bytes = encode(entry.account);
        COCONUT_ASSERT(decode_account(bytes) == entry.account, "account record round trip");
        if (auto put = w.txn->put(w.state.tables.accounts, encode(id), bytes); !put) return put;
        entry.dirty = false;
    }
    return Ok{};
}

lmdb::Result<std::optional<Transfer>> get_transfer(Work& w, const Id& id) { return find_transfer(*w.txn, w.state.tables, id); }

lmdb::Result<std::optional<PendingState>> get_pending_state(Work& w, const Id& id) {
    auto raw = w.txn->get(w.state.tables.pending, encode(id));
    if (!raw) return Unexpected{raw.error()};
    if (!*raw) return std::optional<PendingState>();
    if ((*raw)->size() != 1 || (**raw)[0] < 1 || (**raw)[0] > 4) return corrupted("pending state");
    return std::optional<PendingState>(static_cast<PendingState>((**raw)[0]));
}

lmdb::Status journal_append(Work& w, JournalKind kind, std::uint64_t timestamp, ByteView payload) {
    JournalEntry entry;
    entry.sequence = w.head.sequence + 1;
    entry.kind = kind;
    entry.timestamp = timestamp;
    entry.payload.assign(payload.begin(), payload.end());
    entry.hash = chain_hash(w.head.hash, entry.sequence, kind, timestamp, payload);
    // MDB_APPEND: sequence keys only grow, so LMDB can skip the search and fill pages completely.
    if (auto put = w.txn->put(w.state.tables.journal, sequence_key(entry.sequence), encode_journal_value(entry), MDB_APPEND); !put) {
        return put;
    }
    w.head.sequence = entry.sequence;
    w.head.hash = entry.hash;
    return Ok{};
}

// Records an account's change; flush_accounts writes it back once per transaction.
void put_account(Work& w, const Account& account) { w.accounts.set(account.id, {account, true}); }

// The account index row of `account` at `timestamp` (clearing/LEDGER.md §2): the id of the transfer
// that changed it, then — when the account keeps history — its balance after that change. One row
// serves both the account's transfers and its balance history, one B-tree insert per account and
// event. An expiry changes balances without a transfer: its row has a zero id (history only).
lmdb::Status put_index_row(Work& w, const Account& account, std::uint64_t timestamp, const Id& transfer) {
    const bool history = (account.flags & account_flags::history) != 0;
    if (!history && transfer.zero()) return Ok{};
    std::array<std::uint8_t, id_size + balance_size> value{};
    const IdBytes id = encode(transfer);
    std::copy(id.begin(), id.end(), value.begin());
    if (history) {
        const BalanceBytes balance = encode_balance(account);
        std::copy(balance.begin(), balance.end(), value.begin() + id_size);
    }
    return w.txn->put(w.state.tables.account_index, account_time_key(account.id, timestamp),
                      ByteView(value.data(), history ? value.size() : id_size));
}

// The transfer: its journal entry, which holds the record, its id's reference to that entry, and its
// two account index rows (dr and cr: its accounts as it left them). The record is written once, in the
// journal's append-only pages; the id table's rows are 8 bytes (clearing/LEDGER.md §2).
lmdb::Status put_transfer(Work& w, const Transfer& stored, const Account& dr, const Account& cr) {
    COCONUT_ASSERT(dr.id == stored.debit_account_id && cr.id == stored.credit_account_id);
    const auto bytes = encode(stored);
    COCONUT_ASSERT(decode_transfer(bytes) == stored);             // pair assertion: what we write decodes to what we meant
    const SequenceKey entry = sequence_key(w.head.sequence + 1);  // the sequence journal_append gives it
    if (auto put = w.txn->put(w.state.tables.transfers, encode(stored.id), entry, MDB_NOOVERWRITE); !put) return put;
    for (const Account* account : {&dr, &cr}) {
        if (auto put = put_index_row(w, *account, stored.timestamp, stored.id); !put) return put;
    }
    auto appended = journal_append(w, JournalKind::transfer_created, stored.timestamp, bytes);
    COCONUT_ASSERT(!appended || sequence_key(w.head.sequence) == entry);
    return appended;
}

lmdb::Status put_pending_state(Work& w, const Id& id, PendingState state) {
    const std::uint8_t value = static_cast<std::uint8_t>(state);
    return w.txn->put(w.state.tables.pending, encode(id), ByteView(&value, 1));
}

std::uint64_t expires_at_ns(const Transfer& pending) { return pending.timestamp + std::uint64_t{pending.timeout_s} * ns_per_s; }

// ---- accounts -----------------------------------------------------------------------------------------

ResultCode compare_existing(const Account& a, const Account& e) {
    if (a.flags != e.flags) return ResultCode::exists_with_different_flags;
    if (a.user_data_128 != e.user_data_128) return ResultCode::exists_with_different_user_data_128;
    if (a.user_data_64 != e.user_data_64) return ResultCode::exists_with_different_user_data_64;
    if (a.user_data_32 != e.user_data_32) return ResultCode::exists_with_different_user_data_32;
    if (a.ledger != e.ledger) return ResultCode::exists_with_different_ledger;
    if (a.code != e.code) return ResultCode::exists_with_different_code;
    return ResultCode::exists;
}

Step create_account(Work& w, const Account& a) {
    if (a.timestamp != 0) return rejected(ResultCode::timestamp_must_be_zero);
    if ((a.flags & ~account_flags::all) != 0) return rejected(ResultCode::reserved_flag);
    if (a.id.zero()) return rejected(ResultCode::id_must_not_be_zero);
    if (a.id == Id::max()) return rejected(ResultCode::id_must_not_be_int_max);
    auto existing = get_account(w, a.id);
    if (!existing) return Unexpected{existing.error()};
    if (*existing) {
        const ResultCode code = compare_existing(a, **existing);
        return EventResult{code, code == ResultCode::exists ? (*existing)->timestamp : 0};
    }
    if ((a.flags & account_flags::debits_must_not_exceed_credits) != 0 && (a.flags & account_flags::credits_must_not_exceed_debits) != 0) {
        return rejected(ResultCode::flags_are_mutually_exclusive);
    }
    if (a.debits_pending != 0) return rejected(ResultCode::debits_pending_must_be_zero);
    if (a.debits_posted != 0) return rejected(ResultCode::debits_posted_must_be_zero);
    if (a.credits_pending != 0) return rejected(ResultCode::credits_pending_must_be_zero);
    if (a.credits_posted != 0) return rejected(ResultCode::credits_posted_must_be_zero);
    if (a.ledger == 0) return rejected(ResultCode::ledger_must_not_be_zero);
    if (a.code == 0) return rejected(ResultCode::code_must_not_be_zero);

    Account stored = a;
    stored.timestamp = w.next_timestamp();
    const auto bytes = encode(stored);
    COCONUT_ASSERT(decode_account(bytes) == stored);
    if (auto put = w.txn->put(w.state.tables.accounts, encode(stored.id), bytes, MDB_NOOVERWRITE); !put) {
        return Unexpected{put.error()};
    }
    if (auto journal = journal_append(w, JournalKind::account_created, stored.timestamp, bytes); !journal) {
        return Unexpected{journal.error()};
    }
    return EventResult{ResultCode::ok, stored.timestamp};
}

// ---- transfers ----------------------------------------------------------------------------------------

bool resolves_pending(const Transfer& t) { return (t.flags & (transfer_flags::post_pending | transfer_flags::void_pending)) != 0; }

ResultCode compare_existing(const Transfer& t, const Transfer& e) {
    // For a post or void, zero account/ledger/code fields mean "as the pending transfer", and the
    // amount may be given as amount_max (post the full amount) or, for a void, 0: the stored
    // transfer has them filled in, so those spellings match it.
    const bool resolving = resolves_pending(e);
    auto matches = [&](const Id& given, const Id& stored) { return (resolving && given.zero()) || given == stored; };
    if (t.flags != e.flags) return ResultCode::exists_with_different_flags;
    if (t.pending_id != e.pending_id) return ResultCode::exists_with_different_pending_id;
    if (t.timeout_s != e.timeout_s) return ResultCode::exists_with_different_timeout;
    if (!matches(t.debit_account_id, e.debit_account_id)) return ResultCode::exists_with_different_debit_account_id;
    if (!matches(t.credit_account_id, e.credit_account_id)) return ResultCode::exists_with_different_credit_account_id;
    const bool void_any_amount = (e.flags & transfer_flags::void_pending) != 0 && t.amount == 0;
    const bool post_full = resolving && t.amount == amount_max;
    if (!void_any_amount && !post_full && t.amount != e.amount) return ResultCode::exists_with_different_amount;
    if (t.user_data_128 != e.user_data_128) return ResultCode::exists_with_different_user_data_128;
    if (t.user_data_64 != e.user_data_64) return ResultCode::exists_with_different_user_data_64;
    if (t.user_data_32 != e.user_data_32) return ResultCode::exists_with_different_user_data_32;
    if (!(resolving && t.ledger == 0) && t.ledger != e.ledger) return ResultCode::exists_with_different_ledger;
    if (!(resolving && t.code == 0) && t.code != e.code) return ResultCode::exists_with_different_code;
    return ResultCode::exists;
}

// The post / void `t` against its pending transfer `p`: what does not match (the refusal's code), or
// nothing; `amount` becomes what the resolution moves (a post may move less than was held).
std::optional<ResultCode> resolution_mismatch(const Transfer& t, const Transfer& p, bool post, std::uint64_t& amount) {
    if ((p.flags & transfer_flags::pending) == 0) return ResultCode::pending_transfer_not_pending;
    if (!t.debit_account_id.zero() && t.debit_account_id != p.debit_account_id) {
        return ResultCode::pending_transfer_has_different_debit_account_id;
    }
    if (!t.credit_account_id.zero() && t.credit_account_id != p.credit_account_id) {
        return ResultCode::pending_transfer_has_different_credit_account_id;
    }
    if (t.ledger != 0 && t.ledger != p.ledger) return ResultCode::pending_transfer_has_different_ledger;
    if (t.code != 0 && t.code != p.code) return ResultCode::pending_transfer_has_different_code;
    amount = p.amount;
    if (post) {
        amount = t.amount == amount_max ? p.amount : t.amount;
        if (amount > p.amount) return ResultCode::exceeds_pending_transfer_amount;
    } else if (t.amount != 0 && t.amount != amount_max && t.amount != p.amount) {
        return ResultCode::pending_transfer_has_different_amount;
    }
    COCONUT_ASSERT(amount <= p.amount);
    return std::nullopt;
}

Step post_or_void(Work& w, const Transfer& t) {
    const bool post = (t.flags & transfer_flags::post_pending) != 0;
    if (t.pending_id.zero()) return rejected(ResultCode::pending_id_must_not_be_zero);
    if (t.pending_id == Id::max()) return rejected(ResultCode::pending_id_must_not_be_int_max);
    if (t.pending_id == t.id) return rejected(ResultCode::pending_id_must_be_different);
    if (t.timeout_s != 0) return rejected(ResultCode::timeout_reserved_for_pending_transfer);

    auto found = get_transfer(w, t.pending_id);
    if (!found) return Unexpected{found.error()};
    if (!*found) return rejected(ResultCode::pending_transfer_not_found);
    const Transfer& p = **found;
    std::uint64_t amount = 0;
    if (auto mismatch = resolution_mismatch(t, p, post, amount)) return rejected(*mismatch);

    auto state = get_pending_state(w, p.id);
    if (!state) return Unexpected{state.error()};
    if (!*state) return corrupted("pending transfer without state");
    if (**state == PendingState::posted) return rejected(ResultCode::pending_transfer_already_posted);
    if (**state == PendingState::voided) return rejected(ResultCode::pending_transfer_already_voided);
    if (**state == PendingState::expired) return rejected(ResultCode::pending_transfer_expired);
    // Due but not yet swept (the sweep runs at the start of each commit): expired all the same.
    if (p.timeout_s != 0 && expires_at_ns(p) <= w.peek_timestamp()) return rejected(ResultCode::pending_transfer_expired);

    auto debit = get_account(w, p.debit_account_id);
    if (!debit) return Unexpected{debit.error()};
    auto credit = get_account(w, p.credit_account_id);
    if (!credit) return Unexpected{credit.error()};
    if (!*debit || !*credit) return corrupted("pending transfer's account missing");
    Account dr = **debit;
    Account cr = **credit;
    COCONUT_ASSERT(dr.debits_pending >= p.amount && cr.credits_pending >= p.amount);
    if (post && add_overflows(dr.debits_posted, amount)) return rejected(ResultCode::overflows_debits_posted);
    if (post && add_overflows(cr.credits_posted, amount)) return rejected(ResultCode::overflows_credits_posted);

    Transfer stored = t;
    stored.debit_account_id = p.debit_account_id;
    stored.credit_account_id = p.credit_account_id;
    stored.ledger = p.ledger;
    stored.code = p.code;
    stored.amount = amount;
    stored.timestamp = w.next_timestamp();
    dr.debits_pending -= p.amount;
    cr.credits_pending -= p.amount;
    if (post) {
        dr.debits_posted += amount;
        cr.credits_posted += amount;
    }
    put_account(w, dr);
    put_account(w, cr);
    if (auto s = put_pending_state(w, p.id, post ? PendingState::posted : PendingState::voided); !s) {
        return Unexpected{s.error()};
    }
    if (p.timeout_s != 0) {
        if (auto d = w.txn->del(w.state.tables.expiries, expiry_key(expires_at_ns(p), p.id)); !d) {
            return Unexpected{d.error()};
        }
    }
    if (auto s = put_transfer(w, stored, dr, cr); !s) return Unexpected{s.error()};
    return EventResult{ResultCode::ok, stored.timestamp};
}

Step single_or_pending(Work& w, const Transfer& t) {
    const bool pending = (t.flags & transfer_flags::pending) != 0;
    if (t.debit_account_id.zero()) return rejected(ResultCode::debit_account_id_must_not_be_zero);
    if (t.debit_account_id == Id::max()) return rejected(ResultCode::debit_account_id_must_not_be_int_max);
    if (t.credit_account_id.zero()) return rejected(ResultCode::credit_account_id_must_not_be_zero);
    if (t.credit_account_id == Id::max()) return rejected(ResultCode::credit_account_id_must_not_be_int_max);
    if (t.debit_account_id == t.credit_account_id) return rejected(ResultCode::accounts_must_be_different);
    if (!t.pending_id.zero()) return rejected(ResultCode::pending_id_must_be_zero);
    if (t.timeout_s != 0 && !pending) return rejected(ResultCode::timeout_reserved_for_pending_transfer);
    // Amount 0 is a valid transfer (TigerBeetle ≥ 0.16): it records an event and moves nothing.
    if (t.ledger == 0) return rejected(ResultCode::ledger_must_not_be_zero);
    if (t.code == 0) return rejected(ResultCode::code_must_not_be_zero);

    auto debit = get_account(w, t.debit_account_id);
    if (!debit) return Unexpected{debit.error()};
    if (!*debit) return rejected(ResultCode::debit_account_not_found);
    auto credit = get_account(w, t.credit_account_id);
    if (!credit) return Unexpected{credit.error()};
    if (!*credit) return rejected(ResultCode::credit_account_not_found);
    Account dr = **debit;
    Account cr = **credit;
    if (dr.ledger != cr.ledger) return rejected(ResultCode::accounts_must_have_the_same_ledger);
    if (t.ledger != dr.ledger) return rejected(ResultCode::transfer_must_have_the_same_ledger_as_accounts);

    const std::uint64_t amount = t.amount;
    if (pending && add_overflows(dr.debits_pending, amount)) return rejected(ResultCode::overflows_debits_pending);
    if (pending && add_overflows(cr.credits_pending, amount)) return rejected(ResultCode::overflows_credits_pending);
    if (!pending && add_overflows(dr.debits_posted, amount)) return rejected(ResultCode::overflows_debits_posted);
    if (!pending && add_overflows(cr.credits_posted, amount)) return rejected(ResultCode::overflows_credits_posted);
    if (add_overflows(dr.debits_pending, dr.debits_posted) || add_overflows(dr.debits_pending + dr.debits_posted, amount)) {
        return rejected(ResultCode::overflows_debits);
    }
    if (add_overflows(cr.credits_pending, cr.credits_posted) || add_overflows(cr.credits_pending + cr.credits_posted, amount)) {
        return rejected(ResultCode::overflows_credits);
    }
    const std::uint64_t timeout_ns = std::uint64_t{t.timeout_s} * ns_per_s;
    if (add_overflows(w.peek_timestamp(), timeout_ns)) return rejected(ResultCode::overflows_timeout);
    if ((dr.flags & account_flags::debits_must_not_exceed_credits) != 0 &&
        dr.debits_pending + dr.debits_posted + amount > dr.credits_posted) {
        return rejected(ResultCode::exceeds_credits);
    }
    if ((cr.flags & account_flags::credits_must_not_exceed_debits) != 0 &&
        cr.credits_pending + cr.credits_posted + amount > cr.debits_posted) {
        return rejected(ResultCode::exceeds_debits);
    }

    Transfer stored = t;
    stored.timestamp = w.next_timestamp();
    if (pending) {
        dr.debits_pending += amount;
        cr.credits_pending += amount;
    } else {
        dr.debits_posted += amount;
        cr.credits_posted += amount;
    }
    put_account(w, dr);
    put_account(w, cr);
    if (pending) {
        if (auto s = put_pending_state(w, stored.id, PendingState::pending); !s) return Unexpected{s.error()};
        if (stored.timeout_s != 0) {
            if (auto s = w.txn->put(w.state.tables.expiries, expiry_key(expires_at_ns(stored), stored.id), ByteView{}); !s) {
                return Unexpected{s.error()};
            }
        }
    }
    if (auto s = put_transfer(w, stored, dr, cr); !s) return Unexpected{s.error()};
    return EventResult{ResultCode::ok, stored.timestamp};
}

Step create_transfer(Work& w, const Transfer& t) {
    if (t.timestamp != 0) return rejected(ResultCode::timestamp_must_be_zero);
    if ((t.flags & ~transfer_flags::all) != 0) return rejected(ResultCode::reserved_flag);
    if (t.id.zero()) return rejected(ResultCode::id_must_not_be_zero);
    if (t.id == Id::max()) return rejected(ResultCode::id_must_not_be_int_max);
    auto existing = get_transfer(w, t.id);
    if (!existing) return Unexpected{existing.error()};
    if (*existing) {
        const ResultCode code = compare_existing(t, **existing);
        return EventResult{code, code == ResultCode::exists ? (*existing)->timestamp : 0};
    }
    auto failed = w.txn->get(w.state.tables.failed, encode(t.id));
    if (!failed) return Unexpected{failed.error()};
    if (*failed) return rejected(ResultCode::id_already_failed);
    const int kinds = ((t.flags & transfer_flags::pending) != 0) + ((t.flags & transfer_flags::post_pending) != 0) +
                      ((t.flags & transfer_flags::void_pending) != 0);
    if (kinds > 1) return rejected(ResultCode::flags_are_mutually_exclusive);
    return resolves_pending(t) ? post_or_void(w, t) : single_or_pending(w, t);
}

// A transient failure is remembered so that a retry with the same id fails the same way.
lmdb::Status record_failure(Work& w, const Id& id, ResultCode code) {
    COCONUT_ASSERT(is_transient(code));
    const std::uint8_t value = static_cast<std::uint8_t>(code);
    if (auto put = w.txn->put(w.state.tables.failed, encode(id), ByteView(&value, 1)); !put) return put;
    const IdBytes key = encode(id);
    Bytes payload(key.begin(), key.end());
    payload.push_back(value);
    return journal_append(w, JournalKind::id_failed, w.next_timestamp(), payload);
}

bool is_linked(const Event& event) {
    if (const auto* account = std::get_if<Account>(&event)) return (account->flags & account_flags::linked) != 0;
    return (std::get<Transfer>(event).flags & transfer_flags::linked) != 0;
}

Step apply_event(Work& w, const Event& event) {
    if (const auto* account = std::get_if<Account>(&event)) return create_account(w, *account);
    return create_transfer(w, std::get<Transfer>(event));
}

lmdb::Status remember_if_transient(Work& w, const Event& event, ResultCode code) {
    const auto* transfer = std::get_if<Transfer>(&event);
    if (transfer == nullptr || !is_transient(code)) return Ok{};
    return record_failure(w, transfer->id, code);
}

// Applies events [first, last] as one linked chain in a nested transaction.
lmdb::Status apply_chain(Work& w, std::span<const Event> chain, std::span<EventResult> results) {
    lmdb::Txn* parent = w.txn;
    auto child = lmdb::Txn::begin(w.state.env, lmdb::Txn::Mode::read_write, parent);
    if (!child) return Unexpected{child.error()};
    const JournalHead saved = w.head;
    std::vector<std::pair<Id, std::optional<AccountCache::Entry>>> undo;
    w.txn = &*child;
    w.accounts.undo = &undo;
    std::optional<std::size_t> failed_at;
    for (std::size_t i = 0; i < chain.size(); ++i) {
        auto step = apply_event(w, chain[i]);
        if (!step) {
            w.txn = parent;
            w.accounts.undo = nullptr;
            return Unexpected{step.error()};  // the whole group fails: the cache goes with it
        }
        results[i] = *step;
        if (!succeeded(step->code)) {
            failed_at = i;
            break;
        }
    }
    w.txn = parent;
    w.accounts.undo = nullptr;
    if (!failed_at) return child->commit();
    child->abort();
    w.accounts.roll_back(undo);  // accounts read in the chain go too: one it created no longer exists
    w.head.sequence = saved.sequence;
    w.head.hash = saved.hash;  // timestamps stay consumed: gaps are allowed, reuse is not needed
    const EventResult failure = results[*failed_at];
    for (auto& result : results) result = rejected(ResultCode::linked_event_failed);
    results[*failed_at] = failure;
    return remember_if_transient(w, chain[*failed_at], failure.code);
}

}  // namespace

lmdb::Result<std::vector<EventResult>> apply_batch(Work& w, std::span<const Event> batch) {
    std::vector<EventResult> results(batch.size());
    std::size_t i = 0;
    while (i < batch.size()) {
        std::size_t end = i;  // the chain's last event: the first without `linked`
        while (end < batch.size() && is_linked(batch[end])) ++end;
        if (end == batch.size()) {  // the batch ends inside a chain: nothing of it is applied
            for (std::size_t k = i; k < batch.size(); ++k) results[k] = rejected(ResultCode::linked_event_failed);
            results.back() = rejected(ResultCode::linked_event_chain_open);
            break;
        }
        if (end == i) {
            auto step = apply_event(w, batch[i]);
            if (!step) return Unexpected{step.error()};
            results[i] = *step;
            if (auto s = remember_if_transient(w, batch[i], step->code); !s) return Unexpected{s.error()};
        } else {
            const std::size_t count = end - i + 1;
            if (auto s = apply_chain(w, batch.subspan(i, count), std::span(results).subspan(i, count)); !s) {
                return Unexpected{s.error()};
            }
        }
        i = end + 1;
    }
    return results;
}

lmdb::Result<std::size_t> expire_due(Work& w) {
    // A hold is due when its expiry is at or before the timestamp the next event would get.
    const std::uint64_t now = w.peek_timestamp();
    std::vector<ExpiryKey> due;
    {
        auto cursor = lmdb::Cursor::open(*w.txn, w.state.tables.expiries);
        if (!cursor) return Unexpected{cursor.error()};
        auto entry = cursor->first();
        while (entry && *entry && due.size() < expiries_per_commit_max) {
            if ((*entry)->key.size() != timestamp_size + id_size) return corrupted("expiry key");
            if (read_be((*entry)->key.first(timestamp_size)) > now) break;
            ExpiryKey key{};
            std::copy((*entry)->key.begin(), (*entry)->key.end(), key.begin());
            due.push_back(key);
            entry = cursor->next();
        }
        if (!entry) return Unexpected{entry.error()};
    }
    for (const ExpiryKey& key : due) {
        const Id id = decode_id(ByteView(key).subspan(timestamp_size));
        auto found = get_transfer(w, id);
        if (!found) return Unexpected{found.error()};
        auto state = get_pending_state(w, id);
        if (!state) return Unexpected{state.error()};
        if (!*found || !*state || **state != PendingState::pending) return corrupted("expiry of a resolved transfer");
        const Transfer& p = **found;
        auto debit = get_account(w, p.debit_account_id);
        if (!debit) return Unexpected{debit.error()};
        auto credit = get_account(w, p.credit_account_id);
        if (!credit) return Unexpected{credit.error()};
        if (!*debit || !*credit) return corrupted("pending transfer's account missing");
        Account dr = **debit;
        Account cr = **credit;
        COCONUT_ASSERT(dr.debits_pending >= p.amount && cr.credits_pending >= p.amount);
        dr.debits_pending -= p.amount;
        cr.credits_pending -= p.amount;
        const std::uint64_t timestamp = w.next_timestamp();
        put_account(w, dr);
        put_account(w, cr);
        for (const Account* account : {&dr, &cr}) {
            if (auto s = put_index_row(w, *account, timestamp, Id{}); !s) return Unexpected{s.error()};
        }
        if (auto s = put_pending_state(w, id, PendingState::expired); !s) return Unexpected{s.error()};
        if (auto d = w.txn->del(w.state.tables.expiries, key); !d) return Unexpected{d.error()};
        if (auto s = journal_append(w, JournalKind::pending_expired, timestamp, encode(id)); !s) return Unexpected{s.error()};
    }
    return due.size();
}

// The write transaction's starting point. The head is read inside the transaction (which holds
// LMDB's writer lock), not from the in-memory copy, so even two threads calling apply() directly
// can never both append the same journal sequence.
Result<Work> begin_work(State& s, lmdb::Txn& txn) {
    auto raw = txn.get(s.tables.meta, view(head_key));
    if (!raw) return Unexpected{to_error(raw.error(), s)};
    JournalHead head;
    if (*raw) {
        auto decoded = decode_head(**raw);
        if (!decoded) return Unexpected{corrupt("ledger journal head does not decode")};
        head = *decoded;
    }
    // Timestamps: max(previous + 1, wall clock); a clock reading of 0 (broken clock) only keeps order.
    const std::uint64_t now_ns = s.options.clock_ns();
    if (now_ns > 0) head.timestamp = std::max(head.timestamp, now_ns - 1);
    return Work{s, &txn, head};
}

// Reads the committed head from the environment into s.committed (at open; and on every head() of a
// read-only ledger, whose writer is another process).
Status<Error> refresh_head(State& s) {
    auto txn = lmdb::Txn::begin(s.env, lmdb::Txn::Mode::read_only);
    if (!txn) return Unexpected{to_error(txn.error(), s)};
    auto raw = txn->get(s.tables.meta, view(head_key));
    if (!raw) return Unexpected{to_error(raw.error(), s)};
    if (!*raw) return Ok{};
    auto head = decode_head(**raw);
    if (!head) return Unexpected{corrupt("ledger journal head does not decode")};
    std::lock_guard lock(s.head_mutex);
    s.committed = *head;
    return Ok{};
}

// Ledgers written by earlier builds kept each transfer's 128-byte record in the transfers table;
// this build reads 8-byte journal references there (clearing/LEDGER.md §2) and does not convert.
// Runs before any table is created, so a refused ledger is left exactly as it was.
Status<Error> refuse_record_transfers(State& s) {
    auto exists = s.env.has_table("transfers");
    if (!exists) return Unexpected{to_error(exists.error(), s)};
    if (!*exists) return Ok{};
    auto table = s.env.open_table("transfers");
    if (!table) return Unexpected{to_error(table.error(), s)};
    auto txn = lmdb::Txn::begin(s.env, lmdb::Txn::Mode::read_only);
    if (!txn) return Unexpected{to_error(txn.error(), s)};
    auto cursor = lmdb::Cursor::open(*txn, *table);
    if (!cursor) return Unexpected{to_error(cursor.error(), s)};
    auto first = cursor->first();
    if (!first) return Unexpected{to_error(first.error(), s)};
    if (*first && (*first)->value.size() != sizeof(SequenceKey)) {
        return Unexpected{
            Error{ErrorCode::storage, fmt::format("cannot open ledger in {}: its transfers table holds {}-byte transfer records (a ledger "
                                                  "written before the records moved to the journal, clearing/LEDGER.md §2); this build "
                                                  "does not convert it",
                                                  s.options.directory, (*first)->value.size())}};
    }
    return Ok{};
}

Error read_only_error(const State& s) {
    return Error{ErrorCode::storage, fmt::format("ledger in {} is open read-only: it takes no writes", s.options.directory)};
}

// Commits are ordered by LMDB's writer lock, but two committers may reach this point out of order;
// head timestamps never decrease in commit order, so the later commit's head wins.
void publish_head(State& s, const JournalHead& head) {
    std::lock_guard lock(s.head_mutex);
    if (head.timestamp >= s.committed.timestamp) s.committed = head;
}

// ---- Ledger -------------------------------------------------------------------------------------------

Ledger::Ledger(std::unique_ptr<State> state) : state_(std::move(state)) {}
Ledger::~Ledger() = default;

lmdb::Env& Ledger::env() { return state_->env; }

void Ledger::release_resident_pages() const { state_->env.drop_resident_pages(); }

JournalHead Ledger::head() const {
    if (state_->options.read_only) (void)refresh_head(*state_);  // on error: the head last read
    std::lock_guard lock(state_->head_mutex);
    return state_->committed;
}

Result<std::unique_ptr<Ledger>> Ledger::open(Options options) {
    if (!options.clock_ns) options.clock_ns = realtime_ns;
    auto env = lmdb::Env::open(options.directory, {options.map_size_bytes, tables_max, options.readers_max, options.read_only});
    if (!env) {
        return Unexpected{Error{env.error().map_full() ? ErrorCode::map_full : ErrorCode::storage,
                                fmt::format("cannot open ledger in {}: {}", options.directory, env.error().message())}};
    }
    auto state = std::make_unique<State>(std::move(options), std::move(*env));
    Tables& t = state->tables;
    struct Named {
        MDB_dbi* dbi;
        const char* name;
    };
    const Named names[] = {{&t.accounts, "accounts"}, {&t.transfers, "transfers"},
                           {&t.pending, "pending"},   {&t.expiries, "expiries"},
                           {&t.failed, "failed_ids"}, {&t.account_index, "account_index"},
                           {&t.journal, "journal"},   {&t.meta, "meta"}};
    // Ledgers written before the account index had two tables in its place; their rows would be
    // missing from every account's transfers and history.
    for (const char* former : {"account_transfers", "history"}) {
        auto found = state->env.has_table(former);
        if (!found) return Unexpected{to_error(found.error(), *state)};
        if (*found) {
            return Unexpected{
                Error{ErrorCode::storage, fmt::format("cannot open ledger in {}: it has the former '{}' table (a ledger written before "
                                                      "the account index, clearing/LEDGER.md §2); this build does not convert it",
                                                      state->options.directory, former)}};
        }
    }
    if (auto format = refuse_record_transfers(*state); !format) return Unexpected{format.error()};
    for (const Named& named : names) {
        auto dbi = state->env.open_table(named.name);
        if (!dbi) return Unexpected{to_error(dbi.error(), *state)};
        *named.dbi = *dbi;
    }
    if (auto read = refresh_head(*state); !read) return Unexpected{read.error()};
    return std::unique_ptr<Ledger>(new Ledger(std::move(state)));
}

Result<std::vector<std::vector<EventResult>>> Ledger::apply_group(std::span<const std::span<const Event>> batches) {
    std::vector<Batch> plain;
    plain.reserve(batches.size());
    for (const auto& events : batches) plain.push_back(Batch{events, {}});
    return apply_group(std::span<const Batch>(plain));
}

Result<std::vector<std::vector<EventResult>>> Ledger::apply_group(std::span<const Batch> batches, const GroupHooks& hooks) {
    if (state_->options.read_only) return Unexpected{read_only_error(*state_)};
    for (const Batch& batch : batches) {
        if (batch.events.size() > batch_events_max) {
            return Unexpected{Error{ErrorCode::too_large,
                                    fmt::format("batch of {} events exceeds batch_events_max {}", batch.events.size(), batch_events_max)}};
        }
    }
    State& s = *state_;
    auto txn = lmdb::Txn::begin(s.env, lmdb::Txn::Mode::read_write);
    if (!txn) return Unexpected{to_error(txn.error(), s)};
    auto work = begin_work(s, *txn);
    if (!work) return Unexpected{work.error()};
    Work& w = *work;
    auto expired = expire_due(w);
    if (!expired) return Unexpected{to_error(expired.error(), s)};
    if (hooks.begin) txn->set_context(hooks.begin(*txn));
    struct EndHook {
        const GroupHooks& hooks;
        ~EndHook() {
            if (hooks.end) hooks.end();
        }
    } end_hook{hooks};  // runs after the commit or on any failure return, before the transaction aborts
    std::vector<std::vector<EventResult>> out;
    out.reserve(batches.size());
    for (const Batch& batch : batches) {
        auto results = apply_batch(w, batch.events);
        if (!results) return Unexpected{to_error(results.error(), s)};
        if (batch.after) {
            if (auto hooked = batch.after(*txn, *results); !hooked) return Unexpected{to_error(hooked.error(), s)};
        }
        out.push_back(std::move(*results));
    }
    if (hooks.finish) {
        if (auto finished = hooks.finish(*txn); !finished) return Unexpected{to_error(finished.error(), s)};
    }
    if (auto flushed = flush_accounts(w); !flushed) return Unexpected{to_error(flushed.error(), s)};
    if (auto put = txn->put(s.tables.meta, view(head_key), encode(w.head)); !put) return Unexpected{to_error(put.error(), s)};
    if (auto committed = txn->commit(); !committed) return Unexpected{to_error(committed.error(), s)};
    COCONUT_ASSERT(out.size() == batches.size(), "one result list per batch");
    publish_head(s, w.head);
    if (s.options.check_after_commit) {
        auto report = check();
        if (!report || !report->ok()) {
            fmt::print(stderr, "ledger invariant violated after commit: {}\n", report ? report->problems.front() : report.error().message);
            std::abort();
        }
    }
    return out;
}

Result<std::vector<EventResult>> Ledger::apply(std::span<const Event> batch) {
    const std::span<const Event> one[] = {batch};
    auto results = apply_group(one);
    if (!results) return Unexpected{results.error()};
    return std::move(results->front());
}

Result<std::size_t> Ledger::expire_pending() {
    if (state_->options.read_only) return Unexpected{read_only_error(*state_)};
    State& s = *state_;
    auto txn = lmdb::Txn::begin(s.env, lmdb::Txn::Mode::read_write);
    if (!txn) return Unexpected{to_error(txn.error(), s)};
    auto work = begin_work(s, *txn);
    if (!work) return Unexpected{work.error()};
    Work& w = *work;
    auto expired = expire_due(w);
    if (!expired) return Unexpected{to_error(expired.error(), s)};
    if (*expired == 0) return std::size_t{0};  // nothing to commit; the txn aborts
    if (auto flushed = flush_accounts(w); !flushed) return Unexpected{to_error(flushed.error(), s)};
    if (auto put = txn->put(s.tables.meta, view(head_key), encode(w.head)); !put) return Unexpected{to_error(put.error(), s)};
    if (auto committed = txn->commit(); !committed) return Unexpected{to_error(committed.error(), s)};
    publish_head(s, w.head);
    return *expired;
}

// ---- small public helpers ---------------------------------------------------------------------------------

Id derive_id(ByteView material) { return decode_id(records::sha256(material)); }

std::optional<Transfer> journal_transfer(const JournalEntry& entry) {
    if (entry.kind != JournalKind::transfer_created) return std::nullopt;
    return decode_transfer(entry.payload);
}

std::string to_string(const Id& id) { return fmt::format("{:016X}{:016X}", id.high, id.low); }

bool is_transient(ResultCode code) {
    switch (code) {
        case ResultCode::debit_account_not_found:
        case ResultCode::credit_account_not_found:
        case ResultCode::pending_transfer_not_found:
        case ResultCode::exceeds_credits:
        case ResultCode::exceeds_debits: return true;
        default: return false;
    }
}

}  // namespace coconut::ledger
