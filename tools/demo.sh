#!/usr/bin/env bash
# The README's main job: a whole island day end to end (`coconut demo`). Installs the Debian packages,
# builds coconut and the daemons it runs, then: coconut-hsmd and coconut-clearingd on free loopback ports,
# the key ceremony, 1,000 cards and the terminals' PSAMs issued with HSM-derived keys, a simulated day of
# ≥ 100,000 card transactions through the terminal SDK (with torn taps and lost network messages),
# uploads, the cardholder API checked with the cards' tokens, ledger check, cards = shadows, money
# conservation, then the night: coconut-settle run against the live daemon (posting through its clerk API),
# coconut-settle reconcile against the bank's camt.053, the checks again, a summary. About 35 s of work once
# built on 2 cores (day size). Needs root (or sudo) for setup.sh.
#   BUILD_DIR   build directory (default: build)
#   DEMO_DIR    the island directory (default: demo-run, git-ignored; replaced on every run)
#   extra arguments go to `coconut demo` (e.g. --size small, --seed N)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
build_dir="${BUILD_DIR:-$repo/build}"
demo_dir="${DEMO_DIR:-$repo/demo-run}"

"$repo/tools/setup.sh"
cmake -S "$repo" -B "$build_dir" -G Ninja
cmake --build "$build_dir" --target coconut coconut-settle
rm -rf "$demo_dir"
exec "$build_dir/tools/coconut/coconut" demo --dir "$demo_dir" "$@"
