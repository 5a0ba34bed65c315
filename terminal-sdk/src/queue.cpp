// The store-and-forward queue log (format in queue.hpp).
#include <coconut/core/durable_file.hpp>
#include <coconut/sdk/queue.hpp>

#include "checksum.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cassert>
#include <cerrno>
#include <cstring>

namespace coconut::sdk {
namespace {

constexpr std::array<std::uint8_t, 8> queue_magic{'C', 'O', 'C', 'O', 'Q', 'U', 'E', '1'};
constexpr std::size_t file_header_size = 16;
// length(4) ‖ kind(1) ‖ sequence(8)
constexpr std::size_t record_prefix_size = 13;
// The log grows in steps this large so appends do not change the file size (cheap fdatasync).
constexpr std::uint64_t allocation_step = 1 << 20;
// Largest record payload: an acknowledgement of ack_batch_max sequences is 4 + 8 × 1024 bytes.
constexpr std::size_t payload_max = 16 * 1024;

constexpr std::uint8_t kind_transaction = 1;
constexpr std::uint8_t kind_ack = 2;
constexpr std::uint8_t kind_intent = 3;
constexpr std::uint8_t kind_abandon = 4;

Bytes frame(std::uint8_t kind, std::uint64_t sequence, ByteView payload) {
    Bytes out;
    append_be(out, 1 + 8 + payload.size(), 4);
    out.push_back(kind);
    append_be(out, sequence, 8);
    append(out, payload);
    const auto sum = checksum(out);
    out.insert(out.end(), sum.begin(), sum.end());
    return out;
}

QueueError io_error(const std::filesystem::path& path, std::string_view what) {
    return QueueError{QueueErrorCode::io_error, fmt::format("{}: {}: {}", path.string(), what, std::strerror(errno))};
}

template <std::size_t N>
void put(Bytes& out, const std::array<std::uint8_t, N>& a) {
    out.insert(out.end(), a.begin(), a.end());
}
template <std::size_t N>
void get(ByteView in, std::size_t& pos, std::array<std::uint8_t, N>& a) {
    std::copy(in.begin() + static_cast<std::ptrdiff_t>(pos), in.begin() + static_cast<std::ptrdiff_t>(pos + N), a.begin());
    pos += N;
}

}  // namespace

// ---- record codec ------------------------------------------------------------------------------

std::string_view to_string(LinkKind kind) {
    switch (kind) {
        case LinkKind::offline_purchase: return "offline_purchase";
        case LinkKind::load_confirmation: return "load_confirmation";
        case LinkKind::load_reversal: return "load_reversal";
        case LinkKind::clinic_completion: return "clinic_completion";
        case LinkKind::clinic_reversal: return "clinic_reversal";
        case LinkKind::clinic_hold: return "clinic_hold";
    }
    return "?";
}

Bytes encode_record(const TransactionRecord& r) {
    Bytes out;
    put(out, r.asn);
    put(out, r.issuer_id);
    out.push_back(r.type);
    append_be(out, r.atc, 2);
    append_be(out, r.amount_fen, 4);
    append_be(out, r.balance_before_fen, 4);
    append_be(out, r.balance_after_fen, 4);
    put(out, r.terminal_id);
    append_be(out, r.terminal_serial, 4);
    put(out, r.when.date);
    put(out, r.when.time);
    put(out, r.tac);
    put(out, r.mac2);
    out.push_back(static_cast<std::uint8_t>((r.recovered ? 1 : 0) | (r.unproven ? 2 : 0) | (r.mac2_unverified ? 4 : 0)));
    out.push_back(static_cast<std::uint8_t>(r.tap_kind));
    append_be(out, r.line, 2);
    append_be(out, r.station, 2);
    append_be(out, r.vehicle, 4);
    append_be(out, r.entry_station, 2);
    append_be(out, r.intent_sequence, 8);
    out.push_back(static_cast<std::uint8_t>(r.link));
    append_be(out, r.stan, 4);
    put(out, r.transmitted);
    append_be(out, r.batch_number, 4);
    assert(out.size() <= transaction_record_size);
    out.resize(transaction_record_size, 0);  // reserved tail
    return out;
}

std::optional<TransactionRecord> decode_record(ByteView in) {
    if (in.size() != transaction_record_size) return std::nullopt;
    TransactionRecord r;
    std::size_t pos = 0;
    get(in, pos, r.asn);
    get(in, pos, r.issuer_id);
    r.type = in[pos++];
    r.atc = read_be16(in.subspan(pos, 2)), pos += 2;
    r.amount_fen = read_be32(in.subspan(pos, 4)), pos += 4;
    r.balance_before_fen = read_be32(in.subspan(pos, 4)), pos += 4;
    r.balance_after_fen = read_be32(in.subspan(pos, 4)), pos += 4;
    get(in, pos, r.terminal_id);
    r.terminal_serial = read_be32(in.subspan(pos, 4)), pos += 4;
    get(in, pos, r.when.date);
    get(in, pos, r.when.time);
    get(in, pos, r.tac);
    get(in, pos, r.mac2);
    const std::uint8_t flags = in[pos++];
    r.recovered = (flags & 1) != 0;
    r.unproven = (flags & 2) != 0;
    r.mac2_unverified = (flags & 4) != 0;
    const std::uint8_t tap = in[pos++];
    if (tap > static_cast<std::uint8_t>(TapKind::unfinished)) return std::nullopt;
    r.tap_kind = static_cast<TapKind>(tap);
    r.line = read_be16(in.subspan(pos, 2)), pos += 2;
    r.station = read_be16(in.subspan(pos, 2)), pos += 2;
    r.vehicle = read_be32(in.subspan(pos, 4)), pos += 4;
    r.entry_station = read_be16(in.subspan(pos, 2)), pos += 2;
    r.intent_sequence = read_be(in.subspan(pos, 8)), pos += 8;
    const std::uint8_t link = in[pos++];
    if (link > link_kind_max) return std::nullopt;
    r.link = static_cast<LinkKind>(link);
    r.stan = read_be32(in.subspan(pos, 4)), pos += 4;
    get(in, pos, r.transmitted);
    r.batch_number = read_be32(in.subspan(pos, 4)), pos += 4;
    return r;
}

// ---- queue -------------------------------------------------------------------------------------

TransactionQueue::TransactionQueue(std::filesystem::path path, QueueLimits limits)
    : path_(std::move(path)), limits_(limits) {}

TransactionQueue::~TransactionQueue() {
    if (fd_ >= 0) ::close(fd_);
}

Result<std::unique_ptr<TransactionQueue>, QueueError> TransactionQueue::open(const std::filesystem::path& path,
                                                                            QueueLimits limits) {
    std::unique_ptr<TransactionQueue> queue(new TransactionQueue(path, limits));
    if (!std::filesystem::exists(path)) {
        Bytes header(queue_magic.begin(), queue_magic.end());
        header.resize(file_header_size, 0);
        if (auto written = write_file_atomically(path, header); !written)
            return Unexpected{QueueError{QueueErrorCode::io_error, written.error().message()}};
    }
    queue->fd_ = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (queue->fd_ < 0) return Unexpected{io_error(path, "open")};
    if (auto loaded = queue->load(); !loaded) return Unexpected{loaded.error()};
    return queue;
}

Status<QueueError> TransactionQueue::load() {
    struct stat st {};
    if (::fstat(fd_, &st) != 0) return Unexpected{io_error(path_, "fstat")};
    const auto size = static_cast<std::size_t>(st.st_size);
    Bytes file(size);
    if (size > 0 && ::pread(fd_, file.data(), size, 0) != static_cast<ssize_t>(size)) return Unexpected{io_error(path_, "read")};
    if (size < file_header_size || !std::equal(queue_magic.begin(), queue_magic.end(), file.begin()))
        return Unexpected{QueueError{QueueErrorCode::corrupt, path_.string() + ": not a coconut terminal queue"}};

    const auto corrupt = [&](std::size_t at, std::string_view why) {
        return Unexpected{QueueError{QueueErrorCode::corrupt,
                                     fmt::format("{}: damaged record at offset {} ({}); refusing to drop records", path_.string(), at, why)}};
    };
    std::size_t pos = file_header_size;
    while (pos + 4 <= size) {
        const std::size_t length = read_be32(ByteView(file).subspan(pos, 4));
        if (length == 0) {
            // The end of the log, when only the preallocated zeros follow. Anything else after a zero
            // length word is a damaged record with records behind it, which an append would overwrite.
            if (!std::all_of(file.begin() + static_cast<std::ptrdiff_t>(pos), file.end(), [](std::uint8_t b) { return b == 0; }))
                return corrupt(pos, "zero length with records after it");
            break;
        }
        const std::size_t total = 4 + length + checksum_size;
        const bool fits = length >= 9 && length <= payload_max + 9 && pos + total <= size;
        const bool valid = fits && [&] {
            const auto sum = checksum(ByteView(file).subspan(pos, 4 + length));
            return std::equal(sum.begin(), sum.end(), file.begin() + static_cast<std::ptrdiff_t>(pos + 4 + length));
        }();
        if (!valid) {
            // A torn final append: only zeros may follow the damaged bytes.
            const std::size_t torn_end = fits ? pos + total : std::min(size, pos + 4 + payload_max + 9 + checksum_size);
            const bool zeros_after = std::all_of(file.begin() + static_cast<std::ptrdiff_t>(std::min(torn_end, size)), file.end(),
                                                 [](std::uint8_t b) { return b == 0; });
            if (!zeros_after) return corrupt(pos, "checksum mismatch with records after it");
            const Bytes zeros(std::min(torn_end, size) - pos, 0);
            if (::pwrite(fd_, zeros.data(), zeros.size(), static_cast<off_t>(pos)) != static_cast<ssize_t>(zeros.size()) ||
                ::fdatasync(fd_) != 0)
                return Unexpected{io_error(path_, "clear torn record")};
            break;
        }
        const std::uint8_t kind = file[pos + 4];
        const std::uint64_t sequence = read_be(ByteView(file).subspan(pos + 5, 8));
        const ByteView payload = ByteView(file).subspan(pos + record_prefix_size, length - 9);
        next_sequence_ = std::max(next_sequence_, sequence + 1);
        switch (kind) {
            case kind_transaction: case kind_intent: {
                auto record = decode_record(payload);
                if (!record) return corrupt(pos, "transaction payload");
                if (kind == kind_intent) {
                    intents_.emplace(sequence, *record);
                } else {
                    intents_.erase(record->intent_sequence);
                    live_.emplace(sequence, *record);
                }
                break;
            }
            case kind_ack: {
                if (payload.size() < 4) return corrupt(pos, "acknowledgement payload");
                const std::size_t count = read_be32(payload.first(4));
                if (payload.size() != 4 + 8 * count) return corrupt(pos, "acknowledgement length");
                for (std::size_t i = 0; i < count; ++i) live_.erase(read_be(payload.subspan(4 + 8 * i, 8)));
                dead_bytes_ += total;
                break;
            }
            case kind_abandon: {
                if (payload.size() != 8) return corrupt(pos, "abandon payload");
                intents_.erase(read_be(payload));
                dead_bytes_ += total;
                break;
            }
            default: return corrupt(pos, "unknown record kind");
        }
        pos += total;
    }
    end_offset_ = pos;
    allocated_ = size;
    return Ok{};
}

Result<std::uint64_t, QueueError> TransactionQueue::write(std::uint8_t kind, ByteView payload) {
    assert(payload.size() <= payload_max);
    const std::uint64_t sequence = next_sequence_;
    const Bytes bytes = frame(kind, sequence, payload);
    if (end_offset_ + bytes.size() + 4 > allocated_) {
        const std::uint64_t new_size = ((end_offset_ + bytes.size() + 4) / allocation_step + 1) * allocation_step;
        // Zeros written for real: fallocate'd extents are "unwritten", and converting them makes every
        // later fdatasync a journal commit (milliseconds instead of tens of microseconds).
        const Bytes zeros(new_size - allocated_, 0);
        if (::pwrite(fd_, zeros.data(), zeros.size(), static_cast<off_t>(allocated_)) != static_cast<ssize_t>(zeros.size()) ||
            ::fsync(fd_) != 0)
            return Unexpected{io_error(path_, "grow log")};
        allocated_ = new_size;
    }
    if (::pwrite(fd_, bytes.data(), bytes.size(), static_cast<off_t>(end_offset_)) != static_cast<ssize_t>(bytes.size()))
        return Unexpected{io_error(path_, "append")};
    if (::fdatasync(fd_) != 0) return Unexpected{io_error(path_, "fdatasync")};
    end_offset_ += bytes.size();
    ++next_sequence_;
    return sequence;
}

Result<std::uint64_t, QueueError> TransactionQueue::append(const TransactionRecord& record) {
    const bool resolves = record.intent_sequence != 0;
    if (resolves && !intents_.contains(record.intent_sequence))
        return Unexpected{QueueError{QueueErrorCode::no_intent, fmt::format("no open intent {}", record.intent_sequence)}};
    if (!resolves && full())
        return Unexpected{QueueError{QueueErrorCode::full, fmt::format("queue full ({} unacknowledged)", live_.size())}};
    auto sequence = write(kind_transaction, encode_record(record));
    if (!sequence) return sequence;
    if (resolves) intents_.erase(record.intent_sequence);
    live_.emplace(*sequence, record);
    return sequence;
}

Result<std::uint64_t, QueueError> TransactionQueue::record_intent(const TransactionRecord& intent) {
    if (intents_.size() >= limits_.open_intents_max)
        return Unexpected{QueueError{QueueErrorCode::too_many_intents,
                                     fmt::format("{} debits await recovery; run recover with those cards", intents_.size())}};
    if (full()) return Unexpected{QueueError{QueueErrorCode::full, fmt::format("queue full ({} unacknowledged)", live_.size())}};
    auto sequence = write(kind_intent, encode_record(intent));
    if (!sequence) return sequence;
    intents_.emplace(*sequence, intent);
    return sequence;
}

Status<QueueError> TransactionQueue::abandon_intent(std::uint64_t intent_sequence) {
    if (!intents_.contains(intent_sequence))
        return Unexpected{QueueError{QueueErrorCode::no_intent, fmt::format("no open intent {}", intent_sequence)}};
    auto written = write(kind_abandon, be_bytes(intent_sequence, 8));
    if (!written) return Unexpected{written.error()};
    intents_.erase(intent_sequence);
    return Ok{};
}

std::vector<QueuedTransaction> TransactionQueue::open_intents() const {
    std::vector<QueuedTransaction> out;
    for (const auto& [sequence, record] : intents_) out.push_back({sequence, record});
    return out;
}

std::vector<QueuedTransaction> TransactionQueue::batch(std::size_t max) const {
    std::vector<QueuedTransaction> out;
    for (const auto& [sequence, record] : live_) {
        if (out.size() == max) break;
        out.push_back({sequence, record});
    }
    return out;
}

Status<QueueError> TransactionQueue::acknowledge(std::span<const std::uint64_t> sequences) {
    if (sequences.empty()) return Ok{};
    if (sequences.size() > limits_.ack_batch_max)
        return Unexpected{QueueError{QueueErrorCode::unknown_sequence,
                                     fmt::format("acknowledgement of {} exceeds the batch limit {}", sequences.size(), limits_.ack_batch_max)}};
    for (std::uint64_t s : sequences)
        if (!live_.contains(s))
            return Unexpected{QueueError{QueueErrorCode::unknown_sequence, fmt::format("sequence {} is not queued", s)}};
    Bytes payload = be_bytes(sequences.size(), 4);
    for (std::uint64_t s : sequences) append_be(payload, s, 8);
    auto written = write(kind_ack, payload);
    if (!written) return Unexpected{written.error()};
    for (std::uint64_t s : sequences) live_.erase(s);
    dead_bytes_ += payload.size() + record_prefix_size + checksum_size + sequences.size() * (transaction_record_size + record_prefix_size + checksum_size);
    return compact_if_worthwhile();
}

Status<QueueError> TransactionQueue::compact_if_worthwhile() {
    const std::uint64_t live_bytes = (live_.size() + intents_.size()) * (transaction_record_size + record_prefix_size + checksum_size);
    if (dead_bytes_ < limits_.compaction_dead_bytes_min || dead_bytes_ < 3 * live_bytes) return Ok{};
    Bytes file(queue_magic.begin(), queue_magic.end());
    file.resize(file_header_size, 0);
    for (const auto& [sequence, record] : live_) coconut::append(file, frame(kind_transaction, sequence, encode_record(record)));
    for (const auto& [sequence, record] : intents_) coconut::append(file, frame(kind_intent, sequence, encode_record(record)));
    const std::uint64_t end = file.size();
    file.resize((end / allocation_step + 1) * allocation_step, 0);
    if (auto written = write_file_atomically(path_, file); !written)
        return Unexpected{QueueError{QueueErrorCode::io_error, written.error().message()}};
    const int fd = ::open(path_.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) return Unexpected{io_error(path_, "reopen after compaction")};
    ::close(fd_);
    fd_ = fd;
    end_offset_ = end;
    allocated_ = file.size();
    dead_bytes_ = 0;
    return Ok{};
}

}  // namespace coconut::sdk
