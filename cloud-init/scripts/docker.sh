#!/bin/sh
# hutch provisioning step: Docker (as root), and the guest user in the docker group.
#   HUTCH_DOCKER_SOURCE  distro (default): Debian's docker.io
#                        docker: Docker's own apt repository (docker-ce), from download.docker.com
# The docker group is root-equivalent inside the VM, which is the VM's to give: nothing of the
# host is reachable through it. Running again changes nothing.
set -u
NAME=docker
log() { printf 'hutch-%s: %s\n' "$NAME" "$*"; }
die() { printf 'hutch-%s: error: %s\n' "$NAME" "$*" >&2; exit 1; }
# shellcheck source=/dev/null
[ -r /etc/profile.d/hutch-env.sh ] && . /etc/profile.d/hutch-env.sh
# HUTCH_USER: the guest user, written by hutch.
# shellcheck source=/dev/null
[ -r /etc/hutch/provision.conf ] && . /etc/hutch/provision.conf
[ "$(id -u)" = 0 ] || die "must run as root (as: root)"

export DEBIAN_FRONTEND=noninteractive
apt="apt-get -o DPkg::Lock::Timeout=600 -o Acquire::http::Timeout=30 -o Acquire::Retries=2"
source=${HUTCH_DOCKER_SOURCE:-distro}
case "$source" in
  distro)
    if dpkg-query -W -f '${Status}' docker.io 2>/dev/null | grep -q 'ok installed'; then
      log "docker.io is already installed"
    else
      log "installing Debian's docker.io"
      # apparmor: Debian's kernel enables it, and dockerd needs its parser to load profiles.
      # shellcheck disable=SC2086 # apt's options
      $apt install -y --no-install-recommends docker.io apparmor ||
        { $apt update && $apt install -y --no-install-recommends docker.io apparmor; } ||
        die "apt-get install docker.io failed (Debian mirror unreachable? see above)"
    fi
    ;;
  docker)
    if dpkg-query -W -f '${Status}' docker-ce 2>/dev/null | grep -q 'ok installed'; then
      log "docker-ce is already installed"
    else
      # shellcheck source=/dev/null
      . /etc/os-release
      keyring=/etc/apt/keyrings/docker.asc
      list=/etc/apt/sources.list.d/docker.list
      mkdir -p /etc/apt/keyrings
      url=https://download.docker.com/linux/$ID/gpg
      log "fetching Docker's signing key from $url"
      err=$(curl -fsSL --connect-timeout 10 --max-time 60 --retry 2 -o "$keyring.tmp" "$url" 2>&1) ||
        { rm -f "$keyring.tmp"; die "cannot fetch Docker's key ($url unreachable): $(printf '%s\n' "$err" | tail -n 1)"; }
      mv "$keyring.tmp" "$keyring" && chmod 0644 "$keyring"
      echo "deb [arch=$(dpkg --print-architecture) signed-by=$keyring] https://download.docker.com/linux/$ID $VERSION_CODENAME stable" >"$list"
      # shellcheck disable=SC2086 # apt's options
      if ! { $apt update && $apt install -y docker-ce docker-ce-cli containerd.io \
        docker-buildx-plugin docker-compose-plugin; }; then
        # A dead repository would make every later apt-get update fail.
        rm -f "$list"
        die "installing docker-ce from download.docker.com failed (see above); repository removed"
      fi
    fi
    ;;
  *) die "HUTCH_DOCKER_SOURCE must be distro or docker, not '$source'" ;;
esac

command -v docker >/dev/null 2>&1 || die "docker is missing after the install"
if [ -n "${HUTCH_USER:-}" ] && id "$HUTCH_USER" >/dev/null 2>&1; then
  if id -nG "$HUTCH_USER" | tr ' ' '\n' | grep -qx docker; then
    log "$HUTCH_USER is in the docker group"
  else
    usermod -aG docker "$HUTCH_USER" || die "usermod -aG docker $HUTCH_USER failed"
    log "added $HUTCH_USER to the docker group (effective at the next login)"
  fi
else
  log "warning: no guest user known (HUTCH_USER); nobody added to the docker group"
fi
systemctl enable --now docker.service >/dev/null 2>&1 || log "warning: could not start docker.service"
if systemctl is-active --quiet docker.service; then
  log "docker.service is active"
else
  log "warning: docker.service is not active (systemctl status docker)"
fi
log "$(docker --version)"
