// Helpers shared by settlement's source files. Not part of the public API.
#pragma once

#include <coconut/settlement/settlement.hpp>
#include <coconut/core/assert.hpp>
#include <coconut/core/markup.hpp>

#include <filesystem>
#include <string>
#include <string_view>

namespace coconut::settlement {

constexpr std::uint64_t ns_per_s = 1'000'000'000;

Result<std::string> read_text_file(const std::filesystem::path& path);

ByteView as_bytes(std::string_view text);
// create_directories + fsync of the parent, so the directory's name is durable.
Status make_directory_durably(const std::filesystem::path& dir);

}  // namespace coconut::settlement
