#!/usr/bin/env bash
# Runs every benchmark with RUNS repetitions (default 3) and prints all RESULT lines, then a
# Markdown table of them for docs/performance.md. The JSON files go to $BENCH_OUT.
#
# Usage: run-all.sh [RUNS]
#   BENCH_SHARE_FILES  files in shares.sh's tree (default 20000; it must fit under the hard
#                      open-file limit, see shares.sh and `hutch doctor`)
#   BENCH_SIZE_MIB     size of shares.sh's and port.sh's large file (default 500)
set -uo pipefail
: "${HUTCH:?HUTCH must name the hutch binary}"
dir=$(cd "$(dirname "$0")" && pwd)
runs=${1:-3}
files=${BENCH_SHARE_FILES:-20000}
size=${BENCH_SIZE_MIB:-500}
out=${BENCH_OUT:-${TMPDIR:-/tmp}/hutch-bench}
mkdir -p "$out"
echo "# run-all: cli ~1 min, latency ~5, shares ~$((8 + runs * 6)), port ~$((8 + runs * 2)), boot ~$((runs * 10)) minutes (TCG), plus load waits" >&2
: >"$out/results.txt"
failed=
for b in cli latency shares port boot; do
  case $b in
    shares) args=("$runs" "$files" "$size") ;;
    port) args=("$runs" "$size") ;;
    *) args=("$runs") ;;
  esac
  bash "$dir/$b.sh" "${args[@]}" | tee -a "$out/results.txt"
  [ "${PIPESTATUS[0]}" = 0 ] || failed="$failed $b"
done
python3 "$dir/table.py" "$out"/*.json
[ -z "$failed" ] || { echo "# run-all: failed:$failed" >&2; exit 1; }
