#!/usr/bin/env bash
# Benchmark: provisioned VMs without provisioning. Every case is measured against the same
# baseline, a fresh `default`-shaped VM started to ready (the default profile's provisioning
# steps: CA certificates, the everyday tools from the Debian mirror, the shell setup, the git
# identity; on the test image, without ports), in the same invocation:
#
#   clone-template  hutch clone TEMPLATE NAME + hutch start NAME, to ready (TEMPLATE made once,
#                   untimed, from the first fresh VM)
#   clone-vm        hutch clone VM NAME + hutch start NAME, to ready (VM: that fresh VM, stopped)
#   run-template    hutch run --template TEMPLATE -- true, end to end (create, boot, command,
#                   delete)
#
# Goals under TCG (issue 16): clone to ready <= 0.25x the fresh start; run-template <= 45 s.
#
# Usage: clone.sh [RUNS]   (default 2; a fresh start is 3-5 minutes under TCG, the rest about
#                           a minute each)
. "$(dirname "$0")/lib.sh"

runs=${1:-2}
estimate $((runs * 420 + 150)) "$runs runs x (a fresh provisioned start + 2 clones + 1 run), 1 template"

# default shares ~/VM-Shared (created when missing): keep it in the benchmark's tree
export HOME=$BENCH_TMP/home
mkdir -p "$HOME"
shaped=$BENCH_TMP/default-shaped.yaml
cat >"$shaped" <<YAML
# the default profile's provisioning and environment, on the test image
base: $HUTCH_SOURCE_DIR/profiles/default.yaml
image:
  build:
    suite: bookworm
    packages: [python3, curl]
accel: tcg
cpus: 1
memory: 1GiB
disk: 4GiB
YAML
template=btpl-$$
source_vm=bsrc-$$
template_made=

bench_template_cleanup() {
  [ -z "$template_made" ] || "$HUTCH" -q template rm "$template" >/dev/null 2>&1
}
trap 'bench_template_cleanup; bench_cleanup' EXIT

fresh() {
  local vm=$1 t0 t1
  BENCH_VMS+=("$vm")
  wait_quiet; t0=$(now)
  "$HUTCH" -q start "$vm" -f "$shaped" --no-ports >"$BENCH_TMP/$vm.log" 2>&1 ||
    { say "fresh start of $vm failed:"; sed 's/^/#   /' "$BENCH_TMP/$vm.log" >&2; return 1; }
  t1=$(now)
  local secs; secs=$(elapsed "$t0" "$t1")
  sample clone-template baseline "$secs" "$LOAD"
  sample clone-vm baseline "$secs" "$LOAD"
  sample run-template baseline "$secs" "$LOAD"
}

# timed_clone CASE SRC NAME: hutch clone SRC NAME, then start NAME to ready, timed together.
timed_clone() {
  local case=$1 src=$2 vm=$3 t0 t1
  BENCH_VMS+=("$vm")
  wait_quiet; t0=$(now)
  { "$HUTCH" -q clone "$src" "$vm" && "$HUTCH" -q start "$vm"; } >"$BENCH_TMP/$vm.log" 2>&1 ||
    { say "$case: $vm failed:"; sed 's/^/#   /' "$BENCH_TMP/$vm.log" >&2; return 1; }
  t1=$(now); sample "$case" hutch "$(elapsed "$t0" "$t1")" "$LOAD"
  "$HUTCH" -q delete --force "$vm"
}

timed_run() {
  local vm=brun-$$-$1 t0 t1
  BENCH_VMS+=("$vm")
  wait_quiet; t0=$(now)
  "$HUTCH" -q run --name "$vm" --template "$template" -- true >"$BENCH_TMP/$vm.log" 2>&1 ||
    { say "run-template failed:"; sed 's/^/#   /' "$BENCH_TMP/$vm.log" >&2; return 1; }
  t1=$(now); sample run-template hutch "$(elapsed "$t0" "$t1")" "$LOAD"
}

# the first fresh VM is the source of the template and of the VM clones
fresh "$source_vm" || exit 1
"$HUTCH" -q stop "$source_vm" || exit 1
t0=$(now)
"$HUTCH" -q template create "$template" --from "$source_vm" >"$BENCH_TMP/template.log" 2>&1 ||
  { say "template create failed:"; sed 's/^/#   /' "$BENCH_TMP/template.log" >&2; exit 1; }
template_made=1
say "template create (untimed in the results): $(elapsed "$t0" "$(now)") s"

for i in $(seq 1 "$runs"); do
  if [ "$i" -gt 1 ]; then
    fresh "bfresh-$$-$i" || exit 1
    "$HUTCH" -q delete --force "bfresh-$$-$i"
  fi
  timed_clone clone-template "$template" "bct-$$-$i" || exit 1
  timed_clone clone-vm "$source_vm" "bcv-$$-$i" || exit 1
  timed_run "$i" || exit 1
done

result clone-template s "clone of a template + start, to ready vs a fresh default-shaped start (goal <= 0.25)"
result clone-vm s "clone of a stopped provisioned VM + start, to ready vs the same fresh start"
result run-template s "hutch run --template T -- true end to end vs the same fresh start (goal <= 45 s)"
bench_write_json runs="$runs"
