// libFuzzer target for card and PSAM image files (IMAGE-FORMAT.md): the header, the two state slots
// and the payload decoder behind VirtualCard::open — a file anyone with access to the disk can edit.
// (fuzz_apdu_dispatcher's image mode edits payloads in memory; this one goes through the file.)
//
// Input: byte 0 = flags, the rest = the image file.
//   bit 0  repair the header's SHA-256 (bytes 32–63) before writing the file
//   bit 1  repair each slot's SHA-256 (over magic … payload as its length field says), so the fuzzer
//          reaches the payload decoder past the checksums
// Properties: open() never crashes; it refuses with a message or opens a card. An opened card answers a
// short session of every application with a status word, commits what it changes, and the image then
// opens again with the same state (the commit it made is the one a reopen loads).
#include <coconut/core/bytes.hpp>
#include <coconut/core/sha256.hpp>
#include <coconut/cos/card.hpp>

#include <fuzz_support.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>

namespace {

using namespace coconut;

constexpr std::string_view target = "fuzz_card_image";
constexpr std::size_t digest_size = 32;
constexpr std::size_t header_digest_offset = 32;
constexpr std::size_t slot_prefix_size = 16;  // "SLOT" ‖ generation ‖ payload length
// The seeds' slot size: the smallest a card's state (~3 KiB) fits with room to commit; small files
// keep the fuzzer fast.
constexpr std::uint32_t seed_slot_size = 4096;

fuzz::ScratchDir& scratch() {
    static fuzz::ScratchDir dir(target);
    return dir;
}

void put_sha256(Bytes& file, std::size_t from, std::size_t size, std::size_t at) {
    const Sha256Digest digest = sha256(ByteView(file).subspan(from, size));
    std::copy(digest.begin(), digest.end(), file.begin() + static_cast<std::ptrdiff_t>(at));
}

void repair(Bytes& file, std::uint8_t flags) {
    if (file.size() < cos::image_header_size) return;
    if (flags & 1) put_sha256(file, 0, header_digest_offset, header_digest_offset);
    if ((flags & 2) == 0) return;
    const std::size_t slot_size = read_be32(ByteView(file).subspan(12, 4));
    if (slot_size < slot_prefix_size + digest_size || file.size() < cos::image_header_size + 2 * slot_size) return;
    for (std::size_t slot = cos::image_header_size; slot < cos::image_header_size + 2 * slot_size; slot += slot_size) {
        const std::size_t length =
            std::min<std::size_t>(read_be32(ByteView(file).subspan(slot + 12, 4)), slot_size - slot_prefix_size - digest_size);
        put_sha256(file, slot, slot_prefix_size + length, slot + slot_size - digest_size);
    }
}

// Every application's first commands, as a terminal sends them; the VERIFY with a wrong PIN and GET
// CHALLENGE change non-volatile state (the try counter, the random reserve), so the card commits.
void session(cos::VirtualCard& card) {
    for (const char* command : {"00A4040008A00000063201010500", "805C000204", "00B0950000", "00B201C400", "0020000003999999", "0084000008",
                                "00A404000F7378312E73682EC9E7BBE1B1A3D5CF00", "00B2013000", "00A4040010A0000006324D4F542E435053414D303100",
                                "00B0960006", "00B0970002"}) {
        const Bytes response = card.transmit(hex(command));
        if (response.size() < 2) fuzz::fail(target, std::string("no status word for ") + command);
    }
}

bool same_state(const cos::Snapshot& a, const cos::Snapshot& b) {
    return a.kind == b.kind && a.asn == b.asn && a.balance_fen == b.balance_fen && a.online_atc == b.online_atc &&
           a.offline_atc == b.offline_atc && a.mac_failures == b.mac_failures && a.purse_locked == b.purse_locked &&
           a.pin_tries_left == b.pin_tries_left && a.terminal_id == b.terminal_id && a.terminal_serial == b.terminal_serial &&
           a.generation == b.generation;
}

void write_seeds(const std::filesystem::path& dir) {
    const nlohmann::json keys = {{"dpk", "00112233445566778899AABBCCDDEEFF"},  {"dlk", "0F0E0D0C0B0A09080706050403020100"},
                                 {"dtk", "A0A1A2A3A4A5A6A7A8A9AAABACADAEAF"},  {"iak", "B0B1B2B3B4B5B6B7B8B9BABBBCBDBEBF"},
                                 {"damk", "C0C1C2C3C4C5C6C7C8C9CACBCCCDCECF"}, {"ssse_iak", "D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF"}};
    const nlohmann::json card = {{"asn", "46010000000012345678"},
                                 {"issuer_id", "4600000000000001"},
                                 {"balance_fen", 1200},
                                 {"pin", "2468"},
                                 {"seed", "0102030405060708"},
                                 {"medical_account", "46010000000087654321"},
                                 {"cardholder", {{"name", "LI SI"}, {"ssn", "460100198002023456"}}},
                                 {"keys", keys}};
    nlohmann::json card_t0 = card;
    card_t0["protocol"] = "T=0";
    const nlohmann::json psam = {{"kind", "psam"},
                                 {"terminal_id", "460100000009"},
                                 {"purchase_key", "33445566778899AABBCCDDEEFF001122"},
                                 {"issuer_id", "4600000000000001"},
                                 {"terminal_serial", 7},
                                 {"seed", "0A0B0C0D"}};
    const auto seed = [&](std::string_view name, const nlohmann::json& profile, cos::ImageKind kind, std::uint8_t flags, bool used) {
        auto payload = cos::personalize(profile);
        if (!payload) fuzz::fail(target, "seed profile: " + payload.error());
        const auto path = scratch() / "seed.img";
        if (!cos::FileStorage::create(path, kind, *payload, true, seed_slot_size)) fuzz::fail(target, "seed image does not fit its slot");
        if (used) {
            auto opened = cos::VirtualCard::open(path);
            if (!opened) fuzz::fail(target, "seed image does not open: " + opened.error().message);
            session(**opened);  // both slots hold a state
        }
        std::ifstream in(path, std::ios::binary);
        Bytes input{flags};
        input.insert(input.end(), std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
        fuzz::write_seed(dir, name, input);
    };
    seed("card", card, cos::ImageKind::card, 0, false);
    seed("card-both-slots", card, cos::ImageKind::card, 0, true);
    seed("card-repair-slots", card, cos::ImageKind::card, 2, false);
    seed("card-t0-repair-all", card_t0, cos::ImageKind::card, 3, true);
    seed("psam", psam, cos::ImageKind::psam, 0, false);
    seed("psam-repair-slots", psam, cos::ImageKind::psam, 2, true);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    fuzz::write_seeds_if_requested(write_seeds);
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    fuzz::Reader input({data, size});
    const std::uint8_t flags = input.byte();
    const ByteView rest = input.rest();
    Bytes file(rest.begin(), rest.end());
    repair(file, flags);
    const auto path = scratch() / "card.img";
    fuzz::write_file(path, file);

    auto card = cos::VirtualCard::open(path);
    if (!card) {
        if (card.error().message.empty()) fuzz::fail(target, "a refusal without a message");
        return 0;
    }
    session(**card);
    const cos::Snapshot before = (*card)->snapshot();
    card->reset();
    auto again = cos::VirtualCard::open(path);
    if (!again) fuzz::fail(target, "an image the card committed to does not open again: " + again.error().message);
    if (!same_state((*again)->snapshot(), before)) fuzz::fail(target, "a reopened image holds another state than the card committed");
    return 0;
}
