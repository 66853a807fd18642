"""The ``datadog`` exporter: ddtrace's OpenTelemetry bridge, to the trace-agent API.

ddtrace (about 90 ms to import) is loaded only when this exporter is chosen.
Spans go to ``DD_TRACE_AGENT_URL`` (default ``http://localhost:8126``, where
the Datadog Lambda Extension serves the trace-agent API).  ddtrace reads its
own ``DD_*`` variables; this module only fills in what the toolkit's settings
decide (service, env, version, the agent timeout) when they are not set.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from tracing.config import TracingConfig
from tracing.export import Backoff
from tracing.setup import VERSION, Runtime, _set_global_provider

logger = logging.getLogger("tracing")


def datadog_runtime(config: TracingConfig) -> Runtime:
    """A runtime whose spans are ddtrace spans, flushed synchronously per invocation."""
    env = os.environ
    env.setdefault("DD_TRACE_OTEL_ENABLED", "true")
    env.setdefault("DD_SERVICE", config.service_name)
    if config.environment:
        env.setdefault("DD_ENV", config.environment)
    if config.service_version:
        env.setdefault("DD_VERSION", config.service_version)
    env.setdefault("DD_TRACE_AGENT_TIMEOUT_SECONDS", f"{config.flush_timeout_ms / 1000:.3f}")
    # Nothing but traces: no telemetry, remote-config or startup chatter.
    env.setdefault("DD_INSTRUMENTATION_TELEMETRY_ENABLED", "false")
    env.setdefault("DD_REMOTE_CONFIGURATION_ENABLED", "false")
    env.setdefault("DD_TRACE_STARTUP_LOGS", "false")
    if env.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "datadog":
        # Meant for this toolkit; ddtrace would warn that it does not know the value.
        del env["OTEL_TRACES_EXPORTER"]

    from ddtrace.opentelemetry import TracerProvider
    from ddtrace.trace import tracer as dd_tracer

    provider = TracerProvider()
    _set_global_provider(provider)
    flusher = _DatadogFlush(dd_tracer, config.export_cooloff_ms / 1000.0)
    return Runtime(
        config, provider.get_tracer("tracing", VERSION), flush=flusher.flush, provider=provider
    )


class _DatadogFlush:
    """Flushes ddtrace's writer, pausing after a failed flush like the OTLP path."""

    def __init__(self, dd_tracer: Any, max_cooloff_s: float) -> None:
        self._tracer = dd_tracer
        self._backoff = Backoff(max_cooloff_s)

    def flush(self) -> bool:
        if self._backoff.paused():
            return False
        try:
            writer = self._tracer._span_aggregator.writer
            writer.flush_queue(raise_exc=True)
        except AttributeError:
            self._tracer.flush()
        except Exception as exc:
            pause = self._backoff.failed()
            logger.warning("tracing: Datadog flush failed (%s); pausing for %.0f s", exc, pause)
            return False
        self._backoff.succeeded()
        return True
