// The offline purchase's risk rules (clearing/README.md "Risk flags"): pure functions of the card's
// registry record before the booking and what the upload claims — no clock, no storage, no HSM. The
// engine books the purchase, runs assess_purchase inside the booking's transaction, stores the card it
// returns and raises one flag per finding. DF03 (balance before) and DF04 (offline ATC) are claims the
// TAC does not cover: they feed these rules only, never an amount.
#pragma once

#include <coconut/clearing/registry.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace coconut::clearing::risk {

// What one offline purchase upload books and claims.
struct PurchaseFacts {
    std::uint64_t amount_fen = 0;          // field 4 (what is booked)
    std::uint16_t offline_atc = 0;         // DF04, a claim
    std::uint32_t balance_before_fen = 0;  // DF03, a claim
    std::uint64_t when = 0;                // DF07 as a number ordered like the time (YYYYMMDD ‖ hhmmss BCD)
};

// A rule that fired: the flag's kind, the ATC it is filed under and its detail.
struct Finding {
    RiskKind kind = RiskKind::atc_implausible;
    std::uint16_t atc = 0;
    std::string detail;
    friend bool operator==(const Finding&, const Finding&) = default;
};

// The claimed ATC is more than atc_ahead_plausible_max above the card's booked prefix: not believed,
// not used for the ATC rules.
std::optional<Finding> atc_implausible(const CardRecord& card, const PurchaseFacts& purchase);

// The in-order upload's balance before (every earlier ATC booked, no later one) is above the shadow
// plus the unconfirmed loads, or below the shadow when every posted load precedes the purchase.
// Only for a plausible ATC.
std::optional<Finding> shadow_mismatch(const CardRecord& card, const PurchaseFacts& purchase);

// The shadow after the booking is below zero: the card spent money the clearing never saw loaded.
std::optional<Finding> shadow_negative(std::int64_t shadow_after_fen, const PurchaseFacts& purchase);

// A card not active in the registry (lost, blocked) was used offline.
std::optional<Finding> hotlisted_card_used(const CardRecord& card, const PurchaseFacts& purchase);

// An offline ATC range given up: every ATC in first…last not booked when an ATC 65 or more above it was.
struct AtcGap {
    std::uint16_t first = 0;
    std::uint16_t last = 0;
    std::uint32_t missing = 0;  // of first…last, those never booked
    friend bool operator==(const AtcGap&, const AtcGap&) = default;
};

// Records `atc` as booked in the card's contiguous prefix (CardRecord::offline_atc_next / _ahead, a
// window of 64 ATCs above the prefix). ATCs still missing when one 65 or more above them is booked are
// given up: returned as one range, and the prefix moves past them. Constant work whatever the ATC; the
// caller leaves out ATCs beyond atc_ahead_plausible_max (atc_implausible).
std::optional<AtcGap> mark_atc_booked(CardRecord& card, std::uint16_t atc);

// The atc_gap flag of a range given up while `purchase`'s ATC was booked.
Finding atc_gap(const AtcGap& gap, const PurchaseFacts& purchase);

// Every rule over one booked purchase: the card record after it (shadow debited, ATC prefix and
// highest ATC moved when the ATC is plausible, purchase counted; its risk_flags count is the caller's,
// which knows which flags are new) and the findings in the order they are raised (at most
// risk_flags_per_message_max).
struct Assessment {
    CardRecord card;
    std::vector<Finding> findings;
};
Assessment assess_purchase(const CardRecord& card, const PurchaseFacts& purchase);

}  // namespace coconut::clearing::risk
