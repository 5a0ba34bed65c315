// The registry's records (registry.hpp): statuses and risk kinds by name, purchase proofs, batch totals,
// what opens a card in the ledger.
#include <coconut/clearing/registry.hpp>

#include <sodium.h>

#include <algorithm>

namespace coconut::clearing {

std::string_view to_string(CardStatus status) {
    switch (status) {
        case CardStatus::active: return "active";
        case CardStatus::lost: return "lost";
        case CardStatus::blocked: return "blocked";
        case CardStatus::replaced: return "replaced";
        case CardStatus::returned: return "returned";
    }
    return "?";
}

// Not "returned": only the counter's return sets it (clearing/README.md "Card return, refund and tourist cards").
std::optional<CardStatus> parse_card_status(std::string_view text) {
    if (text == "active") return CardStatus::active;
    if (text == "lost") return CardStatus::lost;
    if (text == "blocked") return CardStatus::blocked;
    return std::nullopt;
}

std::string_view to_string(RiskKind kind) {
    switch (kind) {
        case RiskKind::tac_invalid: return "tac_invalid";
        case RiskKind::duplicate_different: return "duplicate_different";
        case RiskKind::atc_gap: return "atc_gap";
        case RiskKind::shadow_mismatch: return "shadow_mismatch";
        case RiskKind::hotlisted_card_used: return "hotlisted_card_used";
        case RiskKind::shadow_negative: return "shadow_negative";
        case RiskKind::mac1_invalid: return "mac1_invalid";
        case RiskKind::load_tac_invalid: return "load_tac_invalid";
        case RiskKind::late_load_confirmation: return "late_load_confirmation";
        case RiskKind::internal_auth_invalid: return "internal_auth_invalid";
        case RiskKind::claims_differ: return "claims_differ";
        case RiskKind::serial_conflict: return "serial_conflict";
        case RiskKind::terminal_suspended: return "terminal_suspended";
        case RiskKind::atc_implausible: return "atc_implausible";
        case RiskKind::wrong_terminal: return "wrong_terminal";
        case RiskKind::challenge_refused: return "challenge_refused";
    }
    return "?";
}

std::string_view to_string(TerminalStatus status) {
    switch (status) {
        case TerminalStatus::active: return "active";
        case TerminalStatus::suspended: return "suspended";
        case TerminalStatus::retired: return "retired";
    }
    return "?";
}

std::optional<TerminalStatus> parse_terminal_status(std::string_view text) {
    if (text == "active") return TerminalStatus::active;
    if (text == "suspended") return TerminalStatus::suspended;
    if (text == "retired") return TerminalStatus::retired;
    return std::nullopt;
}

ChallengeKey::~ChallengeKey() { sodium_memzero(bytes.data(), bytes.size()); }

PurchaseProof purchase_proof(const iso8583::PurseTransaction& t, std::uint32_t amount_fen) {
    PurchaseProof p;
    p.tac = t.tac;
    p.when = t.when;
    p.type = t.type;
    p.amount_fen = amount_fen;
    p.offline_atc = t.offline_atc;
    p.balance_before_fen = t.balance_before_fen;
    Bytes claims = be_bytes(t.balance_before_fen, 4);
    append_be(claims, t.offline_atc, 2);
    append(claims, t.transit_record);
    const ledger::Id digest = ledger::derive_id(claims);
    const Bytes digest_bytes = be_bytes(digest.high, 8);
    std::copy(digest_bytes.begin(), digest_bytes.end(), p.claims_digest.begin());
    return p;
}

bool same_proven_record(const PurchaseProof& a, const PurchaseProof& b) {
    return a.tac == b.tac && a.when == b.when && a.type == b.type && a.amount_fen == b.amount_fen;
}

void count_in_batch(TerminalRecord& r, std::optional<std::uint32_t> batch_number, BatchTotal total, std::uint64_t amount_fen) {
    if (batch_number && *batch_number != r.batch_number) {
        // A new batch: its totals start at zero.
        const TerminalRecord kept = r;
        r = TerminalRecord{};
        r.terminal_id = kept.terminal_id;
        r.psam_terminal_id = kept.psam_terminal_id;
        r.participant_id = kept.participant_id;
        r.merchant_id = kept.merchant_id;
        r.last_stan = kept.last_stan;
        r.uploads = kept.uploads;
        r.status = kept.status;
        r.forged_day = kept.forged_day;
        r.forged_count = kept.forged_count;
        r.batch_number = *batch_number;
    }
    switch (total) {
        case BatchTotal::debit: r.batch_debits_count++, r.batch_debits_fen += amount_fen; break;
        case BatchTotal::credit: r.batch_credits_count++, r.batch_credits_fen += amount_fen; break;
        case BatchTotal::credit_reversal: r.batch_credit_reversals_count++, r.batch_credit_reversals_fen += amount_fen; break;
        case BatchTotal::debit_reversal: r.batch_debit_reversals_count++, r.batch_debit_reversals_fen += amount_fen; break;
    }
}

void append_card_opening(std::vector<ledger::Event>& events, const CardRecord& card) {
    append_card_opening(events, card.asn, card.opening_balance_fen, card.medical_opening_fen);
}

}  // namespace coconut::clearing
