// Settlement rules, one test each, on the hand-computed day of settlement_fixture.hpp.
#include "camt_samples.hpp"
#include "settlement_fixture.hpp"

#include <nlohmann/json.hpp>

#include <fstream>
#include <sstream>

using namespace settle_test;

namespace {

const ParticipantPosition& position(const Positions& p, std::uint64_t id) {
    for (const auto& x : p.participants) {
        if (x.participant.id == id) return x;
    }
    FAIL("participant " << id << " has no position");
    throw std::logic_error("unreachable");
}

KindTotals kind(const ParticipantPosition& p, Kind k) { return p.kinds[static_cast<std::size_t>(k)]; }

RunReport run(Day& d, const Date& business_date, bool dry_run = false) {
    auto poster = make_direct_poster(*d.ledger);
    RunOptions o = d.run_options(business_date);
    o.dry_run = dry_run;
    auto report = run_cycle(*d.ledger, d.participants(), poster.get(), o);
    REQUIRE_MESSAGE(report.ok(), (report.ok() ? "" : report.error().message));
    return std::move(*report);
}

const std::string expected_purse_pain001 = R"(<?xml version="1.0" encoding="UTF-8"?>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:pain.001.001.09">
  <CstmrCdtTrfInitn>
    <GrpHdr>
      <MsgId>CC20260310-PURSE</MsgId>
      <CreDtTm>2026-03-11T00:00:00+08:00</CreDtTm>
      <NbOfTxs>3</NbOfTxs>
      <CtrlSum>35.39</CtrlSum>
      <InitgPty>
        <Nm>Coconut Card Clearing</Nm>
      </InitgPty>
    </GrpHdr>
    <PmtInf>
      <PmtInfId>CC20260310-PURSE</PmtInfId>
      <PmtMtd>TRF</PmtMtd>
      <BtchBookg>false</BtchBookg>
      <NbOfTxs>3</NbOfTxs>
      <CtrlSum>35.39</CtrlSum>
      <ReqdExctnDt>
        <Dt>2026-03-11</Dt>
      </ReqdExctnDt>
      <Dbtr>
        <Nm>Hainan Coconut Bank purse float</Nm>
      </Dbtr>
      <DbtrAcct>
        <Id>
          <Othr>
            <Id>FLOAT0001</Id>
          </Othr>
        </Id>
        <Ccy>CNY</Ccy>
      </DbtrAcct>
      <DbtrAgt>
        <FinInstnId>
          <BICFI>HNCBCNBJXXX</BICFI>
        </FinInstnId>
      </DbtrAgt>
      <CdtTrfTxInf>
        <PmtId>
          <EndToEndId>CC20260310-1001-P</EndToEndId>
        </PmtId>
        <Amt>
          <InstdAmt Ccy="CNY">8.31</InstdAmt>
        </Amt>
        <Cdtr>
          <Nm>Haikou Bus</Nm>
        </Cdtr>
        <CdtrAcct>
          <Id>
            <Othr>
              <Id>6222000010010001</Id>
            </Othr>
          </Id>
        </CdtrAcct>
        <RmtInf>
          <Ustrd>Coconut Card settlement 2026-03-10 participant 1001</Ustrd>
        </RmtInf>
      </CdtTrfTxInf>
      <CdtTrfTxInf>
        <PmtId>
          <EndToEndId>CC20260310-1002-P</EndToEndId>
        </PmtId>
        <Amt>
          <InstdAmt Ccy="CNY">15.14</InstdAmt>
        </Amt>
        <Cdtr>
          <Nm>Coconut &amp; Co Shop</Nm>
        </Cdtr>
        <CdtrAcct>
          <Id>
            <Othr>
              <Id>6222000010020002</Id>
            </Othr>
          </Id>
        </CdtrAcct>
        <RmtInf>
          <Ustrd>Coconut Card settlement 2026-03-10 participant 1002</Ustrd>
        </RmtInf>
      </CdtTrfTxInf>
      <CdtTrfTxInf>
        <PmtId>
          <EndToEndId>CC20260310-1003-P</EndToEndId>
        </PmtId>
        <Amt>
          <InstdAmt Ccy="CNY">11.94</InstdAmt>
        </Amt>
        <Cdtr>
          <Nm>Island Clinic</Nm>
        </Cdtr>
        <CdtrAcct>
          <Id>
            <Othr>
              <Id>6222000010030003</Id>
            </Othr>
          </Id>
        </CdtrAcct>
        <RmtInf>
          <Ustrd>Coconut Card settlement 2026-03-10 participant 1003</Ustrd>
        </RmtInf>
      </CdtTrfTxInf>
    </PmtInf>
  </CstmrCdtTrfInitn>
</Document>
)";

const std::string expected_shop_csv = R"(cycle,participant_id,item,ledger,count,amount_fen
20260310,1002,bus,purse,0,0
20260310,1002,shop,purse,2,2040
20260310,1002,clinic_purse,purse,0,0
20260310,1002,clinic_medical,medical,0,0
20260310,1002,load,purse,1,500
20260310,1002,fee,purse,,26
20260310,1002,fee,medical,,0
20260310,1002,net,purse,,1514
20260310,1002,net,medical,,0
)";

}  // namespace

// ---- rules of arithmetic -------------------------------------------------------------------------

TEST_CASE("fees round half up, once on the total") {
    CHECK(fee_fen(833, 30) == 2);     // 2.499 → 2
    CHECK(fee_fen(2040, 125) == 26);  // 25.5 → 26
    CHECK(fee_fen(6500, 50) == 33);   // 32.5 → 33
    CHECK(fee_fen(1200, 50) == 6);    // 6.0
    CHECK(fee_fen(199, 25) == 0);     // 0.4975 → 0
    CHECK(fee_fen(200, 25) == 1);     // 0.5 → 1
    CHECK(fee_fen(12345, 10'000) == 12345);
    CHECK(fee_fen(~std::uint64_t{0} / 2, 10'000) == ~std::uint64_t{0} / 2);  // no intermediate overflow
    // Per transaction it would be 3 × round(0.6 + 0.9 + 0.999) = 1 + 1 + 1: the rule takes the total once.
    CHECK(fee_fen(200, 30) + fee_fen(300, 30) + fee_fen(333, 30) == 3);
}

TEST_CASE("business dates, cut-off and cycle ids") {
    CHECK(cycle_id(day) == 20260310);
    CHECK(date_of_cycle(20260310) == day);
    CHECK_FALSE(date_of_cycle(20260230).has_value());
    CHECK(parse_date("2026-03-10") == day);
    CHECK_FALSE(parse_date("2026-02-30").has_value());
    CHECK_FALSE(parse_date("2026-3-10").has_value());
    CHECK(parse_cutoff("24:00") == 86400u);
    CHECK(parse_cutoff("23:30") == 84600u);
    CHECK(parse_cutoff("23:30:07") == 84607u);
    CHECK(format_cutoff(84600) == "23:30");
    CHECK(format_cutoff(84607) == "23:30:07");
    CHECK_FALSE(parse_cutoff("00:00").has_value());
    CHECK_FALSE(parse_cutoff("00:00:00").has_value());
    CHECK(parse_cutoff("00:00:01") == 1u);
    CHECK_FALSE(parse_cutoff("24:01").has_value());
    CHECK_FALSE(parse_cutoff("24:00:01").has_value());
    CHECK_FALSE(parse_cutoff("12:00:60").has_value());
    CHECK_FALSE(parse_cutoff("12:00:5").has_value());
    // 2026-03-10 24:00 UTC+8 = 2026-03-10T16:00:00Z = 1773158400 s.
    CHECK(cutoff_ns(day, seconds_per_day) == 1'773'158'400ull * ns_per_s);
    CHECK(format_fen(-5) == "-0.05");
    CHECK(format_fen(123456) == "1234.56");
}

TEST_CASE("the config is validated field by field") {
    CHECK(parse_config(config_json).ok());
    auto bad_bic = parse_config(R"({"purse_float":{"name":"a","account":"b","agent_bic":"nope"},
                                    "medical_fund":{"name":"a","account":"b","agent_bic":"HNSICNBJ"}})");
    REQUIRE_FALSE(bad_bic.ok());
    CHECK(bad_bic.error().message.find("purse_float.agent_bic") != std::string::npos);
    auto unknown = parse_config(R"({"purse_float":{"name":"a","account":"b","agent_bic":"HNSICNBJ"},
                                    "medical_fund":{"name":"a","account":"b","agent_bic":"HNSICNBJ"},"extra":1})");
    REQUIRE_FALSE(unknown.ok());
    CHECK(unknown.error().message.find("extra") != std::string::npos);
    CHECK_FALSE(parse_config("not json").ok());
}

// ---- the hand-computed day -----------------------------------------------------------------------

TEST_CASE("a hand-computed day gives exactly the expected positions") {
    Day d;
    d.book_the_day();
    const Window window{cutoff_ns(day_before, seconds_per_day), cutoff_ns(day, seconds_per_day)};
    auto computed = compute_positions(*d.ledger, d.participants(), cycle_id(day), window);
    REQUIRE_MESSAGE(computed.ok(), (computed.ok() ? "" : computed.error().message));
    const Positions& p = *computed;
    REQUIRE(p.participants.size() == 4);

    const auto& bus = position(p, 1001);
    CHECK(kind(bus, Kind::bus) == KindTotals{3, 833});
    CHECK(bus.purse == SourceAmounts{833, 0, 2, 831});
    CHECK(bus.medical == SourceAmounts{});

    const auto& shop = position(p, 1002);
    CHECK(kind(shop, Kind::shop) == KindTotals{2, 2040});
    CHECK(kind(shop, Kind::load) == KindTotals{1, 500});
    CHECK(shop.purse == SourceAmounts{2040, 500, 26, 1514});

    const auto& clinic = position(p, 1003);
    CHECK(kind(clinic, Kind::clinic_purse) == KindTotals{1, 1200});
    CHECK(kind(clinic, Kind::clinic_medical) == KindTotals{1, 6500});  // the partial post; void and expiry count nothing
    CHECK(clinic.purse == SourceAmounts{1200, 0, 6, 1194});
    CHECK(clinic.medical == SourceAmounts{6500, 0, 33, 6467});

    const auto& kiosk = position(p, 1004);
    CHECK(kind(kiosk, Kind::load) == KindTotals{1, 5000});  // posted load; the voided and the open hold count nothing
    CHECK(kiosk.purse == SourceAmounts{0, 5000, 0, -5000});

    CHECK(p.funding == FundingPositions{5500 - 4073, -6500, 34, 33});
    CHECK(p.suspense == KindTotals{1, 150});
    CHECK(p.balance_fen() == 0);
}

TEST_CASE("a hand-computed day gives exactly the expected files, valid against the XSD") {
    Day d;
    d.book_the_day();
    const RunReport r = run(d, day);
    const auto dir = cycle_directory(d.out(), cycle_id(day));
    CHECK(read(dir / "pain001-20260310-purse-float.xml") == expected_purse_pain001);
    CHECK(read(dir / "participant-1002.csv") == expected_shop_csv);
    const std::string medical = read(dir / "pain001-20260310-medical-fund.xml");
    CHECK(medical.find("<EndToEndId>CC20260310-1003-M</EndToEndId>") != std::string::npos);
    CHECK(medical.find("<InstdAmt Ccy=\"CNY\">64.67</InstdAmt>") != std::string::npos);
    CHECK(medical.find("<BICFI>HNSICNBJ</BICFI>") != std::string::npos);
    for (const char* name : {"pain001-20260310-purse-float.xml", "pain001-20260310-medical-fund.xml"}) {
        CAPTURE(name);
        CHECK(validate_xml(read(dir / name), default_schemas_dir() / "pain.001.001.09.xsd") == "");
    }
    const auto summary = nlohmann::json::parse(read(dir / "summary.json"));
    CHECK(summary["balance_fen"] == 0);
    CHECK(summary["payments"].size() == 4);
    CHECK(summary["collections"][0]["participant_id"] == 1004);
    CHECK(summary["collections"][0]["amount_fen"] == 5000);
    CHECK(summary["suspense"]["amount_fen"] == 150);
    const std::string text = read(dir / "summary.txt");
    CHECK(text.find("to collect from participant 1004 (") != std::string::npos);
    CHECK(text.find(") for the purse float: 50.00\n") != std::string::npos);
    CHECK(text.find("balance                    0.00\n") != std::string::npos);
    CHECK(std::filesystem::exists(dir / "participant-1001.csv"));
    CHECK(std::filesystem::exists(dir / "participant-1003.csv"));
    CHECK(std::filesystem::exists(dir / "participant-1004.csv"));
    CHECK(r.record.state == CycleState::posted);
}

TEST_CASE("a pain.001 that breaks the schema is reported by the validator") {
    std::string broken = expected_purse_pain001;
    broken.replace(broken.find("<PmtMtd>TRF</PmtMtd>"), 20, "<PmtMtd>XXX</PmtMtd>");
    CHECK(validate_xml(broken, default_schemas_dir() / "pain.001.001.09.xsd").find("PmtMtd") != std::string::npos);
    CHECK(validate_xml("<Document", default_schemas_dir() / "pain.001.001.09.xsd").find("not well-formed") != std::string::npos);
}

TEST_CASE("a hand-computed day posts exactly the expected linked settlement transfers") {
    Day d;
    d.book_the_day();
    const RunReport r = run(d, day);
    CHECK(r.posting.created == 8);
    CHECK(r.posting.existed == 0);
    struct Expected {
        std::uint64_t participant;
        std::uint32_t ledger_number;
        std::uint16_t code;
        std::uint64_t amount;
        ledger::Id credit;
    };
    const Expected expected[] = {
        {1001, 1, codes::settlement_fee, 2, clearing::purse_fee_income_account},
        {1001, 1, codes::settlement_payout, 831, clearing::purse_float_account},
        {1002, 1, codes::settlement_fee, 26, clearing::purse_fee_income_account},
        {1002, 1, codes::settlement_payout, 2014, clearing::purse_float_account},
        {1003, 1, codes::settlement_fee, 6, clearing::purse_fee_income_account},
        {1003, 1, codes::settlement_payout, 1194, clearing::purse_float_account},
        {1003, 2, codes::settlement_fee, 33, clearing::medical_fee_income_account},
        {1003, 2, codes::settlement_payout, 6467, clearing::medical_fund_account},
    };
    for (const auto& e : expected) {
        CAPTURE(e.participant);
        CAPTURE(e.code);
        auto found = d.ledger->lookup_transfer(settlement_transfer_id(cycle_id(day), e.participant, e.ledger_number, e.code));
        REQUIRE(found.ok());
        REQUIRE(found->has_value());
        const ledger::Transfer& t = **found;
        CHECK(t.amount == e.amount);
        CHECK(t.debit_account_id == clearing::payable_account(e.participant, e.ledger_number));
        CHECK(t.credit_account_id == e.credit);
        CHECK(t.user_data_64 == e.participant);
        CHECK(t.user_data_128 == ledger::Id{std::uint64_t{20260310} << 32, 0});
    }
    // Chains: linked inside a participant, the participant's last transfer closes it.
    const auto transfers = settlement_transfers(r.positions);
    REQUIRE(transfers.size() == 8);
    CHECK((transfers[0].flags & ledger::transfer_flags::linked) != 0);
    CHECK((transfers[1].flags & ledger::transfer_flags::linked) == 0);
    CHECK((transfers[6].flags & ledger::transfer_flags::linked) != 0);
    CHECK((transfers[7].flags & ledger::transfer_flags::linked) == 0);
    // Nothing of 1004 (loads only): the kiosk owes the float, it is collected outside the ledger posting.
    auto fee_income = d.ledger->lookup_account(clearing::purse_fee_income_account);
    CHECK((*fee_income)->credits_posted == 34);
    auto check = d.ledger->check();
    REQUIRE(check.ok());
    CHECK(check->ok());
}

TEST_CASE("re-running a posted cycle writes identical files and books nothing new") {
    Day d;
    d.book_the_day();
    run(d, day);
    const auto dir = cycle_directory(d.out(), cycle_id(day));
    const auto first = snapshot(dir);
    const auto head = d.ledger->head().sequence;
    const RunReport again = run(d, day);
    CHECK(again.resumed);
    CHECK(snapshot(dir) == first);
    CHECK(d.ledger->head().sequence == head);
    // Posting the same cycle again through the poster answers exists for every transfer.
    auto poster = make_direct_poster(*d.ledger);
    auto reposted = post_all(*poster, CycleWindow{again.positions.cycle, again.positions.window}, settlement_transfers(again.positions));
    REQUIRE(reposted.ok());
    CHECK(reposted->created == 0);
    CHECK(reposted->existed == 8);
    CHECK(d.ledger->head().sequence == head);
}

TEST_CASE("a file changed after it was written is never overwritten") {
    Day d;
    d.book_the_day();
    run(d, day);
    const auto path = cycle_directory(d.out(), cycle_id(day)) / "participant-1001.csv";
    write(path, "tampered\n");
    auto poster = make_direct_poster(*d.ledger);
    auto again = run_cycle(*d.ledger, d.participants(), poster.get(), d.run_options(day));
    REQUIRE_FALSE(again.ok());
    CHECK(again.error().code == ErrorCode::conflict);
    CHECK(read(path) == "tampered\n");
}

TEST_CASE("a dry run writes and posts nothing") {
    Day d;
    d.book_the_day();
    const auto head = d.ledger->head().sequence;
    const RunReport r = run(d, day, true);
    CHECK(r.positions.balance_fen() == 0);
    CHECK(r.files.size() == 9);  // 2 pain.001 + 4 CSV + activity.json + summary.txt + summary.json
    CHECK(std::filesystem::is_empty(d.out()));
    CHECK(d.ledger->head().sequence == head);
}

TEST_CASE("late transactions go to the next cycle, early ones to the previous") {
    Day d;
    d.book_the_day();
    run(d, day);
    const RunReport next = run(d, day_after);
    REQUIRE(next.positions.participants.size() == 1);
    CHECK(kind(next.positions.participants[0], Kind::bus) == KindTotals{1, 999});
    CHECK(next.record.window.start_ns == cutoff_ns(day, seconds_per_day));  // continues where the cycle before ended
    const RunReport before = run(d, day_before);
    REQUIRE(before.positions.participants.size() == 1);
    CHECK(kind(before.positions.participants[0], Kind::bus) == KindTotals{1, 111});
    CHECK(before.record.window.end_ns == cutoff_ns(day, seconds_per_day) - 24 * 3600 * ns_per_s);
}

TEST_CASE("settlement's own transfers are not business of the next cycle") {
    Day d;
    d.book_the_day();
    d.at(local_ns(day_after, 1, 0));
    run(d, day);  // books its transfers at 01:00 on the next day, inside the next window
    const RunReport next = run(d, day_after);
    REQUIRE(next.positions.participants.size() == 1);
    CHECK(next.positions.participants[0].participant.id == 1001);
    CHECK(next.positions.balance_fen() == 0);
}

TEST_CASE("an empty day gives a valid empty cycle") {
    Day d;
    const Date quiet = date(2026, 3, 5);
    const RunReport r = run(d, quiet);
    CHECK(r.positions.participants.empty());
    CHECK(r.positions.balance_fen() == 0);
    CHECK(r.record.state == CycleState::posted);
    CHECK(r.posting.created == 0);
    const auto dir = cycle_directory(d.out(), cycle_id(quiet));
    CHECK_FALSE(std::filesystem::exists(dir / "pain001-20260305-purse-float.xml"));  // a pain.001 needs ≥ 1 transfer
    const auto summary = nlohmann::json::parse(read(dir / "summary.json"));
    CHECK(summary["payments"].empty());
    CHECK(summary["participants"].empty());
    CHECK(read(dir / "summary.txt").find("payments from purse_float        0 transfers             0.00\n") != std::string::npos);
}

TEST_CASE("a cycle does not run before its cut-off has passed") {
    Day d;
    auto poster = make_direct_poster(*d.ledger);
    RunOptions o = d.run_options(day);
    o.now_ns = cutoff_ns(day, seconds_per_day) + 30 * ns_per_s;  // inside the settling margin
    auto r = run_cycle(*d.ledger, d.participants(), poster.get(), o);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == ErrorCode::too_early);
    CHECK(std::filesystem::is_empty(d.out()));
    // A shorter margin (every terminal has stopped uploading) lets the same moment run it.
    o.margin = std::chrono::seconds(10);
    CHECK(run_cycle(*d.ledger, d.participants(), poster.get(), o).ok());
}

TEST_CASE("a transfer paying no registered participant stops the cycle before anything is written") {
    Day d;
    d.at(local_ns(day, 9, 0));
    ledger::Transfer stray;
    stray.debit_account_id = clearing::purse_shadow_account(card(1));
    stray.credit_account_id = clearing::purse_suspense_account;  // a purchase must credit a payable
    stray.amount = 10;
    stray.ledger = clearing::ledgers::purse;
    stray.code = codes::offline_purchase;
    d.book(stray);
    auto poster = make_direct_poster(*d.ledger);
    auto r = run_cycle(*d.ledger, d.participants(), poster.get(), d.run_options(day));
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == ErrorCode::unbalanced);
    CHECK(std::filesystem::is_empty(d.out()));
}

TEST_CASE("a load naming no registered participant stops the cycle") {
    Day d;
    d.at(local_ns(day, 9, 0));
    d.post(d.load_hold(4242, 100));
    auto poster = make_direct_poster(*d.ledger);
    auto r = run_cycle(*d.ledger, d.participants(), poster.get(), d.run_options(day));
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == ErrorCode::unbalanced);
    CHECK(r.error().message.find("4242") != std::string::npos);
}

TEST_CASE("a changed cut-off cannot leave a gap or an overlap with the next cycle") {
    Day d;
    d.book_the_day();
    run(d, day_after);  // starts at the 24:00 cut-off of `day`
    RunOptions o = d.run_options(day);
    o.config.cutoff_seconds = 23 * 3600;
    auto poster = make_direct_poster(*d.ledger);
    auto r = run_cycle(*d.ledger, d.participants(), poster.get(), o);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == ErrorCode::conflict);
}

TEST_CASE("direct posting is refused while the daemon's lock is held") {
    TempDir dir;
    auto first = lock_for_direct_posting(dir.path());
    REQUIRE(first.ok());
    auto second = lock_for_direct_posting(dir.path());  // flock: a second open file description conflicts
    REQUIRE_FALSE(second.ok());
    CHECK(second.error().code == ErrorCode::locked);
}

TEST_CASE("the HTTP poster refuses a malformed endpoint or an empty token") {
    CHECK(make_http_poster("127.0.0.1:8080", "t").error().code == ErrorCode::bad_input);
    CHECK(make_http_poster("http://127.0.0.1", "t").error().code == ErrorCode::bad_input);
    CHECK(make_http_poster("http://127.0.0.1:8080", "").error().code == ErrorCode::bad_input);
    auto unreachable = make_http_poster("http://127.0.0.1:1", "token");
    REQUIRE(unreachable.ok());
    ledger::Transfer t;
    t.id = ledger::make_id(1);
    auto posted = post_all(**unreachable, CycleWindow{20261126, {1, 2}}, {t});
    REQUIRE_FALSE(posted.ok());
    CHECK(posted.error().code == ErrorCode::posting);
}

// ---- reconciliation --------------------------------------------------------------------------------

TEST_CASE("camt.053 and camt.054 samples reconcile a cycle fully") {
    Day d;
    d.book_the_day();
    run(d, day);
    const auto statement = d.out() / "statement.xml";
    const auto notification = d.out() / "notification.xml";
    write(statement, camt053({{"CC20260310-1001-P", "8.31", "B1"},
                              {"CC20260310-1002-P", "15.14", "B2"},
                              {"CC20260310-1003-P", "11.94", "B3"},
                              {"SOMEONE-ELSE-42", "99.00", "B4"}}));
    write(notification, camt054({{"CC20260310-1003-M", "64.67", "M1"}}));
    CHECK(validate_xml(read(statement), default_schemas_dir() / "camt.053.001.08.xsd") == "");
    CHECK(validate_xml(read(notification), default_schemas_dir() / "camt.054.001.08.xsd") == "");
    auto report = reconcile(d.out(), cycle_id(day), {statement, notification});
    REQUIRE_MESSAGE(report.ok(), (report.ok() ? "" : report.error().message));
    CHECK(report->matched.size() == 4);
    CHECK(report->complete());
    CHECK(report->unknown == std::vector<std::string>{"SOMEONE-ELSE-42"});
    CHECK(load_cycle(d.out(), cycle_id(day)).value()->state == CycleState::reconciled);
}

TEST_CASE("the same booking in a camt.054 and the camt.053 is one payment; two bookings are a duplicate") {
    Day d;
    d.book_the_day();
    run(d, day);
    const auto a = d.out() / "a.xml";
    const auto b = d.out() / "b.xml";
    write(a, camt053({{"CC20260310-1001-P", "8.31", "B1"},
                      {"CC20260310-1002-P", "15.14", "B2"},
                      {"CC20260310-1003-P", "11.94", "B3"},
                      {"CC20260310-1003-M", "64.67", "M1"}}));
    write(b, camt054({{"CC20260310-1003-M", "64.67", "M1"}, {"CC20260310-1001-P", "8.31", "B9"}}));
    auto report = reconcile(d.out(), cycle_id(day), {a, b});
    REQUIRE(report.ok());
    CHECK(report->duplicates == std::vector<std::string>{"CC20260310-1001-P"});
    CHECK_FALSE(report->complete());
    CHECK(load_cycle(d.out(), cycle_id(day)).value()->state == CycleState::posted);
}

TEST_CASE("a missing entry and an amount mismatch are reported and the cycle stays posted") {
    Day d;
    d.book_the_day();
    run(d, day);
    const auto statement = d.out() / "statement.xml";
    write(statement,
          camt053({{"CC20260310-1001-P", "8.31", "B1"}, {"CC20260310-1002-P", "15.41", "B2"}, {"CC20260310-1003-M", "64.67", "M1"}}));
    auto report = reconcile(d.out(), cycle_id(day), {statement});
    REQUIRE(report.ok());
    CHECK(report->matched == std::vector<std::string>{"CC20260310-1001-P", "CC20260310-1003-M"});
    CHECK(report->missing == std::vector<std::string>{"CC20260310-1003-P"});
    REQUIRE(report->mismatched.size() == 1);
    CHECK(report->mismatched[0].end_to_end_id == "CC20260310-1002-P");
    CHECK(report->mismatched[0].expected_fen == 1514);
    CHECK(report->mismatched[0].booked_fen == 1541);
    CHECK_FALSE(report->complete());
    const auto record = load_cycle(d.out(), cycle_id(day)).value();
    CHECK(record->state == CycleState::posted);
    REQUIRE(record->reconciliation.has_value());
    CHECK(record->reconciliation->missing.size() == 1);
}

TEST_CASE("a malformed or schema-invalid camt file changes nothing") {
    Day d;
    d.book_the_day();
    run(d, day);
    const auto state = cycle_directory(d.out(), cycle_id(day)) / "cycle.json";
    const std::string before = read(state);
    const auto good = d.out() / "good.xml";
    write(good, camt053({{"CC20260310-1001-P", "8.31", "B1"}}));
    std::string invalid = camt053({{"CC20260310-1002-P", "15.14", "B2"}});
    invalid.replace(invalid.find("<BkTxCd>"), 8, "<BkTxCdX>");
    invalid.replace(invalid.find("</BkTxCd>"), 9, "</BkTxCdX>");
    const auto cases = std::vector<std::pair<std::string, std::string>>{
        {"truncated", camt053({{"CC20260310-1001-P", "8.31", "B1"}}).substr(0, 300)},
        {"schema-invalid", invalid},
        {"wrong document", expected_purse_pain001},
    };
    for (const auto& c : cases) {
        const std::string& name = c.first;  // not a structured binding: CAPTURE's lambda takes it by reference
        const std::string& text = c.second;
        CAPTURE(name);
        const auto path = d.out() / (name + ".xml");
        write(path, text);
        auto report = reconcile(d.out(), cycle_id(day), {good, path});
        REQUIRE_FALSE(report.ok());
        CHECK(report.error().code == ErrorCode::invalid_file);
        CHECK(report.error().message.find(path.string()) != std::string::npos);
        CHECK(read(state) == before);
    }
}

TEST_CASE("reconciling a cycle that was not posted is refused") {
    Day d;
    auto r = reconcile(d.out(), cycle_id(day), {d.out() / "x.xml"});
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == ErrorCode::bad_input);
}

TEST_CASE("a bank file with a DOCTYPE is refused before parsing: no entity is ever expanded") {
    Day d;
    d.book_the_day();
    run(d, day);
    // Nested entities in an attribute: expanded by the parser before any schema check.
    std::string bomb = "<?xml version=\"1.0\"?>\n<!-- a bank's header -->\n<!DOCTYPE Document [\n <!ENTITY a \"aaaaaaaaaaaaaaaa\">\n";
    char previous = 'a';
    for (char name = 'b'; name <= 'p'; ++name) {
        bomb += std::string(" <!ENTITY ") + name + " \"";
        for (int i = 0; i < 16; ++i) bomb += std::string("&") + previous + ";";
        bomb += "\">\n";
        previous = name;
    }
    bomb += "]>\n<Document xmlns=\"urn:iso:std:iso:20022:tech:xsd:camt.053.001.08\" x=\"&p;\"/>\n";
    const auto file = d.out() / "bomb.xml";
    write(file, bomb);
    auto report = reconcile(d.out(), cycle_id(day), {file});
    REQUIRE_FALSE(report.ok());
    // Refused by name before the parser ran (parsed, it was 45 s of CPU and 400 MB, then a schema error).
    CHECK(report.error().message.find("<!DOCTYPE") != std::string::npos);
    CHECK(validate_xml(bomb, default_schemas_dir() / "camt.053.001.08.xsd").find("DOCTYPE") != std::string::npos);
    CHECK(xml_input_refusal("\xEF\xBB\xBF<?xml version=\"1.0\"?><!--x--> <!DOCTYPE D>").has_value());
    CHECK(xml_input_refusal(std::string("\xFF\xFE<\0D\0", 6)).value() == "not UTF-8 (ISO 20022 files are UTF-8)");
    // A comment or text that merely mentions a DOCTYPE after the root element is data, not a declaration.
    CHECK_FALSE(xml_input_refusal("<?xml version=\"1.0\"?><Document><Note>&lt;!DOCTYPE</Note></Document>").has_value());
}
