// shell IMAGE: a line-oriented APDU console over one card image.
//
//   input   one command APDU per line in hex ("00 A4 04 00 08 A000000632010105 00"); blanks, tabs and ':'
//           between digits are ignored; '#' starts a comment; empty lines are skipped.
//   output  one line per APDU: "DATA SW" ("00001388 9000"), or "SW" alone when there is no data ("6A82");
//           upper-case hex, so the status word is always the last four characters. A line that is not
//           hex gives "ERROR line N: reason" in its place and the shell carries on (exit code 1 at the end).
//
// stdout is flushed after every line so a program can drive the shell as a co-process (the demo does).
#include "commands.hpp"
#include "image_lock.hpp"

#include <coconut/core/bytes.hpp>
#include <coconut/cos/card.hpp>

#include <cstdio>
#include <iostream>
#include <string>
#include <string_view>

namespace coconut::vcard {

namespace {

// An extended APDU is at most 4 + 3 + 65535 + 2 bytes; with separators that is < 256 KiB of text.
constexpr std::size_t line_length_max = 256 * 1024;

std::string_view strip(std::string_view text) {
    const auto first = text.find_first_not_of(" \t\r\n");
    if (first == std::string_view::npos) return {};
    const auto last = text.find_last_not_of(" \t\r\n");
    return text.substr(first, last - first + 1);
}

std::string format_response(ByteView response) {
    if (response.size() < 2) return "ERROR card returned " + std::to_string(response.size()) + " bytes";
    const std::string data = to_hex(response.first(response.size() - 2));
    const std::string sw = to_hex(response.last(2));
    return data.empty() ? sw : data + " " + sw;
}

}  // namespace

int run_shell(const std::string& image_path, bool echo, const TearPlan& tear) {
    ImageLock lock;
    if (auto busy = ImageLock::acquire(image_path, lock)) {
        std::fprintf(stderr, "shell: %s\n", busy->c_str());
        return exit_failure;
    }
    auto opened = open_card_with_tear(image_path, tear, "shell", false);
    if (!opened) {
        std::fprintf(stderr, "shell: %s\n", opened.error().message.c_str());
        return exit_failure;
    }
    cos::VirtualCard& card = *opened.value();

    std::ios::sync_with_stdio(false);
    int bad_lines = 0;
    std::string line;
    for (std::size_t line_number = 1; std::getline(std::cin, line); ++line_number) {
        std::string_view text = line;
        if (const auto hash = text.find('#'); hash != std::string_view::npos) text = text.substr(0, hash);
        text = strip(text);
        if (text.empty()) continue;
        if (echo) std::printf("> %.*s\n", static_cast<int>(text.size()), text.data());
        std::optional<Bytes> command;
        if (line.size() > line_length_max) {
            std::printf("ERROR line %zu: longer than %zu characters\n", line_number, line_length_max);
        } else if (command = from_hex(text); !command) {
            std::printf("ERROR line %zu: not hex (odd number of digits or a character other than 0-9 A-F)\n", line_number);
        }
        if (!command) {
            ++bad_lines;
            std::fflush(stdout);
            continue;
        }
        Bytes response;
        try {
            response = card.transmit(*command);
        } catch (const cos::PowerCut&) {
            // The card lost power inside this command: it never answers it, and takes no more.
            std::fprintf(stderr,
                         "shell: line %zu: the card lost power (--tear-after); no response. Run the shell "
                         "again on %s to see what survived\n",
                         line_number, image_path.c_str());
            return exit_power_cut;
        }
        std::printf("%s\n", format_response(response).c_str());
        std::fflush(stdout);
    }
    if (bad_lines > 0) {
        std::fprintf(stderr, "shell: %d line(s) were not valid APDUs\n", bad_lines);
        return exit_failure;
    }
    return exit_ok;
}

}  // namespace coconut::vcard
