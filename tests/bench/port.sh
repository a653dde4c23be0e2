#!/usr/bin/env bash
# Benchmark 4: an HTTP download from the guest through a forwarded port, and one by the
# guest through the egress policy.
#
#   port-download   hutch: hutch start --port HOST:8000 under the default policy (public:
#                   passt in the egress helper's namespace, the helper relaying the port)
#                   baseline: the virt-install VM of boot.sh, <interface type='user'> (QEMU's
#                   slirp) with `hostfwd_add` for the same guest port
#   port-sendfile   the same as port-download with a server that sends the file with
#                   sendfile(2) (tests/bench/sendfile-server.py, guest port 8001) instead of
#                   python3 -m http.server, whose copy in the guest's interpreter is most of
#                   the time under TCG on both sides: what the network path itself costs
#   port-relay      the same forward, hutch: under public; baseline: the same VM restarted
#                   under egress: unrestricted (passt alone): what the helper's relay costs
#   egress-download the guest downloads SIZE MiB from a host server (198.51.100.2, which
#                   tests/run adds on lo; taken as outside with HUTCH_EGRESS_TEST_OUTSIDE)
#                   hutch: through the policy (public); baseline: unrestricted, same VM
#   net-backend-port, net-backend-guest (only where passt offers vhost-user, as Debian 13's)
#                   the forward's download and the guest's download, unrestricted, hutch:
#                   passt's vhost-user mode (what such a host gets); baseline: the same VM
#                   restarted with HUTCH_PASST_VHOST_USER=0 (QEMU's stream socket to passt)
#
# The guest serves a SIZE MiB file with python3 -m http.server; curl downloads it to
# /dev/null on the host. One VM at a time: the hutch VM, then the baseline VM (their boots
# are not timed).
#
# Usage: port.sh [RUNS] [SIZE_MIB]   (defaults 3, 500)
. "$(dirname "$0")/lib.sh"

runs=${1:-3}
size=${2:-500}
estimate $((3 * 200 + 7 * runs * size / 5)) "three boots, then $runs downloads of $size MiB in each of seven cases"
baseline_prepare || exit 1

serve='truncate -s '$size'M big && (nohup setsid python3 -m http.server 8000 >/dev/null 2>&1 </dev/null &) && (nohup setsid python3 sendfile-server.py big 8001 >/dev/null 2>&1 </dev/null &)'
sendfile_server=$BENCH_DIR/sendfile-server.py

download() {  # download SIDE PORT
  local out i
  for i in $(seq 1 30); do curl -sf -m 5 -o /dev/null "http://127.0.0.1:$2/" && break; sleep 1; done
  for i in $(seq 1 "$runs"); do
    wait_quiet
    out=$(curl -sf -o /dev/null -w '%{time_total} %{size_download}' "http://127.0.0.1:$2/big") ||
      { say "download through $2 failed"; exit 1; }
    [ "${out#* }" -eq $((size * 1048576)) ] || { say "short download: $out"; exit 1; }
    sample "${BENCH_SAMPLE_NAME:-port-download}" "$1" "${out% *}" "$LOAD"
  done
}

# the guest's downloads from a host server standing in for one outside
outside=198.51.100.2
ip -4 addr show | has "inet $outside/" || { say "$outside is not on this host (tests/run adds it on lo as root)"; exit 1; }
export HUTCH_EGRESS_TEST_OUTSIDE=$outside
mkdir -p "$BENCH_TMP/www" && truncate -s "${size}M" "$BENCH_TMP/www/big"
www_port=$(free_port)
python3 -m http.server --bind $outside --directory "$BENCH_TMP/www" "$www_port" >/dev/null 2>&1 &
www_pid=$!
trap 'kill $www_pid 2>/dev/null; bench_cleanup' EXIT
guest_download() {  # guest_download SIDE VM
  local out i
  for i in $(seq 1 "$runs"); do
    wait_quiet
    out=$("$HUTCH" shell "$2" -- curl -sf -o /dev/null -w '%{time_total} %{size_download}' "http://$outside:$www_port/big") ||
      { say "the guest's download ($1) failed"; exit 1; }
    [ "${out#* }" -eq $((size * 1048576)) ] || { say "short download: $out"; exit 1; }
    sample "${BENCH_GUEST_SAMPLE_NAME:-egress-download}" "$1" "${out% *}" "$LOAD"
  done
}
# download_as NAME SIDE PORT: download's samples under another result name
download_as() { local keep=${BENCH_SAMPLE_NAME:-}; BENCH_SAMPLE_NAME=$1; shift; download "$@"; BENCH_SAMPLE_NAME=$keep; }
guest_download_as() { local keep=${BENCH_GUEST_SAMPLE_NAME:-}; BENCH_GUEST_SAMPLE_NAME=$1; shift; guest_download "$@"; BENCH_GUEST_SAMPLE_NAME=$keep; }
passt_help=$("${HUTCH_PASST:-passt}" --help 2>&1 || true)
vhost_user=no; grep -q -- '--vhost-user' <<<"$passt_help" && vhost_user=yes

port=$(free_port)
port2=$(free_port)
while [ "$port2" = "$port" ]; do port2=$(free_port); done
vm=bp-$$
hutch_new "$vm" --egress public --port "$port:8000" --port "$port2:8001" || exit 1
"$HUTCH" shell "$vm" -- sh -c 'cat > sendfile-server.py' <"$sendfile_server" || exit 1
"$HUTCH" shell "$vm" -- sh -c "$serve" || exit 1
download hutch "$port"
download_as port-sendfile hutch "$port2"
download_as port-relay hutch "$port"
guest_download hutch "$vm"
"$HUTCH" -q net "$vm" --egress unrestricted 2>/dev/null || exit 1
"$HUTCH" -q stop "$vm" && "$HUTCH" -q start "$vm" || { say "restart under unrestricted failed"; exit 1; }
"$HUTCH" shell "$vm" -- sh -c "$serve" || exit 1
download_as port-relay baseline "$port"
guest_download baseline "$vm"
if [ $vhost_user = yes ]; then
  download_as net-backend-port hutch "$port"
  guest_download_as net-backend-guest hutch "$vm"
  "$HUTCH" -q stop "$vm" && HUTCH_PASST_VHOST_USER=0 "$HUTCH" -q start "$vm" || { say "restart with the stream socket failed"; exit 1; }
  "$HUTCH" shell "$vm" -- sh -c "$serve" || exit 1
  download_as net-backend-port baseline "$port"
  guest_download_as net-backend-guest baseline "$vm"
fi
"$HUTCH" -q delete --force "$vm"

vm=bpb-$$
baseline_new "$vm" || exit 1
port=$(free_port)
port2=$(free_port)
while [ "$port2" = "$port" ]; do port2=$(free_port); done
baseline_forward "$vm" "$port" 8000 || exit 1
baseline_forward "$vm" "$port2" 8001 || exit 1
baseline_ssh "$vm" 'cat > sendfile-server.py' <"$sendfile_server" || exit 1
baseline_ssh "$vm" "$serve" || exit 1
download baseline "$port"
download_as port-sendfile baseline "$port2"
baseline_delete "$vm"

result port-download s "$size MiB over HTTP: hutch's forward (public: the helper's relay, passt) vs slirp hostfwd"
result port-sendfile s "$size MiB over HTTP, the guest's server using sendfile(2): hutch's forward (public) vs slirp hostfwd"
result port-relay s "$size MiB over HTTP: the forward under public vs unrestricted (passt alone), same VM"
result egress-download s "$size MiB downloaded by the guest: through the policy (public) vs unrestricted, same VM"
if [ $vhost_user = yes ]; then
  result net-backend-port s "$size MiB over HTTP through the forward, unrestricted: passt's vhost-user vs QEMU's stream socket, same VM"
  result net-backend-guest s "$size MiB downloaded by the guest, unrestricted: passt's vhost-user vs QEMU's stream socket, same VM"
fi
bench_write_json runs="$runs" size_mib="$size" passt_vhost_user="$vhost_user"
