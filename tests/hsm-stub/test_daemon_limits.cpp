// Integration: admission in the real coconut-hsmd (PROTOCOL.md, "Connection limits") — the allow-list,
// the per-address, per-client and total limits, accepting at the descriptor limit, and refusals before
// authentication written to the audit log as one line per interval.
#include "daemon_process.hpp"

#include <coconut/hsm/audit.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <memory>
#include <sstream>
#include <thread>

using namespace hsm_test;
using hsm::Errc;
namespace wire = hsm::wire;
using namespace std::chrono_literals;

namespace {

// The daemon's answer to one key-info request (seq 1) on a fresh connection: the response's status,
// the code of a fatal notice, or nullopt if no hello or no answer came.
std::optional<Errc> first_answer(RawConnection& raw, const wire::ClientCredentials& credentials) {
    auto nonce = raw.hello();
    if (!nonce) return std::nullopt;
    const Bytes request = wire::encode_request(credentials.key, *nonce, 1, credentials.client_id,
                                               static_cast<std::uint8_t>(wire::Command::key_info), wire::encode(hsm::KeyRef{"mk-load", 1}));
    if (!raw.send(request)) return std::nullopt;
    auto frame = raw.read_frame();
    if (!frame) return std::nullopt;
    auto response = wire::decode_response(credentials.key, *nonce, *frame);
    return response ? response->status : response.error().code;
}

// User + system CPU time of a process so far (/proc/PID/stat fields 14 and 15).
double cpu_seconds_of(pid_t pid) {
    std::ifstream in(fmt::format("/proc/{}/stat", pid));
    std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const auto after_name = stat.rfind(')');
    REQUIRE(after_name != std::string::npos);
    std::istringstream fields(stat.substr(after_name + 2));  // field 3 onwards
    std::string field;
    double ticks = 0;
    for (int number = 3; number <= 15 && fields >> field; ++number)
        if (number >= 14) ticks += std::stod(field);
    return ticks / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

// The audit log's "refusals" lines.
std::vector<std::string> refusal_lines(const std::string& audit) {
    std::vector<std::string> lines;
    std::istringstream in(audit);
    for (std::string line; std::getline(in, line);)
        if (line.find(R"("client":"unauthenticated","command":"refusals")") != std::string::npos) lines.push_back(line);
    return lines;
}

// The count a refusals line starts its result with ("2000 refused in …").
std::uint64_t refused_count(const std::string& line) {
    const auto at = line.find(R"("result":")");
    REQUIRE(at != std::string::npos);
    return std::stoull(line.substr(at + 10));
}

}  // namespace

TEST_CASE("one address holding unauthenticated connections cannot take every slot: another address still gets in") {
    Installation install;
    Daemon daemon(install.dir.path());  // the defaults: 256 connections, 128 per address
    std::vector<std::unique_ptr<RawConnection>> held;
    int greeted = 0;
    int busy = 0;
    for (int i = 0; i < 256; ++i) {
        held.push_back(std::make_unique<RawConnection>(daemon.port()));
        auto frame = held.back()->read_frame();
        if (frame && wire::decode_hello(*frame).ok()) ++greeted;
        else if (frame && frame->size() >= 3 && (*frame)[2] == static_cast<std::uint8_t>(Errc::server_busy)) ++busy;
    }
    // 128, or one less while the daemon has not yet seen the readiness probe's close.
    CHECK(greeted <= 128);
    CHECK(greeted >= 127);
    CHECK(busy == 256 - greeted);
    RawConnection other(daemon.port(), "127.0.0.2");
    CHECK(first_answer(other, install.credentials("issuance")) == Errc::ok);
    CHECK(daemon.alive());
}

TEST_CASE("an address not on --allow is closed without a hello; a listed address is served") {
    Installation install;
    Daemon daemon(install.dir.path(), {"--allow", "127.0.0.1,10.0.0.0/8"});
    RawConnection stranger(daemon.port(), "127.0.0.2");
    REQUIRE(stranger.connected());
    CHECK_FALSE(stranger.read_frame().has_value());  // closed: not even the hello
    RawConnection listed(daemon.port());
    CHECK(first_answer(listed, install.credentials("issuance")) == Errc::ok);
    daemon.stop();
    const auto lines = refusal_lines(install.audit_text());
    REQUIRE(lines.size() == 1);
    CHECK(lines[0].find("reasons: not_allowed=1; addresses: 1 (top: 127.0.0.2=1)") != std::string::npos);
    CHECK(install.audit_has("allow 127.0.0.1,10.0.0.0/8"));  // the serve-start line names the allow-list
}

TEST_CASE("by default every loopback address is allowed; a malformed --allow is a usage error") {
    Installation install;
    {
        Daemon daemon(install.dir.path());
        RawConnection other(daemon.port(), "127.0.0.2");
        CHECK(first_answer(other, install.credentials("issuance")) == Errc::ok);
    }
    const auto bad = run(fmt::format("{} serve --store {} --listen 127.0.0.1:0 --allow 127.0.0.1,10.0.0.1/8", COCONUT_HSMD_PATH,
                                     (install.dir / "store").string()));
    CHECK(bad.exit_code == 2);
    CHECK(bad.output.find("'10.0.0.1/8': host bits set after the prefix") != std::string::npos);
}

TEST_CASE("one client id cannot hold more than --connections-per-client authenticated connections") {
    Installation install;
    Daemon daemon(install.dir.path(), {"--connections-per-client", "2"});
    const auto issuance = install.credentials("issuance");
    auto first = std::make_unique<RawConnection>(daemon.port());
    RawConnection second(daemon.port());
    RawConnection third(daemon.port());
    CHECK(first_answer(*first, issuance) == Errc::ok);
    CHECK(first_answer(second, issuance) == Errc::ok);
    CHECK(first_answer(third, issuance) == Errc::server_busy);
    CHECK(third.closed_by_peer());
    // Another client is not affected (clearing may not use key-info: answered, connection kept).
    RawConnection clearing(daemon.port());
    CHECK(first_answer(clearing, install.credentials("clearing")) == Errc::not_permitted);
    // A slot given back is usable again (the daemon notices the close asynchronously: bounded retry).
    first.reset();
    bool served_again = false;
    for (int attempt = 0; attempt < 100 && !served_again; ++attempt) {
        RawConnection again(daemon.port());
        served_again = first_answer(again, issuance) == Errc::ok;
        if (!served_again) std::this_thread::sleep_for(50ms);
    }
    CHECK(served_again);
    // After authentication the refusal is an event of a known client: one audit line of its own.
    CHECK(install.audit_has(
        R"("client":"issuance","command":"connection-closed","key":"","versions":[],"result":"server_busy: client 'issuance' already holds 2 connections)"));
}

TEST_CASE("at the descriptor limit the daemon waits instead of spinning, and serves again once descriptors are free") {
    Installation install;
    Daemon daemon(install.dir.path(), {}, rlim_t{64});
    // More peers than the daemon has descriptors: the rest wait in the listen backlog.
    std::vector<std::unique_ptr<RawConnection>> flood;
    for (int i = 0; i < 100; ++i) flood.push_back(std::make_unique<RawConnection>(daemon.port()));
    std::this_thread::sleep_for(500ms);
    const double cpu_before = cpu_seconds_of(daemon.pid());
    std::this_thread::sleep_for(3s);
    const double cpu_used = cpu_seconds_of(daemon.pid()) - cpu_before;
    // An accept loop that retries at once burns a core here (about 1 s of CPU per second).
    CHECK_MESSAGE(cpu_used < 0.3, "CPU seconds used in 3 s at the descriptor limit: " << cpu_used);
    CHECK(daemon.alive());

    flood.clear();
    bool served = false;
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (!served && std::chrono::steady_clock::now() < deadline) {
        RawConnection client(daemon.port());
        served = first_answer(client, install.credentials("issuance")) == Errc::ok;
        if (!served) std::this_thread::sleep_for(100ms);
    }
    CHECK(served);
    daemon.stop();
    CHECK(install.audit_has("accept_out_of_descriptors="));
}

TEST_CASE("2,000 junk connections add one refusal line to the audit log, not a line each; the chain still verifies") {
    Installation install;
    Daemon daemon(install.dir.path());
    const std::string before = install.audit_text();
    wire::ClientCredentials forged = install.credentials("clearing");
    forged.key.data()[0] ^= 0x01;
    const auto unknown = install.credentials("issuance");

    constexpr int threads = 4;
    constexpr int per_thread = 500;
    std::atomic<int> noticed{0};
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t) {
        workers.emplace_back([&, t] {
            for (int i = 0; i < per_thread; ++i) {
                RawConnection junk(daemon.port());
                auto nonce = junk.hello();
                if (!nonce) continue;
                Bytes frame;
                switch ((t * per_thread + i) % 4) {
                    case 0:  // a client that is not registered
                        frame = wire::encode_request(unknown.key, *nonce, 1, "mallory", 0x01, hex("00"));
                        break;
                    case 1:  // a registered client id with the wrong key
                        frame = wire::encode_request(forged.key, *nonce, 1, forged.client_id, 0x01, hex("00"));
                        break;
                    case 2:  // five bytes that are not a request
                        frame = hex("00000005 0102030405");
                        break;
                    default:  // a frame announced larger than max_frame_bytes
                        frame = hex("00100000");
                        break;
                }
                if (junk.send(frame) && junk.read_frame().has_value() && junk.closed_by_peer()) ++noticed;
            }
        });
    }
    for (auto& worker : workers) worker.join();
    CHECK(noticed == threads * per_thread);
    daemon.stop();

    const std::string after = install.audit_text();
    REQUIRE(after.compare(0, before.size(), before) == 0);
    const std::string added = after.substr(before.size());
    // The refusals line and serve-stop (and a line per minute had the flood lasted minutes).
    CHECK(std::count(added.begin(), added.end(), '\n') <= 3);
    CHECK_MESSAGE(added.size() < 2 * hsm::max_audit_line_bytes, "the audit log grew by " << added.size() << " bytes");
    const auto lines = refusal_lines(added);
    REQUIRE_FALSE(lines.empty());
    std::uint64_t refused = 0;
    for (const auto& line : lines) refused += refused_count(line);
    CHECK(refused == threads * per_thread);
    if (lines.size() == 1) {
        CHECK(lines[0].find("bad_mac=500") != std::string::npos);
        CHECK(lines[0].find("unknown_client=500") != std::string::npos);
        CHECK(lines[0].find("frame_too_large=500") != std::string::npos);
        CHECK(lines[0].find("addresses: 1 (top: 127.0.0.1=2000)") != std::string::npos);
        CHECK(lines[0].find("claimed clients: clearing=500") != std::string::npos);
        CHECK(lines[0].find("mallory") == std::string::npos);  // ids that are not registered are never echoed
    }
    const auto verified = run(fmt::format("{} audit verify --store {}", COCONUT_HSMD_PATH, (install.dir / "store").string()));
    CHECK_MESSAGE(verified.exit_code == 0, verified.output);
}

TEST_CASE("keep-alives (empty TAC batches) are one audit line per interval with a count, not a line each") {
    Installation install;
    Daemon daemon(install.dir.path());
    const std::string before = install.audit_text();
    auto client = hsm::Client::connect(daemon.endpoint(), install.credentials("clearing"));
    REQUIRE(client.ok());
    for (int i = 0; i < 50; ++i) {
        auto answer = (*client)->verify_purchase_tacs("mk-tac", {});
        REQUIRE(answer.ok());
        CHECK(answer->empty());
    }
    client.value().reset();
    daemon.stop();
    const std::string after = install.audit_text();
    REQUIRE(after.compare(0, before.size(), before) == 0);
    const std::string added = after.substr(before.size());
    CHECK(added.find("verify-purchase-tacs") == std::string::npos);  // none of the 50 has a line of its own
    CHECK_MESSAGE(added.find("\"keep-alives\"") != std::string::npos, added);
    CHECK_MESSAGE(added.find("clearing=50") != std::string::npos, added);
    CHECK(std::count(added.begin(), added.end(), '\n') <= 4);  // keep-alives, the connection's close, serve-stop
    const auto verified = run(fmt::format("{} audit verify --store {}", COCONUT_HSMD_PATH, (install.dir / "store").string()));
    CHECK_MESSAGE(verified.exit_code == 0, verified.output);
}
