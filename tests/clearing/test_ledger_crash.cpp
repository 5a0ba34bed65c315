// Crash safety: a child process applies batches through the group-commit writer and reports every
// acknowledged batch on a pipe; the parent SIGKILLs it at a random moment, reopens the ledger and
// checks that (1) every invariant holds, (2) every acknowledged batch is there, (3) every batch is
// all-or-nothing. Repeated many times against the same data directory.
#include "ledger_fixture.hpp"

#include <csignal>
#include <random>
#include <set>
#include <thread>

#include <sys/wait.h>
#include <unistd.h>

using namespace test;

namespace {

// Kill rounds: each restarts the child on the grown ledger, so late rounds also cover recovery of a
// ledger that has been killed many times before.
constexpr int rounds = 60;
constexpr int submitters = 4;
// Single-phase transfers per batch (the batch also carries a linked pair, a hold and a post).
constexpr std::uint64_t transfers_per_batch = 5;
constexpr std::uint64_t accounts = 10;
// Batch numbers: round * round_stride + submitter * submitter_stride + n.
constexpr std::uint64_t round_stride = 1'000'000;
constexpr std::uint64_t submitter_stride = 100'000;

Id transfer_id(std::uint64_t batch, std::uint64_t index) { return Id{batch + 1, index + 1}; }

std::vector<Event> make_batch(std::uint64_t batch, std::uint64_t n, std::mt19937_64& random) {
    std::vector<Event> events;
    auto pick = [&] { return 1 + random() % accounts; };
    for (std::uint64_t i = 0; i < transfers_per_batch; ++i) {
        std::uint64_t debit = pick();
        std::uint64_t credit = pick();
        if (credit == debit) credit = debit % accounts + 1;
        Transfer t = transfer(0, debit, credit, 1 + random() % 1000);
        t.id = transfer_id(batch, i);
        events.push_back(t);
    }
    Transfer first = transfer(0, 1, 2, 7, transfer_flags::linked);
    first.id = transfer_id(batch, 10);
    Transfer second = transfer(0, 2, 3, 7);
    second.id = transfer_id(batch, 11);
    events.push_back(first);
    events.push_back(second);
    Transfer hold = transfer(0, pick() % accounts + 1, accounts + 1, 50, transfer_flags::pending);
    hold.id = transfer_id(batch, 20);
    hold.timeout_s = 1;
    events.push_back(hold);
    if (n > 0) {  // post the previous batch's hold (it may have expired: then the post fails, fine)
        Transfer p;
        p.id = transfer_id(batch, 21);
        p.pending_id = transfer_id(batch - 1, 20);
        p.amount = 20;
        p.flags = transfer_flags::post_pending;
        events.push_back(p);
    }
    return events;
}

[[noreturn]] void child(const std::string& directory, int round, int ack_fd) {
    Options options;
    options.directory = directory;
    auto opened = Ledger::open(options);
    if (!opened) _exit(2);
    Writer writer(**opened);
    std::vector<std::thread> threads;
    for (int s = 0; s < submitters; ++s) {
        threads.emplace_back([&, s] {
            std::mt19937_64 random(static_cast<std::uint64_t>(round * 100 + s));
            for (std::uint64_t n = 0;; ++n) {
                const std::uint64_t batch =
                    static_cast<std::uint64_t>(round) * round_stride + static_cast<std::uint64_t>(s) * submitter_stride + n;
                auto reply = writer.submit(make_batch(batch, n, random)).get();
                if (!reply) _exit(3);
                for (std::size_t i = 0; i < transfers_per_batch; ++i) {
                    if ((*reply)[i].code != ResultCode::ok) _exit(4);
                }
                // The acknowledgement: written only after the commit that holds the batch was synced.
                if (write(ack_fd, &batch, sizeof batch) != sizeof batch) _exit(5);
            }
        });
    }
    for (auto& t : threads) t.join();
    _exit(0);
}

void create_accounts(const std::string& directory) {
    Options options;
    options.directory = directory;
    auto ledger = Ledger::open(options);
    REQUIRE(ledger.ok());
    std::vector<Event> events;
    for (std::uint64_t id = 1; id <= accounts + 1; ++id) events.push_back(account(id));
    auto results = (*ledger)->apply(events);
    REQUIRE(results.ok());
}

bool exists(const Ledger& ledger, const Id& id) {
    auto found = ledger.lookup_transfer(id);
    REQUIRE(found.ok());
    return found->has_value();
}

}  // namespace

TEST_CASE("kill -9 at random moments: every acknowledged batch survives, batches are atomic, invariants hold") {
    TempDir dir;
    create_accounts(dir.path());
    std::mt19937 random(20261126);
    std::uint64_t acknowledged_total = 0;
    for (int round = 0; round < rounds; ++round) {
        int pipe_fds[2];
        REQUIRE(pipe(pipe_fds) == 0);
        const pid_t pid = fork();
        REQUIRE(pid >= 0);
        if (pid == 0) {
            close(pipe_fds[0]);
            child(dir.path(), round, pipe_fds[1]);
        }
        close(pipe_fds[1]);
        // Kill somewhere between start-up and a few hundred commits.
        std::this_thread::sleep_for(std::chrono::microseconds(2'000 + random() % 150'000));
        REQUIRE(kill(pid, SIGKILL) == 0);
        std::set<std::uint64_t> acknowledged;
        std::uint64_t batch = 0;
        while (read(pipe_fds[0], &batch, sizeof batch) == sizeof batch) acknowledged.insert(batch);
        close(pipe_fds[0]);
        int status = 0;
        REQUIRE(waitpid(pid, &status, 0) == pid);
        REQUIRE_MESSAGE(WIFSIGNALED(status), "child exited by itself with status ", WEXITSTATUS(status));

        Options options;
        options.directory = dir.path();
        auto ledger = Ledger::open(options);
        REQUIRE(ledger.ok());
        auto report = (*ledger)->check();
        REQUIRE(report.ok());
        REQUIRE_MESSAGE(report->ok(), "round ", round, ": ", (report->ok() ? "" : report->problems.front()));
        for (std::uint64_t acked : acknowledged) {
            for (std::uint64_t i = 0; i < transfers_per_batch; ++i) {
                REQUIRE_MESSAGE(exists(**ledger, transfer_id(acked, i)), "acknowledged batch ", acked, " lost");
            }
        }
        // All or nothing, acknowledged or not: check each submitter's batches past its last ack too.
        for (int s = 0; s < submitters; ++s) {
            const std::uint64_t base = static_cast<std::uint64_t>(round) * round_stride + static_cast<std::uint64_t>(s) * submitter_stride;
            for (std::uint64_t n = 0; n < 2000; ++n) {
                int present = 0;
                for (std::uint64_t i : {0, 1, 2, 3, 4, 10, 11, 20}) present += exists(**ledger, transfer_id(base + n, i));
                REQUIRE_MESSAGE((present == 0 || present == 8), "batch ", base + n, " half applied");
                if (present == 0 && !acknowledged.contains(base + n + 1)) break;  // past the last commit
            }
        }
        acknowledged_total += acknowledged.size();
    }
    MESSAGE("acknowledged batches across ", rounds, " kills: ", acknowledged_total);
    CHECK(acknowledged_total > 0);
}
