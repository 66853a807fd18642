"""OTLP/HTTP protobuf exporter without `protobuf` or `requests`.

The OTLP trace messages are few and stable, so this module writes their
protobuf wire format directly (about a tenth of the cost of the generated
classes, and none of their ~25 ms import).  The transport is one keep-alive
``http.client`` connection.  The tests decode what it writes with the real
``opentelemetry-proto`` classes and compare it with the official encoder.
"""

from __future__ import annotations

import logging
import socket
import struct
import time
import zlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from opentelemetry.trace import SpanKind, StatusCode

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

logger = logging.getLogger("tracing")

_pack_double = struct.Struct("<d").pack
_pack_fixed64 = struct.Struct("<Q").pack
_pack_fixed32 = struct.Struct("<I").pack

# Span flags (trace.proto SpanFlags).
_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: tag, length, payload."""
    n = len(payload)
    return tag + (bytes((n,)) if n < 0x80 else _varint(n)) + payload


def _any_value(value: Any) -> bytes:
    # AnyValue: 1 string, 2 bool, 3 int, 4 double, 5 array, 6 kvlist, 7 bytes.
    if isinstance(value, str):
        return _field(b"\x0a", value.encode("utf-8", "replace"))
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int):
        return b"\x18" + _varint(value)
    if isinstance(value, float):
        return b"\x21" + _pack_double(value)
    if isinstance(value, bytes):
        return _field(b"\x3a", value)
    if value is None:
        return b""
    if isinstance(value, Mapping):
        return _field(b"\x32", _key_values(value, b"\x0a"))
    if isinstance(value, Sequence):
        return _field(b"\x2a", b"".join(_field(b"\x0a", _any_value(v)) for v in value))
    raise TypeError(f"cannot encode attribute value of type {type(value).__name__}")


_KV_CACHE: dict[tuple[str, type, Any], bytes] = {}
_KV_CACHE_SIZE = 4096
_CACHEABLE = frozenset((str, bool, int, float))


def _key_value(key: str, value: Any) -> bytes:
    """An encoded ``KeyValue``."""
    return _field(b"\x0a", key.encode("utf-8", "replace")) + _field(b"\x12", _any_value(value))


def _key_values(attributes: Mapping[str, Any] | None, tag: bytes) -> bytes:
    """Each attribute as a ``KeyValue`` field ``tag``; repeated scalar pairs come from a
    bounded cache (most attributes repeat from one invocation to the next)."""
    if not attributes:
        return b""
    cache = _KV_CACHE
    parts = []
    for key, value in attributes.items():
        kind = type(value)
        cacheable = kind in _CACHEABLE
        if cacheable:
            hit = cache.get((key, kind, value))
            if hit is not None:
                parts.append(tag + hit)
                continue
        try:
            kv = _key_value(str(key), value)
        except TypeError:
            logger.debug("tracing: dropping attribute %s of unsupported type", key)
            continue
        n = len(kv)
        framed = (bytes((n,)) if n < 0x80 else _varint(n)) + kv
        if cacheable:
            if len(cache) >= _KV_CACHE_SIZE:
                cache.clear()
            cache[(key, kind, value)] = framed
        parts.append(tag + framed)
    return b"".join(parts)


_LOCAL_FLAGS = b"\x85\x01" + _pack_fixed32(_HAS_IS_REMOTE)
_REMOTE_FLAGS = b"\x85\x01" + _pack_fixed32(_HAS_IS_REMOTE | _IS_REMOTE)
_EMPTY_STATUS = b"\x7a\x00"


# Span.kind: the OTLP enum is the API's plus one (0 is SPAN_KIND_UNSPECIFIED).
_KINDS = {kind: b"\x30" + bytes((kind.value + 1,)) for kind in SpanKind}


def encode_span(span: ReadableSpan) -> bytes:
    """Encode one finished SDK span as an OTLP ``Span`` message body."""
    ctx = span.context
    assert ctx is not None
    out = [
        b"\x0a\x10" + ctx.trace_id.to_bytes(16, "big"),
        b"\x12\x08" + ctx.span_id.to_bytes(8, "big"),
    ]
    if ctx.trace_state:
        state = ",".join(f"{k}={v}" for k, v in ctx.trace_state.items())
        out.append(_field(b"\x1a", state.encode()))
    parent = span.parent
    if parent is not None:
        out.append(b"\x22\x08" + parent.span_id.to_bytes(8, "big"))
    out.append(_field(b"\x2a", span.name.encode("utf-8", "replace")))
    out.append(_KINDS[span.kind])
    out.append(b"\x39" + _pack_fixed64(span.start_time or 0))
    out.append(b"\x41" + _pack_fixed64(span.end_time or 0))
    out.append(_key_values(span.attributes, b"\x4a"))
    if span.dropped_attributes:
        out.append(b"\x50" + _varint(span.dropped_attributes))
    for event in span.events:
        body = b"\x09" + _pack_fixed64(event.timestamp) + _field(b"\x12", event.name.encode())
        body += _key_values(event.attributes, b"\x1a")
        if event.dropped_attributes:
            body += b"\x20" + _varint(event.dropped_attributes)
        out.append(_field(b"\x5a", body))
    if span.dropped_events:
        out.append(b"\x60" + _varint(span.dropped_events))
    for link in span.links:
        body = b"\x0a\x10" + link.context.trace_id.to_bytes(16, "big")
        body += b"\x12\x08" + link.context.span_id.to_bytes(8, "big")
        body += _key_values(link.attributes, b"\x22")
        if link.dropped_attributes:
            body += b"\x28" + _varint(link.dropped_attributes)
        flags = _HAS_IS_REMOTE | (_IS_REMOTE if link.context.is_remote else 0)
        body += b"\x35" + _pack_fixed32(flags)
        out.append(_field(b"\x6a", body))
    if span.dropped_links:
        out.append(b"\x70" + _varint(span.dropped_links))
    status = span.status
    if status.description or status.status_code is not StatusCode.UNSET:
        body = b""
        if status.description:
            body += _field(b"\x12", status.description.encode("utf-8", "replace"))
        if status.status_code.value:
            body += b"\x18" + bytes((status.status_code.value,))
        out.append(_field(b"\x7a", body))
    else:
        out.append(_EMPTY_STATUS)
    out.append(_REMOTE_FLAGS if parent is not None and parent.is_remote else _LOCAL_FLAGS)
    return b"".join(out)


class _Cache:
    """Encoded resources and scopes, which do not change between exports."""

    def __init__(self) -> None:
        self.resources: dict[int, tuple[Resource, bytes]] = {}
        self.scopes: dict[int, tuple[InstrumentationScope | None, tuple[bytes, bytes]]] = {}

    def resource(self, resource: Resource) -> bytes:
        hit = self.resources.get(id(resource))
        if hit is not None and hit[0] is resource:
            return hit[1]
        encoded = _field(b"\x0a", _key_values(resource.attributes, b"\x0a"))
        if len(self.resources) > 16:
            self.resources.clear()
        self.resources[id(resource)] = (resource, encoded)
        return encoded

    def scope(self, scope: InstrumentationScope | None) -> tuple[bytes, bytes]:
        """The encoded ``scope`` field and ``schema_url`` field of a ScopeSpans."""
        hit = self.scopes.get(id(scope))
        if hit is not None and hit[0] is scope:
            return hit[1]
        body = b""
        url = b""
        if scope is not None:
            body = _field(b"\x0a", scope.name.encode())
            if scope.version:
                body += _field(b"\x12", scope.version.encode())
            body += _key_values(scope.attributes, b"\x1a")
            if scope.schema_url:
                url = _field(b"\x1a", scope.schema_url.encode())
        encoded = (_field(b"\x0a", body), url)
        if len(self.scopes) > 64:
            self.scopes.clear()
        self.scopes[id(scope)] = (scope, encoded)
        return encoded


def encode_request(spans: Sequence[ReadableSpan], cache: _Cache | None = None) -> bytes:
    """Encode spans as an ``ExportTraceServiceRequest`` (grouped by resource, then scope)."""
    cache = cache or _Cache()
    grouped: dict[int, tuple[Resource, dict[int, tuple[InstrumentationScope | None, list[bytes]]]]]
    grouped = {}
    for span in spans:
        resource = span.resource
        scope = span.instrumentation_scope
        by_scope = grouped.setdefault(id(resource), (resource, {}))[1]
        by_scope.setdefault(id(scope), (scope, []))[1].append(encode_span(span))
    out = []
    for resource, by_scope in grouped.values():
        scope_spans = []
        for scope, encoded_spans in by_scope.values():
            scope_part, url_part = cache.scope(scope)
            body = scope_part + b"".join(_field(b"\x12", s) for s in encoded_spans) + url_part
            scope_spans.append(_field(b"\x12", body))
        body = cache.resource(resource) + b"".join(scope_spans)
        if resource.schema_url:
            body += _field(b"\x1a", resource.schema_url.encode())
        out.append(_field(b"\x0a", body))
    return b"".join(out)


class ExportError(Exception):
    """An export was not accepted: refused, rejected, or not answered in time.

    ``retryable`` is True when the spans certainly did not reach the collector
    (connection refused, HTTP 429/502/503/504) and may be sent again; after a
    timeout they may have arrived, so they are not sent again (no duplicates).
    """

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


_RETRYABLE_STATUS = frozenset({429, 502, 503, 504})


class _StaleConnection(ConnectionError):
    """A kept-alive connection turned out closed before any answer was read."""


class _PlainHttp:
    """HTTP/1.1 over one kept-alive TCP socket: one write per request, one small parser.

    ``http.client`` spends about 150 µs of CPU per request on its header
    objects and ``email`` parser; an OTLP answer needs only its status line and
    framing.  Used for ``http://`` endpoints (the extension and local collectors
    are on loopback); ``https://`` goes through ``http.client``.
    """

    def __init__(self, host: str, port: int) -> None:
        self._address = (host, port)
        self._sock: socket.socket | None = None

    def post(self, head: bytes, body: bytes, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        sock = self._sock
        reused = sock is not None
        if sock is None:
            sock = socket.create_connection(self._address, timeout=timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sock = sock
        else:
            sock.settimeout(timeout)
        try:
            try:
                sock.sendall(head + body)
                data = self._recv(sock, deadline, reused)
            except (BrokenPipeError, ConnectionResetError) as exc:
                if reused:
                    raise _StaleConnection(str(exc)) from None
                raise
            while b"\r\n\r\n" not in data:
                data += self._recv(sock, deadline, False)
            header_block, _, rest = data.partition(b"\r\n\r\n")
            lines = header_block.split(b"\r\n")
            status = int(lines[0].split(b" ", 2)[1])
            fields = {}
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                fields[name.strip().lower()] = value.strip().lower()
            if b"content-length" in fields:
                remaining = int(fields[b"content-length"]) - len(rest)
                while remaining > 0:
                    remaining -= len(self._recv(sock, deadline, False))
            elif fields.get(b"transfer-encoding") == b"chunked":
                while not rest.endswith(b"0\r\n\r\n"):
                    rest += self._recv(sock, deadline, False)
            else:  # the body runs until the server closes the connection
                while self._recv(sock, deadline, False, eof_ok=True):
                    pass
                self.close()
            if fields.get(b"connection") == b"close":
                self.close()
            return status
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _recv(
        sock: socket.socket, deadline: float, first_on_reused: bool, eof_ok: bool = False
    ) -> bytes:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no answer within the flush timeout")
        sock.settimeout(remaining)
        chunk = sock.recv(65536)
        if not chunk and not eof_ok:
            if first_on_reused:
                raise _StaleConnection("kept-alive connection closed by the collector")
            raise ConnectionError("collector closed the connection mid-answer")
        return chunk

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class OtlpHttpExporter:
    """Sends encoded spans to an OTLP/HTTP endpoint over one keep-alive connection."""

    def __init__(
        self,
        endpoint: str,
        *,
        headers: Mapping[str, str] | None = None,
        compression: str = "none",
    ) -> None:
        parts = urlsplit(endpoint)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or "localhost"
        self._port = parts.port or (443 if self._https else 80)
        path = parts.path or "/v1/traces"
        if parts.query:
            path += "?" + parts.query
        self._path = path
        self._gzip = compression == "gzip"
        self._headers = {"Content-Type": "application/x-protobuf", **(headers or {})}
        if self._gzip:
            self._headers["Content-Encoding"] = "gzip"
        host_header = self._host if parts.port is None else f"{self._host}:{self._port}"
        self._head_prefix = (
            f"POST {path} HTTP/1.1\r\nHost: {host_header}\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in self._headers.items())
        ).encode("latin-1")
        self._plain = None if self._https else _PlainHttp(self._host, self._port)
        self._tls: Any = None
        self._cache = _Cache()

    @property
    def address(self) -> str:
        """``host:port`` of the collector (no path, no credentials)."""
        return f"{self._host}:{self._port}"

    def export(self, spans: Sequence[ReadableSpan], timeout: float) -> None:
        """POST the spans; raise :class:`ExportError` unless the collector accepted them."""
        body = encode_request(spans, self._cache)
        if self._gzip:
            body = zlib.compress(body, wbits=31)
        try:
            try:
                status = self._post(body, timeout)
            except _StaleConnection:
                # Closed by the collector while we were frozen: one fresh connection.
                status = self._post(body, timeout)
        except ExportError:
            raise
        except (ConnectionRefusedError, _StaleConnection) as exc:
            self.close()
            raise ExportError(f"{type(exc).__name__}: {exc}", retryable=True) from None
        except Exception as exc:
            self.close()
            raise ExportError(f"{type(exc).__name__}: {exc}", retryable=False) from None
        if not 200 <= status < 300:
            raise ExportError(
                f"collector answered HTTP {status}", retryable=status in _RETRYABLE_STATUS
            )

    def _post(self, body: bytes, timeout: float) -> int:
        if self._plain is not None:
            head = self._head_prefix + b"Content-Length: %d\r\n\r\n" % len(body)
            return self._plain.post(head, body, timeout)
        return self._post_tls(body, timeout)

    def _post_tls(self, body: bytes, timeout: float) -> int:
        import http.client

        conn = self._tls
        if conn is None:
            conn = self._tls = http.client.HTTPSConnection(self._host, self._port, timeout=timeout)
        elif conn.sock is not None:
            conn.sock.settimeout(timeout)
        try:
            conn.request("POST", self._path, body, self._headers)
            response = conn.getresponse()
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
            self.close()
            raise _StaleConnection(str(exc)) from None
        response.read()
        if response.will_close:
            self.close()
        return int(response.status)

    def close(self) -> None:
        """Close the connection (the next export opens a new one)."""
        if self._plain is not None:
            self._plain.close()
        if self._tls is not None:
            self._tls.close()
            self._tls = None
