// An island day through the terminal SDK: buses (flat and entry/exit fares, morning and evening peaks),
// shops and clinics, every card tap a real Terminal flow on an in-process reader against the card's image,
// terminals offline most of the day and uploading their queues in batches to coconut-clearingd.
//
// Deterministic: the day's plan (who taps where and when), the card and PSAM images (seeded DRBGs) and the
// simulated clock derive from the seed, so the same seed on a freshly issued island gives the same
// transactions. Each completed card transaction is one line of the transaction log (no MACs: those
// depend on the keys of the ceremony); its SHA-256 is the day's digest.
//
// Faults: a torn tap (the card leaves during DEBIT, before or after the card executed it) is resolved by
// Terminal::recover() when the passenger taps again, then retried if the card proves the debit never ran;
// lost network messages are requests or answers lost on the terminals' links, and the connection with
// them (sdk::LinkFault), chosen by the seed and each request's identity, so the day stays deterministic;
// the clearing can be SIGKILLed and restarted at an interval (wall-clock timing: that day is not
// reproducible). Uploads retry until every queue is empty (bounded).
#pragma once

#include "desk.hpp"
#include "world.hpp"

#include <coconut/sdk/clearing_client.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>

namespace coconut::cli {

class Daemon;

struct DayOptions {
    std::size_t cards = 1000;
    std::size_t buses = 40;
    std::size_t clinics = 8;
    std::size_t shops = 60;
    double hours = 17;  // the service day starts at 06:00 local time
    std::uint64_t seed = 1;
    std::size_t transactions = 0;            // target for the day; 0 = ~6 per card (a resident's real day)
    std::string business_date = "20261126";  // YYYYMMDD, Hainan local
    double tear_rate = 0;                    // share of debits whose card leaves during DEBIT
    double drop_rate = 0;                    // share of ISO 8583 requests lost (or their answers) between terminals and clearing
    double kill_clearing_every_s = 0;        // SIGKILL + restart coconut-clearingd at this wall-clock interval
    std::size_t upload_every_min = 120;      // each terminal connects about this often (simulated minutes)
    std::size_t upload_threads = 4;          // terminals uploading at once
    std::size_t pcsc_taps = 0;               // taps/purchases sent through pcscd + vpcd (coconut-vcard serve) instead of in process
    // Tourist (purse-only) cards sold at the airport counter during the day (needs the clerk API: ServiceDesk);
    // three of every four are returned at departure, the rest stay out (the dormancy report lists them).
    std::size_t tourists = 0;
    // Residents who report their card lost at the counter around midday and leave with a card from its
    // stock (the balance carried after the waiting period; the medical account at once). Needs the desk too.
    std::size_t lost_cards = 0;
    // One in this many of the day's clinic visits (by the seed), and every N-th visit the purse helped pay
    // (counted in the day's order from the first), is refunded later the same day at the same clinic's
    // counter (Terminal::clinic_refund with the payment's refund reference); the purse parts go back
    // alternately to the card (online credit) and in cash. 0: no refunds.
    std::size_t clinic_refund_every = 0;
};

struct KindTotals {
    std::size_t count = 0;
    std::uint64_t amount_fen = 0;
};

// The airport counter's day: tourist cards sold, returned (whole-balance debit, block, cash payout) and
// left out, as the clearing booked and reported them.
struct TouristCardOut {
    std::string card_number;
    std::int64_t balance_fen = 0;
    std::int64_t deposit_fen = 0;
};
struct TouristReport {
    std::size_t sold = 0;
    std::uint64_t deposits_taken_fen = 0;    // collected in cash at the sales (transfer 17)
    std::size_t returned = 0;                // booked by POST /v1/clerk/cards/{n}/return
    std::uint64_t returned_balance_fen = 0;  // taken by the counter's whole-balance debits
    std::uint64_t deposits_returned_fen = 0;
    std::uint64_t return_fees_fen = 0;
    std::uint64_t paid_cash_fen = 0;       // balance + deposit − fee, over the desk
    std::size_t kept = 0;                  // not brought back at departure (or nothing left on them to prove)
    std::vector<TouristCardOut> dormant;   // GET /v1/clerk/reports/dormant: tourist cards still out
    std::int64_t dormant_balance_fen = 0;  // claimable: never forfeited
    std::int64_t dormant_deposit_fen = 0;
};

// A card reported lost and replaced at the counter, as the clearing shows it after the day.
struct Replacement {
    std::string lost_asn;
    std::string new_asn;
    std::string state;  // "pending_transfer": the waiting period runs
    std::int64_t medical_carried_fen = 0;
    std::int64_t pending_transfer_fen = 0;
};

// The clinics' same-day refunds (clearing/ISO8583.md §4.10), as the terminals saw them.
struct ClinicRefundReport {
    std::size_t planned = 0;              // visits to refund: one in N, and every N-th one the purse helped pay
    std::size_t not_refundable = 0;       // of those, paid without the clearing (no refund reference) or declined
    std::size_t refunded = 0;             // refunded whole
    std::size_t incomplete = 0;           // the purse part refunded, the medical part not (ClinicRefundOutcome::incomplete)
    std::size_t refused = 0;              // the clearing declined (response code) or the card was blocked
    std::size_t unanswered = 0;           // no answer / no link: nothing refunded (a credit reversed as a load's)
    std::size_t to_cash = 0;              // purse parts the card could not take (card_full): handed out in cash instead
    std::uint64_t medical_fen = 0;        // back on the medical accounts
    std::uint64_t purse_to_card_fen = 0;  // credited to the cards online (200000 with DF13)
    std::uint64_t purse_cash_fen = 0;     // purse parts handed back in cash at the counter (0220 200000)
    std::uint64_t cash_fen = 0;           // the payments' cash parts handed back
};

struct DayReport {
    std::map<std::string, KindTotals> by_kind;  // bus flat/entry/exit/unfinished, shop, clinic medical, clinic purse, top-up
    std::size_t transactions = 0;               // completed card transactions (in the log)
    std::size_t declined = 0;                   // insufficient balance
    std::size_t top_ups_failed = 0;             // the load could not complete (clearing unreachable, no answer)
    std::size_t repeat_taps = 0;                // a second tap inside the window: not charged
    std::size_t pcsc_taps = 0;                  // done through the real PC/SC stack
    std::size_t tears = 0;
    std::size_t tears_recovered = 0;    // the card had debited: recorded from GET TRANSACTION PROVE
    std::size_t tears_abandoned = 0;    // the card had not: the tap was made again
    std::size_t zero_fare_entries = 0;  // entry taps that moved no money (uploaded like any tap: booked as 0-fen transfers)
    std::size_t upload_rounds = 0;
    std::size_t upload_failures = 0;  // connections that ended in an error (retried later)
    std::size_t uploaded = 0;         // acknowledged by the clearing
    std::size_t approved = 0;
    std::size_t suspense = 0;
    std::size_t duplicates = 0;
    std::size_t dropped_frames = 0;
    std::size_t clearing_kills = 0;
    std::uint64_t link_failovers = 0;  // terminal links that moved to another clearing node
    TouristReport tourists;
    ClinicRefundReport clinic_refunds;
    std::vector<Replacement> replacements;
    std::string digest;  // SHA-256 of the transaction log, hex
    fs::path transaction_log;
    double run_seconds = 0;
    double upload_seconds = 0;
};

// Participants and terminals for `options` (bus operators, clinics, shops), with PSAMs issued through the
// HSM. Deterministic names and ids.
void plan_participants_and_terminals(const WorldPaths& world, Island& island, const std::string& hsm_endpoint, const DayOptions& options);

// Runs the day against a running clearing daemon (`clearing` may be restarted by the kill option).
// `progress(fraction, text)` is called now and then.
// `desk`: the airport counter's HSM client and clerk (needed when options.tourists > 0).
DayReport run_day(const WorldPaths& world, const Island& island, Daemon& clearing, const DayOptions& options,
                  const std::function<void(double, const std::string&)>& progress, std::optional<ServiceDesk> desk = std::nullopt);

// The clearing as the day's terminals see it: the endpoints each terminal is given (several: the nodes of
// a cluster, which the terminals fail over across), and the faults the day injects.
struct ClearingUnderTest {
    std::vector<sdk::ClearingEndpoint> endpoints;
    std::function<void()> strike;     // kills the clearing (and brings it back); runs on a thread of its own
    double strike_every_s = 0;        // wall-clock interval of strikes (0: none)
    bool strike_mid_day = false;      // once when half of the day's card events are done
    std::function<void()> after_day;  // after the last upload: the clearing serving again
    std::optional<ServiceDesk> desk;  // the airport counter (tourist cards)
};
DayReport run_day(const WorldPaths& world, const Island& island, const ClearingUnderTest& clearing, const DayOptions& options,
                  const std::function<void(double, const std::string&)>& progress);

}  // namespace coconut::cli
