// Operations: the balance page (/), /healthz, /v1/openapi.json, and /metrics (Prometheus text format
// 0.0.4) for a clerk token with the role read (Prometheus: `authorization: credentials_file`).
#include "api_internal.hpp"

#include <coconut/core/metrics.hpp>

#include <fmt/format.h>

namespace coconut::clearing::http::api {

namespace {

// The daemon's families in the shared text writer (coconut/core/metrics.hpp), with the one-call
// histogram the families below use.
struct Text : core::MetricsText {
    template <std::size_t N, class Count>
    void histogram(std::string_view name, std::string_view help, const std::array<std::uint64_t, N>& bounds,
                   const std::array<Count, N + 1>& counts, std::uint64_t sum, double unit) {
        family(name, "histogram", help);
        std::array<std::uint64_t, N + 1> plain{};
        for (std::size_t i = 0; i <= N; ++i) plain[i] = static_cast<std::uint64_t>(counts[i]);
        core::MetricsText::histogram(name, bounds, plain, sum, unit);
    }
};

void http_metrics(Text& t, const HttpStats& stats) {
    std::array<std::uint64_t, latency_buckets_us.size() + 1> latency{};
    for (std::size_t i = 0; i < latency.size(); ++i) latency[i] = stats.latency_buckets[i].load(std::memory_order_relaxed);
    t.histogram("coconut_http_request_duration_seconds", "HTTP request latency (read to answer written)", latency_buckets_us, latency,
                stats.latency_us_sum.load(), 1e-6);
    t.family("coconut_http_responses_total", "counter", "HTTP responses by status class");
    for (std::size_t c = 1; c < stats.responses_by_class.size(); ++c) {
        t.sample("coconut_http_responses_total", stats.responses_by_class[c].load(), {{"class", fmt::format("{}xx", c)}});
    }
    t.counter("coconut_http_rate_limited_total", "requests answered 429", stats.rate_limited.load());
    t.counter("coconut_http_connections_accepted_total", "HTTP connections accepted", stats.connections_accepted.load());
    t.counter("coconut_http_connections_refused_total", "HTTP connections refused above the limit", stats.connections_refused.load());
    t.counter("coconut_http_connections_refused_per_address_total", "HTTP connections refused above one address's share",
              stats.connections_refused_per_address.load());
    t.counter("coconut_http_accept_pauses_total", "HTTP accepts deferred: the process was out of descriptors or memory",
              stats.accept_pauses.load());
    t.gauge("coconut_http_connections_open", "HTTP connections open now", stats.connections_open.load());
    t.counter("coconut_http_timeouts_total", "HTTP connections closed by a read or write deadline", stats.timeouts.load());
    t.counter("coconut_http_tls_handshake_failures_total", "TLS handshakes that failed", stats.tls_handshake_failures.load());
}

void ledger_metrics(Text& t, const Services& s) {
    const ledger::WriterStats w = s.writer->stats();
    t.counter("coconut_ledger_commits_total", "ledger group commits", w.commits);
    t.counter("coconut_ledger_commit_failures_total", "ledger commits that failed (nothing written)", w.failed_commits);
    t.counter("coconut_ledger_requests_total", "requests committed by the ledger writer", w.requests);
    t.counter("coconut_ledger_events_total", "ledger events (accounts, transfers) applied", w.events);
    t.gauge("coconut_ledger_writer_queue_depth", "requests waiting for the ledger writer", w.queue_depth);
    t.histogram("coconut_ledger_commit_duration_seconds", "apply + durable commit of one group", ledger::commit_us_buckets,
                w.commit_us_counts, w.commit_us_sum, 1e-6);
    std::uint64_t requests_sum = w.requests;
    t.histogram("coconut_ledger_commit_requests", "requests per group commit (batch size)", ledger::commit_requests_buckets,
                w.commit_requests_counts, requests_sum, 1.0);
    t.gauge("coconut_ledger_journal_sequence", "last committed journal sequence", s.ledger.head().sequence);
    t.gauge("coconut_ledger_storage_full", "1 while the last commit failed for lack of space (disk or map full) and none succeeded since",
            w.storage_full ? 1 : 0);
    t.counter("coconut_ledger_storage_errors_total", "ledger commits that failed in storage (disk full, map full, I/O)", w.storage_errors);
}

void iso_metrics(Text& t, const EngineStats* engine, const ServerStats* server) {
    if (engine) {
        const EngineStats& e = *engine;
        t.counter("coconut_iso_requests_total", "ISO 8583 requests handled", e.requests.load());
        t.family("coconut_iso_outcomes_total", "counter", "ISO 8583 request outcomes");
        t.sample("coconut_iso_outcomes_total", e.booked.load(), {{"outcome", "booked"}});
        t.sample("coconut_iso_outcomes_total", e.exists.load(), {{"outcome", "exists"}});
        t.sample("coconut_iso_outcomes_total", e.suspense.load(), {{"outcome", "suspense"}});
        t.sample("coconut_iso_outcomes_total", e.duplicates.load(), {{"outcome", "duplicate"}});
        t.sample("coconut_iso_outcomes_total", e.refused.load(), {{"outcome", "refused"}});
        t.gauge("coconut_iso_in_flight", "ISO 8583 requests handled but not yet answered", e.in_flight.load());
    }
    if (!server) return;
    const ServerStats& v = *server;
    t.counter("coconut_iso_connections_accepted_total", "terminal connections accepted", v.connections_accepted.load());
    t.counter("coconut_iso_connections_refused_total", "terminal connections refused above the limit", v.connections_refused.load());
    t.counter("coconut_iso_connections_refused_per_address_total", "terminal connections refused above one address's share",
              v.connections_refused_per_address.load());
    t.counter("coconut_iso_connections_refused_per_terminal_total", "connections closed after the handshake: the terminal had its share",
              v.connections_refused_per_terminal.load());
    t.counter("coconut_iso_sign_on_timeouts_total", "connections closed without a sign-on within the deadline", v.sign_on_timeouts.load());
    t.counter("coconut_iso_accept_pauses_total", "terminal accepts deferred: the process was out of descriptors or memory",
              v.accept_pauses.load());
    t.counter("coconut_iso_format_errors_total", "frames answered 30", v.format_errors.load());
    t.counter("coconut_iso_timeouts_total", "terminal connections closed by a timeout", v.timeouts.load());
    t.family("coconut_iso_tls_handshakes_total", "counter", "terminal TLS handshakes completed");
    t.sample("coconut_iso_tls_handshakes_total", v.tls_handshakes_full.load(), {{"kind", "full"}});
    t.sample("coconut_iso_tls_handshakes_total", v.tls_handshakes_resumed.load(), {{"kind", "resumed"}});
    t.counter("coconut_iso_tls_handshake_failures_total",
              "terminal connections closed in the handshake (no, unverifiable or non-terminal certificate; "
              "timeout)",
              v.tls_handshake_failures.load());
}

void hsm_metrics(Text& t, const HsmStats* hsm, const hsm::LinkStats* link) {
    if (hsm) {
        t.counter("coconut_hsm_tac_verifications_total", "TAC verifications asked of the HSM", hsm->calls.load());
        t.counter("coconut_hsm_tac_failures_total", "TAC verifications without a verdict (link, HSM error)", hsm->failures.load());
        t.family("coconut_hsm_tac_latency_seconds_total", "counter", "summed HSM verification latency");
        t.sample("coconut_hsm_tac_latency_seconds_total", static_cast<double>(hsm->latency_us_sum.load()) * 1e-6);
    }
    if (!link) return;
    const hsm::LinkStats& l = *link;
    t.gauge("coconut_hsm_breaker_state", "the HSM link's circuit breaker: 0 closed, 1 open, 2 half-open (one probe out)",
            static_cast<std::uint64_t>(l.breaker.load()));
    t.gauge("coconut_hsm_breaker_open", "1 while the HSM link's circuit breaker is open or half-open (requests fail at once)",
            l.breaker.load() == hsm::BreakerState::closed ? 0 : 1);
    t.counter("coconut_hsm_breaker_opens_total", "times the HSM link's circuit breaker opened", l.breaker_opens.load());
    t.counter("coconut_hsm_fast_failures_total", "HSM requests failed at once because the breaker was open", l.fast_failures.load());
    t.counter("coconut_hsm_timeouts_total", "HSM requests failed by a timeout (the HSM hangs)", l.timeouts.load());
    t.counter("coconut_hsm_retries_total", "HSM requests sent again after their connection broke", l.retries.load());
    t.counter("coconut_hsm_connections_opened_total", "HSM connections opened (hello received)", l.connections_opened.load());
    t.counter("coconut_hsm_keepalives_total", "keep-alive requests sent to the HSM", l.keepalives.load());
    t.counter("coconut_hsm_probes_total", "half-open probes sent to the HSM", l.probes.load());
    t.counter("coconut_hsm_failovers_total", "moves of the HSM link to the next HSM of --hsm (the one in use failed)", l.failovers.load());
    t.counter("coconut_hsm_moved_requests_total", "HSM requests sent to the next HSM after theirs failed", l.moved.load());
    t.gauge("coconut_hsm_endpoint", "the HSM in use: its index in --hsm (0 = the first)", static_cast<std::uint64_t>(l.endpoint.load()));
}

// What the terminals' requests came to: every answer by response MTI and code, declines, the online
// loads and clinic holds by what happened to them, reversals, and what sits in suspense.
void iso_answer_metrics(Text& t, const EngineStats* engine, const ServerStats* server) {
    if (server) {
        t.family("coconut_iso_responses_total", "counter", "answers sent to terminals by response MTI and response code (field 39)");
        std::uint64_t declines = 0;
        server->responses.for_each([&](std::string_view mti, std::string_view code, std::uint64_t n) {
            t.sample("coconut_iso_responses_total", n, {{"mti", mti}, {"code", code}});
            // 00 approved, 10 partially approved, 94 a repeat answered as before: not declines.
            if (code != "00" && code != "10" && code != "94") declines += n;
        });
        t.counter("coconut_iso_declines_total", "answers with a response code other than 00, 10 or 94", declines);
    }
    if (!engine) return;
    const EngineStats& e = *engine;
    t.family("coconut_iso_loads_total", "counter", "online loads: approved (0210 00), confirmed (0220 posted), expired unconfirmed");
    t.sample("coconut_iso_loads_total", e.loads_approved.load(), {{"event", "approved"}});
    t.sample("coconut_iso_loads_total", e.loads_confirmed.load(), {{"event", "confirmed"}});
    t.sample("coconut_iso_loads_total", e.loads_expired.load(), {{"event", "expired"}});
    t.family("coconut_iso_holds_total", "counter", "clinic holds on medical accounts: approved (0110), completed (0220), expired");
    t.sample("coconut_iso_holds_total", e.holds_approved.load(), {{"event", "approved"}});
    t.sample("coconut_iso_holds_total", e.completions.load(), {{"event", "completed"}});
    t.sample("coconut_iso_holds_total", e.holds_expired.load(), {{"event", "expired"}});
    t.counter("coconut_iso_reversals_total", "reversals (0400 / 0420) that voided a load or a hold", e.reversals.load());
}

// The suspense accounts' balances: uploads whose TAC failed, waiting for a person (clearing/README.md).
void suspense_metrics(Text& t, const Services& s) {
    t.family("coconut_suspense_balance_fen", "gauge", "money held in suspense (TAC failed, not yet resolved), per ledger, in fen");
    for (const auto& [name, id] : {std::pair{"purse", purse_suspense_account}, std::pair{"medical", medical_suspense_account}}) {
        auto account = s.ledger.lookup_account(id);
        if (!account || !*account) continue;  // not created yet: no sample rather than a made-up 0
        const auto balance = static_cast<double>((*account)->credits_posted) - static_cast<double>((*account)->debits_posted);
        t.sample("coconut_suspense_balance_fen", balance, {{"ledger", name}});
    }
}

void business_metrics(Text& t, const Services& s) {
    iso_answer_metrics(t, s.engine, s.iso_server);
    suspense_metrics(t, s);
}

}  // namespace

void balance_page(Call& call) { call.answer(ApiResponse{200, "text/html; charset=utf-8", std::string(balance_page_html()), {}, {}}); }

void openapi(Call& call) { call.answer(ApiResponse{200, "application/json", std::string(openapi_json()), {}, {}}); }

// 503 while the writer's queue is full, the ledger does not read, or storage is full (the last
// commit failed for lack of space and none has succeeded since: WriterStats::storage_full).
void healthz(Call& call) {
    const Services& s = call.s();
    if (s.standby != nullptr) {  // a standby writes nothing itself: its health is its copy, readable and current
        auto fixed = s.ledger.lookup_account(purse_float_account);
        json body{{"status", fixed.ok() ? "ok" : "degraded"},
                  {"role", "standby"},
                  {"ledger_readable", fixed.ok()},
                  {"applied_position", s.standby->applied_position()},
                  {"primary", s.standby->primary_http()},
                  {"journal_sequence", s.ledger.head().sequence}};
        return call.answer(json_response(fixed.ok() ? 200 : 503, body));
    }
    const auto writer = s.writer->stats();
    const bool queue_ok = writer.queue_depth < ledger::writer_queue_requests_max_default;
    auto fixed = s.ledger.lookup_account(purse_float_account);
    const bool ok = queue_ok && fixed.ok() && !writer.storage_full;
    json body{{"status", ok ? "ok" : "degraded"},
              {"ledger_readable", fixed.ok()},
              {"storage", writer.storage_full ? "full" : "ok"},
              {"writer_queue_depth", writer.queue_depth},
              {"journal_sequence", s.ledger.head().sequence}};
    if (writer.storage_full) body["storage_error"] = writer.storage_error;
    call.answer(json_response(ok ? 200 : 503, body));
}

// Where this node is in a cluster's journal stream (docs/CLUSTER.md): the primary's published
// position, a standby's applied one; the alert rules compare them (ops/prometheus/coconut-alerts.yml).
void cluster_metrics(Text& t, const Services& s) {
    const bool standby = s.standby != nullptr;
    std::uint64_t position = 0;
    if (standby) {
        position = s.standby->applied_position();
    } else if (auto held = s.ledger.replicated_position(); held) {
        position = *held;
    }
    t.gauge("coconut_cluster_standby", "1 on a cluster's standby node, 0 on a primary or a single clearing", standby ? 1 : 0);
    t.gauge("coconut_cluster_position", "journal stream position this node's ledger holds (0: not in a cluster)", position);
    if (s.publishes != nullptr) {
        t.family("coconut_cluster_publish_duration_seconds", "histogram",
                 "per commit a cluster primary published: handed to NATS to the journal stream's answer, retries included");
        s.publishes->write(t, "coconut_cluster_publish_duration_seconds", 1e-6);
    }
}

void metrics(Call& call) {
    const Services& s = call.s();
    Text t;
    http_metrics(t, call.api.stats);
    cluster_metrics(t, s);
    if (s.writer == nullptr) {  // a standby writes nothing but the stream: no writer, engine or terminals of its own
        t.gauge("coconut_ledger_journal_sequence", "last committed journal sequence", s.ledger.head().sequence);
        core::process_metrics(t);
        core::build_info(t, "coconut-clearingd");
        return call.answer(ApiResponse{200, std::string(core::metrics_content_type), std::move(t.out), {}, {}});
    }
    ledger_metrics(t, s);
    iso_metrics(t, s.engine, s.iso_server);
    hsm_metrics(t, s.hsm, s.hsm_link);
    business_metrics(t, s);
    core::process_metrics(t);
    core::build_info(t, "coconut-clearingd");
    call.answer(ApiResponse{200, std::string(core::metrics_content_type), std::move(t.out), {}, {}});
}

}  // namespace coconut::clearing::http::api
