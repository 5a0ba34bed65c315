// Identifiers and record layouts of the coconut card (docs/CARD-SPEC.md §1, §6, §7): the one place where an
// AID, a file id, an SFI or a record layout is defined. The card OS, the terminal SDK and the tools
// all read them from here.
#pragma once

#include <coconut/core/bytes.hpp>
#include <coconut/core/assert.hpp>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>

namespace coconut::cos {

// ---- applications ---------------------------------------------------------------------------
// Purse ADF, T-Union EP.
inline constexpr std::array<std::uint8_t, 8> purse_aid{0xA0, 0x00, 0x00, 0x06, 0x32, 0x01, 0x01, 0x05};
// SSSE: "sx1.sh." + GBK 社会保障.
inline constexpr std::array<std::uint8_t, 15> ssse_aid{0x73, 0x78, 0x31, 0x2E, 0x73, 0x68, 0x2E, 0xC9,
                                                       0xE7, 0xBB, 0xE1, 0xB1, 0xA3, 0xD5, 0xCF};
// PSAM DF: "MOT.CPSAM01" preceded by the RID.
inline constexpr std::array<std::uint8_t, 16> psam_aid{0xA0, 0x00, 0x00, 0x06, 0x32, 0x4D, 0x4F, 0x54,
                                                       0x2E, 0x43, 0x50, 0x53, 0x41, 0x4D, 0x30, 0x31};
// Payment system environment "1PAY.SYS.DDF01".
inline constexpr std::array<std::uint8_t, 14> pse_name{'1', 'P', 'A', 'Y', '.', 'S', 'Y', 'S', '.', 'D', 'D', 'F', '0', '1'};

// File identifiers.
inline constexpr std::uint16_t fid_mf = 0x3F00;
inline constexpr std::uint16_t fid_purse_adf = 0x1001;
inline constexpr std::uint16_t fid_ssse_df = 0xDDF1;
inline constexpr std::uint16_t fid_medical_df = 0xDF04;
inline constexpr std::uint16_t fid_psam_df = 0x1001;

// ---- purse ADF files (SFI = low byte of the FID) ---------------------------------------------
inline constexpr std::uint8_t sfi_public = 0x15;       // EF15 public data, 30 B
inline constexpr std::uint8_t sfi_cardholder = 0x16;   // EF16 cardholder, 55 B
inline constexpr std::uint8_t sfi_management = 0x17;   // EF17 management, 60 B
inline constexpr std::uint8_t sfi_purse_log = 0x18;    // EF18 cyclic 10 × 23 B
inline constexpr std::uint8_t sfi_capp_record = 0x1A;  // EF1A composite transit records
inline constexpr std::uint8_t sfi_trip_log = 0x1E;     // EF1E cyclic trip log, 48 B

inline constexpr std::size_t public_data_size = 30;
inline constexpr std::size_t cardholder_size = 55;
inline constexpr std::size_t management_size = 60;
inline constexpr std::size_t purse_log_record_size = 23;
inline constexpr std::size_t purse_log_record_count = 10;
inline constexpr std::size_t capp_record_size = 48;
// EF1A holds one record per composite application id (bus = 01); two spare ids for other operators.
inline constexpr std::size_t capp_record_count = 3;
inline constexpr std::size_t trip_log_record_size = 48;
inline constexpr std::size_t trip_log_record_count = 20;

// EF15 public data: issuer id(8) ‖ app type(1) ‖ app version(1) ‖ ASN(10 BCD) ‖ start(4) ‖ expiry(4) ‖ FCI(2).
namespace ef15 {
inline constexpr std::size_t issuer_id = 0, app_type = 8, app_version = 9, asn = 10, start_date = 20, expiry_date = 24, fci_data = 28;
}

// EF18 purse log record: ATC(2) ‖ overdraft limit(3) ‖ amount(4) ‖ type(1) ‖ terminal id(6) ‖ date(4) ‖ time(3).
namespace ef18 {
inline constexpr std::size_t atc = 0, overdraft_limit = 2, amount = 5, type = 9, terminal_id = 10, date = 16, time = 20;
}

// ---- EF1A bus entry/exit record (Profile, docs/CARD-SPEC.md §6), 48 bytes, written by 80 DC in a CAPP purchase.
// Record id 01. An entry tap writes state = entered with the entry line/station/time and the amount held
// (0 for a pure entry record); the exit tap charges by the fare table and writes state = closed.
namespace bus_record {
inline constexpr std::uint8_t record_id_value = 0x01;
inline constexpr std::uint8_t state_closed = 0x00;   // no open journey
inline constexpr std::uint8_t state_entered = 0x01;  // tapped in, not yet out
inline constexpr std::size_t record_id = 0;          // 1: composite application id (01 = bus)
inline constexpr std::size_t length = 1;             // 1: record length (0x30)
inline constexpr std::size_t lock_flag = 2;          // 1: 00 = application usable
inline constexpr std::size_t state = 3;              // 1: state_closed / state_entered
inline constexpr std::size_t line = 4;               // 2: line number, u16
inline constexpr std::size_t station = 6;            // 2: station number on the line, u16
inline constexpr std::size_t vehicle = 8;            // 4: vehicle id, u32
inline constexpr std::size_t terminal_id = 12;       // 6: terminal id, BCD
inline constexpr std::size_t date_time = 18;         // 7: BCD YYYYMMDDhhmmss (entry or exit time)
inline constexpr std::size_t fare_fen = 25;          // 4: fare charged by this tap, u32 fen
inline constexpr std::size_t operator_id = 29;       // 4: bus operator (participant) id, u32
inline constexpr std::size_t entry_line = 33;        // 2: on exit, the line the journey started on
inline constexpr std::size_t entry_station = 35;     // 2: on exit, the entry station
// 37..47 RFU, zero.

// The record's fields (record id, length and lock flag are fixed: 01, 0x30, 00).
struct BusRecord {
    std::uint8_t state = state_closed;
    std::uint16_t line = 0;
    std::uint16_t station = 0;
    std::uint32_t vehicle = 0;
    std::array<std::uint8_t, 6> terminal_id{};
    std::array<std::uint8_t, 7> date_time{};  // BCD YYYYMMDDhhmmss, Hainan time
    std::uint32_t fare_fen = 0;
    std::uint32_t operator_id = 0;
    std::uint16_t entry_line = 0;
    std::uint16_t entry_station = 0;
    friend bool operator==(const BusRecord&, const BusRecord&) = default;
};

namespace detail {
inline void put(Bytes& out, std::size_t offset, std::uint64_t value, std::size_t width) {
    for (std::size_t i = 0; i < width; ++i) out[offset + i] = static_cast<std::uint8_t>(value >> (8 * (width - 1 - i)));
}
}  // namespace detail

// The 48 bytes 80 DC writes into EF1A (and EF1E's trip log).
inline Bytes encode(const BusRecord& r) {
    Bytes out(capp_record_size, 0);
    out[record_id] = record_id_value;
    out[length] = static_cast<std::uint8_t>(capp_record_size);
    out[state] = r.state;
    detail::put(out, line, r.line, 2);
    detail::put(out, station, r.station, 2);
    detail::put(out, vehicle, r.vehicle, 4);
    std::copy(r.terminal_id.begin(), r.terminal_id.end(), out.begin() + terminal_id);
    std::copy(r.date_time.begin(), r.date_time.end(), out.begin() + date_time);
    detail::put(out, fare_fen, r.fare_fen, 4);
    detail::put(out, operator_id, r.operator_id, 4);
    detail::put(out, entry_line, r.entry_line, 2);
    detail::put(out, entry_station, r.entry_station, 2);
    COCONUT_ASSERT(out.size() == capp_record_size && read_be16(ByteView(out).subspan(entry_station, 2)) == r.entry_station &&
                       read_be32(ByteView(out).subspan(fare_fen, 4)) == r.fare_fen,
                   "bus record encoding");
    return out;
}

// A record read from the card; nullopt unless it is 48 bytes.
inline std::optional<BusRecord> decode(ByteView in) {
    if (in.size() != capp_record_size) return std::nullopt;
    BusRecord r;
    r.state = in[state];
    r.line = read_be16(in.subspan(line, 2));
    r.station = read_be16(in.subspan(station, 2));
    r.vehicle = read_be32(in.subspan(vehicle, 4));
    std::copy_n(in.begin() + terminal_id, r.terminal_id.size(), r.terminal_id.begin());
    std::copy_n(in.begin() + date_time, r.date_time.size(), r.date_time.begin());
    r.fare_fen = read_be32(in.subspan(fare_fen, 4));
    r.operator_id = read_be32(in.subspan(operator_id, 4));
    r.entry_line = read_be16(in.subspan(entry_line, 2));
    r.entry_station = read_be16(in.subspan(entry_station, 2));
    return r;
}
}  // namespace bus_record

// ---- SSSE (docs/CARD-SPEC.md §7) ---------------------------------------------------------------------
inline constexpr std::uint8_t sfi_ss_issuer = 0x05;     // EF05 issuer items (TLV records)
inline constexpr std::uint8_t sfi_ss_holder = 0x06;     // EF06 holder items (TLV records)
inline constexpr std::uint8_t sfi_medical_link = 0x08;  // DF04/EF08 medical account link (TLV records)
namespace ss_tag {
inline constexpr std::uint8_t card_identifier = 0x01, issue_date = 0x05, expiry_date = 0x06, card_number = 0x07;
inline constexpr std::uint8_t ssn = 0x08, name = 0x09, sex = 0x0A, ethnicity = 0x0B, birthplace = 0x0C, birth_date = 0x0D;
// DF04/EF08 (Profile): medical account number (20 digits BCD, 10 B), insurance region (3 B BCD),
// insured person type (1 B).
inline constexpr std::uint8_t medical_account = 0x30, insurance_region = 0x31, insured_type = 0x32;
}  // namespace ss_tag

// ---- PSAM (docs/CARD-SPEC.md §5) ---------------------------------------------------------------------
inline constexpr std::uint8_t sfi_psam_terminal_id = 0x16;  // EF16: terminal id, 6 B BCD
inline constexpr std::uint8_t sfi_psam_key_index = 0x17;    // EF17: purchase key index(1) ‖ key version(1)

// ---- key indices -----------------------------------------------------------------------------
// The key index a terminal names in INITIALIZE (80 50 … key index) and INTERNAL/EXTERNAL AUTHENTICATE.
inline constexpr std::uint8_t default_key_index = 0x01;
inline constexpr std::uint8_t alg_3des = 0x00;

}  // namespace coconut::cos
