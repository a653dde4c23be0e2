#!/usr/bin/env bash
# Snapshots, the systemd unit and virsh, on one VM (each boot costs 1.5-3 minutes under TCG):
#  - systemd: the unit's own ExecStart line (read from hutch@.service) runs with a
#    NOTIFY_SOCKET this script listens on: STATUS= while booting, READY=1 from hutch itself
#    once the guest is provisioned and SSH answers; SIGTERM shuts the guest down, exit 0, no
#    helper left.
#  - snapshots: taken of the stopped VM and of a running one (stopped, snapshotted, started
#    again, and the terminal says so); after a revert a deleted file is back and a file made
#    later is gone, while the shared folder keeps its files (shares are not in snapshots).
#  - virsh: list, dominfo, destroy and shutdown on a hutch VM; hutch sees it stopped, passt and
#    virtiofsd went away by themselves, and `hutch start` brings it back with its helpers.
#  - doctor and bash completion, which need no boot.
. "$(dirname "$0")/lib.sh"
require_libvirt

vm=$(vm_name snap)
track_vm "$vm"
share=$E2E_TMP/share
mkdir -p "$share"
cat >"$E2E_TMP/snap.yaml" <<YAML
base: $HUTCH_SOURCE_DIR/tests/image/test-guest.yaml
shares:
  - { host: $share, guest: ~/share, writable: true }
YAML
instance_dir=$XDG_DATA_HOME/hutch/instances/$vm
runtime_dir=$XDG_RUNTIME_DIR/hutch/$vm
in_guest() { "$HUTCH" shell "$vm" -- "$@"; }
passt_runs() { pgrep -u "$(id -u)" -f "[p]asst.*/$vm/passt.socket" >/dev/null; }
# virtiofsd runs as root of a user namespace: on the host its uid is a subordinate id, not ours.
# virtiofsd is given the share through a mount in its own namespace, on a directory in the
# VM's runtime directory (never the host path): it is found by that.
virtiofsd_runs() { pgrep -f "[v]irtiofsd.*/hutch/$vm/virtiofs-" >/dev/null; }
state() {
  "$HUTCH" list --json | python3 -c 'import json,sys; print(next((v["state"] for v in json.load(sys.stdin) if v["name"]==sys.argv[1]), "absent"))' "$vm"
}
# Waits up to $1 seconds for the domain to be shut off.
wait_shut_off() {
  local i
  for ((i = 0; i < $1; i++)); do
    [ "$(virsh domstate "$vm" 2>/dev/null)" = "shut off" ] && return 0
    sleep 1
  done
  return 1
}

check "create (shut off)" "$HUTCH" -q create "$vm" -f "$E2E_TMP/snap.yaml"

# ---- systemd: hutch start --foreground as the unit runs it --------------------------------
unit=$HUTCH_SOURCE_DIR/data/hutch@.service
[ -n "${HUTCH_BUILD_DIR:-}" ] && [ -f "$HUTCH_BUILD_DIR/data/hutch@.service" ] &&
  unit=$HUTCH_BUILD_DIR/data/hutch@.service
check "the unit is Type=notify" grep -qx "Type=notify" "$unit"
exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
exec_start=${exec_start//%i/$vm}
read -ra cmd <<<"$exec_start"
if [[ ${cmd[0]} == */hutch ]]; then ok "ExecStart runs hutch: $exec_start"; else not_ok "ExecStart runs hutch: $exec_start"; fi
cmd[0]=$HUTCH

# The listener logs "TIME PID MESSAGE" per datagram (newlines in a message as '|'); the
# sender's pid comes from SCM_CREDENTIALS. It also records when the provisioned stamp
# appeared, so READY can be shown to come after the guest was ready.
notify_sock=$E2E_TMP/notify.sock
notify_log=$E2E_TMP/notify.log
python3 - "$notify_sock" "$notify_log" <<'PY' &
import os, socket, struct, sys, time
path, log = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
s.bind(path)
with open(log, "a", buffering=1) as out:
    while True:
        msg, anc, _, _ = s.recvmsg(4096, socket.CMSG_SPACE(12))
        pid = -1
        for level, kind, data in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = struct.unpack("iii", data[:12])[0]
        out.write("%.3f %d %s\n" % (time.time(), pid, msg.decode(errors="replace").replace("\n", "|")))
PY
listener=$!
trap 'kill $listener 2>/dev/null; e2e_cleanup' EXIT
for _ in $(seq 50); do [ -S "$notify_sock" ] && break; sleep 0.1; done

fg_log=$E2E_TMP/foreground.log
NOTIFY_SOCKET=$notify_sock "${cmd[@]}" 2>"$fg_log" &
fg=$!
ready_at=""
for _ in $(seq 900); do
  if grep -q "READY=1" "$notify_log" 2>/dev/null; then ready_at=$(date +%s.%N); break; fi
  kill -0 $fg 2>/dev/null || break
  sleep 1
done
if [ -n "$ready_at" ]; then
  ok "READY=1 arrived"
  # right after READY, SSH must work
  check "SSH works as soon as READY=1 arrives" in_guest true
else
  not_ok "READY=1 arrived"; diag "$(cat "$fg_log")"; diag "$(cat "$notify_log" 2>/dev/null)"
fi
diag "$(cat "$notify_log" 2>/dev/null)"
ready_line=$(grep -m1 "READY=1" "$notify_log")
ready_pid=$(awk '{print $2}' <<<"$ready_line")
if [ "$ready_pid" = "$fg" ]; then ok "READY=1 came from hutch's own pid"; else not_ok "READY=1 came from hutch's own pid ($ready_pid, wanted $fg)"; fi
if ! grep "READY=1" "$notify_log" | grep -qv "^[0-9.]* $fg "; then ok "no other process sent READY=1 (children do not inherit NOTIFY_SOCKET)"; else not_ok "only hutch sends READY=1"; fi
if awk '/READY=1/{exit} /STATUS=.*boot/{found=1} END{exit !found}' "$notify_log"; then ok "STATUS= with the boot phase came before READY=1"; else not_ok "STATUS= with the boot phase came before READY=1"; fi
stamp=$instance_dir/provisioned
ready_time=$(awk '{print $1}' <<<"$ready_line")
if [ -f "$stamp" ] && python3 -c 'import os,sys; sys.exit(0 if os.stat(sys.argv[1]).st_mtime <= float(sys.argv[2]) else 1)' "$stamp" "$ready_time"; then
  ok "READY=1 came after provisioning had finished"
else
  not_ok "READY=1 came after provisioning had finished"
fi
check "the foreground hutch is still there" kill -0 $fg
# it is the VM's supervisor (no detached one beside it): shell goes through it
sup=0
for _ in $(seq 60); do
  sup=$("$HUTCH" info --json "$vm" 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin).get("supervisor_pid", 0))')
  [ "$sup" != 0 ] && break
  sleep 0.5
done
if [ "$sup" = "$fg" ]; then ok "the foreground hutch is the VM's supervisor"; else not_ok "the foreground hutch is the VM's supervisor (supervisor pid $sup, hutch $fg)"; diag "$(cat "$fg_log")"; fi
commands=$("$HUTCH" info --json "$vm" 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin).get("supervisor_commands", -1))')
check "shell through it" "$HUTCH" shell "$vm" -- true
if [ "$("$HUTCH" info --json "$vm" 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin).get("supervisor_commands", -1))')" = $((commands + 1)) ]; then ok "the command went through the foreground supervisor"; else not_ok "the command went through the foreground supervisor"; fi
if none_running -u "$(id -u)" -f "supervise( [^ ]+)* $vm\$" >/dev/null; then ok "no detached supervisor beside it"; else not_ok "no detached supervisor beside it"; diag "$(pgrep -a -u "$(id -u)" -f "supervise( [^ ]+)* $vm\$")"; fi

check "virsh list shows it running" bash -c "virsh list --name | grep -qx '$vm'"
out=$(virsh dominfo "$vm" 2>&1)
if grep -q "^State: *running" <<<"$out" && grep -q "^Name: *$vm$" <<<"$out"; then ok "virsh dominfo on a hutch VM"; else not_ok "virsh dominfo"; diag "$out"; fi
check "passt runs" passt_runs
check "virtiofsd runs for the share" virtiofsd_runs
check "write a file that the snapshot will keep" in_guest sh -c 'echo kept > keep.txt && sync'

kill -TERM $fg
wait $fg; rc=$?
if [ $rc -eq 0 ]; then ok "SIGTERM: hutch --foreground exits 0"; else not_ok "SIGTERM: exit $rc"; diag "$(cat "$fg_log")"; fi
check "STOPPING=1 was sent" grep -q "STOPPING=1" "$notify_log"
check "the domain is shut off" bash -c "[ \"\$(virsh domstate '$vm')\" = 'shut off' ]"
sleep 1
check "passt is gone" none_running -u "$(id -u)" -f "[p]asst.*/$vm/passt.socket"
check "virtiofsd is gone" none_running -f "[v]irtiofsd.*/hutch/$vm/virtiofs-"
diag "$(cat "$fg_log")"

# ---- snapshots of the stopped VM ----------------------------------------------------------
check "snapshot create of the stopped VM" "$HUTCH" -q snapshot create "$vm" clean --description "before the changes"
out=$("$HUTCH" snapshot list --json "$vm")
if python3 -c 'import json,sys; l=json.load(sys.stdin); s=l[0]; sys.exit(0 if len(l)==1 and s["name"]=="clean" and s["description"]=="before the changes" and s["created"].endswith("Z") and s["current"] else 1)' <<<"$out"; then
  ok "snapshot list --json: name, description, created, current"
else
  not_ok "snapshot list --json"; diag "$out"
fi
check_status "a second snapshot of that name is refused" 1 "$HUTCH" -q snapshot create "$vm" clean
check_status "an invalid snapshot name is a usage error" 2 "$HUTCH" -q snapshot create "$vm" 'Bad/Name'
out=$("$HUTCH" snapshot revert "$vm" nosuch 2>&1); rc=$?
if [ $rc -eq 1 ] && grep -q "no such snapshot" <<<"$out"; then ok "revert to a missing snapshot fails"; else not_ok "revert to a missing snapshot fails (exit $rc)"; diag "$out"; fi

# bash completion: snapshot names, VM names, verbs (hutch here is the binary under test)
completion() {
  bash -c '
    hutch() { "$HUTCH" "$@"; }
    . "$HUTCH_SOURCE_DIR/data/hutch.bash-completion"
    COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _hutch; printf "%s\n" "${COMPREPLY[@]}"' _ "$@"
}
check "completion: verbs" bash -c "$(declare -f completion); completion hutch sn | grep -qx snapshot"
check "completion: VM names" bash -c "$(declare -f completion); completion hutch start '' | grep -qx '$vm'"
check "completion: snapshot names" bash -c "$(declare -f completion); completion hutch snapshot revert '$vm' '' | grep -qx clean"
check "completion: profiles" bash -c "$(declare -f completion); completion hutch create x --profile def | grep -qx default"

# ---- virsh destroy: hutch notices, the helpers go by themselves, start brings it back -----
check "start" "$HUTCH" -q start "$vm"
check "change the guest: delete a file, make one" in_guest sh -c 'rm keep.txt && echo later > new.txt && echo outside > share/after.txt && sync'
check "virsh destroy" virsh destroy "$vm"
sleep 1
check "passt went away by itself" none_running -u "$(id -u)" -f "[p]asst.*/$vm/passt.socket"
check "virtiofsd went away by itself" none_running -f "[v]irtiofsd.*/hutch/$vm/virtiofs-"
out=$(state)
if [ "$out" = stopped ]; then ok "hutch list shows it stopped"; else not_ok "hutch list shows it stopped ($out)"; fi

check "revert the stopped VM" "$HUTCH" -q snapshot revert "$vm" clean
check "start after virsh destroy" "$HUTCH" -q start "$vm"
check "passt is back" passt_runs
check "virtiofsd is back" virtiofsd_runs
out=$(in_guest cat keep.txt 2>&1)
if [ "$out" = kept ]; then ok "after revert: the deleted file is back"; else not_ok "after revert: the deleted file is back"; diag "$out"; fi
check "after revert: the file made after the snapshot is gone" in_guest test ! -e new.txt
check "shares are not in snapshots: the share's file stays" test -f "$share/after.txt"

# ---- a snapshot of the running VM: stopped, snapshotted, started again --------------------
out=$("$HUTCH" snapshot create "$vm" running-one 2>&1); rc=$?
if [ $rc -eq 0 ]; then ok "snapshot create of the running VM"; else not_ok "snapshot create of the running VM (exit $rc)"; fi
if grep -q "shutting it down" <<<"$out" && grep -q "starting $vm again" <<<"$out"; then ok "the terminal says it stops and starts the VM"; else not_ok "the terminal says it stops and starts the VM"; fi
diag "$out"
check "it runs again and SSH works" in_guest true
check "passt runs after the restart" passt_runs
out=$("$HUTCH" snapshot list --name "$vm")
if [ "$out" = $'clean\nrunning-one' ]; then ok "snapshot list --name, oldest first"; else not_ok "snapshot list --name"; diag "$out"; fi

# ---- virsh shutdown -----------------------------------------------------------------------
check "virsh shutdown" virsh shutdown "$vm"
if wait_shut_off 120; then ok "the guest powered off"; else not_ok "the guest powered off"; fi
sleep 1
out=$(state)
if [ "$out" = stopped ]; then ok "hutch list shows it stopped"; else not_ok "hutch list shows it stopped ($out)"; fi
check "passt went away by itself" none_running -u "$(id -u)" -f "[p]asst.*/$vm/passt.socket"
check "virtiofsd went away by itself" none_running -f "[v]irtiofsd.*/hutch/$vm/virtiofs-"

check "snapshot delete" "$HUTCH" -q snapshot delete "$vm" running-one
out=$("$HUTCH" snapshot list --name "$vm")
if [ "$out" = clean ]; then ok "one snapshot left"; else not_ok "one snapshot left"; diag "$out"; fi
check_status "deleting a missing snapshot fails" 1 "$HUTCH" -q snapshot delete "$vm" running-one

# ---- doctor -------------------------------------------------------------------------------
out=$("$HUTCH" doctor 2>&1); rc=$?
json=$("$HUTCH" doctor --json 2>/dev/null)
if python3 -c 'import json,sys; l=json.load(sys.stdin); rc=int(sys.argv[1]); checks={r["check"]:r for r in l}; need={"kvm","libvirt","qemu","passt","virtiofsd","open-files","subuid","mmdebstrap","runtime-dir","cache-space"}; sys.exit(0 if need <= set(checks) and checks["libvirt"]["ok"] and (rc == 1) == any(not r["ok"] for r in l) and all("fix" in r for r in l if not r["ok"]) else 1)' "$rc" <<<"$json"; then
  ok "doctor --json: every check, a fix for each problem, exit status to match"
else
  not_ok "doctor --json"; diag "$json"
fi
# Whatever the permissions of /dev/kvm on this machine: on a kvm_pvm host the advice is TCG
# (access would not help), and no advice ever names a group that cannot open the device.
if [ -e /sys/module/kvm_pvm ]; then
  if grep -q "kvm_pvm" <<<"$out" && grep -q "HUTCH_ACCEL=tcg" <<<"$out"; then ok "doctor names the kvm_pvm limitation and the fix"; else not_ok "doctor names kvm_pvm"; fi
fi
if [ -e /dev/kvm ] && ! [ -r /dev/kvm -a -w /dev/kvm ] && [ ! -e /sys/module/kvm_pvm ]; then
  kvm_group=$(stat -c %G /dev/kvm); kvm_mode=$(stat -c %a /dev/kvm)
  if [ "$kvm_group" = root ] || [ $(( 0$kvm_mode & 060 )) -ne $(( 060 )) ]; then
    if grep -q "udev rule" <<<"$out"; then ok "doctor: /dev/kvm open to no group, the fix is a udev rule"; else not_ok "doctor: /dev/kvm open to no group"; fi
  fi
fi
if grep -q "usermod -aG root" <<<"$out"; then not_ok "doctor advises joining group root"; else ok "doctor never advises joining group root"; fi
# The hard open-file limit doctor reports is the one this process has.
hard=$(ulimit -Hn)
if python3 -c 'import json,sys; c={r["check"]:r for r in json.load(sys.stdin)}["open-files"]; h=sys.argv[1]; sys.exit(0 if ("hard limit %s" % h) in c["detail"] and c["ok"] == (h == "unlimited" or int(h) >= 65536) else 1)' "$hard" <<<"$json"; then
  ok "doctor reports the hard open-file limit ($hard) and whether shares are bounded by it"
else
  not_ok "doctor reports the hard open-file limit ($hard)"; diag "$json"
fi
diag "$out"

check "delete" "$HUTCH" -q delete "$vm"
check_status "the domain and its snapshots are gone" 1 virsh snapshot-list "$vm"
check "no instance directory" test ! -e "$instance_dir"

# ---- SIGTERM while --foreground is still starting (systemctl stop during a first boot) -----
# A blank disk never becomes ready, so the start is still waiting when the signal comes; the
# guest (SeaBIOS) ignores the power button, so this also shows the forced power-off.
blank=$(vm_name snapblank)
track_vm "$blank"
qemu-img create -q -f qcow2 "$E2E_TMP/blank.qcow2" 1G
printf 'cpus: 1\nmemory: 256MiB\ndisk: 2GiB\naccel: tcg\nimage: { file: %s }\n' \
  "$E2E_TMP/blank.qcow2" >"$E2E_TMP/blank.yaml"
check "create a VM that never gets ready" "$HUTCH" -q create "$blank" -f "$E2E_TMP/blank.yaml"
: >"$notify_log"
NOTIFY_SOCKET=$notify_sock "$HUTCH" start --foreground "$blank" 2>"$fg_log" &
fg=$!
# STATUS=...boot comes just before the domain is started: wait for the domain itself
for _ in $(seq 60); do [ "$(virsh domstate "$blank" 2>/dev/null)" = running ] && break; sleep 0.5; done
check "it is booting" bash -c "[ \"\$(virsh domstate '$blank')\" = running ]"
check "STATUS= said so" grep -q "STATUS=$blank: boot" "$notify_log"
kill -TERM $fg
wait $fg; rc=$?
if [ $rc -eq 0 ]; then ok "SIGTERM during the start: exit 0"; else not_ok "SIGTERM during the start: exit $rc"; diag "$(cat "$fg_log")"; fi
check "no READY=1 was sent" bash -c "! grep -q READY=1 '$notify_log'"
check "the domain is shut off" bash -c "[ \"\$(virsh domstate '$blank')\" = 'shut off' ]"
check "its passt is gone" none_running -u "$(id -u)" -f "[p]asst.*/$blank/passt.socket"
diag "$(cat "$fg_log")"
check "delete it" "$HUTCH" -q delete "$blank"
finish
