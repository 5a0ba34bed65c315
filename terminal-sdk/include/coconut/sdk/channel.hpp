/// @file
/// The card channel: ISO 7816 transport rules between a typed application and a reader.
///   - cases 1–4, short and extended (the codec in coconut/apdu/apdu.hpp);
///   - T=0 (docs/CARD-SPEC.md §8): case 4 goes out without Le; 61xx → GET RESPONSE (00 C0 00 00 xx) while 61xx
///     follows (6100 = 256); 6Cxx → the same command again with Le = xx; a case-4 command answered 9000
///     without data → GET RESPONSE with the original Le. The 61xx/6Cxx rules apply on T=1 too (some cards
///     use them there). Every loop is bounded, so a hostile card cannot keep the terminal busy.
///   - an optional trace of every APDU exchanged, for diagnostics.
#pragma once

#include <coconut/apdu/apdu.hpp>
#include <coconut/sdk/reader.hpp>

#include <functional>

namespace coconut::sdk {

/// GET RESPONSEs chained for one command: 64 × 256 bytes = 16 KiB, far above any response of this
/// card family (the largest is a 256-byte READ BINARY), yet finite.
inline constexpr std::size_t get_response_chain_max = 64;

/// One APDU exchanged on a CardChannel, for a trace (CardChannel::set_trace).
struct TraceEntry {
    Bytes command;
    Bytes response;  ///< empty if the transmit failed
    std::chrono::microseconds elapsed{0};
};

/// ISO 7816 transport rules (T=0 GET RESPONSE, 6Cxx) between a typed application and a Reader.
class CardChannel {
public:
    explicit CardChannel(Reader& reader) : reader_(reader) {}

    /// Sends a command with the transport rules above; returns the final response (data ‖ SW parsed).
    Result<apdu::Response, ReaderError> transmit(const apdu::Command& command);
    /// The same for a raw APDU (parsed first; an unparseable one is sent as is).
    Result<apdu::Response, ReaderError> transmit_raw(ByteView command);

    /// Called with every APDU exchanged (after the transport rules: you see each GET RESPONSE).
    void set_trace(std::function<void(const TraceEntry&)> trace) { trace_ = std::move(trace); }
    Reader& reader() { return reader_; }

private:
    Result<apdu::Response, ReaderError> exchange(ByteView raw);
    Reader& reader_;
    std::function<void(const TraceEntry&)> trace_;
};

}  // namespace coconut::sdk
