// `coconut card letters`: a printable letter per card (A4 HTML, Chinese and English) with a one-time
// activation code from the clearing (POST /v1/clerk/cards/{n}/activation) and its QR code (libqrencode):
// a link to the balance page carrying the code in the URL fragment (#code=…), which the browser never
// sends to the server. The page exchanges the code once for the card's token (tools/coconut/README.md
// "Activation letters", clearing/README.md "Activation letters").
#pragma once

#include <CLI/CLI.hpp>

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace coconut::cli {

struct LetterArgs {
    std::string clearing_http;  // HOST:PORT
    std::filesystem::path token_file;
    std::vector<std::string> cards;
    std::filesystem::path out;
    std::string page_url;  // empty: http://HOST:PORT/
    unsigned valid_days = 30;
    bool reissue = false;
};

int card_letters(const LetterArgs& args);
// Adds `letters` under `coconut card`.
void add_letter_command(CLI::App& card, std::function<int()>& command);

}  // namespace coconut::cli
