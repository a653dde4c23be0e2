# shellcheck shell=bash
# tests/libvirt-session.sh: a libvirt session daemon of a run's own, for tests/e2e and
# tests/bench. Source it.
#
# libvirt keeps session domain definitions under $XDG_CONFIG_HOME/libvirt and listens on
# $XDG_RUNTIME_DIR/libvirt/libvirt-sock. A run with a private XDG_CONFIG_HOME but the user's
# XDG_RUNTIME_DIR spawns a daemon that serves the user's socket with the run's config tree:
# the user's own VMs vanish from `hutch list` and `virsh list --all` (and `hutch start dev`
# would create dev again) for as long as it lives. So a run has both private, and stops its
# daemon at the end.

# private_session_begin: a private XDG_RUNTIME_DIR, short (unix socket paths have a 108-byte
# limit, and hutch's sockets sit three levels below it). The user's is kept in
# XDG_RUNTIME_DIR_ORIG.
private_session_begin() {
  export XDG_RUNTIME_DIR_ORIG=${XDG_RUNTIME_DIR:-}
  PRIVATE_RUNTIME_DIR=$(mktemp -d /tmp/hr.XXXXXX) || return 1
  chmod 700 "$PRIVATE_RUNTIME_DIR"
  export XDG_RUNTIME_DIR=$PRIVATE_RUNTIME_DIR
}

# private_session_end: stops the daemons libvirt started for this run (libvirtd or
# virtqemud, virtlogd: their pid files are in the private runtime directory; a pid counts
# only while its process runs with that XDG_RUNTIME_DIR), then removes the directory. Call it
# after the run's VMs are gone.
private_session_end() {
  local dir=${PRIVATE_RUNTIME_DIR:-} pidfile pid
  [ -n "$dir" ] && [ -d "$dir" ] || return 0
  for pidfile in "$dir"/libvirt/*.pid; do
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile" 2>/dev/null)
    case $pid in '' | *[!0-9]*) continue ;; esac
    tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qxF "XDG_RUNTIME_DIR=$dir" || continue
    kill "$pid" 2>/dev/null
    for _ in $(seq 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
  done
  rm -rf "$dir"
}
