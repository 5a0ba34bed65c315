// BER-TLV (ISO 7816-4 annex D / EMV book 3 annex B): multi-byte tags, definite lengths up to 4 bytes.
#pragma once

#include <coconut/core/bytes.hpp>
#include <coconut/core/result.hpp>

#include <cstdint>
#include <optional>
#include <vector>

namespace coconut::apdu {

struct Tlv {
    std::uint32_t tag = 0;  // as written, e.g. 0x9F08, 0x6F
    Bytes value;
    // Constructed tags (bit 6 of the first tag byte) carry nested TLVs in `value`.
    bool constructed() const;
};

enum class TlvError : std::uint8_t { truncated_tag, truncated_length, bad_length, truncated_value, tag_too_long };

// Parses a sequence of TLVs (padding bytes 00 and FF between objects are skipped, as EMV allows).
Result<std::vector<Tlv>, TlvError> parse_tlvs(ByteView raw);
// Encodes one TLV with the minimal length form.
Bytes encode_tlv(std::uint32_t tag, ByteView value);
void append_tlv(Bytes& out, std::uint32_t tag, ByteView value);
// First TLV with `tag` in a parsed list (not recursive).
const Tlv* find_tlv(const std::vector<Tlv>& tlvs, std::uint32_t tag);

}  // namespace coconut::apdu
