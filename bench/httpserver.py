"""CPU per request of the local servers' HTTP layer: llhttp (httptools) against the
hand-written parser it replaced, in one run.

    python -m bench.httpserver [--requests 5000] [--rounds 3]

Each variant serves, in its own process (on uvloop, as the local servers
run), ``--requests`` keep-alive POSTs of an OTLP-sized body (1 KB) and the
same number of chunked ones where the variant accepts them; the figure is the
server process's CPU per request (user + system, from /proc), median of the
rounds.  The old parser is taken from git history (``OLD_REVISION``).
"""

from __future__ import annotations

import argparse
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

def handle(request):
    return mod.HttpResponse(200, b"{{}}", [("Content-Type", "application/json")])

async def main():
    server = await mod.start(handle, "127.0.0.1", 0)
    print(mod.bound_port(server), flush=True)
    await asyncio.Event().wait()

mod.run(main())
"""


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    import os

    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(module: Path, requests: int) -> float:
    """Server CPU per request (µs) for ``requests`` keep-alive POSTs."""
    script = _SERVER.format(root=str(ROOT), module=str(module))
    server = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        body = b"x" * 1024
        request = (
            b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for _ in range(200):  # warm-up
                sock.sendall(request)
                sock.recv(65536)
            before = _cpu_s(server.pid)
            for _ in range(requests):
                sock.sendall(request)
                sock.recv(65536)
            time.sleep(0.05)
            return (_cpu_s(server.pid) - before) / requests * 1e6
    finally:
        server.terminate()
        server.wait(10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
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
    figures: dict[str, list[float]] = {"hand-written parser": [], "llhttp (httptools)": []}
    for _ in range(args.rounds):
        figures["hand-written parser"].append(measure(old, args.requests))
        figures["llhttp (httptools)"].append(measure(new, args.requests))
    base = statistics.median(figures["hand-written parser"])
    print(f"server CPU per keep-alive request, {args.requests} requests x {args.rounds} rounds:")
    for name, values in figures.items():
        median = statistics.median(values)
        rounds = ", ".join(f"{v:.1f}" for v in values)
        print(f"  {name:<22} {median:6.1f} µs  ({median / base:.2f}x; rounds {rounds})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
