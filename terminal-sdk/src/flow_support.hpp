// Private to the SDK's flows (terminal.cpp, clinic_refund.cpp): how card, queue and clearing errors become
// a FlowError, the card checks every flow makes, and the record of an online request before it goes out.
#pragma once

#include <coconut/sdk/clearing_client.hpp>
#include <coconut/sdk/terminal.hpp>

#include <chrono>
#include <string>
#include <string_view>

namespace coconut::sdk {

struct Terminal::Session {
    PurseInfo info;
};

}  // namespace coconut::sdk

namespace coconut::sdk::detail {

// `status_code` names the device: card_error for the customer's card, psam_error for the PSAM. Only the
// customer's card leaving is card_removed (the operator's cue to run recover with that card).
FlowError from_card(const CardError& e, FlowErrorCode status_code = FlowErrorCode::card_error);
FlowError from_queue(const QueueError& e);
// No answer from the clearing (or no link): `reversed` when the flow reversed what the host may have booked.
FlowError from_host(const ClearingError& e, bool reversed);
// The clearing answered `code` (not 00) to `what`.
FlowError declined(std::string_view what, const std::string& code);
// The clearing refused a refund (ISO8583.md §4.10) with `code`: what it means for the clinic — 25 not
// found, 13 amount, 12 not today, 94 refunded already, 58 terminal; 41 / 62 the card (blocked_card).
FlowError refund_declined(std::string_view part, const std::string& code);
// INITIALIZE FOR LOAD of a refund credit refused with 6985: the card cannot take `amount_fen`.
FlowError card_cannot_take(const CardError& e, std::uint32_t amount_fen);
// The hotlist and the card's validity dates at `now`.
Result<Ok, FlowError> check_card(const PurseInfo& info, const Hotlist& hotlist, std::chrono::system_clock::time_point now);
// The record of an online request (0200 / 0100) before it goes out: the card, the terminal, the card
// date/time and the request's STAN, field 7 and batch.
TransactionRecord online_draft(const PurseInfo& info, const TerminalId& terminal_id, std::uint32_t amount_fen, LinkKind link,
                               std::uint32_t stan, std::uint32_t batch_number, std::chrono::system_clock::time_point now);

}  // namespace coconut::sdk::detail
