# tests/e2e/lib.sh: what the end-to-end suites share. Source it; it speaks TAP.
#
# Each suite runs the real hutch binary ($HUTCH, set by meson) against a real libvirt on
# qemu:///session. Instances, configuration, keys and the runtime directory live in a private
# temporary XDG tree that is removed at the end, and so does the libvirt session daemon the
# suite starts (tests/libvirt-session.sh: it never serves the user's socket); the image cache
# ($XDG_CACHE_HOME) is the user's own, so the test guest is built once and shared between
# suites and runs.
#
# A suite that cannot get libvirt fails (CI must never pass without it). Only a developer may
# allow skipping, with HUTCH_ALLOW_SKIP=1, and the skip says why.

set -uo pipefail

# grep -q stops reading at its first match: under pipefail the writer then dies of SIGPIPE
# and the pipeline fails as if nothing had matched (a flaky "not found"). has reads all of
# its input: `producer | has [GREP_OPTIONS] PATTERN`.
has() { grep "$@" >/dev/null; }

: "${HUTCH:?HUTCH must name the hutch binary (meson test sets it)}"
: "${HUTCH_SOURCE_DIR:?}"
export LIBVIRT_DEFAULT_URI=qemu:///session
# ip(8) is in /usr/sbin, which an ordinary user's PATH (and tests/run's) leaves out.
export PATH=$PATH:/usr/sbin:/sbin
export HUTCH_ACCEL=tcg   # /dev/kvm here is kvm_pvm, on which stock guest kernels hang

# The image cache stays the user's own even when a suite moves HOME.
export XDG_CACHE_HOME=${XDG_CACHE_HOME:-$HOME/.cache}

E2E_TMP=$(mktemp -d "${TMPDIR:-/tmp}/hutch-e2e.XXXXXX")
export XDG_DATA_HOME=$E2E_TMP/data XDG_CONFIG_HOME=$E2E_TMP/config
mkdir -p "$XDG_DATA_HOME" "$XDG_CONFIG_HOME"
# shellcheck source=tests/libvirt-session.sh
. "$HUTCH_SOURCE_DIR/tests/libvirt-session.sh"
private_session_begin || { echo "Bail out! cannot make a private XDG_RUNTIME_DIR"; exit 1; }

tap_count=0
tap_failed=0
E2E_VMS=()
E2E_TEMPLATES=()

# Each result ends with the seconds since the suite began ([12s]): where a suite spends its
# time, read from its log (under TCG, mostly boots).
ok() { tap_count=$((tap_count + 1)); echo "ok $tap_count - $* [${SECONDS}s]"; }
not_ok() { tap_count=$((tap_count + 1)); tap_failed=$((tap_failed + 1)); echo "not ok $tap_count - $* [${SECONDS}s]"; }
diag() { sed 's/^/# /' <<<"$*"; }

# check "description" command...: ok when the command succeeds; its output goes to the TAP
# diagnostics when it fails.
check() {
  local what=$1; shift
  local out
  if out=$("$@" 2>&1); then ok "$what"; else not_ok "$what"; diag "$out"; fi
}

# check_fails "description" EXPECTED_STATUS command...
check_status() {
  local what=$1 expected=$2; shift 2
  local out rc
  out=$("$@" 2>&1); rc=$?
  if [ "$rc" -eq "$expected" ]; then ok "$what"; else not_ok "$what (exit $rc, wanted $expected)"; diag "$out"; fi
}

skip_all() {
  echo "1..0 # SKIP $*"
  exit 0
}

# Fails the suite (or, for a developer with HUTCH_ALLOW_SKIP=1, skips it) when libvirt's
# session daemon cannot be reached.
require_libvirt() {
  local out
  if ! out=$(virsh -c qemu:///session uri 2>&1); then
    if [ "${HUTCH_ALLOW_SKIP:-}" = 1 ] && [ -z "${CI:-}" ]; then
      skip_all "libvirt qemu:///session unreachable (HUTCH_ALLOW_SKIP=1): $out"
    fi
    echo "Bail out! libvirt qemu:///session unreachable: $out"
    exit 1
  fi
}

# none_running PGREP_ARGS...: succeeds only when pgrep finds no such process (exit 1); a
# match, or pgrep failing (exit 2 or 3), is a failure, so that a broken pgrep passes nothing.
none_running() {
  local rc
  pgrep "$@" >/dev/null; rc=$?
  [ $rc -eq 1 ] && return 0
  [ $rc -eq 0 ] && echo "running: $(pgrep -a "$@")" || echo "pgrep $* failed (exit $rc)"
  return 1
}

# A TCP port on 127.0.0.1 that is free now (the kernel's pick).
# helpers_are_children VM: prints nothing and succeeds when the VM's helpers (its egress
# helper, or passt where it has none, and each virtiofsd, as their pidfiles name them) are
# children of one hutch-supervise process started for VM; else says which is not.
helpers_are_children() {
  local dir=$XDG_RUNTIME_DIR/hutch/$1 f pid ppid parents="" bad=""
  local files=("$dir"/virtiofs-*.pid)
  if [ -e "$dir/egress.pid" ]; then files+=("$dir/egress.pid"); else files+=("$dir/passt.pid"); fi
  for f in "${files[@]}"; do
    [ -e "$f" ] || continue
    pid=$(awk '{print $1}' "$f")
    ppid=$(awk '/^PPid:/{print $2}' "/proc/$pid/status" 2>/dev/null)
    if [ -z "$ppid" ] || [ "$(cat "/proc/$ppid/comm" 2>/dev/null)" != hutch-supervise ] ||
       ! tr '\0' ' ' <"/proc/$ppid/cmdline" | grep -q -- " $1\( \|\$\)"; then
      bad+="${f##*/}: pid $pid, parent ${ppid:-none} ($(cat "/proc/$ppid/comm" 2>/dev/null)); "
    fi
    parents+="$ppid "
  done
  [ -n "$parents" ] || bad+="no helper's pidfile in $dir; "
  [ "$(tr ' ' '\n' <<<"$parents" | sort -u | grep -c .)" -le 1 ] || bad+="several parents: $parents"
  [ -z "$bad" ] || { echo "$bad"; return 1; }
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# Registers a VM name for removal at exit (whatever the tests did).
track_vm() { E2E_VMS+=("$1"); }
# Templates live in the user's image cache, shared between runs: each is removed at the end.
track_template() { E2E_TEMPLATES+=("$1"); }

# After a failure, the last lines of each tracked VM's console (systemd's boot messages: a
# unit that failed) and of its helpers' logs, before the cleanup deletes them with the VM.
log_tail() {
  [ -s "$2" ] || return 0
  diag "---- $(basename "$2") of $1, its last lines:"
  diag "$(tr -d '\r' <"$2" | tr -c '[:print:]\n' '?' | grep -v '^[[:space:]]*$' | tail -n "$3")"
}
console_tails() {
  local vm log
  for vm in "${E2E_VMS[@]}"; do
    log_tail "$vm" "$XDG_DATA_HOME/hutch/instances/$vm/console.log" 40
    for log in passt.log egress-helper.log supervisor.log; do
      log_tail "$vm" "$XDG_RUNTIME_DIR/hutch/$vm/$log" 10
    done
  done
}

e2e_cleanup() {
  local vm
  [ "$tap_failed" -eq 0 ] || console_tails
  for vm in "${E2E_VMS[@]}"; do
    "$HUTCH" -q delete --force "$vm" >/dev/null 2>&1 ||
      { virsh -c qemu:///session destroy "$vm" >/dev/null 2>&1;
        virsh -c qemu:///session undefine --snapshots-metadata "$vm" >/dev/null 2>&1; }
  done
  local template
  for template in "${E2E_TEMPLATES[@]}"; do
    "$HUTCH" -q template rm "$template" >/dev/null 2>&1 ||
      rm -rf "$XDG_CACHE_HOME/hutch/images/template-$template"
  done
  private_session_end
  rm -rf "$E2E_TMP"
}
trap e2e_cleanup EXIT

# No process outlives the VMs it served: once this suite's VMs are deleted, no process names
# one of them (a supervisor, passt, virtiofsd, an egress helper, QEMU, a hutch command).
no_leftovers() {
  [ ${#E2E_VMS[@]} -gt 0 ] || return 0
  local vm names="" left=""
  for vm in "${E2E_VMS[@]}"; do
    "$HUTCH" -q delete --force "$vm" >/dev/null 2>&1
    names+="${names:+|}$vm"
  done
  local rc
  for _ in $(seq 1 30); do
    left=$(pgrep -af -- "[^[:alnum:]_-]($names)([^[:alnum:]_-]|\$)"); rc=$?
    [ $rc -eq 1 ] && break  # 1: none; 0: some; anything else: pgrep failed, which is no pass
    [ $rc -eq 0 ] || left="pgrep failed (exit $rc)"
    sleep 0.5
  done
  if [ -z "$left" ]; then ok "no process outlives the suite's VMs"; else not_ok "processes outlive the suite's VMs"; diag "$left"; fi
}

# Call last: checks that nothing outlives the suite, prints the plan and exits non-zero when
# anything failed.
finish() {
  no_leftovers
  echo "1..$tap_count"
  [ "$tap_failed" -eq 0 ]
}

# A unique VM name per run, so that a leftover of a killed run never collides.
vm_name() { echo "$1-$$"; }
