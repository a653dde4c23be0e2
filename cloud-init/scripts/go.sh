#!/bin/sh
# hutch provisioning step: Go from the official tarball (as root), into /usr/local/go.
#   HUTCH_GO_VERSION   the version (default 1.22.5), with or without the "go" prefix
#   HUTCH_GO_SHA256    the tarball's sha256, for a version not pinned below
# The checksum is pinned here for the default version; for any other it comes from go.dev's
# JSON release list (over https), unless HUTCH_GO_SHA256 gives it. A tarball that does not
# match is never unpacked. Running again with the same version changes nothing.
set -u
NAME=go
log() { printf 'hutch-%s: %s\n' "$NAME" "$*"; }
die() { printf 'hutch-%s: error: %s\n' "$NAME" "$*" >&2; exit 1; }
# shellcheck source=/dev/null
[ -r /etc/profile.d/hutch-env.sh ] && . /etc/profile.d/hutch-env.sh
[ "$(id -u)" = 0 ] || die "must run as root (as: root)"
command -v curl >/dev/null 2>&1 || die "curl is not installed (the base-packages step installs it)"

version=${HUTCH_GO_VERSION:-1.22.5}
version=${version#go}
case "$(uname -m)" in
  x86_64) arch=amd64 ;;
  aarch64) arch=arm64 ;;
  *) die "no Go tarball for $(uname -m)" ;;
esac
file=go$version.linux-$arch.tar.gz
url=https://go.dev/dl/$file
prefix=/usr/local

if [ -x $prefix/go/bin/go ] &&
  [ "$($prefix/go/bin/go env GOVERSION 2>/dev/null)" = "go$version" ]; then
  log "go$version is already in $prefix/go"
  exit 0
fi

# Published on https://go.dev/dl/ (also in its ?mode=json list).
pinned() {
  case "$1" in
    go1.22.5.linux-amd64.tar.gz) echo 904b924d435eaea086515bc63235b192ea441bd8c9b198c507e85009e6e4c7f0 ;;
    go1.22.5.linux-arm64.tar.gz) echo 8d21325bfcf431be3660527c1a39d3d9ad71535fabdf5041c826e44e31642b5a ;;
  esac
}

sha=${HUTCH_GO_SHA256:-$(pinned "$file")}
if [ -z "$sha" ]; then
  command -v jq >/dev/null 2>&1 || die "jq is needed to read go.dev's release list"
  list_url='https://go.dev/dl/?mode=json&include=all'
  log "looking up the sha256 of $file in $list_url"
  list=$(curl -fsS --connect-timeout 10 --max-time 120 --retry 2 "$list_url" 2>&1) ||
    die "cannot fetch go.dev's release list ($list_url): $(printf '%s\n' "$list" | tail -n 1)"
  sha=$(printf '%s' "$list" | jq -r --arg f "$file" '.[].files[] | select(.filename == $f) | .sha256' | head -n 1)
  [ -n "$sha" ] || die "go.dev lists no $file: is $version a Go release?"
fi
case "$sha" in
  *[!0-9a-f]* | '') die "'$sha' is not a sha256 (HUTCH_GO_SHA256)" ;;
esac
[ ${#sha} = 64 ] || die "'$sha' is not a sha256 (HUTCH_GO_SHA256)"

work=$(mktemp -d) || die "mktemp failed"
trap 'rm -rf "$work"' EXIT
log "downloading $url"
err=$(curl -fsSL --connect-timeout 10 --max-time 900 --retry 2 -o "$work/$file" "$url" 2>&1) ||
  die "cannot download $url (go.dev unreachable?): $(printf '%s\n' "$err" | tail -n 1)"
got=$(sha256sum "$work/$file" | cut -d' ' -f1)
[ "$got" = "$sha" ] || die "$file has sha256 $got, expected $sha: refused"
log "sha256 verified: $sha"
mkdir "$work/x" || die "mkdir failed"
tar -C "$work/x" -xzf "$work/$file" || die "cannot unpack $file"
[ -x "$work/x/go/bin/go" ] || die "$file has no go/bin/go"
rm -rf "$prefix/go.old"
[ ! -e "$prefix/go" ] || mv "$prefix/go" "$prefix/go.old" || die "cannot move the old $prefix/go"
mv "$work/x/go" "$prefix/go" || die "cannot install $prefix/go"
rm -rf "$prefix/go.old"
log "installed $($prefix/go/bin/go version) in $prefix/go (on PATH through /etc/profile.d/hutch-shell.sh)"
