// Replication of the ledger's commits (docs/DESIGN.md §10, clearing/LEDGER.md "Replication"): a primary
// whose environment captures every commit's changes (lmdb::Env::set_commit_hook) and a standby that
// applies them in order (Ledger::apply_replicated) end with byte-identical tables — the ledger's own and a
// table of the ledger's user written by a BatchHook — and the same journal head; a refusing hook writes
// nothing; a standby refuses what is out of order, applied twice, tampered with or does not apply.
#include "ledger_fixture.hpp"

#include <coconut/core/sha256.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <map>

using namespace test;

namespace {

struct Commit {
    Bytes changes;
    std::uint64_t position = 0;
};

// The primary: a ledger whose every commit goes to `log` first (the stream), at the next position.
struct Primary {
    TempDir dir;
    std::unique_ptr<Ledger> ledger;
    std::vector<Commit> log;
    bool refuse = false;  // the stream refuses (a deposed primary; no quorum)

    Primary() {
        Options options;
        options.directory = dir.path();
        ledger = std::move(Ledger::open(options).value());
        ledger->env().set_commit_hook([this](lmdb::Txn& txn, ByteView changes) -> coconut::Status<lmdb::Error> {
            if (refuse) return Unexpected{lmdb::Error{lmdb::commit_refused_rc, "publish", "the stream refused the commit"}};
            log.push_back({Bytes(changes.begin(), changes.end()), log.size() + 1});
            return ledger->record_position(txn, log.back().position);
        });
    }
};

struct Standby {
    TempDir dir;
    std::unique_ptr<Ledger> ledger = open();

    std::unique_ptr<Ledger> open() {
        Options options;
        options.directory = dir.path();
        return std::move(Ledger::open(options).value());
    }
};

// Every named table of `env` and its rows, as the hex of its SHA-256 per table.
std::map<std::string, std::string> table_digests(lmdb::Env& env) {
    std::map<std::string, std::string> out;
    auto txn = lmdb::Txn::begin(env, lmdb::Txn::Mode::read_only);
    REQUIRE(txn.ok());
    std::vector<std::string> names;
    {
        MDB_dbi unnamed = 0;  // the unnamed table lists the named ones
        REQUIRE(mdb_dbi_open(txn->get(), nullptr, 0, &unnamed) == 0);
        auto main_table = lmdb::Cursor::open(*txn, unnamed);
        REQUIRE(main_table.ok());
        for (auto row = main_table->first(); row.ok() && *row; row = main_table->next())
            names.emplace_back(reinterpret_cast<const char*>((*row)->key.data()), (*row)->key.size());
    }
    for (const std::string& name : names) {
        MDB_dbi dbi = 0;
        REQUIRE_MESSAGE(mdb_dbi_open(txn->get(), name.c_str(), 0, &dbi) == 0, name);
        auto cursor = lmdb::Cursor::open(*txn, dbi);
        REQUIRE(cursor.ok());
        Sha256 sha;
        for (auto row = cursor->first(); row.ok() && *row; row = cursor->next()) {
            sha.update((*row)->key);
            sha.update((*row)->value);
        }
        out[name] = to_hex(sha.finish());
    }
    return out;
}

std::vector<Event> opening_accounts() {
    return {account(1, 1, 10, account_flags::history), account(2), account(3, 1, 10, account_flags::debits_must_not_exceed_credits)};
}

// A day's worth of the ledger's kinds of change: accounts, single-phase and pending transfers, a posted
// and a voided hold, a linked chain that fails (its nested transaction aborted) and one that succeeds, a
// transient failure (id_failed), and a row of the ledger user's own table written by a BatchHook.
void busy_day(Ledger& ledger) {
    REQUIRE(ledger.apply(opening_accounts()).ok());
    const std::vector<Event> day = {transfer(10, 2, 1, 500), transfer(11, 1, 2, 100, transfer_flags::pending),
                                    post(12, 11, 60),        transfer(13, 2, 1, 70, transfer_flags::pending),
                                    void_(14, 13),           transfer(15, 3, 1, 1)};  // 15: exceeds_credits
    REQUIRE(ledger.apply(day).ok());
    const std::vector<Event> failing_chain = {transfer(20, 2, 1, 5, transfer_flags::linked), transfer(21, 2, 99, 5)};
    const std::vector<Event> chain = {transfer(22, 2, 1, 5, transfer_flags::linked), transfer(23, 2, 1, 6)};
    REQUIRE(ledger.apply(failing_chain).ok());
    auto cards = ledger.env().open_table("cards");
    REQUIRE(cards.ok());
    const Batch with_hook{chain, [table = *cards](lmdb::Txn& txn, std::span<const EventResult>) {
                              const std::uint8_t key[] = {0x46, 0x01}, value[] = {0x2A};
                              return txn.put(table, ByteView(key, 2), ByteView(value, 1));
                          }};
    REQUIRE(ledger.apply_group(std::span<const Batch>(&with_hook, 1)).ok());
}

}  // namespace

TEST_CASE("replication: a standby that applies the primary's change sets in order holds the same tables and head") {
    Primary primary;
    busy_day(*primary.ledger);
    REQUIRE(primary.log.size() == 4);
    CHECK(primary.ledger->replicated_position().value() == 4);

    Standby standby;
    for (const Commit& commit : primary.log) {
        auto head = standby.ledger->apply_replicated(commit.changes, commit.position);
        REQUIRE_MESSAGE(head.ok(), (head.ok() ? "" : head.error().message));
    }
    CHECK(standby.ledger->head().sequence == primary.ledger->head().sequence);
    CHECK(standby.ledger->head().hash == primary.ledger->head().hash);
    CHECK(standby.ledger->replicated_position().value() == 4);
    CHECK(table_digests(standby.ledger->env()) == table_digests(primary.ledger->env()));
    CHECK(table_digests(standby.ledger->env()).count("cards") == 1);
    auto report = standby.ledger->check();
    REQUIRE(report.ok());
    CHECK_MESSAGE(report->ok(), (report->ok() ? "" : report->problems.front()));
    CHECK(standby.ledger->lookup_account(make_id(1)).value()->credits_posted ==
          primary.ledger->lookup_account(make_id(1)).value()->credits_posted);

    // Exactly once across a restart: the position is durable with the changes.
    standby.ledger.reset();
    standby.ledger = standby.open();
    CHECK(standby.ledger->replicated_position().value() == 4);
    auto again = standby.ledger->apply_replicated(primary.log.back().changes, 4);
    REQUIRE_FALSE(again.ok());
    CHECK(again.error().code == ErrorCode::replication);
}

TEST_CASE("replication: expired holds released by the primary's own commit travel too") {
    std::uint64_t now = clock_start_ns;
    TempDir primary_dir;
    Options options;
    options.directory = primary_dir.path();
    options.clock_ns = [&now] { return now; };
    auto primary = std::move(Ledger::open(options).value());
    std::vector<Commit> log;
    primary->env().set_commit_hook([&](lmdb::Txn& txn, ByteView changes) -> coconut::Status<lmdb::Error> {
        log.push_back({Bytes(changes.begin(), changes.end()), log.size() + 1});
        return primary->record_position(txn, log.back().position);
    });
    REQUIRE(primary->apply(opening_accounts()).ok());
    Transfer hold = transfer(30, 1, 2, 40, transfer_flags::pending);
    hold.timeout_s = 5;
    REQUIRE(primary->apply(std::vector<Event>{hold}).ok());
    now += 10 * ns_per_s;
    REQUIRE(primary->expire_pending().value() == 1);
    REQUIRE(log.size() == 3);

    Standby standby;
    for (const Commit& commit : log) REQUIRE(standby.ledger->apply_replicated(commit.changes, commit.position).ok());
    CHECK(standby.ledger->pending_state(make_id(30)).value() == PendingState::expired);
    CHECK(table_digests(standby.ledger->env()) == table_digests(primary->env()));
}

TEST_CASE("replication: a commit the hook refuses is not written, and the caller sees ErrorCode::replication") {
    Primary primary;
    REQUIRE(primary.ledger->apply(opening_accounts()).ok());
    const auto head = primary.ledger->head();
    primary.refuse = true;
    auto refused = primary.ledger->apply(std::vector<Event>{transfer(10, 2, 1, 500)});
    REQUIRE_FALSE(refused.ok());
    CHECK(refused.error().code == ErrorCode::replication);
    CHECK(refused.error().message.find("the stream refused the commit") != std::string::npos);
    CHECK(primary.ledger->head().sequence == head.sequence);
    CHECK_FALSE(primary.ledger->lookup_transfer(make_id(10)).value().has_value());
    CHECK(primary.ledger->replicated_position().value() == 1);
    primary.refuse = false;  // the same transfer goes through once the stream takes it
    REQUIRE(primary.ledger->apply(std::vector<Event>{transfer(10, 2, 1, 500)}).ok());
    CHECK(primary.log.size() == 2);
}

TEST_CASE("replication: a standby refuses a gap, a tampered journal entry, and a change that does not apply — writing nothing") {
    Primary primary;
    busy_day(*primary.ledger);
    Standby standby;

    SUBCASE("out of order") {
        auto skipped = standby.ledger->apply_replicated(primary.log[1].changes, 2);
        REQUIRE_FALSE(skipped.ok());
        CHECK(skipped.error().code == ErrorCode::replication);
        CHECK(skipped.error().message.find("does not follow position 0") != std::string::npos);
    }
    SUBCASE("a journal payload changed: the hash chain breaks") {
        REQUIRE(standby.ledger->apply_replicated(primary.log[0].changes, 1).ok());
        Bytes forged = primary.log[1].changes;
        // The first transfer's amount (500 = 0x01F4) inside its journal entry's payload.
        bool changed = false;
        lmdb::for_each_change(primary.log[1].changes, [&](const lmdb::Change& change) {
            if (change.table != "journal" || changed) return;
            const auto at = std::search(forged.begin(), forged.end(), change.value.begin(), change.value.end());
            REQUIRE(at != forged.end());
            *(at + static_cast<std::ptrdiff_t>(change.value.size()) - 1) ^= 0x01;  // the payload's last byte
            changed = true;
        });
        REQUIRE(changed);
        auto refused = standby.ledger->apply_replicated(forged, 2);
        REQUIRE_FALSE(refused.ok());
        CHECK(refused.error().code == ErrorCode::replication);
        CHECK(refused.error().message.find("does not chain") != std::string::npos);
        CHECK(standby.ledger->replicated_position().value() == 1);
        CHECK(standby.ledger->head().sequence == 3);  // the three accounts of position 1
    }
    SUBCASE("a delete of a key this copy does not hold: the copies have diverged") {
        Bytes bogus = {2, 7, 'p', 'e', 'n', 'd', 'i', 'n', 'g', 0, 2, 0xAB, 0xCD};
        auto refused = standby.ledger->apply_replicated(bogus, 1);
        REQUIRE_FALSE(refused.ok());
        CHECK(refused.error().code == ErrorCode::replication);
        CHECK(refused.error().message.find("holds no such key") != std::string::npos);
        CHECK(standby.ledger->replicated_position().value() == 0);
    }
    SUBCASE("a change set that does not decode") {
        const Bytes cut(primary.log[0].changes.begin(), primary.log[0].changes.end() - 3);
        auto refused = standby.ledger->apply_replicated(cut, 1);
        REQUIRE_FALSE(refused.ok());
        CHECK(refused.error().message.find("does not decode") != std::string::npos);
        CHECK(standby.ledger->head().sequence == 0);
    }
}

TEST_CASE("replication: several commits apply in one transaction, all or nothing") {
    Primary primary;
    busy_day(*primary.ledger);
    REQUIRE(primary.log.size() == 4);
    auto commits_of = [&](std::size_t from, std::size_t to, std::size_t position) {
        std::vector<Ledger::ReplicatedCommit> out;
        for (std::size_t i = from; i < to; ++i) out.push_back({primary.log[i].changes, position + (i - from)});
        return out;
    };

    SUBCASE("in order: the same tables and head as the primary, the last position stored") {
        Standby standby;
        REQUIRE(standby.ledger->apply_replicated(primary.log[0].changes, 1).ok());
        auto head = standby.ledger->apply_replicated(commits_of(1, 4, 2));
        REQUIRE_MESSAGE(head.ok(), (head.ok() ? "" : head.error().message));
        CHECK(head->hash == primary.ledger->head().hash);
        CHECK(standby.ledger->head().hash == primary.ledger->head().hash);
        CHECK(standby.ledger->replicated_position().value() == 4);
        CHECK(table_digests(standby.ledger->env()) == table_digests(primary.ledger->env()));
    }
    SUBCASE("a refused commit in the middle writes none of them") {
        Standby standby;
        REQUIRE(standby.ledger->apply_replicated(primary.log[0].changes, 1).ok());
        const auto before = standby.ledger->head();
        auto commits = commits_of(1, 4, 2);
        const Bytes cut(primary.log[2].changes.begin(), primary.log[2].changes.end() - 3);
        commits[1].changes = cut;
        auto refused = standby.ledger->apply_replicated(commits);
        REQUIRE_FALSE(refused.ok());
        CHECK(refused.error().message.find("does not decode") != std::string::npos);
        CHECK(standby.ledger->replicated_position().value() == 1);
        CHECK(standby.ledger->head().sequence == before.sequence);
        CHECK(standby.ledger->head().hash == before.hash);
        CHECK_FALSE(standby.ledger->lookup_transfer(make_id(10)).value().has_value());
    }
    SUBCASE("a gap between two of them is refused, nothing written") {
        Standby standby;
        auto commits = commits_of(0, 2, 1);
        commits[1].position = 3;
        auto refused = standby.ledger->apply_replicated(commits);
        REQUIRE_FALSE(refused.ok());
        CHECK(refused.error().message.find("does not follow position 1") != std::string::npos);
        CHECK(standby.ledger->replicated_position().value() == 0);
        CHECK(standby.ledger->head().sequence == 0);
    }
}

TEST_CASE("replication: only commits made while a hook is set are captured, each exactly once") {
    TempDir dir;
    Options options;
    options.directory = dir.path();
    auto ledger = std::move(Ledger::open(options).value());
    REQUIRE(ledger->apply(opening_accounts()).ok());  // no hook yet: nothing to capture
    std::vector<Bytes> sets;
    ledger->env().set_commit_hook([&sets](lmdb::Txn&, ByteView changes) -> coconut::Status<lmdb::Error> {
        sets.emplace_back(changes.begin(), changes.end());
        return Ok{};
    });
    REQUIRE(ledger->apply(std::vector<Event>{transfer(10, 2, 1, 500)}).ok());
    REQUIRE(sets.size() == 1);
    std::size_t journal_puts = 0;
    REQUIRE(lmdb::for_each_change(sets[0], [&](const lmdb::Change& change) {
        if (change.table == "journal" && change.op == lmdb::Change::Op::put) ++journal_puts;
    }));
    CHECK(journal_puts == 1);           // the transfer's entry only, not the three accounts' of before the hook
    ledger->env().set_commit_hook({});  // off again: the next commit is not captured
    REQUIRE(ledger->apply(std::vector<Event>{transfer(11, 2, 1, 300)}).ok());
    CHECK(sets.size() == 1);
    CHECK(ledger->replicated_position().value() == 0);
}

// ---- a commit the stream refused after the local commit (AfterCommit), and its rollback ----

namespace {

// A primary whose hook records each commit as published under a message id and leaves the stream's
// answer for after the local commit, as a cluster node does; `refuse_after` makes that answer a refusal.
struct OverlappingPrimary {
    TempDir dir;
    std::unique_ptr<Ledger> ledger;
    std::uint64_t position = 0;
    bool refuse_after = false;
    bool last_written = false;  // what the AfterCommit step was told

    OverlappingPrimary() { open(); }
    void open() {
        Options options;
        options.directory = dir.path();
        ledger = std::move(Ledger::open(options).value());
        position = ledger->replicated_position().value();
        ledger->env().set_commit_hook([this](lmdb::Txn& txn, ByteView) -> coconut::Status<lmdb::Error> {
            const std::uint64_t next = position + 1;
            if (auto recorded = ledger->record_position(txn, next, "id-" + std::to_string(next)); !recorded) return recorded;
            txn.after_commit([this, next](bool written) -> coconut::Status<lmdb::Error> {
                last_written = written;
                if (refuse_after) return Unexpected{lmdb::Error{lmdb::commit_refused_rc, "publish", "wrong last sequence"}};
                position = next;
                return Ok{};
            });
            return Ok{};
        });
    }
};

}  // namespace

TEST_CASE("replication: a commit refused after it was written fails, stays in the file, and rollback_last_commit takes it back") {
    OverlappingPrimary primary;
    REQUIRE(primary.ledger->apply(opening_accounts()).ok());
    REQUIRE(primary.ledger->apply(std::vector<Event>{transfer(10, 2, 1, 500)}).ok());
    CHECK(primary.last_written);
    CHECK(primary.ledger->last_published().value()->position == 2);
    CHECK(primary.ledger->last_published().value()->message_id == "id-2");
    const auto before = table_digests(primary.ledger->env());

    primary.refuse_after = true;
    auto refused = primary.ledger->apply(std::vector<Event>{transfer(11, 2, 1, 70)});
    REQUIRE_FALSE(refused.ok());
    CHECK(refused.error().code == ErrorCode::replication);
    CHECK(refused.error().message.find("wrong last sequence") != std::string::npos);
    CHECK(primary.last_written);  // LMDB had committed it: the step ran after the fsync
    primary.ledger.reset();
    primary.open();
    CHECK(primary.ledger->replicated_position().value() == 3);  // in the file, though refused
    CHECK(primary.ledger->lookup_transfer(make_id(11)).value().has_value());
    primary.ledger.reset();

    REQUIRE(lmdb::rollback_last_commit(primary.dir.path()).ok());
    primary.refuse_after = false;
    primary.open();
    CHECK(primary.ledger->replicated_position().value() == 2);
    CHECK(primary.ledger->last_published().value()->message_id == "id-2");
    CHECK_FALSE(primary.ledger->lookup_transfer(make_id(11)).value().has_value());
    CHECK(table_digests(primary.ledger->env()) == before);
    auto report = primary.ledger->check();
    REQUIRE(report.ok());
    CHECK_MESSAGE(report->ok(), (report->ok() ? "" : report->problems.front()));

    // The environment goes on from there: the next commit reuses the discarded one's place, durably.
    REQUIRE(primary.ledger->apply(std::vector<Event>{transfer(12, 2, 1, 30)}).ok());
    primary.ledger.reset();
    primary.open();
    CHECK(primary.ledger->replicated_position().value() == 3);
    CHECK(primary.ledger->lookup_transfer(make_id(12)).value().has_value());
    CHECK_FALSE(primary.ledger->lookup_transfer(make_id(11)).value().has_value());
    CHECK(primary.ledger->lookup_account(make_id(1)).value()->credits_posted == 530);
    report = primary.ledger->check();
    REQUIRE(report.ok());
    CHECK(report->ok());
}

TEST_CASE("replication: rollback_last_commit refuses what it cannot roll back and changes nothing") {
    OverlappingPrimary primary;
    REQUIRE(primary.ledger->apply(opening_accounts()).ok());
    REQUIRE(primary.ledger->apply(std::vector<Event>{transfer(10, 2, 1, 500)}).ok());
    primary.ledger.reset();

    SUBCASE("twice in a row: the second finds both meta pages at the same commit") {
        REQUIRE(lmdb::rollback_last_commit(primary.dir.path()).ok());
        auto again = lmdb::rollback_last_commit(primary.dir.path());
        REQUIRE_FALSE(again.ok());
        CHECK(again.error().rc == EINVAL);
        CHECK(again.error().message().find("nothing to roll back") != std::string::npos);
        primary.open();
        CHECK(primary.ledger->replicated_position().value() == 1);
    }
    SUBCASE("a directory without an LMDB environment, and a file that is not one") {
        TempDir empty;
        CHECK_FALSE(lmdb::rollback_last_commit(empty.path()).ok());
        {
            std::ofstream junk(empty.path() + "/data.mdb", std::ios::binary);
            junk << std::string(8192, 'x');
        }
        auto refused = lmdb::rollback_last_commit(empty.path());
        REQUIRE_FALSE(refused.ok());
        CHECK(refused.error().rc == EINVAL);
    }
    SUBCASE("while another process has the environment open") {
        int ready[2], done[2];
        REQUIRE(::pipe(ready) == 0);
        REQUIRE(::pipe(done) == 0);
        const pid_t child = ::fork();
        REQUIRE(child >= 0);
        if (child == 0) {  // holds the environment open until told to go
            Options options;
            options.directory = primary.dir.path();
            auto held = Ledger::open(options);
            char byte = held.ok() ? 'y' : 'n';
            (void)!::write(ready[1], &byte, 1);
            (void)!::read(done[0], &byte, 1);
            ::_exit(0);
        }
        char byte = 0;
        REQUIRE(::read(ready[0], &byte, 1) == 1);
        REQUIRE(byte == 'y');
        auto busy = lmdb::rollback_last_commit(primary.dir.path());
        CHECK_FALSE(busy.ok());
        if (!busy.ok()) CHECK(busy.error().rc == EBUSY);
        REQUIRE(::write(done[1], "x", 1) == 1);
        int status = 0;
        REQUIRE(::waitpid(child, &status, 0) == child);
        for (const int fd : {ready[0], ready[1], done[0], done[1]}) ::close(fd);
        primary.open();
        CHECK(primary.ledger->replicated_position().value() == 2);  // untouched
    }
}
