// The card lifecycle's tables and records (lifecycle.hpp).
#include <coconut/clearing/lifecycle.hpp>
#include <coconut/core/assert.hpp>

#include "registry_internal.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>

namespace coconut::clearing {

using detail::storage_error;

std::string_view to_string(Reporter reporter) { return reporter == Reporter::clerk ? "clerk" : "cardholder"; }

std::string_view to_string(CarryState state) {
    switch (state) {
        case CarryState::waiting: return "waiting";
        case CarryState::pending: return "pending_transfer";
        case CarryState::carried: return "carried";
    }
    return "?";
}

// ---- encodings ------------------------------------------------------------------------------------------

namespace {

constexpr std::uint8_t lifecycle_version = 1;
constexpr std::uint8_t person_version = 1;

void append_short_text(Bytes& out, std::string_view text) {
    COCONUT_ASSERT(text.size() <= 255, "short texts only");
    out.push_back(static_cast<std::uint8_t>(text.size()));
    out.insert(out.end(), text.begin(), text.end());
}

// A cursor over an encoded record: every read checks the length first.
struct RecordReader {
    ByteView b;
    std::size_t at = 0;
    bool ok = true;
    ByteView take(std::size_t n) {
        if (!ok || b.size() - at < n) {
            ok = false;
            return {};
        }
        ByteView v = b.subspan(at, n);
        at += n;
        return v;
    }
    std::uint64_t number(std::size_t width) {
        ByteView v = take(width);
        return ok ? read_be(v) : 0;
    }
    std::string text() {
        const auto n = static_cast<std::size_t>(number(1));
        ByteView v = take(n);
        return ok ? std::string(v.begin(), v.end()) : std::string();
    }
    Asn asn() {
        Asn a{};
        ByteView v = take(a.size());
        if (ok) std::copy(v.begin(), v.end(), a.begin());
        return a;
    }
};

}  // namespace

Bytes encode_lifecycle(const LifecycleRecord& r) {
    Bytes out{lifecycle_version};
    append(out, r.asn);
    append_be(out, r.reported_ns, 8);
    out.push_back(static_cast<std::uint8_t>(r.reporter));
    append_short_text(out, r.reported_by);
    out.push_back(static_cast<std::uint8_t>(r.state));
    append(out, r.replaced_by);
    append_be(out, r.replaced_ns, 8);
    append_be(out, r.medical_carried_fen, 8);
    append_be(out, r.carried_ns, 8);
    append_be(out, static_cast<std::uint64_t>(r.carried_fen), 8);
    append_be(out, r.late_count, 4);
    append_be(out, r.late_fen, 8);
    return out;
}

std::optional<LifecycleRecord> decode_lifecycle(ByteView bytes) {
    RecordReader in{bytes};
    if (in.number(1) != lifecycle_version) return std::nullopt;
    LifecycleRecord r;
    r.asn = in.asn();
    r.reported_ns = in.number(8);
    const auto reporter = in.number(1);
    r.reported_by = in.text();
    const auto state = in.number(1);
    r.replaced_by = in.asn();
    r.replaced_ns = in.number(8);
    r.medical_carried_fen = in.number(8);
    r.carried_ns = in.number(8);
    r.carried_fen = static_cast<std::int64_t>(in.number(8));
    r.late_count = static_cast<std::uint32_t>(in.number(4));
    r.late_fen = in.number(8);
    if (!in.ok || in.at != bytes.size() || reporter < 1 || reporter > 2 || state < 1 || state > 3) return std::nullopt;
    r.reporter = static_cast<Reporter>(reporter);
    r.state = static_cast<CarryState>(state);
    return r;
}

Bytes encode_person(const PersonRecord& p) {
    COCONUT_ASSERT(p.cards.size() <= person_cards_max);
    Bytes out{person_version};
    append_short_text(out, p.name);
    append_short_text(out, p.birth_date);
    out.push_back(static_cast<std::uint8_t>(p.cards.size()));
    for (const Asn& asn : p.cards) append(out, asn);
    return out;
}

std::optional<PersonRecord> decode_person(ByteView bytes) {
    RecordReader in{bytes};
    if (in.number(1) != person_version) return std::nullopt;
    PersonRecord p;
    p.name = in.text();
    p.birth_date = in.text();
    const auto count = static_cast<std::size_t>(in.number(1));
    if (count > person_cards_max) return std::nullopt;
    for (std::size_t i = 0; i < count && in.ok; ++i) p.cards.push_back(in.asn());
    if (!in.ok || in.at != bytes.size()) return std::nullopt;
    return p;
}

// ---- validation ---------------------------------------------------------------------------------------------

coconut::Result<std::string, std::string> normalize_ssn(std::string_view text) {
    std::string ssn(text);
    if (!ssn.empty() && ssn.back() == 'x') ssn.back() = 'X';
    const bool shape_ok = ssn.size() >= ssn_chars_min && ssn.size() <= ssn_chars_max &&
                          std::all_of(ssn.begin(), ssn.end() - 1, [](char c) { return c >= '0' && c <= '9'; }) &&
                          ((ssn.back() >= '0' && ssn.back() <= '9') || (ssn.back() == 'X' && ssn.size() == ssn_chars_max));
    if (!shape_ok) {
        return Unexpected<std::string>{"\"ssn\" must be 6 to 18 digits (an 18-character resident identity number may end in X)"};
    }
    return ssn;
}

namespace {

bool valid_person_birth_date(std::string_view d) {
    if (d.size() != 10 || d[4] != '-' || d[7] != '-') return false;
    for (std::size_t i : {0u, 1u, 2u, 3u, 5u, 6u, 8u, 9u}) {
        if (d[i] < '0' || d[i] > '9') return false;
    }
    const int month = (d[5] - '0') * 10 + (d[6] - '0');
    const int day = (d[8] - '0') * 10 + (d[9] - '0');
    return month >= 1 && month <= 12 && day >= 1 && day <= 31;
}

}  // namespace

coconut::Result<PersonEntry, std::string> read_person(const nlohmann::json& entry) {
    using Fail = Unexpected<std::string>;
    if (!entry.is_object()) return Fail{"\"person\" must be an object {\"ssn\",\"name\",\"birth_date\"}"};
    for (auto it = entry.begin(); it != entry.end(); ++it) {
        if (it.key() != "ssn" && it.key() != "name" && it.key() != "birth_date") return Fail{"unknown field \"" + it.key() + "\""};
    }
    for (const char* key : {"ssn", "name", "birth_date"}) {
        if (!entry.contains(key) || !entry.at(key).is_string()) return Fail{std::string("\"") + key + "\" must be a string"};
    }
    auto ssn = normalize_ssn(entry.at("ssn").get<std::string>());
    if (!ssn) return Fail{ssn.error()};
    PersonEntry p{*ssn, entry.at("name").get<std::string>(), entry.at("birth_date").get<std::string>()};
    if (p.name.empty() || p.name.size() > name_chars_max) return Fail{"\"name\" must be 1 to 128 characters"};
    if (!valid_person_birth_date(p.birth_date)) return Fail{"\"birth_date\" must be YYYY-MM-DD"};
    return p;
}

coconut::Result<std::vector<CardPerson>, std::string> read_registry_persons(std::string_view json_text) {
    using Fail = Unexpected<std::string>;
    auto root = nlohmann::json::parse(json_text, nullptr, false);
    if (root.is_discarded() || !root.is_object()) return Fail{"registry: not a JSON object"};
    std::vector<CardPerson> out;
    if (!root.contains("cards") || !root.at("cards").is_array()) return out;  // load_registry names what is wrong
    for (const auto& card : root.at("cards")) {
        if (!card.is_object() || !card.contains("person")) continue;
        const std::string asn_text = card.contains("asn") && card.at("asn").is_string() ? card.at("asn").get<std::string>() : "";
        auto bcd = digits_to_bcd(asn_text);
        if (asn_text.size() != 20 || !bcd) return Fail{"cards: \"asn\" must be 20 digits"};
        auto person = read_person(card.at("person"));
        if (!person) return Fail{"cards[" + asn_text + "].person: " + person.error()};
        CardPerson cp;
        std::copy(bcd->begin(), bcd->end(), cp.asn.begin());
        cp.person = std::move(person).value();
        out.push_back(std::move(cp));
    }
    return out;
}

// ---- the tables ----------------------------------------------------------------------------------------------

// "lifecycle": 'L' ‖ lost ASN → record; 'R' ‖ new ASN → lost ASN.
// "persons": 'P' ‖ SSN hash → person; 'C' ‖ ASN → SSN hash.
struct Lifecycle::Tables {
    MDB_dbi lifecycle = 0;
    MDB_dbi persons = 0;
    bool absent = false;  // a read-only environment written before these tables existed: nothing is recorded
};

namespace {

template <class Id>
Bytes table_key(char kind, const Id& id) {
    Bytes k{static_cast<std::uint8_t>(kind)};
    k.insert(k.end(), id.begin(), id.end());
    return k;
}

}  // namespace

Lifecycle::Lifecycle(std::unique_ptr<Tables> tables) : tables_(std::move(tables)) {}
Lifecycle::~Lifecycle() = default;

Result<std::unique_ptr<Lifecycle>> Lifecycle::open(lmdb::Env& env) {
    auto tables = std::make_unique<Tables>();
    auto exists = env.has_table("lifecycle");
    if (!exists) return Unexpected<Error>{storage_error(exists.error())};
    if (env.read_only() && !*exists) {
        tables->absent = true;
        return std::unique_ptr<Lifecycle>(new Lifecycle(std::move(tables)));
    }
    for (auto [name, dbi] : {std::pair{"lifecycle", &tables->lifecycle}, std::pair{"persons", &tables->persons}}) {
        auto opened = env.open_table(name);
        if (!opened) return Unexpected<Error>{storage_error(opened.error())};
        *dbi = *opened;
    }
    return std::unique_ptr<Lifecycle>(new Lifecycle(std::move(tables)));
}

lmdb::Result<std::optional<LifecycleRecord>> Lifecycle::record_in(const lmdb::Txn& txn, const Asn& lost_asn) const {
    if (tables_->absent) return std::optional<LifecycleRecord>{};
    auto value = txn.get(tables_->lifecycle, table_key('L', lost_asn));
    if (!value) return Unexpected<lmdb::Error>{value.error()};
    if (!*value) return std::optional<LifecycleRecord>{};
    auto record = decode_lifecycle(**value);
    if (!record) return Unexpected<lmdb::Error>{lmdb::Error{MDB_CORRUPTED, "decode lifecycle record"}};
    return record;
}

lmdb::Status Lifecycle::put_record(lmdb::Txn& txn, const LifecycleRecord& record) const {
    const Bytes bytes = encode_lifecycle(record);
    COCONUT_ASSERT(decode_lifecycle(bytes) == record, "lifecycle record round trip");
    if (auto put = txn.put(tables_->lifecycle, table_key('L', record.asn), bytes); !put) return put;
    if (record.state == CarryState::waiting) return Ok{};
    return txn.put(tables_->lifecycle, table_key('R', record.replaced_by), record.asn);
}

lmdb::Status Lifecycle::delete_record(lmdb::Txn& txn, const Asn& lost_asn) const {
    auto deleted = txn.del(tables_->lifecycle, table_key('L', lost_asn));
    if (!deleted) return Unexpected<lmdb::Error>{deleted.error()};
    return Ok{};
}

lmdb::Result<std::vector<LifecycleRecord>> Lifecycle::records_in(const lmdb::Txn& txn, const Asn& after, std::size_t limit) const {
    std::vector<LifecycleRecord> out;
    if (tables_->absent) return out;
    auto cursor = lmdb::Cursor::open(txn, tables_->lifecycle);
    if (!cursor) return Unexpected<lmdb::Error>{cursor.error()};
    Bytes start = table_key('L', after);
    start.push_back(0);  // strictly after `after`
    for (auto entry = cursor->seek(start); out.size() < limit; entry = cursor->next()) {
        if (!entry) return Unexpected<lmdb::Error>{entry.error()};
        if (!*entry || (*entry)->key.empty() || (*entry)->key[0] != 'L') break;
        auto record = decode_lifecycle((*entry)->value);
        if (!record) return Unexpected<lmdb::Error>{lmdb::Error{MDB_CORRUPTED, "decode lifecycle record"}};
        out.push_back(std::move(*record));
    }
    return out;
}

lmdb::Result<std::optional<LifecycleRecord>> Lifecycle::replacing_in(const lmdb::Txn& txn, const Asn& new_asn) const {
    if (tables_->absent) return std::optional<LifecycleRecord>{};
    auto value = txn.get(tables_->lifecycle, table_key('R', new_asn));
    if (!value) return Unexpected<lmdb::Error>{value.error()};
    if (!*value || (*value)->size() != Asn{}.size()) return std::optional<LifecycleRecord>{};
    Asn lost{};
    std::copy((*value)->begin(), (*value)->end(), lost.begin());
    return record_in(txn, lost);
}

lmdb::Result<std::optional<PersonRecord>> Lifecycle::person_in(const lmdb::Txn& txn, const SsnHash& ssn) const {
    if (tables_->absent) return std::optional<PersonRecord>{};
    auto value = txn.get(tables_->persons, table_key('P', ssn));
    if (!value) return Unexpected<lmdb::Error>{value.error()};
    if (!*value) return std::optional<PersonRecord>{};
    auto person = decode_person(**value);
    if (!person) return Unexpected<lmdb::Error>{lmdb::Error{MDB_CORRUPTED, "decode person record"}};
    return person;
}

lmdb::Result<std::optional<SsnHash>> Lifecycle::owner_in(const lmdb::Txn& txn, const Asn& asn) const {
    if (tables_->absent) return std::optional<SsnHash>{};
    auto value = txn.get(tables_->persons, table_key('C', asn));
    if (!value) return Unexpected<lmdb::Error>{value.error()};
    if (!*value || (*value)->size() != SsnHash{}.size()) return std::optional<SsnHash>{};
    SsnHash hash{};
    std::copy((*value)->begin(), (*value)->end(), hash.begin());
    return std::optional<SsnHash>(hash);
}

lmdb::Status Lifecycle::put_person(lmdb::Txn& txn, const SsnHash& ssn, const PersonRecord& person) const {
    const Bytes bytes = encode_person(person);
    COCONUT_ASSERT(decode_person(bytes) == person, "person record round trip");
    if (auto put = txn.put(tables_->persons, table_key('P', ssn), bytes); !put) return put;
    for (const Asn& asn : person.cards) {
        if (auto put = txn.put(tables_->persons, table_key('C', asn), ssn); !put) return put;
    }
    return Ok{};
}

}  // namespace coconut::clearing
