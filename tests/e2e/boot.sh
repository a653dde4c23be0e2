#!/usr/bin/env bash
# Boot to ready with a real guest (the test image, under TCG): start from nothing, shell,
# exit status, stdin, cp both ways, ssh-config with real OpenSSH, hutch edit (cpus under the
# TCG cap, memory, disk: the root file system grows; shares added and removed reach the
# guest's mounts) and hutch restart without re-provisioning, a tampered host key refused, a
# start whose guest says READY while its sshd failed (the guest warns of it: the start gives
# SSH 5 s, and the error names the warning and the failed unit), and
# delete leaving nothing behind. One VM
# serves the whole suite: a boot costs 1.5-3 minutes under TCG.
#
# The VM's profile names a cloud image that cannot be downloaded (nothing listens on
# 127.0.0.1:1, whatever the network), so the start builds its fallback, the test guest's
# recipe (a cache hit once tests/e2e/image.sh or any suite built it); it asks for the default
# profile's 2 vCPUs, which TCG caps to half the host's cores; and its CPU is QEMU's max model.
. "$(dirname "$0")/lib.sh"
require_libvirt

vm=$(vm_name boot)
track_vm "$vm"
cat >"$E2E_TMP/boot.yaml" <<YAML
base: $HUTCH_SOURCE_DIR/tests/image/test-guest.yaml
cpus: 2
image:
  url: https://127.0.0.1:1/hutch-e2e/debian-12-genericcloud-amd64.qcow2
  checksums: https://127.0.0.1:1/hutch-e2e/SHA512SUMS
  fallback:
    build:
      suite: bookworm
      packages: [python3, curl]
provision:
  - name: counter
    run: |
      echo "provisioned" >> /var/lib/hutch-e2e-runs
  - name: as-user
    as: user
    run: |
      id -un > ~/whoami
  - name: broken-optional
    optional: true
    run: |
      echo "this step fails on purpose" >&2
      exit 3
YAML

start_log=$E2E_TMP/start.log
t0=$(date +%s.%N)
"$HUTCH" start "$vm" -f "$E2E_TMP/boot.yaml" 2>"$start_log"; rc=$?
t1=$(date +%s.%N)
if [ $rc -eq 0 ]; then ok "start from nothing to ready"; else not_ok "start from nothing to ready (exit $rc)"; diag "$(cat "$start_log")"; fi
diag "start to ready (new VM): $(awk "BEGIN{printf \"%.1f\", $t1 - $t0}") s"
diag "$(cat "$start_log")"
for phase in image define boot provision ready; do
  if grep -q "^  $phase " "$start_log"; then ok "start shows phase '$phase'"; else not_ok "start shows phase '$phase'"; fi
done
# The fallback: said, taken, and the very image the test guest's recipe builds.
fallback_note="cannot download https://127.0.0.1:1/hutch-e2e/SHA512SUMS ("
if grep -qF "$fallback_note" "$start_log" &&
   grep -q "): building Debian bookworm locally from the Debian mirror instead$" "$start_log"; then
  ok "start says the cloud image cannot be downloaded and builds it locally instead"
else
  not_ok "start says the cloud image cannot be downloaded and builds it locally instead"
fi
guest_key=$("$HUTCH" -q image build "$HUTCH_SOURCE_DIR/tests/image/test-guest.yaml" 2>&1)
vm_key=$(cat "$XDG_DATA_HOME/hutch/instances/$vm/image-key" 2>&1)
if [ "$vm_key" = "$guest_key" ] && grep -q "^  image .*$guest_key, built locally" "$start_log"; then
  ok "the VM runs on the locally built image ($vm_key)"
else
  not_ok "the VM runs on the locally built image"; diag "instance: $vm_key, test guest: $guest_key"
fi

# passt's back end: vhost-user where this host's passt offers it (Debian 13's), a stream
# socket elsewhere (Debian 12's); the domain, passt's command line and doctor agree.
passt_help=$("${HUTCH_PASST:-passt}" --help 2>&1 || true)
if grep -q -- '--vhost-user' <<<"$passt_help"; then want_net=vhost-user; else want_net=stream; fi
net_of() { # the back end of the running domain, passt's flag, the memory backing
  local xml args
  xml=$(virsh -c qemu:///session dumpxml "$vm" 2>&1)
  args=$(pgrep -u "$(id -u)" -a passt 2>/dev/null | grep -F -- "/$vm/" || true)
  if grep -q "vhost-user,id=hutchnet0,chardev=hutchnetchr0" <<<"$xml" && grep -q -- " --vhost-user " <<<"$args" &&
     grep -q "<access mode=.shared./>" <<<"$xml"; then echo vhost-user
  elif grep -q "stream,id=hutchnet0,server=off" <<<"$xml" && [ -n "$args" ] && ! grep -q -- "--vhost-user" <<<"$args"; then echo stream
  else echo "unclear: $(grep -o 'value=.[a-z-]*,id=hutchnet[^"]*' <<<"$xml") / $args"; fi
}
got_net=$(net_of)
if [ "$got_net" = "$want_net" ]; then ok "passt's back end is $want_net on this host (the domain and passt agree)"; else not_ok "passt's back end: want $want_net"; diag "$got_net"; fi
doctor_out=$("$HUTCH" doctor 2>&1 || true)
if { [ $want_net = vhost-user ] && grep -q "^ok *passt .*vhost-user: passt serves.*qemu:///system need it" <<<"$doctor_out"; } ||
   { [ $want_net = stream ] && grep -q "^ok *passt .*a stream socket: this passt has no vhost-user mode.*qemu:///system need it" <<<"$doctor_out"; }; then
  ok "doctor says which network path this host gets ($want_net)"
else
  not_ok "doctor says which network path this host gets ($want_net)"; diag "$(grep passt <<<"$doctor_out")"
fi

# TCG: at most half the host's cores (at least 1), with a notice when the profile asked more.
cores=$(nproc)
want_cpus=$(( cores / 2 > 0 ? cores / 2 : 1 )); [ "$want_cpus" -gt 2 ] && want_cpus=2
cpus=$("$HUTCH" info --json "$vm" 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["cpus"])')
if [ "$cpus" = "$want_cpus" ]; then ok "info shows $cpus vCPU(s) on this $cores-core host"; else not_ok "info shows $want_cpus vCPU(s) (got '$cpus', $cores cores)"; fi
if [ "$want_cpus" -lt 2 ]; then
  if grep -qF "cpus: 2 capped to $want_cpus under TCG emulation on this $cores-core host" "$start_log"; then ok "start gives the TCG cap notice"; else not_ok "start gives the TCG cap notice"; fi
else
  if ! grep -q "capped to" "$start_log"; then ok "no cap notice when the host has the cores"; else not_ok "no cap notice when the host has the cores"; fi
fi
# -cpu max: what QEMU 7.2's TCG emulates beyond qemu64, which current binaries need.
out=$("$HUTCH" shell "$vm" -- grep -m1 '^flags' /proc/cpuinfo 2>&1)
if grep -qw avx2 <<<"$out" && grep -qw bmi2 <<<"$out"; then ok "the guest CPU has avx2 and bmi2 (TCG -cpu max)"; else not_ok "the guest CPU has avx2 and bmi2"; diag "$out"; fi

if grep -q "ready, with 1 optional step failed: broken-optional " "$start_log"; then ok "a failed optional step is named, start still succeeds"; else not_ok "a failed optional step is named"; fi
if grep -qx "  broken-optional: this step fails on purpose" "$start_log"; then ok "start gives the failed optional step's reason"; else not_ok "start gives the failed optional step's reason"; fi
out=$("$HUTCH" info --json "$vm" 2>&1)
if python3 -c 'import json,sys; f=json.load(sys.stdin)["optional_failed"]; sys.exit(f != [{"index": 3, "name": "broken-optional", "status": 3, "reason": "this step fails on purpose"}])' <<<"$out"; then
  ok "info --json lists the failed optional step with its status and reason"
  if "$HUTCH" info "$vm" 2>&1 | has "^optional_failed *broken-optional: this step fails on purpose$"; then ok "info names it with its reason"; else not_ok "info names it with its reason"; diag "$("$HUTCH" info "$vm" 2>&1)"; fi
else
  not_ok "info --json lists the failed optional step with its status and reason"; diag "$out"
fi

out=$("$HUTCH" shell "$vm" -- uname -a 2>&1)
if grep -q "^Linux $vm " <<<"$out"; then ok "shell -- uname -a"; else not_ok "shell -- uname -a"; diag "$out"; fi

check_status "exit status 7 comes back" 7 "$HUTCH" shell "$vm" -- sh -c 'exit 7'
out=$(echo hi | "$HUTCH" shell "$vm" -- cat 2>&1)
if [ "$out" = hi ]; then ok "stdin is piped through"; else not_ok "stdin is piped through"; diag "$out"; fi
out=$("$HUTCH" shell "$vm" -- printf '%s|' 'a b' "it's" '$(true)' 2>&1)
if [ "$out" = "a b|it's|\$(true)|" ]; then ok "arguments arrive exactly"; else not_ok "arguments arrive exactly"; diag "$out"; fi
out=$("$HUTCH" shell "$vm" -- cat whoami 2>&1)
if [ "$out" = "$(id -un)" ]; then ok "the as: user step ran as the host user's name"; else not_ok "as: user step"; diag "$out"; fi

head -c 10M /dev/urandom >"$E2E_TMP/big"
check "cp a 10 MiB file into the guest" "$HUTCH" cp "$E2E_TMP/big" "$vm:big"
check "cp it back" "$HUTCH" cp "$vm:big" "$E2E_TMP/big.back"
if [ "$(sha256sum <"$E2E_TMP/big")" = "$(sha256sum <"$E2E_TMP/big.back")" ] &&
   [ "$("$HUTCH" shell "$vm" -- sha256sum big | cut -d' ' -f1)" = "$(sha256sum "$E2E_TMP/big" | cut -d' ' -f1)" ]; then
  ok "checksums equal on host, in the guest, and back"
else
  not_ok "checksums equal on host, in the guest, and back"
fi

"$HUTCH" ssh-config "$vm" >"$E2E_TMP/ssh_config"
out=$(ssh -F "$E2E_TMP/ssh_config" -o BatchMode=yes "$vm" 'echo via-openssh' 2>&1)
if [ "$out" = via-openssh ]; then ok "ssh-config works with OpenSSH and the pinned key"; else not_ok "ssh-config works with OpenSSH"; diag "$out"; fi

check "write a file before the restart" "$HUTCH" shell "$vm" -- sh -c 'echo kept > survivor'
# hutch edit: refused while the VM runs; stopped, more memory and a bigger disk, which the
# guest's root file system grows to at the next boot; a shrink is refused and changes nothing.
mem_before=$("$HUTCH" shell "$vm" -- awk '/^MemTotal:/ {print $2}' /proc/meminfo)
root_before=$("$HUTCH" shell "$vm" -- df -B1 --output=size / | tail -n 1 | tr -d ' ')
out=$("$HUTCH" edit "$vm" --memory 1536MiB 2>&1); rc=$?
if [ $rc -eq 1 ] && [ "$out" = "hutch: $vm is running: hutch stop $vm first" ]; then ok "edit of a running VM is refused"; else not_ok "edit of a running VM is refused (exit $rc)"; diag "$out"; fi
check "stop" "$HUTCH" -q stop "$vm"
info_field() { "$HUTCH" info --json "$vm" | python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
# edit --cpus goes through the same TCG cap as create (max(1, cores/2) here), with its notice
tcg_cap=$(( $(nproc) / 2 )); [ "$tcg_cap" -ge 1 ] || tcg_cap=1
out=$("$HUTCH" edit "$vm" --cpus $((tcg_cap + 1)) 2>&1); rc=$?
if [ $rc -eq 0 ] && grep -q "cpus: $((tcg_cap + 1)) capped to $tcg_cap under TCG" <<<"$out" && [ "$(info_field cpus)" = "$tcg_cap" ]; then
  ok "edit --cpus is capped under TCG, with a notice"
else
  not_ok "edit --cpus is capped under TCG (exit $rc, info cpus $(info_field cpus))"; diag "$out"
fi
check "edit --cpus with HUTCH_TCG_MAX_CPUS" env HUTCH_TCG_MAX_CPUS=$((tcg_cap + 1)) "$HUTCH" -q edit "$vm" --cpus $((tcg_cap + 1))
if [ "$(info_field cpus)" = $((tcg_cap + 1)) ]; then ok "info shows the edited cpus"; else not_ok "info shows the edited cpus"; fi
# two shares added to a VM that had none: the guest mounts them at the next start
mkdir -p "$E2E_TMP/one" "$E2E_TMP/two"
echo one-marker >"$E2E_TMP/one/marker"
echo two-marker >"$E2E_TMP/two/marker"
check "edit --cpus 1 --memory 1536MiB --disk 6GiB --share x2" "$HUTCH" -q edit "$vm" --cpus 1 --memory 1536MiB --disk 6GiB \
  --share "$E2E_TMP/one:~/one" --share "$E2E_TMP/two:~/two:cache=always"
profile_before=$(cat "$XDG_DATA_HOME/hutch/instances/$vm/profile.yaml")
out=$("$HUTCH" edit "$vm" --memory 2GiB --disk 5GiB 2>&1); rc=$?
if [ $rc -eq 2 ] && grep -q "disk: 5GiB is smaller than the disk's 6GiB: a disk only grows" <<<"$out"; then ok "a smaller disk is refused"; else not_ok "a smaller disk is refused (exit $rc)"; diag "$out"; fi
if [ "$(info_field memory)" = 1536MiB ] && [ "$(cat "$XDG_DATA_HOME/hutch/instances/$vm/profile.yaml")" = "$profile_before" ]; then
  ok "and changes nothing (memory, profile)"
else
  not_ok "the refused edit changes nothing"; diag "$("$HUTCH" info "$vm" 2>&1)"
fi
# The second share holds more files than virtiofsd may keep open under a hard open-file limit
# lowered to 3000 for this start (virtiofsd inherits it): the start says so.
python3 -c 'import os, sys
for d in range(100):
    os.makedirs(f"{sys.argv[1]}/many/d{d}")
    for f in range(25): open(f"{sys.argv[1]}/many/d{d}/f{f}", "w").close()' "$E2E_TMP/two"
t0=$(date +%s.%N)
out=$(ulimit -Hn 3000 && ulimit -Sn 3000 && "$HUTCH" start "$vm" 2>&1); rc=$?
t1=$(date +%s.%N)
diag "start to ready (restart): $(awk "BEGIN{printf \"%.1f\", $t1 - $t0}") s"
if [ $rc -eq 0 ]; then ok "start again"; else not_ok "start again (exit $rc)"; diag "$out"; fi
if grep -q "/two holds more than 2500 files and directories.*open-file limit (3000)" <<<"$out" && ! grep -q "/one holds" <<<"$out"; then ok "the start says which share holds more files than virtiofsd may keep open"; else not_ok "the start warns of a share virtiofsd cannot keep open"; diag "$out"; fi
rm -rf "$E2E_TMP/two/many"
mem_after=$("$HUTCH" shell "$vm" -- awk '/^MemTotal:/ {print $2}' /proc/meminfo)
root_after=$("$HUTCH" shell "$vm" -- df -B1 --output=size / | tail -n 1 | tr -d ' ')
diag "MemTotal $mem_before -> $mem_after kB, root file system $root_before -> $root_after bytes"
if [ "$mem_after" -gt $((mem_before + 400000)) ]; then ok "the guest has the edited memory"; else not_ok "the guest has the edited memory"; fi
if [ "$root_after" -gt $((root_before + 1500000000)) ]; then ok "the guest's root file system grew with the disk"; else not_ok "the guest's root file system grew with the disk"; diag "$("$HUTCH" logs "$vm" 2>&1 | tail -n 20)"; fi
check "the file survived" bash -c "[ \"\$('$HUTCH' shell '$vm' -- cat survivor)\" = kept ]"
out=$("$HUTCH" shell "$vm" -- sh -c 'cat ~/one/marker ~/two/marker; findmnt -n -o FSTYPE ~/one; findmnt -n -o FSTYPE ~/two' 2>&1)
if [ "$out" = "$(printf 'one-marker\ntwo-marker\nvirtiofs\nvirtiofs')" ]; then ok "the guest mounts the shares edit added"; else not_ok "the guest mounts the shares edit added"; diag "$out"; fi
# Coherence in the default mode (cache auto): a file the guest has read, edited on the host,
# and a file the host adds, are seen by the guest within about a second. The guest polls (it
# read the file first, so the old content is in its cache); the host times from its edit to
# the poller's end, which includes the command's return over SSH.
"$HUTCH" shell "$vm" -- sh -c 'cat ~/one/marker >/dev/null; ls ~/one >/dev/null; touch ~/one/.polling
  i=0; while [ $i -lt 200 ]; do
    [ "$(cat ~/one/marker)" = edited-on-host ] && [ -e ~/one/added-on-host ] && { echo seen; exit 0; }
    sleep 0.05; i=$((i + 1)); done; echo stale' >"$E2E_TMP/poll.out" 2>&1 &
poll_pid=$!
for _ in $(seq 1 600); do [ -e "$E2E_TMP/one/.polling" ] && break; kill -0 $poll_pid 2>/dev/null || break; sleep 0.05; done
t0=$(date +%s.%N)
echo edited-on-host >"$E2E_TMP/one/marker"
: >"$E2E_TMP/one/added-on-host"
wait $poll_pid
t1=$(date +%s.%N)
seen_after=$(awk "BEGIN{printf \"%.2f\", $t1 - $t0}")
diag "a host edit seen by the guest (default cache) after $seen_after s, SSH return included"
if [ "$(cat "$E2E_TMP/poll.out")" = seen ] && awk "BEGIN{exit !($seen_after < 3)}"; then ok "the default cache mode: a host edit and a new host file are seen by the guest within ~1 s"; else not_ok "host edits seen by the guest in the default mode ($seen_after s)"; diag "$(cat "$E2E_TMP/poll.out")"; fi
rm -f "$E2E_TMP/one/.polling" "$E2E_TMP/one/added-on-host"
echo one-marker >"$E2E_TMP/one/marker"
# cache=always: virtiofsd runs with it and writeback (the guest caches writes); what the guest
# writes is on the host when its command has ended (close flushes)
runtime=${XDG_RUNTIME_DIR:?}/hutch/$vm
always_args=$(tr '\0' ' ' <"/proc/$(cut -d' ' -f1 "$runtime/virtiofs-1.pid")/cmdline" 2>&1)
auto_args=$(tr '\0' ' ' <"/proc/$(cut -d' ' -f1 "$runtime/virtiofs-0.pid")/cmdline" 2>&1)
# the C virtiofsd's words (-o cache=always -o writeback) or the Rust one's (--cache=always --writeback)
if grep -Eq "cache=always (-o |--)writeback" <<<"$always_args" && grep -q "cache=auto" <<<"$auto_args" && ! grep -q writeback <<<"$auto_args"; then ok "virtiofsd gets each share's cache mode (always with writeback, auto without)"; else not_ok "virtiofsd's cache options"; diag "$always_args / $auto_args"; fi
check "a cache=always share: a guest write is on the host when the command ends" bash -c "'$HUTCH' shell '$vm' -- sh -c 'seq 1 20000 > ~/two/written' && [ \"\$(tail -n 1 '$E2E_TMP/two/written')\" = 20000 ]"
rm -f "$E2E_TMP/two/written"
# The first share goes: the second's mount tag moves (hutchfs1 -> hutchfs0), so the boot
# mounts it at the first's old path until start gives the guest its new table.
check "stop (to remove a share)" "$HUTCH" -q stop "$vm"
out=$("$HUTCH" edit "$vm" --remove-share '~/one' 2>&1); rc=$?
if [ $rc -eq 0 ] && grep -q "the guest mounts the edited shares at the next start" <<<"$out"; then ok "edit --remove-share"; else not_ok "edit --remove-share (exit $rc)"; diag "$out"; fi
out=$("$HUTCH" start "$vm" 2>&1); rc=$?
if [ $rc -eq 0 ] && grep -q "the guest mounts its 1 shared folder as edited" <<<"$out"; then ok "start gives the guest its new share table"; else not_ok "start gives the guest its new share table (exit $rc)"; diag "$out"; fi
out=$("$HUTCH" shell "$vm" -- sh -c 'cat ~/two/marker; findmnt -n -o FSTYPE ~/two; mountpoint -q ~/one && echo one-mounted; ls ~/one; grep -c hutchfs /etc/fstab' 2>&1)
if [ "$out" = "$(printf 'two-marker\nvirtiofs\n1')" ]; then ok "the removed share is gone from the guest, the other is where it was"; else not_ok "the removed share is gone from the guest"; diag "$out"; fi
check "no pending share table left" test ! -e "$XDG_DATA_HOME/hutch/instances/$vm/guest-mounts-pending"
# Where passt has vhost-user, this restart asks for the stream socket (HUTCH_PASST_VHOST_USER=0):
# the start sets the domain's back end each time, and the share keeps the memory shareable.
t0=$(date +%s.%N)
check "restart" env HUTCH_PASST_VHOST_USER=$([ $want_net = vhost-user ] && echo 0) "$HUTCH" -q restart "$vm"
t1=$(date +%s.%N)
diag "restart (stop, start to ready): $(awk "BEGIN{printf \"%.1f\", $t1 - $t0}") s"
if [ $want_net = vhost-user ]; then
  got_net=$(net_of)
  xml=$(virsh -c qemu:///session dumpxml "$vm" 2>&1)
  if [ "$got_net" = stream ] && grep -q "<access mode=.shared./>" <<<"$xml"; then ok "HUTCH_PASST_VHOST_USER=0: the restart took the stream socket, the share's memory still shareable"; else not_ok "HUTCH_PASST_VHOST_USER=0 takes the stream socket"; diag "$got_net"; fi
fi
check "the file survived the restart" bash -c "[ \"\$('$HUTCH' shell '$vm' -- cat survivor)\" = kept ]"
out=$("$HUTCH" shell "$vm" -- sudo cat /var/lib/hutch-e2e-runs 2>&1)
if [ "$out" = provisioned ]; then ok "provisioning ran once, not again on restart"; else not_ok "provisioning ran once"; diag "$out"; fi

t0=$(date +%s.%N)
for i in 1 2 3 4 5; do "$HUTCH" shell "$vm" -- true; done
t1=$(date +%s.%N)
diag "hutch shell -- true: $(awk "BEGIN{printf \"%.2f\", ($t1 - $t0) / 5}") s each"

# A tampered pinned key: the guest's real key no longer matches what hutch expects. The
# supervisor's session was checked when it connected; a new connection, its own or a
# command's, is checked again and refused (and no supervisor comes up on it).
pub=$XDG_DATA_HOME/hutch/instances/$vm/ssh_host_ed25519_key.pub
cp "$pub" "$E2E_TMP/pub.saved"
ssh-keygen -q -t ed25519 -N '' -f "$E2E_TMP/other" && cp "$E2E_TMP/other.pub" "$pub"
pkill -TERM -u "$(id -u)" -f "supervise( [^ ]+)* $vm\$"
for _ in $(seq 1 20); do pgrep -u "$(id -u)" -f "supervise( [^ ]+)* $vm\$" >/dev/null || break; sleep 0.5; done
out=$("$HUTCH" shell "$vm" -- true 2>&1); rc=$?
if [ $rc -eq 1 ] && grep -qi "host key" <<<"$out"; then ok "a tampered pinned host key is refused"; else not_ok "a tampered pinned host key is refused (exit $rc)"; diag "$out"; fi
sleep 1
if none_running -u "$(id -u)" -f "supervise( [^ ]+)* $vm\$"; then ok "no supervisor serves a VM whose host key does not match"; else not_ok "no supervisor serves a VM whose host key does not match"; fi
cp "$E2E_TMP/pub.saved" "$pub"

# The guest says READY but its sshd does not start (its host keys gone): the guest warns of it
# with READY, so the start fails after a short SSH wait (not a minute), and says why: the
# guest's warning, the console's failed units and last lines.
check "the guest's host keys removed" "$HUTCH" shell "$vm" -- sudo sh -c 'rm -f /etc/ssh/ssh_host_*'
check "stop" "$HUTCH" -q stop "$vm"
out=$("$HUTCH" start "$vm" 2>&1); rc=$?
if [ $rc -eq 1 ] && grep -q "units that failed at boot:" <<<"$out" && grep -q "\[FAILED\] Failed to start ssh.servic" <<<"$out" &&
   grep -q "the guest's sshd failed at this boot (SSH given 5 s)" <<<"$out" &&
   grep -q "the guest warned: ssh.service failed at this boot" <<<"$out" &&
   grep -q "the console's last lines (hutch logs $vm):" <<<"$out"; then
  ok "sshd failing in a guest that says READY: start fails, naming the guest's warning, the failed unit and the console's last lines"
else
  not_ok "start when sshd fails in the guest (exit $rc)"
fi
diag "$(head -c 3000 <<<"$out")"

check "delete --force" "$HUTCH" -q delete --force "$vm"
check_status "no domain" 1 virsh dominfo "$vm"
sleep 1
check "no passt process" none_running -u "$(id -u)" -f "[p]asst.*/$vm/"
check "no instance directory" test ! -e "$XDG_DATA_HOME/hutch/instances/$vm"
check "no runtime directory" test ! -e "$XDG_RUNTIME_DIR/hutch/$vm"

finish
