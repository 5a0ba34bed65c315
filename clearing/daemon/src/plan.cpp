// The account plan (DESIGN.md §8).
#include <coconut/clearing/clearing.hpp>

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
