// The clerk's lists (role read): GET /v1/clerk/risk (risk flags, journaled), GET /v1/clerk/suspense
// (uploads booked to suspense, journaled), GET /v1/clerk/journal (the clerk journal itself).
#include "api_internal.hpp"

#include <fmt/format.h>

#include <algorithm>

namespace coconut::clearing::http::api {

// Risk flags a page at a time (?limit=1…500, default 100; ?cursor= from the previous page's
// next_cursor; ?card= one card's): bounded work and bytes per request however many flags exist.
void risk_list(Call& call) {
    std::optional<CardNumber> only;
    std::optional<Asn> asn;
    if (auto it = call.target.param("card")) {
        only = parse_card_number(*it);
        if (!only) return call.answer(bad_request("card must be 16 digits"));
        auto found = call.api.find_card(*only);
        if (!found) return call.answer(storage_failure(found.error().message));
        if (!*found) return call.answer(not_found("card " + to_string(*only) + " is not registered"));
        asn = **found;
    }
    std::size_t limit = risk_page_default;
    if (auto it = call.target.param("limit")) {
        auto value = parse_u64(*it);
        if (!value || *value == 0 || *value > Registry::risk_page_limit_max) {
            return call.answer(bad_request(fmt::format("limit must be 1 to {}", Registry::risk_page_limit_max)));
        }
        limit = *value;
    }
    auto page = call.s().registry.risk_page(call.target.param("cursor").value_or(""), limit, asn);
    if (!page) {
        if (page.error().code == ErrorCode::bad_input) return call.answer(bad_request(page.error().message));
        return call.answer(storage_failure(page.error().message));
    }
    json out = json::array();
    for (const auto& f : page->flags) out.push_back(risk_json(f));
    json body{{"risk_flags", out}, {"next_cursor", page->next_cursor.empty() ? json(nullptr) : json(page->next_cursor)}};
    call.api.journaled_read(json_response(200, body), action_of(call.who(), "risk_list", only ? to_string(*only) : "all"),
                            std::move(call.respond));
}

// Uploads booked to suspense (a TAC that did not verify), newest first, both ledgers merged.
void suspense_list(Call& call) {
    std::size_t limit = transactions_page_max;
    std::uint64_t before = ~std::uint64_t{0};
    if (auto bad = newest_first_params(call.target, transactions_page_max, limit, before, "a next_cursor"))
        return call.answer(bad_request(*bad));
    const ledger::Ledger& ledger = call.s().ledger;
    auto purse = ledger.account_transfers_before(purse_suspense_account, before, limit + 1);
    auto medical = ledger.account_transfers_before(medical_suspense_account, before, limit + 1);
    if (!purse || !medical) return call.answer(storage_failure("ledger read failed"));
    std::vector<ledger::Transfer> merged;
    std::merge(purse->begin(), purse->end(), medical->begin(), medical->end(), std::back_inserter(merged),
               [](const auto& a, const auto& b) { return a.timestamp > b.timestamp; });
    const bool more = merged.size() > limit;
    if (more) merged.resize(limit);
    json items = json::array();
    for (const auto& t : merged) {
        const Place p = parse_place(t.user_data_128);
        items.push_back({{"id", id_hex(t.id)},
                         {"time", iso_time(t.timestamp)},
                         {"amount_fen", t.amount},
                         {"ledger", t.ledger},
                         {"debit_account_id", id_hex(t.debit_account_id)},
                         {"participant_id", t.user_data_64},
                         {"psam_terminal_id", bcd_to_digits(p.terminal_id)},
                         {"terminal_serial", t.user_data_32}});
    }
    json out{{"suspense", items}, {"next_cursor", more ? json(std::to_string(merged.back().timestamp)) : json(nullptr)}};
    call.api.journaled_read(json_response(200, out), action_of(call.who(), "suspense_list", ""), std::move(call.respond));
}

// Reading the journal is not itself journaled: it would grow with every look at it.
void journal_list(Call& call) {
    std::uint64_t after = 0;
    std::size_t limit = transactions_page_max;
    if (auto bad = page_params(call.target, "a sequence number", after, limit)) return call.answer(bad_request(*bad));
    auto entries = call.s().tokens.journal(after, limit);
    if (!entries) return call.answer(storage_failure(entries.error().message));
    json items = json::array();
    for (const auto& a : *entries) {
        items.push_back({{"sequence", a.sequence},
                         {"time", iso_time(a.timestamp_ns)},
                         {"clerk", a.clerk},
                         {"action", a.action},
                         {"target", a.target},
                         {"outcome", a.outcome},
                         {"detail", a.detail}});
    }
    call.answer(json_response(200, json{{"entries", items}}));
}

}  // namespace coconut::clearing::http::api
