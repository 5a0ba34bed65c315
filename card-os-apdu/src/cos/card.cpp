// VirtualCard lifecycle, command dispatch, the T=0 transport behaviour, durable commits and the DRBG.
#include "machine.hpp"

#include <coconut/core/sha256.hpp>

#include <algorithm>

namespace coconut::cos {
namespace {

// DRBG counter values reserved per durable write: a reopened image never repeats a random it may have
// shown, and a reservation costs one commit per 4096 blocks of 32 random bytes.
constexpr std::uint64_t drbg_reservation = 4096;

// ATR historical bytes: "COCONUT-EP01" for a card, "COCONUT-SAM1" for a PSAM.
constexpr std::string_view card_historical = "COCONUT-EP01";
constexpr std::string_view psam_historical = "COCONUT-SAM1";

bool is_get_response(const Command& c) { return c.cla == 0x00 && c.ins == 0xC0; }

// The command a pending transaction may continue with (docs/CARD-SPEC.md §2: anything else cancels it).
bool continues(const PendingTransaction& p, const Command& c) {
    using Kind = PendingTransaction::Kind;
    if (c.cla != 0x80) return false;
    switch (p.kind) {
        case Kind::load: return c.ins == 0x52;
        case Kind::purchase: return c.ins == 0x54;
        case Kind::capp: return c.ins == 0x54 || c.ins == 0xDC;
        case Kind::none: return false;
    }
    return false;
}

}  // namespace

bool valid_card_date_time(ByteView date4, ByteView time3) {
    if (!is_bcd(date4) || !is_bcd(time3)) return false;
    const auto month = *bcd_value(date4.subspan(2, 1));
    const auto day = *bcd_value(date4.subspan(3, 1));
    const auto hour = *bcd_value(time3.subspan(0, 1));
    const auto minute = *bcd_value(time3.subspan(1, 1));
    const auto second = *bcd_value(time3.subspan(2, 1));
    return month >= 1 && month <= 12 && day >= 1 && day <= 31 && hour <= 23 && minute <= 59 && second <= 59;
}

crypto::CardDateTime card_date_time(ByteView date4, ByteView time3) {
    crypto::CardDateTime when;
    std::copy(date4.begin(), date4.end(), when.date.begin());
    std::copy(time3.begin(), time3.end(), when.time.begin());
    return when;
}

// ---- lifecycle -----------------------------------------------------------------------------------

VirtualCard::VirtualCard(std::unique_ptr<State> state) : state_(std::move(state)) {}
VirtualCard::~VirtualCard() = default;

Result<std::unique_ptr<VirtualCard>, ImageFailure> VirtualCard::open(const std::filesystem::path& image_path) {
    auto storage = FileStorage::open(image_path);
    if (!storage) return Unexpected{storage.error()};
    return from_storage(std::move(storage.value()));
}

Result<std::unique_ptr<VirtualCard>, ImageFailure> VirtualCard::in_memory(ByteView payload) {
    const auto kind = payload_kind(payload);
    if (!kind) return Unexpected{ImageFailure{ImageError::corrupt, "payload: unknown image kind"}};
    return from_storage(std::make_unique<MemoryStorage>(*kind, Bytes(payload.begin(), payload.end())));
}

Result<std::unique_ptr<VirtualCard>, ImageFailure> VirtualCard::from_storage(std::unique_ptr<Storage> storage) {
    auto loaded = storage->load();
    if (!loaded) return Unexpected{loaded.error()};
    auto decoded = decode_state(loaded->payload);
    if (!decoded) return Unexpected{decoded.error()};
    auto state = std::make_unique<State>();
    state->storage = std::move(storage);
    state->generation = loaded->generation;
    state->nv = std::move(*decoded);
    state->clear_volatile();
    state->vs.drbg_counter = state->nv.drbg_reserved;
    return std::unique_ptr<VirtualCard>(new VirtualCard(std::move(state)));
}

ImageKind VirtualCard::kind() const { return state_->nv.kind; }
Protocol VirtualCard::protocol() const { return state_->nv.protocol; }

Bytes VirtualCard::atr() const {
    const std::string_view historical = kind() == ImageKind::card ? card_historical : psam_historical;
    const auto k = static_cast<std::uint8_t>(historical.size());
    Bytes atr{0x3B};
    if (protocol() == Protocol::t0) {
        atr.push_back(k);  // T0: no interface bytes, T=0 implied, no TCK
        atr.insert(atr.end(), historical.begin(), historical.end());
        return atr;
    }
    // T0 (TD1 present) ‖ TD1 = 80 (TD2 present, T=0) ‖ TD2 = 01 (T=1) ‖ historical ‖ TCK.
    atr.push_back(static_cast<std::uint8_t>(0x80 | k));
    atr.push_back(0x80);
    atr.push_back(0x01);
    atr.insert(atr.end(), historical.begin(), historical.end());
    std::uint8_t tck = 0;
    for (std::size_t i = 1; i < atr.size(); ++i) tck ^= atr[i];
    atr.push_back(tck);
    return atr;
}

void VirtualCard::power_off() { state_->clear_volatile(); }
void VirtualCard::reset() { state_->clear_volatile(); }

Bytes VirtualCard::transmit(ByteView command_apdu) { return apdu::encode(process(command_apdu)); }

Response VirtualCard::process(ByteView command_apdu) {
    auto command = apdu::parse_command(command_apdu);
    if (!command) {
        state_->vs.t0_response.clear();
        state_->cancel_pending();
        return status_only(Sw::wrong_length);
    }
    return state_->dispatch(*command);
}

Snapshot VirtualCard::snapshot() const {
    const CardState& nv = state_->nv;
    Snapshot s;
    s.kind = nv.kind;
    s.generation = state_->generation;
    if (nv.kind == ImageKind::card) {
        for (const Df& df : nv.dfs)
            if (df.role == DfRole::purse)
                for (const Ef& ef : df.efs)
                    if (ef.sfi == sfi_public) s.asn = bcd_to_digits(ByteView(ef.data).subspan(ef15::asn, 10));
        s.balance_fen = nv.purse.balance_fen;
        s.online_atc = nv.purse.online_atc;
        s.offline_atc = nv.purse.offline_atc;
        s.mac_failures = nv.purse.mac_failures;
        s.purse_locked = nv.purse.locked;
        s.application_block = static_cast<std::uint8_t>(nv.purse.block);
        s.pin_tries_left = nv.pin.tries_left;
    } else {
        s.terminal_id = bcd_to_digits(nv.psam.terminal_id);
        s.terminal_serial = nv.psam.next_serial;
    }
    return s;
}

// ---- state -----------------------------------------------------------------------------------------

void VirtualCard::State::clear_volatile() {
    // The DRBG position survives a power-off of the emulated card (this process still remembers it); a new
    // process starts at the image's reserved mark, so no random shown before a crash is ever repeated.
    const std::uint64_t counter = vs.drbg_counter;
    vs = VolatileState{};
    vs.drbg_counter = counter;
}

bool VirtualCard::State::commit() {
    if (generation >= image_last_generation) {  // the next would be beyond the last an image may hold (image.hpp)
        reload();
        return false;
    }
    const Bytes payload = encode_state(nv);
    auto written = storage->commit(payload, generation + 1);
    if (!written) {
        reload();
        return false;
    }
    ++generation;
    return true;
}

bool VirtualCard::State::reload() {
    auto loaded = storage->load();
    if (!loaded) return false;
    auto decoded = decode_state(loaded->payload);
    if (!decoded) return false;
    nv = std::move(*decoded);
    generation = loaded->generation;
    cancel_pending();
    return true;
}

Bytes VirtualCard::State::random(std::size_t count) {
    Bytes out;
    while (out.size() < count) {
        if (vs.drbg_counter >= nv.drbg_reserved) {
            nv.drbg_reserved = vs.drbg_counter + drbg_reservation;
            commit();
        }
        Bytes input(nv.drbg_seed.begin(), nv.drbg_seed.end());
        append_be(input, vs.drbg_counter++, 8);
        const Sha256Digest block = sha256(input);
        const std::size_t take = std::min(count - out.size(), block.size());
        out.insert(out.end(), block.begin(), block.begin() + static_cast<std::ptrdiff_t>(take));
    }
    return out;
}

// ---- dispatch --------------------------------------------------------------------------------------

Response VirtualCard::State::dispatch(const Command& c) {
    if (is_get_response(c)) {
        if (c.p1 != 0 || c.p2 != 0) return status_only(Sw::bad_p1_p2);
        if (vs.t0_response.empty()) return status_only(Sw::conditions_not_satisfied);
        const std::size_t available = vs.t0_response.size();
        const std::size_t wanted = c.le.value_or(apdu::short_le_max);
        if (wanted > available && wanted != apdu::short_le_max) return status_only(apdu::sw_wrong_le(static_cast<std::uint8_t>(available)));
        const std::size_t take = std::min(wanted, available);
        Response r{Bytes(vs.t0_response.begin(), vs.t0_response.begin() + static_cast<std::ptrdiff_t>(take))};
        vs.t0_response.erase(vs.t0_response.begin(), vs.t0_response.begin() + static_cast<std::ptrdiff_t>(take));
        if (!vs.t0_response.empty())
            r.sw = apdu::sw_bytes_available(static_cast<std::uint8_t>(std::min<std::size_t>(vs.t0_response.size(), 255)));
        return r;
    }
    vs.t0_response.clear();
    if (vs.pending.kind != PendingTransaction::Kind::none && !continues(vs.pending, c)) cancel_pending();

    Response r = execute(c);
    // A completing command the card refuses (wrong length, bad P1/P2 …) ends the transaction too: the
    // terminal starts again from INITIALIZE rather than retrying a half-checked DEBIT.
    if (!r.ok() && c.cla == 0x80 && (c.ins == 0x52 || c.ins == 0x54)) cancel_pending();
    // T=0 (docs/CARD-SPEC.md §8): a case-4 command's data waits for GET RESPONSE; the card answers 61xx.
    if (nv.protocol == Protocol::t0 && r.ok() && !r.data.empty() && !c.data.empty()) {
        vs.t0_response = std::move(r.data);
        const std::size_t n = vs.t0_response.size();
        return status_only(apdu::sw_bytes_available(static_cast<std::uint8_t>(n >= 256 ? 0 : n)));
    }
    return r;
}

Response VirtualCard::State::execute(const Command& c) {
    if (c.cla != 0x00 && c.cla != 0x80 && c.cla != 0x84) return status_only(Sw::cla_not_supported);
    if (auto refused = blocked_refusal(c)) return *refused;
    if (c.cla == 0x00) {
        switch (c.ins) {
            case 0xA4: return select(c);
            case 0xB0: return read_binary(c);
            case 0xB2: return read_record(c);
            case 0x84: return get_challenge(c);
            default: break;
        }
        if (nv.kind == ImageKind::card) {
            switch (c.ins) {
                case 0xD6: return update_binary(c);
                case 0xDC: return update_record(c);
                case 0x20: return verify_pin(c);
                case 0x82: return external_authenticate(c);
                case 0x88: return internal_authenticate(c);
                default: break;
            }
        }
        return status_only(Sw::ins_not_supported);
    }
    if (nv.kind == ImageKind::psam) return c.cla == 0x80 ? psam_command(c) : status_only(Sw::ins_not_supported);
    if (c.cla == 0x84) {
        if (c.ins == 0x18) return application_unblock(c);
        if (c.ins == 0x1E) return application_block(c);
        return status_only(Sw::ins_not_supported);
    }
    return purse_command(c);
}

}  // namespace coconut::cos
