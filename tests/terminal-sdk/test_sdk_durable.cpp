// The terminal's files are replaced durably: when the directory fsync that makes a replacement's name
// durable fails, the save reports an I/O error instead of succeeding.
#include "test_sdk_support.hpp"

#include <coconut/core/durable_file.hpp>
#include <coconut/sdk/hotlist.hpp>

using namespace sdk_test;

TEST_CASE("hotlist: a failed directory fsync is an io_error of the save") {
    TempDir dir;
    const auto path = dir.path / "hot.bin";
    auto list = Hotlist::load(path);
    REQUIRE(list.ok());
    Asn a{};
    a[9] = 1;
    inject_directory_fsync_failures(1);
    auto applied = list->apply({0, 1, {{a, BlockReason::stolen}}, {}});
    inject_directory_fsync_failures(0);
    REQUIRE_FALSE(applied.ok());
    CHECK(applied.error().code == HotlistErrorCode::io_error);
    CHECK(applied.error().message.find("fsync directory " + dir.path.string()) != std::string::npos);
    CHECK(list->version() == 0);                                        // the delta did not take
    REQUIRE(list->apply({0, 1, {{a, BlockReason::stolen}}, {}}).ok());  // with a working disk it does
    CHECK(Hotlist::load(path)->blocked(a) == BlockReason::stolen);
}
