// libFuzzer target for the terminal's store-and-forward queue file (queue.hpp), read back by
// TransactionQueue::open: the file survives crashes, disks and copies, so open() must take any bytes.
//
// Input: byte 0 = flags, the rest = the file.
//   bit 0  re-checksum: every record the length fields delimit gets its correct checksum before the file is
//          written, so the fuzzer reaches the record decoder past the SHA-256 gate
//   bit 1  after a successful open, append one record, take a STAN and acknowledge the oldest record,
//          counting it into the batch totals (the write paths on a log that was read back)
// Properties: open() never crashes; it refuses (io_error / corrupt) or loads — a format 1 log is converted
// to format 2 first. What it loaded, reopened, loads again with the same records, intents and batch state
// (clearing a torn tail and the conversion are idempotent); an appended record is there after a reopen,
// and the acknowledged one is counted in the totals with it.
#include <coconut/sdk/queue.hpp>

#include "../src/checksum.hpp"

#include <fuzz_support.hpp>

namespace {

using namespace coconut;
using namespace coconut::sdk;

constexpr std::string_view target = "fuzz_queue_file";
constexpr std::size_t file_header_size = 16;  // queue.hpp: "COCOQUE2" (format 1: "COCOQUE1") ‖ 8 zero bytes
constexpr std::size_t record_prefix_size = 13;

fuzz::ScratchDir& scratch() {
    static fuzz::ScratchDir dir(target);
    return dir;
}

// Rewrites the checksum of every record the length fields delimit (stops at the first that does not fit).
void recompute_checksums(Bytes& file) {
    std::size_t pos = file_header_size;
    while (pos + 4 <= file.size()) {
        const std::size_t length = read_be32(ByteView(file).subspan(pos, 4));
        if (length == 0 || pos + 4 + length + checksum_size > file.size()) break;
        const auto sum = checksum(ByteView(file).subspan(pos, 4 + length));
        std::copy(sum.begin(), sum.end(), file.begin() + static_cast<std::ptrdiff_t>(pos + 4 + length));
        pos += 4 + length + checksum_size;
    }
}

struct Contents {
    std::vector<std::uint64_t> live;
    std::vector<std::uint64_t> intents;
    BatchState batch;
    friend bool operator==(const Contents&, const Contents&) = default;
};

Contents contents_of(const TransactionQueue& queue) {
    Contents c;
    for (const auto& q : queue.batch(queue.size())) {
        if (encode_record(q.record).size() != transaction_record_size) fuzz::fail(target, "a record that does not encode");
        c.live.push_back(q.sequence);
    }
    for (const auto& q : queue.open_intents()) c.intents.push_back(q.sequence);
    c.batch = queue.batch_state();
    if (decode_batch_state(encode_batch_state(c.batch)) == std::nullopt) fuzz::fail(target, "a batch state that does not encode");
    return c;
}

std::unique_ptr<TransactionQueue> reopen(const std::filesystem::path& path, const char* when) {
    auto queue = TransactionQueue::open(path);
    if (!queue) fuzz::fail(target, std::string("a queue that opened is refused ") + when + ": " + queue.error().message);
    return std::move(queue).value();
}

TransactionRecord sample_record() {
    TransactionRecord r;
    r.asn = {0x46, 0x01, 0x00, 0x00, 0x00, 0x00, 0x12, 0x34, 0x56, 0x78};
    r.issuer_id = {0x46, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01};
    r.type = crypto::type_ep_purchase;
    r.atc = 7;
    r.amount_fen = 250;
    r.balance_before_fen = 5000;
    r.balance_after_fen = 4750;
    r.terminal_id = {0x46, 0x01, 0x00, 0x00, 0x00, 0x01};
    r.terminal_serial = 42;
    r.when = {{0x20, 0x26, 0x11, 0x26}, {0x13, 0x05, 0x00}};
    r.tac = {0xDE, 0xAD, 0xBE, 0xEF};
    return r;
}

// A file as the queue writes it, cut after its last record (the preallocated zeros add nothing).
Bytes trimmed(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    Bytes file((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    while (file.size() > file_header_size && file.back() == 0) file.pop_back();
    // Trailing zero bytes of the last checksum are part of it: pad to the record boundary again.
    std::size_t pos = file_header_size;
    while (pos + 4 <= file.size()) pos += 4 + read_be32(ByteView(file).subspan(pos, 4)) + checksum_size;
    file.resize(std::max(pos, file_header_size), 0);
    return file;
}

void write_seeds(const std::filesystem::path& dir) {
    const auto seed = [&](std::string_view name, std::uint8_t flags, ByteView file) {
        Bytes input{flags};
        append(input, file);
        fuzz::write_seed(dir, name, input);
    };
    const auto path = scratch() / "seed.queue";
    std::filesystem::remove(path);
    auto queue = reopen(path, "when created");
    seed("empty", 0, trimmed(path));
    TransactionRecord purchase = sample_record();
    (void)queue->append(purchase);
    seed("one-purchase", 0, trimmed(path));
    seed("one-purchase-append", 2, trimmed(path));
    TransactionRecord transit = purchase;
    transit.type = crypto::type_capp_purchase;
    transit.tap_kind = TapKind::exit;
    transit.line = 12;
    transit.station = 3;
    transit.entry_station = 1;
    transit.vehicle = 77;
    (void)queue->append(transit);
    auto intent = queue->record_intent(purchase);
    TransactionRecord load = purchase;
    load.type = crypto::type_ep_load;
    load.link = LinkKind::load_confirmation;
    load.stan = 17;
    load.batch_number = 3;
    load.transmitted = {0x11, 0x26, 0x13, 0x05, 0x00};
    load.intent_sequence = intent ? *intent : 0;
    (void)queue->append(load);
    auto abandoned = queue->record_intent(purchase);
    if (abandoned) (void)queue->abandon_intent(*abandoned);
    (void)queue->record_intent(transit);
    const std::uint64_t first = 2;
    (void)queue->acknowledge(std::span(&first, 1));
    // Format 1 held kinds 1–4 only: this log with the old magic is what an upgraded terminal converts.
    Bytes format1 = trimmed(path);
    format1[7] = '1';
    seed("format-1", 0, format1);
    seed("format-1-append", 2, format1);
    // Kinds 5 and 6: a STAN block reserved, an acknowledgement counting what the host booked, a reversal
    // counted, a batch closed.
    (void)queue->take_stan();
    const std::uint64_t booked = 4;  // the load confirmation
    (void)queue->acknowledge(std::span(&booked, 1), std::span(&booked, 1));
    (void)queue->count_reversal(LinkKind::load_reversal, 100);
    (void)queue->close_batch();
    const Bytes every_kind = trimmed(path);
    seed("every-kind", 0, every_kind);
    seed("every-kind-append", 2, every_kind);
    Bytes torn = every_kind;
    torn.resize(torn.size() - 5);
    seed("torn-tail", 0, torn);
    Bytes flipped = every_kind;
    flipped[file_header_size + record_prefix_size + 3] ^= 0x40;  // inside the first record's payload
    seed("damaged-first-record", 0, flipped);
    seed("damaged-first-record-rechecksummed", 1, flipped);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    fuzz::write_seeds_if_requested(write_seeds);
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    fuzz::Reader input({data, size});
    const std::uint8_t flags = input.byte();
    const ByteView rest = input.rest();
    Bytes file(rest.begin(), rest.end());
    if (flags & 1) recompute_checksums(file);
    const auto path = scratch() / "queue";
    fuzz::write_file(path, file);

    auto opened = TransactionQueue::open(path);
    if (!opened) {
        if (opened.error().message.empty()) fuzz::fail(target, "a refusal without a message");
        return 0;
    }
    const Contents loaded = contents_of(**opened);
    opened->reset();
    auto again = reopen(path, "the second time");
    if (contents_of(*again) != loaded) fuzz::fail(target, "a reopened queue holds other records");
    if ((flags & 2) == 0) return 0;

    auto appended = again->append(sample_record());
    if (!appended) return 0;  // full, or a log read up to the last sequence (refused as damaged)
    (void)again->take_stan();
    BatchState expected = again->batch_state();
    if (!loaded.live.empty()) {
        const std::uint64_t oldest = loaded.live.front();
        for (const auto& q : again->batch(again->size())) {
            if (q.sequence == oldest && again->acknowledge(std::span(&oldest, 1), std::span(&oldest, 1))) expected.count(q.record);
        }
    }
    const BatchTotals totals = again->batch_state().totals;
    if (totals != expected.totals) fuzz::fail(target, "an acknowledgement counted other totals than its record's");
    again.reset();
    auto after = reopen(path, "after an append");
    const auto reopened = contents_of(*after);
    if (std::find(reopened.live.begin(), reopened.live.end(), *appended) == reopened.live.end())
        fuzz::fail(target, "an appended record is gone after a reopen");
    if (reopened.batch.totals != totals) fuzz::fail(target, "the batch totals changed across a reopen");
    return 0;
}
