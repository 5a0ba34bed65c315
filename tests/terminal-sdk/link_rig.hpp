// The terminal SDK against the real clearing engine and ISO 8583 server on loopback (clearing_fixture.hpp's
// Rig: in-process HSM, LMDB ledger in a temporary directory) with one terminal holding card A and a PSAM
// in process; helpers to lose requests (ClearingOptions::link_faults) and to relay ISO 8583 to the clearing.
#pragma once

#include "clearing_fixture.hpp"
#include "fake_host.hpp"

#include <coconut/clearing/server.hpp>
#include <coconut/cos/card.hpp>
#include <coconut/sdk/clearing_client.hpp>
#include <coconut/sdk/terminal.hpp>

#include <nlohmann/json.hpp>

#include <memory>

namespace link_test {

using namespace clearing_test;
namespace sdk = coconut::sdk;

inline const std::string purchase_master_hex = "0123456789ABCDEFFEDCBA9876543210";

inline bool is_ins(ByteView command, std::uint8_t cla, std::uint8_t ins) {
    return command.size() >= 2 && command[0] == cla && command[1] == ins;
}

// The clearing (engine + ISO 8583 server on an ephemeral loopback port) and one terminal with card A.
// With `listeners` ISO 8583 ports on the one daemon (and ledger): the nodes of a cluster as the terminal
// sees them, each port a node that can serve it.
struct LinkRig {
    Rig clearing;
    Server* server;

    std::unique_ptr<cos::VirtualCard> card;
    std::unique_ptr<cos::VirtualCard> psam;
    sdk::InProcessReader card_reader{"card", nullptr};
    sdk::InProcessReader psam_reader{"psam", nullptr};
    std::unique_ptr<sdk::TransactionQueue> queue;
    sdk::Hotlist hotlist;
    std::unique_ptr<sdk::Terminal> terminal;
    std::unique_ptr<sdk::ClearingClient> client;

    std::string terminal_id;  // field 41: a bus's terminal, or (with the clinic's PSAM) the clinic's

    explicit LinkRig(std::size_t listeners = 1, std::string field41 = "BUS00001", const std::string& psam_terminal_id = psam_terminal)
        : clearing({}, std::vector<ServerOptions>(listeners)), server(&clearing.daemon->terminal_server()),
          terminal_id(std::move(field41)) {
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
        const nlohmann::json psam_profile = {
            {"kind", "psam"},        {"terminal_id", psam_terminal_id}, {"purchase_key", purchase_master_hex},
            {"key_level", "master"}, {"issuer_id", issuer_hex},         {"terminal_serial", 1}};
        REQUIRE(cos::create_image(dir / "psam.img", psam_profile).ok());
        card = std::move(cos::VirtualCard::open(dir / "card.img").value());
        psam = std::move(cos::VirtualCard::open(dir / "psam.img").value());
        card_reader.insert(card.get());
        psam_reader.insert(psam.get());
        queue = std::move(sdk::TransactionQueue::open(dir / "terminal.queue").value());
        terminal = std::make_unique<sdk::Terminal>(card_reader, psam_reader, *queue, hotlist);

        sdk::ClearingOptions options;
        options.terminal_id = terminal_id;
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
        options.terminal_id = terminal_id;
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
inline void buy(LinkRig& rig, int count, std::uint32_t amount_fen) {
    for (int i = 0; i < count; ++i) {
        rig.card_reader.insert(rig.card.get());
        auto paid = rig.terminal->purchase(amount_fen);
        REQUIRE_MESSAGE(paid.ok(), (paid.ok() ? "" : paid.error().message));
    }
}

}  // namespace link_test
