// ClearingClient over a list of endpoints against the real clearing engine and ISO 8583 server (two
// listeners on one daemon and ledger: two nodes that can serve), a port where nothing listens (a node
// down) and scripted standbys (FakeHost) that answer 91 or relay to the clearing until they "step down":
// the client signs on at the first endpoint that accepts, moves on when the link is lost, silent or
// answers 91, continues an upload there with every record acknowledged and booked once (shadow = card),
// gives up within its bound naming every endpoint, and starts where it was served last.
#include "link_rig.hpp"

#include <coconut/sdk/clearing_client.hpp>

#include <fmt/format.h>

#include <chrono>

using namespace clearing_test;
using namespace link_test;
namespace sdk = coconut::sdk;

namespace {

// A loopback port where nothing listens (bound, then closed).
std::uint16_t dead_port() {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
    socklen_t size = sizeof address;
    REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &size) == 0);
    ::close(fd);
    return ntohs(address.sin_port);
}

sdk::ClearingEndpoint local(std::uint16_t port) { return {"127.0.0.1", port}; }

// The rig's terminal options with answers due within 300 ms.
sdk::ClearingOptions options_of(LinkRig& rig) {
    sdk::ClearingOptions options;
    options.terminal_id = "BUS00001";
    options.batch_log = rig.queue.get();
    options.response_timeout = std::chrono::milliseconds(300);
    options.connect_timeout = std::chrono::milliseconds(1000);
    return options;
}

// The rig's client replaced by one of `endpoints`, signed on.
void connect_list(LinkRig& rig, std::vector<sdk::ClearingEndpoint> endpoints, sdk::ClearingOptions options) {
    rig.client.reset();
    auto connected = sdk::ClearingClient::connect(std::move(endpoints), std::move(options));
    REQUIRE_MESSAGE(connected.ok(), (connected.ok() ? "" : connected.error().message));
    rig.client = std::move(connected.value());
    auto signed_on = rig.client->sign_on();
    REQUIRE_MESSAGE(signed_on.ok(), (signed_on.ok() ? "" : signed_on.error().message));
}

// A standby: answers everything with 91.
std::optional<Message> standby(const Message& request) { return sdk_test::reply(request, "91"); }

// A node that relays to the clearing at `port` until the `nth` request of type `mti`, then — stepping
// down — answers 91 (`answer_91`) or nothing at all, and relays nothing more. `book_nth`: the nth is
// still relayed (booked) before its answer is lost.
struct SteppingDown {
    std::shared_ptr<Upstream> upstream;
    std::string mti;
    int nth = 1;
    bool answer_91 = false;
    bool book_nth = false;
    std::shared_ptr<int> seen = std::make_shared<int>(0);
    std::optional<Message> operator()(const Message& request) const {
        const bool counted = request.mti() == mti;
        if (counted) ++*seen;
        if (*seen < nth || (!counted && *seen == 0)) return upstream->call(request);
        if (counted && *seen == nth && book_nth) (void)upstream->call(request);
        if (answer_91) return sdk_test::reply(request, "91");
        return std::nullopt;
    }
};

}  // namespace

TEST_CASE("failover: endpoint lists parse strictly, with errors naming the element") {
    auto two = sdk::parse_clearing_endpoints("10.0.0.1:8583,node2.island:8584");
    REQUIRE(two.ok());
    REQUIRE(two->size() == 2);
    CHECK((*two)[0] == sdk::ClearingEndpoint{"10.0.0.1", 8583});
    CHECK((*two)[1] == sdk::ClearingEndpoint{"node2.island", 8584});
    auto one = sdk::parse_clearing_endpoints("127.0.0.1:7");
    REQUIRE(one.ok());
    CHECK(one->size() == 1);
    auto v6 = sdk::parse_clearing_endpoints("[::1]:8583,127.0.0.1:8583");
    REQUIRE(v6.ok());
    CHECK(sdk::to_string((*v6)[0]) == "[::1]:8583");

    const auto error_of = [](std::string_view text) {
        auto parsed = sdk::parse_clearing_endpoints(text);
        REQUIRE_MESSAGE(!parsed.ok(), text);
        return parsed.error();
    };
    CHECK(error_of("").find("no clearing endpoint") != std::string::npos);
    CHECK(error_of("a:").find("endpoint 1 of 'a:'") != std::string::npos);
    CHECK(error_of("a:").find("port") != std::string::npos);
    CHECK(error_of("a:1,host:0").find("endpoint 2 of") != std::string::npos);
    CHECK(error_of("a:1,host:0").find("1–65535") != std::string::npos);
    CHECK(error_of("h:99999").find("1–65535") != std::string::npos);
    CHECK(error_of("a:1,,b:2").find("endpoint 2 of 'a:1,,b:2' is empty") != std::string::npos);
    CHECK(error_of("a:1,").find("endpoint 2 of 'a:1,' is empty") != std::string::npos);
    CHECK(error_of(",a:1").find("endpoint 1 of ',a:1' is empty") != std::string::npos);
    CHECK(error_of("a:1, b:2").find("endpoint 2 of") != std::string::npos);
    CHECK(error_of("a:1,b:2,a:1").find("a:1 is listed twice") != std::string::npos);
    std::string many;
    for (std::size_t i = 1; i <= sdk::clearing_endpoints_max + 1; ++i) many += (i > 1 ? "," : "") + fmt::format("h{}:1", i);
    CHECK(error_of(many).find("more than 16 clearing endpoints") != std::string::npos);

    LinkRig rig;
    auto empty = sdk::ClearingClient::connect(std::vector<sdk::ClearingEndpoint>{}, options_of(rig));
    REQUIRE_FALSE(empty.ok());
    CHECK(empty.error().code == sdk::ClearingErrorCode::bad_option);
    const auto port = rig.server->port();
    auto twice = sdk::ClearingClient::connect(std::vector{local(port), local(port)}, options_of(rig));
    REQUIRE_FALSE(twice.ok());
    CHECK(twice.error().code == sdk::ClearingErrorCode::bad_option);
    CHECK(twice.error().message.find("listed twice") != std::string::npos);
}

TEST_CASE("failover: the first endpoint is down (nothing listens) — the second signs on and books the upload") {
    LinkRig rig(2);
    buy(rig, 3, 100);
    const std::uint16_t down = dead_port();
    const std::uint16_t second = rig.clearing.daemon->terminal_server(1).port();
    connect_list(rig, {local(down), local(second)}, options_of(rig));
    CHECK(rig.client->current_endpoint() == local(second));
    CHECK(rig.client->link_stats().failovers == 1);
    CHECK(rig.client->link_stats().endpoint_failures == 1);
    CHECK(rig.client->link_stats().connects == 1);
    auto report = rig.client->upload(*rig.queue);
    REQUIRE_MESSAGE(report.ok(), (report.ok() ? "" : report.error().message));
    CHECK(report->acknowledged == 3);
    CHECK(rig.clearing.shadow(card_a) == rig.card_balance());
}

TEST_CASE("failover: the first endpoint answers 91 to the sign-on (a standby) — the second serves") {
    LinkRig rig(2);
    sdk_test::FakeHost standby_node(standby);
    const std::uint16_t second = rig.clearing.daemon->terminal_server(1).port();
    connect_list(rig, {local(standby_node.port()), local(second)}, options_of(rig));
    CHECK(standby_node.received("0800").size() == 1);
    CHECK(rig.client->current_endpoint() == local(second));
    CHECK(rig.client->link_stats().failovers == 1);
    CHECK(rig.client->link_stats().connects == 2);
    auto loaded = rig.terminal->load(1500, *rig.client);
    REQUIRE_MESSAGE(loaded.ok(), (loaded.ok() ? "" : loaded.error().message));
    CHECK(loaded->confirmed);
    CHECK(rig.clearing.shadow(card_a) == 6500);
    CHECK(standby_node.received().size() == 1);  // nothing more went to the standby

    // With one endpoint the 91 is the answer, as before.
    rig.client.reset();
    auto alone = sdk::ClearingClient::connect(local(standby_node.port()), options_of(rig));
    REQUIRE(alone.ok());
    auto refused = (*alone)->sign_on();
    REQUIRE_FALSE(refused.ok());
    CHECK(refused.error().code == sdk::ClearingErrorCode::refused);
    CHECK(refused.error().response_code == "91");
}

TEST_CASE("failover: the connection dies mid-upload (link_faults) — the upload continues on the next endpoint, each record booked once") {
    LinkRig rig(2);
    buy(rig, 6, 100);
    const std::uint16_t first = rig.clearing.daemon->terminal_server(0).port();
    const std::uint16_t second = rig.clearing.daemon->terminal_server(1).port();
    sdk::ClearingOptions options = options_of(rig);
    options.response_timeout = std::chrono::seconds(5);                     // nothing waits for a silence here: the counts are exact
    options.link_faults = LoseNth{"0320", 3, sdk::LinkFault::lose_answer};  // booked, its answer lost, the link dies
    connect_list(rig, {local(first), local(second)}, options);
    auto report = rig.client->upload(*rig.queue);
    REQUIRE_MESSAGE(report.ok(), (report.ok() ? "" : report.error().message));
    CHECK(report->acknowledged == 6);
    CHECK(report->approved == 6);
    CHECK(report->kept == 0);
    CHECK(report->sent == 6 + 4);  // the 3rd and the three behind it sent again on the second endpoint
    CHECK(rig.queue->size() == 0);
    CHECK(rig.client->current_endpoint() == local(second));
    CHECK(rig.client->link_stats().failovers == 1);
    CHECK(rig.card_balance() == 5000 - 6 * 100);
    CHECK(rig.clearing.shadow(card_a) == rig.card_balance());  // the 3rd, booked on the first, is not booked again
    rig.clearing.require_check();
    auto reconciled = rig.client->reconcile();
    REQUIRE(reconciled.ok());
    CHECK(reconciled->balanced);
    CHECK(reconciled->totals.debits_count == 6);
}

TEST_CASE("failover: the node goes silent mid-upload after booking a record — timeout, the next endpoint, booked once") {
    LinkRig rig(2);
    buy(rig, 6, 100);
    auto upstream = std::make_shared<Upstream>(rig.clearing.daemon->terminal_server(0).port());
    sdk_test::FakeHost node(SteppingDown{upstream, "0320", 4, false, true});
    const std::uint16_t second = rig.clearing.daemon->terminal_server(1).port();
    connect_list(rig, {local(node.port()), local(second)}, options_of(rig));
    CHECK(rig.client->current_endpoint() == local(node.port()));
    auto report = rig.client->upload(*rig.queue);
    REQUIRE_MESSAGE(report.ok(), (report.ok() ? "" : report.error().message));
    CHECK(report->acknowledged == 6);
    CHECK(rig.queue->size() == 0);
    CHECK(rig.client->current_endpoint() == local(second));
    CHECK(rig.clearing.shadow(card_a) == 5000 - 6 * 100);
    CHECK(rig.clearing.shadow(card_a) == rig.card_balance());
    rig.clearing.require_check();
}

TEST_CASE("failover: the node answers 91 mid-upload (stepping down) — the rest goes to the next endpoint") {
    LinkRig rig(2);
    buy(rig, 5, 100);
    auto upstream = std::make_shared<Upstream>(rig.clearing.daemon->terminal_server(0).port());
    sdk_test::FakeHost node(SteppingDown{upstream, "0320", 3, true, false});
    const std::uint16_t second = rig.clearing.daemon->terminal_server(1).port();
    connect_list(rig, {local(node.port()), local(second)}, options_of(rig));
    auto report = rig.client->upload(*rig.queue);
    REQUIRE_MESSAGE(report.ok(), (report.ok() ? "" : report.error().message));
    CHECK(report->acknowledged == 5);
    CHECK(report->by_response_code.count("91") == 0);  // a 91 is no answer to the record: it went on
    CHECK(report->by_response_code.at("00") == 5);
    CHECK(rig.queue->size() == 0);
    CHECK(rig.client->current_endpoint() == local(second));
    CHECK(rig.clearing.shadow(card_a) == rig.card_balance());
}

TEST_CASE("failover: a 0200 answered 91 is sent again on the next endpoint; a lost one is reversed there") {
    LinkRig rig(2);
    auto upstream = std::make_shared<Upstream>(rig.clearing.daemon->terminal_server(0).port());
    sdk_test::FakeHost node(SteppingDown{upstream, "0200", 1, true, false});
    const std::uint16_t second = rig.clearing.daemon->terminal_server(1).port();
    connect_list(rig, {local(node.port()), local(second)}, options_of(rig));
    auto loaded = rig.terminal->load(1500, *rig.client);
    REQUIRE_MESSAGE(loaded.ok(), (loaded.ok() ? "" : loaded.error().message));
    CHECK(loaded->confirmed);
    CHECK(node.received("0200").size() == 1);
    CHECK(rig.clearing.shadow(card_a) == 6500);
    CHECK(rig.card_balance() == 6500);

    // A 0200 lost on the way: its outcome unknown, it is not sent again; the 0400 goes to the next endpoint.
    sdk::ClearingOptions options = options_of(rig);
    options.link_faults = LoseNth{"0200", 1, sdk::LinkFault::lose_answer};
    connect_list(rig, {local(rig.clearing.daemon->terminal_server(0).port()), local(second)}, options);
    auto lost = rig.terminal->load(700, *rig.client);
    REQUIRE_FALSE(lost.ok());
    CHECK(lost.error().code == sdk::FlowErrorCode::no_answer);
    CHECK(lost.error().reversed);
    CHECK(rig.client->current_endpoint() == local(second));
    CHECK(rig.card_balance() == 6500);
    CHECK(rig.clearing.shadow(card_a) == 6500);
}

TEST_CASE("failover: every endpoint down — connect_failed naming each, within the bound") {
    LinkRig rig;
    sdk_test::FakeHost standby_node(standby);
    const std::uint16_t down = dead_port();
    sdk::ClearingOptions options = options_of(rig);
    options.failover_window = std::chrono::milliseconds(600);
    options.failover_backoff = std::chrono::milliseconds(100);
    const auto started = std::chrono::steady_clock::now();
    auto client = sdk::ClearingClient::connect(std::vector{local(down), local(standby_node.port())}, options);
    REQUIRE(client.ok());  // the standby accepts the connection; the sign-on decides
    auto signed_on = (*client)->sign_on();
    const auto elapsed = std::chrono::steady_clock::now() - started;
    REQUIRE_FALSE(signed_on.ok());
    CHECK(signed_on.error().code == sdk::ClearingErrorCode::connect_failed);
    const std::string& message = signed_on.error().message;
    INFO(message);
    CHECK(message.find("127.0.0.1:" + std::to_string(down)) != std::string::npos);
    CHECK(message.find("127.0.0.1:" + std::to_string(standby_node.port()) + " — the clearing answered 91 to the sign-on") !=
          std::string::npos);
    CHECK(message.find("no clearing endpoint of 2 accepted") != std::string::npos);
    CHECK(elapsed >= std::chrono::milliseconds(600));
    CHECK(elapsed < std::chrono::milliseconds(600 + 1500));
    CHECK((*client)->link_stats().endpoint_failures >= 4);  // at least two rounds: 600 ms of 100–200 ms pauses
    CHECK(standby_node.received("0800").size() >= 2);

    // Nothing listening anywhere, one round (window 0): at once.
    const auto quick = std::chrono::steady_clock::now();
    auto none = sdk::ClearingClient::connect(std::vector{local(down), local(dead_port())}, options_of(rig));
    REQUIRE_FALSE(none.ok());
    CHECK(none.error().code == sdk::ClearingErrorCode::connect_failed);
    CHECK(none.error().message.find("(1 round in 0 ms)") != std::string::npos);
    CHECK(std::chrono::steady_clock::now() - quick < std::chrono::milliseconds(500));
}

TEST_CASE("failover: the client remembers the endpoint that served last — reconnects and new clients start there") {
    LinkRig rig(2);
    sdk_test::FakeHost standby_node(standby);
    const std::uint16_t second = rig.clearing.daemon->terminal_server(1).port();
    auto memory = std::make_shared<sdk::ClearingEndpointMemory>();
    std::vector<sdk::ClearingEndpoint> changes;
    memory->changed = [&changes](const sdk::ClearingEndpoint& e) { changes.push_back(e); };
    sdk::ClearingOptions options = options_of(rig);
    options.endpoint_memory = memory;
    connect_list(rig, {local(standby_node.port()), local(second)}, options);
    REQUIRE(memory->last_served == local(second));
    CHECK(changes.size() == 1);  // the standby accepted the connection but refused the sign-on: not remembered

    // A new client with the same memory starts at the second: the standby hears nothing more.
    buy(rig, 2, 100);
    connect_list(rig, {local(standby_node.port()), local(second)}, options);
    CHECK(rig.client->link_stats().failovers == 0);  // started at the second
    CHECK(rig.client->link_stats().connects == 1);
    CHECK(standby_node.received("0800").size() == 1);  // only the first client's sign-on
    auto report = rig.client->upload(*rig.queue);
    REQUIRE(report.ok());
    CHECK(report->acknowledged == 2);
    CHECK(rig.clearing.shadow(card_a) == rig.card_balance());
}
