// The registry validator (registry_validator.hpp): what `admin load`, the clerk API and `coconut
// terminal register` accept and refuse, and the words of each refusal.
#include <coconut/clearing/registry_validator.hpp>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

using namespace coconut;
using namespace coconut::clearing;
using nlohmann::json;

namespace {

// Numbers unsigned, as a parser reads them from text.
const json participant = {{"id", 1001u}, {"name", "Haikou Bus"}, {"kind", "bus"}, {"bank_account", "6222000011112222"}};
const json terminal = {{"terminal_id", "BUS00001"}, {"psam_terminal_id", "460100000001"}, {"participant_id", 1001u}};
const json card = {{"asn", "46010000000012345678"}, {"issuer_id", "4600000000000001"}, {"purse_balance_fen", 5000u}};

json with(json entry, const char* key, json value) {
    entry[key] = std::move(value);
    return entry;
}

json without(json entry, const char* key) {
    entry.erase(key);
    return entry;
}

template <class Read>
std::string problem(Read read, const json& entry) {
    auto r = read(entry);
    REQUIRE_FALSE(r.ok());
    return r.error();
}

}  // namespace

TEST_CASE("registry validator: valid entries become records") {
    auto p = read_participant(participant);
    REQUIRE(p.ok());
    CHECK(p->id == 1001);
    CHECK(p->kind == "bus");
    CHECK(p->fee_rate_bp == 0);
    CHECK_FALSE(participant_problem(*p));
    auto t = read_terminal(terminal);
    REQUIRE(t.ok());
    CHECK(t->terminal_id == "BUS00001");
    CHECK(bcd_to_digits(t->psam_terminal_id) == "460100000001");
    CHECK(t->merchant_id.empty());
    CHECK(t->status == TerminalStatus::active);
    CHECK_FALSE(terminal_problem(*t));
    auto c = read_card(card);
    REQUIRE(c.ok());
    CHECK(bcd_to_digits(c->asn) == "46010000000012345678");
    CHECK(c->status == CardStatus::active);
    CHECK(c->opening_balance_fen == 5000);
    CHECK(c->shadow_balance_fen == 5000);
    CHECK(c->medical_opening_fen == 0);
    CHECK_FALSE(card_problem(*c));
}

TEST_CASE("registry validator: each refusal names the field") {
    CHECK(problem(read_participant, json::array()) == "not an object");
    CHECK(problem(read_participant, with(participant, "colour", "red")) == "unknown field \"colour\"");
    CHECK(problem(read_participant, with(participant, "id", 0)) == "\"id\" must be an integer 1..99999999999");
    CHECK(problem(read_participant, with(participant, "id", 100'000'000'000ULL)) == "\"id\" must be an integer 1..99999999999");
    CHECK(problem(read_participant, without(participant, "name")) == "missing \"name\"");
    const std::string name_rule = "\"name\" must be UTF-8 text of 1 to 128 bytes without control characters";
    CHECK(problem(read_participant, with(participant, "name", "")) == name_rule);
    CHECK(problem(read_participant, with(participant, "name", 5)) == name_rule);
    CHECK(problem(read_participant, with(participant, "name", "Bus\nLine")) == name_rule);
    CHECK(problem(read_participant, with(participant, "name", "Bus\u0085")) == name_rule);            // a C1 control
    CHECK(problem(read_participant, with(participant, "name", std::string(129, 'a'))) == name_rule);  // 129 bytes
    // A name as registered in Chinese (3 bytes a character) is a name.
    auto chinese = read_participant(with(participant, "name", "海口市公共交通集团 Haikou Public Transit Group"));
    REQUIRE(chinese.ok());
    CHECK(chinese->name == "海口市公共交通集团 Haikou Public Transit Group");
    CHECK_FALSE(participant_problem(*chinese));
    CHECK(problem(read_participant, with(participant, "kind", "taxi")) == "\"kind\" must be bus, shop, clinic or counter");
    CHECK(problem(read_participant, with(participant, "bank_account", "")) ==
          "\"bank_account\" must be printable ASCII text of 1 to 34 characters");
    CHECK(problem(read_participant, with(participant, "fee_rate_bp", 10'001u)) == "\"fee_rate_bp\" must be an integer 0..10000");
    CHECK(problem(read_participant, with(participant, "fee_rate_bp", -1)) == "\"fee_rate_bp\" must be an integer 0..10000");

    CHECK(problem(read_terminal, with(terminal, "terminal_id", "BUS0001")) == "\"terminal_id\" must be 8 characters (field 41)");
    CHECK(problem(read_terminal, with(terminal, "terminal_id", "BUS0001\n")) == "\"terminal_id\" must be 8 characters (field 41)");
    CHECK(problem(read_terminal, with(terminal, "psam_terminal_id", "46010000000A")) == "\"psam_terminal_id\" must be 12 digits");
    CHECK(problem(read_terminal, without(terminal, "participant_id")) == "missing \"participant_id\"");
    CHECK(problem(read_terminal, with(terminal, "merchant_id", "0123456789012345")) ==
          "\"merchant_id\" must be printable ASCII text of at most 15 characters");

    CHECK(problem(read_card, with(card, "asn", "123")) == "\"asn\" must be 20 digits");
    CHECK(problem(read_card, with(card, "issuer_id", "zz")) == "\"issuer_id\" must be 16 hex digits");
    CHECK(problem(read_card, with(card, "status", "stolen")) == "\"status\" must be active, lost or blocked");
    CHECK(problem(read_card, with(card, "purse_balance_fen", -5)) == "\"purse_balance_fen\" must be an integer 0..100000000");
    CHECK(problem(read_card, with(card, "tac_key_version", 256u)) == "\"tac_key_version\" must be an integer 0..255");
}

TEST_CASE("registry validator: records made otherwise are checked by the same rules") {
    Participant p{1001, "Haikou Bus", "ferry", "6222000011112222", 0};
    CHECK(participant_problem(p) == "\"kind\" must be bus, shop, clinic or counter");
    p.kind = "shop";
    CHECK_FALSE(participant_problem(p));
    p.kind = "counter";  // a service desk or card seller (return and refund, tourist cards)
    CHECK_FALSE(participant_problem(p));
    CardRecord returned;
    returned.status = CardStatus::returned;  // only a counter's return sets it, never a file or a record made otherwise
    CHECK(card_problem(returned) == "\"status\" must be active, lost or blocked");
    TerminalRecord t;
    t.terminal_id = "SHORT";
    CHECK(terminal_problem(t) == "\"terminal_id\" must be 8 characters (field 41)");
    t.terminal_id = "SHOP0001";
    t.psam_terminal_id[0] = 0xA0;
    CHECK(terminal_problem(t) == "\"psam_terminal_id\" must be 12 digits");
    CardRecord c;
    c.opening_balance_fen = opening_balance_fen_max + 1;
    CHECK(card_problem(c) == "\"purse_balance_fen\" must be an integer 0..100000000");
}
