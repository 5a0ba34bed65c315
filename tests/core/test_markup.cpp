// markup_escape: text inside XML and HTML.
#include <coconut/core/markup.hpp>

#include <doctest/doctest.h>

TEST_CASE("markup_escape: the five markup characters become entities, everything else stays as it is") {
    CHECK(coconut::markup_escape("") == "");
    CHECK(coconut::markup_escape("Haikou Bus") == "Haikou Bus");
    CHECK(coconut::markup_escape("Coconut & Co <Shop> \"A\" 'B'") == "Coconut &amp; Co &lt;Shop&gt; &quot;A&quot; &apos;B&apos;");
    CHECK(coconut::markup_escape("海口市人民医院") == "海口市人民医院");  // UTF-8 passes untouched
    CHECK(coconut::markup_escape("&amp;") == "&amp;amp;");                // escaped once per call, as given
}
