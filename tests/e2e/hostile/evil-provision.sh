#!/bin/sh
# A hostile guest's hutch-provision, for tests/e2e/security.sh: guest root puts it in place of
# /usr/local/lib/hutch/hutch-provision (kept as hutch-provision.real). At boot ("ready") it
# first attacks the ready channel (evil-ready.py), or, when /var/tmp/evil-poweroff exists,
# writes escape sequences to the console and powers the guest off before it is ready.
if [ "${1:-}" = ready ]; then
  if [ -e /var/tmp/evil-poweroff ]; then
    rm -f /var/tmp/evil-poweroff
    printf 'EVILCONSOLE\033]52;c;ZXZpbA==\007\033[2J\233;2J\302\2332J\302\235\n' >/dev/console
    sync
    echo o >/proc/sysrq-trigger
  fi
  python3 /usr/local/lib/hutch/evil-ready.py "$(cat /var/tmp/evil-flood-mib 2>/dev/null || echo 64)" || true
fi
exec /usr/local/lib/hutch/hutch-provision.real "$@"
