/// @file
/// The terminal's link to the clearing daemon (ISO 8583 over TCP, clearing/ISO8583.md): sign-on, the
/// upload of the store-and-forward queue — many messages in flight, each record deleted from the queue only
/// after the clearing acknowledged it (TransactionQueue::acknowledge, durably) — and the online exchanges
/// the terminal flows use (Terminal::load, Terminal::clinic_payment): 0200 load, 0100 clinic hold, 0400
/// reversal; hotlist download (0800 70 = 101); end-of-shift reconciliation (0500).
///
///   auto client = ClearingClient::connect({"127.0.0.1", 8583}, {.terminal_id = "BUS00001"});
///   client.value()->sign_on();
///   auto report = client.value()->upload(queue);   // counts per response code; what stays queued
///   // The nodes of a clearing cluster: the primary is found, and followed when it changes.
///   auto cluster = ClearingClient::connect(parse_clearing_endpoints("10.0.0.1:8583,10.0.0.2:8583").value(), options);
///
/// What upload() sends per queued record (TransactionRecord::link): offline purchases as 0320, load
/// confirmations and clinic completions as 0221 (repeat of the 0220 the flow sent first), reversal advices
/// as 0421. Acknowledgement: a 0320 leaves the queue only on 00 whose field 62 DF10 equals this record's
/// digest (record_digest: the clearing booked exactly this record — or had booked it already: a re-upload
/// lands on the same ledger id). 59 (its TAC failed: recorded for review, nothing booked), 94 (another
/// record holds its id) and an approval of another record keep it queued and are reported
/// (UploadReport::kept_for_review): money evidence is never deleted on an answer that does not prove it
/// was booked. A load confirmation likewise needs its digest on 00. Other advices leave the queue on every
/// final answer (everything but 03 not signed on, 30 format error, 91 and 96, which say "try again").
/// Every other answer, and every record without an answer, stays queued for the next upload.
///
/// Batch state (field 60 and the 0500 totals) and the STAN counter persist in the queue's log
/// (ClearingOptions::batch_log, batch_state.hpp): a hold's ledger id is derive_id(41 ‖ batch ‖ STAN), so a
/// STAN must not repeat inside a batch across process restarts. STANs are reserved in blocks (one append
/// per block); upload() deletes acknowledged records and counts what the host booked in one append.
///
/// Blocking; one connection (plain TCP, or mutual TLS with ClearingOptions::tls), re-opened (and signed on
/// again; under TLS resuming the session) after a timeout or a closed link. Given several endpoints (the
/// nodes of a clearing cluster, of which only the primary serves ISO 8583), the client moves to the next on
/// refusal or connection loss; re-uploads land on the same ledger id, so a record whose answer was lost
/// in the switch is booked once (ClearingClient::connect, ClearingOptions::failover_window).
#pragma once

#include <coconut/iso8583/card_data.hpp>
#include <coconut/iso8583/iso8583.hpp>
#include <coconut/iso8583/profile.hpp>
#include <coconut/core/result.hpp>
#include <coconut/sdk/clinic_refund.hpp>
#include <coconut/sdk/hotlist.hpp>
#include <coconut/sdk/queue.hpp>
#include <coconut/tls/tls.hpp>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace coconut::sdk {

/// One clearing node, host and ISO 8583 port.
struct ClearingEndpoint {
    std::string host = "127.0.0.1";
    std::uint16_t port = 0;
    friend bool operator==(const ClearingEndpoint&, const ClearingEndpoint&) = default;
};
/// "HOST:PORT" (IPv4 literal or name; port 1–65535).
Result<ClearingEndpoint, std::string> parse_clearing_endpoint(std::string_view text);
/// "HOST:PORT,HOST:PORT,…": the clearing nodes in the order they are tried (1–clearing_endpoints_max, no
/// empty element, no endpoint twice). A single "HOST:PORT" is a list of one.
inline constexpr std::size_t clearing_endpoints_max = 16;
Result<std::vector<ClearingEndpoint>, std::string> parse_clearing_endpoints(std::string_view text);
/// "host:port" ("[v6]:port"), as parsed.
std::string to_string(const ClearingEndpoint& endpoint);

/// The endpoint of a list that signed a client on last. Clients a terminal opens one after another with the
/// same memory (ClearingOptions::endpoint_memory) start where the previous one was served.
struct ClearingEndpointMemory {
    std::optional<ClearingEndpoint> last_served;
    /// Called when last_served changes (e.g. to keep it in a file across processes; set: it must not throw).
    std::function<void(const ClearingEndpoint&)> changed;
};

/// Requests in flight on the connection: the daemon reads at most 64 per connection before answering
/// (in_flight_per_connection_max); 32 keeps the pipe full without hitting its window.
inline constexpr std::size_t clearing_in_flight_default = 32;
inline constexpr std::size_t clearing_in_flight_max = 64;

/// Mutual TLS to the clearing's ISO 8583 port (clearing/README.md "TLS for terminals"): the island CA the
/// server's certificate must chain to (and name the host connected to), this terminal's certificate (its
/// CN is the terminal id) and key (mode 0600; `coconut terminal register` writes all three). A reconnect
/// offers the previous session's ticket, so it costs no certificate verification.
struct ClearingTls {
    std::filesystem::path ca;
    std::filesystem::path certificate;
    std::filesystem::path private_key;
    /// Made from the three files by connect() when null. Give the clients one terminal opens one after
    /// another the same context (make_tls_context) and a new client resumes the session of the last.
    std::shared_ptr<tls::ClientContext> context;
};

/// What happens to one request on its way to the clearing, for fault-injection tests and the simulator (the
/// network's counterpart of the reader's Fault): `lose_request` — the request never reaches the clearing;
/// `lose_answer` — the clearing receives and answers it, and the answer never arrives. Either way the
/// connection dies with it, as when TCP loses a segment for good: the requests written before it are still
/// answered, nothing written after it arrives, then the client sees the link closed (ClearingErrorCode::closed)
/// and reconnects for its next request. Whether the clearing booked a request is thereby decided by the
/// fault alone, never by timing: the same faults give the same outcome on every run.
enum class LinkFault : std::uint8_t { none, lose_request, lose_answer };

/// How a ClearingClient signs on and talks to the clearing: terminal id, TLS, timeouts, batch log, failover.
struct ClearingOptions {
    std::string terminal_id;  ///< field 41: exactly 8 printable characters, as registered at the clearing
    /// Unset: plain TCP, which only a daemon started with --insecure-terminals accepts.
    std::optional<ClearingTls> tls;
    std::chrono::milliseconds connect_timeout{5'000};
    /// An answer must come within this after its request (the daemon answers after a synced commit and
    /// an HSM batch: milliseconds; 10 s means the link or the daemon is gone).
    std::chrono::milliseconds response_timeout{10'000};
    std::size_t in_flight = clearing_in_flight_default;
    std::uint32_t batch_number = 1;  ///< field 60 (6 digits) when batch_log is null (state kept in memory)
    /// The queue whose log keeps the batch number, STAN counter and batch totals durably (the terminal's
    /// one queue: upload() and send_advice() take only this queue then). Null: kept in memory.
    TransactionQueue* batch_log = nullptr;
    std::string merchant_id;  ///< field 42 of the 0100 when set (≤ 15 characters)
    /// Asked before each request is written (unset: no faults); see LinkFault.
    std::function<LinkFault(const iso8583::Message& request)> link_faults;

    /// Failover across a list of endpoints (ClearingClient::connect with several; terminal-sdk/README.md
    /// "Several clearing endpoints"). An endpoint is passed over when it refuses the connection, the TLS
    /// handshake fails, or it answers 91 or closes the connection instead of signing on (a standby); each
    /// attempt is bounded by connect_timeout (the sign-on's answer too). After a round in which every
    /// endpoint failed the client pauses failover_backoff (doubling, at most 2 s) and tries again until
    /// failover_window has passed since it began: 0 = one round. The first round is always complete,
    /// so the time to give up is at most failover_window plus one round.
    std::chrono::milliseconds failover_window{0};
    std::chrono::milliseconds failover_backoff{200};
    /// Shared by the clients a terminal opens one after another (null: each starts at the list's first).
    std::shared_ptr<ClearingEndpointMemory> endpoint_memory;
};

enum class ClearingErrorCode : std::uint8_t {
    bad_option,      ///< terminal id / endpoint / in-flight out of range
    connect_failed,  ///< no TCP connection, or the TLS handshake failed (the server's certificate refused)
    timeout,         ///< no answer within response_timeout
    closed,          ///< the clearing closed the connection
    protocol_error,  ///< an answer that does not parse or matches no request
    refused,         ///< the clearing refused (the response code is in `response_code`)
    queue_error,     ///< acknowledge() failed: nothing more is sent
    batch_error,     ///< the batch state could not be written to the queue's log
    hotlist_error,   ///< a downloaded hotlist does not apply to the local one (nothing was changed)
    tls_error,       ///< the TLS files (CA, certificate, key) are missing, unreadable, too open or do not match
};
std::string_view to_string(ClearingErrorCode code);

/// Why a ClearingClient call failed; `response_code` when the clearing answered.
struct ClearingError {
    ClearingErrorCode code = ClearingErrorCode::connect_failed;
    std::string message;
    std::string response_code;  ///< field 39 when the clearing answered
};

/// The context for `files` (tls_error names the file that is wrong), for ClearingTls::context.
Result<std::shared_ptr<tls::ClientContext>, ClearingError> make_tls_context(const ClearingTls& files);

/// The connections a client made: reconnects after a timeout or a closed link count too.
struct LinkStats {
    std::uint64_t connects = 0;
    /// Of a list of endpoints: moves to another endpoint than the one in use (or, at connect, the one that
    /// served last) — a standby that accepts the connection and then refuses the sign-on is one move, the
    /// endpoint after it another — and the attempts that failed (refused, TLS, 91 or closed at sign-on).
    std::uint64_t failovers = 0;
    std::uint64_t endpoint_failures = 0;
    std::uint64_t tls_full = 0;     ///< TLS handshakes with certificates exchanged
    std::uint64_t tls_resumed = 0;  ///< TLS handshakes that resumed the previous session
};

/// What ClearingClient::upload sent and what the clearing answered, per outcome and response code.
struct UploadReport {
    std::size_t sent = 0;
    std::size_t acknowledged = 0;                ///< deleted from the queue
    std::size_t approved = 0;                    ///< 00
    std::size_t suspense = 0;                    ///< 59
    std::size_t duplicates = 0;                  ///< 94
    std::size_t kept = 0;                        ///< any other answer: still queued
    std::size_t advices = 0;                     ///< of `sent`: 0221 / 0421 advices (the rest are 0320)
    std::size_t refused = 0;                     ///< advices acknowledged with a final refusal (not 00)
    std::size_t digest_mismatches = 0;           ///< 00 for another record than the one sent: kept
    std::vector<std::uint64_t> kept_for_review;  ///< queue sequences answered 59, 94 or a mismatching 00
    std::map<std::string, std::size_t> by_response_code;
};

/// The digest the clearing's approval carries in DF10 for this queued record (offline purchase or load
/// confirmation; ISO8583.md §4.8).
iso8583::RecordDigest record_digest(const TransactionRecord& record);

/// How often refund_medical / refund_in_cash send their request when no answer comes: a lost link or a
/// silent clearing three times in a row is not going to answer a fourth.
inline constexpr int refund_tries_max = 3;

/// 0210 to a load request.
struct LoadApproval {
    std::string response_code;  ///< 00: mac2 is set
    crypto::Mac4 mac2{};
    std::string authorization_id;  ///< field 38
};

/// 0110 to a clinic authorization: 00 the full amount held, 10 a partial hold (approved_fen), 51 nothing.
struct ClinicApproval {
    std::string response_code;
    std::uint32_t approved_fen = 0;
};

/// What ClearingClient::sync_hotlist downloaded and applied.
struct HotlistSyncReport {
    std::uint64_t from_version = 0;
    std::uint64_t to_version = 0;
    std::size_t chunks = 0;
    std::size_t added = 0;
    std::size_t removed = 0;
    bool replaced = false;  ///< the host was behind this terminal: its whole list replaced the local one
};

/// The 0500 end-of-shift reconciliation and the clearing's answer.
struct ReconcileReport {
    std::uint32_t batch_number = 0;
    BatchTotals totals;     ///< what the terminal sent
    bool balanced = false;  ///< 39 = 00 (the batch is closed); false: 95 out of balance
    std::string host_net;   ///< field 97 of the 0510 (C/D + 16 digits) when present
};

/// The message upload() / the flows send for a queued record; `repeat` gives 0221 / 0421.
iso8583::Message advice_request(const TransactionRecord& record, std::uint32_t stan, std::string_view terminal_id, bool repeat);
/// Field 90: original MTI ‖ STAN ‖ transmission date/time ‖ 22 zeros (no acquirer/forwarder ids).
std::string original_data_elements(const TransactionRecord& record);
/// The terminal's ISO 8583 link to coconut-clearingd (see the file comment): sign-on, upload, online requests, hotlist, reconciliation.
class ClearingClient {
public:
    static Result<std::unique_ptr<ClearingClient>, ClearingError> connect(const ClearingEndpoint& endpoint, ClearingOptions options);
    /// The first endpoint of the list (from the one that served last, ClearingOptions::endpoint_memory)
    /// that accepts. With more than one endpoint, a request that meets a closed connection, a timeout or
    /// an answer 91 moves the client to the next endpoint (signed on again there): upload() and the 0800
    /// exchanges continue there by themselves; an online request (0200, 0100, 0400) is sent again only
    /// after a 91 (nothing was booked) — after a loss its outcome is unknown and the error is returned as
    /// with one endpoint, the next request going to the next endpoint. None accepts within the bounds:
    /// connect_failed naming every endpoint and what each did. bad_option for an empty list or one
    /// naming an endpoint twice.
    static Result<std::unique_ptr<ClearingClient>, ClearingError> connect(std::vector<ClearingEndpoint> endpoints, ClearingOptions options);
    ~ClearingClient();
    ClearingClient(const ClearingClient&) = delete;
    ClearingClient& operator=(const ClearingClient&) = delete;

    /// 0800 / 70 = 001. refused with the response code unless 00. After a reconnect the client signs on
    /// again by itself.
    Status<ClearingError> sign_on();
    Status<ClearingError> sign_off();

    const BatchState& batch() const;
    const ClearingOptions& options() const;
    /// The next STAN from the batch state (batch_error if it cannot be saved).
    Result<std::uint32_t, ClearingError> take_stan();

    /// 0200 → 0210 for a load intent (its stan / transmitted / batch set by the caller). timeout / closed
    /// mean the outcome is unknown: the caller reverses (0420).
    /// A refund credit (intent.refund, processing code 200000) names the purchase it refunds in `refund_of`
    /// (DF13, ISO8583.md §4.10); a load names none.
    Result<LoadApproval, ClearingError> request_load(const TransactionRecord& intent, const std::array<std::uint8_t, 4>& card_random,
                                                     const crypto::Mac4& mac1,
                                                     const std::optional<iso8583::PurchaseReference>& refund_of = std::nullopt);
    /// 0200 (3 = 200030) → 0210: the medical part of a completed clinic payment back to the card's medical
    /// account (ISO8583.md §4.10) — `request` gives the card (asn), the amount the completion posted, field 7,
    /// the card time (12 / 13) and the batch; the STAN is the client's next. The clearing books a hold's
    /// refund once, so a request without an answer (timeout, closed link) is sent again as a repeat (0201, the
    /// same STAN), up to refund_tries_max times in all. The response code; 00 is counted in the batch's credits (74 / 86)
    /// — once per STAN answered, as the clearing counts it. protocol_error for a 00 whose field 4 is not the
    /// amount.
    Result<std::string, ClearingError> refund_medical(const TransactionRecord& request, const ClinicHoldReference& hold);
    /// 0220 (3 = 200000, 62 = DF01 ‖ DF13) → 0230: the purse part of a payment refunded in cash at the counter
    /// (ISO8583.md §4.10); hand the cash out on 00 only. Repeated like refund_medical (the clearing records the
    /// cash refund once); never queued, never counted in the batch (no money moves at the clearing).
    Result<std::string, ClearingError> refund_in_cash(const TransactionRecord& request, const iso8583::PurchaseReference& purchase);
    /// 0800 70 = 201 → 0810: a single-use card-presence challenge for this card at this terminal, valid for
    /// about a minute (ISO8583.md §4.4). refused with the response code unless 00.
    Result<iso8583::HostChallenge, ClearingError> request_challenge(const std::array<std::uint8_t, 10>& asn);
    /// What the card's social-security application must answer with INTERNAL AUTHENTICATE (after VERIFY
    /// PIN) for the 0100 of this hold intent: SHA-256 over the challenge and fields 41, 11, 7, 4, 60 as sent
    /// and the ASN (ISO8583.md §4.4; the host recomputes it).
    std::array<std::uint8_t, 8> clinic_proof_input(const TransactionRecord& intent, const iso8583::HostChallenge& challenge) const;
    /// 0100 (3 = 313000, amount 0) → 0110: the medical account's available amount (field 54), proven by
    /// the card like a hold (ISO8583.md §4.4a); nothing is held. refused with the response code unless 00.
    Result<std::uint64_t, ClearingError> medical_inquiry(const TransactionRecord& intent, const iso8583::HostChallenge& challenge,
                                                         const std::array<std::uint8_t, 8>& cryptogram);
    /// 0100 → 0110 for a clinic hold intent, with the challenge and the card's INTERNAL AUTHENTICATE answer.
    Result<ClinicApproval, ClearingError> authorize(const TransactionRecord& intent, const iso8583::HostChallenge& challenge,
                                                    const std::array<std::uint8_t, 8>& cryptogram);
    /// 0400 → 0410 of a load or clinic hold (record.link load_reversal / clinic_reversal); the response code.
    Result<std::string, ClearingError> reverse(const TransactionRecord& reversal);
    /// Sends the queued advice `sequence` once (0220 / 0420, not a repeat) and acknowledges it in the queue
    /// on a final answer. The response code; a link failure leaves it queued.
    Result<std::string, ClearingError> send_advice(TransactionQueue& queue, std::uint64_t sequence);

    /// 0800 70 = 101 from the local version, every chunk (48 = version ‖ chunk index), then one delta
    /// applied durably to `hotlist` (all or nothing). A host whose version is below the local one sends
    /// its whole log from 0: the local list is replaced by it.
    Result<HotlistSyncReport, ClearingError> sync_hotlist(Hotlist& hotlist);
    /// 0500 with the batch totals; 00 closes the batch (next batch number, zero totals).
    Result<ReconcileReport, ClearingError> reconcile();
    /// Uploads every queued record (oldest first), acknowledging in chunks of at most the queue's own
    /// QueueLimits::ack_batch_max (with a batch log: and counting what the host booked, in the same append).
    /// On a link failure, what was acknowledged stays deleted and the rest
    /// stays queued; the error is returned (the report so far is in `last_report()`).
    Result<UploadReport, ClearingError> upload(TransactionQueue& queue);
    const UploadReport& last_report() const;
    const LinkStats& link_stats() const;
    /// The endpoint in use (or to be tried first at the next reconnect), and the whole list.
    const ClearingEndpoint& current_endpoint() const;
    const std::vector<ClearingEndpoint>& endpoints() const;

    struct State;

private:
    explicit ClearingClient(std::unique_ptr<State> state);
    std::unique_ptr<State> state_;
};

}  // namespace coconut::sdk
