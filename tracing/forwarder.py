"""The forwarder of log-based delivery: a Lambda function subscribed to the functions' log
groups that posts each otlp-stdout line's spans to an OTLP/HTTP collector.

Handler ``tracing.forwarder.handler``, for a CloudWatch Logs subscription filter
matching ``"__otel_otlp_stdout"`` (the CDK stack's ``-c exporter=stdout-otlp
-c forwardTo=<URL>`` wires it).  Lines that are not envelopes are skipped;
a payload the collector refuses is logged by its HTTP status only.  Posts go
through the toolkit's bounded transport (:class:`tracing.otlp.OtlpHttpExporter`),
each within :data:`TIMEOUT_S` and all within the invocation's remaining time.

Environment variables
---------------------
``FORWARD_ENDPOINT``
    Where to post (default: each envelope's own ``endpoint``).
``FORWARD_HEADERS``
    ``key=value,...`` headers for the collector (an API key; never in the log lines).
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import time
from collections.abc import Iterator, Mapping
from typing import Any

from tracing.runtime import logger
from tracing.stdout import MARKER

__all__ = ["envelopes", "handler", "post"]

#: The most one post may take (the transport's deadline covers connect, TLS, send, answer).
TIMEOUT_S = 5.0
#: Time kept back from the invocation's remaining time for the function to return.
MARGIN_S = 0.5


def envelopes(event: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """The otlp-stdout envelopes in a CloudWatch Logs subscription event."""
    data = json.loads(gzip.decompress(base64.b64decode(event["awslogs"]["data"])))
    for log_event in data.get("logEvents", []):
        message = log_event.get("message", "")
        start = message.find("{")
        if start < 0:
            continue
        try:
            envelope = json.loads(message[start:])
        except ValueError:
            continue
        if isinstance(envelope, dict) and MARKER in envelope and "payload" in envelope:
            yield envelope


def _headers(text: str) -> dict[str, str]:
    pairs = (part.split("=", 1) for part in text.split(",") if "=" in part)
    return {k.strip(): v.strip() for k, v in pairs}


def post(
    envelope: Mapping[str, Any],
    endpoint: str | None = None,
    headers: Mapping[str, str] | None = None,
    *,
    deadline: float | None = None,
) -> int:
    """POST one envelope's payload, decoded, to ``endpoint`` (else its own), by
    ``deadline`` (``time.monotonic()``; default :data:`TIMEOUT_S` from now) over the
    toolkit's bounded transport; the collector's HTTP status, or 0 without an answer."""
    from tracing.otlp import ExportError, OtlpHttpExporter

    target = str(endpoint or envelope["endpoint"])
    if not target.startswith(("http://", "https://")):
        raise ValueError("not an HTTP endpoint")
    payload = envelope["payload"]
    body = base64.b64decode(payload) if envelope.get("base64") else str(payload).encode()
    fields = {str(k): str(v) for k, v in (envelope.get("headers") or {}).items()}
    fields.update(headers or {})
    fields["Content-Type"] = str(envelope.get("content-type", "application/x-protobuf"))
    encoding = str(envelope.get("content-encoding") or "")
    if encoding and encoding != "gzip":
        fields["Content-Encoding"] = encoding
    exporter = OtlpHttpExporter(
        target, headers=fields, compression="gzip" if encoding == "gzip" else "none"
    )
    try:
        exporter.post(body, deadline if deadline is not None else time.monotonic() + TIMEOUT_S)
    except ExportError as exc:
        return exc.status or 0
    finally:
        exporter.close()
    return 200


def handler(event: Mapping[str, Any], context: Any) -> dict[str, int]:
    """Forward every envelope of the event within the invocation's remaining time (less
    :data:`MARGIN_S`); counts of forwarded, refused and unsent envelopes."""
    endpoint = os.environ.get("FORWARD_ENDPOINT") or None
    headers = _headers(os.environ.get("FORWARD_HEADERS", ""))
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    overall = time.monotonic() + (remaining() / 1000.0 - MARGIN_S if remaining else TIMEOUT_S)
    counts = {"forwarded": 0, "refused": 0, "unsent": 0}
    for envelope in envelopes(event):
        if time.monotonic() >= overall:
            counts["unsent"] += 1
            continue
        status = post(
            envelope, endpoint, headers, deadline=min(overall, time.monotonic() + TIMEOUT_S)
        )
        if 200 <= status < 300:
            counts["forwarded"] += 1
        else:
            counts["refused"] += 1
            logger.warning("forwarder: the collector answered HTTP %d", status)
    if counts["unsent"]:
        logger.warning("forwarder: out of time, %d envelope(s) not sent", counts["unsent"])
    return counts
