// GET /v1/cards/{n} and GET /v1/cards/{n}/transactions: a cardholder's balance and history, with the
// card's own token (the router checked it is a bearer token within its rate). 404 when the token is not
// this card's, whether the card exists or not; every read of the answer in ONE read transaction (one
// snapshot, one reader slot renewal), closed before the answer is sent.
#include "api_internal.hpp"

#include <coconut/core/assert.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <variant>

namespace coconut::clearing::http::api {

namespace {

struct CardAccounts {
    ledger::Id purse;
    ledger::Id medical;
};

std::int64_t cleared(const ledger::Account& a) {
    return static_cast<std::int64_t>(a.credits_posted) - static_cast<std::int64_t>(a.debits_posted);
}

// What a cardholder sees a transfer as (transfer_codes; the participant's kind tells bus from shop).
std::string_view kind_of(const ledger::Transfer& t, std::string_view participant_kind) {
    const bool voided = (t.flags & ledger::transfer_flags::void_pending) != 0;
    switch (t.code) {
        case transfer_codes::offline_purchase:
        case transfer_codes::tac_failed:
            if (participant_kind == "bus") return "bus";
            if (participant_kind == "clinic") return "clinic";
            if (participant_kind == "counter") return "counter";  // a return: the balance taken at a service counter
            return "shop";
        case transfer_codes::opening_balance: return "load";
        case transfer_codes::online_load: return voided ? "reversal" : "load";
        case transfer_codes::clinic_medical: return voided ? "reversal" : "clinic";
        case transfer_codes::manual_adjustment: return "adjustment";
        // An unreadable card's balance refunded by bank; a same-day refund (ISO8583.md §4.10): a visit's medical part back.
        case transfer_codes::broken_card_refund:
        case transfer_codes::medical_refund: return "refund";
        case transfer_codes::purchase_refund: return voided ? "reversal" : "refund";  // a purchase's credit back to the purse
        default: return "other";
    }
}

std::string_view state_of(const ledger::Transfer& t) {
    if ((t.flags & ledger::transfer_flags::pending) != 0) return "pending";
    if ((t.flags & ledger::transfer_flags::void_pending) != 0) return "voided";
    if (t.code == transfer_codes::tac_failed) return "under_review";  // booked to suspense
    return "posted";
}

std::string bcd_local_time(const std::array<std::uint8_t, 5>& bcd) {
    const std::string d = bcd_to_digits(bcd);  // YYMMDDhhmm
    return fmt::format("20{}-{}-{}T{}:{}", d.substr(0, 2), d.substr(2, 2), d.substr(4, 2), d.substr(6, 2), d.substr(8, 2));
}

// Participants by id, read once per request.
struct Participants {
    const Registry& registry;
    const lmdb::Txn& txn;
    std::map<std::uint64_t, std::optional<Participant>> cache;
    const std::optional<Participant>& get(std::uint64_t id) {
        auto [it, fresh] = cache.try_emplace(id);
        if (fresh && id != 0) {
            auto found = registry.participant_in(txn, id);
            if (found) it->second = *found;
        }
        return it->second;
    }
};

// The card a cardholder request is for, read in the request's one snapshot.
struct CardHolder {
    CardNumber number;
    CardToken token;
};

// The read transaction and the card, or the request answered (404 for a token that is not the card's,
// counted against the address like a missing token).
std::optional<std::pair<lmdb::Txn, CardHolder>> open_card(Call& call) {
    auto txn = call.api.s.ledger.begin_read();
    if (!txn) {
        call.answer(storage_failure(txn.error().message));
        return std::nullopt;
    }
    auto token = presented_card_token(call, *txn);
    if (!token) return std::nullopt;
    return std::pair{std::move(txn).value(), CardHolder{card_number_of(token->asn), *token}};
}

// One account's {…} of the balance answer, or null.
void account_json(std::string& body, const std::optional<ledger::Account>& account, bool medical) {
    if (!account) {
        body += "null";
        return;
    }
    const ledger::Account& a = *account;
    auto to = std::back_inserter(body);
    if (medical) {
        fmt::format_to(to, R"({{"available_fen":{},"balance_fen":{},"pending_debit_fen":{}}})",
                       cleared(a) - static_cast<std::int64_t>(a.debits_pending), cleared(a), a.debits_pending);
    } else {
        fmt::format_to(to, R"({{"balance_fen":{},"pending_credit_fen":{},"pending_debit_fen":{}}})", cleared(a), a.credits_pending,
                       a.debits_pending);
    }
}

// The hottest answer: formatted directly into one buffer (every value is a number, digits or a fixed
// word), not through a JSON tree, whose allocations showed in the profile under wrk.
ApiResponse balance(const Services& s, const lmdb::Txn& txn, const CardHolder& holder) {
    const Asn& asn = holder.token.asn;
    auto record = s.registry.card_in(txn, asn);
    if (!record) return storage_failure(record.error().message());
    if (!*record) return not_found("no such card for this token");
    COCONUT_ASSERT((*record)->asn == asn, "the registry answers the card asked for");
    const CardAccounts accounts{purse_shadow_account(asn), medical_account(asn)};
    auto purse = s.ledger.lookup_account(txn, accounts.purse);
    auto medical = s.ledger.lookup_account(txn, accounts.medical);
    if (!purse || !medical) return storage_failure("ledger read failed");
    std::uint64_t last_ns = 0;
    for (const ledger::Id& id : {accounts.purse, accounts.medical}) {
        auto newest = s.ledger.latest_transfer_timestamp(txn, id);
        if (!newest) return storage_failure(newest.error().message);
        last_ns = std::max(last_ns, *newest);
    }
    ApiResponse out{200, "application/json", {}, {}, {}};
    out.body.reserve(320);
    fmt::format_to(std::back_inserter(out.body), R"({{"card_number":"{}","currency":"CNY","last_cleared_at":)", to_string(holder.number));
    if (last_ns) {
        fmt::format_to(std::back_inserter(out.body), "\"{}\"", iso_time(last_ns));
    } else {
        out.body += "null";
    }
    out.body += R"(,"medical":)";
    account_json(out.body, *medical, true);
    out.body += R"(,"purse":)";
    account_json(out.body, *purse, false);
    fmt::format_to(std::back_inserter(out.body), R"(,"status":"{}"}})", to_string((*record)->status));
    return out;
}

// Balance snapshots of `account` from `oldest` to `newest` (ns), by timestamp.
std::map<std::uint64_t, ledger::Balance> snapshots(const Services& s, const lmdb::Txn& txn, const ledger::Id& account, std::uint64_t oldest,
                                                   std::uint64_t newest) {
    constexpr std::size_t chunk = 256;
    std::map<std::uint64_t, ledger::Balance> out;
    for (std::uint64_t after = oldest - 1;;) {
        auto page = s.ledger.account_balances(txn, account, after, chunk);
        if (!page || page->empty()) break;
        for (const auto& b : *page) {
            if (b.timestamp > newest) return out;
            out.emplace(b.timestamp, b);
        }
        if (page->size() < chunk) break;
        after = page->back().timestamp;
    }
    return out;
}

// The balance after each listed transfer, per account (0 purse, 1 medical).
using BalancesAfter = std::array<std::map<std::uint64_t, ledger::Balance>, 2>;

BalancesAfter balances_after(const Services& s, const lmdb::Txn& txn, const CardAccounts& accounts,
                             const std::vector<ledger::Transfer>& listed) {
    BalancesAfter balances;
    for (int which = 0; which < 2; ++which) {
        const ledger::Id& account = which == 0 ? accounts.purse : accounts.medical;
        std::uint64_t oldest = ~std::uint64_t{0}, newest = 0;
        for (const auto& t : listed) {
            if (t.debit_account_id != account && t.credit_account_id != account) continue;
            oldest = std::min(oldest, t.timestamp);
            newest = std::max(newest, t.timestamp);
        }
        if (newest != 0) balances[which] = snapshots(s, txn, account, oldest, newest);
    }
    return balances;
}

json history_item(const ledger::Transfer& t, const CardAccounts& accounts, const BalancesAfter& balances, Participants& participants) {
    const int which = (t.debit_account_id == accounts.purse || t.credit_account_id == accounts.purse) ? 0 : 1;
    const ledger::Id& account = which == 0 ? accounts.purse : accounts.medical;
    const auto& participant = participants.get(t.user_data_64);
    std::int64_t amount = static_cast<std::int64_t>(t.amount) * (t.debit_account_id == account ? -1 : 1);
    if ((t.flags & ledger::transfer_flags::void_pending) != 0) amount = -amount;  // the hold given back
    json item{{"id", id_hex(t.id)},
              {"time", iso_time(t.timestamp)},
              {"kind", kind_of(t, participant ? std::string_view(participant->kind) : std::string_view{})},
              {"state", state_of(t)},
              {"account", which == 0 ? "purse" : "medical"},
              {"amount_fen", amount}};
    if (auto b = balances[which].find(t.timestamp); b != balances[which].end()) {
        item["balance_after_fen"] =
            static_cast<std::int64_t>(b->second.credits_posted) - static_cast<std::int64_t>(b->second.debits_posted);
    } else {
        item["balance_after_fen"] = nullptr;
    }
    json place = json::object();
    if (participant) place["participant"] = participant->name;
    if (t.code == transfer_codes::offline_purchase || t.code == transfer_codes::tac_failed) {
        const Place p = parse_place(t.user_data_128);
        if (p.line != 0) place["line"] = p.line;
        if (p.station != 0) place["station"] = p.station;
        place["local_time"] = bcd_local_time(p.local_time_bcd);
    }
    item["place"] = place;
    return item;
}

ApiResponse history(const Services& s, const lmdb::Txn& txn, const CardHolder& holder, const Target& target) {
    std::size_t limit = transactions_page_default;
    std::uint64_t before = ~std::uint64_t{0};
    if (auto bad = newest_first_params(target, transactions_page_max, limit, before, "the next_cursor of a previous page")) {
        return bad_request(*bad);
    }
    const CardAccounts accounts{purse_shadow_account(holder.token.asn), medical_account(holder.token.asn)};
    auto purse = s.ledger.account_transfers_before(txn, accounts.purse, before, limit + 1);
    auto medical = s.ledger.account_transfers_before(txn, accounts.medical, before, limit + 1);
    if (!purse || !medical) return storage_failure("ledger read failed");
    // Timestamps are unique across the ledger, so merging the two newest-first lists is exact.
    std::vector<ledger::Transfer> merged;
    std::merge(purse->begin(), purse->end(), medical->begin(), medical->end(), std::back_inserter(merged),
               [](const auto& a, const auto& b) { return a.timestamp > b.timestamp; });
    const bool more = merged.size() > limit;
    if (more) merged.resize(limit);
    const BalancesAfter balances = balances_after(s, txn, accounts, merged);
    Participants participants{s.registry, txn, {}};
    json items = json::array();
    for (const auto& t : merged) items.push_back(history_item(t, accounts, balances, participants));
    json out{{"card_number", to_string(holder.number)}, {"transactions", items}};
    out["next_cursor"] = more ? json(std::to_string(merged.back().timestamp)) : json(nullptr);
    return json_response(200, out);
}

}  // namespace

std::optional<CardToken> presented_card_token(Call& call, const lmdb::Txn& txn) {
    Api::State& api = call.api;
    auto not_card = [&] { call.answer(api.unauthenticated(call.request, not_found("no such card for this token"))); };
    auto number = parse_card_number(call.params[0]);
    if (!number) {
        not_card();
        return std::nullopt;
    }
    auto stored = api.s.tokens.card_token_in(txn, *number);
    if (!stored) {
        call.answer(storage_failure(stored.error().message()));
        return std::nullopt;
    }
    if (!*stored || !Tokens::matches(**stored, call.presented)) {
        not_card();
        return std::nullopt;
    }
    return **stored;
}

void card_balance(Call& call) {
    auto opened = open_card(call);
    if (!opened) return;
    // A card reported lost answers its lifecycle status only (clearing/README.md "Card lifecycle"); a
    // replacement card's balance names the carried balance (pending transfer or to collect).
    auto lifecycle = lifecycle_view(call.s(), opened->first, opened->second.token.asn, opened->second.number);
    ApiResponse answer = lifecycle.lost_answer ? std::move(*lifecycle.lost_answer) : balance(call.s(), opened->first, opened->second);
    if (!lifecycle.lost_answer && lifecycle.carried && answer.status == 200 && !answer.body.empty() && answer.body.back() == '}') {
        answer.body.pop_back();
        answer.body += R"(,"carried":)" + lifecycle.carried->dump() + "}";
    }
    opened.reset();  // the read transaction ends before the answer goes out
    call.answer(std::move(answer));
}

void card_transactions(Call& call) {
    auto opened = open_card(call);
    if (!opened) return;
    if (auto refused = refuse_lost_token(call.s(), opened->first, opened->second.token.asn)) {
        opened.reset();
        return call.answer(std::move(*refused));
    }
    ApiResponse answer = history(call.s(), opened->first, opened->second, call.target);
    opened.reset();
    call.answer(std::move(answer));
}

}  // namespace coconut::clearing::http::api
