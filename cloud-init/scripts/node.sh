#!/bin/bash
# hutch provisioning step: Node.js for the guest user (as: user).
# First choice: nvm with the current LTS release, as in the sandbox guide (nvm's installer adds
# itself to ~/.bashrc). When nvm's source (GitHub) or nodejs.org is unreachable, falls back to
# Debian's nodejs and npm (through sudo) and says so; npm's global prefix is then ~/.local,
# so `npm install -g` needs no root and its commands land in ~/.local/bin.
#   HUTCH_NVM_VERSION   nvm's release tag (default v0.40.1)
#   HUTCH_NODE_VERSION  what nvm installs (default --lts)
set -u
NAME=node
log() { printf 'hutch-%s: %s\n' "$NAME" "$*"; }
die() { printf 'hutch-%s: error: %s\n' "$NAME" "$*" >&2; exit 1; }
# shellcheck source=/dev/null
[ -r /etc/profile.d/hutch-env.sh ] && . /etc/profile.d/hutch-env.sh
# NODE_EXTRA_CA_CERTS, when the profile adds certificate authorities (ca-certs.sh).
# shellcheck source=/dev/null
[ -r /etc/profile.d/hutch-ca.sh ] && . /etc/profile.d/hutch-ca.sh
[ "$(id -u)" != 0 ] || die "run this step as the guest user (as: user), not root"

nvm_version=${HUTCH_NVM_VERSION:-v0.40.1}
node_version=${HUTCH_NODE_VERSION:---lts}
export NVM_DIR=$HOME/.nvm

# nvm's functions are not written for set -u.
use_nvm() {
  local rc
  set +u
  # shellcheck source=/dev/null
  [ -s "$NVM_DIR/nvm.sh" ] && . "$NVM_DIR/nvm.sh" && nvm use default >/dev/null 2>&1 &&
    command -v node >/dev/null 2>&1
  rc=$?
  set -u
  return $rc
}

# The distro's npm installs globals under /usr/local unless told otherwise.
user_prefix() {
  local prefix
  prefix=$(npm config get prefix 2>/dev/null)
  case "$prefix" in
    "$HOME"/*) ;;
    *)
      npm config set prefix "$HOME/.local" || die "npm config set prefix failed"
      log "npm's global prefix is now ~/.local (commands in ~/.local/bin)"
      ;;
  esac
  mkdir -p "$HOME/.local/bin"
}

done_msg() {
  log "Node.js $(node --version), npm $(npm --version) ($1)"
  exit 0
}

if use_nvm; then
  done_msg "nvm, already installed"
fi
if [ -e "$HOME/.hutch-node-distro" ] && command -v node >/dev/null && command -v npm >/dev/null; then
  user_prefix
  done_msg "Debian's packages, already installed"
fi

why=
installer=$(mktemp) || die "mktemp failed"
trap 'rm -f "$installer"' EXIT
nvm_url=https://raw.githubusercontent.com/nvm-sh/nvm/$nvm_version/install.sh
log "fetching nvm $nvm_version from $nvm_url"
if err=$(curl -fsSL --connect-timeout 10 --max-time 120 --retry 2 -o "$installer" "$nvm_url" 2>&1); then
  set +u
  # shellcheck source=/dev/null
  if bash "$installer" && . "$NVM_DIR/nvm.sh" &&
    nvm install "$node_version" && nvm alias default node >/dev/null && use_nvm; then
    done_msg "nvm $nvm_version"
  fi
  set -u
  why="nvm could not install Node.js $node_version (nodejs.org unreachable?)"
else
  why="nvm's source is unreachable ($nvm_url: $(printf '%s\n' "$err" | tail -n 1))"
fi

log "$why"
log "falling back to Debian's nodejs and npm"
sudo -n true 2>/dev/null || die "$why, and the fallback needs sudo, which this user lacks (user.sudo: false)"
export DEBIAN_FRONTEND=noninteractive
sudo -n -E apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends nodejs npm ||
  { sudo -n apt-get -o DPkg::Lock::Timeout=600 update &&
    sudo -n -E apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends nodejs npm; } ||
  die "$why, and apt-get install nodejs npm failed too"
for cmd in node npm; do
  command -v $cmd >/dev/null || die "$cmd is missing after the install"
done
: >"$HOME/.hutch-node-distro"
user_prefix
done_msg "Debian's packages: fallback because $why"
