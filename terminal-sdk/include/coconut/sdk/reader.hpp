/// @file
/// Readers: where APDUs go. One interface; PC/SC-lite (real readers, pcscd + vpcd) and in-process
/// (the card OS called directly: tests, benchmarks, simulation). A new reader type touches this layer
/// only (the Keyple separation: readers ⟂ transport rules ⟂ card logic).
#pragma once

#include <coconut/core/bytes.hpp>
#include <coconut/core/result.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace coconut::cos {
class VirtualCard;
}

namespace coconut::sdk {

enum class ReaderErrorCode : std::uint8_t {
    no_service,          ///< pcscd not running (SCARD_E_NO_SERVICE)
    no_readers,          ///< no reader at all
    reader_not_found,    ///< no reader with that name
    reader_unavailable,  ///< reader removed or unusable (SCARD_E_READER_UNAVAILABLE, SCARD_E_UNKNOWN_READER)
    no_card,             ///< no card in the reader (SCARD_E_NO_SMARTCARD, SCARD_W_REMOVED_CARD at connect)
    card_removed,        ///< the card left during a command (SCARD_W_REMOVED_CARD, or a transmit that "succeeds"
                         ///< with no byte at all, as vpcd reports a card gone mid-command): it may or may not have run
    card_reset,          ///< another application reset the card (SCARD_W_RESET_CARD)
    unresponsive,        ///< the card does not answer (SCARD_W_UNRESPONSIVE_CARD, SCARD_E_TIMEOUT on transmit)
    sharing_violation,   ///< another process holds the card exclusively
    timeout,             ///< a wait for presence/absence ran out
    protocol_error,      ///< malformed response (fewer than 2 bytes), GET RESPONSE chain too long
    not_connected,       ///< transmit without connect
    internal,            ///< any other PC/SC failure (code in `pcsc_code`)
};

/// Why a reader operation failed.
struct ReaderError {
    ReaderErrorCode code = ReaderErrorCode::internal;
    std::string message;
    long pcsc_code = 0;  ///< the SCARD_* value when the error came from PC/SC
};

std::string_view to_string(ReaderErrorCode code);

enum class CardProtocol : std::uint8_t { t0, t1 };

/// Where APDUs go: one card slot. PcscReader and InProcessReader implement it.
class Reader {
public:
    virtual ~Reader() = default;
    virtual std::string name() const = 0;
    /// Powers the card and returns its ATR.
    virtual Result<Bytes, ReaderError> connect() = 0;
    /// Ends the session (reset = warm reset the card, otherwise leave it powered).
    virtual void disconnect(bool reset = false) = 0;
    virtual bool connected() const = 0;
    virtual CardProtocol protocol() const = 0;
    /// Raw C-APDU → raw R-APDU (data ‖ SW1 SW2).
    virtual Result<Bytes, ReaderError> transmit(ByteView command) = 0;
    /// Waits until a card is present (present = true) or absent; ok(false) on timeout.
    virtual Result<bool, ReaderError> wait_for_card(bool present, std::chrono::milliseconds timeout) = 0;
};

// ---- in-process ------------------------------------------------------------------------------

/// What the in-process reader does to one transmit, for fault-injection tests (a card pulled at a chosen
/// moment): `before_card` — the card is gone before the command reaches it (nothing executes);
/// `after_card` — the card executes the command, then leaves before the response (the response is lost).
enum class Fault : std::uint8_t { none, before_card, after_card };

/// A reader whose card is a coconut::cos::VirtualCard in this process (card image files, tests, simulation).
class InProcessReader final : public Reader {
public:
    /// The reader does not own the card: the caller keeps it alive (tests may reopen it between sessions).
    InProcessReader(std::string name, cos::VirtualCard* card);
    std::string name() const override { return name_; }
    Result<Bytes, ReaderError> connect() override;
    void disconnect(bool reset = false) override;
    bool connected() const override { return connected_; }
    CardProtocol protocol() const override;
    Result<Bytes, ReaderError> transmit(ByteView command) override;
    Result<bool, ReaderError> wait_for_card(bool present, std::chrono::milliseconds timeout) override;

    /// Inserts another card (nullptr = remove). Removal powers the old card off.
    void insert(cos::VirtualCard* card);
    /// Calls `decide` before each transmit with the 1-based transmit count since the last insert/connect;
    /// the returned fault applies to that transmit and the card counts as removed afterwards.
    void set_fault_plan(std::function<Fault(std::size_t transmit_number, ByteView command)> decide);

private:
    std::string name_;
    cos::VirtualCard* card_;
    bool connected_ = false;
    std::size_t transmits_ = 0;
    std::function<Fault(std::size_t, ByteView)> fault_plan_;
};

// ---- PC/SC-lite ------------------------------------------------------------------------------

/// Names of the readers pcscd knows.
Result<std::vector<std::string>, ReaderError> list_pcsc_readers();

/// A PC/SC-lite reader (pcscd): a real reader, or vpcd's "Virtual PCD 00 00" for `coconut-vcard serve`.
class PcscReader final : public Reader {
public:
    /// Establishes a PC/SC context and checks the reader exists.
    static Result<std::unique_ptr<PcscReader>, ReaderError> open(const std::string& reader_name);
    ~PcscReader() override;
    std::string name() const override { return name_; }
    Result<Bytes, ReaderError> connect() override;
    void disconnect(bool reset = false) override;
    bool connected() const override;
    CardProtocol protocol() const override { return protocol_; }
    Result<Bytes, ReaderError> transmit(ByteView command) override;
    Result<bool, ReaderError> wait_for_card(bool present, std::chrono::milliseconds timeout) override;

    /// transmit() into a buffer the caller owns: returns the R-APDU's length (data ‖ SW1 SW2 in
    /// response[0, length)). For callers that know their responses are short and must not pay for
    /// transmit()'s 64 KiB buffer on every call (the benchmarks' raw APDU floor). A response larger than
    /// `response` fails with SCARD_E_INSUFFICIENT_BUFFER (code internal); errors as for transmit().
    Result<std::size_t, ReaderError> transmit_into(ByteView command, std::span<std::uint8_t> response);

    /// The reader's event counter (upper 16 bits of dwEventState): +1 per insertion/removal.
    Result<std::uint32_t, ReaderError> event_count();

    struct Handles;  ///< SCARDCONTEXT + SCARDHANDLE, RAII (reader.cpp)

private:
    PcscReader(std::string name, std::unique_ptr<Handles> handles);
    std::string name_;
    std::unique_ptr<Handles> handles_;
    CardProtocol protocol_ = CardProtocol::t1;
};

}  // namespace coconut::sdk
