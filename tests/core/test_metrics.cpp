// coconut::core metrics: the Prometheus text a daemon's /metrics serves (escaping, cumulative histogram
// buckets, process_* read from /proc/self, coconut_build_info).
#include <coconut/core/metrics.hpp>

#include <doctest/doctest.h>

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <sstream>
#include <string>

using coconut::core::Histogram;
using coconut::core::MetricsText;

namespace {

// The value of the sample line that starts with `name` followed by a space or '{…} '.
double value_of(const std::string& text, const std::string& series) {
    std::istringstream lines(text);
    for (std::string line; std::getline(lines, line);) {
        if (line.rfind(series + " ", 0) == 0) return std::stod(line.substr(series.size() + 1));
    }
    FAIL("no sample ", series, " in:\n", text);
    return 0;
}

}  // namespace

TEST_CASE("a label value is escaped: backslash, double quote and newline") {
    MetricsText t;
    t.family("coconut_x_total", "counter", "x");
    t.sample("coconut_x_total", std::uint64_t{3}, {{"kind", "a\"b\\c\nd"}, {"outcome", "ok"}});
    CHECK(t.out ==
          "# HELP coconut_x_total x\n# TYPE coconut_x_total counter\ncoconut_x_total{kind=\"a\\\"b\\\\c\\nd\",outcome=\"ok\"} 3\n");
}

TEST_CASE("histogram buckets are cumulative, +Inf equals _count, the sum is converted to the unit") {
    Histogram<3> h({100, 1000, 10000});
    for (std::uint64_t v : {50, 100, 101, 5000, 20000, 20000}) h.observe(v);
    CHECK(h.count() == 6);
    MetricsText t;
    t.family("coconut_latency_seconds", "histogram", "latency");
    h.write(t, "coconut_latency_seconds", 1e-6, {{"kind", "tac"}});
    CHECK(value_of(t.out, "coconut_latency_seconds_bucket{kind=\"tac\",le=\"0.0001\"}") == 2);  // 50 and 100 (le is inclusive)
    CHECK(value_of(t.out, "coconut_latency_seconds_bucket{kind=\"tac\",le=\"0.001\"}") == 3);
    CHECK(value_of(t.out, "coconut_latency_seconds_bucket{kind=\"tac\",le=\"0.01\"}") == 4);
    CHECK(value_of(t.out, "coconut_latency_seconds_bucket{kind=\"tac\",le=\"+Inf\"}") == 6);
    CHECK(value_of(t.out, "coconut_latency_seconds_count{kind=\"tac\"}") == 6);
    CHECK(value_of(t.out, "coconut_latency_seconds_sum{kind=\"tac\"}") == doctest::Approx(45251e-6));
}

TEST_CASE("process metrics come from /proc/self: open descriptors follow the process, the start time is now") {
    MetricsText before;
    coconut::core::process_metrics(before);
    const int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    REQUIRE(fd >= 0);
    MetricsText after;
    coconut::core::process_metrics(after);
    ::close(fd);
    CHECK(value_of(after.out, "process_open_fds") == value_of(before.out, "process_open_fds") + 1);
    CHECK(value_of(after.out, "process_max_fds") >= value_of(after.out, "process_open_fds"));
    CHECK(value_of(after.out, "process_resident_memory_bytes") > 1024 * 1024);
    CHECK(value_of(after.out, "process_virtual_memory_bytes") >= value_of(after.out, "process_resident_memory_bytes"));
    CHECK(value_of(after.out, "process_cpu_seconds_total") >= 0);
    const double now_s = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
    const double start_s = value_of(after.out, "process_start_time_seconds");
    CHECK(start_s <= now_s + 1);
    CHECK(start_s > now_s - 3600);  // this test process started within the hour
    CHECK(after.out.find("# TYPE process_cpu_seconds_total counter\n") != std::string::npos);
}

TEST_CASE("build info names the program and the project's version") {
    MetricsText t;
    coconut::core::build_info(t, "coconut-hsmd");
    CHECK(!coconut::core::project_version().empty());
    CHECK(value_of(t.out,
                   "coconut_build_info{program=\"coconut-hsmd\",version=\"" + std::string(coconut::core::project_version()) + "\"}") == 1);
}
