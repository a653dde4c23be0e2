#!/usr/bin/env bash
# Lifecycle of a domain through the CLI, each step in its own hutch process, checked with
# virsh: create, list, info, start, stop --force, delete. The image is a blank qcow2 (nothing
# boots: SeaBIOS finds no disk to boot), so this suite is fast; boot.sh boots a real guest.
. "$(dirname "$0")/lib.sh"
require_libvirt

vm=$(vm_name life)
track_vm "$vm"
track_vm "$vm-copy"
track_template "$vm-tpl"
qemu-img create -q -f qcow2 "$E2E_TMP/blank.qcow2" 1G
cat >"$E2E_TMP/blank.yaml" <<YAML
cpus: 1
memory: 256MiB
disk: 2GiB
accel: tcg
image: { file: $E2E_TMP/blank.qcow2 }
YAML

# A libvirt hutch does not run VMs on: exit 2, one line saying why, nothing made
# (qemu+ssh:// is another host's hutch: tests/e2e/remote.sh)
for uri in 'qemu:///system?socket=/run/libvirt/libvirt-sock' qemu+tcp://nobody@host.invalid/session; do
  out=$("$HUTCH" -c "$uri" create "$vm" -f "$E2E_TMP/blank.yaml" 2>&1 >/dev/null); rc=$?
  if [ $rc -eq 2 ] && [ "$(wc -l <<<"$out")" -eq 1 ] && grep -q "use -c qemu:///session" <<<"$out" &&
     ! virsh dominfo "$vm" >/dev/null 2>&1 && [ ! -e "$XDG_DATA_HOME/hutch/instances/$vm" ]; then
    ok "-c $uri is refused with one line (exit 2), and nothing is made"
  else
    not_ok "-c $uri (exit $rc)"; diag "$out"
  fi
done
# The supervisor's --ssh-port (from hutch start) out of range is a usage error, before anything
# is looked at: 4294967318 was 22 once cut to 32 bits. (No such VM, and the boot descriptor is
# /dev/null: nothing could start even if it were taken.)
for port in 4294967318 0 65536 22x; do
  out=$("$HUTCH" supervise --boot-fd 3 --ssh-port "$port" "$vm-none" 2>&1 3</dev/null >/dev/null); rc=$?
  if [ $rc -eq 2 ] && [ "$(wc -l <<<"$out")" -eq 1 ] && grep -q "ssh-port takes a port (1 to 65535)" <<<"$out"; then
    ok "supervise --ssh-port $port is refused (exit 2, one line)"
  else
    not_ok "supervise --ssh-port $port (exit $rc)"; diag "$out"
  fi
done
# Root makes and starts no VM (QEMU would run as root, virtiofsd without a user namespace):
# as root (uid 0 of a user namespace of its own), exit 1 with one line, nothing made
for verb in create start run; do
  case $verb in
    run) args=(run -f "$E2E_TMP/blank.yaml" --name "$vm" -- true) ;;
    *) args=("$verb" "$vm" -f "$E2E_TMP/blank.yaml") ;;
  esac
  out=$(unshare -r "$HUTCH" "${args[@]}" 2>&1 >/dev/null); rc=$?
  if [ $rc -eq 1 ] && [ "$(wc -l <<<"$out")" -eq 1 ] && grep -q "refusing to run VMs as root" <<<"$out" &&
     ! virsh dominfo "$vm" >/dev/null 2>&1 && [ ! -e "$XDG_DATA_HOME/hutch/instances/$vm" ]; then
    ok "hutch $verb as root is refused with one line (exit 1), and nothing is made"
  else
    not_ok "hutch $verb as root (exit $rc)"; diag "$out"
  fi
done
out=$(LIBVIRT_DEFAULT_URI=qemu+tcp://example.test/system "$HUTCH" list 2>&1); rc=$?
if [ $rc -eq 2 ] && grep -q "example.test/system is not supported" <<<"$out"; then ok "so is \$LIBVIRT_DEFAULT_URI=qemu+tcp://example.test/system"; else not_ok "LIBVIRT_DEFAULT_URI=qemu+tcp://example.test/system (exit $rc)"; diag "$out"; fi

check "create from a profile file" "$HUTCH" -q create "$vm" -f "$E2E_TMP/blank.yaml"
check "virsh sees the domain" virsh dominfo "$vm"
check "the instance directory is 0700" test "$(stat -c %a "$XDG_DATA_HOME/hutch/instances/$vm")" = 700
# ... and what would start it, or make a VM of it, is refused to root before anything is done
for args in "restart $vm" "clone $vm $vm-copy" "template create $vm-tpl --from $vm"; do
  read -ra argv <<<"$args"
  out=$(unshare -r "$HUTCH" "${argv[@]}" 2>&1 >/dev/null); rc=$?
  if [ $rc -eq 1 ] && grep -q "refusing to run VMs as root" <<<"$out" && [ "$(virsh domstate "$vm" 2>&1)" = "shut off" ] &&
     ! virsh dominfo "$vm-copy" >/dev/null 2>&1 && [ ! -e "$XDG_CACHE_HOME/hutch/images/template-$vm-tpl" ]; then
    ok "hutch ${argv[0]} as root is refused (exit 1), nothing made or changed"
  else
    not_ok "hutch ${argv[0]} as root (exit $rc)"; diag "$out"
  fi
done

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
# hutch start starts the VM's supervisor first, and it starts the helpers: its children
check "the helpers are children of the VM's supervisor" helpers_are_children "$vm"
check_status "delete without --force refuses a running VM" 1 "$HUTCH" -q delete "$vm"
check "stop --force" "$HUTCH" -q stop --force "$vm"
check "the domain is shut off" bash -c "virsh domstate '$vm' | grep -qx 'shut off'"
sleep 1
check "passt is gone" none_running -u "$(id -u)" -f "[p]asst.*/$vm/passt.socket"
check "delete" "$HUTCH" -q delete "$vm"
check_status "virsh no longer sees it" 1 virsh dominfo "$vm"
check "the instance directory is gone" test ! -e "$XDG_DATA_HOME/hutch/instances/$vm"

# A start whose helpers the supervisor refuses (under the default egress policy a forward
# may not take the egress helper's own port 3129): the start says why, with the usage
# error's exit status, and leaves no supervisor, helper or running domain
check "create with a forward from host port 3129" "$HUTCH" -q create "$vm" -f "$E2E_TMP/blank.yaml" --port 127.0.0.1:3129:80
out=$("$HUTCH" -q start --no-wait "$vm" 2>&1); rc=$?
if [ $rc -eq 2 ] && grep -q "takes port 53 or 3129" <<<"$out" && [ "$(wc -l <<<"$out")" -eq 1 ]; then ok "the supervisor's refusal is the start's error (exit 2, one line)"; else not_ok "a start the supervisor refuses (exit $rc)"; diag "$out"; fi
check "the domain is not running" bash -c "virsh domstate '$vm' | grep -qx 'shut off'"
sleep 1
check "no supervisor or helper is left" none_running -u "$(id -u)" -f "(hutch-supervise|supervise|egress-helper|passt|virtiofsd).*[^[:alnum:]_-]$vm([^[:alnum:]_-]|\$)"
check "delete" "$HUTCH" -q delete "$vm"

# info shows the shares and ports (from the frozen profile), also of a VM never started.
mkdir -p "$E2E_TMP/src"
check "create with --share and --port" "$HUTCH" -q create "$vm" -f "$E2E_TMP/blank.yaml" --share "$E2E_TMP/src:/srv/src:ro" --port 127.0.0.1:18000-18009:8000-8009
out=$("$HUTCH" info --json "$vm")
if python3 -c '
import json, sys
v = json.load(sys.stdin)
ok = v["shares"] == [{"host": sys.argv[1], "guest": "/srv/src", "writable": False, "cache": "auto"}] and \
     v["ports"] == [{"host_ip": "127.0.0.1", "host_start": 18000, "host_end": 18009, "guest_start": 8000, "guest_end": 8009, "proto": "tcp"}] and \
     v["forwards"] == []
sys.exit(0 if ok else 1)' "$E2E_TMP/src" <<<"$out"; then
  ok "info --json lists the share (host, guest, read-only) and the port range"
else
  not_ok "info --json lists the share and the port range"; diag "$out"
fi
out=$("$HUTCH" info "$vm")
if grep -qx "shares  *$E2E_TMP/src -> /srv/src (ro)" <<<"$out" && grep -qx "ports  *127.0.0.1:18000-18009 -> 8000-8009/tcp" <<<"$out"; then
  ok "info shows them as HOST -> GUEST lines"
else
  not_ok "info shows them as HOST -> GUEST lines"; diag "$out"
fi
check "delete it" "$HUTCH" -q delete "$vm"

# A second VM whose profile's host ports are taken (here by a listener of the test; another
# VM from the same profile is the everyday case): create says so and how to go on, and
# --no-ports (with --port for other ports) does.
python3 -c '
import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
open(sys.argv[1] + ".tmp", "w").write(str(s.getsockname()[1]))
__import__("os").rename(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(600)' "$E2E_TMP/held-port" &
holder=$!
for _ in $(seq 1 100); do [ -s "$E2E_TMP/held-port" ] && break; sleep 0.1; done
held=$(cat "$E2E_TMP/held-port")
cat "$E2E_TMP/blank.yaml" - >"$E2E_TMP/ports.yaml" <<YAML
ports:
  - { host: $held, guest: 80 }
YAML
out=$("$HUTCH" create "$vm" -f "$E2E_TMP/ports.yaml" 2>&1); rc=$?
if [ $rc -eq 1 ] && [ "$out" = "hutch: creating '$vm': host port 127.0.0.1:$held is in use (or cannot be bound): give this VM other ports with --no-ports --port 3000:3000, or free it" ]; then
  ok "a taken host port: create says which and how to go on (--no-ports), exit 1"
else
  not_ok "a taken host port: create says which and how to go on (exit $rc)"; diag "$out"
fi
check_status "and defines nothing" 1 virsh dominfo "$vm"
check "create --no-ports --port 18010:80 succeeds" "$HUTCH" -q create "$vm" -f "$E2E_TMP/ports.yaml" --no-ports --port 18010:80
out=$("$HUTCH" info --json "$vm")
if python3 -c 'import json,sys; p=json.load(sys.stdin)["ports"]; sys.exit(0 if [(x["host_start"], x["guest_start"]) for x in p] == [(18010, 80)] else 1)' <<<"$out"; then
  ok "its ports are only the --port one"
else
  not_ok "its ports are only the --port one"; diag "$out"
fi
check "delete it" "$HUTCH" -q delete "$vm"
kill "$holder" 2>/dev/null; wait "$holder" 2>/dev/null

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
out=$("$HUTCH" create "$vm" -f - <"$E2E_TMP/broken.yaml" 2>&1); rc=$?
if [ $rc -eq 1 ] && grep -q "^hutch: <stdin>:2:9: memory: " <<<"$out"; then
  ok "-f - reads the profile from standard input, errors name <stdin>:LINE:COL"
else
  not_ok "a broken profile on standard input (exit $rc)"; diag "$out"
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
