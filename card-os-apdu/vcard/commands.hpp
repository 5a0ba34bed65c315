// The subcommands of coconut-vcard. Each returns the process exit code; each prints its own errors
// (one line naming the file, the line or the field at fault) on stderr.
#pragma once

#include "tear.hpp"

#include <cstdint>
#include <string>

namespace coconut::vcard {

// Exit codes shared by every subcommand.
inline constexpr int exit_ok = 0;
inline constexpr int exit_failure = 1;    // bad input, bad image, I/O error
inline constexpr int exit_usage = 2;      // bad command line (CLI11 reports these itself)
inline constexpr int exit_power_cut = 3;  // --tear-after cut the card's power: restart on the image to re-insert

// personalize --profile PROFILE.json --out IMAGE [--force]
int run_personalize(const std::string& profile_path, const std::string& image_path, bool force);

// info IMAGE [--json]
int run_info(const std::string& image_path, bool as_json);

// shell IMAGE: APDUs on stdin, responses on stdout (format documented in shell.cpp and --help).
// `tear`: cut the power at that durable write (tear.hpp): no response for that APDU, exit_power_cut.
int run_shell(const std::string& image_path, bool echo, const TearPlan& tear = {});

struct ServeOptions {
    std::string card_image;
    std::string psam_image;  // empty: no PSAM
    std::string host = "127.0.0.1";
    std::uint16_t port = 35963;    // vpcd slot 0 (docs/PCSC.md §2); the PSAM takes port + 1
    bool verbose = false;          // log every APDU on stderr
    bool volatile_images = false;  // load the images into memory and never write them back (benchmarks)
    TearPlan tear;                 // cut the first image's power at that durable write (tear.hpp)
};

// serve IMAGE [--psam IMAGE2]: connects to vpcd as a virtual ICC until SIGTERM / SIGINT (exit_ok), or until
// the planned power cut (exit_power_cut: every connection closed, so pcscd sees the cards removed).
int run_serve(const ServeOptions& options);

}  // namespace coconut::vcard
