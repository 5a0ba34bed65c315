// The online flows' test rig: a terminal (test_sdk_support.hpp's Rig) whose ClearingClient talks to a
// scripted host (fake_host.hpp) that answers like the issuer's HSM would (MAC2 under the card's DLK).
#pragma once

#include "fake_host.hpp"
#include "test_sdk_support.hpp"

#include <coconut/apdu/tlv.hpp>
#include <coconut/iso8583/card_data.hpp>
#include <coconut/sdk/clearing_client.hpp>

namespace sdk_test {

inline constexpr std::string_view terminal_name = "CLINIC01";

inline crypto::Key16 card_key(const std::string& master, const Asn& asn) {
    return crypto::diversify(crypto::diversify(crypto::Key16(hex(master)), issuer_factor()), crypto::card_factor_from_asn(asn));
}

inline std::vector<apdu::Tlv> field62(const Message& m) {
    auto raw = from_hex(*m.get(62));
    REQUIRE(raw);
    auto tlvs = apdu::parse_tlvs(*raw);
    REQUIRE(tlvs.ok());
    return *tlvs;
}

inline Bytes tag(const Message& m, std::uint32_t t) {
    const auto tlvs = field62(m);
    const apdu::Tlv* found = apdu::find_tlv(tlvs, t);
    REQUIRE_MESSAGE(found != nullptr, "field 62 lacks tag " << t);
    return found->value;
}

inline Asn asn_of(const Message& m) {
    const Bytes b = tag(m, 0xDF01);
    Asn asn{};
    std::copy(b.begin(), b.end(), asn.begin());
    return asn;
}

// What the issuer's HSM does with a 0200: MAC2 over the load with the card's DLK session key.
inline Message answer_load(const Message& request, std::string_view code = "00", bool corrupt_mac2 = false) {
    Message m = reply(request, code);
    if (code != "00") return m;
    const Asn asn = asn_of(request);
    const Bytes random = tag(request, 0xDF0A);
    const Bytes atc = tag(request, 0xDF04);
    const Bytes when = tag(request, 0xDF07);
    const Bytes terminal = tag(request, 0xDF06);
    crypto::CardDateTime t;
    std::copy_n(when.begin(), 4, t.date.begin());
    std::copy_n(when.begin() + 4, 3, t.time.begin());
    const auto session = crypto::load_session_key(card_key(master_dlk, asn), random, read_be16(atc));
    auto mac2 = crypto::des_mac(session, crypto::load_mac2_input(static_cast<std::uint32_t>(*request.get_number(4)), crypto::type_ep_load,
                                                                 terminal, t));
    if (corrupt_mac2) mac2[0] ^= 0xFF;
    m.set(62, iso8583::encode_load_answer({asn, read_be16(atc), mac2}));
    m.set(38, "A00001");
    return m;
}

// A host that approves everything; 0100 answered with `clinic_code` (10: `partial_fen` held).
inline FakeHost::Handler approving(std::string clinic_code = "00", std::uint64_t partial_fen = 0) {
    return [=](const Message& r) -> std::optional<Message> {
        if (r.mti() == "0200") return answer_load(r);
        if (r.mti() == "0100") {
            Message m = reply(r, clinic_code);
            if (clinic_code == "10") m.set_number(4, partial_fen, 12);
            return m;
        }
        return reply(r, "00");
    };
}

struct OnlineRig : Rig {
    std::unique_ptr<FakeHost> host;
    std::unique_ptr<ClearingClient> client;
    explicit OnlineRig(std::uint32_t balance, FakeHost::Handler handler) : Rig(balance) {
        host = std::make_unique<FakeHost>(std::move(handler));
        connect();
    }
    void connect() {
        ClearingOptions options;
        options.terminal_id = std::string(terminal_name);
        options.response_timeout = std::chrono::milliseconds(300);
        options.batch_log = queue.get();
        auto c = ClearingClient::connect({"127.0.0.1", host->port()}, options);
        REQUIRE_MESSAGE(c.ok(), (c.ok() ? "" : c.error().message));
        client = std::move(c.value());
    }
};

}  // namespace sdk_test
