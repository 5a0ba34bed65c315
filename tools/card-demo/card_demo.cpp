// coconut-card-demo: the README's main job while the end-to-end system is being built.
//
//   1. personalizes a card and a PSAM (coconut-vcard personalize) into a work directory;
//   2. serves both through the real PC/SC stack (pcscd + vpcd, started and stopped here) and reads the
//      purse's balance and EF15 through the SDK's PcscReader (libpcsclite), as any terminal would;
//   3. drives the images through two `coconut-vcard shell` co-processes: an online load (this program
//      plays the issuer host: it checks MAC1 and computes MAC2 with the card's DLK) and a purchase
//      (card INITIALIZE → PSAM 80 70 → card DEBIT → PSAM 80 72), printing every APDU and its meaning.
#include "pcsc_env.hpp"

#include <coconut/core/bytes.hpp>
#include <coconut/core/identifiers.hpp>
#include <coconut/apdu/status.hpp>
#include <coconut/apdu/tlv.hpp>
#include <coconut/crypto/card_crypto.hpp>

#include <coconut/cmdline/cmdline.hpp>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <stdexcept>
#include <string>

namespace {

using namespace coconut;
namespace fs = std::filesystem;

// ---- the demo's card, PSAM and host parameters --------------------------------------------------
// Issuer master keys (in production they never leave the HSM; here the demo is the issuer).
const char* const master_dpk = "0123456789ABCDEFFEDCBA9876543210";
const char* const master_dlk = "11223344556677888877665544332211";
const char* const master_dtk = "2B7E151628AED2A6ABF7158809CF4F3C";
const char* const master_iak = "404142434445464748494A4B4C4D4E4F";
const char* const master_damk = "000102030405060708090A0B0C0D0E0F";
const char* const master_ssse_iak = "606162636465666768696A6B6C6D6E6F";  // the SSSE application's own IAK
const char* const issuer_id = "4600000000000001";                        // EF15 issuer id = the issuer diversification factor
const char* const asn = "46010000000012345678";                          // card factor = its rightmost 8 bytes
const char* const load_terminal_id = "460100000099";                     // the bank counter doing the online load
constexpr std::uint32_t opening_balance_fen = 5000;
constexpr std::uint32_t load_amount_fen = 10000;
constexpr std::uint32_t purchase_amount_fen = 200;  // a bus fare
constexpr std::uint8_t key_index = 0x01;
constexpr auto shell_exit_wait = std::chrono::milliseconds(5000);
// One response line of the shell: data (≤ 256 B in this demo) as hex plus the SW.
constexpr std::size_t shell_line_max = 4096;

std::string fen_text(std::uint32_t fen) {
    char text[32];
    std::snprintf(text, sizeof text, "%u.%02u CNY", fen / 100, fen % 100);
    return text;
}

crypto::Key16 key16(const char* hex_text) { return crypto::Key16(hex(hex_text)); }
crypto::Block block8(ByteView bytes) {
    crypto::Block out{};
    std::copy(bytes.begin(), bytes.begin() + 8, out.begin());
    return out;
}

nlohmann::json card_profile() {
    return {{"kind", "card"},
            {"asn", asn},
            {"issuer_id", issuer_id},
            {"balance_fen", opening_balance_fen},
            {"max_balance_fen", 100000},
            {"pin", "123456"},
            {"pin_tries", 3},
            {"protocol", "T=1"},
            {"seed", "C0C0C0C0C0C0C0C0C0C0C0C0C0C0C0C0"},
            {"start_date", "20260101"},
            {"expiry_date", "20351231"},
            {"cardholder",
             {{"name", "王小椰"},
              {"id_number", "460100199001011234"},
              {"id_type", 0},
              {"ssn", "460100199001011234"},
              {"sex", "1"},
              {"birth_date", "19900101"}}},
            {"medical_account", "46010000000000000001"},
            {"master_keys",
             {{"dpk", master_dpk},
              {"dlk", master_dlk},
              {"dtk", master_dtk},
              {"iak", master_iak},
              {"damk", master_damk},
              {"ssse_iak", master_ssse_iak}}},
            {"key_version", 1}};
}

// The PSAM holds the issuer-level purchase key: Div(master DPK, issuer id); it diversifies by the card
// factor.
nlohmann::json psam_profile() {
    const crypto::Key16 issuer_key = crypto::diversify(key16(master_dpk), block8(hex(issuer_id)));
    return {{"kind", "psam"},        {"terminal_id", "460100000001"}, {"purchase_key", to_hex(issuer_key.view())},
            {"key_level", "issuer"}, {"issuer_id", issuer_id},        {"key_index", key_index},
            {"key_version", 1},      {"terminal_serial", 1},          {"protocol", "T=1"}};
}

// A card key as personalized: Div(Div(master, issuer id), card factor).
crypto::Key16 card_key(const char* master) {
    return crypto::diversify_card_key(key16(master), block8(hex(issuer_id)), crypto::card_factor_from_asn(hex(asn)));
}

void write_json(const fs::path& path, const nlohmann::json& value) {
    std::ofstream out(path);
    out << value.dump(2) << "\n";
    if (!out) throw std::runtime_error("cannot write " + path.string());
}

void run_or_throw(const std::vector<std::string>& argv) {
    std::fflush(stdout);  // keep our lines in order with the child's
    pcsc_env::Child child = pcsc_env::Child::spawn(argv);
    if (const int rc = child.wait_exit(std::chrono::milliseconds(30000)); rc != 0) {
        throw std::runtime_error(argv[0] + " " + argv[1] + " failed with exit code " + std::to_string(rc));
    }
}

// ---- printing APDUs -----------------------------------------------------------------------------

struct Response {
    Bytes data;
    std::uint16_t sw = 0;
};

Response split_response(ByteView raw) {
    if (raw.size() < 2) throw std::runtime_error("response shorter than a status word");
    return Response{Bytes(raw.begin(), raw.end() - 2), read_be16(raw.last(2))};
}

// "80 50 00 02 0B 01000027104601000000 99 10" → header bytes spaced, the body in one block.
std::string command_text(ByteView command) {
    std::string text;
    for (std::size_t i = 0; i < command.size() && i < 5; ++i) text += (i > 0 ? " " : "") + to_hex(command.subspan(i, 1));
    if (command.size() > 5) text += " " + to_hex(command.subspan(5));
    return text;
}

void print_exchange(const char* who, ByteView command, const Response& response, const std::string& meaning, const std::string& result) {
    std::printf("  %-4s > %s\n         %s\n", who, command_text(command).c_str(), meaning.c_str());
    std::printf("  %-4s < %s%s%04X  %s\n", who, to_hex(response.data).c_str(), response.data.empty() ? "" : " ", response.sw,
                std::string(apdu::describe(response.sw)).c_str());
    if (!result.empty()) std::printf("         %s\n", result.c_str());
}

void require_ok(const char* what, const Response& response) {
    if (response.sw != apdu::value(apdu::Sw::ok)) {
        throw std::runtime_error(std::string(what) + " answered " + std::string(apdu::describe(response.sw)));
    }
}

// "FCI: DF name A000000632010105, app version 01, EF15 copy (30 B)" from 6F { 84 name, A5 { 9F08, 9F0C } }.
std::string describe_fci(const Response& response) {
    const auto outer = apdu::parse_tlvs(response.data);
    if (!outer || outer.value().empty() || outer.value()[0].tag != 0x6F) return "not an FCI template";
    const auto inner = apdu::parse_tlvs(outer.value()[0].value);
    if (!inner) return "FCI template with bad TLV";
    std::string text = "FCI:";
    if (const auto* name = apdu::find_tlv(inner.value(), 0x84)) text += " DF name " + to_hex(name->value);
    if (const auto* proprietary = apdu::find_tlv(inner.value(), 0xA5)) {
        if (const auto items = apdu::parse_tlvs(proprietary->value)) {
            if (const auto* version = apdu::find_tlv(items.value(), 0x9F08)) {
                text += ", app version " + to_hex(version->value);
            }
            if (const auto* ef15 = apdu::find_tlv(items.value(), 0x9F0C)) {
                text += ", EF15 copy (" + std::to_string(ef15->value.size()) + " B)";
            }
        }
    }
    return text;
}

// ---- the APDU shell as a co-process --------------------------------------------------------------

class ShellSession {
public:
    ShellSession(const std::string& vcard, const fs::path& image) {
        int to_child[2];
        int from_child[2];
        if (::pipe2(to_child, O_CLOEXEC) != 0 || ::pipe2(from_child, O_CLOEXEC) != 0) {
            throw std::runtime_error("pipe failed");
        }
        child_ = pcsc_env::Child::spawn({vcard, "shell", image.string()}, to_child[0], from_child[1]);
        ::close(to_child[0]);
        ::close(from_child[1]);
        to_child_ = ::fdopen(to_child[1], "w");
        from_child_ = ::fdopen(from_child[0], "r");
    }
    ~ShellSession() {
        if (to_child_ != nullptr) std::fclose(to_child_);  // EOF: the shell exits
        child_.wait_exit(shell_exit_wait);
        if (from_child_ != nullptr) std::fclose(from_child_);
    }
    ShellSession(const ShellSession&) = delete;
    ShellSession& operator=(const ShellSession&) = delete;

    Response transmit(ByteView command) {
        std::fprintf(to_child_, "%s\n", to_hex(command).c_str());
        std::fflush(to_child_);
        char line[shell_line_max];
        if (std::fgets(line, sizeof line, from_child_) == nullptr) throw std::runtime_error("the APDU shell exited");
        std::string text(line);
        while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
        if (text.rfind("ERROR", 0) == 0) throw std::runtime_error("shell: " + text);
        // "DATA SW" or "SW": the SW is the last four characters.
        auto raw = from_hex(text);
        if (!raw || raw->size() < 2) throw std::runtime_error("unexpected shell output: " + text);
        return split_response(*raw);
    }

private:
    pcsc_env::Child child_;
    FILE* to_child_ = nullptr;
    FILE* from_child_ = nullptr;
};

Bytes select_command(ByteView aid) { return concat(hex("00A40400"), Bytes{static_cast<std::uint8_t>(aid.size())}, aid, hex("00")); }

const Bytes purse_aid = hex("A000000632010105");
const Bytes psam_aid = hex("A0000006324D4F542E435053414D3031");

// ---- part 1: PC/SC ------------------------------------------------------------------------------

void read_through_pcsc(const std::string& vcard, const fs::path& work, const fs::path& card_image, const fs::path& psam_image) {
    std::printf("\n== 2. The card and the PSAM in the real PC/SC stack (pcscd + vpcd) ==\n");
    pcsc_env::VcardStack stack;
    try {
        stack.start_pcscd(work);
    } catch (const std::exception& error) {
        throw std::runtime_error(std::string(error.what()) + " (pcscd needs root for /run/pcscd; --skip-pcsc runs the rest of the demo)");
    }
    std::printf("  pcscd started (pid %d)\n", stack.pcscd_pid());
    stack.start_serve(vcard, work, card_image, psam_image);
    std::printf("  coconut-vcard serve started (pid %d): card on '%s', PSAM on '%s'\n", stack.serve_pid(), pcsc_env::card_reader,
                pcsc_env::psam_reader);
    {
        const auto card = pcsc_env::open_reader_with_card(pcsc_env::card_reader);
        const auto psam = pcsc_env::open_reader_with_card(pcsc_env::psam_reader);
        const Bytes atr = pcsc_env::connect_or_throw(*card);
        std::printf("  card present, ATR %s, protocol T=%d\n", to_hex(atr).c_str(), card->protocol() == sdk::CardProtocol::t0 ? 0 : 1);
        auto exchange = [&](sdk::PcscReader& reader, const char* who, const Bytes& command, const std::string& meaning,
                            const std::function<std::string(const Response&)>& decode) {
            const Response response = split_response(pcsc_env::transmit_short(reader, command));
            print_exchange(who, command, response, meaning, response.sw == 0x9000 ? decode(response) : "");
            require_ok(meaning.c_str(), response);
            return response;
        };
        exchange(*card, "card", select_command(purse_aid), "SELECT the purse ADF A000000632010105", describe_fci);
        exchange(*card, "card", hex("805C000204"), "GET BALANCE",
                 [](const Response& r) { return "balance " + fen_text(read_be32(r.data)); });
        exchange(*card, "card", hex("00B095001E"), "READ BINARY EF15 (public data, SFI 15)", [](const Response& r) {
            if (r.data.size() < 28) return std::string("short EF15");
            const ByteView d(r.data);
            return "issuer " + to_hex(d.subspan(0, 8)) + ", ASN " + bcd_to_digits(d.subspan(10, 10)) + ", valid " +
                   bcd_to_digits(d.subspan(20, 4)) + ".." + bcd_to_digits(d.subspan(24, 4));
        });
        pcsc_env::connect_or_throw(*psam);
        exchange(*psam, "psam", select_command(psam_aid), "SELECT the PSAM DF (MOT.CPSAM01)",
                 [](const Response&) { return std::string(); });
        exchange(*psam, "psam", hex("00B0960006"), "READ BINARY EF16 (terminal id)",
                 [](const Response& r) { return "terminal id " + bcd_to_digits(r.data); });
    }
    const auto exit_codes = stack.stop();
    std::printf("  stopped: coconut-vcard serve exit %d, pcscd exit %d\n", exit_codes.serve, exit_codes.pcscd);
    if (exit_codes.serve != 0) throw std::runtime_error("coconut-vcard serve did not exit cleanly on SIGTERM");
}

// ---- part 2: load and purchase through the shell ------------------------------------------------

void load_and_purchase(const std::string& vcard, const fs::path& card_image, const fs::path& psam_image) {
    ShellSession card(vcard, card_image);
    ShellSession psam(vcard, psam_image);
    const crypto::CardDateTime when = coconut::to_card_date_time(std::chrono::system_clock::now());
    const Bytes when_bytes = concat(when.date, when.time);

    std::printf("\n== 3. Online load of %s through the APDU shell (this program is the issuer host) ==\n",
                fen_text(load_amount_fen).c_str());
    auto shell_step = [](ShellSession& session, const char* who, const Bytes& command, const std::string& meaning,
                         const std::function<std::string(const Response&)>& decode) {
        const Response response = session.transmit(command);
        print_exchange(who, command, response, meaning, response.sw == 0x9000 ? decode(response) : "");
        require_ok(meaning.c_str(), response);
        return response;
    };
    auto nothing = [](const Response&) { return std::string(); };
    shell_step(card, "card", select_command(purse_aid), "SELECT the purse ADF", describe_fci);
    const Bytes load_terminal = hex(load_terminal_id);
    const Bytes init_load = concat(hex("805000020B"), Bytes{key_index}, be_bytes(load_amount_fen, 4), load_terminal, hex("10"));
    const Response init = shell_step(card, "card", init_load,
                                     "INITIALIZE FOR LOAD: key 01, amount " + fen_text(load_amount_fen) + ", terminal " + load_terminal_id,
                                     [](const Response& r) {
                                         const ByteView d(r.data);
                                         return "old balance " + fen_text(read_be32(d)) + ", online ATC " +
                                                std::to_string(read_be16(d.subspan(4))) + ", key version " + to_hex(d.subspan(6, 1)) +
                                                ", alg " + to_hex(d.subspan(7, 1)) + ", random " + to_hex(d.subspan(8, 4)) + ", MAC1 " +
                                                to_hex(d.subspan(12, 4));
                                     });
    if (init.data.size() != 16) throw std::runtime_error("INITIALIZE FOR LOAD: expected 16 bytes");
    const ByteView init_data(init.data);
    const std::uint32_t old_balance = read_be32(init_data);
    const std::uint16_t online_atc = read_be16(init_data.subspan(4));
    const crypto::Key16 dlk = card_key(master_dlk);
    const crypto::Key8 session_key = crypto::load_session_key(dlk, init_data.subspan(8, 4), online_atc);
    const auto expected_mac1 =
        crypto::des_mac(session_key, crypto::load_mac1_input(old_balance, load_amount_fen, crypto::type_ep_load, load_terminal));
    const bool mac1_ok = std::equal(expected_mac1.begin(), expected_mac1.end(), init_data.begin() + 12);
    std::printf("  host : SESLK = 3DES(DLK, random | online ATC | 8000); MAC1 %s\n",
                mac1_ok ? "verified: the card holds the issuer's DLK" : "WRONG");
    if (!mac1_ok) throw std::runtime_error("load MAC1 does not verify");
    const auto mac2 = crypto::des_mac(session_key, crypto::load_mac2_input(load_amount_fen, crypto::type_ep_load, load_terminal, when));
    std::printf("  host : MAC2 = DES-MAC(SESLK, amount | 02 | terminal | date time) = %s\n", to_hex(mac2).c_str());
    const Response credit = shell_step(card, "card", concat(hex("805200000B"), when_bytes, mac2, hex("04")),
                                       "CREDIT FOR LOAD: date " + bcd_to_digits(when.date) + " " + bcd_to_digits(when.time) + ", MAC2",
                                       [](const Response& r) { return "TAC " + to_hex(r.data); });
    const crypto::Key8 tac_key = crypto::tac_key(card_key(master_dtk));
    const auto expected_load_tac =
        crypto::des_mac(tac_key, crypto::load_tac_input(old_balance + load_amount_fen, online_atc, load_amount_fen, crypto::type_ep_load,
                                                        load_terminal, when));
    const bool load_tac_ok = std::equal(expected_load_tac.begin(), expected_load_tac.end(), credit.data.begin());
    std::printf("  host : load TAC %s\n", load_tac_ok ? "verified with the DTK" : "WRONG");
    if (!load_tac_ok) throw std::runtime_error("load TAC does not verify");

    std::printf("\n== 4. Purchase of %s: card INITIALIZE -> PSAM 80 70 -> card DEBIT -> PSAM 80 72 ==\n",
                fen_text(purchase_amount_fen).c_str());
    shell_step(psam, "psam", select_command(psam_aid), "SELECT the PSAM DF", nothing);
    const Response terminal = shell_step(psam, "psam", hex("00B0960006"), "READ BINARY EF16 (terminal id)",
                                         [](const Response& r) { return "terminal id " + bcd_to_digits(r.data); });
    const Bytes terminal_id = terminal.data;
    if (terminal_id.size() != 6) throw std::runtime_error("PSAM terminal id is not 6 bytes");
    shell_step(card, "card", select_command(purse_aid), "SELECT the purse ADF", nothing);
    const Response init_purchase =
        shell_step(card, "card", concat(hex("805001020B"), Bytes{key_index}, be_bytes(purchase_amount_fen, 4), terminal_id, hex("0F")),
                   "INITIALIZE FOR PURCHASE: key 01, amount " + fen_text(purchase_amount_fen), [](const Response& r) {
                       const ByteView d(r.data);
                       return "balance " + fen_text(read_be32(d)) + ", offline ATC " + std::to_string(read_be16(d.subspan(4))) +
                              ", overdraft " + to_hex(d.subspan(6, 3)) + ", key version " + to_hex(d.subspan(9, 1)) + ", alg " +
                              to_hex(d.subspan(10, 1)) + ", random " + to_hex(d.subspan(11, 4));
                   });
    if (init_purchase.data.size() != 15) throw std::runtime_error("INITIALIZE FOR PURCHASE: expected 15 bytes");
    const ByteView ip(init_purchase.data);
    const crypto::Block card_factor = crypto::card_factor_from_asn(hex(asn));
    const Bytes sam_data = concat(ip.subspan(11, 4), ip.subspan(4, 2), be_bytes(purchase_amount_fen, 4), Bytes{crypto::type_ep_purchase},
                                  when_bytes, ip.subspan(9, 1), ip.subspan(10, 1), card_factor, hex(issuer_id));
    const Response sam_init =
        shell_step(psam, "psam", concat(hex("80700000"), Bytes{static_cast<std::uint8_t>(sam_data.size())}, sam_data, hex("08")),
                   "INIT SAM FOR PURCHASE: card random, offline ATC, amount, type 06, date-time, key version, alg, "
                   "factors card + issuer",
                   [](const Response& r) {
                       return "terminal serial " + std::to_string(read_be32(r.data)) + ", MAC1 " + to_hex(ByteView(r.data).subspan(4, 4));
                   });
    if (sam_init.data.size() != 8) throw std::runtime_error("80 70: expected 8 bytes");
    const ByteView si(sam_init.data);
    const Response debit =
        shell_step(card, "card", concat(hex("805401000F"), si.subspan(0, 4), when_bytes, si.subspan(4, 4), hex("08")),
                   "DEBIT FOR PURCHASE: terminal serial, date time, MAC1", [](const Response& r) {
                       return "TAC " + to_hex(ByteView(r.data).subspan(0, 4)) + ", MAC2 " + to_hex(ByteView(r.data).subspan(4, 4));
                   });
    if (debit.data.size() != 8) throw std::runtime_error("DEBIT: expected 8 bytes");
    shell_step(psam, "psam", concat(hex("8072000004"), ByteView(debit.data).subspan(4, 4)),
               "VERIFY MAC2: the PSAM checks the card's proof of debit",
               [](const Response&) { return std::string("MAC2 valid: the purchase is complete"); });
    const auto expected_tac = crypto::des_mac(tac_key, crypto::purchase_tac_input(purchase_amount_fen, crypto::type_ep_purchase,
                                                                                  terminal_id, read_be32(si), when));
    const bool tac_ok = std::equal(expected_tac.begin(), expected_tac.end(), debit.data.begin());
    std::printf("  host : purchase TAC %s (clearing checks this with the HSM)\n", tac_ok ? "verified with the DTK" : "WRONG");
    if (!tac_ok) throw std::runtime_error("purchase TAC does not verify");
    shell_step(card, "card", hex("805C000204"), "GET BALANCE", [](const Response& r) { return "balance " + fen_text(read_be32(r.data)); });
    shell_step(card, "card", hex("00B201C417"), "READ RECORD EF18 #1 (newest log record)", [](const Response& r) {
        const ByteView d(r.data);
        if (d.size() < 23) return std::string("short record");
        return "ATC " + std::to_string(read_be16(d)) + ", amount " + fen_text(read_be32(d.subspan(5))) + ", type " +
               to_hex(d.subspan(9, 1)) + ", terminal " + bcd_to_digits(d.subspan(10, 6)) + ", " + bcd_to_digits(d.subspan(16, 4)) + " " +
               bcd_to_digits(d.subspan(20, 3));
    });
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"coconut-card-demo: personalize a card and a PSAM, read them through pcscd, load and pay"};
    std::string vcard = pcsc_env::default_vcard_path();
    std::string work_dir;
    bool skip_pcsc = false;
    app.add_option("--vcard", vcard, "coconut-vcard executable");
    app.add_option("--work-dir", work_dir, "Directory for profiles, images and logs (default: a new one in /tmp)");
    app.add_flag("--skip-pcsc", skip_pcsc, "Skip the pcscd part (machines without pcscd / vpcd)");
    coconut::cmdline::set_conventions(app, "coconut-card-demo",
                                      "Exit codes:\n"
                                      "  0  the demo completed\n"
                                      "  1  a step failed (named on stderr)\n"
                                      "  2  usage: a bad command line");
    if (auto exit = coconut::cmdline::parse(app, argc, argv, "coconut-card-demo")) return *exit;

    try {
        const fs::path work = pcsc_env::make_work_dir(work_dir, "/tmp/coconut-card-demo.XXXXXX");
        std::printf("== 1. Personalize a card and a PSAM in %s ==\n", work.c_str());
        write_json(work / "card.json", card_profile());
        write_json(work / "psam.json", psam_profile());
        const fs::path card_image = work / "card.img";
        const fs::path psam_image = work / "psam.img";
        run_or_throw({vcard, "personalize", "--profile", (work / "card.json").string(), "--out", card_image.string(), "--force"});
        run_or_throw({vcard, "personalize", "--profile", (work / "psam.json").string(), "--out", psam_image.string(), "--force"});

        if (skip_pcsc) {
            std::printf("\n== 2. (skipped: --skip-pcsc) ==\n");
        } else {
            read_through_pcsc(vcard, work, card_image, psam_image);
        }
        load_and_purchase(vcard, card_image, psam_image);
        std::printf("\n== 5. The images after the session (coconut-vcard info) ==\n");
        std::fflush(stdout);
        run_or_throw({vcard, "info", card_image.string()});
        run_or_throw({vcard, "info", psam_image.string()});
        std::printf("\ndemo complete: work directory %s\n", work.c_str());
    } catch (const std::exception& error) {
        std::fflush(stdout);
        std::fprintf(stderr, "card demo FAILED: %s\n", error.what());
        return 1;
    }
    return 0;
}
