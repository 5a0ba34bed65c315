// A clinic payment: the cardholder's PIN, a hold on the medical account at the clearing (0100), the purse
// for what the medical account does not cover, cash for the rest, and the completion (0220) — online,
// through coconut-clearingd's ISO 8583 port with mutual TLS (`coconut terminal register` writes the files).
//
//   clinic_payment CARD PSAM AMOUNT_FEN HOST:PORT TERMINAL_ID CA_PEM CERT_PEM KEY_PEM [QUEUE]   (PIN on stdin)
#include "example_reader.hpp"

#include <coconut/sdk/clearing_client.hpp>
#include <coconut/sdk/terminal.hpp>

#include <cstdio>
#include <iostream>
#include <optional>
#include <string>

using namespace coconut;

int main(int argc, char** argv) {
    if (argc < 9) {
        std::fprintf(stderr, "usage: clinic_payment CARD PSAM AMOUNT_FEN HOST:PORT TERMINAL_ID CA_PEM CERT_PEM KEY_PEM [QUEUE]\n");
        return 2;
    }
    auto card = open_reader(argv[1]);
    auto psam = open_reader(argv[2]);
    auto queue = sdk::TransactionQueue::open(argc > 9 ? argv[9] : "terminal-queue.log");
    auto hotlist = sdk::Hotlist::load("terminal-hotlist.bin");
    auto endpoint = sdk::parse_clearing_endpoint(argv[4]);
    if (!queue || !hotlist || !endpoint) {
        std::fprintf(stderr, "cannot open the queue or the hotlist, or HOST:PORT is not one\n");
        return 1;
    }

    // The queue's log also keeps the batch number and the STAN counter, so a STAN never repeats.
    sdk::ClearingOptions options;
    options.terminal_id = argv[5];
    options.tls = sdk::ClearingTls{.ca = argv[6], .certificate = argv[7], .private_key = argv[8], .context = nullptr};
    options.batch_log = queue->get();
    auto clearing = sdk::ClearingClient::connect(*endpoint, std::move(options));
    if (!clearing || !(*clearing)->sign_on()) {
        std::fprintf(stderr, "clearing: %s\n", clearing ? "sign-on refused" : clearing.error().message.c_str());
        return 1;
    }

    // The PIN comes from the PIN pad, asked only once the card was read (here: a line on standard input).
    sdk::ClinicOptions clinic;
    clinic.pin = []() -> std::optional<std::string> {
        std::string pin;
        if (!std::getline(std::cin, pin) || pin.empty()) return std::nullopt;  // the holder cancelled
        return pin;
    };
    sdk::Terminal terminal(*card.reader, *psam.reader, **queue, *hotlist);
    auto paid = terminal.clinic_payment(static_cast<std::uint32_t>(std::stoul(argv[3])), clinic, **clearing);
    (void)(*clearing)->sign_off();
    if (!paid) {
        // A hold the purse could not complete is reversed (0400, or a queued 0420): `reversed` says so.
        std::fprintf(stderr, "not paid: %s%s\n", paid.error().message.c_str(), paid.error().reversed ? " (hold reversed)" : "");
        return 1;
    }
    std::printf("paid %u fen: %u from the medical account (%s), %u from the purse, %u in cash\n", paid->amount_fen, paid->medical_fen,
                paid->authorization_code.c_str(), paid->purse_fen, paid->cash_fen);
    return 0;
}
