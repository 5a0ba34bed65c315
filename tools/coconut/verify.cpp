#include "verify.hpp"

#include "errors.hpp"
#include "process.hpp"

#include <coconut/clearing/plan.hpp>
#include <coconut/cos/card.hpp>
#include <coconut/ledger/ledger.hpp>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

namespace coconut::cli {

namespace {

using nlohmann::json;

// The daemon's own directory lock (coconut-clearingd: DIR/clearingd.lock): held while we read, so no daemon
// starts writing under us and we never read a directory a daemon is serving.
class DataLock {
public:
    explicit DataLock(const fs::path& dir) {
        fd_ = ::open((dir / "clearingd.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (fd_ < 0 || ::flock(fd_, LOCK_EX | LOCK_NB) != 0)
            fail(exit_codes::tool_failed, fmt::format("{} is in use by a running coconut-clearingd", dir.string()));
    }
    ~DataLock() {
        if (fd_ >= 0) ::close(fd_);
    }
    DataLock(const DataLock&) = delete;
    DataLock& operator=(const DataLock&) = delete;

private:
    int fd_ = -1;
};

std::int64_t signed_balance(const ledger::Ledger& book, const ledger::Id& id) {
    auto account = book.lookup_account(id);
    if (!account) fail(exit_codes::io_error, "ledger: " + account.error().message);
    if (!*account) return 0;
    const ledger::Account& a = **account;
    // Posted money only: a pending hold has not moved anything yet (it is posted or voided later).
    return static_cast<std::int64_t>(a.credits_posted) - static_cast<std::int64_t>(a.debits_posted);
}

clearing::Asn asn_of(const std::string& digits) {
    clearing::Asn asn{};
    const auto bcd = digits_to_bcd(digits);
    if (!bcd || bcd->size() != asn.size()) fail(exit_codes::bad_input, "bad ASN " + digits);
    std::copy(bcd->begin(), bcd->end(), asn.begin());
    return asn;
}

}  // namespace

std::pair<int, std::string> ledger_check(const fs::path& data_dir) {
    const ToolRun run = run_tool({require_tool("coconut-clearingd"), "check", "--data", data_dir.string()});
    return {run.exit_code, run.output};
}

Verification verify_island(const WorldPaths& world, const Island& island) { return verify_island(island, world.clearing_data()); }

Verification verify_island(const Island& island, const fs::path& data) {
    Verification v;
    const auto [check_code, check_output] = ledger_check(data);
    v.ledger_check_ok = check_code == 0;
    v.ledger_check_summary = check_output;

    // Shadows as the clearing's registry and ledger see them.
    const json cards =
        json::parse(run_tool_or_fail({require_tool("coconut-clearingd"), "admin", "--data", data.string(), "list", "cards"}));
    std::map<std::string, std::pair<std::int64_t, std::int64_t>> shadows;  // asn → (registry mirror, ledger)
    for (const auto& c : cards)
        shadows[c.at("asn")] = {c.at("shadow_balance_fen").get<std::int64_t>(), c.value("ledger_shadow_balance_fen", std::int64_t{-1})};
    const json risks = json::parse(run_tool_or_fail({require_tool("coconut-clearingd"), "admin", "--data", data.string(), "list", "risk"}));
    for (const auto& r : risks) {
        ++v.risk_flags;
        ++v.risk_by_kind[r.at("kind").get<std::string>()];
    }

    DataLock lock(data);
    ledger::Options options;
    options.directory = data.string();
    auto opened = ledger::Ledger::open(options);
    if (!opened) fail(exit_codes::io_error, "cannot open the ledger: " + opened.error().message);
    const ledger::Ledger& book = *opened.value();

    MoneyLine card_line{"cards (balances on the cards)", 0, 0};
    // Cardholders' money the clearing holds off the cards: tourist deposits (18) and refunds owed (17).
    MoneyLine deposits{"card deposits (tourist cards)", 0, 0};
    MoneyLine refunds{"refunds owed to cardholders", 0, 0};
    // A lost card's balance carried to its replacement, not collected yet (15), and its late spending (16).
    MoneyLine carried{"carried balances (replacement cards)", 0, 0};
    for (const auto& card : island.cards) {
        auto image = cos::VirtualCard::open(card.image);
        if (!image) fail(exit_codes::bad_input, image.error().message);
        const std::int64_t on_card = image.value()->snapshot().balance_fen;
        const auto found = shadows.find(card.asn);
        ++v.cards_checked;
        if (found == shadows.end()) {
            v.card_mismatches.push_back(card.asn + ": not registered at the clearing");
            continue;
        }
        if (found->second.first != on_card || found->second.second != on_card)
            v.card_mismatches.push_back(
                fmt::format("{}: card {}, shadow {} (ledger {})", card.asn, on_card, found->second.first, found->second.second));
        card_line.purse_fen += on_card;
        const clearing::Asn asn = asn_of(card.asn);
        card_line.medical_fen += signed_balance(book, clearing::medical_account(asn));
        deposits.purse_fen += signed_balance(book, clearing::card_deposit_account(asn));
        refunds.purse_fen += signed_balance(book, clearing::refund_payable_account(asn));
        carried.purse_fen += signed_balance(book, clearing::carried_holding_account(asn));
    }
    v.money.push_back(card_line);
    v.money.push_back(deposits);
    v.money.push_back(refunds);
    v.money.push_back(carried);
    v.money.push_back({"lost cards' late spending", signed_balance(book, clearing::lost_late_spending_account), 0});
    for (const auto& p : island.participants)
        v.money.push_back({fmt::format("{} ({}, {})", p.name, p.kind, p.id),
                           signed_balance(book, clearing::payable_account(p.id, clearing::ledgers::purse)),
                           signed_balance(book, clearing::payable_account(p.id, clearing::ledgers::medical))});
    v.money.push_back({"purse float / medical fund", signed_balance(book, clearing::purse_float_account),
                       signed_balance(book, clearing::medical_fund_account)});
    v.money.push_back({"fee income", signed_balance(book, clearing::purse_fee_income_account),
                       signed_balance(book, clearing::medical_fee_income_account)});
    v.money.push_back(
        {"suspense", signed_balance(book, clearing::purse_suspense_account), signed_balance(book, clearing::medical_suspense_account)});
    for (const auto& line : v.money) {
        v.purse_total_fen += line.purse_fen;
        v.medical_total_fen += line.medical_fen;
    }
    return v;
}

std::pair<std::size_t, std::size_t> missing_debits(const Island& island, const fs::path& transaction_log, const fs::path& data) {
    std::map<std::string, TerminalId> psam_of;
    for (const auto& t : island.terminals) {
        TerminalId id{};
        const auto bcd = digits_to_bcd(t.psam_terminal_id);
        if (!bcd || bcd->size() != id.size()) fail(exit_codes::bad_input, "bad PSAM terminal id " + t.psam_terminal_id);
        std::copy(bcd->begin(), bcd->end(), id.begin());
        psam_of[t.terminal_id] = id;
    }
    DataLock lock(data);
    ledger::Options options;
    options.directory = data.string();
    options.read_only = true;
    auto opened = ledger::Ledger::open(options);
    if (!opened) fail(exit_codes::io_error, "cannot open the ledger in " + data.string() + ": " + opened.error().message);
    std::ifstream in(transaction_log);
    if (!in) fail(exit_codes::io_error, "cannot read " + transaction_log.string());
    std::size_t debits = 0, missing = 0;
    // "TIME KIND… TERMINAL ASN TYPE ATC AMOUNT BEFORE AFTER SERIAL LINE STATION ENTRY RECOVERED" (simulate.cpp);
    // KIND may hold a space, so the fields are taken from the end.
    for (std::string line; std::getline(in, line);) {
        std::vector<std::string> fields;
        std::istringstream words(line);
        for (std::string word; words >> word;) fields.push_back(word);
        if (fields.empty() || fields[0] == "clinic-medical" || fields.size() < 14) continue;
        const std::size_t n = fields.size();
        if (fields[1] == "top-up") continue;
        const auto psam = psam_of.find(fields[n - 12]);
        if (psam == psam_of.end()) fail(exit_codes::bad_input, "transaction log: unknown terminal " + fields[n - 12]);
        const auto id = clearing::offline_purchase_transfer(asn_of(fields[n - 11]), psam->second,
                                                            static_cast<std::uint32_t>(std::stoul(fields[n - 5])));
        auto found = opened.value()->lookup_transfer(id);
        if (!found) fail(exit_codes::io_error, "ledger: " + found.error().message);
        ++debits;
        if (!*found) ++missing;
    }
    return {debits, missing};
}

}  // namespace coconut::cli
