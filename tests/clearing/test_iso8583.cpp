// ISO 8583:1987 codec: byte-exact messages, round trips and every parse error (clearing/ISO8583.md).
#include <coconut/iso8583/card_data.hpp>
#include <coconut/iso8583/iso8583.hpp>

#include <doctest/doctest.h>

#include <string>

using namespace coconut;
using namespace coconut::iso8583;

namespace {

// 0800 echo test (network management code 301): fields 7, 11, 70 → the canonical bitmaps
// 8220000000000000 / 0400000000000000.
const char* const echo_hex =
    "30383030"              // MTI "0800"
    "8220000000000000"      // primary: bit 1 (secondary follows), 7, 11
    "0400000000000000"      // secondary: bit 70
    "31313236313934313030"  // 7  "1126194100"
    "303030303031"          // 11 "000001"
    "333031";               // 70 "301"

// 0200 with an LLVAR PAN, fixed n fields, an ans terminal id and an LLLVAR private field 62.
const char* const purchase_hex =
    "30323030"          // MTI "0200"
    "7020000000800004"  // bits 2, 3, 4, 11, 41, 62
    "3136"
    "36323331323334353637383930313233"  // 2  LL "16" "6231234567890123"
    "303030303030"                      // 3  "000000"
    "303030303030303031303030"          // 4  "000000001000"
    "303030313233"                      // 11 "000123"
    "5430303030303031"                  // 41 "T0000001"
    "303130"
    "39463336303230303146";  // 62 LLL "010" "9F3602001F"

Message echo_message() {
    Message m("0800");
    m.set(7, "1126194100");
    m.set(11, "000001");
    m.set(70, "301");
    return m;
}

Message purchase_message() {
    Message m("0200");
    m.set(2, "6231234567890123");
    m.set_number(3, 0, 6);
    m.set_number(4, 1000, 12);
    m.set_number(11, 123, 6);
    m.set(41, "T0000001");
    m.set(62, "9F3602001F");
    return m;
}

ErrorCode parse_error(const Bytes& raw, const Dictionary& dictionary = iso87_dictionary()) {
    auto parsed = parse(raw, dictionary);
    REQUIRE_FALSE(parsed.ok());
    return parsed.error().code;
}

Error encode_error(const Message& m, const Dictionary& dictionary = iso87_dictionary()) {
    auto encoded = encode(m, dictionary);
    REQUIRE_FALSE(encoded.ok());
    return encoded.error();
}

// A valid value for every field of the 1987 dictionary, at its maximum length.
std::string sample_value(const FieldSpec& spec) {
    std::string value(spec.length_max, '7');
    if (spec.format == Format::xn) value[0] = 'D';
    if (spec.format == Format::z) value[4] = '=';
    if (spec.format == Format::an) value[1] = ' ';
    if (spec.format == Format::ans) value[2] = '~';
    if (spec.format == Format::b) value[3] = '\x00';
    return value;
}

}  // namespace

TEST_CASE("an 0800 echo encodes to the canonical bytes with a secondary bitmap") {
    auto encoded = encode(echo_message());
    REQUIRE(encoded.ok());
    CHECK(to_hex(*encoded) == to_hex(hex(echo_hex)));
}

TEST_CASE("an 0800 echo parses field by field") {
    auto parsed = parse(hex(echo_hex));
    REQUIRE(parsed.ok());
    CHECK(parsed->mti() == "0800");
    CHECK(parsed->secondary_bitmap);
    CHECK(parsed->get(7) == "1126194100");
    CHECK(parsed->get_number(11) == 1u);
    CHECK(parsed->get(70) == "301");
    CHECK_FALSE(parsed->has(2));
    CHECK(*parsed == echo_message());
}

TEST_CASE("fields set in any order, overwritten or cleared encode in field order, same bytes as built in order") {
    Message in_order("0800");
    in_order.set(7, "1126194100");
    in_order.set_number(11, 1, 6);
    in_order.set(70, "301");
    Message shuffled("0800");
    shuffled.set(70, "999");
    shuffled.set(41, "TERM0001");
    shuffled.set(7, "0000000000");
    shuffled.set_number(11, 1, 6);
    shuffled.set(7, "1126194100");  // overwrite
    shuffled.set(70, "301");        // overwrite
    shuffled.clear(41);
    shuffled.clear(3);  // absent: nothing happens
    CHECK(shuffled == in_order);
    REQUIRE(shuffled.fields().size() == 3);
    CHECK(shuffled.fields()[0].first == 7);
    CHECK(shuffled.fields()[1].first == 11);
    CHECK(shuffled.fields()[2].first == 70);
    CHECK(encode(shuffled).value() == encode(in_order).value());
    CHECK(to_hex(encode(shuffled).value()) == to_hex(hex(echo_hex)));
    CHECK_FALSE(shuffled.has(41));
    CHECK(shuffled.get(41) == std::nullopt);
}

TEST_CASE("an 0200 with LLVAR and LLLVAR fields encodes byte for byte and parses back") {
    auto encoded = encode(purchase_message());
    REQUIRE(encoded.ok());
    CHECK(to_hex(*encoded) == to_hex(hex(purchase_hex)));
    auto parsed = parse(*encoded, coconut_dictionary());
    REQUIRE(parsed.ok());
    CHECK_FALSE(parsed->secondary_bitmap);
    CHECK(parsed->get(2) == "6231234567890123");
    CHECK(parsed->get_number(4) == 1000u);
    CHECK(parsed->get(62) == "9F3602001F");
    CHECK(*parsed == purchase_message());
}

TEST_CASE("binary b fields carry raw bytes") {
    Message m("0200");
    m.set_number(3, 0, 6);
    m.set(64, ByteView(hex("0102030405060708")));
    auto encoded = encode(m);
    REQUIRE(encoded.ok());
    CHECK(to_hex(*encoded) ==
          "30323030"
          "2000000000000001"
          "303030303030"
          "0102030405060708");
    auto parsed = parse(*encoded);
    REQUIRE(parsed.ok());
    CHECK(parsed->get_bytes(64) == hex("0102030405060708"));
}

TEST_CASE("every field of the 1987 dictionary round-trips at its maximum length") {
    const Dictionary& dictionary = iso87_dictionary();
    Message m("0200");
    int defined = 0;
    for (int field = field_first; field <= field_last; ++field) {
        const FieldSpec& spec = dictionary[static_cast<std::size_t>(field)];
        if (spec.format == Format::none) continue;
        ++defined;
        Message single("0100");
        single.set(field, sample_value(spec));
        auto one = encode(single);
        REQUIRE_MESSAGE(one.ok(), "field ", field);
        auto back = parse(*one);
        REQUIRE_MESSAGE(back.ok(), "field ", field);
        CHECK_MESSAGE(*back == single, "field ", field);
        if (spec.length_max <= 120) m.set(field, sample_value(spec));  // stay under message_size_max
    }
    CHECK(defined == 126);  // 2–128 without 65
    auto encoded = encode(m);
    REQUIRE(encoded.ok());
    auto parsed = parse(*encoded);
    REQUIRE(parsed.ok());
    CHECK(*parsed == m);
    CHECK(encode(*parsed).value() == *encoded);
}

TEST_CASE("variable fields round-trip at length zero") {
    Message m("0100");
    m.set(2, "");
    m.set(62, "");
    auto encoded = encode(m);
    REQUIRE(encoded.ok());
    CHECK(to_hex(*encoded) ==
          "30313030"
          "4000000000000004"
          "3030"
          "303030");
    auto parsed = parse(*encoded);
    REQUIRE(parsed.ok());
    CHECK(parsed->get(2) == "");
}

TEST_CASE("a secondary bitmap that is present but empty is accepted and reproduced") {
    const Bytes raw =
        hex("30383030"
            "8220000000000000"
            "0000000000000000"
            "31313236313934313030"
            "303030303031");
    auto parsed = parse(raw);
    REQUIRE(parsed.ok());
    CHECK(parsed->secondary_bitmap);
    CHECK_FALSE(parsed->has(70));
    CHECK(encode(*parsed).value() == raw);
    Message without = *parsed;
    without.secondary_bitmap = false;
    CHECK(to_hex(encode(without).value()) ==
          "30383030"
          "0220000000000000"
          "31313236313934313030"
          "303030303031");
}

TEST_CASE("every strict prefix of a valid message is truncated") {
    for (const char* text : {echo_hex, purchase_hex}) {
        const Bytes raw = hex(text);
        for (std::size_t size = 0; size < raw.size(); ++size) {
            auto parsed = parse(ByteView(raw).first(size));
            REQUIRE_FALSE(parsed.ok());
            CHECK_MESSAGE(parsed.error().code == ErrorCode::truncated, "prefix ", size);
        }
    }
}

TEST_CASE("truncated reports the field that is cut") {
    Bytes raw = hex(purchase_hex);
    raw.resize(raw.size() - 1);
    auto parsed = parse(raw);
    REQUIRE_FALSE(parsed.ok());
    CHECK(parsed.error().code == ErrorCode::truncated);
    CHECK(parsed.error().field == 62);
    CHECK(describe(parsed.error()) == "truncated in field 62 at offset 65");
}

TEST_CASE("a message longer than message_size_max is oversize, at the limit it is judged on content") {
    Bytes raw = hex(echo_hex);
    raw.resize(message_size_max + 1, '0');
    CHECK(parse_error(raw) == ErrorCode::oversize);
    raw.resize(message_size_max);
    CHECK(parse_error(raw) == ErrorCode::trailing_data);

    Message big("0200");
    for (int field = 105; field <= 127; ++field) big.set(field, std::string(999, 'A'));
    CHECK(encode_error(big).code == ErrorCode::oversize);
}

TEST_CASE("bad MTI: not four digits, or not version 1987") {
    CHECK(parse_error(hex("30324130"
                          "2000000000000000"
                          "303030303030")) == ErrorCode::bad_mti);  // "02A0"
    CHECK(parse_error(hex("31323030"
                          "2000000000000000"
                          "303030303030")) == ErrorCode::bad_mti);  // "1200"
    Message m = echo_message();
    m.set_mti("800");
    CHECK(encode_error(m).code == ErrorCode::bad_mti);
}

TEST_CASE("bad bitmap: no data element, or the tertiary-bitmap bit 65") {
    CHECK(parse_error(hex("30383030"
                          "0000000000000000")) == ErrorCode::bad_bitmap);
    CHECK(parse_error(hex("30383030"
                          "8000000000000000"
                          "0000000000000000")) == ErrorCode::bad_bitmap);
    auto bit65 =
        parse(hex("30383030"
                  "8220000000000000"
                  "8000000000000000"
                  "31313236313934313030"
                  "303030303031"
                  "30"));
    REQUIRE_FALSE(bit65.ok());
    CHECK(bit65.error().code == ErrorCode::bad_bitmap);
    CHECK(bit65.error().field == 65);
    CHECK(encode_error(Message("0800")).code == ErrorCode::bad_bitmap);
}

TEST_CASE("bad length: LL prefix not digits, or above the field maximum") {
    CHECK(parse_error(hex("30323030"
                          "4000000000000000"
                          "3141"
                          "30")) == ErrorCode::bad_length);  // LL "1A"
    // Field 2 allows 19 digits; "20" is refused before the value is read.
    auto too_long =
        parse(hex("30323030"
                  "4000000000000000"
                  "3230" +
                  std::string(40, '3')));
    REQUIRE_FALSE(too_long.ok());
    CHECK(too_long.error().code == ErrorCode::bad_length);
    CHECK(too_long.error().field == 2);
    // Field 36 (LLL, max 104): "105".
    CHECK(parse_error(hex("30323030"
                          "0000000010000000"
                          "313035" +
                          std::string(210, '3'))) == ErrorCode::bad_length);
    // At the maximum it parses.
    CHECK(parse(hex("30323030"
                    "4000000000000000"
                    "3139" +
                    std::string(38, '3')))
              .ok());
}

TEST_CASE("bad length on encode: a fixed field of the wrong size, a variable field above its maximum") {
    Message m = purchase_message();
    m.set(4, "1000");
    CHECK(encode_error(m).code == ErrorCode::bad_length);
    CHECK(encode_error(m).field == 4);
    m = purchase_message();
    m.set(2, std::string(20, '1'));
    CHECK(encode_error(m).code == ErrorCode::bad_length);
}

TEST_CASE("a numeric field with a non-digit is not_numeric, in parse and in encode") {
    std::string text = purchase_hex;
    // field 4 "000000001000" → "00000000100A"
    const std::string good = "303030303030303031303030";
    text.replace(text.find(good), good.size(), "303030303030303031303041");
    auto parsed = parse(hex(text));
    REQUIRE_FALSE(parsed.ok());
    CHECK(parsed.error().code == ErrorCode::not_numeric);
    CHECK(parsed.error().field == 4);

    Message m = purchase_message();
    m.set(11, "00012 ");
    CHECK(encode_error(m).code == ErrorCode::not_numeric);
    // The LLVAR n field (PAN) is checked too.
    m = purchase_message();
    m.set(2, "62312345678901X3");
    CHECK(encode_error(m).code == ErrorCode::not_numeric);
    // xn: sign then digits.
    m = Message("0500");
    m.set(97, "C0000000000001000");
    CHECK(encode(m).ok());
    m.set(97, "X0000000000001000");
    CHECK(encode_error(m).code == ErrorCode::bad_character);
    m.set(97, "C00000000000010.0");
    CHECK(encode_error(m).code == ErrorCode::not_numeric);
}

TEST_CASE("characters outside an / ans / z are bad_character") {
    Message m = purchase_message();
    m.set(41, std::string("T000\x01"
                          "001",
                          8));
    CHECK(encode_error(m).code == ErrorCode::bad_character);
    m = purchase_message();
    m.set(39, "0!");
    CHECK(encode_error(m).code == ErrorCode::bad_character);
    m = Message("0200");
    m.set(35, "6231234567890123=2912");
    CHECK(encode(m).ok());
    m.set(35, "6231234567890123^2912");
    CHECK(encode_error(m).code == ErrorCode::bad_character);

    std::string text = purchase_hex;
    text.replace(text.find("5430303030303031"), 16, "54303030303030FF");
    CHECK(parse_error(hex(text)) == ErrorCode::bad_character);
}

TEST_CASE("a field outside the profile is unknown_field; the 1987 dictionary knows it") {
    Message m = purchase_message();
    m.set(43, std::string(40, 'X'));
    CHECK(encode(m).ok());
    auto profile = encode_error(m, coconut_dictionary());
    CHECK(profile.code == ErrorCode::unknown_field);
    CHECK(profile.field == 43);
    const Bytes raw = encode(m).value();
    CHECK(parse(raw).ok());
    auto parsed = parse(raw, coconut_dictionary());
    REQUIRE_FALSE(parsed.ok());
    CHECK(parsed.error().code == ErrorCode::unknown_field);
    CHECK(parsed.error().field == 43);
}

TEST_CASE("bytes after the last announced field are trailing_data") {
    Bytes raw = hex(echo_hex);
    raw.push_back('0');
    CHECK(parse_error(raw) == ErrorCode::trailing_data);
}

TEST_CASE("frame: a 2-byte big-endian length header") {
    const Bytes message = hex(echo_hex);
    auto framed = frame(message);
    REQUIRE(framed.ok());
    CHECK(to_hex(ByteView(*framed).first(2)) == "0027");
    CHECK(framed->size() == 2 + 39);
    CHECK(frame(Bytes{}).error().code == ErrorCode::bad_length);
    CHECK(frame(Bytes(message_size_max + 1, '0')).error().code == ErrorCode::oversize);
    CHECK(frame(Bytes(message_size_max, '0')).ok());
}

TEST_CASE("frame_size: needs more, complete, back-to-back frames, zero and oversize headers") {
    const Bytes one = frame(hex(echo_hex)).value();
    CHECK(frame_size(Bytes{}).value() == 0u);
    CHECK(frame_size(ByteView(one).first(1)).value() == 0u);
    CHECK(frame_size(ByteView(one).first(one.size() - 1)).value() == 0u);
    CHECK(frame_size(one).value() == one.size());
    const Bytes two = concat(one, frame(hex(purchase_hex)).value());
    CHECK(frame_size(two).value() == one.size());
    auto second = parse(ByteView(two).subspan(one.size() + frame_header_size));
    REQUIRE(second.ok());
    CHECK(second->mti() == "0200");
    CHECK(frame_size(hex("0000")).error().code == ErrorCode::bad_length);
    CHECK(frame_size(hex("2001")).error().code == ErrorCode::oversize);  // 8193
    CHECK(frame_size(hex("2000")).value() == 0u);                        // 8192: wait for the bytes
}

TEST_CASE("response codes are named and written as two digits") {
    CHECK(response_code_text(ResponseCode::approved) == "00");
    CHECK(response_code_text(ResponseCode::format_error) == "30");
    CHECK(response_code_text(ResponseCode::insufficient_funds) == "51");
    CHECK(response_code_text(ResponseCode::duplicate_transmission) == "94");
    CHECK(response_code_text(ResponseCode::system_malfunction) == "96");
    CHECK(parse_response_code("05") == ResponseCode::do_not_honour);
    CHECK(parse_response_code("91") == ResponseCode::issuer_inoperative);
    CHECK_FALSE(parse_response_code("99").has_value());
    CHECK_FALSE(parse_response_code("0").has_value());
    for (const char* code : {"00", "05", "12", "13", "14", "30", "51", "54", "55", "57", "58", "61", "91", "94", "96"}) {
        auto named = parse_response_code(code);
        REQUIRE_MESSAGE(named.has_value(), code);
        CHECK(response_code_text(*named) == code);
    }
}

TEST_CASE("response MTI: function digit plus one, repeats answered like the original") {
    CHECK(response_mti("0100") == "0110");
    CHECK(response_mti("0200") == "0210");
    CHECK(response_mti("0220") == "0230");
    CHECK(response_mti("0320") == "0330");
    CHECK(response_mti("0400") == "0410");
    CHECK(response_mti("0401") == "0410");
    CHECK(response_mti("0420") == "0430");
    CHECK(response_mti("0500") == "0510");
    CHECK(response_mti("0800") == "0810");
    CHECK_FALSE(response_mti("0810").has_value());
    CHECK_FALSE(response_mti("1200").has_value());
}

TEST_CASE("digits: zero-padded, refusing values that do not fit") {
    CHECK(digits(1000, 12) == "000000001000");
    CHECK(digits(999999, 6) == "999999");
    CHECK_FALSE(digits(1000000, 6).has_value());
    Message m("0200");
    m.set(4, "000000001000");
    CHECK(m.get_number(4) == 1000u);
    m.set(4, "00000000100A");
    CHECK_FALSE(m.get_number(4).has_value());
    CHECK_FALSE(m.get_number(5).has_value());
}

// ---- field 62 of the online messages (ISO8583.md §3.1, §4) ----

TEST_CASE("the clinic proof input is SHA-256 over the host challenge, 41, 11, 7, 4, 60 and the ASN (ISO8583.md §4.4 vector)") {
    using namespace coconut::iso8583;
    HostChallenge challenge{};
    for (std::size_t i = 0; i < challenge.size(); ++i) challenge[i] = static_cast<std::uint8_t>(i + 1);
    const CardAsn asn = {0x00, 0x00, 0x62, 0x31, 0x23, 0x45, 0x67, 0x89, 0x01, 0x23};
    const auto input = clinic_proof_input(challenge, {"CLINIC01", "000031", "1126023000", "000000025000", "000001"}, asn);
    CHECK(coconut::to_hex(input) == "6E2FA354B9B6F97B");
    // Field 60 is covered: another batch (another hold id) needs another proof.
    CHECK(coconut::to_hex(clinic_proof_input(challenge, {"CLINIC01", "000031", "1126023000", "000000025000", "000002"}, asn)) ==
          "3F468FD3279AB061");
    CHECK(clinic_proof_input(challenge, {"CLINIC01", "000031", "1126023000", "000000025001", "000001"}, asn) != input);
    HostChallenge other = challenge;
    other[15] ^= 1;
    CHECK(clinic_proof_input(other, {"CLINIC01", "000031", "1126023000", "000000025000", "000001"}, asn) != input);
}

TEST_CASE("the record digest covers what the TAC covers and the TAC, not the claims DF03 / DF04 / DF0C (ISO8583.md §4.8 vector)") {
    using namespace coconut::iso8583;
    PurseTransaction t;
    t.asn = {0x46, 0x01, 0x00, 0x00, 0x00, 0x00, 0x12, 0x34, 0x56, 0x78};
    t.type = 0x09;
    t.terminal_id = {0x46, 0x01, 0x00, 0x00, 0x00, 0x01};
    t.terminal_serial = 1;
    t.when.date = {0x20, 0x26, 0x11, 0x26};
    t.when.time = {0x10, 0x30, 0x00};
    t.tac = {1, 2, 3, 4};
    t.balance_before_fen = 5000;
    t.offline_atc = 7;
    const RecordDigest digest = purchase_digest(t, 200);
    CHECK(coconut::to_hex(digest) == "F66719E8ECAF72C2");
    PurseTransaction claims = t;
    claims.balance_before_fen = 1;
    claims.offline_atc = 0xFFFF;
    claims.transit_record = {0, 1, 0, 2};
    CHECK(purchase_digest(claims, 200) == digest);
    PurseTransaction serial = t;
    serial.terminal_serial = 2;
    CHECK(purchase_digest(serial, 200) != digest);
    CHECK(purchase_digest(t, 201) != digest);
    auto parsed = parse_record_digest(encode_record_digest(digest));
    REQUIRE(parsed.ok());
    CHECK(*parsed == digest);
    CHECK_FALSE(parse_record_digest("DF0402001F").ok());
}

TEST_CASE("DF11, the clinic visit reference, in a 0320 and a 0100: optional, 12 BCD digits, a claim outside the digest (ISO8583.md §4.9)") {
    using namespace coconut::iso8583;
    PurseTransaction t;
    t.asn = {0x46, 0x01, 0x00, 0x00, 0x00, 0x00, 0x12, 0x34, 0x56, 0x78};
    t.type = 0x06;
    t.terminal_id = {0x46, 0x01, 0x00, 0x00, 0x00, 0x01};
    t.when.date = {0x20, 0x26, 0x11, 0x26};
    t.when.time = {0x10, 0x30, 0x00};
    const std::string plain = encode_purse_transaction(t);
    CHECK_FALSE(parse_purse_transaction(plain)->visit.has_value());
    PurseTransaction part = t;
    part.visit = VisitReference{1, 31};
    const std::string text = encode_purse_transaction(part);
    CHECK(text == plain + "DF1106000001000031");  // the vector of ISO8583.md §4.9
    auto parsed = parse_purse_transaction(text);
    REQUIRE(parsed.ok());
    CHECK(parsed->visit == std::optional<VisitReference>(VisitReference{1, 31}));
    CHECK(purchase_digest(part, 100) == purchase_digest(t, 100));
    CHECK(parse_purse_transaction(plain + "DF110600000100003A").error() ==
          "DF11 (visit reference): not 12 BCD digits of a batch and a STAN");
    CHECK(parse_purse_transaction(plain + "DF1106000000000031").error() ==
          "DF11 (visit reference): not 12 BCD digits of a batch and a STAN");
    CHECK(parse_purse_transaction(plain + "DF11050000010000").error() == "DF11 (visit reference): 5 bytes, expected 6");
    ClinicAuthorizationData clinic{t.asn, {1, 2, 3, 4, 5, 6, 7, 8}, {}, VisitReference{999999, 999999}};
    CHECK(parse_clinic_authorization(encode_clinic_authorization(clinic))->visit == clinic.visit);
}

TEST_CASE("load request, answer, confirmation, reference and clinic data round-trip; a missing or short tag is named") {
    using namespace coconut::iso8583;
    LoadRequestData request;
    request.asn = {0x00, 0x00, 0x62, 0x31, 0x23, 0x45, 0x67, 0x89, 0x01, 0x23};
    request.old_balance_fen = 5000;
    request.online_atc = 7;
    request.terminal_id = {0x46, 0x01, 0x00, 0x00, 0x00, 0x01};
    request.when.date = {0x20, 0x26, 0x11, 0x26};
    request.when.time = {0x10, 0x30, 0x00};
    request.mac1 = {1, 2, 3, 4};
    request.card_random = {5, 6, 7, 8};
    request.key_version = 1;
    const std::string text = encode_load_request(request);
    auto parsed = parse_load_request(text);
    REQUIRE(parsed.ok());
    CHECK(parsed->mac1 == request.mac1);
    CHECK(parsed->card_random == request.card_random);
    CHECK(parsed->key_version == std::optional<std::uint8_t>(1));
    CHECK(encode_load_request(*parsed) == text);
    CHECK(parse_load_request(text.substr(0, text.size() - 8) + "DF0D020101").error() == "DF0D (key version): 2 bytes, expected 1");
    CHECK(parse_load_request(text.substr(0, text.size() - 8)).ok());  // DF0D is optional
    CHECK(parse_load_answer(encode_load_answer({request.asn, 7, {9, 9, 9, 9}}))->mac2 == coconut::crypto::Mac4{9, 9, 9, 9});
    LoadConfirmationData confirmation;
    confirmation.asn = request.asn;
    confirmation.tac = {0xAA, 0xBB, 0xCC, 0xDD};
    confirmation.when = request.when;
    CHECK(parse_load_confirmation(encode_load_confirmation(confirmation))->tac == confirmation.tac);
    CHECK(parse_load_confirmation(encode_load_reference({request.asn, 7})).error() == "field 62 lacks DF02 (transaction type)");
    CHECK(parse_load_reference(encode_load_reference({request.asn, 7}))->online_atc == 7);
    ClinicAuthorizationData clinic{request.asn, {1, 2, 3, 4, 5, 6, 7, 8}, {9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9}, std::nullopt};
    CHECK(parse_clinic_authorization(encode_clinic_authorization(clinic))->cryptogram == clinic.cryptogram);
    CHECK(parse_clinic_authorization(encode_clinic_authorization(clinic))->challenge == clinic.challenge);
    CHECK(parse_clinic_authorization("DF010A00006231234567890123DF0B080102030405060708").error() == "field 62 lacks DF0E (host challenge)");
    CHECK(parse_clinic_authorization("DF010A00006231234567890123").error() == "field 62 lacks DF0B (INTERNAL AUTHENTICATE response)");
}

// ---- the profile shared by the SDK and the daemon (profile.hpp) ----

#include <coconut/iso8583/profile.hpp>

TEST_CASE("profile: processing and network codes, field 2, 60 and 90 — what one side writes the other reads") {
    using namespace coconut::iso8583;
    CHECK(processing_code_text(ProcessingCode::purse_purchase) == "000000");
    CHECK(processing_code_text(ProcessingCode::medical_purchase) == "003000");
    CHECK(processing_code_text(ProcessingCode::purse_load) == "210000");
    CHECK(parse_processing_code("210000") == ProcessingCode::purse_load);
    CHECK_FALSE(parse_processing_code("999999").has_value());
    const Message sign_on = network_request(NetworkCode::card_challenge, 42, "CLINIC01");
    CHECK(sign_on.mti() == "0800");
    CHECK(sign_on.get(70) == "201");
    CHECK(sign_on.get(11) == "000042");
    CHECK(network_code_of(sign_on) == NetworkCode::card_challenge);
    Message unknown = sign_on;
    unknown.set(70, "777");
    CHECK_FALSE(network_code_of(unknown).has_value());
    CHECK(card_number({0x46, 0x01, 0x00, 0x00, 0x00, 0x00, 0x12, 0x34, 0x56, 0x78}) == "0000000012345678");
    Message batch("0200");
    batch.set(60, batch_field(7));
    CHECK(batch.get(60) == "000007");
    CHECK(batch_of(batch) == 7u);
    batch.set(60, "00A007");
    CHECK_FALSE(batch_of(batch).has_value());
    const std::string field90 = encode_original_data({"0100", 31, "1126023000"});
    CHECK(field90 ==
          "0100"
          "000031"
          "1126023000"
          "0000000000000000000000");
    CHECK(field90.size() == 42);
    auto original = parse_original_data(field90);
    REQUIRE(original.has_value());
    CHECK(original->stan == 31);
    CHECK(original->mti == "0100");
    CHECK_FALSE(parse_original_data(field90.substr(1)).has_value());
}

TEST_CASE("profile: hotlist position and chunk, 0500 totals and field 97 round-trip; bad text is named") {
    using namespace coconut::iso8583;
    CHECK(encode_hotlist_position({12, 3}) == "000000120003");
    CHECK(parse_hotlist_position("000000120003")->chunk_index == 3u);
    CHECK_FALSE(parse_hotlist_position("00000012003").has_value());
    HotlistChunk chunk{5, true, {{true, {0x46, 0x01, 0, 0, 0, 0, 0, 0, 0, 0x11}}, {false, {0x46, 0x01, 0, 0, 0, 0, 0, 0, 0, 0x22}}}};
    const std::string field63 = encode_hotlist_chunk(chunk);
    CHECK(field63 == "000000051+46010000000000000011-46010000000000000022");
    CHECK(parse_hotlist_chunk(field63).value() == chunk);
    CHECK(parse_hotlist_chunk("000000051*46010000000000000011").error() == "field 63 entry 1: not + or -");
    CHECK(parse_hotlist_chunk("0000000x1").error() == "field 63 version is not 8 digits");
    CHECK(parse_hotlist_chunk("000000052").error() == "field 63 more-flag is not 0 or 1");
    Message reconcile("0500");
    BatchTotalsFields totals;
    totals.debits_count = 3;
    totals.debits_fen = 900;
    totals.credit_reversals_count = 1;
    totals.credit_reversals_fen = 2000;
    set_batch_totals(reconcile, totals);
    CHECK(reconcile.get(76) == "0000000003");
    CHECK(reconcile.get(88) == "0000000000000900");
    CHECK(batch_totals_of(reconcile) == totals);
    reconcile.clear(88);
    CHECK_FALSE(batch_totals_of(reconcile).has_value());
    CHECK(encode_net_amount(-1000) == "C0000000000001000");
    CHECK(parse_net_amount("D0000000000000900") == 900);
    CHECK(parse_net_amount(encode_net_amount(-1000)) == -1000);
    CHECK_FALSE(parse_net_amount("X0000000000000900").has_value());
}

TEST_CASE("profile: a response echoes the identifying fields and carries the code") {
    using namespace coconut::iso8583;
    Message request("0320");
    request.set(2, "0000000012345678");
    request.set(11, "000007");
    request.set(41, "BUS00001");
    request.set(62, "DF0102AAAA");
    const Message response = make_response(request, ResponseCode::duplicate_transmission);
    CHECK(response.mti() == "0330");
    CHECK(response.get(11) == "000007");
    CHECK(response.get(41) == "BUS00001");
    CHECK_FALSE(response.has(62));
    CHECK(response_code_of(response) == ResponseCode::duplicate_transmission);
}

TEST_CASE("profile: each request type has one MTI, repeats map to it, responses to none; a transaction request carries §4.1's fields") {
    using namespace coconut::iso8583;
    for (MessageType type : {MessageType::authorization, MessageType::financial, MessageType::advice, MessageType::upload,
                             MessageType::reversal, MessageType::reversal_advice, MessageType::reconciliation, MessageType::network}) {
        CHECK(request_type_of(request_mti(type)) == type);
        CHECK(request_type_of(request_mti(type, true)) == type);
        CHECK(response_mti(request_mti(type)).has_value());
        CHECK_FALSE(request_type_of(*response_mti(request_mti(type))).has_value());
    }
    CHECK(request_mti(MessageType::upload) == "0320");
    CHECK(request_mti(MessageType::advice, true) == "0221");
    CHECK_FALSE(request_type_of("0120").has_value());
    CHECK_FALSE(request_type_of("0322").has_value());
    CHECK_FALSE(request_type_of("032").has_value());
    TransactionFields f;
    f.card_number = "0000000012345678";
    f.amount_fen = 250;
    f.stan = 9;
    f.terminal_id = "BUS00001";
    f.batch_number = 3;
    f.local_time = "103000";
    f.local_date = "1126";
    const Message upload = transaction_request(MessageType::upload, f);
    CHECK(upload.mti() == "0320");
    CHECK(upload.get(3) == "000000");
    CHECK(upload.get(4) == "000000000250");
    CHECK(upload.get(11) == "000009");
    CHECK(upload.get(25) == "08");
    CHECK(upload.get(60) == "000003");
    CHECK_FALSE(upload.has(7));
    f.processing = ProcessingCode::medical_purchase;
    f.transmission_time = "1126023000";
    const Message hold = transaction_request(MessageType::authorization, f);
    CHECK(hold.mti() == "0100");
    CHECK(hold.get(7) == "1126023000");
    CHECK_FALSE(hold.has(25));
    CHECK(processing_code_of(hold) == ProcessingCode::medical_purchase);
    CHECK(encode(hold, coconut_dictionary()).ok());
}
