// The clerk's report of a cycle (settlement/README.md "The report"): report.html, a page a manager can be
// handed — full names, amounts in CNY with thousands separators, the window in local time, SVG charts,
// the reconciliation status — rendered from the cycle's own files (summary.json, activity.json,
// cycle.json) and the summaries of the cycles before it, so `coconut-settle report --html` needs no ledger.
#include "internal.hpp"

#include <coconut/core/durable_file.hpp>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>

namespace coconut::settlement {

using json = nlohmann::json;

namespace {

// How many earlier cycles the "day against the previous cycles" chart shows.
constexpr std::size_t previous_cycles_shown = 6;

struct KindLook {
    Kind kind;
    const char* label;
    const char* colour;  // distinguishable in print and for the common colour-vision deficiencies
};
constexpr std::array<KindLook, kinds_count> kind_looks{{
    {Kind::bus, "Bus", "#1b6ca8"},
    {Kind::shop, "Shop", "#e08a00"},
    {Kind::clinic_purse, "Clinic (purse)", "#2e9a5b"},
    {Kind::clinic_medical, "Clinic (medical)", "#7a4fb0"},
    {Kind::load, "Loads", "#8c8c8c"},
    {Kind::refund_purse, "Refunds (purse)", "#b8336a"},
    {Kind::refund_medical, "Refunds (medical)", "#5c3c10"},
}};

// The member `key` of `object`, or an empty object / array when it has none (never a temporary).
const json& member(const json& object, const char* key) {
    static const json none = json::object();
    if (!object.is_object()) return none;
    const auto found = object.find(key);
    return found != object.end() ? *found : none;
}

std::string text_of(const json& object, const char* key) {
    const json& value = member(object, key);
    return value.is_string() ? value.get<std::string>() : std::string();
}

std::int64_t number(const json& object, const char* key) {
    if (!object.is_object()) return 0;
    const auto found = object.find(key);
    return found != object.end() && found->is_number_integer() ? found->get<std::int64_t>() : 0;
}

// "2026-03-10T00:00:00+08:00" → "2026-03-10 00:00".
std::string readable_local(const std::string& iso) {
    if (iso.size() < 16) return iso;
    return iso.substr(0, 10) + " " + iso.substr(11, 5);
}

// A cycle's summary.json, or null when it is missing or unreadable (an older cycle without files).
json read_summary(const std::filesystem::path& out, std::uint32_t cycle) {
    auto text = read_text_file(cycle_directory(out, cycle) / "summary.json");
    if (!text) return json();
    auto parsed = json::parse(*text, nullptr, false);
    return parsed.is_discarded() ? json() : parsed;
}

// Purchases and medical payments of a summary, less their same-day refunds: what the day took in.
std::int64_t takings_fen(const json& summary) {
    std::int64_t total = 0;
    for (const auto& p : member(summary, "participants")) {
        for (const char* source : {"purse", "medical"})
            total += number(member(p, source), "base_fen") - number(member(p, source), "refunds_fen");
    }
    return total;
}

std::string bar_chart_svg(const std::string& title, const std::vector<std::pair<std::string, std::int64_t>>& bars,
                          const std::string& colour, std::size_t highlight) {
    constexpr int width = 640, row = 26, label_w = 190, value_w = 120;
    const int height = static_cast<int>(bars.size()) * row + 10;
    std::int64_t top = 1;
    for (const auto& [label, value] : bars) top = std::max(top, value);
    std::string svg =
        fmt::format(R"(<svg role="img" aria-label="{}" viewBox="0 0 {} {}" width="100%">)", markup_escape(title), width, height);
    for (std::size_t i = 0; i < bars.size(); ++i) {
        const auto& [label, value] = bars[i];
        const int y = static_cast<int>(i) * row + 5;
        const double w = static_cast<double>(width - label_w - value_w) * static_cast<double>(std::max<std::int64_t>(value, 0)) /
                         static_cast<double>(top);
        svg += fmt::format(R"(<text x="{}" y="{}" text-anchor="end" class="label">{}</text>)", label_w - 8, y + 17, markup_escape(label));
        svg += fmt::format(R"(<rect x="{}" y="{}" width="{:.1f}" height="{}" fill="{}"{}/>)", label_w, y + 3, w, row - 8, colour,
                           i == highlight ? R"( stroke="#000" stroke-width="2")" : "");
        svg += fmt::format(R"(<text x="{:.1f}" y="{}" class="value">{}</text>)", label_w + w + 6, y + 17, format_cny(value));
    }
    return svg + "</svg>";
}

// Transactions by the hour of the day, stacked by kind, with a legend.
std::string hours_svg(const json& activity) {
    constexpr int width = 640, height = 220, left = 40, bottom = 190, plot_h = 160;
    const json hours = member(activity, "hours");
    std::uint64_t top = 1;
    for (const auto& h : hours) {
        std::uint64_t sum = 0;
        for (const auto& look : kind_looks) sum += static_cast<std::uint64_t>(number(member(h, to_string(look.kind).data()), "count"));
        top = std::max(top, sum);
    }
    // Room for a second legend row when the refund kinds are listed.
    const bool refunds_listed =
        !hours.empty() && (hours[0].contains(to_string(Kind::refund_purse)) || hours[0].contains(to_string(Kind::refund_medical)));
    std::string svg = fmt::format(R"(<svg role="img" aria-label="Transactions by hour of the day" viewBox="0 0 {} {}" width="100%">)",
                                  width, height + (refunds_listed ? 40 : 24));
    svg += fmt::format(R"(<text x="{}" y="12" class="label">{} max per hour</text>)", left, top);
    const double slot = static_cast<double>(width - left - 10) / 24.0;
    for (std::size_t i = 0; i < hours.size() && i < 24; ++i) {
        double y = bottom;
        for (const auto& look : kind_looks) {
            const auto count = number(member(hours[i], to_string(look.kind).data()), "count");
            if (count <= 0) continue;
            const double h = plot_h * static_cast<double>(count) / static_cast<double>(top);
            y -= h;
            svg +=
                fmt::format(R"(<rect x="{:.1f}" y="{:.1f}" width="{:.1f}" height="{:.1f}" fill="{}"><title>{:02}:00 {}: {}</title></rect>)",
                            left + slot * static_cast<double>(i) + 1, y, slot - 2, h, look.colour, i, look.label, count);
        }
        if (i % 3 == 0)
            svg +=
                fmt::format(R"(<text x="{:.1f}" y="{}" class="label">{:02}</text>)", left + slot * static_cast<double>(i), bottom + 14, i);
    }
    // The legend: the kinds the file lists (refunds only in a cycle that had any), wrapped in rows.
    double x = left;
    int y = height + 6;
    for (const auto& look : kind_looks) {
        if (is_refund(look.kind) && (hours.empty() || !hours[0].contains(to_string(look.kind)))) continue;
        if (x + 120 > width) x = left, y += 16;
        svg += fmt::format(R"(<rect x="{:.0f}" y="{}" width="10" height="10" fill="{}"/><text x="{:.0f}" y="{}" class="label">{}</text>)",
                           x, y, look.colour, x + 14, y + 9, look.label);
        x += 120;
    }
    return svg + "</svg>";
}

}  // namespace

std::string format_count(std::uint64_t n) {
    const std::string digits = std::to_string(n);
    std::string grouped;
    for (std::size_t i = 0; i < digits.size(); ++i) {
        if (i > 0 && (digits.size() - i) % 3 == 0) grouped += ',';
        grouped += digits[i];
    }
    return grouped;
}

std::string format_cny(std::int64_t fen) {
    const bool negative = fen < 0;
    const std::uint64_t magnitude = negative ? 0 - static_cast<std::uint64_t>(fen) : static_cast<std::uint64_t>(fen);
    return fmt::format("{}{}.{:02}", negative ? "-" : "", format_count(magnitude / 100), magnitude % 100);
}

std::size_t display_width(std::string_view utf8) {
    std::size_t width = 0;
    for (std::size_t i = 0; i < utf8.size();) {
        const auto lead = static_cast<unsigned char>(utf8[i]);
        std::uint32_t cp = lead;
        std::size_t length = 1;
        if (lead >= 0xF0) length = 4, cp = lead & 0x07;
        else if (lead >= 0xE0) length = 3, cp = lead & 0x0F;
        else if (lead >= 0xC0) length = 2, cp = lead & 0x1F;
        for (std::size_t k = 1; k < length && i + k < utf8.size(); ++k) cp = (cp << 6) | (static_cast<unsigned char>(utf8[i + k]) & 0x3F);
        i += length;
        // East Asian wide and fullwidth ranges take two columns in a terminal or a monospaced printout.
        const bool wide = (cp >= 0x1100 && cp <= 0x115F) || (cp >= 0x2E80 && cp <= 0xA4CF) || (cp >= 0xAC00 && cp <= 0xD7A3) ||
                          (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0xFE30 && cp <= 0xFE4F) || (cp >= 0xFF00 && cp <= 0xFF60) ||
                          (cp >= 0xFFE0 && cp <= 0xFFE6) || (cp >= 0x20000 && cp <= 0x3FFFD);
        width += wide ? 2 : 1;
    }
    return width;
}

std::string render_activity_json(const Positions& positions) {
    // The refund kinds only in a cycle that had refunds: a cycle without them keeps the file it always had.
    std::array<bool, kinds_count> listed{};
    for (std::size_t k = 0; k < kinds_count; ++k) {
        listed[k] = !is_refund(static_cast<Kind>(k)) ||
                    std::any_of(positions.hours.begin(), positions.hours.end(), [k](const auto& hour) { return hour[k].count != 0; });
    }
    json hours = json::array();
    for (std::size_t h = 0; h < positions.hours.size(); ++h) {
        json hour{{"hour", h}};
        for (std::size_t k = 0; k < kinds_count; ++k) {
            if (!listed[k]) continue;
            hour[std::string(to_string(static_cast<Kind>(k)))] = {{"count", positions.hours[h][k].count},
                                                                  {"gross_fen", positions.hours[h][k].gross_fen}};
        }
        hours.push_back(std::move(hour));
    }
    return json{{"cycle", positions.cycle}, {"hours", std::move(hours)}}.dump(2) + "\n";
}

namespace {

// How a participant's nets settle: each funding source pays a positive net and collects a negative one, so a
// clinic refunding more medical payments than it took in a cycle owes the fund while the float pays it.
std::string how_settled(std::int64_t purse_net_fen, std::int64_t medical_net_fen) {
    std::string settles;
    if (purse_net_fen > 0 || medical_net_fen > 0) settles = "paid by bank transfer";
    if (purse_net_fen < 0 || medical_net_fen < 0) settles += settles.empty() ? "to collect" : "; to collect";
    return settles.empty() ? "nothing to move" : settles;
}

// A participant's refunds in a summary (0 in a cycle without any, or an older summary).
std::int64_t refunds_of(const json& p) { return number(member(p, "purse"), "refunds_fen") + number(member(p, "medical"), "refunds_fen"); }

std::string participants_table(const json& summary) {
    // A refunds column only when the cycle had refunds.
    bool refunds = false;
    for (const auto& p : member(summary, "participants")) refunds = refunds || refunds_of(p) != 0;
    std::string t = R"(<table><caption>Participants · 参与方</caption><thead><tr><th scope="col">Id</th><th scope="col">Name · 名称</th>)"
                    R"(<th scope="col">Kind</th><th scope="col" class="n">Transactions</th><th scope="col" class="n">Purchases</th>)"
                    R"(<th scope="col" class="n">Medical</th>)";
    if (refunds) t += R"(<th scope="col" class="n">Refunds · 退款</th>)";
    t += R"(<th scope="col" class="n">Loads</th><th scope="col" class="n">Fees</th><th scope="col" class="n">Net</th>)"
         R"(<th scope="col">Settlement</th></tr></thead><tbody>)";
    std::vector<std::int64_t> totals(refunds ? 6 : 5, 0);
    std::uint64_t count_total = 0;
    for (const auto& p : member(summary, "participants")) {
        const json purse = member(p, "purse"), medical = member(p, "medical");
        std::uint64_t count = 0;
        for (const auto& [kind, totals_of_kind] : member(p, "kinds").items())
            count += static_cast<std::uint64_t>(number(totals_of_kind, "count"));
        std::vector<std::int64_t> values{number(purse, "base_fen"), number(medical, "base_fen")};
        if (refunds) values.push_back(-refunds_of(p));
        for (std::int64_t v : {number(purse, "loads_fen"), number(purse, "fee_fen") + number(medical, "fee_fen"), number(p, "net_fen")})
            values.push_back(v);
        const std::string settles = how_settled(number(purse, "net_fen"), number(medical, "net_fen"));
        t += fmt::format(R"(<tr><td>{}</td><td>{}</td><td>{}</td><td class="n">{}</td>)", number(p, "id"),
                         markup_escape(text_of(p, "name")), markup_escape(text_of(p, "kind")), format_count(count));
        for (std::size_t i = 0; i < values.size(); ++i) {
            t += fmt::format(R"(<td class="n">{}</td>)", format_cny(values[i]));
            totals[i] += values[i];
        }
        t += fmt::format("<td>{}</td></tr>", settles);
        count_total += count;
    }
    t += fmt::format(R"(</tbody><tfoot><tr><th scope="row" colspan="3">Total</th><td class="n">{}</td>)", format_count(count_total));
    for (std::int64_t v : totals) t += fmt::format(R"(<td class="n">{}</td>)", format_cny(v));
    return t + "<td></td></tr></tfoot></table>";
}

std::string funding_and_payments(const json& summary) {
    const json funding = member(summary, "funding");
    std::string t = R"(<table class="narrow"><caption>Funding sources · 资金来源 (CNY)</caption><tbody>)";
    t += fmt::format(R"(<tr><th scope="row">Purse float</th><td class="n">{}</td></tr>)", format_cny(number(funding, "purse_float_fen")));
    t += fmt::format(R"(<tr><th scope="row">Medical fund</th><td class="n">{}</td></tr>)", format_cny(number(funding, "medical_fund_fen")));
    t += fmt::format(R"(<tr><th scope="row">Fee income</th><td class="n">{}</td></tr>)",
                     format_cny(number(funding, "fee_income_purse_fen") + number(funding, "fee_income_medical_fen")));
    const std::int64_t balance = number(summary, "balance_fen");
    t += fmt::format(R"(<tr><th scope="row">Balance (must be 0)</th><td class="n">{}</td></tr></tbody></table>)", format_cny(balance));
    std::int64_t paid[3] = {};
    std::size_t counted[3] = {};
    for (const auto& p : member(summary, "payments")) {
        const int source = text_of(p, "source") == "medical_fund" ? 1 : p.contains("card_number") ? 2 : 0;
        paid[source] += number(p, "amount_fen");
        ++counted[source];
    }
    const auto suspense = member(summary, "suspense");
    t += R"(<table class="narrow"><caption>Payments · 付款</caption><tbody>)";
    t += fmt::format(R"(<tr><th scope="row">From the purse float</th><td class="n">{} transfers</td><td class="n">{}</td></tr>)",
                     counted[0], format_cny(paid[0]));
    t += fmt::format(R"(<tr><th scope="row">From the medical fund</th><td class="n">{} transfers</td><td class="n">{}</td></tr>)",
                     counted[1], format_cny(paid[1]));
    t += fmt::format(R"(<tr><th scope="row">Refunds to cardholders</th><td class="n">{} transfers</td><td class="n">{}</td></tr>)",
                     counted[2], format_cny(paid[2]));
    t +=
        fmt::format(R"(<tr><th scope="row">Held in suspense (failed TAC)</th><td class="n">{} transactions</td><td class="n">{}</td></tr>)",
                    number(suspense, "count"), format_cny(number(suspense, "amount_fen")));
    return t + "</tbody></table>";
}

std::string reconciliation_html(const CycleRecord& record) {
    if (!record.reconciliation) {
        return fmt::format(R"(<p class="status pending">Reconciliation: not yet reconciled against the bank's statements (state {}).</p>)",
                           to_string(record.state));
    }
    const ReconciliationReport& r = *record.reconciliation;
    return fmt::format(R"(<p class="status {}">Reconciliation: {} — {} matched, {} missing, {} mismatched, {} duplicate, {} unknown.</p>)",
                       r.complete() ? "ok" : "problem", r.complete() ? "complete" : "INCOMPLETE", r.matched.size(), r.missing.size(),
                       r.mismatched.size(), r.duplicates.size(), r.unknown.size());
}

constexpr const char* report_style = R"(
@page { size: A4; margin: 14mm; }
body { font-family: "Noto Sans CJK SC", "Noto Sans", sans-serif; color: #111; max-width: 190mm; margin: 1em auto; font-size: 10.5pt; }
h1 { font-size: 16pt; margin: 0 0 4pt; } h2 { font-size: 12pt; margin: 14pt 0 4pt; break-after: avoid; }
.meta { color: #333; margin: 0 0 8pt; }
table { border-collapse: collapse; width: 100%; margin: 6pt 0; break-inside: avoid; }
table.narrow { width: auto; min-width: 60%; }
caption { text-align: left; font-weight: bold; padding: 2pt 0; }
th, td { border-bottom: 1px solid #bbb; padding: 3pt 5pt; text-align: left; vertical-align: top; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tfoot th, tfoot td { border-top: 2px solid #111; font-weight: bold; }
.figures { display: flex; flex-wrap: wrap; gap: 8pt; } .figure { border: 1px solid #bbb; padding: 4pt 8pt; min-width: 30%; }
.figure b { display: block; font-size: 13pt; font-variant-numeric: tabular-nums; }
.status.ok { color: #0a5d2c; } .status.problem { color: #a00; font-weight: bold; } .status.pending { color: #6b4e00; }
svg .label { font-size: 11px; fill: #222; } svg .value { font-size: 11px; fill: #111; }
section { break-inside: avoid; }
)";

}  // namespace

Result<std::string> render_report_html(const std::filesystem::path& out, std::uint32_t cycle) {
    COCONUT_TRY(stored, load_cycle(out, cycle));
    if (!stored || stored->state < CycleState::files_written)
        return Unexpected{Error{ErrorCode::wrong_state, fmt::format("cycle {} has no files yet: run it first", cycle)}};
    const json summary = read_summary(out, cycle);
    if (summary.is_null()) return Unexpected{Error{ErrorCode::storage, fmt::format("cannot read the summary.json of cycle {}", cycle)}};
    json activity;
    if (auto text = read_text_file(cycle_directory(out, cycle) / "activity.json")) activity = json::parse(*text, nullptr, false);
    const json window = member(summary, "window");
    std::string html =
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">";
    html += fmt::format("<title>Settlement {} · 清算 {}</title><style>{}</style></head><body>", cycle, cycle, report_style);
    html += fmt::format("<h1>Coconut Card settlement · 椰岛一卡通清算结算 — {}</h1>", markup_escape(text_of(summary, "business_date")));
    html += fmt::format(R"(<p class="meta">Cycle {} · window {} to {} (Hainan time, UTC+8) · journal entries {} to {} · state {}</p>)",
                        cycle, readable_local(text_of(window, "start")), readable_local(text_of(window, "end")),
                        number(member(summary, "journal"), "first_sequence"), number(member(summary, "journal"), "last_sequence"),
                        to_string(stored->state));
    html += reconciliation_html(*stored);
    html += "<h2>The day in figures · 当日概况</h2>" + participants_table(summary) + funding_and_payments(summary);
    html += R"(<section><h2>Transactions by hour of the day · 分时交易量</h2>)";
    html += activity.is_object() ? hours_svg(activity) : std::string("<p>Not recorded for this cycle.</p>");
    html += "</section>";
    std::array<std::int64_t, kinds_count> by_kind{};
    for (const auto& p : member(summary, "participants")) {
        for (const auto& look : kind_looks)
            by_kind[static_cast<std::size_t>(look.kind)] += number(member(member(p, "kinds"), to_string(look.kind).data()), "gross_fen");
    }
    std::vector<std::pair<std::string, std::int64_t>> kinds;
    for (const auto& look : kind_looks) {
        // Takings: refunds are no kind of participant (they are in the participants' table and net of the day).
        if (!is_refund(look.kind)) kinds.emplace_back(look.label, by_kind[static_cast<std::size_t>(look.kind)]);
    }
    html += "<section><h2>Takings by kind of participant (CNY) · 按类型收入</h2>" +
            bar_chart_svg("Takings by kind", kinds, "#1b6ca8", kinds.size()) + "</section>";
    COCONUT_TRY(records, list_cycles(out));
    std::vector<std::pair<std::string, std::int64_t>> days;
    for (const CycleRecord& r : records) {
        if (r.cycle > cycle || r.state < CycleState::files_written) continue;
        const json s = r.cycle == cycle ? summary : read_summary(out, r.cycle);
        if (!s.is_null()) days.emplace_back(text_of(s, "business_date"), takings_fen(s));
    }
    if (days.size() > previous_cycles_shown + 1)
        days.erase(days.begin(), days.end() - static_cast<std::ptrdiff_t>(previous_cycles_shown + 1));
    html += "<section><h2>The day against the previous cycles: takings (CNY) · 与前几日比较</h2>" +
            bar_chart_svg("Takings per business date", days, "#2e9a5b", days.size() - 1) + "</section>";
    return html + "</body></html>\n";
}

Status write_report_html(const std::filesystem::path& out, std::uint32_t cycle) {
    COCONUT_TRY(html, render_report_html(out, cycle));
    // A view of the files beside it, not a bank file: replaced whenever the cycle moves on (posted, reconciled).
    if (auto written = write_file_atomically(cycle_directory(out, cycle) / "report.html", as_bytes(html), 0640); !written)
        return Unexpected{Error{ErrorCode::storage, written.error().message()}};
    return Ok{};
}

}  // namespace coconut::settlement
