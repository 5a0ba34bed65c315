// sdk_tac_check: the integration tests' independent view of the card cryptography (docs/CARD-SPEC.md §4),
// computed with coconut::card_crypto, never with the SDK or the card OS.
//
//   sdk_tac_check card-key MASTER16 ISSUER_ID ASN   the card key Div(Div(MASTER, issuer), card factor), hex
//   sdk_tac_check verify DTK16 < records.json       recomputes the purchase TAC of every record
//
// `verify` reads one JSON document: a coconut-terminal record, an array of them, or an object holding them
// under "transactions" / "recorded" / "record". Each record needs amount_fen, type, terminal_id,
// terminal_serial, date, time and tac (the names coconut-terminal --json prints). Prints one line per
// record; exit 0 when every TAC matches, 1 when one does not, 2 on bad input.
#include <coconut/core/bytes.hpp>
#include <coconut/crypto/card_crypto.hpp>

#include <nlohmann/json.hpp>

#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

namespace {

using namespace coconut;
using nlohmann::json;

crypto::Block block_of(const Bytes& bytes) {
    crypto::Block block{};
    if (bytes.size() != block.size()) throw std::invalid_argument("expected 8 bytes");
    std::copy(bytes.begin(), bytes.end(), block.begin());
    return block;
}

void collect(const json& doc, std::vector<json>& out) {
    if (doc.is_array()) {
        for (const json& item : doc) collect(item, out);
    } else if (doc.is_object() && doc.contains("tac")) {
        out.push_back(doc);
    } else if (doc.is_object()) {
        for (const char* key : {"transactions", "recorded", "record"})
            if (doc.contains(key) && !doc.at(key).is_null()) collect(doc.at(key), out);
    }
}

int verify(const std::string& dtk_hex) {
    const crypto::Key16 dtk(hex(dtk_hex));
    const crypto::Key8 tac_key = crypto::tac_key(dtk);
    const json doc = json::parse(std::cin, nullptr, false);
    if (doc.is_discarded()) {
        std::fprintf(stderr, "sdk_tac_check: stdin is not JSON\n");
        return 2;
    }
    std::vector<json> records;
    collect(doc, records);
    int bad = 0;
    for (const json& r : records) {
        crypto::CardDateTime when;
        const Bytes date = hex(r.at("date").get<std::string>());
        const Bytes time = hex(r.at("time").get<std::string>());
        std::copy(date.begin(), date.end(), when.date.begin());
        std::copy(time.begin(), time.end(), when.time.begin());
        const Bytes terminal_id = hex(r.at("terminal_id").get<std::string>());
        const auto type = static_cast<std::uint8_t>(std::stoi(r.at("type").get<std::string>(), nullptr, 16));
        const crypto::Mac4 expected =
            crypto::des_mac(tac_key, crypto::purchase_tac_input(r.at("amount_fen").get<std::uint32_t>(), type, terminal_id,
                                                                r.at("terminal_serial").get<std::uint32_t>(), when));
        const std::string got = r.at("tac").get<std::string>();
        const bool match = to_hex(expected) == got;
        bad += match ? 0 : 1;
        std::printf("%s ATC %d type %02X amount %u serial %u: TAC %s, recomputed %s\n", match ? "ok " : "BAD", r.at("atc").get<int>(), type,
                    r.at("amount_fen").get<std::uint32_t>(), r.at("terminal_serial").get<std::uint32_t>(), got.c_str(),
                    to_hex(expected).c_str());
    }
    std::printf("%zu record(s), %d mismatch(es)\n", records.size(), bad);
    return bad == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        const std::vector<std::string> args(argv + 1, argv + argc);
        if (args.size() == 4 && args[0] == "card-key") {
            const Bytes asn = hex(args[3]);
            const crypto::Key16 key =
                crypto::diversify_card_key(crypto::Key16(hex(args[1])), block_of(hex(args[2])), crypto::card_factor_from_asn(asn));
            std::printf("%s\n", to_hex(key.view()).c_str());
            return 0;
        }
        if (args.size() == 2 && args[0] == "verify") return verify(args[1]);
    } catch (const std::exception& error) {
        std::fprintf(stderr, "sdk_tac_check: %s\n", error.what());
        return 2;
    }
    std::fprintf(stderr, "usage: sdk_tac_check card-key MASTER ISSUER_ID ASN | verify DTK < records.json\n");
    return 2;
}
