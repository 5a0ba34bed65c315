// COCONUT_ASSERT stays on in every build type: this file is compiled with the test build's flags
// (-DNDEBUG in RelWithDebInfo), and a failed assertion must still stop the process with its message.
#include <coconut/core/assert.hpp>

#include <doctest/doctest.h>

#include <csignal>
#include <cstdio>
#include <string>
#include <sys/wait.h>
#include <unistd.h>

namespace {

struct ChildOutcome {
    int signal = 0;
    std::string stderr_text;
};

// Runs `body` in a child process with stderr captured; reports the signal that ended it (0 if none).
template <class Body>
ChildOutcome run_in_child(Body body) {
    int pipe_fds[2];
    REQUIRE(::pipe(pipe_fds) == 0);
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        ::dup2(pipe_fds[1], STDERR_FILENO);
        ::close(pipe_fds[0]);
        body();
        ::_exit(0);
    }
    ::close(pipe_fds[1]);
    ChildOutcome outcome;
    char buffer[512];
    for (ssize_t n; (n = ::read(pipe_fds[0], buffer, sizeof buffer)) > 0;) outcome.stderr_text.append(buffer, n);
    ::close(pipe_fds[0]);
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    if (WIFSIGNALED(status)) outcome.signal = WTERMSIG(status);
    return outcome;
}

int zero() { return 0; }  // opaque to the optimizer's constant folding of the condition below

}  // namespace

TEST_CASE("COCONUT_ASSERT aborts with file, line and condition, also under NDEBUG") {
#ifdef NDEBUG
    MESSAGE("built with NDEBUG: assert() is compiled out here, COCONUT_ASSERT is not");
#endif
    const auto outcome = run_in_child([] { COCONUT_ASSERT(zero() == 1); });
    CHECK(outcome.signal == SIGABRT);
    CHECK(outcome.stderr_text.find("test_assert.cpp:") != std::string::npos);
    CHECK(outcome.stderr_text.find("assertion `zero() == 1' failed") != std::string::npos);
}

TEST_CASE("COCONUT_ASSERT with a message names what it protects") {
    const auto outcome = run_in_child([] { COCONUT_ASSERT(zero() != 0, "queue record round trip"); });
    CHECK(outcome.signal == SIGABRT);
    CHECK(outcome.stderr_text.find("failed: queue record round trip") != std::string::npos);
}

TEST_CASE("a holding COCONUT_ASSERT does nothing and evaluates its condition once") {
    int evaluations = 0;
    COCONUT_ASSERT(++evaluations == 1);
    COCONUT_ASSERT(evaluations == 1, "evaluated once");
    CHECK(evaluations == 1);
    const auto outcome = run_in_child([] { COCONUT_ASSERT(zero() == 0); });
    CHECK(outcome.signal == 0);
    CHECK(outcome.stderr_text.empty());
}
