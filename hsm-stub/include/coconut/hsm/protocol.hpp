// The HSM link: TCP, length-prefixed binary frames, every request and response authenticated with the
// client's key (libsodium crypto_auth, HMAC-SHA-512-256) over the connection's server nonce and a
// strictly increasing sequence number. hsm-stub/PROTOCOL.md is the prose version of this header; the
// constants and layouts are defined here once and used by the server, the client and the tests.
//
// Frame = length(4, big-endian, of the body) ‖ body. Bodies:
//   hello    (server → client, first frame): version(1) ‖ kind=1 ‖ nonce(16) ‖ max frame bytes(4) ‖ max batch items(2)
//   request  (client → server): version(1) ‖ kind=2 ‖ seq(8) ‖ client id len(1) ‖ client id ‖ command(1) ‖ payload ‖ mac(32)
//   response (server → client): version(1) ‖ kind=3 ‖ seq(8) ‖ status(1) ‖ payload ‖ mac(32)
//   fatal    (server → client, then close): version(1) ‖ kind=4 ‖ code(1) ‖ message (UTF-8, unauthenticated)
// mac = HMAC-SHA-512-256(client key, nonce ‖ body without the mac). The kind byte inside the MAC keeps a
// response from being replayed as a request; the nonce keeps a request from one connection from being
// replayed on another; seq (1, 2, 3 … strictly increasing per connection) keeps it from being replayed
// on the same one.
#pragma once

#include <coconut/hsm/hsm.hpp>

#include <array>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

namespace coconut::hsm::wire {

inline constexpr std::uint8_t protocol_version = 1;
inline constexpr std::size_t length_prefix_bytes = 4;
inline constexpr std::size_t nonce_bytes = 16;
inline constexpr std::size_t mac_bytes = 32;  // crypto_auth_BYTES
// Largest body: a full TAC batch is 1 + 32 + 2 + 1024 × 45 = 46,115 bytes of payload plus a 76-byte
// envelope (44 header bytes with a 32-character client id, 32 MAC bytes) = 46,191. 64 KiB holds it
// with room; a peer announcing more is not speaking this protocol.
inline constexpr std::size_t max_frame_bytes = 64 * 1024;
// Bytes of a fatal notice's message: enough for a sentence, bounded so a notice is one small write.
inline constexpr std::size_t max_fatal_message_bytes = 256;
// The default port of coconut-hsmd (loopback only unless told otherwise).
inline constexpr std::uint16_t default_port = 7501;

enum class FrameKind : std::uint8_t { hello = 1, request = 2, response = 3, fatal = 4 };

enum class Command : std::uint8_t {
    key_info = 0x01,
    derive_card_keys = 0x10,
    export_issuer_key = 0x11,
    verify_purchase_tacs = 0x20,
    verify_load_tac = 0x21,
    load_mac2 = 0x30,
    verify_internal_auth = 0x40,
    ca_certificate = 0x50,  // the island CA (ca.hpp)
    sign_certificate = 0x51,
    maintenance_mac = 0x60,  // APPLICATION BLOCK / UNBLOCK MAC (permission maintenance)
};
std::optional<Command> command_from_byte(std::uint8_t byte);
std::string_view command_name(Command command);  // "verify-purchase-tacs", … (audit log, errors)
// The permission bits of which a client needs at least one.
std::uint32_t required_permission(Command command);

// Size of one item of a verify_purchase_tacs payload:
// key version(1) ‖ issuer id(8) ‖ ASN(10) ‖ amount(4) ‖ type(1) ‖ terminal id(6) ‖ serial(4) ‖ date(4) ‖ time(3) ‖ TAC(4).
inline constexpr std::size_t purchase_tac_item_bytes = 45;

// ---- frames -----------------------------------------------------------------------------------

using Nonce = std::array<std::uint8_t, nonce_bytes>;

struct Hello {
    Nonce nonce{};
    std::uint32_t max_frame_bytes = wire::max_frame_bytes;
    std::uint16_t max_batch_items = static_cast<std::uint16_t>(hsm::max_batch_items);
};

// Encoders return whole frames (length prefix included).
Bytes encode_hello(const Hello& hello);
Bytes encode_request(const ClientKey& key, const Nonce& nonce, std::uint64_t seq, std::string_view client_id, std::uint8_t command,
                     ByteView payload);
Bytes encode_response(const ClientKey& key, const Nonce& nonce, std::uint64_t seq, Errc status, ByteView payload);
Bytes encode_fatal(Errc code, std::string_view message);

// Reads the length prefix. frame_too_large above max_frame_bytes, protocol_error for 0.
Outcome<std::uint32_t> decode_length(const std::array<std::uint8_t, length_prefix_bytes>& prefix);

// Decoders take a body (without the length prefix). protocol_error names what does not parse.
Outcome<Hello> decode_hello(ByteView body);

struct Request {
    std::uint64_t seq = 0;
    std::string client_id;
    std::uint8_t command = 0;  // raw: the server checks it after the MAC
    ByteView payload;          // views into the body
    ByteView mac;
    ByteView authenticated;  // body without the mac
};
Outcome<Request> decode_request(ByteView body);
// True if `request.mac` is the MAC of nonce ‖ request.authenticated under `key` (constant-time).
bool request_authentic(const ClientKey& key, const Nonce& nonce, const Request& request);

struct Response {
    std::uint64_t seq = 0;
    Errc status = Errc::ok;
    ByteView payload;  // on error: the message text
};
// A response body, or a fatal notice (returned as the failure it announces). bad_mac if the MAC is wrong.
Outcome<Response> decode_response(const ClientKey& key, const Nonce& nonce, ByteView body);
// True if `body` is a fatal notice: the server closes the connection after it.
bool is_fatal_notice(ByteView body);

// ---- payloads (big-endian; a KeyRef is label len(1) ‖ label ‖ version(1)) -----------------------

struct DeriveCardKeys {
    CardIdentity card;
    KeyRef transport;
    std::vector<KeyRef> masters;
};
struct ExportIssuerKey {
    IssuerId issuer_id{};
    KeyRef master;
    KeyRef transport;
};
struct PurchaseTacBatch {
    std::string label;
    std::vector<PurchaseTac> items;
};

Bytes encode(const KeyRef& request);
Bytes encode(const DeriveCardKeys& request);
Bytes encode(const ExportIssuerKey& request);
Bytes encode(const PurchaseTacBatch& request);
Bytes encode(const LoadTac& request);
Bytes encode(const LoadRequest& request);
Bytes encode(const InternalAuth& request);
Bytes encode(const MaintenanceMacRequest& request);

// Request decoders: bad_request / batch_too_large with the field named.
Outcome<KeyRef> decode_key_info(ByteView payload);
Outcome<DeriveCardKeys> decode_derive_card_keys(ByteView payload);
Outcome<ExportIssuerKey> decode_export_issuer_key(ByteView payload);
Outcome<PurchaseTacBatch> decode_purchase_tac_batch(ByteView payload);
Outcome<LoadTac> decode_load_tac(ByteView payload);
Outcome<LoadRequest> decode_load_request(ByteView payload);
Outcome<InternalAuth> decode_internal_auth(ByteView payload);
Outcome<MaintenanceMacRequest> decode_maintenance_mac_request(ByteView payload);

// Responses.
Bytes encode(const KeyInfo& response);
Bytes encode(const CardKeySet& response);
Bytes encode(const ExportedKey& response);
Bytes encode(std::span<const Verdict> response);
Bytes encode(Verdict response);
Bytes encode(const LoadAnswer& response);
Bytes encode(const MaintenanceMac& response);
Outcome<KeyInfo> decode_key_info_response(ByteView payload);
Outcome<CardKeySet> decode_card_key_set(ByteView payload);
Outcome<ExportedKey> decode_exported_key(ByteView payload);
Outcome<std::vector<Verdict>> decode_verdicts(ByteView payload);
Outcome<Verdict> decode_verdict(ByteView payload);
Outcome<LoadAnswer> decode_load_answer(ByteView payload);
Outcome<MaintenanceMac> decode_maintenance_mac(ByteView payload);

// ---- client credentials and endpoints -------------------------------------------------------------

// A client key file (written by `coconut-hsmd client add`, mode 0600):
//   coconut-hsm-client-key 1
//   client <id>
//   key <64 hex digits>
struct ClientCredentials {
    std::string client_id;
    ClientKey key;
};
Outcome<ClientCredentials> read_client_credentials(const std::filesystem::path& path);
Status<Failure> write_client_credentials(const std::filesystem::path& path, const ClientCredentials& credentials);

struct Endpoint {
    std::string host = "127.0.0.1";
    std::uint16_t port = default_port;
};
// "HOST:PORT" or "[IPv6]:PORT" (coconut/core/endpoint.hpp; port 0 allowed only when `allow_any_port`, for
// servers asking for an ephemeral port).
Outcome<Endpoint> parse_endpoint(std::string_view text, bool allow_any_port = false);
// "host:port", or "[v6]:port".
std::string to_string(const Endpoint& endpoint);

// Several HSMs serving copies of one sealed store (README.md "Two HSMs"): a client is given them as
// "HOST:PORT,HOST:PORT", in the order it prefers them. One entry is the single-HSM form.
inline constexpr std::size_t max_endpoints = 8;
// bad_request naming the entry: an empty list or entry ("…,,…", a trailing comma), an entry that is
// not HOST:PORT (port 0 included), the same endpoint twice, more than max_endpoints.
Outcome<std::vector<Endpoint>> parse_endpoints(std::string_view text);
// "host:port,host:port".
std::string to_string(std::span<const Endpoint> endpoints);

}  // namespace coconut::hsm::wire
