// The ISO 8583 server with mutual TLS (ServerOptions::tls): a terminal certificate from the island CA is
// the connection's identity; failed and stalled handshakes are closed and counted; resumption.
#include "clearing_fixture.hpp"

#include <coconut/clearing/server.hpp>
#include "tls_fixture.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/write.hpp>

#include <thread>

using namespace clearing_test;
using tls_test::Pki;
namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
using asio::ip::tcp;

namespace {

// The daemon with one ISO 8583 listener over mutual TLS.
struct TlsServerRig {
    Pki pki;
    Rig rig;
    Server* server;

    explicit TlsServerRig(std::chrono::milliseconds handshake_timeout = handshake_timeout_default)
        : rig({}, {listener(pki, handshake_timeout)}), server(&rig.daemon->terminal_server()) {}

    static ServerOptions listener(const Pki& pki, std::chrono::milliseconds handshake_timeout) {
        auto context = coconut::tls::make_server_context(pki.server_files());
        REQUIRE(context.ok());
        ServerOptions options;
        options.tls = std::make_shared<ssl::context>(std::move(context).value());
        options.handshake_timeout = handshake_timeout;
        return options;
    }
};

// A terminal over TLS, blocking; `connected` is false when the handshake (or the first read) failed.
struct TlsClient {
    asio::io_context io;
    ssl::stream<tcp::socket> stream;
    boost::system::error_code handshake_error;
    bool resumed = false;

    TlsClient(std::uint16_t port, coconut::tls::ClientContext& context) : stream(io, context.context()) {
        REQUIRE(context.prepare(stream.native_handle(), "127.0.0.1").ok());
        stream.next_layer().connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
        stream.handshake(ssl::stream_base::client, handshake_error);
        resumed = coconut::tls::ClientContext::resumed(stream.native_handle());
    }
    TlsClient(std::uint16_t port, ssl::context& context) : stream(io, context) {
        stream.next_layer().connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
        stream.handshake(ssl::stream_base::client, handshake_error);
    }

    bool send(const Message& m) {
        auto encoded = iso8583::encode(m, iso8583::coconut_dictionary());
        REQUIRE(encoded.ok());
        const Bytes framed = *iso8583::frame(*encoded);
        boost::system::error_code ec;
        asio::write(stream, asio::buffer(framed), ec);
        return !ec;
    }
    // The next answer, or nullopt when the server closed the connection.
    std::optional<Message> receive() {
        std::array<std::uint8_t, 2> header{};
        boost::system::error_code ec;
        asio::read(stream, asio::buffer(header), ec);
        if (ec) return std::nullopt;
        Bytes body((header[0] << 8) | header[1]);
        asio::read(stream, asio::buffer(body), ec);
        if (ec) return std::nullopt;
        auto m = iso8583::parse(body, iso8583::coconut_dictionary());
        REQUIRE(m.ok());
        return *m;
    }
};

coconut::tls::ClientContext terminal_context(const Pki& pki, const std::string& file) {
    auto context = coconut::tls::ClientContext::create(pki.client_files(file));
    REQUIRE_MESSAGE(context.ok(), (context.ok() ? "" : context.error().message));
    return std::move(context).value();
}

template <class Predicate>
bool eventually(Predicate predicate) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < deadline) {
        if (predicate()) return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
}

}  // namespace

TEST_CASE("server over TLS: the terminal of the certificate signs on and uploads; another field 41 is refused 63") {
    TlsServerRig s;
    s.pki.write_terminal("BUS00001");
    auto context = terminal_context(s.pki, "BUS00001");
    TlsClient c(s.server->port(), context);
    REQUIRE_MESSAGE(!c.handshake_error, c.handshake_error.message());
    REQUIRE(c.send(network_message(1, 1)));
    auto signed_on = c.receive();
    REQUIRE(signed_on);
    CHECK(*signed_on->get(39) == "00");
    REQUIRE(c.send(upload_message(Tap{}, 2)));
    auto booked = c.receive();
    REQUIRE(booked);
    CHECK(*booked->get(39) == "00");
    // SHOP0001 is registered too, but this connection is BUS00001's.
    REQUIRE(c.send(network_message(1, 3, "SHOP0001")));
    auto posing = c.receive();
    REQUIRE(posing);
    CHECK(*posing->get(39) == "63");
    CHECK(s.server->stats().tls_handshakes_full == 1);
    CHECK(s.server->stats().tls_handshake_failures == 0);
}

TEST_CASE("server over TLS: a reconnecting terminal resumes its session and is still that terminal") {
    TlsServerRig s;
    s.pki.write_terminal("BUS00001");
    auto context = terminal_context(s.pki, "BUS00001");
    {
        TlsClient first(s.server->port(), context);
        REQUIRE(!first.handshake_error);
        CHECK_FALSE(first.resumed);
        REQUIRE(first.send(network_message(1, 1)));
        REQUIRE(first.receive());  // reading also takes the session ticket
    }
    REQUIRE(context.has_session());
    TlsClient second(s.server->port(), context);
    REQUIRE(!second.handshake_error);
    CHECK(second.resumed);
    REQUIRE(second.send(network_message(1, 2)));
    auto answer = second.receive();
    REQUIRE(answer);
    CHECK(*answer->get(39) == "00");
    REQUIRE(second.send(network_message(1, 3, "SHOP0001")));
    CHECK(*second.receive()->get(39) == "63");
    CHECK(s.server->stats().tls_handshakes_full == 1);
    CHECK(s.server->stats().tls_handshakes_resumed == 1);
}

TEST_CASE("server over TLS: no certificate, another CA's, an expired one or a server certificate: closed and counted") {
    TlsServerRig s;
    const tls_test::Ca other("Another island CA");
    s.pki.write_identity("foreign", coconut::tls::Profile::terminal, "BUS00001", {}, -std::chrono::hours(1), std::chrono::hours(24),
                         &other);
    s.pki.write_identity("expired", coconut::tls::Profile::terminal, "BUS00001", {}, -std::chrono::hours(48), -std::chrono::hours(24));
    s.pki.write_identity("posing", coconut::tls::Profile::server, "BUS00001", {"IP:127.0.0.1"});
    std::uint64_t failures = 0;
    for (const char* file : {"foreign", "expired", "posing"}) {
        CAPTURE(file);
        auto context = terminal_context(s.pki, file);
        TlsClient c(s.server->port(), context);
        // TLS 1.3: the client finishes its side first; the refusal arrives as the next read.
        if (!c.handshake_error) {
            c.send(network_message(1, 1));
            CHECK_FALSE(c.receive().has_value());
        }
        ++failures;
        CHECK(eventually([&] { return s.server->stats().tls_handshake_failures == failures; }));
    }
    ssl::context anonymous(ssl::context::tls_client);
    anonymous.load_verify_file((s.pki.dir / "ca.pem").string());
    anonymous.set_verify_mode(ssl::verify_peer);
    TlsClient c(s.server->port(), anonymous);
    if (!c.handshake_error) {
        c.send(network_message(1, 1));
        CHECK_FALSE(c.receive().has_value());
    }
    CHECK(eventually([&] { return s.server->stats().tls_handshake_failures == failures + 1; }));
    CHECK(s.server->stats().tls_handshakes_full == 0);
}

TEST_CASE("server over TLS: a plain-TCP peer and a stalled handshake are closed within the handshake timeout") {
    TlsServerRig s(std::chrono::milliseconds(300));
    asio::io_context io;
    tcp::socket silent(io);
    silent.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), s.server->port()));
    const auto started = std::chrono::steady_clock::now();
    // Reads (an alert, if the server sends one) until the server closes the connection.
    const auto read_until_closed = [](tcp::socket& socket) {
        std::array<std::uint8_t, 256> bytes{};
        boost::system::error_code ec;
        while (!ec) socket.read_some(asio::buffer(bytes), ec);
        return ec;
    };
    CHECK(read_until_closed(silent));
    CHECK(std::chrono::steady_clock::now() - started < std::chrono::seconds(5));
    CHECK(eventually([&] { return s.server->stats().tls_handshake_failures == 1; }));
    CHECK(s.server->stats().timeouts == 1);

    // A plain ISO 8583 frame where a ClientHello belongs.
    tcp::socket plain(io);
    plain.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), s.server->port()));
    auto encoded = iso8583::encode(network_message(1, 1), iso8583::coconut_dictionary());
    REQUIRE(encoded.ok());
    asio::write(plain, asio::buffer(*iso8583::frame(*encoded)));
    CHECK(read_until_closed(plain));
    CHECK(eventually([&] { return s.server->stats().tls_handshake_failures == 2; }));
}
