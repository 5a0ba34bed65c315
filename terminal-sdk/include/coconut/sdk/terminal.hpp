/// @file
/// Terminal flows: what a shop POS and a bus validator do with a card reader, a PSAM reader, the
/// store-and-forward queue and the hotlist.
///
///   purchase(amount)    shop, EP purchase (06): hotlist → INIT → PSAM 80 70 → intent → DEBIT → 80 72 → record
///   transit_tap(tap)    bus, CAPP purchase (09) with the EF1A bus record: flat fare, or entry/exit by the
///                       fare table; a repeated tap inside the window is not charged; an entry older than
///                       the journey limit is charged the line's maximum fare at the next tap
///   recover()           a card that left mid-debit is back: GET TRANSACTION PROVE (and the card's log)
///                       decide whether the debit happened; it is recorded exactly once or dropped
///   load(amount, host)  online load: INIT FOR LOAD → intent → 0200 (MAC1) → 0210 (MAC2) → CREDIT FOR LOAD
///                       → confirmation (0220 with the card's TAC, queued until acknowledged); with
///                       LoadFunding::carried the same flow with processing code 280000: the balance carried
///                       from a replaced card, funded by the card's carried holding (ISO8583.md §4.2a)
///   clinic_payment(…)   SSSE + PIN + INTERNAL AUTHENTICATE over the host's challenge → intent → 0100 hold
///                       on the medical account (00 full, 10 partial, 51 none) → purse purchase for the
///                       remainder (queued for 0320) → 0220 completion of the medical part; the outcome carries
///                       the refund reference the receipt keeps
///   clinic_refund(…)    the same day, the whole payment back (clinic_refund.hpp): the purse part as an online
///                       credit to the card (the load's flow with 200000 and DF13) or in cash (0220), then the
///                       medical part (0200 200030), and the cash part handed back
///
/// Online loads are never lost and never credited twice: the intent is durable before the 0200 goes out.
/// No 0210, a MAC2 the card refuses, or a card gone before CREDIT → a 0420 reversal advice, durable in
/// the queue and repeated until acknowledged. A card that left while CREDIT was in flight keeps the intent
/// open; when it is presented again (any flow, or recover()), its online ATC proof and log decide:
/// credited → confirmation (0220), not credited → reversal (0420). An open clinic hold intent found the
/// same way (the terminal stopped between 0100 and the completion) is reversed.
///
/// Never a lost charge: the intent is durable before DEBIT is sent, so a crash or a pulled card leaves a
/// trace that recover() resolves. Never a double charge: a debit's outcome is resolved before that card
/// is debited again on this terminal.
#pragma once

#include <coconut/sdk/apps.hpp>
#include <coconut/sdk/clinic_refund.hpp>
#include <coconut/sdk/fares.hpp>
#include <coconut/sdk/hotlist.hpp>
#include <coconut/sdk/maintenance.hpp>
#include <coconut/sdk/queue.hpp>

#include <chrono>
#include <functional>
#include <optional>
#include <map>

namespace coconut::sdk {

class ClearingClient;

/// What Terminal::transit_tap did: the result, the fare, the balance after, the record.
struct TapOutcome {
    TapResult result = TapResult::entered;
    std::uint32_t fare_fen = 0;
    std::uint32_t balance_after_fen = 0;
    std::optional<TransactionRecord> record;  ///< absent for repeat_no_charge
};

enum class FlowErrorCode : std::uint8_t {
    card_removed,  ///< the card left; if a debit may have run, an intent awaits recover()
    no_card,
    card_error,  ///< the card refused a command (sw set)
    psam_error,
    insufficient_balance,  ///< 9401
    blocked_card,          ///< on the hotlist (block_reason set); the card was not debited
    expired_card,
    unknown_line,
    queue_full,     ///< the terminal stops taking payments until it uploads
    storage_error,  ///< the queue could not write
    declined,       ///< the clearing refused (response_code set); the card was not credited / debited
    no_answer,      ///< the clearing did not answer in time: a reversal advice is queued
    wrong_pin,      ///< VERIFY refused (sw 63Cx: tries left; 6983: blocked)
    hsm_error,      ///< the HSM did not give the maintenance MAC (APPLICATION BLOCK): the card was not blocked
    pin_cancelled,  ///< the PIN entry gave no PIN (the holder cancelled at the PIN pad): nothing was held or debited
    card_full,      ///< a refund credit the card cannot take (6985: above the purse maximum): refund the purse part in cash
    wrong_card,     ///< the card in the reader is not the one the refunded payment was made with: nothing was sent
};
std::string_view to_string(FlowErrorCode code);

/// Why a Terminal flow failed; `sw`, `block_reason`, `response_code` and `reversed` say more when set.
struct FlowError {
    FlowError(FlowErrorCode c, std::string m, std::uint16_t status = 0, std::optional<BlockReason> reason = {})
        : code(c), message(std::move(m)), sw(status), block_reason(reason) {}
    FlowErrorCode code;
    std::string message;
    std::uint16_t sw = 0;
    std::optional<BlockReason> block_reason;
    std::string response_code;  ///< declined: field 39 of the clearing's answer
    bool reversed =
        false;  ///< the flow reversed what the host may have booked: 0400 answered, or a 0420 advice queued (sent, or left for upload)
};

/// What Terminal::recover (or the recovery at the start of a flow) resolved.
struct RecoveryOutcome {
    std::vector<TransactionRecord> recorded;   ///< debits (and loads) that happened, now in the queue
    std::vector<TransactionRecord> abandoned;  ///< debits the card proved never happened
    std::vector<TransactionRecord> reversed;   ///< loads the card proved never credited, clinic holds left open: 0420 queued
};

/// What funds an online load: cash at the terminal (210000, the float) or the balance carried from the
/// card this one replaced (280000, the card's carried holding; the clearing answers 51 when the holding
/// holds less than the amount — nothing was carried, it is still waiting, or it was collected already).
enum class LoadFunding : std::uint8_t { cash, carried };

/// The result of Terminal::load.
struct LoadOutcome {
    TransactionRecord record;       ///< the load (type 02) with the card's TAC, link load_confirmation
    std::string confirmation_code;  ///< the 0230's response code; empty: no answer (the 0220 stays queued)
    bool confirmed = false;         ///< acknowledged by the clearing (deleted from the queue)
};

/// The result of Terminal::clinic_payment: the bill, split between the medical account and the purse.
struct ClinicOutcome {
    std::uint32_t amount_fen = 0;                   ///< the bill
    std::uint32_t medical_fen = 0;                  ///< paid from the medical account (the hold, completed)
    std::uint32_t purse_fen = 0;                    ///< paid from the purse (the remainder, up to the card's balance)
    std::uint32_t cash_fen = 0;                     ///< to take in cash at the counter: what neither account covered
    std::string authorization_code;                 ///< 0110 response: 00, 10 (partial) or 51 (nothing from the medical account)
    std::string completion_code;                    ///< 0230 response; empty: no answer yet (the 0220 stays queued)
    std::optional<TransactionRecord> purse_record;  ///< the remainder purchase, queued for 0320
    /// The purse part sent at once (ClinicOptions::send_purse_now): the upload's error when the link failed
    /// (the purchase then stays queued for the next upload); empty when it went or was not sent.
    std::string purse_upload_error;
    bool purse_uploaded = false;
    /// What the receipt keeps for a same-day refund (Terminal::clinic_refund): the card, the hold's 0100
    /// (field 41, batch, STAN; none when nothing was held) with the completed amount, the purse part's
    /// purchase (DF06 ‖ DF05) with its amount, and the cash part.
    ClinicRefundReference refund_reference;
};

/// The result of Terminal::clinic_refund, part by part (clinic_refund.hpp).
struct ClinicRefundOutcome {
    std::uint32_t medical_fen = 0;  ///< back on the medical account (0210 00)
    std::string medical_code;       ///< the 0210's response code; empty: no medical part sent
    PurseRefund purse = PurseRefund::card;
    std::uint32_t purse_fen = 0;  ///< the purse part refunded: credited to the card, or to hand out in cash
    /// PurseRefund::card: the credit (type 02, 200000) with the card's TAC; link load_confirmation, refund set.
    std::optional<LoadOutcome> credit;
    std::string cash_refund_code;  ///< PurseRefund::cash: the 0230's response code (00)
    std::uint32_t cash_fen = 0;    ///< to hand back in cash: the payment's cash part and a purse part refunded in cash
    /// The purse part was refunded, then the medical part failed (its error): the refund is partial. Run it
    /// again with ClinicRefundRequest::skip_purse for the medical part alone.
    std::optional<FlowError> incomplete;
};

/// Asked for the holder's PIN when the medical account is to be used, after the card was read: a PIN pad,
/// or a prompt without echo. nullopt: the holder cancelled (FlowErrorCode::pin_cancelled). Never a
/// command-line argument (it would show in `ps` and the shell's history).
using PinEntry = std::function<std::optional<std::string>()>;

/// How Terminal::clinic_payment asks for the PIN and what it does with what the accounts do not cover.
struct ClinicOptions {
    PinEntry pin;
    /// What neither the medical account nor the purse covers is taken in cash (ClinicOutcome::cash_fen)
    /// instead of refusing the bill. false: the purse must cover the rest (insufficient_balance otherwise).
    bool cash_for_the_rest = true;
    /// Upload the purse part (0320) right after the payment while the clearing is reachable, instead of
    /// leaving it for the next batch upload.
    bool send_purse_now = true;
};

/// A card handed back at a counter (Terminal::return_card).
struct ReturnOutcome {
    PurseInfo card;
    std::uint32_t balance_fen = 0;             ///< GET BALANCE before the debit: the card's claim (0 when already blocked)
    std::optional<TransactionRecord> debit;    ///< the whole-balance purchase (TAC-proven, queued for 0320); none at balance 0
    std::vector<TransactionRecord> recovered;  ///< an earlier run's debit resolved from the card's proof, now queued
    bool was_blocked = false;                  ///< SELECT already answered 6283: nothing could be read or taken
};

/// APPLICATION BLOCK of the purse in the reader (maintenance.hpp): SELECT (6283 accepted), GET CHALLENGE,
/// the HSM's MAC, 84 1E. Errors: no_card / card_removed, hsm_error (the provider failed), card_error with
/// the status word (6988: the card refused the MAC).
Result<BlockOutcome, FlowError> block_application(Reader& reader, const MaintenanceMacProvider& hsm_mac, bool permanent);
/// APPLICATION UNBLOCK the same way (header 84 18 00 00 04): lifts a temporary block (and the MAC-failure
/// lock). A permanently blocked card answers 9303: card_error with that status word. `was_blocked` tells
/// whether SELECT answered 6283 before.
Result<BlockOutcome, FlowError> unblock_application(Reader& reader, const MaintenanceMacProvider& hsm_mac);

using Clock = std::function<std::chrono::system_clock::time_point()>;

/// The terminal flows over a card reader and a PSAM reader, the queue and the hotlist (see the file comment).
class Terminal {
public:
    Terminal(Reader& card_reader, Reader& psam_reader, TransactionQueue& queue, Hotlist& hotlist, TransitConfig transit = {});

    Result<TransactionRecord, FlowError> purchase(std::uint32_t amount_fen);
    Result<TapOutcome, FlowError> transit_tap(const TapRequest& tap);
    Result<RecoveryOutcome, FlowError> recover();
    Result<LoadOutcome, FlowError> load(std::uint32_t amount_fen, ClearingClient& host, LoadFunding funding = LoadFunding::cash);
    /// The medical account first (the hold, with the PIN from `options.pin`), the purse for the rest up to its
    /// balance, cash for what is left (ClinicOptions), the completion (0220) and the purse part sent at once.
    Result<ClinicOutcome, FlowError> clinic_payment(std::uint32_t amount_fen, const ClinicOptions& options, ClearingClient& host);
    /// Before billing: what the card's medical account can pay now (0100 balance inquiry, ISO8583.md §4.4a),
    /// asked only with the holder's PIN and the social-security application's proof, like a hold. Nothing
    /// is held or queued. Errors: pin_cancelled, wrong_pin, declined (response code), no_answer.
    Result<std::uint64_t, FlowError> medical_balance(const PinEntry& pin, ClearingClient& host);
    /// The same with a PIN already entered (the purse must cover the rest; nothing is sent at once).
    Result<ClinicOutcome, FlowError> clinic_payment(std::uint32_t amount_fen, std::string_view pin, ClearingClient& host);
    /// The same-day refund of a completed clinic payment named by its receipt's reference (clinic_refund.hpp):
    /// the queue is uploaded first (the purchase and the completion must be booked), then the purse part —
    /// to the card in the reader (it must be the payment's card: wrong_card; one that cannot take the amount:
    /// card_full, refund it in cash) or in cash — then the medical part. Refusals (declined, response_code set):
    /// 25 payment not found (or not completed, not this card's, not this clinic's), 13 amount differs, 12 not
    /// booked today, 94 refunded already, 58 this terminal may not refund; a card lost (41) or blocked (62):
    /// blocked_card. No answer: the credit is reversed as a load's; the cash refund and the medical refund are
    /// repeated, then no_answer (nothing handed out). A failure of the medical part after the purse part was
    /// refunded is ClinicRefundOutcome::incomplete. Errors before anything was refunded: those of Terminal::load
    /// (the credit) and no_answer when the queue cannot be uploaded first. The reference must be one
    /// refund_reference_problem finds nothing wrong with (asserted).
    Result<ClinicRefundOutcome, FlowError> clinic_refund(const ClinicRefundRequest& request, ClearingClient& host);
    Result<std::uint32_t, FlowError> balance();
    /// The card in the reader (its FCI: ASN, dates) and its balance — what a counter checks before it
    /// takes a returned card's balance.
    Result<std::pair<PurseInfo, std::uint32_t>, FlowError> card_balance();
    Result<Cardholder, FlowError> cardholder();
    /// Counter: recover this card's interrupted debits, GET BALANCE (a claim), a purchase (06) of the whole
    /// balance by this terminal's PSAM (the TAC proves it; queued like any purchase), then a permanent
    /// APPLICATION BLOCK with the HSM's MAC. Run again after a pulled card: the debit is not repeated (the
    /// card's balance is 0 then, or recover() finds it) and the block is finished. A card on the hotlist is
    /// refused (blocked_card) before anything is taken; an expired card is not (its balance is the holder's).
    Result<ReturnOutcome, FlowError> return_card(const MaintenanceMacProvider& hsm_mac);

    void set_clock(Clock clock) { clock_ = std::move(clock); }
    void set_trace(std::function<void(const TraceEntry&)> trace);
    TransitConfig& transit() { return transit_; }

private:
    struct Session;  ///< a connected card with its purse selected
    Result<Session, FlowError> open_card();
    Result<TerminalId, FlowError> open_psam();
    Result<RecoveryOutcome, FlowError> recover_card(const PurseInfo& info);
    /// Resolves an open load intent from the card's online ATC proof / log.
    Result<Ok, FlowError> recover_load(const QueuedTransaction& intent, RecoveryOutcome& outcome);
    /// Replaces an open online intent with its reversal advice (one durable write); sends it when `host` is
    /// given (it stays queued for upload otherwise).
    Result<TransactionRecord, FlowError> queue_reversal(const QueuedTransaction& intent, LinkKind reversal, ClearingClient* host);
    /// The online load's flow on the card in session `info` (INITIALIZE FOR LOAD → intent → 0200 → 0210 →
    /// credit_load): 210000 / 280000 by `funding`, or 200000 naming the purchase `refund_of` refunds.
    Result<LoadOutcome, FlowError> credit_online(const PurseInfo& info, std::uint32_t amount_fen, ClearingClient& host, LoadFunding funding,
                                                 const std::optional<iso8583::PurchaseReference>& refund_of);
    /// The purse part of a clinic refund to the card in the reader (the payment's card).
    Result<LoadOutcome, FlowError> refund_to_card(const ClinicRefundReference& reference, ClearingClient& host);
    /// After the 0210 approved the load `intent`: CREDIT FOR LOAD with its MAC2, then the confirmation
    /// (0220, queued until acknowledged); a card gone or refusing MAC2 reverses the load.
    Result<LoadOutcome, FlowError> credit_load(const QueuedTransaction& intent, const crypto::Mac4& mac2, ClearingClient& host);
    /// A clinic hold that will not be completed: 0400 online, else a queued 0420.
    Result<Ok, FlowError> reverse_hold(const QueuedTransaction& intent, std::uint32_t held_fen, ClearingClient& host);
    // The PIN, VERIFY, the medical link, a STAN, the host's challenge and the card's answer over the draft
    // of an 0100 for `amount_fen` (0: an inquiry).
    struct MedicalProof {
        TransactionRecord draft;
        iso8583::HostChallenge challenge;
        std::array<std::uint8_t, 8> cryptogram{};
    };
    Result<MedicalProof, FlowError> prove_medical(const PurseInfo& info, std::uint32_t amount_fen, const PinEntry& pin,
                                                  ClearingClient& host);
    Result<ClinicOutcome, FlowError> medical_part(const PurseInfo& info, std::uint32_t amount_fen, const PinEntry& pin,
                                                  ClearingClient& host, QueuedTransaction& hold);
    /// The purse's share of `outcome` (its purse_fen, capped at the card's balance when the rest may go to
    /// cash), debited; on failure the medical hold is reversed.
    Result<Ok, FlowError> purse_part(const PurseInfo& info, const ClinicOptions& options, ClearingClient& host,
                                     const QueuedTransaction& hold, ClinicOutcome& outcome);
    /// INIT → 80 70 → [80 DC …] → intent → DEBIT → 80 72 → record.
    Result<TransactionRecord, FlowError> debit(const PurseInfo& info, TransactionRecord draft,
                                               const std::vector<std::pair<std::uint8_t, Bytes>>& capp_updates);

    Reader& card_reader_;
    Reader& psam_reader_;
    CardChannel card_channel_;
    CardChannel psam_channel_;
    TransactionQueue& queue_;
    Hotlist& hotlist_;
    TransitConfig transit_;
    Clock clock_ = [] { return std::chrono::system_clock::now(); };
    std::optional<TerminalId> terminal_id_;
};

}  // namespace coconut::sdk
