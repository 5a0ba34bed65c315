// Helpers of the registry's source files (private to coconut::clearing_registry).
#pragma once

#include <coconut/clearing/plan.hpp>
#include <coconut/ledger/lmdb.hpp>

#include <string>
#include <utility>

namespace coconut::clearing::detail {

inline Error storage_error(const lmdb::Error& e) { return Error{ErrorCode::storage, e.message()}; }
inline Error storage_error(const ledger::Error& e) { return Error{ErrorCode::storage, e.message}; }
inline Error bad_input(std::string message) { return Error{ErrorCode::bad_input, std::move(message)}; }
inline const Error& to_error(const Error& e) { return e; }
inline Error to_error(const ledger::Error& e) { return storage_error(e); }
inline Error to_error(const lmdb::Error& e) { return storage_error(e); }

}  // namespace coconut::clearing::detail

// `auto var = expr`'s value, or return its error as an Error (detail::to_error).
#define COCONUT_REGISTRY_TRY(var, expr)                                                              \
    auto var##_result = (expr);                                                                      \
    if (!var##_result) return Unexpected<Error>{::coconut::clearing::detail::to_error(var##_result.error())}; \
    auto var = std::move(var##_result).value()
