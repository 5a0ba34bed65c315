// The cycle's files: pain.001.001.09 per debtor account, a CSV statement per participant, the
// summary (text + JSON). Everything is a pure function of the positions and the config, so the same
// cycle renders the same bytes; write_files() never replaces a file with different content.
#include "internal.hpp"

#include <coconut/core/durable_file.hpp>
#include <coconut/core/markup.hpp>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <libxml/parser.h>
#include <libxml/xmlschemas.h>

#include <algorithm>
#include <chrono>
#include <memory>

namespace coconut::settlement {

using nlohmann::json;

namespace {

constexpr std::string_view currency = "CNY";
constexpr std::string_view pain001_namespace = "urn:iso:std:iso:20022:tech:xsd:pain.001.001.09";
// Validation errors quoted in a message: the first few say what is wrong.
constexpr std::size_t xml_errors_max = 5;

// "2026-11-27T00:00:00+08:00": an instant in Hainan local time.
std::string local_time(std::uint64_t ns) {
    using namespace std::chrono;
    const sys_seconds local{seconds{static_cast<std::int64_t>(ns / 1'000'000'000) + local_utc_offset_s}};
    const auto day = floor<days>(local);
    const year_month_day date{day};
    const hh_mm_ss time{local - day};
    return fmt::format("{}T{:02}:{:02}:{:02}+08:00", format_date(date), time.hours().count(), time.minutes().count(),
                       time.seconds().count());
}

Date business_date(std::uint32_t cycle) {
    auto date = date_of_cycle(cycle);
    COCONUT_ASSERT(date.has_value());
    return *date;
}

const DebtorAccount& debtor(const Config& config, Source source) {
    return source == Source::purse_float ? config.purse_float : config.medical_fund;
}

std::string_view source_tag(Source source) { return source == Source::purse_float ? "purse-float" : "medical-fund"; }

const clearing::Participant& participant_of(const Positions& positions, std::uint64_t id) {
    for (const auto& p : positions.participants) {
        if (p.participant.id == id) return p.participant;
    }
    COCONUT_ASSERT(false, "a payment names a participant of the positions");
    std::abort();
}

// One CdtTrfTxInf: the payment to an account.
std::string credit_transfer_to(const Payment& p, std::string_view name, std::string_view account, std::string_view remittance) {
    std::string x = "      <CdtTrfTxInf>\n";
    x += fmt::format("        <PmtId>\n          <EndToEndId>{}</EndToEndId>\n        </PmtId>\n", p.end_to_end_id);
    x += fmt::format("        <Amt>\n          <InstdAmt Ccy=\"{}\">{}</InstdAmt>\n        </Amt>\n", currency,
                     format_fen(static_cast<std::int64_t>(p.amount_fen)));
    x += fmt::format("        <Cdtr>\n          <Nm>{}</Nm>\n        </Cdtr>\n", markup_escape(name));
    x += fmt::format(
        "        <CdtrAcct>\n          <Id>\n            <Othr>\n              <Id>{}</Id>\n            </Othr>\n"
        "          </Id>\n        </CdtrAcct>\n",
        markup_escape(account));
    x += fmt::format("        <RmtInf>\n          <Ustrd>{}</Ustrd>\n        </RmtInf>\n", markup_escape(remittance));
    x += "      </CdtTrfTxInf>\n";
    return x;
}

std::string credit_transfer(const Payment& p, const clearing::Participant& to, const Date& date) {
    return credit_transfer_to(p, to.name, to.bank_account,
                              fmt::format("Coconut Card settlement {} participant {}", format_date(date), p.participant_id));
}

// A refund to a cardholder: the account the counter recorded at the return (settlement/README.md "Refunds").
std::string refund_transfer(const Positions& positions, const Payment& p) {
    for (const Refund& r : positions.refunds) {
        if (refund_end_to_end_id(positions.cycle, r.asn) != p.end_to_end_id) continue;
        return credit_transfer_to(p, r.account.account_holder, r.account.bank_account,
                                  fmt::format("Coconut Card refund, card {}", p.card_number));
    }
    COCONUT_ASSERT(false, "a refund payment names a refund of the positions");
    std::abort();
}

std::string render_pain001(const Positions& positions, const Config& config, Source source, const std::vector<Payment>& paid) {
    std::uint64_t sum_fen = 0;
    for (const auto& p : paid) sum_fen += p.amount_fen;
    const Date date = business_date(positions.cycle);
    const Date execution{std::chrono::sys_days(date) + std::chrono::days{1}};
    const std::string message_id = fmt::format("CC{}-{}", positions.cycle, source == Source::purse_float ? "PURSE" : "MEDICAL");
    const DebtorAccount& from = debtor(config, source);
    std::string x;
    x += "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
    x += fmt::format("<Document xmlns=\"{}\">\n  <CstmrCdtTrfInitn>\n    <GrpHdr>\n", pain001_namespace);
    x += fmt::format("      <MsgId>{}</MsgId>\n      <CreDtTm>{}</CreDtTm>\n", message_id, local_time(positions.window.end_ns));
    x += fmt::format("      <NbOfTxs>{}</NbOfTxs>\n      <CtrlSum>{}</CtrlSum>\n", paid.size(),
                     format_fen(static_cast<std::int64_t>(sum_fen)));
    x += fmt::format("      <InitgPty>\n        <Nm>{}</Nm>\n      </InitgPty>\n    </GrpHdr>\n", markup_escape(config.initiator_name));
    x += fmt::format("    <PmtInf>\n      <PmtInfId>{}</PmtInfId>\n      <PmtMtd>TRF</PmtMtd>\n", message_id);
    // One bank entry per credit transfer, so the statement names each EndToEndId.
    x += "      <BtchBookg>false</BtchBookg>\n";
    x += fmt::format("      <NbOfTxs>{}</NbOfTxs>\n      <CtrlSum>{}</CtrlSum>\n", paid.size(),
                     format_fen(static_cast<std::int64_t>(sum_fen)));
    x += fmt::format("      <ReqdExctnDt>\n        <Dt>{}</Dt>\n      </ReqdExctnDt>\n", format_date(execution));
    x += fmt::format("      <Dbtr>\n        <Nm>{}</Nm>\n      </Dbtr>\n", markup_escape(from.name));
    x += fmt::format(
        "      <DbtrAcct>\n        <Id>\n          <Othr>\n            <Id>{}</Id>\n          </Othr>\n        </Id>\n"
        "        <Ccy>{}</Ccy>\n      </DbtrAcct>\n",
        markup_escape(from.account), currency);
    x += fmt::format("      <DbtrAgt>\n        <FinInstnId>\n          <BICFI>{}</BICFI>\n        </FinInstnId>\n      </DbtrAgt>\n",
                     from.agent_bic);
    for (const Payment& p : paid) {
        x += p.card_number.empty() ? credit_transfer(p, participant_of(positions, p.participant_id), date) : refund_transfer(positions, p);
    }
    x += "    </PmtInf>\n  </CstmrCdtTrfInitn>\n</Document>\n";
    return x;
}

std::string render_csv(const Positions& positions, const ParticipantPosition& p) {
    std::string csv = "cycle,participant_id,item,ledger,count,amount_fen\n";
    const auto row = [&](std::string_view item, std::string_view ledger_name, std::string count, std::int64_t amount) {
        csv += fmt::format("{},{},{},{},{},{}\n", positions.cycle, p.participant.id, item, ledger_name, count, amount);
    };
    for (std::size_t k = 0; k < kinds_count; ++k) {
        const Kind kind = static_cast<Kind>(k);
        if (is_refund(kind) && p.kinds[k].count == 0) continue;  // refunds only when there were any
        const bool medical = kind == Kind::clinic_medical || kind == Kind::refund_medical;
        // A refund is paid back from the payable: negative in the statement, as in the net.
        const auto gross = static_cast<std::int64_t>(p.kinds[k].gross_fen);
        row(to_string(kind), medical ? "medical" : "purse", std::to_string(p.kinds[k].count), is_refund(kind) ? -gross : gross);
    }
    row("fee", "purse", "", static_cast<std::int64_t>(p.purse.fee_fen));
    row("fee", "medical", "", static_cast<std::int64_t>(p.medical.fee_fen));
    // Adjustments only when there were any: a cycle without them keeps the statement it always had.
    if (p.purse.adjustments_fen != 0) row("adjustments", "purse", "", p.purse.adjustments_fen);
    if (p.medical.adjustments_fen != 0) row("adjustments", "medical", "", p.medical.adjustments_fen);
    // Card returns, refunds and deposits at its counter, likewise only when there were any.
    if (p.purse.counter_fen != 0) row("counter", "purse", "", p.purse.counter_fen);
    row("net", "purse", "", p.purse.net_fen);
    row("net", "medical", "", p.medical.net_fen);
    return csv;
}

json kind_json(const KindTotals& t) { return json{{"count", t.count}, {"gross_fen", t.gross_fen}}; }

json source_json(const SourceAmounts& s) {
    json out{{"base_fen", s.base_fen}, {"loads_fen", s.loads_fen}, {"fee_fen", s.fee_fen}, {"net_fen", s.net_fen}};
    if (s.adjustments_fen != 0) out["adjustments_fen"] = s.adjustments_fen;
    if (s.counter_fen != 0) out["counter_fen"] = s.counter_fen;
    if (s.refunds_fen != 0) out["refunds_fen"] = s.refunds_fen;
    return out;
}

std::string render_summary_json(const Positions& positions, const std::vector<Payment>& paid) {
    json participants = json::array();
    json collections = json::array();
    for (const auto& p : positions.participants) {
        json kinds = json::object();
        for (std::size_t k = 0; k < kinds_count; ++k) {
            if (is_refund(static_cast<Kind>(k)) && p.kinds[k].count == 0) continue;
            kinds[std::string(to_string(static_cast<Kind>(k)))] = kind_json(p.kinds[k]);
        }
        participants.push_back({{"id", p.participant.id},
                                {"name", p.participant.name},
                                {"kind", p.participant.kind},
                                {"fee_rate_bp", p.participant.fee_rate_bp},
                                {"kinds", kinds},
                                {"purse", source_json(p.purse)},
                                {"medical", source_json(p.medical)},
                                {"net_fen", p.net_fen()}});
        if (p.purse.net_fen < 0) {
            collections.push_back({{"participant_id", p.participant.id}, {"source", "purse_float"}, {"amount_fen", -p.purse.net_fen}});
        }
        // A clinic whose medical refunds (or adjustments) exceed its medical payments owes the fund.
        if (p.medical.net_fen < 0) {
            collections.push_back({{"participant_id", p.participant.id}, {"source", "medical_fund"}, {"amount_fen", -p.medical.net_fen}});
        }
    }
    json payments_json = json::array();
    for (const auto& p : paid) {
        payments_json.push_back({{"source", to_string(p.source)},
                                 {"participant_id", p.participant_id},
                                 {"end_to_end_id", p.end_to_end_id},
                                 {"amount_fen", p.amount_fen}});
        if (!p.card_number.empty()) payments_json.back()["card_number"] = p.card_number;
    }
    json summary = {{"cycle", positions.cycle},
                    {"business_date", format_date(business_date(positions.cycle))},
                    {"window",
                     {{"start_ns", positions.window.start_ns},
                      {"end_ns", positions.window.end_ns},
                      {"start", local_time(positions.window.start_ns)},
                      {"end", local_time(positions.window.end_ns)}}},
                    {"journal",
                     {{"first_sequence", positions.first_sequence},
                      {"last_sequence", positions.last_sequence},
                      {"entries", positions.entries_read},
                      {"transfers", positions.transfers_counted}}},
                    {"participants", participants},
                    {"funding",
                     {{"purse_float_fen", positions.funding.purse_float_fen},
                      {"medical_fund_fen", positions.funding.medical_fund_fen},
                      {"fee_income_purse_fen", positions.funding.fee_income_purse_fen},
                      {"fee_income_medical_fen", positions.funding.fee_income_medical_fen}}},
                    {"suspense", {{"count", positions.suspense.count}, {"amount_fen", positions.suspense.gross_fen}}},
                    {"payments", payments_json},
                    {"collections", collections},
                    {"balance_fen", positions.balance_fen()}};
    // Refunds to cardholders only when there were any: a cycle without them keeps the summary it always had.
    if (!positions.refunds.empty()) {
        json refunds = json::array();
        for (const Refund& r : positions.refunds) {
            refunds.push_back({{"card_number", bcd_to_digits(r.asn).substr(4)}, {"amount_fen", r.amount_fen}});
        }
        summary["refunds"] = refunds;
    }
    return summary.dump(2) + "\n";
}

struct XmlErrors {
    std::vector<std::string> lines;
};

void collect_error(void* context, xmlErrorPtr error) {
    auto* errors = static_cast<XmlErrors*>(context);
    if (errors->lines.size() >= xml_errors_max || error == nullptr) return;
    std::string message = error->message ? error->message : "unknown error";
    while (!message.empty() && message.back() == '\n') message.pop_back();
    errors->lines.push_back(fmt::format("line {}: {}", error->line, message));
}

std::string joined(const XmlErrors& errors) {
    std::string out;
    for (const auto& line : errors.lines) out += (out.empty() ? "" : "; ") + line;
    return out.empty() ? "invalid" : out;
}

}  // namespace

std::string_view to_string(Source source) { return source == Source::purse_float ? "purse_float" : "medical_fund"; }

std::string end_to_end_id(std::uint32_t cycle, std::uint64_t participant_id, Source source) {
    return fmt::format("CC{}-{}-{}", cycle, participant_id, source == Source::purse_float ? "P" : "M");
}

std::string refund_end_to_end_id(std::uint32_t cycle, const Asn& asn) {
    return fmt::format("CC{}-R{}", cycle, bcd_to_digits(asn).substr(4));
}

std::vector<Payment> payments(const Positions& positions) {
    std::vector<Payment> out;
    for (Source source : {Source::purse_float, Source::medical_fund}) {
        for (const auto& p : positions.participants) {
            const std::int64_t net = source == Source::purse_float ? p.purse.net_fen : p.medical.net_fen;
            if (net <= 0) continue;
            out.push_back(Payment{
                source, p.participant.id, {}, end_to_end_id(positions.cycle, p.participant.id, source), static_cast<std::uint64_t>(net)});
        }
    }
    for (const Refund& r : positions.refunds) {
        out.push_back(
            Payment{Source::purse_float, 0, bcd_to_digits(r.asn).substr(4), refund_end_to_end_id(positions.cycle, r.asn), r.amount_fen});
    }
    return out;
}

std::vector<File> render_files(const Positions& positions, const Config& config) {
    std::vector<File> files;
    const auto paid = payments(positions);
    for (Source source : {Source::purse_float, Source::medical_fund}) {
        std::vector<Payment> from_source;
        for (const auto& p : paid) {
            if (p.source == source) from_source.push_back(p);
        }
        // A pain.001 needs at least one credit transfer (PmtInf/CdtTrfTxInf 1..n): no file when nothing is paid.
        if (from_source.empty()) continue;
        files.push_back({fmt::format("pain001-{}-{}.xml", positions.cycle, source_tag(source)),
                         render_pain001(positions, config, source, from_source)});
    }
    for (const auto& p : positions.participants) {
        files.push_back({fmt::format("participant-{}.csv", p.participant.id), render_csv(positions, p)});
    }
    files.push_back({"activity.json", render_activity_json(positions)});
    files.push_back({"summary.txt", render_summary_text(positions)});
    files.push_back({"summary.json", render_summary_json(positions, paid)});
    return files;
}

namespace {

// `text` followed by spaces up to `columns` display columns (a Chinese character takes two).
std::string pad(std::string_view text, std::size_t columns) {
    const std::size_t used = display_width(text);
    return std::string(text) + std::string(used < columns ? columns - used : 0, ' ');
}

struct SummaryRow {
    std::string id, name, kind, count;
    std::vector<std::string> amounts;  // purchases, medical, [refunds,] loads, fees, net
};

// Any participant refunded a payment in the cycle: only then has the table a refunds column, so a cycle
// without refunds keeps the summary it always had.
bool any_refunds(const Positions& positions) {
    return std::any_of(positions.participants.begin(), positions.participants.end(),
                       [](const ParticipantPosition& p) { return p.purse.refunds_fen + p.medical.refunds_fen != 0; });
}

std::vector<std::int64_t> summary_values(const ParticipantPosition& p, bool refunds) {
    std::vector<std::int64_t> v{static_cast<std::int64_t>(p.purse.base_fen), static_cast<std::int64_t>(p.medical.base_fen)};
    if (refunds) v.push_back(-static_cast<std::int64_t>(p.purse.refunds_fen + p.medical.refunds_fen));
    for (std::int64_t x :
         {static_cast<std::int64_t>(p.purse.loads_fen), static_cast<std::int64_t>(p.purse.fee_fen + p.medical.fee_fen), p.net_fen()})
        v.push_back(x);
    return v;
}

std::string summary_table(const Positions& positions) {
    const bool refunds = any_refunds(positions);
    SummaryRow header{"participant", "name", "kind", "count", {"purchases", "medical"}};
    if (refunds) header.amounts.emplace_back("refunds");
    for (const char* h : {"loads", "fees", "net"}) header.amounts.emplace_back(h);
    std::vector<SummaryRow> rows{header};
    std::uint64_t count_total = 0;
    std::vector<std::int64_t> totals(header.amounts.size(), 0);
    for (const auto& p : positions.participants) {
        std::uint64_t count = 0;
        for (const auto& k : p.kinds) count += k.count;
        const auto values = summary_values(p, refunds);
        SummaryRow row{std::to_string(p.participant.id), p.participant.name, p.participant.kind, format_count(count), {}};
        for (std::size_t i = 0; i < values.size(); ++i) {
            row.amounts.push_back(format_cny(values[i]));
            totals[i] += values[i];
        }
        rows.push_back(std::move(row));
        count_total += count;
    }
    SummaryRow total{"total", "", "", format_count(count_total), {}};
    for (std::int64_t v : totals) total.amounts.push_back(format_cny(v));
    rows.push_back(std::move(total));
    std::size_t name_w = 4, number_w = 9;
    for (const auto& r : rows) {
        name_w = std::max(name_w, display_width(r.name));
        for (const auto& v : r.amounts) number_w = std::max(number_w, v.size());
    }
    std::string t;
    for (const auto& r : rows) {
        t += fmt::format("{:>11}  {}  {:<6}  {:>8}", r.id, pad(r.name, name_w), r.kind, r.count);
        for (const auto& v : r.amounts) t += fmt::format("  {:>{}}", v, number_w);
        t += "\n";
    }
    return t;
}

}  // namespace

std::string render_summary_text(const Positions& positions) {
    const Date date = business_date(positions.cycle);
    std::string t;
    t += fmt::format("Coconut Card settlement, cycle {} (business date {})\n", positions.cycle, format_date(date));
    t += fmt::format("window {} to {} (ledger time, UTC+8), journal entries {} to {} ({} read, {} transfers)\n",
                     local_time(positions.window.start_ns), local_time(positions.window.end_ns), positions.first_sequence,
                     positions.last_sequence, positions.entries_read, positions.transfers_counted);
    t += "amounts in CNY (yuan)\n\n" + summary_table(positions) + "\n";
    t += fmt::format("purse float    {:>16}\nmedical fund   {:>16}\nfee income     {:>16}\nbalance        {:>16}\n",
                     format_cny(positions.funding.purse_float_fen), format_cny(positions.funding.medical_fund_fen),
                     format_cny(positions.funding.fee_income_purse_fen + positions.funding.fee_income_medical_fen),
                     format_cny(positions.balance_fen()));
    const auto paid = payments(positions);
    for (Source source : {Source::purse_float, Source::medical_fund}) {
        std::size_t n = 0;
        std::int64_t sum = 0;
        for (const auto& p : paid) {
            if (p.source != source) continue;
            ++n;
            sum += static_cast<std::int64_t>(p.amount_fen);
        }
        t += fmt::format("payments from {:<13} {:>6} transfers {:>16}\n", to_string(source), n, format_cny(sum));
    }
    for (const auto& p : positions.participants) {
        if (p.purse.net_fen < 0) {
            t += fmt::format("to collect from participant {} ({}) for the purse float: {}\n", p.participant.id, p.participant.name,
                             format_cny(-p.purse.net_fen));
        }
        if (p.medical.net_fen < 0) {
            t += fmt::format("to collect from participant {} ({}) for the medical fund: {}\n", p.participant.id, p.participant.name,
                             format_cny(-p.medical.net_fen));
        }
    }
    if (!positions.refunds.empty()) {
        std::uint64_t refunded = 0;
        for (const Refund& r : positions.refunds) refunded += r.amount_fen;
        t += fmt::format("refunds to cardholders by bank (in the purse float's payments): {} transfers, {}\n", positions.refunds.size(),
                         format_cny(static_cast<std::int64_t>(refunded)));
    }
    if (positions.suspense.count > 0) {
        t += fmt::format("suspense (TAC failed, not settled): {} transfers, {}\n", positions.suspense.count,
                         format_cny(static_cast<std::int64_t>(positions.suspense.gross_fen)));
    }
    return t;
}

// ---- XSD validation --------------------------------------------------------------------------------

std::filesystem::path default_schemas_dir() { return COCONUT_SETTLEMENT_SCHEMAS_DIR; }

std::optional<std::string> xml_input_refusal(std::string_view xml) {
    std::string_view rest = xml;
    if (rest.starts_with("\xEF\xBB\xBF")) rest.remove_prefix(3);  // the UTF-8 byte order mark
    if (rest.starts_with("\xFE\xFF") || rest.starts_with("\xFF\xFE") || (!rest.empty() && rest.front() == '\0')) {
        return "not UTF-8 (ISO 20022 files are UTF-8)";
    }
    // The prolog: white space, the XML declaration, processing instructions and comments, up to the root
    // element. A document type declaration can only stand here.
    for (;;) {
        const auto start = rest.find_first_not_of(" \t\r\n");
        if (start == std::string_view::npos) return std::nullopt;
        rest.remove_prefix(start);
        if (rest.starts_with("<!DOCTYPE")) return "a document type declaration (<!DOCTYPE): refused before parsing";
        const std::string_view close = rest.starts_with("<?") ? "?>" : rest.starts_with("<!--") ? "-->" : "";
        if (close.empty()) return std::nullopt;  // the root element (or not XML: the parser says so)
        const auto end = rest.find(close);
        if (end == std::string_view::npos) return std::nullopt;
        rest.remove_prefix(end + close.size());
    }
}

std::string validate_xml(std::string_view xml, const std::filesystem::path& schema_file) {
    if (auto refused = xml_input_refusal(xml)) return *refused;
    XmlErrors errors;
    const auto parser =
        std::unique_ptr<xmlSchemaParserCtxt, decltype(&xmlSchemaFreeParserCtxt)>(xmlSchemaNewParserCtxt(schema_file.c_str()),
                                                                                 xmlSchemaFreeParserCtxt);
    if (!parser) return "cannot read schema " + schema_file.string();
    xmlSchemaSetParserStructuredErrors(parser.get(), collect_error, &errors);
    const auto schema = std::unique_ptr<xmlSchema, decltype(&xmlSchemaFree)>(xmlSchemaParse(parser.get()), xmlSchemaFree);
    if (!schema) return "cannot parse schema " + schema_file.string() + ": " + joined(errors);
    // No network, no entity expansion: bank files are data, never instructions to fetch anything.
    const auto document =
        std::unique_ptr<xmlDoc, decltype(&xmlFreeDoc)>(xmlReadMemory(xml.data(), static_cast<int>(xml.size()), "document.xml", nullptr,
                                                                     XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING),
                                                       xmlFreeDoc);
    if (!document) {
        const xmlError* last = xmlGetLastError();
        return fmt::format("not well-formed XML: {}", last && last->message ? std::string(last->message) : "parse error");
    }
    const auto validator =
        std::unique_ptr<xmlSchemaValidCtxt, decltype(&xmlSchemaFreeValidCtxt)>(xmlSchemaNewValidCtxt(schema.get()), xmlSchemaFreeValidCtxt);
    xmlSchemaSetValidStructuredErrors(validator.get(), collect_error, &errors);
    if (xmlSchemaValidateDoc(validator.get(), document.get()) != 0) return joined(errors);
    return {};
}

// ---- writing ----------------------------------------------------------------------------------------

Status write_files(const std::filesystem::path& cycle_dir, const std::vector<File>& files) {
    if (auto made = make_directory_durably(cycle_dir); !made) return made;
    // A crash inside write_file_atomically leaves NAME.tmp: never a file anyone should pick up.
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator(cycle_dir, ec)) {
        if (entry.path().extension() == ".tmp") std::filesystem::remove(entry.path(), ec);
    }
    std::vector<const File*> missing;
    for (const File& file : files) {
        const auto path = cycle_dir / file.name;
        std::error_code ec;
        if (!std::filesystem::exists(path, ec)) {
            missing.push_back(&file);
            continue;
        }
        COCONUT_TRY(existing, read_text_file(path));
        if (existing != file.contents) {
            return Unexpected{Error{ErrorCode::conflict, fmt::format("{} exists with different content (sha256 {}, this run {}): the "
                                                                     "ledger or the registry changed since it was written; refusing to "
                                                                     "overwrite a bank file",
                                                                     path.string(), sha256_hex(existing), sha256_hex(file.contents))}};
        }
    }
    for (const File* file : missing) {
        if (auto written = write_file_atomically(cycle_dir / file->name, as_bytes(file->contents), 0600); !written)
            return Unexpected{Error{ErrorCode::storage, written.error().message()}};
    }
    return Ok{};
}

}  // namespace coconut::settlement
