// `check`'s part on same-day refunds (ISO8583.md §4.10), private to coconut::clearing_registry.
#pragma once

#include <coconut/clearing/check.hpp>
#include <coconut/clearing/registry.hpp>

namespace coconut::clearing::detail {

// Every refund moves money back only between the participant that was paid and the card that paid:
// - a purchase refund credit (code 22, the pending transfer of a load attempt) debits the purse payable its
//   purchase credited and credits the purse shadow that purchase debited, for the purchase's amount, and the
//   registry names that purchase (visits, VisitSide::credit);
// - a completed hold's medical refund (code 21, medical_refund_transfer(hold)) debits the medical payable the
//   hold credited and credits the hold's card's medical account, for the completed amount, naming the hold.
// Each breach is a line in report.problems.
Status check_refunds(const ledger::Ledger& ledger, const Registry& registry, CheckReport& report);

}  // namespace coconut::clearing::detail
