"""CPU per request of the local servers' HTTP layer: llhttp (httptools) against the
hand-written parser it replaced, in one run.

    python -m bench.httpserver [--requests 5000] [--rounds 7]

Each variant serves, in its own process (on uvloop, as the local servers
run), ``--requests`` keep-alive POSTs of an OTLP-sized body (1 KB) and the
same for a browser-like Function URL request; the figure is the server
process's CPU per request (user + system, all threads, as the process reads
it with ``time.process_time_ns``), median of the rounds, the variants
alternating.  The old parser is taken from git history (``OLD_REVISION``).
"""

from __future__ import annotations

import argparse
import importlib.util
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: The last commit with the hand-written parser.
OLD_REVISION = "fd80264"

_SERVER = """
import asyncio, os, sys
sys.path.insert(0, {root!r})
import importlib.util
spec = importlib.util.spec_from_file_location("server_under_test", {module!r})
mod = importlib.util.module_from_spec(spec)
sys.modules["server_under_test"] = mod
spec.loader.exec_module(mod)

import time

def handle(request):
    if request.path == "/cpu":  # the server's own CPU time so far, in ns
        return mod.HttpResponse(200, str(time.process_time_ns()).encode())
    return mod.HttpResponse(200, b"{{}}", [("Content-Type", "application/json")])

async def main():
    server = await mod.start(handle, "127.0.0.1", 0)
    print(mod.bound_port(server), flush=True)
    await asyncio.Event().wait()

mod.run(main())
"""


def _post(target: str, headers: list[str], body: bytes) -> bytes:
    head = [f"POST {target} HTTP/1.1", *headers, f"Content-Length: {len(body)}", "", ""]
    return "\r\n".join(head).encode("latin-1") + body


#: The requests measured: what the functions send the collector, and what a
#: browser-like client sends a Function URL (more header lines, a JSON body).
SHAPES = {
    "OTLP export (3 headers, 1 KB)": _post(
        "/v1/traces", ["Host: x", "Content-Type: application/x-protobuf"], b"x" * 1024
    ),
    "Function URL POST (8 headers, 59 B)": _post(
        "/todos",
        [
            "Host: localhost:8080",
            "User-Agent: python-httpx/0.28",
            "Accept: */*",
            "Accept-Encoding: gzip, deflate",
            "Connection: keep-alive",
            "Content-Type: application/json",
            "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ],
        b'{"title": "write the report", "description": "before noon"}',
    ),
}
_CPU = b"GET /cpu HTTP/1.1\r\nHost: x\r\n\r\n"


def _exchange(sock: socket.socket, request: bytes) -> bytes:
    sock.sendall(request)
    return sock.recv(65536)


def _server_cpu_ns(sock: socket.socket) -> int:
    return int(_exchange(sock, _CPU).rsplit(b"\r\n\r\n", 1)[1])


def measure(module: Path, request: bytes, requests: int) -> float:
    """Server CPU per request (µs, all its threads) for ``requests`` keep-alive requests."""
    script = _SERVER.format(root=str(ROOT), module=str(module))
    server = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for _ in range(500):  # warm-up
                _exchange(sock, request)
            before = _server_cpu_ns(sock)
            for _ in range(requests):
                _exchange(sock, request)
            return (_server_cpu_ns(sock) - before) / requests / 1e3
    finally:
        server.terminate()
        server.wait(10)


class _NullTransport:
    """Takes what the protocol writes and drops it: the HTTP layer alone, no syscalls."""

    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str) -> None:
        return None


def measure_layer(module: Path, request: bytes, requests: int) -> float:
    """CPU per request (µs) of the protocol object alone: parse, call the handler, encode."""
    spec = importlib.util.spec_from_file_location(f"layer_{module.stem}", module)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    response = mod.HttpResponse(200, b"{}", [("Content-Type", "application/json")])
    connection = mod._Connection(lambda request: response)
    connection.connection_made(_NullTransport())
    feed = connection.data_received
    for _ in range(1000):
        feed(request)
    start = time.process_time_ns()
    for _ in range(requests):
        feed(request)
    return (time.process_time_ns() - start) / requests / 1e3


def _table(title: str, figures: dict[str, list[float]]) -> None:
    """Medians, and the median of each round's ratio to the old parser (paired: the
    rounds alternate, so a noisy moment hits both variants of a round)."""
    old = figures["hand-written parser"]
    print(f"  {title}:")
    for name, values in figures.items():
        ratio = statistics.median(v / o for v, o in zip(values, old, strict=True))
        rounds = ", ".join(f"{v:.1f}" for v in values)
        print(
            f"    {name:<22} {statistics.median(values):6.1f} µs  "
            f"(paired ratio {ratio:.2f}x; rounds {rounds})"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    old_source = subprocess.run(
        ["git", "show", f"{OLD_REVISION}:dsqltrace/httpserver.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    old = Path(tempfile.mkdtemp()) / "old_httpserver.py"
    old.write_text(old_source)
    new = ROOT / "dsqltrace" / "httpserver.py"
    variants = {"hand-written parser": old, "llhttp (httptools)": new}
    print(
        f"HTTP layer CPU per request (protocol object fed in-process, no sockets), "
        f"{args.requests * 10} requests x {args.rounds} rounds, variants alternating:"
    )
    for shape, request in SHAPES.items():
        figures: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, module in variants.items():
                figures[name].append(measure_layer(module, request, args.requests * 10))
        _table(shape, figures)
    print(
        f"server process CPU per keep-alive request over loopback (all threads, syscalls "
        f"included), {args.requests} requests x {args.rounds} rounds, variants alternating:"
    )
    for shape, request in SHAPES.items():
        figures = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, module in variants.items():
                figures[name].append(measure(module, request, args.requests))
        _table(shape, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
