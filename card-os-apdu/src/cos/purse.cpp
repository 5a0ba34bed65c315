// The e-purse application (docs/CARD-SPEC.md §2, §4, §6): balance, load, purchase, composite (CAPP) purchase,
// transaction proof and the MAC-failure lock (its issuer unblock: maintenance.cpp).
#include "machine.hpp"

#include <coconut/core/assert.hpp>

namespace coconut::cos {
namespace {

// Profile (docs/CARD-SPEC.md §2): consecutive MAC failures on a purse key before the application locks.
constexpr std::uint8_t mac_failures_max = 3;

// The last ATC value: a counter never wraps (an ATC at FFFF refuses INITIALIZE with 6985).
constexpr std::uint16_t atc_max = 0xFFFF;

constexpr std::uint8_t p2_ep = 0x02;
constexpr std::uint8_t p2_ed = 0x01;

// The P2 of a purse command names ED (01) or EP (02); the coconut purse is an EP only.
std::optional<Response> check_ep(std::uint8_t p2) {
    if (p2 == p2_ep) return std::nullopt;
    if (p2 == p2_ed) return status_only(Sw::function_not_supported);
    return status_only(Sw::bad_p1_p2);
}

template <std::size_t N>
std::array<std::uint8_t, N> array_of(ByteView b) {
    std::array<std::uint8_t, N> out{};
    std::copy(b.begin(), b.begin() + N, out.begin());
    return out;
}

}  // namespace

Response VirtualCard::State::purse_command(const Command& c) {
    switch (c.ins) {
        case 0x5C:
        case 0x50:
        case 0x52:
        case 0x54:
        case 0x5A:
        case 0xDC: break;
        default: return status_only(Sw::ins_not_supported);
    }
    if (!purse_selected()) return status_only(Sw::conditions_not_satisfied);
    if (nv.purse.locked) return status_only(Sw::application_locked);
    switch (c.ins) {
        case 0x5C: return get_balance(c);
        case 0x50: return initialize(c);
        case 0x52: return credit_for_load(c);
        case 0x54: return debit_for_purchase(c);
        case 0x5A: return get_transaction_prove(c);
        case 0xDC: return update_capp_cache(c);
        default: return status_only(Sw::ins_not_supported);
    }
}

Response VirtualCard::State::get_balance(const Command& c) {
    // P1 is ignored: some readers probe with other values (docs/CARD-SPEC.md §2).
    if (auto wrong = check_ep(c.p2)) return *wrong;
    if (!c.data.empty()) return status_only(Sw::wrong_length);
    if (c.le && *c.le != 4 && *c.le != apdu::short_le_max) return status_only(apdu::sw_wrong_le(4));
    return Response{be_bytes(nv.purse.balance_fen, 4)};
}

Response VirtualCard::State::initialize(const Command& c) {
    if (c.p1 != 0x00 && c.p1 != 0x01 && c.p1 != 0x03) return status_only(Sw::bad_p1_p2);
    if (auto wrong = check_ep(c.p2)) return *wrong;
    if (c.data.size() != 11) return status_only(Sw::wrong_length);
    const std::uint8_t key_index = c.data[0];
    const std::uint32_t amount = read_be32(ByteView(c.data).subspan(1, 4));
    const ByteView terminal_id = ByteView(c.data).subspan(5, 6);
    const KeyUsage usage = c.p1 == 0x00 ? KeyUsage::load : KeyUsage::purchase;
    const KeyEntry* key = find_key(usage, key_index);
    if (!key) return status_only(Sw::key_index_not_supported);
    if (c.p1 == 0x00) return initialize_load(c, *key, amount, terminal_id);
    return initialize_purchase(c, *key, amount, terminal_id, c.p1 == 0x03);
}

Response VirtualCard::State::initialize_load(const Command&, const KeyEntry& dlk, std::uint32_t amount, ByteView terminal_id) {
    const PurseState& p = nv.purse;
    // An exhausted counter would repeat (ASN, ATC, type) — a load's clearing id, and the card log's key
    // for every transaction: the purse stops.
    if (p.online_atc == atc_max) return status_only(Sw::conditions_not_satisfied);
    if (static_cast<std::uint64_t>(p.balance_fen) + amount > p.max_balance_fen) return status_only(Sw::conditions_not_satisfied);
    const Bytes rnd = random(4);
    PendingTransaction& t = vs.pending;
    t = PendingTransaction{};
    t.kind = PendingTransaction::Kind::load;
    t.amount_fen = amount;
    t.terminal_id = array_of<6>(terminal_id);
    t.random = array_of<4>(rnd);
    t.atc = p.online_atc;
    t.key_index = dlk.index;
    t.load_session_key = crypto::load_session_key(dlk.value, rnd, p.online_atc);
    const auto mac1 =
        crypto::des_mac(t.load_session_key, crypto::load_mac1_input(p.balance_fen, amount, crypto::type_ep_load, terminal_id));
    Bytes out = be_bytes(p.balance_fen, 4);
    append_be(out, p.online_atc, 2);
    out.push_back(dlk.version);
    out.push_back(dlk.alg);
    append(out, rnd);
    append(out, mac1);
    return Response{out};
}

Response VirtualCard::State::initialize_purchase(const Command&, const KeyEntry& dpk, std::uint32_t amount, ByteView terminal_id,
                                                 bool capp) {
    const PurseState& p = nv.purse;
    if (p.offline_atc == atc_max) return status_only(Sw::conditions_not_satisfied);
    // The overdraft limit is reported (EF18, INIT response) but never lent: a purchase needs the balance.
    if (amount > p.balance_fen) return status_only(Sw::insufficient_balance);
    const Bytes rnd = random(4);
    PendingTransaction& t = vs.pending;
    t = PendingTransaction{};
    t.kind = capp ? PendingTransaction::Kind::capp : PendingTransaction::Kind::purchase;
    t.amount_fen = amount;
    t.terminal_id = array_of<6>(terminal_id);
    t.random = array_of<4>(rnd);
    t.atc = p.offline_atc;
    t.key_index = dpk.index;
    Bytes out = be_bytes(p.balance_fen, 4);
    append_be(out, p.offline_atc, 2);
    append_be(out, p.overdraft_limit_fen, 3);
    out.push_back(dpk.version);
    out.push_back(dpk.alg);
    append(out, rnd);
    return Response{out};
}

Response VirtualCard::State::mac_failure() {
    PurseState& p = nv.purse;
    ++p.mac_failures;
    if (p.mac_failures >= mac_failures_max) p.locked = true;
    cancel_pending();
    if (!commit()) return status_only(Sw::write_failure);
    return status_only(Sw::mac_invalid);
}

void VirtualCard::State::append_purse_log(std::uint16_t atc, std::uint32_t amount, std::uint8_t type, ByteView terminal_id,
                                          const crypto::CardDateTime& when) {
    Bytes record;
    append_be(record, atc, 2);
    append_be(record, nv.purse.overdraft_limit_fen, 3);
    append_be(record, amount, 4);
    record.push_back(type);
    append(record, terminal_id);
    append(record, when.date);
    append(record, when.time);
    Ef* log = find_ef_in(DfRole::purse, sfi_purse_log);
    log->records.insert(log->records.begin(), std::move(record));
    if (log->records.size() > log->record_count) log->records.resize(log->record_count);
}

Response VirtualCard::State::credit_for_load(const Command& c) {
    if (c.p1 != 0x00 || c.p2 != 0x00) return status_only(Sw::bad_p1_p2);
    if (c.data.size() != 11) return status_only(Sw::wrong_length);
    if (vs.pending.kind != PendingTransaction::Kind::load) return status_only(Sw::conditions_not_satisfied);
    const PendingTransaction t = vs.pending;
    const ByteView date = ByteView(c.data).subspan(0, 4);
    const ByteView time = ByteView(c.data).subspan(4, 3);
    const ByteView mac2 = ByteView(c.data).subspan(7, 4);
    if (!valid_card_date_time(date, time)) {
        cancel_pending();
        return status_only(Sw::bad_data);
    }
    const auto when = card_date_time(date, time);
    const auto expected =
        crypto::des_mac(t.load_session_key, crypto::load_mac2_input(t.amount_fen, crypto::type_ep_load, t.terminal_id, when));
    if (!std::equal(expected.begin(), expected.end(), mac2.begin())) return mac_failure();

    PurseState& p = nv.purse;
    const KeyEntry* dtk = find_key(KeyUsage::tac, t.key_index);
    const std::uint32_t new_balance = p.balance_fen + t.amount_fen;
    const auto tac = crypto::des_mac(crypto::tac_key(dtk->value), crypto::load_tac_input(new_balance, p.online_atc, t.amount_fen,
                                                                                         crypto::type_ep_load, t.terminal_id, when));
    p.balance_fen = new_balance;
    ++p.online_atc;
    p.mac_failures = 0;
    p.load_proof = Proof{true, t.atc, array_of<4>(mac2), tac};
    append_purse_log(p.online_atc, t.amount_fen, crypto::type_ep_load, t.terminal_id, when);
    cancel_pending();
    if (!commit()) return status_only(Sw::write_failure);
    return Response{Bytes(tac.begin(), tac.end())};
}

Response VirtualCard::State::update_capp_cache(const Command& c) {
    using Kind = PendingTransaction::Kind;
    if (vs.pending.kind != Kind::capp) return status_only(Sw::conditions_not_satisfied);
    const std::uint8_t sfi = c.p2 >> 3;
    if ((c.p2 & 0x07) != 0) return status_only(Sw::bad_p1_p2);
    Ef* ef = find_ef_in(DfRole::purse, sfi);
    if (!ef || (sfi != sfi_capp_record && sfi != sfi_trip_log)) return status_only(Sw::file_not_found);
    if (c.data.size() != ef->record_size) return status_only(Sw::wrong_length);
    if (sfi == sfi_capp_record) {
        if (c.data[0] != c.p1) return status_only(Sw::bad_data);
        bool exists = false;
        for (const Bytes& record : ef->records) exists = exists || record[0] == c.p1;
        if (!exists) return status_only(Sw::record_not_found);
    } else if (c.p1 != 0x00) {
        return status_only(Sw::bad_p1_p2);  // a cyclic file only takes a new record
    }
    if (vs.pending.capp_updates.size() >= capp_updates_max) return status_only(Sw::conditions_not_satisfied);
    vs.pending.capp_updates.push_back({sfi, c.p1, c.data});
    return status_only(Sw::ok);
}

Response VirtualCard::State::debit_for_purchase(const Command& c) {
    using Kind = PendingTransaction::Kind;
    if (c.p1 != 0x01 || c.p2 != 0x00) return status_only(Sw::bad_p1_p2);
    if (c.data.size() != 15) return status_only(Sw::wrong_length);
    if (vs.pending.kind != Kind::purchase && vs.pending.kind != Kind::capp) return status_only(Sw::conditions_not_satisfied);
    const PendingTransaction t = vs.pending;
    const std::uint32_t terminal_serial = read_be32(ByteView(c.data).subspan(0, 4));
    const ByteView date = ByteView(c.data).subspan(4, 4);
    const ByteView time = ByteView(c.data).subspan(8, 3);
    const ByteView mac1 = ByteView(c.data).subspan(11, 4);
    if (!valid_card_date_time(date, time)) {
        cancel_pending();
        return status_only(Sw::bad_data);
    }
    const auto when = card_date_time(date, time);
    const std::uint8_t type = t.kind == Kind::capp ? crypto::type_capp_purchase : crypto::type_ep_purchase;
    const KeyEntry* dpk = find_key(KeyUsage::purchase, t.key_index);
    const crypto::Key8 session = crypto::purchase_session_key(dpk->value, t.random, t.atc, terminal_serial);
    const auto expected = crypto::des_mac(session, crypto::purchase_mac1_input(t.amount_fen, type, t.terminal_id, when));
    if (!std::equal(expected.begin(), expected.end(), mac1.begin())) return mac_failure();

    PurseState& p = nv.purse;
    const KeyEntry* dtk = find_key(KeyUsage::tac, t.key_index);
    const auto tac =
        crypto::des_mac(crypto::tac_key(dtk->value), crypto::purchase_tac_input(t.amount_fen, type, t.terminal_id, terminal_serial, when));
    const auto mac2 = crypto::des_mac(session, crypto::purchase_mac2_input(t.amount_fen));
    // One commit: balance, ATC, log record, CAPP cache and proof together (docs/CARD-SPEC.md §2).
    COCONUT_ASSERT(t.amount_fen <= p.balance_fen);  // INIT checked it and nothing changed the balance since
    p.balance_fen -= t.amount_fen;
    ++p.offline_atc;
    p.mac_failures = 0;
    (type == crypto::type_capp_purchase ? p.capp_proof : p.purchase_proof) = Proof{true, t.atc, mac2, tac};
    append_purse_log(p.offline_atc, t.amount_fen, type, t.terminal_id, when);
    for (const auto& update : t.capp_updates) {
        Ef* ef = find_ef_in(DfRole::purse, update.sfi);
        if (update.sfi == sfi_trip_log) {
            ef->records.insert(ef->records.begin(), update.data);
            if (ef->records.size() > ef->record_count) ef->records.resize(ef->record_count);
        } else {
            for (Bytes& record : ef->records)
                if (record[0] == update.record_id) record = update.data;
        }
    }
    cancel_pending();
    if (!commit()) return status_only(Sw::write_failure);
    Bytes out(tac.begin(), tac.end());
    append(out, mac2);
    return Response{out};
}

Response VirtualCard::State::get_transaction_prove(const Command& c) {
    if (c.p1 != 0x00) return status_only(Sw::bad_p1_p2);
    if (c.data.size() != 2) return status_only(Sw::wrong_length);
    const Proof* proof = nullptr;
    switch (c.p2) {
        case crypto::type_ep_load: proof = &nv.purse.load_proof; break;
        case crypto::type_ep_purchase: proof = &nv.purse.purchase_proof; break;
        case crypto::type_capp_purchase: proof = &nv.purse.capp_proof; break;
        case crypto::type_ed_load:
        case crypto::type_ed_purchase: return status_only(Sw::mac_unavailable);
        default: return status_only(Sw::bad_p1_p2);
    }
    if (!proof->valid || proof->atc != read_be16(c.data)) return status_only(Sw::mac_unavailable);
    Bytes out(proof->mac2.begin(), proof->mac2.end());
    append(out, proof->tac);
    return Response{out};
}

}  // namespace coconut::cos
