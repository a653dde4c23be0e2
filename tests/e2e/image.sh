#!/bin/bash
# tests/e2e/image.sh: builds the test guest image (tests/image/test-guest.yaml) into the user's
# image cache, checks that a second build is a cache hit, and boots the image directly with
# QEMU under TCG (no libvirt) until the serial console shows a login prompt. TAP output.
#
# The first run builds from the Debian mirror (about 3-7 minutes); later runs reuse the cache.
# Run it as an unprivileged user with subordinate ids (mmdebstrap's unshare mode).

. "$(dirname "$0")/lib.sh"

PROFILE=$HUTCH_SOURCE_DIR/tests/image/test-guest.yaml
BOOT_TIMEOUT=${HUTCH_BOOT_TIMEOUT:-300}
QEMU_PID=

image_cleanup() {
  [ -n "$QEMU_PID" ] && kill "$QEMU_PID" 2>/dev/null && wait "$QEMU_PID" 2>/dev/null
  e2e_cleanup
}
trap image_cleanup EXIT

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

echo "1..8"

start=$(now)
if key=$("$HUTCH" image build "$PROFILE" 2>"$E2E_TMP/build.err") && [ -n "$key" ]; then
  ok "image build $PROFILE -> $key ($(elapsed "$start") s)"
else
  not_ok "image build $PROFILE"
  diag "$(tail -20 "$E2E_TMP/build.err")"
  echo "Bail out! no test guest image"
  exit 1
fi

start=$(now)
key2=$("$HUTCH" image build "$PROFILE" 2>&1)
took=$(elapsed "$start")
if [ "$key2" = "$key" ] && awk -v t="$took" 'BEGIN { exit !(t < 1.0) }'; then
  ok "second build is a cache hit ($took s)"
else
  not_ok "second build is a cache hit (got '$key2' in $took s)"
fi

IMAGE_DIR=${XDG_CACHE_HOME:-$HOME/.cache}/hutch/images/$key
list=$("$HUTCH" --json image list 2>&1)
if python3 -c '
import json, sys
images = {i["key"]: i for i in json.loads(sys.argv[1])}
i = images[sys.argv[2]]
assert i["kind"] == "build" and i["source"] == "bookworm" and i["kernel"] is True, i
assert i["used_by"] == [], i
' "$list" "$key" 2>"$E2E_TMP/list.err"; then
  ok "image list shows $key (build, bookworm, kernel)"
else
  not_ok "image list shows $key"
  diag "$list"; diag "$(cat "$E2E_TMP/list.err")"
fi

modes=$(stat -c '%a %n' "$IMAGE_DIR" "$IMAGE_DIR"/* 2>&1)
if [ "$(stat -c %a "$IMAGE_DIR")" = 700 ] &&
   [ -z "$(find "$IMAGE_DIR" -mindepth 1 ! -perm 600)" ] &&
   [ -f "$IMAGE_DIR/disk.qcow2" ] && [ -f "$IMAGE_DIR/vmlinuz" ] && [ -f "$IMAGE_DIR/initrd.img" ]; then
  ok "cache entry holds disk, kernel, initrd (dir 0700, files 0600)"
else
  not_ok "cache entry holds disk, kernel, initrd (dir 0700, files 0600)"
  diag "$modes"
fi

info=$(qemu-img info --output=json "$IMAGE_DIR/disk.qcow2" 2>&1)
if python3 -c '
import json, sys
i = json.loads(sys.argv[1])
assert i["format"] == "qcow2" and "backing-filename" not in i, i
' "$info" 2>/dev/null; then
  ok "disk.qcow2 is a qcow2 without backing file"
else
  not_ok "disk.qcow2 is a qcow2 without backing file"
  diag "$info"
fi

OVERLAY=$E2E_TMP/overlay.qcow2
check "overlay on the cached image" \
  qemu-img create -q -f qcow2 -F qcow2 -b "$IMAGE_DIR/disk.qcow2" "$OVERLAY" 4G

CONSOLE=$E2E_TMP/console.log
cmdline=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["cmdline"])' \
  "$IMAGE_DIR/image.json")
start=$(now)
qemu-system-x86_64 -accel tcg -smp 1 -m 1024 -display none -monitor none -no-reboot \
  -serial "file:$CONSOLE" -device virtio-rng-pci -nic none \
  -kernel "$IMAGE_DIR/vmlinuz" -initrd "$IMAGE_DIR/initrd.img" -append "$cmdline" \
  -drive "file=$OVERLAY,if=virtio,format=qcow2" 2>"$E2E_TMP/qemu.err" &
QEMU_PID=$!
booted=
while [ "$(elapsed "$start" | cut -d. -f1)" -lt "$BOOT_TIMEOUT" ] && kill -0 "$QEMU_PID" 2>/dev/null; do
  if grep -q 'login:' "$CONSOLE" 2>/dev/null; then booted=$(elapsed "$start"); break; fi
  sleep 1
done
if [ -n "$booted" ]; then
  ok "boots to a login prompt under TCG ($booted s)"
else
  not_ok "boots to a login prompt under TCG within $BOOT_TIMEOUT s"
  diag "$(tail -30 "$CONSOLE" 2>/dev/null)"
fi

bad='Kernel panic|emergency mode|No init found|\(initramfs\)|Failed to mount|FAILED'
if [ -z "$booted" ] || grep -qE "$bad" "$CONSOLE" 2>/dev/null; then
  not_ok "no failed units or panics on the console"
  diag "$(grep -E "$bad" "$CONSOLE" 2>/dev/null)"
else
  ok "no failed units or panics on the console"
fi

[ "$tap_failed" -eq 0 ]
