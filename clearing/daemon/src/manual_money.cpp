// Settlement-shaped postings and manual adjustments: the rules (manual_money.hpp).
#include "manual_money.hpp"

#include <coconut/settlement/settlement.hpp>

#include <fmt/format.h>

#include <chrono>

namespace coconut::clearing::http {

namespace codes = transfer_codes;

namespace {

std::string_view settlement_kind(std::uint16_t code) { return code == codes::settlement_fee ? "fee" : "payout"; }

std::string_view ledger_name(std::uint32_t ledger_number) { return ledger_number == ledgers::purse ? "purse" : "medical"; }

// What a settlement transfer pays, for the refusal's message.
std::string settlement_what(const ledger::Transfer& t) {
    if (t.code == codes::refund_payout) return fmt::format("card {}'s refund", bcd_to_digits(card_of_user_data(t.user_data_128)).substr(4));
    return fmt::format("participant {}'s {} {}", t.user_data_64, ledger_name(t.ledger), settlement_kind(t.code));
}

}  // namespace

std::optional<std::string> window_refusal(const CycleClaim& claim, const std::optional<SettlementCycle>& recorded,
                                          const std::optional<SettlementCycle>& latest, std::uint64_t now_ns, std::chrono::seconds margin) {
    if (!settlement::date_of_cycle(claim.cycle)) return fmt::format("cycle {} is not a business date YYYYMMDD", claim.cycle);
    if (claim.start_ns >= claim.end_ns) return fmt::format("cycle {}: the window's start must be before its end", claim.cycle);
    const auto margin_ns = static_cast<std::uint64_t>(std::chrono::nanoseconds(margin).count());
    if (claim.end_ns > now_ns || now_ns - claim.end_ns < margin_ns) {
        return fmt::format(
            "cycle {}: its window ends less than {} s ago (or in the future); transfers stamped before the end may "
            "still be committing",
            claim.cycle, margin.count());
    }
    if (recorded) {
        if (recorded->start_ns != claim.start_ns || recorded->end_ns != claim.end_ns) {
            return fmt::format("cycle {} was first posted for the window [{}, {}) ns; a cycle's window never changes", claim.cycle,
                               recorded->start_ns, recorded->end_ns);
        }
        return std::nullopt;
    }
    if (latest) {
        if (claim.cycle <= latest->cycle) {
            return fmt::format("cycle {} comes before the latest posted cycle {}: cycles are posted in date order", claim.cycle,
                               latest->cycle);
        }
        if (claim.start_ns != latest->end_ns) {
            return fmt::format("cycle {} must begin where cycle {} ended ({} ns), not at {} ns: windows join without gap or overlap",
                               claim.cycle, latest->cycle, latest->end_ns, claim.start_ns);
        }
    }
    return std::nullopt;
}

Result<ExpectedTransfers> expected_settlement_transfers(const ledger::Ledger& ledger, const Registry& registry, const CycleClaim& claim) {
    auto participants = registry.participants();
    if (!participants) return Unexpected<Error>{participants.error()};
    auto positions = settlement::compute_positions(ledger, *participants, claim.cycle, settlement::Window{claim.start_ns, claim.end_ns});
    if (!positions) {
        const auto code = positions.error().code == settlement::ErrorCode::storage ? ErrorCode::storage : ErrorCode::conflict;
        return Unexpected<Error>{
            Error{code, fmt::format("cycle {}: the daemon cannot compute its positions: {}", claim.cycle, positions.error().message)}};
    }
    ExpectedTransfers expected;
    for (ledger::Transfer& t : settlement::settlement_transfers(*positions)) expected.emplace(t.id, t);
    return expected;
}

std::optional<std::string> settlement_refusal(const ledger::Transfer& posted, const ExpectedTransfers& expected, std::uint32_t cycle) {
    if (posted.code != codes::settlement_payout && posted.code != codes::settlement_fee && posted.code != codes::refund_payout) {
        return fmt::format(
            "code {} is not a settlement transfer: the settlement role posts only codes {} (payout), {} (fee) and {} (a card's refund "
            "by bank)",
            posted.code, codes::settlement_payout, codes::settlement_fee, codes::refund_payout);
    }
    if ((posted.flags & ~ledger::transfer_flags::linked) != 0 || posted.pending_id != ledger::Id{} || posted.timeout_s != 0) {
        return std::string("settlement transfers are single-phase: no pending, post_pending or void_pending, no pending_id or timeout");
    }
    const auto found = expected.find(posted.id);
    if (found == expected.end()) {
        return fmt::format(
            "id {} is none of cycle {}'s settlement transfers as the daemon computes them over the cycle's window "
            "(ids derive from cycle, participant, ledger and code, a refund's from cycle and card; a participant without activity "
            "has none)",
            id_hex(posted.id), cycle);
    }
    const ledger::Transfer& want = found->second;
    const std::string what = settlement_what(want);
    if (posted.debit_account_id != want.debit_account_id || posted.credit_account_id != want.credit_account_id ||
        posted.ledger != want.ledger || posted.code != want.code) {
        return fmt::format("{} moves {} → {} on ledger {} with code {}", what, id_hex(want.debit_account_id),
                           id_hex(want.credit_account_id), want.ledger, want.code);
    }
    if (posted.amount != want.amount) {
        return fmt::format("amount {} fen differs from the {} fen the daemon computes for {} over cycle {}'s window", posted.amount,
                           want.amount, what, cycle);
    }
    if (posted.flags != want.flags || posted.user_data_128 != want.user_data_128 || posted.user_data_64 != want.user_data_64 ||
        posted.user_data_32 != want.user_data_32) {
        return fmt::format(
            "{}: flags or user data differ from the daemon's (linked chain per participant, cycle in user_data_128, "
            "participant in user_data_64; a refund: cycle and card in user_data_128, not linked)",
            what);
    }
    return std::nullopt;
}

Result<std::optional<std::string>> adjustment_refusal(const ledger::Ledger& ledger, const Adjustment& a) {
    if (a.ledger != ledgers::purse && a.ledger != ledgers::medical) {
        return std::optional<std::string>(fmt::format("ledger must be {} (purse) or {} (medical)", ledgers::purse, ledgers::medical));
    }
    if (a.amount == 0) return std::optional<std::string>("amount must be at least 1 fen");
    if (a.debit_account_id == a.credit_account_id) return std::optional<std::string>("debit and credit accounts must differ");
    for (const auto& [side, id] : {std::pair{"debit", a.debit_account_id}, std::pair{"credit", a.credit_account_id}}) {
        auto account = ledger.lookup_account(id);
        if (!account) return Unexpected<Error>{Error{ErrorCode::storage, account.error().message}};
        if (!*account) return std::optional<std::string>(fmt::format("{} account {} does not exist", side, id_hex(id)));
        const ledger::Account& acc = **account;
        if (acc.ledger != a.ledger) {
            return std::optional<std::string>(fmt::format("{} account {} is on ledger {}, not {}", side, id_hex(id), acc.ledger, a.ledger));
        }
        switch (acc.code) {
            case account_codes::participant_payable:
            case account_codes::purse_float:
            case account_codes::medical_fund:
            case account_codes::card_medical: break;
            case account_codes::card_purse_shadow:
                return std::optional<std::string>(
                    fmt::format("{} account {} is a card's purse shadow: it mirrors the chip and moves only "
                                "with a card transaction (a refund to a purse is a load)",
                                side, id_hex(id)));
            default:
                return std::optional<std::string>(
                    fmt::format("{} account {} (account code {}) is owned by another rule (fee income: "
                                "settlement; suspense and review claims: review records; refunds and deposits: the counter)",
                                side, id_hex(id), acc.code));
        }
    }
    return std::optional<std::string>();
}

ledger::Transfer adjustment_transfer_of(const Adjustment& a) {
    ledger::Transfer t;
    t.id = adjustment_transfer(a.number);
    t.debit_account_id = a.debit_account_id;
    t.credit_account_id = a.credit_account_id;
    t.amount = a.amount;
    t.ledger = a.ledger;
    t.code = codes::manual_adjustment;
    t.user_data_64 = a.number;
    return t;
}

}  // namespace coconut::clearing::http
