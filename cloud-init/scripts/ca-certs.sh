#!/bin/sh
# hutch provisioning step: extra certificate authorities for the guest (as root), for networks
# whose HTTPS goes through an intercepting proxy (a company's, a sandbox's egress filter).
#   HUTCH_CA_CERTS   base64 of one or more PEM certificates (one line: base64 -w0 ca.pem)
# They are added to the system store (/usr/local/share/ca-certificates and the bundle
# /etc/ssl/certs/ca-certificates.crt that curl, apt and git read), and Node.js, which does not
# read that store, is pointed at it (NODE_EXTRA_CA_CERTS in /etc/profile.d/hutch-ca.sh).
# A certificate authority is public: no secret goes through here. Without HUTCH_CA_CERTS the
# step does nothing. Running again changes nothing.
set -u
NAME=ca-certs
log() { printf 'hutch-%s: %s\n' "$NAME" "$*"; }
die() { printf 'hutch-%s: error: %s\n' "$NAME" "$*" >&2; exit 1; }
# shellcheck source=/dev/null
[ -r /etc/profile.d/hutch-env.sh ] && . /etc/profile.d/hutch-env.sh
[ "$(id -u)" = 0 ] || die "must run as root (as: root)"

if [ -z "${HUTCH_CA_CERTS:-}" ]; then
  log "HUTCH_CA_CERTS is not set: no extra certificate authorities"
  exit 0
fi
[ -f /etc/ssl/certs/ca-certificates.crt ] ||
  die "/etc/ssl/certs/ca-certificates.crt is missing (package ca-certificates)"
dir=/usr/local/share/ca-certificates/hutch
bundle=/etc/ssl/certs/ca-certificates.crt
mkdir -p "$dir" || die "cannot create $dir"
tmp=$(mktemp -d) || die "mktemp failed"
trap 'rm -rf "$tmp"' EXIT
printf '%s' "$HUTCH_CA_CERTS" | base64 -d >"$tmp/all.pem" 2>/dev/null ||
  die "HUTCH_CA_CERTS is not base64 (use: base64 -w0 ca.pem)"
# One file per certificate: update-ca-certificates takes the first of a file only.
awk -v dir="$tmp" '/-----BEGIN CERTIFICATE-----/ { n++; f = sprintf("%s/%02d.crt", dir, n) }
  f { print > f } /-----END CERTIFICATE-----/ { close(f); f = "" }' "$tmp/all.pem"
count=$(find "$tmp" -name '*.crt' | wc -l)
[ "$count" -gt 0 ] || die "HUTCH_CA_CERTS holds no PEM certificate"
rm -f "$dir"/*.crt
for f in "$tmp"/*.crt; do
  if command -v openssl >/dev/null 2>&1; then
    subject=$(openssl x509 -noout -subject -in "$f" 2>/dev/null) ||
      die "certificate $(basename "$f" .crt) of HUTCH_CA_CERTS does not parse"
    log "adding $subject"
  fi
  install -m 0644 "$f" "$dir/$(basename "$f")" || die "cannot install $f"
done
# update-ca-certificates would rehash the whole store (5 minutes under TCG): append to the
# bundle instead. The copies above keep them in the bundle when it is next regenerated.
added=0
for f in "$dir"/*.crt; do
  key=$(sed -n 2p "$f")
  if ! grep -qxF -e "$key" "$bundle" 2>/dev/null; then
    cat "$f" >>"$bundle" || die "cannot append to $bundle"
    added=$((added + 1))
  fi
done
log "$added new certificate(s) appended to $bundle"
printf '%s\n' "# Written by hutch (cloud-init/scripts/ca-certs.sh): Node.js does not read the system store." \
  "export NODE_EXTRA_CA_CERTS=$bundle" >/etc/profile.d/hutch-ca.sh || die "cannot write /etc/profile.d/hutch-ca.sh"
log "$count certificate(s) trusted; NODE_EXTRA_CA_CERTS set for login shells"
