#!/usr/bin/env bash
# tests/run --host HOST [ARGS...]: every suite (or those ARGS names) on another host's stack,
# in a root of that distribution that mmdebstrap builds from the package mirror, with this
# machine's kernel. The root holds what tools/install-deps installs on Debian 12, in that
# release's versions (libvirt, QEMU, passt, the virtiofsd it ships, the compiler), and
# tests/run runs inside it unchanged: as root it makes the test user there, builds hutch
# with that root's compiler and libraries and runs the suites against that root's libvirt
# session daemon and QEMU. The test guest is the same image as in the Debian 12 lane.
#
# A root is cached under /var/cache/hutch-test/hosts, keyed by its suite and package list,
# and built anew (into a temporary directory first: never half-made) when they change. Build
# directories and the guest image cache persist inside it between runs. Needs root (it
# mounts /proc, /sys and /dev into the root and enters it with chroot).
#
#   HOST: debian-13 (Debian 13 "trixie": libvirt 11, QEMU 10, the Rust virtiofsd, passt 2025)
set -euo pipefail

src=$(cd "$(dirname "$0")/.." && pwd)
host=${1:-}
shift || true

case "$host" in
debian-13)
  suite=trixie
  # the Rust virtiofsd is a package of its own there (Debian 12's C one came with QEMU)
  extra=(virtiofsd)
  ;;
*)
  echo "tests/run: unknown host '$host' (known: debian-13)" >&2
  exit 2
  ;;
esac
if [ "$(id -u)" -ne 0 ]; then
  echo "tests/run --host needs root: it builds a root with mmdebstrap and enters it with chroot" >&2
  exit 2
fi
command -v mmdebstrap >/dev/null || { echo "tests/run --host needs mmdebstrap (apt-get install mmdebstrap)" >&2; exit 1; }

# What a minimal (--variant=apt) root lacks that a Debian installation has: useradd, pgrep.
base=(passwd procps)
mapfile -t packages < <({ "$src/tools/install-deps" --list; printf '%s\n' "${extra[@]}" "${base[@]}"; } | sort -u)
mirror=${HUTCH_DEBIAN_MIRROR:-http://deb.debian.org/debian}
# v1: how this script sets a root up; bump it when that changes
key=$(printf '%s\n' v1 "$suite" "$mirror" "${packages[@]}" | sha256sum | cut -c1-12)
cache=/var/cache/hutch-test/hosts
root=$cache/$host-$key
test_user=hutch-test
# not the Debian 12 lane's uid: `pkill -u` in one lane must never reach the other's processes
test_uid=1101

if [ ! -x "$root/usr/bin/qemu-system-x86_64" ]; then
  echo "== building the $host root ($suite, ${#packages[@]} packages; a minute or two, then cached)"
  mkdir -p "$cache"
  # roots of older package lists go: each is about 1.5 GB
  find "$cache" -mindepth 1 -maxdepth 1 -name "$host-*" ! -name "$host-$key" -exec rm -rf {} +
  tmp=$root.tmp.$$
  trap 'rm -rf "$tmp"' EXIT
  if ! mmdebstrap --quiet --variant=apt --include="$(IFS=,; echo "${packages[*]}")" \
      "$suite" "$tmp" "$mirror" >"$cache/$host.build.log" 2>&1; then
    tail -20 "$cache/$host.build.log"
    echo "tests/run: building the $host root failed (log: $cache/$host.build.log)" >&2
    exit 1
  fi
  # no init system runs in it: package scripts must not start daemons; hutch starts its own
  printf '#!/bin/sh\nexit 101\n' >"$tmp/usr/sbin/policy-rc.d" && chmod 755 "$tmp/usr/sbin/policy-rc.d"
  chroot "$tmp" useradd --uid "$test_uid" --create-home --shell /bin/bash "$test_user"
  mv "$tmp" "$root"
  trap - EXIT
fi
# the guest image build inside resolves the mirror's name
cp /etc/resolv.conf "$root/etc/resolv.conf"
# the host's own certificate authorities (a network that re-signs TLS has one), as on the
# host: the slow suite hands them to its guest (ai-dev.sh, HUTCH_CA_CERTS)
local_cas=/usr/local/share/ca-certificates
if [ -d "$local_cas" ] && ! diff -r -q "$local_cas" "$root$local_cas" >/dev/null 2>&1; then
  rm -rf "${root:?}$local_cas"
  cp -r "$local_cas" "$root$local_cas"
  chroot "$root" update-ca-certificates >/dev/null 2>&1 ||
    echo "tests/run: update-ca-certificates in the $host root failed" >&2
fi
versions=$(chroot "$root" dpkg-query -W -f='${Package} ${Version}\n' libvirt-daemon qemu-system-x86 passt virtiofsd 2>/dev/null || true)
echo "== $host: $(echo "$versions" | paste -sd, - | sed 's/,/, /g'), $(chroot "$root" gcc -dumpfullversion 2>/dev/null | sed 's/^/gcc /')"

mkdir -p "$root/src"
python3 "$src/tests/mirror-tree.py" "$src" "$root/src"

# Enter the root in a mount namespace of its own with pivot_root, not chroot: the kernel
# refuses a new user namespace to a chrooted process (EPERM), and virtiofsd and the image
# builds need one. In the namespace: the kernel's file systems, the host's devices (/dev/kvm
# is not used: tests run under TCG) and a fresh /run (libvirt's session daemon keeps its
# sockets in /run/user/UID). Private propagation: nothing mounted there reaches the host, and
# it all goes when the namespace does.
export HUTCH_LANE_ROOT=$root CI=${CI:-} HUTCH_MESON_ARGS=${HUTCH_MESON_ARGS:-}
exec unshare --mount --propagation private --fork -- bash -euo pipefail -c '
  root=$HUTCH_LANE_ROOT
  mount --bind "$root" "$root"
  mount -t proc proc "$root/proc"
  mount --rbind /sys "$root/sys"
  mount --rbind /dev "$root/dev"
  mount -t tmpfs -o mode=755 tmpfs "$root/run"
  mkdir -p "$root/.host"
  cd "$root"
  pivot_root . .host
  cd /
  umount -l /.host
  exec /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin HOME=/root \
    LANG=C.UTF-8 CI="$CI" HUTCH_MESON_ARGS="$HUTCH_MESON_ARGS" HUTCH_IN_LANE=1 \
    bash /src/tests/run "$@"
' lane "$@"
