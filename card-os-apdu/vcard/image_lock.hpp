// One writer per image: a card image is one card's memory, and two processes serving it (serve and a shell,
// or two serves) would each commit their own copy of the state over the other's — a lost purchase or a
// duplicated balance. Every coconut-vcard command that may write an image holds an exclusive flock on it
// for its whole run (flock, not fcntl locks: the card OS opening and closing its own descriptor of the same
// file does not release it). Reading (info) takes no lock: the A/B slots make a concurrent read safe.
#pragma once

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>
#include <string>
#include <utility>

namespace coconut::vcard {

class ImageLock {
public:
    // Locks `path` (which must exist) or returns why not. A missing file is not an error here: the card
    // OS reports it with its own message when it opens the image.
    static std::optional<std::string> acquire(const std::string& path, ImageLock& out) {
        const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) return std::nullopt;
        if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
            const int error = errno;
            ::close(fd);
            if (error == EWOULDBLOCK) {
                return path + ": image is in use by another coconut-vcard process (serve or shell); stop it first";
            }
            return path + ": cannot lock the image: " + std::strerror(error);
        }
        out.reset(fd);
        return std::nullopt;
    }

    ImageLock() = default;
    ~ImageLock() { reset(-1); }
    ImageLock(ImageLock&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
    ImageLock& operator=(ImageLock&& other) noexcept {
        reset(std::exchange(other.fd_, -1));
        return *this;
    }
    ImageLock(const ImageLock&) = delete;
    ImageLock& operator=(const ImageLock&) = delete;

private:
    void reset(int fd) {
        if (fd_ >= 0) ::close(fd_);  // closing the descriptor releases the flock
        fd_ = fd;
    }
    int fd_ = -1;
};

}  // namespace coconut::vcard
