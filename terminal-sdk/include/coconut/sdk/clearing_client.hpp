// The terminal's link to the clearing daemon (ISO 8583 over TCP, clearing/ISO8583.md): sign-on, and the
// upload of the store-and-forward queue — many 0320 in flight, each transaction deleted from the queue
// only after the clearing acknowledged it (TransactionQueue::acknowledge, durably).
//
//   auto client = ClearingClient::connect({"127.0.0.1", 8583}, {.terminal_id = "BUS00001"});
//   client.value()->sign_on();
//   auto report = client.value()->upload(queue);   // counts per response code; what stays queued
//
// Acknowledgement: 00 (booked, or already booked: a re-upload lands on the same ledger id), 59 (TAC
// failed: booked to the clearing's suspense account) and 94 (the clearing holds a different transaction
// under that id: flagged there, retrying cannot help) delete the transaction. Every other answer, and
// every transaction without an answer, stays queued for the next upload. Blocking; one connection.
#pragma once

#include <coconut/iso8583/iso8583.hpp>
#include <coconut/result.hpp>
#include <coconut/sdk/queue.hpp>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>

namespace coconut::sdk {

struct ClearingEndpoint {
    std::string host = "127.0.0.1";
    std::uint16_t port = 0;
};
// "HOST:PORT" (IPv4 literal or name; port 1–65535).
Result<ClearingEndpoint, std::string> parse_clearing_endpoint(std::string_view text);

// Requests in flight on the connection: the daemon reads at most 64 per connection before answering
// (in_flight_per_connection_max); 32 keeps the pipe full without hitting its window.
inline constexpr std::size_t clearing_in_flight_default = 32;
inline constexpr std::size_t clearing_in_flight_max = 64;

struct ClearingOptions {
    std::string terminal_id;  // field 41: exactly 8 printable characters, as registered at the clearing
    std::chrono::milliseconds connect_timeout{5'000};
    // An answer must come within this after its request (the daemon answers after a synced commit and
    // an HSM batch: milliseconds; 10 s means the link or the daemon is gone).
    std::chrono::milliseconds response_timeout{10'000};
    std::size_t in_flight = clearing_in_flight_default;
    std::uint32_t batch_number = 1;  // field 60 (6 digits)
};

enum class ClearingErrorCode : std::uint8_t {
    bad_option,       // terminal id / endpoint / in-flight out of range
    connect_failed,   // no TCP connection
    timeout,          // no answer within response_timeout
    closed,           // the clearing closed the connection
    protocol_error,   // an answer that does not parse or matches no request
    refused,          // sign-on refused (the response code is in `response_code`)
    queue_error,      // acknowledge() failed: nothing more is sent
};
std::string_view to_string(ClearingErrorCode code);

struct ClearingError {
    ClearingErrorCode code = ClearingErrorCode::connect_failed;
    std::string message;
    std::string response_code;  // field 39 when the clearing answered
};

struct UploadReport {
    std::size_t sent = 0;
    std::size_t acknowledged = 0;  // deleted from the queue
    std::size_t approved = 0;      // 00
    std::size_t suspense = 0;      // 59
    std::size_t duplicates = 0;    // 94
    std::size_t kept = 0;          // any other answer: still queued
    std::size_t skipped = 0;       // not an offline purchase (loads go up with 0220, not built yet)
    std::map<std::string, std::size_t> by_response_code;
};

// Field 62 of a 0320 (ISO8583.md §3.1): DF01–DF08 as upper-case hex text.
std::string encode_card_data(const TransactionRecord& record);
// The 0320 for one queued record.
iso8583::Message upload_request(const TransactionRecord& record, std::uint32_t stan, const ClearingOptions& options);

class ClearingClient {
public:
    static Result<std::unique_ptr<ClearingClient>, ClearingError> connect(const ClearingEndpoint& endpoint,
                                                                           ClearingOptions options);
    ~ClearingClient();
    ClearingClient(const ClearingClient&) = delete;
    ClearingClient& operator=(const ClearingClient&) = delete;

    // 0800 / 70 = 001. refused with the response code unless 00.
    Status<ClearingError> sign_on();
    Status<ClearingError> sign_off();
    // Uploads every queued transaction (oldest first), acknowledging in chunks of at most
    // QueueLimits::ack_batch_max. On a link failure, what was acknowledged stays deleted and the rest
    // stays queued; the error is returned (the report so far is in `last_report()`).
    Result<UploadReport, ClearingError> upload(TransactionQueue& queue);
    const UploadReport& last_report() const;

    struct State;

private:
    explicit ClearingClient(std::unique_ptr<State> state);
    std::unique_ptr<State> state_;
};

}  // namespace coconut::sdk
