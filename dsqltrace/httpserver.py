"""A small asyncio HTTP/1.1 server: keep-alive, Content-Length bodies, one request at a time.

The local collector, the Function URL front and the Lambda Runtime API all
speak through it.  A handler takes a :class:`HttpRequest` and returns a
:class:`HttpResponse`, or an awaitable of one (the Runtime API's ``/next``
waits for an invocation); responses on a connection go out in request order.
:func:`run` runs a server on uvloop when it is installed (the ``local`` extra
installs it), else on asyncio's own loop.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, TypeVar, cast

T = TypeVar("T")

MAX_HEAD = 64 * 1024
MAX_BODY = 32 * 1024 * 1024


@dataclass
class HttpRequest:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    peer: str = ""

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def query(self) -> str:
        return self.target.split("?", 1)[1] if "?" in self.target else ""


@dataclass
class HttpResponse:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)

    def encode(self, *, close: bool, head: bool = False) -> bytes:
        """The response on the wire; for a HEAD request, without its body."""
        try:
            reason = HTTPStatus(self.status).phrase
        except ValueError:
            reason = "Unknown"
        lines = [f"HTTP/1.1 {self.status} {reason}"]
        lines += [f"{k}: {v}" for k, v in self.headers]
        lines.append(f"Content-Length: {len(self.body)}")
        if close:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head else self.body)


Handler = Callable[[HttpRequest], "HttpResponse | Awaitable[HttpResponse]"]


class _Connection(asyncio.Protocol):
    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._buffer = b""
        self._transport: asyncio.Transport | None = None
        self._busy = False
        self._peer = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports have the interface of asyncio.Transport, not its class.
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self._peer = str(peer[0]) if peer else ""

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        self._next()

    def _next(self) -> None:
        transport = self._transport
        while transport is not None and not transport.is_closing() and not self._busy:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > MAX_HEAD:
                    self._send(HttpResponse(431), close=True)
                return
            try:
                request_line, *lines = self._buffer[:end].decode("latin-1").split("\r\n")
                method, target, _version = request_line.split(" ", 2)
            except ValueError:
                self._send(HttpResponse(400), close=True)
                return
            headers: dict[str, str] = {}
            for line in lines:
                name, sep, value = line.partition(":")
                if sep:
                    headers[name.strip().lower()] = value.strip()
            if "chunked" in headers.get("transfer-encoding", "").lower():
                self._send(HttpResponse(411), close=True)
                return
            try:
                length = int(headers.get("content-length", "0") or 0)
            except ValueError:
                length = -1
            if length < 0 or length > MAX_BODY:
                self._send(HttpResponse(413), close=True)
                return
            if len(self._buffer) < end + 4 + length:
                return
            body = self._buffer[end + 4 : end + 4 + length]
            self._buffer = self._buffer[end + 4 + length :]
            close = headers.get("connection", "").lower() == "close"
            request = HttpRequest(method, target, headers, body, self._peer)
            try:
                result = self._handler(request)
            except Exception:  # a handler bug must not kill the server
                result = HttpResponse(500)
            head = method == "HEAD"
            if inspect.isawaitable(result):
                self._busy = True
                task = asyncio.ensure_future(result)
                task.add_done_callback(lambda t, c=close, h=head: self._finish(t, c, h))
                return
            self._send(result, close=close, head=head)

    def _finish(self, task: asyncio.Future[HttpResponse], close: bool, head: bool) -> None:
        self._busy = False
        if task.cancelled():
            response = HttpResponse(503)
        elif task.exception() is not None:
            response = HttpResponse(500)
        else:
            response = task.result()
        self._send(response, close=close, head=head)
        self._next()

    def _send(self, response: HttpResponse, *, close: bool, head: bool = False) -> None:
        if self._transport is None:
            return
        self._transport.write(response.encode(close=close, head=head))
        if close:
            self._transport.close()


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop when it is installed, else asyncio's.

    uvloop answers a request on loopback in a fraction of the time and CPU
    (a collector round trip of about 25 µs instead of 100 µs on the project's
    machine), which matters because the functions wait for the collector's
    answer and share the machine's cores with it.
    """
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run a server's main coroutine to completion on :func:`new_event_loop`."""
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(main)


async def start(handler: Handler, host: str, port: int) -> asyncio.Server:
    """Listen on ``host:port`` (0: any free port) and serve ``handler``."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: _Connection(handler), host, port)


def bound_port(server: asyncio.Server) -> int:
    return int(server.sockets[0].getsockname()[1])


def json_response(status: int, body: bytes, *extra: tuple[str, str]) -> HttpResponse:
    return HttpResponse(status, body, [("Content-Type", "application/json"), *extra])
