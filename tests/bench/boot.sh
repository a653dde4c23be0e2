#!/usr/bin/env bash
# Benchmarks 1 and 6: boot to ready (a new VM; the same VM restarted) and the host memory of
# one running VM.
#
#   hutch:    hutch start NAME -f tests/image/test-guest.yaml     (new; returns at ready)
#             hutch stop NAME; hutch start NAME                     (restart)
#   baseline: overlay + seed ISO + virt-install --import ... --noautoconsole, hostfwd_add for
#             SSH, ssh polled until `cloud-init status` says done  (new)
#             virsh shutdown; virsh start, hostfwd_add, ssh polled until it answers (restart)
#
# Host memory (RSS, sampled 10 s after ready on each new VM): qemu + passt + any hutch
# process for hutch (hutch runs no daemon; the VM has no share, so no virtiofsd); qemu alone
# for the baseline (slirp is inside it).
#
# The cost of TCG's CPU model (cpu-max): hutch's new boot (QEMU's -cpu max, what TCG guests
# get) against a new boot of the same hutch with HUTCH_TCG_CPU=qemu64 (libvirt's default
# model, what they had before). Only meaningful under TCG (HUTCH_ACCEL=tcg, lib.sh's default).
#
# Usage: boot.sh [RUNS]   (default 3; each run is five boots, 2.5-4 minutes each under TCG)
. "$(dirname "$0")/lib.sh"

runs=${1:-3}
estimate $((runs * 5 * 150 + 60)) "$runs runs x (3 new + 2 restarted boots)"
baseline_prepare || exit 1

hutch_rss() {
  local vm=$1 pids
  # No share here, so no virtiofsd (it would run as a subordinate uid: ~4 MiB RSS per share).
  pids="$(qemu_pid "$vm") $(pgrep -u "$(id -u)" -f "[p]asst.*/$vm/") $(pgrep -u "$(id -u)" -x hutch)"
  rss_kib $pids
}

run_hutch() {
  local vm=bh-$$-$1 t0 t1
  wait_quiet; t0=$(now)
  hutch_new "$vm" || return 1
  t1=$(now); sample boot-new hutch "$(elapsed "$t0" "$t1")" "$LOAD"
  sample cpu-max hutch "$(elapsed "$t0" "$t1")" "$LOAD"
  sleep 10
  sample host-rss hutch "$(awk -v k="$(hutch_rss "$vm")" 'BEGIN { printf "%.1f", k / 1024 }')" "$(load1)"
  "$HUTCH" -q stop "$vm" || return 1
  wait_quiet; t0=$(now)
  "$HUTCH" -q start "$vm" || return 1
  t1=$(now); sample boot-restart hutch "$(elapsed "$t0" "$t1")" "$LOAD"
  "$HUTCH" -q delete --force "$vm"
}

# The same new boot with the CPU model TCG guests had before -cpu max.
run_qemu64() {
  local vm=bq-$$-$1 t0 t1
  wait_quiet; t0=$(now)
  HUTCH_TCG_CPU=qemu64 hutch_new "$vm" || return 1
  t1=$(now); sample cpu-max baseline "$(elapsed "$t0" "$t1")" "$LOAD"
  "$HUTCH" -q delete --force "$vm"
}

run_baseline() {
  local vm=bb-$$-$1 t0 t1
  wait_quiet; t0=$(now)
  baseline_new "$vm" || return 1
  t1=$(now); sample boot-new baseline "$(elapsed "$t0" "$t1")" "$LOAD"
  sleep 10
  sample host-rss baseline "$(awk -v k="$(rss_kib "$(qemu_pid "$vm")")" 'BEGIN { printf "%.1f", k / 1024 }')" "$(load1)"
  baseline_stop "$vm"
  wait_quiet; t0=$(now)
  baseline_restart "$vm" || return 1
  t1=$(now); sample boot-restart baseline "$(elapsed "$t0" "$t1")" "$LOAD"
  baseline_delete "$vm"
}

# Alternate which side goes first, so that neither always boots on the quieter host.
for i in $(seq 1 "$runs"); do
  if [ $((i % 2)) -eq 1 ]; then
    run_baseline "$i" || exit 1; run_hutch "$i" || exit 1; run_qemu64 "$i" || exit 1
  else
    run_qemu64 "$i" || exit 1; run_hutch "$i" || exit 1; run_baseline "$i" || exit 1
  fi
done

result boot-new s
result boot-restart s
result host-rss MiB "qemu+passt+hutch vs qemu (slirp in-process), 10 s after ready"
result cpu-max s "new boot to ready: TCG -cpu max (hutch) vs qemu64 (baseline), both hutch"
bench_write_json runs="$runs"
