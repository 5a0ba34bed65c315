#!/usr/bin/python3
"""The repository stands on its own: no tracked file cites a document the repository does not contain.

Fails (exit 1, one line per finding) when a tracked file
  - anywhere: cites ../shared/… (a folder outside the repository);
  - outside docs/: names the design documents by a bare name instead of their path in the repository
    (`DESIGN.md §4`, `CARD-SPEC §2`, `REFERENCES.md`, `PCSC.md`, … — write docs/DESIGN.md §4), names
    STYLE.md / TLS.md / NATS.md (not in the repository), or refers to an issue number, a "contract N"
    or a session brief — state the rule itself or cite the README section that states it.

Usage: test_self_contained.py [SOURCE_DIR]   (default: the repository holding this file)
"""
import os
import re
import subprocess
import sys

SELF = os.path.abspath(__file__)

# Anywhere, docs/ included.
EVERYWHERE = [
    (re.compile(r"\.\./shared\b|/work/shared\b"), "a path outside the repository"),
]
# Outside docs/.
OUTSIDE_DOCS = [
    # A bare document name (not preceded by a path such as docs/ or ../docs/).
    (re.compile(r"(?<![\w/.-])(?:DESIGN|CARD-SPEC|REFERENCES|PCSC)\.md"), "cite docs/<NAME>.md"),
    (re.compile(r"(?<![\w/.-])(?:DESIGN|CARD-SPEC) ?(?:§|section\b)"), "cite docs/<NAME>.md §N"),
    (re.compile(r"(?<![\w/.-])CARD-SPEC(?![\w.-])"), "cite docs/CARD-SPEC.md"),
    (re.compile(r"(?<![\w/.-])(?:STYLE|TLS|NATS)\.md"), "a document the repository does not contain"),
    (re.compile(r"\b[Ii]ssue[- ]#?\d|\b[Ii]ssues #\d"), "an issue number: state the rule itself"),
    (re.compile(r"\b[Cc]ontract \d"), "a 'contract N': cite the README section that states it"),
    (re.compile(r"\bsession brief\b|\bthe brief\b", re.IGNORECASE), "a session brief: state the rule itself"),
]


def tracked_files(root):
    try:
        out = subprocess.run(["git", "-C", root, "ls-files", "-z"], capture_output=True, check=True).stdout
        return [p for p in out.decode("utf-8", "replace").split("\0") if p]
    except (OSError, subprocess.CalledProcessError):
        files = []
        for base, dirs, names in os.walk(root):
            dirs[:] = [d for d in dirs if d != ".git" and not d.startswith("build") and d != "demo-run"]
            files += [os.path.relpath(os.path.join(base, n), root) for n in names]
        return files


def main():
    root = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(SELF), "..", ".."))
    findings = []
    checked = 0
    for rel in tracked_files(root):
        path = os.path.join(root, rel)
        if os.path.abspath(path) == SELF or not os.path.isfile(path):
            continue
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (UnicodeDecodeError, OSError):
            continue  # binary (fuzz corpora, images): nothing to cite
        checked += 1
        rules = EVERYWHERE + ([] if rel.startswith("docs/") else OUTSIDE_DOCS)
        for number, line in enumerate(text.splitlines(), 1):
            for pattern, why in rules:
                match = pattern.search(line)
                if match:
                    findings.append(f"{rel}:{number}: {match.group(0)!r}: {why}: {line.strip()[:160]}")
    for finding in findings:
        print(finding)
    print(f"self-contained: {checked} tracked text files checked, {len(findings)} findings")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
