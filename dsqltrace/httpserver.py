"""A small asyncio HTTP/1.1 server, parsing with httptools (llhttp), one request at a time.

The local collector, the Function URL front and the Lambda Runtime and
Extensions APIs all speak through it.  A handler takes a :class:`HttpRequest`
and returns a :class:`HttpResponse`, or an awaitable of one (the Runtime
API's ``/next`` waits for an invocation); responses on a connection go out in
request order, pipelined requests included.

Parsing is llhttp's (through httptools, the parser uvicorn uses): a kept C
parser that already handles chunked bodies, ``Expect: 100-continue``,
keep-alive and malformed input, at a fraction of a pure-Python parser's CPU
per request (h11 was the alternative; its per-request cost is several times
higher, and the collector and the front answer every request of a load run).
As Function URLs do: a body larger than :data:`MAX_BODY` is answered 413
before it is read whole, a head larger than :data:`MAX_HEAD` 431, a malformed
request 400; each of them closes the connection.

:func:`run` runs a server on uvloop when it is installed (the ``local`` extra
installs it), else on asyncio's own loop.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, TypeVar, cast

import httptools

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
        parts = [_status_line(self.status)]
        parts += [f"{k}: {v}\r\n".encode("latin-1") for k, v in self.headers]
        parts.append(b"Content-Length: %d\r\n" % len(self.body))
        parts.append(b"Connection: close\r\n\r\n" if close else b"\r\n")
        if not head:
            parts.append(self.body)
        return b"".join(parts)


#: Status lines already encoded, by status code (a few codes, reused per response).
_STATUS_LINES: dict[int, bytes] = {}


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Unknown"
        line = _STATUS_LINES[status] = f"HTTP/1.1 {status} {reason}\r\n".encode("latin-1")
    return line


Handler = Callable[[HttpRequest], "HttpResponse | Awaitable[HttpResponse]"]


class _Reject(Exception):
    """A request the server answers with an error status, then closes the connection."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _Connection(asyncio.Protocol):
    """One client connection: llhttp parses, requests queue, the handler answers in order."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._busy = False
        self._peer = ""
        #: Parsed requests (with "close after"), or a status to answer and close.
        self._queue: deque[tuple[HttpRequest, bool] | int] = deque()
        self._closing = False
        self._reset()

    def _reset(self) -> None:
        self._rejected = 0
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        #: Bytes received while this request's head is still open (see data_received).
        self._head_bytes = 0
        self._head_open = True
        self._body_bytes = 0

    # --- asyncio.Protocol --------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports have the interface of asyncio.Transport, not its class.
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self._peer = str(peer[0]) if peer else ""

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        room = MAX_HEAD - self._head_bytes
        if self._head_open and len(data) > room:  # a large read: the head must end in room
            self._feed(data[:room])
            if not self._closing:
                self._feed(data[room:])
        else:
            self._feed(data)
        self._next()

    def _feed(self, data: bytes) -> None:
        queued = len(self._queue)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(400)  # no protocol upgrades here
        except (httptools.HttpParserError, _Reject):
            # A callback's _Reject comes back wrapped as a parser error: its status is kept.
            self._refuse(self._rejected or 400)
        else:
            # The head bound is kept per read, not per header line (llhttp's header
            # callbacks are most of the parsing CPU): a read that leaves a head open
            # counts whole, unless a request ended in it (pipelining).
            if self._head_open and len(self._queue) == queued:
                self._head_bytes += len(data)
                if self._head_bytes >= MAX_HEAD:
                    self._refuse(431)

    def _refuse(self, status: int) -> None:
        self._closing = True  # nothing after it on this connection is read
        self._queue.append(status)

    def _reject(self, status: int) -> None:
        self._rejected = status
        raise _Reject(status)

    # --- httptools callbacks (as few Python calls per request as llhttp allows) ------
    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        headers = self._headers
        if key in headers:  # a repeated field: one value, comma-joined
            headers[key] += ", " + value.decode("latin-1")
        else:
            headers[key] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._head_open = False
        length = self._headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > MAX_BODY:
            self._reject(413)  # answered before the body is read
        if self._headers.get("expect", "").lower() == "100-continue" and self._transport:
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._body_bytes > MAX_BODY:
            self._reject(413)  # a chunked body that grows too large
        self._body.append(body)

    def on_message_complete(self) -> None:
        parser = self._parser
        body = self._body
        request = HttpRequest(
            parser.get_method().decode("latin-1"),
            self._url.decode("latin-1"),
            self._headers,
            body[0] if len(body) == 1 else b"".join(body),
            self._peer,
        )
        self._queue.append((request, not parser.should_keep_alive()))
        self._reset()  # for the next request on the connection

    # --- answering, in order -------------------------------------------------------
    def _next(self) -> None:
        while self._transport is not None and not self._busy and self._queue:
            item = self._queue.popleft()
            if isinstance(item, int):
                self._send(HttpResponse(item), close=True)
                return
            request, close = item
            head = request.method == "HEAD"
            try:
                result = self._handler(request)
            except Exception:  # a handler bug must not kill the server
                result = HttpResponse(500)
            if type(result) is not HttpResponse and inspect.isawaitable(result):
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
            self._queue.clear()
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
