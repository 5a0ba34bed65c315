// A bus validator's tap (CAPP purchase 09): line 8 charges a flat 2.00 CNY, line 1 by distance (the
// entry tap is free, the exit tap pays by the stops travelled). A second tap inside the repeat window
// opens the gate without charging.
//
//   bus_tap CARD PSAM LINE STATION [QUEUE]     CARD, PSAM: a card image file or a PC/SC reader name
#include "example_reader.hpp"

#include <coconut/sdk/terminal.hpp>

#include <cstdio>
#include <string>

using namespace coconut;

int main(int argc, char** argv) {
    if (argc < 5) {
        std::fprintf(stderr, "usage: bus_tap CARD PSAM LINE STATION [QUEUE]\n");
        return 2;
    }
    auto card = open_reader(argv[1]);
    auto psam = open_reader(argv[2]);
    auto queue = sdk::TransactionQueue::open(argc > 5 ? argv[5] : "terminal-queue.log");
    auto hotlist = sdk::Hotlist::load("terminal-hotlist.bin");
    if (!queue || !hotlist) {
        std::fprintf(stderr, "cannot open the queue or the hotlist\n");
        return 1;
    }

    // The fare tables (coconut-terminal reads them from --fares FILE.json).
    sdk::TransitConfig fares;
    fares.lines[8] = sdk::LineFare{.line = 8, .distance_based = false, .flat_fare_fen = 200, .fare_by_stops = {}, .operator_id = 1};
    fares.lines[1] =
        sdk::LineFare{.line = 1, .distance_based = true, .flat_fare_fen = 0, .fare_by_stops = {100, 100, 150, 200, 300}, .operator_id = 1};

    sdk::Terminal validator(*card.reader, *psam.reader, **queue, *hotlist, fares);
    const sdk::TapRequest tap{.line = static_cast<std::uint16_t>(std::stoul(argv[3])),
                              .station = static_cast<std::uint16_t>(std::stoul(argv[4])),
                              .vehicle = 4601};
    auto tapped = validator.transit_tap(tap);
    if (!tapped) {
        std::fprintf(stderr, "gate stays shut: %s\n", tapped.error().message.c_str());
        return 1;
    }
    // charged_flat, entered (free, or an unfinished journey's maximum fare), exited, repeat_no_charge.
    std::printf("gate opens: %s, %u fen charged, balance %u fen\n", std::string(to_string(tapped->result)).c_str(), tapped->fare_fen,
                tapped->balance_after_fen);
    return 0;
}
