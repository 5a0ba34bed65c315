// The emulated card OS: one object per card (or PSAM) image, answering command APDUs exactly as a
// PBOC / T-Union e-purse card with the social-security application does (docs/CARD-SPEC.md).
//
//   auto card = coconut::cos::VirtualCard::open("alice.img");      // or in_memory(personalize(...))
//   Bytes response = card.value()->transmit(hex("00A4040008A000000632010105"));
//
// Every state-changing command commits its whole effect (balance, ATCs, log record, CAPP cache, PSAM
// serial, try counters) in ONE durable write before the response is produced. A power cut at any instant
// leaves the image before or after the command (see image.hpp for how).
#pragma once

#include <coconut/apdu/apdu.hpp>
#include <coconut/cos/image.hpp>
#include <coconut/core/result.hpp>

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace coconut::cos {

enum class Protocol : std::uint8_t { t0 = 0, t1 = 1 };

// What a test or a tool may read without APDUs (never key material).
struct Snapshot {
    ImageKind kind = ImageKind::card;
    std::string asn;  // 20 digits (card) / empty (PSAM)
    std::uint32_t balance_fen = 0;
    std::uint16_t online_atc = 0;
    std::uint16_t offline_atc = 0;
    std::uint8_t mac_failures = 0;
    bool purse_locked = false;
    std::uint8_t application_block = 0;  // APPLICATION BLOCK: 0 none, 1 temporary, 2 permanent
    std::uint8_t pin_tries_left = 0;
    std::string terminal_id;            // PSAM: 12 digits
    std::uint32_t terminal_serial = 0;  // PSAM: the serial the next 80 70 will use
    std::uint64_t generation = 0;       // commits since personalization
};

class VirtualCard {
public:
    // Opens an image file (refuses a missing, truncated or corrupt one with a specific message).
    static Result<std::unique_ptr<VirtualCard>, ImageFailure> open(const std::filesystem::path& image_path);
    // A card whose non-volatile memory is the given storage (tests: memory, fault-injecting storage).
    static Result<std::unique_ptr<VirtualCard>, ImageFailure> from_storage(std::unique_ptr<Storage> storage);
    // A card kept in memory only, from a personalized payload (benchmarks, fuzzing, simulation).
    static Result<std::unique_ptr<VirtualCard>, ImageFailure> in_memory(ByteView payload);

    ~VirtualCard();
    VirtualCard(const VirtualCard&) = delete;
    VirtualCard& operator=(const VirtualCard&) = delete;

    ImageKind kind() const;
    Protocol protocol() const;
    Bytes atr() const;

    // Raw command APDU → raw response APDU (data ‖ SW1 SW2). Never throws on any input; a malformed
    // command gets a status word (6700, 6A86, 6D00, 6E00 …). Throws PowerCut only from fault-injecting
    // storage, after which the object must be discarded and the image reopened.
    Bytes transmit(ByteView command_apdu);
    apdu::Response process(ByteView command_apdu);

    // Power off / warm reset: volatile state (selection, PIN verified, challenge, pending transaction,
    // T=0 response buffer) is lost, non-volatile state stays.
    void power_off();
    void reset();

    Snapshot snapshot() const;

    struct State;  // defined in the implementation

private:
    explicit VirtualCard(std::unique_ptr<State> state);
    std::unique_ptr<State> state_;
};

// Builds the image payload of a card or PSAM from a profile (the JSON documented in
// card-os-apdu/IMAGE-FORMAT.md). Every field is checked; an error names the field and the problem.
Result<Bytes, std::string> personalize(const nlohmann::json& profile);

// personalize() and write the image file (refuses to overwrite unless `overwrite`).
Status<ImageFailure> create_image(const std::filesystem::path& image_path, const nlohmann::json& profile, bool overwrite = false);

}  // namespace coconut::cos
