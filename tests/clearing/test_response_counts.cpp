// Answers to terminals counted by response MTI and code (ResponseCounts, /metrics coconut_iso_responses_total).
#include <coconut/clearing/response_counts.hpp>

#include <doctest/doctest.h>

#include <map>
#include <string>
#include <tuple>

using coconut::clearing::ResponseCounts;

TEST_CASE("answers are counted per response MTI and code; unknown MTIs and codes that are not two digits as other") {
    ResponseCounts counts;
    counts.count("0330", "00");
    counts.count("0330", "00");
    counts.count("0330", "94");
    counts.count("0210", "51");
    counts.count("0999", "00");  // not a response MTI of ISO8583.md
    counts.count("0810", "");    // no field 39
    counts.count("0810", "9A");
    CHECK(counts.get("0330", "00") == 2);
    CHECK(counts.get("0330", "94") == 1);
    CHECK(counts.get("0210", "51") == 1);
    CHECK(counts.get("0210", "00") == 0);
    std::map<std::tuple<std::string, std::string>, std::uint64_t> seen;
    counts.for_each([&](std::string_view mti, std::string_view code, std::uint64_t n) { seen[{std::string(mti), std::string(code)}] = n; });
    const std::map<std::tuple<std::string, std::string>, std::uint64_t> expected{
        {{"0330", "00"}, 2}, {{"0330", "94"}, 1}, {{"0210", "51"}, 1}, {{"other", "00"}, 1}, {{"0810", "other"}, 2}};
    CHECK(seen == expected);
}
