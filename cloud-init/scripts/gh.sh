#!/bin/sh
# hutch provisioning step: GitHub CLI from its apt repository, cli.github.com (as root), or,
# when that is unreachable, Debian's own (older) gh package.
# hutch never authenticates it: run `gh auth login` in the VM (docs/ai-tools.md).
# Running again changes nothing.
set -u
NAME=gh
log() { printf 'hutch-%s: %s\n' "$NAME" "$*"; }
die() { printf 'hutch-%s: error: %s\n' "$NAME" "$*" >&2; exit 1; }
# shellcheck source=/dev/null
[ -r /etc/profile.d/hutch-env.sh ] && . /etc/profile.d/hutch-env.sh
[ "$(id -u)" = 0 ] || die "must run as root (as: root)"
command -v curl >/dev/null 2>&1 || die "curl is not installed (the base-packages step installs it)"

if command -v gh >/dev/null 2>&1; then
  log "already installed: $(gh --version | head -n 1)"
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt="apt-get -o DPkg::Lock::Timeout=600 -o Acquire::http::Timeout=30 -o Acquire::Retries=2"
keyring=/etc/apt/keyrings/githubcli-archive-keyring.gpg
list=/etc/apt/sources.list.d/github-cli.list
url=https://cli.github.com/packages/githubcli-archive-keyring.gpg
mkdir -p /etc/apt/keyrings
# Debian's gh: older, but from the mirror every VM reaches
from_debian() {
  log "cli.github.com is unreachable ($1): falling back to Debian's gh package"
  # shellcheck disable=SC2086 # apt's options
  $apt install -y gh || die "cannot install gh: cli.github.com unreachable ($1), and Debian's gh package failed (see above)"
  log "installed: $(gh --version | head -n 1) (Debian's package)"
  exit 0
}
log "fetching the GitHub CLI signing key from $url"
err=$(curl -fsSL --connect-timeout 10 --max-time 60 --retry 2 -o "$keyring.tmp" "$url" 2>&1) ||
  { rm -f "$keyring.tmp"; from_debian "$(printf '%s\n' "$err" | tail -n 1)"; }
mv "$keyring.tmp" "$keyring" || die "cannot install $keyring"
chmod 0644 "$keyring"
echo "deb [arch=$(dpkg --print-architecture) signed-by=$keyring] https://cli.github.com/packages stable main" >"$list"
log "added $list"
# shellcheck disable=SC2086 # apt's options
if ! { $apt update && $apt install -y gh; }; then
  # A dead repository would make every later apt-get update fail.
  rm -f "$list"
  die "installing gh from cli.github.com failed (see above); repository removed"
fi
log "installed: $(gh --version | head -n 1)"
