// Card return and refund, broken-card refunds, tourist cards: the tables, the transfers, the dormancy
// report (card_returns.hpp).
#include <coconut/clearing/card_returns.hpp>
#include <coconut/core/assert.hpp>

#include "registry_internal.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <ctime>

namespace coconut::clearing {

using detail::storage_error;
using nlohmann::json;

struct CardReturns::Tables {
    MDB_dbi returns = 0;
    MDB_dbi tourist = 0;
};

namespace {

constexpr std::uint64_t ns_per_day = 86'400ULL * 1'000'000'000ULL;

ledger::Transfer transfer(const Asn& asn, std::uint16_t code, std::uint8_t part, const ledger::Id& from, const ledger::Id& to,
                          std::uint64_t amount, std::uint64_t participant) {
    ledger::Transfer t;
    t.id = card_money_transfer(asn, code, part);
    t.debit_account_id = from;
    t.credit_account_id = to;
    t.amount = amount;
    t.ledger = ledgers::purse;
    t.code = code;
    t.user_data_128 = card_user_data(asn);
    t.user_data_64 = participant;
    return t;
}

// Links every transfer after the accounts into one chain: it succeeds or fails as a unit.
std::vector<ledger::Event> chained(const Asn& asn, std::vector<ledger::Transfer> transfers) {
    std::vector<ledger::Event> events;
    append_card_money_accounts(events, asn);
    for (std::size_t i = 0; i < transfers.size(); ++i) {
        if (i + 1 < transfers.size()) transfers[i].flags |= ledger::transfer_flags::linked;
        events.emplace_back(transfers[i]);
    }
    return events;
}

std::string id_text(const ledger::Id& id) { return ledger::to_string(id); }

std::optional<ledger::Id> id_from_text(const std::string& text) {
    if (text.size() != 32) return std::nullopt;
    auto bytes = from_hex(text);
    if (!bytes || bytes->size() != 16) return std::nullopt;
    return ledger::Id{read_be(ByteView(*bytes).first(8)), read_be(ByteView(*bytes).subspan(8, 8))};
}

json encode(const ReturnRecord& r) {
    return {{"kind", static_cast<int>(r.kind)},
            {"payout", static_cast<int>(r.payout)},
            {"registered_ns", r.registered_ns},
            {"refunded_ns", r.refunded_ns},
            {"counter_id", r.counter_id},
            {"terminal_id", r.terminal_id},
            {"purchase_id", id_text(r.purchase_id)},
            {"balance_fen", r.balance_fen},
            {"deposit_fen", r.deposit_fen},
            {"fee_fen", r.fee_fen},
            {"bank_account", r.bank_account},
            {"account_holder", r.account_holder}};
}

std::optional<ReturnRecord> decode_return(const Asn& asn, ByteView bytes) {
    const json j = json::parse(bytes.begin(), bytes.end(), nullptr, false);
    if (j.is_discarded() || !j.is_object()) return std::nullopt;
    try {
        ReturnRecord r;
        r.asn = asn;
        r.kind = static_cast<ReturnKind>(j.at("kind").get<int>());
        r.payout = static_cast<Payout>(j.at("payout").get<int>());
        r.registered_ns = j.at("registered_ns").get<std::uint64_t>();
        r.refunded_ns = j.at("refunded_ns").get<std::uint64_t>();
        r.counter_id = j.at("counter_id").get<std::uint64_t>();
        r.terminal_id = j.at("terminal_id").get<std::string>();
        auto purchase = id_from_text(j.at("purchase_id").get<std::string>());
        if (!purchase) return std::nullopt;
        r.purchase_id = *purchase;
        r.balance_fen = j.at("balance_fen").get<std::uint64_t>();
        r.deposit_fen = j.at("deposit_fen").get<std::uint64_t>();
        r.fee_fen = j.at("fee_fen").get<std::uint64_t>();
        r.bank_account = j.at("bank_account").get<std::string>();
        r.account_holder = j.at("account_holder").get<std::string>();
        return r;
    } catch (const json::exception&) {
        return std::nullopt;
    }
}

json encode(const TouristRecord& t) {
    return {{"seller_id", t.seller_id},
            {"deposit_fen", t.deposit_fen},
            {"sold_ns", t.sold_ns},
            {"returned_ns", t.returned_ns},
            {"fee_fen", t.fee_fen}};
}

std::optional<TouristRecord> decode_tourist(const Asn& asn, ByteView bytes) {
    const json j = json::parse(bytes.begin(), bytes.end(), nullptr, false);
    if (j.is_discarded() || !j.is_object()) return std::nullopt;
    try {
        TouristRecord t;
        t.asn = asn;
        t.seller_id = j.at("seller_id").get<std::uint64_t>();
        t.deposit_fen = j.at("deposit_fen").get<std::uint64_t>();
        t.sold_ns = j.at("sold_ns").get<std::uint64_t>();
        t.returned_ns = j.at("returned_ns").get<std::uint64_t>();
        t.fee_fen = j.at("fee_fen").get<std::uint64_t>();
        return t;
    } catch (const json::exception&) {
        return std::nullopt;
    }
}

lmdb::Error undecodable(const char* table) { return lmdb::Error{MDB_CORRUPTED, table, "a record does not decode"}; }

template <class Record, class Decode>
lmdb::Result<std::optional<Record>> get_in(const lmdb::Txn& txn, MDB_dbi table, const char* name, const Asn& asn, Decode decode) {
    auto value = txn.get(table, asn);
    if (!value) return Unexpected<lmdb::Error>{value.error()};
    if (!*value) return std::optional<Record>();
    auto record = decode(asn, **value);
    if (!record) return Unexpected<lmdb::Error>{undecodable(name)};
    return std::optional<Record>(std::move(*record));
}

template <class Record, class Decode>
Result<std::vector<Record>> all_of(const lmdb::Env& env, MDB_dbi table, const char* name, Decode decode) {
    auto txn = lmdb::Txn::begin(env, lmdb::Txn::Mode::read_only);
    if (!txn) return Unexpected<Error>{storage_error(txn.error())};
    auto cursor = lmdb::Cursor::open(*txn, table);
    if (!cursor) return Unexpected<Error>{storage_error(cursor.error())};
    std::vector<Record> out;
    for (auto entry = cursor->first();; entry = cursor->next()) {
        if (!entry) return Unexpected<Error>{storage_error(entry.error())};
        if (!*entry) break;
        if ((*entry)->key.size() != Asn{}.size()) return Unexpected<Error>{storage_error(undecodable(name))};
        Asn asn{};
        std::copy((*entry)->key.begin(), (*entry)->key.end(), asn.begin());
        auto record = decode(asn, (*entry)->value);
        if (!record) return Unexpected<Error>{storage_error(undecodable(name))};
        out.push_back(std::move(*record));
    }
    return out;
}

}  // namespace

std::string_view to_string(Payout payout) { return payout == Payout::cash ? "cash" : "bank"; }

std::optional<Payout> parse_payout(std::string_view text) {
    if (text == "cash") return Payout::cash;
    if (text == "bank") return Payout::bank;
    return std::nullopt;
}

std::string_view to_string(ReturnKind kind) { return kind == ReturnKind::counter ? "counter" : "broken"; }

FeeSplit return_fee_split(std::uint64_t balance_fen, std::uint64_t deposit_fen, std::uint64_t fee_fen) {
    FeeSplit split;
    split.from_deposit = std::min(fee_fen, deposit_fen);
    split.from_balance = std::min(fee_fen - split.from_deposit, balance_fen);
    COCONUT_ASSERT(split.charged() <= fee_fen && split.charged() <= balance_fen + deposit_fen, "the fee is capped at deposit + balance");
    return split;
}

std::vector<ledger::Event> return_events(const ReturnPlan& p) {
    namespace codes = transfer_codes;
    COCONUT_ASSERT(p.fee.from_deposit <= p.deposit_fen && p.fee.from_balance <= p.balance_fen);
    const ledger::Id counter = payable_account(p.counter_id, ledgers::purse);
    const ledger::Id refund = refund_payable_account(p.asn);
    const ledger::Id deposit = card_deposit_account(p.asn);
    std::vector<ledger::Transfer> transfers;
    auto add = [&](std::uint16_t code, std::uint8_t part, const ledger::Id& from, const ledger::Id& to, std::uint64_t amount) {
        if (amount > 0) transfers.push_back(transfer(p.asn, code, part, from, to, amount, p.counter_id));
    };
    const bool bank = p.payout == Payout::bank;
    if (bank) add(codes::card_refund, 0, counter, refund, p.balance_fen - p.fee.from_balance);
    add(codes::return_fee, 0, deposit, purse_fee_income_account, p.fee.from_deposit);
    add(codes::return_fee, 1, counter, purse_fee_income_account, p.fee.from_balance);
    add(codes::deposit_returned, 0, deposit, bank ? refund : counter, p.deposit_fen - p.fee.from_deposit);
    return chained(p.asn, std::move(transfers));
}

std::uint64_t refunded_fen(const ReturnPlan& p) { return p.balance_fen + p.deposit_fen - p.fee.charged(); }

std::vector<ledger::Event> sale_events(const Asn& asn, std::uint64_t seller_id, std::uint64_t deposit_fen) {
    return chained(asn, {transfer(asn, transfer_codes::deposit_taken, 0, payable_account(seller_id, ledgers::purse),
                                  card_deposit_account(asn), deposit_fen, seller_id)});
}

std::vector<ledger::Event> broken_refund_events(const Asn& asn, std::int64_t shadow_fen, std::uint64_t deposit_fen, std::uint64_t fee_fen) {
    namespace codes = transfer_codes;
    std::vector<ledger::Transfer> transfers;
    const ledger::Id refund = refund_payable_account(asn);
    if (shadow_fen > 0) {
        transfers.push_back(
            transfer(asn, codes::broken_card_refund, 0, purse_shadow_account(asn), refund, static_cast<std::uint64_t>(shadow_fen), 0));
    }
    const std::uint64_t fee = std::min(fee_fen, deposit_fen);
    if (fee > 0) transfers.push_back(transfer(asn, codes::return_fee, 0, card_deposit_account(asn), purse_fee_income_account, fee, 0));
    if (deposit_fen > fee) {
        transfers.push_back(transfer(asn, codes::deposit_returned, 0, card_deposit_account(asn), refund, deposit_fen - fee, 0));
    }
    return chained(asn, std::move(transfers));
}

// ---- tables ------------------------------------------------------------------------------------------------

CardReturns::CardReturns(lmdb::Env& env, std::unique_ptr<Tables> tables) : env_(env), tables_(std::move(tables)) {}
CardReturns::~CardReturns() = default;

Result<std::unique_ptr<CardReturns>> CardReturns::open(lmdb::Env& env) {
    auto tables = std::make_unique<Tables>();
    auto returns = env.open_table("returns");
    if (!returns) return Unexpected<Error>{storage_error(returns.error())};
    auto tourist = env.open_table("tourist");
    if (!tourist) return Unexpected<Error>{storage_error(tourist.error())};
    tables->returns = *returns;
    tables->tourist = *tourist;
    return std::unique_ptr<CardReturns>(new CardReturns(env, std::move(tables)));
}

lmdb::Result<std::optional<ReturnRecord>> CardReturns::return_in(const lmdb::Txn& txn, const Asn& asn) const {
    return get_in<ReturnRecord>(txn, tables_->returns, "returns", asn, decode_return);
}

lmdb::Result<std::optional<TouristRecord>> CardReturns::tourist_in(const lmdb::Txn& txn, const Asn& asn) const {
    return get_in<TouristRecord>(txn, tables_->tourist, "tourist", asn, decode_tourist);
}

lmdb::Status CardReturns::put_return(lmdb::Txn& txn, const ReturnRecord& record) const {
    const std::string text = encode(record).dump();
    const ByteView bytes(reinterpret_cast<const std::uint8_t*>(text.data()), text.size());
    COCONUT_ASSERT(decode_return(record.asn, bytes).has_value(), "a return record reads back");
    return txn.put(tables_->returns, record.asn, bytes);
}

lmdb::Status CardReturns::put_tourist(lmdb::Txn& txn, const TouristRecord& record) const {
    const std::string text = encode(record).dump();
    const ByteView bytes(reinterpret_cast<const std::uint8_t*>(text.data()), text.size());
    COCONUT_ASSERT(decode_tourist(record.asn, bytes).has_value(), "a tourist record reads back");
    return txn.put(tables_->tourist, record.asn, bytes);
}

Result<std::optional<ReturnRecord>> CardReturns::return_of(const Asn& asn) const {
    auto txn = lmdb::Txn::begin(env_, lmdb::Txn::Mode::read_only);
    if (!txn) return Unexpected<Error>{storage_error(txn.error())};
    auto record = return_in(*txn, asn);
    if (!record) return Unexpected<Error>{storage_error(record.error())};
    return *record;
}

Result<std::optional<TouristRecord>> CardReturns::tourist_of(const Asn& asn) const {
    auto txn = lmdb::Txn::begin(env_, lmdb::Txn::Mode::read_only);
    if (!txn) return Unexpected<Error>{storage_error(txn.error())};
    auto record = tourist_in(*txn, asn);
    if (!record) return Unexpected<Error>{storage_error(record.error())};
    return *record;
}

Result<std::vector<ReturnRecord>> CardReturns::returns() const {
    return all_of<ReturnRecord>(env_, tables_->returns, "returns", decode_return);
}

Result<std::vector<TouristRecord>> CardReturns::tourists() const {
    return all_of<TouristRecord>(env_, tables_->tourist, "tourist", decode_tourist);
}

// ---- dormancy report ----------------------------------------------------------------------------------------

namespace {

struct Balances {
    std::int64_t shadow = 0;
    std::int64_t deposit = 0;
    std::int64_t refund = 0;
    std::uint64_t newest_ns = 0;
};

Result<Balances> balances_of(const ledger::Ledger& ledger, const lmdb::Txn& txn, const Asn& asn) {
    Balances b;
    const std::pair<ledger::Id, std::int64_t*> accounts[] = {{purse_shadow_account(asn), &b.shadow},
                                                             {card_deposit_account(asn), &b.deposit},
                                                             {refund_payable_account(asn), &b.refund}};
    for (const auto& [id, out] : accounts) {
        auto account = ledger.lookup_account(txn, id);
        if (!account) return Unexpected<Error>{storage_error(account.error())};
        if (!*account) continue;
        *out = static_cast<std::int64_t>((*account)->credits_posted) - static_cast<std::int64_t>((*account)->debits_posted);
        auto newest = ledger.latest_transfer_timestamp(txn, id);
        if (!newest) return Unexpected<Error>{storage_error(newest.error())};
        b.newest_ns = std::max(b.newest_ns, *newest);
    }
    return b;
}

DormantCard row(const Asn& asn, std::string what, std::string_view status, const Balances& b, std::uint64_t since_ns,
                std::uint64_t now_ns) {
    DormantCard d;
    d.asn = asn;
    d.what = std::move(what);
    d.status = std::string(status);
    d.balance_fen = b.shadow;
    d.deposit_fen = b.deposit;
    d.refund_fen = b.refund;
    d.last_activity_ns = std::max(b.newest_ns, since_ns);
    d.days_dormant = now_ns > d.last_activity_ns ? (now_ns - d.last_activity_ns) / ns_per_day : 0;
    return d;
}

std::string utc_text(std::uint64_t ns) {
    const auto seconds = static_cast<std::time_t>(ns / 1'000'000'000ULL);
    std::tm tm{};
    ::gmtime_r(&seconds, &tm);
    char text[32];
    std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return text;
}

}  // namespace

Result<std::vector<DormantCard>> dormant_report(const ledger::Ledger& ledger, const Registry& registry, const CardReturns& returns,
                                                std::uint64_t now_ns) {
    COCONUT_TRY(tourists, returns.tourists());
    COCONUT_TRY(refunds, returns.returns());
    auto txn = ledger.begin_read();
    if (!txn) return Unexpected<Error>{storage_error(txn.error())};
    std::vector<DormantCard> out;
    auto status_of = [&](const Asn& asn) -> Result<std::string> {
        COCONUT_TRY(card, registry.card(asn));
        return card ? std::string(to_string(card->status)) : std::string("unregistered");
    };
    for (const TouristRecord& t : tourists) {
        if (t.returned_ns != 0) continue;
        COCONUT_TRY(b, balances_of(ledger, *txn, t.asn));
        COCONUT_TRY(status, status_of(t.asn));
        out.push_back(row(t.asn, "tourist", status, b, t.sold_ns, now_ns));
    }
    for (const ReturnRecord& r : refunds) {
        COCONUT_TRY(b, balances_of(ledger, *txn, r.asn));
        const bool waiting = r.kind == ReturnKind::broken && r.refunded_ns == 0;
        if (!waiting && b.refund <= 0) continue;
        COCONUT_TRY(status, status_of(r.asn));
        out.push_back(row(r.asn, waiting ? "broken_waiting" : "refund_unpaid", status, b, r.registered_ns, now_ns));
    }
    std::sort(out.begin(), out.end(), [](const DormantCard& a, const DormantCard& b) {
        return a.days_dormant != b.days_dormant ? a.days_dormant > b.days_dormant : a.asn < b.asn;
    });
    return out;
}

std::string dormant_csv(const std::vector<DormantCard>& cards) {
    std::string out = "card_number,asn,what,status,balance_fen,deposit_fen,refund_fen,last_activity_utc,days_dormant\n";
    for (const DormantCard& d : cards) {
        const std::string asn = bcd_to_digits(d.asn);
        out += asn.substr(4) + "," + asn + "," + d.what + "," + d.status + "," + std::to_string(d.balance_fen) + "," +
               std::to_string(d.deposit_fen) + "," + std::to_string(d.refund_fen) + "," + utc_text(d.last_activity_ns) + "," +
               std::to_string(d.days_dormant) + "\n";
    }
    return out;
}

}  // namespace coconut::clearing
