// Card and clerk tokens (keyed hashes only), the clerk journal, and the offline token commands.
#include "tokens_state.hpp"

#include <coconut/clearing/http.hpp>
#include <coconut/core/assert.hpp>
#include <coconut/core/durable_file.hpp>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <sodium.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <unistd.h>

#include <charconv>
#include <chrono>
#include <cstring>
#include <map>
#include <stdexcept>

namespace coconut::clearing::http {

namespace {

constexpr std::uint8_t record_version = 1;
constexpr std::size_t card_token_record_size = 1 + 10 + 32 + 8;
constexpr const char* token_key_file = "http-token.key";

Error storage_error(const lmdb::Error& e) { return Error{ErrorCode::storage, e.message()}; }
Error storage_error(const ledger::Error& e) { return Error{ErrorCode::storage, e.message}; }

ByteView text_view(std::string_view s) { return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()}; }

std::uint64_t now_ns() {
    return static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch()).count());
}

// Reads DATA/http-token.key (owner-only, exactly 32 bytes) or creates it from the CSPRNG.
Status load_or_create_key(const std::filesystem::path& path, TokenKey& key) {
    if (!std::filesystem::exists(path)) {
        randombytes_buf(key.bytes.data(), key.bytes.size());
        if (auto written = write_file_atomically(path, key.bytes, 0600); !written) {
            return Unexpected<Error>{Error{ErrorCode::storage, "cannot create the token key: " + written.error().message()}};
        }
        return Ok{};
    }
    const int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return Unexpected<Error>{Error{ErrorCode::storage, fmt::format("cannot open {}: {}", path.string(), std::strerror(errno))}};
    struct stat st {};
    const bool stat_ok = ::fstat(fd, &st) == 0;
    ssize_t n = -1;
    if (stat_ok && S_ISREG(st.st_mode) && (st.st_mode & 077) == 0) n = ::read(fd, key.bytes.data(), key.bytes.size() + 0);
    std::uint8_t extra = 0;
    const bool longer = n == static_cast<ssize_t>(key.bytes.size()) && ::read(fd, &extra, 1) == 1;
    ::close(fd);
    if (!stat_ok || !S_ISREG(st.st_mode) || (st.st_mode & 077) != 0) {
        return Unexpected<Error>{Error{ErrorCode::storage, fmt::format("{} must be a regular file readable by its owner only "
                                                                       "(chmod 600 {})",
                                                                       path.string(), path.string())}};
    }
    if (n != static_cast<ssize_t>(key.bytes.size()) || longer) {
        return Unexpected<Error>{Error{ErrorCode::storage, fmt::format("{} must hold exactly {} bytes", path.string(), key.bytes.size())}};
    }
    return Ok{};
}

Bytes encode_card_token(const CardToken& t) {
    Bytes out;
    out.reserve(card_token_record_size);
    out.push_back(record_version);
    append(out, t.asn);
    append(out, t.hash);
    append_be(out, t.issued_ns, 8);
    COCONUT_ASSERT(out.size() == card_token_record_size);
    return out;
}

std::optional<CardToken> decode_card_token(ByteView b) {
    if (b.size() != card_token_record_size || b[0] != record_version) return std::nullopt;
    CardToken t;
    std::copy_n(b.begin() + 1, t.asn.size(), t.asn.begin());
    std::copy_n(b.begin() + 11, t.hash.size(), t.hash.begin());
    t.issued_ns = read_be(b.subspan(43, 8));
    return t;
}

// A card token record that decodes back to what was encoded (issued once per card: the check is cheap).
Bytes checked_card_token(const CardToken& t) {
    Bytes out = encode_card_token(t);
    const auto back = decode_card_token(out);
    COCONUT_ASSERT(back && back->asn == t.asn && back->hash == t.hash && back->issued_ns == t.issued_ns, "card token record round trip");
    return out;
}

Bytes encode_clerk(const Clerk& c) {
    COCONUT_ASSERT(!c.name.empty() && c.name.size() <= clerk_name_chars_max, "a clerk's name is checked before it is stored");
    Bytes out;
    out.push_back(record_version);
    out.push_back(c.roles);
    append_be(out, c.created_ns, 8);
    append(out, text_view(c.name));
    return out;
}

std::optional<Clerk> decode_clerk(ByteView b) {
    if (b.size() < 11 || b.size() > 10 + clerk_name_chars_max || b[0] != record_version) return std::nullopt;
    Clerk c;
    c.roles = b[1];
    c.created_ns = read_be(b.subspan(2, 8));
    c.name.assign(reinterpret_cast<const char*>(b.data() + 10), b.size() - 10);
    return c;
}

Bytes checked_clerk(const Clerk& c) {
    Bytes out = encode_clerk(c);
    const auto back = decode_clerk(out);
    COCONUT_ASSERT(back && back->name == c.name && back->roles == c.roles && back->created_ns == c.created_ns, "clerk record round trip");
    return out;
}

std::array<std::uint8_t, 8> sequence_key(std::uint64_t sequence) {
    std::array<std::uint8_t, 8> key{};
    for (int i = 0; i < 8; ++i) key[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(sequence >> (56 - 8 * i));
    return key;
}

nlohmann::json action_json(const ClerkAction& a) {
    return {{"timestamp_ns", a.timestamp_ns}, {"clerk", a.clerk},  {"action", a.action}, {"target", a.target},
            {"outcome", a.outcome},           {"detail", a.detail}};
}

std::optional<ClerkAction> decode_action(std::uint64_t sequence, ByteView value) {
    auto j = nlohmann::json::parse(value.begin(), value.end(), nullptr, false);
    if (j.is_discarded() || !j.is_object()) return std::nullopt;
    try {
        return ClerkAction{sequence,
                           j.at("timestamp_ns").get<std::uint64_t>(),
                           j.at("clerk").get<std::string>(),
                           j.at("action").get<std::string>(),
                           j.at("target").get<std::string>(),
                           j.at("outcome").get<std::string>(),
                           j.at("detail").get<std::string>()};
    } catch (const nlohmann::json::exception&) {
        return std::nullopt;
    }
}

template <class T>
Result<T> read_txn(const lmdb::Env& env, auto&& body) {
    auto txn = lmdb::Txn::begin(env, lmdb::Txn::Mode::read_only);
    if (!txn) return Unexpected<Error>{storage_error(txn.error())};
    auto out = body(*txn);
    if (!out) return Unexpected<Error>{storage_error(out.error())};
    return std::move(*out);
}

// One offline commit of `write` (no ledger events) through the ledger, so the journal head and the
// tables move together.
Status commit_offline(ledger::Ledger& ledger, std::function<lmdb::Status(lmdb::Txn&)> write) {
    ledger::Batch batch;
    batch.after = [&](lmdb::Txn& txn, std::span<const ledger::EventResult>) { return write(txn); };
    auto applied = ledger.apply_group(std::span<const ledger::Batch>(&batch, 1));
    if (!applied) return Unexpected<Error>{storage_error(applied.error())};
    return Ok{};
}

// A token file (0600, written whole under a temporary name, then renamed) without its own fsync: a
// thousand cards would cost two thousand synced writes; sync_filesystem_of() makes them all durable
// at once before the tokens are committed.
// The temporary name is new (mkostemp: O_CREAT | O_EXCL, mode 0600): a file someone placed under a
// predictable name is never opened, truncated or renamed over the token file.
bool write_token_file(const std::filesystem::path& path, std::string_view line) {
    std::string temp = path.string() + ".XXXXXX";
    const int fd = ::mkostemp(temp.data(), O_CLOEXEC);
    if (fd < 0) return false;
    const bool ok = ::fchmod(fd, 0600) == 0 && ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
    ::close(fd);
    if (ok && std::rename(temp.c_str(), path.c_str()) == 0) return true;
    ::unlink(temp.c_str());
    return false;
}

// syncfs(2) of the file system holding `directory`: every file written and renamed there is durable.
bool sync_filesystem_of(const std::filesystem::path& directory) {
    const int fd = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return false;
    const bool ok = ::syncfs(fd) == 0;
    ::close(fd);
    return ok;
}

// The journal entry of an offline command (clerk "admin").
lmdb::Status journal_admin(const Tokens& tokens, lmdb::Txn& txn, std::string action, std::string target, std::string detail) {
    auto logged = tokens.append_journal(txn, ClerkAction{0, 0, "admin", std::move(action), std::move(target), "ok", std::move(detail)});
    if (!logged) return Unexpected{logged.error()};
    return Ok{};
}

}  // namespace

// Settlement cycles and adjustments are JSON values (rare, read by people), ids as id_hex writes them.

std::string encode_cycle(const SettlementCycle& c) {
    return nlohmann::json{{"start_ns", c.start_ns}, {"end_ns", c.end_ns}, {"first_posted_ns", c.first_posted_ns}, {"clerk", c.clerk}}.dump();
}

std::optional<SettlementCycle> decode_cycle(std::uint32_t cycle, ByteView value) {
    auto j = nlohmann::json::parse(value.begin(), value.end(), nullptr, false);
    if (j.is_discarded() || !j.is_object()) return std::nullopt;
    try {
        return SettlementCycle{cycle, j.at("start_ns").get<std::uint64_t>(), j.at("end_ns").get<std::uint64_t>(),
                               j.at("first_posted_ns").get<std::uint64_t>(), j.at("clerk").get<std::string>()};
    } catch (const nlohmann::json::exception&) {
        return std::nullopt;
    }
}

std::string encode_adjustment(const Adjustment& a) {
    return nlohmann::json{{"debit_account_id", id_hex(a.debit_account_id)},
                          {"credit_account_id", id_hex(a.credit_account_id)},
                          {"ledger", a.ledger},
                          {"amount", a.amount},
                          {"reason", a.reason},
                          {"maker", a.maker},
                          {"proposed_ns", a.proposed_ns},
                          {"status", std::string(to_string(a.status))},
                          {"checker", a.checker},
                          {"decided_ns", a.decided_ns},
                          {"note", a.note}}
        .dump();
}

std::optional<Adjustment> decode_adjustment(std::uint64_t number, ByteView value) {
    auto j = nlohmann::json::parse(value.begin(), value.end(), nullptr, false);
    if (j.is_discarded() || !j.is_object()) return std::nullopt;
    try {
        Adjustment a;
        a.number = number;
        auto debit = parse_id_hex(j.at("debit_account_id").get<std::string>());
        auto credit = parse_id_hex(j.at("credit_account_id").get<std::string>());
        auto status = parse_adjustment_status(j.at("status").get<std::string>());
        if (!debit || !credit || !status) return std::nullopt;
        a.debit_account_id = *debit;
        a.credit_account_id = *credit;
        a.ledger = j.at("ledger").get<std::uint32_t>();
        a.amount = j.at("amount").get<std::uint64_t>();
        a.reason = j.at("reason").get<std::string>();
        a.maker = j.at("maker").get<std::string>();
        a.proposed_ns = j.at("proposed_ns").get<std::uint64_t>();
        a.status = *status;
        a.checker = j.at("checker").get<std::string>();
        a.decided_ns = j.at("decided_ns").get<std::uint64_t>();
        a.note = j.at("note").get<std::string>();
        return a;
    } catch (const nlohmann::json::exception&) {
        return std::nullopt;
    }
}

std::array<std::uint8_t, 4> cycle_key(std::uint32_t cycle) {
    return {static_cast<std::uint8_t>(cycle >> 24), static_cast<std::uint8_t>(cycle >> 16), static_cast<std::uint8_t>(cycle >> 8),
            static_cast<std::uint8_t>(cycle)};
}

// ---- card numbers, roles ------------------------------------------------------------------------------

CardNumber card_number_of(const Asn& asn) {
    CardNumber number{};
    std::copy(asn.end() - number.size(), asn.end(), number.begin());
    return number;
}

std::optional<CardNumber> parse_card_number(std::string_view digits) {
    if (digits.size() != 16) return std::nullopt;
    auto bcd = digits_to_bcd(digits);
    if (!bcd || bcd->size() != 8) return std::nullopt;
    CardNumber number{};
    std::copy(bcd->begin(), bcd->end(), number.begin());
    return number;
}

std::string to_string(const CardNumber& number) { return bcd_to_digits(number); }

std::string id_hex(const ledger::Id& id) { return fmt::format("{:016x}{:016x}", id.high, id.low); }

std::optional<ledger::Id> parse_id_hex(std::string_view text) {
    if (text.size() != 32) return std::nullopt;
    ledger::Id id;
    for (int half = 0; half < 2; ++half) {
        std::uint64_t part = 0;
        const char* first = text.data() + half * 16;
        auto [end, ec] = std::from_chars(first, first + 16, part, 16);
        if (ec != std::errc() || end != first + 16) return std::nullopt;
        (half == 0 ? id.high : id.low) = part;
    }
    return id;
}

std::optional<std::uint8_t> parse_roles(std::string_view text) {
    static const std::map<std::string_view, std::uint8_t> names{{"hotlist", roles::hotlist},       {"registry", roles::registry},
                                                                {"settlement", roles::settlement}, {"read", roles::read},
                                                                {"adjust", roles::adjust},         {"clerks", roles::clerks},
                                                                {"cluster", roles::cluster},       {"counter", roles::counter}};
    std::uint8_t out = 0;
    for (;;) {
        const auto comma = text.find(',');
        auto found = names.find(text.substr(0, comma));
        if (found == names.end()) return std::nullopt;  // also an empty name ("", "read,")
        out |= found->second;
        if (comma == std::string_view::npos) return out;
        text = text.substr(comma + 1);
    }
}

std::vector<std::string> role_names(std::uint8_t bits) {
    std::vector<std::string> out;
    if (bits & roles::hotlist) out.emplace_back("hotlist");
    if (bits & roles::registry) out.emplace_back("registry");
    if (bits & roles::settlement) out.emplace_back("settlement");
    if (bits & roles::read) out.emplace_back("read");
    if (bits & roles::adjust) out.emplace_back("adjust");
    if (bits & roles::clerks) out.emplace_back("clerks");
    if (bits & roles::cluster) out.emplace_back("cluster");
    if (bits & roles::counter) out.emplace_back("counter");
    return out;
}

std::string_view to_string(AdjustmentStatus status) {
    switch (status) {
        case AdjustmentStatus::proposed: return "proposed";
        case AdjustmentStatus::approved: return "approved";
        case AdjustmentStatus::rejected: return "rejected";
    }
    return "unknown";
}

std::optional<AdjustmentStatus> parse_adjustment_status(std::string_view text) {
    for (auto status : {AdjustmentStatus::proposed, AdjustmentStatus::approved, AdjustmentStatus::rejected}) {
        if (text == to_string(status)) return status;
    }
    return std::nullopt;
}

// ---- Tokens -------------------------------------------------------------------------------------------------

Tokens::Tokens(std::unique_ptr<State> state) : state_(std::move(state)) {}
Tokens::~Tokens() = default;

Result<std::unique_ptr<Tokens>> Tokens::open(lmdb::Env& env, const std::filesystem::path& data_directory) {
    if (sodium_init() < 0) return Unexpected<Error>{Error{ErrorCode::storage, "libsodium cannot initialise"}};
    auto state = std::make_unique<State>(State{env, 0, 0, 0, 0, 0, 0, 0, {}});
    const std::pair<MDB_dbi*, const char*> tables[] = {{&state->card_tokens, "http_card_tokens"},
                                                       {&state->clerks, "http_clerks"},
                                                       {&state->journal, "http_clerk_journal"},
                                                       {&state->settlement_cycles, "http_settlement_cycles"},
                                                       {&state->adjustments, "http_adjustments"},
                                                       {&state->grants, "http_clerk_grants"},
                                                       {&state->activation, "http_activation_codes"}};
    for (const auto& [dbi, name] : tables) {
        auto opened = env.open_table(name);
        if (!opened) return Unexpected<Error>{storage_error(opened.error())};
        *dbi = *opened;
    }
    if (auto loaded = load_or_create_key(data_directory / token_key_file, state->key); !loaded) return Unexpected<Error>{loaded.error()};
    return std::unique_ptr<Tokens>(new Tokens(std::move(state)));
}

std::string Tokens::new_token(std::string_view prefix) {
    std::array<std::uint8_t, token_random_bytes> random{};
    randombytes_buf(random.data(), random.size());
    constexpr int variant = sodium_base64_VARIANT_URLSAFE_NO_PADDING;
    std::string text(sodium_base64_ENCODED_LEN(token_random_bytes, variant), '\0');
    sodium_bin2base64(text.data(), text.size(), random.data(), random.size(), variant);
    text.resize(std::strlen(text.c_str()));
    sodium_memzero(random.data(), random.size());
    return std::string(prefix) + text;
}

TokenHash Tokens::hash(std::string_view token) const {
    TokenHash out{};
    crypto_generichash(out.data(), out.size(), reinterpret_cast<const unsigned char*>(token.data()), token.size(), state_->key.bytes.data(),
                       state_->key.bytes.size());
    return out;
}

bool Tokens::matches(const CardToken& stored, const TokenHash& presented) {
    return sodium_memcmp(presented.data(), stored.hash.data(), presented.size()) == 0;
}

lmdb::Result<std::optional<CardToken>> Tokens::card_token_in(const lmdb::Txn& txn, const CardNumber& number) const {
    auto raw = txn.get(state_->card_tokens, number);
    if (!raw) return Unexpected{raw.error()};
    if (!*raw) return std::optional<CardToken>();
    auto decoded = decode_card_token(**raw);
    if (!decoded) return Unexpected{lmdb::Error{MDB_CORRUPTED, "card token record"}};
    return decoded;
}

Result<std::optional<CardToken>> Tokens::card_token(const CardNumber& number) const {
    return read_txn<std::optional<CardToken>>(state_->env, [&](const lmdb::Txn& txn) { return card_token_in(txn, number); });
}

Result<std::optional<Clerk>> Tokens::clerk(std::string_view token) const {
    if (token.size() > token_chars_max) return std::optional<Clerk>();
    const TokenHash key = hash(token);
    return read_txn<std::optional<Clerk>>(state_->env, [&](const lmdb::Txn& txn) -> lmdb::Result<std::optional<Clerk>> {
        auto raw = txn.get(state_->clerks, key);
        if (!raw) return Unexpected{raw.error()};
        if (!*raw) return std::optional<Clerk>();
        auto decoded = decode_clerk(**raw);
        if (!decoded) return Unexpected{lmdb::Error{MDB_CORRUPTED, "clerk record"}};
        if (decoded->revoked()) return std::optional<Clerk>();
        return decoded;
    });
}

lmdb::Result<std::vector<std::pair<TokenHash, Clerk>>> Tokens::clerks_in(const lmdb::Txn& txn) const {
    std::vector<std::pair<TokenHash, Clerk>> out;
    auto cursor = lmdb::Cursor::open(txn, state_->clerks);
    if (!cursor) return Unexpected{cursor.error()};
    for (auto entry = cursor->first();; entry = cursor->next()) {
        if (!entry) return Unexpected{entry.error()};
        if (!*entry) break;
        auto clerk = decode_clerk((*entry)->value);
        if (!clerk || (*entry)->key.size() != TokenHash{}.size()) return Unexpected{lmdb::Error{MDB_CORRUPTED, "clerk record"}};
        TokenHash key{};
        std::copy((*entry)->key.begin(), (*entry)->key.end(), key.begin());
        out.emplace_back(key, std::move(*clerk));
    }
    return out;
}

Result<std::vector<Clerk>> Tokens::clerks() const {
    return read_txn<std::vector<Clerk>>(state_->env, [&](const lmdb::Txn& txn) -> lmdb::Result<std::vector<Clerk>> {
        auto all = clerks_in(txn);
        if (!all) return Unexpected{all.error()};
        std::vector<Clerk> out;
        for (auto& entry : *all) out.push_back(std::move(entry.second));
        std::stable_sort(out.begin(), out.end(), [](const Clerk& a, const Clerk& b) { return a.created_ns < b.created_ns; });
        return out;
    });
}

lmdb::Result<std::size_t> Tokens::revoke_clerk_in(lmdb::Txn& txn, std::string_view name) const {
    auto all = clerks_in(txn);
    if (!all) return Unexpected{all.error()};
    std::size_t revoked = 0;
    for (auto& [key, clerk] : *all) {
        if (clerk.name != name || clerk.revoked()) continue;
        clerk.roles = 0;
        if (auto put = put_clerk(txn, key, clerk); !put) return Unexpected{put.error()};
        ++revoked;
    }
    return revoked;
}

Result<std::size_t> revoke_clerk(ledger::Ledger& ledger, Tokens& tokens, std::string_view name) {
    std::size_t revoked = 0;
    auto committed = commit_offline(ledger, [&](lmdb::Txn& txn) -> lmdb::Status {
        auto count = tokens.revoke_clerk_in(txn, name);
        if (!count) return Unexpected{count.error()};
        revoked = *count;
        if (revoked == 0) return Ok{};  // nothing to journal; the caller reports it
        return journal_admin(tokens, txn, "clerk_revoke", std::string(name), fmt::format("{} token(s)", revoked));
    });
    if (!committed) return Unexpected<Error>{committed.error()};
    if (revoked == 0) return Unexpected<Error>{Error{ErrorCode::bad_input, "no clerk " + std::string(name) + " with a token in force"}};
    return revoked;
}

Result<std::vector<ClerkAction>> Tokens::journal(std::uint64_t after_sequence, std::size_t limit) const {
    return read_txn<std::vector<ClerkAction>>(state_->env, [&](const lmdb::Txn& txn) -> lmdb::Result<std::vector<ClerkAction>> {
        std::vector<ClerkAction> out;
        auto cursor = lmdb::Cursor::open(txn, state_->journal);
        if (!cursor) return Unexpected{cursor.error()};
        for (auto entry = cursor->seek(sequence_key(after_sequence + 1)); out.size() < limit; entry = cursor->next()) {
            if (!entry) return Unexpected{entry.error()};
            if (!*entry) break;
            auto action = decode_action(read_be((*entry)->key), (*entry)->value);
            if (!action) return Unexpected{lmdb::Error{MDB_CORRUPTED, "clerk journal entry"}};
            out.push_back(std::move(*action));
        }
        return out;
    });
}

lmdb::Result<std::optional<Bytes>> Tokens::activation_in(const lmdb::Txn& txn, ByteView key) const {
    auto raw = txn.get(state_->activation, key);
    if (!raw) return Unexpected{raw.error()};
    if (!*raw) return std::optional<Bytes>();
    return std::optional<Bytes>(Bytes((*raw)->begin(), (*raw)->end()));
}

lmdb::Status Tokens::put_activation(lmdb::Txn& txn, ByteView key, ByteView value) const { return txn.put(state_->activation, key, value); }

lmdb::Status Tokens::put_card_token(lmdb::Txn& txn, const CardNumber& number, const CardToken& token) const {
    return txn.put(state_->card_tokens, number, checked_card_token(token));
}

lmdb::Status Tokens::put_clerk(lmdb::Txn& txn, const TokenHash& hash, const Clerk& clerk) const {
    return txn.put(state_->clerks, hash, checked_clerk(clerk));
}

lmdb::Result<std::uint64_t> Tokens::append_journal(lmdb::Txn& txn, ClerkAction action) const {
    auto cursor = lmdb::Cursor::open(txn, state_->journal);
    if (!cursor) return Unexpected{cursor.error()};
    auto last = cursor->last();
    if (!last) return Unexpected{last.error()};
    action.sequence = *last ? read_be((*last)->key) + 1 : 1;
    if (action.timestamp_ns == 0) action.timestamp_ns = now_ns();
    // The target may be a path segment as sent: bytes that are not UTF-8 are journaled as U+FFFD.
    const std::string value = action_json(action).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    const auto back = decode_action(action.sequence, text_view(value));
    COCONUT_ASSERT(back && back->clerk == action.clerk && back->action == action.action && back->outcome == action.outcome &&
                       back->timestamp_ns == action.timestamp_ns,
                   "clerk journal entry round trip");
    if (auto put = txn.put(state_->journal, sequence_key(action.sequence), text_view(value)); !put) return Unexpected{put.error()};
    return action.sequence;
}

// ---- settlement cycles, adjustments ----------------------------------------------------------------------

lmdb::Status Tokens::put_settlement_cycle(lmdb::Txn& txn, const SettlementCycle& cycle) const {
    const std::string value = encode_cycle(cycle);
    const auto back = decode_cycle(cycle.cycle, text_view(value));
    COCONUT_ASSERT(back && back->start_ns == cycle.start_ns && back->end_ns == cycle.end_ns && back->clerk == cycle.clerk,
                   "settlement cycle record round trip");
    return txn.put(state_->settlement_cycles, cycle_key(cycle.cycle), text_view(value));
}

Result<std::optional<SettlementCycle>> Tokens::settlement_cycle(std::uint32_t cycle) const {
    return read_txn<std::optional<SettlementCycle>>(state_->env, [&](const lmdb::Txn& txn) -> lmdb::Result<std::optional<SettlementCycle>> {
        auto raw = txn.get(state_->settlement_cycles, cycle_key(cycle));
        if (!raw) return Unexpected{raw.error()};
        if (!*raw) return std::optional<SettlementCycle>();
        auto decoded = decode_cycle(cycle, **raw);
        if (!decoded) return Unexpected{lmdb::Error{MDB_CORRUPTED, "settlement cycle record"}};
        return decoded;
    });
}

Result<std::optional<SettlementCycle>> Tokens::latest_settlement_cycle() const {
    return read_txn<std::optional<SettlementCycle>>(state_->env, [&](const lmdb::Txn& txn) -> lmdb::Result<std::optional<SettlementCycle>> {
        // Few records (one per business day): a full scan for the latest window end.
        std::optional<SettlementCycle> latest;
        auto cursor = lmdb::Cursor::open(txn, state_->settlement_cycles);
        if (!cursor) return Unexpected{cursor.error()};
        for (auto entry = cursor->first();; entry = cursor->next()) {
            if (!entry) return Unexpected{entry.error()};
            if (!*entry) break;
            if ((*entry)->key.size() != 4) return Unexpected{lmdb::Error{MDB_CORRUPTED, "settlement cycle key"}};
            auto decoded = decode_cycle(static_cast<std::uint32_t>(read_be((*entry)->key)), (*entry)->value);
            if (!decoded) return Unexpected{lmdb::Error{MDB_CORRUPTED, "settlement cycle record"}};
            if (!latest || decoded->end_ns > latest->end_ns) latest = std::move(decoded);
        }
        return latest;
    });
}

lmdb::Result<std::uint64_t> Tokens::next_adjustment_number(const lmdb::Txn& txn) const {
    auto cursor = lmdb::Cursor::open(txn, state_->adjustments);
    if (!cursor) return Unexpected{cursor.error()};
    auto last = cursor->last();
    if (!last) return Unexpected{last.error()};
    return *last ? read_be((*last)->key) + 1 : 1;
}

lmdb::Status Tokens::put_adjustment(lmdb::Txn& txn, const Adjustment& adjustment) const {
    const std::string value = encode_adjustment(adjustment);
    const auto back = decode_adjustment(adjustment.number, text_view(value));
    COCONUT_ASSERT(back && back->debit_account_id == adjustment.debit_account_id &&
                       back->credit_account_id == adjustment.credit_account_id && back->amount == adjustment.amount &&
                       back->status == adjustment.status && back->checker == adjustment.checker,
                   "adjustment record round trip");
    return txn.put(state_->adjustments, sequence_key(adjustment.number), text_view(value));
}

lmdb::Result<std::optional<Adjustment>> Tokens::adjustment_in(const lmdb::Txn& txn, std::uint64_t number) const {
    auto raw = txn.get(state_->adjustments, sequence_key(number));
    if (!raw) return Unexpected{raw.error()};
    if (!*raw) return std::optional<Adjustment>();
    auto decoded = decode_adjustment(number, **raw);
    if (!decoded) return Unexpected{lmdb::Error{MDB_CORRUPTED, "adjustment record"}};
    return decoded;
}

Result<std::optional<Adjustment>> Tokens::adjustment(std::uint64_t number) const {
    return read_txn<std::optional<Adjustment>>(state_->env, [&](const lmdb::Txn& txn) { return adjustment_in(txn, number); });
}

Result<std::vector<Adjustment>> Tokens::adjustments(std::uint64_t after_number, std::size_t limit,
                                                    std::optional<AdjustmentStatus> status) const {
    return read_txn<std::vector<Adjustment>>(state_->env, [&](const lmdb::Txn& txn) -> lmdb::Result<std::vector<Adjustment>> {
        std::vector<Adjustment> out;
        auto cursor = lmdb::Cursor::open(txn, state_->adjustments);
        if (!cursor) return Unexpected{cursor.error()};
        for (auto entry = cursor->seek(sequence_key(after_number + 1)); out.size() < limit; entry = cursor->next()) {
            if (!entry) return Unexpected{entry.error()};
            if (!*entry) break;
            auto decoded = decode_adjustment(read_be((*entry)->key), (*entry)->value);
            if (!decoded) return Unexpected{lmdb::Error{MDB_CORRUPTED, "adjustment record"}};
            if (!status || decoded->status == *status) out.push_back(std::move(*decoded));
        }
        return out;
    });
}

// ---- offline commands ------------------------------------------------------------------------------------

std::optional<std::string> clerk_name_problem(std::string_view name) {
    if (name.empty() || name.size() > clerk_name_chars_max)
        return fmt::format("clerk name must be 1 to {} characters", clerk_name_chars_max);
    for (char c : name) {
        if (c < 0x21 || c > 0x7E) return std::string("clerk name must be printable ASCII without spaces");
    }
    return std::nullopt;
}

Result<std::string> add_clerk(ledger::Ledger& ledger, Tokens& tokens, std::string_view name, std::uint8_t roles) {
    if (auto problem = clerk_name_problem(name)) return Unexpected<Error>{Error{ErrorCode::bad_input, *problem}};
    if (roles == 0 || (roles & ~roles::all) != 0) return Unexpected<Error>{Error{ErrorCode::bad_input, "clerk roles invalid"}};
    std::string token = Tokens::new_token(clerk_token_prefix);
    const Clerk clerk{std::string(name), roles, now_ns()};
    auto committed = commit_offline(ledger, [&](lmdb::Txn& txn) -> lmdb::Status {
        if (auto put = tokens.put_clerk(txn, tokens.hash(token), clerk); !put) return put;
        return journal_admin(tokens, txn, "clerk_add", clerk.name, fmt::format("roles {}", fmt::join(role_names(roles), ",")));
    });
    if (!committed) return Unexpected<Error>{committed.error()};
    return token;
}

Result<std::size_t> issue_card_tokens(ledger::Ledger& ledger, const Registry& registry, Tokens& tokens,
                                      const std::vector<CardNumber>& cards, const std::filesystem::path& out) {
    auto registered = registry.cards();
    if (!registered) return Unexpected<Error>{registered.error()};
    std::map<CardNumber, Asn> by_number;
    for (const CardRecord& card : *registered) by_number.emplace(card_number_of(card.asn), card.asn);
    std::vector<std::pair<CardNumber, Asn>> chosen;
    if (cards.empty()) {
        for (const auto& [number, asn] : by_number) {
            auto existing = tokens.card_token(number);
            if (!existing) return Unexpected<Error>{existing.error()};
            if (!*existing) chosen.emplace_back(number, asn);
        }
    } else {
        for (const CardNumber& number : cards) {
            auto found = by_number.find(number);
            if (found == by_number.end()) {
                return Unexpected<Error>{Error{ErrorCode::bad_input, "card " + to_string(number) + " is not registered"}};
            }
            chosen.emplace_back(number, found->second);
        }
    }
    std::error_code ec;
    std::filesystem::create_directories(out, ec);
    if (!std::filesystem::is_directory(out))
        return Unexpected<Error>{Error{ErrorCode::bad_input, "--out " + out.string() + " is not a directory"}};
    // Files first, durable, then one commit: a crash in between leaves files whose tokens do not work
    // (re-issue), never a stored hash whose token nobody has.
    std::vector<CardToken> issued;
    issued.reserve(chosen.size());
    for (const auto& [number, asn] : chosen) {
        std::string line = Tokens::new_token(card_token_prefix);
        issued.push_back(CardToken{asn, tokens.hash(line), now_ns()});
        line += "\n";
        const bool written = write_token_file(out / (to_string(number) + ".token"), line);
        sodium_memzero(line.data(), line.size());
        if (!written) {
            return Unexpected<Error>{
                Error{ErrorCode::storage, fmt::format("cannot write a token file in {}: {}", out.string(), std::strerror(errno))}};
        }
    }
    if (issued.empty()) return std::size_t{0};
    if (!sync_filesystem_of(out))
        return Unexpected<Error>{Error{ErrorCode::storage, fmt::format("cannot sync {}: {}", out.string(), std::strerror(errno))}};
    auto committed = commit_offline(ledger, [&](lmdb::Txn& txn) -> lmdb::Status {
        for (std::size_t i = 0; i < issued.size(); ++i) {
            if (auto put = tokens.put_card_token(txn, chosen[i].first, issued[i]); !put) return put;
        }
        return journal_admin(tokens, txn, "issue_tokens", fmt::format("{} cards", issued.size()), "written to " + out.string());
    });
    if (!committed) return Unexpected<Error>{committed.error()};
    return issued.size();
}

// ---- metered HSM ---------------------------------------------------------------------------------------------

template <class Outcome>
std::function<void(Outcome)> MeteredHsm::metered(std::function<void(Outcome)> handler) {
    stats_.calls.fetch_add(1, std::memory_order_relaxed);
    const auto start = std::chrono::steady_clock::now();
    return [this, start, handler = std::move(handler)](Outcome outcome) {
        const auto elapsed = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - start);
        stats_.latency_us_sum.fetch_add(static_cast<std::uint64_t>(elapsed.count()), std::memory_order_relaxed);
        if (!outcome) stats_.failures.fetch_add(1, std::memory_order_relaxed);
        handler(std::move(outcome));
    };
}

void MeteredHsm::verify(const hsm::PurchaseTac& transaction, Handler handler) { tacs_.verify(transaction, metered(std::move(handler))); }

void MeteredHsm::load_mac2(const hsm::LoadRequest& request, LoadHandler handler) {
    services_.load_mac2(request, metered(std::move(handler)));
}

void MeteredHsm::verify_load_tac(const hsm::LoadTac& load, VerdictHandler handler) {
    services_.verify_load_tac(load, metered(std::move(handler)));
}

void MeteredHsm::verify_internal_auth(const hsm::InternalAuth& auth, VerdictHandler handler) {
    services_.verify_internal_auth(auth, metered(std::move(handler)));
}

}  // namespace coconut::clearing::http
