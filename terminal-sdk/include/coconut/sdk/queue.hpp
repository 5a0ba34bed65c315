/// @file
/// The store-and-forward queue: every completed card transaction is durable on the terminal before the
/// flow returns, survives kill -9, and leaves only when the clearing acknowledged it. The same log keeps
/// the terminal's batch state (batch_state.hpp: batch number, STAN reservations, batch totals), so an
/// acknowledgement and the totals it adds are one append: after a crash they never disagree.
///
/// Storage: one append-only log file, preallocated in 1 MiB steps (so fdatasync flushes data only).
/// Format 2 (the full description, with format 1 and the conversion: terminal-sdk/QUEUE-FORMAT.md):
///   file header  "COCOQUE2" ‖ 8 zero bytes
///   record       length u32 (of kind..payload) ‖ kind u8 ‖ sequence u64 ‖ payload ‖ SHA-256(length..payload)[0..8]
///   kinds        1 transaction (payload: TransactionRecord, 96 bytes; `intent_sequence` resolves an intent)
///                2 acknowledgement (payload: count u32 ‖ sequences u64…)
///                3 debit intent (payload: TransactionRecord without TAC/MAC2): written before DEBIT is sent
///                4 intent abandoned (payload: intent sequence u64): the card proved the debit never happened
///                5 acknowledgement with the batch state after it (payload: batch state ‖ count u32 ‖
///                  sequences u64…): the records the host booked, counted in the same append
///                6 batch state (payload: batch state, 73 bytes): a STAN block reserved, a reversal
///                  (or a medical refund) counted, a batch closed. The last kind 5 or 6 record holds the current state.
/// Online flows use the same kinds: a load or a clinic hold is an intent (written before its 0200 / 0100
/// goes out); what the clearing must still be told (load confirmation 0220, clinic completion 0220,
/// reversal advice 0420) is a transaction record with its `link` kind, uploaded until acknowledged.
/// The end of the log is the first zero length; only zeros may follow it. A record whose checksum fails is a write torn by a crash
/// only if nothing but zeros follows it; then it is dropped (the flow that wrote it never returned). Any
/// other damage refuses to open the queue — records are never silently lost.
/// When most of the log is dead (acknowledged) it is rewritten: the batch state, then the live records, to
/// a new file, fsync, rename, fsync the directory.
///
/// A format 1 log ("COCOQUE1", the same kinds 1–4, the batch state in a separate text file) is converted
/// once by open(): the new log is written beside it and renamed over it, and only then is the old batch
/// file removed. A format 2 log found with an old batch file beside it is one whose conversion was cut
/// after the rename: the log already holds that state, and the file is removed.
#pragma once

#include <coconut/crypto/card_crypto.hpp>
#include <coconut/core/result.hpp>
#include <coconut/sdk/apps.hpp>
#include <coconut/sdk/batch_state.hpp>

#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <vector>

namespace coconut::sdk {

/// How a transit tap was priced (TransactionRecord::tap_kind).
enum class TapKind : std::uint8_t {
    none = 0,        ///< shop purchase or load
    flat = 1,        ///< flat fare
    entry = 2,       ///< tap in (fare 0 unless an unfinished journey was charged with it)
    exit = 3,        ///< tap out, fare by the table
    unfinished = 4,  ///< an entry older than the journey limit, charged the line's maximum fare at this tap
};

/// What a record is on the clearing link (clearing/ISO8583.md §4) — how upload() sends it.
enum class LinkKind : std::uint8_t {
    offline_purchase = 0,   ///< 0320 (type 06 / 09)
    load_confirmation = 1,  ///< 0220, 3 = 210000 (280000 if `carried`, 200000 if `refund`), with the card's load TAC (type 02)
    load_reversal = 2,      ///< 0420, 3 = 210000 (280000 if `carried`, 200000 if `refund`): the card was not credited (type 02)
    clinic_completion = 3,  ///< 0220, 3 = 003000: posts the hold for amount_fen (the medical part)
    clinic_reversal = 4,    ///< 0420, 3 = 003000: voids the hold (amount_fen = the amount held)
    clinic_hold = 5,        ///< an intent only: the 0100 went out, its outcome is not settled yet
};
std::string_view to_string(LinkKind kind);
inline constexpr std::uint8_t link_kind_max = 5;

/// One card transaction as the terminal records and uploads it (its clearing id is (ASN, ATC, type)).
struct TransactionRecord {
    Asn asn{};
    std::array<std::uint8_t, 8> issuer_id{};
    std::uint8_t type = 0;  ///< 02 load, 06 purchase, 09 CAPP purchase
    std::uint16_t atc = 0;  ///< the ATC INITIALIZE reported (offline for purchases, online for loads)
    std::uint32_t amount_fen = 0;
    std::uint32_t balance_before_fen = 0;
    std::uint32_t balance_after_fen = 0;
    TerminalId terminal_id{};
    std::uint32_t terminal_serial = 0;
    crypto::CardDateTime when;
    crypto::Mac4 tac{};
    crypto::Mac4 mac2{};
    bool recovered = false;        ///< completed by recover() (GET TRANSACTION PROVE) rather than the DEBIT answer
    bool unproven = false;         ///< the card's log shows the debit but no proof could be read (clearing flags it)
    bool mac2_unverified = false;  ///< the PSAM could not verify the card's MAC2 (the debit happened; TAC decides)
    /// A load funded by the card's carried holding (a replaced card's balance): its 0200, 0220 and 0420 carry
    /// processing code 280000 instead of 210000 (clearing/ISO8583.md §4.2a). Flag bit 8 of the record.
    bool carried = false;
    /// A refund credit: a purchase refunded to the card, funded by the refunding participant's purse payable;
    /// its 0200, 0220 and 0420 carry processing code 200000 (clearing/ISO8583.md §4.10). Flag bit 16.
    bool refund = false;
    TapKind tap_kind = TapKind::none;
    std::uint16_t line = 0;
    std::uint16_t station = 0;
    std::uint32_t vehicle = 0;
    std::uint16_t entry_station = 0;
    std::uint64_t intent_sequence = 0;  ///< the intent this record completes (0: none)
    /// Online records (link ≠ offline_purchase): the original request (0200 / 0100) they belong to —
    /// field 90 of the advice names it, and a clinic hold's ledger id is derive_id(41 ‖ batch ‖ STAN).
    LinkKind link = LinkKind::offline_purchase;
    std::uint32_t stan = 0;                     ///< field 11 of the original request
    std::array<std::uint8_t, 5> transmitted{};  ///< its field 7, MMDDhhmmss (UTC) as BCD
    std::uint32_t batch_number = 0;             ///< its field 60

    std::string asn_digits() const { return bcd_to_digits(asn); }
};

inline constexpr std::size_t transaction_record_size = 96;
Bytes encode_record(const TransactionRecord& record);
std::optional<TransactionRecord> decode_record(ByteView payload);

/// A record in the queue with its sequence number (what TransactionQueue::acknowledge takes).
struct QueuedTransaction {
    std::uint64_t sequence = 0;
    TransactionRecord record;
};

enum class QueueErrorCode : std::uint8_t {
    io_error,
    corrupt,
    full,
    unknown_sequence,
    too_many_intents,
    no_intent,
    bad_batch_file,  ///< the old batch file an old queue is converted with is damaged or unreadable
    bad_limits,      ///< QueueLimits out of range
};

/// Why the queue refused an operation (the message names the file and the problem).
struct QueueError {
    QueueErrorCode code;
    std::string message;
};

/// The bounds of a TransactionQueue.
struct QueueLimits {
    /// Unacknowledged transactions a terminal holds: a validator offline for a whole service day at one tap
    /// every two seconds makes ~43,000. Past this the terminal stops taking payments (queue full).
    std::size_t capacity = 50000;
    /// Largest acknowledgement: one upload batch (1 to ack_batch_limit).
    std::size_t ack_batch_max = 1024;
    /// Debits whose outcome is unknown until their card returns. Each is a passenger who pulled the card
    /// mid-debit; more than this on one terminal means something is wrong with the reader.
    std::size_t open_intents_max = 32;
    /// Rewrite the log when acknowledged records take more than this and outnumber the live ones 3:1.
    std::uint64_t compaction_dead_bytes_min = 4u << 20;
};

/// The most sequences one acknowledgement record holds (its payload stays within the record size limit).
inline constexpr std::size_t ack_batch_limit = 2000;

/// The durable store-and-forward queue: records awaiting upload, debit intents, the batch state (see the file comment).
class TransactionQueue {
public:
    /// Creates the log when missing. An old queue (format 1) is converted, together with its batch state
    /// file (`old_batch_file`; empty: the queue path + ".batch", where the SDK's CLI and the simulator kept
    /// it), before the queue opens.
    static Result<std::unique_ptr<TransactionQueue>, QueueError> open(const std::filesystem::path& path, QueueLimits limits = {},
                                                                      const std::filesystem::path& old_batch_file = {});
    ~TransactionQueue();
    TransactionQueue(const TransactionQueue&) = delete;
    TransactionQueue& operator=(const TransactionQueue&) = delete;

    /// Durable on return. A record completing an intent (intent_sequence ≠ 0) resolves it in the same write.
    Result<std::uint64_t, QueueError> append(const TransactionRecord& record);
    /// Written durably before DEBIT goes to the card. Several may be open (cards pulled mid-debit that have
    /// not come back yet), up to QueueLimits::open_intents_max.
    Result<std::uint64_t, QueueError> record_intent(const TransactionRecord& intent);
    /// The card proved the intended debit never happened.
    Status<QueueError> abandon_intent(std::uint64_t intent_sequence);
    std::vector<QueuedTransaction> open_intents() const;

    /// Oldest unacknowledged transactions first.
    std::vector<QueuedTransaction> batch(std::size_t max) const;
    /// Deletes acknowledged transactions (durably). Unknown sequences are refused, nothing is deleted.
    Status<QueueError> acknowledge(std::span<const std::uint64_t> sequences);
    /// The same, and counts `booked` (a subset of `sequences`: the records the host booked) into the batch
    /// totals in the same durable append.
    Status<QueueError> acknowledge(std::span<const std::uint64_t> sequences, std::span<const std::uint64_t> booked);

    /// The batch state (batch_state.hpp) as the log holds it.
    const BatchState& batch_state() const { return batch_; }
    /// The next STAN (1–999999, wrapping); one durable append per BatchState::stan_block_size STANs.
    Result<std::uint32_t, QueueError> take_stan();
    /// Gives up the STANs reserved and not handed out: the next take_stan() starts a new block after them,
    /// as a restarted process does. A new ClearingClient on this log calls it, so that a client reconnected
    /// in the same process numbers its requests as one started afresh.
    void release_stan_reservation();
    /// A reversal the host answered 00 online (it never entered the queue), counted durably.
    Status<QueueError> count_reversal(LinkKind original, std::uint32_t amount_fen);
    /// A credit the host booked online at once (a medical refund answered 00), counted durably.
    Status<QueueError> count_credit(std::uint32_t amount_fen);
    /// 0510 balanced: the next batch number and zero totals, durably.
    Status<QueueError> close_batch();

    std::size_t size() const { return live_.size(); }
    bool full() const { return live_.size() >= limits_.capacity; }
    const std::filesystem::path& path() const { return path_; }
    const QueueLimits& limits() const { return limits_; }

private:
    TransactionQueue(std::filesystem::path path, QueueLimits limits);
    Status<QueueError> load();
    Result<std::uint64_t, QueueError> write(std::uint8_t kind, ByteView payload);
    Status<QueueError> save_batch_state(const BatchState& state);
    Status<QueueError> compact_if_worthwhile();

    std::filesystem::path path_;
    QueueLimits limits_;
    int fd_ = -1;
    std::uint64_t end_offset_ = 0;
    std::uint64_t allocated_ = 0;
    std::uint64_t next_sequence_ = 1;
    std::uint64_t dead_bytes_ = 0;
    std::map<std::uint64_t, TransactionRecord> live_;
    std::map<std::uint64_t, TransactionRecord> intents_;
    BatchState batch_;
};

}  // namespace coconut::sdk
