// The daemons' log lines (coconut/core/log.hpp): both formats, the journal's form, request ids.
#include <coconut/core/log.hpp>

#include <doctest/doctest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <thread>

using namespace coconut;

namespace {

// 2026-12-06T23:10:00.123Z
const auto when = std::chrono::system_clock::time_point(std::chrono::milliseconds(1'796'598'600'123));

log::Settings settings_of(log::Format format, log::Time time = log::Time::automatic) {
    log::Settings s;
    s.program = "coconut-clearingd";
    s.format = format;
    s.time = time;
    return s;
}

}  // namespace

TEST_CASE("a text line is time, level, component, request id, message, then the fields") {
    const auto line = log::format_line(settings_of(log::Format::text), false, when, log::Level::info, "http", "h-00010000002a", "access",
                                       {{"method", "GET"}, {"path", "/v1/cards/1"}, {"status", 200u}, {"duration_ms", 1.25}});
    CHECK(line == "2026-12-06T23:10:00.123Z info http h-00010000002a access method=GET path=/v1/cards/1 status=200 duration_ms=1.250");
}

TEST_CASE("a line without a request shows '-' in its place, and stays one line") {
    const auto line = log::format_line(settings_of(log::Format::text), false, when, log::Level::warning, "engine", "", "two\nlines");
    CHECK(line == "2026-12-06T23:10:00.123Z warning engine - two\\nlines");
}

TEST_CASE("a JSON line is one object with the same names, numbers as numbers") {
    const auto line = log::format_line(settings_of(log::Format::json), false, when, log::Level::error, "engine", "t-00010000002a",
                                       "said \"no\"\t\xff", {{"status", 503u}, {"path", "/x"}});
    CHECK(line ==
          "{\"time\":\"2026-12-06T23:10:00.123Z\",\"level\":\"error\",\"program\":\"coconut-clearingd\",\"component\":\"engine\","
          "\"request_id\":\"t-00010000002a\",\"message\":\"said \\\"no\\\"\\u0009\\ufffd\",\"status\":503,\"path\":\"/x\"}");
}

TEST_CASE("JSON leaves out the request id when there is none") {
    const auto line = log::format_line(settings_of(log::Format::json), false, when, log::Level::info, "daemon", "", "started");
    CHECK(line.find("request_id") == std::string::npos);
    CHECK(line.find("\"message\":\"started\"") != std::string::npos);
}

TEST_CASE("under the journal: the syslog priority first and no time of our own, unless asked for") {
    CHECK(log::format_line(settings_of(log::Format::text), true, when, log::Level::error, "daemon", "", "x") == "<3>error daemon - x");
    CHECK(log::format_line(settings_of(log::Format::text), true, when, log::Level::info, "daemon", "", "x") == "<6>info daemon - x");
    CHECK(log::format_line(settings_of(log::Format::json), true, when, log::Level::debug, "d", "", "x").starts_with("<7>{\"level\""));
    CHECK(log::format_line(settings_of(log::Format::text, log::Time::utc), true, when, log::Level::warning, "d", "", "x") ==
          "<4>2026-12-06T23:10:00.123Z warning d - x");
    CHECK(log::format_line(settings_of(log::Format::text, log::Time::none), false, when, log::Level::info, "d", "", "x") == "info d - x");
}

TEST_CASE("JOURNAL_STREAM counts only when it names the descriptor's file") {
    std::FILE* file = std::tmpfile();
    REQUIRE(file != nullptr);
    struct stat st {};
    REQUIRE(::fstat(::fileno(file), &st) == 0);
    const std::string mine = std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino);
    ::setenv("JOURNAL_STREAM", mine.c_str(), 1);
    CHECK(log::is_journal_stream(::fileno(file)));
    ::setenv("JOURNAL_STREAM", (std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino + 1)).c_str(), 1);
    CHECK_FALSE(log::is_journal_stream(::fileno(file)));
    ::setenv("JOURNAL_STREAM", "garbage", 1);
    CHECK_FALSE(log::is_journal_stream(::fileno(file)));
    ::unsetenv("JOURNAL_STREAM");
    CHECK_FALSE(log::is_journal_stream(::fileno(file)));
    std::fclose(file);
}

TEST_CASE("request ids: kind, dash, 12 hex digits, never twice") {
    const std::string a = log::new_request_id('t');
    const std::string b = log::new_request_id('t');
    CHECK(a.size() == 14);
    CHECK(a.starts_with("t-"));
    CHECK(a.find_first_not_of("0123456789abcdef", 2) == std::string::npos);
    CHECK(a != b);
}

TEST_CASE("a request id follows the work to another thread and is restored after") {
    CHECK(log::current_request_id().empty());
    std::string seen_there;
    std::function<void(int)> continuation;
    {
        const log::RequestScope scope("h-00000000abcd");
        CHECK(log::current_request_id() == "h-00000000abcd");
        continuation = log::carry_request_id([&](int) { seen_there = log::current_request_id(); });
        {
            const log::RequestScope inner("b-000000000001");
            CHECK(log::current_request_id() == "b-000000000001");
        }
        CHECK(log::current_request_id() == "h-00000000abcd");
    }
    CHECK(log::current_request_id().empty());
    std::thread other([&] {
        continuation(1);
        CHECK(log::current_request_id().empty());  // only while the continuation runs
    });
    other.join();
    CHECK(seen_there == "h-00000000abcd");
}

TEST_CASE("option words parse, others do not") {
    CHECK(log::parse_level("warning") == log::Level::warning);
    CHECK_FALSE(log::parse_level("warn"));
    CHECK(log::parse_format("json") == log::Format::json);
    CHECK_FALSE(log::parse_format("JSON"));
    CHECK(log::parse_time("none") == log::Time::none);
    CHECK_FALSE(log::parse_time("local"));
}
