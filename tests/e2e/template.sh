#!/usr/bin/env bash
# hutch template: a provisioned VM's disk, generalised in a throwaway copy, as the base of new
# VMs that do not provision again. A template from the running test guest (stopped for the
# copy and started again, unchanged); what the template's disk holds, read offline; two VMs
# on it side by side (hutch clone TEMPLATE, hutch create --template) with their own host keys
# (each pinned; a swapped one refused), machine-ids, MACs and hostnames; a file written in one
# is in neither the other nor the template; template rm refused while they exist (and leaving
# the source whole once they are gone); a snapshot
# reverted in one; hutch run --template (exit status, nothing left) and a run on the template
# whose start fails (nothing left). About ten boots of the test guest, most of them restarts.
. "$(dirname "$0")/lib.sh"
require_libvirt

src=$(vm_name tsrc)
tpl=$(vm_name tpl)
a=$(vm_name ta)
b=$(vm_name tb)
track_vm "$src"
track_vm "$a"
track_vm "$b"
track_template "$tpl"
track_vm "$tpl"
track_vm "x$$"
instances=$XDG_DATA_HOME/hutch/instances
# a secret of the source's, whose value the template's throwaway copy must never hold
export HUTCH_E2E_TEMPLATE_CANARY=canary-$$-value
cat >"$E2E_TMP/src.yaml" <<YAML
base: $HUTCH_SOURCE_DIR/tests/image/test-guest.yaml
secrets:
  - name: TEMPLATE_CANARY
    from: env:HUTCH_E2E_TEMPLATE_CANARY
    hosts: [api.template.test]
    optional: true
provision:
  - name: counter
    run: |
      echo provisioned >> /var/lib/hutch-e2e-runs
YAML
mkdir -p "$E2E_TMP/proj-a" "$E2E_TMP/src-share"
echo "for a" >"$E2E_TMP/proj-a/marker"
guest_home=/home/$(id -un)

# ---- the source: provisioned, with a share, some history and a file ----------------------
check "start the source (first boot, provisioning)" "$HUTCH" -q start "$src" -f "$E2E_TMP/src.yaml" --share "$E2E_TMP/src-share:~/src-share"
check "the source has a file and a shell history" "$HUTCH" shell "$src" -- sh -c 'echo kept > survivor; echo "echo source-secret-history" > ~/.bash_history'
src_before=$("$HUTCH" shell "$src" -- sh -c 'sudo cat /etc/machine-id /etc/ssh/ssh_host_ed25519_key.pub | cut -d" " -f1-2; hostname')

check_status "template create without --from: usage error" 2 "$HUTCH" template create "$tpl"
check_status "a bad template name: usage error" 2 "$HUTCH" template create Bad_Name --from "$src"
check_status "from a missing VM: exit 1" 1 "$HUTCH" template create "$tpl" --from "nope-$$"
check_status "a missing template: clone exits 1" 1 "$HUTCH" clone "nope-$$" "$a"

out=$("$HUTCH" template create "$tpl" --from "$src" 2>&1); rc=$?
if [ $rc -eq 0 ]; then ok "template create from the running source"; else not_ok "template create (exit $rc)"; diag "$out"; fi
diag "$(grep -E 'template|made|zeroed' <<<"$out" | tail -4)"
check_status "the same name again: exit 1" 1 "$HUTCH" template create "$tpl" --from "$src"
if [ "$(virsh domstate "$src" 2>&1)" = running ]; then ok "the source runs again afterwards"; else not_ok "the source runs again afterwards"; fi
# it was started while template create took its signals in a thread: its helpers must not
# have inherited that mask (the egress helper reloads the policy on SIGHUP)
blocked=
# (the supervisor blocks them itself: it takes them through a signalfd)
helpers=0
for pid in $(pgrep -u "$(id -u)" -f "egress-helper .*/$src "); do
  helpers=$((helpers + 1))
  mask=$(awk '/^SigBlk:/ { print $2 }' "/proc/$pid/status")
  [ "$((16#$mask & 16#4003))" -eq 0 ] || blocked="$blocked $pid:$mask"
done
if [ "$helpers" -gt 0 ] && [ -z "$blocked" ]; then ok "the source's egress helper has SIGHUP, SIGINT and SIGTERM unblocked"; else not_ok "helpers started during template create have signals blocked ($helpers found):$blocked"; fi
src_after=$("$HUTCH" shell "$src" -- sh -c 'sudo cat /etc/machine-id /etc/ssh/ssh_host_ed25519_key.pub | cut -d" " -f1-2; hostname')
if grep -q "^ssh-ed25519 " <<<"$src_before" && [ "$src_before" = "$src_after" ]; then ok "the source keeps its machine-id, host key and hostname"; else not_ok "the source is unchanged"; diag "$src_before / $src_after"; fi
out=$("$HUTCH" shell "$src" -- sh -c 'cat survivor; cat ~/.bash_history; cat ~/src-share/.probe 2>/dev/null; ls ~/.ssh/authorized_keys' 2>&1)
if grep -q kept <<<"$out" && grep -q source-secret-history <<<"$out" && grep -q authorized_keys <<<"$out"; then ok "the source keeps its files, history and authorized key"; else not_ok "the source keeps its files"; diag "$out"; fi
if ! virsh list --all --name | has '^tmpl-'; then ok "no throwaway copy is left"; else not_ok "no throwaway copy is left"; diag "$(virsh list --all --name)"; fi

# ---- an interrupted template create leaves nothing ----------------------------------------
tpl2=$(vm_name tpl2)
track_template "$tpl2"
copy2=tmpl-$(printf %s "$tpl2" | sha256sum | cut -c1-12)
track_vm "$copy2"
"$HUTCH" -q template create "$tpl2" --from "$src" 2>"$E2E_TMP/t2.err" &
t2_pid=$!
for _ in $(seq 1 300); do
  [ "$(virsh domstate "$copy2" 2>/dev/null)" = running ] && break
  kill -0 $t2_pid 2>/dev/null || break
  sleep 1
done
# the source's secret is not in the copy's helpers' environment (they read what it sends)
copy_env=
for pid in $(pgrep -u "$(id -u)" -f "(egress-helper|supervise) .*$copy2"); do
  copy_env="$copy_env$(tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -c HUTCH_E2E_TEMPLATE_CANARY)"
done
if [ -n "$copy_env" ] && ! grep -q '[1-9]' <<<"$copy_env"; then ok "the copy's helpers do not hold the source's secret"; else not_ok "the copy's helpers and the source's secret (${copy_env:-no helper found})"; fi
kill -TERM $t2_pid
wait $t2_pid; rc=$?
if [ $rc -eq 143 ]; then ok "template create ended by SIGTERM while its copy boots: exit 143"; else not_ok "template create ended by SIGTERM (exit $rc)"; diag "$(cat "$E2E_TMP/t2.err")"; fi
sleep 1
if ! virsh dominfo "$copy2" >/dev/null 2>&1 && [ ! -e "$instances/$copy2" ] && [ ! -e "$XDG_CACHE_HOME/hutch/images/template-$tpl2" ]; then ok "and leaves neither its copy nor a template"; else not_ok "an interrupted template create leaves nothing"; diag "$(virsh list --all --name)"; fi
if [ "$(virsh domstate "$src" 2>&1)" = running ]; then ok "and the source runs again"; else not_ok "the source runs again after the interrupted create"; diag "$(cat "$E2E_TMP/t2.err")"; fi
# (its egress helper overwrites its environment's copy: what tells is the broker's note in
# the VM's egress log when an optional secret has no value)
src_log=$instances/$src/egress.log
if ! cat "$src_log"* 2>/dev/null | has "TEMPLATE_CANARY is left out"; then ok "the source started again with its secret"; else not_ok "the source started again with its secret"; diag "$(tail -5 "$src_log" 2>&1)"; fi

# Ctrl-C before the copy boots (while the source shuts down): the copy that is booted after
# it is powered off at once, so the create ends without generalising anything. Meanwhile a
# second create from the same source is refused (it would start the source under this one).
tpl3=$(vm_name tpl3)
track_template "$tpl3"
copy3=tmpl-$(printf %s "$tpl3" | sha256sum | cut -c1-12)
track_vm "$copy3"
"$HUTCH" template create "$tpl3" --from "$src" 2>"$E2E_TMP/t3.err" &
t3_pid=$!
for _ in $(seq 1 120); do
  grep -q "stopping it for the copy" "$E2E_TMP/t3.err" && break
  kill -0 $t3_pid 2>/dev/null || break
  sleep 0.5
done
tpl4=$(vm_name tpl4)
track_template "$tpl4"
out=$("$HUTCH" template create "$tpl4" --from "$src" 2>&1); rc=$?
if [ $rc -eq 1 ] && grep -q "a template is being made from $src already" <<<"$out"; then ok "a second template create from the same source: refused (exit 1)"; else not_ok "a second template create from the same source (exit $rc)"; diag "$out"; fi
kill -INT $t3_pid
wait $t3_pid; rc=$?
if [ $rc -eq 130 ] && ! grep -q "generalising" "$E2E_TMP/t3.err"; then ok "Ctrl-C while the source shuts down: exit 130, the copy never generalised"; else not_ok "Ctrl-C while the source shuts down (exit $rc)"; diag "$(tail -5 "$E2E_TMP/t3.err")"; fi
sleep 1
if ! virsh dominfo "$copy3" >/dev/null 2>&1 && [ ! -e "$XDG_CACHE_HOME/hutch/images/template-$tpl3" ] && [ "$(virsh domstate "$src" 2>&1)" = running ]; then ok "and leaves no copy, no template, the source running"; else not_ok "after Ctrl-C: no copy, no template, the source running"; diag "$(virsh list --all --name; tail -3 "$E2E_TMP/t3.err")"; fi

list=$("$HUTCH" template list --json)
if python3 -c '
import json, sys
t = [x for x in json.loads(sys.argv[1]) if x["name"] == sys.argv[2]]
assert len(t) == 1 and t[0]["source_vm"] == sys.argv[3] and "counter" in t[0]["steps"] and t[0]["used_by"] == [], t
' "$list" "$tpl" "$src"; then ok "template list: its source, steps, no user yet"; else not_ok "template list"; diag "$list"; fi

# ---- what the template's disk holds, read offline ----------------------------------------
tdir=$XDG_CACHE_HOME/hutch/images/template-$tpl
if [ -f "$tdir/disk.qcow2" ] && ! qemu-img info "$tdir/disk.qcow2" | has "backing file"; then ok "the template's disk stands alone (no backing file)"; else not_ok "the template's disk stands alone"; diag "$(qemu-img info "$tdir/disk.qcow2" 2>&1)"; fi
if grep -qx "shares: \[\]" "$tdir/profile.yaml" && ! grep -q "src-share" "$tdir/profile.yaml"; then ok "the template's profile has no share of the source"; else not_ok "the template's profile has no share"; diag "$(cat "$tdir/profile.yaml")"; fi
qemu-img convert -O raw "$tdir/disk.qcow2" "$E2E_TMP/tpl.raw"
fsck_out=$(e2fsck -fn "$E2E_TMP/tpl.raw" 2>&1); rc=$?
if [ $rc -eq 0 ]; then ok "the template's file system is clean"; else not_ok "the template's file system is clean (e2fsck $rc)"; diag "$(tail -5 <<<"$fsck_out")"; fi
in_template() { debugfs -R "$1" "$E2E_TMP/tpl.raw" 2>/dev/null; }
if [ -z "$(in_template 'ls /etc/ssh' | grep -o 'ssh_host_[a-z0-9_]*key[.a-z]*')" ]; then ok "no SSH host key in the template"; else not_ok "no SSH host key in the template"; diag "$(in_template 'ls /etc/ssh')"; fi
if [ -z "$(in_template 'cat /etc/machine-id')" ]; then ok "an empty machine-id in the template"; else not_ok "an empty machine-id in the template"; fi
home_listing=$(in_template "ls -l $guest_home")$'\n'$(in_template "ls -l $guest_home/.ssh")
if ! grep -qE '\.bash_history|authorized_keys' <<<"$home_listing" && grep -q survivor <<<"$home_listing"; then ok "no shell history or authorized key in the template (its files kept)"; else not_ok "no history or authorized key in the template"; diag "$home_listing"; fi
if ! in_template 'ls /var/lib/cloud' | has -w instances; then ok "no cloud-init instance state in the template"; else not_ok "no cloud-init instance state"; diag "$(in_template 'ls /var/lib/cloud')"; fi
if ! in_template 'cat /etc/fstab' | has hutchfs; then ok "no share mount line of the source in the template"; else not_ok "no share mount line in the template"; diag "$(in_template 'cat /etc/fstab')"; fi
if in_template 'ls /var/lib/hutch' | has identity-pending; then ok "the template's first boot takes an identity (identity-pending)"; else not_ok "identity-pending in the template"; fi
# Removed files leave their bytes in the free blocks unless the copy zeroes them: guest root
# in a VM on the template reads /dev/vda. What is looked for: the source's shell history and
# its host private key (the key file, and the copies cloud-init kept of the user-data that
# carried it), each body line but the first (the same in every ed25519 key). The source's own
# disk, read the same way, must hold them: the control that the search finds what is there.
key_lines=$(sed -e '/^-----/d' -e 1d "$instances/$src/ssh_host_ed25519_key")
{ echo source-secret-history; echo "$key_lines"; } | grep . >"$E2E_TMP/secrets.pat"
disk_holds() { # FILE: which of the source's secrets FILE's bytes hold; its holes are skipped
  # (grep reads a sparse 4 GiB disk image's zeros for over a minute)
  python3 - "$1" "$E2E_TMP/secrets.pat" <<'PY'
import os, sys
pats = [l.strip().encode() for l in open(sys.argv[2]) if l.strip()]
found = set()
fd = os.open(sys.argv[1], os.O_RDONLY)
size, off, keep, chunk = os.fstat(fd).st_size, 0, max(len(p) for p in pats), 64 << 20
while off < size:
    try:
        start = os.lseek(fd, off, os.SEEK_DATA)
    except OSError:  # no data after off
        break
    end, pos, tail = os.lseek(fd, start, os.SEEK_HOLE), start, b""
    while pos < end:
        buf = tail + os.pread(fd, min(chunk, end - pos), pos)
        found.update(p for p in pats if p in buf)
        tail, pos = buf[-keep:], pos + min(chunk, end - pos)
    off = end
for p in sorted(found):
    print("history" if p == b"source-secret-history" else "host key line %s..." % p[:12].decode())
PY
}
qemu-img convert -U -O raw "$instances/$src/disk.qcow2" "$E2E_TMP/src.raw"
found_src=$(disk_holds "$E2E_TMP/src.raw")
rm -f "$E2E_TMP/src.raw"
if grep -q history <<<"$found_src" && grep -q "host key" <<<"$found_src"; then ok "the source's disk holds its history and host key (the search's control)"; else not_ok "the search finds the source's history and host key in the source's disk"; diag "found: $found_src"; fi
found_tpl=$(disk_holds "$E2E_TMP/tpl.raw")
if [ -n "$key_lines" ] && [ -z "$found_tpl" ]; then ok "neither the source's history nor its host key is anywhere in the template's disk, free blocks included"; else not_ok "the template's disk holds the source's removed secrets"; diag "found: $found_tpl"; fi
rm -f "$E2E_TMP/tpl.raw"

# ---- two VMs on the template, side by side -------------------------------------------------
out=$("$HUTCH" clone "$tpl" "$a" --share "$E2E_TMP/proj-a:~/proj" 2>&1); rc=$?
if [ $rc -eq 0 ]; then ok "clone TEMPLATE (with a share)"; else not_ok "clone TEMPLATE (exit $rc)"; diag "$out"; fi
out=$("$HUTCH" create "$b" --template "$tpl" 2>&1); rc=$?
if [ $rc -eq 0 ]; then ok "create --template"; else not_ok "create --template (exit $rc)"; diag "$out"; fi
# a VM with a template's name: clone takes the VM and says so
check "a VM named like the template (not started)" "$HUTCH" -q create "$tpl" --template "$tpl"
out=$("$HUTCH" clone "$tpl" "x$$" 2>&1)
if grep -q "'$tpl' is a VM and a template: cloning the VM" <<<"$out"; then ok "clone NAME when NAME is a VM and a template: says it takes the VM"; else not_ok "clone of a name that is a VM and a template"; diag "$out"; fi
check "delete that VM" "$HUTCH" -q delete "$tpl"
check_status "--template with --profile: usage error" 2 "$HUTCH" create "x$$" --template "$tpl" --profile default
check "start the first" "$HUTCH" -q start "$a"
check "start the second beside it" "$HUTCH" -q start "$b"
id_of() { "$HUTCH" shell "$1" -- sh -c 'hostname; cat /etc/machine-id; cut -d" " -f1-2 /etc/ssh/ssh_host_ed25519_key.pub; sudo cat /var/lib/hutch-e2e-runs | wc -l; cat survivor; cat ~/proj/marker 2>/dev/null || echo no-share' 2>&1; }
mapfile -t ia < <(id_of "$a")
mapfile -t ib < <(id_of "$b")
# (a clone that did not answer gives fewer lines: the checks below fail, the suite goes on)
while [ ${#ia[@]} -lt 6 ]; do ia+=(""); done
while [ ${#ib[@]} -lt 6 ]; do ib+=(""); done
diag "a: ${ia[*]}"
diag "b: ${ib[*]}"
src_mid=$(sed -n 1p <<<"$src_before")
if [ "${ia[0]}" = "$a" ] && [ "${ib[0]}" = "$b" ]; then ok "each has its own hostname"; else not_ok "each has its own hostname"; fi
if [ -n "${ia[1]}" ] && [ -n "${ib[1]}" ] && [ "${ia[1]}" != "${ib[1]}" ] && [ "${ia[1]}" != "$src_mid" ] && [ "${ib[1]}" != "$src_mid" ]; then ok "each has its own machine-id (not the source's)"; else not_ok "each has its own machine-id"; fi
pin_a=$(cut -d' ' -f1-2 "$instances/$a/ssh_host_ed25519_key.pub"); pin_b=$(cut -d' ' -f1-2 "$instances/$b/ssh_host_ed25519_key.pub")
if [ "${ia[2]}" = "$pin_a" ] && [ "${ib[2]}" = "$pin_b" ] && [ "$pin_a" != "$pin_b" ] && ! grep -qF "$pin_a" <<<"$src_before"; then ok "each guest has its own host key, the one hutch pinned"; else not_ok "each guest has its pinned host key"; diag "${ia[2]} / $pin_a; ${ib[2]} / $pin_b"; fi
if [ "${ia[3]}" = 1 ] && [ "${ib[3]}" = 1 ]; then ok "provisioning did not run again"; else not_ok "provisioning did not run again"; fi
if [ "${ia[4]}" = kept ] && [ "${ib[4]}" = kept ]; then ok "both have the source's files"; else not_ok "both have the source's files"; fi
if [ "${ia[5]}" = "for a" ] && [ "${ib[5]}" = no-share ]; then ok "the first mounts its own share, the second none"; else not_ok "shares: only the first's own"; fi
mac_of() { virsh dumpxml "$1" | grep -o "52:54:00:[0-9a-f:]*" | head -1; }
mac_a=$(mac_of "$a"); mac_b=$(mac_of "$b"); mac_s=$(mac_of "$src")
if [ -n "$mac_a" ] && [ "$mac_a" != "$mac_b" ] && [ "$mac_a" != "$mac_s" ] && [ "$mac_b" != "$mac_s" ]; then ok "each has its own MAC"; else not_ok "each has its own MAC ($mac_a $mac_b $mac_s)"; fi
"$HUTCH" ssh-config "$a" >"$E2E_TMP/ssh_config_a"
out=$(ssh -F "$E2E_TMP/ssh_config_a" -o BatchMode=yes "$a" 'echo via-openssh' 2>&1)
if [ "$out" = via-openssh ]; then ok "OpenSSH accepts the first with its pinned key"; else not_ok "OpenSSH accepts the first with its pinned key"; diag "$out"; fi

check "write a file in the first" "$HUTCH" shell "$a" -- sh -c 'echo only-in-a > only-in-a'
out=$("$HUTCH" shell "$b" -- sh -c 'ls only-in-a 2>&1' 2>&1)
if ! grep -qx only-in-a <<<"$out"; then ok "the file is not in the second"; else not_ok "the file is not in the second"; fi
qemu-img convert -O raw "$tdir/disk.qcow2" "$E2E_TMP/tpl.raw"
if ! in_template "ls $guest_home" | has only-in-a; then ok "nor in the template"; else not_ok "the file is not in the template"; fi
rm -f "$E2E_TMP/tpl.raw"

# a swapped pin: the second's key pinned for the first is refused on a new connection
pub=$instances/$a/ssh_host_ed25519_key.pub
cp "$pub" "$E2E_TMP/pub.saved"
cp "$instances/$b/ssh_host_ed25519_key.pub" "$pub"
pkill -TERM -u "$(id -u)" -f "supervise( [^ ]+)* $a\$"
for _ in $(seq 1 20); do pgrep -u "$(id -u)" -f "supervise( [^ ]+)* $a\$" >/dev/null || break; sleep 0.5; done
out=$("$HUTCH" shell "$a" -- true 2>&1); rc=$?
if [ $rc -eq 1 ] && grep -qi "host key" <<<"$out"; then ok "the other clone's key pinned for this one is refused"; else not_ok "a swapped pinned key is refused (exit $rc)"; diag "$out"; fi
cp "$E2E_TMP/pub.saved" "$pub"

out=$("$HUTCH" template rm "$tpl" 2>&1); rc=$?
if [ $rc -eq 1 ] && grep -q "used by" <<<"$out" && [ -d "$tdir" ]; then ok "template rm is refused while VMs use it"; else not_ok "template rm refused while used (exit $rc)"; diag "$out"; fi
if [ "$("$HUTCH" info --json "$a" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("template"))')" = "$tpl" ]; then ok "info names the template"; else not_ok "info names the template"; fi

# ---- a snapshot of a VM on the template ----------------------------------------------------
check "stop the first" "$HUTCH" -q stop "$a"
check "snapshot it" "$HUTCH" -q snapshot create "$a" before
check "start it" "$HUTCH" -q start "$a"
check "write after the snapshot" "$HUTCH" shell "$a" -- sh -c 'echo later > after-snapshot'
check "revert it (running: restarted)" "$HUTCH" -q snapshot revert "$a" before
out=$("$HUTCH" shell "$a" -- sh -c 'ls; hostname' 2>&1)
if grep -qx only-in-a <<<"$out" && ! grep -qx after-snapshot <<<"$out" && grep -qx "$a" <<<"$out"; then ok "revert: the snapshot's files, its identity kept"; else not_ok "revert of a VM on a template"; diag "$out"; fi

# ---- deleting one breaks neither the other nor the template --------------------------------
check "delete the first" "$HUTCH" -q delete --force "$a"
check "the second still works" "$HUTCH" shell "$b" -- true
check "delete the second" "$HUTCH" -q delete --force "$b"
check "the source is stopped for the runs below" "$HUTCH" -q stop "$src"

# ---- hutch run on the template --------------------------------------------------------------
gone() {
  ! "$HUTCH" list --json 2>/dev/null | python3 -c 'import json,sys; sys.exit(0 if any(v["name"] == sys.argv[1] for v in json.load(sys.stdin)) else 1)' "$1" &&
    [ ! -e "$instances/$1" ] && ! virsh dominfo "$1" >/dev/null 2>&1 &&
    none_running -u "$(id -u)" -f "[/]$1/" >/dev/null && none_running -u "$(id -u)" -f "supervise( [^ ]+)* $1\$" >/dev/null
}
run=$(vm_name trun)
track_vm "$run"
out=$("$HUTCH" -q run --name "$run" --template "$tpl" --share "$E2E_TMP/proj-a" -- sh -c 'cat marker; exit 3' 2>&1); rc=$?
if [ $rc -eq 3 ] && grep -q "for a" <<<"$out"; then ok "run --template: the command's status (3), in the share"; else not_ok "run --template (exit $rc)"; diag "$out"; fi
sleep 1
if gone "$run"; then ok "nothing of it is left (domain, directory, helpers)"; else not_ok "nothing of the run is left"; diag "$("$HUTCH" list 2>&1)"; fi

# a start that fails (the guest cannot be ready in 1 s): the run still removes its VM
cat >"$E2E_TMP/on-template.yaml" <<YAML
image:
  template: $tpl
boot_timeout: 1
YAML
run=$(vm_name tfail)
track_vm "$run"
out=$("$HUTCH" -q run --name "$run" -f "$E2E_TMP/on-template.yaml" -- true 2>&1); rc=$?
if [ $rc -ne 0 ] && [ $rc -ne 3 ]; then ok "a run whose start fails exits non-zero ($rc)"; else not_ok "a failed start's run exits non-zero (exit $rc)"; diag "$out"; fi
sleep 1
if gone "$run"; then ok "and leaves nothing behind"; else not_ok "a failed start leaves nothing"; diag "$("$HUTCH" list 2>&1)"; fi

# a profile on the template that asks for a step the template does not hold is refused
cat >"$E2E_TMP/more-steps.yaml" <<YAML
image:
  template: $tpl
provision:
  - name: extra
    run: "true"
YAML
out=$("$HUTCH" create "x$$" -f "$E2E_TMP/more-steps.yaml" 2>&1); rc=$?
if [ $rc -ne 0 ] && grep -q "more-steps.yaml:[0-9]*" <<<"$out" && grep -q "extra" <<<"$out" && [ ! -e "$instances/x$$" ]; then ok "a step the template does not hold: refused, naming file and line"; else not_ok "a step the template does not hold is refused (exit $rc)"; diag "$out"; fi

check "template rm once nothing uses it" "$HUTCH" -q template rm "$tpl"
if [ ! -e "$tdir" ] && ! "$HUTCH" template list --json | has "\"$tpl\""; then ok "the template is gone"; else not_ok "the template is gone"; fi
# the source is whole after template rm (that it starts again, unchanged, after a template
# was made from it is checked above: its machine-id, host key, hostname, files and history)
if qemu-img check -q "$instances/$src/disk.qcow2" && "$HUTCH" info "$src" >/dev/null; then ok "template rm leaves the source whole (its disk checks clean)"; else not_ok "the source after template rm"; diag "$(qemu-img check "$instances/$src/disk.qcow2" 2>&1)"; fi
check "delete the source" "$HUTCH" -q delete --force "$src"
finish
