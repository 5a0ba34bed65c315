// The card services of the docs/CARD-SPEC.md §4 profile, over a loaded key store.
// Every MAC comparison is constant-time (sodium_memcmp); derived keys are crypto::Secret values that
// wipe themselves when they go out of scope.
#include <coconut/core/assert.hpp>
#include <coconut/hsm/hsm.hpp>

#include "secure_buffer.hpp"

#include <fmt/format.h>
#include <sodium.h>

#include <algorithm>
#include <optional>

namespace coconut::hsm {
namespace {

crypto::Block issuer_factor(const IssuerId& id) {
    crypto::Block out{};
    std::copy(id.begin(), id.end(), out.begin());
    return out;
}

crypto::Key16 card_key(const crypto::Key16& master, const CardIdentity& card) {
    return crypto::diversify_card_key(master, issuer_factor(card.issuer_id), crypto::card_factor_from_asn(card.asn));
}

template <std::size_t N>
bool same(const std::array<std::uint8_t, N>& a, const std::array<std::uint8_t, N>& b) {
    return sodium_memcmp(a.data(), b.data(), N) == 0;
}

std::array<std::uint8_t, 16> encrypt_under(const crypto::Key16& transport, const crypto::Key16& key) {
    const Bytes out = crypto::tdes_ecb_encrypt(transport, key.view());
    std::array<std::uint8_t, 16> encrypted{};
    std::copy(out.begin(), out.end(), encrypted.begin());
    return encrypted;
}

bool is_purchase_type(std::uint8_t type) {
    return type == crypto::type_ed_purchase || type == crypto::type_ep_purchase || type == crypto::type_capp_purchase;
}
bool is_load_type(std::uint8_t type) { return type == crypto::type_ed_load || type == crypto::type_ep_load; }

Status<Failure> check_card(const CardIdentity& card) {
    if (!is_bcd(card.asn)) return fail(Errc::bad_request, fmt::format("ASN {} is not BCD", to_hex(card.asn)));
    return Ok{};
}

Status<Failure> check_when(const crypto::CardDateTime& when) {
    if (!valid_card_date_time(when))
        return fail(Errc::bad_request,
                    fmt::format("date/time {} {} is not a BCD calendar date and time", to_hex(when.date), to_hex(when.time)));
    return Ok{};
}

void record(Usage* usage, const KeyInfo& key, std::string result) {
    if (usage == nullptr) return;
    usage->key_label = key.label;
    usage->key_versions = {key.version};
    usage->result = std::move(result);
}

// Resolves a key and copies its material for one computation (usage and type checked).
struct ResolvedKey {
    KeyInfo info;
    crypto::Key16 key;
};
Outcome<ResolvedKey> resolve(const KeyStore& store, const KeyRef& ref, KeyUsage usage) {
    auto info = store.find(ref);
    if (!info) return Unexpected<Failure>{info.error()};
    auto key = store.key_material(KeyRef{info->label, info->version}, usage);
    if (!key) return Unexpected<Failure>{key.error()};
    return ResolvedKey{std::move(info.value()), key.value()};
}

}  // namespace

namespace card_level {

Verdict check_purchase_tac(const crypto::Key16& dtk, const PurchaseTac& t) {
    const crypto::Mac4 expected =
        crypto::des_mac(crypto::tac_key(dtk), crypto::purchase_tac_input(t.amount_fen, t.type, t.terminal_id, t.terminal_serial, t.when));
    return same(expected, t.tac) ? Verdict::valid : Verdict::invalid;
}

Verdict check_load_tac(const crypto::Key16& dtk, const LoadTac& load) {
    const crypto::Mac4 expected =
        crypto::des_mac(crypto::tac_key(dtk), crypto::load_tac_input(load.new_balance_fen, load.online_atc_before, load.amount_fen,
                                                                     load.type, load.terminal_id, load.when));
    return same(expected, load.tac) ? Verdict::valid : Verdict::invalid;
}

LoadAnswer answer_load(const crypto::Key16& dlk, const LoadRequest& load) {
    const crypto::Key8 session = crypto::load_session_key(dlk, load.card_random, load.online_atc);
    const crypto::Mac4 mac1 =
        crypto::des_mac(session, crypto::load_mac1_input(load.old_balance_fen, load.amount_fen, load.type, load.terminal_id));
    LoadAnswer answer;
    if (same(mac1, load.mac1)) {
        answer.mac1 = Verdict::valid;
        answer.mac2 = crypto::des_mac(session, crypto::load_mac2_input(load.amount_fen, load.type, load.terminal_id, load.when));
    }
    return answer;
}

Verdict check_internal_auth(const crypto::Key16& iak, const InternalAuth& auth) {
    const Bytes expected = crypto::tdes_ecb_encrypt(iak, auth.challenge);
    return sodium_memcmp(expected.data(), auth.cryptogram.data(), auth.cryptogram.size()) == 0 ? Verdict::valid : Verdict::invalid;
}

}  // namespace card_level

Hsm::Hsm(std::shared_ptr<const KeyStore> store) : store_(std::move(store)) { COCONUT_ASSERT(store_); }

Outcome<KeyInfo> Hsm::key_info(const KeyRef& ref, Usage* usage) const {
    auto info = store_->find(ref);
    if (info) record(usage, info.value(), "ok");
    return info;
}

Outcome<CardKeySet> Hsm::derive_card_keys(const CardIdentity& card, const KeyRef& transport, std::span<const KeyRef> masters,
                                          Usage* usage) const {
    if (auto ok = check_card(card); !ok) return Unexpected<Failure>{ok.error()};
    // One master per card-key usage: purchase, load, tac, internal-auth, maintenance, ssse-auth.
    constexpr std::size_t max_masters = 6;
    if (masters.empty() || masters.size() > max_masters)
        return fail(Errc::bad_request, fmt::format("name 1–{} master keys, not {}", max_masters, masters.size()));
    auto kek = resolve(*store_, transport, KeyUsage::transport);
    if (!kek) return Unexpected<Failure>{kek.error()};

    CardKeySet out;
    out.transport = KeyRef{kek->info.label, kek->info.version};
    out.transport_kcv = kek->info.kcv;
    for (const KeyRef& ref : masters) {
        auto info = store_->find(ref);
        if (!info) return Unexpected<Failure>{info.error()};
        if (info->usage == KeyUsage::transport)
            return fail(Errc::wrong_key_usage, fmt::format("{} is a transport key, not a card master key", to_string(ref)));
        const bool repeated = std::any_of(out.keys.begin(), out.keys.end(), [&](const ExportedKey& k) { return k.usage == info->usage; });
        if (repeated) return fail(Errc::bad_request, fmt::format("two master keys of usage {} named", key_usage_name(info->usage)));
        auto master = resolve(*store_, KeyRef{info->label, info->version}, info->usage);
        if (!master) return Unexpected<Failure>{master.error()};
        const crypto::Key16 derived = card_key(master->key, card);
        out.keys.push_back(
            ExportedKey{info->usage, KeyRef{info->label, info->version}, crypto::kcv(derived), encrypt_under(kek->key, derived)});
    }
    if (usage != nullptr) {
        usage->key_label = out.transport.label;
        usage->key_versions = {out.transport.version};
        std::string from;
        for (const ExportedKey& k : out.keys) from += (from.empty() ? "" : ",") + to_string(k.master);
        usage->result = fmt::format("derived {} card keys for ASN {} issuer {} from {}", out.keys.size(), bcd_to_digits(card.asn),
                                    to_hex(card.issuer_id), from);
    }
    return out;
}

Outcome<ExportedKey> Hsm::export_issuer_key(const IssuerId& issuer_id, const KeyRef& purchase_master, const KeyRef& transport,
                                            Usage* usage) const {
    auto master = resolve(*store_, purchase_master, KeyUsage::purchase);
    if (!master) return Unexpected<Failure>{master.error()};
    auto kek = resolve(*store_, transport, KeyUsage::transport);
    if (!kek) return Unexpected<Failure>{kek.error()};
    const crypto::Key16 issuer_key = crypto::diversify(master->key, issuer_factor(issuer_id));
    record(usage, master->info, fmt::format("exported issuer key {} under {}:{}", to_hex(issuer_id), kek->info.label, kek->info.version));
    return ExportedKey{KeyUsage::purchase, KeyRef{master->info.label, master->info.version}, crypto::kcv(issuer_key),
                       encrypt_under(kek->key, issuer_key)};
}

Outcome<std::vector<Verdict>> Hsm::verify_purchase_tacs(std::string_view tac_master_label, std::span<const PurchaseTac> batch,
                                                        Usage* usage) const {
    if (batch.size() > max_batch_items)
        return fail(Errc::batch_too_large, fmt::format("a batch holds at most {} transactions, not {}", max_batch_items, batch.size()));
    const std::string label(tac_master_label);
    // The label must exist and be a TAC key; individual versions may still be unknown or retired.
    auto newest = store_->find(KeyRef{label, newest_version});
    if (!newest && newest.error().code == Errc::key_not_found) return Unexpected<Failure>{newest.error()};
    if (newest && newest->usage != KeyUsage::tac)
        return fail(Errc::wrong_key_usage, fmt::format("key '{}' is a {} key, not a TAC master key", label, key_usage_name(newest->usage)));
    const std::uint8_t newest_active = newest ? newest->version : 0;

    // Per-version master keys, resolved once per batch; the issuer key of the last (version, issuer)
    // is reused because a batch from one clearing run nearly always shares both.
    std::array<std::optional<crypto::Key16>, 256> masters;
    std::array<bool, 256> resolved{};
    std::optional<crypto::TdesKey> issuer_key;  // with its key schedules: it enciphers two blocks per card
    std::uint8_t issuer_key_version = 0;
    IssuerId issuer_key_id{};

    std::vector<Verdict> verdicts(batch.size(), Verdict::invalid);
    std::array<std::size_t, 4> counts{};
    std::array<bool, 256> version_used{};
    for (std::size_t i = 0; i < batch.size(); ++i) {
        const PurchaseTac& item = batch[i];
        Verdict& verdict = verdicts[i];
        const std::uint8_t version = item.key_version == newest_version ? newest_active : item.key_version;
        if (!is_purchase_type(item.type) || !is_bcd(item.card.asn) || !valid_card_date_time(item.when)) {
            verdict = Verdict::malformed;
        } else if (version == 0) {
            verdict = Verdict::key_unavailable;
        } else {
            if (!resolved[version]) {
                resolved[version] = true;
                auto key = store_->key_material(KeyRef{label, version}, KeyUsage::tac);
                if (key) masters[version] = key.value();
            }
            if (!masters[version]) {
                verdict = Verdict::key_unavailable;
            } else {
                if (!issuer_key || issuer_key_version != version || issuer_key_id != item.card.issuer_id) {
                    issuer_key.emplace(crypto::diversify(*masters[version], issuer_factor(item.card.issuer_id)));
                    issuer_key_version = version;
                    issuer_key_id = item.card.issuer_id;
                }
                version_used[version] = true;
                const crypto::Key16 dtk = crypto::diversify(*issuer_key, crypto::card_factor_from_asn(item.card.asn));
                verdict = card_level::check_purchase_tac(dtk, item);
            }
        }
        ++counts[static_cast<std::size_t>(verdict)];
    }
    if (usage != nullptr) {
        usage->key_label = label;
        usage->key_versions.clear();
        for (std::size_t v = 1; v < version_used.size(); ++v)
            if (version_used[v]) usage->key_versions.push_back(static_cast<std::uint8_t>(v));
        usage->result = fmt::format("valid={} invalid={}", counts[0], counts[1]);
        if (counts[2] > 0) usage->result += fmt::format(" key_unavailable={}", counts[2]);
        if (counts[3] > 0) usage->result += fmt::format(" malformed={}", counts[3]);
    }
    return verdicts;
}

Outcome<Verdict> Hsm::verify_load_tac(const LoadTac& load, Usage* usage) const {
    if (!is_load_type(load.type))
        return fail(Errc::bad_request, fmt::format("transaction type {:02X} is not a load (01 or 02)", load.type));
    if (auto ok = check_card(load.card); !ok) return Unexpected<Failure>{ok.error()};
    if (auto ok = check_when(load.when); !ok) return Unexpected<Failure>{ok.error()};
    auto master = resolve(*store_, load.key, KeyUsage::tac);
    if (!master) return Unexpected<Failure>{master.error()};
    const Verdict verdict = card_level::check_load_tac(card_key(master->key, load.card), load);
    record(usage, master->info, std::string(verdict_name(verdict)));
    return verdict;
}

Outcome<LoadAnswer> Hsm::load_mac2(const LoadRequest& load, Usage* usage) const {
    if (!is_load_type(load.type))
        return fail(Errc::bad_request, fmt::format("transaction type {:02X} is not a load (01 or 02)", load.type));
    if (load.amount_fen == 0) return fail(Errc::bad_request, "a load amount must be at least 1 fen");
    if (auto ok = check_card(load.card); !ok) return Unexpected<Failure>{ok.error()};
    if (auto ok = check_when(load.when); !ok) return Unexpected<Failure>{ok.error()};
    auto master = resolve(*store_, load.key, KeyUsage::load);
    if (!master) return Unexpected<Failure>{master.error()};
    LoadAnswer answer = card_level::answer_load(card_key(master->key, load.card), load);
    answer.key_version = master->info.version;
    record(usage, master->info, answer.mac1 == Verdict::valid ? "mac1 valid, mac2 issued" : "mac1 invalid, no mac2");
    return answer;
}

Outcome<Verdict> Hsm::verify_internal_auth(const InternalAuth& auth, Usage* usage) const {
    if (auto ok = check_card(auth.card); !ok) return Unexpected<Failure>{ok.error()};
    // The purse's IAK or the SSSE application's: the same computation, the caller names which proof it wants.
    auto info = store_->find(auth.key);
    if (!info) return Unexpected<Failure>{info.error()};
    if (info->usage != KeyUsage::internal_auth && info->usage != KeyUsage::ssse_auth)
        return fail(Errc::wrong_key_usage,
                    fmt::format("key {}:{} is a {} key; INTERNAL AUTHENTICATE needs an internal-auth or ssse-auth key", info->label,
                                info->version, key_usage_name(info->usage)));
    auto master = resolve(*store_, KeyRef{info->label, info->version}, info->usage);
    if (!master) return Unexpected<Failure>{master.error()};
    const Verdict verdict = card_level::check_internal_auth(card_key(master->key, auth.card), auth);
    record(usage, master->info, std::string(verdict_name(verdict)));
    return verdict;
}

}  // namespace coconut::hsm
