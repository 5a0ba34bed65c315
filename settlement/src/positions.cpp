// Positions: the window's journal read in bounded chunks, each posted transfer classified by its code
// and the participant it belongs to (coconut/clearing/plan.hpp: transfer codes, user-data layout, account plan).
#include "internal.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <iterator>
#include <map>
#include <unordered_map>

namespace coconut::settlement {

namespace {

using clearing::Participant;
namespace codes = clearing::transfer_codes;
__extension__ typedef __int128 Wide;
__extension__ typedef unsigned __int128 WideUnsigned;  // Σ of many u64 amounts cannot wrap

constexpr std::uint32_t bp_per_unit = 10'000;

Error unbalanced(std::string message) { return Error{ErrorCode::unbalanced, std::move(message)}; }
Error storage(const ledger::Error& e) { return Error{ErrorCode::storage, e.message}; }

// One participant's accumulators while the journal is read.
struct Accumulator {
    std::array<KindTotals, kinds_count> kinds{};
    Wide purse_flow = 0;         // credited to its purse payable − loads it collected
    Wide medical_flow = 0;       // credited to its medical payable
    Wide purse_adjustments = 0;  // manual adjustments: credited − debited, per ledger
    Wide medical_adjustments = 0;
    Wide counter = 0;  // card returns, refunds and deposits at its counter (purse)
    bool active = false;
};

class Scan {
public:
    Scan(const ledger::Ledger& ledger, const std::vector<Participant>& participants) : ledger_(ledger), participants_(participants) {
        accumulators_.resize(participants.size());
        for (const ledger::Account& a : clearing::fixed_accounts()) fixed_.push_back(a.id);
        for (std::size_t i = 0; i < participants.size(); ++i) {
            by_id_.emplace(participants[i].id, i);
            payables_.emplace(clearing::payable_account(participants[i].id, clearing::ledgers::purse),
                              Payable{i, clearing::ledgers::purse});
            payables_.emplace(clearing::payable_account(participants[i].id, clearing::ledgers::medical),
                              Payable{i, clearing::ledgers::medical});
        }
    }

    // The hour (local time) a counted transfer is shown at in the report: the card's own clock for a card
    // transaction (Place::local_time_bcd YYMMDDhhmm), else the clearing's booking time.
    static std::size_t hour_of(const ledger::Transfer& t, std::uint64_t booked_ns) {
        const clearing::Place place = clearing::parse_place(t.user_data_128);
        const std::uint8_t hh = place.local_time_bcd[3];
        const unsigned tens = hh >> 4, units = hh & 0x0F;
        // A medical refund's user_data_128 is the hold it refunds, not a Place: the clearing's time.
        const bool placed = place.type != 0 && t.code != codes::medical_refund;
        if (placed && tens <= 2 && units <= 9 && tens * 10 + units < 24) return tens * 10 + units;
        const std::int64_t local_s = static_cast<std::int64_t>(booked_ns / ns_per_s) + local_utc_offset_s;
        return static_cast<std::size_t>((local_s % seconds_per_day) / 3600);
    }

    Status add(const ledger::Transfer& t, std::uint64_t booked_ns) {
        hour_ = hour_of(t, booked_ns);
        // Only posted money counts: a pending hold reserves, a void or an expiry releases; neither moves.
        if ((t.flags & (ledger::transfer_flags::pending | ledger::transfer_flags::void_pending)) != 0) return Ok{};
        switch (t.code) {
            case codes::offline_purchase: return purchase(t);
            case codes::clinic_medical: return medical(t);
            case codes::online_load: return load(t);
            case codes::manual_adjustment: return adjustment(t);
            case codes::purchase_refund: return refund(t, clearing::ledgers::purse, Kind::refund_purse);
            case codes::medical_refund: return refund(t, clearing::ledgers::medical, Kind::refund_medical);
            // A lost card's purchase uploaded after its balance was carried to its replacement
            // (clearing/README.md "Card lifecycle"): the merchant is paid as for any purchase. The same
            // code repairing the lost card's own shadow pays no participant.
            case codes::late_after_carry: return payables_.count(t.credit_account_id) != 0 ? purchase(t) : Status{Ok{}};
            case codes::card_refund:
            case codes::deposit_taken:
            case codes::deposit_returned:
            case codes::return_fee:
            case codes::broken_card_refund: return card_money(t);
            case codes::tac_failed:       // a failed TAC, recorded for review
            case codes::serial_conflict:  // a second valid TAC under a booked id, recorded for review
                suspense_.count += 1;
                suspense_.gross_fen += t.amount;
                return Ok{};
            default:  // opening balances, settlement's own transfers (payouts, fees, refund payouts): not the day's business
                return Ok{};
        }
    }

    Result<Positions> finish(Positions positions) {
        Wide balance = float_flow_ + fund_flow_;
        for (std::size_t i = 0; i < participants_.size(); ++i) {
            const Accumulator& a = accumulators_[i];
            if (!a.active) continue;
            ParticipantPosition p;
            p.participant = participants_[i];
            p.kinds = a.kinds;
            const auto gross = [&](Kind k) { return a.kinds[static_cast<std::size_t>(k)].gross_fen; };
            COCONUT_TRY(purse_base, sum(gross(Kind::bus), gross(Kind::shop), gross(Kind::clinic_purse)));
            if (!fits(a.purse_adjustments) || !fits(a.medical_adjustments) || !fits(a.counter)) {
                return Unexpected{unbalanced(fmt::format("participant {}: adjustments exceed 63 bits", p.participant.id))};
            }
            COCONUT_TRY(purse, amounts(p.participant, Takings{purse_base, gross(Kind::refund_purse), gross(Kind::load)},
                                       a.purse_adjustments, a.counter));
            COCONUT_TRY(medical, amounts(p.participant, Takings{gross(Kind::clinic_medical), gross(Kind::refund_medical), 0},
                                         a.medical_adjustments, 0));
            p.purse = purse;
            p.medical = medical;
            // The flows were accumulated from the accounts each transfer moved; the kinds from its
            // classification. They must agree before anything is paid.
            if (a.purse_flow !=
                    Wide{p.purse.base_fen} - p.purse.refunds_fen - p.purse.loads_fen + p.purse.adjustments_fen + p.purse.counter_fen ||
                a.medical_flow != Wide{p.medical.base_fen} - p.medical.refunds_fen + p.medical.adjustments_fen) {
                return Unexpected{
                    unbalanced(fmt::format("participant {}: classified totals disagree with the accounts moved", p.participant.id))};
            }
            positions.funding.fee_income_purse_fen += static_cast<std::int64_t>(p.purse.fee_fen);
            positions.funding.fee_income_medical_fen += static_cast<std::int64_t>(p.medical.fee_fen);
            balance += Wide{p.purse.net_fen} + p.medical.net_fen + p.purse.fee_fen + p.medical.fee_fen;
            positions.participants.push_back(std::move(p));
        }
        if (!fits(float_flow_) || !fits(fund_flow_) || !fits(return_fees_)) {
            return Unexpected{unbalanced("a funding position exceeds 64 bits")};
        }
        balance += return_fees_;
        positions.funding.fee_income_purse_fen += static_cast<std::int64_t>(return_fees_);
        for (const auto& [asn, owed] : refunds_) {
            if (owed == 0) continue;
            if (owed < 0 || !fits(owed)) return Unexpected{unbalanced("a refund owed is not a positive 63-bit amount")};
            positions.refunds.push_back(Refund{asn, static_cast<std::uint64_t>(owed), {}});
        }
        positions.funding.purse_float_fen = static_cast<std::int64_t>(float_flow_);
        positions.funding.medical_fund_fen = static_cast<std::int64_t>(fund_flow_);
        positions.suspense = suspense_;
        positions.hours = hours_;
        if (balance != 0 || positions.balance_fen() != 0) {
            return Unexpected{unbalanced(fmt::format("cycle {}: positions and fees do not sum to zero (off by {} fen)", positions.cycle,
                                                     static_cast<std::int64_t>(balance)))};
        }
        return positions;
    }

private:
    struct Payable {
        std::size_t index;
        std::uint32_t ledger_number;
    };

    static bool fits(Wide v) { return v >= Wide{INT64_MIN} && v <= Wide{INT64_MAX}; }

    static Result<std::uint64_t> sum(std::uint64_t a, std::uint64_t b, std::uint64_t c) {
        const Wide total = Wide{a} + b + c;
        if (total > Wide{INT64_MAX}) return Unexpected{unbalanced("a participant's gross exceeds 63 bits")};
        return static_cast<std::uint64_t>(total);
    }

    // What one funding source's transfers took in for a participant: each ≤ 63 bits (count() checks).
    struct Takings {
        std::uint64_t base = 0;     // purchases / medical payments
        std::uint64_t refunds = 0;  // same-day refunds of them
        std::uint64_t loads = 0;
    };

    // The fee is charged on what the participant kept: base less refunds (settlement/README.md "Fees").
    static Result<SourceAmounts> amounts(const Participant& participant, const Takings& takings, Wide adjustments, Wide counter) {
        SourceAmounts s;
        s.base_fen = takings.base;
        s.loads_fen = takings.loads;
        s.refunds_fen = takings.refunds;
        s.fee_fen = fee_fen(takings.base > takings.refunds ? takings.base - takings.refunds : 0, participant.fee_rate_bp);
        s.adjustments_fen = static_cast<std::int64_t>(adjustments);
        s.counter_fen = static_cast<std::int64_t>(counter);
        const Wide net = Wide{takings.base} - takings.refunds - takings.loads - s.fee_fen + adjustments + counter;
        if (!fits(net)) return Unexpected{unbalanced(fmt::format("participant {}: a net exceeds 63 bits", participant.id))};
        s.net_fen = static_cast<std::int64_t>(net);
        return s;
    }

    Status count(std::size_t index, Kind kind, std::uint64_t amount) {
        Accumulator& a = accumulators_[index];
        KindTotals& totals = a.kinds[static_cast<std::size_t>(kind)];
        if (totals.gross_fen > static_cast<std::uint64_t>(INT64_MAX) - amount) {
            return Unexpected{
                unbalanced(fmt::format("participant {}: {} gross exceeds 63 bits", participants_[index].id, to_string(kind)))};
        }
        totals.count += 1;
        totals.gross_fen += amount;
        a.active = true;
        KindTotals& hourly = hours_[hour_][static_cast<std::size_t>(kind)];
        if (hourly.gross_fen > UINT64_MAX - amount)
            return Unexpected{unbalanced(fmt::format("{} gross in an hour exceeds 64 bits", to_string(kind)))};
        hourly.count += 1;
        hourly.gross_fen += amount;
        return Ok{};
    }

    Result<Payable> payable_of(const ledger::Transfer& t, std::uint32_t ledger_number) const {
        auto found = payables_.find(t.credit_account_id);
        if (found == payables_.end() || found->second.ledger_number != ledger_number) {
            return Unexpected{
                unbalanced(fmt::format("transfer {} (code {}) credits {}, which is no registered participant's payable "
                                       "on ledger {}",
                                       ledger::to_string(t.id), t.code, ledger::to_string(t.credit_account_id), ledger_number))};
        }
        return found->second;
    }

    Status purchase(const ledger::Transfer& t) {
        COCONUT_TRY(payable, payable_of(t, clearing::ledgers::purse));
        const std::string& kind = participants_[payable.index].kind;
        const Kind k = kind == "bus" ? Kind::bus : kind == "clinic" ? Kind::clinic_purse : Kind::shop;
        if (auto s = count(payable.index, k, t.amount); !s) return s;
        accumulators_[payable.index].purse_flow += t.amount;
        float_flow_ -= t.amount;  // the float holds the purse money the card spent
        return Ok{};
    }

    Status medical(const ledger::Transfer& t) {
        COCONUT_TRY(payable, payable_of(t, clearing::ledgers::medical));
        if (auto s = count(payable.index, Kind::clinic_medical, t.amount); !s) return s;
        accumulators_[payable.index].medical_flow += t.amount;
        fund_flow_ -= t.amount;
        return Ok{};
    }

    // A load credits the card and debits the float; the participant at whose counter it was taken
    // (user_data_64; for a post, the hold's if the post carries none) holds the cash and owes it.
    Status load(const ledger::Transfer& t) {
        std::uint64_t participant_id = t.user_data_64;
        if (participant_id == 0 && (t.flags & ledger::transfer_flags::post_pending) != 0) {
            auto hold = ledger_.lookup_transfer(t.pending_id);
            if (!hold) return Unexpected{storage(hold.error())};
            if (*hold) participant_id = (*hold)->user_data_64;
        }
        auto found = by_id_.find(participant_id);
        if (found == by_id_.end()) {
            return Unexpected{
                unbalanced(fmt::format("load {} names participant {}, which is not registered", ledger::to_string(t.id), participant_id))};
        }
        if (auto s = count(found->second, Kind::load, t.amount); !s) return s;
        accumulators_[found->second].purse_flow -= t.amount;
        float_flow_ += t.amount;
        return Ok{};
    }

    // An approved manual adjustment that credits or debits a participant's payable belongs to that
    // participant's net; its other side is the ledger's float / fund, or a card's medical account (the
    // fund's money, as for medical payments). Between two payables it moves net from one to the other.
    Status adjustment(const ledger::Transfer& t) {
        Wide& funding = t.ledger == clearing::ledgers::purse ? float_flow_ : fund_flow_;
        for (const auto& [account, sign] : {std::pair{t.credit_account_id, Wide{1}}, std::pair{t.debit_account_id, Wide{-1}}}) {
            auto found = payables_.find(account);
            if (found == payables_.end() || found->second.ledger_number != t.ledger) continue;
            Accumulator& a = accumulators_[found->second.index];
            const Wide delta = sign * Wide{t.amount};
            const bool purse = t.ledger == clearing::ledgers::purse;
            (purse ? a.purse_flow : a.medical_flow) += delta;
            (purse ? a.purse_adjustments : a.medical_adjustments) += delta;
            funding -= delta;
            a.active = true;
        }
        return Ok{};
    }

    // A same-day refund (ISO8583.md §4.10), posted: the participant that was paid pays it back from its payable to
    // the card — a purchase by an online credit (code 22) to the purse shadow, a clinic's medical part (code 21) to
    // the card's medical account. Its net falls; the money is cardholders' again, held by the float / the fund, so
    // the funding source pays out that much less. The participant is the payable debited (a post may carry no
    // user_data_64); a refund from anything else, or onto a payable or a fixed account, is unattributed.
    Status refund(const ledger::Transfer& t, std::uint32_t ledger_number, Kind kind) {
        const auto payable = payables_.find(t.debit_account_id);
        const bool to_card =
            payables_.count(t.credit_account_id) == 0 && std::find(fixed_.begin(), fixed_.end(), t.credit_account_id) == fixed_.end();
        if (t.ledger != ledger_number || payable == payables_.end() || payable->second.ledger_number != ledger_number || !to_card) {
            return Unexpected{
                unbalanced(fmt::format("refund {} (code {}) moves {} → {}: not from a registered participant's payable "
                                       "on ledger {} to a card",
                                       ledger::to_string(t.id), t.code, ledger::to_string(t.debit_account_id),
                                       ledger::to_string(t.credit_account_id), ledger_number))};
        }
        if (auto s = count(payable->second.index, kind, t.amount); !s) return s;
        Accumulator& a = accumulators_[payable->second.index];
        (ledger_number == clearing::ledgers::purse ? a.purse_flow : a.medical_flow) -= t.amount;
        (ledger_number == clearing::ledgers::purse ? float_flow_ : fund_flow_) += t.amount;
        return Ok{};
    }

    // Card return, refund and deposit transfers (codes 15, 17–20, purse ledger): each side is a
    // participant's payable (its counter figure), fee income (return fees), or one of the card's own
    // accounts — purse shadow, deposit, refund owed — which are cardholders' money the float holds. What
    // the window credits to a card's refund_payable is paid by bank this cycle (Positions::refunds).
    Status card_money(const ledger::Transfer& t) {
        const Asn asn = clearing::card_of_user_data(t.user_data_128);
        const ledger::Id card_accounts[] = {clearing::purse_shadow_account(asn), clearing::card_deposit_account(asn),
                                            clearing::refund_payable_account(asn)};
        for (const auto& [account, sign] : {std::pair{t.credit_account_id, Wide{1}}, std::pair{t.debit_account_id, Wide{-1}}}) {
            const Wide delta = sign * Wide{t.amount};
            const auto payable = payables_.find(account);
            if (t.ledger == clearing::ledgers::purse && payable != payables_.end() && payable->second.ledger_number == t.ledger) {
                Accumulator& a = accumulators_[payable->second.index];
                a.purse_flow += delta;
                a.counter += delta;
                a.active = true;
            } else if (account == clearing::purse_fee_income_account) {
                return_fees_ += delta;
            } else if (t.ledger == clearing::ledgers::purse &&
                       std::find(std::begin(card_accounts), std::end(card_accounts), account) != std::end(card_accounts)) {
                float_flow_ += delta;
            } else {
                return Unexpected{
                    unbalanced(fmt::format("transfer {} (code {}) moves {}, which is neither a registered participant's "
                                           "payable, fee income nor an account of card {}",
                                           ledger::to_string(t.id), t.code, ledger::to_string(account), bcd_to_digits(asn)))};
            }
        }
        if (t.credit_account_id == clearing::refund_payable_account(asn)) refunds_[asn] += t.amount;
        if (t.debit_account_id == clearing::refund_payable_account(asn)) refunds_[asn] -= t.amount;
        return Ok{};
    }

    const ledger::Ledger& ledger_;
    const std::vector<Participant>& participants_;
    std::vector<Accumulator> accumulators_;
    std::unordered_map<std::uint64_t, std::size_t> by_id_;
    std::unordered_map<ledger::Id, Payable, ledger::IdHash> payables_;
    std::vector<ledger::Id> fixed_;  // the plan's fixed accounts: never a refund's card side
    Wide float_flow_ = 0;
    Wide fund_flow_ = 0;
    Wide return_fees_ = 0;
    std::map<Asn, Wide> refunds_;
    KindTotals suspense_;
    std::array<std::array<KindTotals, kinds_count>, 24> hours_{};
    std::size_t hour_ = 0;  // of the transfer being added
};

Result<std::uint64_t> timestamp_at(const ledger::Ledger& ledger, std::uint64_t sequence) {
    auto entries = ledger.read_journal(sequence, 1);
    if (!entries) return Unexpected{storage(entries.error())};
    if (entries->empty() || entries->front().sequence != sequence) {
        return Unexpected{Error{ErrorCode::storage, fmt::format("journal entry {} is missing", sequence)}};
    }
    return entries->front().timestamp;
}

// The first sequence in [1, head + 1] whose timestamp is ≥ `timestamp` (timestamps strictly increase
// with the sequence, so this is a binary search).
Result<std::uint64_t> first_at_or_after(const ledger::Ledger& ledger, std::uint64_t head, std::uint64_t timestamp) {
    std::uint64_t low = 1;
    std::uint64_t high = head + 1;
    while (low < high) {
        const std::uint64_t middle = low + (high - low) / 2;
        COCONUT_TRY(at, timestamp_at(ledger, middle));
        if (at < timestamp) {
            low = middle + 1;
        } else {
            high = middle;
        }
    }
    return low;
}

}  // namespace

std::string_view to_string(Kind kind) {
    switch (kind) {
        case Kind::bus: return "bus";
        case Kind::shop: return "shop";
        case Kind::clinic_purse: return "clinic_purse";
        case Kind::clinic_medical: return "clinic_medical";
        case Kind::load: return "load";
        case Kind::refund_purse: return "refund_purse";
        case Kind::refund_medical: return "refund_medical";
    }
    return "unknown";
}

std::uint64_t fee_fen(std::uint64_t base_fen, std::uint32_t rate_bp) {
    COCONUT_ASSERT(rate_bp <= clearing::fee_rate_bp_max);
    // Round half up: + 5,000 before the integer division by 10,000 (amounts are never negative).
    const WideUnsigned scaled = static_cast<WideUnsigned>(base_fen) * rate_bp + bp_per_unit / 2;
    return static_cast<std::uint64_t>(scaled / bp_per_unit);
}

std::int64_t Positions::balance_fen() const {
    Wide total = Wide{funding.purse_float_fen} + funding.medical_fund_fen + funding.fee_income_purse_fen + funding.fee_income_medical_fen;
    for (const auto& p : participants) total += p.net_fen();
    return static_cast<std::int64_t>(total);
}

Result<std::pair<std::uint64_t, std::uint64_t>> journal_range(const ledger::Ledger& ledger, const Window& window) {
    const std::uint64_t head = ledger.head().sequence;
    COCONUT_TRY(first, first_at_or_after(ledger, head, window.start_ns));
    COCONUT_TRY(after_last, first_at_or_after(ledger, head, window.end_ns));
    return std::pair{first, after_last - 1};
}

Result<Positions> compute_positions(const ledger::Ledger& ledger, const std::vector<Participant>& participants, std::uint32_t cycle,
                                    const Window& window, const Progress& progress) {
    Positions positions;
    positions.cycle = cycle;
    positions.window = window;
    COCONUT_TRY(range, journal_range(ledger, window));
    positions.first_sequence = range.first;
    positions.last_sequence = range.second;
    const std::uint64_t total = range.second + 1 - range.first;
    Scan scan(ledger, participants);
    std::size_t chunks = 0;
    for (std::uint64_t next = range.first; next <= range.second;) {
        const std::size_t limit = static_cast<std::size_t>(std::min<std::uint64_t>(journal_chunk_entries, range.second + 1 - next));
        auto chunk = ledger.read_journal(next, limit);  // its own short read transaction
        if (!chunk) return Unexpected{storage(chunk.error())};
        if (chunk->size() != limit)
            return Unexpected{Error{ErrorCode::storage, fmt::format("journal ends before sequence {}", range.second)}};
        for (const ledger::JournalEntry& entry : *chunk) {
            COCONUT_ASSERT(entry.sequence == next);
            COCONUT_ASSERT(entry.timestamp >= window.start_ns && entry.timestamp < window.end_ns);
            ++next;
            auto transfer = ledger::journal_transfer(entry);
            if (!transfer) continue;
            ++positions.transfers_counted;
            if (auto added = scan.add(*transfer, entry.timestamp); !added) return Unexpected{added.error()};
        }
        positions.entries_read += chunk->size();
        if (++chunks % chunks_per_page_release == 0) ledger.release_resident_pages();
        if (progress) progress(positions.entries_read, total);
    }
    return scan.finish(std::move(positions));
}

}  // namespace coconut::settlement
