#!/usr/bin/env bash
# Benchmark 4: an HTTP download from the guest through a forwarded port.
#
#   hutch:    hutch start --port HOST:8000 (passt, outside QEMU)
#   baseline: the virt-install VM of boot.sh, <interface type='user'> (QEMU's slirp) with
#             `hostfwd_add` for the same guest port
#
# The guest serves a SIZE MiB file with python3 -m http.server; curl downloads it to
# /dev/null on the host. One VM at a time: the hutch VM, then the baseline VM (their boots
# are not timed).
#
# Usage: port.sh [RUNS] [SIZE_MIB]   (defaults 3, 500)
. "$(dirname "$0")/lib.sh"

runs=${1:-3}
size=${2:-500}
estimate $((2 * 200 + 2 * runs * size / 5)) "two boots, then $runs downloads of $size MiB on each"
baseline_prepare || exit 1

serve='truncate -s '$size'M big && (nohup setsid python3 -m http.server 8000 >/dev/null 2>&1 </dev/null &)'

download() {  # download SIDE PORT
  local out i
  for i in $(seq 1 30); do curl -sf -m 5 -o /dev/null "http://127.0.0.1:$2/" && break; sleep 1; done
  for i in $(seq 1 "$runs"); do
    wait_quiet
    out=$(curl -sf -o /dev/null -w '%{time_total} %{size_download}' "http://127.0.0.1:$2/big") ||
      { say "download through $2 failed"; exit 1; }
    [ "${out#* }" -eq $((size * 1048576)) ] || { say "short download: $out"; exit 1; }
    sample port-download "$1" "${out% *}" "$LOAD"
  done
}

port=$(free_port)
vm=bp-$$
hutch_new "$vm" --port "$port:8000" || exit 1
"$HUTCH" shell "$vm" -- sh -c "$serve" || exit 1
download hutch "$port"
"$HUTCH" -q delete --force "$vm"

vm=bpb-$$
baseline_new "$vm" || exit 1
port=$(free_port)
baseline_forward "$vm" "$port" 8000 || exit 1
baseline_ssh "$vm" "$serve" || exit 1
download baseline "$port"
baseline_delete "$vm"

result port-download s "$size MiB over HTTP: passt forward vs slirp hostfwd"
bench_write_json runs="$runs" size_mib="$size"
