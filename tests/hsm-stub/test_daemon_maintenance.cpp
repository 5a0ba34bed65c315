// Integration: maintenance-mac through the real coconut-hsmd — answered to a client with the permission
// `maintenance`, refused (not_permitted) to one without, bad lengths and wrong usage answered with the
// connection kept, every request audited.
#include "daemon_process.hpp"

#include <coconut/hsm/client.hpp>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

using namespace hsm_test;
using hsm::Errc;
namespace wire = hsm::wire;

namespace {

const hsm::CardIdentity counter_card = card("4600000000000001", "46000000001234567893");

hsm::MaintenanceMacRequest permanent_block() {
    hsm::MaintenanceMacRequest r;
    r.key = {"mk-maintenance", 0};
    r.card = counter_card;
    r.challenge = {0x01, 0x02, 0x03, 0x04};
    r.header = crypto::application_block_header(true);
    return r;
}

std::unique_ptr<hsm::Client> connect_as(const Daemon& daemon, const Installation& install, const std::string& id) {
    auto client = hsm::Client::connect(daemon.endpoint(), install.credentials(id));
    REQUIRE_MESSAGE(client.ok(), client.error().message);
    return std::move(client.value());
}

}  // namespace

TEST_CASE("maintenance-mac through the daemon: the MAC for a permitted client, not_permitted for the others") {
    Installation install;
    {
        auto store = hsm::KeyStore::open(install.dir / "store");
        REQUIRE(store.ok());
        auto counter = store->add_client("counter", hsm::permit_maintenance);
        REQUIRE(counter.ok());
        REQUIRE(store->save().ok());
        REQUIRE(wire::write_client_credentials(install.dir / "counter.key", {"counter", counter.value()}).ok());
    }
    Daemon daemon(install.dir.path());
    auto counter = connect_as(daemon, install, "counter");
    auto answer = counter->maintenance_mac(permanent_block());
    REQUIRE_MESSAGE(answer.ok(), answer.error().message);
    const crypto::Key16 damk = independent_card_key(key16(maintenance_master_hex), counter_card);
    CHECK(answer->mac == crypto::maintenance_mac(damk, crypto::application_block_header(true), {0x01, 0x02, 0x03, 0x04}));
    CHECK(answer->key_version == 1);

    // Wrong usage and a foreign header: answered, the connection stays open.
    auto wrong = permanent_block();
    wrong.key = {"mk-tac", 0};
    auto refused = counter->maintenance_mac(wrong);
    REQUIRE_FALSE(refused.ok());
    CHECK(refused.error().code == Errc::wrong_key_usage);
    auto foreign = permanent_block();
    foreign.header = {0x84, 0x1E, 0x00, 0x07, 0x04};
    auto bad = counter->maintenance_mac(foreign);
    REQUIRE_FALSE(bad.ok());
    CHECK(bad.error().code == Errc::bad_request);
    // Bad lengths on the wire: one byte short, one too many.
    Bytes payload = wire::encode(permanent_block());
    payload.pop_back();
    auto short_answer = counter->call(wire::Command::maintenance_mac, payload);
    REQUIRE_FALSE(short_answer.ok());
    CHECK(short_answer.error().code == Errc::bad_request);
    payload = wire::encode(permanent_block());
    payload.push_back(0x00);
    auto long_answer = counter->call(wire::Command::maintenance_mac, payload);
    REQUIRE_FALSE(long_answer.ok());
    CHECK(long_answer.error().code == Errc::bad_request);
    CHECK(counter->maintenance_mac(permanent_block()).ok());

    // The clearing's client (permission tac only) is refused with the protocol's not_permitted.
    auto clearing = connect_as(daemon, install, "clearing");
    auto denied = clearing->maintenance_mac(permanent_block());
    REQUIRE_FALSE(denied.ok());
    CHECK(denied.error().code == Errc::not_permitted);
    CHECK(denied.error().message.find("maintenance-mac") != std::string::npos);
    // … and the counter may not verify TACs.
    CHECK(counter->verify_purchase_tacs("mk-tac", {}).error().code == Errc::not_permitted);

    CHECK(install.audit_has(R"("client":"counter","command":"maintenance-mac","key":"mk-maintenance","versions":[1],)"
                            R"("result":"MAC for APPLICATION BLOCK (permanent) of ASN 46000000001234567893 issuer 4600000000000001")"));
    CHECK(install.audit_has(R"("client":"clearing","command":"maintenance-mac")"));
}

TEST_CASE("coconut-hsm maintenance-mac: the MAC as JSON; a foreign header and a client without the permission exit 1") {
    Installation install;
    Daemon daemon(install.dir.path());
    const auto cli_as = [&](const std::string& id) {
        return fmt::format("{} --connect 127.0.0.1:{} --client-key {} --timeout-ms 10000 --json", COCONUT_HSM_CLI_PATH, daemon.port(),
                           (install.dir / (id + ".key")).string());
    };
    const std::string args = " maintenance-mac --issuer 4600000000000001 --asn 46000000001234567893 --challenge 01020304 --header ";
    auto answered = run(cli_as("issuance") + args + "841E000104");
    REQUIRE_MESSAGE(answered.exit_code == 0, answered.output);
    const crypto::Key16 damk = independent_card_key(key16(maintenance_master_hex), counter_card);
    CHECK(nlohmann::json::parse(answered.output)["mac"] ==
          coconut::to_hex(crypto::maintenance_mac(damk, crypto::application_block_header(true), {0x01, 0x02, 0x03, 0x04})));
    auto foreign = run(cli_as("issuance") + args + "8054010000");
    CHECK(foreign.exit_code == 1);
    CHECK(foreign.output.find("bad_request") != std::string::npos);
    auto denied = run(cli_as("clearing") + args + "841E000104");
    CHECK(denied.exit_code == 1);
    CHECK(denied.output.find("not_permitted") != std::string::npos);
    auto short_header = run(cli_as("issuance") + args + "841E00");
    CHECK(short_header.exit_code != 0);
}
