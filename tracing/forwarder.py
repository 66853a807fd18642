"""The forwarder of log-based delivery: a Lambda function subscribed to the functions' log
groups that posts each otlp-stdout line's spans to an OTLP/HTTP collector.

Handler ``tracing.forwarder.handler``, for a CloudWatch Logs subscription filter
matching ``"__otel_otlp_stdout"`` (the CDK stack's ``-c exporter=stdout-otlp
-c forwardTo=<URL>`` wires it).  Lines that are not envelopes are skipped;
a payload the collector refuses is logged by its HTTP status only.

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
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from typing import Any

from tracing.runtime import logger
from tracing.stdout import MARKER

__all__ = ["envelopes", "handler", "post"]

TIMEOUT_S = 5.0


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
) -> int:
    """POST one envelope's payload, decoded, to ``endpoint`` (else its own); the status."""
    target = str(endpoint or envelope["endpoint"])
    if not target.startswith(("http://", "https://")):
        raise ValueError("not an HTTP endpoint")
    payload = envelope["payload"]
    body = base64.b64decode(payload) if envelope.get("base64") else str(payload).encode()
    fields = {str(k): str(v) for k, v in (envelope.get("headers") or {}).items()}
    fields.update(headers or {})
    fields["Content-Type"] = str(envelope.get("content-type", "application/x-protobuf"))
    if envelope.get("content-encoding"):
        fields["Content-Encoding"] = str(envelope["content-encoding"])
    request = urllib.request.Request(target, data=body, headers=fields, method="POST")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as answer:  # noqa: S310 (checked)
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def handler(event: Mapping[str, Any], context: Any) -> dict[str, int]:
    """Forward every envelope of the event; counts of forwarded and refused ones."""
    endpoint = os.environ.get("FORWARD_ENDPOINT") or None
    headers = _headers(os.environ.get("FORWARD_HEADERS", ""))
    forwarded = refused = 0
    for envelope in envelopes(event):
        status = post(envelope, endpoint, headers)
        if 200 <= status < 300:
            forwarded += 1
        else:
            refused += 1
            logger.warning("forwarder: the collector answered HTTP %d", status)
    return {"forwarded": forwarded, "refused": refused}
