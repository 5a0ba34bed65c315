// Reconciliation: the bank's camt.053.001.08 statements / camt.054.001.08 notifications against the
// payments of a posted cycle (summary.json), matched by EndToEndId and amount.
#include "internal.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <libxml/parser.h>
#include <libxml/tree.h>

#include <map>
#include <memory>
#include <set>

namespace coconut::settlement {

namespace {

using nlohmann::json;

constexpr std::string_view camt053_namespace = "urn:iso:std:iso:20022:tech:xsd:camt.053.001.08";
constexpr std::string_view camt054_namespace = "urn:iso:std:iso:20022:tech:xsd:camt.054.001.08";
// A bank file above this is not a day's statement of two settlement accounts.
constexpr std::size_t camt_file_bytes_max = 256u << 20;

using Document = std::unique_ptr<xmlDoc, decltype(&xmlFreeDoc)>;

Error invalid(const std::filesystem::path& path, std::string what) {
    return Error{ErrorCode::invalid_file, fmt::format("{}: {}; nothing was changed", path.string(), what)};
}

// One booked transaction as the bank reports it.
struct Booking {
    std::string end_to_end_id;                // empty when the bank gave none
    std::optional<std::uint64_t> amount_fen;  // nullopt: not CNY or not representable in fen
    bool debit = true;
    std::string booking_key;  // the bank's reference (AcctSvcrRef) or, without one, unique per entry
};

std::string_view name_of(const xmlNode* node) { return reinterpret_cast<const char*>(node->name); }

const xmlNode* child(const xmlNode* node, std::string_view name) {
    for (const xmlNode* c = node ? node->children : nullptr; c != nullptr; c = c->next) {
        if (c->type == XML_ELEMENT_NODE && name_of(c) == name) return c;
    }
    return nullptr;
}

std::vector<const xmlNode*> children(const xmlNode* node, std::string_view name) {
    std::vector<const xmlNode*> out;
    for (const xmlNode* c = node ? node->children : nullptr; c != nullptr; c = c->next) {
        if (c->type == XML_ELEMENT_NODE && name_of(c) == name) out.push_back(c);
    }
    return out;
}

std::string text_of(const xmlNode* node) {
    if (node == nullptr) return {};
    xmlChar* content = xmlNodeGetContent(node);
    std::string text = content ? reinterpret_cast<const char*>(content) : "";
    xmlFree(content);
    return text;
}

// "123.45" / "7" / "0.5" → fen; nullopt for more than 2 decimals or out of range.
std::optional<std::uint64_t> parse_amount_fen(std::string_view text) {
    const auto dot = text.find('.');
    const std::string_view whole = text.substr(0, dot);
    const std::string_view fraction = dot == std::string_view::npos ? std::string_view{} : text.substr(dot + 1);
    if (whole.empty() || whole.size() > 15 || fraction.size() > 2) return std::nullopt;
    std::uint64_t fen = 0;
    for (char c : whole) {
        if (c < '0' || c > '9') return std::nullopt;
        fen = fen * 10 + static_cast<std::uint64_t>(c - '0');
    }
    std::uint64_t cents = 0;
    for (std::size_t i = 0; i < 2; ++i) {
        const char c = i < fraction.size() ? fraction[i] : '0';
        if (c < '0' || c > '9') return std::nullopt;
        cents = cents * 10 + static_cast<std::uint64_t>(c - '0');
    }
    return fen * 100 + cents;
}

std::optional<std::uint64_t> amount_of(const xmlNode* amount) {
    if (amount == nullptr) return std::nullopt;
    xmlChar* currency = xmlGetProp(amount, reinterpret_cast<const xmlChar*>("Ccy"));
    const bool cny = currency != nullptr && std::string_view(reinterpret_cast<const char*>(currency)) == "CNY";
    xmlFree(currency);
    if (!cny) return std::nullopt;
    return parse_amount_fen(text_of(amount));
}

// The bookings of one statement / notification: one per TxDtls (one per entry without details).
void collect_bookings(const xmlNode* report, const std::string& file_tag, std::vector<Booking>& out) {
    std::size_t index = 0;
    for (const xmlNode* entry : children(report, "Ntry")) {
        ++index;
        const std::string entry_ref = text_of(child(entry, "AcctSvcrRef"));
        const bool debit = text_of(child(entry, "CdtDbtInd")) == "DBIT";
        std::vector<const xmlNode*> details;
        for (const xmlNode* d : children(entry, "NtryDtls")) {
            for (const xmlNode* tx : children(d, "TxDtls")) details.push_back(tx);
        }
        if (details.empty()) {
            out.push_back(
                {"", amount_of(child(entry, "Amt")), debit, entry_ref.empty() ? fmt::format("{}#{}", file_tag, index) : entry_ref});
            continue;
        }
        std::size_t sub = 0;
        for (const xmlNode* tx : details) {
            ++sub;
            const xmlNode* refs = child(tx, "Refs");
            // The transaction's own amount; the entry's when it carries a single transaction.
            const xmlNode* amount = child(tx, "Amt");
            if (amount == nullptr && details.size() == 1) amount = child(entry, "Amt");
            const std::string tx_ref = text_of(child(refs, "AcctSvcrRef"));
            std::string key = !tx_ref.empty()      ? tx_ref
                              : !entry_ref.empty() ? fmt::format("{}/{}", entry_ref, sub)
                                                   : fmt::format("{}#{}/{}", file_tag, index, sub);
            const std::string direction = text_of(child(tx, "CdtDbtInd"));
            out.push_back(
                {text_of(child(refs, "EndToEndId")), amount_of(amount), direction.empty() ? debit : direction == "DBIT", std::move(key)});
        }
    }
}

Result<std::vector<Booking>> read_camt(const std::filesystem::path& path, const std::filesystem::path& schemas_dir) {
    std::error_code ec;
    const auto size = std::filesystem::file_size(path, ec);
    if (ec) return Unexpected{invalid(path, "cannot read: " + ec.message())};
    if (size > camt_file_bytes_max) return Unexpected{invalid(path, "larger than 256 MiB")};
    COCONUT_TRY(text, read_text_file(path));
    if (auto refused = xml_input_refusal(text)) return Unexpected{invalid(path, *refused)};
    Document document(xmlReadMemory(text.data(), static_cast<int>(text.size()), path.c_str(), nullptr,
                                    XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING),
                      xmlFreeDoc);
    if (!document) return Unexpected{invalid(path, "not well-formed XML")};
    const xmlNode* root = xmlDocGetRootElement(document.get());
    const std::string_view ns = root && root->ns && root->ns->href ? reinterpret_cast<const char*>(root->ns->href) : "";
    std::string schema;
    if (ns == camt053_namespace) {
        schema = "camt.053.001.08.xsd";
    } else if (ns == camt054_namespace) {
        schema = "camt.054.001.08.xsd";
    } else {
        return Unexpected{invalid(path, fmt::format("not a camt.053.001.08 or camt.054.001.08 document (namespace \"{}\")", ns))};
    }
    const std::string problems = validate_xml(text, schemas_dir / schema);
    if (!problems.empty()) return Unexpected{invalid(path, fmt::format("not valid against {}: {}", schema, problems))};
    std::vector<Booking> bookings;
    const xmlNode* body = root->children;
    while (body != nullptr && body->type != XML_ELEMENT_NODE) body = body->next;
    const std::string_view report_name = ns == camt053_namespace ? "Stmt" : "Ntfctn";
    for (const xmlNode* report : children(body, report_name)) collect_bookings(report, path.filename().string(), bookings);
    return bookings;
}

// EndToEndId → amount of every payment of the cycle, from its summary.json (verified against the
// digest recorded when it was written).
Result<std::map<std::string, std::uint64_t>> expected_payments(const std::filesystem::path& out, const CycleRecord& record) {
    const auto path = cycle_directory(out, record.cycle) / "summary.json";
    COCONUT_TRY(text, read_text_file(path));
    const auto recorded = record.files.find("summary.json");
    if (recorded == record.files.end() || recorded->second != sha256_hex(text)) {
        return Unexpected{Error{ErrorCode::conflict, fmt::format("{} differs from the file written for the cycle", path.string())}};
    }
    std::map<std::string, std::uint64_t> expected;
    const json summary = json::parse(text, nullptr, false);
    if (summary.is_discarded()) return Unexpected{Error{ErrorCode::storage, path.string() + " does not parse"}};
    for (const auto& p : summary.at("payments"))
        expected[p.at("end_to_end_id").get<std::string>()] = p.at("amount_fen").get<std::uint64_t>();
    return expected;
}

ReconciliationReport match(const std::map<std::string, std::uint64_t>& expected, const std::vector<Booking>& bookings) {
    ReconciliationReport report;
    std::map<std::string, std::set<std::string>> booked_keys;  // EndToEndId → distinct bank bookings
    std::map<std::string, std::uint64_t> booked_amount;
    std::set<std::string> amount_unreadable;
    for (const Booking& b : bookings) {
        const auto found = expected.find(b.end_to_end_id);
        if (found == expected.end() || !b.debit) {
            report.unknown.push_back(b.end_to_end_id.empty() ? "(no EndToEndId) " + b.booking_key : b.end_to_end_id);
            continue;
        }
        // The same booking may be reported twice (a camt.054 during the day, the camt.053 at night):
        // one payment is one bank reference.
        booked_keys[b.end_to_end_id].insert(b.booking_key);
        if (!b.amount_fen) amount_unreadable.insert(b.end_to_end_id);
        booked_amount[b.end_to_end_id] = b.amount_fen.value_or(0);
    }
    for (const auto& [id, amount] : expected) {
        const auto keys = booked_keys.find(id);
        if (keys == booked_keys.end()) {
            report.missing.push_back(id);
        } else if (keys->second.size() > 1) {
            report.duplicates.push_back(id);
        } else if (amount_unreadable.count(id) != 0 || booked_amount[id] != amount) {
            report.mismatched.push_back({id, amount, booked_amount[id]});
        } else {
            report.matched.push_back(id);
        }
    }
    return report;
}

}  // namespace

Result<ReconciliationReport> reconcile(const std::filesystem::path& out, std::uint32_t cycle,
                                       const std::vector<std::filesystem::path>& camt_files, const std::filesystem::path& schemas_dir) {
    COCONUT_TRY(stored, load_cycle(out, cycle));
    if (!stored) return Unexpected{Error{ErrorCode::bad_input, fmt::format("cycle {} has not been run", cycle)}};
    CycleRecord record = std::move(*stored);
    if (record.state < CycleState::posted) {
        return Unexpected{
            Error{ErrorCode::wrong_state, fmt::format("cycle {} is {}: reconcile after it was posted", cycle, to_string(record.state))}};
    }
    if (camt_files.empty()) return Unexpected{Error{ErrorCode::bad_input, "no camt file given"}};
    // Every file is parsed and validated before anything is matched or stored.
    std::vector<Booking> bookings;
    for (const auto& path : camt_files) {
        COCONUT_TRY(read, read_camt(path, schemas_dir));
        bookings.insert(bookings.end(), read.begin(), read.end());
    }
    COCONUT_TRY(expected, expected_payments(out, record));
    ReconciliationReport report = match(expected, bookings);
    record.reconciliation = report;
    if (report.complete()) record.state = CycleState::reconciled;
    if (auto saved = save_cycle(out, record); !saved) return Unexpected{saved.error()};
    if (auto written = write_report_html(out, cycle); !written) return Unexpected{written.error()};  // its status line
    return report;
}

}  // namespace coconut::settlement
