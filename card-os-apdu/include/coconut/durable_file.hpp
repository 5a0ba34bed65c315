// Durable whole-file replacement, the one implementation used by card images, terminal queues and
// hotlists: write `path`.tmp, fsync it, rename it over `path`, fsync the directory. After a crash the file
// is either the old one or the new one, complete.
#pragma once

#include <coconut/apdu/bytes.hpp>

#include <filesystem>
#include <string>

namespace coconut {

// Empty string on success; otherwise what failed, with strerror.
std::string write_file_atomically(const std::filesystem::path& path, ByteView contents, unsigned mode = 0600);
// fsync of the directory holding `path` (makes a rename or a new file's name durable).
void fsync_parent_directory(const std::filesystem::path& path);

}  // namespace coconut
