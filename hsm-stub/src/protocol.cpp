#include <coconut/core/assert.hpp>
#include <coconut/hsm/protocol.hpp>

#include "file_io.hpp"
#include "secure_buffer.hpp"

#include <coconut/core/endpoint.hpp>

#include <fmt/format.h>
#include <sodium.h>

#include <fstream>
#include <sstream>

namespace coconut::hsm::wire {
namespace {

static_assert(mac_bytes == crypto_auth_hmacsha512256_BYTES);
static_assert(client_key_bytes == crypto_auth_hmacsha512256_KEYBYTES);

struct Writer {
    Bytes out;
    Writer& u8(std::uint8_t v) {
        out.push_back(v);
        return *this;
    }
    Writer& be(std::uint64_t v, std::size_t width) {
        append_be(out, v, width);
        return *this;
    }
    Writer& raw(ByteView b) {
        append(out, b);
        return *this;
    }
    Writer& text(std::string_view s) {
        COCONUT_ASSERT(s.size() <= 255);
        out.push_back(static_cast<std::uint8_t>(s.size()));
        out.insert(out.end(), s.begin(), s.end());
        return *this;
    }
    Writer& key_ref(const KeyRef& ref) { return text(ref.label).u8(ref.version); }
};

// Bounds-checked payload reader: the first overrun records which field it was.
class Reader {
public:
    Reader(ByteView data, std::string_view what) : data_(data), what_(what) {}
    bool ok() const { return error_.empty(); }
    std::size_t remaining() const { return data_.size() - at_; }

    std::uint64_t be(std::size_t width, std::string_view field) {
        const ByteView b = take(width, field);
        return b.empty() ? 0 : read_be(b);
    }
    std::uint8_t u8(std::string_view field) { return static_cast<std::uint8_t>(be(1, field)); }
    template <std::size_t N>
    std::array<std::uint8_t, N> array(std::string_view field) {
        std::array<std::uint8_t, N> out{};
        const ByteView b = take(N, field);
        if (!b.empty()) std::copy(b.begin(), b.end(), out.begin());
        return out;
    }
    std::string text(std::string_view field) {
        const std::size_t n = u8(field);
        const ByteView b = take(n, field);
        return std::string(b.begin(), b.end());
    }
    KeyRef key_ref(std::string_view field) {
        KeyRef ref;
        ref.label = text(field);
        ref.version = u8(field);
        if (ok() && !valid_label(ref.label)) error_ = fmt::format("{}: {} label '{}' is not a valid key label", what_, field, ref.label);
        return ref;
    }
    crypto::CardDateTime when() {
        crypto::CardDateTime w;
        w.date = array<4>("date");
        w.time = array<3>("time");
        return w;
    }
    // Every payload must be consumed exactly.
    Status<Failure> finish() {
        if (ok() && at_ != data_.size()) error_ = fmt::format("{}: {} unexpected bytes after the last field", what_, data_.size() - at_);
        if (!ok()) return fail(Errc::bad_request, error_);
        return Ok{};
    }
    const std::string& error() const { return error_; }

private:
    ByteView take(std::size_t n, std::string_view field) {
        if (!ok()) return {};
        if (remaining() < n) {
            error_ = fmt::format("{}: payload ends inside field '{}' ({} of {} bytes present)", what_, field, remaining(), n);
            return {};
        }
        const ByteView b = data_.subspan(at_, n);
        at_ += n;
        return b;
    }
    ByteView data_;
    std::string_view what_;
    std::size_t at_ = 0;
    std::string error_;
};

template <class T>
Outcome<T> finished(Reader& in, T value) {
    if (auto ok = in.finish(); !ok) return Unexpected<Failure>{ok.error()};
    return value;
}

std::array<std::uint8_t, mac_bytes> frame_mac(const ClientKey& key, const Nonce& nonce, ByteView authenticated) {
    crypto_auth_hmacsha512256_state state;
    crypto_auth_hmacsha512256_init(&state, key.data(), key.size());
    crypto_auth_hmacsha512256_update(&state, nonce.data(), nonce.size());
    crypto_auth_hmacsha512256_update(&state, authenticated.data(), authenticated.size());
    std::array<std::uint8_t, mac_bytes> mac{};
    crypto_auth_hmacsha512256_final(&state, mac.data());
    sodium_memzero(&state, sizeof state);
    return mac;
}

Bytes with_length(Bytes body) {
    COCONUT_ASSERT(body.size() <= max_frame_bytes);
    Bytes frame;
    frame.reserve(length_prefix_bytes + body.size());
    append_be(frame, body.size(), length_prefix_bytes);
    append(frame, body);
    return frame;
}

Bytes authenticated_frame(const ClientKey& key, const Nonce& nonce, Writer body) {
    // Length prefix first, then sign the body in place: one allocation for the whole frame.
    const std::size_t body_bytes = body.out.size() + mac_bytes;
    Bytes frame;
    frame.reserve(length_prefix_bytes + body_bytes);
    append_be(frame, body_bytes, length_prefix_bytes);
    append(frame, body.out);
    const auto mac = frame_mac(key, nonce, body.out);
    append(frame, mac);
    // decode_length refuses a frame above max_frame_bytes: this side must never send one.
    COCONUT_ASSERT(frame.size() == length_prefix_bytes + body_bytes && body_bytes <= max_frame_bytes, "frame size");
    return frame;
}

void put_card(Writer& w, const CardIdentity& card) { w.raw(card.issuer_id).raw(card.asn); }
CardIdentity get_card(Reader& in) {
    CardIdentity card;
    card.issuer_id = in.array<8>("issuer id");
    card.asn = in.array<10>("ASN");
    return card;
}
void put_when(Writer& w, const crypto::CardDateTime& when) { w.raw(when.date).raw(when.time); }

}  // namespace

std::optional<Command> command_from_byte(std::uint8_t byte) {
    switch (static_cast<Command>(byte)) {
        case Command::key_info:
        case Command::derive_card_keys:
        case Command::export_issuer_key:
        case Command::verify_purchase_tacs:
        case Command::verify_load_tac:
        case Command::load_mac2:
        case Command::verify_internal_auth:
        case Command::ca_certificate:
        case Command::sign_certificate:
        case Command::maintenance_mac: return static_cast<Command>(byte);
    }
    return std::nullopt;
}

std::string_view command_name(Command command) {
    switch (command) {
        case Command::key_info: return "key-info";
        case Command::derive_card_keys: return "derive-card-keys";
        case Command::export_issuer_key: return "export-issuer-key";
        case Command::verify_purchase_tacs: return "verify-purchase-tacs";
        case Command::verify_load_tac: return "verify-load-tac";
        case Command::load_mac2: return "load-mac2";
        case Command::verify_internal_auth: return "verify-internal-auth";
        case Command::ca_certificate: return "ca-certificate";
        case Command::sign_certificate: return "sign-certificate";
        case Command::maintenance_mac: return "maintenance-mac";
    }
    return "unknown";
}

std::uint32_t required_permission(Command command) {
    switch (command) {
        case Command::key_info: return permit_key_info;
        case Command::derive_card_keys:
        case Command::export_issuer_key: return permit_issuance;
        case Command::verify_purchase_tacs:
        case Command::verify_load_tac: return permit_tac;
        case Command::load_mac2: return permit_load;
        case Command::verify_internal_auth: return permit_auth;
        // The CA certificate is public: whoever may look up keys may fetch it.
        case Command::ca_certificate: return permit_ca | permit_key_info;
        case Command::sign_certificate: return permit_ca;
        case Command::maintenance_mac: return permit_maintenance;
    }
    return 0;
}

// ---- frames ---------------------------------------------------------------------------------------

Bytes encode_hello(const Hello& hello) {
    Writer w;
    w.u8(protocol_version)
        .u8(static_cast<std::uint8_t>(FrameKind::hello))
        .raw(hello.nonce)
        .be(hello.max_frame_bytes, 4)
        .be(hello.max_batch_items, 2);
    return with_length(std::move(w.out));
}

Bytes encode_request(const ClientKey& key, const Nonce& nonce, std::uint64_t seq, std::string_view client_id, std::uint8_t command,
                     ByteView payload) {
    Writer w;
    w.out.reserve(12 + client_id.size() + payload.size());
    w.u8(protocol_version).u8(static_cast<std::uint8_t>(FrameKind::request)).be(seq, 8).text(client_id).u8(command).raw(payload);
    return authenticated_frame(key, nonce, std::move(w));
}

Bytes encode_response(const ClientKey& key, const Nonce& nonce, std::uint64_t seq, Errc status, ByteView payload) {
    Writer w;
    w.out.reserve(11 + payload.size());
    w.u8(protocol_version).u8(static_cast<std::uint8_t>(FrameKind::response)).be(seq, 8).u8(static_cast<std::uint8_t>(status)).raw(payload);
    return authenticated_frame(key, nonce, std::move(w));
}

Bytes encode_fatal(Errc code, std::string_view message) {
    Writer w;
    w.u8(protocol_version).u8(static_cast<std::uint8_t>(FrameKind::fatal)).u8(static_cast<std::uint8_t>(code));
    const std::string_view text = message.substr(0, max_fatal_message_bytes);
    w.out.insert(w.out.end(), text.begin(), text.end());
    return with_length(std::move(w.out));
}

Outcome<std::uint32_t> decode_length(const std::array<std::uint8_t, length_prefix_bytes>& prefix) {
    const auto length = static_cast<std::uint32_t>(read_be(prefix));
    if (length == 0) return fail(Errc::protocol_error, "empty frame (length 0)");
    if (length > max_frame_bytes)
        return fail(Errc::frame_too_large, fmt::format("frame of {} bytes exceeds the limit of {}", length, max_frame_bytes));
    return length;
}

namespace {
Status<Failure> check_envelope(Reader& in, FrameKind expected) {
    const std::uint8_t version = in.u8("version");
    const std::uint8_t kind = in.u8("kind");
    if (!in.ok()) return fail(Errc::protocol_error, in.error());
    if (version != protocol_version)
        return fail(Errc::protocol_error, fmt::format("protocol version {} (this side speaks {})", version, protocol_version));
    if (kind != static_cast<std::uint8_t>(expected))
        return fail(Errc::protocol_error, fmt::format("frame kind {} where {} was expected", kind, static_cast<int>(expected)));
    return Ok{};
}

Failure fatal_notice(ByteView body) {
    // body: version ‖ kind ‖ code ‖ message
    const Errc code = body.size() >= 3 ? static_cast<Errc>(body[2]) : Errc::protocol_error;
    const std::string message = body.size() > 3 ? std::string(body.begin() + 3, body.end()) : std::string();
    return Failure{code, fmt::format("the HSM closed the connection: {}{}{} (unauthenticated notice)", errc_name(code),
                                     message.empty() ? "" : ": ", message)};
}
}  // namespace

bool is_fatal_notice(ByteView body) { return body.size() >= 2 && body[1] == static_cast<std::uint8_t>(FrameKind::fatal); }

Outcome<Hello> decode_hello(ByteView body) {
    if (is_fatal_notice(body)) return Unexpected<Failure>{fatal_notice(body)};
    Reader in(body, "hello");
    if (auto ok = check_envelope(in, FrameKind::hello); !ok) return Unexpected<Failure>{ok.error()};
    Hello hello;
    hello.nonce = in.array<nonce_bytes>("nonce");
    hello.max_frame_bytes = static_cast<std::uint32_t>(in.be(4, "max frame bytes"));
    hello.max_batch_items = static_cast<std::uint16_t>(in.be(2, "max batch items"));
    if (auto ok = in.finish(); !ok) return fail(Errc::protocol_error, ok.error().message);
    return hello;
}

Outcome<Request> decode_request(ByteView body) {
    Reader in(body, "request");
    if (auto ok = check_envelope(in, FrameKind::request); !ok) return Unexpected<Failure>{ok.error()};
    Request request;
    request.seq = in.be(8, "seq");
    request.client_id = in.text("client id");
    request.command = in.u8("command");
    if (!in.ok() || in.remaining() < mac_bytes) return fail(Errc::protocol_error, in.ok() ? "request: shorter than its MAC" : in.error());
    const std::size_t payload_at = body.size() - in.remaining();
    request.payload = body.subspan(payload_at, in.remaining() - mac_bytes);
    request.mac = body.last(mac_bytes);
    request.authenticated = body.first(body.size() - mac_bytes);
    // The three views tile the frame: header ‖ payload ‖ MAC, the MAC over everything before it.
    COCONUT_ASSERT(payload_at + request.payload.size() + request.mac.size() == body.size() &&
                       request.authenticated.size() == payload_at + request.payload.size(),
                   "request frame views");
    return request;
}

bool request_authentic(const ClientKey& key, const Nonce& nonce, const Request& request) {
    const auto expected = frame_mac(key, nonce, request.authenticated);
    return request.mac.size() == mac_bytes && crypto_verify_32(expected.data(), request.mac.data()) == 0;
}

Outcome<Response> decode_response(const ClientKey& key, const Nonce& nonce, ByteView body) {
    if (is_fatal_notice(body)) return Unexpected<Failure>{fatal_notice(body)};
    Reader in(body, "response");
    if (auto ok = check_envelope(in, FrameKind::response); !ok) return Unexpected<Failure>{ok.error()};
    Response response;
    response.seq = in.be(8, "seq");
    response.status = static_cast<Errc>(in.u8("status"));
    if (!in.ok() || in.remaining() < mac_bytes) return fail(Errc::protocol_error, in.ok() ? "response: shorter than its MAC" : in.error());
    const auto expected = frame_mac(key, nonce, body.first(body.size() - mac_bytes));
    if (crypto_verify_32(expected.data(), body.last(mac_bytes).data()) != 0)
        return fail(Errc::bad_mac, "the response's MAC does not verify: not from the HSM holding this client's key, or altered");
    response.payload = body.subspan(body.size() - in.remaining(), in.remaining() - mac_bytes);
    COCONUT_ASSERT(response.payload.end() + mac_bytes == body.end(), "response frame views");
    return response;
}

// ---- payloads -------------------------------------------------------------------------------------

Bytes encode(const KeyRef& request) { return Writer().key_ref(request).out; }

Outcome<KeyRef> decode_key_info(ByteView payload) {
    Reader in(payload, "key-info");
    KeyRef ref = in.key_ref("key");
    return finished(in, std::move(ref));
}

Bytes encode(const DeriveCardKeys& request) {
    Writer w;
    put_card(w, request.card);
    w.key_ref(request.transport).u8(static_cast<std::uint8_t>(request.masters.size()));
    for (const KeyRef& m : request.masters) w.key_ref(m);
    return std::move(w.out);
}

Outcome<DeriveCardKeys> decode_derive_card_keys(ByteView payload) {
    Reader in(payload, "derive-card-keys");
    DeriveCardKeys request;
    request.card = get_card(in);
    request.transport = in.key_ref("transport key");
    const std::size_t count = in.u8("master count");
    for (std::size_t i = 0; i < count && in.ok(); ++i) request.masters.push_back(in.key_ref("master key"));
    return finished(in, std::move(request));
}

Bytes encode(const ExportIssuerKey& request) {
    return Writer().raw(request.issuer_id).key_ref(request.master).key_ref(request.transport).out;
}

Outcome<ExportIssuerKey> decode_export_issuer_key(ByteView payload) {
    Reader in(payload, "export-issuer-key");
    ExportIssuerKey request;
    request.issuer_id = in.array<8>("issuer id");
    request.master = in.key_ref("master key");
    request.transport = in.key_ref("transport key");
    return finished(in, std::move(request));
}

Bytes encode(const PurchaseTacBatch& request) {
    Writer w;
    w.out.reserve(request.label.size() + 3 + request.items.size() * purchase_tac_item_bytes);
    w.text(request.label).be(request.items.size(), 2);
    for (const PurchaseTac& t : request.items) {
        w.u8(t.key_version);
        put_card(w, t.card);
        w.be(t.amount_fen, 4).u8(t.type).raw(t.terminal_id).be(t.terminal_serial, 4);
        put_when(w, t.when);
        w.raw(t.tac);
    }
    // What decode_purchase_tac_batch requires: the batch limit and exactly item-size bytes per item.
    COCONUT_ASSERT(request.items.size() <= max_batch_items &&
                       w.out.size() == 1 + request.label.size() + 2 + request.items.size() * purchase_tac_item_bytes,
                   "TAC batch layout");
    return std::move(w.out);
}

Outcome<PurchaseTacBatch> decode_purchase_tac_batch(ByteView payload) {
    Reader in(payload, "verify-purchase-tacs");
    PurchaseTacBatch request;
    request.label = in.text("key label");
    const std::size_t count = in.be(2, "item count");
    if (in.ok() && !valid_label(request.label))
        return fail(Errc::bad_request, fmt::format("verify-purchase-tacs: '{}' is not a valid key label", request.label));
    if (count > max_batch_items)
        return fail(Errc::batch_too_large, fmt::format("a batch holds at most {} transactions, not {}", max_batch_items, count));
    if (in.ok() && in.remaining() != count * purchase_tac_item_bytes)
        return fail(Errc::bad_request, fmt::format("verify-purchase-tacs: {} items need {} bytes, {} present", count,
                                                   count * purchase_tac_item_bytes, in.remaining()));
    request.items.resize(count);
    for (PurchaseTac& t : request.items) {
        t.key_version = in.u8("key version");
        t.card = get_card(in);
        t.amount_fen = static_cast<std::uint32_t>(in.be(4, "amount"));
        t.type = in.u8("type");
        t.terminal_id = in.array<6>("terminal id");
        t.terminal_serial = static_cast<std::uint32_t>(in.be(4, "terminal serial"));
        t.when = in.when();
        t.tac = in.array<4>("TAC");
    }
    return finished(in, std::move(request));
}

Bytes encode(const LoadTac& request) {
    Writer w;
    w.key_ref(request.key);
    put_card(w, request.card);
    w.be(request.new_balance_fen, 4).be(request.online_atc_before, 2).be(request.amount_fen, 4).u8(request.type).raw(request.terminal_id);
    put_when(w, request.when);
    w.raw(request.tac);
    return std::move(w.out);
}

Outcome<LoadTac> decode_load_tac(ByteView payload) {
    Reader in(payload, "verify-load-tac");
    LoadTac request;
    request.key = in.key_ref("TAC master key");
    request.card = get_card(in);
    request.new_balance_fen = static_cast<std::uint32_t>(in.be(4, "new balance"));
    request.online_atc_before = static_cast<std::uint16_t>(in.be(2, "online ATC"));
    request.amount_fen = static_cast<std::uint32_t>(in.be(4, "amount"));
    request.type = in.u8("type");
    request.terminal_id = in.array<6>("terminal id");
    request.when = in.when();
    request.tac = in.array<4>("TAC");
    return finished(in, std::move(request));
}

Bytes encode(const LoadRequest& request) {
    Writer w;
    w.key_ref(request.key);
    put_card(w, request.card);
    w.be(request.old_balance_fen, 4)
        .be(request.amount_fen, 4)
        .u8(request.type)
        .raw(request.terminal_id)
        .be(request.online_atc, 2)
        .raw(request.card_random)
        .raw(request.mac1);
    put_when(w, request.when);
    return std::move(w.out);
}

Outcome<LoadRequest> decode_load_request(ByteView payload) {
    Reader in(payload, "load-mac2");
    LoadRequest request;
    request.key = in.key_ref("load master key");
    request.card = get_card(in);
    request.old_balance_fen = static_cast<std::uint32_t>(in.be(4, "old balance"));
    request.amount_fen = static_cast<std::uint32_t>(in.be(4, "amount"));
    request.type = in.u8("type");
    request.terminal_id = in.array<6>("terminal id");
    request.online_atc = static_cast<std::uint16_t>(in.be(2, "online ATC"));
    request.card_random = in.array<4>("card random");
    request.mac1 = in.array<4>("MAC1");
    request.when = in.when();
    return finished(in, std::move(request));
}

Bytes encode(const InternalAuth& request) {
    Writer w;
    w.key_ref(request.key);
    put_card(w, request.card);
    w.raw(request.challenge).raw(request.cryptogram);
    return std::move(w.out);
}

Outcome<InternalAuth> decode_internal_auth(ByteView payload) {
    Reader in(payload, "verify-internal-auth");
    InternalAuth request;
    request.key = in.key_ref("internal-auth master key");
    request.card = get_card(in);
    request.challenge = in.array<8>("challenge");
    request.cryptogram = in.array<8>("cryptogram");
    return finished(in, std::move(request));
}

Bytes encode(const KeyInfo& response) {
    return Writer()
        .text(response.label)
        .u8(response.version)
        .u8(static_cast<std::uint8_t>(response.type))
        .u8(static_cast<std::uint8_t>(response.usage))
        .u8(static_cast<std::uint8_t>(response.status))
        .raw(response.kcv)
        .be(static_cast<std::uint64_t>(response.created_unix_s), 8)
        .be(static_cast<std::uint64_t>(response.retired_unix_s), 8)
        .out;
}

Outcome<KeyInfo> decode_key_info_response(ByteView payload) {
    Reader in(payload, "key-info response");
    KeyInfo info;
    info.label = in.text("label");
    info.version = in.u8("version");
    info.type = static_cast<KeyType>(in.u8("type"));
    info.usage = static_cast<KeyUsage>(in.u8("usage"));
    info.status = static_cast<KeyStatus>(in.u8("status"));
    info.kcv = in.array<3>("KCV");
    info.created_unix_s = static_cast<std::int64_t>(in.be(8, "created"));
    info.retired_unix_s = static_cast<std::int64_t>(in.be(8, "retired"));
    return finished(in, std::move(info));
}

Bytes encode(const CardKeySet& response) {
    Writer w;
    w.key_ref(response.transport).raw(response.transport_kcv).u8(static_cast<std::uint8_t>(response.keys.size()));
    for (const ExportedKey& k : response.keys) w.u8(static_cast<std::uint8_t>(k.usage)).key_ref(k.master).raw(k.kcv).raw(k.encrypted);
    return std::move(w.out);
}

Outcome<CardKeySet> decode_card_key_set(ByteView payload) {
    Reader in(payload, "derive-card-keys response");
    CardKeySet set;
    set.transport = in.key_ref("transport key");
    set.transport_kcv = in.array<3>("transport KCV");
    const std::size_t count = in.u8("key count");
    for (std::size_t i = 0; i < count && in.ok(); ++i) {
        ExportedKey k;
        k.usage = static_cast<KeyUsage>(in.u8("usage"));
        k.master = in.key_ref("master key");
        k.kcv = in.array<3>("KCV");
        k.encrypted = in.array<16>("encrypted key");
        set.keys.push_back(std::move(k));
    }
    return finished(in, std::move(set));
}

Bytes encode(const ExportedKey& response) {
    return Writer().u8(static_cast<std::uint8_t>(response.usage)).key_ref(response.master).raw(response.kcv).raw(response.encrypted).out;
}

Outcome<ExportedKey> decode_exported_key(ByteView payload) {
    Reader in(payload, "export-issuer-key response");
    ExportedKey k;
    k.usage = static_cast<KeyUsage>(in.u8("usage"));
    k.master = in.key_ref("master key");
    k.kcv = in.array<3>("KCV");
    k.encrypted = in.array<16>("encrypted key");
    return finished(in, std::move(k));
}

Bytes encode(std::span<const Verdict> response) {
    Writer w;
    w.out.reserve(2 + response.size());
    w.be(response.size(), 2);
    for (Verdict v : response) w.u8(static_cast<std::uint8_t>(v));
    COCONUT_ASSERT(response.size() <= max_batch_items && w.out.size() == 2 + response.size(), "verdicts layout");
    return std::move(w.out);
}

Outcome<std::vector<Verdict>> decode_verdicts(ByteView payload) {
    Reader in(payload, "verify-purchase-tacs response");
    const std::size_t count = in.be(2, "count");
    if (!in.ok() || in.remaining() != count) return fail(Errc::protocol_error, "verify-purchase-tacs response: count does not match");
    std::vector<Verdict> verdicts(count);
    for (Verdict& v : verdicts) {
        const std::uint8_t raw = in.u8("verdict");
        if (raw > static_cast<std::uint8_t>(Verdict::malformed)) return fail(Errc::protocol_error, "unknown verdict value");
        v = static_cast<Verdict>(raw);
    }
    return finished(in, std::move(verdicts));
}

Bytes encode(Verdict response) { return Bytes{static_cast<std::uint8_t>(response)}; }

Outcome<Verdict> decode_verdict(ByteView payload) {
    if (payload.size() != 1 || payload[0] > static_cast<std::uint8_t>(Verdict::malformed))
        return fail(Errc::protocol_error, "a verdict response is one byte 0–3");
    return static_cast<Verdict>(payload[0]);
}

Bytes encode(const LoadAnswer& response) {
    return Writer().u8(static_cast<std::uint8_t>(response.mac1)).raw(response.mac2).u8(response.key_version).out;
}

Outcome<LoadAnswer> decode_load_answer(ByteView payload) {
    Reader in(payload, "load-mac2 response");
    LoadAnswer answer;
    answer.mac1 = static_cast<Verdict>(in.u8("MAC1 verdict"));
    answer.mac2 = in.array<4>("MAC2");
    answer.key_version = in.u8("key version");
    return finished(in, answer);
}

Bytes encode(const MaintenanceMacRequest& request) {
    Writer w;
    w.key_ref(request.key);
    put_card(w, request.card);
    w.raw(request.challenge).raw(request.header);
    return std::move(w.out);
}

Outcome<MaintenanceMacRequest> decode_maintenance_mac_request(ByteView payload) {
    Reader in(payload, "maintenance-mac");
    MaintenanceMacRequest request;
    request.key = in.key_ref("maintenance master key");
    request.card = get_card(in);
    request.challenge = in.array<4>("challenge");
    request.header = in.array<5>("command header");
    return finished(in, std::move(request));
}

Bytes encode(const MaintenanceMac& response) { return Writer().raw(response.mac).u8(response.key_version).out; }

Outcome<MaintenanceMac> decode_maintenance_mac(ByteView payload) {
    Reader in(payload, "maintenance-mac response");
    MaintenanceMac answer;
    answer.mac = in.array<4>("MAC");
    answer.key_version = in.u8("key version");
    return finished(in, answer);
}

// ---- credentials and endpoints ----------------------------------------------------------------------

Outcome<ClientCredentials> read_client_credentials(const std::filesystem::path& path) {
    auto fd = detail::open_private_file(path, "client key file");
    if (!fd) return fail(Errc::client_credentials, fd.error().message);
    // The file is three short lines; 512 bytes bounds it.
    constexpr std::size_t max_file_bytes = 512;
    std::array<char, max_file_bytes + 1> buffer{};
    const ssize_t got = ::read(fd->get(), buffer.data(), buffer.size());
    if (got < 0 || static_cast<std::size_t>(got) > max_file_bytes)
        return fail(Errc::client_credentials, fmt::format("client key file {} is unreadable or too large", path.string()));
    std::istringstream in(std::string(buffer.data(), static_cast<std::size_t>(got)));
    std::string magic, version, client_word, id, key_word, key_hex;
    in >> magic >> version >> client_word >> id >> key_word >> key_hex;
    if (magic != "coconut-hsm-client-key" || version != "1" || client_word != "client" || key_word != "key")
        return fail(Errc::client_credentials,
                    fmt::format("{} is not a client key file (expected 'coconut-hsm-client-key 1', 'client ID', 'key HEX')",
                                path.string()));
    if (!valid_client_id(id)) return fail(Errc::client_credentials, fmt::format("{}: '{}' is not a valid client id", path.string(), id));
    auto key = from_hex(key_hex);
    sodium_memzero(key_hex.data(), key_hex.size());
    if (!key || key->size() != client_key_bytes) {
        if (key) sodium_memzero(key->data(), key->size());
        return fail(Errc::client_credentials, fmt::format("{}: the key must be {} hex digits", path.string(), 2 * client_key_bytes));
    }
    ClientCredentials credentials{id, ClientKey(*key)};
    sodium_memzero(key->data(), key->size());
    return credentials;
}

Status<Failure> write_client_credentials(const std::filesystem::path& path, const ClientCredentials& credentials) {
    std::string text = fmt::format("coconut-hsm-client-key 1\nclient {}\nkey {}\n", credentials.client_id, to_hex(credentials.key.view()));
    auto written = detail::write_new_private_file(path, ByteView(reinterpret_cast<const std::uint8_t*>(text.data()), text.size()));
    sodium_memzero(text.data(), text.size());
    return written;
}

Outcome<Endpoint> parse_endpoint(std::string_view text, bool allow_any_port) {
    auto parsed = parse_host_port(text, allow_any_port ? PortZero::allowed : PortZero::refused);
    if (!parsed) return fail(Errc::bad_request, parsed.error());
    return Endpoint{std::move(parsed->host), parsed->port};
}

std::string to_string(const Endpoint& endpoint) { return format_host_port({endpoint.host, endpoint.port}); }

Outcome<std::vector<Endpoint>> parse_endpoints(std::string_view text) {
    if (text.empty()) return fail(Errc::bad_request, "the HSM endpoint list is empty (expected HOST:PORT[,HOST:PORT…])");
    std::vector<Endpoint> endpoints;
    std::size_t start = 0;
    while (true) {
        const std::size_t comma = text.find(',', start);
        const std::string_view entry = text.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start);
        const std::size_t number = endpoints.size() + 1;
        if (entry.empty())
            return fail(Errc::bad_request,
                        fmt::format("HSM endpoint {} of '{}' is empty (a doubled, leading or trailing comma)", number, text));
        auto endpoint = parse_endpoint(entry);
        if (!endpoint) return fail(Errc::bad_request, fmt::format("HSM endpoint {} of '{}': {}", number, text, endpoint.error().message));
        for (const Endpoint& seen : endpoints)
            if (seen.host == endpoint->host && seen.port == endpoint->port)
                return fail(Errc::bad_request, fmt::format("HSM endpoint {} of '{}' repeats {}", number, text, to_string(seen)));
        if (endpoints.size() == max_endpoints)
            return fail(Errc::bad_request, fmt::format("'{}' names more than {} HSM endpoints", text, max_endpoints));
        endpoints.push_back(std::move(endpoint).value());
        if (comma == std::string_view::npos) return endpoints;
        start = comma + 1;
    }
}

std::string to_string(std::span<const Endpoint> endpoints) {
    std::string out;
    for (const Endpoint& endpoint : endpoints) out += (out.empty() ? "" : ",") + to_string(endpoint);
    return out;
}

}  // namespace coconut::hsm::wire
