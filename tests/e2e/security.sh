#!/usr/bin/env bash
# The sandbox's guarantees, attacked from inside a real guest (as the guest user and as
# root), plus the sandbox guide's workflow: a writable ~/VM-Shared, a read-only share, one
# forwarded port. One VM serves the whole suite. docs/security.md lists each guarantee with
# the test here that proves it.
#
# Traffic stays on this machine: the guest probes only addresses that are local to the host
# (its loopback as seen through passt, the test address 198.51.100.1 that tests/run adds on
# a dummy interface) and never the gateway or 10.0.2.2, which would leave the machine.
. "$(dirname "$0")/lib.sh"
require_libvirt

# What libssh2 may keep for one SSH session, lowered from 256 MiB so that the flood in h1 need
# not push 256 MiB through the guest's sshd under TCG (the mechanism is the same; unit
# ssh/sftp-flood checks the default)
export HUTCH_SSH_SESSION_MEMORY_MIB=64

# A home of its own, so that the canaries planted in it are the test's.
export HOME=$E2E_TMP/home
mkdir -p "$HOME/.ssh" "$HOME/VM-Shared" "$HOME/ro-share" "$E2E_TMP/outside"
chmod 700 "$HOME/.ssh"
tag=hutch-canary-$$
export NPM_TOKEN=$tag-env
export GITHUB_TOKEN=$tag-env-gh
echo "//registry.npmjs.org/:_authToken=$tag-npmrc" >"$HOME/.npmrc"
echo "$tag-private-key" >"$HOME/.ssh/id_canary"
ssh-keygen -q -t ed25519 -N '' -C "$tag-agent-key" -f "$HOME/.ssh/id_agent"
eval "$(ssh-agent -s)" >/dev/null
ssh-add -q "$HOME/.ssh/id_agent" 2>/dev/null
echo "$tag-outside" >"$E2E_TMP/outside/secret"
echo "read only" >"$HOME/ro-share/ro-file"
echo "from the host" >"$HOME/VM-Shared/host-file"
outside_sum=$(cd "$E2E_TMP/outside" && sha256sum secret)
ro_sum=$(cd "$HOME/ro-share" && ls -la --time-style=+ . | sha256sum; sha256sum ro-file)

fwd_port=$(free_port)
loop_port=$(free_port)
any_port=$(free_port)
mkdir -p "$E2E_TMP/loop" "$E2E_TMP/any"
echo "$tag-loopback-service" >"$E2E_TMP/loop/index.html"
echo "any-address-service" >"$E2E_TMP/any/index.html"
python3 -m http.server --bind 127.0.0.1 --directory "$E2E_TMP/loop" "$loop_port" >/dev/null 2>&1 &
loop_pid=$!
python3 -m http.server --bind 0.0.0.0 --directory "$E2E_TMP/any" "$any_port" >/dev/null 2>&1 &
any_pid=$!
trap 'kill $loop_pid $any_pid $SSH_AGENT_PID 2>/dev/null; e2e_cleanup' EXIT
other_addr=198.51.100.1
have_other_addr=0
ip -4 addr show | has "inet $other_addr/" && have_other_addr=1
# CI (tests/run as root) always adds it: there its absence is a failure, not a skip.
if [ $have_other_addr = 0 ] && [ -n "${CI:-}" ]; then
  not_ok "the test address $other_addr exists on this host (tests/run adds it on lo as root)"
fi

vm=$(vm_name sec)
track_vm "$vm"
v6_port=$(free_port)
mkdir -p "$HOME/VM-Shared/nested"
# run_tty OUT CMD...: CMD on a pseudo-terminal (as a user's terminal would show it), its output
# in OUT; sets tty_rc and tty_hwm_kib (CMD's peak resident memory, from /proc).
run_tty() {
  local out=$1 cmd spid child="" hwm=0 h; shift
  cmd=$(printf '%q ' "$@")
  SHELL=/bin/sh script -qefc "exec $cmd" /dev/null >"$out" 2>&1 </dev/null &
  spid=$!
  while kill -0 "$spid" 2>/dev/null; do
    [ -n "$child" ] || child=$(pgrep -P "$spid" | head -1)
    if [ -n "$child" ]; then h=$(awk '/^VmHWM/{print $2}' "/proc/$child/status" 2>/dev/null); [ -n "$h" ] && hwm=$h; fi
    sleep 0.2
  done
  wait "$spid"; tty_rc=$?; tty_hwm_kib=$hwm
}
run_tty "$E2E_TMP/start1.tty" "$HUTCH" start "$vm" -f "$HUTCH_SOURCE_DIR/tests/image/test-guest.yaml" \
      --share "~/VM-Shared:~/Shared" --share "$HOME/ro-share:/opt/ro:ro" \
      --share "~/VM-Shared/nested:/opt/nested" \
      --port "$fwd_port:8777" --port "[::1]:$v6_port:8779"
rc=$tty_rc; first_start_hwm_kib=$tty_hwm_kib; out=$(tr -d '\r' <"$E2E_TMP/start1.tty")
if [ $rc -eq 0 ]; then ok "start with a writable share, a read-only share, a nested share and ports (IPv4 and IPv6)"; else not_ok "start with shares and ports (exit $rc)"; diag "$out"; finish; exit 1; fi
diag "hutch start's peak memory: $first_start_hwm_kib KiB"
in_guest() { "$HUTCH" shell "$vm" -- "$@"; }
as_root() { "$HUTCH" shell "$vm" -- sudo "$@"; }
guest_home=$(in_guest sh -c 'echo $HOME')

# ---- the sandbox guide's workflow -------------------------------------------------------
out=$(in_guest cat Shared/host-file 2>&1)
if [ "$out" = "from the host" ]; then ok "a file made on the host appears in the guest"; else not_ok "host file in guest"; diag "$out"; fi
check "the guest user writes to the share" in_guest sh -c 'echo from-guest > ~/Shared/guest-file'
if [ "$(cat "$HOME/VM-Shared/guest-file" 2>&1)" = from-guest ]; then ok "a file made in the guest appears on the host"; else not_ok "guest file on host"; fi
if [ "$(stat -c %u "$HOME/VM-Shared/guest-file")" = "$(id -u)" ]; then ok "the guest user's file belongs to the host user"; else not_ok "owner of the guest's file: $(stat -c %u "$HOME/VM-Shared/guest-file")"; fi
if [ "$(stat -c %g "$HOME/VM-Shared/guest-file")" = "$(id -g)" ]; then ok "and to the host user's group"; else not_ok "group of the guest's file: $(stat -c %g "$HOME/VM-Shared/guest-file")"; fi
# the seed makes the guest user's own group with the gid shares are mapped to (user.gid,
# default the uid), named like the user
out=$(in_guest sh -c 'echo "$(id -u) $(id -g) $(id -un) $(id -gn)"' 2>&1)
if [ "$out" = "$(id -u) $(id -u) $(id -un) $(id -un)" ]; then ok "the guest user's primary group is its own, with the uid's number"; else not_ok "guest user and group (uid gid user group): $out"; fi
in_guest sh -c 'cd ~/Shared && nohup setsid python3 -m http.server 8777 >/dev/null 2>&1 </dev/null &'
# an undeclared guest port: one that is free on the host too, so that only a forward could
# make it answer there
undeclared_port=$(free_port)
in_guest sh -c "nohup setsid python3 -m http.server $undeclared_port >/dev/null 2>&1 </dev/null &"
listing=""
for i in $(seq 1 30); do listing=$(curl -s -m 5 "http://127.0.0.1:$fwd_port/" 2>/dev/null) && [ -n "$listing" ] && break; sleep 1; done
if grep -q host-file <<<"$listing" && grep -q guest-file <<<"$listing"; then ok "the guest's server answers on the host's 127.0.0.1:$fwd_port"; else not_ok "guest server through the forwarded port"; diag "$listing"; fi
# The VM's supervisor killed with SIGKILL loses nothing: the guest keeps its network (the
# forwarded port answers) and its share, and the next shell works (and starts a new one).
sup_pid=$("$HUTCH" info --json "$vm" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("supervisor_pid", 0))')
# started by it: the egress helper and the three shares' virtiofsd are its children
out=$(helpers_are_children "$vm"); rc=$?
ppid=$(awk '/^PPid:/{print $2}' "/proc/$(awk '{print $1}' "$XDG_RUNTIME_DIR/hutch/$vm/virtiofs-2.pid")/status" 2>/dev/null)
if [ $rc -eq 0 ] && [ "$ppid" = "$sup_pid" ]; then ok "the VM's helpers are children of its supervisor"; else not_ok "the VM's helpers are children of its supervisor ($sup_pid)"; diag "$out"; fi
if [ "$sup_pid" -gt 0 ] && kill -9 "$sup_pid"; then ok "the supervisor (pid $sup_pid) killed with SIGKILL"; else not_ok "a supervisor to kill"; fi
sleep 1
echo after-kill >"$HOME/VM-Shared/after-kill"
out=$(in_guest cat Shared/after-kill 2>&1)
listing=$(curl -s -m 10 "http://127.0.0.1:$fwd_port/" 2>&1)
if [ "$out" = after-kill ] && grep -q after-kill <<<"$listing"; then ok "after it, the share and the forwarded port work, and so does hutch shell"; else not_ok "after the supervisor's SIGKILL: share, port, shell"; diag "$out"; diag "$listing"; fi

# ---- (d) ports ---------------------------------------------------------------------------
got=$(in_guest sh -c "for i in 1 2 3 4 5 6 7 8 9 10; do curl -s -m 5 http://127.0.0.1:$undeclared_port/ && break; sleep 1; done" 2>&1)
if grep -q "Shared/" <<<"$got"; then ok "the undeclared guest server answers inside the guest"; else not_ok "the undeclared guest server answers inside the guest"; diag "$got"; fi
check_status "an undeclared guest port ($undeclared_port) is not reachable from the host" 7 curl -s -m 5 "http://127.0.0.1:$undeclared_port/"
host_addr=$(ip -4 -o addr show scope global | awk '{print $4}' | cut -d/ -f1 | head -1)
if [ -n "$host_addr" ]; then
  if ! curl -s -m 5 "http://$host_addr:$fwd_port/" >/dev/null 2>&1; then ok "the forwarded port does not answer on $host_addr"; else not_ok "the forwarded port answers on $host_addr"; fi
fi
# The port's listeners alone (a filter, not grep -q on all of them: under pipefail, grep -q
# leaving early kills ss with SIGPIPE when the host has many listeners, e.g. another VM's
# 8000-9000).
listeners=$(ss -ltnH "sport = :$fwd_port" | awk '{print $4}')
if grep -qx "127.0.0.1:$fwd_port" <<<"$listeners" && ! grep -q "^\(0.0.0.0\|\*\|\[::\]\):$fwd_port$" <<<"$listeners"; then
  ok "the forward listens on 127.0.0.1 only"
else
  not_ok "the forward listens on 127.0.0.1 only"; diag "$(ss -ltn | grep ":$fwd_port")"
fi

# ---- (c) the host's loopback services ----------------------------------------------------
probe() {  # probe USER|ROOT URL: ok when the guest gets nothing from it
  local who=$1 url=$2 got
  if [ "$who" = root ]; then got=$(as_root curl -s -m 5 "$url" 2>/dev/null); else got=$(in_guest curl -s -m 5 "$url" 2>/dev/null); fi
  if grep -q "$tag" <<<"$got"; then not_ok "guest ($who) cannot reach the host's 127.0.0.1 service via $url"; diag "$got"
  else ok "guest ($who) cannot reach the host's 127.0.0.1 service via $url"; fi
}
for who in user root; do
  probe $who "http://127.0.0.1:$loop_port/"
  probe $who "http://[::1]:$loop_port/"
  for a in $(in_guest sh -c "ip -o addr show | awk '{print \$4}' | cut -d/ -f1"); do
    case $a in 127.*|::1) continue;; esac
    [[ $a == fe80:* ]] && continue
    [[ $a == *:* ]] && a="[$a]"
    probe $who "http://$a:$loop_port/"
  done
  if [ $have_other_addr = 1 ]; then probe $who "http://$other_addr:$loop_port/"; fi
done
diag "not probed: the gateway address and 10.0.2.2 (passt would send those connections off this machine; the unit test net/passt-argv checks --no-map-gw)"

# ---- (g) what passt alone let through, closed by the egress policy ---------------------
# The test guest's profile says no network mode, so the VM runs under the default, public:
# a host service bound to 0.0.0.0 is not reachable through the host's own address (passt
# alone reached it; egress.sh attacks the policy in every mode).
if [ $have_other_addr = 1 ]; then
  for who in user root; do
    if [ $who = root ]; then got=$(as_root curl -s -m 5 "http://$other_addr:$any_port/" 2>&1); else got=$(in_guest curl -s -m 5 "http://$other_addr:$any_port/" 2>&1); fi
    if [ "$got" != any-address-service ]; then ok "guest ($who) cannot reach a host service on 0.0.0.0 via the host's address $other_addr (egress: public)"; else not_ok "guest ($who) reaches a host service on 0.0.0.0 via $other_addr"; diag "$got"; fi
  done
else
  not_ok "a second host address to probe (tests/run as root adds $other_addr)"
fi

# ---- (a) escaping the share --------------------------------------------------------------
in_guest sh -c "ln -s / ~/Shared/to-root; ln -s '$E2E_TMP/outside/secret' ~/Shared/to-secret" 2>/dev/null
got=$(in_guest sh -c "cat ~/Shared/to-secret; cat ~/Shared/to-root'$E2E_TMP/outside/secret'; ls ~/Shared/to-root/ ~/Shared/to-root'$E2E_TMP'" 2>&1)
if ! grep -q "$tag" <<<"$got"; then ok "symlinks in the share resolve in the guest, not on the host"; else not_ok "symlink escape"; diag "$got"; fi
got=$(as_root sh -c "cat '$guest_home/Shared/../../..$E2E_TMP/outside/secret'; echo x > '$guest_home/Shared/../escape'" 2>&1)
if ! grep -q "$tag" <<<"$got" && [ ! -e "$HOME/escape" ] && [ ! -e "$HOME/../escape" ]; then ok "'..' paths stay in the guest"; else not_ok "'..' escape"; diag "$got"; fi
as_root sh -c "ln /etc/shadow '$guest_home/Shared/shadow-link'" >/dev/null 2>&1
as_root sh -c "cd '$guest_home/Shared' && ln host-file hard-link" >/dev/null 2>&1
if [ ! -e "$HOME/VM-Shared/shadow-link" ]; then ok "a hard link from outside the share into it is refused"; else not_ok "hard link from the guest's /etc into the share"; fi
as_root sh -c "mknod '$guest_home/Shared/blk' b 8 0; mknod '$guest_home/Shared/chr' c 1 3" >/dev/null 2>&1
if [ -z "$(find "$HOME/VM-Shared" \( -type b -o -type c \) 2>/dev/null)" ]; then ok "guest root cannot create device nodes in the share"; else not_ok "device nodes in the share"; diag "$(ls -la "$HOME/VM-Shared")"; fi
as_root sh -c "echo root > '$guest_home/Shared/root-file'; chown root '$guest_home/Shared/root-file'; chmod u+s '$guest_home/Shared/root-file'" >/dev/null 2>&1
if [ -e "$HOME/VM-Shared/root-file" ] && [ "$(stat -c %u "$HOME/VM-Shared/root-file")" != 0 ] && [ "$(stat -c %u "$HOME/VM-Shared/root-file")" != "$(id -u)" ]; then
  ok "guest root's files are a subordinate uid's on the host, not root's and not the user's"
else
  not_ok "guest root's file owner on the host"; diag "$(ls -ln "$HOME/VM-Shared")"
fi
if [ "$(cd "$E2E_TMP/outside" && sha256sum secret)" = "$outside_sum" ] && [ "$(ls "$E2E_TMP/outside")" = secret ]; then ok "nothing outside the share changed"; else not_ok "something outside the share changed"; fi

# ---- (b) the read-only share -------------------------------------------------------------
check_status "the guest user cannot write the read-only share" 1 in_guest touch /opt/ro/new
as_root mount -o remount,rw /opt/ro >/dev/null 2>&1
got=$(as_root sh -c 'touch /opt/ro/new; echo changed > /opt/ro/ro-file; rm -f /opt/ro/ro-file; mkdir /opt/ro/d' 2>&1)
now_sum=$(cd "$HOME/ro-share" && ls -la --time-style=+ . | sha256sum; sha256sum ro-file)
if [ "$now_sum" = "$ro_sum" ]; then ok "the read-only share stays read-only for root after remount,rw"; else not_ok "read-only share changed"; diag "$got"; diag "$(ls -la "$HOME/ro-share")"; fi
if grep -qi "read-only" <<<"$got"; then ok "writes fail with EROFS (enforced by the host)"; else not_ok "writes fail with EROFS"; diag "$got"; fi

# ---- (e) no host secrets in the guest ----------------------------------------------------
got=$(in_guest sh -c 'env; ls -la ~/.ssh; echo "agent=${SSH_AUTH_SOCK:-none}"' 2>&1)
if ! grep -q "$tag" <<<"$got" && grep -q "agent=none" <<<"$got"; then ok "no host environment and no SSH agent in a guest shell"; else not_ok "host environment or agent in the guest"; diag "$got"; fi
# A positive control, so that a search that finds nothing because it did not run fails.
as_root sh -c "echo '$tag-control' > /var/tmp/canary-control"
got=$(as_root sh -c "grep -rIl --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev --exclude-dir=run --exclude-dir=Shared -e '$tag' / 2>/dev/null; true")
if [ "$got" = /var/tmp/canary-control ]; then ok "no canary (env, ~/.npmrc, ~/.ssh key, agent key) anywhere on the guest's disk"; else not_ok "canaries found in the guest (or the search did not run)"; diag "$got"; fi
got=$(as_root sh -c "ls /home/*/.ssh /root/.ssh 2>/dev/null; cat /home/*/.ssh/authorized_keys" 2>&1)
if ! grep -q "$tag-agent-key" <<<"$got" && ! grep -q id_canary <<<"$got"; then ok "only hutch's key is authorized; no host key files copied"; else not_ok "host keys in the guest"; diag "$got"; fi

# ---- (f) modes of what hutch writes on the host -----------------------------------------
bad=""
for root in "$XDG_DATA_HOME/hutch" "$XDG_RUNTIME_DIR/hutch" "$XDG_CACHE_HOME/hutch"; do
  [ -d "$root" ] || continue
  [ "$(stat -c %a "$root")" = 700 ] || bad+="$root is $(stat -c %a "$root")"$'\n'
  while IFS= read -r f; do
    mode=$(stat -c %a "$f")
    # every file: no group or other bits, or it sits in a 0700 directory
    if [ $((0$mode & 077)) -ne 0 ] && [ "$(stat -c %a "$(dirname "$f")")" != 700 ]; then bad+="$f $mode"$'\n'; fi
  done < <(find "$root" -mindepth 1 ! -type d)
  while IFS= read -r d; do
    [ "$(stat -c %a "$d")" = 700 ] || bad+="$d $(stat -c %a "$d")"$'\n'
  done < <(find "$root" -mindepth 1 -type d)
done
if [ -z "$bad" ]; then ok "every file hutch writes is 0600 or inside a 0700 directory"; else not_ok "modes of hutch's files"; diag "$bad"; fi

# ---- (h) hutch's own tools against a hostile guest -----------------------------------------
# Everything the guest answers hutch is hostile input: SFTP answers, file names, what it
# plants in a writable share while hutch works there, its console, logs and ready channel.
hostile=$HUTCH_SOURCE_DIR/tests/e2e/hostile
# tree_state DIR: names, types, modes and contents of everything under DIR, as one checksum
tree_state() { (cd "$1" && find . -printf '%p %y %m %s %l\n' | LC_ALL=C sort && find . -type f -exec sha256sum {} + | LC_ALL=C sort) | sha256sum; }
# forbidden_bytes FILE: names the terminal controls a guest sent that are in FILE (none: empty)
forbidden_bytes() {
  python3 - "$1" <<'PY'
import sys
data = open(sys.argv[1], "rb").read()
bad = {"OSC 52": b"\x1b]52", "ESC[2J": b"\x1b[2J", "raw C1 CSI": b"\x9b", "UTF-8 C1 CSI": b"\xc2\x9b",
       "UTF-8 C1 OSC": b"\xc2\x9d", "invalid UTF-8 0xff": b"\xff"}
print(" ".join(k for k, v in bad.items() if v in data))
PY
}

# The copies below go through the VM's supervisor (its copy session), which then reads the
# hostile answers: it must survive them, and keep serving.
sup_info() { "$HUTCH" info --json "$vm" 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin).get(sys.argv[1], 0))' "$1"; }
sup_pid0=$(sup_info supervisor_pid); sup_copies0=$(sup_info supervisor_copies)

# h1. A replaced sftp-server that lies in REALPATH: the copied directory's name must not come
# out as "..", "" or "/" (once this copied the guest's home into the destination's parent).
as_root mv /usr/lib/openssh/sftp-server /usr/lib/openssh/sftp-server.real
as_root tee /usr/lib/openssh/sftp-server <"$hostile/evil-sftp-server.py" >/dev/null
as_root chmod 755 /usr/lib/openssh/sftp-server
# The supervisor keeps its copy session's sftp-server between copies, and the replaced one
# reads its directives when it starts: the running ones are ended whenever they change, so
# that the next copy (the session found dead, made again) meets the server as set (the test
# guest has no pkill). A real hostile server needs no restart: it is hostile all along.
end_sftp_servers() {
  as_root sh -c 'for p in /proc/[0-9]*; do [ "$(cat "$p/comm" 2>/dev/null)" = sftp-server ] && kill "${p#/proc/}"; done; true'
}
evil_mode() {  # evil_mode [DIRECTIVE]: the replaced server's directive (none: it behaves)
  if [ $# -gt 0 ]; then printf '%s\n' "$1" | as_root tee /var/tmp/evil-sftp.mode >/dev/null; else as_root rm -f /var/tmp/evil-sftp.mode; fi
  end_sftp_servers
}
in_guest sh -c 'echo guest-victim > ~/victim; mkdir -p ~/lsdir && echo listed > ~/lsdir/file; chmod 0777 ~/lsdir ~/lsdir/file'
evil_mode
rm -rf "$E2E_TMP/ctl"; mkdir -p "$E2E_TMP/ctl/lsdir"; chmod 700 "$E2E_TMP/ctl/lsdir"
if "$HUTCH" cp -r "$vm:lsdir" "$E2E_TMP/ctl/" >/dev/null 2>&1 && [ "$(cat "$E2E_TMP/ctl/lsdir/file")" = listed ]; then
  ok "control: hutch cp works through the guest's replaced sftp-server"
else
  not_ok "control: hutch cp through the replaced sftp-server"
fi
# The guest's modes go through the user's umask; a directory that was there keeps its mode.
if [ $(( 0$(stat -c %a "$E2E_TMP/ctl/lsdir/file") & 022 )) -eq 0 ] && [ "$(stat -c %a "$E2E_TMP/ctl/lsdir")" = 700 ]; then
  ok "a guest file of mode 0777 arrives without group/other write; an existing directory keeps 0700"
else
  not_ok "modes from the guest: file $(stat -c %a "$E2E_TMP/ctl/lsdir/file"), dir $(stat -c %a "$E2E_TMP/ctl/lsdir")"
fi
mkdir -p "$E2E_TMP/cp/inner"; echo host-victim >"$E2E_TMP/cp/victim"; chmod 750 "$E2E_TMP/cp"
cp_state=$(tree_state "$E2E_TMP/cp")
# hutch never asks: a source with no name of its own ("NAME:", "NAME:~") needs a new
# destination name from the user (exit 2 into an existing directory), whatever REALPATH says.
for lie in "$guest_home/.." "/" ".." "" "/.bashrc"; do
  evil_mode "realpath $lie"
  for src in "$vm:" "$vm:." "$vm:~"; do
    out=$("$HUTCH" cp -r "$src" "$E2E_TMP/cp/inner" 2>&1); rc=$?
    if [ $rc -eq 2 ] && [ "$(tree_state "$E2E_TMP/cp")" = "$cp_state" ] && [ "$(stat -c %a "$E2E_TMP/cp")" = 750 ]; then
      ok "REALPATH answered '$lie': hutch cp -r $src DIR is refused and changes nothing"
    else
      not_ok "REALPATH answered '$lie': hutch cp -r $src DIR (exit $rc)"; diag "$out"; diag "$(ls -laR "$E2E_TMP/cp" | head -30)"
    fi
  done
done
out=$("$HUTCH" cp -r "$vm:lsdir/." "$E2E_TMP/cp/inner/new" 2>&1); rc=$?
if [ $rc -eq 0 ] && [ "$(cat "$E2E_TMP/cp/inner/new/file" 2>&1)" = listed ] && [ "$(cat "$E2E_TMP/cp/victim")" = host-victim ]; then
  ok "with REALPATH lying, hutch cp -r NAME:dir/. DIR/NEW copies into DIR/NEW, nowhere else"
else
  not_ok "hutch cp -r NAME:dir/. DIR/NEW with REALPATH lying (exit $rc)"; diag "$out"
fi
# The same server naming hostile entries in a directory listing.
for name in '..' '.' '../escaped' 'a/b' '' 'x\0/../../escaped'; do
  for kind in readdir readdir-dir; do
    evil_mode "$kind $name"
    rm -rf "$E2E_TMP/ls"; mkdir -p "$E2E_TMP/ls/p"
    out=$("$HUTCH" cp -r "$vm:lsdir" "$E2E_TMP/ls/p/out" 2>&1); rc=$?
    stray=$(find "$E2E_TMP/ls" -mindepth 1 ! -path "$E2E_TMP/ls/p" ! -path "$E2E_TMP/ls/p/out" ! -path "$E2E_TMP/ls/p/out/file")
    # "." and ".." are in every real listing: skipped. libssh2 reads an empty name as the
    # listing's end: the copy ends there. Any other invalid name fails the copy.
    want=1; case $name in .|..|'') want=0;; esac
    if [ $rc -eq $want ] && [ -z "$stray" ] && [ ! -e "$E2E_TMP/escaped" ]; then
      ok "a listing naming '$name' ($kind): exit $want, nothing is written outside the destination"
    else
      not_ok "a listing naming '$name' ($kind) (exit $rc)"; diag "$out"; diag "$stray"
    fi
  done
done
# The same server sending 384 MiB of replies to a request never made before its first
# answer: libssh2 keeps each one until the session ends. The supervisor's copy session is
# ended at the limit (64 MiB here): the copy fails saying why, the supervisor's memory stays
# far below the flood (sampled while it runs; under ASan what libssh2 freed also stays, in
# ASan's quarantine, for up to 256 MiB), and the next copy works on a new session.
sup_pid=$(sup_info supervisor_pid)
rss_of() { awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null; }
rss_before=$(rss_of "$sup_pid")
( peak=0; while [ ! -e "$E2E_TMP/flood-done" ]; do r=$(rss_of "$sup_pid"); [ "${r:-0}" -gt "$peak" ] && peak=$r && echo "$peak" >"$E2E_TMP/flood-peak"; sleep 0.1; done ) &
sampler=$!
evil_mode "flood 384"
out=$("$HUTCH" cp "$vm:victim" "$E2E_TMP/flooded" 2>&1); rc=$?
touch "$E2E_TMP/flood-done"; wait "$sampler"
peak=$(cat "$E2E_TMP/flood-peak" 2>/dev/null)
if [ $rc -eq 1 ] && grep -q "sent more than hutch keeps for a session (64 MiB" <<<"$out" && [ ! -e "$E2E_TMP/flooded" ]; then
  ok "an SFTP server flooding replies to requests never made: the copy fails at the session's limit, saying why"
else
  not_ok "an SFTP server flooding unasked replies: the copy stops at the limit (exit $rc)"; diag "$out"
fi
grown_mib=$(( (${peak:-0} - ${rss_before:-0}) / 1024 ))
if [ -n "$rss_before" ] && [ -n "$peak" ] && [ "$grown_mib" -lt 300 ]; then
  ok "the supervisor's memory grew by at most $grown_mib MiB for a 384 MiB flood"
else
  not_ok "the supervisor's memory under a 384 MiB flood (grew by $grown_mib MiB: RSS ${rss_before:-?} kB, peak ${peak:-?} kB)"
fi
evil_mode
check "the copy after the flood works (a new session)" "$HUTCH" cp "$vm:victim" "$E2E_TMP/after-flood"
evil_mode
as_root mv /usr/lib/openssh/sftp-server.real /usr/lib/openssh/sftp-server
end_sftp_servers
sup_copies1=$(sup_info supervisor_copies)
if [ "$sup_pid0" -gt 0 ] && [ "$(sup_info supervisor_pid)" = "$sup_pid0" ] && [ "$sup_copies1" -ge $((sup_copies0 + 20)) ]; then
  ok "those copies went through the supervisor ($sup_copies0 -> $sup_copies1), which survived the hostile server"
else
  not_ok "copies through the supervisor: pid $sup_pid0 -> $(sup_info supervisor_pid), copies $sup_copies0 -> $sup_copies1"
fi

# h2. A symbolic link (or FIFO) the guest plants in a writable share where hutch cp writes.
echo host-rc >"$E2E_TMP/rc-victim"; mkdir -p "$E2E_TMP/dir-victim"
in_guest sh -c "echo payload > ~/payload; mkdir -p ~/tree && echo payload > ~/tree/f
  ln -s '$E2E_TMP/rc-victim' ~/Shared/result.txt
  mkdir -p ~/Shared/dl/tree && ln -s '$E2E_TMP/rc-victim' ~/Shared/dl/tree/f
  ln -s '$E2E_TMP/dir-victim' ~/Shared/dl2
  mkfifo ~/Shared/fifo"
check_status "download onto a planted link (share/result.txt -> a host file) is refused" 1 "$HUTCH" cp "$vm:payload" "$HOME/VM-Shared/result.txt"
check_status "download into a tree holding a planted link is refused" 1 "$HUTCH" cp -r "$vm:tree" "$HOME/VM-Shared/dl"
check_status "download through a planted directory link (share/dl2 -> a host directory) is refused" 1 "$HUTCH" cp -r "$vm:tree" "$HOME/VM-Shared/dl2/"
check_status "download onto a planted FIFO fails at once instead of hanging" 1 timeout 60 "$HUTCH" cp "$vm:payload" "$HOME/VM-Shared/fifo"
if [ "$(cat "$E2E_TMP/rc-victim")" = host-rc ] && [ -z "$(ls -A "$E2E_TMP/dir-victim")" ]; then ok "the links' targets on the host are unchanged"; else not_ok "a planted link's target changed"; diag "$(cat "$E2E_TMP/rc-victim"; ls -la "$E2E_TMP/dir-victim")"; fi
in_guest sh -c "ln -s '$E2E_TMP/outside/secret' ~/Shared/to-secret-file; ln -s '$E2E_TMP/outside' ~/Shared/to-outside"
"$HUTCH" cp "$HOME/VM-Shared/to-secret-file" "$vm:up-secret" >/dev/null 2>&1
"$HUTCH" cp -r "$HOME/VM-Shared/to-outside" "$vm:up-outside" >/dev/null 2>&1
got=$(in_guest sh -c 'cat ~/up-secret; cat ~/up-outside/secret; cat ~/up-outside/*/secret' 2>/dev/null)
if ! grep -q "$tag" <<<"$got"; then ok "upload from a planted link (to a host file, to a host directory) sends nothing of the host"; else not_ok "upload through a planted link sent a host file"; diag "$got"; fi

# h3. Directories and files swapped for links while hutch cp runs, both ways. The guest swaps
# as fast as it can; whether or not a swap lands mid-copy, nothing outside may be touched.
mkdir -p "$E2E_TMP/swap-victim" "$HOME/VM-Shared/up/sub"
for i in $(seq 1 60); do echo "up $i" >"$HOME/VM-Shared/up/sub/f$i"; echo "up $i" >"$HOME/VM-Shared/up/g$i"; done
in_guest sh -c 'mkdir -p ~/big/sub && for i in $(seq 1 60); do echo "down $i" > ~/big/sub/f$i; done; mkdir -p ~/Shared/race'
# The guest's swapper, with this run's host paths in it (the links it makes point there).
sed "s|@E2E_TMP@|$E2E_TMP|g" <<'SWAP' | in_guest sh -c 'cat > /tmp/swapper.sh'
cd ~/Shared || exit 1
end=$(($(date +%s) + 120))
while [ "$(date +%s)" -lt "$end" ] && [ ! -e /tmp/stop-swap ]; do
  mv race/big/sub race/big/sub.away 2>/dev/null && ln -sfn @E2E_TMP@/swap-victim race/big/sub &&
    rm -f race/big/sub && mv race/big/sub.away race/big/sub
  mv up/sub up/sub.away 2>/dev/null && ln -sfn @E2E_TMP@/outside up/sub && rm -f up/sub &&
    mv up/sub.away up/sub
  ln -sfn @E2E_TMP@/outside/secret up/g7.new && mv -T up/g7.new up/g7 &&
    echo 'up 7' > up/g7.tmp && mv -T up/g7.tmp up/g7
done
SWAP
in_guest sh -c 'rm -f /tmp/stop-swap; nohup setsid sh /tmp/swapper.sh >/dev/null 2>&1 </dev/null &'
copies=0
for round in 1 2 3 4 5; do
  "$HUTCH" cp -r "$vm:big" "$HOME/VM-Shared/race" >/dev/null 2>&1 && copies=$((copies + 1))
  "$HUTCH" cp -r "$HOME/VM-Shared/up" "$vm:upcopy$round" >/dev/null 2>&1 && copies=$((copies + 1))
done
in_guest touch /tmp/stop-swap
diag "copies that completed while the guest swapped: $copies of 10"
if [ -z "$(ls -A "$E2E_TMP/swap-victim")" ]; then ok "downloads while the guest swaps a directory for a link: nothing written outside the share"; else not_ok "download followed a swapped link"; diag "$(ls -la "$E2E_TMP/swap-victim")"; fi
got=$(in_guest sh -c 'grep -rl hutch-canary ~/upcopy* 2>/dev/null; true')
if [ -z "$got" ]; then ok "uploads while the guest swaps files and directories for links: no host file uploaded"; else not_ok "upload read through a swapped link"; diag "$got"; fi

# h4. Setuid and setgid bits in a writable share: the guest's files are the host user's.
in_guest sh -c 'cp /bin/true ~/Shared/suid && chmod 4755 ~/Shared/suid; cp /bin/true ~/Shared/sgid && chmod 2755 ~/Shared/sgid; install -m 6755 /bin/true ~/Shared/suid-new' >/dev/null 2>&1
as_root sh -c "cp /bin/true '$guest_home/Shared/suid-root' && chown $(in_guest id -u) '$guest_home/Shared/suid-root' && chmod 6755 '$guest_home/Shared/suid-root'" >/dev/null 2>&1
setid=$(find "$HOME/VM-Shared" -perm /6000 -type f)
if [ -e "$HOME/VM-Shared/suid" ] && [ -z "$setid" ]; then ok "no file in a share gets a setuid or setgid bit on the host (guest user and root)"; else not_ok "setuid/setgid bits in the share"; diag "$(ls -la $setid "$HOME/VM-Shared/suid" 2>&1)"; fi

# h5. A forward on the host's IPv6 loopback (passt reaches the guest over IPv6: its server
# listens on ::).
in_guest sh -c 'cd ~/Shared && nohup setsid python3 -m http.server --bind :: 8779 >/dev/null 2>&1 </dev/null &'
got=""
for _ in $(seq 1 20); do got=$(curl -g -s -m 5 "http://[::1]:$v6_port/" 2>&1) && [ -n "$got" ] && break; sleep 1; done
if grep -q host-file <<<"$got"; then ok "a port with an IPv6 host address ([::1]:$v6_port) forwards"; else not_ok "IPv6 forward [::1]:$v6_port"; diag "$got"; fi

# h6. Escapes in the guest's logs and on its console, and a console that floods the disk.
as_root sh -c "printf 'EVILLOG\033]52;c;ZXZpbA==\007\033[2J\233;2J\302\2332J\302\235\377\n' >> /var/log/cloud-init-output.log
  printf 'EVILCONSOLE\033]52;c;ZXZpbA==\007\033[2J\233;2J\302\2332J\302\235\377\n' > /dev/ttyS0"
run_tty "$E2E_TMP/logs.tty" "$HUTCH" logs "$vm"
bad=$(forbidden_bytes "$E2E_TMP/logs.tty")
if [ $tty_rc -eq 0 ] && grep -q EVILLOG "$E2E_TMP/logs.tty" && grep -q EVILCONSOLE "$E2E_TMP/logs.tty" && [ -z "$bad" ]; then
  ok "hutch logs on a terminal: the guest's log and console lines arrive without their controls"
else
  not_ok "hutch logs on a terminal (exit $tty_rc; found: $bad)"
fi
"$HUTCH" logs --raw "$vm" >"$E2E_TMP/logs.raw" 2>&1
if grep -q "OSC 52" <<<"$(forbidden_bytes "$E2E_TMP/logs.raw")"; then ok "hutch logs --raw gives the bytes unchanged"; else not_ok "hutch logs --raw"; fi
console_log=$XDG_DATA_HOME/hutch/instances/$vm/console.log
t0=$(date +%s)
as_root sh -c 'python3 -c "import sys; sys.stdout.buffer.write((b\"F\" * 1023 + b\"\\n\") * 4096)" > /dev/ttyS0'
diag "the guest wrote 4 MiB to its console in $(( $(date +%s) - t0 )) s"
sleep 2
console_bytes=$(stat -c %s "$console_log")
all_console_bytes=$(cat "$console_log"* | wc -c)
if [ "$console_bytes" -le $((2 * 1024 * 1024 + 65536)) ] && [ "$all_console_bytes" -le $((8 * 1024 * 1024 + 65536)) ]; then
  ok "a console flood of 4 MiB leaves the console log capped ($console_bytes bytes, $all_console_bytes with its rotated copies)"
else
  not_ok "console log not capped ($console_bytes bytes, $all_console_bytes in all)"; diag "$(ls -la "$console_log"*)"
fi

check "virtiofsd runs for the shares" pgrep -f "[v]irtiofsd.*/hutch/$vm/virtiofs-"

# h7. A nested share redirected between two starts: the guest replaces ~/VM-Shared/nested
# (another share's host directory) with a link to the host's ~/.ssh.
in_guest sh -c "mv ~/Shared/nested ~/Shared/nested.away && ln -s '$HOME/.ssh' ~/Shared/nested"
# ... and arms its hostile ready channel for the next boot (a flood, escapes, an overlong line)
as_root mv /usr/local/lib/hutch/hutch-provision /usr/local/lib/hutch/hutch-provision.real
as_root tee /usr/local/lib/hutch/hutch-provision <"$hostile/evil-provision.sh" >/dev/null
as_root tee /usr/local/lib/hutch/evil-ready.py <"$hostile/evil-ready.py" >/dev/null
as_root chmod 755 /usr/local/lib/hutch/hutch-provision
check "stop" "$HUTCH" -q stop "$vm"
out=$("$HUTCH" start "$vm" 2>&1); rc=$?
if [ $rc -eq 1 ] && grep -q nested <<<"$out" && [ "$(virsh domstate "$vm" 2>/dev/null)" = "shut off" ]; then
  ok "a start where a share now resolves elsewhere is refused, and the VM stays off"
else
  not_ok "start with a redirected nested share (exit $rc)"; diag "$out"
fi
check "no virtiofsd runs for the VM (none serves the link's target)" none_running -f "[v]irtiofsd.*/hutch/$vm/virtiofs-"
# An edit or a clone makes a new share record: neither may take the redirect for the truth
# (an edit once recorded every share as it resolved then, and the next start served the link)
out=$("$HUTCH" edit "$vm" --cpus 1 2>&1); rc=$?
if [ $rc -eq 1 ] && grep -q nested <<<"$out"; then ok "an edit while a share resolves elsewhere is refused too"; else not_ok "an edit with a redirected share (exit $rc)"; diag "$out"; fi
out=$("$HUTCH" clone "$vm" "$vm-redirected" 2>&1); rc=$?
if [ $rc -eq 1 ] && grep -q nested <<<"$out" && ! virsh dominfo "$vm-redirected" >/dev/null 2>&1 &&
  [ ! -e "$XDG_DATA_HOME/hutch/instances/$vm-redirected" ]; then
  ok "a clone of it is refused as well, leaving nothing"
else
  not_ok "a clone with a redirected share (exit $rc)"; diag "$out"
fi
out=$("$HUTCH" start "$vm" 2>&1); rc=$?
if [ $rc -eq 1 ] && grep -q nested <<<"$out"; then ok "and the next start still refuses the redirect"; else not_ok "a start after the refused edit (exit $rc)"; diag "$out"; fi
# Another directory at that path is refused too (the record holds the directory's identity).
rm "$HOME/VM-Shared/nested" && mkdir "$HOME/VM-Shared/nested"
out=$("$HUTCH" start "$vm" 2>&1); rc=$?
if [ $rc -eq 1 ] && grep -q "inode" <<<"$out"; then ok "another directory made at the share's path is refused"; else not_ok "another directory at the share's path (exit $rc)"; diag "$out"; fi
rmdir "$HOME/VM-Shared/nested" && mv "$HOME/VM-Shared/nested.away" "$HOME/VM-Shared/nested"
# A damaged network policy refuses the start before any helper runs (it once left the
# shares' virtiofsd behind).
policy_file=$XDG_DATA_HOME/hutch/instances/$vm/egress-policy.json
cp "$policy_file" "$E2E_TMP/policy.saved"
printf '{"mode": ' >"$policy_file"
out=$("$HUTCH" start "$vm" 2>&1); rc=$?
if [ $rc -eq 1 ] && grep -q "egress-policy.json" <<<"$out" && [ "$(virsh domstate "$vm" 2>/dev/null)" = "shut off" ]; then
  ok "a start with a damaged network policy is refused, naming the file, and the VM stays off"
else
  not_ok "start with a damaged network policy (exit $rc)"; diag "$out"
fi
check "no virtiofsd runs after it" none_running -f "[v]irtiofsd.*/hutch/$vm/virtiofs-"
check "no passt runs after it" none_running -u "$(id -u)" -f "[p]asst.*/$vm/"
cp "$E2E_TMP/policy.saved" "$policy_file"

# h8. The ready channel at that start: escapes in a step name, a reason and a warning, a line
# longer than 4 KiB that would read FAILED once cut, and a flood of 64 MiB of failed steps.
run_tty "$E2E_TMP/start2.tty" "$HUTCH" start "$vm"
bad=$(forbidden_bytes "$E2E_TMP/start2.tty")
diag "hutch start's peak memory under the flood: $tty_hwm_kib KiB (first start: $first_start_hwm_kib KiB)"
if [ $tty_rc -eq 0 ]; then ok "the start ignores the overlong line and ends ready"; else not_ok "start under the ready-channel attack (exit $tty_rc)"; diag "$(tr -d '\r' <"$E2E_TMP/start2.tty" | tail -20)"; fi
if grep -q EVILREASON "$E2E_TMP/start2.tty" && [ -z "$bad" ]; then ok "step names, reasons and warnings reach the terminal without their controls"; else not_ok "guest text on the terminal at start (found: $bad)"; fi
if [ "$tty_hwm_kib" -gt 0 ] && [ "$tty_hwm_kib" -lt $((first_start_hwm_kib + 32768)) ]; then ok "hutch's memory stays bounded under the flood"; else not_ok "hutch's memory under the flood: $tty_hwm_kib KiB"; fi
failed_file=$XDG_DATA_HOME/hutch/instances/$vm/optional-failed
if [ "$(stat -c %s "$failed_file" 2>/dev/null || echo 0)" -lt 262144 ]; then ok "what hutch stores of the failures is bounded ($(stat -c %s "$failed_file" 2>/dev/null) bytes)"; else not_ok "stored failures: $(stat -c %s "$failed_file") bytes"; fi
run_tty "$E2E_TMP/info.tty" "$HUTCH" info "$vm"
bad=$(forbidden_bytes "$E2E_TMP/info.tty")
if grep -q EVILREASON "$E2E_TMP/info.tty" && [ -z "$bad" ]; then ok "hutch info shows the stored reasons without their controls"; else not_ok "hutch info (found: $bad)"; diag "$(tr -d '\r' <"$E2E_TMP/info.tty" | head -20)"; fi
check "the nested share works again" in_guest test -d /opt/nested

# h9. The console tail in start's error: the guest writes escapes to its console and powers
# off before it is ready.
as_root touch /var/tmp/evil-poweroff
# h10 (before that stop): a helper that dies while the VM runs (the egress helper, killed:
# its passt goes with it) is reaped by the supervisor that started it, and hutch info says so
# (in the order they were reaped, which is not fixed: passt may come first)
check "after that start too, the helpers are the supervisor's children" helpers_are_children "$vm"
egress_pid=$(awk '{print $1}' "$XDG_RUNTIME_DIR/hutch/$vm/egress.pid")
kill -9 "$egress_pid"
ended=""
for _ in $(seq 1 20); do
  ended=$("$HUTCH" info --json "$vm" | python3 -c 'import json,sys; print("\n".join(json.load(sys.stdin).get("helpers_ended", [])))')
  grep -q "^the egress helper (pid $egress_pid) ended on signal 9 at " <<<"$ended" && break
  sleep 0.5
done
info_text=$("$HUTCH" info "$vm" 2>&1)
if grep -q "^the egress helper (pid $egress_pid) ended on signal 9 at " <<<"$ended" && grep -qE "^(helpers_ended)? +the egress helper \(pid $egress_pid\)" <<<"$info_text"; then
  ok "a helper killed while the VM runs: the supervisor reaps it, and hutch info names it"
else
  not_ok "hutch info names the killed egress helper (pid $egress_pid)"; diag "$ended"; diag "$info_text"
fi
check "stop" "$HUTCH" -q stop "$vm"
run_tty "$E2E_TMP/start3.tty" "$HUTCH" start "$vm"
bad=$(forbidden_bytes "$E2E_TMP/start3.tty")
if [ $tty_rc -eq 1 ] && grep -q EVILCONSOLE "$E2E_TMP/start3.tty" && [ -z "$bad" ]; then
  ok "the console's last lines in start's error arrive without their controls"
else
  not_ok "console tail in start's error (exit $tty_rc; found: $bad)"; diag "$(tr -d '\r' <"$E2E_TMP/start3.tty" | tail -20)"
fi

check "delete --force" "$HUTCH" -q delete --force "$vm"
sleep 1
check "no virtiofsd left" none_running -f "[v]irtiofsd.*/hutch/$vm/virtiofs-"
check "no passt left" none_running -u "$(id -u)" -f "[p]asst.*/$vm/"
finish
