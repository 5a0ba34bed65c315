/// @file
/// The hotlist: the versioned set of blocked cards, checked before every debit. Updated by deltas
/// (version N → N+1: cards added, cards removed) from the clearing host; a delta that does not start at
/// the current version is refused so a lost delta cannot leave a blocked card unblocked.
#pragma once

#include <coconut/core/result.hpp>
#include <coconut/sdk/apps.hpp>

#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace coconut::sdk {

enum class BlockReason : std::uint8_t { lost = 1, stolen = 2, cloned = 3, issuer = 4 };
std::string_view to_string(BlockReason reason);

/// A change of the hotlist from one version to the next (ClearingClient::sync_hotlist).
struct HotlistDelta {
    std::uint64_t from_version = 0;
    std::uint64_t to_version = 0;
    std::vector<std::pair<Asn, BlockReason>> added;
    std::vector<Asn> removed;
};

enum class HotlistErrorCode : std::uint8_t { version_gap, io_error, corrupt, too_large };
/// Why a hotlist could not be loaded, changed or saved.
struct HotlistError {
    HotlistErrorCode code;
    std::string message;
};

/// Blocked cards a terminal keeps: the island's ~10M cards at a lost-card rate well under 1%.
inline constexpr std::size_t hotlist_entries_max = 200000;

/// The blocked cards a terminal refuses, by ASN, with a version the clearing's updates follow; kept durably in a file.
class Hotlist {
public:
    /// An empty list at version 0 when the file does not exist; a damaged file is refused.
    static Result<Hotlist, HotlistError> load(const std::filesystem::path& path);
    Hotlist() = default;

    std::uint64_t version() const { return version_; }
    std::size_t size() const { return blocked_.size(); }
    std::optional<BlockReason> blocked(const Asn& asn) const;
    /// Applies a delta in memory and, when a path is set, saves the list durably (new file + rename).
    Status<HotlistError> apply(const HotlistDelta& delta);
    /// Replaces the whole list (a host restored behind this terminal sends its complete log from version 0:
    /// the result is its list at `version`, which may be below the local version). Saved durably.
    Status<HotlistError> replace(std::uint64_t version, const std::vector<std::pair<Asn, BlockReason>>& blocked);

private:
    Status<HotlistError> save() const;
    std::filesystem::path path_;
    std::uint64_t version_ = 0;
    std::map<Asn, BlockReason> blocked_;
};

}  // namespace coconut::sdk
