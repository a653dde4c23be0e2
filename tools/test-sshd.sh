#!/bin/bash
# test-sshd.sh: starts a throw-away OpenSSH sshd on 127.0.0.1 for the SSH tests.
#
# Usage: tools/test-sshd.sh DIR AUTHORIZED_KEYS [PORT]
#
# DIR is a private directory the caller owns (made if missing); the script writes an ed25519
# host key (DIR/host_ed25519_key{,.pub}), DIR/sshd_config, DIR/sshd.log and DIR/sshd.pid there,
# starts `sshd -D -e` in the background as the current user and prints the port it listens on.
# The server ends by itself after $TEST_SSHD_LIFETIME seconds (900).
# Without PORT it tries random free ports. SFTP starts in DIR/home, which stands for the remote
# home directory ("~"). The caller stops the server with `kill $(cat DIR/sshd.pid)`.
#
# It works unprivileged (sshd then only lets the same user log in) and as root (for which the
# privilege separation directory /run/sshd must exist; it is made if missing).
set -euo pipefail

sshd=${SSHD:-/usr/sbin/sshd}
if [ $# -lt 2 ] || [ $# -gt 3 ]; then
  echo "usage: $0 DIR AUTHORIZED_KEYS [PORT]" >&2
  exit 2
fi
dir=$1
authorized_keys=$2
want_port=${3:-}

if [ ! -x "$sshd" ]; then
  echo "$0: $sshd is missing: apt-get install openssh-server" >&2
  exit 3
fi
case $dir in /*) ;; *) dir=$PWD/$dir ;; esac
case $authorized_keys in /*) ;; *) authorized_keys=$PWD/$authorized_keys ;; esac

mkdir -p "$dir" "$dir/home"
chmod 0700 "$dir"
if [ ! -e "$dir/host_ed25519_key" ]; then
  ssh-keygen -q -t ed25519 -N '' -C hutch-test-sshd -f "$dir/host_ed25519_key"
fi
if [ "$(id -u)" = 0 ]; then
  mkdir -p /run/sshd
  chmod 0755 /run/sshd
fi

start() {
  local port=$1
  cat >"$dir/sshd_config" <<EOF
ListenAddress 127.0.0.1:$port
HostKey $dir/host_ed25519_key
AuthorizedKeysFile $authorized_keys
PidFile $dir/sshd.real.pid
UsePAM no
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
AllowTcpForwarding yes
X11Forwarding no
PrintMotd no
PrintLastLog no
Banner none
LogLevel INFO
Subsystem sftp internal-sftp -d $dir/home
EOF
  : >"$dir/sshd.log"
  # timeout(1) ends a server whose test died without stopping it; it passes a SIGTERM on to
  # sshd, so DIR/sshd.pid is its pid.
  timeout "${TEST_SSHD_LIFETIME:-900}" "$sshd" -D -e -f "$dir/sshd_config" \
    </dev/null >>"$dir/sshd.log" 2>&1 &
  local pid=$!
  echo "$pid" >"$dir/sshd.pid"
  for _ in $(seq 1 100); do
    if grep -q "Server listening on 127.0.0.1 port $port" "$dir/sshd.log"; then
      echo "$port"
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid" 2>/dev/null || true
      return 1
    fi
    sleep 0.05
  done
  kill "$pid" 2>/dev/null || true
  echo "$0: sshd did not start listening on port $port within 5 s:" >&2
  cat "$dir/sshd.log" >&2
  return 4
}

if [ -n "$want_port" ]; then
  if ! start "$want_port"; then
    echo "$0: sshd failed on port $want_port:" >&2
    cat "$dir/sshd.log" >&2
    exit 1
  fi
  exit 0
fi
for _ in $(seq 1 20); do
  port=$((20000 + RANDOM % 40000))
  rc=0
  start "$port" || rc=$?
  [ "$rc" = 0 ] && exit 0
  [ "$rc" = 4 ] && exit 1
  # Only a port that is taken is worth another try.
  if ! grep -qE "Cannot bind any address|Address already in use" "$dir/sshd.log"; then
    echo "$0: sshd failed:" >&2
    cat "$dir/sshd.log" >&2
    exit 1
  fi
done
echo "$0: no free port found" >&2
exit 1
