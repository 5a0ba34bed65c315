// GET /v1/clerk/cluster/snapshot and /position through the API (clearing/README.md "Joining a node"):
// what a snapshot holds, one at a time, the roles; the manifest's parser.
#include "clearing_fixture.hpp"
#include "http_api.hpp"

#include <coconut/clearing/snapshot.hpp>
#include <coconut/ledger/ledger.hpp>

#include <nlohmann/json.hpp>

#include <fstream>
#include <unistd.h>

using namespace coconut;
using namespace coconut::clearing;
using namespace clearing_test;

namespace {

struct ApiRig {
    Rig rig;
    http::HttpOptions options;
    http::HttpStats stats;
    std::unique_ptr<http::Api> api;
    std::string cluster_token, reader_token;

    ApiRig() {
        auto cluster = http::add_clerk(*rig.ledger, rig.daemon->tokens(), "joiner", http::roles::cluster);
        auto reader = http::add_clerk(*rig.ledger, rig.daemon->tokens(), "reader", http::roles::read);
        REQUIRE((cluster.ok() && reader.ok()));
        cluster_token = *cluster;
        reader_token = *reader;
        api = std::make_unique<http::Api>(http::Services{*rig.ledger, rig.writer, *rig.registry, rig.daemon->tokens(), nullptr, nullptr,
                                                         nullptr, nullptr, nullptr, rig.daemon->options().data},
                                          options, stats);
    }

    // The answer, whichever thread gives it.
    http::ApiResponse get(const std::string& target, const std::string& token) {
        std::promise<http::ApiResponse> answered;
        const std::string authorization = "Bearer " + token;
        api->handle(http::ApiRequest{"GET", target, authorization, "", {}},
                    [&answered](http::ApiResponse r) { answered.set_value(std::move(r)); });
        auto future = answered.get_future();
        REQUIRE(future.wait_for(std::chrono::seconds(30)) == std::future_status::ready);
        return future.get();
    }
};

std::string read_key(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace

TEST_CASE("a snapshot is the manifest line and a compacted ledger that holds exactly the head and position it names") {
    ApiRig a;
    const http::ApiResponse r = a.get("/v1/clerk/cluster/snapshot", a.cluster_token);
    REQUIRE_MESSAGE(r.status == 200, r.body);
    CHECK(r.content_type == snapshot_content_type);
    REQUIRE(!r.body.empty());
    REQUIRE(r.body.back() == '\n');
    auto manifest = parse_manifest(std::string_view(r.body).substr(0, r.body.size() - 1));
    REQUIRE(manifest.ok());
    REQUIRE(r.file != nullptr);
    CHECK(r.file->bytes == manifest->lmdb_bytes);
    REQUIRE(manifest->files.size() == 1);
    CHECK(manifest->files[0].first == "http-token.key");
    const std::string key = read_key(a.rig.daemon->options().data / "http-token.key");
    CHECK(std::string(manifest->files[0].second.begin(), manifest->files[0].second.end()) == key);

    // The file as sent, opened as a ledger: the manifest's head; the live ledger's head at the time.
    TempDir copy;
    std::vector<char> bytes(manifest->lmdb_bytes);
    REQUIRE(::pread(r.file->fd, bytes.data(), bytes.size(), 0) == static_cast<ssize_t>(bytes.size()));
    std::ofstream(copy.path / "data.mdb", std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    ledger::Options options;
    options.directory = copy.path.string();
    options.read_only = true;
    auto opened = ledger::Ledger::open(options);
    REQUIRE(opened.ok());
    const ledger::JournalHead head = (*opened)->head();
    CHECK(head.sequence == manifest->journal_sequence);
    CHECK(to_hex(ByteView(head.hash.data(), head.hash.size())) == manifest->journal_hash);
    CHECK((*opened)->replicated_position().value() == manifest->position);
    CHECK(head.sequence > 0);
    CHECK((*opened)->lookup_account(purse_float_account).ok());
    // No temporary directory is left in the data directory.
    for (const auto& entry : std::filesystem::directory_iterator(a.rig.daemon->options().data))
        CHECK(entry.path().filename().string().rfind(".snapshot-", 0) != 0);
}

TEST_CASE("one snapshot at a time: a second while the first is being sent is 503 busy, then allowed again") {
    ApiRig a;
    http::ApiResponse first = a.get("/v1/clerk/cluster/snapshot", a.cluster_token);
    REQUIRE(first.status == 200);
    const http::ApiResponse second = a.get("/v1/clerk/cluster/snapshot", a.cluster_token);
    CHECK(second.status == 503);
    CHECK(second.body.find("one at a time") != std::string::npos);
    first.file.reset();  // sent (or the connection gone): the descriptor closes and the next may go
    const http::ApiResponse third = a.get("/v1/clerk/cluster/snapshot", a.cluster_token);
    CHECK(third.status == 200);
}

TEST_CASE("the cluster routes: role cluster for the snapshot, settlement/read/cluster for the position; both journaled") {
    ApiRig a;
    const http::ApiResponse refused = a.get("/v1/clerk/cluster/snapshot", a.reader_token);
    CHECK(refused.status == 403);
    CHECK(refused.body.find("role cluster required") != std::string::npos);
    CHECK(a.get("/v1/clerk/cluster/snapshot", "clerk_unknown").status == 401);
    const auto before = a.rig.ledger->replicated_position().value();
    const http::ApiResponse position = a.get("/v1/clerk/cluster/position", a.reader_token);
    REQUIRE(position.status == 200);
    const auto body = nlohmann::json::parse(position.body);
    CHECK(body["position"] == before);
    CHECK(body["journal_sequence"].get<std::uint64_t>() > 0);
    auto journal = a.rig.daemon->tokens().journal(0, 100);
    REQUIRE(journal.ok());
    REQUIRE(!journal->empty());
    CHECK(journal->back().action == "position");
    CHECK(journal->back().clerk == "reader");
}

TEST_CASE("a manifest names only known files, its format and a ledger") {
    SnapshotManifest m;
    m.position = 7;
    m.journal_sequence = 9;
    m.journal_hash = "ab";
    m.lmdb_bytes = 4096;
    m.files.emplace_back("http-token.key", Bytes{1, 2, 3});
    auto back = parse_manifest(manifest_json(m));
    REQUIRE(back.ok());
    CHECK(back->position == 7);
    CHECK(back->files.at(0).second == Bytes{1, 2, 3});
    auto text = nlohmann::json::parse(manifest_json(m));
    text["files"] = {{"../../etc/passwd", "00"}};
    CHECK(parse_manifest(text.dump()).error().message.find("unknown file") != std::string::npos);
    text = nlohmann::json::parse(manifest_json(m));
    text["format"] = 2;
    CHECK(parse_manifest(text.dump()).error().message.find("format 2") != std::string::npos);
    CHECK(parse_manifest("<html>").error().message.find("coconut-clearingd") != std::string::npos);
    text = nlohmann::json::parse(manifest_json(m));
    text["lmdb_bytes"] = 0;
    CHECK(!parse_manifest(text.dump()).ok());
}
