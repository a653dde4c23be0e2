#!/usr/bin/env bash
# Benchmark 3: file work in a share, against a 9p share and against the guest's own disk.
#
#   hutch:     a virtiofs share (hutch start --share HOST:~/Shared), the default cache mode
#              (auto), a second one with cache=always (writeback)      -> sharealways-* lines
#              and a third with cache=never (direct I/O, no guest cache) -> sharenever-* lines
#   baseline:  the guest's own disk (virtio-blk, qcow2 overlay, ext4)      -> share-* lines
#   9p:        a 9p share of another host directory, added to the same domain with virsh
#              (<filesystem accessmode='squash'>, QEMU's local backend) and mounted as Lima
#              mounts a writable 9p share (version=9p2000.L, msize=128KiB, cache=mmap)
#                                                                           -> share9p-* lines
#
# All three in one VM, on the test image rebuilt with Debian's generic kernel and git
# (`image: build: kernel: linux-image-amd64`): the cloud kernel hutch's test image boots has
# no 9p, and git status needs git. The first run builds that image (3-7 minutes; cached).
#
# Operations, timed inside the guest (so SSH round trips are not counted), each on a fresh
# tree, guest caches dropped before every operation but the untar and gitwarm:
#   untar    a generated node_modules-like tree of FILES small files in a git repository (an
#            uncompressed tar read from the guest's disk)
#   find     find DIR | wc -l
#   git      git status in the repository (a first, untimed one refreshes the index)
#   gitwarm  git status again 2 s later without dropping caches (past the default cache
#            mode's 1 s timeouts): an agent's next one
#   write    SIZE MiB sequential write (dd, conv=fsync)
#   read     the same file read back
#
# virtiofsd keeps a descriptor open for every file and directory the guest has looked up, so a
# share holds about as many as virtiofsd's hard open-file limit (`hutch doctor` reports it):
# the script refuses a FILES that would not fit rather than report a failure as a time.
#
# Usage: shares.sh [RUNS] [FILES] [SIZE_MIB]   (defaults 3, 20000, 500)
. "$(dirname "$0")/lib.sh"

runs=${1:-3}
files=${2:-20000}
size=${3:-500}
estimate $((420 + runs * 5 * (files / 300 + size / 10))) "an image build the first time, one boot, then $runs runs x 5 filesystems"

# Files plus their directories (2 per 25 files) plus virtiofsd's own descriptors.
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ $((files * 27 / 25 + 500)) -gt "$hard" ]; then
  say "FILES=$files would need about $((files * 27 / 25 + 500)) open descriptors in virtiofsd; the hard open-file limit here is $hard (see hutch doctor)."
  say "Raise it (limits.conf), or run with FILES <= $(( (hard - 500) * 25 / 27 ))."
  exit 1
fi

PROFILE=$BENCH_TMP/shares.yaml
cat >"$PROFILE" <<YAML
base: $HUTCH_SOURCE_DIR/tests/image/test-guest.yaml
image:
  build:
    packages: [git]
    kernel: linux-image-amd64
YAML

share=$BENCH_TMP/share
share_always=$BENCH_TMP/share-always
share_never=$BENCH_TMP/share-never
share9p=$BENCH_TMP/share9p
mkdir -p "$share" "$share_always" "$share_never" "$share9p"
# QEMU's 9p server runs as this user and, with accessmode squash, ignores the guest's chown:
# let the guest user write whatever uid it has.
chmod 0777 "$share9p"
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
# A repository holding the tree, packed: git add in the guest would write a loose object per
# file, twice the inodes a share must hold open.
# No automatic gc: with thousands of loose objects the commit starts one in the background,
# and the gc below then refuses to run beside it.
git -C "$BENCH_TMP/tree" init -q &&
  git -C "$BENCH_TMP/tree" config gc.auto 0 &&
  git -C "$BENCH_TMP/tree" add -A &&
  git -C "$BENCH_TMP/tree" -c user.name=bench -c user.email=bench@example.invalid commit -qm tree &&
  git -C "$BENCH_TMP/tree" gc -q --prune=now || { say "making the git repository failed"; exit 1; }
tar -C "$BENCH_TMP/tree" -cf "$BENCH_TMP/tree.tar" .
say "tree: $files files, tar $(du -m "$BENCH_TMP/tree.tar" | cut -f1) MiB"

vm=bs-$$
say "hutch start (the first time: builds the image with the generic kernel and git)"
BENCH_VMS+=("$vm")
"$HUTCH" start "$vm" -f "$PROFILE" --share "$share:~/Shared" --share "$share_always:~/Always:cache=always" --share "$share_never:~/Never:cache=never" 2>"$BENCH_TMP/$vm.start.log" ||
  { say "hutch start $vm failed:"; sed 's/^/#   /' "$BENCH_TMP/$vm.start.log" >&2; exit 1; }
in_guest() { "$HUTCH" shell "$vm" -- "$@"; }

# The 9p share: added to the stopped domain (hutch start does not redefine it), then mounted.
"$HUTCH" -q stop "$vm" || exit 1
virsh dumpxml --inactive "$vm" >"$BENCH_TMP/domain.xml" || exit 1
python3 - "$BENCH_TMP/domain.xml" "$share9p" <<'PY' || exit 1
import sys, xml.etree.ElementTree as ET
path, source = sys.argv[1:3]
tree = ET.parse(path)
devices = tree.getroot().find("devices")
fs = ET.SubElement(devices, "filesystem", type="mount", accessmode="squash")
ET.SubElement(fs, "driver", type="path")
ET.SubElement(fs, "source", dir=source)
ET.SubElement(fs, "target", dir="bench9p")
tree.write(path)
PY
virsh define "$BENCH_TMP/domain.xml" >/dev/null || exit 1
"$HUTCH" -q start "$vm" || exit 1
in_guest sh -c 'sudo mkdir -p /mnt/9p && sudo mount -t 9p -o trans=virtio,version=9p2000.L,msize=131072,cache=mmap bench9p /mnt/9p && touch /mnt/9p/.probe && rm /mnt/9p/.probe' ||
  { say "mounting the 9p share in the guest failed"; exit 1; }
say "guest kernel $(in_guest uname -r): $(in_guest sh -c 'grep -w -e 9p -e virtiofs /proc/filesystems | tr -s "\t\n" "  "')"
"$HUTCH" cp "$BENCH_TMP/tree.tar" "$vm:tree.tar" || exit 1

cat >"$BENCH_TMP/ops.sh" <<'SH'
# ops.sh DIR SIZE: prints "op seconds" lines.
set -e
dir=$1 size=$2
t() { date +%s.%N; }
drop() { sync; echo 3 | sudo tee /proc/sys/vm/drop_caches >/dev/null; }
rm -rf "$dir"; mkdir -p "$dir"; drop
a=$(t); tar -xf ~/tree.tar -C "$dir"; sync; b=$(t); echo "untar $a $b"
drop; a=$(t); find "$dir" | wc -l >/dev/null; b=$(t); echo "find $a $b"
# git status's work: an lstat of every tracked file against the index. The untimed first one
# refreshes the index the untar left stale (other inode numbers and times).
git() { command git -c safe.directory="*" "$@"; }  # 9p shows the host uid as owner
git -C "$dir" status --porcelain >/dev/null
drop; a=$(t); git -C "$dir" status --porcelain | wc -l >/dev/null; b=$(t); echo "git $a $b"
# again at once, caches kept: an agent's next git status (what a share's cache mode is for)
sleep 2; a=$(t); git -C "$dir" status --porcelain | wc -l >/dev/null; b=$(t); echo "gitwarm $a $b"
drop; a=$(t); dd if=/dev/zero of="$dir/big" bs=1M count="$size" conv=fsync status=none; b=$(t); echo "write $a $b"
drop; a=$(t); dd if="$dir/big" of=/dev/null bs=1M status=none; b=$(t); echo "read $a $b"
rm -rf "$dir"
SH
"$HUTCH" cp "$BENCH_TMP/ops.sh" "$vm:ops.sh" || exit 1

measure() {  # measure WHAT DIR: WHAT is virtiofs, disk or 9p
  local out
  wait_quiet
  # bounded: a share that stops answering (a cache=never share once did) fails the run
  out=$(timeout 1200 "$HUTCH" shell "$vm" -- sh ops.sh "$2" "$size" 2>&1) ||
    { say "ops in $2 failed or took over 20 minutes ($(grep -c . <<<"$out") lines), the last:"; tail -3 <<<"$out" >&2
      grep -q "Too many open files" <<<"$out" && say "virtiofsd keeps one fd per inode the guest knows: FILES must stay below its open-file limit"
      exit 1; }
  local op a b v
  while read -r op a b; do
    v=$(elapsed "$a" "$b")
    case $1 in
      virtiofs) sample "share-$op" hutch "$v" "$LOAD"; sample "share9p-$op" hutch "$v" "$LOAD" ;;
      always) sample "sharealways-$op" hutch "$v" "$LOAD" ;;
      never) sample "sharenever-$op" hutch "$v" "$LOAD" ;;
      disk) for fs in share sharealways sharenever; do sample "$fs-$op" baseline "$v" "$LOAD"; done ;;
      9p) sample "share9p-$op" baseline "$v" "$LOAD" ;;
    esac
  done <<<"$out"
}

# The order rotates run by run, so that no filesystem always goes first.
orders=("virtiofs:Shared/bench disk:disk/bench 9p:/mnt/9p/bench always:Always/bench never:Never/bench"
        "disk:disk/bench never:Never/bench always:Always/bench 9p:/mnt/9p/bench virtiofs:Shared/bench"
        "always:Always/bench 9p:/mnt/9p/bench never:Never/bench virtiofs:Shared/bench disk:disk/bench")
for r in $(seq 1 "$runs"); do
  for side in ${orders[$(( (r - 1) % 3 ))]}; do
    measure "${side%%:*}" "${side#*:}"
  done
done

for fs in share share9p sharealways sharenever; do
  case $fs in
    share) what=virtiofs against="guest disk" ;;
    share9p) what=virtiofs against="9p share" ;;
    sharealways) what="virtiofs cache=always" against="guest disk" ;;
    sharenever) what="virtiofs cache=never" against="guest disk" ;;
  esac
  result $fs-untar s "untar $files files: $what vs $against"
  result $fs-find s "find | wc -l: $what vs $against"
  result $fs-git s "git status: $what vs $against"
  result $fs-gitwarm s "git status again 2 s later, caches kept: $what vs $against"
  result $fs-write s "$size MiB sequential write: $what vs $against"
  result $fs-read s "$size MiB sequential read: $what vs $against"
done
bench_write_json runs="$runs" files="$files" size_mib="$size" kernel=linux-image-amd64 ninep_mount="version=9p2000.L,msize=131072,cache=mmap"
