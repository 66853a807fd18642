"""``setup_tracing()``: the provider, its resource, sampler and exporter, made once per process."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.util import types

from tracing import coldstart, logs, names, spans
from tracing.config import TracingConfig

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.sampling import Sampler

    from tracing.export import InvocationSpanProcessor, SpanSender

logger = logging.getLogger("tracing")

#: Version of this toolkit, reported as the instrumentation scope version.
VERSION = "0.1.0"


@dataclass
class Runtime:
    """What :func:`setup_tracing` made: the tracer and how to deliver its spans."""

    config: TracingConfig
    tracer: trace.Tracer
    flush: Callable[[], bool]
    processor: InvocationSpanProcessor | None = None
    provider: object | None = None

    def flush_within(self, timeout_s: float) -> bool:
        """Deliver pending spans, waiting at most ``timeout_s`` (an impending timeout)."""
        if self.processor is not None:
            return self.processor.flush(timeout_s)
        return self.flush()


_runtime: Runtime | None = None


def runtime() -> Runtime | None:
    """The active runtime, or None when tracing is off or not set up."""
    return _runtime


def setup_tracing(
    *,
    service_name: str | None = None,
    service_version: str | None = None,
    environment: str | None = None,
    exporter: str | None = None,
    endpoint: str | None = None,
    headers: Mapping[str, str] | None = None,
    sampler: str | None = None,
    sampler_ratio: float | None = None,
    flush_timeout_ms: int | None = None,
    export_cooloff_ms: int | None = None,
    max_queue_size: int | None = None,
    probe_timeout_ms: int | None = None,
    timeout_margin_ms: int | None = None,
    coldstart_phases: bool | None = None,
    log_correlation: bool | None = None,
) -> TracingConfig:
    """Install tracing for this process and return the settings in force.

    Each option falls back to its environment variable, then to its default
    (see :mod:`tracing.config`).  A second call changes nothing and returns the
    settings of the first.  Never raises: on an internal error tracing is left
    off and one warning is logged.
    """
    global _runtime
    if _runtime is not None:
        return _runtime.config
    config = TracingConfig.resolve(
        service_name=service_name,
        service_version=service_version,
        environment=environment,
        exporter=exporter,
        endpoint=endpoint,
        headers=headers,
        sampler=sampler,
        sampler_ratio=sampler_ratio,
        flush_timeout_ms=flush_timeout_ms,
        export_cooloff_ms=export_cooloff_ms,
        max_queue_size=max_queue_size,
        probe_timeout_ms=probe_timeout_ms,
        timeout_margin_ms=timeout_margin_ms,
        coldstart_phases=coldstart_phases,
        log_correlation=log_correlation,
    )
    coldstart.configure(enabled=config.coldstart_phases and not config.disabled)
    if config.disabled:
        _runtime = Runtime(config, trace.NoOpTracer(), flush=lambda: True)
        return config
    try:
        if config.exporter == "datadog":
            from tracing.datadog import datadog_runtime

            _runtime = datadog_runtime(config)
        else:
            _runtime = _sdk_runtime(config)
    except Exception as exc:
        logger.warning("tracing: setup failed, tracing is off: %s", exc)
        _runtime = Runtime(config, trace.NoOpTracer(), flush=lambda: True)
        return config
    spans.set_tracer(_runtime.tracer)
    if config.log_correlation:
        logs.install()
    return config


def shutdown_tracing() -> None:
    """Deliver what is pending and uninstall tracing (tests, or a process about to exit)."""
    global _runtime
    rt = _runtime
    _runtime = None
    spans.set_tracer(None)
    logs.uninstall()
    if rt is not None:
        try:
            rt.flush()
            if rt.processor is not None:
                rt.processor.shutdown()
        except Exception as exc:
            logger.warning("tracing: shutdown failed: %s", exc)


def resource_attributes(
    config: TracingConfig, environ: Mapping[str, str] | None = None
) -> dict[str, types.AttributeValue]:
    """Resource attributes from the config and the standard Lambda variables."""
    env = os.environ if environ is None else environ
    attrs: dict[str, types.AttributeValue] = {
        "telemetry.sdk.language": "python",
        "telemetry.sdk.name": "opentelemetry",
        "telemetry.sdk.version": _sdk_version(),
        "telemetry.distro.name": "dsql-lambda-tracing",
        "telemetry.distro.version": VERSION,
        names.CLOUD_PROVIDER: "aws",
        names.CLOUD_PLATFORM: "aws_lambda",
    }
    attrs.update(config.resource_attributes)
    attrs[names.SERVICE_NAME] = config.service_name
    if config.service_version:
        attrs[names.SERVICE_VERSION] = config.service_version
    if config.environment:
        attrs[names.DEPLOYMENT_ENVIRONMENT] = config.environment
        attrs[names.DEPLOYMENT_ENVIRONMENT_LEGACY] = config.environment
    for key, var in (
        (names.CLOUD_REGION, "AWS_REGION"),
        (names.FAAS_NAME, "AWS_LAMBDA_FUNCTION_NAME"),
        (names.FAAS_VERSION, "AWS_LAMBDA_FUNCTION_VERSION"),
        (names.FAAS_INSTANCE, "AWS_LAMBDA_LOG_STREAM_NAME"),
    ):
        value = env.get(var)
        if value:
            attrs[key] = value
    memory = env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "")
    if memory.isdigit():
        attrs[names.FAAS_MAX_MEMORY] = int(memory) * 1024 * 1024
    return attrs


def _sdk_version() -> str:
    try:
        from opentelemetry.sdk.version import __version__

        return __version__
    except ImportError:  # pragma: no cover
        return "unknown"


def make_sampler(config: TracingConfig) -> Sampler:
    """The SDK sampler named by the config."""
    from opentelemetry.sdk.trace import sampling

    root: Sampler
    kind = config.sampler.removeprefix("parentbased_")
    if kind == "always_on":
        root = sampling.ALWAYS_ON
    elif kind == "always_off":
        root = sampling.ALWAYS_OFF
    else:
        root = sampling.TraceIdRatioBased(config.sampler_ratio)
    if config.sampler.startswith("parentbased_"):
        return sampling.ParentBased(root)
    return root


def _sdk_runtime(config: TracingConfig) -> Runtime:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    from tracing.export import InvocationSpanProcessor

    provider = TracerProvider(
        resource=Resource(resource_attributes(config)),
        sampler=make_sampler(config),
        shutdown_on_exit=False,
    )
    processor: InvocationSpanProcessor | None = None
    if config.exporter != "none":
        processor = InvocationSpanProcessor(
            _sender(config),
            timeout_ms=config.flush_timeout_ms,
            max_cooloff_ms=config.export_cooloff_ms,
            max_queue_size=config.max_queue_size,
            probe_timeout_ms=config.probe_timeout_ms,
        )
        provider.add_span_processor(processor)
    _set_global_provider(provider)
    tracer = provider.get_tracer("tracing", VERSION)
    flush = processor.flush if processor is not None else (lambda: True)
    return Runtime(config, tracer, flush=flush, processor=processor, provider=provider)


def _sender(config: TracingConfig) -> SpanSender:
    if config.exporter == "console":
        from tracing.export import ConsoleSender

        return ConsoleSender()
    from tracing.otlp import OtlpHttpExporter

    return OtlpHttpExporter(config.endpoint, headers=config.headers, compression=config.compression)


def _set_global_provider(provider: trace.TracerProvider) -> None:
    """Make ``provider`` the global one so that raw OpenTelemetry API calls use it too."""
    current = trace.get_tracer_provider()
    if isinstance(current, trace.ProxyTracerProvider):
        trace.set_tracer_provider(provider)
    else:
        logger.info("tracing: a global TracerProvider exists already; leaving it in place")
