// The island's daemons for one command: coconut-hsmd over D/hsm and coconut-clearingd over D/clearing, each
// on a free loopback port, logs in D/logs, stopped (SIGTERM, by PID) when this object goes away — and by
// the SIGINT handler if the user interrupts. With `http`, the clearing also serves its HTTP API (cardholder
// and clerk) on a free loopback port of its own (`--http-listen`, port in D/logs/clearingd-http.ready).
// Terminals reach the clearing over mutual TLS: before the HSM starts, its store gets the island CA if it
// has none (certificates.hpp); before the clearing starts, its server certificate is issued or renewed.
#pragma once

#include "certificates.hpp"
#include "process.hpp"
#include "world.hpp"

#include <optional>

namespace coconut::cli {

class Services {
public:
    explicit Services(WorldPaths world, bool http = false) : world_(std::move(world)), http_(http) {}

    Daemon& hsm() {
        if (!hsm_) {
            std::error_code ec;
            fs::create_directories(world_.logs(), ec);
            if (!fs::exists(island_ca_file(world_), ec)) ensure_island_ca(world_);
            hsm_ = Daemon::start("coconut-hsmd",
                                 {require_tool("coconut-hsmd"), "serve", "--store", world_.hsm_store().string(), "--listen", "127.0.0.1:0",
                                  "--threads", "2"},
                                 world_.logs() / "hsmd.ready", world_.logs() / "hsmd.log");
        }
        return *hsm_;
    }

    Daemon& clearing() {
        if (!clearing_) {
            const std::string hsm_endpoint = hsm().endpoint();
            const TlsIdentity identity = clearing_identity(world_);
            ensure_certificate(world_, hsm_endpoint, identity,
                               {tls::Profile::server, clearing_common_name, clearing_alt_names, 365, renew_within_days_default});
            std::vector<std::string> argv{require_tool("coconut-clearingd"),
                                          "serve",
                                          "--data",
                                          world_.clearing_data().string(),
                                          "--iso-listen",
                                          "127.0.0.1:0",
                                          "--hsm",
                                          hsm_endpoint,
                                          "--hsm-key",
                                          world_.clearing_key().string(),
                                          "--tls-cert",
                                          identity.certificate().string(),
                                          "--tls-key",
                                          identity.private_key().string(),
                                          "--tls-ca",
                                          identity.ca().string()};
            if (http_) {
                std::error_code ignored;
                fs::remove(http_ready_file(), ignored);
                // The demo's settlement runs 2 s after its cut-off (settle.cpp: every terminal has stopped).
                argv.insert(argv.end(), {"--http-listen", "127.0.0.1:0", "--http-ready-file", http_ready_file().string(),
                                         "--settlement-margin-s", "2"});
            }
            clearing_ =
                Daemon::start("coconut-clearingd", std::move(argv), world_.logs() / "clearingd.ready", world_.logs() / "clearingd.log");
            if (http_) http_port_ = wait_for_port(http_ready_file(), "coconut-clearingd HTTP", world_.logs() / "clearingd.log");
        }
        return *clearing_;
    }

    // "127.0.0.1:PORT" of the clearing's HTTP API (starts the clearing; needs `http`).
    std::string clearing_http() {
        clearing();
        return "127.0.0.1:" + std::to_string(http_port_);
    }
    std::uint16_t clearing_http_port() {
        clearing();
        return http_port_;
    }

    // SIGTERM: the clearing answers what it holds, syncs and exits 0.
    int stop_clearing() {
        if (!clearing_) return 0;
        const int code = clearing_->stop();
        clearing_.reset();
        return code;
    }

private:
    fs::path http_ready_file() const { return world_.logs() / "clearingd-http.ready"; }
    WorldPaths world_;
    bool http_ = false;
    std::uint16_t http_port_ = 0;
    std::optional<Daemon> hsm_;
    std::optional<Daemon> clearing_;
};

}  // namespace coconut::cli
