#!/usr/bin/python3
# A hostile SFTP server for the unit test ssh/sftp-flood (run by sshd as the key's forced
# command): after the version it sends COUNT replies of 64 KiB to a request that was never
# made, which libssh2 keeps until the session ends, then answers every request "no such
# file". Usage: flood-sftp-server.py COUNT
import struct
import sys

inp, out = sys.stdin.buffer, sys.stdout.buffer


def read_exact(n):
    data = b""
    while len(data) < n:
        chunk = inp.read(n - len(data))
        if not chunk:
            sys.exit(0)
        data += chunk
    return data


def read_packet():
    return read_exact(struct.unpack(">I", read_exact(4))[0])


FXP_VERSION, FXP_STATUS, FXP_DATA, FX_NO_SUCH_FILE = 2, 101, 103, 2
read_packet()  # INIT
out.write(struct.pack(">IBI", 5, FXP_VERSION, 3))
payload = b"x" * 65536
unasked = struct.pack(">IBII", 1 + 4 + 4 + len(payload), FXP_DATA, 0xFFFFFFF0, len(payload)) + payload
try:
    for _ in range(int(sys.argv[1])):
        out.write(unasked)
    out.flush()
    while True:
        request = read_packet()
        message = b"no such file"
        body = struct.pack(">BIII", FXP_STATUS, struct.unpack(">I", request[1:5])[0], FX_NO_SUCH_FILE, len(message)) + message + struct.pack(">I", 0)
        out.write(struct.pack(">I", len(body)) + body)
        out.flush()
except BrokenPipeError:
    pass
