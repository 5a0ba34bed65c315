// The offline purchase's risk rules (risk_rules.hpp), one rule at a time, as pure functions of the card
// record and the upload's claims.
#include <coconut/clearing/risk_rules.hpp>

#include <doctest/doctest.h>

using namespace coconut::clearing;
using namespace coconut::clearing::risk;

namespace {

// A card with `shadow` fen whose offline ATCs 0 … next-1 are booked.
CardRecord card_with(std::int64_t shadow, std::uint16_t next) {
    CardRecord card;
    card.shadow_balance_fen = shadow;
    card.offline_atc_next = next;
    card.offline_atc_seen = next > 0;
    card.offline_atc_max = next > 0 ? static_cast<std::uint16_t>(next - 1) : 0;
    return card;
}

PurchaseFacts purchase(std::uint16_t atc, std::uint32_t balance_before, std::uint64_t amount = 100) {
    return PurchaseFacts{amount, atc, balance_before, 20261206'120000};
}

}  // namespace

TEST_CASE("risk rule atc_implausible: more than atc_ahead_plausible_max above the booked prefix") {
    const CardRecord card = card_with(5000, 10);
    CHECK_FALSE(atc_implausible(card, purchase(10 + atc_ahead_plausible_max - 1, 5000)));
    auto finding = atc_implausible(card, purchase(10 + atc_ahead_plausible_max, 5000));
    REQUIRE(finding);
    CHECK(finding->kind == RiskKind::atc_implausible);
    CHECK(finding->atc == 10 + atc_ahead_plausible_max);
    CHECK(finding->detail == "claimed offline ATC 1034 is 1024 above the card's booked prefix 10: not used");
}

TEST_CASE("risk rule shadow_mismatch: only the in-order upload, within unconfirmed loads and load times") {
    CardRecord card = card_with(5000, 3);
    CHECK_FALSE(shadow_mismatch(card, purchase(3, 5000)));
    auto above = shadow_mismatch(card, purchase(3, 5100));
    REQUIRE(above);
    CHECK(above->detail == "balance before 5100 fen above shadow 5000 + unconfirmed loads 0 fen");
    auto below = shadow_mismatch(card, purchase(3, 4900));
    REQUIRE(below);
    CHECK(below->detail == "balance before 4900 fen below shadow 5000 fen");
    CHECK_FALSE(shadow_mismatch(card, purchase(4, 9999)));  // ATC 3 not booked yet: not in order
    CHECK_FALSE(shadow_mismatch(card, purchase(2, 9999)));  // a late one
    card.unconfirmed_loads_fen = 200;
    CHECK_FALSE(shadow_mismatch(card, purchase(3, 5200)));  // the unconfirmed load may be on the card
    card.latest_load_when = 20261206'130000;                // a posted load after the purchase
    CHECK_FALSE(shadow_mismatch(card, purchase(3, 4900)));
}

TEST_CASE("risk rule shadow_negative: the shadow after the booking below zero") {
    CHECK_FALSE(shadow_negative(0, purchase(1, 0)));
    auto finding = shadow_negative(-50, purchase(1, 0));
    REQUIRE(finding);
    CHECK(finding->kind == RiskKind::shadow_negative);
    CHECK(finding->detail == "shadow -50 fen");
}

TEST_CASE("risk rule hotlisted_card_used: a card not active") {
    CardRecord card = card_with(5000, 0);
    CHECK_FALSE(hotlisted_card_used(card, purchase(0, 5000)));
    card.status = CardStatus::lost;
    auto finding = hotlisted_card_used(card, purchase(0, 5000));
    REQUIRE(finding);
    CHECK(finding->detail == "lost");
}

TEST_CASE("risk rule atc_gap: ATCs given up when one 65 or more above them is booked") {
    CardRecord card = card_with(5000, 0);
    CHECK_FALSE(mark_atc_booked(card, 0));
    CHECK(card.offline_atc_next == 1);
    CHECK_FALSE(mark_atc_booked(card, 64));  // within the window: waits for 1 … 63
    CHECK(card.offline_atc_next == 1);
    CHECK_FALSE(mark_atc_booked(card, 65));  // 64 above ATC 1: still in time
    auto gap = mark_atc_booked(card, 66);    // 65 above: ATC 1 is given up
    REQUIRE(gap);
    CHECK(*gap == AtcGap{1, 1, 1});
    CHECK(card.offline_atc_next == 2);
    CHECK(atc_gap(*gap, purchase(66, 0)).detail == "offline ATCs 1–1 given up when ATC 66 was booked (1 missing)");
    CardRecord far = card_with(5000, 0);
    auto jump = mark_atc_booked(far, 1000);  // far above: given up at once
    REQUIRE(jump);
    CHECK(*jump == AtcGap{0, 935, 936});
    CHECK(far.offline_atc_next == 936);
}

TEST_CASE("assess_purchase: the card after the booking and the findings in order") {
    CardRecord card = card_with(80, 5);
    card.status = CardStatus::blocked;
    const Assessment a = assess_purchase(card, purchase(5, 120));
    CHECK(a.card.shadow_balance_fen == -20);
    CHECK(a.card.offline_atc_next == 6);
    CHECK(a.card.offline_atc_max == 5);
    CHECK(a.card.offline_purchases == card.offline_purchases + 1);
    REQUIRE(a.findings.size() == 3);
    CHECK(a.findings[0].kind == RiskKind::shadow_mismatch);
    CHECK(a.findings[1].kind == RiskKind::shadow_negative);
    CHECK(a.findings[2].kind == RiskKind::hotlisted_card_used);
    // An implausible ATC moves nothing but the shadow and the count.
    const Assessment b = assess_purchase(card_with(5000, 5), purchase(5 + atc_ahead_plausible_max, 5000));
    REQUIRE(b.findings.size() == 1);
    CHECK(b.findings[0].kind == RiskKind::atc_implausible);
    CHECK(b.card.offline_atc_next == 5);
    CHECK(b.card.offline_atc_max == 4);
    CHECK(b.card.shadow_balance_fen == 4900);
}
