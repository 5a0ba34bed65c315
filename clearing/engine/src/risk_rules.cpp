// The offline purchase's risk rules (risk_rules.hpp).
#include <coconut/clearing/risk_rules.hpp>

#include <coconut/core/assert.hpp>

#include <fmt/format.h>

#include <bit>

namespace coconut::clearing::risk {

namespace {

bool plausible(const CardRecord& card, const PurchaseFacts& p) {
    return int{p.offline_atc} - int{card.offline_atc_next} < int{atc_ahead_plausible_max};
}

// No booked ATC is above this one: every earlier one may be booked, no later one is.
bool newest(const CardRecord& card, const PurchaseFacts& p) { return !card.offline_atc_seen || p.offline_atc > card.offline_atc_max; }

}  // namespace

std::optional<Finding> atc_implausible(const CardRecord& card, const PurchaseFacts& p) {
    if (plausible(card, p)) return std::nullopt;
    return Finding{RiskKind::atc_implausible, p.offline_atc,
                   fmt::format("claimed offline ATC {} is {} above the card's booked prefix {}: not used", p.offline_atc,
                               p.offline_atc - card.offline_atc_next, card.offline_atc_next)};
}

// The shadow equals the card's balance before this purchase only when every earlier offline ATC is
// booked and no later one is (uploads from many terminals arrive in any order), up to the card's loads:
// unconfirmed ones may be on the card and not in the shadow, and posted ones may have been credited
// after the purchase.
std::optional<Finding> shadow_mismatch(const CardRecord& card, const PurchaseFacts& p) {
    if (!plausible(card, p) || !newest(card, p) || p.offline_atc != card.offline_atc_next) return std::nullopt;
    const auto before = static_cast<std::int64_t>(p.balance_before_fen);
    const std::int64_t most = card.shadow_balance_fen + static_cast<std::int64_t>(card.unconfirmed_loads_fen);
    const bool loads_precede = card.latest_load_when < p.when;
    if (before > most) {
        return Finding{RiskKind::shadow_mismatch, p.offline_atc,
                       fmt::format("balance before {} fen above shadow {} + unconfirmed loads {} fen", before, card.shadow_balance_fen,
                                   card.unconfirmed_loads_fen)};
    }
    if (loads_precede && before < card.shadow_balance_fen) {
        return Finding{RiskKind::shadow_mismatch, p.offline_atc,
                       fmt::format("balance before {} fen below shadow {} fen", before, card.shadow_balance_fen)};
    }
    return std::nullopt;
}

std::optional<Finding> shadow_negative(std::int64_t shadow_after_fen, const PurchaseFacts& p) {
    if (shadow_after_fen >= 0) return std::nullopt;
    return Finding{RiskKind::shadow_negative, p.offline_atc, fmt::format("shadow {} fen", shadow_after_fen)};
}

std::optional<Finding> hotlisted_card_used(const CardRecord& card, const PurchaseFacts& p) {
    if (card.status == CardStatus::active) return std::nullopt;
    return Finding{RiskKind::hotlisted_card_used, p.offline_atc, std::string(to_string(card.status))};
}

std::optional<AtcGap> mark_atc_booked(CardRecord& card, std::uint16_t atc) {
    constexpr int window = 64;
    // offline_atc_next is booked or given up: move past it and the booked ATCs that follow it.
    auto pass = [&card] {
        ++card.offline_atc_next;  // bit i of the window now names ATC offline_atc_next + i
        while ((card.offline_atc_ahead & 1) != 0) {
            card.offline_atc_ahead >>= 1;
            ++card.offline_atc_next;
        }
        card.offline_atc_ahead >>= 1;  // bit 0 named the (missing) new offline_atc_next
    };
    if (atc < card.offline_atc_next) return std::nullopt;
    std::optional<AtcGap> gap;
    const int distance = int{atc} - int{card.offline_atc_next} - 1;  // atc's bit in the window
    if (distance >= 2 * window) {
        // Everything the window holds lies below atc - window: give up next … atc - window - 1 at once.
        const int booked = std::popcount(card.offline_atc_ahead);
        const auto last = static_cast<std::uint16_t>(atc - window - 1);
        gap = AtcGap{card.offline_atc_next, last, static_cast<std::uint32_t>(last - card.offline_atc_next + 1 - booked)};
        card.offline_atc_next = static_cast<std::uint16_t>(atc - window);
        card.offline_atc_ahead = 0;
    } else {
        while (int{atc} - int{card.offline_atc_next} - 1 >= window) {  // at most `window` rounds
            if (!gap) gap = AtcGap{card.offline_atc_next, card.offline_atc_next, 0};
            gap->last = card.offline_atc_next;
            gap->missing++;
            pass();
        }
    }
    if (atc == card.offline_atc_next) {
        pass();
    } else if (atc > card.offline_atc_next) {
        card.offline_atc_ahead |= std::uint64_t{1} << (atc - card.offline_atc_next - 1);
    }
    COCONUT_ASSERT(atc < card.offline_atc_next || atc - card.offline_atc_next - 1 < window, "the ATC lies in the window or below it");
    COCONUT_ASSERT(!gap || (gap->first <= gap->last && gap->missing <= std::uint32_t{gap->last} - gap->first + 1u),
                   "a gap's range holds it");
    return gap;
}

Finding atc_gap(const AtcGap& gap, const PurchaseFacts& p) {
    return Finding{RiskKind::atc_gap, gap.first,
                   fmt::format("offline ATCs {}–{} given up when ATC {} was booked ({} missing)", gap.first, gap.last, p.offline_atc,
                               gap.missing)};
}

Assessment assess_purchase(const CardRecord& before, const PurchaseFacts& p) {
    Assessment out{before, {}};
    CardRecord& card = out.card;
    const auto found = [&](std::optional<Finding> finding) {
        if (finding) out.findings.push_back(std::move(*finding));
    };
    found(atc_implausible(before, p));
    found(shadow_mismatch(before, p));
    card.shadow_balance_fen -= static_cast<std::int64_t>(p.amount_fen);
    found(shadow_negative(card.shadow_balance_fen, p));
    if (plausible(before, p)) {
        if (newest(before, p)) card.offline_atc_max = p.offline_atc;
        // Offline ATCs still missing when 64 later ones could have arrived — not merely one that arrives
        // late from another terminal: one flag per range.
        if (auto gap = mark_atc_booked(card, p.offline_atc)) found(atc_gap(*gap, p));
        card.offline_atc_seen = true;
    }
    card.offline_purchases++;
    found(hotlisted_card_used(before, p));
    COCONUT_ASSERT(out.findings.size() <= risk_flags_per_message_max);
    COCONUT_ASSERT(card.shadow_balance_fen == before.shadow_balance_fen - static_cast<std::int64_t>(p.amount_fen),
                   "the shadow pays the purchase");
    COCONUT_ASSERT(card.offline_purchases == before.offline_purchases + 1);
    return out;
}

}  // namespace coconut::clearing::risk
