#!/usr/bin/env python3
"""One compile command per source file, for clang-tidy, from a build's compile_commands.json.

The build compiles each target's sources in batches (CMake UNITY_BUILD, cmake/CoconutOptions.cmake), so
its compile_commands.json names generated Unity/unity_N_cxx.cxx files instead of the sources. Each
batch's command applies to every source it #includes; this writes that command once per source, so
clang-tidy checks each source as its own translation unit (as a build with -DCOCONUT_UNITY_BUILD=OFF
compiles it) without configuring a second build.

usage: compile_db.py BUILD_DIR OUT_DIR   (writes OUT_DIR/compile_commands.json)
"""
import json
import os
import re
import shlex
import sys

INCLUDE = re.compile(r'^#include "(?P<path>[^"]+)"\s*$')


def expand(entry):
    """The entry itself, or one entry per source a unity file includes."""
    unity = entry['file']
    if '/Unity/unity_' not in unity:
        return [entry]
    with open(unity, encoding='utf-8') as f:
        sources = [m['path'] for m in map(INCLUDE.match, f) if m]
    words = shlex.split(entry['command']) if 'command' in entry else list(entry['arguments'])
    out = []
    for source in sources:
        arguments = [source if word == unity else word for word in words]
        out.append({'directory': entry['directory'], 'file': source, 'arguments': arguments})
    return out


def main():
    build_dir, out_dir = sys.argv[1], sys.argv[2]
    with open(os.path.join(build_dir, 'compile_commands.json'), encoding='utf-8') as f:
        entries = json.load(f)
    expanded = [e for entry in entries for e in expand(entry)]
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, 'compile_commands.json'), 'w', encoding='utf-8') as f:
        json.dump(expanded, f, indent=1)


if __name__ == '__main__':
    main()
