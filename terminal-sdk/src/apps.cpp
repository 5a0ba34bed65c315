#include <coconut/apdu/tlv.hpp>
#include <coconut/sdk/apps.hpp>

#include <fmt/format.h>
#include <iconv.h>

#include <ctime>

namespace coconut::sdk {
namespace {

using apdu::Command;

CardError status_error(std::uint16_t sw, std::string_view what) {
    return CardError{std::nullopt, sw, fmt::format("{}: card answered {:04X} ({})", what, sw, apdu::describe(sw))};
}

template <std::size_t N>
std::array<std::uint8_t, N> take(ByteView b, std::size_t offset) {
    std::array<std::uint8_t, N> out{};
    std::copy(b.begin() + static_cast<std::ptrdiff_t>(offset), b.begin() + static_cast<std::ptrdiff_t>(offset + N), out.begin());
    return out;
}

std::string gbk_to_utf8(ByteView gbk) {
    std::size_t length = gbk.size();
    while (length > 0 && (gbk[length - 1] == 0x00 || gbk[length - 1] == 0x20)) --length;
    iconv_t cd = iconv_open("UTF-8", "GBK");
    if (cd == reinterpret_cast<iconv_t>(-1)) return to_hex(gbk.first(length));
    std::string in(gbk.begin(), gbk.begin() + static_cast<std::ptrdiff_t>(length));
    std::string out(length * 3 + 4, '\0');
    char* in_ptr = in.data();
    std::size_t in_left = in.size();
    char* out_ptr = out.data();
    std::size_t out_left = out.size();
    const std::size_t rc = iconv(cd, &in_ptr, &in_left, &out_ptr, &out_left);
    iconv_close(cd);
    if (rc == static_cast<std::size_t>(-1)) return to_hex(gbk.first(length));
    out.resize(out.size() - out_left);
    return out;
}

std::string ascii(ByteView b) {
    std::string s(b.begin(), b.end());
    while (!s.empty() && (s.back() == '\0' || s.back() == ' ')) s.pop_back();
    return s;
}

}  // namespace

std::string format_date_time(const crypto::CardDateTime& when) {
    const std::string d = bcd_to_digits(when.date);
    const std::string t = bcd_to_digits(when.time);
    return fmt::format("{}-{}-{} {}:{}:{}", d.substr(0, 4), d.substr(4, 2), d.substr(6, 2), t.substr(0, 2), t.substr(2, 2), t.substr(4, 2));
}

// ---- purse -------------------------------------------------------------------------------------

CardResult<apdu::Response> PurseApp::run(const Command& command, std::size_t expected_data) {
    auto response = channel_.transmit(command);
    const std::string what = apdu::format_command(command).substr(0, 5);
    if (!response) return Unexpected{CardError{response.error(), 0, response.error().message}};
    if (!response->ok()) return Unexpected{status_error(response->sw, what)};
    if (expected_data != 0 && response->data.size() != expected_data)
        return Unexpected{CardError{std::nullopt, response->sw,
                                    fmt::format("{}: {} data bytes, expected {}", what, response->data.size(), expected_data)}};
    return std::move(*response);
}

CardResult<PurseInfo> PurseApp::select() {
    auto r = run(Command{0x00, 0xA4, 0x04, 0x00, Bytes(cos::purse_aid.begin(), cos::purse_aid.end()), 256});
    if (!r) return Unexpected{r.error()};
    return parse_purse_fci(r->data);
}

CardResult<PurseInfo> parse_purse_fci(ByteView fci_bytes) {
    // 6F { 84 AID, A5 { 9F08 version, 9F0C EF15 } }
    auto top = apdu::parse_tlvs(fci_bytes);
    const apdu::Tlv* fci = top ? apdu::find_tlv(*top, 0x6F) : nullptr;
    auto inner =
        fci ? apdu::parse_tlvs(fci->value) : Result<std::vector<apdu::Tlv>, apdu::TlvError>(Unexpected{apdu::TlvError::truncated_tag});
    const apdu::Tlv* a5 = inner ? apdu::find_tlv(*inner, 0xA5) : nullptr;
    auto proprietary =
        a5 ? apdu::parse_tlvs(a5->value) : Result<std::vector<apdu::Tlv>, apdu::TlvError>(Unexpected{apdu::TlvError::truncated_tag});
    const apdu::Tlv* ef15 = proprietary ? apdu::find_tlv(*proprietary, 0x9F0C) : nullptr;
    if (!ef15 || ef15->value.size() != cos::public_data_size)
        return Unexpected{CardError{std::nullopt, 0x9000, "purse FCI without EF15 (9F0C, 30 bytes)"}};
    const ByteView d = ef15->value;
    PurseInfo info;
    info.issuer_id = take<8>(d, cos::ef15::issuer_id);
    info.app_type = d[cos::ef15::app_type];
    info.app_version = d[cos::ef15::app_version];
    info.asn = take<10>(d, cos::ef15::asn);
    info.start_date = take<4>(d, cos::ef15::start_date);
    info.expiry_date = take<4>(d, cos::ef15::expiry_date);
    return info;
}

CardResult<std::uint32_t> PurseApp::balance() {
    auto r = run(Command{0x80, 0x5C, 0x00, 0x02, {}, 4}, 4);
    if (!r) return Unexpected{r.error()};
    return read_be32(r->data);
}

CardResult<InitPurchaseResult> PurseApp::initialize_purchase(std::uint32_t amount_fen, const TerminalId& terminal_id, bool capp,
                                                             std::uint8_t key_index) {
    Bytes data{key_index};
    append_be(data, amount_fen, 4);
    append(data, terminal_id);
    auto r = run(Command{0x80, 0x50, static_cast<std::uint8_t>(capp ? 0x03 : 0x01), 0x02, data, 0x0F}, 15);
    if (!r) return Unexpected{r.error()};
    const ByteView d = r->data;
    InitPurchaseResult out;
    out.balance_fen = read_be32(d.subspan(0, 4));
    out.offline_atc = read_be16(d.subspan(4, 2));
    out.overdraft_limit_fen = static_cast<std::uint32_t>(read_be(d.subspan(6, 3)));
    out.key_version = d[9];
    out.alg = d[10];
    out.random = take<4>(d, 11);
    return out;
}

CardResult<InitLoadResult> PurseApp::initialize_load(std::uint32_t amount_fen, const TerminalId& terminal_id, std::uint8_t key_index) {
    Bytes data{key_index};
    append_be(data, amount_fen, 4);
    append(data, terminal_id);
    auto r = run(Command{0x80, 0x50, 0x00, 0x02, data, 0x10}, 16);
    if (!r) return Unexpected{r.error()};
    const ByteView d = r->data;
    InitLoadResult out;
    out.balance_fen = read_be32(d.subspan(0, 4));
    out.online_atc = read_be16(d.subspan(4, 2));
    out.key_version = d[6];
    out.alg = d[7];
    out.random = take<4>(d, 8);
    out.mac1 = take<4>(d, 12);
    return out;
}

CardResult<Ok> PurseApp::update_capp_cache(std::uint8_t sfi, std::uint8_t record_id, ByteView record) {
    auto r = run(Command{0x80, 0xDC, record_id, static_cast<std::uint8_t>(sfi << 3), Bytes(record.begin(), record.end()), std::nullopt});
    if (!r) return Unexpected{r.error()};
    return Ok{};
}

CardResult<DebitResult> PurseApp::debit(std::uint32_t terminal_serial, const crypto::CardDateTime& when, const crypto::Mac4& mac1) {
    Bytes data = be_bytes(terminal_serial, 4);
    append(data, when.date);
    append(data, when.time);
    append(data, mac1);
    auto r = run(Command{0x80, 0x54, 0x01, 0x00, data, 8}, 8);
    if (!r) return Unexpected{r.error()};
    return DebitResult{take<4>(r->data, 0), take<4>(r->data, 4)};
}

CardResult<crypto::Mac4> PurseApp::credit_for_load(const crypto::CardDateTime& when, const crypto::Mac4& mac2) {
    Bytes data(when.date.begin(), when.date.end());
    append(data, when.time);
    append(data, mac2);
    auto r = run(Command{0x80, 0x52, 0x00, 0x00, data, 4}, 4);
    if (!r) return Unexpected{r.error()};
    return take<4>(r->data, 0);
}

CardResult<DebitResult> PurseApp::transaction_prove(std::uint8_t type, std::uint16_t atc) {
    auto r = run(Command{0x80, 0x5A, 0x00, type, be_bytes(atc, 2), 8}, 8);
    if (!r) return Unexpected{r.error()};
    return DebitResult{take<4>(r->data, 4), take<4>(r->data, 0)};  // the card sends MAC2 ‖ TAC
}

CardResult<std::vector<PurseLogRecord>> PurseApp::read_log() {
    std::vector<PurseLogRecord> out;
    for (std::uint8_t n = 1; n <= cos::purse_log_record_count; ++n) {
        auto r = channel_.transmit(Command{0x00,
                                           0xB2,
                                           n,
                                           static_cast<std::uint8_t>((cos::sfi_purse_log << 3) | 4),
                                           {},
                                           static_cast<std::size_t>(cos::purse_log_record_size)});
        if (!r) return Unexpected{CardError{r.error(), 0, r.error().message}};
        if (r->sw == apdu::value(apdu::Sw::record_not_found)) break;
        if (!r->ok() || r->data.size() != cos::purse_log_record_size) return Unexpected{status_error(r->sw, "READ RECORD EF18")};
        const ByteView d = r->data;
        PurseLogRecord rec;
        rec.atc = read_be16(d.subspan(cos::ef18::atc, 2));
        rec.overdraft_limit_fen = static_cast<std::uint32_t>(read_be(d.subspan(cos::ef18::overdraft_limit, 3)));
        rec.amount_fen = read_be32(d.subspan(cos::ef18::amount, 4));
        rec.type = d[cos::ef18::type];
        rec.terminal_id = take<6>(d, cos::ef18::terminal_id);
        rec.when.date = take<4>(d, cos::ef18::date);
        rec.when.time = take<3>(d, cos::ef18::time);
        out.push_back(rec);
    }
    return out;
}

CardResult<Bytes> PurseApp::read_capp_record(std::uint8_t record_id) {
    // P2 low bits 000: the record whose identifier (first byte) is P1.
    auto r = run(Command{0x00,
                         0xB2,
                         record_id,
                         static_cast<std::uint8_t>(cos::sfi_capp_record << 3),
                         {},
                         static_cast<std::size_t>(cos::capp_record_size)},
                 cos::capp_record_size);
    if (!r) return Unexpected{r.error()};
    return std::move(r->data);
}

// ---- PSAM --------------------------------------------------------------------------------------

CardResult<TerminalId> PsamApp::select() {
    auto selected = channel_.transmit(Command{0x00, 0xA4, 0x04, 0x00, Bytes(cos::psam_aid.begin(), cos::psam_aid.end()), 256});
    if (!selected) return Unexpected{CardError{selected.error(), 0, selected.error().message}};
    if (!selected->ok()) return Unexpected{status_error(selected->sw, "SELECT PSAM")};
    auto id = channel_.transmit(Command{0x00, 0xB0, static_cast<std::uint8_t>(0x80 | cos::sfi_psam_terminal_id), 0x00, {}, 6});
    if (!id) return Unexpected{CardError{id.error(), 0, id.error().message}};
    if (!id->ok() || id->data.size() != 6) return Unexpected{status_error(id->sw, "READ BINARY PSAM EF16")};
    auto key = channel_.transmit(Command{0x00, 0xB0, static_cast<std::uint8_t>(0x80 | cos::sfi_psam_key_index), 0x00, {}, 1});
    if (key && key->ok() && key->data.size() == 1) key_index_ = key->data[0];
    return take<6>(id->data, 0);
}

CardResult<PsamInit> PsamApp::initialize_purchase(const InitPurchaseResult& card, std::uint32_t amount_fen, std::uint8_t type,
                                                  const crypto::CardDateTime& when, const PurseInfo& purse) {
    Bytes data(card.random.begin(), card.random.end());
    append_be(data, card.offline_atc, 2);
    append_be(data, amount_fen, 4);
    data.push_back(type);
    append(data, when.date);
    append(data, when.time);
    data.push_back(card.key_version);
    data.push_back(card.alg);
    append(data, crypto::card_factor_from_asn(purse.asn));
    append(data, purse.issuer_id);
    auto r = channel_.transmit(Command{0x80, 0x70, 0x00, 0x00, data, 8});
    if (!r) return Unexpected{CardError{r.error(), 0, r.error().message}};
    if (!r->ok() || r->data.size() != 8) return Unexpected{status_error(r->sw, "PSAM 80 70")};
    return PsamInit{read_be32(ByteView(r->data).first(4)), take<4>(r->data, 4)};
}

CardResult<Ok> PsamApp::verify_mac2(const crypto::Mac4& mac2) {
    auto r = channel_.transmit(Command{0x80, 0x72, 0x00, 0x00, Bytes(mac2.begin(), mac2.end()), std::nullopt});
    if (!r) return Unexpected{CardError{r.error(), 0, r.error().message}};
    if (!r->ok()) return Unexpected{status_error(r->sw, "PSAM 80 72")};
    return Ok{};
}

// ---- social security -------------------------------------------------------------------------

CardResult<Ok> SocialSecurityApp::select() {
    auto r = channel_.transmit(Command{0x00, 0xA4, 0x04, 0x00, Bytes(cos::ssse_aid.begin(), cos::ssse_aid.end()), 256});
    if (!r) return Unexpected{CardError{r.error(), 0, r.error().message}};
    if (!r->ok()) return Unexpected{status_error(r->sw, "SELECT SSSE")};
    return Ok{};
}

CardResult<Bytes> SocialSecurityApp::read_tlv_record(std::uint8_t sfi, std::uint8_t tag) {
    auto r = channel_.transmit(Command{0x00, 0xB2, tag, static_cast<std::uint8_t>(sfi << 3), {}, 256});
    if (!r) return Unexpected{CardError{r.error(), 0, r.error().message}};
    if (!r->ok()) return Unexpected{status_error(r->sw, fmt::format("READ RECORD EF{:02X} tag {:02X}", sfi, tag))};
    if (r->data.size() < 2 || r->data[0] != tag || r->data[1] != r->data.size() - 2)
        return Unexpected{CardError{std::nullopt, r->sw, fmt::format("EF{:02X} tag {:02X}: malformed TLV record", sfi, tag)}};
    return Bytes(r->data.begin() + 2, r->data.end());
}

CardResult<Cardholder> SocialSecurityApp::read_cardholder() {
    Cardholder h;
    struct Item {
        std::uint8_t sfi;
        std::uint8_t tag;
        std::string* out;
        enum { text, gbk, bcd } kind;
    };
    const Item items[] = {{cos::sfi_ss_issuer, cos::ss_tag::card_identifier, &h.card_identifier, Item::text},
                          {cos::sfi_ss_issuer, cos::ss_tag::card_number, &h.card_number, Item::text},
                          {cos::sfi_ss_issuer, cos::ss_tag::issue_date, &h.issue_date, Item::bcd},
                          {cos::sfi_ss_issuer, cos::ss_tag::expiry_date, &h.expiry_date, Item::bcd},
                          {cos::sfi_ss_holder, cos::ss_tag::ssn, &h.ssn, Item::text},
                          {cos::sfi_ss_holder, cos::ss_tag::name, &h.name, Item::gbk},
                          {cos::sfi_ss_holder, cos::ss_tag::sex, &h.sex, Item::text},
                          {cos::sfi_ss_holder, cos::ss_tag::birth_date, &h.birth_date, Item::bcd}};
    for (const Item& item : items) {
        auto value = read_tlv_record(item.sfi, item.tag);
        if (!value) return Unexpected{value.error()};
        *item.out = item.kind == Item::gbk ? gbk_to_utf8(*value) : item.kind == Item::bcd ? bcd_to_digits(*value) : ascii(*value);
    }
    return h;
}

CardResult<Ok> SocialSecurityApp::verify_pin(std::string_view digits) {
    auto bcd = digits_to_bcd(digits);
    if (!bcd) return Unexpected{CardError{std::nullopt, 0, "PIN must be an even number of decimal digits"}};
    auto r = channel_.transmit(Command{0x00, 0x20, 0x00, 0x00, *bcd, std::nullopt});
    secure_wipe(bcd->data(), bcd->size());
    if (!r) return Unexpected{CardError{r.error(), 0, r.error().message}};
    if (!r->ok()) return Unexpected{status_error(r->sw, "VERIFY")};
    return Ok{};
}

CardResult<Bytes> SocialSecurityApp::internal_authenticate(ByteView challenge8) {
    auto r = channel_.transmit(Command{0x00, 0x88, 0x00, cos::default_key_index, Bytes(challenge8.begin(), challenge8.end()), 8});
    if (!r) return Unexpected{CardError{r.error(), 0, r.error().message}};
    if (!r->ok() || r->data.size() != 8) return Unexpected{status_error(r->sw, "INTERNAL AUTHENTICATE")};
    return std::move(r->data);
}

CardResult<std::string> SocialSecurityApp::medical_account() {
    auto df = channel_.transmit(Command{0x00, 0xA4, 0x00, 0x0C, be_bytes(cos::fid_medical_df, 2), std::nullopt});
    if (!df) return Unexpected{CardError{df.error(), 0, df.error().message}};
    if (!df->ok()) return Unexpected{status_error(df->sw, "SELECT DF04")};
    auto value = read_tlv_record(cos::sfi_medical_link, cos::ss_tag::medical_account);
    if (!value) return Unexpected{value.error()};
    return bcd_to_digits(*value);
}

}  // namespace coconut::sdk
