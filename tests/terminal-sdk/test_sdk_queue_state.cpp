// The terminal's batch state in the queue log (record kinds 5 and 6) and the conversion of a format 1
// queue and its batch file (terminal-sdk/QUEUE-FORMAT.md).
#include "test_sdk_support.hpp"

#include <coconut/core/durable_file.hpp>

#include <openssl/evp.h>

#include <fstream>
#include <iterator>

using namespace sdk_test;

namespace queue_state_test {

TransactionRecord purchase(std::uint16_t atc, std::uint32_t amount, LinkKind link = LinkKind::offline_purchase) {
    TransactionRecord r;
    const Bytes asn = hex("10000000000000012345");
    std::copy(asn.begin(), asn.end(), r.asn.begin());
    r.type = link == LinkKind::load_confirmation ? crypto::type_ep_load : crypto::type_ep_purchase;
    r.atc = atc;
    r.amount_fen = amount;
    r.balance_before_fen = 10000;
    r.balance_after_fen = 10000 - amount;
    r.terminal_serial = 40 + atc;
    r.when = {{0x20, 0x26, 0x11, 0x26}, {0x13, 0x05, static_cast<std::uint8_t>(atc % 60)}};
    r.tac = {1, 2, 3, static_cast<std::uint8_t>(atc)};
    r.line = 7;
    r.station = static_cast<std::uint16_t>(atc * 3);
    r.tap_kind = TapKind::flat;
    r.link = link;
    r.stan = link == LinkKind::offline_purchase ? 0 : 100u + atc;
    r.batch_number = link == LinkKind::offline_purchase ? 0 : 3;
    return r;
}

std::unique_ptr<TransactionQueue> open_log(const std::filesystem::path& path, QueueLimits limits = {},
                                           const std::filesystem::path& old_batch_file = {}) {
    auto q = TransactionQueue::open(path, limits, old_batch_file);
    REQUIRE_MESSAGE(q.ok(), (q.ok() ? "" : q.error().message));
    return std::move(q.value());
}

Bytes read_all(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    return Bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void write_all(const std::filesystem::path& path, ByteView bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

std::string magic_of(const std::filesystem::path& path) {
    const Bytes file = read_all(path);
    return std::string(file.begin(), file.begin() + 8);
}

// ---- format 1, as the SDK wrote it before the batch state moved into the log --------------------------
// (queue.hpp of that version: "COCOQUE1" ‖ 8 zero bytes, then length u32 ‖ kind u8 ‖ sequence u64 ‖
// payload ‖ SHA-256(length..payload)[0..8]; kinds 1 transaction, 2 acknowledgement, 3 intent, 4 abandon;
// the batch state in a text file beside it.) The record payload (encode_record) is unchanged.

struct OldQueueWriter {
    Bytes file{'C', 'O', 'C', 'O', 'Q', 'U', 'E', '1', 0, 0, 0, 0, 0, 0, 0, 0};
    std::uint64_t next_sequence = 1;

    std::uint64_t record(std::uint8_t kind, ByteView payload) {
        Bytes r;
        append_be(r, 1 + 8 + payload.size(), 4);
        r.push_back(kind);
        append_be(r, next_sequence, 8);
        append(r, payload);
        std::array<std::uint8_t, 32> digest{};
        unsigned int length = 0;
        EVP_Digest(r.data(), r.size(), digest.data(), &length, EVP_sha256(), nullptr);
        r.insert(r.end(), digest.begin(), digest.begin() + 8);
        append(file, r);
        return next_sequence++;
    }
    std::uint64_t transaction(const TransactionRecord& t) { return record(1, encode_record(t)); }
    std::uint64_t intent(const TransactionRecord& t) { return record(3, encode_record(t)); }
    void acknowledge(std::initializer_list<std::uint64_t> sequences) {
        Bytes payload = be_bytes(sequences.size(), 4);
        for (std::uint64_t s : sequences) append_be(payload, s, 8);
        record(2, payload);
    }
    void abandon(std::uint64_t intent_sequence) { record(4, be_bytes(intent_sequence, 8)); }
    // As the old queue left it on disk: the log, then the preallocated zeros.
    void save(const std::filesystem::path& path) const {
        Bytes padded = file;
        padded.resize(1 << 20, 0);
        write_all(path, padded);
    }
};

void write_old_batch_file(const std::filesystem::path& path, std::uint32_t batch, std::uint32_t stan, const BatchTotals& t) {
    std::ofstream(path) << "coconut-terminal-batch 1\nbatch " << batch << "\nstan " << stan << "\ndebits " << t.debits_count << " "
                        << t.debits_fen << "\ncredits " << t.credits_count << " " << t.credits_fen << "\ncredit_reversals "
                        << t.credit_reversals_count << " " << t.credit_reversals_fen << "\ndebit_reversals " << t.debit_reversals_count
                        << " " << t.debit_reversals_fen << "\n";
}

BatchTotals some_totals() {
    BatchTotals t;
    t.debits_count = 12, t.debits_fen = 3456;
    t.credits_count = 2, t.credits_fen = 10000;
    t.credit_reversals_count = 1, t.credit_reversals_fen = 500;
    t.debit_reversals_count = 3, t.debit_reversals_fen = 777;
    return t;
}

// The log the format 1 queue code itself wrote (queue.cpp as of 29a2170, built on its own) for the
// operations of OldTerminal below without its torn append, cut after its last record.
const char* const format1_fixture_hex =
    "434F434F51554531000000000000000000000069010000000000000001100000000000000123450000000000000000060001000000640000"
    "2710000026AC0000000000000000002920261126130501010203010000000000010007000300000000000000000000000000000000000000"
    "00000000000000000000000000E26A2278B5E877140000006901000000000000000210000000000000012345000000000000000006000200"
    "0000FA00002710000026160000000000000000002A2026112613050201020302000000000001000700060000000000000000000000000000"
    "000000000000000000000000000000000000C004C44E2FDB1CD0000000690300000000000000031000000000000001234500000000000000"
    "000200030000138800002710000013880000000000000000002B202611261305030102030300000000000100070009000000000000000000"
    "0000000000010000006700000000000000000300000000C1EC12FA8D4E551600000069010000000000000004100000000000000123450000"
    "0000000000000200030000138800002710000013880000000000000000002B20261126130503010203030000000000010007000900000000"
    "000000000000000000030100000067000000000000000003000000000B0E1BD75E536FA70000001502000000000000000500000001000000"
    "0000000001F8334C27F6242268000000690300000000000000061000000000000001234500000000000000000600040000012C0000271000"
    "0025E40000000000000000002C20261126130504010203040000000000010007000C00000000000000000000000000000000000000000000"
    "00000000000000000000041938C1008DAB5A0000006903000000000000000710000000000000012345000000000000000006000500000190"
    "00002710000025800000000000000000002D20261126130505010203050000000000010007000F0000000000000000000000000000000000"
    "000000000000000000000000000000E0FFDBCCDA48015E0000001104000000000000000800000000000000077669EC055295D80F";

// A terminal upgraded with work in its old queue: 2 live records (one a load confirmation that resolved
// an intent), an acknowledged one, an open intent, an abandoned one, and a torn final append.
struct OldTerminal {
    std::map<std::uint64_t, TransactionRecord> live;
    std::map<std::uint64_t, TransactionRecord> intents;
    std::uint64_t last_sequence = 0;

    void write(const std::filesystem::path& queue, const std::filesystem::path& batch_file) {
        OldQueueWriter w;
        const std::uint64_t acked = w.transaction(purchase(1, 100));
        live[w.transaction(purchase(2, 250))] = purchase(2, 250);
        const std::uint64_t load_intent = w.intent(purchase(3, 5000, LinkKind::load_confirmation));
        TransactionRecord confirmation = purchase(3, 5000, LinkKind::load_confirmation);
        confirmation.intent_sequence = load_intent;
        live[w.transaction(confirmation)] = confirmation;
        w.acknowledge({acked});
        intents[w.intent(purchase(4, 300))] = purchase(4, 300);
        w.abandon(w.intent(purchase(5, 400)));
        last_sequence = w.next_sequence - 1;
        const std::size_t end = w.file.size();
        w.transaction(purchase(6, 600));
        w.file.resize(w.file.size() - 5);  // the last append torn by a crash: its flow never returned
        REQUIRE(w.file.size() > end);
        w.save(queue);
        write_old_batch_file(batch_file, 7, 250, some_totals());
    }

    void check(TransactionQueue& q) const {
        REQUIRE(q.size() == live.size());
        for (const QueuedTransaction& got : q.batch(100)) {
            REQUIRE(live.contains(got.sequence));
            CHECK(encode_record(got.record) == encode_record(live.at(got.sequence)));
        }
        const auto open = q.open_intents();
        REQUIRE(open.size() == intents.size());
        for (const QueuedTransaction& got : open) {
            REQUIRE(intents.contains(got.sequence));
            CHECK(encode_record(got.record) == encode_record(intents.at(got.sequence)));
        }
        CHECK(q.batch_state().batch_number == 7);
        CHECK(q.batch_state().next_stan == 250);
        CHECK(q.batch_state().totals == some_totals());
    }
};

}  // namespace queue_state_test

using namespace queue_state_test;

TEST_CASE("batch state: an acknowledgement and the totals it adds are one append; they survive a reopen") {
    TempDir dir;
    const auto path = dir.path / "q.log";
    auto q = open_log(path);
    const auto a = q->append(purchase(1, 100));
    const auto b = q->append(purchase(2, 250));
    const auto c = q->append(purchase(3, 5000, LinkKind::load_confirmation));
    REQUIRE((a.ok() && b.ok() && c.ok()));
    const std::vector<std::uint64_t> acked{*a, *b, *c}, booked{*a, *c};
    REQUIRE(q->acknowledge(acked, booked).ok());
    CHECK(q->size() == 0);
    CHECK(q->batch_state().totals.debits_count == 1);
    CHECK(q->batch_state().totals.debits_fen == 100);
    CHECK(q->batch_state().totals.credits_fen == 5000);
    REQUIRE(q->count_reversal(LinkKind::clinic_reversal, 40).ok());
    const BatchState before = q->batch_state();
    q = open_log(path);
    CHECK(q->batch_state().totals == before.totals);
    CHECK(q->batch_state().batch_number == 1);
    REQUIRE(q->close_batch().ok());
    q = open_log(path);
    CHECK(q->batch_state().batch_number == 2);
    CHECK(q->batch_state().totals == BatchTotals{});
}

TEST_CASE("batch state: booked records must be acknowledged ones, each once; nothing changes otherwise") {
    TempDir dir;
    auto q = open_log(dir.path / "q.log");
    const auto a = q->append(purchase(1, 100));
    const auto b = q->append(purchase(2, 200));
    REQUIRE((a.ok() && b.ok()));
    const std::vector<std::uint64_t> acked{*a}, not_acked{*b}, twice{*a, *a};
    CHECK(q->acknowledge(acked, not_acked).error().code == QueueErrorCode::unknown_sequence);
    CHECK(q->acknowledge(acked, twice).error().code == QueueErrorCode::unknown_sequence);
    CHECK(q->size() == 2);
    CHECK(q->batch_state().totals == BatchTotals{});
}

TEST_CASE("batch state: a crash anywhere in an acknowledgement leaves the records and the totals agreeing") {
    TempDir dir;
    const auto path = dir.path / "q.log";
    std::uint64_t sequence = 0;
    Bytes before;
    {
        auto q = open_log(path);
        sequence = *q->append(purchase(1, 100));
        before = read_all(path);
        const std::vector<std::uint64_t> acked{sequence};
        REQUIRE(q->acknowledge(acked, acked).ok());
    }
    const Bytes after = read_all(path);
    REQUIRE(after.size() == before.size());
    std::size_t first = 0;
    while (before[first] == after[first]) ++first;
    std::size_t last = after.size();
    while (before[last - 1] == after[last - 1]) --last;
    // Every prefix of the acknowledgement's bytes on disk, the rest still zeros: what a crash mid-write leaves.
    for (std::size_t cut = first; cut <= last; ++cut) {
        Bytes crashed = before;
        std::copy(after.begin() + static_cast<std::ptrdiff_t>(first), after.begin() + static_cast<std::ptrdiff_t>(cut),
                  crashed.begin() + static_cast<std::ptrdiff_t>(first));
        write_all(path, crashed);
        auto q = open_log(path);
        const bool acknowledged = q->size() == 0;
        CHECK(acknowledged == (cut == last));
        CHECK(q->batch_state().totals.debits_count == (acknowledged ? 1u : 0u));
        CHECK(q->batch_state().totals.debits_fen == (acknowledged ? 100u : 0u));
    }
}

TEST_CASE("batch state: STANs are reserved in blocks; a reopen continues after the reserved block") {
    TempDir dir;
    const auto path = dir.path / "q.log";
    auto q = open_log(path);
    for (std::uint32_t i = 1; i <= 3; ++i) CHECK(*q->take_stan() == i);
    q = open_log(path);
    CHECK(*q->take_stan() == 1 + BatchState::stan_block_size);
    // A new client on the same log starts after the block, as a restarted process does.
    q->release_stan_reservation();
    CHECK(*q->take_stan() == 1 + 2 * BatchState::stan_block_size);
    // Around the end of field 11: 999999 wraps to 1.
    BatchState state;
    state.next_stan = stan_max;
    state.reserved_left = 2;
    CHECK(state.reserved_end() == 2);  // 999999 and 1 are reserved
    const auto decoded = decode_batch_state(encode_batch_state(state));
    REQUIRE(decoded.has_value());
    CHECK(decoded->next_stan == 2);
    CHECK(decoded->reserved_left == 0);
}

TEST_CASE("batch state: the log survives a compaction with its state, and sequences keep growing") {
    TempDir dir;
    const auto path = dir.path / "q.log";
    QueueLimits limits;
    limits.compaction_dead_bytes_min = 1;
    auto q = open_log(path, limits);
    std::uint64_t last = 0;
    for (std::uint16_t i = 0; i < 4; ++i) {
        last = *q->append(purchase(i, 10));
        const std::vector<std::uint64_t> acked{last};
        REQUIRE(q->acknowledge(acked, acked).ok());  // compacts: everything is dead
    }
    q = open_log(path, limits);
    CHECK(q->size() == 0);
    CHECK(q->batch_state().totals.debits_count == 4);
    CHECK(*q->append(purchase(9, 1)) > last);
}

TEST_CASE("queue limits out of range are refused") {
    TempDir dir;
    QueueLimits limits;
    limits.ack_batch_max = ack_batch_limit + 1;
    CHECK(TransactionQueue::open(dir.path / "q.log", limits).error().code == QueueErrorCode::bad_limits);
    limits.ack_batch_max = 0;
    CHECK(TransactionQueue::open(dir.path / "q.log", limits).error().code == QueueErrorCode::bad_limits);
}

// ---- conversion of a format 1 queue ------------------------------------------------------------------

TEST_CASE("conversion: the format 1 writer of these tests writes what the format 1 queue code wrote") {
    TempDir dir;
    OldTerminal old;
    old.write(dir.path / "q.log", dir.path / "q.log.batch");
    const Bytes fixture = hex(format1_fixture_hex);
    const Bytes written = read_all(dir.path / "q.log");
    REQUIRE(written.size() > fixture.size());
    CHECK(to_hex(ByteView(written).first(fixture.size())) == to_hex(fixture));
    // The fixture itself converts like the writer's file.
    Bytes padded = fixture;
    padded.resize(1 << 20, 0);
    write_all(dir.path / "fixture.log", padded);
    write_old_batch_file(dir.path / "fixture.log.batch", 7, 250, some_totals());
    old.check(*open_log(dir.path / "fixture.log"));
}

TEST_CASE("conversion: an old queue and its batch file become one log at open; nothing is lost") {
    TempDir dir;
    const auto queue = dir.path / "terminal-queue.log";
    const auto batch_file = dir.path / "terminal-queue.log.batch";
    OldTerminal old;
    old.write(queue, batch_file);
    auto q = open_log(queue);
    CHECK(magic_of(queue) == "COCOQUE2");
    CHECK_FALSE(std::filesystem::exists(batch_file));
    old.check(*q);
    // The log goes on where the old one stopped: new sequences, the next STAN of the old file.
    const auto appended = q->append(purchase(8, 80));
    REQUIRE(appended.ok());
    CHECK(*appended > old.last_sequence);
    CHECK(*q->take_stan() == 250);
    // The converted records upload and count like any other.
    std::vector<std::uint64_t> all;
    for (const auto& queued : q->batch(100)) all.push_back(queued.sequence);
    REQUIRE(q->acknowledge(all, all).ok());
    CHECK(q->batch_state().totals.debits_fen == some_totals().debits_fen + 250 + 80);
    CHECK(q->batch_state().totals.credits_fen == some_totals().credits_fen + 5000);
}

TEST_CASE("conversion: cut after the new log's rename (old batch file still there), it happens exactly once") {
    TempDir dir;
    const auto queue = dir.path / "q.log";
    const auto batch_file = dir.path / "old.batch";
    OldTerminal old;
    old.write(queue, batch_file);
    const Bytes old_batch = read_all(batch_file);
    { auto q = open_log(queue, {}, batch_file); }
    // The state a crash between the rename and the removal leaves: the new log and the old batch file.
    write_all(batch_file, old_batch);
    {
        auto q = open_log(queue, {}, batch_file);
        old.check(*q);  // not counted twice, nothing lost
        REQUIRE(q->take_stan().ok());
    }
    CHECK_FALSE(std::filesystem::exists(batch_file));
    // Again, with a file that now disagrees with the log: the log is the state.
    write_old_batch_file(batch_file, 99, 5000, BatchTotals{});
    auto q = open_log(queue, {}, batch_file);
    CHECK(q->batch_state().batch_number == 7);
    CHECK(q->batch_state().totals == some_totals());
    CHECK(*q->take_stan() == 250 + BatchState::stan_block_size);
}

TEST_CASE("conversion: cut before the rename, the old files are read again; a stale new file is overwritten") {
    TempDir dir;
    const auto queue = dir.path / "q.log";
    const auto batch_file = dir.path / "q.log.batch";
    OldTerminal old;
    old.write(queue, batch_file);
    write_all(dir.path / "q.log.tmp", Bytes{'C', 'O', 'C', 'O', 'Q', 'U', 'E', '2', 0xFF});
    auto q = open_log(queue);
    old.check(*q);
    CHECK_FALSE(std::filesystem::exists(dir.path / "q.log.tmp"));
}

TEST_CASE("conversion: the old files stay untouched until the new log is durable") {
    TempDir dir;
    const auto queue = dir.path / "q.log";
    const auto batch_file = dir.path / "q.log.batch";
    OldTerminal old;
    old.write(queue, batch_file);
    const Bytes old_queue = read_all(queue), old_batch = read_all(batch_file);
    // The new log cannot be written (its temporary name is taken by a directory): nothing is converted.
    std::filesystem::create_directory(dir.path / "q.log.tmp");
    auto refused = TransactionQueue::open(queue);
    REQUIRE_FALSE(refused.ok());
    CHECK(refused.error().code == QueueErrorCode::io_error);
    CHECK(read_all(queue) == old_queue);
    CHECK(read_all(batch_file) == old_batch);
    // A damaged old batch file refuses the conversion; the old queue stays as it was.
    std::filesystem::remove(dir.path / "q.log.tmp");
    std::ofstream(batch_file) << "coconut-terminal-batch 1\nbatch twelve\n";
    refused = TransactionQueue::open(queue);
    REQUIRE_FALSE(refused.ok());
    CHECK(refused.error().code == QueueErrorCode::bad_batch_file);
    CHECK(read_all(queue) == old_queue);
    // Repaired, it converts.
    write_all(batch_file, old_batch);
    old.check(*open_log(queue));
}

TEST_CASE("conversion: a failed directory fsync refuses the open and keeps the old batch file; the next open finishes") {
    TempDir dir;
    const auto queue = dir.path / "q.log";
    const auto batch_file = dir.path / "q.log.batch";
    OldTerminal old;
    old.write(queue, batch_file);
    inject_directory_fsync_failures(1);  // the rename of the new log is not known durable
    auto refused = TransactionQueue::open(queue);
    inject_directory_fsync_failures(0);
    REQUIRE_FALSE(refused.ok());
    CHECK(refused.error().code == QueueErrorCode::io_error);
    CHECK(std::filesystem::exists(batch_file));
    old.check(*open_log(queue));
    CHECK_FALSE(std::filesystem::exists(batch_file));
}

TEST_CASE("conversion: an old queue without a batch file, and a batch file without a queue") {
    TempDir dir;
    OldQueueWriter w;
    const std::uint64_t sequence = w.transaction(purchase(1, 100));
    w.save(dir.path / "a.log");
    auto a = open_log(dir.path / "a.log");
    REQUIRE(a->size() == 1);
    CHECK(a->batch(1)[0].sequence == sequence);
    CHECK(a->batch_state() == BatchState{});

    write_old_batch_file(dir.path / "b.log.batch", 5, 900, some_totals());
    auto b = open_log(dir.path / "b.log");
    CHECK(b->size() == 0);
    CHECK(b->batch_state().batch_number == 5);
    CHECK(b->batch_state().totals == some_totals());
    CHECK(*b->take_stan() == 900);
    CHECK_FALSE(std::filesystem::exists(dir.path / "b.log.batch"));
}
