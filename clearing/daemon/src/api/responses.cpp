// The API's error JSON, its common answers and the small parsers every handler uses; the rate limiter.
#include <coconut/clearing/log.hpp>
#include "api_internal.hpp"

#include <coconut/core/assert.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <ctime>

namespace coconut::clearing::http {

// {"error":{"code":…,"message":…}}: every refusal of the API has this shape (clearing/openapi.json Error).
ApiResponse error_response(unsigned status, std::string_view code, std::string_view message) {
    COCONUT_ASSERT(status >= 400 && status <= 599, "an error answer is a 4xx or 5xx");
    return api::json_response(status, api::json{{"error", {{"code", code}, {"message", message}}}});
}

}  // namespace coconut::clearing::http

namespace coconut::clearing::http::api {

// ---- answers
// ------------------------------------------------------------------------------------------------

// Text from the request (a path segment, a body field) may reach an answer, e.g. a not-found message: bytes
// that are not UTF-8 are answered as U+FFFD instead of making the serializer throw.
ApiResponse json_response(unsigned status, const json& body) {
    return ApiResponse{status, "application/json", body.dump(-1, ' ', false, json::error_handler_t::replace), {}, {}};
}

ApiResponse not_found(std::string_view message) { return error_response(404, "not_found", message); }

ApiResponse bad_request(std::string_view message) { return error_response(400, "bad_request", message); }

ApiResponse storage_failure(std::string_view message) {
    clearing::detail::log_storage_failure(fmt::format("HTTP: {}", message));
    return error_response(503, "storage", message);
}

ApiResponse busy(std::string_view what) {
    ApiResponse r = error_response(503, "busy", std::string(what) + "; retry shortly");
    r.headers.emplace_back("Retry-After", "1");
    return r;
}

ApiResponse writer_queue_full() { return error_response(503, "busy", "the ledger writer's queue is full; retry shortly"); }

// ---- parsers
// ------------------------------------------------------------------------------------------------

std::optional<std::uint64_t> parse_u64(std::string_view text) {
    std::uint64_t value = 0;
    if (text.empty() || text.size() > 20) return std::nullopt;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
    return value;
}

std::string iso_time(std::uint64_t ns) {
    const std::time_t seconds = static_cast<std::time_t>(ns / 1'000'000'000);
    std::tm utc{};
    gmtime_r(&seconds, &utc);
    return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", utc.tm_year + 1900, utc.tm_mon + 1, utc.tm_mday, utc.tm_hour,
                       utc.tm_min, utc.tm_sec, (ns / 1'000'000) % 1000);
}

std::optional<ledger::Id> id_of_json(const json& value) {
    if (!value.is_string()) return std::nullopt;
    return parse_id_hex(value.get_ref<const std::string&>());
}

std::optional<std::string_view> bearer_token(std::string_view authorization) {
    constexpr std::string_view scheme = "Bearer ";
    if (authorization.size() <= scheme.size() || authorization.substr(0, scheme.size()) != scheme) return std::nullopt;
    return authorization.substr(scheme.size());
}

std::optional<std::string> only_keys(const json& body, std::initializer_list<std::string_view> keys) {
    for (const auto& [key, value] : body.items()) {
        if (std::find(keys.begin(), keys.end(), key) == keys.end()) return fmt::format("unknown field \"{}\"", key);
    }
    return std::nullopt;
}

std::optional<json> object_body(std::string_view body) {
    json parsed = json::parse(body, nullptr, false);
    if (parsed.is_discarded() || !parsed.is_object()) return std::nullopt;
    return parsed;
}

std::optional<std::string> first_failure(std::span<const ledger::EventResult> results) {
    for (std::size_t i = 0; i < results.size(); ++i) {
        if (!ledger::succeeded(results[i].code)) return fmt::format("event {}: {}", i, ledger::to_string(results[i].code));
    }
    return std::nullopt;
}

std::uint64_t now_ns() { return clearing::detail::wall_clock_ns(); }

std::optional<ApiResponse> read_status_body(const ApiRequest& request, std::initializer_list<std::string_view> names, std::string& status,
                                            std::string& reason) {
    const json body = json::parse(request.body, nullptr, false);
    if (body.is_discarded() || !body.is_object() || !body.contains("status") || !body["status"].is_string()) {
        std::string quoted;
        for (std::string_view name : names) quoted += (quoted.empty() ? "" : "|") + fmt::format("\"{}\"", name);
        return bad_request("body must be {\"status\":" + quoted + ",\"reason\":\"…\"}");
    }
    status = body["status"].get<std::string>();
    reason = body.contains("reason") && body["reason"].is_string() ? body["reason"].get<std::string>() : "";
    return std::nullopt;
}

// ---- the request target
// -------------------------------------------------------------------------------------

Target::Target(std::string_view target) {
    const auto question = target.find('?');
    std::string_view path = target.substr(0, question);
    if (question != std::string_view::npos) query_ = target.substr(question + 1);
    while (!path.empty()) {
        if (path.front() == '/') {
            path.remove_prefix(1);
            continue;
        }
        const auto slash = path.find('/');
        if (count_ == segments_max) {
            too_deep_ = true;
            break;
        }
        parts_[count_++] = path.substr(0, slash);
        path = slash == std::string_view::npos ? std::string_view{} : path.substr(slash);
    }
    COCONUT_ASSERT(count_ <= segments_max);
}

std::span<const std::string_view> Target::segments() const {
    return too_deep_ ? std::span<const std::string_view>{} : std::span(parts_.data(), count_);
}

std::optional<std::string_view> Target::param(std::string_view key) const {
    std::optional<std::string_view> found;
    for (std::string_view rest = query_; !rest.empty();) {
        const auto amp = rest.find('&');
        const std::string_view pair = rest.substr(0, amp);
        const auto eq = pair.find('=');
        if (pair.substr(0, eq) == key) found = eq == std::string_view::npos ? std::string_view{} : pair.substr(eq + 1);
        rest = amp == std::string_view::npos ? std::string_view{} : rest.substr(amp + 1);
    }
    return found;
}

std::optional<std::string> page_params(const Target& target, std::string_view after_is, std::uint64_t& after, std::size_t& limit) {
    if (auto text = target.param("after")) {
        auto value = parse_u64(*text);
        if (!value) return fmt::format("after must be {}", after_is);
        after = *value;
    }
    if (auto text = target.param("limit")) {
        auto value = parse_u64(*text);
        if (!value || *value == 0 || *value > journal_page_max) return fmt::format("limit must be 1 to {}", journal_page_max);
        limit = *value;
    }
    return std::nullopt;
}

std::optional<std::string> newest_first_params(const Target& target, std::size_t max, std::size_t& limit, std::uint64_t& before,
                                               std::string_view cursor_is) {
    if (auto it = target.param("limit")) {
        auto value = parse_u64(*it);
        if (!value || *value == 0 || *value > max) return fmt::format("limit must be 1 to {}", max);
        limit = *value;
    }
    if (auto it = target.param("cursor")) {
        auto value = parse_u64(*it);
        if (!value) return fmt::format("cursor must be {}", cursor_is);
        before = *value;
    }
    return std::nullopt;
}

// ---- rate limits ------------------------------------------------------------------------------------------

bool RateLimiter::admit(const TokenHash& key, double& retry_after_s) {
    const auto now = std::chrono::steady_clock::now();
    std::lock_guard lock(mutex_);
    if (buckets_.size() >= rate_limited_tokens_max) forget_full(now);
    auto [it, fresh] = buckets_.try_emplace(key, Bucket{burst_, now});
    Bucket& b = it->second;
    if (!fresh) {
        const double elapsed_s = std::chrono::duration<double>(now - b.last).count();
        b.tokens = std::min(burst_, b.tokens + elapsed_s * rate_);
        b.last = now;
    }
    if (b.tokens >= 1.0) {
        b.tokens -= 1.0;
        return true;
    }
    retry_after_s = (1.0 - b.tokens) / rate_;
    return false;
}

std::size_t RateLimiter::Hash::operator()(const TokenHash& h) const {  // all four words: address keys are mostly zeros
    std::size_t out = 0;
    for (std::size_t at = 0; at < h.size(); at += sizeof out) {
        std::size_t word = 0;
        std::memcpy(&word, h.data() + at, sizeof word);
        out = (out ^ word) * 0x9E3779B97F4A7C15ull;
    }
    return out;
}

void RateLimiter::forget_full(std::chrono::steady_clock::time_point now) {
    const auto refill = std::chrono::duration<double>(burst_ / rate_);
    std::erase_if(buckets_, [&](const auto& entry) { return now - entry.second.last >= refill; });
    if (buckets_.size() >= rate_limited_tokens_max) buckets_.clear();  // a flood of distinct tokens: start over
}

}  // namespace coconut::clearing::http::api
