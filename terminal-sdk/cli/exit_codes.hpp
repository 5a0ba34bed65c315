// Exit codes of coconut-terminal: one per problem an operator or a script must tell apart. The same
// table is printed by --help and documented in terminal-sdk/README.md.
#pragma once

#include <coconut/sdk/reader.hpp>
#include <coconut/sdk/terminal.hpp>

namespace coconut::terminal_cli {

inline constexpr int exit_ok = 0;
inline constexpr int exit_internal = 1;  // unexpected failure: a bug or a start-up failure (OpenSSL, memory)
inline constexpr int exit_usage = 2;     // bad command line

// A flow refused or failed (FlowErrorCode): 10 + the code's position.
inline constexpr int exit_card_removed = 10;          // the card left; a debit may await `recover`
inline constexpr int exit_no_card = 11;               // no card in the reader
inline constexpr int exit_card_error = 12;            // the card answered an error status word
inline constexpr int exit_psam_error = 13;            // the PSAM failed or is missing
inline constexpr int exit_insufficient_balance = 14;  // 9401
inline constexpr int exit_blocked_card = 15;          // on the hotlist: the card was not touched
inline constexpr int exit_expired_card = 16;          // outside its validity dates
inline constexpr int exit_unknown_line = 17;          // tap on a line with no fare table
inline constexpr int exit_queue_full = 18;            // the terminal stops taking payments until it uploads
inline constexpr int exit_storage_error = 19;         // the queue could not be written

// Setting up the terminal failed.
inline constexpr int exit_no_service = 20;        // pcscd is not running
inline constexpr int exit_reader_not_found = 21;  // no reader with that name (or no readers at all)
inline constexpr int exit_reader_error = 22;      // any other PC/SC failure
inline constexpr int exit_image_error = 23;       // a card or PSAM image cannot be opened
inline constexpr int exit_queue_error = 24;       // the queue file cannot be opened (damaged, I/O)
inline constexpr int exit_hotlist_error = 25;     // the hotlist cannot be loaded or the delta applied
inline constexpr int exit_fares_error = 26;       // the fares file is missing or invalid
inline constexpr int exit_timeout = 27;           // `wait`: the card did not arrive/leave in time

// Talking to the clearing (upload, load, clinic-pay, sync-hotlist, reconcile).
inline constexpr int exit_clearing_unreachable = 28;  // no connection, no answer in time, connection closed
inline constexpr int exit_clearing_refused = 29;      // sign-on refused, or an answer that makes no sense
inline constexpr int exit_upload_incomplete = 30;     // some transactions were answered with a code that keeps them queued
// Online flows (load, clinic-pay) and end of shift.
inline constexpr int exit_declined = 31;        // the clearing refused the load / authorization / refund (response code printed)
inline constexpr int exit_no_answer = 32;       // no answer in time: a reversal advice is queued (upload sends it)
inline constexpr int exit_wrong_pin = 33;       // VERIFY refused the PIN (tries left in the status word)
inline constexpr int exit_out_of_balance = 34;  // reconcile: 0510 answered 95, the batch stays open
inline constexpr int exit_batch_error = 35;     // the batch state cannot be written, or an old batch file is damaged
inline constexpr int exit_tls_error = 36;       // --ca / --cert / --key missing, unreadable, too open or not matching
// Counter (block-card, return-card).
inline constexpr int exit_hsm_error = 37;  // no maintenance MAC from the HSM (unreachable, refused, key file): the card is not blocked
// load --carried answered 51: the card's carried holding holds less than asked; the card was not credited.
inline constexpr int exit_carried_short = 38;
// clinic-pay: no PIN was entered (empty line or end of input at the prompt or on --pin-stdin): nothing held or debited.
inline constexpr int exit_pin_cancelled = 39;
// clinic-refund: the card cannot take the purse part (6985, above the purse maximum): refund it with --purse-cash.
inline constexpr int exit_card_full = 40;
// clinic-refund: the card in the reader is not the one the payment was made with: nothing was refunded.
inline constexpr int exit_wrong_card = 41;
// clinic-refund: the purse part was refunded and the medical part was not (declined or no answer): run
// clinic-refund again with --skip-purse.
inline constexpr int exit_refund_incomplete = 42;
// clinic-refund --receipt FILE: the file is missing, not JSON, or not a clinic payment's refund reference.
inline constexpr int exit_receipt_error = 43;

inline int exit_code(sdk::FlowErrorCode code) {
    using sdk::FlowErrorCode;
    switch (code) {
        case FlowErrorCode::card_removed: return exit_card_removed;
        case FlowErrorCode::no_card: return exit_no_card;
        case FlowErrorCode::card_error: return exit_card_error;
        case FlowErrorCode::psam_error: return exit_psam_error;
        case FlowErrorCode::insufficient_balance: return exit_insufficient_balance;
        case FlowErrorCode::blocked_card: return exit_blocked_card;
        case FlowErrorCode::expired_card: return exit_expired_card;
        case FlowErrorCode::unknown_line: return exit_unknown_line;
        case FlowErrorCode::queue_full: return exit_queue_full;
        case FlowErrorCode::storage_error: return exit_storage_error;
        case FlowErrorCode::declined: return exit_declined;
        case FlowErrorCode::no_answer: return exit_no_answer;
        case FlowErrorCode::wrong_pin: return exit_wrong_pin;
        case FlowErrorCode::hsm_error: return exit_hsm_error;
        case FlowErrorCode::pin_cancelled: return exit_pin_cancelled;
        case FlowErrorCode::card_full: return exit_card_full;
        case FlowErrorCode::wrong_card: return exit_wrong_card;
    }
    return exit_internal;
}

inline int exit_code(sdk::ReaderErrorCode code) {
    using sdk::ReaderErrorCode;
    switch (code) {
        case ReaderErrorCode::no_service: return exit_no_service;
        case ReaderErrorCode::no_readers:
        case ReaderErrorCode::reader_not_found: return exit_reader_not_found;
        case ReaderErrorCode::no_card: return exit_no_card;
        case ReaderErrorCode::card_removed: return exit_card_removed;
        default: return exit_reader_error;
    }
}

inline constexpr const char* exit_code_table =
    "Exit codes:\n"
    "   0  success (a repeated tap inside the window that is not charged is a success too)\n"
    "   1  internal error (a bug or a start-up failure)\n"
    "   2  bad command line\n"
    "  10  card_removed: the card left mid-transaction; run `recover` with that card\n"
    "  11  no_card: no card in the reader\n"
    "  12  card_error: the card refused a command (status word printed)\n"
    "  13  psam_error: the PSAM failed or is missing (status word printed when there is one)\n"
    "  14  insufficient_balance (9401)\n"
    "  15  blocked_card: on the hotlist (reason printed); the card was not debited\n"
    "  16  expired_card: outside the card's validity dates\n"
    "  17  unknown_line: no fare table for that line (--fares)\n"
    "  18  queue_full: upload and acknowledge before taking payments\n"
    "  19  storage_error: the queue could not be written\n"
    "  20  no_service: pcscd is not running\n"
    "  21  reader_not_found: no reader with that name\n"
    "  22  reader_error: another PC/SC failure\n"
    "  23  image_error: a card or PSAM image cannot be opened\n"
    "  24  queue_error: the queue file cannot be opened (damaged or unreadable)\n"
    "  25  hotlist_error: hotlist file damaged, or a delta that does not apply\n"
    "  26  fares_error: the fares file is missing or invalid\n"
    "  27  timeout: `wait` ran out of time\n"
    "  28  clearing_unreachable: could not reach the clearing or got no answer in time (nothing pending)\n"
    "  29  clearing_refused: sign-on or the request refused, or the clearing's answer made no sense\n"
    "  30  upload_incomplete: some records stay queued (a 0320 refused with a code other than 00/59/94,\n"
    "      an advice answered 03/30/91/96)\n"
    "  31  declined: the clearing refused the load, the clinic authorization or the refund (response code printed;\n"
    "      a refund: 25 payment not found, 13 amount differs, 12 not booked today, 94 refunded already, 58 terminal)\n"
    "  32  no_answer: the clearing did not answer in time; a reversal advice is queued for `upload` (a refund in cash\n"
    "      or to the medical account: nothing to hand out, run it again)\n"
    "  33  wrong_pin: the card refused the PIN\n"
    "  34  out_of_balance: `reconcile` answered 95; the batch stays open\n"
    "  35  batch_error: the batch state cannot be written to the queue, or the old batch file (--batch-file) is damaged\n"
    "  36  tls_error: --ca / --cert / --key missing, unreadable, readable by others, or not belonging together\n"
    "  37  hsm_error: block-card / unblock-card / return-card got no maintenance MAC from the HSM (--hsm unreachable, --hsm-key\n"
    "      missing or without the permission `maintenance`); the card was not blocked (a return's debit, if taken, is queued)\n"
    "  38  carried_short: `load --carried` (280000) answered 51: the card's carried holding holds less than the amount\n"
    "      (no card was replaced by it, the waiting period is not over, or the balance was collected); the card was not credited\n"
    "  39  pin_cancelled: `clinic-pay` got no PIN (empty line or end of input): nothing was held or debited\n"
    "  40  card_full: `clinic-refund` to a card that cannot take the purse part (6985, above the purse maximum);\n"
    "      nothing was refunded: refund it in cash with --purse-cash\n"
    "  41  wrong_card: `clinic-refund`: the card in the reader is not the one the payment was made with; nothing was refunded\n"
    "  42  refund_incomplete: `clinic-refund` refunded the purse part but not the medical part (declined or no answer,\n"
    "      printed); run it again with --skip-purse\n"
    "  43  receipt_error: `clinic-refund --receipt FILE`: the file is missing, not JSON, or its refund reference is\n"
    "      incomplete or wrong (the member is named); nothing was sent\n";

}  // namespace coconut::terminal_cli
