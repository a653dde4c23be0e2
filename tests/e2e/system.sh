#!/usr/bin/env bash
# VMs on libvirt's system daemon (-c qemu:///system), as a member of group libvirt: QEMU runs
# as libvirt's own user (libvirt-qemu), which can reach nothing of the test user's, so what it
# opens lives in the user's directory of the daemon (a storage pool libvirt makes, its
# directories passable by QEMU's user alone): the VM's own disk (a copy of the image),
# kernel, initrd and seed, and the sockets of passt (vhost-user, libvirt's own interface)
# and virtiofsd, which hutch still runs as the user; the ready channel and the console are
# read through libvirt's API. One VM: create and start with a writable share and
# a forwarded port, shell, cp, the share both ways and attacked from the guest as root, the
# host's loopback out of the guest's reach, logs, the verbs not built there refused, stop
# (the disk given back to the user), a second boot (which takes back a loose mode and ACL left
# on the VM's files), delete leaving nothing.
#
# Needs passt with vhost-user: on a host whose passt has none (Debian 12), the suite checks
# that hutch refuses qemu:///system with one line and makes nothing. tests/run starts the
# system daemon (tests/libvirt-system.sh) where passt has it: the Debian 13 lane.
. "$(dirname "$0")/lib.sh"

vm=$(vm_name sys)
track_vm "$vm"
track_vm "$vm-b"
export LIBVIRT_DEFAULT_URI=qemu:///system
vsys() { virsh -c qemu:///system "$@"; }
system_cleanup() {
  local v
  for v in "$vm" "$vm-b"; do
    "$HUTCH" -q delete --force "$v" >/dev/null 2>&1 ||
      { vsys destroy "$v" >/dev/null 2>&1; vsys undefine "$v" >/dev/null 2>&1; }
  done
  e2e_cleanup
}
trap system_cleanup EXIT

cat >"$E2E_TMP/blank.yaml" <<YAML
cpus: 1
memory: 256MiB
disk: 2GiB
accel: tcg
image: { file: $E2E_TMP/blank.qcow2 }
YAML

if ! passt --help 2>&1 | grep -q -- --vhost-user; then
  qemu-img create -q -f qcow2 "$E2E_TMP/blank.qcow2" 1G
  out=$("$HUTCH" create "$vm" -f "$E2E_TMP/blank.yaml" 2>&1 >/dev/null); rc=$?
  if [ $rc -eq 1 ] && [ "$(wc -l <<<"$out")" -eq 1 ] && grep -q "need passt's vhost-user mode" <<<"$out" &&
     [ ! -e "$XDG_DATA_HOME/hutch/instances/$vm" ] && [ ! -e "$XDG_RUNTIME_DIR/hutch/$vm" ]; then
    ok "without passt's vhost-user, qemu:///system is refused with one line (exit 1), nothing made"
  else
    not_ok "qemu:///system without passt's vhost-user (exit $rc)"; diag "$out"
  fi
  finish
  exit
fi

if ! out=$(vsys uri 2>&1); then
  echo "Bail out! libvirt's system daemon is unreachable (tests/run starts it as root): $out"
  exit 1
fi
ok "the system daemon answers the test user (group libvirt)"
pool_dir=/var/lib/libvirt/images/hutch-$(id -u)

share=$E2E_TMP/share
mkdir -p "$share"
echo "from the host" >"$share/host-file"
port=$(free_port)
cat >"$E2E_TMP/sys.yaml" <<YAML
base: $HUTCH_SOURCE_DIR/tests/image/test-guest.yaml
cpus: 1
memory: 1GiB
shares:
  - { host: $share, guest: ~/share, writable: true }
ports:
  - { host: $port, guest: 8000 }
YAML

start_log=$E2E_TMP/start.log
t0=$(date +%s)
"$HUTCH" start "$vm" -f "$E2E_TMP/sys.yaml" 2>"$start_log"; rc=$?
diag "create and first start on qemu:///system: $(( $(date +%s) - t0 )) s"
if [ $rc -eq 0 ]; then ok "a VM is created and boots to ready on qemu:///system"; else not_ok "start on qemu:///system (exit $rc)"; diag "$(tail -30 "$start_log")"; finish; exit 1; fi
in_guest() { "$HUTCH" shell "$vm" -- "$@"; }

check "virsh -c qemu:///system knows the domain" vsys dominfo "$vm"
qemu_user=$(ps -eo user:32,args | awk -v n="guest=$vm," 'index($0, "qemu-system") && index($0, n) {print $1; exit}')
if [ "$qemu_user" = libvirt-qemu ]; then ok "QEMU runs as libvirt-qemu, not as the user"; else not_ok "QEMU's user (got: '$qemu_user')"; fi
# nothing the domain names (its metadata aside) is under the user's own directories
named=$(vsys dumpxml --inactive "$vm" | sed '/<metadata>/,/<\/metadata>/d' |
  grep -oE "(file|path|socket)='[^']*'|<(kernel|initrd)>[^<]*" || true)
outside=$(grep -v "'$pool_dir/\|>$pool_dir/" <<<"$named" || true)
if [ -n "$named" ] && [ -z "$outside" ]; then ok "every path the domain names is in the user's pool directory $pool_dir"; else not_ok "paths outside the pool directory"; diag "$named"; fi
if [ "$(stat -c %a "$pool_dir")" = 711 ] && [ "$(stat -c %U "$pool_dir")" = "$(id -un)" ]; then ok "the pool directory is the user's, 0711"; else not_ok "the pool directory: $(stat -c '%U %a' "$pool_dir")"; fi
# who may use what QEMU opens: "owner/user:UID:perm/group/mask/other" from the ACL itself
acl_of() {
  python3 - "$1" <<'PY'
import os, struct, sys
try:
    raw = os.getxattr(sys.argv[1], "system.posix_acl_access", follow_symlinks=False)
except OSError as e:
    print("no ACL:", e.strerror); sys.exit()
names = {1: "owner", 2: "user", 4: "group", 0x10: "mask", 0x20: "other"}
out = []
for off in range(4, len(raw), 8):
    tag, perm, uid = struct.unpack_from("<HHI", raw, off)
    out.append(f"user:{uid}:{perm}" if tag == 2 else f"{names.get(tag, tag)}:{perm}")
print("/".join(out))
PY
}
qemu_uid=$(id -u libvirt-qemu)
sockets=("$pool_dir/run/$vm/passt.socket" "$pool_dir/run/$vm"/virtiofs-*.sock)
bad=""
for f in "${sockets[@]}"; do
  got=$(acl_of "$f")
  [ "$got" = "owner:7/user:$qemu_uid:6/group:0/mask:6/other:0" ] || bad+="$f: $got; "
done
if [ ${#sockets[@]} -ge 2 ] && [ -z "$bad" ]; then ok "passt's and virtiofsd's sockets: QEMU's user may connect, their group and others may not (ACL)"; else not_ok "the sockets' ACLs"; diag "$bad"; fi
bad=""
for d in "$pool_dir/vms" "$pool_dir/vms/$vm" "$pool_dir/run" "$pool_dir/run/$vm"; do
  got=$(acl_of "$d")
  [ "$got" = "owner:7/user:$qemu_uid:1/group:0/mask:1/other:0" ] && [ "$(stat -c %a "$d")" = 710 ] || bad+="$d: $(stat -c %a "$d") $got; "
done
if [ -z "$bad" ]; then ok "the VM's directories in the pool: QEMU's user passes through, no one else does"; else not_ok "the pool directories' ACLs"; diag "$bad"; fi
if vsys dumpxml --inactive "$vm" | has "<backingStore/>"; then ok "the domain's disk stands alone (<backingStore/>: libvirt reads no chain from the file)"; else not_ok "the disk's empty backingStore"; fi

# libvirt gave QEMU's user the seed's copy (a read-only disk) for good: once QEMU has it
# open, hutch removes it; nothing of the user's own (instance directory, image cache) is
# anyone else's
if [ ! -e "$pool_dir/vms/$vm/seed.iso" ]; then ok "the seed's copy for QEMU is gone once the VM runs"; else not_ok "the seed's copy is still there: $(ls -l "$pool_dir/vms/$vm/seed.iso")"; fi
others=$(find "$XDG_DATA_HOME/hutch" "$XDG_CACHE_HOME/hutch/images" ! -user "$(id -un)" 2>&1 | head -5)
if [ -z "$others" ]; then ok "nothing in the instance directory or the image cache became another user's"; else not_ok "files of another user"; diag "$others"; fi

# a name whose sockets would not fit a unix socket path in the pool's directory
long=s$(printf 'x%.0s' $(seq 1 59))
out=$("$HUTCH" create "$long" -f "$E2E_TMP/sys.yaml" --no-ports 2>&1); rc=$?
if [ $rc -eq 2 ] && grep -q "too long for a VM on qemu:///system" <<<"$out" && [ ! -e "$XDG_DATA_HOME/hutch/instances/$long" ] &&
   [ ! -e "$pool_dir/vms/$long" ] && ! vsys dominfo "$long" >/dev/null 2>&1; then
  ok "a name too long for the pool's socket paths is refused (exit 2), nothing made"
else
  not_ok "a long name (exit $rc)"; diag "$out"
fi

# another user's hutch domain on the same daemon (its metadata names another instance
# directory): not listed, not served
cat >"$E2E_TMP/other.xml" <<XML
<domain type='qemu'><name>$vm-other</name><memory unit='MiB'>64</memory>
<os><type arch='x86_64'>hvm</type></os>
<metadata><hutch:instance xmlns:hutch="https://hutch.dev/xmlns/instance/1">
<hutch:profile>x</hutch:profile><hutch:ssh-port>0</hutch:ssh-port>
<hutch:instance-dir>/home/someone-else/.local/share/hutch/instances/$vm-other</hutch:instance-dir>
<hutch:runtime-dir>/run/user/4242/hutch/$vm-other</hutch:runtime-dir>
<hutch:user>dev</hutch:user><hutch:accel>tcg</hutch:accel></hutch:instance></metadata></domain>
XML
if vsys define "$E2E_TMP/other.xml" >/dev/null 2>&1; then
  out=$("$HUTCH" info "$vm-other" 2>&1); rc=$?
  if ! "$HUTCH" list 2>&1 | has -w "$vm-other" && [ $rc -ne 0 ] && grep -q "not one of your VMs" <<<"$out"; then
    ok "another user's VM on the daemon is not listed, and refused"
  else
    not_ok "another user's VM (info exit $rc)"; diag "$out"
  fi
  vsys undefine "$vm-other" >/dev/null 2>&1
else
  not_ok "defining a stand-in for another user's VM"
fi

# the runtime directory's link gone (a reboot, logind at logout) while the VM runs: the next
# command makes it again, and the run directory keeps its ACL
rm "$XDG_RUNTIME_DIR/hutch/$vm"
check "with its runtime link gone, shell still reaches the VM" in_guest true
if [ -L "$XDG_RUNTIME_DIR/hutch/$vm" ] && [ "$(acl_of "$pool_dir/run/$vm")" = "owner:7/user:$qemu_uid:1/group:0/mask:1/other:0" ]; then ok "the link is made again, the run directory's ACL kept"; else not_ok "the runtime link after removal"; diag "$(ls -l "$XDG_RUNTIME_DIR/hutch/"; acl_of "$pool_dir/run/$vm")"; fi

# a second VM of the same image while the first runs: nothing of the first's is shared
check "a second VM of the same image is created while the first runs" "$HUTCH" -q create "$vm-b" -f "$E2E_TMP/sys.yaml" --no-ports
check "and deleted" "$HUTCH" -q delete "$vm-b"

# one user's directory of instances serves both daemons: each lists its own
if "$HUTCH" list 2>&1 | has -w "$vm"; then ok "hutch list on qemu:///system shows the VM"; else not_ok "hutch list on qemu:///system"; fi
if ! "$HUTCH" -c qemu:///session list 2>&1 | has -w "$vm"; then ok "the session daemon's list does not show it (not as missing either)"; else not_ok "the session's list shows the system VM"; diag "$("$HUTCH" -c qemu:///session list 2>&1)"; fi
out=$("$HUTCH" -c qemu:///session info "$vm" 2>&1); rc=$?
if [ $rc -ne 0 ] && grep -q "is a VM of qemu:///system" <<<"$out"; then ok "asked on the session daemon, hutch says which daemon the VM is on"; else not_ok "info on the wrong daemon (exit $rc)"; diag "$out"; fi

check "shell runs a command" in_guest true
in_guest sh -c 'exit 7'; rc=$?
if [ $rc -eq 7 ]; then ok "shell passes the exit status"; else not_ok "shell's exit status (got $rc)"; fi
if [ "$(in_guest cat share/host-file 2>&1)" = "from the host" ]; then ok "the share shows the host's file"; else not_ok "the share shows the host's file"; fi
in_guest sh -c 'echo "from the guest" > share/guest-file'
if [ "$(cat "$share/guest-file" 2>&1)" = "from the guest" ]; then ok "a file the guest writes in the share is on the host"; else not_ok "a guest write reaches the host"; fi
# guest root against the share: no device node, and what it makes is a subordinate uid's on
# the host (virtiofsd runs as the user, in a user namespace), as on the session daemon
out=$(in_guest sudo sh -c 'mknod share/null c 1 3 2>&1; echo root-file > share/root-file; chown 0:0 share/root-file' 2>&1)
owner=$(stat -c %u "$share/root-file" 2>&1)
if [ ! -e "$share/null" ] && [ "$owner" != 0 ] && [ "$owner" != "$(id -u)" ] && [ -n "$owner" ]; then
  ok "guest root makes no device node in the share, and its files are a subordinate uid's on the host"
else
  not_ok "guest root in the share"; diag "$out; $(ls -ln "$share")"
fi

head -c 1048576 /dev/urandom >"$E2E_TMP/blob"
check "cp a file into the guest" "$HUTCH" cp "$E2E_TMP/blob" "$vm:blob"
check "cp it back" "$HUTCH" cp "$vm:blob" "$E2E_TMP/blob.back"
check "the same bytes" cmp "$E2E_TMP/blob" "$E2E_TMP/blob.back"

in_guest sh -c 'mkdir -p www && echo system-port > www/index.html && cd www && (setsid python3 -m http.server 8000 >/dev/null 2>&1 &)'
got=""
for _ in $(seq 1 30); do
  got=$(curl -s --max-time 5 "http://127.0.0.1:$port/index.html") && [ "$got" = system-port ] && break
  sleep 1
done
if [ "$got" = system-port ]; then ok "a guest port is reached on 127.0.0.1:$port"; else not_ok "the forwarded port (got: $got)"; fi

# hutch forward adds a port to the running VM; ssh-config serves OpenSSH
port2=$(free_port)
check "hutch forward adds a port" "$HUTCH" -q forward "$vm" "$port2:8000"
got=""
for _ in $(seq 1 10); do got=$(curl -s --max-time 5 "http://127.0.0.1:$port2/index.html") && [ "$got" = system-port ] && break; sleep 1; done
if [ "$got" = system-port ]; then ok "the added forward reaches the guest's server"; else not_ok "the added forward (got: $got)"; fi
check "--remove it" "$HUTCH" -q forward "$vm" --remove "$port2"
"$HUTCH" ssh-config "$vm" >"$E2E_TMP/ssh_config"
out=$(ssh -F "$E2E_TMP/ssh_config" -o BatchMode=yes "$vm" 'echo via-openssh' 2>&1)
if [ "$out" = via-openssh ]; then ok "OpenSSH reaches the VM with hutch ssh-config's block (its pinned key)"; else not_ok "ssh with ssh-config"; diag "$out"; fi

# a service on the host's loopback is out of the guest's reach (passt's --no-map-gw, the
# egress policy): guest root asks 127.0.0.1 and each of the guest's own addresses (never the
# gateway: passt would send that off this machine)
tag=sys-$$-$RANDOM
mkdir -p "$E2E_TMP/loop" && echo "$tag-loopback-service" >"$E2E_TMP/loop/index.html"
loop_port=$(free_port)
(cd "$E2E_TMP/loop" && exec python3 -m http.server "$loop_port" --bind 127.0.0.1 >/dev/null 2>&1) &
listener=$!
for _ in $(seq 1 20); do curl -s -m 2 "http://127.0.0.1:$loop_port/" | has "$tag" && break; sleep 0.2; done
if curl -s -m 5 "http://127.0.0.1:$loop_port/" | has "$tag"; then ok "the host reaches its own loopback service (the control)"; else not_ok "the control: the host's loopback service"; fi
reached=""
for a in 127.0.0.1 $(in_guest sh -c "ip -o -4 addr show | awk '{print \$4}' | cut -d/ -f1" 2>/dev/null); do
  case $a in 127.*) [ "$a" = 127.0.0.1 ] || continue ;; esac
  got=$(in_guest sudo curl -s -m 5 "http://$a:$loop_port/" 2>/dev/null)
  grep -q "$tag" <<<"$got" && reached+="$a "
done
kill $listener 2>/dev/null
if [ -z "$reached" ]; then ok "guest root cannot reach a service on the host's loopback"; else not_ok "the guest reached the host's loopback through: $reached"; fi

logs=$("$HUTCH" logs "$vm" 2>&1)
if grep -q "cloud-init\|hutch" <<<"$logs"; then ok "hutch logs shows the boot's console (read through libvirt)"; else not_ok "hutch logs"; diag "$(tail -5 <<<"$logs")"; fi

for args in "snapshot create $vm s1" "clone $vm $vm-copy" "template create $vm-tpl --from $vm"; do
  read -ra argv <<<"$args"
  out=$("$HUTCH" "${argv[@]}" 2>&1 >/dev/null); rc=$?
  if [ $rc -eq 2 ] && [ "$(wc -l <<<"$out")" -eq 1 ] && grep -q "on qemu:///system are not built yet" <<<"$out" &&
     [ "$(vsys domstate "$vm" 2>&1)" = running ] && ! vsys dominfo "$vm-copy" >/dev/null 2>&1; then
    ok "hutch ${argv[0]} is refused on qemu:///system with one line (exit 2), the VM untouched"
  else
    not_ok "hutch ${argv[0]} on qemu:///system (exit $rc)"; diag "$out"
  fi
done

check "stop" "$HUTCH" -q stop "$vm"
if none_running -f -- "(passt|virtiofsd).*hutch/$vm/"; then ok "stop leaves no passt or virtiofsd"; else not_ok "helpers after stop"; fi
disk=$(readlink "$XDG_DATA_HOME/hutch/instances/$vm/disk.qcow2")
if [ "$(stat -c %U "$disk" 2>&1)" = "$(id -un)" ]; then ok "libvirt gave the disk back to the user after the stop"; else not_ok "the disk's owner after the stop: $(stat -c %U "$disk" 2>&1)"; fi
if ! qemu-img info -U "$disk" 2>&1 | has "backing file"; then ok "the disk has no backing file"; else not_ok "the disk has a backing file"; diag "$(qemu-img info -U "$disk" 2>&1)"; fi
seed=$XDG_DATA_HOME/hutch/instances/$vm/seed.iso
if [ -f "$seed" ] && [ ! -L "$seed" ] && [ "$(stat -c '%U %a' "$seed")" = "$(id -un) 600" ]; then ok "the seed hutch keeps is the user's, 0600 (QEMU gets a copy at each start)"; else not_ok "the kept seed: $(ls -l "$seed" 2>&1)"; fi
# edit: a second share (its socket where QEMU reaches it) and a larger disk (resized through
# the instance directory's link)
mkdir -p "$E2E_TMP/two" && echo two-marker >"$E2E_TMP/two/marker"
check "edit --share --disk on qemu:///system" "$HUTCH" -q edit "$vm" --share "$E2E_TMP/two:~/two" --disk 6GiB
if vsys dumpxml --inactive "$vm" | has "socket='$pool_dir/run/$vm/"; then ok "the edited domain names the new share's socket in the pool directory"; else not_ok "the edited share's socket"; diag "$(vsys dumpxml --inactive "$vm" | grep socket)"; fi
# a backing file planted in the disk's header (QEMU's user may write it while the VM runs):
# the domain's empty <backingStore/> keeps libvirt from following it at the next start
bait=$E2E_TMP/bait && head -c 1048576 /dev/zero >"$bait"
qemu-img rebase -q -u -F raw -b "$bait" "$disk"
out=$("$HUTCH" edit "$vm" --disk 7GiB 2>&1); rc=$?
if [ $rc -ne 0 ] && grep -qi "backing" <<<"$out" && [ "$(stat -c %s "$bait")" = 1048576 ] &&
   [ "$(qemu-img info -U --output=json "$disk" | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')" = $((6 << 30)) ]; then
  ok "edit --disk refuses a disk whose header names a backing file (nothing resized)"
else
  not_ok "edit --disk on a planted backing file (exit $rc)"; diag "$out"
fi
# what an escaped QEMU could leave on the VM's files while its user owned them (a loose mode,
# an ACL naming that user, whom every VM's QEMU runs as, and leaving the owner nothing): the
# next start takes them back
python3 -c 'import os, struct, sys
acl = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", t, p, u) for t, p, u in
    [(1, 0, 0xffffffff), (2, 6, int(sys.argv[2])), (4, 4, 0xffffffff), (0x10, 6, 0xffffffff), (0x20, 4, 0xffffffff)])
for f in os.listdir(sys.argv[1]):
    os.setxattr(os.path.join(sys.argv[1], f), "system.posix_acl_access", acl, follow_symlinks=False)' "$pool_dir/vms/$vm" "$qemu_uid"
t0=$(date +%s)
check "start again" "$HUTCH" -q start "$vm"
bad=""
for f in "$pool_dir/vms/$vm"/*; do
  [ "$(stat -c %a "$f")" = 600 ] && [ "$(acl_of "$f")" = "no ACL: No data available" ] || bad+="$f: $(stat -c %a "$f") $(acl_of "$f"); "
done
if [ -z "$bad" ] && [ -e "$disk" ]; then ok "the start takes the VM's files back: 0600, no ACL (what a QEMU set on them in an earlier run does not outlive it)"; else not_ok "the VM's files after a start"; diag "$bad"; fi
if [ "$(stat -c %U "$bait")" = "$(id -un)" ]; then ok "a backing file named in the disk's header is not handed to QEMU's user"; else not_ok "the planted backing file is $(stat -c %U "$bait")'s"; fi
diag "second boot to ready: $(( $(date +%s) - t0 )) s"
if [ "$(in_guest cat share/guest-file 2>&1)" = "from the guest" ]; then ok "the share is there after the second boot"; else not_ok "the share after the second boot"; fi
if [ "$(in_guest cat two/marker 2>&1)" = two-marker ]; then ok "the guest mounts the share edit added"; else not_ok "the share edit added"; fi
size=$(in_guest sh -c 'lsblk -b -n -d -o SIZE /dev/vda' 2>&1)
if [ "$size" = $((6 << 30)) ]; then ok "the guest's disk has the edited size"; else not_ok "the guest's disk size (got: $size)"; fi

check "delete" "$HUTCH" -q delete --force "$vm"
left=""
vsys dominfo "$vm" >/dev/null 2>&1 && left+="the domain; "
for p in "$XDG_DATA_HOME/hutch/instances/$vm" "$XDG_RUNTIME_DIR/hutch/$vm" "$pool_dir/vms/$vm" "$pool_dir/run/$vm"; do
  [ -e "$p" ] || [ -L "$p" ] && left+="$p; "
done
if [ -z "$left" ]; then ok "delete leaves nothing of the VM (domain, instance directory, runtime link, pool directories)"; else not_ok "left after delete: $left"; fi
finish
