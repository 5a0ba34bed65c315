#include "records.hpp"

#include <coconut/core/assert.hpp>

#include <algorithm>
#include <memory>
#include <stdexcept>

namespace coconut::ledger::records {
namespace {

// Fixed-offset big-endian field access over a record buffer (byte order itself lives in bytes.hpp).
class Out {
public:
    explicit Out(std::uint8_t* data) : data_(data) {}
    void u(std::size_t offset, std::uint64_t value, std::size_t width) {
        COCONUT_ASSERT(width <= 8);
        const auto bytes = be_array<8>(value);  // no allocation: this runs ~30 times per transfer
        std::copy(bytes.end() - static_cast<std::ptrdiff_t>(width), bytes.end(), data_ + offset);
    }
    void id(std::size_t offset, const Id& value) {
        u(offset, value.high, 8);
        u(offset + 8, value.low, 8);
    }

private:
    std::uint8_t* data_;
};

class In {
public:
    explicit In(ByteView data) : data_(data) {}
    std::uint64_t u(std::size_t offset, std::size_t width) const { return read_be(data_.subspan(offset, width)); }
    Id id(std::size_t offset) const { return Id{u(offset, 8), u(offset + 8, 8)}; }
    bool zero_from(std::size_t offset) const {
        return std::all_of(data_.begin() + static_cast<std::ptrdiff_t>(offset), data_.end(), [](std::uint8_t b) { return b == 0; });
    }

private:
    ByteView data_;
};

// Account field offsets.
enum : std::size_t {
    a_id = 0,
    a_debits_pending = 16,
    a_debits_posted = 24,
    a_credits_pending = 32,
    a_credits_posted = 40,
    a_user_data_128 = 48,
    a_user_data_64 = 64,
    a_user_data_32 = 72,
    a_ledger = 76,
    a_code = 80,
    a_flags = 82,
    a_timestamp = 84,
    a_reserved = 92,
};
// Transfer field offsets.
enum : std::size_t {
    t_id = 0,
    t_debit = 16,
    t_credit = 32,
    t_amount = 48,
    t_pending_id = 56,
    t_user_data_128 = 72,
    t_user_data_64 = 88,
    t_user_data_32 = 96,
    t_timeout = 100,
    t_ledger = 104,
    t_code = 108,
    t_flags = 110,
    t_timestamp = 112,
    t_reserved = 120,
};
static_assert(a_reserved <= account_size && t_reserved <= transfer_size);

}  // namespace

IdBytes encode(const Id& id) {
    IdBytes out{};
    Out(out.data()).id(0, id);
    return out;
}

Id decode_id(ByteView bytes) {
    COCONUT_ASSERT(bytes.size() >= id_size);
    return In(bytes).id(0);
}

AccountBytes encode(const Account& a) {
    AccountBytes out{};
    Out o(out.data());
    o.id(a_id, a.id);
    o.u(a_debits_pending, a.debits_pending, 8);
    o.u(a_debits_posted, a.debits_posted, 8);
    o.u(a_credits_pending, a.credits_pending, 8);
    o.u(a_credits_posted, a.credits_posted, 8);
    o.id(a_user_data_128, a.user_data_128);
    o.u(a_user_data_64, a.user_data_64, 8);
    o.u(a_user_data_32, a.user_data_32, 4);
    o.u(a_ledger, a.ledger, 4);
    o.u(a_code, a.code, 2);
    o.u(a_flags, a.flags, 2);
    o.u(a_timestamp, a.timestamp, 8);
    return out;
}

std::optional<Account> decode_account(ByteView bytes) {
    if (bytes.size() != account_size) return std::nullopt;
    In in(bytes);
    if (!in.zero_from(a_reserved)) return std::nullopt;
    Account a;
    a.id = in.id(a_id);
    a.debits_pending = in.u(a_debits_pending, 8);
    a.debits_posted = in.u(a_debits_posted, 8);
    a.credits_pending = in.u(a_credits_pending, 8);
    a.credits_posted = in.u(a_credits_posted, 8);
    a.user_data_128 = in.id(a_user_data_128);
    a.user_data_64 = in.u(a_user_data_64, 8);
    a.user_data_32 = static_cast<std::uint32_t>(in.u(a_user_data_32, 4));
    a.ledger = static_cast<std::uint32_t>(in.u(a_ledger, 4));
    a.code = static_cast<std::uint16_t>(in.u(a_code, 2));
    a.flags = static_cast<std::uint16_t>(in.u(a_flags, 2));
    a.timestamp = in.u(a_timestamp, 8);
    return a;
}

TransferBytes encode(const Transfer& t) {
    TransferBytes out{};
    Out o(out.data());
    o.id(t_id, t.id);
    o.id(t_debit, t.debit_account_id);
    o.id(t_credit, t.credit_account_id);
    o.u(t_amount, t.amount, 8);
    o.id(t_pending_id, t.pending_id);
    o.id(t_user_data_128, t.user_data_128);
    o.u(t_user_data_64, t.user_data_64, 8);
    o.u(t_user_data_32, t.user_data_32, 4);
    o.u(t_timeout, t.timeout_s, 4);
    o.u(t_ledger, t.ledger, 4);
    o.u(t_code, t.code, 2);
    o.u(t_flags, t.flags, 2);
    o.u(t_timestamp, t.timestamp, 8);
    return out;
}

std::optional<Transfer> decode_transfer(ByteView bytes) {
    if (bytes.size() != transfer_size) return std::nullopt;
    In in(bytes);
    if (!in.zero_from(t_reserved)) return std::nullopt;
    Transfer t;
    t.id = in.id(t_id);
    t.debit_account_id = in.id(t_debit);
    t.credit_account_id = in.id(t_credit);
    t.amount = in.u(t_amount, 8);
    t.pending_id = in.id(t_pending_id);
    t.user_data_128 = in.id(t_user_data_128);
    t.user_data_64 = in.u(t_user_data_64, 8);
    t.user_data_32 = static_cast<std::uint32_t>(in.u(t_user_data_32, 4));
    t.timeout_s = static_cast<std::uint32_t>(in.u(t_timeout, 4));
    t.ledger = static_cast<std::uint32_t>(in.u(t_ledger, 4));
    t.code = static_cast<std::uint16_t>(in.u(t_code, 2));
    t.flags = static_cast<std::uint16_t>(in.u(t_flags, 2));
    t.timestamp = in.u(t_timestamp, 8);
    return t;
}

BalanceBytes encode_balance(const Account& a) {
    BalanceBytes out{};
    Out o(out.data());
    o.u(0, a.debits_pending, 8);
    o.u(8, a.debits_posted, 8);
    o.u(16, a.credits_pending, 8);
    o.u(24, a.credits_posted, 8);
    return out;
}

std::optional<Balance> decode_balance(std::uint64_t timestamp, ByteView bytes) {
    if (bytes.size() != balance_size) return std::nullopt;
    In in(bytes);
    return Balance{timestamp, in.u(0, 8), in.u(8, 8), in.u(16, 8), in.u(24, 8)};
}

AccountTimeKey account_time_key(const Id& account_id, std::uint64_t timestamp) {
    AccountTimeKey out{};
    Out o(out.data());
    o.id(0, account_id);
    o.u(id_size, timestamp, 8);
    return out;
}

ExpiryKey expiry_key(std::uint64_t expires_at_ns, const Id& transfer_id) {
    ExpiryKey out{};
    Out o(out.data());
    o.u(0, expires_at_ns, 8);
    o.id(timestamp_size, transfer_id);
    return out;
}

SequenceKey sequence_key(std::uint64_t sequence) { return be_array<8>(sequence); }

std::array<std::uint8_t, head_size> encode(const JournalHead& head) {
    std::array<std::uint8_t, head_size> out{};
    Out o(out.data());
    o.u(0, head.sequence, 8);
    std::copy(head.hash.begin(), head.hash.end(), out.begin() + 8);
    o.u(8 + hash_size, head.timestamp, 8);
    return out;
}

std::optional<JournalHead> decode_head(ByteView bytes) {
    if (bytes.size() != head_size) return std::nullopt;
    In in(bytes);
    JournalHead head;
    head.sequence = in.u(0, 8);
    std::copy_n(bytes.begin() + 8, hash_size, head.hash.begin());
    head.timestamp = in.u(8 + hash_size, 8);
    return head;
}

Bytes encode_journal_value(const JournalEntry& entry) {
    Bytes out;
    out.reserve(1 + 8 + hash_size + entry.payload.size());
    out.push_back(static_cast<std::uint8_t>(entry.kind));
    append_be(out, entry.timestamp, 8);
    append(out, entry.hash);
    append(out, entry.payload);
    return out;
}

std::optional<JournalEntry> decode_journal(std::uint64_t sequence, ByteView bytes) {
    constexpr std::size_t header = journal_payload_offset;
    if (bytes.size() < header) return std::nullopt;
    JournalEntry entry;
    entry.sequence = sequence;
    const std::uint8_t kind = bytes[0];
    if (kind < static_cast<std::uint8_t>(JournalKind::account_created) || kind > static_cast<std::uint8_t>(JournalKind::id_failed)) {
        return std::nullopt;
    }
    entry.kind = static_cast<JournalKind>(kind);
    entry.timestamp = read_be(bytes.subspan(1, 8));
    std::copy_n(bytes.begin() + 9, hash_size, entry.hash.begin());
    entry.payload.assign(bytes.begin() + header, bytes.end());
    return entry;
}

Hash chain_hash(const Hash& previous, std::uint64_t sequence, JournalKind kind, std::uint64_t timestamp, ByteView payload) {
    Bytes message;
    message.reserve(hash_size + 8 + 1 + 8 + payload.size());
    append(message, previous);
    append_be(message, sequence, 8);
    message.push_back(static_cast<std::uint8_t>(kind));
    append_be(message, timestamp, 8);
    append(message, payload);
    return sha256(message);
}

}  // namespace coconut::ledger::records
