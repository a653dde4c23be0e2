#!/usr/bin/env bash
# The egress policy (hutch-profile(5), network), attacked from inside a real guest as root in
# each mode, on one VM whose mode hutch net changes while it runs. docs/security.md lists each
# guarantee with its test here.
#
# Traffic stays on this machine or goes to the package mirror: the guest's probes target the
# host's loopback, two TEST-NET-2 addresses that tests/run adds on lo (198.51.100.1, an
# address of this host, and 198.51.100.2, which HUTCH_EGRESS_TEST_OUTSIDE tells the policy to
# take as a server outside), names that HUTCH_EGRESS_TEST_HOSTS (test-only) points at those,
# and deb.debian.org / registry.npmjs.org (the mirrors this machine may reach). Nothing is
# sent to 10.0.2.2 or any other address.
. "$(dirname "$0")/lib.sh"
require_libvirt

free_udp_port() { python3 -c 'import socket; s=socket.socket(type=socket.SOCK_DGRAM); s.bind(("0.0.0.0",0)); print(s.getsockname()[1])'; }

host_addr=198.51.100.1
outside_addr=198.51.100.2
for a in $host_addr $outside_addr; do
  if ! ip -4 addr show | has "inet $a/"; then
    echo "Bail out! the test address $a is not on this host (tests/run adds it on lo as root)"
    exit 1
  fi
done

any_port=$(free_port)     # a host service on 0.0.0.0: the known limit of passt alone
loop_port=$(free_port)    # a host service on 127.0.0.1
out_port=$(free_port)     # the outside server's allowed port
other_port=$(free_port)   # the same server, another port
udp_port=$(free_udp_port) # a UDP listener on every host address
fwd_port=$(free_port)     # the VM's forwarded port
hold_port=$(free_port)    # the outside server's connection that never ends (a tick a 0.3 s)
eof_port=$(free_port)     # the outside server that answers once the client shut its side
mkdir -p "$E2E_TMP/any" "$E2E_TMP/loop" "$E2E_TMP/out" "$E2E_TMP/other" "$E2E_TMP/project"
echo any-address-service >"$E2E_TMP/any/index.html"
echo loopback-service >"$E2E_TMP/loop/index.html"
echo outside-service >"$E2E_TMP/out/index.html"
echo other-port-service >"$E2E_TMP/other/index.html"
pids=()
python3 -m http.server --bind 0.0.0.0 --directory "$E2E_TMP/any" "$any_port" >/dev/null 2>&1 & pids+=($!)
python3 -m http.server --bind 127.0.0.1 --directory "$E2E_TMP/loop" "$loop_port" >/dev/null 2>&1 & pids+=($!)
python3 -m http.server --bind $outside_addr --directory "$E2E_TMP/out" "$out_port" >/dev/null 2>&1 & pids+=($!)
python3 -m http.server --bind $outside_addr --directory "$E2E_TMP/other" "$other_port" >/dev/null 2>&1 & pids+=($!)
python3 -c '
import socket, sys
s = socket.socket(type=socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
while True:
    data, peer = s.recvfrom(2048)
    with open(sys.argv[2], "ab") as f:
        f.write(b"%s %s\n" % (peer[0].encode(), data[:40]))
' "$udp_port" "$E2E_TMP/udp-received" & pids+=($!)
python3 -c '
import socket, sys, threading, time
def hold(c):
    try:
        while True:
            c.sendall(b"tick\n"); time.sleep(0.3)
    except OSError:
        pass
def eof(c):
    got = b""
    while True:
        b = c.recv(4096)
        if not b:
            break
        got += b
    c.sendall(b"after eof: %d bytes" % len(got)); c.close()
def serve(port, handler):
    l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind((sys.argv[1], port)); l.listen(16)
    while True:
        c, _ = l.accept()
        threading.Thread(target=handler, args=(c,), daemon=True).start()
threading.Thread(target=serve, args=(int(sys.argv[2]), hold), daemon=True).start()
serve(int(sys.argv[3]), eof)
' $outside_addr "$hold_port" "$eof_port" & pids+=($!)
trap 'kill "${pids[@]}" 2>/dev/null; e2e_cleanup' EXIT

export HUTCH_EGRESS_TEST_HOSTS="good.test=$outside_addr,rebind.test=$host_addr,loop.test=127.0.0.1"
# Only the stand-in server is taken as outside. The package mirrors are reached as they
# are: on the CI machines at a TEST-NET-3 address, which the policy counts as public.
export HUTCH_EGRESS_TEST_OUTSIDE=$outside_addr

vm=$(vm_name egress)
track_vm "$vm"
if "$HUTCH" -q start "$vm" -f "$HUTCH_SOURCE_DIR/tests/image/test-guest.yaml" --egress public \
  --port "127.0.0.1:$fwd_port:8080" --share "$E2E_TMP/project:/srv/project" >"$E2E_TMP/start.out" 2>&1; then
  ok "a VM starts under egress: public"
else
  not_ok "a VM starts under egress: public"; diag "$(tail -20 "$E2E_TMP/start.out")"
  diag "$(cat "$XDG_RUNTIME_DIR"/hutch/"$vm"/egress-helper.log 2>/dev/null | tail -20)"
  finish; exit 1
fi

as_root() { "$HUTCH" shell "$vm" -- sudo "$@"; }
# fetch URL: what the guest's root gets from URL (curl's body, then "exit N"). HTTPS probes
# use -k: this machine reaches the mirrors through a TLS-intercepting proxy whose CA only the
# host trusts, and what they test is whether a connection gets through, which a certificate
# error would hide (a refused one must not pass as a failed verification).
fetch() { as_root curl -s -m 10 "$@" 2>&1; echo "exit $?"; }
# connects HOST PORT: "connected" when the guest's root opens a TCP connection that the far
# end (the proxy, then the server) keeps open and answers; anything else is a failure
raw_tcp() {
  as_root python3 -c '
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=8)
    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
    data = s.recv(200)
    print("got " + data.decode("latin-1").split("\r\n")[0] if data else "closed")
except Exception as e:
    print("failed " + type(e).__name__)
' "$1" "$2" 2>&1
}

# ---- public ------------------------------------------------------------------------------
net_json=$("$HUTCH" net "$vm" --json)
check "hutch net shows egress: public" python3 -c 'import json,sys; d=json.loads(sys.argv[1]); assert d["egress"] == "public", d' "$net_json"
# The guest's DNS: every name gets one of hutch's own addresses (198.18.0.0/16), whoever it asks
got=$(as_root getent ahostsv4 good.test | head -1)
case $got in 198.18.*|198.19.*) ok "a name resolves to hutch's own address for it ($got)";; *) not_ok "a name resolves to hutch's own address"; diag "$got";; esac
got=$(as_root python3 -c '
import socket, struct, sys
q = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + b"".join(bytes([len(p)]) + p for p in [b"exfil-probe", b"example", b"org"]) + b"\0" + struct.pack(">HH", 1, 1)
s = socket.socket(type=socket.SOCK_DGRAM); s.settimeout(5)
s.sendto(q, (sys.argv[1], 53))
r = s.recv(512)
print(".".join(str(b) for b in r[-4:]))
' $outside_addr 2>&1)
case $got in 198.18.*|198.19.*) ok "a DNS query sent to an outside resolver ($outside_addr:53) is answered by hutch, not that resolver ($got)";; *) not_ok "a DNS query to an outside resolver is answered by hutch"; diag "$got";; esac

got=$(fetch "http://$host_addr:$any_port/")
if ! grep -q any-address-service <<<"$got"; then ok "public: a host service on 0.0.0.0 is not reachable through the host's address $host_addr (passt alone's known limit)"; else not_ok "public: host service on 0.0.0.0 via $host_addr"; diag "$got"; fi
got=$(fetch "http://$host_addr:$loop_port/")
if ! grep -q loopback-service <<<"$got"; then ok "public: the host's 127.0.0.1 service is not reachable via $host_addr"; else not_ok "public: 127.0.0.1 service via $host_addr"; diag "$got"; fi
got=$(fetch "http://rebind.test:$any_port/")
if ! grep -q any-address-service <<<"$got"; then ok "public: a name that resolves to a host address is refused (rebind.test -> $host_addr)"; else not_ok "public: a name resolving to a host address"; diag "$got"; fi
got=$(fetch "http://loop.test:$loop_port/")
if ! grep -q loopback-service <<<"$got"; then ok "public: a name that resolves to 127.0.0.1 is refused"; else not_ok "public: a name resolving to 127.0.0.1"; diag "$got"; fi
got=$(fetch "http://good.test:$out_port/")
if grep -q outside-service <<<"$got"; then ok "public: a name outside is reached through the policy"; else not_ok "public: a name outside is reached"; diag "$got"; fi
got=$(fetch "http://$outside_addr:$out_port/")
if grep -q outside-service <<<"$got"; then ok "public: an address outside is reached"; else not_ok "public: an address outside is reached"; diag "$got"; fi
got=$(fetch -o /dev/null -w '%{http_code}' "http://deb.debian.org/debian/dists/bookworm/Release")
if grep -q '^200' <<<"$got"; then ok "public: the Debian mirror answers (a real name, resolved on the host)"; else not_ok "public: the Debian mirror answers"; diag "$got"; fi
got=$(as_root apt-get -q -o Acquire::Retries=0 update 2>&1; echo "exit $?")
if grep -q "exit 0" <<<"$got"; then ok "public: apt-get update works unchanged"; else not_ok "public: apt-get update works unchanged"; diag "$(tail -5 <<<"$got")"; fi

got=$(as_root python3 -c '
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
s.sendall(b"x" * 5000); s.shutdown(socket.SHUT_WR)
print(s.recv(100).decode())
' good.test "$eof_port" 2>&1)
if [ "$got" = "after eof: 5000 bytes" ]; then ok "public: a client that shuts its side down still gets the answer (half-close relayed)"; else not_ok "public: half-close relayed"; diag "$got"; fi

# Around the proxy: UDP, ICMP, IPv6
: >"$E2E_TMP/udp-received"
as_root python3 -c '
import socket, sys
s = socket.socket(type=socket.SOCK_DGRAM)
for a in sys.argv[1:3]:
    s.sendto(b"udp-escape", (a, int(sys.argv[3])))
' $host_addr $outside_addr "$udp_port" >/dev/null 2>&1
sleep 2
if [ ! -s "$E2E_TMP/udp-received" ]; then ok "UDP from the guest reaches no host address"; else not_ok "UDP from the guest reaches no host address"; diag "$(cat "$E2E_TMP/udp-received")"; fi
check_status "ICMP from the guest gets no answer (ping $outside_addr)" 1 as_root ping -c 2 -W 2 $outside_addr
got=$(as_root sh -c 'ip -6 route show default; ip -6 addr show scope global' 2>&1)
if [ -z "$got" ]; then ok "the guest has no IPv6 route or global address"; else not_ok "the guest has no IPv6 route or global address"; diag "$got"; fi
got=$(fetch -6 "http://[::ffff:$host_addr]:$any_port/")
if ! grep -q any-address-service <<<"$got"; then ok "an IPv4-mapped IPv6 address does not reach the host"; else not_ok "an IPv4-mapped IPv6 address"; diag "$got"; fi

# ---- allowlist ---------------------------------------------------------------------------
check "hutch net switches the running VM to allowlist" "$HUTCH" net "$vm" --egress allowlist --allow "good.test:$out_port" --allow deb.debian.org
got=$(fetch "http://good.test:$out_port/")
if grep -q outside-service <<<"$got"; then ok "allowlist: a listed name and port works"; else not_ok "allowlist: a listed name and port works"; diag "$got"; fi
got=$(raw_tcp good.test "$other_port")
if ! grep -q "^got HTTP" <<<"$got"; then ok "allowlist: the listed name on another port is refused ($got)"; else not_ok "allowlist: the listed name on another port"; diag "$got"; fi
got=$(raw_tcp $outside_addr "$out_port")
if ! grep -q "^got HTTP" <<<"$got"; then ok "allowlist: the listed name's address, connected to directly, is refused ($got)"; else not_ok "allowlist: the bare address of a listed name"; diag "$got"; fi
got=$(fetch -i "http://registry.npmjs.org/")
if grep -q "403" <<<"$got" && grep -q "not in the allowlist" <<<"$got"; then ok "allowlist: an unlisted name gets a 403 that names the reason"; else not_ok "allowlist: an unlisted name gets a 403 with its reason"; diag "$got"; fi
got=$(fetch -o /dev/null -w '%{http_code}' "http://deb.debian.org/debian/dists/bookworm/Release")
if grep -q '^200' <<<"$got"; then ok "allowlist: a listed real name works (deb.debian.org)"; else not_ok "allowlist: deb.debian.org"; diag "$got"; fi
got=$(fetch -k -o /dev/null -w '%{http_code}' "https://registry.npmjs.org/")
if ! grep -q '^200' <<<"$got"; then ok "allowlist: HTTPS to an unlisted name is refused"; else not_ok "allowlist: HTTPS to an unlisted name"; diag "$got"; fi
check "hutch net --allow adds a name to the running VM" "$HUTCH" net "$vm" --allow registry.npmjs.org
got=$(fetch -k -o /dev/null -w '%{http_code}' "https://registry.npmjs.org/")
if grep -q '^200' <<<"$got"; then ok "allowlist: the name allowed just now works over HTTPS, without a restart"; else not_ok "allowlist: hutch net --allow takes effect without a restart"; diag "$got"; fi
# An open connection that the policy stops allowing is closed, not left to run on.
check "hutch net --allow the outside server's long connection" "$HUTCH" net "$vm" --allow "good.test:$hold_port"
cat >"$E2E_TMP/hold.py" <<'PY'
import socket, sys, time
t0 = time.time(); n = 0
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)
try:
    while True:
        b = s.recv(100)
        if not b:
            break
        n += len(b)
except OSError:
    pass
print("ended after %.1f s, %d bytes" % (time.time() - t0, n))
PY
"$HUTCH" shell "$vm" -- sh -c 'cat > /tmp/hold.py' <"$E2E_TMP/hold.py"
as_root sh -c "nohup setsid python3 /tmp/hold.py good.test $hold_port > /tmp/hold.out 2>&1 < /dev/null &"
sleep 3
check "hutch net --deny the name while the connection runs" "$HUTCH" net "$vm" --deny "good.test:$hold_port"
got=""
for _ in $(seq 1 20); do got=$(as_root cat /tmp/hold.out 2>/dev/null); [ -n "$got" ] && break; sleep 0.5; done
if grep -q "^ended after" <<<"$got" && [ "$(awk '{print int($3)}' <<<"$got")" -lt 15 ]; then ok "an open connection is closed when the policy stops allowing it ($got)"; else not_ok "an open connection is closed when the policy changes"; diag "$got"; fi
check "hutch net --deny refuses it again" "$HUTCH" net "$vm" --deny registry.npmjs.org
got=$(fetch -k -o /dev/null -w '%{http_code}' "https://registry.npmjs.org/")
if ! grep -q '^200' <<<"$got"; then ok "deny wins: the denied name is refused again"; else not_ok "deny wins"; diag "$got"; fi

# ---- none --------------------------------------------------------------------------------
check "hutch net switches the running VM to none" "$HUTCH" net "$vm" --egress none
got=$(fetch "http://good.test:$out_port/")
if ! grep -q outside-service <<<"$got"; then ok "none: a name outside is refused"; else not_ok "none: a name outside is refused"; diag "$got"; fi
got=$(fetch "http://$outside_addr:$out_port/")
if ! grep -q outside-service <<<"$got"; then ok "none: an address outside is refused"; else not_ok "none: an address outside is refused"; diag "$got"; fi
got=$(fetch -o /dev/null -w '%{http_code}' "http://deb.debian.org/debian/dists/bookworm/Release")
if ! grep -q '^200' <<<"$got"; then ok "none: the mirror is refused"; else not_ok "none: the mirror is refused"; diag "$got"; fi
check "none: shell works" "$HUTCH" shell "$vm" -- true
echo from-host >"$E2E_TMP/copied-in"
check "none: cp into the guest works" "$HUTCH" cp "$E2E_TMP/copied-in" "$vm:copied-in"
check "none: cp out of the guest works" "$HUTCH" cp "$vm:copied-in" "$E2E_TMP/copied-out"
check "none: the share works" as_root sh -c 'echo from-guest > /srv/project/from-guest'
if [ "$(cat "$E2E_TMP/project/from-guest" 2>&1)" = from-guest ]; then ok "none: what the guest wrote in the share is on the host"; else not_ok "none: the share"; fi
"$HUTCH" shell "$vm" -- sh -c "mkdir -p ~/www && echo guest-web > ~/www/index.html && cd ~/www && nohup setsid python3 -m http.server 8080 >/dev/null 2>&1 </dev/null &"
got=""
for _ in $(seq 1 20); do got=$(curl -s -m 5 "http://127.0.0.1:$fwd_port/" 2>&1) && [ "$got" = guest-web ] && break; sleep 1; done
if [ "$got" = guest-web ]; then ok "none: the forwarded port reaches the guest's server"; else not_ok "none: the forwarded port"; diag "$got"; fi

# ---- the log and info --------------------------------------------------------------------
log=$("$HUTCH" net "$vm" --log --json)
check "the decision log names refusals with their reasons" python3 -c '
import json, sys
log = json.loads(sys.argv[1])
denied = [e for e in log if e["verdict"] == "deny"]
allowed = [e for e in log if e["verdict"] == "allow"]
assert any("not in the allowlist" in e["reason"] and e["name"] == "registry.npmjs.org" for e in denied), denied
assert any("address of the host" in e["reason"] for e in denied), denied
assert any(e["name"] == "good.test" for e in allowed), allowed
' "$log"
text=$("$HUTCH" net "$vm" --log)
if grep -q "deny .*registry.npmjs.org" <<<"$text"; then ok "hutch net --log prints the decisions as text"; else not_ok "hutch net --log as text"; diag "$(tail -5 <<<"$text")"; fi
net_json=$("$HUTCH" net "$vm" --json)
check "hutch net counts the decisions of the running VM" python3 -c 'import json,sys; d=json.loads(sys.argv[1]); assert d["allowed"] > 0 and d["denied"] > 0, d' "$net_json"
check "hutch info shows the mode in force and the counts" python3 -c 'import json,sys; n=json.loads(sys.argv[1])["network"]; assert n["egress"] == "none" and n["allowed"] > 0 and n["denied"] > 0, n' "$("$HUTCH" info --json "$vm")"
check_status "a bad mode is a usage error" 2 "$HUTCH" net "$vm" --egress everything
check_status "a bad destination is a usage error" 2 "$HUTCH" net "$vm" --allow "exa mple.org"

# ---- unrestricted at the next start, and back ----------------------------------------------
out=$("$HUTCH" -q net "$vm" --egress unrestricted 2>&1)
if [ "$out" = "changed: the VM gets it at its next start" ]; then ok "a change to unrestricted waits for the next start, and says so (under -q too, with nothing else)"; else not_ok "a change to unrestricted says it waits for the next start"; diag "$out"; fi

# ---- stop: nothing of the network is left, and the helper ran clean -------------------------
helper_log=$XDG_RUNTIME_DIR/hutch/$vm/egress-helper.log
cp "$helper_log" "$E2E_TMP/egress-helper.log" 2>/dev/null
check "the VM stops" "$HUTCH" -q stop "$vm"
left=""
for _ in $(seq 1 20); do
  left=$(pgrep -u "$(id -u)" -af "egress-helper .*/$vm |passt .*/$vm/" || true)
  [ -z "$left" ] && break
  sleep 0.5
done
if [ -z "$left" ]; then ok "no egress helper or passt of the VM is left after stop"; else not_ok "no egress helper or passt left after stop"; diag "$left"; fi
# the helper is the hutch binary of this build (ASan+UBSan in tests/run): its reports go to
# its log, and nothing else would see them
if ! grep -qE "AddressSanitizer|LeakSanitizer|runtime error" "$helper_log" "$E2E_TMP/egress-helper.log" 2>/dev/null; then
  ok "the egress helper's log holds no sanitizer report"
else
  not_ok "the egress helper's log holds no sanitizer report"; diag "$(grep -A15 -E "AddressSanitizer|LeakSanitizer|runtime error" "$helper_log" | head -40)"
fi

finish
