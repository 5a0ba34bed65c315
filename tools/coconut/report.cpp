#include "report.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <unistd.h>

#include <iostream>

namespace coconut::cli {

std::string format_fen(std::int64_t fen) {
    const bool negative = fen < 0;
    std::uint64_t value = static_cast<std::uint64_t>(negative ? -fen : fen);
    std::string yuan = std::to_string(value / 100);
    for (int i = static_cast<int>(yuan.size()) - 3; i > 0; i -= 3) yuan.insert(static_cast<std::size_t>(i), ",");
    return fmt::format("{}{}.{:02} CNY", negative ? "-" : "", yuan, value % 100);
}

Progress::Progress(std::string label) : label_(std::move(label)), tty_(::isatty(2) == 1) {}

void Progress::update(double fraction, const std::string& text) {
    if (!tty_) return;
    const auto now = std::chrono::steady_clock::now();
    if (drawn_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
    last_draw_ = now;
    drawn_ = true;
    constexpr int width = 30;
    const int filled = static_cast<int>(fraction * width);
    std::cerr << fmt::format("\r  {} [{}{}] {:3.0f}%  {:<48}", label_, std::string(static_cast<std::size_t>(filled), '#'),
                             std::string(static_cast<std::size_t>(width - filled), '.'), fraction * 100, text)
              << std::flush;
}

void Progress::step(const std::string& text) {
    if (tty_ && drawn_) std::cerr << "\r" << std::string(100, ' ') << "\r";
    drawn_ = false;
    std::cerr << "  ✓ " << text << "\n";
}

void Progress::done() {
    if (tty_ && drawn_) std::cerr << "\r" << std::string(100, ' ') << "\r" << std::flush;
    drawn_ = false;
}

void print_day(std::ostream& out, const DayReport& day) {
    out << fmt::format("Transactions by kind ({} card transactions):\n", day.transactions);
    for (const auto& [kind, totals] : day.by_kind)
        out << fmt::format("  {:<16} {:>8}  {:>18}\n", kind, totals.count, format_fen(static_cast<std::int64_t>(totals.amount_fen)));
    out << fmt::format("  declined (insufficient balance) {}, repeat taps not charged {}, top-ups that could not complete {}\n",
                       day.declined, day.repeat_taps, day.top_ups_failed);
    if (day.pcsc_taps > 0) out << fmt::format("  {} of them through pcscd + vpcd (coconut-vcard serve, PcscReader)\n", day.pcsc_taps);
    out << fmt::format(
        "Faults: {} torn debits ({} recovered from the card's proof, {} proven not to have happened and tapped "
        "again); {} ISO 8583 frames lost; clearing killed {} times\n",
        day.tears, day.tears_recovered, day.tears_abandoned, day.dropped_frames, day.clearing_kills);
    out << fmt::format(
        "Uploads: {} acknowledged ({} approved, {} suspense, {} duplicates) in {} rounds; {} connections failed "
        "and were retried; {} of them zero-fare entry taps (booked as 0-fen transfers: the ATC sequence stays whole)\n",
        day.uploaded, day.approved, day.suspense, day.duplicates, day.upload_rounds, day.upload_failures, day.zero_fare_entries);
    print_tourists(out, day.tourists);
    print_clinic_refunds(out, day.clinic_refunds);
    for (const auto& r : day.replacements)
        out << fmt::format(
            "Lost card {} reported at the counter and replaced by {}: medical {} moved at once; purse {} pending transfer "
            "(state {}: carried after the waiting period, collected with a 280000 load)\n",
            r.lost_asn, r.new_asn, format_fen(r.medical_carried_fen), format_fen(r.pending_transfer_fen), r.state);
}

void print_tourists(std::ostream& out, const TouristReport& t) {
    if (t.sold == 0) return;
    const auto fen = [](auto v) { return format_fen(static_cast<std::int64_t>(v)); };
    out << fmt::format("Airport counter: {} tourist cards sold (deposits {} taken in cash)\n", t.sold, fen(t.deposits_taken_fen));
    out << fmt::format(
        "  returned {}: balances {} taken by whole-balance debits (TAC-proven, then APPLICATION BLOCK), deposits {} back, "
        "fees {}, paid in cash {}\n",
        t.returned, fen(t.returned_balance_fen), fen(t.deposits_returned_fen), fen(t.return_fees_fen), fen(t.paid_cash_fen));
    out << fmt::format("  still out {} (GET /v1/clerk/reports/dormant: {} cards, balances {}, deposits {} — claimable, never forfeited)\n",
                       t.kept, t.dormant.size(), fen(t.dormant_balance_fen), fen(t.dormant_deposit_fen));
    for (const auto& card : t.dormant)
        out << fmt::format("    {}  balance {}  deposit {}\n", card.card_number, fen(card.balance_fen), fen(card.deposit_fen));
}

void print_clinic_refunds(std::ostream& out, const ClinicRefundReport& r) {
    if (r.planned == 0) return;
    const auto fen = [](auto v) { return format_fen(static_cast<std::int64_t>(v)); };
    out << fmt::format(
        "Clinic refunds the same day: {} visits refunded ({} chosen; {} not paid online, nothing to name), medical {} back to the "
        "medical accounts, purse {} credited to the cards online, purse {} handed back in cash\n",
        r.refunded, r.planned, r.not_refundable, fen(r.medical_fen), fen(r.purse_to_card_fen), fen(r.purse_cash_fen));
    out << fmt::format("  refused {}, unanswered {}, purse refunded but medical part not {}, card full (purse in cash instead) {}\n",
                       r.refused, r.unanswered, r.incomplete, r.to_cash);
}

void print_verification(std::ostream& out, const Verification& v, bool every_participant) {
    out << fmt::format("Invariants:\n  cards = shadows: {}/{} {}\n", v.cards_checked - v.card_mismatches.size(), v.cards_checked,
                       v.card_mismatches.empty() ? "ok" : "MISMATCH");
    for (std::size_t i = 0; i < v.card_mismatches.size() && i < 5; ++i) out << "    " << v.card_mismatches[i] << "\n";
    out << fmt::format("  ledger check: {}\n", v.ledger_check_ok ? "ok" : "FAILED");
    if (!v.ledger_check_ok) out << v.ledger_check_summary;
    out << fmt::format("  money: purse ledger sums to {}, medical ledger to {} ({})\n", format_fen(v.purse_total_fen),
                       format_fen(v.medical_total_fen),
                       v.purse_total_fen == 0 && v.medical_total_fen == 0 ? "nothing created or lost" : "MONEY MISSING");
    out << fmt::format("  risk flags: {}", v.risk_flags);
    for (const auto& [kind, n] : v.risk_by_kind) out << fmt::format("  {} {}", kind, n);
    if (v.risk_flags > 0)
        out << "\n    (atc_gap = an offline ATC still missing when one 65 or more above it is booked: a tap on a terminal that "
               "uploads much later or never; shadow_mismatch = a card holding more than its cleared balance plus its unconfirmed "
               "loads, or less once every earlier ATC is booked)";
    out << "\n";
    out << "Money by participant (signed: credits − debits):\n";
    std::map<std::string, MoneyLine> grouped;
    std::vector<std::string> order;
    for (const auto& line : v.money) {
        std::string key = line.name;
        if (!every_participant) {
            if (line.name.find("(shop,") != std::string::npos) key = "shops (all)";
            if (line.name.find("(clinic,") != std::string::npos) key = "clinics (all)";
        }
        if (!grouped.count(key)) order.push_back(key);
        auto& g = grouped[key];
        g.name = key;
        g.purse_fen += line.purse_fen;
        g.medical_fen += line.medical_fen;
    }
    out << fmt::format("  {:<40} {:>20} {:>20}\n", "", "purse", "medical");
    for (const auto& key : order)
        out << fmt::format("  {:<40} {:>20} {:>20}\n", key, format_fen(grouped[key].purse_fen), format_fen(grouped[key].medical_fen));
    out << fmt::format("  {:<40} {:>20} {:>20}\n", "total", format_fen(v.purse_total_fen), format_fen(v.medical_total_fen));
}

using nlohmann::json;

nlohmann::json tourists_json(const TouristReport& t) {
    json dormant = json::array();
    for (const auto& card : t.dormant)
        dormant.push_back({{"card_number", card.card_number}, {"balance_fen", card.balance_fen}, {"deposit_fen", card.deposit_fen}});
    return {{"sold", t.sold},
            {"deposits_taken_fen", t.deposits_taken_fen},
            {"returned", t.returned},
            {"returned_balance_fen", t.returned_balance_fen},
            {"deposits_returned_fen", t.deposits_returned_fen},
            {"return_fees_fen", t.return_fees_fen},
            {"paid_cash_fen", t.paid_cash_fen},
            {"kept", t.kept},
            {"dormant", dormant},
            {"dormant_balance_fen", t.dormant_balance_fen},
            {"dormant_deposit_fen", t.dormant_deposit_fen}};
}

nlohmann::json clinic_refunds_json(const ClinicRefundReport& r) {
    return {{"planned", r.planned},
            {"not_refundable", r.not_refundable},
            {"refunded", r.refunded},
            {"incomplete", r.incomplete},
            {"refused", r.refused},
            {"unanswered", r.unanswered},
            {"to_cash", r.to_cash},
            {"medical_fen", r.medical_fen},
            {"purse_to_card_fen", r.purse_to_card_fen},
            {"purse_cash_fen", r.purse_cash_fen},
            {"cash_fen", r.cash_fen}};
}

nlohmann::json day_json(const DayReport& day) {
    json kinds = json::object();
    for (const auto& [kind, t] : day.by_kind) kinds[kind] = {{"count", t.count}, {"amount_fen", t.amount_fen}};
    json replacements = json::array();
    for (const auto& r : day.replacements)
        replacements.push_back({{"lost_asn", r.lost_asn},
                                {"new_asn", r.new_asn},
                                {"state", r.state},
                                {"medical_carried_fen", r.medical_carried_fen},
                                {"pending_transfer_fen", r.pending_transfer_fen}});
    return {{"transactions", day.transactions},
            {"by_kind", kinds},
            {"declined", day.declined},
            {"pcsc_taps", day.pcsc_taps},
            {"top_ups_failed", day.top_ups_failed},
            {"tears", day.tears},
            {"tears_recovered", day.tears_recovered},
            {"tears_abandoned", day.tears_abandoned},
            {"dropped_frames", day.dropped_frames},
            {"clearing_kills", day.clearing_kills},
            {"link_failovers", day.link_failovers},
            {"uploaded", day.uploaded},
            {"approved", day.approved},
            {"suspense", day.suspense},
            {"duplicates", day.duplicates},
            {"upload_failures", day.upload_failures},
            {"zero_fare_entries", day.zero_fare_entries},
            {"digest", day.digest},
            {"tourists", tourists_json(day.tourists)},
            {"clinic_refunds", clinic_refunds_json(day.clinic_refunds)},
            {"replacements", replacements},
            {"transaction_log", day.transaction_log.string()}};
}

nlohmann::json verification_json(const Verification& v) {
    json money = json::array();
    for (const auto& m : v.money) money.push_back({{"name", m.name}, {"purse_fen", m.purse_fen}, {"medical_fen", m.medical_fen}});
    return {{"cards_checked", v.cards_checked},
            {"card_mismatches", v.card_mismatches},
            {"ledger_check_ok", v.ledger_check_ok},
            {"purse_total_fen", v.purse_total_fen},
            {"medical_total_fen", v.medical_total_fen},
            {"risk_flags", v.risk_flags},
            {"money", money},
            {"ok", v.ok()}};
}

}  // namespace coconut::cli
