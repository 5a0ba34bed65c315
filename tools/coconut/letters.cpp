#include "letters.hpp"

#include "counter.hpp"
#include "errors.hpp"

#include <coconut/core/markup.hpp>

#include <fmt/format.h>
#include <qrencode.h>

#include <sys/stat.h>

#include <algorithm>
#include <fstream>
#include <iostream>
#include <memory>

namespace coconut::cli {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// The QR code of `text` as an SVG drawing (one path, a module per unit, a 4-module quiet zone), error
// correction M. Vector graphics print sharp at any size.
std::string qr_svg(const std::string& text) {
    std::unique_ptr<QRcode, void (*)(QRcode*)> qr(QRcode_encodeString(text.c_str(), 0, QR_ECLEVEL_M, QR_MODE_8, 1), QRcode_free);
    if (!qr) fail(exit_codes::tool_failed, fmt::format("libqrencode could not encode a link of {} characters", text.size()));
    const int width = qr->width;
    const int size = width + 8;
    std::string path;
    for (int y = 0; y < width; ++y) {
        for (int x = 0; x < width; ++x) {
            if ((qr->data[y * width + x] & 1) != 0) path += fmt::format("M{},{}h1v1h-1z", x + 4, y + 4);
        }
    }
    return fmt::format(R"(<svg class="qr" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {0} {0}" role="img" aria-label="QR code" )"
                       R"(shape-rendering="crispEdges"><rect width="{0}" height="{0}" fill="#fff"/><path d="{1}" fill="#000"/></svg>)",
                       size, path);
}

// One A4 letter, in Chinese and English.
std::string letter_html(const std::string& card, const std::string& code, const std::string& expires, const std::string& link) {
    const std::string day = expires.substr(0, 10);
    return fmt::format(R"(<!doctype html>
<html lang="zh-CN">
<head>
<meta charset="utf-8">
<title>椰岛一卡通 余额查询激活函 — Coconut Card activation letter {card}</title>
<style>
  @page {{ size: A4; margin: 20mm; }}
  body {{ font-family: "Noto Sans CJK SC", "Noto Sans SC", sans-serif; color: #000; max-width: 170mm; margin: 0 auto; line-height: 1.5; }}
  h1 {{ font-size: 18pt; margin: 0 0 4mm; }}
  h2 {{ font-size: 13pt; margin: 6mm 0 2mm; }}
  .code {{ font-family: "Noto Sans Mono CJK SC", monospace; font-size: 20pt; letter-spacing: 1pt; border: 1px solid #000; padding: 3mm 5mm; display: inline-block; }}
  .qr {{ width: 60mm; height: 60mm; display: block; margin: 4mm 0; }}
  .link {{ font-family: monospace; font-size: 9pt; word-break: break-all; }}
  .en {{ color: #222; }}
  @media print {{ .letter {{ page-break-after: always; }} }}
</style>
</head>
<body>
<article class="letter">
<h1>椰岛一卡通 · 余额与交易记录查询 <span class="en" lang="en">Coconut Card · your balance and history</span></h1>
<p>卡号 <span lang="en">Card number</span>: <strong id="card">{card}</strong></p>
<p>用手机扫描二维码，即可查看此卡的电子钱包和医保个人账户余额及交易记录。<br>
<span class="en" lang="en">Scan the QR code with your phone to see this card's purse and medical account balances and its history.</span></p>
{svg}
<p>或打开下列网址并输入激活码 <span lang="en">Or open this address and enter the activation code</span>:</p>
<p class="link">{page}</p>
<p class="code" id="code">{code}</p>
<h2>请注意 <span class="en" lang="en">Please note</span></h2>
<ul>
<li>激活码只能使用一次，有效期至 {day}。<span class="en" lang="en">The code works once, until {day}.</span></li>
<li>请勿将此信函交给他人。如激活码被他人使用，请到服务网点补发新信函，原激活码和查询令牌随即失效。<br>
<span class="en" lang="en">Keep this letter to yourself. If someone else used the code, ask a service desk for a new letter: the old code and access stop working.</span></li>
</ul>
</article>
</body>
</html>
)",
                       fmt::arg("card", card), fmt::arg("code", markup_escape(code)), fmt::arg("svg", qr_svg(link)),
                       fmt::arg("page", markup_escape(link.substr(0, link.find('#')))), fmt::arg("day", day));
}

void require_letter_card(const std::string& number) {
    if (number.size() != 16 || !std::all_of(number.begin(), number.end(), [](char c) { return c >= '0' && c <= '9'; }))
        fail(exit_codes::usage, fmt::format("--card {}: a card number is 16 digits", number));
}

// The letter's file, readable by its owner only: it holds the code.
void write_letter(const fs::path& file, const std::string& text) {
    std::error_code ignored;
    fs::remove(file, ignored);
    const mode_t old_mask = ::umask(077);
    std::ofstream out(file, std::ios::binary);
    out << text;
    out.close();
    ::umask(old_mask);
    if (!out) fail(exit_codes::io_error, fmt::format("{}: cannot be written", file.string()));
}

}  // namespace

int card_letters(const LetterArgs& args) {
    if (args.cards.empty()) fail(exit_codes::usage, "no card: give --card NUMBER (repeatable)");
    for (const std::string& card : args.cards) require_letter_card(card);
    if (args.valid_days < 1 || args.valid_days > 90) fail(exit_codes::usage, "--valid-days: 1 to 90");
    std::string page = args.page_url.empty() ? "http://" + args.clearing_http + "/" : args.page_url;
    if (page.find('#') != std::string::npos) fail(exit_codes::usage, "--page-url: the address of the balance page, without a #fragment");
    std::error_code made;
    fs::create_directories(args.out, made);
    if (made) fail(exit_codes::io_error, fmt::format("{}: {}", args.out.string(), made.message()));
    for (const std::string& card : args.cards) {
        const json answer = clerk_request(args.clearing_http, args.token_file, "POST", "/v1/clerk/cards/" + card + "/activation",
                                          json{{"reissue", args.reissue}, {"valid_s", std::uint64_t{args.valid_days} * 86400}});
        if (!answer.contains("code") || !answer["code"].is_string() || !answer.contains("expires_at") || !answer["expires_at"].is_string())
            fail(counter_exit::server_error, "POST /v1/clerk/cards/" + card + "/activation: an answer without code and expires_at");
        const std::string code = answer["code"].get<std::string>();
        const std::string expires = answer["expires_at"].get<std::string>();
        // The code travels in the fragment: the browser never sends it to the server, so no log sees it.
        const std::string link = page + "#code=" + code;
        const fs::path file = args.out / ("letter-" + card + ".html");
        write_letter(file, letter_html(card, code, expires, link));
        std::cout << fmt::format("{}: {} (code valid until {}{})\n", card, file.string(), expires,
                                 args.reissue ? "; the card's earlier codes and token revoked" : "; earlier codes revoked");
    }
    return exit_codes::ok;
}

void add_letter_command(CLI::App& card, std::function<int()>& command) {
    static LetterArgs args;
    auto* letters = card.add_subcommand("letters", "print activation letters: a one-time code and its QR code per card (HTML for A4)");
    letters->add_option("--clearing-http", args.clearing_http, "coconut-clearingd --http-listen HOST:PORT")->required();
    letters->add_option("--token-file", args.token_file, "a clerk token with the role registry or counter (file mode 0600)")->required();
    letters->add_option("--card", args.cards, "card number (16 digits), repeatable")->required();
    letters->add_option("--out", args.out, "directory for the letters (letter-CARD.html, mode 0600)")->required();
    letters->add_option("--page-url", args.page_url, "the balance page's address printed and encoded (default http://HOST:PORT/)");
    letters->add_option("--valid-days", args.valid_days, "days the code stays valid (1-90)")->capture_default_str();
    letters->add_flag("--reissue", args.reissue, "a replacement letter: also revokes the card's current token (a lost or misused letter)");
    letters->footer(
        "Each card gets a new one-time code (POST /v1/clerk/cards/{n}/activation, journaled with the clerk's name); its earlier\n"
        "codes stop working. Exit codes as `coconut counter` (20 401, 21 403, 22 404, 24 400, 26 unreachable, …).");
    letters->callback([&command] { command = [] { return card_letters(args); }; });
}

}  // namespace coconut::cli
