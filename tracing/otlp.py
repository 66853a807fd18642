"""OTLP/HTTP protobuf exporter without `protobuf` or `requests`.

The OTLP trace messages are few and stable, so this module writes their
protobuf wire format directly (about a tenth of the cost of the generated
classes, and none of their ~25 ms import).  The tests decode what it writes
with the real ``opentelemetry-proto`` classes and compare it with the
official encoder.

Values the official encoder cannot send (it fails the whole export) are sent
visibly instead: a string with a lone surrogate is sent with U+FFFD in its
place, an integer outside the signed 64-bit range as its decimal string.  A
span that still cannot be encoded is dropped alone and counted
(:attr:`OtlpHttpExporter.unencodable`); the others go out.

The transport is one keep-alive HTTP/1.1 connection (TLS for ``https://``) on
a plain socket.  Every export has one deadline, which covers name
resolution, connecting (all addresses together), the TLS handshake,
encoding, sending, the answer and the single retry after a stale
keep-alive connection.
"""

from __future__ import annotations

import struct
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from opentelemetry.trace import SpanKind, StatusCode

from tracing.runtime import logger
from tracing.transport import HttpConnection, NotConnected, StaleConnection

if TYPE_CHECKING:
    import ssl

    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

__all__ = ["ExportError", "OtlpHttpExporter", "encode_request", "encode_span", "reset_caches"]

_pack_double = struct.Struct("<d").pack
_pack_fixed64 = struct.Struct("<Q").pack
_pack_fixed32 = struct.Struct("<I").pack

# Span flags (trace.proto SpanFlags).
_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1


def _utf8(text: str) -> bytes:
    """``text`` as UTF-8; lone surrogates (which UTF-8 cannot carry) become U+FFFD."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode("utf-8")


def _varint(value: int) -> bytes:
    """A varint; negative values (int64) in two's complement, as protobuf writes them."""
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
        return _field(b"\x0a", _utf8(value))
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int):
        if _INT64_MIN <= value <= _INT64_MAX:
            return b"\x18" + _varint(value)
        return _field(b"\x0a", str(value).encode())  # beyond int64: its decimal string
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
    return _field(b"\x0a", _utf8(key)) + _field(b"\x12", _any_value(value))


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
        except (TypeError, ValueError, RecursionError):
            logger.debug("tracing: dropping an attribute of unsupported type")
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
        out.append(_field(b"\x1a", _utf8(state)))
    parent = span.parent
    if parent is not None:
        out.append(b"\x22\x08" + parent.span_id.to_bytes(8, "big"))
    out.append(_field(b"\x2a", _utf8(span.name)))
    out.append(_KINDS[span.kind])
    out.append(b"\x39" + _pack_fixed64(span.start_time or 0))
    out.append(b"\x41" + _pack_fixed64(span.end_time or 0))
    out.append(_key_values(span.attributes, b"\x4a"))
    if span.dropped_attributes:
        out.append(b"\x50" + _varint(span.dropped_attributes))
    for event in span.events:
        body = b"\x09" + _pack_fixed64(event.timestamp) + _field(b"\x12", _utf8(event.name))
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
            body += _field(b"\x12", _utf8(status.description))
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
            body = _field(b"\x0a", _utf8(scope.name))
            if scope.version:
                body += _field(b"\x12", _utf8(scope.version))
            body += _key_values(scope.attributes, b"\x1a")
            if scope.schema_url:
                url = _field(b"\x1a", _utf8(scope.schema_url))
        encoded = (_field(b"\x0a", body), url)
        if len(self.scopes) > 64:
            self.scopes.clear()
        self.scopes[id(scope)] = (scope, encoded)
        return encoded


def encode_request(spans: Sequence[ReadableSpan], cache: _Cache | None = None) -> bytes:
    """Encode spans as an ``ExportTraceServiceRequest`` (grouped by resource, then scope);
    a span that cannot be encoded is left out."""
    return _encode(spans, cache or _Cache())[0]


def _encode(spans: Sequence[ReadableSpan], cache: _Cache) -> tuple[bytes, int]:
    """The request and how many spans were left out because they could not be encoded."""
    grouped: dict[int, tuple[Resource, dict[int, tuple[InstrumentationScope | None, list[bytes]]]]]
    grouped = {}
    skipped = 0
    for span in spans:
        try:
            encoded = encode_span(span)
        except Exception:  # one bad span must never hold back the others
            skipped += 1
            continue
        resource = span.resource
        scope = span.instrumentation_scope
        by_scope = grouped.setdefault(id(resource), (resource, {}))[1]
        by_scope.setdefault(id(scope), (scope, []))[1].append(encoded)
    out = []
    for resource, by_scope in grouped.values():
        scope_spans = []
        for scope, encoded_spans in by_scope.values():
            scope_part, url_part = cache.scope(scope)
            body = scope_part + b"".join(_field(b"\x12", s) for s in encoded_spans) + url_part
            scope_spans.append(_field(b"\x12", body))
        body = cache.resource(resource) + b"".join(scope_spans)
        if resource.schema_url:
            body += _field(b"\x1a", _utf8(resource.schema_url))
        out.append(_field(b"\x0a", body))
    return b"".join(out), skipped


def reset_caches() -> None:
    """Forget the encoded-attribute cache (``tracing.testing.reset_tracing``)."""
    _KV_CACHE.clear()


class ExportError(Exception):
    """An export was not accepted: refused, rejected, or not answered in time.

    ``retryable`` is True when the spans certainly did not reach the collector
    (connection refused, HTTP 429/502/503/504) and may be sent again; after a
    timeout they may have arrived, so they are not sent again (no duplicates).
    """

    def __init__(
        self, message: str, *, retryable: bool, status: int | None = None, logged: bool = False
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        #: The collector's HTTP status, when it answered.
        self.status = status
        #: The sender has said it already (the processor then does not warn again).
        self.logged = logged


_RETRYABLE_STATUS = frozenset({429, 502, 503, 504})


#: Headers to add to one request, from its fixed headers and its body (a signature).
RequestSigner = Callable[[str, str, Mapping[str, str], bytes], Mapping[str, str]]


class OtlpHttpExporter:
    """Sends encoded spans to an OTLP/HTTP endpoint over one keep-alive connection.

    ``tls_context`` (``https://`` only) defaults to the system's trust store.
    ``sign``, if given, is called for every request with the ``Host`` header,
    the path, the request's other headers and its body, and returns headers to
    add (SigV4 for AWS's endpoint, :mod:`tracing.xray`); an exception from it
    drops the batch (:class:`ExportError`, not retryable).
    """

    def __init__(
        self,
        endpoint: str,
        *,
        headers: Mapping[str, str] | None = None,
        compression: str = "none",
        tls_context: ssl.SSLContext | None = None,
        sign: RequestSigner | None = None,
    ) -> None:
        parts = urlsplit(endpoint)
        https = parts.scheme == "https"
        self._host = parts.hostname or "localhost"
        self._port = parts.port or (443 if https else 80)
        path = parts.path or "/v1/traces"
        if parts.query:
            path += "?" + parts.query
        self._gzip = compression == "gzip"
        fields = {"Content-Type": "application/x-protobuf", **(headers or {})}
        if self._gzip:
            fields["Content-Encoding"] = "gzip"
        host_header = self._host if parts.port is None else f"{self._host}:{self._port}"
        if ":" in self._host:
            host_header = f"[{self._host}]" + ("" if parts.port is None else f":{self._port}")
        self._head_prefix = (
            f"POST {path} HTTP/1.1\r\nHost: {host_header}\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in fields.items())
        ).encode("latin-1")
        self._sign = sign
        self._signed = (host_header, parts.path or "/v1/traces", fields)
        tls = None
        if https:
            import ssl

            tls = tls_context or ssl.create_default_context()
        self._conn = HttpConnection(self._host, self._port, tls)
        self._cache = _Cache()
        #: Spans left out because they could not be encoded.
        self.unencodable = 0

    @property
    def address(self) -> str:
        """``host:port`` of the collector (no path, no credentials)."""
        return f"{self._host}:{self._port}"

    def export(self, spans: Sequence[ReadableSpan], timeout: float) -> None:
        """POST the spans within ``timeout`` seconds, everything included; raise
        :class:`ExportError` unless the collector accepted them."""
        deadline = time.monotonic() + timeout
        body, skipped = _encode(spans, self._cache)
        if skipped:
            self.unencodable += skipped
            logger.warning("tracing: %d span(s) could not be encoded and were dropped", skipped)
        if self._gzip:
            body = zlib.compress(body, wbits=31)
        self.post(body, deadline)

    def post(self, body: bytes, deadline: float) -> None:
        """POST an encoded (and, with ``gzip``, compressed) body by ``deadline`` (a
        ``time.monotonic()`` value); raise :class:`ExportError` unless it was accepted."""
        if time.monotonic() >= deadline:  # nothing was sent: the spans may be sent again
            raise ExportError("encoding used up the flush timeout", retryable=True)
        head = self._head_prefix
        if self._sign is not None:
            try:
                extra = self._sign(*self._signed, body)
            except Exception as exc:
                raise ExportError(f"could not sign: {exc}", retryable=False) from None
            head += "".join(f"{k}: {v}\r\n" for k, v in extra.items()).encode("latin-1")
        request = head + b"Content-Length: %d\r\n\r\n" % len(body) + body
        try:
            try:
                status = self._conn.request(request, deadline).status
            except StaleConnection:
                # Closed by the collector while we were frozen: one fresh connection,
                # within what is left of the same deadline.
                status = self._conn.request(request, deadline).status
        except NotConnected as exc:
            raise ExportError(str(exc), retryable=True) from None
        except StaleConnection as exc:
            self.close()
            raise ExportError(f"{type(exc).__name__}: {exc}", retryable=True) from None
        except Exception as exc:
            self.close()
            raise ExportError(f"{type(exc).__name__}: {exc}", retryable=False) from None
        if not 200 <= status < 300:
            raise ExportError(
                f"collector answered HTTP {status}",
                retryable=status in _RETRYABLE_STATUS,
                status=status,
            )

    def close(self) -> None:
        """Close the connection (the next export opens a new one)."""
        self._conn.close()
