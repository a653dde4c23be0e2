#!/usr/bin/env python3
"""Prints the Markdown table of docs/performance.md from benchmark JSON files.

Usage: table.py FILE.json...
"""
import json
import sys


def fmt(x):
    if x is None:
        return "n/a"
    return "%.3f" % x if abs(x) < 10 else "%.1f" % x


def main():
    docs = [json.load(open(p)) for p in sys.argv[1:]]
    print("| benchmark | measure | hutch | baseline | ratio | unit | runs | load (1 min) |")
    print("|---|---|---|---|---|---|---|---|")
    for doc in docs:
        for r in doc["results"]:
            loads = [s["load"] for s in r["samples"]]
            runs = len([s for s in r["samples"] if s["side"] == "hutch"])
            ratio = "n/a" if r["ratio"] is None else "%.2f" % r["ratio"]
            print(f"| {doc['benchmark']} | {r['name']} | {fmt(r['hutch'])} | {fmt(r['baseline'])} "
                  f"| {ratio} | {r['unit']} | {runs} | {min(loads):.1f}-{max(loads):.1f} |")
    if docs:
        m = docs[0]["machine"]
        print(f"\n{m['cpu']}, {m['cores']} cores, {m['memory_mib']} MiB, kernel {m['kernel']}, "
              f"accelerator {docs[0]['accel']}, {docs[0]['date']}")


if __name__ == "__main__":
    main()
