#include "desk.hpp"

#include "cardholder_api.hpp"
#include "errors.hpp"

#include <coconut/hsm/client.hpp>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <memory>
#include <thread>

namespace coconut::cli {

namespace {

using nlohmann::json;

// Counter actions run one at a time at the clearing (503 busy meanwhile), and a clerk's token gets 10
// requests a second after a burst of 20 (429 with Retry-After; clearing/README.md "HTTP API"): the desk waits
// and asks again, bounded (a day's closing books dozens of returns at once; serve --http-token-rate).
constexpr int retries_max = 200;
constexpr auto busy_pause = std::chrono::milliseconds(50);
constexpr auto rate_pause = std::chrono::milliseconds(120);

std::string card_number_of(const std::string& asn) { return asn.substr(asn.size() - 16); }

std::string read_clerk_token(const fs::path& file) {
    std::ifstream in(file);
    std::string token;
    std::getline(in, token);
    if (token.empty()) fail(exit_codes::io_error, "no clerk token in " + file.string());
    return token;
}

// One clerk call, retried while the clearing answers 503 or 429; fails unless it answers `expected`.
json clerk_call(const ServiceDesk& desk, const std::string& method, const std::string& target, const json& body, int expected) {
    const std::string token = read_clerk_token(desk.clerk_token);
    const std::string text = body.is_null() ? std::string() : body.dump();
    HttpAnswer answer;
    for (int attempt = 0;; ++attempt) {
        answer = http_request(desk.http_port(), method, target, token, text);
        if ((answer.status != 503 && answer.status != 429) || attempt + 1 >= retries_max) break;
        std::this_thread::sleep_for(answer.status == 429 ? rate_pause : busy_pause);
    }
    if (answer.status != expected)
        fail(exit_codes::clearing_error, fmt::format("{} {}: HTTP {} {}", method, target, answer.status, answer.body));
    auto parsed = json::parse(answer.body, nullptr, false);
    if (parsed.is_discarded()) fail(exit_codes::clearing_error, fmt::format("{} {}: the answer is not JSON", method, target));
    return parsed;
}

}  // namespace

sdk::MaintenanceMacProvider counter_mac_provider(const ServiceDesk& desk) {
    auto endpoints = hsm::wire::parse_endpoints(desk.hsm_endpoint);
    if (!endpoints) fail(exit_codes::usage, "HSM endpoint: " + endpoints.error().message);
    auto credentials = hsm::wire::read_client_credentials(desk.hsm_key);
    if (!credentials) fail(exit_codes::hsm_error, fmt::format("{}: {}", desk.hsm_key.string(), credentials.error().message));
    auto client = hsm::Client::connect(std::move(endpoints).value(), std::move(credentials).value());
    if (!client) fail(exit_codes::hsm_error, fmt::format("HSM at {}: {}", desk.hsm_endpoint, client.error().message));
    std::shared_ptr<hsm::Client> shared(std::move(client).value());
    const hsm::KeyRef master{"mk-maintenance", hsm::newest_version};
    return [shared, master](const sdk::MaintenanceMacRequest& request) -> Result<crypto::Mac4, std::string> {
        auto answer =
            shared->maintenance_mac({master, hsm::CardIdentity{request.issuer_id, request.asn}, request.challenge, request.header});
        if (!answer) return Unexpected{fmt::format("{}: {}", hsm::errc_name(answer.error().code), answer.error().message)};
        return answer->mac;
    };
}

void sell_tourist_card(const ServiceDesk& desk, const std::string& asn, std::uint64_t seller_id, std::uint32_t deposit_fen) {
    clerk_call(desk, "POST", "/v1/clerk/tourist-cards",
               {{"card_number", card_number_of(asn)}, {"seller_id", seller_id}, {"deposit_fen", deposit_fen}}, 201);
}

BookedReturn book_card_return(const ServiceDesk& desk, const std::string& asn, const std::string& terminal_id,
                              std::uint32_t terminal_serial) {
    const json answer = clerk_call(desk, "POST", "/v1/clerk/cards/" + card_number_of(asn) + "/return",
                                   {{"terminal_id", terminal_id}, {"terminal_serial", terminal_serial}, {"payout", "cash"}}, 201);
    BookedReturn booked;
    booked.balance_fen = answer.value("balance_fen", std::int64_t{0});
    booked.deposit_fen = answer.value("deposit_fen", std::int64_t{0});
    booked.fee_fen = answer.value("fee_fen", std::int64_t{0});
    booked.paid_cash_fen = answer.value("paid_cash_fen", std::int64_t{-1});
    return booked;
}

std::vector<DormantTouristCard> dormant_tourist_cards(const ServiceDesk& desk) {
    const json report = clerk_call(desk, "GET", "/v1/clerk/reports/dormant", nullptr, 200);
    std::vector<DormantTouristCard> out;
    for (const auto& card : report.at("cards"))
        if (card.value("what", "") == "tourist")
            out.push_back({card.at("card_number").get<std::string>(), card.value("balance_fen", std::int64_t{0}),
                           card.value("deposit_fen", std::int64_t{0})});
    return out;
}

void replace_lost_card(const ServiceDesk& desk, const std::string& lost_asn, const std::string& new_asn, const Holder& holder) {
    const std::string lost = card_number_of(lost_asn);
    clerk_call(desk, "POST", "/v1/clerk/persons",
               {{"ssn", holder.ssn}, {"name", holder.name}, {"birth_date", holder.birth_date}, {"cards", {lost}}}, 200);
    clerk_call(desk, "POST", "/v1/clerk/cards/" + lost + "/lost", {{"ssn", holder.ssn}}, 200);
    clerk_call(desk, "POST", "/v1/clerk/cards/" + lost + "/replace", {{"new_card", card_number_of(new_asn)}, {"ssn", holder.ssn}}, 200);
}

LostCardState lost_card_state(const ServiceDesk& desk, const std::string& asn) {
    const json answer = clerk_call(desk, "GET", "/v1/clerk/cards/" + card_number_of(asn) + "/lifecycle", nullptr, 200);
    if (!answer.contains("lost") || !answer["lost"].is_object())
        fail(exit_codes::clearing_error, fmt::format("card {}: the clearing holds no lost-card record", card_number_of(asn)));
    const json& lost = answer["lost"];
    return {lost.value("state", ""), lost.value("medical_carried_fen", std::int64_t{0}),
            lost.value("pending_transfer_fen", std::int64_t{0})};
}

}  // namespace coconut::cli
