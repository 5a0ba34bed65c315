// libFuzzer target for the ISO 8583 codec. Properties checked on every input:
//   - parse never crashes, whatever the bytes (both dictionaries);
//   - what parses re-encodes to exactly the same bytes (parse and encode apply the same rules);
//   - frame_size never announces more than the buffer or frame_size_max.
#include <coconut/iso8583/iso8583.hpp>

#include <cstdlib>

using namespace coconut;
using namespace coconut::iso8583;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const ByteView input(data, size);
    for (const Dictionary* dictionary : {&iso87_dictionary(), &coconut_dictionary()}) {
        auto parsed = parse(input, *dictionary);
        if (!parsed) continue;
        auto encoded = encode(*parsed, *dictionary);
        if (!encoded || !std::equal(encoded->begin(), encoded->end(), input.begin(), input.end())) std::abort();
    }
    auto framed = frame_size(input);
    if (framed && (*framed > size || *framed > frame_size_max)) std::abort();
    return 0;
}
