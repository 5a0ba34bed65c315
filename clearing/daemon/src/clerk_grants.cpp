// Clerk grants that need a second clerk (http.hpp ClerkGrant): their table "http_clerk_grants". Values
// are JSON (rare, read by people), the token hash as hex — it never leaves the daemon (grant_json in
// api/clerk_grants.cpp leaves it out).
#include "tokens_state.hpp"

#include <coconut/core/assert.hpp>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace coconut::clearing::http {

namespace {

ByteView grant_bytes(std::string_view s) { return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()}; }

std::array<std::uint8_t, 8> grant_key(std::uint64_t number) {
    std::array<std::uint8_t, 8> key{};
    for (int i = 0; i < 8; ++i) key[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(number >> (56 - 8 * i));
    return key;
}

std::optional<GrantStatus> parse_grant_status(std::string_view text) {
    for (auto status : {GrantStatus::pending, GrantStatus::approved, GrantStatus::rejected}) {
        if (text == to_string(status)) return status;
    }
    return std::nullopt;
}

std::string encode_grant(const ClerkGrant& g) {
    return nlohmann::json{{"name", g.name},
                          {"roles", g.roles},
                          {"hash", to_hex(g.hash)},
                          {"requested_by", g.requested_by},
                          {"requested_ns", g.requested_ns},
                          {"expires_ns", g.expires_ns},
                          {"status", std::string(to_string(g.status))},
                          {"decided_by", g.decided_by},
                          {"decided_ns", g.decided_ns},
                          {"note", g.note}}
        .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::optional<ClerkGrant> decode_grant(std::uint64_t number, ByteView value) {
    auto j = nlohmann::json::parse(value.begin(), value.end(), nullptr, false);
    if (j.is_discarded() || !j.is_object()) return std::nullopt;
    try {
        ClerkGrant g;
        g.number = number;
        g.name = j.at("name").get<std::string>();
        g.roles = j.at("roles").get<std::uint8_t>();
        auto hash = from_hex(j.at("hash").get<std::string>());
        auto status = parse_grant_status(j.at("status").get<std::string>());
        if (!hash || hash->size() != g.hash.size() || !status) return std::nullopt;
        std::copy(hash->begin(), hash->end(), g.hash.begin());
        g.requested_by = j.at("requested_by").get<std::string>();
        g.requested_ns = j.at("requested_ns").get<std::uint64_t>();
        g.expires_ns = j.at("expires_ns").get<std::uint64_t>();
        g.status = *status;
        g.decided_by = j.at("decided_by").get<std::string>();
        g.decided_ns = j.at("decided_ns").get<std::uint64_t>();
        g.note = j.at("note").get<std::string>();
        return g;
    } catch (const nlohmann::json::exception&) {
        return std::nullopt;
    }
}

Error grant_storage_error(const lmdb::Error& e) { return Error{ErrorCode::storage, e.message()}; }

}  // namespace

std::string_view to_string(GrantStatus status) {
    switch (status) {
        case GrantStatus::pending: return "pending";
        case GrantStatus::approved: return "approved";
        case GrantStatus::rejected: return "rejected";
    }
    return "unknown";
}

lmdb::Result<std::uint64_t> Tokens::next_grant_number(const lmdb::Txn& txn) const {
    auto cursor = lmdb::Cursor::open(txn, state_->grants);
    if (!cursor) return Unexpected{cursor.error()};
    auto last = cursor->last();
    if (!last) return Unexpected{last.error()};
    return *last ? read_be((*last)->key) + 1 : 1;
}

lmdb::Status Tokens::put_grant(lmdb::Txn& txn, const ClerkGrant& grant) const {
    COCONUT_ASSERT(grant.number > 0 && (grant.roles & roles::needing_approval) != 0 && (grant.roles & ~roles::all) == 0,
                   "a grant is numbered and needs an approval");
    const std::string value = encode_grant(grant);
    const auto back = decode_grant(grant.number, grant_bytes(value));
    COCONUT_ASSERT(back && back->name == grant.name && back->roles == grant.roles && back->hash == grant.hash &&
                       back->status == grant.status && back->expires_ns == grant.expires_ns,
                   "clerk grant record round trip");
    return txn.put(state_->grants, grant_key(grant.number), grant_bytes(value));
}

lmdb::Result<std::optional<ClerkGrant>> Tokens::grant_in(const lmdb::Txn& txn, std::uint64_t number) const {
    auto raw = txn.get(state_->grants, grant_key(number));
    if (!raw) return Unexpected{raw.error()};
    if (!*raw) return std::optional<ClerkGrant>();
    auto decoded = decode_grant(number, **raw);
    if (!decoded) return Unexpected{lmdb::Error{MDB_CORRUPTED, "clerk grant record"}};
    return decoded;
}

Result<std::optional<ClerkGrant>> Tokens::grant(std::uint64_t number) const {
    auto txn = lmdb::Txn::begin(state_->env, lmdb::Txn::Mode::read_only);
    if (!txn) return Unexpected<Error>{grant_storage_error(txn.error())};
    auto found = grant_in(*txn, number);
    if (!found) return Unexpected<Error>{grant_storage_error(found.error())};
    return std::move(*found);
}

Result<std::vector<ClerkGrant>> Tokens::grants(std::uint64_t after_number, std::size_t limit) const {
    auto txn = lmdb::Txn::begin(state_->env, lmdb::Txn::Mode::read_only);
    if (!txn) return Unexpected<Error>{grant_storage_error(txn.error())};
    auto cursor = lmdb::Cursor::open(*txn, state_->grants);
    if (!cursor) return Unexpected<Error>{grant_storage_error(cursor.error())};
    std::vector<ClerkGrant> out;
    for (auto entry = cursor->seek(grant_key(after_number + 1)); out.size() < limit; entry = cursor->next()) {
        if (!entry) return Unexpected<Error>{grant_storage_error(entry.error())};
        if (!*entry) break;
        auto decoded = decode_grant(read_be((*entry)->key), (*entry)->value);
        if (!decoded) return Unexpected<Error>{grant_storage_error(lmdb::Error{MDB_CORRUPTED, "clerk grant record"})};
        out.push_back(std::move(*decoded));
    }
    return out;
}

}  // namespace coconut::clearing::http
