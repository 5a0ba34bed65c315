// The Coconut profile of ISO 8583 (profile.hpp, ISO8583.md §3–§4).
#include <coconut/iso8583/profile.hpp>
#include <coconut/core/assert.hpp>

namespace coconut::iso8583 {
namespace {

using Fail = Unexpected<std::string>;

// `text` as an unsigned number when it is exactly `width` digits.
std::optional<std::uint64_t> fixed_digits(std::string_view text, std::size_t width) {
    if (text.size() != width) return std::nullopt;
    std::uint64_t n = 0;
    for (char c : text) {
        if (c < '0' || c > '9') return std::nullopt;
        n = n * 10 + static_cast<std::uint64_t>(c - '0');
    }
    return n;
}

constexpr std::size_t hotlist_version_digits = 8;
constexpr std::size_t hotlist_entry_chars = 21;  // + or - ‖ ASN as 20 digits

}  // namespace

namespace {

struct TypeMti {
    MessageType type;
    std::string_view mti;
};
constexpr TypeMti request_mtis[] = {
    {MessageType::authorization, "0100"},  {MessageType::financial, "0200"}, {MessageType::advice, "0220"},
    {MessageType::upload, "0320"},         {MessageType::reversal, "0400"},  {MessageType::reversal_advice, "0420"},
    {MessageType::reconciliation, "0500"}, {MessageType::network, "0800"},
};

}  // namespace

std::string request_mti(MessageType type, bool repeat) {
    for (const TypeMti& t : request_mtis) {
        if (t.type != type) continue;
        std::string mti(t.mti);
        if (repeat) mti[3] = '1';
        return mti;
    }
    COCONUT_ASSERT(false);  // every type has its MTI above
    return {};
}

std::optional<MessageType> request_type_of(std::string_view mti) {
    if (mti.size() != mti_size || (mti[3] != '0' && mti[3] != '1')) return std::nullopt;
    for (const TypeMti& t : request_mtis) {
        if (mti.substr(0, 3) == t.mti.substr(0, 3)) return t.type;
    }
    return std::nullopt;
}

Message transaction_request(MessageType type, const TransactionFields& f, bool repeat) {
    COCONUT_ASSERT(f.stan <= 999'999 && f.terminal_id.size() == 8);
    Message m(request_mti(type, repeat));
    m.set(2, f.card_number);
    m.set(3, processing_code_text(f.processing));
    m.set_number(4, f.amount_fen, 12);
    if (!f.transmission_time.empty()) m.set(7, f.transmission_time);
    m.set_number(11, f.stan, 6);
    if (!f.local_time.empty()) m.set(12, f.local_time);
    if (!f.local_date.empty()) m.set(13, f.local_date);
    if (type == MessageType::upload) m.set(25, "08");
    m.set(41, f.terminal_id);
    m.set(60, batch_field(f.batch_number));
    return m;
}

std::string_view processing_code_text(ProcessingCode code) {
    switch (code) {
        case ProcessingCode::purse_purchase: return "000000";
        case ProcessingCode::medical_purchase: return "003000";
        case ProcessingCode::purse_load: return "210000";
        case ProcessingCode::refund: return "200000";
        case ProcessingCode::carried_load: return "280000";
        case ProcessingCode::medical_inquiry: return "313000";
        case ProcessingCode::medical_refund: return "200030";
    }
    return "";
}

namespace {
constexpr std::string_view medical_available_prefix = "3002156C";
constexpr std::size_t amount_digits = 12;
}  // namespace

std::string medical_available_field(std::uint64_t fen) {
    COCONUT_ASSERT(fen <= 999'999'999'999ULL, "an amount fits 12 digits");
    std::string digits = std::to_string(fen);
    return std::string(medical_available_prefix) + std::string(amount_digits - digits.size(), '0') + digits;
}

std::optional<std::uint64_t> parse_medical_available_field(std::string_view field54) {
    if (field54.size() != medical_available_prefix.size() + amount_digits || !field54.starts_with(medical_available_prefix))
        return std::nullopt;
    std::uint64_t fen = 0;
    for (char c : field54.substr(medical_available_prefix.size())) {
        if (c < '0' || c > '9') return std::nullopt;
        fen = fen * 10 + static_cast<std::uint64_t>(c - '0');
    }
    return fen;
}

std::optional<ProcessingCode> parse_processing_code(std::string_view text) {
    for (ProcessingCode code :
         {ProcessingCode::purse_purchase, ProcessingCode::medical_purchase, ProcessingCode::purse_load, ProcessingCode::refund,
          ProcessingCode::carried_load, ProcessingCode::medical_inquiry, ProcessingCode::medical_refund}) {
        if (processing_code_text(code) == text) return code;
    }
    return std::nullopt;
}

std::optional<ProcessingCode> processing_code_of(const Message& request) {
    auto field3 = request.get(3);
    if (!field3) return std::nullopt;
    return parse_processing_code(*field3);
}

Message network_request(NetworkCode code, std::uint32_t stan, std::string_view terminal_id) {
    Message m("0800");
    m.set_number(11, stan, 6);
    m.set(41, terminal_id);
    m.set_number(70, static_cast<std::uint64_t>(code), 3);
    return m;
}

std::optional<NetworkCode> network_code_of(const Message& request) {
    auto code = request.get_number(70);
    if (!code) return std::nullopt;
    for (NetworkCode known :
         {NetworkCode::sign_on, NetworkCode::sign_off, NetworkCode::hotlist_download, NetworkCode::card_challenge, NetworkCode::echo}) {
        if (*code == static_cast<std::uint64_t>(known)) return known;
    }
    return std::nullopt;
}

std::string card_number(const CardAsn& asn) { return bcd_to_digits(asn).substr(4); }

std::string batch_field(std::uint32_t batch_number) {
    COCONUT_ASSERT(batch_number <= batch_number_max);
    return *digits(batch_number, 6);
}

std::optional<std::uint32_t> batch_of(const Message& request) {
    auto batch = request.get(60);
    if (!batch || batch->size() < 6) return std::nullopt;
    auto n = fixed_digits(batch->substr(0, 6), 6);
    if (!n) return std::nullopt;
    return static_cast<std::uint32_t>(*n);
}

std::string encode_original_data(const OriginalData& o) {
    COCONUT_ASSERT(o.mti.size() == mti_size && o.stan <= 999'999 && o.transmission_time.size() == 10);
    return o.mti + *digits(o.stan, 6) + o.transmission_time + std::string(22, '0');
}

std::optional<OriginalData> parse_original_data(std::string_view field90) {
    if (field90.size() != 42 || !fixed_digits(field90, 42)) return std::nullopt;
    OriginalData o;
    o.mti = std::string(field90.substr(0, 4));
    o.stan = static_cast<std::uint32_t>(*fixed_digits(field90.substr(4, 6), 6));
    o.transmission_time = std::string(field90.substr(10, 10));
    return o;
}

std::string encode_hotlist_position(const HotlistPosition& p) {
    COCONUT_ASSERT(p.version <= hotlist_version_max && p.chunk_index <= hotlist_chunk_index_max);
    return *digits(p.version, hotlist_version_digits) + *digits(p.chunk_index, 4);
}

std::optional<HotlistPosition> parse_hotlist_position(std::string_view field48) {
    if (field48.size() != hotlist_version_digits + 4) return std::nullopt;
    auto version = fixed_digits(field48.substr(0, hotlist_version_digits), hotlist_version_digits);
    auto chunk = fixed_digits(field48.substr(hotlist_version_digits), 4);
    if (!version || !chunk) return std::nullopt;
    return HotlistPosition{*version, static_cast<std::uint32_t>(*chunk)};
}

std::string encode_hotlist_chunk(const HotlistChunk& chunk) {
    COCONUT_ASSERT(chunk.version <= hotlist_version_max && chunk.entries.size() <= hotlist_entries_per_chunk);
    std::string out = *digits(chunk.version, hotlist_version_digits);
    out += chunk.more ? '1' : '0';
    for (const HotlistEntry& e : chunk.entries) {
        out += e.added ? '+' : '-';
        out += bcd_to_digits(e.asn);
    }
    return out;
}

Result<HotlistChunk, std::string> parse_hotlist_chunk(std::string_view text) {
    if (text.size() < hotlist_version_digits + 1) return Fail{"field 63 shorter than version and more-flag"};
    HotlistChunk chunk;
    auto version = fixed_digits(text.substr(0, hotlist_version_digits), hotlist_version_digits);
    if (!version) return Fail{"field 63 version is not 8 digits"};
    chunk.version = *version;
    const char more = text[hotlist_version_digits];
    if (more != '0' && more != '1') return Fail{"field 63 more-flag is not 0 or 1"};
    chunk.more = more == '1';
    std::string_view rest = text.substr(hotlist_version_digits + 1);
    if (rest.size() % hotlist_entry_chars != 0) return Fail{"field 63 entries are not 21 characters each"};
    if (rest.size() / hotlist_entry_chars > hotlist_entries_per_chunk) return Fail{"field 63 holds more than 47 entries"};
    for (std::size_t i = 0; i < rest.size(); i += hotlist_entry_chars) {
        const std::string entry_name = "field 63 entry " + std::to_string(i / hotlist_entry_chars + 1);
        HotlistEntry entry;
        if (rest[i] != '+' && rest[i] != '-') return Fail{entry_name + ": not + or -"};
        entry.added = rest[i] == '+';
        auto bcd = digits_to_bcd(rest.substr(i + 1, 20));
        if (!bcd || bcd->size() != entry.asn.size()) return Fail{entry_name + ": ASN not 20 digits"};
        std::copy(bcd->begin(), bcd->end(), entry.asn.begin());
        chunk.entries.push_back(entry);
    }
    return chunk;
}

namespace {

struct TotalField {
    int field;
    std::size_t width;
    std::uint64_t BatchTotalsFields::*member;
};
constexpr TotalField total_fields[] = {
    {74, 10, &BatchTotalsFields::credits_count}, {75, 10, &BatchTotalsFields::credit_reversals_count},
    {76, 10, &BatchTotalsFields::debits_count},  {77, 10, &BatchTotalsFields::debit_reversals_count},
    {86, 16, &BatchTotalsFields::credits_fen},   {87, 16, &BatchTotalsFields::credit_reversals_fen},
    {88, 16, &BatchTotalsFields::debits_fen},    {89, 16, &BatchTotalsFields::debit_reversals_fen},
};

}  // namespace

void set_batch_totals(Message& request, const BatchTotalsFields& totals) {
    for (const TotalField& f : total_fields) request.set_number(f.field, totals.*f.member, f.width);
}

std::optional<BatchTotalsFields> batch_totals_of(const Message& request) {
    if (!request.has(76) || !request.has(88)) return std::nullopt;
    BatchTotalsFields totals;
    for (const TotalField& f : total_fields) {
        if (!request.has(f.field)) continue;
        auto value = request.get_number(f.field);
        if (!value) return std::nullopt;
        totals.*f.member = *value;
    }
    return totals;
}

std::string encode_net_amount(std::int64_t net_fen) {
    const std::uint64_t magnitude = net_fen < 0 ? 0 - static_cast<std::uint64_t>(net_fen) : static_cast<std::uint64_t>(net_fen);
    return (net_fen < 0 ? "C" : "D") + *digits(magnitude, 16);
}

std::optional<std::int64_t> parse_net_amount(std::string_view field97) {
    if (field97.size() != 17 || (field97[0] != 'C' && field97[0] != 'D')) return std::nullopt;
    auto magnitude = fixed_digits(field97.substr(1), 16);
    if (!magnitude) return std::nullopt;
    const auto value = static_cast<std::int64_t>(*magnitude);
    return field97[0] == 'C' ? -value : value;
}

Message make_response(const Message& request, ResponseCode code) {
    auto mti = response_mti(request.mti());
    COCONUT_ASSERT(mti.has_value());  // the daemon refuses response MTIs before its engine sees them
    Message response(*mti);
    for (int field : echoed_fields) {
        if (auto value = request.get(field)) response.set(field, *value);
    }
    response.set(39, response_code_text(code));
    return response;
}

std::optional<ResponseCode> response_code_of(const Message& answer) {
    auto field39 = answer.get(39);
    if (!field39) return std::nullopt;
    return parse_response_code(*field39);
}

}  // namespace coconut::iso8583
