#include <coconut/core/durable_file.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>

namespace coconut {
namespace {

std::atomic<unsigned> directory_fsync_failures{0};
std::atomic<int> directory_fsync_errno{EIO};

// Consumes one injected failure; its errno, or 0 when none is pending.
int injected_directory_fsync_failure() {
    unsigned pending = directory_fsync_failures.load();
    while (pending > 0) {
        if (directory_fsync_failures.compare_exchange_weak(pending, pending - 1)) return directory_fsync_errno.load();
    }
    return 0;
}

// The failure of `step` on `path`, with the errno the failed call left (read before anything else runs).
Unexpected<FileError> failure(FileError::Step step, const std::string& path) {
    const int error_number = errno;
    return Unexpected{FileError{step, path, error_number}};
}

Status<FileError> write_all(int fd, const std::string& temporary, ByteView contents) {
    std::size_t done = 0;
    while (done < contents.size()) {
        const ssize_t n = ::write(fd, contents.data() + done, contents.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n == 0) errno = EIO;
        if (n <= 0) return failure(FileError::Step::write, temporary);
        done += static_cast<std::size_t>(n);
    }
    if (::fsync(fd) != 0) return failure(FileError::Step::fsync, temporary);
    return Ok{};
}

const char* step_name(FileError::Step step) {
    switch (step) {
        case FileError::Step::create: return "create";
        case FileError::Step::write: return "write";
        case FileError::Step::fsync: return "fsync";
        case FileError::Step::rename: return "rename to";
        case FileError::Step::open_directory: return "open directory";
        case FileError::Step::fsync_directory: return "fsync directory";
    }
    return "?";
}

}  // namespace

std::string FileError::message() const { return std::string(step_name(step)) + " " + path.string() + ": " + std::strerror(error_number); }

void inject_directory_fsync_failures(unsigned count, int error_number) {
    directory_fsync_errno.store(error_number);
    directory_fsync_failures.store(count);
}

Status<FileError> fsync_parent_directory(const std::filesystem::path& path) {
    const auto directory = path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
    const int fd = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return failure(FileError::Step::open_directory, directory.string());
    int error_number = injected_directory_fsync_failure();
    if (error_number == 0 && ::fsync(fd) != 0) error_number = errno;
    ::close(fd);
    if (error_number != 0) return Unexpected{FileError{FileError::Step::fsync_directory, directory, error_number}};
    return Ok{};
}

Status<FileError> write_file_atomically(const std::filesystem::path& path, ByteView contents, unsigned mode) {
    const std::string temporary = path.string() + ".tmp";
    const int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd < 0) return failure(FileError::Step::create, temporary);
    if (auto written = write_all(fd, temporary, contents); !written) {
        ::close(fd);
        ::unlink(temporary.c_str());
        return written;
    }
    ::close(fd);
    if (std::rename(temporary.c_str(), path.c_str()) != 0) {
        auto renamed = failure(FileError::Step::rename, path.string());
        ::unlink(temporary.c_str());
        return renamed;
    }
    return fsync_parent_directory(path);
}

}  // namespace coconut
