/// @file
/// Typed card applications: each command returns a parsed struct or a typed error carrying the status
/// word. The byte layouts come from coconut/cos/layout.hpp and coconut/crypto/card_crypto.hpp (one source
/// of truth with the card OS).
#pragma once

#include <coconut/core/identifiers.hpp>
#include <coconut/cos/layout.hpp>
#include <coconut/crypto/card_crypto.hpp>
#include <coconut/sdk/channel.hpp>

#include <array>
#include <optional>
#include <string>
#include <vector>

namespace coconut::sdk {

/// A command failed: either the transport (reader error) or the card (status word).
struct CardError {
    std::optional<ReaderError> transport;  ///< set when the APDU did not complete
    std::uint16_t sw = 0;                  ///< set when the card answered with an error status
    std::string message;
    bool card_removed() const {
        return transport && (transport->code == ReaderErrorCode::card_removed || transport->code == ReaderErrorCode::no_card);
    }
};

template <class T>
using CardResult = Result<T, CardError>;

using coconut::Asn;  // coconut/core/identifiers.hpp
using coconut::TerminalId;

/// EF15 public data as the purse FCI carries it.
struct PurseInfo {
    std::array<std::uint8_t, 8> issuer_id{};
    std::uint8_t app_type = 0;
    std::uint8_t app_version = 0;
    Asn asn{};
    std::array<std::uint8_t, 4> start_date{};
    std::array<std::uint8_t, 4> expiry_date{};
    std::string asn_digits() const { return bcd_to_digits(asn); }
};

/// The purse's answer to INITIALIZE FOR PURCHASE (80 50 01): balance, offline ATC, key version, the card's random.
struct InitPurchaseResult {
    std::uint32_t balance_fen = 0;
    std::uint16_t offline_atc = 0;
    std::uint32_t overdraft_limit_fen = 0;
    std::uint8_t key_version = 0;
    std::uint8_t alg = 0;
    std::array<std::uint8_t, 4> random{};
};

/// The purse's answer to INITIALIZE FOR LOAD (80 50 00): balance, online ATC, key version, the card's random, MAC1.
struct InitLoadResult {
    std::uint32_t balance_fen = 0;
    std::uint16_t online_atc = 0;
    std::uint8_t key_version = 0;
    std::uint8_t alg = 0;
    std::array<std::uint8_t, 4> random{};
    crypto::Mac4 mac1{};
};

/// The purse's answer to DEBIT FOR PURCHASE (80 54): the TAC (proof for the clearing) and MAC2 (for the PSAM).
struct DebitResult {
    crypto::Mac4 tac{};
    crypto::Mac4 mac2{};
};

/// One record of the purse's transaction log (EF18).
struct PurseLogRecord {
    std::uint16_t atc = 0;
    std::uint32_t overdraft_limit_fen = 0;
    std::uint32_t amount_fen = 0;
    std::uint8_t type = 0;
    TerminalId terminal_id{};
    crypto::CardDateTime when;
};

/// The purse FCI (6F { 84 AID, A5 { 9F08 version, 9F0C EF15 } }) → EF15's fields.
CardResult<PurseInfo> parse_purse_fci(ByteView fci);

/// SELECT of the purse that tolerates a blocked application (6283 with its FCI, docs/CARD-SPEC.md §2).
struct SelectedPurse {
    PurseInfo info;
    bool blocked = false;  ///< SELECT answered 6283: APPLICATION BLOCK is in force
};

/// The electronic purse (PBOC EP / T-Union) of a card in its reader: SELECT, balance, initialize, debit, credit, log, proofs.
class PurseApp {
public:
    explicit PurseApp(CardChannel& channel) : channel_(channel) {}
    CardResult<PurseInfo> select();
    CardResult<std::uint32_t> balance();
    CardResult<InitPurchaseResult> initialize_purchase(std::uint32_t amount_fen, const TerminalId& terminal_id, bool capp,
                                                       std::uint8_t key_index = cos::default_key_index);
    CardResult<InitLoadResult> initialize_load(std::uint32_t amount_fen, const TerminalId& terminal_id,
                                               std::uint8_t key_index = cos::default_key_index);
    /// 80 DC: stage a composite record (EF1A record id) or a trip-log entry (sfi = EF1E, record id 0).
    CardResult<Ok> update_capp_cache(std::uint8_t sfi, std::uint8_t record_id, ByteView record);
    CardResult<DebitResult> debit(std::uint32_t terminal_serial, const crypto::CardDateTime& when, const crypto::Mac4& mac1);
    CardResult<crypto::Mac4> credit_for_load(const crypto::CardDateTime& when, const crypto::Mac4& mac2);
    /// GET TRANSACTION PROVE: MAC2 ‖ TAC of the most recent transaction of `type` that used `atc`.
    CardResult<DebitResult> transaction_prove(std::uint8_t type, std::uint16_t atc);
    CardResult<std::vector<PurseLogRecord>> read_log();
    CardResult<Bytes> read_capp_record(std::uint8_t record_id);

    /// Application maintenance (counter.cpp): SELECT that accepts 6283, GET CHALLENGE (4 bytes) and
    /// APPLICATION BLOCK `84 1E 00 P2 04 MAC`.
    CardResult<SelectedPurse> select_maybe_blocked();
    CardResult<crypto::Challenge4> get_challenge();
    CardResult<Ok> application_block(bool permanent, const crypto::Mac4& mac);
    /// APPLICATION UNBLOCK `84 18 00 00 04 MAC`: lifts a temporary block and the MAC-failure lock (9303 after
    /// a permanent block).
    CardResult<Ok> application_unblock(const crypto::Mac4& mac);

private:
    CardResult<apdu::Response> run(const apdu::Command& command, std::size_t expected_data = 0);
    CardChannel& channel_;
};

/// The PSAM's answer to 80 70 (purchase initialization): the terminal serial it used and MAC1 for the card.
struct PsamInit {
    std::uint32_t terminal_serial = 0;
    crypto::Mac4 mac1{};
};

/// The PSAM in its reader: SELECT, 80 70 (MAC1 for a purchase), 80 72 (verify the card's MAC2).
class PsamApp {
public:
    explicit PsamApp(CardChannel& channel) : channel_(channel) {}
    /// Selects the PSAM DF and reads EF16 (terminal id) and EF17 (key index, version).
    CardResult<TerminalId> select();
    /// 80 70 with factors card then issuer.
    CardResult<PsamInit> initialize_purchase(const InitPurchaseResult& card, std::uint32_t amount_fen, std::uint8_t type,
                                             const crypto::CardDateTime& when, const PurseInfo& purse);
    CardResult<Ok> verify_mac2(const crypto::Mac4& mac2);
    std::uint8_t key_index() const { return key_index_; }

private:
    CardChannel& channel_;
    std::uint8_t key_index_ = cos::default_key_index;
};

/// Social-security application (docs/CARD-SPEC.md §7).
struct Cardholder {
    std::string card_identifier;
    std::string card_number;
    std::string issue_date;
    std::string expiry_date;
    std::string ssn;
    std::string name;  ///< UTF-8 (the card stores GBK)
    std::string sex;
    std::string birth_date;
};

/// The social-security application (SSSE): the cardholder's data, VERIFY (PIN) and INTERNAL AUTHENTICATE for clinic payments.
class SocialSecurityApp {
public:
    explicit SocialSecurityApp(CardChannel& channel) : channel_(channel) {}
    CardResult<Ok> select();
    CardResult<Cardholder> read_cardholder();
    /// VERIFY: a wrong PIN answers 63Cx (tries left in the low nibble) or 6983 (blocked) as the error SW.
    CardResult<Ok> verify_pin(std::string_view digits);
    CardResult<Bytes> internal_authenticate(ByteView challenge8);
    /// DF04 medical account number (20 digits); needs a verified PIN.
    CardResult<std::string> medical_account();

private:
    CardResult<Bytes> read_tlv_record(std::uint8_t sfi, std::uint8_t tag);
    CardChannel& channel_;
};

/// Text helpers shared by the CLI and tests.
using coconut::to_card_date_time;                                // Hainan local time (UTC+8), coconut/core/card_time.hpp
std::string format_date_time(const crypto::CardDateTime& when);  ///< "2026-11-26 12:00:00"

}  // namespace coconut::sdk
