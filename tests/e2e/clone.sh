#!/usr/bin/env bash
# hutch clone: a new VM from a stopped, provisioned one. The clone boots from a copy of the
# source's disk without provisioning again, gets its own host key (pinned, and the guest's
# after its first start), hostname and machine-id, and the share a --share adds; the source's
# disk is only read. Refusals change nothing. Two boots of the test guest.
. "$(dirname "$0")/lib.sh"
require_libvirt

src=$(vm_name clsrc)
dst=$(vm_name cldst)
track_vm "$src"
track_vm "$dst"
cat >"$E2E_TMP/src.yaml" <<YAML
base: $HUTCH_SOURCE_DIR/tests/image/test-guest.yaml
provision:
  - name: counter
    run: |
      echo provisioned >> /var/lib/hutch-e2e-runs
YAML
mkdir -p "$E2E_TMP/extra"
echo "for the clone" >"$E2E_TMP/extra/marker"
instances=$XDG_DATA_HOME/hutch/instances

check "start the source" "$HUTCH" -q start "$src" -f "$E2E_TMP/src.yaml"
check "write a file in the source" "$HUTCH" shell "$src" -- sh -c 'echo kept > survivor'
src_machine_id=$("$HUTCH" shell "$src" -- cat /etc/machine-id)
out=$("$HUTCH" clone "$src" "$dst" 2>&1); rc=$?
if [ $rc -eq 1 ] && grep -q "$src is running: hutch stop $src first" <<<"$out" && [ ! -e "$instances/$dst" ]; then
  ok "a running source is refused, nothing made"
else
  not_ok "a running source is refused (exit $rc)"; diag "$out"
fi
check "stop the source" "$HUTCH" -q stop "$src"
src_disk_sum=$(sha256sum <"$instances/$src/disk.qcow2")

# the source's network policy as hutch net left it (not its profile's) goes with the clone
out=$("$HUTCH" -q net "$src" --allow example.org:8443 2>&1); rc=$?
if [ $rc -eq 0 ] && [ -z "$out" ]; then ok "hutch -q net changes the stopped source's policy, silently"; else not_ok "hutch -q net --allow (exit $rc)"; diag "$out"; fi
check_status "a bad name: usage error" 2 "$HUTCH" clone "$src" "Bad_Name"
check_status "a missing source: exit 1" 1 "$HUTCH" clone "nope-$$" "$dst"
out=$("$HUTCH" clone "$src" "$dst" --share "$E2E_TMP/extra:~/extra" 2>&1); rc=$?
if [ $rc -eq 0 ]; then ok "clone (with a share added)"; else not_ok "clone (exit $rc)"; diag "$out"; fi
check_status "a clone onto an existing name: exit 1" 1 "$HUTCH" clone "$src" "$dst"
check "the clone has its source's network policy" python3 -c 'import json,sys; d=json.loads(sys.argv[1]); assert "example.org:8443" in d["allow"], d' "$("$HUTCH" net "$dst" --json 2>&1)"
if [ "$(sha256sum <"$instances/$src/disk.qcow2")" = "$src_disk_sum" ]; then ok "the source's disk is unchanged"; else not_ok "the source's disk is unchanged"; fi
if ! cmp -s "$instances/$src/ssh_host_ed25519_key.pub" "$instances/$dst/ssh_host_ed25519_key.pub"; then ok "the clone has a pinned host key of its own"; else not_ok "the clone has a pinned host key of its own"; fi
src_uuid=$(virsh domuuid "$src"); dst_uuid=$(virsh domuuid "$dst")
mac_of() { virsh dumpxml "$1" | grep -o "52:54:00:[0-9a-f:]*" | head -1; }
src_mac=$(mac_of "$src"); dst_mac=$(mac_of "$dst")
if [ -n "$dst_uuid" ] && [ "$src_uuid" != "$dst_uuid" ] && [ -n "$dst_mac" ] && [ "$src_mac" != "$dst_mac" ]; then ok "its own UUID and MAC"; else not_ok "its own UUID and MAC ($src_uuid $dst_uuid $src_mac $dst_mac)"; fi

out=$("$HUTCH" start "$dst" 2>&1); rc=$?
if [ $rc -eq 0 ] && grep -q "identity" <<<"$out"; then ok "the clone starts and takes its own identity"; else not_ok "the clone starts and takes its own identity (exit $rc)"; diag "$out"; fi
out=$("$HUTCH" shell "$dst" -- sh -c 'hostname; cat survivor; sudo cat /var/lib/hutch-e2e-runs; cat ~/extra/marker; cat /etc/machine-id' 2>&1)
lines=()
mapfile -t lines <<<"$out"
if [ "${lines[0]}" = "$dst" ]; then ok "its hostname is its name"; else not_ok "its hostname is its name"; diag "$out"; fi
if [ "${lines[1]}" = kept ]; then ok "it has the source's files"; else not_ok "it has the source's files"; fi
if [ "${lines[2]}" = provisioned ] && [ "${#lines[@]}" -ge 4 ] && [ "${lines[3]}" = "for the clone" ]; then ok "provisioning did not run again; the added share is mounted"; else not_ok "provisioning once, the added share mounted"; diag "$out"; fi
if [ -n "${lines[4]:-}" ] && [ "${lines[4]}" != "$src_machine_id" ]; then ok "a machine-id of its own"; else not_ok "a machine-id of its own"; diag "$out"; fi
# the guest's host key is now the clone's pin: OpenSSH, with hutch's known_hosts, agrees
"$HUTCH" ssh-config "$dst" >"$E2E_TMP/ssh_config"
out=$(ssh -F "$E2E_TMP/ssh_config" -o BatchMode=yes "$dst" 'echo via-openssh' 2>&1)
if [ "$out" = via-openssh ]; then ok "OpenSSH accepts the guest with the clone's pinned key"; else not_ok "OpenSSH accepts the guest with the clone's pinned key"; diag "$out"; fi
if [ ! -e "$instances/$dst/clone-pending" ]; then ok "nothing pending after the first start"; else not_ok "nothing pending after the first start"; fi
if [ "$("$HUTCH" info --json "$dst" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("cloned_from"))')" = "$src" ]; then ok "info names the source (cloned_from)"; else not_ok "info names the source"; fi

check "delete the clone" "$HUTCH" -q delete --force "$dst"
check "delete the source" "$HUTCH" -q delete "$src"
finish
