// Card return and refund, broken-card refunds and tourist cards (coconut::clearing_registry;
// clearing/README.md "Card return, refund and tourist cards"): the two tables that remember them, the
// ledger transfers each one books (codes 15–20 of the account plan, plan.hpp) and the dormancy report.
//
// Money moves only by ledger transfers; nothing here writes a balance:
//   - a return: the card's balance left it by a TAC-proven purchase (code 1) at the counter's terminal;
//     return_events() then moves what the cardholder is owed — by bank: the counter's payable →
//     refund_payable (15); a tourist card's deposit back (18) minus the return fee (19);
//   - a broken card: its cleared shadow → refund_payable (20) once the waiting period has passed;
//   - a tourist card's sale: the seller's payable → card_deposit (17);
//   - settlement pays refund_payable to the cardholder's bank account (16, settlement/README.md "Refunds").
//
// Tables (in the ledger's environment, keyed by ASN; values are JSON objects, written only by the clerk
// API's counter routes inside their commit): `returns` (how a card was returned or refunded) and
// `tourist` (a tourist card's sale and return).
#pragma once

#include <coconut/clearing/registry.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace coconut::clearing {

enum class Payout : std::uint8_t { cash = 1, bank = 2 };
std::string_view to_string(Payout payout);
std::optional<Payout> parse_payout(std::string_view text);

// How a card left service (table `returns`).
enum class ReturnKind : std::uint8_t {
    counter = 1,  // handed back at a counter, its balance taken by a purchase of the counter's terminal
    broken = 2,   // unreadable: refunded from its cleared shadow after the waiting period
};
std::string_view to_string(ReturnKind kind);

struct ReturnRecord {
    Asn asn{};
    ReturnKind kind = ReturnKind::counter;
    Payout payout = Payout::bank;
    std::uint64_t registered_ns = 0;  // the clerk's request (wall clock)
    std::uint64_t refunded_ns = 0;    // the refund booked (counter: at once; broken: after the wait), 0 until then
    std::uint64_t counter_id = 0;     // the counter participant (counter returns)
    std::string terminal_id;          // the counter's terminal (field 41) whose purchase took the balance
    ledger::Id purchase_id;           // that purchase (offline_purchase_transfer)
    std::uint64_t balance_fen = 0;    // the purchase's amount, or the broken card's shadow when refunded
    std::uint64_t deposit_fen = 0;    // a tourist card's deposit (0 for a resident's card)
    std::uint64_t fee_fen = 0;        // the return fee charged (capped: return_fee_split)
    std::string bank_account;         // payout bank: where settlement pays (≤ bank_account_chars_max)
    std::string account_holder;       // payout bank: the account holder's name (≤ account_holder_chars_max)
};

struct TouristRecord {
    Asn asn{};
    std::uint64_t seller_id = 0;  // the counter participant that sold it and collected the deposit in cash
    std::uint64_t deposit_fen = 0;
    std::uint64_t sold_ns = 0;
    std::uint64_t returned_ns = 0;  // 0 while the tourist still has it
    std::uint64_t fee_fen = 0;      // charged at the return
};

inline constexpr std::size_t account_holder_chars_max = 70;        // pain.001 Cdtr/Nm (Max140Text), kept short for the bank
inline constexpr std::uint64_t tourist_deposit_fen_max = 100'000;  // 1,000 CNY

// The return fee of a tourist card, capped at deposit + balance (the cardholder never owes money at the
// counter): taken from the deposit first, the rest from the returned balance.
struct FeeSplit {
    std::uint64_t from_deposit = 0;
    std::uint64_t from_balance = 0;
    std::uint64_t charged() const { return from_deposit + from_balance; }
};
FeeSplit return_fee_split(std::uint64_t balance_fen, std::uint64_t deposit_fen, std::uint64_t fee_fen);

// The transfers of a counter return, one linked chain (all or nothing), after the accounts (`exists`
// when present). Cash: the counter paid balance − fee share + deposit − fee share over the desk; its
// payable was credited by the purchase, so only the deposit (18 → counter payable) and the fee (19) move.
// Bank: 15 (the balance less its fee share) and 18 go to refund_payable for settlement to pay.
struct ReturnPlan {
    Asn asn{};
    std::uint64_t counter_id = 0;
    Payout payout = Payout::bank;
    std::uint64_t balance_fen = 0;  // the purchase's amount
    std::uint64_t deposit_fen = 0;
    FeeSplit fee;
};
std::vector<ledger::Event> return_events(const ReturnPlan& plan);
// What the cardholder receives (over the desk or by bank).
std::uint64_t refunded_fen(const ReturnPlan& plan);

// A tourist card's sale: 17 the seller's payable → card_deposit, after the accounts.
std::vector<ledger::Event> sale_events(const Asn& asn, std::uint64_t seller_id, std::uint64_t deposit_fen);
// A broken card's refund: 20 shadow → refund_payable of `shadow_fen` (nothing when ≤ 0), and a tourist
// card's deposit (18 → refund_payable) less the fee, which a broken card pays from its deposit only.
std::vector<ledger::Event> broken_refund_events(const Asn& asn, std::int64_t shadow_fen, std::uint64_t deposit_fen, std::uint64_t fee_fen);

class CardReturns {
public:
    // Opens (creates) the tables `returns` and `tourist`. Start-up only.
    static Result<std::unique_ptr<CardReturns>> open(lmdb::Env& env);
    ~CardReturns();
    CardReturns(const CardReturns&) = delete;
    CardReturns& operator=(const CardReturns&) = delete;

    // Inside a caller's transaction (the clerk change's hook, or a read transaction).
    lmdb::Result<std::optional<ReturnRecord>> return_in(const lmdb::Txn& txn, const Asn& asn) const;
    lmdb::Result<std::optional<TouristRecord>> tourist_in(const lmdb::Txn& txn, const Asn& asn) const;
    lmdb::Status put_return(lmdb::Txn& txn, const ReturnRecord& record) const;
    lmdb::Status put_tourist(lmdb::Txn& txn, const TouristRecord& record) const;
    // Own read transaction.
    Result<std::optional<ReturnRecord>> return_of(const Asn& asn) const;
    Result<std::optional<TouristRecord>> tourist_of(const Asn& asn) const;
    Result<std::vector<ReturnRecord>> returns() const;
    Result<std::vector<TouristRecord>> tourists() const;

    struct Tables;

private:
    CardReturns(lmdb::Env& env, std::unique_ptr<Tables> tables);
    lmdb::Env& env_;
    std::unique_ptr<Tables> tables_;
};

// ---- dormancy report ---------------------------------------------------------------------------------

// Money the clearing holds for a cardholder who has not come back: tourist cards still out (balance and
// deposit), refunds owed by bank and not paid yet, broken-card refunds still waiting. Never forfeited.
struct DormantCard {
    Asn asn{};
    std::string what;  // "tourist", "refund_unpaid", "broken_waiting"
    std::string status;
    std::int64_t balance_fen = 0;        // the purse shadow (cleared)
    std::int64_t deposit_fen = 0;        // card_deposit held
    std::int64_t refund_fen = 0;         // refund_payable owed
    std::uint64_t last_activity_ns = 0;  // newest transfer of the card's purse, deposit or refund account (or the sale)
    std::uint64_t days_dormant = 0;      // whole days from last activity to `now_ns`
};
Result<std::vector<DormantCard>> dormant_report(const ledger::Ledger& ledger, const Registry& registry, const CardReturns& returns,
                                                std::uint64_t now_ns);
// card_number,asn,what,status,balance_fen,deposit_fen,refund_fen,last_activity_utc,days_dormant — a header
// line, then one line per card.
std::string dormant_csv(const std::vector<DormantCard>& cards);

}  // namespace coconut::clearing
