// `check`: the same-day refunds against the payments they refund (check_refunds.hpp).
#include "check_refunds.hpp"

#include "registry_internal.hpp"

namespace coconut::clearing::detail {

namespace {

std::string card_name(const Asn& asn) { return "card " + bcd_to_digits(asn); }

// A refund credit (code 22) of `asn`: from the payable its purchase paid, back to the card that paid it.
Status check_purchase_refund(const ledger::Ledger& ledger, const Registry& registry, const Asn& asn, const ledger::Transfer& credit,
                             CheckReport& report) {
    const std::string name = card_name(asn) + ": refund credit " + ledger::to_string(credit.id);
    COCONUT_TRY(payable, ledger.lookup_account(credit.debit_account_id), as_failure);
    if (!payable || payable->ledger != ledgers::purse || payable->code != account_codes::participant_payable) {
        report.problems.push_back(name + " does not debit a participant's purse payable");
        return Ok{};
    }
    COCONUT_TRY(purchase_id, registry.visit(credit.id, Registry::VisitSide::credit), as_failure);
    if (!purchase_id) {
        report.problems.push_back(name + " names no purchase (visits table)");
        return Ok{};
    }
    COCONUT_TRY(purchase, ledger.lookup_transfer(*purchase_id), as_failure);
    if (!purchase || purchase->code != transfer_codes::offline_purchase || purchase->debit_account_id != purse_shadow_account(asn) ||
        purchase->credit_account_id != credit.debit_account_id || purchase->amount != credit.amount) {
        report.problems.push_back(name + " does not give back purchase " + ledger::to_string(*purchase_id) +
                                  ": not a purchase of this card paid to the payable it debits, for the same amount");
    }
    return Ok{};
}

// A completed hold's medical refund, if there is one: from the medical payable the hold credited to its card.
Status check_medical_refund(const ledger::Ledger& ledger, const ledger::Id& hold_id, const HoldRecord& hold, CheckReport& report) {
    COCONUT_TRY(refund, ledger.lookup_transfer(medical_refund_transfer(hold_id)), as_failure);
    if (!refund) return Ok{};
    COCONUT_TRY(pending, ledger.lookup_transfer(hold_id), as_failure);
    COCONUT_TRY(completion, ledger.lookup_transfer(resolving_transfer(hold_id, Resolution::post)), as_failure);
    if (!pending || !completion || refund->code != transfer_codes::medical_refund || refund->ledger != ledgers::medical ||
        refund->debit_account_id != pending->credit_account_id || refund->credit_account_id != medical_account(hold.asn) ||
        refund->amount != completion->amount || refund->user_data_128 != hold_id) {
        report.problems.push_back(
            card_name(hold.asn) + ": medical refund " + ledger::to_string(refund->id) + " of hold " + ledger::to_string(hold_id) +
            " does not give the completed amount back from the clinic's medical payable to the card's medical account");
    }
    return Ok{};
}

}  // namespace

Status check_refunds(const ledger::Ledger& ledger, const Registry& registry, CheckReport& report) {
    COCONUT_TRY(attempts, registry.load_attempts(), as_failure);
    for (const auto& a : attempts) {
        COCONUT_TRY(credit, ledger.lookup_transfer(online_load_transfer(a.asn, a.online_atc, a.attempt.attempt)), as_failure);
        if (credit && credit->code == transfer_codes::purchase_refund) {
            if (auto s = check_purchase_refund(ledger, registry, a.asn, *credit, report); !s) return s;
        }
    }
    COCONUT_TRY(holds, registry.holds(), as_failure);
    for (const auto& [id, hold] : holds) {
        if (auto s = check_medical_refund(ledger, id, hold, report); !s) return s;
    }
    return Ok{};
}

}  // namespace coconut::clearing::detail
