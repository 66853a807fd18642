"""A client of Lambda's Extensions API, for the toolkit's internal extension.

An internal extension is a thread in the runtime process.  It registers for
``INVOKE`` during init, before the runtime's first ``next``; Lambda then
freezes the environment only once the runtime *and* the extension have
called ``next``, and it sends the function's response as soon as the runtime
posts it.  So spans delivered between the two reach the collector after the
caller has its answer and before the freeze (see :mod:`tracing.delivery`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from tracing.transport import HttpConnection

__all__ = ["EXTENSIONS_API", "ExtensionClient", "ExtensionError", "InvokeEvent"]

EXTENSIONS_API = "/2020-01-01/extension"


class ExtensionError(Exception):
    """The Extensions API refused, failed or was too slow."""


class InvokeEvent:
    """An ``INVOKE`` event: which invocation, and when Lambda stops it."""

    __slots__ = ("deadline_ms", "request_id")

    def __init__(self, request_id: str, deadline_ms: int) -> None:
        self.request_id = request_id
        self.deadline_ms = deadline_ms

    def deadline(self) -> float:
        """The deadline as a ``time.monotonic()`` value."""
        return time.monotonic() + self.deadline_ms / 1000.0 - time.time()


class ExtensionClient:
    """Registers one extension and waits for its events, on ``AWS_LAMBDA_RUNTIME_API``."""

    def __init__(self, runtime_api: str) -> None:
        self.extension_id: str | None = None
        self.reopen(runtime_api)

    def reopen(self, runtime_api: str) -> None:
        """Talk to ``runtime_api`` on new connections, as the same extension."""
        host, _, port = runtime_api.rpartition(":")
        if not host or not port.isdigit():
            raise ExtensionError(f"AWS_LAMBDA_RUNTIME_API is not host:port: {runtime_api!r}")
        self._host_header = runtime_api
        self._register = HttpConnection(host, int(port))
        self._events = HttpConnection(host, int(port))
        self._next_request: bytes | None = None

    def _request(
        self,
        conn: HttpConnection,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes,
        deadline: float | None,
        sent: Callable[[], None] | None = None,
    ) -> tuple[int, dict[bytes, bytes], bytes]:
        head = f"{method} {EXTENSIONS_API}{path} HTTP/1.1\r\nHost: {self._host_header}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        head += f"Content-Length: {len(body)}\r\n\r\n"
        try:
            answer = conn.request(head.encode("latin-1") + body, deadline, sent)
        except OSError as exc:
            raise ExtensionError(f"{type(exc).__name__}: {exc}") from None
        return answer.status, answer.fields, answer.body

    def register(self, name: str, *, timeout: float, sent: Callable[[], None] | None = None) -> str:
        """Register for ``INVOKE`` events within ``timeout`` seconds; the extension id.
        ``sent`` is called once the request is out."""
        status, fields, body = self._request(
            self._register,
            "POST",
            "/register",
            {"Lambda-Extension-Name": name, "Content-Type": "application/json"},
            b'{"events":["INVOKE"]}',
            time.monotonic() + timeout,
            sent,
        )
        self._register.close()
        extension_id = fields.get(b"lambda-extension-identifier", b"").decode("latin-1")
        if status != 200 or not extension_id:
            raise ExtensionError(f"registration refused: HTTP {status} {_error_type(body)}")
        self.extension_id = extension_id
        return extension_id

    def next_event(self) -> InvokeEvent | None:
        """Block until the next event; an ``INVOKE`` one, or None for any other."""
        self.send_next()
        return self.read_event(None)

    def send_next(self) -> None:
        """Call ``event/next``: this extension is done with the invocation (Lambda may
        freeze the environment).  The event is read later, by :meth:`read_event`."""
        assert self.extension_id is not None, "register first"
        if self._next_request is None:
            self._next_request = (
                f"GET {EXTENSIONS_API}/event/next HTTP/1.1\r\nHost: {self._host_header}\r\n"
                f"Lambda-Extension-Identifier: {self.extension_id}\r\n"
                "Content-Length: 0\r\n\r\n"
            ).encode("latin-1")
        # Not bounded: a few dozen bytes to a local socket, and a send that gave up on a
        # starved machine would leave Lambda waiting for this extension until the timeout.
        try:
            self._events.send(self._next_request, None)
        except OSError as exc:
            raise ExtensionError(f"{type(exc).__name__}: {exc}") from None

    def read_event(self, timeout: float | None) -> InvokeEvent | None:
        """The answer to the last :meth:`send_next`, within ``timeout`` seconds (None: when
        it comes): an ``INVOKE`` event, or None for any other."""
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            answer = self._events.answer(deadline)
        except OSError as exc:
            raise ExtensionError(f"{type(exc).__name__}: {exc}") from None
        if answer.status != 200:
            raise ExtensionError(
                f"event/next answered HTTP {answer.status} {_error_type(answer.body)}"
            )
        event: Any = json.loads(answer.body)
        if not isinstance(event, dict) or event.get("eventType") != "INVOKE":
            return None
        return InvokeEvent(str(event.get("requestId", "")), int(event.get("deadlineMs", 0)))

    def connected(self) -> bool:
        """True while the events connection is open at both ends."""
        return self._events.alive()

    def close(self) -> None:
        """Close both connections; a blocked :meth:`next_event` raises."""
        self._register.close()
        self._events.close()


def _error_type(body: bytes) -> str:
    try:
        decoded = json.loads(body)
    except ValueError:
        return ""
    return str(decoded.get("errorType", "")) if isinstance(decoded, dict) else ""
