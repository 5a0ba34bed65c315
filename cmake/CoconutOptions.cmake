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

# Boost 1.74's asio/awaitable.hpp uses std::exchange without <utility> (DESIGN.md §3).
target_compile_options(coconut_options INTERFACE "$<$<COMPILE_LANGUAGE:CXX>:SHELL:-include utility>")

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
