// The maintenance MAC service: APPLICATION BLOCK / UNBLOCK of a card (docs/CARD-SPEC.md §2 "Application
// block", §4), under the card's DAMK derived from the maintenance master like every other card key.
#include <coconut/hsm/hsm.hpp>

#include <fmt/format.h>

namespace coconut::hsm {
namespace {

std::string_view header_name(const crypto::MaintenanceHeader& header) {
    if (header == crypto::application_block_header(true)) return "APPLICATION BLOCK (permanent)";
    if (header == crypto::application_block_header(false)) return "APPLICATION BLOCK (temporary)";
    return "APPLICATION UNBLOCK";
}

}  // namespace

Outcome<MaintenanceMac> Hsm::maintenance_mac(const MaintenanceMacRequest& request, Usage* usage) const {
    if (!is_bcd(request.card.asn)) return fail(Errc::bad_request, fmt::format("ASN {} is not BCD", to_hex(request.card.asn)));
    if (!crypto::is_maintenance_header(request.header))
        return fail(Errc::bad_request, fmt::format("command header {} is not a maintenance command (84 1E 00 00|01 04 block, "
                                                   "84 18 00 00 04 unblock)",
                                                   to_hex(request.header)));
    auto info = store_->find(request.key);
    if (!info) return Unexpected<Failure>{info.error()};
    if (info->usage != KeyUsage::maintenance)
        return fail(Errc::wrong_key_usage, fmt::format("key {}:{} is a {} key; a maintenance MAC needs a maintenance (DAMK) master",
                                                       info->label, info->version, key_usage_name(info->usage)));
    auto master = store_->key_material(KeyRef{info->label, info->version}, KeyUsage::maintenance);
    if (!master) return Unexpected<Failure>{master.error()};
    crypto::Block issuer_factor{};
    std::copy(request.card.issuer_id.begin(), request.card.issuer_id.end(), issuer_factor.begin());
    const crypto::Key16 damk = crypto::diversify_card_key(master.value(), issuer_factor, crypto::card_factor_from_asn(request.card.asn));
    MaintenanceMac answer{crypto::maintenance_mac(damk, request.header, request.challenge), info->version};
    if (usage != nullptr) {
        usage->key_label = info->label;
        usage->key_versions = {info->version};
        usage->result = fmt::format("MAC for {} of ASN {} issuer {}", header_name(request.header), bcd_to_digits(request.card.asn),
                                    to_hex(request.card.issuer_id));
    }
    return answer;
}

}  // namespace coconut::hsm
