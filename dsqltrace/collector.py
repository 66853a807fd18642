"""A local OTLP/HTTP trace receiver: ``/v1/traces``, protobuf or JSON, stored as OTLP JSON lines.

Each request is stored as one line: ``{"received_ns": ..., "request": <ExportTraceServiceRequest
in the OTLP JSON encoding>}`` (hex ids, integer enums), so that the report can
tell spans that arrived late from spans that arrived before the handler
returned.  Answers as the OTLP specification says: 200 with an empty
``ExportTraceServiceResponse`` (protobuf or ``{}``), 400 for a body that does
not decode, 404/405 elsewhere, 415 for other content types.  It is a small
asyncio server so that its answer is quick: on loopback the function's flush
waits for it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gzip
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

_ID_FIELDS = ("traceId", "spanId", "parentSpanId")
_MAX_BODY = 32 * 1024 * 1024


def parse_protobuf(body: bytes) -> Any:
    """Decode an ExportTraceServiceRequest (raises ValueError-like errors on bad input)."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    message = ExportTraceServiceRequest()
    message.ParseFromString(body)
    return message


def protobuf_to_json(body: bytes) -> dict[str, Any]:
    """Decode an ExportTraceServiceRequest into the OTLP JSON encoding."""
    return message_to_json(parse_protobuf(body))


def message_to_json(message: Any) -> dict[str, Any]:
    """An ExportTraceServiceRequest message in the OTLP JSON encoding (hex ids, integer enums)."""
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


class _Connection(asyncio.Protocol):
    """One client connection: buffers bytes, answers each complete HTTP/1.1 request."""

    def __init__(self, collector: Collector) -> None:
        self._collector = collector
        self._buffer = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while self._transport is not None and not self._transport.is_closing():
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > 65536:
                    self._transport.close()
                return
            head = self._buffer[:end].decode("latin-1")
            request_line, *header_lines = head.split("\r\n")
            method, target, _ = ([*request_line.split(" ", 2), "", ""])[:3]
            headers = {}
            for line in header_lines:
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
            try:
                length = int(headers.get("content-length", "0") or 0)
            except ValueError:
                length = -1
            if length < 0 or length > _MAX_BODY:
                self._collector._respond(self._transport, 413, b"", "text/plain", close=True)
                return
            if len(self._buffer) < end + 4 + length:
                return  # the body is still coming
            body = self._buffer[end + 4 : end + 4 + length]
            self._buffer = self._buffer[end + 4 + length :]
            keep = headers.get("connection", "").lower() != "close"
            self._collector._dispatch(self._transport, method, target, headers, body, keep)


class Collector:
    """Receives OTLP/HTTP traces and appends them to ``out`` (one request per line)."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.requests = 0
        self.spans = 0
        out.parent.mkdir(parents=True, exist_ok=True)
        self._file = out.open("a", encoding="utf-8")

    def protocol(self) -> asyncio.Protocol:
        """A protocol instance for one client connection."""
        return _Connection(self)

    def _dispatch(
        self,
        writer: asyncio.Transport,
        method: str,
        target: str,
        headers: dict[str, str],
        body: bytes,
        keep: bool,
    ) -> None:
        received = time.time_ns()
        if target.split("?", 1)[0] != "/v1/traces":
            self._respond(writer, 404, b"", "text/plain", close=not keep)
            return
        if method != "POST":
            self._respond(writer, 405, b"", "text/plain", close=not keep)
            return
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        try:
            if headers.get("content-encoding", "").lower() == "gzip":
                body = gzip.decompress(body)
            if content_type == "application/x-protobuf":
                request: Any = parse_protobuf(body)
                answer, answer_type = b"", "application/x-protobuf"
            elif content_type == "application/json":
                request = json.loads(body)
                if not isinstance(request, dict):
                    raise ValueError("not an ExportTraceServiceRequest")
                answer, answer_type = b"{}", "application/json"
            else:
                self._respond(writer, 415, b"", "text/plain", close=not keep)
                return
        except Exception as exc:  # a body that does not decode, whatever the decoder raises
            message = json.dumps({"code": 3, "message": f"bad request: {exc}"[:200]}).encode()
            self._respond(writer, 400, message, "application/json", close=not keep)
            return
        # Answer first: the function's flush waits for this; the JSON conversion can wait.
        self._respond(writer, 200, answer, answer_type, close=not keep)
        if not isinstance(request, dict):
            request = message_to_json(request)
        self.requests += 1
        self.spans += count_spans(request)
        self._file.write(json.dumps({"received_ns": received, "request": request}) + "\n")
        self._file.flush()

    @staticmethod
    def _respond(
        writer: asyncio.Transport, status: int, body: bytes, content_type: str, *, close: bool
    ) -> None:
        reason = {
            200: "OK",
            400: "Bad Request",
            404: "Not Found",
            405: "Method Not Allowed",
            413: "Payload Too Large",
            415: "Unsupported Media Type",
        }[status]
        head = (
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n"
            + ("Connection: close\r\n" if close else "")
            + ("Allow: POST\r\n" if status == 405 else "")
            + "\r\n"
        )
        writer.write(head.encode() + body)
        if close:
            writer.close()

    def close(self) -> None:
        self._file.close()


async def serve(host: str, port: int, out: Path, *, ready: Any = None) -> None:
    """Run the collector until SIGINT or SIGTERM."""
    collector = Collector(out)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(collector.protocol, host, port)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    bound = server.sockets[0].getsockname()[1]
    print(f"collector listening on http://{host}:{bound}/v1/traces, writing {out}", flush=True)
    if ready is not None:
        ready(bound)
    async with server:
        await stop.wait()
    collector.close()
    print(f"collector stopped: {collector.requests} requests, {collector.spans} spans", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dsqltrace collector", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4318)
    parser.add_argument("--out", type=Path, default=Path(".local/spans.jsonl"))
    args = parser.parse_args(argv)
    asyncio.run(serve(args.host, args.port, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
