// The lock of a clearing data directory: DIR/clearingd.lock held with flock(LOCK_EX) for as long as a
// process may write the directory — coconut-clearingd's serve and admin commands, and coconut-settle
// posting directly into the ledger. While one process holds it, no other can take it, so a daemon never
// starts on a directory someone else is writing, and nobody writes a directory a daemon serves.
// Released when the object is destroyed (or the process ends).
#pragma once

#include <coconut/core/result.hpp>

#include <filesystem>
#include <string>

namespace coconut::clearing {

struct DirectoryLockError {
    bool held = false;  // another process holds the lock; false: the lock file could not be opened
    std::string message;
};

class DirectoryLock {
public:
    static coconut::Result<DirectoryLock, DirectoryLockError> acquire(const std::filesystem::path& directory);
    DirectoryLock(DirectoryLock&& other) noexcept;
    DirectoryLock& operator=(DirectoryLock&&) = delete;
    ~DirectoryLock();

private:
    explicit DirectoryLock(int fd) : fd_(fd) {}
    int fd_ = -1;
};

}  // namespace coconut::clearing
