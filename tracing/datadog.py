"""The ``datadog`` exporter: ddtrace's OpenTelemetry bridge, to the trace-agent API.

ddtrace (about 90 ms to import) is loaded only when this exporter is chosen.
Spans go to ``DD_TRACE_AGENT_URL`` (default ``http://localhost:8126``, where
the Datadog Lambda Extension serves the trace-agent API).  ddtrace reads its
own ``DD_*`` variables; this module only fills in what the toolkit's settings
decide (service, env, version, the agent timeout) when they are not set.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from tracing.config import TracingConfig
from tracing.export import Backoff
from tracing.runtime import NAME, VERSION, Runtime, logger, set_global_provider

__all__ = ["DatadogDelivery", "datadog_runtime"]


def datadog_runtime(config: TracingConfig) -> Runtime:
    """A runtime whose spans are ddtrace spans, flushed per invocation within a bound."""
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
    set_global_provider(provider)
    delivery = DatadogDelivery(
        dd_tracer,
        timeout_s=config.flush_timeout_ms / 1000.0,
        max_cooloff_s=config.export_cooloff_ms / 1000.0,
    )
    return Runtime(config, provider.get_tracer(NAME, VERSION), delivery, provider=provider)


class DatadogDelivery:
    """Flushes ddtrace's writer on a worker thread; the caller waits at most its timeout.

    ddtrace's own flush has no overall bound (its agent timeout applies to each
    socket operation), so the flush runs on one long-lived worker and
    :meth:`flush` waits for it at most ``timeout``.  After a failed flush it
    pauses like the OTLP path.
    """

    def __init__(self, dd_tracer: Any, *, timeout_s: float, max_cooloff_s: float) -> None:
        self._tracer = dd_tracer
        self._timeout = timeout_s
        self.backoff = Backoff(max_cooloff_s)
        self._cond = threading.Condition()
        self._requested = 0
        self._completed = 0
        self._ok = True
        self._worker: threading.Thread | None = None

    def flush(self, timeout: float | None = None) -> bool:
        limit = self._timeout if timeout is None else min(self._timeout, max(timeout, 0.0))
        if self.backoff.paused():
            return False
        with self._cond:
            if self._worker is None:
                self._worker = threading.Thread(
                    target=self._run, name="tracing-datadog-flush", daemon=True
                )
                self._worker.start()
            self._requested += 1
            wanted = self._requested
            self._cond.notify_all()
            done = self._cond.wait_for(lambda: self._completed >= wanted, limit)
            return done and self._ok

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._requested > self._completed)
                target = self._requested
            ok = self._flush_once()
            with self._cond:
                self._ok = ok
                self._completed = target
                self._cond.notify_all()

    def _flush_once(self) -> bool:
        try:
            writer = self._tracer._span_aggregator.writer
            writer.flush_queue(raise_exc=True)
        except AttributeError:
            self._tracer.flush()
        except Exception as exc:
            pause = self.backoff.failed()
            logger.warning("tracing: Datadog flush failed (%s); pausing for %.0f s", exc, pause)
            return False
        self.backoff.succeeded()
        return True

    def resume(self) -> None:
        """Forget a flush worker that a restore did not bring back (SnapStart's emulation
        forks; a microVM restore keeps threads): the next flush starts one."""
        self.backoff.succeeded()  # the pause of failures before the snapshot
        with self._cond:
            if self._worker is not None and not self._worker.is_alive():
                self._worker = None
                self._completed = self._requested

    def shutdown(self) -> None:
        self.flush()
