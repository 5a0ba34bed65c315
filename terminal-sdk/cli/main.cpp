// coconut-terminal: the terminal SDK on a command line, for operators and tests. One process = one
// terminal session: it opens the card reader and the PSAM reader (PC/SC readers or card image files run
// in process), the store-and-forward queue and the hotlist, runs one flow and exits with a code that
// names the outcome (exit_codes.hpp). Usage and the JSON fields: terminal-sdk/README.md.
#include "exit_codes.hpp"
#include "pin_entry.hpp"
#include "fares.hpp"
#include "hsm_mac.hpp"
#include "output.hpp"
#include "refund_reference.hpp"

#include <coconut/cos/card.hpp>
#include <coconut/sdk/clearing_client.hpp>
#include <coconut/sdk/hotlist.hpp>
#include <coconut/sdk/queue.hpp>
#include <coconut/sdk/reader.hpp>
#include <coconut/sdk/terminal.hpp>

#include <coconut/cmdline/cmdline.hpp>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <array>
#include <cstdio>
#include <iostream>
#include <ctime>
#include <exception>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <string>

namespace coconut::terminal_cli {
namespace {

using nlohmann::json;

struct Options {
    std::string reader;       // PC/SC reader of the card
    std::string psam_reader;  // PC/SC reader of the PSAM
    std::string card_image;   // in process: card image file
    std::string psam_image;   // in process: PSAM image file
    std::string queue_path = "terminal-queue.log";
    std::string hotlist_path = "terminal-hotlist.bin";
    std::string fares_path;
    std::string time_text;  // fixed terminal clock (Hainan local time), for simulations and tests
    bool json = false;
    bool trace = false;
};

// Upper bound of `purchase --repeat`: a soak test, not a batch processor; also below the 16-bit ATC.
constexpr std::uint32_t purchase_repeat_max = 60000;
// `wait` gives up after at most an hour.
constexpr std::uint32_t wait_timeout_ms_max = 3'600'000;

CliError usage(std::string message) { return CliError{exit_usage, "usage", "usage", std::move(message)}; }

CliError from_reader(const sdk::ReaderError& error) {
    return CliError{exit_code(error.code), "reader", std::string(sdk::to_string(error.code)), error.message};
}

void print_json(const json& document) {
    std::printf("%s\n", document.dump().c_str());
    std::fflush(stdout);
}

void print_text(const std::string& text) {
    std::printf("%s\n", text.c_str());
    std::fflush(stdout);
}

// "2026-11-26 12:00:00" or "20261126120000", Hainan local time (UTC+8, docs/DESIGN.md §4.4).
Result<std::chrono::system_clock::time_point, std::string> parse_time(const std::string& text) {
    std::string digits;
    for (char c : text)
        if (c >= '0' && c <= '9') digits += c;
    std::tm tm{};
    if (digits.size() != 14) return Unexpected{fmt::format("--time '{}': expected 'YYYY-MM-DD hh:mm:ss'", text)};
    tm.tm_year = std::stoi(digits.substr(0, 4)) - 1900;
    tm.tm_mon = std::stoi(digits.substr(4, 2)) - 1;
    tm.tm_mday = std::stoi(digits.substr(6, 2));
    tm.tm_hour = std::stoi(digits.substr(8, 2));
    tm.tm_min = std::stoi(digits.substr(10, 2));
    tm.tm_sec = std::stoi(digits.substr(12, 2));
    if (tm.tm_mon < 0 || tm.tm_mon > 11 || tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_hour > 23 || tm.tm_min > 59 || tm.tm_sec > 59)
        return Unexpected{fmt::format("--time '{}': not a valid date and time", text)};
    return coconut::hainan_time_point(tm);
}

Result<sdk::Asn, CliError> parse_asn(const std::string& digits) {
    auto bcd = digits_to_bcd(digits);
    if (digits.size() != 20 || !bcd) return Unexpected{usage(fmt::format("'{}': an ASN is 20 decimal digits", digits))};
    sdk::Asn asn{};
    std::copy(bcd->begin(), bcd->end(), asn.begin());
    return asn;
}

// ---- readers ------------------------------------------------------------------------------------

// One role (card or PSAM): a PC/SC reader, an image file run in process, or nothing.
struct Slot {
    std::unique_ptr<cos::VirtualCard> image;
    std::unique_ptr<sdk::Reader> reader;
};

Result<Slot, CliError> open_slot(const char* role, const std::string& pcsc_name, const char* pcsc_flag, const std::string& image_path,
                                 const char* image_flag, cos::ImageKind kind, bool required) {
    Slot slot;
    if (!pcsc_name.empty() && !image_path.empty())
        return Unexpected{usage(fmt::format("give either {} or {} for the {}, not both", pcsc_flag, image_flag, role))};
    if (!pcsc_name.empty()) {
        auto reader = sdk::PcscReader::open(pcsc_name);
        if (!reader) return Unexpected{from_reader(reader.error())};
        slot.reader = std::move(*reader);
        return slot;
    }
    if (!image_path.empty()) {
        auto card = cos::VirtualCard::open(image_path);
        if (!card) return Unexpected{CliError{exit_image_error, "image", "image_error", card.error().message}};
        if ((*card)->kind() != kind)
            return Unexpected{CliError{exit_image_error, "image", "image_error",
                                       fmt::format("{}: is a {} image, {} needs a {} image", image_path,
                                                   (*card)->kind() == cos::ImageKind::psam ? "PSAM" : "card", image_flag, role)}};
        slot.image = std::move(*card);
        slot.reader = std::make_unique<sdk::InProcessReader>(image_path, slot.image.get());
        return slot;
    }
    if (required)
        return Unexpected{
            usage(fmt::format("this command needs a {}: {} NAME (PC/SC) or {} IMAGE (in process)", role, pcsc_flag, image_flag))};
    slot.reader = std::make_unique<sdk::InProcessReader>(fmt::format("(no {})", role), nullptr);
    return slot;
}

// Everything one flow needs, opened in the order that touches the card last.
struct Session {
    sdk::TransitConfig transit;
    sdk::Hotlist hotlist;
    std::unique_ptr<sdk::TransactionQueue> queue;
    Slot card;
    Slot psam;
    std::unique_ptr<sdk::Terminal> terminal;
};

// The queue; an old one (format 1) is converted with its old batch file (`old_batch_file`, default the
// queue path + ".batch") first.
Result<std::unique_ptr<sdk::TransactionQueue>, CliError> open_queue(const Options& options, const std::string& old_batch_file = {}) {
    auto queue = sdk::TransactionQueue::open(options.queue_path, {}, old_batch_file);
    if (queue) return std::move(*queue);
    if (queue.error().code == sdk::QueueErrorCode::bad_batch_file)
        return Unexpected{CliError{exit_batch_error, "clearing", "batch_error", queue.error().message}};
    return Unexpected{CliError{exit_queue_error, "queue", "queue_error", queue.error().message}};
}

Result<std::unique_ptr<Session>, CliError> open_session(const Options& options, bool need_psam, const std::string& old_batch_file = {},
                                                        bool need_card = true) {
    auto session = std::make_unique<Session>();
    if (!options.fares_path.empty()) {
        auto fares = load_fares(options.fares_path);
        if (!fares) return Unexpected{CliError{exit_fares_error, "fares", "fares_error", fares.error()}};
        session->transit = std::move(*fares);
    }
    auto hotlist = sdk::Hotlist::load(options.hotlist_path);
    if (!hotlist) return Unexpected{CliError{exit_hotlist_error, "hotlist", "hotlist_error", hotlist.error().message}};
    session->hotlist = std::move(*hotlist);
    auto queue = open_queue(options, old_batch_file);
    if (!queue) return Unexpected{queue.error()};
    session->queue = std::move(*queue);

    auto card = open_slot("card", options.reader, "--reader", options.card_image, "--card", cos::ImageKind::card, need_card);
    if (!card) return Unexpected{card.error()};
    session->card = std::move(*card);
    auto psam = open_slot("PSAM", options.psam_reader, "--psam-reader", options.psam_image, "--psam", cos::ImageKind::psam, need_psam);
    if (!psam) return Unexpected{psam.error()};
    session->psam = std::move(*psam);

    session->terminal =
        std::make_unique<sdk::Terminal>(*session->card.reader, *session->psam.reader, *session->queue, session->hotlist, session->transit);
    if (!options.time_text.empty()) {
        auto fixed = parse_time(options.time_text);
        if (!fixed) return Unexpected{usage(fixed.error())};
        session->terminal->set_clock([when = *fixed] { return when; });
    }
    if (options.trace) {
        session->terminal->set_trace([](const sdk::TraceEntry& entry) {
            std::fprintf(stderr, "apdu > %s\napdu < %s (%lld us)\n", to_hex(entry.command).c_str(),
                         entry.response.empty() ? "(no response)" : to_hex(entry.response).c_str(),
                         static_cast<long long>(entry.elapsed.count()));
        });
    }
    return session;
}

// ---- commands -------------------------------------------------------------------------------------

int cmd_readers(const Options& options) {
    auto names = sdk::list_pcsc_readers();
    if (!names) return report(from_reader(names.error()), options.json);
    if (options.json) {
        print_json({{"readers", *names}});
    } else if (names->empty()) {
        print_text("no readers");
    } else {
        for (const auto& name : *names) print_text(name);
    }
    return exit_ok;
}

int cmd_balance(const Options& options) {
    auto session = open_session(options, false);
    if (!session) return report(session.error(), options.json);
    auto read = (*session)->terminal->card_balance();
    if (!read) return report(from_flow(read.error()), options.json);
    const auto& [card, balance] = *read;
    if (options.json) {
        print_json({{"balance_fen", balance}, {"asn", card.asn_digits()}});
    } else {
        print_text(fmt::format("balance {} fen ({} CNY)", balance, yuan(balance)));
    }
    return exit_ok;
}

int cmd_purchase(const Options& options, std::uint32_t amount_fen, std::uint32_t repeat) {
    auto session = open_session(options, true);
    if (!session) return report(session.error(), options.json);
    for (std::uint32_t i = 0; i < repeat; ++i) {
        auto record = (*session)->terminal->purchase(amount_fen);
        if (!record) return report(from_flow(record.error()), options.json);
        if (options.json) {
            print_json(to_json(*record));
        } else {
            print_text(to_text(*record));
        }
    }
    return exit_ok;
}

int cmd_tap(const Options& options, const sdk::TapRequest& tap) {
    auto session = open_session(options, true);
    if (!session) return report(session.error(), options.json);
    auto outcome = (*session)->terminal->transit_tap(tap);
    if (!outcome) {
        CliError error = from_flow(outcome.error());
        if (outcome.error().code == sdk::FlowErrorCode::unknown_line && options.fares_path.empty())
            error.message += " (no --fares file given)";
        return report(error, options.json);
    }
    if (options.json) {
        print_json(to_json(*outcome));
    } else {
        print_text(to_text(*outcome));
    }
    return exit_ok;
}

int cmd_recover(const Options& options) {
    auto session = open_session(options, false);
    if (!session) return report(session.error(), options.json);
    auto outcome = (*session)->terminal->recover();
    if (!outcome) return report(from_flow(outcome.error()), options.json);
    const std::size_t still_open = (*session)->queue->open_intents().size();
    if (options.json) {
        json recorded = json::array();
        json abandoned = json::array();
        for (const auto& r : outcome->recorded) recorded.push_back(to_json(r));
        json reversed = json::array();
        for (const auto& r : outcome->abandoned) abandoned.push_back(to_json(r));
        for (const auto& r : outcome->reversed) reversed.push_back(to_json(r));
        print_json({{"recorded", recorded}, {"abandoned", abandoned}, {"reversed", reversed}, {"open_intents", still_open}});
    } else {
        print_text(fmt::format("recovered {} debit(s), abandoned {} intent(s); {} intent(s) of other cards still open",
                               outcome->recorded.size(), outcome->abandoned.size(), still_open));
        for (const auto& r : outcome->recorded) print_text("  recorded  " + to_text(r));
        for (const auto& r : outcome->abandoned) print_text("  abandoned " + to_text(r));
        for (const auto& r : outcome->reversed) print_text("  reversed  " + to_text(r));
    }
    return exit_ok;
}

int cmd_holder(const Options& options) {
    auto session = open_session(options, false);
    if (!session) return report(session.error(), options.json);
    auto holder = (*session)->terminal->cardholder();
    if (!holder) return report(from_flow(holder.error()), options.json);
    if (options.json) {
        print_json(to_json(*holder));
    } else {
        const json fields = to_json(*holder);
        for (const auto& [key, value] : fields.items()) print_text(fmt::format("{}: {}", key, value.get<std::string>()));
    }
    return exit_ok;
}

int cmd_queue(const Options& options, bool list) {
    auto queue = open_queue(options);
    if (!queue) return report(queue.error(), options.json);
    const auto live = (*queue)->batch((*queue)->size());
    const auto intents = (*queue)->open_intents();
    if (!list) {
        if (options.json) {
            print_json({{"count", live.size()}, {"open_intents", intents.size()}});
        } else {
            print_text(fmt::format("{}", live.size()));
        }
        return exit_ok;
    }
    if (options.json) {
        json transactions = json::array();
        json open = json::array();
        for (const auto& q : live) transactions.push_back(to_json(q.record, q.sequence));
        for (const auto& q : intents) open.push_back(to_json(q.record, q.sequence));
        print_json({{"path", options.queue_path}, {"count", live.size()}, {"transactions", transactions}, {"open_intents", open}});
    } else {
        for (const auto& q : live) print_text(to_text(q.record, q.sequence));
        for (const auto& q : intents) print_text("intent " + to_text(q.record, q.sequence));
        print_text(fmt::format("{} transaction(s) awaiting upload, {} open intent(s)", live.size(), intents.size()));
    }
    return exit_ok;
}

Result<sdk::BlockReason, CliError> parse_reason(const std::string& text) {
    if (text == "lost") return sdk::BlockReason::lost;
    if (text == "stolen") return sdk::BlockReason::stolen;
    if (text == "cloned") return sdk::BlockReason::cloned;
    if (text == "issuer") return sdk::BlockReason::issuer;
    return Unexpected{usage(fmt::format("--reason '{}': one of lost, stolen, cloned, issuer", text))};
}

// add / remove: one delta from the current version to the next, saved durably.
int cmd_hotlist_change(const Options& options, const std::string& asn_digits, std::optional<sdk::BlockReason> add) {
    auto asn = parse_asn(asn_digits);
    if (!asn) return report(asn.error(), options.json);
    auto hotlist = sdk::Hotlist::load(options.hotlist_path);
    if (!hotlist) return report(CliError{exit_hotlist_error, "hotlist", "hotlist_error", hotlist.error().message}, options.json);
    sdk::HotlistDelta delta;
    delta.from_version = hotlist->version();
    delta.to_version = hotlist->version() + 1;
    if (add) {
        delta.added.emplace_back(*asn, *add);
    } else {
        delta.removed.push_back(*asn);
    }
    if (auto applied = hotlist->apply(delta); !applied)
        return report(CliError{exit_hotlist_error, "hotlist", "hotlist_error", applied.error().message}, options.json);
    if (options.json) {
        print_json({{"version", hotlist->version()}, {"count", hotlist->size()}});
    } else {
        print_text(fmt::format("hotlist {}: version {}, {} blocked card(s)", options.hotlist_path, hotlist->version(), hotlist->size()));
    }
    return exit_ok;
}

int cmd_hotlist_show(const Options& options, const std::string& asn_digits) {
    auto hotlist = sdk::Hotlist::load(options.hotlist_path);
    if (!hotlist) return report(CliError{exit_hotlist_error, "hotlist", "hotlist_error", hotlist.error().message}, options.json);
    json out{{"path", options.hotlist_path}, {"version", hotlist->version()}, {"count", hotlist->size()}};
    std::string text = fmt::format("hotlist {}: version {}, {} blocked card(s)", options.hotlist_path, hotlist->version(), hotlist->size());
    if (!asn_digits.empty()) {
        auto asn = parse_asn(asn_digits);
        if (!asn) return report(asn.error(), options.json);
        const auto reason = hotlist->blocked(*asn);
        out["asn"] = asn_digits;
        out["blocked"] = reason.has_value();
        if (reason) out["reason"] = sdk::to_string(*reason);
        text += fmt::format("\ncard {}: {}", asn_digits, reason ? fmt::format("blocked ({})", sdk::to_string(*reason)) : "not blocked");
    }
    if (options.json) {
        print_json(out);
    } else {
        print_text(text);
    }
    return exit_ok;
}

// Waits for the card to arrive or leave: SCardGetStatusChange on a PC/SC reader (immediate in process).
int cmd_wait(const Options& options, bool absent, std::uint32_t timeout_ms) {
    auto slot = open_slot("card", options.reader, "--reader", options.card_image, "--card", cos::ImageKind::card, true);
    if (!slot) return report(slot.error(), options.json);
    auto* pcsc = dynamic_cast<sdk::PcscReader*>(slot->reader.get());
    std::optional<std::uint32_t> events_before;
    if (pcsc) {
        auto count = pcsc->event_count();
        if (!count) return report(from_reader(count.error()), options.json);
        events_before = *count;
    }
    // The line a script waits for before it changes the card (stderr, so stdout stays one document).
    std::fprintf(stderr, "waiting for the card to %s '%s' (events %d, timeout %u ms)\n", absent ? "leave" : "arrive in",
                 slot->reader->name().c_str(), events_before ? static_cast<int>(*events_before) : -1, timeout_ms);
    std::fflush(stderr);
    const auto start = std::chrono::steady_clock::now();
    auto reached = slot->reader->wait_for_card(!absent, std::chrono::milliseconds(timeout_ms));
    const auto elapsed_ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start).count();
    if (!reached) return report(from_reader(reached.error()), options.json);
    std::optional<std::uint32_t> events_after;
    if (pcsc) {
        auto count = pcsc->event_count();
        if (!count) return report(from_reader(count.error()), options.json);
        events_after = *count;
    }
    json out{{"reader", slot->reader->name()}, {"wanted", absent ? "absent" : "present"}, {"reached", *reached}, {"elapsed_ms", elapsed_ms}};
    if (events_before) out["events_before"] = *events_before;
    if (events_after) out["events_after"] = *events_after;
    if (options.json) {
        print_json(out);
    } else {
        print_text(fmt::format("card {} after {} ms{}", *reached ? (absent ? "absent" : "present") : "unchanged", elapsed_ms,
                               events_after ? fmt::format(" (events {} -> {})", *events_before, *events_after) : ""));
    }
    if (!*reached)
        return report(CliError{exit_timeout, "timeout", "timeout",
                               fmt::format("the card did not {} within {} ms", absent ? "leave" : "arrive", timeout_ms)},
                      false);
    return exit_ok;
}

constexpr const char* footer_text =
    "Readers: --reader NAME --psam-reader NAME use PC/SC (pcscd; `readers` lists the names, e.g.\n"
    "'Virtual PCD 00 00' and 'Virtual PCD 00 01' for coconut-vcard serve). --card IMAGE --psam IMAGE run\n"
    "the card OS in this process on image files (coconut-vcard personalize makes them). balance, holder\n"
    "and recover need only the card; purchase and tap need the PSAM too.\n"
    "Global options may come before or after the subcommand.\n"
    "--json: purchase and tap print one JSON object per transaction (one per line); every other\n"
    "command prints one JSON document; an error prints {\"error\": {...}} on stdout as well.\n"
    "Counter: block-card, unblock-card and return-card ask the HSM (--hsm, --hsm-key: a client with the permission\n"
    "`maintenance`) for the APPLICATION BLOCK MAC; the HSM is reached before the card is touched.\n"
    "return-card takes the whole balance by a purchase with this terminal's PSAM (queued for upload like\n"
    "any purchase), then blocks the card permanently; run it again after a pulled card: it never debits\n"
    "twice and finishes the block.\n\n";

// ---- counter: block-card, return-card ------------------------------------------------------------

std::string asn_text(const sdk::PurseInfo& card) { return card.asn_digits(); }

int cmd_block_card(const Options& options, const HsmMacOptions& hsm_options, bool permanent) {
    auto session = open_session(options, false);
    if (!session) return report(session.error(), options.json);
    auto hsm_mac = connect_hsm_mac(hsm_options);
    if (!hsm_mac) return report(hsm_mac.error(), options.json);
    auto outcome = sdk::block_application(*(*session)->card.reader, hsm_mac->provider, permanent);
    if (!outcome) return report(from_flow(outcome.error()), options.json);
    if (options.json) {
        print_json(
            {{"asn", asn_text(outcome->card)}, {"blocked", permanent ? "permanent" : "temporary"}, {"was_blocked", outcome->was_blocked}});
    } else {
        print_text(fmt::format("card {} blocked ({}){}", asn_text(outcome->card), permanent ? "permanent" : "temporary",
                               outcome->was_blocked ? "; it was already blocked" : ""));
    }
    return exit_ok;
}

int cmd_unblock_card(const Options& options, const HsmMacOptions& hsm_options) {
    auto session = open_session(options, false);
    if (!session) return report(session.error(), options.json);
    auto hsm_mac = connect_hsm_mac(hsm_options);
    if (!hsm_mac) return report(hsm_mac.error(), options.json);
    auto outcome = sdk::unblock_application(*(*session)->card.reader, hsm_mac->provider);
    if (!outcome) return report(from_flow(outcome.error()), options.json);
    if (options.json) {
        print_json({{"asn", asn_text(outcome->card)}, {"unblocked", true}, {"was_blocked", outcome->was_blocked}});
    } else {
        print_text(fmt::format("card {} unblocked{}", asn_text(outcome->card), outcome->was_blocked ? "" : " (it was not blocked)"));
    }
    return exit_ok;
}

int cmd_return_card(const Options& options, const HsmMacOptions& hsm_options) {
    auto session = open_session(options, true);
    if (!session) return report(session.error(), options.json);
    auto hsm_mac = connect_hsm_mac(hsm_options);
    if (!hsm_mac) return report(hsm_mac.error(), options.json);
    auto outcome = (*session)->terminal->return_card(hsm_mac->provider);
    if (!outcome) return report(from_flow(outcome.error()), options.json);
    if (options.json) {
        json recovered = json::array();
        for (const auto& r : outcome->recovered) recovered.push_back(to_json(r));
        print_json({{"asn", asn_text(outcome->card)},
                    {"balance_fen", outcome->balance_fen},
                    {"debit", outcome->debit ? to_json(*outcome->debit) : json(nullptr)},
                    {"recovered", recovered},
                    {"was_blocked", outcome->was_blocked},
                    {"blocked", "permanent"}});
        return exit_ok;
    }
    for (const auto& r : outcome->recovered) print_text("recovered: " + to_text(r));
    if (outcome->was_blocked) {
        print_text(
            fmt::format("card {} was already blocked: nothing could be read or taken; now blocked permanently", asn_text(outcome->card)));
    } else if (outcome->debit) {
        print_text(fmt::format("card {}: balance {} fen taken ({}), card blocked permanently", asn_text(outcome->card),
                               outcome->debit->amount_fen, to_text(*outcome->debit)));
    } else {
        print_text(fmt::format("card {}: balance 0 fen, nothing to take; card blocked permanently", asn_text(outcome->card)));
    }
    return exit_ok;
}

// How a command reaches the clearing (upload, load, clinic-pay, sync-hotlist, reconcile).
struct ClearingCliOptions {
    std::string clearing;           // HOST:PORT of coconut-clearingd, or a comma-separated list of them (failover)
    std::uint32_t failover_ms = 0;  // keep trying the list for this long (0: one round)
    std::string terminal_id;        // field 41 as registered at the clearing
    std::string merchant_id;        // field 42 of the 0100 (clinic-pay)
    std::size_t in_flight = sdk::clearing_in_flight_default;
    std::uint32_t timeout_ms = 10000;
    std::string batch_file;  // an old queue's batch file, converted into the queue (default: the queue path + ".batch")
    // Mutual TLS (clearing/README.md "TLS for terminals"): all three, or --insecure for plain TCP.
    std::string ca, certificate, private_key;
    bool insecure = false;
};

CliError from_clearing(const sdk::ClearingError& error) {
    int code = exit_clearing_refused;
    switch (error.code) {
        case sdk::ClearingErrorCode::bad_option: code = exit_usage; break;
        case sdk::ClearingErrorCode::connect_failed:
        case sdk::ClearingErrorCode::timeout:
        case sdk::ClearingErrorCode::closed: code = exit_clearing_unreachable; break;
        case sdk::ClearingErrorCode::protocol_error:
        case sdk::ClearingErrorCode::refused: code = exit_clearing_refused; break;
        case sdk::ClearingErrorCode::queue_error: code = exit_storage_error; break;
        case sdk::ClearingErrorCode::batch_error: code = exit_batch_error; break;
        case sdk::ClearingErrorCode::hotlist_error: code = exit_hotlist_error; break;
        case sdk::ClearingErrorCode::tls_error: code = exit_tls_error; break;
    }
    return CliError{code, "clearing", std::string(sdk::to_string(error.code)), error.message};
}

json to_json(const sdk::UploadReport& r, std::size_t remaining) {
    return {{"sent", r.sent},
            {"acknowledged", r.acknowledged},
            {"approved", r.approved},
            {"suspense", r.suspense},
            {"duplicates", r.duplicates},
            {"kept", r.kept},
            {"advices", r.advices},
            {"refused", r.refused},
            {"by_response_code", r.by_response_code},
            {"digest_mismatches", r.digest_mismatches},
            {"kept_for_review", r.kept_for_review},
            {"remaining", remaining}};
}

// The endpoint of a list that served this terminal last, kept beside the queue (QUEUE.clearing-endpoint)
// so that the next command starts there. A hint: unreadable or not in the list, it is ignored; it is
// replaced by rename, so a crash leaves the old one or the new one.
std::shared_ptr<sdk::ClearingEndpointMemory> endpoint_memory(const std::filesystem::path& queue_path) {
    auto memory = std::make_shared<sdk::ClearingEndpointMemory>();
    const std::filesystem::path file = queue_path.string() + ".clearing-endpoint";
    std::ifstream in(file);
    std::string line;
    if (in && std::getline(in, line)) {
        if (auto endpoint = sdk::parse_clearing_endpoint(line)) memory->last_served = *endpoint;
    }
    memory->changed = [file](const sdk::ClearingEndpoint& endpoint) {
        const std::filesystem::path next = file.string() + ".new";
        {
            std::ofstream out(next, std::ios::trunc);
            out << sdk::to_string(endpoint) << "\n";
            if (!out.flush()) return;
        }
        std::error_code ignored;
        std::filesystem::rename(next, file, ignored);
    };
    return memory;
}

// Connected and signed on (the clearing answers 03 to anything else); the batch state in `queue`'s log.
// With a list of endpoints the first that signs this terminal on, starting where it was served last.
Result<std::unique_ptr<sdk::ClearingClient>, CliError> open_clearing(const ClearingCliOptions& clearing, sdk::TransactionQueue& queue) {
    auto endpoints = sdk::parse_clearing_endpoints(clearing.clearing);
    if (!endpoints) return Unexpected{usage("--clearing: " + endpoints.error())};
    sdk::ClearingOptions client_options;
    client_options.failover_window = std::chrono::milliseconds(clearing.failover_ms);
    if (endpoints->size() > 1) client_options.endpoint_memory = endpoint_memory(queue.path());
    client_options.terminal_id = clearing.terminal_id;
    client_options.merchant_id = clearing.merchant_id;
    client_options.in_flight = clearing.in_flight;
    client_options.response_timeout = std::chrono::milliseconds(clearing.timeout_ms);
    client_options.batch_log = &queue;
    const bool any_tls = !clearing.ca.empty() || !clearing.certificate.empty() || !clearing.private_key.empty();
    if (clearing.insecure && any_tls) return Unexpected{usage("--insecure excludes --ca, --cert and --key")};
    if (!clearing.insecure) {
        if (clearing.ca.empty() || clearing.certificate.empty() || clearing.private_key.empty())
            return Unexpected{
                usage("the clearing is reached over mutual TLS: give --ca, --cert and --key (from `coconut terminal "
                      "register`), or --insecure for a daemon serving --insecure-terminals")};
        client_options.tls = sdk::ClearingTls{clearing.ca, clearing.certificate, clearing.private_key, nullptr};
    }
    auto client = sdk::ClearingClient::connect(std::move(endpoints).value(), client_options);
    if (!client) return Unexpected{from_clearing(client.error())};
    if (auto signed_on = (*client)->sign_on(); !signed_on) return Unexpected{from_clearing(signed_on.error())};
    return std::move(*client);
}

// upload: sign on, send every queued offline purchase (many in flight), delete what the clearing booked
// (00 naming this very record in DF10), keep the rest — 59, 94 and a mismatching 00 are listed for review.
int cmd_upload(const Options& options, const ClearingCliOptions& upload) {
    auto queue = open_queue(options, upload.batch_file);
    if (!queue) return report(queue.error(), options.json);
    auto client = open_clearing(upload, **queue);
    if (!client) return report(client.error(), options.json);
    auto result = (*client)->upload(**queue);
    if (!result) {
        if (options.json) std::fprintf(stderr, "%s\n", to_json((*client)->last_report(), (*queue)->size()).dump().c_str());
        return report(from_clearing(result.error()), options.json);
    }
    (void)(*client)->sign_off();  // best effort: the uploads are acknowledged already
    if (options.json) {
        json out = to_json(*result, (*queue)->size());
        out["endpoint"] = sdk::to_string((*client)->current_endpoint());
        out["failovers"] = (*client)->link_stats().failovers;
        print_json(out);
    } else {
        print_text(
            fmt::format("uploaded {}: {} acknowledged ({} approved), {} kept ({} TAC refused, {} duplicate id, {} approval of "
                        "another record), {} remaining",
                        result->sent, result->acknowledged, result->approved, result->kept, result->suspense, result->duplicates,
                        result->digest_mismatches, (*queue)->size()));
        if ((*client)->endpoints().size() > 1)
            print_text(fmt::format("clearing endpoint {} ({} failovers)", sdk::to_string((*client)->current_endpoint()),
                                   (*client)->link_stats().failovers));
        if (!result->kept_for_review.empty()) {
            std::string sequences;
            for (std::uint64_t sequence : result->kept_for_review) sequences += (sequences.empty() ? "" : " ") + std::to_string(sequence);
            print_text("kept for review (queue sequence): " + sequences);
        }
    }
    return result->kept > 0 ? exit_upload_incomplete : exit_ok;
}

// load AMOUNT: INIT FOR LOAD → 0200 → 0210 MAC2 → CREDIT FOR LOAD → 0220 (queued until acknowledged).
// --carried: the same with processing code 280000, funded by the card's carried holding; 51 → exit 38.
int cmd_load(const Options& options, const ClearingCliOptions& clearing, std::uint32_t amount_fen, bool carried) {
    auto session = open_session(options, true, clearing.batch_file);
    if (!session) return report(session.error(), options.json);
    auto client = open_clearing(clearing, *(*session)->queue);
    if (!client) return report(client.error(), options.json);
    auto outcome = (*session)->terminal->load(amount_fen, **client, carried ? sdk::LoadFunding::carried : sdk::LoadFunding::cash);
    if (!outcome && carried && outcome.error().code == sdk::FlowErrorCode::declined && outcome.error().response_code == "51") {
        CliError error = from_flow(outcome.error());
        error.exit_code = exit_carried_short;
        error.code = "carried_short";
        return report(error, options.json);
    }
    if (!outcome) return report(from_flow(outcome.error()), options.json);
    (void)(*client)->sign_off();
    const sdk::TransactionRecord& r = outcome->record;
    if (options.json) {
        print_json({{"result", "loaded"},
                    {"funding", carried ? "carried" : "cash"},
                    {"amount_fen", r.amount_fen},
                    {"balance_before_fen", r.balance_before_fen},
                    {"balance_after_fen", r.balance_after_fen},
                    {"confirmed", outcome->confirmed},
                    {"confirmation_code", outcome->confirmation_code},
                    {"record", terminal_cli::to_json(r)}});
    } else {
        print_text(fmt::format("loaded {} CNY{}: balance {} -> {} CNY; confirmation {}", yuan(r.amount_fen),
                               carried ? " (carried balance, 280000)" : "", yuan(r.balance_before_fen), yuan(r.balance_after_fen),
                               outcome->confirmed ? "acknowledged" : "queued (" + outcome->confirmation_code + ")"));
    }
    return exit_ok;
}

// How clinic-pay runs beyond the amount: where the PIN comes from, cash for the rest, the purse part sent.
struct ClinicCliOptions {
    bool pin_stdin = false;
    std::string pin_on_command_line;  // refused: a PIN never goes on the command line
    bool no_cash = false;
    bool keep_queued = false;
};

// The PIN source clinic-pay and medical-balance share: --pin-stdin, else the terminal; a usage error
// for --pin on the command line or nobody to type at.
std::optional<CliError> pin_source_problem(const ClinicCliOptions& clinic) {
    if (!clinic.pin_on_command_line.empty())
        return usage(
            "--pin: a PIN is never given on the command line (ps and the shell's history show it): type it at the "
            "prompt, or pipe it on standard input with --pin-stdin");
    if (!clinic.pin_stdin && !has_terminal()) return usage("no terminal to type the PIN at: give it on standard input with --pin-stdin");
    return std::nullopt;
}

// clinic-pay --amount-fen N: medical account hold (0100) first with the PIN typed at the terminal (or piped with
// --pin-stdin), the purse for the remainder up to its balance, cash for the rest, 0220 completion, the
// purse part sent at once.
int cmd_clinic_pay(const Options& options, const ClearingCliOptions& clearing, std::uint32_t amount_fen, const ClinicCliOptions& clinic) {
    if (auto problem = pin_source_problem(clinic)) return report(*problem, options.json);
    sdk::ClinicOptions flow;
    flow.pin = clinic.pin_stdin ? pin_from_stdin() : pin_from_terminal();
    flow.cash_for_the_rest = !clinic.no_cash;
    flow.send_purse_now = !clinic.keep_queued;
    auto session = open_session(options, true, clearing.batch_file);
    if (!session) return report(session.error(), options.json);
    auto client = open_clearing(clearing, *(*session)->queue);
    if (!client) return report(client.error(), options.json);
    auto outcome = (*session)->terminal->clinic_payment(amount_fen, flow, **client);
    if (!outcome) return report(from_flow(outcome.error()), options.json);
    (void)(*client)->sign_off();
    if (options.json) {
        print_json({{"result", "paid"},
                    {"amount_fen", outcome->amount_fen},
                    {"medical_fen", outcome->medical_fen},
                    {"purse_fen", outcome->purse_fen},
                    {"cash_fen", outcome->cash_fen},
                    {"authorization_code", outcome->authorization_code},
                    {"completion_code", outcome->completion_code},
                    {"purse_uploaded", outcome->purse_uploaded},
                    {"purse_upload_error", outcome->purse_upload_error},
                    {"purse_record", outcome->purse_record ? terminal_cli::to_json(*outcome->purse_record) : json(nullptr)},
                    {"refund_reference", terminal_cli::to_json(outcome->refund_reference)}});
    } else {
        // The receipt: the bill and its three parts.
        std::string receipt = fmt::format(
            "bill            {:>10} CNY\nmedical account {:>10} CNY (authorization {})\npurse           {:>10} CNY{}\n"
            "cash to take    {:>10} CNY",
            yuan(outcome->amount_fen), yuan(outcome->medical_fen), outcome->authorization_code, yuan(outcome->purse_fen),
            outcome->purse_record ? (outcome->purse_uploaded ? " (sent to the clearing)" : " (queued for upload)") : "",
            yuan(outcome->cash_fen));
        print_text(receipt + "\n" + to_text(outcome->refund_reference));
    }
    return exit_ok;
}

// clinic-refund: the reference of the refunded payment — its receipt (clinic-pay --json output) and/or the
// explicit options, which override the receipt's members one by one.
struct RefundCliOptions {
    std::string receipt;
    std::string asn;
    std::string hold_terminal_id;
    std::uint32_t hold_batch = 0;
    std::uint32_t hold_stan = 0;
    std::uint32_t medical_fen = 0;
    std::string purchase_terminal_id;
    std::uint32_t purchase_serial = 0;
    std::uint32_t purse_fen = 0;
    std::uint32_t cash_fen = 0;
    bool purse_cash = false;
    bool skip_medical = false;
    bool skip_purse = false;
    const CLI::App* command = nullptr;  // which options were given
    bool given(const char* option) const { return command->count(option) > 0; }
};

// The explicit options over the receipt's reference (or over nothing).
Result<Ok, CliError> apply_refund_options(const RefundCliOptions& o, sdk::ClinicRefundReference& r) {
    if (o.given("--asn")) {
        auto asn = parse_asn(o.asn);
        if (!asn) return Unexpected{asn.error()};
        r.asn = *asn;
    }
    if (o.given("--hold-terminal-id") || o.given("--hold-batch") || o.given("--hold-stan")) {
        sdk::ClinicHoldReference hold = r.hold.value_or(sdk::ClinicHoldReference{});
        if (o.given("--hold-terminal-id")) hold.terminal_id = o.hold_terminal_id;
        if (o.given("--hold-batch")) hold.batch_number = o.hold_batch;
        if (o.given("--hold-stan")) hold.stan = o.hold_stan;
        r.hold = hold;
    }
    if (o.given("--medical-fen")) r.medical_fen = o.medical_fen;
    if (o.given("--purchase-terminal-id") || o.given("--purchase-serial")) {
        iso8583::PurchaseReference purchase = r.purchase.value_or(iso8583::PurchaseReference{});
        if (o.given("--purchase-terminal-id")) {
            auto bcd = digits_to_bcd(o.purchase_terminal_id);
            if (o.purchase_terminal_id.size() != 12 || !bcd)
                return Unexpected{
                    usage(fmt::format("--purchase-terminal-id '{}': the PSAM terminal id is 12 digits", o.purchase_terminal_id))};
            std::copy(bcd->begin(), bcd->end(), purchase.terminal_id.begin());
        }
        if (o.given("--purchase-serial")) purchase.terminal_serial = o.purchase_serial;
        r.purchase = purchase;
    }
    if (o.given("--purse-fen")) r.purse_fen = o.purse_fen;
    if (o.given("--cash-fen")) r.cash_fen = o.cash_fen;
    return Ok{};
}

Result<sdk::ClinicRefundReference, CliError> refund_reference(const RefundCliOptions& o) {
    sdk::ClinicRefundReference reference;
    const auto receipt_error = [&](std::string message) {
        return Unexpected{CliError{exit_receipt_error, "receipt", "receipt_error", std::move(message)}};
    };
    if (!o.receipt.empty()) {
        auto read = read_receipt(o.receipt);
        if (!read) return receipt_error(read.error());
        reference = *read;
    } else if (!o.given("--asn")) {
        return Unexpected{
            usage("name the payment: --receipt FILE (clinic-pay --json output), or --asn with its parts "
                  "(--hold-terminal-id, --hold-batch, --hold-stan, --medical-fen; --purchase-terminal-id, "
                  "--purchase-serial, --purse-fen; --cash-fen)")};
    }
    if (auto applied = apply_refund_options(o, reference); !applied) return Unexpected{applied.error()};
    if (auto problem = sdk::refund_reference_problem(reference); !problem.empty()) {
        if (!o.receipt.empty()) return receipt_error(o.receipt + ": " + problem);
        return Unexpected{usage("the payment's reference: " + problem)};
    }
    return reference;
}

json to_json(const sdk::ClinicRefundOutcome& r, const sdk::ClinicRefundReference& reference) {
    json out{{"result", r.incomplete ? "partial" : "refunded"},
             {"card", bcd_to_digits(reference.asn)},
             {"medical_fen", r.medical_fen},
             {"medical_code", r.medical_code},
             {"purse", r.purse == sdk::PurseRefund::card ? "card" : "cash"},
             {"purse_fen", r.purse_fen},
             {"cash_refund_code", r.cash_refund_code},
             {"cash_fen", r.cash_fen},
             {"credit", nullptr}};
    if (r.credit) {
        out["credit"] = {{"balance_before_fen", r.credit->record.balance_before_fen},
                         {"balance_after_fen", r.credit->record.balance_after_fen},
                         {"confirmed", r.credit->confirmed},
                         {"confirmation_code", r.credit->confirmation_code},
                         {"record", terminal_cli::to_json(r.credit->record)}};
    }
    return out;
}

// The refund receipt: what went back where, and the cash to hand out.
std::string refund_receipt(const sdk::ClinicRefundOutcome& r, const sdk::ClinicRefundReference& reference) {
    std::string text = fmt::format("refund of card {}", bcd_to_digits(reference.asn));
    if (!r.medical_code.empty()) text += fmt::format("\nmedical account {:>10} CNY back (0210 {})", yuan(r.medical_fen), r.medical_code);
    if (r.credit) {
        text += fmt::format("\npurse (card)    {:>10} CNY back: balance {} -> {} CNY, confirmation {}", yuan(r.purse_fen),
                            yuan(r.credit->record.balance_before_fen), yuan(r.credit->record.balance_after_fen),
                            r.credit->confirmed ? "acknowledged" : "queued (" + r.credit->confirmation_code + ")");
    } else if (!r.cash_refund_code.empty()) {
        text += fmt::format("\npurse (cash)    {:>10} CNY, in the cash below (0230 {})", yuan(r.purse_fen), r.cash_refund_code);
    }
    return text + fmt::format("\ncash to hand back {:>8} CNY", yuan(r.cash_fen));
}

// clinic-refund: the same-day refund of a clinic payment named by its receipt — the purse part to the card in
// the reader (or --purse-cash), then the medical part, and the cash part handed back.
int cmd_clinic_refund(const Options& options, const ClearingCliOptions& clearing, const RefundCliOptions& refund) {
    auto reference = refund_reference(refund);
    if (!reference) return report(reference.error(), options.json);
    const bool to_card = reference->purchase && !refund.purse_cash && !refund.skip_purse;
    auto session = open_session(options, to_card, clearing.batch_file, to_card);
    if (!session) return report(session.error(), options.json);
    auto client = open_clearing(clearing, *(*session)->queue);
    if (!client) return report(client.error(), options.json);
    sdk::ClinicRefundRequest request{*reference, refund.purse_cash ? sdk::PurseRefund::cash : sdk::PurseRefund::card, refund.skip_medical,
                                     refund.skip_purse};
    auto outcome = (*session)->terminal->clinic_refund(request, **client);
    if (!outcome) return report(from_flow(outcome.error()), options.json);
    (void)(*client)->sign_off();
    if (options.json) {
        json out = to_json(*outcome, *reference);
        if (outcome->incomplete) {
            CliError error = from_flow(*outcome->incomplete);
            out["incomplete"] = {{"code", error.code}, {"message", error.message}, {"response_code", error.response_code}};
        }
        print_json(out);
    } else {
        print_text(refund_receipt(*outcome, *reference));
    }
    if (!outcome->incomplete) return exit_ok;
    CliError error = from_flow(*outcome->incomplete);
    std::fprintf(stderr, "coconut-terminal: refund_incomplete (exit %d): %s\n", exit_refund_incomplete, error.message.c_str());
    return exit_refund_incomplete;
}

// medical-balance: the medical account's available amount before billing (0100 313000), PIN and proof.
int cmd_medical_balance(const Options& options, const ClearingCliOptions& clearing, const ClinicCliOptions& clinic) {
    if (auto problem = pin_source_problem(clinic)) return report(*problem, options.json);
    auto session = open_session(options, true, clearing.batch_file);
    if (!session) return report(session.error(), options.json);
    auto client = open_clearing(clearing, *(*session)->queue);
    if (!client) return report(client.error(), options.json);
    auto available = (*session)->terminal->medical_balance(clinic.pin_stdin ? pin_from_stdin() : pin_from_terminal(), **client);
    if (!available) return report(from_flow(available.error()), options.json);
    (void)(*client)->sign_off();
    if (options.json) {
        print_json({{"medical_available_fen", *available}});
    } else {
        print_text(fmt::format("medical account: {} CNY available", yuan(static_cast<std::uint32_t>(*available))));
    }
    return exit_ok;
}

int cmd_sync_hotlist(const Options& options, const ClearingCliOptions& clearing) {
    auto hotlist = sdk::Hotlist::load(options.hotlist_path);
    if (!hotlist) return report(CliError{exit_hotlist_error, "hotlist", "hotlist_error", hotlist.error().message}, options.json);
    auto queue = open_queue(options, clearing.batch_file);  // its log keeps the STAN counter
    if (!queue) return report(queue.error(), options.json);
    auto client = open_clearing(clearing, **queue);
    if (!client) return report(client.error(), options.json);
    auto synced = (*client)->sync_hotlist(*hotlist);
    if (!synced) return report(from_clearing(synced.error()), options.json);
    (void)(*client)->sign_off();
    if (options.json) {
        print_json({{"from_version", synced->from_version},
                    {"to_version", synced->to_version},
                    {"chunks", synced->chunks},
                    {"added", synced->added},
                    {"removed", synced->removed},
                    {"replaced", synced->replaced},
                    {"count", hotlist->size()}});
    } else {
        print_text(fmt::format("hotlist version {} -> {} ({} chunk(s), +{} -{}), {} blocked card(s)", synced->from_version,
                               synced->to_version, synced->chunks, synced->added, synced->removed, hotlist->size()));
    }
    return exit_ok;
}

json to_json(const sdk::BatchTotals& t) {
    return {{"debits_count", t.debits_count},
            {"debits_fen", t.debits_fen},
            {"credits_count", t.credits_count},
            {"credits_fen", t.credits_fen},
            {"credit_reversals_count", t.credit_reversals_count},
            {"credit_reversals_fen", t.credit_reversals_fen},
            {"debit_reversals_count", t.debit_reversals_count},
            {"debit_reversals_fen", t.debit_reversals_fen}};
}

// reconcile: 0500 with this batch's totals; 00 closes the batch, 95 keeps it open (exit 34).
int cmd_reconcile(const Options& options, const ClearingCliOptions& clearing) {
    auto queue = open_queue(options, clearing.batch_file);  // its log keeps the batch state
    if (!queue) return report(queue.error(), options.json);
    auto client = open_clearing(clearing, **queue);
    if (!client) return report(client.error(), options.json);
    auto result = (*client)->reconcile();
    if (!result) return report(from_clearing(result.error()), options.json);
    (void)(*client)->sign_off();
    if (options.json) {
        print_json({{"batch_number", result->batch_number},
                    {"balanced", result->balanced},
                    {"totals", to_json(result->totals)},
                    {"host_net", result->host_net},
                    {"next_batch_number", (*client)->batch().batch_number}});
    } else {
        const auto& t = result->totals;
        print_text(fmt::format("batch {}: {} — debits {} / {} fen, credits {} / {} fen, reversals {} / {} fen and {} / {} fen; host net {}",
                               result->batch_number, result->balanced ? "balanced" : "OUT OF BALANCE", t.debits_count, t.debits_fen,
                               t.credits_count, t.credits_fen, t.credit_reversals_count, t.credit_reversals_fen, t.debit_reversals_count,
                               t.debit_reversals_fen, result->host_net));
    }
    return result->balanced ? exit_ok : exit_out_of_balance;
}

}  // namespace

namespace {

// What the command line sets, and the subcommands it may name (CLI11 writes into these members).
struct CommandLine {
    Options options;
    HsmMacOptions hsm_mac;
    bool permanent = false;
    CLI::App* block_card = nullptr;
    CLI::App* return_card = nullptr;
    CLI::App* unblock_card = nullptr;
    std::uint32_t amount_fen = 0;
    std::uint32_t repeat = 1;
    sdk::TapRequest tap;
    std::string asn_digits;
    std::string reason_text = "lost";
    bool wait_absent = false;
    std::uint32_t wait_timeout_ms = 10000;
    ClearingCliOptions clearing;
    std::uint32_t online_amount_fen = 0;
    bool carried = false;
    ClinicCliOptions clinic;
    RefundCliOptions refund;
    CLI::App* balance = nullptr;
    CLI::App* purchase = nullptr;
    CLI::App* tap_command = nullptr;
    CLI::App* recover = nullptr;
    CLI::App* holder = nullptr;
    CLI::App* queue = nullptr;
    CLI::App* queue_list = nullptr;
    CLI::App* hotlist_add = nullptr;
    CLI::App* hotlist_remove = nullptr;
    CLI::App* hotlist_show = nullptr;
    CLI::App* wait = nullptr;
    CLI::App* upload = nullptr;
    CLI::App* load = nullptr;
    CLI::App* clinic_pay = nullptr;
    CLI::App* medical_balance = nullptr;
    CLI::App* clinic_refund = nullptr;
    CLI::App* sync_hotlist = nullptr;
    CLI::App* reconcile = nullptr;
};

void add_global_options(CLI::App& app, Options& options) {
    app.add_option("--reader", options.reader, "PC/SC reader holding the card");
    app.add_option("--psam-reader", options.psam_reader, "PC/SC reader holding the PSAM");
    app.add_option("--card", options.card_image, "Card image file, run in process (instead of --reader)");
    app.add_option("--psam", options.psam_image, "PSAM image file, run in process (instead of --psam-reader)");
    app.add_option("--queue", options.queue_path, "Store-and-forward queue file")->capture_default_str();
    app.add_option("--hotlist", options.hotlist_path, "Hotlist file (missing = empty list at version 0)")->capture_default_str();
    app.add_option("--fares", options.fares_path, "Fare tables, JSON (terminal-sdk/README.md)");
    app.add_option("--time", options.time_text, "Fixed terminal clock, Hainan time 'YYYY-MM-DD hh:mm:ss' (simulation)");
    app.add_flag("--json", options.json, "Machine-readable output");
    app.add_flag("--trace", options.trace, "Print every APDU exchanged on stderr");
}

// The commands that need no clearing: card flows, queue, hotlist, wait.
void add_card_commands(CLI::App& app, CommandLine& c) {
    app.add_subcommand("readers", "List the PC/SC readers");
    c.balance = app.add_subcommand("balance", "Read the purse balance");
    c.purchase = app.add_subcommand("purchase", "Shop purchase (EP purchase 06) of --amount-fen fen");
    c.purchase->add_option("--amount-fen,--amount", c.amount_fen, "Amount in fen (0.01 CNY)")
        ->required()
        ->check(CLI::Range(std::uint32_t{1}, std::numeric_limits<std::uint32_t>::max()));
    c.purchase->add_option("--repeat", c.repeat, "Run that many purchases in a row (soak tests)")
        ->check(CLI::Range(std::uint32_t{1}, purchase_repeat_max));
    c.tap_command = app.add_subcommand("tap", "Bus tap (CAPP purchase 09): flat fare or entry/exit by the fare table");
    c.tap_command->add_option("--line", c.tap.line, "Line number")->required()->check(CLI::Range(1, 65535));
    c.tap_command->add_option("--station", c.tap.station, "Station number on the line")->required();
    c.tap_command->add_option("--vehicle", c.tap.vehicle, "Vehicle id");
    c.recover = app.add_subcommand("recover", "Resolve debits interrupted on this terminal for the card now presented");
    c.holder = app.add_subcommand("holder", "Read the cardholder data (social-security application)");

    c.queue = app.add_subcommand("queue", "Inspect the store-and-forward queue");
    c.queue->require_subcommand(1);
    c.queue_list = c.queue->add_subcommand("list", "Transactions awaiting upload, then open intents");
    c.queue->add_subcommand("count", "Number of transactions awaiting upload");

    auto* hotlist = app.add_subcommand("hotlist", "Local hotlist updates (one delta per change)");
    hotlist->require_subcommand(1);
    c.hotlist_add = hotlist->add_subcommand("add", "Block a card");
    c.hotlist_add->add_option("ASN", c.asn_digits, "Card ASN, 20 digits")->required();
    c.hotlist_add->add_option("--reason", c.reason_text, "lost, stolen, cloned or issuer")->capture_default_str();
    c.hotlist_remove = hotlist->add_subcommand("remove", "Unblock a card");
    c.hotlist_remove->add_option("ASN", c.asn_digits, "Card ASN, 20 digits")->required();
    c.hotlist_show = hotlist->add_subcommand("show", "Version and size; with --asn, whether that card is blocked");
    c.hotlist_show->add_option("--asn", c.asn_digits, "Card ASN, 20 digits");

    c.wait = app.add_subcommand("wait", "Wait until a card is in the reader (or, with --absent, gone)");
    c.wait->add_flag("--absent", c.wait_absent, "Wait for the card to leave");
    c.wait->add_option("--timeout-ms", c.wait_timeout_ms, "Give up after this long (exit 27)")
        ->capture_default_str()
        ->check(CLI::Range(std::uint32_t{0}, wait_timeout_ms_max));
}

// The clearing options every online command takes.
void add_clearing_options(CLI::App* command, ClearingCliOptions& clearing) {
    command
        ->add_option("--clearing", clearing.clearing,
                     "coconut-clearingd HOST:PORT, or the nodes of a clearing cluster as HOST:PORT,HOST:PORT,... "
                     "(tried in order from the one that served last; refused, closed, silent or answering 91: the next)")
        ->required();
    command
        ->add_option("--failover-ms", clearing.failover_ms,
                     "With a list: keep going round it (pausing 0.2-2 s between rounds) for this long before giving up; "
                     "0 = one round")
        ->capture_default_str()
        ->check(CLI::Range(std::uint32_t{0}, std::uint32_t{600000}));
    command->add_option("--terminal-id", clearing.terminal_id, "Terminal id as registered at the clearing (field 41, 8 characters)")
        ->required();
    command->add_option("--timeout-ms", clearing.timeout_ms, "Give up when an answer takes longer")
        ->capture_default_str()
        ->check(CLI::Range(std::uint32_t{100}, std::uint32_t{600000}));
    command->add_option("--batch-file", clearing.batch_file,
                        "An old queue's batch state file, converted into the queue once (default: the queue path + .batch)");
    command->add_option("--ca", clearing.ca, "TLS: the island CA certificate (PEM) the clearing's must chain to");
    command->add_option("--cert", clearing.certificate, "TLS: this terminal's certificate (PEM, CN = the terminal id)");
    command->add_option("--key", clearing.private_key, "TLS: this terminal's private key (PEM, mode 0600)");
    command->add_flag("--insecure", clearing.insecure,
                      "Plain TCP without TLS, for a clearing serving --insecure-terminals (local development)");
}

// The HSM options of the counter commands.
void add_hsm_options(CLI::App* command, HsmMacOptions& hsm_mac) {
    command->add_option("--hsm", hsm_mac.endpoints, "coconut-hsmd HOST:PORT, or HOST:PORT,HOST:PORT (copies of one store)")->required();
    command->add_option("--hsm-key", hsm_mac.key_file, "This counter's HSM client key file (a client with the permission maintenance)")
        ->required();
    command->add_option("--maintenance-key", hsm_mac.master, "The HSM's maintenance master, LABEL or LABEL:VERSION")->capture_default_str();
}

// Service counter: block a card, take a returned card's balance and block it.
void add_counter_commands(CLI::App& app, CommandLine& c) {
    c.block_card = app.add_subcommand("block-card", "APPLICATION BLOCK of the card's purse with the HSM's maintenance MAC");
    c.block_card->add_flag("--permanent", c.permanent, "Block for good (default: temporary, lifted by APPLICATION UNBLOCK)");
    add_hsm_options(c.block_card, c.hsm_mac);
    c.unblock_card =
        app.add_subcommand("unblock-card", "APPLICATION UNBLOCK: lift a temporary block (a permanent one stays: exit 12, 9303)");
    add_hsm_options(c.unblock_card, c.hsm_mac);
    c.return_card = app.add_subcommand(
        "return-card", "Card handed back: its whole balance taken by a purchase with the PSAM (queued for upload), then blocked for good");
    add_hsm_options(c.return_card, c.hsm_mac);
}

// --amount-fen N; the amount as a positional argument (the old spelling) is still taken for a release,
// with a warning (docs/CLI.md "Option names").
void add_amount_option(CLI::App* command, std::uint32_t& amount_fen) {
    const auto range = CLI::Range(std::uint32_t{1}, std::numeric_limits<std::uint32_t>::max());
    auto* named = command->add_option("--amount-fen", amount_fen, "Amount in fen (0.01 CNY)")->check(range);
    auto* positional = command->add_option("AMOUNT", amount_fen, "")->check(range)->group("");
    named->excludes(positional);
    command->callback([command, named, positional] {
        if (named->count() == 0 && positional->count() == 0) throw CLI::RequiredError("--amount-fen");
        if (positional->count() > 0)
            std::cerr << "coconut-terminal: warning: " << command->get_name()
                      << " AMOUNT is a deprecated spelling, use --amount-fen AMOUNT (the old one goes in a later release)\n";
    });
}

// clinic-refund: the payment's reference (--receipt and/or the explicit parts) and how the purse part goes back.
void add_refund_command(CLI::App& app, CommandLine& c) {
    auto* command = c.clinic_refund =
        app.add_subcommand("clinic-refund",
                           "Same-day refund of a clinic payment named by its receipt: the purse part back to the card (0200/0220 200000) or "
                           "in cash, the medical part back to the medical account (0200 200030), the cash part handed back");
    c.refund.command = command;
    RefundCliOptions& r = c.refund;
    command->add_option("--receipt", r.receipt,
                        "The payment's receipt: clinic-pay --json output (its refund_reference), or that object alone");
    command->add_option("--asn", r.asn, "The card paid with, 20 digits (overrides the receipt's)");
    command->add_option("--hold-terminal-id", r.hold_terminal_id, "The medical hold's 0100: field 41 (8 characters)");
    command->add_option("--hold-batch", r.hold_batch, "The medical hold's 0100: batch number (field 60)")->check(CLI::Range(1, 999999));
    command->add_option("--hold-stan", r.hold_stan, "The medical hold's 0100: STAN (field 11)")->check(CLI::Range(1, 999999));
    command->add_option("--medical-fen", r.medical_fen, "The medical part: the amount the completion posted");
    command->add_option("--purchase-terminal-id", r.purchase_terminal_id, "The purse part's purchase: PSAM terminal id (DF06, 12 digits)");
    command->add_option("--purchase-serial", r.purchase_serial, "The purse part's purchase: PSAM terminal serial (DF05)");
    command->add_option("--purse-fen", r.purse_fen, "The purse part's amount");
    command->add_option("--cash-fen", r.cash_fen, "The cash part's amount (handed back)");
    command->add_flag("--purse-cash", r.purse_cash, "Refund the purse part in cash at the counter (0220 200000) instead of to the card");
    command->add_flag("--skip-purse", r.skip_purse,
                      "The purse part was refunded already (a partial refund, exit 42): the medical part alone");
    command->add_flag("--skip-medical", r.skip_medical, "Do not refund the medical part (refunded already)");
    add_clearing_options(command, c.clearing);
}

// The commands that talk to the clearing.
void add_clearing_commands(CLI::App& app, CommandLine& c) {
    c.upload =
        app.add_subcommand("upload", "Upload the queue to the clearing (0320 and advices, many in flight); delete what it acknowledged");
    add_clearing_options(c.upload, c.clearing);
    c.upload->add_option("--in-flight", c.clearing.in_flight, "Uploads awaiting an answer at once")
        ->capture_default_str()
        ->check(CLI::Range(std::size_t{1}, sdk::clearing_in_flight_max));
    c.load = app.add_subcommand("load", "Online load of --amount-fen fen (0200/0210, CREDIT FOR LOAD, 0220)");
    add_amount_option(c.load, c.online_amount_fen);
    c.load->add_flag("--carried", c.carried,
                     "Collect the balance carried from the card this one replaced (processing code 280000, funded by the card's "
                     "carried holding instead of cash); 51 (the holding holds less) exits 38");
    add_clearing_options(c.load, c.clearing);
    c.clinic_pay =
        app.add_subcommand("clinic-pay", "Clinic payment of --amount-fen fen: medical account hold (0100), purse for the rest, 0220");
    add_amount_option(c.clinic_pay, c.online_amount_fen);
    c.clinic_pay->add_flag("--pin-stdin", c.clinic.pin_stdin,
                           "Read the cardholder's PIN as one line on standard input (a PIN pad's driver, a script) instead of the prompt");
    c.clinic_pay->add_option("--pin", c.clinic.pin_on_command_line, "Refused: the PIN is typed at the prompt or given with --pin-stdin")
        ->group("");  // hidden: only to explain the refusal
    c.clinic_pay->add_flag("--no-cash", c.clinic.no_cash, "Refuse the bill when medical account and purse do not cover it (no cash part)");
    c.medical_balance = app.add_subcommand(
        "medical-balance",
        "Before billing: the medical account's available amount (0100 313000), with the holder's PIN and the card's proof");
    c.medical_balance->add_flag("--pin-stdin", c.clinic.pin_stdin,
                                "Read the cardholder's PIN as one line on standard input instead of the prompt");
    c.medical_balance
        ->add_option("--pin", c.clinic.pin_on_command_line, "Refused: the PIN is typed at the prompt or given with --pin-stdin")
        ->group("");
    add_clearing_options(c.medical_balance, c.clearing);
    c.clinic_pay->add_flag("--keep-queued", c.clinic.keep_queued,
                           "Leave the purse part queued for the next upload instead of sending it now");
    c.clinic_pay->add_option("--merchant-id", c.clearing.merchant_id, "Field 42 (card acceptor id) of the 0100");
    add_clearing_options(c.clinic_pay, c.clearing);
    add_refund_command(app, c);
    c.sync_hotlist = app.add_subcommand("sync-hotlist", "Download the hotlist changes since the local version (0800 70=101)");
    add_clearing_options(c.sync_hotlist, c.clearing);
    c.reconcile = app.add_subcommand("reconcile", "End of shift: 0500 with this batch's totals; 00 closes the batch");
    add_clearing_options(c.reconcile, c.clearing);
}

// Runs the subcommand the command line named.
int dispatch(const CLI::App& app, const CommandLine& c) {
    const Options& options = c.options;
    if (app.got_subcommand("readers")) return cmd_readers(options);
    if (*c.balance) return cmd_balance(options);
    if (*c.purchase) return cmd_purchase(options, c.amount_fen, c.repeat);
    if (*c.tap_command) return cmd_tap(options, c.tap);
    if (*c.recover) return cmd_recover(options);
    if (*c.holder) return cmd_holder(options);
    if (*c.queue) return cmd_queue(options, c.queue_list->parsed());
    if (*c.hotlist_add) {
        auto reason = parse_reason(c.reason_text);
        if (!reason) return report(reason.error(), options.json);
        return cmd_hotlist_change(options, c.asn_digits, *reason);
    }
    if (*c.hotlist_remove) return cmd_hotlist_change(options, c.asn_digits, std::nullopt);
    if (*c.hotlist_show) return cmd_hotlist_show(options, c.asn_digits);
    if (*c.wait) return cmd_wait(options, c.wait_absent, c.wait_timeout_ms);
    if (*c.upload) return cmd_upload(options, c.clearing);
    if (*c.load) return cmd_load(options, c.clearing, c.online_amount_fen, c.carried);
    if (*c.clinic_pay) return cmd_clinic_pay(options, c.clearing, c.online_amount_fen, c.clinic);
    if (*c.medical_balance) return cmd_medical_balance(options, c.clearing, c.clinic);
    if (*c.clinic_refund) return cmd_clinic_refund(options, c.clearing, c.refund);
    if (*c.sync_hotlist) return cmd_sync_hotlist(options, c.clearing);
    if (*c.reconcile) return cmd_reconcile(options, c.clearing);
    if (*c.block_card) return cmd_block_card(options, c.hsm_mac, c.permanent);
    if (*c.return_card) return cmd_return_card(options, c.hsm_mac);
    if (*c.unblock_card) return cmd_unblock_card(options, c.hsm_mac);
    return exit_usage;
}

}  // namespace

int run(int argc, char** argv) {
    CLI::App app{
        "coconut-terminal: shop purchases, bus taps, online loads, clinic payments, recovery, queue, hotlist and clearing over the Coconut Card terminal SDK"};
    app.footer(footer_text);
    app.require_subcommand(1);
    app.fallthrough();
    CommandLine command_line;
    add_global_options(app, command_line.options);
    add_card_commands(app, command_line);
    add_clearing_commands(app, command_line);
    add_counter_commands(app, command_line);
    cmdline::set_conventions(app, "coconut-terminal", exit_code_table);
    constexpr std::array<cmdline::Rename, 1> renamed{{{"--amount", "--amount-fen"}}};
    if (auto exit = cmdline::parse(app, argc, argv, "coconut-terminal", renamed)) return *exit;
    return dispatch(app, command_line);
}

}  // namespace coconut::terminal_cli

int main(int argc, char** argv) {
    try {
        return coconut::terminal_cli::run(argc, argv);
    } catch (const std::exception& error) {
        // Start-up failures only (OpenSSL provider missing, out of memory): expected errors are reported above.
        std::fprintf(stderr, "coconut-terminal: internal error (exit 1): %s\n", error.what());
        return coconut::terminal_cli::exit_internal;
    }
}
