# Compile settings shared by every target: link `coconut::options`.
add_library(coconut_options INTERFACE)
add_library(coconut::options ALIAS coconut_options)
target_compile_options(coconut_options INTERFACE -Wall -Wextra -Wpedantic)

# Unity build: each target's sources compiled in batches of up to 8 per translation unit, so the
# headers and the template code they share are compiled once per batch instead of once per file.
# Helpers in anonymous namespaces must therefore have names unique within their target; sources GCC
# would warn about in a batch are listed in cmake/CoconutBuildSpeed.cmake.
option(COCONUT_UNITY_BUILD "Compile each target's sources in batches (CMake UNITY_BUILD)" ON)
set(CMAKE_UNITY_BUILD ${COCONUT_UNITY_BUILD})

# Precompiled headers (cmake/CoconutBuildSpeed.cmake): the third-party headers most translation units include.
# Off by default: on top of the unity build it did not pay (clean builds, user + sys CPU seconds:
# g++ tools/test.sh configuration 900 without, 936 with; clang ASan + fuzz targets 494 without, 491 with;
# GCC loads the whole 170 MB header into every translation unit).
option(COCONUT_PCH "Precompile the heavy third-party headers once per build directory" OFF)
set(COCONUT_PCH_HEADERS
  # First: Boost 1.74's asio/awaitable.hpp uses std::exchange without <utility> (DESIGN.md §3).
  <utility>
  <algorithm> <array> <atomic> <chrono> <cstdint> <cstring> <filesystem> <fstream> <functional>
  <iostream> <map> <memory> <mutex> <optional> <set> <sstream> <string> <string_view> <thread> <vector>
  <fmt/format.h> <nlohmann/json.hpp>
  <boost/asio/any_io_executor.hpp> <boost/asio/connect.hpp> <boost/asio/io_context.hpp>
  <boost/asio/ip/tcp.hpp> <boost/asio/post.hpp> <boost/asio/read.hpp> <boost/asio/steady_timer.hpp>
  <boost/asio/strand.hpp> <boost/asio/write.hpp>)
# Boost 1.74's asio/awaitable.hpp uses std::exchange without <utility> (DESIGN.md §3); with COCONUT_PCH
# the precompiled header includes <utility> first instead (a forced include before it would disable it).
if(NOT COCONUT_PCH)
  target_compile_options(coconut_options INTERFACE "$<$<COMPILE_LANGUAGE:CXX>:SHELL:-include utility>")
endif()

if(COCONUT_SANITIZE)
  target_compile_options(coconut_options INTERFACE -fsanitize=address,undefined -fno-omit-frame-pointer
                                                   -fno-sanitize-recover=undefined)
  target_link_options(coconut_options INTERFACE -fsanitize=address,undefined)
endif()

if(COCONUT_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "COCONUT_FUZZ needs clang: configure with CXX=clang++ CC=clang")
  endif()
  # Instrument every library for coverage; fuzz executables add -fsanitize=fuzzer themselves.
  target_compile_options(coconut_options INTERFACE -fsanitize=fuzzer-no-link)
endif()

# coconut_add_fuzzer(name source... LIBS libs...) — a libFuzzer executable, only with COCONUT_FUZZ.
function(coconut_add_fuzzer name)
  cmake_parse_arguments(FUZZ "" "" "SOURCES;LIBS" ${ARGN})
  if(NOT COCONUT_FUZZ)
    return()
  endif()
  add_executable(${name} ${FUZZ_SOURCES})
  target_link_libraries(${name} PRIVATE ${FUZZ_LIBS} coconut::options)
  target_link_options(${name} PRIVATE -fsanitize=fuzzer)
  if(NOT TARGET coconut_fuzzers)
    add_custom_target(coconut_fuzzers)
  endif()
  add_dependencies(coconut_fuzzers ${name})
endfunction()
