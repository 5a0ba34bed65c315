// The PSAM (docs/CARD-SPEC.md §5): INIT SAM FOR PURCHASE (80 70) computes the card's session key and MAC1 from the
// issuer-level purchase key; VERIFY MAC2 (80 72) proves the card's debit. The terminal transaction serial
// is durable: a serial is never handed out twice.
#include "machine.hpp"

namespace coconut::cos {
namespace {

// card random(4) ‖ offline ATC(2) ‖ amount(4) ‖ type(1) ‖ date-time(7) ‖ key version(1) ‖ alg id(1)
constexpr std::size_t init_fixed_size = 20;
constexpr std::size_t factor_size = 8;
// Card factor and issuer factor: the deepest diversification this profile defines.
constexpr std::size_t factors_max = 2;

}  // namespace

Response VirtualCard::State::psam_command(const Command& c) {
    switch (c.ins) {
        case 0x70: return psam_init_for_purchase(c);
        case 0x72: return psam_verify_mac2(c);
        default: return status_only(Sw::ins_not_supported);
    }
}

Response VirtualCard::State::psam_init_for_purchase(const Command& c) {
    if (c.p1 != 0x00 || c.p2 != 0x00) return status_only(Sw::bad_p1_p2);
    const std::size_t n = c.data.size();
    if (n < init_fixed_size + factor_size || (n - init_fixed_size) % factor_size != 0) return status_only(Sw::wrong_length);
    const std::size_t factor_count = (n - init_fixed_size) / factor_size;
    const ByteView data(c.data);
    const ByteView card_random = data.subspan(0, 4);
    const std::uint16_t card_atc = read_be16(data.subspan(4, 2));
    const std::uint32_t amount = read_be32(data.subspan(6, 4));
    const std::uint8_t type = data[10];
    const ByteView date = data.subspan(11, 4);
    const ByteView time = data.subspan(15, 3);
    const std::uint8_t key_version = data[18];
    const std::uint8_t alg = data[19];
    const ByteView card_factor = data.subspan(init_fixed_size, factor_size);

    if (type != crypto::type_ep_purchase && type != crypto::type_capp_purchase) return status_only(Sw::bad_data);
    if (!valid_card_date_time(date, time)) return status_only(Sw::bad_data);
    const PsamState& m = nv.psam;
    if (key_version != m.key_version) return status_only(Sw::key_not_found);
    if (alg != alg_3des) return status_only(Sw::key_index_not_supported);
    if (factor_count > factors_max) return status_only(Sw::key_not_found);

    // The terminals send card then issuer factor; the key applies issuer then card (docs/CARD-SPEC.md §4).
    crypto::Block card_block{};
    std::copy(card_factor.begin(), card_factor.end(), card_block.begin());
    crypto::Key16 dpk;
    if (m.key_is_master) {
        if (factor_count != 2) return status_only(Sw::key_not_found);
        crypto::Block issuer_block{};
        const ByteView issuer = data.subspan(init_fixed_size + factor_size, factor_size);
        std::copy(issuer.begin(), issuer.end(), issuer_block.begin());
        dpk = crypto::diversify_card_key(m.purchase_key, issuer_block, card_block);
    } else {
        if (factor_count == 2) {
            const ByteView issuer = data.subspan(init_fixed_size + factor_size, factor_size);
            if (!std::equal(issuer.begin(), issuer.end(), m.issuer_id.begin())) return status_only(Sw::key_not_found);
        }
        dpk = crypto::diversify(m.purchase_key, card_block);
    }

    // Spend the serial durably before it leaves the PSAM.
    const std::uint32_t serial = nv.psam.next_serial;
    ++nv.psam.next_serial;
    if (!commit()) return status_only(Sw::write_failure);

    const crypto::Key8 session = crypto::purchase_session_key(dpk, card_random, card_atc, serial);
    const auto mac1 = crypto::des_mac(session, crypto::purchase_mac1_input(amount, type, m.terminal_id, card_date_time(date, time)));
    vs.psam_session = PsamSession{true, session, amount};
    Bytes out = be_bytes(serial, 4);
    append(out, mac1);
    return Response{out};
}

Response VirtualCard::State::psam_verify_mac2(const Command& c) {
    if (c.p1 != 0x00 || c.p2 != 0x00) return status_only(Sw::bad_p1_p2);
    if (c.data.size() != 4) return status_only(Sw::wrong_length);
    if (!vs.psam_session.active) return status_only(Sw::conditions_not_satisfied);
    const PsamSession session = vs.psam_session;
    vs.psam_session = PsamSession{};  // one verification per session
    const auto expected = crypto::des_mac(session.session_key, crypto::purchase_mac2_input(session.amount_fen));
    if (!std::equal(expected.begin(), expected.end(), c.data.begin())) return status_only(Sw::mac_invalid);
    return status_only(Sw::ok);
}

}  // namespace coconut::cos
