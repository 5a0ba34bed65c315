#include "refund_reference.hpp"

#include <coconut/core/bytes.hpp>

#include <fmt/format.h>

#include <fstream>
#include <limits>

namespace coconut::terminal_cli {

using nlohmann::json;

json to_json(const sdk::ClinicRefundReference& r) {
    json out{{"card", bcd_to_digits(r.asn)}, {"hold", nullptr},          {"medical_fen", r.medical_fen},
             {"purchase", nullptr},          {"purse_fen", r.purse_fen}, {"cash_fen", r.cash_fen}};
    if (r.hold) out["hold"] = {{"terminal_id", r.hold->terminal_id}, {"batch", r.hold->batch_number}, {"stan", r.hold->stan}};
    if (r.purchase)
        out["purchase"] = {{"psam_terminal_id", bcd_to_digits(r.purchase->terminal_id)}, {"terminal_serial", r.purchase->terminal_serial}};
    return out;
}

std::string to_text(const sdk::ClinicRefundReference& r) {
    std::string text = fmt::format("refund reference (keep with the receipt)\n  card            {}", bcd_to_digits(r.asn));
    if (r.hold)
        text += fmt::format("\n  medical hold    terminal {} batch {:06} STAN {:06}, {} fen", r.hold->terminal_id, r.hold->batch_number,
                            r.hold->stan, r.medical_fen);
    if (r.purchase)
        text += fmt::format("\n  purse purchase  PSAM {} serial {}, {} fen", bcd_to_digits(r.purchase->terminal_id),
                            r.purchase->terminal_serial, r.purse_fen);
    if (r.cash_fen > 0) text += fmt::format("\n  cash            {} fen", r.cash_fen);
    return text;
}

namespace {

Result<std::uint32_t, std::string> number(const json& object, const char* name) {
    const auto found = object.find(name);
    if (found == object.end()) return Unexpected<std::string>{fmt::format("\"{}\" is missing", name)};
    if (!found->is_number_unsigned() || found->get<std::uint64_t>() > std::numeric_limits<std::uint32_t>::max())
        return Unexpected<std::string>{fmt::format("\"{}\" is not a whole number of at most 4294967295", name)};
    return found->get<std::uint32_t>();
}

Result<std::string, std::string> text(const json& object, const char* name) {
    const auto found = object.find(name);
    if (found == object.end() || !found->is_string())
        return Unexpected<std::string>{fmt::format("\"{}\" is missing or not a string", name)};
    return found->get<std::string>();
}

// "digits" of exactly N digits into BCD.
template <std::size_t N>
Result<std::array<std::uint8_t, N>, std::string> bcd(const std::string& digits, const char* name) {
    auto bytes = digits_to_bcd(digits);
    if (digits.size() != 2 * N || !bytes)
        return Unexpected<std::string>{fmt::format("\"{}\" '{}' is not {} decimal digits", name, digits, 2 * N)};
    std::array<std::uint8_t, N> out{};
    std::copy(bytes->begin(), bytes->end(), out.begin());
    return out;
}

Result<std::optional<sdk::ClinicHoldReference>, std::string> hold_of(const json& r) {
    const auto hold = r.find("hold");
    if (hold == r.end() || hold->is_null()) return std::optional<sdk::ClinicHoldReference>{};
    if (!hold->is_object()) return Unexpected<std::string>{"\"hold\" is not an object"};
    sdk::ClinicHoldReference out;
    auto terminal = text(*hold, "terminal_id");
    auto batch = number(*hold, "batch");
    auto stan = number(*hold, "stan");
    if (!terminal || !batch || !stan)
        return Unexpected<std::string>{"hold: " + (!terminal ? terminal.error() : !batch ? batch.error() : stan.error())};
    return std::optional<sdk::ClinicHoldReference>{sdk::ClinicHoldReference{*terminal, *batch, *stan}};
}

Result<std::optional<iso8583::PurchaseReference>, std::string> purchase_of(const json& r) {
    const auto purchase = r.find("purchase");
    if (purchase == r.end() || purchase->is_null()) return std::optional<iso8583::PurchaseReference>{};
    if (!purchase->is_object()) return Unexpected<std::string>{"\"purchase\" is not an object"};
    auto digits = text(*purchase, "psam_terminal_id");
    if (!digits) return Unexpected<std::string>{"purchase: " + digits.error()};
    auto terminal = bcd<6>(*digits, "psam_terminal_id");
    auto serial = number(*purchase, "terminal_serial");
    if (!terminal || !serial) return Unexpected<std::string>{"purchase: " + (!terminal ? terminal.error() : serial.error())};
    return std::optional<iso8583::PurchaseReference>{iso8583::PurchaseReference{*terminal, *serial}};
}

}  // namespace

Result<sdk::ClinicRefundReference, std::string> reference_from_json(const json& document) {
    const json& r = document.is_object() && document.contains("refund_reference") ? document["refund_reference"] : document;
    if (!r.is_object()) return Unexpected<std::string>{"not a refund reference (a JSON object, or clinic-pay --json output)"};
    sdk::ClinicRefundReference out;
    auto card = text(r, "card");
    if (!card) return Unexpected<std::string>{card.error()};
    auto asn = bcd<10>(*card, "card");
    if (!asn) return Unexpected<std::string>{asn.error()};
    out.asn = *asn;
    auto hold = hold_of(r);
    if (!hold) return Unexpected<std::string>{hold.error()};
    out.hold = *hold;
    auto purchase = purchase_of(r);
    if (!purchase) return Unexpected<std::string>{purchase.error()};
    out.purchase = *purchase;
    for (auto [name, field] : {std::pair{"medical_fen", &out.medical_fen}, {"purse_fen", &out.purse_fen}, {"cash_fen", &out.cash_fen}}) {
        auto n = number(r, name);
        if (!n) return Unexpected<std::string>{n.error()};
        *field = *n;
    }
    return out;
}

Result<sdk::ClinicRefundReference, std::string> read_receipt(const std::filesystem::path& path) {
    std::ifstream in(path);
    if (!in) return Unexpected<std::string>{fmt::format("{}: cannot read the receipt", path.string())};
    json document = json::parse(in, nullptr, false);
    if (document.is_discarded())
        return Unexpected<std::string>{fmt::format("{}: not JSON (the receipt is clinic-pay --json output)", path.string())};
    auto reference = reference_from_json(document);
    if (!reference) return Unexpected<std::string>{fmt::format("{}: {}", path.string(), reference.error())};
    return reference;
}

}  // namespace coconut::terminal_cli
