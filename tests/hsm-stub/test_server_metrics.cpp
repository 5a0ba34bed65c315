// What coconut-hsmd counts for /metrics (ServerMetrics): requests by command and outcome, latency per
// command, TAC batch sizes, the audit log's state that /healthz reports.
#include <coconut/hsm/metrics.hpp>

#include <doctest/doctest.h>

#include <string>

using coconut::hsm::Errc;
using coconut::hsm::ServerMetrics;
using coconut::hsm::wire::Command;

TEST_CASE("requests are counted by command and outcome, with a latency histogram per command asked for") {
    ServerMetrics metrics;
    metrics.request(Command::load_mac2, Errc::ok, std::chrono::microseconds(120));
    metrics.request(Command::load_mac2, Errc::ok, std::chrono::microseconds(80));
    metrics.request(Command::load_mac2, Errc::key_not_found, std::chrono::microseconds(30));
    metrics.tac_batch(7);
    metrics.keepalive();
    metrics.connection_closed(Errc::bad_mac);
    CHECK(metrics.requests(Command::load_mac2, Errc::ok) == 2);
    CHECK(metrics.requests(Command::load_mac2, Errc::key_not_found) == 1);
    CHECK(metrics.requests(Command::verify_purchase_tacs, Errc::ok) == 0);
    coconut::core::MetricsText text;
    metrics.write(text);
    const std::string& out = text.out;
    CHECK(out.find("coconut_hsm_requests_total{kind=\"load-mac2\",outcome=\"ok\"} 2\n") != std::string::npos);
    CHECK(out.find("coconut_hsm_requests_total{kind=\"load-mac2\",outcome=\"key_not_found\"} 1\n") != std::string::npos);
    CHECK(out.find("coconut_hsm_request_duration_seconds_count{kind=\"load-mac2\"} 3\n") != std::string::npos);
    CHECK(out.find("coconut_hsm_request_duration_seconds_bucket{kind=\"load-mac2\",le=\"5e-05\"} 1\n") != std::string::npos);
    CHECK(out.find("kind=\"verify-purchase-tacs\"") == std::string::npos);  // never asked for: no empty series
    CHECK(out.find("coconut_hsm_tac_batch_items_bucket{le=\"8\"} 1\n") != std::string::npos);
    CHECK(out.find("coconut_hsm_tac_batch_items_bucket{le=\"4\"} 0\n") != std::string::npos);
    CHECK(out.find("coconut_hsm_keepalives_total 1\n") != std::string::npos);
    CHECK(out.find("coconut_hsm_connections_closed_total{reason=\"bad_mac\"} 1\n") != std::string::npos);
}

TEST_CASE("the audit log failing is reported until a line is written again") {
    ServerMetrics metrics;
    CHECK_FALSE(metrics.audit_failing());
    metrics.audit_written(false);
    CHECK(metrics.audit_failing());
    metrics.audit_written(true);
    CHECK_FALSE(metrics.audit_failing());
    coconut::core::MetricsText text;
    metrics.write(text);
    CHECK(text.out.find("coconut_hsm_audit_failures_total 1\n") != std::string::npos);
}
