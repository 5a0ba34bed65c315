#include <coconut/core/assert.hpp>
#include <coconut/core/log.hpp>
#include <coconut/hsm/ca.hpp>
#include <coconut/hsm/client.hpp>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <fmt/format.h>

#include "secure_buffer.hpp"

#include <algorithm>
#include <deque>
#include <optional>

namespace coconut::hsm {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;

// How a connection ended: the Link's rules (client.hpp) depend on it.
enum class End {
    open,         // not ended
    timeout,      // no hello / no answer within our timeout: the HSM hangs
    peer,         // the HSM closed it or it broke (end of stream, reset, fatal notice, failed write)
    unreachable,  // it could not be opened (resolve, connect, hello refused)
    protocol,     // the HSM's answer broke the protocol (bad MAC, unexpected seq): not retried
    local,        // closed by this side
    abandoned,    // closed by a Link that moved to another endpoint (rule 5): its requests go there
};

struct AsyncClient::State : std::enable_shared_from_this<AsyncClient::State> {
    State(asio::any_io_executor executor, wire::ClientCredentials creds, ClientOptions opts)
        : State(std::move(executor), std::move(creds.client_id), detail::make_guarded<ClientKey>(creds.key), opts) {}
    State(asio::any_io_executor executor, std::string id, std::shared_ptr<const ClientKey> client_key, ClientOptions opts)
        : strand(asio::make_strand(executor)), socket(strand), resolver(strand), timer(strand), client_id(std::move(id)),
          key(std::move(client_key)), options(opts) {}

    struct Pending {
        std::uint64_t seq = 0;
        Handler<Bytes> handler;
    };

    asio::strand<asio::any_io_executor> strand;
    tcp::socket socket;
    tcp::resolver resolver;
    asio::steady_timer timer;
    std::string client_id;
    std::shared_ptr<const ClientKey> key;  // in guarded, locked memory
    ClientOptions options;
    wire::Nonce nonce{};
    bool connecting = false;
    bool connected = false;
    bool closed = false;
    // Requests made while the connection is being set up: sent once the hello gives the nonce.
    struct Waiting {
        wire::Command command;
        Bytes payload;
        Handler<Bytes> handler;
    };
    std::deque<Waiting> waiting;
    Failure closed_because{Errc::closed, "the client is not connected"};
    End end = End::open;
    std::function<void()> on_end;                       // called once, when the connection ends (before its handlers fail)
    std::chrono::steady_clock::time_point last_sent{};  // the last request handed to call()
    std::uint64_t next_seq = 1;
    std::uint64_t phase = 0;
    std::deque<Pending> outstanding;  // in seq order; the front is the next response expected
    std::deque<Bytes> write_queue;
    bool writing = false;
    std::array<std::uint8_t, wire::length_prefix_bytes> length{};
    Bytes body;

    void arm(std::chrono::milliseconds timeout, std::string what) {
        const std::uint64_t id = ++phase;
        timer.expires_after(timeout);
        timer.async_wait([self = shared_from_this(), id, timeout, what = std::move(what)](const error_code& ec) {
            if (ec || id != self->phase) return;
            self->fail_all({Errc::timeout, fmt::format("the HSM did not answer within {} ms while {}", timeout.count(), what)},
                           End::timeout);
        });
    }
    void disarm() {
        ++phase;
        timer.cancel();
    }

    // The connection is finished: every outstanding request fails with `why`.
    void fail_all(Failure why, End how) {
        const bool ending = !closed;
        if (!closed) {
            closed = true;
            closed_because = why;
            end = how;
        }
        connected = false;
        connecting = false;
        disarm();
        error_code ignored;
        resolver.cancel();
        socket.shutdown(tcp::socket::shutdown_both, ignored);
        socket.close(ignored);
        write_queue.clear();
        auto pending = std::move(outstanding);
        outstanding.clear();
        auto queued = std::move(waiting);
        waiting.clear();
        if (ending && on_end) std::exchange(on_end, nullptr)();
        for (Pending& p : pending) p.handler(Unexpected<Failure>{closed_because});
        for (Waiting& w : queued) w.handler(Unexpected<Failure>{closed_because});
    }

    // ---- connect + hello ----
    void connect(const wire::Endpoint& endpoint, std::function<void(Status<Failure>)> handler) {
        if (closed || connected || connecting) {
            handler(fail(Errc::connection_failed, "connect() may be called once per client"));
            return;
        }
        connecting = true;
        auto done = std::make_shared<std::function<void(Status<Failure>)>>(std::move(handler));
        arm(options.connect_timeout, "connecting");
        const std::string where = fmt::format("{}:{}", endpoint.host, endpoint.port);
        resolver.async_resolve(endpoint.host, std::to_string(endpoint.port),
                               [self = shared_from_this(), done, where](const error_code& ec, tcp::resolver::results_type results) {
                                   if (self->closed) return (*done)(Unexpected<Failure>{self->closed_because});
                                   if (ec) return self->connect_failed(done, fmt::format("cannot resolve {}: {}", where, ec.message()));
                                   asio::async_connect(self->socket, results,
                                                       [self, done, where](const error_code& ec2, const tcp::endpoint&) {
                                                           if (self->closed) return (*done)(Unexpected<Failure>{self->closed_because});
                                                           if (ec2)
                                                               return self->connect_failed(done, fmt::format("cannot connect to {}: {}",
                                                                                                             where, ec2.message()));
                                                           error_code ignored;
                                                           self->socket.set_option(tcp::no_delay(true), ignored);
                                                           self->read_hello(done);
                                                       });
                               });
    }

    void connect_failed(const std::shared_ptr<std::function<void(Status<Failure>)>>& done, std::string message) {
        fail_all({Errc::connection_failed, message}, End::unreachable);
        (*done)(Unexpected<Failure>{closed_because});
    }

    void read_hello(std::shared_ptr<std::function<void(Status<Failure>)>> done) {
        read_frame([self = shared_from_this(), done](Outcome<Bytes> frame) {
            if (!frame) {
                self->fail_all(frame.error(), End::unreachable);
                return (*done)(Unexpected<Failure>{self->closed_because});
            }
            auto hello = wire::decode_hello(frame.value());
            if (!hello) {
                self->fail_all(hello.error(), End::unreachable);
                return (*done)(Unexpected<Failure>{self->closed_because});
            }
            self->disarm();
            self->nonce = hello->nonce;
            self->connecting = false;
            self->connected = true;
            self->last_sent = std::chrono::steady_clock::now();  // quiet since the hello
            self->read_responses();
            auto queued = std::move(self->waiting);
            self->waiting.clear();
            for (Waiting& w : queued) self->call(w.command, std::move(w.payload), std::move(w.handler));
            (*done)(Ok{});
        });
    }

    // Reads one length-prefixed frame.
    void read_frame(std::function<void(Outcome<Bytes>)> handler) {
        asio::async_read(socket, asio::buffer(length),
                         [self = shared_from_this(), handler = std::move(handler)](const error_code& ec, std::size_t) mutable {
                             if (ec) return handler(self->link_failure(ec));
                             auto size = wire::decode_length(self->length);
                             if (!size) return handler(Unexpected<Failure>{size.error()});
                             self->body.resize(size.value());
                             asio::async_read(self->socket, asio::buffer(self->body),
                                              [self, handler = std::move(handler)](const error_code& ec2, std::size_t) {
                                                  if (ec2) return handler(self->link_failure(ec2));
                                                  handler(std::move(self->body));
                                              });
                         });
    }

    Unexpected<Failure> link_failure(const error_code& ec) {
        if (closed) return Unexpected<Failure>{closed_because};
        if (ec == asio::error::eof || ec == asio::error::connection_reset)
            return Unexpected<Failure>{{Errc::closed, "the HSM closed the connection"}};
        return Unexpected<Failure>{{Errc::connection_failed, ec.message()}};
    }

    void read_responses() {
        read_frame([self = shared_from_this()](Outcome<Bytes> frame) {
            if (self->closed) return;
            if (!frame) {
                const bool unparsable = frame.error().code == Errc::frame_too_large || frame.error().code == Errc::protocol_error;
                return self->fail_all(frame.error(), unparsable ? End::protocol : End::peer);
            }
            auto response = wire::decode_response(*self->key, self->nonce, frame.value());
            // A fatal notice (the idle timeout, a full server …) is the HSM closing the connection.
            if (!response) return self->fail_all(response.error(), wire::is_fatal_notice(frame.value()) ? End::peer : End::protocol);
            if (self->outstanding.empty() || self->outstanding.front().seq != response->seq)
                return self->fail_all({Errc::protocol_error, fmt::format("response for seq {} was not expected", response->seq)},
                                      End::protocol);
            Pending pending = std::move(self->outstanding.front());
            self->outstanding.pop_front();
            if (self->outstanding.empty()) self->disarm();
            else self->arm(self->options.request_timeout, "waiting for a response");
            if (response->status == Errc::ok) {
                pending.handler(Bytes(response->payload.begin(), response->payload.end()));
            } else {
                pending.handler(Unexpected<Failure>{{response->status, std::string(response->payload.begin(), response->payload.end())}});
            }
            self->read_responses();
        });
    }

    void call(wire::Command command, Bytes payload, Handler<Bytes> handler) {
        if (connecting) {
            if (waiting.size() >= options.max_outstanding)
                return handler(
                    fail(Errc::server_busy, fmt::format("{} requests are already waiting for the connection", options.max_outstanding)));
            waiting.push_back({command, std::move(payload), std::move(handler)});
            return;
        }
        if (!connected) return handler(Unexpected<Failure>{closed_because});
        if (outstanding.size() >= options.max_outstanding)
            return handler(
                fail(Errc::server_busy, fmt::format("{} requests are already outstanding on this connection", options.max_outstanding)));
        last_sent = std::chrono::steady_clock::now();
        const std::uint64_t seq = next_seq++;
        Bytes frame = wire::encode_request(*key, nonce, seq, client_id, static_cast<std::uint8_t>(command), payload);
        if (frame.size() - wire::length_prefix_bytes > wire::max_frame_bytes)
            return handler(fail(Errc::frame_too_large, "the request does not fit one frame"));
        if (outstanding.empty()) arm(options.request_timeout, "waiting for a response");
        outstanding.push_back({seq, std::move(handler)});
        write_queue.push_back(std::move(frame));
        if (!writing) write_next();
    }

    void write_next() {
        if (write_queue.empty() || closed) {
            writing = false;
            return;
        }
        writing = true;
        asio::async_write(socket, asio::buffer(write_queue.front()), [self = shared_from_this()](const error_code& ec, std::size_t) {
            if (self->closed) return;
            if (ec) return self->fail_all({Errc::connection_failed, fmt::format("sending to the HSM failed: {}", ec.message())}, End::peer);
            self->write_queue.pop_front();
            self->write_next();
        });
    }
};

std::shared_ptr<AsyncClient> AsyncClient::create(asio::any_io_executor executor, wire::ClientCredentials credentials,
                                                 ClientOptions options) {
    std::shared_ptr<AsyncClient> client(new AsyncClient());
    client->state_ = std::make_shared<State>(std::move(executor), std::move(credentials), options);
    return client;
}

AsyncClient::~AsyncClient() {
    asio::post(state_->strand, [state = state_] { state->fail_all({Errc::closed, "the client was destroyed"}, End::local); });
}

asio::any_io_executor AsyncClient::get_executor() const { return state_->strand; }

void AsyncClient::async_connect(const wire::Endpoint& endpoint, std::function<void(Status<Failure>)> handler) {
    asio::post(state_->strand,
               [state = state_, endpoint, handler = std::move(handler)]() mutable { state->connect(endpoint, std::move(handler)); });
}

void AsyncClient::async_call(wire::Command command, Bytes payload, Handler<Bytes> handler) {
    asio::post(state_->strand, [state = state_, command, payload = std::move(payload), handler = std::move(handler)]() mutable {
        state->call(command, std::move(payload), std::move(handler));
    });
}

void AsyncClient::close() {
    asio::post(state_->strand, [state = state_] { state->fail_all({Errc::closed, "the client closed the connection"}, End::local); });
}

namespace {
// Wraps a typed handler: decodes the payload with `decode`.
template <class T, class Decode>
AsyncClient::Handler<Bytes> decoding(AsyncClient::Handler<T> handler, Decode decode) {
    return [handler = std::move(handler), decode](Outcome<Bytes> payload) {
        if (!payload) return handler(Unexpected<Failure>{payload.error()});
        handler(decode(payload.value()));
    };
}

// Decodes a batch's verdicts: one per transaction sent.
auto verdicts_for(std::size_t expected) {
    return [expected](ByteView payload) -> Outcome<std::vector<Verdict>> {
        auto verdicts = wire::decode_verdicts(payload);
        if (verdicts && verdicts->size() != expected)
            return fail(Errc::protocol_error, fmt::format("{} verdicts for {} transactions", verdicts->size(), expected));
        return verdicts;
    };
}

// The typed commands AsyncClient and Link both offer, over their raw async_call (and strand, where a
// refusal is delivered): one encoder, decoder and batch check for each.
template <class Caller, class Strand>
void typed_verify_purchase_tacs(Caller& caller, const Strand& strand, const wire::PurchaseTacBatch& batch,
                                AsyncClient::Handler<std::vector<Verdict>> handler) {
    if (batch.items.size() > max_batch_items) {
        asio::post(strand, [handler = std::move(handler), n = batch.items.size()] {
            handler(fail(Errc::batch_too_large, fmt::format("a batch holds at most {} transactions, not {}", max_batch_items, n)));
        });
        return;
    }
    caller.async_call(wire::Command::verify_purchase_tacs, wire::encode(batch),
                      decoding<std::vector<Verdict>>(std::move(handler), verdicts_for(batch.items.size())));
}
template <class Caller>
void typed_verify_load_tac(Caller& caller, const LoadTac& request, AsyncClient::Handler<Verdict> handler) {
    caller.async_call(wire::Command::verify_load_tac, wire::encode(request), decoding<Verdict>(std::move(handler), wire::decode_verdict));
}
template <class Caller>
void typed_load_mac2(Caller& caller, const LoadRequest& request, AsyncClient::Handler<LoadAnswer> handler) {
    caller.async_call(wire::Command::load_mac2, wire::encode(request), decoding<LoadAnswer>(std::move(handler), wire::decode_load_answer));
}
template <class Caller>
void typed_verify_internal_auth(Caller& caller, const InternalAuth& request, AsyncClient::Handler<Verdict> handler) {
    caller.async_call(wire::Command::verify_internal_auth, wire::encode(request),
                      decoding<Verdict>(std::move(handler), wire::decode_verdict));
}
}  // namespace

void AsyncClient::async_key_info(const KeyRef& key, Handler<KeyInfo> handler) {
    async_call(wire::Command::key_info, wire::encode(key), decoding<KeyInfo>(std::move(handler), wire::decode_key_info_response));
}
void AsyncClient::async_derive_card_keys(const wire::DeriveCardKeys& request, Handler<CardKeySet> handler) {
    async_call(wire::Command::derive_card_keys, wire::encode(request), decoding<CardKeySet>(std::move(handler), wire::decode_card_key_set));
}
void AsyncClient::async_export_issuer_key(const wire::ExportIssuerKey& request, Handler<ExportedKey> handler) {
    async_call(wire::Command::export_issuer_key, wire::encode(request),
               decoding<ExportedKey>(std::move(handler), wire::decode_exported_key));
}
void AsyncClient::async_verify_purchase_tacs(const wire::PurchaseTacBatch& batch, Handler<std::vector<Verdict>> handler) {
    typed_verify_purchase_tacs(*this, state_->strand, batch, std::move(handler));
}
void AsyncClient::async_verify_load_tac(const LoadTac& request, Handler<Verdict> handler) {
    typed_verify_load_tac(*this, request, std::move(handler));
}
void AsyncClient::async_load_mac2(const LoadRequest& request, Handler<LoadAnswer> handler) {
    typed_load_mac2(*this, request, std::move(handler));
}
void AsyncClient::async_verify_internal_auth(const InternalAuth& request, Handler<Verdict> handler) {
    typed_verify_internal_auth(*this, request, std::move(handler));
}

// ---- link -------------------------------------------------------------------------------------------

std::string_view breaker_state_name(BreakerState state) {
    switch (state) {
        case BreakerState::closed: return "closed";
        case BreakerState::open: return "open";
        case BreakerState::half_open: return "half_open";
    }
    return "unknown";
}

bool Link::retry_safe(wire::Command command) {
    using wire::Command;
    switch (command) {
        case Command::key_info:
        case Command::derive_card_keys:
        case Command::export_issuer_key:
        case Command::verify_purchase_tacs:
        case Command::verify_load_tac:
        case Command::load_mac2:
        case Command::verify_internal_auth:
        case Command::ca_certificate:
        case Command::maintenance_mac: return true;
        case Command::sign_certificate: return false;
    }
    return false;
}

// All of the link's work, and its connections' (whose strands run inside the link's), on one strand.
struct Link::State : std::enable_shared_from_this<Link::State> {
    State(asio::any_io_executor executor, std::vector<wire::Endpoint> where, wire::ClientCredentials creds, LinkOptions opts)
        : strand(asio::make_strand(executor)), endpoints(std::move(where)), client_id(std::move(creds.client_id)),
          key(detail::make_guarded<ClientKey>(creds.key)), options(std::move(opts)), probe_timer(strand) {
        COCONUT_ASSERT(!endpoints.empty() && endpoints.size() <= wire::max_endpoints);
        options.connections_max = std::max<std::size_t>(options.connections_max, 1);
        if (!options.keepalive_tac_label.empty()) keepalive_payload = wire::encode(wire::PurchaseTacBatch{options.keepalive_tac_label, {}});
    }

    struct Connection {
        explicit Connection(asio::strand<asio::any_io_executor>& strand) : quiet_timer(strand) {}
        std::uint64_t id = 0;
        std::size_t endpoint = 0;  // index in `endpoints`
        std::shared_ptr<AsyncClient::State> client;
        std::size_t in_flight = 0;  // requests handed to it whose handler has not run
        asio::steady_timer quiet_timer;
    };

    // One request on its way through the rules; the payload is kept to send it again (rules 2 and 5).
    struct Request {
        wire::Command command = wire::Command::key_info;
        Bytes payload;
        Handler<Bytes> handler;
        bool may_send_again = false;       // retry_safe(command), and not a keep-alive
        bool sent_again = false;           // rule 2 used
        std::size_t endpoints_failed = 0;  // endpoints that failed it (rule 5): at endpoints.size() it fails
    };

    asio::strand<asio::any_io_executor> strand;
    std::vector<wire::Endpoint> endpoints;  // in the order of preference
    std::size_t current = 0;                // the endpoint new connections go to
    std::string client_id;
    std::shared_ptr<const ClientKey> key;  // in guarded, locked memory
    LinkOptions options;
    Bytes keepalive_payload;                               // empty: no keep-alive request (the probe is the hello)
    std::vector<std::shared_ptr<Connection>> connections;  // oldest first, all to `current` (rule 5 closes the others)
    std::shared_ptr<Connection> resend_connection;         // the fresh connection of rule 2
    std::uint64_t next_connection_id = 1;
    asio::steady_timer probe_timer;
    BreakerState breaker = BreakerState::closed;
    std::optional<Failure> opened_because;  // the timeout that opened the breaker
    bool closed = false;
    LinkStats stats;

    void set_breaker(BreakerState state) {
        breaker = state;
        stats.breaker.store(state);
    }
    void log(const std::string& line) const {
        if (options.log) options.log(line);
    }
    std::string where() const { return wire::to_string(endpoints); }

    // ---- connections ----

    // A new connection to the current endpoint; `connected` (optional) hears how its hello went.
    std::shared_ptr<Connection> open_connection(std::function<void(Status<Failure>)> connected = nullptr) {
        auto connection = std::make_shared<Connection>(strand);
        connection->id = next_connection_id++;
        connection->endpoint = current;
        connection->client = std::make_shared<AsyncClient::State>(strand, client_id, key, options.client);
        connection->client->on_end = [weak = weak_from_this(), id = connection->id] {
            if (auto self = weak.lock()) self->forget(id);
        };
        connections.push_back(connection);
        connection->client->connect(endpoints[current],
                                    [weak = weak_from_this(), connection, connected = std::move(connected)](Status<Failure> hello) {
                                        auto self = weak.lock();
                                        if (!self) return;
                                        if (hello) {
                                            ++self->stats.connections_opened;
                                            self->watch_quiet(connection);
                                        }
                                        if (connected) connected(std::move(hello));
                                    });
        return connection;
    }

    // Drops an ended connection from the pool; keeps it alive until the current handler has returned.
    void forget(std::uint64_t id) {
        auto it = std::find_if(connections.begin(), connections.end(), [id](const auto& c) { return c->id == id; });
        if (it == connections.end()) return;
        auto connection = std::move(*it);
        connections.erase(it);
        connection->quiet_timer.cancel();
        asio::post(strand, [connection = std::move(connection)] {});
    }

    // Ends the connections for which `which` is true (all by default): their requests fail with `why`,
    // and are sent again elsewhere when `how` is End::abandoned (rule 5).
    template <class Which>
    void close_connections(const Failure& why, End how, Which which) {
        std::vector<std::shared_ptr<Connection>> ending;
        std::erase_if(connections, [&](const std::shared_ptr<Connection>& c) {
            if (!which(*c)) return false;
            ending.push_back(c);
            return true;
        });
        if (resend_connection && which(*resend_connection)) resend_connection.reset();
        for (auto& connection : ending) {
            connection->quiet_timer.cancel();
            connection->client->fail_all(why, how);
        }
    }
    void close_connections(const Failure& why) {
        close_connections(why, End::local, [](const Connection&) { return true; });
    }

    // The connection for the next request (rule 4): the least busy; a new one when all are busy and
    // the pool has room.
    std::shared_ptr<Connection> pick() {
        std::shared_ptr<Connection> best;
        for (auto& connection : connections)
            if (connection->endpoint == current && (!best || connection->in_flight < best->in_flight)) best = connection;
        if (!best || (best->in_flight > 0 && connections.size() < options.connections_max)) best = open_connection();
        return best;
    }

    // Rule 2's connection: opened after the one that broke (`broken_id`), to the current endpoint —
    // an older connection may have broken as well (the HSM stopped) without our having read it yet.
    std::shared_ptr<Connection> fresh_connection(std::uint64_t broken_id) {
        if (!resend_connection || resend_connection->id <= broken_id || resend_connection->client->end != End::open ||
            resend_connection->endpoint != current)
            resend_connection = open_connection();
        return resend_connection;
    }

    // ---- keep-alive (rule 1) ----

    void watch_quiet(const std::shared_ptr<Connection>& connection) {
        if (options.keepalive_interval.count() <= 0 || closed) return;
        connection->quiet_timer.expires_at(connection->client->last_sent + options.keepalive_interval);
        connection->quiet_timer.async_wait([weak = weak_from_this(), connection](const error_code& ec) {
            auto self = weak.lock();
            if (ec || !self || connection->client->end != End::open) return;
            self->on_quiet(connection);
        });
    }

    void on_quiet(const std::shared_ptr<Connection>& connection) {
        const auto now = std::chrono::steady_clock::now();
        if (connection->in_flight > 0 || now - connection->client->last_sent < options.keepalive_interval) return watch_quiet(connection);
        if (connections.empty() || connections.front() != connection) {
            // An extra connection the traffic no longer needs: closed by us, not by the HSM's timeout.
            forget(connection->id);
            connection->client->fail_all({Errc::closed, "the link closed a quiet extra connection"}, End::local);
            return;
        }
        if (keepalive_payload.empty()) {
            connection->client->last_sent = now;  // nothing to send: the HSM will close it, rule 2 covers that
            return;
        }
        ++stats.keepalives;
        auto request = std::make_shared<Request>();
        request->command = wire::Command::verify_purchase_tacs;
        request->payload = keepalive_payload;
        request->handler = [](Outcome<Bytes>) {};
        send_on(connection, std::move(request));
        watch_quiet(connection);
    }

    // ---- requests ----

    void call(std::shared_ptr<Request> request) {
        if (closed) return request->handler(fail(Errc::closed, "the HSM link was closed"));
        if (breaker != BreakerState::closed) {
            ++stats.fast_failures;
            return request->handler(
                fail(Errc::connection_failed, fmt::format("the HSM link is {} (circuit breaker) since: {}", breaker_state_name(breaker),
                                                          opened_because ? opened_because->message : std::string("a timeout"))));
        }
        send_on(pick(), std::move(request));
    }

    void send_on(const std::shared_ptr<Connection>& connection, std::shared_ptr<Request> request) {
        ++connection->in_flight;
        Bytes payload = request->payload;                // a full TAC batch is 46 KiB, copied once per request in flight
        const wire::Command command = request->command;  // read before `request` moves into the handler
        connection->client->call(command, std::move(payload),
                                 [self = shared_from_this(), connection, request = std::move(request)](Outcome<Bytes> answer) mutable {
                                     --connection->in_flight;
                                     self->answered(*connection, std::move(request), std::move(answer));
                                 });
    }

    void answered(const Connection& connection, std::shared_ptr<Request> request, Outcome<Bytes> answer) {
        const End end = connection.client->end;
        if (answer || end == End::open) return request->handler(std::move(answer));  // a verdict or a request-level error
        switch (end) {
            case End::timeout: ++stats.timeouts; return endpoint_failed(connection.endpoint, std::move(request), answer.error(), true);
            case End::unreachable: return endpoint_failed(connection.endpoint, std::move(request), answer.error(), false);
            case End::abandoned:
                if (request->may_send_again && !closed && ++request->endpoints_failed < endpoints.size()) {
                    ++stats.moved;
                    return call(std::move(request));
                }
                break;
            case End::peer:
                if (request->may_send_again && !request->sent_again && !closed) {
                    ++stats.retries;
                    request->sent_again = true;
                    return send_on(fresh_connection(connection.id), std::move(request));
                }
                break;
            case End::open:
            case End::protocol:
            case End::local: break;
        }
        request->handler(std::move(answer));
    }

    // ---- several endpoints (rule 5) ----

    // The endpoint `from` did not answer (`timed_out`) or could not be reached: the link moves on to the
    // next one, and the request follows while some endpoint has not failed it — unless it was sent
    // and may not be sent twice. Once every endpoint failed it, it fails; if the last one hung, the
    // breaker opens (rule 3).
    void endpoint_failed(std::size_t from, std::shared_ptr<Request> request, const Failure& why, bool timed_out) {
        if (!closed && from == current && endpoints.size() > 1) move_on(from, why);
        const bool exhausted = ++request->endpoints_failed >= endpoints.size();
        if (exhausted && timed_out) open_breaker(why);
        if (closed || exhausted || (timed_out && !request->may_send_again)) {
            if (!exhausted || endpoints.size() == 1) return request->handler(Unexpected<Failure>{why});
            return request->handler(fail(why.code, fmt::format("no HSM of {} answered; the last: {}", where(), why.message)));
        }
        ++stats.moved;
        call(std::move(request));
    }

    void move_on(std::size_t from, const Failure& why) {
        current = (from + 1) % endpoints.size();
        stats.endpoint.store(current);
        ++stats.failovers;
        log(fmt::format("HSM link: {} failed ({}); moving to {}", wire::to_string(endpoints[from]), why.message,
                        wire::to_string(endpoints[current])));
        close_connections({Errc::connection_failed,
                           fmt::format("the HSM link left {} after: {}", wire::to_string(endpoints[from]), why.message)},
                          End::abandoned, [from](const Connection& c) { return c.endpoint == from; });
    }

    // ---- circuit breaker (rule 3) ----

    void open_breaker(const Failure& why) {
        if (closed || breaker == BreakerState::open) return;
        log(fmt::format("HSM link {} open (circuit breaker, requests fail at once for {} ms, then a probe): {}", where(),
                        options.breaker_cooldown.count(), why.message));
        set_breaker(BreakerState::open);
        ++stats.breaker_opens;
        opened_because = why;
        close_connections({Errc::connection_failed, "the HSM link opened (circuit breaker) after: " + why.message});
        probe_timer.expires_after(options.breaker_cooldown);
        probe_timer.async_wait([weak = weak_from_this()](const error_code& ec) {
            auto self = weak.lock();
            if (!ec && self && !self->closed) self->probe();
        });
    }

    // Half-open: one request on a fresh connection (to the current endpoint; a failed probe moves the
    // next one to the next endpoint) decides.
    void probe() {
        set_breaker(BreakerState::half_open);
        ++stats.probes;
        auto decide = [weak = weak_from_this()](bool answered, const Failure& why) {
            auto self = weak.lock();
            if (!self || self->closed || self->breaker != BreakerState::half_open) return;
            if (answered) {
                self->log(fmt::format("HSM link {} closed again (the probe was answered)", self->where()));
                self->opened_because.reset();
                return self->set_breaker(BreakerState::closed);
            }
            self->current = (self->current + 1) % self->endpoints.size();
            self->stats.endpoint.store(self->current);
            self->set_breaker(BreakerState::closed);  // so that open_breaker counts a new opening
            self->open_breaker(why);
        };
        // Without a keep-alive request the hello decides; with one, its answer (a failed hello fails it too).
        const bool hello_decides = keepalive_payload.empty();
        auto connection = open_connection([decide, hello_decides](Status<Failure> hello) {
            if (!hello) return decide(false, hello.error());
            if (hello_decides) decide(true, {});
        });
        if (hello_decides) return;
        ++connection->in_flight;
        connection->client->call(wire::Command::verify_purchase_tacs, keepalive_payload, [decide, connection](Outcome<Bytes> answer) {
            --connection->in_flight;
            // Any authenticated answer, even a request-level error, shows that the HSM serves requests again.
            decide(static_cast<bool>(answer) || connection->client->end == End::open, answer ? Failure{} : answer.error());
        });
    }
};

std::shared_ptr<Link> Link::create(asio::any_io_executor executor, wire::Endpoint endpoint, wire::ClientCredentials credentials,
                                   LinkOptions options) {
    return create(std::move(executor), std::vector<wire::Endpoint>{std::move(endpoint)}, std::move(credentials), std::move(options));
}

std::shared_ptr<Link> Link::create(asio::any_io_executor executor, std::vector<wire::Endpoint> endpoints,
                                   wire::ClientCredentials credentials, LinkOptions options) {
    std::shared_ptr<Link> link(new Link());
    link->state_ = std::make_shared<State>(std::move(executor), std::move(endpoints), std::move(credentials), std::move(options));
    return link;
}

Link::~Link() { close(); }

void Link::close() {
    asio::post(state_->strand, [state = state_] {
        if (state->closed) return;
        state->closed = true;
        state->probe_timer.cancel();
        state->close_connections({Errc::closed, "the HSM link was closed"});
    });
}

asio::any_io_executor Link::get_executor() const { return state_->strand; }
const LinkStats& Link::stats() const { return state_->stats; }

void Link::async_call(wire::Command command, Bytes payload, Handler<Bytes> handler) {
    auto request = std::make_shared<State::Request>();
    request->command = command;
    request->payload = std::move(payload);
    request->handler = std::move(handler);
    request->may_send_again = retry_safe(command);
    asio::post(state_->strand, [state = state_, request = std::move(request)]() mutable { state->call(std::move(request)); });
}
void Link::async_verify_purchase_tacs(const wire::PurchaseTacBatch& batch, Handler<std::vector<Verdict>> handler) {
    typed_verify_purchase_tacs(*this, state_->strand, batch, std::move(handler));
}
void Link::async_verify_load_tac(const LoadTac& request, Handler<Verdict> handler) {
    typed_verify_load_tac(*this, request, std::move(handler));
}
void Link::async_load_mac2(const LoadRequest& request, Handler<LoadAnswer> handler) { typed_load_mac2(*this, request, std::move(handler)); }
void Link::async_verify_internal_auth(const InternalAuth& request, Handler<Verdict> handler) {
    typed_verify_internal_auth(*this, request, std::move(handler));
}

// ---- synchronous client ---------------------------------------------------------------------------

struct Client::State {
    State(std::vector<wire::Endpoint> where, wire::ClientCredentials creds, ClientOptions opts)
        : endpoints(std::move(where)), client_id(std::move(creds.client_id)), key(detail::make_guarded<ClientKey>(creds.key)),
          options(opts) {
        COCONUT_ASSERT(!endpoints.empty() && endpoints.size() <= wire::max_endpoints);
    }
    ~State() { drop_connection(); }

    asio::io_context io;
    std::vector<wire::Endpoint> endpoints;
    std::size_t current = 0;
    std::string client_id;
    std::shared_ptr<const ClientKey> key;  // in guarded, locked memory
    ClientOptions options;
    std::shared_ptr<AsyncClient::State> connection;

    // Starts an asynchronous operation and runs the io_context until its handler has run. Every
    // operation is bounded by the client's timeouts, so this always returns.
    template <class T, class Start>
    Outcome<T> wait(Start start) {
        std::optional<Outcome<T>> result;
        io.restart();
        start([&result](Outcome<T> r) { result.emplace(std::move(r)); });
        while (!result) {
            if (io.run_one() == 0) return fail(Errc::closed, "the client has no connection");
        }
        return std::move(*result);
    }

    void drop_connection() {
        if (!connection) return;
        asio::post(connection->strand, [c = connection] { c->fail_all({Errc::closed, "the client closed the connection"}, End::local); });
        connection.reset();
        io.restart();
        io.poll();
    }

    Status<Failure> connect_to(std::size_t index) {
        drop_connection();
        current = index;
        connection = std::make_shared<AsyncClient::State>(io.get_executor(), client_id, key, options);
        return wait<Ok>([&](auto done) {
            asio::post(connection->strand, [c = connection, endpoint = endpoints[index], done] {
                c->connect(endpoint, [done](Status<Failure> s) { done(std::move(s)); });
            });
        });
    }

    // The first endpoint, from `first` on, that answers the hello; every failure in the message.
    Status<Failure> connect_from(std::size_t first) {
        std::string failures;
        Failure last;
        for (std::size_t i = 0; i < endpoints.size(); ++i) {
            const std::size_t index = (first + i) % endpoints.size();
            auto connected = connect_to(index);
            if (connected) return connected;
            if (endpoints.size() == 1) return connected;
            last = connected.error();
            failures += fmt::format("{}{}: {}", failures.empty() ? "" : "; ", wire::to_string(endpoints[index]), last.message);
        }
        return fail(last.code, fmt::format("no HSM of {} could be reached ({})", wire::to_string(endpoints), failures));
    }

    Outcome<Bytes> send(wire::Command command, Bytes payload) {
        return wait<Bytes>([&](auto done) {
            asio::post(connection->strand, [c = connection, command, payload = std::move(payload), done]() mutable {
                c->call(command, std::move(payload), done);
            });
        });
    }

    Outcome<Bytes> call(wire::Command command, const Bytes& payload) {
        if (endpoints.size() == 1) return send(command, payload);
        io.restart();
        io.poll();  // a connection the HSM closed while we were idle is noticed before the request is written
        return call_moving_on(command, payload);
    }

    // Several endpoints: see the class comment.
    Outcome<Bytes> call_moving_on(wire::Command command, const Bytes& payload) {
        std::size_t failed = 0;  // endpoints that failed this request
        bool reopened = false;   // a connection the HSM closed was opened again once, to the same HSM
        Failure last;
        std::size_t next = current;
        while (failed < endpoints.size()) {
            if (connection == nullptr || connection->end != End::open) {
                if (connection && connection->end == End::peer && !reopened) reopened = true;
                else if (connection && connection->end != End::local) next = (current + 1) % endpoints.size();
                if (auto connected = connect_to(next); !connected) {
                    last = connected.error();
                    ++failed;
                    continue;
                }
            }
            auto answer = send(command, payload);
            if (answer || connection->end == End::open) return answer;
            if (!Link::retry_safe(command))
                return fail(answer.error().code, fmt::format("{} (not sent again: {} is not safe to repeat)", answer.error().message,
                                                             wire::command_name(command)));
            last = answer.error();
            if (connection->end != End::peer || reopened) ++failed;
        }
        return fail(last.code, fmt::format("no HSM of {} answered; the last: {}", wire::to_string(endpoints), last.message));
    }
};

Client::Client(std::unique_ptr<State> state) : state_(std::move(state)) {}
Client::~Client() = default;

Outcome<std::unique_ptr<Client>> Client::connect(const wire::Endpoint& endpoint, wire::ClientCredentials credentials,
                                                 ClientOptions options) {
    return connect(std::vector<wire::Endpoint>{endpoint}, std::move(credentials), options);
}

Outcome<std::unique_ptr<Client>> Client::connect(std::vector<wire::Endpoint> endpoints, wire::ClientCredentials credentials,
                                                 ClientOptions options) {
    auto state = std::make_unique<State>(std::move(endpoints), std::move(credentials), options);
    if (auto connected = state->connect_from(0); !connected) return Unexpected<Failure>{connected.error()};
    return std::unique_ptr<Client>(new Client(std::move(state)));
}

const wire::Endpoint& Client::endpoint() const { return state_->endpoints[state_->current]; }

namespace {
template <class T, class Decode>
Outcome<T> decoded(Outcome<Bytes> payload, Decode decode) {
    if (!payload) return Unexpected<Failure>{payload.error()};
    return decode(payload.value());
}
}  // namespace

Outcome<KeyInfo> Client::key_info(const KeyRef& key) {
    return decoded<KeyInfo>(call(wire::Command::key_info, wire::encode(key)), wire::decode_key_info_response);
}
Outcome<CardKeySet> Client::derive_card_keys(const wire::DeriveCardKeys& request) {
    return decoded<CardKeySet>(call(wire::Command::derive_card_keys, wire::encode(request)), wire::decode_card_key_set);
}
Outcome<ExportedKey> Client::export_issuer_key(const wire::ExportIssuerKey& request) {
    return decoded<ExportedKey>(call(wire::Command::export_issuer_key, wire::encode(request)), wire::decode_exported_key);
}
Outcome<std::vector<Verdict>> Client::verify_purchase_tacs(std::string_view label, std::span<const PurchaseTac> batch) {
    if (batch.size() > max_batch_items)
        return fail(Errc::batch_too_large, fmt::format("a batch holds at most {} transactions, not {}", max_batch_items, batch.size()));
    wire::PurchaseTacBatch request{std::string(label), std::vector<PurchaseTac>(batch.begin(), batch.end())};
    return decoded<std::vector<Verdict>>(call(wire::Command::verify_purchase_tacs, wire::encode(request)), verdicts_for(batch.size()));
}
Outcome<Verdict> Client::verify_load_tac(const LoadTac& request) {
    return decoded<Verdict>(call(wire::Command::verify_load_tac, wire::encode(request)), wire::decode_verdict);
}
Outcome<LoadAnswer> Client::load_mac2(const LoadRequest& request) {
    return decoded<LoadAnswer>(call(wire::Command::load_mac2, wire::encode(request)), wire::decode_load_answer);
}
Outcome<Verdict> Client::verify_internal_auth(const InternalAuth& request) {
    return decoded<Verdict>(call(wire::Command::verify_internal_auth, wire::encode(request)), wire::decode_verdict);
}
Outcome<MaintenanceMac> Client::maintenance_mac(const MaintenanceMacRequest& request) {
    return decoded<MaintenanceMac>(call(wire::Command::maintenance_mac, wire::encode(request)), wire::decode_maintenance_mac);
}
Outcome<Bytes> Client::call(wire::Command command, Bytes payload) { return state_->call(command, payload); }
Outcome<Bytes> Client::ca_certificate() {
    auto payload = call(wire::Command::ca_certificate, {});
    if (!payload) return payload;
    return wire::decode_certificate(*payload);
}
Outcome<Bytes> Client::sign_certificate(const CertificateSigning& signing) {
    auto payload = call(wire::Command::sign_certificate, wire::encode(signing));
    if (!payload) return payload;
    return wire::decode_certificate(*payload);
}

// ---- batching -------------------------------------------------------------------------------------

struct TacBatcher::State : std::enable_shared_from_this<TacBatcher::State> {
    // Sends one batch (AsyncClient or Link).
    using Send = std::function<void(const wire::PurchaseTacBatch&, AsyncClient::Handler<std::vector<Verdict>>)>;

    State(asio::any_io_executor executor, Send s, std::string l, std::size_t items, std::chrono::microseconds delay)
        : strand(std::move(executor)), send_batch(std::move(s)), label(std::move(l)), batch_items(items), max_delay(delay), timer(strand) {}

    asio::any_io_executor strand;  // the client's (link's)
    Send send_batch;
    std::string label;
    std::size_t batch_items;
    std::chrono::microseconds max_delay;
    asio::steady_timer timer;
    std::vector<PurchaseTac> items;
    std::vector<std::function<void(Outcome<Verdict>)>> handlers;
    std::vector<std::string> request_ids;  // of the items, for the batch's log line
    std::uint64_t generation = 0;

    void add(const PurchaseTac& transaction, std::function<void(Outcome<Verdict>)> handler, std::string request_id) {
        items.push_back(transaction);
        handlers.push_back(std::move(handler));
        request_ids.push_back(request_id.empty() ? std::string("-") : std::move(request_id));
        if (items.size() >= batch_items) return send();
        if (items.size() == 1) {
            const std::uint64_t id = generation;
            timer.expires_after(max_delay);
            timer.async_wait([self = shared_from_this(), id](const error_code& ec) {
                if (!ec && id == self->generation) self->send();
            });
        }
    }

    void send() {
        ++generation;
        timer.cancel();
        if (items.empty()) return;
        wire::PurchaseTacBatch batch{label, std::move(items)};
        items.clear();
        // The batch's id on the link's lines about it; its line names the requests it carries.
        log::RequestScope scope(log::new_request_id('b'));
        std::string requests = fmt::format("{}", fmt::join(request_ids, ","));
        request_ids.clear();
        if (log::enabled(log::Level::debug))
            log::write(log::Level::debug, "hsm-link", fmt::format("TAC batch of {}", batch.items.size()), {{"requests", requests}});
        send_batch(batch, [handlers = std::move(handlers), batch_id = log::current_request_id(),
                           requests = std::move(requests)](Outcome<std::vector<Verdict>> verdicts) {
            // Debug only: while the HSM is down every batch fails, and the engine already logs that, rate-limited.
            if (!verdicts && log::enabled(log::Level::debug)) {
                log::RequestScope failed(batch_id);
                log::write(log::Level::debug, "hsm-link", "TAC batch failed: " + verdicts.error().message, {{"requests", requests}});
            }
            for (std::size_t i = 0; i < handlers.size(); ++i) {
                if (verdicts) handlers[i](verdicts.value()[i]);
                else handlers[i](Unexpected<Failure>{verdicts.error()});
            }
        });
        handlers.clear();
    }
};

std::shared_ptr<TacBatcher> TacBatcher::create(std::shared_ptr<AsyncClient> client, std::string tac_master_label, std::size_t batch_items,
                                               std::chrono::microseconds max_delay) {
    std::shared_ptr<TacBatcher> batcher(new TacBatcher());
    batch_items = std::clamp<std::size_t>(batch_items, 1, max_batch_items);
    auto executor = client->get_executor();
    batcher->state_ = std::make_shared<State>(
        std::move(executor),
        [client = std::move(client)](const wire::PurchaseTacBatch& batch, AsyncClient::Handler<std::vector<Verdict>> handler) {
            client->async_verify_purchase_tacs(batch, std::move(handler));
        },
        std::move(tac_master_label), batch_items, max_delay);
    return batcher;
}

std::shared_ptr<TacBatcher> TacBatcher::create(std::shared_ptr<Link> link, std::string tac_master_label, std::size_t batch_items,
                                               std::chrono::microseconds max_delay) {
    std::shared_ptr<TacBatcher> batcher(new TacBatcher());
    batch_items = std::clamp<std::size_t>(batch_items, 1, max_batch_items);
    auto executor = link->get_executor();
    batcher->state_ = std::make_shared<State>(
        std::move(executor),
        [link = std::move(link)](const wire::PurchaseTacBatch& batch, Link::Handler<std::vector<Verdict>> handler) {
            link->async_verify_purchase_tacs(batch, std::move(handler));
        },
        std::move(tac_master_label), batch_items, max_delay);
    return batcher;
}

void TacBatcher::submit(const PurchaseTac& transaction, std::function<void(Outcome<Verdict>)> handler) {
    asio::post(state_->strand,
               [state = state_, transaction, handler = std::move(handler), request_id = log::current_request_id()]() mutable {
                   state->add(transaction, std::move(handler), std::move(request_id));
               });
}

void TacBatcher::flush() {
    asio::post(state_->strand, [state = state_] { state->send(); });
}

}  // namespace coconut::hsm
