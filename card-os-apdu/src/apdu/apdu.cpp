#include <coconut/apdu/apdu.hpp>

#include <fmt/format.h>

namespace coconut::apdu {

namespace {
std::size_t short_le(std::uint8_t byte) { return byte == 0 ? short_le_max : byte; }
std::size_t extended_le(std::uint8_t high, std::uint8_t low) {
    const std::size_t le = (static_cast<std::size_t>(high) << 8) | low;
    return le == 0 ? extended_le_max : le;
}
}  // namespace

Result<Command, ParseError> parse_command(ByteView raw) {
    if (raw.size() < 4) return Unexpected{ParseError::too_short};
    Command command;
    command.cla = raw[0];
    command.ins = raw[1];
    command.p1 = raw[2];
    command.p2 = raw[3];
    const ByteView body = raw.subspan(4);

    if (body.empty()) return command;  // case 1
    if (body.size() == 1) {            // case 2 short
        command.le = short_le(body[0]);
        return command;
    }
    if (body[0] != 0) {  // short case 3 or 4
        const std::size_t lc = body[0];
        if (body.size() == 1 + lc) {
            command.data.assign(body.begin() + 1, body.end());
            return command;
        }
        if (body.size() == 2 + lc) {
            command.data.assign(body.begin() + 1, body.end() - 1);
            command.le = short_le(body.back());
            return command;
        }
        return Unexpected{ParseError::lc_mismatch};
    }
    // body[0] == 0 and at least 2 bytes: extended form.
    command.extended = true;
    if (body.size() == 3) {  // case 2 extended: 00 Le1 Le2
        command.le = extended_le(body[1], body[2]);
        return command;
    }
    if (body.size() < 3) return Unexpected{ParseError::bad_extended_form};
    const std::size_t lc = (static_cast<std::size_t>(body[1]) << 8) | body[2];
    if (lc == 0) return Unexpected{ParseError::bad_extended_form};
    if (body.size() == 3 + lc) {
        command.data.assign(body.begin() + 3, body.end());
        return command;
    }
    if (body.size() == 5 + lc) {
        command.data.assign(body.begin() + 3, body.end() - 2);
        command.le = extended_le(body[body.size() - 2], body.back());
        return command;
    }
    return Unexpected{ParseError::lc_mismatch};
}

Bytes encode(const Command& command) {
    Bytes out{command.cla, command.ins, command.p1, command.p2};
    const bool extended = command.extended || command.data.size() > short_lc_max || command.le_or(0) > short_le_max;
    if (!extended) {
        if (!command.data.empty()) {
            out.push_back(static_cast<std::uint8_t>(command.data.size()));
            append(out, command.data);
        }
        if (command.le) out.push_back(static_cast<std::uint8_t>(*command.le == short_le_max ? 0 : *command.le));
        return out;
    }
    out.push_back(0x00);
    if (!command.data.empty()) {
        append_be(out, command.data.size(), 2);
        append(out, command.data);
    }
    if (command.le) append_be(out, *command.le == extended_le_max ? 0 : *command.le, 2);
    return out;
}

Bytes encode(const Response& response) {
    Bytes out = response.data;
    append_be(out, response.sw, 2);
    return out;
}

std::optional<Response> parse_response(ByteView raw) {
    if (raw.size() < 2) return std::nullopt;
    Response response;
    response.data.assign(raw.begin(), raw.end() - 2);
    response.sw = read_be16(raw.last(2));
    return response;
}

std::string format_command(const Command& command) {
    std::string out = fmt::format("{:02X} {:02X} {:02X} {:02X}", command.cla, command.ins, command.p1, command.p2);
    if (!command.data.empty()) out += fmt::format(" Lc={} {}", command.data.size(), to_hex(command.data));
    if (command.le) out += fmt::format(" Le={}", *command.le);
    return out;
}

}  // namespace coconut::apdu
