#!/usr/bin/env bash
# tests/libvirt-system.sh start USER | stop: libvirt's system daemon for the system suite
# (tests/e2e/system.sh), run by tests/run as root inside a lane's root whose passt has
# vhost-user (the Debian 13 lane; never on a real host, whose libvirt configuration this
# rewrites). USER joins group libvirt, the daemon's socket group, as a user of
# qemu:///system would.
#
# No init system runs here, so the daemon is started by hand (libvirtd or virtqemud, and
# virtlogd), with what a container without systemd lacks: no cgroup controllers for QEMU
# (nothing delegates them), no per-VM mount namespace, no LSM (this kernel has no AppArmor;
# on a Debian host the per-domain AppArmor profile is the one thing the suite cannot
# cover), no polkit (the socket's group is its access control: auth_unix_rw = "none"). QEMU
# runs as libvirt-qemu with libvirt's DAC labels, as on any Debian host.
set -euo pipefail

marker="# hutch tests (tests/libvirt-system.sh)"
pidfiles=(/run/libvirtd.pid /run/virtqemud.pid /run/virtlogd.pid)

stop() {
  local f pid
  for f in "${pidfiles[@]}"; do
    [ -f "$f" ] || continue
    pid=$(cat "$f" 2>/dev/null) || continue
    case $pid in '' | *[!0-9]*) continue ;; esac
    kill "$pid" 2>/dev/null || continue
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  done
}

configure() {
  local file=$1
  shift
  grep -qF "$marker" "$file" 2>/dev/null && return 0
  { echo "$marker"; printf '%s\n' "$@"; } >>"$file"
}

case "${1:-}" in
start)
  user=${2:?usage: tests/libvirt-system.sh start USER}
  configure /etc/libvirt/qemu.conf 'cgroup_controllers = [ ]' 'namespaces = [ ]' \
    'security_driver = "none"'
  daemon=libvirtd
  command -v virtqemud >/dev/null && daemon=virtqemud
  configure "/etc/libvirt/$daemon.conf" 'unix_sock_group = "libvirt"' \
    'unix_sock_rw_perms = "0770"' 'auth_unix_rw = "none"'
  getent group libvirt >/dev/null || groupadd --system libvirt
  usermod -aG libvirt "$user"
  # libvirt locks a console or channel it opens for a client under /var/lock (-> /run/lock)
  mkdir -p -m 1777 /run/lock
  stop
  virtlogd --daemon
  "$daemon" --daemon
  for _ in $(seq 100); do
    [ -S /run/libvirt/libvirt-sock ] && break
    sleep 0.1
  done
  if ! virsh -c qemu:///system uri >/dev/null 2>&1; then
    echo "tests/libvirt-system.sh: the system daemon ($daemon) did not come up" >&2
    exit 1
  fi
  ;;
stop)
  stop
  ;;
*)
  echo "usage: tests/libvirt-system.sh start USER | stop" >&2
  exit 2
  ;;
esac
