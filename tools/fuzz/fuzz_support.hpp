// Helpers shared by the libFuzzer targets (docs/FUZZING.md): a scratch directory for targets that read
// files, a reader that takes an input apart, the seed writer and the one way a target reports a broken
// property. Header only; each target is one executable.
//
// Seeds: a target that builds its seed corpus from the real encoders writes it when run with
// COCONUT_FUZZ_WRITE_SEEDS=DIR in the environment (write_seeds_if_requested in LLVMFuzzerInitialize),
// so the committed corpus can be regenerated after a format change:
//   COCONUT_FUZZ_WRITE_SEEDS=clearing/iso8583/fuzz/corpus/fuzz_card_data build-fuzz/clearing/iso8583/fuzz_card_data
#pragma once

#include <coconut/core/bytes.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

namespace coconut::fuzz {

// A property of the code under test does not hold: print it and abort (libFuzzer keeps the input).
[[noreturn]] inline void fail(std::string_view target, std::string_view what) {
    std::fprintf(stderr, "%.*s: %.*s\n", static_cast<int>(target.size()), target.data(), static_cast<int>(what.size()), what.data());
    std::abort();
}

// A directory for the files one fuzz process writes, removed at exit. On /dev/shm when it exists:
// fsync there is free, so a target that commits per input runs at memory speed. libFuzzer ends a
// process without running destructors (a crash, -max_total_time), so the directory is named after the
// process id and the next process of the same target removes those of processes that are gone.
class ScratchDir {
public:
    explicit ScratchDir(std::string_view name) {
        std::error_code ec;
        const std::filesystem::path base = std::filesystem::is_directory("/dev/shm", ec) && ::access("/dev/shm", W_OK) == 0
                                               ? std::filesystem::path("/dev/shm")
                                               : std::filesystem::temp_directory_path();
        const std::string prefix = "coconut-fuzz-" + std::string(name) + "-";
        for (const auto& entry : std::filesystem::directory_iterator(base, ec)) {
            const std::string file = entry.path().filename().string();
            if (!file.starts_with(prefix)) continue;
            const std::string pid = file.substr(prefix.size());
            if (!pid.empty() && pid.find_first_not_of("0123456789") == std::string::npos && !std::filesystem::exists("/proc/" + pid, ec))
                std::filesystem::remove_all(entry.path(), ec);
        }
        path_ = base / (prefix + std::to_string(::getpid()));
        std::filesystem::remove_all(path_, ec);
        if (!std::filesystem::create_directories(path_, ec)) fail(name, "cannot create a scratch directory");
    }
    ~ScratchDir() {
        std::error_code ignored;
        std::filesystem::remove_all(path_, ignored);
    }
    ScratchDir(const ScratchDir&) = delete;
    ScratchDir& operator=(const ScratchDir&) = delete;
    const std::filesystem::path& path() const { return path_; }
    std::filesystem::path operator/(std::string_view name) const { return path_ / name; }

private:
    std::filesystem::path path_;
};

// Replaces the file at `path` with `bytes` (plain write: scratch files need no durability).
inline void write_file(const std::filesystem::path& path, ByteView bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    if (!out) fail("fuzz_support", "cannot write " + path.string());
}
inline ByteView bytes_of(std::string_view text) { return {reinterpret_cast<const std::uint8_t*>(text.data()), text.size()}; }

// Takes an input apart front to back; past the end every read gives zeros / empty views.
class Reader {
public:
    explicit Reader(ByteView input) : rest_(input) {}
    bool empty() const { return rest_.empty(); }
    std::size_t size() const { return rest_.size(); }
    std::uint8_t byte() {
        if (rest_.empty()) return 0;
        const std::uint8_t b = rest_.front();
        rest_ = rest_.subspan(1);
        return b;
    }
    std::uint16_t be16() { return static_cast<std::uint16_t>((byte() << 8) | byte()); }
    ByteView take(std::size_t n) {
        n = std::min(n, rest_.size());
        const ByteView out = rest_.first(n);
        rest_ = rest_.subspan(n);
        return out;
    }
    ByteView rest() { return take(rest_.size()); }
    std::string_view text(std::size_t n) {
        const ByteView b = take(n);
        return {reinterpret_cast<const char*>(b.data()), b.size()};
    }

private:
    ByteView rest_;
};

// The directory named by COCONUT_FUZZ_WRITE_SEEDS, when the target is asked to write its seeds.
inline std::optional<std::filesystem::path> write_seeds_requested() {
    const char* dir = std::getenv("COCONUT_FUZZ_WRITE_SEEDS");
    if (dir == nullptr || *dir == '\0') return std::nullopt;
    std::filesystem::create_directories(dir);
    return std::filesystem::path(dir);
}
inline void write_seed(const std::filesystem::path& dir, std::string_view name, ByteView bytes) {
    write_file(dir / name, bytes);
    std::fprintf(stderr, "seed %s (%zu bytes)\n", (dir / name).c_str(), bytes.size());
}
// For LLVMFuzzerInitialize: when COCONUT_FUZZ_WRITE_SEEDS names a directory, `write` fills it and the
// process exits (no fuzzing).
inline void write_seeds_if_requested(void (*write)(const std::filesystem::path& dir)) {
    if (auto dir = write_seeds_requested()) {
        write(*dir);
        std::exit(0);
    }
}

}  // namespace coconut::fuzz
