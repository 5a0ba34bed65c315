// The card lifecycle's routes (clearing/README.md "Card lifecycle"; the operations: card_lifecycle.hpp):
//   POST / DELETE /v1/cards/{n}/lost             the cardholder, with the card's token: report lost, found
//   POST / DELETE /v1/clerk/cards/{n}/lost       a counter (role counter), the holder's SSN checked
//   POST /v1/clerk/cards/{n}/replace             a counter: the new card, the balance carried after the wait
//   POST /v1/clerk/persons                       a counter: register a person (SSN → name, birth date, cards) or look one up
//   GET  /v1/clerk/cards/{n}/lifecycle           counter or read: where the lost card stands
//   GET  /v1/clerk/reports/lost-late-spending    counter or read: what lost cards paid after their carry
// Every write is journaled with who asked (a clerk's name, or "cardholder") in the commit of its effect.
// The SSN is compared and stored only as its keyed hash (Tokens::hash over "ssn:" ‖ SSN).
#include "api_internal.hpp"

#include <coconut/clearing/card_lifecycle.hpp>
#include <coconut/core/assert.hpp>

#include <fmt/format.h>

#include <algorithm>

namespace coconut::clearing::http::api {

namespace {

// The late-spending report reads at most this many lifecycle records (a page of the table).
constexpr std::size_t late_report_records_max = 10'000;

bool reported_lost(CardStatus status) { return status == CardStatus::lost || status == CardStatus::replaced; }

SsnHash ssn_hash(const Tokens& tokens, std::string_view ssn) { return tokens.hash("ssn:" + std::string(ssn)); }

LifecycleContext context_of(const Services& s) {
    COCONUT_ASSERT(s.lifecycle != nullptr);
    return LifecycleContext{s.ledger, s.registry, *s.lifecycle, s.lost_wait_s};
}

ApiResponse lost_refusal() {
    return error_response(403, "card_reported_lost", "card reported lost: its token answers only GET /v1/cards/{n} (its status)");
}

std::string card_text(const Asn& asn) { return to_string(card_number_of(asn)); }

// The record as the cardholder and the clerk see it.
json record_json(const LifecycleRecord& r, std::uint64_t wait_s) {
    json out{{"reported_at", iso_time(r.reported_ns)},
             {"reported_by", to_string(r.reporter)},
             {"state", to_string(r.state)},
             {"waiting_period_ends_at", iso_time(carry_due_ns(r, wait_s))}};
    out["replaced_by"] = r.state == CarryState::waiting ? json(nullptr) : json(card_text(r.replaced_by));
    if (r.state != CarryState::waiting) out["medical_carried_fen"] = r.medical_carried_fen;
    if (r.state == CarryState::carried) {
        out["carried_at"] = iso_time(r.carried_ns);
        out["carried_fen"] = r.carried_fen;
    }
    return out;
}

// The lost card's shadow balance the carry would move now (pending transfer), 0 when none.
std::int64_t pending_transfer_fen(const Services& s, const lmdb::Txn& txn, const Asn& lost) {
    auto shadow = s.ledger.lookup_account(txn, purse_shadow_account(lost));
    if (!shadow || !*shadow) return 0;
    return std::max<std::int64_t>(0, carry_amount(**shadow));
}

std::uint64_t holding_available(const Services& s, const lmdb::Txn& txn, const Asn& replacement) {
    auto holding = s.ledger.lookup_account(txn, carried_holding_account(replacement));
    if (!holding || !*holding) return 0;
    const std::uint64_t spent = (*holding)->debits_posted + (*holding)->debits_pending;
    return (*holding)->credits_posted > spent ? (*holding)->credits_posted - spent : 0;
}

// A LifecycleChange committed with its journal entry; refusals (the outcome) answer 409.
void commit_change(Call& call, LifecycleChange change, ClerkAction action, std::function<ApiResponse(const ClerkAction&)> answer) {
    Change c;
    c.events = std::move(change.events);
    c.write = [write = std::move(change.write)](lmdb::Txn& txn, std::span<const ledger::EventResult> results, ClerkAction& done) {
        return write(txn, results, done.outcome);
    };
    c.answer = std::move(answer);
    c.action = std::move(action);
    call.api.commit(std::move(c), std::move(call.respond));
}

// A refusal found before anything was submitted: journaled, answered 409 naming it.
void refuse(Call& call, ClerkAction action, std::string why) {
    auto write = [why](lmdb::Txn&, auto, ClerkAction& done) -> lmdb::Status {
        done.outcome = why;
        return Ok{};
    };
    call.api.commit(Change{{}, write, [](const ClerkAction& done) { return refused_or(done, 200, json::object()); }, std::move(action)},
                    std::move(call.respond));
}

std::optional<ApiResponse> no_lifecycle(const Services& s) {
    if (s.lifecycle == nullptr) return error_response(503, "unavailable", "the card lifecycle is not served here");
    return std::nullopt;
}

// ---- the cardholder's card ----

// The card of the path whose token was presented, or the request answered (404 as for a wrong token).
std::optional<Asn> token_card(Call& call) {
    auto txn = call.api.s.ledger.begin_read();
    if (!txn) {
        call.answer(storage_failure(txn.error().message));
        return std::nullopt;
    }
    auto token = presented_card_token(call, *txn);
    if (!token) return std::nullopt;
    return token->asn;
}

std::optional<CardRecord> read_card(Call& call, const Asn& asn) {
    auto card = call.s().registry.card(asn);
    if (!card || !*card) {
        call.answer(card ? not_found("card " + card_text(asn) + " is not registered") : storage_failure(card.error().message));
        return std::nullopt;
    }
    return **card;
}

ApiResponse status_answer(const Services& s, const Asn& asn) {
    auto txn = s.ledger.begin_read();
    if (!txn) return storage_failure(txn.error().message);
    auto card = s.registry.card_in(*txn, asn);
    auto record = s.lifecycle->record_in(*txn, asn);
    if (!card || !record || !*card) return storage_failure("registry read failed");
    json out{{"card_number", card_text(asn)}, {"status", to_string((*card)->status)}};
    if (*record) out["lost"] = record_json(**record, s.lost_wait_s);
    return json_response(200, out);
}

// ---- the counter's checks ----

// The "ssn" of a JSON body, normalised, or the request answered 400.
std::optional<std::string> body_ssn(Call& call, const json& body) {
    if (!body.contains("ssn") || !body.at("ssn").is_string()) {
        call.answer(bad_request("\"ssn\" (the holder's social-security number, read off the ID document) is required"));
        return std::nullopt;
    }
    auto ssn = normalize_ssn(body.at("ssn").get<std::string>());
    if (!ssn) {
        call.answer(bad_request(ssn.error()));
        return std::nullopt;
    }
    return *ssn;
}

struct CounterCard {
    Asn asn{};
    std::string text;
    SsnHash ssn{};
};

// The path's card and the body's SSN, checked against the card's holder (403 when it is not theirs),
// or the request answered.
std::optional<CounterCard> counter_card(Call& call, std::string_view action, json& body_out) {
    if (auto unavailable = no_lifecycle(call.s())) {
        call.answer(std::move(*unavailable));
        return std::nullopt;
    }
    auto registered = registered_card(call);
    if (!registered) return std::nullopt;
    auto body = object_body(call.request.body);
    if (!body) {
        call.answer(bad_request("body must be a JSON object"));
        return std::nullopt;
    }
    if (auto unknown = only_keys(*body, {"ssn", "new_card", "reason"})) {
        call.answer(bad_request(*unknown));
        return std::nullopt;
    }
    auto ssn = body_ssn(call, *body);
    if (!ssn) return std::nullopt;
    CounterCard card{registered->asn, registered->text, ssn_hash(call.s().tokens, *ssn)};
    auto txn = call.s().ledger.begin_read();
    if (!txn) {
        call.answer(storage_failure(txn.error().message));
        return std::nullopt;
    }
    auto owner = call.s().lifecycle->owner_in(*txn, card.asn);
    txn->abort();
    if (!owner) {
        call.answer(storage_failure(owner.error().message()));
        return std::nullopt;
    }
    if (!*owner || **owner != card.ssn) {
        call.api.refuse_by_rule(call.who(), std::string(action), card.text,
                                *owner ? "the SSN does not match the card's holder"
                                       : "no person record for the card: register its holder first (POST /v1/clerk/persons)",
                                std::move(call.respond));
        return std::nullopt;
    }
    body_out = std::move(*body);
    return card;
}

}  // namespace

// ---- cardholder routes ----------------------------------------------------------------------------------------

LifecycleView lifecycle_view(const Services& s, const lmdb::Txn& txn, const Asn& asn, const CardNumber& number) {
    LifecycleView view;
    auto card = s.registry.card_in(txn, asn);
    if (!card || !*card) return view;
    if (reported_lost((*card)->status)) {
        // Without the lifecycle tables (a standby serving reads) the status alone.
        auto record = s.lifecycle != nullptr ? s.lifecycle->record_in(txn, asn)
                                             : lmdb::Result<std::optional<LifecycleRecord>>{std::optional<LifecycleRecord>{}};
        json out{{"card_number", to_string(number)}, {"status", to_string((*card)->status)}};
        if (record && *record) {
            out["lost"] = record_json(**record, s.lost_wait_s);
            if ((*record)->state == CarryState::pending) out["lost"]["pending_transfer_fen"] = pending_transfer_fen(s, txn, asn);
        }
        view.lost_answer = json_response(200, out);
        return view;
    }
    if (s.lifecycle == nullptr) return view;
    auto replaces = s.lifecycle->replacing_in(txn, asn);
    if (!replaces || !*replaces) return view;
    const LifecycleRecord& r = **replaces;
    json carried{{"from_card", card_text(r.asn)}, {"state", to_string(r.state)}, {"collectable_fen", holding_available(s, txn, asn)}};
    if (r.state == CarryState::pending) {
        carried["pending_transfer_fen"] = pending_transfer_fen(s, txn, r.asn);
        carried["available_at"] = iso_time(carry_due_ns(r, s.lost_wait_s));
    } else {
        carried["carried_fen"] = r.carried_fen;
        carried["carried_at"] = iso_time(r.carried_ns);
    }
    view.carried = std::move(carried);
    return view;
}

std::optional<ApiResponse> refuse_lost_token(const Services& s, const lmdb::Txn& txn, const Asn& asn) {
    auto card = s.registry.card_in(txn, asn);
    if (card && *card && reported_lost((*card)->status)) return lost_refusal();
    return std::nullopt;
}

void cardholder_report_lost(Call& call) {
    if (auto unavailable = no_lifecycle(call.s())) return call.answer(std::move(*unavailable));
    const auto asn = token_card(call);
    if (!asn) return;
    const auto card = read_card(call, *asn);
    if (!card) return;
    if (reported_lost(card->status)) return call.answer(lost_refusal());
    const Services& s = call.s();
    auto change = report_lost(context_of(s), *asn, Reporter::cardholder, "cardholder", now_ns());
    commit_change(call, std::move(change), ClerkAction{0, 0, "cardholder", "report_lost", card_text(*asn), "ok", "by the card's token"},
                  [&s, asn = *asn](const ClerkAction& done) {
                      if (done.outcome != "ok") return refused_or(done, 200, json::object());
                      return status_answer(s, asn);
                  });
}

void cardholder_report_found(Call& call) {
    if (auto unavailable = no_lifecycle(call.s())) return call.answer(std::move(*unavailable));
    const auto asn = token_card(call);
    if (!asn) return;
    const Services& s = call.s();
    commit_change(call, report_found(context_of(s), *asn, now_ns()),
                  ClerkAction{0, 0, "cardholder", "report_found", card_text(*asn), "ok", "by the card's token"},
                  [&s, asn = *asn](const ClerkAction& done) {
                      if (done.outcome != "ok") return refused_or(done, 200, json::object());
                      return status_answer(s, asn);
                  });
}

// ---- counter routes -----------------------------------------------------------------------------------------------

void counter_report_lost(Call& call) {
    json body;
    const auto card = counter_card(call, "report_lost", body);
    if (!card) return;
    const Services& s = call.s();
    commit_change(call, report_lost(context_of(s), card->asn, Reporter::clerk, call.who().name, now_ns()),
                  action_of(call.who(), "report_lost", card->text, "identity checked (SSN)"),
                  [&s, asn = card->asn](const ClerkAction& done) {
                      if (done.outcome != "ok") return refused_or(done, 200, json::object());
                      return status_answer(s, asn);
                  });
}

void counter_report_found(Call& call) {
    json body;
    const auto card = counter_card(call, "report_found", body);
    if (!card) return;
    const Services& s = call.s();
    commit_change(call, report_found(context_of(s), card->asn, now_ns()),
                  action_of(call.who(), "report_found", card->text, "identity checked (SSN)"),
                  [&s, asn = card->asn](const ClerkAction& done) {
                      if (done.outcome != "ok") return refused_or(done, 200, json::object());
                      return status_answer(s, asn);
                  });
}

// POST /v1/clerk/cards/{n}/replace {"new_card":"16 digits","ssn":"…"}: the new card is one already
// registered (POST /v1/clerk/cards or `admin load`) and active; it joins the person's cards.
void counter_replace_card(Call& call) {
    json body;
    const auto card = counter_card(call, "replace", body);
    if (!card) return;
    if (!body.contains("new_card") || !body.at("new_card").is_string())
        return call.answer(bad_request("\"new_card\" (16 digits) is required"));
    auto new_number = parse_card_number(body.at("new_card").get<std::string>());
    if (!new_number) return call.answer(bad_request("\"new_card\" must be 16 digits"));
    auto new_asn = call.api.find_card(*new_number);
    if (!new_asn) return call.answer(storage_failure(new_asn.error().message));
    if (!*new_asn) return call.answer(not_found("new card " + to_string(*new_number) + " is not registered"));
    const Services& s = call.s();
    ClerkAction action = action_of(call.who(), "replace", card->text, "new card " + to_string(*new_number));
    auto change = replace_card(context_of(s), card->asn, **new_asn, card->ssn, now_ns());
    if (!change) {
        if (change.error().starts_with("storage: ")) return call.answer(storage_failure(change.error()));
        return refuse(call, std::move(action), change.error());
    }
    commit_change(call, std::move(change).value(), std::move(action), [&s, lost = card->asn](const ClerkAction& done) {
        if (done.outcome != "ok") return refused_or(done, 200, json::object());
        return status_answer(s, lost);
    });
}

namespace {

// The person of the body's SSN: name, birth date, cards with their status (journaled; 404 unknown).
void person_lookup(Call& call, const json& body) {
    const Services& s = call.s();
    auto ssn = body_ssn(call, body);
    if (!ssn) return;
    auto txn = s.ledger.begin_read();
    if (!txn) return call.answer(storage_failure(txn.error().message));
    auto person = s.lifecycle->person_in(*txn, ssn_hash(s.tokens, *ssn));
    if (!person) return call.answer(storage_failure(person.error().message()));
    if (!*person) {
        txn->abort();
        return call.api.journaled_read(not_found("no person registered with this SSN"),
                                       ClerkAction{0, 0, call.who().name, "person_lookup", "person", "not found", ""},
                                       std::move(call.respond));
    }
    json cards = json::array();
    for (const Asn& asn : (*person)->cards) {
        auto c = s.registry.card_in(*txn, asn);
        cards.push_back({{"card_number", card_text(asn)}, {"status", c && *c ? json(to_string((*c)->status)) : json(nullptr)}});
    }
    json out{{"name", (*person)->name}, {"birth_date", (*person)->birth_date}, {"cards", cards}};
    txn->abort();
    call.api.journaled_read(json_response(200, out), action_of(call.who(), "person_lookup", "person"), std::move(call.respond));
}

}  // namespace

// POST /v1/clerk/persons {"ssn"} looks a person up; {"ssn","name","birth_date","cards":[…]} registers one
// (or adds cards to the one registered with that name and birth date).
void counter_person(Call& call) {
    if (auto unavailable = no_lifecycle(call.s())) return call.answer(std::move(*unavailable));
    auto body = object_body(call.request.body);
    if (!body) return call.answer(bad_request("body must be a JSON object"));
    if (auto unknown = only_keys(*body, {"ssn", "name", "birth_date", "cards"})) return call.answer(bad_request(*unknown));
    const Services& s = call.s();
    if (!body->contains("name") && !body->contains("birth_date") && !body->contains("cards")) return person_lookup(call, *body);
    json entry = *body;
    entry.erase("cards");
    auto person = read_person(entry);
    if (!person) return call.answer(bad_request(person.error()));
    std::vector<Asn> cards;
    if (body->contains("cards")) {
        const json& listed = body->at("cards");
        if (!listed.is_array() || listed.size() > person_cards_max)
            return call.answer(bad_request("\"cards\" must be an array of card numbers"));
        for (const json& c : listed) {
            auto number = c.is_string() ? parse_card_number(c.get<std::string>()) : std::nullopt;
            if (!number) return call.answer(bad_request("\"cards\": each card number must be 16 digits"));
            auto asn = call.api.find_card(*number);
            if (!asn) return call.answer(storage_failure(asn.error().message));
            if (!*asn) return call.answer(not_found("card " + to_string(*number) + " is not registered"));
            cards.push_back(**asn);
        }
    }
    const SsnHash hash = ssn_hash(s.tokens, person->ssn);
    auto write = [&s, hash, entry = *person, cards](lmdb::Txn& txn, auto, ClerkAction& done) -> lmdb::Status {
        auto stored = s.lifecycle->person_in(txn, hash);
        if (!stored) return Unexpected{stored.error()};
        PersonRecord p = stored->value_or(PersonRecord{entry.name, entry.birth_date, {}});
        if (p.name != entry.name || p.birth_date != entry.birth_date) {
            done.outcome = "a person with this SSN is registered with another name or birth date";
            return Ok{};
        }
        for (const Asn& asn : cards) {
            auto owner = s.lifecycle->owner_in(txn, asn);
            if (!owner) return Unexpected{owner.error()};
            if (*owner && **owner != hash) {
                done.outcome = "card " + card_text(asn) + " belongs to another person";
                return Ok{};
            }
            if (std::find(p.cards.begin(), p.cards.end(), asn) == p.cards.end()) p.cards.push_back(asn);
        }
        if (p.cards.size() > person_cards_max) {
            done.outcome = "a person has at most 64 cards";
            return Ok{};
        }
        return s.lifecycle->put_person(txn, hash, p);
    };
    json answer{{"name", person->name}, {"birth_date", person->birth_date}};
    call.api.commit(Change{{},
                           write,
                           [answer](const ClerkAction& done) { return refused_or(done, 200, answer); },
                           action_of(call.who(), "person", "person", fmt::format("{} card(s)", cards.size()))},
                    std::move(call.respond));
}

void clerk_card_lifecycle(Call& call) {
    if (auto unavailable = no_lifecycle(call.s())) return call.answer(std::move(*unavailable));
    auto registered = registered_card(call);
    if (!registered) return;
    const Services& s = call.s();
    auto txn = s.ledger.begin_read();
    if (!txn) return call.answer(storage_failure(txn.error().message));
    auto record = s.lifecycle->record_in(*txn, registered->asn);
    auto card = s.registry.card_in(*txn, registered->asn);
    if (!record || !card || !*card) return call.answer(storage_failure("registry read failed"));
    json out{{"card_number", registered->text}, {"status", to_string((*card)->status)}};
    if (*record) {
        const LifecycleRecord& r = **record;
        json lost = record_json(r, s.lost_wait_s);
        lost["reported_by_name"] = r.reported_by;
        if (r.state == CarryState::pending) lost["pending_transfer_fen"] = pending_transfer_fen(s, *txn, r.asn);
        lost["late_after_carry"] = {{"account", "lost_late_spending"}, {"count", r.late_count}, {"fen", r.late_fen}};
        out["lost"] = lost;
    }
    auto view = lifecycle_view(s, *txn, registered->asn, registered->number);
    if (view.carried) out["carried"] = *view.carried;
    txn->abort();
    call.api.journaled_read(json_response(200, out), action_of(call.who(), "card_lifecycle", registered->text), std::move(call.respond));
}

// GET /v1/clerk/reports/lost-late-spending: the account's balance and, per lost card, what it paid offline
// after its balance was carried (transfer 12: the merchant paid from lost_late_spending, the issuer's
// claim on the cardholder).
void lost_late_spending_report(Call& call) {
    if (auto unavailable = no_lifecycle(call.s())) return call.answer(std::move(*unavailable));
    const Services& s = call.s();
    auto txn = s.ledger.begin_read();
    if (!txn) return call.answer(storage_failure(txn.error().message));
    auto account = s.ledger.lookup_account(*txn, lost_late_spending_account);
    auto records = s.lifecycle->records_in(*txn, Asn{}, late_report_records_max);
    if (!account || !records) return call.answer(storage_failure("ledger read failed"));
    json cards = json::array();
    for (const LifecycleRecord& r : *records) {
        if (r.late_count == 0) continue;
        cards.push_back({{"card_number", card_text(r.asn)},
                         {"replaced_by", card_text(r.replaced_by)},
                         {"carried_at", iso_time(r.carried_ns)},
                         {"late_count", r.late_count},
                         {"late_fen", r.late_fen}});
    }
    const std::uint64_t debits = *account ? (*account)->debits_posted : 0;
    json out{{"account", "lost_late_spending"},
             {"account_id", ledger::to_string(lost_late_spending_account)},
             {"debits_posted_fen", debits},
             {"cards", cards},
             {"truncated", records->size() == late_report_records_max}};
    txn->abort();
    call.api.journaled_read(json_response(200, out), action_of(call.who(), "lost_late_report", "lost_late_spending"),
                            std::move(call.respond));
}

}  // namespace coconut::clearing::http::api
