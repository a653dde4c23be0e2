#!/usr/bin/env bash
# Runs every fuzz target (tests/fuzz/fuzz-*.c) under libFuzzer with ASan+UBSan for a while
# each, starting from its committed corpus. Not part of tests/run (a fuzzer finds what it
# finds in the time it gets: that is no pass or fail of the tree); the unit suite replays the
# corpus instead. An input that breaks a property is left in WORK/TARGET/crash-*: copy it to
# tests/fuzz/corpus/TARGET/found-NAME with the fix, so that the unit suite keeps it.
#
#   tests/fuzz/run.sh [SECONDS [TARGET...]]   (default 60 s each, every target)
#
# Needs clang and its libFuzzer (Debian: clang, libclang-rt-14-dev). Builds in
# build-fuzz/ of the source tree; works in ${HUTCH_FUZZ_WORK:-/tmp/hutch-fuzz}, where the
# corpus grows (the committed one is only read).
set -euo pipefail

src=$(cd "$(dirname "$0")/../.." && pwd)
seconds=${1:-60}
shift || true
build=$src/build-fuzz
work=${HUTCH_FUZZ_WORK:-/tmp/hutch-fuzz}

if ! command -v clang >/dev/null; then
  echo "run.sh: clang is needed (apt-get install clang libclang-rt-14-dev)" >&2
  exit 2
fi
if [ ! -d "$build" ]; then
  CC=clang meson setup "$build" "$src" -Dfuzz=true -Db_sanitize=address,undefined \
    -Db_lundef=false >/dev/null
fi
ninja -C "$build" >/dev/null

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for f in "$src"/tests/fuzz/fuzz-*.c; do
    t=$(basename "$f" .c)
    targets+=("${t#fuzz-}")
  done
fi

failed=0
for t in "${targets[@]}"; do
  mkdir -p "$work/$t/corpus"
  cd "$work/$t"
  echo "== fuzz-$t, $seconds s"
  # -max_len: what one read from the guest holds, at most; UBSan's findings are fatal
  if ! UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    "$build/tests/fuzz/fuzz-$t" -max_total_time="$seconds" -max_len=8192 -print_final_stats=1 \
    -timeout=10 corpus "$src/tests/fuzz/corpus/$t" 2>fuzz.log; then
    echo "fuzz-$t: a property broke; the input: $(ls -t "$work/$t"/crash-* "$work/$t"/timeout-* "$work/$t"/leak-* 2>/dev/null | head -n 1)"
    grep -E "property broken|ERROR: |runtime error" fuzz.log | head -n 5
    failed=$((failed + 1))
  else
    grep -E "stat::number_of_executed_units|stat::new_units_added" fuzz.log | tr '\n' ' '
    echo
  fi
done
echo "$((${#targets[@]} - failed)) targets held, $failed broke"
[ "$failed" -eq 0 ]
