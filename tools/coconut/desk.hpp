// The island's service desk in the day: an airport counter (participant kind `counter`) that sells tourist
// cards with a deposit and takes them back at departure (clearing/README.md "Card return, refund and tourist
// cards"). The card side is the SDK's Terminal::return_card with the HSM's maintenance MAC (the ceremony's
// client D/keys/counter.key); the clearing side is the clerk API with a clerk of role `counter`.
#pragma once

#include "world.hpp"

#include <coconut/sdk/maintenance.hpp>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace coconut::cli {

// Where the desk reaches the HSM and the clearing's clerk API.
struct ServiceDesk {
    std::string hsm_endpoint;                  // coconut-hsmd HOST:PORT
    fs::path hsm_key;                          // a client with the permission maintenance (D/keys/counter.key)
    std::function<std::uint16_t()> http_port;  // the clearing's HTTP API on 127.0.0.1
    fs::path clerk_token;                      // a clerk with the role counter (D/keys/counter.token)
};

// The deposit every tourist card is sold with (20 CNY, as the island's sellers ask).
inline constexpr std::uint32_t tourist_deposit_fen = 2'000;

// The HSM's maintenance MAC for APPLICATION BLOCK, through a client connected now.
sdk::MaintenanceMacProvider counter_mac_provider(const ServiceDesk& desk);

// POST /v1/clerk/tourist-cards: the seller collected `deposit_fen` in cash. Fails unless 201.
void sell_tourist_card(const ServiceDesk& desk, const std::string& asn, std::uint64_t seller_id, std::uint32_t deposit_fen);

// What POST /v1/clerk/cards/{n}/return booked (cash payout).
struct BookedReturn {
    std::int64_t balance_fen = 0;
    std::int64_t deposit_fen = 0;
    std::int64_t fee_fen = 0;
    std::int64_t paid_cash_fen = 0;
};
// The return of a card whose whole balance the counter's terminal took with the purchase `terminal_serial`
// (uploaded). Fails unless 201.
BookedReturn book_card_return(const ServiceDesk& desk, const std::string& asn, const std::string& terminal_id,
                              std::uint32_t terminal_serial);

// A tourist card still out, from GET /v1/clerk/reports/dormant.
struct DormantTouristCard {
    std::string card_number;
    std::int64_t balance_fen = 0;
    std::int64_t deposit_fen = 0;
};
std::vector<DormantTouristCard> dormant_tourist_cards(const ServiceDesk& desk);

// A resident reports the card lost at the counter and leaves with a card from its stock (clearing/README.md
// "Card lifecycle"): POST /v1/clerk/persons (the holder, as on the ID document), POST …/lost {ssn},
// POST …/replace {new_card, ssn}. Fails unless each answers 200.
struct Holder {
    std::string ssn;
    std::string name;
    std::string birth_date;  // YYYY-MM-DD
};
void replace_lost_card(const ServiceDesk& desk, const std::string& lost_asn, const std::string& new_asn, const Holder& holder);

// GET /v1/clerk/cards/{n}/lifecycle of a lost card: where its balance stands.
struct LostCardState {
    std::string state;                      // pending_transfer (the waiting period runs) / carried
    std::int64_t medical_carried_fen = 0;   // moved to the new card's medical account at once
    std::int64_t pending_transfer_fen = 0;  // the purse balance the carry will move after the waiting period
};
LostCardState lost_card_state(const ServiceDesk& desk, const std::string& asn);

}  // namespace coconut::cli
