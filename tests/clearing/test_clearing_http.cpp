// coconut::clearing::http pieces without a socket: the newest-first ledger read behind pagination, the
// token store (keyed hashes, the key file's rules), card numbers and roles, the HTTP thread's priority. The endpoints themselves are
// tested end to end by test_clearingd_http.py.
#include <coconut/clearing/http.hpp>

#include "ledger_fixture.hpp"

#include <sched.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <iterator>
#include <thread>

namespace {

using namespace coconut;
using namespace coconut::clearing;
namespace http = coconut::clearing::http;

std::string file_text(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace

TEST_CASE("account_transfers_before pages newest first and never repeats or skips a transfer") {
    test::Fixture f;
    f.apply({test::account(1), test::account(2), test::account(3)});
    for (std::uint64_t id = 10; id < 17; ++id) {
        f.advance_s(1);
        // 2 ↔ 3 in the middle: not on account 1's list.
        CHECK(f.one(id == 13 ? test::transfer(id, 2, 3, 1) : test::transfer(id, 1, 2, id)) == ledger::ResultCode::ok);
    }
    std::vector<std::uint64_t> seen;
    std::uint64_t before = ~std::uint64_t{0};
    for (;;) {
        auto page = f.ledger->account_transfers_before(ledger::make_id(1), before, 2);
        REQUIRE(page.ok());
        if (page->empty()) break;
        for (const auto& t : *page) seen.push_back(t.id.low);
        before = page->back().timestamp;
    }
    CHECK(seen == std::vector<std::uint64_t>{16, 15, 14, 12, 11, 10});
    auto none = f.ledger->account_transfers_before(ledger::make_id(4), ~std::uint64_t{0}, 10);
    REQUIRE(none.ok());
    CHECK(none->empty());  // an account after every other in key order, with no transfers
    auto first = f.ledger->account_transfers_before(ledger::make_id(1), 0, 10);
    REQUIRE(first.ok());
    CHECK(first->empty());

    // The newest transfer's timestamp from the index alone: account 1's is transfer 16's, account 3's
    // (before it in key order, its only transfer in the middle) transfer 13's, account 4 has none.
    auto txn = f.ledger->begin_read();
    REQUIRE(txn.ok());
    auto newest_of = [&](std::uint64_t account) {
        auto at = f.ledger->latest_transfer_timestamp(*txn, ledger::make_id(account));
        REQUIRE(at.ok());
        return *at;
    };
    auto timestamp_of = [&](std::uint64_t id) { return f.ledger->lookup_transfer(ledger::make_id(id))->value().timestamp; };
    CHECK(newest_of(1) == timestamp_of(16));
    CHECK(newest_of(3) == timestamp_of(13));
    CHECK(newest_of(2) == timestamp_of(16));
    CHECK(newest_of(4) == 0);
}

TEST_CASE("tokens are stored as keyed hashes under an owner-only key, never in clear") {
    test::Fixture f;
    auto tokens = http::Tokens::open(f.ledger->env(), f.dir.path());
    REQUIRE(tokens.ok());
    const auto key_path = std::filesystem::path(f.dir.path()) / "http-token.key";
    struct stat st {};
    REQUIRE(::stat(key_path.c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);
    CHECK(st.st_size == 32);

    const std::string token = http::Tokens::new_token(http::card_token_prefix);
    CHECK(token.starts_with("card_"));
    CHECK(token.size() == 5 + 32);  // 24 random bytes, base64url
    CHECK(http::Tokens::new_token(http::card_token_prefix) != token);

    auto clerk_token = http::add_clerk(*f.ledger, **tokens, "alice", http::roles::read | http::roles::hotlist);
    REQUIRE(clerk_token.ok());
    auto clerk = (*tokens)->clerk(*clerk_token);
    REQUIRE(clerk.ok());
    REQUIRE(clerk->has_value());
    CHECK((*clerk)->name == "alice");
    CHECK((*clerk)->roles == (http::roles::read | http::roles::hotlist));
    auto stranger = (*tokens)->clerk("clerk_" + std::string(32, 'A'));
    REQUIRE(stranger.ok());
    CHECK(!stranger->has_value());

    // Neither the token nor its random part is anywhere in the environment's file.
    const std::string stored = file_text(std::filesystem::path(f.dir.path()) / "data.mdb");
    CHECK(stored.find(*clerk_token) == std::string::npos);
    CHECK(stored.find(clerk_token->substr(6)) == std::string::npos);

    // The same token under another key hashes differently: a copied database without the key is useless.
    test::TempDir other_dir;
    ledger::Options other_options;
    other_options.directory = other_dir.path();
    auto other_ledger = ledger::Ledger::open(other_options);
    REQUIRE(other_ledger.ok());
    auto other = http::Tokens::open((*other_ledger)->env(), other_dir.path());
    REQUIRE(other.ok());
    CHECK((*other)->hash(token) != (*tokens)->hash(token));

    auto journal = (*tokens)->journal(0, 10);
    REQUIRE(journal.ok());
    REQUIRE(journal->size() == 1);
    CHECK(journal->front().clerk == "admin");
    CHECK(journal->front().action == "clerk_add");
    CHECK(journal->front().target == "alice");
}

TEST_CASE("a token key readable by others, or of the wrong size, is refused") {
    test::Fixture f;
    const auto key_path = std::filesystem::path(f.dir.path()) / "http-token.key";
    {
        std::ofstream out(key_path, std::ios::binary);
        out << std::string(32, 'k');
    }
    ::chmod(key_path.c_str(), 0644);
    auto loose = http::Tokens::open(f.ledger->env(), f.dir.path());
    REQUIRE(!loose.ok());
    CHECK(loose.error().message.find("chmod 600") != std::string::npos);
    ::chmod(key_path.c_str(), 0600);
    CHECK(http::Tokens::open(f.ledger->env(), f.dir.path()).ok());
    {
        std::ofstream out(key_path, std::ios::binary | std::ios::app);
        out << "x";
    }
    auto longer = http::Tokens::open(f.ledger->env(), f.dir.path());
    REQUIRE(!longer.ok());
    CHECK(longer.error().message.find("exactly 32 bytes") != std::string::npos);
}

TEST_CASE("card numbers are the ASN's rightmost 16 digits; roles parse by name") {
    const Asn asn{0x46, 0x01, 0x62, 0x31, 0x23, 0x45, 0x67, 0x89, 0x01, 0x23};
    CHECK(http::to_string(http::card_number_of(asn)) == "6231234567890123");
    CHECK(http::parse_card_number("6231234567890123") == http::card_number_of(asn));
    CHECK(!http::parse_card_number("623123456789012"));
    CHECK(!http::parse_card_number("62312345678901234"));
    CHECK(!http::parse_card_number("62312345678901AB"));
    CHECK(http::parse_roles("hotlist,read") == (http::roles::hotlist | http::roles::read));
    CHECK(http::parse_roles("settlement") == http::roles::settlement);
    CHECK(!http::parse_roles(""));
    CHECK(!http::parse_roles("read,admin"));
    CHECK(!http::parse_roles("read,"));
    CHECK(http::role_names(http::roles::all) ==
          std::vector<std::string>{"hotlist", "registry", "settlement", "read", "adjust", "clerks", "cluster", "counter"});
    CHECK(http::parse_roles("counter,read") == (http::roles::counter | http::roles::read));
}

TEST_CASE("add_clerk refuses an empty, spaced or overlong name and empty roles") {
    test::Fixture f;
    auto tokens = http::Tokens::open(f.ledger->env(), f.dir.path());
    REQUIRE(tokens.ok());
    CHECK(!http::add_clerk(*f.ledger, **tokens, "", http::roles::read).ok());
    CHECK(!http::add_clerk(*f.ledger, **tokens, "two words", http::roles::read).ok());
    CHECK(!http::add_clerk(*f.ledger, **tokens, std::string(http::clerk_name_chars_max + 1, 'a'), http::roles::read).ok());
    CHECK(!http::add_clerk(*f.ledger, **tokens, "bob", 0).ok());
    auto journal = (*tokens)->journal(0, 10);
    REQUIRE(journal.ok());
    CHECK(journal->empty());  // nothing refused was journaled as done
}

TEST_CASE("the HTTP thread's priority parses, and lowering it changes only the calling thread") {
    CHECK(http::parse_thread_priority("idle")->idle);
    CHECK(http::parse_thread_priority("normal")->nice == 0);
    CHECK_FALSE(http::parse_thread_priority("normal")->idle);
    CHECK(http::parse_thread_priority("nice:10")->nice == 10);
    CHECK(http::parse_thread_priority("nice:19")->nice == 19);
    for (std::string_view bad : {"", "nice:", "nice:0", "nice:20", "nice:-1", "nice:5x", "IDLE", "batch", "nice: 5"}) {
        CHECK_MESSAGE(!http::parse_thread_priority(bad), bad);
    }
    REQUIRE(http::parse_thread_priority(http::http_thread_priority_default));

    const int caller_nice = ::getpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()));
    const int caller_policy = ::sched_getscheduler(::gettid());
    int niced = -100, idle_policy = -1;
    std::thread([&] {
        REQUIRE(
            http::lower_thread_priority(*http::parse_thread_priority("nice:19")).ok());  // never above the caller's: allowed unprivileged
        niced = ::getpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()));
    }).join();
    std::thread([&] {
        REQUIRE(http::lower_thread_priority(*http::parse_thread_priority("idle")).ok());
        idle_policy = ::sched_getscheduler(::gettid());
    }).join();
    CHECK(niced == 19);
    CHECK(idle_policy == SCHED_IDLE);
    // The test's own thread (standing for the ledger writer) kept its priority.
    CHECK(::getpriority(PRIO_PROCESS, static_cast<id_t>(::gettid())) == caller_nice);
    CHECK(::sched_getscheduler(::gettid()) == caller_policy);
}

TEST_CASE("a revoked clerk token is refused like an unknown one, listed as revoked, and journaled") {
    test::Fixture f;
    auto tokens = http::Tokens::open(f.ledger->env(), f.dir.path());
    REQUIRE(tokens.ok());
    http::Tokens& t = **tokens;
    auto alice = http::add_clerk(*f.ledger, t, "alice", http::roles::read | http::roles::hotlist);
    auto alice2 = http::add_clerk(*f.ledger, t, "alice", http::roles::read);
    auto bob = http::add_clerk(*f.ledger, t, "bob", http::roles::registry);
    REQUIRE((alice.ok() && alice2.ok() && bob.ok()));
    REQUIRE(t.clerk(*alice)->has_value());

    auto revoked = http::revoke_clerk(*f.ledger, t, "alice");
    REQUIRE(revoked.ok());
    CHECK(*revoked == 2);  // both of alice's tokens
    CHECK_FALSE(t.clerk(*alice)->has_value());
    CHECK_FALSE(t.clerk(*alice2)->has_value());
    REQUIRE(t.clerk(*bob)->has_value());
    CHECK((*t.clerk(*bob))->name == "bob");

    // Again, or an unknown name: refused, nothing journaled.
    CHECK(http::revoke_clerk(*f.ledger, t, "alice").error().code == ErrorCode::bad_input);
    CHECK(http::revoke_clerk(*f.ledger, t, "carol").error().code == ErrorCode::bad_input);

    auto clerks = t.clerks();
    REQUIRE(clerks.ok());
    REQUIRE(clerks->size() == 3);
    CHECK(clerks->at(0).name == "alice");
    CHECK(clerks->at(0).revoked());
    CHECK(clerks->at(1).revoked());
    CHECK(clerks->at(2).name == "bob");
    CHECK(clerks->at(2).roles == http::roles::registry);

    auto journal = t.journal(0, 10);
    REQUIRE(journal.ok());
    REQUIRE(journal->size() == 4);  // three clerk_add, one clerk_revoke
    CHECK(journal->back().action == "clerk_revoke");
    CHECK(journal->back().target == "alice");
    CHECK(journal->back().clerk == "admin");
    CHECK(journal->back().detail == "2 token(s)");
}

TEST_CASE("issue-tokens writes each token file under a new temporary name: a file placed at a predictable name is left alone") {
    test::Fixture f;
    auto tokens = http::Tokens::open(f.ledger->env(), f.dir.path());
    REQUIRE(tokens.ok());
    auto registry = Registry::open(f.ledger->env());
    REQUIRE(registry.ok());
    auto loaded = load_registry(*f.ledger, **registry, R"({"cards": [{"asn": "46010000000012345678", "issuer_id": "4600000000000001"}]})");
    REQUIRE_MESSAGE(loaded.ok(), (loaded.ok() ? "" : loaded.error().message));
    const auto out = std::filesystem::path(f.dir.path()) / "tokens";
    std::filesystem::create_directories(out);
    // What a tool using "<file>.tmp" would have opened, truncated and renamed over the token file.
    const auto planted = out / "0000000012345678.token.tmp";
    std::ofstream(planted) << "planted\n";
    ::chmod(planted.c_str(), 0644);
    auto issued = http::issue_card_tokens(*f.ledger, **registry, **tokens, {}, out);
    REQUIRE_MESSAGE(issued.ok(), (issued.ok() ? "" : issued.error().message));
    CHECK(*issued == 1);
    CHECK(file_text(planted) == "planted\n");
    const auto token_file = out / "0000000012345678.token";
    struct stat st {};
    REQUIRE(::stat(token_file.c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);
    CHECK(file_text(token_file).starts_with("card_"));
    std::size_t files = 0;
    for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator(out)) ++files;
    CHECK(files == 2);  // the token and the planted file: no temporary left behind
}
