#!/usr/bin/env python3
"""Counts the TAP subtests of meson test logs and prints 'N passed, N failed, N skipped'.

meson reports one result per test program; each program runs many TAP subtests, and CI
counts those. A program that failed without any 'not ok' line (crashed, timed out, ASan
abort) counts as one failure."""
import json
import re
import sys

passed = failed = skipped = 0
for path in sys.argv[1:]:
    try:
        lines = open(path).read().splitlines()
    except FileNotFoundError:
        continue
    for line in lines:
        entry = json.loads(line)
        out = entry.get("stdout") or ""
        ok = len(re.findall(r"^ok \d+(?! .*# (?i:skip))", out, re.M))
        skip = len(re.findall(r"^ok \d+.*# (?i:skip)", out, re.M))
        bad = len(re.findall(r"^not ok \d+", out, re.M))
        if entry["result"] in ("FAIL", "TIMEOUT", "ERROR") and bad == 0:
            bad = 1
        if entry["result"] == "SKIP" and ok + bad + skip == 0:
            skip = 1
        passed += ok
        failed += bad
        skipped += skip
print(f"{passed} passed, {failed} failed, {skipped} skipped")
