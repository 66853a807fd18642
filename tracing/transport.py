"""HTTP/1.1 over one kept-alive socket, with one deadline over everything.

The OTLP exporter and the Extensions API client both speak through
:class:`HttpConnection`: a plain socket (TLS when given a context), one
request at a time, a parser that reads just the status line, the framing
headers and a ``Content-Length`` body.  ``http.client`` costs about 150 µs
of CPU per request on header objects and the ``email`` parser, and bounds
each socket read rather than the whole exchange.

The deadline covers name resolution (on a helper thread: ``getaddrinfo``
has no timeout), connecting (all addresses together), the TLS handshake,
sending and the answer: each blocking call is given only the time left, so
a server that answers one byte at a time cannot stretch an exchange.
"""

from __future__ import annotations

import _socket
import contextlib
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import ssl

__all__ = ["MAX_ANSWER_BODY", "Answer", "HttpConnection", "NotConnected", "StaleConnection"]

#: The largest answer body read (the Extensions API's events are a few hundred bytes).
MAX_ANSWER_BODY = 1024 * 1024


class Answer:
    """An HTTP answer: status, header fields (lower-case names, raw values), body."""

    __slots__ = ("body", "fields", "status")

    def __init__(self, status: int, fields: dict[bytes, bytes], body: bytes) -> None:
        self.status = status
        self.fields = fields
        self.body = body


class StaleConnection(ConnectionError):
    """A kept-alive connection turned out closed before any answer was read."""


class NotConnected(ConnectionError):
    """No connection could be made (nothing was sent): the spans may be sent again."""


def _remaining(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("no answer within the flush timeout")
    return remaining


def _resolve(host: str, port: int, deadline: float | None) -> list[tuple[Any, ...]]:
    """The addresses of ``host``, within the deadline (name resolution has no timeout of
    its own, so a name that is not an address is resolved on a helper thread)."""
    if host == "localhost":
        return [(_socket.AF_INET, ("127.0.0.1", port)), (_socket.AF_INET6, ("::1", port, 0, 0))]
    for family, address in (
        (_socket.AF_INET, (host, port)),
        (_socket.AF_INET6, (host, port, 0, 0)),
    ):
        try:
            _socket.inet_pton(family, host)
        except (OSError, ValueError):
            continue
        return [(family, address)]
    found: list[list[tuple[Any, ...]] | OSError] = []

    def lookup() -> None:
        try:
            infos = _socket.getaddrinfo(host, port, 0, _socket.SOCK_STREAM)
        except OSError as exc:
            found.append(exc)
            return
        found.append([(info[0], info[4]) for info in infos])

    worker = threading.Thread(target=lookup, name="tracing-resolve", daemon=True)
    worker.start()
    worker.join(_remaining(deadline))
    if not found:
        raise TimeoutError(f"could not resolve {host} within the flush timeout")
    if isinstance(found[0], OSError):
        raise found[0]
    return found[0]


def _new_socket(family: int, *, tls: bool) -> _socket.socket:
    """A TCP socket: the C module's own for plain HTTP (``socket``'s import, about 5 ms
    of enum building, stays off the cold start), ``socket.socket`` for TLS (``ssl``
    wraps only those)."""
    if tls:
        import socket

        return socket.socket(family, socket.SOCK_STREAM)
    return _socket.socket(family, _socket.SOCK_STREAM)


class HttpConnection:
    """HTTP/1.1 over one kept-alive socket (TLS when ``tls`` is given), with one deadline.

    Every blocking step waits at most until the deadline: each socket call is
    given the time that is left, so a collector that answers one byte at a time
    cannot stretch an export.
    """

    def __init__(self, host: str, port: int, tls: ssl.SSLContext | None = None) -> None:
        self._host = host
        self._port = port
        self._tls = tls
        self._addresses: list[tuple[Any, ...]] | None = None
        self._sock: _socket.socket | None = None
        self._reused = False

    def _connect(self, deadline: float | None) -> _socket.socket:
        if self._addresses is None:
            self._addresses = _resolve(self._host, self._port, deadline)
        sock = self._tcp(self._addresses, deadline)
        if self._tls is None:
            return sock
        try:
            tls = self._tls.wrap_socket(
                sock,  # type: ignore[arg-type]  # a socket.socket: _new_socket(tls=True)
                server_hostname=self._host,
                do_handshake_on_connect=False,
            )
            tls.settimeout(_remaining(deadline))
            tls.do_handshake()
        except BaseException:
            sock.close()
            raise
        return tls

    def _tcp(self, addresses: list[tuple[Any, ...]], deadline: float | None) -> _socket.socket:
        """A TCP connection to the first address that takes one; all within the deadline."""
        error: OSError | None = None
        for family, address in addresses:
            sock = _new_socket(family, tls=self._tls is not None)
            try:
                sock.settimeout(_remaining(deadline))
                sock.connect(address)
                sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
                return sock
            except OSError as exc:  # refused, unreachable, timed out
                sock.close()
                error = exc
                if isinstance(exc, TimeoutError):
                    break
        self._addresses = None  # resolve again next time
        raise error or ConnectionError(f"no address for {self._host}")

    def request(
        self, request: bytes, deadline: float | None, sent: Callable[[], None] | None = None
    ) -> Answer:
        """Send one request (head and body, as bytes), read its answer.

        ``deadline`` (``time.monotonic()``) bounds everything; None waits as long as
        it takes (the Extensions API's ``event/next`` answers at the next event).
        ``sent`` is called once the request is out, before the answer is awaited.
        """
        self.send(request, deadline)
        if sent is not None:
            sent()
        return self.answer(deadline)

    def send(self, request: bytes, deadline: float | None) -> None:
        """Send one request; :meth:`answer` reads its answer (now, or later)."""
        sock = self._sock
        reused = sock is not None
        if sock is None:
            try:
                sock = self._sock = self._connect(deadline)
            except OSError as exc:
                raise NotConnected(f"{type(exc).__name__}: {exc}") from None
        try:
            view = memoryview(request)
            while view:
                sock.settimeout(_remaining(deadline))
                view = view[sock.send(view) :]
        except (BrokenPipeError, ConnectionResetError) as exc:
            self.close()
            if reused:
                raise StaleConnection(str(exc)) from None
            raise
        except BaseException:
            self.close()
            raise
        self._reused = reused

    def answer(self, deadline: float | None) -> Answer:
        """Read the answer to the request :meth:`send` sent, by ``deadline``."""
        sock = self._sock
        if sock is None:
            raise NotConnected("no request was sent")
        reused, self._reused = self._reused, False
        try:
            try:
                data = self._recv(sock, deadline, reused)
            except (BrokenPipeError, ConnectionResetError) as exc:
                if reused:
                    raise StaleConnection(str(exc)) from None
                raise
            while b"\r\n\r\n" not in data:
                data += self._recv(sock, deadline, False)
                if len(data) > 65536:
                    raise ConnectionError("the server sent an oversized answer head")
            header_block, _, rest = data.partition(b"\r\n\r\n")
            lines = header_block.split(b"\r\n")
            status = int(lines[0].split(b" ", 2)[1])
            fields = {}
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                fields[name.strip().lower()] = value.strip()
            body = b""
            if b"content-length" in fields:
                length = int(fields[b"content-length"])
                if length > MAX_ANSWER_BODY:
                    raise ConnectionError("the server sent an oversized answer")
                chunks = [rest]
                remaining = length - len(rest)
                while remaining > 0:
                    chunk = self._recv(sock, deadline, False)
                    chunks.append(chunk)
                    remaining -= len(chunk)
                body = b"".join(chunks)[:length]
            elif fields.get(b"transfer-encoding", b"").lower() == b"chunked":
                tail = rest[-16:]
                while not tail.endswith(b"0\r\n\r\n"):  # drained, not kept
                    tail = (tail + self._recv(sock, deadline, False))[-16:]
            else:  # the body runs until the server closes the connection
                while self._recv(sock, deadline, False, eof_ok=True):
                    pass
                self.close()
            if fields.get(b"connection", b"").lower() == b"close":
                self.close()
            return Answer(status, fields, body)
        except BaseException:
            self.close()
            raise

    def alive(self) -> bool:
        """False when there is no connection or its peer has closed it (nothing is read)."""
        sock = self._sock
        if sock is None:
            return False
        try:
            sock.settimeout(0.0)
            data = sock.recv(1, _socket.MSG_PEEK)
        except BlockingIOError:
            return True  # open, nothing to read yet
        except OSError:
            return False
        return bool(data)

    @staticmethod
    def _recv(
        sock: _socket.socket, deadline: float | None, first_on_reused: bool, eof_ok: bool = False
    ) -> bytes:
        sock.settimeout(_remaining(deadline))
        chunk = sock.recv(65536)
        if not chunk and not eof_ok:
            if first_on_reused:
                raise StaleConnection("kept-alive connection closed by the server")
            raise ConnectionError("the server closed the connection mid-answer")
        return chunk

    def close(self) -> None:
        """Close the connection; a request blocked on it (in another thread) ends."""
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(_socket.SHUT_RDWR)
            sock.close()
