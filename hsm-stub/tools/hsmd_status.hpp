// `coconut-hsmd serve --http-port PORT [--http-host ADDR] [--http-ready-file F]`: the optional status
// port (coconut/hsm/status_http.hpp), its options and its start next to the HSM server.
#pragma once

#include <coconut/hsm/status_http.hpp>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <cstdio>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <system_error>

namespace coconut::hsm {

struct StatusOptions {
    std::optional<std::uint16_t> port;
    std::string host = "127.0.0.1";
    std::string ready_file;

    void add_to(CLI::App* serve) {
        serve
            ->add_option("--http-port", port,
                         "serve /healthz and /metrics over plain HTTP on this port (0 = any free port); off when absent")
            ->group("Status");
        serve->add_option("--http-host", host, "the status port's address (loopback unless an operator names another)")
            ->capture_default_str()
            ->group("Status");
        serve->add_option("--http-ready-file", ready_file, "write the bound status port here once listening")->group("Status");
    }

    // The status server when --http-port was given; nullptr otherwise. Error: what refused the bind
    // or the ready file (the caller exits with it).
    std::unique_ptr<StatusHttp> start(const Server& server, std::string& error) const {
        if (!port) return nullptr;
        std::unique_ptr<StatusHttp> status;
        try {
            status = std::make_unique<StatusHttp>(server, StatusHttpConfig{host, *port});
        } catch (const std::exception& e) {
            error = fmt::format("cannot serve the status port on {}:{}: {}", host, *port, e.what());
            return nullptr;
        }
        if (!ready_file.empty()) {
            const std::string temp = ready_file + ".tmp";
            FILE* f = std::fopen(temp.c_str(), "w");
            const std::string text = fmt::format("{}\n", status->port());
            if (f == nullptr || std::fputs(text.c_str(), f) < 0 || std::fclose(f) != 0 ||
                std::rename(temp.c_str(), ready_file.c_str()) != 0) {
                error = fmt::format("cannot write ready file {}", ready_file);
                return nullptr;
            }
        }
        std::cout << fmt::format("coconut-hsmd: status on http://{}:{} (/healthz, /metrics)\n", host, status->port()) << std::flush;
        return status;
    }
};

}  // namespace coconut::hsm
