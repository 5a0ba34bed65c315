// Read paths (any thread, own read transaction each) and the invariant check.
#include "ledger_state.hpp"

#include <fmt/format.h>

#include <map>

namespace coconut::ledger {

using namespace records;

namespace {

// A check stops listing problems after this many: one broken invariant usually cascades, and the
// first few say what is wrong.
constexpr std::size_t check_problems_max = 100;

__extension__ typedef unsigned __int128 Sum;  // per-ledger sums of u64 counters cannot wrap

// Runs `body` in the caller's read transaction, mapping its storage error.
template <class T>
Result<T> read_in(const State& s, const lmdb::Txn& txn, auto&& body) {
    auto out = body(txn);
    if (!out) return Unexpected{to_error(out.error(), s)};
    return std::move(*out);
}

// Runs `body` in a read transaction of its own.
template <class T>
Result<T> read(const State& s, auto&& body) {
    auto txn = lmdb::Txn::begin(s.env, lmdb::Txn::Mode::read_only);
    if (!txn) return Unexpected{to_error(txn.error(), s)};
    return read_in<T>(s, *txn, body);
}

}  // namespace

lmdb::Result<std::optional<Transfer>> find_transfer(const lmdb::Txn& txn, const Tables& t, const Id& id) {
    auto reference = txn.get(t.transfers, encode(id));
    if (!reference) return Unexpected{reference.error()};
    if (!*reference) return std::optional<Transfer>();
    if ((*reference)->size() != sizeof(SequenceKey)) return corrupted("transfer reference");
    auto raw = txn.get(t.journal, **reference);
    if (!raw) return Unexpected{raw.error()};
    if (!*raw) return corrupted("transfer reference without its journal entry");
    const ByteView value = **raw;
    if (value.size() != journal_payload_offset + transfer_size || value[0] != static_cast<std::uint8_t>(JournalKind::transfer_created)) {
        return corrupted("transfer's journal entry");
    }
    auto transfer = decode_transfer(value.subspan(journal_payload_offset));
    if (!transfer || transfer->id != id) return corrupted("transfer's journal entry");
    return transfer;
}

namespace {

bool has_prefix(ByteView key, const IdBytes& prefix) {
    return key.size() == id_size + timestamp_size && std::equal(prefix.begin(), prefix.end(), key.begin());
}

// The replayed state of one pending transfer.
struct ReplayPending {
    Transfer transfer;
    PendingState state = PendingState::pending;
    int resolutions = 0;
};

class Checker {
public:
    Checker(const lmdb::Txn& txn, const State& state) : txn_(txn), s_(state) {}

    lmdb::Result<CheckReport> run() {
        if (auto r = replay_journal(); !r) return Unexpected{r.error()};
        if (auto r = compare_accounts(); !r) return Unexpected{r.error()};
        if (auto r = compare_transfers_and_pending(); !r) return Unexpected{r.error()};
        if (auto r = compare_account_index(); !r) return Unexpected{r.error()};
        return std::move(report_);
    }

private:
    template <class... Args>
    void problem(fmt::format_string<Args...> format, Args&&... args) {
        if (report_.problems.size() < check_problems_max) report_.problems.push_back(fmt::format(format, std::forward<Args>(args)...));
    }

    void release(const Transfer& pending, std::uint64_t posted_amount, bool post) {
        Account& dr = accounts_[pending.debit_account_id];
        Account& cr = accounts_[pending.credit_account_id];
        dr.debits_pending -= pending.amount;
        cr.credits_pending -= pending.amount;
        if (post) {
            dr.debits_posted += posted_amount;
            cr.credits_posted += posted_amount;
        }
    }

    void resolve(const Id& pending_id, PendingState outcome, std::uint64_t sequence, const Transfer* post_or_void) {
        auto found = pendings_.find(pending_id);
        if (found == pendings_.end()) {
            problem("journal {}: resolves {} which is not a pending transfer", sequence, to_string(pending_id));
            return;
        }
        ReplayPending& p = found->second;
        if (++p.resolutions > 1) {
            problem("journal {}: pending transfer {} resolved a second time", sequence, to_string(pending_id));
            return;
        }
        p.state = outcome;
        release(p.transfer, post_or_void ? post_or_void->amount : 0, outcome == PendingState::posted);
    }

    void replay_transfer(const Transfer& t, std::uint64_t sequence) {
        ++journal_transfers_;
        if ((t.flags & transfer_flags::post_pending) != 0) return resolve(t.pending_id, PendingState::posted, sequence, &t);
        if ((t.flags & transfer_flags::void_pending) != 0) return resolve(t.pending_id, PendingState::voided, sequence, &t);
        if (!accounts_.contains(t.debit_account_id) || !accounts_.contains(t.credit_account_id)) {
            problem("journal {}: transfer {} names an account created later or never", sequence, to_string(t.id));
        }
        Account& dr = accounts_[t.debit_account_id];
        Account& cr = accounts_[t.credit_account_id];
        if ((t.flags & transfer_flags::pending) != 0) {
            dr.debits_pending += t.amount;
            cr.credits_pending += t.amount;
            pendings_[t.id] = ReplayPending{t};
        } else {
            dr.debits_posted += t.amount;
            cr.credits_posted += t.amount;
        }
    }

    lmdb::Status replay_entry(const JournalEntry& e) {
        switch (e.kind) {
            case JournalKind::account_created: {
                auto account = decode_account(e.payload);
                if (!account) {
                    problem("journal {}: account payload does not decode", e.sequence);
                    return Ok{};
                }
                accounts_[account->id] = *account;  // created with zero counters
                return Ok{};
            }
            case JournalKind::transfer_created: {
                auto transfer = decode_transfer(e.payload);
                if (!transfer) {
                    problem("journal {}: transfer payload does not decode", e.sequence);
                    return Ok{};
                }
                // The transfers table must lead this id to this entry (and so to what it journaled).
                auto stored = txn_.get(s_.tables.transfers, encode(transfer->id));
                if (!stored) return Unexpected{stored.error()};
                const SequenceKey here = sequence_key(e.sequence);
                if (!*stored || !std::equal((*stored)->begin(), (*stored)->end(), here.begin(), here.end())) {
                    problem("journal {}: transfer {} is not stored as journaled", e.sequence, to_string(transfer->id));
                }
                replay_transfer(*transfer, e.sequence);
                return Ok{};
            }
            case JournalKind::pending_expired:
                if (e.payload.size() != id_size) return corrupted("journal expiry payload");
                resolve(decode_id(e.payload), PendingState::expired, e.sequence, nullptr);
                return Ok{};
            case JournalKind::id_failed: {
                if (e.payload.size() != id_size + 1) return corrupted("journal failure payload");
                auto failed = txn_.get(s_.tables.failed, ByteView(e.payload).first(id_size));
                if (!failed) return Unexpected{failed.error()};
                if (!*failed) problem("journal {}: failed id not recorded", e.sequence);
                return Ok{};
            }
        }
        return corrupted("journal kind");
    }

    lmdb::Status replay_journal() {
        auto cursor = lmdb::Cursor::open(txn_, s_.tables.journal);
        if (!cursor) return Unexpected{cursor.error()};
        Hash previous{};
        std::uint64_t expected = 1;
        std::uint64_t timestamp_last = 0;
        for (auto entry = cursor->first();; entry = cursor->next()) {
            if (!entry) return Unexpected{entry.error()};
            if (!*entry) break;
            const std::uint64_t sequence = read_be((*entry)->key);
            auto e = decode_journal(sequence, (*entry)->value);
            if (!e || (*entry)->key.size() != 8) return corrupted("journal entry");
            if (sequence != expected) problem("journal: sequence {} where {} was expected", sequence, expected);
            if (chain_hash(previous, sequence, e->kind, e->timestamp, e->payload) != e->hash) {
                problem("journal {}: hash chain broken", sequence);
            }
            if (e->timestamp <= timestamp_last) problem("journal {}: timestamp not increasing", sequence);
            if (auto r = replay_entry(*e); !r) return r;
            previous = e->hash;
            timestamp_last = e->timestamp;
            expected = sequence + 1;
            ++report_.journal_entries;
        }
        auto raw = txn_.get(s_.tables.meta, ByteView(reinterpret_cast<const std::uint8_t*>("head"), 4));
        if (!raw) return Unexpected{raw.error()};
        JournalHead head;
        if (*raw) {
            auto decoded = decode_head(**raw);
            if (!decoded) return corrupted("journal head");
            head = *decoded;
        }
        if (head.sequence != expected - 1 || head.hash != previous) {
            problem("journal head (sequence {}) does not match the last entry ({})", head.sequence, expected - 1);
        }
        if (head.timestamp < timestamp_last) problem("journal head timestamp behind the last entry");
        return Ok{};
    }

    lmdb::Status compare_accounts() {
        struct Sums {
            Sum debits_pending = 0, debits_posted = 0, credits_pending = 0, credits_posted = 0;
        };
        std::map<std::uint32_t, Sums> ledgers;
        auto cursor = lmdb::Cursor::open(txn_, s_.tables.accounts);
        if (!cursor) return Unexpected{cursor.error()};
        for (auto entry = cursor->first();; entry = cursor->next()) {
            if (!entry) return Unexpected{entry.error()};
            if (!*entry) break;
            auto a = decode_account((*entry)->value);
            if (!a) return corrupted("account record");
            ++report_.accounts;
            auto replayed = accounts_.find(a->id);
            if (replayed == accounts_.end()) {
                problem("account {} is not in the journal", to_string(a->id));
            } else if (replayed->second != *a) {
                problem("account {} differs from the replay of its transfers (debits {}/{} credits {}/{}, replay {}/{} {}/{})",
                        to_string(a->id), a->debits_pending, a->debits_posted, a->credits_pending, a->credits_posted,
                        replayed->second.debits_pending, replayed->second.debits_posted, replayed->second.credits_pending,
                        replayed->second.credits_posted);
            }
            Sums& sums = ledgers[a->ledger];
            sums.debits_pending += a->debits_pending;
            sums.debits_posted += a->debits_posted;
            sums.credits_pending += a->credits_pending;
            sums.credits_posted += a->credits_posted;
        }
        if (report_.accounts != accounts_.size()) {
            problem("{} accounts stored, {} in the journal", report_.accounts, accounts_.size());
        }
        for (const auto& [ledger, sums] : ledgers) {
            if (sums.debits_pending != sums.credits_pending) problem("ledger {}: pending debits ≠ pending credits", ledger);
            if (sums.debits_posted != sums.credits_posted) problem("ledger {}: posted debits ≠ posted credits", ledger);
        }
        return Ok{};
    }

    lmdb::Status compare_transfers_and_pending() {
        auto transfers = lmdb::Cursor::open(txn_, s_.tables.transfers);
        if (!transfers) return Unexpected{transfers.error()};
        for (auto entry = transfers->first();; entry = transfers->next()) {
            if (!entry) return Unexpected{entry.error()};
            if (!*entry) break;
            ++report_.transfers;
        }
        if (report_.transfers != journal_transfers_) {
            problem("{} transfers stored, {} in the journal", report_.transfers, journal_transfers_);
        }
        std::uint64_t states = 0;
        auto pending = lmdb::Cursor::open(txn_, s_.tables.pending);
        if (!pending) return Unexpected{pending.error()};
        for (auto entry = pending->first();; entry = pending->next()) {
            if (!entry) return Unexpected{entry.error()};
            if (!*entry) break;
            ++states;
            const Id id = decode_id((*entry)->key);
            auto replayed = pendings_.find(id);
            const auto state = static_cast<PendingState>((*entry)->value.empty() ? 0 : (*entry)->value[0]);
            if (replayed == pendings_.end() || replayed->second.state != state) {
                problem("pending transfer {}: stored state disagrees with the journal", to_string(id));
            }
            if (state == PendingState::pending) ++report_.pending_open;
        }
        if (states != pendings_.size()) problem("{} pending states stored, {} in the journal", states, pendings_.size());
        auto expiries = lmdb::Cursor::open(txn_, s_.tables.expiries);
        if (!expiries) return Unexpected{expiries.error()};
        for (auto entry = expiries->first();; entry = expiries->next()) {
            if (!entry) return Unexpected{entry.error()};
            if (!*entry) break;
            const Id id = decode_id((*entry)->key.subspan(timestamp_size));
            auto replayed = pendings_.find(id);
            if (replayed == pendings_.end() || replayed->second.state != PendingState::pending) {
                problem("expiry index names {} which is not open", to_string(id));
            }
        }
        return Ok{};
    }

    // The account index (clearing/LEDGER.md §2): two rows with a transfer id per transfer, each row the
    // size its account's history flag calls for, and the last balance row of every account with
    // history equal to that account's balance.
    lmdb::Status compare_account_index() {
        auto cursor = lmdb::Cursor::open(txn_, s_.tables.account_index);
        if (!cursor) return Unexpected{cursor.error()};
        std::uint64_t transfer_rows = 0;
        const Account* account = nullptr;  // the replayed account whose rows are being read
        std::optional<Id> current;
        std::optional<Balance> last;
        const auto compare_last = [&] {
            if (account == nullptr || !last) return;
            const Account& a = *account;
            const Balance now{last->timestamp, a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted};
            if (*last != now) problem("account index: the last balance row of account {} differs from its balance", to_string(a.id));
        };
        for (auto entry = cursor->first();; entry = cursor->next()) {
            if (!entry) return Unexpected{entry.error()};
            if (!*entry) break;
            const ByteView key = (*entry)->key, value = (*entry)->value;
            if (key.size() != id_size + timestamp_size) {
                problem("account index: a key of {} bytes", key.size());
                continue;
            }
            const Id id = decode_id(key.first(id_size));
            if (!current || id != *current) {
                compare_last();
                current = id;
                last.reset();
                const auto found = accounts_.find(id);
                account = found == accounts_.end() ? nullptr : &found->second;
                if (account == nullptr) problem("account index: rows for {}, which the journal never created", to_string(id));
            }
            if (account == nullptr) continue;
            const bool history = (account->flags & account_flags::history) != 0;
            if (value.size() != (history ? id_size + balance_size : id_size)) {
                problem("account index: a row of account {} has {} bytes", to_string(id), value.size());
                continue;
            }
            if (!decode_id(value.first(id_size)).zero()) ++transfer_rows;
            if (history) last = decode_balance(read_be(key.subspan(id_size)), value.subspan(id_size));
        }
        compare_last();
        if (transfer_rows != 2 * journal_transfers_) {
            problem("account index: {} rows name a transfer, {} expected (two per transfer)", transfer_rows, 2 * journal_transfers_);
        }
        return Ok{};
    }

    const lmdb::Txn& txn_;
    const State& s_;
    CheckReport report_;
    std::map<Id, Account> accounts_;
    std::map<Id, ReplayPending> pendings_;
    std::uint64_t journal_transfers_ = 0;
};

lmdb::Result<std::optional<Account>> find_account(const lmdb::Txn& txn, const Tables& t, const Id& id) {
    auto raw = txn.get(t.accounts, encode(id));
    if (!raw) return Unexpected{raw.error()};
    if (!*raw) return std::optional<Account>();
    auto account = decode_account(**raw);
    if (!account) return corrupted("account record");
    return account;
}

}  // namespace

Result<lmdb::Txn> Ledger::begin_read() const {
    auto txn = lmdb::Txn::begin(state_->env, lmdb::Txn::Mode::read_only);
    if (!txn) return Unexpected{to_error(txn.error(), *state_)};
    return std::move(*txn);
}

Result<std::optional<Account>> Ledger::lookup_account(const Id& id) const {
    return read<std::optional<Account>>(*state_, [&](const lmdb::Txn& txn) { return find_account(txn, state_->tables, id); });
}

Result<std::optional<Account>> Ledger::lookup_account(const lmdb::Txn& txn, const Id& id) const {
    return read_in<std::optional<Account>>(*state_, txn, [&](const lmdb::Txn& t) { return find_account(t, state_->tables, id); });
}

Result<std::optional<Transfer>> Ledger::lookup_transfer(const Id& id) const {
    return read<std::optional<Transfer>>(*state_, [&](const lmdb::Txn& txn) { return find_transfer(txn, state_->tables, id); });
}

Result<std::optional<Transfer>> Ledger::lookup_transfer(const lmdb::Txn& txn, const Id& id) const {
    return read_in<std::optional<Transfer>>(*state_, txn, [&](const lmdb::Txn& t) { return find_transfer(t, state_->tables, id); });
}

std::uint64_t Ledger::clock_ns() const { return state_->options.clock_ns(); }

Result<std::optional<PendingState>> Ledger::pending_state(const Id& id) const {
    return read<std::optional<PendingState>>(*state_, [&](const lmdb::Txn& txn) -> lmdb::Result<std::optional<PendingState>> {
        auto raw = txn.get(state_->tables.pending, encode(id));
        if (!raw) return Unexpected{raw.error()};
        if (!*raw) return std::optional<PendingState>();
        if ((*raw)->size() != 1) return corrupted("pending state");
        return std::optional<PendingState>(static_cast<PendingState>((**raw)[0]));
    });
}

namespace {

// The transfer id of an account index row (clearing/LEDGER.md §2): zero for a balance change without a
// transfer (an expiry); nullopt when the row does not decode.
std::optional<Id> index_row_transfer(ByteView value) {
    if (value.size() != id_size && value.size() != id_size + balance_size) return std::nullopt;
    return decode_id(value.first(id_size));
}

// The transfers named by the account index from `entry` on, stepping forwards (next) or backwards
// (prev) while the key is still the account's, at most `limit`; expiries' balance rows are skipped.
lmdb::Result<std::vector<Transfer>> walk_account_index(const lmdb::Txn& txn, const Tables& tables, lmdb::Cursor& cursor,
                                                       const Id& account_id, lmdb::Result<std::optional<lmdb::Cursor::Entry>> entry,
                                                       bool backwards, std::size_t limit) {
    std::vector<Transfer> out;
    const IdBytes prefix = encode(account_id);
    for (; out.size() < limit; entry = backwards ? cursor.prev() : cursor.next()) {
        if (!entry) return Unexpected{entry.error()};
        if (!*entry || !has_prefix((*entry)->key, prefix)) break;
        const auto id = index_row_transfer((*entry)->value);
        if (!id) return corrupted("account index row");
        if (id->zero()) continue;  // an expiry's balance row
        auto transfer = find_transfer(txn, tables, *id);
        if (!transfer) return Unexpected{transfer.error()};
        if (!*transfer) return corrupted("account index names a missing transfer");
        out.push_back(**transfer);
    }
    return out;
}

}  // namespace

Result<std::vector<Transfer>> Ledger::account_transfers(const Id& account_id, std::uint64_t after_timestamp, std::size_t limit) const {
    return read<std::vector<Transfer>>(*state_, [&](const lmdb::Txn& txn) -> lmdb::Result<std::vector<Transfer>> {
        auto cursor = lmdb::Cursor::open(txn, state_->tables.account_index);
        if (!cursor) return Unexpected{cursor.error()};
        auto first = cursor->seek(account_time_key(account_id, after_timestamp + 1));
        return walk_account_index(txn, state_->tables, *cursor, account_id, first, false, limit);
    });
}

namespace {

// The account index entry just before (account, before_timestamp): the first key at or after it, then one
// step back (or the table's last entry). It may belong to another account: callers check the prefix.
lmdb::Result<std::optional<lmdb::Cursor::Entry>> index_entry_before(lmdb::Cursor& cursor, const Id& account_id,
                                                                    std::uint64_t before_timestamp) {
    auto at = cursor.seek(account_time_key(account_id, before_timestamp));
    if (!at) return Unexpected{at.error()};
    return *at ? cursor.prev() : cursor.last();
}

lmdb::Result<std::vector<Transfer>> transfers_before(const lmdb::Txn& txn, const Tables& tables, const Id& account_id,
                                                     std::uint64_t before_timestamp, std::size_t limit) {
    if (before_timestamp == 0) return std::vector<Transfer>();
    auto cursor = lmdb::Cursor::open(txn, tables.account_index);
    if (!cursor) return Unexpected{cursor.error()};
    return walk_account_index(txn, tables, *cursor, account_id, index_entry_before(*cursor, account_id, before_timestamp), true, limit);
}

}  // namespace

Result<std::vector<Transfer>> Ledger::account_transfers_before(const Id& account_id, std::uint64_t before_timestamp,
                                                               std::size_t limit) const {
    return read<std::vector<Transfer>>(*state_, [&](const lmdb::Txn& txn) {
        return transfers_before(txn, state_->tables, account_id, before_timestamp, limit);
    });
}

Result<std::vector<Transfer>> Ledger::account_transfers_before(const lmdb::Txn& txn, const Id& account_id, std::uint64_t before_timestamp,
                                                               std::size_t limit) const {
    return read_in<std::vector<Transfer>>(*state_, txn, [&](const lmdb::Txn& t) {
        return transfers_before(t, state_->tables, account_id, before_timestamp, limit);
    });
}

Result<std::uint64_t> Ledger::latest_transfer_timestamp(const lmdb::Txn& txn, const Id& account_id) const {
    return read_in<std::uint64_t>(*state_, txn, [&](const lmdb::Txn& t) -> lmdb::Result<std::uint64_t> {
        auto cursor = lmdb::Cursor::open(t, state_->tables.account_index);
        if (!cursor) return Unexpected{cursor.error()};
        const IdBytes prefix = encode(account_id);
        // The last row with a transfer: the key is account id ‖ timestamp, so no transfer is read.
        for (auto entry = index_entry_before(*cursor, account_id, ~std::uint64_t{0});; entry = cursor->prev()) {
            if (!entry) return Unexpected{entry.error()};
            if (!*entry || !has_prefix((*entry)->key, prefix)) return std::uint64_t{0};
            if ((*entry)->key.size() != id_size + timestamp_size) return corrupted("account index key");
            const auto id = index_row_transfer((*entry)->value);
            if (!id) return corrupted("account index row");
            if (!id->zero()) return read_be((*entry)->key.subspan(id_size));
        }
    });
}

namespace {

lmdb::Result<std::vector<Balance>> balances_after(const lmdb::Txn& txn, const Tables& tables, const Id& account_id,
                                                  std::uint64_t after_timestamp, std::size_t limit) {
    std::vector<Balance> out;
    auto cursor = lmdb::Cursor::open(txn, tables.account_index);
    if (!cursor) return Unexpected{cursor.error()};
    const IdBytes prefix = encode(account_id);
    for (auto entry = cursor->seek(account_time_key(account_id, after_timestamp + 1)); out.size() < limit; entry = cursor->next()) {
        if (!entry) return Unexpected{entry.error()};
        if (!*entry || !has_prefix((*entry)->key, prefix)) break;
        const ByteView value = (*entry)->value;
        if (!index_row_transfer(value)) return corrupted("account index row");
        if (value.size() == id_size) break;  // the account keeps no history: its rows carry no balance
        auto balance = decode_balance(read_be((*entry)->key.subspan(id_size)), value.subspan(id_size));
        if (!balance) return corrupted("account index balance");
        out.push_back(*balance);
    }
    return out;
}

}  // namespace

Result<std::vector<Balance>> Ledger::account_balances(const Id& account_id, std::uint64_t after_timestamp, std::size_t limit) const {
    return read<std::vector<Balance>>(*state_, [&](const lmdb::Txn& txn) {
        return balances_after(txn, state_->tables, account_id, after_timestamp, limit);
    });
}

Result<std::vector<Balance>> Ledger::account_balances(const lmdb::Txn& txn, const Id& account_id, std::uint64_t after_timestamp,
                                                      std::size_t limit) const {
    return read_in<std::vector<Balance>>(*state_, txn, [&](const lmdb::Txn& t) {
        return balances_after(t, state_->tables, account_id, after_timestamp, limit);
    });
}

Result<std::vector<JournalEntry>> Ledger::read_journal(std::uint64_t from_sequence, std::size_t limit) const {
    return read<std::vector<JournalEntry>>(*state_, [&](const lmdb::Txn& txn) -> lmdb::Result<std::vector<JournalEntry>> {
        std::vector<JournalEntry> out;
        auto cursor = lmdb::Cursor::open(txn, state_->tables.journal);
        if (!cursor) return Unexpected{cursor.error()};
        for (auto entry = cursor->seek(sequence_key(from_sequence)); out.size() < limit; entry = cursor->next()) {
            if (!entry) return Unexpected{entry.error()};
            if (!*entry) break;
            auto decoded = decode_journal(read_be((*entry)->key), (*entry)->value);
            if (!decoded) return corrupted("journal entry");
            out.push_back(std::move(*decoded));
        }
        return out;
    });
}

Result<std::optional<std::uint64_t>> Ledger::next_expiry_ns() const {
    return read<std::optional<std::uint64_t>>(*state_, [&](const lmdb::Txn& txn) -> lmdb::Result<std::optional<std::uint64_t>> {
        auto cursor = lmdb::Cursor::open(txn, state_->tables.expiries);
        if (!cursor) return Unexpected{cursor.error()};
        auto first = cursor->first();
        if (!first) return Unexpected{first.error()};
        if (!*first) return std::optional<std::uint64_t>();
        return std::optional<std::uint64_t>(read_be((*first)->key.first(timestamp_size)));
    });
}

Result<CheckReport> Ledger::check() const {
    return read<CheckReport>(*state_, [&](const lmdb::Txn& txn) { return Checker(txn, *state_).run(); });
}

}  // namespace coconut::ledger
