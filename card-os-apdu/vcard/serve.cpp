// serve IMAGE [--psam IMAGE2]: each image is a virtual ICC in one vpcd slot, on its own thread and TCP
// connection (slot 0 on --port, slot 1 on --port + 1). The main thread only waits for SIGTERM / SIGINT.
#include "commands.hpp"
#include "image_lock.hpp"
#include "vpcd_link.hpp"

#include <coconut/cos/card.hpp>

#include <netdb.h>
#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace coconut::vcard {

namespace {

using namespace std::chrono_literals;

// Reconnect back-off: pcscd needs ~60 ms to create its socket after start (docs/PCSC.md §4), so start short;
// cap at 1 s so a restarted pcscd sees the card again within about one of its 400 ms polls.
constexpr auto reconnect_delay_first = 50ms;
constexpr auto reconnect_delay_max = 1000ms;
constexpr auto connect_timeout = 2000ms;

struct Slot {
    std::string name;  // "card" / "psam", for logs
    std::string image_path;
    std::uint16_t port = 0;
    std::unique_ptr<cos::VirtualCard> card;
    ImageLock lock;
    bool power_cut = false;  // --tear-after fired: `card` is gone, the slot stays empty
};

// What the slot threads tell the main thread (which waits in sigwait): a planned power cut happened.
struct PowerCutNotice {
    std::atomic<bool> happened{false};
    pthread_t main_thread{};
};

const char* control_name(std::uint8_t code) {
    switch (static_cast<VpcdControl>(code)) {
        case VpcdControl::power_off: return "power off";
        case VpcdControl::power_on: return "power on";
        case VpcdControl::reset: return "reset";
        case VpcdControl::get_atr: return "get ATR";
    }
    return "unknown control";
}

// Serves one connected session until vpcd closes it or a stop is requested.
VpcdLink::Outcome serve_session(Slot& slot, VpcdLink& link, const StopSignal& stop, bool verbose) {
    Bytes message;
    message.reserve(vpcd_payload_max);
    for (;;) {
        const auto received = link.receive(message, stop);
        if (received != VpcdLink::Outcome::ok) return received;
        if (message.empty()) return VpcdLink::Outcome::closed;  // not sent by vpcd; treat as a hang-up
        if (message.size() == 1) {
            const std::uint8_t code = message[0];
            if (verbose && code != static_cast<std::uint8_t>(VpcdControl::get_atr)) {
                std::fprintf(stderr, "serve[%s]: %s\n", slot.name.c_str(), control_name(code));
            }
            switch (static_cast<VpcdControl>(code)) {
                case VpcdControl::power_off: slot.card->power_off(); break;
                // A cold start and a warm reset both begin with fresh volatile state.
                case VpcdControl::power_on: slot.card->reset(); break;
                case VpcdControl::reset: slot.card->reset(); break;
                case VpcdControl::get_atr: {
                    const Bytes atr = slot.card->atr();
                    if (auto sent = link.send(atr); sent != VpcdLink::Outcome::ok) return sent;
                    break;
                }
                default: std::fprintf(stderr, "serve[%s]: ignoring unknown vpcd control byte %02X\n", slot.name.c_str(), code);
            }
            continue;
        }
        Bytes response;
        try {
            response = slot.card->transmit(message);
        } catch (const cos::PowerCut&) {
            // No response: the card lost power inside the command. The caller drops the connection.
            slot.power_cut = true;
            return VpcdLink::Outcome::stopped;
        }
        if (response.size() > vpcd_payload_max) response = {0x67, 0x00};  // cannot be framed
        if (verbose) {
            std::fprintf(stderr, "serve[%s]: %s -> %s\n", slot.name.c_str(), to_hex(message).c_str(), to_hex(response).c_str());
        }
        if (auto sent = link.send(response); sent != VpcdLink::Outcome::ok) return sent;
    }
}

// Connects, serves, reconnects with back-off; returns when a stop is requested or the card lost power.
void run_slot(Slot& slot, const ServeOptions& options, const StopSignal& stop, PowerCutNotice& notice) {
    auto delay = std::chrono::milliseconds(reconnect_delay_first);
    bool reported_waiting = false;
    while (!stop.requested()) {
        VpcdLink link;
        if (auto failure = link.connect(options.host, slot.port, stop, connect_timeout)) {
            if (stop.requested()) break;
            if (!reported_waiting) {
                std::fprintf(stderr, "serve[%s]: waiting for vpcd at %s:%u (%s); is pcscd running?\n", slot.name.c_str(),
                             options.host.c_str(), slot.port, failure->c_str());
                reported_waiting = true;
            }
            if (!stop.sleep_for(delay)) break;
            delay = std::min(delay * 2, std::chrono::milliseconds(reconnect_delay_max));
            continue;
        }
        std::fprintf(stderr, "serve[%s]: %s inserted at %s:%u\n", slot.name.c_str(), slot.image_path.c_str(), options.host.c_str(),
                     slot.port);
        reported_waiting = false;
        delay = reconnect_delay_first;
        const auto outcome = serve_session(slot, link, stop, options.verbose);
        link.close();
        if (slot.power_cut) {
            // The connection is closed mid-command, as a card pulled out: vpcd drops the slot and pcscd
            // reports the card removed. The object that saw the cut is discarded (card.hpp).
            slot.card.reset();
            std::fprintf(stderr, "serve[%s]: card removed by the power cut; start coconut-vcard again on %s to re-insert it\n",
                         slot.name.c_str(), slot.image_path.c_str());
            notice.happened.store(true, std::memory_order_release);
            pthread_kill(notice.main_thread, SIGUSR1);
            return;
        }
        // Leaving the reader is a power cut for the card: volatile state goes, the image stays.
        slot.card->power_off();
        if (outcome == VpcdLink::Outcome::stopped) break;
        std::fprintf(stderr, "serve[%s]: vpcd connection %s; reconnecting\n", slot.name.c_str(),
                     outcome == VpcdLink::Outcome::closed ? "closed (pcscd stopped?)" : ("failed: " + link.last_error()).c_str());
        if (!stop.sleep_for(delay)) break;
    }
}

std::optional<std::string> resolve_check(const std::string& host) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* found = nullptr;
    if (const int rc = ::getaddrinfo(host.c_str(), nullptr, &hints, &found); rc != 0) return ::gai_strerror(rc);
    ::freeaddrinfo(found);
    return std::nullopt;
}

// --volatile: the image's current state in memory; nothing is ever written back.
Result<std::unique_ptr<cos::VirtualCard>, cos::ImageFailure> open_volatile(const std::string& image_path) {
    auto storage = cos::FileStorage::open(image_path);
    if (!storage) return Unexpected{storage.error()};
    auto loaded = storage.value()->load();
    if (!loaded) return Unexpected{loaded.error()};
    return cos::VirtualCard::in_memory(loaded.value().payload);
}

}  // namespace

int run_serve(const ServeOptions& options) {
    // A host name that does not resolve is a configuration error, not "pcscd is not up yet": say so now.
    if (auto failure = resolve_check(options.host)) {
        std::fprintf(stderr, "serve: --host %s: %s\n", options.host.c_str(), failure->c_str());
        return exit_failure;
    }
    std::vector<Slot> slots;
    slots.push_back(Slot{"card", options.card_image, options.port, nullptr, {}});
    if (!options.psam_image.empty()) {
        slots.push_back(Slot{"psam", options.psam_image, static_cast<std::uint16_t>(options.port + 1), nullptr, {}});
    }
    for (Slot& slot : slots) {
        // --volatile never writes the image, so it may share it; a durable serve must be its only writer.
        if (!options.volatile_images) {
            if (auto busy = ImageLock::acquire(slot.image_path, slot.lock)) {
                std::fprintf(stderr, "serve: %s\n", busy->c_str());
                return exit_failure;
            }
        }
        // The first image is the one --tear-after cuts; every durable image counts its writes for -v.
        const TearPlan tear = slot.port == options.port ? options.tear : TearPlan{};
        auto opened = options.volatile_images
                          ? open_volatile(slot.image_path)
                          : open_card_with_tear(slot.image_path, tear, "serve[" + slot.image_path + "]", options.verbose);
        if (!opened) {
            std::fprintf(stderr, "serve: %s\n", opened.error().message.c_str());
            return exit_failure;
        }
        slot.card = std::move(opened.value());
        if (slot.port == options.port && slot.card->kind() != cos::ImageKind::card) {
            std::fprintf(stderr,
                         "serve: note: %s is a PSAM; terminals expect the card in slot 0 and the PSAM in "
                         "slot 1 (--psam)\n",
                         slot.image_path.c_str());
        }
        slot.name = std::string(slot.card->kind() == cos::ImageKind::psam ? "psam" : "card") + ":" + std::to_string(slot.port);
    }

    // Block the stop signals in every thread; the main thread takes them with sigwait(), so no handler
    // runs in the middle of a card command.
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGUSR1);  // a slot thread's power-cut notice
    pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
    ::signal(SIGPIPE, SIG_IGN);

    if (options.volatile_images) {
        std::fprintf(stderr, "serve: --volatile: changes stay in memory and are lost at exit\n");
    }
    if (options.tear.armed()) {
        std::fprintf(stderr, "serve: --tear-after %llu: the power of %s goes at that durable write\n",
                     static_cast<unsigned long long>(options.tear.write_number), options.card_image.c_str());
    }
    StopSignal stop;
    PowerCutNotice notice;
    notice.main_thread = pthread_self();
    std::vector<std::thread> threads;
    for (Slot& slot : slots) threads.emplace_back([&slot, &options, &stop, &notice] { run_slot(slot, options, stop, notice); });

    int signal_number = 0;
    for (;;) {
        sigwait(&stop_signals, &signal_number);
        // A SIGUSR1 from outside is not a notice: keep serving.
        if (signal_number != SIGUSR1 || notice.happened.load(std::memory_order_acquire)) break;
    }
    if (signal_number == SIGUSR1) {
        std::fprintf(stderr, "serve: power cut injected; removing every card and exiting with %d\n", exit_power_cut);
    } else {
        std::fprintf(stderr, "serve: %s received, removing the card%s\n", signal_number == SIGINT ? "SIGINT" : "SIGTERM",
                     slots.size() > 1 ? "s" : "");
    }
    stop.request();
    for (auto& thread : threads) thread.join();
    return signal_number == SIGUSR1 ? exit_power_cut : exit_ok;
}

}  // namespace coconut::vcard
