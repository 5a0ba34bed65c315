// coconut-vcard: personalize card / PSAM images, inspect them, drive them from an APDU shell, and serve
// them to pcscd through vsmartcard's vpcd driver (docs/PCSC.md).
#include "commands.hpp"

#include <coconut/cmdline/cmdline.hpp>

#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>
#include <limits>
#include <string>
#include <utility>

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

constexpr const char* tear_help =
    "Power-cut injection (card-os-apdu/vcard/README.md): --tear-after N cuts the card's power at its\n"
    "N-th durable write since the start (every state-changing command is one write; the first random\n"
    "a process draws reserves DRBG positions with one write too). --tear-bytes says how much of that\n"
    "write reaches the image: a byte count, 'half' (the default: half a slot; the write is torn and the\n"
    "image keeps the state before the command) or 'all' (the command is in the image, its response is\n"
    "lost). The card then answers nothing more: serve closes every vpcd connection (the reader sees\n"
    "the card removed), shell prints no response; both exit 3. Start coconut-vcard again on the same\n"
    "image to re-insert the card.";

// --tear-after and --tear-bytes on a subcommand; returns --tear-after (serve excludes it with --volatile).
CLI::Option* add_tear_options(CLI::App& command, coconut::vcard::TearPlan& plan, std::string& bytes_text) {
    auto* after = command.add_option("--tear-after", plan.write_number, "Cut the card's power at its N-th durable write (1 = the first)")
                      ->check(CLI::Range(std::uint64_t{1}, std::numeric_limits<std::uint64_t>::max()));
    command.add_option("--tear-bytes", bytes_text, "How much of the cut write reaches the image: BYTES, 'half' (default) or 'all'")
        ->needs(after);
    return after;
}

}  // namespace

int main(int argc, char** argv) {
    using namespace coconut::vcard;
    CLI::App app{"coconut-vcard: the Coconut Card virtual card (personalize, info, shell, serve)"};
    app.require_subcommand(1);

    std::string profile_path;
    std::string image_path;
    bool force = false;
    auto* personalize = app.add_subcommand("personalize", "Create a card or PSAM image from a JSON profile");
    personalize->add_option("--profile", profile_path, "Profile JSON (card-os-apdu/IMAGE-FORMAT.md)")->required();
    personalize->add_option("--out", image_path, "Image file to create")->required();
    personalize->add_flag("--force", force, "Overwrite an existing image");

    std::string info_image;
    bool info_json = false;
    auto* info = app.add_subcommand("info", "Print an image's kind, ASN, balance, ATCs, counters (no keys)");
    info->add_option("IMAGE", info_image, "Card or PSAM image")->required();
    info->add_flag("--json", info_json, "Print one JSON object instead of 'key: value' lines");

    std::string shell_image;
    bool shell_echo = false;
    TearPlan shell_tear;
    std::string shell_tear_bytes;
    auto* shell = app.add_subcommand("shell", "APDU shell on stdin/stdout");
    shell->footer(std::string(shell_help) + "\n\n" + tear_help);
    shell->add_option("IMAGE", shell_image, "Card or PSAM image")->required();
    shell->add_flag("--echo", shell_echo, "Print '> COMMAND' before each response (for transcripts)");
    add_tear_options(*shell, shell_tear, shell_tear_bytes);

    ServeOptions serve_options;
    int port = serve_options.port;
    auto* serve = app.add_subcommand("serve", "Serve images to pcscd through the vpcd driver (vicc TCP client)");
    serve->footer(std::string("The card connects to HOST:PORT (vpcd slot 'Virtual PCD 00 00'), the PSAM to HOST:PORT+1\n"
                              "('Virtual PCD 00 01'), each on its own connection and thread. Reconnects with back-off while\n"
                              "pcscd is down or restarts. SIGTERM / SIGINT: disconnect and exit 0. With -v every durable write\n"
                              "of an image is logged ('durable write N'), the numbers --tear-after counts.\n\n") +
                  tear_help);
    serve->add_option("IMAGE", serve_options.card_image, "Image served on PORT (normally the card)")->required();
    serve->add_option("--psam", serve_options.psam_image, "Image served on PORT+1 (normally the PSAM)");
    serve->add_option("--port", port, "vpcd TCP port of the first slot")->check(CLI::Range(1, 65534));
    serve->add_option("--host", serve_options.host, "vpcd host (pcscd's machine)");
    serve->add_flag("--verbose,-v", serve_options.verbose, "Log every control message and APDU on stderr");
    auto* volatile_flag = serve->add_flag("--volatile", serve_options.volatile_images,
                                          "Serve in-memory copies: changes are NOT written to the images (benchmarks of the transport)");
    std::string serve_tear_bytes;
    add_tear_options(*serve, serve_options.tear, serve_tear_bytes)->excludes(volatile_flag);

    coconut::cmdline::set_conventions(app, "coconut-vcard",
                                      "Exit codes:\n"
                                      "  0  ok\n"
                                      "  1  bad input, a bad image, an I/O error\n"
                                      "  2  usage: a bad command line\n"
                                      "  3  --tear-after cut the card's power: restart on the image to re-insert");
    if (auto exit = coconut::cmdline::parse(app, argc, argv, "coconut-vcard")) return *exit;
    serve_options.port = static_cast<std::uint16_t>(port);
    for (auto [plan, text] : {std::pair{&shell_tear, &shell_tear_bytes}, std::pair{&serve_options.tear, &serve_tear_bytes}}) {
        if (text->empty()) continue;
        if (auto bad = parse_tear_bytes(*text, *plan)) {
            std::fprintf(stderr, "coconut-vcard: %s\n", bad->c_str());
            return exit_usage;
        }
    }

    try {
        if (*personalize) return run_personalize(profile_path, image_path, force);
        if (*info) return run_info(info_image, info_json);
        if (*shell) return run_shell(shell_image, shell_echo, shell_tear);
        if (*serve) return run_serve(serve_options);
    } catch (const std::exception& error) {
        // Start-up failures only (OpenSSL provider missing, out of memory): every expected error is
        // reported by the subcommand itself.
        std::fprintf(stderr, "coconut-vcard: %s\n", error.what());
        return exit_failure;
    }
    return exit_usage;
}
