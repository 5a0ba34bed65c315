// The account plan (docs/DESIGN.md §8.4).
#include <coconut/clearing/plan.hpp>
#include <coconut/core/assert.hpp>
#include <coconut/crypto/card_crypto.hpp>

#include <algorithm>
#include <string>

namespace coconut::clearing {
namespace {

ledger::Id derive(std::string_view domain, ByteView material) {
    Bytes input(domain.begin(), domain.end());
    append(input, material);
    return ledger::derive_id(input);
}

// `n` (≤ 999,999) as 6 ASCII digits, as fields 11 and 60 carry it.
std::string six_digits(std::uint32_t n) {
    const std::string text = std::to_string(n);
    return std::string(6 - text.size(), '0') + text;
}

}  // namespace

ledger::Id purse_shadow_account(const Asn& asn) { return derive("purse", asn); }
ledger::Id medical_account(const Asn& asn) { return derive("medical", asn); }

ledger::Id carried_holding_account(const Asn& new_asn) { return derive("carried", new_asn); }
ledger::Id carry_transfer(const Asn& lost_asn) { return derive("carry", lost_asn); }
ledger::Id medical_carry_transfer(const Asn& lost_asn) { return derive("medical-carry", lost_asn); }
ledger::Id medical_carry_rest_transfer(const Asn& lost_asn) { return derive("medical-carry-rest", lost_asn); }

ledger::Id late_repair_transfer(const Asn& lost_asn, std::uint64_t shadow_debits_posted) {
    Bytes material(lost_asn.begin(), lost_asn.end());
    append_be(material, shadow_debits_posted, 8);
    return derive("late-repair", material);
}

ledger::Id payable_account(std::uint64_t participant_id, std::uint32_t ledger_number) {
    Bytes material = be_bytes(participant_id, 8);
    append_be(material, ledger_number, 4);
    return derive("payable", material);
}

ledger::Id offline_purchase_transfer(const Asn& asn, const TerminalId& psam_terminal_id, std::uint32_t terminal_serial) {
    Bytes material(asn.begin(), asn.end());
    append(material, psam_terminal_id);
    append_be(material, terminal_serial, 4);
    return derive("purchase", material);
}

ledger::Id review_transfer(const ledger::Id& canonical_id, std::string_view amount4, std::string_view field62) {
    Bytes material = be_bytes(canonical_id.high, 8);
    append_be(material, canonical_id.low, 8);
    append_be(material, amount4.size(), 2);
    material.insert(material.end(), amount4.begin(), amount4.end());
    material.insert(material.end(), field62.begin(), field62.end());
    return derive("review", material);
}

ledger::Id opening_balance_transfer(const Asn& asn, std::uint32_t ledger_number) {
    Bytes material(asn.begin(), asn.end());
    append_be(material, ledger_number, 4);
    return derive("opening", material);
}

ledger::Id adjustment_transfer(std::uint64_t proposal_number) {
    Bytes material;
    append_be(material, proposal_number, 8);
    return derive("adjustment", material);
}

ledger::Id online_load_transfer(const Asn& asn, std::uint16_t online_atc, std::uint8_t attempt) {
    // Attempt 0 is exactly docs/DESIGN.md §4.3's derive_id(ASN ‖ online ATC ‖ 02), recomputable by anyone.
    Bytes material(asn.begin(), asn.end());
    append_be(material, online_atc, 2);
    material.push_back(crypto::type_ep_load);
    if (attempt > 0) material.push_back(attempt);
    return ledger::derive_id(material);
}

ledger::Id clinic_hold_transfer(std::string_view terminal_id, std::uint32_t batch_number, std::uint32_t stan) {
    COCONUT_ASSERT(batch_number <= 999'999 && stan <= 999'999, "fields 60 and 11 carry 6 digits");
    std::string material(terminal_id);
    material += six_digits(batch_number);
    material += six_digits(stan);
    return ledger::derive_id(ByteView(reinterpret_cast<const std::uint8_t*>(material.data()), material.size()));
}

ledger::Id medical_refund_transfer(const ledger::Id& hold_id) {
    static constexpr std::string_view domain = "medical-refund";
    Bytes material(domain.begin(), domain.end());
    append_be(material, hold_id.high, 8);
    append_be(material, hold_id.low, 8);
    return ledger::derive_id(material);
}

ledger::Id resolving_transfer(const ledger::Id& pending_id, Resolution resolution) {
    Bytes material = be_bytes(pending_id.high, 8);
    append_be(material, pending_id.low, 8);
    material.push_back(static_cast<std::uint8_t>(resolution));
    return ledger::derive_id(material);
}

ledger::Id refund_payable_account(const Asn& asn) { return derive("refund", asn); }
ledger::Id card_deposit_account(const Asn& asn) { return derive("deposit", asn); }

ledger::Id card_money_transfer(const Asn& asn, std::uint16_t code, std::uint8_t part) {
    Bytes material(asn.begin(), asn.end());
    append_be(material, code, 2);
    material.push_back(part);
    return derive("card-money", material);
}

ledger::Id refund_payout_transfer(std::uint32_t cycle, const Asn& asn) {
    Bytes material = be_bytes(cycle, 4);
    append(material, asn);
    return derive("settlement-refund", material);
}

ledger::Id card_user_data(const Asn& asn, std::uint32_t cycle) {
    Bytes b = be_bytes(cycle, 4);
    append(b, asn);
    b.resize(16, 0);
    return ledger::Id{read_be(ByteView(b).first(8)), read_be(ByteView(b).subspan(8, 8))};
}

Asn card_of_user_data(const ledger::Id& user_data_128) {
    Bytes b = be_bytes(user_data_128.high, 8);
    append_be(b, user_data_128.low, 8);
    Asn asn{};
    std::copy(b.begin() + 4, b.begin() + 4 + static_cast<std::ptrdiff_t>(asn.size()), asn.begin());
    return asn;
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

namespace {

ledger::Account account(ledger::Id id, std::uint32_t ledger_number, std::uint16_t code,
                        std::uint16_t flags = ledger::account_flags::history) {
    ledger::Account a;
    a.id = id;
    a.ledger = ledger_number;
    a.code = code;
    a.flags = flags;
    return a;
}

}  // namespace

std::vector<ledger::Account> fixed_accounts() {
    return {account(purse_float_account, ledgers::purse, account_codes::purse_float),
            account(medical_fund_account, ledgers::medical, account_codes::medical_fund),
            account(purse_fee_income_account, ledgers::purse, account_codes::fee_income),
            account(medical_fee_income_account, ledgers::medical, account_codes::fee_income),
            account(purse_suspense_account, ledgers::purse, account_codes::suspense),
            account(medical_suspense_account, ledgers::medical, account_codes::suspense),
            account(purse_review_claims_account, ledgers::purse, account_codes::review_claims),
            account(lost_late_spending_account, ledgers::purse, account_codes::lost_late_spending)};
}

ledger::Account carried_holding_opening(const Asn& new_asn) {
    return account(carried_holding_account(new_asn), ledgers::purse, account_codes::carried_holding,
                   ledger::account_flags::history | ledger::account_flags::debits_must_not_exceed_credits);
}

void append_card_money_accounts(std::vector<ledger::Event>& events, const Asn& asn) {
    constexpr std::uint16_t owed = ledger::account_flags::history | ledger::account_flags::debits_must_not_exceed_credits;
    events.emplace_back(account(refund_payable_account(asn), ledgers::purse, account_codes::refund_payable, owed));
    events.emplace_back(account(card_deposit_account(asn), ledgers::purse, account_codes::card_deposit, owed));
}

void append_participant_opening(std::vector<ledger::Event>& events, std::uint64_t participant_id) {
    for (std::uint32_t l : {ledgers::purse, ledgers::medical}) {
        events.emplace_back(account(payable_account(participant_id, l), l, account_codes::participant_payable));
    }
}

void append_card_opening(std::vector<ledger::Event>& events, const Asn& asn, std::uint32_t purse_opening_fen,
                         std::uint32_t medical_opening_fen) {
    events.emplace_back(account(purse_shadow_account(asn), ledgers::purse, account_codes::card_purse_shadow));
    events.emplace_back(account(medical_account(asn), ledgers::medical, account_codes::card_medical,
                                ledger::account_flags::history | ledger::account_flags::debits_must_not_exceed_credits));
    auto opening = [&](std::uint32_t l, const ledger::Id& from, const ledger::Id& to, std::uint32_t fen) {
        if (fen == 0) return;
        ledger::Transfer t;
        t.id = opening_balance_transfer(asn, l);
        t.debit_account_id = from;
        t.credit_account_id = to;
        t.amount = fen;
        t.ledger = l;
        t.code = transfer_codes::opening_balance;
        events.emplace_back(t);
    };
    opening(ledgers::purse, purse_float_account, purse_shadow_account(asn), purse_opening_fen);
    opening(ledgers::medical, medical_fund_account, medical_account(asn), medical_opening_fen);
}

}  // namespace coconut::clearing
