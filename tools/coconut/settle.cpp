#include "settle.hpp"

#include "errors.hpp"

#include <coconut/clearing/clearing.hpp>
#include <coconut/durable_file.hpp>
#include <coconut/ledger/ledger.hpp>
#include <coconut/settlement/settlement.hpp>

#include <fmt/format.h>
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <libxml/xpath.h>

#include <chrono>
#include <fstream>
#include <map>
#include <sstream>

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
    if (const auto error = write_file_atomically(path, ByteView(reinterpret_cast<const std::uint8_t*>(text.data()), text.size()));
        !error.empty())
        fail(exit_codes::io_error, error);
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
    const auto accounts = select(context, xmlDocGetRootElement(doc), "//*[local-name()='DbtrAcct']//*[local-name()='Othr']/*[local-name()='Id']");
    out.debtor_account = accounts.empty() ? "UNKNOWN" : accounts.front();
    const auto ids = select(context, xmlDocGetRootElement(doc), "//*[local-name()='CdtTrfTxInf']/*[local-name()='PmtId']/*[local-name()='EndToEndId']");
    const auto amounts = select(context, xmlDocGetRootElement(doc), "//*[local-name()='CdtTrfTxInf']/*[local-name()='Amt']/*[local-name()='InstdAmt']");
    xmlXPathFreeContext(context);
    xmlFreeDoc(doc);
    if (ids.size() != amounts.size()) fail(exit_codes::bad_input, file.string() + ": transfers without an amount");
    for (std::size_t i = 0; i < ids.size(); ++i) out.lines.push_back({ids[i], amounts[i]});
    return out;
}

// The bank's statement of the debtor account: one booked debit per credit transfer, with its own reference.
std::string camt053(const Instruction& pain, std::uint32_t cycle, const std::string& booking_date) {
    std::string entries;
    std::uint64_t total_fen = 0;
    std::size_t n = 0;
    for (const auto& line : pain.lines) {
        const auto dot = line.amount.find('.');
        total_fen += std::stoull(line.amount.substr(0, dot)) * 100 + (dot == std::string::npos ? 0 : std::stoull(line.amount.substr(dot + 1)));
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

SettlementOutcome settle_and_reconcile(const WorldPaths& world, const Island& island) {
    SettlementOutcome outcome;
    auto lock = st::DirectoryLock::acquire(world.clearing_data());
    if (!lock) fail(exit_codes::tool_failed, "settlement: " + lock.error().message);
    ledger::Options ledger_options;
    ledger_options.directory = world.clearing_data().string();
    auto book = ledger::Ledger::open(ledger_options);
    if (!book) fail(exit_codes::io_error, "settlement: " + book.error().message);

    // Today in Hainan (UTC+8), cut-off at the end of the current minute.
    const auto now = std::chrono::system_clock::now();
    const auto local = std::chrono::floor<std::chrono::minutes>(now + std::chrono::hours(8));
    const auto day = std::chrono::floor<std::chrono::days>(local);
    const st::Date date{day};
    const auto minute_of_day = static_cast<std::uint32_t>((local - day).count()) + 1;

    st::RunOptions options;
    options.date = date;
    options.out = world.dir / "settlement";
    options.config.purse_float = {"Hainan Coconut Bank purse float", "FLOAT0001", "HNCBCNBJXXX"};
    options.config.medical_fund = {"Hainan Social Insurance medical fund", "FUND0001", "HNSICNBJ"};
    options.config.cutoff_minutes = minute_of_day;
    const auto window = st::cycle_window(options.out, date, minute_of_day);
    if (!window) fail(exit_codes::tool_failed, "settlement: " + window.error().message);
    options.now_ns = window->end_ns + static_cast<std::uint64_t>(st::settling_margin.count()) * 1'000'000'000ull;

    std::vector<clearing::Participant> participants;
    for (const auto& p : island.participants) participants.push_back({p.id, p.name, p.kind, p.bank_account, p.fee_rate_bp});
    auto poster = st::make_direct_poster(*book.value());
    auto run = st::run_cycle(*book.value(), participants, poster.get(), options);
    if (!run) fail(exit_codes::tool_failed, "settlement: " + run.error().message);
    outcome.cycle = run->record.cycle;
    outcome.cycle_dir = st::cycle_directory(options.out, outcome.cycle);
    outcome.transfers_posted = run->record.transfers_posted;
    for (const auto& p : run->positions.participants) outcome.fees_fen += p.purse.fee_fen + p.medical.fee_fen;

    // Every pain.001 validated; the bank books each of its transfers.
    outcome.files_valid = true;
    const std::string booking_date = fmt::format("{:04}-{:02}-{:02}", static_cast<int>(date.year()),
                                                 static_cast<unsigned>(date.month()), static_cast<unsigned>(date.day()));
    fs::create_directories(world.dir / "bank");
    for (const auto& file : run->files) {
        if (file.name.rfind("pain001", 0) != 0) continue;
        const fs::path pain = outcome.cycle_dir / file.name;
        outcome.pain_files.push_back(pain);
        if (!st::validate_xml(file.contents, options.schemas_dir / "pain.001.001.09.xsd").empty()) outcome.files_valid = false;
        const Instruction instruction = read_pain001(pain);
        outcome.payments += instruction.lines.size();
        const std::string statement = camt053(instruction, outcome.cycle, booking_date);
        if (const auto errors = st::validate_xml(statement, options.schemas_dir / "camt.053.001.08.xsd"); !errors.empty())
            fail(exit_codes::check_failed, "the generated bank statement is not valid camt.053.001.08: " + errors);
        const fs::path camt = world.dir / "bank" / fmt::format("camt053-{}-{}.xml", outcome.cycle, instruction.debtor_account);
        write_text(camt, statement);
        outcome.camt_files.push_back(camt);
    }
    for (const auto& p : run->positions.participants) {
        if (p.purse.net_fen > 0) outcome.paid_fen += static_cast<std::uint64_t>(p.purse.net_fen);
        if (p.medical.net_fen > 0) outcome.paid_fen += static_cast<std::uint64_t>(p.medical.net_fen);
    }
    if (fs::exists(outcome.cycle_dir / "summary.txt")) outcome.summary_text = read_text(outcome.cycle_dir / "summary.txt");

    auto reconciled = st::reconcile(options.out, outcome.cycle, outcome.camt_files, options.schemas_dir);
    if (!reconciled) fail(exit_codes::check_failed, "reconciliation: " + reconciled.error().message);
    outcome.matched = reconciled->matched.size();
    outcome.missing = reconciled->missing.size();
    outcome.mismatched = reconciled->mismatched.size();
    outcome.duplicates = reconciled->duplicates.size();
    outcome.reconciled = reconciled->complete();
    return outcome;
}

}  // namespace coconut::cli
