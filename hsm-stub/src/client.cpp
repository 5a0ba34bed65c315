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

#include <deque>

namespace coconut::hsm {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;

struct AsyncClient::State : std::enable_shared_from_this<AsyncClient::State> {
    State(asio::any_io_executor executor, wire::ClientCredentials creds, ClientOptions opts)
        : strand(asio::make_strand(executor)), socket(strand), resolver(strand), timer(strand),
          client_id(std::move(creds.client_id)), key(detail::make_guarded<ClientKey>(creds.key)), options(opts) {}

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
        timer.async_wait([self = shared_from_this(), id, what = std::move(what)](const error_code& ec) {
            if (ec || id != self->phase) return;
            self->fail_all({Errc::timeout, fmt::format("the HSM did not answer within the timeout while {}", what)});
        });
    }
    void disarm() {
        ++phase;
        timer.cancel();
    }

    // The connection is finished: every outstanding request fails with `why`.
    void fail_all(Failure why) {
        if (!closed) {
            closed = true;
            closed_because = why;
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
                                                               return self->connect_failed(
                                                                   done, fmt::format("cannot connect to {}: {}", where, ec2.message()));
                                                           error_code ignored;
                                                           self->socket.set_option(tcp::no_delay(true), ignored);
                                                           self->read_hello(done);
                                                       });
                               });
    }

    void connect_failed(const std::shared_ptr<std::function<void(Status<Failure>)>>& done, std::string message) {
        fail_all({Errc::connection_failed, message});
        (*done)(Unexpected<Failure>{closed_because});
    }

    void read_hello(std::shared_ptr<std::function<void(Status<Failure>)>> done) {
        read_frame([self = shared_from_this(), done](Outcome<Bytes> frame) {
            if (!frame) {
                self->fail_all(frame.error());
                return (*done)(Unexpected<Failure>{self->closed_because});
            }
            auto hello = wire::decode_hello(frame.value());
            if (!hello) {
                self->fail_all(hello.error());
                return (*done)(Unexpected<Failure>{self->closed_because});
            }
            self->disarm();
            self->nonce = hello->nonce;
            self->connecting = false;
            self->connected = true;
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
            if (!frame) return self->fail_all(frame.error());
            auto response = wire::decode_response(*self->key, self->nonce, frame.value());
            if (!response) return self->fail_all(response.error());
            if (self->outstanding.empty() || self->outstanding.front().seq != response->seq)
                return self->fail_all({Errc::protocol_error, fmt::format("response for seq {} was not expected", response->seq)});
            Pending pending = std::move(self->outstanding.front());
            self->outstanding.pop_front();
            if (self->outstanding.empty())
                self->disarm();
            else
                self->arm(self->options.request_timeout, "waiting for a response");
            if (response->status == Errc::ok) {
                pending.handler(Bytes(response->payload.begin(), response->payload.end()));
            } else {
                pending.handler(Unexpected<Failure>{
                    {response->status, std::string(response->payload.begin(), response->payload.end())}});
            }
            self->read_responses();
        });
    }

    void call(wire::Command command, Bytes payload, Handler<Bytes> handler) {
        if (connecting) {
            if (waiting.size() >= options.max_outstanding)
                return handler(fail(Errc::server_busy, fmt::format("{} requests are already waiting for the connection",
                                                                   options.max_outstanding)));
            waiting.push_back({command, std::move(payload), std::move(handler)});
            return;
        }
        if (!connected) return handler(Unexpected<Failure>{closed_because});
        if (outstanding.size() >= options.max_outstanding)
            return handler(fail(Errc::server_busy, fmt::format("{} requests are already outstanding on this connection",
                                                               options.max_outstanding)));
        const std::uint64_t seq = next_seq++;
        Bytes frame = wire::encode_request(*key, nonce, seq, client_id, static_cast<std::uint8_t>(command),
                                           payload);
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
            if (ec) return self->fail_all({Errc::connection_failed, fmt::format("sending to the HSM failed: {}", ec.message())});
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
    asio::post(state_->strand, [state = state_] { state->fail_all({Errc::closed, "the client was destroyed"}); });
}

asio::any_io_executor AsyncClient::get_executor() const { return state_->strand; }

void AsyncClient::async_connect(const wire::Endpoint& endpoint, std::function<void(Status<Failure>)> handler) {
    asio::post(state_->strand, [state = state_, endpoint, handler = std::move(handler)]() mutable {
        state->connect(endpoint, std::move(handler));
    });
}

void AsyncClient::async_call(wire::Command command, Bytes payload, Handler<Bytes> handler) {
    asio::post(state_->strand, [state = state_, command, payload = std::move(payload), handler = std::move(handler)]() mutable {
        state->call(command, std::move(payload), std::move(handler));
    });
}

void AsyncClient::close() {
    asio::post(state_->strand, [state = state_] { state->fail_all({Errc::closed, "the client closed the connection"}); });
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
}  // namespace

void AsyncClient::async_key_info(const KeyRef& key, Handler<KeyInfo> handler) {
    async_call(wire::Command::key_info, wire::encode(key), decoding<KeyInfo>(std::move(handler), wire::decode_key_info_response));
}
void AsyncClient::async_derive_card_keys(const wire::DeriveCardKeys& request, Handler<CardKeySet> handler) {
    async_call(wire::Command::derive_card_keys, wire::encode(request),
               decoding<CardKeySet>(std::move(handler), wire::decode_card_key_set));
}
void AsyncClient::async_export_issuer_key(const wire::ExportIssuerKey& request, Handler<ExportedKey> handler) {
    async_call(wire::Command::export_issuer_key, wire::encode(request),
               decoding<ExportedKey>(std::move(handler), wire::decode_exported_key));
}
void AsyncClient::async_verify_purchase_tacs(const wire::PurchaseTacBatch& batch, Handler<std::vector<Verdict>> handler) {
    if (batch.items.size() > max_batch_items) {
        asio::post(state_->strand, [handler = std::move(handler), n = batch.items.size()] {
            handler(fail(Errc::batch_too_large, fmt::format("a batch holds at most {} transactions, not {}", max_batch_items, n)));
        });
        return;
    }
    const std::size_t expected = batch.items.size();
    async_call(wire::Command::verify_purchase_tacs, wire::encode(batch),
               decoding<std::vector<Verdict>>(std::move(handler), [expected](ByteView payload) -> Outcome<std::vector<Verdict>> {
                   auto verdicts = wire::decode_verdicts(payload);
                   if (verdicts && verdicts->size() != expected)
                       return fail(Errc::protocol_error, fmt::format("{} verdicts for {} transactions", verdicts->size(), expected));
                   return verdicts;
               }));
}
void AsyncClient::async_verify_load_tac(const LoadTac& request, Handler<Verdict> handler) {
    async_call(wire::Command::verify_load_tac, wire::encode(request), decoding<Verdict>(std::move(handler), wire::decode_verdict));
}
void AsyncClient::async_load_mac2(const LoadRequest& request, Handler<LoadAnswer> handler) {
    async_call(wire::Command::load_mac2, wire::encode(request), decoding<LoadAnswer>(std::move(handler), wire::decode_load_answer));
}
void AsyncClient::async_verify_internal_auth(const InternalAuth& request, Handler<Verdict> handler) {
    async_call(wire::Command::verify_internal_auth, wire::encode(request),
               decoding<Verdict>(std::move(handler), wire::decode_verdict));
}

// ---- synchronous client ---------------------------------------------------------------------------

struct Client::State {
    asio::io_context io;
    std::shared_ptr<AsyncClient> client;

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
};

Client::Client(std::unique_ptr<State> state) : state_(std::move(state)) {}
Client::~Client() {
    if (!state_) return;
    state_->client->close();
    state_->client.reset();
    state_->io.restart();
    state_->io.poll();
}

Outcome<std::unique_ptr<Client>> Client::connect(const wire::Endpoint& endpoint, wire::ClientCredentials credentials,
                                                 ClientOptions options) {
    auto state = std::make_unique<State>();
    state->client = AsyncClient::create(state->io.get_executor(), std::move(credentials), options);
    auto connected = state->wait<Ok>([&](auto done) {
        state->client->async_connect(endpoint, [done](Status<Failure> s) { done(std::move(s)); });
    });
    if (!connected) return Unexpected<Failure>{connected.error()};
    return std::unique_ptr<Client>(new Client(std::move(state)));
}

Outcome<KeyInfo> Client::key_info(const KeyRef& key) {
    return state_->wait<KeyInfo>([&](auto done) { state_->client->async_key_info(key, done); });
}
Outcome<CardKeySet> Client::derive_card_keys(const wire::DeriveCardKeys& request) {
    return state_->wait<CardKeySet>([&](auto done) { state_->client->async_derive_card_keys(request, done); });
}
Outcome<ExportedKey> Client::export_issuer_key(const wire::ExportIssuerKey& request) {
    return state_->wait<ExportedKey>([&](auto done) { state_->client->async_export_issuer_key(request, done); });
}
Outcome<std::vector<Verdict>> Client::verify_purchase_tacs(std::string_view label, std::span<const PurchaseTac> batch) {
    wire::PurchaseTacBatch request{std::string(label), std::vector<PurchaseTac>(batch.begin(), batch.end())};
    return state_->wait<std::vector<Verdict>>([&](auto done) { state_->client->async_verify_purchase_tacs(request, done); });
}
Outcome<Verdict> Client::verify_load_tac(const LoadTac& request) {
    return state_->wait<Verdict>([&](auto done) { state_->client->async_verify_load_tac(request, done); });
}
Outcome<LoadAnswer> Client::load_mac2(const LoadRequest& request) {
    return state_->wait<LoadAnswer>([&](auto done) { state_->client->async_load_mac2(request, done); });
}
Outcome<Verdict> Client::verify_internal_auth(const InternalAuth& request) {
    return state_->wait<Verdict>([&](auto done) { state_->client->async_verify_internal_auth(request, done); });
}
Outcome<Bytes> Client::call(wire::Command command, Bytes payload) {
    return state_->wait<Bytes>([&](auto done) { state_->client->async_call(command, std::move(payload), done); });
}
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
    State(std::shared_ptr<AsyncClient> c, std::string l, std::size_t items, std::chrono::microseconds delay)
        : client(std::move(c)), label(std::move(l)), batch_items(items), max_delay(delay), timer(client->get_executor()) {}

    std::shared_ptr<AsyncClient> client;
    std::string label;
    std::size_t batch_items;
    std::chrono::microseconds max_delay;
    asio::steady_timer timer;
    std::vector<PurchaseTac> items;
    std::vector<std::function<void(Outcome<Verdict>)>> handlers;
    std::uint64_t generation = 0;

    void add(const PurchaseTac& transaction, std::function<void(Outcome<Verdict>)> handler) {
        items.push_back(transaction);
        handlers.push_back(std::move(handler));
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
        client->async_verify_purchase_tacs(batch, [handlers = std::move(handlers)](Outcome<std::vector<Verdict>> verdicts) {
            for (std::size_t i = 0; i < handlers.size(); ++i) {
                if (verdicts)
                    handlers[i](verdicts.value()[i]);
                else
                    handlers[i](Unexpected<Failure>{verdicts.error()});
            }
        });
        handlers.clear();
    }
};

std::shared_ptr<TacBatcher> TacBatcher::create(std::shared_ptr<AsyncClient> client, std::string tac_master_label,
                                               std::size_t batch_items, std::chrono::microseconds max_delay) {
    std::shared_ptr<TacBatcher> batcher(new TacBatcher());
    batch_items = std::clamp<std::size_t>(batch_items, 1, max_batch_items);
    batcher->state_ = std::make_shared<State>(std::move(client), std::move(tac_master_label), batch_items, max_delay);
    return batcher;
}

void TacBatcher::submit(const PurchaseTac& transaction, std::function<void(Outcome<Verdict>)> handler) {
    asio::post(state_->client->get_executor(), [state = state_, transaction, handler = std::move(handler)]() mutable {
        state->add(transaction, std::move(handler));
    });
}

void TacBatcher::flush() {
    asio::post(state_->client->get_executor(), [state = state_] { state->send(); });
}

}  // namespace coconut::hsm
