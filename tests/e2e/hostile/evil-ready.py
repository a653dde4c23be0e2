#!/usr/bin/python3
# A hostile guest's ready channel, for tests/e2e/security.sh: guest root runs it at boot
# before hutch's own "ready" report. It sends hutch's line protocol with terminal escape
# sequences in a step name, a failure reason and a warning, a line longer than hutch keeps
# (that ends like a FAILED line once its first 4 KiB are cut off), and a flood of failed
# optional steps (FLOOD_MIB, argv[1]), then returns so that the real report says READY.
import sys

CHANNEL = "/dev/virtio-ports/org.hutch.ready.0"
flood_mib = int(sys.argv[1]) if len(sys.argv) > 1 else 64
# OSC 52 (set the clipboard), a screen clear as C0 CSI, raw C1 CSI and UTF-8 C1 CSI/OSC, an
# invalid UTF-8 byte: none of it may reach a terminal as it is.
ESC = b"\x1b]52;c;ZXZpbA==\x07\x1b[2J\x9b2J\xc2\x9b31m\xc2\x9d0;pwned\xc2\x9c\xff"
with open(CHANNEL, "wb", buffering=0) as ch:
    ch.write(b"STEP 1/2 EVILSTEP" + ESC + b"\n")
    ch.write(b"FAIL 1 evil" + ESC + b"name 1 EVILREASON" + ESC + b"\n")
    ch.write(b"WARN EVILWARN" + ESC + b"\n")
    ch.write(b"STEP 2/2 after\n")
    # Cut after 4 KiB, what is left would read "FAILED" once stripped of blanks.
    ch.write(b" " * 9000 + b"FAILED\n")
    block = b"".join(b"FAIL %d flood%d 1 %s\nSTEP %d/9 flood\n" % (i, i, b"R" * 3000, i)
                     for i in range(300))
    sent = 0
    while sent < flood_mib << 20:
        ch.write(block)
        sent += len(block)
    ch.write(b"FAIL 99 last 1 after the flood\n")
