#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: installs what is missing, builds, runs.
#   1. build/       g++, warnings on, benchmarks compiled: every ctest test (unit, integration, slow)
#   2. build-asan/  clang with ASan + UBSan and libFuzzer: the unit tests again, then each fuzz target
#                   for a bounded time (label "fuzz")
# Environment: COCONUT_SKIP_ASAN=1 skips step 2 (quick local runs); JOBS overrides the parallelism;
# COCONUT_WERROR=ON makes step 1's warnings errors (.ci/run sets it; cmake/CoconutOptions.cmake).
set -euo pipefail
cd "$(dirname "$0")/.."

tools/setup.sh
jobs=${JOBS:-$(nproc)}

# Line tables only (-g1): backtraces, perf and sanitizer reports keep file:line, and the suite compiles
# about a third faster than with full debug information (configure -DCMAKE_BUILD_TYPE=Debug to debug).
# COCONUT_WERROR is always passed, so a build directory CI configured with it does not keep it.
cmake -S . -B build -G Ninja -DCOCONUT_BENCH=ON -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -g1 -DNDEBUG" \
  -DCOCONUT_WERROR="${COCONUT_WERROR:-OFF}" >/dev/null
ninja -C build -j "$jobs"
ctest --test-dir build --output-on-failure -j "$jobs"

if [ "${COCONUT_SKIP_ASAN:-0}" != 1 ]; then
  CC=clang CXX=clang++ cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG=-gline-tables-only \
    -DCOCONUT_SANITIZE=ON -DCOCONUT_FUZZ=ON >/dev/null
  # Only what the sanitizer step runs: the unit-test executables and the fuzzers (not every tool again).
  ninja -C build-asan -j "$jobs" coconut_unit_tests coconut_fuzzers
  export ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  ctest --test-dir build-asan --output-on-failure -j "$jobs" -L unit -LE slow
  ctest --test-dir build-asan --output-on-failure -j "$jobs" -L fuzz
fi
echo "test.sh: all tests passed"
