// libFuzzer target for the card data of field 62 (card_data.hpp: hex text of BER-TLV DF01–DF13) and the
// other structured fields of the Coconut profile (profile.hpp: 3, 48, 63, 90, 97). Outside input: a
// terminal writes field 62 of every card-transaction request, the host writes it in answers.
//
// Input: byte 0 picks the parser (mod the number of parsers), the rest is the field's text.
// Properties, for every parser: it never crashes or throws, whatever the text; what it accepts encodes
// back to text it accepts again, giving the same encoding (parse and encode apply the same rules).
#include <coconut/iso8583/card_data.hpp>
#include <coconut/iso8583/profile.hpp>

#include <fuzz_support.hpp>

#include <functional>
#include <vector>

namespace {

using namespace coconut;
using namespace coconut::iso8583;

constexpr std::string_view target = "fuzz_card_data";

// parse → encode → parse → encode: both encodings equal. `parse` returns a Result or an optional.
template <class Parse, class Encode>
void round_trip(std::string_view text, Parse parse, Encode encode) {
    auto first = parse(text);
    if (!first) return;
    const std::string encoded = encode(*first);
    auto second = parse(encoded);
    if (!second) fuzz::fail(target, "an encoding is refused by its own parser: " + encoded);
    if (encode(*second) != encoded) fuzz::fail(target, "parse and encode disagree on " + encoded);
}

using Check = std::function<void(std::string_view)>;

#define COCONUT_FUZZ_FIELD(parse, encode) [](std::string_view t) { round_trip(t, parse, [](const auto& v) { return encode(v); }); }

const std::vector<Check>& checks() {
    static const std::vector<Check> all = {
        COCONUT_FUZZ_FIELD(parse_purse_transaction, encode_purse_transaction),
        COCONUT_FUZZ_FIELD(parse_load_request, encode_load_request),
        COCONUT_FUZZ_FIELD(parse_load_answer, encode_load_answer),
        COCONUT_FUZZ_FIELD(parse_load_confirmation, encode_load_confirmation),
        COCONUT_FUZZ_FIELD(parse_load_reference, encode_load_reference),
        COCONUT_FUZZ_FIELD(parse_clinic_authorization, encode_clinic_authorization),
        COCONUT_FUZZ_FIELD(parse_challenge_request, encode_challenge_request),
        COCONUT_FUZZ_FIELD(parse_challenge_answer, encode_challenge_answer),
        COCONUT_FUZZ_FIELD(parse_record_digest, encode_record_digest),
        [](std::string_view t) {
            round_trip(t, parse_processing_code, [](ProcessingCode c) { return std::string(processing_code_text(c)); });
        },
        COCONUT_FUZZ_FIELD(parse_original_data, encode_original_data),
        COCONUT_FUZZ_FIELD(parse_hotlist_position, encode_hotlist_position),
        COCONUT_FUZZ_FIELD(parse_hotlist_chunk, encode_hotlist_chunk),
        COCONUT_FUZZ_FIELD(parse_net_amount, encode_net_amount),
        [](std::string_view t) {
            const auto type = request_type_of(t);
            if (type && request_mti(*type, t[3] == '1') != t) fuzz::fail(target, "request_type_of and request_mti disagree");
        },
        COCONUT_FUZZ_FIELD(parse_medical_refund, encode_medical_refund),
        COCONUT_FUZZ_FIELD(parse_cash_refund, encode_cash_refund),
    };
    return all;
}

void write_seeds(const std::filesystem::path& dir) {
    const CardAsn asn{0x46, 0x01, 0x00, 0x00, 0x00, 0x00, 0x12, 0x34, 0x56, 0x78};
    const CardTerminalId terminal{0x46, 0x01, 0x00, 0x00, 0x00, 0x01};
    const crypto::CardDateTime when{{0x20, 0x26, 0x11, 0x26}, {0x13, 0x05, 0x00}};
    PurseTransaction purchase;
    purchase.asn = asn;
    purchase.type = crypto::type_ep_purchase;
    purchase.balance_before_fen = 5000;
    purchase.offline_atc = 7;
    purchase.terminal_serial = 42;
    purchase.terminal_id = terminal;
    purchase.when = when;
    purchase.tac = {0xDE, 0xAD, 0xBE, 0xEF};
    PurseTransaction transit = purchase;
    transit.type = crypto::type_capp_purchase;
    transit.transit_record = {0x00, 0x0C, 0x00, 0x03, 0x01, 0x02};
    LoadRequestData load;
    load.asn = asn;
    load.old_balance_fen = 100;
    load.online_atc = 3;
    load.terminal_id = terminal;
    load.when = when;
    load.mac1 = {1, 2, 3, 4};
    load.card_random = {5, 6, 7, 8};
    load.key_version = 1;
    LoadConfirmationData confirmation;
    confirmation.asn = asn;
    confirmation.old_balance_fen = 100;
    confirmation.online_atc = 3;
    confirmation.terminal_id = terminal;
    confirmation.when = when;
    confirmation.tac = {9, 8, 7, 6};
    HostChallenge challenge{};
    for (std::size_t i = 0; i < challenge.size(); ++i) challenge[i] = static_cast<std::uint8_t>(0xA0 + i);
    ClinicAuthorizationData clinic{asn, {1, 2, 3, 4, 5, 6, 7, 8}, challenge, std::nullopt};
    HotlistChunk chunk{1234, true, {{true, asn}, {false, asn}}};

    const auto seed = [&](std::uint8_t parser, std::string_view name, const std::string& text) {
        std::string input(1, static_cast<char>(parser));
        input += text;
        fuzz::write_seed(dir, name, fuzz::bytes_of(input));
    };
    seed(0, "purchase", encode_purse_transaction(purchase));
    seed(0, "purchase-transit", encode_purse_transaction(transit));
    seed(1, "load-request", encode_load_request(load));
    seed(2, "load-answer", encode_load_answer({asn, 3, {1, 2, 3, 4}}));
    seed(3, "load-confirmation", encode_load_confirmation(confirmation));
    seed(4, "load-reference", encode_load_reference({asn, 3}));
    seed(5, "clinic-authorization", encode_clinic_authorization(clinic));
    seed(6, "challenge-request", encode_challenge_request({asn}));
    seed(7, "challenge-answer", encode_challenge_answer({asn, challenge}));
    seed(8, "record-digest", encode_record_digest(purchase_digest(purchase, 250)));
    seed(9, "processing-code", std::string(processing_code_text(ProcessingCode::medical_purchase)));
    seed(10, "original-data", encode_original_data({"0200", 17, "1126130500"}));
    seed(11, "hotlist-position", encode_hotlist_position({1234, 2}));
    seed(12, "hotlist-chunk", encode_hotlist_chunk(chunk));
    seed(13, "net-amount", encode_net_amount(-12345));
    seed(14, "mti-repeat", request_mti(MessageType::upload, true));
    MedicalRefundData medical{asn, {1, 31}, {'C', 'L', 'I', 'N', 'I', 'C', '0', '1'}};
    seed(15, "medical-refund", encode_medical_refund(medical));
    seed(16, "cash-refund", encode_cash_refund({asn, {terminal, 42}}));
    LoadRequestData refund_credit = load;
    refund_credit.refund_of = PurchaseReference{terminal, 42};
    seed(1, "refund-credit", encode_load_request(refund_credit));
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    fuzz::write_seeds_if_requested(write_seeds);
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    fuzz::Reader input({data, size});
    const auto& all = checks();
    const std::size_t parser = input.byte() % all.size();
    all[parser](input.text(input.size()));
    return 0;
}
