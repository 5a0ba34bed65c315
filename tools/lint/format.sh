#!/usr/bin/env bash
# clang-format 14 with the repository's .clang-format over the tracked C and C++ sources.
#
#   tools/lint/format.sh --check   lists the files clang-format would change; exits 1 if there are any
#   tools/lint/format.sh --fix     rewrites them in place
#   (either may be followed by paths, to restrict the run to files under them)
#
# Every tracked *.c, *.cc, *.cpp, *.h, *.hpp file is the project's own (no vendored or generated sources are
# tracked; CMake generates http_openapi.cpp into the build directory). Needs no build.
set -euo pipefail
cd "$(dirname "$0")/../.."

mode=${1:-}
case "$mode" in
  --check|--fix) shift ;;
  *) echo "usage: tools/lint/format.sh --check|--fix [PATH...]" >&2; exit 2 ;;
esac
clang_format=$(command -v clang-format-14 || command -v clang-format || true)
if [ -z "$clang_format" ]; then
  echo "format.sh: clang-format 14 not found (Debian package clang-format-14; tools/setup.sh installs it)" >&2
  exit 2
fi

mapfile -t files < <(git ls-files -- "$@" | grep -E '\.(c|cc|cpp|h|hpp)$')
if [ ${#files[@]} -eq 0 ]; then
  echo "format.sh: no C/C++ files under ${*:-.}" >&2
  exit 2
fi

if [ "$mode" = --fix ]; then
  printf '%s\0' "${files[@]}" | xargs -0 -P 2 -n 16 "$clang_format" -i --style=file
  echo "format.sh: formatted ${#files[@]} files"
  exit 0
fi

# --dry-run names each file once per change; list each file once.
mapfile -t unformatted < <(printf '%s\0' "${files[@]}" |
  xargs -0 -P 2 -n 16 "$clang_format" --dry-run --style=file 2>&1 |
  sed -nE 's/^([^:]+):[0-9]+:[0-9]+: (warning|error): .*/\1/p' | sort -u)
if [ ${#unformatted[@]} -gt 0 ]; then
  printf '%s\n' "${unformatted[@]}"
  echo "format.sh: ${#unformatted[@]} of ${#files[@]} files need formatting (tools/lint/format.sh --fix)" >&2
  exit 1
fi
echo "format.sh: ${#files[@]} files formatted"
