// libFuzzer target for the bank's files read by `coconut-settle reconcile` (settlement.hpp reconcile):
// camt.053.001.08 statements and camt.054.001.08 notifications, through the whole path — the refusal
// of a DOCTYPE or a non-UTF-8 document before any parser sees it (xml_input_refusal), libxml2's parse,
// the XSD validation, the bookings read from the tree and their matching against the cycle's payments.
//
// Input: the file. The cycle (posted, three payments) is written once per process.
// Properties: reconcile never crashes; it refuses the file (invalid_file, with a message) or reports
// every expected payment exactly once — matched, missing, mismatched or a duplicate.
#include <coconut/settlement/settlement.hpp>

#include "../../tests/settlement/camt_samples.hpp"

#include <fuzz_support.hpp>

#include <nlohmann/json.hpp>

#include <set>

namespace {

using namespace coconut;
using namespace coconut::settlement;

constexpr std::string_view target = "fuzz_camt";
constexpr std::uint32_t cycle = 20260310;

struct ExpectedPayment {
    const char* end_to_end_id;
    std::uint64_t amount_fen;
};
constexpr ExpectedPayment cycle_payments[] = {{"CC20260310-1001-P", 831}, {"CC20260310-1002-P", 1514}, {"CC20260310-1003-M", 6467}};

fuzz::ScratchDir& scratch() {
    static fuzz::ScratchDir dir(target);
    return dir;
}
std::filesystem::path out() { return scratch() / "out"; }

// The cycle as run_cycle leaves it once posted: cycle.json naming summary.json by its digest.
void write_posted_cycle() {
    nlohmann::json summary = {{"cycle", cycle}, {"payments", nlohmann::json::array()}};
    for (const ExpectedPayment& p : cycle_payments)
        summary["payments"].push_back({{"end_to_end_id", p.end_to_end_id}, {"amount_fen", p.amount_fen}});
    const std::string text = summary.dump(2);
    std::filesystem::create_directories(cycle_directory(out(), cycle));
    fuzz::write_file(cycle_directory(out(), cycle) / "summary.json", fuzz::bytes_of(text));
    CycleRecord record;
    record.cycle = cycle;
    record.state = CycleState::posted;
    record.files["summary.json"] = sha256_hex(text);
    if (!save_cycle(out(), record)) fuzz::fail(target, "cannot write the cycle");
}

void write_seeds(const std::filesystem::path& dir) {
    using settle_test::camt053;
    using settle_test::camt054;
    const auto seed = [&](std::string_view name, const std::string& text) { fuzz::write_seed(dir, name, fuzz::bytes_of(text)); };
    seed("statement-complete",
         camt053({{"CC20260310-1001-P", "8.31", "B1"}, {"CC20260310-1002-P", "15.14", "B2"}, {"CC20260310-1003-M", "64.67", "B3"}}));
    seed("statement-mismatch-unknown", camt053({{"CC20260310-1001-P", "8.13", "B1"}, {"CC20260310-9999-P", "1.00", "B9"}}));
    seed("statement-duplicate", camt053({{"CC20260310-1002-P", "15.14", "B2"}, {"CC20260310-1002-P", "15.14", "B7"}}));
    seed("notification", camt054({{"CC20260310-1003-M", "64.67", "M1"}}));
    seed("statement-empty", camt053({}));
    std::string doctype = camt053({{"CC20260310-1001-P", "8.31", "B1"}});
    doctype.insert(doctype.find('\n') + 1, "<!DOCTYPE Document [<!ENTITY a \"aaaa\"><!ENTITY b \"&a;&a;&a;\">]>\n");
    seed("doctype-refused", doctype);
    seed("utf16-refused", std::string("\xFF\xFE<\0?\0x\0m\0l\0", 12));
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    fuzz::write_seeds_if_requested(write_seeds);
    write_posted_cycle();
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const auto file = scratch() / "bank.xml";
    fuzz::write_file(file, {data, size});
    auto report = reconcile(out(), cycle, {file});
    if (!report) {
        if (report.error().code != ErrorCode::invalid_file || report.error().message.empty())
            fuzz::fail(target, "a refusal other than invalid_file: " + report.error().message);
        return 0;
    }
    std::multiset<std::string> reported(report->matched.begin(), report->matched.end());
    reported.insert(report->missing.begin(), report->missing.end());
    reported.insert(report->duplicates.begin(), report->duplicates.end());
    for (const auto& m : report->mismatched) reported.insert(m.end_to_end_id);
    std::multiset<std::string> expected;
    for (const ExpectedPayment& p : cycle_payments) expected.insert(p.end_to_end_id);
    if (reported != expected) fuzz::fail(target, "a payment reported twice or not at all");
    return 0;
}
