// SHA-256: the FIPS 180-2 test vectors, parts against the concatenation, the incremental form, and
// threads hashing at once (each reuses its own context).
#include <coconut/core/sha256.hpp>

#include <doctest/doctest.h>

#include <thread>
#include <vector>

using namespace coconut;

TEST_CASE("SHA-256 test vectors") {
    CHECK(to_hex(sha256(text_bytes("abc"))) == "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD");
    CHECK(sha256_hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    CHECK(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq") ==
          "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

TEST_CASE("SHA-256 over parts and incrementally equals SHA-256 of the concatenation") {
    const Bytes a = hex("0102"), b = hex(""), c = hex("030405");
    const Sha256Digest whole = sha256(concat(a, b, c));
    CHECK(sha256({ByteView(a), ByteView(b), ByteView(c)}) == whole);
    Sha256 running;
    running.update(a);
    running.update(b);
    running.update(c);
    CHECK(running.finish() == whole);
    running.update(std::string_view("abc"));  // starts over after finish
    CHECK(running.finish() == sha256(text_bytes("abc")));
}

TEST_CASE("SHA-256 from several threads at once") {
    const Sha256Digest expected = sha256(text_bytes("coconut"));
    std::vector<std::thread> threads;
    std::vector<int> mismatches(4, 0);
    for (int t = 0; t < 4; ++t)
        threads.emplace_back([&, t] {
            for (int i = 0; i < 2000; ++i)
                if (sha256(text_bytes("coconut")) != expected) ++mismatches[static_cast<std::size_t>(t)];
        });
    for (auto& thread : threads) thread.join();
    CHECK(mismatches == std::vector<int>(4, 0));
}
