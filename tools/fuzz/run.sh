#!/bin/sh
# Runs one libFuzzer target for a bounded time on a scratch copy of its committed seed corpus, after
# replaying its regression inputs (inputs that once crashed: each must pass before fuzzing starts).
#   tools/fuzz/run.sh --fuzzer EXE --seconds N --corpus DIR [--regressions DIR] [--dict FILE] [--max-len N]
#                     [-- LIBFUZZER_FLAG...]
# EXE is built by a clang build configured with -DCOCONUT_FUZZ=ON (and -DCOCONUT_SANITIZE=ON for ASan and
# UBSan); ctest runs this for every target registered with RUN_SECONDS (cmake/CoconutOptions.cmake).
# Exit status: 0 when libFuzzer finished without a crash, leak, timeout, out-of-memory or sanitizer report;
# otherwise libFuzzer's, with the crashing input left in the scratch directory (printed) for `EXE FILE`
# to replay. docs/FUZZING.md describes the targets and the long runs.
set -eu
usage="usage: run.sh --fuzzer EXE --seconds N --corpus DIR [--regressions DIR] [--dict FILE] [--max-len N] [-- FLAG...]"
fuzzer= seconds= corpus= regressions= dict= max_len= flags=
while [ $# -gt 0 ]; do
    case "$1" in
        --) shift; flags="$*"; break ;;
        --fuzzer) fuzzer=$2 ;;
        --seconds) seconds=$2 ;;
        --corpus) corpus=$2 ;;
        --regressions) regressions=$2 ;;
        --dict) dict=$2 ;;
        --max-len) max_len=$2 ;;
        *) echo "$usage" >&2; exit 2 ;;
    esac
    shift 2
done
[ -n "$fuzzer" ] && [ -n "$seconds" ] && [ -n "$corpus" ] || { echo "$usage" >&2; exit 2; }
[ -x "$fuzzer" ] || { echo "run.sh: $fuzzer not built (configure with CC=clang CXX=clang++ -DCOCONUT_FUZZ=ON)" >&2; exit 2; }
[ -d "$corpus" ] || { echo "run.sh: no seed corpus $corpus" >&2; exit 2; }
name=$(basename "$fuzzer")

scratch=$(mktemp -d "${TMPDIR:-/tmp}/coconut-fuzz-run.XXXXXX")
mkdir -p "$scratch/corpus" "$scratch/artifacts"
cp "$corpus"/* "$scratch/corpus/"
set --
if [ -n "$regressions" ] && [ -d "$regressions" ]; then set -- "$regressions"; fi
[ -z "$dict" ] || set -- -dict="$dict" "$@"
[ -z "$max_len" ] || set -- -max_len="$max_len" "$@"

status=0
UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1} \
ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} \
# shellcheck disable=SC2086  # the flags are separate words
"$fuzzer" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 $flags \
    -artifact_prefix="$scratch/artifacts/" "$scratch/corpus" "$@" || status=$?

if [ "$status" -ne 0 ]; then
    echo "run.sh: $name FAILED (status $status); artifacts in $scratch/artifacts:" >&2
    ls -l "$scratch/artifacts" >&2
    exit "$status"
fi
rm -rf "$scratch"
echo "run.sh: $name, no crash in ${seconds} s"
