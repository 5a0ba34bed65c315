// Bringing an island to the point where a day can run: ceremony (if the directory has none), participants,
// terminals with their PSAMs, the cards, all registered with the clearing (before it serves: registry loads
// take its directory lock), cardholder tokens, clerks — then the clearing is started.
#pragma once

#include "report.hpp"
#include "services.hpp"
#include "simulate.hpp"

namespace coconut::cli {

struct SetupReport {
    double ceremony_s = 0;
    double issue_s = 0;
    double register_s = 0;
    std::size_t cards_issued = 0;
    std::size_t tourist_cards_issued = 0;
    std::size_t stock_cards_issued = 0;
    std::size_t terminals = 0;
    std::size_t certificates_issued = 0;  // terminal TLS certificates signed by the HSM this time
    double certificates_s = 0;
    std::string tokens;
    fs::path images_dir;
    fs::path settlement_token;  // the settlement clerk's token file (when asked for)
    fs::path counter_token;     // the airport counter's clerk (role counter), when the day sells tourist cards
};

// `images` empty: island.json's images_dir, else D/media. `settlement_clerk`: also add the clerk "settlement"
// (role settlement) to the clearing's HTTP API, its token in D/keys/settlement.token.
SetupReport prepare_island(const WorldPaths& world, Services& services, const std::string& images, const DayOptions& day,
                           Progress& progress, bool settlement_clerk = false);

}  // namespace coconut::cli
