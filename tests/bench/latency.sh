#!/usr/bin/env bash
# Benchmark 2: the latency of one command in a running VM.
#
#   hutch shell NAME -- true       against  ssh -F <(hutch ssh-config NAME) NAME true
#   (through the VM's supervisor,           (a fresh OpenSSH connection each time)
#    a channel on its session)
#                                  and      the same over an OpenSSH ControlMaster connection
#
#   hutch cp FILE NAME:FILE        against  scp -F <(hutch ssh-config NAME) FILE NAME:FILE
#   (through the supervisor: its            (SFTP, a fresh connection each time)
#    copy session)                 and      the same over the ControlMaster
#   (cp-up; cp-down the other way)
#
# One VM (booted untimed); each run times COUNT calls of each and records the mean per call.
#
# Usage: latency.sh [RUNS] [COUNT]   (defaults 3, 20)
. "$(dirname "$0")/lib.sh"

runs=${1:-3}
count=${2:-20}
estimate $((200 + runs * count * 9)) "one boot, then $runs runs x $count x 9 commands and copies"

vm=bl-$$
hutch_new "$vm" || exit 1
"$HUTCH" ssh-config "$vm" >"$BENCH_TMP/ssh_config"
# hutch shell goes through the supervisor that start left: make sure it is there
for _ in $(seq 1 60); do
  sup=$("$HUTCH" info --json "$vm" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("supervisor_pid", 0))')
  [ "$sup" -gt 0 ] && break
  sleep 0.5
done
[ "$sup" -gt 0 ] || { say "no supervisor for $vm"; exit 1; }
cm=$BENCH_TMP/cm.sock
ssh -F "$BENCH_TMP/ssh_config" -o ControlMaster=yes -o ControlPath="$cm" -o ControlPersist=600 \
    -fN "$vm" || { say "ControlMaster failed"; exit 1; }
BENCH_PIDS+=("$(ssh -F "$BENCH_TMP/ssh_config" -o ControlPath="$cm" -O check "$vm" 2>&1 | sed -n 's/.*pid=\([0-9]*\).*/\1/p')")

small=$BENCH_TMP/small
head -c 4096 /dev/urandom >"$small"

# per_call SIDE NAME COMMAND...: the mean wall time of COUNT runs of COMMAND, in ms.
per_call() {
  local side=$1 name=$2 t0 t1 i; shift 2
  "$@" || { say "$* failed"; exit 1; }
  t0=$(now)
  for i in $(seq 1 "$count"); do "$@" || { say "$* failed"; exit 1; }; done
  t1=$(now)
  sample "$name" "$side" "$(awk -v a="$t0" -v b="$t1" -v n="$count" 'BEGIN { printf "%.1f", (b - a) * 1000 / n }')" "$LOAD"
}

for r in $(seq 1 "$runs"); do
  wait_quiet
  per_call hutch latency-ssh "$HUTCH" shell "$vm" -- true
  # The same hutch figures serve both comparisons.
  tail -1 "$BENCH_JSON" | sed 's/"latency-ssh"/"latency-controlmaster"/' >>"$BENCH_JSON"
  per_call baseline latency-ssh ssh -F "$BENCH_TMP/ssh_config" "$vm" true
  per_call baseline latency-controlmaster ssh -F "$BENCH_TMP/ssh_config" -o ControlPath="$cm" "$vm" true
  # a small file each way (what an agent's workflow copies most)
  per_call hutch cp-up "$HUTCH" cp "$small" "$vm:small"
  tail -1 "$BENCH_JSON" | sed 's/"cp-up"/"cp-up-controlmaster"/' >>"$BENCH_JSON"
  per_call baseline cp-up scp -q -F "$BENCH_TMP/ssh_config" "$small" "$vm:small"
  per_call baseline cp-up-controlmaster scp -q -F "$BENCH_TMP/ssh_config" -o ControlPath="$cm" "$small" "$vm:small"
  per_call hutch cp-down "$HUTCH" cp "$vm:small" "$BENCH_TMP/small.back"
  tail -1 "$BENCH_JSON" | sed 's/"cp-down"/"cp-down-controlmaster"/' >>"$BENCH_JSON"
  per_call baseline cp-down scp -q -F "$BENCH_TMP/ssh_config" "$vm:small" "$BENCH_TMP/small.back"
  per_call baseline cp-down-controlmaster scp -q -F "$BENCH_TMP/ssh_config" -o ControlPath="$cm" "$vm:small" "$BENCH_TMP/small.back"
done

result latency-ssh ms "hutch shell -- true vs a fresh OpenSSH connection"
result latency-controlmaster ms "hutch shell -- true vs OpenSSH over a ControlMaster"
result cp-up ms "hutch cp of a 4 KiB file to the guest vs scp (a fresh connection)"
result cp-up-controlmaster ms "hutch cp of a 4 KiB file to the guest vs scp over a ControlMaster"
result cp-down ms "hutch cp of a 4 KiB file from the guest vs scp (a fresh connection)"
result cp-down-controlmaster ms "hutch cp of a 4 KiB file from the guest vs scp over a ControlMaster"
ssh -F "$BENCH_TMP/ssh_config" -o ControlPath="$cm" -O exit "$vm" 2>/dev/null
bench_write_json runs="$runs" count="$count"
