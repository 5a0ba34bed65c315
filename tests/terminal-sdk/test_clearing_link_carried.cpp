// The terminal's collection of a carried balance (LoadFunding::carried: processing code 280000 on the
// 0200, its 0220 and its 0420, clearing/ISO8583.md §4.2a) against the real clearing engine: card A
// replaces card B, B's balance is carried to A's holding after the waiting period, and A's terminal
// collects it with the online load's flow. A card with nothing carried gets 51 and nothing changes.
// Every scenario ends with check() (ledger invariants, cards = shadows) and the lifecycle's own check.
#include "link_rig.hpp"

#include <coconut/clearing/card_lifecycle.hpp>

#include <future>

using namespace clearing_test;
using namespace link_test;
namespace sdk = coconut::sdk;

namespace {

constexpr std::uint64_t wait_s = 100;
constexpr std::uint64_t ns_per_s = 1'000'000'000ULL;
constexpr std::uint64_t t0_ns = 1'800'000'000'000'000'000ULL;  // the fixture ledger's clock

SsnHash holder_ssn() {
    SsnHash h{};
    h.fill(0x11);
    return h;
}

struct CarriedRig : LinkRig {
    Lifecycle& lifecycle = clearing.daemon->lifecycle();
    LifecycleContext context{*clearing.ledger, *clearing.registry, lifecycle, wait_s};

    std::string commit(LifecycleChange change) {
        std::promise<std::string> outcome;
        auto future = outcome.get_future();
        REQUIRE(submit_change(*clearing.writer, std::move(change), [&outcome](std::string o) { outcome.set_value(std::move(o)); }));
        REQUIRE(future.wait_for(std::chrono::seconds(10)) == std::future_status::ready);
        return future.get();
    }

    // Card B reported lost and replaced by card A (the terminal's card); its balance carried after the wait.
    std::int64_t carry_b_to_a() {
        const SsnHash ssn = holder_ssn();
        const PersonRecord person{"Li Na", "1980-02-03", {asn_of(card_b)}};
        REQUIRE(commit(LifecycleChange{{}, [this, ssn, person](lmdb::Txn& txn, auto, std::string&) {
                                           return lifecycle.put_person(txn, ssn, person);
                                       }}) == "ok");
        REQUIRE(commit(report_lost(context, asn_of(card_b), Reporter::clerk, "desk", t0_ns)) == "ok");
        auto replaced = replace_card(context, asn_of(card_b), asn_of(card_a), ssn, t0_ns);
        REQUIRE_MESSAGE(replaced.ok(), (replaced.ok() ? "" : replaced.error()));
        REQUIRE(commit(std::move(replaced).value()) == "ok");
        const std::int64_t lost_balance = clearing.shadow(card_b);
        auto page = lifecycle_sweep(context, t0_ns + (wait_s + 1) * ns_per_s, Asn{}, sweep_records_per_page);
        REQUIRE(page.ok());
        REQUIRE(page->changes.size() == 1);
        for (auto& change : page->changes) REQUIRE(commit(std::move(change)) == "ok");
        REQUIRE(holding() == lost_balance);
        return lost_balance;
    }

    std::int64_t holding() const { return clearing.balance(carried_holding_account(asn_of(card_a))); }

    void require_checks() const {
        clearing.require_check();
        auto problems = check_lifecycle(*clearing.ledger, *clearing.registry, lifecycle);
        REQUIRE(problems.ok());
        for (const auto& p : *problems) FAIL_CHECK(p);
    }
};

void require_short(const coconut::Result<sdk::LoadOutcome, sdk::FlowError>& loaded) {
    REQUIRE_FALSE(loaded.ok());
    CHECK(loaded.error().code == sdk::FlowErrorCode::declined);
    CHECK(loaded.error().response_code == "51");
    CHECK(loaded.error().message.find("carried holding") != std::string::npos);
    CHECK_FALSE(loaded.error().reversed);
}

}  // namespace

TEST_CASE("carried load: a card with nothing carried is answered 51 (280000 sent); card, shadow and queue unchanged") {
    CarriedRig rig;
    require_short(rig.terminal->load(1000, *rig.client, sdk::LoadFunding::carried));
    CHECK(rig.card_balance() == 5000);
    CHECK(rig.card->snapshot().online_atc == 0);  // INITIALIZE FOR LOAD only: no CREDIT ran
    CHECK(rig.clearing.shadow(card_a) == 5000);
    CHECK(rig.queue->size() == 0);
    CHECK(rig.queue->open_intents().empty());
    // The same amount from cash (210000) is served: the 51 was the holding's, not the card's.
    auto cash = rig.terminal->load(1000, *rig.client);
    REQUIRE_MESSAGE(cash.ok(), (cash.ok() ? "" : cash.error().message));
    CHECK_FALSE(cash->record.carried);
    CHECK(rig.clearing.shadow(card_a) == 6000);
    rig.require_checks();
}

TEST_CASE("carried load: the replacement collects the carried balance (51 above it, then the whole, then 51); shadow = card") {
    CarriedRig rig;
    const std::int64_t carried = rig.carry_b_to_a();
    REQUIRE(carried > 0);
    const auto amount = static_cast<std::uint32_t>(carried);
    require_short(rig.terminal->load(amount + 1, *rig.client, sdk::LoadFunding::carried));
    CHECK(rig.card_balance() == 5000);
    CHECK(rig.holding() == carried);

    auto loaded = rig.terminal->load(amount, *rig.client, sdk::LoadFunding::carried);
    REQUIRE_MESSAGE(loaded.ok(), (loaded.ok() ? "" : loaded.error().message));
    CHECK(loaded->confirmed);
    CHECK(loaded->record.carried);
    CHECK(rig.card_balance() == 5000 + carried);
    CHECK(rig.clearing.shadow(card_a) == 5000 + carried);
    CHECK(rig.holding() == 0);
    CHECK(rig.queue->size() == 0);

    require_short(rig.terminal->load(1, *rig.client, sdk::LoadFunding::carried));
    CHECK(rig.card_balance() == 5000 + carried);
    auto reconciled = rig.client->reconcile();
    REQUIRE(reconciled.ok());
    CHECK(reconciled->balanced);
    CHECK(reconciled->totals.credits_fen == carried);
    rig.require_checks();
}

TEST_CASE("carried load: CREDIT never reached the card — the 0420 (280000) gives the holding back; collected on the next try") {
    CarriedRig rig;
    const std::int64_t carried = rig.carry_b_to_a();
    const auto amount = static_cast<std::uint32_t>(carried);
    rig.lose_card_at_credit(sdk::Fault::before_card);
    auto loaded = rig.terminal->load(amount, *rig.client, sdk::LoadFunding::carried);
    REQUIRE_FALSE(loaded.ok());
    CHECK(rig.card_balance() == 5000);

    rig.present_again();
    auto recovered = rig.terminal->recover();
    REQUIRE(recovered.ok());
    REQUIRE(recovered->reversed.size() == 1);
    CHECK(recovered->reversed[0].carried);  // the reversal advice names the 280000 load
    auto report = rig.client->upload(*rig.queue);
    REQUIRE_MESSAGE(report.ok(), (report.ok() ? "" : report.error().message));
    CHECK(report->acknowledged == 1);
    CHECK(report->kept == 0);
    CHECK(rig.queue->size() == 0);
    CHECK(rig.holding() == carried);  // voided: nothing left the holding
    CHECK(rig.clearing.shadow(card_a) == 5000);

    auto again = rig.terminal->load(amount, *rig.client, sdk::LoadFunding::carried);
    REQUIRE_MESSAGE(again.ok(), (again.ok() ? "" : again.error().message));
    CHECK(rig.card_balance() == 5000 + carried);
    CHECK(rig.clearing.shadow(card_a) == 5000 + carried);
    CHECK(rig.holding() == 0);
    rig.require_checks();
}
