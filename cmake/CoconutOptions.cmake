# Compile settings shared by every target of the project: `coconut::options`, given to each of them
# privately by coconut_apply_options() below, so none of it reaches a program built against the SDK
# (installed, or vendored with add_subdirectory): not the warnings, not the `-include` below.
add_library(coconut_options INTERFACE)
add_library(coconut::options ALIAS coconut_options)
target_compile_options(coconut_options INTERFACE -Wall -Wextra -Wpedantic)

# Warnings as errors: on in CI (.ci/run, through tools/test.sh's COCONUT_WERROR=ON), off by default so a
# developer's newer or older compiler does not stop the build over a warning it alone reports. Only the
# project's own targets link coconut::options; third-party headers are system includes and stay quiet.
option(COCONUT_WERROR "Treat compiler warnings in the project's own code as errors (-Werror)" OFF)
if(COCONUT_WERROR)
  target_compile_options(coconut_options INTERFACE -Werror)
endif()

# Unity build: each target's sources compiled in batches of up to 8 per translation unit, so the
# headers and the template code they share are compiled once per batch instead of once per file.
# Helpers in anonymous namespaces must therefore have names unique within their target; sources GCC
# would warn about in a batch are listed in cmake/CoconutBuildSpeed.cmake.
option(COCONUT_UNITY_BUILD "Compile each target's sources in batches (CMake UNITY_BUILD)" ON)
set(CMAKE_UNITY_BUILD ${COCONUT_UNITY_BUILD})

# Boost 1.74's asio/awaitable.hpp uses std::exchange without <utility> (docs/DESIGN.md §3). For the
# project's own sources only: no header installed with the SDK includes awaitable.hpp (test sdk_package
# compiles every one of them without this), and one that ever does must include <utility> itself first.
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

# coconut_add_fuzzer(name SOURCES source... LIBS libs... [RUN_SECONDS s [CORPUS dir] [RUN_ARGS args...]])
# A libFuzzer executable, only with COCONUT_FUZZ; tools/fuzz is on its include path (fuzz_support.hpp).
# With RUN_SECONDS, also a ctest test labelled `fuzz` (docs/FUZZING.md): tools/fuzz/run.sh fuzzes for that
# long from a scratch copy of CORPUS (default fuzz/corpus/<name> of the calling directory), after replaying
# fuzz/regressions/<name> when it exists. RUN_ARGS are passed on to run.sh (--dict FILE, --max-len N).
function(coconut_add_fuzzer name)
  cmake_parse_arguments(FUZZ "" "RUN_SECONDS;CORPUS" "SOURCES;LIBS;RUN_ARGS" ${ARGN})
  if(NOT COCONUT_FUZZ)
    return()
  endif()
  add_executable(${name} ${FUZZ_SOURCES})
  target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR}/tools/fuzz)
  target_link_libraries(${name} PRIVATE ${FUZZ_LIBS} coconut::options)
  target_link_options(${name} PRIVATE -fsanitize=fuzzer)
  if(NOT TARGET coconut_fuzzers)
    add_custom_target(coconut_fuzzers)
  endif()
  add_dependencies(coconut_fuzzers ${name})
  if(FUZZ_RUN_SECONDS)
    if(NOT FUZZ_CORPUS)
      set(FUZZ_CORPUS ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/corpus/${name})
    endif()
    set(regressions ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/regressions/${name})
    add_test(NAME ${name}
             COMMAND ${PROJECT_SOURCE_DIR}/tools/fuzz/run.sh --fuzzer $<TARGET_FILE:${name}> --seconds ${FUZZ_RUN_SECONDS}
                     --corpus ${FUZZ_CORPUS} --regressions ${regressions} ${FUZZ_RUN_ARGS})
    # The run, start-up and the replay of the corpus, with room for a loaded machine.
    math(EXPR timeout "${FUZZ_RUN_SECONDS} * 3 + 60")
    set_tests_properties(${name} PROPERTIES LABELS "fuzz" TIMEOUT ${timeout})
  endif()
endfunction()

# Gives coconut::options to every library and executable defined in this project's directories (not to a
# parent project's targets when the SDK is vendored with add_subdirectory), privately and for the build
# tree only ($<BUILD_INTERFACE:…>), so an installed static library does not ask for it either. Called once
# at the end of the top-level CMakeLists.txt, when every target exists.
function(coconut_apply_options)
  set(directories ${PROJECT_SOURCE_DIR})
  while(directories)
    list(POP_FRONT directories directory)
    get_property(subdirectories DIRECTORY ${directory} PROPERTY SUBDIRECTORIES)
    list(APPEND directories ${subdirectories})
    get_property(targets DIRECTORY ${directory} PROPERTY BUILDSYSTEM_TARGETS)
    foreach(target IN LISTS targets)
      get_target_property(type ${target} TYPE)
      if(type MATCHES "^(EXECUTABLE|STATIC_LIBRARY|SHARED_LIBRARY|MODULE_LIBRARY|OBJECT_LIBRARY)$")
        target_link_libraries(${target} PRIVATE $<BUILD_INTERFACE:coconut::options>)
      endif()
    endforeach()
  endwhile()
endfunction()
