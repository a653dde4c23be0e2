#!/usr/bin/python3
# A hostile guest's sftp-server, for tests/e2e/security.sh: guest root installs it in place of
# /usr/lib/openssh/sftp-server. It relays every packet to the real server and lies in its
# NAME answers as /var/tmp/evil-sftp.mode says, one directive a line:
#   realpath PATH   every REALPATH is answered with PATH (e.g. "/home/dev/..")
#   readdir NAME    every READDIR answer also lists NAME (a regular file), e.g. "..", "a/b"
#   readdir-dir NAME  the same as a directory
#   flood MIB       after the version, MIB MiB of replies to a request that was never made
#                   (which libssh2 keeps until the session ends), then the real answers
# Only the SFTP version 3 packets hutch's client (libssh2) sends matter here.
import os
import struct
import subprocess
import sys
import threading

REAL = "/usr/lib/openssh/sftp-server.real"
FXP_VERSION, FXP_READDIR, FXP_REALPATH, FXP_NAME, FXP_DATA = 2, 12, 16, 104, 103
ATTR_PERMISSIONS = 0x4


def directives():
    try:
        with open("/var/tmp/evil-sftp.mode", "rb") as f:
            lines = f.read().split(b"\n")
    except OSError:
        return []
    out = []
    for line in lines:
        if b" " in line:
            key, value = line.split(b" ", 1)
            out.append((key.decode(), value.replace(b"\\0", b"\0")))
    return out


def read_exact(f, n):
    data = b""
    while len(data) < n:
        chunk = f.read(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def read_packet(f):
    header = read_exact(f, 4)
    if header is None:
        return None
    return read_exact(f, struct.unpack(">I", header)[0])


def sftp_string(b):
    return struct.pack(">I", len(b)) + b


def entry(name, mode):
    return sftp_string(name) + sftp_string(name) + struct.pack(">II", ATTR_PERMISSIONS, mode)


def write_packet(body):
    sys.stdout.buffer.write(struct.pack(">I", len(body)) + body)
    sys.stdout.buffer.flush()


server = subprocess.Popen([REAL], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
pending = {}
lock = threading.Lock()


def client_to_server():
    while True:
        body = read_packet(sys.stdin.buffer)
        if body is None:
            break
        if body[0] in (FXP_READDIR, FXP_REALPATH):
            with lock:
                pending[body[1:5]] = body[0]
        server.stdin.write(struct.pack(">I", len(body)) + body)
        server.stdin.flush()
    server.stdin.close()


threading.Thread(target=client_to_server, daemon=True).start()
rules = directives()
while True:
    body = read_packet(server.stdout)
    if body is None:
        break
    if body[0] == FXP_NAME:
        request_id = body[1:5]
        with lock:
            kind = pending.pop(request_id, None)
        lies = [v for k, v in rules if k == "realpath"]
        if kind == FXP_REALPATH and lies:
            body = bytes([FXP_NAME]) + request_id + struct.pack(">I", 1) + entry(lies[0], 0o40755)
        elif kind == FXP_READDIR:
            extra = [entry(v, 0o100644) for k, v in rules if k == "readdir"]
            extra += [entry(v, 0o40755) for k, v in rules if k == "readdir-dir"]
            if extra:
                count = struct.unpack(">I", body[5:9])[0] + len(extra)
                body = bytes([FXP_NAME]) + request_id + struct.pack(">I", count) + body[9:] + b"".join(extra)
    write_packet(body)
    if body[0] == FXP_VERSION:
        payload = b"x" * 65536
        unasked = struct.pack(">BII", FXP_DATA, 0xFFFFFFF0, len(payload)) + payload
        try:
            for mib in [int(v) for k, v in rules if k == "flood"]:
                for _ in range(mib * 16):
                    write_packet(unasked)
        except BrokenPipeError:
            break
server.wait()
