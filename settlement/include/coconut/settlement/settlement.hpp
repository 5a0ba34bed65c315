// Nightly settlement (coconut::settlement, docs/DESIGN.md §9): a clearing cycle per business date turns the
// day's cleared transfers into net positions per participant and per funding source, ISO 20022
// pain.001.001.09 credit-transfer files, CSV statements, a summary, the settlement transfers posted
// back into the ledger through its one writer, and reconciliation against the bank's camt.053/054.
// settlement/README.md describes the rules (cut-off, fee rounding, file names, exit codes); this
// header is the whole API.
//
// The cycle, step by step (state stored durably in OUT/<cycle>/cycle.json after each step):
//   open → computed → files_written → posted → reconciled
//   1. window: [start, end) in ledger time; end = the cut-off on the business date (local time UTC+8),
//      start = the previous cycle's end (or the cut-off of the day before). Late uploads (ledger
//      timestamp ≥ end) fall into the next cycle.
//   2. positions: the journal of the window, read in bounded chunks (never one long read
//      transaction); only POSTED money counts (single-phase transfers and post_pending; pending holds,
//      voids and expiries move nothing). All positions plus fees must sum to zero.
//   3. files: deterministic (same cycle → same bytes), atomic (coconut/core/durable_file.hpp), never
//      overwritten with different content.
//   4. posting: per participant a linked chain (fee, payout per ledger) with ids derived from cycle,
//      participant, ledger and kind: posting again answers `exists` and books nothing new.
//   5. reconciliation: camt.053.001.08 / camt.054.001.08, XSD-validated, matched by EndToEndId+amount.
//
// Errors: every expected failure is an Error whose code maps to one exit code of coconut-settle.
#pragma once

#include <coconut/clearing/directory_lock.hpp>
#include <coconut/clearing/plan.hpp>
#include <coconut/ledger/ledger.hpp>
#include <coconut/core/result.hpp>
#include <coconut/core/sha256.hpp>

#include <array>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace coconut::settlement {

// ---- errors ---------------------------------------------------------------------------------------

enum class ErrorCode : std::uint8_t {
    bad_input,     // a command-line value or the config file: the message names it
    too_early,     // the cycle's cut-off (plus the settling margin) has not passed yet: run later
    storage,       // the ledger or the output directory cannot be read / written
    conflict,      // existing files or cycle state differ from what this run computes
    unbalanced,    // positions do not sum to zero, or a transfer cannot be attributed: nothing proceeds
    posting,       // the daemon refused or could not be reached: retry (posting is idempotent)
    locked,        // direct posting while a daemon serves the ledger directory
    invalid_file,  // a camt file does not parse or is not valid against its XSD: nothing changed
    incomplete,    // reconciliation found missing / mismatched / duplicate entries
    wrong_state,   // the command needs a cycle in another state (e.g. reconcile before posting)
    untrusted,     // https://: the daemon's certificate was refused (--ca, the URL's host); nothing was sent
    behind,        // the ledger read (a standby's copy) did not reach the daemon's position in time: run later
    refused,       // the daemon refused the clerk token (unknown, revoked, or without the settlement role): nothing was written
};
std::string_view to_string(ErrorCode code);

struct Error {
    ErrorCode code = ErrorCode::bad_input;
    std::string message;
};

template <class T>
using Result = coconut::Result<T, Error>;
using Status = coconut::Status<Error>;

// ---- business dates, cut-off, cycles -----------------------------------------------------------------

// Hainan local time: UTC+8 all year (no daylight saving).
inline constexpr std::int64_t local_utc_offset_s = hainan_utc_offset.count();
// A cycle may run only this long after its cut-off: a transfer whose ledger timestamp was taken just
// before the cut-off may still be committing (the writer stamps at the start of its transaction).
inline constexpr std::chrono::seconds settling_margin{60};
inline constexpr std::uint32_t seconds_per_day = 24 * 3600;

using Date = std::chrono::year_month_day;
// "2026-11-26" → the date; nullopt when malformed or not a calendar date.
std::optional<Date> parse_date(std::string_view text);
std::string format_date(const Date& date);  // "2026-11-26"
// The cycle id: business date as YYYYMMDD (20261126); as BE u32 in user_data_128 bytes 0–3 of the
// settlement transfers (coconut/clearing/plan.hpp).
std::uint32_t cycle_id(const Date& date);
std::optional<Date> date_of_cycle(std::uint32_t id);
// "HH:MM" or "HH:MM:SS", 00:00:01 … 24:00 (24:00 = local midnight at the end of the business date) →
// seconds after local midnight. Formatted back as HH:MM when on a whole minute, else HH:MM:SS.
std::optional<std::uint32_t> parse_cutoff(std::string_view text);
std::string format_cutoff(std::uint32_t seconds);
// The cut-off instant of `date`, ns since the Unix epoch (UTC).
std::uint64_t cutoff_ns(const Date& date, std::uint32_t cutoff_seconds);

struct Window {
    std::uint64_t start_ns = 0;  // inclusive
    std::uint64_t end_ns = 0;    // exclusive: the cut-off
    friend bool operator==(const Window&, const Window&) = default;
};

enum class CycleState : std::uint8_t { open = 0, computed = 1, files_written = 2, posted = 3, reconciled = 4 };
std::string_view to_string(CycleState state);
std::optional<CycleState> parse_cycle_state(std::string_view text);

// The settlement's own configuration (a JSON file, format in settlement/README.md): who pays.
struct DebtorAccount {
    std::string name;       // Dbtr/Nm, ≤ 140 characters
    std::string account;    // DbtrAcct/Id/Othr/Id, ≤ 34 characters
    std::string agent_bic;  // DbtrAgt/FinInstnId/BICFI (8 or 11 characters)
};
struct Config {
    std::string initiator_name = "Coconut Card Clearing";  // GrpHdr/InitgPty/Nm
    DebtorAccount purse_float;                             // the issuing bank's account holding the cardholders' purse money
    DebtorAccount medical_fund;                            // the social-insurance agency's medical fund account
    std::uint32_t cutoff_seconds = seconds_per_day;        // seconds after local midnight; default 24:00
};
Result<Config> parse_config(std::string_view json_text);

// ---- positions ---------------------------------------------------------------------------------------

// What a participant's counted transfers were (coconut/clearing/plan.hpp transfer codes + participant kind).
enum class Kind : std::uint8_t {
    bus = 0,             // offline purchase (code 1) at a "bus" participant
    shop = 1,            // offline purchase at a "shop"
    clinic_purse = 2,    // offline purchase at a "clinic" (card purse)
    clinic_medical = 3,  // medical payment (code 5) posted to a clinic (ledger 2)
    load = 4,            // online load (code 4) taken at the participant's counter: cash it owes the float
    // Same-day refunds (ISO8583.md §4.10), paid from the participant's payable back to the card:
    refund_purse = 5,    // a purchase refunded by an online credit (code 22 posted): purse payable → purse shadow
    refund_medical = 6,  // a clinic's medical part refunded (code 21): medical payable → the card's medical account
};
inline constexpr std::size_t kinds_count = 7;
// The kinds before the refunds are listed in every statement; a refund kind only where it happened
// (a cycle without refunds keeps the files it always had).
inline constexpr bool is_refund(Kind kind) { return kind == Kind::refund_purse || kind == Kind::refund_medical; }
std::string_view to_string(Kind kind);

struct KindTotals {
    std::uint64_t count = 0;
    std::uint64_t gross_fen = 0;
    friend bool operator==(const KindTotals&, const KindTotals&) = default;
};

// Fee rule (README "Fees"): fee = round_half_up(base × rate_bp / 10,000), computed ONCE per participant
// and funding source on the cycle's total base (never per transaction). Base: purchases (purse) or
// medical payments (medical) less the same-day refunds of that ledger, never below 0; loads bear no fee.
std::uint64_t fee_fen(std::uint64_t base_fen, std::uint32_t rate_bp);

// Money per funding source (ledger) of one participant. Signed: + the participant receives.
struct SourceAmounts {
    std::uint64_t base_fen = 0;   // purchases (purse) / medical payments (medical)
    std::uint64_t loads_fen = 0;  // purse only
    std::uint64_t fee_fen = 0;    // on max(base − refunds, 0)
    // base − refunds − loads − fee + adjustments + counter: paid by the funding source when > 0, owed to it when < 0
    std::int64_t net_fen = 0;
    // Approved manual adjustments (code 10) to or from the participant's payable: + credited, − debited.
    std::int64_t adjustments_fen = 0;
    // Purse only: the participant's counter business with cards (codes 15, 17–19; settlement/README.md
    // "Refunds and deposits"): + deposits it paid back in cash, − deposits it collected, − returned balances
    // moved to a refund by bank, − return fees taken from a returned balance.
    std::int64_t counter_fen = 0;
    // Same-day refunds paid from the participant's payable back to cards (ISO8583.md §4.10; codes 22 purse, 21 medical).
    std::uint64_t refunds_fen = 0;
    friend bool operator==(const SourceAmounts&, const SourceAmounts&) = default;
};

struct ParticipantPosition {
    clearing::Participant participant;
    std::array<KindTotals, kinds_count> kinds{};
    SourceAmounts purse;
    SourceAmounts medical;
    std::int64_t net_fen() const { return purse.net_fen + medical.net_fen; }
};

struct FundingPositions {
    // loads received − purchases paid + purchase refunds (the refunded money is back on cards the float holds)
    std::int64_t purse_float_fen = 0;   // signed, + receives
    std::int64_t medical_fund_fen = 0;  // − medical payments + medical refunds (back on the cards' medical accounts)
    std::int64_t fee_income_purse_fen = 0;
    std::int64_t fee_income_medical_fen = 0;
    friend bool operator==(const FundingPositions&, const FundingPositions&) = default;
};

// A refund owed to a cardholder by bank: what the window credited to the card's refund_payable (codes 15,
// 18, 20). Settlement pays it from the purse float (transfer 16) to the cardholder's account.
struct RefundAccount {
    std::string bank_account;    // CdtrAcct/Id/Othr/Id, ≤ 34 characters
    std::string account_holder;  // Cdtr/Nm
};
struct Refund {
    Asn asn{};
    std::uint64_t amount_fen = 0;
    RefundAccount account;  // empty from compute_positions; run_cycle fills it from RunOptions::refund_accounts
};

struct Positions {
    std::uint32_t cycle = 0;
    Window window;
    std::uint64_t first_sequence = 0;  // journal range read: [first, last]; first > last when empty
    std::uint64_t last_sequence = 0;
    std::uint64_t entries_read = 0;
    std::uint64_t transfers_counted = 0;            // transfer entries read (classified or ignored)
    KindTotals suspense;                            // TAC-failed purchases (code 2): never paid out
    std::vector<ParticipantPosition> participants;  // with activity, by participant id
    FundingPositions funding;                       // fee_income_purse_fen includes the return fees (code 19)
    std::vector<Refund> refunds;                    // by ASN
    // Activity by the hour of the day (local time, 0–23) and kind, for the clerk's report (activity.json,
    // report.html): a card transaction at the hour the card recorded (its own clock, bytes 11–15 of
    // user_data_128), a medical payment, a medical refund or a load at the hour the clearing booked it. Not in summary.json.
    std::array<std::array<KindTotals, kinds_count>, 24> hours{};
    // Σ participant nets + funding sources + fee income; must be 0 (checked by compute_positions).
    std::int64_t balance_fen() const;
};

// Progress of a long step: units done of total (journal entries).
using Progress = std::function<void(std::uint64_t done, std::uint64_t total)>;

// Journal entries per read transaction: short-lived readers let LMDB reuse pages (docs/DESIGN.md §8.2);
// 4,096 entries (~0.7 MiB) take a few ms.
inline constexpr std::size_t journal_chunk_entries = 4096;
// Chunks between two releases of the map's resident pages (Ledger::release_resident_pages): ~12 MiB
// of journal. The kernel maps up to 16 neighbouring file pages per fault (fault-around) and the
// journal's pages lie between the other tables' pages, so residency grows up to 16 × what was read;
// releasing often keeps a cycle over any number of transfers far below 1 GiB of RSS.
inline constexpr std::size_t chunks_per_page_release = 16;

// The journal range of `window`: the first and last sequence whose timestamps fall in it (binary
// search, one short read per probe). first > last when no entry falls in it.
Result<std::pair<std::uint64_t, std::uint64_t>> journal_range(const ledger::Ledger& ledger, const Window& window);

// Reads the window's journal and computes every position. Fails with `unbalanced` when a counted
// transfer names no registered participant or the sum is not zero, `storage` on a ledger error.
Result<Positions> compute_positions(const ledger::Ledger& ledger, const std::vector<clearing::Participant>& participants,
                                    std::uint32_t cycle, const Window& window, const Progress& progress = {});

// ---- payments and postings ---------------------------------------------------------------------------

enum class Source : std::uint8_t { purse_float = 1, medical_fund = 2 };  // = the ledger number
std::string_view to_string(Source source);

// One credit transfer of a pain.001 file: a funding source pays a participant its positive net.
struct Payment {
    Source source = Source::purse_float;
    std::uint64_t participant_id = 0;  // 0 for a refund
    std::string card_number;           // a refund: the card's 16 digits (EndToEndId "CC<cycle>-R<card number>")
    std::string end_to_end_id;         // "CC20261126-1001-P" / "-M": derived from cycle, participant, source
    std::uint64_t amount_fen = 0;
};
std::string end_to_end_id(std::uint32_t cycle, std::uint64_t participant_id, Source source);
std::string refund_end_to_end_id(std::uint32_t cycle, const Asn& asn);
// Participants' payments, then the refunds (purse float).
std::vector<Payment> payments(const Positions& positions);

// The settlement transfers of the cycle (docs/DESIGN.md §9.2), per participant a linked chain in this order:
// purse fee, purse payout, medical fee, medical payout (those with an amount). Payout = payable →
// float/fund of base − refunds − fee + adjustments + counter when positive (what the payable holds for the
// cycle, net of the fee); fee = payable → fee income. Ids: derive_id("settlement" ‖ cycle BE4 ‖ participant BE8 ‖ ledger BE4 ‖ code BE2).
// Then one refund payout per refund (code 16, refund_payable → float, not linked): id
// clearing::refund_payout_transfer(cycle, ASN), user_data_128 clearing::card_user_data(ASN, cycle).
std::vector<ledger::Transfer> settlement_transfers(const Positions& positions);
ledger::Id settlement_transfer_id(std::uint32_t cycle, std::uint64_t participant_id, std::uint32_t ledger_number, std::uint16_t code);

// Transfers per posting request: the daemon takes ≤ 1000 per POST /v1/clerk/transfers
// (clearing/README.md "Settlement postings"). Chains never span requests.
inline constexpr std::size_t post_request_transfers_max = 1000;

struct PostOutcome {
    std::uint64_t created = 0;
    std::uint64_t existed = 0;
};

// The cycle a posting belongs to. The daemon recomputes the positions of exactly this window and
// accepts only the transfers settlement_transfers() derives from them (clearing/README.md "Settlement
// postings"); windows of successive cycles must join end to start.
struct CycleWindow {
    std::uint32_t cycle = 0;
    Window window;
};

// Where settlement transfers go. Both implementations apply each request in one write transaction
// through the ledger's rules; the answer per transfer is ok / exists / a ResultCode name.
class Poster {
public:
    virtual ~Poster() = default;
    // Applies `transfers` (≤ post_request_transfers_max, whole chains of `cycle`) in order; returns one
    // result name per transfer ("ok", "exists", or ledger::to_string(ResultCode)).
    virtual Result<std::vector<std::string>> post(const CycleWindow& cycle, const std::vector<ledger::Transfer>& transfers) = 0;
};

// Through the daemon: POST /v1/clerk/transfers with a settlement-role clerk token, the request naming
// the cycle and its window (clearing/README.md "Settlement postings").
// `endpoint` is "https://HOST:PORT": TLS 1.2 at least, the daemon's certificate verified against
// `ca_file` (required) and the URL's host before the token is sent (settlement/README.md "Posting over
// HTTPS"); or "http://HOST:PORT", where the token travels in clear (a daemon on loopback only).
Result<std::unique_ptr<Poster>> make_http_poster(std::string_view endpoint, std::string token, const std::filesystem::path& ca_file = {});

// Settling from a standby's ledger while posting through the primary (settlement/README.md "Settling
// on a standby"): reads the position the daemon at `endpoint` holds now (GET /v1/clerk/cluster/position,
// a settlement-role token) and waits until `ledger` holds at least that position, re-reading it every
// 100 ms, at most `bound`. Every booking committed on the daemon before this call is then in `ledger`.
// A ledger that is the daemon's own, or of a single node (position 0 on both), passes at once.
// Errors: `behind` (not reached within `bound`), `posting` / `untrusted` (the daemon), `storage`.
struct CaughtUp {
    std::uint64_t daemon_position = 0;
    std::uint64_t ledger_position = 0;
    std::chrono::milliseconds waited{0};
};
// Asks the daemon at `endpoint` whose the token is (GET /v1/clerk/me) before anything is computed or
// written: `refused` when it is unknown or revoked (401) or its clerk lacks the settlement role, which no
// retry fixes; `posting` when the daemon cannot be reached (the run may still write its files and post
// later); `untrusted` for a refused certificate.
Status check_settlement_token(std::string_view endpoint, const std::string& token, const std::filesystem::path& ca_file = {});

Result<CaughtUp> wait_for_daemon_position(const ledger::Ledger& ledger, std::string_view endpoint, const std::string& token,
                                          const std::filesystem::path& ca_file, std::chrono::seconds bound);

// Directly into a ledger opened read-write by this process: allowed only when no daemon serves the
// directory, proven by holding the daemon's flock on DIR/clearingd.lock for the poster's lifetime.
// The lock is the daemon's own (coconut/clearing/directory_lock.hpp); this fails with `locked` when a
// running coconut-clearingd holds it, `storage` when the lock file cannot be opened.
Result<clearing::DirectoryLock> lock_for_direct_posting(const std::filesystem::path& directory);
std::unique_ptr<Poster> make_direct_poster(ledger::Ledger& ledger);

// Posts every transfer (chunked by whole chains); fails with `posting` naming the first transfer
// that was neither ok nor exists.
Result<PostOutcome> post_all(Poster& poster, const CycleWindow& cycle, const std::vector<ledger::Transfer>& transfers);

// ---- files ---------------------------------------------------------------------------------------------

struct File {
    std::string name;      // relative to the cycle directory
    std::string contents;  // exact bytes
};

// Every file of the cycle, deterministic: pain.001 per debtor account that pays anything
// (pain001-<cycle>-purse-float.xml, pain001-<cycle>-medical-fund.xml), participant-<id>.csv per
// participant with activity, summary.txt, summary.json.
std::vector<File> render_files(const Positions& positions, const Config& config);
std::string render_summary_text(const Positions& positions);

// XSD validation with libxml2. `schemas_dir` holds pain.001.001.09.xsd, camt.053.001.08.xsd,
// camt.054.001.08.xsd (settlement/schemas, copied from the shared ISO 20022 set).
std::filesystem::path default_schemas_dir();
// Empty when `xml` is valid against `schema_file`; otherwise the first errors (line: message).
std::string validate_xml(std::string_view xml, const std::filesystem::path& schema_file);
// Why `xml` is refused before any parser sees it, or nothing: a document type declaration (ISO 20022
// files never carry one; its entities would be expanded by the parser before any schema check — a few KB
// of nested entities cost minutes of CPU and gigabytes), or a document that is not UTF-8 (a UTF-16 one
// would hide its prolog from this check). Every XML input (camt.053/054, validate_xml) passes here first.
std::optional<std::string> xml_input_refusal(std::string_view xml);

// Writes each file atomically unless it already holds exactly these bytes; a file that exists with
// other content is a `conflict` and nothing more is written.
Status write_files(const std::filesystem::path& cycle_dir, const std::vector<File>& files);

// ---- cycle state -----------------------------------------------------------------------------------------

struct ReconciliationReport {
    std::vector<std::string> matched;  // EndToEndIds
    std::vector<std::string> missing;  // expected, not in any file
    struct Mismatch {
        std::string end_to_end_id;
        std::uint64_t expected_fen = 0;
        std::uint64_t booked_fen = 0;
    };
    std::vector<Mismatch> mismatched;
    std::vector<std::string> duplicates;  // booked more than once (a double payment)
    std::vector<std::string> unknown;     // entries whose EndToEndId this cycle did not send
    bool complete() const { return missing.empty() && mismatched.empty() && duplicates.empty(); }
};

struct CycleRecord {
    std::uint32_t cycle = 0;
    CycleState state = CycleState::open;
    Window window;
    std::uint32_t cutoff_seconds = seconds_per_day;
    std::uint64_t first_sequence = 0;
    std::uint64_t last_sequence = 0;
    std::string positions_sha256;                        // of summary.json: a re-run must compute the same
    std::map<std::string, std::string> files;            // name → SHA-256 hex
    std::uint64_t transfers_posted = 0;                  // created + existed when posted
    std::optional<ReconciliationReport> reconciliation;  // the last one
};

// OUT/<cycle>/: the cycle's files and its state (cycle.json).
std::filesystem::path cycle_directory(const std::filesystem::path& out, std::uint32_t cycle);
Result<std::optional<CycleRecord>> load_cycle(const std::filesystem::path& out, std::uint32_t cycle);
Status save_cycle(const std::filesystem::path& out, const CycleRecord& record);
// Every cycle under OUT, by cycle id.
Result<std::vector<CycleRecord>> list_cycles(const std::filesystem::path& out);

// The window of `date`: ends at its cut-off; starts where the previous stored cycle ended (else at
// the previous day's cut-off). Fails with `conflict` when the next stored cycle does not start at
// this end (its cut-off was chosen differently), `bad_input` for an empty window.
Result<Window> cycle_window(const std::filesystem::path& out, const Date& date, std::uint32_t cutoff_seconds);

// ---- the run -------------------------------------------------------------------------------------------

struct RunOptions {
    Date date;
    Config config;
    std::filesystem::path out;
    std::filesystem::path schemas_dir = default_schemas_dir();
    bool dry_run = false;      // compute and render only; write and post nothing
    std::uint64_t now_ns = 0;  // wall clock (0: the real clock); the cut-off must be past
    // How long after the cut-off the cycle may run (default settling_margin). Shorter only when every
    // terminal has finished uploading and nothing can still be committing (e.g. the demo's island).
    std::chrono::seconds margin = settling_margin;
    Progress progress;
    // The cardholders' bank accounts of the refunds owed by bank (the clearing's `returns` table): a refund
    // without one stops the run (bad_input) before anything is written.
    std::map<Asn, RefundAccount> refund_accounts;
    // Test hook: called with the state just reached (after it was saved), e.g. to kill the process.
    std::function<void(CycleState)> after_step;
};

struct RunReport {
    CycleRecord record;
    Positions positions;
    std::vector<File> files;
    PostOutcome posting;
    bool resumed = false;  // the cycle existed before this run
};

// The whole cycle, resumable at any point (a crash between steps is repaired by running again):
// recompute the positions (and compare with the stored digest), write/verify the files, post (ids
// make it idempotent), save the state after each step. `poster` may be null only for dry runs.
Result<RunReport> run_cycle(const ledger::Ledger& ledger, const std::vector<clearing::Participant>& participants, Poster* poster,
                            const RunOptions& options);

// Reconciles a posted cycle against camt.053 / camt.054 files (all validated before anything is
// matched; an invalid file changes nothing). A complete match moves the cycle to `reconciled`.
Result<ReconciliationReport> reconcile(const std::filesystem::path& out, std::uint32_t cycle,
                                       const std::vector<std::filesystem::path>& camt_files,
                                       const std::filesystem::path& schemas_dir = default_schemas_dir());

// The clerk's report (settlement/README.md "The report"): OUT/<cycle>/report.html, rendered from the
// cycle's summary.json, activity.json and cycle.json and the summaries of up to 6 cycles before it.
// wrong_state before the cycle's files exist. `run` writes it after each step from files_written on,
// `reconcile` after matching; it is a view, replaced each time, never one of the verified files.
Result<std::string> render_report_html(const std::filesystem::path& out, std::uint32_t cycle);
Status write_report_html(const std::filesystem::path& out, std::uint32_t cycle);
// activity.json: Positions::hours by kind.
std::string render_activity_json(const Positions& positions);

// Helpers shared by the CLI and tests.
std::string format_fen(std::int64_t fen);   // 12345 → "123.45", -5 → "-0.05"
std::string format_cny(std::int64_t fen);   // 123456789 → "1,234,567.89", -5 → "-0.05"
std::string format_count(std::uint64_t n);  // 1234567 → "1,234,567"
// Columns `utf8` takes in a terminal or a monospaced printout: 2 for East Asian wide characters (汉字).
std::size_t display_width(std::string_view utf8);
using coconut::sha256_hex;  // lower-case hex of SHA-256 (coconut/core/sha256.hpp)

}  // namespace coconut::settlement
