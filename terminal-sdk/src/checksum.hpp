// The 8-byte checksum that ends hotlist files and queue log records: SHA-256[0..8].
#pragma once

#include <coconut/apdu/bytes.hpp>

#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <cstdint>

namespace coconut::sdk {

constexpr std::size_t checksum_size = 8;

inline std::array<std::uint8_t, checksum_size> checksum(ByteView data) {
    std::array<std::uint8_t, 32> digest{};
    unsigned int length = 0;
    EVP_Digest(data.data(), data.size(), digest.data(), &length, EVP_sha256(), nullptr);
    std::array<std::uint8_t, checksum_size> out{};
    std::copy(digest.begin(), digest.begin() + checksum_size, out.begin());
    return out;
}

}  // namespace coconut::sdk
