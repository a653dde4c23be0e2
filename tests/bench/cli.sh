#!/usr/bin/env bash
# Benchmark 5: the CLI with 20 defined, stopped VMs.
#
#   hutch list            against  virsh list --all
#   hutch info NAME       against  virsh dominfo NAME
#
# The VMs use a blank qcow2 image (nothing boots), as tests/e2e/lifecycle.sh does, so this
# benchmark takes about a minute. Each run times INNER invocations of each command and
# records their mean; the medians are over runs. Both sides talk to the same libvirt session
# daemon, which also lists any other domain the user has.
#
# Usage: cli.sh [RUNS] [VMS] [INNER]   (defaults 3, 20, 10)
. "$(dirname "$0")/lib.sh"

runs=${1:-3}
count=${2:-20}
inner=${3:-10}
estimate $((count + runs * inner * 4 / 2 + 10)) "$count creates, then $runs runs x $inner x 4 commands"

qemu-img create -q -f qcow2 "$BENCH_TMP/blank.qcow2" 1G
cat >"$BENCH_TMP/blank.yaml" <<YAML
cpus: 1
memory: 256MiB
disk: 2GiB
accel: tcg
image: { file: $BENCH_TMP/blank.qcow2 }
YAML
for i in $(seq 1 "$count"); do
  vm=bc-$$-$i
  BENCH_VMS+=("$vm")
  "$HUTCH" -q create "$vm" -f "$BENCH_TMP/blank.yaml" || { say "create $vm failed"; exit 1; }
done
target=bc-$$-1
say "defined $count VMs; libvirt has $(virsh list --all --name | grep -c .) domains in all"

# per_call SIDE NAME COMMAND...: the mean wall time of INNER runs of COMMAND, in ms.
per_call() {
  local side=$1 name=$2 t0 t1 i; shift 2
  "$@" >/dev/null 2>&1 || { say "$* failed"; "$@"; exit 1; }
  t0=$(now)
  for i in $(seq 1 "$inner"); do "$@" >/dev/null; done
  t1=$(now)
  sample "$name" "$side" "$(awk -v a="$t0" -v b="$t1" -v n="$inner" 'BEGIN { printf "%.2f", (b - a) * 1000 / n }')" "$LOAD"
}

for r in $(seq 1 "$runs"); do
  wait_quiet
  per_call hutch cli-list "$HUTCH" list
  per_call baseline cli-list virsh list --all
  per_call hutch cli-info "$HUTCH" info "$target"
  per_call baseline cli-info virsh dominfo "$target"
done

result cli-list ms "hutch list vs virsh list --all, $count stopped VMs"
result cli-info ms "hutch info vs virsh dominfo"
bench_write_json runs="$runs" vms="$count" inner="$inner"
