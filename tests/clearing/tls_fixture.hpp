// A throwaway island PKI for tests (coconut::tls): a CA made in process (in production its key never
// leaves coconut-hsmd), a server certificate for 127.0.0.1 and terminal certificates, as PEM files in a
// temporary directory removed at the end.
#pragma once

#include <coconut/tls/tls.hpp>

#include <doctest/doctest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <string>

namespace tls_test {

namespace tls = coconut::tls;
namespace fs = std::filesystem;
using Clock = std::chrono::system_clock;
using namespace std::chrono_literals;

inline tls::PrivateKey new_key() {
    auto key = tls::generate_key();
    REQUIRE(key.ok());
    return std::move(key).value();
}

struct Ca {
    tls::PrivateKey key = new_key();
    tls::Certificate certificate;

    explicit Ca(const std::string& name = "Test island CA") {
        auto made = tls::make_ca_certificate(key, name, Clock::now() - 1h, Clock::now() + 24h * 3650, tls::random_serial());
        REQUIRE(made.ok());
        certificate = *made;
    }

    // A certificate for `key` under this CA; validity [now + from, now + until].
    tls::Certificate issue(const tls::PrivateKey& subject_key, tls::Profile profile, const std::string& name,
                           std::vector<std::string> alt_names = {}, Clock::duration from = -1h, Clock::duration until = 24h * 365) const {
        auto request = tls::make_request(subject_key, {name, "ignored by the issuer"});
        REQUIRE(request.ok());
        tls::IssueOptions options;
        options.profile = profile;
        options.common_name = name;
        options.subject_alt_names = std::move(alt_names);
        options.not_before = Clock::now() + from;
        options.not_after = Clock::now() + until;
        options.serial = tls::random_serial();
        auto issued = tls::issue_certificate(*request, options, certificate, key);
        REQUIRE_MESSAGE(issued.ok(), (issued.ok() ? "" : issued.error().message));
        return *issued;
    }
};

// A directory of PEM files: ca.pem, server.pem/.key (IP:127.0.0.1), and per terminal <id>.pem/.key.
struct Pki {
    fs::path dir;
    Ca ca;

    Pki() {
        std::string pattern = (fs::temp_directory_path() / "coconut-tls-XXXXXX").string();
        REQUIRE(::mkdtemp(pattern.data()) != nullptr);
        dir = pattern;
        REQUIRE(tls::write_certificate(dir / "ca.pem", ca.certificate).ok());
        write_identity("server", tls::Profile::server, "coconut-clearingd", {"IP:127.0.0.1", "DNS:localhost"});
    }
    ~Pki() {
        std::error_code ignored;
        fs::remove_all(dir, ignored);
    }
    Pki(const Pki&) = delete;
    Pki& operator=(const Pki&) = delete;

    // <file>.pem and <file>.key, issued by `issuer` (this PKI's CA unless another is given).
    void write_identity(const std::string& file, tls::Profile profile, const std::string& name, std::vector<std::string> alt_names = {},
                        Clock::duration from = -1h, Clock::duration until = 24h * 365, const Ca* issuer = nullptr) const {
        const tls::PrivateKey key = new_key();
        const tls::Certificate certificate = (issuer ? *issuer : ca).issue(key, profile, name, std::move(alt_names), from, until);
        REQUIRE(tls::write_private_key(dir / (file + ".key"), key).ok());
        REQUIRE(tls::write_certificate(dir / (file + ".pem"), certificate).ok());
    }
    void write_terminal(const std::string& terminal_id) const { write_identity(terminal_id, tls::Profile::terminal, terminal_id); }

    tls::ServerFiles server_files() const { return {dir / "ca.pem", dir / "server.pem", dir / "server.key"}; }
    tls::ClientFiles client_files(const std::string& file) const { return {dir / "ca.pem", dir / (file + ".pem"), dir / (file + ".key")}; }
};

}  // namespace tls_test
