// Hotlist file: "COCOHOT1" ‖ version u64 ‖ count u32 ‖ count × (ASN(10) ‖ reason u8) ‖ SHA-256[0..8].
#include <coconut/core/durable_file.hpp>
#include <coconut/sdk/hotlist.hpp>

#include "checksum.hpp"

#include <fmt/format.h>

#include <fstream>
#include <iterator>

namespace coconut::sdk {
namespace {

constexpr std::array<std::uint8_t, 8> hotlist_magic{'C', 'O', 'C', 'O', 'H', 'O', 'T', '1'};
constexpr std::size_t entry_size = 11;

bool valid_reason(std::uint8_t r) { return r >= 1 && r <= 4; }

}  // namespace

std::string_view to_string(BlockReason reason) {
    switch (reason) {
        case BlockReason::lost: return "lost";
        case BlockReason::stolen: return "stolen";
        case BlockReason::cloned: return "cloned";
        case BlockReason::issuer: return "blocked by issuer";
    }
    return "blocked";
}

Result<Hotlist, HotlistError> Hotlist::load(const std::filesystem::path& path) {
    Hotlist list;
    list.path_ = path;
    std::ifstream in(path, std::ios::binary);
    if (!in) return list;  // no file yet: empty list at version 0
    const Bytes file((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const auto corrupt = [&](std::string_view why) {
        return Unexpected{HotlistError{HotlistErrorCode::corrupt, fmt::format("{}: {}", path.string(), why)}};
    };
    if (file.size() < 8 + 8 + 4 + 8 || !std::equal(hotlist_magic.begin(), hotlist_magic.end(), file.begin()))
        return corrupt("not a coconut hotlist");
    const ByteView body = ByteView(file).first(file.size() - 8);
    const auto sum = checksum(body);
    if (!std::equal(sum.begin(), sum.end(), file.end() - 8)) return corrupt("checksum mismatch");
    list.version_ = read_be(body.subspan(8, 8));
    const std::size_t count = read_be32(body.subspan(16, 4));
    if (count > hotlist_entries_max || body.size() != 20 + count * entry_size) return corrupt("bad entry count");
    for (std::size_t i = 0; i < count; ++i) {
        const ByteView e = body.subspan(20 + i * entry_size, entry_size);
        if (!valid_reason(e[10])) return corrupt("bad block reason");
        Asn asn{};
        std::copy(e.begin(), e.begin() + 10, asn.begin());
        list.blocked_.emplace(asn, static_cast<BlockReason>(e[10]));
    }
    return list;
}

std::optional<BlockReason> Hotlist::blocked(const Asn& asn) const {
    const auto it = blocked_.find(asn);
    if (it == blocked_.end()) return std::nullopt;
    return it->second;
}

Status<HotlistError> Hotlist::apply(const HotlistDelta& delta) {
    if (delta.from_version != version_ || delta.to_version <= delta.from_version)
        return Unexpected{HotlistError{HotlistErrorCode::version_gap, fmt::format("delta {}→{} does not apply to version {}",
                                                                                  delta.from_version, delta.to_version, version_)}};
    auto next = blocked_;
    for (const auto& [asn, reason] : delta.added) next[asn] = reason;
    for (const auto& asn : delta.removed) next.erase(asn);
    if (next.size() > hotlist_entries_max)
        return Unexpected{HotlistError{HotlistErrorCode::too_large, fmt::format("hotlist would hold {} cards", next.size())}};
    const auto previous_version = version_;
    blocked_.swap(next);
    version_ = delta.to_version;
    if (auto saved = save(); !saved) {
        blocked_.swap(next);
        version_ = previous_version;
        return saved;
    }
    return Ok{};
}

Status<HotlistError> Hotlist::replace(std::uint64_t version, const std::vector<std::pair<Asn, BlockReason>>& blocked) {
    if (blocked.size() > hotlist_entries_max)
        return Unexpected{HotlistError{HotlistErrorCode::too_large, fmt::format("hotlist would hold {} cards", blocked.size())}};
    std::map<Asn, BlockReason> next(blocked.begin(), blocked.end());
    const auto previous_version = version_;
    blocked_.swap(next);
    version_ = version;
    if (auto saved = save(); !saved) {
        blocked_.swap(next);
        version_ = previous_version;
        return saved;
    }
    return Ok{};
}

Status<HotlistError> Hotlist::save() const {
    if (path_.empty()) return Ok{};
    Bytes file(hotlist_magic.begin(), hotlist_magic.end());
    append_be(file, version_, 8);
    append_be(file, blocked_.size(), 4);
    for (const auto& [asn, reason] : blocked_) {
        append(file, asn);
        file.push_back(static_cast<std::uint8_t>(reason));
    }
    const auto sum = checksum(file);
    file.insert(file.end(), sum.begin(), sum.end());
    if (auto written = write_file_atomically(path_, file); !written)
        return Unexpected{HotlistError{HotlistErrorCode::io_error, written.error().message()}};
    return Ok{};
}

}  // namespace coconut::sdk
