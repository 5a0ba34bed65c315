// The clearing daemon's HTTP side (coconut::clearing::http): the cardholder query API, the clerk API,
// /metrics, /healthz, the OpenAPI document and the balance page, served by coconut-clearingd on its own
// port (`--http-listen HOST:PORT`, optional TLS). clearing/README.md "HTTP API" describes the endpoints;
// clearing/openapi.json is the contract.
//
// Tokens (docs/DESIGN.md §8.7): every card has its own bearer token and every clerk one token
// with roles. A token is 24 random bytes shown once (base64url, prefixed "card_" / "clerk_"); what is
// stored is its keyed BLAKE2b hash (crypto_generichash) under a 32-byte key kept in
// DATA/http-token.key (mode 0600). Neither the key nor a hash is ever served, so a token cannot be
// read back from the daemon, its files or its answers.
//
// Threads: reads (balances, transactions, lookups) open their own LMDB read transaction on the HTTP
// thread and never wait for the ledger writer; a cardholder query does all its reads (token, card,
// accounts, history, participants) in ONE read transaction. The HTTP thread runs below the ledger
// writer (ThreadPriority, --http-priority). Every change (token issue, hotlist, registrations,
// settlement postings, the clerk journal) goes through the daemon's one ledger::Writer as a request
// whose BatchHook writes the tables below in the commit's transaction; the HTTP answer is sent from the
// writer's callback, i.e. after the commit is durable.
#pragma once

#include <coconut/clearing/lifecycle.hpp>
#include <coconut/clearing/card_returns.hpp>
#include <coconut/clearing/server.hpp>
#include <coconut/core/metrics.hpp>

#include <boost/asio/io_context.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace coconut::clearing::http {

// ---- card numbers ----------------------------------------------------------------------------------

// The logical card number: the ASN's rightmost 8 bytes, 16 digits (docs/DESIGN.md §4.2, ISO8583.md field 2).
using CardNumber = std::array<std::uint8_t, 8>;
CardNumber card_number_of(const Asn& asn);
std::optional<CardNumber> parse_card_number(std::string_view digits);  // exactly 16 digits
std::string to_string(const CardNumber& number);

// Ids as the HTTP API and the clerk tables write them: 32 hex digits of the u128 big-endian, lower case;
// read in either case. nullopt for anything else.
std::string id_hex(const ledger::Id& id);
std::optional<ledger::Id> parse_id_hex(std::string_view text);

// ---- tokens, clerks, the clerk journal ----------------------------------------------------------------

inline constexpr std::size_t token_random_bytes = 24;  // 192 bits: guessing is hopeless, rate limit or not
inline constexpr std::size_t token_chars_max = 64;     // longer Authorization values are refused unhashed
inline constexpr std::string_view card_token_prefix = "card_";
inline constexpr std::string_view clerk_token_prefix = "clerk_";
using TokenHash = std::array<std::uint8_t, 32>;

namespace roles {
inline constexpr std::uint8_t hotlist = 1u << 0;     // put cards on / off the hotlist
inline constexpr std::uint8_t registry = 1u << 1;    // register participants, terminals; issue card tokens
inline constexpr std::uint8_t settlement = 1u << 2;  // post the transfers of a settlement cycle (only those)
inline constexpr std::uint8_t read = 1u << 3;        // look up cards, risk flags, suspense, the journal
inline constexpr std::uint8_t adjust = 1u << 4;      // propose, approve or reject manual adjustments (maker-checker)
inline constexpr std::uint8_t clerks = 1u << 5;      // add clerks, revoke their tokens, list them (while serving)
inline constexpr std::uint8_t cluster = 1u << 6;     // take a snapshot of the whole data directory (a node joining)
inline constexpr std::uint8_t counter = 1u << 7;     // a service counter: report cards lost, replace, return and refund, sell tourist cards
inline constexpr std::uint8_t all = hotlist | registry | settlement | read | adjust | clerks | cluster | counter;
// Roles whose holder moves money: registry (a card registered with opening balances), settlement (payouts
// and fees), adjust (manual adjustments), counter (refunds, cash payouts, deposits).
inline constexpr std::uint8_t moving_money = registry | settlement | adjust | counter;
// Roles a running daemon grants only with a second clerk's approval (maker-checker): the money roles,
// and clerks itself — a clerk who could grant it alone could add a second clerk of its own and approve
// every grant with it.
inline constexpr std::uint8_t needing_approval = moving_money | clerks;
}  // namespace roles
// "hotlist,read" → bits; nullopt for an unknown or empty name.
std::optional<std::uint8_t> parse_roles(std::string_view text);
std::vector<std::string> role_names(std::uint8_t roles);

// A clerk token's record. roles 0: revoked (the record stays, so the journal's names keep their
// meaning; the token is answered 401 like an unknown one).
struct Clerk {
    std::string name;
    std::uint8_t roles = 0;
    std::uint64_t created_ns = 0;
    bool revoked() const { return roles == 0; }
};

struct CardToken {
    Asn asn{};
    TokenHash hash{};
    std::uint64_t issued_ns = 0;
};

// One clerk action, durable in the same commit as its effect (key: sequence from 1).
struct ClerkAction {
    std::uint64_t sequence = 0;
    std::uint64_t timestamp_ns = 0;
    std::string clerk;    // the clerk's name ("admin" for the offline commands)
    std::string action;   // "hotlist", "card_token", "participant", "terminal", "transfers", "lookup", …
    std::string target;   // card number, participant id, terminal id, …
    std::string outcome;  // "ok" or what refused it
    std::string detail;
};

// A settlement cycle the daemon accepted postings for (table "http_settlement_cycles", key: cycle BE4).
// Every later request for the cycle must name the same window; a new cycle's window must begin where the
// latest cycle's ended (clearing/README.md "Settlement postings").
struct SettlementCycle {
    std::uint32_t cycle = 0;  // business date YYYYMMDD
    std::uint64_t start_ns = 0;
    std::uint64_t end_ns = 0;
    std::uint64_t first_posted_ns = 0;
    std::string clerk;
};

// A manual adjustment (table "http_adjustments", key: number BE8): one clerk proposes, another approves;
// the money moves only at the approval, as the transfer adjustment_transfer(number) (code 10).
enum class AdjustmentStatus : std::uint8_t { proposed = 1, approved = 2, rejected = 3 };
std::string_view to_string(AdjustmentStatus status);
std::optional<AdjustmentStatus> parse_adjustment_status(std::string_view text);

struct Adjustment {
    std::uint64_t number = 0;
    ledger::Id debit_account_id;
    ledger::Id credit_account_id;
    std::uint32_t ledger = 0;
    std::uint64_t amount = 0;
    std::string reason;
    std::string maker;
    std::uint64_t proposed_ns = 0;
    AdjustmentStatus status = AdjustmentStatus::proposed;
    std::string checker;  // who approved or rejected it
    std::uint64_t decided_ns = 0;
    std::string note;  // the checker's note
};

// A grant of roles that need a second clerk (table "http_clerk_grants", key: number BE8). POST
// /v1/clerk/clerks with such roles records it and answers the new token once; the token is answered
// 401 until another clerk with the role clerks — neither the requester nor the clerk named — approves
// it before it expires. Only then is the clerk record written, under the token's hash kept here (never
// served). Expired: still pending at expires_ns (shown as "expired"; approving it is refused).
enum class GrantStatus : std::uint8_t { pending = 1, approved = 2, rejected = 3 };
std::string_view to_string(GrantStatus status);

struct ClerkGrant {
    std::uint64_t number = 0;
    std::string name;        // the clerk the token is for
    std::uint8_t roles = 0;  // includes at least one of roles::needing_approval
    TokenHash hash{};        // the new token's keyed hash
    std::string requested_by;
    std::uint64_t requested_ns = 0;
    std::uint64_t expires_ns = 0;
    GrantStatus status = GrantStatus::pending;
    std::string decided_by;  // who approved or rejected it
    std::uint64_t decided_ns = 0;
    std::string note;
    bool expired(std::uint64_t now_ns) const { return status == GrantStatus::pending && now_ns >= expires_ns; }
};
// How long a grant waits for its approval (HttpOptions::clerk_grant_ttl, --clerk-grant-ttl-s).
inline constexpr std::chrono::seconds clerk_grant_ttl_default{24 * 3600};

inline constexpr std::size_t clerk_name_chars_max = 64;
inline constexpr std::size_t journal_page_max = 1000;

// Tables "http_card_tokens" (card number → ASN, hash), "http_clerks" (hash → clerk) and
// "http_clerk_journal" in the ledger's environment, and the token key file.
class Tokens {
public:
    // Opens (creates) the tables and reads DATA/http-token.key, creating it (0600) when missing.
    // Start-up only, before the writer runs. A key file readable by others is refused.
    static Result<std::unique_ptr<Tokens>> open(lmdb::Env& env, const std::filesystem::path& data_directory);
    ~Tokens();
    Tokens(const Tokens&) = delete;
    Tokens& operator=(const Tokens&) = delete;

    // A fresh token (CSPRNG) with its prefix.
    static std::string new_token(std::string_view prefix);
    TokenHash hash(std::string_view token) const;

    // Reads (own read transaction, any thread).
    Result<std::optional<CardToken>> card_token(const CardNumber& number) const;
    // The clerk whose token this is, nullopt for an unknown or revoked token (the lookup is by the
    // token's keyed hash, which reveals nothing about the token).
    Result<std::optional<Clerk>> clerk(std::string_view token) const;
    // Every clerk token's record, revoked ones included, oldest first (no hash: nothing to read back).
    Result<std::vector<Clerk>> clerks() const;
    Result<std::vector<ClerkAction>> journal(std::uint64_t after_sequence, std::size_t limit) const;
    // True when `presented` (hash() of the token sent) is the card's (sodium_memcmp, constant time).
    static bool matches(const CardToken& stored, const TokenHash& presented);

    // Writes inside a caller's write transaction (the writer's BatchHook, or an offline commit).
    lmdb::Status put_card_token(lmdb::Txn& txn, const CardNumber& number, const CardToken& token) const;
    // The activation-code table (table "http_activation_codes"; its records are the API's, clearing/README.md
    // "Activation letters"): raw reads and writes.
    lmdb::Result<std::optional<Bytes>> activation_in(const lmdb::Txn& txn, ByteView key) const;
    lmdb::Status put_activation(lmdb::Txn& txn, ByteView key, ByteView value) const;
    lmdb::Status put_clerk(lmdb::Txn& txn, const TokenHash& hash, const Clerk& clerk) const;
    // Revokes every token of the clerk `name` still in force; how many.
    lmdb::Result<std::size_t> revoke_clerk_in(lmdb::Txn& txn, std::string_view name) const;
    lmdb::Result<std::uint64_t> append_journal(lmdb::Txn& txn, ClerkAction action) const;
    lmdb::Status put_settlement_cycle(lmdb::Txn& txn, const SettlementCycle& cycle) const;
    // Proposals get numbers from 1 in order; put_adjustment writes a proposal or its decision.
    lmdb::Result<std::uint64_t> next_adjustment_number(const lmdb::Txn& txn) const;
    lmdb::Status put_adjustment(lmdb::Txn& txn, const Adjustment& adjustment) const;
    lmdb::Result<std::optional<Adjustment>> adjustment_in(const lmdb::Txn& txn, std::uint64_t number) const;
    // Clerk grants (clerk_grants.cpp): numbers from 1 in order; put_grant writes a request or its decision.
    lmdb::Result<std::uint64_t> next_grant_number(const lmdb::Txn& txn) const;
    lmdb::Status put_grant(lmdb::Txn& txn, const ClerkGrant& grant) const;
    lmdb::Result<std::optional<ClerkGrant>> grant_in(const lmdb::Txn& txn, std::uint64_t number) const;
    Result<std::optional<ClerkGrant>> grant(std::uint64_t number) const;
    // Grants after `after_number`, oldest first, at most `limit`.
    Result<std::vector<ClerkGrant>> grants(std::uint64_t after_number, std::size_t limit) const;

    // Reads (own read transaction).
    Result<std::optional<SettlementCycle>> settlement_cycle(std::uint32_t cycle) const;
    // The cycle with the latest window end, nullopt before the first posting.
    Result<std::optional<SettlementCycle>> latest_settlement_cycle() const;
    Result<std::optional<Adjustment>> adjustment(std::uint64_t number) const;
    // Proposals after `after_number`, oldest first, at most `limit`; only those in `status` when given.
    Result<std::vector<Adjustment>> adjustments(std::uint64_t after_number, std::size_t limit,
                                                std::optional<AdjustmentStatus> status) const;
    lmdb::Result<std::optional<CardToken>> card_token_in(const lmdb::Txn& txn, const CardNumber& number) const;
    // Every clerk record with its key (the token's hash), in key order.
    lmdb::Result<std::vector<std::pair<TokenHash, Clerk>>> clerks_in(const lmdb::Txn& txn) const;

    struct State;

private:
    explicit Tokens(std::unique_ptr<State> state);
    std::unique_ptr<State> state_;
};

// What is wrong with a clerk name (1–64 printable ASCII characters, no space), nullopt when nothing.
std::optional<std::string> clerk_name_problem(std::string_view name);

// Offline commands (the daemon stopped, the directory locked by the caller). Each commits once.
// clerk-add: returns the new clerk token (shown once).
Result<std::string> add_clerk(ledger::Ledger& ledger, Tokens& tokens, std::string_view name, std::uint8_t roles);
// clerk-revoke: revokes every token of the clerk `name` (journaled); returns how many. bad_input when
// the clerk has no token that is not revoked already.
Result<std::size_t> revoke_clerk(ledger::Ledger& ledger, Tokens& tokens, std::string_view name);
// issue-tokens: a token for each card in `cards` (empty: every registered card without one), written
// to out/<card number>.token (0600, token + "\n"). Returns how many were issued.
Result<std::size_t> issue_card_tokens(ledger::Ledger& ledger, const Registry& registry, Tokens& tokens,
                                      const std::vector<CardNumber>& cards, const std::filesystem::path& out);

// ---- metrics the daemon feeds ---------------------------------------------------------------------------

// Counts the daemon's HSM calls (TAC verifications, load MAC2, load TACs, INTERNAL AUTHENTICATE) around
// the daemon's HSM link (for /metrics).
struct HsmStats {
    std::atomic<std::uint64_t> calls{0};
    std::atomic<std::uint64_t> failures{0};  // no verdict (link down, HSM error)
    std::atomic<std::uint64_t> latency_us_sum{0};
};

class MeteredHsm final : public TacVerifier, public CardServices {
public:
    MeteredHsm(TacVerifier& tacs, CardServices& services) : tacs_(tacs), services_(services) {}
    void verify(const hsm::PurchaseTac& transaction, Handler handler) override;
    void load_mac2(const hsm::LoadRequest& request, LoadHandler handler) override;
    void verify_load_tac(const hsm::LoadTac& load, VerdictHandler handler) override;
    void verify_internal_auth(const hsm::InternalAuth& auth, VerdictHandler handler) override;
    const HsmStats& stats() const { return stats_; }

private:
    // Wraps a handler so that the call is counted and timed when its outcome arrives.
    template <class Outcome>
    std::function<void(Outcome)> metered(std::function<void(Outcome)> handler);

    TacVerifier& tacs_;
    CardServices& services_;
    HsmStats stats_;
};

// ---- server -----------------------------------------------------------------------------------------------

// Connections at once: beyond it a new connection is answered 503 and closed (a phone retries); each
// costs a socket and ~16 KiB of buffers.
inline constexpr std::size_t http_connections_max_default = 512;
// Connections one client address may hold at once (a quarter of the total): a cardholder app's backend
// or an office NAT needs many, one peer holding them cannot starve the others.
inline constexpr std::size_t http_connections_per_address_default = 128;
// Request head (request line + headers): a browser's is ~1 KiB; beyond it 431.
inline constexpr std::size_t http_header_bytes_max_default = 8 * 1024;
// Request body: 1,000 settlement transfers of ~330 bytes of JSON fit; beyond it 413.
inline constexpr std::size_t http_body_bytes_max_default = 1024 * 1024;
// A request must arrive whole within this after the previous answer (or the connection's start); the
// same bound closes idle keep-alive connections, so a slow client cannot hold a connection slot.
inline constexpr std::chrono::seconds http_read_timeout_default{10};
inline constexpr std::chrono::seconds http_write_timeout_default{10};
// Per card / clerk token: a burst of this many, refilled at this rate per second (429 beyond).
inline constexpr double token_requests_per_s_default = 10.0;
inline constexpr double token_burst_default = 20.0;
// Per client address, requests without a valid token (none, unknown, revoked, another card's): a burst
// of this many, refilled at this rate per second (429 with Retry-After beyond). A cardholder who
// mistypes a token a few times is never refused; a script trying tokens or card numbers is slowed to
// the rate. Addresses are whole (an IPv6 client that rotates within its /64 counts as many).
inline constexpr double address_failures_per_s_default = 2.0;
inline constexpr double address_failure_burst_default = 50.0;
// Tokens tracked by the rate limiter; the least recently seen are dropped beyond it.
inline constexpr std::size_t rate_limited_tokens_max = 100'000;
// Settlement transfers per POST (clearing/README.md "Settlement postings").
inline constexpr std::size_t transfers_per_request_max = 1000;
// A manual adjustment moves at most 10,000,000 CNY; its reason and the checker's note are ≤ 500 bytes.
inline constexpr std::uint64_t adjustment_fen_max = 1'000'000'000;
// How long ago a settlement window must have ended (coconut-settle's settling margin, 60 s by default).
inline constexpr std::chrono::seconds settlement_margin_default{60};
inline constexpr std::size_t adjustment_text_max = 500;
inline constexpr std::size_t transactions_page_default = 10;
inline constexpr std::size_t transactions_page_max = 100;
// Risk flags per page of GET /v1/clerk/risk when ?limit is not given (at most Registry::risk_page_limit_max).
inline constexpr std::size_t risk_page_default = 100;

// Scheduling: bookings before balance queries. The threads that serve HTTP may run below the ledger
// writer and the terminal I/O thread, which keep the daemon's own priority:
//   "nice:N" SCHED_OTHER at nice N (1…19): at nice 10 ~1/9 of a nice-0 thread's weight when the cores
//            are busy, full speed when not; weights act inside the daemon's scheduling group, so
//            queries yield to bookings, not to unrelated processes. The default;
//   "idle"   SCHED_IDLE: runs on what every other thread leaves; a waking booking thread takes the
//            core at once, but so does any process on the host (query p99 168 ms during a compile);
//   "normal" the daemon's own priority (no preference).
// Linux applies both per thread (sched_setscheduler / setpriority on the thread id), and an
// unprivileged thread may lower itself but not raise itself again. docs/BENCHMARKS.md ("HTTP") has the
// measurements behind the default.
struct ThreadPriority {
    bool idle = false;
    int nice = 0;  // with idle false: 0 = normal
};
inline constexpr std::string_view http_thread_priority_default = "nice:10";
// "idle", "normal", "nice:N" (N 1…19); nullopt otherwise.
std::optional<ThreadPriority> parse_thread_priority(std::string_view text);
// Applies `priority` to the calling thread. Error: what the kernel said.
Status lower_thread_priority(const ThreadPriority& priority);

struct HttpOptions {
    std::string host = "127.0.0.1";
    std::uint16_t port = 0;  // 0: ephemeral (HttpServer::port())
    std::size_t connections_max = http_connections_max_default;
    std::size_t connections_per_address = http_connections_per_address_default;
    std::size_t header_bytes_max = http_header_bytes_max_default;
    std::size_t body_bytes_max = http_body_bytes_max_default;
    std::chrono::milliseconds read_timeout = http_read_timeout_default;
    std::chrono::milliseconds write_timeout = http_write_timeout_default;
    double token_requests_per_s = token_requests_per_s_default;
    double token_burst = token_burst_default;
    double address_failures_per_s = address_failures_per_s_default;
    double address_failure_burst = address_failure_burst_default;
    std::filesystem::path tls_certificate;  // both set: HTTPS only
    std::filesystem::path tls_private_key;
    // A settlement cycle's window must have ended this long ago before its postings are accepted.
    std::chrono::seconds settlement_margin = settlement_margin_default;
    // How long a clerk grant that needs a second clerk waits for its approval.
    std::chrono::seconds clerk_grant_ttl = clerk_grant_ttl_default;
    // The fee a tourist card's return costs (taken from the deposit, then the balance; capped at both).
    std::uint64_t tourist_return_fee_fen = 0;
    // Threads that run the io_context. With one (coconut-clearingd), a connection's handlers can never
    // run at once, so connections get the io_context's executor; with more, each gets a strand.
    std::size_t io_threads = 1;
};

// Latency buckets of the request histogram (µs, Prometheus "le").
inline constexpr std::array<std::uint64_t, 10> latency_buckets_us{100, 250, 500, 1000, 2500, 5000, 10000, 50000, 250000, 1000000};

struct HttpStats {
    std::atomic<std::uint64_t> connections_accepted{0};
    std::atomic<std::uint64_t> connections_refused{0};              // above connections_max
    std::atomic<std::uint64_t> connections_refused_per_address{0};  // above connections_per_address
    std::atomic<std::uint64_t> accept_pauses{0};                    // accept waited: out of descriptors or memory
    std::atomic<std::uint64_t> connections_open{0};
    std::atomic<std::uint64_t> timeouts{0};
    std::atomic<std::uint64_t> tls_handshake_failures{0};
    std::array<std::atomic<std::uint64_t>, 6> responses_by_class{};  // index status / 100 (1xx … 5xx)
    std::atomic<std::uint64_t> rate_limited{0};
    std::array<std::atomic<std::uint64_t>, latency_buckets_us.size() + 1> latency_buckets{};  // last: +Inf
    std::atomic<std::uint64_t> latency_us_sum{0};
};

// A standby node of a clearing cluster (docs/DESIGN.md §10): its HTTP API serves the cardholder routes,
// the balance page, /healthz, /metrics (role read) and the OpenAPI document from its copy of the ledger, with the header
// Coconut-Applied-Position (the journal stream position its copy holds) on every answer; every other
// route — clerk routes, reads included, and every write — answers 503 `standby` naming the primary
// (body "primary", header Coconut-Primary: its HTTP address, empty while none holds the lease).
struct StandbyInfo {
    std::function<std::uint64_t()> applied_position;
    std::function<std::string()> primary_http;
};
inline constexpr std::string_view applied_position_header = "Coconut-Applied-Position";
// A cluster primary's publishes (docs/CLUSTER.md "Watching a cluster"): per commit, the µs from handing
// the sealed commit to NATS to the journal stream's answer (its acknowledgement or its refusal),
// retries included. /metrics: coconut_cluster_publish_duration_seconds.
inline constexpr std::array<std::uint64_t, 9> publish_duration_buckets_us{500, 1000, 2000, 5000, 10000, 20000, 50000, 100000, 1000000};
using PublishDurations = core::Histogram<publish_duration_buckets_us.size()>;
inline constexpr std::string_view primary_header = "Coconut-Primary";

// What the API reads and writes. The stats pointers may be null (tests). `writer` is null exactly on a
// standby (`standby` set): nothing is written there but by the journal stream.
struct Services {
    ledger::Ledger& ledger;
    ledger::Writer* writer;
    Registry& registry;
    Tokens& tokens;
    const EngineStats* engine = nullptr;
    const ServerStats* iso_server = nullptr;
    const HsmStats* hsm = nullptr;
    const hsm::LinkStats* hsm_link = nullptr;  // RemoteHsm::link_stats(): breaker, retries, keep-alives
    const StandbyInfo* standby = nullptr;      // set on a cluster's standby node
    // The ledger's data directory (GET /v1/clerk/cluster/snapshot: the copy is made in it, and its
    // token key travels with it); empty: no snapshots (503).
    std::filesystem::path data_directory = {};
    // Lost cards and persons (lifecycle.hpp) and the waiting period of lost and broken cards
    // (EngineOptions::lost_wait_s: what they still paid offline arrives within it); unset: the lifecycle
    // routes answer 503.
    const Lifecycle* lifecycle = nullptr;
    std::uint64_t lost_wait_s = 7 * 86'400;
    // The counter's tables (returns, tourist cards); null: those routes answer 503.
    CardReturns* card_returns = nullptr;
    const PublishDurations* publishes = nullptr;  // set on a cluster's primary
};

// The HTTP listener (Boost.Beast): one object per connection, bounded head and body, a deadline on
// every read and write, bounded connections, keep-alive, optional TLS. Runs on `io` (any number of
// threads: each connection has its strand).
class HttpServer {
public:
    // Binds and listens; throws std::system_error (address) or std::runtime_error (TLS files) at start-up.
    HttpServer(boost::asio::io_context& io, Services services, HttpOptions options);
    ~HttpServer();
    std::uint16_t port() const;
    bool tls() const;
    // Stops accepting; open connections close after their current answer.
    void shutdown();
    const HttpStats& stats() const;

    struct State;

private:
    std::shared_ptr<State> state_;
};

// ---- pieces exposed for tests -----------------------------------------------------------------------------

// The embedded balance page (/).
std::string_view balance_page_html();
// The OpenAPI document served at /v1/openapi.json (clearing/openapi.json compiled in).
std::string_view openapi_json();

}  // namespace coconut::clearing::http
