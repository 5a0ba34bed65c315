// coconut::tls: the island CA's certificates and the mutual-TLS contexts of the ISO 8583 link
// (clearing/tls/include/coconut/tls/tls.hpp), handshakes over loopback.
#include "tls_fixture.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/write.hpp>

#include <sys/stat.h>

#include <fstream>

using namespace tls_test;
namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
using asio::ip::tcp;

namespace {

struct Handshake {
    boost::system::error_code server_error;
    boost::system::error_code client_error;
    std::optional<std::string> terminal_id;  // what the server read from the client certificate
    bool resumed = false;                    // client side
    std::string version;
    std::string session;  // tls::describe_session on the client
};

// One connection over loopback: server and client handshakes, then one byte from the server that the
// client reads (so a TLS 1.3 session ticket, sent after the handshake, reaches the client's cache).
// `prepare` configures the client's SSL before its handshake.
Handshake handshake(ssl::context& server_context, ssl::context& client_context, const std::function<void(SSL*)>& prepare,
                    bool read_after = true) {
    asio::io_context io;
    tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    ssl::stream<tcp::socket> server(io, server_context);
    ssl::stream<tcp::socket> client(io, client_context);
    prepare(client.native_handle());
    Handshake result;
    std::uint8_t sent = 0x5A, received = 0;
    acceptor.async_accept(server.next_layer(), [&](boost::system::error_code ec) {
        if (ec) return void(result.server_error = ec);
        server.async_handshake(ssl::stream_base::server, [&](boost::system::error_code handshake_error) {
            result.server_error = handshake_error;
            if (handshake_error) return server.next_layer().close();
            result.terminal_id = tls::terminal_id_of_peer(server.native_handle());
            asio::async_write(server, asio::buffer(&sent, 1), [](boost::system::error_code, std::size_t) {});
        });
    });
    client.next_layer().async_connect(acceptor.local_endpoint(), [&](boost::system::error_code ec) {
        if (ec) return void(result.client_error = ec);
        client.async_handshake(ssl::stream_base::client, [&](boost::system::error_code handshake_error) {
            result.client_error = handshake_error;
            if (handshake_error) return;
            result.resumed = tls::ClientContext::resumed(client.native_handle());
            result.version = SSL_get_version(client.native_handle());
            result.session = tls::describe_session(client.native_handle());
            if (!read_after) return;
            asio::async_read(client, asio::buffer(&received, 1), [&](boost::system::error_code read_error, std::size_t) {
                if (!read_error) CHECK(received == sent);
            });
        });
    });
    io.run_for(std::chrono::seconds(10));
    return result;
}

Handshake handshake(ssl::context& server_context, tls::ClientContext& client, const std::string& host = "127.0.0.1",
                    bool read_after = true) {
    return handshake(
        server_context, client.context(), [&](SSL* ssl) { REQUIRE(client.prepare(ssl, host).ok()); }, read_after);
}

ssl::context server_context(const Pki& pki) {
    auto context = tls::make_server_context(pki.server_files());
    REQUIRE_MESSAGE(context.ok(), (context.ok() ? "" : context.error().message));
    return std::move(context).value();
}

tls::ClientContext client_context(const Pki& pki, const std::string& file) {
    auto context = tls::ClientContext::create(pki.client_files(file));
    REQUIRE_MESSAGE(context.ok(), (context.ok() ? "" : context.error().message));
    return std::move(context).value();
}

coconut::ByteView bytes_of(const std::string& text) {
    return coconut::ByteView(reinterpret_cast<const std::uint8_t*>(text.data()), text.size());
}

}  // namespace

TEST_CASE("a terminal's request becomes a certificate naming the terminal id, O and validity as issued") {
    Ca ca;
    const tls::PrivateKey key = new_key();
    auto request = tls::make_request(key, {"BUS00001", std::string(tls::terminal_organization)});
    REQUIRE(request.ok());
    // The HSM receives the request as PEM or DER.
    auto from_pem = tls::parse_request(bytes_of(tls::to_pem(*request)));
    auto from_der = tls::parse_request(tls::to_der(*request));
    REQUIRE(from_pem.ok());
    REQUIRE(from_der.ok());
    CHECK(tls::subject_of(*from_der).common_name == "BUS00001");

    const auto now = Clock::now();
    tls::IssueOptions options;
    options.common_name = "BUS00001";
    options.not_before = now - 1min;
    options.not_after = now + 24h * 365;
    options.serial = tls::random_serial();
    auto issued = tls::issue_certificate(*from_pem, options, ca.certificate, ca.key);
    REQUIRE(issued.ok());
    const tls::CertificateInfo info = tls::describe(*issued);
    CHECK(info.subject == tls::Subject{"BUS00001", std::string(tls::terminal_organization)});
    CHECK(info.issuer.common_name == "Test island CA");
    CHECK(info.profile == tls::Profile::terminal);
    CHECK(info.subject_alt_names.empty());
    CHECK(std::chrono::abs(info.not_before - options.not_before) < 1s);
    CHECK(std::chrono::abs(info.not_after - options.not_after) < 1s);
    CHECK(info.serial_hex.size() == 32);
    CHECK(tls::terminal_id_of(*issued) == "BUS00001");
    CHECK(tls::same_public_key(key, *issued));
    CHECK_FALSE(tls::same_public_key(ca.key, *issued));

    // Round trips of the certificate itself.
    auto again = tls::parse_certificate(tls::to_der(*issued));
    REQUIRE(again.ok());
    CHECK(tls::to_pem(*again) == tls::to_pem(*issued));
    CHECK(tls::describe(ca.certificate).profile == tls::Profile::ca);
}

TEST_CASE("a server certificate carries its subject alternative names and is not a terminal certificate") {
    Ca ca;
    const tls::Certificate server = ca.issue(new_key(), tls::Profile::server, "coconut-clearingd", {"IP:127.0.0.1", "DNS:clearing.island"});
    const tls::CertificateInfo info = tls::describe(server);
    CHECK(info.profile == tls::Profile::server);
    CHECK(info.subject_alt_names == std::vector<std::string>{"IP:127.0.0.1", "DNS:clearing.island"});
    CHECK_FALSE(tls::terminal_id_of(server).has_value());
}

TEST_CASE("issuing refuses what the profile does not allow, naming it") {
    Ca ca;
    const tls::PrivateKey key = new_key();
    auto request = tls::make_request(key, {"whatever", "whatever"});
    REQUIRE(request.ok());
    tls::IssueOptions options;
    options.not_before = Clock::now();
    options.not_after = Clock::now() + 24h;
    options.serial = tls::random_serial();
    const auto refused = [&](const tls::IssueOptions& o) {
        auto issued = tls::issue_certificate(*request, o, ca.certificate, ca.key);
        REQUIRE_FALSE(issued.ok());
        CHECK(issued.error().code == tls::ErrorCode::bad_input);
        return issued.error().message;
    };
    options.common_name = "BUS0001";  // 7 characters: not a field 41
    CHECK(refused(options).find("exactly 8") != std::string::npos);
    options.common_name = "BUS00001";
    options.subject_alt_names = {"IP:127.0.0.1"};
    CHECK(refused(options).find("no subject alternative names") != std::string::npos);
    options.profile = tls::Profile::server;
    options.subject_alt_names = {"IP:127.0.0.1,DNS:evil"};
    CHECK(refused(options).find("IP:<address> or DNS:<name>") != std::string::npos);
    options.subject_alt_names = {};
    CHECK(refused(options).find("1–8 subject alternative names") != std::string::npos);
    options.subject_alt_names = {"DNS:clearing.island"};
    options.not_after = Clock::now() + 24h * 4000;  // past the CA's ten years
    CHECK(refused(options).find("after the CA certificate") != std::string::npos);
    options.not_after = options.not_before - 1s;
    CHECK(refused(options).find("end after it begins") != std::string::npos);
    options.not_after = Clock::now() + 24h;
    options.serial = {0x00, 0x01};
    CHECK(refused(options).find("serial") != std::string::npos);
}

TEST_CASE("a request that does not parse or whose signature fails is refused") {
    auto garbage = tls::parse_request(bytes_of("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"));
    REQUIRE_FALSE(garbage.ok());
    CHECK(garbage.error().code == tls::ErrorCode::bad_input);
    CHECK(garbage.error().message.find("not a certificate request") != std::string::npos);

    auto request = tls::make_request(new_key(), {"BUS00001", "x"});
    REQUIRE(request.ok());
    coconut::Bytes der = tls::to_der(*request);
    der[der.size() - 3] ^= 0x01;  // inside the signature
    auto tampered = tls::parse_request(der);
    REQUIRE_FALSE(tampered.ok());
    CHECK(tampered.error().message.find("signature does not verify") != std::string::npos);

    coconut::Bytes trailing = tls::to_der(*request);
    trailing.push_back(0);
    CHECK_FALSE(tls::parse_request(trailing).ok());
}

TEST_CASE("private keys are written 0600 through a new file and refused when others may read them") {
    Pki pki;
    const fs::path path = pki.dir / "BUS00001.key";
    pki.write_terminal("BUS00001");
    struct stat status {};
    REQUIRE(::stat(path.c_str(), &status) == 0);
    CHECK((status.st_mode & 0777) == 0600);
    CHECK(tls::read_private_key(path).ok());
    // Renewal replaces the key in place.
    const tls::PrivateKey second = new_key();
    REQUIRE(tls::write_private_key(path, second).ok());
    auto reread = tls::read_private_key(path);
    REQUIRE(reread.ok());
    CHECK(EVP_PKEY_eq(reread->get(), second.get()) == 1);
    // Nothing left beside it.
    std::size_t files = 0;
    for (const auto& entry : fs::directory_iterator(pki.dir)) files += entry.path().filename().string().front() == '.';
    CHECK(files == 0);

    REQUIRE(::chmod(path.c_str(), 0644) == 0);
    auto refused = tls::read_private_key(path);
    REQUIRE_FALSE(refused.ok());
    CHECK(refused.error().code == tls::ErrorCode::file_mode);
    CHECK(refused.error().message.find("644") != std::string::npos);

    auto missing = tls::read_private_key(pki.dir / "none.key");
    REQUIRE_FALSE(missing.ok());
    CHECK(missing.error().code == tls::ErrorCode::io);

    // A certificate is not a key.
    REQUIRE(::chmod((pki.dir / "ca.pem").c_str(), 0600) == 0);
    auto wrong = tls::read_private_key(pki.dir / "ca.pem");
    REQUIRE_FALSE(wrong.ok());
    CHECK(wrong.error().code == tls::ErrorCode::bad_input);
}

TEST_CASE("the CA key survives its PKCS#8 form (how coconut-hsmd seals it)") {
    Ca ca;
    auto der = tls::private_key_der(ca.key);
    REQUIRE(der.ok());
    auto back = tls::private_key_from_der(*der);
    REQUIRE(back.ok());
    CHECK(tls::same_public_key(*back, ca.certificate));
    CHECK_FALSE(tls::private_key_from_der(coconut::ByteView(der->data(), der->size() - 1)).ok());
}

TEST_CASE("mutual TLS over loopback: a full handshake, then a resumed one, the terminal id read by the server both times") {
    Pki pki;
    pki.write_terminal("BUS00001");
    ssl::context server = server_context(pki);
    tls::ClientContext client = client_context(pki, "BUS00001");

    const Handshake first = handshake(server, client);
    CHECK_MESSAGE(!first.server_error, first.server_error.message());
    CHECK_MESSAGE(!first.client_error, first.client_error.message());
    CHECK(first.version == "TLSv1.3");
    CHECK(first.session == "TLSv1.3 TLS_AES_128_GCM_SHA256");
    CHECK(first.terminal_id == "BUS00001");
    CHECK_FALSE(first.resumed);
    CHECK(client.has_session());

    const Handshake second = handshake(server, client);
    CHECK(!second.server_error);
    CHECK(!second.client_error);
    CHECK(second.resumed);
    CHECK(second.session == "TLSv1.3 TLS_AES_128_GCM_SHA256 (resumed)");
    CHECK(second.terminal_id == "BUS00001");

    client.forget_session();
    const Handshake third = handshake(server, client);
    CHECK(!third.client_error);
    CHECK_FALSE(third.resumed);

    // Connections that end without reading (no new ticket) and without close_notify: the cached session
    // still resumes the next one, every time.
    for (int i = 0; i < 3; ++i) {
        const Handshake again = handshake(server, client, "127.0.0.1", false);
        CHECK(!again.client_error);
        CHECK(again.resumed);
    }
}

TEST_CASE("the server refuses a client without a certificate") {
    Pki pki;
    ssl::context server = server_context(pki);
    ssl::context anonymous(ssl::context::tls_client);
    anonymous.load_verify_file((pki.dir / "ca.pem").string());
    anonymous.set_verify_mode(ssl::verify_peer);
    const Handshake result = handshake(server, anonymous, [](SSL*) {});
    CHECK(result.server_error);
    CHECK_FALSE(result.terminal_id.has_value());
}

TEST_CASE("the server refuses a certificate from another CA, an expired one, and a server certificate posing as a terminal") {
    Pki pki;
    const Ca other("Another island CA");
    pki.write_identity("foreign", tls::Profile::terminal, "BUS00001", {}, -1h, 24h, &other);
    pki.write_identity("expired", tls::Profile::terminal, "BUS00002", {}, -48h, -24h);
    pki.write_identity("posing", tls::Profile::server, "BUS00003", {"IP:127.0.0.1"});
    ssl::context server = server_context(pki);
    for (const char* file : {"foreign", "expired", "posing"}) {
        CAPTURE(file);
        tls::ClientContext client = client_context(pki, file);
        const Handshake result = handshake(server, client);
        CHECK(result.server_error);
        CHECK_FALSE(result.terminal_id.has_value());
    }
}

TEST_CASE("a terminal refuses a server whose certificate does not name the address it connected to, or is a terminal's") {
    Pki pki;
    pki.write_terminal("BUS00001");
    ssl::context server = server_context(pki);
    tls::ClientContext client = client_context(pki, "BUS00001");
    CHECK(handshake(server, client, "localhost").client_error == boost::system::error_code());  // DNS:localhost is in it
    client.forget_session();
    CHECK(handshake(server, client, "127.0.0.2").client_error);
    CHECK(handshake(server, client, "clearing.island").client_error);

    // A terminal's certificate (clientAuth) as the server's: refused by purpose.
    pki.write_identity("server", tls::Profile::terminal, "SHOP0001");
    ssl::context impostor = server_context(pki);
    client.forget_session();
    CHECK(handshake(impostor, client).client_error);
}

TEST_CASE("contexts name the file that is wrong") {
    Pki pki;
    tls::ServerFiles files = pki.server_files();
    files.ca = pki.dir / "missing.pem";
    auto no_ca = tls::make_server_context(files);
    REQUIRE_FALSE(no_ca.ok());
    CHECK(no_ca.error().message.find("missing.pem") != std::string::npos);

    pki.write_terminal("BUS00001");
    files = pki.server_files();
    files.private_key = pki.dir / "BUS00001.key";  // another certificate's key
    auto mismatched = tls::make_server_context(files);
    REQUIRE_FALSE(mismatched.ok());
    CHECK(mismatched.error().message.find("does not belong") != std::string::npos);
}
