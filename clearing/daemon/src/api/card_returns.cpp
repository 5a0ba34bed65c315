// The service counter's money routes (role counter; clearing/README.md "Card return, refund and tourist
// cards"): POST /v1/clerk/cards/{n}/return, POST /v1/clerk/cards/{n}/refund-broken,
// POST /v1/clerk/tourist-cards, and GET /v1/clerk/reports/dormant (role read or counter).
//
// The three writes run one at a time (a second meanwhile is answered 503 busy): each checks what it reads
// (the card's status, its return record, the purchase, the shadow mirror) and then commits, and no other
// route changes those records, so nothing it checked can change before its commit. The ids of every
// transfer derive from the card and the code (plan.hpp card_money_transfer): however a request is
// retried, a card's refund moves once. Refusals are journaled like the changes.
#include "api_internal.hpp"

#include <coconut/clearing/registry_validator.hpp>
#include <coconut/core/assert.hpp>

#include <fmt/format.h>

namespace coconut::clearing::http::api {

namespace {

// ---- what every counter route shares ---------------------------------------------------------------------

// One counter write at a time: cleared when the request is answered.
std::optional<Api::Respond> take_counter(Call& call) {
    if (call.s().card_returns == nullptr) {
        call.answer(error_response(503, "unavailable", "the counter's tables are not open on this daemon"));
        return std::nullopt;
    }
    if (call.api.counter_busy.exchange(true)) {
        call.answer(busy("another counter action is being booked"));
        return std::nullopt;
    }
    return [&api = call.api, respond = std::move(call.respond)](ApiResponse r) {
        api.counter_busy.store(false);
        respond(std::move(r));
    };
}

// A refusal with its own code (409 unless said), journaled with the clerk's name before it is answered.
void refuse_counter(Call& call, Api::Respond respond, std::string what, std::string target, std::string_view code, std::string message,
                    unsigned status = 409) {
    ApiResponse refusal = error_response(status, code, message);
    ClerkAction action = action_of(call.who(), std::move(what), std::move(target));
    action.outcome = fmt::format("refused: {}: {}", code, message);
    call.api.commit(Change{{}, {}, [refusal](const ClerkAction&) { return refusal; }, std::move(action)}, std::move(respond));
}

// The card of the path's {n}: its ASN, or the request answered (400, 404, 503).
std::optional<Asn> path_card(Call& call) {
    auto card = registered_card(call);
    if (!card) return std::nullopt;
    return card->asn;
}

std::string number_text(const Asn& asn) { return to_string(card_number_of(asn)); }

// The waiting period of lost and broken cards (serve --lost-wait-days / --lost-wait-s).
std::chrono::seconds waiting_period(const Call& call) { return std::chrono::seconds(call.s().lost_wait_s); }

// The bank details of a payout by bank: {"bank_account","account_holder"}; what is wrong, or nothing.
std::optional<std::string> read_bank(const json& body, ReturnRecord& record) {
    for (const char* key : {"bank_account", "account_holder"}) {
        if (!body.contains(key) || !body[key].is_string()) return fmt::format("\"{}\" (a string) is required for a payout by bank", key);
    }
    record.bank_account = body["bank_account"].get<std::string>();
    record.account_holder = body["account_holder"].get<std::string>();
    auto printable = [](const std::string& s) { return std::all_of(s.begin(), s.end(), [](char c) { return c >= 0x20 && c < 0x7F; }); };
    if (record.bank_account.empty() || record.bank_account.size() > bank_account_chars_max || !printable(record.bank_account)) {
        return fmt::format("\"bank_account\" must be 1 to {} printable ASCII characters", bank_account_chars_max);
    }
    if (record.account_holder.empty() || record.account_holder.size() > account_holder_chars_max || !printable(record.account_holder)) {
        return fmt::format("\"account_holder\" must be 1 to {} printable ASCII characters", account_holder_chars_max);
    }
    return std::nullopt;
}

// ---- POST /v1/clerk/cards/{n}/return --------------------------------------------------------------------

struct ReturnRequest {
    std::string terminal_id;
    std::optional<ledger::Id> purchase_id;
    std::optional<std::uint32_t> terminal_serial;
    ReturnRecord record;  // payout and bank details
};

std::variant<ApiResponse, ReturnRequest> read_return(std::string_view text) {
    const auto body = object_body(text);
    if (!body) return bad_request("body must be a JSON object");
    if (auto bad = only_keys(*body, {"terminal_id", "purchase_id", "terminal_serial", "payout", "bank_account", "account_holder"})) {
        return bad_request(*bad);
    }
    ReturnRequest r;
    if (!body->contains("terminal_id") || !(*body)["terminal_id"].is_string() || (*body)["terminal_id"].get<std::string>().size() != 8) {
        return bad_request("\"terminal_id\" (8 characters, field 41) names the counter's terminal that took the balance");
    }
    r.terminal_id = (*body)["terminal_id"].get<std::string>();
    if (body->contains("purchase_id") && body->contains("terminal_serial")) {
        return bad_request("name the purchase by \"purchase_id\" (32 hex digits) or by \"terminal_serial\", not both");
    }
    if (body->contains("purchase_id")) {
        r.purchase_id = id_of_json((*body)["purchase_id"]);
        if (!r.purchase_id) return bad_request("\"purchase_id\" must be 32 hex digits");
    } else if (body->contains("terminal_serial")) {
        const json& serial = (*body)["terminal_serial"];
        if (!serial.is_number_unsigned() || serial.get<std::uint64_t>() > 0xFFFFFFFFu) {
            return bad_request("\"terminal_serial\" must be an integer 0 to 4294967295");
        }
        r.terminal_serial = static_cast<std::uint32_t>(serial.get<std::uint64_t>());
    }
    const auto payout =
        body->contains("payout") && (*body)["payout"].is_string() ? parse_payout((*body)["payout"].get<std::string>()) : std::nullopt;
    if (!payout) return bad_request("\"payout\" must be cash or bank");
    r.record.payout = *payout;
    if (*payout == Payout::bank) {
        if (auto bad = read_bank(*body, r.record)) return bad_request(*bad);
    } else if (body->contains("bank_account") || body->contains("account_holder")) {
        return bad_request("a cash payout takes no bank details");
    }
    return r;
}

struct CounterRefusal {
    std::string code;
    std::string message;
};

// Everything a return needs, read in one read transaction, or why it is refused.
struct ReturnCheck {
    ReturnPlan plan;
    ReturnRecord record;
    std::optional<TouristRecord> tourist;
};

std::optional<CounterRefusal> already_returned(const Asn& asn, const CardRecord& card, const std::optional<ReturnRecord>& record) {
    if (!record && card.status != CardStatus::returned) return std::nullopt;
    std::string how = record
                          ? fmt::format(" ({} {}, {})", to_string(record->kind), to_string(record->payout), iso_time(record->registered_ns))
                          : std::string();
    return CounterRefusal{"already_returned",
                          fmt::format("card {} was returned already{}: a card is returned once", number_text(asn), how)};
}

// A card reported lost is not returned at a counter (the cardholder who has it again reports it found
// first: DELETE …/lost), and a replaced one never: its balance moves to its replacement (clearing/README.md
// "Card lifecycle"), so a return would pay it twice.
std::optional<CounterRefusal> lost_refusal(const Asn& asn, const CardRecord& card) {
    if (card.status == CardStatus::replaced)
        return CounterRefusal{"card_replaced", fmt::format("card {} was replaced by a new card: its balance moves to the new card, "
                                                           "it is neither returned nor refunded",
                                                           number_text(asn))};
    if (card.status == CardStatus::lost)
        return CounterRefusal{"card_reported_lost",
                              fmt::format("card {} is reported lost: report it found first (DELETE /v1/clerk/cards/{{n}}/lost)",
                                          number_text(asn))};
    return std::nullopt;
}

// The purchase the request names must be a booked, TAC-proven purchase (code 1) of this card by this
// counter terminal's PSAM, credited to the counter's payable.
std::optional<CounterRefusal> purchase_refusal(const Asn& asn, const TerminalRecord& terminal,
                                               const std::optional<ledger::Transfer>& purchase, const ledger::Id& id) {
    if (!purchase || purchase->code != transfer_codes::offline_purchase) {
        return CounterRefusal{"purchase_not_booked",
                              fmt::format("no TAC-proven purchase {} is booked: upload the counter terminal's purchase of the whole balance "
                                          "first (an upload whose TAC failed is never booked)",
                                          id_hex(id))};
    }
    if (purchase->debit_account_id != purse_shadow_account(asn)) {
        return CounterRefusal{"purchase_of_another_card",
                              fmt::format("purchase {} was paid by another card, not {}", id_hex(id), number_text(asn))};
    }
    if (parse_place(purchase->user_data_128).terminal_id != terminal.psam_terminal_id ||
        purchase->credit_account_id != payable_account(terminal.participant_id, ledgers::purse)) {
        return CounterRefusal{"purchase_of_another_terminal", fmt::format("purchase {} was not made by terminal {}'s PSAM for its counter",
                                                                          id_hex(id), terminal.terminal_id)};
    }
    return std::nullopt;
}

std::variant<CounterRefusal, ReturnCheck> check_return(const Services& s, const HttpOptions& options, const Asn& asn,
                                                       const ReturnRequest& r) {
    auto txn = s.ledger.begin_read();
    if (!txn) return CounterRefusal{"storage", txn.error().message};
    auto card = s.registry.card_in(*txn, asn);
    auto record = s.card_returns->return_in(*txn, asn);
    auto tourist = s.card_returns->tourist_in(*txn, asn);
    auto terminal = s.registry.terminal_in(*txn, r.terminal_id);
    if (!card || !*card || !record || !tourist || !terminal) return CounterRefusal{"storage", "registry read failed"};
    if (auto returned = already_returned(asn, **card, *record)) return *returned;
    if (auto lost = lost_refusal(asn, **card)) return *lost;
    if (!*terminal) return CounterRefusal{"unknown_terminal", fmt::format("terminal {} is not registered", r.terminal_id)};
    auto participant = s.registry.participant_in(*txn, (*terminal)->participant_id);
    if (!participant) return CounterRefusal{"storage", "registry read failed"};
    if (!*participant || (*participant)->kind != "counter") {
        return CounterRefusal{"not_a_counter_terminal",
                              fmt::format("terminal {} does not belong to a participant of kind counter", r.terminal_id)};
    }
    // The purchase that took the balance; none named: an empty card (its cleared balance is 0 and no load
    // of it waits for its confirmation, so the card cannot hold money the clearing does not know of).
    std::optional<ledger::Id> id;
    std::uint64_t taken_fen = 0;
    if (r.purchase_id || r.terminal_serial) {
        id = r.purchase_id.value_or(offline_purchase_transfer(asn, (*terminal)->psam_terminal_id, r.terminal_serial.value_or(0)));
        auto purchase = s.ledger.lookup_transfer(*txn, *id);
        if (!purchase) return CounterRefusal{"storage", purchase.error().message};
        if (auto bad = purchase_refusal(asn, **terminal, *purchase, *id)) return *bad;
        taken_fen = (*purchase)->amount;
    }
    const std::string after = id ? "after purchase " + id_hex(*id) : "with no purchase named";
    if ((*card)->shadow_balance_fen < 0 || (!id && (*card)->unconfirmed_loads_fen > 0)) {  // money the clearing has not cleared (yet)
        return CounterRefusal{"balance_not_cleared",
                              fmt::format("card {}'s cleared balance {} is {} fen: the card held money not cleared "
                                          "here ({} fen of online loads not confirmed); return it once they are booked",
                                          number_text(asn), after, (*card)->shadow_balance_fen, (*card)->unconfirmed_loads_fen)};
    }
    if ((*card)->shadow_balance_fen != 0) {
        return CounterRefusal{id ? "partial_debit" : "not_empty",
                              fmt::format("card {}'s cleared balance {} is {} fen, not 0: the counter's purchase "
                                          "must take the whole balance (read it again and debit the rest{})",
                                          number_text(asn), after, (*card)->shadow_balance_fen, id ? "" : ", then name that purchase")};
    }
    ReturnCheck c;
    c.tourist = *tourist;
    const std::uint64_t deposit = c.tourist ? c.tourist->deposit_fen : 0;
    const std::uint64_t fee = c.tourist ? options.tourist_return_fee_fen : 0;  // only tourist cards pay the return fee
    c.plan = ReturnPlan{asn, (*terminal)->participant_id, r.record.payout, taken_fen, deposit, return_fee_split(taken_fen, deposit, fee)};
    c.record = r.record;
    c.record.asn = asn;
    c.record.kind = ReturnKind::counter;
    c.record.counter_id = (*terminal)->participant_id;
    c.record.terminal_id = r.terminal_id;
    c.record.purchase_id = id.value_or(ledger::Id{});
    c.record.balance_fen = taken_fen;
    c.record.deposit_fen = deposit;
    c.record.fee_fen = c.plan.fee.charged();
    return c;
}

// The card's status → returned (its hotlist entry in the same commit); the shadow mirror follows a refund from it.
lmdb::Status mark_returned(const Registry& registry, lmdb::Txn& txn, const Asn& asn, std::int64_t shadow_change_fen) {
    auto stored = registry.card_in(txn, asn);
    if (!stored) return Unexpected{stored.error()};
    COCONUT_ASSERT(stored->has_value(), "a returned card is registered");
    CardRecord card = **stored;
    auto recorded = registry.record_status_change(txn, asn, card.status, CardStatus::returned);
    if (!recorded) return Unexpected{recorded.error()};
    card.status = CardStatus::returned;
    card.shadow_balance_fen += shadow_change_fen;  // the mirror follows a refund from the shadow (code 20)
    return registry.put_card(txn, card);
}

json return_json(const ReturnRecord& r, const std::optional<TouristRecord>& tourist) {
    const std::uint64_t refunded = r.balance_fen + r.deposit_fen - r.fee_fen;
    json out{{"card_number", number_text(r.asn)},
             {"status", "returned"},
             {"kind", to_string(r.kind)},
             {"payout", to_string(r.payout)},
             {"balance_fen", r.balance_fen},
             {"deposit_fen", r.deposit_fen},
             {"fee_fen", r.fee_fen},
             {"tourist", tourist.has_value()},
             {"registered_at", iso_time(r.registered_ns)}};
    if (r.kind == ReturnKind::counter) {
        out["terminal_id"] = r.terminal_id;
        if (r.purchase_id != ledger::Id{}) out["purchase_id"] = id_hex(r.purchase_id);  // none: the card was empty
    }
    out[r.payout == Payout::cash ? "paid_cash_fen" : "refund_by_bank_fen"] = refunded;
    if (r.payout == Payout::bank) out["bank_account"] = r.bank_account;
    return out;
}

void book_return(Call& call, Api::Respond respond, ReturnCheck c) {
    const Services& s = call.s();
    const std::uint64_t now = now_ns();
    c.record.registered_ns = now;
    c.record.refunded_ns = now;
    if (c.tourist) {
        c.tourist->returned_ns = now;
        c.tourist->fee_fen = c.record.fee_fen;
    }
    auto write = [&registry = s.registry, &returns = *s.card_returns, c](lmdb::Txn& txn, std::span<const ledger::EventResult> results,
                                                                         ClerkAction& action) -> lmdb::Status {
        if (auto failed = first_failure(results)) {
            action.outcome = "ledger: " + *failed;
            return Ok{};
        }
        if (auto marked = mark_returned(registry, txn, c.record.asn, 0); !marked) return marked;
        if (c.tourist) {
            if (auto put = returns.put_tourist(txn, *c.tourist); !put) return put;
        }
        return returns.put_return(txn, c.record);
    };
    const json answer = return_json(c.record, c.tourist);
    const std::string detail =
        fmt::format("purchase {} at {}, payout {}, balance {} fen, deposit {} fen, fee {} fen", id_hex(c.record.purchase_id),
                    c.record.terminal_id, to_string(c.record.payout), c.record.balance_fen, c.record.deposit_fen, c.record.fee_fen);
    call.api.commit(Change{return_events(c.plan), write, [answer](const ClerkAction& done) { return refused_or(done, 201, answer); },
                           action_of(call.who(), "card_return", number_text(c.record.asn), detail)},
                    std::move(respond));
}

// ---- POST /v1/clerk/cards/{n}/refund-broken ------------------------------------------------------------

json waiting_json(const ReturnRecord& r, std::chrono::seconds wait) {
    const auto wait_ns = static_cast<std::uint64_t>(std::chrono::nanoseconds(wait).count());
    return {{"card_number", number_text(r.asn)},
            {"status", "returned"},
            {"state", "waiting"},
            {"registered_at", iso_time(r.registered_ns)},
            {"refund_after", iso_time(r.registered_ns + wait_ns)},
            {"bank_account", r.bank_account}};
}

// The first call: the card is hotlisted at once and its refund waits for late uploads.
void register_broken(Call& call, Api::Respond respond, ReturnRecord record) {
    const Services& s = call.s();
    auto write = [&registry = s.registry, &returns = *s.card_returns, record](lmdb::Txn& txn, auto, ClerkAction&) -> lmdb::Status {
        if (auto marked = mark_returned(registry, txn, record.asn, 0); !marked) return marked;
        return returns.put_return(txn, record);
    };
    const json answer = waiting_json(record, waiting_period(call));
    std::vector<ledger::Event> accounts;  // the refund's account exists from now (the dormancy report reads it)
    append_card_money_accounts(accounts, record.asn);
    call.api.commit(Change{std::move(accounts), write, [answer](const ClerkAction& done) { return refused_or(done, 202, answer); },
                           action_of(call.who(), "refund_broken", number_text(record.asn), "registered, hotlisted; refund after the wait")},
                    std::move(respond));
}

// A later call after the wait: the shadow (what the card still held once every late upload was booked)
// and a tourist card's deposit less the fee go to refund_payable; settlement pays them by bank.
void book_broken(Call& call, Api::Respond respond, ReturnRecord record, const CardRecord& card, std::optional<TouristRecord> tourist) {
    const Services& s = call.s();
    const std::uint64_t deposit = tourist ? tourist->deposit_fen : 0;
    const std::uint64_t fee = std::min(tourist ? call.api.options.tourist_return_fee_fen : 0, deposit);
    const std::int64_t shadow = card.shadow_balance_fen;
    record.refunded_ns = now_ns();
    record.balance_fen = shadow > 0 ? static_cast<std::uint64_t>(shadow) : 0;
    record.deposit_fen = deposit;
    record.fee_fen = fee;
    if (tourist) {
        tourist->returned_ns = record.refunded_ns;
        tourist->fee_fen = fee;
    }
    auto write = [&registry = s.registry, &returns = *s.card_returns, record,
                  tourist](lmdb::Txn& txn, std::span<const ledger::EventResult> results, ClerkAction& action) -> lmdb::Status {
        if (auto failed = first_failure(results)) {
            action.outcome = "ledger: " + *failed;
            return Ok{};
        }
        if (auto marked = mark_returned(registry, txn, record.asn, -static_cast<std::int64_t>(record.balance_fen)); !marked) return marked;
        if (tourist) {
            if (auto put = returns.put_tourist(txn, *tourist); !put) return put;
        }
        return returns.put_return(txn, record);
    };
    json answer = return_json(record, tourist);
    answer["state"] = "refunded";
    answer["refunded_at"] = iso_time(record.refunded_ns);
    call.api.commit(Change{broken_refund_events(record.asn, shadow, deposit, fee), write,
                           [answer](const ClerkAction& done) { return refused_or(done, 200, answer); },
                           action_of(call.who(), "refund_broken", number_text(record.asn),
                                     fmt::format("refunded: shadow {} fen, deposit {} fen, fee {} fen", record.balance_fen, deposit, fee))},
                    std::move(respond));
}

// ---- POST /v1/clerk/tourist-cards ---------------------------------------------------------------------------

struct Sale {
    std::string card_number;
    std::uint64_t seller_id = 0;
    std::uint64_t deposit_fen = 0;
};

std::variant<ApiResponse, Sale> read_sale(std::string_view text) {
    const auto body = object_body(text);
    if (!body) return bad_request("body must be a JSON object");
    if (auto bad = only_keys(*body, {"card_number", "seller_id", "deposit_fen"})) return bad_request(*bad);
    Sale sale;
    if (!body->contains("card_number") || !(*body)["card_number"].is_string())
        return bad_request("\"card_number\" (16 digits) is required");
    sale.card_number = (*body)["card_number"].get<std::string>();
    for (auto [key, out, max] : {std::tuple{"seller_id", &sale.seller_id, std::uint64_t{99'999'999'999}},
                                 std::tuple{"deposit_fen", &sale.deposit_fen, tourist_deposit_fen_max}}) {
        if (!body->contains(key) || !(*body)[key].is_number_unsigned() || (*body)[key].get<std::uint64_t>() < 1 ||
            (*body)[key].get<std::uint64_t>() > max) {
            return bad_request(fmt::format("\"{}\" must be an integer 1 to {}", key, max));
        }
        *out = (*body)[key].get<std::uint64_t>();
    }
    return sale;
}

std::optional<CounterRefusal> sale_refusal(const Services& s, const Asn& asn, const Sale& sale) {
    auto txn = s.ledger.begin_read();
    if (!txn) return CounterRefusal{"storage", txn.error().message};
    auto card = s.registry.card_in(*txn, asn);
    auto tourist = s.card_returns->tourist_in(*txn, asn);
    auto record = s.card_returns->return_in(*txn, asn);
    auto seller = s.registry.participant_in(*txn, sale.seller_id);
    if (!card || !*card || !tourist || !record || !seller) return CounterRefusal{"storage", "registry read failed"};
    if (auto returned = already_returned(asn, **card, *record)) return returned;
    if (*tourist)
        return CounterRefusal{"already_sold",
                              fmt::format("card {} was sold as a tourist card at {}", sale.card_number, iso_time((*tourist)->sold_ns))};
    if ((*card)->status != CardStatus::active) {
        return CounterRefusal{"card_not_active",
                              fmt::format("card {} is {}: only an active card is sold", sale.card_number, to_string((*card)->status))};
    }
    if (!*seller || (*seller)->kind != "counter") {
        return CounterRefusal{"not_a_counter",
                              fmt::format("participant {} is not a registered participant of kind counter", sale.seller_id)};
    }
    return std::nullopt;
}

}  // namespace

void return_card(Call& call) {
    const auto asn = path_card(call);
    if (!asn) return;
    auto request = read_return(call.request.body);
    if (auto* bad = std::get_if<ApiResponse>(&request)) return call.answer(std::move(*bad));
    auto respond = take_counter(call);
    if (!respond) return;
    auto checked = check_return(call.s(), call.api.options, *asn, std::get<ReturnRequest>(request));
    if (auto* refusal = std::get_if<CounterRefusal>(&checked)) {
        if (refusal->code == "storage") return (*respond)(storage_failure(refusal->message));
        return refuse_counter(call, std::move(*respond), "card_return", number_text(*asn), refusal->code, refusal->message);
    }
    book_return(call, std::move(*respond), std::move(std::get<ReturnCheck>(checked)));
}

void refund_broken(Call& call) {
    const auto asn = path_card(call);
    if (!asn) return;
    const auto body = object_body(call.request.body);
    if (!body) return call.answer(bad_request("body must be a JSON object"));
    if (auto bad = only_keys(*body, {"bank_account", "account_holder"})) return call.answer(bad_request(*bad));
    ReturnRecord asked;
    if (auto bad = read_bank(*body, asked)) return call.answer(bad_request(*bad + " (a broken card is refunded by bank)"));
    auto respond = take_counter(call);
    if (!respond) return;
    const Services& s = call.s();
    auto card = s.registry.card(*asn);
    auto record = s.card_returns->return_of(*asn);
    auto tourist = s.card_returns->tourist_of(*asn);
    if (!card || !*card || !record || !tourist) return (*respond)(storage_failure("registry read failed"));
    const std::string target = number_text(*asn);
    if (!*record) {
        if (auto returned = already_returned(*asn, **card, *record)) {
            return refuse_counter(call, std::move(*respond), "refund_broken", target, returned->code, returned->message);
        }
        // A lost card may be refunded as a broken one (the cardholder wants no replacement); a replaced one not.
        if ((*card)->status == CardStatus::replaced) {
            const auto replaced = lost_refusal(*asn, **card);
            return refuse_counter(call, std::move(*respond), "refund_broken", target, replaced->code, replaced->message);
        }
        asked.asn = *asn;
        asked.kind = ReturnKind::broken;
        asked.payout = Payout::bank;
        asked.registered_ns = now_ns();
        return register_broken(call, std::move(*respond), asked);
    }
    const ReturnRecord& stored = **record;
    if (stored.kind != ReturnKind::broken) {
        return refuse_counter(call, std::move(*respond), "refund_broken", target, "already_returned",
                              fmt::format("card {} was returned at a counter at {}: a card is refunded once", target,
                                          iso_time(stored.registered_ns)));
    }
    if (stored.refunded_ns != 0) {  // a repeat after the refund: the same answer, nothing booked
        json answer = return_json(stored, *tourist);
        answer["state"] = "refunded";
        answer["refunded_at"] = iso_time(stored.refunded_ns);
        return call.api.journaled_read(json_response(200, answer), action_of(call.who(), "refund_broken", target, "already refunded"),
                                       std::move(*respond));
    }
    const auto wait_ns = static_cast<std::uint64_t>(std::chrono::nanoseconds(waiting_period(call)).count());
    if (now_ns() < stored.registered_ns + wait_ns) {
        return call.api.journaled_read(json_response(202, waiting_json(stored, waiting_period(call))),
                                       action_of(call.who(), "refund_broken", target, "waiting"), std::move(*respond));
    }
    book_broken(call, std::move(*respond), stored, **card, *tourist);
}

void sell_tourist_card(Call& call) {
    auto read = read_sale(call.request.body);
    if (auto* bad = std::get_if<ApiResponse>(&read)) return call.answer(std::move(*bad));
    const Sale sale = std::get<Sale>(read);
    auto number = parse_card_number(sale.card_number);
    if (!number) return call.answer(bad_request("\"card_number\" must be 16 digits"));
    call.params[0] = sale.card_number;  // path_card reads it there
    const auto asn = path_card(call);
    if (!asn) return;
    auto respond = take_counter(call);
    if (!respond) return;
    const Services& s = call.s();
    if (auto refusal = sale_refusal(s, *asn, sale)) {
        if (refusal->code == "storage") return (*respond)(storage_failure(refusal->message));
        return refuse_counter(call, std::move(*respond), "tourist_sale", sale.card_number, refusal->code, refusal->message);
    }
    const TouristRecord record{*asn, sale.seller_id, sale.deposit_fen, now_ns(), 0, 0};
    auto write = [&returns = *s.card_returns, record](lmdb::Txn& txn, std::span<const ledger::EventResult> results,
                                                      ClerkAction& action) -> lmdb::Status {
        if (auto failed = first_failure(results)) {
            action.outcome = "ledger: " + *failed;
            return Ok{};
        }
        return returns.put_tourist(txn, record);
    };
    const json answer{{"card_number", sale.card_number},
                      {"seller_id", sale.seller_id},
                      {"deposit_fen", sale.deposit_fen},
                      {"sold_at", iso_time(record.sold_ns)}};
    call.api.commit(Change{sale_events(*asn, sale.seller_id, sale.deposit_fen), write,
                           [answer](const ClerkAction& done) { return refused_or(done, 201, answer); },
                           action_of(call.who(), "tourist_sale", sale.card_number,
                                     fmt::format("deposit {} fen collected by participant {}", sale.deposit_fen, sale.seller_id))},
                    std::move(*respond));
}

void dormant_report_route(Call& call) {
    const Services& s = call.s();
    if (s.card_returns == nullptr)
        return call.answer(error_response(503, "unavailable", "the counter's tables are not open on this daemon"));
    std::uint64_t min_days = 0;
    if (auto text = call.target.param("min_days")) {
        auto parsed = parse_u64(*text);
        if (!parsed || *parsed > 100'000) return call.answer(bad_request("min_days must be an integer 0 to 100000"));
        min_days = *parsed;
    }
    auto report = dormant_report(s.ledger, s.registry, *s.card_returns, now_ns());
    if (!report) return call.answer(storage_failure(report.error().message));
    json cards = json::array();
    for (const DormantCard& d : *report) {
        if (d.days_dormant < min_days) continue;
        cards.push_back({{"card_number", number_text(d.asn)},
                         {"what", d.what},
                         {"status", d.status},
                         {"balance_fen", d.balance_fen},
                         {"deposit_fen", d.deposit_fen},
                         {"refund_fen", d.refund_fen},
                         {"last_activity", iso_time(d.last_activity_ns)},
                         {"days_dormant", d.days_dormant}});
    }
    const json out{{"cards", cards}, {"count", cards.size()}};
    call.api.journaled_read(json_response(200, out), action_of(call.who(), "dormant_report", "tourist cards and unpaid refunds"),
                            std::move(call.respond));
}

}  // namespace coconut::clearing::http::api
