"""Parent context from the request's headers: W3C ``traceparent`` first, then Datadog's.

A malformed header is ignored, never an error: the invocation then starts a
new trace (a caller must not be able to hide its request from tracing).
The X-Ray header (``_X_AMZN_TRACE_ID``) is deliberately not used as a parent:
its ``Sampled=0`` would turn every span of the invocation into a non-recording
one (opentelemetry-python-contrib #1593).
"""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

from tracing.runtime import logger

__all__ = ["MAX_64", "extract", "extract_span_context", "from_datadog", "sqs_message_attributes"]

_HEX = frozenset("0123456789abcdef")
MAX_64 = (1 << 64) - 1
#: The most digits a 64-bit decimal id has.
_MAX_DIGITS = 20


def extract(headers: Mapping[str, str] | None) -> Context | None:
    """The remote parent named by ``headers`` (lower-case keys), or None."""
    ctx = extract_span_context(headers)
    if ctx is None:
        return None
    return trace.set_span_in_context(NonRecordingSpan(ctx))


def extract_span_context(headers: Mapping[str, str] | None) -> SpanContext | None:
    """The remote span context named by ``headers`` (lower-case keys), or None: what
    a link points to."""
    if not headers:
        return None
    try:
        return _from_traceparent(headers) or from_datadog(headers)
    except Exception as exc:  # whatever arrives, a new trace starts
        logger.debug("tracing: ignoring a malformed trace context: %s", exc)
        return None


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    return value.strip() if isinstance(value, str) else ""


def _decimal(text: str) -> int | None:
    """A positive 64-bit decimal id, or None."""
    if not (0 < len(text) <= _MAX_DIGITS and text.isascii() and text.isdigit()):
        return None
    value = int(text)
    return value if 0 < value <= MAX_64 else None


def _from_traceparent(headers: Mapping[str, str]) -> SpanContext | None:
    value = _header(headers, "traceparent")
    if not value or len(value) > 512:
        return None
    parts = value.split("-")
    if len(parts) < 4:
        return None
    version, trace_hex, span_hex, flags_hex = parts[:4]
    if (
        len(version) != 2
        or version == "ff"
        or (version == "00" and len(parts) != 4)
        or len(trace_hex) != 32
        or len(span_hex) != 16
        or len(flags_hex) != 2
        or not _HEX.issuperset(version + trace_hex + span_hex + flags_hex)
    ):
        return None
    trace_id, span_id = int(trace_hex, 16), int(span_hex, 16)
    if trace_id == 0 or span_id == 0:
        return None
    state = None
    raw_state = _header(headers, "tracestate")
    if raw_state and len(raw_state) <= 512:  # W3C: vendors may drop a longer one
        state = TraceState.from_header([raw_state])
    return SpanContext(
        trace_id,
        span_id,
        is_remote=True,
        trace_flags=TraceFlags(int(flags_hex, 16) & 0x01),
        trace_state=state,
    )


def from_datadog(headers: Mapping[str, str]) -> SpanContext | None:
    low = _decimal(_header(headers, "x-datadog-trace-id"))
    span_id = _decimal(_header(headers, "x-datadog-parent-id"))
    if low is None or span_id is None:
        return None
    high = 0
    for tag in _header(headers, "x-datadog-tags")[:4096].split(","):
        key, _, value = tag.partition("=")
        if key.strip() == "_dd.p.tid" and len(value) == 16 and _HEX.issuperset(value):
            high = int(value, 16)
    priority = _header(headers, "x-datadog-sampling-priority")
    sampled = True  # absent: keep the trace
    if priority:
        digits = priority.removeprefix("-")
        if not (len(digits) <= 4 and digits.isascii() and digits.isdigit()):
            return None  # malformed: the whole context is ignored
        sampled = int(priority) > 0
    return SpanContext(
        (high << 64) | low,
        span_id,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT),
    )


def sqs_message_attributes(span: trace.Span | None = None) -> dict[str, dict[str, str]]:
    """SQS message attributes carrying ``span``'s context (default: the current span), in
    the ``traceparent`` attribute :mod:`tracing.triggers` reads on the consumer's side;
    empty when there is no valid span.  Merge them into ``MessageAttributes`` of
    ``send_message`` (the botocore instrumentation writes them for SNS, not for SQS)::

        sqs.send_message(QueueUrl=url, MessageBody=body,
                         MessageAttributes={**mine, **sqs_message_attributes()})
    """
    context = (span or trace.get_current_span()).get_span_context()
    if not context.is_valid:
        return {}
    flags = "01" if context.trace_flags.sampled else "00"
    value = f"00-{context.trace_id:032x}-{context.span_id:016x}-{flags}"
    return {"traceparent": {"DataType": "String", "StringValue": value}}
