// The ISO 8583 listener: one Session per connection, on one I/O thread (so engine session state and
// the connection's counters need no locks). Every read has a deadline; frames are bounded by
// iso8583::frame_size_max; a connection has at most in_flight_per_connection_max requests being
// processed — beyond that it stops reading until answers go out. With ServerOptions::tls a connection
// first completes a mutual-TLS handshake within handshake_timeout (coconut::tls verifies the client
// certificate against the island CA); its terminal id becomes the session's authenticated_terminal_id.
#include <coconut/clearing/server.hpp>
#include <coconut/core/admission.hpp>
#include <coconut/core/assert.hpp>
#include <coconut/core/log.hpp>
#include <coconut/tls/tls.hpp>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>

#include <cstdio>
#include <cstring>
#include <vector>
#include <set>

namespace coconut::clearing {

namespace asio = boost::asio;
using asio::ip::tcp;

namespace {
class SessionBase;
}

struct Server::State : std::enable_shared_from_this<State> {
    State(asio::io_context& io_context, Engine& e, ServerOptions o)
        : io(io_context), engine(e), options(std::move(o)), acceptor(io_context),
          addresses({options.connections_per_address, options.connections_max}),
          terminals({options.connections_per_terminal, core::AdmissionLimits::unlimited}), backoff(io_context.get_executor()) {}
    asio::io_context& io;
    Engine& engine;
    ServerOptions options;
    tcp::acceptor acceptor;
    core::AddressAdmission addresses;   // every connection, from accept: per client address and in total
    core::IdentityAdmission terminals;  // TLS connections, from the handshake: per terminal certificate
    core::AcceptBackoff backoff;
    ServerStats stats;
    std::set<std::shared_ptr<SessionBase>> sessions;
    bool stopping = false;
    std::function<void()> on_drained;

    void accept();
    void closed(const std::shared_ptr<SessionBase>& session);
};

namespace {

// What the server's connection set holds: a session of either stream type.
class SessionBase {
public:
    virtual ~SessionBase() = default;
    virtual void start() = 0;
    virtual void drain() = 0;
};

using TlsStream = asio::ssl::stream<tcp::socket>;

// One connection over `Stream`: tcp::socket (--insecure-terminals) or TlsStream.
template <class Stream>
class Session final : public SessionBase, public std::enable_shared_from_this<Session<Stream>> {
public:
    static constexpr bool tls = std::is_same_v<Stream, TlsStream>;

    template <class... Context>
    Session(tcp::socket socket, std::shared_ptr<Server::State> server, core::AddressTicket address, Context&... context)
        : socket_(std::move(socket), context...), timer_(socket_.get_executor()), sign_on_timer_(socket_.get_executor()),
          server_(std::move(server)), address_(std::move(address)) {
        boost::system::error_code ignored;
        socket_.lowest_layer().set_option(tcp::no_delay(true), ignored);  // answers are small and latency-bound
    }

    void start() override {
        // The sign-on deadline runs from accept: whatever a peer sends (an echo, a handshake it stalls),
        // it holds a slot for at most this long unless its terminal signs on. Only when the engine
        // requires a sign-on: otherwise (serve --allow-without-sign-on) terminals upload without one,
        // and the deadline would close every connection mid-upload, its answers in flight lost.
        if (server_->options.sign_on_timeout.count() > 0 && server_->engine.options().require_sign_on) {
            sign_on_timer_.expires_after(server_->options.sign_on_timeout);
            sign_on_timer_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
                if (ec || self->closed_ || !self->state_.signed_on.empty()) return;
                self->server_->stats.sign_on_timeouts++;
                self->close();
            });
        }
        if constexpr (tls) {
            handshake();
        } else {
            read_more();
        }
    }

    // Graceful stop: no more reads; close once every request in hand is answered and written.
    void drain() override {
        draining_ = true;
        boost::system::error_code ignored;
        if (handshaking_) return close();
        if (reading_) socket_.lowest_layer().cancel(ignored);
        finish_if_done();
    }

private:
    using std::enable_shared_from_this<Session<Stream>>::shared_from_this;

    // The TLS handshake, bounded by handshake_timeout: a peer that stalls it (or never starts) is closed
    // and counted, like one whose certificate does not verify.
    void handshake() {
        handshaking_ = true;
        timer_.expires_after(server_->options.handshake_timeout);
        timer_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
            if (ec || !self->handshaking_ || self->closed_) return;
            self->server_->stats.tls_handshake_failures++;
            self->server_->stats.timeouts++;
            self->close();
        });
        socket_.async_handshake(asio::ssl::stream_base::server, [self = shared_from_this()](boost::system::error_code ec) {
            self->handshaking_ = false;
            self->timer_.cancel();
            if (self->closed_) return self->finish_if_done();
            if (ec) {
                self->server_->stats.tls_handshake_failures++;
                return self->close();
            }
            // The server context verified the chain to the island CA; a certificate that is not a
            // terminal's (another profile, a CN that is not a field 41) does not log in.
            auto terminal_id = coconut::tls::terminal_id_of_peer(self->socket_.native_handle());
            if (!terminal_id) {
                self->server_->stats.tls_handshake_failures++;
                return self->close();
            }
            (coconut::tls::ClientContext::resumed(self->socket_.native_handle()) ? self->server_->stats.tls_handshakes_resumed
                                                                                 : self->server_->stats.tls_handshakes_full)++;
            self->terminal_ = self->server_->terminals.admit(*terminal_id);
            if (!self->terminal_) {
                self->server_->stats.connections_refused_per_terminal++;
                return self->close();
            }
            COCONUT_ASSERT(!self->state_.authenticated_terminal_id, "a connection logs in once");
            self->state_.authenticated_terminal_id = std::move(*terminal_id);
            self->read_more();
        });
    }

    void read_more() {
        if (closed_ || draining_ || reading_ || in_flight_ >= server_->options.in_flight_per_connection_max) return;
        if (have_ == buffer_.size()) return close();  // cannot happen: frame_size() bounds a frame
        COCONUT_ASSERT(!handshaking_, "no reads before the TLS handshake completes");
        reading_ = true;
        timer_.expires_after(have_ == 0 ? server_->options.read_idle_timeout : server_->options.frame_timeout);
        timer_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
            if (ec || !self->reading_ || self->closed_) return;
            self->server_->stats.timeouts++;
            self->close();
        });
        socket_.async_read_some(asio::buffer(buffer_.data() + have_, buffer_.size() - have_),
                                [self = shared_from_this()](boost::system::error_code ec, std::size_t n) { self->on_read(ec, n); });
    }

    void on_read(boost::system::error_code ec, std::size_t n) {
        reading_ = false;
        timer_.cancel();
        if (closed_) return;
        if (ec) {
            if (draining_ && ec == asio::error::operation_aborted) return finish_if_done();
            return close();
        }
        COCONUT_ASSERT(n <= buffer_.size() - have_);
        have_ += n;
        process_frames();
        read_more();
    }

    void process_frames() {
        while (!closed_ && in_flight_ < server_->options.in_flight_per_connection_max) {
            auto size = iso8583::frame_size(ByteView(buffer_.data(), have_));
            if (!size) {  // oversize or zero length: no resynchronisation is possible
                server_->stats.closed_bad_frame++;
                return close();
            }
            if (*size == 0) return;
            COCONUT_ASSERT(*size > iso8583::frame_header_size && *size <= have_, "a whole frame is in the buffer");
            handle_frame(ByteView(buffer_.data() + iso8583::frame_header_size, *size - iso8583::frame_header_size));
            std::memmove(buffer_.data(), buffer_.data() + *size, have_ - *size);
            have_ -= *size;
        }
    }

    void handle_frame(ByteView frame) {
        auto message = iso8583::parse(frame, iso8583::coconut_dictionary());
        if (!message) {
            auto answer = format_error_response(frame);
            if (!answer) {
                server_->stats.closed_bad_frame++;
                return close();
            }
            server_->stats.format_errors++;
            return send(*answer);
        }
        if (!iso8583::response_mti(message->mti())) {  // a response or an MTI we cannot answer
            server_->stats.closed_bad_frame++;
            return close();
        }
        COCONUT_ASSERT(!handling_, "one request at a time into the engine");
        in_flight_++;
        COCONUT_ASSERT(in_flight_ <= server_->options.in_flight_per_connection_max, "the connection's window holds");
        handling_ = true;
        // The request's id on every line written about it, here and where the engine continues it.
        const log::RequestScope request_id(log::new_request_id('t'));
        server_->engine.handle(std::move(*message), state_, [self = shared_from_this()](iso8583::Message response) {
            // Already on the I/O thread (a booking's answer the engine built there): answer now. From
            // inside handle() (an immediate answer: process_frames is mid-loop) or from another thread
            // (writer, HSM client): through the I/O thread's queue.
            if (self->server_->io.get_executor().running_in_this_thread() && !self->handling_) return self->on_answer(response);
            asio::post(self->socket_.get_executor(), [self, response = std::move(response)] { self->on_answer(response); });
        });
        handling_ = false;
    }

    void on_answer(const iso8583::Message& response) {
        COCONUT_ASSERT(in_flight_ > 0, "an answer for a request in flight");
        // An answer is a response (checked against its request by the engine): never a request MTI.
        COCONUT_ASSERT(!iso8583::response_mti(response.mti()) && response.has(39));
        in_flight_--;
        if (!closed_) send(response);
        if (closed_) return finish_if_done();
        // The window had room again: frames already buffered first, then the socket.
        process_frames();
        read_more();
        finish_if_done();
    }

    void send(const iso8583::Message& response) {
        auto encoded = iso8583::encode(response, iso8583::coconut_dictionary());
        if (!encoded) {  // the engine built a message our own profile refuses: a bug
            log::error("iso8583", "cannot encode a " + response.mti() + " response: " + iso8583::describe(encoded.error()));
            return close();
        }
        auto framed = iso8583::frame(*encoded);
        if (!framed) return close();
        writes_.push_back(std::move(*framed));
        // Start the write after the handlers already queued (the rest of a commit's answers) have
        // added theirs, so they share it.
        if (!writing_ && !write_posted_) {
            write_posted_ = true;
            asio::post(socket_.get_executor(), [self = shared_from_this()] {
                self->write_posted_ = false;
                if (self->closed_ || self->writing_ || self->writes_.empty()) return self->finish_if_done();
                self->write_next();
            });
        }
    }

    // Every answer queued so far goes out in one gather write (one syscall for a commit's worth of
    // answers to this terminal); answers queued meanwhile wait for the next one.
    void write_next() {
        COCONUT_ASSERT(!writing_ && sending_.empty() && !writes_.empty());
        writing_ = true;
        std::swap(writes_, sending_);
        buffers_.clear();
        if constexpr (tls) {
            // Asio's TLS stream encrypts one buffer per record and write: the answers go into one buffer
            // first, so a commit's worth of answers is one record (up to 16 KiB each) and one send.
            coalesced_.clear();
            for (const Bytes& frame : sending_) coalesced_.insert(coalesced_.end(), frame.begin(), frame.end());
            buffers_.emplace_back(asio::buffer(coalesced_));
        } else {
            for (const Bytes& frame : sending_) buffers_.emplace_back(asio::buffer(frame));
        }
        asio::async_write(socket_, buffers_, [self = shared_from_this()](boost::system::error_code ec, std::size_t) {
            self->writing_ = false;
            self->sending_.clear();
            if (self->closed_) return self->finish_if_done();
            if (ec) return self->close();
            if (!self->writes_.empty()) return self->write_next();
            self->finish_if_done();
        });
    }

    void finish_if_done() {
        if (draining_ && !closed_ && in_flight_ == 0 && !writing_ && !write_posted_ && writes_.empty() && !reading_) close();
        COCONUT_ASSERT(!reported_ || closed_, "a session is reported closed only once it is closed");
        if (closed_ && in_flight_ == 0 && !writing_ && !write_posted_ && !reported_) {
            reported_ = true;
            server_->closed(shared_from_this());
        }
    }

    void close() {
        if (!closed_) {
            closed_ = true;
            boost::system::error_code ignored;
            timer_.cancel();
            sign_on_timer_.cancel();
            socket_.lowest_layer().shutdown(tcp::socket::shutdown_both, ignored);
            socket_.lowest_layer().close(ignored);
        }
        finish_if_done();
    }

    Stream socket_;
    asio::steady_timer timer_;
    asio::steady_timer sign_on_timer_;
    std::shared_ptr<Server::State> server_;
    core::AddressTicket address_;    // the connection's slot, released with the session
    core::IdentityTicket terminal_;  // TLS: its terminal's slot, from the handshake
    std::array<std::uint8_t, iso8583::frame_size_max> buffer_{};
    std::size_t have_ = 0;
    std::vector<Bytes> writes_;   // answers waiting for the next write
    std::vector<Bytes> sending_;  // answers of the write in progress
    std::vector<asio::const_buffer> buffers_;
    Bytes coalesced_;  // TLS: the answers of one write, contiguous
    SessionState state_;
    std::size_t in_flight_ = 0;
    bool reading_ = false;
    bool writing_ = false;
    bool write_posted_ = false;
    bool handling_ = false;  // inside engine.handle(): answers must not re-enter process_frames
    bool handshaking_ = false;
    bool draining_ = false;
    bool closed_ = false;
    bool reported_ = false;
};

}  // namespace

void Server::State::accept() {
    acceptor.async_accept([self = shared_from_this()](boost::system::error_code ec, tcp::socket socket) {
        if (self->stopping) return;
        if (!ec) {
            boost::system::error_code peer_error;
            const auto peer = socket.remote_endpoint(peer_error);
            auto ticket = peer_error ? core::AddressTicket() : self->addresses.admit(peer.address());
            if (!ticket) {
                (ticket.refusal() == core::Refusal::per_key ? self->stats.connections_refused_per_address
                                                            : self->stats.connections_refused)++;
                boost::system::error_code ignored;
                socket.close(ignored);
            } else {
                self->stats.connections_accepted++;
                std::shared_ptr<SessionBase> session;
                if (self->options.tls) {
                    session = std::make_shared<Session<TlsStream>>(std::move(socket), self, std::move(ticket), *self->options.tls);
                } else {
                    session = std::make_shared<Session<tcp::socket>>(std::move(socket), self, std::move(ticket));
                }
                self->sessions.insert(session);
                session->start();
            }
        }
        // Out of descriptors (EMFILE …): wait and retry instead of spinning on the same error.
        if (self->backoff.after(ec, [self] { self->accept(); }) == core::AcceptStep::accept_later) self->stats.accept_pauses++;
    });
}

void Server::State::closed(const std::shared_ptr<SessionBase>& session) {
    const std::size_t erased = sessions.erase(session);
    COCONUT_ASSERT(erased == 1, "a session is closed once");
    if (stopping && sessions.empty() && on_drained) {
        auto done = std::move(on_drained);
        on_drained = nullptr;
        asio::post(io, std::move(done));
    }
}

Server::Server(asio::io_context& io, Engine& engine, ServerOptions options)
    : state_(std::make_shared<State>(io, engine, std::move(options))) {
    const tcp::endpoint endpoint(asio::ip::make_address(state_->options.host), state_->options.port);
    state_->acceptor.open(endpoint.protocol());
    state_->acceptor.set_option(tcp::acceptor::reuse_address(true));
    state_->acceptor.bind(endpoint);
    state_->acceptor.listen(asio::socket_base::max_listen_connections);
    state_->accept();
}

Server::~Server() {
    boost::system::error_code ignored;
    state_->backoff.cancel();
    state_->acceptor.close(ignored);
}

std::uint16_t Server::port() const { return state_->acceptor.local_endpoint().port(); }

const ServerStats& Server::stats() const { return state_->stats; }

void Server::shutdown(std::function<void()> done) {
    state_->stopping = true;
    boost::system::error_code ignored;
    state_->backoff.cancel();
    state_->acceptor.close(ignored);
    state_->on_drained = std::move(done);
    if (state_->sessions.empty()) {
        auto callback = std::move(state_->on_drained);
        state_->on_drained = nullptr;
        asio::post(state_->io, std::move(callback));
        return;
    }
    const auto sessions = state_->sessions;  // drain() may erase
    for (const auto& session : sessions) session->drain();
}

}  // namespace coconut::clearing
