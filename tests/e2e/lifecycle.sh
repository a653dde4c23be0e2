#!/usr/bin/env bash
# Lifecycle of a domain through the CLI, each step in its own hutch process, checked with
# virsh: create, list, info, start, stop --force, delete. The image is a blank qcow2 (nothing
# boots: SeaBIOS finds no disk to boot), so this suite is fast; boot.sh boots a real guest.
. "$(dirname "$0")/lib.sh"
require_libvirt

vm=$(vm_name life)
track_vm "$vm"
qemu-img create -q -f qcow2 "$E2E_TMP/blank.qcow2" 1G
cat >"$E2E_TMP/blank.yaml" <<YAML
cpus: 1
memory: 256MiB
disk: 2GiB
accel: tcg
image: { file: $E2E_TMP/blank.qcow2 }
YAML

check "create from a profile file" "$HUTCH" -q create "$vm" -f "$E2E_TMP/blank.yaml"
check "virsh sees the domain" virsh dominfo "$vm"
check "the instance directory is 0700" test "$(stat -c %a "$XDG_DATA_HOME/hutch/instances/$vm")" = 700

out=$("$HUTCH" list --json)
if python3 -c 'import json,sys; l=json.load(sys.stdin); sys.exit(0 if any(v["name"]==sys.argv[1] and v["state"]=="stopped" for v in l) else 1)' "$vm" <<<"$out"; then
  ok "list --json shows it stopped"
else
  not_ok "list --json shows it stopped"; diag "$out"
fi

out=$("$HUTCH" info --json "$vm")
if python3 -c 'import json,sys; v=json.load(sys.stdin); sys.exit(0 if v["cpus"]==1 and v["memory"]=="256MiB" and v["accel"]=="tcg" and v["profile"]=="blank" else 1)' <<<"$out"; then
  ok "info --json reports cpus, memory, accel, profile"
else
  not_ok "info --json reports cpus, memory, accel, profile"; diag "$out"
fi

check_status "create again is refused" 1 "$HUTCH" -q create "$vm" -f "$E2E_TMP/blank.yaml"
check "start --no-wait" "$HUTCH" -q start --no-wait "$vm"
check "the domain runs" bash -c "virsh domstate '$vm' | grep -qx running"
check "passt runs for it" test -S "$XDG_RUNTIME_DIR/hutch/$vm/passt.socket"
check "and pgrep finds it (the check below can fail)" pgrep -u "$(id -u)" -f "[p]asst.*/$vm/passt.socket"
check_status "delete without --force refuses a running VM" 1 "$HUTCH" -q delete "$vm"
check "stop --force" "$HUTCH" -q stop --force "$vm"
check "the domain is shut off" bash -c "virsh domstate '$vm' | grep -qx 'shut off'"
sleep 1
check "passt is gone" bash -c "! pgrep -u $(id -u) -f '[p]asst.*/$vm/passt.socket'"
check "delete" "$HUTCH" -q delete "$vm"
check_status "virsh no longer sees it" 1 virsh dominfo "$vm"
check "the instance directory is gone" test ! -e "$XDG_DATA_HOME/hutch/instances/$vm"

# A profile with a script step starts from its frozen copy (in the instance directory, far
# from cloud-init/scripts/) with a hutch run from the build tree.
cat "$E2E_TMP/blank.yaml" - >"$E2E_TMP/script.yaml" <<'YAML'
provision:
  - { name: shell, script: shell-setup.sh }
YAML
check "create with a script step (not installed, from the build tree)" env -u HUTCH_SOURCE_DIR "$HUTCH" -q create "$vm" -f "$E2E_TMP/script.yaml"
check "start it from the frozen profile" env -u HUTCH_SOURCE_DIR "$HUTCH" -q start --no-wait "$vm"
check "delete it" "$HUTCH" -q delete --force "$vm"

# Bad input changes nothing.
cat >"$E2E_TMP/broken.yaml" <<'YAML'
cpus: 1
memory: 4 gigs
YAML
out=$("$HUTCH" create "$vm" -f "$E2E_TMP/broken.yaml" 2>&1); rc=$?
if [ $rc -eq 1 ] && grep -q "broken.yaml:2:9: memory: " <<<"$out" && [ "$(wc -l <<<"$out")" -eq 1 ]; then
  ok "a broken profile names FILE:LINE:COL and exits 1"
else
  not_ok "a broken profile names FILE:LINE:COL and exits 1 (exit $rc)"; diag "$out"
fi
check_status "nothing was defined for it" 1 virsh dominfo "$vm"
check "no instance directory for it" test ! -e "$XDG_DATA_HOME/hutch/instances/$vm"

out=$("$HUTCH" create --frobnicate "$vm" 2>&1); rc=$?
if [ $rc -eq 2 ] && [ "$(wc -l <<<"$out")" -eq 1 ]; then ok "an unknown flag exits 2 with one line"; else not_ok "an unknown flag exits 2 with one line (exit $rc)"; diag "$out"; fi
check_status "an invalid name exits 2" 2 "$HUTCH" create "Bad_Name" -f "$E2E_TMP/blank.yaml"
check_status "nothing was defined for the bad flag" 1 virsh dominfo "$vm"

# A failed create (the image does not exist) removes what it made.
sed "s|$E2E_TMP/blank.qcow2|$E2E_TMP/missing.qcow2|" "$E2E_TMP/blank.yaml" >"$E2E_TMP/missing.yaml"
check_status "create with a missing image fails" 1 "$HUTCH" -q create "$vm" -f "$E2E_TMP/missing.yaml"
check_status "and leaves no domain" 1 virsh dominfo "$vm"
check "and no instance directory" test ! -e "$XDG_DATA_HOME/hutch/instances/$vm"

# What a create killed half-way leaves (its directory, marked, no domain) is cleaned up by
# the next create of that name; a directory without the mark is never removed.
mkdir -p "$XDG_DATA_HOME/hutch/instances/$vm" && touch "$XDG_DATA_HOME/hutch/instances/$vm/.creating" "$XDG_DATA_HOME/hutch/instances/$vm/disk.qcow2"
check "create after an interrupted create" "$HUTCH" -q create "$vm" -f "$E2E_TMP/blank.yaml"
check "and the marker is gone" test ! -e "$XDG_DATA_HOME/hutch/instances/$vm/.creating"
check "delete it" "$HUTCH" -q delete "$vm"
mkdir -p "$XDG_DATA_HOME/hutch/instances/$vm" && echo mine >"$XDG_DATA_HOME/hutch/instances/$vm/precious"
check_status "an unmarked leftover directory is refused" 1 "$HUTCH" -q create "$vm" -f "$E2E_TMP/blank.yaml"
check "and kept" test -e "$XDG_DATA_HOME/hutch/instances/$vm/precious"
rm -rf "$XDG_DATA_HOME/hutch/instances/$vm"

# hutch leaves domains it did not make alone.
foreign=$(vm_name foreign)
cat >"$E2E_TMP/foreign.xml" <<XML
<domain type='qemu'><name>$foreign</name><memory unit='MiB'>64</memory><os><type arch='x86_64'>hvm</type></os></domain>
XML
virsh define "$E2E_TMP/foreign.xml" >/dev/null
out=$("$HUTCH" delete --force "$foreign" 2>&1); rc=$?
if [ $rc -eq 1 ] && grep -q "not made by hutch" <<<"$out" && virsh dominfo "$foreign" >/dev/null 2>&1; then
  ok "a domain without hutch metadata is refused and untouched"
else
  not_ok "a domain without hutch metadata is refused and untouched"; diag "$out"
fi
virsh undefine "$foreign" >/dev/null 2>&1
out=$("$HUTCH" list --name)
if ! grep -qx "$foreign" <<<"$out"; then ok "list leaves foreign domains out"; else not_ok "list leaves foreign domains out"; fi

finish
