// The island's daemons for one command: coconut-hsmd over D/hsm and coconut-clearingd over D/clearing, each
// on a free loopback port, logs in D/logs, stopped (SIGTERM, by PID) when this object goes away — and by
// the SIGINT handler if the user interrupts.
#pragma once

#include "process.hpp"
#include "world.hpp"

#include <optional>

namespace coconut::cli {

class Services {
public:
    explicit Services(WorldPaths world) : world_(std::move(world)) {}

    Daemon& hsm() {
        if (!hsm_) {
            std::error_code ec;
            fs::create_directories(world_.logs(), ec);
            hsm_ = Daemon::start("coconut-hsmd",
                                 {require_tool("coconut-hsmd"), "serve", "--store", world_.hsm_store().string(), "--listen",
                                  "127.0.0.1:0", "--threads", "2"},
                                 world_.logs() / "hsmd.ready", world_.logs() / "hsmd.log");
        }
        return *hsm_;
    }

    Daemon& clearing() {
        if (!clearing_) {
            const std::string hsm_endpoint = hsm().endpoint();
            clearing_ = Daemon::start("coconut-clearingd",
                                      {require_tool("coconut-clearingd"), "serve", "--data", world_.clearing_data().string(),
                                       "--iso-listen", "127.0.0.1:0", "--hsm", hsm_endpoint, "--hsm-key",
                                       world_.clearing_key().string()},
                                      world_.logs() / "clearingd.ready", world_.logs() / "clearingd.log");
        }
        return *clearing_;
    }

    // SIGTERM: the clearing answers what it holds, syncs and exits 0.
    int stop_clearing() {
        if (!clearing_) return 0;
        const int code = clearing_->stop();
        clearing_.reset();
        return code;
    }

private:
    WorldPaths world_;
    std::optional<Daemon> hsm_;
    std::optional<Daemon> clearing_;
};

}  // namespace coconut::cli
