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
// A failed step's error as the registry's Error (COCONUT_TRY's conversion, coconut/core/result.hpp).
inline Unexpected<Error> as_failure(const Error& e) { return Unexpected<Error>{e}; }
inline Unexpected<Error> as_failure(const ledger::Error& e) { return Unexpected<Error>{storage_error(e)}; }
inline Unexpected<Error> as_failure(const lmdb::Error& e) { return Unexpected<Error>{storage_error(e)}; }

}  // namespace coconut::clearing::detail
