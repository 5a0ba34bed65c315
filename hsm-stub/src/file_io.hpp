// Private: the file operations of the store, one place (permissions, atomic replacement, bounded reads).
#pragma once

#include <coconut/hsm/hsm.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <utility>

namespace coconut::hsm::detail {

// Owns a file descriptor.
class Fd {
public:
    Fd() = default;
    explicit Fd(int fd) : fd_(fd) {}
    Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
    Fd& operator=(Fd&& other) noexcept {
        if (this != &other) {
            reset();
            fd_ = std::exchange(other.fd_, -1);
        }
        return *this;
    }
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    ~Fd() { reset(); }
    int get() const { return fd_; }
    void reset() {
        if (fd_ >= 0) ::close(fd_);
        fd_ = -1;
    }

private:
    int fd_ = -1;
};

// Opens a secret file for reading: a regular file (no symlink) whose mode grants nothing to group or
// others. The error message names `what` and the path and says how to fix the mode.
Outcome<Fd> open_private_file(const std::filesystem::path& path, std::string_view what);
// Creates a new file (refuses to overwrite) with mode 0600, writes `bytes`, fsyncs file and directory.
Status<Failure> write_new_private_file(const std::filesystem::path& path, ByteView bytes);
// Writes path + ".tmp" (0600), fsyncs it, renames it over `path`, fsyncs the directory.
Status<Failure> replace_file_atomically(const std::filesystem::path& path, ByteView bytes);
// Reads a whole file of at most `max_bytes` (store_corrupt if larger, io_error if unreadable).
Outcome<Bytes> read_small_file(const std::filesystem::path& path, std::size_t max_bytes);

}  // namespace coconut::hsm::detail
