#include "simulate.hpp"

#include "certificates.hpp"
#include "errors.hpp"
#include "pcsc_env.hpp"
#include "process.hpp"

#include <coconut/core/sha256.hpp>
#include <coconut/cos/card.hpp>
#include <coconut/sdk/clearing_client.hpp>
#include <coconut/sdk/hotlist.hpp>
#include <coconut/sdk/queue.hpp>
#include <coconut/sdk/reader.hpp>
#include <coconut/sdk/terminal.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <ctime>
#include <fstream>
#include <limits>
#include <mutex>
#include <thread>

namespace coconut::cli {

namespace {

using Endpoints = std::vector<sdk::ClearingEndpoint>;
using Seconds = std::uint32_t;  // simulated seconds since 00:00 local time of the business date

constexpr Seconds day_start_s = 6 * 3600;
constexpr std::uint32_t bus_flat_fare_fen = 200;
// Distance lines: fare by stops travelled (index = stops, last entry for anything longer).
const std::vector<std::uint32_t> distance_fares_fen = {100, 100, 200, 200, 300, 300, 400, 400, 500};
constexpr std::uint16_t stations_per_line = 20;
// Cards are issued with this PIN (world.cpp); the clinic flow verifies it before the medical account.
constexpr std::string_view card_pin = "123456";
// A cardholder tops up at a shop's counter when the purse falls below this, by top_up_fen (capped so the
// purse stays under its 1,000 CNY maximum).
constexpr std::uint32_t top_up_below_fen = 5'000;
constexpr std::uint32_t top_up_fen = 50'000;
constexpr std::uint32_t purse_max_fen = 100'000;
constexpr std::size_t bus_operators_max = 3;
constexpr std::uint64_t airport_counter_id = 7001;
// Realistic resident: ~6 card transactions a day.
constexpr std::size_t default_transactions_per_card = 6;
// After the day, uploads repeat until every queue is empty. Between rounds a pause drawn from 50-450 ms (a
// restarting clearing needs a moment): with a fixed pause the rounds could keep the same phase as a
// clearing killed at a fixed interval and meet it down round after round. The wait is bounded by rounds in
// which nothing was acknowledged (a queue that stopped shrinking) and by time in all, not by rounds: a
// clearing killed every 0.2 s on a busy machine acknowledges little per round, but it does go on.
constexpr std::size_t final_upload_idle_rounds_max = 120;
constexpr auto final_upload_time_max = std::chrono::seconds(120);
constexpr std::uint64_t final_upload_pause_min_ms = 50;
constexpr std::uint64_t final_upload_pause_spread_ms = 400;
// Per-answer deadline of the upload client: the clearing answers in milliseconds; a killed clearing is
// noticed at once (connection closed), a silent one after this.
constexpr auto upload_response_timeout = std::chrono::milliseconds(3000);
// With the nodes of a cluster, a terminal keeps trying the list this long (a failover takes seconds).
constexpr auto cluster_failover_window = std::chrono::milliseconds(10'000);

// ---- deterministic random numbers (splitmix64: same numbers on every platform and library) ------------

class Random {
public:
    explicit Random(std::uint64_t seed) : state_(seed) {}
    std::uint64_t next() {
        std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }
    std::uint64_t below(std::uint64_t n) { return n == 0 ? 0 : next() % n; }
    double unit() { return static_cast<double>(next() >> 11) / static_cast<double>(1ull << 53); }
    bool chance(double p) { return unit() < p; }
    // A bell around `mean` with roughly `spread` standard deviation (sum of three uniforms).
    double bell(double mean, double spread) { return mean + spread * (unit() + unit() + unit() - 1.5) * 2.0; }

private:
    std::uint64_t state_;
};

std::uint64_t mix(std::uint64_t a, std::uint64_t b) { return Random(a * 0x100000001B3ull ^ b).next(); }

// FNV-1a: a stable 64-bit name for a string (std::hash may differ between libraries).
std::uint64_t fnv1a(std::string_view text) {
    std::uint64_t h = 0xCBF29CE484222325ull;
    for (const char c : text) h = (h ^ static_cast<std::uint8_t>(c)) * 0x100000001B3ull;
    return h;
}

// ---- the day's plan --------------------------------------------------------------------------------

// tourist_sale / tourist_return / card_replaced: at the airport counter (amount_fen: the deposit).
// clinic_refund: the same-day refund of the card's clinic visit numbered `sequence`, at that clinic (made if
// `chosen`, or for every N-th visit the purse helped pay).
enum class EventKind : std::uint8_t { bus_tap, shop, clinic, tourist_sale, tourist_return, card_replaced, clinic_refund };

struct Event {
    Seconds at = 0;
    std::uint32_t card = 0;
    std::uint32_t terminal = 0;
    EventKind kind = EventKind::bus_tap;
    std::uint32_t amount_fen = 0;  // shop, clinic
    std::uint16_t station = 0;     // bus
    std::uint32_t sequence = 0;    // order among the card's events (ties)
    std::uint32_t new_card = 0;    // card_replaced: the card from the counter's stock
    bool chosen = false;           // clinic_refund: one of the one-in-N visits refunded whatever paid them
};

struct Plan {
    std::vector<Event> events;
    std::vector<std::uint32_t> buses, shops, clinics, counters;  // terminal indexes by kind
    std::vector<std::uint32_t> residents, tourists, stock;       // the island's cards in the day
};

Seconds clamp_time(double t, Seconds end) {
    if (t < day_start_s) t = day_start_s;
    if (t >= end) t = end - 1;
    return static_cast<Seconds>(t);
}

// One card's day (`day`, in any order) into the plan: sorted, numbered, and each tap in on a distance line
// followed by its tap out a few stops on, 5–40 minutes later but before the card's next activity.
void append_card_day(Plan& plan, const Island& island, std::vector<Event> day, Random& random, Seconds end) {
    std::sort(day.begin(), day.end(), [](const Event& a, const Event& b) { return a.at < b.at; });
    std::uint32_t sequence = 0;
    for (std::size_t k = 0; k < day.size(); ++k) {
        Event e = day[k];
        e.sequence = sequence++;
        plan.events.push_back(e);
        if (e.kind != EventKind::bus_tap || !island.terminals[e.terminal].distance_fares) continue;
        const Seconds next = k + 1 < day.size() ? day[k + 1].at : end;
        const Seconds ride = 300 + static_cast<Seconds>(random.below(2100));
        Event exit = e;
        exit.at = std::min<Seconds>(e.at + ride, e.at + (next - e.at) / 2);
        exit.station = static_cast<std::uint16_t>(1 + (e.station + 1 + random.below(8)) % stations_per_line);
        exit.sequence = sequence++;
        plan.events.push_back(exit);
    }
}

// A bus tap (a distance line's tap in) or a shop purchase at `at`.
Event bus_or_shop(const Plan& plan, std::uint32_t card, Seconds at, bool bus, Random& random) {
    Event e;
    e.card = card;
    e.at = at;
    if (bus) {
        e.kind = EventKind::bus_tap;
        e.terminal = plan.buses[random.below(plan.buses.size())];
        e.station = static_cast<std::uint16_t>(1 + random.below(stations_per_line));
    } else {
        e.kind = EventKind::shop;
        e.terminal = plan.shops[random.below(plan.shops.size())];
        const double size = random.unit();
        e.amount_fen = static_cast<std::uint32_t>(300 + size * size * 3000) / 10 * 10;
    }
    return e;
}

// Visitors: each tourist card is sold at the airport counter between 07:00 and 11:00 (its deposit), rides
// buses and pays in shops (never at clinics: no social-security application), and leaves 5–9 hours later;
// three of every four bring the card back to the counter then, the fourth keeps it.
void plan_tourists(Plan& plan, const Island& island, const DayOptions& options, Seconds end) {
    if (options.tourists == 0) return;
    if (plan.counters.empty()) fail(exit_codes::usage, "tourist cards need a service counter: this island was planned without one");
    for (std::uint32_t c = 0; c < island.cards.size() && plan.tourists.size() < options.tourists; ++c)
        if (island.cards[c].tourist) plan.tourists.push_back(c);
    if (plan.tourists.size() < options.tourists)
        fail(exit_codes::usage,
             fmt::format("the island holds {} tourist cards, the day asks for {}", plan.tourists.size(), options.tourists));
    for (std::size_t k = 0; k < plan.tourists.size(); ++k) {
        const std::uint32_t c = plan.tourists[k];
        Random random(mix(mix(options.seed, 0x70C15), c));
        const std::uint32_t counter = plan.counters[random.below(plan.counters.size())];
        const Seconds sold = clamp_time(7 * 3600 + random.unit() * 4 * 3600, end);
        const Seconds leaves = clamp_time(sold + 5 * 3600 + random.unit() * 4 * 3600, end);
        std::vector<Event> day;
        Event sale;
        sale.at = sold;
        sale.card = c;
        sale.terminal = counter;
        sale.kind = EventKind::tourist_sale;
        sale.amount_fen = tourist_deposit_fen;
        day.push_back(sale);
        const std::size_t count = 3 + random.below(6);
        for (std::size_t made = 0; made < count; ++made) {
            const auto at = static_cast<Seconds>(sold + 600 + random.unit() * static_cast<double>(leaves - sold - 1200));
            day.push_back(bus_or_shop(plan, c, at, random.chance(0.6), random));
            if (day.back().kind == EventKind::bus_tap && island.terminals[day.back().terminal].distance_fares) ++made;
        }
        if (k % 4 != 3) {
            Event back = sale;
            back.at = leaves;
            back.kind = EventKind::tourist_return;
            day.push_back(back);
        }
        append_card_day(plan, island, std::move(day), random, end);
    }
}

// A resident reports the card lost at the counter after the first of its activities from noon on that
// leaves no distance trip open (else after its last), and leaves with a card from the counter's stock:
// the card's later activities are the new card's.
void plan_lost_cards(Plan& plan, const Island& island, const DayOptions& options) {
    if (options.lost_cards == 0) return;
    if (plan.counters.empty()) fail(exit_codes::usage, "a lost card is replaced at a service counter: this island was planned without one");
    for (std::uint32_t c = 0; c < island.cards.size() && plan.stock.size() < options.lost_cards; ++c)
        if (island.cards[c].stock) plan.stock.push_back(c);
    if (plan.stock.size() < options.lost_cards || plan.residents.size() < options.lost_cards)
        fail(exit_codes::usage, fmt::format("{} lost cards need as many cards in the counter's stock ({}) and residents",
                                            options.lost_cards, plan.stock.size()));
    const std::size_t first = mix(options.seed, 0x1057CA2D) % plan.residents.size();
    for (std::size_t k = 0; k < options.lost_cards; ++k) {
        const std::uint32_t lost = plan.residents[(first + k) % plan.residents.size()];
        std::vector<Event*> own;
        for (auto& e : plan.events)
            if (e.card == lost) own.push_back(&e);
        Event report;
        report.card = lost;
        report.terminal = plan.counters.front();
        report.kind = EventKind::card_replaced;
        report.new_card = plan.stock[k];
        report.at = 12 * 3600;
        bool trip_open = false;
        for (const Event* e : own) {  // in the card's order (sequence)
            if (e->kind == EventKind::bus_tap && island.terminals[e->terminal].distance_fares) trip_open = !trip_open;
            if (trip_open) continue;
            report.at = std::max<Seconds>(report.at, e->at);
            report.sequence = e->sequence + 1;
            if (e->at >= 12 * 3600) break;
        }
        for (Event* e : own)
            if (e->sequence >= report.sequence) e->card = report.new_card;
        plan.events.push_back(report);
    }
}

// Same-day refunds: every clinic visit gets a refund event at the same clinic 15–105 minutes later (if the day
// is still open then), `chosen` for one in options.clinic_refund_every visits (by the seed and the visit); the
// day refunds the chosen ones and every N-th one the purse helped pay (run_day). A card reported lost during
// the day is not refunded (it is on the hotlist).
void plan_clinic_refunds(Plan& plan, const DayOptions& options, Seconds end) {
    if (options.clinic_refund_every == 0) return;
    std::vector<std::uint32_t> replaced;
    for (const Event& e : plan.events)
        if (e.kind == EventKind::card_replaced) replaced.push_back(e.card);
    std::vector<Event> refunds;
    for (const Event& visit : plan.events) {
        if (visit.kind != EventKind::clinic || std::find(replaced.begin(), replaced.end(), visit.card) != replaced.end()) continue;
        Random random(mix(mix(options.seed, 0xC11C2EF), (std::uint64_t{visit.card} << 32) | visit.sequence));
        const bool chosen = random.below(options.clinic_refund_every) == 0;
        const Seconds at = visit.at + 900 + static_cast<Seconds>(random.below(5400));
        if (at >= end) continue;
        Event refund = visit;
        refund.kind = EventKind::clinic_refund;
        refund.at = at;
        refund.chosen = chosen;
        refunds.push_back(refund);
    }
    plan.events.insert(plan.events.end(), refunds.begin(), refunds.end());
}

Plan plan_day(const Island& island, const DayOptions& options) {
    Plan plan;
    for (std::uint32_t t = 0; t < island.terminals.size(); ++t) {
        const auto& kind = island.terminals[t].kind;
        (kind == "bus" ? plan.buses : kind == "shop" ? plan.shops : kind == "counter" ? plan.counters : plan.clinics).push_back(t);
    }
    if (plan.buses.empty() || plan.shops.empty()) fail(exit_codes::usage, "the island needs at least one bus and one shop");
    const Seconds end = day_start_s + static_cast<Seconds>(options.hours * 3600);
    for (std::uint32_t c = 0; c < island.cards.size() && plan.residents.size() < options.cards; ++c)
        if (!island.cards[c].tourist && !island.cards[c].stock) plan.residents.push_back(c);
    if (plan.residents.empty()) fail(exit_codes::usage, "the island holds no resident cards");
    const std::size_t cards = plan.residents.size();
    const double per_card = options.transactions > 0 ? static_cast<double>(options.transactions) / static_cast<double>(cards)
                                                     : static_cast<double>(default_transactions_per_card);
    for (const std::uint32_t c : plan.residents) {
        Random random(mix(options.seed, c));
        // Each card's day: ±50 % around the mean; 70 % bus trips (morning and evening peaks, the rest spread
        // out), 27 % shops, 3 % clinic visits. A trip on a distance line is two taps (in, out).
        const auto count = static_cast<std::size_t>(per_card * (0.5 + random.unit()) + 0.5);
        std::vector<Event> day;
        for (std::size_t made = 0; made < count; ++made) {
            const double what = random.unit();
            Event e;
            e.card = c;
            if (what < 0.70) {
                const double shape = random.unit();
                const double t = shape < 0.4   ? random.bell(8 * 3600, 2400)
                                 : shape < 0.8 ? random.bell(18 * 3600, 2700)
                                               : day_start_s + random.unit() * (end - day_start_s);
                e.kind = EventKind::bus_tap;
                e.terminal = plan.buses[random.below(plan.buses.size())];
                e.at = clamp_time(t, end);
                e.station = static_cast<std::uint16_t>(1 + random.below(stations_per_line));
                if (island.terminals[e.terminal].distance_fares) ++made;  // the tap out comes with it
            } else if (what < 0.97 || plan.clinics.empty()) {
                e.kind = EventKind::shop;
                e.terminal = plan.shops[random.below(plan.shops.size())];
                e.at = clamp_time(8 * 3600 + random.unit() * 13.5 * 3600, end);
                const double size = random.unit();
                e.amount_fen = static_cast<std::uint32_t>(300 + size * size * 3000) / 10 * 10;
            } else {
                e.kind = EventKind::clinic;
                e.terminal = plan.clinics[random.below(plan.clinics.size())];
                e.at = clamp_time(8 * 3600 + random.unit() * 9 * 3600, end);
                e.amount_fen = static_cast<std::uint32_t>(1500 + random.below(6000)) / 10 * 10;
            }
            day.push_back(e);
        }
        append_card_day(plan, island, std::move(day), random, end);
    }
    plan_tourists(plan, island, options, end);
    plan_lost_cards(plan, island, options);
    plan_clinic_refunds(plan, options, end);
    std::sort(plan.events.begin(), plan.events.end(),
              [](const Event& a, const Event& b) { return std::tie(a.at, a.card, a.sequence) < std::tie(b.at, b.card, b.sequence); });
    return plan;
}

// ---- terminals ------------------------------------------------------------------------------------

std::chrono::system_clock::time_point local_time(const std::string& date, Seconds at) {
    std::tm tm{};
    tm.tm_year = std::stoi(date.substr(0, 4)) - 1900;
    tm.tm_mon = std::stoi(date.substr(4, 2)) - 1;
    tm.tm_mday = std::stoi(date.substr(6, 2));
    return coconut::hainan_time_point(tm) + std::chrono::seconds(at);
}

struct SimTerminal {
    const TerminalEntry* entry = nullptr;
    std::unique_ptr<cos::VirtualCard> psam;
    std::unique_ptr<sdk::InProcessReader> card_reader;
    cos::VirtualCard* card_reader_card = nullptr;  // the card being served (re-presented after an online failure)
    std::unique_ptr<sdk::InProcessReader> psam_reader;
    std::unique_ptr<sdk::TransactionQueue> queue;
    sdk::Hotlist hotlist;
    std::unique_ptr<sdk::Terminal> terminal;
    // The terminal's one link to the clearing (online flows and uploads), made when needed and dropped
    // after a link error. One per terminal: the batch state (STAN counter, in the queue's log) has one owner.
    std::unique_ptr<sdk::ClearingClient> link;
    TlsIdentity tls;  // its certificate for the clearing (IMAGES/tls/<terminal id>)
    // The TLS context (and session cache) every link of this terminal uses: a new link resumes.
    std::shared_ptr<coconut::tls::ClientContext> tls_context;
    std::shared_ptr<sdk::ClearingEndpointMemory> endpoint_memory = std::make_shared<sdk::ClearingEndpointMemory>();
    std::uint64_t failovers = 0;  // moves of this terminal's links to another clearing node
    std::uint32_t uploads = 0;
    std::uint32_t upload_phase = 0;                                      // which upload slot of the cycle this terminal uses
    std::function<sdk::LinkFault(const iso8583::Message&)> link_faults;  // lost network messages (unset: none)
};

template <class T, class E>
T must(Result<T, E> result, const std::string& what) {
    if (!result) {
        if constexpr (std::is_same_v<E, std::string>) fail(exit_codes::io_error, what + ": " + result.error());
        else fail(exit_codes::io_error, what + ": " + result.error().message);
    }
    return std::move(result).value();
}

sdk::TransitConfig transit_for(const TerminalEntry& t) {
    sdk::TransitConfig config;
    sdk::LineFare fare;
    fare.line = t.line;
    fare.distance_based = t.distance_fares;
    fare.flat_fare_fen = bus_flat_fare_fen;
    fare.fare_by_stops = distance_fares_fen;
    fare.operator_id = static_cast<std::uint32_t>(t.participant_id);
    config.lines[t.line] = fare;
    return config;
}

std::vector<SimTerminal> open_terminals(const Island& island, Seconds* clock_source, const std::string& date) {
    std::vector<SimTerminal> terminals(island.terminals.size());
    for (std::size_t i = 0; i < island.terminals.size(); ++i) {
        const TerminalEntry& entry = island.terminals[i];
        SimTerminal& t = terminals[i];
        t.entry = &entry;
        t.psam = must(cos::VirtualCard::open(entry.psam_image), "PSAM " + entry.terminal_id);
        t.card_reader = std::make_unique<sdk::InProcessReader>(entry.terminal_id + " card", nullptr);
        t.psam_reader = std::make_unique<sdk::InProcessReader>(entry.terminal_id + " psam", t.psam.get());
        t.queue = must(sdk::TransactionQueue::open(entry.queue), "queue of " + entry.terminal_id);
        t.hotlist = must(sdk::Hotlist::load(entry.queue.string() + ".hotlist"), "hotlist of " + entry.terminal_id);
        t.terminal = std::make_unique<sdk::Terminal>(*t.card_reader, *t.psam_reader, *t.queue, t.hotlist,
                                                     entry.kind == "bus" ? transit_for(entry) : sdk::TransitConfig{});
        t.terminal->set_clock([clock_source, date] { return local_time(date, *clock_source); });
        t.upload_phase = static_cast<std::uint32_t>(i);
        t.tls = terminal_identity(island, entry.terminal_id);
    }
    return terminals;
}

// ---- the transaction log ------------------------------------------------------------------------------

class TransactionLog {
public:
    explicit TransactionLog(const fs::path& path) : out_(path, std::ios::trunc) {
        if (!out_) fail(exit_codes::io_error, "cannot write " + path.string());
    }
    void write(const std::string& kind, const SimTerminal& t, const sdk::TransactionRecord& r) {
        const std::string line =
            fmt::format("{} {} {} {} {:02X} {} {} {} {} {} {} {} {} {}\n", sdk::format_date_time(r.when).substr(11), kind,
                        t.entry->terminal_id, r.asn_digits(), r.type, r.atc, r.amount_fen, r.balance_before_fen, r.balance_after_fen,
                        r.terminal_serial, r.line, r.station, r.entry_station, r.recovered ? "recovered" : "-");
        out_ << line;
        sha_.update(line);
    }
    // The medical part of a clinic visit: an account transaction, no card record.
    void write_medical(const SimTerminal& t, const std::string& asn, std::uint32_t amount_fen) {
        const std::string line = fmt::format("clinic-medical {} {} {}\n", t.entry->terminal_id, asn, amount_fen);
        out_ << line;
        sha_.update(line);
    }
    // A desk event that moves no money on a card (a tourist card's sale: its deposit).
    void write_desk(const std::string& kind, const SimTerminal& t, const std::string& asn, std::uint32_t amount_fen) {
        const std::string line = fmt::format("{} {} {} {}\n", kind, t.entry->terminal_id, asn, amount_fen);
        out_ << line;
        sha_.update(line);
    }
    std::string finish() {
        out_.flush();
        if (!out_) fail(exit_codes::io_error, "the transaction log could not be written");
        return to_hex(sha_.finish());
    }

private:
    std::ofstream out_;
    Sha256 sha_;
};

std::string kind_name(const sdk::TransactionRecord& r, const std::string& terminal_kind) {
    if (r.type == crypto::type_ep_load) return "top-up";
    if (terminal_kind == "shop") return "shop";
    if (terminal_kind == "clinic") return "clinic purse";
    switch (r.tap_kind) {
        case sdk::TapKind::flat: return "bus flat";
        case sdk::TapKind::entry: return "bus entry";
        case sdk::TapKind::exit: return "bus exit";
        case sdk::TapKind::unfinished: return "bus unfinished";
        case sdk::TapKind::none: break;
    }
    return "bus";
}

// ---- one tap ---------------------------------------------------------------------------------------

bool is_debit(ByteView command) { return command.size() >= 2 && command[0] == 0x80 && command[1] == 0x54; }

struct TapResult {
    std::optional<sdk::TransactionRecord> record;
    bool declined = false;
    bool repeat = false;
    std::uint32_t medical_fen = 0;                               // clinic: paid from the medical account
    std::optional<sdk::ClinicRefundReference> refund_reference;  // clinic, paid online: what its receipt keeps
};

sdk::ClearingClient* link_of(SimTerminal& t, const Endpoints& clearing);

// Drops the terminal's link (it reconnects for its next exchange), keeping its count of failovers.
void drop_link(SimTerminal& t) {
    if (t.link) t.failovers += t.link->link_stats().failovers;
    t.link.reset();
}

// A clinic visit: the medical account online first, the purse for the rest (Terminal::clinic_payment).
// Without a link to the clearing the clinic cannot reach the medical account and takes the purse.
std::optional<TapResult> clinic_visit(SimTerminal& t, const Event& e, const Endpoints& clearing) {
    sdk::ClearingClient* link = link_of(t, clearing);
    if (!link) return std::nullopt;
    auto paid = t.terminal->clinic_payment(e.amount_fen, card_pin, *link);
    TapResult out;
    if (paid) {
        out.medical_fen = paid->medical_fen;
        out.record = paid->purse_record;
        out.refund_reference = paid->refund_reference;
        return out;
    }
    if (paid.error().code == sdk::FlowErrorCode::insufficient_balance) {
        out.declined = true;
        return out;
    }
    drop_link(t);
    if (paid.error().code == sdk::FlowErrorCode::no_answer || paid.error().code == sdk::FlowErrorCode::declined) return std::nullopt;
    fail(exit_codes::check_failed, fmt::format("clinic payment at {}: {}", t.entry->terminal_id, paid.error().message));
}

TapResult run_flow(SimTerminal& t, const Event& e, const Endpoints& clearing, sdk::Terminal* over = nullptr) {
    sdk::Terminal& terminal = over ? *over : *t.terminal;
    TapResult out;
    if (e.kind == EventKind::clinic) {
        if (auto visit = clinic_visit(t, e, clearing)) return *visit;
        t.card_reader->insert(t.card_reader_card);
    }
    if (e.kind == EventKind::bus_tap) {
        auto tap = terminal.transit_tap({t.entry->line, e.station, static_cast<std::uint32_t>(e.terminal + 1)});
        if (tap) {
            if (tap->result == sdk::TapResult::repeat_no_charge) out.repeat = true;
            out.record = tap->record;
            return out;
        }
        if (tap.error().code == sdk::FlowErrorCode::insufficient_balance) {
            out.declined = true;
            return out;
        }
        if (tap.error().code == sdk::FlowErrorCode::card_removed) throw tap.error();
        fail(exit_codes::check_failed, fmt::format("tap at {}: {}", t.entry->terminal_id, tap.error().message));
    }
    auto paid = terminal.purchase(e.amount_fen);
    if (paid) {
        out.record = *paid;
        return out;
    }
    if (paid.error().code == sdk::FlowErrorCode::insufficient_balance) {
        out.declined = true;
        return out;
    }
    if (paid.error().code == sdk::FlowErrorCode::card_removed) throw paid.error();
    fail(exit_codes::check_failed, fmt::format("purchase at {}: {}", t.entry->terminal_id, paid.error().message));
}

// One tap or purchase through the real PC/SC stack: pcscd + `coconut-vcard serve` with this card's and this
// terminal's PSAM images, PcscReader on both virtual readers, a Terminal over the same queue and hotlist.
// The in-process copies are closed first and reopened after (an image has one writer at a time).
TapResult run_over_pcsc(SimTerminal& t, std::unique_ptr<cos::VirtualCard>& card, const CardEntry& card_entry, const Event& e,
                        const fs::path& work, const sdk::Clock& clock) {
    t.card_reader->insert(nullptr);
    t.psam_reader->insert(nullptr);
    card.reset();
    t.psam.reset();
    TapResult result;
    {
        pcsc_env::VcardStack stack;
        try {
            stack.start_pcscd(work);
            stack.start_serve(require_tool("coconut-vcard"), work, card_entry.image, t.entry->psam_image);
            auto card_reader = pcsc_env::open_reader_with_card(pcsc_env::card_reader);
            auto psam_reader = pcsc_env::open_reader_with_card(pcsc_env::psam_reader);
            sdk::Terminal terminal(*card_reader, *psam_reader, *t.queue, t.hotlist,
                                   t.entry->kind == "bus" ? transit_for(*t.entry) : sdk::TransitConfig{});
            terminal.set_clock(clock);
            result = run_flow(t, e, {}, &terminal);
        } catch (const std::runtime_error& error) {
            if (dynamic_cast<const CommandFailed*>(&error)) throw;
            fail(exit_codes::tool_failed, fmt::format("PC/SC stack ({}): {}", work.string(), error.what()));
        }
        const auto codes = stack.stop();
        if (codes.serve != 0)
            fail(exit_codes::tool_failed, fmt::format("coconut-vcard serve exited {} (see {})", codes.serve, work.string()));
    }
    card = must(cos::VirtualCard::open(card_entry.image), "card " + card_entry.asn);
    t.psam = must(cos::VirtualCard::open(t.entry->psam_image), "PSAM " + t.entry->terminal_id);
    t.psam_reader->insert(t.psam.get());
    return result;
}

// An online load at a shop's counter (Terminal::load): 0200/0210 with the HSM's MAC2, CREDIT FOR LOAD,
// the 0220 confirmation (queued until acknowledged when its answer is lost). nullopt: not loaded.
std::optional<sdk::TransactionRecord> top_up(SimTerminal& shop, cos::VirtualCard* card, const Endpoints& clearing) {
    const std::uint32_t balance = card->snapshot().balance_fen;
    const std::uint32_t amount = std::min(top_up_fen, purse_max_fen - balance) / 100 * 100;
    sdk::ClearingClient* link = link_of(shop, clearing);
    if (!link || amount == 0) return std::nullopt;
    shop.card_reader->insert(card);
    auto loaded = shop.terminal->load(amount, *link);
    shop.card_reader->insert(nullptr);
    if (loaded) return loaded->record;
    drop_link(shop);
    const auto code = loaded.error().code;
    if (code == sdk::FlowErrorCode::no_answer || code == sdk::FlowErrorCode::declined) return std::nullopt;
    fail(exit_codes::check_failed, fmt::format("load at {}: {}", shop.entry->terminal_id, loaded.error().message));
}

// ---- the airport counter ------------------------------------------------------------------------------

// A return taken on the card during the day, booked at the clearing once every queue is uploaded (the
// return route wants the card's cleared balance at 0: every earlier offline purchase of it booked).
struct PendingReturn {
    std::string asn;
    std::string terminal_id;
    std::uint32_t terminal_serial = 0;
};

struct CounterDay {
    const ServiceDesk& desk;
    std::optional<sdk::MaintenanceMacProvider> mac;  // connected at the first return
    std::vector<PendingReturn> returns;
    std::vector<std::pair<std::string, std::string>> replaced;  // (lost ASN, new ASN)
};

// A resident at the counter: the holder registered as on the ID document, the card reported lost and
// replaced by one from the counter's stock (the clearing moves the medical balance at once, the purse
// balance after the waiting period).
void replace_at_counter(CounterDay& counter, const SimTerminal& t, const CardEntry& lost, const CardEntry& replacement,
                        TransactionLog& log) {
    replace_lost_card(counter.desk, lost.asn, replacement.asn, Holder{holder_ssn(lost.asn), lost.holder, "1990-01-01"});
    log.write_desk("card-replaced", t, lost.asn + ' ' + replacement.asn, 0);
    counter.replaced.emplace_back(lost.asn, replacement.asn);
}

// The sale of a tourist card: the seller takes the deposit in cash, the clearing books it (17).
void sell_at_counter(CounterDay& counter, const SimTerminal& t, const CardEntry& card, std::uint32_t deposit_fen, TransactionLog& log,
                     TouristReport& report) {
    sell_tourist_card(counter.desk, card.asn, t.entry->participant_id, deposit_fen);
    log.write_desk("tourist-sale", t, card.asn, deposit_fen);
    ++report.sold;
    report.deposits_taken_fen += deposit_fen;
}

// The card side of a return: the whole balance taken by the counter's PSAM (TAC-proven, queued for 0320),
// then APPLICATION BLOCK with the HSM's MAC. nullopt: the card holds nothing a debit could prove (the
// visitor keeps it; its deposit stays claimable).
std::optional<sdk::TransactionRecord> take_back_at_counter(CounterDay& counter, SimTerminal& t, cos::VirtualCard* card) {
    if (card->snapshot().balance_fen == 0) return std::nullopt;
    if (!counter.mac) counter.mac = counter_mac_provider(counter.desk);
    t.card_reader->insert(card);
    auto returned = t.terminal->return_card(*counter.mac);
    t.card_reader->insert(nullptr);
    if (!returned) fail(exit_codes::check_failed, fmt::format("card return at {}: {}", t.entry->terminal_id, returned.error().message));
    if (!returned->debit || returned->was_blocked)
        fail(exit_codes::check_failed, fmt::format("card return at {}: no whole-balance debit was made", t.entry->terminal_id));
    counter.returns.push_back({returned->debit->asn_digits(), t.entry->terminal_id, returned->debit->terminal_serial});
    return returned->debit;
}

// After the day's uploads: each return booked (cash payout), then the dormancy report's tourist cards.
void close_counter_day(CounterDay& counter, TouristReport& report) {
    for (const PendingReturn& r : counter.returns) {
        const BookedReturn booked = book_card_return(counter.desk, r.asn, r.terminal_id, r.terminal_serial);
        ++report.returned;
        report.returned_balance_fen += static_cast<std::uint64_t>(booked.balance_fen);
        report.deposits_returned_fen += static_cast<std::uint64_t>(booked.deposit_fen);
        report.return_fees_fen += static_cast<std::uint64_t>(booked.fee_fen);
        report.paid_cash_fen += static_cast<std::uint64_t>(booked.paid_cash_fen);
    }
    report.kept = report.sold - report.returned;
    for (const DormantTouristCard& card : dormant_tourist_cards(counter.desk)) {
        report.dormant.push_back({card.card_number, card.balance_fen, card.deposit_fen});
        report.dormant_balance_fen += card.balance_fen;
        report.dormant_deposit_fen += card.deposit_fen;
    }
}

// ---- uploads ---------------------------------------------------------------------------------------

struct UploadTotals {
    std::mutex mutex;
    std::size_t failures = 0, uploaded = 0, approved = 0, suspense = 0, duplicates = 0;
};

// The terminal's clearing link, connected and signed on; nullptr when the clearing cannot be reached.
sdk::ClearingClient* link_of(SimTerminal& t, const Endpoints& clearing) {
    if (t.link) return t.link.get();
    sdk::ClearingOptions options;
    options.terminal_id = t.entry->terminal_id;
    options.response_timeout = upload_response_timeout;
    options.batch_log = t.queue.get();
    options.link_faults = t.link_faults;
    options.tls = sdk::ClearingTls{t.tls.ca(), t.tls.certificate(), t.tls.private_key(), t.tls_context};
    if (!t.tls_context) {
        auto context = sdk::make_tls_context(*options.tls);
        if (!context) fail(exit_codes::bad_input, fmt::format("terminal {}: {}", t.entry->terminal_id, context.error().message));
        t.tls_context = options.tls->context = *context;
    }
    if (clearing.size() > 1) {  // the nodes of a cluster: wait through a failover, start where served last
        options.failover_window = cluster_failover_window;
        options.endpoint_memory = t.endpoint_memory;
    }
    auto client = sdk::ClearingClient::connect(clearing, options);
    if (!client) return nullptr;
    if (!(*client)->sign_on()) {
        t.failovers += (*client)->link_stats().failovers;
        return nullptr;
    }
    t.link = std::move(client).value();
    return t.link.get();
}

void count_upload(UploadTotals& totals, const sdk::UploadReport& report, bool failed) {
    std::lock_guard lock(totals.mutex);
    if (failed) ++totals.failures;
    totals.uploaded += report.acknowledged;
    totals.approved += report.approved;
    totals.suspense += report.suspense;
    totals.duplicates += report.duplicates;
}

void upload_one(SimTerminal& t, const Endpoints& clearing, UploadTotals& totals) {
    if (t.queue->size() == 0) return;
    sdk::ClearingClient* link = link_of(t, clearing);
    if (!link) {
        std::lock_guard lock(totals.mutex);
        ++totals.failures;
        return;
    }
    auto uploaded = link->upload(*t.queue);
    count_upload(totals, uploaded ? *uploaded : link->last_report(), !uploaded);
    if (!uploaded) drop_link(t);  // reconnect next time
}

// Uploads the given terminals with `threads` at once (each terminal's queue is touched by one thread).
void upload_terminals(std::vector<SimTerminal*> due, const Endpoints& clearing, std::size_t threads, UploadTotals& totals) {
    std::atomic<std::size_t> next{0};
    std::vector<std::thread> pool;
    for (std::size_t i = 0; i < std::min(threads, due.size()); ++i)
        pool.emplace_back([&] {
            for (std::size_t k = next++; k < due.size(); k = next++) upload_one(*due[k], clearing, totals);
        });
    for (auto& th : pool) th.join();
}

// Strikes the clearing (ClearingUnderTest::strike) every `interval_s` while alive, and once more whenever
// trigger() is called (the middle of the day), on a thread of its own: the day goes on meanwhile.
class ClearingKiller {
public:
    ClearingKiller(std::function<void()> strike, double interval_s) : strike_(std::move(strike)) {
        if (!strike_) return;
        thread_ = std::thread([this, interval_s] {
            std::unique_lock lock(wait_mutex_);
            while (!stop_) {
                const auto woken = [this] { return stop_ || triggered_; };
                if (interval_s > 0) wake_.wait_for(lock, std::chrono::duration<double>(interval_s), woken);
                else wake_.wait(lock, woken);
                if (stop_) break;
                triggered_ = false;
                lock.unlock();
                try {
                    strike_();
                    ++kills_;
                } catch (const std::exception& e) {  // CommandFailed, or the spawn itself failing
                    error_ = e.what();
                    return;
                }
                lock.lock();
            }
        });
    }
    ~ClearingKiller() {
        try {
            stop();
        } catch (const std::exception&) {  // reported by the explicit stop() of run_day
        }
    }
    void trigger() {
        {
            std::lock_guard lock(wait_mutex_);
            triggered_ = true;
        }
        wake_.notify_all();
    }
    void stop() {
        {
            std::lock_guard lock(wait_mutex_);
            stop_ = true;
        }
        wake_.notify_all();
        if (thread_.joinable()) thread_.join();
        if (!error_.empty()) fail(exit_codes::tool_failed, "striking the clearing: " + error_);
    }
    std::size_t kills() const { return kills_; }

private:
    std::function<void()> strike_;
    std::mutex wait_mutex_;
    std::condition_variable wake_;
    bool stop_ = false;
    bool triggered_ = false;
    std::atomic<std::size_t> kills_{0};
    std::string error_;
    std::thread thread_;
};

}  // namespace

// ---- same-day clinic refunds ----------------------------------------------------------------------------

// A visit's refund at its clinic's counter (Terminal::clinic_refund): the card in the clinic terminal's
// reader again for the purse part's online credit, or that part in cash; a card that cannot take the credit
// (card_full) gets it in cash. nullopt: nothing refunded (refused or unanswered, counted in `report`).
std::optional<sdk::ClinicRefundOutcome> refund_visit(SimTerminal& t, cos::VirtualCard* card, const sdk::ClinicRefundReference& reference,
                                                     bool purse_in_cash, const Endpoints& clearing, ClinicRefundReport& report,
                                                     UploadTotals& uploads) {
    sdk::ClearingClient* link = link_of(t, clearing);
    if (!link) {
        ++report.unanswered;
        return std::nullopt;
    }
    sdk::ClinicRefundRequest request{reference, purse_in_cash ? sdk::PurseRefund::cash : sdk::PurseRefund::card};
    t.card_reader->insert(card);
    const auto refund = [&] {  // the terminal uploads its queue first: counted with the day's uploads
        const bool uploads_first = t.queue->size() > 0;
        auto refunded = t.terminal->clinic_refund(request, *link);
        if (uploads_first) count_upload(uploads, link->last_report(), false);
        return refunded;
    };
    auto refunded = refund();
    if (!refunded && refunded.error().code == sdk::FlowErrorCode::card_full) {
        ++report.to_cash;
        request.purse = sdk::PurseRefund::cash;
        refunded = refund();
    }
    t.card_reader->insert(nullptr);
    if (refunded) return std::move(refunded).value();
    drop_link(t);
    switch (refunded.error().code) {
        case sdk::FlowErrorCode::declined:
        case sdk::FlowErrorCode::blocked_card: ++report.refused; return std::nullopt;
        case sdk::FlowErrorCode::no_answer: ++report.unanswered; return std::nullopt;
        default: break;
    }
    fail(exit_codes::check_failed, fmt::format("clinic refund at {}: {}", t.entry->terminal_id, refunded.error().message));
}

// What a refund did, into the report and the transaction log (the credit as a card transaction, the medical
// and cash parts as lines of their own).
void record_refund(const SimTerminal& t, const std::string& asn, const sdk::ClinicRefundOutcome& refund, TransactionLog& log,
                   ClinicRefundReport& report) {
    if (refund.credit) log.write("clinic refund", t, refund.credit->record);
    if (refund.purse == sdk::PurseRefund::card) report.purse_to_card_fen += refund.purse_fen;
    else report.purse_cash_fen += refund.purse_fen;
    if (refund.purse == sdk::PurseRefund::cash && refund.purse_fen > 0) log.write_desk("clinic-refund-cash", t, asn, refund.purse_fen);
    if (refund.medical_fen > 0) log.write_desk("clinic-refund-medical", t, asn, refund.medical_fen);
    report.medical_fen += refund.medical_fen;
    report.cash_fen += refund.cash_fen - (refund.purse == sdk::PurseRefund::cash ? refund.purse_fen : 0);
    if (refund.incomplete) ++report.incomplete;
    else ++report.refunded;
}

// ---- participants and terminals ----------------------------------------------------------------------

void plan_participants_and_terminals(const WorldPaths& world, Island& island, const std::string& hsm_endpoint, const DayOptions& options) {
    static const char* const operators[] = {"Haikou Public Transit", "Sanya Bus Group", "Danzhou City Bus"};
    const std::size_t bus_operators = std::min(bus_operators_max, std::max<std::size_t>(1, options.buses));
    for (std::size_t i = 0; i < bus_operators; ++i)
        island.participants.push_back({1001 + i, operators[i], "bus", fmt::format("62220201{:08}", 1001 + i), 30});
    for (std::size_t i = 0; i < options.clinics; ++i)
        island.participants.push_back({3001 + i, fmt::format("Clinic {:02}", i + 1), "clinic", fmt::format("62220203{:08}", 3001 + i), 0});
    for (std::size_t i = 0; i < options.shops; ++i)
        island.participants.push_back({5001 + i, fmt::format("Shop {:03}", i + 1), "shop", fmt::format("62220205{:08}", 5001 + i), 60});
    auto add = [&](const std::string& prefix, const std::string& kind, std::size_t n, std::uint64_t participant, std::uint16_t line,
                   bool distance) {
        TerminalEntry t;
        t.terminal_id = fmt::format("{}{:05}", prefix, n);
        t.psam_terminal_id = fmt::format("4601{}{:07}", kind == "bus" ? 1 : kind == "clinic" ? 3 : kind == "counter" ? 7 : 5, n);
        t.participant_id = participant;
        t.kind = kind;
        t.line = line;
        t.distance_fares = distance;
        t.psam_image = island.images_dir / "psams" / (t.terminal_id + ".img");
        t.queue = island.images_dir / "queues" / (t.terminal_id + ".queue");
        issue_psam(world, hsm_endpoint, t.psam_terminal_id, t.psam_image);
        island.terminals.push_back(t);
    };
    std::error_code ec;
    fs::create_directories(island.images_dir / "queues", ec);
    // Every third line charges by distance (tap in, tap out); the others a flat fare.
    for (std::size_t i = 0; i < options.buses; ++i)
        add("BUS", "bus", i + 1, 1001 + i % bus_operators, static_cast<std::uint16_t>(i + 1), i % 3 == 2);
    for (std::size_t i = 0; i < options.clinics; ++i) add("CLN", "clinic", i + 1, 3001 + i, 0, false);
    for (std::size_t i = 0; i < options.shops; ++i) add("SHP", "shop", i + 1, 5001 + i, 0, false);
    // The airport's service desk (kind counter): sells tourist cards and takes cards back.
    if (options.tourists > 0 || options.lost_cards > 0) {
        island.participants.push_back({airport_counter_id, "Meilan Airport Service Desk", "counter", "6222020700007001", 0});
        add("DSK", "counter", 1, airport_counter_id, 0, false);
    }
}

// ---- lost network messages -------------------------------------------------------------------------

// Each request a terminal writes is lost with probability drop_rate, its request or its answer (half and
// half; sdk::LinkFault: the connection dies with it). The fate is a function of the seed and the request's
// identity — terminal, MTI and STAN, and every attempt takes a new STAN — so the same seed loses the same
// messages on every run, whatever the upload threads' timing: the day stays deterministic with faults.
std::function<sdk::LinkFault(const iso8583::Message&)> lose_messages(const DayOptions& options, const std::string& terminal_id,
                                                                     std::atomic<std::size_t>& lost) {
    return [seed = options.seed, rate = options.drop_rate, terminal_id, &lost](const iso8583::Message& request) {
        const std::string identity = terminal_id + ' ' + request.mti() + ' ' + std::string(request.get(11).value_or(""));
        Random fate(mix(mix(seed, 0x1057), fnv1a(identity)));
        if (!fate.chance(rate)) return sdk::LinkFault::none;
        ++lost;
        return fate.chance(0.5) ? sdk::LinkFault::lose_request : sdk::LinkFault::lose_answer;
    };
}

// ---- the day ---------------------------------------------------------------------------------------

DayReport run_day(const WorldPaths& world, const Island& island, Daemon& clearing, const DayOptions& options,
                  const std::function<void(double, const std::string&)>& progress, std::optional<ServiceDesk> desk) {
    std::mutex daemon_mutex;
    ClearingUnderTest under_test;
    under_test.endpoints = {{"127.0.0.1", clearing.port()}};
    if (options.kill_clearing_every_s > 0)
        under_test.strike = [&] {
            std::lock_guard lock(daemon_mutex);
            clearing.kill_now();
            clearing.restart();  // on the same port
        };
    under_test.strike_every_s = options.kill_clearing_every_s;
    under_test.after_day = [&] {
        std::lock_guard lock(daemon_mutex);
        if (!clearing.running()) clearing.restart();
    };
    under_test.desk = std::move(desk);
    return run_day(world, island, under_test, options, progress);
}

DayReport run_day(const WorldPaths& world, const Island& island, const ClearingUnderTest& clearing, const DayOptions& options,
                  const std::function<void(double, const std::string&)>& progress) {
    const auto started = std::chrono::steady_clock::now();
    DayReport report;
    const Plan plan = plan_day(island, options);
    Seconds now = day_start_s;
    std::vector<SimTerminal> terminals = open_terminals(island, &now, options.business_date);
    std::vector<std::unique_ptr<cos::VirtualCard>> cards(island.cards.size());  // the day's cards, by island index
    for (const auto* in_day : {&plan.residents, &plan.tourists, &plan.stock})
        for (const std::uint32_t c : *in_day) cards[c] = must(cos::VirtualCard::open(island.cards[c].image), "card " + island.cards[c].asn);
    if ((!plan.tourists.empty() || !plan.stock.empty()) && !clearing.desk)
        fail(exit_codes::usage, "tourist cards and replacements go through the clearing's clerk API: this day has no service desk");
    std::optional<CounterDay> counter;
    if (clearing.desk) counter.emplace(CounterDay{*clearing.desk, std::nullopt, {}, {}});

    std::atomic<std::size_t> lost_messages{0};
    if (options.drop_rate > 0)
        for (auto& t : terminals) t.link_faults = lose_messages(options, t.entry->terminal_id, lost_messages);
    const Endpoints& links = clearing.endpoints;
    ClearingKiller killer(clearing.strike, clearing.strike_every_s);
    const std::size_t mid_day = clearing.strike_mid_day ? plan.events.size() / 2 : plan.events.size();
    UploadTotals totals;
    // The receipts of the clinic visits paid online, by (card, sequence): what a same-day refund names.
    std::map<std::pair<std::uint32_t, std::uint32_t>, sdk::ClinicRefundReference> receipts;
    std::size_t purse_visits = 0, purse_refunds = 0;  // visits with a purse part seen at their refund event, refunded

    report.transaction_log = world.dir / "transactions.log";
    TransactionLog log(report.transaction_log);
    Random faults(mix(options.seed, 0xFA017));

    // Terminals connect in slots of 30 simulated minutes; each one every upload_every_min.
    const Seconds slot_s = 1800;
    const std::uint32_t slots_per_cycle = std::max<std::uint32_t>(1, static_cast<std::uint32_t>(options.upload_every_min * 60 / slot_s));
    Seconds next_slot = day_start_s + slot_s;
    std::uint32_t slot_index = 0;
    double upload_s = 0;
    auto upload_slot = [&](bool everyone) {
        std::vector<SimTerminal*> due;
        for (auto& t : terminals)
            if (everyone || t.upload_phase % slots_per_cycle == slot_index % slots_per_cycle) due.push_back(&t);
        const auto t0 = std::chrono::steady_clock::now();
        upload_terminals(due, links, options.upload_threads, totals);
        upload_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        ++report.upload_rounds;
    };

    const std::size_t progress_every = std::max<std::size_t>(1, plan.events.size() / 200);
    // Taps sent through pcscd + vpcd, spread evenly over the day.
    const std::size_t pcsc_every = options.pcsc_taps > 0 ? std::max<std::size_t>(1, plan.events.size() / (options.pcsc_taps + 1)) : 0;
    if (options.pcsc_taps > 0) fs::create_directories(world.logs() / "pcsc");
    for (std::size_t i = 0; i < plan.events.size(); ++i) {
        if (interrupted()) fail(exit_codes::interrupted, "interrupted");
        const Event& e = plan.events[i];
        if (i == mid_day) killer.trigger();
        while (e.at >= next_slot) {
            now = next_slot;
            upload_slot(false);
            ++slot_index;
            next_slot += slot_s;
        }
        now = e.at;
        SimTerminal& t = terminals[e.terminal];
        cos::VirtualCard* card = cards[e.card].get();
        if (e.kind == EventKind::tourist_sale) {
            sell_at_counter(*counter, t, island.cards[e.card], e.amount_fen, log, report.tourists);
            continue;
        }
        if (e.kind == EventKind::card_replaced) {
            replace_at_counter(*counter, t, island.cards[e.card], island.cards[e.new_card], log);
            continue;
        }
        if (e.kind == EventKind::tourist_return) {
            if (auto debit = take_back_at_counter(*counter, t, card)) {
                log.write("counter return", t, *debit);
                ++report.by_kind["counter return"].count;
                report.by_kind["counter return"].amount_fen += debit->amount_fen;
                ++report.transactions;
            }
            continue;
        }
        if (e.kind == EventKind::clinic_refund) {
            // The chosen visits and every N-th visit the purse helped pay (the first included: the medical account
            // covers most bills); the purse parts go back alternately to the card and in cash.
            const auto receipt = receipts.find({e.card, e.sequence});
            const bool purse_part = receipt != receipts.end() && receipt->second.purchase.has_value();
            const bool purse_turn = purse_part && purse_visits++ % options.clinic_refund_every == 0;
            if (!e.chosen && !purse_turn) continue;
            ++report.clinic_refunds.planned;
            if (receipt == receipts.end()) {
                ++report.clinic_refunds.not_refundable;
                continue;
            }
            const bool purse_in_cash = purse_part && purse_refunds++ % 2 == 1;
            if (auto refund = refund_visit(t, card, receipt->second, purse_in_cash, links, report.clinic_refunds, totals))
                record_refund(t, island.cards[e.card].asn, *refund, log, report.clinic_refunds);
            continue;
        }
        if (card->snapshot().balance_fen < top_up_below_fen) {
            SimTerminal& counter = terminals[plan.shops[e.card % plan.shops.size()]];
            if (auto load = top_up(counter, card, links)) {
                log.write("top-up", counter, *load);
                auto& loads = report.by_kind["top-up"];
                ++loads.count;
                loads.amount_fen += load->amount_fen;
            } else {
                ++report.top_ups_failed;
            }
        }
        if (pcsc_every > 0 && e.kind != EventKind::clinic && report.pcsc_taps < options.pcsc_taps && i % pcsc_every == pcsc_every / 2) {
            const TapResult over = run_over_pcsc(t, cards[e.card], island.cards[e.card], e, world.logs() / "pcsc",
                                                 [&now, &options] { return local_time(options.business_date, now); });
            ++report.pcsc_taps;
            if (over.record) {
                const std::string kind = kind_name(*over.record, t.entry->kind);
                log.write(kind, t, *over.record);
                ++report.by_kind[kind].count;
                report.by_kind[kind].amount_fen += over.record->amount_fen;
                ++report.transactions;
                if (over.record->amount_fen == 0) ++report.zero_fare_entries;
            }
            if (over.declined) ++report.declined;
            if (over.repeat) ++report.repeat_taps;
            continue;
        }
        t.card_reader->insert(card);
        t.card_reader_card = card;
        // Tears on purchases and taps (the clinic's online flow has its own recovery, not simulated here).
        const bool tear = options.tear_rate > 0 && faults.chance(options.tear_rate) && e.kind != EventKind::clinic;
        const bool tear_after_card = faults.chance(0.7);
        if (tear)
            t.card_reader->set_fault_plan([tear_after_card](std::size_t, ByteView command) {
                return is_debit(command) ? (tear_after_card ? sdk::Fault::after_card : sdk::Fault::before_card) : sdk::Fault::none;
            });
        TapResult result;
        try {
            result = run_flow(t, e, links);
        } catch (const sdk::FlowError&) {
            // The card left mid-debit; the passenger taps again: recover() decides what happened.
            ++report.tears;
            t.card_reader->set_fault_plan(nullptr);
            t.card_reader->insert(card);
            auto recovered = t.terminal->recover();
            if (!recovered)
                fail(exit_codes::check_failed, fmt::format("recover at {}: {}", t.entry->terminal_id, recovered.error().message));
            if (!recovered->recorded.empty()) {
                ++report.tears_recovered;
                result.record = recovered->recorded.front();
            } else {
                ++report.tears_abandoned;
                t.card_reader->insert(card);
                result = run_flow(t, e, links);
            }
        }
        t.card_reader->set_fault_plan(nullptr);
        t.card_reader->insert(nullptr);
        if (result.declined) ++report.declined;
        if (result.repeat) ++report.repeat_taps;
        if (result.refund_reference) receipts.emplace(std::make_pair(e.card, e.sequence), *result.refund_reference);
        if (result.medical_fen > 0) {
            log.write_medical(t, island.cards[e.card].asn, result.medical_fen);
            auto& medical = report.by_kind["clinic medical"];
            ++medical.count;
            medical.amount_fen += result.medical_fen;
        }
        if (result.record) {
            const std::string kind = kind_name(*result.record, t.entry->kind);
            log.write(kind, t, *result.record);
            auto& totals_for_kind = report.by_kind[kind];
            ++totals_for_kind.count;
            totals_for_kind.amount_fen += result.record->amount_fen;
            ++report.transactions;
            if (result.record->amount_fen == 0) ++report.zero_fare_entries;
        }
        if (i % progress_every == 0 && progress)
            progress(static_cast<double>(i) / static_cast<double>(plan.events.size()),
                     fmt::format("{:02}:{:02} {} transactions", e.at / 3600, e.at / 60 % 60, report.transactions));
    }
    report.digest = log.finish();

    // End of the day: every terminal connects until its queue is empty.
    Random pauses(mix(options.seed, 0xE0D));
    const auto end_of_day = std::chrono::steady_clock::now();
    std::size_t fewest_left = std::numeric_limits<std::size_t>::max(), idle_rounds = 0;
    for (std::size_t round = 1;; ++round) {
        if (interrupted()) fail(exit_codes::interrupted, "interrupted");
        upload_slot(true);
        std::size_t left = 0;
        for (auto& t : terminals) left += t.queue->size();
        if (progress) progress(1.0, fmt::format("end of day: {} transactions still queued", left));
        if (left == 0) break;
        idle_rounds = left < fewest_left ? 0 : idle_rounds + 1;
        fewest_left = std::min(fewest_left, left);
        if (idle_rounds >= final_upload_idle_rounds_max)
            fail(exit_codes::clearing_error,
                 fmt::format("{} transactions still queued: none acknowledged in the last {} upload rounds ({} in all)", left, idle_rounds,
                             round));
        const auto spent = std::chrono::steady_clock::now() - end_of_day;
        if (spent >= final_upload_time_max)
            fail(exit_codes::clearing_error,
                 fmt::format("{} transactions still queued after {:.0f} s of uploads at the end of the day ({} rounds)", left,
                             std::chrono::duration<double>(spent).count(), round));
        std::this_thread::sleep_for(std::chrono::milliseconds(final_upload_pause_min_ms + pauses.below(final_upload_pause_spread_ms + 1)));
    }
    killer.stop();
    if (clearing.after_day) clearing.after_day();
    report.clearing_kills = killer.kills();
    if (counter) close_counter_day(*counter, report.tourists);
    if (counter)
        for (const auto& [lost, replacement] : counter->replaced) {
            const LostCardState state = lost_card_state(counter->desk, lost);
            report.replacements.push_back({lost, replacement, state.state, state.medical_carried_fen, state.pending_transfer_fen});
        }
    for (auto& t : terminals) {
        drop_link(t);
        report.link_failovers += t.failovers;
    }
    report.dropped_frames = lost_messages;
    report.upload_failures = totals.failures;
    report.uploaded = totals.uploaded;
    report.approved = totals.approved;
    report.suspense = totals.suspense;
    report.duplicates = totals.duplicates;
    report.upload_seconds = upload_s;
    report.run_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    return report;
}

}  // namespace coconut::cli
