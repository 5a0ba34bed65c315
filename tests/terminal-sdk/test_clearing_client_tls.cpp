// ClearingClient over mutual TLS (ClearingOptions::tls) against the real ISO 8583 server with a server
// context: it verifies the server, shows its certificate, resumes its session after a reconnect, names
// what is wrong when a file or a certificate is, and with a list of endpoints passes over a node whose
// handshake fails.
#include "clearing_fixture.hpp"

#include <coconut/clearing/server.hpp>
#include "tls_fixture.hpp"

#include <coconut/sdk/clearing_client.hpp>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>

#include <sys/stat.h>

#include <thread>

using namespace clearing_test;
using tls_test::Pki;
namespace sdk = coconut::sdk;
namespace asio = boost::asio;

namespace {

// The daemon with one ISO 8583 listener over mutual TLS (drained by its destructor).
struct TlsLinkRig {
    Pki pki;
    Rig clearing;
    Server* server;

    explicit TlsLinkRig(std::chrono::milliseconds read_idle_timeout = read_idle_timeout_default)
        : clearing({}, {listener(pki, read_idle_timeout)}), server(&clearing.daemon->terminal_server()) {
        pki.write_terminal("BUS00001");
    }

    static ServerOptions listener(const Pki& pki, std::chrono::milliseconds read_idle_timeout) {
        auto context = coconut::tls::make_server_context(pki.server_files());
        REQUIRE(context.ok());
        ServerOptions options;
        options.tls = std::make_shared<asio::ssl::context>(std::move(context).value());
        options.read_idle_timeout = read_idle_timeout;
        return options;
    }

    sdk::ClearingOptions options(const std::string& file = "BUS00001") const {
        sdk::ClearingOptions o;
        o.terminal_id = "BUS00001";
        o.tls = sdk::ClearingTls{pki.dir / "ca.pem", pki.dir / (file + ".pem"), pki.dir / (file + ".key"), nullptr};
        return o;
    }
    auto connect(const sdk::ClearingOptions& o, const std::string& host = "127.0.0.1") {
        return sdk::ClearingClient::connect({host, server->port()}, o);
    }
};

}  // namespace

TEST_CASE("ClearingClient over TLS: signs on, and after the link drops reconnects with a resumed session") {
    TlsLinkRig rig(std::chrono::milliseconds(400));
    auto client = rig.connect(rig.options());
    REQUIRE_MESSAGE(client.ok(), (client.ok() ? "" : client.error().message));
    REQUIRE((*client)->sign_on().ok());
    CHECK((*client)->link_stats().tls_full == 1);
    CHECK((*client)->link_stats().tls_resumed == 0);

    // The daemon closes the idle connection; the next exchange finds it closed, the one after
    // reconnects (and signs on again) with the session ticket of the first connection.
    std::this_thread::sleep_for(std::chrono::milliseconds(800));
    sdk::Hotlist hotlist;
    auto first = (*client)->sync_hotlist(hotlist);
    if (!first) {
        CHECK(first.error().code == sdk::ClearingErrorCode::closed);
        REQUIRE((*client)->sync_hotlist(hotlist).ok());
    }
    CHECK((*client)->link_stats().connects == 2);
    CHECK((*client)->link_stats().tls_full == 1);
    CHECK((*client)->link_stats().tls_resumed == 1);
    CHECK(rig.server->stats().tls_handshakes_resumed == 1);
}

TEST_CASE("ClearingClient over TLS refuses a server that is not the island's or not the address it dialled") {
    TlsLinkRig rig;
    const tls_test::Ca other("Another island CA");
    REQUIRE(coconut::tls::write_certificate(rig.pki.dir / "other-ca.pem", other.certificate).ok());
    sdk::ClearingOptions options = rig.options();
    options.tls->ca = rig.pki.dir / "other-ca.pem";
    auto wrong_ca = rig.connect(options);
    REQUIRE_FALSE(wrong_ca.ok());
    CHECK(wrong_ca.error().code == sdk::ClearingErrorCode::connect_failed);
    CHECK(wrong_ca.error().message.find("TLS handshake with 127.0.0.1:") == 0);
    CHECK(wrong_ca.error().message.find("other-ca.pem") != std::string::npos);

    // The server certificate names 127.0.0.1 and localhost, not 127.0.0.2 (which reaches it too).
    auto wrong_address = rig.connect(rig.options(), "127.0.0.2");
    REQUIRE_FALSE(wrong_address.ok());
    CHECK(wrong_address.error().code == sdk::ClearingErrorCode::connect_failed);
    CHECK(rig.connect(rig.options(), "localhost").ok());
}

TEST_CASE("ClearingClient over TLS: the clearing's refusal of a foreign or expired certificate reads as a closed TLS link") {
    TlsLinkRig rig;
    const tls_test::Ca other("Another island CA");
    rig.pki.write_identity("foreign", coconut::tls::Profile::terminal, "BUS00001", {}, -std::chrono::hours(1), std::chrono::hours(24),
                           &other);
    rig.pki.write_identity("expired", coconut::tls::Profile::terminal, "BUS00001", {}, -std::chrono::hours(48), -std::chrono::hours(24));
    for (const char* file : {"foreign", "expired"}) {
        CAPTURE(file);
        auto client = rig.connect(rig.options(file));
        if (!client) {
            CHECK(client.error().code == sdk::ClearingErrorCode::connect_failed);
            continue;
        }
        auto signed_on = (*client)->sign_on();
        REQUIRE_FALSE(signed_on.ok());
        CHECK(signed_on.error().code == sdk::ClearingErrorCode::closed);
        CHECK(signed_on.error().message.find("TLS") != std::string::npos);
    }
    CHECK(rig.server->stats().tls_handshakes_full == 0);
}

TEST_CASE("ClearingClient: TLS files missing, too open or not matching are tls_error, named") {
    TlsLinkRig rig;
    sdk::ClearingOptions options = rig.options();
    options.tls->private_key = rig.pki.dir / "missing.key";
    auto missing = rig.connect(options);
    REQUIRE_FALSE(missing.ok());
    CHECK(missing.error().code == sdk::ClearingErrorCode::tls_error);
    CHECK(missing.error().message.find("missing.key") != std::string::npos);

    REQUIRE(::chmod((rig.pki.dir / "BUS00001.key").c_str(), 0640) == 0);
    auto open_key = rig.connect(rig.options());
    REQUIRE_FALSE(open_key.ok());
    CHECK(open_key.error().code == sdk::ClearingErrorCode::tls_error);
    CHECK(open_key.error().message.find("chmod 600") != std::string::npos);
    REQUIRE(::chmod((rig.pki.dir / "BUS00001.key").c_str(), 0600) == 0);

    options = rig.options();
    options.tls->private_key = rig.pki.dir / "server.key";
    auto mismatched = rig.connect(options);
    REQUIRE_FALSE(mismatched.ok());
    CHECK(mismatched.error().code == sdk::ClearingErrorCode::tls_error);
    CHECK(mismatched.error().message.find("does not belong") != std::string::npos);
}

TEST_CASE("ClearingClient over TLS with a list: a node whose certificate does not name the address is passed over") {
    TlsLinkRig rig;
    // Another node whose certificate (from the island CA) names another host only: its handshake fails.
    rig.pki.write_identity("elsewhere", coconut::tls::Profile::server, "coconut-clearingd", {"DNS:elsewhere.island"});
    auto context =
        coconut::tls::make_server_context({rig.pki.dir / "ca.pem", rig.pki.dir / "elsewhere.pem", rig.pki.dir / "elsewhere.key"});
    REQUIRE(context.ok());
    ServerOptions misnamed;
    misnamed.tls = std::make_shared<asio::ssl::context>(std::move(context).value());
    Rig other({}, {misnamed});
    const sdk::ClearingEndpoint wrong{"127.0.0.1", other.daemon->terminal_server().port()};
    const sdk::ClearingEndpoint right{"127.0.0.1", rig.server->port()};

    auto client = sdk::ClearingClient::connect(std::vector{wrong, right}, rig.options());
    REQUIRE_MESSAGE(client.ok(), (client.ok() ? "" : client.error().message));
    REQUIRE((*client)->sign_on().ok());
    CHECK((*client)->current_endpoint() == right);
    CHECK((*client)->link_stats().failovers == 1);
    CHECK((*client)->link_stats().endpoint_failures == 1);
    CHECK((*client)->link_stats().tls_full == 1);

    // The misnamed node and one where nothing listens: connect_failed naming both and what each did.
    auto none = sdk::ClearingClient::connect(std::vector{wrong, sdk::ClearingEndpoint{"127.0.0.2", rig.server->port()}}, rig.options());
    REQUIRE_FALSE(none.ok());
    INFO(none.error().message);
    CHECK(none.error().code == sdk::ClearingErrorCode::connect_failed);
    CHECK(none.error().message.find(sdk::to_string(wrong) + " — TLS handshake with " + sdk::to_string(wrong) + " failed") !=
          std::string::npos);
    CHECK(none.error().message.find("127.0.0.2:" + std::to_string(rig.server->port()) + " — cannot connect") != std::string::npos);
}
