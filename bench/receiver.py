"""A minimal OTLP/HTTP receiver for benchmarks: reads each request, answers 200 at once, counts.

It stands for a native receiver such as the Datadog Lambda Extension, which
answers in microseconds; the project's collector (Python, asyncio, validating
and storing every request) answers later, and that difference is part of the
warm figures measured against it.

    python -m bench.receiver PORT [DELAY_MS]   # "listening"; on SIGTERM: "requests N bytes B"

With ``DELAY_MS`` it waits that long before each answer: a receiver that
decodes or forwards before it answers.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import sys
import threading
import time

_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n"
counts = {"requests": 0, "bytes": 0}
delay_s = 0.0


def _connection(conn: socket.socket) -> None:
    # An environment killed mid-export (cold-start rounds stop them) resets its connection.
    with contextlib.suppress(ConnectionResetError, BrokenPipeError):
        _serve(conn)


def _serve(conn: socket.socket) -> None:
    buffer = b""
    with conn:
        while True:
            while b"\r\n\r\n" not in buffer:
                data = conn.recv(65536)
                if not data:
                    return
                buffer += data
            head, _, rest = buffer.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            while len(rest) < length:
                data = conn.recv(65536)
                if not data:
                    return
                rest += data
            buffer = rest[length:]
            if delay_s:
                time.sleep(delay_s)
            conn.sendall(_ANSWER)
            counts["requests"] += 1
            counts["bytes"] += length


def main() -> int:
    global delay_s
    if len(sys.argv) > 2:
        delay_s = int(sys.argv[2]) / 1000
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", int(sys.argv[1])))
    listener.listen(128)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def accept() -> None:
        while True:
            conn, _ = listener.accept()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=_connection, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    print("listening", flush=True)
    stop.wait()
    print(f"requests {counts['requests']} bytes {counts['bytes']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
