// The store-and-forward queue, the hotlist and the card channel's transport rules.
#include "test_sdk_support.hpp"

#include <coconut/core/sha256.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <fstream>
#include <iterator>
#include <limits>

using namespace sdk_test;

namespace {

TransactionRecord sample(std::uint16_t atc, std::uint32_t amount) {
    TransactionRecord r;
    const Bytes asn = hex("10000000000000012345");
    std::copy(asn.begin(), asn.end(), r.asn.begin());
    r.type = crypto::type_ep_purchase;
    r.atc = atc;
    r.amount_fen = amount;
    r.tac = {1, 2, 3, 4};
    r.line = 7;
    r.tap_kind = TapKind::flat;
    return r;
}

std::unique_ptr<TransactionQueue> open_queue(const std::filesystem::path& path, QueueLimits limits = {}) {
    auto q = TransactionQueue::open(path, limits);
    REQUIRE_MESSAGE(q.ok(), (q.ok() ? "" : q.error().message));
    return std::move(q.value());
}

void poke(const std::filesystem::path& path, off_t offset, std::uint8_t byte) {
    const int fd = ::open(path.c_str(), O_WRONLY);
    REQUIRE(fd >= 0);
    REQUIRE(::pwrite(fd, &byte, 1, offset) == 1);
    ::close(fd);
}

}  // namespace

TEST_CASE("queue: records survive reopen in order and leave only when acknowledged") {
    TempDir dir;
    const auto path = dir.path / "q.log";
    {
        auto q = open_queue(path);
        for (std::uint16_t i = 0; i < 5; ++i) REQUIRE(q->append(sample(i, 100 + i)).ok());
    }
    auto q = open_queue(path);
    REQUIRE(q->size() == 5);
    auto batch = q->batch(3);
    REQUIRE(batch.size() == 3);
    CHECK(batch[0].record.atc == 0);
    CHECK(batch[2].record.atc == 2);
    CHECK(batch[1].record.line == 7);
    CHECK(batch[1].record.tap_kind == TapKind::flat);
    const std::vector<std::uint64_t> acked{batch[0].sequence, batch[1].sequence};
    REQUIRE(q->acknowledge(acked).ok());
    q = open_queue(path);
    REQUIRE(q->size() == 3);
    CHECK(q->batch(1)[0].record.atc == 2);
}

TEST_CASE("queue: an acknowledgement naming an unknown sequence deletes nothing") {
    TempDir dir;
    auto q = open_queue(dir.path / "q.log");
    const auto s = q->append(sample(1, 1));
    REQUIRE(s.ok());
    const std::vector<std::uint64_t> bad{*s, 999};
    auto r = q->acknowledge(bad);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == QueueErrorCode::unknown_sequence);
    CHECK(q->size() == 1);
}

TEST_CASE("queue: a full queue refuses new transactions but still resolves intents") {
    TempDir dir;
    QueueLimits limits;
    limits.capacity = 2;
    auto q = open_queue(dir.path / "q.log", limits);
    auto intent = q->record_intent(sample(9, 9));
    REQUIRE(intent.ok());
    REQUIRE(q->append(sample(1, 1)).ok());
    REQUIRE(q->append(sample(2, 2)).ok());
    CHECK(q->full());
    auto refused = q->append(sample(3, 3));
    REQUIRE_FALSE(refused.ok());
    CHECK(refused.error().code == QueueErrorCode::full);
    CHECK(q->record_intent(sample(4, 4)).error().code == QueueErrorCode::full);
    TransactionRecord done = sample(9, 9);
    done.intent_sequence = *intent;
    CHECK(q->append(done).ok());  // a debit that happened is never dropped
    CHECK(q->size() == 3);
}

TEST_CASE("queue: a torn final append is dropped; damage before other records refuses to open") {
    TempDir dir;
    const auto path = dir.path / "q.log";
    {
        auto q = open_queue(path);
        REQUIRE(q->append(sample(1, 1)).ok());
        REQUIRE(q->append(sample(2, 2)).ok());
    }
    const std::size_t record_bytes = 4 + 1 + 8 + transaction_record_size + 8;
    // Tear the second record's checksum: it was the last append, so it never returned.
    poke(path, static_cast<off_t>(16 + 2 * record_bytes - 1), 0xEE);
    {
        auto q = open_queue(path);
        CHECK(q->size() == 1);
        REQUIRE(q->append(sample(3, 3)).ok());  // appends continue where the valid log ends
    }
    CHECK(open_queue(path)->size() == 2);
    // Damage the first record, which has records after it: that is corruption, not a torn write.
    poke(path, 16 + 20, 0xEE);
    auto refused = TransactionQueue::open(path);
    REQUIRE_FALSE(refused.ok());
    CHECK(refused.error().code == QueueErrorCode::corrupt);
}

TEST_CASE("queue: a zeroed length word with records after it refuses to open, not an end that drops them") {
    TempDir dir;
    const auto path = dir.path / "q.log";
    {
        auto q = open_queue(path);
        REQUIRE(q->append(sample(1, 1)).ok());
        REQUIRE(q->append(sample(2, 2)).ok());
    }
    // The first record's length word reads 0 (found by fuzz_queue_file): the end of the log only if
    // nothing but zeros follows; here two records do, which the next append would overwrite.
    for (off_t at = 16; at < 20; ++at) poke(path, at, 0x00);
    auto refused = TransactionQueue::open(path);
    REQUIRE_FALSE(refused.ok());
    CHECK(refused.error().code == QueueErrorCode::corrupt);
}

namespace {
// Sets the sequence of the record at `at` and seals its checksum again (QUEUE-FORMAT.md "Record"), as
// anyone who can write the file can: the checksum detects torn writes, it is not a MAC.
void set_sequence(const std::filesystem::path& path, std::size_t at, std::uint64_t sequence) {
    std::ifstream in(path, std::ios::binary);
    Bytes file((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    in.close();
    REQUIRE(file.size() > at + 13);
    const auto field = be_array<8>(sequence);
    std::copy(field.begin(), field.end(), file.begin() + static_cast<std::ptrdiff_t>(at + 5));
    const std::size_t length = read_be32(ByteView(file).subspan(at, 4));
    const Sha256Digest digest = sha256(ByteView(file).subspan(at, 4 + length));
    std::copy(digest.begin(), digest.begin() + 8, file.begin() + static_cast<std::ptrdiff_t>(at + 4 + length));
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(file.data()), static_cast<std::streamsize>(file.size()));
}
// A closed queue log holding two transactions, sequences 1 and 2: where the second record starts.
std::size_t two_transactions(const std::filesystem::path& path) {
    auto q = open_queue(path);
    REQUIRE(q->append(sample(1, 1)).ok());
    REQUIRE(q->append(sample(2, 2)).ok());
    return 16 + (4 + 1 + 8 + transaction_record_size + 8);
}
}  // namespace

TEST_CASE("queue: a sequence of 2^63 or more refuses the log, so sequences never wrap onto live records") {
    TempDir dir;
    const auto path = dir.path / "q.log";
    const std::size_t second = two_transactions(path);
    // A log read up to 2^64 - 2 used to open; its appends then took 2^64 - 1, 0, 1, and the one under
    // sequence 1 was dropped beside the live record already there.
    for (const std::uint64_t sequence : {std::numeric_limits<std::uint64_t>::max() - 1, std::uint64_t{1} << 63}) {
        set_sequence(path, second, sequence);
        auto refused = TransactionQueue::open(path);
        REQUIRE_FALSE(refused.ok());
        CHECK(refused.error().code == QueueErrorCode::corrupt);
        CHECK(refused.error().message.find("sequence out of range") != std::string::npos);
    }
    // The last sequence a log may hold opens; its next append is refused as damaged and writes nothing.
    set_sequence(path, second, (std::uint64_t{1} << 63) - 1);
    {
        auto q = open_queue(path);
        CHECK(q->size() == 2);
        auto refused = q->append(sample(3, 3));
        REQUIRE_FALSE(refused.ok());
        CHECK(refused.error().code == QueueErrorCode::corrupt);
        CHECK(q->size() == 2);
    }
    CHECK(open_queue(path)->size() == 2);
}

TEST_CASE("queue: two transactions under one sequence refuse the log, never a silent drop") {
    TempDir dir;
    const auto path = dir.path / "q.log";
    set_sequence(path, two_transactions(path), 1);  // the first's
    auto refused = TransactionQueue::open(path);
    REQUIRE_FALSE(refused.ok());
    CHECK(refused.error().code == QueueErrorCode::corrupt);
    CHECK(refused.error().message.find("two transactions with one sequence") != std::string::npos);
}

TEST_CASE("queue: a file that is not a queue is refused") {
    TempDir dir;
    const auto path = dir.path / "q.log";
    std::ofstream(path) << "hello, not a queue";
    auto refused = TransactionQueue::open(path);
    REQUIRE_FALSE(refused.ok());
    CHECK(refused.error().code == QueueErrorCode::corrupt);
}

TEST_CASE("queue: compaction keeps live records and intents") {
    TempDir dir;
    const auto path = dir.path / "q.log";
    QueueLimits limits;
    limits.compaction_dead_bytes_min = 64 * 1024;
    auto q = open_queue(path, limits);
    auto intent = q->record_intent(sample(77, 77));
    REQUIRE(intent.ok());
    // Records acknowledged in batches push the dead bytes past the compaction threshold several times.
    for (int round = 0; round < 12; ++round) {
        std::vector<std::uint64_t> batch;
        for (int i = 0; i < 100; ++i) batch.push_back(*q->append(sample(static_cast<std::uint16_t>(i), 1)));
        REQUIRE(q->acknowledge(batch).ok());
    }
    REQUIRE(q->append(sample(5, 555)).ok());
    // 1,200 records (~150 KB of log) went through; after compaction the used part of the log (up to its
    // last non-zero byte) holds less than one threshold's worth.
    std::ifstream in(path, std::ios::binary);
    const Bytes file((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const auto last = std::find_if(file.rbegin(), file.rend(), [](std::uint8_t b) { return b != 0; });
    const auto used = static_cast<std::size_t>(file.rend() - last);
    CHECK(used < limits.compaction_dead_bytes_min);
    auto reopened = open_queue(path);
    CHECK(reopened->size() == 1);
    CHECK(reopened->batch(1)[0].record.amount_fen == 555);
    REQUIRE(reopened->open_intents().size() == 1);
    CHECK(reopened->open_intents()[0].sequence == *intent);
}

TEST_CASE("record codec round-trips every field") {
    TransactionRecord r = sample(513, 123456);
    r.balance_before_fen = 9;
    r.balance_after_fen = 8;
    r.terminal_serial = 0x01020304;
    r.recovered = true;
    r.unproven = true;
    r.mac2_unverified = true;
    r.carried = true;
    r.station = 3;
    r.vehicle = 77;
    r.entry_station = 2;
    r.intent_sequence = 99;
    const Bytes encoded = encode_record(r);
    CHECK(encoded.size() == transaction_record_size);
    auto back = decode_record(encoded);
    REQUIRE(back);
    CHECK(encode_record(*back) == encoded);
    CHECK(back->unproven);
    CHECK(back->mac2_unverified);
    CHECK(back->carried);
    Bytes bad = encoded;
    bad[59] = 9;  // tap kind (after ASN … MAC2 and the flags byte) out of range
    CHECK_FALSE(decode_record(bad));
}

TEST_CASE("hotlist: deltas apply in order, a gap is refused, the list persists") {
    TempDir dir;
    const auto path = dir.path / "hot.bin";
    Asn a{}, b{};
    a[9] = 1;
    b[9] = 2;
    {
        auto list = Hotlist::load(path);
        REQUIRE(list.ok());
        CHECK(list->version() == 0);
        REQUIRE(list->apply({0, 1, {{a, BlockReason::stolen}, {b, BlockReason::cloned}}, {}}).ok());
        auto gap = list->apply({2, 3, {}, {a}});
        REQUIRE_FALSE(gap.ok());
        CHECK(gap.error().code == HotlistErrorCode::version_gap);
        REQUIRE(list->apply({1, 2, {}, {a}}).ok());
    }
    auto list = Hotlist::load(path);
    REQUIRE(list.ok());
    CHECK(list->version() == 2);
    CHECK_FALSE(list->blocked(a));
    CHECK(list->blocked(b) == BlockReason::cloned);
    poke(path, 20, 0xFF);
    CHECK(Hotlist::load(path).error().code == HotlistErrorCode::corrupt);
}

// ---- channel ---------------------------------------------------------------------------------

namespace {
// A reader that answers from a script (a hostile or unusual card).
class ScriptedReader final : public Reader {
public:
    std::function<Bytes(ByteView)> answer;
    std::vector<Bytes> sent;
    CardProtocol proto = CardProtocol::t0;
    std::string name() const override { return "scripted"; }
    Result<Bytes, ReaderError> connect() override { return Bytes{0x3B, 0x00}; }
    void disconnect(bool) override {}
    bool connected() const override { return true; }
    CardProtocol protocol() const override { return proto; }
    Result<Bytes, ReaderError> transmit(ByteView c) override {
        sent.emplace_back(c.begin(), c.end());
        return answer(c);
    }
    Result<bool, ReaderError> wait_for_card(bool, std::chrono::milliseconds) override { return true; }
};
}  // namespace

TEST_CASE("channel: 6Cxx resends the command with the exact Le") {
    ScriptedReader reader;
    reader.proto = CardProtocol::t1;
    reader.answer = [](ByteView c) { return c.back() == 0x04 ? hex("000013889000") : hex("6C04"); };
    CardChannel channel(reader);
    auto r = channel.transmit(apdu::Command{0x80, 0x5C, 0x00, 0x02, {}, 8});
    REQUIRE(r.ok());
    CHECK(to_hex(r->data) == "00001388");
    REQUIRE(reader.sent.size() == 2);
    CHECK(to_hex(reader.sent[1]) == "805C000204");
}

TEST_CASE("channel: T=0 sends case 4 without Le and chains GET RESPONSE over 61xx") {
    ScriptedReader reader;
    int step = 0;
    reader.answer = [&](ByteView) {
        switch (step++) {
            case 0: return hex("6104");
            case 1: return hex("0102030461 02");
            default: return hex("05069000");
        }
    };
    CardChannel channel(reader);
    auto r = channel.transmit(apdu::Command{0x00, 0xA4, 0x04, 0x00, hex("A0000006"), 256});
    REQUIRE(r.ok());
    CHECK(to_hex(r->data) == "010203040506");
    CHECK(r->sw == 0x9000);
    CHECK(to_hex(reader.sent[0]) == "00A4040004A0000006");  // no Le on T=0
    CHECK(to_hex(reader.sent[1]) == "00C0000004");
    CHECK(to_hex(reader.sent[2]) == "00C0000002");
}

TEST_CASE("channel: a card that answers 61xx forever is stopped by the GET RESPONSE bound") {
    ScriptedReader reader;
    reader.answer = [](ByteView) { return hex("AA6101"); };
    CardChannel channel(reader);
    auto r = channel.transmit(apdu::Command{0x00, 0xB0, 0x00, 0x00, {}, 1});
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == ReaderErrorCode::protocol_error);
    CHECK(reader.sent.size() == 1 + get_response_chain_max);
}

TEST_CASE("channel: T=0 case 4 answered 9000 without data fetches it with the original Le") {
    ScriptedReader reader;
    reader.answer = [](ByteView c) { return c[1] == 0xC0 ? hex("11223344 9000") : hex("9000"); };
    CardChannel channel(reader);
    auto r = channel.transmit(apdu::Command{0x80, 0x50, 0x01, 0x02, hex("0100000001000001000050"), 4});
    REQUIRE(r.ok());
    CHECK(to_hex(r->data) == "11223344");
    CHECK(to_hex(reader.sent[1]) == "00C0000004");
}

TEST_CASE("channel: a response shorter than a status word is a protocol error") {
    ScriptedReader reader;
    reader.answer = [](ByteView) { return hex("90"); };
    CardChannel channel(reader);
    auto r = channel.transmit(apdu::Command{0x00, 0xA4, 0x00, 0x00, {}, std::nullopt});
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == ReaderErrorCode::protocol_error);
}
