// The account plan (DESIGN.md §8).
#include <coconut/clearing/clearing.hpp>

#include <algorithm>
#include <cassert>
#include <string>

namespace coconut::clearing {
namespace {

ledger::Id derive(std::string_view domain, ByteView material) {
    Bytes input(domain.begin(), domain.end());
    append(input, material);
    return ledger::derive_id(input);
}

}  // namespace

ledger::Id purse_shadow_account(const Asn& asn) { return derive("purse", asn); }
ledger::Id medical_account(const Asn& asn) { return derive("medical", asn); }

ledger::Id payable_account(std::uint64_t participant_id, std::uint32_t ledger_number) {
    Bytes material = be_bytes(participant_id, 8);
    append_be(material, ledger_number, 4);
    return derive("payable", material);
}

ledger::Id offline_purchase_transfer(const Asn& asn, std::uint16_t offline_atc, std::uint8_t type) {
    // Exactly DESIGN.md §4 / ISO8583.md §4: derive_id(ASN ‖ offline ATC ‖ type), no domain prefix, so
    // a terminal or a tool can recompute it from the record alone.
    Bytes material(asn.begin(), asn.end());
    append_be(material, offline_atc, 2);
    material.push_back(type);
    return ledger::derive_id(material);
}

ledger::Id opening_balance_transfer(const Asn& asn, std::uint32_t ledger_number) {
    Bytes material(asn.begin(), asn.end());
    append_be(material, ledger_number, 4);
    return derive("opening", material);
}

ledger::Id make_place(const Place& place) {
    Bytes b(place.terminal_id.begin(), place.terminal_id.end());
    b.push_back(place.type);
    append_be(b, place.line, 2);
    append_be(b, place.station, 2);
    append(b, place.local_time_bcd);
    return ledger::Id{read_be(ByteView(b).first(8)), read_be(ByteView(b).subspan(8, 8))};
}

Place parse_place(const ledger::Id& user_data_128) {
    Bytes b = be_bytes(user_data_128.high, 8);
    append_be(b, user_data_128.low, 8);
    Place place;
    std::copy(b.begin(), b.begin() + 6, place.terminal_id.begin());
    place.type = b[6];
    place.line = read_be16(ByteView(b).subspan(7, 2));
    place.station = read_be16(ByteView(b).subspan(9, 2));
    std::copy(b.begin() + 11, b.end(), place.local_time_bcd.begin());
    return place;
}

std::vector<ledger::Account> fixed_accounts() {
    auto account = [](ledger::Id id, std::uint32_t ledger_number, std::uint16_t code) {
        ledger::Account a;
        a.id = id;
        a.ledger = ledger_number;
        a.code = code;
        a.flags = ledger::account_flags::history;
        return a;
    };
    return {account(purse_float_account, ledgers::purse, account_codes::purse_float),
            account(medical_fund_account, ledgers::medical, account_codes::medical_fund),
            account(purse_fee_income_account, ledgers::purse, account_codes::fee_income),
            account(medical_fee_income_account, ledgers::medical, account_codes::fee_income),
            account(purse_suspense_account, ledgers::purse, account_codes::suspense),
            account(medical_suspense_account, ledgers::medical, account_codes::suspense)};
}

}  // namespace coconut::clearing
