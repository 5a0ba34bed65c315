#include "file_io.hpp"

#include <coconut/core/durable_file.hpp>

#include <fmt/format.h>

#include <sys/stat.h>

#include <cerrno>
#include <cstring>

namespace coconut::hsm::detail {
namespace {

std::string errno_text() { return std::strerror(errno); }

Status<Failure> write_all(int fd, ByteView bytes, const std::filesystem::path& path) {
    std::size_t done = 0;
    while (done < bytes.size()) {
        const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return fail(Errc::io_error, fmt::format("cannot write {}: {}", path.string(), errno_text()));
        done += static_cast<std::size_t>(n);
    }
    if (::fsync(fd) != 0) return fail(Errc::io_error, fmt::format("cannot fsync {}: {}", path.string(), errno_text()));
    return Ok{};
}

Status<Failure> fsync_directory(const std::filesystem::path& file) {
    if (auto synced = fsync_parent_directory(file); !synced) return fail(Errc::io_error, "cannot " + synced.error().message());
    return Ok{};
}

}  // namespace

Outcome<Fd> open_private_file(const std::filesystem::path& path, std::string_view what) {
    Fd fd(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    if (fd.get() < 0) return fail(Errc::io_error, fmt::format("cannot open {} {}: {}", what, path.string(), errno_text()));
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode))
        return fail(Errc::io_error, fmt::format("{} {} is not a regular file", what, path.string()));
    if ((st.st_mode & 077) != 0)
        return fail(Errc::io_error, fmt::format("{} {} has mode {:04o}; it must be readable by its owner only (chmod 600 {})", what,
                                                path.string(), st.st_mode & 07777, path.string()));
    return fd;
}

Status<Failure> write_new_private_file(const std::filesystem::path& path, ByteView bytes) {
    Fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (fd.get() < 0) return fail(Errc::io_error, fmt::format("cannot create {}: {}", path.string(), errno_text()));
    if (auto ok = write_all(fd.get(), bytes, path); !ok) return ok;
    return fsync_directory(path);
}

Status<Failure> replace_file_atomically(const std::filesystem::path& path, ByteView bytes) {
    // The project's one write-temporary + fsync + rename + directory-fsync (coconut/core/durable_file.hpp).
    if (auto written = write_file_atomically(path, bytes, 0600); !written)
        return fail(Errc::io_error, fmt::format("cannot replace {}: {}", path.string(), written.error().message()));
    return Ok{};
}

Outcome<Bytes> read_small_file(const std::filesystem::path& path, std::size_t max_bytes) {
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (fd.get() < 0) return fail(Errc::io_error, fmt::format("cannot open {}: {}", path.string(), errno_text()));
    Bytes out;
    std::array<std::uint8_t, 16384> chunk{};
    for (;;) {
        const ssize_t n = ::read(fd.get(), chunk.data(), chunk.size());
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return fail(Errc::io_error, fmt::format("cannot read {}: {}", path.string(), errno_text()));
        if (n == 0) break;
        out.insert(out.end(), chunk.begin(), chunk.begin() + n);
        if (out.size() > max_bytes)
            return fail(Errc::store_corrupt, fmt::format("{} is larger than the {} bytes a store can be", path.string(), max_bytes));
    }
    return out;
}

}  // namespace coconut::hsm::detail
