// SHA-256 (OpenSSL EVP), one helper for every digest in the project: the ledger's hash chain, card image
// and queue checksums, settlement file digests, derived ids and seeds. The digest is fetched from the
// provider once and each thread reuses one context, so a call costs the hash and nothing else (the
// ledger writer hashes every journal entry). A failure inside OpenSSL throws std::runtime_error: it
// means the crypto library is broken, not that an input was bad.
#pragma once

#include <coconut/core/bytes.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>

namespace coconut {

inline constexpr std::size_t sha256_size = 32;
using Sha256Digest = std::array<std::uint8_t, sha256_size>;

// SHA-256 of `data`.
Sha256Digest sha256(ByteView data);
// SHA-256 of the parts concatenated, without copying them into one buffer.
Sha256Digest sha256(std::initializer_list<ByteView> parts);
// Lower-case hex of SHA-256(`text`), as sha256sum prints it.
std::string sha256_hex(std::string_view text);

// An incremental SHA-256 for data that arrives in pieces (a log written line by line).
class Sha256 {
public:
    Sha256();
    ~Sha256();
    Sha256(const Sha256&) = delete;
    Sha256& operator=(const Sha256&) = delete;

    void update(ByteView data);
    void update(std::string_view text) { update(text_bytes(text)); }
    // The digest of everything updated so far; the object starts over afterwards.
    Sha256Digest finish();

private:
    struct Context;
    std::unique_ptr<Context> context_;
};

}  // namespace coconut
