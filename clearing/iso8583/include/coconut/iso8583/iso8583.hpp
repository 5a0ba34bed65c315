// ISO 8583:1987 financial transaction card messages — the wire format between terminals and the
// clearing daemon. One header documents the whole codec; clearing/ISO8583.md documents how we use it
// (MTIs, fields, private data, response codes).
//
// Wire layout of one message (jPOS's ISO87APackagerBBitmap — ASCII fields, binary bitmap — except
// that b fields are raw bytes as in jPOS's iso87binary, where ISO87APackagerBBitmap writes hex text):
//
//   MTI         4 ASCII digits, version digit '0' (1987), e.g. "0200"
//   bitmap      8 bytes binary, bit 1 (MSB of byte 0) = a secondary bitmap follows
//   [bitmap 2]  8 bytes binary, fields 65–128; accepted when present but empty
//   fields      in ascending order, each per the data-element dictionary:
//                 n / an / ans / z / xn  ASCII characters
//                 b                      raw bytes
//               fixed length, or LLVAR / LLLVAR with the length as 2 / 3 ASCII digits counting
//               characters (bytes for b)
//
// Frame on TCP: a 2-byte big-endian length (not counting itself), then the message (NACChannel).
//
// Values are kept exactly as they appear on the wire (no trimming, no padding); numeric helpers
// format and read fixed-width digit strings. Parsing never trusts a length: every failure is a typed
// Error naming the field, so the daemon can answer 39 = 30 (format error).
#pragma once

#include <coconut/core/bytes.hpp>
#include <coconut/core/result.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>
#include <string_view>

namespace coconut::iso8583 {

// ---- limits -----------------------------------------------------------------------------------

// Data elements 2–128; bit 1 is the secondary-bitmap indicator, not a field.
inline constexpr int field_first = 2;
inline constexpr int field_last = 128;
inline constexpr std::size_t mti_size = 4;
inline constexpr std::size_t bitmap_size = 8;
// Largest message we parse or build. Our profile's largest message (a hotlist chunk: three LLLVAR
// private fields of 999 plus the fixed fields) is under 3.3 KB; 8 KiB leaves room for standard
// fields we do not use yet and bounds every connection's receive buffer.
inline constexpr std::size_t message_size_max = 8192;
// The frame header: 2 bytes big-endian, the length of the message that follows.
inline constexpr std::size_t frame_header_size = 2;
inline constexpr std::size_t frame_size_max = frame_header_size + message_size_max;

// ---- data-element dictionary --------------------------------------------------------------------

enum class Format : std::uint8_t {
    none,  // not defined in this dictionary: a message carrying it fails with unknown_field
    n,     // digits 0–9
    an,    // letters, digits and space (space: RRNs and auth ids are space-padded in practice)
    ans,   // printable ASCII 0x20–0x7E
    z,     // track 2 characters: digits, '=' and 'D' (field separator)
    xn,    // 'C' (credit) or 'D' (debit) followed by digits; the length counts the sign
    b,     // raw bytes; the length counts bytes
};

enum class LengthKind : std::uint8_t {
    fixed,   // exactly length_max characters (bytes for b)
    llvar,   // 2 ASCII digits, then 0..length_max characters
    lllvar,  // 3 ASCII digits, then 0..length_max characters
};

struct FieldSpec {
    Format format = Format::none;
    LengthKind length_kind = LengthKind::fixed;
    std::uint16_t length_max = 0;
    std::string_view name;
};

// Index = field number (0 and 1 unused). A profile is a dictionary with fewer fields defined.
using Dictionary = std::array<FieldSpec, field_last + 1>;

// The ISO 8583:1987 data-element dictionary (the table in clearing/ISO8583.md). Field 65 ("bitmap,
// extended": the tertiary-bitmap indicator) is not a data element here: its bit is a bad_bitmap.
const Dictionary& iso87_dictionary();
// Coconut's terminal ⇄ clearing profile: the 1987 dictionary restricted to the fields listed in
// clearing/ISO8583.md §3. The daemon parses with it, so a field we do not use is unknown_field.
const Dictionary& coconut_dictionary();

// ---- errors -------------------------------------------------------------------------------------

enum class ErrorCode : std::uint8_t {
    truncated,      // the message ends inside the MTI, a bitmap, a length prefix or a field
    oversize,       // message longer than message_size_max, or a frame header announcing one
    bad_mti,        // MTI not 4 digits, or version digit not '0' (1987)
    bad_bitmap,     // no data element present, or bit 65 (tertiary bitmap) set
    bad_length,     // LL/LLL prefix not digits or above the field's maximum; fixed field of wrong size
                    // (encode); zero-length frame
    not_numeric,    // n field (or the digits of an xn field, or an LL/LLL-counted n field) with a non-digit
    bad_character,  // an / ans / z / xn sign character outside its set
    unknown_field,  // bit set for a field the dictionary does not define
    trailing_data,  // bytes left after the last field the bitmap announces
};

struct Error {
    ErrorCode code = ErrorCode::truncated;
    // The data element concerned (2–128), 0 for the MTI, the bitmaps or the frame.
    int field = 0;
    // Byte offset into the message where the problem was found (parse only).
    std::size_t offset = 0;
};

std::string_view to_string(ErrorCode code);
// "not_numeric in field 4 at offset 22"
std::string describe(const Error& error);

// ---- messages -----------------------------------------------------------------------------------

class Message {
public:
    Message() = default;
    explicit Message(std::string_view mti) : mti_(mti) {}

    const std::string& mti() const { return mti_; }
    void set_mti(std::string_view mti) { mti_ = mti; }

    // Sets a text field (n / an / ans / z / xn) or a b field (raw bytes) to its wire value. Checked by
    // encode(), not here, so a test can build any malformed message. `field` must be 2–128.
    void set(int field, std::string_view value);
    void set(int field, ByteView value);
    // Sets an n field to `value` as exactly `width` digits, zero-padded (value must fit).
    void set_number(int field, std::uint64_t value, std::size_t width);
    void clear(int field);

    bool has(int field) const;
    // The wire value of a field (for b fields: the raw bytes as chars); nullopt when absent.
    std::optional<std::string_view> get(int field) const;
    std::optional<Bytes> get_bytes(int field) const;
    // An n field read as an unsigned number; nullopt when absent, empty, not digits or > 19 digits.
    std::optional<std::uint64_t> get_number(int field) const;

    // The secondary bitmap is written when a field 65–128 is present or when this is set; parse() sets
    // it when the message carried one (possibly empty), so parse → encode reproduces the bytes.
    bool secondary_bitmap = false;

    // The present fields, ascending by number (what encode() walks).
    using Field = std::pair<int, std::string>;
    const std::vector<Field>& fields() const { return fields_; }

    // Same MTI and same fields; whether an empty secondary bitmap was on the wire does not count.
    friend bool operator==(const Message& a, const Message& b) { return a.mti_ == b.mti_ && a.fields_ == b.fields_; }

private:
    const Field* find(int field) const;

    std::string mti_;
    // Sorted by field number, each at most once: a message carries a dozen of the 128 fields, so a
    // short vector is smaller and faster to build, copy and search than a slot per field.
    std::vector<Field> fields_;
};

// Parses one message (without frame header) against `dictionary`.
Result<Message, Error> parse(ByteView message, const Dictionary& dictionary = iso87_dictionary());
// Encodes a message, checking every present field against `dictionary` exactly as parse() would, so
// encode never produces bytes that parse rejects.
Result<Bytes, Error> encode(const Message& message, const Dictionary& dictionary = iso87_dictionary());

// MTI helpers (jPOS ch02): the response to a request or advice — function digit 0→1, 2→3, originator
// digit 1 (repeat) → 0: 0100→0110, 0220→0230, 0401→0410. nullopt for a response MTI or a bad MTI.
std::optional<std::string> response_mti(std::string_view mti);
// Zero-padded decimal of exactly `width` digits; nullopt if `value` needs more.
std::optional<std::string> digits(std::uint64_t value, std::size_t width);

// ---- framing (2-byte big-endian length header) -----------------------------------------------------

// Header ‖ message. oversize if the message is longer than message_size_max; bad_length if empty.
Result<Bytes, Error> frame(ByteView message);
// Examines the start of a receive buffer: the size of the complete frame (header + message) that
// starts it, or 0 when more bytes are needed. oversize when the header announces more than
// message_size_max (the connection should be closed: no resynchronisation is possible), bad_length
// when it announces 0.
Result<std::size_t, Error> frame_size(ByteView buffer);

// ---- response codes (field 39) -----------------------------------------------------------------------

// The 1987 codes we answer with (docs/REFERENCES.md §2); the value is the code's number.
enum class ResponseCode : std::uint8_t {
    approved = 0,                      // 00
    refer_to_card_issuer = 1,          // 01
    invalid_merchant = 3,              // 03 unknown terminal / participant
    do_not_honour = 5,                 // 05
    error = 6,                         // 06
    partial_approval = 10,             // 10 0110: less than asked was held (field 4 = the amount held)
    invalid_transaction = 12,          // 12
    invalid_amount = 13,               // 13
    invalid_card_number = 14,          // 14 unknown card
    unable_to_locate_record = 25,      // 25 original of a reversal / completion not found
    format_error = 30,                 // 30 any parse Error
    lost_card = 41,                    // 41 on the hotlist as lost
    stolen_card = 43,                  // 43
    insufficient_funds = 51,           // 51
    expired_card = 54,                 // 54
    incorrect_pin = 55,                // 55
    not_permitted_to_cardholder = 57,  // 57
    not_permitted_to_terminal = 58,    // 58
    suspected_fraud = 59,              // 59 TAC / MAC verification failed
    exceeds_amount_limit = 61,         // 61
    restricted_card = 62,              // 62 blocked card
    security_violation = 63,           // 63 field 41 not the TLS certificate's terminal
    out_of_balance = 95,               // 95 reconciliation (0510)
    issuer_inoperative = 91,           // 91 HSM unreachable
    duplicate_transmission = 94,       // 94 same id, different content
    system_malfunction = 96,           // 96 ledger operating error (disk full, map full)
};

// Two ASCII digits, e.g. "00".
std::string response_code_text(ResponseCode code);
// The named code for two digits; nullopt for codes we do not define.
std::optional<ResponseCode> parse_response_code(std::string_view text);

}  // namespace coconut::iso8583
