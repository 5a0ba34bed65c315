#include <coconut/iso8583/iso8583.hpp>
#include <coconut/core/assert.hpp>

#include <fmt/format.h>

#include <algorithm>

namespace coconut::iso8583 {
namespace {

// Field 65's bit announces a tertiary bitmap in ISO 8583:1987; no link we talk to uses one.
constexpr int tertiary_bitmap_bit = 65;
// Digits in an LL / LLL length prefix.
constexpr std::size_t prefix_digits(LengthKind kind) { return kind == LengthKind::llvar ? 2 : kind == LengthKind::lllvar ? 3 : 0; }
// An unsigned 64-bit number has at most 20 digits; 19 always fit.
constexpr std::size_t number_digits_max = 19;

bool is_digit(std::uint8_t c) { return c >= '0' && c <= '9'; }
bool is_alpha(std::uint8_t c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'); }

bool bit_is_set(ByteView bitmap, int bit) {
    const auto index = static_cast<std::size_t>(bit - 1);
    return (bitmap[index / 8] & (0x80u >> (index % 8))) != 0;
}
void set_bit(std::uint8_t* bitmap, int bit) {
    const auto index = static_cast<std::size_t>(bit - 1);
    bitmap[index / 8] = static_cast<std::uint8_t>(bitmap[index / 8] | (0x80u >> (index % 8)));
}

// The first character that breaks `format`, as an error code; nullopt when the value conforms.
std::optional<ErrorCode> check_characters(Format format, std::string_view value) {
    auto all = [&](auto&& allowed, std::size_t from = 0) {
        for (std::size_t i = from; i < value.size(); ++i) {
            if (!allowed(static_cast<std::uint8_t>(value[i]))) return false;
        }
        return true;
    };
    switch (format) {
        case Format::n: return all(is_digit) ? std::nullopt : std::optional(ErrorCode::not_numeric);
        case Format::an:
            return all([](std::uint8_t c) { return is_digit(c) || is_alpha(c) || c == ' '; }) ? std::nullopt
                                                                                              : std::optional(ErrorCode::bad_character);
        case Format::ans:
            return all([](std::uint8_t c) { return c >= 0x20 && c <= 0x7E; }) ? std::nullopt : std::optional(ErrorCode::bad_character);
        case Format::z:
            return all([](std::uint8_t c) { return is_digit(c) || c == '=' || c == 'D'; }) ? std::nullopt
                                                                                           : std::optional(ErrorCode::bad_character);
        case Format::xn:
            if (value.empty() || (value[0] != 'C' && value[0] != 'D')) return ErrorCode::bad_character;
            return all(is_digit, 1) ? std::nullopt : std::optional(ErrorCode::not_numeric);
        case Format::b: return std::nullopt;
        case Format::none: return ErrorCode::unknown_field;
    }
    return ErrorCode::unknown_field;
}

// Length rule of a field, shared by parse and encode so both sides agree.
bool length_allowed(const FieldSpec& spec, std::size_t length) {
    return spec.length_kind == LengthKind::fixed ? length == spec.length_max : length <= spec.length_max;
}

class Reader {
public:
    explicit Reader(ByteView bytes) : bytes_(bytes) {}
    std::size_t offset() const { return offset_; }
    std::size_t remaining() const { return bytes_.size() - offset_; }
    ByteView take(std::size_t count) {
        COCONUT_ASSERT(count <= remaining());
        ByteView out = bytes_.subspan(offset_, count);
        offset_ += count;
        return out;
    }

private:
    ByteView bytes_;
    std::size_t offset_ = 0;
};

Unexpected<Error> fail(ErrorCode code, int field, std::size_t offset) { return Unexpected{Error{code, field, offset}}; }

std::string_view as_text(ByteView bytes) { return {reinterpret_cast<const char*>(bytes.data()), bytes.size()}; }

bool mti_valid(std::string_view mti) {
    if (mti.size() != mti_size || mti[0] != '0') return false;
    for (char c : mti) {
        if (!is_digit(static_cast<std::uint8_t>(c))) return false;
    }
    return true;
}

Result<std::string, Error> parse_field(Reader& reader, int field, const FieldSpec& spec) {
    const std::size_t field_offset = reader.offset();
    std::size_t length = spec.length_max;
    if (const std::size_t width = prefix_digits(spec.length_kind); width > 0) {
        if (reader.remaining() < width) return fail(ErrorCode::truncated, field, field_offset);
        length = 0;
        for (std::uint8_t c : reader.take(width)) {
            if (!is_digit(c)) return fail(ErrorCode::bad_length, field, field_offset);
            length = length * 10 + (c - '0');
        }
        if (!length_allowed(spec, length)) return fail(ErrorCode::bad_length, field, field_offset);
    }
    if (reader.remaining() < length) return fail(ErrorCode::truncated, field, reader.offset());
    const std::size_t value_offset = reader.offset();
    std::string value(as_text(reader.take(length)));
    if (auto bad = check_characters(spec.format, value)) return fail(*bad, field, value_offset);
    return value;
}

}  // namespace

// ---- Message --------------------------------------------------------------------------------------

void Message::set(int field, std::string_view value) {
    COCONUT_ASSERT(field >= field_first && field <= field_last);
    if (fields_.empty() || fields_.back().first < field) {  // parse and most builders go in order
        fields_.emplace_back(field, std::string(value));
        return;
    }
    auto at = std::lower_bound(fields_.begin(), fields_.end(), field, [](const Field& f, int n) { return f.first < n; });
    if (at != fields_.end() && at->first == field) {
        at->second.assign(value);
    } else {
        fields_.emplace(at, field, std::string(value));
    }
}

void Message::set(int field, ByteView value) { set(field, as_text(value)); }

void Message::set_number(int field, std::uint64_t value, std::size_t width) {
    auto text = digits(value, width);
    COCONUT_ASSERT(text.has_value());  // callers range-check amounts and counters before building a message
    set(field, *text);
}

void Message::clear(int field) {
    COCONUT_ASSERT(field >= field_first && field <= field_last);
    std::erase_if(fields_, [field](const Field& f) { return f.first == field; });
}

const Message::Field* Message::find(int field) const {
    for (const Field& f : fields_) {
        if (f.first == field) return &f;
        if (f.first > field) break;
    }
    return nullptr;
}

bool Message::has(int field) const { return find(field) != nullptr; }

std::optional<std::string_view> Message::get(int field) const {
    const Field* f = find(field);
    if (f == nullptr) return std::nullopt;
    return std::string_view(f->second);
}

std::optional<Bytes> Message::get_bytes(int field) const {
    auto value = get(field);
    if (!value) return std::nullopt;
    return Bytes(value->begin(), value->end());
}

std::optional<std::uint64_t> Message::get_number(int field) const {
    auto value = get(field);
    if (!value || value->empty() || value->size() > number_digits_max) return std::nullopt;
    std::uint64_t number = 0;
    for (char c : *value) {
        if (!is_digit(static_cast<std::uint8_t>(c))) return std::nullopt;
        number = number * 10 + static_cast<std::uint64_t>(c - '0');
    }
    return number;
}

// ---- parse / encode ---------------------------------------------------------------------------------

Result<Message, Error> parse(ByteView message, const Dictionary& dictionary) {
    if (message.size() > message_size_max) return fail(ErrorCode::oversize, 0, 0);
    Reader reader(message);
    if (reader.remaining() < mti_size) return fail(ErrorCode::truncated, 0, 0);
    const std::string_view mti = as_text(reader.take(mti_size));
    if (!mti_valid(mti)) return fail(ErrorCode::bad_mti, 0, 0);

    std::array<std::uint8_t, 2 * bitmap_size> bitmap{};
    if (reader.remaining() < bitmap_size) return fail(ErrorCode::truncated, 0, reader.offset());
    const ByteView primary = reader.take(bitmap_size);
    std::copy(primary.begin(), primary.end(), bitmap.begin());
    Message out(mti);
    const bool secondary = bit_is_set(bitmap, 1);
    if (secondary) {
        if (reader.remaining() < bitmap_size) return fail(ErrorCode::truncated, 0, reader.offset());
        const ByteView second = reader.take(bitmap_size);
        std::copy(second.begin(), second.end(), bitmap.begin() + bitmap_size);
        out.secondary_bitmap = true;
    }
    const int bit_last = secondary ? field_last : 64;
    if (bit_last >= tertiary_bitmap_bit && bit_is_set(bitmap, tertiary_bitmap_bit)) {
        return fail(ErrorCode::bad_bitmap, tertiary_bitmap_bit, mti_size + bitmap_size);
    }

    std::size_t fields_present = 0;
    for (int field = field_first; field <= bit_last; ++field) {
        if (!bit_is_set(bitmap, field)) continue;
        ++fields_present;
        const FieldSpec& spec = dictionary[static_cast<std::size_t>(field)];
        if (spec.format == Format::none) return fail(ErrorCode::unknown_field, field, reader.offset());
        auto value = parse_field(reader, field, spec);
        if (!value) return Unexpected{value.error()};
        out.set(field, *value);
    }
    if (fields_present == 0) return fail(ErrorCode::bad_bitmap, 0, mti_size);
    if (reader.remaining() != 0) return fail(ErrorCode::trailing_data, 0, reader.offset());
    // One field per set bit (set() keeps them ordered and unique).
    COCONUT_ASSERT(out.fields().size() == fields_present && out.secondary_bitmap == secondary, "parsed bitmap");
    return out;
}

Result<Bytes, Error> encode(const Message& message, const Dictionary& dictionary) {
    if (!mti_valid(message.mti())) return fail(ErrorCode::bad_mti, 0, 0);
    if (message.has(tertiary_bitmap_bit)) return fail(ErrorCode::bad_bitmap, tertiary_bitmap_bit, 0);

    std::array<std::uint8_t, 2 * bitmap_size> bitmap{};
    bool any_field = false;
    bool secondary = message.secondary_bitmap;
    std::size_t fields_size = 0;  // prefixes and values: what the loop below writes after the bitmaps
    for (const auto& [field, value] : message.fields()) {
        const FieldSpec& spec = dictionary[static_cast<std::size_t>(field)];
        if (spec.format == Format::none) return fail(ErrorCode::unknown_field, field, 0);
        if (!length_allowed(spec, value.size())) return fail(ErrorCode::bad_length, field, 0);
        if (auto bad = check_characters(spec.format, value)) return fail(*bad, field, 0);
        set_bit(bitmap.data(), field);
        any_field = true;
        secondary = secondary || field > 64;
        fields_size += prefix_digits(spec.length_kind) + value.size();
    }
    if (!any_field) return fail(ErrorCode::bad_bitmap, 0, 0);
    if (secondary) set_bit(bitmap.data(), 1);

    Bytes out;
    out.reserve(256);
    out.insert(out.end(), message.mti().begin(), message.mti().end());
    out.insert(out.end(), bitmap.begin(), bitmap.begin() + static_cast<std::ptrdiff_t>(secondary ? 2 * bitmap_size : bitmap_size));
    for (const auto& [field, value] : message.fields()) {
        const FieldSpec& spec = dictionary[static_cast<std::size_t>(field)];
        if (const std::size_t width = prefix_digits(spec.length_kind); width > 0) {
            const auto prefix = digits(value.size(), width);
            COCONUT_ASSERT(prefix.has_value());  // length_allowed() bounded it by length_max ≤ 999
            out.insert(out.end(), prefix->begin(), prefix->end());
        }
        out.insert(out.end(), value.begin(), value.end());
    }
    // parse() reads back the bitmaps the loops set and each field at its announced length.
    const std::size_t bitmaps_size = secondary ? 2 * bitmap_size : bitmap_size;
    COCONUT_ASSERT(out.size() == mti_size + bitmaps_size + fields_size, "ISO 8583 message layout");
    COCONUT_ASSERT(bit_is_set(ByteView(out).subspan(mti_size, bitmap_size), 1) == secondary, "secondary bitmap bit");
    if (out.size() > message_size_max) return fail(ErrorCode::oversize, 0, 0);
    return out;
}

// ---- helpers -----------------------------------------------------------------------------------------

std::optional<std::string> response_mti(std::string_view mti) {
    if (!mti_valid(mti)) return std::nullopt;
    const char function = mti[2];
    if (function != '0' && function != '2' && function != '4') return std::nullopt;  // 1, 3, 5: responses
    std::string out(mti);
    out[2] = static_cast<char>(function + 1);
    if (out[3] == '1') out[3] = '0';  // a repeat (0101, 0221, 0401) is answered like the original
    return out;
}

std::optional<std::string> digits(std::uint64_t value, std::size_t width) {
    std::string out(width, '0');
    for (std::size_t i = width; i > 0; --i) {
        out[i - 1] = static_cast<char>('0' + value % 10);
        value /= 10;
    }
    if (value != 0) return std::nullopt;
    return out;
}

std::string_view to_string(ErrorCode code) {
    switch (code) {
        case ErrorCode::truncated: return "truncated";
        case ErrorCode::oversize: return "oversize";
        case ErrorCode::bad_mti: return "bad_mti";
        case ErrorCode::bad_bitmap: return "bad_bitmap";
        case ErrorCode::bad_length: return "bad_length";
        case ErrorCode::not_numeric: return "not_numeric";
        case ErrorCode::bad_character: return "bad_character";
        case ErrorCode::unknown_field: return "unknown_field";
        case ErrorCode::trailing_data: return "trailing_data";
    }
    return "unknown error";
}

std::string describe(const Error& error) {
    if (error.field == 0) return fmt::format("{} at offset {}", to_string(error.code), error.offset);
    return fmt::format("{} in field {} at offset {}", to_string(error.code), error.field, error.offset);
}

// ---- framing -----------------------------------------------------------------------------------------

Result<Bytes, Error> frame(ByteView message) {
    if (message.empty()) return fail(ErrorCode::bad_length, 0, 0);
    if (message.size() > message_size_max) return fail(ErrorCode::oversize, 0, 0);
    Bytes out;
    out.reserve(frame_header_size + message.size());
    append_be(out, message.size(), frame_header_size);
    append(out, message);
    return out;
}

Result<std::size_t, Error> frame_size(ByteView buffer) {
    if (buffer.size() < frame_header_size) return std::size_t{0};
    const std::size_t length = read_be16(buffer);
    if (length == 0) return fail(ErrorCode::bad_length, 0, 0);
    if (length > message_size_max) return fail(ErrorCode::oversize, 0, 0);
    if (buffer.size() < frame_header_size + length) return std::size_t{0};
    return frame_header_size + length;
}

// ---- response codes ------------------------------------------------------------------------------------

std::string response_code_text(ResponseCode code) {
    auto text = digits(static_cast<std::uint8_t>(code), 2);
    COCONUT_ASSERT(text.has_value());
    return *text;
}

std::optional<ResponseCode> parse_response_code(std::string_view text) {
    static constexpr ResponseCode known[] = {
        ResponseCode::approved,
        ResponseCode::refer_to_card_issuer,
        ResponseCode::invalid_merchant,
        ResponseCode::do_not_honour,
        ResponseCode::error,
        ResponseCode::partial_approval,
        ResponseCode::invalid_transaction,
        ResponseCode::invalid_amount,
        ResponseCode::invalid_card_number,
        ResponseCode::unable_to_locate_record,
        ResponseCode::format_error,
        ResponseCode::lost_card,
        ResponseCode::stolen_card,
        ResponseCode::insufficient_funds,
        ResponseCode::expired_card,
        ResponseCode::incorrect_pin,
        ResponseCode::not_permitted_to_cardholder,
        ResponseCode::not_permitted_to_terminal,
        ResponseCode::suspected_fraud,
        ResponseCode::exceeds_amount_limit,
        ResponseCode::restricted_card,
        ResponseCode::security_violation,
        ResponseCode::out_of_balance,
        ResponseCode::issuer_inoperative,
        ResponseCode::duplicate_transmission,
        ResponseCode::system_malfunction,
    };
    for (ResponseCode code : known) {
        if (response_code_text(code) == text) return code;
    }
    return std::nullopt;
}

}  // namespace coconut::iso8583
