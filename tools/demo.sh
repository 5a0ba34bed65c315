#!/usr/bin/env bash
# The card demo (README main job): install the Debian packages, build coconut-vcard and the demo, then
# personalize a card and a PSAM, read them through pcscd + vpcd, and run a load and a purchase through
# the APDU shell. Needs root (or sudo) for setup.sh and for pcscd's /run/pcscd.
#   BUILD_DIR   build directory (default: build)
#   DEMO_DIR    work directory for profiles, images and logs (default: demo-run, git-ignored)
#   extra arguments go to coconut-card-demo (e.g. --skip-pcsc)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
build_dir="${BUILD_DIR:-$repo/build}"
demo_dir="${DEMO_DIR:-$repo/demo-run}"

"$repo/tools/setup.sh"
cmake -S "$repo" -B "$build_dir" -G Ninja
cmake --build "$build_dir" --target coconut-vcard coconut-card-demo
exec "$build_dir/tools/card-demo/coconut-card-demo" \
  --vcard "$build_dir/card-os-apdu/coconut-vcard" --work-dir "$demo_dir" "$@"
