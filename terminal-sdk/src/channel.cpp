#include <coconut/sdk/channel.hpp>

namespace coconut::sdk {

Result<apdu::Response, ReaderError> CardChannel::exchange(ByteView raw) {
    const auto start = std::chrono::steady_clock::now();
    auto response = reader_.transmit(raw);
    if (trace_) {
        trace_(TraceEntry{Bytes(raw.begin(), raw.end()), response ? *response : Bytes{},
                          std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - start)});
    }
    if (!response) return Unexpected{response.error()};
    auto parsed = apdu::parse_response(*response);
    if (!parsed) return Unexpected{ReaderError{ReaderErrorCode::protocol_error, "response shorter than a status word"}};
    return std::move(*parsed);
}

Result<apdu::Response, ReaderError> CardChannel::transmit(const apdu::Command& command) {
    const bool t0 = reader_.protocol() == CardProtocol::t0;
    const bool case4 = command.apdu_case() == apdu::Case::four;
    apdu::Command first = command;
    if (t0 && case4) first.le.reset();  // T=0 carries case 4 as case 3; the data comes by GET RESPONSE

    auto response = exchange(apdu::encode(first));
    if (!response) return response;

    // 6Cxx: the card names the exact Le; send the same command once more with it.
    if (apdu::is_wrong_le(response->sw)) {
        apdu::Command again = command;
        const std::uint8_t exact = response->sw2();
        again.le = exact == 0 ? apdu::short_le_max : exact;
        response = exchange(apdu::encode(again));
        if (!response) return response;
    }

    Bytes data = std::move(response->data);
    std::uint16_t sw = response->sw;
    // Case 4 answered 9000 with no data on T=0: the data waits for GET RESPONSE with the original Le.
    // A card with nothing to give answers that GET RESPONSE with an error: then the 9000 stands.
    const bool asked_for_data = t0 && case4 && sw == apdu::value(apdu::Sw::ok) && data.empty();
    if (asked_for_data) sw = apdu::sw_bytes_available(static_cast<std::uint8_t>(command.le_or(apdu::short_le_max) & 0xFF));

    for (std::size_t chained = 0; apdu::is_bytes_available(sw); ++chained) {
        if (chained == get_response_chain_max)
            return Unexpected{ReaderError{ReaderErrorCode::protocol_error, "GET RESPONSE chain exceeds its bound"}};
        const std::uint8_t available = static_cast<std::uint8_t>(sw & 0xFF);
        apdu::Command get_response{0x00, 0xC0, 0x00, 0x00, {}, available == 0 ? apdu::short_le_max : available};
        auto next = exchange(apdu::encode(get_response));
        if (!next) return next;
        if (apdu::is_wrong_le(next->sw)) {  // the card has fewer bytes than it said
            get_response.le = next->sw2() == 0 ? apdu::short_le_max : next->sw2();
            next = exchange(apdu::encode(get_response));
            if (!next) return next;
        }
        if (asked_for_data && chained == 0 && next->data.empty() && !next->ok() && !apdu::is_bytes_available(next->sw))
            return apdu::Response{{}, apdu::value(apdu::Sw::ok)};
        append(data, next->data);
        sw = next->sw;
    }
    return apdu::Response{std::move(data), sw};
}

Result<apdu::Response, ReaderError> CardChannel::transmit_raw(ByteView command) {
    auto parsed = apdu::parse_command(command);
    if (parsed) return transmit(*parsed);
    return exchange(command);
}

}  // namespace coconut::sdk
