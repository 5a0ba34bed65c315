// Service-counter flows: APPLICATION BLOCK with the HSM's maintenance MAC, and the return of a card (its
// whole balance taken by a TAC-proven purchase, then the block). docs/CARD-SPEC.md §2 "Application block".
#include <coconut/sdk/terminal.hpp>

#include <fmt/format.h>

namespace coconut::sdk {
namespace {

using apdu::Command;

constexpr std::uint16_t counter_sw_file_invalidated = 0x6283;
constexpr std::uint16_t counter_sw_mac_refused = 0x6988;
constexpr std::uint16_t counter_sw_permanently_blocked = 0x9303;

FlowError counter_card_failure(const CardError& e) {
    if (e.transport) return FlowError{e.card_removed() ? FlowErrorCode::card_removed : FlowErrorCode::card_error, e.message};
    if (e.sw == counter_sw_permanently_blocked)
        return FlowError{FlowErrorCode::card_error,
                         "the card answered 9303: its purse is blocked for good (permanent APPLICATION BLOCK) and cannot be unblocked",
                         e.sw};
    if (e.sw == counter_sw_mac_refused)
        return FlowError{FlowErrorCode::card_error,
                         "the card refused the HSM's maintenance MAC (6988): its DAMK does not derive from the HSM's maintenance master "
                         "(another issuer or key?); the card was not blocked",
                         e.sw};
    return FlowError{FlowErrorCode::card_error, e.message, e.sw};
}

// Powers the card and selects its purse, blocked or not.
Result<SelectedPurse, FlowError> counter_open_purse(Reader& reader, CardChannel& channel) {
    auto atr = reader.connect();
    if (!atr) {
        const bool absent = atr.error().code == ReaderErrorCode::no_card;
        return Unexpected{FlowError{absent ? FlowErrorCode::no_card : FlowErrorCode::card_error, atr.error().message}};
    }
    PurseApp purse(channel);
    auto selected = purse.select_maybe_blocked();
    if (!selected) return Unexpected{counter_card_failure(selected.error())};
    return *selected;
}

// GET CHALLENGE → the HSM's MAC over the header and challenge → 84 1E, on a card whose purse is selected.
Result<Ok, FlowError> counter_block_selected(CardChannel& channel, const PurseInfo& card, const MaintenanceMacProvider& hsm_mac,
                                             bool permanent) {
    PurseApp purse(channel);
    auto challenge = purse.get_challenge();
    if (!challenge) return Unexpected{counter_card_failure(challenge.error())};
    const MaintenanceMacRequest request{card.issuer_id, card.asn, *challenge, crypto::application_block_header(permanent)};
    auto mac = hsm_mac(request);
    if (!mac)
        return Unexpected{FlowError{FlowErrorCode::hsm_error, fmt::format("no maintenance MAC from the HSM: {} (card {} not blocked)",
                                                                          mac.error(), card.asn_digits())}};
    if (auto blocked = purse.application_block(permanent, *mac); !blocked) return Unexpected{counter_card_failure(blocked.error())};
    return Ok{};
}

CardError blocked_select_error(std::uint16_t sw, std::string_view what) {
    return CardError{std::nullopt, sw, fmt::format("{}: card answered {:04X} ({})", what, sw, apdu::describe(sw))};
}

}  // namespace

CardResult<SelectedPurse> PurseApp::select_maybe_blocked() {
    auto response = channel_.transmit(Command{0x00, 0xA4, 0x04, 0x00, Bytes(cos::purse_aid.begin(), cos::purse_aid.end()), 256});
    if (!response) return Unexpected{CardError{response.error(), 0, response.error().message}};
    const bool blocked = response->sw == counter_sw_file_invalidated;
    if (!response->ok() && !blocked) return Unexpected{blocked_select_error(response->sw, "00 A4")};
    auto info = parse_purse_fci(response->data);
    if (!info) return Unexpected{info.error()};
    return SelectedPurse{*info, blocked};
}

CardResult<crypto::Challenge4> PurseApp::get_challenge() {
    auto r = run(Command{0x00, 0x84, 0x00, 0x00, {}, 4}, 4);
    if (!r) return Unexpected{r.error()};
    crypto::Challenge4 challenge{};
    std::copy(r->data.begin(), r->data.end(), challenge.begin());
    return challenge;
}

CardResult<Ok> PurseApp::application_block(bool permanent, const crypto::Mac4& mac) {
    const auto header = crypto::application_block_header(permanent);
    auto r = run(Command{header[0], header[1], header[2], header[3], Bytes(mac.begin(), mac.end()), std::nullopt});
    if (!r) return Unexpected{r.error()};
    return Ok{};
}

CardResult<Ok> PurseApp::application_unblock(const crypto::Mac4& mac) {
    const auto header = crypto::application_unblock_header;
    auto r = run(Command{header[0], header[1], header[2], header[3], Bytes(mac.begin(), mac.end()), std::nullopt});
    if (!r) return Unexpected{r.error()};
    return Ok{};
}

Result<BlockOutcome, FlowError> unblock_application(Reader& reader, const MaintenanceMacProvider& hsm_mac) {
    CardChannel channel(reader);
    auto selected = counter_open_purse(reader, channel);
    if (!selected) return Unexpected{selected.error()};
    PurseApp purse(channel);
    auto challenge = purse.get_challenge();
    if (!challenge) return Unexpected{counter_card_failure(challenge.error())};
    auto mac = hsm_mac(MaintenanceMacRequest{selected->info.issuer_id, selected->info.asn, *challenge, crypto::application_unblock_header});
    if (!mac)
        return Unexpected{FlowError{FlowErrorCode::hsm_error, fmt::format("no maintenance MAC from the HSM: {} (card {} not unblocked)",
                                                                          mac.error(), selected->info.asn_digits())}};
    if (auto unblocked = purse.application_unblock(*mac); !unblocked) return Unexpected{counter_card_failure(unblocked.error())};
    return BlockOutcome{selected->info, false, selected->blocked};
}

Result<BlockOutcome, FlowError> block_application(Reader& reader, const MaintenanceMacProvider& hsm_mac, bool permanent) {
    CardChannel channel(reader);
    auto selected = counter_open_purse(reader, channel);
    if (!selected) return Unexpected{selected.error()};
    if (auto blocked = counter_block_selected(channel, selected->info, hsm_mac, permanent); !blocked) return Unexpected{blocked.error()};
    return BlockOutcome{selected->info, permanent, selected->blocked};
}

Result<ReturnOutcome, FlowError> Terminal::return_card(const MaintenanceMacProvider& hsm_mac) {
    auto selected = counter_open_purse(card_reader_, card_channel_);
    if (!selected) return Unexpected{selected.error()};
    ReturnOutcome outcome;
    outcome.card = selected->info;
    if (selected->blocked) {
        // Blocked before (an earlier run whose block answer was lost, or another block): nothing can be read
        // or taken; the block is made permanent.
        outcome.was_blocked = true;
        if (auto blocked = counter_block_selected(card_channel_, outcome.card, hsm_mac, true); !blocked) return Unexpected{blocked.error()};
        return outcome;
    }
    // A debit of an earlier run that the card left during is resolved first (from the card's proof): it is
    // queued once, and the balance read next already lacks it.
    auto recovered = recover_card(outcome.card);
    if (!recovered) return Unexpected{recovered.error()};
    outcome.recovered = recovered->recorded;
    PurseApp purse(card_channel_);
    auto balance = purse.balance();
    if (!balance) return Unexpected{counter_card_failure(balance.error())};
    outcome.balance_fen = *balance;
    if (*balance > 0) {
        if (auto reason = hotlist_.blocked(outcome.card.asn))
            return Unexpected{FlowError{FlowErrorCode::blocked_card,
                                        fmt::format("card {} is on the hotlist ({}): its balance is not taken at the counter",
                                                    outcome.card.asn_digits(), to_string(*reason)),
                                        0, reason}};
        TransactionRecord draft;
        draft.type = crypto::type_ep_purchase;
        draft.amount_fen = *balance;
        auto record = debit(outcome.card, draft, {});
        if (!record) return Unexpected{record.error()};
        outcome.debit = *record;
    }
    if (auto blocked = counter_block_selected(card_channel_, outcome.card, hsm_mac, true); !blocked) return Unexpected{blocked.error()};
    return outcome;
}

}  // namespace coconut::sdk
