// GET /v1/cards/{n}/history: the cardholder's history as a person reads it (clearing/README.md "HTTP
// API"), one row per thing that happened: a clinic visit with its medical and purse parts (the hold, its
// completion or reversal and the purchase its DF11 names, ISO8583.md §4.9), a bus journey (the 0-fen
// entry tap and the exit tap that charged the fare), a load with its confirmation; a same-day refund
// (ISO8583.md §4.10) in the row of the payment it refunds. Each row carries the
// card's own time (the tap's card time; for online transactions the clearing's, which is the tap's) and
// place. Grouping is for display only: the ledger's transfers are read as they are, nothing is written.
// Pages go newest first by the clearing's booking order (next_cursor), like /transactions.
#include "api_internal.hpp"

#include <coconut/core/identifiers.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <ctime>
#include <map>

namespace coconut::clearing::http::api {

namespace {
// Named inside the anonymous namespace: a unity build may compile this file with cardholder.cpp, whose
// helpers have some of these names.
namespace rows {

constexpr std::uint64_t ns_per_s = 1'000'000'000ULL;

bool resolves(const ledger::Transfer& t) {
    return (t.flags & (ledger::transfer_flags::post_pending | ledger::transfer_flags::void_pending)) != 0;
}
bool offline_card_transaction(const ledger::Transfer& t) {
    return t.code == transfer_codes::offline_purchase || t.code == transfer_codes::tac_failed || t.code == transfer_codes::late_after_carry;
}

// "2026-12-06T08:15+08:00": Hainan local time, to the minute.
std::string hainan_minute(std::uint64_t ns) {
    const auto local = static_cast<std::time_t>(ns / ns_per_s) + static_cast<std::time_t>(hainan_utc_offset.count());
    std::tm tm{};
    gmtime_r(&local, &tm);
    return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}+08:00", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min);
}
std::string card_minute(const std::array<std::uint8_t, 5>& bcd) {
    const std::string d = bcd_to_digits(bcd);  // YYMMDDhhmm
    return fmt::format("20{}-{}-{}T{}:{}+08:00", d.substr(0, 2), d.substr(2, 2), d.substr(4, 2), d.substr(6, 2), d.substr(8, 2));
}

// What the request reads beyond the page: participants, and transfers by id, from the request's snapshot.
struct Reads {
    const Services& s;
    const lmdb::Txn& txn;
    std::map<std::uint64_t, std::optional<Participant>> participants;
    const std::optional<Participant>& participant(std::uint64_t id) {
        auto [it, fresh] = participants.try_emplace(id);
        if (fresh && id != 0) {
            if (auto found = s.registry.participant_in(txn, id); found && *found) it->second = **found;
        }
        return it->second;
    }
    std::optional<ledger::Transfer> transfer(const ledger::Id& id) const {
        auto found = s.ledger.lookup_transfer(txn, id);
        return found ? *found : std::nullopt;
    }
    std::optional<ledger::Id> visit(const ledger::Id& id, Registry::VisitSide side) const {
        auto found = s.registry.visit_in(txn, id, side);
        return found ? *found : std::nullopt;
    }
};

// The kind a person calls a transfer by.
std::string kind_of(const ledger::Transfer& t, std::string_view participant_kind) {
    switch (t.code) {
        case transfer_codes::offline_purchase:
        case transfer_codes::tac_failed:
        case transfer_codes::late_after_carry:
            if (participant_kind == "bus" || participant_kind == "clinic" || participant_kind == "counter")
                return std::string(participant_kind);
            return "shop";
        case transfer_codes::opening_balance:
        case transfer_codes::online_load:
        case transfer_codes::carried_load: return "load";
        case transfer_codes::clinic_medical: return "clinic_visit";
        case transfer_codes::manual_adjustment: return "adjustment";
        case transfer_codes::broken_card_refund:
        case transfer_codes::purchase_refund:  // shown alone only when booked late or not linked (see `folded`)
        case transfer_codes::medical_refund: return "refund";
        default: return "other";
    }
}

// A pending transfer's fate: its posting or void by its resolving id, or expiry by its timeout.
std::pair<std::string, std::optional<ledger::Transfer>> fate(Reads& reads, const ledger::Transfer& pending) {
    if (auto posted = reads.transfer(resolving_transfer(pending.id, Resolution::post))) return {"posted", posted};
    if (auto voided = reads.transfer(resolving_transfer(pending.id, Resolution::void_hold))) return {"reversed", voided};
    if (pending.timeout_s != 0 && pending.timestamp + std::uint64_t{pending.timeout_s} * ns_per_s < now_ns()) return {"expired", {}};
    return {"pending", {}};
}

struct Row {
    json body;
    std::uint64_t participant = 0;
    std::uint16_t line = 0;
    bool bus_tap = false;   // a single bus tap, which a neighbouring tap may make a journey
    std::string card_time;  // of the row's tap (a journey's: the exit's)
};

json part(std::string_view account, std::int64_t amount_fen, std::string_view state) {
    return json{{"account", account}, {"amount_fen", amount_fen}, {"state", state}};
}

Row base_row(Reads& reads, const ledger::Transfer& t, std::string kind, std::string state) {
    Row row;
    row.participant = t.user_data_64;
    json place = json::object();
    if (const auto& p = reads.participant(t.user_data_64)) place["participant"] = p->name;
    const Place where = parse_place(t.user_data_128);
    if (offline_card_transaction(t) && where.line != 0) {
        place["line"] = where.line;
        row.line = where.line;
    }
    if (offline_card_transaction(t) && where.station != 0) place["station"] = where.station;
    // Whose clock: the card transaction's (DF07 of a purchase or a load), the terminal's (a clinic hold's
    // 0100), else the clearing's booking.
    const char* source = "clearing";
    const bool timed = std::any_of(where.local_time_bcd.begin(), where.local_time_bcd.end(), [](std::uint8_t b) { return b != 0; });
    const bool online_credit =
        t.code == transfer_codes::online_load || t.code == transfer_codes::carried_load || t.code == transfer_codes::purchase_refund;
    if (timed && (offline_card_transaction(t) || online_credit)) {
        source = "card";
    } else if (timed && t.code == transfer_codes::clinic_medical) {
        source = "terminal";
    }
    row.card_time = std::string_view(source) == "clearing" ? hainan_minute(t.timestamp) : card_minute(where.local_time_bcd);
    row.body = json{{"id", id_hex(t.id)},    {"kind", std::move(kind)}, {"state", std::move(state)},
                    {"time", row.card_time}, {"time_source", source},   {"cleared_at", iso_time(t.timestamp)},
                    {"place", place}};
    return row;
}

// A same-day refund of one part of a payment (ISO8583.md §4.10), as the cardholder reads it.
struct PartRefund {
    std::string_view state;  // refunded, pending
    std::string_view to;     // card, cash (the purse part paid back from the clinic's till)
    std::uint64_t amount_fen = 0;
    bool booked_late = false;  // a credit confirmed after its void or expiry: that booking is a row of its own
};

// A row's refunds: the parts that took money (a completed medical part, a purchase) and those refunded or
// being refunded. The row's state says which: refunded (all), partly_refunded, refund_pending.
struct Refunds {
    std::size_t owed = 0;
    std::vector<std::pair<std::string_view, PartRefund>> parts;

    void mark(json& body) const {
        if (parts.empty()) return;
        const bool pending = std::any_of(parts.begin(), parts.end(), [](const auto& p) { return p.second.state == "pending"; });
        body["state"] = pending ? "refund_pending" : parts.size() >= owed ? "refunded" : "partly_refunded";
        json refund = json::object();
        for (const auto& [account, r] : parts) {
            refund[std::string(account) + "_fen"] = r.amount_fen;
            if (account != "purse") continue;
            refund["purse_to"] = r.to;
            if (r.booked_late) refund["purse_booked_late"] = true;
        }
        body["refund"] = std::move(refund);
    }
};

json refund_part(std::string_view account, std::int64_t amount_fen, std::string_view state) {
    json p = part(account, amount_fen, state);
    p["refund"] = true;
    return p;
}

std::int64_t total_of(const json& parts) {
    std::int64_t total = 0;
    for (const auto& p : parts) total += p["amount_fen"].get<std::int64_t>();
    return total;
}

// The refund of `purchase`, if any: the registry names its credit (code 22), or the zero id for cash. A credit
// is a part (in its state: posted, pending, reversed or expired, like a load); cash moves nothing on the card.
void add_purchase_refund(Reads& reads, const ledger::Transfer& purchase, json& parts, Refunds& refunds) {
    refunds.owed++;
    const auto credit_id = reads.visit(purchase.id, Registry::VisitSide::refund_of);
    if (!credit_id) return;
    if (credit_id->zero()) {
        refunds.parts.emplace_back("purse", PartRefund{"refunded", "cash", purchase.amount, false});
        return;
    }
    const auto credit = reads.transfer(*credit_id);
    if (!credit) return;
    auto [state, resolution] = fate(reads, *credit);
    const std::uint64_t amount = state == "posted" ? resolution->amount : state == "pending" ? credit->amount : 0;
    parts.push_back(refund_part("purse", static_cast<std::int64_t>(amount), state));
    if (state == "posted" || state == "pending") {
        refunds.parts.emplace_back("purse", PartRefund{state == "posted" ? "refunded" : "pending", "card", amount, false});
    } else if (auto late = reads.transfer(resolving_transfer(credit->id, Resolution::late_load))) {
        refunds.parts.emplace_back("purse", PartRefund{"refunded", "card", late->amount, true});
    }
}

// A clinic visit from its medical hold: the hold's fate and the purse part its DF11 linked.
Row visit_row(Reads& reads, const ledger::Transfer& hold) {
    auto [state, resolution] = fate(reads, hold);
    Row row = base_row(reads, hold, "clinic_visit", state == "posted" ? "completed" : state);
    json parts = json::array();
    const std::int64_t medical = state == "posted"    ? -static_cast<std::int64_t>(resolution->amount)
                                 : state == "pending" ? -static_cast<std::int64_t>(hold.amount)
                                                      : 0;
    parts.push_back(part("medical", medical, state));
    parts.back()["held_fen"] = hold.amount;
    std::optional<ledger::Transfer> purse;
    if (auto purse_id = reads.visit(hold.id, Registry::VisitSide::hold)) purse = reads.transfer(*purse_id);
    if (purse) parts.push_back(part("purse", -static_cast<std::int64_t>(purse->amount), "posted"));
    Refunds refunds;
    if (state == "posted" && resolution->amount > 0) refunds.owed++;
    if (auto medical_refund = reads.transfer(medical_refund_transfer(hold.id))) {  // single phase: always posted
        parts.push_back(refund_part("medical", static_cast<std::int64_t>(medical_refund->amount), "posted"));
        refunds.parts.emplace_back("medical", PartRefund{"refunded", "card", medical_refund->amount, false});
    }
    if (purse) add_purchase_refund(reads, *purse, parts, refunds);
    row.body["parts"] = parts;
    row.body["amount_fen"] = total_of(parts);
    refunds.mark(row.body);
    return row;
}

struct CardAccounts {
    ledger::Id purse;
    ledger::Id medical;
};

Row single_row(Reads& reads, const ledger::Transfer& t, const CardAccounts& card) {
    const auto& participant = reads.participant(t.user_data_64);
    const std::string kind = kind_of(t, participant ? std::string_view(participant->kind) : std::string_view{});
    std::string state = t.code == transfer_codes::tac_failed ? "under_review" : "posted";
    std::uint64_t amount = t.amount;
    if ((t.flags & ledger::transfer_flags::pending) != 0) {
        auto [fated, resolution] = fate(reads, t);
        state = fated;
        if (resolution && fated == "posted") amount = resolution->amount;
        if (fated == "reversed" || fated == "expired") amount = 0;
    }
    const bool is_purse = t.debit_account_id == card.purse || t.credit_account_id == card.purse;
    const bool debited = t.debit_account_id == (is_purse ? card.purse : card.medical);
    const std::int64_t signed_amount = static_cast<std::int64_t>(amount) * (debited ? -1 : 1);
    Row row = base_row(reads, t, kind, state);
    row.body["amount_fen"] = signed_amount;
    row.body["parts"] = json::array({part(is_purse ? "purse" : "medical", signed_amount, state)});
    row.bus_tap = kind == "bus" && row.line != 0;
    if (row.bus_tap && amount == 0) row.body["kind"] = "bus_entry";
    if (t.code == transfer_codes::offline_purchase && is_purse && debited) {  // refunded? (a purchase no visit linked)
        Refunds refunds;
        add_purchase_refund(reads, t, row.body["parts"], refunds);
        row.body["amount_fen"] = total_of(row.body["parts"]);
        refunds.mark(row.body);
    }
    return row;
}

// Two taps of one journey: a 0-fen entry and the exit that charged the fare, on one operator's line,
// the entry not after the exit (either may have been booked first).
bool one_journey(const Row& a, const Row& b) {
    if (!a.bus_tap || !b.bus_tap || a.participant != b.participant || a.line != b.line) return false;
    const bool a_entry = a.body["kind"] == "bus_entry", b_entry = b.body["kind"] == "bus_entry";
    if (a_entry == b_entry) return false;
    const Row& entry = a_entry ? a : b;
    const Row& exit = a_entry ? b : a;
    return entry.card_time <= exit.card_time;
}

void join_journey(Row& into, const Row& other) {
    const bool into_is_entry = into.body["kind"] == "bus_entry";
    const Row& entry = into_is_entry ? into : other;
    const Row& exit = into_is_entry ? other : into;
    json place = exit.body["place"];
    place.erase("station");
    if (entry.body["place"].contains("station")) place["entry_station"] = entry.body["place"]["station"];
    if (exit.body["place"].contains("station")) place["exit_station"] = exit.body["place"]["station"];
    json joined = exit.body;
    joined["kind"] = "bus_journey";
    joined["place"] = place;
    joined["entry_time"] = entry.body["time"];
    joined["parts"] = json::array({exit.body["parts"][0]});
    into.body = std::move(joined);
    into.bus_tap = false;  // a journey takes no third tap
}

// Transfers shown inside another row: a resolution (in its pending transfer's row), a visit's purse part
// (in its hold's row), a refund credit (in the row of the purchase the registry says it refunds), a medical
// refund (in its hold's row: its user_data_128 is the hold). A credit booked late is a row of its own.
bool folded(Reads& reads, const ledger::Transfer& t, const CardAccounts& card) {
    if (resolves(t)) return true;
    if (t.code == transfer_codes::purchase_refund && (t.flags & ledger::transfer_flags::pending) != 0)
        return reads.visit(t.id, Registry::VisitSide::credit).has_value();
    if (t.code == transfer_codes::medical_refund) {
        const auto hold = reads.transfer(t.user_data_128);
        return hold && hold->code == transfer_codes::clinic_medical && (hold->flags & ledger::transfer_flags::pending) != 0 &&
               medical_refund_transfer(hold->id) == t.id;
    }
    return t.debit_account_id == card.purse && t.code == transfer_codes::offline_purchase &&
           reads.visit(t.id, Registry::VisitSide::purse).has_value();
}

struct Page {
    json rows = json::array();
    std::optional<std::uint64_t> next_cursor;
};

// Rows from `transfers` (newest first, `truncated` when the ledger holds older ones) up to `limit`.
Page rows_of(Reads& reads, const std::vector<ledger::Transfer>& transfers, bool truncated, std::size_t limit, const CardAccounts& card) {
    Page page;
    std::optional<Row> last;
    std::size_t emitted = 0;
    for (std::size_t i = 0; i < transfers.size(); ++i) {
        const ledger::Transfer& t = transfers[i];
        if (folded(reads, t, card)) continue;
        Row row = t.code == transfer_codes::clinic_medical && (t.flags & ledger::transfer_flags::pending) != 0 ? visit_row(reads, t)
                                                                                                               : single_row(reads, t, card);
        if (last && one_journey(*last, row)) {
            join_journey(*last, row);
            continue;
        }
        if (emitted == limit) {  // this transfer starts the next page
            page.next_cursor = transfers[i - 1].timestamp;
            break;
        }
        if (last) page.rows.push_back(std::move(last->body));
        last = std::move(row);
        emitted++;
    }
    if (last) page.rows.push_back(std::move(last->body));
    if (!page.next_cursor && truncated && !transfers.empty()) page.next_cursor = transfers.back().timestamp;
    return page;
}

ApiResponse history(const Services& s, const lmdb::Txn& txn, const Asn& asn, const Target& target) {
    std::size_t limit = transactions_page_default;
    std::uint64_t before = ~std::uint64_t{0};
    if (auto bad = newest_first_params(target, transactions_page_max, limit, before, "the next_cursor of a previous page")) {
        return bad_request(*bad);
    }
    const CardAccounts card{purse_shadow_account(asn), medical_account(asn)};
    // Enough transfers for `limit` rows of up to six transfers each (a refunded visit: hold, completion, purse
    // part, medical refund, refund credit and its posting), and one more to know there are more.
    const std::size_t wanted = limit * 6 + 1;
    auto purse = s.ledger.account_transfers_before(txn, card.purse, before, wanted + 1);
    auto medical = s.ledger.account_transfers_before(txn, card.medical, before, wanted + 1);
    if (!purse || !medical) return storage_failure("ledger read failed");
    std::vector<ledger::Transfer> merged;
    std::merge(purse->begin(), purse->end(), medical->begin(), medical->end(), std::back_inserter(merged),
               [](const auto& a, const auto& b) { return a.timestamp > b.timestamp; });
    const bool truncated = merged.size() > wanted;
    if (truncated) merged.resize(wanted);
    Reads reads{s, txn, {}};
    Page page = rows_of(reads, merged, truncated, limit, card);
    json out{{"card_number", to_string(card_number_of(asn))}, {"rows", std::move(page.rows)}};
    out["next_cursor"] = page.next_cursor ? json(std::to_string(*page.next_cursor)) : json(nullptr);
    return json_response(200, out);
}

}  // namespace rows
}  // namespace

void card_history(Call& call) {
    std::optional<lmdb::Txn> txn;
    {
        auto opened = call.api.s.ledger.begin_read();
        if (!opened) return call.answer(storage_failure(opened.error().message));
        txn.emplace(std::move(opened).value());
    }
    auto token = presented_card_token(call, *txn);
    if (!token) return;
    std::optional<ApiResponse> answer = refuse_lost_token(call.s(), *txn, token->asn);
    if (!answer) answer = rows::history(call.s(), *txn, token->asn, call.target);
    txn.reset();  // the read transaction ends before the answer goes out
    call.answer(std::move(*answer));
}

}  // namespace coconut::clearing::http::api
