// Power-cut injection for integrators: `serve|shell --tear-after N [--tear-bytes B|half|all]` cuts the card's
// power at its N-th durable write (counted from the start of the process; a card commits each
// state-changing command in one write, see ../include/coconut/cos/card.hpp). The cut uses the card OS's
// own fault injection (cos::FileStorage::inject_power_cut_after, the mechanism of
// tests/card-os-apdu/cos_power_cut.cpp): that write reaches the image up to B bytes, is synced, and the
// card stops (cos::PowerCut out of VirtualCard::transmit). What survives is decided by the image's A/B
// slots exactly as after a real tear:
//   B < slot size (default: half)         the new slot fails its checksum: the card is before the command;
//   B = all (≥ slot size)                 the new slot is complete: the command happened, its response
//                                         never left the card.
// The caller then drops the card (serve: closes the vpcd connection, so pcscd sees it removed; shell:
// prints no response) and exits with exit_power_cut; re-inserting is starting coconut-vcard again on the
// same image.
#pragma once

#include <coconut/cos/card.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

namespace coconut::vcard {

struct TearPlan {
    std::uint64_t write_number = 0;    // 1-based; 0 = never cut
    std::optional<std::size_t> bytes;  // of the cut write that reach the image; nullopt = half a slot

    bool armed() const { return write_number != 0; }
};

// "half", "all" or a byte count for --tear-bytes; returns the reason when `text` is neither.
std::optional<std::string> parse_tear_bytes(const std::string& text, TearPlan& plan);

// Opens `image_path` as a durable card whose storage counts its commits and cuts the one `plan` names;
// the cut is logged on stderr ("<prefix>: power cut at durable write N: B of S bytes of the new state
// written (...)"). `log_every_write`: every durable write is logged too ("<prefix>: durable write N"), so
// an integrator can see which command is which write before choosing N.
Result<std::unique_ptr<cos::VirtualCard>, cos::ImageFailure> open_card_with_tear(const std::string& image_path, const TearPlan& plan,
                                                                                 const std::string& log_prefix, bool log_every_write);

}  // namespace coconut::vcard
