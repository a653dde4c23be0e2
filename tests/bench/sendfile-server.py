# A minimal HTTP server for tests/bench/port.sh: answers every request with the file named on
# the command line, sent with sendfile(2), one connection at a time. It stands for a server
# that does not copy the file through its own memory (nginx, node's streams on Linux), where
# python3 -m http.server reads and writes every 64 KiB in the interpreter: under TCG that copy
# in the guest is most of a download's time, the same with either network path.
import os
import socket
import sys

path, port = sys.argv[1], int(sys.argv[2])
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("0.0.0.0", port))
listener.listen(8)
while True:
    conn, _ = listener.accept()
    with conn:
        request = b""
        while b"\r\n\r\n" not in request and len(request) < 65536:
            data = conn.recv(4096)
            if not data:
                break
            request += data
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\n"
                         b"Content-Length: %d\r\n\r\n" % size)
            try:
                conn.sendfile(f)
            except OSError:
                pass
