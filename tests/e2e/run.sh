#!/usr/bin/env bash
# hutch run: one command in a VM made for it and deleted afterwards. A run with a share
# (the command runs in the share's guest path, its output and exit status come back, the VM
# is gone after it), and a run ended by SIGTERM while its command runs (exit 128+15, the VM
# gone). Each run boots the test guest (about two minutes under TCG): the two boot side by
# side.
. "$(dirname "$0")/lib.sh"
require_libvirt

profile=$HUTCH_SOURCE_DIR/tests/image/test-guest.yaml
project=$E2E_TMP/project
mkdir -p "$project"
echo "from the host" >"$project/marker"

gone() {
  ! "$HUTCH" list --json 2>/dev/null | python3 -c 'import json,sys; sys.exit(0 if any(v["name"] == sys.argv[1] for v in json.load(sys.stdin)) else 1)' "$1" &&
    [ ! -e "$XDG_DATA_HOME/hutch/instances/$1" ] && ! virsh dominfo "$1" >/dev/null 2>&1
}

# ---- SIGTERM while the command runs (started first: the two runs boot side by side) ---------
term_name=$(vm_name runterm)
track_vm "$term_name"
"$HUTCH" -q run --name "$term_name" -f "$profile" -- sleep 3600 2>"$E2E_TMP/term.err" &
run_pid=$!

# ---- a command, its output, its status -----------------------------------------------------
name=$(vm_name run)
track_vm "$name"
out=$("$HUTCH" -q run --name "$name" -f "$profile" --share "$project" -- \
  sh -c 'pwd; cat marker; echo made-in-guest > from-guest; exit 3' 2>"$E2E_TMP/run.err"); rc=$?
if [ $rc -eq 3 ]; then ok "run exits with the command's status (3)"; else not_ok "run exits with the command's status (exit $rc)"; diag "$(cat "$E2E_TMP/run.err")"; fi
if [ "$out" = "$(printf '%s\nfrom the host' "$project")" ]; then ok "the command ran in the share, at the host's path"; else not_ok "the command ran in the share"; diag "$out"; fi
if [ "$(cat "$project/from-guest" 2>&1)" = made-in-guest ]; then ok "what it wrote in the share is on the host"; else not_ok "what it wrote in the share is on the host"; fi
if gone "$name"; then ok "the VM is gone afterwards (list, instance directory, libvirt)"; else not_ok "the VM is gone afterwards"; diag "$("$HUTCH" list 2>&1)"; fi

# ---- the run ended by SIGTERM ---------------------------------------------------------------
name=$term_name
running=""
for _ in $(seq 1 600); do
  running=$("$HUTCH" shell "$name" -- pgrep -x sleep 2>/dev/null) && [ -n "$running" ] && break
  kill -0 $run_pid 2>/dev/null || break
  sleep 1
done
if [ -n "$running" ]; then ok "the command runs in the guest"; else not_ok "the command runs in the guest"; diag "$(cat "$E2E_TMP/term.err")"; fi
kill -TERM $run_pid
wait $run_pid; rc=$?
if [ $rc -eq 143 ]; then ok "SIGTERM: run exits 143"; else not_ok "SIGTERM: run exits 143 (exit $rc)"; diag "$(cat "$E2E_TMP/term.err")"; fi
if gone "$name"; then ok "and the VM is gone"; else not_ok "after SIGTERM the VM is gone"; diag "$("$HUTCH" list 2>&1)"; fi
sleep 1
if none_running -u "$(id -u)" -f "[p]asst.*/$name/" >/dev/null && none_running -u "$(id -u)" -f "supervise( [^ ]+)* $name\$" >/dev/null; then
  ok "no passt or supervisor of it is left"
else
  not_ok "no passt or supervisor of it is left"
fi

# ---- bad input makes nothing ---------------------------------------------------------------
check_status "no command: usage error" 2 "$HUTCH" run -f "$profile"
check_status "a bad share: usage error" 2 "$HUTCH" run -f "$profile" --share "/nonexistent-$$:/x:bogus" -- true
if [ -z "$("$HUTCH" list --json | python3 -c 'import json,sys; print(" ".join(v["name"] for v in json.load(sys.stdin)))')" ]; then ok "and nothing was made"; else not_ok "bad input made nothing"; fi
finish
