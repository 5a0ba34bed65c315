// The authorization engine (coconut::clearing_engine): turns ISO 8583 requests into ledger bookings —
// offline uploads, online loads, clinic holds, reversals, hotlist download, reconciliation
// (clearing/ISO8583.md §4) — with the registries (registry.hpp) and the HSM's services behind two
// interfaces, TacVerifier and CardServices (their adapters: hsm_adapters.hpp). The offline
// purchase's risk rules are pure functions (risk_rules.hpp). Above the registry, below the server.
//
// Threads (docs/DESIGN.md §8.1): the engine runs on the server's I/O thread; ONE ledger writer thread
// (ledger::Writer) commits bookings in groups. A booking's answer is produced by the writer's
// callback, i.e. only after its commit was synced: nothing is acknowledged before it is durable.
// Registry changes that belong to a booking (last seen ATC, shadow balance, risk flags, the terminal's
// last STAN) are written by a BatchHook in the same write transaction.
//
// Errors: bad input from a terminal is answered with a response code (iso8583::ResponseCode).
#pragma once

#include <coconut/clearing/lifecycle.hpp>
#include <coconut/clearing/registry.hpp>
#include <coconut/hsm/client.hpp>
#include <coconut/hsm/hsm.hpp>
#include <coconut/iso8583/iso8583.hpp>
#include <coconut/iso8583/profile.hpp>
#include <coconut/ledger/ledger.hpp>

#include <boost/asio/any_io_executor.hpp>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>

namespace coconut::clearing {

static_assert(tac_key_newest == hsm::newest_version, "a card record's default TAC key version is the HSM's newest");

// ---- TAC verification ------------------------------------------------------------------------------------

// Where purchase TACs are verified. The handler is called exactly once, on any thread.
class TacVerifier {
public:
    using Handler = std::function<void(hsm::Outcome<hsm::Verdict>)>;
    virtual ~TacVerifier() = default;
    virtual void verify(const hsm::PurchaseTac& transaction, Handler handler) = 0;
};

// The HSM's online card services (ISO8583.md §4.2–§4.4): load MAC1 → MAC2, load TAC, INTERNAL
// AUTHENTICATE. Requests name their keys; each handler is called exactly once, on any thread.
class CardServices {
public:
    using LoadHandler = std::function<void(hsm::Outcome<hsm::LoadAnswer>)>;
    using VerdictHandler = std::function<void(hsm::Outcome<hsm::Verdict>)>;
    virtual ~CardServices() = default;
    virtual void load_mac2(const hsm::LoadRequest& request, LoadHandler handler) = 0;
    virtual void verify_load_tac(const hsm::LoadTac& load, VerdictHandler handler) = 0;
    virtual void verify_internal_auth(const hsm::InternalAuth& auth, VerdictHandler handler) = 0;
};

// ---- authorization engine -------------------------------------------------------------------------------

// A booking this node could not commit because it cannot book at all now — the writer is stopping, or
// (a cluster node) the journal stream refused the commit and the node is stepping down — is answered 91
// (issuer inoperative): the terminal keeps the record and tries again, at its next clearing endpoint.
// Any other storage failure is 96.
inline bool unavailable_here(ledger::ErrorCode code) {
    return code == ledger::ErrorCode::stopped || code == ledger::ErrorCode::replication;
}

// Per-connection state the engine keeps (sign-on).
struct SessionState {
    std::set<std::string> signed_on;  // field 41 of terminals signed on over this connection
    // The terminal id of the connection's client certificate (TLS, set by the server before the first
    // request). When set, a request whose field 41 differs is answered 63 and nothing else happens.
    std::optional<std::string> authenticated_terminal_id;
};

// The waiting period after a card is reported lost, by default (EngineOptions::lost_wait_s): a week
// covers an offline terminal's uploads.
inline constexpr std::uint64_t lost_wait_s_default = 7 * 86'400;

struct EngineOptions {
    // Largest amount of one offline purchase: the card's own balance limit (docs/CARD-SPEC.md §2) is below.
    std::uint64_t purchase_amount_fen_max = 1'000'000;
    // Answer 03 to a 0320 from a terminal that has not signed on over this connection.
    bool require_sign_on = true;
    // Largest online load (0200): the purse maximum on the card (docs/CARD-SPEC.md §2: 100,000 fen) is the same;
    // above it 61.
    std::uint64_t load_amount_fen_max = 100'000;
    // Largest clinic authorization (0100); above it 61.
    std::uint64_t clinic_amount_fen_max = 10'000'000;
    // An approved load (0210 sent) waits this long for its 0220 confirmation or a reversal before the
    // ledger releases it. CREDIT FOR LOAD follows MAC2 within seconds; 5 minutes covers a terminal
    // that loses its link and retries its advice; a confirmation after that is still booked (late).
    std::uint32_t load_timeout_s = 300;
    // A clinic hold waits this long for its completion: the patient stands at the counter while the
    // clinic dispenses; 15 minutes, after which the medical money is free again (completion → 54).
    std::uint32_t hold_timeout_s = 900;
    // Key labels at the HSM (versions: DF0D for loads, the card registry's for TACs, newest for IAK).
    std::string load_key_label = std::string(hsm::default_load_label);
    std::string tac_key_label = std::string(hsm::default_tac_label);
    // The 0100's card-presence proof: only the PIN-protected social-security application's key.
    std::string internal_auth_key_label = std::string(hsm::default_ssse_auth_label);
    // Uploads with a failed TAC one terminal may send per day (UTC) before it is suspended: a genuine
    // terminal sends none (a damaged record now and then); a forger trying TACs is stopped early.
    std::uint32_t forged_tacs_per_day = 20;
    // A clinic challenge (0800 70 = 201) is valid this long: the card is at the counter (PIN entry
    // included), so a minute; a proof over an older one is refused.
    std::uint32_t challenge_ttl_s = 60;
    // Where an upload's answer is built after its commit (the terminals' I/O thread): the ledger
    // writer only hands the result over, so its thread spends itself on commits. Unset: on the
    // writer's thread.
    std::optional<boost::asio::any_io_executor> completion_executor;
    // The lost-card records (lifecycle.hpp): an upload of a lost card whose balance was carried to its
    // replacement is booked from lost late spending (transfer 12), not from its shadow. Unset: no
    // lifecycle (every upload debits the shadow).
    const Lifecycle* lifecycle = nullptr;
    // The waiting period after a card is reported lost (clearing/README.md "Card lifecycle"): "found" is
    // possible until it ends; a replaced card's balance is carried once it has (serve --lost-wait-days,
    // or --lost-wait-s for tests).
    std::uint64_t lost_wait_s = lost_wait_s_default;
};

struct EngineStats {
    std::atomic<std::uint64_t> requests{0};
    std::atomic<std::uint64_t> booked{0};             // new transfers committed
    std::atomic<std::uint64_t> exists{0};             // re-uploads answered from the ledger
    std::atomic<std::uint64_t> suspense{0};           // TAC invalid
    std::atomic<std::uint64_t> duplicates{0};         // 94
    std::atomic<std::uint64_t> refused{0};            // any other non-00 answer
    std::atomic<std::uint64_t> in_flight{0};          // requests handled but not yet answered
    std::atomic<std::uint64_t> loads_approved{0};     // 0210 00 with a new pending load
    std::atomic<std::uint64_t> loads_confirmed{0};    // 0220 posted (or booked late)
    std::atomic<std::uint64_t> holds_approved{0};     // 0110 00 / 10 with a new hold
    std::atomic<std::uint64_t> medical_inquiries{0};  // 0110 00 to a medical balance inquiry (313000)
    std::atomic<std::uint64_t> completions{0};        // 0220 posted a hold
    std::atomic<std::uint64_t> reversals{0};          // 0400 / 0420 that voided something
    std::atomic<std::uint64_t> loads_expired{0};      // released by the ledger's timeout (scan_expiries)
    std::atomic<std::uint64_t> holds_expired{0};
};

class Engine {
public:
    // Called exactly once per request, on the I/O thread, the writer thread or the HSM's thread.
    using Respond = std::function<void(iso8583::Message)>;

    // Without card services (offline uploads only): the online messages are answered 91.
    Engine(ledger::Ledger& ledger, ledger::Writer& writer, Registry& registry, TacVerifier& verifier, EngineOptions options = {});
    Engine(ledger::Ledger& ledger, ledger::Writer& writer, Registry& registry, TacVerifier& verifier, CardServices& card_services,
           EngineOptions options = {});

    // Handles one parsed request. `session` is only touched synchronously (on the calling thread).
    void handle(iso8583::Message request, SessionState& session, Respond respond);

    // Reads the ledger's journal since the last call (from the head at construction) and counts and
    // logs the loads and holds the ledger released by timeout. Call periodically from one thread (the
    // daemon: every second); returns how many expiries it found.
    Result<std::size_t> scan_expiries();

    const EngineStats& stats() const { return stats_; }
    const EngineOptions& options() const { return options_; }

    struct Upload;
    struct Online;

private:
    void sign_on(const iso8583::Message& request, SessionState& session, Respond respond);
    void offline_upload(iso8583::Message request, SessionState& session, Respond respond);
    void reconcile(const iso8583::Message& request, SessionState& session, Respond respond);
    void hotlist_download(const iso8583::Message& request, SessionState& session, Respond respond);
    void issue_challenge(const iso8583::Message& request, SessionState& session, Respond respond);
    // The terminal of a request is the connection's (TLS), registered, active, signed on: the code
    // refusing it, or nothing. `terminal` is read in `txn`.
    std::optional<iso8583::ResponseCode> refuse_terminal(const iso8583::Message& request, const SessionState& session,
                                                         const std::optional<TerminalRecord>& terminal) const;
    void judge_upload(std::shared_ptr<Upload> upload, const std::optional<PurchaseProof>& stored);
    void verify_tac(std::shared_ptr<Upload> upload);
    void review(std::shared_ptr<Upload> upload, RiskKind kind);
    lmdb::Status count_forged_tac(lmdb::Txn& txn, Upload& upload, std::vector<RiskFlag>& flags);
    void answer_stored(const std::shared_ptr<Upload>& upload, const PurchaseProof& stored);
    // Why `challenge` is not a valid one for this terminal and card now; nothing when it is (it may
    // still have been used: the caller checks the table and the holds in flight).
    std::optional<std::string> check_challenge(const iso8583::HostChallenge& challenge, std::string_view terminal_id, const Asn& asn) const;
    // Challenges of 0100s between their check and their hold's commit: one use at a time.
    bool claim_challenge(const iso8583::HostChallenge& challenge);
    void release_challenge(const iso8583::HostChallenge& challenge);
    void book(std::shared_ptr<Upload> upload);
    // book's registry work inside the booking's commit: the upload's transfer was booked (record it:
    // proof, card, risk flags, terminal) or refused (judge it by the record a racing upload stored).
    lmdb::Status record_booking(lmdb::Txn& txn, Upload& upload);
    lmdb::Status judge_raced_booking(lmdb::Txn& txn, Upload& upload);
    lmdb::Status count_late_spending(lmdb::Txn& txn, const Upload& upload);
    void finish(const std::shared_ptr<Upload>& upload, iso8583::ResponseCode code);
    void answer_booking(const std::shared_ptr<Upload>& upload, const ledger::Reply& reply);

    // online.cpp
    std::shared_ptr<Online> begin_online(const iso8583::Message& request, SessionState& session, Respond respond,
                                         iso8583::ProcessingCode processing_code);
    void online_load(const iso8583::Message& request, SessionState& session, Respond respond);
    void request_mac2(std::shared_ptr<Online> online, bool repeat);
    void load_confirmation(std::shared_ptr<Online> online);
    void post_load(std::shared_ptr<Online> online, bool tac_valid);
    void clinic_authorization(const iso8583::Message& request, SessionState& session, Respond respond);
    void prove_card_presence(std::shared_ptr<Online> online);
    coconut::Result<std::optional<std::uint64_t>, std::string> medical_available(const Asn& asn) const;
    void answer_medical_balance(std::shared_ptr<Online> online);
    void clinic_completion(std::shared_ptr<Online> online);
    void advice(const iso8583::Message& request, SessionState& session, Respond respond);
    void reversal(const iso8583::Message& request, SessionState& session, Respond respond);
    void reverse_load(std::shared_ptr<Online> online);
    void reverse_hold(std::shared_ptr<Online> online);
    void void_pending(std::shared_ptr<Online> online, BatchTotal total);
    void acknowledge_reversal(std::shared_ptr<Online> online, BatchTotal total);
    static lmdb::Status count_reversal(const Registry& registry, lmdb::Txn& txn, const Online& online, BatchTotal total);
    void approve_load(std::shared_ptr<Online> online, const hsm::LoadAnswer& answer);
    // refunds.cpp (ISO8583.md §4.10)
    void medical_refund(const iso8583::Message& request, SessionState& session, Respond respond);
    void book_medical_refund(std::shared_ptr<Online> online, const ledger::Transfer& hold, const ledger::Transfer& completion);
    // 0200 3 = 200000: the purchase DF13 names may be refunded by this credit; the code refusing it otherwise.
    std::optional<iso8583::ResponseCode> check_purchase_refund(Online& online);
    void cash_refund(std::shared_ptr<Online> online);
    bool claim_refund(const ledger::Id& purchase);
    void release_refund(const ledger::Id& purchase);
    // Whether the transfer booked at `timestamp_ns` was booked today (Hainan time) by the ledger's clock.
    bool booked_today(std::uint64_t timestamp_ns) const;
    // Whether the terminal's participant is of one of `kinds`; nullopt when the registry cannot be read.
    std::optional<bool> participant_is(const Online& online, std::initializer_list<std::string_view> kinds) const;
    void hold_medical(std::shared_ptr<Online> online);
    void submit(std::shared_ptr<Online> online, ledger::Transfer transfer, std::function<lmdb::Status(lmdb::Txn&, ledger::ResultCode)> hook,
                std::function<void(ledger::ResultCode)> done);
    void flag_only(std::shared_ptr<Online> online, RiskFlag flag, iso8583::ResponseCode code);
    void answer(const std::shared_ptr<Online>& online, iso8583::ResponseCode code);

    ledger::Ledger& ledger_;
    ledger::Writer& writer_;
    Registry& registry_;
    TacVerifier& verifier_;
    CardServices* card_services_ = nullptr;
    const EngineOptions options_;
    EngineStats stats_;
    std::uint64_t journal_next_sequence_ = 1;  // scan_expiries
    std::mutex challenges_mutex_;
    std::set<iso8583::HostChallenge> challenges_in_flight_;
    std::mutex claims_mutex_;
    std::set<ledger::Id> refunds_in_flight_;  // purchases between their refund's check and its answer
};

// Responses and field 60 as the ISO 8583 profile defines them (coconut/iso8583/profile.hpp).
using iso8583::batch_of;
using iso8583::make_response;
// The Place of a card transaction (user_data_128): card local time YYMMDDhhmm from DF07.
Place place_of(const TerminalId& terminal_id, std::uint8_t type, std::uint16_t line, std::uint16_t station,
               const crypto::CardDateTime& when);

}  // namespace coconut::clearing
