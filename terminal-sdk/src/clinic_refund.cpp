// The same-day refund of a completed clinic payment (clinic_refund.hpp, clearing/ISO8583.md §4.10).
#include <coconut/core/assert.hpp>
#include <coconut/iso8583/profile.hpp>
#include <coconut/sdk/clearing_client.hpp>
#include <coconut/sdk/terminal.hpp>

#include "flow_support.hpp"

#include <fmt/format.h>

#include <algorithm>

namespace coconut::sdk {
namespace {

bool printable(std::string_view text) {
    return std::all_of(text.begin(), text.end(), [](char c) { return c >= 0x20 && c <= 0x7E; });
}

bool in_range(std::uint32_t n) { return n >= 1 && n <= iso8583::batch_number_max; }

}  // namespace

std::string refund_reference_problem(const ClinicRefundReference& r) {
    if (r.hold.has_value() != (r.medical_fen > 0))
        return r.hold ? "the medical hold is named without the amount its completion posted"
                      : "a medical amount without the hold it was paid by";
    if (r.hold) {
        if (r.hold->terminal_id.size() != 8 || !printable(r.hold->terminal_id))
            return fmt::format("the hold's terminal id '{}' is not 8 printable characters (field 41)", r.hold->terminal_id);
        if (!in_range(r.hold->batch_number)) return fmt::format("the hold's batch number {} is not 1-999999", r.hold->batch_number);
        if (!in_range(r.hold->stan)) return fmt::format("the hold's STAN {} is not 1-999999", r.hold->stan);
    }
    if (r.purchase.has_value() != (r.purse_fen > 0))
        return r.purchase ? "the purse purchase is named without its amount"
                          : "a purse amount without the purchase (DF06, DF05) it was paid by";
    if (r.purchase && !digits_to_bcd(bcd_to_digits(r.purchase->terminal_id)))
        return "the purchase's PSAM terminal id (DF06) is not 12 decimal digits";
    if (!r.hold && !r.purchase && r.cash_fen == 0) return "nothing to refund: no medical, purse or cash part";
    return {};
}

namespace detail {

FlowError refund_declined(std::string_view part, const std::string& code) {
    FlowError error = declined(part, code);
    if (code == "41" || code == "62") {
        error = FlowError{FlowErrorCode::blocked_card,
                          fmt::format("{}: the clearing answered {}: the card is {}", part, code,
                                      code == "41" ? "reported lost (or replaced)" : "blocked"),
                          0, code == "41" ? BlockReason::lost : BlockReason::issuer};
        error.response_code = code;
        return error;
    }
    std::string_view why;
    if (code == "25") why = "no such payment to refund (not booked yet, not completed, or not this card's or this clinic's)";
    if (code == "13") why = "the amount is not the payment's (a payment is refunded whole)";
    if (code == "12")
        why = "the payment was not booked today (a refund is made on the day of the payment), or the clearing does not take this refund";
    if (code == "94") why = "this payment was refunded already";
    if (code == "58") why = "this terminal may not refund it (not the paid clinic's, or suspended)";
    if (!why.empty()) error.message += fmt::format(": {}", why);
    return error;
}

FlowError card_cannot_take(const CardError& e, std::uint32_t amount_fen) {
    return FlowError{FlowErrorCode::card_full,
                     fmt::format("the card cannot take {} fen (its balance would pass the purse maximum: {}): refund the purse part "
                                 "in cash instead; nothing was sent",
                                 amount_fen, e.message),
                     e.sw};
}

}  // namespace detail

using detail::from_host;
using detail::online_draft;
using detail::refund_declined;

Result<LoadOutcome, FlowError> Terminal::refund_to_card(const ClinicRefundReference& reference, ClearingClient& host) {
    COCONUT_ASSERT(reference.purchase && reference.purse_fen > 0);
    auto session = open_card();
    if (!session) return Unexpected{session.error()};
    if (session->info.asn != reference.asn)
        return Unexpected{FlowError{FlowErrorCode::wrong_card,
                                    fmt::format("the card in the reader is {}, the payment was made with {}: nothing was refunded",
                                                session->info.asn_digits(), bcd_to_digits(reference.asn))}};
    if (auto ok = detail::check_card(session->info, hotlist_, clock_()); !ok) return Unexpected{ok.error()};
    if (auto recovered = recover_card(session->info); !recovered) return Unexpected{recovered.error()};
    // Naming the purchase makes the credit a refund (200000, funded by the clinic's payable); the funding argument
    // only tells 210000 from 280000 and is not used for it.
    return credit_online(session->info, reference.purse_fen, host, LoadFunding::cash, reference.purchase);
}

namespace {

// The request record of a refund that carries no card cryptogram (medical, cash): the card and amount of
// the reference, this terminal's batch, the time it goes out.
TransactionRecord refund_draft(const Asn& asn, std::uint32_t amount_fen, const ClearingClient& host,
                               std::chrono::system_clock::time_point now) {
    PurseInfo card;
    card.asn = asn;
    return online_draft(card, TerminalId{}, amount_fen, LinkKind::load_confirmation, 0, host.batch().batch_number, now);
}

// The purse part handed out in cash: 00 first (a purchase refunded by a credit already answers 94).
Result<Ok, FlowError> purse_in_cash(const ClinicRefundReference& reference, ClearingClient& host, std::chrono::system_clock::time_point now,
                                    ClinicRefundOutcome& outcome) {
    auto answer = host.refund_in_cash(refund_draft(reference.asn, reference.purse_fen, host, now), *reference.purchase);
    if (!answer) return Unexpected{from_host(answer.error(), false)};
    outcome.cash_refund_code = *answer;
    if (*answer != "00") return Unexpected{refund_declined("purse part refunded in cash (0220 200000)", *answer)};
    outcome.purse_fen = reference.purse_fen;
    outcome.cash_fen += reference.purse_fen;
    return Ok{};
}

Result<Ok, FlowError> medical_back(const ClinicRefundReference& reference, ClearingClient& host, std::chrono::system_clock::time_point now,
                                   ClinicRefundOutcome& outcome) {
    auto answer = host.refund_medical(refund_draft(reference.asn, reference.medical_fen, host, now), *reference.hold);
    if (!answer) {
        FlowError error = from_host(answer.error(), false);
        if (answer.error().code == ClearingErrorCode::batch_error) error.code = FlowErrorCode::storage_error;
        return Unexpected{error};
    }
    outcome.medical_code = *answer;
    if (*answer != "00") return Unexpected{refund_declined("medical refund (0200 200030)", *answer)};
    outcome.medical_fen = reference.medical_fen;
    return Ok{};
}

}  // namespace

Result<ClinicRefundOutcome, FlowError> Terminal::clinic_refund(const ClinicRefundRequest& request, ClearingClient& host) {
    const ClinicRefundReference& reference = request.reference;
    COCONUT_ASSERT(refund_reference_problem(reference).empty(), "the caller checks the reference (refund_reference_problem)");
    const bool purse_part = reference.purchase && !request.skip_purse;
    const bool medical_part = reference.hold && !request.skip_medical;
    // The payment's purse purchase (0320) and completion (0220) must be booked before they can be refunded.
    if ((purse_part || medical_part) && queue_.size() > 0) {
        if (auto uploaded = host.upload(queue_); !uploaded) {
            FlowError error = from_host(uploaded.error(), false);
            error.message = "the queue could not be uploaded before the refund, nothing was refunded: " + error.message;
            return Unexpected{error};
        }
    }
    ClinicRefundOutcome outcome;
    outcome.purse = request.purse;
    if (purse_part && request.purse == PurseRefund::card) {
        auto credited = refund_to_card(reference, host);
        if (!credited) return Unexpected{credited.error()};
        outcome.purse_fen = reference.purse_fen;
        outcome.credit = std::move(credited).value();
    } else if (purse_part) {
        if (auto paid = purse_in_cash(reference, host, clock_(), outcome); !paid) return Unexpected{paid.error()};
    }
    if (medical_part) {
        if (auto back = medical_back(reference, host, clock_(), outcome); !back) {
            if (!purse_part) return Unexpected{back.error()};
            // The purse part stands (the card holds the credit, or the cash was handed out): partial.
            outcome.incomplete = back.error();
            outcome.incomplete->message += "; the purse part is refunded: refund the medical part alone (skip the purse part)";
        }
    }
    outcome.cash_fen += reference.cash_fen;
    return outcome;
}

}  // namespace coconut::sdk
