// coconut-vcard: personalize card / PSAM images, inspect them, drive them from an APDU shell, and serve
// them to pcscd through vsmartcard's vpcd driver (PCSC.md).
#include "commands.hpp"

#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>
#include <string>

namespace {

constexpr const char* shell_help =
    "Reads one command APDU per line from stdin and writes one line per APDU to stdout.\n"
    "Input:  hex digits; spaces, tabs and ':' between them are ignored. Empty lines and lines\n"
    "        starting with '#' (after blanks) are skipped; text after a '#' is a comment.\n"
    "Output: RESPONSE-DATA-HEX SW, e.g. '00001388 9000'; a response with no data is the SW\n"
    "        alone, e.g. '6A82'. Upper-case hex; the SW is always the last 4 characters.\n"
    "        A line that is not valid hex prints 'ERROR line N: <reason>' instead and the shell\n"
    "        goes on; the exit code is then 1.\n"
    "The image is opened once; every state change is committed to it before its response is\n"
    "printed, so the next invocation sees it. Volatile state (selection, verified PIN, pending\n"
    "transaction) ends with the process, as when a card leaves the field.";

}  // namespace

int main(int argc, char** argv) {
    using namespace coconut::vcard;
    CLI::App app{"coconut-vcard: the Coconut Card virtual card (personalize, info, shell, serve)"};
    app.require_subcommand(1);

    std::string profile_path;
    std::string image_path;
    bool force = false;
    auto* personalize = app.add_subcommand("personalize", "Create a card or PSAM image from a JSON profile");
    personalize->add_option("--profile", profile_path, "Profile JSON (card-os-apdu/IMAGE-FORMAT.md)")
        ->required();
    personalize->add_option("--out", image_path, "Image file to create")->required();
    personalize->add_flag("--force", force, "Overwrite an existing image");

    std::string info_image;
    bool info_json = false;
    auto* info = app.add_subcommand("info", "Print an image's kind, ASN, balance, ATCs, counters (no keys)");
    info->add_option("IMAGE", info_image, "Card or PSAM image")->required();
    info->add_flag("--json", info_json, "Print one JSON object instead of 'key: value' lines");

    std::string shell_image;
    bool shell_echo = false;
    auto* shell = app.add_subcommand("shell", "APDU shell on stdin/stdout");
    shell->footer(shell_help);
    shell->add_option("IMAGE", shell_image, "Card or PSAM image")->required();
    shell->add_flag("--echo", shell_echo, "Print '> COMMAND' before each response (for transcripts)");

    ServeOptions serve_options;
    int port = serve_options.port;
    auto* serve =
        app.add_subcommand("serve", "Serve images to pcscd through the vpcd driver (vicc TCP client)");
    serve->footer(
        "The card connects to HOST:PORT (vpcd slot 'Virtual PCD 00 00'), the PSAM to HOST:PORT+1\n"
        "('Virtual PCD 00 01'), each on its own connection and thread. Reconnects with back-off while\n"
        "pcscd is down or restarts. SIGTERM / SIGINT: disconnect and exit 0.");
    serve->add_option("IMAGE", serve_options.card_image, "Image served on PORT (normally the card)")
        ->required();
    serve->add_option("--psam", serve_options.psam_image, "Image served on PORT+1 (normally the PSAM)");
    serve->add_option("--port", port, "vpcd TCP port of the first slot")->check(CLI::Range(1, 65534));
    serve->add_option("--host", serve_options.host, "vpcd host (pcscd's machine)");
    serve->add_flag("--verbose,-v", serve_options.verbose, "Log every control message and APDU on stderr");
    serve->add_flag(
        "--volatile", serve_options.volatile_images,
        "Serve in-memory copies: changes are NOT written to the images (benchmarks of the transport)");

    CLI11_PARSE(app, argc, argv);
    serve_options.port = static_cast<std::uint16_t>(port);

    try {
        if (*personalize) return run_personalize(profile_path, image_path, force);
        if (*info) return run_info(info_image, info_json);
        if (*shell) return run_shell(shell_image, shell_echo);
        if (*serve) return run_serve(serve_options);
    } catch (const std::exception& error) {
        // Start-up failures only (OpenSSL provider missing, out of memory): every expected error is
        // reported by the subcommand itself.
        std::fprintf(stderr, "coconut-vcard: %s\n", error.what());
        return exit_failure;
    }
    return exit_usage;
}
