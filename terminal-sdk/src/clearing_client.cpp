// ISO 8583 client of the clearing daemon: blocking calls over Boost.Asio with a deadline on every read.
#include <coconut/iso8583/card_data.hpp>
#include <coconut/sdk/clearing_client.hpp>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>

#include <cassert>
#include <charconv>
#include <unordered_map>

namespace coconut::sdk {

namespace asio = boost::asio;
using asio::ip::tcp;
using iso8583::Message;

namespace {

constexpr std::uint32_t stan_max = 999'999;  // field 11 is n6; 0 is not used
constexpr std::uint32_t batch_number_max = 999'999;

Unexpected<ClearingError> fail(ClearingErrorCode code, std::string message, std::string response_code = {}) {
    return Unexpected<ClearingError>{ClearingError{code, std::move(message), std::move(response_code)}};
}

bool acknowledging(std::string_view response_code) {
    return response_code == "00" || response_code == "59" || response_code == "94";
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
    }
    return "?";
}

Result<ClearingEndpoint, std::string> parse_clearing_endpoint(std::string_view text) {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos || colon == 0) {
        return Unexpected<std::string>{"'" + std::string(text) + "': expected HOST:PORT"};
    }
    unsigned port = 0;
    const auto digits = text.substr(colon + 1);
    const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), port);
    if (ec != std::errc() || end != digits.data() + digits.size() || port == 0 || port > 65535) {
        return Unexpected<std::string>{"'" + std::string(text) + "': the port must be 1-65535"};
    }
    return ClearingEndpoint{std::string(text.substr(0, colon)), static_cast<std::uint16_t>(port)};
}

std::string encode_card_data(const TransactionRecord& r) {
    iso8583::PurseTransaction t;
    t.asn = r.asn;
    t.type = r.type;
    t.balance_before_fen = r.balance_before_fen;
    t.offline_atc = r.atc;
    t.terminal_serial = r.terminal_serial;
    t.terminal_id = r.terminal_id;
    t.when = r.when;
    t.tac = r.tac;
    return iso8583::encode_purse_transaction(t);
}

Message upload_request(const TransactionRecord& r, std::uint32_t stan, const ClearingOptions& options) {
    const std::string asn = r.asn_digits();
    const std::string date = bcd_to_digits(r.when.date);
    Message m("0320");
    m.set(2, asn.substr(4));  // the logical card number: the ASN's rightmost 16 digits (DESIGN §4)
    m.set(3, "000000");
    m.set_number(4, r.amount_fen, 12);
    m.set_number(11, stan, 6);
    m.set(12, bcd_to_digits(r.when.time));
    m.set(13, date.substr(4, 4));
    m.set(25, "08");
    m.set(41, options.terminal_id);
    m.set_number(60, options.batch_number, 6);
    m.set(62, encode_card_data(r));
    return m;
}

struct ClearingClient::State {
    asio::io_context io;
    tcp::socket socket{io};
    ClearingOptions options;
    std::uint32_t next_stan = 1;
    UploadReport report;
    std::array<std::uint8_t, iso8583::frame_size_max> buffer{};

    std::uint32_t take_stan() {
        const std::uint32_t stan = next_stan;
        next_stan = next_stan == stan_max ? 1 : next_stan + 1;
        return stan;
    }

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

    Status<ClearingError> send(const Message& m) {
        auto encoded = iso8583::encode(m, iso8583::coconut_dictionary());
        if (!encoded) return fail(ClearingErrorCode::bad_option, "cannot encode " + m.mti() + ": " + iso8583::describe(encoded.error()));
        auto framed = iso8583::frame(*encoded);
        if (!framed) return fail(ClearingErrorCode::bad_option, "message too large");
        boost::system::error_code ec;
        asio::write(socket, asio::buffer(*framed), ec);  // small; the kernel buffer holds a full window
        if (ec) return fail(ClearingErrorCode::closed, "send: " + ec.message());
        return Ok{};
    }

    Result<Message, ClearingError> receive() {
        std::size_t body_size = 0;
        auto ec = run(options.response_timeout, [&](boost::system::error_code& result) {
            asio::async_read(socket, asio::buffer(buffer.data(), iso8583::frame_header_size),
                             [&](boost::system::error_code e, std::size_t) { result = e; });
        });
        if (ec == asio::error::timed_out) return fail(ClearingErrorCode::timeout, "no answer from the clearing in time");
        if (ec) return fail(ClearingErrorCode::closed, "the clearing closed the connection: " + ec.message());
        body_size = (std::size_t{buffer[0]} << 8) | buffer[1];
        if (body_size == 0 || body_size > iso8583::message_size_max) {
            return fail(ClearingErrorCode::protocol_error, "frame header announces " + std::to_string(body_size) + " bytes");
        }
        ec = run(options.response_timeout, [&](boost::system::error_code& result) {
            asio::async_read(socket, asio::buffer(buffer.data(), body_size),
                             [&](boost::system::error_code e, std::size_t) { result = e; });
        });
        if (ec == asio::error::timed_out) return fail(ClearingErrorCode::timeout, "answer cut off");
        if (ec) return fail(ClearingErrorCode::closed, "the clearing closed the connection: " + ec.message());
        auto parsed = iso8583::parse(ByteView(buffer.data(), body_size), iso8583::coconut_dictionary());
        if (!parsed) return fail(ClearingErrorCode::protocol_error, "answer does not parse: " + iso8583::describe(parsed.error()));
        if (!parsed->get(39) || !parsed->get(11)) return fail(ClearingErrorCode::protocol_error, "answer without 39 or 11");
        return std::move(parsed).value();
    }

    Status<ClearingError> network(std::uint32_t code) {
        Message m("0800");
        m.set_number(11, take_stan(), 6);
        m.set(41, options.terminal_id);
        m.set_number(70, code, 3);
        if (auto s = send(m); !s) return s;
        auto answer = receive();
        if (!answer) return Unexpected<ClearingError>{answer.error()};
        if (answer->mti() != "0810" || answer->get(11) != m.get(11)) {
            return fail(ClearingErrorCode::protocol_error, "answer " + answer->mti() + " does not match the 0800");
        }
        const std::string code_text(*answer->get(39));
        if (code_text != "00") return fail(ClearingErrorCode::refused, "the clearing answered " + code_text, code_text);
        return Ok{};
    }
};

ClearingClient::ClearingClient(std::unique_ptr<State> state) : state_(std::move(state)) {}
ClearingClient::~ClearingClient() = default;

Result<std::unique_ptr<ClearingClient>, ClearingError> ClearingClient::connect(const ClearingEndpoint& endpoint,
                                                                                ClearingOptions options) {
    if (options.terminal_id.size() != 8) {
        return fail(ClearingErrorCode::bad_option, "terminal id '" + options.terminal_id + "': field 41 is exactly 8 characters");
    }
    if (options.in_flight == 0 || options.in_flight > clearing_in_flight_max) {
        return fail(ClearingErrorCode::bad_option, "in-flight must be 1-" + std::to_string(clearing_in_flight_max));
    }
    if (options.batch_number > batch_number_max) return fail(ClearingErrorCode::bad_option, "batch number above 999999");
    auto state = std::make_unique<State>();
    state->options = std::move(options);
    tcp::resolver resolver(state->io);
    boost::system::error_code ec;
    const auto endpoints = resolver.resolve(endpoint.host, std::to_string(endpoint.port), ec);
    if (ec) return fail(ClearingErrorCode::connect_failed, endpoint.host + ": " + ec.message());
    ec = state->run(state->options.connect_timeout, [&](boost::system::error_code& result) {
        asio::async_connect(state->socket, endpoints, [&](boost::system::error_code e, const tcp::endpoint&) { result = e; });
    });
    if (ec) {
        return fail(ClearingErrorCode::connect_failed,
                    "cannot connect to " + endpoint.host + ":" + std::to_string(endpoint.port) + ": " + ec.message());
    }
    state->socket.set_option(tcp::no_delay(true), ec);
    return std::unique_ptr<ClearingClient>(new ClearingClient(std::move(state)));
}

Status<ClearingError> ClearingClient::sign_on() { return state_->network(1); }
Status<ClearingError> ClearingClient::sign_off() { return state_->network(2); }
const UploadReport& ClearingClient::last_report() const { return state_->report; }

Result<UploadReport, ClearingError> ClearingClient::upload(TransactionQueue& queue) {
    State& s = *state_;
    s.report = {};
    std::vector<QueuedTransaction> work;
    for (auto& q : queue.batch(queue.size())) {
        if (q.record.type == 0x06 || q.record.type == 0x09) {
            work.push_back(std::move(q));
        } else {
            s.report.skipped++;
        }
    }
    // One acknowledgement per chunk: its records are deleted in one durable write.
    const std::size_t chunk_max = QueueLimits{}.ack_batch_max;
    for (std::size_t start = 0; start < work.size(); start += chunk_max) {
        const std::size_t end = std::min(work.size(), start + chunk_max);
        std::unordered_map<std::string, std::uint64_t> pending;  // STAN → queue sequence
        std::vector<std::uint64_t> acknowledged;
        std::optional<ClearingError> failure;
        std::size_t next = start;
        while (!failure && (next < end || !pending.empty())) {
            while (next < end && pending.size() < s.options.in_flight) {
                const Message request = upload_request(work[next].record, s.take_stan(), s.options);
                if (auto sent = s.send(request); !sent) {
                    failure = sent.error();
                    break;
                }
                pending.emplace(std::string(*request.get(11)), work[next].sequence);
                s.report.sent++;
                ++next;
            }
            if (failure || pending.empty()) break;
            auto answer = s.receive();
            if (!answer) {
                failure = answer.error();
                break;
            }
            const auto found = pending.find(std::string(*answer->get(11)));
            if (answer->mti() != "0330" || found == pending.end()) {
                failure = ClearingError{ClearingErrorCode::protocol_error,
                                        "answer " + answer->mti() + " STAN " + std::string(*answer->get(11)) + " matches no upload", {}};
                break;
            }
            const std::string code(*answer->get(39));
            s.report.by_response_code[code]++;
            if (acknowledging(code)) {
                acknowledged.push_back(found->second);
                if (code == "00") s.report.approved++;
                if (code == "59") s.report.suspense++;
                if (code == "94") s.report.duplicates++;
            } else {
                s.report.kept++;
            }
            pending.erase(found);
        }
        if (!acknowledged.empty()) {
            if (auto done = queue.acknowledge(acknowledged); !done) {
                return fail(ClearingErrorCode::queue_error, "acknowledge: " + done.error().message);
            }
            s.report.acknowledged += acknowledged.size();
        }
        if (failure) return Unexpected<ClearingError>{*failure};
    }
    return s.report;
}

}  // namespace coconut::sdk
