#include <coconut/core/assert.hpp>
#include <coconut/sdk/clearing_client.hpp>
#include <coconut/sdk/terminal.hpp>

#include "flow_support.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <ctime>

namespace coconut::sdk {
namespace {

constexpr std::uint16_t sw_insufficient_balance = 0x9401;
constexpr std::uint16_t sw_mac_unavailable = 0x9406;

bool same_when(const crypto::CardDateTime& a, const crypto::CardDateTime& b) { return a.date == b.date && a.time == b.time; }

}  // namespace

namespace detail {

FlowError from_card(const CardError& e, FlowErrorCode status_code) {
    if (e.transport) {
        if (status_code == FlowErrorCode::psam_error) return FlowError{FlowErrorCode::psam_error, "PSAM: " + e.message};
        return FlowError{e.card_removed() ? FlowErrorCode::card_removed : FlowErrorCode::card_error, e.message};
    }
    if (e.sw == sw_insufficient_balance) return FlowError{FlowErrorCode::insufficient_balance, e.message, e.sw};
    return FlowError{status_code, e.message, e.sw};
}

FlowError from_queue(const QueueError& e) {
    return FlowError{e.code == QueueErrorCode::full || e.code == QueueErrorCode::too_many_intents ? FlowErrorCode::queue_full
                                                                                                  : FlowErrorCode::storage_error,
                     e.message};
}

}  // namespace detail

using detail::from_card;
using detail::from_queue;

std::string_view to_string(FlowErrorCode code) {
    switch (code) {
        case FlowErrorCode::card_removed: return "card_removed";
        case FlowErrorCode::no_card: return "no_card";
        case FlowErrorCode::card_error: return "card_error";
        case FlowErrorCode::psam_error: return "psam_error";
        case FlowErrorCode::insufficient_balance: return "insufficient_balance";
        case FlowErrorCode::blocked_card: return "blocked_card";
        case FlowErrorCode::expired_card: return "expired_card";
        case FlowErrorCode::unknown_line: return "unknown_line";
        case FlowErrorCode::queue_full: return "queue_full";
        case FlowErrorCode::storage_error: return "storage_error";
        case FlowErrorCode::declined: return "declined";
        case FlowErrorCode::no_answer: return "no_answer";
        case FlowErrorCode::wrong_pin: return "wrong_pin";
        case FlowErrorCode::hsm_error: return "hsm_error";
        case FlowErrorCode::pin_cancelled: return "pin_cancelled";
        case FlowErrorCode::card_full: return "card_full";
        case FlowErrorCode::wrong_card: return "wrong_card";
    }
    return "card_error";
}

Terminal::Terminal(Reader& card_reader, Reader& psam_reader, TransactionQueue& queue, Hotlist& hotlist, TransitConfig transit)
    : card_reader_(card_reader), psam_reader_(psam_reader), card_channel_(card_reader), psam_channel_(psam_reader), queue_(queue),
      hotlist_(hotlist), transit_(std::move(transit)) {}

void Terminal::set_trace(std::function<void(const TraceEntry&)> trace) {
    card_channel_.set_trace(trace);
    psam_channel_.set_trace(std::move(trace));
}

namespace {
Result<Ok, FlowError> connect_card(Reader& reader) {
    auto atr = reader.connect();
    if (atr) return Ok{};
    const bool absent = atr.error().code == ReaderErrorCode::no_card;
    return Unexpected{FlowError{absent ? FlowErrorCode::no_card : FlowErrorCode::card_error, atr.error().message}};
}
}  // namespace

Result<Terminal::Session, FlowError> Terminal::open_card() {
    // Every flow starts a fresh card session: a card presented again is a new tap.
    if (auto connected = connect_card(card_reader_); !connected) return Unexpected{connected.error()};
    PurseApp purse(card_channel_);
    auto info = purse.select();
    if (!info) return Unexpected{from_card(info.error())};
    return Session{*info};
}

Result<TerminalId, FlowError> Terminal::open_psam() {
    if (terminal_id_ && psam_reader_.connected()) return *terminal_id_;
    auto atr = psam_reader_.connect();
    if (!atr) return Unexpected{FlowError{FlowErrorCode::psam_error, "PSAM: " + atr.error().message}};
    PsamApp psam(psam_channel_);
    auto id = psam.select();
    if (!id) return Unexpected{from_card(id.error(), FlowErrorCode::psam_error)};
    terminal_id_ = *id;
    return *id;
}

Result<std::uint32_t, FlowError> Terminal::balance() {
    auto session = open_card();
    if (!session) return Unexpected{session.error()};
    PurseApp purse(card_channel_);
    auto b = purse.balance();
    if (!b) return Unexpected{from_card(b.error())};
    return *b;
}

Result<std::pair<PurseInfo, std::uint32_t>, FlowError> Terminal::card_balance() {
    auto session = open_card();
    if (!session) return Unexpected{session.error()};
    PurseApp purse(card_channel_);
    auto b = purse.balance();
    if (!b) return Unexpected{from_card(b.error())};
    return std::pair{session->info, *b};
}

Result<Cardholder, FlowError> Terminal::cardholder() {
    if (auto connected = connect_card(card_reader_); !connected) return Unexpected{connected.error()};
    SocialSecurityApp ss(card_channel_);
    if (auto s = ss.select(); !s) return Unexpected{from_card(s.error())};
    auto holder = ss.read_cardholder();
    if (!holder) return Unexpected{from_card(holder.error())};
    return *holder;
}

Result<RecoveryOutcome, FlowError> Terminal::recover() {
    auto session = open_card();
    if (!session) return Unexpected{session.error()};
    return recover_card(session->info);
}

Result<RecoveryOutcome, FlowError> Terminal::recover_card(const PurseInfo& info) {
    RecoveryOutcome outcome;
    PurseApp purse(card_channel_);
    for (const QueuedTransaction& intent : queue_.open_intents()) {
        if (intent.record.asn != info.asn || intent.record.issuer_id != info.issuer_id) continue;
        if (intent.record.link == LinkKind::clinic_hold) {
            // The terminal stopped between the 0100 and the completion: the hold is not completed.
            auto reversal = queue_reversal(intent, LinkKind::clinic_reversal, nullptr);
            if (!reversal) return Unexpected{reversal.error()};
            outcome.reversed.push_back(*reversal);
            continue;
        }
        if (intent.record.type == crypto::type_ep_load) {
            if (auto resolved = recover_load(intent, outcome); !resolved) return Unexpected{resolved.error()};
            continue;
        }
        TransactionRecord record = intent.record;
        record.intent_sequence = intent.sequence;
        record.recovered = true;
        auto proof = purse.transaction_prove(record.type, record.atc);
        if (proof) {
            record.tac = proof->tac;
            record.mac2 = proof->mac2;
        } else if (proof.error().sw == sw_mac_unavailable) {
            // No proof for that ATC: either the debit never ran, or a later transaction of the same type
            // replaced its proof. The card's log tells (a debit logs ATC + 1 with our amount, terminal, time).
            auto log = purse.read_log();
            if (!log) return Unexpected{from_card(log.error())};
            const bool happened = std::any_of(log->begin(), log->end(), [&](const PurseLogRecord& l) {
                return l.atc == static_cast<std::uint16_t>(record.atc + 1) && l.amount_fen == record.amount_fen && l.type == record.type &&
                       l.terminal_id == record.terminal_id && same_when(l.when, record.when);
            });
            if (!happened) {
                if (auto a = queue_.abandon_intent(intent.sequence); !a) return Unexpected{from_queue(a.error())};
                outcome.abandoned.push_back(intent.record);
                continue;
            }
            record.unproven = true;
        } else {
            return Unexpected{from_card(proof.error())};
        }
        if (auto appended = queue_.append(record); !appended) return Unexpected{from_queue(appended.error())};
        outcome.recorded.push_back(record);
    }
    return outcome;
}

Result<TransactionRecord, FlowError> Terminal::debit(const PurseInfo& info, TransactionRecord draft,
                                                     const std::vector<std::pair<std::uint8_t, Bytes>>& capp_updates) {
    if (queue_.full()) return Unexpected{FlowError{FlowErrorCode::queue_full, "transaction queue full: upload before taking payments"}};
    auto terminal_id = open_psam();
    if (!terminal_id) return Unexpected{terminal_id.error()};
    const bool capp = draft.type == crypto::type_capp_purchase;
    PurseApp purse(card_channel_);
    PsamApp psam(psam_channel_);

    auto init = purse.initialize_purchase(draft.amount_fen, *terminal_id, capp, psam.key_index());
    if (!init) return Unexpected{from_card(init.error())};
    const crypto::CardDateTime when = to_card_date_time(clock_());
    auto sam = psam.initialize_purchase(*init, draft.amount_fen, draft.type, when, info);
    if (!sam) return Unexpected{from_card(sam.error(), FlowErrorCode::psam_error)};
    for (const auto& [sfi, data] : capp_updates) {
        const std::uint8_t record_id = sfi == cos::sfi_capp_record ? data[0] : 0;
        if (auto u = purse.update_capp_cache(sfi, record_id, data); !u) return Unexpected{from_card(u.error())};
    }

    draft.asn = info.asn;
    draft.issuer_id = info.issuer_id;
    draft.atc = init->offline_atc;
    draft.balance_before_fen = init->balance_fen;
    draft.balance_after_fen = init->balance_fen - draft.amount_fen;
    draft.terminal_id = *terminal_id;
    draft.terminal_serial = sam->terminal_serial;
    draft.when = when;
    auto intent = queue_.record_intent(draft);
    if (!intent) return Unexpected{from_queue(intent.error())};

    auto debited = purse.debit(sam->terminal_serial, when, sam->mac1);
    if (!debited) {
        if (debited.error().transport) {
            return Unexpected{
                FlowError{FlowErrorCode::card_removed, "card left during DEBIT: outcome unknown until recover() sees the card again"}};
        }
        // The card answered an error status: nothing changed on it (docs/CARD-SPEC.md §2).
        if (auto a = queue_.abandon_intent(*intent); !a) return Unexpected{from_queue(a.error())};
        return Unexpected{from_card(debited.error())};
    }
    TransactionRecord record = draft;
    record.tac = debited->tac;
    record.mac2 = debited->mac2;
    record.intent_sequence = *intent;
    // The debit happened whatever the PSAM says now; a failed MAC2 check is flagged, never dropped.
    if (auto verified = psam.verify_mac2(debited->mac2); !verified) {
        record.mac2_unverified = true;
        terminal_id_.reset();  // reconnect the PSAM on the next flow
    }
    if (auto appended = queue_.append(record); !appended) return Unexpected{from_queue(appended.error())};
    return record;
}

namespace {

// The bus record a charged tap writes: where and when, what it cost, and the journey state after it.
cos::bus_record::BusRecord tap_record(const TapRequest& tap, const TapPricing& pricing, const LineFare& line, const TerminalId& terminal_id,
                                      std::chrono::system_clock::time_point now) {
    const crypto::CardDateTime when = to_card_date_time(now);
    cos::bus_record::BusRecord r;
    r.state = pricing.new_state;
    r.line = tap.line;
    r.station = tap.station;
    r.vehicle = tap.vehicle;
    std::copy(terminal_id.begin(), terminal_id.end(), r.terminal_id.begin());
    std::copy(when.date.begin(), when.date.end(), r.date_time.begin());
    std::copy(when.time.begin(), when.time.end(), r.date_time.begin() + 4);
    r.fare_fen = pricing.fare_fen;
    r.operator_id = line.operator_id;
    r.entry_line = pricing.entry_line;
    r.entry_station = pricing.entry_station;
    return r;
}

}  // namespace

Result<Ok, FlowError> detail::check_card(const PurseInfo& info, const Hotlist& hotlist, std::chrono::system_clock::time_point now) {
    if (auto reason = hotlist.blocked(info.asn))
        return Unexpected{FlowError{FlowErrorCode::blocked_card,
                                    fmt::format("card {} is blocked ({})", info.asn_digits(), to_string(*reason)), 0, reason}};
    const auto today = to_card_date_time(now).date;
    if (today > info.expiry_date)
        return Unexpected{FlowError{FlowErrorCode::expired_card, fmt::format("card expired on {}", bcd_to_digits(info.expiry_date))}};
    if (today < info.start_date)
        return Unexpected{FlowError{FlowErrorCode::expired_card, fmt::format("card valid from {}", bcd_to_digits(info.start_date))}};
    return Ok{};
}

using detail::check_card;

Result<TransactionRecord, FlowError> Terminal::purchase(std::uint32_t amount_fen) {
    auto session = open_card();
    if (!session) return Unexpected{session.error()};
    if (auto ok = check_card(session->info, hotlist_, clock_()); !ok) return Unexpected{ok.error()};
    if (auto recovered = recover_card(session->info); !recovered) return Unexpected{recovered.error()};
    TransactionRecord draft;
    draft.type = crypto::type_ep_purchase;
    draft.amount_fen = amount_fen;
    return debit(session->info, draft, {});
}

Result<TapOutcome, FlowError> Terminal::transit_tap(const TapRequest& tap) {
    if (!transit_.lines.contains(tap.line))
        return Unexpected{FlowError{FlowErrorCode::unknown_line, fmt::format("line {} has no fare table", tap.line)}};
    auto session = open_card();
    if (!session) return Unexpected{session.error()};
    const auto now = clock_();
    if (auto ok = check_card(session->info, hotlist_, now); !ok) return Unexpected{ok.error()};
    if (auto recovered = recover_card(session->info); !recovered) return Unexpected{recovered.error()};

    // The PSAM first: its terminal id goes into the bus record.
    auto terminal_id = open_psam();
    if (!terminal_id) return Unexpected{terminal_id.error()};
    PurseApp purse(card_channel_);
    auto current = purse.read_capp_record(cos::bus_record::record_id_value);
    if (!current) return Unexpected{from_card(current.error())};
    const auto last = cos::bus_record::decode(*current);
    if (!last) return Unexpected{FlowError{FlowErrorCode::card_error, fmt::format("the card's bus record is {} bytes", current->size())}};
    const auto pricing = price_tap(transit_, tap, *last, now);
    COCONUT_ASSERT(pricing.has_value(), "the line's fare table was checked above");
    if (pricing->result == TapResult::repeat_no_charge) {
        auto b = purse.balance();
        if (!b) return Unexpected{from_card(b.error())};
        return TapOutcome{TapResult::repeat_no_charge, 0, *b, std::nullopt};
    }
    const Bytes record = cos::bus_record::encode(tap_record(tap, *pricing, transit_.lines.at(tap.line), *terminal_id, now));

    TransactionRecord draft;
    draft.type = crypto::type_capp_purchase;
    draft.amount_fen = pricing->fare_fen;
    draft.tap_kind = pricing->kind;
    draft.line = tap.line;
    draft.station = tap.station;
    draft.vehicle = tap.vehicle;
    draft.entry_station = pricing->entry_station;
    // EF1A gets the new journey state; EF1E keeps the trip history (same 48-byte layout).
    auto done = debit(session->info, draft, {{cos::sfi_capp_record, record}, {cos::sfi_trip_log, record}});
    if (!done) return Unexpected{done.error()};
    return TapOutcome{pricing->result, pricing->fare_fen, done->balance_after_fen, *done};
}

}  // namespace coconut::sdk

// ---- online flows --------------------------------------------------------------------------------

namespace coconut::sdk {
namespace {

constexpr std::uint16_t sw_pin_blocked = 0x6983;
constexpr std::uint16_t sw_conditions_not_satisfied = 0x6985;  // INITIALIZE FOR LOAD: above the purse maximum

// Field 7: MMDDhhmmss, UTC, as BCD.
std::array<std::uint8_t, 5> transmission_time(std::chrono::system_clock::time_point now) {
    const std::time_t t = std::chrono::system_clock::to_time_t(now);
    std::tm tm{};
    gmtime_r(&t, &tm);
    const auto bcd = digits_to_bcd(fmt::format("{:02}{:02}{:02}{:02}{:02}", tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec));
    std::array<std::uint8_t, 5> out{};
    std::copy(bcd->begin(), bcd->end(), out.begin());
    return out;
}

bool logged(const std::vector<PurseLogRecord>& log, const TransactionRecord& r) {
    return std::any_of(log.begin(), log.end(), [&](const PurseLogRecord& l) {
        return l.atc == static_cast<std::uint16_t>(r.atc + 1) && l.amount_fen == r.amount_fen && l.type == r.type &&
               l.terminal_id == r.terminal_id && same_when(l.when, r.when);
    });
}

}  // namespace

namespace detail {

TransactionRecord online_draft(const PurseInfo& info, const TerminalId& terminal_id, std::uint32_t amount_fen, LinkKind link,
                               std::uint32_t stan, std::uint32_t batch_number, std::chrono::system_clock::time_point now) {
    TransactionRecord draft;
    draft.asn = info.asn;
    draft.issuer_id = info.issuer_id;
    draft.amount_fen = amount_fen;
    draft.terminal_id = terminal_id;
    draft.when = to_card_date_time(now);
    draft.link = link;
    draft.stan = stan;
    draft.transmitted = transmission_time(now);
    draft.batch_number = batch_number;
    return draft;
}

FlowError from_host(const ClearingError& e, bool reversed) {
    FlowError error{FlowErrorCode::no_answer, fmt::format("clearing: {} ({})", e.message, to_string(e.code))};
    error.reversed = reversed;
    return error;
}

FlowError declined(std::string_view what, const std::string& code) {
    FlowError error{FlowErrorCode::declined, fmt::format("{}: the clearing answered {}", what, code)};
    error.response_code = code;
    return error;
}

}  // namespace detail

using detail::card_cannot_take;
using detail::declined;
using detail::from_host;
using detail::online_draft;
using detail::refund_declined;

Result<TransactionRecord, FlowError> Terminal::queue_reversal(const QueuedTransaction& intent, LinkKind reversal, ClearingClient* host) {
    TransactionRecord record = intent.record;
    record.link = reversal;
    record.intent_sequence = intent.sequence;
    auto sequence = queue_.append(record);
    if (!sequence) return Unexpected{from_queue(sequence.error())};
    // Sent once now; if the link is down it stays queued and upload() repeats it (0421) until acknowledged.
    if (host) (void)host->send_advice(queue_, *sequence);
    return record;
}

Result<Ok, FlowError> Terminal::recover_load(const QueuedTransaction& intent, RecoveryOutcome& outcome) {
    PurseApp purse(card_channel_);
    TransactionRecord record = intent.record;
    record.intent_sequence = intent.sequence;
    record.recovered = true;
    auto proof = purse.transaction_prove(crypto::type_ep_load, record.atc);
    if (!proof) {
        if (proof.error().sw != sw_mac_unavailable) return Unexpected{from_card(proof.error())};
        // No proof for that online ATC: the card's log says whether CREDIT FOR LOAD ran.
        auto log = purse.read_log();
        if (!log) return Unexpected{from_card(log.error())};
        if (!logged(*log, record)) {
            auto reversal = queue_reversal(intent, LinkKind::load_reversal, nullptr);
            if (!reversal) return Unexpected{reversal.error()};
            outcome.reversed.push_back(*reversal);
            return Ok{};
        }
        record.unproven = true;
    } else {
        record.tac = proof->tac;
    }
    if (auto appended = queue_.append(record); !appended) return Unexpected{from_queue(appended.error())};
    outcome.recorded.push_back(record);
    return Ok{};
}

Result<LoadOutcome, FlowError> Terminal::load(std::uint32_t amount_fen, ClearingClient& host, LoadFunding funding) {
    if (amount_fen == 0) return Unexpected{FlowError{FlowErrorCode::card_error, "a load of 0 fen"}};
    auto session = open_card();
    if (!session) return Unexpected{session.error()};
    if (auto ok = check_card(session->info, hotlist_, clock_()); !ok) return Unexpected{ok.error()};
    if (auto recovered = recover_card(session->info); !recovered) return Unexpected{recovered.error()};
    return credit_online(session->info, amount_fen, host, funding, std::nullopt);
}

Result<LoadOutcome, FlowError> Terminal::credit_online(const PurseInfo& info, std::uint32_t amount_fen, ClearingClient& host,
                                                       LoadFunding funding, const std::optional<iso8583::PurchaseReference>& refund_of) {
    if (queue_.full()) return Unexpected{FlowError{FlowErrorCode::queue_full, "transaction queue full: upload before taking loads"}};
    auto terminal_id = open_psam();
    if (!terminal_id) return Unexpected{terminal_id.error()};
    auto stan = host.take_stan();
    if (!stan) return Unexpected{FlowError{FlowErrorCode::storage_error, stan.error().message}};

    PurseApp purse(card_channel_);
    auto init = purse.initialize_load(amount_fen, *terminal_id);
    if (!init) {
        if (refund_of && init.error().sw == sw_conditions_not_satisfied) return Unexpected{card_cannot_take(init.error(), amount_fen)};
        return Unexpected{from_card(init.error())};
    }
    TransactionRecord draft =
        online_draft(info, *terminal_id, amount_fen, LinkKind::load_confirmation, *stan, host.batch().batch_number, clock_());
    draft.type = crypto::type_ep_load;
    draft.atc = init->online_atc;
    draft.balance_before_fen = init->balance_fen;
    draft.balance_after_fen = init->balance_fen + amount_fen;
    draft.carried = funding == LoadFunding::carried;
    draft.refund = refund_of.has_value();
    auto intent_sequence = queue_.record_intent(draft);
    if (!intent_sequence) return Unexpected{from_queue(intent_sequence.error())};
    const QueuedTransaction intent{*intent_sequence, draft};

    auto approval = host.request_load(draft, init->random, init->mac1, refund_of);
    if (!approval) {
        // The 0200 may have been booked as a pending load: reverse it.
        auto reversal = queue_reversal(intent, LinkKind::load_reversal, &host);
        if (!reversal) return Unexpected{reversal.error()};
        return Unexpected{from_host(approval.error(), true)};
    }
    if (approval->response_code != "00") {
        if (auto a = queue_.abandon_intent(intent.sequence); !a) return Unexpected{from_queue(a.error())};
        if (draft.refund) return Unexpected{refund_declined("refund to the card (200000)", approval->response_code)};
        if (draft.carried && approval->response_code == "51") {
            FlowError short_holding = declined("carried balance load (280000)", approval->response_code);
            short_holding.message +=
                ": the card's carried holding holds less than the amount (nothing carried, not yet carried, or collected)";
            return Unexpected{short_holding};
        }
        return Unexpected{declined("load", approval->response_code)};
    }
    return credit_load(intent, approval->mac2, host);
}

Result<LoadOutcome, FlowError> Terminal::credit_load(const QueuedTransaction& intent, const crypto::Mac4& mac2, ClearingClient& host) {
    const auto reversed = [&](FlowError error) -> Result<LoadOutcome, FlowError> {
        auto reversal = queue_reversal(intent, LinkKind::load_reversal, &host);
        if (!reversal) return Unexpected{reversal.error()};
        error.reversed = true;
        return Unexpected{error};
    };
    // A card already gone never receives CREDIT: reverse now rather than when it comes back.
    auto present = card_reader_.wait_for_card(true, std::chrono::milliseconds(0));
    if (present && !*present)
        return reversed(FlowError{FlowErrorCode::card_removed, "card left before CREDIT FOR LOAD: the load is reversed"});
    PurseApp purse(card_channel_);
    auto credited = purse.credit_for_load(intent.record.when, mac2);
    if (!credited) {
        if (credited.error().transport) {
            return Unexpected{FlowError{FlowErrorCode::card_removed,
                                        "card left during CREDIT FOR LOAD: present it again to confirm or reverse the load"}};
        }
        // The card refused MAC2 (9302 …): nothing changed on it.
        return reversed(from_card(credited.error()));
    }
    LoadOutcome outcome;
    outcome.record = intent.record;
    outcome.record.tac = *credited;
    outcome.record.intent_sequence = intent.sequence;
    auto sequence = queue_.append(outcome.record);
    if (!sequence) return Unexpected{from_queue(sequence.error())};
    auto confirmed = host.send_advice(queue_, *sequence);
    if (confirmed) {
        outcome.confirmation_code = *confirmed;
        outcome.confirmed = *confirmed == "00";
    }
    return outcome;
}

Result<Ok, FlowError> Terminal::reverse_hold(const QueuedTransaction& intent, std::uint32_t held_fen, ClearingClient& host) {
    TransactionRecord reversal = intent.record;
    reversal.link = LinkKind::clinic_reversal;
    reversal.amount_fen = held_fen;
    auto answer = host.reverse(reversal);
    if (answer && (*answer == "00" || *answer == "25")) {
        // 00 voided; 25 the host holds nothing to void.
        if (auto a = queue_.abandon_intent(intent.sequence); !a) return Unexpected{from_queue(a.error())};
        return Ok{};
    }
    QueuedTransaction held = intent;
    held.record.amount_fen = held_fen;
    auto queued = queue_reversal(held, LinkKind::clinic_reversal, &host);
    if (!queued) return Unexpected{queued.error()};
    return Ok{};
}

Result<Terminal::MedicalProof, FlowError> Terminal::prove_medical(const PurseInfo& info, std::uint32_t amount_fen,
                                                                  const PinEntry& pin_entry, ClearingClient& host) {
    auto terminal_id = open_psam();
    if (!terminal_id) return Unexpected{terminal_id.error()};
    SocialSecurityApp ss(card_channel_);
    if (auto s = ss.select(); !s) return Unexpected{from_card(s.error())};
    std::optional<std::string> pin = pin_entry ? pin_entry() : std::nullopt;
    if (!pin) return Unexpected{FlowError{FlowErrorCode::pin_cancelled, "no PIN was entered: nothing was held or debited"}};
    if (auto verified = ss.verify_pin(*pin); !verified) {
        const std::uint16_t sw = verified.error().sw;
        if ((sw & 0xFFF0) == 0x63C0 || sw == sw_pin_blocked)
            return Unexpected{FlowError{FlowErrorCode::wrong_pin, "PIN refused: " + verified.error().message, sw}};
        return Unexpected{from_card(verified.error())};
    }
    // The medical link (DF04) must exist: a card without it pays from the purse only (caller's choice).
    if (auto account = ss.medical_account(); !account) return Unexpected{from_card(account.error())};
    auto stan = host.take_stan();
    if (!stan) return Unexpected{FlowError{FlowErrorCode::storage_error, stan.error().message}};
    MedicalProof proof{online_draft(info, *terminal_id, amount_fen, LinkKind::clinic_hold, *stan, host.batch().batch_number, clock_()),
                       {},
                       {}};
    // Card presence for exactly this request, once: the host's fresh challenge, answered by the PIN-gated
    // social-security application over the request's fields (ISO8583.md §4.4).
    auto challenge = host.request_challenge(info.asn);
    if (!challenge) return Unexpected{from_host(challenge.error(), false)};
    proof.challenge = *challenge;
    auto answer = ss.internal_authenticate(host.clinic_proof_input(proof.draft, *challenge));
    if (!answer) return Unexpected{from_card(answer.error())};
    if (answer->size() != 8) return Unexpected{FlowError{FlowErrorCode::card_error, "INTERNAL AUTHENTICATE answered not 8 bytes"}};
    std::copy(answer->begin(), answer->end(), proof.cryptogram.begin());
    return proof;
}

Result<std::uint64_t, FlowError> Terminal::medical_balance(const PinEntry& pin, ClearingClient& host) {
    auto session = open_card();
    if (!session) return Unexpected{session.error()};
    if (auto ok = check_card(session->info, hotlist_, clock_()); !ok) return Unexpected{ok.error()};
    auto proof = prove_medical(session->info, 0, pin, host);
    if (!proof) return Unexpected{proof.error()};
    auto available = host.medical_inquiry(proof->draft, proof->challenge, proof->cryptogram);
    if (!available) return Unexpected{from_host(available.error(), false)};
    return *available;
}

Result<ClinicOutcome, FlowError> Terminal::medical_part(const PurseInfo& info, std::uint32_t amount_fen, const PinEntry& pin_entry,
                                                        ClearingClient& host, QueuedTransaction& hold) {
    auto proof = prove_medical(info, amount_fen, pin_entry, host);
    if (!proof) return Unexpected{proof.error()};
    auto intent_sequence = queue_.record_intent(proof->draft);
    if (!intent_sequence) return Unexpected{from_queue(intent_sequence.error())};
    hold = QueuedTransaction{*intent_sequence, proof->draft};

    auto approval = host.authorize(proof->draft, proof->challenge, proof->cryptogram);
    if (!approval) {
        auto reversal = queue_reversal(hold, LinkKind::clinic_reversal, &host);
        if (!reversal) return Unexpected{reversal.error()};
        return Unexpected{from_host(approval.error(), true)};
    }
    const std::string& code = approval->response_code;
    if (code != "00" && code != "10") {
        // Nothing held: 51 (nothing available) goes on to the purse, anything else stops here.
        if (auto a = queue_.abandon_intent(hold.sequence); !a) return Unexpected{from_queue(a.error())};
        hold.sequence = 0;
        if (code != "51") return Unexpected{declined("clinic authorization", code)};
    }
    ClinicOutcome outcome;
    outcome.amount_fen = amount_fen;
    outcome.authorization_code = code;
    outcome.medical_fen = approval->approved_fen;
    outcome.purse_fen = amount_fen - approval->approved_fen;
    return outcome;
}

Result<Ok, FlowError> Terminal::purse_part(const PurseInfo& info, const ClinicOptions& options, ClearingClient& host,
                                           const QueuedTransaction& hold, ClinicOutcome& outcome) {
    PurseApp purse(card_channel_);
    Result<TransactionRecord, FlowError> paid = Unexpected{FlowError{FlowErrorCode::card_error, ""}};
    if (auto reselected = purse.select(); !reselected) {  // the SSSE application is selected
        paid = Unexpected{from_card(reselected.error())};
    } else if (auto balance = options.cash_for_the_rest ? purse.balance() : CardResult<std::uint32_t>(outcome.purse_fen); !balance) {
        paid = Unexpected{from_card(balance.error())};
    } else {
        // The card's balance is its claim: it only bounds what is asked; the debit itself is TAC-proven.
        const std::uint32_t from_purse = std::min(outcome.purse_fen, *balance);
        outcome.cash_fen = outcome.purse_fen - from_purse;
        outcome.purse_fen = from_purse;
        if (from_purse == 0) return Ok{};
        TransactionRecord draft;
        draft.type = crypto::type_ep_purchase;
        draft.amount_fen = from_purse;
        if (hold.sequence != 0) {
            // The visit reference (ISO8583.md §4.9): the hold's batch and STAN, sent with the 0320 as DF11.
            draft.stan = hold.record.stan;
            draft.batch_number = hold.record.batch_number;
        }
        paid = debit(info, draft, {});
    }
    if (!paid) {
        // The bill is not paid: the medical hold is released (0400, or a queued 0420).
        FlowError error = paid.error();
        if (hold.sequence != 0) {
            if (auto reversed = reverse_hold(hold, outcome.medical_fen, host); !reversed) return Unexpected{reversed.error()};
            error.message += "; the medical hold is reversed";
            error.reversed = true;
        }
        return Unexpected{error};
    }
    outcome.purse_record = *paid;
    return Ok{};
}

namespace {

// What the receipt keeps to refund the payment (clinic_refund.hpp): the hold's 0100 as sent (41, 60, 11),
// the purse purchase as its 0320 names it (DF06, DF05), each with its amount, and the cash part.
ClinicRefundReference refund_reference_of(const Asn& asn, const QueuedTransaction& hold, const ClinicOutcome& outcome,
                                          const std::string& terminal_id) {
    ClinicRefundReference reference;
    reference.asn = asn;
    if (hold.sequence != 0) {
        reference.hold = ClinicHoldReference{terminal_id, hold.record.batch_number, hold.record.stan};
        reference.medical_fen = outcome.medical_fen;
    }
    if (outcome.purse_record) {
        reference.purchase = iso8583::PurchaseReference{outcome.purse_record->terminal_id, outcome.purse_record->terminal_serial};
        reference.purse_fen = outcome.purse_record->amount_fen;
    }
    reference.cash_fen = outcome.cash_fen;
    return reference;
}

}  // namespace

Result<ClinicOutcome, FlowError> Terminal::clinic_payment(std::uint32_t amount_fen, std::string_view pin, ClearingClient& host) {
    ClinicOptions options;
    options.pin = [entered = std::string(pin)] { return std::optional<std::string>(entered); };
    options.cash_for_the_rest = false;
    options.send_purse_now = false;
    return clinic_payment(amount_fen, options, host);
}

Result<ClinicOutcome, FlowError> Terminal::clinic_payment(std::uint32_t amount_fen, const ClinicOptions& options, ClearingClient& host) {
    if (amount_fen == 0) return Unexpected{FlowError{FlowErrorCode::card_error, "a payment of 0 fen"}};
    auto session = open_card();
    if (!session) return Unexpected{session.error()};
    if (auto ok = check_card(session->info, hotlist_, clock_()); !ok) return Unexpected{ok.error()};
    if (auto recovered = recover_card(session->info); !recovered) return Unexpected{recovered.error()};
    if (queue_.full()) return Unexpected{FlowError{FlowErrorCode::queue_full, "transaction queue full: upload before taking payments"}};

    QueuedTransaction hold{};
    auto medical = medical_part(session->info, amount_fen, options.pin, host, hold);
    if (!medical) return medical;
    ClinicOutcome outcome = *medical;
    if (outcome.purse_fen > 0) {
        if (auto paid = purse_part(session->info, options, host, hold, outcome); !paid) return Unexpected{paid.error()};
    }
    if (hold.sequence != 0) {
        TransactionRecord completion = hold.record;
        completion.link = LinkKind::clinic_completion;
        completion.amount_fen = outcome.medical_fen;
        completion.intent_sequence = hold.sequence;
        auto sequence = queue_.append(completion);
        if (!sequence) return Unexpected{from_queue(sequence.error())};
        if (auto answer = host.send_advice(queue_, *sequence)) outcome.completion_code = *answer;
    }
    outcome.refund_reference = refund_reference_of(session->info.asn, hold, outcome, host.options().terminal_id);
    if (options.send_purse_now && outcome.purse_record) {
        // The clinic is online: the purse part goes now rather than with the next batch (a link failure
        // leaves it queued, the payment stands).
        auto uploaded = host.upload(queue_);
        outcome.purse_uploaded = uploaded.ok();
        if (!uploaded) outcome.purse_upload_error = uploaded.error().message;
    }
    return outcome;
}

}  // namespace coconut::sdk
