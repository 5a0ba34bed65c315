// Durable whole-file replacement, the one implementation used by card images, terminal queues,
// hotlists, the HSM key store, settlement files and certificates: write `path`.tmp, fsync it, rename it
// over `path`, fsync the directory. After a crash the file is either the old one or the new one,
// complete. The directory fsync is what makes the rename itself durable, so its failure is an error
// like any other step's.
#pragma once

#include <coconut/core/bytes.hpp>
#include <coconut/core/result.hpp>

#include <filesystem>
#include <string>

namespace coconut {

// Which step of a durable write failed, on which path, with which errno.
struct FileError {
    enum class Step { create, write, fsync, rename, open_directory, fsync_directory };
    Step step;
    std::filesystem::path path;  // the temporary for create/write/fsync, the target for rename, else the directory
    int error_number;            // errno

    // "fsync directory /var/lib/x: Input/output error" — the step, the path, strerror.
    std::string message() const;
};

// Replaces `path` durably (temporary, fsync, rename, directory fsync); the temporary is removed when a
// step before the rename fails.
Status<FileError> write_file_atomically(const std::filesystem::path& path, ByteView contents, unsigned mode = 0600);
// fsync of the directory holding `path` (makes a rename or a new file's name durable).
Status<FileError> fsync_parent_directory(const std::filesystem::path& path);

// Test seam: the next `count` directory fsyncs in this process fail with `error_number` (as a full or
// failing disk would make them), then they succeed again. Like FileStorage::inject_power_cut_after,
// for tests only; 0 clears it.
void inject_directory_fsync_failures(unsigned count, int error_number = 5 /* EIO */);

}  // namespace coconut
