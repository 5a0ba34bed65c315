// The HSM behind coconut-terminal's counter commands (block-card, return-card): an hsm::Client with the
// permission `maintenance`, connected before the card is touched, asked for the APPLICATION BLOCK MAC.
#pragma once

#include "output.hpp"

#include <coconut/sdk/maintenance.hpp>

#include <memory>
#include <string>

namespace coconut::terminal_cli {

struct HsmMacOptions {
    std::string endpoints;                  // --hsm HOST:PORT[,HOST:PORT…]
    std::string key_file;                   // --hsm-key: this counter's client key file (coconut-hsmd client add --permissions maintenance)
    std::string master = "mk-maintenance";  // --maintenance-key LABEL[:VERSION]
};

struct HsmMac {
    sdk::MaintenanceMacProvider provider;
    std::shared_ptr<void> client;  // keeps the connection the provider uses
};

// Usage errors (exit 2) for a bad --hsm list or --maintenance-key; hsm_error (exit 37) for a key file that
// cannot be read or an HSM that cannot be reached.
Result<HsmMac, CliError> connect_hsm_mac(const HsmMacOptions& options);

}  // namespace coconut::terminal_cli
