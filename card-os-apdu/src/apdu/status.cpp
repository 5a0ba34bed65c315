#include <coconut/apdu/status.hpp>

namespace coconut::apdu {

std::string_view describe(std::uint16_t sw) {
    switch (static_cast<Sw>(sw)) {
        case Sw::ok: return "success";
        case Sw::selected_file_invalidated: return "selected file invalidated (application blocked)";
        case Sw::write_failure: return "write failure";
        case Sw::wrong_length: return "wrong length";
        case Sw::command_incompatible_with_file: return "command incompatible with file";
        case Sw::security_status_not_satisfied: return "security status not satisfied";
        case Sw::key_or_pin_blocked: return "key or PIN blocked";
        case Sw::challenge_invalid: return "challenge invalid";
        case Sw::conditions_not_satisfied: return "conditions of use not satisfied";
        case Sw::no_current_ef: return "no current EF";
        case Sw::sm_data_incorrect: return "MAC incorrect (secure messaging data)";
        case Sw::bad_data: return "incorrect data";
        case Sw::function_not_supported: return "function not supported";
        case Sw::file_not_found: return "file or application not found";
        case Sw::record_not_found: return "record not found";
        case Sw::bad_p1_p2: return "incorrect P1/P2";
        case Sw::key_not_found: return "key not found";
        case Sw::bad_offset: return "offset outside the file";
        case Sw::ins_not_supported: return "INS not supported";
        case Sw::cla_not_supported: return "CLA not supported";
        case Sw::mac_invalid: return "MAC invalid";
        case Sw::application_locked: return "application locked";
        case Sw::insufficient_balance: return "insufficient balance";
        case Sw::key_index_not_supported: return "key index not supported";
        case Sw::mac_unavailable: return "required MAC unavailable";
    }
    if (is_wrong_le(sw)) return "wrong Le (SW2 = exact length)";
    if (is_bytes_available(sw)) return "response bytes available (GET RESPONSE)";
    if (is_pin_wrong(sw)) return "PIN wrong (SW2 low nibble = tries left)";
    return "unknown status";
}

}  // namespace coconut::apdu
