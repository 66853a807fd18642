"""Exporter ``xray``: OTLP/HTTP to AWS's own endpoint, SigV4-signed, no collector needed.

AWS takes OTLP directly at ``https://xray.<region>.amazonaws.com/v1/traces``
(spans land in CloudWatch's ``aws/spans`` log group once Transaction Search
is on).  Requests are signed for service ``xray`` with the credentials Lambda
puts in the environment (:mod:`tracing.sigv4`; permission
``xray:PutTraceSegments``).  The name is the endpoint's: it is X-Ray's.

AWS's limits are kept: the toolkit's batches are at most 512 spans and 1 MiB
(AWS: 10,000 spans and 5 MB), and a span larger than :data:`MAX_SPAN_BYTES`
encoded has its longest string attributes cut to :data:`TRUNCATED_LENGTH`
characters and says so in ``tracing.truncated_attributes``.  Missing
credentials, or an answer of 401/403 (expired credentials, missing
permission), give one warning; the handler never sees them.  An
``Authorization`` header in ``OTEL_EXPORTER_OTLP_HEADERS`` (the endpoint's
API-key option, a bearer token) is sent instead of a signature.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from tracing import names
from tracing.otlp import ExportError, OtlpHttpExporter, encode_span
from tracing.runtime import logger
from tracing.sigv4 import Credentials, sign_headers

if TYPE_CHECKING:
    import ssl

    from opentelemetry.sdk.trace import ReadableSpan

__all__ = ["ENDPOINT", "MAX_SPAN_BYTES", "TRUNCATED_LENGTH", "XraySender", "fit"]

ENDPOINT = "https://xray.{region}.amazonaws.com/v1/traces"
#: AWS's limit per span.
MAX_SPAN_BYTES = 200 * 1024
#: What an oversize span's long string attributes are cut to.
TRUNCATED_LENGTH = 4096
_SERVICE = "xray"


def _cut(attributes: Mapping[str, Any] | None) -> tuple[dict[str, Any], int]:
    out: dict[str, Any] = {}
    cut = 0
    for key, value in (attributes or {}).items():
        if isinstance(value, str) and len(value) > TRUNCATED_LENGTH:
            value = value[:TRUNCATED_LENGTH] + "…"
            cut += 1
        elif isinstance(value, tuple) and sum(len(str(v)) for v in value) > TRUNCATED_LENGTH:
            value = tuple(v[:64] if isinstance(v, str) else v for v in value[:64])
            cut += 1
        out[key] = value
    return out, cut


def _rough_size(span: ReadableSpan) -> int:
    """An upper-bound-ish estimate of the encoded size, without encoding."""
    size = 512 + len(span.name)
    for attributes in (span.attributes, *(e.attributes for e in span.events)):
        for key, value in (attributes or {}).items():
            size += len(key) + 16 + (len(value) * 4 if isinstance(value, str) else 64)
    return size


def fit(span: ReadableSpan) -> ReadableSpan:
    """``span`` itself, or a copy within :data:`MAX_SPAN_BYTES` (attributes cut, counted)."""
    # Encoding is the expensive check: only spans that might be too large pay for it.
    if _rough_size(span) <= MAX_SPAN_BYTES or len(encode_span(span)) <= MAX_SPAN_BYTES:
        return span
    from opentelemetry.sdk.trace import Event, ReadableSpan

    attributes, cut = _cut(span.attributes)
    events = []
    for event in span.events:
        event_attributes, event_cut = _cut(event.attributes)
        cut += event_cut
        events.append(Event(event.name, event_attributes, event.timestamp))
    attributes[names.TRUNCATED_ATTRIBUTES] = cut
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=attributes,
        events=events,
        links=span.links,
        kind=span.kind,
        status=span.status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class XraySender:
    """Sends spans to AWS's OTLP endpoint for ``region``, signed with ``environ``'s
    credentials (read at each export: they are the execution role's)."""

    def __init__(
        self,
        region: str,
        *,
        endpoint: str | None = None,
        compression: str = "none",
        headers: Mapping[str, str] | None = None,
        environ: Mapping[str, str] | None = None,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self._region = region
        self._environ = os.environ if environ is None else environ
        # The endpoint's API-key option: a bearer token in the headers replaces SigV4.
        bearer = any(k.lower() == "authorization" for k in headers or {})
        self._exporter = OtlpHttpExporter(
            endpoint or ENDPOINT.format(region=region),
            headers=headers,
            compression=compression,
            tls_context=tls_context,
            sign=None if bearer else self._sign,
        )
        self._warned = False

    def _sign(
        self, host: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> Mapping[str, str]:
        credentials = Credentials.from_environ(self._environ)
        if credentials is None:
            raise LookupError("no AWS credentials in the environment")
        return sign_headers("POST", host, path, headers, body, self._region, _SERVICE, credentials)

    def _warn_once(self, exc: ExportError, why: str) -> ExportError:
        if not self._warned:
            self._warned = True
            logger.warning("tracing: spans not accepted by AWS's OTLP endpoint: %s", why)
        return ExportError(str(exc), retryable=False, status=exc.status, logged=True)

    def export(self, spans: Sequence[ReadableSpan], timeout: float) -> None:
        try:
            self._exporter.export([fit(span) for span in spans], timeout)
        except ExportError as exc:
            if exc.status in (401, 403):
                raise self._warn_once(
                    exc,
                    f"HTTP {exc.status}: expired credentials, or the execution role "
                    "lacks xray:PutTraceSegments; spans are dropped",
                ) from None
            if str(exc).startswith("could not sign"):
                raise self._warn_once(exc, f"{exc}; spans are dropped") from None
            raise

    def close(self) -> None:
        self._exporter.close()
