#include "output.hpp"

#include "exit_codes.hpp"

#include <fmt/format.h>

#include <cstdio>

namespace coconut::terminal_cli {

std::string_view type_name(std::uint8_t type) {
    switch (type) {
        case crypto::type_ed_load: return "ed_load";
        case crypto::type_ep_load: return "ep_load";
        case crypto::type_ed_purchase: return "ed_purchase";
        case crypto::type_ep_purchase: return "ep_purchase";
        case crypto::type_capp_purchase: return "capp_purchase";
        case 0: return "medical_account";  // a clinic hold / completion / reversal: no purse transaction
        default: return "unknown";
    }
}

std::string_view to_string(sdk::TapKind kind) {
    switch (kind) {
        case sdk::TapKind::none: return "none";
        case sdk::TapKind::flat: return "flat";
        case sdk::TapKind::entry: return "entry";
        case sdk::TapKind::exit: return "exit";
        case sdk::TapKind::unfinished: return "unfinished";
    }
    return "none";
}

std::string yuan(std::uint64_t fen) { return fmt::format("{}.{:02}", fen / 100, fen % 100); }

nlohmann::json to_json(const sdk::TransactionRecord& r, std::optional<std::uint64_t> sequence) {
    const std::string asn = r.asn_digits();
    nlohmann::json out;
    if (sequence) out["sequence"] = *sequence;
    out["asn"] = asn;
    out["card_number"] = asn.size() >= 16 ? asn.substr(asn.size() - 16) : asn;  // docs/DESIGN.md §4.2: rightmost 16 digits
    out["issuer_id"] = to_hex(r.issuer_id);
    out["type"] = fmt::format("{:02X}", r.type);
    out["type_name"] = type_name(r.type);
    out["atc"] = r.atc;
    out["amount_fen"] = r.amount_fen;
    out["balance_before_fen"] = r.balance_before_fen;
    out["balance_after_fen"] = r.balance_after_fen;
    out["terminal_id"] = bcd_to_digits(r.terminal_id);
    out["terminal_serial"] = r.terminal_serial;
    out["date"] = bcd_to_digits(r.when.date);
    out["time"] = bcd_to_digits(r.when.time);
    out["date_time"] = sdk::format_date_time(r.when);
    out["tac"] = to_hex(r.tac);
    out["mac2"] = to_hex(r.mac2);
    out["flags"] = {{"recovered", r.recovered}, {"unproven", r.unproven}, {"mac2_unverified", r.mac2_unverified}};
    out["tap_kind"] = to_string(r.tap_kind);
    out["line"] = r.line;
    out["station"] = r.station;
    out["vehicle"] = r.vehicle;
    out["entry_station"] = r.entry_station;
    out["intent_sequence"] = r.intent_sequence;
    out["link"] = sdk::to_string(r.link);
    if (r.link != sdk::LinkKind::offline_purchase) {
        out["stan"] = r.stan;
        out["batch_number"] = r.batch_number;
        out["carried"] = r.carried;  // a load funded by the carried holding (280000)
        out["refund"] = r.refund;    // a purchase refunded to the card (200000)
    }
    return out;
}

std::string to_text(const sdk::TransactionRecord& r, std::optional<std::uint64_t> sequence) {
    std::string flags;
    if (r.recovered) flags += " recovered";
    if (r.unproven) flags += " UNPROVEN";
    if (r.mac2_unverified) flags += " MAC2-UNVERIFIED";
    if (r.carried) flags += " carried (280000)";
    if (r.refund) flags += " refund (200000)";
    std::string text = sequence ? fmt::format("#{} ", *sequence) : std::string{};
    text +=
        fmt::format("{} card {} ATC {} amount {} fen ({} CNY) balance {} -> {} fen, terminal {} serial {}, {}, TAC {} MAC2 {}",
                    type_name(r.type), r.asn_digits(), r.atc, r.amount_fen, yuan(r.amount_fen), r.balance_before_fen, r.balance_after_fen,
                    bcd_to_digits(r.terminal_id), r.terminal_serial, sdk::format_date_time(r.when), to_hex(r.tac), to_hex(r.mac2));
    if (r.tap_kind != sdk::TapKind::none) {
        text += fmt::format(", {} line {} station {}", to_string(r.tap_kind), r.line, r.station);
        if (r.tap_kind == sdk::TapKind::exit) text += fmt::format(" (entered at {})", r.entry_station);
        if (r.vehicle != 0) text += fmt::format(" vehicle {}", r.vehicle);
    }
    if (!flags.empty()) text += "," + flags;
    return text;
}

nlohmann::json to_json(const sdk::TapOutcome& outcome) {
    return {{"result", sdk::to_string(outcome.result)},
            {"fare_fen", outcome.fare_fen},
            {"balance_after_fen", outcome.balance_after_fen},
            {"record", outcome.record ? to_json(*outcome.record) : nlohmann::json(nullptr)}};
}

std::string to_text(const sdk::TapOutcome& outcome) {
    std::string text = fmt::format("tap {}: fare {} fen ({} CNY), balance {} fen ({} CNY)", sdk::to_string(outcome.result),
                                   outcome.fare_fen, yuan(outcome.fare_fen), outcome.balance_after_fen, yuan(outcome.balance_after_fen));
    if (outcome.record) text += "\n  " + to_text(*outcome.record);
    return text;
}

nlohmann::json to_json(const sdk::Cardholder& h) {
    return {{"card_identifier", h.card_identifier},
            {"card_number", h.card_number},
            {"issue_date", h.issue_date},
            {"expiry_date", h.expiry_date},
            {"ssn", h.ssn},
            {"name", h.name},
            {"sex", h.sex},
            {"birth_date", h.birth_date}};
}

CliError from_flow(const sdk::FlowError& error) {
    CliError out{exit_code(error.code), "flow", std::string(sdk::to_string(error.code)), error.message, error.sw, {}};
    if (error.block_reason) out.block_reason = std::string(sdk::to_string(*error.block_reason));
    out.response_code = error.response_code;
    out.reversed = error.reversed;
    return out;
}

int report(const CliError& error, bool as_json) {
    std::string line = fmt::format("coconut-terminal: {} (exit {}): {}", error.code, error.exit_code, error.message);
    if (error.sw != 0) line += fmt::format(" [status word {:04X}]", error.sw);
    if (!error.block_reason.empty()) line += fmt::format(" [reason: {}]", error.block_reason);
    if (!error.response_code.empty()) line += fmt::format(" [response code {}]", error.response_code);
    if (error.reversed) line += " [reversed]";
    std::fprintf(stderr, "%s\n", line.c_str());
    if (as_json) {
        nlohmann::json e{{"kind", error.kind}, {"code", error.code}, {"message", error.message}, {"exit_code", error.exit_code}};
        if (error.sw != 0) e["sw"] = fmt::format("{:04X}", error.sw);
        if (!error.block_reason.empty()) e["block_reason"] = error.block_reason;
        if (!error.response_code.empty()) e["response_code"] = error.response_code;
        if (error.reversed) e["reversed"] = true;
        std::printf("%s\n", nlohmann::json{{"error", e}}.dump().c_str());
    }
    std::fflush(stdout);
    return error.exit_code;
}

}  // namespace coconut::terminal_cli
