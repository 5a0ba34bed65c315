// Assertions that stay on. COCONUT_ASSERT checks a condition the code relies on — an invariant, a
// precondition of a function, that a decoder read back what its encoder wrote — in every build type,
// release included (`assert` disappears under -DNDEBUG, which is how the main test build, the kill -9
// loops and the demo are compiled). A failed assertion is a programmer error: it names the file, line,
// function and condition on stderr and aborts, so the process stops before it writes anything wrong.
//
// Expected failures (bad input, a full queue, a status word) are not assertions: they return a Result.
//
//   COCONUT_ASSERT(count <= capacity);
//   COCONUT_ASSERT(decoded.amount == record.amount, "queue record round trip");
#pragma once

namespace coconut::detail {

// Writes "FILE:LINE: FUNCTION: assertion `CONDITION' failed[: MESSAGE]" to stderr and aborts.
[[noreturn]] void assertion_failed(const char* condition, const char* message, const char* file, int line, const char* function) noexcept;

}  // namespace coconut::detail

#define COCONUT_ASSERT_1(condition, message) \
    (static_cast<bool>(condition) ? void(0) : ::coconut::detail::assertion_failed(#condition, message, __FILE__, __LINE__, __func__))

// COCONUT_ASSERT(condition) or COCONUT_ASSERT(condition, "what it protects").
#define COCONUT_ASSERT(...) COCONUT_ASSERT_SELECT(__VA_ARGS__, COCONUT_ASSERT_MSG_, COCONUT_ASSERT_ONE_, unused)(__VA_ARGS__)
#define COCONUT_ASSERT_SELECT(a, b, name, ...) name
#define COCONUT_ASSERT_ONE_(condition) COCONUT_ASSERT_1(condition, nullptr)
#define COCONUT_ASSERT_MSG_(condition, message) COCONUT_ASSERT_1(condition, message)
