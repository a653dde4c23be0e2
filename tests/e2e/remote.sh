#!/usr/bin/env bash
# hutch against another host: -c qemu+ssh://USER@HOST:PORT/session. The other host is a
# second local user behind an sshd of its own (tests/remote-host.sh, which tests/run starts in
# a lane's root and names in $HUTCH_TEST_REMOTE_URI): that user cannot read the test user's
# files nor the test user theirs, so nothing may depend on a local path. One VM there: create
# from a local profile file, start, shell, cp both ways, forward, stop, delete; the VM's
# network is hutch's (passt with --no-map-gw under the egress helper), not libvirt's own.
#
# Where tests/run set no remote host up (the Debian 12 lane: it would make a user and run an
# sshd on a real host), the checks that need no far side run and the rest are reported as
# skipped, never as passed: `tests/run --host debian-13 remote` runs them all.
. "$(dirname "$0")/lib.sh"

uri=${HUTCH_TEST_REMOTE_URI:-}
# the far side runs the hutch under test (the build tree is readable by every user, as an
# installed program would be)
export HUTCH_REMOTE_PROGRAM=$HUTCH_BUILD_DIR/cmd/hutch

# ---- what needs no far side ------------------------------------------------------------
# (the host alone is wrong: a path of /session, an option ssh would run a command with)
out=$(cd "$E2E_TMP" && "$HUTCH" -c "qemu+ssh://-oProxyCommand=touch%20injected/session" list 2>&1); rc=$?
if [ $rc -eq 2 ] && [ ! -e "$E2E_TMP/injected" ] && grep -q "name a host" <<<"$out" && [ "$(wc -l <<<"$out")" -eq 1 ]; then
  ok "a host ssh would take for an option is refused (exit 2, one line), nothing runs"
else
  not_ok "a host that is an ssh option (exit $rc)"; diag "$out"
fi
out=$("$HUTCH" -c "qemu+ssh://box/session?no_verify=1" list 2>&1); rc=$?
if [ $rc -eq 2 ] && grep -q "no_verify" <<<"$out"; then ok "no URI parameter turns ssh's host key check off"; else not_ok "?no_verify=1 (exit $rc)"; diag "$out"; fi
closed=$(free_port)
out=$("$HUTCH" -c "qemu+ssh://nobody@127.0.0.1:$closed/session" list 2>&1); rc=$?
if [ $rc -eq 1 ] && grep -q "ssh to 127.0.0.1 failed" <<<"$out"; then ok "a host that does not answer: exit 1, saying ssh failed"; else not_ok "an unreachable host (exit $rc)"; diag "$out"; fi
out=$("$HUTCH" -c "qemu+ssh://box/session" ssh-config 2>&1); rc=$?
if [ $rc -eq 2 ]; then ok "ssh-config refuses another host's VMs (exit 2)"; else not_ok "ssh-config on a remote URI (exit $rc)"; diag "$out"; fi

if [ -z "$uri" ]; then
  tap_count=$((tap_count + 1))
  echo "ok $tap_count - create, start, shell, cp, forward, stop and delete on another host # SKIP no remote host set up here (tests/run sets one up in a lane's root: tests/run --host debian-13 remote)"
  echo "1..$tap_count"
  [ "$tap_failed" -eq 0 ]
  exit $?
fi

R() { "$HUTCH" -c "$uri" "$@"; }
# the far account through ssh itself, for what the test looks at there
far_user=${uri#qemu+ssh://}; far_user=${far_user%%@*}
far_port=${uri##*:}; far_port=${far_port%%/*}
far() { ssh -p "$far_port" -o BatchMode=yes "$far_user@127.0.0.1" "$@"; }

vm=$(vm_name remote)
cleanup_remote() {
  R -q delete --force "$vm" >/dev/null 2>&1
}
trap 'cleanup_remote; e2e_cleanup' EXIT

# ---- the two accounts ------------------------------------------------------------------
check "ssh reaches the other account with the test user's key and known host key" far true
if ! far cat "$HOME/.ssh/id_hutch_remote.pub" >/dev/null 2>&1 && ! ls "$(getent passwd "$far_user" | cut -d: -f6)" >/dev/null 2>&1; then
  ok "neither account can read the other's home"
else
  not_ok "the two accounts can read each other's files"
fi
# an unknown host key is refused: ssh's own check, which hutch never turns off
# (the same sshd under a name known_hosts does not hold)
# (setsid: no terminal for ssh to ask on, as in CI)
out=$(setsid -w "$HUTCH" -c "${uri/@127.0.0.1:/@localhost:}" list 2>&1 </dev/null); rc=$?
if [ $rc -eq 1 ] && grep -qi "host key verification failed" <<<"$out"; then ok "a far host whose key is not known is refused"; else not_ok "an unknown host key (exit $rc)"; diag "$out"; fi

# ---- the image: the far side's own cache, filled through ssh ---------------------------
key=$("$HUTCH" -q image build "$HUTCH_SOURCE_DIR/tests/image/test-guest.yaml" 2>/dev/null | tail -1)
if [ -n "$key" ] && far "test -e ~/.cache/hutch/images/$key/image.json" 2>/dev/null; then
  ok "the far side has the test guest's image ($key) already"
elif [ -n "$key" ] && tar -C "$XDG_CACHE_HOME/hutch/images" -c "$key" |
     far "mkdir -p ~/.cache/hutch/images && tar -x -C ~/.cache/hutch/images"; then
  ok "the test guest's image ($key) is copied to the far side's cache"
else
  not_ok "the image for the far side (key '${key}')"
fi

# ---- create from a local profile file --------------------------------------------------
port=$(free_port)
cat >"$E2E_TMP/bad.yaml" <<YAML
base: $HUTCH_SOURCE_DIR/tests/image/test-guest.yaml
cpus: [1
YAML
out=$(R create "$vm" -f "$E2E_TMP/bad.yaml" 2>&1); rc=$?
if [ $rc -ne 0 ] && grep -q "$E2E_TMP/bad.yaml:[0-9]*:[0-9]*" <<<"$out" && ! R list 2>/dev/null | grep -q "$vm"; then
  ok "a broken local profile is named here (file:line:column) and nothing is made there"
else
  not_ok "a broken local profile (exit $rc)"; diag "$out"
fi
cat >"$E2E_TMP/remote.yaml" <<YAML
base: $HUTCH_SOURCE_DIR/tests/image/test-guest.yaml
cpus: 1
memory: 1GiB
ports:
  - { host: $port, guest: 8000 }
YAML
t0=$(date +%s)
out=$(R create "$vm" -f "$E2E_TMP/remote.yaml" 2>&1); rc=$?
if [ $rc -eq 0 ]; then ok "create on the far side from a local profile file"; else not_ok "create (exit $rc)"; diag "$out"; fi
# getopt's spellings of -f are read here too (the far side has no such file); two are refused
out=$(R create "$vm-b" --fil="$E2E_TMP/remote.yaml" --no-ports 2>&1); rc=$?
if [ $rc -eq 0 ] && R -q delete "$vm-b" >/dev/null 2>&1; then ok "--fil=FILE (an abbreviation getopt takes) is read here too"; else not_ok "--fil=FILE (exit $rc)"; diag "$out"; fi
check_status "two -f are refused (exit 2)" 2 R create "$vm-c" -f "$E2E_TMP/remote.yaml" -f "$E2E_TMP/bad.yaml"
if far "test -d ~/.local/share/hutch/instances/$vm" && [ ! -e "$XDG_DATA_HOME/hutch/instances/$vm" ] && [ ! -e "$HOME/.local/share/hutch/instances/$vm" ]; then
  ok "the VM's files are the far account's, none are here"
else
  not_ok "where the VM's files are"
fi

# ---- start, and what runs there --------------------------------------------------------
out=$(R start "$vm" 2>&1); rc=$?
diag "create and first start on the far side: $(( $(date +%s) - t0 )) s"
if [ $rc -eq 0 ]; then ok "start on the far side, to ready"; else not_ok "start (exit $rc)"; diag "$(tail -30 <<<"$out")"; fi
state=$(R --json info "$vm" 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])' 2>&1)
check "info --json through ssh says running" test "$state" = running
check "virsh sees an ordinary libvirt domain through the same URI" sh -c "virsh -c '$uri' list --name | grep -qx '$vm'"
passt_args=$(far "pgrep -u \$(id -u) -a passt" 2>&1)
if grep -q -- "--no-map-gw" <<<"$passt_args" && far "pgrep -u \$(id -u) -x hutch-supervise" >/dev/null; then
  ok "the far VM's network is hutch's passt (--no-map-gw) under its supervisor, not libvirt's"
else
  not_ok "the far VM's passt"; diag "$passt_args"
fi

# ---- shell -----------------------------------------------------------------------------
t0=$(date +%s%N)
for _ in 1 2 3 4 5; do R shell "$vm" -- true; done
t1=$(date +%s%N)
for _ in 1 2 3 4 5; do far true; done
t2=$(date +%s%N)
diag "a command through hutch -c qemu+ssh:// takes $(( (t1 - t0) / 5000000 )) ms (5 runs); ssh alone to the far account $(( (t2 - t1) / 5000000 )) ms"
out=$(R shell "$vm" -- sh -c 'echo "from $(hostname) as $(id -un)"' 2>&1)
check "shell -- CMD runs in the far VM" grep -qx "from $vm as .*" <<<"$out"
check_status "shell -- CMD: its exit status comes back" 7 R shell "$vm" -- sh -c 'exit 7'
out=$(printf 'line one\nit'"'"'s $(two)\n' | R shell "$vm" -- cat 2>&1)
check "standard input reaches the far command unchanged" test "$out" = "line one
it's \$(two)"
out=$(R shell "$vm" -- printf '%s|' 'a b' '$HOME' ';id' 2>&1)
check "arguments reach the guest as given" test "$out" = "a b|\$HOME|;id|"

# ---- cp --------------------------------------------------------------------------------
mkdir -p "$E2E_TMP/up/sub" "$E2E_TMP/up/ro"
echo "local file" >"$E2E_TMP/up/a.txt"
echo "accented" >"$E2E_TMP/up/caf$(printf '\xc3\xa9').txt"
echo "inside" >"$E2E_TMP/up/ro/f"
chmod 555 "$E2E_TMP/up/ro"  # (a Go module cache's read-only directories)
head -c 300000 /dev/urandom >"$E2E_TMP/up/sub/blob"
chmod 750 "$E2E_TMP/up/sub/blob"
echo "local secret" >"$E2E_TMP/secret"
ln -s "$E2E_TMP/secret" "$E2E_TMP/up/sub/link"
check "cp -r a local tree to the far VM" R -q cp -r "$E2E_TMP/up" "$vm:up"
out=$(R shell "$vm" -- sh -c 'cat up/a.txt up/caf*.txt up/ro/f; stat -c %a up/sub/blob; sha256sum < up/sub/blob; test -e up/sub/link && echo LINK' 2>&1)
expect="local file
accented
inside
750
$(sha256sum <"$E2E_TMP/up/sub/blob")"
if [ "$out" = "$expect" ]; then ok "the tree arrived (content, mode), its link was not followed"; else not_ok "the uploaded tree"; diag "$out"; fi
R -q shell "$vm" -- sh -c 'mkdir -p back/deep && echo from-guest > back/deep/g.txt && printf x > back/one && chmod 644 back/one && printf y > "back/caf$(printf "\303\251")"'
out=$(umask 077 && R -q cp "$vm:back/one" "$E2E_TMP/one" 2>&1); rc=$?
if [ $rc -eq 0 ] && [ "$(cat "$E2E_TMP/one" 2>/dev/null)" = x ] && [ "$(stat -c %a "$E2E_TMP/one")" = 600 ]; then
  ok "cp a file back from the far VM (its mode through this side's umask)"
else
  not_ok "cp a file back (exit $rc, mode $(stat -c %a "$E2E_TMP/one" 2>&1))"; diag "$out"
fi
check_status "a directory without -r is refused" 1 R -q cp "$vm:back" "$E2E_TMP/norec"
# guest root plants a link to the far account's files and a FIFO in the tree copied back, and
# a file of root's that only "others" may read: the guest user's copy gets that mode on the far
# side, where its owner may not read it (the far side's tar must still send it)
R -q shell "$vm" -- sudo sh -c 'ln -s /etc/shadow back/deep/shadow; ln -s /home back/home; mkfifo back/fifo; printf z > back/locked; chmod 004 back/locked'
check "cp -r a tree back" sh -c "umask 022 && '$HUTCH' -q -c '$uri' cp -r '$vm:back' '$E2E_TMP/'"
check "the tree's files (a name that is not ASCII, one its far owner could not read)" test "$(cat "$E2E_TMP/back/deep/g.txt" "$E2E_TMP/back/caf$(printf '\xc3\xa9')" "$E2E_TMP/back/locked" 2>&1)" = "from-guest
yz"
if [ ! -e "$E2E_TMP/back/deep/shadow" ] && [ ! -L "$E2E_TMP/back/deep/shadow" ] && [ ! -e "$E2E_TMP/back/home" ] && [ ! -L "$E2E_TMP/back/home" ] && [ ! -e "$E2E_TMP/back/fifo" ]; then
  ok "links and a FIFO guest root planted in the tree do not come back"
else
  not_ok "what came back of guest root's links and FIFO"; diag "$(ls -la "$E2E_TMP/back" "$E2E_TMP/back/deep" 2>&1)"
fi
far_tmp=$(far "find /tmp -maxdepth 1 -name 'tmp.*' -user \$(id -u) | wc -l")
check "the far side's staging directories are gone" test "$far_tmp" = 0

# ---- ports -----------------------------------------------------------------------------
R -q shell "$vm" -- sh -c 'mkdir -p /tmp/www && echo remote-web > /tmp/www/index.html && cd /tmp/www && (setsid python3 -m http.server 8000 >/dev/null 2>&1 &)'
got=""
for _ in $(seq 20); do got=$(curl -s -m 5 "http://127.0.0.1:$port/" 2>/dev/null) && [ -n "$got" ] && break; sleep 1; done
check "the profile's port answers on the far host's loopback" test "$got" = remote-web
fwd=$(free_port)
check "forward adds a port on the far host" R -q forward "$vm" "$fwd:8000"
got=""
for _ in $(seq 10); do got=$(curl -s -m 5 "http://127.0.0.1:$fwd/" 2>/dev/null) && [ -n "$got" ] && break; sleep 1; done
check "the forwarded port answers" test "$got" = remote-web
check "forward --list names it" sh -c "'$HUTCH' -c '$uri' forward '$vm' --list | grep -q ':$fwd'"
check "forward --remove ends it" R -q forward "$vm" --remove "$fwd"
check_status "the removed port no longer answers" 7 curl -s -m 5 "http://127.0.0.1:$fwd/"

# ---- stop and delete -------------------------------------------------------------------
check "stop on the far side" R -q stop "$vm"
check "delete on the far side" R -q delete "$vm"
out=$(R list 2>&1); rc=$?
if [ $rc -eq 0 ] && ! grep -q "$vm" <<<"$out"; then ok "list no longer shows it"; else not_ok "list after delete (exit $rc)"; diag "$out"; fi
check "its files are gone there" far "test ! -e ~/.local/share/hutch/instances/$vm"
procs=""
# ([r]: the pattern does not match the command line that carries it; pgrep's 1: none, and
# anything but 0 or 1, ssh's 255 among them, is no pass)
for _ in $(seq 20); do procs=$(far "pgrep -u \$(id -u) -af -- '[${vm:0:1}]${vm:1}'" 2>&1); rc=$?; [ $rc -eq 0 ] || break; sleep 0.5; done
if [ $rc -eq 1 ]; then ok "no process of the VM is left on the far side"; else not_ok "processes left on the far side (pgrep exit $rc)"; diag "$procs"; fi
finish
