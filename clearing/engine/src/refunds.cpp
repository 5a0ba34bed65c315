// Same-day refunds of a payment (ISO8583.md §4.10): the medical part of a completed clinic hold back to the
// medical account (0200 3 = 200030, booked at once), the purse part of a purchase as an online credit (the
// load flow of online.cpp with 3 = 200000, checked here) or recorded as refunded in cash (0220 3 = 200000
// without a TAC). Each is funded by the payable of the participant that was paid, and each part is refunded
// at most once.
#include "internal.hpp"

#include <fmt/format.h>

namespace coconut::clearing {

using detail::log_line;
using iso8583::Message;
using iso8583::ResponseCode;

bool Engine::claim_refund(const ledger::Id& purchase) {
    std::lock_guard lock(claims_mutex_);
    return refunds_in_flight_.insert(purchase).second;
}

void Engine::release_refund(const ledger::Id& purchase) {
    std::lock_guard lock(claims_mutex_);
    refunds_in_flight_.erase(purchase);
}

bool Engine::booked_today(std::uint64_t timestamp_ns) const {
    return detail::hainan_day(timestamp_ns) == detail::hainan_day(ledger_.clock_ns());
}

std::optional<bool> Engine::participant_is(const Online& online, std::initializer_list<std::string_view> kinds) const {
    auto participant = registry_.participant(online.terminal.participant_id);
    if (!participant) {
        log_line(fmt::format("{} from {}: {}", online.request.mti(), online.terminal_id, participant.error().message));
        return std::nullopt;
    }
    if (!*participant) return false;
    for (std::string_view kind : kinds) {
        if ((*participant)->kind == kind) return true;
    }
    return false;
}

namespace {

// Why `purchase` is not a purchase of `asn` paid to `participant_id` (25), or nothing.
bool purchase_of(const std::optional<ledger::Transfer>& purchase, const Asn& asn, std::uint64_t participant_id) {
    return purchase && purchase->code == transfer_codes::offline_purchase && purchase->debit_account_id == purse_shadow_account(asn) &&
           purchase->credit_account_id == payable_account(participant_id, ledgers::purse);
}

}  // namespace

// ---- 0200 3 = 200030: the medical part ---------------------------------------------------------------

void Engine::medical_refund(const Message& request, SessionState& session, Respond respond) {
    auto online = begin_online(request, session, std::move(respond), iso8583::ProcessingCode::medical_refund);
    if (!online) return;
    auto parsed = iso8583::parse_medical_refund(request.get(62).value_or(""));
    if (!parsed) {
        log_line(fmt::format("0200 200030 from {} STAN {}: {}", online->terminal_id, online->stan, parsed.error()));
        return answer(online, ResponseCode::format_error);
    }
    const auto clinic = participant_is(*online, {"clinic"});
    if (!clinic) return answer(online, ResponseCode::system_malfunction);
    if (!*clinic) return answer(online, ResponseCode::not_permitted_to_terminal);
    auto card = detail::online_card(registry_, *request.get(2), parsed->asn, true);
    if (!card) return answer(online, card.error());
    online->card = *card;

    const std::string_view hold_terminal(parsed->hold_terminal_id41.data(), parsed->hold_terminal_id41.size());
    const ledger::Id hold_id = clinic_hold_transfer(hold_terminal, parsed->visit.batch_number, parsed->visit.stan);
    auto hold = ledger_.lookup_transfer(hold_id);
    auto completion = ledger_.lookup_transfer(resolving_transfer(hold_id, Resolution::post));
    if (!hold || !completion) {
        log_line("0200 200030: " + (!hold ? hold.error().message : completion.error().message));
        return answer(online, ResponseCode::system_malfunction);
    }
    // A completed clinic hold on this card's medical account, paid to this terminal's clinic.
    const bool found = *hold && *completion && (*hold)->code == transfer_codes::clinic_medical &&
                       (*hold)->debit_account_id == medical_account(parsed->asn) &&
                       (*hold)->credit_account_id == payable_account(online->terminal.participant_id, ledgers::medical);
    if (!found) return answer(online, ResponseCode::unable_to_locate_record);
    if (online->amount_fen != (*completion)->amount) return answer(online, ResponseCode::invalid_amount);
    online->transfer_id = medical_refund_transfer(hold_id);
    // A repeat (any STAN, any day) lands on the refund already booked: answered as the first time.
    auto booked = ledger_.lookup_transfer(online->transfer_id);
    if (!booked) {
        log_line("0200 200030: " + booked.error().message);
        return answer(online, ResponseCode::system_malfunction);
    }
    if (!*booked && !booked_today((*completion)->timestamp)) return answer(online, ResponseCode::invalid_transaction);
    book_medical_refund(online, **hold, **completion);
}

void Engine::book_medical_refund(std::shared_ptr<Online> online, const ledger::Transfer& hold, const ledger::Transfer& completion) {
    ledger::Transfer refund;
    refund.id = online->transfer_id;
    refund.debit_account_id = hold.credit_account_id;  // the clinic's medical payable
    refund.credit_account_id = hold.debit_account_id;  // the card's medical account
    refund.amount = completion.amount;
    refund.ledger = ledgers::medical;
    refund.code = transfer_codes::medical_refund;
    refund.user_data_64 = online->terminal.participant_id;
    refund.user_data_32 = hold.user_data_32;  // the hold's STAN
    refund.user_data_128 = hold.id;           // the visit it refunds (plan.hpp)
    // Counted in the 0500 credits as answered, like reversals (ISO8583.md §4.7): every 0200 answered 00 once, by
    // its own 41 ‖ 60 ‖ 11 — what the terminal counts, which cannot tell a first booking from a repeat — so a
    // repeat with its STAN (a 0201) adds nothing and the refund run again under a new STAN is counted again.
    const std::string key = fmt::format("medical-refund-answered{}{:06}{:06}", online->terminal_id, online->batch_number, online->stan);
    online->reversal_key = ledger::derive_id(ByteView(reinterpret_cast<const std::uint8_t*>(key.data()), key.size()));
    auto hook = [this, online](lmdb::Txn& txn, ledger::ResultCode code) -> lmdb::Status {
        if (!ledger::succeeded(code)) return Ok{};
        auto added = registry_.put_reversal(txn, online->reversal_key, online->amount_fen);
        if (!added) return Unexpected<lmdb::Error>{added.error()};
        return detail::count_terminal(registry_, txn, online->terminal_id, online->stan, online->batch_number,
                                      *added ? std::optional<BatchTotal>(BatchTotal::credit) : std::nullopt, online->amount_fen);
    };
    submit(online, refund, hook, [this, online](ledger::ResultCode code) {
        if (ledger::succeeded(code)) {
            online->field4 = online->amount_fen;
            return answer(online, ResponseCode::approved);
        }
        // The accounts and the amount name the refund; a repeat only differs in none of them.
        log_line(fmt::format("medical refund {}: {}", ledger::to_string(online->transfer_id), ledger::to_string(code)));
        answer(online, detail::duplicate(code) ? ResponseCode::duplicate_transmission : ResponseCode::system_malfunction);
    });
}

// ---- 0200 3 = 200000: the purse part by an online credit ------------------------------------------------

std::optional<ResponseCode> Engine::check_purchase_refund(Online& online) {
    const auto kind = participant_is(online, {"clinic", "shop"});
    if (!kind) return ResponseCode::system_malfunction;
    if (!*kind) return ResponseCode::not_permitted_to_terminal;
    COCONUT_ASSERT(online.load.refund_of.has_value(), "a refund credit names its purchase (DF13)");
    const iso8583::PurchaseReference& reference = *online.load.refund_of;
    online.refunded_purchase = offline_purchase_transfer(online.load.asn, reference.terminal_id, reference.terminal_serial);
    auto purchase = ledger_.lookup_transfer(online.refunded_purchase);
    auto refunded = registry_.visit(online.refunded_purchase, Registry::VisitSide::refund_of);
    if (!purchase || !refunded) {
        log_line("0200 200000: " + (!purchase ? purchase.error().message : refunded.error().message));
        return ResponseCode::system_malfunction;
    }
    if (!purchase_of(*purchase, online.load.asn, online.terminal.participant_id)) return ResponseCode::unable_to_locate_record;
    if (online.amount_fen != (*purchase)->amount) return ResponseCode::invalid_amount;
    if (*refunded && **refunded == online.transfer_id) return std::nullopt;  // this credit's own repeat
    if (!booked_today((*purchase)->timestamp)) return ResponseCode::invalid_transaction;
    if (*refunded && (*refunded)->zero()) return ResponseCode::duplicate_transmission;  // refunded in cash
    if (*refunded) {
        auto state = ledger_.pending_state(**refunded);
        if (!state) {
            log_line("0200 200000: " + state.error().message);
            return ResponseCode::system_malfunction;
        }
        // A credit voided or expired left the card uncredited: the purchase may be refunded again.
        if (*state && (**state == ledger::PendingState::pending || **state == ledger::PendingState::posted)) {
            return ResponseCode::duplicate_transmission;
        }
    }
    // One refund of a purchase at a time, from this check to its answer (after the commit recorded it): a
    // cash refund and a credit of the same purchase arriving together cannot both pass.
    if (!claim_refund(online.refunded_purchase)) return ResponseCode::duplicate_transmission;
    online.refund_claimed = true;
    return std::nullopt;
}

// ---- 0220 3 = 200000 without a TAC: the purse part refunded in cash ----------------------------------------

void Engine::cash_refund(std::shared_ptr<Online> online) {
    auto parsed = iso8583::parse_cash_refund(online->request.get(62).value_or(""));
    if (!parsed) {
        log_line(fmt::format("0220 200000 from {} STAN {}: {}", online->terminal_id, online->stan, parsed.error()));
        return answer(online, ResponseCode::format_error);
    }
    // The card holds what it holds: no hotlist refusal (nothing is credited to it).
    auto card = detail::online_card(registry_, *online->request.get(2), parsed->asn, false);
    if (!card) return answer(online, card.error());
    online->card = *card;
    // check_purchase_refund reads the card and the purchase from a load request: a cash refund names the same.
    online->load.asn = parsed->asn;
    online->load.refund_of = parsed->purchase;
    online->transfer_id = ledger::Id{};  // the zero id: "in cash", a repeat of an earlier cash refund
    if (auto refused = check_purchase_refund(*online)) return answer(online, *refused);
    auto hook = [this, online](lmdb::Txn& txn, std::span<const ledger::EventResult> results) -> lmdb::Status {
        COCONUT_ASSERT(results.empty(), "no events, no results");
        if (auto s = registry_.put_purchase_refund(txn, online->refunded_purchase, ledger::Id{}); !s) return s;
        return detail::count_terminal(registry_, txn, online->terminal_id, online->stan, online->batch_number, std::nullopt, 0);
    };
    auto on_commit = [this, online](ledger::Reply reply) {
        if (!reply) {
            detail::log_storage_failure("ledger: " + reply.error().message);
            return answer(online,
                          unavailable_here(reply.error().code) ? ResponseCode::issuer_inoperative : ResponseCode::system_malfunction);
        }
        log_line(fmt::format("purchase {} refunded in cash at {}", ledger::to_string(online->refunded_purchase), online->terminal_id));
        answer(online, ResponseCode::approved);
    };
    if (!writer_.try_submit({}, std::move(on_commit), std::move(hook))) answer(online, ResponseCode::issuer_inoperative);
}

}  // namespace coconut::clearing
