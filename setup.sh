#!/usr/bin/env bash
# Installs what hutch needs (Debian 12), builds it into build/, and starts the VM "dev" from
# the default profile. Run it as the user who will use hutch (it calls sudo for apt-get).
#   ./setup.sh            install, build, hutch start dev
#   ./setup.sh --no-start install and build only
set -euo pipefail
cd "$(dirname "$0")"
tools/install-deps
[ -f build/build.ninja ] || meson setup build --buildtype=release >/dev/null
ninja -C build
echo "built: $(pwd)/build/cmd/hutch"
[ "${1:-}" = "--no-start" ] && exit 0
if [ "$(id -u)" -eq 0 ]; then
  echo "not starting a VM as root: run build/cmd/hutch start dev as your own user" >&2
  exit 0
fi
# libvirt's session daemon keeps its sockets in $XDG_RUNTIME_DIR, which a login manager
# makes; after `su -`, or on a machine without systemd-logind, it may not exist.
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/run/user/$(id -u)}
if [ ! -d "$XDG_RUNTIME_DIR" ]; then
  echo "making $XDG_RUNTIME_DIR (no login manager made it): sudo install -d -m 0700"
  sudo install -d -o "$(id -u)" -g "$(id -g)" -m 0700 "$XDG_RUNTIME_DIR"
fi
echo "hutch is $(pwd)/build/cmd/hutch: put it on your PATH (export PATH=\"$(pwd)/build/cmd:\$PATH\")"
exec build/cmd/hutch start dev
