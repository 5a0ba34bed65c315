#include <coconut/core/card_time.hpp>

#include <coconut/core/assert.hpp>

#include <algorithm>
#include <string>

namespace coconut {
namespace {

std::uint64_t digits_value(const std::string& digits, std::size_t at, std::size_t count) {
    std::uint64_t value = 0;
    for (std::size_t i = at; i < at + count; ++i) value = value * 10 + static_cast<std::uint64_t>(digits[i] - '0');
    return value;
}

}  // namespace

CardDateTime to_card_date_time(std::chrono::system_clock::time_point when) {
    const std::time_t t = std::chrono::system_clock::to_time_t(when) + hainan_utc_offset.count();
    std::tm tm{};
    gmtime_r(&t, &tm);
    const Bytes date = bcd_of(static_cast<std::uint64_t>(tm.tm_year + 1900) * 10000 + static_cast<std::uint64_t>(tm.tm_mon + 1) * 100 +
                                  static_cast<std::uint64_t>(tm.tm_mday),
                              4);
    const Bytes time = bcd_of(static_cast<std::uint64_t>(tm.tm_hour) * 10000 + static_cast<std::uint64_t>(tm.tm_min) * 100 +
                                  static_cast<std::uint64_t>(tm.tm_sec),
                              3);
    CardDateTime out;
    std::copy(date.begin(), date.end(), out.date.begin());
    std::copy(time.begin(), time.end(), out.time.begin());
    COCONUT_ASSERT(is_bcd(out.date) && is_bcd(out.time));
    return out;
}

std::chrono::system_clock::time_point hainan_time_point(const std::tm& local) {
    std::tm fields = local;
    return std::chrono::system_clock::from_time_t(timegm(&fields) - hainan_utc_offset.count());
}

std::optional<std::chrono::system_clock::time_point> parse_card_time(ByteView bcd7) {
    if (bcd7.size() != 7 || !is_bcd(bcd7)) return std::nullopt;
    const std::string d = bcd_to_digits(bcd7);
    std::tm tm{};
    tm.tm_year = static_cast<int>(digits_value(d, 0, 4)) - 1900;
    tm.tm_mon = static_cast<int>(digits_value(d, 4, 2)) - 1;
    tm.tm_mday = static_cast<int>(digits_value(d, 6, 2));
    tm.tm_hour = static_cast<int>(digits_value(d, 8, 2));
    tm.tm_min = static_cast<int>(digits_value(d, 10, 2));
    tm.tm_sec = static_cast<int>(digits_value(d, 12, 2));
    if (tm.tm_mon < 0 || tm.tm_mon > 11 || tm.tm_mday < 1) return std::nullopt;
    return hainan_time_point(tm);
}

}  // namespace coconut
