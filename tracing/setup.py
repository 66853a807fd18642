"""``setup_tracing()``: the provider, its resource, sampler and exporter, made once per process."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.util import types

from tracing import coldstart, logs, names, runtime
from tracing.config import DEFAULT_OTLP_ENDPOINT, TracingConfig
from tracing.deadline import DeadlineWatch
from tracing.runtime import NAME, VERSION, Delivery, NoDelivery, Runtime, logger

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.sdk.trace.sampling import Sampler

    from tracing.delivery import DeliveryMode, Registration
    from tracing.export import InvocationSpanProcessor, SpanSender
    from tracing.tracer import TracerProvider as LeanTracerProvider

__all__ = [
    "make_processor",
    "make_provider",
    "make_resource",
    "make_sampler",
    "resource_attributes",
    "setup_tracing",
    "shutdown_tracing",
]


def setup_tracing(
    config: TracingConfig | None = None,
    /,
    *,
    sender: SpanSender | None = None,
    processors: Sequence[SpanProcessor] = (),
) -> TracingConfig:
    """Install tracing for this process and return the settings in force.

    ``config`` defaults to ``TracingConfig()``: every setting from its environment
    variable, else its default (see :mod:`tracing.config`).  ``sender`` replaces the
    configured exporter (tests, or a destination of your own); spans then reach it
    through the same bounded delivery.  The provider is the toolkit's lean one
    (:mod:`tracing.tracer`: the SDK's behaviour without importing it), unless
    ``processors`` are given: OpenTelemetry SDK span processors of your own (a
    ``BatchSpanProcessor`` with another exporter, say), which need the SDK's
    provider and its spans.  They are added after the toolkit's own: they see every span, and each
    delivery calls their ``force_flush`` with what is left of the same flush
    bound, after the toolkit's spans went out (ignored, with a warning, by the
    ``datadog`` exporter).  A second call changes nothing and returns the
    settings of the first.  Never raises: on an internal error tracing is left
    off and one warning is logged.

    With the ``datadog`` exporter and ``OTEL_PROPAGATORS`` unset, outgoing calls
    made through OpenTelemetry instrumentations carry Datadog's headers beside
    W3C Trace Context (:mod:`tracing.datadog_propagator`).
    """
    rt = runtime.current()
    if rt is not None:
        return rt.config
    if config is None:
        config = TracingConfig()
    coldstart.configure(enabled=config.coldstart_phases and not config.disabled)
    if config.disabled:
        runtime.install(Runtime(config, trace.NoOpTracer()))
        return config
    # Registering the delivery extension is a round trip: it overlaps building the rest.
    registration = _start_registration(config)
    try:
        if config.exporter == "datadog" and sender is None:
            from tracing.datadog import datadog_runtime

            if processors:
                logger.warning("tracing: the datadog exporter ignores extra span processors")
            rt = datadog_runtime(config)
        else:
            rt = _sdk_runtime(config, sender, processors)
        if config.exporter == "datadog" and not os.environ.get("OTEL_PROPAGATORS"):
            from tracing import datadog_propagator

            datadog_propagator.install()
    except Exception as exc:
        logger.warning("tracing: setup failed, tracing is off: %s", exc)
        if registration is not None:
            registration.abandon()
        runtime.install(Runtime(config, trace.NoOpTracer()))
        return config
    if config.timeout_margin_ms > 0:
        rt.watch = DeadlineWatch()
    rt.mode = _mode(config, rt, registration)
    runtime.install(rt)
    if config.log_correlation:
        logs.install()
    if config.explain != "off":
        from tracing import explain

        explain.configure(config.explain, config.explain_interval_s)
    if config.snapstart_hooks and os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE") == "snap-start":
        from tracing import snapstart

        snapstart.install(rt)
    return config


def _start_registration(config: TracingConfig) -> Registration | None:
    """The delivery extension's registration, started (None: no extension wanted, or
    the exporter is ``none``: nothing to deliver)."""
    if config.exporter == "none":
        return None
    try:
        from tracing.delivery import start_registration

        return start_registration(config.delivery)
    except Exception as exc:  # choose() registers again and says why
        logger.debug("tracing: could not start registering the extension: %s", exc)
        return None


def _mode(config: TracingConfig, rt: Runtime, registration: Registration | None) -> DeliveryMode:
    from tracing.delivery import Inline, choose

    if isinstance(rt.delivery, NoDelivery):
        if registration is not None:
            registration.abandon()
        return Inline(rt.delivery)
    return choose(
        config.delivery,
        rt.delivery,
        margin_s=config.timeout_margin_ms / 1000.0,
        wrapped=lambda: rt.wrapped_handlers > 0,
        registration=registration,
    )


def shutdown_tracing() -> None:
    """Deliver what is pending and uninstall tracing (tests, or a process about to exit)."""
    rt = runtime.uninstall()
    logs.uninstall()
    snapstart, explain = sys.modules.get("tracing.snapstart"), sys.modules.get("tracing.explain")
    if snapstart is not None:
        snapstart.uninstall()
    if explain is not None:
        explain.reset()
    if rt is not None:
        try:
            rt.close()
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
        "telemetry.distro.name": NAME,
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
    if memory.isascii() and memory.isdigit():
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


def make_resource(config: TracingConfig) -> Resource:
    """The SDK resource of :func:`resource_attributes`."""
    from opentelemetry.sdk.resources import Resource

    return Resource(resource_attributes(config))


def make_processor(
    config: TracingConfig, sender: SpanSender, *, clock: Callable[[], float] = time.monotonic
) -> InvocationSpanProcessor:
    """The span processor that delivers to ``sender`` within the config's bounds."""
    from tracing.export import InvocationSpanProcessor

    return InvocationSpanProcessor(
        sender,
        timeout_ms=config.flush_timeout_ms,
        max_cooloff_ms=config.export_cooloff_ms,
        max_queue_size=config.max_queue_size,
        max_queue_bytes=config.max_queue_bytes,
        probe_timeout_ms=config.probe_timeout_ms,
        clock=clock,
    )


def make_provider(config: TracingConfig) -> LeanTracerProvider:
    """The toolkit's lean provider (:mod:`tracing.tracer`) with the config's resource
    and sampler."""
    from tracing.tracer import Resource as LeanResource
    from tracing.tracer import TracerProvider

    return TracerProvider(
        resource=LeanResource(resource_attributes(config)),
        sampler=config.sampler,
        sampler_ratio=config.sampler_ratio,
    )


def _sdk_runtime(
    config: TracingConfig, sender: SpanSender | None, processors: Sequence[SpanProcessor] = ()
) -> Runtime:
    provider: LeanTracerProvider | SdkTracerProvider
    if processors:  # the user's processors expect the SDK's spans
        from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider

        provider = SdkTracerProvider(
            resource=make_resource(config), sampler=make_sampler(config), shutdown_on_exit=False
        )
    else:
        provider = make_provider(config)
    if sender is None and config.exporter != "none":
        sender = _sender(config)
    rt = Runtime(config, provider.get_tracer(NAME, VERSION), provider=provider)
    if sender is not None:
        processor = make_processor(config, sender)
        # Duck-typed: it has an SDK SpanProcessor's methods without importing the SDK.
        provider.add_span_processor(processor)  # type: ignore[arg-type]
        rt.delivery = processor
    else:
        rt.delivery = NoDelivery()
    if processors:
        for extra in processors:
            provider.add_span_processor(extra)
        rt.delivery = _AlsoFlushing(rt.delivery, processors, config.flush_timeout_ms / 1000.0)
    runtime.set_global_provider(provider)
    return rt


class _AlsoFlushing:
    """The toolkit's delivery, then the user's processors' ``force_flush``, in one bound."""

    def __init__(
        self, first: Delivery, processors: Sequence[SpanProcessor], default_timeout_s: float
    ) -> None:
        self._first = first
        self._processors = tuple(processors)
        self._default = default_timeout_s

    def flush(self, timeout: float | None = None) -> bool:
        deadline = time.monotonic() + (self._default if timeout is None else timeout)
        done = self._first.flush(timeout)
        for processor in self._processors:
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0:
                return False
            try:
                done = bool(processor.force_flush(left_ms)) and done
            except Exception as exc:  # a processor of the user's must not break delivery
                logger.warning("tracing: a span processor failed to flush: %s", exc)
                done = False
        return done

    def disconnect(self) -> None:
        disconnect = getattr(self._first, "disconnect", None)
        if callable(disconnect):
            disconnect()

    def drop_pending(self) -> int:
        drop = getattr(self._first, "drop_pending", None)
        return int(drop()) if callable(drop) else 0

    def resume(self) -> None:
        resume = getattr(self._first, "resume", None)
        if callable(resume):
            resume()

    def shutdown(self) -> None:
        self._first.shutdown()
        for processor in self._processors:
            try:
                processor.shutdown()
            except Exception as exc:
                logger.warning("tracing: a span processor failed to shut down: %s", exc)


def _sender(config: TracingConfig) -> SpanSender:
    if config.exporter == "console":
        from tracing.export import ConsoleSender

        return ConsoleSender()
    if config.exporter == "stdout-otlp":
        from tracing.stdout import StdoutOtlpSender

        return StdoutOtlpSender(source=config.service_name, endpoint=config.endpoint)
    return _LazyOtlpSender(config)


class _LazyOtlpSender:
    """The OTLP exporter, imported and built at its first export: with after-response
    delivery that is after the first response, off the cold start's critical path."""

    def __init__(self, config: TracingConfig) -> None:
        self._config = config
        self._sender: SpanSender | None = None

    def _get(self) -> SpanSender:
        if self._sender is None:
            config = self._config
            if config.exporter == "xray":
                from tracing.xray import XraySender

                region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
                explicit = config.endpoint != DEFAULT_OTLP_ENDPOINT
                self._sender = XraySender(
                    region or "us-east-1",
                    endpoint=config.endpoint if explicit else None,
                    compression=config.compression,
                    headers=config.headers,
                )
            else:
                from tracing.otlp import OtlpHttpExporter

                self._sender = OtlpHttpExporter(
                    config.endpoint, headers=config.headers, compression=config.compression
                )
        return self._sender

    def export(self, spans: Sequence[ReadableSpan], timeout: float) -> None:
        self._get().export(spans, timeout)

    def close(self) -> None:
        if self._sender is not None:
            self._sender.close()
