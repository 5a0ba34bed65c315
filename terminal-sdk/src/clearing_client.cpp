// ISO 8583 client of the clearing daemon: blocking calls over Boost.Asio with a deadline on every read.
#include <coconut/core/assert.hpp>
#include <coconut/core/endpoint.hpp>
#include <coconut/iso8583/card_data.hpp>
#include <coconut/sdk/clearing_client.hpp>
#include <coconut/iso8583/profile.hpp>

#include "clearing_link.hpp"

#include <fmt/format.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <thread>
#include <unordered_map>
#include <unordered_set>

namespace coconut::sdk {

namespace asio = boost::asio;
using asio::ip::tcp;
using iso8583::Message;

namespace {

using iso8583::batch_number_max;
using iso8583::ResponseCode;

// What a request may be sent again on the next endpoint after: a 91 only (nothing was booked), or also a
// lost link (the request changes nothing a repeat would double).
enum class Resend : std::uint8_t { after_refusal, after_loss };

// The longest pause between two rounds over the endpoints.
constexpr std::chrono::milliseconds failover_backoff_max{2'000};

// What makes the client pass an endpoint over: it does not (or no longer) serve this terminal — no
// connection, the link lost or silent, or 91 (a standby; a primary that cannot reach its HSM).
bool passes_over(const ClearingError& e) {
    return e.code == ClearingErrorCode::connect_failed || e.code == ClearingErrorCode::timeout || e.code == ClearingErrorCode::closed ||
           (e.code == ClearingErrorCode::refused && e.response_code == "91");
}

Unexpected<ClearingError> fail(ClearingErrorCode code, std::string message, std::string response_code = {}) {
    return Unexpected<ClearingError>{ClearingError{code, std::move(message), std::move(response_code)}};
}

// The record digest an approval carries (ISO8583.md §4.8), when field 62 holds one.
std::optional<iso8583::RecordDigest> approval_digest(const Message& answer) {
    auto field62 = answer.get(62);
    if (!field62) return std::nullopt;
    auto digest = iso8583::parse_record_digest(*field62);
    if (!digest) return std::nullopt;
    return *digest;
}

// What the host booked is this very record: an approval whose DF10 is the digest of its TAC-covered fields.
// Records the host does not book with a digest (completions, reversals) are judged by the code alone.
bool host_booked_this_record(const TransactionRecord& record, const Message& answer) {
    if (iso8583::response_code_of(answer) != ResponseCode::approved) return false;
    const bool carries_digest = record.link == LinkKind::offline_purchase || record.link == LinkKind::load_confirmation;
    return !carries_digest || approval_digest(answer) == record_digest(record);
}

// An offline purchase leaves the queue only on an approval of this very record (see the header): 59 (its
// TAC failed at the clearing) and 94 (another record holds its id) keep it for review.
bool acknowledging_upload(const TransactionRecord& record, const Message& answer) { return host_booked_this_record(record, answer); }

// An advice is repeated until a final answer: these four say "not now" (not signed on, our message did not
// parse, issuer or system down).
bool acknowledging_advice(std::optional<ResponseCode> code) {
    return code != ResponseCode::invalid_merchant && code != ResponseCode::format_error && code != ResponseCode::issuer_inoperative &&
           code != ResponseCode::system_malfunction;
}

bool acknowledging(const TransactionRecord& record, const Message& answer) {
    const auto code = iso8583::response_code_of(answer);
    if (record.link == LinkKind::offline_purchase) return acknowledging_upload(record, answer);
    // A load confirmation approved for another record than ours is kept (and reported), like an upload.
    if (record.link == LinkKind::load_confirmation && code == ResponseCode::approved) return host_booked_this_record(record, answer);
    return acknowledging_advice(code);
}

// What the host counts in its batch totals (ISO8583.md §4.7): 00, and 59 for a load confirmation
// (posted: the card holds the money, the TAC is flagged). An upload answered 59 is not booked.
bool booked_by_host(const TransactionRecord& record, const Message& answer) {
    const auto code = iso8583::response_code_of(answer);
    if (code == ResponseCode::approved) return true;
    return code == ResponseCode::suspected_fraud && record.link == LinkKind::load_confirmation;
}

// The response MTI: request class + 10 (0320 → 0330, 0221 → 0230: a repeat is answered like the original).
std::string response_mti(std::string_view request_mti) {
    std::string mti(request_mti);
    mti[2] = static_cast<char>(mti[2] + 1);
    mti[3] = '0';
    return mti;
}

using iso8583::ProcessingCode;

bool is_load(LinkKind link) { return link == LinkKind::load_confirmation || link == LinkKind::load_reversal; }

// The processing code of a load's 0200 and of its advices: 280000 when the carried holding funds it, 200000
// for a refund credit (ISO8583.md §4.10).
ProcessingCode load_code(const TransactionRecord& r) {
    if (r.refund) return ProcessingCode::refund;
    return r.carried ? ProcessingCode::carried_load : ProcessingCode::purse_load;
}

std::string card_number(const TransactionRecord& r) { return iso8583::card_number(r.asn); }

template <std::size_t N>
ByteView view(const std::array<std::uint8_t, N>& a) {
    return ByteView(a.data(), N);
}

}  // namespace

std::string_view to_string(ClearingErrorCode code) {
    switch (code) {
        case ClearingErrorCode::bad_option: return "bad_option";
        case ClearingErrorCode::connect_failed: return "connect_failed";
        case ClearingErrorCode::timeout: return "timeout";
        case ClearingErrorCode::closed: return "closed";
        case ClearingErrorCode::protocol_error: return "protocol_error";
        case ClearingErrorCode::refused: return "refused";
        case ClearingErrorCode::queue_error: return "queue_error";
        case ClearingErrorCode::batch_error: return "batch_error";
        case ClearingErrorCode::hotlist_error: return "hotlist_error";
        case ClearingErrorCode::tls_error: return "tls_error";
    }
    return "?";
}

Result<ClearingEndpoint, std::string> parse_clearing_endpoint(std::string_view text) {
    auto parsed = parse_host_port(text);
    if (!parsed) return Unexpected<std::string>{parsed.error()};
    return ClearingEndpoint{std::move(parsed->host), parsed->port};
}

std::string to_string(const ClearingEndpoint& endpoint) { return format_host_port({endpoint.host, endpoint.port}); }

Result<std::vector<ClearingEndpoint>, std::string> parse_clearing_endpoints(std::string_view text) {
    std::vector<ClearingEndpoint> endpoints;
    if (text.empty()) return Unexpected<std::string>{"no clearing endpoint: give HOST:PORT[,HOST:PORT...]"};
    for (std::size_t start = 0;;) {
        const std::size_t comma = text.find(',', start);
        const std::string_view item = text.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start);
        const std::string position = fmt::format("endpoint {} of '{}'", endpoints.size() + 1, text);
        if (item.empty()) return Unexpected<std::string>{position + " is empty"};
        auto endpoint = parse_clearing_endpoint(item);
        if (!endpoint) return Unexpected<std::string>{position + ": " + endpoint.error()};
        if (std::find(endpoints.begin(), endpoints.end(), *endpoint) != endpoints.end())
            return Unexpected<std::string>{position + ": " + to_string(*endpoint) + " is listed twice"};
        if (endpoints.size() == clearing_endpoints_max)
            return Unexpected<std::string>{fmt::format("more than {} clearing endpoints in '{}'", clearing_endpoints_max, text)};
        endpoints.push_back(std::move(endpoint).value());
        if (comma == std::string_view::npos) break;
        start = comma + 1;
    }
    COCONUT_ASSERT(!endpoints.empty() && endpoints.size() <= clearing_endpoints_max);
    return endpoints;
}

namespace {

// A queued purchase's card data as the 0320 carries it (DF01–DF08, DF0C for a transit tap).
iso8583::PurseTransaction purse_transaction_of(const TransactionRecord& r) {
    iso8583::PurseTransaction t;
    t.asn = r.asn;
    t.type = r.type;
    t.balance_before_fen = r.balance_before_fen;
    t.offline_atc = r.atc;
    t.terminal_serial = r.terminal_serial;
    t.terminal_id = r.terminal_id;
    t.when = r.when;
    t.tac = r.tac;
    if (r.type == crypto::type_capp_purchase) {
        // DF0C: where the transit tap happened (line ‖ station), for the clearing's Place of the transfer.
        t.transit_record = be_bytes(r.line, 2);
        append_be(t.transit_record, r.station, 2);
    }
    // The purse part of a clinic visit names its medical hold (ISO8583.md §4.9): display only.
    if (r.link == LinkKind::offline_purchase && r.stan != 0 && r.batch_number != 0)
        t.visit = iso8583::VisitReference{r.batch_number, r.stan};
    return t;
}

// A queued load confirmation's card data (ISO8583.md §4.3): what the HSM needs to check the load TAC.
iso8583::LoadConfirmationData load_confirmation_of(const TransactionRecord& r) {
    iso8583::LoadConfirmationData confirmation;
    confirmation.asn = r.asn;
    confirmation.old_balance_fen = r.balance_before_fen;
    confirmation.online_atc = r.atc;
    confirmation.terminal_id = r.terminal_id;
    confirmation.when = r.when;
    confirmation.tac = r.tac;
    return confirmation;
}

}  // namespace

std::string encode_card_data(const TransactionRecord& r) { return iso8583::encode_purse_transaction(purse_transaction_of(r)); }

iso8583::RecordDigest record_digest(const TransactionRecord& r) {
    if (r.link == LinkKind::load_confirmation) return iso8583::load_confirmation_digest(load_confirmation_of(r), r.amount_fen);
    return iso8583::purchase_digest(purse_transaction_of(r), r.amount_fen);
}

namespace {

std::string encode_load_request_data(const TransactionRecord& intent, const std::array<std::uint8_t, 4>& card_random,
                                     const crypto::Mac4& mac1, const std::optional<iso8583::PurchaseReference>& refund_of) {
    iso8583::LoadRequestData load;
    load.asn = intent.asn;
    load.old_balance_fen = intent.balance_before_fen;
    load.online_atc = intent.atc;
    load.terminal_id = intent.terminal_id;
    load.when = intent.when;
    load.mac1 = mac1;
    load.card_random = card_random;
    load.refund_of = refund_of;  // DF13: the purchase a refund credit names, in the 0200 only
    return iso8583::encode_load_request(load);
}

// Load confirmation (ISO8583.md §4.3): what the HSM needs to check the load TAC — the amount is field 4.
// Load reversal (§4.5): DF01 ‖ DF04 name the 0200. Clinic completions and reversals carry no field 62:
// 60 + 90 name the 0100.
std::optional<std::string> encode_advice_data(const TransactionRecord& r) {
    if (r.link == LinkKind::load_confirmation) return iso8583::encode_load_confirmation(load_confirmation_of(r));
    if (r.link == LinkKind::load_reversal) return iso8583::encode_load_reference({r.asn, r.atc});
    return std::nullopt;
}

}  // namespace

std::string original_data_elements(const TransactionRecord& r) {
    const std::string_view original_mti = is_load(r.link) ? "0200" : "0100";
    return iso8583::encode_original_data({std::string(original_mti), r.stan, bcd_to_digits(view(r.transmitted))});
}

namespace {

// The fields of a card-transaction request for a record (ISO8583.md §4.1): its card, amount, STAN and batch.
iso8583::TransactionFields transaction_fields(const TransactionRecord& r, ProcessingCode processing, std::uint32_t stan,
                                              std::string_view terminal_id, std::uint32_t batch_number) {
    iso8583::TransactionFields f;
    f.card_number = card_number(r);
    f.processing = processing;
    f.amount_fen = r.amount_fen;
    f.stan = stan;
    f.terminal_id = std::string(terminal_id);
    f.batch_number = batch_number;
    return f;
}

// The pair check of a card-transaction request the SDK built: the fields the clearing books it by are the
// record's (cheap: map lookups, no encode).
void check_request(const Message& m, const TransactionRecord& r, std::uint32_t stan, std::uint32_t batch_number) {
    COCONUT_ASSERT(m.get_number(4) == r.amount_fen && m.get_number(11) == stan && m.get(2) == card_number(r) &&
                       m.get(60) == iso8583::batch_field(batch_number) && m.get(41).has_value(),
                   "a request carries its record's amount, card, STAN and batch");
}

}  // namespace

Message advice_request(const TransactionRecord& r, std::uint32_t stan, std::string_view terminal_id, bool repeat) {
    COCONUT_ASSERT(r.link != LinkKind::offline_purchase && r.link != LinkKind::clinic_hold, "an advice is sent for an advice record");
    const bool reversal = r.link == LinkKind::load_reversal || r.link == LinkKind::clinic_reversal;
    const ProcessingCode processing = is_load(r.link) ? load_code(r) : ProcessingCode::medical_purchase;
    Message m = iso8583::transaction_request(reversal ? iso8583::MessageType::reversal_advice : iso8583::MessageType::advice,
                                             transaction_fields(r, processing, stan, terminal_id, r.batch_number), repeat);
    if (auto data = encode_advice_data(r)) m.set(62, *data);
    m.set(90, original_data_elements(r));
    check_request(m, r, stan, r.batch_number);
    COCONUT_ASSERT(m.get(90).has_value() && m.get(90)->size() == 42, "field 90 names the original request");
    return m;
}

Message upload_request(const TransactionRecord& r, std::uint32_t stan, std::string_view terminal_id, std::uint32_t batch_number) {
    iso8583::TransactionFields f = transaction_fields(r, ProcessingCode::purse_purchase, stan, terminal_id, batch_number);
    f.local_time = bcd_to_digits(r.when.time);
    f.local_date = bcd_to_digits(r.when.date).substr(4, 4);
    Message m = iso8583::transaction_request(iso8583::MessageType::upload, f);
    m.set(62, encode_card_data(r));
    check_request(m, r, stan, batch_number);
    return m;
}

// ---- the connection ------------------------------------------------------------------------------

struct ClearingClient::State {
    asio::io_context io;
    detail::ClearingLink socket{io};  // the connection: TCP, or mutual TLS over it (ClearingOptions::tls)
    LinkStats link_stats;
    std::vector<ClearingEndpoint> endpoints;  // tried in this order, from `current` on
    std::size_t current = 0;                  // the endpoint in use, or the one that served last
    bool current_failed = false;              // its link was lost or it refused: reconnect from the next
    // An answer must come within this (response_timeout; connect_timeout for the sign-on of a new link).
    std::chrono::milliseconds answer_timeout{};
    ClearingOptions options;
    BatchState memory_batch;  // without a batch log (ClearingOptions::batch_log)
    bool signed_on = false;   // sign on again after a reconnect
    UploadReport report;
    std::array<std::uint8_t, iso8583::frame_size_max> buffer{};
    std::size_t in_flight = 0;  // requests written on this connection and not answered yet
    // After an injected loss (ClearingOptions::link_faults) the connection is severed: the answers still
    // owed for requests written before it are read (the lost answer's is read and thrown away), nothing
    // more is written, then the socket closes.
    struct Severed {
        std::size_t answers_owed = 0;
        std::optional<std::string> lost_answer_stan;
    };
    std::optional<Severed> severed;

    // Runs the io_context until the operation completed or the deadline passed (then the socket is
    // closed, which completes the operation with operation_aborted).
    template <class Start>
    boost::system::error_code run(std::chrono::milliseconds timeout, Start start) {
        boost::system::error_code result = asio::error::would_block;
        start(result);
        io.restart();
        io.run_for(timeout);
        if (result == asio::error::would_block) {
            boost::system::error_code ignored;
            socket.close(ignored);
            io.restart();
            io.run();
            return asio::error::timed_out;
        }
        return result;
    }

    Status<ClearingError> open_socket(const ClearingEndpoint& endpoint) {
        tcp::resolver resolver(io);
        boost::system::error_code ec;
        const auto endpoints = resolver.resolve(endpoint.host, std::to_string(endpoint.port), ec);
        if (ec) return fail(ClearingErrorCode::connect_failed, endpoint.host + ": " + ec.message());
        const std::string where = endpoint.host + ":" + std::to_string(endpoint.port);
        in_flight = 0;
        severed.reset();
        auto fresh = socket.reopen(endpoint.host);
        if (!fresh) return fail(ClearingErrorCode::tls_error, "TLS: " + fresh.error());
        ec = run(options.connect_timeout, [&](boost::system::error_code& result) {
            asio::async_connect(**fresh, endpoints, [&](boost::system::error_code e, const tcp::endpoint&) { result = e; });
        });
        if (ec) return fail(ClearingErrorCode::connect_failed, "cannot connect to " + where + ": " + ec.message());
        (*fresh)->set_option(tcp::no_delay(true), ec);
        link_stats.connects++;
        if (!socket.tls()) return Ok{};
        // The handshake verifies the server's certificate (island CA, this host); the server's verdict
        // on ours arrives with its first answer under TLS 1.3 (a refusal then reads as a closed link).
        ec = run(options.connect_timeout,
                 [&](boost::system::error_code& result) { socket.async_handshake([&](boost::system::error_code e) { result = e; }); });
        if (ec) {
            socket.close(ec);
            return fail(ClearingErrorCode::connect_failed, "TLS handshake with " + where + " failed: " + ec.message() +
                                                               " (is the server's certificate from the CA in " + options.tls->ca.string() +
                                                               " and issued for " + endpoint.host + "?)");
        }
        (socket.resumed() ? link_stats.tls_resumed : link_stats.tls_full)++;
        return Ok{};
    }

    // ---- the endpoints: failover (ClearingOptions::failover_window) ----

    bool several() const { return endpoints.size() > 1; }

    // A timeout closes the socket (a late answer must not be taken for the next request's): reconnect,
    // from the next endpoint when this one failed.
    Status<ClearingError> ensure_open() {
        if (socket.is_open()) return Ok{};
        return establish(current_failed ? (current + 1) % endpoints.size() : current);
    }

    // The endpoint in use lost the link or refused: closed, and the next connection starts after it.
    void lose_current() {
        boost::system::error_code ignored;
        socket.close(ignored);
        severed.reset();
        current_failed = true;
    }

    // 0800 sign-on on the open connection, its answer within `timeout`: 00, or why not.
    Status<ClearingError> sign_on_here(std::chrono::milliseconds timeout) {
        auto stan = take_stan();
        if (!stan) return Unexpected<ClearingError>{stan.error()};
        answer_timeout = timeout;
        auto answer = exchange_once(iso8583::network_request(iso8583::NetworkCode::sign_on, *stan, options.terminal_id));
        answer_timeout = options.response_timeout;
        if (!answer) return Unexpected<ClearingError>{answer.error()};
        const std::string code(*answer->get(39));
        if (code != "00") return fail(ClearingErrorCode::refused, "the clearing answered " + code + " to the sign-on", code);
        return Ok{};
    }

    // One attempt at endpoint `index`: connected, and signed on if the client is; each step bounded by
    // connect_timeout.
    Status<ClearingError> attempt(std::size_t index) {
        if (auto opened = open_socket(endpoints[index]); !opened) return opened;
        if (!signed_on) return Ok{};
        auto done = sign_on_here(std::min(options.connect_timeout, options.response_timeout));
        if (!done) lose_current();
        return done;
    }

    // Connected to endpoint `index` (signed on if the client is).
    void served_by(std::size_t index) {
        if (index != current) link_stats.failovers++;
        current = index;
        current_failed = false;
        if (signed_on) remember();
    }

    // The current endpoint signed this terminal on: where the next client starts.
    void remember() {
        if (auto& memory = options.endpoint_memory; memory && memory->last_served != endpoints[current]) {
            memory->last_served = endpoints[current];
            if (memory->changed) memory->changed(endpoints[current]);
        }
    }

    // Rounds over the endpoints from `first` until one accepts; between rounds the back-off, until the
    // failover window has passed (the first round is always complete). An error that is not the
    // endpoint's (TLS files, batch log) ends it at once.
    Status<ClearingError> establish(std::size_t first) {
        using Clock = std::chrono::steady_clock;
        const auto deadline = Clock::now() + options.failover_window;
        auto backoff = std::max(options.failover_backoff, std::chrono::milliseconds(1));
        std::vector<std::string> why(endpoints.size());
        std::optional<ClearingError> last;
        for (std::size_t round = 1;; ++round) {
            for (std::size_t k = 0; k < endpoints.size(); ++k) {
                const std::size_t index = (first + k) % endpoints.size();
                auto done = attempt(index);
                if (done) {
                    served_by(index);
                    return Ok{};
                }
                if (!passes_over(done.error())) return done;
                link_stats.endpoint_failures++;
                why[index] = done.error().message;
                last = done.error();
            }
            const auto now = Clock::now();
            if (now >= deadline) return unreachable(*last, why, round);
            std::this_thread::sleep_for(std::min<Clock::duration>(backoff, deadline - now));
            backoff = std::min(backoff * 2, failover_backoff_max);
        }
    }

    // Every endpoint failed: one endpoint's own error as it was; of several, each named with what it did.
    Unexpected<ClearingError> unreachable(const ClearingError& last, const std::vector<std::string>& why, std::size_t rounds) const {
        if (!several()) return Unexpected<ClearingError>{last};
        std::string each;
        for (std::size_t i = 0; i < endpoints.size(); ++i) each += fmt::format("; {} — {}", to_string(endpoints[i]), why[i]);
        return fail(ClearingErrorCode::connect_failed,
                    fmt::format("no clearing endpoint of {} accepted this terminal ({} round{} in {} ms){}", endpoints.size(), rounds,
                                rounds == 1 ? "" : "s", options.failover_window.count(), each));
    }

    // ---- the batch state: in the batch log, or in memory ----

    const BatchState& batch() const { return options.batch_log ? options.batch_log->batch_state() : memory_batch; }

    Result<std::uint32_t, ClearingError> take_stan() {
        if (!options.batch_log) {
            const std::uint32_t stan = memory_batch.next_stan;
            memory_batch.next_stan = advance_stan(stan, 1);
            return stan;
        }
        auto stan = options.batch_log->take_stan();
        if (!stan) return fail(ClearingErrorCode::batch_error, stan.error().message);
        return *stan;
    }

    Status<ClearingError> count_reversal(LinkKind original, std::uint32_t amount_fen) {
        if (!options.batch_log) {
            memory_batch.count_reversal(original, amount_fen);
            return Ok{};
        }
        if (auto c = options.batch_log->count_reversal(original, amount_fen); !c)
            return fail(ClearingErrorCode::batch_error, c.error().message);
        return Ok{};
    }

    Status<ClearingError> count_credit(std::uint32_t amount_fen) {
        if (!options.batch_log) {
            memory_batch.count_credit(amount_fen);
            return Ok{};
        }
        if (auto c = options.batch_log->count_credit(amount_fen); !c) return fail(ClearingErrorCode::batch_error, c.error().message);
        return Ok{};
    }

    // A request the clearing answers the same however often it arrives (a refund lands on one ledger id):
    // sent again as a repeat (0201, 0221), here or on the next endpoint, while no answer comes — under the
    // same STAN, so that the clearing counts it in the batch once, as the terminal counts the one 00 it
    // receives (ISO8583.md §4.10).
    Result<Message, ClearingError> exchange_repeatable(const std::function<Message(std::uint32_t stan)>& build) {
        std::optional<ClearingError> last;
        auto stan = take_stan();
        if (!stan) return Unexpected<ClearingError>{stan.error()};
        Message request = build(*stan);
        for (int tries = 0; tries < refund_tries_max; ++tries) {
            if (tries == 1) {
                std::string repeat = request.mti();
                repeat[3] = '1';
                request.set_mti(repeat);
            }
            auto answer = exchange(request, Resend::after_loss);
            if (answer || !passes_over(answer.error())) return answer;
            last = answer.error();
        }
        COCONUT_ASSERT(last.has_value());
        last->message += fmt::format(" (sent {} times)", refund_tries_max);
        return Unexpected<ClearingError>{*last};
    }

    Status<ClearingError> close_batch() {
        if (!options.batch_log) {
            memory_batch.close();
            return Ok{};
        }
        if (auto c = options.batch_log->close_batch(); !c) return fail(ClearingErrorCode::batch_error, c.error().message);
        return Ok{};
    }

    // With a batch log, only its queue is uploaded: its acknowledgements carry the totals.
    Status<ClearingError> check_queue(const TransactionQueue& queue) const {
        if (!options.batch_log || options.batch_log == &queue) return Ok{};
        return fail(ClearingErrorCode::bad_option, queue.path().string() + " is not the queue that keeps this client's batch state (" +
                                                       options.batch_log->path().string() + ")");
    }

    // Deletes `sequences` from the queue and counts `booked` (the records the host booked among them).
    // With a batch log that is one durable append; in memory the count follows the deletion.
    Status<ClearingError> acknowledge(TransactionQueue& queue, std::span<const std::uint64_t> sequences,
                                      std::span<const QueuedTransaction> booked) {
        std::vector<std::uint64_t> booked_sequences;
        for (const QueuedTransaction& q : booked) booked_sequences.push_back(q.sequence);
        const bool with_log = options.batch_log != nullptr;
        auto done = with_log ? queue.acknowledge(sequences, booked_sequences) : queue.acknowledge(sequences);
        if (!done) return fail(ClearingErrorCode::queue_error, "acknowledge: " + done.error().message);
        if (!with_log)
            for (const QueuedTransaction& q : booked) memory_batch.count(q.record);
        return Ok{};
    }

    Status<ClearingError> send(const Message& m) {
        if (severed) return Ok{};  // written into a connection that is gone: it never arrives
        const LinkFault fault = options.link_faults ? options.link_faults(m) : LinkFault::none;
        if (fault == LinkFault::lose_request) {
            severed = Severed{in_flight, {}};
            return Ok{};
        }
        auto encoded = iso8583::encode(m, iso8583::coconut_dictionary());
        if (!encoded) return fail(ClearingErrorCode::bad_option, "cannot encode " + m.mti() + ": " + iso8583::describe(encoded.error()));
        auto framed = iso8583::frame(*encoded);
        if (!framed) return fail(ClearingErrorCode::bad_option, "message too large");
        // The frame is the length prefix and the message as encoded, which starts with its MTI.
        COCONUT_ASSERT(framed->size() == encoded->size() + iso8583::frame_header_size &&
                           (std::size_t{(*framed)[0]} << 8 | (*framed)[1]) == encoded->size() &&
                           std::equal(m.mti().begin(), m.mti().end(), encoded->begin()),
                       "ISO 8583 frame of the request");
        boost::system::error_code ec;
        asio::write(socket, asio::buffer(*framed), ec);  // small; the kernel buffer holds a full window
        if (ec) {
            socket.close(ec);
            return fail(ClearingErrorCode::closed, "send: " + ec.message());
        }
        ++in_flight;
        if (fault == LinkFault::lose_answer) severed = Severed{in_flight, std::string(*m.get(11))};
        return Ok{};
    }

    // The next answer; on a severed connection only the ones still owed, the lost one thrown away.
    Result<Message, ClearingError> receive() {
        while (severed) {
            if (severed->answers_owed == 0) {
                severed.reset();
                boost::system::error_code ignored;
                socket.close(ignored);
                return fail(ClearingErrorCode::closed, "the connection to the clearing was lost (a fault injected by link_faults)");
            }
            --severed->answers_owed;
            auto answer = receive_frame();
            if (!answer) {
                severed.reset();
                return answer;
            }
            if (answer->get(11) != severed->lost_answer_stan) return answer;
        }
        return receive_frame();
    }

    Result<Message, ClearingError> receive_frame() {
        std::size_t body_size = 0;
        auto ec = run(answer_timeout, [&](boost::system::error_code& result) {
            asio::async_read(socket, asio::buffer(buffer.data(), iso8583::frame_header_size),
                             [&](boost::system::error_code e, std::size_t) { result = e; });
        });
        if (ec == asio::error::timed_out) return fail(ClearingErrorCode::timeout, "no answer from the clearing in time");
        if (ec) return closed(ec);
        body_size = (std::size_t{buffer[0]} << 8) | buffer[1];
        if (body_size == 0 || body_size > iso8583::message_size_max) {
            socket.close(ec);
            return fail(ClearingErrorCode::protocol_error, "frame header announces " + std::to_string(body_size) + " bytes");
        }
        ec = run(answer_timeout, [&](boost::system::error_code& result) {
            asio::async_read(socket, asio::buffer(buffer.data(), body_size), [&](boost::system::error_code e, std::size_t) { result = e; });
        });
        if (ec == asio::error::timed_out) return fail(ClearingErrorCode::timeout, "answer cut off");
        if (ec) return closed(ec);
        auto parsed = iso8583::parse(ByteView(buffer.data(), body_size), iso8583::coconut_dictionary());
        if (!parsed) return fail(ClearingErrorCode::protocol_error, "answer does not parse: " + iso8583::describe(parsed.error()));
        if (!parsed->get(39) || !parsed->get(11)) return fail(ClearingErrorCode::protocol_error, "answer without 39 or 11");
        COCONUT_ASSERT(parsed->mti().size() == 4 && std::equal(parsed->mti().begin(), parsed->mti().end(), buffer.begin()),
                       "a parsed answer's MTI is the one on the wire");
        if (in_flight > 0) --in_flight;
        return std::move(parsed).value();
    }

    Unexpected<ClearingError> closed(boost::system::error_code ec) {
        boost::system::error_code ignored;
        socket.close(ignored);
        // Under TLS 1.3 the clearing's refusal of this terminal's certificate arrives as an alert here.
        if (ec.category() == asio::error::get_ssl_category())
            return fail(ClearingErrorCode::closed, "the clearing closed the TLS connection: " + ec.message() +
                                                       " (is this terminal's certificate valid and from the island CA?)");
        return fail(ClearingErrorCode::closed, "the clearing closed the connection: " + ec.message());
    }

    // One request, its one answer (same STAN, the matching response MTI), on the endpoint in use or, when
    // it refuses with 91 (or the link is lost and `resend` allows), on the next ones (once each).
    Result<Message, ClearingError> exchange(const Message& m, Resend resend = Resend::after_refusal) {
        for (std::size_t tries = 1;; ++tries) {
            if (auto open = ensure_open(); !open) return Unexpected<ClearingError>{open.error()};
            auto answer = exchange_once(m);
            const bool refused_here = answer && several() && iso8583::response_code_of(*answer) == ResponseCode::issuer_inoperative;
            if (answer && !refused_here) return answer;
            if (!answer && !passes_over(answer.error())) return answer;
            lose_current();
            if (tries >= endpoints.size() || (!refused_here && resend != Resend::after_loss)) return answer;
        }
    }

    // The request on the open connection and its answer.
    Result<Message, ClearingError> exchange_once(const Message& m) {
        if (auto s = send(m); !s) return Unexpected<ClearingError>{s.error()};
        auto answer = receive();
        if (!answer) return answer;
        if (answer->mti() != response_mti(m.mti()) || answer->get(11) != m.get(11)) {
            boost::system::error_code ignored;
            socket.close(ignored);
            return fail(ClearingErrorCode::protocol_error, "answer " + answer->mti() + " does not match the " + m.mti());
        }
        return answer;
    }

    // 0800 requests change nothing at the clearing that a repeat would double: sent again on the next
    // endpoint after a loss too.
    Result<Message, ClearingError> network_exchange(iso8583::NetworkCode code, const std::optional<std::string>& field48 = {}) {
        auto stan = take_stan();
        if (!stan) return Unexpected<ClearingError>{stan.error()};
        Message m = iso8583::network_request(code, *stan, options.terminal_id);
        if (field48) m.set(48, *field48);
        return exchange(m, Resend::after_loss);
    }

    Status<ClearingError> network(iso8583::NetworkCode code) {
        auto answer = network_exchange(code);
        if (!answer) return Unexpected<ClearingError>{answer.error()};
        const std::string code_text(*answer->get(39));
        if (code_text != "00") return fail(ClearingErrorCode::refused, "the clearing answered " + code_text, code_text);
        return Ok{};
    }
};

ClearingClient::ClearingClient(std::unique_ptr<State> state) : state_(std::move(state)) {}
ClearingClient::~ClearingClient() = default;

Result<std::unique_ptr<ClearingClient>, ClearingError> ClearingClient::connect(const ClearingEndpoint& endpoint, ClearingOptions options) {
    return connect(std::vector<ClearingEndpoint>{endpoint}, std::move(options));
}

Result<std::unique_ptr<ClearingClient>, ClearingError> ClearingClient::connect(std::vector<ClearingEndpoint> endpoints,
                                                                               ClearingOptions options) {
    if (endpoints.empty() || endpoints.size() > clearing_endpoints_max)
        return fail(ClearingErrorCode::bad_option, fmt::format("give 1-{} clearing endpoints", clearing_endpoints_max));
    for (std::size_t i = 0; i < endpoints.size(); ++i) {
        if (std::find(endpoints.begin(), endpoints.begin() + static_cast<std::ptrdiff_t>(i), endpoints[i]) !=
            endpoints.begin() + static_cast<std::ptrdiff_t>(i))
            return fail(ClearingErrorCode::bad_option, "clearing endpoint " + to_string(endpoints[i]) + " is listed twice");
    }
    if (options.terminal_id.size() != 8) {
        return fail(ClearingErrorCode::bad_option, "terminal id '" + options.terminal_id + "': field 41 is exactly 8 characters");
    }
    if (options.in_flight == 0 || options.in_flight > clearing_in_flight_max) {
        return fail(ClearingErrorCode::bad_option, "in-flight must be 1-" + std::to_string(clearing_in_flight_max));
    }
    if (options.batch_number == 0 || options.batch_number > batch_number_max)
        return fail(ClearingErrorCode::bad_option, "batch number must be 1-999999");
    auto state = std::make_unique<State>();
    state->endpoints = std::move(endpoints);
    state->options = std::move(options);
    state->answer_timeout = state->options.response_timeout;
    // Start where the terminal was served last (ClearingOptions::endpoint_memory).
    if (const auto& memory = state->options.endpoint_memory; memory && memory->last_served) {
        const auto& list = state->endpoints;
        const auto found = std::find(list.begin(), list.end(), *memory->last_served);
        if (found != list.end()) state->current = static_cast<std::size_t>(found - list.begin());
    }
    if (auto& files = state->options.tls; files && !files->context) {
        auto context = make_tls_context(*files);
        if (!context) return Unexpected<ClearingError>{context.error()};
        files->context = std::move(context).value();
    }
    if (state->options.tls) state->socket.use_tls(state->options.tls->context);
    state->memory_batch.batch_number = state->options.batch_number;
    if (state->options.batch_log) state->options.batch_log->release_stan_reservation();
    if (auto opened = state->establish(state->current); !opened) return Unexpected<ClearingError>{opened.error()};
    return std::unique_ptr<ClearingClient>(new ClearingClient(std::move(state)));
}

Result<std::shared_ptr<tls::ClientContext>, ClearingError> make_tls_context(const ClearingTls& files) {
    auto context = tls::ClientContext::create({files.ca, files.certificate, files.private_key});
    if (!context) return fail(ClearingErrorCode::tls_error, "TLS: " + context.error().message);
    return std::make_shared<tls::ClientContext>(std::move(context).value());
}

// On the open connection; refused there with 91 or the link lost: the next endpoints, each signed on by
// establish().
Status<ClearingError> ClearingClient::sign_on() {
    State& s = *state_;
    const bool open = s.socket.is_open();
    s.signed_on = true;  // a reconnect signs on again
    auto done = open ? s.sign_on_here(s.options.response_timeout) : s.ensure_open();
    if (!done && open && s.several() && passes_over(done.error())) {
        s.lose_current();
        done = s.ensure_open();
    }
    if (!done) {
        s.signed_on = false;
        return done;
    }
    s.remember();
    return done;
}
Status<ClearingError> ClearingClient::sign_off() {
    state_->signed_on = false;
    return state_->network(iso8583::NetworkCode::sign_off);
}
const UploadReport& ClearingClient::last_report() const { return state_->report; }
const LinkStats& ClearingClient::link_stats() const { return state_->link_stats; }
const ClearingEndpoint& ClearingClient::current_endpoint() const { return state_->endpoints[state_->current]; }
const std::vector<ClearingEndpoint>& ClearingClient::endpoints() const { return state_->endpoints; }
const BatchState& ClearingClient::batch() const { return state_->batch(); }
const ClearingOptions& ClearingClient::options() const { return state_->options; }
Result<std::uint32_t, ClearingError> ClearingClient::take_stan() { return state_->take_stan(); }

namespace {

// One upload chunk: at most the queue's ack_batch_max records, sent with up to `in_flight` awaiting an
// answer, then one acknowledgement (the records' deletion and the totals they add, in one append).
class UploadChunk {
public:
    UploadChunk(ClearingClient::State& s, const std::vector<QueuedTransaction>& work, std::size_t start, std::size_t end)
        : s_(s), work_(work), next_(start), end_(end) {}

    // Sends and receives until every record of the chunk was answered or the link failed.
    void exchange() {
        while (!failure_ && (next_ < end_ || !pending_.empty())) {
            send_window();
            if (failure_ || pending_.empty()) break;
            receive_one();
        }
    }
    // Acknowledges what was answered with a final answer, even after a link failure.
    Status<ClearingError> acknowledge(TransactionQueue& queue) {
        if (acknowledged_.empty()) return Ok{};
        std::vector<std::uint64_t> sequences;
        std::vector<QueuedTransaction> booked;
        for (const auto& [i, counts] : acknowledged_) {
            sequences.push_back(work_[i].sequence);
            if (counts) booked.push_back(work_[i]);
        }
        if (auto done = s_.acknowledge(queue, sequences, booked); !done) return done;
        s_.report.acknowledged += acknowledged_.size();
        return Ok{};
    }
    const std::optional<ClearingError>& failure() const { return failure_; }
    // Queue sequences answered and kept (not acknowledged): not sent again in this upload.
    const std::vector<std::uint64_t>& kept() const { return kept_; }

private:
    struct InFlight {
        std::size_t index;
        std::string response_mti;
    };

    void send_window() {
        while (next_ < end_ && pending_.size() < s_.options.in_flight) {
            auto stan = s_.take_stan();
            if (!stan) {
                failure_ = stan.error();
                return;
            }
            const TransactionRecord& record = work_[next_].record;
            const bool advice = record.link != LinkKind::offline_purchase;
            const Message request = advice ? advice_request(record, *stan, s_.options.terminal_id, true)
                                           : upload_request(record, *stan, s_.options.terminal_id, s_.batch().batch_number);
            if (auto sent = s_.send(request); !sent) {
                failure_ = sent.error();
                return;
            }
            pending_.emplace(std::string(*request.get(11)), InFlight{next_, response_mti(request.mti())});
            s_.report.sent++;
            if (advice) s_.report.advices++;
            ++next_;
        }
    }

    void receive_one() {
        auto answer = s_.receive();
        if (!answer) {
            failure_ = answer.error();
            return;
        }
        const auto found = pending_.find(std::string(*answer->get(11)));
        if (found == pending_.end() || answer->mti() != found->second.response_mti) {
            failure_ = ClearingError{ClearingErrorCode::protocol_error,
                                     "answer " + answer->mti() + " STAN " + std::string(*answer->get(11)) + " matches no request",
                                     {}};
            boost::system::error_code ignored;
            s_.socket.close(ignored);
            return;
        }
        judge(found->second.index, *answer);
        pending_.erase(found);
    }

    // What the answer means for the record: acknowledged (and counted when booked), or kept. A 91 from
    // one of several endpoints is no answer: that node does not serve; the record goes to the next.
    void judge(std::size_t index, const Message& answer) {
        const TransactionRecord& record = work_[index].record;
        const std::string code(*answer.get(39));
        if (code == "91" && s_.several()) {
            failure_ = ClearingError{ClearingErrorCode::refused, to_string(s_.endpoints[s_.current]) + " answered 91 to an upload", code};
            return;
        }
        UploadReport& report = s_.report;
        report.by_response_code[code]++;
        if (code == "59") report.suspense++;
        if (code == "94") report.duplicates++;
        if (acknowledging(record, answer)) {
            acknowledged_.emplace_back(index, booked_by_host(record, answer));
            if (code == "00") report.approved++;
            if (code != "00" && record.link != LinkKind::offline_purchase) report.refused++;
            return;
        }
        report.kept++;
        kept_.push_back(work_[index].sequence);
        if (code == "00") report.digest_mismatches++;
        if (record.link == LinkKind::offline_purchase && (code == "59" || code == "94" || code == "00"))
            report.kept_for_review.push_back(work_[index].sequence);
    }

    ClearingClient::State& s_;
    const std::vector<QueuedTransaction>& work_;
    std::size_t next_;
    const std::size_t end_;
    std::unordered_map<std::string, InFlight> pending_;       // STAN → record
    std::vector<std::pair<std::size_t, bool>> acknowledged_;  // index into work, booked by the host
    std::vector<std::uint64_t> kept_;
    std::optional<ClearingError> failure_;
};

// One pass over what is queued and not yet answered in this upload (`answered`), on one connection; a
// link failure ends it (what was answered is acknowledged first).
Status<ClearingError> upload_pass(ClearingClient::State& s, TransactionQueue& queue, std::unordered_set<std::uint64_t>& answered) {
    if (auto open = s.ensure_open(); !open) return open;
    std::vector<QueuedTransaction> work = queue.batch(queue.size());
    std::erase_if(work, [&](const QueuedTransaction& q) { return answered.contains(q.sequence); });
    // One acknowledgement per chunk, as large as this queue takes.
    const std::size_t chunk_max = queue.limits().ack_batch_max;
    COCONUT_ASSERT(chunk_max >= 1);
    for (std::size_t start = 0; start < work.size(); start += chunk_max) {
        UploadChunk chunk(s, work, start, std::min(work.size(), start + chunk_max));
        chunk.exchange();
        if (auto done = chunk.acknowledge(queue); !done) return done;
        answered.insert(chunk.kept().begin(), chunk.kept().end());
        if (chunk.failure()) return Unexpected<ClearingError>{*chunk.failure()};
    }
    return Ok{};
}

}  // namespace

// With several endpoints a lost link, a silence or a 91 moves the upload to the next endpoint, where
// what stayed queued is sent again (a record booked before its answer was lost lands on the same ledger
// id: acknowledged, booked once). It gives up when connecting fails (establish() went round the list
// already) or after as many moves in a row as there are endpoints with no record answered.
Result<UploadReport, ClearingError> ClearingClient::upload(TransactionQueue& queue) {
    State& s = *state_;
    s.report = {};
    if (auto checked = s.check_queue(queue); !checked) return Unexpected<ClearingError>{checked.error()};
    std::unordered_set<std::uint64_t> answered;
    for (std::size_t stalls = 0;;) {
        const std::size_t before = s.report.acknowledged + s.report.kept;
        auto pass = upload_pass(s, queue, answered);
        if (pass) return s.report;
        stalls = s.report.acknowledged + s.report.kept > before ? 0 : stalls + 1;
        const ClearingError& error = pass.error();
        if (!s.several() || !passes_over(error) || error.code == ClearingErrorCode::connect_failed || stalls >= s.endpoints.size())
            return Unexpected<ClearingError>{error};
        s.lose_current();
    }
}

// ---- online exchanges ----------------------------------------------------------------------------

namespace {

// An online request (0200, 0100) for an intent: its own STAN and batch, the transmission time and the
// card's local time, which MAC2 / the clinic proof cover.
Message online_request(iso8583::MessageType type, const TransactionRecord& r, ProcessingCode processing, std::string_view terminal_id) {
    iso8583::TransactionFields f = transaction_fields(r, processing, r.stan, terminal_id, r.batch_number);
    f.transmission_time = bcd_to_digits(view(r.transmitted));
    f.local_time = bcd_to_digits(r.when.time);
    f.local_date = bcd_to_digits(r.when.date).substr(4, 4);
    Message m = iso8583::transaction_request(type, f);
    check_request(m, r, r.stan, r.batch_number);
    COCONUT_ASSERT(m.get(7) == f.transmission_time, "field 7 is the intent's transmission time");
    return m;
}

}  // namespace

Result<LoadApproval, ClearingError> ClearingClient::request_load(const TransactionRecord& intent,
                                                                 const std::array<std::uint8_t, 4>& card_random, const crypto::Mac4& mac1,
                                                                 const std::optional<iso8583::PurchaseReference>& refund_of) {
    COCONUT_ASSERT(refund_of.has_value() == intent.refund, "a refund credit's 0200 names its purchase, a load's names none");
    Message m = online_request(iso8583::MessageType::financial, intent, load_code(intent), state_->options.terminal_id);
    m.set(62, encode_load_request_data(intent, card_random, mac1, refund_of));
    auto answer = state_->exchange(m);
    if (!answer) return Unexpected<ClearingError>{answer.error()};
    LoadApproval approval;
    approval.response_code = std::string(*answer->get(39));
    if (auto id = answer->get(38)) approval.authorization_id = std::string(*id);
    if (approval.response_code != "00") return approval;
    // 62 = DF01 ‖ DF04 ‖ DF09 (MAC2) of this very load.
    auto data = answer->get(62) ? iso8583::parse_load_answer(*answer->get(62))
                                : Result<iso8583::LoadAnswerData, std::string>(Unexpected<std::string>{"no field 62"});
    if (!data) return fail(ClearingErrorCode::protocol_error, "0210 approved without a valid MAC2: " + data.error(), "00");
    if (data->asn != intent.asn || data->online_atc != intent.atc) {
        return fail(ClearingErrorCode::protocol_error, "0210 MAC2 is for another card or online ATC", "00");
    }
    approval.mac2 = data->mac2;
    return approval;
}

Result<iso8583::HostChallenge, ClearingError> ClearingClient::request_challenge(const Asn& asn) {
    auto stan = state_->take_stan();
    if (!stan) return Unexpected<ClearingError>{stan.error()};
    Message m = iso8583::network_request(iso8583::NetworkCode::card_challenge, *stan, state_->options.terminal_id);
    m.set(2, iso8583::card_number(asn));
    m.set(62, iso8583::encode_challenge_request({asn}));
    auto answer = state_->exchange(m, Resend::after_loss);
    if (!answer) return Unexpected<ClearingError>{answer.error()};
    const std::string code(answer->get(39).value_or(""));
    if (code != "00") return fail(ClearingErrorCode::refused, "card-presence challenge: the clearing answered " + code, code);
    auto data = answer->get(62) ? iso8583::parse_challenge_answer(*answer->get(62))
                                : Result<iso8583::ChallengeAnswerData, std::string>(Unexpected<std::string>{"no field 62"});
    if (!data) return fail(ClearingErrorCode::protocol_error, "0810 challenge: " + data.error(), code);
    if (data->asn != asn) return fail(ClearingErrorCode::protocol_error, "0810 challenge is for another card", code);
    return data->challenge;
}

std::array<std::uint8_t, 8> ClearingClient::clinic_proof_input(const TransactionRecord& intent,
                                                               const iso8583::HostChallenge& challenge) const {
    Message m = online_request(iso8583::MessageType::authorization, intent, ProcessingCode::medical_purchase, state_->options.terminal_id);
    return iso8583::clinic_proof_input(challenge, {*m.get(41), *m.get(11), *m.get(7), *m.get(4), *m.get(60)}, intent.asn);
}

Result<std::uint64_t, ClearingError> ClearingClient::medical_inquiry(const TransactionRecord& intent,
                                                                     const iso8583::HostChallenge& challenge,
                                                                     const std::array<std::uint8_t, 8>& cryptogram) {
    Message m = online_request(iso8583::MessageType::authorization, intent, ProcessingCode::medical_inquiry, state_->options.terminal_id);
    if (!state_->options.merchant_id.empty()) m.set(42, state_->options.merchant_id);
    m.set(62, iso8583::encode_clinic_authorization({intent.asn, cryptogram, challenge, std::nullopt}));
    auto answer = state_->exchange(m);
    if (!answer) return Unexpected<ClearingError>{answer.error()};
    const std::string code(*answer->get(39));
    if (code != "00") return fail(ClearingErrorCode::refused, "medical balance inquiry answered " + code, code);
    auto available = iso8583::parse_medical_available_field(answer->get(54).value_or(""));
    if (!available) return fail(ClearingErrorCode::protocol_error, "0110 to a medical balance inquiry without an amount in field 54", code);
    return *available;
}

Result<ClinicApproval, ClearingError> ClearingClient::authorize(const TransactionRecord& intent, const iso8583::HostChallenge& challenge,
                                                                const std::array<std::uint8_t, 8>& cryptogram) {
    Message m = online_request(iso8583::MessageType::authorization, intent, ProcessingCode::medical_purchase, state_->options.terminal_id);
    if (!state_->options.merchant_id.empty()) m.set(42, state_->options.merchant_id);
    // DF11: the visit this hold opens, the same reference the visit's purse part carries (ISO8583.md §4.9).
    m.set(62, iso8583::encode_clinic_authorization(
                  {intent.asn, cryptogram, challenge, iso8583::VisitReference{intent.batch_number, intent.stan}}));
    auto answer = state_->exchange(m);
    if (!answer) return Unexpected<ClearingError>{answer.error()};
    ClinicApproval approval;
    approval.response_code = std::string(*answer->get(39));
    if (approval.response_code == "00") approval.approved_fen = intent.amount_fen;
    if (approval.response_code == "10") {
        // Partial approval: field 4 of the 0110 is the amount held.
        const auto held = answer->get_number(4);
        if (!held || *held == 0 || *held > intent.amount_fen) {
            return fail(ClearingErrorCode::protocol_error, "0110 partial approval without a held amount in (0, requested]", "10");
        }
        approval.approved_fen = static_cast<std::uint32_t>(*held);
    }
    return approval;
}

Result<std::string, ClearingError> ClearingClient::reverse(const TransactionRecord& reversal) {
    auto stan = state_->take_stan();
    if (!stan) return Unexpected<ClearingError>{stan.error()};
    Message m = advice_request(reversal, *stan, state_->options.terminal_id, false);
    m.set_mti(iso8583::request_mti(iso8583::MessageType::reversal));  // the same fields, asked online
    auto answer = state_->exchange(m);
    if (!answer) return Unexpected<ClearingError>{answer.error()};
    std::string code(*answer->get(39));
    if (code == "00") {
        if (auto c = state_->count_reversal(reversal.link, reversal.amount_fen); !c) return Unexpected<ClearingError>{c.error()};
    }
    return code;
}

Result<std::string, ClearingError> ClearingClient::refund_medical(const TransactionRecord& request, const ClinicHoldReference& hold) {
    COCONUT_ASSERT(hold.terminal_id.size() == 8 && request.amount_fen > 0, "a medical refund names a hold and its amount");
    iso8583::MedicalRefundData data{request.asn, iso8583::VisitReference{hold.batch_number, hold.stan}, {}};
    std::copy(hold.terminal_id.begin(), hold.terminal_id.end(), data.hold_terminal_id41.begin());
    const std::string field62 = iso8583::encode_medical_refund(data);
    auto answer = state_->exchange_repeatable([&](std::uint32_t stan) {
        TransactionRecord r = request;
        r.stan = stan;
        Message m = online_request(iso8583::MessageType::financial, r, ProcessingCode::medical_refund, state_->options.terminal_id);
        m.set(62, field62);
        return m;
    });
    if (!answer) return Unexpected<ClearingError>{answer.error()};
    std::string code(*answer->get(39));
    if (code != "00") return code;
    if (auto refunded = answer->get_number(4); refunded && *refunded != request.amount_fen)
        return fail(ClearingErrorCode::protocol_error, fmt::format("0210 refunded {} fen, asked {}", *refunded, request.amount_fen), code);
    if (auto c = state_->count_credit(request.amount_fen); !c) return Unexpected<ClearingError>{c.error()};
    return code;
}

Result<std::string, ClearingError> ClearingClient::refund_in_cash(const TransactionRecord& request,
                                                                  const iso8583::PurchaseReference& purchase) {
    const std::string field62 = iso8583::encode_cash_refund({request.asn, purchase});
    COCONUT_ASSERT(iso8583::is_cash_refund(field62), "a cash refund's 62 is told from a credit's confirmation");
    auto answer = state_->exchange_repeatable([&](std::uint32_t stan) {
        Message m = iso8583::transaction_request(iso8583::MessageType::advice,
                                                 transaction_fields(request, ProcessingCode::refund, stan, state_->options.terminal_id,
                                                                    request.batch_number));
        m.set(62, field62);
        return m;
    });
    if (!answer) return Unexpected<ClearingError>{answer.error()};
    return std::string(*answer->get(39));
}

Result<std::string, ClearingError> ClearingClient::send_advice(TransactionQueue& queue, std::uint64_t sequence) {
    if (auto checked = state_->check_queue(queue); !checked) return Unexpected<ClearingError>{checked.error()};
    std::optional<TransactionRecord> record;
    for (const auto& q : queue.batch(queue.size())) {
        if (q.sequence == sequence) record = q.record;
    }
    if (!record || record->link == LinkKind::offline_purchase) {
        return fail(ClearingErrorCode::queue_error, fmt::format("no queued advice {}", sequence));
    }
    auto stan = state_->take_stan();
    if (!stan) return Unexpected<ClearingError>{stan.error()};
    auto answer = state_->exchange(advice_request(*record, *stan, state_->options.terminal_id, false));
    if (!answer) return Unexpected<ClearingError>{answer.error()};
    std::string code(*answer->get(39));
    if (acknowledging(*record, *answer)) {
        const std::uint64_t sequences[] = {sequence};
        std::vector<QueuedTransaction> booked;
        if (booked_by_host(*record, *answer)) booked.push_back({sequence, *record});
        if (auto done = state_->acknowledge(queue, sequences, booked); !done) return Unexpected<ClearingError>{done.error()};
    }
    return code;
}

// ---- hotlist download ----------------------------------------------------------------------------

namespace {}  // namespace

Result<HotlistSyncReport, ClearingError> ClearingClient::sync_hotlist(Hotlist& hotlist) {
    HotlistSyncReport report;
    report.from_version = hotlist.version();
    report.to_version = hotlist.version();
    std::map<Asn, bool> changes;  // the last word on each card wins
    for (std::uint32_t chunk_index = 0;; ++chunk_index) {
        if (chunk_index > iso8583::hotlist_chunk_index_max)
            return fail(ClearingErrorCode::protocol_error, "hotlist download exceeds 9999 chunks");
        auto answer = state_->network_exchange(iso8583::NetworkCode::hotlist_download,
                                               iso8583::encode_hotlist_position({report.from_version, chunk_index}));
        if (!answer) return Unexpected<ClearingError>{answer.error()};
        const std::string code(*answer->get(39));
        if (code != "00") return fail(ClearingErrorCode::refused, "hotlist download: the clearing answered " + code, code);
        const auto field63 = answer->get(63);
        if (!field63) return fail(ClearingErrorCode::protocol_error, "0810 hotlist chunk without field 63");
        auto chunk = iso8583::parse_hotlist_chunk(*field63);
        if (!chunk) return fail(ClearingErrorCode::protocol_error, chunk.error());
        // Each chunk's version is the one the terminal holds after it: they only grow.
        if (chunk_index > 0 && chunk->version < report.to_version) {
            return fail(ClearingErrorCode::protocol_error, "hotlist chunk versions go backwards; sync again");
        }
        report.to_version = chunk->version;
        report.chunks++;
        for (const iso8583::HotlistEntry& entry : chunk->entries) changes[entry.asn] = entry.added;
        if (!chunk->more) break;
    }
    if (report.to_version == report.from_version && changes.empty()) return report;
    if (report.to_version == report.from_version) {
        return fail(ClearingErrorCode::protocol_error, "hotlist changes without a new version");
    }
    std::vector<std::pair<Asn, BlockReason>> added;
    std::vector<Asn> removed;
    for (const auto& [asn, blocked] : changes) {
        // The download carries no reason: a card the issuer blocked.
        if (blocked) added.emplace_back(asn, BlockReason::issuer);
        else removed.push_back(asn);
    }
    report.added = added.size();
    report.removed = removed.size();
    if (report.to_version < report.from_version) {
        // A host restored behind this terminal answers with its whole log from version 0 (ISO8583.md
        // §4.6): that log, applied to an empty list, is its list.
        report.replaced = true;
        if (auto replaced = hotlist.replace(report.to_version, added); !replaced) {
            return fail(ClearingErrorCode::hotlist_error, replaced.error().message);
        }
        return report;
    }
    HotlistDelta delta{report.from_version, report.to_version, std::move(added), std::move(removed)};
    if (auto applied = hotlist.apply(delta); !applied) return fail(ClearingErrorCode::hotlist_error, applied.error().message);
    return report;
}

// ---- reconciliation ------------------------------------------------------------------------------

Result<ReconcileReport, ClearingError> ClearingClient::reconcile() {
    State& s = *state_;
    auto stan = s.take_stan();
    if (!stan) return Unexpected<ClearingError>{stan.error()};
    ReconcileReport report;
    report.batch_number = s.batch().batch_number;
    report.totals = s.batch().totals;
    const BatchTotals& t = report.totals;
    Message m(iso8583::request_mti(iso8583::MessageType::reconciliation));
    m.set_number(11, *stan, 6);
    m.set(41, s.options.terminal_id);
    m.set(60, iso8583::batch_field(report.batch_number));
    iso8583::set_batch_totals(m, t);
    COCONUT_ASSERT(iso8583::batch_totals_of(m) == t, "the 0500 carries the batch totals");
    auto answer = s.exchange(m);
    if (!answer) return Unexpected<ClearingError>{answer.error()};
    const std::string code(*answer->get(39));
    if (auto net = answer->get(97)) report.host_net = std::string(*net);
    if (code == "95") return report;
    if (code != "00") return fail(ClearingErrorCode::refused, "reconciliation: the clearing answered " + code, code);
    report.balanced = true;
    if (auto closed = s.close_batch(); !closed) return Unexpected<ClearingError>{closed.error()};
    return report;
}

}  // namespace coconut::sdk
