/// @file
/// Card maintenance at a service counter: APPLICATION BLOCK of the purse with a MAC computed by the issuer's
/// HSM (service maintenance-mac, hsm-stub/PROTOCOL.md), never by the terminal — the terminal holds no
/// maintenance key. docs/CARD-SPEC.md §2 "Application block" has the APDUs.
///
///   auto outcome = coconut::sdk::block_application(reader, hsm_mac_provider, /*permanent=*/true);
///
/// The provider is how the terminal reaches the HSM (coconut-terminal: an hsm::Client with the permission
/// `maintenance`; tests: the in-process HSM or the key itself).
#pragma once

#include <coconut/sdk/apps.hpp>

#include <functional>
#include <string>

namespace coconut::sdk {

class Reader;
struct FlowError;

/// What the HSM's maintenance-mac service is asked: the card, its GET CHALLENGE and the command header.
struct MaintenanceMacRequest {
    std::array<std::uint8_t, 8> issuer_id{};
    Asn asn{};
    crypto::Challenge4 challenge{};
    crypto::MaintenanceHeader header{};
};
/// The MAC, or why the HSM could not give it (the message is shown to the operator).
using MaintenanceMacProvider = std::function<Result<crypto::Mac4, std::string>(const MaintenanceMacRequest&)>;

/// The result of block_application / unblock_application.
struct BlockOutcome {
    PurseInfo card;
    bool permanent = false;
    bool was_blocked = false;  ///< SELECT already answered 6283 (an earlier block); the block was sent again
};

}  // namespace coconut::sdk
