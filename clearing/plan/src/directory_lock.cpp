#include <coconut/clearing/directory_lock.hpp>

#include <fmt/format.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

namespace coconut::clearing {

coconut::Result<DirectoryLock, DirectoryLockError> DirectoryLock::acquire(const std::filesystem::path& directory) {
    const auto path = directory / "clearingd.lock";
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) return Unexpected{DirectoryLockError{false, fmt::format("cannot open {}: {}", path.string(), std::strerror(errno))}};
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
        ::close(fd);
        return Unexpected{DirectoryLockError{true, fmt::format("{} is locked by another process", directory.string())}};
    }
    return DirectoryLock(fd);
}

DirectoryLock::DirectoryLock(DirectoryLock&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}

DirectoryLock::~DirectoryLock() {
    if (fd_ >= 0) ::close(fd_);
}

}  // namespace coconut::clearing
