#!/usr/bin/env bash
# A Debian 13 ("trixie") guest: the image built from the package mirror with `suite: trixie`
# (the test guest's recipe, another suite), its first boot provisioned through the seed by
# trixie's cloud-init, a writable share (virtiofs), cp both ways, a port forwarded to the
# host's loopback, and a restart without provisioning again. One VM, two boots; the image
# build takes minutes. Not in the default run (suite `guests`): `tests/run --suite guests`, and
# in the Debian 13 lane `tests/run --host debian-13 --suite guests`.
. "$(dirname "$0")/lib.sh"
require_libvirt

vm=$(vm_name trixie)
track_vm "$vm"
share=$E2E_TMP/share
mkdir -p "$share"
echo "from the host" >"$share/host-file"
port=$(free_port)
cat >"$E2E_TMP/trixie.yaml" <<YAML
base: $HUTCH_SOURCE_DIR/tests/image/test-guest.yaml
image:
  build:
    suite: trixie
    packages: [python3, curl]
shares:
  - { host: $share, guest: ~/share, writable: true }
ports:
  - { host: $port, guest: 8000 }
provision:
  - name: counter
    run: |
      echo "provisioned" >> /var/lib/hutch-e2e-runs
YAML

start_log=$E2E_TMP/start.log
t0=$(date +%s)
"$HUTCH" start "$vm" -f "$E2E_TMP/trixie.yaml" 2>"$start_log"; rc=$?
diag "image build and first start: $(( $(date +%s) - t0 )) s"
if [ $rc -eq 0 ]; then ok "a trixie guest is built, boots and is provisioned to ready"; else not_ok "trixie guest start (exit $rc)"; diag "$(tail -30 "$start_log")"; finish; exit 1; fi
in_guest() { "$HUTCH" shell "$vm" -- "$@"; }

version=$(in_guest cat /etc/debian_version 2>&1)
if [[ $version == 13.* ]]; then ok "the guest is Debian 13 ($version)"; else not_ok "the guest is Debian 13 (got: $version)"; fi
diag "guest: $(in_guest sh -c 'uname -r; cloud-init --version 2>&1; systemctl --version | head -1' 2>&1 | paste -sd, -)"
# hutch disables cloud-init once provisioned (`cloud-init status` then says "disabled"): its
# last run's result is in result.json
result=$(in_guest sudo cat /run/cloud-init/result.json 2>&1)
if python3 -c 'import json,sys; r=json.loads(sys.argv[1])["v1"]; sys.exit(0 if r["errors"] == [] and "NoCloud" in r["datasource"] else 1)' "$result" 2>/dev/null; then
  ok "cloud-init took the seed (NoCloud) and finished without errors"
else
  not_ok "cloud-init's result"; diag "$result"
fi
if [ "$(in_guest sudo cat /var/lib/hutch-e2e-runs 2>/dev/null)" = provisioned ]; then ok "the provisioning step ran once"; else not_ok "the provisioning step ran once"; fi

if [ "$(in_guest cat share/host-file 2>&1)" = "from the host" ]; then ok "the share shows the host's file"; else not_ok "the share shows the host's file"; fi
in_guest sh -c 'echo "from the guest" > share/guest-file'
if [ "$(cat "$share/guest-file" 2>&1)" = "from the guest" ]; then ok "a file the guest writes in the share is on the host"; else not_ok "a guest write reaches the host"; fi

head -c 1048576 /dev/urandom >"$E2E_TMP/blob"
check "cp a file into the guest" "$HUTCH" cp "$E2E_TMP/blob" "$vm:blob"
check "cp it back" "$HUTCH" cp "$vm:blob" "$E2E_TMP/blob.back"
check "the same bytes" cmp "$E2E_TMP/blob" "$E2E_TMP/blob.back"

# the forwarded port: a server in the guest, reached on the host's loopback
in_guest sh -c 'mkdir -p www && echo trixie-port > www/index.html && cd www && (setsid python3 -m http.server 8000 >/dev/null 2>&1 &)'
got=""
for _ in $(seq 1 30); do
  got=$(curl -s --max-time 5 "http://127.0.0.1:$port/index.html") && [ "$got" = trixie-port ] && break
  sleep 1
done
if [ "$got" = trixie-port ]; then ok "a guest port is reached on 127.0.0.1:$port"; else not_ok "the forwarded port (got: $got)"; fi

check "stop" "$HUTCH" -q stop "$vm"
t0=$(date +%s)
check "start again" "$HUTCH" -q start "$vm"
diag "restart to ready: $(( $(date +%s) - t0 )) s"
if [ "$(in_guest sudo cat /var/lib/hutch-e2e-runs 2>/dev/null)" = provisioned ]; then ok "a restart does not provision again"; else not_ok "a restart does not provision again"; fi
if [ "$(in_guest cat share/guest-file 2>&1)" = "from the guest" ]; then ok "the share is mounted again after the restart"; else not_ok "the share after the restart"; fi

check "delete" "$HUTCH" -q delete --force "$vm"
finish
