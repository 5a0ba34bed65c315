// Test rig for the terminal SDK: a card and a PSAM personalized into a temporary directory, in-process
// readers, a durable queue and a hotlist, and a controllable clock.
#pragma once

#include <coconut/cos/card.hpp>
#include <coconut/crypto/card_crypto.hpp>
#include <coconut/sdk/terminal.hpp>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <random>

namespace sdk_test {

using namespace coconut;
using namespace coconut::sdk;

inline const std::string master_dpk = "11223344556677888877665544332211";
inline const std::string master_dlk = "2233445566778899AABBCCDDEEFF0011";
inline const std::string master_dtk = "CAA6025290114BFCC3C9043F70F7A07A";
// The SSSE application's own INTERNAL AUTHENTICATE master (the purse's IAK comes from master_dpk below).
inline const std::string master_ssse_iak = "5A5A5A5AA5A5A5A5C3C3C3C33C3C3C3C";
inline const std::string issuer_hex = "4861696E616E0001";

struct TempDir {
    std::filesystem::path path;
    TempDir() {
        std::random_device rd;
        path = std::filesystem::temp_directory_path() / ("coconut-sdk-" + std::to_string(rd()) + std::to_string(rd()));
        std::filesystem::create_directories(path);
    }
    ~TempDir() { std::filesystem::remove_all(path); }
};

inline nlohmann::json card_profile(const std::string& asn, std::uint32_t balance, const std::string& protocol = "T=1") {
    return {{"kind", "card"},
            {"asn", asn},
            {"issuer_id", issuer_hex},
            {"balance_fen", balance},
            {"pin", "123456"},
            {"protocol", protocol},
            {"seed", "5EED"},
            {"cardholder", {{"name", "海南 椰子"}, {"ssn", "460100198001011234"}, {"sex", "1"}, {"birth_date", "19800101"}}},
            {"master_keys",
             {{"dpk", master_dpk},
              {"dlk", master_dlk},
              {"dtk", master_dtk},
              {"iak", master_dpk},
              {"damk", master_dlk},
              {"ssse_iak", master_ssse_iak}}}};
}

inline crypto::Block issuer_factor() {
    crypto::Block b{};
    const Bytes i = hex(issuer_hex);
    std::copy(i.begin(), i.end(), b.begin());
    return b;
}

inline nlohmann::json psam_profile(const std::string& terminal_id) {
    const crypto::Key16 issuer_key = crypto::diversify(crypto::Key16(hex(master_dpk)), issuer_factor());
    return {{"kind", "psam"},
            {"terminal_id", terminal_id},
            {"purchase_key", to_hex(issuer_key.view())},
            {"issuer_id", issuer_hex},
            {"terminal_serial", 1}};
}

// The card's DTK, recomputed independently of the card OS: Div(Div(master, issuer), card factor).
inline crypto::Key16 card_dtk(const Asn& asn) {
    return crypto::diversify(crypto::diversify(crypto::Key16(hex(master_dtk)), issuer_factor()), crypto::card_factor_from_asn(asn));
}

inline crypto::Mac4 expected_tac(const TransactionRecord& r) {
    return crypto::des_mac(crypto::tac_key(card_dtk(r.asn)),
                           crypto::purchase_tac_input(r.amount_fen, r.type, r.terminal_id, r.terminal_serial, r.when));
}

inline std::unique_ptr<cos::VirtualCard> open_image(const std::filesystem::path& path) {
    auto card = cos::VirtualCard::open(path);
    REQUIRE_MESSAGE(card.ok(), (card.ok() ? "" : card.error().message));
    return std::move(card.value());
}

// 2026-11-26 10:00:00 Hainan time.
inline std::chrono::system_clock::time_point base_time() {
    return std::chrono::system_clock::from_time_t(1795658400);  // 02:00:00 UTC
}

struct Rig {
    TempDir dir;
    std::filesystem::path card_path = dir.path / "card.img";
    std::filesystem::path psam_path = dir.path / "psam.img";
    std::unique_ptr<cos::VirtualCard> card;
    std::unique_ptr<cos::VirtualCard> psam;
    InProcessReader card_reader{"card", nullptr};
    InProcessReader psam_reader{"psam", nullptr};
    std::unique_ptr<TransactionQueue> queue;
    Hotlist hotlist;
    std::unique_ptr<Terminal> terminal;
    std::chrono::system_clock::time_point now = base_time();

    explicit Rig(std::uint32_t balance = 10000, const std::string& protocol = "T=1", const std::string& asn = "10000000000000012345") {
        REQUIRE(cos::create_image(card_path, card_profile(asn, balance, protocol)).ok());
        REQUIRE(cos::create_image(psam_path, psam_profile("000001000050")).ok());
        card = open_image(card_path);
        psam = open_image(psam_path);
        card_reader.insert(card.get());
        psam_reader.insert(psam.get());
        open_queue();
        make_terminal();
    }
    void open_queue(QueueLimits limits = {}) {
        queue.reset();
        auto q = TransactionQueue::open(dir.path / "queue.log", limits);
        REQUIRE_MESSAGE(q.ok(), (q.ok() ? "" : q.error().message));
        queue = std::move(q.value());
    }
    void make_terminal() {
        TransitConfig transit;
        transit.lines[1] = LineFare{1, false, 200, {}, 7};
        transit.lines[2] = LineFare{2, true, 0, {200, 200, 300, 400, 500}, 8};
        terminal = std::make_unique<Terminal>(card_reader, psam_reader, *queue, hotlist, transit);
        terminal->set_clock([this] { return now; });
    }
    // Power cycle: reopen the card image from disk (what survives is what was committed).
    void reopen_card() {
        card_reader.insert(nullptr);
        card = open_image(card_path);
        card_reader.insert(card.get());
    }
    cos::Snapshot snap() const { return card->snapshot(); }
    std::uint64_t queued_total() const {
        std::uint64_t total = 0;
        for (const auto& q : queue->batch(1000000)) total += q.record.amount_fen;
        return total;
    }
};

}  // namespace sdk_test
