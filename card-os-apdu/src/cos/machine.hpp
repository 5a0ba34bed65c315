// Internal: VirtualCard::State — the command interpreter. card.cpp holds the lifecycle, dispatch, T=0
// transport and commits; files.cpp the ISO 7816-4 file and security commands; purse.cpp the e-purse;
// psam.cpp the PSAM.
#pragma once

#include "state.hpp"

#include <memory>

namespace coconut::cos {

using apdu::Command;
using apdu::Response;
using apdu::status_only;
using apdu::Sw;

struct VirtualCard::State {
    std::unique_ptr<Storage> storage;
    std::uint64_t generation = 0;
    CardState nv;      // non-volatile: committed before any response that depends on it
    VolatileState vs;  // lost at power-off

    // ---- card.cpp ----
    Response dispatch(const Command& command);
    Response execute(const Command& command);
    // Writes the whole non-volatile state durably. On an I/O error the in-memory state is reloaded from the
    // last good commit and the caller answers 6581.
    bool commit();
    bool reload();
    Bytes random(std::size_t count);
    void cancel_pending() { vs.pending = PendingTransaction{}; }
    void clear_volatile();

    // ---- files.cpp ----
    Df& current_df() { return nv.dfs[static_cast<std::size_t>(vs.current_df)]; }
    Ef* find_ef_by_sfi(std::uint8_t sfi);
    Ef* find_ef_in(DfRole role, std::uint8_t sfi);
    bool access_granted(Access access) const;
    // The EF a READ/UPDATE BINARY addresses, with its access condition checked (or the error response).
    struct BinaryTarget {
        Ef* ef = nullptr;
        std::size_t offset = 0;
    };
    Result<BinaryTarget, Response> binary_target(const Command& c, bool write);
    // The record file a READ/UPDATE RECORD addresses (SFI 0 = current EF), access checked.
    Result<Ef*, Response> record_target(std::uint8_t sfi, bool write);
    Response select(const Command& c);
    Response read_binary(const Command& c);
    Response update_binary(const Command& c);
    Response read_record(const Command& c);
    Response update_record(const Command& c);
    Response verify_pin(const Command& c);
    Response get_challenge(const Command& c);
    Response external_authenticate(const Command& c);
    Response internal_authenticate(const Command& c);
    KeyEntry* find_key(KeyUsage usage, std::uint8_t index);
    Bytes fci(const Df& df) const;

    // ---- purse.cpp ----
    bool purse_selected() const { return nv.dfs[static_cast<std::size_t>(vs.current_df)].role == DfRole::purse; }
    Response purse_command(const Command& c);
    Response get_balance(const Command& c);
    Response initialize(const Command& c);
    Response initialize_load(const Command& c, const KeyEntry& dlk, std::uint32_t amount, ByteView terminal_id);
    Response initialize_purchase(const Command& c, const KeyEntry& dpk, std::uint32_t amount, ByteView terminal_id, bool capp);
    Response credit_for_load(const Command& c);
    Response debit_for_purchase(const Command& c);
    Response update_capp_cache(const Command& c);
    Response get_transaction_prove(const Command& c);
    Response application_unblock(const Command& c);

    // ---- maintenance.cpp ----
    bool purse_blocked() const { return nv.purse.block != ApplicationBlock::none; }
    // While the selected purse is blocked: the refusal (6A81) of any command but SELECT, GET CHALLENGE,
    // APPLICATION BLOCK and APPLICATION UNBLOCK.
    std::optional<Response> blocked_refusal(const Command& c);
    Response application_block(const Command& c);
    // SELECT's answer for a DF now current: its FCI (or none for P2 0C), 6283 for a blocked purse.
    Response selected(const Df& df, bool want_fci) const;
    Response mac_failure();
    void append_purse_log(std::uint16_t atc, std::uint32_t amount, std::uint8_t type, ByteView terminal_id,
                          const crypto::CardDateTime& when);

    // ---- psam.cpp ----
    Response psam_command(const Command& c);
    Response psam_init_for_purchase(const Command& c);
    Response psam_verify_mac2(const Command& c);
};

// True if the 4+3 bytes are a plausible BCD date and time.
bool valid_card_date_time(ByteView date4, ByteView time3);
crypto::CardDateTime card_date_time(ByteView date4, ByteView time3);

}  // namespace coconut::cos
