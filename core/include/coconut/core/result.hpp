// A value or an error: the return type of every operation that can fail in an expected way
// (bad input, a status word, a full queue). Programmer errors assert instead (COCONUT_ASSERT).
#pragma once

#include <coconut/core/assert.hpp>

#include <utility>
#include <variant>

namespace coconut {

template <class E>
struct Unexpected {
    E error;
};
template <class E>
Unexpected(E) -> Unexpected<E>;

template <class T, class E>
class [[nodiscard]] Result {
public:
    Result(T value) : state_(std::in_place_index<0>, std::move(value)) {}                        // NOLINT: implicit by design
    Result(Unexpected<E> failure) : state_(std::in_place_index<1>, std::move(failure.error)) {}  // NOLINT

    bool ok() const { return state_.index() == 0; }
    explicit operator bool() const { return ok(); }

    T& value() & {
        COCONUT_ASSERT(ok(), "value() of a Result that holds an error");
        return std::get<0>(state_);
    }
    const T& value() const& {
        COCONUT_ASSERT(ok(), "value() of a Result that holds an error");
        return std::get<0>(state_);
    }
    T&& value() && {
        COCONUT_ASSERT(ok(), "value() of a Result that holds an error");
        return std::get<0>(std::move(state_));
    }
    const E& error() const {
        COCONUT_ASSERT(!ok(), "error() of a Result that holds a value");
        return std::get<1>(state_);
    }
    T* operator->() { return &value(); }
    const T* operator->() const { return &value(); }
    T& operator*() & { return value(); }
    const T& operator*() const& { return value(); }

private:
    std::variant<T, E> state_;
};

// Result<void, E>: success carries nothing.
struct Ok {};

template <class E>
using Status = Result<Ok, E>;

}  // namespace coconut

// COCONUT_TRY(var, expr): evaluates `expr` (a Result); on success declares `var` holding its value
// (moved out), on failure returns `Unexpected{error}` from the enclosing function.
// COCONUT_TRY(var, expr, on_error): on failure returns `on_error(error)` instead: a conversion to the
// enclosing function's error (`Unexpected<Error>{...}`) or whatever it returns (an exit code). `on_error`
// is pasted as written, so an overload set's name works.
#define COCONUT_TRY(...) COCONUT_DETAIL_TRY_PICK(__VA_ARGS__, COCONUT_DETAIL_TRY_CONVERT, COCONUT_DETAIL_TRY_PLAIN, unused)(__VA_ARGS__)
#define COCONUT_DETAIL_TRY_PICK(_1, _2, _3, name, ...) name
#define COCONUT_DETAIL_TRY_PLAIN(var, expr)                                \
    auto var##_result = (expr);                                            \
    if (!var##_result) return ::coconut::Unexpected{var##_result.error()}; \
    auto var = std::move(var##_result).value()
#define COCONUT_DETAIL_TRY_CONVERT(var, expr, on_error)       \
    auto var##_result = (expr);                               \
    if (!var##_result) return on_error(var##_result.error()); \
    auto var = std::move(var##_result).value()
