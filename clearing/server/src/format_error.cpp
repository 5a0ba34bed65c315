// The answer to a request that did not parse (server.hpp format_error_response).
#include <coconut/clearing/server.hpp>

#include <coconut/core/assert.hpp>
#include <coconut/iso8583/iso8583.hpp>

namespace coconut::clearing {

using iso8583::Message;
using iso8583::ResponseCode;

std::optional<Message> format_error_response(ByteView message) {
    const auto& dictionary = iso8583::iso87_dictionary();
    if (message.size() < iso8583::mti_size + iso8583::bitmap_size) return std::nullopt;
    const std::string mti(reinterpret_cast<const char*>(message.data()), iso8583::mti_size);
    auto response_mti = iso8583::response_mti(mti);
    if (!response_mti) return std::nullopt;
    std::size_t at = iso8583::mti_size;
    const bool secondary = (message[at] & 0x80) != 0;
    const std::size_t bitmap_bytes = secondary ? 2 * iso8583::bitmap_size : iso8583::bitmap_size;
    if (message.size() < at + bitmap_bytes) return std::nullopt;
    const ByteView bitmap = message.subspan(at, bitmap_bytes);
    at += bitmap_bytes;
    auto digits_value = [&](std::size_t count) -> std::optional<std::size_t> {
        if (at + count > message.size()) return std::nullopt;
        std::size_t n = 0;
        for (std::size_t i = 0; i < count; ++i) {
            const char c = static_cast<char>(message[at + i]);
            if (c < '0' || c > '9') return std::nullopt;
            n = n * 10 + static_cast<std::size_t>(c - '0');
        }
        at += count;
        return n;
    };
    std::optional<std::string> stan, terminal;
    // Walk the fields before 41 with the full 1987 dictionary (a field outside our profile still has a
    // known size), stopping at the first one that cannot be measured.
    for (int field = iso8583::field_first; field <= 41; ++field) {
        if ((bitmap[(field - 1) / 8] & (0x80 >> ((field - 1) % 8))) == 0) continue;
        const iso8583::FieldSpec& spec = dictionary[field];
        if (spec.format == iso8583::Format::none) break;
        std::optional<std::size_t> size = spec.length_max;
        if (spec.length_kind == iso8583::LengthKind::llvar) size = digits_value(2);
        if (spec.length_kind == iso8583::LengthKind::lllvar) size = digits_value(3);
        if (!size || *size > spec.length_max || at + *size > message.size()) break;
        const std::string value(reinterpret_cast<const char*>(message.data() + at), *size);
        at += *size;
        if (field == 11) stan = value;
        if (field == 41) terminal = value;
    }
    if (!stan || !terminal) return std::nullopt;
    Message response(*response_mti);
    response.set(11, *stan);
    response.set(41, *terminal);
    response.set(39, iso8583::response_code_text(ResponseCode::format_error));
    // Only answer what we could encode: a garbled 11 or 41 means we cannot be understood either.
    if (!iso8583::encode(response, iso8583::coconut_dictionary())) return std::nullopt;
    COCONUT_ASSERT(!iso8583::response_mti(response.mti()), "the answer is a response");
    return response;
}

}  // namespace coconut::clearing
