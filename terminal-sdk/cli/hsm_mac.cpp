#include "hsm_mac.hpp"

#include "exit_codes.hpp"

#include <coconut/hsm/client.hpp>

#include <fmt/format.h>

namespace coconut::terminal_cli {

Result<HsmMac, CliError> connect_hsm_mac(const HsmMacOptions& options) {
    auto endpoints = hsm::wire::parse_endpoints(options.endpoints);
    if (!endpoints) return Unexpected{CliError{exit_usage, "usage", "usage", fmt::format("--hsm: {}", endpoints.error().message)}};
    auto master = hsm::parse_key_ref(options.master);
    if (!master)
        return Unexpected{
            CliError{exit_usage, "usage", "usage", fmt::format("--maintenance-key '{}': expected LABEL or LABEL:VERSION", options.master)}};
    auto credentials = hsm::wire::read_client_credentials(options.key_file);
    if (!credentials)
        return Unexpected{CliError{exit_hsm_error, "hsm", "hsm_error", fmt::format("--hsm-key: {}", credentials.error().message)}};
    auto client = hsm::Client::connect(std::move(*endpoints), std::move(*credentials));
    if (!client)
        return Unexpected{CliError{exit_hsm_error, "hsm", "hsm_error",
                                   fmt::format("HSM {}: {} (nothing was done to the card)", options.endpoints, client.error().message)}};
    std::shared_ptr<hsm::Client> shared(std::move(*client));
    HsmMac out;
    out.client = shared;
    out.provider = [shared, key = *master](const sdk::MaintenanceMacRequest& request) -> Result<crypto::Mac4, std::string> {
        hsm::MaintenanceMacRequest call{key, hsm::CardIdentity{request.issuer_id, request.asn}, request.challenge, request.header};
        auto answer = shared->maintenance_mac(call);
        if (!answer) return Unexpected{fmt::format("{}: {}", hsm::errc_name(answer.error().code), answer.error().message)};
        return answer->mac;
    };
    return out;
}

}  // namespace coconut::terminal_cli
