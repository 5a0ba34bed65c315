/// @file
/// The same-day refund of a completed clinic payment (clearing/ISO8583.md §4.10): what the receipt of the
/// payment keeps to name its parts (ClinicRefundReference), what Terminal::clinic_refund is asked
/// (ClinicRefundRequest); what it did is a ClinicRefundOutcome (terminal.hpp).
///
/// A payment is refunded whole, on the day it was booked, each part where it came from:
///   medical part  0200 3 = 200030 → 0210: the clinic's medical payable back to the card's medical account,
///                 booked at once; repeated on no answer (the clearing books a hold's refund once)
///   purse part    PurseRefund::card — an online credit to the card: the online load's flow (INITIALIZE FOR
///                 LOAD, 0200 with MAC1 and DF13 naming the purchase, the HSM's MAC2 in the 0210, CREDIT FOR
///                 LOAD, 0220 with the card's TAC; 0400 / 0420 and recovery of a torn credit exactly as a
///                 load) with processing code 200000, funded by the clinic's purse payable;
///                 PurseRefund::cash — a 0220 3 = 200000 naming the purchase, answered 00 before the clinic
///                 hands the cash out (no money moves at the clearing, nothing is counted in the batch)
///   cash part     what the patient paid in cash is handed back in cash (nothing is sent)
/// Batch totals (0500) as the clearing counts them: a medical refund answered 00 and a confirmed refund credit
/// are credits (74 / 86), a refund credit reversed is a credit reversal (75 / 87), a cash refund is not counted.
#pragma once

#include <coconut/core/identifiers.hpp>
#include <coconut/iso8583/card_data.hpp>
#include <coconut/sdk/queue.hpp>

#include <cstdint>
#include <optional>
#include <string>

namespace coconut::sdk {

/// The medical hold of a clinic payment as its 0100 named it: the hold's ledger id is derive_id(41 ‖ batch ‖
/// STAN) (ISO8583.md §4.1).
struct ClinicHoldReference {
    std::string terminal_id;         ///< field 41 of the 0100, 8 characters
    std::uint32_t batch_number = 0;  ///< field 60 of the 0100
    std::uint32_t stan = 0;          ///< field 11 of the 0100
    friend bool operator==(const ClinicHoldReference&, const ClinicHoldReference&) = default;
};

/// What a clinic's receipt (and its HIS) keeps so that the payment can be refunded the same day: the card,
/// each part's amount and what names it at the clearing. Produced by Terminal::clinic_payment
/// (ClinicOutcome::refund_reference).
struct ClinicRefundReference {
    Asn asn{};                                ///< the card paid with
    std::optional<ClinicHoldReference> hold;  ///< the completed medical hold; none when nothing was held
    std::uint32_t medical_fen = 0;            ///< the amount the completion posted
    /// The purse part's purchase: its PSAM terminal id (DF06) and terminal serial (DF05), as in its 0320.
    std::optional<iso8583::PurchaseReference> purchase;
    std::uint32_t purse_fen = 0;
    std::uint32_t cash_fen = 0;  ///< taken in cash at the counter: handed back in cash
    friend bool operator==(const ClinicRefundReference&, const ClinicRefundReference&) = default;
};

/// Why a reference cannot be refunded as given (empty: it can): a hold without an amount or an amount without
/// a hold, a field 41 not of 8 printable characters, a batch or STAN outside 1–999999, the same for the purse
/// part, or nothing to refund at all.
std::string refund_reference_problem(const ClinicRefundReference& reference);

/// How the purse part goes back: to the card (an online credit, the default) or in cash at the counter.
enum class PurseRefund : std::uint8_t { card, cash };

/// What Terminal::clinic_refund is asked to refund.
struct ClinicRefundRequest {
    ClinicRefundReference reference;
    PurseRefund purse = PurseRefund::card;
    /// Parts already refunded by an earlier run that stopped half-way (ClinicRefundOutcome::incomplete): they
    /// are not sent again.
    bool skip_medical = false;
    bool skip_purse = false;
};

}  // namespace coconut::sdk
