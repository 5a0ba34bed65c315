// Application maintenance of the purse (docs/CARD-SPEC.md §2 "Application block"): APPLICATION BLOCK
// (temporary or permanent) and APPLICATION UNBLOCK, both under the card's DAMK with a MAC over the
// command header and a GET CHALLENGE that answers one command only.
#include "machine.hpp"

#include <algorithm>

namespace coconut::cos {
namespace {

constexpr std::uint8_t ins_get_challenge = 0x84;
constexpr std::uint8_t ins_select = 0xA4;
constexpr std::uint8_t ins_application_unblock = 0x18;
constexpr std::uint8_t ins_application_block = 0x1E;
constexpr std::uint8_t p2_temporary = 0x00;
constexpr std::uint8_t p2_permanent = 0x01;

bool allowed_while_blocked(const Command& c) {
    if (c.cla == 0x00) return c.ins == ins_select || c.ins == ins_get_challenge;
    return c.cla == 0x84 && (c.ins == ins_application_block || c.ins == ins_application_unblock);
}

}  // namespace

std::optional<Response> VirtualCard::State::blocked_refusal(const Command& c) {
    if (nv.kind != ImageKind::card || !purse_selected() || !purse_blocked() || allowed_while_blocked(c)) return std::nullopt;
    vs.pending = PendingTransaction{};
    return status_only(Sw::function_not_supported);
}

Response VirtualCard::State::selected(const Df& df, bool want_fci) const {
    const bool blocked = df.role == DfRole::purse && purse_blocked();
    Response r = want_fci ? Response{fci(df)} : status_only(Sw::ok);
    if (blocked) r.sw = apdu::value(Sw::selected_file_invalidated);
    return r;
}

// 84 1E 00 P2 04 MAC: P2 00 temporary, 01 permanent; MAC = crypto::maintenance_mac over the header.
Response VirtualCard::State::application_block(const Command& c) {
    if (!purse_selected()) return status_only(Sw::conditions_not_satisfied);
    if (c.p1 != 0x00 || (c.p2 != p2_temporary && c.p2 != p2_permanent)) return status_only(Sw::bad_p1_p2);
    if (c.data.size() != 4) return status_only(Sw::wrong_length);
    if (!vs.challenge || vs.challenge->size() != 4) return status_only(Sw::challenge_invalid);
    const KeyEntry* damk = find_key(KeyUsage::maintenance, default_key_index);
    if (!damk) return status_only(Sw::key_not_found);
    crypto::Challenge4 challenge{};
    std::copy(vs.challenge->begin(), vs.challenge->end(), challenge.begin());
    vs.challenge.reset();  // one command per challenge: a replayed MAC finds none (6984)
    const auto mac = crypto::maintenance_mac(damk->value, {c.cla, c.ins, c.p1, c.p2, 0x04}, challenge);
    if (!std::equal(c.data.begin(), c.data.end(), mac.begin())) return status_only(Sw::sm_data_incorrect);
    const ApplicationBlock requested = c.p2 == p2_permanent ? ApplicationBlock::permanent : ApplicationBlock::temporary;
    // A permanent block stays permanent; a temporary one may be made permanent.
    if (nv.purse.block >= requested) return status_only(Sw::ok);
    nv.purse.block = requested;
    return commit() ? status_only(Sw::ok) : status_only(Sw::write_failure);
}

// 84 18 00 00 04 MAC: lifts the MAC-failure lock (9303) and a temporary APPLICATION BLOCK; a permanent
// block answers 9303 and stays.
Response VirtualCard::State::application_unblock(const Command& c) {
    if (!purse_selected()) return status_only(Sw::conditions_not_satisfied);
    if (c.p1 != 0x00 || c.p2 != 0x00) return status_only(Sw::bad_p1_p2);
    if (c.data.size() != 4) return status_only(Sw::wrong_length);
    if (nv.purse.block == ApplicationBlock::permanent) return status_only(Sw::application_locked);
    if (!vs.challenge || vs.challenge->size() != 4) return status_only(Sw::challenge_invalid);
    const KeyEntry* damk = find_key(KeyUsage::maintenance, default_key_index);
    if (!damk) return status_only(Sw::key_not_found);
    crypto::Challenge4 challenge{};
    std::copy(vs.challenge->begin(), vs.challenge->end(), challenge.begin());
    vs.challenge.reset();
    const auto mac = crypto::maintenance_mac(damk->value, crypto::application_unblock_header, challenge);
    if (!std::equal(c.data.begin(), c.data.end(), mac.begin())) return status_only(Sw::mac_invalid);
    nv.purse.locked = false;
    nv.purse.mac_failures = 0;
    nv.purse.block = ApplicationBlock::none;
    return commit() ? status_only(Sw::ok) : status_only(Sw::write_failure);
}

}  // namespace coconut::cos
