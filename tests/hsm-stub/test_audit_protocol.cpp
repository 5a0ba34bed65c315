// Audit log chain and wire protocol encoding.
#include "support.hpp"

#include <coconut/hsm/audit.hpp>
#include <coconut/hsm/protocol.hpp>

#include <fmt/format.h>
#include <sodium.h>

#include <sstream>
#include <vector>

using namespace hsm_test;
using hsm::Errc;
namespace wire = hsm::wire;

namespace {

crypto::Secret<32> test_audit_key(std::uint8_t fill) {
    Bytes bytes(32, fill);
    return crypto::Secret<32>(bytes);
}

std::vector<std::string> lines_of(const std::filesystem::path& file) {
    std::vector<std::string> lines;
    std::istringstream in(read_text(file));
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    return lines;
}

void write_lines(const std::filesystem::path& file, const std::vector<std::string>& lines) {
    std::string text;
    for (const auto& l : lines) text += l + "\n";
    write_text(file, text);
}

// Five lines from two writers sharing the file (the daemon and a ceremony command).
void write_log(const std::filesystem::path& file) {
    auto daemon = hsm::AuditLog::open(file, test_audit_key(7));
    REQUIRE(daemon.ok());
    REQUIRE(daemon.value()->append({"clearing", "verify-purchase-tacs", "mk-tac", {2}, "valid=10 invalid=0"}).ok());
    REQUIRE(daemon.value()->append({"load", "load-mac2", "mk-load", {1}, "mac1 valid, mac2 issued"}).ok());
    auto ceremony = hsm::AuditLog::open(file, test_audit_key(7));
    REQUIRE(ceremony.ok());
    REQUIRE(ceremony.value()->append({"ceremony:root", "key-retire", "mk-tac", {1}, "ok"}).ok());
    auto seq = daemon.value()->append({"clearing", "verify-purchase-tacs", "mk-tac", {2}, "valid=9 invalid=1"});
    REQUIRE(seq.ok());
    CHECK(seq.value() == 4);  // the daemon continued after the ceremony's line
    REQUIRE(daemon.value()->append({"peer:127.0.0.1:5555", "connection-closed", "", {}, "bad_mac: request seq 1 failed"}).ok());
}

}  // namespace

TEST_CASE("refusals before authentication become one line: counts by reason, the top addresses, claimed clients") {
    hsm::RefusalTally tally;
    CHECK_FALSE(tally.take().has_value());  // nothing counted, no line
    for (int i = 0; i < 7; ++i) tally.count("unknown_client", "203.0.113.9");
    for (int i = 0; i < 3; ++i) tally.count("bad_mac", "198.51.100.2", "clearing");
    tally.count("not_allowed", "192.0.2.1");
    tally.count("accept_out_of_descriptors", "");
    const auto entry = tally.take();
    REQUIRE(entry.has_value());
    CHECK(entry->client == "unauthenticated");
    CHECK(entry->command == "refusals");
    CHECK(entry->key_label.empty());
    CHECK(entry->result.starts_with("12 refused in "));
    CHECK(entry->result.find("reasons: unknown_client=7 bad_mac=3 accept_out_of_descriptors=1 not_allowed=1;") != std::string::npos);
    CHECK(entry->result.find("addresses: 3 (top: 203.0.113.9=7 198.51.100.2=3 192.0.2.1=1)") != std::string::npos);
    CHECK(entry->result.ends_with("; claimed clients: clearing=3"));
    CHECK_FALSE(tally.take().has_value());  // take() reset the counts
}

TEST_CASE("a refusal tally stays bounded: a flood from many addresses still makes one line within the line limit") {
    hsm::RefusalTally tally;
    for (std::uint32_t i = 0; i < 3 * hsm::max_tally_addresses; ++i)
        tally.count(i % 2 == 0 ? "protocol_error" : "timeout", fmt::format("2001:db8::{:x}:{:x}", i >> 16, i & 0xFFFF));
    for (std::size_t i = 0; i < 2 * hsm::max_tally_reasons; ++i) tally.count(fmt::format("reason_{:02}", i), "192.0.2.1");
    const auto entry = tally.take();
    REQUIRE(entry.has_value());
    CHECK(entry->result.find(fmt::format("addresses: {} or more", hsm::max_tally_addresses + 1)) != std::string::npos);
    CHECK(entry->result.find("other=") != std::string::npos);
    TempDir dir;
    auto log = hsm::AuditLog::open(dir / "audit.log", test_audit_key(7));
    REQUIRE(log.ok());
    REQUIRE(log.value()->append(*entry).ok());  // within max_audit_line_bytes
    CHECK(hsm::AuditLog::verify(dir / "audit.log", test_audit_key(7)).ok());
}

TEST_CASE("a key label that is not UTF-8 is written with its bytes replaced, and the log still verifies") {
    // A client's request names its key with any bytes; the line naming it must neither throw (found by
    // fuzz_hsm_frames: the exception ended the HSM) nor break the chain.
    TempDir dir;
    auto log = hsm::AuditLog::open(dir / "audit.log", test_audit_key(7));
    REQUIRE(log.ok());
    REQUIRE(log.value()->append({"issuance", "verify-internal-auth", "\xFE-ssse-auth", {1}, "key_not_found"}).ok());
    CHECK(hsm::AuditLog::verify(dir / "audit.log", test_audit_key(7)).ok());
    CHECK(lines_of(dir / "audit.log")[0].find("-ssse-auth") != std::string::npos);
}

TEST_CASE("an untouched audit log verifies, including lines appended by two writers") {
    TempDir dir;
    write_log(dir / "audit.log");
    auto summary = hsm::AuditLog::verify(dir / "audit.log", test_audit_key(7));
    REQUIRE(summary.ok());
    CHECK(summary->lines == 5);
    CHECK(summary->last_seq == 5);
    const auto lines = lines_of(dir / "audit.log");
    CHECK(lines[0].find(R"("client":"clearing","command":"verify-purchase-tacs","key":"mk-tac","versions":[2])") != std::string::npos);
}

TEST_CASE("a tampered audit log is detected at the first bad line") {
    TempDir dir;
    write_log(dir / "audit.log");
    auto lines = lines_of(dir / "audit.log");
    std::string expect_in_message;
    SUBCASE("a result edited") {
        const auto at = lines[1].find("mac1 valid");
        lines[1].replace(at, 4, "MAC1");
        expect_in_message = "line 2: hash mismatch";
    }
    SUBCASE("a line deleted") {
        lines.erase(lines.begin() + 2);
        expect_in_message = "line 3: seq 4";
    }
    SUBCASE("two lines swapped") {
        std::swap(lines[1], lines[2]);
        expect_in_message = "line 2: seq 3";
    }
    SUBCASE("a line forged with a recomputed but unkeyed chain") {
        // Recompute line 5 with a different key: the keyed hash gives it away.
        write_lines(dir / "audit.log", std::vector<std::string>(lines.begin(), lines.begin() + 4));
        auto forger = hsm::AuditLog::open(dir / "audit.log", test_audit_key(8));
        REQUIRE(forger.ok());
        REQUIRE(forger.value()->append({"clearing", "verify-purchase-tacs", "mk-tac", {2}, "valid=1 invalid=0"}).ok());
        forger.value().reset();
        lines = lines_of(dir / "audit.log");
        expect_in_message = "line 5: hash mismatch";
    }
    write_lines(dir / "audit.log", lines);
    auto summary = hsm::AuditLog::verify(dir / "audit.log", test_audit_key(7));
    REQUIRE_FALSE(summary.ok());
    CHECK(summary.error().code == Errc::audit_broken);
    CHECK_MESSAGE(summary.error().message.find(expect_in_message) != std::string::npos, summary.error().message);
}

TEST_CASE("an audit log cut mid-line is reported as incomplete") {
    TempDir dir;
    write_log(dir / "audit.log");
    const std::string text = read_text(dir / "audit.log");
    write_text(dir / "audit.log", text.substr(0, text.size() - 10));
    auto summary = hsm::AuditLog::verify(dir / "audit.log", test_audit_key(7));
    REQUIRE_FALSE(summary.ok());
    CHECK(summary.error().message.find("line 5: incomplete") != std::string::npos);
    // And a writer refuses to continue a broken chain rather than hiding it.
    auto writer = hsm::AuditLog::open(dir / "audit.log", test_audit_key(7));
    REQUIRE_FALSE(writer.ok());
    CHECK(writer.error().code == Errc::audit_broken);
}

TEST_CASE("a TAC batch survives encoding and decoding; its size is checked against the item count") {
    const crypto::Key16 v2 = key16(tac_master_v2_hex);
    wire::PurchaseTacBatch batch{"mk-tac", {}};
    for (std::uint32_t i = 0; i < 3; ++i)
        batch.items.push_back(signed_purchase(v2, 2, card("4600000000000001", "46000000001234567890"), 100 + i, i));
    const Bytes payload = wire::encode(batch);
    CHECK(payload.size() == 1 + 6 + 2 + 3 * wire::purchase_tac_item_bytes);
    auto decoded = wire::decode_purchase_tac_batch(payload);
    REQUIRE(decoded.ok());
    REQUIRE(decoded->items.size() == 3);
    CHECK(decoded->items[2].amount_fen == 102);
    CHECK(decoded->items[2].tac == batch.items[2].tac);
    CHECK(decoded->items[1].when.date == batch.items[1].when.date);

    Bytes short_payload(payload.begin(), payload.end() - 1);
    auto truncated = wire::decode_purchase_tac_batch(short_payload);
    REQUIRE_FALSE(truncated.ok());
    CHECK(truncated.error().code == Errc::bad_request);
    CHECK(truncated.error().message.find("3 items need 135 bytes, 134 present") != std::string::npos);

    Bytes too_many = payload;
    too_many[7] = 0x04;  // count 0x0401 = 1025
    too_many[8] = 0x01;
    CHECK(wire::decode_purchase_tac_batch(too_many).error().code == Errc::batch_too_large);
}

TEST_CASE("payload decoders name the field where a payload ends and refuse trailing bytes") {
    hsm::LoadRequest load;
    load.key = {"mk-load", 1};
    Bytes payload = wire::encode(load);
    auto cut = wire::decode_load_request(ByteView(payload).first(payload.size() - 2));
    REQUIRE_FALSE(cut.ok());
    CHECK(cut.error().message.find("'time'") != std::string::npos);
    payload.push_back(0);
    auto extra = wire::decode_load_request(payload);
    REQUIRE_FALSE(extra.ok());
    CHECK(extra.error().message.find("1 unexpected bytes") != std::string::npos);
}

TEST_CASE("frame lengths: zero and above 64 KiB are refused") {
    CHECK(wire::decode_length({0, 0, 0, 0}).error().code == Errc::protocol_error);
    CHECK(wire::decode_length({0, 1, 0, 1}).error().code == Errc::frame_too_large);
    CHECK(wire::decode_length({0, 1, 0, 0}).value() == wire::max_frame_bytes);
}

TEST_CASE("a request authenticates only under the client's key and the connection's nonce") {
    hsm::ClientKey key(Bytes(32, 0x42));
    hsm::ClientKey other(Bytes(32, 0x43));
    wire::Nonce nonce{};
    nonce[0] = 1;
    wire::Nonce other_nonce = nonce;
    other_nonce[15] = 9;
    const Bytes frame = wire::encode_request(key, nonce, 7, "clearing", 0x20, hex("0102"));
    auto request = wire::decode_request(ByteView(frame).subspan(wire::length_prefix_bytes));
    REQUIRE(request.ok());
    CHECK(request->seq == 7);
    CHECK(request->client_id == "clearing");
    CHECK(coconut::to_hex(request->payload) == "0102");
    CHECK(wire::request_authentic(key, nonce, request.value()));
    CHECK_FALSE(wire::request_authentic(other, nonce, request.value()));
    CHECK_FALSE(wire::request_authentic(key, other_nonce, request.value()));
    Bytes tampered = frame;
    tampered[wire::length_prefix_bytes + 2] ^= 1;  // seq
    auto altered = wire::decode_request(ByteView(tampered).subspan(wire::length_prefix_bytes));
    REQUIRE(altered.ok());
    CHECK_FALSE(wire::request_authentic(key, nonce, altered.value()));
}

TEST_CASE("a response with a wrong MAC is refused; a fatal notice is reported with its reason") {
    hsm::ClientKey key(Bytes(32, 0x42));
    hsm::ClientKey other(Bytes(32, 0x43));
    wire::Nonce nonce{};
    const Bytes frame = wire::encode_response(key, nonce, 3, Errc::ok, hex("00"));
    const ByteView body = ByteView(frame).subspan(wire::length_prefix_bytes);
    auto good = wire::decode_response(key, nonce, body);
    REQUIRE(good.ok());
    CHECK(good->seq == 3);
    CHECK(wire::decode_response(other, nonce, body).error().code == Errc::bad_mac);
    const Bytes fatal = wire::encode_fatal(Errc::replayed_sequence, "sequence 3 is not greater than 3");
    auto notice = wire::decode_response(key, nonce, ByteView(fatal).subspan(wire::length_prefix_bytes));
    REQUIRE_FALSE(notice.ok());
    CHECK(notice.error().code == Errc::replayed_sequence);
    CHECK(notice.error().message.find("sequence 3 is not greater") != std::string::npos);
}

TEST_CASE("client key files: written 0600, read back, refused when readable by others or malformed") {
    TempDir dir;
    wire::ClientCredentials credentials{"clearing", hsm::ClientKey(Bytes(32, 0x5A))};
    REQUIRE(wire::write_client_credentials(dir / "c.key", credentials).ok());
    auto read = wire::read_client_credentials(dir / "c.key");
    REQUIRE(read.ok());
    CHECK(read->client_id == "clearing");
    CHECK(read->key == credentials.key);
    CHECK_FALSE(wire::write_client_credentials(dir / "c.key", credentials).ok());  // never overwrites
    std::filesystem::permissions(dir / "c.key", std::filesystem::perms::others_read, std::filesystem::perm_options::add);
    CHECK(wire::read_client_credentials(dir / "c.key").error().code == Errc::client_credentials);
    write_text(dir / "bad.key", "coconut-hsm-client-key 1\nclient clearing\nkey 1234\n");
    std::filesystem::permissions(dir / "bad.key", std::filesystem::perms::owner_read | std::filesystem::perms::owner_write,
                                 std::filesystem::perm_options::replace);
    CHECK(wire::read_client_credentials(dir / "bad.key").error().message.find("64 hex digits") != std::string::npos);
}

TEST_CASE("endpoints parse as HOST:PORT") {
    CHECK(wire::parse_endpoint("127.0.0.1:7501")->port == 7501);
    CHECK_FALSE(wire::parse_endpoint("127.0.0.1").ok());
    CHECK_FALSE(wire::parse_endpoint("127.0.0.1:0").ok());
    CHECK(wire::parse_endpoint("127.0.0.1:0", true).ok());
    CHECK_FALSE(wire::parse_endpoint("127.0.0.1:70000").ok());
}
