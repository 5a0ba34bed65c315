// InProcessReader (the card OS called directly) and PcscReader (libpcsclite).
#include <coconut/cos/card.hpp>
#include <coconut/sdk/reader.hpp>

#include <PCSC/winscard.h>
#include <PCSC/wintypes.h>
#include <fmt/format.h>

#include <thread>

namespace coconut::sdk {

std::string_view to_string(ReaderErrorCode code) {
    switch (code) {
        case ReaderErrorCode::no_service: return "no_service";
        case ReaderErrorCode::no_readers: return "no_readers";
        case ReaderErrorCode::reader_not_found: return "reader_not_found";
        case ReaderErrorCode::reader_unavailable: return "reader_unavailable";
        case ReaderErrorCode::no_card: return "no_card";
        case ReaderErrorCode::card_removed: return "card_removed";
        case ReaderErrorCode::card_reset: return "card_reset";
        case ReaderErrorCode::unresponsive: return "unresponsive";
        case ReaderErrorCode::sharing_violation: return "sharing_violation";
        case ReaderErrorCode::timeout: return "timeout";
        case ReaderErrorCode::protocol_error: return "protocol_error";
        case ReaderErrorCode::not_connected: return "not_connected";
        case ReaderErrorCode::internal: return "internal";
    }
    return "internal";
}

// ---- in-process ------------------------------------------------------------------------------

InProcessReader::InProcessReader(std::string name, cos::VirtualCard* card) : name_(std::move(name)), card_(card) {}

Result<Bytes, ReaderError> InProcessReader::connect() {
    if (!card_) return Unexpected{ReaderError{ReaderErrorCode::no_card, name_ + ": no card in the reader"}};
    card_->power_off();  // a new session starts from a cold card, as with a real reader
    connected_ = true;
    transmits_ = 0;
    return card_->atr();
}

void InProcessReader::disconnect(bool reset) {
    if (card_ && reset) card_->reset();
    connected_ = false;
}

CardProtocol InProcessReader::protocol() const {
    return card_ && card_->protocol() == cos::Protocol::t0 ? CardProtocol::t0 : CardProtocol::t1;
}

Result<Bytes, ReaderError> InProcessReader::transmit(ByteView command) {
    if (!card_) return Unexpected{ReaderError{ReaderErrorCode::no_card, name_ + ": no card"}};
    if (!connected_) return Unexpected{ReaderError{ReaderErrorCode::not_connected, name_ + ": not connected"}};
    ++transmits_;
    const Fault fault = fault_plan_ ? fault_plan_(transmits_, command) : Fault::none;
    if (fault == Fault::before_card) {
        insert(nullptr);
        return Unexpected{ReaderError{ReaderErrorCode::card_removed, name_ + ": card removed"}};
    }
    Bytes response = card_->transmit(command);
    if (fault == Fault::after_card) {
        insert(nullptr);
        return Unexpected{ReaderError{ReaderErrorCode::card_removed, name_ + ": card removed, response lost"}};
    }
    return response;
}

Result<bool, ReaderError> InProcessReader::wait_for_card(bool present, std::chrono::milliseconds) {
    return (card_ != nullptr) == present;  // nothing changes while a single thread waits in-process
}

void InProcessReader::insert(cos::VirtualCard* card) {
    if (card_) card_->power_off();
    card_ = card;
    connected_ = false;
    transmits_ = 0;
}

void InProcessReader::set_fault_plan(std::function<Fault(std::size_t, ByteView)> decide) { fault_plan_ = std::move(decide); }

// ---- PC/SC ---------------------------------------------------------------------------------------

namespace {

ReaderErrorCode map_pcsc(LONG rv) {
    switch (rv) {
        case SCARD_E_NO_SERVICE:
        case SCARD_E_SERVICE_STOPPED: return ReaderErrorCode::no_service;
        case SCARD_E_NO_READERS_AVAILABLE: return ReaderErrorCode::no_readers;
        case SCARD_E_UNKNOWN_READER: return ReaderErrorCode::reader_not_found;
        case SCARD_E_READER_UNAVAILABLE: return ReaderErrorCode::reader_unavailable;
        case SCARD_E_NO_SMARTCARD: return ReaderErrorCode::no_card;
        case SCARD_W_REMOVED_CARD: return ReaderErrorCode::card_removed;
        case SCARD_W_RESET_CARD: return ReaderErrorCode::card_reset;
        case SCARD_W_UNRESPONSIVE_CARD:
        case SCARD_W_UNPOWERED_CARD: return ReaderErrorCode::unresponsive;
        case SCARD_E_SHARING_VIOLATION: return ReaderErrorCode::sharing_violation;
        case SCARD_E_TIMEOUT: return ReaderErrorCode::timeout;
        default: return ReaderErrorCode::internal;
    }
}

// "Service not available" alone leaves the operator guessing; name the daemon and how to start it.
ReaderError pcsc_error(std::string_view what, LONG rv) {
    const bool no_service = rv == SCARD_E_NO_SERVICE || rv == SCARD_E_SERVICE_STOPPED;
    return ReaderError{map_pcsc(rv),
                       fmt::format("{}: {} (0x{:08X}){}", what, pcsc_stringify_error(rv), static_cast<std::uint32_t>(rv),
                                   no_service ? " — is pcscd running? (systemctl start pcscd / pcscd --foreground)" : ""),
                       rv};
}

// RAII for SCARDCONTEXT.
class Context {
public:
    Context() = default;
    Context(const Context&) = delete;
    Context& operator=(const Context&) = delete;
    ~Context() {
        if (valid_) SCardReleaseContext(handle_);
    }
    LONG establish() {
        const LONG rv = SCardEstablishContext(SCARD_SCOPE_SYSTEM, nullptr, nullptr, &handle_);
        valid_ = rv == SCARD_S_SUCCESS;
        return rv;
    }
    SCARDCONTEXT get() const { return handle_; }

private:
    SCARDCONTEXT handle_ = 0;
    bool valid_ = false;
};

Result<std::vector<std::string>, ReaderError> list_with(SCARDCONTEXT context) {
    DWORD length = 0;
    LONG rv = SCardListReaders(context, nullptr, nullptr, &length);
    if (rv == SCARD_E_NO_READERS_AVAILABLE) return std::vector<std::string>{};
    if (rv != SCARD_S_SUCCESS) return Unexpected{pcsc_error("SCardListReaders", rv)};
    std::string buffer(length, '\0');
    rv = SCardListReaders(context, nullptr, buffer.data(), &length);
    if (rv == SCARD_E_NO_READERS_AVAILABLE) return std::vector<std::string>{};
    if (rv != SCARD_S_SUCCESS) return Unexpected{pcsc_error("SCardListReaders", rv)};
    std::vector<std::string> names;
    for (std::size_t pos = 0; pos < buffer.size() && buffer[pos] != '\0';) {
        const std::size_t end = buffer.find('\0', pos);
        names.emplace_back(buffer.substr(pos, end - pos));
        pos = end + 1;
    }
    return names;
}

}  // namespace

struct PcscReader::Handles {
    Context context;
    SCARDHANDLE card = 0;
    bool card_connected = false;
    DWORD active_protocol = 0;
    ~Handles() {
        if (card_connected) SCardDisconnect(card, SCARD_LEAVE_CARD);
    }
};

Result<std::vector<std::string>, ReaderError> list_pcsc_readers() {
    Context context;
    if (const LONG rv = context.establish(); rv != SCARD_S_SUCCESS) return Unexpected{pcsc_error("SCardEstablishContext", rv)};
    return list_with(context.get());
}

PcscReader::PcscReader(std::string name, std::unique_ptr<Handles> handles) : name_(std::move(name)), handles_(std::move(handles)) {}

PcscReader::~PcscReader() = default;

Result<std::unique_ptr<PcscReader>, ReaderError> PcscReader::open(const std::string& reader_name) {
    auto handles = std::make_unique<Handles>();
    if (const LONG rv = handles->context.establish(); rv != SCARD_S_SUCCESS) return Unexpected{pcsc_error("SCardEstablishContext", rv)};
    auto names = list_with(handles->context.get());
    if (!names) return Unexpected{names.error()};
    if (names->empty()) return Unexpected{ReaderError{ReaderErrorCode::no_readers, "pcscd reports no readers"}};
    bool found = false;
    for (const auto& n : *names) found = found || n == reader_name;
    if (!found) {
        std::string known;
        for (const auto& n : *names) known += (known.empty() ? "" : ", ") + n;
        return Unexpected{
            ReaderError{ReaderErrorCode::reader_not_found, fmt::format("no reader named '{}' (readers: {})", reader_name, known)}};
    }
    return std::unique_ptr<PcscReader>(new PcscReader(reader_name, std::move(handles)));
}

bool PcscReader::connected() const { return handles_->card_connected; }

Result<Bytes, ReaderError> PcscReader::connect() {
    disconnect();
    DWORD protocol = 0;
    LONG rv = SCardConnect(handles_->context.get(), name_.c_str(), SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1,
                           &handles_->card, &protocol);
    if (rv == SCARD_W_REMOVED_CARD || rv == SCARD_E_NO_SMARTCARD)
        return Unexpected{ReaderError{ReaderErrorCode::no_card, name_ + ": no card in the reader", rv}};
    if (rv != SCARD_S_SUCCESS) return Unexpected{pcsc_error("SCardConnect " + name_, rv)};
    handles_->card_connected = true;
    handles_->active_protocol = protocol;
    protocol_ = protocol == SCARD_PROTOCOL_T0 ? CardProtocol::t0 : CardProtocol::t1;

    char reader_name[256];
    DWORD reader_length = sizeof(reader_name);
    DWORD state = 0;
    BYTE atr[MAX_ATR_SIZE];
    DWORD atr_length = sizeof(atr);
    rv = SCardStatus(handles_->card, reader_name, &reader_length, &state, &protocol, atr, &atr_length);
    if (rv != SCARD_S_SUCCESS) return Unexpected{pcsc_error("SCardStatus", rv)};
    return Bytes(atr, atr + atr_length);
}

void PcscReader::disconnect(bool reset) {
    if (!handles_->card_connected) return;
    SCardDisconnect(handles_->card, reset ? SCARD_RESET_CARD : SCARD_LEAVE_CARD);
    handles_->card_connected = false;
}

Result<Bytes, ReaderError> PcscReader::transmit(ByteView command) {
    // Largest extended response: 65536 data bytes + SW.
    Bytes response(65538);
    auto length = transmit_into(command, response);
    if (!length) return Unexpected{length.error()};
    response.resize(*length);
    return response;
}

Result<std::size_t, ReaderError> PcscReader::transmit_into(ByteView command, std::span<std::uint8_t> response) {
    if (!handles_->card_connected) return Unexpected{ReaderError{ReaderErrorCode::not_connected, name_ + ": not connected"}};
    const SCARD_IO_REQUEST* pci = handles_->active_protocol == SCARD_PROTOCOL_T0 ? SCARD_PCI_T0 : SCARD_PCI_T1;
    DWORD length = static_cast<DWORD>(response.size());
    const LONG rv =
        SCardTransmit(handles_->card, pci, command.data(), static_cast<DWORD>(command.size()), nullptr, response.data(), &length);
    if (rv != SCARD_S_SUCCESS) {
        if (rv == SCARD_W_REMOVED_CARD || rv == SCARD_E_NO_SMARTCARD) handles_->card_connected = false;
        return Unexpected{pcsc_error("SCardTransmit " + name_, rv)};
    }
    // No byte at all, not even a status word, yet "success": the card went away inside the command. vpcd
    // reports a virtual card that dropped its connection this way (PC/SC itself only notices the removal at
    // its next presence poll), and no card answers a command with nothing. Like SCARD_W_REMOVED_CARD the
    // command may or may not have run, so it is card_removed (the flow's cue to recover), not a malformed
    // response. One or more bytes stay the channel's to judge.
    if (length == 0) {
        handles_->card_connected = false;
        return Unexpected{
            ReaderError{ReaderErrorCode::card_removed, name_ + ": the card answered nothing (no status word): it left during the command"}};
    }
    return static_cast<std::size_t>(length);
}

Result<bool, ReaderError> PcscReader::wait_for_card(bool present, std::chrono::milliseconds timeout) {
    SCARD_READERSTATE state{};
    state.szReader = name_.c_str();
    state.dwCurrentState = SCARD_STATE_UNAWARE;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        const DWORD wait_ms = left.count() > 0 ? static_cast<DWORD>(left.count()) : 0;
        const LONG rv = SCardGetStatusChange(handles_->context.get(), wait_ms, &state, 1);
        if (rv == SCARD_E_TIMEOUT) return false;
        if (rv != SCARD_S_SUCCESS) return Unexpected{pcsc_error("SCardGetStatusChange " + name_, rv)};
        if (state.dwEventState & (SCARD_STATE_UNKNOWN | SCARD_STATE_UNAVAILABLE))
            return Unexpected{ReaderError{ReaderErrorCode::reader_unavailable, name_ + ": reader removed or unavailable"}};
        const bool is_present = (state.dwEventState & SCARD_STATE_PRESENT) != 0;
        if (is_present == present) return true;
        state.dwCurrentState = state.dwEventState & ~SCARD_STATE_CHANGED;
        if (wait_ms == 0) return false;
    }
}

Result<std::uint32_t, ReaderError> PcscReader::event_count() {
    SCARD_READERSTATE state{};
    state.szReader = name_.c_str();
    state.dwCurrentState = SCARD_STATE_UNAWARE;
    const LONG rv = SCardGetStatusChange(handles_->context.get(), 0, &state, 1);
    if (rv != SCARD_S_SUCCESS && rv != SCARD_E_TIMEOUT) return Unexpected{pcsc_error("SCardGetStatusChange", rv)};
    return static_cast<std::uint32_t>((state.dwEventState >> 16) & 0xFFFF);
}

}  // namespace coconut::sdk
