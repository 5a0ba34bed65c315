// Terminal flows: what a shop POS and a bus validator do with a card reader, a PSAM reader, the
// store-and-forward queue and the hotlist.
//
//   purchase(amount)    shop, EP purchase (06): hotlist → INIT → PSAM 80 70 → intent → DEBIT → 80 72 → record
//   transit_tap(tap)    bus, CAPP purchase (09) with the EF1A bus record: flat fare, or entry/exit by the
//                       fare table; a repeated tap inside the window is not charged; an entry older than
//                       the journey limit is charged the line's maximum fare at the next tap
//   recover()           a card that left mid-debit is back: GET TRANSACTION PROVE (and the card's log)
//                       decide whether the debit happened; it is recorded exactly once or dropped
//
// Never a lost charge: the intent is durable before DEBIT is sent, so a crash or a pulled card leaves a
// trace that recover() resolves. Never a double charge: a debit's outcome is resolved before that card
// is debited again on this terminal.
#pragma once

#include <coconut/sdk/apps.hpp>
#include <coconut/sdk/hotlist.hpp>
#include <coconut/sdk/queue.hpp>

#include <chrono>
#include <functional>
#include <map>

namespace coconut::sdk {

// Fares of one line. Flat: every tap pays flat_fare_fen. Distance: entry pays nothing, exit pays
// fare_by_stops[min(|exit − entry|, last)].
struct LineFare {
    std::uint16_t line = 0;
    bool distance_based = false;
    std::uint32_t flat_fare_fen = 0;
    std::vector<std::uint32_t> fare_by_stops;
    std::uint32_t operator_id = 0;
    std::uint32_t max_fare_fen() const;
    std::uint32_t fare(std::uint16_t entry_station, std::uint16_t exit_station) const;
};

struct TransitConfig {
    std::map<std::uint16_t, LineFare> lines;
    // A second tap on the same line (and station) inside this window is the same passenger tapping twice.
    std::chrono::seconds repeat_tap_window{60};
    // An entry older than this is an unfinished journey: charged the maximum fare at the next tap.
    std::chrono::minutes journey_limit{180};
};

struct TapRequest {
    std::uint16_t line = 0;
    std::uint16_t station = 0;
    std::uint32_t vehicle = 0;
};

enum class TapResult : std::uint8_t {
    charged_flat,     // flat fare charged
    entered,          // tapped in (and any unfinished journey charged)
    exited,           // tapped out, fare charged
    repeat_no_charge, // the same tap again inside the window: gate opens, nothing charged
};
std::string_view to_string(TapResult result);

struct TapOutcome {
    TapResult result = TapResult::entered;
    std::uint32_t fare_fen = 0;
    std::uint32_t balance_after_fen = 0;
    std::optional<TransactionRecord> record;  // absent for repeat_no_charge
};

enum class FlowErrorCode : std::uint8_t {
    card_removed,          // the card left; if a debit may have run, an intent awaits recover()
    no_card,
    card_error,            // the card refused a command (sw set)
    psam_error,
    insufficient_balance,  // 9401
    blocked_card,          // on the hotlist (block_reason set); the card was not debited
    expired_card,
    unknown_line,
    queue_full,            // the terminal stops taking payments until it uploads
    storage_error,         // the queue could not write
};
std::string_view to_string(FlowErrorCode code);

struct FlowError {
    FlowError(FlowErrorCode c, std::string m, std::uint16_t status = 0, std::optional<BlockReason> reason = {})
        : code(c), message(std::move(m)), sw(status), block_reason(reason) {}
    FlowErrorCode code;
    std::string message;
    std::uint16_t sw = 0;
    std::optional<BlockReason> block_reason;
};

struct RecoveryOutcome {
    std::vector<TransactionRecord> recorded;   // debits that happened, now in the queue
    std::vector<TransactionRecord> abandoned;  // debits the card proved never happened
};

using Clock = std::function<std::chrono::system_clock::time_point()>;

class Terminal {
public:
    Terminal(Reader& card_reader, Reader& psam_reader, TransactionQueue& queue, Hotlist& hotlist,
             TransitConfig transit = {});

    Result<TransactionRecord, FlowError> purchase(std::uint32_t amount_fen);
    Result<TapOutcome, FlowError> transit_tap(const TapRequest& tap);
    Result<RecoveryOutcome, FlowError> recover();
    Result<std::uint32_t, FlowError> balance();
    Result<Cardholder, FlowError> cardholder();

    void set_clock(Clock clock) { clock_ = std::move(clock); }
    void set_trace(std::function<void(const TraceEntry&)> trace);
    TransitConfig& transit() { return transit_; }

private:
    struct Session;  // a connected card with its purse selected
    Result<Session, FlowError> open_card();
    Result<TerminalId, FlowError> open_psam();
    Result<RecoveryOutcome, FlowError> recover_card(const PurseInfo& info);
    // INIT → 80 70 → [80 DC …] → intent → DEBIT → 80 72 → record.
    Result<TransactionRecord, FlowError> debit(const PurseInfo& info, TransactionRecord draft,
                                               const std::vector<std::pair<std::uint8_t, Bytes>>& capp_updates);

    Reader& card_reader_;
    Reader& psam_reader_;
    CardChannel card_channel_;
    CardChannel psam_channel_;
    TransactionQueue& queue_;
    Hotlist& hotlist_;
    TransitConfig transit_;
    Clock clock_ = [] { return std::chrono::system_clock::now(); };
    std::optional<TerminalId> terminal_id_;
};

}  // namespace coconut::sdk
