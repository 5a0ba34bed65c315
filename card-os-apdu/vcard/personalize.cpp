// personalize and info: the two subcommands that touch an image without APDUs.
#include "commands.hpp"
#include "image_lock.hpp"

#include <coconut/cos/card.hpp>

#include <nlohmann/json.hpp>

#include <cstdio>
#include <fstream>
#include <sstream>

namespace coconut::vcard {

namespace {

// A profile is a few hundred bytes; anything this large is not a profile.
constexpr std::streamsize profile_size_max = 1 << 20;

const char* kind_name(cos::ImageKind kind) { return kind == cos::ImageKind::psam ? "psam" : "card"; }

}  // namespace

int run_personalize(const std::string& profile_path, const std::string& image_path, bool force) {
    std::ifstream in(profile_path, std::ios::binary);
    if (!in) {
        std::fprintf(stderr, "personalize: cannot read profile %s\n", profile_path.c_str());
        return exit_failure;
    }
    std::ostringstream text;
    text << in.rdbuf();
    if (static_cast<std::streamsize>(text.str().size()) > profile_size_max) {
        std::fprintf(stderr, "personalize: profile %s is larger than %lld bytes\n", profile_path.c_str(),
                     static_cast<long long>(profile_size_max));
        return exit_failure;
    }
    nlohmann::json profile;
    try {
        profile = nlohmann::json::parse(text.str());
    } catch (const nlohmann::json::parse_error& error) {
        std::fprintf(stderr, "personalize: profile %s is not valid JSON: %s\n", profile_path.c_str(), error.what());
        return exit_failure;
    }
    if (!profile.is_object()) {
        std::fprintf(stderr, "personalize: profile %s must be a JSON object\n", profile_path.c_str());
        return exit_failure;
    }
    // --force over an image that a serve or shell is using would leave that process committing into the
    // replaced (unlinked) file: refuse instead.
    ImageLock lock;
    if (auto busy = ImageLock::acquire(image_path, lock)) {
        std::fprintf(stderr, "personalize: %s\n", busy->c_str());
        return exit_failure;
    }
    auto created = cos::create_image(image_path, profile, force);
    if (!created) {
        std::fprintf(stderr, "personalize: %s\n", created.error().message.c_str());
        return exit_failure;
    }
    // Read the new image back: what was written is what the card will load.
    auto card = cos::VirtualCard::open(image_path);
    if (!card) {
        std::fprintf(stderr, "personalize: written image does not load: %s\n", card.error().message.c_str());
        return exit_failure;
    }
    const cos::Snapshot snapshot = card.value()->snapshot();
    if (snapshot.kind == cos::ImageKind::card) {
        std::printf("personalized card %s, balance %u fen -> %s\n", snapshot.asn.c_str(), snapshot.balance_fen, image_path.c_str());
    } else {
        std::printf("personalized psam, terminal %s -> %s\n", snapshot.terminal_id.c_str(), image_path.c_str());
    }
    return exit_ok;
}

int run_info(const std::string& image_path, bool as_json) {
    auto card = cos::VirtualCard::open(image_path);
    if (!card) {
        std::fprintf(stderr, "info: %s\n", card.error().message.c_str());
        return exit_failure;
    }
    const cos::Snapshot s = card.value()->snapshot();
    const char* protocol = card.value()->protocol() == cos::Protocol::t0 ? "T=0" : "T=1";
    const std::string atr = to_hex(card.value()->atr());
    nlohmann::ordered_json out;
    out["kind"] = kind_name(s.kind);
    out["protocol"] = protocol;
    out["atr"] = atr;
    if (s.kind == cos::ImageKind::card) {
        out["asn"] = s.asn;
        out["balance_fen"] = s.balance_fen;
        out["online_atc"] = s.online_atc;
        out["offline_atc"] = s.offline_atc;
        out["pin_tries_left"] = s.pin_tries_left;
        out["mac_failures"] = s.mac_failures;
        out["purse_locked"] = s.purse_locked;
        out["application_block"] = s.application_block;  // 0 none, 1 temporary, 2 permanent
    } else {
        out["terminal_id"] = s.terminal_id;
        out["terminal_serial"] = s.terminal_serial;
    }
    out["generation"] = s.generation;
    if (as_json) {
        std::printf("%s\n", out.dump().c_str());
        return exit_ok;
    }
    for (const auto& [key, value] : out.items()) {
        std::printf("%s: %s\n", key.c_str(), value.is_string() ? value.get<std::string>().c_str() : value.dump().c_str());
    }
    return exit_ok;
}

}  // namespace coconut::vcard
