"""``dsqltrace collector``: a local OTLP/HTTP trace receiver, stored as OTLP JSON lines.

Listens on ``/v1/traces`` for protobuf and JSON bodies (gzip allowed) and
answers as the OTLP specification says: 200 with an empty
``ExportTraceServiceResponse`` (protobuf, or ``{}`` for JSON), 400 with a
status for a body that does not decode, 404/405 elsewhere, 415 for other
content types.  Each accepted request is appended to the output file as one
line, ``{"received_ns": ..., "request": <ExportTraceServiceRequest, OTLP JSON
encoding: hex ids, integer enums>}``, so that the report can tell spans that
arrived after their invocation returned; ``"via": "logs"`` is added for what the
emulator's log subscription forwarded (``X-Dsqltrace-Via: logs``), for which
arriving later is by design.

A function's flush waits for the answer, and under load the collector shares
the machine's cores with the functions it serves; so a request is only
decoded (to check it) before the answer, kept as received, and converted to
JSON once the collector is idle, or when the kept requests exceed
``MAX_PENDING_BYTES``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gzip
import json
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dsqltrace.httpserver import HttpRequest, HttpResponse, bound_port, json_response, start
from dsqltrace.httpserver import run as run_server

_ID_FIELDS = ("traceId", "spanId", "parentSpanId")


def parse_protobuf(body: bytes) -> Any:
    """Decode an ExportTraceServiceRequest (raises on a body that is not one)."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    message = ExportTraceServiceRequest()
    message.ParseFromString(body)
    return message


def message_to_json(message: Any) -> dict[str, Any]:
    """An ExportTraceServiceRequest in the OTLP JSON encoding (hex ids, integer enums)."""
    from google.protobuf.json_format import MessageToDict

    data: dict[str, Any] = MessageToDict(message, use_integers_for_enums=True)
    for rs in data.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for span in ss.get("spans", []):
                for key in _ID_FIELDS:
                    if key in span:
                        span[key] = base64.b64decode(span[key]).hex()
                for link in span.get("links", []):
                    for key in ("traceId", "spanId"):
                        if key in link:
                            link[key] = base64.b64decode(link[key]).hex()
    return data


def count_spans(request: dict[str, Any]) -> int:
    return sum(
        len(ss.get("spans", []))
        for rs in request.get("resourceSpans", [])
        for ss in rs.get("scopeSpans", [])
    )


#: Requests are converted to JSON and written once no request has come for this long,
#: one at a time, stopping as soon as another arrives...
IDLE_S = 0.2
#: ... or, while requests keep coming, once their bodies add up to this many bytes.
MAX_PENDING_BYTES = 64 * 1024 * 1024


class Collector:
    """Receives OTLP/HTTP traces and appends them to ``out`` (one request per line).

    Answering comes first: a function's flush waits for the answer, so the JSON
    conversion (the costly part, about 150 µs a request) is done while the
    collector is idle, one request between two looks at the sockets, so that
    an answer never waits for more than one conversion.  Kept requests are
    ``(received_ns, content_type, body)``, checked already.
    """

    def __init__(self, out: Path) -> None:
        self.out = out
        self.requests = 0
        self.spans = 0
        out.parent.mkdir(parents=True, exist_ok=True)
        self._file = out.open("a", encoding="utf-8")
        self._pending: deque[tuple[int, str, bytes, str | None]] = deque()
        self._pending_bytes = 0
        self._idle_timer: asyncio.Handle | None = None
        self._last_received = 0.0

    def handle(self, request: HttpRequest) -> HttpResponse:
        received = time.time_ns()
        if request.path != "/v1/traces":
            return HttpResponse(404)
        if request.method != "POST":
            return HttpResponse(405, headers=[("Allow", "POST")])
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        try:
            body = request.body
            if request.headers.get("content-encoding", "").lower() == "gzip":
                body = gzip.decompress(body)
            if content_type == "application/x-protobuf":
                parse_protobuf(body)
                answer = HttpResponse(200, b"", [("Content-Type", "application/x-protobuf")])
            elif content_type == "application/json":
                if not isinstance(json.loads(body), dict):
                    raise ValueError("not an ExportTraceServiceRequest object")
                answer = json_response(200, b"{}")
            else:
                return HttpResponse(415)
        except Exception as exc:  # whatever the decoder raises for a bad body
            status = json.dumps({"code": 3, "message": f"bad request: {exc}"[:300]}).encode()
            return json_response(400, status)
        via = "logs" if request.headers.get("x-dsqltrace-via") == "logs" else None
        self._pending.append((received, content_type, body, via))
        self._pending_bytes += len(body)
        loop = asyncio.get_running_loop()
        self._last_received = loop.time()
        if self._pending_bytes >= MAX_PENDING_BYTES:
            loop.call_soon(self._store_one)  # over budget: one more each time one arrives
        if self._idle_timer is None:
            self._idle_timer = loop.call_later(IDLE_S, self._when_idle)
        return answer

    def _when_idle(self) -> None:
        """Store one kept request if none came for ``IDLE_S``, then look again."""
        loop = asyncio.get_running_loop()
        quiet = loop.time() - self._last_received
        if quiet < IDLE_S:
            self._idle_timer = loop.call_later(IDLE_S - quiet, self._when_idle)
            return
        self._store_one()
        self._idle_timer = loop.call_soon(self._when_idle) if self._pending else None

    def _store_one(self) -> None:
        if not self._pending or self._file.closed:
            return
        received, content_type, body, via = self._pending.popleft()
        self._pending_bytes -= len(body)
        if content_type == "application/json":
            request = json.loads(body)
        else:
            request = message_to_json(parse_protobuf(body))
        self.requests += 1
        self.spans += count_spans(request)
        record: dict[str, Any] = {"received_ns": received, "request": request}
        if via is not None:
            record["via"] = via  # forwarded from the functions' log lines
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        """Store everything still kept and close the file."""
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        while self._pending:
            self._store_one()
        self._file.close()


#: Ways the collector can misbehave on purpose (``--fault``), to test what telemetry
#: failures cost the functions: ``slow`` answers after ``--delay-ms``, ``error``
#: answers 503, ``blackhole`` accepts connections and never reads or answers.
FAULTS = ("none", "slow", "error", "blackhole")


def _faulty(collector: Collector, fault: str, delay_s: float) -> Callable[[HttpRequest], Any]:
    if fault == "error":
        return lambda request: json_response(503, b'{"code": 14, "message": "unavailable"}')
    if fault == "slow":

        async def slow(request: HttpRequest) -> HttpResponse:
            await asyncio.sleep(delay_s)
            return collector.handle(request)

        return slow
    return collector.handle


async def serve(
    host: str,
    port: int,
    out: Path,
    *,
    ready: Callable[[int], None] | None = None,
    fault: str = "none",
    delay_s: float = 0.5,
) -> Collector:
    """Run the collector until SIGINT or SIGTERM; returns it (with its counts) when stopped."""
    collector = Collector(out)
    parse_protobuf(b"")  # import the protobuf classes now, not during the first request
    if fault == "blackhole":
        return await _blackhole(host, port, collector, ready)
    server = await start(_faulty(collector, fault, delay_s), host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    bound = bound_port(server)
    detail = f" (fault: {fault})" if fault != "none" else ""
    print(
        f"collector listening on http://{host}:{bound}/v1/traces, writing {out}{detail}", flush=True
    )
    if ready is not None:
        ready(bound)
    async with server:
        await stop.wait()
    collector.close()
    print(f"collector stopped: {collector.requests} requests, {collector.spans} spans", flush=True)
    return collector


async def _blackhole(
    host: str, port: int, collector: Collector, ready: Callable[[int], None] | None
) -> Collector:
    """Accept connections (the kernel does) and never read or answer."""
    import socket

    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(1024)
    bound = listener.getsockname()[1]
    print(f"collector listening on http://{host}:{bound}/v1/traces (fault: blackhole)", flush=True)
    if ready is not None:
        ready(bound)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    listener.close()
    collector.close()
    return collector


def spawn(out: Path, *args: str) -> tuple[subprocess.Popen[str], int]:
    """A collector process writing to ``out`` (``args``: more options, such as
    ``--fault slow``), once it listens; returns it and its port."""
    from dsqltrace.pg import free_port

    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dsqltrace.collector",
            "--port",
            str(port),
            "--out",
            str(out),
            *args,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    if "listening" not in process.stdout.readline():
        process.kill()
        raise RuntimeError("the collector did not start")
    return process, port


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=4318, help="port (default 4318, OTLP/HTTP)")
    parser.add_argument(
        "--out", type=Path, default=Path(".local/spans.jsonl"), help="where spans are appended"
    )
    parser.add_argument(
        "--fault",
        choices=FAULTS,
        default="none",
        help="misbehave on purpose: slow, error (503) or blackhole",
    )
    parser.add_argument("--delay-ms", type=int, default=500, help="how slow --fault slow is")


def run(args: argparse.Namespace) -> int:
    run_server(
        serve(args.host, args.port, args.out, fault=args.fault, delay_s=args.delay_ms / 1000)
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dsqltrace collector", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
