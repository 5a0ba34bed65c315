#include "settle.hpp"

#include "errors.hpp"
#include "process.hpp"

#include <coconut/clearing/plan.hpp>
#include <coconut/core/durable_file.hpp>
#include <coconut/ledger/ledger.hpp>
#include <coconut/settlement/settlement.hpp>

#include <fmt/format.h>
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <libxml/xpath.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <iostream>
#include <map>
#include <regex>
#include <sstream>
#include <thread>

namespace coconut::cli {

namespace {

namespace st = coconut::settlement;

std::string read_text(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream text;
    text << in.rdbuf();
    if (!in) fail(exit_codes::io_error, "cannot read " + path.string());
    return text.str();
}

void write_text(const fs::path& path, const std::string& text) {
    if (auto written = write_file_atomically(path, ByteView(reinterpret_cast<const std::uint8_t*>(text.data()), text.size())); !written)
        fail(exit_codes::io_error, written.error().message());
}

struct BankLine {
    std::string end_to_end_id;
    std::string amount;  // as instructed, "123.45"
};

struct Instruction {
    std::string debtor_account;
    std::vector<BankLine> lines;
};

// The strings an XPath expression selects (namespace-agnostic: local-name()).
std::vector<std::string> select(xmlXPathContextPtr context, xmlNodePtr node, const char* expression) {
    std::vector<std::string> out;
    xmlXPathObjectPtr result = xmlXPathNodeEval(node, reinterpret_cast<const xmlChar*>(expression), context);
    if (result && result->nodesetval)
        for (int i = 0; i < result->nodesetval->nodeNr; ++i) {
            xmlChar* text = xmlNodeGetContent(result->nodesetval->nodeTab[i]);
            out.emplace_back(reinterpret_cast<const char*>(text));
            xmlFree(text);
        }
    xmlXPathFreeObject(result);
    return out;
}

// What the bank reads from a pain.001: the debtor account and each transfer's EndToEndId and amount.
Instruction read_pain001(const fs::path& file) {
    const std::string xml = read_text(file);
    xmlDocPtr doc = xmlReadMemory(xml.data(), static_cast<int>(xml.size()), file.c_str(), nullptr, XML_PARSE_NONET);
    if (!doc) fail(exit_codes::bad_input, file.string() + ": not XML");
    xmlXPathContextPtr context = xmlXPathNewContext(doc);
    Instruction out;
    const auto accounts =
        select(context, xmlDocGetRootElement(doc), "//*[local-name()='DbtrAcct']//*[local-name()='Othr']/*[local-name()='Id']");
    out.debtor_account = accounts.empty() ? "UNKNOWN" : accounts.front();
    const auto ids =
        select(context, xmlDocGetRootElement(doc), "//*[local-name()='CdtTrfTxInf']/*[local-name()='PmtId']/*[local-name()='EndToEndId']");
    const auto amounts =
        select(context, xmlDocGetRootElement(doc), "//*[local-name()='CdtTrfTxInf']/*[local-name()='Amt']/*[local-name()='InstdAmt']");
    xmlXPathFreeContext(context);
    xmlFreeDoc(doc);
    if (ids.size() != amounts.size()) fail(exit_codes::bad_input, file.string() + ": transfers without an amount");
    for (std::size_t i = 0; i < ids.size(); ++i) out.lines.push_back({ids[i], amounts[i]});
    return out;
}

std::uint64_t fen_of(const std::string& amount) {
    const auto dot = amount.find('.');
    std::string cents = dot == std::string::npos ? "00" : (amount.substr(dot + 1) + "00").substr(0, 2);
    return std::stoull(amount.substr(0, dot)) * 100 + std::stoull(cents);
}

// The bank's statement of the debtor account: one booked debit per credit transfer, with its own reference.
std::string camt053(const Instruction& pain, std::uint32_t cycle, const std::string& booking_date) {
    std::string entries;
    std::uint64_t total_fen = 0;
    std::size_t n = 0;
    for (const auto& line : pain.lines) {
        total_fen += fen_of(line.amount);
        entries += fmt::format(R"(      <Ntry>
        <Amt Ccy="CNY">{0}</Amt>
        <CdtDbtInd>DBIT</CdtDbtInd>
        <Sts><Cd>BOOK</Cd></Sts>
        <BookgDt><Dt>{3}</Dt></BookgDt>
        <AcctSvcrRef>HNCB{1}{2:06}</AcctSvcrRef>
        <BkTxCd><Prtry><Cd>TRF</Cd></Prtry></BkTxCd>
        <NtryDtls>
          <TxDtls>
            <Refs><EndToEndId>{4}</EndToEndId></Refs>
            <Amt Ccy="CNY">{0}</Amt>
          </TxDtls>
        </NtryDtls>
      </Ntry>
)",
                               line.amount, cycle, ++n, booking_date, line.end_to_end_id);
    }
    return fmt::format(R"(<?xml version="1.0" encoding="UTF-8"?>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.08">
  <BkToCstmrStmt>
    <GrpHdr><MsgId>STMT-{0}-{1}</MsgId><CreDtTm>{2}T18:00:00+08:00</CreDtTm></GrpHdr>
    <Stmt>
      <Id>STMT-{0}-{1}-1</Id>
      <Acct><Id><Othr><Id>{1}</Id></Othr></Id></Acct>
      <Bal>
        <Tp><CdOrPrtry><Cd>CLBD</Cd></CdOrPrtry></Tp>
        <Amt Ccy="CNY">{3}.{4:02}</Amt>
        <CdtDbtInd>DBIT</CdtDbtInd>
        <Dt><Dt>{2}</Dt></Dt>
      </Bal>
{5}    </Stmt>
  </BkToCstmrStmt>
</Document>
)",
                       cycle, pain.debtor_account, booking_date, total_fen / 100, total_fen % 100, entries);
}

}  // namespace

SettlementOutcome settle_live(const WorldPaths& world, const Island& island, const std::string& http_endpoint, const fs::path& token_file,
                              Progress& progress) {
    return settle_live(world, island, http_endpoint, token_file, progress, world.clearing_data());
}

SettlementOutcome settle_live(const WorldPaths& world, const Island& island, const std::string& http_endpoint, const fs::path& token_file,
                              Progress& progress, const fs::path& data) {
    SettlementOutcome outcome;
    const std::string settle = require_tool("coconut-settle");
    const fs::path out = world.dir / "settlement";

    // Today in Hainan (UTC+8); the cut-off is two seconds from now (every booking of the day is committed:
    // the terminals have finished), capped at 24:00 of the business date.
    const auto now = std::chrono::system_clock::now();
    const auto local = std::chrono::floor<std::chrono::seconds>(now + hainan_utc_offset);
    const auto day = std::chrono::floor<std::chrono::days>(local);
    const std::chrono::year_month_day date{day};
    const auto cutoff_second = std::min<std::uint32_t>(static_cast<std::uint32_t>((local - day).count()) + 2, st::seconds_per_day);
    outcome.date = fmt::format("{:04}-{:02}-{:02}", static_cast<int>(date.year()), static_cast<unsigned>(date.month()),
                               static_cast<unsigned>(date.day()));
    outcome.cutoff = st::format_cutoff(cutoff_second);
    outcome.cycle = st::cycle_id(date);
    outcome.cycle_dir = st::cycle_directory(out, outcome.cycle);

    const fs::path config = world.dir / "settlement.json";
    write_text(config,
               nlohmann::json{
                   {"initiator_name", "Coconut Card Clearing"},
                   {"cutoff", outcome.cutoff},
                   {"purse_float", {{"name", "Hainan Coconut Bank purse float"}, {"account", "FLOAT0001"}, {"agent_bic", "HNCBCNBJXXX"}}},
                   {"medical_fund", {{"name", "Hainan Social Insurance medical fund"}, {"account", "FUND0001"}, {"agent_bic", "HNSICNBJ"}}}}
                       .dump(1) +
                   "\n");

    // coconut-settle runs a cycle from cut-off + settling margin on (60 s by default: a booking stamped just
    // before the cut-off may still be committing). Here every terminal has stopped and the daemon has been
    // restarted since the last booking, so nothing can be in flight: a margin of 2 s, given explicitly.
    constexpr std::chrono::seconds margin{2};
    const auto cutoff_instant =
        std::chrono::time_point_cast<std::chrono::system_clock::duration>(day + std::chrono::seconds(cutoff_second) - hainan_utc_offset);
    const auto ready = cutoff_instant + margin + std::chrono::milliseconds(500);
    const auto wait_started = std::chrono::system_clock::now();
    // Said once also without a terminal (no progress bar there): a log shows why nothing happens for a moment.
    std::cerr << fmt::format("  … coconut-settle can run cycle {} from its cut-off {} (UTC+8) + {} s: waiting {:.0f} s\n", outcome.cycle,
                             outcome.cutoff, margin.count(), std::chrono::duration<double>(ready - wait_started).count());
    while (std::chrono::system_clock::now() < ready) {
        const double total = std::chrono::duration<double>(ready - wait_started).count();
        const double left = std::chrono::duration<double>(ready - std::chrono::system_clock::now()).count();
        progress.update(1.0 - left / total,
                        fmt::format("cut-off {} (UTC+8) + {} s settling margin: {:.0f} s", outcome.cutoff, margin.count(), left));
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    progress.done();
    outcome.waited_s = std::chrono::duration<double>(std::chrono::system_clock::now() - wait_started).count();

    const std::vector<std::string> run_argv{settle,
                                            "run",
                                            "--date",
                                            outcome.date,
                                            "--data",
                                            data.string(),
                                            "--config",
                                            config.string(),
                                            "--settling-margin",
                                            std::to_string(margin.count()),
                                            "--clearingd",
                                            "http://" + http_endpoint,
                                            "--token-file",
                                            token_file.string(),
                                            "--out",
                                            out.string()};
    const std::regex posted(R"((\d+) transfers posted now \((\d+) new, (\d+) already booked\))");
    std::smatch match;
    for (int run = 0; run < 2; ++run) {
        const std::string output = run_tool_or_fail(run_argv);
        write_text(world.logs() / fmt::format("settle-run-{}.log", run + 1), output);
        if (!std::regex_search(output, match, posted))
            fail(exit_codes::tool_failed, "coconut-settle run printed no posting line: " + output);
        (run == 0 ? outcome.transfers_posted : outcome.second_run_new) = std::stoull(match[2].str());
        if (run == 0) outcome.run_output = output;
    }

    // The postings as the daemon's ledger holds them (read-only while it serves): every payable back to zero,
    // the fees in fee income.
    {
        ledger::Options options;
        options.directory = data.string();
        options.read_only = true;
        auto book = ledger::Ledger::open(options);
        if (!book) fail(exit_codes::io_error, "settlement: " + book.error().message);
        const auto balance = [&](const ledger::Id& id) {
            auto account = book.value()->lookup_account(id);
            if (!account) fail(exit_codes::io_error, "ledger: " + account.error().message);
            if (!*account) return std::int64_t{0};
            return static_cast<std::int64_t>((*account)->credits_posted) - static_cast<std::int64_t>((*account)->debits_posted);
        };
        for (const auto& p : island.participants)
            for (const auto ledger_id : {clearing::ledgers::purse, clearing::ledgers::medical})
                if (const std::int64_t left = balance(clearing::payable_account(p.id, ledger_id)); left != 0)
                    outcome.payables_not_zero.push_back(fmt::format("{} ({}) ledger {}: {} fen", p.name, p.id, ledger_id, left));
        outcome.fees_fen =
            static_cast<std::uint64_t>(balance(clearing::purse_fee_income_account) + balance(clearing::medical_fee_income_account));
    }

    // Every pain.001 validated; the bank books each of its transfers in a camt.053 of the debtor account.
    outcome.files_valid = true;
    fs::create_directories(world.dir / "bank");
    std::vector<fs::path> pains;
    for (const auto& entry : fs::directory_iterator(outcome.cycle_dir))
        if (entry.path().filename().string().rfind("pain001", 0) == 0) pains.push_back(entry.path());
    std::sort(pains.begin(), pains.end());
    const fs::path schemas = st::default_schemas_dir();
    std::vector<std::string> reconcile_argv{settle, "reconcile", "--cycle", std::to_string(outcome.cycle), "--out", out.string()};
    for (const auto& pain : pains) {
        outcome.pain_files.push_back(pain);
        if (!st::validate_xml(read_text(pain), schemas / "pain.001.001.09.xsd").empty()) outcome.files_valid = false;
        const Instruction instruction = read_pain001(pain);
        outcome.payments += instruction.lines.size();
        for (const auto& line : instruction.lines) outcome.paid_fen += fen_of(line.amount);
        const std::string statement = camt053(instruction, outcome.cycle, outcome.date);
        if (const auto errors = st::validate_xml(statement, schemas / "camt.053.001.08.xsd"); !errors.empty())
            fail(exit_codes::check_failed, "the generated bank statement is not valid camt.053.001.08: " + errors);
        const fs::path camt = world.dir / "bank" / fmt::format("camt053-{}-{}.xml", outcome.cycle, instruction.debtor_account);
        write_text(camt, statement);
        outcome.camt_files.push_back(camt);
        reconcile_argv.push_back(camt.string());
    }
    if (fs::exists(outcome.cycle_dir / "summary.txt")) outcome.summary_text = read_text(outcome.cycle_dir / "summary.txt");

    // coconut-settle reconcile: exit 0 reconciled, 10 incomplete (the report is stored in cycle.json either way).
    const ToolRun reconciled = run_tool(reconcile_argv);
    write_text(world.logs() / "settle-reconcile.log", reconciled.output);
    if (reconciled.exit_code != 0 && reconciled.exit_code != 10)
        fail(exit_codes::tool_failed,
             fmt::format("coconut-settle reconcile failed (exit {}): {}", reconciled.exit_code, reconciled.output));
    auto record = st::load_cycle(out, outcome.cycle);
    if (!record || !*record || !(*record)->reconciliation) fail(exit_codes::tool_failed, "cycle.json holds no reconciliation");
    const auto& report = *(*record)->reconciliation;
    outcome.matched = report.matched.size();
    outcome.missing = report.missing.size();
    outcome.mismatched = report.mismatched.size();
    outcome.duplicates = report.duplicates.size();
    outcome.reconciled = reconciled.exit_code == 0 && report.complete();
    return outcome;
}

}  // namespace coconut::cli
