// The clerk's report (settlement/README.md "The report"): amounts in CNY with thousands separators, full
// names (Chinese ones aligned by display width), activity by the card's own hour, report.html with its
// charts, the window in local time and the reconciliation status.
#include "camt_samples.hpp"
#include "settlement_fixture.hpp"

#include <nlohmann/json.hpp>

#include <set>

using namespace settle_test;

namespace {

constexpr std::string_view hospital = "海口市人民医院 Haikou People's Hospital";

RunReport run(Day& d, const Date& business_date) {
    auto poster = make_direct_poster(*d.ledger);
    auto report = run_cycle(*d.ledger, d.participants(), poster.get(), d.run_options(business_date));
    REQUIRE_MESSAGE(report.ok(), (report.ok() ? "" : report.error().message));
    return std::move(*report);
}

// Renames participant 1003 (registry upsert) to a long Chinese and English name.
void rename_clinic(Day& d) {
    const std::string update = R"({"participants": [{"id": 1003, "name": ")" + std::string(hospital) +
                               R"(", "kind": "clinic", "bank_account": "6222000010030003", "fee_rate_bp": 50}]})";
    auto loaded = clearing::load_registry(*d.ledger, *d.registry, update);
    REQUIRE_MESSAGE(loaded.ok(), (loaded.ok() ? "" : loaded.error().message));
}

// A purchase whose card recorded 07:41 on the business date, uploaded (booked) at 08:00.
void purchase_tapped_at_seven(Day& d, std::uint64_t fen) {
    ledger::Transfer t;
    t.debit_account_id = clearing::purse_shadow_account(card(2));
    t.credit_account_id = clearing::payable_account(1002, clearing::ledgers::purse);
    t.amount = fen;
    t.ledger = clearing::ledgers::purse;
    t.code = codes::offline_purchase;
    t.user_data_64 = 1002;
    clearing::Place place;
    place.type = 0x06;
    place.local_time_bcd = {0x26, 0x03, 0x10, 0x07, 0x41};
    t.user_data_128 = clearing::make_place(place);
    d.book(t);
}

// A small day at true wall-clock hours: a purchase at 23:59 the day before (the previous cycle), bus
// rides and a shop purchase booked at 08:00, a medical payment booked at 10:15, and the purchase whose
// card recorded 07:41.
void book_report_day(Day& d, std::uint64_t tapped_at_seven_fen) {
    d.at(cutoff_ns(day_before, 23 * 3600 + 59 * 60));
    d.purchase(1001, 111);
    d.at(cutoff_ns(day, 8 * 3600));
    d.purchase(1001, 200);
    d.purchase(1001, 300);
    d.purchase(1001, 333);
    d.purchase(1002, 1000);
    d.purchase(1002, 1040, 2);
    purchase_tapped_at_seven(d, tapped_at_seven_fen);
    d.at(cutoff_ns(day, 10 * 3600 + 15 * 60));
    d.post(d.medical_hold(1003, 8000), 6500);
}

std::size_t count_of(const std::string& text, std::string_view needle) {
    std::size_t n = 0;
    for (auto at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
    return n;
}

}  // namespace

TEST_CASE("amounts in CNY with thousands separators; display width counts a Chinese character as two columns") {
    CHECK(format_cny(0) == "0.00");
    CHECK(format_cny(5) == "0.05");
    CHECK(format_cny(-5) == "-0.05");
    CHECK(format_cny(99'999) == "999.99");
    CHECK(format_cny(100'000) == "1,000.00");
    CHECK(format_cny(123'456'789) == "1,234,567.89");
    CHECK(format_cny(-100'000'000'000) == "-1,000,000,000.00");
    CHECK(format_cny(INT64_MIN) == "-92,233,720,368,547,758.08");
    CHECK(format_count(0) == "0");
    CHECK(format_count(999) == "999");
    CHECK(format_count(1'156) == "1,156");
    CHECK(format_count(12'345'678) == "12,345,678");
    CHECK(display_width("Haikou") == 6);
    CHECK(display_width("海口 Bus") == 8);
    CHECK(display_width("") == 0);
}

TEST_CASE("summary.txt: full names, aligned by display width, amounts in CNY") {
    Day d;
    rename_clinic(d);
    book_report_day(d, 123'456'789);
    run(d, day);
    const std::string text = read(cycle_directory(d.out(), cycle_id(day)) / "summary.txt");
    CHECK(text.find("amounts in CNY") != std::string::npos);
    CHECK(text.find(std::string(hospital)) != std::string::npos);  // never cut
    CHECK(text.find("1,234,588.29") != std::string::npos);         // 1002: 10.00 + 10.40 + 1,234,567.89
    // Every row's kind column starts at the same display column, whatever script its name is in.
    std::set<std::size_t> kind_columns;
    std::istringstream lines(text);
    for (std::string line; std::getline(lines, line);) {
        for (std::string_view kind : {"  bus ", "  shop ", "  clinic "}) {
            const auto at = line.find(kind);
            if (at != std::string::npos && line.find("participant") == std::string::npos)
                kind_columns.insert(display_width(line.substr(0, at)));
        }
    }
    CHECK(kind_columns.size() == 1);
}

TEST_CASE("activity by hour: a card transaction at the hour its card recorded, a medical payment at the hour it was booked") {
    Day d;
    book_report_day(d, 500);
    const RunReport r = run(d, day);
    const auto& hours = r.positions.hours;
    CHECK(hours[7][static_cast<std::size_t>(Kind::shop)].count == 1);  // its card said 07:41; booked at 08:00
    CHECK(hours[7][static_cast<std::size_t>(Kind::shop)].gross_fen == 500);
    CHECK(hours[8][static_cast<std::size_t>(Kind::bus)].count == 3);  // no card time recorded: the booking's hour
    CHECK(hours[10][static_cast<std::size_t>(Kind::clinic_medical)].gross_fen == 6500);
    // Every counted transaction is in exactly one hour.
    for (std::size_t k = 0; k < kinds_count; ++k) {
        std::uint64_t count = 0, gross = 0, expected_count = 0, expected_gross = 0;
        for (const auto& hour : hours) count += hour[k].count, gross += hour[k].gross_fen;
        for (const auto& p : r.positions.participants) expected_count += p.kinds[k].count, expected_gross += p.kinds[k].gross_fen;
        CHECK(count == expected_count);
        CHECK(gross == expected_gross);
    }
    const auto activity = nlohmann::json::parse(read(cycle_directory(d.out(), cycle_id(day)) / "activity.json"));
    CHECK(activity["hours"].size() == 24);
    CHECK(activity["hours"][7]["shop"]["count"] == 1);
}

TEST_CASE("report.html: names, CNY, three charts, the window in local time, the previous cycle, the reconciliation status") {
    Day d;
    rename_clinic(d);
    book_report_day(d, 123'456'789);
    run(d, day_before);  // the 111-fen purchase at 23:59 the day before: the "previous cycles" chart has it
    run(d, day);
    const auto path = cycle_directory(d.out(), cycle_id(day)) / "report.html";
    std::string html = read(path);
    CHECK(html.starts_with("<!DOCTYPE html>"));
    CHECK(html.find("海口市人民医院 Haikou People&apos;s Hospital") != std::string::npos);  // the name as registered, escaped
    CHECK(html.find("Coconut &amp; Co Shop") != std::string::npos);                         // escaped
    CHECK(html.find("1,234,567.89") == std::string::npos);                                  // only totals per participant appear…
    CHECK(html.find("1,234,588.29") != std::string::npos);                                  // …1002's purchases
    CHECK(count_of(html, "<svg") == 3);
    CHECK(html.find("window 2026-03-10 00:00 to 2026-03-11 00:00 (Hainan time, UTC+8)") != std::string::npos);
    CHECK(html.find("2026-03-09") != std::string::npos);  // the previous cycle in the comparison
    CHECK(html.find("@page { size: A4") != std::string::npos);
    CHECK(html.find("not yet reconciled") != std::string::npos);
    CHECK(html.find("state posted") != std::string::npos);
    // Reconciling renders it again with the outcome.
    const auto statement = d.out() / "statement.xml";
    write(statement, camt053({{"CC20260310-1001-P", "8.31", "B1"}}));
    auto reconciled = reconcile(d.out(), cycle_id(day), {statement});
    REQUIRE(reconciled.ok());
    html = read(path);
    CHECK(html.find("Reconciliation: INCOMPLETE — 1 matched") != std::string::npos);
    // Before its files exist a cycle has no report.
    auto early = render_report_html(d.out(), cycle_id(day_after));
    REQUIRE_FALSE(early.ok());
    CHECK(early.error().code == ErrorCode::wrong_state);
}
