"""Parent context from the request's headers: W3C ``traceparent`` first, then Datadog's.

The X-Ray header (``_X_AMZN_TRACE_ID``) is deliberately not used as a parent:
its ``Sampled=0`` would turn every span of the invocation into a non-recording
one (opentelemetry-python-contrib #1593).
"""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

_HEX = frozenset("0123456789abcdef")
_MAX_64 = (1 << 64) - 1


def extract(headers: Mapping[str, str] | None) -> Context | None:
    """The remote parent named by ``headers`` (lower-case keys), or None."""
    if not headers:
        return None
    ctx = _from_traceparent(headers) or _from_datadog(headers)
    if ctx is None:
        return None
    return trace.set_span_in_context(NonRecordingSpan(ctx))


def _from_traceparent(headers: Mapping[str, str]) -> SpanContext | None:
    value = headers.get("traceparent")
    if not value:
        return None
    parts = value.strip().split("-")
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
    raw_state = headers.get("tracestate")
    if raw_state:
        state = TraceState.from_header([raw_state])
    return SpanContext(
        trace_id,
        span_id,
        is_remote=True,
        trace_flags=TraceFlags(int(flags_hex, 16) & 0x01),
        trace_state=state,
    )


def _from_datadog(headers: Mapping[str, str]) -> SpanContext | None:
    raw_trace = headers.get("x-datadog-trace-id", "").strip()
    raw_parent = headers.get("x-datadog-parent-id", "").strip()
    if not (raw_trace.isdigit() and raw_parent.isdigit()):
        return None
    low, span_id = int(raw_trace), int(raw_parent)
    if not (0 < low <= _MAX_64 and 0 < span_id <= _MAX_64):
        return None
    high = 0
    for tag in headers.get("x-datadog-tags", "").split(","):
        key, _, value = tag.partition("=")
        if key.strip() == "_dd.p.tid" and len(value) == 16 and _HEX.issuperset(value):
            high = int(value, 16)
    priority = headers.get("x-datadog-sampling-priority", "1").strip()
    sampled = not priority.lstrip("-").isdigit() or int(priority) > 0
    return SpanContext(
        (high << 64) | low,
        span_id,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT),
    )
