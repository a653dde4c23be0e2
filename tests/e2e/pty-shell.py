#!/usr/bin/env python3
"""Runs `hutch shell VM -- CMD` on a pseudo-terminal of 30x100, as a user's terminal would:
prints `stty size` from the guest, resizes the terminal to 50x132 (the kernel sends SIGWINCH),
types a line, then Ctrl-C. Prints what the guest printed and hutch's exit status.

usage: pty-shell.py HUTCH VM"""
import fcntl
import os
import select
import struct
import sys
import termios
import time

hutch, vm = sys.argv[1], sys.argv[2]
script = 'stty size; read x; stty size; echo "got:$x"; sleep 100; echo not-reached'


def set_size(fd, rows, cols):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


master, slave = os.openpty()
set_size(slave, 30, 100)
pid = os.fork()
if pid == 0:
    os.close(master)
    os.setsid()
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    os.execvp(hutch, [hutch, "shell", vm, "--", "sh", "-c", script])
os.close(slave)

output = b""


def read_until(needle, timeout):
    global output
    deadline = time.time() + timeout
    while needle not in output and time.time() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                data = os.read(master, 4096)
            except OSError:
                return False
            if not data:
                return False
            output += data
    return needle in output


ok = read_until(b"30 100", 60)
if ok:
    set_size(master, 50, 132)
    time.sleep(1)  # the resize reaches the guest's PTY before the line does
    os.write(master, b"hello\r")
    ok = read_until(b"got:hello", 30)
if ok:
    time.sleep(1)
    os.write(master, b"\x03")
read_until(b"not-reached", 10)
_, status = os.waitpid(pid, 0)
sys.stdout.write(output.decode("utf-8", "replace").replace("\r", ""))
print("\nexit=%d" % (os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1))
