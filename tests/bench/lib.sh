# tests/bench/lib.sh: what the benchmarks share. Source it.
#
# Each benchmark runs hutch and the baseline a user would pick instead, in the same
# invocation, on the same test image, interleaved run by run (so that a busy host slows both
# alike), and prints one line per measure:
#
#   RESULT <name> hutch=<median> baseline=<median> ratio=<hutch/baseline> <unit> load=<l1,...>
#
# load= lists the 1-minute load average read just before each timed run. The same figures,
# every sample included, go to $BENCH_OUT/<benchmark>.json.
#
# Like tests/e2e, instances live in a private XDG tree removed at the end, runtime directory
# included, with a libvirt session daemon of the benchmark's own that is stopped at the end
# (tests/libvirt-session.sh: a daemon with the benchmark's config tree serving the user's
# socket hid the user's VMs); the image cache ($XDG_CACHE_HOME) is the user's own. Every VM a
# benchmark defines is removed by a trap.

set -uo pipefail

# grep -q stops reading at its first match: under pipefail the writer then dies of SIGPIPE
# and the pipeline fails as if nothing had matched (a flaky "not found"). has reads all of
# its input: `producer | has [GREP_OPTIONS] PATTERN`.
has() { grep "$@" >/dev/null; }

: "${HUTCH:?HUTCH must name the hutch binary}"
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
HUTCH_SOURCE_DIR=${HUTCH_SOURCE_DIR:-$(cd "$BENCH_DIR/../.." && pwd)}
export LIBVIRT_DEFAULT_URI=qemu:///session
export HUTCH_ACCEL=${HUTCH_ACCEL:-tcg}
export XDG_CACHE_HOME=${XDG_CACHE_HOME:-$HOME/.cache}
BENCH_OUT=${BENCH_OUT:-${TMPDIR:-/tmp}/hutch-bench}
# Before each timed run: wait until the 1-minute load average is below BENCH_LOAD_MAX or
# BENCH_LOAD_WAIT seconds have passed.
BENCH_LOAD_MAX=${BENCH_LOAD_MAX:-1.5}
BENCH_LOAD_WAIT=${BENCH_LOAD_WAIT:-600}
PROFILE=$HUTCH_SOURCE_DIR/tests/image/test-guest.yaml

BENCH_TMP=$(mktemp -d "${TMPDIR:-/tmp}/hutch-bench.XXXXXX")
chmod 700 "$BENCH_TMP"
export XDG_DATA_HOME=$BENCH_TMP/data XDG_CONFIG_HOME=$BENCH_TMP/config
mkdir -p "$XDG_DATA_HOME" "$XDG_CONFIG_HOME" "$BENCH_OUT"
# shellcheck source=tests/libvirt-session.sh
. "$HUTCH_SOURCE_DIR/tests/libvirt-session.sh"
private_session_begin || { echo "# cannot make a private XDG_RUNTIME_DIR" >&2; exit 1; }

BENCH_NAME=${BENCH_NAME:-$(basename "$0" .sh)}
BENCH_VMS=()      # hutch instances to delete
BENCH_DOMAINS=()  # plain libvirt domains (baselines) to destroy and undefine
BENCH_PIDS=()     # helper processes to kill
BENCH_JSON=$BENCH_TMP/results.jsonl
: >"$BENCH_JSON"
BENCH_T0=$(date +%s)

say() { echo "# $*" >&2; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
load1() { cut -d' ' -f1 /proc/loadavg; }

bench_cleanup() {
  local vm pid
  for pid in "${BENCH_PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  for vm in "${BENCH_VMS[@]}"; do
    "$HUTCH" -q delete --force "$vm" >/dev/null 2>&1 ||
      { virsh destroy "$vm" >/dev/null 2>&1; virsh undefine "$vm" >/dev/null 2>&1; }
  done
  for vm in "${BENCH_DOMAINS[@]}"; do
    virsh destroy "$vm" >/dev/null 2>&1
    virsh undefine --nvram "$vm" >/dev/null 2>&1 || virsh undefine "$vm" >/dev/null 2>&1
  done
  private_session_end
  rm -rf "$BENCH_TMP"
}
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

# estimate SECONDS WHAT: printed at the start, so that a reader knows how long to wait.
estimate() {
  say "$BENCH_NAME: about $(( ($1 + 59) / 60 )) minutes ($2), plus up to ${BENCH_LOAD_WAIT}s per timed run waiting for load < $BENCH_LOAD_MAX"
}

# Waits for a quiet host before a timed run; sets LOAD to the load average it ran at.
wait_quiet() {
  local t0=$SECONDS
  while awk -v l="$(load1)" -v m="$BENCH_LOAD_MAX" 'BEGIN { exit !(l >= m) }' &&
        [ $((SECONDS - t0)) -lt "$BENCH_LOAD_WAIT" ]; do
    sleep 5
  done
  LOAD=$(load1)
  [ $((SECONDS - t0)) -lt 5 ] || say "waited $((SECONDS - t0))s for load; running at $LOAD"
}

# sample NAME SIDE VALUE LOAD: one measurement (SIDE is hutch or baseline).
sample() {
  printf '{"name":"%s","side":"%s","value":%s,"load":%s}\n' "$1" "$2" "$3" "$4" >>"$BENCH_JSON"
  say "sample $1 $2 $3 (load $4)"
}

# result NAME UNIT [NOTE]: the RESULT line from the samples recorded under NAME.
result() {
  python3 - "$BENCH_JSON" "$1" "$2" "${3:-}" <<'PY'
import json, statistics, sys
path, name, unit, note = sys.argv[1:5]
rows = [json.loads(l) for l in open(path) if l.strip()]
rows = [r for r in rows if r["name"] == name]
def med(side):
    v = [r["value"] for r in rows if r["side"] == side]
    return statistics.median(v) if v else None
h, b = med("hutch"), med("baseline")
fmt = lambda x: "NA" if x is None else ("%.3f" % x if abs(x) < 100 else "%.1f" % x)
ratio = "NA" if h is None or not b else "%.2f" % (h / b)
loads = ",".join("%.2f" % r["load"] for r in rows)
print(f"RESULT {name} hutch={fmt(h)} baseline={fmt(b)} ratio={ratio} {unit} load={loads}"
      + (f"  # {note}" if note else ""))
with open(path + ".results", "a") as f:
    f.write(json.dumps({"name": name, "unit": unit, "hutch": h, "baseline": b,
                        "ratio": None if ratio == "NA" else float(ratio), "note": note,
                        "samples": rows}) + "\n")
PY
}

# Writes $BENCH_OUT/<benchmark>.json: the results with every sample, the machine and the
# accelerator.
bench_write_json() {
  local out=$BENCH_OUT/$BENCH_NAME.json
  python3 - "$BENCH_JSON.results" "$out" "$BENCH_NAME" "$HUTCH_ACCEL" "$BENCH_T0" "$@" <<'PY'
import json, os, platform, sys, time
src, out, name, accel, t0 = sys.argv[1:6]
params = dict(a.split("=", 1) for a in sys.argv[6:])
results = [json.loads(l) for l in open(src)] if os.path.exists(src) else []
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
doc = {"benchmark": name, "accel": accel, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
       "wall_seconds": int(time.time() - int(t0)),
       "machine": {"cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(),
                   "memory_mib": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20},
       "params": params, "results": results}
json.dump(doc, open(out, "w"), indent=2)
PY
  say "wrote $out ($(( $(date +%s) - BENCH_T0 ))s)"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# rss_kib PID...: the summed resident set size of the processes.
rss_kib() {
  local pid sum=0 v
  for pid in "$@"; do
    v=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status" 2>/dev/null)
    sum=$((sum + ${v:-0}))
  done
  echo $sum
}
qemu_pid() { pgrep -u "$(id -u)" -f "qemu-system-x86_64 .*guest=$1," | head -1; }

# ---- hutch ---------------------------------------------------------------------------------

# hutch_new NAME [start options...]: hutch start from nothing, to ready.
hutch_new() {
  local vm=$1; shift
  BENCH_VMS+=("$vm")
  "$HUTCH" -q start "$vm" -f "$PROFILE" "$@" >"$BENCH_TMP/$vm.start.log" 2>&1 ||
    { say "hutch start $vm failed:"; sed 's/^/#   /' "$BENCH_TMP/$vm.start.log" >&2; return 1; }
}

# ---- the baseline: virt-install with the same seed, image, kernel and CPU/memory --------------
#
# What a user would type without hutch: a qcow2 overlay on the same image, the same cloud-init
# documents hutch writes (taken from a hutch instance made once, untimed: a user writes
# user-data once too), packed as a NoCloud ISO, `virt-install --import` with the same direct
# kernel boot, user-mode (slirp) networking with a `hostfwd_add` for SSH, then `ssh` polled
# until `cloud-init status` says done.
#
# The seed ISO is attached on virtio-scsi rather than with virt-install --cloud-init, which
# puts it on SATA: Debian's cloud kernel has no AHCI driver and would never read it.

baseline_prepare() {
  local vm=bseed-$$ dir
  "$HUTCH" -q create "$vm" -f "$PROFILE" >/dev/null || return 1
  dir=$XDG_DATA_HOME/hutch/instances/$vm
  BL_SEED=$BENCH_TMP/seed
  mkdir -p "$BL_SEED"
  bsdtar -xf "$dir/seed.iso" -C "$BL_SEED" && chmod u+w "$BL_SEED"/*
  BL_HOSTKEY=$(cat "$dir/ssh_host_ed25519_key.pub")
  BL_KEY=$XDG_DATA_HOME/hutch/ssh/id_ed25519
  BL_USER=$(id -un)
  BL_MAC=$(awk -F"'" '/macaddress/ { print $2 }' "$BL_SEED/network-config")
  BL_IMAGE=$(sed -n 's|.*<source file=.\([^'"'"']*\).*|\1|p' <(virsh dumpxml "$vm") | head -1)
  BL_IMAGE=$(qemu-img info --output=json "$BL_IMAGE" | python3 -c 'import json,sys; print(json.load(sys.stdin)["full-backing-filename"])')
  BL_IMAGEDIR=$(dirname "$BL_IMAGE")
  BL_CMDLINE=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["cmdline"])' "$BL_IMAGEDIR/image.json")
  "$HUTCH" -q delete --force "$vm"
  [ -f "$BL_KEY" ] && [ -n "$BL_MAC" ] && [ -f "$BL_IMAGE" ] ||
    { say "baseline_prepare: could not read hutch's seed (key '$BL_KEY', mac '$BL_MAC', image '$BL_IMAGE')"; return 1; }
}

# baseline_ssh NAME CMD...: OpenSSH into a baseline VM with the pinned host key.
baseline_ssh() {
  local vm=$1; shift
  ssh -F /dev/null -p "$(cat "$BENCH_TMP/$vm.port")" -i "$BL_KEY" -o IdentitiesOnly=yes \
      -o UserKnownHostsFile="$BENCH_TMP/$vm.known_hosts" -o StrictHostKeyChecking=yes \
      -o BatchMode=yes -o ConnectTimeout=10 -o LogLevel=ERROR "$BL_USER@127.0.0.1" "$@"
}

# baseline_forward NAME HOSTPORT GUESTPORT: a slirp port forward on the running domain.
baseline_forward() {
  virsh qemu-monitor-command --hmp "$1" "hostfwd_add hostnet0 tcp:127.0.0.1:$2-:$3" >/dev/null
}

# baseline_new NAME: everything from nothing to cloud-init done (the timed part).
baseline_new() {
  local vm=$1 port d=$BENCH_TMP/$1
  BENCH_DOMAINS+=("$vm")
  mkdir -p "$d/seed"
  cp "$BL_SEED"/* "$d/seed/"
  sed -i "s/^instance-id: .*/instance-id: '$(cat /proc/sys/kernel/random/uuid)'/; s/^local-hostname: .*/local-hostname: $vm/" "$d/seed/meta-data"
  sed -i "s/^hostname: .*/hostname: $vm/" "$d/seed/user-data"
  xorriso -as mkisofs -quiet -V cidata -J -R -o "$d/seed.iso" "$d/seed" 2>/dev/null || return 1
  qemu-img create -q -f qcow2 -F qcow2 -b "$BL_IMAGE" "$d/disk.qcow2" 4G || return 1
  virt-install --connect qemu:///session --name "$vm" --import --noautoconsole \
    --virt-type qemu --machine q35 --vcpus 1 --memory 1024 --osinfo linux2022 \
    --boot "kernel=$BL_IMAGEDIR/vmlinuz,initrd=$BL_IMAGEDIR/initrd.img,kernel_args=$BL_CMDLINE" \
    --disk "path=$d/disk.qcow2,format=qcow2,bus=virtio" \
    --controller type=scsi,model=virtio-scsi \
    --disk "path=$d/seed.iso,device=cdrom,bus=scsi,readonly=on" \
    --network "user,model=virtio,mac=$BL_MAC" \
    --graphics none --serial "file,path=$d/console.log" \
    >"$d/virt-install.log" 2>&1 ||
    { say "virt-install failed:"; sed 's/^/#   /' "$d/virt-install.log" >&2; return 1; }
  # cloud-init 22.4 says "status: error" as soon as one module failed, while still running
  # (the test image's locale module fails): finished is result.json, written after the
  # final stage, as `cloud-init status --wait` (what hutch runs) waits for.
  baseline_after_start "$vm" \
    'test -e /run/cloud-init/result.json && cloud-init status | grep -E "status: (done|error)"'
}

# baseline_restart NAME: virsh start of the stopped domain, until SSH answers.
baseline_restart() {
  virsh start "$1" >/dev/null || return 1
  baseline_after_start "$1" true
}

# baseline_after_start NAME CMD: forward SSH, then poll CMD over ssh every second until it
# succeeds.
baseline_after_start() {
  local vm=$1 cmd=$2 port t0=$SECONDS
  port=$(free_port)
  echo "$port" >"$BENCH_TMP/$vm.port"
  echo "[127.0.0.1]:$port $BL_HOSTKEY" >"$BENCH_TMP/$vm.known_hosts"
  baseline_forward "$vm" "$port" 22 || return 1
  while [ $((SECONDS - t0)) -lt 900 ]; do
    if baseline_ssh "$vm" "$cmd" >/dev/null 2>&1; then
      return 0
    fi
    sleep 1
  done
  say "$vm: not ready after 900s"; return 1
}

baseline_stop() {
  virsh shutdown "$1" >/dev/null 2>&1
  local i
  for i in $(seq 1 120); do
    [ "$(virsh domstate "$1" 2>/dev/null)" = "shut off" ] && return 0
    sleep 1
  done
  virsh destroy "$1" >/dev/null 2>&1
}

baseline_delete() {
  virsh destroy "$1" >/dev/null 2>&1
  virsh undefine "$1" >/dev/null 2>&1
  rm -rf "${BENCH_TMP:?}/$1"
}
