// Answers sent to terminals, counted by response MTI and response code (field 39): what /metrics
// shows as coconut_iso_responses_total{mti,code}. Counted where every answer leaves the server (the
// engine's, the 30 of a frame that does not parse), lock-free, from the I/O thread.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace coconut::clearing {

class ResponseCounts {
public:
    // The response MTIs of clearing/ISO8583.md; any other is counted as "other".
    static constexpr std::array<std::string_view, 8> mtis{"0110", "0210", "0230", "0330", "0410", "0430", "0510", "0810"};
    static constexpr std::size_t codes = 101;  // "00"…"99", then one for a code that is not two digits

    void count(std::string_view mti, std::string_view code) {
        counts_[mti_index(mti)][code_index(code)].fetch_add(1, std::memory_order_relaxed);
    }
    // Calls visit(mti, code, count) for every pair counted at least once ("other" for the rest).
    template <class Visit>
    void for_each(Visit&& visit) const {
        for (std::size_t m = 0; m <= mtis.size(); ++m) {
            for (std::size_t c = 0; c < codes; ++c) {
                const std::uint64_t n = counts_[m][c].load(std::memory_order_relaxed);
                if (n == 0) continue;
                const std::string code = c + 1 < codes ? std::string{char('0' + c / 10), char('0' + c % 10)} : std::string("other");
                visit(m < mtis.size() ? mtis[m] : std::string_view("other"), std::string_view(code), n);
            }
        }
    }
    std::uint64_t get(std::string_view mti, std::string_view code) const {
        return counts_[mti_index(mti)][code_index(code)].load(std::memory_order_relaxed);
    }

private:
    static std::size_t mti_index(std::string_view mti) {
        for (std::size_t i = 0; i < mtis.size(); ++i)
            if (mtis[i] == mti) return i;
        return mtis.size();
    }
    static std::size_t code_index(std::string_view code) {
        const bool digits = code.size() == 2 && code[0] >= '0' && code[0] <= '9' && code[1] >= '0' && code[1] <= '9';
        return digits ? static_cast<std::size_t>((code[0] - '0') * 10 + (code[1] - '0')) : codes - 1;
    }

    std::array<std::array<std::atomic<std::uint64_t>, codes>, mtis.size() + 1> counts_{};
};

}  // namespace coconut::clearing
