// The online flows (ISO8583.md §4.1–§4.5): 0200 load, 0220 load confirmation and clinic completion,
// 0100 clinic authorization, 0400/0420 reversals. Like the offline upload, every answer that reports a
// booking is sent from the writer's callback, after the commit was synced; the registry records that
// belong to a booking (load attempt, hold, shadow mirror, batch totals, risk flags) are written by the
// booking's hook in the same write transaction.
#include "internal.hpp"

#include <coconut/core/assert.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <limits>

namespace coconut::clearing {

using detail::check_answer;
using detail::count_answered;
using detail::log_line;
using detail::wall_clock_ns;
using detail::when_number;
using iso8583::Message;
using iso8583::ResponseCode;

namespace detail {

// The card an online request names (field 2 = the ASN's rightmost 16 digits), or the code refusing it.
coconut::Result<CardRecord, ResponseCode> online_card(const Registry& registry, std::string_view pan, const Asn& asn,
                                                      bool refuse_hotlisted) {
    if (pan != std::string_view(bcd_to_digits(asn)).substr(4)) return Unexpected<ResponseCode>{ResponseCode::invalid_card_number};
    auto card = registry.card(asn);
    if (!card) {
        log_line("card lookup: " + card.error().message);
        return Unexpected<ResponseCode>{ResponseCode::system_malfunction};
    }
    if (!*card) return Unexpected<ResponseCode>{ResponseCode::invalid_card_number};
    // A replaced card is a lost one whose balance moves to its replacement (clearing/README.md "Card lifecycle").
    const bool lost = (*card)->status == CardStatus::lost || (*card)->status == CardStatus::replaced;
    if (refuse_hotlisted && lost) return Unexpected<ResponseCode>{ResponseCode::lost_card};
    // blocked, returned and any other status off the active list: restricted (62).
    if (refuse_hotlisted && (*card)->status != CardStatus::active) return Unexpected<ResponseCode>{ResponseCode::restricted_card};
    return **card;
}

bool duplicate(ledger::ResultCode code) {
    return code >= ledger::ResultCode::exists_with_different_flags && code <= ledger::ResultCode::exists_with_different_code;
}

lmdb::Status count_terminal(const Registry& registry, lmdb::Txn& txn, const std::string& terminal_id, std::uint32_t stan,
                            std::uint32_t batch_number, std::optional<BatchTotal> total, std::uint64_t amount_fen) {
    auto terminal = registry.terminal_in(txn, terminal_id);
    if (!terminal) return Unexpected<lmdb::Error>{terminal.error()};
    if (!*terminal) return Ok{};
    TerminalRecord updated = **terminal;
    updated.last_stan = stan;
    if (total) count_in_batch(updated, batch_number, *total, amount_fen);
    return registry.put_terminal(txn, updated);
}

}  // namespace detail

using detail::count_terminal;
using detail::duplicate;
using detail::online_card;

namespace {

using iso8583::ProcessingCode;

// Field 90's original STAN (ISO8583.md §4.5): the 0100 a completion or reversal names.
std::optional<std::uint32_t> original_stan(const Message& request) {
    auto original = iso8583::parse_original_data(request.get(90).value_or(""));
    if (!original) return std::nullopt;
    return original->stan;
}

// What makes two requests "the same content" (a repeat) rather than a different transaction on the
// same id: the listed fields' text.
ledger::Id request_digest(const Message& request, std::initializer_list<int> fields) {
    Bytes material;
    for (int field : fields) {
        append_be(material, static_cast<std::uint32_t>(field), 2);
        const std::string_view value = request.get(field).value_or("");
        append_be(material, static_cast<std::uint32_t>(value.size()), 2);
        material.insert(material.end(), value.begin(), value.end());
    }
    return ledger::derive_id(material);
}

// What a card's carried holding can still fund: credits posted minus debits posted and pending (0 without one).
ledger::Result<std::uint64_t> carried_available(const ledger::Ledger& ledger, const Asn& asn) {
    auto holding = ledger.lookup_account(carried_holding_account(asn));
    if (!holding) return Unexpected<ledger::Error>{holding.error()};
    if (!*holding) return std::uint64_t{0};
    const std::uint64_t spent = (*holding)->debits_posted + (*holding)->debits_pending;
    return (*holding)->credits_posted > spent ? (*holding)->credits_posted - spent : 0;
}

// ---- registry work inside a booking's write transaction ----

// Changes the card record (if the card exists) inside a booking's write transaction.
template <class Change>
lmdb::Status update_card(const Registry& registry, lmdb::Txn& txn, const Asn& asn, Change change) {
    auto card = registry.card_in(txn, asn);
    if (!card) return Unexpected<lmdb::Error>{card.error()};
    if (!*card) return Ok{};
    CardRecord updated = **card;
    change(updated);
    return registry.put_card(txn, updated);
}

lmdb::Status raise_flag(const Registry& registry, lmdb::Txn& txn, const RiskFlag& flag) {
    return detail::raise_flags(registry, txn, flag.asn, std::span<const RiskFlag>(&flag, 1));
}

// The shadow mirror follows posted money only (ISO8583.md §4.3): called when a load is posted. The load
// leaves the unconfirmed ones; its card time bounds which purchases the shadow can be compared with.
lmdb::Status credit_mirror(const Registry& registry, lmdb::Txn& txn, const iso8583::LoadConfirmationData& c, std::uint64_t amount_fen) {
    return update_card(registry, txn, c.asn, [&](CardRecord& card) {
        card.shadow_balance_fen += static_cast<std::int64_t>(amount_fen);
        card.unconfirmed_loads_fen -= std::min(card.unconfirmed_loads_fen, amount_fen);
        card.latest_load_when = std::max(card.latest_load_when, when_number(c.when));
    });
}

}  // namespace

void Engine::answer(const std::shared_ptr<Online>& online, ResponseCode code) {
    if (online->challenge_claimed) release_challenge(online->clinic.challenge);
    online->challenge_claimed = false;
    if (online->refund_claimed) release_refund(online->refunded_purchase);
    online->refund_claimed = false;
    if (code != ResponseCode::approved && code != ResponseCode::partial_approval) stats_.refused++;
    if (code == ResponseCode::duplicate_transmission) stats_.duplicates++;
    count_answered(stats_);
    // A partial approval names the amount approved; an amount never grows.
    COCONUT_ASSERT(code != ResponseCode::partial_approval || (online->field4 && *online->field4 < online->amount_fen));
    COCONUT_ASSERT(!online->field4 || *online->field4 <= online->amount_fen);
    Message response = make_response(online->request, code);
    if (online->field4) response.set_number(4, *online->field4, 12);
    if (online->field54) response.set(54, *online->field54);
    if (online->field62) response.set(62, *online->field62);
    check_answer(online->request, response);
    online->respond(std::move(response));
}

// §4.1: fields every online message carries, the processing code, the terminal and its sign-on.
std::shared_ptr<Engine::Online> Engine::begin_online(const Message& request, SessionState& session, Respond respond,
                                                     ProcessingCode processing_code) {
    auto online = std::make_shared<Online>();
    online->request = request;
    online->respond = std::move(respond);
    online->advice = iso8583::request_type_of(request.mti()) == iso8583::MessageType::reversal_advice;
    const auto amount = request.get_number(4);
    const auto stan = request.get_number(11);
    const auto terminal_id = request.get(41);
    const auto batch_number = batch_of(request);
    if (!request.has(2) || !amount || !stan || !terminal_id || !batch_number) {
        answer(online, ResponseCode::format_error);
        return nullptr;
    }
    online->amount_fen = *amount;
    online->stan = static_cast<std::uint32_t>(*stan);
    online->terminal_id = std::string(*terminal_id);
    online->batch_number = *batch_number;
    if (iso8583::processing_code_of(request) != processing_code) {
        answer(online, ResponseCode::invalid_transaction);
        return nullptr;
    }
    auto terminal = registry_.terminal(online->terminal_id);
    if (!terminal) {
        log_line(request.mti() + ": " + terminal.error().message);
        answer(online, ResponseCode::system_malfunction);
        return nullptr;
    }
    if (auto refused = refuse_terminal(request, session, *terminal)) {
        answer(online, *refused);
        return nullptr;
    }
    online->terminal = **terminal;
    return online;
}

void Engine::submit(std::shared_ptr<Online> online, ledger::Transfer transfer,
                    std::function<lmdb::Status(lmdb::Txn&, ledger::ResultCode)> hook, std::function<void(ledger::ResultCode)> done) {
    COCONUT_ASSERT(!transfer.id.zero());
    COCONUT_ASSERT(transfer.amount <= online->amount_fen, "never more than the terminal asked for");
    auto batch_hook = [hook = std::move(hook)](lmdb::Txn& txn, std::span<const ledger::EventResult> results) -> lmdb::Status {
        COCONUT_ASSERT(results.size() == 1);
        return hook(txn, results[0].code);
    };
    auto on_commit = [this, online, done = std::move(done), id = transfer.id](ledger::Reply reply) {
        if (!reply) {
            detail::log_storage_failure("ledger: " + reply.error().message);
            return answer(online,
                          unavailable_here(reply.error().code) ? ResponseCode::issuer_inoperative : ResponseCode::system_malfunction);
        }
        COCONUT_ASSERT(reply->size() == 1, "one result per event submitted");
        const ledger::ResultCode code = (*reply)[0].code;
        if (code == ledger::ResultCode::ok) stats_.booked++;
        if (code == ledger::ResultCode::exists) stats_.exists++;
        if (duplicate(code))
            log_line(fmt::format("duplicate id {} with different content: {}", ledger::to_string(id), ledger::to_string(code)));
        done(code);
    };
    if (!writer_.try_submit({ledger::Event(transfer)}, std::move(on_commit), std::move(batch_hook))) {
        answer(online, ResponseCode::issuer_inoperative);  // writer queue full or stopping: retry later
    }
}

void Engine::flag_only(std::shared_ptr<Online> online, RiskFlag flag, ResponseCode code) {
    auto hook = [this, flag](lmdb::Txn& txn, std::span<const ledger::EventResult> results) {
        COCONUT_ASSERT(results.empty(), "no events, no results");
        return raise_flag(registry_, txn, flag);
    };
    auto on_commit = [this, online, code](ledger::Reply reply) {
        if (!reply) log_line("risk flag not recorded: " + reply.error().message);
        answer(online, code);
    };
    // Queue full: the refusal still goes out, only the flag is lost.
    if (!writer_.try_submit({}, std::move(on_commit), std::move(hook))) answer(online, code);
}

// ---- 0200 online load ----------------------------------------------------------------------------------

namespace {

// The processing code of a load-shaped credit: 210000 (from the float), 280000 (from the carried holding) or
// 200000 (a refund, from the participant's payable); 210000 for anything else (begin_online refuses it: 12).
ProcessingCode load_code_of(const Message& request) {
    const auto code = iso8583::processing_code_of(request);
    if (code == ProcessingCode::carried_load || code == ProcessingCode::refund) return *code;
    return ProcessingCode::purse_load;
}

bool is_load(const Message& request) {
    const auto code = iso8583::processing_code_of(request);
    return code == ProcessingCode::purse_load || code == ProcessingCode::carried_load || code == ProcessingCode::refund;
}

CreditFunding funding_of(const Message& request) {
    switch (load_code_of(request)) {
        case ProcessingCode::carried_load: return CreditFunding::carried;
        case ProcessingCode::refund: return CreditFunding::refund;
        default: return CreditFunding::float_account;
    }
}

std::uint16_t transfer_code_of(CreditFunding funding) {
    switch (funding) {
        case CreditFunding::carried: return transfer_codes::carried_load;
        case CreditFunding::refund: return transfer_codes::purchase_refund;
        case CreditFunding::float_account: break;
    }
    return transfer_codes::online_load;
}

// The account a new credit debits: the float, the card's carried holding, or the refunding participant's purse payable.
ledger::Id credit_source(CreditFunding funding, const Asn& asn, std::uint64_t participant_id) {
    switch (funding) {
        case CreditFunding::carried: return carried_holding_account(asn);
        case CreditFunding::refund: return payable_account(participant_id, ledgers::purse);
        case CreditFunding::float_account: break;
    }
    return purse_float_account;
}

}  // namespace

void Engine::online_load(const Message& request, SessionState& session, Respond respond) {
    auto online = begin_online(request, session, std::move(respond), load_code_of(request));
    if (!online) return;
    online->funding = funding_of(request);
    if (online->amount_fen == 0) return answer(online, ResponseCode::invalid_amount);
    if (online->amount_fen > options_.load_amount_fen_max) return answer(online, ResponseCode::exceeds_amount_limit);
    auto parsed = iso8583::parse_load_request(request.get(62).value_or(""));
    if (!parsed) {
        log_line(fmt::format("0200 from {} STAN {}: {}", online->terminal_id, online->stan, parsed.error()));
        return answer(online, ResponseCode::format_error);
    }
    online->load = *parsed;
    const iso8583::LoadRequestData& load = online->load;
    // DF13 names the purchase a refund (200000) credits back, and only a refund carries it.
    if (load.refund_of.has_value() != (online->funding == CreditFunding::refund)) {
        log_line(fmt::format("0200 {} from {} STAN {}: DF13 (refunded purchase) {}", *request.get(3), online->terminal_id, online->stan,
                             load.refund_of ? "in a load" : "missing"));
        return answer(online, ResponseCode::format_error);
    }
    if (load.terminal_id != online->terminal.psam_terminal_id) return answer(online, ResponseCode::not_permitted_to_terminal);
    auto card = online_card(registry_, *request.get(2), load.asn, true);
    if (!card) return answer(online, card.error());
    online->card = *card;
    online->digest = request_digest(request, {2, 4, 41, 62});

    auto previous = registry_.load_attempt(load.asn, load.online_atc);
    if (!previous) {
        log_line("0200: " + previous.error().message);
        return answer(online, ResponseCode::system_malfunction);
    }
    bool repeat = false;
    std::uint8_t attempt = 0;
    if (*previous) {
        auto state = ledger_.pending_state(online_load_transfer(load.asn, load.online_atc, (*previous)->attempt));
        if (!state) {
            log_line("0200: " + state.error().message);
            return answer(online, ResponseCode::system_malfunction);
        }
        const bool live = *state == ledger::PendingState::pending || *state == ledger::PendingState::posted;
        const bool same = (*previous)->request_digest == online->digest;
        if (same && !live) return answer(online, ResponseCode::invalid_transaction);  // the repeat of a reversed load
        if (!same && live) {
            return flag_only(online,
                             RiskFlag{RiskKind::duplicate_different, load.asn, load.online_atc, crypto::type_ep_load, wall_clock_ns(),
                                      "0200 with different content while the load of this online ATC is live"},
                             ResponseCode::duplicate_transmission);
        }
        // Same ATC after a reversal or expiry: the card was not credited (its ATC would have moved).
        if (!same && (*previous)->attempt == std::numeric_limits<std::uint8_t>::max()) return answer(online, ResponseCode::do_not_honour);
        repeat = same;
        attempt = same ? (*previous)->attempt : static_cast<std::uint8_t>((*previous)->attempt + 1);
    }
    online->attempt = LoadAttempt{attempt, online->digest, online->amount_fen, online->terminal_id};
    online->transfer_id = online_load_transfer(load.asn, load.online_atc, attempt);
    if (online->funding == CreditFunding::refund) {
        // Checked before the HSM and the booking, so a refusal does not spend this online ATC's id. A repeat
        // finds the purchase refunded by its own attempt.
        if (auto refused = check_purchase_refund(*online)) return answer(online, *refused);
    }
    if (online->funding == CreditFunding::carried && !repeat) {
        auto holding = carried_available(ledger_, load.asn);
        if (!holding) {
            log_line("0200: " + holding.error().message);
            return answer(online, ResponseCode::system_malfunction);
        }
        // Checked before the HSM and the booking: a refused booking would spend this online ATC's id.
        if (*holding < online->amount_fen) return answer(online, ResponseCode::insufficient_funds);
    }

    request_mac2(std::move(online), repeat);
}

// MAC1 to the HSM; with its MAC2 a new load is booked pending, a repeat answered with the same MAC2.
void Engine::request_mac2(std::shared_ptr<Online> online, bool repeat) {
    const iso8583::LoadRequestData& load = online->load;
    hsm::LoadRequest mac1;
    mac1.key = hsm::KeyRef{options_.load_key_label, load.key_version.value_or(hsm::newest_version)};
    mac1.card = hsm::CardIdentity{online->card.issuer_id, load.asn};
    mac1.old_balance_fen = load.old_balance_fen;
    mac1.amount_fen = static_cast<std::uint32_t>(online->amount_fen);
    mac1.type = load.type;
    mac1.terminal_id = load.terminal_id;
    mac1.online_atc = load.online_atc;
    mac1.card_random = load.card_random;
    mac1.mac1 = load.mac1;
    mac1.when = load.when;
    card_services_->load_mac2(mac1, [this, online, repeat](hsm::Outcome<hsm::LoadAnswer> mac2) {
        if (!mac2) {
            detail::log_hsm_failure("HSM load_mac2: " + mac2.error().message);
            return answer(online, ResponseCode::issuer_inoperative);
        }
        const iso8583::LoadRequestData& load = online->load;
        if (mac2->mac1 != hsm::Verdict::valid) {
            return flag_only(online,
                             RiskFlag{RiskKind::mac1_invalid, load.asn, load.online_atc, crypto::type_ep_load, wall_clock_ns(),
                                      fmt::format("0200 of {} fen from {}: MAC1 {}", online->amount_fen, online->terminal_id,
                                                  hsm::verdict_name(mac2->mac1))},
                             ResponseCode::suspected_fraud);
        }
        online->field62 = iso8583::encode_load_answer({load.asn, load.online_atc, mac2->mac2});
        if (repeat) {
            stats_.exists++;
            return answer(online, ResponseCode::approved);  // the same MAC2 again, no second hold
        }
        approve_load(online, *mac2);
    });
}

// Books the pending load float → purse shadow; the 0210 carrying MAC2 goes out after the commit.
void Engine::approve_load(std::shared_ptr<Online> online, const hsm::LoadAnswer&) {
    const iso8583::LoadRequestData& load = online->load;
    ledger::Transfer transfer;
    transfer.id = online->transfer_id;
    transfer.debit_account_id = credit_source(online->funding, load.asn, online->terminal.participant_id);
    transfer.credit_account_id = purse_shadow_account(load.asn);
    transfer.amount = online->amount_fen;
    transfer.ledger = ledgers::purse;
    transfer.code = transfer_code_of(online->funding);
    transfer.flags = ledger::transfer_flags::pending;
    transfer.timeout_s = options_.load_timeout_s;
    transfer.user_data_64 = online->terminal.participant_id;
    transfer.user_data_128 = make_place(place_of(load.terminal_id, load.type, 0, 0, load.when));
    auto hook = [this, online](lmdb::Txn& txn, ledger::ResultCode code) -> lmdb::Status {
        const iso8583::LoadRequestData& load = online->load;
        if (duplicate(code)) {
            return raise_flag(registry_, txn,
                              RiskFlag{RiskKind::duplicate_different, load.asn, load.online_atc, crypto::type_ep_load, wall_clock_ns(),
                                       std::string(ledger::to_string(code))});
        }
        if (code != ledger::ResultCode::ok) return Ok{};
        if (auto s = registry_.put_load_attempt(txn, load.asn, load.online_atc, online->attempt); !s) return s;
        if (online->funding == CreditFunding::refund) {
            if (auto s = registry_.put_purchase_refund(txn, online->refunded_purchase, online->transfer_id); !s) return s;
        }
        // Not posted yet, but the card may be credited before the 0220 arrives (or without it).
        auto unconfirmed =
            update_card(registry_, txn, load.asn, [&](CardRecord& card) { card.unconfirmed_loads_fen += online->amount_fen; });
        if (!unconfirmed) return unconfirmed;
        return count_terminal(registry_, txn, online->terminal_id, online->stan, online->batch_number, std::nullopt, 0);
    };
    submit(online, transfer, hook, [this, online](ledger::ResultCode code) {
        if (code == ledger::ResultCode::ok) stats_.loads_approved++;
        if (ledger::succeeded(code)) return answer(online, ResponseCode::approved);
        online->field62.reset();  // no MAC2 with a refusal
        if (duplicate(code)) return answer(online, ResponseCode::duplicate_transmission);
        // 280000: another load took the carried holding between the check and the commit.
        if (online->funding == CreditFunding::carried &&
            (code == ledger::ResultCode::exceeds_credits || code == ledger::ResultCode::id_already_failed ||
             code == ledger::ResultCode::debit_account_not_found)) {
            return answer(online, ResponseCode::insufficient_funds);
        }
        log_line(fmt::format("load {}: {}", ledger::to_string(online->transfer_id), ledger::to_string(code)));
        answer(online, ResponseCode::system_malfunction);
    });
}

// ---- 0220 advices: load confirmation, clinic completion ------------------------------------------------------

void Engine::advice(const Message& request, SessionState& session, Respond respond) {
    if (is_load(request)) {
        if (auto online = begin_online(request, session, std::move(respond), load_code_of(request))) {
            online->funding = funding_of(request);
            if (online->funding == CreditFunding::refund && iso8583::is_cash_refund(request.get(62).value_or(""))) {
                return cash_refund(online);
            }
            load_confirmation(online);
        }
        return;
    }
    // Anything else is refused by begin_online with 12 (or 30).
    if (auto online = begin_online(request, session, std::move(respond), ProcessingCode::medical_purchase)) clinic_completion(online);
}

void Engine::load_confirmation(std::shared_ptr<Online> online) {
    auto parsed = iso8583::parse_load_confirmation(online->request.get(62).value_or(""));
    if (!parsed) {
        log_line(fmt::format("0220 from {} STAN {}: {}", online->terminal_id, online->stan, parsed.error()));
        return answer(online, ResponseCode::format_error);
    }
    online->confirmation = *parsed;
    const iso8583::LoadConfirmationData& c = online->confirmation;
    // The card holds the money whatever its status now: no hotlist refusal for a confirmation.
    auto card = online_card(registry_, *online->request.get(2), c.asn, false);
    if (!card) return answer(online, card.error());
    online->card = *card;
    auto attempt = registry_.load_attempt(c.asn, c.online_atc);
    if (!attempt) {
        log_line("0220: " + attempt.error().message);
        return answer(online, ResponseCode::system_malfunction);
    }
    if (!*attempt) return answer(online, ResponseCode::unable_to_locate_record);
    // Only the terminal that asked for the load confirms it, with its own PSAM's id in DF06: a
    // confirmation from elsewhere would move the load's cash liability to another participant.
    if ((*attempt)->terminal_id != online->terminal_id || c.terminal_id != online->terminal.psam_terminal_id) {
        return flag_only(online,
                         RiskFlag{RiskKind::wrong_terminal, c.asn, c.online_atc, c.type, wall_clock_ns(),
                                  fmt::format("0220 from {} for the load {} asked for: nothing posted", online->terminal_id,
                                              (*attempt)->terminal_id)},
                         ResponseCode::not_permitted_to_terminal);
    }
    online->attempt = **attempt;
    online->transfer_id = online_load_transfer(c.asn, c.online_atc, online->attempt.attempt);
    // 210000 confirms a load from the float, 280000 one from the carried holding, 200000 a refund: the 0200's,
    // not another (a late booking debits the account the 0200 debited).
    auto original = ledger_.lookup_transfer(online->transfer_id);
    if (!original) {
        log_line("0220: " + original.error().message);
        return answer(online, ResponseCode::system_malfunction);
    }
    if (*original && (*original)->code != transfer_code_of(online->funding)) return answer(online, ResponseCode::invalid_transaction);
    if (*original) online->source_account = (*original)->debit_account_id;
    if (online->amount_fen != online->attempt.amount_fen) return answer(online, ResponseCode::invalid_amount);
    const std::uint64_t new_balance = std::uint64_t{c.old_balance_fen} + online->amount_fen;
    if (new_balance > std::numeric_limits<std::uint32_t>::max()) return answer(online, ResponseCode::format_error);

    hsm::LoadTac tac;
    tac.key = hsm::KeyRef{options_.tac_key_label, online->card.tac_key_version};
    tac.card = hsm::CardIdentity{online->card.issuer_id, c.asn};
    tac.new_balance_fen = static_cast<std::uint32_t>(new_balance);
    tac.online_atc_before = c.online_atc;
    tac.amount_fen = static_cast<std::uint32_t>(online->amount_fen);
    tac.type = c.type;
    tac.terminal_id = c.terminal_id;
    tac.when = c.when;
    tac.tac = c.tac;
    card_services_->verify_load_tac(tac, [this, online](hsm::Outcome<hsm::Verdict> verdict) {
        if (!verdict) {
            detail::log_hsm_failure("HSM verify_load_tac: " + verdict.error().message);
            return answer(online, ResponseCode::issuer_inoperative);
        }
        if (*verdict != hsm::Verdict::valid && *verdict != hsm::Verdict::invalid) return answer(online, ResponseCode::issuer_inoperative);
        post_load(online, *verdict == hsm::Verdict::valid);
    });
}

// A confirmed load with the HSM's verdict on its TAC: a live pending load is posted; one reversed or
// expired meanwhile is booked late (valid TAC) or only flagged (invalid TAC).
void Engine::post_load(std::shared_ptr<Online> online, bool tac_valid) {
    auto state = ledger_.pending_state(online->transfer_id);
    if (!state || !*state) {
        log_line("0220: load " + ledger::to_string(online->transfer_id) +
                 (state ? " has a record but no transfer" : ": " + state.error().message));
        return answer(online, ResponseCode::system_malfunction);
    }
    const iso8583::LoadConfirmationData& c = online->confirmation;
    const bool live = **state == ledger::PendingState::pending || **state == ledger::PendingState::posted;
    if (!live && !tac_valid) {
        return flag_only(online,
                         RiskFlag{RiskKind::load_tac_invalid, c.asn, c.online_atc, c.type, wall_clock_ns(),
                                  "confirmation of a reversed / expired load with an invalid TAC: nothing booked"},
                         ResponseCode::suspected_fraud);
    }
    // Live: post the pending load. Reversed or expired yet confirmed with a valid TAC: the card was
    // credited, so the money is booked late, single phase, and flagged.
    ledger::Transfer transfer;
    transfer.id = resolving_transfer(online->transfer_id, live ? Resolution::post : Resolution::late_load);
    transfer.amount = online->amount_fen;
    transfer.user_data_64 = online->terminal.participant_id;
    transfer.user_data_128 = make_place(place_of(c.terminal_id, c.type, 0, 0, c.when));
    if (live) {
        transfer.flags = ledger::transfer_flags::post_pending;
        transfer.pending_id = online->transfer_id;
        COCONUT_ASSERT(transfer.id != transfer.pending_id);
    } else {
        COCONUT_ASSERT(!online->source_account.zero(), "a late credit debits what its 0200 debited");
        transfer.debit_account_id = online->source_account;
        transfer.credit_account_id = purse_shadow_account(c.asn);
        transfer.ledger = ledgers::purse;
        transfer.code = transfer_code_of(online->funding);
    }
    auto hook = [this, online, tac_valid, live](lmdb::Txn& txn, ledger::ResultCode code) -> lmdb::Status {
        if (code != ledger::ResultCode::ok) return Ok{};
        const iso8583::LoadConfirmationData& c = online->confirmation;
        if (auto s = credit_mirror(registry_, txn, c, online->amount_fen); !s) return s;
        if (!tac_valid) {
            auto flagged = raise_flag(registry_, txn,
                                      RiskFlag{RiskKind::load_tac_invalid, c.asn, c.online_atc, c.type, wall_clock_ns(),
                                               "load confirmation with an invalid TAC: posted (MAC2 was ours)"});
            if (!flagged) return flagged;
        }
        if (!live) {
            auto flagged = raise_flag(registry_, txn,
                                      RiskFlag{RiskKind::late_load_confirmation, c.asn, c.online_atc, c.type, wall_clock_ns(),
                                               "confirmed after reversal / expiry: booked late"});
            if (!flagged) return flagged;
        }
        return count_terminal(registry_, txn, online->terminal_id, online->stan, online->batch_number, BatchTotal::credit,
                              online->amount_fen);
    };
    submit(online, transfer, hook, [this, online, tac_valid](ledger::ResultCode code) {
        if (code == ledger::ResultCode::ok) stats_.loads_confirmed++;
        if (ledger::succeeded(code) && tac_valid) {
            // The record booked (ISO8583.md §4.8): the terminal deletes its queued advice only when it is its own.
            online->field62 = iso8583::encode_record_digest(
                iso8583::load_confirmation_digest(online->confirmation, static_cast<std::uint32_t>(online->amount_fen)));
        }
        if (ledger::succeeded(code)) return answer(online, tac_valid ? ResponseCode::approved : ResponseCode::suspected_fraud);
        if (duplicate(code)) return answer(online, ResponseCode::duplicate_transmission);
        log_line(fmt::format("load confirmation {}: {}", ledger::to_string(online->transfer_id), ledger::to_string(code)));
        // Expired or reversed between the state read and the commit: the retry takes the late path.
        answer(online, ResponseCode::issuer_inoperative);
    });
}

void Engine::clinic_completion(std::shared_ptr<Online> online) {
    const auto stan = original_stan(online->request);
    if (!stan) return answer(online, ResponseCode::format_error);
    online->transfer_id = clinic_hold_transfer(online->terminal_id, online->batch_number, *stan);
    auto hold = registry_.hold(online->transfer_id);
    auto transfer = ledger_.lookup_transfer(online->transfer_id);
    auto state = ledger_.pending_state(online->transfer_id);
    if (!hold || !transfer || !state) {
        log_line("0220 completion: storage error");
        return answer(online, ResponseCode::system_malfunction);
    }
    if (!*hold || !*transfer || !*state || *online->request.get(2) != std::string_view(bcd_to_digits((*hold)->asn)).substr(4)) {
        return answer(online, ResponseCode::unable_to_locate_record);
    }
    online->held_fen = (*transfer)->amount;
    if (online->amount_fen == 0 || online->amount_fen > online->held_fen) return answer(online, ResponseCode::invalid_amount);
    if (**state == ledger::PendingState::expired) return answer(online, ResponseCode::expired_card);
    if (**state == ledger::PendingState::voided) return answer(online, ResponseCode::unable_to_locate_record);

    ledger::Transfer post;
    post.id = resolving_transfer(online->transfer_id, Resolution::post);
    post.pending_id = online->transfer_id;
    post.flags = ledger::transfer_flags::post_pending;
    post.amount = online->amount_fen;  // the rest of the hold is released
    post.user_data_64 = online->terminal.participant_id;
    // The 0100's STAN (field 90), not this advice's: a 0221 repeat carries a new STAN of its own and
    // must land on `exists`, not on exists_with_different_user_data_32.
    post.user_data_32 = *stan;
    auto hook = [this, online, asn = (*hold)->asn](lmdb::Txn& txn, ledger::ResultCode code) -> lmdb::Status {
        if (duplicate(code)) {
            return raise_flag(registry_, txn,
                              RiskFlag{RiskKind::duplicate_different, asn, static_cast<std::uint16_t>(online->stan), 0, wall_clock_ns(),
                                       fmt::format("completion of hold {}: {}", ledger::to_string(online->transfer_id),
                                                   ledger::to_string(code))});
        }
        if (code != ledger::ResultCode::ok) return Ok{};
        return count_terminal(registry_, txn, online->terminal_id, online->stan, online->batch_number, BatchTotal::debit,
                              online->amount_fen);
    };
    submit(online, post, hook, [this, online](ledger::ResultCode code) {
        using ledger::ResultCode;
        if (code == ResultCode::ok) stats_.completions++;
        if (ledger::succeeded(code)) return answer(online, iso8583::ResponseCode::approved);
        if (duplicate(code)) return answer(online, iso8583::ResponseCode::duplicate_transmission);
        if (code == ResultCode::pending_transfer_expired) return answer(online, iso8583::ResponseCode::expired_card);
        if (code == ResultCode::pending_transfer_already_voided) return answer(online, iso8583::ResponseCode::unable_to_locate_record);
        log_line(fmt::format("completion of hold {}: {}", ledger::to_string(online->transfer_id), ledger::to_string(code)));
        answer(online, iso8583::ResponseCode::system_malfunction);
    });
}

// ---- 0100 clinic authorization ---------------------------------------------------------------------------

void Engine::clinic_authorization(const Message& request, SessionState& session, Respond respond) {
    const bool inquiry = iso8583::processing_code_of(request) == ProcessingCode::medical_inquiry;
    auto online =
        begin_online(request, session, std::move(respond), inquiry ? ProcessingCode::medical_inquiry : ProcessingCode::medical_purchase);
    if (!online) return;
    online->inquiry = inquiry;
    auto participant = registry_.participant(online->terminal.participant_id);
    if (!participant) {
        log_line("0100: " + participant.error().message);
        return answer(online, ResponseCode::system_malfunction);
    }
    if (!*participant || (*participant)->kind != "clinic") return answer(online, ResponseCode::not_permitted_to_terminal);
    if ((online->amount_fen == 0) != inquiry) return answer(online, ResponseCode::invalid_amount);  // an inquiry asks for 0
    if (online->amount_fen > options_.clinic_amount_fen_max) return answer(online, ResponseCode::exceeds_amount_limit);
    if (!request.has(7)) return answer(online, ResponseCode::format_error);
    auto parsed = iso8583::parse_clinic_authorization(request.get(62).value_or(""));
    if (!parsed) {
        log_line(fmt::format("0100 from {} STAN {}: {}", online->terminal_id, online->stan, parsed.error()));
        return answer(online, ResponseCode::format_error);
    }
    if (parsed->visit && *parsed->visit != iso8583::VisitReference{online->batch_number, online->stan}) {
        // DF11 of a 0100 is the visit this hold opens: its own batch and STAN (ISO8583.md §4.9).
        log_line(fmt::format("0100 from {} STAN {}: DF11 names another visit", online->terminal_id, online->stan));
        return answer(online, ResponseCode::format_error);
    }
    online->clinic = *parsed;
    auto card = online_card(registry_, *request.get(2), online->clinic.asn, true);
    if (!card) return answer(online, card.error());
    online->card = *card;
    if (inquiry) return prove_card_presence(std::move(online));  // nothing is held: no id, no repeat to answer
    online->transfer_id = clinic_hold_transfer(online->terminal_id, online->batch_number, online->stan);
    online->digest = request_digest(request, {2, 4, 42, 62});

    auto existing = registry_.hold(online->transfer_id);
    if (!existing) {
        log_line("0100: " + existing.error().message);
        return answer(online, ResponseCode::system_malfunction);
    }
    if (*existing) {
        if ((*existing)->request_digest != online->digest) {
            return flag_only(online,
                             RiskFlag{RiskKind::duplicate_different, online->clinic.asn, static_cast<std::uint16_t>(online->stan), 0,
                                      wall_clock_ns(), "0100 with different content on the id of a hold"},
                             ResponseCode::duplicate_transmission);
        }
        // A repeat: the first answer again (00, or 10 with the amount held), no second hold.
        auto hold = ledger_.lookup_transfer(online->transfer_id);
        if (!hold || !*hold) return answer(online, ResponseCode::system_malfunction);
        stats_.exists++;
        online->field4 = (*hold)->amount;
        return answer(online, (*hold)->amount == online->amount_fen ? ResponseCode::approved : ResponseCode::partial_approval);
    }

    prove_card_presence(std::move(online));
}

// Card presence (ISO8583.md §4.4): the host's own challenge, for this terminal and card, fresh and
// unused, answered by the card over every field that defines the hold; then the hold.
void Engine::prove_card_presence(std::shared_ptr<Online> online) {
    const Message& request = online->request;
    const iso8583::HostChallenge& challenge = online->clinic.challenge;
    auto refuse_challenge = [&](std::string why) {
        return flag_only(online,
                         RiskFlag{RiskKind::challenge_refused, online->clinic.asn, static_cast<std::uint16_t>(online->stan), 0,
                                  wall_clock_ns(), fmt::format("0100 from {}: challenge {}", online->terminal_id, why)},
                         ResponseCode::suspected_fraud);
    };
    if (auto wrong = check_challenge(challenge, online->terminal_id, online->clinic.asn)) return refuse_challenge(*wrong);
    auto snapshot = ledger_.begin_read();
    if (!snapshot) {
        log_line("0100: " + snapshot.error().message);
        return answer(online, ResponseCode::system_malfunction);
    }
    auto used = registry_.challenge_used_in(*snapshot, challenge);
    snapshot->abort();
    if (!used) {
        log_line("0100: " + used.error().message());
        return answer(online, ResponseCode::system_malfunction);
    }
    if (*used) return refuse_challenge("already used by a hold");
    if (!claim_challenge(challenge)) return refuse_challenge("in use by another 0100 right now");
    online->challenge_claimed = true;

    hsm::InternalAuth auth;
    auth.key = hsm::KeyRef{options_.internal_auth_key_label, hsm::newest_version};
    auth.card = hsm::CardIdentity{online->card.issuer_id, online->clinic.asn};
    const iso8583::ClinicHoldFields hold_fields{*request.get(41), *request.get(11), *request.get(7), *request.get(4), *request.get(60)};
    auth.challenge = iso8583::clinic_proof_input(challenge, hold_fields, online->clinic.asn);
    auth.cryptogram = online->clinic.cryptogram;
    card_services_->verify_internal_auth(auth, [this, online](hsm::Outcome<hsm::Verdict> verdict) {
        if (!verdict) {
            detail::log_hsm_failure("HSM verify_internal_auth: " + verdict.error().message);
            return answer(online, ResponseCode::issuer_inoperative);
        }
        if (*verdict != hsm::Verdict::valid) {
            return flag_only(online,
                             RiskFlag{RiskKind::internal_auth_invalid, online->clinic.asn, static_cast<std::uint16_t>(online->stan), 0,
                                      wall_clock_ns(), fmt::format("0100 from {}: {}", online->terminal_id, hsm::verdict_name(*verdict))},
                             ResponseCode::suspected_fraud);
        }
        if (online->inquiry) return answer_medical_balance(online);
        hold_medical(online);
    });
}

// What a medical account can pay now: posted credits less posted and pending debits; nullopt when the
// card has no medical account.
coconut::Result<std::optional<std::uint64_t>, std::string> Engine::medical_available(const Asn& asn) const {
    auto account = ledger_.lookup_account(medical_account(asn));
    if (!account) return Unexpected{account.error().message};
    if (!*account) return std::optional<std::uint64_t>();
    const std::uint64_t spent = (*account)->debits_posted + (*account)->debits_pending;
    return std::optional<std::uint64_t>((*account)->credits_posted > spent ? (*account)->credits_posted - spent : 0);
}

// 0110 to a medical balance inquiry (ISO8583.md §4.4a): the challenge spent durably (no second answer to
// the same proof), then 00 with field 54 = the available amount. Nothing is held or booked.
void Engine::answer_medical_balance(std::shared_ptr<Online> online) {
    auto available = medical_available(online->clinic.asn);
    if (!available) {
        log_line("0100 inquiry: " + available.error());
        return answer(online, ResponseCode::system_malfunction);
    }
    if (!*available) return answer(online, ResponseCode::not_permitted_to_cardholder);  // no medical account
    auto hook = [this, online](lmdb::Txn& txn, std::span<const ledger::EventResult>) -> lmdb::Status {
        const auto now_s = static_cast<std::uint32_t>(wall_clock_ns() / 1'000'000'000ULL);
        const std::uint32_t forget_before_s = now_s > options_.challenge_ttl_s + 60 ? now_s - options_.challenge_ttl_s - 60 : 0;
        if (auto s = registry_.put_challenge_used(txn, online->clinic.challenge, forget_before_s); !s) return s;
        return count_terminal(registry_, txn, online->terminal_id, online->stan, online->batch_number, std::nullopt, 0);
    };
    const std::uint64_t amount = **available;
    auto on_commit = [this, online, amount](ledger::Reply reply) {
        if (!reply) {
            detail::log_storage_failure("ledger: " + reply.error().message);
            return answer(online,
                          unavailable_here(reply.error().code) ? ResponseCode::issuer_inoperative : ResponseCode::system_malfunction);
        }
        stats_.medical_inquiries++;
        online->field54 = iso8583::medical_available_field(amount);
        answer(online, ResponseCode::approved);
    };
    if (!writer_.try_submit({}, std::move(on_commit), std::move(hook))) answer(online, ResponseCode::issuer_inoperative);
}

// The hold: what the medical account has, up to the amount asked (partial approval below it).
void Engine::hold_medical(std::shared_ptr<Online> online) {
    const Asn& asn = online->clinic.asn;
    auto medical = medical_available(asn);
    if (!medical) {
        log_line("0100: " + medical.error());
        return answer(online, ResponseCode::system_malfunction);
    }
    if (!*medical) return answer(online, ResponseCode::not_permitted_to_cardholder);  // no medical account
    const std::uint64_t available = **medical;
    if (available == 0) return answer(online, ResponseCode::insufficient_funds);
    online->held_fen = std::min(available, online->amount_fen);
    COCONUT_ASSERT(online->held_fen > 0 && online->held_fen <= online->amount_fen);

    ledger::Transfer hold;
    hold.id = online->transfer_id;
    hold.debit_account_id = medical_account(asn);
    hold.credit_account_id = payable_account(online->terminal.participant_id, ledgers::medical);
    hold.amount = online->held_fen;
    hold.ledger = ledgers::medical;
    hold.code = transfer_codes::clinic_medical;
    hold.flags = ledger::transfer_flags::pending;
    hold.timeout_s = options_.hold_timeout_s;
    hold.user_data_64 = online->terminal.participant_id;
    hold.user_data_32 = online->stan;
    Place place;  // clinic holds: the PSAM terminal id and the terminal's time of the 0100 (plan.hpp)
    place.terminal_id = online->terminal.psam_terminal_id;
    place.local_time_bcd = detail::hold_local_time(online->request.get(7).value_or(""), wall_clock_ns());
    hold.user_data_128 = make_place(place);
    auto hook = [this, online](lmdb::Txn& txn, ledger::ResultCode code) -> lmdb::Status {
        if (code != ledger::ResultCode::ok) return Ok{};
        if (auto s = registry_.put_hold(txn, online->transfer_id, HoldRecord{online->digest, online->amount_fen, online->clinic.asn}); !s) {
            return s;
        }
        // The challenge is spent with the hold, durably; challenges older than their life are forgotten.
        const auto now_s = static_cast<std::uint32_t>(wall_clock_ns() / 1'000'000'000ULL);
        const std::uint32_t forget_before_s = now_s > options_.challenge_ttl_s + 60 ? now_s - options_.challenge_ttl_s - 60 : 0;
        if (auto s = registry_.put_challenge_used(txn, online->clinic.challenge, forget_before_s); !s) return s;
        return count_terminal(registry_, txn, online->terminal_id, online->stan, online->batch_number, std::nullopt, 0);
    };
    submit(online, hold, hook, [this, online](ledger::ResultCode code) {
        using ledger::ResultCode;
        if (code == ResultCode::ok) stats_.holds_approved++;
        if (ledger::succeeded(code)) {
            online->field4 = online->held_fen;
            return answer(online, online->held_fen == online->amount_fen ? iso8583::ResponseCode::approved
                                                                         : iso8583::ResponseCode::partial_approval);
        }
        if (duplicate(code)) return answer(online, iso8583::ResponseCode::duplicate_transmission);
        // Another hold took the money between our read and the commit (the id is now failed for good:
        // the terminal asks again with a new STAN).
        if (code == ResultCode::exceeds_credits || code == ResultCode::id_already_failed) {
            return answer(online, iso8583::ResponseCode::insufficient_funds);
        }
        log_line(fmt::format("hold {}: {}", ledger::to_string(online->transfer_id), ledger::to_string(code)));
        answer(online, iso8583::ResponseCode::system_malfunction);
    });
}

// ---- 0400 / 0420 reversals --------------------------------------------------------------------------------

void Engine::reversal(const Message& request, SessionState& session, Respond respond) {
    if (is_load(request)) {
        if (auto online = begin_online(request, session, std::move(respond), load_code_of(request))) reverse_load(online);
        return;
    }
    if (auto online = begin_online(request, session, std::move(respond), ProcessingCode::medical_purchase)) reverse_hold(online);
}

void Engine::reverse_load(std::shared_ptr<Online> online) {
    auto reference = iso8583::parse_load_reference(online->request.get(62).value_or(""));
    if (!reference) return answer(online, ResponseCode::format_error);
    auto attempt = registry_.load_attempt(reference->asn, reference->online_atc);
    if (!attempt) {
        log_line("reversal: " + attempt.error().message);
        return answer(online, ResponseCode::system_malfunction);
    }
    // Only the terminal that asked for the load may reverse it.
    const bool found = *attempt && (*attempt)->terminal_id == online->terminal_id;
    // The reversal's key: the void's id when the load is known; else the terminal ‖ ASN ‖ online ATC it names.
    Bytes key(online->terminal_id.begin(), online->terminal_id.end());
    key.insert(key.end(), reference->asn.begin(), reference->asn.end());
    append_be(key, reference->online_atc, 2);
    online->transfer_id = found ? online_load_transfer(reference->asn, reference->online_atc, (*attempt)->attempt) : ledger::Id{};
    if (found) {
        // The 0200's processing code, not another (a refund is not reversed as a load, nor the reverse).
        auto original = ledger_.lookup_transfer(online->transfer_id);
        if (!original) {
            log_line("reversal: " + original.error().message);
            return answer(online, ResponseCode::system_malfunction);
        }
        if (*original && (*original)->code != transfer_code_of(funding_of(online->request))) {
            return answer(online, ResponseCode::invalid_transaction);
        }
    }
    online->reversal_key = found ? resolving_transfer(online->transfer_id, Resolution::void_hold) : ledger::derive_id(key);
    if (found) online->held_fen = (*attempt)->amount_fen;
    void_pending(online, BatchTotal::credit_reversal);
}

void Engine::reverse_hold(std::shared_ptr<Online> online) {
    const auto stan = original_stan(online->request);
    if (!stan) return answer(online, ResponseCode::format_error);
    const ledger::Id hold_id = clinic_hold_transfer(online->terminal_id, online->batch_number, *stan);
    auto hold = registry_.hold(hold_id);
    auto transfer = ledger_.lookup_transfer(hold_id);
    if (!hold || !transfer) {
        log_line("reversal: storage error");
        return answer(online, ResponseCode::system_malfunction);
    }
    const bool found = *hold && *transfer && *online->request.get(2) == std::string_view(bcd_to_digits((*hold)->asn)).substr(4);
    online->transfer_id = found ? hold_id : ledger::Id{};
    online->reversal_key = resolving_transfer(hold_id, Resolution::void_hold);
    online->held_fen = found ? (*transfer)->amount : 0;
    void_pending(online, BatchTotal::debit_reversal);
}

// The 0500 rule for reversals (ISO8583.md §4.7): every 0400 / 0420 answered 00 is counted once, with
// the amount of its own field 4 — what the terminal counts — whether it voided a load or a hold (in full
// or a partial hold), found it expired or posted, or did not find it. A repeat adds nothing.
lmdb::Status Engine::count_reversal(const Registry& registry, lmdb::Txn& txn, const Online& online, BatchTotal total) {
    auto added = registry.put_reversal(txn, online.reversal_key, online.amount_fen);
    if (!added) return Unexpected<lmdb::Error>{added.error()};
    return count_terminal(registry, txn, online.terminal_id, online.stan, online.batch_number,
                          *added ? std::optional<BatchTotal>(total) : std::nullopt, online.amount_fen);
}

// A reversal answered 00 with nothing for the ledger to do: only its count, in a write transaction.
void Engine::acknowledge_reversal(std::shared_ptr<Online> online, BatchTotal total) {
    auto hook = [this, online, total](lmdb::Txn& txn, std::span<const ledger::EventResult> results) {
        COCONUT_ASSERT(results.empty(), "no events, no results");
        return count_reversal(registry_, txn, *online, total);
    };
    auto on_commit = [this, online](ledger::Reply reply) {
        if (!reply) {
            log_line("reversal not counted: " + reply.error().message);
            return answer(online, ResponseCode::system_malfunction);  // the terminal repeats it
        }
        answer(online, ResponseCode::approved);
    };
    if (!writer_.try_submit({}, std::move(on_commit), std::move(hook))) answer(online, ResponseCode::issuer_inoperative);
}

// Voids online->transfer_id (zero: the original was not found). Idempotent: the void's id is derived.
void Engine::void_pending(std::shared_ptr<Online> online, BatchTotal total) {
    auto not_found = [&] {
        // An advice must be acknowledged or the terminal repeats it forever; nothing is booked.
        if (!online->advice) return answer(online, ResponseCode::unable_to_locate_record);
        log_line(fmt::format("0420 from {} STAN {}: original not found, acknowledged", online->terminal_id, online->stan));
        acknowledge_reversal(online, total);
    };
    if (online->transfer_id.zero()) return not_found();
    auto state = ledger_.pending_state(online->transfer_id);
    if (!state) {
        log_line("reversal: " + state.error().message);
        return answer(online, ResponseCode::system_malfunction);
    }
    if (!*state) return not_found();
    if (**state == ledger::PendingState::expired) return acknowledge_reversal(online, total);  // nothing left to release
    if (**state == ledger::PendingState::posted) {
        log_line(fmt::format("{} from {} STAN {}: original {} already posted, nothing reversed", online->request.mti(), online->terminal_id,
                             online->stan, ledger::to_string(online->transfer_id)));
        if (online->advice) return acknowledge_reversal(online, total);
        return answer(online, ResponseCode::invalid_transaction);
    }
    ledger::Transfer cancel;
    cancel.id = resolving_transfer(online->transfer_id, Resolution::void_hold);
    cancel.pending_id = online->transfer_id;
    cancel.flags = ledger::transfer_flags::void_pending;
    COCONUT_ASSERT(!cancel.pending_id.zero() && cancel.id != cancel.pending_id);
    auto hook = [this, online, total](lmdb::Txn& txn, ledger::ResultCode code) -> lmdb::Status {
        using ledger::ResultCode;
        const bool acknowledged = ledger::succeeded(code) || code == ResultCode::pending_transfer_expired ||
                                  (code == ResultCode::pending_transfer_already_posted && online->advice);
        if (!acknowledged) return Ok{};
        return count_reversal(registry_, txn, *online, total);
    };
    submit(online, cancel, hook, [this, online](ledger::ResultCode code) {
        using ledger::ResultCode;
        if (code == ResultCode::ok) stats_.reversals++;
        if (ledger::succeeded(code) || code == ResultCode::pending_transfer_expired) return answer(online, iso8583::ResponseCode::approved);
        if (code == ResultCode::pending_transfer_already_posted) {
            return answer(online, online->advice ? iso8583::ResponseCode::approved : iso8583::ResponseCode::invalid_transaction);
        }
        log_line(fmt::format("reversal of {}: {}", ledger::to_string(online->transfer_id), ledger::to_string(code)));
        answer(online, iso8583::ResponseCode::system_malfunction);
    });
}

}  // namespace coconut::clearing
