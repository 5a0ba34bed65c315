#include <coconut/core/admission.hpp>
#include <coconut/hsm/ca.hpp>
#include <coconut/hsm/server.hpp>

#include "secure_buffer.hpp"

#include <boost/asio/bind_executor.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <fmt/format.h>
#include <sodium.h>

#include <list>
#include <map>

namespace coconut::hsm {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;

class Connection;

struct Server::Shared : std::enable_shared_from_this<Server::Shared> {
    asio::io_context& io;
    tcp::acceptor acceptor;
    AuditLog& audit;
    ServerConfig config;
    std::mutex mutex;  // guards hsm and connections
    std::shared_ptr<const Hsm> hsm;
    std::list<std::weak_ptr<Connection>> connections;
    std::atomic<std::size_t> connection_count{0};
    std::atomic<bool> stopping{false};
    core::AcceptBackoff backoff;               // on the acceptor's strand
    core::AddressAdmission address_admission;  // unauthenticated connections per address
    core::IdentityAdmission client_admission;  // authenticated connections per client id
    RefusalTally tally;                        // everything refused before authentication
    asio::steady_timer tally_timer;            // writes the tally's line every refusal_audit_interval
    std::atomic<std::uint64_t> refused_not_allowed{0};
    std::atomic<std::uint64_t> refused_total{0};

    Shared(asio::io_context& io_context, std::shared_ptr<const KeyStore> store, AuditLog& audit_log, ServerConfig cfg)
        : io(io_context), acceptor(asio::make_strand(io_context)), audit(audit_log), config(std::move(cfg)),
          hsm(std::make_shared<const Hsm>(std::move(store))), backoff(acceptor.get_executor()),
          address_admission({.per_key = config.max_connections_per_address}),
          client_admission({.per_key = config.max_connections_per_client}), tally_timer(asio::make_strand(io_context)) {}

    std::shared_ptr<const Hsm> current() {
        std::lock_guard lock(mutex);
        return hsm;
    }
    void accept_next();
    void admit(tcp::socket socket);
    void schedule_tally();
    // Keep-alives (an empty purchase-TAC batch: no key, no card; hsm::Link sends one on a quiet
    // connection every 20 s) are counted per client and written with the tally, one line per interval,
    // not a line each: an idle clearing daemon would otherwise add ~4,300 lines a day.
    std::mutex keepalive_mutex;
    std::map<std::string, std::uint64_t, std::less<>> keepalives;
    void count_keepalive(const std::string& client) {
        std::lock_guard lock(keepalive_mutex);
        ++keepalives[client];
    }
    void write_tally() {
        if (auto entry = tally.take()) (void)audit.append(*entry);
        std::map<std::string, std::uint64_t, std::less<>> counted;
        {
            std::lock_guard lock(keepalive_mutex);
            counted.swap(keepalives);
        }
        if (counted.empty()) return;
        std::string detail;
        for (const auto& [client, count] : counted) detail += fmt::format("{}{}={}", detail.empty() ? "" : " ", client, count);
        (void)audit.append({"", "keep-alives", "", {}, detail});
    }
};

namespace {

// The answer to one authenticated request.
struct Answer {
    Errc status = Errc::ok;
    Bytes payload;
    Usage usage;
    bool keepalive = false;  // an empty purchase-TAC batch answered: what hsm::Link sends on a quiet connection
};

Answer error_answer(const Failure& failure) {
    Answer answer;
    answer.status = failure.code;
    answer.payload.assign(failure.message.begin(), failure.message.end());
    answer.usage.result = fmt::format("{}: {}", errc_name(failure.code), failure.message);
    return answer;
}

// Decodes, calls the service, encodes. `Decoded` holds the request, `call` turns it into an Outcome.
template <class Decoded, class Call>
Answer serve(Outcome<Decoded> decoded, Call call) {
    if (!decoded) return error_answer(decoded.error());
    Answer answer;
    auto result = call(decoded.value(), &answer.usage);
    if (!result) {
        Answer failed = error_answer(result.error());
        if (failed.usage.key_label.empty()) failed.usage.key_label = answer.usage.key_label;
        return failed;
    }
    answer.payload = wire::encode(result.value());
    return answer;
}

// The island CA's commands (ca.hpp): a certificate in, a certificate out.
Answer dispatch_ca(const KeyStore& store, wire::Command command, ByteView payload) {
    Answer answer;
    Outcome<Bytes> certificate = Bytes{};
    if (command == wire::Command::ca_certificate) {
        certificate = payload.empty() ? ca_certificate(store) : Outcome<Bytes>(fail(Errc::bad_request, "ca-certificate takes no payload"));
        answer.usage.result = "ok";
    } else {
        auto signing = wire::decode_sign_certificate(payload);
        auto issued =
            signing ? sign_certificate(store, *signing, &answer.usage) : Outcome<IssuedCertificate>(Unexpected<Failure>{signing.error()});
        certificate = issued ? Outcome<Bytes>(std::move(issued->certificate_der)) : Outcome<Bytes>(Unexpected<Failure>{issued.error()});
    }
    if (!certificate) {
        Answer failed = error_answer(certificate.error());
        failed.usage.key_label = std::string(ca_label);
        return failed;
    }
    answer.usage.key_label = std::string(ca_label);
    answer.payload = wire::encode_certificate(*certificate);
    return answer;
}

Answer dispatch(const Hsm& hsm, wire::Command command, ByteView payload) {
    using wire::Command;
    switch (command) {
        case Command::key_info:
            return serve(wire::decode_key_info(payload), [&](const KeyRef& ref, Usage* u) {
                u->key_label = ref.label;  // named in the audit line even when the lookup fails
                return hsm.key_info(ref, u);
            });
        case Command::derive_card_keys:
            return serve(wire::decode_derive_card_keys(payload), [&](const wire::DeriveCardKeys& r, Usage* u) {
                u->key_label = r.transport.label;
                return hsm.derive_card_keys(r.card, r.transport, r.masters, u);
            });
        case Command::export_issuer_key:
            return serve(wire::decode_export_issuer_key(payload), [&](const wire::ExportIssuerKey& r, Usage* u) {
                u->key_label = r.master.label;
                return hsm.export_issuer_key(r.issuer_id, r.master, r.transport, u);
            });
        case Command::verify_purchase_tacs: {
            bool empty = false;
            Answer answer = serve(wire::decode_purchase_tac_batch(payload), [&](const wire::PurchaseTacBatch& r, Usage* u) {
                u->key_label = r.label;
                empty = r.items.empty();
                return hsm.verify_purchase_tacs(r.label, r.items, u);
            });
            answer.keepalive = empty && answer.status == Errc::ok;
            return answer;
        }
        case Command::verify_load_tac:
            return serve(wire::decode_load_tac(payload), [&](const LoadTac& r, Usage* u) {
                u->key_label = r.key.label;
                return hsm.verify_load_tac(r, u);
            });
        case Command::load_mac2:
            return serve(wire::decode_load_request(payload), [&](const LoadRequest& r, Usage* u) {
                u->key_label = r.key.label;
                return hsm.load_mac2(r, u);
            });
        case Command::verify_internal_auth:
            return serve(wire::decode_internal_auth(payload), [&](const InternalAuth& r, Usage* u) {
                u->key_label = r.key.label;
                return hsm.verify_internal_auth(r, u);
            });
        case Command::ca_certificate:
        case Command::sign_certificate: return dispatch_ca(hsm.store(), command, payload);
        case Command::maintenance_mac:
            return serve(wire::decode_maintenance_mac_request(payload), [&](const MaintenanceMacRequest& r, Usage* u) {
                u->key_label = r.key.label;
                return hsm.maintenance_mac(r, u);
            });
    }
    return error_answer({Errc::unknown_command, "unknown command"});
}

}  // namespace

class Connection : public std::enable_shared_from_this<Connection> {
public:
    // `address_ticket`: the slot this connection holds in its address's count until it authenticates
    // (empty for a connection that is only refused).
    Connection(tcp::socket socket, std::shared_ptr<Server::Shared> shared, std::string address, core::AddressTicket address_ticket)
        : socket_(std::move(socket)), timer_(socket_.get_executor()), shared_(std::move(shared)), address_(std::move(address)),
          address_ticket_(std::move(address_ticket)) {
        ++shared_->connection_count;
        randombytes_buf(nonce_.data(), nonce_.size());
    }
    ~Connection() { --shared_->connection_count; }

    // Greets the peer, then serves requests until it leaves or breaks a rule.
    void start() {
        asio::post(socket_.get_executor(), [self = shared_from_this()] {
            wire::Hello hello;
            hello.nonce = self->nonce_;
            self->send(wire::encode_hello(hello), false);
        });
    }

    // Refuses the connection (limit reached) with a notice and closes it; `reason` names the limit in
    // the refusal tally.
    void reject(const char* reason, Errc code, std::string message) {
        tally_reason_ = reason;
        asio::post(socket_.get_executor(), [self = shared_from_this(), code, message = std::move(message)] { self->shut(code, message); });
    }

    // Server shutdown: closes the socket on the connection's strand.
    void close() {
        asio::post(socket_.get_executor(), [self = shared_from_this()] { self->close_now(); });
    }

private:
    // ---- timeouts: one timer, re-armed per phase; a stale expiry is ignored by phase number ----
    void arm(std::chrono::milliseconds timeout, const char* phase) {
        const std::uint64_t phase_id = ++phase_;
        timer_.expires_after(timeout);
        timer_.async_wait([self = shared_from_this(), phase_id, phase](const error_code& ec) {
            if (ec || phase_id != self->phase_ || !self->socket_.is_open()) return;
            self->audit_closure(Errc::timeout, fmt::format("no progress while {}", phase));
            self->close_now();
        });
    }
    void disarm() {
        ++phase_;
        timer_.cancel();
    }

    void read_length() {
        arm(shared_->config.idle_timeout, "waiting for a request");
        asio::async_read(socket_, asio::buffer(length_), [self = shared_from_this()](const error_code& ec, std::size_t) {
            self->disarm();
            if (ec) return self->on_read_error(ec, false);
            auto length = wire::decode_length(self->length_);
            if (!length) return self->shut(length.error().code, length.error().message);
            self->read_body(length.value());
        });
    }

    void read_body(std::uint32_t length) {
        body_.resize(length);
        arm(shared_->config.frame_timeout, "receiving a frame");
        asio::async_read(socket_, asio::buffer(body_), [self = shared_from_this()](const error_code& ec, std::size_t) {
            self->disarm();
            if (ec) return self->on_read_error(ec, true);
            self->on_frame();
        });
    }

    void on_read_error(const error_code& ec, bool mid_frame) {
        if (ec == asio::error::operation_aborted || !socket_.is_open()) return;
        if (mid_frame || (ec != asio::error::eof && ec != asio::error::connection_reset))
            audit_closure(Errc::closed, mid_frame ? "peer disconnected mid-frame" : ec.message());
        close_now();
    }

    void on_frame() {
        auto request = wire::decode_request(body_);
        if (!request) return shut(request.error().code, request.error().message);
        if (!bind_client(request->client_id)) return;
        if (!wire::request_authentic(*key_, nonce_, request.value()))
            return shut(Errc::bad_mac, fmt::format("request seq {} failed authentication", request->seq));
        if (!authenticated_ && !authenticate()) return;
        if (request->seq <= last_seq_)
            return shut(Errc::replayed_sequence,
                        fmt::format("sequence {} is not greater than the previous {} (replay or reordering)", request->seq, last_seq_));
        last_seq_ = request->seq;
        const auto command = wire::command_from_byte(request->command);
        if (!command) return shut(Errc::unknown_command, fmt::format("unknown command 0x{:02X}", request->command));

        Answer answer;
        if ((permissions_ & wire::required_permission(*command)) == 0) {
            answer = error_answer({Errc::not_permitted, fmt::format("client '{}' is not permitted to use {} (permissions: {})", client_id_,
                                                                    wire::command_name(*command), permissions_to_string(permissions_))});
        } else {
            answer = dispatch(*shared_->current(), *command, request->payload);
        }
        if (answer.keepalive) {
            shared_->count_keepalive(client_id_);
            return send(wire::encode_response(*key_, nonce_, request->seq, answer.status, answer.payload), false);
        }
        auto logged = shared_->audit.append({client_id_, std::string(wire::command_name(*command)), answer.usage.key_label,
                                             answer.usage.key_versions, answer.usage.result});
        if (!logged) answer = error_answer({Errc::io_error, "the audit log cannot be written; request refused: " + logged.error().message});
        send(wire::encode_response(*key_, nonce_, request->seq, answer.status, answer.payload), false);
    }

    // The first request names the client; later ones must name the same client.
    bool bind_client(const std::string& id) {
        if (key_) {
            if (id == client_id_) return true;
            shut(Errc::unknown_client, fmt::format("client id changed from '{}' to '{}' on one connection", client_id_, id));
            return false;
        }
        const auto hsm = shared_->current();
        auto key = hsm->store().client_key(id);
        auto info = hsm->store().client(id);
        if (!key || !info) {
            shut(Errc::unknown_client, fmt::format("no client '{}' is registered", valid_client_id(id) ? id : "<invalid id>"));
            return false;
        }
        client_id_ = id;
        key_ = detail::make_guarded<ClientKey>(*key);
        permissions_ = info->permissions;
        return true;
    }

    // The first request whose MAC verified: the connection leaves its address's count for its client's.
    bool authenticate() {
        authenticated_ = true;  // from here on every closure is one audit line of its own
        client_ticket_ = shared_->client_admission.admit(client_id_);
        if (!client_ticket_) {
            shut(Errc::server_busy, fmt::format("client '{}' already holds {} connections (--connections-per-client); "
                                                "try again later",
                                                client_id_, shared_->config.max_connections_per_client));
            return false;
        }
        address_ticket_.release();
        return true;
    }

    void send(Bytes frame, bool then_close) {
        out_ = std::move(frame);
        arm(shared_->config.write_timeout, "sending a response");
        asio::async_write(socket_, asio::buffer(out_), [self = shared_from_this(), then_close](const error_code& ec, std::size_t) {
            self->disarm();
            if (ec || then_close) return self->close_now();
            self->read_length();
        });
    }

    // Closes the connection for breaking a rule: audit line, unauthenticated notice, close.
    void shut(Errc code, const std::string& message) {
        audit_closure(code, message);
        send(wire::encode_fatal(code, message), true);
    }

    // Before authentication: counted in the tally (by reason, address and a registered client id the
    // peer named); after it: one audit line.
    void audit_closure(Errc code, const std::string& message) {
        if (!authenticated_) {
            shared_->tally.count(tally_reason_ != nullptr ? std::string_view(tally_reason_) : errc_name(code), address_,
                                 key_ ? std::string_view(client_id_) : std::string_view());
            return;
        }
        (void)shared_->audit.append({client_id_, "connection-closed", "", {}, fmt::format("{}: {}", errc_name(code), message)});
    }

    void close_now() {
        error_code ignored;
        timer_.cancel();
        socket_.shutdown(tcp::socket::shutdown_both, ignored);
        socket_.close(ignored);
    }

    tcp::socket socket_;
    asio::steady_timer timer_;
    std::shared_ptr<Server::Shared> shared_;
    std::string address_;                 // the peer's address, canonical
    core::AddressTicket address_ticket_;  // held until authenticated
    core::IdentityTicket client_ticket_;  // held once authenticated
    bool authenticated_ = false;
    const char* tally_reason_ = nullptr;  // set by reject()
    wire::Nonce nonce_{};
    std::uint64_t phase_ = 0;
    std::array<std::uint8_t, wire::length_prefix_bytes> length_{};
    Bytes body_;
    Bytes out_;
    std::string client_id_;
    std::shared_ptr<const ClientKey> key_;  // in guarded, locked memory
    std::uint32_t permissions_ = 0;
    std::uint64_t last_seq_ = 0;
};

void Server::Shared::accept_next() {
    acceptor.async_accept(asio::make_strand(io), [this, self = shared_from_this()](const error_code& ec, tcp::socket socket) {
        if (stopping || !acceptor.is_open()) return;
        if (!ec) admit(std::move(socket));
        if (core::AcceptBackoff::is_exhaustion(ec)) tally.count("accept_out_of_descriptors", {});
        // Out of descriptors: accept again after a pause (the pending peers wait in the backlog) rather
        // than at once, which fails at once and spins a core.
        backoff.after(ec, [this, self] { accept_next(); });
    });
}

void Server::Shared::admit(tcp::socket socket) {
    error_code ec;
    const auto remote = socket.remote_endpoint(ec);
    if (ec) return;  // the peer left already
    const auto address = core::canonical_address(remote.address());
    std::string address_text = address.to_string();
    if (!config.allow.contains(address)) {
        // Closed without a word: a peer that may not connect does not even learn that this is an HSM.
        refused_not_allowed.fetch_add(1, std::memory_order_relaxed);
        tally.count("not_allowed", address_text);
        return;
    }
    socket.set_option(tcp::no_delay(true), ec);
    auto ticket = address_admission.admit(address);
    if (!ticket) {
        std::make_shared<Connection>(std::move(socket), shared_from_this(), std::move(address_text), core::AddressTicket{})
            ->reject("per_address_limit", Errc::server_busy,
                     fmt::format("this address already holds {} connections that have not authenticated "
                                 "(--connections-per-address); try again later",
                                 config.max_connections_per_address));
        return;
    }
    if (connection_count.load() >= config.max_connections) {
        ticket.release();
        refused_total.fetch_add(1, std::memory_order_relaxed);
        std::make_shared<Connection>(std::move(socket), shared_from_this(), std::move(address_text), core::AddressTicket{})
            ->reject("connection_limit", Errc::server_busy,
                     fmt::format("the HSM serves at most {} connections; try again later", config.max_connections));
        return;
    }
    auto connection = std::make_shared<Connection>(std::move(socket), shared_from_this(), std::move(address_text), std::move(ticket));
    {
        std::lock_guard lock(mutex);
        connections.remove_if([](const std::weak_ptr<Connection>& c) { return c.expired(); });
        connections.push_back(connection);
    }
    connection->start();
}

void Server::Shared::schedule_tally() {
    tally_timer.expires_after(config.refusal_audit_interval);
    tally_timer.async_wait([self = shared_from_this()](const error_code& ec) {
        if (ec || self->stopping) return;
        self->write_tally();
        self->schedule_tally();
    });
}

Server::Server(asio::io_context& io, std::shared_ptr<const KeyStore> store, AuditLog& audit, ServerConfig config)
    : shared_(std::make_shared<Shared>(io, std::move(store), audit, std::move(config))) {}

Server::~Server() {
    stop();
    shared_->write_tally();  // what connections closing after stop() still counted
}

Outcome<std::uint16_t> Server::start() {
    Shared& s = *shared_;
    error_code ec;
    const auto address = asio::ip::make_address(s.config.listen.host, ec);
    if (ec) return fail(Errc::bad_request, fmt::format("'{}' is not an IP address to listen on", s.config.listen.host));
    const tcp::endpoint endpoint(address, s.config.listen.port);
    s.acceptor.open(endpoint.protocol(), ec);
    if (!ec) s.acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec) s.acceptor.bind(endpoint, ec);
    // Backlog: the kernel queue in front of accept(); the connection limit is enforced after accept.
    if (!ec) s.acceptor.listen(asio::socket_base::max_listen_connections, ec);
    if (ec)
        return fail(Errc::io_error, fmt::format("cannot listen on {}:{}: {}", s.config.listen.host, s.config.listen.port, ec.message()));
    const std::uint16_t port = s.acceptor.local_endpoint().port();
    s.accept_next();
    s.schedule_tally();
    return port;
}

void Server::stop() {
    if (shared_->stopping.exchange(true)) return;
    asio::post(shared_->acceptor.get_executor(), [shared = shared_] {
        shared->backoff.cancel();
        error_code ignored;
        shared->acceptor.close(ignored);
    });
    asio::post(shared_->tally_timer.get_executor(), [shared = shared_] { shared->tally_timer.cancel(); });
    shared_->write_tally();
    std::lock_guard lock(shared_->mutex);
    for (auto& weak : shared_->connections)
        if (auto connection = weak.lock()) connection->close();
    shared_->connections.clear();
}

void Server::reload(std::shared_ptr<const KeyStore> store) {
    auto hsm = std::make_shared<const Hsm>(std::move(store));
    std::lock_guard lock(shared_->mutex);
    shared_->hsm = std::move(hsm);
}

std::size_t Server::connection_count() const { return shared_->connection_count.load(); }

Server::Stats Server::stats() const {
    const Shared& s = *shared_;
    return {s.refused_not_allowed.load(), s.address_admission.stats().refused_per_key, s.refused_total.load(),
            s.client_admission.stats().refused_per_key, s.backoff.exhausted_count()};
}

}  // namespace coconut::hsm
