// ISO 7816-4 file and security commands: SELECT, READ/UPDATE BINARY, READ/UPDATE RECORD, VERIFY,
// GET CHALLENGE, EXTERNAL and INTERNAL AUTHENTICATE.
#include "machine.hpp"

#include <coconut/apdu/tlv.hpp>

#include <algorithm>

namespace coconut::cos {
namespace {

// Case-2 Le rule: Le 00 (256) takes what there is; any other Le must match the length exactly,
// else 6Cxx tells the terminal the right one.
std::optional<Response> check_exact_le(const Command& c, std::size_t length) {
    const std::size_t le = c.le.value_or(apdu::short_le_max);
    if (le == apdu::short_le_max || le == length) return std::nullopt;
    return status_only(apdu::sw_wrong_le(static_cast<std::uint8_t>(std::min<std::size_t>(length, 255))));
}

// P2 of READ/UPDATE RECORD: bits 8–4 SFI (0 = current EF), bits 3–1 100 = record number P1,
// 000 = first record with identifier (tag) P1.
struct RecordAddress {
    std::uint8_t sfi = 0;
    bool by_number = true;
};
std::optional<RecordAddress> record_address(std::uint8_t p2) {
    const std::uint8_t mode = p2 & 0x07;
    if (mode != 0x04 && mode != 0x00) return std::nullopt;
    return RecordAddress{static_cast<std::uint8_t>(p2 >> 3), mode == 0x04};
}

bool is_record_file(const Ef& ef) { return ef.type != EfType::transparent; }

Bytes* find_record(Ef& ef, const RecordAddress& address, std::uint8_t p1) {
    if (address.by_number) {
        if (p1 == 0 || p1 > ef.records.size()) return nullptr;
        return &ef.records[p1 - 1u];
    }
    for (Bytes& record : ef.records)
        if (!record.empty() && record[0] == p1) return &record;
    return nullptr;
}

}  // namespace

bool VirtualCard::State::access_granted(Access access) const {
    switch (access) {
        case Access::always: return true;
        case Access::never: return false;
        case Access::pin: return vs.pin_verified;
        case Access::external_auth: return vs.external_authenticated;
    }
    return false;
}

Ef* VirtualCard::State::find_ef_by_sfi(std::uint8_t sfi) {
    // The current DF first, then the MF (PSAM EF16 and card-wide files live there).
    for (int df : {vs.current_df, 0}) {
        for (Ef& ef : nv.dfs[static_cast<std::size_t>(df)].efs)
            if (ef.sfi == sfi) return &ef;
    }
    return nullptr;
}

Ef* VirtualCard::State::find_ef_in(DfRole role, std::uint8_t sfi) {
    for (Df& df : nv.dfs)
        if (df.role == role)
            for (Ef& ef : df.efs)
                if (ef.sfi == sfi) return &ef;
    return nullptr;
}

KeyEntry* VirtualCard::State::find_key(KeyUsage usage, std::uint8_t index) {
    for (KeyEntry& key : nv.keys)
        if (key.usage == usage && key.index == index) return &key;
    return nullptr;
}

Bytes VirtualCard::State::fci(const Df& df) const {
    using apdu::append_tlv;
    Bytes body;
    if (df.aid.empty()) {
        append_tlv(body, 0x83, be_bytes(df.fid, 2));
        return apdu::encode_tlv(0x62, body);
    }
    append_tlv(body, 0x84, df.aid);
    Bytes proprietary;
    if (df.role == DfRole::purse) {
        const Ef* ef15 = nullptr;
        for (const Ef& ef : df.efs)
            if (ef.sfi == sfi_public) ef15 = &ef;
        append_tlv(proprietary, 0x9F08, Bytes{ef15->data[ef15::app_version]});
        append_tlv(proprietary, 0x9F0C, ef15->data);
    } else if (df.role == DfRole::ssse) {
        append_tlv(proprietary, 0x9F08, Bytes{0x01});
    }
    append_tlv(body, 0xA5, proprietary);
    return apdu::encode_tlv(0x6F, body);
}

Response VirtualCard::State::select(const Command& c) {
    if (c.p2 != 0x00 && c.p2 != 0x0C) return status_only(Sw::bad_p1_p2);
    const bool want_fci = c.p2 == 0x00;
    if (c.p1 == 0x04) {
        if (c.data.empty()) return status_only(Sw::wrong_length);
        if (std::equal(c.data.begin(), c.data.end(), pse_name.begin(), pse_name.end()) && nv.kind == ImageKind::card) {
            // PSE: the directory of applications is not kept; the name answers with its FCI.
            vs.current_df = 0;
            vs.current_ef = -1;
            Bytes body = apdu::encode_tlv(0x84, pse_name);
            apdu::append_tlv(body, 0xA5, apdu::encode_tlv(0x88, Bytes{0x01}));
            return want_fci ? Response{apdu::encode_tlv(0x6F, body)} : status_only(Sw::ok);
        }
        for (std::size_t i = 0; i < nv.dfs.size(); ++i) {
            if (!nv.dfs[i].aid.empty() && nv.dfs[i].aid == c.data) {
                vs.current_df = static_cast<int>(i);
                vs.current_ef = -1;
                return selected(nv.dfs[i], want_fci);
            }
        }
        return status_only(Sw::file_not_found);
    }
    if (c.p1 != 0x00) return status_only(Sw::bad_p1_p2);
    if (c.data.size() != 2) return status_only(Sw::wrong_length);
    const std::uint16_t fid = read_be16(c.data);
    if (fid == fid_mf) {
        vs.current_df = 0;
        vs.current_ef = -1;
        return want_fci ? Response{fci(nv.dfs[0])} : status_only(Sw::ok);
    }
    // A child DF of the current DF, then an EF of the current DF, then a DF under the MF.
    for (std::size_t i = 0; i < nv.dfs.size(); ++i) {
        if (nv.dfs[i].fid == fid && nv.dfs[i].parent == vs.current_df) {
            vs.current_df = static_cast<int>(i);
            vs.current_ef = -1;
            return selected(nv.dfs[i], want_fci);
        }
    }
    const auto& efs = current_df().efs;
    for (std::size_t i = 0; i < efs.size(); ++i) {
        if (efs[i].fid == fid) {
            vs.current_ef = static_cast<int>(i);
            return status_only(Sw::ok);
        }
    }
    for (std::size_t i = 0; i < nv.dfs.size(); ++i) {
        if (nv.dfs[i].fid == fid && nv.dfs[i].parent == 0) {
            vs.current_df = static_cast<int>(i);
            vs.current_ef = -1;
            return selected(nv.dfs[i], want_fci);
        }
    }
    return status_only(Sw::file_not_found);
}

Result<VirtualCard::State::BinaryTarget, Response> VirtualCard::State::binary_target(const Command& c, bool write) {
    // P1 b8 set: SFI in b5–b1 and the offset in P2; otherwise the current EF and a 15-bit offset.
    BinaryTarget target;
    if (c.p1 & 0x80) {
        if (c.p1 & 0x60) return Unexpected{status_only(Sw::bad_p1_p2)};
        target.ef = find_ef_by_sfi(c.p1 & 0x1F);
        if (!target.ef) return Unexpected{status_only(Sw::file_not_found)};
        target.offset = c.p2;
    } else {
        if (vs.current_ef < 0) return Unexpected{status_only(Sw::no_current_ef)};
        target.ef = &current_df().efs[static_cast<std::size_t>(vs.current_ef)];
        target.offset = (static_cast<std::size_t>(c.p1) << 8) | c.p2;
    }
    if (target.ef->type != EfType::transparent) return Unexpected{status_only(Sw::command_incompatible_with_file)};
    if (!access_granted(write ? target.ef->write : target.ef->read)) return Unexpected{status_only(Sw::security_status_not_satisfied)};
    if (target.offset >= target.ef->data.size()) return Unexpected{status_only(Sw::bad_offset)};
    return target;
}

Result<Ef*, Response> VirtualCard::State::record_target(std::uint8_t sfi, bool write) {
    Ef* ef = nullptr;
    if (sfi == 0) {
        if (vs.current_ef < 0) return Unexpected{status_only(Sw::no_current_ef)};
        ef = &current_df().efs[static_cast<std::size_t>(vs.current_ef)];
    } else {
        ef = find_ef_by_sfi(sfi);
        if (!ef) return Unexpected{status_only(Sw::file_not_found)};
    }
    if (!is_record_file(*ef)) return Unexpected{status_only(Sw::command_incompatible_with_file)};
    if (!access_granted(write ? ef->write : ef->read)) return Unexpected{status_only(Sw::security_status_not_satisfied)};
    return ef;
}

Response VirtualCard::State::read_binary(const Command& c) {
    if (!c.data.empty()) return status_only(Sw::wrong_length);
    auto target = binary_target(c, false);
    if (!target) return target.error();
    Ef* ef = target->ef;
    const std::size_t offset = target->offset;
    const std::size_t remaining = ef->data.size() - offset;
    const std::size_t le = c.le.value_or(apdu::short_le_max);
    if (le > remaining && le != apdu::short_le_max)
        return status_only(apdu::sw_wrong_le(static_cast<std::uint8_t>(std::min<std::size_t>(remaining, 255))));
    const std::size_t take = std::min(le, remaining);
    return Response{
        Bytes(ef->data.begin() + static_cast<std::ptrdiff_t>(offset), ef->data.begin() + static_cast<std::ptrdiff_t>(offset + take))};
}

Response VirtualCard::State::update_binary(const Command& c) {
    if (c.data.empty()) return status_only(Sw::wrong_length);
    auto target = binary_target(c, true);
    if (!target) return target.error();
    Ef* ef = target->ef;
    const std::size_t offset = target->offset;
    if (c.data.size() > ef->data.size() - offset) return status_only(Sw::wrong_length);
    std::copy(c.data.begin(), c.data.end(), ef->data.begin() + static_cast<std::ptrdiff_t>(offset));
    return commit() ? status_only(Sw::ok) : status_only(Sw::write_failure);
}

Response VirtualCard::State::read_record(const Command& c) {
    if (!c.data.empty()) return status_only(Sw::wrong_length);
    const auto address = record_address(c.p2);
    if (!address) return status_only(Sw::bad_p1_p2);
    auto target = record_target(address->sfi, false);
    if (!target) return target.error();
    Ef* ef = *target;
    const Bytes* record = find_record(*ef, *address, c.p1);
    if (!record) return status_only(Sw::record_not_found);
    if (auto wrong = check_exact_le(c, record->size())) return *wrong;
    return Response{*record};
}

Response VirtualCard::State::update_record(const Command& c) {
    const auto address = record_address(c.p2);
    if (!address) return status_only(Sw::bad_p1_p2);
    if (c.data.empty()) return status_only(Sw::wrong_length);
    auto target = record_target(address->sfi, true);
    if (!target) return target.error();
    Ef* ef = *target;
    Bytes* record = find_record(*ef, *address, c.p1);
    if (!record) return status_only(Sw::record_not_found);
    if (ef->type == EfType::tlv_records) {
        // The replacement must be one TLV with the same tag that fits its length byte.
        if (c.data.size() < 2 || c.data[0] != (*record)[0] || c.data[1] != c.data.size() - 2u) return status_only(Sw::bad_data);
    } else if (c.data.size() != ef->record_size) {
        return status_only(Sw::wrong_length);
    }
    *record = c.data;
    return commit() ? status_only(Sw::ok) : status_only(Sw::write_failure);
}

Response VirtualCard::State::verify_pin(const Command& c) {
    if (c.p1 != 0x00 || c.p2 != 0x00) return status_only(Sw::bad_p1_p2);
    if (c.data.size() < 2 || c.data.size() > 6) return status_only(Sw::wrong_length);
    PinState& pin = nv.pin;
    if (pin.tries_left == 0) return status_only(Sw::key_or_pin_blocked);
    if (c.data == pin.bcd) {
        vs.pin_verified = true;
        if (pin.tries_left != pin.tries_max) {
            pin.tries_left = pin.tries_max;
            if (!commit()) return status_only(Sw::write_failure);
        }
        return status_only(Sw::ok);
    }
    vs.pin_verified = false;
    --pin.tries_left;
    if (!commit()) return status_only(Sw::write_failure);
    // The failing attempt reports the tries left (63C0 for the last); later attempts answer 6983.
    return status_only(apdu::sw_pin_wrong(pin.tries_left));
}

Response VirtualCard::State::get_challenge(const Command& c) {
    if (c.p1 != 0x00 || c.p2 != 0x00) return status_only(Sw::bad_p1_p2);
    if (!c.data.empty() || !c.le || (*c.le != 4 && *c.le != 8)) return status_only(Sw::wrong_length);
    vs.challenge = random(*c.le);
    return Response{*vs.challenge};
}

Response VirtualCard::State::external_authenticate(const Command& c) {
    if (c.p1 != 0x00) return status_only(Sw::bad_p1_p2);
    if (c.data.size() != 8) return status_only(Sw::wrong_length);
    if (!vs.challenge) return status_only(Sw::challenge_invalid);
    KeyEntry* key = find_key(KeyUsage::maintenance, c.p2);
    if (!key) return status_only(Sw::key_not_found);
    if (key->tries_left == 0) return status_only(Sw::key_or_pin_blocked);
    Bytes expected_input = *vs.challenge;
    expected_input.resize(8, 0x00);
    vs.challenge.reset();  // a challenge answers one authentication only
    const Bytes expected = crypto::tdes_ecb_encrypt(key->value, expected_input);
    if (expected != c.data) {
        vs.external_authenticated = false;
        --key->tries_left;
        if (!commit()) return status_only(Sw::write_failure);
        return status_only(apdu::sw_pin_wrong(key->tries_left));
    }
    vs.external_authenticated = true;
    if (key->tries_left != key_tries_max) {
        key->tries_left = key_tries_max;
        if (!commit()) return status_only(Sw::write_failure);
    }
    return status_only(Sw::ok);
}

Response VirtualCard::State::internal_authenticate(const Command& c) {
    if (c.p1 != 0x00) return status_only(Sw::bad_p1_p2);
    if (c.data.size() != 8) return status_only(Sw::wrong_length);
    const DfRole role = current_df().role;
    if (role != DfRole::purse && role != DfRole::ssse && role != DfRole::medical) return status_only(Sw::conditions_not_satisfied);
    // Clinic payments: card presence is proven only together with the holder's PIN, under the SSSE
    // application's own key — the purse's IAK answers without a PIN, so its cryptogram proves nothing about
    // the holder (docs/CARD-SPEC.md §7 profile).
    const bool ssse = role == DfRole::ssse || role == DfRole::medical;
    if (ssse && !vs.pin_verified) return status_only(Sw::security_status_not_satisfied);
    KeyEntry* key = find_key(ssse ? KeyUsage::ssse_auth : KeyUsage::internal_auth, c.p2);
    if (!key) return status_only(Sw::key_not_found);
    return Response{crypto::tdes_ecb_encrypt(key->value, c.data)};
}

}  // namespace coconut::cos
