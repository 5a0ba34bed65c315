// What the examples take for a card or a PSAM: a card image file (`coconut-vcard personalize`), whose card
// OS then runs in this process, or else the name of a PC/SC reader (pcscd: a real reader, or
// "Virtual PCD 00 00" for a card served with `coconut-vcard serve`).
#pragma once

#include <coconut/cos/card.hpp>
#include <coconut/sdk/reader.hpp>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

struct ExampleReader {
    std::unique_ptr<coconut::cos::VirtualCard> card;  // the in-process card, for an image file
    std::unique_ptr<coconut::sdk::Reader> reader;
};

inline ExampleReader open_reader(const std::string& image_or_reader) {
    ExampleReader opened;
    if (std::filesystem::is_regular_file(image_or_reader)) {
        auto card = coconut::cos::VirtualCard::open(image_or_reader);
        if (!card) {
            std::fprintf(stderr, "%s\n", card.error().message.c_str());
            std::exit(1);
        }
        opened.card = std::move(card).value();
        opened.reader = std::make_unique<coconut::sdk::InProcessReader>(image_or_reader, opened.card.get());
        return opened;
    }
    auto reader = coconut::sdk::PcscReader::open(image_or_reader);
    if (!reader) {
        std::fprintf(stderr, "reader '%s': %s\n", image_or_reader.c_str(), reader.error().message.c_str());
        std::exit(1);
    }
    opened.reader = std::move(reader).value();
    return opened;
}
