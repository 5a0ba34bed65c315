#!/bin/sh
# Runs the APDU dispatcher fuzzer for a bounded time on a scratch copy of the committed seed corpus, after
# replaying card-os-apdu/fuzz/regressions/ (inputs that once crashed: each must pass before fuzzing starts).
#   tests/card-os-apdu/fuzz_run.sh BUILD_DIR [SECONDS]      (default 60 s)
# BUILD_DIR is a clang build configured with -DCOCONUT_FUZZ=ON (and -DCOCONUT_SANITIZE=ON for ASan+UBSan).
# Exit status: 0 when libFuzzer finished without a crash, leak, timeout or sanitizer report; the crashing
# input is left in the scratch directory (printed) for `fuzz_apdu_dispatcher <file>` to replay.
set -eu
build_dir=${1:?usage: fuzz_run.sh BUILD_DIR [SECONDS]}
seconds=${2:-60}
source_dir=$(cd "$(dirname "$0")/../.." && pwd)
fuzzer="$build_dir/card-os-apdu/fuzz_apdu_dispatcher"
[ -x "$fuzzer" ] || { echo "fuzz_run.sh: $fuzzer not built (configure with CC=clang CXX=clang++ -DCOCONUT_FUZZ=ON)" >&2; exit 2; }

scratch=$(mktemp -d "${TMPDIR:-/tmp}/coconut-fuzz.XXXXXX")
mkdir -p "$scratch/corpus" "$scratch/artifacts"
cp "$source_dir/card-os-apdu/fuzz/corpus/"* "$scratch/corpus/"

status=0
UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1} \
ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} \
"$fuzzer" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=1024 -print_final_stats=1 \
    -dict="$source_dir/card-os-apdu/fuzz/fuzz_apdu_dispatcher.dict" \
    -artifact_prefix="$scratch/artifacts/" "$scratch/corpus" "$source_dir/card-os-apdu/fuzz/regressions" || status=$?

if [ "$status" -ne 0 ]; then
    echo "fuzz_run.sh: FAILED (status $status); artifacts in $scratch/artifacts:" >&2
    ls -l "$scratch/artifacts" >&2
    exit "$status"
fi
rm -rf "$scratch"
echo "fuzz_run.sh: no crash in ${seconds} s"
