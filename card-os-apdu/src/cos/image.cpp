// Image files with two alternating state slots (layout in image.hpp and IMAGE-FORMAT.md).
#include <coconut/cos/image.hpp>
#include <coconut/core/assert.hpp>
#include <coconut/core/durable_file.hpp>
#include <coconut/core/sha256.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <fmt/format.h>

namespace coconut::cos {
namespace {

constexpr std::array<std::uint8_t, 8> header_magic{'C', 'O', 'C', 'O', 'I', 'M', 'G', '1'};
constexpr std::array<std::uint8_t, 4> slot_magic{'S', 'L', 'O', 'T'};
constexpr std::size_t digest_size = 32;
// magic(4) ‖ generation(8) ‖ payload length(4)
constexpr std::size_t slot_prefix_size = 16;
// Header: magic(8) ‖ version(2) ‖ kind(1) ‖ reserved(1) ‖ slot size(4) ‖ zero(16) ‖ SHA-256 of bytes 0..31.
constexpr std::size_t header_digest_offset = 32;
// A slot smaller than this cannot hold a card; larger ones waste a card's worth of disk for nothing.
constexpr std::uint32_t slot_size_min = 1024;
constexpr std::uint32_t slot_size_max = 1024 * 1024;

ImageFailure failure(ImageError code, const std::filesystem::path& path, std::string_view what) {
    return ImageFailure{code, fmt::format("{}: {}", path.string(), what)};
}

ImageFailure io_failure(const std::filesystem::path& path, std::string_view operation) {
    return failure(ImageError::io_error, path, fmt::format("{} failed: {}", operation, std::strerror(errno)));
}

Bytes make_header(ImageKind kind, std::uint32_t slot_size) {
    Bytes header(header_magic.begin(), header_magic.end());
    append_be(header, image_format_version, 2);
    header.push_back(static_cast<std::uint8_t>(kind));
    header.push_back(0);
    append_be(header, slot_size, 4);
    header.resize(header_digest_offset, 0);
    const auto digest = sha256(header);
    header.insert(header.end(), digest.begin(), digest.end());
    COCONUT_ASSERT(header.size() == image_header_size);
    return header;
}

Bytes make_slot(ByteView payload, std::uint64_t generation, std::uint32_t slot_size) {
    Bytes slot(slot_magic.begin(), slot_magic.end());
    append_be(slot, generation, 8);
    append_be(slot, payload.size(), 4);
    append(slot, payload);
    slot.resize(slot_size - digest_size, 0);
    const auto digest = sha256(ByteView(slot).first(slot_prefix_size + payload.size()));
    slot.insert(slot.end(), digest.begin(), digest.end());
    // decode_slot reads back the length at 12..15 and takes the digest from the slot's last bytes.
    COCONUT_ASSERT(slot.size() == slot_size && read_be32(ByteView(slot).subspan(12, 4)) == payload.size(), "slot layout");
    return slot;
}

struct DecodedSlot {
    std::uint64_t generation = 0;
    Bytes payload;
};

// nullopt for a slot that is torn, zeroed or corrupt.
std::optional<DecodedSlot> decode_slot(ByteView slot) {
    if (!std::equal(slot_magic.begin(), slot_magic.end(), slot.begin())) return std::nullopt;
    const std::uint64_t generation = read_be(slot.subspan(4, 8));
    const std::size_t length = read_be32(slot.subspan(12, 4));
    if (length > slot.size() - slot_prefix_size - digest_size) return std::nullopt;
    const auto digest = sha256(slot.first(slot_prefix_size + length));
    if (!std::equal(digest.begin(), digest.end(), slot.end() - digest_size)) return std::nullopt;
    const auto payload = slot.subspan(slot_prefix_size, length);
    return DecodedSlot{generation, Bytes(payload.begin(), payload.end())};
}

bool write_all(int fd, ByteView data, off_t offset) {
    std::size_t done = 0;
    while (done < data.size()) {
        const ssize_t n = ::pwrite(fd, data.data() + done, data.size() - done, offset + static_cast<off_t>(done));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        done += static_cast<std::size_t>(n);
    }
    return true;
}

bool read_all(int fd, std::uint8_t* out, std::size_t size, off_t offset) {
    std::size_t done = 0;
    while (done < size) {
        const ssize_t n = ::pread(fd, out + done, size - done, offset + static_cast<off_t>(done));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        done += static_cast<std::size_t>(n);
    }
    return true;
}

}  // namespace

std::optional<ImageKind> payload_kind(ByteView payload) {
    if (payload.empty()) return std::nullopt;
    if (payload[0] == static_cast<std::uint8_t>(ImageKind::card)) return ImageKind::card;
    if (payload[0] == static_cast<std::uint8_t>(ImageKind::psam)) return ImageKind::psam;
    return std::nullopt;
}

FileStorage::FileStorage(int fd, std::filesystem::path path, ImageKind kind, std::uint32_t slot_size)
    : fd_(fd), path_(std::move(path)), kind_(kind), slot_size_(slot_size) {}

FileStorage::~FileStorage() {
    if (fd_ >= 0) ::close(fd_);
}

Result<std::unique_ptr<FileStorage>, ImageFailure> FileStorage::open(const std::filesystem::path& path) {
    const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) return Unexpected{failure(ImageError::not_found, path, "no such image file")};
        return Unexpected{io_failure(path, "open")};
    }
    auto close_on_error = [&](ImageFailure f) {
        ::close(fd);
        return Unexpected{std::move(f)};
    };
    struct stat st {};
    if (::fstat(fd, &st) != 0) return close_on_error(io_failure(path, "fstat"));
    const auto file_size = static_cast<std::size_t>(st.st_size);
    if (file_size < image_header_size)
        return close_on_error(
            failure(ImageError::truncated, path, fmt::format("truncated image: {} bytes, header needs {}", file_size, image_header_size)));
    Bytes header(image_header_size);
    if (!read_all(fd, header.data(), header.size(), 0)) return close_on_error(io_failure(path, "read header"));
    if (!std::equal(header_magic.begin(), header_magic.end(), header.begin()))
        return close_on_error(failure(ImageError::bad_magic, path, "not a coconut card image (bad magic)"));
    const auto digest = sha256(ByteView(header).first(header_digest_offset));
    if (!std::equal(digest.begin(), digest.end(), header.begin() + header_digest_offset))
        return close_on_error(failure(ImageError::corrupt, path, "corrupt image header (checksum mismatch)"));
    const auto version = read_be16(ByteView(header).subspan(8, 2));
    if (version != image_format_version)
        return close_on_error(failure(ImageError::unsupported_version, path,
                                      fmt::format("image format version {} (this build reads {})", version, image_format_version)));
    const auto kind = payload_kind(ByteView(header).subspan(10, 1));
    if (!kind) return close_on_error(failure(ImageError::corrupt, path, "unknown image kind"));
    const auto slot_size = read_be32(ByteView(header).subspan(12, 4));
    if (slot_size < slot_size_min || slot_size > slot_size_max)
        return close_on_error(failure(ImageError::corrupt, path, fmt::format("implausible slot size {}", slot_size)));
    const std::size_t expected = image_header_size + 2 * static_cast<std::size_t>(slot_size);
    if (file_size != expected)
        return close_on_error(
            failure(ImageError::truncated, path, fmt::format("image is {} bytes, its header says {}", file_size, expected)));
    return std::unique_ptr<FileStorage>(new FileStorage(fd, path, *kind, slot_size));
}

Status<ImageFailure> FileStorage::create(const std::filesystem::path& path, ImageKind kind, ByteView payload, bool overwrite,
                                         std::uint32_t slot_size) {
    if (!overwrite && std::filesystem::exists(path))
        return Unexpected{failure(ImageError::exists, path, "image exists (use --force to overwrite)")};
    if (slot_prefix_size + payload.size() + digest_size > slot_size)
        return Unexpected{failure(ImageError::too_large, path, "card state does not fit the image slot")};
    // Generation 1 goes where the commit rule puts it, slot 1 mod 2 = B; slot A stays empty (invalid), so
    // the first commit (generation 2) lands on A and a cut in it leaves generation 1 whole.
    Bytes file = make_header(kind, slot_size);
    file.resize(image_header_size + static_cast<std::size_t>(slot_size), 0);
    append(file, make_slot(payload, 1, slot_size));

    if (auto written = write_file_atomically(path, file); !written)
        return Unexpected{failure(ImageError::io_error, path, written.error().message())};
    return Ok{};
}

Result<Storage::Loaded, ImageFailure> FileStorage::load() {
    std::optional<DecodedSlot> best;
    std::size_t best_index = 0;
    Bytes slot(slot_size_);
    for (std::size_t index = 0; index < 2; ++index) {
        const off_t offset = static_cast<off_t>(image_header_size + index * slot_size_);
        if (!read_all(fd_, slot.data(), slot.size(), offset)) return Unexpected{io_failure(path_, "read slot")};
        auto decoded = decode_slot(slot);
        if (decoded && (!best || decoded->generation > best->generation)) {
            best = std::move(decoded);
            best_index = index;
        }
    }
    if (!best) return Unexpected{failure(ImageError::corrupt, path_, "corrupt image: no state slot has a valid checksum")};
    if (best->generation > image_last_generation)
        return Unexpected{failure(ImageError::corrupt, path_,
                                  fmt::format("corrupt image: slot {} holds generation {}, beyond the last an image may hold ({})",
                                              best_index == 0 ? 'A' : 'B', best->generation, image_last_generation))};
    if (payload_kind(best->payload) != kind_)
        return Unexpected{failure(ImageError::corrupt, path_, "corrupt image: state kind differs from the header")};
    newest_slot_ = best_index;
    return Loaded{std::move(best->payload), best->generation};
}

Status<ImageFailure> FileStorage::commit(ByteView payload, std::uint64_t generation) {
    if (slot_prefix_size + payload.size() + digest_size > slot_size_)
        return Unexpected{failure(ImageError::too_large, path_, "card state does not fit the image slot")};
    // Generation g lives in slot g % 2, so the write always lands on the older of the two slots. An image
    // created before create() followed that rule holds generation 1 in slot A: whatever the numbering, never
    // write over the slot load() found newest, or a cut in that write would leave no valid slot at all.
    std::size_t index = generation % 2;
    if (newest_slot_ && *newest_slot_ == index) index = 1 - index;
    const off_t offset = static_cast<off_t>(image_header_size + index * slot_size_);
    const Bytes slot = make_slot(payload, generation, slot_size_);
    if (cut_after_bytes_) {
        const std::size_t cut = std::min(*cut_after_bytes_, slot.size());
        cut_after_bytes_.reset();
        if (!write_all(fd_, ByteView(slot).first(cut), offset)) return Unexpected{io_failure(path_, "write slot")};
        ::fdatasync(fd_);
        throw PowerCut{};
    }
    if (!write_all(fd_, slot, offset)) return Unexpected{io_failure(path_, "write slot")};
    if (::fdatasync(fd_) != 0) return Unexpected{io_failure(path_, "fdatasync")};
    newest_slot_ = index;
    return Ok{};
}

}  // namespace coconut::cos
