#include <coconut/apdu/tlv.hpp>

namespace coconut::apdu {

bool Tlv::constructed() const {
    std::uint32_t first = tag;
    while (first > 0xFF) first >>= 8;
    return (first & 0x20) != 0;
}

Result<std::vector<Tlv>, TlvError> parse_tlvs(ByteView raw) {
    std::vector<Tlv> out;
    std::size_t pos = 0;
    while (pos < raw.size()) {
        if (raw[pos] == 0x00 || raw[pos] == 0xFF) {  // inter-object padding
            ++pos;
            continue;
        }
        std::uint32_t tag = raw[pos++];
        if ((tag & 0x1F) == 0x1F) {  // subsequent tag bytes while b8 is set
            int extra = 0;
            do {
                if (pos >= raw.size()) return Unexpected{TlvError::truncated_tag};
                if (++extra > 3) return Unexpected{TlvError::tag_too_long};
                tag = (tag << 8) | raw[pos];
            } while ((raw[pos++] & 0x80) != 0);
        }
        if (pos >= raw.size()) return Unexpected{TlvError::truncated_length};
        std::size_t length = raw[pos++];
        if (length & 0x80) {
            const std::size_t count = length & 0x7F;
            if (count == 0 || count > 4) return Unexpected{TlvError::bad_length};
            if (pos + count > raw.size()) return Unexpected{TlvError::truncated_length};
            length = static_cast<std::size_t>(read_be(raw.subspan(pos, count)));
            pos += count;
        }
        if (length > raw.size() - pos) return Unexpected{TlvError::truncated_value};
        out.push_back(
            Tlv{tag, Bytes(raw.begin() + static_cast<std::ptrdiff_t>(pos), raw.begin() + static_cast<std::ptrdiff_t>(pos + length))});
        pos += length;
    }
    return out;
}

void append_tlv(Bytes& out, std::uint32_t tag, ByteView value) {
    bool started = false;
    for (int shift = 24; shift >= 0; shift -= 8) {
        const auto byte = static_cast<std::uint8_t>(tag >> shift);
        if (byte != 0 || started || shift == 0) {
            out.push_back(byte);
            started = true;
        }
    }
    const std::size_t length = value.size();
    if (length < 0x80) {
        out.push_back(static_cast<std::uint8_t>(length));
    } else if (length <= 0xFF) {
        out.push_back(0x81);
        out.push_back(static_cast<std::uint8_t>(length));
    } else if (length <= 0xFFFF) {
        out.push_back(0x82);
        append_be(out, length, 2);
    } else {
        out.push_back(0x84);
        append_be(out, length, 4);
    }
    append(out, value);
}

Bytes encode_tlv(std::uint32_t tag, ByteView value) {
    Bytes out;
    append_tlv(out, tag, value);
    return out;
}

const Tlv* find_tlv(const std::vector<Tlv>& tlvs, std::uint32_t tag) {
    for (const auto& tlv : tlvs)
        if (tlv.tag == tag) return &tlv;
    return nullptr;
}

}  // namespace coconut::apdu
