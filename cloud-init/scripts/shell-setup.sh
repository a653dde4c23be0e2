#!/bin/sh
# hutch provisioning step: the sandbox's shell setup (as root). Writes
# /etc/profile.d/hutch-shell.sh (login shells) and makes /etc/bash.bashrc source it too
# (interactive shells that are not login shells: screen windows, terminals in editors).
# Rewritten whole on every run, so running it again changes nothing.
set -u
NAME=shell-setup
log() { printf 'hutch-%s: %s\n' "$NAME" "$*"; }
die() { printf 'hutch-%s: error: %s\n' "$NAME" "$*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (as: root)"

target=/etc/profile.d/hutch-shell.sh
tmp=$target.tmp.$$
cat >"$tmp" <<'SHELL' || die "cannot write $tmp"
# Written by hutch (cloud-init/scripts/shell-setup.sh); rewritten when provisioning runs again.
# Profile settings (HUTCH_* and others) come from /etc/profile.d/hutch-env.sh.

# PATH: Go's toolchain and binaries, and the user's own (npm's global prefix, pip --user).
# Each directory once, however often this file is sourced.
for hutch_dir in /usr/local/go/bin "$HOME/go/bin" "$HOME/.local/bin"; do
  case ":$PATH:" in
    *":$hutch_dir:"*) ;;
    *) PATH=$hutch_dir:$PATH ;;
  esac
done
unset hutch_dir
export PATH

# The rest is for interactive shells only.
case $- in *i*) ;; *) return 0 2>/dev/null || exit 0 ;; esac

export EDITOR=${EDITOR:-vim} VISUAL=${VISUAL:-${EDITOR:-vim}} PAGER=${PAGER:-less}

if [ -n "${BASH_VERSION:-}" ]; then
  # Long history, shared between the shells of a session, with times.
  HISTSIZE=100000
  HISTFILESIZE=200000
  HISTCONTROL=ignoreboth
  HISTTIMEFORMAT='%F %T '
  shopt -s histappend checkwinsize
  case "${PROMPT_COMMAND:-}" in
    *'history -a'*) ;;
    *) PROMPT_COMMAND="history -a${PROMPT_COMMAND:+; $PROMPT_COMMAND}" ;;
  esac
fi

# System
alias ls='ls --color=auto'
alias ll='ls -alhF'
alias la='ls -A'
alias l='ls -CF'
alias ..='cd ..'
alias ...='cd ../..'
alias grep='grep --color=auto'
alias df='df -h'
alias du1='du -h --max-depth=1'
alias free='free -h'
alias ports='ss -tulpn'
alias psg='ps aux | grep -v grep | grep -i'
alias update='sudo apt-get update && sudo apt-get upgrade'
alias syslog='sudo journalctl -f | ccze -A'

# Git
alias g='git'
alias gs='git status'
alias ga='git add'
alias gc='git commit'
alias gd='git diff'
alias gds='git diff --staged'
alias gl='git log --oneline --graph --decorate -20'
alias gp='git push'
alias gpl='git pull'
alias gco='git checkout'
alias gb='git branch'
SHELL
chmod 0644 "$tmp" || die "chmod $tmp failed"
mv "$tmp" "$target" || die "cannot install $target"
log "wrote $target"

# Interactive shells that are not login shells read /etc/bash.bashrc, then ~/.bashrc; Debian's
# ~/.bashrc (from /etc/skel) then sets HISTSIZE=1000 and HISTFILESIZE=2000. So the setup is
# sourced from /etc/bash.bashrc, and again at the end of ~/.bashrc, for the guest user and
# future users.
# shellcheck source=/dev/null
[ -r /etc/hutch/provision.conf ] && . /etc/hutch/provision.conf
home=
if [ -n "${HUTCH_USER:-}" ]; then
  home=$(getent passwd "$HUTCH_USER" | cut -d: -f6)
fi
marker='# hutch: the shell setup for interactive shells (after the defaults above)'
for rc in /etc/bash.bashrc /etc/skel/.bashrc ${home:+"$home/.bashrc"}; do
  [ -f "$rc" ] || continue
  grep -qF "$marker" "$rc" && continue
  printf '\n%s\n[ -r %s ] && . %s\n' "$marker" "$target" "$target" >>"$rc" ||
    die "cannot append to $rc"
  log "$rc sources $target"
done

# Check it: the file must parse, and a login shell must get the PATH.
sh -n "$target" || die "$target does not parse"
out=$(env -i HOME=/nonexistent PATH=/usr/bin:/bin sh -c ". $target; echo \$PATH") ||
  die "sourcing $target failed"
for dir in /usr/local/go/bin /nonexistent/go/bin /nonexistent/.local/bin; do
  case ":$out:" in
    *":$dir:"*) ;;
    *) die "$target did not put $dir on PATH (got $out)" ;;
  esac
done
log "login PATH (for a user whose home is /nonexistent): $out"
if [ -n "$home" ] && [ -f "$home/.bashrc" ]; then
  # shellcheck disable=SC2016 # expanded by the user's shell
  size=$(runuser -u "$HUTCH_USER" -- env -i HOME="$home" PATH=/usr/bin:/bin TERM=dumb \
    bash -ic 'echo "$HISTSIZE"' 2>/dev/null </dev/null | tail -n 1)
  [ "$size" = 100000 ] || die "an interactive shell of $HUTCH_USER has HISTSIZE=$size, not 100000"
  log "an interactive shell of $HUTCH_USER has HISTSIZE=$size"
fi
