// Durable whole-file replacement: the file is replaced, each failing step comes back as a typed error
// naming the step, the path and errno, and a failed directory fsync (injected) is an error too.
#include <coconut/core/durable_file.hpp>

#include <doctest/doctest.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

using namespace coconut;
namespace fs = std::filesystem;

namespace {

struct ScratchDir {
    fs::path path;
    ScratchDir() {
        std::random_device rd;
        path = fs::temp_directory_path() / ("coconut-core-" + std::to_string(rd()) + std::to_string(rd()));
        fs::create_directories(path);
    }
    ~ScratchDir() {
        inject_directory_fsync_failures(0);
        fs::remove_all(path);
    }
};

std::string contents_of(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
}

}  // namespace

TEST_CASE("write_file_atomically replaces the file and leaves no temporary") {
    ScratchDir dir;
    const fs::path path = dir.path / "state.bin";
    REQUIRE(write_file_atomically(path, text_bytes("first")).ok());
    REQUIRE(write_file_atomically(path, text_bytes("second")).ok());
    CHECK(contents_of(path) == "second");
    CHECK_FALSE(fs::exists(dir.path / "state.bin.tmp"));
    CHECK((fs::status(path).permissions() & fs::perms::all) == (fs::perms::owner_read | fs::perms::owner_write));
    REQUIRE(write_file_atomically(dir.path / "public.pem", text_bytes("x"), 0644).ok());
    CHECK((fs::status(dir.path / "public.pem").permissions() & fs::perms::others_read) == fs::perms::others_read);
}

TEST_CASE("a step that fails is named with its path and errno") {
    ScratchDir dir;
    const fs::path missing = dir.path / "no-such-dir" / "file";
    auto written = write_file_atomically(missing, text_bytes("x"));
    REQUIRE_FALSE(written);
    CHECK(written.error().step == FileError::Step::create);
    CHECK(written.error().path == missing.string() + ".tmp");
    CHECK(written.error().error_number == ENOENT);
    CHECK(written.error().message() == "create " + missing.string() + ".tmp: No such file or directory");

    // rename over a non-empty directory fails; the temporary is removed.
    const fs::path occupied = dir.path / "occupied";
    fs::create_directories(occupied / "inside");
    auto renamed = write_file_atomically(occupied, text_bytes("x"));
    REQUIRE_FALSE(renamed);
    CHECK(renamed.error().step == FileError::Step::rename);
    CHECK(renamed.error().message().starts_with("rename to " + occupied.string() + ": "));
    CHECK_FALSE(fs::exists(dir.path / "occupied.tmp"));

    auto no_directory = fsync_parent_directory(missing);
    REQUIRE_FALSE(no_directory);
    CHECK(no_directory.error().step == FileError::Step::open_directory);
    CHECK(no_directory.error().path == missing.parent_path());
}

TEST_CASE("a failed directory fsync is reported, by write_file_atomically and fsync_parent_directory") {
    ScratchDir dir;
    const fs::path path = dir.path / "queue.bin";
    inject_directory_fsync_failures(1);
    auto written = write_file_atomically(path, text_bytes("data"));
    REQUIRE_FALSE(written);
    CHECK(written.error().step == FileError::Step::fsync_directory);
    CHECK(written.error().path == dir.path);
    CHECK(written.error().error_number == EIO);
    CHECK(written.error().message() == "fsync directory " + dir.path.string() + ": Input/output error");
    // The injection is used up: the next write succeeds.
    CHECK(write_file_atomically(path, text_bytes("data")).ok());

    inject_directory_fsync_failures(2, ENOSPC);
    CHECK(fsync_parent_directory(path).error().error_number == ENOSPC);
    CHECK(fsync_parent_directory(path).error().step == FileError::Step::fsync_directory);
    CHECK(fsync_parent_directory(path).ok());
    CHECK(fsync_parent_directory("relative-name").ok());  // the current directory
}
