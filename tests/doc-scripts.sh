#!/usr/bin/env bash
# tests/doc-scripts.sh: every script the documentation tells the reader to run directly (a
# line of a ```sh block in README.md or docs/*.md that starts with a path in this tree, after
# an optional `VAR=value` or `cd DIR &&`) is executable, so that it does not fail with
# "Permission denied". TAP.
set -uo pipefail
src=${HUTCH_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$src" || exit 1
n=0 failed=0
while IFS= read -r script; do
  n=$((n + 1))
  if [ -f "$script" ] && [ -x "$script" ]; then
    echo "ok $n - $script is executable"
  else
    echo "not ok $n - $script (run directly in the docs) is missing or not executable"
    failed=1
  fi
done < <(
  for doc in README.md docs/*.md; do
    awk '/^```/ { inblock = !inblock; next }
         inblock {
           sub(/^[ \t]*(\$ )?/, "")
           while ($1 ~ /^[A-Za-z_][A-Za-z0-9_]*=/) { sub(/^[^ \t]+[ \t]+/, "") }
           if ($1 ~ /^(\.\/)?(tests|tools|scripts|\.ci)\/[^ \t]*\.(sh|py)$|^\.\/[^ \t\/]*\.sh$|^tests\/run$/) {
             p = $1; sub(/^\.\//, "", p); print p
           }
         }' "$doc"
  done | sort -u)
[ "$n" -gt 0 ] || { echo "not ok 1 - found no script in the docs (the parser is broken)"; n=1; failed=1; }
echo "1..$n"
exit $failed
