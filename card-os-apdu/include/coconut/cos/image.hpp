// Card image storage: the card's non-volatile memory, one file per card.
//
// File layout (all integers big-endian; card-os-apdu/IMAGE-FORMAT.md has the full description):
//
//   header (64 bytes)  magic "COCOIMG1" | format version u16 | kind u8 | reserved u8 | slot size u32 |
//                      reserved (44) | SHA-256 of the first 32 bytes, truncated to 4 bytes... (see .md)
//   slot A (slot size) magic "SLOT" | generation u64 | payload length u32 | payload | zero fill |
//                      SHA-256(magic..payload) in the last 32 bytes
//   slot B (slot size) same
//
// A commit writes the complete new state into the slot holding the OLDER generation with one pwrite,
// then fdatasync. Loading takes the valid slot with the highest generation. A write torn by a power cut
// fails its checksum, so the previous slot wins: the card is before the command, never between. The
// file never changes size after creation, so fdatasync needs no metadata flush (~50 µs here, against
// ~1.5 ms for write-new-file + fsync + rename + directory fsync).
#pragma once

#include <coconut/core/bytes.hpp>
#include <coconut/core/result.hpp>

#include <cstdint>
#include <exception>
#include <filesystem>
#include <limits>
#include <optional>
#include <string>

namespace coconut::cos {

enum class ImageKind : std::uint8_t { card = 1, psam = 2 };

enum class ImageError : std::uint8_t {
    not_found,
    io_error,
    truncated,            // file shorter/longer than header + 2 slots
    bad_magic,            // not a coconut card image
    unsupported_version,  // written by a newer format
    corrupt,              // no slot with a valid checksum, or a payload that does not decode
    missing_key,          // a card without a key this build requires: the SSSE INTERNAL AUTHENTICATE key
                          // (images personalized before it existed); personalize the card again
    too_large,            // state does not fit the slot
    exists,               // create_image without overwrite
    invalid_profile,
};

struct ImageFailure {
    ImageError code;
    std::string message;  // names the file and what is wrong, for the operator
};

// Thrown by fault-injecting storage at the chosen cut point: the "power" is gone. The card object that
// saw it must be discarded; reopen the storage to see what survived.
struct PowerCut : std::exception {
    const char* what() const noexcept override { return "injected power cut"; }
};

inline constexpr std::size_t image_header_size = 64;
// Default slot size: the card's state is ~3 KiB; 16 KiB leaves room for larger logs.
inline constexpr std::uint32_t image_default_slot_size = 16 * 1024;
inline constexpr std::uint16_t image_format_version = 1;
// The last generation an image may hold. A commit writes generation + 1; past the largest u64 that
// would wrap to 0 and the next load would take the older slot, losing the commit. So the largest u64 is
// never a generation: load() refuses a slot beyond this one (anyone who can write the file can seal a
// slot), and a command whose commit would go beyond it answers 6581 and changes nothing.
inline constexpr std::uint64_t image_last_generation = std::numeric_limits<std::uint64_t>::max() - 1;

// The non-volatile memory behind a card.
class Storage {
public:
    virtual ~Storage() = default;
    // Latest committed payload and its generation.
    struct Loaded {
        Bytes payload;
        std::uint64_t generation = 0;
    };
    virtual Result<Loaded, ImageFailure> load() = 0;
    // Durably replaces the payload (generation = previous + 1). Returns only when the data is on disk.
    virtual Status<ImageFailure> commit(ByteView payload, std::uint64_t generation) = 0;
    virtual ImageKind kind() const = 0;
};

// Image file with two alternating slots (see above).
class FileStorage final : public Storage {
public:
    // Opens an existing image: checks size and header.
    static Result<std::unique_ptr<FileStorage>, ImageFailure> open(const std::filesystem::path& path);
    // Creates a new image file holding `payload` as generation 1 (write to a temporary name, fsync,
    // rename, fsync the directory: creation is the one place where the slow path is fine).
    static Status<ImageFailure> create(const std::filesystem::path& path, ImageKind kind, ByteView payload, bool overwrite,
                                       std::uint32_t slot_size = image_default_slot_size);
    ~FileStorage() override;

    Result<Loaded, ImageFailure> load() override;
    Status<ImageFailure> commit(ByteView payload, std::uint64_t generation) override;
    ImageKind kind() const override { return kind_; }

    // Fault injection: the next commit writes only the first `bytes` bytes of its slot, then throws PowerCut
    // (bytes ≥ slot size: the whole slot is written and synced, then PowerCut — "cut right after the write").
    void inject_power_cut_after(std::size_t bytes) { cut_after_bytes_ = bytes; }
    // Bytes one commit writes (a cut at or past this many bytes leaves the whole new state on disk).
    std::uint32_t slot_size() const { return slot_size_; }

private:
    FileStorage(int fd, std::filesystem::path path, ImageKind kind, std::uint32_t slot_size);
    int fd_ = -1;
    std::filesystem::path path_;
    ImageKind kind_;
    std::uint32_t slot_size_;
    std::optional<std::size_t> cut_after_bytes_;
    std::optional<std::size_t> newest_slot_;  // index of the slot holding the newest generation (load, commit)
};

// Memory only (benchmarks, fuzzing): commit keeps the payload, nothing touches a disk.
class MemoryStorage final : public Storage {
public:
    MemoryStorage(ImageKind kind, Bytes payload) : kind_(kind), payload_(std::move(payload)) {}
    Result<Loaded, ImageFailure> load() override { return Loaded{payload_, generation_}; }
    Status<ImageFailure> commit(ByteView payload, std::uint64_t generation) override {
        payload_.assign(payload.begin(), payload.end());
        generation_ = generation;
        return Ok{};
    }
    ImageKind kind() const override { return kind_; }
    const Bytes& payload() const { return payload_; }

private:
    ImageKind kind_;
    Bytes payload_;
    std::uint64_t generation_ = 1;
};

// The kind recorded in a payload (its first byte), or nullopt for an empty payload.
std::optional<ImageKind> payload_kind(ByteView payload);

}  // namespace coconut::cos
