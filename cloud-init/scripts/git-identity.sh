#!/bin/sh
# hutch provisioning step: the guest user's git identity (as: user), from the profile's env:
#   HUTCH_GIT_NAME, HUTCH_GIT_EMAIL
# Nothing is copied from the host: without these settings the step does nothing and says so.
set -u
NAME=git-identity
log() { printf 'hutch-%s: %s\n' "$NAME" "$*"; }
die() { printf 'hutch-%s: error: %s\n' "$NAME" "$*" >&2; exit 1; }
# shellcheck source=/dev/null
[ -r /etc/profile.d/hutch-env.sh ] && . /etc/profile.d/hutch-env.sh

name=${HUTCH_GIT_NAME:-}
email=${HUTCH_GIT_EMAIL:-}
if [ -z "$name" ] && [ -z "$email" ]; then
  log "HUTCH_GIT_NAME and HUTCH_GIT_EMAIL are not set in the profile's env; no git identity set"
  exit 0
fi
command -v git >/dev/null 2>&1 || die "git is not installed (the base-packages step installs it)"
[ "$(id -u)" != 0 ] || log "warning: running as root; the identity goes to root's ~/.gitconfig"
if [ -n "$name" ]; then
  git config --global user.name "$name" || die "git config user.name failed"
  log "user.name = $name"
fi
if [ -n "$email" ]; then
  git config --global user.email "$email" || die "git config user.email failed"
  log "user.email = $email"
fi
git config --global init.defaultBranch >/dev/null 2>&1 || git config --global init.defaultBranch main
