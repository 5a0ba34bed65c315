// Shared helpers for the ledger tests: a temporary directory, a fake clock, record builders.
#pragma once

#include <coconut/ledger/ledger.hpp>

#include <doctest/doctest.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

namespace test {

using namespace coconut;
using namespace coconut::ledger;

inline constexpr std::uint64_t ns_per_s = 1'000'000'000;
// 2023-11-14T22:13:20Z: any fixed wall time works; tests move it explicitly.
inline constexpr std::uint64_t clock_start_ns = 1'700'000'000 * ns_per_s;

class TempDir {
public:
    TempDir() {
        std::string pattern = (std::filesystem::temp_directory_path() / "coconut-ledger-XXXXXX").string();
        REQUIRE(mkdtemp(pattern.data()) != nullptr);
        path_ = pattern;
    }
    ~TempDir() {
        std::error_code ignored;
        std::filesystem::remove_all(path_, ignored);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    const std::string& path() const { return path_; }

private:
    std::string path_;
};

inline Account account(std::uint64_t id, std::uint32_t ledger = 1, std::uint16_t code = 10, std::uint16_t flags = 0) {
    Account a;
    a.id = make_id(id);
    a.ledger = ledger;
    a.code = code;
    a.flags = flags;
    return a;
}

inline Transfer transfer(std::uint64_t id, std::uint64_t debit, std::uint64_t credit, std::uint64_t amount_fen, std::uint16_t flags = 0) {
    Transfer t;
    t.id = make_id(id);
    t.debit_account_id = make_id(debit);
    t.credit_account_id = make_id(credit);
    t.amount = amount_fen;
    t.ledger = 1;
    t.code = 1;
    t.flags = flags;
    return t;
}

inline Transfer post(std::uint64_t id, std::uint64_t pending_id, std::uint64_t amount_fen = amount_max) {
    Transfer t;
    t.id = make_id(id);
    t.pending_id = make_id(pending_id);
    t.amount = amount_fen;
    t.flags = transfer_flags::post_pending;
    return t;
}

inline Transfer void_(std::uint64_t id, std::uint64_t pending_id) {
    Transfer t;
    t.id = make_id(id);
    t.pending_id = make_id(pending_id);
    t.flags = transfer_flags::void_pending;
    return t;
}

struct Fixture {
    TempDir dir;
    std::shared_ptr<std::atomic<std::uint64_t>> clock = std::make_shared<std::atomic<std::uint64_t>>(clock_start_ns);
    std::unique_ptr<Ledger> ledger;

    explicit Fixture(std::size_t map_size_bytes = map_size_bytes_default, bool check_after_commit = true) {
        open(map_size_bytes, check_after_commit);
    }

    void open(std::size_t map_size_bytes = map_size_bytes_default, bool check_after_commit = true) {
        ledger.reset();
        Options options;
        options.directory = dir.path();
        options.map_size_bytes = map_size_bytes;
        options.check_after_commit = check_after_commit;
        options.clock_ns = [clock = clock] { return clock->load(); };
        auto opened = Ledger::open(options);
        REQUIRE_MESSAGE(opened.ok(), (opened.ok() ? "" : opened.error().message));
        ledger = std::move(*opened);
    }

    void advance_s(std::uint64_t seconds) { *clock += seconds * ns_per_s; }

    std::vector<EventResult> apply(const std::vector<Event>& events) {
        auto results = ledger->apply(events);
        REQUIRE_MESSAGE(results.ok(), (results.ok() ? "" : results.error().message));
        REQUIRE(results->size() == events.size());
        return *results;
    }
    ResultCode one(const Event& event) { return apply({event}).front().code; }

    Account get(std::uint64_t id) {
        auto found = ledger->lookup_account(make_id(id));
        REQUIRE(found.ok());
        REQUIRE(found->has_value());
        return **found;
    }

    void require_check() {
        auto report = ledger->check();
        REQUIRE(report.ok());
        CHECK_MESSAGE(report->ok(), (report->ok() ? "" : report->problems.front()));
    }
};

}  // namespace test
