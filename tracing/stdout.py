"""Log-based delivery: each export is one line on stdout in the otlp-stdout format.

The exporter ``stdout-otlp`` writes every batch as one JSON line (format
version :data:`FORMAT_VERSION` of the serverless-otlp-forwarder project)::

    {"__otel_otlp_stdout": "0.1.0", "source": "<service>", "endpoint": "<OTLP URL>",
     "method": "POST", "content-type": "application/x-protobuf",
     "content-encoding": "gzip", "headers": {...}, "payload": "<base64 of gzipped
     OTLP protobuf>", "base64": true}

A CloudWatch Logs subscription filter on the marker key sends these lines to a
forwarder that posts each payload to ``endpoint`` with ``headers``; the
function itself opens no connection and waits for no collector.  Lines stay
under CloudWatch's event limit (:data:`MAX_LINE_BYTES`): a batch that would
not fit is split, and a single span that cannot fit is dropped and counted.
Each line is written with one call on the binary stream under its lock, so a
log line the function writes in one call (as ``logging`` does) is never
interleaved with it.  The envelope's ``headers`` stay empty: headers from
``OTEL_EXPORTER_OTLP_HEADERS`` often hold an API key, which must not reach the
logs; the forwarder (:mod:`tracing.forwarder`) adds its own.  For the same
reason the ``endpoint`` is written without credentials or query.
"""

from __future__ import annotations

import base64
import json
import sys
import zlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import urlsplit, urlunsplit

from tracing.otlp import _Cache, _encode
from tracing.runtime import logger

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan

__all__ = ["FORMAT_VERSION", "MARKER", "MAX_LINE_BYTES", "StdoutOtlpSender"]

#: The otlp-stdout envelope version these lines follow.
FORMAT_VERSION = "0.1.0"
#: The key a subscription filter matches (``{ $.__otel_otlp_stdout = * }``).
MARKER = "__otel_otlp_stdout"
#: CloudWatch Logs takes events up to 256 KiB, 26 bytes of which are its own.
MAX_LINE_BYTES = 256 * 1024 - 26 - 1


def _public(endpoint: str) -> str:
    """The endpoint without credentials or query: the line goes to the logs (the
    forwarder brings its own credentials, ``FORWARD_HEADERS``)."""
    parts = urlsplit(endpoint)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


class StdoutOtlpSender:
    """Writes each export as one otlp-stdout line to ``stream`` (default: stdout)."""

    def __init__(self, *, source: str, endpoint: str, stream: BinaryIO | None = None) -> None:
        self._stream = stream
        self._cache = _Cache()
        self._envelope = {
            MARKER: FORMAT_VERSION,
            "source": source,
            "endpoint": _public(endpoint),
            "method": "POST",
            "content-type": "application/x-protobuf",
            "content-encoding": "gzip",
            # Never OTEL_EXPORTER_OTLP_HEADERS: they would put API keys in the logs.  The
            # forwarder adds its own (tracing.forwarder, FORWARD_HEADERS).
            "headers": {},
        }
        #: Spans left out: unencodable, or too large for one log event alone.
        self.dropped = 0

    def _line(self, spans: Sequence[ReadableSpan]) -> bytes:
        body, skipped = _encode(spans, self._cache)
        self.dropped += skipped
        payload = base64.b64encode(zlib.compress(body, 6, wbits=31)).decode("ascii")
        envelope = {**self._envelope, "payload": payload, "base64": True}
        return json.dumps(envelope, separators=(",", ":")).encode("ascii") + b"\n"

    def _lines(self, spans: Sequence[ReadableSpan]) -> list[bytes]:
        line = self._line(spans)
        if len(line) <= MAX_LINE_BYTES:
            return [line]
        if len(spans) == 1:
            self.dropped += 1
            logger.warning("tracing: a span too large for one log event was dropped")
            return []
        half = len(spans) // 2
        return self._lines(spans[:half]) + self._lines(spans[half:])

    def export(self, spans: Sequence[ReadableSpan], timeout: float) -> None:
        """Write the spans (``timeout`` is not needed: writing does not wait on a peer)."""
        stream = self._stream
        if stream is None:
            sys.stdout.flush()  # what the function printed comes first
            stream = getattr(sys.stdout, "buffer", None)
        if stream is None:  # a text-only stdout put in place by someone: one write per line
            for line in self._lines(spans):
                sys.stdout.write(line.decode("ascii"))
            sys.stdout.flush()
            return
        for line in self._lines(spans):
            stream.write(line)
        stream.flush()

    def close(self) -> None:
        pass
