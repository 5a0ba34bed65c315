// Inside Tokens (http.hpp): its tables and its key, shared by the files that implement it
// (http_tokens.cpp: tokens, clerks, journal, cycles, adjustments; clerk_grants.cpp: grants).
#pragma once

#include <coconut/clearing/http.hpp>

#include <sodium.h>

#include <array>
#include <cstdint>

namespace coconut::clearing::http {

// The 32-byte token key, wiped when the store closes.
struct TokenKey {
    std::array<std::uint8_t, crypto_generichash_KEYBYTES> bytes{};
    ~TokenKey() { sodium_memzero(bytes.data(), bytes.size()); }
};

struct Tokens::State {
    lmdb::Env& env;
    MDB_dbi card_tokens = 0;
    MDB_dbi clerks = 0;
    MDB_dbi journal = 0;
    MDB_dbi settlement_cycles = 0;
    MDB_dbi adjustments = 0;
    MDB_dbi grants = 0;      // "http_clerk_grants": grants of roles that need a second clerk
    MDB_dbi activation = 0;  // "http_activation_codes": one-time activation codes (api/activation.cpp owns the records)
    TokenKey key;
};

}  // namespace coconut::clearing::http
