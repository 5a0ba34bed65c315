// Settlement of card returns, refunds and tourist deposits (settlement/README.md "Refunds and deposits"):
// the counter's figures in its net, return fees in fee income, refunds by bank paid once as transfer 16
// and a credit transfer in the purse float's pain.001 (valid against the XSD), never again in a later
// cycle or a re-run.
#include "settlement_fixture.hpp"

#include <coconut/clearing/card_returns.hpp>

using namespace settle_test;

namespace {

constexpr std::uint64_t desk = 1005;     // a service counter (kind counter), no fee
constexpr std::uint64_t airport = 1006;  // sells tourist cards (kind counter)

struct RefundDay : Day {
    RefundDay() {
        auto loaded = clearing::load_registry(*ledger, *registry, R"({
          "participants": [{"id": 1005, "name": "Haikou Service Desk", "kind": "counter", "bank_account": "6222000010050005"},
                           {"id": 1006, "name": "Meilan Airport Counter", "kind": "counter", "bank_account": "6222000010060006"}],
          "cards": [{"asn": "46010000000000000003", "issuer_id": "0123456789ABCDEF", "purse_balance_fen": 3000},
                    {"asn": "46010000000000000004", "issuer_id": "0123456789ABCDEF", "purse_balance_fen": 700}]
        })");
        REQUIRE_MESSAGE(loaded.ok(), (loaded.ok() ? "" : loaded.error().message));
    }

    void apply(const std::vector<ledger::Event>& events) {
        auto results = ledger->apply(events);
        REQUIRE(results.ok());
        for (const auto& r : *results) CHECK_MESSAGE(ledger::succeeded(r.code), ledger::to_string(r.code));
    }

    // Card 1 returned at the desk by bank (its 2,000 left by the desk's purchase); tourist card 3 (deposit
    // 1,000 collected by the airport) returned there by bank with a 300 fee; card 2 returned for cash;
    // card 4 broken, its 700 refunded from the shadow.
    void book_returns() {
        at(local_ns(day, 9, 0));
        apply(clearing::sale_events(card(3), airport, 1000));
        purchase(desk, 2000, 1);
        apply(clearing::return_events({card(1), desk, clearing::Payout::bank, 2000, 0, {}}));
        purchase(desk, 500, 2);
        apply(clearing::return_events({card(2), desk, clearing::Payout::cash, 500, 0, {}}));
        purchase(airport, 3000, 3);
        apply(clearing::return_events({card(3), airport, clearing::Payout::bank, 3000, 1000, clearing::return_fee_split(3000, 1000, 300)}));
        apply(clearing::broken_refund_events(card(4), 700, 0, 0));
        at(local_ns(day_after, 1, 0));  // settlement runs after the cut-off: its own transfers fall in the next window
    }

    RunOptions options_with_accounts(const Date& business_date) const {
        RunOptions o = run_options(business_date);
        o.refund_accounts[card(1)] = {"6222000099990001", "Li Lei"};
        o.refund_accounts[card(3)] = {"DE89370400440532013000", "Anna Tourist"};
        o.refund_accounts[card(4)] = {"6222000099990004", "Han Meimei"};
        return o;
    }
};

const ParticipantPosition& position_of(const Positions& p, std::uint64_t id) {
    for (const auto& x : p.participants) {
        if (x.participant.id == id) return x;
    }
    FAIL("participant " << id << " has no position");
    std::abort();
}

}  // namespace

TEST_CASE("returns and deposits: the counters' nets, return fees in fee income, refunds by bank listed, the sum is zero") {
    RefundDay d;
    d.book_returns();
    auto positions =
        compute_positions(*d.ledger, d.participants(), cycle_id(day), Window{cutoff_ns(day_before, 24 * 3600), cutoff_ns(day, 24 * 3600)});
    REQUIRE_MESSAGE(positions.ok(), (positions.ok() ? "" : positions.error().message));
    CHECK(positions->balance_fen() == 0);
    // The desk: purchases 2,000 + 500 (base); 2,000 moved to card 1's refund (bank); card 2's 500 it paid in cash.
    const auto& desk_position = position_of(*positions, desk);
    CHECK(desk_position.purse.base_fen == 2500);
    CHECK(desk_position.purse.counter_fen == -2000);
    CHECK(desk_position.purse.net_fen == 500);
    // The airport: collected the 1,000 deposit (−1,000), took the 3,000 purchase, moved 3,000 − 0 to the refund;
    // the fee 300 came from the deposit, whose 700 rest went to the refund.
    const auto& airport_position = position_of(*positions, airport);
    CHECK(airport_position.purse.base_fen == 3000);
    CHECK(airport_position.purse.counter_fen == -1000 - 3000);
    CHECK(airport_position.purse.net_fen == -1000);
    CHECK(positions->funding.fee_income_purse_fen == 300);
    REQUIRE(positions->refunds.size() == 3);
    CHECK(positions->refunds[0].asn == card(1));
    CHECK(positions->refunds[0].amount_fen == 2000);
    CHECK(positions->refunds[1].asn == card(3));
    CHECK(positions->refunds[1].amount_fen == 3000 + 700);
    CHECK(positions->refunds[2].asn == card(4));
    CHECK(positions->refunds[2].amount_fen == 700);

    // Transfer 16 per refund: refund_payable → float, not linked, its id from cycle and card.
    const auto transfers = settlement_transfers(*positions);
    std::size_t refunds = 0;
    for (const auto& t : transfers) {
        if (t.code != codes::refund_payout) continue;
        ++refunds;
        const clearing::Asn asn = clearing::card_of_user_data(t.user_data_128);
        CHECK(t.id == clearing::refund_payout_transfer(cycle_id(day), asn));
        CHECK(t.debit_account_id == clearing::refund_payable_account(asn));
        CHECK(t.credit_account_id == clearing::purse_float_account);
        CHECK((t.flags & ledger::transfer_flags::linked) == 0);
        CHECK(t.user_data_128 == clearing::card_user_data(asn, cycle_id(day)));
    }
    CHECK(refunds == 3);
}

TEST_CASE("refunds by bank are in the purse float's pain.001 (valid against the XSD) and paid once however often settlement runs") {
    RefundDay d;
    d.book_returns();
    auto poster = make_direct_poster(*d.ledger);
    auto report = run_cycle(*d.ledger, d.participants(), poster.get(), d.options_with_accounts(day));
    REQUIRE_MESSAGE(report.ok(), (report.ok() ? "" : report.error().message));
    const std::string pain = read(cycle_directory(d.out(), cycle_id(day)) / "pain001-20260310-purse-float.xml");
    CHECK(validate_xml(pain, default_schemas_dir() / "pain.001.001.09.xsd").empty());
    CHECK(pain.find("<EndToEndId>CC20260310-R0000000000000001</EndToEndId>") != std::string::npos);
    CHECK(pain.find("<Nm>Anna Tourist</Nm>") != std::string::npos);
    CHECK(pain.find("<Id>DE89370400440532013000</Id>") != std::string::npos);
    CHECK(pain.find("<InstdAmt Ccy=\"CNY\">37.00</InstdAmt>") != std::string::npos);  // card 3: 3,000 + 1,000 − 300
    CHECK(pain.find("Coconut Card refund, card 0000000000000004") != std::string::npos);
    for (const clearing::Asn& asn : {card(1), card(3), card(4)}) {
        const auto owed = d.ledger->lookup_account(clearing::refund_payable_account(asn));
        REQUIRE((owed.ok() && owed->has_value()));
        CHECK((*owed)->credits_posted == (*owed)->debits_posted);  // paid: nothing owed any more
    }
    CHECK(d.ledger->check().value().ok());

    // Run again: the same files, every transfer `exists`, nothing paid twice.
    auto again = run_cycle(*d.ledger, d.participants(), poster.get(), d.options_with_accounts(day));
    REQUIRE(again.ok());
    CHECK(again->posting.created == 0);
    // Posting the cycle's transfers once more, directly: `exists` for every one.
    auto outcome = post_all(*poster, CycleWindow{cycle_id(day), again->positions.window}, settlement_transfers(again->positions));
    REQUIRE(outcome.ok());
    CHECK(outcome->created == 0);
    CHECK(outcome->existed == settlement_transfers(again->positions).size());
    // The next cycle pays nothing again: its window holds only the refund payouts (settlement's own).
    auto next = run_cycle(*d.ledger, d.participants(), poster.get(), d.options_with_accounts(day_after));
    REQUIRE_MESSAGE(next.ok(), (next.ok() ? "" : next.error().message));
    CHECK(next->positions.refunds.empty());
    CHECK(d.ledger->check().value().ok());
}

TEST_CASE("a refund owed by bank without the cardholder's account stops the run before anything is written") {
    RefundDay d;
    d.book_returns();
    auto poster = make_direct_poster(*d.ledger);
    RunOptions o = d.run_options(day);
    o.refund_accounts[card(1)] = {"6222000099990001", "Li Lei"};  // cards 3 and 4 missing
    auto report = run_cycle(*d.ledger, d.participants(), poster.get(), o);
    REQUIRE(!report.ok());
    CHECK(report.error().code == ErrorCode::bad_input);
    CHECK(report.error().message.find("returns table names no bank account") != std::string::npos);
    CHECK(!std::filesystem::exists(cycle_directory(d.out(), cycle_id(day)) / "pain001-20260310-purse-float.xml"));
}

TEST_CASE("a card transfer that moves another card's account or an unregistered payable is unattributed") {
    RefundDay d;
    d.at(local_ns(day, 9, 0));
    ledger::Transfer t;
    t.id = clearing::card_money_transfer(card(1), codes::card_refund);
    t.debit_account_id = clearing::payable_account(desk, clearing::ledgers::purse);
    t.credit_account_id = clearing::refund_payable_account(card(2));  // the user data names card 1
    t.amount = 10;
    t.ledger = clearing::ledgers::purse;
    t.code = codes::card_refund;
    t.user_data_128 = clearing::card_user_data(card(1));
    std::vector<ledger::Event> events;
    clearing::append_card_money_accounts(events, card(2));
    events.emplace_back(t);
    d.apply(events);
    auto positions =
        compute_positions(*d.ledger, d.participants(), cycle_id(day), Window{cutoff_ns(day_before, 24 * 3600), cutoff_ns(day, 24 * 3600)});
    REQUIRE(!positions.ok());
    CHECK(positions.error().code == ErrorCode::unbalanced);
    CHECK(positions.error().message.find("neither a registered participant's payable") != std::string::npos);
}
