#!/usr/bin/env bash
# tests/remote-host.sh start TEST_USER | stop: "another host" for the remote suite
# (tests/e2e/remote.sh), run by tests/run as root inside a lane's root (never on a real host:
# it makes a user and runs an sshd): a second local user, hutch-remote, who cannot read the
# test user's files (homes are 0700) nor the test user theirs, behind an sshd of its own on
# 127.0.0.1:2022 that lets only that user in, with the test user's key. So
# `hutch -c qemu+ssh://hutch-remote@127.0.0.1:2022/session` reaches another account through
# OpenSSH exactly as it would reach another machine, and nothing may depend on a local path.
#
# The test user's known_hosts gets this sshd's host key (the suite checks that an unknown
# key is refused). No logind here: sshd sets XDG_RUNTIME_DIR (SetEnv), as pam_systemd would.
# Prints the URI on stdout.
set -euo pipefail

other=hutch-remote
# pinned, next to the lane's test user (1101): the lane shares this machine's processes, and
# `pkill -u` below must reach only this user's (never a real user's of this machine)
other_uid=1102
port=2022
state=/run/hutch-remote-sshd

stop() {
  # this script's sshd, by its command line: a killed run's outlives its pidfile (/run is the
  # lane's tmpfs) and would hold the port
  pkill -f -- "sshd.* -f $state/sshd_config" 2>/dev/null || true
  for _ in $(seq 50); do pgrep -f -- "sshd.* -f $state/sshd_config" >/dev/null || break; sleep 0.1; done
  # its VMs' QEMU, helpers and libvirt session daemon
  if [ "$(id -u "$other" 2>/dev/null)" = "$other_uid" ]; then
    pkill -u "$other" 2>/dev/null || true
    for _ in $(seq 50); do pgrep -u "$other" >/dev/null || break; sleep 0.1; done
    pkill -KILL -u "$other" 2>/dev/null || true
  fi
}

case "${1:-}" in
start)
  test_user=${2:?usage: tests/remote-host.sh start TEST_USER}
  stop
  id "$other" >/dev/null 2>&1 || useradd --uid "$other_uid" --create-home --shell /bin/bash "$other"
  if [ "$(id -u "$other")" != "$other_uid" ]; then
    echo "tests/remote-host.sh: $other has uid $(id -u "$other"), not $other_uid" >&2
    exit 1
  fi
  # no password, but not locked ("!"): sshd without PAM refuses a locked account's keys too
  usermod -p '*' "$other"
  # its own subordinate ids (virtiofsd and the image builds need a user namespace)
  grep -q "^$other:" /etc/subuid || echo "$other:300000:65536" >>/etc/subuid
  grep -q "^$other:" /etc/subgid || echo "$other:300000:65536" >>/etc/subgid
  uid=$(id -u "$other")
  home=$(getent passwd "$other" | cut -d: -f6)
  test_home=$(getent passwd "$test_user" | cut -d: -f6)
  chmod 700 "$home" "$test_home"
  runtime=/run/user/$uid
  mkdir -p "$runtime" && chown "$other:" "$runtime" && chmod 700 "$runtime"

  mkdir -p "$state" /run/sshd
  chmod 755 "$state"
  [ -f "$state/host_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -f "$state/host_ed25519"
  cat >"$state/sshd_config" <<EOF
Port $port
ListenAddress 127.0.0.1
HostKey $state/host_ed25519
PidFile $state/sshd.pid
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AllowUsers $other
SetEnv XDG_RUNTIME_DIR=$runtime
EOF
  /usr/sbin/sshd -f "$state/sshd_config" -E "$state/sshd.log"

  # the test user's key, and that user's trust in this sshd's host key
  runuser -u "$test_user" -- bash -c '
    set -e
    mkdir -p ~/.ssh && chmod 700 ~/.ssh
    [ -f ~/.ssh/id_hutch_remote ] || ssh-keygen -q -t ed25519 -N "" -f ~/.ssh/id_hutch_remote
  '
  install -d -m 700 -o "$other" -g "$other" "$home/.ssh"
  install -m 600 -o "$other" -g "$other" "$test_home/.ssh/id_hutch_remote.pub" \
    "$home/.ssh/authorized_keys"
  known="[127.0.0.1]:$port $(cut -d' ' -f1,2 "$state/host_ed25519.pub")"
  runuser -u "$test_user" -- bash -c '
    f=~/.ssh/known_hosts; touch "$f"; chmod 600 "$f"
    grep -v "^\[127.0.0.1\]:'"$port"' " "$f" >"$f.new" || true
    echo "$1" >>"$f.new" && mv "$f.new" "$f"
    # the key for this host without a -i: what a user has in ~/.ssh/config
    c=~/.ssh/config; touch "$c"; chmod 600 "$c"
    grep -q "^Host hutch-remote-test" "$c" || printf "%s\n" "Host hutch-remote-test 127.0.0.1" \
      "  IdentityFile ~/.ssh/id_hutch_remote" "  IdentitiesOnly yes" >>"$c"
  ' known "$known"
  echo "qemu+ssh://$other@127.0.0.1:$port/session"
  ;;
stop)
  stop
  ;;
*)
  echo "usage: tests/remote-host.sh start TEST_USER | stop" >&2
  exit 2
  ;;
esac
