#include <coconut/core/assert.hpp>

#include <cstdio>
#include <cstdlib>

namespace coconut::detail {

void assertion_failed(const char* condition, const char* message, const char* file, int line, const char* function) noexcept {
    if (message != nullptr) {
        std::fprintf(stderr, "%s:%d: %s: assertion `%s' failed: %s\n", file, line, function, condition, message);
    } else {
        std::fprintf(stderr, "%s:%d: %s: assertion `%s' failed\n", file, line, function, condition);
    }
    std::fflush(stderr);
    std::abort();
}

}  // namespace coconut::detail
