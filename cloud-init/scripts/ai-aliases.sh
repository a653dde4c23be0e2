#!/bin/sh
# hutch provisioning step: the AI CLIs' "skip permissions" aliases (as root), only when the
# profile's env says HUTCH_AI_SKIP_PERMISSIONS=1; otherwise makes sure they are absent.
#   claude-yolo   claude --dangerously-skip-permissions
#   gemini-yolo   gemini --yolo
#   codex-yolo    codex --dangerously-bypass-approvals-and-sandbox
# These let an agent run any command without asking. That is reasonable only inside a
# disposable VM that holds nothing of yours but what its shares expose; never on the host.
set -u
NAME=ai-aliases
log() { printf 'hutch-%s: %s\n' "$NAME" "$*"; }
die() { printf 'hutch-%s: error: %s\n' "$NAME" "$*" >&2; exit 1; }
# shellcheck source=/dev/null
[ -r /etc/profile.d/hutch-env.sh ] && . /etc/profile.d/hutch-env.sh
[ "$(id -u)" = 0 ] || die "must run as root (as: root)"

target=/etc/profile.d/hutch-ai-aliases.sh
if [ "${HUTCH_AI_SKIP_PERMISSIONS:-0}" != 1 ]; then
  rm -f "$target"
  log "HUTCH_AI_SKIP_PERMISSIONS is not 1: no skip-permissions aliases"
  exit 0
fi
cat >"$target.tmp" <<'ALIASES' || die "cannot write $target"
# Written by hutch because the profile sets HUTCH_AI_SKIP_PERMISSIONS=1. The agents run any
# command without asking: reasonable only inside this disposable VM.
case $- in *i*) ;; *) return 0 2>/dev/null || exit 0 ;; esac
alias claude-yolo='claude --dangerously-skip-permissions'
alias gemini-yolo='gemini --yolo'
alias codex-yolo='codex --dangerously-bypass-approvals-and-sandbox'
ALIASES
chmod 0644 "$target.tmp" || die "chmod failed"
mv "$target.tmp" "$target" || die "cannot install $target"
log "wrote $target: claude-yolo, gemini-yolo, codex-yolo"
