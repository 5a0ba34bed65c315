// The SDK's online flows against the real clearing engine and ISO 8583 server on loopback (in-process HSM,
// LMDB ledger in a temporary directory), with in-process cards whose reader can lose the card at a chosen
// APDU: the card pulled during CREDIT FOR LOAD is resolved on its next presentation — confirmed (0221) or
// reversed (0421) — and the clearing's shadow balance ends equal to the card's balance; a reversed load
// attempt does not block the next load on the same online ATC; reconciliation balances.
#include "clearing_fixture.hpp"

#include <coconut/clearing/server.hpp>
#include "fake_host.hpp"

#include <coconut/cos/card.hpp>
#include <coconut/sdk/clearing_client.hpp>
#include <coconut/sdk/terminal.hpp>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

#include <nlohmann/json.hpp>

#include <thread>

using namespace clearing_test;
namespace sdk = coconut::sdk;
namespace asio = boost::asio;

namespace {

const std::string purchase_master_hex = "0123456789ABCDEFFEDCBA9876543210";

bool is_ins(ByteView command, std::uint8_t cla, std::uint8_t ins) { return command.size() >= 2 && command[0] == cla && command[1] == ins; }

// The clearing (engine + ISO 8583 server on an ephemeral loopback port) and one terminal with card A.
struct LinkRig {
    Rig clearing{{}, {ServerOptions{}}};
    Server* server = &clearing.daemon->terminal_server();

    std::unique_ptr<cos::VirtualCard> card;
    std::unique_ptr<cos::VirtualCard> psam;
    sdk::InProcessReader card_reader{"card", nullptr};
    sdk::InProcessReader psam_reader{"psam", nullptr};
    std::unique_ptr<sdk::TransactionQueue> queue;
    sdk::Hotlist hotlist;
    std::unique_ptr<sdk::Terminal> terminal;
    std::unique_ptr<sdk::ClearingClient> client;

    LinkRig() {
        const auto dir = clearing.dir.path;
        const nlohmann::json card_profile = {{"kind", "card"},
                                             {"asn", card_a},
                                             {"issuer_id", issuer_hex},
                                             {"balance_fen", 5000},
                                             {"pin", "123456"},
                                             {"seed", "5EED5EED"},
                                             {"start_date", "20260101"},
                                             {"expiry_date", "20351231"},
                                             {"master_keys",
                                              {{"dpk", purchase_master_hex},
                                               {"dlk", load_master_hex},
                                               {"dtk", tac_master_hex},
                                               {"iak", internal_auth_master_hex},
                                               {"damk", purchase_master_hex},
                                               {"ssse_iak", ssse_auth_master_hex}}}};
        REQUIRE(cos::create_image(dir / "card.img", card_profile).ok());
        const nlohmann::json psam_profile = {{"kind", "psam"},        {"terminal_id", psam_terminal}, {"purchase_key", purchase_master_hex},
                                             {"key_level", "master"}, {"issuer_id", issuer_hex},      {"terminal_serial", 1}};
        REQUIRE(cos::create_image(dir / "psam.img", psam_profile).ok());
        card = std::move(cos::VirtualCard::open(dir / "card.img").value());
        psam = std::move(cos::VirtualCard::open(dir / "psam.img").value());
        card_reader.insert(card.get());
        psam_reader.insert(psam.get());
        queue = std::move(sdk::TransactionQueue::open(dir / "terminal.queue").value());
        terminal = std::make_unique<sdk::Terminal>(card_reader, psam_reader, *queue, hotlist);

        sdk::ClearingOptions options;
        options.terminal_id = "BUS00001";
        options.batch_log = queue.get();
        auto connected = sdk::ClearingClient::connect({"127.0.0.1", server->port()}, options);
        REQUIRE_MESSAGE(connected.ok(), (connected.ok() ? "" : connected.error().message));
        client = std::move(connected.value());
        REQUIRE(client->sign_on().ok());
    }
    ~LinkRig() {
        client.reset();  // then the daemon drains
    }

    void lose_card_at_credit(sdk::Fault fault) {
        card_reader.set_fault_plan([fault](std::size_t, ByteView c) { return is_ins(c, 0x80, 0x52) ? fault : sdk::Fault::none; });
    }
    void present_again() {
        card_reader.set_fault_plan(nullptr);
        card_reader.insert(card.get());
    }
    std::int64_t card_balance() const { return card->snapshot().balance_fen; }

    // Puts `proxy` between the terminal and the clearing: a new client connected through it (with
    // `faults` as its ClearingOptions::link_faults).
    void connect_through(std::uint16_t port, std::function<sdk::LinkFault(const Message&)> faults = {}) {
        sdk::ClearingOptions options;
        options.terminal_id = "BUS00001";
        options.batch_log = queue.get();
        options.response_timeout = std::chrono::milliseconds(300);
        options.link_faults = std::move(faults);
        auto connected = sdk::ClearingClient::connect({"127.0.0.1", port}, options);
        REQUIRE(connected.ok());
        client = std::move(connected.value());
        REQUIRE(client->sign_on().ok());
    }
};

// A blocking ISO 8583 connection to the clearing (the proxy's upstream side).
class Upstream {
public:
    explicit Upstream(std::uint16_t port) {
        fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in address{};
        address.sin_family = AF_INET;
        address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        address.sin_port = htons(port);
        REQUIRE(::connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
    }
    ~Upstream() { ::close(fd_); }
    Upstream(const Upstream&) = delete;
    Upstream& operator=(const Upstream&) = delete;

    std::optional<Message> call(const Message& request) {
        auto encoded = iso8583::encode(request, iso8583::coconut_dictionary());
        if (!encoded) return std::nullopt;
        const Bytes framed = *iso8583::frame(*encoded);
        if (::write(fd_, framed.data(), framed.size()) != static_cast<ssize_t>(framed.size())) return std::nullopt;
        std::array<std::uint8_t, 2> header{};
        if (!read_exact(header.data(), header.size())) return std::nullopt;
        Bytes body((std::size_t{header[0]} << 8) | header[1]);
        if (!read_exact(body.data(), body.size())) return std::nullopt;
        auto parsed = iso8583::parse(body, iso8583::coconut_dictionary());
        if (!parsed) return std::nullopt;
        return *parsed;
    }

private:
    bool read_exact(std::uint8_t* out, std::size_t size) {
        for (std::size_t done = 0; done < size;) {
            const ssize_t n = ::read(fd_, out + done, size - done);
            if (n <= 0) return false;
            done += static_cast<std::size_t>(n);
        }
        return true;
    }
    int fd_ = -1;
};

}  // namespace

TEST_CASE("link: an online load through the real clearing posts the load; shadow = card") {
    LinkRig rig;
    auto loaded = rig.terminal->load(1500, *rig.client);
    REQUIRE_MESSAGE(loaded.ok(), (loaded.ok() ? "" : loaded.error().message));
    CHECK(loaded->confirmed);
    CHECK(rig.card_balance() == 6500);
    CHECK(rig.clearing.shadow(card_a) == 6500);
    CHECK(rig.queue->size() == 0);
}

TEST_CASE("link: card pulled after CREDIT ran — the next presentation confirms it (0221); shadow = card") {
    LinkRig rig;
    rig.lose_card_at_credit(sdk::Fault::after_card);
    auto loaded = rig.terminal->load(1500, *rig.client);
    REQUIRE_FALSE(loaded.ok());
    CHECK(loaded.error().code == sdk::FlowErrorCode::card_removed);
    CHECK(rig.card_balance() == 6500);
    CHECK(rig.clearing.shadow(card_a) == 5000);  // pending at the clearing: not in the posted shadow

    rig.present_again();
    auto recovered = rig.terminal->recover();
    REQUIRE(recovered.ok());
    REQUIRE(recovered->recorded.size() == 1);
    auto report = rig.client->upload(*rig.queue);
    REQUIRE_MESSAGE(report.ok(), (report.ok() ? "" : report.error().message));
    CHECK(report->approved == 1);
    CHECK(rig.queue->size() == 0);
    CHECK(rig.clearing.shadow(card_a) == 6500);
    auto reconciled = rig.client->reconcile();
    REQUIRE(reconciled.ok());
    CHECK(reconciled->balanced);
}

TEST_CASE("link: CREDIT never reached the card — reversed (0421) on its return; the next load on the same ATC works") {
    LinkRig rig;
    rig.lose_card_at_credit(sdk::Fault::before_card);
    auto loaded = rig.terminal->load(1500, *rig.client);
    REQUIRE_FALSE(loaded.ok());
    CHECK(rig.card_balance() == 5000);

    rig.present_again();
    auto recovered = rig.terminal->recover();
    REQUIRE(recovered.ok());
    REQUIRE(recovered->reversed.size() == 1);
    auto report = rig.client->upload(*rig.queue);
    REQUIRE(report.ok());
    CHECK(report->acknowledged == 1);
    CHECK(rig.clearing.shadow(card_a) == 5000);

    // The card's online ATC did not move: the clearing takes the next attempt on that ATC as a new load.
    auto again = rig.terminal->load(700, *rig.client);
    REQUIRE_MESSAGE(again.ok(), (again.ok() ? "" : again.error().message));
    CHECK(again->confirmed);
    CHECK(rig.card_balance() == 5700);
    CHECK(rig.clearing.shadow(card_a) == 5700);
    auto reconciled = rig.client->reconcile();
    REQUIRE(reconciled.ok());
    CHECK(reconciled->balanced);
    CHECK(reconciled->totals.credits_fen == 700);
    CHECK(reconciled->totals.credit_reversals_fen == 1500);
}

TEST_CASE("link: the 0210 is lost after the clearing booked the load — the 0420 voids it; shadow = card; balanced") {
    LinkRig rig;
    auto upstream = std::make_shared<Upstream>(rig.server->port());
    sdk_test::FakeHost proxy([upstream](const Message& request) -> std::optional<Message> {
        auto answer = upstream->call(request);
        if (request.mti() == "0200") return std::nullopt;  // booked upstream, the answer lost on the way back
        return answer;
    });
    rig.connect_through(proxy.port());
    auto loaded = rig.terminal->load(1500, *rig.client);
    REQUIRE_FALSE(loaded.ok());
    CHECK(loaded.error().code == sdk::FlowErrorCode::no_answer);
    CHECK(loaded.error().reversed);
    CHECK(proxy.received("0420").size() == 1);
    CHECK(rig.queue->size() == 0);
    CHECK(rig.card_balance() == 5000);
    CHECK(rig.clearing.shadow(card_a) == 5000);
    auto reconciled = rig.client->reconcile();
    REQUIRE(reconciled.ok());
    CHECK(reconciled->balanced);
    CHECK(reconciled->totals.credit_reversals_fen == 1500);
}

TEST_CASE("link: the 0200 never reached the clearing — the 0420 is acknowledged with nothing booked; both count it; 0500 balances") {
    LinkRig rig;
    auto upstream = std::make_shared<Upstream>(rig.server->port());
    sdk_test::FakeHost proxy([upstream](const Message& request) -> std::optional<Message> {
        if (request.mti() == "0200") return std::nullopt;  // lost on the way to the clearing
        return upstream->call(request);
    });
    rig.connect_through(proxy.port());
    auto loaded = rig.terminal->load(1500, *rig.client);
    REQUIRE_FALSE(loaded.ok());
    CHECK(loaded.error().code == sdk::FlowErrorCode::no_answer);
    CHECK(rig.queue->size() == 0);  // the 0430 answered 00 (ISO8583.md §4.5: an advice is always acknowledged)
    CHECK(rig.card_balance() == 5000);
    CHECK(rig.clearing.shadow(card_a) == 5000);
    // Both sides count every reversal answered 00 with its field 4 (ISO8583.md §4.7), booked or not.
    auto reconciled = rig.client->reconcile();
    REQUIRE(reconciled.ok());
    CHECK(reconciled->balanced);
    CHECK(reconciled->totals.credit_reversals_count == 1);
    CHECK(reconciled->totals.credit_reversals_fen == 1500);
}

// ---- lost messages (ClearingOptions::link_faults) ----------------------------------------------------

namespace {

// Loses the `nth` request of type `mti` (1-based) as `fault`, and counts what it was asked about.
struct LoseNth {
    std::string mti;
    int nth = 1;
    sdk::LinkFault fault = sdk::LinkFault::lose_request;
    std::shared_ptr<int> seen = std::make_shared<int>(0);
    sdk::LinkFault operator()(const Message& request) const {
        if (request.mti() != mti) return sdk::LinkFault::none;
        return ++*seen == nth ? fault : sdk::LinkFault::none;
    }
};

// `count` purchases of `amount_fen` by card A, queued for upload.
void buy(LinkRig& rig, int count, std::uint32_t amount_fen) {
    for (int i = 0; i < count; ++i) {
        rig.card_reader.insert(rig.card.get());
        auto paid = rig.terminal->purchase(amount_fen);
        REQUIRE_MESSAGE(paid.ok(), (paid.ok() ? "" : paid.error().message));
    }
}

}  // namespace

TEST_CASE("link faults: a lost 0200 never reaches the clearing — the link closes, the flow reverses, nothing booked") {
    LinkRig rig;
    rig.connect_through(rig.server->port(), LoseNth{"0200", 1, sdk::LinkFault::lose_request});
    auto loaded = rig.terminal->load(1500, *rig.client);
    REQUIRE_FALSE(loaded.ok());
    CHECK(loaded.error().code == sdk::FlowErrorCode::no_answer);
    CHECK(loaded.error().reversed);
    CHECK(rig.queue->size() == 0);
    CHECK(rig.card_balance() == 5000);
    CHECK(rig.clearing.shadow(card_a) == 5000);
    CHECK(rig.client->link_stats().connects == 2);  // the 0400 went over a new connection
    auto reconciled = rig.client->reconcile();
    REQUIRE(reconciled.ok());
    CHECK(reconciled->balanced);
}

TEST_CASE("link faults: a lost 0210 — the clearing booked the load, the 0400 voids it; shadow = card") {
    LinkRig rig;
    rig.connect_through(rig.server->port(), LoseNth{"0200", 1, sdk::LinkFault::lose_answer});
    auto loaded = rig.terminal->load(1500, *rig.client);
    REQUIRE_FALSE(loaded.ok());
    CHECK(loaded.error().code == sdk::FlowErrorCode::no_answer);
    CHECK(loaded.error().reversed);
    CHECK(rig.card_balance() == 5000);
    CHECK(rig.clearing.shadow(card_a) == 5000);
    auto reconciled = rig.client->reconcile();
    REQUIRE(reconciled.ok());
    CHECK(reconciled->balanced);
    CHECK(reconciled->totals.credit_reversals_fen == 1500);
}

TEST_CASE("link faults: a request lost inside a pipelined upload — exactly the records before it are booked and acknowledged") {
    LinkRig rig;
    buy(rig, 6, 100);
    rig.connect_through(rig.server->port(), LoseNth{"0320", 3, sdk::LinkFault::lose_request});
    auto first = rig.client->upload(*rig.queue);
    REQUIRE_FALSE(first.ok());
    CHECK(first.error().code == sdk::ClearingErrorCode::closed);
    CHECK(rig.client->last_report().acknowledged == 2);
    CHECK(rig.queue->size() == 4);
    CHECK(rig.clearing.shadow(card_a) == 5000 - 2 * 100);  // the 3rd and everything after it never arrived

    auto second = rig.client->upload(*rig.queue);  // a new connection; the fault was for the 3rd 0320 only
    REQUIRE_MESSAGE(second.ok(), (second.ok() ? "" : second.error().message));
    CHECK(second->acknowledged == 4);
    CHECK(rig.queue->size() == 0);
    CHECK(rig.clearing.shadow(card_a) == rig.card_balance());
}

TEST_CASE("link faults: an answer lost inside a pipelined upload — its record is booked, kept, and re-uploaded onto the same id") {
    LinkRig rig;
    buy(rig, 6, 100);
    rig.connect_through(rig.server->port(), LoseNth{"0320", 3, sdk::LinkFault::lose_answer});
    auto first = rig.client->upload(*rig.queue);
    REQUIRE_FALSE(first.ok());
    CHECK(first.error().code == sdk::ClearingErrorCode::closed);
    CHECK(rig.client->last_report().acknowledged == 2);
    CHECK(rig.queue->size() == 4);
    CHECK(rig.clearing.shadow(card_a) == 5000 - 3 * 100);  // the 3rd was booked, its answer lost

    auto second = rig.client->upload(*rig.queue);
    REQUIRE_MESSAGE(second.ok(), (second.ok() ? "" : second.error().message));
    CHECK(second->acknowledged == 4);
    CHECK(rig.queue->size() == 0);
    CHECK(rig.clearing.shadow(card_a) == rig.card_balance());  // booked once
    CHECK(rig.card_balance() == 5000 - 6 * 100);
}
