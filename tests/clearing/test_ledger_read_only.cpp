// Options::read_only: a second process reads the ledger while the
// daemon writes it. MDB_RDONLY, no table created, writes refused, the head follows the writer.
#include "ledger_fixture.hpp"

#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>

using namespace test;

namespace {

std::unique_ptr<Ledger> open_read_only(const std::string& directory) {
    Options options;
    options.directory = directory;
    options.read_only = true;
    auto opened = Ledger::open(options);
    REQUIRE_MESSAGE(opened.ok(), (opened.ok() ? "" : opened.error().message));
    return std::move(*opened);
}

}  // namespace

TEST_CASE("read-only open of a directory without a ledger fails and creates nothing") {
    TempDir dir;
    Options options;
    options.directory = dir.path();
    options.read_only = true;
    auto opened = Ledger::open(options);
    REQUIRE_FALSE(opened.ok());
    CHECK(opened.error().code == ErrorCode::storage);
    CHECK(std::filesystem::is_empty(dir.path()));
}

TEST_CASE("a read-only ledger reads what was committed and refuses writes") {
    Fixture f;
    f.apply({account(1), account(2), account(3)});
    REQUIRE(f.one(transfer(10, 3, 1, 500)) == ResultCode::ok);
    const JournalHead written = f.ledger->head();
    f.ledger.reset();  // LMDB: one open of an environment per process

    auto reader = open_read_only(f.dir.path());
    CHECK(reader->head().sequence == written.sequence);
    CHECK(reader->head().hash == written.hash);
    auto found = reader->lookup_transfer(make_id(10));
    REQUIRE(found.ok());
    REQUIRE(found->has_value());
    CHECK((*found)->amount == 500);
    auto journal = reader->read_journal(1, 10);
    REQUIRE(journal.ok());
    REQUIRE(journal->size() == 4);
    const auto stored = journal_transfer(journal->back());
    REQUIRE(stored.has_value());
    CHECK(stored->id == make_id(10));
    CHECK_FALSE(journal_transfer(journal->front()).has_value());  // an account_created entry
    reader->release_resident_pages();                             // drops mapped pages only: every read still answers the same
    CHECK(reader->lookup_transfer(make_id(10)).value()->amount == 500);
    auto report = reader->check();
    REQUIRE(report.ok());
    CHECK(report->ok());

    const std::vector<Event> batch = {transfer(11, 3, 1, 1)};
    auto refused = reader->apply(batch);
    REQUIRE_FALSE(refused.ok());
    CHECK(refused.error().code == ErrorCode::storage);
    auto swept = reader->expire_pending();
    CHECK_FALSE(swept.ok());
    CHECK(reader->head().sequence == written.sequence);  // nothing was written
}

TEST_CASE("a read-only reader in one process follows the commits of the writer in another") {
    Fixture f;
    f.apply({account(1), account(2), account(3)});
    f.ledger.reset();
    int to_child[2];
    int to_parent[2];
    REQUIRE(pipe(to_child) == 0);
    REQUIRE(pipe(to_parent) == 0);
    const pid_t child = fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        // The writer: one transfer per request from the parent, acknowledged after its commit.
        Options options;
        options.directory = f.dir.path();
        auto writer = Ledger::open(options);
        if (!writer) _exit(2);
        char command = 0;
        std::uint64_t id = 100;
        while (read(to_child[0], &command, 1) == 1 && command == 'w') {
            const std::vector<Event> batch = {transfer(id++, 3, 1, 7)};
            auto applied = (*writer)->apply(batch);
            if (!applied || (*applied)[0].code != ResultCode::ok) _exit(3);
            if (write(to_parent[1], "k", 1) != 1) _exit(4);
        }
        _exit(0);
    }
    auto reader = open_read_only(f.dir.path());
    const std::uint64_t before = reader->head().sequence;
    for (int i = 1; i <= 3; ++i) {
        char ack = 0;
        REQUIRE(write(to_child[1], "w", 1) == 1);
        REQUIRE(read(to_parent[0], &ack, 1) == 1);
        CHECK(reader->head().sequence == before + static_cast<std::uint64_t>(i));
        auto found = reader->lookup_transfer(make_id(99 + static_cast<std::uint64_t>(i)));
        REQUIRE(found.ok());
        CHECK(found->has_value());
    }
    REQUIRE(write(to_child[1], "q", 1) == 1);
    int status = 0;
    REQUIRE(waitpid(child, &status, 0) == child);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    auto account = reader->lookup_account(make_id(1));
    REQUIRE(account.ok());
    CHECK((*account)->credits_posted == 21);
}
