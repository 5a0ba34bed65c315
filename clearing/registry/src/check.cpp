// `check`: the ledger's invariants and the registries' against it (check.hpp).
#include "registry_internal.hpp"

#include <coconut/clearing/check.hpp>

#include <set>

namespace coconut::clearing {

using detail::storage_error;

namespace {

// The online tables against the ledger, and the hotlist log against the card statuses.
Status check_online(const ledger::Ledger& ledger, const Registry& registry, const std::vector<CardRecord>& cards, CheckReport& report) {
    COCONUT_TRY(attempts, registry.load_attempts(), detail::as_failure);
    report.load_attempts = attempts.size();
    for (const auto& a : attempts) {
        const ledger::Id id = online_load_transfer(a.asn, a.online_atc, a.attempt.attempt);
        COCONUT_TRY(transfer, ledger.lookup_transfer(id), detail::as_failure);
        // 210000 loads from the float, 280000 loads from the card's carried holding (transfer 14), 200000 refund
        // credits from the participant's purse payable (transfer 22).
        const bool load_code =
            transfer && (transfer->code == transfer_codes::online_load || transfer->code == transfer_codes::carried_load ||
                         transfer->code == transfer_codes::purchase_refund);
        if (!transfer || !load_code || (transfer->flags & ledger::transfer_flags::pending) == 0 ||
            transfer->credit_account_id != purse_shadow_account(a.asn) || transfer->amount != a.attempt.amount_fen) {
            report.problems.push_back("load of card " + bcd_to_digits(a.asn) + " online ATC " + std::to_string(a.online_atc) +
                                      ": no pending online_load transfer " + ledger::to_string(id) + " of " +
                                      std::to_string(a.attempt.amount_fen) + " fen to its purse shadow");
        }
    }
    COCONUT_TRY(holds, registry.holds(), detail::as_failure);
    report.holds = holds.size();
    for (const auto& [id, hold] : holds) {
        COCONUT_TRY(transfer, ledger.lookup_transfer(id), detail::as_failure);
        if (!transfer || transfer->code != transfer_codes::clinic_medical || (transfer->flags & ledger::transfer_flags::pending) == 0 ||
            transfer->debit_account_id != medical_account(hold.asn) || transfer->amount > hold.requested_fen) {
            report.problems.push_back("hold " + ledger::to_string(id) + " of card " + bcd_to_digits(hold.asn) +
                                      ": no pending clinic_medical transfer from its medical account within the amount asked");
        }
    }
    std::set<Asn> listed;
    std::uint32_t chunk_index = 0;
    for (bool more = true; more; ++chunk_index) {
        COCONUT_TRY(chunk, registry.hotlist_chunk(0, chunk_index), detail::as_failure);
        for (const HotlistEntry& e : chunk.entries) {
            if (e.added) listed.insert(e.asn);
            else listed.erase(e.asn);
        }
        report.hotlist_version = chunk.version;
        more = chunk.more;
    }
    std::set<Asn> refused;
    for (const CardRecord& card : cards) {
        if (card.status != CardStatus::active) refused.insert(card.asn);
    }
    for (const Asn& asn : refused) {
        if (!listed.count(asn)) report.problems.push_back("card " + bcd_to_digits(asn) + " is not active but not on the hotlist log");
    }
    for (const Asn& asn : listed) {
        if (!refused.count(asn)) report.problems.push_back("card " + bcd_to_digits(asn) + " is on the hotlist log but active");
    }
    return Ok{};
}

}  // namespace

Result<CheckReport> check(const ledger::Ledger& ledger, const Registry& registry) {
    CheckReport report;
    auto ledger_report = ledger.check();
    if (!ledger_report) return Unexpected<Error>{storage_error(ledger_report.error())};
    report.ledger = std::move(ledger_report).value();
    COCONUT_TRY(cards, registry.cards(), detail::as_failure);
    report.cards = cards.size();
    for (const CardRecord& card : cards) {
        const std::string name = "card " + bcd_to_digits(card.asn);
        COCONUT_TRY(shadow, ledger.lookup_account(purse_shadow_account(card.asn)), detail::as_failure);
        COCONUT_TRY(medical, ledger.lookup_account(medical_account(card.asn)), detail::as_failure);
        if (!shadow || shadow->ledger != ledgers::purse || shadow->code != account_codes::card_purse_shadow) {
            report.problems.push_back(name + ": purse shadow account missing or not on ledger 1 / code 1");
            continue;
        }
        if (!medical || medical->ledger != ledgers::medical || medical->code != account_codes::card_medical) {
            report.problems.push_back(name + ": medical account missing or not on ledger 2 / code 2");
        }
        const std::int64_t ledger_balance = static_cast<std::int64_t>(shadow->credits_posted) -
                                            static_cast<std::int64_t>(shadow->debits_posted) -
                                            static_cast<std::int64_t>(shadow->debits_pending);
        if (ledger_balance != card.shadow_balance_fen) {
            report.problems.push_back(name + ": registry shadow balance " + std::to_string(card.shadow_balance_fen) +
                                      " fen, purse shadow account " + std::to_string(ledger_balance) + " fen");
        }
    }
    for (ledger::Id suspense : {purse_suspense_account, medical_suspense_account}) {
        COCONUT_TRY(account, ledger.lookup_account(suspense), detail::as_failure);
        if (account && (account->debits_posted != 0 || account->debits_pending != 0)) {
            report.problems.push_back("suspense account " + ledger::to_string(suspense) +
                                      " was debited: money whose TAC failed left suspense");
        }
    }
    // Review records only ever debit the review claims account (review claims → suspense): nothing
    // credits it, so an unproven claim can never be turned into money anywhere.
    {
        COCONUT_TRY(account, ledger.lookup_account(purse_review_claims_account), detail::as_failure);
        if (account && (account->credits_posted != 0 || account->credits_pending != 0)) {
            report.problems.push_back("review claims account " + ledger::to_string(purse_review_claims_account) +
                                      " was credited: only review records (to suspense) may touch it");
        }
    }
    COCONUT_TRY(participants, registry.participants(), detail::as_failure);
    COCONUT_TRY(terminals, registry.terminals(), detail::as_failure);
    std::set<std::uint64_t> participant_ids;
    for (const auto& p : participants) participant_ids.insert(p.id);
    for (const auto& t : terminals) {
        if (!participant_ids.count(t.participant_id)) {
            report.problems.push_back("terminal " + t.terminal_id + ": participant " + std::to_string(t.participant_id) +
                                      " not registered");
        }
    }
    COCONUT_TRY(flags, registry.risk_flags(), detail::as_failure);
    report.risk_flags = flags.size();
    if (auto s = check_online(ledger, registry, cards, report); !s) return Unexpected<Error>{s.error()};
    return report;
}

}  // namespace coconut::clearing
