// Integration: the real coconut-hsmd on loopback — correct answers over the wire, authentication,
// replay, hostile and broken peers, limits, reload, the CLIs.
#include "daemon_process.hpp"

#include <coconut/core/log.hpp>
#include <coconut/hsm/audit.hpp>
#include <coconut/hsm/client.hpp>

#include <boost/asio/io_context.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <sodium.h>

#include <fcntl.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <thread>

using namespace hsm_test;
using hsm::Errc;
using hsm::Verdict;
namespace wire = hsm::wire;

namespace {

const hsm::CardIdentity alice = card("4600000000000001", "46000000001234567890");

std::unique_ptr<hsm::Client> connect(const Daemon& daemon, wire::ClientCredentials credentials) {
    auto client = hsm::Client::connect(daemon.endpoint(), std::move(credentials));
    REQUIRE_MESSAGE(client.ok(), client.error().message);
    return std::move(client.value());
}

// A purchase batch of `count` items, every `tamper_every`-th one altered after signing.
std::vector<hsm::PurchaseTac> batch_of(std::size_t count, std::size_t tamper_every, std::uint32_t salt) {
    std::vector<hsm::PurchaseTac> batch;
    for (std::size_t i = 0; i < count; ++i) {
        batch.push_back(signed_purchase(key16(tac_master_v2_hex), 2, alice, salt * 1000 + static_cast<std::uint32_t>(i), salt));
        if (tamper_every != 0 && i % tamper_every == 0) batch.back().tac[3] ^= 0x5A;
    }
    return batch;
}

Bytes key_info_frame(const wire::ClientCredentials& credentials, const wire::Nonce& nonce, std::uint64_t seq) {
    return wire::encode_request(credentials.key, nonce, seq, credentials.client_id, static_cast<std::uint8_t>(wire::Command::key_info),
                                wire::encode(hsm::KeyRef{"mk-load", 1}));
}

// Expects a fatal notice with `code`, then the connection closed.
void expect_closed_with(RawConnection& raw, Errc code) {
    auto frame = raw.read_frame();
    REQUIRE(frame.has_value());
    REQUIRE(frame->size() >= 3);
    CHECK((*frame)[1] == static_cast<std::uint8_t>(wire::FrameKind::fatal));
    CHECK_MESSAGE((*frame)[2] == static_cast<std::uint8_t>(code), hsm::errc_name(static_cast<Errc>((*frame)[2])));
    CHECK(raw.closed_by_peer());
}

}  // namespace

TEST_CASE("through the daemon: TAC batches, load MAC2, derived keys and KCVs are answered correctly") {
    Installation install;
    Daemon daemon(install.dir.path());
    auto client = connect(daemon, install.credentials("issuance"));

    const auto batch = batch_of(40, 4, 1);
    auto verdicts = client->verify_purchase_tacs("mk-tac", batch);
    REQUIRE(verdicts.ok());
    for (std::size_t i = 0; i < batch.size(); ++i) CHECK(verdicts.value()[i] == (i % 4 == 0 ? Verdict::invalid : Verdict::valid));

    hsm::LoadRequest load;
    load.key = {"mk-load", 1};
    load.card = alice;
    load.amount_fen = 5000;
    load.terminal_id = hsm::parse_terminal_id("000001000050").value();
    load.online_atc = 3;
    load.card_random = {1, 2, 3, 4};
    load.when = when("20261126", "120000");
    const Bytes session = tdes_block(independent_card_key(key16(load_master_hex), alice), hex("01020304 0003 8000"));
    load.mac1 = independent_des_mac(session, hex("00000000 00001388 02 000001000050"));
    auto answer = client->load_mac2(load);
    REQUIRE(answer.ok());
    CHECK(answer->mac1 == Verdict::valid);
    CHECK(answer->mac2 == independent_des_mac(session, hex("00001388 02 000001000050 20261126 120000")));

    const std::vector<hsm::KeyRef> masters = {{"mk-load", 1}, {"mk-tac", 2}};
    auto keys = client->derive_card_keys({alice, {"kek-issuance", 1}, masters});
    REQUIRE(keys.ok());
    REQUIRE(keys->keys.size() == 2);
    CHECK(keys->keys[1].kcv == crypto::kcv(independent_card_key(key16(tac_master_v2_hex), alice)));

    auto info = client->key_info({"mk-load", 1});
    REQUIRE(info.ok());
    CHECK(coconut::to_hex(info->kcv) == "491510");

    // A request-level error is answered and the connection stays usable.
    auto missing = client->key_info({"mk-none", 1});
    REQUIRE_FALSE(missing.ok());
    CHECK(missing.error().code == Errc::key_not_found);
    CHECK(client->key_info({"mk-tac", 2}).ok());
    CHECK(install.audit_has(
        R"("client":"issuance","command":"load-mac2","key":"mk-load","versions":[1],"result":"mac1 valid, mac2 issued")"));
}

TEST_CASE("a client without the permission gets not_permitted and keeps its connection") {
    Installation install;
    Daemon daemon(install.dir.path());
    auto clearing = connect(daemon, install.credentials("clearing"));
    auto denied = clearing->key_info({"mk-load", 1});
    REQUIRE_FALSE(denied.ok());
    CHECK(denied.error().code == Errc::not_permitted);
    CHECK(clearing->verify_purchase_tacs("mk-tac", batch_of(3, 0, 2)).ok());
}

TEST_CASE("a wrong client key is detected: that connection is closed and audited, others carry on") {
    Installation install;
    Daemon daemon(install.dir.path(), {"--refusal-audit-interval-ms", "200"});
    auto good = connect(daemon, install.credentials("clearing"));
    CHECK(good->verify_purchase_tacs("mk-tac", batch_of(2, 0, 3)).ok());

    wire::ClientCredentials forged = install.credentials("clearing");
    forged.key.data()[0] ^= 0x01;
    auto impostor = connect(daemon, forged);
    auto refused = impostor->verify_purchase_tacs("mk-tac", batch_of(2, 0, 3));
    REQUIRE_FALSE(refused.ok());
    CHECK(refused.error().code == Errc::bad_mac);
    // Before authentication a closure is counted, and the counts written as one line per interval
    // (PROTOCOL.md, "Audit log"), naming the registered client the peer claimed to be.
    bool audited = false;
    for (int i = 0; i < 250 && !audited; ++i) {
        audited = install.audit_has(R"("client":"unauthenticated","command":"refusals")") && install.audit_has("reasons: bad_mac=1;") &&
                  install.audit_has("claimed clients: clearing=1");
        if (!audited) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    CHECK(audited);

    auto still = good->verify_purchase_tacs("mk-tac", batch_of(5, 2, 4));
    REQUIRE(still.ok());
    CHECK(still.value()[0] == Verdict::invalid);
    CHECK(still.value()[1] == Verdict::valid);
}

TEST_CASE("a replayed or out-of-order request closes the connection; a replay on another connection fails its MAC") {
    Installation install;
    Daemon daemon(install.dir.path());
    const auto credentials = install.credentials("issuance");
    RawConnection raw(daemon.port());
    REQUIRE(raw.connected());
    auto nonce = raw.hello();
    REQUIRE(nonce.has_value());
    const Bytes first = key_info_frame(credentials, *nonce, 5);
    REQUIRE(raw.send(first));
    auto response = raw.read_frame();
    REQUIRE(response.has_value());
    auto decoded = wire::decode_response(credentials.key, *nonce, *response);
    REQUIRE(decoded.ok());
    CHECK(decoded->status == Errc::ok);

    SUBCASE("the same frame again") {
        REQUIRE(raw.send(first));
        expect_closed_with(raw, Errc::replayed_sequence);
    }
    SUBCASE("a lower sequence number, correctly signed") {
        REQUIRE(raw.send(key_info_frame(credentials, *nonce, 4)));
        expect_closed_with(raw, Errc::replayed_sequence);
    }
    SUBCASE("the captured frame on a new connection") {
        RawConnection other(daemon.port());
        REQUIRE(other.hello().has_value());
        REQUIRE(other.send(first));
        expect_closed_with(other, Errc::bad_mac);
    }
    CHECK(daemon.alive());
    daemon.stop();  // writes the refusal count of the unauthenticated connection (the third subcase)
    CHECK((install.audit_has(R"("client":"issuance","command":"connection-closed")") || install.audit_has("reasons: bad_mac=1;")));
}

TEST_CASE("an oversize frame, an unknown command and an unknown client each close only that connection") {
    Installation install;
    Daemon daemon(install.dir.path());
    const auto credentials = install.credentials("issuance");
    auto bystander = connect(daemon, install.credentials("clearing"));
    RawConnection raw(daemon.port());
    auto nonce = raw.hello();
    REQUIRE(nonce.has_value());
    SUBCASE("oversize") {
        REQUIRE(raw.send(hex("00100000")));  // 1 MiB announced
        expect_closed_with(raw, Errc::frame_too_large);
    }
    SUBCASE("unknown command, correctly signed") {
        REQUIRE(raw.send(wire::encode_request(credentials.key, *nonce, 1, credentials.client_id, 0x7E, hex("00"))));
        expect_closed_with(raw, Errc::unknown_command);
    }
    SUBCASE("unknown client") {
        REQUIRE(raw.send(wire::encode_request(credentials.key, *nonce, 1, "mallory", 0x01, hex("00"))));
        expect_closed_with(raw, Errc::unknown_client);
    }
    SUBCASE("client id switched mid-connection") {
        REQUIRE(raw.send(key_info_frame(credentials, *nonce, 1)));
        REQUIRE(raw.read_frame().has_value());
        const auto clearing = install.credentials("clearing");
        REQUIRE(raw.send(wire::encode_request(clearing.key, *nonce, 2, "clearing", 0x20, hex("00"))));
        expect_closed_with(raw, Errc::unknown_client);
    }
    CHECK(bystander->verify_purchase_tacs("mk-tac", batch_of(3, 0, 5)).ok());
}

TEST_CASE("the daemon survives garbage and a client that disconnects mid-frame") {
    Installation install;
    Daemon daemon(install.dir.path(), {"--refusal-audit-interval-ms", "200"});
    {
        RawConnection garbage(daemon.port());
        REQUIRE(garbage.hello().has_value());
        Bytes noise(3000);
        randombytes_buf(noise.data(), noise.size());
        noise[0] = 0x00;  // a length the daemon will try to read, then reject
        noise[1] = 0x00;
        noise[2] = 0x01;
        (void)garbage.send(noise);
        auto notice = garbage.read_frame();
        REQUIRE(notice.has_value());
        CHECK((*notice)[1] == static_cast<std::uint8_t>(wire::FrameKind::fatal));
    }
    {
        RawConnection quitter(daemon.port());
        REQUIRE(quitter.hello().has_value());
        REQUIRE(quitter.send(hex("000003E8 0102030405060708090A")));  // 1000 announced, 10 sent
        quitter.close();
    }
    {
        RawConnection silent(daemon.port());  // connects and leaves before the hello
        silent.close();
    }
    auto client = connect(daemon, install.credentials("clearing"));
    CHECK(client->verify_purchase_tacs("mk-tac", batch_of(10, 3, 6)).ok());
    CHECK(daemon.alive());
    // Give the daemon a moment to notice the quitter's EOF, then look for its count in a refusals line
    // (neither peer authenticated: PROTOCOL.md, "Audit log"; bounded).
    bool audited = false;
    for (int i = 0; i < 250 && !audited; ++i) {
        audited = install.audit_has(R"("command":"refusals")") && install.audit_has(" closed=1");
        if (!audited) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    CHECK(audited);
}

TEST_CASE("100 concurrent clients hammering TAC verification all get correct answers") {
    Installation install;
    Daemon daemon(install.dir.path());
    constexpr int clients = 100;
    constexpr int batches_per_client = 5;
    constexpr std::size_t items_per_batch = 40;
    const auto credentials = install.credentials("clearing");
    std::atomic<int> wrong{0};
    std::atomic<int> failed{0};
    std::atomic<int> verified{0};
    std::vector<std::thread> threads;
    for (int c = 0; c < clients; ++c) {
        threads.emplace_back([&, c] {
            auto client = hsm::Client::connect(daemon.endpoint(), credentials);
            if (!client) {
                ++failed;
                return;
            }
            for (int b = 0; b < batches_per_client; ++b) {
                const std::size_t tamper_every = static_cast<std::size_t>(2 + (c + b) % 5);
                const auto batch = batch_of(items_per_batch, tamper_every, static_cast<std::uint32_t>(c * 10 + b));
                auto verdicts = client.value()->verify_purchase_tacs("mk-tac", batch);
                if (!verdicts) {
                    ++failed;
                    return;
                }
                for (std::size_t i = 0; i < batch.size(); ++i) {
                    const Verdict expected = i % tamper_every == 0 ? Verdict::invalid : Verdict::valid;
                    if (verdicts.value()[i] != expected) ++wrong;
                    ++verified;
                }
            }
        });
    }
    for (auto& t : threads) t.join();
    CHECK(failed == 0);
    CHECK(wrong == 0);
    CHECK(verified == clients * batches_per_client * static_cast<int>(items_per_batch));
    CHECK(daemon.alive());
}

TEST_CASE("the async client pipelines requests and the batcher groups single TACs into batches") {
    Installation install;
    Daemon daemon(install.dir.path());
    boost::asio::io_context io;
    auto client = hsm::AsyncClient::create(io.get_executor(), install.credentials("clearing"));
    std::optional<coconut::Status<hsm::Failure>> connected;
    client->async_connect(daemon.endpoint(), [&](coconut::Status<hsm::Failure> s) { connected.emplace(std::move(s)); });
    auto batcher = hsm::TacBatcher::create(client, "mk-tac", 16, std::chrono::milliseconds(5));
    const auto transactions = batch_of(50, 5, 7);  // 3 full batches of 16 and one partial of 2 sent on the timer
    std::vector<std::optional<hsm::Outcome<Verdict>>> results(transactions.size());
    for (std::size_t i = 0; i < transactions.size(); ++i)
        batcher->submit(transactions[i], [&results, i](hsm::Outcome<Verdict> v) { results[i].emplace(std::move(v)); });
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    auto all_done = [&] { return std::all_of(results.begin(), results.end(), [](const auto& r) { return r.has_value(); }); };
    while (!all_done() && std::chrono::steady_clock::now() < deadline) io.run_for(std::chrono::milliseconds(10));
    REQUIRE(connected.has_value());
    CHECK(connected->ok());
    REQUIRE(all_done());
    for (std::size_t i = 0; i < transactions.size(); ++i) {
        REQUIRE(results[i]->ok());
        CHECK(results[i]->value() == (i % 5 == 0 ? Verdict::invalid : Verdict::valid));
    }
    // Four batches reached the daemon: 16 + 16 + 16 + 2.
    const std::string audit = install.audit_text();
    std::size_t batches = 0;
    for (std::size_t at = audit.find("verify-purchase-tacs"); at != std::string::npos; at = audit.find("verify-purchase-tacs", at + 1))
        ++batches;
    CHECK(batches == 4);
    client->close();
    io.run_for(std::chrono::milliseconds(50));
}

TEST_CASE("a TAC batch is logged (debug) with its own id and the request ids it carries") {
    Installation install;
    Daemon daemon(install.dir.path());
    boost::asio::io_context io;
    auto client = hsm::AsyncClient::create(io.get_executor(), install.credentials("clearing"));
    client->async_connect(daemon.endpoint(), [](coconut::Status<hsm::Failure>) {});
    auto batcher = hsm::TacBatcher::create(client, "mk-tac", 3, std::chrono::milliseconds(5));
    // The log goes to stderr: into a file for the test's duration.
    const std::string log_path = (install.dir / "batch.log").string();
    const int saved_stderr = ::dup(STDERR_FILENO);
    const int log_fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    REQUIRE((saved_stderr >= 0 && log_fd >= 0));
    ::dup2(log_fd, STDERR_FILENO);
    coconut::log::Settings debug;
    debug.level = coconut::log::Level::debug;
    coconut::log::configure(debug);
    const auto transactions = batch_of(3, 100, 9);
    int answered = 0;
    for (std::size_t i = 0; i < transactions.size(); ++i) {
        const coconut::log::RequestScope request(fmt::format("t-00000000000{}", i + 1));
        batcher->submit(transactions[i], [&answered](hsm::Outcome<Verdict>) { ++answered; });
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (answered < 3 && std::chrono::steady_clock::now() < deadline) io.run_for(std::chrono::milliseconds(10));
    coconut::log::configure({});
    ::dup2(saved_stderr, STDERR_FILENO);
    ::close(saved_stderr);
    ::close(log_fd);
    CHECK(answered == 3);
    std::stringstream text;
    text << std::ifstream(log_path).rdbuf();
    INFO(text.str());
    const std::string line = text.str();
    const auto at = line.find(" debug hsm-link b-");
    REQUIRE(at != std::string::npos);
    CHECK(line.find("TAC batch of 3 requests=t-000000000001,t-000000000002,t-000000000003", at) != std::string::npos);
    client->close();
    io.run_for(std::chrono::milliseconds(50));
}

TEST_CASE("connections beyond the limit are refused with server_busy") {
    Installation install;
    Daemon daemon(install.dir.path(), {"--connections-max", "2"});
    // The readiness probe has gone; wait until the daemon has noticed (bounded).
    auto first = connect(daemon, install.credentials("clearing"));
    auto second = connect(daemon, install.credentials("clearing"));
    auto third = hsm::Client::connect(daemon.endpoint(), install.credentials("clearing"));
    REQUIRE_FALSE(third.ok());
    CHECK(third.error().code == Errc::server_busy);
    CHECK(first->verify_purchase_tacs("mk-tac", batch_of(1, 0, 8)).ok());
}

TEST_CASE("an idle connection is closed after the idle timeout, with an audit line") {
    Installation install;
    Daemon daemon(install.dir.path(), {"--idle-timeout-ms", "300", "--refusal-audit-interval-ms", "200"});
    RawConnection idle(daemon.port());
    REQUIRE(idle.hello().has_value());
    const auto start = std::chrono::steady_clock::now();
    CHECK(idle.closed_by_peer());
    CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(5));
    // It never authenticated: counted in a refusals line (PROTOCOL.md, "Audit log"). An authenticated
    // connection that idles out gets a line of its own.
    RawConnection authenticated(daemon.port());
    const auto nonce = authenticated.hello();
    REQUIRE(nonce.has_value());
    REQUIRE(authenticated.send(key_info_frame(install.credentials("issuance"), *nonce, 1)));
    REQUIRE(authenticated.read_frame().has_value());
    CHECK(authenticated.closed_by_peer());
    bool audited = false;
    for (int i = 0; i < 250 && !audited; ++i) {
        audited =
            install.audit_has(R"("command":"refusals")") && install.audit_has("reasons: timeout=1;") &&
            install.audit_has(
                R"("client":"issuance","command":"connection-closed","key":"","versions":[],"result":"timeout: no progress while waiting for a request")");
        if (!audited) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    CHECK(audited);
}

TEST_CASE("SIGHUP makes the daemon serve a key added by a ceremony") {
    Installation install;
    Daemon daemon(install.dir.path());
    auto client = connect(daemon, install.credentials("issuance"));
    CHECK(client->key_info({"mk-load", 2}).error().code == Errc::key_not_found);
    {
        hsm::StorePaths paths{install.dir / "store"};
        auto lock = hsm::StoreLock::acquire(paths);
        REQUIRE(lock.ok());
        auto store = hsm::KeyStore::open(paths.dir);
        REQUIRE(store.ok());
        REQUIRE(store->add_key("mk-load", 2, hsm::KeyType::tdes2, hsm::KeyUsage::load, key16(purchase_master_hex)).ok());
        REQUIRE(store->save().ok());
    }
    daemon.signal(SIGHUP);
    bool served = false;
    for (int i = 0; i < 250 && !served; ++i) {
        served = client->key_info({"mk-load", 2}).ok();
        if (!served) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    CHECK(served);
}

TEST_CASE("the daemon refuses to start on a tampered store, naming the problem") {
    Installation install;
    flip_byte(install.dir / "store" / "keys.sealed", 3);
    const auto result = run(fmt::format("{} serve --store {} --listen 127.0.0.1:0", COCONUT_HSMD_PATH, (install.dir / "store").string()));
    CHECK(result.exit_code == 1);
    CHECK(result.output.find("store_tampered") != std::string::npos);
}

TEST_CASE("coconut-hsm prints JSON with --json; verdicts set the exit status; coconut-hsmd audit verify checks the chain") {
    Installation install;
    Daemon daemon(install.dir.path());
    const std::string cli = fmt::format("{} --connect 127.0.0.1:{} --client-key {} --timeout-ms 10000 --json", COCONUT_HSM_CLI_PATH,
                                        daemon.port(), (install.dir / "issuance.key").string());

    auto kcv = run(cli + " kcv --key mk-load:1");
    REQUIRE(kcv.exit_code == 0);
    CHECK(nlohmann::json::parse(kcv.output)["kcv"] == "491510");

    auto derived = run(cli + " derive-card-keys --asn 46000000001234567890 --issuer 4600000000000001");
    REQUIRE_MESSAGE(derived.exit_code == 0, derived.output);
    const auto json = nlohmann::json::parse(derived.output);
    REQUIRE(json["keys"].size() == 6);  // the default masters: DPK, DLK, DTK, IAK, DAMK and the SSSE's own IAK
    CHECK(json["keys"][1]["key"] == "DLK");
    CHECK(json["keys"][5]["key"] == "SSSE_IAK");
    CHECK(json["keys"][5]["kcv"] == coconut::to_hex(crypto::kcv(independent_card_key(key16(ssse_auth_master_hex), alice))));
    CHECK(json["keys"][1]["kcv"] == coconut::to_hex(crypto::kcv(independent_card_key(key16(load_master_hex), alice))));
    CHECK(derived.output.find(coconut::to_hex(independent_card_key(key16(load_master_hex), alice).view())) == std::string::npos);

    const auto t = signed_purchase(key16(tac_master_v2_hex), 2, alice, 250, 17);
    const std::string verify = cli + fmt::format(
                                         " verify-tac --issuer 4600000000000001 --asn 46000000001234567890 --amount-fen 250"
                                         " --type 06 --terminal 001122334455 --serial 17 --date 20261126 --time 101500 --tac ");
    auto valid = run(verify + coconut::to_hex(t.tac));
    CHECK(valid.exit_code == 0);
    CHECK(nlohmann::json::parse(valid.output)["verdict"] == "valid");
    auto invalid = run(verify + "00000000");
    CHECK(invalid.exit_code == 3);
    CHECK(nlohmann::json::parse(invalid.output)["verdict"] == "invalid");

    auto bad_input = run(cli + " verify-tac --issuer 46 --asn 1 --amount-fen 1 --terminal 1 --serial 1 --date 1 --time 1 --tac 1");
    CHECK(bad_input.exit_code == 1);
    CHECK(nlohmann::json::parse(bad_input.output)["error"] == "bad_request");

    auto load = run(cli +
                    " load-mac2 --issuer 4600000000000001 --asn 46000000001234567890 --old-balance 0 --amount-fen 100"
                    " --type 02 --terminal 001122334455 --atc 0 --random 11223344 --mac1 00000000 --date 20261126 --time 120000");
    CHECK(load.exit_code == 3);
    CHECK(nlohmann::json::parse(load.output)["mac1"] == "invalid");

    daemon.stop();
    const std::string audit_verify = fmt::format("{} audit verify --store {}", COCONUT_HSMD_PATH, (install.dir / "store").string());
    auto ok = run(audit_verify);
    CHECK_MESSAGE(ok.exit_code == 0, ok.output);
    std::string audit = install.audit_text();
    const auto at = audit.find("valid=1 invalid=0");
    REQUIRE(at != std::string::npos);
    audit.replace(at, 17, "valid=0 invalid=1");
    write_text(install.dir / "store" / "audit.log", audit);
    auto broken = run(audit_verify);
    CHECK(broken.exit_code == 1);
    CHECK(broken.output.find("hash mismatch") != std::string::npos);
}

TEST_CASE("coconut-hsmd key ceremony: components with their KCVs, the result's KCV, list without key bytes") {
    TempDir dir;
    const std::string hsmd = COCONUT_HSMD_PATH;
    const std::string store = (dir / "s").string();
    REQUIRE(run(hsmd + " init --store " + store).exit_code == 0);
    auto imported =
        run("printf '0123456789ABCDEF0123456789ABCDEF\\nFEDCBA9876543210FEDCBA9876543210\\n"
            "0123456789ABCDEF0123456789ABCDEF\\n' | " +
            hsmd + " key import --store " + store + " --label mk-tac --version 1 --usage tac --components 3");
    REQUIRE_MESSAGE(imported.exit_code == 0, imported.output);
    // XOR of the three is FEDCBA9876543210FEDCBA9876543210.
    const auto kcv_of = [](std::string_view k) { return coconut::to_hex(crypto::kcv(key16(k))); };
    CHECK(imported.output.find("component 1 KCV " + kcv_of("0123456789ABCDEF0123456789ABCDEF")) != std::string::npos);
    CHECK(imported.output.find("component 2 KCV " + kcv_of("FEDCBA9876543210FEDCBA9876543210")) != std::string::npos);
    CHECK(imported.output.find("imported mk-tac:1 (tdes2, tac) KCV " + kcv_of("FEDCBA9876543210FEDCBA9876543210")) != std::string::npos);
    auto short_component = run("printf '0123\\n' | " + hsmd + " key import --store " + store + " --label mk-x --version 1 --usage tac");
    CHECK(short_component.exit_code == 1);
    CHECK(short_component.output.find("component 1 must be 32 hex digits") != std::string::npos);
    REQUIRE(run(hsmd + " key generate --store " + store + " --label kek --version 1 --usage transport").exit_code == 0);
    REQUIRE(run(hsmd + " key retire --store " + store + " --label mk-tac --version 1").exit_code == 0);
    auto list = run(hsmd + " key list --json --store " + store);
    REQUIRE(list.exit_code == 0);
    const auto keys = nlohmann::json::parse(list.output);
    REQUIRE(keys.size() == 2);
    CHECK(keys[1]["label"] == "mk-tac");
    CHECK(keys[1]["status"] == "retired");
    CHECK(list.output.find("FEDCBA9876543210") == std::string::npos);
    CHECK(run(hsmd + " audit verify --store " + store).exit_code == 0);
}

TEST_CASE("the client gives up on a silent server within its timeouts") {
    // A listener that completes TCP handshakes (kernel backlog) but never speaks.
    const int listener = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE(::listen(listener, 8) == 0);
    socklen_t length = sizeof addr;
    REQUIRE(::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &length) == 0);
    const wire::Endpoint endpoint{"127.0.0.1", ntohs(addr.sin_port)};
    hsm::ClientOptions options;
    options.connect_timeout = std::chrono::milliseconds(300);
    options.request_timeout = std::chrono::milliseconds(300);
    const wire::ClientCredentials credentials{"clearing", hsm::ClientKey(Bytes(32, 1))};

    SUBCASE("no hello") {
        const auto start = std::chrono::steady_clock::now();
        auto client = hsm::Client::connect(endpoint, credentials, options);
        REQUIRE_FALSE(client.ok());
        CHECK(client.error().code == Errc::timeout);
        CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(5));
    }
    SUBCASE("a hello, then no response") {
        std::thread server([listener] {
            const int peer = ::accept(listener, nullptr, nullptr);
            const Bytes hello = wire::encode_hello({});
            (void)::send(peer, hello.data(), hello.size(), MSG_NOSIGNAL);
            std::this_thread::sleep_for(std::chrono::seconds(2));
            ::close(peer);
        });
        auto client = hsm::Client::connect(endpoint, credentials, options);
        REQUIRE(client.ok());
        const auto start = std::chrono::steady_clock::now();
        auto answer = client.value()->key_info({"mk-load", 1});
        REQUIRE_FALSE(answer.ok());
        CHECK(answer.error().code == Errc::timeout);
        CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(2));
        server.join();
    }
    ::close(listener);
}
