// Helpers shared by the sources of coconut::tls (not installed).
#pragma once

#include <coconut/tls/tls.hpp>

#include <openssl/err.h>

#include <string>

namespace coconut::tls::detail {

inline Unexpected<Error> fail(ErrorCode code, std::string message) { return Unexpected<Error>{Error{code, std::move(message)}}; }

// libcrypto's reasons for the last failure, oldest first; empties its error queue.
inline std::string openssl_reason() {
    std::string out;
    while (const unsigned long code = ERR_get_error()) {
        char text[256];
        ERR_error_string_n(code, text, sizeof text);
        if (!out.empty()) out += "; ";
        out += text;
    }
    return out.empty() ? "no reason given" : out;
}

}  // namespace coconut::tls::detail
