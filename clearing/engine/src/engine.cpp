// The authorization engine: ISO 8583 requests → registry checks → HSM → ledger writer → response.
// Every response to a booking is produced by the writer's callback, after the commit was synced.
#include <coconut/clearing/engine.hpp>
#include <coconut/clearing/log.hpp>
#include <coconut/clearing/risk_rules.hpp>
#include <coconut/core/assert.hpp>
#include <coconut/hsm/client.hpp>

#include "internal.hpp"

#include <boost/asio/post.hpp>
#include <fmt/format.h>

#include <sodium.h>

#include <bit>
#include <chrono>
#include <cstdio>
#include <limits>
#include <utility>

namespace coconut::clearing {

namespace detail {

std::uint64_t when_number(const crypto::CardDateTime& when) {
    std::uint64_t n = 0;
    for (std::uint8_t b : when.date) n = n << 8 | b;
    for (std::uint8_t b : when.time) n = n << 8 | b;
    return n;
}

void check_answer(const iso8583::Message& request, const iso8583::Message& response) {
    COCONUT_ASSERT(iso8583::response_mti(request.mti()) == response.mti(), "an answer carries its request's response MTI");
    COCONUT_ASSERT(response.get(11) == request.get(11), "an answer carries its request's STAN");
    COCONUT_ASSERT(response.get(41) == request.get(41), "an answer carries its request's terminal");
    COCONUT_ASSERT(response.has(39), "an answer carries a response code");
}

}  // namespace detail

using detail::check_answer;
using detail::count_answered;
using detail::log_line;
using detail::wall_clock_ns;
using detail::when_number;
using iso8583::Message;
using iso8583::ResponseCode;

namespace {

// The end of every network and batch answer: counted (as refused unless `accepted`), checked against its
// request, sent.
void send_answer(EngineStats& stats, const Message& request, Message response, const Engine::Respond& respond, bool accepted) {
    if (!accepted) stats.refused++;
    count_answered(stats);
    check_answer(request, response);
    respond(std::move(response));
}

// Where a purchase's stored record lives: what its id is made of.
Registry::PurchaseKey purchase_key_of(const PurseTransaction& t) { return {t.asn, t.terminal_id, t.terminal_serial}; }

// Runs `work` where answers are built (EngineOptions::completion_executor), or here when none is set.
template <class Work>
void run_on(const std::optional<boost::asio::any_io_executor>& executor, Work&& work) {
    if (executor) {
        boost::asio::post(*executor, std::forward<Work>(work));
    } else {
        work();
    }
}

// Days since 1970-01-01 (UTC): the forged-TAC count's day.
std::uint32_t utc_day() { return static_cast<std::uint32_t>(wall_clock_ns() / 86'400'000'000'000ULL); }

}  // namespace

Place place_of(const TerminalId& terminal_id, std::uint8_t type, std::uint16_t line, std::uint16_t station,
               const crypto::CardDateTime& when) {
    Place place;
    place.terminal_id = terminal_id;
    place.type = type;
    place.line = line;
    place.station = station;
    // YYMMDDhhmm from the card's YYYYMMDD hhmmss.
    std::copy(when.date.begin() + 1, when.date.end(), place.local_time_bcd.begin());
    std::copy(when.time.begin(), when.time.begin() + 2, place.local_time_bcd.begin() + 3);
    return place;
}

// ---- engine -----------------------------------------------------------------------------------------------

struct Engine::Upload {
    Message request;
    Respond respond;
    PurseTransaction transaction;
    std::uint64_t amount_fen = 0;
    std::uint64_t participant_id = 0;
    std::string terminal_id;
    std::uint32_t stan = 0;
    std::optional<std::uint32_t> batch_number;
    CardRecord card;
    ledger::Id transfer_id;               // the canonical id (offline_purchase_transfer)
    PurchaseProof proof;                  // of this upload
    bool conflicts_with_booked = false;   // a record with other covered fields is booked under transfer_id
    std::optional<RiskKind> reviewed;     // tac_invalid / serial_conflict: recorded for review, not booked
    bool suspended_terminal = false;      // this upload took the terminal past the forged-TAC limit
    std::optional<PurchaseProof> raced;   // booked by another upload between the snapshot and the commit
    std::uint64_t booked_amount_fen = 0;  // the approval's record (for DF10)
    // A lost card whose balance was carried to its replacement (lifecycle.hpp): booked as transfer 12,
    // lost late spending → payable; the card's shadow (carried, at 0) stays as it is.
    bool after_carry = false;
};

Engine::Engine(ledger::Ledger& ledger, ledger::Writer& writer, Registry& registry, TacVerifier& verifier, EngineOptions options)
    : ledger_(ledger), writer_(writer), registry_(registry), verifier_(verifier), options_(std::move(options)),
      journal_next_sequence_(ledger.head().sequence + 1) {
    // A purchase's amount is a 4-byte field of the card's record and its TAC (crypto::PurchaseTac).
    COCONUT_ASSERT(options_.purchase_amount_fen_max <= std::numeric_limits<std::uint32_t>::max());
}

Engine::Engine(ledger::Ledger& ledger, ledger::Writer& writer, Registry& registry, TacVerifier& verifier, CardServices& card_services,
               EngineOptions options)
    : Engine(ledger, writer, registry, verifier, std::move(options)) {
    card_services_ = &card_services;
}

void Engine::handle(Message request, SessionState& session, Respond respond) {
    stats_.requests++;
    stats_.in_flight++;
    // A TLS connection speaks for the terminal of its certificate only (clearing/README.md "Security model").
    if (session.authenticated_terminal_id && request.has(41) && *request.get(41) != *session.authenticated_terminal_id) {
        stats_.refused++;
        count_answered(stats_);
        log_line(fmt::format("{} with 41 = {} over the connection of terminal {}: refused 63", request.mti(), *request.get(41),
                             *session.authenticated_terminal_id));
        return respond(make_response(request, ResponseCode::security_violation));
    }
    using iso8583::MessageType;
    const std::optional<MessageType> type = iso8583::request_type_of(request.mti());
    if (type == MessageType::network) return sign_on(request, session, std::move(respond));
    if (type == MessageType::upload) return offline_upload(std::move(request), session, std::move(respond));
    if (type == MessageType::reconciliation) return reconcile(request, session, std::move(respond));
    if (!type) {
        stats_.refused++;
        count_answered(stats_);
        return respond(make_response(request, ResponseCode::invalid_transaction));
    }
    // The online messages need the HSM's card services (load MAC2, TACs, card-presence proofs).
    if (card_services_ == nullptr) {
        stats_.refused++;
        count_answered(stats_);
        return respond(make_response(request, ResponseCode::issuer_inoperative));
    }
    switch (*type) {
        case MessageType::financial:
            if (iso8583::processing_code_of(request) == iso8583::ProcessingCode::medical_refund) {
                return medical_refund(request, session, std::move(respond));
            }
            return online_load(request, session, std::move(respond));
        case MessageType::authorization: return clinic_authorization(request, session, std::move(respond));
        case MessageType::advice: return advice(request, session, std::move(respond));
        case MessageType::reversal:
        case MessageType::reversal_advice: return reversal(request, session, std::move(respond));
        case MessageType::upload:
        case MessageType::reconciliation:
        case MessageType::network: break;  // handled above
    }
}

Result<std::size_t> Engine::scan_expiries() {
    // Bounded work per call: the rest waits for the next call.
    constexpr std::size_t entries_per_read = 1024;
    constexpr std::size_t reads_per_call_max = 16;
    std::size_t found = 0;
    for (std::size_t read = 0; read < reads_per_call_max; ++read) {
        auto entries = ledger_.read_journal(journal_next_sequence_, entries_per_read);
        if (!entries) return Unexpected<Error>{Error{ErrorCode::storage, entries.error().message}};
        for (const ledger::JournalEntry& entry : *entries) {
            journal_next_sequence_ = entry.sequence + 1;
            if (entry.kind != ledger::JournalKind::pending_expired || entry.payload.size() != 16) continue;
            const ledger::Id id{read_be(ByteView(entry.payload).first(8)), read_be(ByteView(entry.payload).subspan(8, 8))};
            auto transfer = ledger_.lookup_transfer(id);
            if (!transfer) return Unexpected<Error>{Error{ErrorCode::storage, transfer.error().message}};
            if (!*transfer) continue;
            ++found;
            const bool load = (*transfer)->code != transfer_codes::clinic_medical;  // loads, carried loads, refund credits
            (load ? stats_.loads_expired : stats_.holds_expired)++;
            log_line(fmt::format("{} {} of {} fen expired unresolved (participant {})", load ? "load" : "hold", ledger::to_string(id),
                                 (*transfer)->amount, (*transfer)->user_data_64));
        }
        if (entries->size() < entries_per_read) break;
    }
    return found;
}

void Engine::sign_on(const Message& request, SessionState& session, Respond respond) {
    auto answer = [&](ResponseCode code) {
        send_answer(stats_, request, make_response(request, code), respond, code == ResponseCode::approved);
    };
    if (!request.get_number(70) || !request.has(11)) return answer(ResponseCode::format_error);
    const auto code = iso8583::network_code_of(request);
    const auto terminal_id = request.get(41);
    if (code == iso8583::NetworkCode::echo) return answer(ResponseCode::approved);
    if (!terminal_id) return answer(ResponseCode::format_error);
    if (code == iso8583::NetworkCode::sign_off) {
        session.signed_on.erase(std::string(*terminal_id));
        return answer(ResponseCode::approved);
    }
    if (code == iso8583::NetworkCode::hotlist_download) return hotlist_download(request, session, std::move(respond));
    if (code == iso8583::NetworkCode::card_challenge) return issue_challenge(request, session, std::move(respond));
    if (code != iso8583::NetworkCode::sign_on) return answer(ResponseCode::invalid_transaction);
    auto terminal = registry_.terminal(*terminal_id);
    if (!terminal) {
        log_line("sign-on: " + terminal.error().message);
        return answer(ResponseCode::system_malfunction);
    }
    if (!*terminal) return answer(ResponseCode::invalid_merchant);
    if ((*terminal)->status != TerminalStatus::active) return answer(ResponseCode::not_permitted_to_terminal);
    session.signed_on.insert(std::string(*terminal_id));
    answer(ResponseCode::approved);
}

std::optional<ResponseCode> Engine::refuse_terminal(const Message& request, const SessionState& session,
                                                    const std::optional<TerminalRecord>& terminal) const {
    if (!terminal) return ResponseCode::invalid_merchant;
    // Suspended or retired terminals are refused on every request, not only at sign-on: a clerk's
    // suspension takes effect on connections already open.
    if (terminal->status != TerminalStatus::active) return ResponseCode::not_permitted_to_terminal;
    if (options_.require_sign_on && !session.signed_on.count(std::string(request.get(41).value_or("")))) {
        return ResponseCode::invalid_merchant;
    }
    return std::nullopt;
}

namespace {

// The tag of a clinic challenge (ISO8583.md §4.4): keyed BLAKE2b over the terminal, the card, the issue
// time and the random part, so the host recognizes its own challenges without storing them.
std::array<std::uint8_t, 8> challenge_tag(const ChallengeKey& key, std::string_view terminal_id, const Asn& asn, ByteView issued) {
    constexpr std::string_view domain = "coconut-challenge-v1";
    Bytes material(domain.begin(), domain.end());
    material.reserve(domain.size() + 1 + terminal_id.size() + asn.size() + issued.size());
    material.push_back(static_cast<std::uint8_t>(terminal_id.size()));
    for (char c : terminal_id) material.push_back(static_cast<std::uint8_t>(c));
    append(material, asn);
    append(material, issued);
    std::array<std::uint8_t, crypto_generichash_BYTES_MIN> digest{};
    crypto_generichash(digest.data(), digest.size(), material.data(), material.size(), key.bytes.data(), key.bytes.size());
    std::array<std::uint8_t, 8> tag{};
    std::copy_n(digest.begin(), tag.size(), tag.begin());
    return tag;
}

}  // namespace

// 0800 70 = 201 (ISO8583.md §4.4): a challenge for the card at this terminal, valid challenge_ttl_s, once.
void Engine::issue_challenge(const Message& request, SessionState& session, Respond respond) {
    auto answer = [&](ResponseCode code, std::optional<std::string> field62 = {}) {
        Message response = make_response(request, code);
        if (field62) response.set(62, *field62);
        send_answer(stats_, request, std::move(response), respond, code == ResponseCode::approved);
    };
    const auto terminal_id = request.get(41);
    const auto pan = request.get(2);
    if (!terminal_id || !pan || !request.has(62)) return answer(ResponseCode::format_error);
    auto parsed = iso8583::parse_challenge_request(*request.get(62));
    if (!parsed) return answer(ResponseCode::format_error);
    auto terminal = registry_.terminal(*terminal_id);
    if (!terminal) {
        log_line("challenge: " + terminal.error().message);
        return answer(ResponseCode::system_malfunction);
    }
    if (auto refused = refuse_terminal(request, session, *terminal)) return answer(*refused);
    if (*pan != std::string_view(bcd_to_digits(parsed->asn)).substr(4)) return answer(ResponseCode::invalid_card_number);
    auto card = registry_.card(parsed->asn);
    if (!card) {
        log_line("challenge: " + card.error().message);
        return answer(ResponseCode::system_malfunction);
    }
    if (!*card) return answer(ResponseCode::invalid_card_number);
    iso8583::ChallengeAnswerData challenge;
    challenge.asn = parsed->asn;
    const Bytes issued_at = be_bytes(wall_clock_ns() / 1'000'000'000ULL, 4);
    std::copy(issued_at.begin(), issued_at.end(), challenge.challenge.begin());
    randombytes_buf(challenge.challenge.data() + 4, 4);
    const auto tag = challenge_tag(registry_.challenge_key(), *terminal_id, parsed->asn, ByteView(challenge.challenge).first(8));
    std::copy(tag.begin(), tag.end(), challenge.challenge.begin() + 8);
    answer(ResponseCode::approved, iso8583::encode_challenge_answer(challenge));
}

bool Engine::claim_challenge(const iso8583::HostChallenge& challenge) {
    std::lock_guard lock(challenges_mutex_);
    return challenges_in_flight_.insert(challenge).second;
}

void Engine::release_challenge(const iso8583::HostChallenge& challenge) {
    std::lock_guard lock(challenges_mutex_);
    challenges_in_flight_.erase(challenge);
}

std::optional<std::string> Engine::check_challenge(const iso8583::HostChallenge& challenge, std::string_view terminal_id,
                                                   const Asn& asn) const {
    const auto tag = challenge_tag(registry_.challenge_key(), terminal_id, asn, ByteView(challenge).first(8));
    if (sodium_memcmp(tag.data(), challenge.data() + 8, tag.size()) != 0) return "not issued to this terminal for this card";
    const std::uint64_t now_s = wall_clock_ns() / 1'000'000'000ULL;
    const std::uint64_t issued_s = read_be32(ByteView(challenge).first(4));
    // A few seconds of clock step on the host are tolerated; nothing more.
    constexpr std::uint64_t clock_step_s = 5;
    if (issued_s > now_s + clock_step_s) return "issued in the future";
    if (now_s > issued_s + options_.challenge_ttl_s)
        return fmt::format("expired ({} s old, valid {} s)", now_s - issued_s, options_.challenge_ttl_s);
    return std::nullopt;
}

// 0500 (ISO8583.md §4.7): the terminal's eight totals of a batch against the host's bookings of that
// batch from that terminal. 00 balanced, 95 out of balance; 97 = the host's net.
void Engine::reconcile(const Message& request, SessionState& session, Respond respond) {
    auto answer = [&](ResponseCode code, std::optional<std::int64_t> host_net_fen = {}) {
        Message response = make_response(request, code);
        if (host_net_fen) response.set(97, iso8583::encode_net_amount(*host_net_fen));
        send_answer(stats_, request, std::move(response), respond, code == ResponseCode::approved || code == ResponseCode::out_of_balance);
    };
    const auto terminal_id = request.get(41);
    const auto batch_number = batch_of(request);
    const auto terminal_totals = iso8583::batch_totals_of(request);
    if (!terminal_id || !request.has(11) || !batch_number || !terminal_totals) return answer(ResponseCode::format_error);
    auto terminal = registry_.terminal(*terminal_id);
    if (!terminal) {
        log_line("0500: " + terminal.error().message);
        return answer(ResponseCode::system_malfunction);
    }
    if (auto refused = refuse_terminal(request, session, *terminal)) return answer(*refused);
    TerminalRecord host = **terminal;
    if (host.batch_number != *batch_number) host = TerminalRecord{};  // nothing booked in that batch
    iso8583::BatchTotalsFields host_totals;
    host_totals.credits_count = host.batch_credits_count;
    host_totals.credit_reversals_count = host.batch_credit_reversals_count;
    host_totals.debits_count = host.batch_debits_count;
    host_totals.debit_reversals_count = host.batch_debit_reversals_count;
    host_totals.credits_fen = host.batch_credits_fen;
    host_totals.credit_reversals_fen = host.batch_credit_reversals_fen;
    host_totals.debits_fen = host.batch_debits_fen;
    host_totals.debit_reversals_fen = host.batch_debit_reversals_fen;
    const std::int64_t net = static_cast<std::int64_t>(host.batch_debits_fen) - static_cast<std::int64_t>(host.batch_debit_reversals_fen) -
                             static_cast<std::int64_t>(host.batch_credits_fen) + static_cast<std::int64_t>(host.batch_credit_reversals_fen);
    answer(*terminal_totals == host_totals ? ResponseCode::approved : ResponseCode::out_of_balance, net);
}

// 0800 70=101 (ISO8583.md §4.6): 48 = version from (8) ‖ chunk index (4); 63 = the chunk.
void Engine::hotlist_download(const Message& request, SessionState& session, Respond respond) {
    auto answer = [&](ResponseCode code, std::optional<std::string> field63 = {}) {
        Message response = make_response(request, code);
        if (field63) response.set(63, *field63);
        send_answer(stats_, request, std::move(response), respond, code == ResponseCode::approved);
    };
    const auto terminal_id = request.get(41);
    const auto position = iso8583::parse_hotlist_position(request.get(48).value_or(""));
    if (!terminal_id || !position) return answer(ResponseCode::format_error);
    auto terminal = registry_.terminal(*terminal_id);
    if (!terminal) {
        log_line("hotlist: " + terminal.error().message);
        return answer(ResponseCode::system_malfunction);
    }
    if (auto refused = refuse_terminal(request, session, *terminal)) return answer(*refused);
    auto chunk = registry_.hotlist_chunk(position->version, position->chunk_index);
    if (!chunk) {
        log_line("hotlist: " + chunk.error().message);
        return answer(ResponseCode::system_malfunction);
    }
    answer(ResponseCode::approved, encode_hotlist_chunk(*chunk));
}

void Engine::finish(const std::shared_ptr<Upload>& upload, ResponseCode code) {
    if (code != ResponseCode::approved && code != ResponseCode::suspected_fraud && code != ResponseCode::duplicate_transmission) {
        stats_.refused++;
    }
    count_answered(stats_);
    Message response = make_response(upload->request, code);
    // An approval names the record it booked (ISO8583.md §4.8): the terminal deletes its queued record
    // only when this digest is its own record's.
    if (code == ResponseCode::approved) {
        COCONUT_ASSERT(upload->booked_amount_fen <= std::numeric_limits<std::uint32_t>::max());
        response.set(62, iso8583::encode_record_digest(
                             iso8583::purchase_digest(upload->transaction, static_cast<std::uint32_t>(upload->booked_amount_fen))));
    }
    check_answer(upload->request, response);
    upload->respond(std::move(response));
}

namespace {

// Whether a card reported lost had its balance carried to its replacement (lifecycle.hpp); nullopt
// after logging a storage failure.
std::optional<bool> carried_already(const Lifecycle* lifecycle, const lmdb::Txn& txn, const CardRecord& card) {
    if (card.status == CardStatus::active || lifecycle == nullptr) return false;
    auto record = lifecycle->record_in(txn, card.asn);
    if (!record) {
        log_line("0320: " + record.error().message());
        return std::nullopt;
    }
    return *record && (*record)->state == CarryState::carried;
}

}  // namespace

void Engine::offline_upload(Message message, SessionState& session, Respond respond) {
    auto upload = std::make_shared<Upload>();
    upload->request = std::move(message);
    const Message& request = upload->request;
    upload->respond = std::move(respond);
    const auto pan = request.get(2);
    const auto amount = request.get_number(4);
    const auto stan = request.get_number(11);
    const auto terminal_id = request.get(41);
    const auto card_data = request.get(62);
    if (!pan || !amount || !stan || !terminal_id || !card_data) return finish(upload, ResponseCode::format_error);
    if (request.has(3) && iso8583::processing_code_of(request) != iso8583::ProcessingCode::purse_purchase) {
        return finish(upload, ResponseCode::invalid_transaction);
    }
    upload->stan = static_cast<std::uint32_t>(*stan);
    upload->terminal_id = std::string(*terminal_id);
    upload->batch_number = batch_of(request);

    // The terminal, the card and the stored record from one snapshot (one read transaction).
    auto snapshot = ledger_.begin_read();
    if (!snapshot) {
        log_line("0320: " + snapshot.error().message);
        return finish(upload, ResponseCode::system_malfunction);
    }
    auto terminal = registry_.terminal_in(*snapshot, *terminal_id);
    if (!terminal) {
        log_line("0320: " + terminal.error().message());
        return finish(upload, ResponseCode::system_malfunction);
    }
    if (auto refused = refuse_terminal(request, session, *terminal)) return finish(upload, *refused);
    upload->participant_id = (*terminal)->participant_id;
    if (*amount > options_.purchase_amount_fen_max) return finish(upload, ResponseCode::invalid_amount);
    upload->amount_fen = *amount;

    auto parsed = parse_purse_transaction(*card_data);
    if (!parsed) {
        log_line("0320 from " + upload->terminal_id + " STAN " + std::to_string(*stan) + ": " + parsed.error());
        return finish(upload, ResponseCode::format_error);
    }
    upload->transaction = *parsed;
    const PurseTransaction& t = upload->transaction;
    // A zero fare is a CAPP purchase (type 09: the entry tap of a distance line) with its TAC: booked
    // like any purchase (a 0-fen transfer). An EP purchase (06) of 0 is not a purchase.
    if (upload->amount_fen == 0 && t.type != crypto::type_capp_purchase) return finish(upload, ResponseCode::invalid_amount);
    const std::string asn_digits = bcd_to_digits(t.asn);
    if (*pan != std::string_view(asn_digits).substr(4)) return finish(upload, ResponseCode::invalid_card_number);
    if (t.terminal_id != (*terminal)->psam_terminal_id) return finish(upload, ResponseCode::not_permitted_to_terminal);

    auto card = registry_.card_in(*snapshot, t.asn);
    if (!card) {
        log_line("0320: " + card.error().message());
        return finish(upload, ResponseCode::system_malfunction);
    }
    if (!*card) return finish(upload, ResponseCode::invalid_card_number);
    upload->card = **card;
    upload->transfer_id = offline_purchase_transfer(t.asn, t.terminal_id, t.terminal_serial);
    upload->proof = purchase_proof(t, static_cast<std::uint32_t>(upload->amount_fen));
    COCONUT_ASSERT(upload->proof.amount_fen == upload->amount_fen, "the amount is within a card record's 4 bytes");

    auto stored = registry_.purchase_proof_in(*snapshot, purchase_key_of(t));
    const auto carried = carried_already(options_.lifecycle, *snapshot, upload->card);
    if (!carried) return finish(upload, ResponseCode::system_malfunction);
    upload->after_carry = *carried;
    snapshot->abort();  // back to the pool before the HSM and the writer
    if (!stored) {
        log_line("0320: " + stored.error().message());
        return finish(upload, ResponseCode::system_malfunction);
    }
    judge_upload(std::move(upload), *stored);
}

// A re-upload with the booked TAC and covered fields is answered from the stored record: nothing is
// booked, only claims that differ are flagged (ISO8583.md §4.8). Anything else is judged by its TAC.
void Engine::judge_upload(std::shared_ptr<Upload> upload, const std::optional<PurchaseProof>& stored) {
    if (stored && same_proven_record(*stored, upload->proof)) return answer_stored(upload, *stored);
    upload->conflicts_with_booked = stored.has_value();
    verify_tac(std::move(upload));
}

// The HSM's verdict on the upload's TAC decides: book it, record it for review, or refuse it.
void Engine::verify_tac(std::shared_ptr<Upload> upload) {
    const PurseTransaction& t = upload->transaction;
    hsm::PurchaseTac item;
    item.key_version = upload->card.tac_key_version;
    item.card.issuer_id = upload->card.issuer_id;
    item.card.asn = t.asn;
    item.amount_fen = static_cast<std::uint32_t>(upload->amount_fen);
    item.type = t.type;
    item.terminal_id = t.terminal_id;
    item.terminal_serial = t.terminal_serial;
    item.when = t.when;
    item.tac = t.tac;
    verifier_.verify(item, [this, upload](hsm::Outcome<hsm::Verdict> verdict) {
        if (!verdict) {
            detail::log_hsm_failure("HSM: " + verdict.error().message);
            return finish(upload, ResponseCode::issuer_inoperative);
        }
        switch (*verdict) {
            case hsm::Verdict::valid: return upload->conflicts_with_booked ? review(upload, RiskKind::serial_conflict) : book(upload);
            case hsm::Verdict::invalid: return review(upload, RiskKind::tac_invalid);
            case hsm::Verdict::key_unavailable:
                log_line("HSM: TAC key version " + std::to_string(upload->card.tac_key_version) + " unavailable");
                return finish(upload, ResponseCode::issuer_inoperative);
            case hsm::Verdict::malformed: return finish(upload, ResponseCode::format_error);
        }
    });
}

// A re-upload of a booked record (same TAC, same covered fields): the first booking's answer; claims
// that differ from the booked ones raise one claims_differ flag per booking.
void Engine::answer_stored(const std::shared_ptr<Upload>& upload, const PurchaseProof& stored) {
    COCONUT_ASSERT(same_proven_record(stored, upload->proof));
    stats_.exists++;
    upload->booked_amount_fen = stored.amount_fen;
    if (stored.claims_digest == upload->proof.claims_digest) return finish(upload, ResponseCode::approved);
    const PurseTransaction& t = upload->transaction;
    const RiskFlag flag{RiskKind::claims_differ,
                        t.asn,
                        stored.offline_atc,
                        t.type,
                        wall_clock_ns(),
                        fmt::format("re-upload from {} of serial {} claims ATC {} balance {} fen; booked with ATC {} balance {} fen",
                                    upload->terminal_id, t.terminal_serial, t.offline_atc, t.balance_before_fen, stored.offline_atc,
                                    stored.balance_before_fen)};
    auto hook = [this, flag](lmdb::Txn& txn, std::span<const ledger::EventResult> results) {
        COCONUT_ASSERT(results.empty(), "no events, no results");
        return detail::raise_flags(registry_, txn, flag.asn, std::span<const RiskFlag>(&flag, 1));
    };
    auto on_commit = [this, upload](ledger::Reply reply) {
        if (!reply) log_line("risk flag not recorded: " + reply.error().message);
        COCONUT_ASSERT(!reply || reply->empty(), "no events, no results");
        finish(upload, ResponseCode::approved);
    };
    // Queue full: the answer still goes out, only the flag waits for the next repeat.
    if (!writer_.try_submit({}, std::move(on_commit), std::move(hook))) finish(upload, ResponseCode::approved);
}

// An upload that is not booked: a TAC that failed (answered 59), or a valid TAC under a booked purchase's
// id with other covered fields (a serial spent twice; answered 94). Recorded under its own id for review,
// review claims → suspense: the card's shadow and the merchant's payable stay as they are. A failed TAC
// counts against the terminal's daily limit; past it the terminal is suspended.
void Engine::review(std::shared_ptr<Upload> upload, RiskKind kind) {
    COCONUT_ASSERT(kind == RiskKind::tac_invalid || kind == RiskKind::serial_conflict);
    COCONUT_ASSERT(kind == RiskKind::tac_invalid || upload->conflicts_with_booked, "a serial conflict is with a booked record");
    const PurseTransaction& t = upload->transaction;
    upload->reviewed = kind;
    ledger::Transfer transfer;
    transfer.id = review_transfer(upload->transfer_id, upload->request.get(4).value_or(""), upload->request.get(62).value_or(""));
    transfer.debit_account_id = purse_review_claims_account;
    transfer.credit_account_id = purse_suspense_account;
    transfer.amount = upload->amount_fen;
    transfer.ledger = ledgers::purse;
    transfer.code = kind == RiskKind::tac_invalid ? transfer_codes::tac_failed : transfer_codes::serial_conflict;
    transfer.user_data_64 = upload->participant_id;
    transfer.user_data_32 = t.terminal_serial;
    transfer.user_data_128 = make_place(place_of(t.terminal_id, t.type, iso8583::transit_line(t), iso8583::transit_station(t), t.when));
    // A review record is not a booking: its id is not the canonical one, the card's shadow is untouched.
    COCONUT_ASSERT(transfer.id != upload->transfer_id);
    COCONUT_ASSERT(transfer.amount == upload->proof.amount_fen, "the amount recorded is the amount the TAC covers");

    auto hook = [this, upload = upload.get(), kind](lmdb::Txn& txn, std::span<const ledger::EventResult> results) -> lmdb::Status {
        COCONUT_ASSERT(results.size() == 1);
        if (results[0].code != ledger::ResultCode::ok) return Ok{};  // the same record again: counted once
        const PurseTransaction& t = upload->transaction;
        std::vector<RiskFlag> flags;
        flags.push_back(
            RiskFlag{kind, t.asn, t.offline_atc, t.type, wall_clock_ns(),
                     fmt::format("{} fen from {} serial {}: {}", upload->amount_fen, upload->terminal_id, t.terminal_serial,
                                 kind == RiskKind::tac_invalid ? "TAC invalid, recorded for review"
                                                               : "valid TAC under a booked purchase's id, recorded for review")});
        if (kind == RiskKind::tac_invalid) {
            if (auto counted = count_forged_tac(txn, *upload, flags); !counted) return counted;
        }
        return detail::raise_flags(registry_, txn, t.asn, flags);
    };
    auto on_commit = [this, upload](ledger::Reply reply) mutable {
        auto done = [this, upload, reply = std::move(reply)] {
            if (!reply) {
                detail::log_storage_failure("ledger: " + reply.error().message);
                return finish(upload,
                              unavailable_here(reply.error().code) ? ResponseCode::issuer_inoperative : ResponseCode::system_malfunction);
            }
            COCONUT_ASSERT(reply->size() == 1, "one result per event submitted");
            const ledger::ResultCode code = (*reply)[0].code;
            if (code != ledger::ResultCode::ok && code != ledger::ResultCode::exists) {
                log_line(fmt::format("review record {}: {}", ledger::to_string(upload->transfer_id), ledger::to_string(code)));
                return finish(upload, ResponseCode::system_malfunction);
            }
            if (upload->suspended_terminal) log_line("terminal " + upload->terminal_id + " suspended: too many failed TACs today");
            const bool forged = upload->reviewed == RiskKind::tac_invalid;
            if (forged) stats_.suspense++;
            else stats_.duplicates++;
            // A forged record answered 94 when it collides with a booked one (the genuine record is booked).
            finish(upload, forged && !upload->conflicts_with_booked ? ResponseCode::suspected_fraud : ResponseCode::duplicate_transmission);
        };
        run_on(options_.completion_executor, std::move(done));
    };
    if (!writer_.try_submit({ledger::Event(transfer)}, std::move(on_commit), std::move(hook))) {
        finish(upload, ResponseCode::issuer_inoperative);
    }
}

// A failed TAC counts against its terminal's day; over options_.forged_tacs_per_day an active terminal
// is suspended (flagged with the card's record).
lmdb::Status Engine::count_forged_tac(lmdb::Txn& txn, Upload& upload, std::vector<RiskFlag>& flags) {
    auto terminal = registry_.terminal_in(txn, upload.terminal_id);
    if (!terminal) return Unexpected<lmdb::Error>{terminal.error()};
    if (!*terminal) return Ok{};
    TerminalRecord r = **terminal;
    const std::uint32_t today = utc_day();
    if (r.forged_day != today) r.forged_day = today, r.forged_count = 0;
    r.forged_count++;
    if (r.forged_count > options_.forged_tacs_per_day && r.status == TerminalStatus::active) {
        r.status = TerminalStatus::suspended;
        upload.suspended_terminal = true;
        flags.push_back(RiskFlag{RiskKind::terminal_suspended, upload.transaction.asn, 0, 0, wall_clock_ns(),
                                 fmt::format("terminal {} suspended: {} uploads with a failed TAC today (limit {})", r.terminal_id,
                                             r.forged_count, options_.forged_tacs_per_day)});
    }
    return registry_.put_terminal(txn, r);
}

namespace detail {

lmdb::Status raise_flags(const Registry& registry, lmdb::Txn& txn, const Asn& asn, std::span<const RiskFlag> flags) {
    COCONUT_ASSERT(flags.size() <= risk_flags_per_message_max);
    std::uint32_t added_count = 0;
    for (const RiskFlag& f : flags) {
        auto added = registry.put_risk(txn, f);
        if (!added) return Unexpected<lmdb::Error>{added.error()};
        if (*added) added_count++;
    }
    if (added_count == 0) return Ok{};
    auto card = registry.card_in(txn, asn);
    if (!card) return Unexpected<lmdb::Error>{card.error()};
    if (!*card) return Ok{};
    CardRecord updated = **card;
    updated.risk_flags += added_count;
    return registry.put_card(txn, updated);
}

}  // namespace detail

void Engine::book(std::shared_ptr<Upload> upload) {
    const PurseTransaction& t = upload->transaction;
    ledger::Transfer transfer;
    transfer.id = upload->transfer_id;
    transfer.debit_account_id = upload->after_carry ? lost_late_spending_account : purse_shadow_account(t.asn);
    transfer.credit_account_id = payable_account(upload->participant_id, ledgers::purse);
    transfer.amount = upload->amount_fen;
    transfer.ledger = ledgers::purse;
    transfer.code = upload->after_carry ? transfer_codes::late_after_carry : transfer_codes::offline_purchase;
    transfer.user_data_64 = upload->participant_id;
    transfer.user_data_32 = t.terminal_serial;
    transfer.user_data_128 = make_place(place_of(t.terminal_id, t.type, iso8583::transit_line(t), iso8583::transit_station(t), t.when));
    // A booking under the canonical id of a proven record, for the amount its TAC covers.
    COCONUT_ASSERT(!upload->reviewed && !upload->conflicts_with_booked, "only an unconflicted valid TAC is booked");
    COCONUT_ASSERT(transfer.amount == upload->proof.amount_fen, "the amount booked is the amount the TAC covers");
    COCONUT_ASSERT(transfer.debit_account_id != transfer.credit_account_id);

    // Registry work in the booking's own transaction: the proof, shadow mirror, ATC, risk flags, the
    // terminal's STAN. The hook runs inside the commit, before on_commit (which owns `upload`) is called:
    // a plain pointer keeps the std::function allocation-free and the Upload's release off the writer thread.
    auto hook = [this, upload = upload.get()](lmdb::Txn& txn, std::span<const ledger::EventResult> results) -> lmdb::Status {
        COCONUT_ASSERT(results.size() == 1);
        if (results[0].code != ledger::ResultCode::ok) return judge_raced_booking(txn, *upload);
        return record_booking(txn, *upload);
    };

    auto on_commit = [this, upload](ledger::Reply reply) mutable {
        run_on(options_.completion_executor,
               [this, upload = std::move(upload), reply = std::move(reply)] { answer_booking(upload, reply); });
    };
    if (!writer_.try_submit({ledger::Event(transfer)}, std::move(on_commit), std::move(hook))) {
        finish(upload, ResponseCode::issuer_inoperative);  // writer queue full or stopping: retry later
    }
}

lmdb::Status Engine::judge_raced_booking(lmdb::Txn& txn, Upload& upload) {
    const PurseTransaction& t = upload.transaction;
    // Another upload of this id was booked in the same group or since the snapshot: judged by
    // what that one stored (the writer applies them in order).
    auto stored = registry_.purchase_proof_in(txn, purchase_key_of(t));
    if (!stored) return Unexpected<lmdb::Error>{stored.error()};
    upload.raced = *stored ? std::optional<PurchaseProof>(**stored) : std::nullopt;
    if (*stored && !same_proven_record(**stored, upload.proof)) {
        const RiskFlag conflict{RiskKind::serial_conflict,
                                t.asn,
                                t.offline_atc,
                                t.type,
                                wall_clock_ns(),
                                fmt::format("valid TAC under a booked purchase's id from {} serial {} (racing uploads)", upload.terminal_id,
                                            t.terminal_serial)};
        return detail::raise_flags(registry_, txn, t.asn, std::span<const RiskFlag>(&conflict, 1));
    }
    return Ok{};
}

// The lost card's record counts what it paid after its carry (the clerk's late-spending report).
lmdb::Status Engine::count_late_spending(lmdb::Txn& txn, const Upload& upload) {
    auto record = options_.lifecycle->record_in(txn, upload.transaction.asn);
    if (!record) return Unexpected<lmdb::Error>{record.error()};
    if (!*record) return Ok{};
    LifecycleRecord r = **record;
    r.late_count++;
    r.late_fen += upload.amount_fen;
    return options_.lifecycle->put_record(txn, r);
}

lmdb::Status Engine::record_booking(lmdb::Txn& txn, Upload& upload) {
    const PurseTransaction& t = upload.transaction;
    if (auto s = registry_.put_purchase_proof(txn, purchase_key_of(t), upload.proof); !s) return s;
    if (t.visit) {
        if (auto s = detail::link_visit(ledger_, registry_, txn, t, upload.terminal_id, upload.transfer_id); !s) return s;
    }
    auto stored_card = registry_.card_in(txn, t.asn);
    if (!stored_card) return Unexpected<lmdb::Error>{stored_card.error()};
    if (!*stored_card) return Ok{};  // removed meanwhile: nothing to mirror
    // The risk rules (risk_rules.hpp) over the card as booked so far; each finding a flag.
    const risk::Assessment assessed = risk::assess_purchase(**stored_card, risk::PurchaseFacts{upload.amount_fen, t.offline_atc,
                                                                                               t.balance_before_fen, when_number(t.when)});
    CardRecord card = assessed.card;
    if (upload.after_carry) {
        // Booked from lost late spending: the shadow, carried at 0, is not debited (check: cards = shadows).
        card.shadow_balance_fen = (*stored_card)->shadow_balance_fen;
        if (auto late = count_late_spending(txn, upload); !late) return late;
    }
    const std::uint64_t now = assessed.findings.empty() ? 0 : wall_clock_ns();
    for (const risk::Finding& f : assessed.findings) {
        auto added = registry_.put_risk(txn, RiskFlag{f.kind, t.asn, f.atc, t.type, now, f.detail});
        if (!added) return Unexpected<lmdb::Error>{added.error()};
        if (*added) card.risk_flags++;
    }
    if (auto s = registry_.put_card(txn, card); !s) return s;
    auto terminal = registry_.terminal_in(txn, upload.terminal_id);
    if (!terminal) return Unexpected<lmdb::Error>{terminal.error()};
    if (*terminal) {
        TerminalRecord r = **terminal;
        r.last_stan = upload.stan;
        r.uploads++;
        count_in_batch(r, upload.batch_number, BatchTotal::debit, upload.amount_fen);
        if (auto s = registry_.put_terminal(txn, r); !s) return s;
    }
    return Ok{};
}

void Engine::answer_booking(const std::shared_ptr<Upload>& upload, const ledger::Reply& reply) {
    if (!reply) {
        detail::log_storage_failure("ledger: " + reply.error().message);
        return finish(upload, unavailable_here(reply.error().code) ? ResponseCode::issuer_inoperative : ResponseCode::system_malfunction);
    }
    COCONUT_ASSERT(reply->size() == 1, "one result per event submitted");
    const ledger::ResultCode code = (*reply)[0].code;
    if (code == ledger::ResultCode::ok) {
        stats_.booked++;
        upload->booked_amount_fen = upload->amount_fen;
        return finish(upload, ResponseCode::approved);
    }
    // Booked by a racing upload of the same id: its answer when it is the same record, else 94.
    if (upload->raced && same_proven_record(*upload->raced, upload->proof)) {
        stats_.exists++;
        upload->booked_amount_fen = upload->raced->amount_fen;
        return finish(upload, ResponseCode::approved);
    }
    if (code == ledger::ResultCode::exists ||
        (code >= ledger::ResultCode::exists_with_different_flags && code <= ledger::ResultCode::exists_with_different_code)) {
        stats_.duplicates++;
        log_line(
            fmt::format("purchase id {} booked with another record: {}", ledger::to_string(upload->transfer_id), ledger::to_string(code)));
        return finish(upload, ResponseCode::duplicate_transmission);
    }
    log_line(fmt::format("transfer {}: {}", ledger::to_string(upload->transfer_id), ledger::to_string(code)));
    finish(upload, ResponseCode::system_malfunction);
}

}  // namespace coconut::clearing
