#!/usr/bin/env bash
# hutch forward: a port added to a running VM over SSH direct-tcpip. A guest HTTP server on a
# port no profile declares, forwarded to a free host port: a page, five concurrent downloads
# and 20 MiB byte-exact, served by the VM's supervisor on its SSH session; --list, bound on
# 127.0.0.1 only, files 0600; served again by the next supervisor after a SIGKILL, and by the
# same one after a guest reboot (it connects again by itself); without a
# supervisor (HUTCH_NO_SUPERVISOR=1) a helper of its own; a taken host port is a clear error;
# --remove; the forward ends when the VM dies, and with `hutch stop`.
# One VM, started twice; its first start is killed while the guest provisions, and the start
# after it waits for provisioning to end.
. "$(dirname "$0")/lib.sh"
require_libvirt

vm=$(vm_name fwd)
track_vm "$vm"
cat >"$E2E_TMP/fwd.yaml" <<YAML
base: $HUTCH_SOURCE_DIR/tests/image/test-guest.yaml
provision:
  - name: slow
    run: |
      sleep 20
      echo done > /var/lib/hutch-e2e-slow
YAML
guest_port=8790
forward_pid() { "$HUTCH" --json forward "$vm" --list | python3 -c 'import json,sys; f=json.load(sys.stdin); print(f[0]["pid"] if f else "")'; }
# "pid served_by" of the forward from host port $1
forward_server() { "$HUTCH" --json forward "$vm" --list | python3 -c 'import json,sys; f=[x for x in json.load(sys.stdin) if x["host_port"] == int(sys.argv[1])]; print(*((f[0]["pid"], f[0]["served_by"]) if f else ()))' "$1"; }
page_of() { local page=""; for _ in $(seq 1 20); do page=$(curl -s -m 10 "http://127.0.0.1:$1/index.html") && [ -n "$page" ] && break; sleep 1; done; echo "$page"; }
# Gone: no such process, or a zombie (nothing may reap an orphan at once where PID 1 is no init).
# gone: no such process, or a zombie whose other threads have exited too (a killed process's
# leader is a zombie while its other threads still exit, and its sockets close with the last)
gone() { ! kill -0 "$1" 2>/dev/null || { [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" = Z ] && [ "$(ls "/proc/$1/task" 2>/dev/null | wc -l)" -le 1 ]; }; }
wait_gone() { for _ in $(seq 1 "$2"); do gone "$1" && return 0; sleep 1; done; return 1; }
runtime=$XDG_RUNTIME_DIR/hutch/$vm

# The first start is killed with SIGKILL while the guest provisions (as a user's Ctrl-\ or a
# closed terminal would): the next start must wait for provisioning to end, not answer at
# once that the VM is running.
"$HUTCH" start "$vm" -f "$E2E_TMP/fwd.yaml" 2>"$E2E_TMP/start1.log" &
start_pid=$!
for _ in $(seq 1 900); do
  grep -q "^  provision " "$E2E_TMP/start1.log" && break
  kill -0 $start_pid 2>/dev/null || break
  sleep 1
done
kill -9 $start_pid 2>/dev/null
wait $start_pid 2>/dev/null
if grep -q "^  provision " "$E2E_TMP/start1.log"; then ok "the first start reached provisioning and was killed"; else not_ok "the first start reached provisioning"; diag "$(cat "$E2E_TMP/start1.log")"; finish; exit 1; fi
in_guest() { "$HUTCH" shell "$vm" -- "$@"; }
out=$("$HUTCH" start "$vm" 2>&1); rc=$?
slow=$(in_guest cat /var/lib/hutch-e2e-slow 2>&1)
if [ $rc -eq 0 ] && grep -q "the first boot's provisioning ended" <<<"$out" && [ "$slow" = done ] &&
   [ -e "$XDG_DATA_HOME/hutch/instances/$vm/provisioned" ]; then
  ok "the next start waits for provisioning to end"
else
  not_ok "the next start waits for provisioning to end (exit $rc, step: $slow)"; diag "$out"
fi
serve() {
  in_guest sh -c "cd ~/www && nohup setsid python3 -m http.server --bind 127.0.0.1 $guest_port >/dev/null 2>&1 </dev/null &"
}

check "a page, a 1 MiB and a 20 MiB file in the guest" in_guest sh -c \
  'mkdir -p ~/www && echo "hello from the guest" > ~/www/index.html && head -c 1M /dev/urandom > ~/www/mid && head -c 20M /dev/urandom > ~/www/big'
serve
guest_big=$(in_guest sha256sum www/big | cut -d' ' -f1)
guest_mid=$(in_guest sha256sum www/mid | cut -d' ' -f1)

# ---- the supervisor (one per running VM; hutch shell goes through its SSH session) ----------
info_int() { "$HUTCH" info --json "$vm" 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin).get(sys.argv[1], 0))' "$1"; }
wait_supervisor() { for _ in $(seq 1 60); do [ "$(info_int supervisor_pid)" -gt 0 ] && return 0; sleep 0.5; done; return 1; }
if wait_supervisor; then ok "start leaves a supervisor running"; else not_ok "start leaves a supervisor running"; diag "$(cat "$runtime/supervisor.log" 2>&1)"; fi
sup_pid=$(info_int supervisor_pid)
if [ "$(cat /proc/"$sup_pid"/comm 2>/dev/null)" = hutch-supervise ] &&
   [ "$(readlink /proc/"$sup_pid"/exe)" = "$(dirname "$(readlink -f "$HUTCH")")/hutch-cli" ] &&
   [ "$(stat -c %a "$runtime/supervisor.sock")" = 600 ]; then
  ok "it is the full CLI executed (hutch-supervise), its socket 0600"
else
  not_ok "the supervisor process and socket"; diag "$(ls -l "$runtime" 2>&1; cat /proc/"$sup_pid"/cmdline 2>&1 | tr '\0' ' ')"
fi
before=$(info_int supervisor_commands)
check "shell -- true" "$HUTCH" shell "$vm" -- true
check_status "exit status 7 through the supervisor" 7 "$HUTCH" shell "$vm" -- sh -c 'exit 7'
out=$(printf 'line one\nline two\n' | "$HUTCH" shell "$vm" -- cat 2>&1)
if [ "$out" = "$(printf 'line one\nline two')" ]; then ok "stdin through the supervisor"; else not_ok "stdin through the supervisor"; diag "$out"; fi
"$HUTCH" shell "$vm" -- sh -c 'echo to-out; echo to-err >&2' >"$E2E_TMP/o" 2>"$E2E_TMP/e"
if [ "$(cat "$E2E_TMP/o")" = to-out ] && [ "$(cat "$E2E_TMP/e")" = to-err ]; then ok "stdout and stderr stay apart"; else not_ok "stdout and stderr stay apart"; diag "$(cat "$E2E_TMP/o" "$E2E_TMP/e")"; fi
got=$("$HUTCH" shell "$vm" -- cat www/big | sha256sum | cut -d' ' -f1)
if [ "$got" = "$guest_big" ]; then ok "20 MiB of stdout through the supervisor, byte-exact"; else not_ok "20 MiB of stdout through the supervisor"; fi
got=$(head -c 5M /dev/urandom | tee "$E2E_TMP/up" | "$HUTCH" shell "$vm" -- sha256sum | cut -d' ' -f1)
if [ "$got" = "$(sha256sum <"$E2E_TMP/up" | cut -d' ' -f1)" ]; then ok "5 MiB of stdin through the supervisor, byte-exact"; else not_ok "5 MiB of stdin through the supervisor"; fi
after=$(info_int supervisor_commands)
if [ "$after" -eq $((before + 6)) ]; then ok "those 6 commands went through the supervisor"; else not_ok "commands through the supervisor: $before -> $after"; fi
# hutch cp goes through it too: SFTP on a second session the supervisor keeps between copies
c0=$(info_int supervisor_copies)
"$HUTCH" cp "$vm:www/big" "$E2E_TMP/big.sup" && got=$(sha256sum <"$E2E_TMP/big.sup" | cut -d' ' -f1)
if [ "${got:-}" = "$guest_big" ]; then ok "cp of 20 MiB from the guest through the supervisor, byte-exact"; else not_ok "cp from the guest through the supervisor"; fi
(cd "$E2E_TMP" && "$HUTCH" cp big.sup "$vm:www/big.back")
if [ "$(in_guest sha256sum www/big.back | cut -d' ' -f1)" = "$guest_big" ]; then ok "cp of a relative local path to the guest, byte-exact"; else not_ok "cp of a relative local path to the guest"; fi
# the caller's umask, not the supervisor's (hutch start's): a 0644 guest file arrives 0600
(umask 077 && "$HUTCH" cp "$vm:www/mid" "$E2E_TMP/mid.077")
if [ "$(stat -c %a "$E2E_TMP/mid.077" 2>&1)" = 600 ]; then ok "a copy through the supervisor takes the caller's umask"; else not_ok "umask 077: mode $(stat -c %a "$E2E_TMP/mid.077" 2>&1)"; fi
out=$("$HUTCH" cp "$vm:www/no-such-file" "$E2E_TMP/none" 2>&1); rc=$?
if [ $rc -ne 0 ] && grep -q "no-such-file: No such file or directory" <<<"$out" && [ ! -e "$E2E_TMP/none" ]; then ok "a missing guest file: the copy's own error, through the supervisor"; else not_ok "a missing guest file (exit $rc)"; diag "$out"; fi
c1=$(info_int supervisor_copies)
if [ "$c1" -eq $((c0 + 4)) ]; then ok "those 4 copies went through the supervisor"; else not_ok "copies through the supervisor: $c0 -> $c1"; fi
# Ctrl-C ends the copy in the supervisor too: the copy session is free again at once (a busy
# one sends the next copy the direct way, which the count would show)
in_guest truncate -s 2G www/huge
# (a background job ignores SIGINT unless told not to)
env --default-signal=INT "$HUTCH" cp "$vm:www/huge" "$E2E_TMP/huge" & cp_pid=$!
sleep 3
kill -INT $cp_pid; wait $cp_pid; rc=$?
c2=$(info_int supervisor_copies)
served=no
for _ in $(seq 1 20); do
  "$HUTCH" cp "$vm:www/mid" "$E2E_TMP/mid.after" >/dev/null 2>&1
  [ "$(info_int supervisor_copies)" -gt "$c2" ] && { served=yes; break; }
  sleep 1
done
# (a download writes a temporary file it renames once whole: interrupted, neither is left)
partial=$(find "$E2E_TMP" -maxdepth 1 -name 'huge' -o -maxdepth 1 -name '.huge.hutch-*')
if [ $rc -eq 130 ] && [ "$c2" -eq $((c1 + 1)) ] && [ $served = yes ] && [ -z "$partial" ]; then
  ok "cp interrupted by SIGINT mid-transfer: the supervisor's copy ends and leaves no partial file, the next copy goes through it"
else
  not_ok "cp interrupted by SIGINT (exit $rc, copies $c1 -> $c2, next copy through the supervisor: $served, left: ${partial:-nothing})"; diag "$(tail -5 "$runtime/supervisor.log" 2>&1)"
fi
rm -f "$E2E_TMP/huge" "$E2E_TMP/big.sup"
in_guest rm -f www/huge www/big.back
# The `hutch` users run is a front (cmd/front.c): it serves shell through the supervisor on
# GLib alone and executes hutch-cli, beside it, for everything else.
if ldd "$HUTCH" | grep -q libvirt; then not_ok "the front maps no libvirt"; diag "$(ldd "$HUTCH")"; else ok "the front maps no libvirt"; fi
mkdir -p "$E2E_TMP/front" && cp "$HUTCH" "$E2E_TMP/front/hutch"
n0=$(info_int supervisor_commands)
out=$("$E2E_TMP/front/hutch" shell "$vm" -- echo served-alone 2>&1)
if [ "$out" = served-alone ] && [ "$(info_int supervisor_commands)" -eq $((n0 + 1)) ]; then ok "the front alone (no hutch-cli beside it) serves shell"; else not_ok "the front alone serves shell"; diag "$out (supervisor commands $n0 -> $(info_int supervisor_commands))"; fi
# another libvirt named in the environment: the front leaves it to the full CLI, which refuses
n0=$(info_int supervisor_commands)
out=$(LIBVIRT_DEFAULT_URI=qemu+tcp://nobody@host.invalid/session "$HUTCH" shell "$vm" -- echo served 2>&1); rc=$?
if [ $rc -eq 2 ] && grep -q "host.invalid/session is not supported" <<<"$out" && [ "$(info_int supervisor_commands)" -eq "$n0" ]; then ok "with \$LIBVIRT_DEFAULT_URI naming a remote libvirt, shell is refused, not served by the session's supervisor"; else not_ok "shell with LIBVIRT_DEFAULT_URI=qemu+tcp://... (exit $rc)"; diag "$out"; fi
# and one naming another host's hutch (qemu+ssh://) goes there, not to this host's supervisor
n0=$(info_int supervisor_commands)
closed=$(free_port)
out=$(LIBVIRT_DEFAULT_URI=qemu+ssh://nobody@127.0.0.1:$closed/session "$HUTCH" shell "$vm" -- echo served 2>&1); rc=$?
if [ $rc -eq 1 ] && grep -q "ssh to 127.0.0.1 failed" <<<"$out" && [ "$(info_int supervisor_commands)" -eq "$n0" ]; then ok "with \$LIBVIRT_DEFAULT_URI naming another host (qemu+ssh://), shell goes there through ssh"; else not_ok "shell with LIBVIRT_DEFAULT_URI=qemu+ssh://127.0.0.1:$closed (exit $rc)"; diag "$out"; fi
# the same words arrive through the front's request (its own JSON) as through a direct
# connection (no supervisor): quotes, backslash, tab, newline, '$', an empty word, UTF-8
words=('a b' "c'd" 'e"f\g' $'tab\there' $'new\nline' '$HOME' '' 'é€')
"$HUTCH" shell "$vm" -- printf '[%s]' "${words[@]}" >"$E2E_TMP/w.front" 2>&1
n1=$(info_int supervisor_commands)
HUTCH_NO_SUPERVISOR=1 "$HUTCH" shell "$vm" -- printf '[%s]' "${words[@]}" >"$E2E_TMP/w.direct" 2>&1
n2=$(info_int supervisor_commands)
if cmp -s "$E2E_TMP/w.front" "$E2E_TMP/w.direct" && [ "$(cat "$E2E_TMP/w.front")" = "$(printf '[%s]' "${words[@]}")" ]; then ok "odd words arrive the same through the front and directly"; else not_ok "odd words through the front"; diag "$(od -c "$E2E_TMP/w.front" | head; od -c "$E2E_TMP/w.direct" | head)"; fi
if [ "$n2" -eq "$n1" ]; then ok "HUTCH_NO_SUPERVISOR=1: the command connects directly"; else not_ok "HUTCH_NO_SUPERVISOR=1 went through the supervisor ($n1 -> $n2)"; fi
# a word that is no UTF-8 cannot go in the JSON request: it goes the direct way, intact
got=$("$HUTCH" shell "$vm" -- printf '%s' $'\xff\xfe' | od -An -tx1 | tr -d ' \n')
if [ "$got" = fffe ]; then ok "a word that is no UTF-8 arrives intact"; else not_ok "a word that is no UTF-8 arrives intact ($got)"; fi
# what needs the CLI's parser goes to hutch-cli: an option, before "--"
out=$("$HUTCH" shell -w /tmp "$vm" -- pwd 2>&1)
if [ "$out" = /tmp ]; then ok "shell -w DIR (the full CLI's option) works through the front"; else not_ok "shell -w DIR through the front"; diag "$out"; fi
out=$("$HUTCH" shell "$vm" ls -l 2>&1); rc=$?
if [ $rc -eq 2 ] && [ "$out" = "hutch shell: unknown option '-l' (see 'hutch shell --help')" ]; then ok "an option after the name without '--' is the full CLI's usage error (exit 2)"; else not_ok "shell NAME ls -l (exit $rc)"; diag "$out"; fi
after=$(info_int supervisor_commands)
# No command and stdin no terminal: a login shell without one reads the script from stdin and
# ends at its end, as ssh's does (with a PTY it waited for a ^D).
out=$(printf 'echo from-a-script\nexit 4\n' | timeout 60 "$HUTCH" shell "$vm" 2>&1); rc=$?
if [ $rc -eq 4 ] && grep -qx from-a-script <<<"$out"; then ok "a shell with a script on stdin runs it and ends (exit 4)"; else not_ok "a shell with a script on stdin runs it and ends (exit $rc)"; diag "$out"; fi
# On a terminal: the guest's PTY has the terminal's size and follows a resize, a typed line
# arrives, Ctrl-C interrupts the command (exit 130), all through the supervisor.
out=$(python3 "$HUTCH_SOURCE_DIR/tests/e2e/pty-shell.py" "$HUTCH" "$vm" 2>&1)
diag "$out"
if grep -qx "30 100" <<<"$out" && grep -qx "50 132" <<<"$out"; then ok "the PTY has the terminal's size and follows a resize"; else not_ok "the PTY has the terminal's size and follows a resize"; fi
if grep -q "got:hello" <<<"$out" && ! grep -q not-reached <<<"$out" && grep -qx "exit=130" <<<"$out"; then ok "a typed line arrives, Ctrl-C interrupts the command: exit 130"; else not_ok "typed line and Ctrl-C through the PTY"; fi
if [ "$(info_int supervisor_commands)" -eq $((after + 2)) ]; then ok "the terminal session went through the supervisor"; else not_ok "the terminal session went through the supervisor"; fi
# A guest that floods a client that does not read: the supervisor stops reading the channel
# (the guest's writes block), its memory does not follow the flood.
rss() { awk '/^VmRSS:/ {print $2}' /proc/"$1"/status; }
rss0=$(rss "$sup_pid")
("$HUTCH" shell "$vm" -- cat /dev/zero | sleep 10) &
flood=$!
sleep 8
rss1=$(rss "$sup_pid")
wait $flood
diag "supervisor RSS ${rss0} kB -> ${rss1} kB while the guest floods a reader that does not read"
if [ -n "$rss1" ] && [ $((rss1 - rss0)) -lt 65536 ]; then ok "a flood the client does not read leaves the supervisor's memory bounded"; else not_ok "the supervisor's memory is bounded under a flood (${rss0} -> ${rss1} kB)"; fi
check "the supervisor still serves after the flood" "$HUTCH" shell "$vm" -- true
# Killed with SIGKILL mid-command: the command's client fails, the guest keeps its network,
# the next shell connects directly and starts a new supervisor.
"$HUTCH" shell "$vm" -- sleep 30 &
sleeper=$!
sleep 2
kill -9 "$sup_pid"
wait "$sleeper"; rc=$?
if [ $rc -ne 0 ]; then ok "a command whose supervisor was killed fails (exit $rc)"; else not_ok "a command whose supervisor was killed fails"; fi
out=$("$HUTCH" shell "$vm" -- echo still-here 2>&1)
if [ "$out" = still-here ]; then ok "after kill -9 of the supervisor, hutch shell works"; else not_ok "after kill -9 of the supervisor, hutch shell works"; diag "$out"; fi
if wait_supervisor && [ "$(info_int supervisor_pid)" != "$sup_pid" ]; then ok "and a new supervisor serves the VM"; else not_ok "a new supervisor serves the VM"; fi
sup_pid=$(info_int supervisor_pid)

port=$(free_port)
check_status "nothing answers on host port $port before the forward" 7 curl -s -m 5 "http://127.0.0.1:$port/"
out=$("$HUTCH" forward "$vm" "$port:$guest_port" 2>&1); rc=$?
if [ $rc -eq 0 ]; then ok "forward $port:$guest_port"; else not_ok "forward $port:$guest_port (exit $rc)"; diag "$out"; fi
page=""
for _ in $(seq 1 20); do page=$(curl -s -m 10 "http://127.0.0.1:$port/index.html") && [ -n "$page" ] && break; sleep 1; done
if [ "$page" = "hello from the guest" ]; then ok "curl gets the guest's page through the forward"; else not_ok "curl through the forward"; diag "$page"; fi

for i in 1 2 3 4 5; do curl -s -m 120 -o "$E2E_TMP/mid.$i" "http://127.0.0.1:$port/mid" & done
wait
good=0
for i in 1 2 3 4 5; do [ "$(sha256sum <"$E2E_TMP/mid.$i" | cut -d' ' -f1)" = "$guest_mid" ] && good=$((good + 1)); done
if [ $good -eq 5 ]; then ok "five concurrent 1 MiB downloads, all byte-exact"; else not_ok "five concurrent downloads: $good of 5 byte-exact"; fi

t0=$(date +%s.%N)
curl -s -m 600 -o "$E2E_TMP/big" "http://127.0.0.1:$port/big"
t1=$(date +%s.%N)
if [ "$(sha256sum <"$E2E_TMP/big" | cut -d' ' -f1)" = "$guest_big" ]; then ok "20 MiB download, checksum equal"; else not_ok "20 MiB download, checksum equal"; fi
diag "20 MiB through the forward: $(awk "BEGIN{printf \"%.1f\", 20 / ($t1 - $t0)}") MiB/s"
t0=$(date +%s.%N)
"$HUTCH" cp "$vm:www/big" "$E2E_TMP/big.cp"
t1=$(date +%s.%N)
diag "the same file with hutch cp (SFTP, same SSH server): $(awk "BEGIN{printf \"%.1f\", 20 / ($t1 - $t0)}") MiB/s"

out=$("$HUTCH" forward "$vm" --list 2>&1)
if [ "$out" = "127.0.0.1:$port -> $guest_port" ]; then ok "--list shows it"; else not_ok "--list shows it"; diag "$out"; fi
out=$("$HUTCH" info --json "$vm" 2>&1)
if python3 -c 'import json,sys; f=json.load(sys.stdin)["forwards"]; sys.exit(0 if len(f) == 1 and f[0]["host_ip"] == "127.0.0.1" and f[0]["host_port"] == int(sys.argv[1]) and f[0]["guest_port"] == int(sys.argv[2]) else 1)' "$port" "$guest_port" <<<"$out"; then
  ok "info --json lists it under forwards"
else
  not_ok "info --json lists it under forwards"; diag "$out"
fi
pid=$(forward_pid)
if [ "$(forward_server "$port")" = "$sup_pid supervisor" ] && [ "$(cat /proc/"$pid"/comm 2>/dev/null)" = hutch-supervise ] &&
   ss -ltnpH "sport = :$port" | grep -q "pid=$sup_pid,"; then
  ok "the VM's supervisor serves it (--json names its pid; it holds the port)"
else
  not_ok "the supervisor serves the forward ($(forward_server "$port"), supervisor $sup_pid)"; diag "$(ss -ltnpH "sport = :$port"; cat "$runtime/supervisor.log")"
fi
check "no forward helper process" none_running -u "$(id -u)" -x hutch-forward
listen=$(ss -ltnH "sport = :$port" | awk '{print $4}')
if [ "$listen" = "127.0.0.1:$port" ]; then ok "the host port is bound on 127.0.0.1 only"; else not_ok "bound on 127.0.0.1 only"; diag "$listen"; fi
host_addr=$(ip -4 -o addr show scope global | awk '{print $4}' | cut -d/ -f1 | head -1)
if [ -n "$host_addr" ]; then
  check_status "not reachable through the host's address $host_addr" 7 curl -s -m 5 "http://$host_addr:$port/"
fi
modes=$(stat -c '%a %n' "$runtime"/forward-"$port".* 2>&1)
if [ "$modes" = "600 $runtime/forward-$port.spec" ] && [ "$(stat -c %a "$runtime")" = 700 ]; then ok "its spec file is 0600 in a 0700 directory (no pid or log file of its own)"; else not_ok "file modes"; diag "$modes"; fi

# The guest as the attacker: a server that sends without end to a client that does not read
# (the supervisor stops reading that channel, its memory does not follow), while the user's
# commands go on through the same supervisor.
zero_port=8791
in_guest sh -c "nohup setsid python3 -c 'import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((\"127.0.0.1\", $zero_port)); s.listen(8)
while True:
    c, _ = s.accept()
    try:
        while True: c.sendall(bytes(65536))
    except OSError: c.close()' >/dev/null 2>&1 </dev/null &"
listening=""
for _ in $(seq 1 30); do
  in_guest python3 -c "import socket; socket.create_connection(('127.0.0.1', $zero_port)).close()" 2>/dev/null && listening=yes && break
  sleep 1
done
if [ -n "$listening" ]; then ok "the guest's flooding server listens"; else not_ok "the guest's flooding server listens"; fi
zport=$(free_port)
check "forward a port whose guest server floods" "$HUTCH" -q forward "$vm" "$zport:$zero_port"
rss0=$(awk '/^VmRSS:/ {print $2}' /proc/"$sup_pid"/status)
exec 3<>"/dev/tcp/127.0.0.1/$zport"
sleep 8
rss1=$(awk '/^VmRSS:/ {print $2}' /proc/"$sup_pid"/status)
# the flood did arrive, unread: the client's receive queue holds it
recvq=$(ss -tnH state established "dport = :$zport" | awk '{print $1}' | sort -n | tail -n 1)
if [ "${recvq:-0}" -gt 0 ]; then ok "the flood reached the client ($recvq bytes unread)"; else not_ok "the flood reached the client"; diag "$(ss -tn state established "dport = :$zport")"; fi
out=$(timeout 30 "$HUTCH" shell "$vm" -- echo still-served 2>&1)
diag "supervisor RSS ${rss0} kB -> ${rss1} kB while a forwarded port floods a client that does not read"
if [ -n "$rss1" ] && [ $((rss1 - rss0)) -lt 32768 ]; then ok "a flood through a forwarded port leaves the supervisor's memory bounded"; else not_ok "the supervisor's memory is bounded under a forwarded flood (${rss0} -> ${rss1} kB)"; fi
if [ "$out" = still-served ]; then ok "meanwhile a command through the same supervisor runs"; else not_ok "a command beside the flood"; diag "$out"; fi
got=$(head -c 1000000 <&3 | wc -c)
exec 3<&-
if [ "$got" = 1000000 ]; then ok "and the flood's bytes still arrive when the client reads"; else not_ok "the flood's bytes arrive ($got)"; fi
check "--remove $zport" "$HUTCH" forward "$vm" --remove "$zport"

# Kill -9 of the supervisor loses the forward only until the next supervisor: the next
# command starts one, and it serves the port again.
kill -9 "$sup_pid"
# (an ASan process takes a moment to exit: its port stays open until it has)
wait_gone "$sup_pid" 10
check_status "the port refuses while no supervisor runs" 7 curl -s -m 5 "http://127.0.0.1:$port/"
if [ "$(forward_server "$port")" = "0 supervisor" ]; then ok "--list shows it waiting (pid 0)"; else not_ok "--list while no supervisor runs: $(forward_server "$port")"; fi
check "the next command works" "$HUTCH" shell "$vm" -- true
wait_supervisor
new_sup=$(info_int supervisor_pid)
page=$(page_of "$port")
if [ "$new_sup" != "$sup_pid" ] && [ "$page" = "hello from the guest" ] && [ "$(forward_server "$port")" = "$new_sup supervisor" ]; then
  ok "after kill -9 of the supervisor, the new one serves the forward again"
else
  not_ok "the new supervisor serves the forward again (old $sup_pid, new $new_sup, $(forward_server "$port"))"; diag "$page"; diag "$(cat "$runtime/supervisor.log")"
fi
sup_pid=$new_sup
pid=$sup_pid

# A guest reboot ends the supervisor's SSH session: the same supervisor connects again by
# itself and the forward serves again, with no hutch command in between (curl only). The
# guest's web server comes back as a unit of its own.
check "the guest's web server as a unit, for the reboot" in_guest sudo sh -c "
  printf '%s\n' '[Service]' 'User=$(id -un)' 'WorkingDirectory=/home/$(id -un)/www' \
    'ExecStart=/usr/bin/python3 -m http.server --bind 127.0.0.1 $guest_port' \
    '[Install]' 'WantedBy=multi-user.target' >/etc/systemd/system/e2e-www.service &&
  systemctl enable e2e-www.service"
check "reboot the guest" in_guest sudo sh -c 'nohup sh -c "sleep 1; systemctl reboot" >/dev/null 2>&1 &'
# (its keepalives find the old session dead once the rebooted guest answers them with a reset)
for _ in $(seq 1 240); do grep -q "connected again" "$runtime/supervisor.log" && break; sleep 1; done
page=
for _ in $(seq 1 30); do
  page=$(curl -s -m 5 "http://127.0.0.1:$port/index.html") && [ "$page" = "hello from the guest" ] && break
  sleep 2
done
if grep -q "the SSH session failed" "$runtime/supervisor.log" && [ "$page" = "hello from the guest" ] &&
   ! gone "$sup_pid" && grep -q "connected again" "$runtime/supervisor.log"; then
  ok "after a guest reboot, the same supervisor connects again and the forward serves again"
else
  not_ok "after a guest reboot, the forward serves again (supervisor $sup_pid)"; diag "$page"; diag "$(tail -5 "$runtime/supervisor.log")"
fi
check "hutch shell after the reboot" in_guest true
if [ "$(info_int supervisor_pid)" = "$sup_pid" ] && [ "$(forward_server "$port")" = "$sup_pid supervisor" ]; then
  ok "still that supervisor, serving the forward"
else
  not_ok "still that supervisor after the reboot ($(info_int supervisor_pid), $(forward_server "$port"))"
fi

# Without a supervisor to ask: a helper process of its own, as before supervisors.
port2=$(free_port)
out=$(HUTCH_NO_SUPERVISOR=1 "$HUTCH" forward "$vm" "$port2:$guest_port" 2>&1); rc=$?
helper=$(forward_server "$port2")
if [ $rc -eq 0 ] && [ "$(page_of "$port2")" = "hello from the guest" ] && [ "${helper#* }" = helper ] &&
   [ "$(cat /proc/"${helper%% *}"/comm 2>/dev/null)" = hutch-forward ]; then
  ok "HUTCH_NO_SUPERVISOR=1: a helper of its own (hutch-forward) serves the forward"
else
  not_ok "HUTCH_NO_SUPERVISOR=1 forward (exit $rc, $helper)"; diag "$out"
fi
modes=$(stat -c '%a %n' "$runtime"/forward-"$port2".* 2>&1)
if [ "$(grep -c '^600 ' <<<"$modes")" = 3 ]; then ok "its pid, spec and log files are 0600"; else not_ok "the helper's file modes"; diag "$modes"; fi
check "--remove $port2" "$HUTCH" forward "$vm" --remove "$port2"
if wait_gone "${helper%% *}" 5; then ok "the helper is gone"; else not_ok "the helper is gone ($helper)"; fi
check_status "curl fails after --remove" 7 curl -s -m 5 "http://127.0.0.1:$port2/"

# ---- errors --------------------------------------------------------------------------------
taken=$(free_port)
python3 -m http.server --bind 127.0.0.1 "$taken" >/dev/null 2>&1 &
squatter=$!
for _ in $(seq 1 20); do ss -ltnH "sport = :$taken" | grep -q . && break; sleep 0.2; done
out=$("$HUTCH" forward "$vm" "$taken:$guest_port" 2>&1); rc=$?
if [ $rc -eq 1 ] && grep -q "port tcp 127.0.0.1:$taken is in use" <<<"$out"; then ok "a taken host port: exit 1, the port named"; else not_ok "a taken host port (exit $rc)"; fi
diag "$out"
kill "$squatter"
out=$("$HUTCH" forward "$vm" "$port:$guest_port" 2>&1); rc=$?
if [ $rc -eq 1 ] && grep -q "forwarded to '$vm' already" <<<"$out"; then ok "the same host port twice: exit 1"; else not_ok "the same host port twice (exit $rc)"; diag "$out"; fi
check_status "a spec without GUEST is a usage error" 2 "$HUTCH" forward "$vm" 8080
check_status "UDP is a usage error" 2 "$HUTCH" forward "$vm" 8080:80/udp
check_status "a range is a usage error" 2 "$HUTCH" forward "$vm" 8080-8081:80-81
check_status "no such VM" 1 "$HUTCH" forward "nope-$$" "$port:80"

# ---- remove --------------------------------------------------------------------------------
check "--remove $port" "$HUTCH" forward "$vm" --remove "$port"
check_status "curl fails after --remove" 7 curl -s -m 5 "http://127.0.0.1:$port/"
if ! gone "$sup_pid"; then ok "the supervisor serves on"; else not_ok "the supervisor serves on"; fi
out=$("$HUTCH" forward "$vm" --list 2>&1)
if [ -z "$out" ] && [ ! -e "$runtime/forward-$port.spec" ]; then ok "--list is empty, the spec file removed"; else not_ok "--list is empty"; diag "$out"; fi
check_status "--remove again: exit 1" 1 "$HUTCH" forward "$vm" --remove "$port"

# ---- the helper ends with the VM -----------------------------------------------------------
check "forward again" "$HUTCH" -q forward "$vm" "$port:$guest_port"
pid=$(forward_pid)
check "it answers" curl -s -m 10 -o /dev/null "http://127.0.0.1:$port/index.html"
# Behind hutch's back: the supervisor sees the domain stop, and the port closes with it.
check "virsh destroy" virsh -c qemu:///session destroy "$vm"
if wait_gone "$sup_pid" 20; then ok "the supervisor exits when the VM is destroyed behind hutch's back"; else not_ok "the supervisor exits when the VM is destroyed (pid $sup_pid)"; fi
check_status "the forwarded port refuses after virsh destroy" 7 curl -s -m 5 "http://127.0.0.1:$port/"
if [ ! -e "$runtime/forward-$port.spec" ]; then ok "and its spec file is gone"; else not_ok "the forward's spec file is gone after virsh destroy"; fi
sleep 1
if none_running -u "$(id -u)" -f "[p]asst.*/$vm/"; then ok "no passt left after virsh destroy"; else not_ok "no passt left after virsh destroy"; fi
if [ ! -e "$runtime/supervisor.sock" ] && [ ! -e "$runtime/passt.pid" ]; then ok "no supervisor socket or passt pidfile left"; else not_ok "no supervisor socket or passt pidfile left"; diag "$(ls "$runtime")"; fi
out=$("$HUTCH" forward "$vm" "$port:$guest_port" 2>&1); rc=$?
if [ $rc -eq 1 ] && grep -q "not running" <<<"$out"; then ok "forward to a VM that is not running: exit 1"; else not_ok "forward to a stopped VM (exit $rc)"; diag "$out"; fi

out=$("$HUTCH" -q start "$vm" 2>&1); rc=$?
if [ $rc -eq 0 ]; then ok "start again"; else not_ok "start again (exit $rc)"; diag "$out"; fi
serve
check "forward after the restart" "$HUTCH" -q forward "$vm" "$port:$guest_port"
pid=$(forward_pid)
page=""
for _ in $(seq 1 20); do page=$(curl -s -m 10 "http://127.0.0.1:$port/index.html") && [ -n "$page" ] && break; sleep 1; done
if [ "$page" = "hello from the guest" ]; then ok "it answers after the restart"; else not_ok "it answers after the restart"; diag "$page"; fi
check "hutch stop" "$HUTCH" -q stop "$vm"
if [ -n "$pid" ] && gone "$pid"; then ok "when hutch stop returns, the forward's supervisor is gone"; else not_ok "after hutch stop the supervisor is gone (pid $pid)"; fi
if ! ls "$runtime"/forward-*.spec "$runtime"/forward-*.pid >/dev/null 2>&1; then ok "no forward spec or pid file left"; else not_ok "no forward spec or pid file left"; diag "$(ls "$runtime")"; fi
check_status "curl fails after the stop" 7 curl -s -m 5 "http://127.0.0.1:$port/"

check "delete" "$HUTCH" -q delete "$vm"
finish
