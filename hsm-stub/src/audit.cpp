#include <coconut/hsm/audit.hpp>

#include "file_io.hpp"
#include "secure_buffer.hpp"

#include <fmt/chrono.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <sodium.h>

#include <pwd.h>
#include <sys/file.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>

namespace coconut::hsm {
namespace {

constexpr std::string_view hash_marker = R"(,"hash":")";
constexpr std::size_t hash_bytes = 32;

std::array<std::uint8_t, hash_bytes> chain_hash(const crypto::Secret<32>& key, const std::array<std::uint8_t, hash_bytes>& prev,
                                                std::string_view body) {
    crypto_generichash_state state;
    crypto_generichash_init(&state, key.data(), key.size(), hash_bytes);
    crypto_generichash_update(&state, prev.data(), prev.size());
    crypto_generichash_update(&state, reinterpret_cast<const unsigned char*>(body.data()), body.size());
    std::array<std::uint8_t, hash_bytes> out{};
    crypto_generichash_final(&state, out.data(), out.size());
    return out;
}

std::string utc_now() {
    const auto now = std::chrono::system_clock::now();
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
    return fmt::format("{:%Y-%m-%dT%H:%M:%S}.{:03}Z", fmt::gmtime(std::chrono::system_clock::to_time_t(now)), ms);
}

// Fields may carry a client's bytes (a key label): what is not UTF-8 is written as U+FFFD, never thrown.
std::string json_string(std::string_view text) {
    return nlohmann::json(std::string(text)).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

struct ParsedLine {
    std::uint64_t seq = 0;
    std::string prev_hex;
    std::string hash_hex;
    std::string body;  // the hashed prefix
};

// Splits a line into its hashed body and the fields the chain needs; nullopt with a reason otherwise.
std::optional<ParsedLine> parse_line(std::string_view line, std::string& why) {
    const std::size_t marker = line.rfind(hash_marker);
    if (marker == std::string_view::npos) {
        why = "has no hash field";
        return std::nullopt;
    }
    try {
        const auto json = nlohmann::json::parse(line);
        ParsedLine parsed;
        parsed.seq = json.at("seq").get<std::uint64_t>();
        parsed.prev_hex = json.at("prev").get<std::string>();
        parsed.hash_hex = json.at("hash").get<std::string>();
        parsed.body = std::string(line.substr(0, marker));
        if (line.substr(marker) != fmt::format("{}{}\"}}", hash_marker, parsed.hash_hex)) {
            why = "has fields after the hash";
            return std::nullopt;
        }
        return parsed;
    } catch (const nlohmann::json::exception& e) {
        why = fmt::format("is not a valid audit record ({})", e.what());
        return std::nullopt;
    }
}

}  // namespace

namespace {

// Adds one to `key`'s count in `counts`, which tells at most `distinct` keys apart (the rest: "other").
void bump(std::map<std::string, std::uint64_t, std::less<>>& counts, std::string_view key, std::size_t distinct) {
    auto it = counts.find(key);
    if (it == counts.end())
        it = counts.size() < distinct ? counts.emplace(std::string(key), 0).first : counts.try_emplace("other", 0).first;
    ++it->second;
}

// "a=3 b=2 …", the largest counts first, at most `top` of them.
std::string top_counts(const std::map<std::string, std::uint64_t, std::less<>>& counts, std::size_t top) {
    std::vector<std::pair<std::uint64_t, std::string_view>> sorted;
    sorted.reserve(counts.size());
    for (const auto& [key, count] : counts) sorted.emplace_back(count, key);
    const std::size_t shown = std::min(top, sorted.size());
    std::partial_sort(sorted.begin(), sorted.begin() + static_cast<std::ptrdiff_t>(shown), sorted.end(),
                      [](const auto& a, const auto& b) { return a.first != b.first ? a.first > b.first : a.second < b.second; });
    std::string out;
    for (std::size_t i = 0; i < shown; ++i) out += fmt::format("{}{}={}", i == 0 ? "" : " ", sorted[i].second, sorted[i].first);
    return out;
}

}  // namespace

void RefusalTally::count(std::string_view reason, std::string_view address, std::string_view claimed_client) {
    std::lock_guard lock(mutex_);
    ++total_;
    bump(reasons_, reason, max_tally_reasons);
    if (!address.empty()) bump(addresses_, address, max_tally_addresses);
    if (!claimed_client.empty()) bump(clients_, claimed_client, max_tally_clients);
}

std::optional<AuditEntry> RefusalTally::take() {
    std::lock_guard lock(mutex_);
    const auto now = std::chrono::steady_clock::now();
    if (total_ == 0) {
        since_ = now;
        return std::nullopt;
    }
    const double seconds = std::chrono::duration<double>(now - since_).count();
    std::string result = fmt::format("{} refused in {:.1f} s; reasons: {}", total_, seconds, top_counts(reasons_, max_tally_reasons));
    if (!addresses_.empty())
        result += fmt::format("; addresses: {}{} (top: {})", addresses_.size(), addresses_.contains("other") ? " or more" : "",
                              top_counts(addresses_, max_tally_top));
    if (!clients_.empty()) result += fmt::format("; claimed clients: {}", top_counts(clients_, max_tally_top));
    total_ = 0;
    reasons_.clear();
    addresses_.clear();
    clients_.clear();
    since_ = now;
    return AuditEntry{"unauthenticated", "refusals", "", {}, std::move(result)};
}

std::string ceremony_actor() {
    const passwd* user = ::getpwuid(::geteuid());
    const std::string name = user != nullptr && valid_client_id(user->pw_name) ? user->pw_name : fmt::format("uid{}", ::geteuid());
    return "ceremony:" + name;
}

Outcome<std::unique_ptr<AuditLog>> AuditLog::open(const std::filesystem::path& path, const crypto::Secret<32>& key) {
    detail::ensure_sodium();
    std::unique_ptr<AuditLog> log(new AuditLog());
    log->fd_ = ::open(path.c_str(), O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (log->fd_ < 0) return fail(Errc::io_error, fmt::format("cannot open audit log {}: {}", path.string(), std::strerror(errno)));
    log->key_ = detail::make_guarded<crypto::Secret<32>>(key);
    log->path_ = path;
    ::flock(log->fd_, LOCK_EX);
    auto tail = log->reload_tail_locked();
    ::flock(log->fd_, LOCK_UN);
    if (!tail) return Unexpected<Failure>{tail.error()};
    log->last_sync_ = std::chrono::steady_clock::now();
    return log;
}

AuditLog::~AuditLog() {
    if (fd_ >= 0) {
        ::fdatasync(fd_);
        ::close(fd_);
    }
}

Status<Failure> AuditLog::reload_tail_locked() {
    struct stat st {};
    if (::fstat(fd_, &st) != 0) return fail(Errc::io_error, fmt::format("cannot stat {}: {}", path_.string(), std::strerror(errno)));
    const auto size = static_cast<std::uint64_t>(st.st_size);
    known_size_ = size;
    if (size == 0) {
        last_seq_ = 0;
        last_hash_.fill(0);
        return Ok{};
    }
    const std::uint64_t window = std::min<std::uint64_t>(size, max_audit_line_bytes + 1);
    std::string tail(window, '\0');
    if (::pread(fd_, tail.data(), window, static_cast<off_t>(size - window)) != static_cast<ssize_t>(window))
        return fail(Errc::io_error, fmt::format("cannot read the end of {}", path_.string()));
    if (tail.back() != '\n')
        return fail(Errc::audit_broken, fmt::format("{} ends in an incomplete line; run `coconut-hsmd audit verify`", path_.string()));
    tail.pop_back();
    const std::size_t start = tail.rfind('\n');
    if (start == std::string::npos && window < size)
        return fail(Errc::audit_broken, fmt::format("{}: the last line is longer than {} bytes", path_.string(), max_audit_line_bytes));
    std::string why;
    const auto parsed = parse_line(std::string_view(tail).substr(start == std::string::npos ? 0 : start + 1), why);
    if (!parsed) return fail(Errc::audit_broken, fmt::format("{}: the last line {}", path_.string(), why));
    auto hash = from_hex(parsed->hash_hex);
    if (!hash || hash->size() != hash_bytes)
        return fail(Errc::audit_broken, fmt::format("{}: the last line's hash is not 32 bytes of hex", path_.string()));
    last_seq_ = parsed->seq;
    std::copy(hash->begin(), hash->end(), last_hash_.begin());
    return Ok{};
}

Outcome<std::uint64_t> AuditLog::append(const AuditEntry& entry) {
    std::lock_guard lock(mutex_);
    // Serialises with other processes (ceremony commands) appending to the same file.
    ::flock(fd_, LOCK_EX);
    struct FlockRelease {
        int fd;
        ~FlockRelease() { ::flock(fd, LOCK_UN); }
    } release{fd_};

    struct stat st {};
    if (::fstat(fd_, &st) == 0 && static_cast<std::uint64_t>(st.st_size) != known_size_) {
        if (auto tail = reload_tail_locked(); !tail) return Unexpected<Failure>{tail.error()};
    }
    std::string versions;
    for (std::uint8_t v : entry.key_versions) versions += (versions.empty() ? "" : ",") + std::to_string(v);
    const std::uint64_t seq = last_seq_ + 1;
    std::string line = fmt::format(R"({{"seq":{},"time":"{}","client":{},"command":{},"key":{},"versions":[{}],"result":{},"prev":"{}")",
                                   seq, utc_now(), json_string(entry.client), json_string(entry.command), json_string(entry.key_label),
                                   versions, json_string(entry.result), to_hex(last_hash_));
    if (line.size() + hash_marker.size() + 2 * hash_bytes + 3 > max_audit_line_bytes)
        return fail(Errc::bad_request, "audit entry too long");  // fields are bounded; reaching this is a bug upstream
    const auto hash = chain_hash(*key_, last_hash_, line);
    line += fmt::format("{}{}\"}}\n", hash_marker, to_hex(hash));
    std::size_t done = 0;
    while (done < line.size()) {
        const ssize_t n = ::write(fd_, line.data() + done, line.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return fail(Errc::io_error, fmt::format("cannot append to {}: {}", path_.string(), std::strerror(errno)));
        done += static_cast<std::size_t>(n);
    }
    known_size_ += line.size();
    last_seq_ = seq;
    last_hash_ = hash;
    const auto now = std::chrono::steady_clock::now();
    if (now - last_sync_ >= std::chrono::milliseconds(audit_sync_interval_ms)) {
        ::fdatasync(fd_);
        last_sync_ = now;
    }
    return seq;
}

void AuditLog::sync() {
    std::lock_guard lock(mutex_);
    ::fdatasync(fd_);
    last_sync_ = std::chrono::steady_clock::now();
}

Outcome<AuditLog::Summary> AuditLog::verify(const std::filesystem::path& path, const crypto::Secret<32>& key) {
    detail::ensure_sodium();
    std::ifstream in(path, std::ios::binary);
    if (!in) return fail(Errc::io_error, fmt::format("cannot open audit log {}", path.string()));
    Summary summary;
    std::array<std::uint8_t, hash_bytes> prev{};
    std::string line;
    std::uint64_t number = 0;
    while (true) {
        line.clear();
        char c = 0;
        bool newline = false;
        while (in.get(c)) {
            if (c == '\n') {
                newline = true;
                break;
            }
            if (line.size() >= max_audit_line_bytes)
                return fail(Errc::audit_broken,
                            fmt::format("{} line {}: longer than {} bytes", path.string(), number + 1, max_audit_line_bytes));
            line.push_back(c);
        }
        if (!newline && line.empty()) break;
        ++number;
        if (!newline)
            return fail(Errc::audit_broken, fmt::format("{} line {}: incomplete (no newline; truncated?)", path.string(), number));
        std::string why;
        const auto parsed = parse_line(line, why);
        if (!parsed) return fail(Errc::audit_broken, fmt::format("{} line {} {}", path.string(), number, why));
        if (parsed->seq != number)
            return fail(Errc::audit_broken, fmt::format("{} line {}: seq {} where {} was expected (a line was removed, "
                                                        "inserted or reordered)",
                                                        path.string(), number, parsed->seq, number));
        if (parsed->prev_hex != to_hex(prev))
            return fail(Errc::audit_broken,
                        fmt::format("{} line {}: prev does not match the hash of line {}", path.string(), number, number - 1));
        const auto expected = chain_hash(key, prev, parsed->body);
        if (parsed->hash_hex != to_hex(expected))
            return fail(Errc::audit_broken, fmt::format("{} line {}: hash mismatch (the line was altered, or the log was "
                                                        "written under another master key)",
                                                        path.string(), number));
        prev = expected;
        summary.lines = number;
        summary.last_seq = parsed->seq;
        summary.last_hash_hex = parsed->hash_hex;
    }
    return summary;
}

}  // namespace coconut::hsm
