// Same-day refunds in settlement (settlement/README.md "Same-day refunds", ISO8583.md §4.10): a posted
// purchase refund (code 22) or medical refund (code 21) is paid from the participant's payable, so its net
// and its fee base fall and the float / fund pays out that much less; pending, voided and expired refund
// credits move nothing; a participant whose refunds exceed its takings owes the difference; refunds show in
// the statement, the summary, activity.json and the report; the payouts still validate against the XSD.
#include "settlement_fixture.hpp"

#include <nlohmann/json.hpp>

using namespace settle_test;

namespace {

constexpr std::uint64_t shop = 1002;    // 125 bp
constexpr std::uint64_t clinic = 1003;  // 50 bp

// Hainan wall-clock time on `date`, in ns.
std::uint64_t hainan(const Date& date, unsigned hour, unsigned minute) { return cutoff_ns(date, hour * 3600 + minute * 60); }

// The transfers the clearing books for a refund, created directly.
struct RefundingDay : Day {
    // A purchase refund credit, pending as at the 0200: the participant's purse payable → the card's shadow.
    ledger::Id refund_credit(std::uint64_t participant, std::uint64_t fen, unsigned card_number) {
        return hold(clearing::payable_account(participant, clearing::ledgers::purse), clearing::purse_shadow_account(card(card_number)),
                    clearing::ledgers::purse, codes::purchase_refund, participant, fen);
    }
    // A refund credit booked single phase (its confirmation came after a void or expiry).
    ledger::Id late_refund_credit(std::uint64_t participant, std::uint64_t fen, unsigned card_number) {
        ledger::Transfer t;
        t.debit_account_id = clearing::payable_account(participant, clearing::ledgers::purse);
        t.credit_account_id = clearing::purse_shadow_account(card(card_number));
        t.amount = fen;
        t.ledger = clearing::ledgers::purse;
        t.code = codes::purchase_refund;
        t.user_data_64 = participant;
        return book(t);
    }
    // A medical refund: the clinic's medical payable → the card's medical account, single phase; user_data_128 = the hold.
    ledger::Id medical_refund(std::uint64_t participant, std::uint64_t fen, const ledger::Id& hold_id, unsigned card_number = 1) {
        ledger::Transfer t;
        t.debit_account_id = clearing::payable_account(participant, clearing::ledgers::medical);
        t.credit_account_id = clearing::medical_account(card(card_number));
        t.amount = fen;
        t.ledger = clearing::ledgers::medical;
        t.code = codes::medical_refund;
        t.user_data_64 = participant;
        t.user_data_128 = hold_id;
        return book(t);
    }

    // The shop: purchases 1,000 and 1,040 (card 2), the 1,040 refunded by a credit posted; a refund credit of
    // 300 voided, one of 200 still pending at the cut-off. The clinic: a visit (medical 6,500 of a hold of
    // 8,000; purse 1,200) refunded whole — medical by code 21, purse by a credit confirmed late (single phase).
    void book_refunds() {
        at(hainan(day, 9, 0));
        purchase(shop, 1000);
        purchase(shop, 1040, 2);
        post(refund_credit(shop, 1040, 2), ledger::amount_max, shop);
        void_(refund_credit(shop, 300, 2));
        refund_credit(shop, 200, 2);
        purchase(clinic, 1200);
        const ledger::Id visit = medical_hold(clinic, 8000);
        post(visit, 6500);
        at(hainan(day, 14, 0));
        // The hold id the refund names; settlement never reads it as a card time (its bytes here would say 05:xx).
        (void)visit;
        clearing::Place looks_like_a_place;
        looks_like_a_place.type = 0x06;
        looks_like_a_place.local_time_bcd = {0x26, 0x03, 0x10, 0x05, 0x30};
        medical_refund(clinic, 6500, clearing::make_place(looks_like_a_place));
        late_refund_credit(clinic, 1200, 1);
        at(hainan(day_after, 1, 0));
    }

    Positions positions(const Date& business_date) const {
        auto computed = compute_positions(*ledger, participants(), cycle_id(business_date),
                                          Window{cutoff_ns(business_date, 0), cutoff_ns(business_date, 24 * 3600)});
        REQUIRE_MESSAGE(computed.ok(), (computed.ok() ? "" : computed.error().message));
        return *computed;
    }
};

const ParticipantPosition& position_of(const Positions& p, std::uint64_t id) {
    for (const auto& x : p.participants) {
        if (x.participant.id == id) return x;
    }
    FAIL("participant " << id << " has no position");
    std::abort();
}

std::int64_t payable_balance(const ledger::Ledger& ledger, std::uint64_t participant, std::uint32_t ledger_number) {
    auto account = ledger.lookup_account(clearing::payable_account(participant, ledger_number));
    REQUIRE((account.ok() && account->has_value()));
    return static_cast<std::int64_t>((*account)->credits_posted) - static_cast<std::int64_t>((*account)->debits_posted);
}

std::string line_with(const std::string& text, std::string_view needle) {
    const auto at = text.find(needle);
    if (at == std::string::npos) return {};
    const auto start = text.rfind('\n', at);
    return text.substr(start == std::string::npos ? 0 : start + 1, text.find('\n', at) - (start == std::string::npos ? 0 : start + 1));
}

}  // namespace

TEST_CASE("posted refunds lower the participant's net and fee base; the float and the fund pay that much less; the sum is zero") {
    RefundingDay d;
    d.book_refunds();
    const Positions p = d.positions(day);
    CHECK(p.balance_fen() == 0);
    const auto& s = position_of(p, shop);
    // Only the posted credit counts: the voided 300 and the pending 200 move nothing.
    CHECK(s.kinds[static_cast<std::size_t>(Kind::refund_purse)] == KindTotals{1, 1040});
    CHECK(s.purse.base_fen == 2040);
    CHECK(s.purse.refunds_fen == 1040);
    CHECK(s.purse.fee_fen == 13);  // on 2,040 − 1,040 = 1,000: 12.5 → 13, the refunded purchase bears no fee
    CHECK(s.purse.net_fen == 2040 - 1040 - 13);
    const auto& c = position_of(p, clinic);
    CHECK(c.kinds[static_cast<std::size_t>(Kind::refund_purse)] == KindTotals{1, 1200});  // the late, single-phase credit
    CHECK(c.kinds[static_cast<std::size_t>(Kind::refund_medical)] == KindTotals{1, 6500});
    CHECK(c.purse == SourceAmounts{1200, 0, 0, 0, 0, 0, 1200});
    CHECK(c.medical == SourceAmounts{6500, 0, 0, 0, 0, 0, 6500});
    // The float paid 1,000 + 1,040 + 1,200 in purchases and got 1,040 + 1,200 back on cards; the fund 6,500 and back.
    CHECK(p.funding.purse_float_fen == -1000);
    CHECK(p.funding.medical_fund_fen == 0);
    CHECK(p.funding.fee_income_purse_fen == 13);
    // Settlement transfers: the shop's fee and payout of what its payable holds; the clinic has nothing to move.
    const auto transfers = settlement_transfers(p);
    REQUIRE(transfers.size() == 2);
    CHECK(transfers[0].code == codes::settlement_fee);
    CHECK(transfers[0].amount == 13);
    CHECK(transfers[1].code == codes::settlement_payout);
    CHECK(transfers[1].amount == 2040 - 1040 - 13);
    CHECK(transfers[1].user_data_64 == shop);
}

TEST_CASE("a cycle with refunds: statement rows, summary, activity and report show them; the payouts are valid and empty the payables") {
    RefundingDay d;
    d.book_refunds();
    auto poster = make_direct_poster(*d.ledger);
    auto report = run_cycle(*d.ledger, d.participants(), poster.get(), d.run_options(day));
    REQUIRE_MESSAGE(report.ok(), (report.ok() ? "" : report.error().message));
    const auto dir = cycle_directory(d.out(), cycle_id(day));
    const std::string pain = read(dir / "pain001-20260310-purse-float.xml");
    CHECK(validate_xml(pain, default_schemas_dir() / "pain.001.001.09.xsd").empty());
    CHECK(pain.find("<InstdAmt Ccy=\"CNY\">9.87</InstdAmt>") != std::string::npos);
    CHECK(pain.find("CC20260310-1003") == std::string::npos);                         // the clinic is paid nothing
    CHECK_FALSE(std::filesystem::exists(dir / "pain001-20260310-medical-fund.xml"));  // nor is any medical net positive
    // Every payable holds nothing for the cycle once posted: the refunds came out of it, the rest was paid.
    CHECK(payable_balance(*d.ledger, shop, clearing::ledgers::purse) == 0);  // the credit still pending is no posted money
    CHECK(payable_balance(*d.ledger, clinic, clearing::ledgers::purse) == 0);
    CHECK(payable_balance(*d.ledger, clinic, clearing::ledgers::medical) == 0);
    CHECK(d.ledger->check().value().ok());

    const std::string csv = read(dir / "participant-1002.csv");
    CHECK(csv.find("20260310,1002,refund_purse,purse,1,-1040\n") != std::string::npos);
    CHECK(csv.find("refund_medical") == std::string::npos);  // only the kinds that happened
    CHECK(csv.find("20260310,1002,net,purse,,987\n") != std::string::npos);
    const std::string clinic_csv = read(dir / "participant-1003.csv");
    CHECK(clinic_csv.find("20260310,1003,refund_medical,medical,1,-6500\n") != std::string::npos);
    CHECK(clinic_csv.find("20260310,1003,fee,medical,,0\n") != std::string::npos);

    const auto summary = nlohmann::json::parse(read(dir / "summary.json"));
    const auto& shop_json = summary["participants"][0];  // the participants with activity, by id
    REQUIRE(shop_json["id"] == shop);
    CHECK(shop_json["purse"]["refunds_fen"] == 1040);
    CHECK(shop_json["kinds"]["refund_purse"]["gross_fen"] == 1040);
    CHECK_FALSE(shop_json["medical"].contains("refunds_fen"));
    CHECK(summary["balance_fen"] == 0);

    const std::string text = read(dir / "summary.txt");
    const std::string header = line_with(text, "participant");
    CHECK(header.find("medical    refunds") != std::string::npos);
    CHECK(line_with(text, "Island Clinic").find("-77.00") != std::string::npos);  // 65.00 + 12.00 refunded
    CHECK(line_with(text, "Coconut & Co Shop").find("-10.40") != std::string::npos);

    const auto activity = nlohmann::json::parse(read(dir / "activity.json"));
    // The medical refund at the clearing's 14:00 (its user_data_128 is the hold, no card time).
    CHECK(activity["hours"][14]["refund_medical"]["count"] == 1);
    CHECK(activity["hours"][14]["refund_purse"]["count"] == 1);
    CHECK(activity["hours"][9]["refund_purse"]["gross_fen"] == 1040);

    const std::string html = read(dir / "report.html");
    CHECK(html.find("Refunds · 退款") != std::string::npos);
    CHECK(html.find("Refunds (medical)") != std::string::npos);  // in the hourly chart's legend
    CHECK(html.find("-77.00") != std::string::npos);
}

TEST_CASE("a day without refunds keeps the files it always had: no refund kind, column or field") {
    RefundingDay d;
    d.at(hainan(day, 9, 0));
    d.purchase(shop, 1000);
    auto poster = make_direct_poster(*d.ledger);
    auto report = run_cycle(*d.ledger, d.participants(), poster.get(), d.run_options(day));
    REQUIRE(report.ok());
    for (const auto& file : report->files) {
        INFO(file.name);
        CHECK(file.contents.find("refund") == std::string::npos);
    }
    CHECK(read(cycle_directory(d.out(), cycle_id(day)) / "report.html").find("Refunds · 退款") == std::string::npos);
}

TEST_CASE("refunds above the cycle's takings: the net is negative, to collect, nothing paid; the cycle still sums to zero and posts") {
    RefundingDay d;
    // Purchases paid the day before and settled in its cycle; their refunds booked after midnight (late confirmations
    // and a medical refund) fall in the next cycle.
    d.at(hainan(day_before, 22, 0));
    d.purchase(shop, 500, 2);
    const ledger::Id visit = d.medical_hold(clinic, 4000);
    d.post(visit);
    d.at(hainan(day, 0, 10));  // settlement's own transfers: in the next window, not business
    auto poster = make_direct_poster(*d.ledger);
    auto first = run_cycle(*d.ledger, d.participants(), poster.get(), d.run_options(day_before));
    REQUIRE_MESSAGE(first.ok(), (first.ok() ? "" : first.error().message));
    d.at(hainan(day, 0, 30));
    d.late_refund_credit(shop, 500, 2);
    d.medical_refund(clinic, 4000, visit);
    d.purchase(shop, 100);    // takings of its own, below its refunds
    d.purchase(clinic, 300);  // the clinic's purse takings: paid, while its medical net is collected
    d.at(hainan(day_after, 1, 0));

    auto report = run_cycle(*d.ledger, d.participants(), poster.get(), d.run_options(day));
    REQUIRE_MESSAGE(report.ok(), (report.ok() ? "" : report.error().message));
    const Positions& p = report->positions;
    CHECK(p.balance_fen() == 0);
    const auto& s = position_of(p, shop);
    CHECK(s.purse.fee_fen == 0);  // no fee below a zero base; none paid back either
    CHECK(s.purse.net_fen == 100 - 500);
    const auto& c = position_of(p, clinic);
    CHECK(c.medical.net_fen == -4000);
    CHECK(p.funding.medical_fund_fen == 4000);
    CHECK(c.purse.net_fen == 300 - 2);  // fee 1.5 → 2
    // Nothing paid to the shop, nor from the fund; both negative nets listed to collect.
    REQUIRE(payments(p).size() == 1);
    CHECK(payments(p)[0].participant_id == clinic);
    CHECK(payments(p)[0].source == Source::purse_float);
    const auto summary = nlohmann::json::parse(read(cycle_directory(d.out(), cycle_id(day)) / "summary.json"));
    CHECK(summary["collections"] == nlohmann::json::parse(R"([{"participant_id": 1002, "source": "purse_float", "amount_fen": 400},
                                    {"participant_id": 1003, "source": "medical_fund", "amount_fen": 4000}])"));
    const std::string text = read(cycle_directory(d.out(), cycle_id(day)) / "summary.txt");
    CHECK(text.find("to collect from participant 1002 (Coconut & Co Shop) for the purse float: 4.00") != std::string::npos);
    CHECK(text.find("to collect from participant 1003 (Island Clinic) for the medical fund: 40.00") != std::string::npos);
    const std::string html = read(cycle_directory(d.out(), cycle_id(day)) / "report.html");
    CHECK(html.find("<td>to collect</td>") != std::string::npos);                         // the shop
    CHECK(html.find("<td>paid by bank transfer; to collect</td>") != std::string::npos);  // the clinic: both sources
    // No payout: the payables keep what the participants owe.
    CHECK(payable_balance(*d.ledger, shop, clearing::ledgers::purse) == -400);
    CHECK(payable_balance(*d.ledger, clinic, clearing::ledgers::medical) == -4000);
    CHECK(d.ledger->check().value().ok());
    // Run again: nothing new.
    auto again = run_cycle(*d.ledger, d.participants(), poster.get(), d.run_options(day));
    REQUIRE(again.ok());
    CHECK(again->posting.created == 0);
}

TEST_CASE("a refund not from a registered participant's payable, or not to a card, stops the cycle") {
    SUBCASE("code 22 from the float") {
        RefundingDay d;
        d.at(hainan(day, 9, 0));
        d.post(d.hold(clearing::purse_float_account, clearing::purse_shadow_account(card(1)), clearing::ledgers::purse,
                      codes::purchase_refund, shop, 100));
        auto computed = compute_positions(*d.ledger, d.participants(), cycle_id(day), Window{cutoff_ns(day, 0), cutoff_ns(day, 24 * 3600)});
        REQUIRE_FALSE(computed.ok());
        CHECK(computed.error().code == ErrorCode::unbalanced);
        CHECK(computed.error().message.find("not from a registered participant's payable") != std::string::npos);
    }
    SUBCASE("code 21 from an unregistered clinic's payable") {
        RefundingDay d;
        d.at(hainan(day, 9, 0));
        std::vector<ledger::Event> events;
        clearing::append_participant_opening(events, 4242);  // payables in the ledger, no participant in the registry
        REQUIRE(d.ledger->apply(events).ok());
        d.medical_refund(4242, 100, ledger::Id{1, 2});
        auto computed = compute_positions(*d.ledger, d.participants(), cycle_id(day), Window{cutoff_ns(day, 0), cutoff_ns(day, 24 * 3600)});
        REQUIRE_FALSE(computed.ok());
        CHECK(computed.error().code == ErrorCode::unbalanced);
    }
    SUBCASE("code 22 onto another participant's payable") {
        RefundingDay d;
        d.at(hainan(day, 9, 0));
        d.late_refund_credit(shop, 100, 1);  // fine on its own
        ledger::Transfer t;
        t.debit_account_id = clearing::payable_account(shop, clearing::ledgers::purse);
        t.credit_account_id = clearing::payable_account(1001, clearing::ledgers::purse);
        t.amount = 50;
        t.ledger = clearing::ledgers::purse;
        t.code = codes::purchase_refund;
        d.book(t);
        auto computed = compute_positions(*d.ledger, d.participants(), cycle_id(day), Window{cutoff_ns(day, 0), cutoff_ns(day, 24 * 3600)});
        REQUIRE_FALSE(computed.ok());
        CHECK(computed.error().code == ErrorCode::unbalanced);
    }
}
