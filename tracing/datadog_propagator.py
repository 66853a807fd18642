"""``DatadogPropagator``: Datadog's ``x-datadog-*`` headers on outgoing calls, for services
traced by ddtrace downstream (imported only when it is installed: the OpenTelemetry
propagator machinery is not on the cold start's path otherwise).

``setup_tracing()`` installs it beside W3C Trace Context and Baggage when the
exporter is ``datadog`` and ``OTEL_PROPAGATORS`` is not set; elsewhere name it
in ``OTEL_PROPAGATORS`` as ``datadog`` (an ``opentelemetry_propagator`` entry
point of this distribution).  The trace id's high 64 bits travel in
``x-datadog-tags`` as ``_dd.p.tid``, as ddtrace writes them.
"""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import (
    CarrierT,
    Getter,
    Setter,
    TextMapPropagator,
    default_getter,
    default_setter,
)
from opentelemetry.trace import NonRecordingSpan

from tracing.propagation import MAX_64, from_datadog

__all__ = ["DATADOG_FIELDS", "DatadogPropagator", "install"]


#: The headers :class:`DatadogPropagator` reads and writes.
DATADOG_FIELDS = frozenset(
    {
        "x-datadog-trace-id",
        "x-datadog-parent-id",
        "x-datadog-sampling-priority",
        "x-datadog-tags",
    }
)


class DatadogPropagator(TextMapPropagator):
    """Reads and writes Datadog's trace headers (``extract`` reads them as
    :func:`tracing.propagation.extract` does)."""

    def extract(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        getter: Getter[CarrierT] = default_getter,
    ) -> Context:
        headers = {}
        for name in DATADOG_FIELDS:
            values = getter.get(carrier, name)
            if values:
                headers[name] = values[0]
        try:
            span_context = from_datadog(headers)
        except Exception:
            span_context = None
        if span_context is None:
            return context if context is not None else Context()
        return trace.set_span_in_context(NonRecordingSpan(span_context), context)

    def inject(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        setter: Setter[CarrierT] = default_setter,
    ) -> None:
        span_context = trace.get_current_span(context).get_span_context()
        if not span_context.is_valid:
            return
        setter.set(carrier, "x-datadog-trace-id", str(span_context.trace_id & MAX_64))
        setter.set(carrier, "x-datadog-parent-id", str(span_context.span_id))
        setter.set(
            carrier, "x-datadog-sampling-priority", "1" if span_context.trace_flags.sampled else "0"
        )
        high = span_context.trace_id >> 64
        if high:
            setter.set(carrier, "x-datadog-tags", f"_dd.p.tid={high:016x}")

    @property
    def fields(self) -> set[str]:
        return set(DATADOG_FIELDS)


def install() -> None:
    """Make W3C Trace Context, W3C Baggage and Datadog's headers the global propagators."""
    from opentelemetry import propagate
    from opentelemetry.baggage.propagation import W3CBaggagePropagator
    from opentelemetry.propagators.composite import CompositePropagator
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    propagate.set_global_textmap(
        CompositePropagator(
            [TraceContextTextMapPropagator(), W3CBaggagePropagator(), DatadogPropagator()]
        )
    )
