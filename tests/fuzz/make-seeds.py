#!/usr/bin/env python3
"""Writes the seed inputs of each fuzz target into corpus/TARGET/seed-*: the well-formed
cases its parser is for, and the hostile ones the unit tests already know. libFuzzer starts
from them; the unit suite replays them with every input that was found to break a property
(kept as corpus/TARGET/found-*, written by hand from tests/fuzz/run.sh's findings).
Run it again after changing a seed here; it only rewrites seed-* files."""
import base64
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
PH = b"hutch-ph-0123456789abcdef"
OTHER = b"hutch-ph-fedcba9876543210"


def dns_query(name, qtype=1, qclass=1, flags=0x0100, qdcount=1, ident=0x1234):
    out = struct.pack(">HHHHHH", ident, flags, qdcount, 0, 0, 0)
    for label in name.split(b".") if name else []:
        out += bytes([len(label)]) + label
    return out + b"\0" + struct.pack(">HH", qtype, qclass)


def frame(kind, payload):
    return kind + struct.pack(">I", len(payload))[1:] + payload


seeds = {
    "text": [
        b"\x00\x03\x10plain text",
        b"\x01\x05\x40two lines\r\nand a tab\there\n",
        b"\x01\x01\x08\x1b[31mred\x1b[0m \x7f\xc2\x85 \xe2\x80\xae evil \xe2\x81\xa6",
        b"\x00\x02\x05caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xff\xfe \xc0\xaf \xed\xa0\x80",
        b"\x01\x07\x00\r\r\n\n\xe2\x82",
    ],
    "ready": [
        b"\x05STEP 1/3 base\nOK 1 base\nSTEP 2/3 npm\nFAIL 2 npm 1 npm ERR! 404\n"
        b"WARN the mirror is slow\nSTEP 3/3 done\nOK 3 done\nREADY\n",
        b"\x03STEP 1/1 base\nFAIL 1 base 100 E: Unable to locate package x\nFAILED\n",
        b"\x01  READY  \r\n",
        b"\x10" + b"WARN " + b"w" * 5000 + b"\nREADY\n",
        b"\x02" + b"".join(b"STEP %d/99 s%d\nFAIL %d s%d 1 r\n" % (i, i, i, i) for i in range(1, 80))
        + b"READY\n",
        b"\x07FAIL 1 \x1b[2J\xe2\x80\xae 9 \xff\xfe\nSTEP 2/2 x\nREADY\n",
        b"\x00",
    ],
    "broker-head": [
        b"GET /v1/models HTTP/1.1\r\nHost: api.example.com\r\nAuthorization: Bearer " + PH
        + b"\r\nConnection: keep-alive\r\nAccept-Encoding: gzip\r\n\r\n",
        b"POST /v1/x HTTP/1.1\r\nHost: api.example.com:443\r\nAuthorization: Basic "
        + base64.b64encode(b"user:" + PH) + b"\r\n\r\n",
        b"GET /?key=" + PH + b" HTTP/1.1\r\nHost: api.example.com\r\nX-Api-Key: " + PH
        + b"\r\nX-Echo: " + PH + b"\r\nUser-Agent: " + OTHER + b"\r\n\r\n",
        b"GET /ws HTTP/1.1\r\nHost: api.example.com\r\nConnection: Upgrade\r\nUpgrade: websocket"
        b"\r\nPrivate-Token: " + PH + b"\r\n\r\n",
        b"GET http://evil.example/ HTTP/1.1\r\nHost: api.example.com\r\nHost: evil.example\r\n"
        b"Api-Key: " + PH + b"\r\n\r\n",
        b"GET / HTTP/1.1\nHost: api.example.com\r\nAuthorization: " + PH + b"\r\n\r\n",
        b"get / HTTP/1.1\r\n\r\n",
        b"\r\n\r\n",
    ],
    "broker-answer": [
        b"\x03HTTP/1.1 400 Bad\r\n\r\nyou sent: Bearer secret-one\n",
        b"\x00sec sec- secret- secret-on sec-tw not-sent",
        b"\x0bxx sec-two yy secret-one",
        b"\x05the end is secret-o",
        b"\x07" + b"a" * 100,
        # the value base64-encoded in an echoed "Authorization: Basic", at each alignment
        b"\x02you sent: Basic " + base64.b64encode(b"x:secret-one") + b"\n",
        b"\x09you sent: Basic " + base64.b64encode(b"xy:secret-one") + b"\n",
        b"\x00you sent: Basic " + base64.b64encode(b"xyz:secret-one"),
    ],
    "dns": [
        b"\xff" + dns_query(b"example.com"),
        b"\xff" + dns_query(b"api.example.com", qtype=28),
        b"\xff" + dns_query(b"Mixed-Case_host.example"),
        b"\xff" + dns_query(b"example.com")[:12] + b"\xc0\x0c\x00\x01\x00\x01",
        b"\xff" + dns_query(b"a" * 63 + b"." + b"b" * 63 + b"." + b"c" * 63 + b"." + b"d" * 61),
        b"\xff" + dns_query(b"example.com", qdcount=2),
        b"\xff" + dns_query(b"example.com", flags=0x8100),
        b"\x20" + dns_query(b"example.com"),
        b"\x00" + dns_query(b"x"),
        b"\xff" + dns_query(b"bad\x00name.example"),
        b"\xff" + dns_query(b""),
        b"\xff\x12\x34",
    ],
    "hostpath-name": [b"file.txt", b".", b"..", b"a/b", b"", b"x\x00y", b"\x1b[31mred\\",
                      b"...", b"n" * 300],
    "profile": [
        b"\x00name: dev\ncpus: 2\nmemory: 2GiB\ndisk: 20GiB\nshares:\n  - host: ~/src\n"
        b"    guest: ~/src\n    mode: rw\nports:\n  - 8080:80\nsteps:\n  - name: hello\n"
        b"    run: echo hi\n",
        b"\x00name: x\nbase: default\negress:\n  mode: allowlist\n  allow: [example.com:443]\n",
        b"\x00name: [unclosed\n",
        b"\x00cpus: many\n",
        b"\x00&a [*a, *a]\n",
        b"\x01127.0.0.1:8080:80",
        b"\x01[::1]:3000-3005:3000-3005/udp",
        b"\x0199999:1",
        b"\x02~/src:/home/dev/src:ro,cache=always",
        b"\x02relative:/x",
    ],
    "frame": [
        frame(b"x", b"echo hello") + frame(b"i", b"input") + frame(b"e", b""),
        frame(b"o", b"partial")[:6],
        b"x\xff\xff\xff",
        b"z\x10\x00\x00" + b"a" * 16,
    ],
}

for target, inputs in seeds.items():
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    for name in os.listdir(d):
        if name.startswith("seed-"):
            os.unlink(os.path.join(d, name))
    for i, data in enumerate(inputs):
        with open(os.path.join(d, "seed-%02d" % i), "wb") as f:
            f.write(data)
