#!/usr/bin/env python3
"""A small HTTP server for hutch's tests: serves one directory on 127.0.0.1 with Range
support, logs every request as a JSON line, and can misbehave on purpose (drop the connection
part-way, ignore Range) so that the download code's recovery paths are tested.

Usage: http-test-server.py --root DIR --port-file FILE [--log FILE] [--drop-after N]
                           [--ignore-range]

The port (chosen by the kernel) is written to --port-file once the server listens; the test
waits for that file.
"""

import argparse
import http.server
import json
import os
import re
import socketserver
import sys
import threading
import time


class Handler(http.server.BaseHTTPRequestHandler):
    # HTTP/1.0: one request per connection, so a dropped connection is unambiguous.
    protocol_version = "HTTP/1.0"

    def log_message(self, fmt, *args):
        pass

    def _log(self, status):
        opts = self.server.opts
        if not opts.log:
            return
        entry = {
            "method": self.command,
            "path": self.path,
            "range": self.headers.get("Range"),
            "status": status,
        }
        with self.server.lock, open(opts.log, "a") as f:
            f.write(json.dumps(entry) + "\n")

    def do_HEAD(self):
        self._serve(body=False)

    def do_GET(self):
        self._serve(body=True)

    def _serve(self, body):
        opts = self.server.opts
        rel = self.path.split("?", 1)[0].lstrip("/")
        path = os.path.realpath(os.path.join(opts.root, rel))
        root = os.path.realpath(opts.root)
        if not path.startswith(root + os.sep) or not os.path.isfile(path):
            self._log(404)
            self.send_error(404)
            return
        size = os.path.getsize(path)
        start, end, status = 0, size - 1, 200
        rng = self.headers.get("Range")
        if rng and not opts.ignore_range:
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng.strip())
            if not m:
                self._log(400)
                self.send_error(400)
                return
            start = int(m.group(1))
            if m.group(2):
                end = min(int(m.group(2)), size - 1)
            if start >= size:
                self._log(416)
                self.send_response(416)
                self.send_header("Content-Range", "bytes */%d" % size)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        self._log(status)
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, end, size))
        self.end_headers()
        if not body:
            return
        limit = end - start + 1
        with self.server.lock:
            drop = opts.drop_after is not None and not self.server.dropped
            if drop:
                self.server.dropped = True
        if drop:
            limit = min(limit, opts.drop_after)
        with open(path, "rb") as f:
            f.seek(start)
            while limit > 0:
                chunk = f.read(min(65536, limit))
                if not chunk:
                    break
                self.wfile.write(chunk)
                limit -= len(chunk)
        self.wfile.flush()
        if drop:
            # Close without sending the rest: the client sees a short body.
            self.close_connection = True
            self.connection.shutdown(2)


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True)
    parser.add_argument("--port-file", required=True)
    parser.add_argument("--log")
    parser.add_argument("--drop-after", type=int,
                        help="on the first GET, send only this many body bytes, then close")
    parser.add_argument("--ignore-range", action="store_true",
                        help="answer 200 with the whole file even when Range is asked")
    opts = parser.parse_args()

    # A test that fails kills nobody: leave when the parent (the test) is gone.
    parent = os.getppid()

    def watch_parent():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch_parent, daemon=True).start()

    server = Server(("127.0.0.1", 0), Handler)
    server.opts = opts
    server.lock = threading.Lock()
    server.dropped = False
    tmp = opts.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % server.server_address[1])
    os.rename(tmp, opts.port_file)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
