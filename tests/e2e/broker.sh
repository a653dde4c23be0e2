#!/usr/bin/env bash
# The credential broker (hutch-profile(5), secrets): the real value of a secret stays on the
# host, the guest holds a placeholder, and the egress helper's proxy puts the value into
# requests to the secret's hosts only. Attacked from inside a real guest, as its user and as
# root. docs/security.md lists each guarantee with its test here.
#
# The "upstream" is a TLS server of this test's own on 198.51.100.2 (a TEST-NET-2 address
# tests/run adds on lo), under two names that HUTCH_EGRESS_TEST_HOSTS (test-only) points at
# it; its certificate comes from a test CA that HUTCH_EGRESS_TEST_CA (test-only) adds to what
# the broker trusts upstream. Nothing is sent anywhere else.
. "$(dirname "$0")/lib.sh"
require_libvirt


outside_addr=198.51.100.2
if ! ip -4 addr show | has "inet $outside_addr/"; then
  echo "Bail out! the test address $outside_addr is not on this host (tests/run adds it on lo as root)"
  exit 1
fi
tls_port=$(free_port)
plain_port=$(free_port)
bad_port=$(free_port)   # a server whose certificate no CA the broker trusts has signed

# ---- the upstream: a test CA, a server certificate for both names, a recording server -------
pki=$E2E_TMP/pki
mkdir -p "$pki"
(
  cd "$pki" || exit 1
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=hutch broker test CA" -keyout ca.key -out ca.pem \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -subj "/CN=api.broker.test" -keyout server.key -out server.csr
  printf 'subjectAltName=DNS:api.broker.test,DNS:other.broker.test\nextendedKeyUsage=serverAuth\n' >ext
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
    -extfile ext -out server.pem
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=bad.broker.test" -addext subjectAltName=DNS:bad.broker.test \
    -keyout bad.key -out bad.pem
) >"$E2E_TMP/pki.log" 2>&1 || { echo "Bail out! openssl could not make the test PKI: $(tail -3 "$E2E_TMP/pki.log")"; exit 1; }

requests=$E2E_TMP/requests.jsonl   # every request the upstream got: path, headers
expected=$E2E_TMP/expected-token  # what /rotate takes as the right token
echo token-one >"$expected"
cat >"$E2E_TMP/upstream.py" <<'PY'
import http.server, json, ssl, sys, threading, time
addr, tls_port, plain_port, cert, key, log, expected, bad_port, bad_cert, bad_key, bad_log = sys.argv[1:12]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        with open(log, "a") as f:
            f.write(json.dumps({"path": self.path, "tls": isinstance(self.connection, ssl.SSLSocket),
                                "headers": {k.lower(): v for k, v in self.headers.items()}}) + "\n")
        status = 200
        if self.path.startswith("/echo-split"):
            # the same, the key split between two TLS records a moment apart (where a guest
            # can put a record's end by the length of what it makes the server echo)
            auth = self.headers.get("Authorization", "")
            half = len("you sent: ") + len(auth) // 2
            body = ("you sent: %s\n" % auth).encode()
            self.send_response(400)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[:half])
            self.wfile.flush()
            time.sleep(0.2)
            self.wfile.write(body[half:])
            return
        if self.path.startswith("/echo"):
            # a server that echoes what it got (an error message quoting the key, say)
            body = ("you sent: %s\n" % self.headers.get("Authorization", "")).encode()
            self.send_response(400)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if self.path.startswith("/rotate"):
            want = open(expected).read().strip()
            status = 200 if self.headers.get("Authorization") == "Bearer " + want else 401
        body = ("status %d\n" % status).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
tls = http.server.ThreadingHTTPServer((addr, int(tls_port)), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
tls.socket = ctx.wrap_socket(tls.socket, server_side=True)
plain = http.server.ThreadingHTTPServer((addr, int(plain_port)), H)
threading.Thread(target=plain.serve_forever, daemon=True).start()
# the untrusted server: records whatever bytes reach it, TLS handshake or not
import socket
def bad_server():
    bctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    bctx.load_cert_chain(bad_cert, bad_key)
    l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind((addr, int(bad_port))); l.listen(8)
    while True:
        c, _ = l.accept()
        try:
            t = bctx.wrap_socket(c, server_side=True)
            t.settimeout(10)
            data = t.recv(65536)
            with open(bad_log, "ab") as f:
                f.write(data)
        except Exception as e:
            with open(bad_log + ".errors", "a") as f:
                f.write(repr(e) + "\n")
        finally:
            c.close()
threading.Thread(target=bad_server, daemon=True).start()
tls.serve_forever()
PY
python3 "$E2E_TMP/upstream.py" $outside_addr "$tls_port" "$plain_port" "$pki/server.pem" \
  "$pki/server.key" "$requests" "$expected" "$bad_port" "$pki/bad.pem" "$pki/bad.key" \
  "$E2E_TMP/bad-received" >"$E2E_TMP/upstream.log" 2>&1 &
upstream_pid=$!
trap 'kill $upstream_pid 2>/dev/null; e2e_cleanup' EXIT

export HUTCH_EGRESS_TEST_HOSTS="api.broker.test=$outside_addr,other.broker.test=$outside_addr,bad.broker.test=$outside_addr"
export HUTCH_EGRESS_TEST_OUTSIDE=$outside_addr
export HUTCH_EGRESS_TEST_CA=$pki/ca.pem

# The canary: the real value, in the environment of the command that starts the VM only
canary="canary-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
file_canary="filecanary-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
echo token-one >"$E2E_TMP/token"
printf '%s\n' "$file_canary" >"$E2E_TMP/file-key"
chmod 600 "$E2E_TMP/file-key"

profile=$E2E_TMP/broker.yaml
cat >"$profile" <<EOF
base: $HUTCH_SOURCE_DIR/tests/image/test-guest.yaml
network:
  egress: allowlist
  allow:
    - api.broker.test:$tls_port
    - api.broker.test:$plain_port
    - other.broker.test:$tls_port
    - bad.broker.test:$bad_port
secrets:
  - name: CANARY_KEY
    from: env:HUTCH_TEST_CANARY
    hosts: [api.broker.test:$tls_port, bad.broker.test:$bad_port]
  - name: ROTATING_TOKEN
    command: cat $E2E_TMP/token
    hosts: [api.broker.test:$tls_port]
  - name: FILE_KEY
    file: $E2E_TMP/file-key
    hosts: [api.broker.test:$tls_port]
  - name: ABSENT_KEY
    from: env:HUTCH_TEST_NOT_SET
    optional: true
    hosts: [api.broker.test:$tls_port]
EOF

# ---- refused at create: a secret whose host the policy does not allow ------------------------
bad=$E2E_TMP/bad.yaml
cat >"$bad" <<EOF
base: $HUTCH_SOURCE_DIR/tests/image/test-guest.yaml
network:
  egress: allowlist
  allow: [api.broker.test]
secrets:
  - name: LEAKY
    from: env
    hosts: [elsewhere.broker.test]
EOF
badvm=$(vm_name broker-bad)
out=$(LEAKY=x "$HUTCH" create "$badvm" -f "$bad" 2>&1); rc=$?
if [ $rc -ne 0 ] && grep -q "LEAKY" <<<"$out" && grep -q "elsewhere.broker.test" <<<"$out" && grep -q "not allowed by the egress policy" <<<"$out"; then
  ok "create refuses a secret whose host the egress policy does not allow, naming both"
else
  not_ok "create refuses a secret whose host the policy does not allow (exit $rc)"; diag "$out"
fi
if ! "$HUTCH" info "$badvm" >/dev/null 2>&1 && [ ! -e "$XDG_DATA_HOME/hutch/instances/$badvm" ]; then
  ok "the refused create left nothing behind"
else
  not_ok "the refused create left nothing behind"; track_vm "$badvm"
fi
out=$(env -u HUTCH_TEST_CANARY "$HUTCH" create "$badvm" -f "$profile" 2>&1); rc=$?
if [ $rc -ne 0 ] && grep -q "CANARY_KEY: the host variable HUTCH_TEST_CANARY is not set" <<<"$out" && [ ! -e "$XDG_DATA_HOME/hutch/instances/$badvm" ]; then ok "create refuses a required secret whose source is empty, and makes nothing"; else not_ok "create refuses a required secret whose source is empty (exit $rc)"; diag "$out"; track_vm "$badvm"; fi
out=$(HUTCH_TEST_CANARY=x "$HUTCH" create "$badvm" -f "$profile" --egress unrestricted 2>&1); rc=$?
if [ $rc -ne 0 ] && grep -q "egress" <<<"$out"; then ok "create refuses secrets under egress unrestricted (no proxy would put them in)"; else not_ok "create refuses secrets under egress unrestricted (exit $rc)"; diag "$out"; track_vm "$badvm"; fi

# ---- the VM ----------------------------------------------------------------------------------
vm=$(vm_name broker)
track_vm "$vm"
mkdir -p "$E2E_TMP/project"
if HUTCH_TEST_CANARY=$canary "$HUTCH" start "$vm" -f "$profile" --share "$E2E_TMP/project:/srv/project" >"$E2E_TMP/start.out" 2>&1; then
  ok "a VM with secrets starts"
else
  not_ok "a VM with secrets starts"; diag "$(tail -20 "$E2E_TMP/start.out")"
  diag "$(tail -20 "$XDG_RUNTIME_DIR/hutch/$vm/egress-helper.log" 2>/dev/null)"
  finish; exit 1
fi
instance_dir=$XDG_DATA_HOME/hutch/instances/$vm
runtime_dir=$XDG_RUNTIME_DIR/hutch/$vm

as_user() { "$HUTCH" shell "$vm" -- "$@"; }
as_root() { "$HUTCH" shell "$vm" -- sudo "$@"; }
# the last request the upstream recorded, as JSON
last_request() { tail -1 "$requests" 2>/dev/null; }
header_of_last() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])["headers"].get(sys.argv[2].lower(), ""))' "$(last_request)" "$1" 2>/dev/null; }

placeholder=$(as_user printenv CANARY_KEY 2>&1)
case $placeholder in
  hutch-placeholder-*) ok "the guest user's environment holds a placeholder for the secret ($placeholder)";;
  *) not_ok "the guest user's environment holds a placeholder"; diag "$placeholder";;
esac
got=$(as_root printenv CANARY_KEY 2>&1)
if [ "$got" = "$placeholder" ]; then ok "root's environment (sudo) holds the same placeholder"; else not_ok "root's environment holds the placeholder"; diag "$got"; fi
got=$(as_user sh -c 'printenv ABSENT_KEY; echo "exit $?"' 2>&1)
if grep -q "exit 1" <<<"$got"; then ok "an optional secret the host does not have is left out of the guest (a tool asks to sign in)"; else not_ok "an optional secret the host does not have is left out of the guest"; diag "$got"; fi
if grep -q "ABSENT_KEY is left out (optional)" "$E2E_TMP/start.out"; then ok "create says the optional secret is left out"; else not_ok "create says the optional secret is left out"; diag "$(cat "$E2E_TMP/start.out")"; fi

# As the guest's user: no -k anywhere below; the guest trusts the VM's broker CA
: >"$requests"
got=$(as_user sh -c 'curl -sS -m 20 -H "Authorization: Bearer $CANARY_KEY" https://api.broker.test:'"$tls_port"'/user' 2>&1)
if [ "$(header_of_last Authorization)" = "Bearer $canary" ]; then
  ok "a request from the guest's user to the secret's host arrives with the real value"
else
  not_ok "a request from the guest's user arrives with the real value"; diag "$got"; diag "$(last_request)"
  diag "$(tail -5 "$instance_dir/egress.log")"
fi
: >"$requests"
got=$(as_root sh -c 'curl -sS -m 20 -H "x-api-key: $CANARY_KEY" https://api.broker.test:'"$tls_port"'/root' 2>&1)
if [ "$(header_of_last X-Api-Key)" = "$canary" ]; then ok "a request from the guest's root arrives with the real value"; else not_ok "a request from root arrives with the real value"; diag "$got"; diag "$(last_request)"; fi
: >"$requests"
got=$(as_user sh -c 'curl -sS -m 20 -u "x-access-token:$CANARY_KEY" https://api.broker.test:'"$tls_port"'/basic' 2>&1)
want=$(printf 'x-access-token:%s' "$canary" | base64 -w0)
if [ "$(header_of_last Authorization)" = "Basic $want" ]; then ok "inside Authorization: Basic (git's token form) the placeholder is replaced too"; else not_ok "the placeholder inside Basic is replaced"; diag "$got"; diag "$(last_request)"; fi
: >"$requests"
got=$(as_user sh -c 'curl -sS -m 20 -H "x-goog-api-key: $FILE_KEY" -H "X-Note: $FILE_KEY" "https://api.broker.test:'"$tls_port"'/q?key=$FILE_KEY"' 2>&1)
got_path=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["path"])' "$(last_request)" 2>&1)
file_placeholder=$(as_user printenv FILE_KEY 2>&1)
if [ "$(header_of_last X-Goog-Api-Key)" = "$file_canary" ]; then ok "a file: secret goes into a credential header (x-goog-api-key)"; else not_ok "a file: secret goes into x-goog-api-key"; diag "$got"; diag "$(last_request)"; fi
if [ "$got_path" = "/q?key=$file_placeholder" ] && [ "$(header_of_last X-Note)" = "$file_placeholder" ]; then
  ok "the request line and other headers keep the placeholder (a server that echoes a path or a header gets nothing to echo)"
else
  not_ok "the request line and other headers keep the placeholder"; diag "$got_path"; diag "$(last_request)"
fi
: >"$requests"
got=$(as_user python3 -c '
import os, urllib.request
r = urllib.request.Request("https://api.broker.test:'"$tls_port"'/python", headers={"x-api-key": os.environ["CANARY_KEY"]})
print(urllib.request.urlopen(r, timeout=20).read().decode())' 2>&1)
if [ "$(header_of_last X-Api-Key)" = "$canary" ]; then ok "Python's urllib (its own TLS stack, SSL_CERT_FILE) trusts the broker and the value goes in"; else not_ok "Python's urllib through the broker"; diag "$got"; fi
if grep -q '"verdict":"inject"' "$instance_dir/egress.log" && grep -q 'CANARY_KEY' "$instance_dir/egress.log"; then ok "the log records that CANARY_KEY's real value went in"; else not_ok "the log records the injection"; diag "$(tail -5 "$instance_dir/egress.log")"; fi

# Anywhere else, the placeholder stays a placeholder
: >"$requests"
got=$(as_user sh -c 'curl -sS -k -m 20 -H "x-api-key: $CANARY_KEY" https://other.broker.test:'"$tls_port"'/other' 2>&1)
if [ "$(header_of_last X-Api-Key)" = "$placeholder" ]; then ok "a request to another allowed host carries the placeholder (not intercepted)"; else not_ok "a request to another allowed host carries the placeholder"; diag "$got"; diag "$(last_request)"; fi
: >"$requests"
got=$(as_user sh -c 'curl -sS -m 20 -H "x-api-key: $CANARY_KEY" http://api.broker.test:'"$plain_port"'/plain' 2>&1)
if [ "$(header_of_last X-Api-Key)" = "$placeholder" ]; then ok "plain HTTP to the secret's name on another port carries the placeholder (never in clear text)"; else not_ok "plain HTTP carries the placeholder"; diag "$got"; diag "$(last_request)"; fi
if grep '"verdict":"keep"' "$instance_dir/egress.log" | has CANARY_KEY; then ok "the log says the placeholder went out as it is"; else not_ok "the log says the placeholder went out as it is"; diag "$(tail -5 "$instance_dir/egress.log")"; fi
# The guest cannot pick the server the value goes to: the broker connects to the name the
# guest looked up, and a request whose Host header (or absolute target) names another server
# gets no value (a front end that routes by Host could take it elsewhere).
: >"$requests"
got=$(as_user sh -c 'curl -sS -k -m 20 -H "x-api-key: $CANARY_KEY" --resolve other.broker.test:'"$tls_port"':$(getent ahostsv4 api.broker.test | head -1 | cut -d" " -f1) https://other.broker.test:'"$tls_port"'/sni' 2>&1)
if [ "$(header_of_last X-Api-Key)" = "$placeholder" ] && [ "$(header_of_last Host)" = "other.broker.test:$tls_port" ]; then
  ok "a request to the secret host's address whose SNI and Host name another server gets no value"
else
  not_ok "a request whose Host names another server gets no value"; diag "$got"; diag "$(last_request)"
fi
if tail -3 "$instance_dir/egress.log" | grep '"verdict":"keep"' | has "Host header"; then ok "the log says why: the Host header"; else not_ok "the log says the Host header kept the value out"; diag "$(tail -3 "$instance_dir/egress.log")"; fi
# A server that echoes the key back: the answer is cut before the value reaches the guest
got=$(as_user sh -c 'curl -sS -m 20 -H "Authorization: Bearer $CANARY_KEY" https://api.broker.test:'"$tls_port"'/echo' 2>&1)
if ! grep -q -e "$canary" <<<"$got" && grep -q "the answer held the real value of CANARY_KEY" "$instance_dir/egress.log"; then
  ok "an answer that echoes the real value is cut before it reaches the guest (and the log says so)"
else
  not_ok "an answer that echoes the real value is cut"; diag "$(sed "s/$canary/CANARY/g" <<<"$got")"; diag "$(tail -3 "$instance_dir/egress.log")"
fi

# The same with the key split between two records: not even its first half reaches the guest
got=$(as_user sh -c 'curl -sS -m 20 -H "Authorization: Bearer $CANARY_KEY" https://api.broker.test:'"$tls_port"'/echo-split' 2>&1)
# (the value is "canary-" and 24 hex digits; the first record ends 5 digits in)
canary_start=${canary:0:8}
if ! grep -q -e "$canary_start" <<<"$got" && grep -q "you sent: Bearer" <<<"$got" &&
  [ "$(grep -c "the answer held the real value of CANARY_KEY" "$instance_dir/egress.log")" -ge 2 ]; then
  ok "an answer that echoes the real value split across two TLS records gives the guest none of it (the answer up to it, and the log says so)"
else
  not_ok "an answer that echoes the value split across records gives the guest none of it"; diag "$(sed "s/$canary_start/CANARY-START/g" <<<"$got")"; diag "$(tail -3 "$instance_dir/egress.log")"
fi

# The key as a Basic password: the broker sends the real value base64-encoded, and a server
# that echoes the header back must not hand the guest that encoding either, at any alignment
# (the guest picks the user name's length, so where the value's bytes fall in base64's groups)
forms=$(python3 -c 'import base64,sys; v=sys.argv[1].encode(); print(" ".join(base64.b64encode(v[s:s+(len(v)-s)//3*3]).decode() for s in range(3)))' "$canary")
cut_before=$(grep -c "the answer held the real value of CANARY_KEY" "$instance_dir/egress.log")
basic_ok=1
for user in x xy xyz; do
  got=$(as_user sh -c 'curl -sS -m 20 -u "'"$user"':$CANARY_KEY" https://api.broker.test:'"$tls_port"'/echo' 2>&1)
  for form in $forms; do
    if grep -q -F -e "$form" <<<"$got" || ! grep -q "you sent: Basic" <<<"$got"; then basic_ok=0; diag "user $user: $got"; fi
  done
done
if [ "$basic_ok" = 1 ] && [ "$(grep -c "the answer held the real value of CANARY_KEY" "$instance_dir/egress.log")" -ge $((cut_before + 3)) ] &&
  [ "$(header_of_last Authorization)" = "Basic $(printf 'xyz:%s' "$canary" | base64 -w0)" ]; then
  ok "an answer that echoes the real value as the broker sent it, base64 in Basic, is cut before it at every alignment (and the log says so)"
else
  not_ok "an answer that echoes the value base64-encoded in Basic is cut before it"; diag "$(tail -3 "$instance_dir/egress.log")"
fi

# Never to a server the host cannot verify: the request is not sent at all
: >"$E2E_TMP/bad-received"
got=$(as_user sh -c 'curl -sS -m 30 -H "x-api-key: $CANARY_KEY" https://bad.broker.test:'"$bad_port"'/bad; echo' 2>&1)
sleep 1
if grep -q "502\|hutch credential broker" <<<"$got" && [ ! -s "$E2E_TMP/bad-received" ] && grep -q "certificate" <<<"$got"; then
  ok "a secret's host whose certificate the host does not trust gets nothing (the guest gets a 502 that says why)"
else
  not_ok "an untrusted upstream gets nothing"; diag "$got"; diag "received: $(head -c 300 "$E2E_TMP/bad-received" | od -c | head -5)"
  diag "$(cat "$E2E_TMP/bad-received.errors" 2>/dev/null | tail -3)"
fi

# Rotation: a command secret that changes is picked up after a 401, without a restart
: >"$requests"
rotate() { as_user sh -c 'curl -sS -m 20 -H "Authorization: Bearer $ROTATING_TOKEN" https://api.broker.test:'"$tls_port"'/rotate' 2>&1; }
got=$(rotate)
if grep -q "status 200" <<<"$got"; then ok "a command: secret goes in (token-one)"; else not_ok "a command: secret goes in"; diag "$got"; diag "$(last_request)"; fi
echo token-two >"$E2E_TMP/token"
echo token-two >"$expected"
got1=$(rotate)
got2=$(rotate)
if grep -q "status 401" <<<"$got1" && grep -q "status 200" <<<"$got2" && [ "$(header_of_last Authorization)" = "Bearer token-two" ]; then
  ok "after the upstream's 401 the command secret is fetched again: the next request has the new token, the VM still running"
else
  not_ok "a changed command secret is picked up after a 401"; diag "first: $got1"; diag "second: $got2"; diag "$(tail -3 "$requests")"
fi

# The guest's TLS trust: a certificate from the VM's CA for a name that is not a secret's
# host would be refused by the CA's name constraints (the CA can vouch for nothing else)
check "the VM's CA certificate is name-constrained to the secrets' hosts" sh -c "openssl x509 -in '$instance_dir/broker-ca.crt' -noout -text | grep -A3 'Name Constraints' | grep -q 'DNS:api.broker.test'"
check "the VM's CA key is 0600 on the host" test "$(stat -c %a "$instance_dir/broker-ca.key")" = 600
got=$(as_root sh -c 'grep -rl "PRIVATE KEY" /usr/local/share/ca-certificates /etc/ssl/certs 2>/dev/null; grep -c BEGIN /usr/local/share/ca-certificates/hutch-broker.crt' 2>&1)
if [ "$got" = "1" ]; then ok "the guest has the CA's certificate, and no key"; else not_ok "the guest has the CA's certificate and no key"; diag "$got"; fi

# ---- The real value is nowhere it must not be ------------------------------------------------
# Searched on the host, so that the canary itself never goes into the guest (a command line
# holding it would land in sudo's SUDO_COMMAND and the journal)
as_root sh -c 'for f in /proc/[0-9]*/environ; do tr "\0" "\n" <"$f"; echo; done' >"$E2E_TMP/guest-environ" 2>&1
if [ "$(wc -l <"$E2E_TMP/guest-environ")" -gt 100 ] && grep -q "^CANARY_KEY=$placeholder" "$E2E_TMP/guest-environ" && ! grep -q -e "$canary" -e "$file_canary" "$E2E_TMP/guest-environ"; then
  ok "no guest process's environment holds the real value (every process's read, the placeholder seen)"
else
  not_ok "no guest process's environment holds the real value"; diag "$(wc -l <"$E2E_TMP/guest-environ") lines"; diag "$(grep -e "$canary" -e "$file_canary" "$E2E_TMP/guest-environ" | head -3)"
fi
"$HUTCH" info "$vm" --json >"$E2E_TMP/info.json" 2>&1
if python3 -c 'import json,sys; s=json.load(open(sys.argv[1]))["secrets"]; assert [x["name"] for x in s][:2] == ["CANARY_KEY","ROTATING_TOKEN"], s' "$E2E_TMP/info.json" && ! grep -q -e "$canary" -e "$file_canary" "$E2E_TMP/info.json"; then
  ok "hutch info lists the secrets, without their values"
else
  not_ok "hutch info lists the secrets without values"; diag "$(head -c 600 "$E2E_TMP/info.json")"
fi
helper_pid=$(sed -n 1p "$runtime_dir/egress.pid" | cut -d' ' -f1)
got=$(python3 -c '
import sys
try:
    open("/proc/%s/environ" % sys.argv[1], "rb").read(); print("readable")
except PermissionError:
    print("refused")
try:
    open("/proc/%s/mem" % sys.argv[1], "rb"); print("mem readable")
except PermissionError:
    print("mem refused")
' "$helper_pid" 2>&1)
if [ "$got" = "$(printf 'refused\nmem refused')" ]; then ok "the helper that holds the values is not readable by the user's other processes (non-dumpable: no core dump, no /proc/PID/mem or environ)"; else not_ok "the helper's memory and environment are not readable"; diag "pid $helper_pid: $got"; fi
got=$(grep -l -e "$canary" -e "$file_canary" /proc/$(cat "$runtime_dir/passt.pid" 2>/dev/null | cut -d' ' -f1)/environ 2>&1)
if [ -z "$got" ] || grep -q "No such file" <<<"$got"; then ok "passt's environment does not hold the value"; else not_ok "passt's environment does not hold the value"; diag "$got"; fi
# every process of this user on the host (virtiofsd, the supervisor, passt, the helper's
# keeper, QEMU...): none has the value in its environment (the helper's own is unreadable)
leaks=""
for e in /proc/[0-9]*/environ; do
  [ -O "$e" ] || continue
  if tr '\0' '\n' <"$e" 2>/dev/null | has -e "$canary" -e "$file_canary"; then
    leaks="$leaks $(cat "${e%/environ}/comm" 2>/dev/null)"
  fi
done
if [ -z "$leaks" ]; then ok "no process of the user's on the host (virtiofsd, supervisor, passt, QEMU) holds the value in its environment"; else not_ok "a host process holds the value in its environment:$leaks"; fi
# The supervisor started the egress helper (its child) and parses what the guest sends: it
# handed the env secrets on in an anonymous file it never read, and holds neither the file
# nor the value (its whole readable memory searched)
sup_pid=$("$HUTCH" info --json "$vm" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("supervisor_pid", 0))')
# memscan PID NEEDLE: "regions N found M" over PID's readable memory, and whether it holds
# the secrets' anonymous file open
cat >"$E2E_TMP/memscan.py" <<'PY'
import os, re, sys
pid, needle = sys.argv[1], sys.argv[2].encode()
fds = [os.readlink("/proc/%s/fd/%s" % (pid, fd)) for fd in os.listdir("/proc/%s/fd" % pid)]
if any("hutch-secrets" in target for target in fds):
    print("holds the secrets file")
found, regions = 0, 0
with open("/proc/%s/maps" % pid) as maps, open("/proc/%s/mem" % pid, "rb", 0) as mem:
    for line in maps:
        m = re.match(r"([0-9a-f]+)-([0-9a-f]+) r", line)
        if not m:
            continue
        start, end = int(m.group(1), 16), int(m.group(2), 16)
        if end - start > 1 << 30:
            continue  # reserved, not used: ASan's shadow
        regions += 1
        at, tail = start, b""
        while at < end:
            try:
                mem.seek(at); data = tail + mem.read(min(1 << 24, end - at))
            except (OSError, OverflowError, ValueError):
                break
            found += data.count(needle)
            tail = data[-(len(needle) - 1):]
            at += 1 << 24
print("regions %d found %d" % (regions, found))
PY
got=$(python3 "$E2E_TMP/memscan.py" "$sup_pid" "$canary" 2>&1)
# the search finds the value where it is: a process holding it in its memory
python3 -c 'import sys, time; held = sys.argv[1].encode() * 2; time.sleep(60)' "$canary" & holder=$!
sleep 1
control=$(python3 "$E2E_TMP/memscan.py" "$holder" "$canary" 2>&1)
kill $holder; wait $holder 2>/dev/null
if [ "$sup_pid" -gt 0 ] && [ "$(cat /proc/"$(awk '{print $1}' "$runtime_dir/egress.pid")"/status | awk '/^PPid/{print $2}')" = "$sup_pid" ] &&
   [ "$(grep -c . <<<"$got")" -eq 1 ] && grep -q "^regions [1-9][0-9]* found 0$" <<<"$got" && grep -q "^regions [1-9][0-9]* found [1-9]" <<<"$control"; then
  ok "the supervisor started the helper, and neither its memory nor its descriptors hold the value"
else
  not_ok "the supervisor ($sup_pid) holds no secret"; diag "$got; the search's control: $control"
fi
check_status "hutch net refuses egress unrestricted for a VM with secrets" 2 "$HUTCH" net "$vm" --egress unrestricted

check "the VM stops" "$HUTCH" -q stop "$vm"
# now on the host: the instance directory (the guest's disk overlay, the seed, the frozen
# profile, the logs) and the runtime directory, every byte
got=$(grep -rla -e "$canary" -e "$file_canary" "$instance_dir" "$runtime_dir" "$XDG_CONFIG_HOME" 2>/dev/null)
if [ -z "$got" ] && [ -s "$instance_dir/disk.qcow2" ]; then ok "the real value is nowhere in the instance directory (the guest's whole disk overlay, written back at shutdown, included), the runtime directory or hutch's logs"; else not_ok "the real value is in hutch's files"; diag "$got"; fi
if ! grep -qE "AddressSanitizer|LeakSanitizer|runtime error" "$runtime_dir/egress-helper.log" 2>/dev/null; then ok "the egress helper's log holds no sanitizer report"; else not_ok "the egress helper's log holds no sanitizer report"; diag "$(grep -A15 -E "AddressSanitizer|LeakSanitizer|runtime error" "$runtime_dir/egress-helper.log" | head -40)"; fi

finish
