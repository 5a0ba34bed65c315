// The clerk's cards: GET /v1/clerk/cards/{n} (role read, journaled), PUT …/{n}/status (role hotlist),
// POST …/{n}/token (role registry), POST /v1/clerk/cards (role registry: a card, its accounts, opening
// balances and token in one commit).
#include "api_internal.hpp"

#include <coconut/clearing/registry_validator.hpp>
#include <coconut/core/assert.hpp>

#include <fmt/format.h>

namespace coconut::clearing::http::api {

namespace {

CardToken new_card_token(const Tokens& tokens, const Asn& asn, const std::string& token) {
    return CardToken{asn, tokens.hash(token), now_ns()};
}

}  // namespace

std::optional<RegisteredCard> registered_card(Call& call) {
    auto number = parse_card_number(call.params[0]);
    if (!number) {
        call.answer(bad_request("card number must be 16 digits"));
        return std::nullopt;
    }
    auto asn = call.api.find_card(*number);
    if (!asn) {
        call.answer(storage_failure(asn.error().message));
        return std::nullopt;
    }
    if (!*asn) {
        call.answer(not_found("card " + to_string(*number) + " is not registered"));
        return std::nullopt;
    }
    COCONUT_ASSERT(card_number_of(**asn) == *number, "a card is found by its own number");
    return RegisteredCard{*number, **asn, to_string(*number)};
}

json risk_json(const RiskFlag& f) {
    return {{"kind", to_string(f.kind)},
            {"card_number", to_string(card_number_of(f.asn))},
            {"atc", f.atc},
            {"type", fmt::format("{:02X}", f.type)},
            {"time", iso_time(f.timestamp_ns)},
            {"detail", f.detail}};
}

void clerk_card_lookup(Call& call) {
    const auto card = registered_card(call);
    if (!card) return;
    const Services& s = call.s();
    auto record = s.registry.card(card->asn);
    // The card's first page of flags; the rest through GET /v1/clerk/risk?card=…&cursor=….
    auto flags = s.registry.risk_page("", risk_page_default, card->asn);
    auto token = s.tokens.card_token(card->number);
    if (!record || !*record || !flags || !token) return call.answer(storage_failure("registry read failed"));
    json risk = json::array();
    for (const auto& f : flags->flags) risk.push_back(risk_json(f));
    const CardRecord& c = **record;
    json out{{"card_number", card->text},
             {"asn", bcd_to_digits(c.asn)},
             {"status", to_string(c.status)},
             {"shadow_balance_fen", c.shadow_balance_fen},
             {"offline_purchases", c.offline_purchases},
             {"risk_flag_count", c.risk_flags},
             {"risk_flags", risk},
             {"risk_flags_next_cursor", flags->next_cursor.empty() ? json(nullptr) : json(flags->next_cursor)},
             {"token_issued_at", *token ? json(iso_time((*token)->issued_ns)) : json(nullptr)}};
    call.api.journaled_read(json_response(200, out), action_of(call.who(), "card_lookup", card->text), std::move(call.respond));
}

// PUT /v1/clerk/cards/{n}/status {"status":"active"|"lost"|"blocked","reason":"…"}: the hotlist.
void set_card_status(Call& call) {
    const auto card = registered_card(call);
    if (!card) return;
    std::optional<CardStatus> status;
    std::string reason;
    if (auto bad = read_status_body(call.request, parse_card_status, {"active", "lost", "blocked"}, status, reason)) {
        return call.answer(std::move(*bad));
    }
    const Registry& registry = call.s().registry;
    // Read-modify-write inside the writer's transaction: the engine's hooks update the same record.
    auto write = [&registry, asn = card->asn, status = *status](lmdb::Txn& txn, auto, ClerkAction& action) -> lmdb::Status {
        auto stored = registry.card_in(txn, asn);
        if (!stored) return Unexpected{stored.error()};
        if (!*stored) {
            action.outcome = "card not registered";
            return Ok{};
        }
        CardRecord record = **stored;
        if (record.status == CardStatus::replaced) {
            action.outcome = "card replaced by a new card: its status stays replaced";
            return Ok{};
        }
        if (record.status == CardStatus::returned) {
            action.outcome = "card was returned and refunded: its status is final";
            return Ok{};
        }
        // The hotlist terminals download (ISO8583.md §4.6) gets its new version in the same commit.
        auto recorded = registry.record_status_change(txn, asn, record.status, status);
        if (!recorded) return Unexpected{recorded.error()};
        record.status = status;
        return registry.put_card(txn, record);
    };
    json answer{{"card_number", card->text}, {"status", to_string(*status)}};
    call.api.commit(Change{{},
                           write,
                           [answer](const ClerkAction& done) { return refused_or(done, 200, answer); },
                           action_of(call.who(), "card_status", card->text, fmt::format("{} {}", to_string(*status), reason))},
                    std::move(call.respond));
}

// POST /v1/clerk/cards/{n}/token: issuing again replaces the card's token; the old one stops working
// (a lost phone). The token is shown once, in the 201.
void issue_card_token(Call& call) {
    const auto card = registered_card(call);
    if (!card) return;
    const Tokens& tokens = call.s().tokens;
    auto token = std::make_shared<std::string>(Tokens::new_token(card_token_prefix));
    const CardToken stored = new_card_token(tokens, card->asn, *token);
    auto write = [&tokens, number = card->number, stored](lmdb::Txn& txn, auto, ClerkAction&) {
        return tokens.put_card_token(txn, number, stored);
    };
    auto answer = [token, text = card->text](const ClerkAction&) {
        return json_response(201, json{{"card_number", text}, {"token", *token}});
    };
    call.api.commit(Change{{}, write, answer, action_of(call.who(), "card_token", card->text, "issued (replaces any earlier token)")},
                    std::move(call.respond));
}

// POST /v1/clerk/cards: field names as in the registry file (clearing/README.md), checked by the
// registry validator as `admin load` checks them.
void register_card(Call& call) {
    const auto body = object_body(call.request.body);
    if (!body) return call.answer(bad_request("body must be a JSON object"));
    if (body->contains("person"))
        return call.answer(bad_request("unknown field \"person\": register the holder with POST /v1/clerk/persons"));
    auto read = read_card(*body);
    if (!read) return call.answer(bad_request(read.error()));
    const CardRecord card = std::move(read).value();
    std::vector<ledger::Event> events;
    append_card_opening(events, card);
    const CardNumber number = card_number_of(card.asn);
    const Registry& registry = call.s().registry;
    const Tokens& tokens = call.s().tokens;
    auto token = std::make_shared<std::string>(Tokens::new_token(card_token_prefix));
    auto write = [&registry, &tokens, card, number,
                  stored = new_card_token(tokens, card.asn, *token)](lmdb::Txn& txn, std::span<const ledger::EventResult> results,
                                                                     ClerkAction& action) -> lmdb::Status {
        auto existing = registry.card_in(txn, card.asn);
        if (!existing) return Unexpected{existing.error()};
        auto same_number = tokens.card_token_in(txn, number);
        if (!same_number) return Unexpected{same_number.error()};
        if (*existing) {
            action.outcome = "card already registered (its accounts and balances are kept)";
        } else if (*same_number && (*same_number)->asn != card.asn) {
            action.outcome = "another card has the same card number (the ASN's rightmost 16 digits)";
        } else if (auto failed = first_failure(results)) {
            action.outcome = "ledger: " + *failed;
        }
        if (action.outcome != "ok") return Ok{};
        if (auto put = registry.put_card(txn, card); !put) return put;
        return tokens.put_card_token(txn, number, stored);
    };
    const std::string card_text = to_string(number);
    json answer{{"card_number", card_text}, {"asn", bcd_to_digits(card.asn)}, {"status", to_string(card.status)}};
    auto respond_with = [answer, token](const ClerkAction& done) {
        json out = answer;
        if (done.outcome == "ok") out["token"] = *token;
        return refused_or(done, 201, out);
    };
    call.api.commit(Change{std::move(events), write, respond_with,
                           action_of(call.who(), "card", card_text,
                                     fmt::format("purse {} fen, medical {} fen", card.opening_balance_fen, card.medical_opening_fen))},
                    std::move(call.respond));
}

}  // namespace coconut::clearing::http::api
