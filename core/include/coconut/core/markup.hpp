// Text placed inside XML or HTML (bank files, reports, letters): the five characters markup gives a
// meaning to, as entities.
#pragma once

#include <string>
#include <string_view>

namespace coconut {

// & < > " ' → &amp; &lt; &gt; &quot; &apos; — safe in element content and in quoted attribute values.
std::string markup_escape(std::string_view text);

}  // namespace coconut
