#!/usr/bin/env bash
# clang-tidy 14 with the repository's .clang-tidy over the library sources: every component's src/
# (core, card-os-apdu, hsm-stub, terminal-sdk, clearing, settlement). Exits non-zero on any finding.
#
#   tools/lint/tidy.sh [--build DIR] [-j N] [PATH_PREFIX...]
#
# Needs a configured build (DIR, default build/: its compile_commands.json; no compile is needed).
# PATH_PREFIXes (relative to the repository, e.g. clearing/iso8583 hsm-stub) restrict the run to those
# sources. Tests, benchmarks and the command-line front ends (vcard, tools/, cli/) are not checked: the
# test suite runs them end to end, and the run must stay within CI's lint budget (about 5 minutes on
# the 2-core CI machine; the sources below take about half of that).
# Headers are checked through the sources that include them (.clang-tidy's HeaderFilterRegex).
set -euo pipefail
cd "$(dirname "$0")/../.."

build=build
jobs=2
prefixes=()
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=$2; shift 2 ;;
    -j) jobs=$2; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) prefixes+=("${1%/}"); shift ;;
  esac
done

if [ ! -f "$build/compile_commands.json" ]; then
  echo "tidy.sh: $build/compile_commands.json missing: configure the build first (tools/test.sh does)" >&2
  exit 2
fi
# One compile command per source (the build compiles them in unity batches).
python3 tools/lint/compile_db.py "$build" "$build/lint"

root=$(pwd)
mapfile -t sources < <(python3 - "$build/lint/compile_commands.json" "$root" "${prefixes[@]}" <<'EOF'
import json, re, sys
db, root, prefixes = sys.argv[1], sys.argv[2] + '/', sys.argv[3:]
library = re.compile(r'^(core|card-os-apdu|hsm-stub|terminal-sdk|clearing|settlement)/(.+/)?src/.+\.cpp$')
seen = set()
for entry in json.load(open(db)):
    path = entry['file']
    if not path.startswith(root):
        continue  # generated sources in the build directory
    relative = path[len(root):]
    if not library.match(relative) or relative in seen:
        continue
    if prefixes and not any(relative == p or relative.startswith(p + '/') for p in prefixes):
        continue
    seen.add(relative)
    print(relative)
EOF
)
if [ ${#sources[@]} -eq 0 ]; then
  echo "tidy.sh: no library sources match ${prefixes[*]:-}" >&2
  exit 2
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
start=$(date +%s)
status=0
printf '%s\n' "${sources[@]}" |
  xargs -P "$jobs" -n 1 clang-tidy-14 -p "$build/lint" --quiet >"$log" 2>/dev/null || status=$?
elapsed=$(( $(date +%s) - start ))

# A finding in a header is reported once per source including it: count each once.
# (grep exits 1 when there is none: under pipefail that must not end the script.)
findings=$({ grep -E '^[^ ].*:[0-9]+:[0-9]+: (warning|error): ' "$log" || true; } | sort -u | wc -l)
if [ "$status" -ne 0 ] || [ "$findings" -ne 0 ]; then
  cat "$log"
  echo "tidy.sh: $findings finding(s) in ${#sources[@]} sources (${elapsed} s)" >&2
  exit 1
fi
echo "tidy.sh: ${#sources[@]} sources clean (${elapsed} s)"
