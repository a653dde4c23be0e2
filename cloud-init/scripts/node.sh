#!/bin/bash
# hutch provisioning step: Node.js for the guest user (as: user).
# First choice: nvm with the current LTS release, as in the sandbox guide (nvm's installer adds
# itself to ~/.bashrc). When nvm's source (GitHub) or nodejs.org is unreachable, falls back to
# Debian's nodejs and npm (through sudo) and says so; npm's global prefix is then ~/.local,
# so `npm install -g` needs no root and its commands land in ~/.local/bin.
#   HUTCH_NVM_VERSION   nvm's release tag (default v0.40.1)
#   HUTCH_NODE_VERSION  what nvm installs (default --lts)
#   HUTCH_NODE_FROM_NPM a major version (e.g. 22): with Debian's Node.js (18), also install
#                       that Node.js from the npm registry's `node` package into ~/.local/bin,
#                       ahead of Debian's on PATH. Off by default: those are nodejs.org's
#                       binaries repackaged by that package's maintainers, not published by the
#                       Node.js project; for networks that reach the npm registry but not
#                       nodejs.org or GitHub, when a CLI needs a newer Node.js.
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

# See HUTCH_NODE_FROM_NPM above. Needs npm's prefix in ~/.local (user_prefix) and ~/.local/bin
# first on PATH (the shell step's /etc/profile.d/hutch-shell.sh).
node_major() { node -p 'process.versions.node.split(".")[0]' 2>/dev/null; }

node_from_npm() {
  local want=${HUTCH_NODE_FROM_NPM:-}
  [ -n "$want" ] || return 0
  case "$want" in
    *[!0-9]*) die "HUTCH_NODE_FROM_NPM must be a major version such as 22, not '$want'" ;;
  esac
  if [ "$(node_major)" = "$want" ]; then
    log "Node.js $(node --version) from the npm registry's node package is installed"
    return 0
  fi
  log "installing Node.js $want from the npm registry's node package (HUTCH_NODE_FROM_NPM):" \
    "nodejs.org's binaries as repackaged by that package's maintainers"
  npm install -g --no-fund --no-audit --no-update-notifier --fetch-timeout=60000 \
    --fetch-retries=2 "node@$want" ||
    die "npm install -g node@$want failed (see above); Debian's Node.js $(node --version) stays"
  hash -r
  [ "$(node_major)" = "$want" ] ||
    die "node is $(node --version) after installing node@$want: ~/.local/bin is not first on PATH ($PATH)"
}

if use_nvm; then
  done_msg "nvm, already installed"
fi
if [ -e "$HOME/.hutch-node-distro" ] && command -v node >/dev/null && command -v npm >/dev/null; then
  user_prefix
  node_from_npm
  done_msg "Debian's packages, already installed${HUTCH_NODE_FROM_NPM:+; node $HUTCH_NODE_FROM_NPM from the npm registry}"
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
node_from_npm
done_msg "Debian's packages: fallback because $why${HUTCH_NODE_FROM_NPM:+; node $HUTCH_NODE_FROM_NPM from the npm registry}"
