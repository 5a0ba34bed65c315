// A shop purchase (EP purchase 06): the card pays AMOUNT fen offline, the PSAM signs it, and the record
// waits in the store-and-forward queue for `coconut-terminal upload` (or ClearingClient::upload).
//
//   purchase CARD PSAM AMOUNT_FEN [QUEUE]      CARD, PSAM: a card image file or a PC/SC reader name
#include "example_reader.hpp"

#include <coconut/sdk/terminal.hpp>
#include <coconut/version.hpp>

#include <cstdio>
#include <string>

using namespace coconut;

int main(int argc, char** argv) {
    if (argc < 4) {
        std::fprintf(stderr, "usage: purchase CARD PSAM AMOUNT_FEN [QUEUE]  (Coconut SDK %s)\n", version.data());
        return 2;
    }
    const auto amount_fen = static_cast<std::uint32_t>(std::stoul(argv[3]));
    auto card = open_reader(argv[1]);
    auto psam = open_reader(argv[2]);

    // The queue and the hotlist are files the terminal keeps; both are created when missing.
    auto queue = sdk::TransactionQueue::open(argc > 4 ? argv[4] : "terminal-queue.log");
    if (!queue) {
        std::fprintf(stderr, "queue: %s\n", queue.error().message.c_str());
        return 1;
    }
    auto hotlist = sdk::Hotlist::load("terminal-hotlist.bin");
    if (!hotlist) {
        std::fprintf(stderr, "hotlist: %s\n", hotlist.error().message.c_str());
        return 1;
    }

    sdk::Terminal terminal(*card.reader, *psam.reader, **queue, *hotlist);
    auto paid = terminal.purchase(amount_fen);
    if (!paid) {
        // A card pulled mid-debit leaves an intent in the queue: the next flow with that card (or
        // terminal.recover()) settles it, so the passenger is never charged twice or for nothing.
        std::fprintf(stderr, "not paid: %s (%s)\n", paid.error().message.c_str(), std::string(to_string(paid.error().code)).c_str());
        return 1;
    }
    std::printf("paid %u fen, balance %u -> %u fen, queued for upload\n", paid->amount_fen, paid->balance_before_fen,
                paid->balance_after_fen);
    return 0;
}
