// Stored layouts of the ledger's records and keys (clearing/LEDGER.md §2). Internal to the library.
// Every record is fixed-size and big-endian; decode() refuses a wrong size or non-zero reserved bytes
// so a damaged record is reported as corrupt instead of being used.
#pragma once

#include <coconut/core/sha256.hpp>
#include <coconut/ledger/ledger.hpp>

#include <array>
#include <optional>

namespace coconut::ledger::records {

inline constexpr std::size_t id_size = 16;
inline constexpr std::size_t account_size = 128;  // TigerBeetle's size; the tail is reserved (zero)
inline constexpr std::size_t transfer_size = 128;
inline constexpr std::size_t balance_size = 32;  // four u64 counters
inline constexpr std::size_t timestamp_size = 8;
inline constexpr std::size_t head_size = 8 + hash_size + 8;

using IdBytes = std::array<std::uint8_t, id_size>;
using AccountBytes = std::array<std::uint8_t, account_size>;
using TransferBytes = std::array<std::uint8_t, transfer_size>;
using BalanceBytes = std::array<std::uint8_t, balance_size>;
// account id ‖ timestamp: the key of the per-account indexes (history, transfers).
using AccountTimeKey = std::array<std::uint8_t, id_size + timestamp_size>;
// expires_at (ns) ‖ transfer id: the expiry index, ordered by due time.
using ExpiryKey = std::array<std::uint8_t, timestamp_size + id_size>;
using SequenceKey = std::array<std::uint8_t, 8>;

IdBytes encode(const Id& id);
Id decode_id(ByteView bytes);  // bytes.size() ≥ 16

AccountBytes encode(const Account& account);
std::optional<Account> decode_account(ByteView bytes);

TransferBytes encode(const Transfer& transfer);
std::optional<Transfer> decode_transfer(ByteView bytes);

BalanceBytes encode_balance(const Account& account);
std::optional<Balance> decode_balance(std::uint64_t timestamp, ByteView bytes);

AccountTimeKey account_time_key(const Id& account_id, std::uint64_t timestamp);
ExpiryKey expiry_key(std::uint64_t expires_at_ns, const Id& transfer_id);
SequenceKey sequence_key(std::uint64_t sequence);

std::array<std::uint8_t, head_size> encode(const JournalHead& head);
std::optional<JournalHead> decode_head(ByteView bytes);

// Journal value: kind (1) ‖ timestamp (8) ‖ hash (32) ‖ payload.
inline constexpr std::size_t journal_payload_offset = 1 + 8 + hash_size;
Bytes encode_journal_value(const JournalEntry& entry);
std::optional<JournalEntry> decode_journal(std::uint64_t sequence, ByteView bytes);
// SHA-256 of `message` (journal chain and derived ids): core's, which reuses one context per thread.
using coconut::sha256;
// The chain: SHA-256(previous ‖ sequence BE8 ‖ kind ‖ timestamp BE8 ‖ payload).
Hash chain_hash(const Hash& previous, std::uint64_t sequence, JournalKind kind, std::uint64_t timestamp, ByteView payload);

}  // namespace coconut::ledger::records
