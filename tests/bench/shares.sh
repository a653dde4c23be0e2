#!/usr/bin/env bash
# Benchmark 3: file work in a share against the guest's own disk.
#
#   hutch:    a virtiofs share (hutch start --share HOST:~/Shared)
#   baseline: the guest's own disk (virtio-blk, qcow2 overlay, ext4)
#   9p:       measured only when the guest kernel has a 9p module (the script checks
#             /lib/modules in the guest and says which); Debian's cloud kernel has none.
#
# Operations, timed inside the guest (so SSH round trips are not counted), each on a fresh
# tree, guest caches dropped before every operation but the untar:
#   untar    a generated node_modules-like tree of FILES small files (an uncompressed tar read
#            from the guest's disk)
#   find     find DIR | wc -l
#   stat     the lstat of every file that `git status` does (find DIR -newer MARK): the test
#            image has no git, and installing it would need the network
#   write    SIZE MiB sequential write (dd, conv=fsync)
#   read     the same file read back
#
# Usage: shares.sh [RUNS] [FILES] [SIZE_MIB]   (defaults 3, 20000, 500)
. "$(dirname "$0")/lib.sh"

runs=${1:-3}
files=${2:-20000}
size=${3:-500}
estimate $((200 + runs * (files / 40 + size / 2))) "one boot, then $runs runs x 2 filesystems"

share=$BENCH_TMP/share
mkdir -p "$share"
python3 - "$BENCH_TMP/tree" "$files" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
per_pkg = 25
for i in range(n):
    pkg, j = divmod(i, per_pkg)
    d = os.path.join(root, "node_modules", f"pkg-{pkg}", "lib" if j % 5 else "")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"file-{j}.js"), "w") as f:
        f.write(f"module.exports = function f{i}(x) {{ return x + {i}; }};\n" * (1 + i % 7))
PY
tar -C "$BENCH_TMP/tree" -cf "$BENCH_TMP/tree.tar" node_modules
say "tree: $files files, tar $(du -m "$BENCH_TMP/tree.tar" | cut -f1) MiB"

vm=bs-$$
hutch_new "$vm" --share "$share:~/Shared" || exit 1
in_guest() { "$HUTCH" shell "$vm" -- "$@"; }
"$HUTCH" cp "$BENCH_TMP/tree.tar" "$vm:tree.tar" || exit 1
mods=$(in_guest sh -c 'find /lib/modules -name "9p*.ko*" -o -name "9pnet*.ko*"; grep -w 9p /proc/filesystems' 2>&1)
if [ -n "$mods" ]; then
  say "guest kernel has 9p: $mods (not measured: hutch defines no 9p share)"
else
  say "guest kernel $(in_guest uname -r) has no 9p module (/lib/modules, /proc/filesystems): no 9p column"
fi

cat >"$BENCH_TMP/ops.sh" <<'SH'
# ops.sh DIR SIZE: prints "op seconds" lines.
set -e
dir=$1 size=$2
t() { date +%s.%N; }
drop() { sync; echo 3 | sudo tee /proc/sys/vm/drop_caches >/dev/null; }
rm -rf "$dir"; mkdir -p "$dir"; drop
a=$(t); tar -xf ~/tree.tar -C "$dir"; sync; b=$(t); echo "untar $a $b"
drop; a=$(t); find "$dir" | wc -l >/dev/null; b=$(t); echo "find $a $b"
touch "$dir/.mark"; drop
a=$(t); find "$dir" -newer "$dir/.mark" | wc -l >/dev/null; b=$(t); echo "stat $a $b"
drop; a=$(t); dd if=/dev/zero of="$dir/big" bs=1M count="$size" conv=fsync status=none; b=$(t); echo "write $a $b"
drop; a=$(t); dd if="$dir/big" of=/dev/null bs=1M status=none; b=$(t); echo "read $a $b"
rm -rf "$dir"
SH
"$HUTCH" cp "$BENCH_TMP/ops.sh" "$vm:ops.sh" || exit 1

measure() {  # measure SIDE DIR
  local out
  wait_quiet
  out=$(in_guest sh ops.sh "$2" "$size" 2>&1) ||
    { say "ops in $2 failed ($(grep -c . <<<"$out") lines), the last:"; tail -3 <<<"$out" >&2
      grep -q "Too many open files" <<<"$out" && say "virtiofsd keeps one fd per inode the guest knows: FILES must stay below its open-file limit"
      exit 1; }
  while read -r op a b; do
    sample "share-$op" "$1" "$(elapsed "$a" "$b")" "$LOAD"
  done <<<"$out"
}

for r in $(seq 1 "$runs"); do
  if [ $((r % 2)) -eq 1 ]; then
    measure hutch Shared/bench; measure baseline disk/bench
  else
    measure baseline disk/bench; measure hutch Shared/bench
  fi
done

result share-untar s "untar $files files: virtiofs share vs guest disk"
result share-find s "find | wc -l"
result share-stat s "lstat of every file (git status's walk)"
result share-write s "$size MiB sequential write"
result share-read s "$size MiB sequential read"
bench_write_json runs="$runs" files="$files" size_mib="$size" guest_9p="${mods:-none}"
