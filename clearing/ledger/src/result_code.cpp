#include <coconut/ledger/ledger.hpp>

namespace coconut::ledger {

std::string_view to_string(ResultCode code) {
    switch (code) {
        case ResultCode::ok: return "ok";
        case ResultCode::linked_event_failed: return "linked_event_failed";
        case ResultCode::linked_event_chain_open: return "linked_event_chain_open";
        case ResultCode::timestamp_must_be_zero: return "timestamp_must_be_zero";
        case ResultCode::reserved_flag: return "reserved_flag";
        case ResultCode::id_must_not_be_zero: return "id_must_not_be_zero";
        case ResultCode::id_must_not_be_int_max: return "id_must_not_be_int_max";
        case ResultCode::exists_with_different_flags: return "exists_with_different_flags";
        case ResultCode::exists_with_different_pending_id: return "exists_with_different_pending_id";
        case ResultCode::exists_with_different_timeout: return "exists_with_different_timeout";
        case ResultCode::exists_with_different_debit_account_id: return "exists_with_different_debit_account_id";
        case ResultCode::exists_with_different_credit_account_id: return "exists_with_different_credit_account_id";
        case ResultCode::exists_with_different_amount: return "exists_with_different_amount";
        case ResultCode::exists_with_different_user_data_128: return "exists_with_different_user_data_128";
        case ResultCode::exists_with_different_user_data_64: return "exists_with_different_user_data_64";
        case ResultCode::exists_with_different_user_data_32: return "exists_with_different_user_data_32";
        case ResultCode::exists_with_different_ledger: return "exists_with_different_ledger";
        case ResultCode::exists_with_different_code: return "exists_with_different_code";
        case ResultCode::exists: return "exists";
        case ResultCode::id_already_failed: return "id_already_failed";
        case ResultCode::flags_are_mutually_exclusive: return "flags_are_mutually_exclusive";
        case ResultCode::debits_pending_must_be_zero: return "debits_pending_must_be_zero";
        case ResultCode::debits_posted_must_be_zero: return "debits_posted_must_be_zero";
        case ResultCode::credits_pending_must_be_zero: return "credits_pending_must_be_zero";
        case ResultCode::credits_posted_must_be_zero: return "credits_posted_must_be_zero";
        case ResultCode::debit_account_id_must_not_be_zero: return "debit_account_id_must_not_be_zero";
        case ResultCode::debit_account_id_must_not_be_int_max: return "debit_account_id_must_not_be_int_max";
        case ResultCode::credit_account_id_must_not_be_zero: return "credit_account_id_must_not_be_zero";
        case ResultCode::credit_account_id_must_not_be_int_max: return "credit_account_id_must_not_be_int_max";
        case ResultCode::accounts_must_be_different: return "accounts_must_be_different";
        case ResultCode::pending_id_must_be_zero: return "pending_id_must_be_zero";
        case ResultCode::pending_id_must_not_be_zero: return "pending_id_must_not_be_zero";
        case ResultCode::pending_id_must_not_be_int_max: return "pending_id_must_not_be_int_max";
        case ResultCode::pending_id_must_be_different: return "pending_id_must_be_different";
        case ResultCode::timeout_reserved_for_pending_transfer: return "timeout_reserved_for_pending_transfer";
        case ResultCode::amount_must_not_be_zero: return "amount_must_not_be_zero";
        case ResultCode::ledger_must_not_be_zero: return "ledger_must_not_be_zero";
        case ResultCode::code_must_not_be_zero: return "code_must_not_be_zero";
        case ResultCode::debit_account_not_found: return "debit_account_not_found";
        case ResultCode::credit_account_not_found: return "credit_account_not_found";
        case ResultCode::accounts_must_have_the_same_ledger: return "accounts_must_have_the_same_ledger";
        case ResultCode::transfer_must_have_the_same_ledger_as_accounts: return "transfer_must_have_the_same_ledger_as_accounts";
        case ResultCode::pending_transfer_not_found: return "pending_transfer_not_found";
        case ResultCode::pending_transfer_not_pending: return "pending_transfer_not_pending";
        case ResultCode::pending_transfer_has_different_debit_account_id: return "pending_transfer_has_different_debit_account_id";
        case ResultCode::pending_transfer_has_different_credit_account_id: return "pending_transfer_has_different_credit_account_id";
        case ResultCode::pending_transfer_has_different_ledger: return "pending_transfer_has_different_ledger";
        case ResultCode::pending_transfer_has_different_code: return "pending_transfer_has_different_code";
        case ResultCode::exceeds_pending_transfer_amount: return "exceeds_pending_transfer_amount";
        case ResultCode::pending_transfer_has_different_amount: return "pending_transfer_has_different_amount";
        case ResultCode::pending_transfer_already_posted: return "pending_transfer_already_posted";
        case ResultCode::pending_transfer_already_voided: return "pending_transfer_already_voided";
        case ResultCode::pending_transfer_expired: return "pending_transfer_expired";
        case ResultCode::overflows_debits_pending: return "overflows_debits_pending";
        case ResultCode::overflows_credits_pending: return "overflows_credits_pending";
        case ResultCode::overflows_debits_posted: return "overflows_debits_posted";
        case ResultCode::overflows_credits_posted: return "overflows_credits_posted";
        case ResultCode::overflows_debits: return "overflows_debits";
        case ResultCode::overflows_credits: return "overflows_credits";
        case ResultCode::overflows_timeout: return "overflows_timeout";
        case ResultCode::exceeds_credits: return "exceeds_credits";
        case ResultCode::exceeds_debits: return "exceeds_debits";
    }
    return "unknown";
}

}  // namespace coconut::ledger
