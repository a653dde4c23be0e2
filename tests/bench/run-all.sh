#!/usr/bin/env bash
# Runs every benchmark with RUNS repetitions (default 3) and prints all RESULT lines, then a
# Markdown table of them for docs/performance.md. The JSON files go to $BENCH_OUT.
#
# Usage: run-all.sh [RUNS]
set -uo pipefail
: "${HUTCH:?HUTCH must name the hutch binary}"
dir=$(cd "$(dirname "$0")" && pwd)
runs=${1:-3}
out=${BENCH_OUT:-${TMPDIR:-/tmp}/hutch-bench}
mkdir -p "$out"
echo "# run-all: cli ~1 min, latency ~5, shares ~$((4 + runs * 5)), port ~$((8 + runs)), boot ~$((runs * 10)) minutes (TCG), plus load waits" >&2
: >"$out/results.txt"
for b in cli latency shares port boot; do
  bash "$dir/$b.sh" "$runs" | tee -a "$out/results.txt"
done
python3 "$dir/table.py" "$out"/*.json
