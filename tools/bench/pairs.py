#!/usr/bin/env python3
"""Alternated benchmark pairs: this build against a base build, in one run.

A change that should not move performance (a refactoring, a code move) is checked by running the same benchmark
from two builds alternately — base, this, this, base, base, this, … — so that the disk's slow phases and the
other load of the machine fall on both sides alike. For each table row that both builds print, every pair gives a
speed ratio (this build against the base: throughput this/base, latency base/this, so above 1 is faster) and the
script prints them side by side with their median.

  tools/bench/pairs.py --base-ref 794fdb8 --pairs 3 clearingd -- --uploads 64000 --rate 6000 --rate-seconds 5 --dir /var/tmp
  tools/bench/pairs.py --base-build /var/tmp/base/build --pairs 3 terminal -- --in-process 500 --skip-pcsc

--base-ref builds the base in a git worktree under /var/tmp (kept for the next run; same CMake flags as the
current build). Benchmarks: clearingd (tools/bench/clearingd_bench: rows' "per second", higher is better) and
terminal (tools/bench/terminal_bench: rows' "median us", lower is better). Results go to docs/BENCHMARKS.md with the
exact command.
"""
import argparse
import os
import re
import statistics
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCHES = {
    # name: (binary under the build dir, column index of the figure, True if higher is better)
    "clearingd": ("tools/bench/clearingd_bench", 2, True),
    "terminal": ("tools/bench/terminal_bench", 3, False),
}
TIMEOUT_S = 1800


def fail(message):
    print(f"pairs.py: {message}", file=sys.stderr)
    sys.exit(2)


def build_base(ref, targets):
    sha = subprocess.run(["git", "-C", REPO, "rev-parse", "--verify", f"{ref}^{{commit}}"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    if sha.returncode != 0:
        fail(f"--base-ref {ref}: not a commit of this repository")
    tree = f"/var/tmp/coconut-bench-base-{sha.stdout.strip()[:12]}"
    if not os.path.isdir(tree):
        subprocess.run(["git", "-C", REPO, "worktree", "add", "--detach", tree, sha.stdout.strip()], check=True)
    build = os.path.join(tree, "build")
    subprocess.run(["cmake", "-S", tree, "-B", build, "-G", "Ninja", "-DCOCONUT_BENCH=ON",
                    "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O2 -g1 -DNDEBUG"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["ninja", "-C", build] + targets, check=True)
    return build


def rows(output, column):
    """{row name: figure} from the benchmark's markdown table rows (the figure column must be numeric)."""
    found = {}
    for line in output.splitlines():
        if not line.startswith("| ") or line.startswith("|-"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) <= column or not re.fullmatch(r"[0-9]+(\.[0-9]+)?", cells[column]):
            continue
        found[cells[0]] = float(cells[column])
    return found


def run(binary, args, log_path):
    started = subprocess.run([binary] + args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             timeout=TIMEOUT_S)
    with open(log_path, "w") as log:
        log.write(started.stdout)
    if started.returncode != 0:
        fail(f"{binary} exited {started.returncode}; its output: {log_path}")
    return started.stdout


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bench", choices=sorted(BENCHES))
    parser.add_argument("--base-ref", help="git commit to build as the base (in a worktree under /var/tmp)")
    parser.add_argument("--base-build", help="an existing build directory of the base")
    parser.add_argument("--build", default=os.path.join(REPO, "build"), help="this build's directory (default build)")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--logs", default="/var/tmp/coconut-bench-pairs", help="where each run's output is kept")
    parser.add_argument("bench_args", nargs=argparse.REMAINDER, help="-- then the benchmark's own arguments")
    options = parser.parse_args()
    if (options.base_ref is None) == (options.base_build is None):
        fail("give exactly one of --base-ref and --base-build")
    if options.pairs < 1:
        fail("--pairs must be at least 1")
    binary, column, higher_is_better = BENCHES[options.bench]
    bench_args = options.bench_args[1:] if options.bench_args[:1] == ["--"] else options.bench_args
    base_build = options.base_build or build_base(options.base_ref, [os.path.basename(binary)])
    binaries = {"base": os.path.join(base_build, binary), "this": os.path.join(options.build, binary)}
    for side, path in binaries.items():
        if not os.access(path, os.X_OK):
            fail(f"{side} build has no {path}")
    os.makedirs(options.logs, exist_ok=True)

    ratios = {}  # row -> [ratio per pair]
    figures = {}  # row -> {"base": [...], "this": [...]}
    for pair in range(options.pairs):
        order = ["base", "this"] if pair % 2 == 0 else ["this", "base"]
        results = {}
        for side in order:
            log_path = os.path.join(options.logs, f"{options.bench}-{pair + 1}-{side}.txt")
            print(f"pair {pair + 1}/{options.pairs}: {side} ({binaries[side]})", file=sys.stderr, flush=True)
            results[side] = rows(run(binaries[side], bench_args, log_path), column)
        for name in results["base"]:
            if name not in results["this"]:
                continue
            base, this = results["base"][name], results["this"][name]
            figures.setdefault(name, {"base": [], "this": []})
            figures[name]["base"].append(base)
            figures[name]["this"].append(this)
            if base > 0 and this > 0:
                ratios.setdefault(name, []).append(this / base if higher_is_better else base / this)

    unit = "per second" if higher_is_better else "median us"
    print(f"\n{options.bench}: {options.pairs} alternated pairs, {unit}; ratio = speed of this build against the base "
          f"(above 1 is faster)\n")
    print(f"| row | base ({unit}) | this ({unit}) | ratio per pair | median ratio |")
    print("|---|---|---|---|---|")
    for name, per_pair in ratios.items():
        base_list = " · ".join(f"{v:,.0f}" if higher_is_better else f"{v:,.1f}" for v in figures[name]["base"])
        this_list = " · ".join(f"{v:,.0f}" if higher_is_better else f"{v:,.1f}" for v in figures[name]["this"])
        pair_list = " · ".join(f"{r:.2f}" for r in per_pair)
        print(f"| {name} | {base_list} | {this_list} | {pair_list} | {statistics.median(per_pair):.2f} |")
    if not ratios:
        fail("no table row appeared in both builds' output")


if __name__ == "__main__":
    main()
