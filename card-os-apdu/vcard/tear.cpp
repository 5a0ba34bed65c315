#include "tear.hpp"

#include <charconv>
#include <cstdio>
#include <limits>
#include <utility>

namespace coconut::vcard {

namespace {

// The card's image storage with a commit counter in front: on the planned commit it arms the image's own
// power-cut injection, so the cut write is exactly what FileStorage does under a real tear.
class TearingStorage final : public cos::Storage {
public:
    TearingStorage(std::unique_ptr<cos::FileStorage> image, TearPlan plan, std::string log_prefix, bool log_every_write)
        : image_(std::move(image)), plan_(std::move(plan)), log_prefix_(std::move(log_prefix)), log_every_write_(log_every_write) {}

    Result<Loaded, cos::ImageFailure> load() override { return image_->load(); }

    Status<cos::ImageFailure> commit(ByteView payload, std::uint64_t generation) override {
        ++writes_;
        if (plan_.armed() && writes_ == plan_.write_number) {
            const std::size_t slot_size = image_->slot_size();
            const std::size_t bytes = plan_.bytes.value_or(slot_size / 2);
            const bool whole = bytes >= slot_size;
            std::fprintf(stderr, "%s: power cut at durable write %llu: %zu of %zu bytes of the new state written (%s)\n",
                         log_prefix_.c_str(), static_cast<unsigned long long>(writes_), whole ? slot_size : bytes, slot_size,
                         whole ? "complete: the command is in the image, its response is lost"
                               : "torn: the image keeps the state before the command");
            image_->inject_power_cut_after(bytes);
        } else if (log_every_write_) {
            std::fprintf(stderr, "%s: durable write %llu\n", log_prefix_.c_str(), static_cast<unsigned long long>(writes_));
        }
        return image_->commit(payload, generation);  // throws cos::PowerCut when armed above
    }

    cos::ImageKind kind() const override { return image_->kind(); }

private:
    std::unique_ptr<cos::FileStorage> image_;
    TearPlan plan_;
    std::string log_prefix_;
    bool log_every_write_;
    std::uint64_t writes_ = 0;
};

}  // namespace

std::optional<std::string> parse_tear_bytes(const std::string& text, TearPlan& plan) {
    if (text == "half") {
        plan.bytes.reset();
        return std::nullopt;
    }
    if (text == "all") {
        plan.bytes = std::numeric_limits<std::size_t>::max();
        return std::nullopt;
    }
    std::size_t bytes = 0;
    const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), bytes);
    if (error != std::errc{} || end != text.data() + text.size() || text.empty())
        return "--tear-bytes " + text + ": expected a byte count (0 = nothing written), 'half' or 'all'";
    plan.bytes = bytes;
    return std::nullopt;
}

Result<std::unique_ptr<cos::VirtualCard>, cos::ImageFailure> open_card_with_tear(const std::string& image_path, const TearPlan& plan,
                                                                                 const std::string& log_prefix, bool log_every_write) {
    auto image = cos::FileStorage::open(image_path);
    if (!image) return Unexpected{image.error()};
    return cos::VirtualCard::from_storage(std::make_unique<TearingStorage>(std::move(image).value(), plan, log_prefix, log_every_write));
}

}  // namespace coconut::vcard
