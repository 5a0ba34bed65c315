// Activation letters (clearing/README.md "Activation letters"): a clerk issues a card a one-time
// activation code (POST /v1/clerk/cards/{n}/activation), printed on a letter with its QR code by
// `coconut card letters`; the cardholder's balance page exchanges it once (POST /v1/activate, the code in
// the body) for a fresh card token. A card has one live code: a new one revokes the earlier ones, and a
// re-issue also revokes the card's token. Records (table "http_activation_codes"):
//   'k' ‖ keyed hash of the code (32) → state (1: 0 live, 1 used, 2 revoked) ‖ expires (s, BE8) ‖ ASN (10)
//   'c' ‖ card number (8)              → keyed hash of the card's newest code (32)
// The code itself is never stored: only its keyed hash, like every token.
#include "api_internal.hpp"

#include <fmt/format.h>
#include <sodium.h>

#include <algorithm>

namespace coconut::clearing::http::api {

namespace {
// Named inside the anonymous namespace: a unity build compiles this file with others of the API.
namespace codes {

constexpr std::uint64_t valid_s_default = 30ULL * 86400;
constexpr std::uint64_t valid_s_max = 90ULL * 86400;
// Letters without 0/O, 1/I/L: 31 symbols, 16 of them (~79 bits), shown in groups of four.
constexpr std::string_view code_alphabet = "23456789ABCDEFGHJKMNPQRSTUVWXYZ";
constexpr std::size_t code_symbols = 16;
constexpr std::size_t activation_record_size = 1 + 8 + 10;

enum class CodeState : std::uint8_t { live = 0, used = 1, revoked = 2 };

std::string new_code() {
    std::string code;
    for (std::size_t i = 0; i < code_symbols; ++i) {
        if (i != 0 && i % 4 == 0) code += '-';
        code += code_alphabet[randombytes_uniform(static_cast<std::uint32_t>(code_alphabet.size()))];
    }
    return code;
}

// The code as typed or scanned: upper case, without dashes and spaces; nullopt when it cannot be one.
std::optional<std::string> normalized(std::string_view typed) {
    std::string out;
    for (char c : typed) {
        if (c == '-' || c == ' ') continue;
        const char upper = (c >= 'a' && c <= 'z') ? static_cast<char>(c - 'a' + 'A') : c;
        if (code_alphabet.find(upper) == std::string_view::npos) return std::nullopt;
        out += upper;
    }
    if (out.size() != code_symbols) return std::nullopt;
    return out;
}

Bytes code_key(const Tokens& tokens, std::string_view normalized_code) {
    const TokenHash h = tokens.hash(normalized_code);
    Bytes key{'k'};
    key.insert(key.end(), h.begin(), h.end());
    return key;
}
Bytes card_key(const CardNumber& number) {
    Bytes key{'c'};
    key.insert(key.end(), number.begin(), number.end());
    return key;
}

struct CodeRecord {
    CodeState state = CodeState::live;
    std::uint64_t expires_s = 0;
    Asn asn{};
};
Bytes encode(const CodeRecord& r) {
    Bytes out{static_cast<std::uint8_t>(r.state)};
    append_be(out, r.expires_s, 8);
    out.insert(out.end(), r.asn.begin(), r.asn.end());
    return out;
}
std::optional<CodeRecord> decode(const Bytes& in) {
    if (in.size() != activation_record_size || in[0] > 2) return std::nullopt;
    CodeRecord r;
    r.state = static_cast<CodeState>(in[0]);
    r.expires_s = read_be(ByteView(in).subspan(1, 8));
    std::copy(in.begin() + 9, in.end(), r.asn.begin());
    return r;
}

lmdb::Result<std::optional<CodeRecord>> code_in(const Tokens& tokens, const lmdb::Txn& txn, const Bytes& key) {
    auto raw = tokens.activation_in(txn, key);
    if (!raw) return Unexpected{raw.error()};
    if (!*raw) return std::optional<CodeRecord>();
    auto record = decode(**raw);
    if (!record) return Unexpected{lmdb::Error{MDB_CORRUPTED, "activation code record"}};
    return record;
}

std::uint64_t now_s() { return now_ns() / 1'000'000'000ULL; }

// Why a code cannot be exchanged (410 with this error code), nullopt when it can.
std::optional<std::pair<std::string_view, std::string_view>> refusal(const CodeRecord& r) {
    if (r.state == CodeState::used)
        return std::pair{"code_used", "this activation code was used already; ask the card service desk for a new letter"};
    if (r.state == CodeState::revoked) return std::pair{"code_revoked", "this activation code was replaced by a newer letter"};
    if (r.expires_s <= now_s())
        return std::pair{"code_expired", "this activation code has expired; ask the card service desk for a new letter"};
    return std::nullopt;
}

// In the issue's commit: the card's earlier code revoked, the new one written, the token revoked on a re-issue.
lmdb::Status write_code(const Tokens& tokens, lmdb::Txn& txn, const RegisteredCard& card, const Bytes& key, std::uint64_t expires_s,
                        bool reissue) {
    auto previous = tokens.activation_in(txn, card_key(card.number));
    if (!previous) return Unexpected{previous.error()};
    if (*previous) {
        auto old = code_in(tokens, txn, **previous);
        if (!old) return Unexpected{old.error()};
        if (*old && (*old)->state == CodeState::live) {
            CodeRecord revoked = **old;
            revoked.state = CodeState::revoked;
            if (auto put = tokens.put_activation(txn, **previous, encode(revoked)); !put) return put;
        }
    }
    if (auto put = tokens.put_activation(txn, key, encode(CodeRecord{CodeState::live, expires_s, card.asn})); !put) return put;
    if (auto put = tokens.put_activation(txn, card_key(card.number), ByteView(key)); !put) return put;
    if (!reissue) return Ok{};
    // The old token stops working: the card's token becomes one nobody was ever shown.
    const std::string unseen = Tokens::new_token(card_token_prefix);
    return tokens.put_card_token(txn, card.number, CardToken{card.asn, tokens.hash(unseen), now_ns()});
}

}  // namespace codes
}  // namespace

// POST /v1/clerk/cards/{n}/activation {"reissue":bool,"valid_s":N}: a new one-time code for the card's letter.
void issue_activation_code(Call& call) {
    const auto card = registered_card(call);
    if (!card) return;
    json body = json::object();
    if (!call.request.body.empty()) {
        auto parsed = object_body(call.request.body);
        if (!parsed) return call.answer(bad_request("body must be a JSON object"));
        body = std::move(*parsed);
    }
    if (auto unknown = only_keys(body, {"reissue", "valid_s"})) return call.answer(bad_request(*unknown));
    if (body.contains("reissue") && !body["reissue"].is_boolean()) return call.answer(bad_request("reissue must be true or false"));
    const bool reissue = body.value("reissue", false);
    std::uint64_t valid_s = codes::valid_s_default;
    if (body.contains("valid_s")) {
        if (!body["valid_s"].is_number_unsigned() || body["valid_s"].get<std::uint64_t>() == 0 ||
            body["valid_s"].get<std::uint64_t>() > codes::valid_s_max)
            return call.answer(
                bad_request(fmt::format("valid_s must be a whole number of seconds from 1 to {} (90 days)", codes::valid_s_max)));
        valid_s = body["valid_s"].get<std::uint64_t>();
    }
    const Tokens& tokens = call.s().tokens;
    auto code = std::make_shared<std::string>(codes::new_code());
    const Bytes key = codes::code_key(tokens, *codes::normalized(*code));
    const std::uint64_t expires_s = codes::now_s() + valid_s;
    auto write = [&tokens, card = *card, key, expires_s, reissue](lmdb::Txn& txn, auto, ClerkAction&) {
        return codes::write_code(tokens, txn, card, key, expires_s, reissue);
    };
    auto answer = [code, text = card->text, expires_s, reissue](const ClerkAction&) {
        return json_response(201, json{{"card_number", text},
                                       {"code", *code},
                                       {"expires_at", iso_time(expires_s * 1'000'000'000ULL)},
                                       {"token_revoked", reissue}});
    };
    call.api.commit(Change{{},
                           write,
                           answer,
                           action_of(call.who(), reissue ? "activation_reissue" : "activation_code", card->text,
                                     reissue ? "new letter: earlier codes and the card's token revoked"
                                             : "new letter: earlier codes revoked")},
                    std::move(call.respond));
}

// POST /v1/activate {"code":"…"}: the code exchanged, once, for a fresh card token.
void activate_card(Call& call) {
    const auto body = object_body(call.request.body);
    if (!body || !body->contains("code") || !(*body)["code"].is_string())
        return call.answer(bad_request("body must be {\"code\":\"…\"}: the activation code of the letter"));
    if (auto unknown = only_keys(*body, {"code"})) return call.answer(bad_request(*unknown));
    const auto code = codes::normalized((*body)["code"].get<std::string>());
    const Tokens& tokens = call.s().tokens;
    auto no_code = [&] {
        call.answer(
            call.api.unauthenticated(call.request, error_response(404, "unknown_code", "no such activation code; check the letter")));
    };
    if (!code) return no_code();
    const Bytes key = codes::code_key(tokens, *code);
    std::optional<codes::CodeRecord> record;
    {
        auto txn = call.s().ledger.begin_read();
        if (!txn) return call.answer(storage_failure(txn.error().message));
        auto read = codes::code_in(tokens, *txn, key);
        if (!read) return call.answer(storage_failure(read.error().message()));
        record = *read;
    }
    if (!record) return no_code();
    if (auto refused = codes::refusal(*record)) return call.answer(error_response(410, refused->first, refused->second));
    const CardNumber number = card_number_of(record->asn);
    auto token = std::make_shared<std::string>(Tokens::new_token(card_token_prefix));
    auto write = [&tokens, key, number,
                  stored = CardToken{record->asn, tokens.hash(*token), now_ns()}](lmdb::Txn& txn, auto,
                                                                                  ClerkAction& action) -> lmdb::Status {
        auto current = codes::code_in(tokens, txn, key);  // again in the commit: two exchanges racing, one wins
        if (!current) return Unexpected{current.error()};
        if (!*current) return Ok{};
        if (auto refused = codes::refusal(**current)) {
            action.outcome = std::string(refused->first);
            return Ok{};
        }
        codes::CodeRecord used = **current;
        used.state = codes::CodeState::used;
        if (auto put = tokens.put_activation(txn, key, codes::encode(used)); !put) return put;
        return tokens.put_card_token(txn, number, stored);
    };
    auto answer = [token, text = to_string(number)](const ClerkAction& done) {
        if (done.outcome != "ok") return error_response(410, done.outcome, "this activation code cannot be used any more");
        return json_response(200, json{{"card_number", text}, {"token", *token}});
    };
    call.api.commit(
        Change{{}, write, answer, ClerkAction{0, 0, "cardholder", "activate", to_string(number), "ok", "activation code exchanged"}},
        std::move(call.respond));
}

}  // namespace coconut::clearing::http::api
