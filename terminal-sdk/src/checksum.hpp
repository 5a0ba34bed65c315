// The 8-byte checksum that ends hotlist files and queue log records: SHA-256[0..8].
#pragma once

#include <coconut/core/bytes.hpp>
#include <coconut/core/sha256.hpp>

#include <algorithm>
#include <array>
#include <cstdint>

namespace coconut::sdk {

constexpr std::size_t checksum_size = 8;

inline std::array<std::uint8_t, checksum_size> checksum(ByteView data) {
    const Sha256Digest digest = sha256(data);
    std::array<std::uint8_t, checksum_size> out{};
    std::copy(digest.begin(), digest.begin() + checksum_size, out.begin());
    return out;
}

}  // namespace coconut::sdk
