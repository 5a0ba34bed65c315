// The store-and-forward queue log (format in queue.hpp).
#include <coconut/core/assert.hpp>
#include <coconut/core/durable_file.hpp>
#include <coconut/sdk/queue.hpp>

#include "checksum.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>

namespace coconut::sdk {
namespace {

// Format 1 (kinds 1–4, the batch state in a separate file) is only read, to convert it.
constexpr std::array<std::uint8_t, 8> queue_magic_v1{'C', 'O', 'C', 'O', 'Q', 'U', 'E', '1'};
constexpr std::array<std::uint8_t, 8> queue_magic{'C', 'O', 'C', 'O', 'Q', 'U', 'E', '2'};
constexpr std::size_t file_header_size = 16;
// length(4) ‖ kind(1) ‖ sequence(8)
constexpr std::size_t record_prefix_size = 13;
// The log grows in steps this large so appends do not change the file size (cheap fdatasync).
constexpr std::uint64_t allocation_step = 1 << 20;
// Largest record payload: an acknowledgement of ack_batch_limit sequences with the batch state.
constexpr std::size_t payload_max = 16 * 1024;
static_assert(batch_state_size + 4 + 8 * ack_batch_limit <= payload_max);

// No terminal appends 2^63 records (at 1,000 a second that takes 292 million years): a sequence that
// large is damage. Refusing it when reading and when writing keeps the count from wrapping to sequences
// still live, whose records would then be dropped.
constexpr std::uint64_t sequence_limit = std::uint64_t{1} << 63;

constexpr std::uint8_t kind_transaction = 1;
constexpr std::uint8_t kind_ack = 2;
constexpr std::uint8_t kind_intent = 3;
constexpr std::uint8_t kind_abandon = 4;
constexpr std::uint8_t kind_ack_with_state = 5;
constexpr std::uint8_t kind_batch_state = 6;

Bytes frame(std::uint8_t kind, std::uint64_t sequence, ByteView payload) {
    Bytes out;
    append_be(out, 1 + 8 + payload.size(), 4);
    out.push_back(kind);
    append_be(out, sequence, 8);
    append(out, payload);
    const auto sum = checksum(out);
    out.insert(out.end(), sum.begin(), sum.end());
    COCONUT_ASSERT(out.size() == record_prefix_size + payload.size() + checksum_size && out[4] == kind);
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

// The bytes encode_record fills (the rest of the 96 is reserved), and two field offsets its pair
// assertions check.
constexpr std::size_t transaction_record_used =
    10 + 8 + 1 + 2 + 4 + 4 + 4 + 6 + 4 + 4 + 3 + 4 + 4 + 1 + 1 + 2 + 2 + 4 + 2 + 8 + 1 + 4 + 5 + 4;
constexpr std::size_t record_amount_offset = 10 + 8 + 1 + 2;
constexpr std::size_t record_link_offset = transaction_record_used - 4 - 5 - 4 - 1;
static_assert(transaction_record_used <= transaction_record_size);

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
    COCONUT_ASSERT(!(r.carried && r.refund), "a credit is funded by the carried holding or a refund, not both");
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
    out.push_back(static_cast<std::uint8_t>((r.recovered ? 1 : 0) | (r.unproven ? 2 : 0) | (r.mac2_unverified ? 4 : 0) |
                                            (r.carried ? 8 : 0) | (r.refund ? 16 : 0)));
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
    COCONUT_ASSERT(out.size() == transaction_record_used, "the record layout fits its reserved size");
    out.resize(transaction_record_size, 0);  // reserved tail
    // The fields decode_record reads back from their offsets (cheap: no full decode on the append path).
    COCONUT_ASSERT(read_be32(ByteView(out).subspan(record_amount_offset, 4)) == r.amount_fen &&
                       out[record_link_offset] == static_cast<std::uint8_t>(r.link),
                   "queue record encoding");
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
    r.carried = (flags & 8) != 0;
    r.refund = (flags & 16) != 0;
    if (r.carried && r.refund) return std::nullopt;  // one source funds a credit
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
    COCONUT_ASSERT(pos == transaction_record_used && r.link == static_cast<LinkKind>(in[record_link_offset]) &&
                       r.amount_fen == read_be32(in.subspan(record_amount_offset, 4)),
                   "queue record decoding");
    return r;
}

// ---- reading a log -------------------------------------------------------------------------------

namespace {

Bytes file_header(const std::array<std::uint8_t, 8>& magic) {
    Bytes header(magic.begin(), magic.end());
    header.resize(file_header_size, 0);
    return header;
}

// What a log holds once read: the records' effect.
struct LogContents {
    std::map<std::uint64_t, TransactionRecord> live;
    std::map<std::uint64_t, TransactionRecord> intents;
    BatchState batch;
    std::uint64_t next_sequence = 1;
    std::uint64_t dead_bytes = 0;
};

// A log read up to its end.
struct Scan {
    LogContents contents;
    std::size_t end = 0;       // where the next record goes
    std::size_t torn_end = 0;  // > end: a torn final append occupies [end, torn_end), zeros after it
};

bool zeros_from(ByteView file, std::size_t pos) {
    return std::all_of(file.begin() + static_cast<std::ptrdiff_t>(std::min(pos, file.size())), file.end(),
                       [](std::uint8_t b) { return b == 0; });
}

// Why an acknowledgement payload (count u32 ‖ sequences u64…) is refused, or nothing.
std::optional<std::string_view> apply_ack(LogContents& c, ByteView payload, std::size_t total) {
    if (payload.size() < 4) return "acknowledgement payload";
    const std::size_t count = read_be32(payload.first(4));
    if (payload.size() != 4 + 8 * count) return "acknowledgement length";
    for (std::size_t i = 0; i < count; ++i) c.live.erase(read_be(payload.subspan(4 + 8 * i, 8)));
    c.dead_bytes += total;
    return std::nullopt;
}

// Applies one record whose checksum holds; why it is refused, or nothing.
std::optional<std::string_view> apply_record(LogContents& c, std::uint8_t kind, std::uint64_t sequence, ByteView payload, std::size_t total,
                                             bool format1) {
    if (sequence >= sequence_limit) return "sequence out of range";
    c.next_sequence = std::max(c.next_sequence, sequence + 1);
    if (format1 && kind > kind_abandon) return "unknown record kind";
    switch (kind) {
        case kind_transaction:
        case kind_intent: {
            auto record = decode_record(payload);
            if (!record) return "transaction payload";
            // A sequence is a record's id: a second record under one would be dropped.
            if (kind == kind_intent) {
                if (!c.intents.emplace(sequence, *record).second) return "two intents with one sequence";
            } else {
                c.intents.erase(record->intent_sequence);
                if (!c.live.emplace(sequence, *record).second) return "two transactions with one sequence";
            }
            return std::nullopt;
        }
        case kind_ack: return apply_ack(c, payload, total);
        case kind_abandon:
            if (payload.size() != 8) return "abandon payload";
            c.intents.erase(read_be(payload));
            c.dead_bytes += total;
            return std::nullopt;
        case kind_ack_with_state:
        case kind_batch_state: {
            const auto state = decode_batch_state(payload.first(std::min(payload.size(), batch_state_size)));
            if (!state) return "batch state";
            c.batch = *state;
            if (kind == kind_ack_with_state) return apply_ack(c, payload.subspan(batch_state_size), total);
            if (payload.size() != batch_state_size) return "batch state length";
            c.dead_bytes += total;
            return std::nullopt;
        }
        default: return "unknown record kind";
    }
}

// Reads a whole log (format 1 or 2): what it holds, where it ends, and a torn final append if any.
// Damage with records behind it refuses the log: records are never silently lost.
Result<Scan, QueueError> scan_log(const std::filesystem::path& path, ByteView file, bool format1) {
    const auto& magic = format1 ? queue_magic_v1 : queue_magic;
    if (file.size() < file_header_size || !std::equal(magic.begin(), magic.end(), file.begin()))
        return Unexpected{QueueError{QueueErrorCode::corrupt, path.string() + ": not a coconut terminal queue"}};
    const auto corrupt = [&](std::size_t at, std::string_view why) {
        return Unexpected{QueueError{QueueErrorCode::corrupt, fmt::format("{}: damaged record at offset {} ({}); refusing to drop records",
                                                                          path.string(), at, why)}};
    };
    Scan scan;
    std::size_t pos = file_header_size;
    while (pos + 4 <= file.size()) {
        const std::size_t length = read_be32(file.subspan(pos, 4));
        if (length == 0) {
            // The end of the log, when only the preallocated zeros follow. Anything else after a zero
            // length word is a damaged record with records behind it, which an append would overwrite.
            if (!zeros_from(file, pos)) return corrupt(pos, "zero length with records after it");
            break;
        }
        const std::size_t total = 4 + length + checksum_size;
        const bool fits = length >= 9 && length <= payload_max + 9 && pos + total <= file.size();
        const bool valid = fits && [&] {
            const auto sum = checksum(file.subspan(pos, 4 + length));
            return std::equal(sum.begin(), sum.end(), file.begin() + static_cast<std::ptrdiff_t>(pos + 4 + length));
        }();
        if (!valid) {
            // A torn final append: only zeros may follow the damaged bytes.
            scan.torn_end = std::min(file.size(), fits ? pos + total : pos + 4 + payload_max + 9 + checksum_size);
            if (!zeros_from(file, scan.torn_end)) return corrupt(pos, "checksum mismatch with records after it");
            break;
        }
        const std::uint64_t sequence = read_be(file.subspan(pos + 5, 8));
        const ByteView payload = file.subspan(pos + record_prefix_size, length - 9);
        if (auto why = apply_record(scan.contents, file[pos + 4], sequence, payload, total, format1)) return corrupt(pos, *why);
        pos += total;
    }
    scan.end = pos;
    COCONUT_ASSERT(scan.end <= file.size() && (scan.torn_end == 0 || scan.torn_end > scan.end));
    return scan;
}

// A fresh log holding `contents`: the batch state, then the live records and the open intents with their
// sequences, padded to the allocation step. The batch-state record takes the last sequence the log used,
// so sequences keep growing after the rewrite.
Bytes log_image(const LogContents& c) {
    Bytes file = file_header(queue_magic);
    coconut::append(file, frame(kind_batch_state, c.next_sequence - 1, encode_batch_state(c.batch)));
    for (const auto& [sequence, record] : c.live) coconut::append(file, frame(kind_transaction, sequence, encode_record(record)));
    for (const auto& [sequence, record] : c.intents) coconut::append(file, frame(kind_intent, sequence, encode_record(record)));
    return file;
}

// The image padded with zeros to whole allocation steps; `end` is where the next record goes.
Bytes padded(Bytes image, std::uint64_t& end) {
    end = image.size();
    image.resize((end / allocation_step + 1) * allocation_step, 0);
    return image;
}

Result<Bytes, QueueError> read_file(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return Unexpected{io_error(path, "read")};
    return Bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// 0: no file, 1 or 2: the format its magic names, 3: anything else (open() refuses it as corrupt).
int log_format(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return std::filesystem::exists(path) ? 3 : 0;
    std::array<std::uint8_t, 8> magic{};
    in.read(reinterpret_cast<char*>(magic.data()), magic.size());
    if (magic == queue_magic_v1) return 1;
    return magic == queue_magic ? 2 : 3;
}

// Removes the old batch file once the log holds its state (after the log's rename is durable).
Status<QueueError> remove_converted_batch_file(const std::filesystem::path& old_batch_file) {
    std::error_code ec;
    if (!std::filesystem::remove(old_batch_file, ec)) {
        if (ec) return Unexpected{QueueError{QueueErrorCode::io_error, old_batch_file.string() + ": remove: " + ec.message()}};
        return Ok{};
    }
    if (auto synced = fsync_parent_directory(old_batch_file); !synced)
        return Unexpected{QueueError{QueueErrorCode::io_error, synced.error().message()}};
    return Ok{};
}

// Converts a format 1 log (or none) and its old batch file into a format 2 log at `path`: written to a new
// file, fsync, rename over the old log, fsync the directory — and only then is the old batch file removed.
// Cut anywhere, the next open finds either the old files (and converts again) or the new log.
Status<QueueError> convert_format1(const std::filesystem::path& path, const std::filesystem::path& old_batch_file, bool log_exists) {
    LogContents contents;
    if (log_exists) {
        auto file = read_file(path);
        if (!file) return Unexpected{file.error()};
        auto scan = scan_log(path, *file, true);  // a torn tail is left out of the new log
        if (!scan) return Unexpected{scan.error()};
        contents = std::move(scan->contents);
    }
    auto old_state = read_legacy_batch_file(old_batch_file);
    if (!old_state) return Unexpected{QueueError{QueueErrorCode::bad_batch_file, old_state.error()}};
    if (*old_state) contents.batch = **old_state;
    std::uint64_t end = 0;
    const Bytes image = padded(log_image(contents), end);
    if (auto written = write_file_atomically(path, image); !written)
        return Unexpected{QueueError{QueueErrorCode::io_error, written.error().message()}};
    return remove_converted_batch_file(old_batch_file);
}

Status<QueueError> check_limits(const QueueLimits& limits) {
    if (limits.ack_batch_max >= 1 && limits.ack_batch_max <= ack_batch_limit && limits.capacity >= 1) return Ok{};
    return Unexpected{QueueError{QueueErrorCode::bad_limits,
                                 fmt::format("queue limits: ack_batch_max must be 1-{} and capacity at least 1", ack_batch_limit)}};
}

}  // namespace

// ---- queue -------------------------------------------------------------------------------------

TransactionQueue::TransactionQueue(std::filesystem::path path, QueueLimits limits) : path_(std::move(path)), limits_(limits) {}

TransactionQueue::~TransactionQueue() {
    if (fd_ >= 0) ::close(fd_);
}

Result<std::unique_ptr<TransactionQueue>, QueueError> TransactionQueue::open(const std::filesystem::path& path, QueueLimits limits,
                                                                             const std::filesystem::path& old_batch_file) {
    if (auto checked = check_limits(limits); !checked) return Unexpected{checked.error()};
    const std::filesystem::path old_batch = old_batch_file.empty() ? std::filesystem::path(path.string() + ".batch") : old_batch_file;
    const int format = log_format(path);
    const bool old_batch_exists = std::filesystem::exists(old_batch);
    if (format == 0 && !old_batch_exists) {
        if (auto written = write_file_atomically(path, file_header(queue_magic)); !written)
            return Unexpected{QueueError{QueueErrorCode::io_error, written.error().message()}};
    } else if (format == 0 || format == 1) {
        if (auto converted = convert_format1(path, old_batch, format == 1); !converted) return Unexpected{converted.error()};
    } else if (format == 2 && old_batch_exists) {
        // A conversion cut after the rename: the log holds this file's state already.
        if (auto removed = remove_converted_batch_file(old_batch); !removed) return Unexpected{removed.error()};
    }
    std::unique_ptr<TransactionQueue> queue(new TransactionQueue(path, limits));
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
    auto scan = scan_log(path_, file, false);
    if (!scan) return Unexpected{scan.error()};
    if (scan->torn_end > scan->end) {
        // The flow that wrote the torn record never returned: it is cleared, so the next append starts clean.
        const Bytes zeros(scan->torn_end - scan->end, 0);
        if (::pwrite(fd_, zeros.data(), zeros.size(), static_cast<off_t>(scan->end)) != static_cast<ssize_t>(zeros.size()) ||
            ::fdatasync(fd_) != 0)
            return Unexpected{io_error(path_, "clear torn record")};
    }
    live_ = std::move(scan->contents.live);
    intents_ = std::move(scan->contents.intents);
    batch_ = scan->contents.batch;
    next_sequence_ = scan->contents.next_sequence;
    dead_bytes_ = scan->contents.dead_bytes;
    end_offset_ = scan->end;
    allocated_ = size;
    return Ok{};
}

Result<std::uint64_t, QueueError> TransactionQueue::write(std::uint8_t kind, ByteView payload) {
    COCONUT_ASSERT(payload.size() <= payload_max, "a record payload within the size the reader accepts");
    const std::uint64_t sequence = next_sequence_;
    if (sequence >= sequence_limit)  // only after a damaged log that open() read up to the limit
        return Unexpected{QueueError{QueueErrorCode::corrupt, fmt::format("{}: the next sequence, {}, is out of range; the log is damaged",
                                                                          path_.string(), sequence)}};
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

Status<QueueError> TransactionQueue::acknowledge(std::span<const std::uint64_t> sequences) { return acknowledge(sequences, {}); }

Status<QueueError> TransactionQueue::acknowledge(std::span<const std::uint64_t> sequences, std::span<const std::uint64_t> booked) {
    const auto refuse = [](std::string message) { return Unexpected{QueueError{QueueErrorCode::unknown_sequence, std::move(message)}}; };
    if (sequences.size() > limits_.ack_batch_max)
        return refuse(fmt::format("acknowledgement of {} exceeds the batch limit {}", sequences.size(), limits_.ack_batch_max));
    for (std::uint64_t s : sequences)
        if (!live_.contains(s)) return refuse(fmt::format("sequence {} is not queued", s));
    const std::set<std::uint64_t> acknowledged(sequences.begin(), sequences.end());
    const std::set<std::uint64_t> counted(booked.begin(), booked.end());
    if (counted.size() != booked.size() || !std::includes(acknowledged.begin(), acknowledged.end(), counted.begin(), counted.end()))
        return refuse("booked records must be acknowledged ones, each once");
    if (sequences.empty()) return Ok{};
    // The acknowledgement and the totals it adds: one record, one durable append.
    BatchState after = batch_;
    for (std::uint64_t s : booked) after.count(live_.at(s));
    Bytes payload = booked.empty() ? Bytes{} : encode_batch_state(after);
    append_be(payload, sequences.size(), 4);
    for (std::uint64_t s : sequences) append_be(payload, s, 8);
    auto written = write(booked.empty() ? kind_ack : kind_ack_with_state, payload);
    if (!written) return Unexpected{written.error()};
    for (std::uint64_t s : sequences) live_.erase(s);
    batch_ = after;
    dead_bytes_ += payload.size() + record_prefix_size + checksum_size +
                   sequences.size() * (transaction_record_size + record_prefix_size + checksum_size);
    return compact_if_worthwhile();
}

Status<QueueError> TransactionQueue::save_batch_state(const BatchState& state) {
    const Bytes payload = encode_batch_state(state);
    auto written = write(kind_batch_state, payload);
    if (!written) return Unexpected{written.error()};
    batch_ = state;
    dead_bytes_ += payload.size() + record_prefix_size + checksum_size;  // the next state record supersedes it
    return Ok{};
}

Result<std::uint32_t, QueueError> TransactionQueue::take_stan() {
    if (batch_.reserved_left == 0) {
        BatchState reserved = batch_;
        reserved.reserved_left = BatchState::stan_block_size;
        if (auto saved = save_batch_state(reserved); !saved) return Unexpected{saved.error()};
    }
    COCONUT_ASSERT(batch_.reserved_left > 0);
    const std::uint32_t stan = batch_.next_stan;
    batch_.next_stan = advance_stan(stan, 1);
    --batch_.reserved_left;
    return stan;
}

void TransactionQueue::release_stan_reservation() {
    batch_.next_stan = batch_.reserved_end();
    batch_.reserved_left = 0;
}

Status<QueueError> TransactionQueue::count_reversal(LinkKind original, std::uint32_t amount_fen) {
    BatchState after = batch_;
    after.count_reversal(original, amount_fen);
    return save_batch_state(after);
}

Status<QueueError> TransactionQueue::count_credit(std::uint32_t amount_fen) {
    BatchState after = batch_;
    after.count_credit(amount_fen);
    return save_batch_state(after);
}

Status<QueueError> TransactionQueue::close_batch() {
    BatchState after = batch_;
    after.close();
    return save_batch_state(after);
}

Status<QueueError> TransactionQueue::compact_if_worthwhile() {
    const std::uint64_t live_bytes = (live_.size() + intents_.size()) * (transaction_record_size + record_prefix_size + checksum_size);
    if (dead_bytes_ < limits_.compaction_dead_bytes_min || dead_bytes_ < 3 * live_bytes) return Ok{};
    std::uint64_t end = 0;
    const Bytes file = padded(log_image({live_, intents_, batch_, next_sequence_, 0}), end);
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
