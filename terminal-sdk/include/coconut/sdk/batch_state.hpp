/// @file
/// The terminal's batch state: the batch number (field 60), the STAN counter (field 11) and the totals of
/// the current batch as the host counts them (the 0500's fields 74–77 and 86–89). The queue log keeps it
/// (queue.hpp, record kinds 5 and 6), so an acknowledgement and the count it adds are one durable append.
///
/// STANs are reserved in blocks: the log records the first STAN not yet reserved, so a restart continues
/// there and a STAN never repeats inside a batch (a clinic hold's ledger id is derive_id(41 ‖ batch ‖
/// STAN)); a crash skips at most one block.
#pragma once

#include <coconut/core/bytes.hpp>
#include <coconut/core/result.hpp>
#include <coconut/iso8583/profile.hpp>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

namespace coconut::sdk {

struct TransactionRecord;
enum class LinkKind : std::uint8_t;

/// The terminal's totals of the current batch as the host counts them (ISO8583.md §4.7): what it booked
/// (00; 59 for a load confirmation) and the reversals it answered 00 — fields 74–77 and 86–89 of the 0500,
/// one definition for both ends (coconut/iso8583/profile.hpp).
using BatchTotals = iso8583::BatchTotalsFields;

inline constexpr std::uint32_t stan_max = 999'999;  ///< field 11 is n6; 0 is not used

/// The STAN `count` places after `stan`, wrapping from 999999 to 1.
std::uint32_t advance_stan(std::uint32_t stan, std::uint32_t count);

/// The terminal's batch: number (field 60), the STAN counter and the totals the 0500 reconciliation sends.
struct BatchState {
    std::uint32_t batch_number = 1;
    std::uint32_t next_stan = 1;      ///< the next STAN handed out
    std::uint32_t reserved_left = 0;  ///< STANs from next_stan on that the log already accounts for
    BatchTotals totals;

    /// STANs reserved per durable write: a crash skips at most this many.
    static constexpr std::uint32_t stan_block_size = 100;

    /// The first STAN a restart may use: every STAN before it may have been handed out.
    std::uint32_t reserved_end() const { return advance_stan(next_stan, reserved_left); }
    /// Adds a record the host booked (00; 59 for a load confirmation) to the totals.
    void count(const TransactionRecord& record);
    /// Adds a credit the host booked online at once: a medical refund answered 00 (0210 3 = 200030).
    void count_credit(std::uint32_t amount_fen);
    /// Adds a reversal answered 00 online (0400 → 0410), with the amount sent in its field 4.
    void count_reversal(LinkKind original, std::uint32_t amount_fen);
    /// 0510 balanced: the next batch number, zero totals (the STAN counter goes on).
    void close();

    friend bool operator==(const BatchState&, const BatchState&) = default;
};

/// The batch-state payload of queue record kinds 5 and 6 (queue.hpp):
///   version u8 (1) ‖ batch number u32 ‖ first unreserved STAN u32 ‖ totals 8 × u64 (credits count,
///   credit reversals count, debits count, debit reversals count, credits fen, credit reversals fen,
///   debits fen, debit reversals fen)
/// A decoded state has reserved_left = 0 and next_stan = the first unreserved STAN.
inline constexpr std::uint8_t batch_state_version = 1;
inline constexpr std::size_t batch_state_size = 1 + 4 + 4 + 8 * 8;
Bytes encode_batch_state(const BatchState& state);
std::optional<BatchState> decode_batch_state(ByteView payload);

/// The text file the SDK kept the batch state in before the queue log did (queue format 1; read once, when
/// an old queue is converted):
///   "coconut-terminal-batch 1\nbatch N\nstan S\ndebits C F\ncredits C F\ncredit_reversals C F\n"
///   "debit_reversals C F\n"   (S: the first unreserved STAN)
/// nullopt when the file is missing; an error when it cannot be read or is damaged.
Result<std::optional<BatchState>, std::string> read_legacy_batch_file(const std::filesystem::path& path);

}  // namespace coconut::sdk
