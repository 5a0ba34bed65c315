// Result, Status and COCONUT_TRY: values and errors, the plain form (the error passes through) and the
// converting form (a function of the error is returned: another error type or an exit code).
#include <coconut/core/result.hpp>

#include <doctest/doctest.h>

#include <memory>
#include <string>

namespace {

using coconut::Ok;
using coconut::Result;
using coconut::Status;
using coconut::Unexpected;

Result<int, std::string> number(bool good) {
    if (!good) return Unexpected<std::string>{"no number"};
    return 21;
}

Result<int, std::string> doubled(bool good) {
    COCONUT_TRY(n, number(good));
    return 2 * n;
}

struct Wrapped {
    std::string why;
};
Unexpected<Wrapped> wrap(const std::string& why) { return Unexpected<Wrapped>{Wrapped{"wrapped: " + why}}; }

Status<Wrapped> converted(bool good) {
    COCONUT_TRY(n, number(good), wrap);
    CHECK(n == 21);
    return Ok{};
}

int exit_code(const std::string&) { return 3; }

int command(bool good) {
    COCONUT_TRY(n, number(good), exit_code);
    return n - 21;
}

Result<std::unique_ptr<int>, std::string> owned() { return std::make_unique<int>(7); }

Result<int, std::string> move_only() {
    COCONUT_TRY(p, owned());
    return *p;
}

}  // namespace

TEST_CASE("Result holds a value or an error") {
    auto good = number(true);
    REQUIRE(good.ok());
    CHECK(*good == 21);
    auto bad = number(false);
    REQUIRE_FALSE(bad);
    CHECK(bad.error() == "no number");
    Status<std::string> done = Ok{};
    CHECK(done.ok());
}

TEST_CASE("COCONUT_TRY: the value on success, the error returned on failure") {
    CHECK(doubled(true).value() == 42);
    CHECK(doubled(false).error() == "no number");
    CHECK(move_only().value() == 7);
}

TEST_CASE("COCONUT_TRY with a conversion: another error type, or an exit code") {
    CHECK(converted(true).ok());
    CHECK(converted(false).error().why == "wrapped: no number");
    CHECK(command(true) == 0);
    CHECK(command(false) == 3);
}
